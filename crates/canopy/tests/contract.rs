//! Contract suite: the Canopy simulator and our serde types against Canopy's published OpenAPI
//! document, not against our own understanding of it.
//!
//! `tests/contract/canopy-openapi.json` is a byte-for-byte copy of the OpenAPI 3.1 document
//! Canopy publishes for `https://app.usecanopy.com/api/v1.0.0` (API Reference, v1.0.0), as
//! kept in the project's shared folder at `shared/vendors/canopy-openapi.json`. It is copied into
//! the repository so that the suite never depends on a path outside it;
//! [`the_copy_is_identical_to_the_shared_document`] notices when the shared copy moves on.
//!
//! * Every response the simulator gives, on every route it serves, is validated against the
//!   document's schema for that path, method and status (`$ref`s resolved inside the document;
//!   formats such as `uuid` and `date-time` checked). A status the document does not list for an
//!   operation is a failure too.
//! * The set of exercised routes must equal the set the simulator serves, so a new route cannot
//!   stay untested.
//! * Every webhook the simulator sent along the way is validated against `WebhookBody`.
//! * Every example in the document deserializes into our types of `coverwatch_canopy::model`
//!   without losing an element.
//!
//! Where the document and the simulator disagree, the simulator is fixed, never this suite.

#[path = "../../core/tests/support/contract.rs"]
mod contract;
#[path = "../../core/tests/support/simulator.rs"]
mod simulator;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use coverwatch_canopy::model;
use coverwatch_sandbox::canopy::{
    self as sim, ConnectRequest, Scenario, ScenarioAction, ScenarioTarget,
};
use coverwatch_sandbox::{RetrySchedule, Sandbox, SandboxConfig, SandboxHandle};
use reqwest::{Method, RequestBuilder};
use serde_json::{Value, json};

use contract::{Exchange, Recorder, Validators, Vendor, escape, len, read};

const OPENAPI: &str = include_str!("contract/canopy-openapi.json");
const WAIT: Duration = Duration::from_secs(10);

fn openapi() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| serde_json::from_str(OPENAPI).expect("the OpenAPI document is JSON"))
}

// ---- the copy ---------------------------------------------------------------------------------

/// CI lays the project's shared folder beside the repository (`<workspace>/../shared`).
fn shared_copy() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/vendors/canopy-openapi.json")
}

#[test]
fn the_copy_is_identical_to_the_shared_document() {
    let path = shared_copy();
    match std::fs::read(&path) {
        Ok(shared) => assert!(
            shared == OPENAPI.as_bytes(),
            "{} differs from crates/canopy/tests/contract/canopy-openapi.json: Canopy's document \
             changed; copy it over and let this suite show what the simulator must follow",
            path.display()
        ),
        // The repository's copy is the contract; the shared one only tells when to refresh it.
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            eprintln!(
                "SKIPPED: {} not found, so the repository's copy of Canopy's document cannot be \
                 compared with it here (CI lays shared/ beside the clone and compares them); the \
                 suite validates against the repository's copy",
                path.display()
            )
        }
        Err(err) => panic!("cannot read {}: {err}", path.display()),
    }
}

#[test]
fn the_document_is_the_published_openapi_3_1() {
    let doc = openapi();
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(
        doc["servers"][0]["url"],
        "https://app.usecanopy.com/api/v1.0.0"
    );
    // Every schema of the document must compile, or a broken `$ref` would pass unnoticed.
    for name in doc["components"]["schemas"].as_object().unwrap().keys() {
        validator_for(&format!("/components/schemas/{}", escape(name)));
    }
}

// ---- schema validation ------------------------------------------------------------------------

/// The document as validation reads it. Three readings, each where Canopy's own words say more
/// than the schema's letter (nothing else is touched):
///
/// * `$ref`s are made valid URI fragments: two are written with the raw braces of a path
///   template (`#/paths/~1carriers~1{carrierId}/…`).
/// * A schema typed `[T, "null"]` that also carries an `enum` or a `$ref` accepts `null`: in
///   JSON Schema the `enum` (or the referenced object schema) would still refuse it, yet the
///   document's own examples carry `null` there (`education`, `form_of_business`, …); see
///   [`a_nullable_enum_admits_null_and_only_its_values`].
/// * Event types Canopy documents outside the OpenAPI enums: `MONITORING_EVENTS` (webhook
///   reference, "Monitoring events"), and, on a webhook set up in the dashboard, `ERROR`,
///   `MONITORING_RECONNECT`, `DATA_UPDATED` and `SERVICING_WAITING_FOR_CONSUMER_CONFIRMATION`,
///   which "appear reachable only through the dashboard" (see `shared/vendors/canopy.md` §4.1).
fn resolvable_document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| {
        fn walk(v: &mut Value) {
            match v {
                Value::Object(map) => {
                    if let Some(Value::String(r)) = map.get_mut("$ref") {
                        *r = r.replace('{', "%7B").replace('}', "%7D");
                    }
                    let nullable = map
                        .get("type")
                        .and_then(Value::as_array)
                        .is_some_and(|t| t.iter().any(|t| t == "null"));
                    if nullable && (map.contains_key("enum") || map.contains_key("$ref")) {
                        let mut rest = std::mem::take(map);
                        let types: Vec<Value> = rest["type"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .filter(|t| *t != "null")
                            .cloned()
                            .collect();
                        rest.insert("type".into(), Value::Array(types));
                        let mut rest = Value::Object(rest);
                        walk(&mut rest);
                        map.insert("anyOf".into(), json!([{"type": "null"}, rest]));
                        return;
                    }
                    map.values_mut().for_each(walk);
                }
                Value::Array(items) => items.iter_mut().for_each(walk),
                _ => {}
            }
        }
        let mut doc = openapi().clone();
        walk(&mut doc);
        let extend = |enum_: &mut Value, extra: &[&str]| {
            let list = enum_.as_array_mut().expect("an enum");
            list.extend(extra.iter().map(|e| json!(e)));
        };
        extend(
            &mut doc["components"]["schemas"]["WebhookBody"]["properties"]["event_type"]["enum"],
            &["MONITORING_EVENTS"],
        );
        extend(
            &mut doc["paths"]["/teams/{teamId}/webhooks"]["get"]["responses"]["200"]["content"]
                ["application/json"]["schema"]["properties"]["webhooks"]["items"]["properties"]
                ["event_types"]["items"]["enum"],
            &[
                "ERROR",
                "MONITORING_RECONNECT",
                "DATA_UPDATED",
                "SERVICING_WAITING_FOR_CONSUMER_CONFIRMATION",
                "MONITORING_EVENTS",
            ],
        );
        doc
    })
}

/// Validators for the schemas of [`resolvable_document`]: a schema's `$ref`s lead into the
/// document's `paths` and `components`.
static VALIDATORS: Validators = Validators::new(resolvable_document, &["paths", "components"]);

fn validator_for(pointer: &str) -> &'static jsonschema::Validator {
    VALIDATORS.validator_for(pointer)
}

/// Every violation of the schema at `pointer`, one line each.
fn violations(pointer: &str, instance: &Value) -> Vec<String> {
    VALIDATORS.violations(pointer, instance)
}

// ---- the simulator, exercised route by route --------------------------------------------------

enum Auth {
    Key,
    None,
}

struct Canopy;

type Harness = contract::Harness<Canopy>;
type Call<'a> = contract::Call<'a, Canopy>;

impl Vendor for Canopy {
    type Auth = Auth;

    fn base_url(&self, sandbox: &SandboxHandle) -> String {
        sandbox.canopy_base_url()
    }

    fn authorize(
        &self,
        sandbox: &SandboxHandle,
        req: RequestBuilder,
        auth: &Auth,
    ) -> RequestBuilder {
        match auth {
            Auth::Key => req.header("authorization", sandbox.canopy().basic_auth()),
            Auth::None => req,
        }
    }
}

impl Harness {
    async fn start() -> Self {
        let dead = simulator::dead_webhook_uri("/webhooks/canopy");
        let mut cfg = SandboxConfig::for_tests();
        cfg.canopy = sim::CanopySimConfig::default().with_webhook(dead, "contract-secret");
        cfg.canopy.retry = RetrySchedule::none();
        // `Pull.meta_data` is `string|null` in the schema but an object in the examples; the
        // simulator serves the examples' object by default. The schema's string is checked here,
        // the object in `every_example_of_the_document_reads_into_our_types`.
        cfg.canopy.pull_meta_data_as_string = true;
        let sandbox = Sandbox::start(cfg).await.expect("sandbox starts");
        Harness {
            sandbox,
            rec: Recorder::new(),
            vendor: Canopy,
        }
    }

    fn canopy(&self) -> &sim::CanopySim {
        self.sandbox.canopy()
    }

    fn call(&self, endpoint: &'static str, method: Method, template: &'static str) -> Call<'_> {
        Call::new(self, endpoint, method, template, Auth::Key)
            .param("teamId", self.canopy().team_id())
    }

    /// A pull of `username` at State Farm, waited until it settles.
    async fn pull(&self, username: &str) -> String {
        let pull = self
            .canopy()
            .link(
                ConnectRequest::new("statefarm", username, sim::fixtures::GOOD_PASSWORD)
                    .with_meta(json!({"loan": "L-1"})),
                WAIT,
            )
            .await
            .unwrap();
        pull.pull_id
    }
}

impl Call<'_> {
    fn no_auth(self) -> Self {
        self.auth(Auth::None)
    }

    /// A widget route: the pull's JWT in place of the team's key.
    fn jwt(self, jwt: &str) -> Self {
        self.auth(Auth::None).header("pull-jwt", jwt)
    }
}

/// Routes of the simulator that the REST document does not describe, and why.
const OUTSIDE_THE_DOCUMENT: &[(&str, &str)] = &[
    (
        "canopy.files",
        "the signed download URL a document's 302 points to (a storage URL, not the API)",
    ),
    ("canopy.link.open", "hosted widget page (HTML), not the API"),
    (
        "canopy.link.login",
        "hosted widget page (HTML), not the API",
    ),
    (
        "canopy.link.action",
        "hosted widget page (HTML), not the API",
    ),
    (
        "canopy.link.status",
        "hosted widget page (HTML), not the API",
    ),
    (
        "canopy.link.reconnect",
        "hosted reconnect page (HTML), not the API",
    ),
];

const GET: Method = Method::GET;
const POST: Method = Method::POST;
const PATCH: Method = Method::PATCH;
const DELETE: Method = Method::DELETE;

const PULLS: &str = "/teams/{teamId}/pulls";
const PULL: &str = "/teams/{teamId}/pulls/{pullId}";
const DOCUMENT: &str = "/teams/{teamId}/pulls/{pullId}/documents/{documentId}";
const DOCUMENT_PDF: &str = "/teams/{teamId}/pulls/{pullId}/documents/{documentId}/pdf";
const MONITORINGS: &str = "/teams/{teamId}/monitorings";
const MONITORING: &str = "/teams/{teamId}/monitorings/{monitoringId}";
const REFRESH: &str = "/teams/{teamId}/monitorings/{monitoringId}/refresh";
const RECONNECT_TOKEN: &str = "/teams/{teamId}/monitorings/{monitoringId}/reconnectToken";
const EVENTS: &str = "/teams/{teamId}/monitorings/{monitoringId}/events";
const WEBHOOKS: &str = "/teams/{teamId}/webhooks";
const WEBHOOK: &str = "/teams/{teamId}/webhooks/{webhookId}";
const REDEEM: &str = "/widget/pull/reconnectToken";
const CONNECT: &str = "/widget/pull/{pullId}/connect";
const IDV_OPTIONS: &str = "/widget/pull/{pullId}/idvoptions";
const IDV: &str = "/widget/pull/{pullId}/idv";

const UNKNOWN_UUID: &str = "00000000-0000-4000-8000-000000000000";

async fn exercise_pulls_and_documents(h: &Harness) {
    let pull_id = h.pull("user_good").await;
    let pid = pull_id.as_str();

    h.call("canopy.pulls.list", GET, PULLS).send("list").await;
    h.call("canopy.pulls.list", GET, PULLS)
        .query("limit=1&offset=0")
        .send("list, paged")
        .await;
    h.call("canopy.pulls.list", GET, PULLS)
        .query("limit=0")
        .send("limit out of range")
        .await;
    h.call("canopy.pulls.list", GET, PULLS)
        .no_auth()
        .send("no key")
        .await;

    let (status, body) = h
        .call("canopy.pulls.get", GET, PULL)
        .param("pullId", pid)
        .send("a good pull")
        .await;
    assert_eq!(status, 200, "{body}");
    h.call("canopy.pulls.get", GET, PULL)
        .param("pullId", "not-a-uuid")
        .send("a malformed id")
        .await;
    h.call("canopy.pulls.get", GET, PULL)
        .param("pullId", UNKNOWN_UUID)
        .send("an unknown pull")
        .await;
    h.call("canopy.pulls.get", GET, PULL)
        .param("pullId", pid)
        .no_auth()
        .send("no key")
        .await;

    h.call("canopy.pulls.patch", PATCH, PULL)
        .param("pullId", pid)
        .json(json!({"is_archived": true}))
        .send("archive")
        .await;
    h.call("canopy.pulls.patch", PATCH, PULL)
        .param("pullId", pid)
        .json(json!({"is_archived": "yes"}))
        .send("a bad flag")
        .await;
    h.call("canopy.pulls.patch", PATCH, PULL)
        .param("pullId", UNKNOWN_UUID)
        .json(json!({"is_archived": false}))
        .send("an unknown pull")
        .await;
    h.call("canopy.pulls.patch", PATCH, PULL)
        .param("pullId", pid)
        .no_auth()
        .json(json!({"is_archived": false}))
        .send("no key")
        .await;

    let document_id = body["pull"]["documents"][0]["document_id"]
        .as_str()
        .expect("user_good has documents")
        .to_owned();
    for (endpoint, template) in [
        ("canopy.documents.get", DOCUMENT),
        ("canopy.documents.pdf", DOCUMENT_PDF),
    ] {
        let (status, _) = h
            .call(endpoint, GET, template)
            .param("pullId", pid)
            .param("documentId", &document_id)
            .send("a document")
            .await;
        assert!(status == 200 || status == 302, "{endpoint}: {status}");
        h.call(endpoint, GET, template)
            .param("pullId", pid)
            .param("documentId", "nope")
            .send("a malformed id")
            .await;
        h.call(endpoint, GET, template)
            .param("pullId", pid)
            .param("documentId", UNKNOWN_UUID)
            .send("an unknown document")
            .await;
        h.call(endpoint, GET, template)
            .param("pullId", pid)
            .param("documentId", &document_id)
            .no_auth()
            .send("no key")
            .await;
    }
}

async fn exercise_monitorings(h: &Harness) {
    let pull_id = h.pull("user_good_diffs").await;
    let pid = pull_id.as_str();

    let (status, body) = h
        .call("canopy.monitorings.create", POST, MONITORINGS)
        .json(json!({"pull_id": pid, "interval": "P1M"}))
        .send("create")
        .await;
    assert_eq!(status, 200, "{body}");
    let mid = body["monitoring"]["monitoring_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mid = mid.as_str();
    h.call("canopy.monitorings.create", POST, MONITORINGS)
        .json(json!({"pull_id": pid}))
        .send("no interval")
        .await;
    h.call("canopy.monitorings.create", POST, MONITORINGS)
        .json(json!({"pull_id": UNKNOWN_UUID, "interval": "P1M"}))
        .send("an unknown pull")
        .await;
    h.call("canopy.monitorings.create", POST, MONITORINGS)
        .no_auth()
        .json(json!({"pull_id": pid, "interval": "P1M"}))
        .send("no key")
        .await;

    h.call("canopy.monitorings.list", GET, MONITORINGS)
        .send("list")
        .await;
    h.call("canopy.monitorings.list", GET, MONITORINGS)
        .query(&format!("pull_id={pid}&status=ACTIVE"))
        .send("by pull")
        .await;
    h.call("canopy.monitorings.list", GET, MONITORINGS)
        .no_auth()
        .send("no key")
        .await;

    // A refresh of user_good_diffs yields monitoring events, for the events route below.
    let (status, body) = h
        .call("canopy.monitorings.refresh", POST, REFRESH)
        .param("monitoringId", mid)
        .send("refresh")
        .await;
    assert_eq!(status, 200, "{body}");
    let refreshed = body["pull_id"].as_str().unwrap().to_owned();
    h.canopy()
        .wait_for_status(&refreshed, "SUCCESS", WAIT)
        .await
        .unwrap();
    h.call("canopy.monitorings.refresh", POST, REFRESH)
        .param("monitoringId", UNKNOWN_UUID)
        .send("an unknown monitoring")
        .await;

    h.call("canopy.monitorings.get", GET, MONITORING)
        .param("monitoringId", mid)
        .send("get")
        .await;
    h.call("canopy.monitorings.get", GET, MONITORING)
        .param("monitoringId", mid)
        .query("with_pulls=true&limit=5")
        .send("with pulls")
        .await;
    h.call("canopy.monitorings.get", GET, MONITORING)
        .param("monitoringId", "nope")
        .send("a malformed id")
        .await;
    h.call("canopy.monitorings.get", GET, MONITORING)
        .param("monitoringId", UNKNOWN_UUID)
        .send("an unknown monitoring")
        .await;
    h.call("canopy.monitorings.get", GET, MONITORING)
        .param("monitoringId", mid)
        .no_auth()
        .send("no key")
        .await;

    let (status, body) = h
        .call("canopy.monitorings.events", GET, EVENTS)
        .param("monitoringId", mid)
        .send("events after a refresh with changes")
        .await;
    assert_eq!(status, 200, "{body}");

    // The reconnect token of a monitoring whose credentials stopped working.
    let o = h
        .canopy()
        .apply(
            Scenario::new(ScenarioTarget::pull(&refreshed), ScenarioAction::RequireMfa)
                .and_refresh(),
        )
        .unwrap();
    let waiting = o.refreshed_pull_ids[0].clone();
    // The refresh stops at the login; the reconnect token is minted for that pull.
    let stopped = h
        .canopy()
        .wait_for_pull(&waiting, WAIT, |p| p.status == "NOT_AUTHENTICATED")
        .await
        .unwrap();
    assert_eq!(stopped.pull_id, waiting);
    let (status, info) = h
        .call("canopy.monitorings.reconnect_token", GET, RECONNECT_TOKEN)
        .param("monitoringId", mid)
        .send("a reconnect token")
        .await;
    assert_eq!(status, 200, "{info}");
    let token = info["reconnect_token"].as_str().unwrap().to_owned();

    h.call("canopy.widget.reconnect_token", POST, REDEEM)
        .json(json!({"reconnect_token": "nope"}))
        .send("an unknown token")
        .await;
    h.call("canopy.widget.reconnect_token", POST, REDEEM)
        .no_auth()
        .json(json!({"reconnect_token": token}))
        .send("no key")
        .await;
    let (status, body) = h
        .call("canopy.widget.reconnect_token", POST, REDEEM)
        .json(json!({"reconnect_token": token}))
        .send("redeem")
        .await;
    assert_eq!(status, 200, "{body}");
    let jwt = body["pull_jwt"].as_str().unwrap().to_owned();
    let rp = body["pull_id"].as_str().unwrap().to_owned();
    let rp = rp.as_str();

    let login = json!({"insurerName": "statefarm", "insurerUsername": "user_good_diffs", "insurerPassword": "pass_good"});
    h.call("canopy.widget.connect", POST, CONNECT)
        .param("pullId", rp)
        .no_auth()
        .json(json!({"insurerName": "statefarm", "insurerUsername": "user_good_diffs"}))
        .send("no pull-jwt")
        .await;
    h.call("canopy.widget.connect", POST, CONNECT)
        .param("pullId", rp)
        .jwt(&jwt)
        .json(json!({"insurerName": "statefarm", "insurerUsername": "usr"}))
        .send("a username too short")
        .await;
    let (status, body) = h
        .call("canopy.widget.connect", POST, CONNECT)
        .param("pullId", rp)
        .jwt(&jwt)
        .json(login)
        .send("sign in again")
        .await;
    assert_eq!(status, 200, "{body}");
    h.canopy()
        .wait_for_status(rp, "IDENTITY_VERIFICATION_OPTIONS", WAIT)
        .await
        .unwrap();
    h.call("canopy.widget.idvoptions", POST, IDV_OPTIONS)
        .param("pullId", rp)
        .jwt(&jwt)
        .json(json!({"optionKey": "carrier-pigeon"}))
        .send("an unknown option")
        .await;
    h.call("canopy.widget.idvoptions", POST, IDV_OPTIONS)
        .param("pullId", rp)
        .json(json!({"optionKey": "sms"}))
        .no_auth()
        .send("no pull-jwt")
        .await;
    let (status, body) = h
        .call("canopy.widget.idvoptions", POST, IDV_OPTIONS)
        .param("pullId", rp)
        .jwt(&jwt)
        .json(json!({"optionKey": "sms"}))
        .send("choose sms")
        .await;
    assert_eq!(status, 200, "{body}");
    h.canopy()
        .wait_for_status(rp, "IDENTITY_VERIFICATION", WAIT)
        .await
        .unwrap();
    h.call("canopy.widget.idv", POST, IDV)
        .param("pullId", rp)
        .jwt(&jwt)
        .json(json!({}))
        .send("no code")
        .await;
    h.call("canopy.widget.idv", POST, IDV)
        .param("pullId", rp)
        .json(json!({"mfaValue": "424242"}))
        .no_auth()
        .send("no pull-jwt")
        .await;
    let (status, body) = h
        .call("canopy.widget.idv", POST, IDV)
        .param("pullId", rp)
        .jwt(&jwt)
        .json(json!({"mfaValue": "424242"}))
        .send("a good code")
        .await;
    assert_eq!(status, 200, "{body}");
    h.canopy()
        .wait_for_status(rp, "SUCCESS", WAIT)
        .await
        .unwrap();
    h.call("canopy.widget.reconnect_token", POST, REDEEM)
        .json(json!({"reconnect_token": token}))
        .send("a token already used")
        .await;

    h.call("canopy.monitorings.patch", PATCH, MONITORING)
        .param("monitoringId", mid)
        .json(json!({"interval": "P2M"}))
        .send("a new interval")
        .await;
    h.call("canopy.monitorings.patch", PATCH, MONITORING)
        .param("monitoringId", mid)
        .json(json!({"interval": 12}))
        .send("a bad interval")
        .await;
    h.call("canopy.monitorings.patch", PATCH, MONITORING)
        .param("monitoringId", UNKNOWN_UUID)
        .json(json!({"interval": "P2M"}))
        .send("an unknown monitoring")
        .await;
    h.call("canopy.monitorings.patch", PATCH, MONITORING)
        .param("monitoringId", mid)
        .no_auth()
        .json(json!({"interval": "P2M"}))
        .send("no key")
        .await;

    h.call("canopy.monitorings.delete", DELETE, MONITORING)
        .param("monitoringId", "nope")
        .send("a malformed id")
        .await;
    h.call("canopy.monitorings.delete", DELETE, MONITORING)
        .param("monitoringId", UNKNOWN_UUID)
        .send("an unknown monitoring")
        .await;
    h.call("canopy.monitorings.delete", DELETE, MONITORING)
        .param("monitoringId", mid)
        .no_auth()
        .send("no key")
        .await;
    h.call("canopy.monitorings.delete", DELETE, MONITORING)
        .param("monitoringId", mid)
        .send("stop")
        .await;
    h.call("canopy.monitorings.refresh", POST, REFRESH)
        .param("monitoringId", mid)
        .send("a stopped monitoring")
        .await;
}

async fn exercise_webhooks(h: &Harness) {
    h.call("canopy.webhooks.list", GET, WEBHOOKS)
        .send("list")
        .await;
    h.call("canopy.webhooks.list", GET, WEBHOOKS)
        .no_auth()
        .send("no key")
        .await;
    h.call("canopy.webhooks.list", GET, WEBHOOKS)
        .param("teamId", UNKNOWN_UUID)
        .send("another team")
        .await;
    let (status, body) = h
        .call("canopy.webhooks.create", POST, WEBHOOKS)
        .json(json!({"hookUrl": "https://example.com/hooks", "eventTypes": ["COMPLETE", "AUTH_STATUS"]}))
        .send("create")
        .await;
    assert_eq!(status, 200, "{body}");
    let wid = body["webhook_id"].as_str().unwrap().to_owned();
    let wid = wid.as_str();
    h.call("canopy.webhooks.create", POST, WEBHOOKS)
        .json(json!({"hookUrl": "not a url", "eventTypes": ["COMPLETE"]}))
        .send("a bad URL")
        .await;
    h.call("canopy.webhooks.create", POST, WEBHOOKS)
        .no_auth()
        .json(json!({"hookUrl": "https://example.com/hooks", "eventTypes": ["COMPLETE"]}))
        .send("no key")
        .await;
    h.call("canopy.webhooks.create", POST, WEBHOOKS)
        .param("teamId", UNKNOWN_UUID)
        .json(json!({"hookUrl": "https://example.com/hooks", "eventTypes": ["COMPLETE"]}))
        .send("another team")
        .await;
    h.call("canopy.webhooks.patch", PATCH, WEBHOOK)
        .param("webhookId", wid)
        .json(json!({"isActive": false}))
        .send("deactivate")
        .await;
    h.call("canopy.webhooks.patch", PATCH, WEBHOOK)
        .param("webhookId", wid)
        .json(json!({"isActive": "no"}))
        .send("a bad flag")
        .await;
    h.call("canopy.webhooks.patch", PATCH, WEBHOOK)
        .param("webhookId", wid)
        .no_auth()
        .json(json!({"isActive": true}))
        .send("no key")
        .await;
    h.call("canopy.webhooks.delete", DELETE, WEBHOOK)
        .param("webhookId", wid)
        .send("delete")
        .await;
    h.call("canopy.webhooks.delete", DELETE, WEBHOOK)
        .param("webhookId", wid)
        .send("deleted already")
        .await;
    h.call("canopy.webhooks.delete", DELETE, WEBHOOK)
        .param("webhookId", wid)
        .no_auth()
        .send("no key")
        .await;
}

async fn exercise_public_routes(h: &Harness) {
    h.call("canopy.tos", GET, "/tos").send("terms").await;
    let (_, tos) = h.call("canopy.tos", GET, "/tos").send("terms again").await;
    let terms_version = tos["terms_version"].clone();
    h.call("canopy.consent", POST, "/consent")
        .json(json!({"device_identifier": "device-1", "consent_language": "I agree", "terms_version": terms_version}))
        .send("consent")
        .await;
    h.call("canopy.consent", POST, "/consent")
        .json(json!({"consent_language": "I agree", "terms_version": terms_version}))
        .send("no device")
        .await;
    h.call("canopy.consent", POST, "/consent")
        .json(json!({"device_identifier": "device-1", "consent_language": "I agree", "terms_version": 999}))
        .send("unknown terms")
        .await;
    h.call("canopy.consent", POST, "/consent")
        .no_auth()
        .json(json!({"device_identifier": "device-1", "consent_language": "I agree", "terms_version": terms_version}))
        .send("no key")
        .await;
    h.call("canopy.carriers.list", GET, "/carriers")
        .send("all carriers")
        .await;
    h.call("canopy.carriers.list", GET, "/carriers")
        .query("products=auto")
        .send("auto carriers")
        .await;
    h.call("canopy.carriers.get", GET, "/carriers/{carrierId}")
        .param("carrierId", "statefarm")
        .send("State Farm")
        .await;
    h.call("canopy.carriers.get", GET, "/carriers/{carrierId}")
        .param("carrierId", "no-such-carrier")
        .send("an unknown carrier")
        .await;
    h.call("canopy.health", GET, "/health").send("health").await;
}

/// What is wrong with one exchange, judged by the document.
fn judge(x: &Exchange) -> Vec<String> {
    let doc = openapi();
    let method = x.method.as_str().to_ascii_lowercase();
    let op = &doc["paths"][x.template][&method];
    let head = format!(
        "{} {} -> {} ({}, {})",
        x.method, x.template, x.status, x.endpoint, x.what
    );
    if !op.is_object() {
        return vec![format!("{head}: the document has no such operation")];
    }
    let status = x.status.to_string();
    let response = &op["responses"][&status];
    if !response.is_object() {
        return vec![format!(
            "{head}: status not documented for this operation (documented: {:?}); body {}",
            op["responses"]
                .as_object()
                .unwrap()
                .keys()
                .collect::<Vec<_>>(),
            String::from_utf8_lossy(&x.body)
        )];
    }
    let content = &response["content"];
    if content.get("application/json").is_some() {
        if !x.content_type().starts_with("application/json") {
            return vec![format!("{head}: content-type {:?}", x.content_type())];
        }
        let Ok(body) = serde_json::from_slice::<Value>(&x.body) else {
            return vec![format!("{head}: the body is not JSON")];
        };
        let pointer = format!(
            "/paths/{}/{method}/responses/{status}/content/application~1json/schema",
            escape(x.template)
        );
        violations(&pointer, &body)
            .into_iter()
            .map(|v| format!("{head}: {v}"))
            .collect()
    } else if content.get("application/pdf").is_some() {
        let mut out = Vec::new();
        if !x.content_type().starts_with("application/pdf") {
            out.push(format!("{head}: content-type {:?}", x.content_type()));
        }
        if !x.body.starts_with(b"%PDF-") {
            out.push(format!("{head}: the body is not a PDF"));
        }
        out
    } else {
        vec![format!(
            "{head}: the document gives no content type we check"
        )]
    }
}

#[tokio::test]
async fn every_route_of_the_simulator_answers_as_the_document_says() {
    let h = Harness::start().await;
    exercise_pulls_and_documents(&h).await;
    exercise_monitorings(&h).await;
    exercise_webhooks(&h).await;
    exercise_public_routes(&h).await;

    let log = h.rec.take();
    let mut failures: Vec<String> = log.iter().flat_map(judge).collect();

    failures.extend(VALIDATORS.webhook_failures(
        &h.sandbox,
        "canopy",
        "/components/schemas/WebhookBody",
    ));
    assert!(
        failures.is_empty(),
        "{} disagreement(s) with Canopy's OpenAPI document:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // A route added to the simulator must be added here too.
    let served: BTreeSet<String> = h
        .sandbox
        .faults()
        .endpoints()
        .into_iter()
        .filter(|e| e.starts_with("canopy."))
        .collect();
    let outside: BTreeSet<String> = OUTSIDE_THE_DOCUMENT
        .iter()
        .map(|(e, _)| (*e).to_owned())
        .collect();
    let exercised: BTreeSet<String> = log.iter().map(|x| x.endpoint.to_owned()).collect();
    let expected: BTreeSet<String> = served.difference(&outside).cloned().collect();
    assert_eq!(
        exercised, expected,
        "exercised routes differ from the simulator's REST routes"
    );
    assert!(
        outside.is_subset(&served),
        "OUTSIDE_THE_DOCUMENT names a route the simulator no longer serves"
    );
    // Each exercised route must have been seen succeeding at least once.
    for endpoint in &exercised {
        assert!(
            log.iter()
                .any(|x| x.endpoint == endpoint && (200..400).contains(&x.status)),
            "{endpoint} was never exercised successfully"
        );
    }
    h.sandbox.shutdown().await;
}

// ---- the document's examples against our types ------------------------------------------------

/// Every example of a response, as `(path, method, status, example name, value)`.
fn response_examples() -> Vec<(String, String, String, String, Value)> {
    let mut out = Vec::new();
    for (path, item) in openapi()["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let Some(responses) = op.get("responses").and_then(Value::as_object) else {
                continue;
            };
            for (status, response) in responses {
                let Some(media) = response["content"]["application/json"].as_object() else {
                    continue;
                };
                if let Some(examples) = media.get("examples").and_then(Value::as_object) {
                    for (name, ex) in examples {
                        out.push((
                            path.clone(),
                            method.clone(),
                            status.clone(),
                            name.clone(),
                            ex["value"].clone(),
                        ));
                    }
                }
                if let Some(ex) = media.get("example") {
                    out.push((
                        path.clone(),
                        method.clone(),
                        status.clone(),
                        "example".into(),
                        ex.clone(),
                    ));
                }
            }
        }
    }
    out
}

/// Checks that our `Pull` keeps every element of Canopy's example: a list element our lenient
/// reader could not read would be dropped silently, so counts are compared level by level.
fn check_pull(ex: &Value, ours: &model::Pull, what: &str) {
    assert_eq!(ours.pull_id, ex["pull_id"].as_str().unwrap_or(""), "{what}");
    assert_eq!(ours.status.as_deref(), ex["status"].as_str(), "{what}");
    assert_eq!(
        ours.policies.len(),
        len(&ex["policies"]),
        "{what}: policies"
    );
    assert_eq!(
        ours.documents.len(),
        len(&ex["documents"]),
        "{what}: documents"
    );
    assert_eq!(ours.drivers.len(), len(&ex["drivers"]), "{what}: drivers");
    assert_eq!(
        ours.addresses.len(),
        len(&ex["addresses"]),
        "{what}: addresses"
    );
    for (p, (ours, ex)) in ours
        .policies
        .iter()
        .zip(ex["policies"].as_array().into_iter().flatten())
        .enumerate()
    {
        let what = format!("{what}: policy {p}");
        assert_eq!(
            ours.policy_id,
            ex["policy_id"].as_str().unwrap_or(""),
            "{what}"
        );
        assert_eq!(
            ours.vehicles.len(),
            len(&ex["vehicles"]),
            "{what}: vehicles"
        );
        assert_eq!(
            ours.dwellings.len(),
            len(&ex["dwellings"]),
            "{what}: dwellings"
        );
        assert_eq!(
            ours.named_insureds.len(),
            len(&ex["named_insureds"]),
            "{what}: named insureds"
        );
        assert_eq!(
            ours.additional_interests.len(),
            len(&ex["additional_interests"]),
            "{what}: additional interests"
        );
        for (v, (ours, ex)) in ours
            .vehicles
            .iter()
            .zip(ex["vehicles"].as_array().into_iter().flatten())
            .enumerate()
        {
            assert_eq!(
                ours.coverages.len(),
                len(&ex["coverages"]),
                "{what}: vehicle {v} coverages"
            );
        }
        for (d, (ours, ex)) in ours
            .dwellings
            .iter()
            .zip(ex["dwellings"].as_array().into_iter().flatten())
            .enumerate()
        {
            assert_eq!(
                ours.coverages.len(),
                len(&ex["coverages"]),
                "{what}: dwelling {d} coverages"
            );
        }
    }
}

#[test]
fn every_example_of_the_document_reads_into_our_types() {
    let mut read_count = BTreeMap::<&str, usize>::new();
    for (path, method, status, name, ex) in response_examples() {
        let what = format!("{method} {path} {status} {name:?}");
        if !status.starts_with('2') && !status.starts_with('3') {
            // Every error example is Canopy's envelope; the client reads the code from it.
            let body: model::ErrorBody = read(&ex, &what);
            if let Some(code) = ex.get("error").and_then(Value::as_str) {
                assert_eq!(body.error.as_deref(), Some(code), "{what}");
            }
            *read_count.entry("ErrorBody").or_default() += 1;
            continue;
        }
        match (path.as_str(), method.as_str()) {
            (PULL, "get") => {
                // The client keeps the raw pull and reads it as `Pull` (see `CanopyClient::pull`).
                let resp: model::PullResponse = read(&ex, &what);
                let raw = resp.pull.expect("the example has a pull");
                // The simulator's default `meta_data` (an object) is the examples' form.
                assert!(raw["meta_data"].is_object(), "{what}: meta_data");
                let pull: model::Pull = read(&raw, &what);
                check_pull(&ex["pull"], &pull, &what);
                *read_count.entry("PullResponse").or_default() += 1;
            }
            (PULLS, "get") => {
                for (i, p) in ex["pulls"].as_array().into_iter().flatten().enumerate() {
                    let ours: model::Pull = read(p, &what);
                    check_pull(p, &ours, &format!("{what} pull {i}"));
                }
                *read_count.entry("Pull").or_default() += 1;
            }
            (MONITORING | MONITORINGS, "post" | "delete" | "patch" | "get") => {
                let resp: model::MonitoringResponse = read(&ex, &what);
                assert_eq!(
                    resp.monitoring.is_some(),
                    ex["monitoring"].is_object(),
                    "{what}"
                );
                *read_count.entry("MonitoringResponse").or_default() += 1;
            }
            (REFRESH, "post") => {
                let resp: model::RefreshResponse = read(&ex, &what);
                assert_eq!(resp.pull_id.as_deref(), ex["pull_id"].as_str(), "{what}");
                *read_count.entry("RefreshResponse").or_default() += 1;
            }
            (RECONNECT_TOKEN, "get") => {
                let resp: model::ReconnectTokenResponse = read(&ex, &what);
                assert_eq!(resp.pull_id.as_deref(), ex["pull_id"].as_str(), "{what}");
                *read_count.entry("ReconnectTokenResponse").or_default() += 1;
            }
            (REDEEM, "post") => {
                let resp: model::PullJwtResponse = read(&ex, &what);
                assert_eq!(resp.pull_id.as_deref(), ex["pull_id"].as_str(), "{what}");
                *read_count.entry("PullJwtResponse").or_default() += 1;
            }
            _ => {}
        }
    }
    // The document's only full pulls are the two `GET /pulls/{pullId}` examples (personal and
    // commercial): they must have been read.
    assert_eq!(read_count.get("PullResponse"), Some(&2), "{read_count:?}");
    assert!(read_count.get("ErrorBody").is_some_and(|n| *n > 10));
}

#[test]
fn schema_examples_read_into_our_types() {
    let schemas = &openapi()["components"]["schemas"];
    // Property examples of the schemas we model, assembled into one object each.
    let assembled = |name: &str| -> Value {
        let mut obj = serde_json::Map::new();
        for (prop, schema) in schemas[name]["properties"].as_object().unwrap() {
            if let Some(ex) = schema.get("example") {
                obj.insert(prop.clone(), ex.clone());
            } else if let Some(ex) = schema.get("examples").and_then(|e| e.get(0)) {
                obj.insert(prop.clone(), ex.clone());
            }
        }
        Value::Object(obj)
    };

    let ex = assembled("DwellingCoverage");
    assert!(
        !ex.as_object().unwrap().is_empty(),
        "DwellingCoverage has examples"
    );
    let ours: model::DwellingCoverage = read(&ex, "DwellingCoverage examples");
    // Canopy writes these percentages as decimal strings ("2.500") in its schema examples.
    for (field, value) in [
        (
            "per_incident_limit_percent",
            ours.per_incident_limit_percent,
        ),
        ("deductible_percent", ours.deductible_percent),
    ] {
        let documented = ex[field]
            .as_str()
            .map(|s| s.parse::<f64>().expect("a decimal"))
            .or_else(|| ex[field].as_f64());
        assert_eq!(value, documented, "{field} of {ex}");
    }

    let ex = assembled("Monitoring");
    assert!(
        !ex.as_object().unwrap().is_empty(),
        "Monitoring has examples"
    );
    let ours: model::Monitoring = read(&ex, "Monitoring examples");
    if let Some(v) = ex.get("monitoring_id").and_then(Value::as_str) {
        assert_eq!(ours.monitoring_id, v);
    }
    if let Some(v) = ex.get("interval").and_then(Value::as_str) {
        assert_eq!(ours.interval.as_deref(), Some(v));
    }
    if let Some(v) = ex.get("status").and_then(Value::as_str) {
        assert_eq!(ours.status.as_deref(), Some(v));
    }
}

/// The nullable reading of [`resolvable_document`] admits `null` where the document's examples
/// show it (the personal example's driver has `"education": null`), and nothing else.
#[test]
fn a_nullable_enum_admits_null_and_only_its_values() {
    let driver = "/components/schemas/VehicleDriver";
    assert_eq!(
        violations(driver, &json!({"education": null})),
        Vec::<String>::new()
    );
    assert_eq!(
        violations(driver, &json!({"education": "MASTERS"})),
        Vec::<String>::new()
    );
    assert_eq!(
        violations(driver, &json!({"education": "ROCKET_SCIENCE"})).len(),
        1
    );
    let vehicle = "/components/schemas/Vehicle";
    assert_eq!(
        violations(vehicle, &json!({"lien_holder_address": null})),
        Vec::<String>::new()
    );
    assert_eq!(
        violations(vehicle, &json!({"lien_holder_address": "a string"})).len(),
        1
    );
}
