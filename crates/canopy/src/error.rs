//! Everything that can go wrong talking to Canopy, and how it reads as a [`ProviderError`].

use coverwatch_core::provider::{ProviderError, RejectionKind, VendorErrorInfo};
use coverwatch_vendor_http::is_retryable_status;

use crate::PROVIDER;

/// Canopy codes that mean "not in this state", not "bad input": trying again with the same
/// request will not help, but the link's situation might change (a newer pull, a reconnect).
const PRECONDITION_CODES: &[&str] = &[
    "MONITORING_INACTIVE",
    "ALREADY_RECONNECTED",
    "NEWER_PULL_AVAILABLE",
    "CURRENTLY_REFRESHING",
    "PULL_NOT_SUCCESS",
    "INVALID_RECONNECT_TOKEN",
    "PULL_TOO_OLD",
    "PULL_NOT_SUPPORTED",
    // A white-label step sent while the pull is in another authentication state.
    "INVALID_ACTION",
];

#[derive(Debug, thiserror::Error)]
pub enum CanopyError {
    /// Canopy answered with an error status and (usually) `{"error": "CODE"}`.
    #[error(
        "Canopy answered HTTP {status}{}{}",
        code.as_deref().map(|c| format!(" {c}")).unwrap_or_default(),
        retry_after.map(|s| format!(" and asks to wait {s} s before trying again")).unwrap_or_default()
    )]
    Api {
        status: u16,
        code: Option<String>,
        request_id: Option<String>,
        /// Seconds from `Retry-After`, when Canopy sent one.
        retry_after: Option<u64>,
    },
    /// Canopy could not be reached, or did not answer in time.
    #[error("could not reach Canopy: {message}")]
    Transport {
        message: String,
        kind: TransportKind,
    },
    /// Canopy answered 2xx with a body we cannot read.
    #[error("unreadable Canopy response: {0}")]
    Decode(String),
    /// The configuration is unusable; `key` names the field.
    #[error("invalid Canopy configuration `{key}`: {message}")]
    Config { key: &'static str, message: String },
    /// We were asked something Canopy cannot answer (a link without the needed vendor id).
    #[error("{message}")]
    Precondition { message: String },
    /// A request that is wrong before it is sent.
    #[error("{message}")]
    InvalidRequest { message: String },
}

/// How far a request got: the executor's reading, shared by every vendor.
pub use coverwatch_vendor_http::TransportKind;

impl CanopyError {
    pub fn config(key: &'static str, message: impl Into<String>) -> Self {
        CanopyError::Config {
            key,
            message: message.into(),
        }
    }

    pub(crate) fn precondition(message: impl Into<String>) -> Self {
        CanopyError::Precondition {
            message: message.into(),
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        CanopyError::InvalidRequest {
            message: message.into(),
        }
    }

    /// Canopy's own error code, when it sent one.
    pub fn code(&self) -> Option<&str> {
        match self {
            CanopyError::Api { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            CanopyError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Worth trying again (same request, a little later): the executor's rule, shared by every
    /// vendor (see [`coverwatch_vendor_http::is_retryable_status`]).
    pub fn is_transient(&self) -> bool {
        match self {
            CanopyError::Api { status, .. } => is_retryable_status(*status),
            CanopyError::Transport { .. } => true,
            _ => false,
        }
    }

    pub fn into_provider_error(self) -> ProviderError {
        ProviderError::from(self)
    }
}

fn rejected(kind: RejectionKind, message: String, vendor: VendorErrorInfo) -> ProviderError {
    ProviderError::Rejected {
        provider: PROVIDER,
        kind,
        message,
        vendor,
    }
}

impl From<CanopyError> for ProviderError {
    fn from(err: CanopyError) -> Self {
        let message = err.to_string();
        match err {
            CanopyError::Api {
                status,
                code,
                request_id,
                ..
            } => {
                let kind = rejection_kind(status, code.as_deref());
                let vendor = VendorErrorInfo {
                    http_status: Some(status),
                    code,
                    request_id,
                };
                match kind {
                    None => ProviderError::Unavailable {
                        provider: PROVIDER,
                        message,
                        vendor,
                    },
                    Some(kind) => rejected(kind, message, vendor),
                }
            }
            CanopyError::Transport { .. } => ProviderError::Unavailable {
                provider: PROVIDER,
                message,
                vendor: VendorErrorInfo::default(),
            },
            CanopyError::Decode(_) => ProviderError::Malformed {
                provider: PROVIDER,
                message,
            },
            CanopyError::Config { .. } | CanopyError::Precondition { .. } => rejected(
                RejectionKind::FailedPrecondition,
                message,
                VendorErrorInfo::default(),
            ),
            CanopyError::InvalidRequest { .. } => rejected(
                RejectionKind::InvalidArgument,
                message,
                VendorErrorInfo::default(),
            ),
        }
    }
}

/// `None` for a transient failure; otherwise why Canopy refused.
fn rejection_kind(status: u16, code: Option<&str>) -> Option<RejectionKind> {
    if is_retryable_status(status) {
        return None;
    }
    Some(match (status, code) {
        (401, _) => RejectionKind::Unauthenticated,
        (403, _) => RejectionKind::PermissionDenied,
        // Some operations answer an unknown id with 400 NOT_FOUND.
        (404, _) | (_, Some("NOT_FOUND")) => RejectionKind::NotFound,
        (_, Some(code)) if PRECONDITION_CODES.contains(&code) => RejectionKind::FailedPrecondition,
        _ => RejectionKind::InvalidArgument,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, code: &str) -> ProviderError {
        CanopyError::Api {
            status,
            code: Some(code.into()),
            request_id: Some("req-1".into()),
            retry_after: None,
        }
        .into()
    }

    fn kind_of(err: &ProviderError) -> Option<RejectionKind> {
        match err {
            ProviderError::Rejected { kind, .. } => Some(*kind),
            _ => None,
        }
    }

    #[test]
    fn canopy_codes_map_to_rejection_kinds() {
        assert_eq!(
            kind_of(&api(400, "INVALID_INPUT")),
            Some(RejectionKind::InvalidArgument)
        );
        for code in [
            "MONITORING_INACTIVE",
            "ALREADY_RECONNECTED",
            "NEWER_PULL_AVAILABLE",
            "CURRENTLY_REFRESHING",
            "PULL_NOT_SUCCESS",
            "INVALID_RECONNECT_TOKEN",
        ] {
            assert_eq!(
                kind_of(&api(400, code)),
                Some(RejectionKind::FailedPrecondition),
                "{code}"
            );
        }
        assert_eq!(
            kind_of(&api(400, "NOT_FOUND")),
            Some(RejectionKind::NotFound)
        );
        assert_eq!(
            kind_of(&api(404, "NOT_FOUND")),
            Some(RejectionKind::NotFound)
        );
        assert_eq!(
            kind_of(&api(401, "UNAUTHORIZED")),
            Some(RejectionKind::Unauthenticated)
        );
        assert_eq!(
            kind_of(&api(403, "UNAUTHORIZED")),
            Some(RejectionKind::PermissionDenied)
        );
        assert_eq!(
            kind_of(&api(403, "SUBSCRIPTION_INACTIVE")),
            Some(RejectionKind::PermissionDenied)
        );
    }

    /// Canopy publishes no retry guidance: no rate limit, no 429 and no `Retry-After` in its
    /// OpenAPI or its 123-page docs index (https://docs.usecanopy.com/llms.txt, as surveyed in
    /// api-evangelist/canopy `rate-limits/canopy-rate-limits.yml`; /work/shared/vendors/canopy.md
    /// §6 "Rate limits: not documented"). So HTTP's own meaning decides, the rule shared with
    /// every vendor: 408 "the client MAY repeat that request" (RFC 9110 §15.5.9) and 425 "MAY
    /// automatically retry" (RFC 8470 §5.2) are transient now, as 429 and 5xx already were.
    #[test]
    fn server_errors_and_throttling_are_transient_and_keep_the_code() {
        for status in [408, 425, 429, 500, 502, 503] {
            let err = api(status, "INTERNAL_ERROR");
            assert!(err.is_retryable(), "{status}");
            let ProviderError::Unavailable { vendor, .. } = err else {
                panic!()
            };
            assert_eq!(vendor.http_status, Some(status));
            assert_eq!(vendor.code.as_deref(), Some("INTERNAL_ERROR"));
            assert_eq!(vendor.request_id.as_deref(), Some("req-1"));
        }
        let transport: ProviderError = CanopyError::Transport {
            message: "timed out".into(),
            kind: TransportKind::Timeout,
        }
        .into();
        assert!(transport.is_retryable());
    }

    #[test]
    fn rejected_keeps_the_vendor_code() {
        let ProviderError::Rejected {
            vendor, message, ..
        } = api(400, "PULL_NOT_SUCCESS")
        else {
            panic!()
        };
        assert_eq!(vendor.code.as_deref(), Some("PULL_NOT_SUCCESS"));
        assert_eq!(vendor.http_status, Some(400));
        assert!(message.contains("PULL_NOT_SUCCESS"));
    }

    #[test]
    fn unreadable_answers_are_malformed() {
        let err: ProviderError = CanopyError::Decode("eof".into()).into();
        assert!(matches!(err, ProviderError::Malformed { .. }));
    }
}
