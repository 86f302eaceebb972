//! The operator pages: `/metrics` (Prometheus text exposition) and the status page `/`
//! (server-rendered HTML, no script). Both are drawn from one [`Figures`] reading.
//!
//! The status page shows aggregate counts only (links by state, webhook outcomes, inbox
//! backlog) and, for failed vendor calls, the vendor, route template, status and time: never an
//! id, a tenant, a body or a message. It is served where `/metrics` is: on the public listener
//! unless `metrics_addr` moves both to a listener of their own.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use coverwatch_core::LinkState;
use maud::{DOCTYPE, Markup, html};

use crate::prometheus::{Figures, Telemetry};

/// The outcomes the status page gives a column each, in this order; any other outcome a
/// provider had in the window is listed after them.
const OUTCOME_COLUMNS: [&str; 7] = [
    "stored",
    "duplicate",
    "unauthenticated",
    "too_large",
    "unavailable",
    "malformed",
    "unknown_provider",
];

pub fn router(telemetry: Arc<Telemetry>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/", get(status_page))
        .with_state(telemetry)
}

async fn metrics(State(telemetry): State<Arc<Telemetry>>) -> Response {
    (
        [
            (CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8"),
            (CACHE_CONTROL, "no-store"),
        ],
        telemetry.render().await,
    )
        .into_response()
}

async fn status_page(State(telemetry): State<Arc<Telemetry>>) -> Response {
    let figures = telemetry.figures().await;
    (
        [(CACHE_CONTROL, "no-store")],
        Html(render(&figures).into_string()),
    )
        .into_response()
}

fn seconds_ago(figures: &Figures, at: chrono::DateTime<chrono::Utc>) -> i64 {
    (figures.now - at).num_seconds().max(0)
}

/// The page; `id`s name each figure so that tests (and scrapers) can find it.
pub fn render(figures: &Figures) -> Markup {
    let db = &figures.db;
    let providers = &figures.providers;
    let known_provider_labels: Vec<&str> = providers.iter().map(|p| p.as_str()).collect();
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { "coverwatch status" }
                style { "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:1.5em}td,th{border:1px solid #999;padding:.25em .6em;text-align:right}th:first-child,td:first-child{text-align:left}" }
            }
            body {
                h1 { "coverwatch status" }
                p {
                    "As of " time id="now" { (figures.now.to_rfc3339()) } ". "
                    @if let Some(read_at) = db.read_at {
                        "Database figures read " span id="db-age" { (seconds_ago(figures, read_at)) } " s ago."
                    }
                    @if let Some(error) = &db.error {
                        " " strong id="db-error" { (error) }
                    }
                }

                h2 { "Links by state" }
                table id="links" {
                    tr { th { "provider" } @for state in LinkState::ALL { th { (state.as_str()) } } }
                    @for provider in providers {
                        tr {
                            td { (provider.as_str()) }
                            @for state in LinkState::ALL {
                                td id={ (provider.as_str()) "-links-" (state.as_str()) } {
                                    (db.links.get(&(provider.clone(), state.as_str())).copied().unwrap_or(0))
                                }
                            }
                        }
                    }
                }

                h2 { "Webhooks received in the last hour" }
                table id="webhooks" {
                    tr { th { "provider" } @for outcome in OUTCOME_COLUMNS { th { (outcome) } } }
                    @for label in known_provider_labels.iter().copied().chain(["unknown"]) {
                        tr {
                            td { (label) }
                            @for outcome in OUTCOME_COLUMNS {
                                td id={ (label) "-webhooks-" (outcome) } {
                                    (figures.webhooks_last_hour.get(&(label.to_owned(), outcome)).copied().unwrap_or(0))
                                }
                            }
                        }
                    }
                }

                h2 { "Inbox" }
                table id="inbox" {
                    tr { th { "provider" } th { "backlog (pending)" } th { "oldest pending (s)" } th { "dead letters" } th { "unmatched" } }
                    @for provider in providers {
                        @let p = provider.as_str();
                        tr {
                            td { (p) }
                            td id={ (p) "-inbox-pending" } { (db.inbox.get(&(provider.clone(), "pending")).copied().unwrap_or(0)) }
                            td id={ (p) "-inbox-oldest" } {
                                (db.oldest_pending.get(provider).map(|at| seconds_ago(figures, *at)).unwrap_or(0))
                            }
                            td id={ (p) "-inbox-dead" } { (db.inbox.get(&(provider.clone(), "dead")).copied().unwrap_or(0)) }
                            td id={ (p) "-inbox-unmatched" } { (db.inbox.get(&(provider.clone(), "unmatched")).copied().unwrap_or(0)) }
                        }
                    }
                }

                h2 { "Last vendor errors" }
                @if figures.vendor_errors.is_empty() {
                    p id="vendor-errors-none" { "None since this process started." }
                } @else {
                    table id="vendor-errors" {
                        tr { th { "when (UTC)" } th { "vendor" } th { "endpoint" } th { "status" } }
                        @for error in &figures.vendor_errors {
                            tr class="vendor-error" {
                                td { (error.at.format("%Y-%m-%d %H:%M:%S")) }
                                td { (error.vendor) }
                                td { code { (error.endpoint) } }
                                td {
                                    @match error.status {
                                        Some(code) => (code),
                                        None => "no answer",
                                    }
                                }
                            }
                        }
                    }
                }

                h2 { "Server" }
                table id="server" {
                    tr { td { "open WatchEvents streams" } td id="watch-streams" { (figures.watch_streams) } }
                    tr { td { "database connections busy" } td id="pool-busy" { (figures.pool.size.saturating_sub(figures.pool.idle)) } }
                    tr { td { "database connections idle" } td id="pool-idle" { (figures.pool.idle) } }
                    tr { td { "database connections allowed" } td id="pool-max" { (figures.pool.max) } }
                }
                p { "The same figures in Prometheus form: " a href="metrics" { "/metrics" } "." }
            }
        }
    }
}
