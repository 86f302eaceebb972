//! The public HTTP listener: vendor webhooks plus liveness and readiness. A delivery is answered
//! `200` only after it is durably stored; what it means is worked out later by the inbox worker.
//!
//! The listener is exposed to the internet, so it is served by its own accept loop rather than
//! `axum::serve`: a cap on connections, a deadline for each request head (slow or idle clients
//! cannot hold a connection), a deadline for each body, `TCP_NODELAY`, and optional TLS.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use chrono::Utc;
use coverwatch_core::webhook::{InboundWebhook, WebhookRejection};
use coverwatch_engine::{Engine, IngestError};
use coverwatch_store::Ingested;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tracing::field::Empty;

use crate::prometheus::{Telemetry, WebhookOutcome, provider_label};
use crate::supervisor::TaskHealth;
use crate::telemetry::RequestId;

/// Bodies past this are refused with `413` before they reach the engine's own size check.
const BODY_LIMIT: usize = coverwatch_engine::MAX_WEBHOOK_BYTES;

/// What a delivery refused because the ingest queue is full is told to wait (`Retry-After`):
/// the queue drains within milliseconds unless the database is stuck.
const BUSY_RETRY_AFTER_SECONDS: &str = "1";

/// How often refused deliveries are reported after the first one is logged.
const REFUSAL_REPORT_EVERY: Duration = Duration::from_secs(60);

/// What the webhook handlers share besides the engine.
#[derive(Clone)]
pub struct Webhooks {
    pub body_read_timeout: Duration,
    pub refusals: Arc<Refusals>,
    pub telemetry: Arc<Telemetry>,
}

/// Refused (unauthenticated) deliveries: all counted, few logged. Anyone can post to the
/// listener, so a log line per refusal would let a stranger fill the logs.
#[derive(Debug, Default)]
pub struct Refusals {
    refused: AtomicU64,
    logged: AtomicU64,
    report: std::sync::Mutex<RefusalReport>,
}

#[derive(Debug, Default)]
struct RefusalReport {
    last_logged: Option<Instant>,
    unlogged: u64,
}

/// How many deliveries were refused, and how many log lines reported them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefusalCounts {
    pub refused: u64,
    pub logged: u64,
}

impl Refusals {
    fn record(&self, provider: &str, rejection: &WebhookRejection) {
        self.refused.fetch_add(1, Ordering::Relaxed);
        let unlogged = {
            let mut report = self.report.lock().unwrap_or_else(|e| e.into_inner());
            let due = report
                .last_logged
                .is_none_or(|at| at.elapsed() >= REFUSAL_REPORT_EVERY);
            if !due {
                report.unlogged += 1;
                return;
            }
            report.last_logged = Some(Instant::now());
            std::mem::take(&mut report.unlogged)
        };
        self.logged.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            %provider,
            %rejection,
            refused_since_last_report = unlogged,
            "webhook refused (further refusals are counted and reported at most once a minute)"
        );
    }

    pub fn counts(&self) -> RefusalCounts {
        RefusalCounts {
            refused: self.refused.load(Ordering::Relaxed),
            logged: self.logged.load(Ordering::Relaxed),
        }
    }
}

/// The public router. `operator_pages` adds `/metrics` and the status page `/` (when no
/// separate `metrics_addr` is configured).
pub fn router(
    engine: Engine,
    health: TaskHealth,
    webhooks: Webhooks,
    operator_pages: bool,
) -> Router {
    let telemetry = webhooks.telemetry.clone();
    let router = Router::new()
        .route("/webhooks/{provider}", post(webhook_without_path))
        .route("/webhooks/{provider}/{*path}", post(webhook_with_path))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn(crate::telemetry::http_request_id))
        .layer(Extension(webhooks))
        .layer(Extension(health))
        .with_state(engine);
    if operator_pages {
        router.merge(crate::status::router(telemetry))
    } else {
        router
    }
}

/// How the listener protects itself.
pub struct ListenerLimits {
    pub header_read_timeout: Duration,
    pub max_connections: usize,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

/// Accept and serve connections until `shutdown` turns true, then let the requests in flight
/// finish (idle connections close at once) and return.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ListenerLimits,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut stopping = std::pin::pin!(async move {
        let _ = shutdown.wait_for(|stop| *stop).await;
    });
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http1 = hyper::server::conn::http1::Builder::new();
    // The header deadline runs from the moment hyper waits for a request head: for a new
    // connection that sent nothing yet, and for a kept-alive one between requests.
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    loop {
        // At the cap, stop accepting: further clients wait in the kernel's backlog instead of
        // costing a task and buffers each.
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            _ = &mut stopping => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(e) => {
                    // Out of file descriptors or a connection reset before accept: back off
                    // briefly instead of spinning on the error.
                    tracing::warn!(error = %e, "webhook listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut stopping => break,
        };
        // Without it, a response written in more than one segment waits for the client's
        // delayed ACK (about 40 ms) before its last part leaves.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let service = TowerToHyperService::new(router.clone());
        let http1 = http1.clone();
        let watcher = graceful.watcher();
        let tls = limits.tls.clone();
        let handshake_timeout = limits.header_read_timeout;
        tokio::spawn(async move {
            let _permit = permit;
            let result = match tls {
                None => {
                    let conn = http1.serve_connection(TokioIo::new(stream), service);
                    watcher.watch(conn).await
                }
                Some(acceptor) => {
                    let stream = match tokio::time::timeout(
                        handshake_timeout,
                        acceptor.accept(stream),
                    )
                    .await
                    {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, "webhook listener: TLS handshake failed");
                            return;
                        }
                        Err(_) => return,
                    };
                    let conn = http1.serve_connection(TokioIo::new(stream), service);
                    watcher.watch(conn).await
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "webhook listener: connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

async fn webhook_without_path(
    State(engine): State<Engine>,
    Extension(webhooks): Extension<Webhooks>,
    Path(provider): Path<String>,
    headers: HeaderMap,
    request: Request,
) -> Response {
    receive(engine, webhooks, provider, String::new(), headers, request).await
}

async fn webhook_with_path(
    State(engine): State<Engine>,
    Extension(webhooks): Extension<Webhooks>,
    Path((provider, path)): Path<(String, String)>,
    headers: HeaderMap,
    request: Request,
) -> Response {
    receive(engine, webhooks, provider, path, headers, request).await
}

async fn receive(
    engine: Engine,
    webhooks: Webhooks,
    provider: String,
    path: String,
    headers: HeaderMap,
    request: Request,
) -> Response {
    // Not entered here: the engine chooses its parent once the delivery is authenticated and
    // its link known (see `coverwatch_engine::trace`).
    let span = tracing::info_span!(
        parent: None,
        "webhook.ingest",
        otel.kind = "server",
        otel.status_code = Empty,
        provider = %provider,
        request_id = request
            .extensions()
            .get::<RequestId>()
            .map_or("", |id| id.0.as_str()),
        http.response.status_code = Empty,
        link_id = Empty,
        delivery_id = Empty,
        duplicate = Empty,
        trace_id = Empty,
    );
    let telemetry = webhooks.telemetry.clone();
    let label = provider_label(&provider, engine.providers()).to_owned();
    let (response, outcome) =
        ingest(engine, webhooks, provider, path, headers, request, &span).await;
    telemetry.webhook(&label, outcome);
    span.record("http.response.status_code", response.status().as_u16());
    if response.status().is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    response
}

async fn ingest(
    engine: Engine,
    webhooks: Webhooks,
    provider: String,
    path: String,
    headers: HeaderMap,
    request: Request,
    span: &tracing::Span,
) -> (Response, WebhookOutcome) {
    // A sender trickling its body would otherwise hold the connection and a task for as long
    // as it likes; the size limit (413) still applies through `DefaultBodyLimit`.
    let body = match tokio::time::timeout(
        webhooks.body_read_timeout,
        Bytes::from_request(request, &()),
    )
    .await
    {
        Ok(Ok(body)) => body,
        Ok(Err(rejection)) => {
            let outcome = if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                WebhookOutcome::TooLarge
            } else {
                WebhookOutcome::Malformed
            };
            return (rejection.into_response(), outcome);
        }
        Err(_) => {
            return (
                (
                    StatusCode::REQUEST_TIMEOUT,
                    Json(json!({"error": "the request body did not arrive in time"})),
                )
                    .into_response(),
                WebhookOutcome::Malformed,
            );
        }
    };
    let headers = headers
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_ascii_lowercase(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    let webhook = InboundWebhook {
        path,
        headers,
        body: body.to_vec(),
        received_at: Utc::now(),
    };
    match engine.ingest_webhook_traced(&provider, webhook, span).await {
        Ok(Ingested::Stored(id)) => (
            (
                StatusCode::OK,
                Json(json!({"status": "stored", "delivery_id": id.to_string()})),
            )
                .into_response(),
            WebhookOutcome::Stored,
        ),
        Ok(Ingested::Duplicate) => (
            (StatusCode::OK, Json(json!({"status": "duplicate"}))).into_response(),
            WebhookOutcome::Duplicate,
        ),
        Err(err) => {
            let (status, outcome) = match &err {
                IngestError::UnknownProvider(_) => {
                    (StatusCode::NOT_FOUND, WebhookOutcome::UnknownProvider)
                }
                IngestError::Unauthenticated(rejection) => {
                    webhooks.refusals.record(&provider, rejection);
                    (
                        StatusCode::UNAUTHORIZED,
                        WebhookOutcome::unauthenticated(rejection),
                    )
                }
                IngestError::TooLarge { .. } => {
                    (StatusCode::PAYLOAD_TOO_LARGE, WebhookOutcome::TooLarge)
                }
                IngestError::Busy { waiting } => {
                    tracing::debug!(%provider, waiting, "webhook refused: the ingest queue is full; answering 503 with Retry-After");
                    (StatusCode::SERVICE_UNAVAILABLE, WebhookOutcome::Unavailable)
                }
                IngestError::Unavailable(e) => {
                    tracing::error!(%provider, error = %e, "webhook not stored; answering 503 so the vendor retries");
                    (StatusCode::SERVICE_UNAVAILABLE, WebhookOutcome::Unavailable)
                }
            };
            let message = match &err {
                // Never tell an unauthenticated sender which check failed.
                IngestError::Unauthenticated(_) => "unauthenticated".to_owned(),
                IngestError::Unavailable(_) => "temporarily unavailable; retry".to_owned(),
                IngestError::Busy { .. } => "busy; retry shortly".to_owned(),
                other => other.to_string(),
            };
            let mut response = (status, Json(json!({"error": message}))).into_response();
            if matches!(err, IngestError::Busy { .. }) {
                response.headers_mut().insert(
                    axum::http::header::RETRY_AFTER,
                    axum::http::HeaderValue::from_static(BUSY_RETRY_AFTER_SECONDS),
                );
            }
            (response, outcome)
        }
    }
}

async fn healthz() -> &'static str {
    "ok"
}

/// Ready when every required background task runs and the database answers; otherwise `503`
/// saying which is not. How a task stopped (its panic message may quote any data) is in the
/// log only: this listener is public.
async fn readyz(
    State(engine): State<Engine>,
    Extension(health): Extension<TaskHealth>,
) -> Response {
    let down: Vec<&str> = health.down_tasks().iter().map(|(name, _)| *name).collect();
    if !down.is_empty() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("required task down: {}", down.join(", ")),
        )
            .into_response();
    }
    match engine.store().ping().await {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "not ready: database unreachable");
            (StatusCode::SERVICE_UNAVAILABLE, "database unreachable").into_response()
        }
    }
}
