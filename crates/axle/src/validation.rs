//! Axle's Policy Validation: which requirement rules have a documented Axle equivalent, and how
//! Validate Policy's answer reads.
//!
//! Sources:
//! - API reference, Validate Policy (`https://docs.axle.insure/api-reference/policies/validate-policy`):
//!   `POST /policies/{id}/validate` with `x-access-token`; the body is an array of objects whose
//!   one field `rule` is an enum with the "Available options: `policy-active`,
//!   `rental-covered-for-collision`"; the answer is `{success, data}`.
//! - Guide, Policy Validation (`https://docs.axle.insure/guides/policy-validation`): each rule
//!   evaluates to `pass`, `fail`, `caution` or `unknown`; the answer has "an overall status
//!   determination of either pass, fail, or caution" (`overall`), a `summary` ("the names of all
//!   Rules on the policy and their resolved statuses") and `rules` ("the names of each Rules and
//!   their run details"). `fail` "means that one or more specified Rules evaluated to a status of
//!   fail"; `caution` "that one or more specified Rules evaluated to a status of caution".
//!
//! Only rules the Validate Policy reference lists are sent. The guide also names rules that take
//! an input (`expiration-date-comparison` takes "an input date"), but the reference documents no
//! input on a rule, so sending one would be a guess.

use crate::verdict::{AxlePolicyValidation, AxleValidationStatus, SentRule, UnsentRule};
use coverwatch_core::requirements::Rule;
use serde_json::Value;

/// The rules the Validate Policy reference lists as "Available options".
pub const DOCUMENTED_RULES: [&str; 2] = ["policy-active", "rental-covered-for-collision"];

/// Axle's `policy-active`: "checks if the policy is currently active" (the policy's `isActive`).
pub const POLICY_ACTIVE: &str = "policy-active";

/// Which of the set's rules go to Axle, as which Axle rule, and why the others do not.
pub fn map_rules(rules: &[Rule]) -> (Vec<SentRule>, Vec<UnsentRule>) {
    let mut sent: Vec<SentRule> = Vec::new();
    let mut unsent = Vec::new();
    for rule in rules {
        let reason = match rule {
            Rule::PolicyActive => {
                if !sent.iter().any(|s| s.vendor_rule == POLICY_ACTIVE) {
                    sent.push(SentRule {
                        requirement: rule.label(),
                        vendor_rule: POLICY_ACTIVE.to_owned(),
                    });
                }
                continue;
            }
            Rule::ExpiresAtLeastDaysAhead { .. } => {
                "Axle's expiration-date-comparison rule takes an input date, and Validate Policy \
                 documents no input on a rule"
            }
            Rule::InterestedPartyNamed { .. } => {
                "Validate Policy documents no rule for a named third party"
            }
            _ => {
                "no equivalent among Validate Policy's documented rules (policy-active, \
                  rental-covered-for-collision)"
            }
        };
        unsent.push(UnsentRule {
            requirement: rule.label(),
            reason: reason.to_owned(),
        });
    }
    (sent, unsent)
}

/// The request body for these Axle rules: `[{"rule": "policy-active"}, …]`.
pub fn request_body(vendor_rules: &[&str]) -> Value {
    Value::Array(
        vendor_rules
            .iter()
            .map(|rule| serde_json::json!({ "rule": rule }))
            .collect(),
    )
}

pub fn parse_status(value: &str) -> Option<AxleValidationStatus> {
    match value {
        "pass" => Some(AxleValidationStatus::Pass),
        "fail" => Some(AxleValidationStatus::Fail),
        "caution" => Some(AxleValidationStatus::Caution),
        "unknown" => Some(AxleValidationStatus::Unknown),
        _ => None,
    }
}

/// Reads the `data` of a Validate Policy answer. An undocumented status is an error naming it:
/// a verdict we cannot read is no verdict.
pub fn parse_answer(policy_id: &str, data: &Value) -> Result<AxlePolicyValidation, String> {
    let overall = data
        .get("overall")
        .and_then(Value::as_str)
        .ok_or_else(|| "the answer has no `overall` status".to_owned())?;
    let overall = match parse_status(overall) {
        // The guide gives the overall status as pass, fail or caution only.
        Some(status) if status != AxleValidationStatus::Unknown => status,
        _ => return Err(format!("undocumented overall status `{overall}`")),
    };
    let summary = data
        .get("summary")
        .and_then(Value::as_object)
        .ok_or_else(|| "the answer has no `summary` object".to_owned())?;
    let mut rules = Vec::with_capacity(summary.len());
    for (name, status) in summary {
        let text = status.as_str().unwrap_or_default();
        let status = parse_status(text)
            .ok_or_else(|| format!("undocumented status `{status}` for rule `{name}`"))?;
        rules.push((name.clone(), status));
    }
    rules.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(AxlePolicyValidation {
        policy_id: policy_id.to_owned(),
        overall,
        rules,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use coverwatch_core::policy::PartyKind;
    use serde_json::json;

    #[test]
    fn only_policy_active_has_a_documented_equivalent() {
        // The Validate Policy reference lists `policy-active` and
        // `rental-covered-for-collision` as the only values of `rule`
        // (docs.axle.insure/api-reference/policies/validate-policy, "Body").
        let rules = vec![
            Rule::PolicyActive,
            Rule::ExpiresAtLeastDaysAhead { days: 30 },
            Rule::InterestedPartyNamed {
                kind: PartyKind::Lienholder,
                name: "Acme Bank".into(),
            },
            Rule::MinPropertyDamage {
                per_accident_cents: 2_500_000,
            },
        ];
        let (sent, unsent) = map_rules(&rules);
        assert_eq!(
            sent,
            vec![SentRule {
                requirement: "policy_active".into(),
                vendor_rule: "policy-active".into(),
            }]
        );
        assert!(DOCUMENTED_RULES.contains(&sent[0].vendor_rule.as_str()));
        let unsent: Vec<&str> = unsent.iter().map(|u| u.requirement.as_str()).collect();
        assert_eq!(unsent.len(), 3);
        assert!(unsent[0].starts_with("expires_at_least_days_ahead"));
        assert!(unsent[1].starts_with("interested_party_named"));
        assert!(unsent[2].starts_with("min_property_damage"));
        assert_eq!(
            request_body(&[POLICY_ACTIVE]),
            json!([{ "rule": "policy-active" }])
        );
    }

    #[test]
    fn statuses_read_as_the_guide_names_them() {
        // "Each Rule evaluates to one of the following statuses: pass, fail, caution, unknown"
        // (docs.axle.insure/guides/policy-validation, "Overview").
        assert_eq!(parse_status("pass"), Some(AxleValidationStatus::Pass));
        assert_eq!(parse_status("fail"), Some(AxleValidationStatus::Fail));
        assert_eq!(parse_status("caution"), Some(AxleValidationStatus::Caution));
        assert_eq!(parse_status("unknown"), Some(AxleValidationStatus::Unknown));
        assert_eq!(parse_status("PASS"), None);
    }

    #[test]
    fn an_answer_reads_overall_and_summary() {
        // The answer carries `overall` (pass, fail or caution), `summary` (rule → status) and
        // `rules` (rule → run details) (docs.axle.insure/guides/policy-validation,
        // "Requesting Evaluation Rules").
        let data = json!({
            "overall": "fail",
            "summary": { "policy-active": "fail", "rental-covered-for-collision": "unknown" },
            "rules": { "policy-active": { "status": "fail" } },
        });
        let read = parse_answer("pol_1", &data).unwrap();
        assert_eq!(read.overall, AxleValidationStatus::Fail);
        assert_eq!(
            read.rules,
            vec![
                ("policy-active".into(), AxleValidationStatus::Fail),
                (
                    "rental-covered-for-collision".into(),
                    AxleValidationStatus::Unknown
                ),
            ]
        );
        // The overall status is never `unknown`, and what the guide does not name is refused.
        let unknown_overall = json!({ "overall": "unknown", "summary": {} });
        assert!(parse_answer("pol_1", &unknown_overall).is_err());
        let odd = json!({ "overall": "pass", "summary": { "policy-active": "ok" } });
        assert!(
            parse_answer("pol_1", &odd)
                .unwrap_err()
                .contains("policy-active")
        );
        assert!(parse_answer("pol_1", &json!({ "summary": {} })).is_err());
    }
}
