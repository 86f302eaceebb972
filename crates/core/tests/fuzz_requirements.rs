//! Property tests of requirement sets: the JSON parser callers send sets through, and the
//! evaluator the inbox worker runs on every new snapshot. Every string may be any Unicode (a
//! postal code `"1234é"` once panicked the worker and stopped every tenant's webhooks), every
//! number any value, and the policies evaluated any normalized policy a vendor could yield.
//!
//! The properties: parsing never panics and accepts or names the field at fault; what it
//! accepts is stored and read back unchanged; evaluation never panics, for any set the store
//! can read back, and answers one outcome per rule.
//! `PROPTEST_CASES=100000 cargo test -p coverwatch-core --test fuzz_requirements` runs longer.

mod support;

use chrono::{DateTime, TimeZone, Utc};
use coverwatch_core::event::RuleResult;
use coverwatch_core::policy::{
    Address, AppliesTo, Carrier, Coverage, CoverageCode, DocumentInfo, Dwelling, Insured,
    InsuredRole, InterestedParty, Limit, PartyKind, Policy, PolicyStatus, PolicyType, Vehicle,
};
use coverwatch_core::requirements::{
    OverallStatus, RequirementSet, Rule, evaluate, requirements_transition, transition_event,
};
use proptest::prelude::*;
use serde_json::{Value, json};

use support::fuzz_json::{config, json as any_json, mutated, number, text};

const KEYS: &[&str] = &[
    "id",
    "name",
    "rules",
    "rule",
    "types",
    "other",
    "days",
    "per_person_cents",
    "per_accident_cents",
    "max_deductible_cents",
    "kind",
    "vin",
    "line1",
    "city",
    "state",
    "postal_code",
];

/// Values a caller's rule and a vendor's policy may share, so that a rule sometimes matches
/// and the comparison code runs to its end rather than stopping at the first difference.
const SHARED: &[&str] = &[
    "1HGCM82633A004352",
    "1hgcm82633a004352 ",
    "SMTD44GN3HT812287",
    "1 Main St",
    "1 MAIN STREET, Apt. #4",
    "Springfield",
    "IL",
    "Illinois",
    "illinois ",
    "62701",
    "62701-1234",
    "1234é",
    "12345é",
    "Acme Bank, N.A.",
    "ACME BANK NA",
    "é",
    "",
];

/// Caller or vendor text: anything, or one of the shared values.
fn field() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => text(),
        1 => prop::sample::select(SHARED).prop_map(str::to_owned),
    ]
}

fn date() -> impl Strategy<Value = DateTime<Utc>> {
    let (min, max) = (
        DateTime::<Utc>::MIN_UTC.timestamp(),
        DateTime::<Utc>::MAX_UTC.timestamp(),
    );
    prop_oneof![
        // Around today, where real policies are.
        1 => (1_500_000_000i64..2_200_000_000).prop_map(|s| Utc.timestamp_opt(s, 0).unwrap()),
        1 => (min..=max).prop_map(|s| Utc.timestamp_opt(s, 0).unwrap()),
        1 => Just(DateTime::<Utc>::MIN_UTC),
        1 => Just(DateTime::<Utc>::MAX_UTC),
    ]
}

fn cents() -> impl Strategy<Value = i64> {
    prop_oneof![
        0i64..10_000_000,
        any::<i64>(),
        Just(i64::MAX),
        Just(i64::MIN),
        Just(0),
    ]
}

fn policy_type() -> impl Strategy<Value = PolicyType> {
    prop_oneof![
        Just(PolicyType::Auto),
        Just(PolicyType::Motorcycle),
        Just(PolicyType::Homeowners),
        Just(PolicyType::Condo),
        Just(PolicyType::Renters),
        Just(PolicyType::Landlord),
        Just(PolicyType::Flood),
        Just(PolicyType::Umbrella),
        field().prop_map(PolicyType::Other),
    ]
}

fn status() -> impl Strategy<Value = PolicyStatus> {
    prop::sample::select(vec![
        PolicyStatus::Active,
        PolicyStatus::Inactive,
        PolicyStatus::Cancelled,
        PolicyStatus::Expired,
        PolicyStatus::PendingActivation,
        PolicyStatus::PendingCancellation,
        PolicyStatus::Rescinded,
        PolicyStatus::Unverified,
        PolicyStatus::Quote,
        PolicyStatus::Removed,
        PolicyStatus::Unknown,
    ])
}

fn party_kind() -> impl Strategy<Value = PartyKind> {
    prop::sample::select(vec![
        PartyKind::Lienholder,
        PartyKind::Lessor,
        PartyKind::Mortgagee,
        PartyKind::AdditionalInterest,
    ])
}

fn coverage_code() -> impl Strategy<Value = CoverageCode> {
    use CoverageCode::*;
    prop_oneof![
        3 => prop::sample::select(vec![
            BodilyInjury,
            PropertyDamage,
            CombinedSingleLimit,
            Comprehensive,
            Collision,
            UninsuredMotoristBodilyInjury,
            Dwelling,
            PersonalLiability,
        ]),
        1 => field().prop_map(Other),
    ]
}

fn address() -> impl Strategy<Value = Address> {
    (
        prop::option::of(field()),
        prop::option::of(field()),
        prop::option::of(field()),
        prop::option::of(field()),
        prop::option::of(field()),
        prop::option::of(field()),
    )
        .prop_map(
            |(line1, line2, city, state, postal_code, country)| Address {
                line1,
                line2,
                city,
                state,
                postal_code,
                country,
            },
        )
}

/// A property id: often one of the policy's own, so that coverages and parties bind to a unit.
fn applies_to() -> impl Strategy<Value = AppliesTo> {
    prop_oneof![
        Just(AppliesTo::AllProperties),
        prop::sample::select(vec!["v0", "v1", "d0"]).prop_map(|id| AppliesTo::Property(id.into())),
        field().prop_map(AppliesTo::Property),
    ]
}

fn vehicle(index: usize) -> impl Strategy<Value = Vehicle> {
    (
        prop::option::of(field()),
        prop::option::of(any::<i32>()),
        prop::option::of(field()),
        prop::option::of(address()),
    )
        .prop_map(move |(vin, year, make, garaging_address)| Vehicle {
            id: format!("v{index}"),
            vin,
            year,
            make,
            model: None,
            body_style: None,
            garaging_address,
        })
}

fn limit() -> impl Strategy<Value = Limit> {
    prop_oneof![cents().prop_map(Limit::Cents), Just(Limit::Unlimited)]
}

fn coverage() -> impl Strategy<Value = Coverage> {
    (
        (
            coverage_code(),
            prop::option::of(limit()),
            prop::option::of(limit()),
            prop::option::of(cents()),
        ),
        (
            prop::option::of(cents()),
            prop::option::of(any::<u32>()),
            applies_to(),
            any::<bool>(),
            any::<bool>(),
        ),
    )
        .prop_map(
            |(
                (code, per_person, per_accident, deductible),
                (per_day, max_days, applies_to, declined, inferred),
            )| Coverage {
                limit_per_person: per_person,
                limit_per_accident: per_accident,
                limit_per_day_cents: per_day,
                max_days,
                deductible_cents: deductible,
                applies_to,
                declined,
                inferred,
                ..Coverage::new(code, String::new())
            },
        )
}

fn party() -> impl Strategy<Value = InterestedParty> {
    (
        party_kind(),
        prop::option::of(field()),
        prop::option::of(address()),
        applies_to(),
    )
        .prop_map(|(kind, name, address, applies_to)| InterestedParty {
            kind,
            name,
            address,
            loan_number: None,
            applies_to,
        })
}

/// Any normalized policy: arbitrary text in every string, dates anywhere chrono can hold them.
fn policy() -> impl Strategy<Value = Policy> {
    let head = (
        field(),
        policy_type(),
        status(),
        prop::option::of(date()),
        prop::option::of(date()),
        prop::option::of(date()),
        prop::option::of(address()),
    );
    let parts = (
        prop::collection::vec(vehicle(0), 0..2),
        prop::collection::vec(vehicle(1), 0..2),
        prop::collection::vec(
            (prop::option::of(address()), prop::option::of(cents())),
            0..2,
        ),
        prop::collection::vec(coverage(), 0..6),
        prop::collection::vec(party(), 0..3),
        prop::collection::vec(field(), 0..2),
    );
    (head, parts).prop_map(
        |(
            (external_id, policy_type, status, effective, expiration, cancelled, address),
            (first, second, dwellings, coverages, parties, insured_names),
        )| Policy {
            external_id,
            policy_type,
            carrier: Carrier {
                id: "carrier".into(),
                name: None,
            },
            policy_number: None,
            status,
            effective_date: effective,
            expiration_date: expiration,
            cancelled_date: cancelled,
            premium_cents: None,
            address,
            vehicles: first.into_iter().chain(second).collect(),
            dwellings: dwellings
                .into_iter()
                .enumerate()
                .map(|(i, (address, cost))| Dwelling {
                    id: format!("d{i}"),
                    address,
                    replacement_cost_cents: cost,
                })
                .collect(),
            coverages,
            insureds: insured_names
                .into_iter()
                .map(|name| Insured {
                    first_name: Some(name),
                    last_name: None,
                    full_name: None,
                    role: InsuredRole::Primary,
                    license_masked: None,
                    license_state: None,
                    applies_to: AppliesTo::AllProperties,
                })
                .collect(),
            interested_parties: parties,
            documents: vec![DocumentInfo {
                id: None,
                name: None,
                kinds: Vec::new(),
                source: None,
                created_at: None,
            }],
        },
    )
}

/// A rule as the evaluator receives it, with any values: the store reads sets back with serde,
/// so evaluation must not rely on the limits validation puts on new ones.
fn rule() -> impl Strategy<Value = Rule> {
    prop_oneof![
        Just(Rule::PolicyActive),
        prop::collection::vec(policy_type(), 0..4).prop_map(|types| Rule::PolicyTypeIn { types }),
        prop_oneof![0u32..4000, any::<u32>()]
            .prop_map(|days| Rule::ExpiresAtLeastDaysAhead { days }),
        (cents(), cents()).prop_map(|(per_person_cents, per_accident_cents)| {
            Rule::MinBodilyInjury {
                per_person_cents,
                per_accident_cents,
            }
        }),
        cents().prop_map(|per_accident_cents| Rule::MinPropertyDamage { per_accident_cents }),
        cents().prop_map(|max_deductible_cents| Rule::ComprehensiveAndCollision {
            max_deductible_cents
        }),
        (party_kind(), field()).prop_map(|(kind, name)| Rule::InterestedPartyNamed { kind, name }),
        field().prop_map(|vin| Rule::VinCovered { vin }),
        (
            field(),
            prop::option::of(field()),
            prop::option::of(field()),
            prop::option::of(field())
        )
            .prop_map(|(line1, city, state, postal_code)| Rule::AddressCovered {
                line1,
                city,
                state,
                postal_code,
            }),
    ]
}

fn set() -> impl Strategy<Value = RequirementSet> {
    (field(), field(), prop::collection::vec(rule(), 0..8))
        .prop_map(|(id, name, rules)| RequirementSet { id, name, rules })
}

/// A number as a caller may write it: in range, at the limits, or not an integer at all.
fn number_json() -> impl Strategy<Value = Value> {
    prop_oneof![
        2 => (0i64..5000).prop_map(Value::from),
        1 => (0i64..100_000_000).prop_map(Value::from),
        2 => number(),
        1 => text().prop_map(Value::from),
    ]
}

fn text_json() -> impl Strategy<Value = Value> {
    prop_oneof![
        5 => field().prop_map(Value::from),
        1 => any_json(KEYS),
    ]
}

fn policy_type_json() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "auto", "motorcycle", "homeowners", "condo", "renters", "landlord", "flood", "umbrella",
        ])
        .prop_map(Value::from),
        2 => field().prop_map(|other| json!({ "other": other })),
        1 => text_json(),
    ]
}

/// A rule as JSON: each kind with values of the right type but any content, now and then a
/// field of the wrong type, an unknown field, or something that is no rule at all.
fn rule_json() -> impl Strategy<Value = Value> {
    let kind_json =
        prop_oneof![
        Just(json!({"rule": "policy_active"})),
        prop::collection::vec(policy_type_json(), 0..4)
            .prop_map(|types| json!({"rule": "policy_type_in", "types": types})),
        number_json().prop_map(|days| json!({"rule": "expires_at_least_days_ahead", "days": days})),
        (number_json(), number_json()).prop_map(|(p, a)| json!({
            "rule": "min_bodily_injury", "per_person_cents": p, "per_accident_cents": a
        })),
        number_json()
            .prop_map(|a| json!({"rule": "min_property_damage", "per_accident_cents": a})),
        number_json().prop_map(
            |d| json!({"rule": "comprehensive_and_collision", "max_deductible_cents": d})
        ),
        (
            prop_oneof![
                prop::sample::select(vec![
                    "lienholder",
                    "lessor",
                    "mortgagee",
                    "additional_interest"
                ])
                .prop_map(Value::from),
                text_json()
            ],
            text_json()
        )
            .prop_map(
                |(kind, name)| json!({"rule": "interested_party_named", "kind": kind, "name": name})
            ),
        text_json().prop_map(|vin| json!({"rule": "vin_covered", "vin": vin})),
        (
            text_json(),
            prop::option::of(text_json()),
            prop::option::of(text_json()),
            prop::option::of(text_json())
        )
            .prop_map(|(line1, city, state, postal_code)| {
                let mut rule = json!({"rule": "address_covered", "line1": line1});
                for (key, value) in [("city", city), ("state", state), ("postal_code", postal_code)]
                {
                    if let Some(value) = value {
                        rule[key] = value;
                    }
                }
                rule
            }),
    ];
    prop_oneof![
        8 => kind_json,
        1 => any_json(KEYS),
        1 => (text(), any_json(KEYS)).prop_map(|(key, value)| json!({"rule": "vin_covered", "vin": "1HGCM82633A004352", key: value})),
    ]
}

fn set_json() -> impl Strategy<Value = Value> {
    (
        prop_oneof![
            // Mostly a valid id, so that the rules behind it are read.
            4 => "[A-Za-z0-9._-]{1,64}".prop_map(Value::from),
            1 => text_json(),
        ],
        text_json(),
        prop_oneof![
            4 => prop::collection::vec(rule_json(), 1..4),
            1 => prop::collection::vec(rule_json(), 0..12),
        ],
    )
        .prop_map(|(id, name, rules)| json!({"id": id, "name": name, "rules": rules}))
}

/// Sets as callers write them: the module documentation's example, one of each kind.
fn seed_sets() -> Vec<Value> {
    vec![
        json!({"id": "lender-auto", "name": "Lender auto", "rules": [
            {"rule": "policy_active"},
            {"rule": "policy_type_in", "types": ["auto", {"other": "commercial_auto"}]},
            {"rule": "expires_at_least_days_ahead", "days": 30},
            {"rule": "min_bodily_injury", "per_person_cents": 2500000, "per_accident_cents": 5000000},
            {"rule": "min_property_damage", "per_accident_cents": 2500000},
            {"rule": "comprehensive_and_collision", "max_deductible_cents": 100000},
            {"rule": "interested_party_named", "kind": "lienholder", "name": "Acme Bank, N.A."},
            {"rule": "vin_covered", "vin": "1HGCM82633A004352"},
            {"rule": "address_covered", "line1": "1 Main St", "city": "Springfield", "state": "IL",
             "postal_code": "62701"}
        ]}),
        json!({"id": "home", "name": "Home lender", "rules": [
            {"rule": "policy_type_in", "types": ["homeowners", "condo"]},
            {"rule": "interested_party_named", "kind": "mortgagee", "name": "Sandbox Home Lending"},
            {"rule": "address_covered", "line1": "500 Oak Ave.", "postal_code": "30030-1234"}
        ]}),
    ]
}

/// Evaluation of one set against the policies of one link, with the checks every evaluation
/// must pass: one outcome per rule in order, an overall status that follows from them, and the
/// event the engine would emit.
fn evaluate_checked(
    set: &RequirementSet,
    policies: &[Policy],
    now: DateTime<Utc>,
) -> Result<(), TestCaseError> {
    let evaluation = evaluate(set, policies, now);
    prop_assert_eq!(evaluation.outcomes.len(), set.rules.len());
    for (outcome, rule) in evaluation.outcomes.iter().zip(&set.rules) {
        prop_assert_eq!(&outcome.rule, &rule.label());
        if policies.is_empty() {
            // Callers evaluate only once data has arrived: no policy passes nothing.
            prop_assert_eq!(outcome.result, RuleResult::Fail);
        }
    }
    let results: Vec<RuleResult> = evaluation.outcomes.iter().map(|o| o.result).collect();
    let expected = if results.is_empty() {
        OverallStatus::Unknown
    } else if results.contains(&RuleResult::Fail) {
        OverallStatus::Unmet
    } else if results.contains(&RuleResult::Unknown) {
        OverallStatus::Unknown
    } else {
        OverallStatus::Met
    };
    prop_assert_eq!(evaluation.status, expected);
    for previous in [None, Some(OverallStatus::Met), Some(OverallStatus::Unmet)] {
        let event = transition_event(set, previous, &evaluation);
        prop_assert_eq!(
            event.is_some(),
            requirements_transition(previous, evaluation.status).is_some()
        );
    }
    Ok(())
}

/// Parsing, and for what is accepted: validation holds, the stored JSON reads back to the same
/// set through the parser and through serde (as the store reads it), and it evaluates.
fn parse_checked(text: &str, policies: &[Policy], now: DateTime<Utc>) -> Result<(), TestCaseError> {
    match RequirementSet::from_json(text) {
        Ok(set) => {
            prop_assert_eq!(set.validate(), Ok(()));
            let stored = set.to_json();
            prop_assert_eq!(RequirementSet::from_json(&stored), Ok(set.clone()));
            let read_back: RequirementSet = serde_json::from_str(&stored).expect("stored JSON");
            prop_assert_eq!(&read_back, &set);
            evaluate_checked(&set, policies, now)?;
        }
        Err(err) => {
            prop_assert!(!err.path.is_empty() && !err.message.is_empty(), "{err:?}");
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(256))]

    /// Any text at all.
    #[test]
    fn any_text_is_parsed_or_refused(input in text()) {
        parse_checked(&input, &[], Utc::now())?;
    }

    /// Any JSON document.
    #[test]
    fn any_json_is_parsed_or_refused(input in any_json(KEYS), policies in prop::collection::vec(policy(), 0..3), now in date()) {
        parse_checked(&input.to_string(), &policies, now)?;
    }

    /// Sets of every rule kind with any Unicode in every string and any number.
    #[test]
    fn rule_shaped_sets(input in set_json(), policies in prop::collection::vec(policy(), 0..3), now in date()) {
        parse_checked(&input.to_string(), &policies, now)?;
    }

    /// Real sets with fields dropped, retyped, blown up or filled with odd text.
    #[test]
    fn mutated_sets(input in mutated(seed_sets(), KEYS), policies in prop::collection::vec(policy(), 0..3), now in date()) {
        parse_checked(&input.to_string(), &policies, now)?;
    }

    /// Any set the store can read back, valid or not, against any policies at any time.
    #[test]
    fn any_set_evaluates(set in set(), policies in prop::collection::vec(policy(), 0..4), now in date()) {
        evaluate_checked(&set, &policies, now)?;
    }
}

#[test]
fn the_seed_sets_are_valid() {
    // Mutations of invalid seeds would never reach the evaluator.
    for seed in seed_sets() {
        RequirementSet::from_json(&seed.to_string()).unwrap();
    }
}
