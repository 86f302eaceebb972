//! Canopy's own verdict on a link: its Policy Check as the stored pull carries it, typed for
//! callers. Core carries it as a [`VendorVerdict`] (it names no vendor); this module turns it
//! into that form and back, and into the `CanopyPolicyCheck` arm of the gRPC `VendorCheck`.
//!
//! Statuses are canopy-openapi.json's `Pull.policy_check_status` / `PolicyCheck.status` enum:
//! `NONE`, `COMPLIANT`, `NOT_COMPLIANT`, `REVIEW_REQUIRED`.

use coverwatch_core::provider::{VendorVerdict, VerdictError};
use coverwatch_proto::detail::ProtoVerdict;
use coverwatch_proto::v1;
use serde::{Deserialize, Serialize};

use crate::PROVIDER;

/// A Canopy Policy Check status (`NONE`, `COMPLIANT`, `NOT_COMPLIANT`, `REVIEW_REQUIRED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CanopyCheckStatus {
    None,
    Compliant,
    NotCompliant,
    ReviewRequired,
}

/// Canopy's Policy Check as stored with the link's latest pull.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CanopyPolicyCheck {
    /// The pull the verdict was read from.
    pub pull_id: Option<String>,
    /// The pull's `policy_check_status`; `None` when the pull does not carry one.
    pub pull_status: Option<CanopyCheckStatus>,
    /// Each policy's `policy_check.status`, by Canopy policy id; `None` when the policy has no
    /// `policy_check`.
    pub policies: Vec<(String, Option<CanopyCheckStatus>)>,
}

impl From<CanopyPolicyCheck> for VendorVerdict {
    fn from(verdict: CanopyPolicyCheck) -> Self {
        // Cannot fail: a struct of strings, lists and unit enums serializes to an object (the
        // tests below hold it to that).
        VendorVerdict::from_typed(PROVIDER, &verdict).expect("CanopyPolicyCheck is a JSON object")
    }
}

impl TryFrom<&VendorVerdict> for CanopyPolicyCheck {
    type Error = VerdictError;

    /// Another vendor's verdict is an error.
    fn try_from(verdict: &VendorVerdict) -> Result<Self, VerdictError> {
        verdict.to_typed(&PROVIDER)
    }
}

/// The proto value of a status; a missing status is the proto's UNSPECIFIED (0).
fn status_to_proto(status: Option<CanopyCheckStatus>) -> i32 {
    let Some(status) = status else {
        return v1::CanopyPolicyCheckStatus::Unspecified as i32;
    };
    let proto = match status {
        CanopyCheckStatus::None => v1::CanopyPolicyCheckStatus::None,
        CanopyCheckStatus::Compliant => v1::CanopyPolicyCheckStatus::Compliant,
        CanopyCheckStatus::NotCompliant => v1::CanopyPolicyCheckStatus::NotCompliant,
        CanopyCheckStatus::ReviewRequired => v1::CanopyPolicyCheckStatus::ReviewRequired,
    };
    proto as i32
}

impl From<CanopyPolicyCheck> for v1::CanopyPolicyCheck {
    fn from(canopy: CanopyPolicyCheck) -> Self {
        v1::CanopyPolicyCheck {
            pull_id: canopy.pull_id,
            pull_status: status_to_proto(canopy.pull_status),
            policies: canopy
                .policies
                .into_iter()
                .map(|(policy_id, status)| v1::CanopyPolicyCheckResult {
                    policy_id,
                    status: status_to_proto(status),
                })
                .collect(),
        }
    }
}

/// Canopy's arm of `VendorCheck.verdict`; `None` for a verdict that is not Canopy's.
pub fn verdict_to_proto(verdict: &VendorVerdict) -> Option<ProtoVerdict> {
    let typed = CanopyPolicyCheck::try_from(verdict).ok()?;
    Some(ProtoVerdict::Canopy(typed.into()))
}

#[cfg(test)]
mod tests {
    use coverwatch_core::ProviderId;

    use super::*;

    fn check() -> CanopyPolicyCheck {
        CanopyPolicyCheck {
            pull_id: Some("pull-1".into()),
            pull_status: Some(CanopyCheckStatus::ReviewRequired),
            policies: vec![
                ("p-1".into(), Some(CanopyCheckStatus::None)),
                ("p-2".into(), Some(CanopyCheckStatus::Compliant)),
                ("p-3".into(), Some(CanopyCheckStatus::NotCompliant)),
                ("p-4".into(), None),
            ],
        }
    }

    #[test]
    fn the_core_form_round_trips_and_names_canopy() {
        let verdict = VendorVerdict::from(check());
        assert_eq!(verdict.provider(), &PROVIDER);
        assert_eq!(verdict.fields()["pull_status"], "REVIEW_REQUIRED");
        assert_eq!(CanopyPolicyCheck::try_from(&verdict), Ok(check()));
    }

    #[test]
    fn another_vendors_verdict_has_no_canopy_arm() {
        let other = VendorVerdict::new(ProviderId::from_static("axle"), Default::default());
        assert!(CanopyPolicyCheck::try_from(&other).is_err());
        assert_eq!(verdict_to_proto(&other), None);
    }

    #[test]
    fn the_proto_arm_carries_every_status() {
        let Some(ProtoVerdict::Canopy(proto)) = verdict_to_proto(&check().into()) else {
            panic!("no Canopy arm");
        };
        use v1::CanopyPolicyCheckStatus as S;
        assert_eq!(proto.pull_id.as_deref(), Some("pull-1"));
        assert_eq!(proto.pull_status, S::ReviewRequired as i32);
        let statuses: Vec<(&str, i32)> = proto
            .policies
            .iter()
            .map(|p| (p.policy_id.as_str(), p.status))
            .collect();
        assert_eq!(
            statuses,
            [
                ("p-1", S::None as i32),
                ("p-2", S::Compliant as i32),
                ("p-3", S::NotCompliant as i32),
                ("p-4", S::Unspecified as i32),
            ]
        );
    }
}
