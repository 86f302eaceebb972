//! Shared by the `canopy_*` integration tests: a sandbox with one registered webhook pointing
//! at a tiny receiver on port 0, a reqwest client, and an independent signature check.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use coverwatch_sandbox::canopy::CanopySimConfig;
use coverwatch_sandbox::{RetrySchedule, Sandbox, SandboxConfig, SandboxHandle};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use tokio::sync::watch;

pub const SECRET: &str = "test-signing-secret-ÄÖ/+=";
pub const WAIT: Duration = Duration::from_secs(10);

/// One request the receiver got.
#[derive(Clone, Debug)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("webhook body is JSON")
    }

    /// `Null` for a body that is not JSON (a `malformed` fault).
    pub fn try_json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    pub fn event_type(&self) -> String {
        serde_json::from_slice::<Value>(&self.body)
            .ok()
            .and_then(|v| v["event_type"].as_str().map(str::to_owned))
            .unwrap_or_default()
    }

    pub fn signature(&self) -> Option<String> {
        self.headers
            .get("canopy-signature")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }
}

/// A webhook receiver answering `status` (200 unless changed).
#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    got: Arc<Mutex<Vec<Received>>>,
    version: watch::Sender<u64>,
    status: Arc<AtomicU16>,
}

impl Receiver {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hooks/canopy", listener.local_addr().unwrap());
        let rx = Receiver {
            url,
            got: Arc::default(),
            version: watch::channel(0).0,
            status: Arc::new(AtomicU16::new(200)),
        };
        let app = Router::new()
            .route("/hooks/canopy", post(receive))
            .with_state(rx.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        rx
    }

    pub fn respond_with(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    /// Forgets what was received so far.
    pub fn clear(&self) {
        self.got.lock().unwrap().clear();
    }

    pub fn all(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    pub fn of_type(&self, event_type: &str) -> Vec<Received> {
        self.all()
            .into_iter()
            .filter(|r| r.event_type() == event_type)
            .collect()
    }

    /// Waits until `check` over everything received so far returns `Some`.
    pub async fn wait_until<T>(
        &self,
        what: &str,
        mut check: impl FnMut(&[Received]) -> Option<T>,
    ) -> T {
        let mut rx = self.version.subscribe();
        let fut = async {
            loop {
                rx.borrow_and_update();
                if let Some(t) = check(&self.all()) {
                    return t;
                }
                rx.changed().await.unwrap();
            }
        };
        match tokio::time::timeout(WAIT, fut).await {
            Ok(t) => t,
            Err(_) => panic!(
                "timed out waiting for {what}; received: {:?}",
                self.all()
                    .iter()
                    .map(|r| r.event_type())
                    .collect::<Vec<_>>()
            ),
        }
    }

    /// The first webhook of this type (for this pull, if given).
    pub async fn wait_event(&self, event_type: &str, pull_id: Option<&str>) -> Received {
        self.wait_until(event_type, |all| {
            all.iter()
                .find(|r| {
                    let v = r.try_json();
                    v["event_type"] == event_type && pull_id.is_none_or(|p| v["pull_id"] == p)
                })
                .cloned()
        })
        .await
    }

    pub fn events_for(&self, pull_id: &str) -> Vec<Value> {
        self.all()
            .iter()
            .map(Received::try_json)
            .filter(|v| v["pull_id"] == pull_id)
            .collect()
    }
}

async fn receive(State(rx): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    rx.got.lock().unwrap().push(Received { headers, body });
    rx.version.send_modify(|v| *v += 1);
    StatusCode::from_u16(rx.status.load(Ordering::SeqCst)).unwrap()
}

/// Recomputes `canopy-signature` with its own HMAC (not the sandbox's code).
pub fn verify_signature(secret: &str, header: &str, body: &[u8]) -> bool {
    let mut t = None;
    let mut s = Vec::new();
    for part in header.split(',') {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        match k {
            "t" => t = Some(v.to_owned()),
            "s" => s.push(v.to_owned()),
            _ => {}
        }
    }
    let Some(t) = t else { return false };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    let expected = hex::encode(mac.finalize().into_bytes());
    s.contains(&expected)
}

pub struct Env {
    pub sandbox: SandboxHandle,
    pub hooks: Receiver,
    pub http: reqwest::Client,
}

impl Env {
    pub async fn start() -> Self {
        Self::start_with(|c| c).await
    }

    pub async fn start_with(tweak: impl FnOnce(CanopySimConfig) -> CanopySimConfig) -> Self {
        let hooks = Receiver::start().await;
        let mut cfg = SandboxConfig::for_tests();
        cfg.canopy = tweak(
            CanopySimConfig {
                retry: RetrySchedule::canopy().with_time_scale(0.0001),
                scheduler_tick: Duration::from_millis(20),
                ..CanopySimConfig::default()
            }
            .with_webhook(&hooks.url, SECRET),
        );
        let sandbox = Sandbox::start(cfg).await.expect("sandbox starts");
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Env {
            sandbox,
            hooks,
            http,
        }
    }

    pub fn api(&self, path: &str) -> String {
        format!("{}{path}", self.sandbox.canopy_base_url())
    }

    pub fn team(&self, path: &str) -> String {
        self.api(&format!("/teams/{}{path}", self.sandbox.canopy().team_id()))
    }

    pub fn control(&self, path: &str) -> String {
        format!("{}/_sandbox/canopy{path}", self.sandbox.base_url())
    }

    pub fn auth(&self) -> String {
        self.sandbox.canopy().basic_auth()
    }

    pub async fn get(&self, url: &str) -> (u16, Value) {
        let r = self
            .http
            .get(url)
            .header("authorization", self.auth())
            .send()
            .await
            .unwrap();
        status_json(r).await
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, url)
            .header("authorization", self.auth());
        if let Some(b) = body {
            req = req.json(&b);
        }
        status_json(req.send().await.unwrap()).await
    }

    pub async fn post(&self, url: &str, body: Value) -> (u16, Value) {
        self.send(reqwest::Method::POST, url, Some(body)).await
    }

    /// `user_good` at State Farm through the Rust API, waited to SUCCESS.
    pub async fn linked_pull(&self, username: &str) -> Value {
        let sim = self.sandbox.canopy();
        let req =
            coverwatch_sandbox::canopy::ConnectRequest::new("statefarm", username, "pass_good");
        let pull = sim.link(req, WAIT).await.unwrap();
        assert_eq!(pull.status, "SUCCESS");
        // So that later assertions about "new" webhooks do not see this pull's tail.
        self.hooks.wait_event("COMPLETE", Some(&pull.pull_id)).await;
        let (code, body) = self
            .get(&self.team(&format!("/pulls/{}", pull.pull_id)))
            .await;
        assert_eq!(code, 200);
        body["pull"].clone()
    }

    /// A monitored `user_good` pull: `(initial pull id, monitoring id)`.
    pub async fn monitored(&self, username: &str) -> (String, String) {
        let pull = self.linked_pull(username).await;
        let pull_id = pull["pull_id"].as_str().unwrap().to_owned();
        let (code, body) = self
            .post(
                &self.team("/monitorings"),
                serde_json::json!({"pull_id": pull_id, "interval": "P1M"}),
            )
            .await;
        assert_eq!(code, 200, "{body}");
        (
            pull_id,
            body["monitoring"]["monitoring_id"]
                .as_str()
                .unwrap()
                .to_owned(),
        )
    }
}

pub async fn status_json(r: reqwest::Response) -> (u16, Value) {
    let code = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        code,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}
