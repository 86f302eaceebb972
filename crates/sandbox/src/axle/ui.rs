//! The hosted Ignition page: plain HTML forms, no JavaScript, at
//! `{base}/axle/ignition-ui/?token=ign_…` (the `ignitionUri`).
//!
//! Flow: choose a carrier (`GET ./login?token&carrier`), sign in (`POST ./login`), or leave
//! (`POST ./exit` with the `step` left from: `carrier-select` or `login`). On complete / exit /
//! error the browser is sent (303) to the session's `redirectUri` with `status`, `authCode`,
//! `result`, `step`, `message` and `client`; without a redirectUri a result page shows the same
//! values in elements with ids `status`, `authCode`, `result`, `step`, `message`, `client`.

use axum::Form;
use axum::Router;
use axum::extract::{Query, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use super::fixtures::CARRIERS;
use super::{AxleError, AxleSim, IgnitionInfo, IgnitionStatus, SignIn};
use crate::faults::{Faults, guard_router};

pub(super) fn router(faults: &Faults) -> Router<AxleSim> {
    let pages = Router::new()
        .route("/ignition-ui", get(add_slash))
        .route("/ignition-ui/", get(landing))
        .route("/ignition-ui/login", get(login_page).post(login_submit))
        .route("/ignition-ui/exit", post(exit));
    guard_router(faults, "axle.ignition_ui", pages)
}

async fn add_slash(RawQuery(q): RawQuery) -> Redirect {
    // Relative, so the page works wherever the router is mounted.
    Redirect::to(&format!("ignition-ui/?{}", q.unwrap_or_default()))
}

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

async fn landing(State(sim): State<AxleSim>, Query(q): Query<TokenQuery>) -> Response {
    let ign = match open(&sim, q.token.as_deref()) {
        Ok(ign) => ign,
        Err(page) => return *page,
    };
    if ign.status.is_final() {
        return ended_page(&ign);
    }
    let carriers: String = CARRIERS
        .iter()
        .enumerate()
        .map(|(i, (slug, name))| {
            let checked = if i == 0 { " checked" } else { "" };
            format!(
                r#"<li><label><input type="radio" name="carrier" value="{slug}"{checked}> {name}</label></li>"#
            )
        })
        .collect();
    let token = esc(&ign.token);
    page(
        StatusCode::OK,
        "Connect your insurance",
        &format!(
            r#"<h1>Connect your insurance</h1>
<p>Choose your insurance carrier.</p>
<form id="carrier-form" method="get" action="login">
<input type="hidden" name="token" value="{token}">
<ul class="carriers">{carriers}</ul>
<button type="submit" id="continue">Continue</button>
</form>
{exit}"#,
            exit = exit_form(&token, "carrier-select")
        ),
    )
}

#[derive(Deserialize)]
struct LoginQuery {
    token: Option<String>,
    carrier: Option<String>,
}

async fn login_page(State(sim): State<AxleSim>, Query(q): Query<LoginQuery>) -> Response {
    let ign = match open(&sim, q.token.as_deref()) {
        Ok(ign) => ign,
        Err(page) => return *page,
    };
    if ign.status.is_final() {
        return ended_page(&ign);
    }
    match q.carrier.as_deref() {
        Some(c) if super::fixtures::carrier_name(c).is_some() => {
            login_form(StatusCode::OK, &ign, c, None)
        }
        _ => message_page(
            StatusCode::BAD_REQUEST,
            "Choose a carrier",
            "Please choose an insurance carrier.",
        ),
    }
}

fn login_form(
    status: StatusCode,
    ign: &IgnitionInfo,
    carrier: &str,
    error: Option<&str>,
) -> Response {
    let name = super::fixtures::carrier_name(carrier).unwrap_or(carrier);
    let token = esc(&ign.token);
    let error = error
        .map(|e| format!(r#"<p id="error" role="alert">{}</p>"#, esc(e)))
        .unwrap_or_default();
    page(
        status,
        &format!("Sign in to {name}"),
        &format!(
            r#"<h1>Sign in to {name}</h1>
{error}
<form id="login-form" method="post" action="login">
<input type="hidden" name="token" value="{token}">
<input type="hidden" name="carrier" value="{carrier}">
<label>Username <input type="text" name="username" id="username" autocomplete="username"></label>
<label>Password <input type="password" name="password" id="password" autocomplete="current-password"></label>
<button type="submit" id="sign-in">Sign in</button>
</form>
<p><a href="./?token={token}">Choose a different carrier</a></p>
{exit}"#,
            name = esc(name),
            carrier = esc(carrier),
            exit = exit_form(&token, "login")
        ),
    )
}

#[derive(Deserialize)]
struct LoginForm {
    token: Option<String>,
    carrier: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

async fn login_submit(State(sim): State<AxleSim>, Form(f): Form<LoginForm>) -> Response {
    let ign = match open(&sim, f.token.as_deref()) {
        Ok(ign) => ign,
        Err(page) => return *page,
    };
    let carrier = f.carrier.unwrap_or_default();
    let outcome = sim.sign_in(
        &ign.token,
        &carrier,
        f.username.as_deref().unwrap_or_default(),
        f.password.as_deref().unwrap_or_default(),
    );
    match outcome {
        Ok(SignIn::Attempted { .. }) => login_form(
            StatusCode::OK,
            &ign,
            &carrier,
            Some("The username or password you entered is incorrect. Please try again."),
        ),
        Ok(SignIn::Complete {
            auth_code,
            result,
            redirect,
            ..
        }) => finish(
            redirect,
            "You're all set",
            &[
                ("status", "complete"),
                ("authCode", &auth_code),
                ("result", &result),
                ("client", &ign.client),
            ],
        ),
        Ok(SignIn::Error { message, redirect }) => finish(
            redirect,
            "Something went wrong",
            &[
                ("status", "error"),
                ("message", &message),
                ("client", &ign.client),
            ],
        ),
        Err(AxleError::BadRequest(msg)) if msg.starts_with("unknown carrier") => message_page(
            StatusCode::BAD_REQUEST,
            "Choose a carrier",
            "Please choose an insurance carrier.",
        ),
        Err(e) => error_page(e),
    }
}

#[derive(Deserialize)]
struct ExitForm {
    token: Option<String>,
    step: Option<String>,
}

async fn exit(State(sim): State<AxleSim>, Form(f): Form<ExitForm>) -> Response {
    let token = f.token.unwrap_or_default();
    let step = f.step.unwrap_or_else(|| "carrier-select".into());
    match sim.exit_ignition(&token, &step) {
        Ok(redirect) => {
            let client = sim.ignition(&token).map(|i| i.client).unwrap_or_default();
            finish(
                redirect,
                "You left Ignition",
                &[("status", "exit"), ("step", &step), ("client", &client)],
            )
        }
        Err(e) => error_page(e),
    }
}

/// Looks the session up and marks it opened (sends `ignition.opened` the first time).
fn open(sim: &AxleSim, token: Option<&str>) -> Result<IgnitionInfo, Box<Response>> {
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return Err(Box::new(message_page(
            StatusCode::BAD_REQUEST,
            "Missing token",
            "This link is missing its Ignition token.",
        )));
    };
    match sim.ignition(token) {
        None => Err(Box::new(message_page(
            StatusCode::NOT_FOUND,
            "Invalid link",
            "This Ignition link is not valid.",
        ))),
        Some(ign) if ign.status.is_final() => Ok(ign),
        Some(_) => sim
            .open_ignition(token)
            .map_err(|e| Box::new(error_page(e))),
    }
}

fn finish(redirect: Option<String>, title: &str, params: &[(&str, &str)]) -> Response {
    if let Some(url) = redirect {
        return Redirect::to(&url).into_response();
    }
    let rows: String = params
        .iter()
        .map(|(k, v)| format!(r#"<dt>{k}</dt><dd id="{k}">{}</dd>"#, esc(v)))
        .collect();
    page(
        StatusCode::OK,
        title,
        &format!(
            r#"<h1>{}</h1><dl id="result-params">{rows}</dl>"#,
            esc(title)
        ),
    )
}

fn ended_page(ign: &IgnitionInfo) -> Response {
    let status = match ign.status {
        IgnitionStatus::Completed => "complete",
        IgnitionStatus::Exited => "exit",
        IgnitionStatus::Errored => "error",
        _ => "open",
    };
    page(
        StatusCode::OK,
        "Session ended",
        &format!(
            r#"<h1>This Ignition session has ended</h1><p>Status: <span id="status">{status}</span></p>
<p>Ask for a new link to connect again.</p>"#
        ),
    )
}

fn error_page(e: AxleError) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
    message_page(status, "Unable to continue", &e.to_string())
}

fn message_page(status: StatusCode, title: &str, message: &str) -> Response {
    page(
        status,
        title,
        &format!(
            r#"<h1>{}</h1><p id="message">{}</p>"#,
            esc(title),
            esc(message)
        ),
    )
}

fn exit_form(token: &str, step: &str) -> String {
    format!(
        r#"<form id="exit-form" method="post" action="exit">
<input type="hidden" name="token" value="{token}">
<input type="hidden" name="step" value="{step}">
<button type="submit" id="exit">Exit</button>
</form>"#
    )
}

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · Axle Ignition (sandbox)</title>
<style>body{{font-family:system-ui,sans-serif;max-width:28rem;margin:2rem auto;padding:0 1rem}}
ul.carriers{{list-style:none;padding:0}}label{{display:block;margin:.5rem 0}}
#error{{color:#b00020}}button{{margin-top:.75rem}}</style></head>
<body><p><small>Axle Ignition · sandbox</small></p>
{body}
</body></html>"#,
        title = esc(title)
    );
    let mut response = (status, Html(html)).into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    response
}

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}
