//! Requirement sets: a caller's rules for the policies on a link, checked the same way whichever
//! vendor holds them. Pure: the store keeps sets as the JSON below, the engine calls
//! [`evaluate`] on every new snapshot and [`requirements_transition`] / [`stale_action`] to
//! decide which events to emit.
//!
//! # JSON
//!
//! ```json
//! {"id": "lender-auto", "name": "Lender auto", "rules": [
//!   {"rule": "policy_active"},
//!   {"rule": "policy_type_in", "types": ["auto", {"other": "commercial_auto"}]},
//!   {"rule": "expires_at_least_days_ahead", "days": 30},
//!   {"rule": "min_bodily_injury", "per_person_cents": 2500000, "per_accident_cents": 5000000},
//!   {"rule": "min_property_damage", "per_accident_cents": 2500000},
//!   {"rule": "comprehensive_and_collision", "max_deductible_cents": 100000},
//!   {"rule": "interested_party_named", "kind": "lienholder", "name": "Acme Bank, N.A."},
//!   {"rule": "vin_covered", "vin": "1HGCM82633A004352"},
//!   {"rule": "address_covered", "line1": "1 Main St", "city": "Springfield", "state": "IL",
//!    "postal_code": "62701"},
//!   {"rule": "coverage", "code": "underinsured_motorist_bodily_injury",
//!    "min_per_person_cents": 2500000, "min_per_accident_cents": 5000000}
//! ]}
//! ```
//!
//! Every rule names its fields, so a field can be added later without breaking stored sets.
//!
//! # How rules read the policies of a link
//!
//! Results are three-valued, ordered Fail < Unknown < Pass: "all of" takes the worst, "some
//! of" the best. So a known shortfall outweighs missing data, and missing data never passes.
//!
//! - **Candidates.** With a `policy_type_in` rule, the other rules read only policies of those
//!   types; without one, every policy on the link. `policy_type_in` itself passes when some
//!   policy on the link is of one of the types.
//! - **In force.** A policy counts for a rule only while in force: its status says so (active or
//!   pending cancellation; unknown or unverified status is Unknown), it has started (an
//!   effective date in the future is Fail), and its term has not run out. A status of active
//!   with an expiration or cancellation date already past is Unknown, not Fail: the vendor may
//!   not have caught up with a renewal yet, and the contradiction is for a refresh to settle.
//! - **Some policy.** Each rule passes when some in-force candidate satisfies it. Rules are
//!   read independently: two rules may be satisfied by two different policies.
//! - **Expiration.** `expires_at_least_days_ahead` reads the earlier of the expiration date and
//!   a scheduled cancellation date. No expiration date, or a pending cancellation without a
//!   date, is Unknown (unless a known date already fails).
//! - **Vehicle-bound coverage** (`min_bodily_injury`, `min_property_damage`,
//!   `comprehensive_and_collision`) reads auto, motorcycle and other-line policies and any
//!   policy that lists vehicles. A coverage counts for a vehicle when it applies to all of the
//!   policy's properties or to that vehicle; a declined coverage never counts.
//!   - When the set has `vin_covered` rules, the rule must hold for each of those vehicles, on
//!     some in-force candidate listing it.
//!   - Otherwise it must hold for every vehicle of a policy (a policy without vehicles is read
//!     as a whole), so that one uninsured car is not hidden by another; name VINs to narrow it.
//! - **`coverage`** names one normalized code (`{"other": "GAP"}` for a vendor's own) and any of
//!   a minimum per-person limit, a minimum per-accident limit and a maximum deductible. For the
//!   auto codes it reads vehicles as above; for any other code (dwelling, all perils, personal
//!   liability, …) some in-force candidate must carry it. A bound whose value the vendor did not
//!   give is Unknown; an inferred coverage never passes on its own.
//!   - A unit with no coverage listed at all is Unknown (the vendor did not report coverages);
//!     one with coverages but not the required one is Fail.
//! - **Combined single limit.** A CSL of `L` satisfies `min_bodily_injury` when `L` is at least
//!   the required per-accident amount (which validation keeps at or above per person), and
//!   `min_property_damage` when `L` is at least its per-accident amount. Each rule reads the CSL
//!   on its own; the limit is not split between them, as lenders commonly accept. A CSL's limit
//!   is its per-accident limit, else its per-person one. A CSL the vendor did not state but that
//!   was inferred (Axle writes a CSL as equal `BI` and `PD` per-accident limits, which a lone
//!   `BI` limit can also produce) never passes: at best it is Unknown, and it fails only where
//!   every reading of it would.
//! - **Unlimited.** A limit the vendor states as unlimited meets any minimum; a limit it does
//!   not give is Unknown.
//! - **Interested parties** match on kind and on [`comparable_name`] (case, spacing and
//!   punctuation ignored). A party of that kind with no name is Unknown. A party whose role the
//!   vendor did not state (`unclassified`: Axle's default `interest`) and whose name matches is
//!   Unknown for any kind: it may be the wanted party, but a pass would rest on a guess. A party bound to one
//!   vehicle counts only if that vehicle is one the set names with `vin_covered` (when it names
//!   any); likewise a party bound to one dwelling and `address_covered`. Parties bound to all
//!   properties always count.
//! - **VIN**: listed on an in-force candidate, compared trimmed and case-insensitively. A
//!   vehicle with no VIN is Unknown.
//! - **Address**: a dwelling's address, or the policy's own address for a property line
//!   (homeowners, condo, renters, landlord, flood) that lists no dwelling. Auto policies'
//!   mailing and garaging addresses are not covered property. Street lines compare by words,
//!   ignoring case and punctuation, with common abbreviations folded (`Street` = `St`) and unit
//!   words dropped (`Apt 4` = `#4`); the observed line 2 may complete line 1. City compares the
//!   same way, state by code or full name, postal code by its first five digits when both have
//!   them. A part the rule asks for and the vendor did not give is Unknown.
//! - An empty list of policies fails every rule: callers evaluate only once data has arrived.
//!
//! Overall: any Fail → Unmet; else any Unknown → Unknown; else Met. A set with no rules is
//! Unknown (nothing was checked), though validation rejects such a set.

use std::fmt;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::change::comparable_name;
use crate::event::{EventKind, EventPayload, RuleOutcome, RuleResult};
use crate::policy::{
    Address, AppliesTo, Coverage, CoverageCode, InterestedParty, Limit, PartyKind, Policy,
    PolicyStatus, PolicyType, Vehicle,
};

/// More rules than anyone writes by hand; a bound keeps stored sets and evaluations small.
pub const MAX_RULES: usize = 100;
/// Ten years: no policy term is longer, so a larger count can only be a mistake.
pub const MAX_DAYS_AHEAD: u32 = 3650;
/// Ids and names are keys and labels, not documents.
pub const MAX_TEXT_LEN: usize = 256;

/// A caller's named set of rules, attached to links.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequirementSet {
    pub id: String,
    pub name: String,
    pub rules: Vec<Rule>,
}

/// One requirement. See the module documentation for how each reads the policies of a link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "rule", rename_all = "snake_case", deny_unknown_fields)]
pub enum Rule {
    /// Some candidate policy is in force.
    PolicyActive,
    /// Some policy is of one of these types; the other rules then read only those.
    PolicyTypeIn {
        types: Vec<PolicyType>,
    },
    /// Some in-force candidate runs at least this many days past now.
    ExpiresAtLeastDaysAhead {
        days: u32,
    },
    MinBodilyInjury {
        per_person_cents: i64,
        per_accident_cents: i64,
    },
    MinPropertyDamage {
        per_accident_cents: i64,
    },
    /// Both present, neither with a deductible above this amount.
    ComprehensiveAndCollision {
        max_deductible_cents: i64,
    },
    InterestedPartyNamed {
        kind: PartyKind,
        name: String,
    },
    VinCovered {
        vin: String,
    },
    AddressCovered {
        line1: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        city: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        state: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        postal_code: Option<String>,
    },
    /// A coverage of one normalized code within the bounds given (at least one): on every
    /// covered vehicle for the codes that insure vehicles, else on some in-force policy. It makes
    /// every normalized code usable in a rule (underinsured motorists, all-perils deductibles,
    /// medical payments, …), not only the few with a rule of their own.
    Coverage {
        code: CoverageCode,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        min_per_person_cents: Option<i64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        min_per_accident_cents: Option<i64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_deductible_cents: Option<i64>,
    },
}

impl Rule {
    /// Every rule kind, as written in the `rule` field.
    pub const KINDS: [&'static str; 10] = [
        "policy_active",
        "policy_type_in",
        "expires_at_least_days_ahead",
        "min_bodily_injury",
        "min_property_damage",
        "comprehensive_and_collision",
        "interested_party_named",
        "vin_covered",
        "address_covered",
        "coverage",
    ];

    pub fn kind(&self) -> &'static str {
        match self {
            Rule::PolicyActive => "policy_active",
            Rule::PolicyTypeIn { .. } => "policy_type_in",
            Rule::ExpiresAtLeastDaysAhead { .. } => "expires_at_least_days_ahead",
            Rule::MinBodilyInjury { .. } => "min_bodily_injury",
            Rule::MinPropertyDamage { .. } => "min_property_damage",
            Rule::ComprehensiveAndCollision { .. } => "comprehensive_and_collision",
            Rule::InterestedPartyNamed { .. } => "interested_party_named",
            Rule::VinCovered { .. } => "vin_covered",
            Rule::AddressCovered { .. } => "address_covered",
            Rule::Coverage { .. } => "coverage",
        }
    }

    /// The rule with its parameters, as `RuleOutcome::rule`. Self-describing rather than an
    /// index, because stored events outlive later edits of the set.
    pub fn label(&self) -> String {
        match self {
            Rule::PolicyActive => "policy_active".into(),
            Rule::PolicyTypeIn { types } => format!(
                "policy_type_in({})",
                types.iter().map(type_name).collect::<Vec<_>>().join(", ")
            ),
            Rule::ExpiresAtLeastDaysAhead { days } => {
                format!("expires_at_least_days_ahead({days})")
            }
            Rule::MinBodilyInjury {
                per_person_cents,
                per_accident_cents,
            } => format!("min_bodily_injury({per_person_cents}/{per_accident_cents} cents)"),
            Rule::MinPropertyDamage { per_accident_cents } => {
                format!("min_property_damage({per_accident_cents} cents)")
            }
            Rule::ComprehensiveAndCollision {
                max_deductible_cents,
            } => {
                format!("comprehensive_and_collision(max deductible {max_deductible_cents} cents)")
            }
            Rule::InterestedPartyNamed { kind, name } => {
                format!(
                    "interested_party_named({} \"{}\")",
                    party_name(*kind),
                    name.trim()
                )
            }
            Rule::VinCovered { vin } => format!("vin_covered({})", normalize_vin(vin)),
            Rule::AddressCovered {
                line1,
                city,
                state,
                postal_code,
            } => {
                let parts: Vec<&str> = [
                    Some(line1.as_str()),
                    city.as_deref(),
                    state.as_deref(),
                    postal_code.as_deref(),
                ]
                .into_iter()
                .flatten()
                .map(str::trim)
                .collect();
                format!("address_covered({})", parts.join(", "))
            }
            Rule::Coverage {
                code,
                min_per_person_cents,
                min_per_accident_cents,
                max_deductible_cents,
            } => {
                let mut bounds = Vec::new();
                if min_per_person_cents.is_some() || min_per_accident_cents.is_some() {
                    bounds.push(format!(
                        "limits at least {}/{} cents",
                        cents(*min_per_person_cents),
                        cents(*min_per_accident_cents)
                    ));
                }
                if let Some(max) = max_deductible_cents {
                    bounds.push(format!("deductible at most {max} cents"));
                }
                format!("coverage({}: {})", code.name(), bounds.join(", "))
            }
        }
    }

    /// What makes two rules of a repeatable kind the same rule, and the field to blame; `None`
    /// for the kinds a set holds only once (a second would be redundant or contradict the first).
    fn identity(&self) -> Option<(&'static str, String)> {
        match self {
            Rule::InterestedPartyNamed { kind, name } => Some((
                "name",
                format!("{}:{}", party_name(*kind), comparable_name(name)),
            )),
            Rule::VinCovered { vin } => Some(("vin", normalize_vin(vin))),
            Rule::Coverage { code, .. } => Some(("code", code.name())),
            Rule::AddressCovered {
                line1,
                city,
                state,
                postal_code,
            } => Some((
                "line1",
                format!(
                    "{}|{}|{}|{}",
                    normalize_words(line1),
                    city.as_deref().map(normalize_words).unwrap_or_default(),
                    state.as_deref().map(normalize_state).unwrap_or_default(),
                    postal_code
                        .as_deref()
                        .map(normalize_postal)
                        .unwrap_or_default(),
                ),
            )),
            _ => None,
        }
    }
}

/// A set or rule that cannot be used, named by its path (`rules[2].min_bodily_injury.per_person_cents`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct RuleError {
    /// Where: `id`, `name`, `rules`, `rules[i]`, `rules[i].kind` or `rules[i].kind.field`;
    /// `$` for the document as a whole.
    pub path: String,
    pub message: String,
}

impl RuleError {
    fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        RuleError {
            path: path.into(),
            message: message.into(),
        }
    }

    fn at(index: usize, kind: &str, field: &str, message: impl Into<String>) -> Self {
        RuleError::new(format!("rules[{index}].{kind}.{field}"), message)
    }
}

impl RequirementSet {
    /// Parses and validates a set from JSON, naming the rule (by index) and field at fault.
    pub fn from_json(text: &str) -> Result<RequirementSet, RuleError> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| RuleError::new("$", format!("not valid JSON: {e}")))?;
        let Value::Object(mut object) = value else {
            return Err(RuleError::new("$", "must be a JSON object"));
        };
        if let Some(key) = object
            .keys()
            .find(|k| !["id", "name", "rules"].contains(&k.as_str()))
        {
            // An empty key cannot name itself as the path.
            if key.is_empty() {
                return Err(RuleError::new(
                    "$",
                    "unknown field \"\" (expected id, name, rules)",
                ));
            }
            return Err(RuleError::new(
                key.clone(),
                "unknown field (expected id, name, rules)",
            ));
        }
        let mut text_field = |key: &str| -> Result<String, RuleError> {
            match object.remove(key) {
                Some(Value::String(s)) => Ok(s),
                Some(_) => Err(RuleError::new(key, "must be a string")),
                None => Err(RuleError::new(key, "is required")),
            }
        };
        let id = text_field("id")?;
        let name = text_field("name")?;
        let raw_rules = match object.remove("rules") {
            Some(Value::Array(rules)) => rules,
            Some(_) => return Err(RuleError::new("rules", "must be an array")),
            None => return Err(RuleError::new("rules", "is required")),
        };
        let rules = raw_rules
            .into_iter()
            .enumerate()
            .map(|(index, raw)| parse_rule(index, raw))
            .collect::<Result<Vec<_>, _>>()?;
        let set = RequirementSet { id, name, rules };
        set.validate()?;
        Ok(set)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Checks that every rule can be evaluated and means something; the first problem wins.
    pub fn validate(&self) -> Result<(), RuleError> {
        check_set_id(&self.id)?;
        check_text("name", &self.name)?;
        if self.rules.is_empty() {
            return Err(RuleError::new("rules", "must hold at least one rule"));
        }
        if self.rules.len() > MAX_RULES {
            return Err(RuleError::new(
                "rules",
                format!("must hold at most {MAX_RULES} rules"),
            ));
        }
        for (index, rule) in self.rules.iter().enumerate() {
            validate_rule(index, rule)?;
            let earlier = &self.rules[..index];
            let same_kind = |other: &Rule| other.kind() == rule.kind();
            match rule.identity() {
                None => {
                    if let Some(first) = earlier.iter().position(same_kind) {
                        return Err(RuleError::new(
                            format!("rules[{index}].{}", rule.kind()),
                            format!(
                                "a set holds one {} rule; rules[{first}] is one",
                                rule.kind()
                            ),
                        ));
                    }
                }
                Some((field, identity)) => {
                    let same = |other: &Rule| {
                        same_kind(other) && other.identity().is_some_and(|(_, id)| id == identity)
                    };
                    if let Some(first) = earlier.iter().position(same) {
                        return Err(RuleError::at(
                            index,
                            rule.kind(),
                            field,
                            format!("duplicates rules[{first}]"),
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

/// The longest set id: ids are keys that callers put in configuration and in URLs.
pub const MAX_SET_ID_LEN: usize = 64;

/// Whether `id` can name a requirement set (`A-Z a-z 0-9 . _ -`, 1 to 64 characters).
pub fn check_set_id(id: &str) -> Result<(), RuleError> {
    if id.is_empty() {
        return Err(RuleError::new("id", "must not be empty"));
    }
    if id.len() > MAX_SET_ID_LEN {
        return Err(RuleError::new(
            "id",
            format!("must be at most {MAX_SET_ID_LEN} characters"),
        ));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(RuleError::new(
            "id",
            format!("must hold only A-Z, a-z, 0-9, '.', '_' and '-' (found {c:?})"),
        ));
    }
    Ok(())
}

fn check_text(path: &str, value: &str) -> Result<(), RuleError> {
    if value.trim().is_empty() {
        return Err(RuleError::new(path, "must not be empty"));
    }
    if value.chars().count() > MAX_TEXT_LEN {
        return Err(RuleError::new(
            path,
            format!("must be at most {MAX_TEXT_LEN} characters"),
        ));
    }
    Ok(())
}

fn validate_rule(index: usize, rule: &Rule) -> Result<(), RuleError> {
    let kind = rule.kind();
    let positive = |field: &str, cents: i64| {
        if cents <= 0 {
            Err(RuleError::at(index, kind, field, "must be positive"))
        } else {
            Ok(())
        }
    };
    let text = |field: &str, value: &str| {
        check_text(&format!("rules[{index}].{kind}.{field}"), value)?;
        if comparable_name(value).is_empty() {
            return Err(RuleError::at(
                index,
                kind,
                field,
                "must contain a letter or digit",
            ));
        }
        Ok(())
    };
    match rule {
        Rule::PolicyActive => Ok(()),
        Rule::PolicyTypeIn { types } => {
            if types.is_empty() {
                return Err(RuleError::at(index, kind, "types", "must not be empty"));
            }
            for (i, t) in types.iter().enumerate() {
                let field = format!("types[{i}]");
                if let PolicyType::Other(name) = t {
                    text(&field, name)?;
                }
                if let Some(first) = types[..i].iter().position(|other| other == t) {
                    return Err(RuleError::at(
                        index,
                        kind,
                        &field,
                        format!("duplicates types[{first}]"),
                    ));
                }
            }
            Ok(())
        }
        Rule::ExpiresAtLeastDaysAhead { days } => {
            if *days > MAX_DAYS_AHEAD {
                return Err(RuleError::at(
                    index,
                    kind,
                    "days",
                    format!("must be at most {MAX_DAYS_AHEAD}"),
                ));
            }
            Ok(())
        }
        Rule::MinBodilyInjury {
            per_person_cents,
            per_accident_cents,
        } => {
            positive("per_person_cents", *per_person_cents)?;
            positive("per_accident_cents", *per_accident_cents)?;
            if per_person_cents > per_accident_cents {
                // Every policy caps one person within the accident limit; such a rule could only
                // ever be met by a combined single limit, which is surely not what was meant.
                return Err(RuleError::at(
                    index,
                    kind,
                    "per_person_cents",
                    "must not exceed per_accident_cents",
                ));
            }
            Ok(())
        }
        Rule::MinPropertyDamage { per_accident_cents } => {
            positive("per_accident_cents", *per_accident_cents)
        }
        Rule::ComprehensiveAndCollision {
            max_deductible_cents,
        } => {
            // Zero is a real requirement (no deductible at all), unlike a zero limit.
            if *max_deductible_cents < 0 {
                return Err(RuleError::at(
                    index,
                    kind,
                    "max_deductible_cents",
                    "must not be negative",
                ));
            }
            Ok(())
        }
        Rule::InterestedPartyNamed {
            kind: PartyKind::Unclassified,
            ..
        } => Err(RuleError::at(
            index,
            kind,
            "kind",
            "must name a role (lienholder, lessor, mortgagee or additional_interest); \
             `unclassified` is what a vendor reports when it does not know the role",
        )),
        Rule::InterestedPartyNamed { name, .. } => text("name", name),
        Rule::Coverage {
            code,
            min_per_person_cents,
            min_per_accident_cents,
            max_deductible_cents,
        } => {
            if let CoverageCode::Other(vendor) = code {
                text("code.other", vendor)?;
            }
            if min_per_person_cents.is_none()
                && min_per_accident_cents.is_none()
                && max_deductible_cents.is_none()
            {
                return Err(RuleError::at(
                    index,
                    kind,
                    "code",
                    "needs at least one of min_per_person_cents, min_per_accident_cents, \
                     max_deductible_cents (a coverage merely present says little)",
                ));
            }
            if let Some(c) = min_per_person_cents {
                positive("min_per_person_cents", *c)?;
            }
            if let Some(c) = min_per_accident_cents {
                positive("min_per_accident_cents", *c)?;
            }
            if let (Some(person), Some(accident)) = (min_per_person_cents, min_per_accident_cents)
                && person > accident
            {
                return Err(RuleError::at(
                    index,
                    kind,
                    "min_per_person_cents",
                    "must not exceed min_per_accident_cents",
                ));
            }
            if max_deductible_cents.is_some_and(|d| d < 0) {
                return Err(RuleError::at(
                    index,
                    kind,
                    "max_deductible_cents",
                    "must not be negative",
                ));
            }
            Ok(())
        }
        Rule::VinCovered { vin } => {
            let vin = vin.trim();
            if vin.is_empty() {
                return Err(RuleError::at(index, kind, "vin", "must not be empty"));
            }
            if vin.chars().count() != 17 || !vin.chars().all(is_vin_char) {
                return Err(RuleError::at(
                    index,
                    kind,
                    "vin",
                    "must be 17 characters of A-H, J-N, P, R-Z and 0-9 (no I, O or Q)",
                ));
            }
            Ok(())
        }
        Rule::AddressCovered {
            line1,
            city,
            state,
            postal_code,
        } => {
            text("line1", line1)?;
            for (field, value) in [
                ("city", city),
                ("state", state),
                ("postal_code", postal_code),
            ] {
                if let Some(value) = value {
                    text(field, value)?;
                }
            }
            Ok(())
        }
    }
}

fn is_vin_char(c: char) -> bool {
    let c = c.to_ascii_uppercase();
    c.is_ascii_digit() || (c.is_ascii_uppercase() && !matches!(c, 'I' | 'O' | 'Q'))
}

/// The type of a rule field, so a bad value is blamed on its field rather than on the rule.
#[derive(Clone, Copy)]
enum FieldType {
    Cents,
    Days,
    Text,
    OptionalText,
    PolicyTypes,
    PartyKind,
    CoverageCode,
    OptionalCents,
}

/// The fields of each kind: `(name, type, required)`. Kept beside [`Rule`]; a test checks they
/// agree.
fn rule_fields(kind: &str) -> &'static [(&'static str, FieldType, bool)] {
    use FieldType::*;
    match kind {
        "policy_type_in" => &[("types", PolicyTypes, true)],
        "expires_at_least_days_ahead" => &[("days", Days, true)],
        "min_bodily_injury" => &[
            ("per_person_cents", Cents, true),
            ("per_accident_cents", Cents, true),
        ],
        "min_property_damage" => &[("per_accident_cents", Cents, true)],
        "comprehensive_and_collision" => &[("max_deductible_cents", Cents, true)],
        "interested_party_named" => &[("kind", PartyKind, true), ("name", Text, true)],
        "vin_covered" => &[("vin", Text, true)],
        "address_covered" => &[
            ("line1", Text, true),
            ("city", OptionalText, false),
            ("state", OptionalText, false),
            ("postal_code", OptionalText, false),
        ],
        "coverage" => &[
            ("code", CoverageCode, true),
            ("min_per_person_cents", OptionalCents, false),
            ("min_per_accident_cents", OptionalCents, false),
            ("max_deductible_cents", OptionalCents, false),
        ],
        _ => &[],
    }
}

fn check_field(ty: FieldType, value: &Value) -> Result<(), (Option<usize>, String)> {
    fn try_as<T: serde::de::DeserializeOwned>(
        value: &Value,
    ) -> Result<(), (Option<usize>, String)> {
        serde_json::from_value::<T>(value.clone())
            .map(drop)
            .map_err(|e| (None, e.to_string()))
    }
    match ty {
        FieldType::Cents => try_as::<i64>(value),
        FieldType::Days => try_as::<u32>(value),
        FieldType::Text => try_as::<String>(value),
        FieldType::OptionalText => try_as::<Option<String>>(value),
        FieldType::PartyKind => try_as::<PartyKind>(value),
        FieldType::CoverageCode => try_as::<CoverageCode>(value),
        FieldType::OptionalCents => try_as::<Option<i64>>(value),
        FieldType::PolicyTypes => {
            let Value::Array(items) = value else {
                return Err((None, "must be an array of policy types".into()));
            };
            for (i, item) in items.iter().enumerate() {
                try_as::<PolicyType>(item).map_err(|(_, e)| (Some(i), e))?;
            }
            Ok(())
        }
    }
}

fn parse_rule(index: usize, raw: Value) -> Result<Rule, RuleError> {
    let at = format!("rules[{index}]");
    let Value::Object(object) = &raw else {
        return Err(RuleError::new(at, "must be an object with a `rule` kind"));
    };
    let kind = match object.get("rule") {
        Some(Value::String(kind)) => kind.as_str(),
        Some(_) => return Err(RuleError::new(format!("{at}.rule"), "must be a string")),
        None => return Err(RuleError::new(format!("{at}.rule"), "is required")),
    };
    if !Rule::KINDS.contains(&kind) {
        return Err(RuleError::new(
            format!("{at}.rule"),
            format!(
                "unknown rule kind `{kind}` (expected one of: {})",
                Rule::KINDS.join(", ")
            ),
        ));
    }
    let fields = rule_fields(kind);
    for key in object.keys().filter(|k| k.as_str() != "rule") {
        let Some((_, ty, _)) = fields.iter().find(|(name, _, _)| name == key) else {
            let expected: Vec<&str> = fields.iter().map(|(name, _, _)| *name).collect();
            let expected = if expected.is_empty() {
                "it takes none".to_owned()
            } else {
                format!("expected {}", expected.join(", "))
            };
            return Err(RuleError::at(
                index,
                kind,
                key,
                format!("unknown field ({expected})"),
            ));
        };
        if let Err((item, message)) = check_field(*ty, &object[key.as_str()]) {
            let field = match item {
                Some(i) => format!("{key}[{i}]"),
                None => key.clone(),
            };
            return Err(RuleError::at(index, kind, &field, message));
        }
    }
    if let Some((name, _, _)) = fields
        .iter()
        .find(|(name, _, required)| *required && !object.contains_key(*name))
    {
        return Err(RuleError::at(index, kind, name, "is required"));
    }
    let kind = kind.to_owned();
    serde_json::from_value(raw).map_err(|e| RuleError::new(format!("{at}.{kind}"), e.to_string()))
}

// ---------------------------------------------------------------------------------------------
// Evaluation

/// Where the link stands against a set, as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OverallStatus {
    Met,
    Unmet,
    Unknown,
}

impl OverallStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OverallStatus::Met => "met",
            OverallStatus::Unmet => "unmet",
            OverallStatus::Unknown => "unknown",
        }
    }
}

impl std::str::FromStr for OverallStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        [
            OverallStatus::Met,
            OverallStatus::Unmet,
            OverallStatus::Unknown,
        ]
        .into_iter()
        .find(|status| status.as_str() == s)
        .ok_or_else(|| format!("unknown requirements status `{s}`"))
    }
}

impl fmt::Display for OverallStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The result of checking one set against the policies of one link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evaluation {
    pub status: OverallStatus,
    /// One per rule, in the set's order.
    pub outcomes: Vec<RuleOutcome>,
}

/// Checks `policies` (every policy on one link) against `set` at `now`.
pub fn evaluate(set: &RequirementSet, policies: &[Policy], now: DateTime<Utc>) -> Evaluation {
    let ctx = Context::new(set, policies, now);
    let outcomes: Vec<RuleOutcome> = set
        .rules
        .iter()
        .map(|rule| {
            let verdict = ctx.rule(rule);
            RuleOutcome {
                rule: rule.label(),
                result: verdict.result,
                observed: Some(verdict.observed),
            }
        })
        .collect();
    let status = if outcomes.is_empty() {
        OverallStatus::Unknown
    } else if outcomes.iter().any(|o| o.result == RuleResult::Fail) {
        OverallStatus::Unmet
    } else if outcomes.iter().any(|o| o.result == RuleResult::Unknown) {
        OverallStatus::Unknown
    } else {
        OverallStatus::Met
    };
    Evaluation { status, outcomes }
}

fn rank(result: RuleResult) -> u8 {
    match result {
        RuleResult::Fail => 0,
        RuleResult::Unknown => 1,
        RuleResult::Pass => 2,
    }
}

#[derive(Debug, Clone)]
struct Verdict {
    result: RuleResult,
    observed: String,
}

impl Verdict {
    fn new(result: RuleResult, observed: impl Into<String>) -> Self {
        Verdict {
            result,
            observed: observed.into(),
        }
    }
    fn pass(observed: impl Into<String>) -> Self {
        Verdict::new(RuleResult::Pass, observed)
    }
    fn fail(observed: impl Into<String>) -> Self {
        Verdict::new(RuleResult::Fail, observed)
    }
    fn unknown(observed: impl Into<String>) -> Self {
        Verdict::new(RuleResult::Unknown, observed)
    }
    fn from_checks(fail: bool, unknown: bool, observed: impl Into<String>) -> Self {
        let result = if fail {
            RuleResult::Fail
        } else if unknown {
            RuleResult::Unknown
        } else {
            RuleResult::Pass
        };
        Verdict::new(result, observed)
    }
    fn labeled(self, label: &str) -> Self {
        Verdict {
            observed: format!("{label}: {}", self.observed),
            ..self
        }
    }
}

/// Some of: the first pass is shown alone; otherwise every reason, so the caller sees why none
/// passed.
fn any(verdicts: Vec<Verdict>, when_none: Verdict) -> Verdict {
    let Some(best) = verdicts.iter().map(|v| v.result).max_by_key(|r| rank(*r)) else {
        return when_none;
    };
    if best == RuleResult::Pass {
        return verdicts
            .into_iter()
            .find(|v| v.result == RuleResult::Pass)
            .unwrap_or(when_none);
    }
    Verdict::new(best, join(verdicts.iter()))
}

/// All of: the worst result decides, and only the reasons for it are shown.
fn all(verdicts: Vec<Verdict>, when_none: Verdict) -> Verdict {
    let Some(worst) = verdicts.iter().map(|v| v.result).min_by_key(|r| rank(*r)) else {
        return when_none;
    };
    Verdict::new(worst, join(verdicts.iter().filter(|v| v.result == worst)))
}

fn join<'a>(verdicts: impl Iterator<Item = &'a Verdict>) -> String {
    verdicts
        .map(|v| v.observed.as_str())
        .collect::<Vec<_>>()
        .join("; ")
}

/// A policy's own verdict for a rule, given whether it is in force: out of force decides alone;
/// in force shows only what the rule saw.
fn gated(gate: Verdict, inner: Verdict) -> Verdict {
    match (gate.result, inner.result) {
        (RuleResult::Fail, _) => gate,
        (_, RuleResult::Fail) | (RuleResult::Pass, _) => inner,
        (RuleResult::Unknown, _) => {
            Verdict::unknown(format!("{}; {}", gate.observed, inner.observed))
        }
    }
}

fn day(date: DateTime<Utc>) -> String {
    date.date_naive().to_string()
}

fn in_force(policy: &Policy, now: DateTime<Utc>) -> Verdict {
    let status = policy.status;
    match status.is_in_force() {
        None => Verdict::unknown(format!("status {status}")),
        Some(false) => Verdict::fail(format!("status {status}")),
        Some(true) => {
            if let Some(start) = policy.effective_date.filter(|start| *start > now) {
                return Verdict::fail(format!("status {status}, effective {}", day(start)));
            }
            let end = [policy.expiration_date, policy.cancelled_date]
                .into_iter()
                .flatten()
                .min();
            match end {
                Some(end) if end <= now => {
                    Verdict::unknown(format!("status {status} but the term ended {}", day(end)))
                }
                _ => Verdict::pass(format!("status {status}")),
            }
        }
    }
}

fn type_name(t: &PolicyType) -> String {
    match t {
        PolicyType::Other(name) => format!("other:{name}"),
        known => serde_json::to_value(known)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
    }
}

fn party_name(kind: PartyKind) -> &'static str {
    match kind {
        PartyKind::Lienholder => "lienholder",
        PartyKind::Lessor => "lessor",
        PartyKind::Mortgagee => "mortgagee",
        PartyKind::AdditionalInterest => "additional_interest",
        PartyKind::Unclassified => "unclassified party",
    }
}

fn normalize_vin(vin: &str) -> String {
    vin.trim().to_ascii_uppercase()
}

fn cents(value: Option<i64>) -> String {
    value.map_or_else(|| "?".to_owned(), |c| c.to_string())
}

fn is_property_line(t: &PolicyType) -> bool {
    matches!(
        t,
        PolicyType::Homeowners
            | PolicyType::Condo
            | PolicyType::Renters
            | PolicyType::Landlord
            | PolicyType::Flood
    )
}

/// Auto-like lines, plus any policy listing vehicles: a property or umbrella policy's liability
/// is not the bodily-injury or property-damage cover a vehicle rule asks about.
fn may_insure_vehicles(policy: &Policy) -> bool {
    !policy.vehicles.is_empty()
        || matches!(
            policy.policy_type,
            PolicyType::Auto | PolicyType::Motorcycle | PolicyType::Other(_)
        )
}

struct Context<'a> {
    policies: &'a [Policy],
    /// Policies of the set's types (all policies without a `policy_type_in` rule).
    candidates: Vec<&'a Policy>,
    /// What to say when there are no candidates.
    no_candidates: String,
    vins: Vec<String>,
    addresses: Vec<&'a Rule>,
    now: DateTime<Utc>,
}

impl<'a> Context<'a> {
    fn new(set: &'a RequirementSet, policies: &'a [Policy], now: DateTime<Utc>) -> Self {
        let type_rules: Vec<&Vec<PolicyType>> = set
            .rules
            .iter()
            .filter_map(|r| match r {
                Rule::PolicyTypeIn { types } => Some(types),
                _ => None,
            })
            .collect();
        let candidates = policies
            .iter()
            .filter(|p| {
                type_rules
                    .iter()
                    .all(|types| types.contains(&p.policy_type))
            })
            .collect();
        let no_candidates = if policies.is_empty() {
            "no policies on the link".to_owned()
        } else {
            let wanted: Vec<String> = type_rules
                .iter()
                .flat_map(|types| types.iter().map(type_name))
                .collect();
            format!("no {} policy on the link", wanted.join(" or "))
        };
        let vins = set
            .rules
            .iter()
            .filter_map(|r| match r {
                Rule::VinCovered { vin } => Some(normalize_vin(vin)),
                _ => None,
            })
            .collect();
        let addresses = set
            .rules
            .iter()
            .filter(|r| matches!(r, Rule::AddressCovered { .. }))
            .collect();
        Context {
            policies,
            candidates,
            no_candidates,
            vins,
            addresses,
            now,
        }
    }

    fn rule(&self, rule: &Rule) -> Verdict {
        match rule {
            Rule::PolicyActive => any(
                self.candidates
                    .iter()
                    .map(|p| in_force(p, self.now).labeled(&p.external_id))
                    .collect(),
                Verdict::fail(&self.no_candidates),
            ),
            Rule::PolicyTypeIn { types } => any(
                self.policies
                    .iter()
                    .map(|p| {
                        let observed = format!("{}: {}", p.external_id, type_name(&p.policy_type));
                        if types.contains(&p.policy_type) {
                            Verdict::pass(observed)
                        } else {
                            Verdict::fail(observed)
                        }
                    })
                    .collect(),
                Verdict::fail("no policies on the link"),
            ),
            Rule::ExpiresAtLeastDaysAhead { days } => {
                self.per_candidate(|p| expires_ahead(p, *days, self.now))
            }
            Rule::MinBodilyInjury {
                per_person_cents,
                per_accident_cents,
            } => {
                self.per_vehicle(|p, v| bodily_injury(p, v, *per_person_cents, *per_accident_cents))
            }
            Rule::MinPropertyDamage { per_accident_cents } => {
                self.per_vehicle(|p, v| property_damage(p, v, *per_accident_cents))
            }
            Rule::ComprehensiveAndCollision {
                max_deductible_cents,
            } => self.per_vehicle(|p, v| comprehensive_and_collision(p, v, *max_deductible_cents)),
            Rule::InterestedPartyNamed { kind, name } => {
                self.per_candidate(|p| self.party_named(p, *kind, name))
            }
            Rule::VinCovered { vin } => {
                let wanted = normalize_vin(vin);
                self.per_candidate(|p| vin_listed(p, &wanted))
            }
            Rule::AddressCovered { .. } => self.per_candidate(|p| address_covered(p, rule)),
            Rule::Coverage {
                code,
                min_per_person_cents,
                min_per_accident_cents,
                max_deductible_cents,
            } => {
                let bounds = Bounds {
                    per_person: *min_per_person_cents,
                    per_accident: *min_per_accident_cents,
                    max_deductible: *max_deductible_cents,
                };
                if insures_vehicles(code) {
                    self.per_vehicle(|p, v| coverage_within(p, v, code, bounds))
                } else {
                    self.per_candidate(|p| coverage_within(p, None, code, bounds))
                }
            }
        }
    }

    /// Passes when some in-force candidate satisfies `check`.
    fn per_candidate(&self, check: impl Fn(&Policy) -> Verdict) -> Verdict {
        any(
            self.candidates
                .iter()
                .map(|p| gated(in_force(p, self.now), check(p)).labeled(&p.external_id))
                .collect(),
            Verdict::fail(&self.no_candidates),
        )
    }

    /// A vehicle-bound rule: for each named VIN, or for every vehicle of some policy.
    fn per_vehicle(&self, check: impl Fn(&Policy, Option<&Vehicle>) -> Verdict) -> Verdict {
        let eligible: Vec<&Policy> = self
            .candidates
            .iter()
            .copied()
            .filter(|p| may_insure_vehicles(p))
            .collect();
        let no_policy = if self.candidates.is_empty() {
            Verdict::fail(&self.no_candidates)
        } else {
            Verdict::fail("no auto policy on the link")
        };
        let unit = |p: &Policy, v: Option<&Vehicle>| {
            let label = match v {
                Some(v) => format!("{} vehicle {}", p.external_id, vehicle_name(v)),
                None => p.external_id.clone(),
            };
            check(p, v).labeled(&label)
        };
        let gate = |p: &Policy| in_force(p, self.now).labeled(&p.external_id);
        if self.vins.is_empty() {
            return any(
                eligible
                    .iter()
                    .map(|p| {
                        let inner = if p.vehicles.is_empty() {
                            unit(p, None)
                        } else {
                            all(
                                p.vehicles.iter().map(|v| unit(p, Some(v))).collect(),
                                Verdict::fail("no vehicles"),
                            )
                        };
                        gated(gate(p), inner)
                    })
                    .collect(),
                no_policy,
            );
        }
        all(
            self.vins
                .iter()
                .map(|vin| {
                    let per_policy = eligible
                        .iter()
                        .filter_map(|p| {
                            let listed: Vec<&Vehicle> = p
                                .vehicles
                                .iter()
                                .filter(|v| {
                                    v.vin.as_deref().map(normalize_vin).as_ref() == Some(vin)
                                })
                                .collect();
                            (!listed.is_empty()).then(|| {
                                let inner = any(
                                    listed.into_iter().map(|v| unit(p, Some(v))).collect(),
                                    Verdict::fail("not listed"),
                                );
                                gated(gate(p), inner)
                            })
                        })
                        .collect();
                    any(
                        per_policy,
                        Verdict::fail(format!("vehicle {vin} is on no candidate policy")),
                    )
                })
                .collect(),
            no_policy,
        )
    }

    fn party_named(&self, policy: &Policy, kind: PartyKind, name: &str) -> Verdict {
        let wanted = comparable_name(name);
        let kind_name = party_name(kind);
        let verdicts = policy
            .interested_parties
            .iter()
            .filter(|party| party.kind == kind || party.kind == PartyKind::Unclassified)
            .map(|party| {
                let seen_kind = party_name(party.kind);
                let named = match party.name.as_deref() {
                    None => Verdict::unknown(format!("{seen_kind} with no name")),
                    // The right name on a party whose role the data source did not state: it
                    // may well be the wanted party, but a pass would rest on a guess.
                    Some(seen)
                        if comparable_name(seen) == wanted
                            && party.kind == PartyKind::Unclassified =>
                    {
                        Verdict::unknown(format!(
                            "{seen_kind} {seen}, whose role (a {kind_name}?) the data source does not state"
                        ))
                    }
                    Some(seen) if comparable_name(seen) == wanted => {
                        Verdict::pass(format!("{seen_kind} {seen}"))
                    }
                    Some(seen) => Verdict::fail(format!("{seen_kind} {seen}")),
                };
                let scope = self.party_scope(policy, party);
                match (named.result, scope.result) {
                    (RuleResult::Fail, _) | (_, RuleResult::Pass) => named,
                    (_, RuleResult::Fail) => {
                        Verdict::fail(format!("{} {}", named.observed, scope.observed))
                    }
                    _ => Verdict::unknown(format!("{} {}", named.observed, scope.observed)),
                }
            })
            .collect();
        any(verdicts, Verdict::fail(format!("no {kind_name}")))
    }

    /// Whether a party bound to one property is bound to a property the set names.
    fn party_scope(&self, policy: &Policy, party: &InterestedParty) -> Verdict {
        let AppliesTo::Property(id) = &party.applies_to else {
            return Verdict::pass("");
        };
        if let Some(vehicle) = policy.vehicles.iter().find(|v| &v.id == id) {
            if self.vins.is_empty() {
                return Verdict::pass("");
            }
            return match vehicle.vin.as_deref().map(normalize_vin) {
                None => Verdict::unknown(format!("on vehicle {id}, whose VIN is unknown")),
                Some(vin) if self.vins.contains(&vin) => Verdict::pass(""),
                Some(vin) => Verdict::fail(format!("on vehicle {vin}, not a named one")),
            };
        }
        if let Some(dwelling) = policy.dwellings.iter().find(|d| &d.id == id) {
            if self.addresses.is_empty() {
                return Verdict::pass("");
            }
            let Some(address) = &dwelling.address else {
                return Verdict::unknown(format!("on dwelling {id}, whose address is unknown"));
            };
            let matches: Vec<Verdict> = self
                .addresses
                .iter()
                .map(|rule| address_matches(rule, address))
                .collect();
            return match any(matches, Verdict::pass("")).result {
                RuleResult::Pass => Verdict::pass(""),
                RuleResult::Unknown => Verdict::unknown(format!(
                    "on dwelling {}, which may not be a named one",
                    show_address(address)
                )),
                RuleResult::Fail => Verdict::fail(format!(
                    "on dwelling {}, not a named one",
                    show_address(address)
                )),
            };
        }
        Verdict::pass("")
    }
}

fn vehicle_name(v: &Vehicle) -> String {
    v.vin
        .as_deref()
        .map(normalize_vin)
        .unwrap_or_else(|| v.id.clone())
}

fn expires_ahead(policy: &Policy, days: u32, now: DateTime<Utc>) -> Verdict {
    // Validation keeps `days` to ten years, but a stored set is read back without it and `now`
    // is any time. `None`: the term would have to end past chrono's last instant; none does.
    let required = now.checked_add_signed(TimeDelta::days(i64::from(days)));
    let describe = |verb: &str, end: DateTime<Utc>| {
        format!("{verb} {}, {} days ahead", day(end), (end - now).num_days())
    };
    let cancels = policy.cancelled_date;
    let end = [policy.expiration_date, cancels]
        .into_iter()
        .flatten()
        .min();
    let verb = |end: DateTime<Utc>| {
        if Some(end) == cancels && Some(end) != policy.expiration_date {
            "cancels"
        } else {
            "expires"
        }
    };
    if let Some(end) = end.filter(|end| required.is_none_or(|required| *end < required)) {
        return Verdict::fail(describe(verb(end), end));
    }
    if policy.expiration_date.is_none() {
        return Verdict::unknown("no expiration date");
    }
    if policy.status == PolicyStatus::PendingCancellation && cancels.is_none() {
        return Verdict::unknown("pending cancellation with no date");
    }
    match end {
        Some(end) => Verdict::pass(describe(verb(end), end)),
        None => Verdict::unknown("no expiration date"),
    }
}

/// The coverages of `codes` bound to this vehicle (or, with no vehicle, anywhere on the policy):
/// the ones in force, whether a declined one was seen, and whether the unit lists any coverage.
fn coverages_for<'p>(
    policy: &'p Policy,
    vehicle: Option<&Vehicle>,
    codes: &[CoverageCode],
) -> (Vec<&'p Coverage>, bool, bool) {
    let on_unit: Vec<&Coverage> = policy
        .coverages
        .iter()
        .filter(|c| match (&c.applies_to, vehicle) {
            (AppliesTo::AllProperties, _) | (_, None) => true,
            (AppliesTo::Property(id), Some(v)) => *id == v.id,
        })
        .collect();
    let any_listed = !on_unit.is_empty();
    let of_code: Vec<&Coverage> = on_unit
        .into_iter()
        .filter(|c| codes.contains(&c.code))
        .collect();
    let declined = of_code.iter().any(|c| c.declined);
    let active = of_code.into_iter().filter(|c| !c.declined).collect();
    (active, declined, any_listed)
}

/// What to say when no coverage of the wanted codes is in force.
fn missing(declined: bool, any_listed: bool, what: &str) -> Verdict {
    if declined {
        Verdict::fail(format!("{what} declined"))
    } else if any_listed {
        Verdict::fail(format!("no {what}"))
    } else {
        Verdict::unknown("no coverages reported")
    }
}

fn limit(value: Option<Limit>) -> String {
    value.map_or_else(|| "?".to_owned(), |l| l.to_string())
}

/// Whether a limit is known to fall short of `required`; an unknown one is not.
fn short(value: Option<Limit>, required: i64) -> bool {
    value.is_some_and(|l| !l.meets(required))
}

fn csl_limit(c: &Coverage) -> Option<Limit> {
    c.limit_per_accident.or(c.limit_per_person)
}

/// An inferred CSL may instead be a lone limit of its first coverage, so it cannot pass on its
/// own; when it falls short, every reading of it does (the caller's per-accident minimum is
/// the larger one), so it may fail.
fn csl(c: &Coverage, required: i64) -> Verdict {
    let value = csl_limit(c);
    let what = if c.inferred {
        "combined_single_limit (inferred)"
    } else {
        "combined_single_limit"
    };
    Verdict::from_checks(
        short(value, required),
        value.is_none() || c.inferred,
        format!("{what} {} cents", limit(value)),
    )
}

fn bodily_injury(
    policy: &Policy,
    vehicle: Option<&Vehicle>,
    person: i64,
    accident: i64,
) -> Verdict {
    let (active, declined, any_listed) = coverages_for(
        policy,
        vehicle,
        &[
            CoverageCode::BodilyInjury,
            CoverageCode::CombinedSingleLimit,
        ],
    );
    if active.is_empty() {
        return missing(declined, any_listed, "bodily_injury");
    }
    any(
        active
            .into_iter()
            .map(|c| match c.code {
                CoverageCode::CombinedSingleLimit => csl(c, person.max(accident)),
                _ => {
                    let (pp, pa) = (c.limit_per_person, c.limit_per_accident);
                    Verdict::from_checks(
                        short(pp, person) || short(pa, accident),
                        pp.is_none() || pa.is_none(),
                        format!("bodily_injury {}/{} cents", limit(pp), limit(pa)),
                    )
                }
            })
            .collect(),
        Verdict::fail("no bodily_injury"),
    )
}

fn property_damage(policy: &Policy, vehicle: Option<&Vehicle>, accident: i64) -> Verdict {
    let (active, declined, any_listed) = coverages_for(
        policy,
        vehicle,
        &[
            CoverageCode::PropertyDamage,
            CoverageCode::CombinedSingleLimit,
        ],
    );
    if active.is_empty() {
        return missing(declined, any_listed, "property_damage");
    }
    any(
        active
            .into_iter()
            .map(|c| match c.code {
                CoverageCode::CombinedSingleLimit => csl(c, accident),
                _ => {
                    let pa = c.limit_per_accident;
                    Verdict::from_checks(
                        short(pa, accident),
                        pa.is_none(),
                        format!("property_damage {} cents", limit(pa)),
                    )
                }
            })
            .collect(),
        Verdict::fail("no property_damage"),
    )
}

fn comprehensive_and_collision(
    policy: &Policy,
    vehicle: Option<&Vehicle>,
    max_deductible: i64,
) -> Verdict {
    let one = |code: CoverageCode, what: &str| {
        let (active, declined, any_listed) = coverages_for(policy, vehicle, &[code]);
        if active.is_empty() {
            return missing(declined, any_listed, what);
        }
        any(
            active
                .into_iter()
                .map(|c| {
                    let deductible = c.deductible_cents;
                    Verdict::from_checks(
                        deductible.is_some_and(|d| d > max_deductible),
                        deductible.is_none(),
                        format!("{what} deductible {} cents", cents(deductible)),
                    )
                })
                .collect(),
            Verdict::fail(format!("no {what}")),
        )
    };
    let (_, _, any_listed) = coverages_for(policy, vehicle, &[]);
    if !any_listed {
        return missing(false, false, "");
    }
    all(
        vec![
            one(CoverageCode::Comprehensive, "comprehensive"),
            one(CoverageCode::Collision, "collision"),
        ],
        Verdict::fail("no comprehensive or collision"),
    )
}

/// The bounds of a `coverage` rule; `None` asks nothing of that value.
#[derive(Clone, Copy)]
struct Bounds {
    per_person: Option<i64>,
    per_accident: Option<i64>,
    max_deductible: Option<i64>,
}

/// The codes whose coverage belongs to a vehicle, so a rule on them reads every covered vehicle
/// (as the bodily-injury rule does) rather than the policy as a whole.
fn insures_vehicles(code: &CoverageCode) -> bool {
    use CoverageCode::*;
    matches!(
        code,
        BodilyInjury
            | PropertyDamage
            | CombinedSingleLimit
            | UninsuredMotoristBodilyInjury
            | UninsuredMotoristPropertyDamage
            | UnderinsuredMotoristBodilyInjury
            | UnderinsuredMotoristPropertyDamage
            | Comprehensive
            | Collision
            | MedicalPayments
            | PersonalInjuryProtection
            | RentalReimbursement
            | Roadside
    )
}

/// One coverage against a `coverage` rule's bounds. A bound whose value the vendor did not give
/// is UNKNOWN, never a pass; an inferred coverage (Axle's combined single limit read off equal
/// BI and PD limits) cannot pass on its own, as in the bodily-injury rule.
fn coverage_within(
    policy: &Policy,
    vehicle: Option<&Vehicle>,
    code: &CoverageCode,
    bounds: Bounds,
) -> Verdict {
    let what = code.name();
    let (active, declined, any_listed) = coverages_for(policy, vehicle, std::slice::from_ref(code));
    if active.is_empty() {
        return missing(declined, any_listed, &what);
    }
    any(
        active
            .into_iter()
            .map(|c| {
                let (pp, pa, ded) = (c.limit_per_person, c.limit_per_accident, c.deductible_cents);
                let fails = bounds.per_person.is_some_and(|min| short(pp, min))
                    || bounds.per_accident.is_some_and(|min| short(pa, min))
                    || bounds
                        .max_deductible
                        .is_some_and(|max| ded.is_some_and(|d| d > max));
                let unknown = (bounds.per_person.is_some() && pp.is_none())
                    || (bounds.per_accident.is_some() && pa.is_none())
                    || (bounds.max_deductible.is_some() && ded.is_none())
                    || c.inferred;
                let mut seen = format!("{what} {}/{} cents", limit(pp), limit(pa));
                if bounds.max_deductible.is_some() {
                    seen.push_str(&format!(" deductible {} cents", cents(ded)));
                }
                if c.inferred {
                    seen.push_str(" (inferred)");
                }
                Verdict::from_checks(fails, unknown, seen)
            })
            .collect(),
        Verdict::fail(format!("no {what}")),
    )
}

fn vin_listed(policy: &Policy, wanted: &str) -> Verdict {
    any(
        policy
            .vehicles
            .iter()
            .map(|v| match v.vin.as_deref().map(normalize_vin) {
                None => Verdict::unknown(format!("vehicle {} with no VIN", v.id)),
                Some(vin) if vin == wanted => Verdict::pass(format!("vehicle {vin}")),
                Some(vin) => Verdict::fail(format!("vehicle {vin}")),
            })
            .collect(),
        Verdict::fail("no vehicles"),
    )
}

fn address_covered(policy: &Policy, rule: &Rule) -> Verdict {
    let mut verdicts: Vec<Verdict> = policy
        .dwellings
        .iter()
        .map(|d| match &d.address {
            None => Verdict::unknown(format!("dwelling {} with no address", d.id)),
            Some(address) => address_matches(rule, address),
        })
        .collect();
    if policy.dwellings.is_empty() && is_property_line(&policy.policy_type) {
        verdicts.push(match &policy.address {
            None => Verdict::unknown("no address"),
            Some(address) => address_matches(rule, address),
        });
    }
    any(verdicts, Verdict::fail("no insured address"))
}

fn show_address(a: &Address) -> String {
    let parts: Vec<&str> = [&a.line1, &a.line2, &a.city, &a.state, &a.postal_code]
        .into_iter()
        .filter_map(|p| p.as_deref().map(str::trim).filter(|s| !s.is_empty()))
        .collect();
    if parts.is_empty() {
        "(empty address)".to_owned()
    } else {
        parts.join(", ")
    }
}

fn address_matches(rule: &Rule, seen: &Address) -> Verdict {
    let Rule::AddressCovered {
        line1,
        city,
        state,
        postal_code,
    } = rule
    else {
        return Verdict::fail("not an address rule");
    };
    // Each part: Some(true) matches, Some(false) differs, None could not be compared.
    let line1_matches = seen.line1.as_deref().map(|seen_line1| {
        let wanted = normalize_words(line1);
        let with_line2 = seen
            .line2
            .as_deref()
            .map(|l2| normalize_words(&format!("{seen_line1} {l2}")));
        wanted == normalize_words(seen_line1) || Some(&wanted) == with_line2.as_ref()
    });
    let part =
        |wanted: Option<&String>, observed: Option<&String>, same: fn(&str, &str) -> bool| {
            wanted.map(|w| observed.map(|o| same(w, o)))
        };
    let parts = [
        Some(line1_matches),
        part(city.as_ref(), seen.city.as_ref(), |w, o| {
            normalize_words(w) == normalize_words(o)
        }),
        part(state.as_ref(), seen.state.as_ref(), |w, o| {
            normalize_state(w) == normalize_state(o)
        }),
        part(
            postal_code.as_ref(),
            seen.postal_code.as_ref(),
            postal_codes_match,
        ),
    ];
    let asked: Vec<Option<bool>> = parts.into_iter().flatten().collect();
    let fail = asked.contains(&Some(false));
    let unknown = asked.contains(&None);
    Verdict::from_checks(fail, unknown, format!("address {}", show_address(seen)))
}

/// Word-by-word, case and punctuation ignored, common abbreviations folded and unit words
/// dropped, so `123 Main Street, Apt. #4B` and `123 MAIN ST 4B` compare equal.
fn normalize_words(text: &str) -> String {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .filter(|w| !matches!(w.as_str(), "apt" | "apartment" | "unit" | "ste" | "suite"))
        .map(|w| abbreviation(&w).map_or(w, str::to_owned))
        .collect()
}

fn abbreviation(word: &str) -> Option<&'static str> {
    Some(match word {
        "street" | "str" => "st",
        "avenue" | "av" => "ave",
        "road" => "rd",
        "drive" => "dr",
        "boulevard" => "blvd",
        "lane" => "ln",
        "court" => "ct",
        "place" => "pl",
        "terrace" => "ter",
        "circle" => "cir",
        "highway" => "hwy",
        "parkway" => "pkwy",
        "square" => "sq",
        "trail" => "trl",
        "north" => "n",
        "south" => "s",
        "east" => "e",
        "west" => "w",
        "northeast" => "ne",
        "northwest" => "nw",
        "southeast" => "se",
        "southwest" => "sw",
        "saint" => "st",
        "mount" => "mt",
        "fort" => "ft",
        _ => return None,
    })
}

const STATES: [(&str, &str); 52] = [
    ("alabama", "al"),
    ("alaska", "ak"),
    ("arizona", "az"),
    ("arkansas", "ar"),
    ("california", "ca"),
    ("colorado", "co"),
    ("connecticut", "ct"),
    ("delaware", "de"),
    ("districtofcolumbia", "dc"),
    ("florida", "fl"),
    ("georgia", "ga"),
    ("hawaii", "hi"),
    ("idaho", "id"),
    ("illinois", "il"),
    ("indiana", "in"),
    ("iowa", "ia"),
    ("kansas", "ks"),
    ("kentucky", "ky"),
    ("louisiana", "la"),
    ("maine", "me"),
    ("maryland", "md"),
    ("massachusetts", "ma"),
    ("michigan", "mi"),
    ("minnesota", "mn"),
    ("mississippi", "ms"),
    ("missouri", "mo"),
    ("montana", "mt"),
    ("nebraska", "ne"),
    ("nevada", "nv"),
    ("newhampshire", "nh"),
    ("newjersey", "nj"),
    ("newmexico", "nm"),
    ("newyork", "ny"),
    ("northcarolina", "nc"),
    ("northdakota", "nd"),
    ("ohio", "oh"),
    ("oklahoma", "ok"),
    ("oregon", "or"),
    ("pennsylvania", "pa"),
    ("puertorico", "pr"),
    ("rhodeisland", "ri"),
    ("southcarolina", "sc"),
    ("southdakota", "sd"),
    ("tennessee", "tn"),
    ("texas", "tx"),
    ("utah", "ut"),
    ("vermont", "vt"),
    ("virginia", "va"),
    ("washington", "wa"),
    ("westvirginia", "wv"),
    ("wisconsin", "wi"),
    ("wyoming", "wy"),
];

/// A US state as its two-letter code whether written as code or name; anything else as is.
fn normalize_state(state: &str) -> String {
    let plain = comparable_name(state);
    STATES
        .iter()
        .find(|(name, _)| *name == plain)
        .map_or(plain, |(_, code)| (*code).to_owned())
}

fn normalize_postal(code: &str) -> String {
    comparable_name(code)
}

/// ZIP and ZIP+4 name the same place, so five leading digits on both sides are enough.
fn postal_codes_match(wanted: &str, seen: &str) -> bool {
    // By characters, not bytes: a postal code is caller text and may hold any character
    // (slicing `[..5]` once cut inside "1234é" and panicked the inbox worker).
    let zip5 = |code: &str| {
        let leading: String = normalize_postal(code).chars().take(5).collect();
        (leading.chars().count() == 5 && leading.chars().all(|c| c.is_ascii_digit()))
            .then_some(leading)
    };
    match (zip5(wanted), zip5(seen)) {
        (Some(w), Some(s)) => w == s,
        _ => normalize_postal(wanted) == normalize_postal(seen),
    }
}

// ---------------------------------------------------------------------------------------------
// Transitions

/// Which event, if any, a new evaluation calls for, given the overall status of the previous
/// evaluation of the same set on the same link (`None` when there was none, or when a
/// different set was attached since).
///
/// Events speak of met versus not met: Unknown counts as not met, because missing data must
/// never read as a pass. So Met → Unknown emits `policy.requirements_unmet` (its outcomes carry
/// no Fail, only Unknown), Unknown → Met emits `policy.requirements_met`, and Unmet ⇄ Unknown
/// emits nothing: the caller was already told the set is not met. The first evaluation always
/// emits, met or not, so a caller learns where a new link stands.
pub fn requirements_transition(
    previous: Option<OverallStatus>,
    current: OverallStatus,
) -> Option<EventKind> {
    let met = |status: OverallStatus| status == OverallStatus::Met;
    if previous.is_some_and(|p| met(p) == met(current)) {
        return None;
    }
    Some(if met(current) {
        EventKind::RequirementsMet
    } else {
        EventKind::RequirementsUnmet
    })
}

/// The event payload for [`requirements_transition`], carrying every rule's outcome.
pub fn transition_event(
    set: &RequirementSet,
    previous: Option<OverallStatus>,
    evaluation: &Evaluation,
) -> Option<EventPayload> {
    let requirement_set = set.name.clone();
    let outcomes = evaluation.outcomes.clone();
    match requirements_transition(previous, evaluation.status)? {
        EventKind::RequirementsMet => Some(EventPayload::RequirementsMet {
            requirement_set,
            outcomes,
        }),
        _ => Some(EventPayload::RequirementsUnmet {
            requirement_set,
            outcomes,
        }),
    }
}

// ---------------------------------------------------------------------------------------------
// Staleness

/// Whether a link's data is older than `window` (for example the provider's
/// `Capabilities::expected_refresh_interval`). A link that never refreshed counts from when it
/// was linked, and so does one whose vendor refresh time predates the link (data from an earlier
/// connection says nothing about this one). A refresh time in the future (clock skew) is fresh.
pub fn is_stale(
    last_refreshed_at: Option<DateTime<Utc>>,
    linked_at: DateTime<Utc>,
    window: std::time::Duration,
    now: DateTime<Utc>,
) -> bool {
    let since = last_refreshed_at.map_or(linked_at, |at| at.max(linked_at));
    // A window too large for chrono can never have passed.
    let Ok(window) = TimeDelta::from_std(window) else {
        return false;
    };
    now.signed_duration_since(since) > window
}

/// What to do about `link.stale`, given whether it was already emitted for the current stale
/// period (a flag the engine keeps with the link) and whether the link is stale now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StaleAction {
    Nothing,
    /// Emit `link.stale` and set the flag.
    Emit,
    /// Fresh data arrived: clear the flag, so the next stale period emits again. Fresh data has
    /// its own event (`data.refreshed`), so clearing emits nothing.
    Clear,
}

pub fn stale_action(already_emitted: bool, stale: bool) -> StaleAction {
    match (already_emitted, stale) {
        (false, true) => StaleAction::Emit,
        (true, false) => StaleAction::Clear,
        _ => StaleAction::Nothing,
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use serde_json::json;

    use super::*;
    use crate::policy::{Carrier, Dwelling};

    const VIN: &str = "1HGCM82633A004352";
    const OTHER_VIN: &str = "2T1BURHE0JC074321";

    fn at(y: i32, m: u32, d: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, 0, 0, 0).unwrap()
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 1, 15, 12, 0, 0).unwrap()
    }

    fn coverage(
        code: CoverageCode,
        pp: Option<i64>,
        pa: Option<i64>,
        ded: Option<i64>,
    ) -> Coverage {
        Coverage {
            limit_per_person: pp.map(Limit::Cents),
            limit_per_accident: pa.map(Limit::Cents),
            deductible_cents: ded,
            ..Coverage::new(code, "X")
        }
    }

    fn on(mut c: Coverage, property: &str) -> Coverage {
        c.applies_to = AppliesTo::Property(property.into());
        c
    }

    fn vehicle(id: &str, vin: Option<&str>) -> Vehicle {
        Vehicle {
            id: id.into(),
            vin: vin.map(str::to_owned),
            year: Some(2020),
            make: None,
            model: None,
            body_style: None,
            garaging_address: None,
        }
    }

    fn party(kind: PartyKind, name: Option<&str>, applies_to: AppliesTo) -> InterestedParty {
        InterestedParty {
            kind,
            name: name.map(str::to_owned),
            address: None,
            loan_number: None,
            applies_to,
        }
    }

    fn address(line1: &str, line2: Option<&str>, city: &str, state: &str, zip: &str) -> Address {
        Address {
            line1: Some(line1.into()),
            line2: line2.map(str::to_owned),
            city: Some(city.into()),
            state: Some(state.into()),
            postal_code: Some(zip.into()),
            country: Some("US".into()),
        }
    }

    /// An active auto policy that meets every vehicle rule of `lender()`.
    fn auto(id: &str) -> Policy {
        Policy {
            external_id: id.into(),
            policy_type: PolicyType::Auto,
            carrier: Carrier {
                id: "acme".into(),
                name: None,
            },
            policy_number: None,
            status: PolicyStatus::Active,
            effective_date: Some(at(2024, 7, 1)),
            expiration_date: Some(at(2025, 7, 1)),
            cancelled_date: None,
            premium_cents: Some(100_000),
            address: Some(address("9 Elm Rd", None, "Peoria", "IL", "61602")),
            vehicles: vec![vehicle("v1", Some(VIN))],
            dwellings: vec![],
            coverages: vec![
                coverage(
                    CoverageCode::BodilyInjury,
                    Some(5_000_000),
                    Some(10_000_000),
                    None,
                ),
                coverage(CoverageCode::PropertyDamage, None, Some(5_000_000), None),
                on(
                    coverage(CoverageCode::Comprehensive, None, None, Some(50_000)),
                    "v1",
                ),
                on(
                    coverage(CoverageCode::Collision, None, None, Some(100_000)),
                    "v1",
                ),
            ],
            insureds: vec![],
            interested_parties: vec![party(
                PartyKind::Lienholder,
                Some("Acme Bank, N.A."),
                AppliesTo::Property("v1".into()),
            )],
            documents: vec![],
        }
    }

    fn home(id: &str) -> Policy {
        Policy {
            external_id: id.into(),
            policy_type: PolicyType::Homeowners,
            address: None,
            vehicles: vec![],
            dwellings: vec![Dwelling {
                id: "d1".into(),
                address: Some(address(
                    "123 Main Street",
                    Some("Apt. #4B"),
                    "Springfield",
                    "Illinois",
                    "62701-1234",
                )),
                replacement_cost_cents: None,
            }],
            coverages: vec![on(
                coverage(
                    CoverageCode::Dwelling,
                    None,
                    Some(30_000_000),
                    Some(100_000),
                ),
                "d1",
            )],
            interested_parties: vec![party(
                PartyKind::Mortgagee,
                Some("First Home Lending LLC"),
                AppliesTo::Property("d1".into()),
            )],
            ..auto(id)
        }
    }

    fn set(rules: Vec<Rule>) -> RequirementSet {
        RequirementSet {
            id: "lender-auto".into(),
            name: "Lender auto".into(),
            rules,
        }
    }

    fn bi(pp: i64, pa: i64) -> Rule {
        Rule::MinBodilyInjury {
            per_person_cents: pp,
            per_accident_cents: pa,
        }
    }

    fn comp_coll(max: i64) -> Rule {
        Rule::ComprehensiveAndCollision {
            max_deductible_cents: max,
        }
    }

    fn lienholder(name: &str) -> Rule {
        Rule::InterestedPartyNamed {
            kind: PartyKind::Lienholder,
            name: name.into(),
        }
    }

    fn vin(vin: &str) -> Rule {
        Rule::VinCovered { vin: vin.into() }
    }

    fn address_rule(
        line1: &str,
        city: Option<&str>,
        state: Option<&str>,
        zip: Option<&str>,
    ) -> Rule {
        Rule::AddressCovered {
            line1: line1.into(),
            city: city.map(str::to_owned),
            state: state.map(str::to_owned),
            postal_code: zip.map(str::to_owned),
        }
    }

    /// Every rule's outcome for `rules` on `policies`.
    fn outcomes(rules: Vec<Rule>, policies: &[Policy]) -> Vec<RuleOutcome> {
        evaluate(&set(rules), policies, now()).outcomes
    }

    /// The outcome of a one-rule set.
    fn one(rule: Rule, policies: &[Policy]) -> RuleOutcome {
        outcomes(vec![rule], policies).remove(0)
    }

    fn result(rule: Rule, policies: &[Policy]) -> RuleResult {
        one(rule, policies).result
    }

    fn observed(outcome: &RuleOutcome) -> &str {
        outcome.observed.as_deref().unwrap_or("")
    }

    fn lender() -> Vec<Rule> {
        vec![
            Rule::PolicyActive,
            Rule::PolicyTypeIn {
                types: vec![PolicyType::Auto],
            },
            Rule::ExpiresAtLeastDaysAhead { days: 30 },
            bi(2_500_000, 5_000_000),
            Rule::MinPropertyDamage {
                per_accident_cents: 2_500_000,
            },
            comp_coll(100_000),
            lienholder("ACME BANK NA"),
            vin(VIN),
        ]
    }

    // --- policy_active / policy_type_in ----------------------------------------------------

    #[test]
    fn policy_active_reads_status_and_term() {
        assert_eq!(result(Rule::PolicyActive, &[auto("p")]), RuleResult::Pass);
        let mut p = auto("p");
        p.status = PolicyStatus::PendingCancellation;
        p.cancelled_date = Some(at(2025, 2, 1));
        assert_eq!(result(Rule::PolicyActive, &[p]), RuleResult::Pass);
        for (status, expected) in [
            (PolicyStatus::Cancelled, RuleResult::Fail),
            (PolicyStatus::Expired, RuleResult::Fail),
            (PolicyStatus::Inactive, RuleResult::Fail),
            (PolicyStatus::Removed, RuleResult::Fail),
            (PolicyStatus::Unknown, RuleResult::Unknown),
            (PolicyStatus::Unverified, RuleResult::Unknown),
        ] {
            let mut p = auto("p");
            p.status = status;
            let outcome = one(Rule::PolicyActive, &[p]);
            assert_eq!(outcome.result, expected, "{status}");
            assert_eq!(observed(&outcome), format!("p: status {status}"));
        }
    }

    #[test]
    fn a_policy_not_yet_effective_fails_and_an_active_one_past_its_term_is_unknown() {
        let mut future = auto("p");
        future.effective_date = Some(at(2025, 3, 1));
        let outcome = one(Rule::PolicyActive, &[future]);
        assert_eq!(outcome.result, RuleResult::Fail);
        assert_eq!(observed(&outcome), "p: status active, effective 2025-03-01");

        let mut lapsed = auto("p");
        lapsed.expiration_date = Some(at(2025, 1, 1));
        let outcome = one(Rule::PolicyActive, &[lapsed]);
        assert_eq!(outcome.result, RuleResult::Unknown);
        assert_eq!(
            observed(&outcome),
            "p: status active but the term ended 2025-01-01"
        );
    }

    #[test]
    fn no_policies_fail_every_rule() {
        for rule in lender() {
            let outcome = one(rule.clone(), &[]);
            assert_eq!(outcome.result, RuleResult::Fail, "{}", rule.kind());
            assert_eq!(observed(&outcome), "no policies on the link");
        }
    }

    #[test]
    fn some_in_force_policy_is_enough() {
        let mut cancelled = auto("old");
        cancelled.status = PolicyStatus::Cancelled;
        let outcome = one(Rule::PolicyActive, &[cancelled.clone(), auto("new")]);
        assert_eq!(outcome.result, RuleResult::Pass);
        assert_eq!(observed(&outcome), "new: status active");

        let mut unknown = auto("unk");
        unknown.status = PolicyStatus::Unknown;
        let outcome = one(Rule::PolicyActive, &[cancelled, unknown]);
        assert_eq!(outcome.result, RuleResult::Unknown);
        assert_eq!(
            observed(&outcome),
            "old: status cancelled; unk: status unknown"
        );
    }

    #[test]
    fn policy_type_in_passes_on_a_listed_type_and_scopes_the_other_rules() {
        let types = |t: Vec<PolicyType>| Rule::PolicyTypeIn { types: t };
        assert_eq!(
            result(
                types(vec![PolicyType::Auto, PolicyType::Motorcycle]),
                &[auto("a")]
            ),
            RuleResult::Pass
        );
        let outcome = one(types(vec![PolicyType::Renters]), &[auto("a"), home("h")]);
        assert_eq!(outcome.result, RuleResult::Fail);
        assert_eq!(observed(&outcome), "a: auto; h: homeowners");
        assert_eq!(
            result(
                types(vec![PolicyType::Other("boat".into())]),
                &[Policy {
                    policy_type: PolicyType::Other("boat".into()),
                    ..auto("b")
                }]
            ),
            RuleResult::Pass
        );

        // The active homeowners policy does not make the cancelled auto one count.
        let mut cancelled = auto("a");
        cancelled.status = PolicyStatus::Cancelled;
        let out = outcomes(
            vec![types(vec![PolicyType::Auto]), Rule::PolicyActive],
            &[cancelled, home("h")],
        );
        assert_eq!(out[0].result, RuleResult::Pass);
        assert_eq!(out[1].result, RuleResult::Fail);
        assert_eq!(observed(&out[1]), "a: status cancelled");

        let out = outcomes(
            vec![types(vec![PolicyType::Renters]), Rule::PolicyActive],
            &[home("h")],
        );
        assert_eq!(observed(&out[1]), "no renters policy on the link");
    }

    // --- expiration -------------------------------------------------------------------------

    #[test]
    fn expiration_days_ahead() {
        let days = |d| Rule::ExpiresAtLeastDaysAhead { days: d };
        let outcome = one(days(30), &[auto("p")]);
        assert_eq!(outcome.result, RuleResult::Pass);
        assert_eq!(observed(&outcome), "p: expires 2025-07-01, 166 days ahead");
        let outcome = one(days(200), &[auto("p")]);
        assert_eq!(outcome.result, RuleResult::Fail);
        assert_eq!(observed(&outcome), "p: expires 2025-07-01, 166 days ahead");
        assert_eq!(result(days(0), &[auto("p")]), RuleResult::Pass);

        let mut open = auto("p");
        open.expiration_date = None;
        let outcome = one(days(30), &[open]);
        assert_eq!(outcome.result, RuleResult::Unknown);
        assert_eq!(observed(&outcome), "p: no expiration date");
    }

    /// Found by `tests/fuzz_requirements.rs`: `now + days` past chrono's range panicked the
    /// worker evaluating a stored set read back without validation.
    #[test]
    fn days_ahead_past_the_last_representable_date_fail_without_a_panic() {
        let outcome = one(
            Rule::ExpiresAtLeastDaysAhead { days: u32::MAX },
            &[auto("p")],
        );
        assert_eq!(outcome.result, RuleResult::Fail);
        assert_eq!(observed(&outcome), "p: expires 2025-07-01, 166 days ahead");
        let mut forever = auto("p");
        forever.expiration_date = Some(DateTime::<Utc>::MAX_UTC);
        let set = set(vec![Rule::ExpiresAtLeastDaysAhead { days: 30 }]);
        let late = DateTime::<Utc>::MAX_UTC - TimeDelta::days(1);
        forever.effective_date = Some(late);
        let evaluation = evaluate(&set, &[forever], late);
        assert_eq!(evaluation.outcomes[0].result, RuleResult::Fail);
    }

    #[test]
    fn a_scheduled_cancellation_ends_the_term_early() {
        let days = Rule::ExpiresAtLeastDaysAhead { days: 30 };
        let mut pending = auto("p");
        pending.status = PolicyStatus::PendingCancellation;
        pending.cancelled_date = Some(at(2025, 2, 1));
        let outcome = one(days.clone(), &[pending.clone()]);
        assert_eq!(outcome.result, RuleResult::Fail);
        assert_eq!(observed(&outcome), "p: cancels 2025-02-01, 16 days ahead");

        pending.cancelled_date = None;
        let outcome = one(days.clone(), &[pending]);
        assert_eq!(outcome.result, RuleResult::Unknown);
        assert_eq!(observed(&outcome), "p: pending cancellation with no date");

        // A known shortfall decides even when the status is unknown.
        let mut unknown = auto("p");
        unknown.status = PolicyStatus::Unknown;
        unknown.expiration_date = Some(at(2025, 1, 20));
        assert_eq!(result(days.clone(), &[unknown.clone()]), RuleResult::Fail);
        unknown.expiration_date = Some(at(2026, 1, 20));
        let outcome = one(days, &[unknown]);
        assert_eq!(outcome.result, RuleResult::Unknown);
        assert_eq!(
            observed(&outcome),
            "p: status unknown; expires 2026-01-20, 369 days ahead"
        );
    }

    // --- bodily injury / property damage ----------------------------------------------------

    #[test]
    fn bodily_injury_limits() {
        let outcome = one(bi(2_500_000, 5_000_000), &[auto("p")]);
        assert_eq!(outcome.result, RuleResult::Pass);
        assert_eq!(
            observed(&outcome),
            "p vehicle 1HGCM82633A004352: bodily_injury 5000000/10000000 cents"
        );
        let outcome = one(bi(10_000_000, 30_000_000), &[auto("p")]);
        assert_eq!(outcome.result, RuleResult::Fail);
        assert_eq!(
            observed(&outcome),
            "p vehicle 1HGCM82633A004352: bodily_injury 5000000/10000000 cents"
        );
        // One limit short is a failure whatever the other is.
        assert_eq!(
            result(bi(5_000_000, 20_000_000), &[auto("p")]),
            RuleResult::Fail
        );
    }

    #[test]
    fn a_missing_limit_is_unknown_never_a_pass() {
        let mut p = auto("p");
        p.coverages[0].limit_per_person = None;
        let outcome = one(bi(2_500_000, 5_000_000), &[p.clone()]);
        assert_eq!(outcome.result, RuleResult::Unknown);
        assert_eq!(
            observed(&outcome),
            "p vehicle 1HGCM82633A004352: bodily_injury ?/10000000 cents"
        );
        // …unless the known part already falls short.
        assert_eq!(
            result(bi(2_500_000, 20_000_000), &[p.clone()]),
            RuleResult::Fail
        );

        p.coverages[1].limit_per_accident = None;
        let pd = Rule::MinPropertyDamage {
            per_accident_cents: 1,
        };
        assert_eq!(result(pd, &[p]), RuleResult::Unknown);
    }

    #[test]
    fn no_coverages_reported_is_unknown_but_a_missing_coverage_fails() {
        let mut bare = auto("p");
        bare.coverages.clear();
        for rule in [
            bi(1, 1),
            Rule::MinPropertyDamage {
                per_accident_cents: 1,
            },
            comp_coll(1),
        ] {
            let outcome = one(rule, &[bare.clone()]);
            assert_eq!(outcome.result, RuleResult::Unknown);
            assert_eq!(
                observed(&outcome),
                "p vehicle 1HGCM82633A004352: no coverages reported"
            );
        }
        let mut no_bi = auto("p");
        no_bi.coverages.remove(0);
        let outcome = one(bi(1, 1), &[no_bi]);
        assert_eq!(outcome.result, RuleResult::Fail);
        assert_eq!(
            observed(&outcome),
            "p vehicle 1HGCM82633A004352: no bodily_injury"
        );
    }

    #[test]
    fn declined_coverages_do_not_count() {
        let mut p = auto("p");
        p.coverages[0].declined = true;
        let outcome = one(bi(1, 1), &[p.clone()]);
        assert_eq!(outcome.result, RuleResult::Fail);
        assert_eq!(
            observed(&outcome),
            "p vehicle 1HGCM82633A004352: bodily_injury declined"
        );
        p.coverages[3].declined = true;
        let outcome = one(comp_coll(1_000_000), &[p]);
        assert_eq!(outcome.result, RuleResult::Fail);
        assert_eq!(
            observed(&outcome),
            "p vehicle 1HGCM82633A004352: collision declined"
        );
    }

    #[test]
    fn a_combined_single_limit_satisfies_split_minimums_up_to_its_amount() {
        // Axle's shape: BI and PD with the same per-accident limit, no per-person part, plus CSL.
        let mut axle = auto("p");
        axle.coverages[0] = coverage(CoverageCode::BodilyInjury, None, Some(30_000_000), None);
        axle.coverages[1] = coverage(CoverageCode::PropertyDamage, None, Some(30_000_000), None);
        axle.coverages.push(coverage(
            CoverageCode::CombinedSingleLimit,
            None,
            Some(30_000_000),
            None,
        ));
        let outcome = one(bi(10_000_000, 30_000_000), &[axle.clone()]);
        assert_eq!(outcome.result, RuleResult::Pass);
        assert_eq!(
            observed(&outcome),
            "p vehicle 1HGCM82633A004352: combined_single_limit 30000000 cents"
        );
        let pd = |cents| Rule::MinPropertyDamage {
            per_accident_cents: cents,
        };
        assert_eq!(result(pd(10_000_000), &[axle.clone()]), RuleResult::Pass);
        let outcome = one(bi(10_000_000, 50_000_000), &[axle.clone()]);
        assert_eq!(outcome.result, RuleResult::Fail);
        assert_eq!(
            observed(&outcome),
            "p vehicle 1HGCM82633A004352: bodily_injury ?/30000000 cents; \
             combined_single_limit 30000000 cents"
        );

        // Canopy's shape: only the CSL, its limit per person or per accident.
        let mut canopy = auto("p");
        canopy.coverages.drain(0..2);
        canopy.coverages.push(coverage(
            CoverageCode::CombinedSingleLimit,
            Some(50_000_000),
            None,
            None,
        ));
        assert_eq!(
            result(bi(10_000_000, 50_000_000), &[canopy.clone()]),
            RuleResult::Pass
        );
        assert_eq!(result(pd(50_000_001), &[canopy.clone()]), RuleResult::Fail);
        canopy.coverages[2].limit_per_person = None;
        assert_eq!(result(pd(1), &[canopy]), RuleResult::Unknown);
    }

    #[test]
    fn an_unlimited_limit_meets_any_minimum_and_an_unstated_one_stays_unknown() {
        // Canopy's VehicleCoverage: "per_person_unlimited: If true, this coverage has an
        // unlimited per-person limit" (canopy-openapi.json, components.schemas.VehicleCoverage).
        let mut p = auto("p");
        p.coverages[0].limit_per_person = Some(Limit::Unlimited);
        p.coverages[0].limit_per_accident = Some(Limit::Unlimited);
        let outcome = one(bi(100_000_000_000, 100_000_000_000), &[p.clone()]);
        assert_eq!(outcome.result, RuleResult::Pass);
        assert_eq!(
            observed(&outcome),
            "p vehicle 1HGCM82633A004352: bodily_injury unlimited/unlimited cents"
        );
        // Unlimited per person says nothing of the accident limit.
        p.coverages[0].limit_per_accident = None;
        assert_eq!(result(bi(1, 1), &[p.clone()]), RuleResult::Unknown);
        p.coverages[0].limit_per_accident = Some(Limit::Cents(1_000_000));
        assert_eq!(result(bi(1, 2_000_000), &[p.clone()]), RuleResult::Fail);

        let mut p = auto("p");
        p.coverages[1].limit_per_accident = Some(Limit::Unlimited);
        let pd = Rule::MinPropertyDamage {
            per_accident_cents: i64::MAX,
        };
        assert_eq!(result(pd, &[p.clone()]), RuleResult::Pass);
        // A stated CSL may be unlimited too.
        let mut csl = auto("p");
        csl.coverages.drain(0..2);
        let mut unlimited = coverage(CoverageCode::CombinedSingleLimit, None, None, None);
        unlimited.limit_per_accident = Some(Limit::Unlimited);
        csl.coverages.push(unlimited);
        assert_eq!(
            result(bi(50_000_000, 100_000_000), &[csl]),
            RuleResult::Pass
        );
    }

    #[test]
    fn an_inferred_combined_single_limit_never_passes_but_may_fail() {
        // Axle, Coverages: "If the policy returns a combined single limit (CSL) for Bodily Injury
        // and Property Damage, the limit will be set as limitPerAccident for both"; and "If there
        // is only a single limit returned, the limit will be recorded as limitPerAccident"
        // (docs.axle.insure/api-reference/policies/coverages, Auto Policy Coverage Types). Equal
        // BI and PD limits may be either, so a CSL read from them is a guess.
        let mut axle = auto("p");
        axle.coverages[0] = coverage(CoverageCode::BodilyInjury, None, Some(30_000_000), None);
        axle.coverages[1] = coverage(CoverageCode::PropertyDamage, None, Some(30_000_000), None);
        let mut inferred = coverage(
            CoverageCode::CombinedSingleLimit,
            None,
            Some(30_000_000),
            None,
        );
        inferred.inferred = true;
        axle.coverages.push(inferred);

        let outcome = one(bi(10_000_000, 30_000_000), &[axle.clone()]);
        assert_eq!(outcome.result, RuleResult::Unknown);
        assert_eq!(
            observed(&outcome),
            "p vehicle 1HGCM82633A004352: bodily_injury ?/30000000 cents; \
             combined_single_limit (inferred) 30000000 cents"
        );
        // Short of the minimum whichever way it is read.
        assert_eq!(
            result(bi(10_000_000, 50_000_000), &[axle.clone()]),
            RuleResult::Fail
        );
        // The PD limit is stated either way, so PD passes on it, not on the guess.
        let pd = |cents| Rule::MinPropertyDamage {
            per_accident_cents: cents,
        };
        let outcome = one(pd(30_000_000), &[axle.clone()]);
        assert_eq!(outcome.result, RuleResult::Pass);
        assert_eq!(
            observed(&outcome),
            "p vehicle 1HGCM82633A004352: property_damage 30000000 cents"
        );
        assert_eq!(result(pd(50_000_000), &[axle]), RuleResult::Fail);
    }

    // --- comprehensive and collision, vehicles ----------------------------------------------

    #[test]
    fn comprehensive_and_collision_deductibles() {
        let outcome = one(comp_coll(100_000), &[auto("p")]);
        assert_eq!(outcome.result, RuleResult::Pass);
        assert_eq!(
            observed(&outcome),
            "p vehicle 1HGCM82633A004352: comprehensive deductible 50000 cents; \
             collision deductible 100000 cents"
        );
        let outcome = one(comp_coll(50_000), &[auto("p")]);
        assert_eq!(outcome.result, RuleResult::Fail);
        assert_eq!(
            observed(&outcome),
            "p vehicle 1HGCM82633A004352: collision deductible 100000 cents"
        );
        let mut p = auto("p");
        p.coverages[2].deductible_cents = None;
        assert_eq!(
            result(comp_coll(100_000), &[p.clone()]),
            RuleResult::Unknown
        );
        assert_eq!(result(comp_coll(50_000), &[p.clone()]), RuleResult::Fail);
        p.coverages.remove(2);
        let outcome = one(comp_coll(100_000), &[p]);
        assert_eq!(outcome.result, RuleResult::Fail);
        assert_eq!(
            observed(&outcome),
            "p vehicle 1HGCM82633A004352: no comprehensive"
        );
        assert_eq!(result(comp_coll(0), &[auto("p")]), RuleResult::Fail);
    }

    fn two_cars() -> Policy {
        let mut p = auto("p");
        p.vehicles.push(vehicle("v2", Some(OTHER_VIN)));
        p.coverages.push(on(
            coverage(CoverageCode::Collision, None, None, Some(100_000)),
            "v2",
        ));
        p.interested_parties.push(party(
            PartyKind::Lienholder,
            Some("Other Credit Union"),
            AppliesTo::Property("v2".into()),
        ));
        p
    }

    #[test]
    fn without_named_vins_every_vehicle_of_the_policy_must_qualify() {
        let outcome = one(comp_coll(100_000), &[two_cars()]);
        assert_eq!(outcome.result, RuleResult::Fail);
        assert_eq!(
            observed(&outcome),
            "p vehicle 2T1BURHE0JC074321: no comprehensive"
        );
        // Policy-wide coverages apply to each vehicle.
        assert_eq!(result(bi(1, 1), &[two_cars()]), RuleResult::Pass);
    }

    #[test]
    fn named_vins_narrow_vehicle_rules_to_those_vehicles() {
        let out = outcomes(vec![comp_coll(100_000), vin(VIN)], &[two_cars()]);
        assert_eq!(out[0].result, RuleResult::Pass);
        let out = outcomes(vec![comp_coll(100_000), vin(OTHER_VIN)], &[two_cars()]);
        assert_eq!(out[0].result, RuleResult::Fail);
        assert_eq!(
            observed(&out[0]),
            "p vehicle 2T1BURHE0JC074321: no comprehensive"
        );
        // Each named vehicle must qualify.
        let out = outcomes(
            vec![comp_coll(100_000), vin(VIN), vin(OTHER_VIN)],
            &[two_cars()],
        );
        assert_eq!(out[0].result, RuleResult::Fail);
        // A named vehicle on no policy fails the vehicle rules as well as vin_covered.
        let out = outcomes(vec![bi(1, 1), vin("JH4KA7561PC008269")], &[auto("p")]);
        assert_eq!(out[0].result, RuleResult::Fail);
        assert_eq!(
            observed(&out[0]),
            "vehicle JH4KA7561PC008269 is on no candidate policy"
        );
        assert_eq!(out[1].result, RuleResult::Fail);
    }

    #[test]
    fn a_named_vehicle_on_two_policies_needs_one_good_in_force_policy() {
        let mut cancelled = auto("old");
        cancelled.status = PolicyStatus::Cancelled;
        let mut weak = auto("new");
        weak.coverages[0].limit_per_person = Some(Limit::Cents(1_000_000));
        let rules = vec![bi(2_500_000, 5_000_000), vin(VIN)];
        let out = outcomes(rules.clone(), &[cancelled.clone(), weak]);
        assert_eq!(out[0].result, RuleResult::Fail);
        assert_eq!(
            observed(&out[0]),
            "old: status cancelled; \
             new vehicle 1HGCM82633A004352: bodily_injury 1000000/10000000 cents"
        );
        let out = outcomes(rules, &[cancelled, auto("new")]);
        assert_eq!(out[0].result, RuleResult::Pass);
    }

    #[test]
    fn property_policies_do_not_weaken_vehicle_rules() {
        let mut bare_home = home("h");
        bare_home.coverages.clear();
        let mut weak = auto("a");
        weak.coverages[0].limit_per_person = Some(Limit::Cents(1));
        // The homeowners policy, with no coverages at all, would otherwise turn Fail into Unknown.
        let outcome = one(bi(2_500_000, 5_000_000), &[weak, bare_home.clone()]);
        assert_eq!(outcome.result, RuleResult::Fail);
        let outcome = one(bi(1, 1), &[bare_home]);
        assert_eq!(outcome.result, RuleResult::Fail);
        assert_eq!(observed(&outcome), "no auto policy on the link");
    }

    #[test]
    fn a_policy_without_vehicles_is_read_as_a_whole() {
        let mut p = auto("p");
        p.vehicles.clear();
        let outcome = one(comp_coll(100_000), &[p]);
        assert_eq!(outcome.result, RuleResult::Pass);
        assert!(
            observed(&outcome).starts_with("p: comprehensive"),
            "{outcome:?}"
        );
    }

    // --- interested parties ------------------------------------------------------------------

    #[test]
    fn party_names_match_regardless_of_case_spacing_and_punctuation() {
        for name in [
            "ACME BANK NA",
            "acme bank, n.a.",
            "Acme  Bank N. A.",
            "AcmeBank-NA",
        ] {
            let outcome = one(lienholder(name), &[auto("p")]);
            assert_eq!(outcome.result, RuleResult::Pass, "{name}");
            assert_eq!(observed(&outcome), "p: lienholder Acme Bank, N.A.");
        }
        let outcome = one(lienholder("Acme Bank of Ohio"), &[auto("p")]);
        assert_eq!(outcome.result, RuleResult::Fail);
        assert_eq!(observed(&outcome), "p: lienholder Acme Bank, N.A.");
    }

    #[test]
    fn party_kind_must_match_and_a_nameless_party_is_unknown() {
        let lessor = Rule::InterestedPartyNamed {
            kind: PartyKind::Lessor,
            name: "Acme Bank".into(),
        };
        let outcome = one(lessor, &[auto("p")]);
        assert_eq!(outcome.result, RuleResult::Fail);
        assert_eq!(observed(&outcome), "p: no lessor");

        let mut p = auto("p");
        p.interested_parties[0].name = None;
        let outcome = one(lienholder("Acme Bank"), &[p]);
        assert_eq!(outcome.result, RuleResult::Unknown);
        assert_eq!(observed(&outcome), "p: lienholder with no name");

        let mortgagee = Rule::InterestedPartyNamed {
            kind: PartyKind::Mortgagee,
            name: "first home lending, llc".into(),
        };
        assert_eq!(result(mortgagee, &[auto("a"), home("h")]), RuleResult::Pass);

        let mut cancelled = auto("p");
        cancelled.status = PolicyStatus::Cancelled;
        let outcome = one(lienholder("Acme Bank NA"), &[cancelled]);
        assert_eq!(outcome.result, RuleResult::Fail);
        assert_eq!(observed(&outcome), "p: status cancelled");
    }

    #[test]
    fn a_party_bound_to_another_vehicle_than_the_named_ones_does_not_count() {
        let rules = |name: &str, v: &str| vec![lienholder(name), vin(v)];
        let out = outcomes(rules("Acme Bank NA", VIN), &[two_cars()]);
        assert_eq!(out[0].result, RuleResult::Pass);
        let out = outcomes(rules("Acme Bank NA", OTHER_VIN), &[two_cars()]);
        assert_eq!(out[0].result, RuleResult::Fail);
        assert_eq!(
            observed(&out[0]),
            "p: lienholder Acme Bank, N.A. on vehicle 1HGCM82633A004352, not a named one; \
             lienholder Other Credit Union"
        );
        // Without a VIN rule any vehicle's lienholder counts.
        assert_eq!(
            result(lienholder("other credit union"), &[two_cars()]),
            RuleResult::Pass
        );
        // Bound to all properties: always counts.
        let mut p = two_cars();
        p.interested_parties[0].applies_to = AppliesTo::AllProperties;
        let out = outcomes(rules("Acme Bank NA", OTHER_VIN), &[p.clone()]);
        assert_eq!(out[0].result, RuleResult::Pass);
        // Bound to a vehicle whose VIN is unknown: cannot tell.
        p.interested_parties[0].applies_to = AppliesTo::Property("v3".into());
        p.vehicles.push(vehicle("v3", None));
        let out = outcomes(rules("Acme Bank NA", OTHER_VIN), &[p]);
        assert_eq!(out[0].result, RuleResult::Unknown);
    }

    #[test]
    fn a_party_bound_to_another_dwelling_than_the_named_ones_does_not_count() {
        let mortgagee = Rule::InterestedPartyNamed {
            kind: PartyKind::Mortgagee,
            name: "First Home Lending".into(),
        };
        let here = address_rule("123 Main St #4B", None, None, None);
        let elsewhere = address_rule("1 Oak Ave", None, None, None);
        let out = outcomes(vec![mortgagee.clone(), here], &[home("h")]);
        assert_eq!(out[0].result, RuleResult::Fail, "{out:?}");
        // The name differs ("LLC"), so it fails on the name alone; use the exact one.
        let mortgagee = Rule::InterestedPartyNamed {
            kind: PartyKind::Mortgagee,
            name: "First Home Lending, LLC".into(),
        };
        let here = address_rule("123 Main St #4B", None, None, None);
        let out = outcomes(vec![mortgagee.clone(), here], &[home("h")]);
        assert_eq!(out[0].result, RuleResult::Pass);
        let out = outcomes(vec![mortgagee, elsewhere], &[home("h")]);
        assert_eq!(out[0].result, RuleResult::Fail);
        assert!(observed(&out[0]).contains("not a named one"), "{out:?}");
    }

    #[test]
    fn a_party_of_unstated_role_with_the_right_name_is_unknown_for_any_kind() {
        // Axle: "Policy.thirdParties.type has a default value of interest. If you do not find a
        // thirdParty of type lienholder or lessor on the policy, the data source may not have
        // specified this classification" (docs.axle.insure changelog, 2023-05-24; the
        // ThirdParty snippet lists `lienholder lessor interest`). Such a party may be the
        // mortgagee the lender asks for; failing it would call a good policy bad, passing it
        // would trust a guess.
        let mut h = home("h");
        h.interested_parties[0].kind = PartyKind::Unclassified;
        let mortgagee = |name: &str| Rule::InterestedPartyNamed {
            kind: PartyKind::Mortgagee,
            name: name.into(),
        };
        let outcome = one(mortgagee("First Home Lending LLC"), &[h.clone()]);
        assert_eq!(outcome.result, RuleResult::Unknown, "{outcome:?}");
        assert!(
            observed(&outcome).contains("whose role (a mortgagee?) the data source does not state"),
            "{outcome:?}"
        );
        // Another name is no match, whatever its role.
        assert_eq!(
            result(mortgagee("Other Bank"), &[h.clone()]),
            RuleResult::Fail
        );
        // The same for a lienholder on an auto policy.
        let mut a = auto("a");
        a.interested_parties[0].kind = PartyKind::Unclassified;
        assert_eq!(
            result(lienholder("Acme Bank NA"), &[a.clone()]),
            RuleResult::Unknown
        );
        // A stated role still decides: a named lienholder beside it passes.
        a.interested_parties.push(party(
            PartyKind::Lienholder,
            Some("Acme Bank NA"),
            AppliesTo::AllProperties,
        ));
        assert_eq!(result(lienholder("Acme Bank NA"), &[a]), RuleResult::Pass);
    }

    #[test]
    fn a_rule_cannot_ask_for_an_unclassified_party() {
        let err = set(vec![Rule::InterestedPartyNamed {
            kind: PartyKind::Unclassified,
            name: "Acme".into(),
        }])
        .validate()
        .unwrap_err();
        assert_eq!(err.path, "rules[0].interested_party_named.kind");
    }

    // --- any coverage code --------------------------------------------------------------------

    fn cov_rule(code: CoverageCode, pp: Option<i64>, pa: Option<i64>, ded: Option<i64>) -> Rule {
        Rule::Coverage {
            code,
            min_per_person_cents: pp,
            min_per_accident_cents: pa,
            max_deductible_cents: ded,
        }
    }

    #[test]
    fn a_coverage_rule_reads_underinsured_motorists_on_every_vehicle() {
        let uim = |pp, pa| {
            cov_rule(
                CoverageCode::UnderinsuredMotoristBodilyInjury,
                Some(pp),
                Some(pa),
                None,
            )
        };
        let mut p = auto("p");
        // Not listed while other coverages are: the policy lacks it.
        let outcome = one(uim(2_500_000, 5_000_000), &[p.clone()]);
        assert_eq!(outcome.result, RuleResult::Fail);
        assert_eq!(
            observed(&outcome),
            "p vehicle 1HGCM82633A004352: no underinsured_motorist_bodily_injury"
        );
        p.coverages.push(coverage(
            CoverageCode::UnderinsuredMotoristBodilyInjury,
            Some(2_500_000),
            Some(5_000_000),
            None,
        ));
        assert_eq!(
            result(uim(2_500_000, 5_000_000), &[p.clone()]),
            RuleResult::Pass
        );
        assert_eq!(
            result(uim(5_000_000, 10_000_000), &[p.clone()]),
            RuleResult::Fail
        );
        // A limit the vendor did not give cannot pass.
        p.coverages.last_mut().unwrap().limit_per_person = None;
        assert_eq!(
            result(uim(2_500_000, 5_000_000), &[p.clone()]),
            RuleResult::Unknown
        );
        // Unlimited meets any minimum.
        p.coverages.last_mut().unwrap().limit_per_person = Some(Limit::Unlimited);
        p.coverages.last_mut().unwrap().limit_per_accident = Some(Limit::Unlimited);
        assert_eq!(
            result(uim(100_000_000, 200_000_000), &[p.clone()]),
            RuleResult::Pass
        );
        // Declined is a fail, not a missing value.
        p.coverages.last_mut().unwrap().declined = true;
        let outcome = one(uim(1, 1), &[p]);
        assert_eq!(outcome.result, RuleResult::Fail);
        assert!(observed(&outcome).ends_with("declined"), "{outcome:?}");
    }

    #[test]
    fn a_coverage_rule_reads_a_home_deductible_on_the_policy() {
        // Canopy's example home policy carries the property deductible on ALL_PERILS; any
        // in-force candidate with it counts (a home has no vehicles to read per unit).
        let mut h = home("h");
        h.coverages
            .push(coverage(CoverageCode::AllPerils, None, None, Some(250_000)));
        let all_perils = |max| cov_rule(CoverageCode::AllPerils, None, None, Some(max));
        assert_eq!(result(all_perils(250_000), &[h.clone()]), RuleResult::Pass);
        let outcome = one(all_perils(100_000), &[h.clone()]);
        assert_eq!(outcome.result, RuleResult::Fail);
        assert_eq!(
            observed(&outcome),
            "h: all_perils ?/? cents deductible 250000 cents"
        );
        h.coverages.last_mut().unwrap().deductible_cents = None;
        assert_eq!(
            result(all_perils(100_000), &[h.clone()]),
            RuleResult::Unknown
        );
        // A vendor's own code can be asked for too.
        h.coverages.push(coverage(
            CoverageCode::Other("WATER_BACKUP".into()),
            None,
            Some(1_000_000),
            None,
        ));
        let water = cov_rule(
            CoverageCode::Other("WATER_BACKUP".into()),
            None,
            Some(500_000),
            None,
        );
        assert_eq!(result(water, &[h]), RuleResult::Pass);
    }

    #[test]
    fn an_inferred_coverage_never_passes_a_coverage_rule_alone() {
        let mut p = auto("p");
        let mut csl = coverage(
            CoverageCode::CombinedSingleLimit,
            None,
            Some(30_000_000),
            None,
        );
        csl.inferred = true;
        p.coverages.push(csl);
        let rule = cov_rule(
            CoverageCode::CombinedSingleLimit,
            None,
            Some(10_000_000),
            None,
        );
        assert_eq!(result(rule.clone(), &[p.clone()]), RuleResult::Unknown);
        p.coverages.last_mut().unwrap().inferred = false;
        assert_eq!(result(rule, &[p]), RuleResult::Pass);
    }

    #[test]
    fn a_coverage_rule_must_bound_something_sensible() {
        let path = |rule: Rule| set(vec![rule]).validate().unwrap_err().path;
        assert_eq!(
            path(cov_rule(CoverageCode::Dwelling, None, None, None)),
            "rules[0].coverage.code"
        );
        assert_eq!(
            path(cov_rule(CoverageCode::Dwelling, None, Some(0), None)),
            "rules[0].coverage.min_per_accident_cents"
        );
        assert_eq!(
            path(cov_rule(
                CoverageCode::BodilyInjury,
                Some(10),
                Some(5),
                None
            )),
            "rules[0].coverage.min_per_person_cents"
        );
        assert_eq!(
            path(cov_rule(CoverageCode::Collision, None, None, Some(-1))),
            "rules[0].coverage.max_deductible_cents"
        );
        assert_eq!(
            path(cov_rule(
                CoverageCode::Other("  ".into()),
                None,
                None,
                Some(1)
            )),
            "rules[0].coverage.code.other"
        );
        // Two rules on one code would contradict or repeat each other.
        let twice = set(vec![
            cov_rule(CoverageCode::Collision, None, None, Some(100)),
            cov_rule(CoverageCode::Collision, None, None, Some(200)),
        ]);
        assert_eq!(twice.validate().unwrap_err().path, "rules[1].coverage.code");
        // And from JSON, with the field named.
        let err = RequirementSet::from_json(
            r#"{"id": "s", "name": "S", "rules": [{"rule": "coverage", "code": "nope", "max_deductible_cents": 1}]}"#,
        )
        .unwrap_err();
        assert_eq!(err.path, "rules[0].coverage.code");
        let ok = RequirementSet::from_json(
            r#"{"id": "s", "name": "S", "rules": [{"rule": "coverage", "code": {"other": "GAP"}, "min_per_accident_cents": 100}]}"#,
        )
        .unwrap();
        assert_eq!(
            ok.rules[0],
            cov_rule(CoverageCode::Other("GAP".into()), None, Some(100), None)
        );
    }

    // --- VIN ----------------------------------------------------------------------------------

    #[test]
    fn vins_compare_trimmed_and_case_insensitively() {
        let outcome = one(vin("  1hgcm82633a004352 "), &[auto("p")]);
        assert_eq!(outcome.result, RuleResult::Pass);
        assert_eq!(observed(&outcome), "p: vehicle 1HGCM82633A004352");
        let mut lower = auto("p");
        lower.vehicles[0].vin = Some(" 1hgcm82633a004352".into());
        assert_eq!(result(vin(VIN), &[lower]), RuleResult::Pass);

        let outcome = one(vin(OTHER_VIN), &[auto("p")]);
        assert_eq!(outcome.result, RuleResult::Fail);
        assert_eq!(observed(&outcome), "p: vehicle 1HGCM82633A004352");

        let mut unknown = auto("p");
        unknown.vehicles.push(vehicle("v2", None));
        let outcome = one(vin(OTHER_VIN), &[unknown]);
        assert_eq!(outcome.result, RuleResult::Unknown);
        assert_eq!(
            observed(&outcome),
            "p: vehicle 1HGCM82633A004352; vehicle v2 with no VIN"
        );

        let mut cancelled = auto("p");
        cancelled.status = PolicyStatus::Cancelled;
        assert_eq!(result(vin(VIN), &[cancelled]), RuleResult::Fail);
        assert_eq!(result(vin(VIN), &[home("h")]), RuleResult::Fail);
    }

    // --- address ------------------------------------------------------------------------------

    #[test]
    fn addresses_compare_normalized() {
        for rule in [
            address_rule(
                "123 Main St Apt 4B",
                Some("SPRINGFIELD"),
                Some("IL"),
                Some("62701"),
            ),
            address_rule("123 main street #4b", None, Some("illinois"), None),
            // The building, when the caller does not ask for a unit.
            address_rule("123 Main St", Some("Springfield"), None, None),
            address_rule(
                "123 Main St., Unit 4-B",
                Some("Springfield"),
                None,
                Some("62701-1234"),
            ),
        ] {
            let outcome = one(rule.clone(), &[home("h")]);
            assert_eq!(outcome.result, RuleResult::Pass, "{rule:?}");
            assert_eq!(
                observed(&outcome),
                "h: address 123 Main Street, Apt. #4B, Springfield, Illinois, 62701-1234"
            );
        }
        for rule in [
            address_rule("125 Main St Apt 4B", None, None, None),
            address_rule("123 Main St Apt 4B", Some("Chicago"), None, None),
            address_rule("123 Main St Apt 4B", None, Some("WI"), None),
            address_rule("123 Main St Apt 4B", None, None, Some("62702")),
            address_rule("123 Main St Apt 5", None, None, None),
        ] {
            assert_eq!(
                result(rule.clone(), &[home("h")]),
                RuleResult::Fail,
                "{rule:?}"
            );
        }
    }

    #[test]
    fn an_address_part_the_vendor_did_not_give_is_unknown() {
        let rule = address_rule("123 Main St Apt 4B", None, None, Some("62701"));
        let mut h = home("h");
        h.dwellings[0].address.as_mut().unwrap().postal_code = None;
        assert_eq!(result(rule.clone(), &[h.clone()]), RuleResult::Unknown);
        // A part that does not match still decides.
        let wrong_city = address_rule("123 Main St Apt 4B", Some("Chicago"), None, Some("62701"));
        assert_eq!(result(wrong_city, &[h.clone()]), RuleResult::Fail);
        h.dwellings[0].address = None;
        let outcome = one(rule, &[h]);
        assert_eq!(outcome.result, RuleResult::Unknown);
        assert_eq!(observed(&outcome), "h: dwelling d1 with no address");
    }

    #[test]
    fn only_property_lines_cover_their_policy_address() {
        let rule = address_rule("9 Elm Road", Some("Peoria"), Some("IL"), Some("61602"));
        let outcome = one(rule.clone(), &[auto("a")]);
        assert_eq!(outcome.result, RuleResult::Fail);
        assert_eq!(observed(&outcome), "a: no insured address");
        let renters = Policy {
            policy_type: PolicyType::Renters,
            vehicles: vec![],
            ..auto("r")
        };
        assert_eq!(
            result(rule.clone(), &[auto("a"), renters.clone()]),
            RuleResult::Pass
        );
        let no_address = Policy {
            address: None,
            ..renters
        };
        let outcome = one(rule, &[no_address]);
        assert_eq!(outcome.result, RuleResult::Unknown);
        assert_eq!(observed(&outcome), "r: no address");
    }

    // --- overall ------------------------------------------------------------------------------

    #[test]
    fn overall_status_fail_beats_unknown_beats_met() {
        let evaluation = evaluate(&set(lender()), &[auto("p")], now());
        assert_eq!(evaluation.status, OverallStatus::Met, "{evaluation:#?}");
        assert_eq!(evaluation.outcomes.len(), lender().len());
        assert!(
            evaluation
                .outcomes
                .iter()
                .zip(lender())
                .all(|(o, r)| o.rule == r.label() && o.observed.is_some())
        );

        let mut unknown = auto("p");
        unknown.coverages[0].limit_per_accident = None;
        let evaluation = evaluate(&set(lender()), &[unknown.clone()], now());
        assert_eq!(evaluation.status, OverallStatus::Unknown);

        unknown.status = PolicyStatus::Cancelled;
        let evaluation = evaluate(&set(lender()), &[unknown], now());
        assert_eq!(evaluation.status, OverallStatus::Unmet);

        assert_eq!(
            evaluate(&set(vec![]), &[auto("p")], now()).status,
            OverallStatus::Unknown
        );
    }

    #[test]
    fn cancellation_and_coverage_reduction_are_unmet_and_restoring_is_met() {
        let rules = set(lender());
        let mut p = auto("p");
        assert_eq!(
            evaluate(&rules, &[p.clone()], now()).status,
            OverallStatus::Met
        );
        p.coverages[0].limit_per_person = Some(Limit::Cents(1_500_000));
        let evaluation = evaluate(&rules, &[p.clone()], now());
        assert_eq!(evaluation.status, OverallStatus::Unmet);
        let failed: Vec<&str> = evaluation
            .outcomes
            .iter()
            .filter(|o| o.result == RuleResult::Fail)
            .map(|o| o.rule.as_str())
            .collect();
        assert_eq!(failed, ["min_bodily_injury(2500000/5000000 cents)"]);
        p.coverages[0].limit_per_person = Some(Limit::Cents(2_500_000));
        assert_eq!(
            evaluate(&rules, &[p.clone()], now()).status,
            OverallStatus::Met
        );
        p.status = PolicyStatus::Cancelled;
        let evaluation = evaluate(&rules, &[p], now());
        assert_eq!(evaluation.status, OverallStatus::Unmet);
        assert!(
            evaluation
                .outcomes
                .iter()
                .filter(|o| o.rule != "policy_type_in(auto)")
                .all(|o| o.result == RuleResult::Fail)
        );
    }

    #[test]
    fn labels_describe_each_rule() {
        let labels: Vec<String> = [
            Rule::PolicyActive,
            Rule::PolicyTypeIn {
                types: vec![PolicyType::Auto, PolicyType::Other("boat".into())],
            },
            Rule::ExpiresAtLeastDaysAhead { days: 30 },
            bi(1, 2),
            Rule::MinPropertyDamage {
                per_accident_cents: 3,
            },
            comp_coll(4),
            lienholder(" Acme "),
            vin(" 1hgcm82633a004352"),
            address_rule("1 Main St", None, Some("IL"), Some("62701")),
        ]
        .iter()
        .map(Rule::label)
        .collect();
        assert_eq!(
            labels,
            [
                "policy_active",
                "policy_type_in(auto, other:boat)",
                "expires_at_least_days_ahead(30)",
                "min_bodily_injury(1/2 cents)",
                "min_property_damage(3 cents)",
                "comprehensive_and_collision(max deductible 4 cents)",
                "interested_party_named(lienholder \"Acme\")",
                "vin_covered(1HGCM82633A004352)",
                "address_covered(1 Main St, IL, 62701)",
            ]
        );
    }

    // --- validation ---------------------------------------------------------------------------

    fn invalid(rules: Vec<Rule>) -> String {
        set(rules).validate().unwrap_err().to_string()
    }

    #[test]
    fn a_full_set_is_valid() {
        set(lender()).validate().unwrap();
        let mut rules = lender();
        rules.push(lienholder("Other Credit Union"));
        rules.push(Rule::InterestedPartyNamed {
            kind: PartyKind::AdditionalInterest,
            name: "Acme Bank".into(),
        });
        rules.push(vin(OTHER_VIN));
        rules.push(address_rule("1 Main St", Some("Springfield"), None, None));
        rules.push(address_rule("1 Main St", Some("Chicago"), None, None));
        set(rules).validate().unwrap();
    }

    #[test]
    fn validation_names_the_rule_and_field() {
        let mut rules = lender();
        rules[3] = bi(0, 5_000_000);
        assert_eq!(
            invalid(rules),
            "rules[3].min_bodily_injury.per_person_cents: must be positive"
        );
        assert_eq!(
            invalid(vec![Rule::PolicyActive, Rule::PolicyActive, bi(1, -5)]),
            "rules[1].policy_active: a set holds one policy_active rule; rules[0] is one"
        );
        assert_eq!(
            invalid(vec![bi(1, -5)]),
            "rules[0].min_bodily_injury.per_accident_cents: must be positive"
        );
        assert_eq!(
            invalid(vec![bi(6, 5)]),
            "rules[0].min_bodily_injury.per_person_cents: must not exceed per_accident_cents"
        );
        assert_eq!(
            invalid(vec![Rule::MinPropertyDamage {
                per_accident_cents: 0
            }]),
            "rules[0].min_property_damage.per_accident_cents: must be positive"
        );
        assert_eq!(
            invalid(vec![comp_coll(-1)]),
            "rules[0].comprehensive_and_collision.max_deductible_cents: must not be negative"
        );
        assert!(set(vec![comp_coll(0)]).validate().is_ok());
        assert_eq!(
            invalid(vec![Rule::ExpiresAtLeastDaysAhead { days: 3651 }]),
            "rules[0].expires_at_least_days_ahead.days: must be at most 3650"
        );
        assert!(
            set(vec![Rule::ExpiresAtLeastDaysAhead { days: 3650 }])
                .validate()
                .is_ok()
        );
        assert_eq!(
            invalid(vec![Rule::PolicyActive, lienholder("  ")]),
            "rules[1].interested_party_named.name: must not be empty"
        );
        assert_eq!(
            invalid(vec![lienholder("-.-")]),
            "rules[0].interested_party_named.name: must contain a letter or digit"
        );
        assert_eq!(
            invalid(vec![Rule::PolicyTypeIn { types: vec![] }]),
            "rules[0].policy_type_in.types: must not be empty"
        );
        assert_eq!(
            invalid(vec![Rule::PolicyTypeIn {
                types: vec![PolicyType::Auto, PolicyType::Renters, PolicyType::Auto]
            }]),
            "rules[0].policy_type_in.types[2]: duplicates types[0]"
        );
        assert_eq!(
            invalid(vec![Rule::PolicyTypeIn {
                types: vec![PolicyType::Other(" ".into())]
            }]),
            "rules[0].policy_type_in.types[0]: must not be empty"
        );
        assert_eq!(
            invalid(vec![address_rule("1 Main", Some(""), None, None)]),
            "rules[0].address_covered.city: must not be empty"
        );
        assert_eq!(
            invalid(vec![address_rule(" ", None, None, None)]),
            "rules[0].address_covered.line1: must not be empty"
        );
    }

    #[test]
    fn vins_must_be_seventeen_valid_characters() {
        assert!(set(vec![vin(" 1hgcm82633a004352 ")]).validate().is_ok());
        let message = "must be 17 characters of A-H, J-N, P, R-Z and 0-9 (no I, O or Q)";
        for bad in [
            "1HGCM82633A00435",
            "1HGCM82633A0043521",
            "1HGCM82633A00435I",
            "1HGCM82633A00435O",
            "1HGCM82633A00435Q",
            "1HGCM82633A00435-",
            "1HGCM82633A00435é",
        ] {
            assert_eq!(
                invalid(vec![vin(bad)]),
                format!("rules[0].vin_covered.vin: {message}"),
                "{bad}"
            );
        }
        assert_eq!(
            invalid(vec![vin("  ")]),
            "rules[0].vin_covered.vin: must not be empty"
        );
    }

    #[test]
    fn duplicates_that_mean_nothing_are_rejected() {
        assert_eq!(
            invalid(vec![vin(VIN), bi(1, 1), vin(&VIN.to_lowercase())]),
            "rules[2].vin_covered.vin: duplicates rules[0]"
        );
        assert_eq!(
            invalid(vec![
                lienholder("Acme Bank, N.A."),
                lienholder("ACME BANK NA")
            ]),
            "rules[1].interested_party_named.name: duplicates rules[0]"
        );
        assert_eq!(
            invalid(vec![
                address_rule("123 Main Street", None, Some("Illinois"), None),
                address_rule("123 main st", None, Some("IL"), None),
            ]),
            "rules[1].address_covered.line1: duplicates rules[0]"
        );
        assert_eq!(
            invalid(vec![bi(1, 1), bi(2, 2)]),
            "rules[1].min_bodily_injury: a set holds one min_bodily_injury rule; rules[0] is one"
        );
        assert_eq!(
            invalid(vec![
                Rule::ExpiresAtLeastDaysAhead { days: 1 },
                Rule::ExpiresAtLeastDaysAhead { days: 2 }
            ]),
            "rules[1].expires_at_least_days_ahead: a set holds one expires_at_least_days_ahead \
             rule; rules[0] is one"
        );
    }

    #[test]
    fn a_set_needs_an_id_a_name_and_rules() {
        assert_eq!(invalid(vec![]), "rules: must hold at least one rule");
        let mut s = set(vec![Rule::PolicyActive]);
        s.id = String::new();
        assert_eq!(
            s.validate().unwrap_err().to_string(),
            "id: must not be empty"
        );
        s.id = "lender auto".into();
        assert_eq!(
            s.validate().unwrap_err().to_string(),
            "id: must hold only A-Z, a-z, 0-9, '.', '_' and '-' (found ' ')"
        );
        s.id = "x".repeat(MAX_SET_ID_LEN + 1);
        assert_eq!(
            s.validate().unwrap_err().to_string(),
            "id: must be at most 64 characters"
        );
        s.id = "Lender_auto.v2-b".into();
        assert!(s.validate().is_ok());
        s.name = String::new();
        assert_eq!(
            s.validate().unwrap_err().to_string(),
            "name: must not be empty"
        );
        s.name = "n".repeat(MAX_TEXT_LEN + 1);
        assert_eq!(
            s.validate().unwrap_err().to_string(),
            "name: must be at most 256 characters"
        );
        let many: Vec<Rule> = (0..=MAX_RULES)
            .map(|i| lienholder(&format!("bank {i}")))
            .collect();
        assert_eq!(invalid(many), "rules: must hold at most 100 rules");
    }

    // --- JSON ---------------------------------------------------------------------------------

    fn full_set() -> RequirementSet {
        let mut rules = lender();
        rules.push(address_rule("1 Main St", None, Some("IL"), None));
        rules.push(Rule::InterestedPartyNamed {
            kind: PartyKind::AdditionalInterest,
            name: "Fleet Co".into(),
        });
        set(rules)
    }

    #[test]
    fn json_has_a_stable_tagged_snake_case_shape() {
        let value = serde_json::to_value(full_set()).unwrap();
        assert_eq!(
            value,
            json!({
                "id": "lender-auto",
                "name": "Lender auto",
                "rules": [
                    {"rule": "policy_active"},
                    {"rule": "policy_type_in", "types": ["auto"]},
                    {"rule": "expires_at_least_days_ahead", "days": 30},
                    {"rule": "min_bodily_injury", "per_person_cents": 2_500_000,
                     "per_accident_cents": 5_000_000},
                    {"rule": "min_property_damage", "per_accident_cents": 2_500_000},
                    {"rule": "comprehensive_and_collision", "max_deductible_cents": 100_000},
                    {"rule": "interested_party_named", "kind": "lienholder", "name": "ACME BANK NA"},
                    {"rule": "vin_covered", "vin": VIN},
                    {"rule": "address_covered", "line1": "1 Main St", "state": "IL"},
                    {"rule": "interested_party_named", "kind": "additional_interest",
                     "name": "Fleet Co"},
                ]
            })
        );
    }

    #[test]
    fn json_round_trips() {
        let original = full_set();
        let text = original.to_json();
        assert_eq!(RequirementSet::from_json(&text).unwrap(), original);
        assert_eq!(
            serde_json::from_str::<RequirementSet>(&text).unwrap(),
            original
        );
        let other = set(vec![Rule::PolicyTypeIn {
            types: vec![PolicyType::Renters, PolicyType::Other("boat".into())],
        }]);
        assert_eq!(RequirementSet::from_json(&other.to_json()).unwrap(), other);
    }

    fn parse_error(value: Value) -> String {
        RequirementSet::from_json(&value.to_string())
            .unwrap_err()
            .to_string()
    }

    fn with_rules(rules: Value) -> Value {
        json!({"id": "s", "name": "S", "rules": rules})
    }

    #[test]
    fn parsing_names_the_rule_of_an_unknown_kind() {
        let message = parse_error(with_rules(json!([
            {"rule": "policy_active"},
            {"rule": "min_umbrella", "cents": 1}
        ])));
        assert!(
            message.starts_with(
                "rules[1].rule: unknown rule kind `min_umbrella` (expected one of: policy_active, "
            ),
            "{message}"
        );
        assert_eq!(
            parse_error(with_rules(json!([{"kind": "lienholder"}]))),
            "rules[0].rule: is required"
        );
        assert_eq!(
            parse_error(with_rules(json!([{"rule": 3}]))),
            "rules[0].rule: must be a string"
        );
        assert_eq!(
            parse_error(with_rules(json!(["policy_active"]))),
            "rules[0]: must be an object with a `rule` kind"
        );
    }

    #[test]
    fn parsing_names_the_field_at_fault() {
        assert_eq!(
            parse_error(with_rules(json!([
                {"rule": "policy_active"},
                {"rule": "min_bodily_injury", "per_person_cents": 100}
            ]))),
            "rules[1].min_bodily_injury.per_accident_cents: is required"
        );
        assert_eq!(
            parse_error(with_rules(json!([
                {"rule": "min_bodily_injury", "per_person_cents": "lots", "per_accident_cents": 1}
            ]))),
            "rules[0].min_bodily_injury.per_person_cents: invalid type: string \"lots\", \
             expected i64"
        );
        assert_eq!(
            parse_error(with_rules(json!([
                {"rule": "expires_at_least_days_ahead", "days": -1}
            ]))),
            "rules[0].expires_at_least_days_ahead.days: invalid value: integer `-1`, expected u32"
        );
        assert_eq!(
            parse_error(with_rules(json!([
                {"rule": "vin_covered", "vin": VIN, "year": 2020}
            ]))),
            "rules[0].vin_covered.year: unknown field (expected vin)"
        );
        assert_eq!(
            parse_error(with_rules(
                json!([{"rule": "policy_active", "strict": true}])
            )),
            "rules[0].policy_active.strict: unknown field (it takes none)"
        );
        let message = parse_error(with_rules(json!([
            {"rule": "policy_type_in", "types": ["auto", "yacht"]}
        ])));
        assert!(
            message.starts_with("rules[0].policy_type_in.types[1]: unknown variant `yacht`"),
            "{message}"
        );
        let message = parse_error(with_rules(json!([
            {"rule": "interested_party_named", "kind": "loss_payee", "name": "X"}
        ])));
        assert!(
            message.starts_with("rules[0].interested_party_named.kind: unknown variant"),
            "{message}"
        );
        // Optional fields may be null or absent.
        RequirementSet::from_json(
            &with_rules(json!([{"rule": "address_covered", "line1": "1 Main", "city": null}]))
                .to_string(),
        )
        .unwrap();
    }

    #[test]
    fn parsing_validates_and_rejects_malformed_documents() {
        assert_eq!(
            parse_error(with_rules(json!([
                {"rule": "policy_active"},
                {"rule": "policy_active"},
                {"rule": "min_property_damage", "per_accident_cents": 0}
            ]))),
            "rules[1].policy_active: a set holds one policy_active rule; rules[0] is one"
        );
        assert_eq!(
            parse_error(with_rules(json!([
                {"rule": "min_property_damage", "per_accident_cents": 0}
            ]))),
            "rules[0].min_property_damage.per_accident_cents: must be positive"
        );
        assert_eq!(
            parse_error(with_rules(json!([]))),
            "rules: must hold at least one rule"
        );
        assert_eq!(
            parse_error(with_rules(json!({}))),
            "rules: must be an array"
        );
        assert_eq!(
            parse_error(json!({"id": "s", "rules": []})),
            "name: is required"
        );
        assert_eq!(
            parse_error(json!({"id": 1, "name": "S", "rules": []})),
            "id: must be a string"
        );
        assert_eq!(
            parse_error(json!({"id": "s", "name": "S", "rules": [], "tenant": "t"})),
            "tenant: unknown field (expected id, name, rules)"
        );
        // Found by `tests/fuzz_requirements.rs`: an empty key left the error with no path.
        assert_eq!(
            parse_error(json!({"id": "s", "name": "S", "rules": [], "": 1})),
            "$: unknown field \"\" (expected id, name, rules)"
        );
        assert_eq!(parse_error(json!([])), "$: must be a JSON object");
        let message = RequirementSet::from_json("{\"id\": ").unwrap_err();
        assert_eq!(message.path, "$");
        assert!(message.message.starts_with("not valid JSON"), "{message}");
    }

    #[test]
    fn the_field_table_agrees_with_the_rule_type() {
        let samples = vec![
            Rule::PolicyActive,
            Rule::PolicyTypeIn {
                types: vec![PolicyType::Auto],
            },
            Rule::ExpiresAtLeastDaysAhead { days: 1 },
            bi(1, 1),
            Rule::MinPropertyDamage {
                per_accident_cents: 1,
            },
            comp_coll(1),
            lienholder("A"),
            vin(VIN),
            address_rule("1 Main", Some("C"), Some("S"), Some("P")),
            cov_rule(CoverageCode::Dwelling, Some(1), Some(2), Some(3)),
        ];
        let kinds: Vec<&str> = samples.iter().map(Rule::kind).collect();
        assert_eq!(kinds, Rule::KINDS);
        for sample in samples {
            let Value::Object(object) = serde_json::to_value(&sample).unwrap() else {
                panic!("{sample:?} is not an object");
            };
            assert_eq!(object["rule"], sample.kind());
            let fields = rule_fields(sample.kind());
            let mut keys: Vec<&str> = object
                .keys()
                .map(String::as_str)
                .filter(|k| *k != "rule")
                .collect();
            let mut names: Vec<&str> = fields.iter().map(|(n, _, _)| *n).collect();
            keys.sort_unstable();
            names.sort_unstable();
            assert_eq!(keys, names, "{}", sample.kind());
            let mut minimal = serde_json::Map::new();
            minimal.insert("rule".into(), json!(sample.kind()));
            for (name, _, required) in fields {
                if *required {
                    minimal.insert((*name).into(), object[*name].clone());
                }
            }
            assert!(
                serde_json::from_value::<Rule>(Value::Object(minimal)).is_ok(),
                "{}",
                sample.kind()
            );
        }
    }

    // --- transitions --------------------------------------------------------------------------

    #[test]
    fn transitions_emit_once_per_change_between_met_and_not_met() {
        use OverallStatus::*;
        let statuses = [
            Unmet, Unmet, Unknown, Met, Met, Unknown, Unknown, Unmet, Met,
        ];
        let mut previous = None;
        let mut emitted = Vec::new();
        for status in statuses {
            emitted.push(requirements_transition(previous, status));
            previous = Some(status);
        }
        assert_eq!(
            emitted,
            [
                Some(EventKind::RequirementsUnmet),
                None,
                None,
                Some(EventKind::RequirementsMet),
                None,
                Some(EventKind::RequirementsUnmet),
                None,
                None,
                Some(EventKind::RequirementsMet),
            ]
        );
        assert_eq!(
            requirements_transition(None, Met),
            Some(EventKind::RequirementsMet)
        );
        assert_eq!(
            requirements_transition(None, Unknown),
            Some(EventKind::RequirementsUnmet)
        );
    }

    #[test]
    fn transition_events_carry_the_set_name_and_every_outcome() {
        let rules = set(lender());
        let met = evaluate(&rules, &[auto("p")], now());
        let mut cancelled = auto("p");
        cancelled.status = PolicyStatus::Cancelled;
        let unmet = evaluate(&rules, &[cancelled], now());

        let event = transition_event(&rules, Some(OverallStatus::Met), &unmet).unwrap();
        assert_eq!(event.kind(), EventKind::RequirementsUnmet);
        let EventPayload::RequirementsUnmet {
            requirement_set,
            outcomes,
        } = event
        else {
            unreachable!()
        };
        assert_eq!(requirement_set, "Lender auto");
        assert_eq!(outcomes, unmet.outcomes);

        let event = transition_event(&rules, Some(OverallStatus::Unmet), &met).unwrap();
        assert_eq!(event.kind(), EventKind::RequirementsMet);
        assert!(transition_event(&rules, Some(OverallStatus::Met), &met).is_none());
        assert!(transition_event(&rules, Some(OverallStatus::Unknown), &unmet).is_none());
    }

    // --- staleness ----------------------------------------------------------------------------

    #[test]
    fn staleness_counts_from_the_later_of_refresh_and_link() {
        let day = std::time::Duration::from_secs(24 * 3600);
        let linked = at(2025, 1, 10);
        let hours = |h: i64| linked + TimeDelta::hours(h);
        assert!(!is_stale(None, linked, day, hours(24)));
        assert!(is_stale(None, linked, day, hours(25)));
        assert!(!is_stale(Some(hours(30)), linked, day, hours(50)));
        assert!(is_stale(Some(hours(30)), linked, day, hours(55)));
        // A refresh older than the link says nothing about this link.
        assert!(!is_stale(Some(at(2024, 1, 1)), linked, day, hours(20)));
        // A refresh in the future (clock skew) is fresh.
        assert!(!is_stale(Some(hours(100)), linked, day, hours(50)));
        assert!(!is_stale(
            None,
            linked,
            std::time::Duration::MAX,
            hours(1_000_000)
        ));
    }

    #[test]
    fn link_stale_is_emitted_once_per_stale_period() {
        let day = std::time::Duration::from_secs(24 * 3600);
        let linked = at(2025, 1, 10);
        // (hours since linking at the check, last refresh in hours since linking)
        let checks = [
            (10, None),
            (30, None),
            (40, None),
            (50, Some(45)),
            (60, Some(45)),
            (80, Some(45)),
            (90, Some(45)),
        ];
        let mut flagged = false;
        let mut actions = Vec::new();
        for (at_hour, refreshed) in checks {
            let stale = is_stale(
                refreshed.map(|h| linked + TimeDelta::hours(h)),
                linked,
                day,
                linked + TimeDelta::hours(at_hour),
            );
            let action = stale_action(flagged, stale);
            match action {
                StaleAction::Emit => flagged = true,
                StaleAction::Clear => flagged = false,
                StaleAction::Nothing => {}
            }
            actions.push(action);
        }
        use StaleAction::*;
        assert_eq!(
            actions,
            [Nothing, Emit, Nothing, Clear, Nothing, Emit, Nothing]
        );
    }

    #[test]
    fn postal_codes_with_any_characters_compare_without_panicking() {
        // A multi-byte character right at the fifth byte once panicked the inbox worker.
        assert!(!postal_codes_match("1234é", "12345"));
        assert!(postal_codes_match("1234é", "1234É"));
        assert!(postal_codes_match("12345-6789", "12345"));
        assert!(!postal_codes_match("éééééé", "12345"));
        assert!(postal_codes_match("北京市", "北京市"));
    }
}
