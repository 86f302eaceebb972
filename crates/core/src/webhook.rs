//! A raw vendor delivery and what a provider makes of it. Authentication looks only at the raw
//! bytes; parsing comes later, in a worker, after the delivery is safely stored.

use chrono::{DateTime, Utc};
use secrecy::SecretString;

use crate::event::{
    AuthStatus, FailureReason, FieldChange, ProviderDetail, ReconnectReason, VerificationOption,
};
use crate::ids::LinkId;

/// A delivery exactly as it reached the webhook listener.
#[derive(Debug, Clone)]
pub struct InboundWebhook {
    /// The path after `/webhooks/{provider}`, without the leading slash (may be empty).
    pub path: String,
    /// Header names are lowercase.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub received_at: DateTime<Utc>,
}

impl InboundWebhook {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// What authentication concluded about a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticatedWebhook {
    /// The vendor's own event id, when it sends one; otherwise the inbox keys on a body hash.
    pub vendor_event_id: Option<String>,
    /// A per-link secret found in the path; the engine must find the link it belongs to, or
    /// refuse the delivery as unauthenticated.
    pub link_token: Option<String>,
    /// The signature is genuine but its timestamp lies this many seconds outside the tolerance
    /// (a vendor retry that kept its first timestamp, say), and the provider's policy is to take
    /// such a delivery: stored deliveries are deduplicated, so a genuine one replayed late
    /// changes nothing. The engine counts and logs these.
    pub late_by_seconds: Option<i64>,
}

/// Why a delivery was refused before anything was stored. Answered with `401`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookRejection {
    /// Named by the header; a vendor's configured header name is not known at compile time.
    #[error("missing `{0}` header")]
    MissingHeader(std::borrow::Cow<'static, str>),
    #[error("malformed `{header}` header: {reason}")]
    MalformedHeader {
        header: &'static str,
        reason: &'static str,
    },
    #[error("signature does not match")]
    BadSignature,
    #[error(
        "timestamp is {age_seconds} s away from now, outside the {tolerance_seconds} s tolerance"
    )]
    StaleTimestamp {
        age_seconds: i64,
        tolerance_seconds: i64,
    },
    #[error("the shared webhook header does not match")]
    BadSharedSecret,
    #[error("unknown webhook path")]
    UnknownPath,
}

/// The unguessable per-session value the engine hands a vendor with a link session
/// ([`crate::provider::LinkSessionRequest::session_proof`]), as the vendor's own record carries it
/// back. The engine keeps only its hash; it never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionProof(String);

impl SessionProof {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SessionProof {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionProof([redacted])")
    }
}

/// How a parsed delivery names the link it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attribution {
    /// Our link id as the vendor echoes it. Where the end user could have chosen it (a link id
    /// in a URL they open), it proves nothing: on its own it attributes no delivery that did not
    /// arrive on the link's own webhook URL.
    Link(LinkId),
    /// Our link id together with the session proof we gave the vendor for one of that link's
    /// sessions, both read from the vendor's own (signed) record. It attributes the delivery only
    /// when the proof's hash is one the engine stored for that very link.
    Session { link: LinkId, proof: SessionProof },
    /// A vendor id we stored on the link when it was completed (`kind` as in
    /// [`crate::provider::LinkGrant::external_ids`]), after the delivery that completed it was
    /// attributed.
    External { kind: String, value: String },
    /// The delivery names nothing we can match. It is kept and reported, never dropped.
    Unknown,
}

/// A delivery the provider has parsed into normalized happenings.
#[derive(Debug, Clone)]
pub struct ParsedWebhook {
    /// Candidates in order of preference: the first that matches a link wins.
    pub attribution: Vec<Attribution>,
    pub occurred_at: Option<DateTime<Utc>>,
    pub detail: ProviderDetail,
    pub happenings: Vec<Happening>,
}

/// Where fresh data is to be fetched from, as the provider understands it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataRef {
    /// The whole linked account: account and every policy.
    All,
    Account(String),
    Policy(String),
    /// The renewal term of a policy.
    Renewal(String),
    /// A vendor-side version of the whole account (a Canopy pull).
    Version(String),
}

/// A vendor fact, normalized, before the engine turns it into state changes and events.
#[derive(Debug, Clone)]
pub enum Happening {
    /// The user is progressing through sign-in.
    AuthProgress {
        status: AuthStatus,
        login_error_message: Option<String>,
        verification_options: Vec<VerificationOption>,
        /// Vendors that order these send an increasing sequence; older ones are ignored.
        sequence: Option<i64>,
        /// What `sequence` counts within, as the vendor numbers it: empty when it numbers
        /// per link, a vendor session id when each session starts again (Canopy: per pull).
        /// A number is compared only with numbers of the same scope.
        sequence_scope: String,
    },
    /// The user finished; exchange `code`, when there is one, and fetch `data`.
    SessionCompleted {
        code: Option<SecretString>,
        data: DataRef,
    },
    SessionExited {
        step: Option<String>,
    },
    SessionFailed {
        reason: FailureReason,
        message: Option<String>,
    },
    /// The vendor has new data (or says something changed): re-fetch `data` and compare.
    DataChanged {
        data: DataRef,
        /// What the vendor said changed, where it says so; the snapshot comparison is the truth.
        hinted: Vec<FieldChange>,
    },
    /// The vendor still tries to reach the carrier; nothing changes yet.
    Retrying,
    ReconnectRequired {
        reason: ReconnectReason,
        reconnect_url: Option<String>,
        reconnect_token: Option<SecretString>,
    },
    RenewalAvailable {
        policy_ref: String,
    },
    /// A vendor event with no common meaning.
    Vendor {
        vendor_type: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_proof_never_prints() {
        let proof = SessionProof::new("s3cr3t-value");
        let claim = Attribution::Session {
            link: LinkId::new(),
            proof: proof.clone(),
        };
        assert!(!format!("{claim:?}").contains("s3cr3t"));
        assert_eq!(proof.expose(), "s3cr3t-value");
    }
}
