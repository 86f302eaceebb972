//! Normalized differences between two versions of a policy or an account, in the same
//! vocabulary whichever vendor the versions came from.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};

use crate::event::{ChangeKind, FieldChange, PolicyChange};
use crate::policy::{Account, AppliesTo, Coverage, InterestedParty, Limit, Policy};

fn change(
    kind: ChangeKind,
    subject: Option<String>,
    field: Option<&str>,
    before: Option<String>,
    after: Option<String>,
) -> PolicyChange {
    PolicyChange {
        kind,
        subject,
        field: field.map(str::to_owned),
        before,
        after,
    }
}

fn date(value: Option<DateTime<Utc>>) -> Option<String> {
    value.map(|d| d.to_rfc3339_opts(SecondsFormat::Secs, true))
}

fn cents(value: Option<i64>) -> Option<String> {
    value.map(|c| c.to_string())
}

fn limit(value: Option<Limit>) -> Option<String> {
    value.map(|l| l.to_string())
}

fn coverage_subject(coverage: &Coverage) -> String {
    match &coverage.applies_to {
        AppliesTo::AllProperties => coverage.code.name(),
        AppliesTo::Property(id) => format!("{}@{id}", coverage.code.name()),
    }
}

/// Names compared the way a person would: case, spacing and punctuation do not matter.
pub fn comparable_name(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

fn party_subject(party: &InterestedParty) -> String {
    let kind = serde_json::to_value(party.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    format!("{kind}:{}", party.name.as_deref().unwrap_or(""))
}

fn keyed<T, K: Ord>(items: &[T], key: impl Fn(&T) -> K) -> BTreeMap<K, &T> {
    items.iter().map(|item| (key(item), item)).collect()
}

/// Report members present on one side only, keyed by `key`, as (removed, added) changes.
fn membership<T>(
    out: &mut Vec<PolicyChange>,
    before: &[T],
    after: &[T],
    key: impl Fn(&T) -> String,
    (removed, added): (ChangeKind, ChangeKind),
) {
    let old = keyed(before, &key);
    let new = keyed(after, &key);
    for subject in old.keys().filter(|k| !new.contains_key(*k)) {
        out.push(change(removed, Some(subject.clone()), None, None, None));
    }
    for subject in new.keys().filter(|k| !old.contains_key(*k)) {
        out.push(change(added, Some(subject.clone()), None, None, None));
    }
}

/// What changed from `before` to `after`, for `policy.updated`.
pub fn diff_policies(before: &Policy, after: &Policy) -> Vec<PolicyChange> {
    let mut out = Vec::new();
    if before.status != after.status {
        out.push(change(
            ChangeKind::StatusChanged,
            None,
            Some("status"),
            Some(before.status.as_str().into()),
            Some(after.status.as_str().into()),
        ));
    }
    for (field, b, a) in [
        (
            "effective_date",
            before.effective_date,
            after.effective_date,
        ),
        (
            "expiration_date",
            before.expiration_date,
            after.expiration_date,
        ),
        (
            "cancelled_date",
            before.cancelled_date,
            after.cancelled_date,
        ),
    ] {
        if b != a {
            out.push(change(
                ChangeKind::DatesChanged,
                None,
                Some(field),
                date(b),
                date(a),
            ));
        }
    }
    if before.premium_cents != after.premium_cents {
        out.push(change(
            ChangeKind::PremiumChanged,
            None,
            Some("premium_cents"),
            cents(before.premium_cents),
            cents(after.premium_cents),
        ));
    }

    let old = keyed(&before.coverages, coverage_subject);
    let new = keyed(&after.coverages, coverage_subject);
    for (subject, coverage) in &old {
        match new.get(subject) {
            None => out.push(change(
                ChangeKind::CoverageRemoved,
                Some(subject.clone()),
                None,
                None,
                None,
            )),
            Some(now) => {
                for (field, b, a) in [
                    (
                        "limit_per_person_cents",
                        limit(coverage.limit_per_person),
                        limit(now.limit_per_person),
                    ),
                    (
                        "limit_per_accident_cents",
                        limit(coverage.limit_per_accident),
                        limit(now.limit_per_accident),
                    ),
                    (
                        "limit_per_day_cents",
                        cents(coverage.limit_per_day_cents),
                        cents(now.limit_per_day_cents),
                    ),
                    (
                        "max_days",
                        coverage.max_days.map(|d| d.to_string()),
                        now.max_days.map(|d| d.to_string()),
                    ),
                ] {
                    if b != a {
                        out.push(change(
                            ChangeKind::CoverageLimitChanged,
                            Some(subject.clone()),
                            Some(field),
                            b,
                            a,
                        ));
                    }
                }
                if coverage.deductible_cents != now.deductible_cents {
                    out.push(change(
                        ChangeKind::CoverageDeductibleChanged,
                        Some(subject.clone()),
                        Some("deductible_cents"),
                        cents(coverage.deductible_cents),
                        cents(now.deductible_cents),
                    ));
                }
                if coverage.declined != now.declined {
                    let kind = if now.declined {
                        ChangeKind::CoverageRemoved
                    } else {
                        ChangeKind::CoverageAdded
                    };
                    out.push(change(
                        kind,
                        Some(subject.clone()),
                        Some("declined"),
                        None,
                        None,
                    ));
                }
            }
        }
    }
    for subject in new.keys().filter(|s| !old.contains_key(*s)) {
        out.push(change(
            ChangeKind::CoverageAdded,
            Some(subject.clone()),
            None,
            None,
            None,
        ));
    }

    let vehicle_key = |v: &crate::policy::Vehicle| v.vin.clone().unwrap_or_else(|| v.id.clone());
    membership(
        &mut out,
        &before.vehicles,
        &after.vehicles,
        vehicle_key,
        (ChangeKind::VehicleRemoved, ChangeKind::VehicleAdded),
    );
    membership(
        &mut out,
        &before.dwellings,
        &after.dwellings,
        |d| d.id.clone(),
        (ChangeKind::DwellingRemoved, ChangeKind::DwellingAdded),
    );

    let party_key =
        |p: &InterestedParty| (p.kind, comparable_name(p.name.as_deref().unwrap_or("")));
    let old = keyed(&before.interested_parties, party_key);
    let new = keyed(&after.interested_parties, party_key);
    for (key, party) in &old {
        match new.get(key) {
            None => out.push(change(
                ChangeKind::InterestedPartyRemoved,
                Some(party_subject(party)),
                None,
                None,
                None,
            )),
            Some(now) if now != party => {
                out.push(change(
                    ChangeKind::InterestedPartyChanged,
                    Some(party_subject(now)),
                    None,
                    None,
                    None,
                ));
            }
            Some(_) => {}
        }
    }
    for (key, party) in &new {
        if !old.contains_key(key) {
            out.push(change(
                ChangeKind::InterestedPartyAdded,
                Some(party_subject(party)),
                None,
                None,
                None,
            ));
        }
    }

    let insured_key = |i: &crate::policy::Insured| {
        comparable_name(&format!(
            "{} {} {}",
            i.first_name.as_deref().unwrap_or(""),
            i.last_name.as_deref().unwrap_or(""),
            i.full_name.as_deref().unwrap_or("")
        ))
    };
    membership(
        &mut out,
        &before.insureds,
        &after.insureds,
        insured_key,
        (ChangeKind::InsuredRemoved, ChangeKind::InsuredAdded),
    );
    out
}

/// What changed in an account's identifying details, for `account.updated`.
pub fn diff_accounts(before: &Account, after: &Account) -> Vec<FieldChange> {
    let text = |v: &Option<String>| v.clone();
    let mut out = Vec::new();
    for (field, b, a) in [
        (
            "first_name",
            text(&before.first_name),
            text(&after.first_name),
        ),
        ("last_name", text(&before.last_name), text(&after.last_name)),
        ("email", text(&before.email), text(&after.email)),
        ("phone", text(&before.phone), text(&after.phone)),
        (
            "connection",
            serde_json::to_value(before.connection)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned)),
            serde_json::to_value(after.connection)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned)),
        ),
    ] {
        if b != a {
            out.push(FieldChange {
                field: field.into(),
                before: b,
                after: a,
            });
        }
    }
    if before.policy_ids != after.policy_ids {
        out.push(FieldChange {
            field: "policy_ids".into(),
            before: Some(before.policy_ids.join(",")),
            after: Some(after.policy_ids.join(",")),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Carrier, CoverageCode, PartyKind, PolicyStatus, PolicyType};

    fn base() -> Policy {
        Policy {
            external_id: "pol_1".into(),
            policy_type: PolicyType::Auto,
            carrier: Carrier {
                id: "acme".into(),
                name: None,
            },
            policy_number: None,
            status: PolicyStatus::Active,
            effective_date: None,
            expiration_date: None,
            cancelled_date: None,
            premium_cents: Some(10_000),
            address: None,
            vehicles: vec![],
            dwellings: vec![],
            coverages: vec![Coverage {
                limit_per_person: Some(Limit::Cents(5_000_000)),
                limit_per_accident: Some(Limit::Cents(10_000_000)),
                ..Coverage::new(CoverageCode::BodilyInjury, "BI")
            }],
            insureds: vec![],
            interested_parties: vec![InterestedParty {
                kind: PartyKind::Lienholder,
                name: Some("Acme Bank, N.A.".into()),
                address: None,
                loan_number: None,
                applies_to: AppliesTo::AllProperties,
            }],
            documents: vec![],
        }
    }

    #[test]
    fn identical_policies_have_no_changes() {
        assert!(diff_policies(&base(), &base()).is_empty());
    }

    #[test]
    fn cancellation_and_coverage_reduction_are_named() {
        let mut after = base();
        after.status = PolicyStatus::Cancelled;
        after.coverages[0].limit_per_person = Some(Limit::Cents(2_500_000));
        let changes = diff_policies(&base(), &after);
        assert_eq!(changes.len(), 2, "{changes:?}");
        assert_eq!(changes[0].kind, ChangeKind::StatusChanged);
        assert_eq!(changes[0].before.as_deref(), Some("active"));
        assert_eq!(changes[0].after.as_deref(), Some("cancelled"));
        assert_eq!(changes[1].kind, ChangeKind::CoverageLimitChanged);
        assert_eq!(changes[1].subject.as_deref(), Some("bodily_injury"));
        assert_eq!(changes[1].field.as_deref(), Some("limit_per_person_cents"));
        assert_eq!(changes[1].after.as_deref(), Some("2500000"));
    }

    #[test]
    fn a_limit_becoming_unlimited_or_gaining_a_daily_cap_is_a_limit_change() {
        let mut after = base();
        after.coverages[0].limit_per_accident = Some(Limit::Unlimited);
        after.coverages[0].limit_per_day_cents = Some(3_000);
        after.coverages[0].max_days = Some(30);
        let changes = diff_policies(&base(), &after);
        let seen: Vec<_> = changes
            .iter()
            .map(|c| {
                (
                    c.field.as_deref().unwrap_or_default(),
                    c.before.as_deref(),
                    c.after.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                (
                    "limit_per_accident_cents",
                    Some("10000000"),
                    Some("unlimited")
                ),
                ("limit_per_day_cents", None, Some("3000")),
                ("max_days", None, Some("30")),
            ]
        );
        assert!(
            changes
                .iter()
                .all(|c| c.kind == ChangeKind::CoverageLimitChanged)
        );
    }

    #[test]
    fn vehicles_match_by_vin_and_report_membership() {
        let car = |id: &str, vin: Option<&str>| crate::policy::Vehicle {
            id: id.into(),
            vin: vin.map(str::to_owned),
            year: Some(2020),
            make: None,
            model: None,
            body_style: None,
            garaging_address: None,
        };
        let mut before = base();
        before.vehicles = vec![car("v1", Some("1HGCM82633A004352")), car("v2", None)];
        let mut after = base();
        // Same VIN under a new vendor id is the same car; v2 left, v3 came.
        after.vehicles = vec![car("other-id", Some("1HGCM82633A004352")), car("v3", None)];
        let changes = diff_policies(&before, &after);
        let summary: Vec<_> = changes
            .iter()
            .map(|c| (c.kind, c.subject.clone().unwrap()))
            .collect();
        assert_eq!(
            summary,
            [
                (ChangeKind::VehicleRemoved, "v2".to_owned()),
                (ChangeKind::VehicleAdded, "v3".to_owned())
            ]
        );
    }

    #[test]
    fn parties_match_by_name_regardless_of_punctuation() {
        let mut after = base();
        after.interested_parties[0].name = Some("ACME BANK NA".into());
        let changes = diff_policies(&base(), &after);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].kind, ChangeKind::InterestedPartyChanged);
        after.interested_parties.clear();
        let changes = diff_policies(&base(), &after);
        assert_eq!(changes[0].kind, ChangeKind::InterestedPartyRemoved);
    }
}
