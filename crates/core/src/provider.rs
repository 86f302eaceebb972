//! The `Provider` trait: everything the engine needs from a vendor, and nothing vendor-shaped.
//! A new vendor is a new crate implementing this trait plus one line in the wiring.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::ids::{LinkId, TenantId, UserId};
use crate::policy::{AccountSnapshot, PolicySnapshot};
use crate::requirements::Rule;
use crate::webhook::{
    AuthenticatedWebhook, DataRef, InboundWebhook, ParsedWebhook, WebhookRejection,
};

/// A vendor's name: data, not a closed enum, so that a new vendor is a new crate and nothing
/// here. Each vendor crate declares its own (`coverwatch_axle::PROVIDER`); the stored form is the
/// plain name (`axle`), in the database as in JSON.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ProviderId(Cow<'static, str>);

/// The longest provider name, so that names fit metric labels and log lines as they are.
pub const PROVIDER_ID_MAX_LEN: usize = 32;

impl ProviderId {
    /// A vendor crate's own name. Not checked here (a `const fn` cannot report an error), so the
    /// registry checks every registered name with [`ProviderId::new`]'s rule.
    pub const fn from_static(name: &'static str) -> Self {
        ProviderId(Cow::Borrowed(name))
    }

    /// A name read from outside (a request, a stored row, a configuration key).
    pub fn new(name: impl Into<String>) -> Result<Self, InvalidProviderId> {
        let name = name.into();
        check_name(&name)?;
        Ok(ProviderId(Cow::Owned(name)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this name follows the rule of [`ProviderId::new`] (for names made with
    /// [`ProviderId::from_static`]).
    pub fn validate(&self) -> Result<(), InvalidProviderId> {
        check_name(&self.0)
    }
}

fn check_name(name: &str) -> Result<(), InvalidProviderId> {
    if name.is_empty() {
        return Err(InvalidProviderId::Empty);
    }
    if name.len() > PROVIDER_ID_MAX_LEN {
        return Err(InvalidProviderId::TooLong {
            name: name.to_owned(),
        });
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_'))
    {
        return Err(InvalidProviderId::BadCharacter {
            name: name.to_owned(),
            bad,
        });
    }
    Ok(())
}

/// Why a string is not a provider name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidProviderId {
    #[error("a provider name cannot be empty")]
    Empty,
    #[error("provider name `{name}` is longer than {PROVIDER_ID_MAX_LEN} characters")]
    TooLong { name: String },
    #[error(
        "provider name `{name}` contains {bad:?}: only lowercase ASCII letters, digits and `_` are allowed"
    )]
    BadCharacter { name: String, bad: char },
}

impl TryFrom<String> for ProviderId {
    type Error = InvalidProviderId;

    fn try_from(name: String) -> Result<Self, InvalidProviderId> {
        ProviderId::new(name)
    }
}

impl From<ProviderId> for String {
    fn from(id: ProviderId) -> String {
        id.0.into_owned()
    }
}

impl fmt::Display for ProviderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ProviderId {
    type Err = InvalidProviderId;

    fn from_str(s: &str) -> Result<Self, InvalidProviderId> {
        ProviderId::new(s)
    }
}

impl PartialEq<str> for ProviderId {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for ProviderId {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// What a vendor can do beyond the common ground; the engine asks before it offers a use-case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// The end-user can reconnect inside the caller's own app (credentials, MFA option, code).
    pub in_app_reconnect: bool,
    /// A refresh can be asked for on demand.
    pub on_demand_refresh: bool,
    /// Webhooks go to a per-link URL (so the path carries a per-link secret token); otherwise
    /// they arrive on one shared URL and the delivery itself is signed.
    pub per_link_webhook_url: bool,
    /// How long the vendor may go without fresh data before a link counts as stale.
    pub expected_refresh_interval: std::time::Duration,
    /// Sessions end with a one-time code that the caller may redeem itself (`CompleteLink`)
    /// as well as the engine on the vendor's webhook. Without it a session completes only
    /// through the vendor's own notice.
    pub one_time_completion_code: bool,
    /// Linking an account again resumes the vendor's monitoring of it (Axle hands back the same
    /// access token), so a new session that reaches an account another link already holds is
    /// folded into that link instead of becoming a second one. Without it a new session is
    /// watched on its own (a Canopy pull is monitored only through a monitoring of its own).
    pub relink_resumes_monitoring: bool,
}

/// Everything a vendor needs to open a session the end-user completes.
#[derive(Debug, Clone)]
pub struct LinkSessionRequest {
    pub link_id: LinkId,
    pub tenant_id: TenantId,
    pub user_id: UserId,
    /// The caller's flat metadata; the provider adds our link id to what it sends the vendor.
    pub metadata: BTreeMap<String, String>,
    /// Where the vendor sends the user afterwards, when the caller gave one.
    pub redirect_uri: Option<String>,
    /// Where the vendor should send this link's webhooks, for vendors that take a per-link URL.
    /// It holds the link's webhook secret, so it is a secret too.
    pub webhook_url: SecretString,
    /// An unguessable value, new for every session, for vendors whose deliveries arrive on one
    /// shared URL: the provider has the vendor carry it back with the link id (Canopy: in the
    /// pull's meta data) and reads it into [`crate::webhook::Attribution::Session`]. The engine
    /// keeps only its hash, so a link id an end user edits into a session URL proves nothing.
    pub session_proof: SecretString,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkSession {
    /// The URL the end-user opens.
    pub url: String,
    pub expires_at: Option<DateTime<Utc>>,
}

/// How a session ended well, as a webhook or a caller tells it.
#[derive(Debug, Clone)]
pub struct Completion {
    /// A one-time code to exchange, for vendors that use one.
    pub code: Option<SecretString>,
    /// Where the linked data is to be read.
    pub data: DataRef,
}

/// What completing a link yields: the long-lived access and the vendor ids to remember.
#[derive(Debug, Clone, Default)]
pub struct LinkGrant {
    /// Long-lived credentials (an Axle access token); encrypted at rest, never logged.
    pub secret: Option<SecretString>,
    /// Vendor ids by kind (`account`, `initial_pull`, `monitoring`, …). Later deliveries are
    /// attributed through them, so each (provider, kind, value) belongs to one link at most.
    pub external_ids: BTreeMap<String, String>,
    /// The vendor's identity of the linked account: a relink with the same key is the same
    /// account, a different key is a different account.
    pub account_key: Option<String>,
}

/// A linked account as a provider needs it to call the vendor.
#[derive(Debug, Clone)]
pub struct LinkAccess {
    pub link_id: LinkId,
    /// The long-lived access secret from [`LinkGrant::secret`].
    pub secret: Option<SecretString>,
    /// Other named secrets kept for the link: `reconnect` (the latest reconnect token from a
    /// reconnect-required delivery) and whatever [`ReconnectOutcome::secrets`] asked to keep.
    pub secrets: BTreeMap<String, SecretString>,
    pub external_ids: BTreeMap<String, String>,
}

/// The name under which the engine keeps the latest reconnect token of a link.
pub const RECONNECT_SECRET: &str = "reconnect";

/// What an in-app reconnect step wants kept for the next step.
#[derive(Debug, Clone, Default)]
pub struct ReconnectOutcome {
    /// Named secrets to store (`Some`) or forget (`None`), for example a session token that
    /// authorizes the following steps. They serve one reconnect only: once the link is
    /// reconnected the engine forgets every named secret but the long-lived access secret.
    pub secrets: Vec<(String, Option<SecretString>)>,
}

/// Data read from the vendor for one link.
#[derive(Debug, Clone, Default)]
pub struct FetchedData {
    pub account: Option<AccountSnapshot>,
    pub policies: Vec<PolicySnapshot>,
    /// Vendor ids learned while fetching (for example the latest pull), merged into the link's.
    pub external_ids: BTreeMap<String, String>,
    /// What the vendor itself says changed, per policy (external id), in its own words (Canopy's
    /// monitoring event types). Reported as the `policy.updated` reasons and checked against the
    /// computed changes.
    pub vendor_reasons: BTreeMap<String, Vec<String>>,
}

/// The vendor JSON coverwatch keeps for a link, for vendor checks that read it instead of
/// calling the vendor again.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoredVendorData {
    /// The latest stored vendor JSON of each current-term policy, by policy external id.
    pub policies: Vec<(String, serde_json::Value)>,
    /// The latest stored vendor JSON of the account (Canopy: the pull without its policies).
    pub account: Option<serde_json::Value>,
}

/// A vendor's own verdict on a link's policies, shown next to coverwatch's requirement
/// evaluation so that a caller can compare the two. Core carries it untyped, like
/// [`crate::event::VendorDetail`]: the vendor crate that makes one knows its typed form
/// (`coverwatch_axle::AxleValidation`, ...) and its arm of the gRPC `VendorCheck.verdict`, so
/// that a new vendor adds its verdict without an edit here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VendorVerdict {
    provider: ProviderId,
    fields: serde_json::Map<String, serde_json::Value>,
}

/// Why a vendor's typed verdict does not turn into a [`VendorVerdict`] or back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerdictError {
    #[error("the verdict is `{found}`'s, not `{expected}`'s")]
    OtherProvider {
        expected: ProviderId,
        found: ProviderId,
    },
    #[error("a vendor verdict must be a JSON object")]
    NotAnObject,
    #[error("the vendor verdict does not read: {0}")]
    Decode(String),
}

impl VendorVerdict {
    pub fn new(provider: ProviderId, fields: serde_json::Map<String, serde_json::Value>) -> Self {
        Self { provider, fields }
    }

    /// A vendor's typed verdict, which must serialize to a JSON object.
    pub fn from_typed<T: Serialize>(
        provider: ProviderId,
        verdict: &T,
    ) -> Result<Self, VerdictError> {
        match serde_json::to_value(verdict).map_err(|e| VerdictError::Decode(e.to_string()))? {
            serde_json::Value::Object(fields) => Ok(Self::new(provider, fields)),
            _ => Err(VerdictError::NotAnObject),
        }
    }

    /// The typed verdict back, for the vendor that made it; another vendor's is an error.
    pub fn to_typed<T: serde::de::DeserializeOwned>(
        &self,
        provider: &ProviderId,
    ) -> Result<T, VerdictError> {
        if &self.provider != provider {
            return Err(VerdictError::OtherProvider {
                expected: provider.clone(),
                found: self.provider.clone(),
            });
        }
        serde_json::from_value(serde_json::Value::Object(self.fields.clone()))
            .map_err(|e| VerdictError::Decode(e.to_string()))
    }

    pub fn provider(&self) -> &ProviderId {
        &self.provider
    }

    pub fn fields(&self) -> &serde_json::Map<String, serde_json::Value> {
        &self.fields
    }
}

/// One step of an in-app reconnect.
#[derive(Debug, Clone)]
pub enum ReconnectStep {
    /// Carrier credentials (vendor-tokenized where the vendor tokenizes them).
    Credentials {
        carrier: Option<String>,
        username: SecretString,
        password: Option<SecretString>,
        third_field: Option<SecretString>,
    },
    /// Where the verification code should go, by option key.
    VerificationOption {
        key: String,
    },
    VerificationCode {
        code: SecretString,
    },
}

/// How a provider call can fail. The engine maps these to gRPC codes at the edge and keeps the
/// vendor's code in the status details.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// The vendor could not be reached or answered 5xx/429; worth trying again later.
    #[error("{provider} is unavailable: {message}")]
    Unavailable {
        provider: ProviderId,
        message: String,
        vendor: VendorErrorInfo,
    },
    /// The vendor refused the request for a reason trying again will not change.
    #[error("{provider} refused the request: {message}")]
    Rejected {
        provider: ProviderId,
        kind: RejectionKind,
        message: String,
        vendor: VendorErrorInfo,
    },
    /// This vendor has no such capability.
    #[error("{provider} does not support {capability}")]
    Unsupported {
        provider: ProviderId,
        capability: &'static str,
    },
    /// The vendor sent something we cannot read.
    #[error("{provider} sent an unreadable response: {message}")]
    Malformed {
        provider: ProviderId,
        message: String,
    },
}

impl ProviderError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, ProviderError::Unavailable { .. })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectionKind {
    InvalidArgument,
    FailedPrecondition,
    NotFound,
    Unauthenticated,
    PermissionDenied,
}

/// What the vendor said about an error, kept for the caller and for support tickets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VendorErrorInfo {
    pub http_status: Option<u16>,
    /// The vendor's own error code (`NOT_FOUND`, `MONITORING_INACTIVE`, …).
    pub code: Option<String>,
    /// The vendor's request id (`x-axle-request-id`), for support.
    pub request_id: Option<String>,
}

/// One vendor, behind the common model.
#[async_trait]
pub trait Provider: Send + Sync + 'static {
    fn kind(&self) -> ProviderId;

    fn capabilities(&self) -> Capabilities;

    /// Open a session the end-user completes to link an account.
    async fn start_link_session(
        &self,
        request: &LinkSessionRequest,
    ) -> Result<LinkSession, ProviderError>;

    /// Turn a completed session into long-lived access (exchanging its code where there is one).
    async fn complete_link(&self, completion: &Completion) -> Result<LinkGrant, ProviderError>;

    /// Check that a delivery is genuine, looking only at the raw bytes and headers.
    fn authenticate_webhook(
        &self,
        webhook: &InboundWebhook,
    ) -> Result<AuthenticatedWebhook, WebhookRejection>;

    /// Normalize an authenticated delivery. Unknown event types become
    /// [`crate::webhook::Happening::Vendor`], never an error.
    fn parse_webhook(&self, webhook: &InboundWebhook) -> Result<ParsedWebhook, ProviderError>;

    /// Read fresh account and policy data for a linked account.
    async fn fetch(
        &self,
        access: &LinkAccess,
        data: &DataRef,
    ) -> Result<FetchedData, ProviderError>;

    /// Make sure the vendor keeps watching a newly completed link; returns vendor ids to keep
    /// (for example a monitoring id). Must be safe to call again after a failure.
    async fn ensure_monitoring(
        &self,
        access: &LinkAccess,
    ) -> Result<BTreeMap<String, String>, ProviderError>;

    /// Open a session in which the end-user reconnects this link's account.
    async fn start_reconnect(
        &self,
        access: &LinkAccess,
        request: &LinkSessionRequest,
    ) -> Result<LinkSession, ProviderError>;

    /// One step of an in-app reconnect (see [`Capabilities::in_app_reconnect`]).
    async fn reconnect_step(
        &self,
        _access: &LinkAccess,
        _step: &ReconnectStep,
    ) -> Result<ReconnectOutcome, ProviderError> {
        Err(ProviderError::Unsupported {
            provider: self.kind(),
            capability: "in-app reconnect",
        })
    }

    /// Stop the vendor monitoring this link. Stopping what is already stopped is not an error.
    async fn descope(&self, access: &LinkAccess) -> Result<(), ProviderError>;

    /// Ask the vendor for fresh data now (see [`Capabilities::on_demand_refresh`]).
    async fn refresh(&self, _access: &LinkAccess) -> Result<(), ProviderError> {
        Err(ProviderError::Unsupported {
            provider: self.kind(),
            capability: "on-demand refresh",
        })
    }

    /// The vendor's own verdict on the link's policies, for the caller to compare with the
    /// evaluation of `rules`: read from the stored vendor data, or asked of the vendor where it
    /// answers on demand. Vendors without such a check answer `Unsupported`.
    async fn vendor_check(
        &self,
        _access: &LinkAccess,
        _rules: &[Rule],
        _stored: &StoredVendorData,
    ) -> Result<VendorVerdict, ProviderError> {
        Err(ProviderError::Unsupported {
            provider: self.kind(),
            capability: "vendor-side policy checks",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Typed {
        overall: String,
        rules: Vec<(String, Option<String>)>,
    }

    #[test]
    fn a_verdict_reads_back_only_as_its_own_vendors() {
        let typed = Typed {
            overall: "pass".into(),
            rules: vec![("policy-active".into(), None)],
        };
        let third = ProviderId::from_static("third");
        let verdict = VendorVerdict::from_typed(third.clone(), &typed).unwrap();
        assert_eq!(verdict.provider(), &third);
        assert_eq!(verdict.fields()["overall"], "pass");
        assert_eq!(verdict.to_typed::<Typed>(&third), Ok(typed));
        assert_eq!(
            verdict
                .to_typed::<Typed>(&ProviderId::from_static("other"))
                .unwrap_err()
                .to_string(),
            "the verdict is `third`'s, not `other`'s"
        );
        assert!(matches!(
            VendorVerdict::new(third.clone(), Default::default()).to_typed::<Typed>(&third),
            Err(VerdictError::Decode(_))
        ));
        assert_eq!(
            VendorVerdict::from_typed(third, &"pass"),
            Err(VerdictError::NotAnObject)
        );
    }

    #[test]
    fn provider_names_are_short_lowercase_words() {
        assert_eq!(ProviderId::new("acme_2").unwrap().as_str(), "acme_2");
        assert_eq!(ProviderId::new(""), Err(InvalidProviderId::Empty));
        let long = "a".repeat(PROVIDER_ID_MAX_LEN + 1);
        assert_eq!(
            ProviderId::new(long.clone()).unwrap_err().to_string(),
            format!("provider name `{long}` is longer than 32 characters")
        );
        assert!(ProviderId::new("a".repeat(PROVIDER_ID_MAX_LEN)).is_ok());
        assert_eq!(
            "Axle".parse::<ProviderId>().unwrap_err().to_string(),
            "provider name `Axle` contains 'A': only lowercase ASCII letters, digits and `_` are allowed"
        );
        assert!("ax-le".parse::<ProviderId>().is_err());
        assert!(ProviderId::from_static("Bad Name").validate().is_err());
    }

    #[test]
    fn a_static_name_equals_the_same_name_read_at_run_time() {
        // Registry keys are static names, lookups come from requests and rows: both must meet.
        let read = ProviderId::new("axle".to_owned()).unwrap();
        assert_eq!(read, ProviderId::from_static("axle"));
        let mut set = std::collections::HashSet::new();
        set.insert(ProviderId::from_static("axle"));
        assert!(set.contains(&read));
    }

    #[test]
    fn provider_names_are_stored_as_plain_strings() {
        // The stored event JSON and the database hold `"axle"`, as the old enum wrote it.
        let id = ProviderId::from_static("canopy");
        assert_eq!(serde_json::to_string(&id).unwrap(), r#""canopy""#);
        assert_eq!(
            serde_json::from_str::<ProviderId>(r#""canopy""#).unwrap(),
            id
        );
        assert!(serde_json::from_str::<ProviderId>(r#""Canopy!""#).is_err());
    }
}
