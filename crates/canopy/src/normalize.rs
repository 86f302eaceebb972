//! Canopy pull → normalized [`Account`] and [`Policy`]s. Pure: no I/O.
//!
//! Canopy gives every object of a pull a fresh id (`policy_id`, `vehicle_id`, `dwelling_id`
//! change from one pull of an account to the next), so the normalized ids are the stable keys
//! instead — otherwise every monitoring refresh would read as every policy removed and added:
//! * a policy is its `carrier_policy_number` (then `number:TYPE` if two share one; `policy_id`
//!   only when there is no number);
//! * a vehicle is its VIN (its `vehicle_id` when there is none);
//! * a dwelling is its address (its `dwelling_id` when there is none).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};
use coverwatch_core::policy::{
    Account, AccountSnapshot, Address, AppliesTo, Carrier, ConnectionStatus, Coverage,
    CoverageCode, DocumentInfo, Dwelling, Insured, InsuredRole, InterestedParty, Limit, PartyKind,
    Policy, PolicySnapshot, PolicyStatus, PolicyTerm, PolicyType, Vehicle,
};
use serde_json::Value;

use crate::error::CanopyError;
use crate::model;

/// One pull, normalized.
#[derive(Debug, Clone)]
pub struct NormalizedPull {
    pub pull_id: String,
    pub status: Option<String>,
    pub account_identifier: Option<String>,
    pub account: AccountSnapshot,
    pub policies: Vec<PolicySnapshot>,
}

/// Pull statuses that carry policy data (a pull announces POLICIES_AVAILABLE while still
/// `PULLING_DATA`, before documents).
pub fn status_has_data(status: Option<&str>) -> bool {
    matches!(
        status,
        Some("SUCCESS" | "INCOMPLETE" | "PULLING_DATA" | "GETTING_CONSUMERS")
    )
}

/// Normalizes the `pull` object of `GET /pulls/{id}`. `account_fallback_id` names the account
/// when Canopy gives no `account_identifier` (the link's initial pull id, so it stays stable).
pub fn normalize_pull(
    raw: &Value,
    account_fallback_id: &str,
) -> Result<NormalizedPull, CanopyError> {
    if !raw.is_object() {
        return Err(CanopyError::Decode("the pull is not a JSON object".into()));
    }
    let pull: model::Pull = serde_json::from_value(raw.clone())
        .map_err(|err| CanopyError::Decode(format!("pull: {err}")))?;
    let raw_policies: Vec<Value> = raw
        .get("policies")
        .and_then(Value::as_array)
        .map(|items| items.iter().filter(|v| !v.is_null()).cloned().collect())
        .unwrap_or_default();

    let pull_carrier = carrier(
        pull.insurance_provider_name.as_deref(),
        pull.insurance_provider_friendly_name.as_deref(),
    );
    let mailing = pull
        .addresses
        .iter()
        .find(|a| a.address_nature.as_deref() == Some("MAILING"))
        .map(address);

    let keys = policy_keys(&pull.policies);
    let mut policies = Vec::with_capacity(pull.policies.len());
    for (index, (policy, key)) in pull.policies.iter().zip(keys).enumerate() {
        let normalized = normalize_policy(policy, key, &pull, &pull_carrier, mailing.as_ref());
        let mut raw = raw_policies
            .get(index)
            .filter(|v| v.get("policy_id").and_then(Value::as_str) == Some(&policy.policy_id))
            .or_else(|| {
                raw_policies
                    .iter()
                    .find(|v| v.get("policy_id").and_then(Value::as_str) == Some(&policy.policy_id))
            })
            .cloned()
            .unwrap_or(Value::Null);
        redact(&mut raw);
        policies.push(PolicySnapshot {
            policy: normalized,
            term: PolicyTerm::Current,
            raw,
        });
    }

    let account = normalize_account(&pull, &pull_carrier, &policies, account_fallback_id);
    let mut account_raw = raw.clone();
    if let Some(map) = account_raw.as_object_mut() {
        // Each policy keeps its own raw copy.
        map.remove("policies");
    }
    redact(&mut account_raw);

    Ok(NormalizedPull {
        pull_id: pull.pull_id.clone(),
        status: pull.status.clone(),
        account_identifier: pull.account_identifier.clone().filter(|s| !s.is_empty()),
        account: AccountSnapshot {
            account,
            raw: account_raw,
        },
        policies,
    })
}

fn non_empty(value: Option<&str>) -> Option<String> {
    value
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

fn carrier(id: Option<&str>, name: Option<&str>) -> Option<Carrier> {
    let id = non_empty(id)?;
    Some(Carrier {
        id,
        name: non_empty(name),
    })
}

fn normalize_account(
    pull: &model::Pull,
    pull_carrier: &Option<Carrier>,
    policies: &[PolicySnapshot],
    fallback_id: &str,
) -> Account {
    let primary = pull
        .policies
        .iter()
        .flat_map(|p| &p.named_insureds)
        .find(|n| n.is_primary_named_insured == Some(true));
    let carrier = pull_carrier
        .clone()
        .or_else(|| policies.first().map(|p| p.policy.carrier.clone()))
        .unwrap_or_else(|| Carrier {
            id: "unknown".into(),
            name: None,
        });
    let connection = match pull.status.as_deref() {
        Some(s) if status_has_data(Some(s)) => ConnectionStatus::Active,
        Some("NOT_AUTHENTICATED" | "IDENTITY_VERIFICATION_OPTIONS" | "IDENTITY_VERIFICATION") => {
            ConnectionStatus::Disconnected
        }
        _ => ConnectionStatus::Unknown,
    };
    Account {
        external_id: non_empty(pull.account_identifier.as_deref())
            .unwrap_or_else(|| fallback_id.to_owned()),
        carrier,
        first_name: non_empty(pull.first_name.as_deref())
            .or_else(|| primary.and_then(|p| non_empty(p.first_name.as_deref()))),
        last_name: non_empty(pull.last_name.as_deref())
            .or_else(|| primary.and_then(|p| non_empty(p.last_name.as_deref()))),
        email: non_empty(pull.account_email.as_deref())
            .or_else(|| non_empty(pull.email.as_deref())),
        phone: [
            &pull.mobile_phone,
            &pull.phone,
            &pull.home_phone,
            &pull.work_phone,
        ]
        .into_iter()
        .find_map(|p| non_empty(p.as_deref())),
        connection,
        policy_ids: policies
            .iter()
            .map(|p| p.policy.external_id.clone())
            .collect(),
        refreshed_at: pull.created_at.as_deref().and_then(parse_date),
    }
}

/// Stable policy ids for one pull (see the module doc).
fn policy_keys(policies: &[model::Policy]) -> Vec<String> {
    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    for p in policies {
        if let Some(n) = non_empty(p.carrier_policy_number.as_deref()) {
            *count.entry(n).or_default() += 1;
        }
    }
    let mut used = BTreeSet::new();
    policies
        .iter()
        .enumerate()
        .map(|(index, p)| {
            let base = match non_empty(p.carrier_policy_number.as_deref()) {
                Some(n) if count[&n] > 1 => {
                    format!("{n}:{}", p.policy_type.as_deref().unwrap_or("UNKNOWN"))
                }
                Some(n) => n,
                None if !p.policy_id.is_empty() => p.policy_id.clone(),
                None => format!("policy-{index}"),
            };
            // Last resort against two policies of one type sharing a number.
            let mut key = base.clone();
            let mut n = 2;
            while !used.insert(key.clone()) {
                key = format!("{base}:{n}");
                n += 1;
            }
            key
        })
        .collect()
}

pub fn policy_type(value: Option<&str>) -> PolicyType {
    match value.map(str::trim) {
        Some("AUTO") => PolicyType::Auto,
        Some("HOMEOWNERS") => PolicyType::Homeowners,
        Some("RENTERS") => PolicyType::Renters,
        Some("CONDO") => PolicyType::Condo,
        Some("LANDLORD") => PolicyType::Landlord,
        Some("FLOOD") => PolicyType::Flood,
        Some("UMBRELLA") => PolicyType::Umbrella,
        Some("MOTORCYCLE") => PolicyType::Motorcycle,
        Some(other) if !other.is_empty() => PolicyType::Other(other.to_owned()),
        _ => PolicyType::Other("UNKNOWN".into()),
    }
}

pub fn policy_status(value: Option<&str>) -> PolicyStatus {
    match value.map(str::trim) {
        Some("ACTIVE") => PolicyStatus::Active,
        Some("CANCELLED" | "CANCELED") => PolicyStatus::Cancelled,
        Some("EXPIRED") => PolicyStatus::Expired,
        Some("PENDING_ACTIVATION") => PolicyStatus::PendingActivation,
        Some("PENDING_CANCELLATION") => PolicyStatus::PendingCancellation,
        Some("RESCINDED") => PolicyStatus::Rescinded,
        Some("UNVERIFIED") => PolicyStatus::Unverified,
        Some("QUOTE") => PolicyStatus::Quote,
        _ => PolicyStatus::Unknown,
    }
}

/// Normalized codes of a `VehicleCoverageTypes` value. A combined coverage (uninsured and
/// underinsured, bodily injury and property damage) yields one code per part it covers, so that
/// a rule asking for any one part finds it.
pub fn vehicle_coverage_codes(name: &str) -> Vec<CoverageCode> {
    use CoverageCode::*;
    match name {
        "BODILY_INJURY_LIABILITY" => vec![BodilyInjury],
        "PROPERTY_DAMAGE_LIABILITY" => vec![PropertyDamage],
        "SINGLE_LIMIT_LIABILITY" | "COMBINED_SINGLE_LIMIT" => vec![CombinedSingleLimit],
        "COLLISION" => vec![Collision],
        "COMPREHENSIVE" => vec![Comprehensive],
        "PERSONAL_INJURY_PROTECTION" => vec![PersonalInjuryProtection],
        "MEDICAL_PAYMENTS" => vec![MedicalPayments],
        "RENTAL_REIMBURSEMENT" | "CAR_RENTAL_AND_TRAVEL_EXPENSES" => vec![RentalReimbursement],
        "TOWING_AND_LABOR" | "EMERGENCY_ROAD_SERVICE" => vec![Roadside],
        "UNINSURED_MOTORISTS" | "UNINSURED_MOTORIST_BODILY_INJURY_LIABILITY" => {
            vec![UninsuredMotoristBodilyInjury]
        }
        "UNINSURED_MOTORIST_PROPERTY_DAMAGE_LIABILITY" => vec![UninsuredMotoristPropertyDamage],
        "UNINSURED_MOTORIST_BODILY_INJURY_AND_PROPERTY_DAMAGE_LIABILITY" => vec![
            UninsuredMotoristBodilyInjury,
            UninsuredMotoristPropertyDamage,
        ],
        "UNDERINSURED_MOTORISTS" | "UNDERINSURED_MOTORIST_BODILY_INJURY_LIABILITY" => {
            vec![UnderinsuredMotoristBodilyInjury]
        }
        "UNDERINSURED_MOTORIST_PROPERTY_DAMAGE_LIABILITY" => {
            vec![UnderinsuredMotoristPropertyDamage]
        }
        "UNDERINSURED_MOTORIST_BODILY_INJURY_AND_PROPERTY_DAMAGE_LIABILITY" => vec![
            UnderinsuredMotoristBodilyInjury,
            UnderinsuredMotoristPropertyDamage,
        ],
        "UNINSURED_AND_UNDERINSURED_MOTORISTS"
        | "UNINSURED_AND_UNDERINSURED_MOTORIST_BODILY_INJURY_LIABILITY" => vec![
            UninsuredMotoristBodilyInjury,
            UnderinsuredMotoristBodilyInjury,
        ],
        "UNINSURED_AND_UNDERINSURED_MOTORIST_PROPERTY_DAMAGE_LIABILITY" => vec![
            UninsuredMotoristPropertyDamage,
            UnderinsuredMotoristPropertyDamage,
        ],
        "UNINSURED_AND_UNDERINSURED_MOTORIST_BODILY_INJURY_AND_PROPERTY_DAMAGE_LIABILITY" => vec![
            UninsuredMotoristBodilyInjury,
            UninsuredMotoristPropertyDamage,
            UnderinsuredMotoristBodilyInjury,
            UnderinsuredMotoristPropertyDamage,
        ],
        other => vec![Other(other.to_owned())],
    }
}

/// Normalized code of a `DwellingCoverage.name`; carrier-specific names for the standard
/// homeowners coverages (Allstate's family liability, guest medical) map to the standard code,
/// and the all-perils deductible lines to [`CoverageCode::AllPerils`].
pub fn dwelling_coverage_code(name: &str) -> CoverageCode {
    use CoverageCode::*;
    match name {
        "DWELLING" => Dwelling,
        "OTHER_STRUCTURES" => OtherStructures,
        "PERSONAL_PROPERTY" => PersonalProperty,
        "LOSS_OF_USE" | "ADDITIONAL_LIVING_EXPENSE" => LossOfUse,
        "PERSONAL_LIABILITY" | "FAMILY_LIABILITY_PROTECTION" => PersonalLiability,
        "MEDICAL_PAYMENTS" | "GUEST_MEDICAL_PROTECTION" => MedicalPaymentsToOthers,
        // The deductible lines of Canopy's own HOMEOWNERS example (`ALL_OTHER_PERILS` beside
        // `WINDSTORM_OR_HAIL`); `ALL_PERILS` where no peril has a deductible of its own.
        "ALL_PERILS" | "ALL_OTHER_PERILS" => AllPerils,
        other => Other(other.to_owned()),
    }
}

/// Normalized document kinds.
pub fn document_kind(value: &str) -> String {
    match value {
        "DECLARATIONS" => "declaration_page".into(),
        "INSURANCE_ID_CARD" => "id_card".into(),
        "NOTICE_OF_CANCELLATION" | "CANCELLATION" => "cancellation_notice".into(),
        "NONRENEWAL_NOTICE" => "nonrenewal_notice".into(),
        "INSURANCE_BINDER" => "binder".into(),
        "INSURANCE_APPLICATION" => "application".into(),
        "VERIFICATION_OF_INSURANCE" => "verification_of_insurance".into(),
        other => other.to_ascii_lowercase(),
    }
}

/// A date-time as Canopy writes it (`2022-10-05T14:48:00.000Z`), also accepting a bare date
/// (`2022-10-05`, `10/05/2022`) as midnight UTC and a date-time without zone as UTC.
pub fn parse_date(value: &str) -> Option<DateTime<Utc>> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(value) {
        return Some(t.with_timezone(&Utc));
    }
    for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(value, format) {
            return Some(Utc.from_utc_datetime(&t));
        }
    }
    for format in ["%Y-%m-%d", "%m/%d/%Y"] {
        if let Ok(d) = NaiveDate::parse_from_str(value, format) {
            return d.and_hms_opt(0, 0, 0).map(|t| Utc.from_utc_datetime(&t));
        }
    }
    None
}

pub fn address(a: &model::Address) -> Address {
    let composed: Vec<&str> = [&a.number, &a.prefix, &a.street, &a.street_type]
        .into_iter()
        .filter_map(|p| p.as_deref().map(str::trim).filter(|s| !s.is_empty()))
        .collect();
    let line1 = if a.street.as_deref().is_some_and(|s| !s.trim().is_empty()) {
        Some(composed.join(" "))
    } else {
        // Without parts, the first segment of the full address is the street line.
        non_empty(a.full_address.as_deref())
            .map(|full| full.split(',').next().unwrap_or(&full).trim().to_owned())
    };
    let unit: Vec<&str> = [&a.sec_unit_type, &a.sec_unit_num]
        .into_iter()
        .filter_map(|p| p.as_deref().map(str::trim).filter(|s| !s.is_empty()))
        .collect();
    Address {
        line1,
        line2: (!unit.is_empty()).then(|| unit.join(" ")),
        city: non_empty(a.city.as_deref()),
        state: non_empty(a.state.as_deref()),
        postal_code: non_empty(a.zip.as_deref()),
        country: non_empty(a.country.as_deref()),
    }
}

fn is_empty_address(a: &Address) -> bool {
    *a == Address::default()
}

fn vehicle_key(v: &model::Vehicle, index: usize) -> String {
    non_empty(v.vin.as_deref())
        .map(|vin| vin.to_ascii_uppercase())
        .or_else(|| non_empty(Some(&v.vehicle_id)))
        .unwrap_or_else(|| format!("vehicle-{index}"))
}

fn dwelling_key(d: &model::Dwelling, index: usize) -> String {
    d.address
        .as_ref()
        .and_then(|a| {
            non_empty(a.full_address.as_deref()).or_else(|| {
                let n = address(a);
                (!is_empty_address(&n)).then(|| {
                    [n.line1, n.line2, n.city, n.state, n.postal_code]
                        .into_iter()
                        .flatten()
                        .collect::<Vec<_>>()
                        .join(", ")
                })
            })
        })
        .or_else(|| non_empty(Some(&d.dwelling_id)))
        .unwrap_or_else(|| format!("dwelling-{index}"))
}

/// A licence number as it may be shown: its last four characters.
pub fn mask_license(license: &str) -> String {
    let chars: Vec<char> = license.trim().chars().collect();
    if chars.len() <= 4 {
        return "•".repeat(chars.len().max(4));
    }
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{}{tail}", "•".repeat(chars.len() - 4))
}

/// Scrubs what must not be kept even in raw copies: full licence numbers, and document download
/// URLs (they may be signed).
fn redact(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.remove("download_url");
            for (key, v) in map.iter_mut() {
                if key == "drivers_license"
                    && let Value::String(license) = v
                {
                    *license = mask_license(license);
                } else {
                    redact(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

/// A limit as Canopy states it: its `*_unlimited` flag wins over an amount, which Canopy leaves
/// null for an unlimited limit.
fn limit(cents: Option<i64>, unlimited: bool) -> Option<Limit> {
    if unlimited {
        Some(Limit::Unlimited)
    } else {
        cents.map(Limit::Cents)
    }
}

fn percent_of(percent: Option<f64>, base: Option<i64>) -> Option<i64> {
    let (percent, base) = (percent?, base?);
    coverwatch_core::policy::dollars_to_cents(base as f64 * percent / 100.0 / 100.0)
}

fn normalize_policy(
    p: &model::Policy,
    external_id: String,
    pull: &model::Pull,
    pull_carrier: &Option<Carrier>,
    mailing: Option<&Address>,
) -> Policy {
    let carrier = carrier(
        p.carrier_name.as_deref(),
        p.carrier_friendly_name.as_deref(),
    )
    .or_else(|| pull_carrier.clone())
    .unwrap_or_else(|| Carrier {
        id: "unknown".into(),
        name: None,
    });

    let mut vehicles = Vec::new();
    let mut dwellings = Vec::new();
    let mut coverages = Vec::new();
    let mut insureds = Vec::new();
    let mut parties = Vec::new();

    for ni in &p.named_insureds {
        let full_name = non_empty(ni.full_name.as_deref());
        let (first_name, last_name) = (
            non_empty(ni.first_name.as_deref()),
            non_empty(ni.last_name.as_deref()),
        );
        if first_name.is_none() && last_name.is_none() && full_name.is_none() {
            continue;
        }
        insureds.push(Insured {
            first_name,
            last_name,
            full_name,
            role: if ni.is_primary_named_insured == Some(true) {
                InsuredRole::Primary
            } else {
                InsuredRole::NamedInsured
            },
            license_masked: None,
            license_state: None,
            applies_to: AppliesTo::AllProperties,
        });
    }

    // Drivers: one entry per person, bound to every vehicle or to the ones they drive.
    struct DriverSeen {
        first_name: Option<String>,
        last_name: Option<String>,
        license: Option<String>,
        license_state: Option<String>,
        /// The vehicles they are listed on, and whether they are excluded from each.
        vehicles: Vec<(String, bool)>,
    }
    let mut drivers: Vec<(String, DriverSeen)> = Vec::new();
    let live_vehicles: Vec<&model::Vehicle> = p.vehicles.iter().filter(|v| !v.is_removed).collect();

    for (index, v) in live_vehicles.iter().enumerate() {
        let key = vehicle_key(v, index);
        let applies_to = AppliesTo::Property(key.clone());
        vehicles.push(Vehicle {
            id: key.clone(),
            vin: non_empty(v.vin.as_deref()),
            year: v.year.and_then(|y| i32::try_from(y).ok()),
            make: non_empty(v.make.as_deref()),
            model: non_empty(v.model.as_deref()),
            body_style: non_empty(v.vehicle_type.as_deref()),
            garaging_address: v.garaging_address.as_ref().map(address),
        });
        for c in &v.coverages {
            if c.name.is_empty() {
                continue;
            }
            for (i, code) in vehicle_coverage_codes(&c.name).into_iter().enumerate() {
                coverages.push(Coverage {
                    label: non_empty(c.friendly_name.as_deref()),
                    limit_per_person: limit(c.per_person_limit_cents, c.per_person_unlimited),
                    limit_per_accident: limit(c.per_incident_limit_cents, c.per_incident_unlimited),
                    limit_per_day_cents: c.per_day_limit_cents,
                    max_days: c.max_days.and_then(|d| u32::try_from(d).ok()),
                    deductible_cents: c.deductible_cents,
                    // A combined coverage has one premium: count it once.
                    premium_cents: if i == 0 { c.premium_cents } else { None },
                    applies_to: applies_to.clone(),
                    declined: c.is_declined,
                    ..Coverage::new(code, c.name.clone())
                });
            }
        }
        if let Some(name) = non_empty(v.lien_holder.as_deref()) {
            let kind = if v.ownership_type.as_deref() == Some("LEASE") {
                PartyKind::Lessor
            } else {
                PartyKind::Lienholder
            };
            parties.push(InterestedParty {
                kind,
                name: Some(name),
                address: v.lien_holder_address.as_ref().map(address),
                loan_number: None,
                applies_to: applies_to.clone(),
            });
        }
        for d in &v.drivers {
            let person = person_key(
                d.first_name.as_deref(),
                d.last_name.as_deref(),
                d.drivers_license.as_deref(),
                &d.driver_id,
            );
            let entry = match drivers.iter_mut().find(|(k, _)| *k == person) {
                Some((_, seen)) => seen,
                None => {
                    drivers.push((
                        person,
                        DriverSeen {
                            first_name: non_empty(d.first_name.as_deref()),
                            last_name: non_empty(d.last_name.as_deref()),
                            license: non_empty(d.drivers_license.as_deref()),
                            license_state: non_empty(d.drivers_license_state.as_deref()),
                            vehicles: Vec::new(),
                        },
                    ));
                    &mut drivers.last_mut().expect("just pushed").1
                }
            };
            match entry.vehicles.iter_mut().find(|(k, _)| *k == key) {
                Some((_, excluded)) => *excluded |= d.is_excluded,
                None => entry.vehicles.push((key.clone(), d.is_excluded)),
            }
        }
    }
    // Account-level drivers not listed on any vehicle still drive under an auto policy.
    if !live_vehicles.is_empty() {
        for d in &pull.drivers {
            let person = person_key(
                d.first_name.as_deref(),
                d.last_name.as_deref(),
                d.drivers_license.as_deref(),
                &d.driver_id,
            );
            if drivers.iter().any(|(k, _)| *k == person) {
                continue;
            }
            drivers.push((
                person,
                DriverSeen {
                    first_name: non_empty(d.first_name.as_deref()),
                    last_name: non_empty(d.last_name.as_deref()),
                    license: non_empty(d.drivers_license.as_deref()),
                    license_state: non_empty(d.drivers_license_state.as_deref()),
                    vehicles: vehicles.iter().map(|v| (v.id.clone(), false)).collect(),
                },
            ));
        }
    }
    for (_, d) in drivers {
        if d.first_name.is_none() && d.last_name.is_none() {
            continue;
        }
        let role = |excluded: bool| {
            if excluded {
                InsuredRole::ExcludedDriver
            } else {
                InsuredRole::Driver
            }
        };
        // One entry for the whole policy when they drive every vehicle alike.
        let uniform =
            d.vehicles.len() == vehicles.len() && d.vehicles.windows(2).all(|w| w[0].1 == w[1].1);
        let scopes: Vec<(AppliesTo, InsuredRole)> = if uniform {
            let excluded = d.vehicles.first().is_some_and(|v| v.1);
            vec![(AppliesTo::AllProperties, role(excluded))]
        } else {
            d.vehicles
                .iter()
                .map(|(key, excluded)| (AppliesTo::Property(key.clone()), role(*excluded)))
                .collect()
        };
        for (applies_to, role) in scopes {
            insureds.push(Insured {
                first_name: d.first_name.clone(),
                last_name: d.last_name.clone(),
                full_name: None,
                role,
                license_masked: d.license.as_deref().map(mask_license),
                license_state: d.license_state.clone(),
                applies_to,
            });
        }
    }

    for (index, dw) in p.dwellings.iter().enumerate() {
        let key = dwelling_key(dw, index);
        let applies_to = AppliesTo::Property(key.clone());
        dwellings.push(Dwelling {
            id: key.clone(),
            address: dw.address.as_ref().map(address),
            replacement_cost_cents: dw
                .replacement_cost_cents
                .or(dw.total_replacement_cost_cents),
        });
        // Percent limits and deductibles are of the dwelling (Coverage A) limit.
        let dwelling_limit = dw
            .coverages
            .iter()
            .find(|c| c.name == "DWELLING")
            .and_then(|c| c.per_incident_limit_cents);
        for c in &dw.coverages {
            if c.name.is_empty() {
                continue;
            }
            coverages.push(Coverage {
                label: non_empty(c.friendly_name.as_deref()),
                limit_per_person: limit(c.per_person_limit_cents, c.per_person_unlimited),
                limit_per_accident: limit(
                    c.per_incident_limit_cents
                        .or_else(|| percent_of(c.per_incident_limit_percent, dwelling_limit)),
                    c.per_incident_unlimited,
                ),
                deductible_cents: c
                    .deductible_cents
                    .or_else(|| percent_of(c.deductible_percent, dwelling_limit)),
                premium_cents: c.premium_cents,
                applies_to: applies_to.clone(),
                declined: c.is_declined,
                ..Coverage::new(dwelling_coverage_code(&c.name), c.name.clone())
            });
        }
        let mut mortgagees: Vec<InterestedParty> = dw
            .mortgagees
            .iter()
            .filter(|m| non_empty(m.mortgagee_name.as_deref()).is_some())
            .map(|m| InterestedParty {
                kind: PartyKind::Mortgagee,
                name: non_empty(m.mortgagee_name.as_deref()),
                address: m.mortgagee_address.as_ref().map(address),
                loan_number: non_empty(m.mortgage_loan_number.as_deref()),
                applies_to: applies_to.clone(),
            })
            .collect();
        if mortgagees.is_empty()
            && let Some(name) = non_empty(dw.mortgagee_name.as_deref())
        {
            mortgagees.push(InterestedParty {
                kind: PartyKind::Mortgagee,
                name: Some(name),
                address: dw.mortgagee_address.as_ref().map(address),
                loan_number: non_empty(dw.mortgage_loan_number.as_deref()),
                applies_to: applies_to.clone(),
            });
        }
        parties.extend(mortgagees);
    }

    for ai in &p.additional_interests {
        let Some(name) = non_empty(ai.additional_interest_name.as_deref()) else {
            continue;
        };
        parties.push(InterestedParty {
            kind: PartyKind::AdditionalInterest,
            name: Some(name),
            address: ai.additional_interest_address.as_ref().map(address),
            loan_number: None,
            applies_to: AppliesTo::AllProperties,
        });
    }

    let documents = pull
        .documents
        .iter()
        .filter(|d| !p.policy_id.is_empty() && d.policy_id.as_deref() == Some(p.policy_id.as_str()))
        .map(|d| DocumentInfo {
            id: non_empty(d.document_id.as_deref()),
            name: non_empty(d.title.as_deref()),
            kinds: d
                .document_type
                .as_deref()
                .filter(|t| !t.is_empty())
                .map(document_kind)
                .into_iter()
                .collect(),
            source: Some("carrier".into()),
            created_at: d.date_added.as_deref().and_then(parse_date),
        })
        .collect();

    let address = dwellings
        .iter()
        .find_map(|d| d.address.clone())
        .or_else(|| mailing.cloned());

    Policy {
        external_id,
        policy_type: policy_type(p.policy_type.as_deref()),
        carrier,
        policy_number: non_empty(p.carrier_policy_number.as_deref()),
        status: policy_status(p.status.as_deref()),
        effective_date: p.effective_date.as_deref().and_then(parse_date),
        expiration_date: p.expiry_date.as_deref().and_then(parse_date),
        cancelled_date: p.canceled_date.as_deref().and_then(parse_date),
        premium_cents: p.total_premium_cents,
        address,
        vehicles,
        dwellings,
        coverages,
        insureds,
        interested_parties: parties,
        documents,
    }
}

/// Who a driver is across vehicles (each vehicle lists its own copy with the same `driver_id`
/// within one pull; the licence or the name still match when it does not).
fn person_key(first: Option<&str>, last: Option<&str>, license: Option<&str>, id: &str) -> String {
    if let Some(license) = non_empty(license) {
        return format!("license:{}", license.to_ascii_uppercase());
    }
    let name = format!("{} {}", first.unwrap_or(""), last.unwrap_or(""));
    let name = coverwatch_core::change::comparable_name(&name);
    if name.is_empty() {
        format!("id:{id}")
    } else {
        format!("name:{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample_pull() -> Value {
        let mut pull = json!({
            "pull_id": "11111111-1111-4111-8111-111111111111",
            "status": "SUCCESS",
            "account_identifier": "acct-1",
            "first_name": "Morgan",
            "last_name": "Tester",
            "email": null,
            "account_email": "morgan@example.com",
            "phone": "5555550100",
            "mobile_phone": null,
            "insurance_provider_name": "statefarm",
            "insurance_provider_friendly_name": "State Farm",
            "created_at": "2024-03-01T10:00:00.000Z",
            "meta_data": {"coverwatch_link_id": "lnk_x"},
            "addresses": [{"address_nature": "MAILING", "number": "1", "street": "Post", "type": "Rd",
                           "city": "Springfield", "state": "IL", "zip": "62701", "country": "US"}],
            "drivers": [
                {"driver_id": "d1", "first_name": "Morgan", "last_name": "Tester", "drivers_license": "T12345678", "drivers_license_state": "IL"},
                {"driver_id": "d3", "first_name": "Riley", "last_name": "Tester", "drivers_license": null}
            ],
            "documents": [
                {"document_id": "doc1", "title": "Declarations", "document_type": "DECLARATIONS",
                 "policy_id": "p-auto", "date_added": "2024-01-15T00:00:00.000Z",
                 "download_url": "https://signed.example/x?sig=abc"},
                {"document_id": "doc2", "title": "Home Declarations", "document_type": "DECLARATIONS", "policy_id": "p-home"}
            ]
        });
        pull["policies"] = json!([auto_policy(), home_policy()]);
        pull
    }

    fn auto_policy() -> Value {
        json!(
        {
            "policy_id": "p-auto",
            "carrier_policy_number": "AU-1",
            "policy_type": "AUTO",
            "status": "ACTIVE",
            "effective_date": "2024-01-15T00:00:00.000Z",
            "expiry_date": "2024-07-15T00:00:00.000Z",
            "canceled_date": null,
            "total_premium_cents": 102200,
            "carrier_name": "statefarm",
            "carrier_friendly_name": "State Farm",
            "named_insureds": [
                {"first_name": "Morgan", "last_name": "Tester", "is_primary_named_insured": true},
                {"first_name": "Casey", "last_name": "Tester", "is_primary_named_insured": false}
            ],
            "additional_interests": [{"additional_interest_name": "Fleet Co", "additional_interest_type": "ADDITIONAL_INSURED"}],
            "vehicles": [
                {
                    "vehicle_id": "v1", "vin": "4t1g11ak5mu000001", "year": "2021", "make": "TOYOTA",
                    "model": "Camry", "type": "PASSENGER CAR", "ownership_type": "FINANCE",
                    "lien_holder": "Sandbox Auto Finance",
                    "lien_holder_address": {"number": "500", "street": "Lender", "type": "Way", "city": "Columbus", "state": "OH", "zip": "43215"},
                    "garaging_address": {"full_address": "123 Main Street, Apt 4B, Springfield, IL, 62701", "number": "123",
                                         "street": "Main", "type": "St", "sec_unit_type": "Apt", "sec_unit_num": "4B",
                                         "city": "Springfield", "state": "IL", "zip": "62701", "country": "US"},
                    "coverages": [
                        {"name": "BODILY_INJURY_LIABILITY", "friendly_name": "Bodily Injury Liability",
                         "per_person_limit_cents": 10000000, "per_incident_limit_cents": 30000000, "premium_cents": 21000},
                        {"name": "COLLISION", "deductible_cents": 100000, "premium_cents": 18400},
                        {"name": "UNINSURED_MOTORIST_BODILY_INJURY_AND_PROPERTY_DAMAGE_LIABILITY",
                         "per_incident_limit_cents": 5000000, "premium_cents": 900},
                        {"name": "FULL_GLASS", "is_declined": true}
                    ],
                    "drivers": [
                        {"driver_id": "d1", "first_name": "Morgan", "last_name": "Tester", "drivers_license": "T12345678", "drivers_license_state": "IL", "is_excluded": false},
                        {"driver_id": "d2", "first_name": "Casey", "last_name": "Tester", "drivers_license": "T87654321", "is_excluded": false}
                    ]
                },
                {
                    "vehicle_id": "v2", "vin": null, "year": 2016, "make": "HONDA", "ownership_type": "LEASE",
                    "lien_holder": "Lease Corp",
                    "coverages": [{"name": "PROPERTY_DAMAGE_LIABILITY", "per_incident_limit_cents": 10000000}],
                    "drivers": [
                        {"driver_id": "d1", "first_name": "Morgan", "last_name": "Tester", "drivers_license": "T12345678"},
                        {"driver_id": "d2", "first_name": "Casey", "last_name": "Tester", "drivers_license": "T87654321", "is_excluded": true}
                    ]
                },
                {"vehicle_id": "v3", "vin": "OLDVIN", "is_removed": true,
                 "coverages": [{"name": "COLLISION"}]}
            ]
        }
        )
    }

    fn home_policy() -> Value {
        json!(
        {
            "policy_id": "p-home",
            "carrier_policy_number": "HO-2",
            "policy_type": "HOMEOWNERS",
            "status": null,
            "total_premium_cents": "132700",
            "carrier_name": "statefarm",
            "dwellings": [{
                "dwelling_id": "dw1",
                "address": {"full_address": "123 Main Street, Springfield, IL, 62701", "number": "123", "street": "Main", "type": "St",
                            "city": "Springfield", "state": "IL", "zip": "62701"},
                "replacement_cost_cents": 35000000,
                "mortgagees": [{"mortgagee_name": "Sandbox Home Lending", "mortgage_loan_number": "ML-1",
                                "mortgagee_address": {"number": "900", "street": "Mortgage", "type": "Blvd", "city": "Dallas", "state": "TX", "zip": "75201"}}],
                "coverages": [
                    {"name": "DWELLING", "per_incident_limit_cents": 35000000, "premium_cents": 98000},
                    {"name": "OTHER_STRUCTURES", "per_incident_limit_cents": 3500000, "per_incident_limit_percent": "10.000"},
                    {"name": "PERSONAL_PROPERTY", "per_incident_limit_percent": 50},
                    {"name": "MEDICAL_PAYMENTS", "per_person_limit_cents": 500000},
                    {"name": "WINDSTORM_OR_HAIL", "deductible_percent": "2.000"}
                ]
            }]
        }
        )
    }

    fn find<'a>(p: &'a Policy, code: &CoverageCode, on: &str) -> &'a Coverage {
        p.coverages
            .iter()
            .find(|c| &c.code == code && c.applies_to == AppliesTo::Property(on.into()))
            .unwrap_or_else(|| panic!("{code:?} on {on}"))
    }

    #[test]
    fn account_fields() {
        let n = normalize_pull(&sample_pull(), "initial").unwrap();
        let a = &n.account.account;
        assert_eq!(a.external_id, "acct-1");
        assert_eq!(a.carrier.id, "statefarm");
        assert_eq!(a.carrier.name.as_deref(), Some("State Farm"));
        assert_eq!(a.first_name.as_deref(), Some("Morgan"));
        assert_eq!(a.last_name.as_deref(), Some("Tester"));
        assert_eq!(a.email.as_deref(), Some("morgan@example.com"));
        assert_eq!(a.phone.as_deref(), Some("5555550100"));
        assert_eq!(a.connection, ConnectionStatus::Active);
        assert_eq!(a.policy_ids, vec!["AU-1".to_owned(), "HO-2".to_owned()]);
        assert_eq!(a.refreshed_at, parse_date("2024-03-01T10:00:00Z"));
        assert!(n.account.raw.get("policies").is_none());
        assert_eq!(n.account.raw["drivers"][0]["drivers_license"], "•••••5678");
        assert!(n.account.raw["documents"][0].get("download_url").is_none());
    }

    #[test]
    fn account_id_falls_back_to_the_initial_pull() {
        let mut raw = sample_pull();
        raw["account_identifier"] = Value::Null;
        let n = normalize_pull(&raw, "initial-pull").unwrap();
        assert_eq!(n.account.account.external_id, "initial-pull");
        assert_eq!(n.account_identifier, None);
    }

    #[test]
    fn auto_policy_field_by_field() {
        let n = normalize_pull(&sample_pull(), "initial").unwrap();
        let snap = &n.policies[0];
        assert_eq!(snap.term, PolicyTerm::Current);
        assert_eq!(snap.raw["policy_id"], "p-auto");
        assert_eq!(
            snap.raw["vehicles"][0]["drivers"][0]["drivers_license"],
            "•••••5678"
        );
        let p = &snap.policy;
        assert_eq!(p.external_id, "AU-1");
        assert_eq!(p.policy_type, PolicyType::Auto);
        assert_eq!(p.policy_number.as_deref(), Some("AU-1"));
        assert_eq!(p.status, PolicyStatus::Active);
        assert_eq!(p.effective_date, parse_date("2024-01-15"));
        assert_eq!(p.expiration_date, parse_date("2024-07-15"));
        assert_eq!(p.cancelled_date, None);
        assert_eq!(p.premium_cents, Some(102_200));
        assert_eq!(p.carrier.id, "statefarm");
        // No dwelling: the mailing address.
        assert_eq!(
            p.address.as_ref().unwrap().line1.as_deref(),
            Some("1 Post Rd")
        );

        // Removed vehicles are gone; the VIN is the id, the vehicle id when there is none.
        assert_eq!(p.vehicles.len(), 2);
        let camry = &p.vehicles[0];
        assert_eq!(camry.id, "4T1G11AK5MU000001");
        assert_eq!(camry.vin.as_deref(), Some("4t1g11ak5mu000001"));
        assert_eq!(camry.year, Some(2021));
        assert_eq!(camry.make.as_deref(), Some("TOYOTA"));
        assert_eq!(camry.model.as_deref(), Some("Camry"));
        assert_eq!(camry.body_style.as_deref(), Some("PASSENGER CAR"));
        let garage = camry.garaging_address.as_ref().unwrap();
        assert_eq!(garage.line1.as_deref(), Some("123 Main St"));
        assert_eq!(garage.line2.as_deref(), Some("Apt 4B"));
        assert_eq!(garage.postal_code.as_deref(), Some("62701"));
        assert_eq!(p.vehicles[1].id, "v2");

        let bi = find(p, &CoverageCode::BodilyInjury, "4T1G11AK5MU000001");
        assert_eq!(bi.vendor_code, "BODILY_INJURY_LIABILITY");
        assert_eq!(bi.label.as_deref(), Some("Bodily Injury Liability"));
        assert_eq!(bi.limit_per_person, Some(Limit::Cents(10_000_000)));
        assert_eq!(bi.limit_per_accident, Some(Limit::Cents(30_000_000)));
        assert_eq!(bi.premium_cents, Some(21_000));
        assert!(!bi.declined);
        let coll = find(p, &CoverageCode::Collision, "4T1G11AK5MU000001");
        assert_eq!(coll.deductible_cents, Some(100_000));
        // A combined UM coverage yields both parts, its premium counted once.
        let umbi = find(
            p,
            &CoverageCode::UninsuredMotoristBodilyInjury,
            "4T1G11AK5MU000001",
        );
        let umpd = find(
            p,
            &CoverageCode::UninsuredMotoristPropertyDamage,
            "4T1G11AK5MU000001",
        );
        assert_eq!(umbi.limit_per_accident, Some(Limit::Cents(5_000_000)));
        assert_eq!(umpd.limit_per_accident, Some(Limit::Cents(5_000_000)));
        assert_eq!((umbi.premium_cents, umpd.premium_cents), (Some(900), None));
        let glass = find(
            p,
            &CoverageCode::Other("FULL_GLASS".into()),
            "4T1G11AK5MU000001",
        );
        assert!(glass.declined);
        let pd = find(p, &CoverageCode::PropertyDamage, "v2");
        assert_eq!(pd.limit_per_accident, Some(Limit::Cents(10_000_000)));
        assert!(
            !p.coverages
                .iter()
                .any(|c| c.applies_to == AppliesTo::Property("OLDVIN".into()))
        );

        // Lienholder on the financed car, lessor on the leased one.
        let lien = &p.interested_parties[0];
        assert_eq!(lien.kind, PartyKind::Lienholder);
        assert_eq!(lien.name.as_deref(), Some("Sandbox Auto Finance"));
        assert_eq!(
            lien.applies_to,
            AppliesTo::Property("4T1G11AK5MU000001".into())
        );
        assert_eq!(
            lien.address.as_ref().unwrap().city.as_deref(),
            Some("Columbus")
        );
        assert_eq!(p.interested_parties[1].kind, PartyKind::Lessor);
        assert_eq!(
            p.interested_parties[1].applies_to,
            AppliesTo::Property("v2".into())
        );
        let ai = &p.interested_parties[2];
        assert_eq!(ai.kind, PartyKind::AdditionalInterest);
        assert_eq!(ai.name.as_deref(), Some("Fleet Co"));
        assert_eq!(ai.applies_to, AppliesTo::AllProperties);

        // Named insureds, then drivers (masked licences), per vehicle where they differ.
        let roles: Vec<(Option<&str>, InsuredRole, &AppliesTo)> = p
            .insureds
            .iter()
            .map(|i| (i.first_name.as_deref(), i.role, &i.applies_to))
            .collect();
        assert_eq!(
            roles,
            vec![
                (
                    Some("Morgan"),
                    InsuredRole::Primary,
                    &AppliesTo::AllProperties
                ),
                (
                    Some("Casey"),
                    InsuredRole::NamedInsured,
                    &AppliesTo::AllProperties
                ),
                (
                    Some("Morgan"),
                    InsuredRole::Driver,
                    &AppliesTo::AllProperties
                ),
                (
                    Some("Casey"),
                    InsuredRole::Driver,
                    &AppliesTo::Property("4T1G11AK5MU000001".into())
                ),
                (
                    Some("Casey"),
                    InsuredRole::ExcludedDriver,
                    &AppliesTo::Property("v2".into())
                ),
                (
                    Some("Riley"),
                    InsuredRole::Driver,
                    &AppliesTo::AllProperties
                ),
            ]
        );
        let morgan = &p.insureds[2];
        assert_eq!(morgan.license_masked.as_deref(), Some("•••••5678"));
        assert_eq!(morgan.license_state.as_deref(), Some("IL"));
        assert_eq!(morgan.last_name.as_deref(), Some("Tester"));

        // Documents: metadata of this policy's documents only.
        assert_eq!(p.documents.len(), 1);
        let d = &p.documents[0];
        assert_eq!(d.id.as_deref(), Some("doc1"));
        assert_eq!(d.name.as_deref(), Some("Declarations"));
        assert_eq!(d.kinds, vec!["declaration_page".to_owned()]);
        assert_eq!(d.created_at, parse_date("2024-01-15"));
    }

    /// A pull holding one policy of the given JSON, normalized.
    fn one_policy(policy: Value) -> Policy {
        let pull = json!({"pull_id": "p", "status": "SUCCESS", "policies": [policy]});
        normalize_pull(&pull, "initial").unwrap().policies[0]
            .policy
            .clone()
    }

    /// The dwelling coverages of Canopy's own HOMEOWNERS example, value for value (canopy-openapi.json,
    /// `GET /teams/{teamId}/pulls/{pullId}`, example "Personal Example Response",
    /// `policies[0].dwellings[0].coverages[6..8]`): the policy's deductible sits on
    /// `ALL_OTHER_PERILS`, beside a separate `WINDSTORM_OR_HAIL` one.
    #[test]
    fn the_home_deductible_on_all_other_perils_or_all_perils_is_mapped() {
        let p = one_policy(json!({
            "policy_id": "p-home", "carrier_policy_number": "HO132483", "policy_type": "HOMEOWNERS",
            "dwellings": [{"dwelling_id": "dw", "coverages": [
                {"dwelling_coverage_id": "7985df7e-6811-43fd-b8d3-71d98a9c9766", "name": "DWELLING",
                 "friendly_name": "Dwelling Liability", "premium_cents": 140675, "per_person_limit_cents": null,
                 "per_incident_limit_cents": 28838000, "deductible_cents": null, "is_declined": false},
                {"dwelling_coverage_id": "e3fd64bf-ea70-4f2d-a43f-c428114e75c1", "name": "ALL_OTHER_PERILS",
                 "friendly_name": "All Other Perils", "premium_cents": null, "per_person_limit_cents": null,
                 "per_incident_limit_cents": null, "deductible_cents": 288380, "deductible_percent": 1,
                 "is_declined": false},
                {"dwelling_coverage_id": "c2ac825a-6ada-486f-b531-a4d8596c844d", "name": "WINDSTORM_OR_HAIL",
                 "friendly_name": "Windstorm or Hail", "premium_cents": null, "per_person_limit_cents": null,
                 "per_incident_limit_cents": null, "deductible_cents": 576760, "deductible_percent": 2,
                 "is_declined": false}
            ]}]
        }));
        let aop = find(&p, &CoverageCode::AllPerils, "dw");
        assert_eq!(aop.vendor_code, "ALL_OTHER_PERILS");
        assert_eq!(aop.label.as_deref(), Some("All Other Perils"));
        assert_eq!(aop.deductible_cents, Some(288_380));
        assert_eq!(aop.limit_per_accident, None);
        // Wind and hail keep their own deductible, under Canopy's name.
        assert_eq!(
            find(&p, &CoverageCode::Other("WINDSTORM_OR_HAIL".into()), "dw").deductible_cents,
            Some(576_760)
        );
        // `ALL_PERILS` is in DwellingCoverage's `name` enum for a policy with one deductible.
        assert_eq!(
            dwelling_coverage_code("ALL_PERILS"),
            CoverageCode::AllPerils
        );
        // Only a percentage given: read against the dwelling limit, like the other percentages.
        let p = one_policy(json!({
            "policy_id": "p", "policy_type": "HOMEOWNERS",
            "dwellings": [{"dwelling_id": "dw", "coverages": [
                {"name": "DWELLING", "per_incident_limit_cents": 28838000},
                {"name": "ALL_PERILS", "deductible_percent": "1.000"}
            ]}]
        }));
        assert_eq!(
            find(&p, &CoverageCode::AllPerils, "dw").deductible_cents,
            Some(288_380)
        );
    }

    /// canopy-openapi.json, `components.schemas.VehicleCoverage`: "per_person_unlimited: If
    /// true, this coverage has an unlimited per-person limit", "per_incident_unlimited: If true,
    /// this coverage has an unlimited per-incident limit", "per_day_limit_cents: Per-day limit, in
    /// cents", "max_days: Max days, comes in pairs with `per_day_limit_cents`"; the per-day pair
    /// as in Canopy's own `ADD_VEHICLE` servicing example (`RENTAL_REIMBURSEMENT`
    /// `per_day_limit_cents` 3000, `max_days` 30). DwellingCoverage has the same two flags.
    #[test]
    fn unlimited_and_per_day_limits_are_read_as_stated() {
        let p = one_policy(json!({
            "policy_id": "p", "carrier_policy_number": "AU-9", "policy_type": "AUTO",
            "vehicles": [{"vehicle_id": "v", "vin": "4T1G11AK5MU000001", "coverages": [
                {"name": "PERSONAL_INJURY_PROTECTION", "per_person_limit_cents": null,
                 "per_person_unlimited": true, "per_incident_limit_cents": null,
                 "per_incident_unlimited": true, "per_day_limit_cents": null, "max_days": null},
                {"name": "BODILY_INJURY_LIABILITY", "per_person_limit_cents": 10000000,
                 "per_person_unlimited": false, "per_incident_limit_cents": null,
                 "per_incident_unlimited": true},
                {"name": "MEDICAL_PAYMENTS", "per_person_limit_cents": null, "per_person_unlimited": false},
                {"name": "RENTAL_REIMBURSEMENT", "is_declined": false, "per_day_limit_cents": 3000,
                 "max_days": 30}
            ]}],
            "dwellings": [{"dwelling_id": "dw", "coverages": [
                {"name": "PERSONAL_LIABILITY", "per_incident_limit_cents": null, "per_incident_unlimited": true,
                 "per_person_unlimited": null}
            ]}]
        }));
        let vin = "4T1G11AK5MU000001";
        let pip = find(&p, &CoverageCode::PersonalInjuryProtection, vin);
        assert_eq!(
            (pip.limit_per_person, pip.limit_per_accident),
            (Some(Limit::Unlimited), Some(Limit::Unlimited))
        );
        let bi = find(&p, &CoverageCode::BodilyInjury, vin);
        assert_eq!(
            (bi.limit_per_person, bi.limit_per_accident),
            (Some(Limit::Cents(10_000_000)), Some(Limit::Unlimited))
        );
        // Not unlimited and no amount: unknown, never "no limit".
        let med = find(&p, &CoverageCode::MedicalPayments, vin);
        assert_eq!((med.limit_per_person, med.limit_per_accident), (None, None));
        let rental = find(&p, &CoverageCode::RentalReimbursement, vin);
        assert_eq!(
            (rental.limit_per_day_cents, rental.max_days),
            (Some(3_000), Some(30))
        );
        assert_eq!(rental.limit_per_accident, None);
        let liability = find(&p, &CoverageCode::PersonalLiability, "dw");
        assert_eq!(
            (liability.limit_per_person, liability.limit_per_accident),
            (None, Some(Limit::Unlimited))
        );
    }

    /// An unlimited limit as Canopy states it meets any bodily-injury minimum; the same coverage
    /// with the flag off and no amount is UNKNOWN.
    #[test]
    fn an_unlimited_canopy_limit_meets_a_requirement_rule() {
        use coverwatch_core::requirements::{OverallStatus, RequirementSet, Rule, evaluate};
        let policy = |unlimited: bool| {
            let mut p = one_policy(json!({
                "policy_id": "p", "carrier_policy_number": "AU-9", "policy_type": "AUTO",
                "status": "ACTIVE",
                "vehicles": [{"vehicle_id": "v", "vin": "4T1G11AK5MU000001", "coverages": [
                    {"name": "BODILY_INJURY_LIABILITY", "per_person_limit_cents": null,
                     "per_person_unlimited": unlimited, "per_incident_limit_cents": null,
                     "per_incident_unlimited": unlimited}
                ]}]
            }));
            p.status = PolicyStatus::Active;
            p
        };
        let set = RequirementSet {
            id: "lender".into(),
            name: "Lender".into(),
            rules: vec![Rule::MinBodilyInjury {
                per_person_cents: 100_000_000,
                per_accident_cents: 300_000_000,
            }],
        };
        let now = Utc::now();
        assert_eq!(
            evaluate(&set, &[policy(true)], now).status,
            OverallStatus::Met
        );
        assert_eq!(
            evaluate(&set, &[policy(false)], now).status,
            OverallStatus::Unknown
        );
    }

    #[test]
    fn home_policy_field_by_field() {
        let n = normalize_pull(&sample_pull(), "initial").unwrap();
        let p = &n.policies[1].policy;
        let key = "123 Main Street, Springfield, IL, 62701";
        assert_eq!(p.external_id, "HO-2");
        assert_eq!(p.policy_type, PolicyType::Homeowners);
        assert_eq!(p.status, PolicyStatus::Unknown);
        assert_eq!(p.premium_cents, Some(132_700));
        assert_eq!(p.dwellings.len(), 1);
        assert_eq!(p.dwellings[0].id, key);
        assert_eq!(p.dwellings[0].replacement_cost_cents, Some(35_000_000));
        assert_eq!(
            p.address.as_ref().unwrap().line1.as_deref(),
            Some("123 Main St")
        );
        assert_eq!(
            find(p, &CoverageCode::Dwelling, key).limit_per_accident,
            Some(Limit::Cents(35_000_000))
        );
        assert_eq!(
            find(p, &CoverageCode::OtherStructures, key).limit_per_accident,
            Some(Limit::Cents(3_500_000))
        );
        // A percent-only limit is read against the dwelling limit.
        assert_eq!(
            find(p, &CoverageCode::PersonalProperty, key).limit_per_accident,
            Some(Limit::Cents(17_500_000))
        );
        assert_eq!(
            find(p, &CoverageCode::MedicalPaymentsToOthers, key).limit_per_person,
            Some(Limit::Cents(500_000))
        );
        assert_eq!(
            find(p, &CoverageCode::Other("WINDSTORM_OR_HAIL".into()), key).deductible_cents,
            Some(700_000)
        );
        let m = &p.interested_parties[0];
        assert_eq!(m.kind, PartyKind::Mortgagee);
        assert_eq!(m.name.as_deref(), Some("Sandbox Home Lending"));
        assert_eq!(m.loan_number.as_deref(), Some("ML-1"));
        assert_eq!(m.applies_to, AppliesTo::Property(key.into()));
        assert!(p.insureds.is_empty());
        assert!(p.vehicles.is_empty());
        assert_eq!(p.documents[0].id.as_deref(), Some("doc2"));
    }

    #[test]
    fn deprecated_mortgagee_fields_are_read_when_the_list_is_empty() {
        let mut raw = sample_pull();
        let dw = &mut raw["policies"][1]["dwellings"][0];
        dw["mortgagees"] = json!([]);
        dw["mortgagee_name"] = json!("Old Bank");
        dw["mortgage_loan_number"] = json!("L-9");
        let n = normalize_pull(&raw, "i").unwrap();
        let m = &n.policies[1].policy.interested_parties[0];
        assert_eq!(
            (m.name.as_deref(), m.loan_number.as_deref()),
            (Some("Old Bank"), Some("L-9"))
        );
    }

    #[test]
    fn policy_ids_stay_unique() {
        let mut raw = sample_pull();
        raw["policies"][1]["carrier_policy_number"] = json!("AU-1");
        let n = normalize_pull(&raw, "i").unwrap();
        assert_eq!(n.policies[0].policy.external_id, "AU-1:AUTO");
        assert_eq!(n.policies[1].policy.external_id, "AU-1:HOMEOWNERS");
        raw["policies"][1]["carrier_policy_number"] = Value::Null;
        let n = normalize_pull(&raw, "i").unwrap();
        assert_eq!(n.policies[1].policy.external_id, "p-home");
    }

    #[test]
    fn vocabularies() {
        for (v, t) in [
            ("AUTO", PolicyType::Auto),
            ("HOMEOWNERS", PolicyType::Homeowners),
            ("RENTERS", PolicyType::Renters),
            ("CONDO", PolicyType::Condo),
            ("LANDLORD", PolicyType::Landlord),
            ("FLOOD", PolicyType::Flood),
            ("UMBRELLA", PolicyType::Umbrella),
            ("MOTORCYCLE", PolicyType::Motorcycle),
            ("BOAT", PolicyType::Other("BOAT".into())),
        ] {
            assert_eq!(policy_type(Some(v)), t);
        }
        for (v, s) in [
            ("ACTIVE", PolicyStatus::Active),
            ("CANCELLED", PolicyStatus::Cancelled),
            ("EXPIRED", PolicyStatus::Expired),
            ("PENDING_ACTIVATION", PolicyStatus::PendingActivation),
            ("PENDING_CANCELLATION", PolicyStatus::PendingCancellation),
            ("RESCINDED", PolicyStatus::Rescinded),
            ("UNVERIFIED", PolicyStatus::Unverified),
            ("QUOTE", PolicyStatus::Quote),
            ("SOMETHING", PolicyStatus::Unknown),
        ] {
            assert_eq!(policy_status(Some(v)), s);
        }
        assert_eq!(policy_status(None), PolicyStatus::Unknown);
        assert_eq!(
            vehicle_coverage_codes("COMPREHENSIVE"),
            vec![CoverageCode::Comprehensive]
        );
        assert_eq!(
            vehicle_coverage_codes("UNINSURED_MOTORISTS"),
            vec![CoverageCode::UninsuredMotoristBodilyInjury]
        );
        assert_eq!(
            vehicle_coverage_codes("UNDERINSURED_MOTORIST_PROPERTY_DAMAGE_LIABILITY"),
            vec![CoverageCode::UnderinsuredMotoristPropertyDamage]
        );
        assert_eq!(
            vehicle_coverage_codes("COMBINED_SINGLE_LIMIT"),
            vec![CoverageCode::CombinedSingleLimit]
        );
        assert_eq!(
            dwelling_coverage_code("LOSS_OF_USE"),
            CoverageCode::LossOfUse
        );
        assert_eq!(
            dwelling_coverage_code("PERSONAL_LIABILITY"),
            CoverageCode::PersonalLiability
        );
        assert_eq!(document_kind("INSURANCE_ID_CARD"), "id_card");
        assert_eq!(
            document_kind("NOTICE_OF_CANCELLATION"),
            "cancellation_notice"
        );
    }

    #[test]
    fn dates_and_masks() {
        assert_eq!(
            parse_date("2022-10-05T14:48:00.000Z"),
            Some(Utc.with_ymd_and_hms(2022, 10, 5, 14, 48, 0).unwrap())
        );
        assert_eq!(
            parse_date("10/05/2022"),
            Some(Utc.with_ymd_and_hms(2022, 10, 5, 0, 0, 0).unwrap())
        );
        assert_eq!(
            parse_date("2022-10-05T14:48:00"),
            parse_date("2022-10-05T14:48:00Z")
        );
        assert_eq!(parse_date("soon"), None);
        assert_eq!(mask_license("T12345678"), "•••••5678");
        assert_eq!(mask_license("123"), "••••");
    }

    #[test]
    fn not_an_object_is_malformed() {
        assert!(matches!(
            normalize_pull(&json!([1]), "i"),
            Err(CanopyError::Decode(_))
        ));
    }
}
