//! Requirement sets on the wire. Proto paths of rule fields are `rules[i].<rule>.<field>`, the
//! same paths core's validation names, so an error reads the same whichever form was sent.

use chrono::{DateTime, Utc};
use coverwatch_core::ProviderId;
use coverwatch_core::policy::PolicyType;
use coverwatch_core::provider::VendorVerdict;
use coverwatch_core::requirements::{RequirementSet, Rule};

use super::enums::{enum_value, to_i32};
use super::policy::{named_policy_type, policy_type_to_proto};
use super::{FieldError, each, indexed, timestamp};
use crate::detail::DetailCodecs;
use crate::v1;
use crate::v1::rule::Rule as Kind;

/// The vendor's verdict on a link, or (`Err`) why there is none. The verdict's arm comes from
/// the vendor's codec; a verdict no codec here can show goes out as unavailable, saying so,
/// rather than as a check with neither a verdict nor a reason.
pub fn vendor_check_to_proto(
    provider: ProviderId,
    verdict: Result<VendorVerdict, String>,
    codecs: &DetailCodecs,
) -> v1::VendorCheck {
    let (verdict, unavailable_reason) = match verdict {
        Err(reason) => (None, Some(reason)),
        Ok(verdict) => match codecs.verdict_to_proto(&verdict) {
            Some(arm) => (Some(arm), None),
            None => (
                None,
                Some(format!(
                    "this build cannot show provider `{}`'s verdict",
                    verdict.provider()
                )),
            ),
        },
    };
    v1::VendorCheck {
        provider: super::enums::provider_i32(&provider),
        provider_id: provider.to_string(),
        unavailable_reason,
        verdict,
    }
}

pub fn requirement_set_to_proto(
    set: RequirementSet,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
) -> v1::RequirementSet {
    v1::RequirementSet {
        id: set.id,
        name: set.name,
        rules: set.rules.into_iter().map(rule_to_proto).collect(),
        created_at: Some(timestamp(created_at)),
        updated_at: Some(timestamp(updated_at)),
    }
}

fn rule_to_proto(rule: Rule) -> v1::Rule {
    let kind = match rule {
        Rule::PolicyActive => Kind::PolicyActive(v1::PolicyActiveRule {}),
        Rule::PolicyTypeIn { types } => {
            let mut proto = v1::PolicyTypeInRule::default();
            for policy_type in types {
                match policy_type_to_proto(policy_type) {
                    (_, Some(other)) => proto.other_types.push(other),
                    (known, None) => proto.types.push(known as i32),
                }
            }
            Kind::PolicyTypeIn(proto)
        }
        Rule::ExpiresAtLeastDaysAhead { days } => {
            Kind::ExpiresAtLeastDaysAhead(v1::ExpiresAtLeastDaysAheadRule { days })
        }
        Rule::MinBodilyInjury {
            per_person_cents,
            per_accident_cents,
        } => Kind::MinBodilyInjury(v1::MinBodilyInjuryRule {
            per_person_cents,
            per_accident_cents,
        }),
        Rule::MinPropertyDamage { per_accident_cents } => {
            Kind::MinPropertyDamage(v1::MinPropertyDamageRule { per_accident_cents })
        }
        Rule::ComprehensiveAndCollision {
            max_deductible_cents,
        } => Kind::ComprehensiveAndCollision(v1::ComprehensiveAndCollisionRule {
            max_deductible_cents,
        }),
        Rule::InterestedPartyNamed { kind, name } => {
            Kind::InterestedPartyNamed(v1::InterestedPartyNamedRule {
                kind: to_i32::<v1::PartyKind>(kind),
                name,
            })
        }
        Rule::VinCovered { vin } => Kind::VinCovered(v1::VinCoveredRule { vin }),
        Rule::AddressCovered {
            line1,
            city,
            state,
            postal_code,
        } => Kind::AddressCovered(v1::AddressCoveredRule {
            line1,
            city,
            state,
            postal_code,
        }),
        Rule::Coverage {
            code,
            min_per_person_cents,
            min_per_accident_cents,
            max_deductible_cents,
        } => {
            let (code, other_code) = super::policy::coverage_code_to_proto(code);
            Kind::Coverage(v1::CoverageRule {
                code: code as i32,
                other_code,
                min_per_person_cents,
                min_per_accident_cents,
                max_deductible_cents,
            })
        }
    };
    v1::Rule { rule: Some(kind) }
}

/// A set off the wire, checked field by field for what the wire can get wrong (unset oneofs,
/// unknown enum values); the rules' own limits are core's `RequirementSet::validate`.
pub fn requirement_set_from_proto(set: v1::RequirementSet) -> Result<RequirementSet, FieldError> {
    Ok(RequirementSet {
        id: set.id,
        name: set.name,
        rules: each(set.rules, "rules", rule_from_proto)?,
    })
}

fn rule_from_proto(rule: v1::Rule) -> Result<Rule, FieldError> {
    let kind = rule
        .rule
        .ok_or_else(|| FieldError::new("", "must set exactly one rule"))?;
    Ok(match kind {
        Kind::PolicyActive(_) => Rule::PolicyActive,
        Kind::PolicyTypeIn(p) => {
            let mut types = Vec::with_capacity(p.types.len() + p.other_types.len());
            for (index, value) in p.types.into_iter().enumerate() {
                let field = format!("policy_type_in.{}", indexed("types", index));
                let known = v1::PolicyType::try_from(value).map_err(|_| {
                    FieldError::new(&field, format!("unknown PolicyType value {value}"))
                })?;
                types.push(named_policy_type(known).ok_or_else(|| {
                    FieldError::new(
                        &field,
                        "must be a named type (name other lines in other_types)",
                    )
                })?);
            }
            types.extend(p.other_types.into_iter().map(PolicyType::Other));
            Rule::PolicyTypeIn { types }
        }
        Kind::ExpiresAtLeastDaysAhead(r) => Rule::ExpiresAtLeastDaysAhead { days: r.days },
        Kind::MinBodilyInjury(r) => Rule::MinBodilyInjury {
            per_person_cents: r.per_person_cents,
            per_accident_cents: r.per_accident_cents,
        },
        Kind::MinPropertyDamage(r) => Rule::MinPropertyDamage {
            per_accident_cents: r.per_accident_cents,
        },
        Kind::ComprehensiveAndCollision(r) => Rule::ComprehensiveAndCollision {
            max_deductible_cents: r.max_deductible_cents,
        },
        Kind::InterestedPartyNamed(r) => Rule::InterestedPartyNamed {
            kind: enum_value::<v1::PartyKind>(r.kind, "interested_party_named.kind")?,
            name: r.name,
        },
        Kind::VinCovered(r) => Rule::VinCovered { vin: r.vin },
        Kind::AddressCovered(r) => Rule::AddressCovered {
            line1: r.line1,
            city: r.city,
            state: r.state,
            postal_code: r.postal_code,
        },
        Kind::Coverage(r) => Rule::Coverage {
            code: super::policy::coverage_code_from_proto(r.code, r.other_code)
                .map_err(|e| e.within("coverage"))?,
            min_per_person_cents: r.min_per_person_cents,
            min_per_accident_cents: r.min_per_accident_cents,
            max_deductible_cents: r.max_deductible_cents,
        },
    })
}

#[cfg(test)]
mod tests {
    use coverwatch_core::policy::{CoverageCode, PartyKind};

    use super::*;

    fn every_rule() -> RequirementSet {
        RequirementSet {
            id: "lender-auto".into(),
            name: "Lender auto".into(),
            rules: vec![
                Rule::PolicyActive,
                Rule::PolicyTypeIn {
                    types: vec![
                        PolicyType::Auto,
                        PolicyType::Other("commercial_auto".into()),
                    ],
                },
                Rule::ExpiresAtLeastDaysAhead { days: 30 },
                Rule::MinBodilyInjury {
                    per_person_cents: 2_500_000,
                    per_accident_cents: 5_000_000,
                },
                Rule::MinPropertyDamage {
                    per_accident_cents: 2_500_000,
                },
                Rule::ComprehensiveAndCollision {
                    max_deductible_cents: 100_000,
                },
                Rule::InterestedPartyNamed {
                    kind: PartyKind::Lienholder,
                    name: "Acme Bank, N.A.".into(),
                },
                Rule::VinCovered {
                    vin: "1HGCM82633A004352".into(),
                },
                Rule::AddressCovered {
                    line1: "1 Main St".into(),
                    city: Some("Springfield".into()),
                    state: None,
                    postal_code: Some("62701".into()),
                },
                Rule::Coverage {
                    code: CoverageCode::UnderinsuredMotoristBodilyInjury,
                    min_per_person_cents: Some(2_500_000),
                    min_per_accident_cents: Some(5_000_000),
                    max_deductible_cents: None,
                },
                Rule::Coverage {
                    code: CoverageCode::Other("GAP".into()),
                    min_per_person_cents: None,
                    min_per_accident_cents: None,
                    max_deductible_cents: Some(0),
                },
            ],
        }
    }

    /// A vendor whose verdict shows through the Canopy arm, to test the dispatch without a
    /// vendor crate (this crate cannot depend on one).
    struct ThirdCodec;

    impl crate::detail::DetailCodec for ThirdCodec {
        fn provider(&self) -> ProviderId {
            ProviderId::from_static("third")
        }
        fn to_proto(
            &self,
            _: &coverwatch_core::event::VendorDetail,
        ) -> Option<crate::detail::ProtoDetail> {
            None
        }
        fn to_core(
            &self,
            _: &crate::detail::ProtoDetail,
        ) -> Option<coverwatch_core::event::VendorDetail> {
            None
        }
        fn verdict_to_proto(&self, verdict: &VendorVerdict) -> Option<crate::detail::ProtoVerdict> {
            let pull_id = verdict.fields().get("pull")?.as_str()?.to_owned();
            Some(crate::detail::ProtoVerdict::Canopy(v1::CanopyPolicyCheck {
                pull_id: Some(pull_id),
                ..Default::default()
            }))
        }
    }

    #[test]
    fn a_vendor_check_takes_its_arm_from_the_vendors_codec() {
        use std::sync::Arc;
        let codecs =
            DetailCodecs::new([Arc::new(ThirdCodec) as Arc<dyn crate::detail::DetailCodec>]);
        let third = ProviderId::from_static("third");
        let mut fields = serde_json::Map::new();
        fields.insert("pull".into(), "pull-9".into());
        let check = vendor_check_to_proto(
            third.clone(),
            Ok(VendorVerdict::new(third.clone(), fields.clone())),
            &codecs,
        );
        assert_eq!(check.provider_id, "third");
        assert_eq!(check.unavailable_reason, None);
        let Some(v1::vendor_check::Verdict::Canopy(arm)) = check.verdict else {
            panic!("no arm: {check:?}");
        };
        assert_eq!(arm.pull_id.as_deref(), Some("pull-9"));

        // No codec for the vendor, or a codec that cannot read the verdict: unavailable,
        // saying why, never a check with neither verdict nor reason.
        let unknown = ProviderId::from_static("fourth");
        for (provider, verdict) in [
            (unknown.clone(), VendorVerdict::new(unknown, fields)),
            (third.clone(), VendorVerdict::new(third, Default::default())),
        ] {
            let check = vendor_check_to_proto(provider.clone(), Ok(verdict), &codecs);
            assert_eq!(check.verdict, None);
            assert_eq!(
                check.unavailable_reason.as_deref(),
                Some(format!("this build cannot show provider `{provider}`'s verdict").as_str())
            );
        }

        let refused = vendor_check_to_proto(
            ProviderId::from_static("third"),
            Err("no stored pull".into()),
            &codecs,
        );
        assert_eq!(refused.verdict, None);
        assert_eq!(
            refused.unavailable_reason.as_deref(),
            Some("no stored pull")
        );
    }

    #[test]
    fn every_rule_round_trips() {
        let set = every_rule();
        let proto = requirement_set_to_proto(set.clone(), Utc::now(), Utc::now());
        assert_eq!(requirement_set_from_proto(proto), Ok(set));
    }

    #[test]
    fn what_the_wire_gets_wrong_is_named() {
        let mut proto = requirement_set_to_proto(every_rule(), Utc::now(), Utc::now());
        proto.rules[2] = v1::Rule { rule: None };
        assert_eq!(
            requirement_set_from_proto(proto.clone())
                .unwrap_err()
                .to_string(),
            "rules[2]: must set exactly one rule"
        );
        proto.rules[2] = v1::Rule {
            rule: Some(Kind::InterestedPartyNamed(v1::InterestedPartyNamedRule {
                kind: 0,
                name: "Acme".into(),
            })),
        };
        assert_eq!(
            requirement_set_from_proto(proto.clone()).unwrap_err().field,
            "rules[2].interested_party_named.kind"
        );
        proto.rules[2] = v1::Rule {
            rule: Some(Kind::PolicyTypeIn(v1::PolicyTypeInRule {
                types: vec![v1::PolicyType::Auto as i32, v1::PolicyType::Other as i32],
                other_types: vec![],
            })),
        };
        assert_eq!(
            requirement_set_from_proto(proto.clone()).unwrap_err().field,
            "rules[2].policy_type_in.types[1]"
        );
        proto.rules[2] = v1::Rule {
            rule: Some(Kind::Coverage(v1::CoverageRule {
                code: v1::CoverageCode::Other as i32,
                other_code: None,
                max_deductible_cents: Some(1),
                ..Default::default()
            })),
        };
        assert_eq!(
            requirement_set_from_proto(proto.clone()).unwrap_err().field,
            "rules[2].coverage.other_code"
        );
        proto.rules[2] = v1::Rule {
            rule: Some(Kind::Coverage(v1::CoverageRule {
                code: 0,
                max_deductible_cents: Some(1),
                ..Default::default()
            })),
        };
        assert_eq!(
            requirement_set_from_proto(proto).unwrap_err().field,
            "rules[2].coverage.code"
        );
    }
}
