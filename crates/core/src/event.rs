//! Events: normalized, sequenced facts about a link, in one vocabulary for every vendor.
//! The payload decides the kind, so a kind can never travel with the wrong payload.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
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

/// Vendor detail with no common meaning, typed per provider.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "provider", rename_all = "snake_case")]
pub enum ProviderDetail {
    /// The event did not come from a vendor delivery (for example a caller's request).
    #[default]
    None,
    Axle {
        event_id: Option<String>,
        event_type: String,
        /// The object the event refers to (`acc_…` or `pol_…`).
        reference: Option<String>,
        /// Ignition events: the Ignition session's token (`data.token`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ignition_token: Option<String>,
        /// `ignition.completed`: how the session was completed (`link`, `manual`, `proxy`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        result: Option<String>,
    },
    Canopy {
        event_type: String,
        pull_id: Option<String>,
        pull_status: Option<String>,
        monitoring_id: Option<String>,
        sequence: Option<i64>,
    },
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
