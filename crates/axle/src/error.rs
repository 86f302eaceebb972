//! What can go wrong talking to Axle, and how it reads in the common vocabulary.

use crate::PROVIDER;
use std::time::Duration;

use coverwatch_core::provider::{ProviderError, RejectionKind, VendorErrorInfo};
use serde_json::Value;

use crate::config::ConfigError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AxleError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot build the Axle HTTP client: {0}")]
    Client(String),
    /// No HTTP answer: connect failure, reset, or timeout.
    #[error("could not reach Axle ({operation}): {message}")]
    Transport {
        operation: &'static str,
        message: String,
        timeout: bool,
    },
    /// Axle answered with an error status (or `success: false`).
    #[error("Axle answered {status} to {operation}: {message}")]
    Api {
        operation: &'static str,
        status: u16,
        /// Axle's own text, or the raw body when it has none.
        message: String,
        /// An error code, when the (undocumented) body carries one.
        code: Option<String>,
        request_id: Option<String>,
        retry_after: Option<Duration>,
    },
    #[error("Axle sent an unreadable response to {operation}: {message}")]
    Malformed {
        operation: &'static str,
        message: String,
        request_id: Option<String>,
    },
}

impl AxleError {
    /// Worth trying the same request again: Axle is overloaded, failing or unreachable.
    pub fn is_transient(&self) -> bool {
        match self {
            AxleError::Transport { .. } => true,
            AxleError::Api { status, .. } => is_transient_status(*status),
            _ => false,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            AxleError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub fn vendor_info(&self) -> VendorErrorInfo {
        match self {
            AxleError::Api {
                status,
                code,
                request_id,
                ..
            } => VendorErrorInfo {
                http_status: Some(*status),
                code: code.clone(),
                request_id: request_id.clone(),
            },
            AxleError::Malformed { request_id, .. } => VendorErrorInfo {
                request_id: request_id.clone(),
                ..VendorErrorInfo::default()
            },
            _ => VendorErrorInfo::default(),
        }
    }
}

/// The retry rule every vendor shares (`coverwatch_vendor_http::is_retryable_status`).
pub(crate) fn is_transient_status(status: u16) -> bool {
    coverwatch_vendor_http::is_retryable_status(status)
}

/// The rejection a non-transient status means, read the usual HTTP way (Axle documents no
/// error codes of its own).
pub(crate) fn rejection_for(status: u16) -> RejectionKind {
    match status {
        401 => RejectionKind::Unauthenticated,
        403 => RejectionKind::PermissionDenied,
        404 | 410 => RejectionKind::NotFound,
        409 | 412 => RejectionKind::FailedPrecondition,
        400..=499 => RejectionKind::InvalidArgument,
        // A 2xx with `success: false`, or a redirect we do not follow: the request itself is
        // fine, the state on Axle's side is not.
        _ => RejectionKind::FailedPrecondition,
    }
}

impl From<AxleError> for ProviderError {
    fn from(err: AxleError) -> Self {
        let provider = PROVIDER;
        let vendor = err.vendor_info();
        match err {
            AxleError::Config(_) | AxleError::Client(_) => ProviderError::Rejected {
                provider,
                kind: RejectionKind::FailedPrecondition,
                message: err.to_string(),
                vendor,
            },
            AxleError::Transport { .. } => ProviderError::Unavailable {
                provider,
                message: err.to_string(),
                vendor,
            },
            AxleError::Api { status, .. } if is_transient_status(status) => {
                ProviderError::Unavailable {
                    provider,
                    message: err.to_string(),
                    vendor,
                }
            }
            AxleError::Api { status, .. } => ProviderError::Rejected {
                provider,
                kind: rejection_for(status),
                message: err.to_string(),
                vendor,
            },
            AxleError::Malformed { .. } => ProviderError::Malformed {
                provider,
                message: err.to_string(),
            },
        }
    }
}

/// The longest vendor text kept in an error message.
const MAX_MESSAGE: usize = 500;

/// Message and code from an error body. Axle documents no error schema, so this reads the
/// likely shapes (`{success:false, message}`, `{error: "…"}`, `{error: {code, message}}`,
/// `{errors: [{message}]}`) and falls back to the raw text.
pub(crate) fn describe_error_body(body: &[u8], status: u16) -> (String, Option<String>) {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let text = |v: Option<&Value>| -> Option<String> {
        match v? {
            Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    };
    let (mut message, mut code) = (None, None);
    if let Some(obj) = parsed.as_ref().and_then(Value::as_object) {
        message = text(obj.get("message"))
            .or_else(|| text(obj.get("error_description")))
            .or_else(|| text(obj.get("detail")));
        code = text(obj.get("code"))
            .or_else(|| text(obj.get("errorCode")))
            .or_else(|| text(obj.get("error_code")));
        match obj.get("error") {
            Some(Value::String(s)) if !s.trim().is_empty() => {
                // `{error: "NOT_FOUND"}` is a code; `{error: "Token not found"}` a message.
                if looks_like_code(s) {
                    code = code.or_else(|| Some(s.trim().to_owned()));
                } else {
                    message = message.or_else(|| Some(s.trim().to_owned()));
                }
            }
            Some(Value::Object(inner)) => {
                message = message.or_else(|| text(inner.get("message")));
                code = code.or_else(|| text(inner.get("code")));
            }
            _ => {}
        }
        if message.is_none()
            && let Some(first) = obj
                .get("errors")
                .and_then(Value::as_array)
                .and_then(|a| a.first())
        {
            message = text(first.get("message")).or_else(|| text(Some(first)));
        }
    }
    let message = message.unwrap_or_else(|| {
        let raw = String::from_utf8_lossy(body);
        let raw = raw.trim();
        if raw.is_empty() {
            format!("HTTP {status} with an empty body")
        } else {
            raw.to_owned()
        }
    });
    (truncate(message), code)
}

fn looks_like_code(s: &str) -> bool {
    let s = s.trim();
    !s.is_empty()
        && s.len() <= 64
        && s.bytes().all(|b| {
            b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_' || b == b'-' || b == b'.'
        })
}

fn truncate(mut s: String) -> String {
    if s.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_likely_error_shapes() {
        assert_eq!(
            describe_error_body(br#"{"success":false,"message":"Invalid authCode"}"#, 400),
            ("Invalid authCode".to_owned(), None)
        );
        assert_eq!(
            describe_error_body(br#"{"success":false,"error":"NOT_FOUND"}"#, 404),
            (
                "{\"success\":false,\"error\":\"NOT_FOUND\"}".to_owned(),
                Some("NOT_FOUND".into())
            )
        );
        assert_eq!(
            describe_error_body(br#"{"error":"Token not found"}"#, 401),
            ("Token not found".to_owned(), None)
        );
        assert_eq!(
            describe_error_body(
                br#"{"error":{"code":"rate_limited","message":"slow down"}}"#,
                429
            ),
            ("slow down".to_owned(), Some("rate_limited".into()))
        );
        assert_eq!(
            describe_error_body(
                br#"{"success":false,"errors":[{"message":"bad scope"}],"code":42}"#,
                400
            ),
            ("bad scope".to_owned(), Some("42".into()))
        );
        assert_eq!(
            describe_error_body(b"<html>Bad Gateway</html>", 502),
            ("<html>Bad Gateway</html>".to_owned(), None)
        );
        assert_eq!(
            describe_error_body(b"", 503),
            ("HTTP 503 with an empty body".to_owned(), None)
        );
        let (long, _) = describe_error_body("é".repeat(600).as_bytes(), 500);
        assert!(long.len() <= MAX_MESSAGE + '…'.len_utf8());
    }

    fn api(status: u16) -> AxleError {
        AxleError::Api {
            operation: "get_policy",
            status,
            message: "m".into(),
            code: Some("C".into()),
            request_id: Some("req_1".into()),
            retry_after: None,
        }
    }

    #[test]
    fn statuses_map_to_the_common_errors() {
        for status in [408, 425, 429, 500, 502, 503, 504] {
            let err = ProviderError::from(api(status));
            assert!(err.is_retryable(), "{status}");
            let ProviderError::Unavailable { vendor, .. } = err else {
                unreachable!()
            };
            assert_eq!(vendor.http_status, Some(status));
            assert_eq!(vendor.request_id.as_deref(), Some("req_1"));
            assert_eq!(vendor.code.as_deref(), Some("C"));
        }
        for (status, kind) in [
            (400, RejectionKind::InvalidArgument),
            (401, RejectionKind::Unauthenticated),
            (403, RejectionKind::PermissionDenied),
            (404, RejectionKind::NotFound),
            (409, RejectionKind::FailedPrecondition),
            (422, RejectionKind::InvalidArgument),
        ] {
            match ProviderError::from(api(status)) {
                ProviderError::Rejected { kind: got, .. } => assert_eq!(got, kind, "{status}"),
                other => panic!("{status}: {other:?}"),
            }
        }
        let transport = AxleError::Transport {
            operation: "get_account",
            message: "timed out".into(),
            timeout: true,
        };
        assert!(transport.is_transient());
        assert!(ProviderError::from(transport).is_retryable());
        let malformed = AxleError::Malformed {
            operation: "get_account",
            message: "eof".into(),
            request_id: None,
        };
        assert!(matches!(
            ProviderError::from(malformed),
            ProviderError::Malformed { .. }
        ));
    }
}
