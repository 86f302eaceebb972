//! Axle objects → the core [`Policy`] and [`Account`]. Pure: no I/O, no clock.
//!
//! Decisions worth knowing:
//! - Amounts are dollars (Axle says "number"; its examples are dollar figures) → integer cents.
//! - `isActive`: `true` → Active, `false` → Inactive (Axle does not say cancelled or expired),
//!   present but `null` → Removed (Axle: the policy may have left the account), missing →
//!   Unknown (a `manual` result carries no status).
//! - Coverage codes: exactly the ones Axle documents for the Coverage `code` (`BI` `PD` `UMBI`
//!   `UMPD` `UIMBI` `UIMPD` `UUIMBI` `UUIMPD` `COLL` `COMP`) map to core codes; a combined
//!   uninsured/underinsured code yields one coverage per part, as Canopy's combined types do.
//!   Anything else, home coverages included (their codes could not be confirmed against Axle's
//!   pages), stays `Other(code)` with its label. Labels vary between Axle examples, so only the
//!   code is read.
//! - Combined single limit: Axle writes a CSL as `limitPerAccident` on both `BI` and `PD`, and a
//!   lone limit as `limitPerAccident` too, so equal limits are never proof. Where they are the
//!   only reading left (one `BI` with no `limitPerPerson` key at all, one `PD` of the same scope
//!   with the same `limitPerAccident`), a `CombinedSingleLimit` coverage (vendor code `BI+PD`)
//!   marked `inferred` is added after them; both stay as Axle wrote them. Rules never pass on it.
//! - Properties of type `vehicle` are vehicles; other property types Axle may use for homes
//!   (its dwelling schema is undocumented) are dwellings, with the address read from `data`.
//! - Documents keep metadata only; the signed `url` is never read.
//! - A license number that does not look masked is masked here, all but the last four.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use coverwatch_core::policy::{
    Account, AccountSnapshot, Address, AppliesTo, Carrier, ConnectionStatus, Coverage,
    CoverageCode, DocumentInfo, Dwelling, Insured, InsuredRole, InterestedParty, Limit, PartyKind,
    Policy, PolicySnapshot, PolicyStatus, PolicyTerm, PolicyType, Vehicle, dollars_to_cents,
};
use serde_json::Value;

use crate::model;

/// A Policy snapshot from the `data` of `GET /policies/{id}`; `requested_id` stands in for a
/// missing `id`. `None` when the value is not an object.
pub fn policy_snapshot(raw: Value, requested_id: &str, term: PolicyTerm) -> Option<PolicySnapshot> {
    if !raw.is_object() {
        return None;
    }
    let parsed: model::Policy = serde_json::from_value(raw.clone()).ok()?;
    Some(PolicySnapshot {
        policy: policy(&parsed, requested_id),
        term,
        raw,
    })
}

/// An Account snapshot from the `data` of `GET /accounts/{id}`.
pub fn account_snapshot(raw: Value, requested_id: &str) -> Option<AccountSnapshot> {
    if !raw.is_object() {
        return None;
    }
    let parsed: model::Account = serde_json::from_value(raw.clone()).ok()?;
    Some(AccountSnapshot {
        account: account(&parsed, requested_id),
        raw,
    })
}

pub fn policy(p: &model::Policy, requested_id: &str) -> Policy {
    let mut vehicles = Vec::new();
    let mut dwellings = Vec::new();
    for (index, property) in p.properties.iter().enumerate() {
        let id = property
            .id
            .clone()
            .unwrap_or_else(|| format!("property-{index}"));
        match property
            .property_type
            .as_deref()
            .map(|t| t.trim().to_ascii_lowercase())
            .as_deref()
        {
            Some("vehicle" | "auto" | "car" | "motorcycle") => vehicles.push(vehicle(id, property)),
            Some(
                "dwelling" | "home" | "house" | "residence" | "condo" | "unit" | "building"
                | "property" | "rental",
            ) => dwellings.push(dwelling(id, property)),
            _ => {}
        }
    }
    Policy {
        external_id: p.id.clone().unwrap_or_else(|| requested_id.to_owned()),
        policy_type: policy_type(p.policy_type.as_deref()),
        carrier: carrier(p.carrier.as_deref()),
        policy_number: p.policy_number.as_deref().and_then(clean),
        status: status(p.is_active),
        effective_date: p.effective_date.as_deref().and_then(parse_date),
        expiration_date: p.expiration_date.as_deref().and_then(parse_date),
        cancelled_date: None,
        premium_cents: p.premium.and_then(dollars_to_cents),
        address: p.address.as_ref().and_then(address),
        vehicles,
        dwellings,
        coverages: coverages(&p.coverages),
        insureds: p.insureds.iter().map(insured).collect(),
        interested_parties: p.third_parties.iter().map(party).collect(),
        documents: p.documents.iter().map(document).collect(),
    }
}

pub fn account(a: &model::Account, requested_id: &str) -> Account {
    Account {
        external_id: a.id.clone().unwrap_or_else(|| requested_id.to_owned()),
        carrier: carrier(a.carrier.as_deref()),
        first_name: a.first_name.as_deref().and_then(clean),
        last_name: a.last_name.as_deref().and_then(clean),
        email: a.email.as_deref().and_then(clean),
        phone: a.phone.as_deref().and_then(clean),
        connection: connection(a.connection.as_ref()),
        policy_ids: a.policies.clone(),
        refreshed_at: a.refreshed_at.as_deref().and_then(parse_date),
    }
}

pub fn connection(c: Option<&model::Connection>) -> ConnectionStatus {
    match c.and_then(|c| c.status.as_deref()).map(str::trim) {
        None | Some("") => ConnectionStatus::Unknown,
        Some(s) if s.eq_ignore_ascii_case("active") => ConnectionStatus::Active,
        Some(_) => ConnectionStatus::Disconnected,
    }
}

pub fn status(is_active: Option<Option<bool>>) -> PolicyStatus {
    match is_active {
        Some(Some(true)) => PolicyStatus::Active,
        Some(Some(false)) => PolicyStatus::Inactive,
        Some(None) => PolicyStatus::Removed,
        None => PolicyStatus::Unknown,
    }
}

pub fn policy_type(t: Option<&str>) -> PolicyType {
    let Some(raw) = t.map(str::trim).filter(|t| !t.is_empty()) else {
        return PolicyType::Other("unknown".to_owned());
    };
    match raw.to_ascii_lowercase().as_str() {
        "auto" | "automobile" | "car" => PolicyType::Auto,
        "motorcycle" => PolicyType::Motorcycle,
        "home" | "homeowners" | "homeowner" => PolicyType::Homeowners,
        "condo" => PolicyType::Condo,
        "renters" | "renter" => PolicyType::Renters,
        "landlord" | "dwelling-fire" => PolicyType::Landlord,
        "flood" => PolicyType::Flood,
        "umbrella" => PolicyType::Umbrella,
        _ => PolicyType::Other(raw.to_owned()),
    }
}

fn carrier(slug: Option<&str>) -> Carrier {
    Carrier {
        id: slug.and_then(clean).unwrap_or_else(|| "unknown".to_owned()),
        name: None,
    }
}

/// The shared codes of one Axle coverage code. Axle's Coverage object lists `code` as
/// "Available options: BI PD UMBI UMPD UIMBI UIMPD UUIMBI UUIMPD COLL COMP"; `UU…` codes cover
/// uninsured and underinsured motorists together, so they yield both parts. Any other code is
/// kept as `Other`, trimmed.
pub fn coverage_codes(code: &str) -> Vec<CoverageCode> {
    use CoverageCode::*;
    let code = code.trim();
    match code.to_ascii_uppercase().as_str() {
        "BI" => vec![BodilyInjury],
        "PD" => vec![PropertyDamage],
        "UMBI" => vec![UninsuredMotoristBodilyInjury],
        "UMPD" => vec![UninsuredMotoristPropertyDamage],
        "UIMBI" => vec![UnderinsuredMotoristBodilyInjury],
        "UIMPD" => vec![UnderinsuredMotoristPropertyDamage],
        "UUIMBI" => vec![
            UninsuredMotoristBodilyInjury,
            UnderinsuredMotoristBodilyInjury,
        ],
        "UUIMPD" => vec![
            UninsuredMotoristPropertyDamage,
            UnderinsuredMotoristPropertyDamage,
        ],
        "COMP" => vec![Comprehensive],
        "COLL" => vec![Collision],
        _ => vec![Other(code.to_owned())],
    }
}

/// The vendor code of the coverage inferred for a combined single limit.
pub const CSL_VENDOR_CODE: &str = "BI+PD";

fn coverages(items: &[model::Coverage]) -> Vec<Coverage> {
    let mut out = Vec::new();
    for c in items {
        let vendor_code = c.code.as_deref().and_then(clean);
        let label = c.label.as_deref().and_then(clean);
        let codes = match (&vendor_code, &label) {
            (Some(code), _) => coverage_codes(code),
            // No code to key on: keep it, under its label, rather than lose it.
            (None, Some(label)) => vec![CoverageCode::Other(label.clone())],
            (None, None) => continue,
        };
        for (i, code) in codes.into_iter().enumerate() {
            out.push(Coverage {
                label: label.clone(),
                limit_per_person: c
                    .limit_per_person
                    .flatten()
                    .and_then(dollars_to_cents)
                    .map(Limit::Cents),
                limit_per_accident: c
                    .limit_per_accident
                    .and_then(dollars_to_cents)
                    .map(Limit::Cents),
                deductible_cents: c.deductible.and_then(dollars_to_cents),
                // A combined code has one premium: count it once.
                premium_cents: if i == 0 {
                    c.premium.and_then(dollars_to_cents)
                } else {
                    None
                },
                applies_to: applies_to(c.property.as_deref()),
                ..Coverage::new(code, vendor_code.clone().unwrap_or_default())
            });
        }
    }
    infer_combined_single_limits(items, &mut out);
    out
}

/// Adds an inferred CSL after each `BI`/`PD` pair that Axle's rules leave only one reading
/// for short of a lone limit (see the module doc). Axle: "Within a Policy object, there will
/// only be a single Coverage object per coverage `code` per `property`", so two of one code in
/// one scope is data we do not understand, and nothing is inferred from it.
fn infer_combined_single_limits(items: &[model::Coverage], coverages: &mut Vec<Coverage>) {
    let is = |c: &model::Coverage, code: &str| {
        c.code
            .as_deref()
            .is_some_and(|k| k.trim().eq_ignore_ascii_case(code))
    };
    let scope = |c: &model::Coverage| applies_to(c.property.as_deref());
    let mut additions = Vec::new();
    for bi in items.iter().filter(|c| is(c, "BI")) {
        let Some(limit) = bi.limit_per_accident.and_then(dollars_to_cents) else {
            continue;
        };
        // A present `limitPerPerson`, even null, belongs to a split limit.
        if bi.limit_per_person.is_some() {
            continue;
        }
        let same_scope = |code: &str| -> Vec<&model::Coverage> {
            items
                .iter()
                .filter(|c| is(c, code) && scope(c) == scope(bi))
                .collect()
        };
        let (bis, pds) = (same_scope("BI"), same_scope("PD"));
        let [pd] = pds.as_slice() else {
            continue;
        };
        if bis.len() != 1 || pd.limit_per_accident.and_then(dollars_to_cents) != Some(limit) {
            continue;
        }
        let after = coverages
            .iter()
            .rposition(|c| {
                c.applies_to == scope(bi)
                    && matches!(
                        c.code,
                        CoverageCode::BodilyInjury | CoverageCode::PropertyDamage
                    )
            })
            .map_or(coverages.len(), |i| i + 1);
        additions.push((
            after,
            Coverage {
                label: Some("Combined Single Limit".to_owned()),
                limit_per_accident: Some(Limit::Cents(limit)),
                applies_to: scope(bi),
                inferred: true,
                ..Coverage::new(CoverageCode::CombinedSingleLimit, CSL_VENDOR_CODE)
            },
        ));
    }
    additions.sort_by_key(|(at, _)| *at);
    for (at, coverage) in additions.into_iter().rev() {
        coverages.insert(at, coverage);
    }
}

fn applies_to(property: Option<&str>) -> AppliesTo {
    match property.and_then(clean) {
        Some(id) => AppliesTo::Property(id),
        None => AppliesTo::AllProperties,
    }
}

fn vehicle(id: String, property: &model::Property) -> Vehicle {
    let data: model::VehicleData =
        serde_json::from_value(Value::Object(property.data.clone())).unwrap_or_default();
    Vehicle {
        id,
        vin: data.vin.as_deref().and_then(clean),
        year: data.year.as_deref().and_then(parse_year),
        make: data.make.as_deref().and_then(clean),
        model: data.model.as_deref().and_then(clean),
        body_style: data.body_style.as_deref().and_then(clean),
        garaging_address: None,
    }
}

fn dwelling(id: String, property: &model::Property) -> Dwelling {
    // The address is either inline in `data` (as the Policy address is spelled) or nested.
    let inline: model::Address =
        serde_json::from_value(Value::Object(property.data.clone())).unwrap_or_default();
    let nested = property
        .data
        .get("address")
        .and_then(|a| serde_json::from_value::<model::Address>(a.clone()).ok());
    let replacement = ["replacementCost", "dwellingReplacementCost"]
        .iter()
        .find_map(|key| property.data.get(*key).and_then(model::f64_of));
    Dwelling {
        id,
        address: address(&inline).or_else(|| nested.as_ref().and_then(address)),
        replacement_cost_cents: replacement.and_then(dollars_to_cents),
    }
}

pub fn address(a: &model::Address) -> Option<Address> {
    let out = Address {
        line1: a.address_line1.as_deref().and_then(clean),
        line2: a.address_line2.as_deref().and_then(clean),
        city: a.city.as_deref().and_then(clean),
        state: a.state.as_deref().and_then(clean),
        postal_code: a.postal_code.as_deref().and_then(clean),
        country: a.country.as_deref().and_then(clean),
    };
    (out != Address::default()).then_some(out)
}

fn insured(i: &model::Insured) -> Insured {
    let role = match i
        .insured_type
        .as_deref()
        .map(|t| t.trim().to_ascii_lowercase())
        .as_deref()
    {
        Some("primary") => InsuredRole::Primary,
        Some("secondary") => InsuredRole::Secondary,
        Some("driver") => InsuredRole::Driver,
        Some("excluded" | "excluded-driver" | "excluded_driver") => InsuredRole::ExcludedDriver,
        _ => InsuredRole::NamedInsured,
    };
    Insured {
        first_name: i.first_name.as_deref().and_then(clean),
        last_name: i.last_name.as_deref().and_then(clean),
        full_name: None,
        role,
        license_masked: i
            .license_no
            .as_deref()
            .and_then(clean)
            .map(|l| mask_license(&l)),
        license_state: i.license_state.as_deref().and_then(clean),
        applies_to: applies_to(i.property.as_deref()),
    }
}

/// Axle masks license numbers (`•••••1234`); one that arrives in the clear is masked here so
/// that a full number is never stored.
pub fn mask_license(license: &str) -> String {
    // `X` and `x` occur in real numbers, so only a run of them counts as a mask.
    let masked = license.chars().any(|c| matches!(c, '•' | '*' | '#' | '●'))
        || license.to_ascii_uppercase().contains("XXX");
    if masked {
        return license.to_owned();
    }
    let chars: Vec<char> = license.chars().collect();
    let keep = chars.len().saturating_sub(4);
    chars
        .iter()
        .enumerate()
        .map(|(i, c)| if i < keep { '•' } else { *c })
        .collect()
}

/// Axle's third-party `type` is "Available options: lienholder lessor interest"; `interest` is
/// its default for a party the carrier did not classify (changelog, 2023-05-24), so it, and any
/// type Axle does not document, is `Unclassified`: it may be a lienholder, lessor or mortgagee,
/// and a rule asking for one answers UNKNOWN on it rather than a pass or a fail on a guess.
fn party(t: &model::ThirdParty) -> InterestedParty {
    let kind = match t
        .party_type
        .as_deref()
        .map(|t| t.trim().to_ascii_lowercase())
        .as_deref()
    {
        Some("lienholder") => PartyKind::Lienholder,
        Some("lessor") => PartyKind::Lessor,
        _ => PartyKind::Unclassified,
    };
    InterestedParty {
        kind,
        name: t.name.as_deref().and_then(clean),
        address: t.address.as_ref().and_then(address),
        loan_number: t.loan_number.as_deref().and_then(clean),
        applies_to: applies_to(t.property.as_deref()),
    }
}

fn document(d: &model::Document) -> DocumentInfo {
    DocumentInfo {
        id: d.id.as_deref().and_then(clean),
        name: d.name.as_deref().and_then(clean),
        kinds: d
            .kinds
            .iter()
            .filter_map(|k| clean(k))
            .map(|k| k.to_ascii_lowercase().replace(['-', ' '], "_"))
            .collect(),
        source: d.source.as_deref().and_then(clean),
        created_at: d.created_at.as_deref().and_then(parse_date),
    }
}

/// ISO 8601 as Axle writes it (`2022-10-05T14:48:00.000Z`), plus the looser forms carriers
/// produce: no zone (read as UTC) or a bare date (midnight UTC).
pub fn parse_date(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Some(dt.with_timezone(&Utc));
    }
    for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(s, format) {
            return Some(naive.and_utc());
        }
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| d.and_utc())
}

fn parse_year(s: &str) -> Option<i32> {
    let s = s.trim();
    let year = s.parse::<i32>().ok().or_else(|| {
        s.parse::<f64>()
            .ok()
            .filter(|y| y.fract() == 0.0)
            .map(|y| y as i32)
    })?;
    (1800..=3000).contains(&year).then_some(year)
}

fn clean(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn date(s: &str) -> Option<DateTime<Utc>> {
        Some(DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc))
    }

    /// The sandbox's `username` / `password` main auto policy, as Axle serves it.
    fn simple_auto() -> Value {
        json!({
            "id": "pol_main", "account": "acc_1", "type": "auto", "carrier": "state-farm",
            "policyNumber": "AUTO-100-2001", "isActive": true,
            "effectiveDate": "2026-01-09T04:00:00.000Z", "expirationDate": "2026-07-09T04:00:00.000Z",
            "premium": 1342.5,
            "address": {"addressLine1": "123 Fake St.", "addressLine2": "Unit 456", "city": "Atlanta",
                        "state": "Georgia", "postalCode": "30315", "country": "USA"},
            "properties": [
                {"id": "prp_a", "type": "vehicle", "data": {"year": "2017", "make": "HONDA", "model": "CR-V",
                 "vin": "SMTD44GN3HT812287", "bodyStyle": "SUV"}},
                {"id": "prp_b", "type": "vehicle", "data": {"year": "2020", "make": "TOYOTA", "model": "CAMRY",
                 "vin": "4T1B11HK5LU000002", "bodyStyle": "Sedan"}}
            ],
            "coverages": [
                {"code": "BI", "label": "Bodily Injury", "limitPerPerson": 250000, "limitPerAccident": 500000},
                {"code": "PD", "label": "Property Damage", "limitPerAccident": 100000},
                {"code": "UMBI", "label": "Uninsured Motorists Bodily Injury", "limitPerPerson": 100000, "limitPerAccident": 300000},
                {"code": "UMPD", "label": "Uninsured Motorists Property Damage", "limitPerAccident": 25000, "deductible": 250},
                {"code": "COMP", "label": "Comprehensive", "deductible": 500, "property": "prp_a"},
                {"code": "COLL", "label": "Collision", "deductible": 500, "property": "prp_a"}
            ],
            "insureds": [
                {"firstName": "John", "lastName": "Smith", "type": "primary", "dateOfBirthYear": "1985",
                 "licenseNo": "•••••1234", "licenseState": "GA", "dateOfBirth": null},
                {"firstName": "Jane", "lastName": "Smith", "type": "secondary", "licenseNo": "D1234567"}
            ],
            "thirdParties": [{"type": "lienholder", "name": "Capital One Auto Finance", "property": "prp_a",
                "address": {"addressLine1": "Po Box 105205", "addressLine2": null, "city": "Atlanta",
                            "state": "GA", "postalCode": "30348-5205", "country": "USA"}}],
            "documents": [{"createdAt": "2026-01-09T04:00:00.000Z", "name": "Declaration Page",
                "source": "carrier", "type": ["declaration-page"], "url": "https://signed.example/doc?sig=abc"}],
            "createdAt": "2026-03-10T15:00:00.000Z", "modifiedAt": "2026-03-10T15:00:00.000Z",
            "refreshedAt": "2026-03-10T15:00:00.000Z"
        })
    }

    #[test]
    fn an_auto_policy_maps_field_by_field() {
        let snap = policy_snapshot(simple_auto(), "pol_requested", PolicyTerm::Current).unwrap();
        assert_eq!(snap.raw, simple_auto());
        assert_eq!(snap.term, PolicyTerm::Current);
        let p = snap.policy;
        assert_eq!(p.external_id, "pol_main");
        assert_eq!(p.policy_type, PolicyType::Auto);
        assert_eq!(
            p.carrier,
            Carrier {
                id: "state-farm".into(),
                name: None
            }
        );
        assert_eq!(p.policy_number.as_deref(), Some("AUTO-100-2001"));
        assert_eq!(p.status, PolicyStatus::Active);
        assert_eq!(p.effective_date, date("2026-01-09T04:00:00Z"));
        assert_eq!(p.expiration_date, date("2026-07-09T04:00:00Z"));
        assert_eq!(p.cancelled_date, None);
        assert_eq!(p.premium_cents, Some(134_250));
        assert_eq!(
            p.address,
            Some(Address {
                line1: Some("123 Fake St.".into()),
                line2: Some("Unit 456".into()),
                city: Some("Atlanta".into()),
                state: Some("Georgia".into()),
                postal_code: Some("30315".into()),
                country: Some("USA".into()),
            })
        );
        assert_eq!(
            p.vehicles,
            vec![
                Vehicle {
                    id: "prp_a".into(),
                    vin: Some("SMTD44GN3HT812287".into()),
                    year: Some(2017),
                    make: Some("HONDA".into()),
                    model: Some("CR-V".into()),
                    body_style: Some("SUV".into()),
                    garaging_address: None,
                },
                Vehicle {
                    id: "prp_b".into(),
                    vin: Some("4T1B11HK5LU000002".into()),
                    year: Some(2020),
                    make: Some("TOYOTA".into()),
                    model: Some("CAMRY".into()),
                    body_style: Some("Sedan".into()),
                    garaging_address: None,
                },
            ]
        );
        assert!(p.dwellings.is_empty());

        let codes: Vec<_> = p.coverages.iter().map(|c| c.code.clone()).collect();
        assert_eq!(
            codes,
            vec![
                CoverageCode::BodilyInjury,
                CoverageCode::PropertyDamage,
                CoverageCode::UninsuredMotoristBodilyInjury,
                CoverageCode::UninsuredMotoristPropertyDamage,
                CoverageCode::Comprehensive,
                CoverageCode::Collision,
            ]
        );
        assert_eq!(
            p.coverages[0],
            Coverage {
                label: Some("Bodily Injury".into()),
                limit_per_person: Some(Limit::Cents(25_000_000)),
                limit_per_accident: Some(Limit::Cents(50_000_000)),
                ..Coverage::new(CoverageCode::BodilyInjury, "BI")
            }
        );
        assert_eq!(p.coverages[3].deductible_cents, Some(25_000));
        assert_eq!(
            p.coverages[4].applies_to,
            AppliesTo::Property("prp_a".into())
        );
        assert_eq!(p.coverages[4].deductible_cents, Some(50_000));

        assert_eq!(
            p.insureds[0],
            Insured {
                first_name: Some("John".into()),
                last_name: Some("Smith".into()),
                full_name: None,
                role: InsuredRole::Primary,
                license_masked: Some("•••••1234".into()),
                license_state: Some("GA".into()),
                applies_to: AppliesTo::AllProperties,
            }
        );
        assert_eq!(p.insureds[1].role, InsuredRole::Secondary);
        // A license that arrives in the clear is masked before it is stored.
        assert_eq!(p.insureds[1].license_masked.as_deref(), Some("••••4567"));
        assert_eq!(mask_license("XXXXX1234"), "XXXXX1234");
        assert_eq!(mask_license("X1234567"), "••••4567");
        assert_eq!(mask_license("123"), "123");

        assert_eq!(
            p.interested_parties,
            vec![InterestedParty {
                kind: PartyKind::Lienholder,
                name: Some("Capital One Auto Finance".into()),
                address: Some(Address {
                    line1: Some("Po Box 105205".into()),
                    line2: None,
                    city: Some("Atlanta".into()),
                    state: Some("GA".into()),
                    postal_code: Some("30348-5205".into()),
                    country: Some("USA".into()),
                }),
                loan_number: None,
                applies_to: AppliesTo::Property("prp_a".into()),
            }]
        );
        assert_eq!(
            p.documents,
            vec![DocumentInfo {
                id: None,
                name: Some("Declaration Page".into()),
                kinds: vec!["declaration_page".into()],
                source: Some("carrier".into()),
                created_at: date("2026-01-09T04:00:00Z"),
            }]
        );
        let mapped = serde_json::to_string(&p).unwrap();
        assert!(
            !mapped.contains("signed.example"),
            "document URLs are never kept"
        );
    }

    #[test]
    fn is_active_null_and_missing_differ() {
        let mut raw = simple_auto();
        raw["isActive"] = json!(false);
        assert_eq!(
            policy_snapshot(raw.clone(), "x", PolicyTerm::Current)
                .unwrap()
                .policy
                .status,
            PolicyStatus::Inactive
        );
        raw["isActive"] = Value::Null;
        assert_eq!(
            policy_snapshot(raw.clone(), "x", PolicyTerm::Current)
                .unwrap()
                .policy
                .status,
            PolicyStatus::Removed
        );
        raw.as_object_mut().unwrap().remove("isActive");
        assert_eq!(
            policy_snapshot(raw, "x", PolicyTerm::Current)
                .unwrap()
                .policy
                .status,
            PolicyStatus::Unknown
        );
    }

    /// Axle, Coverages, Auto Policy Coverage Types, rules applied: "If the policy returns a
    /// combined single limit (CSL) for Bodily Injury and Property Damage, the limit will be set
    /// as limitPerAccident for both Bodily Injury and Property Damage coverages"
    /// (docs.axle.insure/api-reference/policies/coverages). The same page records a lone limit
    /// as limitPerAccident, so the CSL is only inferred, and marked so.
    #[test]
    fn a_combined_single_limit_is_inferred_and_marked() {
        let raw = json!({"id": "pol_csl", "coverages": [
            {"code": "BI", "label": "Bodily Injury", "limitPerAccident": 300000},
            {"code": "PD", "label": "Property Damage", "limitPerAccident": 300000, "deductible": 500},
            {"code": "UMBI", "label": "Uninsured Motorists Bodily Injury", "limitPerAccident": 300000},
            {"code": "COMP", "deductible": 250, "property": "prp_c"}
        ]});
        let p = policy_snapshot(raw, "x", PolicyTerm::Current)
            .unwrap()
            .policy;
        let codes: Vec<_> = p.coverages.iter().map(|c| c.code.clone()).collect();
        assert_eq!(
            codes,
            vec![
                CoverageCode::BodilyInjury,
                CoverageCode::PropertyDamage,
                CoverageCode::CombinedSingleLimit,
                CoverageCode::UninsuredMotoristBodilyInjury,
                CoverageCode::Comprehensive,
            ]
        );
        // What Axle stated stays as stated.
        assert_eq!(p.coverages[0].limit_per_person, None);
        assert_eq!(
            p.coverages[0].limit_per_accident,
            Some(Limit::Cents(30_000_000))
        );
        assert!(!p.coverages[0].inferred && !p.coverages[1].inferred);
        assert_eq!(p.coverages[1].deductible_cents, Some(50_000));
        assert_eq!(
            p.coverages[2],
            Coverage {
                label: Some("Combined Single Limit".into()),
                limit_per_accident: Some(Limit::Cents(30_000_000)),
                inferred: true,
                ..Coverage::new(CoverageCode::CombinedSingleLimit, CSL_VENDOR_CODE)
            }
        );

        // One inferred CSL per vehicle when each vehicle has its own pair.
        let p = policy_snapshot(
            json!({"coverages": [
                {"code": "BI", "limitPerAccident": 100000, "property": "prp_1"},
                {"code": "PD", "limitPerAccident": 100000, "property": "prp_1"},
                {"code": "BI", "limitPerAccident": 300000, "property": "prp_2"},
                {"code": "PD", "limitPerAccident": 300000, "property": "prp_2"}
            ]}),
            "x",
            PolicyTerm::Current,
        )
        .unwrap()
        .policy;
        let csls: Vec<_> = p
            .coverages
            .iter()
            .enumerate()
            .filter(|(_, c)| c.code == CoverageCode::CombinedSingleLimit)
            .map(|(i, c)| (i, c.applies_to.clone(), c.limit_per_accident))
            .collect();
        assert_eq!(
            csls,
            vec![
                (
                    2,
                    AppliesTo::Property("prp_1".into()),
                    Some(Limit::Cents(10_000_000))
                ),
                (
                    5,
                    AppliesTo::Property("prp_2".into()),
                    Some(Limit::Cents(30_000_000))
                ),
            ]
        );
    }

    #[test]
    fn a_csl_is_not_inferred_where_another_reading_remains() {
        for coverages in [
            // A split limit.
            json!([{"code": "BI", "limitPerPerson": 25000, "limitPerAccident": 50000},
                   {"code": "PD", "limitPerAccident": 50000}]),
            // A per-person part the carrier has but did not give: "null - The carrier data source
            // supports the field, but no information is present" (API overview, Null values).
            json!([{"code": "BI", "limitPerPerson": null, "limitPerAccident": 100000},
                   {"code": "PD", "limitPerAccident": 100000}]),
            // Different limits, or only one of the pair.
            json!([{"code": "BI", "limitPerAccident": 100000}, {"code": "PD", "limitPerAccident": 50000}]),
            json!([{"code": "BI", "limitPerAccident": 100000}]),
            // Different scopes.
            json!([{"code": "BI", "limitPerAccident": 100000, "property": "prp_1"},
                   {"code": "PD", "limitPerAccident": 100000}]),
            // Two PD in one scope, which Axle says does not happen.
            json!([{"code": "BI", "limitPerAccident": 100000},
                   {"code": "PD", "limitPerAccident": 100000}, {"code": "PD", "limitPerAccident": 100000}]),
        ] {
            let p = policy_snapshot(json!({"coverages": coverages}), "x", PolicyTerm::Current)
                .unwrap()
                .policy;
            assert!(
                !p.coverages
                    .iter()
                    .any(|c| c.code == CoverageCode::CombinedSingleLimit),
                "{coverages}"
            );
        }
        // `CSL` is no code Axle documents: it stays the vendor's own, and infers nothing.
        let p = policy_snapshot(
            json!({"coverages": [{"code": "csl", "label": "Combined Single Limit", "limitPerAccident": 300000}]}),
            "x",
            PolicyTerm::Current,
        )
        .unwrap()
        .policy;
        assert_eq!(p.coverages.len(), 1);
        assert_eq!(p.coverages[0].code, CoverageCode::Other("csl".into()));
        assert_eq!(
            p.coverages[0].label.as_deref(),
            Some("Combined Single Limit")
        );
    }

    /// Axle, Coverage object, `code`: "Available options: `BI` `PD` `UMBI` `UMPD` `UIMBI`
    /// `UIMPD` `UUIMBI` `UUIMPD` `COLL` `COMP`" (docs.axle.insure/api-reference/_snippets/coverage,
    /// referenced from docs.axle.insure/api-reference/policies/coverages).
    #[test]
    fn exactly_the_documented_codes_map() {
        use CoverageCode::*;
        for (code, want) in [
            ("BI", vec![BodilyInjury]),
            ("PD", vec![PropertyDamage]),
            ("UMBI", vec![UninsuredMotoristBodilyInjury]),
            ("UMPD", vec![UninsuredMotoristPropertyDamage]),
            ("UIMBI", vec![UnderinsuredMotoristBodilyInjury]),
            ("UIMPD", vec![UnderinsuredMotoristPropertyDamage]),
            (
                "UUIMBI",
                vec![
                    UninsuredMotoristBodilyInjury,
                    UnderinsuredMotoristBodilyInjury,
                ],
            ),
            (
                "UUIMPD",
                vec![
                    UninsuredMotoristPropertyDamage,
                    UnderinsuredMotoristPropertyDamage,
                ],
            ),
            ("COLL", vec![Collision]),
            (" comp ", vec![Comprehensive]),
            // Undocumented: the vendor's own code, whatever it looks like.
            ("CSL", vec![Other("CSL".into())]),
            ("MED", vec![Other("MED".into())]),
            ("DWELL", vec![Other("DWELL".into())]),
        ] {
            assert_eq!(coverage_codes(code), want, "{code}");
        }

        // A combined code yields each part, with the limits on each and the premium once.
        let p = policy_snapshot(
            json!({"coverages": [
                {"code": "UUIMBI", "label": "Uninsured/Underinsured Motorists Bodily Injury",
                 "limitPerPerson": 100000, "limitPerAccident": 300000, "premium": 40.5},
                {"code": "UIMPD", "label": "Underinsured Motorists Property Damage",
                 "limitPerAccident": 25000, "deductible": 250, "property": "prp_1"},
                {"label": "Roadside"}, {"limitPerAccident": 1}
            ]}),
            "x",
            PolicyTerm::Current,
        )
        .unwrap()
        .policy;
        let seen: Vec<_> = p
            .coverages
            .iter()
            .map(|c| {
                (
                    c.code.clone(),
                    c.vendor_code.as_str(),
                    c.limit_per_person,
                    c.limit_per_accident,
                    c.premium_cents,
                )
            })
            .collect();
        assert_eq!(
            seen,
            vec![
                (
                    UninsuredMotoristBodilyInjury,
                    "UUIMBI",
                    Some(Limit::Cents(10_000_000)),
                    Some(Limit::Cents(30_000_000)),
                    Some(4_050)
                ),
                (
                    UnderinsuredMotoristBodilyInjury,
                    "UUIMBI",
                    Some(Limit::Cents(10_000_000)),
                    Some(Limit::Cents(30_000_000)),
                    None
                ),
                (
                    UnderinsuredMotoristPropertyDamage,
                    "UIMPD",
                    None,
                    Some(Limit::Cents(2_500_000)),
                    None
                ),
                // No code to key on: kept under its label.
                (Other("Roadside".into()), "", None, None, None),
            ]
        );
        assert_eq!(p.coverages[2].deductible_cents, Some(25_000));
        assert_eq!(
            p.coverages[2].applies_to,
            AppliesTo::Property("prp_1".into())
        );
    }

    #[test]
    fn a_home_policy_maps_dwellings_and_interests() {
        let raw = json!({
            "id": "pol_home", "type": "home", "carrier": "allstate", "policyNumber": "HOME-300-4001",
            "isActive": true, "premium": "1850.00",
            "address": {"addressLine1": "500 Oak Ave.", "addressLine2": null, "city": "Decatur",
                        "state": "Georgia", "postalCode": "30030", "country": "USA"},
            "properties": [{"id": "prp_h", "type": "dwelling", "data": {"addressLine1": "500 Oak Ave.",
                "city": "Decatur", "state": "Georgia", "postalCode": "30030", "yearBuilt": "1998"}},
                {"id": "prp_boat", "type": "watercraft", "data": {}}],
            "coverages": [{"code": "DWELL", "label": "Dwelling", "limitPerAccident": 350000, "deductible": 1000}],
            "thirdParties": [{"type": "interest", "name": "Sandbox Home Lending"},
                             {"type": "lessor", "name": "Lease Co"}, {"type": "mortgagee"},
                             {"type": "lienholder", "name": "Car Credit"}],
            "insureds": [{"firstName": "Harper", "lastName": "Holmes", "type": "primary", "licenseNo": null}]
        });
        let p = policy_snapshot(raw, "x", PolicyTerm::Renewal)
            .unwrap()
            .policy;
        assert_eq!(p.policy_type, PolicyType::Homeowners);
        assert_eq!(p.premium_cents, Some(185_000));
        assert!(p.vehicles.is_empty());
        assert_eq!(
            p.dwellings,
            vec![Dwelling {
                id: "prp_h".into(),
                address: Some(Address {
                    line1: Some("500 Oak Ave.".into()),
                    line2: None,
                    city: Some("Decatur".into()),
                    state: Some("Georgia".into()),
                    postal_code: Some("30030".into()),
                    country: None,
                }),
                replacement_cost_cents: None,
            }]
        );
        // No home coverage code could be confirmed against Axle's pages: the code is Axle's own,
        // with its label and limits, for display and for a rule keyed on it.
        assert_eq!(p.coverages[0].code, CoverageCode::Other("DWELL".into()));
        assert_eq!(p.coverages[0].label.as_deref(), Some("Dwelling"));
        assert_eq!(
            p.coverages[0].limit_per_accident,
            Some(Limit::Cents(35_000_000))
        );
        assert_eq!(p.coverages[0].deductible_cents, Some(100_000));
        // Axle's ThirdParty `type`: "Available options: lienholder lessor interest"
        // (docs.axle.insure/api-reference/_snippets/thirdParty); "Policy.thirdParties.type has a
        // default value of interest. If you do not find a thirdParty of type lienholder or lessor
        // on the policy, the data source may not have specified this classification" (changelog,
        // 2023-05-24). An interest's role is unstated: not a mortgagee, not "no mortgagee".
        let kinds: Vec<_> = p.interested_parties.iter().map(|t| t.kind).collect();
        assert_eq!(
            kinds,
            vec![
                PartyKind::Unclassified,
                PartyKind::Lessor,
                PartyKind::Unclassified,
                PartyKind::Lienholder,
            ]
        );
        assert_eq!(p.interested_parties[0].applies_to, AppliesTo::AllProperties);
        assert_eq!(p.insureds[0].license_masked, None);
    }

    #[test]
    fn a_sparse_policy_still_maps() {
        let p = policy_snapshot(
            json!({"isActive": null, "type": "boat"}),
            "pol_req",
            PolicyTerm::Current,
        )
        .unwrap()
        .policy;
        assert_eq!(p.external_id, "pol_req");
        assert_eq!(p.policy_type, PolicyType::Other("boat".into()));
        assert_eq!(p.carrier.id, "unknown");
        assert_eq!(p.status, PolicyStatus::Removed);
        assert_eq!(p.premium_cents, None);
        assert_eq!(p.address, None);
        assert!(policy_snapshot(json!([1, 2]), "x", PolicyTerm::Current).is_none());
        assert_eq!(policy_type(None), PolicyType::Other("unknown".into()));
        for (t, want) in [
            ("motorcycle", PolicyType::Motorcycle),
            ("condo", PolicyType::Condo),
            ("renters", PolicyType::Renters),
            ("flood", PolicyType::Flood),
        ] {
            assert_eq!(policy_type(Some(t)), want);
        }
    }

    #[test]
    fn vehicle_years_and_dates_are_read_loosely() {
        assert_eq!(parse_year("2017"), Some(2017));
        assert_eq!(parse_year(" 2017.0 "), Some(2017));
        assert_eq!(parse_year("twenty"), None);
        assert_eq!(parse_year("17"), None);
        assert_eq!(
            parse_date("2022-10-05T14:48:00.000Z"),
            date("2022-10-05T14:48:00Z")
        );
        assert_eq!(
            parse_date("2022-10-05T10:48:00-04:00"),
            date("2022-10-05T14:48:00Z")
        );
        assert_eq!(
            parse_date("2022-10-05T14:48:00"),
            date("2022-10-05T14:48:00Z")
        );
        assert_eq!(parse_date("2022-10-05"), date("2022-10-05T00:00:00Z"));
        assert_eq!(parse_date("soon"), None);
    }

    #[test]
    fn an_account_maps_field_by_field() {
        let raw = json!({
            "id": "acc_1", "carrier": "state-farm", "firstName": "John", "lastName": "Smith",
            "email": "john.smith@example.com", "phone": "+14045550101",
            "policies": ["pol_1", "pol_2"],
            "connection": {"status": "active", "updatedAt": "2026-03-10T15:00:00.000Z"},
            "createdAt": "2026-03-10T15:00:00.000Z", "modifiedAt": "2026-03-10T15:00:00.000Z",
            "refreshedAt": "2026-03-11T15:00:00.000Z"
        });
        let snap = account_snapshot(raw.clone(), "acc_req").unwrap();
        assert_eq!(snap.raw, raw);
        assert_eq!(
            snap.account,
            Account {
                external_id: "acc_1".into(),
                carrier: Carrier {
                    id: "state-farm".into(),
                    name: None
                },
                first_name: Some("John".into()),
                last_name: Some("Smith".into()),
                email: Some("john.smith@example.com".into()),
                phone: Some("+14045550101".into()),
                connection: ConnectionStatus::Active,
                policy_ids: vec!["pol_1".into(), "pol_2".into()],
                refreshed_at: date("2026-03-11T15:00:00Z"),
            }
        );
        let mut disconnected = raw.clone();
        disconnected["connection"]["status"] = json!("credentials-expired");
        assert_eq!(
            account_snapshot(disconnected, "x")
                .unwrap()
                .account
                .connection,
            ConnectionStatus::Disconnected
        );
        let bare = account_snapshot(json!({}), "acc_req").unwrap().account;
        assert_eq!(bare.external_id, "acc_req");
        assert_eq!(bare.connection, ConnectionStatus::Unknown);
    }
}
