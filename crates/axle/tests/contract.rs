//! Contract suite: the Axle simulator and our serde types against Axle's published API
//! reference, not against our own understanding of it.
//!
//! Axle publishes no machine-readable schema for its REST API, so `tests/contract/axle-schema.json`
//! writes the reference pages down as JSON Schema (draft 2020-12), each shape citing its page.
//!
//! * Every response the simulator gives, on every route of Axle's API it serves, successes and
//!   errors alike, is validated against that schema (formats such as `date-time` checked).
//! * The set of exercised routes must equal the set the simulator's route table serves (read from
//!   `crates/sandbox/src/axle/api.rs` and the fault registry), so a new route cannot stay untested.
//! * Every webhook the simulator sent along the way is validated against the documented event.
//! * Every example copied from the pages validates against its shape and deserializes into
//!   `coverwatch_axle::model` without losing an element.
//!
//! Where the pages and the simulator disagree, the simulator is fixed, never the schema.

#[path = "../../core/tests/support/contract.rs"]
mod contract;
#[path = "support/events.rs"]
mod events;
#[path = "../../core/tests/support/simulator.rs"]
mod simulator;

use std::collections::BTreeSet;
use std::time::Duration;

use coverwatch_axle::model;
use coverwatch_sandbox::axle::{self as sim, AxleSimConfig, SignIn};
use coverwatch_sandbox::{RetrySchedule, Sandbox, SandboxConfig, SandboxHandle};
use reqwest::header::{CONTENT_TYPE, HeaderValue};
use reqwest::{Method, RequestBuilder};
use serde_json::{Value, json};

use contract::{Exchange, Recorder, Validators, Vendor, escape, len, read};

const SCHEMA: &str = include_str!("contract/axle-schema.json");
/// The simulator's route table for Axle's REST API: the suite reads it to know what is served.
const ROUTE_TABLE: &str = include_str!("../../sandbox/src/axle/api.rs");
const WAIT: Duration = Duration::from_secs(10);

fn schema() -> &'static Value {
    static DOC: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    DOC.get_or_init(|| serde_json::from_str(SCHEMA).expect("the Axle schema is JSON"))
}

/// The schema's shapes live under `$defs`, the answers of each route under `responses`.
static VALIDATORS: Validators = Validators::new(schema, &["$defs", "responses"]);

fn validator_for(pointer: &str) -> &'static jsonschema::Validator {
    VALIDATORS.validator_for(pointer)
}

fn violations(pointer: &str, instance: &Value) -> Vec<String> {
    VALIDATORS.violations(pointer, instance)
}

#[test]
fn every_shape_compiles_and_cites_its_page() {
    for (name, def) in schema()["$defs"].as_object().unwrap() {
        validator_for(&format!("/$defs/{}", escape(name)));
        let cited = [def.get("description"), def.get("$comment")]
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .any(|text| text.contains("https://docs.axle.insure/"));
        // Shapes that only name a JSON type need no page of their own.
        let plain = matches!(name.as_str(), "NullableString");
        assert!(cited || plain, "{name} cites no page of docs.axle.insure");
    }
    for (route, statuses) in schema()["responses"].as_object().unwrap() {
        if route.starts_with('$') {
            continue;
        }
        if route == "error" {
            validator_for("/responses/error");
            continue;
        }
        for status in statuses.as_object().unwrap().keys() {
            validator_for(&format!("/responses/{}/{status}", escape(route)));
        }
    }
}

/// Axle, Coverage snippet: "Available options: `BI` `PD` `UMBI` `UMPD` `UIMBI` `UIMPD`
/// `UUIMBI` `UUIMPD` `COLL` `COMP`" (docs.axle.insure/api-reference/_snippets/coverage); Policy
/// `type`: "auto motorcycle home condo flood renters" (docs.axle.insure/api-reference/policies/policy).
#[test]
fn the_schema_holds_the_documented_enums_and_refuses_others() {
    let defs = &schema()["$defs"];
    assert_eq!(
        defs["AutoCoverageCode"]["enum"],
        json!([
            "BI", "PD", "UMBI", "UMPD", "UIMBI", "UIMPD", "UUIMBI", "UUIMPD", "COLL", "COMP"
        ])
    );
    let policy = |ty: &str, code: &str| {
        let mut p = defs["Policy"]["examples"][0].clone();
        p["type"] = json!(ty);
        p["coverages"][0]["code"] = json!(code);
        p
    };
    assert!(violations("/$defs/Policy", &policy("auto", "UUIMPD")).is_empty());
    assert!(!violations("/$defs/Policy", &policy("auto", "UM")).is_empty());
    assert!(!violations("/$defs/Policy", &policy("motorcycle", "DWELL")).is_empty());
    assert!(!violations("/$defs/Policy", &policy("boat", "BI")).is_empty());
    let mut manual = defs["Policy"]["examples"][0].clone();
    manual.as_object_mut().unwrap().remove("isActive");
    assert!(
        violations("/$defs/Policy", &manual).is_empty(),
        "isActive is optional"
    );
    manual.as_object_mut().unwrap().remove("coverages");
    assert!(
        !violations("/$defs/Policy", &manual).is_empty(),
        "coverages is required"
    );
    let disconnected = |status: &str| {
        json!({"id": "evt_1", "type": "account.disconnected", "createdAt": "2022-10-05T14:48:00.000Z",
               "data": {"client": "cli_1", "ref": "acc_1", "user": {}, "metadata": {}, "status": status}})
    };
    assert!(violations("/$defs/Event", &disconnected("mfa-expired")).is_empty());
    assert!(!violations("/$defs/Event", &disconnected("inactive")).is_empty());
}

// ---- the simulator, exercised route by route --------------------------------------------------

enum Auth {
    Client,
    WrongSecret,
    /// The platform client of the harness, acting for itself (no destination).
    Platform,
    None,
}

const PLATFORM_CLIENT_ID: &str = "cli_platform";
const PLATFORM_CLIENT_SECRET: &str = "platform-secret";

/// What the Axle suite keeps beside the simulator.
struct Axle {
    /// Where Ignition sends its webhooks: a port nothing listens on, so each delivery fails at
    /// once and stays in the delivery log, which is all the webhook check needs.
    webhook_uri: String,
}

type Harness = contract::Harness<Axle>;
type Call<'a> = contract::Call<'a, Axle>;

impl Vendor for Axle {
    type Auth = Auth;

    fn base_url(&self, sandbox: &SandboxHandle) -> String {
        sandbox.axle_base_url()
    }

    fn authorize(
        &self,
        sandbox: &SandboxHandle,
        req: RequestBuilder,
        auth: &Auth,
    ) -> RequestBuilder {
        let cfg = sandbox.axle().config();
        match auth {
            Auth::Client => req
                .header("x-client-id", &cfg.client_id)
                .header("x-client-secret", &cfg.client_secret),
            Auth::WrongSecret => req
                .header("x-client-id", &cfg.client_id)
                .header("x-client-secret", "not-the-secret"),
            Auth::Platform => req
                .header("x-client-id", PLATFORM_CLIENT_ID)
                .header("x-client-secret", PLATFORM_CLIENT_SECRET),
            Auth::None => req,
        }
    }
}

const GET: Method = Method::GET;
const POST: Method = Method::POST;

const IGNITION: &str = "/ignition";
const EXCHANGE: &str = "/token/exchange";
const DESCOPE: &str = "/token/descope";
const ACCOUNT: &str = "/accounts/{id}";
const POLICY: &str = "/policies/{id}";
const VALIDATE: &str = "/policies/{id}/validate";
const ACCOUNT_EVENT: &str = "/sandbox/accounts/{id}/event";
/// The sandbox guide's spelling (docs.axle.insure/guides/sandbox-monitoring-notifications).
const ACCOUNT_EVENT_SINGULAR: &str = "/sandbox/account/{id}/event";
const POLICY_EVENT: &str = "/sandbox/policies/{id}/event";
const DOCUMENT: &str = "/documents/{policy_id}/{index}";
const CARRIERS: &str = "/carriers";
const PLATFORM_CLIENTS: &str = "/platform/clients";

/// Routes of the simulator that Axle's API reference does not describe, and why.
const OUTSIDE_THE_REFERENCE: &[(&str, &str)] = &[
    (
        "axle.documents.get",
        "the signed URL of `documents[].url`: a storage download (a PDF), not the API",
    ),
    (
        "axle.ignition_ui",
        "the hosted Ignition page (HTML), not the API",
    ),
];

impl Harness {
    async fn start() -> Self {
        let webhook_uri = simulator::dead_webhook_uri("/webhooks/axle");
        let mut cfg = SandboxConfig::for_tests();
        cfg.axle = AxleSimConfig {
            retry: RetrySchedule::none(),
            ..AxleSimConfig::default()
        }
        .with_account(sim::AxleAccount::platform(
            PLATFORM_CLIENT_ID,
            PLATFORM_CLIENT_SECRET,
            &["cli_dest_1", "cli_dest_2"],
        ));
        let sandbox = Sandbox::start(cfg).await.expect("sandbox starts");
        Harness {
            sandbox,
            rec: Recorder::new(),
            vendor: Axle { webhook_uri },
        }
    }

    fn axle(&self) -> &sim::AxleSim {
        self.sandbox.axle()
    }

    fn call(&self, endpoint: &'static str, method: Method, template: &'static str) -> Call<'_> {
        Call::new(self, endpoint, method, template, Auth::Client)
    }

    /// Starts an Ignition through the API and answers its token.
    async fn ignition(&self, user: &str) -> String {
        let (status, body) = self
            .call("axle.ignition.start", POST, IGNITION)
            .json(json!({
                "user": {"id": user},
                "webhookUri": self.vendor.webhook_uri,
                "redirectUri": "https://app.example/axle-done",
                "metadata": {"loan": "L-1"},
            }))
            .send("start")
            .await;
        assert_eq!(status, 200, "{body}");
        body["data"]["ignitionToken"].as_str().unwrap().to_owned()
    }

    /// Links `username` through Ignition and the exchange; answers the exchange's `data`.
    async fn link(&self, user: &str, username: &str, password: &str) -> Value {
        let token = self.ignition(user).await;
        let SignIn::Complete { auth_code, .. } = self
            .axle()
            .sign_in(&token, "state-farm", username, password)
            .unwrap()
        else {
            panic!("{username} links");
        };
        self.exchange(&auth_code).await
    }

    async fn exchange(&self, auth_code: &str) -> Value {
        let (status, body) = self
            .call("axle.token.exchange", POST, EXCHANGE)
            .json(json!({ "authCode": auth_code }))
            .send("exchange")
            .await;
        assert_eq!(status, 200, "{body}");
        body["data"].clone()
    }
}

impl Call<'_> {
    fn id(self, id: &str) -> Self {
        self.param("id", id)
    }

    fn token(self, token: &str) -> Self {
        self.header("x-access-token", token)
    }
}

/// A route reached outside the API (a hosted page, a storage download), recorded so that it
/// counts as exercised.
fn seen(
    endpoint: &'static str,
    template: &'static str,
    content_type: &'static str,
    what: &str,
) -> Exchange {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    Exchange {
        endpoint,
        method: GET,
        template,
        status: 200,
        headers,
        body: Vec::new(),
        what: what.to_owned(),
    }
}

const UNKNOWN_ACCOUNT: &str = "acc_AAAAAAAAAAAAAAAAAAAAA";
const UNKNOWN_POLICY: &str = "pol_AAAAAAAAAAAAAAAAAAAAA";

async fn exercise_linking(h: &Harness) {
    h.call("axle.ignition.start", POST, IGNITION)
        .json(json!({"webhookUri": h.vendor.webhook_uri}))
        .send("no user")
        .await;
    h.call("axle.ignition.start", POST, IGNITION)
        .json(json!({"user": {"id": "u"}, "metadata": {"nested": {"a": 1}}}))
        .send("nested metadata")
        .await;
    h.call("axle.ignition.start", POST, IGNITION)
        .token("tok")
        .json(json!({"user": {"id": "u"}}))
        .send("an access token, refused since 2025-10-27")
        .await;
    h.call("axle.ignition.start", POST, IGNITION)
        .auth(Auth::WrongSecret)
        .json(json!({"user": {"id": "u"}}))
        .send("wrong secret")
        .await;
    h.call("axle.ignition.start", POST, IGNITION)
        .auth(Auth::None)
        .json(json!({"user": {"id": "u"}}))
        .send("no keys")
        .await;

    // The Ignition lifecycle, for its webhooks: opened, attempted, exited, errored.
    let token = h.ignition("usr_exit").await;
    // The hosted page is outside the reference; it must still open at the `ignitionUri`, which
    // is opaque to a client and so taken from the answer, never built.
    let uri = {
        let log = h.rec.log.lock().unwrap();
        let start = log.last().expect("the start was recorded");
        let body: Value = serde_json::from_slice(&start.body).unwrap();
        body["data"]["ignitionUri"].as_str().unwrap().to_owned()
    };
    let resp = h.rec.http.get(&uri).send().await.unwrap();
    assert_eq!(resp.status(), 200, "{uri}");
    assert!(resp.text().await.unwrap().contains(&token));
    h.rec.record(seen(
        "axle.ignition_ui",
        "/ignition-ui/",
        "text/html",
        "the hosted Ignition page",
    ));
    h.axle().open_ignition(&token).unwrap();
    let attempted = h
        .axle()
        .sign_in(&token, "state-farm", "username", "wrong")
        .unwrap();
    assert!(matches!(attempted, SignIn::Attempted { .. }));
    h.axle().exit_ignition(&token, "login").unwrap();
    let token = h.ignition("usr_error").await;
    let errored = h
        .axle()
        .sign_in(&token, "state-farm", "user-error", "pass-error")
        .unwrap();
    assert!(matches!(errored, SignIn::Error { .. }));

    h.call("axle.token.exchange", POST, EXCHANGE)
        .json(json!({}))
        .send("no authCode")
        .await;
    h.call("axle.token.exchange", POST, EXCHANGE)
        .json(json!({"authCode": "never-issued"}))
        .send("unknown authCode")
        .await;
    h.call("axle.token.exchange", POST, EXCHANGE)
        .auth(Auth::WrongSecret)
        .json(json!({"authCode": "never-issued"}))
        .send("wrong secret")
        .await;
    let token = h.ignition("usr_reuse").await;
    let SignIn::Complete { auth_code, .. } = h
        .axle()
        .sign_in(
            &token,
            "state-farm",
            "user-auto-state-minimum",
            "pass-auto-state-minimum",
        )
        .unwrap()
    else {
        panic!("minimum auto links");
    };
    h.exchange(&auth_code).await;
    h.call("axle.token.exchange", POST, EXCHANGE)
        .json(json!({ "authCode": auth_code }))
        .send("a used authCode")
        .await;

    // A manual completion: the exchange yields a policy without an account.
    let token = h.ignition("usr_manual").await;
    let SignIn::Complete { auth_code, .. } =
        h.axle().complete_without_login(&token, "manual").unwrap()
    else {
        panic!("manual completes");
    };
    let manual = h.exchange(&auth_code).await;
    let policy = manual["policy"]
        .as_str()
        .expect("a manual policy")
        .to_owned();
    let access = manual["accessToken"].as_str().unwrap().to_owned();
    let (status, _) = h
        .call("axle.policies.get", GET, POLICY)
        .id(&policy)
        .token(&access)
        .send("a manual policy")
        .await;
    assert_eq!(status, 200);
}

async fn exercise_reads(h: &Harness) {
    // The reads with only the client's keys (what a check of the credentials calls).
    let (status, body) = h
        .call("axle.carriers.list", GET, CARRIERS)
        .send("carriers")
        .await;
    assert_eq!(status, 200, "{body}");
    h.call("axle.carriers.list", GET, CARRIERS)
        .auth(Auth::WrongSecret)
        .send("carriers, wrong secret")
        .await;
    for query in [None, Some("expand=true")] {
        let mut call = h
            .call("axle.platform.clients", GET, PLATFORM_CLIENTS)
            .auth(Auth::Platform);
        if let Some(q) = query {
            call = call.query(q);
        }
        let (status, body) = call.send("a platform's destination clients").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["data"].as_array().map(Vec::len), Some(2), "{body}");
    }
    h.call("axle.platform.clients", GET, PLATFORM_CLIENTS)
        .auth(Auth::WrongSecret)
        .send("destination clients, wrong secret")
        .await;
    for (user, username, password) in [
        ("usr_auto", "username", "password"),
        ("usr_home", "user-home", "pass-home"),
    ] {
        let linked = h.link(user, username, password).await;
        let token = linked["accessToken"].as_str().unwrap().to_owned();
        let account = linked["account"].as_str().unwrap().to_owned();
        let (status, body) = h
            .call("axle.accounts.get", GET, ACCOUNT)
            .id(&account)
            .token(&token)
            .send(username)
            .await;
        assert_eq!(status, 200, "{body}");
        h.call("axle.accounts.get", GET, ACCOUNT)
            .id(&account)
            .token(&token)
            .query("expand=true")
            .send("expanded")
            .await;
        for policy in linked["policies"].as_array().unwrap() {
            let policy = policy.as_str().unwrap();
            for query in [None, Some("expand=true"), Some("term=current")] {
                let mut call = h
                    .call("axle.policies.get", GET, POLICY)
                    .id(policy)
                    .token(&token);
                if let Some(q) = query {
                    call = call.query(q);
                }
                let (status, body) = call.send(username).await;
                assert_eq!(status, 200, "{body}");
            }
            h.call("axle.policies.get", GET, POLICY)
                .id(policy)
                .token(&token)
                .query("term=renewal")
                .send("no renewal yet: 404")
                .await;
        }
    }

    let linked = h.link("usr_auto", "username", "password").await;
    let token = linked["accessToken"].as_str().unwrap().to_owned();
    let account = linked["account"].as_str().unwrap().to_owned();
    let policy = linked["policies"][0].as_str().unwrap().to_owned();
    h.axle().make_renewal_available(&policy, None).unwrap();
    let (status, body) = h
        .call("axle.policies.get", GET, POLICY)
        .id(&policy)
        .token(&token)
        .query("term=renewal")
        .send("a renewal")
        .await;
    assert_eq!(status, 200, "{body}");

    // Validate Policy (docs.axle.insure/api-reference/policies/validate-policy): both documented
    // rules, then the refusals (an undocumented rule, an empty list, a body that is no list).
    for rules in [
        json!([{"rule": "policy-active"}]),
        json!([{"rule": "policy-active"}, {"rule": "rental-covered-for-collision"}]),
    ] {
        let (status, body) = h
            .call("axle.policies.validate", POST, VALIDATE)
            .id(&policy)
            .token(&token)
            .json(rules)
            .send("validate")
            .await;
        assert_eq!(status, 200, "{body}");
    }
    for (bad, what) in [
        (
            json!([{"rule": "expiration-date-comparison"}]),
            "an undocumented rule",
        ),
        (json!([]), "no rule"),
        (json!({"rule": "policy-active"}), "not a list"),
    ] {
        let (status, _) = h
            .call("axle.policies.validate", POST, VALIDATE)
            .id(&policy)
            .token(&token)
            .json(bad)
            .send(what)
            .await;
        assert_eq!(status, 400, "{what}");
    }
    h.call("axle.policies.validate", POST, VALIDATE)
        .id(&policy)
        .json(json!([{"rule": "policy-active"}]))
        .send("validate without an access token")
        .await;

    for (endpoint, template, id) in [
        ("axle.accounts.get", ACCOUNT, account.as_str()),
        ("axle.policies.get", POLICY, policy.as_str()),
    ] {
        h.call(endpoint, GET, template)
            .id(id)
            .send("no access token")
            .await;
        h.call(endpoint, GET, template)
            .id(id)
            .token("not-a-token")
            .send("an unknown access token")
            .await;
        h.call(endpoint, GET, template)
            .id(id)
            .token(&token)
            .auth(Auth::WrongSecret)
            .send("wrong secret")
            .await;
        h.call(endpoint, GET, template)
            .id(id)
            .token(&token)
            .query("expand=maybe")
            .send("a bad expand")
            .await;
    }
    h.call("axle.accounts.get", GET, ACCOUNT)
        .id(UNKNOWN_ACCOUNT)
        .token(&token)
        .send("an account the token cannot see")
        .await;
    h.call("axle.policies.get", GET, POLICY)
        .id(UNKNOWN_POLICY)
        .token(&token)
        .send("a policy the token cannot see")
        .await;
    h.call("axle.policies.get", GET, POLICY)
        .id(&policy)
        .token(&token)
        .query("term=next")
        .send("a bad term")
        .await;

    // The signed document URL is outside the reference; it must still serve the PDF.
    let (status, body) = h
        .call("axle.policies.get", GET, POLICY)
        .id(&policy)
        .token(&token)
        .send("for its document")
        .await;
    assert_eq!(status, 200);
    let url = body["data"]["documents"][0]["url"]
        .as_str()
        .expect("the simple auto policy has a document");
    let resp = h.rec.http.get(url).send().await.unwrap();
    assert_eq!(resp.status(), 200, "{url}");
    assert!(resp.bytes().await.unwrap().starts_with(b"%PDF-"));
    h.rec.record(seen(
        "axle.documents.get",
        DOCUMENT,
        "application/pdf",
        "the signed document URL",
    ));
}

async fn exercise_monitoring(h: &Harness) {
    let linked = h.link("usr_monitor", "username", "password").await;
    let token = linked["accessToken"].as_str().unwrap().to_owned();
    let account = linked["account"].as_str().unwrap().to_owned();
    let policy = linked["policies"][0].as_str().unwrap().to_owned();

    // The sandbox guide's examples (docs.axle.insure/guides/sandbox-monitoring-notifications).
    let (status, body) = h
        .call("axle.sandbox.account_event", POST, ACCOUNT_EVENT)
        .id(&account)
        .token(&token)
        .json(json!({"email": "updatedEmail@axle.insure", "firstName": "Jane", "phone": "+14041230101"}))
        .send("account.modified")
        .await;
    assert_eq!(status, 200, "{body}");
    h.axle().account_retrying(&account).unwrap();
    let (status, body) = h
        .call("axle.sandbox.policy_event", POST, POLICY_EVENT)
        .id(&policy)
        .token(&token)
        .json(json!({"isActive": false}))
        .send("policy.modified")
        .await;
    assert_eq!(status, 200, "{body}");
    h.call("axle.sandbox.policy_event", POST, POLICY_EVENT)
        .id(UNKNOWN_POLICY)
        .token(&token)
        .json(json!({"isActive": false}))
        .send("a policy the token cannot see")
        .await;
    h.call("axle.sandbox.policy_event", POST, POLICY_EVENT)
        .id(&policy)
        .json(json!({"isActive": false}))
        .send("no access token")
        .await;
    h.call("axle.sandbox.policy_event", POST, POLICY_EVENT)
        .id(&policy)
        .token(&token)
        .auth(Auth::WrongSecret)
        .json(json!({"isActive": false}))
        .send("wrong secret")
        .await;
    h.call("axle.sandbox.account_event", POST, ACCOUNT_EVENT)
        .id(&account)
        .token(&token)
        .json(json!({"connection": {"status": "on-holiday"}}))
        .send("an undocumented connection status")
        .await;
    h.call("axle.sandbox.account_event", POST, ACCOUNT_EVENT)
        .id(UNKNOWN_ACCOUNT)
        .token(&token)
        .json(json!({"firstName": "X"}))
        .send("an account the token cannot see")
        .await;
    let (status, body) = h
        .call("axle.sandbox.account_event", POST, ACCOUNT_EVENT_SINGULAR)
        .id(&account)
        .token(&token)
        .json(json!({"connection": {"status": "credentials-expired"}}))
        .send("account.disconnected")
        .await;
    assert_eq!(status, 200, "{body}");

    h.call("axle.token.descope", POST, DESCOPE)
        .token(&token)
        .json(json!({"scope": "everything"}))
        .send("an undocumented scope")
        .await;
    h.call("axle.token.descope", POST, DESCOPE)
        .token(&token)
        .json(json!({"authCode": "monitoring"}))
        .send("no scope")
        .await;
    h.call("axle.token.descope", POST, DESCOPE)
        .json(json!({"scope": "monitoring"}))
        .send("no access token")
        .await;
    h.call("axle.token.descope", POST, DESCOPE)
        .token("not-a-token")
        .json(json!({"scope": "monitoring"}))
        .send("an unknown access token")
        .await;
    let (status, body) = h
        .call("axle.token.descope", POST, DESCOPE)
        .token(&token)
        .json(json!({"scope": "monitoring"}))
        .send("descope")
        .await;
    assert_eq!(status, 200, "{body}");
}

/// What is wrong with one exchange, judged by the schema.
fn judge(x: &Exchange) -> Vec<String> {
    let head = format!(
        "{} {} -> {} ({}, {})",
        x.method, x.template, x.status, x.endpoint, x.what
    );
    if OUTSIDE_THE_REFERENCE.iter().any(|(e, _)| *e == x.endpoint) {
        return Vec::new();
    }
    let mut out = Vec::new();
    // "Every response will include an `x-axle-request-id` header" (docs.axle.insure/api-reference/overview).
    if !x
        .header("x-axle-request-id")
        .is_some_and(|id| id.starts_with("req_"))
    {
        out.push(format!("{head}: no x-axle-request-id"));
    }
    if !x.content_type().starts_with("application/json") {
        out.push(format!("{head}: content-type {:?}", x.content_type()));
        return out;
    }
    let Ok(body) = serde_json::from_slice::<Value>(&x.body) else {
        out.push(format!("{head}: the body is not JSON"));
        return out;
    };
    // The singular path is the sandbox guide's spelling of the same operation.
    let template = if x.template == ACCOUNT_EVENT_SINGULAR {
        ACCOUNT_EVENT
    } else {
        x.template
    };
    let route = format!("{} {template}", x.method);
    let pointer = match x.status {
        200 => {
            if !schema()["responses"][&route]["200"].is_object() {
                out.push(format!("{head}: the schema has no such operation"));
                return out;
            }
            format!("/responses/{}/200", escape(&route))
        }
        400..=499 => "/responses/error".to_owned(),
        other => {
            out.push(format!("{head}: status {other} is not one Axle documents"));
            return out;
        }
    };
    out.extend(
        violations(&pointer, &body)
            .into_iter()
            .map(|v| format!("{head}: {v}")),
    );
    if x.status == 200 && x.template == POLICY {
        out.extend(
            coverage_rules(&body["data"])
                .into_iter()
                .map(|v| format!("{head}: {v}")),
        );
    }
    // The schema cannot tell an ignitionToken from the older example's bare token.
    if x.status == 200 && x.template == IGNITION {
        let ok = body["data"]["ignitionToken"]
            .as_str()
            .is_some_and(|t| t.starts_with("ign_"));
        if !ok {
            out.push(format!("{head}: ignitionToken without the ign_ prefix"));
        }
    }
    out
}

/// The rules Axle's pages state about a Policy's coverages that JSON Schema cannot express:
/// "Within a Policy object, there will only be a single Coverage object per coverage `code` per
/// `property`" (docs.axle.insure/api-reference/_snippets/coverage), and "If both the
/// limitPerAccident and limitPerPerson values are provided for a coverage, the limitPerAccident
/// value must be greater than the limitPerPerson value" (docs.axle.insure/api-reference/policies/coverages).
fn coverage_rules(policy: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for c in policy["coverages"].as_array().into_iter().flatten() {
        let key = (c["code"].to_string(), c["property"].to_string());
        if !seen.insert(key.clone()) {
            out.push(format!("two coverages {} for property {}", key.0, key.1));
        }
        if let (Some(person), Some(accident)) =
            (c["limitPerPerson"].as_f64(), c["limitPerAccident"].as_f64())
            && accident <= person
        {
            out.push(format!(
                "{}: limitPerAccident {accident} is not greater than limitPerPerson {person}",
                c["code"]
            ));
        }
    }
    out
}

#[test]
fn the_coverage_rules_catch_what_the_pages_forbid() {
    let ok = json!({"coverages": [
        {"code": "BI", "limitPerPerson": 250000, "limitPerAccident": 500000},
        {"code": "COMP", "property": "prp_a"},
        {"code": "COMP", "property": "prp_b"},
    ]});
    assert!(coverage_rules(&ok).is_empty());
    let twice = json!({"coverages": [{"code": "COMP"}, {"code": "COMP"}]});
    assert_eq!(coverage_rules(&twice).len(), 1);
    let inverted =
        json!({"coverages": [{"code": "BI", "limitPerPerson": 50000, "limitPerAccident": 50000}]});
    assert_eq!(coverage_rules(&inverted).len(), 1);
}

/// `(endpoint, path)` of every route in the simulator's route table for Axle's REST API.
fn route_table() -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for chunk in ROUTE_TABLE.split(".route(").skip(1) {
        let chunk = chunk.split(".merge(").next().unwrap();
        let mut quoted = chunk.split('"').skip(1).step_by(2);
        let path = quoted.next().expect("a route names its path").to_owned();
        let endpoint = quoted
            .next()
            .filter(|_| chunk.contains("guard(&f, \""))
            .expect("every route is guarded under a fault endpoint name")
            .to_owned();
        out.insert((endpoint, path));
    }
    assert!(
        ROUTE_TABLE.contains(".merge(ui::router(&f))"),
        "the hosted page's routes are merged from ui.rs"
    );
    out
}

#[tokio::test]
async fn every_route_of_the_simulator_answers_as_the_reference_says() {
    let h = Harness::start().await;
    exercise_linking(&h).await;
    exercise_reads(&h).await;
    exercise_monitoring(&h).await;

    let log = h.rec.take();
    let mut failures: Vec<String> = log.iter().flat_map(judge).collect();

    // Deliveries are made in the background: wait until every type has been attempted.
    for event_type in events::EVENT_TYPES {
        h.sandbox
            .deliveries()
            .wait_for(WAIT, |a| a.vendor == "axle" && a.event_type == *event_type)
            .await
            .unwrap_or_else(|e| panic!("the simulator never sent {event_type}: {e}"));
    }
    failures.extend(VALIDATORS.webhook_failures(&h.sandbox, "axle", "/$defs/Event"));
    assert!(
        failures.is_empty(),
        "{} disagreement(s) with Axle's API reference:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // A route added to the simulator must be added here too.
    let outside: BTreeSet<String> = OUTSIDE_THE_REFERENCE
        .iter()
        .map(|(e, _)| (*e).to_owned())
        .collect();
    let served: BTreeSet<String> = h
        .sandbox
        .faults()
        .endpoints()
        .into_iter()
        .filter(|e| e.starts_with("axle."))
        .collect();
    let table = route_table();
    let exercised: BTreeSet<String> = log.iter().map(|x| x.endpoint.to_owned()).collect();
    assert_eq!(
        exercised, served,
        "exercised routes differ from the simulator's Axle routes"
    );
    let table_names: BTreeSet<String> = table.iter().map(|(e, _)| e.clone()).collect();
    let mut expected_names = table_names.clone();
    expected_names.insert("axle.ignition_ui".into());
    assert_eq!(
        expected_names, served,
        "the route table and the fault registry differ"
    );
    let exercised_paths: BTreeSet<(String, String)> = log
        .iter()
        .map(|x| (x.endpoint.to_owned(), x.template.to_owned()))
        .collect();
    let missing: Vec<_> = table.difference(&exercised_paths).collect();
    assert!(missing.is_empty(), "routes never exercised: {missing:?}");
    assert!(
        outside.is_subset(&served),
        "OUTSIDE_THE_REFERENCE names a route the simulator no longer serves"
    );
    for endpoint in exercised.difference(&outside) {
        assert!(
            log.iter()
                .any(|x| x.endpoint == endpoint && x.status == 200),
            "{endpoint} was never exercised successfully"
        );
        assert!(
            log.iter()
                .any(|x| x.endpoint == endpoint && x.status >= 400),
            "{endpoint} was never exercised with an error"
        );
    }
    h.sandbox.shutdown().await;
}

// ---- the pages' examples against our types ----------------------------------------------------

fn examples(def: &str) -> Vec<Value> {
    let list = schema()["$defs"][def]["examples"]
        .as_array()
        .unwrap_or_else(|| panic!("{def} has examples"));
    assert!(!list.is_empty(), "{def} has examples");
    for (i, ex) in list.iter().enumerate() {
        let v = violations(&format!("/$defs/{def}"), ex);
        assert!(
            v.is_empty(),
            "{def} example {i} breaks its own shape: {v:?}"
        );
    }
    list.clone()
}

fn check_policy(ex: &Value, ours: &model::Policy, what: &str) {
    assert_eq!(ours.id.as_deref(), ex["id"].as_str(), "{what}: id");
    assert_eq!(
        ours.account.as_deref(),
        ex["account"].as_str(),
        "{what}: account"
    );
    assert_eq!(
        ours.policy_type.as_deref(),
        ex["type"].as_str(),
        "{what}: type"
    );
    assert_eq!(
        ours.is_active,
        Some(ex["isActive"].as_bool()),
        "{what}: isActive"
    );
    assert_eq!(ours.premium, ex["premium"].as_f64(), "{what}: premium");
    assert_eq!(
        ours.properties.len(),
        len(&ex["properties"]),
        "{what}: properties"
    );
    assert_eq!(
        ours.coverages.len(),
        len(&ex["coverages"]),
        "{what}: coverages"
    );
    assert_eq!(
        ours.insureds.len(),
        len(&ex["insureds"]),
        "{what}: insureds"
    );
    assert_eq!(
        ours.third_parties.len(),
        len(&ex["thirdParties"]),
        "{what}: thirdParties"
    );
    assert_eq!(
        ours.documents.len(),
        len(&ex["documents"]),
        "{what}: documents"
    );
    for (c, e) in ours
        .coverages
        .iter()
        .zip(ex["coverages"].as_array().unwrap())
    {
        check_coverage(e, c, what);
    }
    for (p, e) in ours
        .properties
        .iter()
        .zip(ex["properties"].as_array().unwrap())
    {
        let v: model::VehicleData = read(&Value::Object(p.data.clone()), what);
        assert_eq!(
            v.year.as_deref(),
            e["data"]["year"].as_str(),
            "{what}: year"
        );
        assert_eq!(v.vin.as_deref(), e["data"]["vin"].as_str(), "{what}: vin");
    }
}

fn check_coverage(ex: &Value, ours: &model::Coverage, what: &str) {
    assert_eq!(ours.code.as_deref(), ex["code"].as_str(), "{what}: code");
    assert_eq!(ours.label.as_deref(), ex["label"].as_str(), "{what}: label");
    let per_person = ex.get("limitPerPerson").map(Value::as_f64);
    assert_eq!(ours.limit_per_person, per_person, "{what}: limitPerPerson");
    assert_eq!(
        ours.limit_per_accident,
        ex["limitPerAccident"].as_f64(),
        "{what}: limitPerAccident"
    );
    assert_eq!(
        ours.deductible,
        ex["deductible"].as_f64(),
        "{what}: deductible"
    );
    assert_eq!(
        ours.property.as_deref(),
        ex["property"].as_str(),
        "{what}: property"
    );
}

#[test]
fn every_example_of_the_pages_reads_into_our_types() {
    for (i, ex) in examples("Policy").iter().enumerate() {
        let what = format!("Policy example {i}");
        check_policy(ex, &read(ex, &what), &what);
        // Get Policy wraps it in the envelope.
        let env: model::Envelope = read(&json!({"success": true, "data": ex}), &what);
        assert_eq!(env.success, Some(true));
        check_policy(ex, &read(&env.data.unwrap(), &what), &what);
    }
    for (i, ex) in examples("Coverage").iter().enumerate() {
        check_coverage(ex, &read(ex, "Coverage"), &format!("Coverage example {i}"));
    }
    for ex in examples("Account") {
        let a: model::Account = read(&ex, "Account");
        assert_eq!(a.id.as_deref(), ex["id"].as_str());
        assert_eq!(a.carrier.as_deref(), ex["carrier"].as_str());
        assert_eq!(a.email.as_deref(), ex["email"].as_str());
        assert_eq!(a.policies.len(), len(&ex["policies"]));
        let c = a.connection.expect("connection");
        assert_eq!(c.status.as_deref(), ex["connection"]["status"].as_str());
        assert_eq!(a.refreshed_at.as_deref(), ex["refreshedAt"].as_str());
    }
    for ex in examples("Address") {
        let a: model::Address = read(&ex, "Address");
        assert_eq!(a.address_line2.as_deref(), ex["addressLine2"].as_str());
        assert_eq!(a.postal_code.as_deref(), ex["postalCode"].as_str());
    }
    for ex in examples("Property") {
        let p: model::Property = read(&ex, "Property");
        assert_eq!(p.property_type.as_deref(), Some("vehicle"));
        let v: model::VehicleData = read(&Value::Object(p.data), "vehicle");
        assert_eq!(v.body_style.as_deref(), ex["data"]["bodyStyle"].as_str());
        assert_eq!(v.make.as_deref(), ex["data"]["make"].as_str());
    }
    for ex in examples("Insured") {
        let i: model::Insured = read(&ex, "Insured");
        assert_eq!(i.first_name.as_deref(), ex["firstName"].as_str());
        assert_eq!(i.insured_type.as_deref(), ex["type"].as_str());
        assert_eq!(i.license_no.as_deref(), ex["licenseNo"].as_str());
        assert_eq!(i.property.as_deref(), ex["property"].as_str());
    }
    for ex in examples("ThirdParty") {
        let t: model::ThirdParty = read(&ex, "ThirdParty");
        assert_eq!(t.party_type.as_deref(), ex["type"].as_str());
        let addr = t.address.expect("address");
        assert_eq!(
            addr.address_line1.as_deref(),
            ex["address"]["addressLine1"].as_str()
        );
        assert_eq!(
            addr.postal_code.as_deref(),
            ex["address"]["postalCode"].as_str()
        );
    }
    for ex in examples("Document") {
        let d: model::Document = read(&ex, "Document");
        assert_eq!(d.name.as_deref(), ex["name"].as_str());
        assert_eq!(d.kinds, vec!["declaration-page"]);
    }
    for ex in examples("IgnitionStarted") {
        let s: model::IgnitionStarted = read(&ex, "IgnitionStarted");
        assert_eq!(s.ignition_token.as_deref(), ex["ignitionToken"].as_str());
        assert_eq!(s.ignition_uri.as_deref(), ex["ignitionUri"].as_str());
    }
    for ex in examples("Exchanged") {
        let x: model::Exchanged = read(&ex, "Exchanged");
        assert!(x.access_token.is_some());
        assert_eq!(x.account.as_deref(), ex["account"].as_str());
        assert_eq!(x.policies.len(), len(&ex["policies"]));
    }
    examples("Descoped");
    for ex in examples("Event") {
        let e: model::Event = read(&ex, "Event");
        assert_eq!(e.event_type.as_deref(), ex["type"].as_str());
        assert_eq!(e.created_at.as_deref(), ex["createdAt"].as_str());
        let data = e.data.expect("data");
        assert_eq!(data.client.as_deref(), ex["data"]["client"].as_str());
        assert_eq!(data.reference.as_deref(), ex["data"]["ref"].as_str());
        assert_eq!(data.account.as_deref(), ex["data"]["account"].as_str());
        assert_eq!(data.status.as_deref(), ex["data"]["status"].as_str());
        assert_eq!(data.changes.as_ref(), ex["data"].get("changes"));
    }
}
