//! Canopy's error envelope: `{"error": "SCREAMING_SNAKE_CODE"}` with the status the OpenAPI
//! document gives for that operation (some operations answer `NOT_FOUND` under 400).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CanopyError {
    /// What the Canopy API answers: the HTTP status and the `error` code.
    #[error("Canopy answered HTTP {status} {{\"error\":\"{code}\"}}")]
    Api { status: u16, code: &'static str },
    /// A control-API request that does not make sense (unknown target, bad scenario).
    #[error("invalid sandbox request: {0}")]
    Control(String),
    #[error("timed out waiting for {0}")]
    Timeout(String),
}

impl CanopyError {
    pub fn api(status: u16, code: &'static str) -> Self {
        Self::Api { status, code }
    }

    pub fn bad_request(code: &'static str) -> Self {
        Self::api(400, code)
    }

    pub fn unauthorized() -> Self {
        Self::api(401, "UNAUTHORIZED")
    }

    /// `403 {"error":"UNAUTHORIZED"}`: what webhook routes and `pull-jwt` routes answer.
    pub fn forbidden() -> Self {
        Self::api(403, "UNAUTHORIZED")
    }

    pub fn not_found() -> Self {
        Self::api(404, "NOT_FOUND")
    }

    /// The vendor error code, if this is a vendor error.
    pub fn code(&self) -> Option<&'static str> {
        match self {
            Self::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            Self::Api { status, .. } => *status,
            Self::Control(_) => 400,
            Self::Timeout(_) => 504,
        }
    }
}

impl IntoResponse for CanopyError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = match &self {
            Self::Api { code, .. } => json!({ "error": code }),
            Self::Control(message) => {
                json!({ "error": "INVALID_SANDBOX_REQUEST", "message": message })
            }
            Self::Timeout(what) => json!({ "error": "TIMEOUT", "message": what }),
        };
        (status, Json(body)).into_response()
    }
}

pub type CanopyResult<T> = Result<T, CanopyError>;
