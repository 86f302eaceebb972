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
    /// Home: the line that carries the property deductible for every peril (Canopy
    /// `ALL_PERILS`), or for every peril without a deductible of its own (`ALL_OTHER_PERILS`,
    /// beside a windstorm-or-hail one). Its `deductible_cents` is the policy's usual deductible.
    AllPerils,
    /// A coverage with no common meaning; carries the vendor's own code.
    Other(String),
}

impl CoverageCode {
    /// The code in the one vocabulary (`bodily_injury`, …), `other:CODE` for a vendor's own: how
    /// change reasons and rule labels name it.
    pub fn name(&self) -> String {
        match self {
            CoverageCode::Other(vendor) => format!("other:{vendor}"),
            known => serde_json::to_value(known)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
        }
    }
}

/// A limit as the vendor states it: an amount, or explicitly none (Canopy's
/// `per_person_unlimited` / `per_incident_unlimited`). A limit the vendor did not give is a
/// `None` beside this type, never `Unlimited`.
///
/// Stored as the number of cents, or the string `"unlimited"`, so that snapshots written before
/// unlimited limits existed read unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Limit {
    Cents(i64),
    /// The coverage pays without a cap; it meets any minimum.
    Unlimited,
}

impl Limit {
    /// The amount, when there is one.
    pub fn cents(self) -> Option<i64> {
        match self {
            Limit::Cents(cents) => Some(cents),
            Limit::Unlimited => None,
        }
    }

    pub fn is_unlimited(self) -> bool {
        self == Limit::Unlimited
    }

    /// Whether this limit is at least `required` cents.
    pub fn meets(self, required: i64) -> bool {
        match self {
            Limit::Cents(cents) => cents >= required,
            Limit::Unlimited => true,
        }
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Limit::Cents(cents) => write!(f, "{cents}"),
            Limit::Unlimited => f.write_str(UNLIMITED),
        }
    }
}

const UNLIMITED: &str = "unlimited";

impl Serialize for Limit {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Limit::Cents(cents) => serializer.serialize_i64(*cents),
            Limit::Unlimited => serializer.serialize_str(UNLIMITED),
        }
    }
}

impl<'de> Deserialize<'de> for Limit {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Stored {
            Cents(i64),
            Word(String),
        }
        match Stored::deserialize(deserializer)? {
            Stored::Cents(cents) => Ok(Limit::Cents(cents)),
            Stored::Word(word) if word == UNLIMITED => Ok(Limit::Unlimited),
            Stored::Word(word) => Err(serde::de::Error::custom(format!(
                "a limit is a number of cents or \"{UNLIMITED}\", not {word:?}"
            ))),
        }
    }
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
    /// Per-person limit of a split limit. `None`: the vendor gave none (unknown).
    #[serde(rename = "limit_per_person_cents")]
    pub limit_per_person: Option<Limit>,
    /// Per-accident (per-incident, per-occurrence) limit; a single limit sits here.
    #[serde(rename = "limit_per_accident_cents")]
    pub limit_per_accident: Option<Limit>,
    /// A daily limit (rental reimbursement: so much a day), paid for at most `max_days` days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_per_day_cents: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_days: Option<u32>,
    pub deductible_cents: Option<i64>,
    pub premium_cents: Option<i64>,
    pub applies_to: AppliesTo,
    /// Declined by the insured: listed by the carrier, but not in force.
    pub declined: bool,
    /// Not stated by the vendor but read by us from other coverages under the vendor's documented
    /// rules (an Axle combined single limit). A rule never passes on an inferred coverage alone.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub inferred: bool,
}

impl Coverage {
    /// A coverage the vendor stated, with nothing but its code and vendor code; the caller sets
    /// the rest.
    pub fn new(code: CoverageCode, vendor_code: impl Into<String>) -> Self {
        Coverage {
            code,
            vendor_code: vendor_code.into(),
            label: None,
            limit_per_person: None,
            limit_per_accident: None,
            limit_per_day_cents: None,
            max_days: None,
            deductible_cents: None,
            premium_cents: None,
            applies_to: AppliesTo::AllProperties,
            declined: false,
            inferred: false,
        }
    }
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
    /// A party whose role the data source did not state (Axle's default `interest`: "If you do
    /// not find a thirdParty of type lienholder or lessor on the policy, the data source may not
    /// have specified this classification"). It may be a lienholder, lessor or mortgagee, so a
    /// rule asking for one of those answers UNKNOWN on it, never PASS on a guess.
    Unclassified,
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
    fn an_unlimited_limit_meets_any_minimum_and_is_stored_as_a_word() {
        assert!(Limit::Unlimited.meets(i64::MAX));
        assert!(Limit::Cents(5_000_000).meets(5_000_000));
        assert!(!Limit::Cents(4_999_999).meets(5_000_000));
        assert!(Limit::Unlimited > Limit::Cents(i64::MAX));
        assert_eq!(Limit::Unlimited.cents(), None);

        let mut coverage = Coverage::new(CoverageCode::PersonalInjuryProtection, "PIP");
        coverage.limit_per_person = Some(Limit::Unlimited);
        coverage.limit_per_accident = Some(Limit::Cents(30_000_000));
        let stored = serde_json::to_value(&coverage).unwrap();
        assert_eq!(stored["limit_per_person_cents"], "unlimited");
        assert_eq!(stored["limit_per_accident_cents"], 30_000_000);
        assert_eq!(
            serde_json::from_value::<Coverage>(stored).unwrap(),
            coverage
        );
        assert!(
            serde_json::from_value::<Limit>(serde_json::json!("lots"))
                .unwrap_err()
                .to_string()
                .contains("\"unlimited\"")
        );
    }

    /// Snapshots stored before per-day limits, unlimited limits and inferred coverages existed
    /// must read back, and a coverage without them must store exactly as before, so that its
    /// content hash (and so its version history) does not change.
    #[test]
    fn coverages_stored_before_the_new_fields_read_and_write_unchanged() {
        let old = serde_json::json!({
            "code": "bodily_injury", "vendor_code": "BI", "label": "Bodily Injury",
            "limit_per_person_cents": 25_000_000, "limit_per_accident_cents": 50_000_000,
            "deductible_cents": null, "premium_cents": null,
            "applies_to": {"scope": "all_properties"}, "declined": false
        });
        let coverage: Coverage = serde_json::from_value(old.clone()).unwrap();
        assert_eq!(coverage.limit_per_person, Some(Limit::Cents(25_000_000)));
        assert!(!coverage.inferred);
        assert_eq!(coverage.limit_per_day_cents, None);
        assert_eq!(serde_json::to_value(&coverage).unwrap(), old);
    }

    #[test]
    fn in_force_is_unknown_when_the_vendor_did_not_say() {
        assert_eq!(PolicyStatus::Active.is_in_force(), Some(true));
        assert_eq!(PolicyStatus::PendingCancellation.is_in_force(), Some(true));
        assert_eq!(PolicyStatus::Cancelled.is_in_force(), Some(false));
        assert_eq!(PolicyStatus::Unknown.is_in_force(), None);
    }
}
