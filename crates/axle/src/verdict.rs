//! Axle's own verdict on a link: what Validate Policy answered, typed for callers. Core carries
//! it as a [`VendorVerdict`] (it names no vendor); this module turns it into that form and back,
//! and into the `AxleValidation` arm of the gRPC `VendorCheck`.
//!
//! Statuses are those of the Policy Validation guide
//! (`https://docs.axle.insure/guides/policy-validation`): `pass`, `fail`, `caution`, `unknown`.

use coverwatch_core::provider::{VendorVerdict, VerdictError};
use coverwatch_proto::detail::ProtoVerdict;
use coverwatch_proto::v1;
use serde::{Deserialize, Serialize};

use crate::PROVIDER;

/// A rule status of Axle's Policy Validation (`pass`, `fail`, `caution`, `unknown`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AxleValidationStatus {
    Pass,
    Fail,
    Caution,
    Unknown,
}

/// A requirement rule sent to Axle as one of its documented validation rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentRule {
    /// The requirement rule, as `RuleOutcome::rule` names it.
    pub requirement: String,
    /// The Axle rule sent for it (`policy-active`).
    pub vendor_rule: String,
}

/// A requirement rule that was not sent to Axle, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnsentRule {
    pub requirement: String,
    pub reason: String,
}

/// What Axle's Validate Policy answered, per policy of the link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AxleValidation {
    pub rules_sent: Vec<SentRule>,
    pub rules_not_sent: Vec<UnsentRule>,
    pub policies: Vec<AxlePolicyValidation>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AxlePolicyValidation {
    /// Axle's policy id (`pol_…`).
    pub policy_id: String,
    /// The overall status (`pass`, `fail` or `caution`).
    pub overall: AxleValidationStatus,
    /// Each rule's status from the answer's `summary`, by Axle rule name.
    pub rules: Vec<(String, AxleValidationStatus)>,
}

impl From<AxleValidation> for VendorVerdict {
    fn from(verdict: AxleValidation) -> Self {
        // Cannot fail: a struct of strings, lists and unit enums serializes to an object (the
        // tests below hold it to that).
        VendorVerdict::from_typed(PROVIDER, &verdict).expect("AxleValidation is a JSON object")
    }
}

impl TryFrom<&VendorVerdict> for AxleValidation {
    type Error = VerdictError;

    /// Another vendor's verdict is an error.
    fn try_from(verdict: &VendorVerdict) -> Result<Self, VerdictError> {
        verdict.to_typed(&PROVIDER)
    }
}

fn status_to_proto(status: AxleValidationStatus) -> i32 {
    let proto = match status {
        AxleValidationStatus::Pass => v1::AxleValidationStatus::Pass,
        AxleValidationStatus::Fail => v1::AxleValidationStatus::Fail,
        AxleValidationStatus::Caution => v1::AxleValidationStatus::Caution,
        AxleValidationStatus::Unknown => v1::AxleValidationStatus::Unknown,
    };
    proto as i32
}

impl From<AxleValidation> for v1::AxleValidation {
    fn from(axle: AxleValidation) -> Self {
        v1::AxleValidation {
            rules_sent: axle
                .rules_sent
                .into_iter()
                .map(|r| v1::AxleRuleSent {
                    requirement: r.requirement,
                    axle_rule: r.vendor_rule,
                })
                .collect(),
            rules_not_sent: axle
                .rules_not_sent
                .into_iter()
                .map(|r| v1::RuleNotSent {
                    requirement: r.requirement,
                    reason: r.reason,
                })
                .collect(),
            policies: axle
                .policies
                .into_iter()
                .map(|p| v1::AxlePolicyValidation {
                    policy_id: p.policy_id,
                    overall: status_to_proto(p.overall),
                    rules: p
                        .rules
                        .into_iter()
                        .map(|(rule, status)| v1::AxleRuleStatus {
                            rule,
                            status: status_to_proto(status),
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

/// Axle's arm of `VendorCheck.verdict`; `None` for a verdict that is not Axle's.
pub fn verdict_to_proto(verdict: &VendorVerdict) -> Option<ProtoVerdict> {
    let typed = AxleValidation::try_from(verdict).ok()?;
    Some(ProtoVerdict::Axle(typed.into()))
}

#[cfg(test)]
mod tests {
    use coverwatch_core::ProviderId;

    use super::*;

    fn validation() -> AxleValidation {
        AxleValidation {
            rules_sent: vec![SentRule {
                requirement: "policy_active".into(),
                vendor_rule: "policy-active".into(),
            }],
            rules_not_sent: vec![UnsentRule {
                requirement: "vin_covered".into(),
                reason: "no documented Axle rule".into(),
            }],
            policies: vec![AxlePolicyValidation {
                policy_id: "pol_1".into(),
                overall: AxleValidationStatus::Caution,
                rules: vec![
                    ("policy-active".into(), AxleValidationStatus::Pass),
                    (
                        "rental-covered-for-collision".into(),
                        AxleValidationStatus::Caution,
                    ),
                    ("x".into(), AxleValidationStatus::Fail),
                    ("y".into(), AxleValidationStatus::Unknown),
                ],
            }],
        }
    }

    #[test]
    fn the_core_form_round_trips_and_names_axle() {
        let verdict = VendorVerdict::from(validation());
        assert_eq!(verdict.provider(), &PROVIDER);
        assert_eq!(verdict.fields()["policies"][0]["overall"], "caution");
        assert_eq!(AxleValidation::try_from(&verdict), Ok(validation()));
    }

    #[test]
    fn another_vendors_verdict_has_no_axle_arm() {
        let other = VendorVerdict::new(ProviderId::from_static("canopy"), Default::default());
        assert!(AxleValidation::try_from(&other).is_err());
        assert_eq!(verdict_to_proto(&other), None);
    }

    #[test]
    fn the_proto_arm_carries_every_field_and_status() {
        let Some(ProtoVerdict::Axle(proto)) = verdict_to_proto(&validation().into()) else {
            panic!("no Axle arm");
        };
        assert_eq!(proto.rules_sent[0].axle_rule, "policy-active");
        assert_eq!(proto.rules_sent[0].requirement, "policy_active");
        assert_eq!(proto.rules_not_sent[0].requirement, "vin_covered");
        assert_eq!(proto.rules_not_sent[0].reason, "no documented Axle rule");
        let policy = &proto.policies[0];
        assert_eq!(policy.policy_id, "pol_1");
        assert_eq!(policy.overall, v1::AxleValidationStatus::Caution as i32);
        let statuses: Vec<i32> = policy.rules.iter().map(|r| r.status).collect();
        assert_eq!(
            statuses,
            [
                v1::AxleValidationStatus::Pass as i32,
                v1::AxleValidationStatus::Caution as i32,
                v1::AxleValidationStatus::Fail as i32,
                v1::AxleValidationStatus::Unknown as i32,
            ]
        );
    }
}
