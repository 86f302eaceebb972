//! Property tests of everything the Axle provider reads from outside: the webhook path token and
//! shared header, webhook bodies (through `Provider::authenticate_webhook` and `parse_webhook`),
//! and the Policy and Account answers with their normalization. Inputs are arbitrary text and
//! bytes, arbitrary JSON, and mutations of what the Axle simulator really sends.
//!
//! The property is always the same: no panic, and every input is either accepted or refused
//! with an error. A delivery is parsed in the inbox worker, so a panic there is an outage.
//! `PROPTEST_CASES=100000 cargo test -p coverwatch-axle --test fuzz` runs longer.

#[path = "support/events.rs"]
mod events;
#[path = "../../core/tests/support/fuzz_json.rs"]
mod fuzz_json;
#[path = "../../core/tests/support/simulator.rs"]
mod simulator;

use std::sync::OnceLock;
use std::time::Duration;

use chrono::Utc;
use coverwatch_axle::normalize::{account_snapshot, policy_snapshot};
use coverwatch_axle::{AxleConfig, AxleProvider};
use coverwatch_core::change::{diff_accounts, diff_policies};
use coverwatch_core::ids::LinkId;
use coverwatch_core::policy::PolicyTerm;
use coverwatch_core::provider::Provider;
use coverwatch_core::webhook::{InboundWebhook, WebhookRejection};
use coverwatch_sandbox::axle::{AxleSim, AxleSimConfig, SignIn, StartIgnition};
use coverwatch_sandbox::{RetrySchedule, SimContext};
use proptest::prelude::*;
use serde_json::{Value, json};

use fuzz_json::{bytes_around, config, json, mutated, text};

const HEADER_NAME: &str = "x-coverwatch-auth";
const HEADER_VALUE: &str = "shared-header-secret";
const TOKEN: &str = "wht_0123456789abcdefghijkl";

/// Keys of Axle's events, Policies and Accounts, so that random objects reach the fields the
/// parsers look for.
const KEYS: &[&str] = &[
    "id",
    "type",
    "data",
    "createdAt",
    "client",
    "account",
    "ref",
    "user",
    "metadata",
    "coverwatchLinkId",
    "authCode",
    "result",
    "step",
    "message",
    "status",
    "code",
    "changes",
    "key",
    "value",
    "oldValue",
    "success",
    "carrier",
    "policyNumber",
    "isActive",
    "effectiveDate",
    "expirationDate",
    "premium",
    "address",
    "addressLine1",
    "postalCode",
    "properties",
    "vin",
    "year",
    "coverages",
    "limitPerPerson",
    "limitPerAccident",
    "deductible",
    "property",
    "insureds",
    "licenseNo",
    "thirdParties",
    "documents",
    "policies",
    "connection",
    "refreshedAt",
    "replacementCost",
];

fn provider(shared_header: bool) -> &'static AxleProvider {
    static WITH: OnceLock<AxleProvider> = OnceLock::new();
    static WITHOUT: OnceLock<AxleProvider> = OnceLock::new();
    let build = || {
        // Never called: only the webhook methods, which make no request, are exercised.
        let mut config = AxleConfig::new("http://127.0.0.1:9", "cli", "sec");
        if shared_header {
            config.webhook_header = Some((HEADER_NAME.into(), HEADER_VALUE.to_owned().into()));
        }
        AxleProvider::new(config).expect("a valid configuration")
    };
    if shared_header {
        WITH.get_or_init(build)
    } else {
        WITHOUT.get_or_init(build)
    }
}

fn delivery(path: &str, headers: Vec<(String, String)>, body: Vec<u8>) -> InboundWebhook {
    InboundWebhook {
        path: path.to_owned(),
        headers,
        body,
        received_at: Utc::now(),
    }
}

/// A delivery on a well-formed token path with the shared header, as Axle sends them.
fn genuine(body: Vec<u8>) -> InboundWebhook {
    delivery(
        TOKEN,
        vec![(HEADER_NAME.to_owned(), HEADER_VALUE.to_owned())],
        body,
    )
}

/// What the simulator sends and serves, gathered once: the webhooks of Ignitions that linked,
/// failed, were retried and exited, and of every monitoring scenario; each Policy (current and
/// renewal term) and Account as the API answers them.
struct Seeds {
    webhooks: Vec<Value>,
    policies: Vec<Value>,
    accounts: Vec<Value>,
}

fn seeds() -> &'static Seeds {
    static SEEDS: OnceLock<Seeds> = OnceLock::new();
    simulator::gathered_once(&SEEDS, gather_seeds)
}

async fn gather_seeds() -> Seeds {
    let dead = simulator::dead_webhook_uri(&format!("/webhooks/axle/{TOKEN}"));
    let ctx = SimContext::detached("http://127.0.0.1:9");
    let sim = AxleSim::new(
        AxleSimConfig {
            retry: RetrySchedule::none(),
            ..AxleSimConfig::default()
        },
        ctx.clone(),
    );
    let start = || {
        let request = StartIgnition::for_user("user-1")
            .webhook(dead.clone())
            .metadata(json!({ "coverwatchLinkId": LinkId::new().to_string(), "loan": "L-1" }));
        let started = sim.start_ignition(request, None).expect("an Ignition");
        sim.open_ignition(&started.ignition_token)
            .expect("the Ignition opens");
        started.ignition_token
    };

    let mut webhooks = Vec::new();
    let mut policies = Vec::new();
    let mut accounts = Vec::new();
    for (username, password) in [
        ("username", "password"),
        ("user-auto-state-minimum", "pass-auto-state-minimum"),
        ("user-home", "pass-home"),
    ] {
        let token = start();
        sim.sign_in(&token, "state-farm", username, "wrong")
            .expect("a failed attempt");
        let SignIn::Complete { auth_code, .. } = sim
            .sign_in(&token, "state-farm", username, password)
            .expect("a sign-in")
        else {
            panic!("{username} links");
        };
        let exchanged = sim.exchange(&auth_code).expect("the code exchanges");
        // A linked (not manual or proxy) Ignition always grants an account.
        let account = exchanged
            .account
            .clone()
            .expect("a linked Ignition has an account");
        for policy in &exchanged.policies {
            let renewal = json!({ "premium": 999.99 });
            let outcomes = [
                sim.modify_policy(policy, &json!({ "premium": 1.5, "policyNumber": "N-2" })),
                sim.make_renewal_available(policy, Some(&renewal)),
                sim.cancel_policy(policy),
            ];
            for outcome in outcomes {
                webhooks.extend(outcome.expect("a policy scenario").event.map(|e| e.body));
            }
            policies.extend(sim.policy(policy));
            policies.extend(sim.policy_renewal(policy));
        }
        let outcomes = [
            sim.modify_account(&account, &json!({ "email": "new@example.com" })),
            sim.account_retrying(&account),
            sim.disconnect_account(&account, "credentials-expired"),
        ];
        for outcome in outcomes {
            webhooks.extend(outcome.expect("an account scenario").event.map(|e| e.body));
        }
        accounts.extend(sim.account(&account));
    }
    let exited = start();
    sim.exit_ignition(&exited, "select-carrier")
        .expect("the Ignition exits");
    let errored = start();
    sim.sign_in(&errored, "state-farm", "user-error", "pass-error")
        .expect("the Ignition errors");

    // Ignition events go out only as deliveries: read them from the log.
    let sent = ctx
        .deliveries
        .wait_until(Duration::from_secs(10), |all| {
            let types: Vec<String> = all.iter().map(|a| a.event_type.clone()).collect();
            let has = |t: &str| types.iter().any(|seen| seen == t);
            ["ignition.completed", "ignition.exited", "ignition.errored"]
                .iter()
                .all(|t| has(t))
                .then(|| all.iter().filter_map(|a| a.json()).collect::<Vec<_>>())
        })
        .await
        .expect("the Ignition webhooks are logged");
    webhooks.extend(sent);
    Seeds {
        webhooks,
        policies,
        accounts,
    }
}

/// Authentication and parsing of one genuine delivery, as the listener and then the inbox
/// worker do it: authentication reads only the path, the header and the body's top-level `id`;
/// parsing accepts the body or names what is wrong.
fn ingest(body: Vec<u8>) -> Result<(), TestCaseError> {
    fuzz_json::ingest_genuine(provider(true), &genuine(body))?;
    Ok(())
}

fuzz_json::webhook_properties!(ingest, seeds().webhooks.clone(), KEYS);

/// The `data` of an answer, as the client takes it: a JSON object, its `data` when enveloped.
fn answer_data(body: &[u8]) -> Option<Value> {
    match serde_json::from_slice::<Value>(body).ok()? {
        Value::Object(mut object) => Some(object.remove("data").unwrap_or(Value::Object(object))),
        _ => None,
    }
}

/// `GET /policies/{id}`: the normalization the provider applies, and the comparison the engine
/// makes with the policy it already holds. Any object is read (Axle says every field is
/// nullable and its examples vary), anything else refused.
fn read_policy(raw: Value, previous: &Value) -> Result<(), TestCaseError> {
    let is_object = raw.is_object();
    let before = policy_snapshot(previous.clone(), "pol_previous", PolicyTerm::Current)
        .expect("a simulator Policy normalizes");
    for term in [PolicyTerm::Current, PolicyTerm::Renewal] {
        match policy_snapshot(raw.clone(), "pol_requested", term) {
            Some(after) => {
                prop_assert!(is_object);
                prop_assert!(!after.policy.external_id.is_empty());
                diff_policies(&before.policy, &after.policy);
            }
            None => prop_assert!(!is_object, "an object is always read"),
        }
    }
    Ok(())
}

/// `GET /accounts/{id}`, likewise.
fn read_account(raw: Value, previous: &Value) -> Result<(), TestCaseError> {
    let is_object = raw.is_object();
    let before =
        account_snapshot(previous.clone(), "acc_previous").expect("a simulator Account normalizes");
    match account_snapshot(raw, "acc_requested") {
        Some(after) => {
            prop_assert!(is_object);
            diff_accounts(&before.account, &after.account);
        }
        None => prop_assert!(!is_object, "an object is always read"),
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(256))]

    /// Any path and any header: a path that is not a plausible token is refused before the
    /// header is looked at, and without the exact shared header nothing is accepted.
    #[test]
    fn any_path_and_header(
        path in text(),
        header in prop::option::of((text(), text())),
        body in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let headers: Vec<(String, String)> = header.into_iter().collect();
        let genuine_header = headers
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case(HEADER_NAME) && v.trim() == HEADER_VALUE);
        let webhook = delivery(&path, headers, body);
        let with = provider(true).authenticate_webhook(&webhook);
        let without = provider(false).authenticate_webhook(&webhook);
        if let Ok(authenticated) = &without {
            // The token is handed to the engine as it came, to be matched to its link.
            prop_assert_eq!(authenticated.link_token.as_deref(), Some(path.trim_matches('/')));
        }
        if without == Err(WebhookRejection::UnknownPath) {
            prop_assert_eq!(&with, &Err(WebhookRejection::UnknownPath));
        }
        if with.is_ok() {
            prop_assert!(genuine_header && without.is_ok());
        }
    }

    /// Any bytes as the answer of `GET /policies/{id}` and `GET /accounts/{id}`.
    #[test]
    fn answer_bytes(
        body in bytes_around(
            seeds().policies.iter().chain(&seeds().accounts)
                .map(|data| json!({"success": true, "data": data}))
                .collect(),
        ),
        policy in prop::sample::select(seeds().policies.clone()),
        account in prop::sample::select(seeds().accounts.clone()),
    ) {
        if let Some(data) = answer_data(&body) {
            read_policy(data.clone(), &policy)?;
            read_account(data, &account)?;
        }
    }

    /// Any JSON as a Policy or an Account.
    #[test]
    fn answer_json(
        raw in json(KEYS),
        policy in prop::sample::select(seeds().policies.clone()),
        account in prop::sample::select(seeds().accounts.clone()),
    ) {
        read_policy(raw.clone(), &policy)?;
        read_account(raw, &account)?;
    }

    /// Real Policies with fields dropped, retyped, blown up or filled with odd text, compared
    /// with a real one as the engine compares a refresh with the data it holds.
    #[test]
    fn policy_mutations(
        raw in mutated(seeds().policies.clone(), KEYS),
        previous in prop::sample::select(seeds().policies.clone()),
    ) {
        read_policy(raw, &previous)?;
    }

    /// Real Accounts, mutated likewise.
    #[test]
    fn account_mutations(
        raw in mutated(seeds().accounts.clone(), KEYS),
        previous in prop::sample::select(seeds().accounts.clone()),
    ) {
        read_account(raw, &previous)?;
    }
}

#[test]
fn the_seed_corpus_is_what_the_simulator_sends() {
    let seeds = seeds();
    // Without real payloads the mutation properties would only ever test random documents.
    let types: std::collections::BTreeSet<&str> = seeds
        .webhooks
        .iter()
        .filter_map(|w| w["type"].as_str())
        .collect();
    for event in events::EVENT_TYPES {
        assert!(types.contains(event), "no {event} in {types:?}");
    }
    for webhook in &seeds.webhooks {
        let parsed = provider(true)
            .parse_webhook(&genuine(webhook.to_string().into_bytes()))
            .unwrap();
        assert!(!parsed.attribution.is_empty());
    }
    // Four policies (home, minimum auto, two auto) and a renewal term of each.
    assert_eq!(seeds.policies.len(), 8);
    assert_eq!(seeds.accounts.len(), 3);
}
