//! Canopy webhooks: the `canopy-signature` check on the raw bytes, then the normalization of
//! each event type into [`Happening`]s.

use crate::PROVIDER;
use crate::detail::CanopyEventDetail;
use coverwatch_core::event::{
    AuthStatus, FailureReason, FieldChange, ReconnectReason, VerificationOption,
};
use coverwatch_core::ids::LinkId;
use coverwatch_core::provider::ProviderError;
use coverwatch_core::webhook::{
    Attribution, AuthenticatedWebhook, DataRef, Happening, InboundWebhook, ParsedWebhook,
    SessionProof, WebhookRejection,
};
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::config::StaleSignatures;
use crate::model::{WebhookBody, lenient, meta_data_object};

pub const SIGNATURE_HEADER: &str = "canopy-signature";
/// The meta data key that carries our link id through Canopy.
pub const LINK_ID_META_KEY: &str = "coverwatch_link_id";
/// The meta data key that carries the session's proof (see
/// [`coverwatch_core::provider::LinkSessionRequest::session_proof`]) through Canopy.
pub const SESSION_META_KEY: &str = "coverwatch_session";
/// External-id kinds a delivery can be attributed through.
pub const EXTERNAL_INITIAL_PULL: &str = "initial_pull";
pub const EXTERNAL_PULL: &str = "pull";
pub const EXTERNAL_MONITORING: &str = "monitoring";

/// The hex HMAC-SHA256 of `"{t}.{body}"` keyed with the secret's UTF-8 bytes.
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// Checks `canopy-signature` against every configured secret, then the timestamp's age against
/// `now` (the time the delivery was received). A genuine signature outside the tolerance is
/// refused under [`StaleSignatures::Reject`]; under [`StaleSignatures::Accept`] it passes and
/// the answer says by how much it was late.
pub fn verify_signature(
    webhook: &InboundWebhook,
    secrets: &[SecretString],
    tolerance_seconds: i64,
    stale: StaleSignatures,
) -> Result<Option<i64>, WebhookRejection> {
    let header = webhook
        .header(SIGNATURE_HEADER)
        .ok_or(WebhookRejection::MissingHeader(SIGNATURE_HEADER.into()))?;
    let malformed = |reason| WebhookRejection::MalformedHeader {
        header: SIGNATURE_HEADER,
        reason,
    };
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for element in header.split(',') {
        // Canopy says to discard elements other than `t` and `s`.
        let Some((key, value)) = element.trim().split_once('=') else {
            continue;
        };
        match key.trim() {
            "t" => {
                if timestamp.is_some() {
                    return Err(malformed("more than one `t`"));
                }
                timestamp = Some(
                    value
                        .trim()
                        .parse::<i64>()
                        .map_err(|_| malformed("`t` is not unix seconds"))?,
                );
            }
            "s" => {
                // One unreadable `s` (another scheme, say) must not hide a good one.
                let value = value.trim();
                if hex::decode(value).is_ok_and(|bytes| bytes.len() == 32) {
                    signatures.push(value.to_ascii_lowercase());
                }
            }
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(malformed("no `t`"))?;
    if signatures.is_empty() {
        return Err(malformed("no hex HMAC-SHA256 `s`"));
    }
    let matched = secrets.iter().any(|secret| {
        let expected = sign(secret.expose_secret(), timestamp, &webhook.body);
        signatures
            .iter()
            .any(|s| bool::from(s.as_bytes().ct_eq(expected.as_bytes())))
    });
    if !matched {
        return Err(WebhookRejection::BadSignature);
    }
    // `t` is whatever the sender wrote: saturate, a `t` near the i64 limits must not overflow.
    let age = webhook.received_at.timestamp().saturating_sub(timestamp);
    if age.saturating_abs() <= tolerance_seconds {
        return Ok(None);
    }
    match stale {
        StaleSignatures::Accept => Ok(Some(age)),
        StaleSignatures::Reject => Err(WebhookRejection::StaleTimestamp {
            age_seconds: age,
            tolerance_seconds,
        }),
    }
}

pub fn authenticate(
    webhook: &InboundWebhook,
    secrets: &[SecretString],
    tolerance_seconds: i64,
    stale: StaleSignatures,
) -> Result<AuthenticatedWebhook, WebhookRejection> {
    if !webhook.path.trim_matches('/').is_empty() {
        return Err(WebhookRejection::UnknownPath);
    }
    let late_by_seconds = verify_signature(webhook, secrets, tolerance_seconds, stale)?;
    // Canopy sends no event id: the engine keys the inbox on a hash of the body.
    Ok(AuthenticatedWebhook {
        vendor_event_id: None,
        link_token: None,
        late_by_seconds,
    })
}

fn malformed(message: impl Into<String>) -> ProviderError {
    ProviderError::Malformed {
        provider: PROVIDER,
        message: message.into(),
    }
}

fn text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

pub fn parse(webhook: &InboundWebhook) -> Result<ParsedWebhook, ProviderError> {
    let value: Value = serde_json::from_slice(&webhook.body)
        .map_err(|err| malformed(format!("webhook body is not JSON: {err}")))?;
    if !value.is_object() {
        return Err(malformed("webhook body is not a JSON object"));
    }
    let body: WebhookBody =
        serde_json::from_value(value).map_err(|err| malformed(format!("webhook body: {err}")))?;
    let data = &body.data;
    let pull_id = body.pull_id.clone().filter(|p| !p.is_empty());
    let monitoring = body.monitoring.clone().unwrap_or_default();
    let initial_pull_id = monitoring
        .initial_pull_id
        .clone()
        .filter(|p| !p.is_empty())
        .or_else(|| text(data.get("initial_pull_id")));
    let monitoring_id = monitoring.monitoring_id.clone().filter(|m| !m.is_empty());
    let sequence = body
        .sequence
        .or_else(|| data.get("sequence").and_then(lenient::int_of));

    let mut attribution = Vec::new();
    // The body is signed by Canopy, so its meta data is Canopy's own record of the session URL.
    attribution.extend(session_claim(&body.meta_data));
    if let Some(initial) = &initial_pull_id {
        attribution.push(Attribution::External {
            kind: EXTERNAL_INITIAL_PULL.into(),
            value: initial.clone(),
        });
    }
    if let Some(monitoring_id) = &monitoring_id {
        attribution.push(Attribution::External {
            kind: EXTERNAL_MONITORING.into(),
            value: monitoring_id.clone(),
        });
    }
    if let Some(pull) = &pull_id {
        attribution.push(Attribution::External {
            kind: EXTERNAL_PULL.into(),
            value: pull.clone(),
        });
    }
    if attribution.is_empty() {
        attribution.push(Attribution::Unknown);
    }

    let data_ref = || match &pull_id {
        Some(pull) => DataRef::Version(pull.clone()),
        None => DataRef::All,
    };
    // A monitoring refresh is a new pull of an account already linked; the initial pull of a
    // monitored account can still report after its monitoring was created.
    let is_refresh = body.is_monitored
        && match (&pull_id, &initial_pull_id) {
            (Some(pull), Some(initial)) => pull != initial,
            _ => true,
        };
    let vendor = |event_type: &str| Happening::Vendor {
        vendor_type: event_type.to_owned(),
    };

    let happening = match body.event_type.as_str() {
        "AUTH_STATUS" => {
            let status = [text(data.get("auth_status")), body.status.clone()]
                .into_iter()
                .flatten()
                .find_map(|s| auth_status(&s));
            match status {
                Some(status) => Happening::AuthProgress {
                    status,
                    login_error_message: text(data.get("login_error_message")),
                    verification_options: verification_options(data.get("mfa_options")),
                    sequence,
                    // Canopy numbers the sign-in steps of each pull from the start.
                    sequence_scope: pull_id.clone().unwrap_or_default(),
                },
                None => vendor("AUTH_STATUS"),
            }
        }
        "POLICY_AVAILABLE" => vendor("POLICY_AVAILABLE"),
        "POLICIES_AVAILABLE" | "COMPLETE" => {
            if is_refresh {
                Happening::DataChanged {
                    data: data_ref(),
                    hinted: Vec::new(),
                }
            } else {
                Happening::SessionCompleted {
                    code: None,
                    data: data_ref(),
                }
            }
        }
        "ERROR" => {
            if is_refresh {
                // A failed monitoring refresh ends no session: the monitoring tries again at
                // its next interval, and a reconnect need arrives as MONITORING_RECONNECT.
                Happening::Retrying
            } else {
                let kind = text(data.get("type")).or_else(|| body.status.clone());
                Happening::SessionFailed {
                    reason: match kind.as_deref() {
                        Some("PROVIDER_ERROR") => FailureReason::ProviderError,
                        Some("INTERNAL_ERROR") => FailureReason::VendorError,
                        _ => FailureReason::Other,
                    },
                    message: text(data.get("message")),
                }
            }
        }
        "MONITORING_RECONNECT" => {
            let auth = text(data.get("auth_status")).or_else(|| body.status.clone());
            Happening::ReconnectRequired {
                reason: match auth.as_deref() {
                    Some("IDENTITY_VERIFICATION_OPTIONS" | "IDENTITY_VERIFICATION") => {
                        ReconnectReason::MfaExpired
                    }
                    _ => ReconnectReason::CredentialsExpired,
                },
                reconnect_url: text(data.get("reconnect_url")),
                reconnect_token: text(data.get("reconnect_token")).map(SecretString::from),
            }
        }
        "DATA_UPDATED" => Happening::DataChanged {
            data: data_ref(),
            hinted: data_updates(data.get("updates")),
        },
        "MONITORING_EVENTS" => Happening::DataChanged {
            data: data_ref(),
            hinted: Vec::new(),
        },
        other => vendor(other),
    };

    Ok(ParsedWebhook {
        attribution,
        // Canopy's envelope carries no event time.
        occurred_at: None,
        detail: CanopyEventDetail {
            event_type: body.event_type.clone(),
            pull_id,
            pull_status: body.status.clone(),
            monitoring_id,
            sequence,
        }
        .into(),
        // POLICY_AVAILABLE is deprecated and sent once per policy; the same data comes with
        // POLICIES_AVAILABLE, so it says nothing of its own.
        happenings: if body.event_type == "POLICY_AVAILABLE" {
            Vec::new()
        } else {
            vec![happening]
        },
    })
}

/// What a pull's meta data says about the session that started it: our link id with the
/// session's proof, or the link id alone (which proves nothing; kept so that an unmatched
/// delivery says what it claimed).
pub fn session_claim(meta_data: &Value) -> Option<Attribution> {
    let meta = meta_data_object(meta_data)?;
    let link = text(meta.get(LINK_ID_META_KEY))?.parse::<LinkId>().ok()?;
    Some(match text(meta.get(SESSION_META_KEY)) {
        Some(proof) => Attribution::Session {
            link,
            proof: SessionProof::new(proof),
        },
        None => Attribution::Link(link),
    })
}

/// Canopy's `MonitoringEvent`s (`{previous_pull_id, latest_pull_id, events: [{type, changes:
/// [{schema, type, before, after}], documents}]}`) as reasons per policy external id. Each
/// event is tied to the policies whose `policy_id` its changes carry (Canopy's diff keeps the
/// ids of the changed object and its parents); one that names none is about every policy of
/// the pull. Nothing when the diff is not about `pull_id`.
pub fn monitoring_reasons(
    answer: &Value,
    pull_id: &str,
    policies: &[coverwatch_core::policy::PolicySnapshot],
) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut out: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    if text(answer.get("latest_pull_id")).as_deref() != Some(pull_id) {
        return out;
    }
    let external_of = |policy_id: &str| {
        policies
            .iter()
            .find(|p| text(p.raw.get("policy_id")).as_deref() == Some(policy_id))
            .map(|p| p.policy.external_id.clone())
    };
    for event in answer
        .get("events")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(label) = text(event.get("type")) else {
            continue;
        };
        let mut named: Vec<String> = event
            .get("changes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .flat_map(|change| [change.get("after"), change.get("before")])
            .filter_map(|side| text(side?.get("policy_id")))
            .filter_map(|id| external_of(&id))
            .collect();
        named.dedup();
        if named.is_empty() {
            named = policies
                .iter()
                .map(|p| p.policy.external_id.clone())
                .collect();
        }
        for policy in named {
            let reasons = out.entry(policy).or_default();
            if !reasons.contains(&label) {
                reasons.push(label.clone());
            }
        }
    }
    out
}

fn auth_status(value: &str) -> Option<AuthStatus> {
    Some(match value {
        "NOT_AUTHENTICATED" => AuthStatus::NotAuthenticated,
        "IDENTITY_VERIFICATION_OPTIONS" => AuthStatus::IdentityVerificationOptions,
        "IDENTITY_VERIFICATION" => AuthStatus::IdentityVerification,
        "SUCCESS" => AuthStatus::Success,
        _ => return None,
    })
}

/// `mfa_options`: an object of option key → label (the shape Canopy implies), also read as a
/// list of `{key|optionKey, label|name}` in case Canopy sends that.
fn verification_options(value: Option<&Value>) -> Vec<VerificationOption> {
    let label_of = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => text(o.get("label"))
            .or_else(|| text(o.get("name")))
            .or_else(|| text(o.get("value"))),
        _ => None,
    };
    match value {
        Some(Value::Object(map)) => map
            .iter()
            .map(|(key, v)| VerificationOption {
                key: key.clone(),
                label: label_of(v).unwrap_or_else(|| key.clone()),
            })
            .collect(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|item| match item {
                Value::String(key) => Some(VerificationOption {
                    key: key.clone(),
                    label: key.clone(),
                }),
                Value::Object(o) => {
                    let key = text(o.get("key")).or_else(|| text(o.get("optionKey")))?;
                    Some(VerificationOption {
                        label: label_of(item).unwrap_or_else(|| key.clone()),
                        key,
                    })
                }
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// What `DATA_UPDATED` says changed. Contact fields become account field changes; drivers are
/// named; demographics and answers are left out (personal, and no account field holds them).
fn data_updates(value: Option<&Value>) -> Vec<FieldChange> {
    let Some(Value::Array(updates)) = value else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for update in updates {
        match text(update.get("type")).as_deref() {
            Some("CONTACT_UPDATED") => {
                let data = update.get("data");
                for (from, field) in [
                    ("first_name", "first_name"),
                    ("last_name", "last_name"),
                    ("email", "email"),
                    ("mobile_phone", "phone"),
                ] {
                    if let Some(after) = text(data.and_then(|d| d.get(from))) {
                        out.push(FieldChange {
                            field: field.into(),
                            before: None,
                            after: Some(after),
                        });
                    }
                }
            }
            Some(kind @ ("DRIVER_ADDED" | "DRIVER_UPDATED")) => {
                let driver = update.get("driver");
                let name = [
                    text(driver.and_then(|d| d.get("first_name"))),
                    text(driver.and_then(|d| d.get("last_name"))),
                ]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" ");
                out.push(FieldChange {
                    field: if kind == "DRIVER_ADDED" {
                        "driver_added".into()
                    } else {
                        "driver_updated".into()
                    },
                    before: None,
                    after: (!name.is_empty()).then_some(name),
                });
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use secrecy::ExposeSecret;
    use serde_json::json;

    const SECRET: &str = "cBiN66y0wYlbnwJiBu4wRAWceeL8jMJyhH/PjRYzTylTM9IfkJwOZ/Yfwi4dpZM5";
    const NOW: i64 = 1_700_000_000;
    const PULL: &str = "59ced597-b48f-49e3-9756-799e4c6f79a0";
    const INITIAL: &str = "0d0f1c2a-aaaa-4bbb-8ccc-123456789abc";

    fn delivery(body: &[u8], header: Option<String>) -> InboundWebhook {
        InboundWebhook {
            path: String::new(),
            headers: header
                .map(|h| vec![(SIGNATURE_HEADER.to_owned(), h)])
                .unwrap_or_default(),
            body: body.to_vec(),
            received_at: Utc.timestamp_opt(NOW, 0).unwrap(),
        }
    }

    fn signed(body: &[u8], t: i64) -> InboundWebhook {
        delivery(body, Some(format!("t={t},s={}", sign(SECRET, t, body))))
    }

    fn secrets(list: &[&str]) -> Vec<SecretString> {
        list.iter().map(|s| SecretString::from(*s)).collect()
    }

    #[test]
    fn a_valid_signature_passes_with_no_event_id() {
        let ok = authenticate(
            &signed(b"{\"a\":1}", NOW - 10),
            &secrets(&[SECRET]),
            300,
            StaleSignatures::Reject,
        )
        .unwrap();
        assert_eq!(ok.vendor_event_id, None);
        assert_eq!(ok.link_token, None);
    }

    #[test]
    fn the_signature_covers_the_exact_bytes() {
        let mut w = signed(b"{\"a\":1}", NOW);
        w.body = b"{\"a\": 1}".to_vec();
        assert_eq!(
            authenticate(&w, &secrets(&[SECRET]), 300, StaleSignatures::Reject),
            Err(WebhookRejection::BadSignature)
        );
        assert_eq!(
            authenticate(
                &signed(b"{}", NOW),
                &secrets(&["other"]),
                300,
                StaleSignatures::Reject
            ),
            Err(WebhookRejection::BadSignature)
        );
    }

    #[test]
    fn any_secret_and_any_signature_may_match() {
        let body = b"{}";
        // Rotation: the delivery is signed with the new secret and we know both.
        let w = signed(body, NOW);
        authenticate(&w, &secrets(&["old", SECRET]), 300, StaleSignatures::Reject).unwrap();
        // Several `s=` (Canopy signing with two secrets), extra elements ignored.
        let header = format!(
            "t={NOW},v=1,s={},s={}",
            sign("unknown", NOW, body),
            sign(SECRET, NOW, body)
        );
        authenticate(
            &delivery(body, Some(header)),
            &secrets(&[SECRET]),
            300,
            StaleSignatures::Reject,
        )
        .unwrap();
        // Uppercase hex is the same signature.
        let header = format!("t={NOW},s={}", sign(SECRET, NOW, body).to_uppercase());
        authenticate(
            &delivery(body, Some(header)),
            &secrets(&[SECRET]),
            300,
            StaleSignatures::Reject,
        )
        .unwrap();
    }

    /// "Verifying webhook signatures" (docs.usecanopy.com/reference/verifying-webhook-signatures)
    /// leaves the tolerance to us and does not say whether a retry is signed afresh; "Webhook
    /// retries" (docs.usecanopy.com/reference/webhook-retries) retries "up to 10 times" over
    /// hours. Under the default policy a genuine signature outside the window passes and says
    /// how late it is; only a signature that does not match is refused.
    #[test]
    fn stale_but_genuine_signatures_pass_under_the_default_policy_and_say_how_late() {
        assert_eq!(StaleSignatures::default(), StaleSignatures::Accept);
        let late = authenticate(
            &signed(b"{}", NOW - 5_096),
            &secrets(&[SECRET]),
            300,
            StaleSignatures::Accept,
        )
        .unwrap();
        assert_eq!(late.late_by_seconds, Some(5_096));
        let on_time = authenticate(
            &signed(b"{}", NOW - 10),
            &secrets(&[SECRET]),
            300,
            StaleSignatures::Accept,
        )
        .unwrap();
        assert_eq!(on_time.late_by_seconds, None);
        let mut forged = signed(b"{}", NOW - 5_096);
        forged.body = b"{ }".to_vec();
        assert_eq!(
            authenticate(&forged, &secrets(&[SECRET]), 300, StaleSignatures::Accept),
            Err(WebhookRejection::BadSignature)
        );
        assert_eq!("reject".parse(), Ok(StaleSignatures::Reject));
        assert_eq!("accept".parse(), Ok(StaleSignatures::Accept));
        assert!("lenient".parse::<StaleSignatures>().is_err());
    }

    #[test]
    fn stale_and_future_timestamps_are_refused() {
        let old = authenticate(
            &signed(b"{}", NOW - 301),
            &secrets(&[SECRET]),
            300,
            StaleSignatures::Reject,
        );
        assert_eq!(
            old,
            Err(WebhookRejection::StaleTimestamp {
                age_seconds: 301,
                tolerance_seconds: 300
            })
        );
        let future = authenticate(
            &signed(b"{}", NOW + 400),
            &secrets(&[SECRET]),
            300,
            StaleSignatures::Reject,
        );
        assert!(matches!(
            future,
            Err(WebhookRejection::StaleTimestamp {
                age_seconds: -400,
                ..
            })
        ));
        authenticate(
            &signed(b"{}", NOW + 300),
            &secrets(&[SECRET]),
            300,
            StaleSignatures::Reject,
        )
        .unwrap();
    }

    /// Found by `tests/fuzz.rs`: a correctly signed `t` at the i64 limit overflowed the age
    /// computation and panicked the listener.
    #[test]
    fn a_signed_timestamp_at_the_i64_limits_is_stale_not_a_panic() {
        for t in [i64::MIN, i64::MAX] {
            let r = authenticate(
                &signed(b"{}", t),
                &secrets(&[SECRET]),
                300,
                StaleSignatures::Reject,
            );
            assert!(
                matches!(r, Err(WebhookRejection::StaleTimestamp { age_seconds, .. }) if age_seconds.unsigned_abs() > 300),
                "{t}: {r:?}"
            );
        }
        // The widest tolerance (a configured one too large for i64) takes any age.
        authenticate(
            &signed(b"{}", i64::MIN),
            &secrets(&[SECRET]),
            i64::MAX,
            StaleSignatures::Reject,
        )
        .unwrap();
        // Accepting late signatures, the age still saturates instead of overflowing.
        let late = authenticate(
            &signed(b"{}", i64::MIN),
            &secrets(&[SECRET]),
            300,
            StaleSignatures::Accept,
        )
        .unwrap();
        assert_eq!(late.late_by_seconds, Some(i64::MAX));
    }

    #[test]
    fn missing_and_malformed_headers() {
        assert_eq!(
            authenticate(
                &delivery(b"{}", None),
                &secrets(&[SECRET]),
                300,
                StaleSignatures::Reject
            ),
            Err(WebhookRejection::MissingHeader("canopy-signature".into()))
        );
        for header in [
            "",
            "s=abc",
            "t=soon,s=00",
            &format!("t={NOW}"),
            &format!("t={NOW},s=zz"),
            &format!("t={NOW},s=abcd"),
        ] {
            let r = authenticate(
                &delivery(b"{}", Some(header.to_owned())),
                &secrets(&[SECRET]),
                300,
                StaleSignatures::Reject,
            );
            assert!(
                matches!(
                    r,
                    Err(WebhookRejection::MalformedHeader {
                        header: "canopy-signature",
                        ..
                    })
                ),
                "{header}: {r:?}"
            );
        }
        let mut w = signed(b"{}", NOW);
        w.path = "extra".into();
        assert_eq!(
            authenticate(&w, &secrets(&[SECRET]), 300, StaleSignatures::Reject),
            Err(WebhookRejection::UnknownPath)
        );
    }

    fn snapshot(external_id: &str, policy_id: &str) -> coverwatch_core::policy::PolicySnapshot {
        let mut policy = crate::normalize::normalize_pull(
            &json!({"pull_id": "p", "status": "SUCCESS", "policies": [{"policy_id": policy_id}]}),
            "acct",
        )
        .unwrap()
        .policies
        .remove(0)
        .policy;
        policy.external_id = external_id.into();
        coverwatch_core::policy::PolicySnapshot {
            policy,
            term: coverwatch_core::policy::PolicyTerm::Current,
            raw: json!({"policy_id": policy_id}),
        }
    }

    /// The OpenAPI document's "Coverage change" example of `GET /monitorings/{id}/events`: one
    /// `ENDORSEMENT` whose POLICY change carries only `total_premium_cents` (51400 → 62100), so
    /// it names no policy and is about the pull's every policy; a change that carries a
    /// `policy_id` is about that policy alone.
    #[test]
    fn monitoring_events_become_reasons_per_policy() {
        let policies = [snapshot("AU-1", "pol-a"), snapshot("HO-2", "pol-b")];
        let example = json!({
            "previous_pull_id": "b2cc89fc-2064-4259-bb61-460924fe115f",
            "latest_pull_id": "af9d4a2e-f1f8-476a-a515-e16bbd432c91",
            "events": [{"type": "ENDORSEMENT", "changes": [
                {"schema": "POLICY", "type": "UPDATE",
                 "before": {"total_premium_cents": 51400}, "after": {"total_premium_cents": 62100}}
            ], "documents": []}]
        });
        let reasons =
            monitoring_reasons(&example, "af9d4a2e-f1f8-476a-a515-e16bbd432c91", &policies);
        assert_eq!(reasons["AU-1"], ["ENDORSEMENT"]);
        assert_eq!(reasons["HO-2"], ["ENDORSEMENT"]);
        // A diff about another pull says nothing about this one.
        assert!(monitoring_reasons(&example, "another-pull", &policies).is_empty());

        let named = json!({
            "latest_pull_id": "p2",
            "events": [{"type": "CANCELED", "changes": [
                {"schema": "POLICY", "type": "UPDATE",
                 "before": {"policy_id": "pol-old", "status": "ACTIVE"},
                 "after": {"policy_id": "pol-b", "status": "CANCELLED"}}
            ]}]
        });
        let reasons = monitoring_reasons(&named, "p2", &policies);
        assert_eq!(reasons.len(), 1);
        assert_eq!(reasons["HO-2"], ["CANCELED"]);
    }

    fn parse_json(body: Value) -> ParsedWebhook {
        parse(&delivery(body.to_string().as_bytes(), None)).unwrap()
    }

    fn envelope(event_type: &str, data: Value) -> Value {
        json!({
            "widget_id": "w", "team_id": "t", "pull_id": PULL, "status": "SUCCESS",
            "meta_data": {}, "event_type": event_type, "account_identifier": null,
            "is_monitored": false, "monitoring": null, "data": data
        })
    }

    fn monitored(event_type: &str, data: Value) -> Value {
        let mut v = envelope(event_type, data);
        v["is_monitored"] = json!(true);
        v["monitoring"] = json!({"initial_pull_id": INITIAL, "monitoring_id": "mon-1"});
        v
    }

    fn only(parsed: &ParsedWebhook) -> &Happening {
        assert_eq!(parsed.happenings.len(), 1);
        &parsed.happenings[0]
    }

    #[test]
    fn attribution_prefers_our_session_claim_in_meta_data() {
        let link = LinkId::new();
        let mut v = monitored("COMPLETE", json!({}));
        v["meta_data"] = json!({
            "coverwatch_link_id": link.to_string(),
            "coverwatch_session": "proof-1",
            "tenant": "x"
        });
        let p = parse_json(v.clone());
        let session = Attribution::Session {
            link,
            proof: SessionProof::new("proof-1"),
        };
        assert_eq!(
            p.attribution,
            vec![
                session.clone(),
                Attribution::External {
                    kind: "initial_pull".into(),
                    value: INITIAL.into()
                },
                Attribution::External {
                    kind: "monitoring".into(),
                    value: "mon-1".into()
                },
                Attribution::External {
                    kind: "pull".into(),
                    value: PULL.into()
                },
            ]
        );
        // meta_data as a JSON string.
        v["meta_data"] = json!(
            json!({"coverwatch_link_id": link.to_string(), "coverwatch_session": "proof-1"})
                .to_string()
        );
        assert_eq!(parse_json(v.clone()).attribution[0], session);
        // A link id without the proof is kept as the bare claim it is.
        v["meta_data"] = json!({"coverwatch_link_id": link.to_string()});
        assert_eq!(parse_json(v).attribution[0], Attribution::Link(link));
    }

    #[test]
    fn attribution_without_meta_data() {
        let mut v = envelope("COMPLETE", json!({"initial_pull_id": INITIAL}));
        v["meta_data"] = json!({"coverwatch_link_id": "not-a-link-id"});
        let p = parse_json(v);
        assert_eq!(
            p.attribution,
            vec![
                Attribution::External {
                    kind: "initial_pull".into(),
                    value: INITIAL.into()
                },
                Attribution::External {
                    kind: "pull".into(),
                    value: PULL.into()
                },
            ]
        );
        let p = parse_json(json!({"event_type": "COMPLETE"}));
        assert_eq!(p.attribution, vec![Attribution::Unknown]);
    }

    #[test]
    fn auth_status_with_options_and_sequence() {
        let mut v = envelope(
            "AUTH_STATUS",
            json!({
                "auth_status": "IDENTITY_VERIFICATION_OPTIONS",
                "login_error_message": null,
                "mfa_options": {"sms": "Text message to (***) ***-0100", "email": "Email to m****@example.com"}
            }),
        );
        v["status"] = json!("IDENTITY_VERIFICATION_OPTIONS");
        v["sequence"] = json!(3);
        let p = parse_json(v);
        let Happening::AuthProgress {
            status,
            login_error_message,
            verification_options,
            sequence,
            sequence_scope,
        } = only(&p)
        else {
            panic!("{:?}", p.happenings)
        };
        assert_eq!(*status, AuthStatus::IdentityVerificationOptions);
        assert_eq!(*login_error_message, None);
        assert_eq!(*sequence, Some(3));
        assert_eq!(sequence_scope, PULL);
        assert_eq!(
            *verification_options,
            vec![
                VerificationOption {
                    key: "email".into(),
                    label: "Email to m****@example.com".into()
                },
                VerificationOption {
                    key: "sms".into(),
                    label: "Text message to (***) ***-0100".into()
                },
            ]
        );
        assert_eq!(
            CanopyEventDetail::try_from(&p.detail),
            Ok(CanopyEventDetail {
                event_type: "AUTH_STATUS".into(),
                pull_id: Some(PULL.into()),
                pull_status: Some("IDENTITY_VERIFICATION_OPTIONS".into()),
                monitoring_id: None,
                sequence: Some(3),
            })
        );
    }

    #[test]
    fn auth_status_reads_sequence_in_data_and_messages() {
        let p = parse_json(envelope(
            "AUTH_STATUS",
            json!({"auth_status": "NOT_AUTHENTICATED", "login_error_message": "Locked", "sequence": "7"}),
        ));
        let Happening::AuthProgress {
            status,
            login_error_message,
            sequence,
            ..
        } = only(&p)
        else {
            panic!()
        };
        assert_eq!(*status, AuthStatus::NotAuthenticated);
        assert_eq!(login_error_message.as_deref(), Some("Locked"));
        assert_eq!(*sequence, Some(7));
        // Numbered per pull: the engine compares numbers of the same pull only.
        let Happening::AuthProgress { sequence_scope, .. } = only(&p) else {
            panic!()
        };
        assert_eq!(sequence_scope, PULL);
        let p = parse_json(envelope("AUTH_STATUS", json!({"auth_status": "SUCCESS"})));
        assert!(matches!(
            only(&p),
            Happening::AuthProgress {
                status: AuthStatus::Success,
                ..
            }
        ));
        let p = parse_json(envelope("AUTH_STATUS", json!({"auth_status": "WEIRD"})));
        // The envelope status is SUCCESS; an unknown data status falls back to it.
        assert!(matches!(
            only(&p),
            Happening::AuthProgress {
                status: AuthStatus::Success,
                ..
            }
        ));
    }

    #[test]
    fn completion_of_a_new_pull_and_data_of_a_refresh() {
        for event in ["POLICIES_AVAILABLE", "COMPLETE"] {
            let p = parse_json(envelope(event, json!({})));
            let Happening::SessionCompleted { code, data } = only(&p) else {
                panic!()
            };
            assert!(code.is_none());
            assert_eq!(*data, DataRef::Version(PULL.into()));

            let p = parse_json(monitored(event, json!({})));
            let Happening::DataChanged { data, hinted } = only(&p) else {
                panic!()
            };
            assert_eq!(*data, DataRef::Version(PULL.into()));
            assert!(hinted.is_empty());

            // The initial pull of a monitored account still completes the session.
            let mut v = monitored(event, json!({}));
            v["monitoring"]["initial_pull_id"] = json!(PULL);
            assert!(matches!(
                only(&parse_json(v)),
                Happening::SessionCompleted { .. }
            ));
        }
        // Deprecated and repeated by POLICIES_AVAILABLE: attributed, but nothing to act on.
        let p = parse_json(envelope("POLICY_AVAILABLE", json!({"policy_id": "x"})));
        assert!(p.happenings.is_empty());
        assert!(!p.attribution.is_empty());
    }

    #[test]
    fn errors() {
        let p = parse_json(envelope("ERROR", json!({"type": "PROVIDER_ERROR"})));
        assert!(matches!(
            only(&p),
            Happening::SessionFailed {
                reason: FailureReason::ProviderError,
                ..
            }
        ));
        let p = parse_json(envelope("ERROR", json!({"type": "INTERNAL_ERROR"})));
        assert!(matches!(
            only(&p),
            Happening::SessionFailed {
                reason: FailureReason::VendorError,
                ..
            }
        ));
        let p = parse_json(monitored("ERROR", json!({"type": "PROVIDER_ERROR"})));
        assert!(matches!(only(&p), Happening::Retrying));
    }

    #[test]
    fn monitoring_reconnect() {
        let mut v = monitored(
            "MONITORING_RECONNECT",
            json!({
                "auth_status": "NOT_AUTHENTICATED",
                "reconnect_url": "https://app.usecanopy.com/c/demo/reconnect?reconnectToken=tok",
                "reconnect_token": "tok"
            }),
        );
        v["status"] = json!("NOT_AUTHENTICATED");
        let p = parse_json(v.clone());
        let Happening::ReconnectRequired {
            reason,
            reconnect_url,
            reconnect_token,
        } = only(&p)
        else {
            panic!()
        };
        assert_eq!(*reason, ReconnectReason::CredentialsExpired);
        assert!(
            reconnect_url
                .as_deref()
                .unwrap()
                .ends_with("reconnectToken=tok")
        );
        assert_eq!(reconnect_token.as_ref().unwrap().expose_secret(), "tok");
        assert!(!format!("{:?}", p.happenings).contains("\"tok\""));

        v["data"]["auth_status"] = json!("IDENTITY_VERIFICATION");
        assert!(matches!(
            only(&parse_json(v)),
            Happening::ReconnectRequired {
                reason: ReconnectReason::MfaExpired,
                ..
            }
        ));
    }

    #[test]
    fn data_updated_hints_and_monitoring_events() {
        let p = parse_json(envelope(
            "DATA_UPDATED",
            json!({"updates": [
                {"type": "CONTACT_UPDATED", "data": {"first_name": "Mo", "email": "mo@example.com", "mobile_phone": "555"}},
                {"type": "DRIVER_ADDED", "driver": {"first_name": "Riley", "last_name": "Tester"}},
                {"type": "DEMOGRAPHICS_UPDATED", "data": {"gender": "FEMALE"}}
            ]}),
        ));
        let Happening::DataChanged { data, hinted } = only(&p) else {
            panic!()
        };
        assert_eq!(*data, DataRef::Version(PULL.into()));
        let fields: Vec<(&str, Option<&str>)> = hinted
            .iter()
            .map(|h| (h.field.as_str(), h.after.as_deref()))
            .collect();
        assert_eq!(
            fields,
            vec![
                ("first_name", Some("Mo")),
                ("email", Some("mo@example.com")),
                ("phone", Some("555")),
                ("driver_added", Some("Riley Tester")),
            ]
        );
        let p = parse_json(monitored("MONITORING_EVENTS", json!({"events": []})));
        assert!(
            matches!(only(&p), Happening::DataChanged { data: DataRef::Version(v), .. } if v == PULL)
        );
    }

    #[test]
    fn unknown_types_are_kept_and_bad_bodies_are_malformed() {
        let p = parse_json(envelope("SOMETHING_NEW", json!(null)));
        assert!(
            matches!(only(&p), Happening::Vendor { vendor_type } if vendor_type == "SOMETHING_NEW")
        );
        for event in [
            "VALIDATION_COMPLETE",
            "SERVICING_WAITING_FOR_CONSUMER_CONFIRMATION",
        ] {
            assert!(matches!(
                only(&parse_json(envelope(event, json!({})))),
                Happening::Vendor { .. }
            ));
        }
        for body in [&b"not json"[..], b"[1,2]", b""] {
            assert!(matches!(
                parse(&delivery(body, None)),
                Err(ProviderError::Malformed { .. })
            ));
        }
    }
}
