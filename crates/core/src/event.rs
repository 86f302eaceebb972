//! Events: normalized, sequenced facts about a link, in one vocabulary for every vendor.
//! The payload decides the kind, so a kind can never travel with the wrong payload.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::ids::{EventId, LinkId, TenantId, UserId};
use crate::policy::PolicyStatus;
use crate::provider::ProviderId;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum EventKind {
    #[serde(rename = "link.session_opened")]
    SessionOpened,
    #[serde(rename = "link.completed")]
    Completed,
    #[serde(rename = "link.exited")]
    Exited,
    #[serde(rename = "link.failed")]
    Failed,
    #[serde(rename = "link.auth_status")]
    AuthStatus,
    #[serde(rename = "link.reconnect_required")]
    ReconnectRequired,
    #[serde(rename = "link.reconnected")]
    Reconnected,
    #[serde(rename = "link.descoped")]
    Descoped,
    #[serde(rename = "account.updated")]
    AccountUpdated,
    #[serde(rename = "policy.updated")]
    PolicyUpdated,
    #[serde(rename = "policy.renewal_available")]
    RenewalAvailable,
    #[serde(rename = "policy.requirements_unmet")]
    RequirementsUnmet,
    #[serde(rename = "policy.requirements_met")]
    RequirementsMet,
    #[serde(rename = "data.refreshed")]
    DataRefreshed,
    #[serde(rename = "link.stale")]
    Stale,
    /// A vendor event with no common meaning (for example a type we do not know yet), kept
    /// rather than dropped.
    #[serde(rename = "vendor.event")]
    Vendor,
}

impl EventKind {
    pub const ALL: [EventKind; 16] = [
        EventKind::SessionOpened,
        EventKind::Completed,
        EventKind::Exited,
        EventKind::Failed,
        EventKind::AuthStatus,
        EventKind::ReconnectRequired,
        EventKind::Reconnected,
        EventKind::Descoped,
        EventKind::AccountUpdated,
        EventKind::PolicyUpdated,
        EventKind::RenewalAvailable,
        EventKind::RequirementsUnmet,
        EventKind::RequirementsMet,
        EventKind::DataRefreshed,
        EventKind::Stale,
        EventKind::Vendor,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::SessionOpened => "link.session_opened",
            EventKind::Completed => "link.completed",
            EventKind::Exited => "link.exited",
            EventKind::Failed => "link.failed",
            EventKind::AuthStatus => "link.auth_status",
            EventKind::ReconnectRequired => "link.reconnect_required",
            EventKind::Reconnected => "link.reconnected",
            EventKind::Descoped => "link.descoped",
            EventKind::AccountUpdated => "account.updated",
            EventKind::PolicyUpdated => "policy.updated",
            EventKind::RenewalAvailable => "policy.renewal_available",
            EventKind::RequirementsUnmet => "policy.requirements_unmet",
            EventKind::RequirementsMet => "policy.requirements_met",
            EventKind::DataRefreshed => "data.refreshed",
            EventKind::Stale => "link.stale",
            EventKind::Vendor => "vendor.event",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        EventKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == s)
            .ok_or_else(|| format!("unknown event kind `{s}`"))
    }
}

/// Why a session ended without a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureReason {
    /// The carrier had a problem; the user may try again later.
    ProviderError,
    /// The vendor had a problem.
    VendorError,
    /// The sign-in itself failed (for example a locked carrier account).
    AuthenticationFailed,
    Other,
}

/// Why the end-user has to act again to keep monitoring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReconnectReason {
    CredentialsExpired,
    MfaExpired,
    AccountDisabled,
    AccountInaccessible,
    Other,
}

/// Where a user stands in signing in to the carrier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AuthStatus {
    /// The user opened the consent page.
    Opened,
    /// Sign-in failed; ask for the login again (a message may say why).
    NotAuthenticated,
    /// Pick where a verification code should be sent.
    IdentityVerificationOptions,
    /// Enter the verification code.
    IdentityVerification,
    Success,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerificationOption {
    pub key: String,
    pub label: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DescopeReason {
    /// The caller asked for it.
    Requested,
    /// The user linked a different account on a link that replaces this one.
    Replaced,
}

/// What kind of difference a policy change is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    PolicyAdded,
    PolicyRemoved,
    StatusChanged,
    DatesChanged,
    PremiumChanged,
    CoverageAdded,
    CoverageRemoved,
    CoverageLimitChanged,
    CoverageDeductibleChanged,
    VehicleAdded,
    VehicleRemoved,
    DwellingAdded,
    DwellingRemoved,
    InterestedPartyAdded,
    InterestedPartyRemoved,
    InterestedPartyChanged,
    InsuredAdded,
    InsuredRemoved,
}

/// One normalized difference between two versions of a policy. Values are rendered as text
/// (cents as integers, dates as RFC 3339, statuses as their snake_case names) so that one shape
/// carries every kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyChange {
    pub kind: ChangeKind,
    /// What changed: a coverage code (with its property), a vehicle VIN or id, a party name.
    pub subject: Option<String>,
    /// Which field of the subject, for a change of value.
    pub field: Option<String>,
    pub before: Option<String>,
    pub after: Option<String>,
}

/// One changed field of an account, as `before` → `after` text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldChange {
    pub field: String,
    pub before: Option<String>,
    pub after: Option<String>,
}

/// One rule's outcome in a requirement evaluation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleOutcome {
    pub rule: String,
    pub result: RuleResult,
    /// What was seen, for the caller to show or log.
    pub observed: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleResult {
    Pass,
    Fail,
    /// The data needed to decide is missing; never read as a pass.
    Unknown,
}

/// The typed payload of each event kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind")]
pub enum EventPayload {
    #[serde(rename = "link.session_opened")]
    SessionOpened {
        url: String,
        /// True when the session reconnects an existing link.
        reconnect: bool,
    },
    #[serde(rename = "link.completed")]
    Completed {
        account_external_id: Option<String>,
        policy_external_ids: Vec<String>,
    },
    #[serde(rename = "link.exited")]
    Exited { step: Option<String> },
    #[serde(rename = "link.failed")]
    Failed {
        reason: FailureReason,
        message: Option<String>,
    },
    #[serde(rename = "link.auth_status")]
    AuthStatus {
        status: AuthStatus,
        login_error_message: Option<String>,
        verification_options: Vec<VerificationOption>,
    },
    #[serde(rename = "link.reconnect_required")]
    ReconnectRequired {
        reason: ReconnectReason,
        reconnect_url: Option<String>,
    },
    #[serde(rename = "link.reconnected")]
    Reconnected {
        account_external_id: Option<String>,
        /// Set when the end-user signed in to a different account than the one the link held:
        /// that account's monitoring was stopped at the vendor and the link follows the new one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        previous_account_external_id: Option<String>,
    },
    #[serde(rename = "link.descoped")]
    Descoped {
        reason: DescopeReason,
        /// For a replacement, the link that replaced this one.
        replaced_by: Option<LinkId>,
    },
    #[serde(rename = "account.updated")]
    AccountUpdated {
        account_external_id: String,
        changes: Vec<FieldChange>,
    },
    #[serde(rename = "policy.updated")]
    PolicyUpdated {
        policy_external_id: String,
        status: PolicyStatus,
        changes: Vec<PolicyChange>,
        /// What the vendor itself said changed, in its own words (Canopy's monitoring event
        /// types: `CANCELED`, `RENEWAL`, ...), where it says so.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        vendor_reasons: Vec<String>,
        /// The vendor's reasons and the computed `changes` do not agree (for example `CANCELED`
        /// with no status change seen): worth a look before acting on either.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        vendor_disagrees: bool,
    },
    #[serde(rename = "policy.renewal_available")]
    RenewalAvailable { policy_external_id: String },
    #[serde(rename = "policy.requirements_unmet")]
    RequirementsUnmet {
        requirement_set: String,
        outcomes: Vec<RuleOutcome>,
    },
    #[serde(rename = "policy.requirements_met")]
    RequirementsMet {
        requirement_set: String,
        outcomes: Vec<RuleOutcome>,
    },
    #[serde(rename = "data.refreshed")]
    DataRefreshed { policies: u32 },
    #[serde(rename = "link.stale")]
    Stale {
        last_refreshed_at: Option<DateTime<Utc>>,
    },
    #[serde(rename = "vendor.event")]
    Vendor { vendor_type: String },
}

impl EventPayload {
    pub fn kind(&self) -> EventKind {
        match self {
            EventPayload::SessionOpened { .. } => EventKind::SessionOpened,
            EventPayload::Completed { .. } => EventKind::Completed,
            EventPayload::Exited { .. } => EventKind::Exited,
            EventPayload::Failed { .. } => EventKind::Failed,
            EventPayload::AuthStatus { .. } => EventKind::AuthStatus,
            EventPayload::ReconnectRequired { .. } => EventKind::ReconnectRequired,
            EventPayload::Reconnected { .. } => EventKind::Reconnected,
            EventPayload::Descoped { .. } => EventKind::Descoped,
            EventPayload::AccountUpdated { .. } => EventKind::AccountUpdated,
            EventPayload::PolicyUpdated { .. } => EventKind::PolicyUpdated,
            EventPayload::RenewalAvailable { .. } => EventKind::RenewalAvailable,
            EventPayload::RequirementsUnmet { .. } => EventKind::RequirementsUnmet,
            EventPayload::RequirementsMet { .. } => EventKind::RequirementsMet,
            EventPayload::DataRefreshed { .. } => EventKind::DataRefreshed,
            EventPayload::Stale { .. } => EventKind::Stale,
            EventPayload::Vendor { .. } => EventKind::Vendor,
        }
    }
}

/// Vendor detail with no common meaning. Core names no vendor: a vendor crate keeps its own
/// typed detail (`coverwatch_axle::detail::AxleEventDetail`) and converts it to and from
/// [`VendorDetail`], so that adding a vendor touches nothing here.
///
/// Stored form (the `detail` column), unchanged from when core had one variant per vendor:
/// `{"provider": "none"}`, or `{"provider": "<vendor>", "event_type": "...", <the vendor's
/// own fields>}`.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum ProviderDetail {
    /// The event did not come from a vendor delivery (for example a caller's request).
    #[default]
    None,
    Vendor(VendorDetail),
}

impl ProviderDetail {
    pub fn vendor(&self) -> Option<&VendorDetail> {
        match self {
            ProviderDetail::None => None,
            ProviderDetail::Vendor(vendor) => Some(vendor),
        }
    }
}

/// The stored tag of [`ProviderDetail::None`].
const NO_PROVIDER: &str = "none";
/// The keys the stored form gives to the vendor and the event type; a vendor's own fields
/// cannot use them.
const PROVIDER_KEY: &str = "provider";
const EVENT_TYPE_KEY: &str = "event_type";

/// One vendor's detail of one event: which vendor, its event type, and the vendor's other
/// fields as a JSON object, to be read by the vendor crate's typed detail.
#[derive(Debug, Clone, PartialEq)]
pub struct VendorDetail {
    provider: ProviderId,
    event_type: String,
    fields: serde_json::Map<String, serde_json::Value>,
}

impl VendorDetail {
    /// Refuses fields named like the keys the stored form keeps for the vendor and the event
    /// type, which would otherwise be lost or overwritten on the way to the database.
    pub fn new(
        provider: ProviderId,
        event_type: impl Into<String>,
        fields: serde_json::Map<String, serde_json::Value>,
    ) -> Result<Self, DetailError> {
        for reserved in [PROVIDER_KEY, EVENT_TYPE_KEY] {
            if fields.contains_key(reserved) {
                return Err(DetailError::ReservedField(reserved));
            }
        }
        Ok(Self {
            provider,
            event_type: event_type.into(),
            fields,
        })
    }

    /// A vendor's typed detail, which must serialize to a JSON object with a string
    /// `event_type` field and no `provider` field.
    pub fn from_typed<T: Serialize>(provider: ProviderId, detail: &T) -> Result<Self, DetailError> {
        let serde_json::Value::Object(mut fields) =
            serde_json::to_value(detail).map_err(|e| DetailError::Decode(e.to_string()))?
        else {
            return Err(DetailError::NotAnObject);
        };
        let event_type = match fields.remove(EVENT_TYPE_KEY) {
            Some(serde_json::Value::String(event_type)) => event_type,
            _ => return Err(DetailError::NoEventType),
        };
        Self::new(provider, event_type, fields)
    }

    /// The vendor's typed detail back, when this detail is `provider`'s and reads as `T`.
    pub fn to_typed<T: DeserializeOwned>(&self, provider: &ProviderId) -> Result<T, DetailError> {
        if &self.provider != provider {
            return Err(DetailError::OtherProvider {
                expected: provider.clone(),
                found: self.provider.clone(),
            });
        }
        let mut fields = self.fields.clone();
        fields.insert(
            EVENT_TYPE_KEY.to_owned(),
            serde_json::Value::String(self.event_type.clone()),
        );
        serde_json::from_value(serde_json::Value::Object(fields))
            .map_err(|e| DetailError::Decode(e.to_string()))
    }

    pub fn provider(&self) -> &ProviderId {
        &self.provider
    }

    /// The vendor's own event type, for example `policy.modified` or `MONITORING_RECONNECT`.
    pub fn event_type(&self) -> &str {
        &self.event_type
    }

    pub fn fields(&self) -> &serde_json::Map<String, serde_json::Value> {
        &self.fields
    }
}

/// Why a detail does not convert.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DetailError {
    #[error("the event has no vendor detail")]
    NoDetail,
    #[error("the detail is `{found}`'s, not `{expected}`'s")]
    OtherProvider {
        expected: ProviderId,
        found: ProviderId,
    },
    #[error("a vendor detail must be a JSON object")]
    NotAnObject,
    #[error("a vendor detail needs a string `event_type`")]
    NoEventType,
    #[error("`{0}` is reserved in a vendor detail")]
    ReservedField(&'static str),
    #[error("the vendor detail does not read: {0}")]
    Decode(String),
}

impl Serialize for ProviderDetail {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serde_json::Map::new();
        match self {
            ProviderDetail::None => {
                map.insert(PROVIDER_KEY.to_owned(), NO_PROVIDER.into());
            }
            ProviderDetail::Vendor(vendor) => {
                map.insert(PROVIDER_KEY.to_owned(), vendor.provider.as_str().into());
                map.insert(EVENT_TYPE_KEY.to_owned(), vendor.event_type.clone().into());
                map.extend(vendor.fields.clone());
            }
        }
        map.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for ProviderDetail {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;

        let mut fields = serde_json::Map::<String, serde_json::Value>::deserialize(deserializer)?;
        let provider = match fields.remove(PROVIDER_KEY) {
            Some(serde_json::Value::String(provider)) => provider,
            _ => {
                return Err(D::Error::custom(
                    "a provider detail needs a string `provider`",
                ));
            }
        };
        let event_type = fields.remove(EVENT_TYPE_KEY);
        // `none` with no event type is the detail-less form; a vendor registered as `none`
        // would still have its events' type, so the two cannot be confused.
        if provider == NO_PROVIDER && event_type.is_none() {
            return Ok(ProviderDetail::None);
        }
        let provider = ProviderId::new(provider).map_err(D::Error::custom)?;
        let Some(serde_json::Value::String(event_type)) = event_type else {
            return Err(D::Error::custom(format!(
                "the `{provider}` detail needs a string `event_type`"
            )));
        };
        Ok(ProviderDetail::Vendor(VendorDetail {
            provider,
            event_type,
            fields,
        }))
    }
}

/// A stored event, as callers receive it.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Position in the tenant's stream; resume after it.
    pub cursor: i64,
    pub id: EventId,
    pub tenant_id: TenantId,
    pub link_id: LinkId,
    pub user_id: UserId,
    pub provider: ProviderId,
    /// When the fact happened, as the vendor says where it says so.
    pub occurred_at: DateTime<Utc>,
    /// When coverwatch recorded it.
    pub recorded_at: DateTime<Utc>,
    pub payload: EventPayload,
    pub detail: ProviderDetail,
}

impl Event {
    pub fn kind(&self) -> EventKind {
        self.payload.kind()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Events stored before vendor detail left core were written by a derived, provider-tagged
    /// enum with one variant per vendor. Those rows must read unchanged, and be written back
    /// the same way.
    #[test]
    fn details_stored_by_earlier_builds_read_and_write_back_the_same() {
        let none: ProviderDetail = serde_json::from_str(r#"{"provider":"none"}"#).unwrap();
        assert_eq!(none, ProviderDetail::None);
        assert_eq!(
            serde_json::to_string(&none).unwrap(),
            r#"{"provider":"none"}"#
        );

        for stored in [
            r#"{"provider":"axle","event_id":"evt-1","event_type":"policy.modified","reference":"pol_1"}"#,
            r#"{"provider":"axle","event_id":null,"event_type":"ignition.completed","reference":"ign_1","ignition_token":"ign_1","result":"manual"}"#,
            r#"{"provider":"canopy","event_type":"MONITORING_RECONNECT","pull_id":"6f1c","pull_status":"NOT_AUTHENTICATED","monitoring_id":null,"sequence":4}"#,
        ] {
            let detail: ProviderDetail = serde_json::from_str(stored).unwrap();
            let vendor = detail.vendor().expect("a vendor detail");
            let original: serde_json::Value = serde_json::from_str(stored).unwrap();
            assert_eq!(vendor.provider().as_str(), original["provider"]);
            assert_eq!(vendor.event_type(), original["event_type"]);
            assert_eq!(serde_json::to_value(&detail).unwrap(), original);
        }
        let canopy: ProviderDetail = serde_json::from_str(
            r#"{"provider":"canopy","event_type":"COMPLETE","pull_id":null,"pull_status":null,"monitoring_id":null,"sequence":7}"#,
        )
        .unwrap();
        assert_eq!(canopy.vendor().unwrap().fields()["sequence"], 7);
    }

    #[test]
    fn malformed_details_are_refused() {
        for bad in [
            r#"{}"#,
            r#"{"provider":7}"#,
            r#"{"provider":"axle"}"#,
            r#"{"provider":"axle","event_type":3}"#,
            r#"{"provider":"Not A Name","event_type":"x"}"#,
            r#"[]"#,
        ] {
            assert!(
                serde_json::from_str::<ProviderDetail>(bad).is_err(),
                "{bad} is refused"
            );
        }
        // A vendor called `none` keeps its events' type, so it is not read as no detail.
        let odd: ProviderDetail =
            serde_json::from_str(r#"{"provider":"none","event_type":"x"}"#).unwrap();
        assert_eq!(odd.vendor().unwrap().provider().as_str(), "none");
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Typed {
        event_type: String,
        count: Option<i64>,
    }

    #[test]
    fn typed_details_convert_both_ways_and_only_for_their_vendor() {
        let acme = ProviderId::from_static("acme");
        let typed = Typed {
            event_type: "thing.happened".into(),
            count: Some(2),
        };
        let vendor = VendorDetail::from_typed(acme.clone(), &typed).unwrap();
        assert_eq!(vendor.event_type(), "thing.happened");
        assert!(!vendor.fields().contains_key("event_type"));
        assert_eq!(vendor.to_typed::<Typed>(&acme), Ok(typed));
        assert!(matches!(
            vendor.to_typed::<Typed>(&ProviderId::from_static("axle")),
            Err(DetailError::OtherProvider { .. })
        ));

        #[derive(Serialize)]
        struct NoType {
            count: i64,
        }
        assert_eq!(
            VendorDetail::from_typed(acme.clone(), &NoType { count: 1 }),
            Err(DetailError::NoEventType)
        );
        assert_eq!(
            VendorDetail::from_typed(acme.clone(), &"text"),
            Err(DetailError::NotAnObject)
        );
        let mut fields = serde_json::Map::new();
        fields.insert("provider".into(), "axle".into());
        assert_eq!(
            VendorDetail::new(acme, "x", fields),
            Err(DetailError::ReservedField("provider"))
        );
    }

    #[test]
    fn kinds_round_trip_and_match_their_payload_tags() {
        for kind in EventKind::ALL {
            assert_eq!(kind.as_str().parse::<EventKind>(), Ok(kind));
            assert_eq!(
                serde_json::to_value(kind).unwrap(),
                serde_json::json!(kind.as_str())
            );
        }
        let payload = EventPayload::Exited {
            step: Some("carrier".into()),
        };
        let json = serde_json::to_value(&payload).unwrap();
        assert_eq!(json["kind"], "link.exited");
        assert_eq!(
            serde_json::from_value::<EventPayload>(json).unwrap(),
            payload
        );
        assert!("link.nope".parse::<EventKind>().is_err());
    }
}
