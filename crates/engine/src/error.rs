//! The engine's errors. Transports map them once: to `tonic::Status` at the gRPC edge and to an
//! HTTP status at the webhook edge.

use coverwatch_core::provider::ProviderError;
use coverwatch_core::webhook::WebhookRejection;
use coverwatch_core::{IllegalTransition, ProviderId};
use coverwatch_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The request is malformed; `field` names the offending field.
    #[error("{field}: {message}")]
    InvalidArgument { field: String, message: String },
    #[error("{what} `{id}` not found")]
    NotFound { what: &'static str, id: String },
    /// The request is well-formed but the link is not in a state that allows it.
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("provider `{0}` is not configured on this server")]
    ProviderNotConfigured(ProviderId),
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error(transparent)]
    Store(StoreError),
    /// A unit of work (a requirement evaluation, say) panicked; the panic was caught at its
    /// boundary, nothing of the unit was kept, and the message is the panic's.
    #[error("panicked: {0}")]
    Panicked(String),
}

impl From<StoreError> for EngineError {
    /// The store's refusals that are the caller's to fix become the caller's errors here.
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::RequirementSetNotFound(id) => EngineError::NotFound {
                what: "requirement set",
                id,
            },
            refused @ StoreError::RequirementSetInUse { .. } => {
                EngineError::FailedPrecondition(refused.to_string())
            }
            other => EngineError::Store(other),
        }
    }
}

impl EngineError {
    pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        EngineError::InvalidArgument {
            field: field.into(),
            message: message.into(),
        }
    }

    pub(crate) fn link_not_found(id: impl ToString) -> Self {
        EngineError::NotFound {
            what: "link",
            id: id.to_string(),
        }
    }

    /// Worth trying again later (the database or the vendor is unavailable). A panic counts:
    /// it may come from a state that passes (a vendor answer, a race), and retrying is bounded
    /// by the delivery's `max_attempts` like any other transient failure.
    pub fn is_transient(&self) -> bool {
        match self {
            EngineError::Provider(e) => e.is_retryable(),
            EngineError::Store(e) => e.is_unavailable(),
            EngineError::Panicked(_) => true,
            _ => false,
        }
    }
}

impl From<IllegalTransition> for EngineError {
    fn from(err: IllegalTransition) -> Self {
        EngineError::FailedPrecondition(err.to_string())
    }
}

/// Why a webhook delivery was not stored.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// `404`: no such provider route.
    #[error("no webhook route for `{0}`")]
    UnknownProvider(String),
    /// `401`: not genuine; nothing was stored.
    #[error("unauthenticated delivery: {0}")]
    Unauthenticated(WebhookRejection),
    /// `413`: larger than we accept.
    #[error("delivery of {size} bytes is larger than the {limit}-byte limit")]
    TooLarge { size: usize, limit: usize },
    /// `503` with `Retry-After`: too many deliveries already wait to be stored; nothing was
    /// stored, the vendor should retry shortly.
    #[error("{waiting} deliveries already wait to be stored; retry shortly")]
    Busy { waiting: usize },
    /// `503`: the database could not take it; the vendor should retry.
    #[error("delivery could not be stored: {0}")]
    Unavailable(StoreError),
}
