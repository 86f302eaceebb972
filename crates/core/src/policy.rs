//! The normalized Policy and Account: one vocabulary for every vendor, so that one caller rule
//! reads the same whichever vendor holds the policy. Money is in integer cents. `None` means the
//! vendor did not tell us (unknown); a rule must never read `None` as a pass.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Which line of insurance a policy is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyType {
    Auto,
    Motorcycle,
    Homeowners,
    Condo,
    Renters,
    Landlord,
    Flood,
    Umbrella,
    /// Any other line; carries the vendor's own name for it.
    Other(String),
}

/// Where a policy stands, merged from every vendor's vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyStatus {
    Active,
    /// Not active, and the vendor does not say whether it was cancelled or expired (Axle).
    Inactive,
    Cancelled,
    Expired,
    PendingActivation,
    PendingCancellation,
    Rescinded,
    Unverified,
    Quote,
    /// The vendor stopped reporting the policy's status: it may have left the account.
    Removed,
    Unknown,
}

impl PolicyStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyStatus::Active => "active",
            PolicyStatus::Inactive => "inactive",
            PolicyStatus::Cancelled => "cancelled",
            PolicyStatus::Expired => "expired",
            PolicyStatus::PendingActivation => "pending_activation",
            PolicyStatus::PendingCancellation => "pending_cancellation",
            PolicyStatus::Rescinded => "rescinded",
            PolicyStatus::Unverified => "unverified",
            PolicyStatus::Quote => "quote",
            PolicyStatus::Removed => "removed",
            PolicyStatus::Unknown => "unknown",
        }
    }

    /// In force today. A pending cancellation is still in force until it takes effect.
    pub fn is_in_force(self) -> Option<bool> {
        match self {
            PolicyStatus::Active | PolicyStatus::PendingCancellation => Some(true),
            PolicyStatus::Unknown | PolicyStatus::Unverified => None,
            _ => Some(false),
        }
    }
}

impl fmt::Display for PolicyStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Coverage codes shared by every vendor (Axle `BI`, Canopy `BODILY_INJURY_LIABILITY`, … → one).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CoverageCode {
    BodilyInjury,
    PropertyDamage,
    /// One limit for bodily injury and property damage together.
    CombinedSingleLimit,
    UninsuredMotoristBodilyInjury,
    UninsuredMotoristPropertyDamage,
    UnderinsuredMotoristBodilyInjury,
    UnderinsuredMotoristPropertyDamage,
    Comprehensive,
    Collision,
    MedicalPayments,
    PersonalInjuryProtection,
    RentalReimbursement,
    Roadside,
    Dwelling,
    OtherStructures,
    PersonalProperty,
    LossOfUse,
    PersonalLiability,
    MedicalPaymentsToOthers,
    /// A coverage with no common meaning; carries the vendor's own code.
    Other(String),
}

/// What a coverage, party or insured is bound to: one property of the policy, or all of them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "scope", content = "property_id")]
pub enum AppliesTo {
    AllProperties,
    /// The vendor id of one vehicle or dwelling of this policy.
    Property(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Coverage {
    pub code: CoverageCode,
    /// The vendor's own code and label, kept for display; rules key on `code`.
    pub vendor_code: String,
    pub label: Option<String>,
    pub limit_per_person_cents: Option<i64>,
    pub limit_per_accident_cents: Option<i64>,
    pub deductible_cents: Option<i64>,
    pub premium_cents: Option<i64>,
    pub applies_to: AppliesTo,
    /// Declined by the insured: listed by the carrier, but not in force.
    pub declined: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Address {
    pub line1: Option<String>,
    pub line2: Option<String>,
    pub city: Option<String>,
    pub state: Option<String>,
    pub postal_code: Option<String>,
    pub country: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vehicle {
    /// A stable id for this vehicle within the policy: Axle's property id (`prp_…`), or the
    /// VIN for Canopy, whose ids change with every pull.
    pub id: String,
    pub vin: Option<String>,
    pub year: Option<i32>,
    pub make: Option<String>,
    pub model: Option<String>,
    pub body_style: Option<String>,
    pub garaging_address: Option<Address>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dwelling {
    /// A stable id for the dwelling within the policy (for Canopy, its address).
    pub id: String,
    pub address: Option<Address>,
    pub replacement_cost_cents: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InsuredRole {
    Primary,
    Secondary,
    NamedInsured,
    Driver,
    ExcludedDriver,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Insured {
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    /// As the vendor wrote it when it does not split names.
    pub full_name: Option<String>,
    pub role: InsuredRole,
    /// Masked by the vendor (for example `•••••1234`); never the full number.
    pub license_masked: Option<String>,
    pub license_state: Option<String>,
    pub applies_to: AppliesTo,
}

/// Lienholders, lessors, mortgagees and other parties with an interest in the insured property.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PartyKind {
    Lienholder,
    Lessor,
    Mortgagee,
    AdditionalInterest,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterestedParty {
    pub kind: PartyKind,
    pub name: Option<String>,
    pub address: Option<Address>,
    pub loan_number: Option<String>,
    pub applies_to: AppliesTo,
}

/// Document metadata. Download URLs are signed and short-lived, so they are never kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocumentInfo {
    pub id: Option<String>,
    pub name: Option<String>,
    /// Normalized kinds such as `declaration_page`, `id_card`, `cancellation_notice`.
    pub kinds: Vec<String>,
    pub source: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Carrier {
    /// The vendor's carrier slug or id (`state-farm`, `progressive`, …).
    pub id: String,
    pub name: Option<String>,
}

/// Which term of a policy a snapshot describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyTerm {
    Current,
    Renewal,
}

impl PolicyTerm {
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyTerm::Current => "current",
            PolicyTerm::Renewal => "renewal",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// The vendor's stable id for the policy: Axle `pol_…`; for Canopy, whose object ids change
    /// with every pull, the carrier policy number (see the canopy crate's `normalize`).
    pub external_id: String,
    pub policy_type: PolicyType,
    pub carrier: Carrier,
    pub policy_number: Option<String>,
    pub status: PolicyStatus,
    pub effective_date: Option<DateTime<Utc>>,
    pub expiration_date: Option<DateTime<Utc>>,
    pub cancelled_date: Option<DateTime<Utc>>,
    pub premium_cents: Option<i64>,
    pub address: Option<Address>,
    pub vehicles: Vec<Vehicle>,
    pub dwellings: Vec<Dwelling>,
    pub coverages: Vec<Coverage>,
    pub insureds: Vec<Insured>,
    pub interested_parties: Vec<InterestedParty>,
    pub documents: Vec<DocumentInfo>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionStatus {
    Active,
    Disconnected,
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// The vendor's id for the account (Axle `acc_…`, Canopy `account_identifier` or pull id).
    pub external_id: String,
    pub carrier: Carrier,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub connection: ConnectionStatus,
    pub policy_ids: Vec<String>,
    /// When the vendor last pulled fresh data from the carrier.
    pub refreshed_at: Option<DateTime<Utc>>,
}

/// A normalized policy together with the vendor JSON it came from, kept for audit and re-mapping.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicySnapshot {
    pub policy: Policy,
    pub term: PolicyTerm,
    pub raw: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AccountSnapshot {
    pub account: Account,
    pub raw: serde_json::Value,
}

/// Integer cents from a vendor amount in dollars, refusing what is not a finite amount.
pub fn dollars_to_cents(dollars: f64) -> Option<i64> {
    if !dollars.is_finite() || dollars.abs() > 1e15 {
        return None;
    }
    Some((dollars * 100.0).round() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dollars_become_whole_cents() {
        assert_eq!(dollars_to_cents(1234.56), Some(123_456));
        assert_eq!(dollars_to_cents(0.1 + 0.2), Some(30));
        assert_eq!(dollars_to_cents(50_000.0), Some(5_000_000));
        assert_eq!(dollars_to_cents(f64::NAN), None);
        assert_eq!(dollars_to_cents(f64::INFINITY), None);
    }

    #[test]
    fn codes_serialize_in_one_vocabulary() {
        assert_eq!(
            serde_json::to_value(CoverageCode::UninsuredMotoristBodilyInjury).unwrap(),
            serde_json::json!("uninsured_motorist_bodily_injury")
        );
        assert_eq!(
            serde_json::to_value(CoverageCode::Other("GAP".into())).unwrap(),
            serde_json::json!({"other": "GAP"})
        );
        assert_eq!(
            serde_json::to_value(AppliesTo::Property("prp_1".into())).unwrap(),
            serde_json::json!({"scope": "property", "property_id": "prp_1"})
        );
    }

    #[test]
    fn in_force_is_unknown_when_the_vendor_did_not_say() {
        assert_eq!(PolicyStatus::Active.is_in_force(), Some(true));
        assert_eq!(PolicyStatus::PendingCancellation.is_in_force(), Some(true));
        assert_eq!(PolicyStatus::Cancelled.is_in_force(), Some(false));
        assert_eq!(PolicyStatus::Unknown.is_in_force(), None);
    }
}
