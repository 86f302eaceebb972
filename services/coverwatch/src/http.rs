//! The public HTTP listener: vendor webhooks plus liveness and readiness. A delivery is answered
//! `200` only after it is durably stored; what it means is worked out later by the inbox worker.

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use chrono::Utc;
use coverwatch_core::webhook::InboundWebhook;
use coverwatch_engine::{Engine, IngestError};
use coverwatch_store::Ingested;
use serde_json::json;

use crate::supervisor::TaskHealth;

/// Bodies past this are refused with `413` before they reach the engine's own size check.
const BODY_LIMIT: usize = coverwatch_engine::MAX_WEBHOOK_BYTES;

pub fn router(engine: Engine, health: TaskHealth) -> Router {
    Router::new()
        .route("/webhooks/{provider}", post(webhook_without_path))
        .route("/webhooks/{provider}/{*path}", post(webhook_with_path))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(Extension(health))
        .with_state(engine)
}

async fn webhook_without_path(
    State(engine): State<Engine>,
    Path(provider): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    receive(engine, provider, String::new(), headers, body).await
}

async fn webhook_with_path(
    State(engine): State<Engine>,
    Path((provider, path)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    receive(engine, provider, path, headers, body).await
}

async fn receive(
    engine: Engine,
    provider: String,
    path: String,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
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
    match engine.ingest_webhook(&provider, webhook).await {
        Ok(Ingested::Stored(id)) => (
            StatusCode::OK,
            Json(json!({"status": "stored", "delivery_id": id.to_string()})),
        )
            .into_response(),
        Ok(Ingested::Duplicate) => {
            (StatusCode::OK, Json(json!({"status": "duplicate"}))).into_response()
        }
        Err(err) => {
            let status = match &err {
                IngestError::UnknownProvider(_) => StatusCode::NOT_FOUND,
                IngestError::Unauthenticated(rejection) => {
                    tracing::warn!(%provider, %rejection, "webhook refused");
                    StatusCode::UNAUTHORIZED
                }
                IngestError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                IngestError::Unavailable(e) => {
                    tracing::error!(%provider, error = %e, "webhook not stored; answering 503 so the vendor retries");
                    StatusCode::SERVICE_UNAVAILABLE
                }
            };
            let message = match &err {
                // Never tell an unauthenticated sender which check failed.
                IngestError::Unauthenticated(_) => "unauthenticated".to_owned(),
                IngestError::Unavailable(_) => "temporarily unavailable; retry".to_owned(),
                other => other.to_string(),
            };
            (status, Json(json!({"error": message}))).into_response()
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
