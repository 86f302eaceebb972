//! Fault injection (endpoint and webhook), the delivery log, retries, and the shared control
//! API (`/_sandbox/faults`, `/_sandbox/deliveries`, `/_sandbox/clock`), exercised through the
//! Axle simulator.

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode as AxumStatus;
use axum::routing::post;
use coverwatch_sandbox::axle::{AxleSimConfig, SignIn, StartIgnition};
use coverwatch_sandbox::{
    FaultEffect, FaultRule, FaultTarget, RetrySchedule, Sandbox, SandboxConfig, SandboxHandle,
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::watch;

const WAIT: Duration = Duration::from_secs(5);

async fn sandbox() -> SandboxHandle {
    let cfg = SandboxConfig {
        axle: AxleSimConfig {
            retry: RetrySchedule::axle().with_time_scale(0.001),
            webhook_headers: vec![("x-webhook-secret".into(), "shh".into())],
            ..AxleSimConfig::default()
        },
        ..SandboxConfig::for_tests()
    };
    Sandbox::start(cfg).await.expect("sandbox starts")
}

/// Raw body and the `x-webhook-secret` header of one delivery.
type Hit = (String, Option<String>);

/// Records raw bodies; answers with a settable status.
#[derive(Clone)]
struct Receiver {
    url: String,
    bodies: Arc<Mutex<Vec<Hit>>>,
    status: Arc<AtomicU16>,
    changed: watch::Sender<usize>,
}

impl Receiver {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let r = Receiver {
            url,
            bodies: Arc::default(),
            status: Arc::new(AtomicU16::new(200)),
            changed: watch::channel(0).0,
        };
        let app = Router::new()
            .route(
                "/hook",
                post(
                    |State(r): State<Receiver>, headers: axum::http::HeaderMap, body: Bytes| async move {
                        let secret = headers
                            .get("x-webhook-secret")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned);
                        let n = {
                            let mut b = r.bodies.lock().unwrap();
                            b.push((String::from_utf8_lossy(&body).into_owned(), secret));
                            b.len()
                        };
                        r.changed.send_replace(n);
                        AxumStatus::from_u16(r.status.load(Ordering::SeqCst)).unwrap()
                    },
                ),
            )
            .with_state(r.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        r
    }

    fn bodies(&self) -> Vec<String> {
        self.bodies
            .lock()
            .unwrap()
            .iter()
            .map(|(b, _)| b.clone())
            .collect()
    }

    fn types(&self) -> Vec<String> {
        self.bodies()
            .iter()
            .map(|b| {
                serde_json::from_str::<Value>(b)
                    .ok()
                    .and_then(|v| v["type"].as_str().map(str::to_owned))
                    .unwrap_or_else(|| "<malformed>".into())
            })
            .collect()
    }

    async fn wait_count(&self, n: usize) -> Vec<String> {
        let mut rx = self.changed.subscribe();
        tokio::time::timeout(WAIT, async {
            loop {
                if self.bodies().len() >= n {
                    return self.bodies();
                }
                rx.changed().await.unwrap();
            }
        })
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {n}; got {:?}", self.types()))
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn start_ignition(h: &SandboxHandle, client: &reqwest::Client) -> reqwest::Response {
    client
        .post(format!("{}/ignition", h.axle_base_url()))
        .header("x-client-id", "cli_sandbox")
        .header("x-client-secret", "axle-sandbox-secret")
        .json(&json!({ "user": { "id": "u" } }))
        .send()
        .await
        .unwrap()
}

// ---- endpoint faults -------------------------------------------------------------------------------

#[tokio::test]
async fn endpoint_status_faults_apply_to_the_next_n_calls() {
    let h = sandbox().await;
    let c = http();
    h.faults().inject_times(
        FaultTarget::endpoint("axle.ignition.start"),
        FaultEffect::status(500),
        2,
    );
    for _ in 0..2 {
        let resp = start_ignition(&h, &c).await;
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(
            resp.headers().contains_key("x-axle-request-id"),
            "faults keep Axle's headers"
        );
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["success"], false);
    }
    assert_eq!(start_ignition(&h, &c).await.status(), StatusCode::OK);
    assert!(h.faults().list().is_empty(), "exhausted rules are removed");

    // 429 with Retry-After, 401, on a prefix target.
    h.faults().inject_times(
        FaultTarget::endpoint("axle.*"),
        FaultEffect::rate_limited(7),
        1,
    );
    let resp = start_ignition(&h, &c).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.headers()["retry-after"], "7");
    h.faults().inject_times(
        FaultTarget::endpoint("axle.ignition.start"),
        FaultEffect::status(401),
        1,
    );
    assert_eq!(
        start_ignition(&h, &c).await.status(),
        StatusCode::UNAUTHORIZED
    );

    // A fault on another endpoint does not touch this one.
    let id = h.faults().inject(
        FaultTarget::endpoint("axle.token.exchange"),
        FaultEffect::status(503),
    );
    assert_eq!(start_ignition(&h, &c).await.status(), StatusCode::OK);
    assert!(h.faults().remove(id));
}

#[tokio::test]
async fn status_faults_on_one_endpoint_apply_in_sequence_429_then_500_then_success() {
    let h = sandbox().await;
    let c = http();
    let endpoint = || FaultTarget::endpoint("axle.ignition.start");
    h.faults()
        .inject_times(endpoint(), FaultEffect::rate_limited(2), 1);
    h.faults()
        .inject_times(endpoint(), FaultEffect::status(500), 1);

    let first = start_ignition(&h, &c).await;
    assert_eq!(first.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(first.headers()["retry-after"], "2");
    assert_eq!(h.faults().list().len(), 1, "only the 429 was spent");

    let second = start_ignition(&h, &c).await;
    assert_eq!(second.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(second.headers().get("retry-after").is_none());

    let third = start_ignition(&h, &c).await;
    assert_eq!(third.status(), StatusCode::OK);
    let body: Value = third.json().await.unwrap();
    assert_eq!(body["success"], true);
    assert!(h.faults().list().is_empty());
}

#[tokio::test]
async fn endpoint_latency_hang_and_malformed_body() {
    let h = sandbox().await;
    let c = http();

    h.faults().inject_times(
        FaultTarget::endpoint("axle.ignition.start"),
        FaultEffect::latency(Duration::from_millis(300)),
        1,
    );
    let t = Instant::now();
    assert_eq!(start_ignition(&h, &c).await.status(), StatusCode::OK);
    assert!(t.elapsed() >= Duration::from_millis(300));

    h.faults().inject_times(
        FaultTarget::endpoint("axle.ignition.start"),
        FaultEffect::Hang { ms: None },
        1,
    );
    let short = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let err = short
        .post(format!("{}/ignition", h.axle_base_url()))
        .header("x-client-id", "cli_sandbox")
        .header("x-client-secret", "axle-sandbox-secret")
        .json(&json!({ "user": { "id": "u" } }))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");

    // A bounded hang ends with 504.
    h.faults().inject_times(
        FaultTarget::endpoint("axle.ignition.start"),
        FaultEffect::Hang { ms: Some(50) },
        1,
    );
    assert_eq!(
        start_ignition(&h, &c).await.status(),
        StatusCode::GATEWAY_TIMEOUT
    );

    h.faults().inject_times(
        FaultTarget::endpoint("axle.ignition.start"),
        FaultEffect::Malformed,
        1,
    );
    let resp = start_ignition(&h, &c).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let text = resp.text().await.unwrap();
    assert!(text.starts_with("{\"data\":{"), "{text}");
    assert!(serde_json::from_str::<Value>(&text).is_err());

    // The hosted page is guarded too.
    h.faults().inject_times(
        FaultTarget::endpoint("axle.ignition_ui"),
        FaultEffect::status(502),
        1,
    );
    let resp = c
        .get(format!("{}/ignition-ui/?token=x", h.axle_base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);

    // Shutdown is not blocked by a request hanging forever.
    h.faults().inject_times(
        FaultTarget::endpoint("axle.ignition.start"),
        FaultEffect::Hang { ms: None },
        1,
    );
    let base = h.axle_base_url();
    let pending = tokio::spawn(async move {
        http()
            .post(format!("{base}/ignition"))
            .json(&json!({}))
            .send()
            .await
            .map(|r| r.status())
    });
    // The rule is consumed when the request reaches the server: poll for that, with a deadline.
    let deadline = Instant::now() + WAIT;
    while !h.faults().list().is_empty() {
        assert!(
            Instant::now() < deadline,
            "request never reached the server"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::timeout(Duration::from_secs(10), h.shutdown())
        .await
        .expect("shutdown completes");
    let _ = pending.await;
}

#[tokio::test]
async fn faults_control_api() {
    let h = sandbox().await;
    let c = http();
    let base = h.base_url().to_owned();

    let endpoints: Vec<String> = c
        .get(format!("{base}/_sandbox/faults/endpoints"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for name in [
        "axle.ignition.start",
        "axle.token.exchange",
        "axle.token.descope",
        "axle.accounts.get",
        "axle.policies.get",
        "axle.sandbox.account_event",
        "axle.sandbox.policy_event",
        "axle.ignition_ui",
    ] {
        assert!(
            endpoints.contains(&name.to_owned()),
            "{name} in {endpoints:?}"
        );
    }

    let resp = c
        .post(format!("{base}/_sandbox/faults"))
        .json(&json!({
            "target": { "kind": "endpoint", "name": "axle.ignition.start" },
            "effect": { "kind": "status", "status": 429, "retry_after_secs": 2 },
            "times": 1
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let id = resp.json::<Value>().await.unwrap()["id"].as_u64().unwrap();
    let list: Vec<FaultRule> = c
        .get(format!("{base}/_sandbox/faults"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].id, id);
    let resp = start_ignition(&h, &c).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.headers()["retry-after"], "2");

    let resp = c
        .post(format!("{base}/_sandbox/faults"))
        .json(&json!({ "target": { "kind": "webhook", "vendor": "axle" }, "effect": { "kind": "drop" } }))
        .send()
        .await
        .unwrap();
    let id = resp.json::<Value>().await.unwrap()["id"].as_u64().unwrap();
    assert_eq!(
        c.delete(format!("{base}/_sandbox/faults/{id}"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        c.delete(format!("{base}/_sandbox/faults/{id}"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );
    c.post(format!("{base}/_sandbox/faults"))
        .json(&json!({ "target": { "kind": "endpoint", "name": "x" }, "effect": { "kind": "malformed" } }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        c.delete(format!("{base}/_sandbox/faults"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NO_CONTENT
    );
    assert!(h.faults().list().is_empty());
    // A bad rule is refused.
    let resp = c
        .post(format!("{base}/_sandbox/faults"))
        .json(&json!({ "target": { "kind": "nope" }, "effect": { "kind": "drop" } }))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_client_error());
}

// ---- webhook faults --------------------------------------------------------------------------------

/// Starts an Ignition with a webhook and walks it to completion with the Rust API; the receiver
/// gets created, opened, completed.
fn link(h: &SandboxHandle, url: &str) {
    let sim = h.axle();
    let token = sim
        .start_ignition(StartIgnition::for_user("u").webhook(url), None)
        .unwrap()
        .ignition_token;
    sim.open_ignition(&token).unwrap();
    let out = sim
        .sign_in(&token, "state-farm", "username", "password")
        .unwrap();
    assert!(matches!(out, SignIn::Complete { .. }));
}

#[tokio::test]
async fn webhook_duplicate_out_of_order_malformed_drop_and_custom_headers() {
    let h = sandbox().await;
    let r = Receiver::start().await;

    h.faults().inject_times(
        FaultTarget::webhook_event("axle", "ignition.created"),
        FaultEffect::OutOfOrder { max_hold_ms: 5_000 },
        1,
    );
    h.faults().inject_times(
        FaultTarget::webhook_event("axle", "ignition.opened"),
        FaultEffect::Duplicate { copies: 2 },
        1,
    );
    h.faults().inject_times(
        FaultTarget::webhook_event("axle", "ignition.completed"),
        FaultEffect::Malformed,
        1,
    );
    link(&h, &r.url);
    r.wait_count(5).await;
    // created was held until the next delivery (opened) went out.
    assert_eq!(
        r.types(),
        [
            "ignition.opened",
            "ignition.opened",
            "ignition.opened",
            "ignition.created",
            "<malformed>"
        ]
    );
    let bodies = r.bodies();
    assert_eq!(
        bodies[0], bodies[1],
        "duplicates are byte-identical (same event id)"
    );
    assert!(
        r.bodies
            .lock()
            .unwrap()
            .iter()
            .all(|(_, s)| s.as_deref() == Some("shh")),
        "custom webhook headers"
    );

    let log = h
        .deliveries()
        .filtered(Some("axle"), Some("ignition.opened"));
    assert_eq!(log.len(), 3);
    assert_eq!(log.iter().map(|a| a.copy).collect::<Vec<_>>(), [0, 1, 2]);
    assert!(log[1].faults.contains(&"duplicate".to_owned()));
    let created = h.deliveries().filtered(None, Some("ignition.created"));
    assert!(created[0].faults.contains(&"out_of_order".to_owned()));
    assert_eq!(created[0].header("x-webhook-secret"), Some("shh"));

    // Drop: logged, never sent (a later delivery proves the queue moved on).
    h.deliveries().clear();
    let before = r.bodies().len();
    h.faults().inject_times(
        FaultTarget::webhook_event("axle", "ignition.created"),
        FaultEffect::Drop,
        1,
    );
    link(&h, &r.url);
    r.wait_count(before + 2).await;
    assert_eq!(
        r.types()[before..],
        ["ignition.opened", "ignition.completed"]
    );
    let dropped = h.deliveries().filtered(None, Some("ignition.created"));
    assert_eq!(dropped.len(), 1);
    assert_eq!(dropped[0].status, None);
    assert!(dropped[0].faults.contains(&"drop".to_owned()));
}

#[tokio::test]
async fn out_of_order_is_released_after_max_hold_when_nothing_follows() {
    let h = sandbox().await;
    let r = Receiver::start().await;
    h.faults().inject_times(
        FaultTarget::webhooks("axle"),
        FaultEffect::OutOfOrder { max_hold_ms: 50 },
        1,
    );
    h.axle()
        .start_ignition(StartIgnition::for_user("u").webhook(r.url.as_str()), None)
        .unwrap();
    r.wait_count(1).await;
    assert_eq!(r.types(), ["ignition.created"]);
}

#[tokio::test]
async fn webhook_latency_delays_one_delivery() {
    let h = sandbox().await;
    let r = Receiver::start().await;
    h.faults().inject_times(
        FaultTarget::webhook_event("axle", "ignition.created"),
        FaultEffect::Latency { ms: 200 },
        1,
    );
    let sim = h.axle();
    let t = Instant::now();
    let token = sim
        .start_ignition(StartIgnition::for_user("u").webhook(r.url.as_str()), None)
        .unwrap()
        .ignition_token;
    sim.open_ignition(&token).unwrap();
    r.wait_count(2).await;
    assert!(t.elapsed() >= Duration::from_millis(200));
    assert_eq!(
        r.types(),
        ["ignition.opened", "ignition.created"],
        "the delayed one is overtaken"
    );
}

#[tokio::test]
async fn webhook_status_fault_and_receiver_errors_are_retried_per_schedule() {
    let h = sandbox().await;
    let r = Receiver::start().await;

    // Two injected failures, then the third attempt reaches the receiver.
    h.faults().inject_times(
        FaultTarget::webhook_event("axle", "ignition.created"),
        FaultEffect::status(500),
        2,
    );
    h.axle()
        .start_ignition(StartIgnition::for_user("u").webhook(r.url.as_str()), None)
        .unwrap();
    let attempts = h
        .deliveries()
        .wait_for_n(3, WAIT, |a| a.event_type == "ignition.created")
        .await
        .unwrap();
    assert_eq!(
        attempts.iter().map(|a| a.attempt).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert_eq!(
        attempts.iter().map(|a| a.status).collect::<Vec<_>>(),
        [Some(500), Some(500), Some(200)]
    );
    assert!(attempts[0].faults.contains(&"status".to_owned()));
    assert_eq!(
        r.bodies().len(),
        1,
        "injected failures never reach the receiver"
    );
    assert_eq!(attempts[0].delivery_id, attempts[2].delivery_id);
    assert_eq!(attempts[0].body, attempts[2].body);

    // A receiver that keeps failing gets 1 + max_retries attempts (Axle default: 3 retries).
    h.deliveries().clear();
    r.status.store(503, Ordering::SeqCst);
    h.axle()
        .start_ignition(StartIgnition::for_user("u2").webhook(r.url.as_str()), None)
        .unwrap();
    let attempts = h
        .deliveries()
        .wait_for_n(4, WAIT, |a| a.event_type == "ignition.created")
        .await
        .unwrap();
    assert!(attempts.iter().all(|a| a.status == Some(503)));
    assert!(attempts.windows(2).all(|w| w[1].at >= w[0].at));
    assert_eq!(r.wait_count(5).await.len(), 5);

    // An unreachable receiver: attempts carry the error and no status.
    h.deliveries().clear();
    h.axle()
        .start_ignition(
            StartIgnition::for_user("u3").webhook("http://127.0.0.1:9/unreachable"),
            None,
        )
        .unwrap();
    let first = h
        .deliveries()
        .wait_for(WAIT, |a| a.event_type == "ignition.created")
        .await
        .unwrap();
    assert_eq!(first.status, None);
    assert!(first.error.is_some());
}

#[tokio::test]
async fn deliveries_and_clock_control_api() {
    let h = sandbox().await;
    let c = http();
    let base = h.base_url().to_owned();
    let r = Receiver::start().await;
    h.axle()
        .start_ignition(StartIgnition::for_user("u").webhook(r.url.as_str()), None)
        .unwrap();
    h.deliveries()
        .wait_for(WAIT, |a| a.delivered())
        .await
        .unwrap();

    let list: Vec<Value> = c
        .get(format!(
            "{base}/_sandbox/deliveries?vendor=axle&event_type=ignition.created"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["status"], 200);
    assert_eq!(list[0]["url"], json!(r.url));
    assert!(
        list[0]["body"]
            .as_str()
            .unwrap()
            .contains("ignition.created")
    );
    let none: Vec<Value> = c
        .get(format!("{base}/_sandbox/deliveries?vendor=canopy"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(none.is_empty());
    assert_eq!(
        c.delete(format!("{base}/_sandbox/deliveries"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NO_CONTENT
    );
    assert!(h.deliveries().entries().is_empty());

    // The clock moves authCode expiry.
    let sim = h.axle();
    let token = sim
        .start_ignition(StartIgnition::for_user("u"), None)
        .unwrap()
        .ignition_token;
    let SignIn::Complete { auth_code, .. } = sim
        .sign_in(&token, "geico", "username", "password")
        .unwrap()
    else {
        panic!()
    };
    let clock: Value = c
        .post(format!("{base}/_sandbox/clock/advance"))
        .json(&json!({ "seconds": 601 }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(clock["offset_seconds"], 601);
    assert!(sim.exchange(&auth_code).is_err());
    let clock: Value = c
        .post(format!("{base}/_sandbox/clock/reset"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(clock["offset_seconds"], 0);
    let health: Value = c
        .get(format!("{base}/_sandbox/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["ok"], true);
}
