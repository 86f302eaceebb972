//! Property tests of everything the Canopy provider reads from outside: the `canopy-signature`
//! header, webhook bodies (through `Provider::authenticate_webhook` and `parse_webhook`), and
//! the `GET /pulls/{id}` answer with its normalization. Inputs are arbitrary text and bytes,
//! arbitrary JSON, and mutations of what the Canopy simulator really sends.
//!
//! The property is always the same: no panic, and every input is either accepted or refused
//! with an error. A delivery is parsed in the inbox worker, so a panic there is an outage.
//! `PROPTEST_CASES=100000 cargo test -p coverwatch-canopy --test fuzz` runs longer.

#[path = "../../core/tests/support/fuzz_json.rs"]
mod fuzz_json;
#[path = "../../core/tests/support/simulator.rs"]
mod simulator;

use std::sync::OnceLock;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use coverwatch_canopy::model::PullResponse;
use coverwatch_canopy::normalize::normalize_pull;
use coverwatch_canopy::webhook::sign;
use coverwatch_canopy::{
    CanopyConfig, CanopyProvider, LINK_ID_META_KEY, SIGNATURE_HEADER, StaleSignatures,
};
use coverwatch_core::change::{diff_accounts, diff_policies};
use coverwatch_core::ids::LinkId;
use coverwatch_core::provider::Provider;
use coverwatch_core::webhook::{InboundWebhook, WebhookRejection};
use coverwatch_sandbox::canopy::fixtures::GOOD_PASSWORD;
use coverwatch_sandbox::canopy::model::event_type;
use coverwatch_sandbox::canopy::{CanopySim, CanopySimConfig, ConnectRequest};
use coverwatch_sandbox::{RetrySchedule, SimContext};
use proptest::prelude::*;
use proptest::sample::Index;
use secrecy::SecretString;
use serde_json::{Value, json};

use fuzz_json::{bytes_around, config, json, mutated, text};

const SECRET: &str = "whsec-fuzz-0123456789";
const NOW: i64 = 1_750_000_000;
/// The provider's default tolerance: five minutes either way.
const TOLERANCE: i64 = 300;

/// Keys Canopy's envelope, pulls and their parts carry, so that random objects reach the
/// fields the parsers look for.
const KEYS: &[&str] = &[
    "event_type",
    "pull_id",
    "status",
    "meta_data",
    LINK_ID_META_KEY,
    "account_identifier",
    "is_monitored",
    "monitoring",
    "initial_pull_id",
    "monitoring_id",
    "data",
    "sequence",
    "auth_status",
    "login_error_message",
    "mfa_options",
    "reconnect_url",
    "reconnect_token",
    "updates",
    "type",
    "driver",
    "success",
    "pull",
    "policies",
    "policy_id",
    "carrier_policy_number",
    "policy_type",
    "effective_date",
    "expiry_date",
    "canceled_date",
    "total_premium_cents",
    "vehicles",
    "vin",
    "year",
    "coverages",
    "name",
    "per_person_limit_cents",
    "per_incident_limit_cents",
    "per_incident_limit_percent",
    "deductible_cents",
    "deductible_percent",
    "dwellings",
    "address",
    "zip",
    "drivers",
    "drivers_license",
    "documents",
    "created_at",
    "addresses",
    "address_nature",
];

fn provider() -> &'static CanopyProvider {
    static PROVIDER: OnceLock<CanopyProvider> = OnceLock::new();
    PROVIDER.get_or_init(|| CanopyProvider::new(canopy_config()).expect("a valid configuration"))
}

/// The same provider refusing genuine signatures with an old timestamp.
fn strict_provider() -> &'static CanopyProvider {
    static PROVIDER: OnceLock<CanopyProvider> = OnceLock::new();
    PROVIDER.get_or_init(|| {
        let mut config = canopy_config();
        config.stale_signatures = StaleSignatures::Reject;
        CanopyProvider::new(config).expect("a valid configuration")
    })
}

fn canopy_config() -> CanopyConfig {
    // Never called: only the webhook methods, which make no request, are exercised.
    CanopyConfig::new(
        "http://127.0.0.1:9/canopy/api/v1.0.0",
        "http://127.0.0.1:9/canopy/",
        "team",
        "client",
        SecretString::from("secret"),
        "coverwatch-sandbox",
    )
    .with_signing_secret(SECRET)
}

fn received_at() -> DateTime<Utc> {
    Utc.timestamp_opt(NOW, 0).unwrap()
}

fn delivery(body: Vec<u8>, signature: Option<String>) -> InboundWebhook {
    InboundWebhook {
        path: String::new(),
        headers: signature
            .map(|s| vec![(SIGNATURE_HEADER.to_owned(), s)])
            .unwrap_or_default(),
        body,
        received_at: received_at(),
    }
}

fn signed(body: Vec<u8>) -> InboundWebhook {
    let header = format!("t={NOW},s={}", sign(SECRET, NOW, &body));
    delivery(body, Some(header))
}

/// What the simulator sends and serves, gathered once: every webhook of a few linked, failed
/// and monitored pulls (each event type sent on purpose as well), and each pull as
/// `GET /pulls/{id}` answers it.
struct Seeds {
    webhooks: Vec<Value>,
    pulls: Vec<Value>,
}

fn seeds() -> &'static Seeds {
    static SEEDS: OnceLock<Seeds> = OnceLock::new();
    simulator::gathered_once(&SEEDS, gather_seeds)
}

async fn gather_seeds() -> Seeds {
    const WAIT: Duration = Duration::from_secs(10);
    let dead = simulator::dead_webhook_uri("/webhooks/canopy");
    let ctx = SimContext::detached("http://127.0.0.1:9");
    let mut cfg = CanopySimConfig::default().with_webhook(dead, SECRET);
    cfg.retry = RetrySchedule::none();
    let sim = CanopySim::new(cfg, ctx.clone());

    let meta = |link: LinkId| json!({ LINK_ID_META_KEY: link.to_string(), "loan": "L-1" });
    let mut linked = Vec::new();
    for username in ["user_good", "user_good_diffs"] {
        let req = ConnectRequest::new("statefarm", username, GOOD_PASSWORD)
            .with_meta(meta(LinkId::new()));
        let pull = sim.link(req, WAIT).await.expect("the sandbox links");
        linked.push(pull.pull_id);
    }
    for username in [
        "user_locked",
        "user_provider_error",
        "user_internal_error",
        "user_mfa",
    ] {
        let req = ConnectRequest::new("statefarm", username, GOOD_PASSWORD)
            .with_meta(meta(LinkId::new()));
        sim.connect(req).expect("the sandbox takes the sign-in");
    }
    let monitoring = sim
        .create_monitoring(&linked[0], "P1M")
        .expect("a monitoring");
    let refreshed = sim
        .refresh_monitoring(&monitoring.monitoring_id)
        .expect("a refresh");
    sim.wait_for_pull(&refreshed, WAIT, |p| {
        coverwatch_sandbox::canopy::model::pull_status::is_terminal(&p.status)
    })
    .await
    .expect("the refresh ends");
    for (pull, monitored) in [(&linked[0], true), (&refreshed, true), (&linked[1], false)] {
        for event in event_type::ALL {
            // The simulator sends monitoring events only for a monitored pull, as Canopy does.
            if monitored || !event.starts_with("MONITORING_") {
                sim.send_event(pull, event, None)
                    .expect("the event is sent");
            }
        }
    }

    let sent = ctx
        .deliveries
        .wait_until(WAIT, |all| {
            let bodies: Vec<Value> = all.iter().filter_map(|a| a.json()).collect();
            let sent = |event: &str| bodies.iter().filter(|b| b["event_type"] == event).count();
            // Each event type as many times as it was sent on purpose (linking sent more).
            event_type::ALL
                .iter()
                .all(|e| sent(e) >= if e.starts_with("MONITORING_") { 2 } else { 3 })
                .then_some(bodies)
        })
        .await
        .expect("the deliveries are logged");
    let pulls = sim
        .pull_ids()
        .iter()
        .filter_map(|id| sim.pull(id))
        .map(|pull| serde_json::to_value(pull).expect("a pull serializes"))
        .collect();
    Seeds {
        webhooks: sent,
        pulls,
    }
}

/// Authentication and parsing of one delivery, as the listener and then the inbox worker do
/// it. A signed delivery is authenticated whatever its body says (the signature covers the
/// bytes, nothing else is read); parsing then accepts it or names what is wrong.
fn ingest(body: Vec<u8>) -> Result<(), TestCaseError> {
    let webhook = signed(body);
    if fuzz_json::ingest_genuine(provider(), &webhook)? {
        let is_object = serde_json::from_slice::<Value>(&webhook.body).is_ok_and(|v| v.is_object());
        prop_assert!(is_object, "only a JSON object is a delivery");
    }
    Ok(())
}

fuzz_json::webhook_properties!(ingest, seeds().webhooks.clone(), KEYS);

/// `GET /pulls/{id}` as the client reads it (`PullResponse`, then the `pull` object), the
/// normalization the provider applies, and the comparison the engine makes with the data it
/// already holds.
fn read_pull(body: &[u8], previous: &Value) -> Result<(), TestCaseError> {
    let Ok(response) = serde_json::from_slice::<PullResponse>(body) else {
        return Ok(());
    };
    let Some(raw @ Value::Object(_)) = response.pull else {
        return Ok(());
    };
    read_pull_object(&raw, previous)
}

fn read_pull_object(raw: &Value, previous: &Value) -> Result<(), TestCaseError> {
    let pull = match normalize_pull(raw, "initial-pull") {
        Ok(pull) => pull,
        Err(err) => {
            prop_assert!(!raw.is_object(), "an object is always read: {err}");
            return Ok(());
        }
    };
    let before = normalize_pull(previous, "initial-pull").expect("a sandbox pull normalizes");
    diff_accounts(&before.account.account, &pull.account.account);
    for after in &pull.policies {
        prop_assert!(!after.policy.external_id.is_empty());
        for old in &before.policies {
            diff_policies(&old.policy, &after.policy);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(256))]

    /// Any header text: refused (nothing forged from random text authenticates), never a panic.
    #[test]
    fn any_signature_header_is_refused(header in text(), body in prop::collection::vec(any::<u8>(), 0..64)) {
        let result = provider().authenticate_webhook(&delivery(body, Some(header)));
        prop_assert!(result.is_err(), "{result:?}");
    }

    /// Headers built from Canopy's grammar with hostile parts: any `t` (the i64 limits
    /// included) signed correctly, junk elements, spacing, a second `t`, several `s`. A header
    /// is accepted only with a signature over its one `t` and a `t` within the tolerance.
    #[test]
    fn structured_signature_headers(
        t in prop_oneof![
            any::<i64>(),
            Just(i64::MIN),
            Just(i64::MAX),
            (-TOLERANCE - 2..=TOLERANCE + 2).prop_map(|d| NOW + d),
        ],
        junk in prop::collection::vec(text(), 0..4),
        spaces in prop::sample::select(vec!["", " ", "  ", "\t"]),
        second_t in prop::option::of(any::<i64>()),
        good_signature in any::<bool>(),
        upper in any::<bool>(),
        at in any::<Index>(),
        body in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut signature = if good_signature {
            sign(SECRET, t, &body)
        } else {
            sign("another-secret", t, &body)
        };
        if upper {
            signature = signature.to_uppercase();
        }
        let mut elements: Vec<String> = junk;
        elements.push(format!("{spaces}t{spaces}={spaces}{t}{spaces}"));
        if let Some(other) = second_t {
            elements.push(format!("t={other}"));
        }
        let position = at.index(elements.len() + 1);
        elements.insert(position, format!("s={signature}"));
        let header = elements.join(",");
        let fresh = (i128::from(NOW) - i128::from(t)).abs() <= i128::from(TOLERANCE);
        // By default a genuine signature with an old `t` is taken and said to be late.
        let lenient = provider().authenticate_webhook(&delivery(body.clone(), Some(header.clone())));
        if let Ok(accepted) = &lenient {
            prop_assert!(good_signature && second_t.is_none(), "{header}");
            prop_assert_eq!(accepted.late_by_seconds.is_some(), !fresh, "{}", header);
        }
        let result = strict_provider().authenticate_webhook(&delivery(body, Some(header.clone())));
        if result.is_ok() {
            prop_assert!(good_signature && fresh && second_t.is_none(), "{header}");
        }
        if let Err(WebhookRejection::StaleTimestamp { age_seconds, tolerance_seconds }) = result {
            prop_assert!(!fresh);
            prop_assert_eq!(tolerance_seconds, TOLERANCE);
            prop_assert!(age_seconds.unsigned_abs() > TOLERANCE.unsigned_abs());
        }
    }

    /// Any bytes as the answer of `GET /pulls/{id}`.
    #[test]
    fn pull_response_bytes(
        body in bytes_around(seeds().pulls.iter().map(|p| json!({"success": true, "pull": p})).collect()),
        previous in prop::sample::select(seeds().pulls.clone()),
    ) {
        read_pull(&body, &previous)?;
    }

    /// Any JSON as the `pull` object.
    #[test]
    fn pull_json(raw in json(KEYS), previous in prop::sample::select(seeds().pulls.clone())) {
        read_pull_object(&raw, &previous)?;
        read_pull(json!({"success": true, "pull": raw}).to_string().as_bytes(), &previous)?;
    }

    /// Real pulls with fields dropped, retyped, blown up or filled with odd text, compared
    /// with a real pull as the engine compares a refresh with the data it holds.
    #[test]
    fn pull_mutations(
        raw in mutated(seeds().pulls.clone(), KEYS),
        previous in prop::sample::select(seeds().pulls.clone()),
    ) {
        read_pull_object(&raw, &previous)?;
    }
}

#[test]
fn the_seed_corpus_is_what_the_simulator_sends() {
    let seeds = seeds();
    // Without real payloads the mutation properties would only ever test random documents.
    assert!(seeds.pulls.len() >= 6, "{} pulls", seeds.pulls.len());
    let types: std::collections::BTreeSet<&str> = seeds
        .webhooks
        .iter()
        .filter_map(|w| w["event_type"].as_str())
        .collect();
    for event in event_type::ALL {
        assert!(types.contains(event), "no {event} in {types:?}");
    }
    for webhook in &seeds.webhooks {
        let parsed = provider()
            .parse_webhook(&signed(webhook.to_string().into_bytes()))
            .unwrap();
        assert!(!parsed.attribution.is_empty());
    }
    let with_policies = seeds
        .pulls
        .iter()
        .map(|p| normalize_pull(p, "initial").unwrap())
        .filter(|p| !p.policies.is_empty())
        .count();
    assert!(with_policies >= 2, "{with_policies} pulls with policies");
}
