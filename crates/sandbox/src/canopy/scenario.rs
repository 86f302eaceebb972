//! Scenarios: changes on the carrier's side of an account (what the next pull will see), with
//! an optional immediate refresh of the account's monitorings.
//!
//! HTTP: `POST /_sandbox/canopy/scenario` with the JSON form of [`Scenario`], e.g.
//! `{"target":{"pull_id":"…","policy_type":"AUTO"},"action":{"kind":"cancel_policy"},"refresh":true}`.

use chrono::Months;
use serde::{Deserialize, Serialize};

use super::engine::{CredentialState, parse_ts};
use super::fixtures::{self, DocumentTemplate};
use super::model::Policy;
use super::{CanopyError, CanopyResult, CanopySim};
use crate::clock::format_ts;

/// Which account (and, for policy actions, which policy) a scenario is about. Give the account
/// by `account_identifier`, by any of its `pull_id`s, by a `monitoring_id`, or by a `policy_id`
/// from any of its pulls. Pick the policy by `policy_id`, `carrier_policy_number` or
/// `policy_type` (`AUTO`, `HOMEOWNERS`); vehicle actions default to the auto policy and dwelling
/// actions to the home policy.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ScenarioTarget {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account_identifier: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pull_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monitoring_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub carrier_policy_number: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_type: Option<String>,
}

impl ScenarioTarget {
    pub fn pull(pull_id: &str) -> Self {
        Self {
            pull_id: Some(pull_id.into()),
            ..Self::default()
        }
    }

    pub fn account(account_identifier: &str) -> Self {
        Self {
            account_identifier: Some(account_identifier.into()),
            ..Self::default()
        }
    }

    pub fn policy_type(mut self, policy_type: &str) -> Self {
        self.policy_type = Some(policy_type.into());
        self
    }

    pub fn policy_number(mut self, number: &str) -> Self {
        self.carrier_policy_number = Some(number.into());
        self
    }
}

/// Fields of a coverage to set; absent fields stay as they are. As at Canopy, a limit is an
/// amount or unlimited: setting an amount clears the matching `*_unlimited` flag, and setting the
/// flag clears the amount.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CoveragePatch {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_person_limit_cents: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_person_unlimited: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_incident_limit_cents: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_incident_unlimited: Option<bool>,
    /// Vehicle coverages only (Canopy's DwellingCoverage has no per-day limit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_day_limit_cents: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_days: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deductible_cents: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub premium_cents: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_declined: Option<bool>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ScenarioAction {
    /// The stored password stops working: the next refresh ends `NOT_AUTHENTICATED` with a
    /// `MONITORING_RECONNECT`, until the consumer signs in again.
    ExpireCredentials,
    /// Like `expire_credentials`, and the reconnect goes through MFA.
    RequireMfa,
    RestoreCredentials,
    /// The next refresh only ends in `PROVIDER_ERROR` or `INTERNAL_ERROR` with an `ERROR` webhook.
    FailNextRefresh {
        error_type: String,
    },
    /// `status` CANCELLED, `canceled_date` given or now.
    CancelPolicy {
        #[serde(default)]
        canceled_date: Option<String>,
    },
    /// Back to ACTIVE, `canceled_date` null.
    ReinstatePolicy,
    ExpirePolicy,
    /// A new term: `effective_date` = old expiry, same term length, a new Declarations document.
    RenewPolicy {
        #[serde(default)]
        total_premium_cents: Option<i64>,
    },
    /// Sets (or adds) a coverage on one vehicle (`vin`) or on every vehicle (no `vin`).
    SetVehicleCoverage {
        #[serde(default)]
        vin: Option<String>,
        coverage: String,
        #[serde(default)]
        patch: CoveragePatch,
    },
    RemoveVehicleCoverage {
        #[serde(default)]
        vin: Option<String>,
        coverage: String,
    },
    SetDwellingCoverage {
        coverage: String,
        #[serde(default)]
        patch: CoveragePatch,
    },
    RemoveDwellingCoverage {
        coverage: String,
    },
    /// `lien_holder` null removes the lien holder (and its address).
    SetLienholder {
        #[serde(default)]
        vin: Option<String>,
        lien_holder: Option<String>,
    },
    /// `mortgagee_name` null removes every mortgagee.
    SetMortgagee {
        mortgagee_name: Option<String>,
        #[serde(default)]
        mortgage_loan_number: Option<String>,
    },
    RemoveVehicle {
        vin: String,
    },
    /// The outcome of the team's configured Policy Checks on the policy, as the next pull
    /// carries it: `policy_check` `{status, details}` (canopy-openapi.json `PolicyCheck`), with
    /// `status` one of `NONE`, `COMPLIANT`, `NOT_COMPLIANT`, `REVIEW_REQUIRED`; the pull's
    /// `policy_check_status` follows. `status` null: the policy was not checked (`null`).
    SetPolicyCheck {
        status: Option<String>,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scenario {
    #[serde(default)]
    pub target: ScenarioTarget,
    pub action: ScenarioAction,
    /// Refresh every active monitoring of the account right after the change.
    #[serde(default)]
    pub refresh: bool,
}

impl Scenario {
    pub fn new(target: ScenarioTarget, action: ScenarioAction) -> Self {
        Self {
            target,
            action,
            refresh: false,
        }
    }

    pub fn and_refresh(mut self) -> Self {
        self.refresh = true;
        self
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScenarioOutcome {
    pub account_identifier: String,
    /// The policy changed, for policy actions.
    pub carrier_policy_number: Option<String>,
    /// New pulls started by `refresh: true`.
    pub refreshed_pull_ids: Vec<String>,
}

fn bad(msg: impl Into<String>) -> CanopyError {
    CanopyError::Control(msg.into())
}

impl CanopySim {
    pub(crate) fn apply_scenario(&self, scenario: Scenario) -> CanopyResult<ScenarioOutcome> {
        let now = self.inner.ctx.clock.now();
        let (account_id, number) = self.with_state(|st| -> CanopyResult<_> {
            let t = &scenario.target;
            let mut policy_number = t.carrier_policy_number.clone();
            let account_id = if let Some(a) = &t.account_identifier {
                a.clone()
            } else if let Some(p) = &t.pull_id {
                st.pulls
                    .get(p)
                    .ok_or_else(|| bad(format!("unknown pull {p}")))?
                    .pull
                    .account_identifier
                    .clone()
                    .ok_or_else(|| bad(format!("pull {p} has not reached an account")))?
            } else if let Some(m) = &t.monitoring_id {
                st.monitorings
                    .get(m)
                    .ok_or_else(|| bad(format!("unknown monitoring {m}")))?
                    .account_identifier
                    .clone()
            } else if let Some(pid) = &t.policy_id {
                let (acct, num) = st
                    .pulls
                    .values()
                    .find_map(|r| {
                        r.pull
                            .policies
                            .iter()
                            .find(|p| &p.policy_id == pid)
                            .map(|p| {
                                (
                                    r.pull.account_identifier.clone(),
                                    p.carrier_policy_number.clone(),
                                )
                            })
                    })
                    .ok_or_else(|| bad(format!("unknown policy {pid}")))?;
                policy_number = policy_number.or(num);
                acct.ok_or_else(|| bad("policy without account"))?
            } else {
                return Err(bad(
                    "target needs account_identifier, pull_id, monitoring_id or policy_id",
                ));
            };
            if let Some(pid) = &t.policy_id
                && policy_number.is_none()
            {
                policy_number = st
                    .pulls
                    .values()
                    .flat_map(|r| &r.pull.policies)
                    .find(|p| &p.policy_id == pid)
                    .and_then(|p| p.carrier_policy_number.clone());
            }
            let account = st
                .accounts
                .get_mut(&account_id)
                .ok_or_else(|| bad(format!("unknown account {account_id}")))?;

            let policy_needed = !matches!(
                scenario.action,
                ScenarioAction::ExpireCredentials
                    | ScenarioAction::RequireMfa
                    | ScenarioAction::RestoreCredentials
                    | ScenarioAction::FailNextRefresh { .. }
            );
            let mut changed_number = None;
            if policy_needed {
                let default_type = match scenario.action {
                    ScenarioAction::SetVehicleCoverage { .. }
                    | ScenarioAction::RemoveVehicleCoverage { .. }
                    | ScenarioAction::SetLienholder { .. }
                    | ScenarioAction::RemoveVehicle { .. } => Some("AUTO"),
                    ScenarioAction::SetDwellingCoverage { .. }
                    | ScenarioAction::RemoveDwellingCoverage { .. }
                    | ScenarioAction::SetMortgagee { .. } => Some("HOMEOWNERS"),
                    _ => None,
                };
                let policies = &mut account.data.policies;
                let idx = if let Some(n) = &policy_number {
                    policies
                        .iter()
                        .position(|p| p.carrier_policy_number.as_deref() == Some(n.as_str()))
                } else if let Some(ty) = t.policy_type.as_deref().or(default_type) {
                    policies
                        .iter()
                        .position(|p| p.policy_type.as_deref() == Some(ty))
                } else {
                    return Err(bad(
                        "name the policy: policy_id, carrier_policy_number or policy_type",
                    ));
                }
                .ok_or_else(|| bad("no such policy on this account"))?;
                let policy = &mut policies[idx];
                changed_number = policy.carrier_policy_number.clone();
                if let Some(doc) = apply_to_policy(policy, &scenario.action, now)? {
                    account.data.documents.push(doc);
                }
            } else {
                match &scenario.action {
                    ScenarioAction::ExpireCredentials => {
                        account.credentials = CredentialState::Expired
                    }
                    ScenarioAction::RequireMfa => {
                        account.credentials = CredentialState::MfaRequired
                    }
                    ScenarioAction::RestoreCredentials => {
                        account.credentials = CredentialState::Valid
                    }
                    ScenarioAction::FailNextRefresh { error_type } => {
                        account.next_refresh_error = Some(match error_type.as_str() {
                            "PROVIDER_ERROR" => "PROVIDER_ERROR",
                            "INTERNAL_ERROR" => "INTERNAL_ERROR",
                            other => {
                                return Err(bad(format!(
                                    "error_type {other}: PROVIDER_ERROR or INTERNAL_ERROR"
                                )));
                            }
                        })
                    }
                    _ => unreachable!("policy actions handled above"),
                }
            }
            Ok((account_id, changed_number))
        })?;

        let mut refreshed = Vec::new();
        if scenario.refresh {
            let monitorings: Vec<String> = self.with_state(|st| {
                st.monitoring_order
                    .iter()
                    .filter(|id| {
                        st.monitorings.get(*id).is_some_and(|m| {
                            m.account_identifier == account_id && m.monitoring.status == "ACTIVE"
                        })
                    })
                    .cloned()
                    .collect()
            });
            for id in monitorings {
                refreshed.push(self.refresh(&id, false)?);
            }
        }
        Ok(ScenarioOutcome {
            account_identifier: account_id,
            carrier_policy_number: number,
            refreshed_pull_ids: refreshed,
        })
    }
}

/// Applies a policy action; may return a new document the carrier issues with it.
fn apply_to_policy(
    policy: &mut Policy,
    action: &ScenarioAction,
    now: chrono::DateTime<chrono::Utc>,
) -> CanopyResult<Option<DocumentTemplate>> {
    let mut doc = None;
    match action {
        ScenarioAction::CancelPolicy { canceled_date } => {
            let date = match canceled_date {
                Some(d) => {
                    format_ts(parse_ts(d).ok_or_else(|| bad("canceled_date is not RFC 3339"))?)
                }
                None => format_ts(now),
            };
            policy.status = Some("CANCELLED".into());
            policy.canceled_date = Some(date);
        }
        ScenarioAction::ReinstatePolicy => {
            policy.status = Some("ACTIVE".into());
            policy.canceled_date = None;
        }
        ScenarioAction::SetPolicyCheck { status } => {
            policy.policy_check = match status.as_deref() {
                None => None,
                Some(s @ ("NONE" | "COMPLIANT" | "NOT_COMPLIANT" | "REVIEW_REQUIRED")) => {
                    Some(serde_json::json!({ "status": s, "details": { "status": s } }))
                }
                Some(other) => {
                    return Err(bad(format!(
                        "policy check status {other}: NONE, COMPLIANT, NOT_COMPLIANT or \
                         REVIEW_REQUIRED"
                    )));
                }
            };
        }
        ScenarioAction::ExpirePolicy => policy.status = Some("EXPIRED".into()),
        ScenarioAction::RenewPolicy {
            total_premium_cents,
        } => {
            let exp = policy
                .expiry_date
                .as_deref()
                .and_then(parse_ts)
                .unwrap_or(now);
            let months = if policy.policy_type.as_deref() == Some("AUTO") {
                6
            } else {
                12
            };
            let new_exp = exp + Months::new(months);
            policy.effective_date = Some(format_ts(exp));
            policy.expiry_date = Some(format_ts(new_exp));
            policy.description = Some(fixtures::term_description(exp, new_exp));
            policy.status = Some("ACTIVE".into());
            policy.canceled_date = None;
            if let Some(p) = total_premium_cents {
                policy.total_premium_cents = Some(*p);
                policy.amount_paid_cents = Some(0);
                policy.amount_due_cents = Some(*p);
                policy.paid_in_full = Some(false);
            }
            let number = policy.carrier_policy_number.clone().unwrap_or_default();
            let kind = if policy.policy_type.as_deref() == Some("AUTO") {
                "AUTO"
            } else {
                "HOME"
            };
            use chrono::Datelike;
            doc = Some(DocumentTemplate {
                title: format!(
                    "{:02}-{:02}-{} - {kind} {number} - Declarations",
                    exp.month(),
                    exp.day(),
                    exp.year()
                ),
                document_type: "DECLARATIONS".into(),
                carrier_policy_number: number,
                date_added: format_ts(exp),
            });
        }
        ScenarioAction::SetVehicleCoverage {
            vin,
            coverage,
            patch,
        } => {
            let mut hit = false;
            for v in policy
                .vehicles
                .iter_mut()
                .filter(|v| vin.is_none() || v.vin == *vin)
            {
                hit = true;
                let idx = match v.coverages.iter().position(|c| &c.name == coverage) {
                    Some(i) => i,
                    None => {
                        v.coverages.push(fixtures::vehicle_coverage(
                            "vc-new", coverage, None, None, None, None,
                        ));
                        v.coverages.len() - 1
                    }
                };
                let c = &mut v.coverages[idx];
                let mut person_unlimited = Some(c.per_person_unlimited);
                limit_patch(
                    &mut c.per_person_limit_cents,
                    &mut person_unlimited,
                    patch.per_person_limit_cents,
                    patch.per_person_unlimited,
                );
                c.per_person_unlimited = person_unlimited.unwrap_or(false);
                let mut incident_unlimited = Some(c.per_incident_unlimited);
                limit_patch(
                    &mut c.per_incident_limit_cents,
                    &mut incident_unlimited,
                    patch.per_incident_limit_cents,
                    patch.per_incident_unlimited,
                );
                c.per_incident_unlimited = incident_unlimited.unwrap_or(false);
                set(&mut c.per_day_limit_cents, patch.per_day_limit_cents);
                set(&mut c.max_days, patch.max_days);
                set(&mut c.deductible_cents, patch.deductible_cents);
                set(&mut c.premium_cents, patch.premium_cents);
                if let Some(d) = patch.is_declined {
                    c.is_declined = d;
                }
            }
            if !hit {
                return Err(bad("no vehicle matches"));
            }
            fixtures::recompute_premium(policy);
        }
        ScenarioAction::RemoveVehicleCoverage { vin, coverage } => {
            let mut hit = false;
            for v in policy
                .vehicles
                .iter_mut()
                .filter(|v| vin.is_none() || v.vin == *vin)
            {
                let before = v.coverages.len();
                v.coverages.retain(|c| &c.name != coverage);
                hit |= v.coverages.len() != before;
            }
            if !hit {
                return Err(bad(format!("no vehicle has {coverage}")));
            }
            fixtures::recompute_premium(policy);
        }
        ScenarioAction::SetDwellingCoverage { coverage, patch } => {
            if patch.per_day_limit_cents.is_some() || patch.max_days.is_some() {
                return Err(bad("a dwelling coverage has no per-day limit"));
            }
            let d = policy
                .dwellings
                .first_mut()
                .ok_or_else(|| bad("policy has no dwelling"))?;
            let idx = match d.coverages.iter().position(|c| &c.name == coverage) {
                Some(i) => i,
                None => {
                    d.coverages.push(fixtures::dwelling_coverage(
                        "dc-new", coverage, None, None, None, None,
                    ));
                    d.coverages.len() - 1
                }
            };
            let c = &mut d.coverages[idx];
            limit_patch(
                &mut c.per_person_limit_cents,
                &mut c.per_person_unlimited,
                patch.per_person_limit_cents,
                patch.per_person_unlimited,
            );
            limit_patch(
                &mut c.per_incident_limit_cents,
                &mut c.per_incident_unlimited,
                patch.per_incident_limit_cents,
                patch.per_incident_unlimited,
            );
            set(&mut c.deductible_cents, patch.deductible_cents);
            set(&mut c.premium_cents, patch.premium_cents);
            if let Some(x) = patch.is_declined {
                c.is_declined = x;
            }
            fixtures::recompute_premium(policy);
        }
        ScenarioAction::RemoveDwellingCoverage { coverage } => {
            let d = policy
                .dwellings
                .first_mut()
                .ok_or_else(|| bad("policy has no dwelling"))?;
            let before = d.coverages.len();
            d.coverages.retain(|c| &c.name != coverage);
            if d.coverages.len() == before {
                return Err(bad(format!("dwelling has no {coverage}")));
            }
            fixtures::recompute_premium(policy);
        }
        ScenarioAction::SetLienholder { vin, lien_holder } => {
            let mut hit = false;
            for v in policy
                .vehicles
                .iter_mut()
                .filter(|v| vin.is_none() || v.vin == *vin)
            {
                hit = true;
                v.lien_holder = lien_holder.clone();
                v.lien_holder_address =
                    lien_holder.as_ref().map(|_| fixtures::lienholder_address());
                v.ownership_type = Some(
                    if lien_holder.is_some() {
                        "FINANCE"
                    } else {
                        "OWN"
                    }
                    .into(),
                );
            }
            if !hit {
                return Err(bad("no vehicle matches"));
            }
        }
        ScenarioAction::SetMortgagee {
            mortgagee_name,
            mortgage_loan_number,
        } => {
            let d = policy
                .dwellings
                .first_mut()
                .ok_or_else(|| bad("policy has no dwelling"))?;
            match mortgagee_name {
                None => {
                    d.mortgagees.clear();
                    d.mortgagee_name = None;
                    d.mortgagee_address = None;
                    d.mortgage_loan_number = None;
                }
                Some(name) => {
                    let m = super::model::Mortgagee {
                        mortgagee_id: "mtg-new".into(),
                        mortgagee_name: Some(name.clone()),
                        mortgagee_address: Some(fixtures::mortgagee_address()),
                        mortgagee_type: Some("FIRST".into()),
                        mortgage_loan_number: mortgage_loan_number.clone(),
                    };
                    d.mortgagee_name = m.mortgagee_name.clone();
                    d.mortgagee_address = m.mortgagee_address.clone();
                    d.mortgage_loan_number = m.mortgage_loan_number.clone();
                    d.mortgagees = vec![m];
                }
            }
        }
        ScenarioAction::RemoveVehicle { vin } => {
            let before = policy.vehicles.len();
            policy
                .vehicles
                .retain(|v| v.vin.as_deref() != Some(vin.as_str()));
            if policy.vehicles.len() == before {
                return Err(bad(format!("no vehicle {vin}")));
            }
            fixtures::recompute_premium(policy);
        }
        ScenarioAction::ExpireCredentials
        | ScenarioAction::RequireMfa
        | ScenarioAction::RestoreCredentials
        | ScenarioAction::FailNextRefresh { .. } => {}
    }
    Ok(doc)
}

/// One limit of a coverage: an amount clears the unlimited flag, the flag set clears the amount.
fn limit_patch(
    amount: &mut Option<i64>,
    unlimited: &mut Option<bool>,
    new_amount: Option<i64>,
    new_unlimited: Option<bool>,
) {
    if let Some(cents) = new_amount {
        *amount = Some(cents);
        *unlimited = Some(false);
    }
    if let Some(flag) = new_unlimited {
        *unlimited = Some(flag);
        if flag {
            *amount = None;
        }
    }
}

fn set(field: &mut Option<i64>, value: Option<i64>) {
    if let Some(v) = value {
        *field = Some(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Canopy states an unlimited limit with the flag and a null amount
    /// (`per_person_unlimited`: "If true, this coverage has an unlimited per-person limit"), so a
    /// patch never leaves both an amount and the flag.
    #[test]
    fn a_limit_is_an_amount_or_unlimited_never_both() {
        let (mut amount, mut unlimited) = (Some(10_000_000), Some(false));
        limit_patch(&mut amount, &mut unlimited, None, Some(true));
        assert_eq!((amount, unlimited), (None, Some(true)));
        limit_patch(&mut amount, &mut unlimited, Some(2_500_000), None);
        assert_eq!((amount, unlimited), (Some(2_500_000), Some(false)));
        limit_patch(&mut amount, &mut unlimited, None, Some(false));
        assert_eq!((amount, unlimited), (Some(2_500_000), Some(false)));
        limit_patch(&mut amount, &mut unlimited, None, None);
        assert_eq!((amount, unlimited), (Some(2_500_000), Some(false)));
    }
}
