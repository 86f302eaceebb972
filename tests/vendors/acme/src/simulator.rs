//! Acme's side, simulated: the API, the hosted consent page and the webhook sender, as one axum
//! [`Router`] ([`AcmeSimulator::router`]) that a test mounts on a local port
//! ([`AcmeSimulator::start`]). Test controls live under `/_sim` (no credentials, like the
//! embedded sandbox's `/_sandbox`): change a policy's premium, cancel it, run a refresh that finds
//! nothing new, read what Acme knows,
//! sign a body as Acme would.
//!
//! Webhooks are sent as a vendor sends them: after the change, from a task of their own, signed,
//! and retried a few times with growing pauses while the receiver does not answer 2xx.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use rand::RngCore;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::signature;

/// The API key the simulator accepts, unless built with another.
pub const API_KEY: &str = "ak_acme_simulator";

/// Attempts of one webhook delivery, the first included.
const DELIVERY_ATTEMPTS: u32 = 5;
/// How long a hosted session and a one-time code stay usable.
const SESSION_TTL: chrono::Duration = chrono::Duration::minutes(30);
const CODE_TTL: chrono::Duration = chrono::Duration::minutes(10);

fn random_id(prefix: &str) -> String {
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("{prefix}_{}", hex::encode(bytes))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SessionStatus {
    Open,
    Completed,
    Exited,
}

#[derive(Debug, Clone)]
struct Session {
    id: String,
    reference: String,
    notify_url: String,
    redirect_uri: Option<String>,
    status: SessionStatus,
    expires_at: DateTime<Utc>,
    account: Option<String>,
}

#[derive(Debug, Clone)]
struct Account {
    id: String,
    notify_url: String,
    monitoring: Option<String>,
    policies: Vec<String>,
}

#[derive(Debug, Clone)]
struct PolicyRecord {
    id: String,
    account: String,
    number: String,
    status: &'static str,
    premium_cents: i64,
    effective: String,
    expires: String,
    cancelled_on: Option<String>,
}

impl PolicyRecord {
    fn json(&self) -> Value {
        json!({
            "id": self.id,
            "account": self.account,
            "number": self.number,
            "line": "auto",
            "carrier": {"slug": "acme-mutual", "name": "Acme Mutual"},
            "status": self.status,
            "premium_cents": self.premium_cents,
            "effective_on": self.effective,
            "expires_on": self.expires,
            "cancelled_on": self.cancelled_on,
        })
    }
}

#[derive(Debug, Clone)]
struct Code {
    session: String,
    expires_at: DateTime<Utc>,
}

/// One webhook as sent, for tests that look at what Acme did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub event_type: String,
    pub url: String,
    /// The last answer's status; `None` when no answer came.
    pub status: Option<u16>,
    pub attempts: u32,
}

#[derive(Default)]
struct World {
    sessions: HashMap<String, Session>,
    accounts: HashMap<String, Account>,
    policies: HashMap<String, PolicyRecord>,
    codes: HashMap<String, Code>,
    /// Access token → account id.
    tokens: HashMap<String, String>,
    deliveries: Vec<Delivery>,
}

struct Inner {
    base_url: String,
    api_key: String,
    signing_secret: String,
    world: Mutex<World>,
    http: reqwest::Client,
}

/// Acme, simulated. Cheap to clone; every clone is the same vendor.
#[derive(Clone)]
pub struct AcmeSimulator {
    inner: Arc<Inner>,
}

/// A simulator listening on a local port.
pub struct RunningSimulator {
    pub simulator: AcmeSimulator,
    pub addr: SocketAddr,
}

impl AcmeSimulator {
    /// A simulator reached at `base_url`, with a fresh random signing secret (Acme issues the
    /// secret; an operator copies it into `[vendors.acme]`).
    pub fn new(base_url: impl Into<String>) -> Self {
        let mut secret = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut secret);
        Self {
            inner: Arc::new(Inner {
                base_url: base_url.into().trim_end_matches('/').to_owned(),
                api_key: API_KEY.to_owned(),
                signing_secret: format!("whsec_{}", hex::encode(secret)),
                world: Mutex::new(World::default()),
                http: reqwest::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .expect("an HTTP client with a timeout builds"),
            }),
        }
    }

    /// Bind `127.0.0.1:0` and serve the router on the current tokio runtime. Synchronous, so
    /// that a plug-in can start it from [`coverwatch_core::VendorPlugin::simulated_settings`];
    /// `None` outside a runtime.
    pub fn start() -> Option<RunningSimulator> {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").ok()?;
        listener.set_nonblocking(true).ok()?;
        let addr = listener.local_addr().ok()?;
        let simulator = Self::new(format!("http://{addr}"));
        let router = simulator.router();
        let _guard = runtime.enter();
        let listener = tokio::net::TcpListener::from_std(listener).ok()?;
        runtime.spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::warn!(error = %e, "the Acme simulator stopped");
            }
        });
        Some(RunningSimulator { simulator, addr })
    }

    pub fn base_url(&self) -> &str {
        &self.inner.base_url
    }

    pub fn api_key(&self) -> &str {
        &self.inner.api_key
    }

    pub fn signing_secret(&self) -> &str {
        &self.inner.signing_secret
    }

    /// Every webhook sent so far, in the order their sending finished.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.world().deliveries.clone()
    }

    fn world(&self) -> std::sync::MutexGuard<'_, World> {
        // A panic while holding the lock leaves the maps consistent (every change is a single
        // insert or field write), so a poisoned lock is still usable.
        self.inner
            .world
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/v1/sessions", post(create_session))
            .route("/v1/grants", post(create_grant))
            .route("/v1/accounts/{id}", get(get_account))
            .route(
                "/v1/accounts/{id}/monitoring",
                put(start_monitoring).delete(stop_monitoring),
            )
            .route("/v1/policies/{id}", get(get_policy))
            .route("/hosted/{id}", get(hosted_page).post(hosted_decision))
            .route("/_sim/sessions/{id}", get(sim_session))
            .route("/_sim/accounts/{id}", get(sim_account))
            .route("/_sim/policies/{id}/premium", post(sim_premium))
            .route("/_sim/policies/{id}/cancel", post(sim_cancel))
            .route("/_sim/accounts/{id}/refresh", post(sim_refresh))
            .route("/_sim/sign", post(sim_sign))
            .with_state(self.clone())
    }

    /// Send `event` for `account`'s notify URL, from a task of its own.
    fn notify(&self, url: String, event: Value) {
        let sim = self.clone();
        tokio::spawn(async move { sim.deliver(url, event).await });
    }

    async fn deliver(&self, url: String, event: Value) {
        let event_type = event["type"].as_str().unwrap_or_default().to_owned();
        let body = event.to_string();
        let signature = signature::header_value(&self.inner.signing_secret, body.as_bytes());
        let mut status = None;
        let mut attempts = 0;
        while attempts < DELIVERY_ATTEMPTS {
            attempts += 1;
            let sent = self
                .inner
                .http
                .post(&url)
                .header(header::CONTENT_TYPE, "application/json")
                .header(signature::HEADER, &signature)
                .body(body.clone())
                .send()
                .await;
            status = sent.ok().map(|r| r.status().as_u16());
            if status.is_some_and(|s| (200..300).contains(&s)) {
                break;
            }
            // A vendor's retry schedule, not a test waiting: 50 ms, 100 ms, 200 ms, …
            tokio::time::sleep(Duration::from_millis(50 << attempts.min(6))).await;
        }
        self.world().deliveries.push(Delivery {
            event_type,
            url,
            status,
            attempts,
        });
    }

    fn event(event_type: &str, data: Value) -> Value {
        json!({
            "id": random_id("evt"),
            "type": event_type,
            "created_at": Utc::now().to_rfc3339(),
            "data": data,
        })
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({"error": {"code": code, "message": message}});
    let mut response = (status, Json(body)).into_response();
    response.headers_mut().insert(
        "acme-request-id",
        random_id("req")
            .parse()
            .expect("an id of hex digits is a header value"),
    );
    response
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

/// The refusal of a request without the API key; `None` when it carries the key.
fn refuse_api_key(sim: &AcmeSimulator, headers: &HeaderMap) -> Option<Response> {
    if bearer(headers) == Some(sim.inner.api_key.as_str()) {
        None
    } else {
        Some(error(
            StatusCode::UNAUTHORIZED,
            "invalid_api_key",
            "the API key is missing or wrong",
        ))
    }
}

/// The account an access token opens.
fn token_account(sim: &AcmeSimulator, headers: &HeaderMap) -> Result<String, Box<Response>> {
    let unauthorized = || {
        Box::new(error(
            StatusCode::UNAUTHORIZED,
            "invalid_access_token",
            "the access token is missing, wrong or revoked",
        ))
    };
    let token = bearer(headers).ok_or_else(unauthorized)?;
    sim.world()
        .tokens
        .get(token)
        .cloned()
        .ok_or_else(unauthorized)
}

#[derive(Deserialize)]
struct NewSession {
    reference: String,
    notify_url: String,
    #[serde(default)]
    redirect_uri: Option<String>,
}

async fn create_session(
    State(sim): State<AcmeSimulator>,
    headers: HeaderMap,
    body: Result<Json<NewSession>, axum::extract::rejection::JsonRejection>,
) -> Response {
    if let Some(refused) = refuse_api_key(&sim, &headers) {
        return refused;
    }
    let Ok(Json(request)) = body else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "expected {reference, notify_url, redirect_uri?}",
        );
    };
    if url::Url::parse(&request.notify_url).is_err() {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_notify_url",
            "notify_url is not a URL",
        );
    }
    let session = Session {
        id: random_id("ses"),
        reference: request.reference,
        notify_url: request.notify_url,
        redirect_uri: request.redirect_uri,
        status: SessionStatus::Open,
        expires_at: Utc::now() + SESSION_TTL,
        account: None,
    };
    let answer = json!({
        "id": session.id,
        "url": format!("{}/hosted/{}", sim.base_url(), session.id),
        "expires_at": session.expires_at.to_rfc3339(),
    });
    sim.world().sessions.insert(session.id.clone(), session);
    (StatusCode::CREATED, Json(answer)).into_response()
}

#[derive(Deserialize)]
struct NewGrant {
    code: String,
}

async fn create_grant(
    State(sim): State<AcmeSimulator>,
    headers: HeaderMap,
    body: Result<Json<NewGrant>, axum::extract::rejection::JsonRejection>,
) -> Response {
    if let Some(refused) = refuse_api_key(&sim, &headers) {
        return refused;
    }
    let Ok(Json(request)) = body else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "expected {code}",
        );
    };
    let mut world = sim.world();
    // One use only: the code is gone whether or not it still worked.
    let Some(code) = world.codes.remove(&request.code) else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_code",
            "the code is unknown or was already used",
        );
    };
    if code.expires_at < Utc::now() {
        return error(StatusCode::BAD_REQUEST, "expired_code", "the code expired");
    }
    let Some(account) = world
        .sessions
        .get(&code.session)
        .and_then(|s| s.account.clone())
    else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_code",
            "the code's session has no account",
        );
    };
    let token = random_id("tok");
    world.tokens.insert(token.clone(), account.clone());
    Json(json!({"access_token": token, "account_id": account})).into_response()
}

async fn get_account(
    State(sim): State<AcmeSimulator>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let owner = match token_account(&sim, &headers) {
        Ok(owner) => owner,
        Err(refused) => return *refused,
    };
    let world = sim.world();
    match world.accounts.get(&id) {
        Some(account) if owner == id => Json(json!({
            "id": account.id,
            "holder": {"first_name": "Ada", "last_name": "Acme", "email": "ada@acme.example"},
            "carrier": {"slug": "acme-mutual", "name": "Acme Mutual"},
            "connection": "connected",
            "policies": account.policies,
            "monitoring": account.monitoring,
        }))
        .into_response(),
        _ => error(StatusCode::NOT_FOUND, "not_found", "no such account"),
    }
}

async fn get_policy(
    State(sim): State<AcmeSimulator>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let owner = match token_account(&sim, &headers) {
        Ok(owner) => owner,
        Err(refused) => return *refused,
    };
    let world = sim.world();
    match world.policies.get(&id) {
        Some(policy) if policy.account == owner => Json(policy.json()).into_response(),
        _ => error(StatusCode::NOT_FOUND, "not_found", "no such policy"),
    }
}

async fn start_monitoring(
    State(sim): State<AcmeSimulator>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let owner = match token_account(&sim, &headers) {
        Ok(owner) => owner,
        Err(refused) => return *refused,
    };
    let mut world = sim.world();
    match world.accounts.get_mut(&id) {
        Some(account) if owner == id => {
            // Idempotent: monitoring an account twice keeps the one monitoring.
            let monitoring = account
                .monitoring
                .get_or_insert_with(|| random_id("mon"))
                .clone();
            Json(json!({"id": monitoring, "account": id, "active": true})).into_response()
        }
        _ => error(StatusCode::NOT_FOUND, "not_found", "no such account"),
    }
}

async fn stop_monitoring(
    State(sim): State<AcmeSimulator>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let owner = match token_account(&sim, &headers) {
        Ok(owner) => owner,
        Err(refused) => return *refused,
    };
    let mut world = sim.world();
    match world.accounts.get_mut(&id) {
        Some(account) if owner == id => {
            // Stopping what is stopped is fine: the answer is the same either way.
            account.monitoring = None;
            StatusCode::NO_CONTENT.into_response()
        }
        _ => error(StatusCode::NOT_FOUND, "not_found", "no such account"),
    }
}

fn page(status: StatusCode, body: &str) -> Response {
    (
        status,
        Html(format!(
            "<!doctype html><html><head><title>Acme</title></head><body>{body}</body></html>"
        )),
    )
        .into_response()
}

async fn hosted_page(State(sim): State<AcmeSimulator>, Path(id): Path<String>) -> Response {
    let Some(session) = sim.world().sessions.get(&id).cloned() else {
        return page(
            StatusCode::NOT_FOUND,
            "<p id=\"status\">unknown session</p>",
        );
    };
    if session.status != SessionStatus::Open || session.expires_at < Utc::now() {
        return page(StatusCode::GONE, "<p id=\"status\">closed</p>");
    }
    let action = format!("{}/hosted/{}", sim.base_url(), session.id);
    page(
        StatusCode::OK,
        &format!(
            "<h1>Connect your insurance to Acme</h1>\
             <form id=\"consent\" method=\"post\" action=\"{action}\">\
             <input type=\"hidden\" name=\"decision\" value=\"link\">\
             <button type=\"submit\">Connect</button></form>\
             <form id=\"exit\" method=\"post\" action=\"{action}\">\
             <input type=\"hidden\" name=\"decision\" value=\"exit\">\
             <button type=\"submit\">Not now</button></form>"
        ),
    )
}

#[derive(Deserialize)]
struct Decision {
    decision: String,
}

async fn hosted_decision(
    State(sim): State<AcmeSimulator>,
    Path(id): Path<String>,
    Form(form): Form<Decision>,
) -> Response {
    let (notify_url, event, redirect) = {
        let mut world = sim.world();
        let Some(session) = world.sessions.get(&id).cloned() else {
            return page(
                StatusCode::NOT_FOUND,
                "<p id=\"status\">unknown session</p>",
            );
        };
        if session.status != SessionStatus::Open || session.expires_at < Utc::now() {
            return page(StatusCode::GONE, "<p id=\"status\">closed</p>");
        }
        match form.decision.as_str() {
            "link" => {
                let account = random_id("acct");
                let policy = PolicyRecord {
                    id: random_id("pol"),
                    account: account.clone(),
                    number: "ACME-AUTO-0001".into(),
                    status: "active",
                    premium_cents: 98_000,
                    effective: "2026-01-01".into(),
                    expires: "2027-01-01".into(),
                    cancelled_on: None,
                };
                world.accounts.insert(
                    account.clone(),
                    Account {
                        id: account.clone(),
                        notify_url: session.notify_url.clone(),
                        monitoring: None,
                        policies: vec![policy.id.clone()],
                    },
                );
                world.policies.insert(policy.id.clone(), policy);
                let code = random_id("code");
                world.codes.insert(
                    code.clone(),
                    Code {
                        session: id.clone(),
                        expires_at: Utc::now() + CODE_TTL,
                    },
                );
                let stored = world.sessions.get_mut(&id).expect("read above");
                stored.status = SessionStatus::Completed;
                stored.account = Some(account);
                let event = AcmeSimulator::event(
                    "session.completed",
                    json!({"session": id, "reference": session.reference, "code": code}),
                );
                (session.notify_url, event, session.redirect_uri)
            }
            "exit" => {
                world.sessions.get_mut(&id).expect("read above").status = SessionStatus::Exited;
                let event = AcmeSimulator::event(
                    "session.exited",
                    json!({"session": id, "reference": session.reference, "step": "consent"}),
                );
                (session.notify_url, event, session.redirect_uri)
            }
            _ => {
                return page(
                    StatusCode::BAD_REQUEST,
                    "<p id=\"status\">unknown decision</p>",
                );
            }
        }
    };
    let outcome = event["type"].as_str().unwrap_or_default().to_owned();
    // The caller's page learns the outcome, and on completion the one-time code, so that it
    // may complete the link itself (`one_time_completion_code`) rather than wait for the webhook.
    let code = event["data"]["code"].as_str().map(str::to_owned);
    sim.notify(notify_url, event);
    match redirect.and_then(|uri| url::Url::parse(&uri).ok()) {
        Some(mut uri) => {
            uri.query_pairs_mut()
                .append_pair("status", outcome.trim_start_matches("session."));
            if let Some(code) = code {
                uri.query_pairs_mut().append_pair("code", &code);
            }
            Redirect::to(uri.as_str()).into_response()
        }
        None => page(
            StatusCode::OK,
            &format!(
                "<p id=\"status\">{}</p>",
                outcome.trim_start_matches("session.")
            ),
        ),
    }
}

async fn sim_session(State(sim): State<AcmeSimulator>, Path(id): Path<String>) -> Response {
    match sim.world().sessions.get(&id) {
        Some(s) => Json(json!({
            "id": s.id,
            "notify_url": s.notify_url,
            "account": s.account,
            "status": format!("{:?}", s.status).to_lowercase(),
        }))
        .into_response(),
        None => error(StatusCode::NOT_FOUND, "not_found", "no such session"),
    }
}

async fn sim_account(State(sim): State<AcmeSimulator>, Path(id): Path<String>) -> Response {
    match sim.world().accounts.get(&id) {
        Some(a) => Json(json!({
            "id": a.id,
            "monitored": a.monitoring.is_some(),
            "policies": a.policies,
        }))
        .into_response(),
        None => error(StatusCode::NOT_FOUND, "not_found", "no such account"),
    }
}

#[derive(Deserialize)]
struct Premium {
    premium_cents: i64,
}

/// Change a policy at the carrier; a monitored account's notify URL hears of it.
fn change_policy(
    sim: &AcmeSimulator,
    id: &str,
    event_type: &str,
    change: impl FnOnce(&mut PolicyRecord),
) -> Response {
    let (notify, account) = {
        let mut world = sim.world();
        let Some(policy) = world.policies.get_mut(id) else {
            return error(StatusCode::NOT_FOUND, "not_found", "no such policy");
        };
        change(policy);
        let account = policy.account.clone();
        let notify = world
            .accounts
            .get(&account)
            .filter(|a| a.monitoring.is_some())
            .map(|a| a.notify_url.clone());
        (notify, account)
    };
    let notified = notify.is_some();
    if let Some(url) = notify {
        let event = AcmeSimulator::event(event_type, json!({"account": account, "policy": id}));
        sim.notify(url, event);
    }
    Json(json!({"notified": notified})).into_response()
}

async fn sim_premium(
    State(sim): State<AcmeSimulator>,
    Path(id): Path<String>,
    Json(premium): Json<Premium>,
) -> Response {
    change_policy(&sim, &id, "policy.changed", |p| {
        p.premium_cents = premium.premium_cents
    })
}

async fn sim_cancel(State(sim): State<AcmeSimulator>, Path(id): Path<String>) -> Response {
    change_policy(&sim, &id, "policy.cancelled", |p| {
        p.status = "cancelled";
        p.cancelled_on = Some(Utc::now().date_naive().to_string());
    })
}

/// Acme's signature of any body: for tests that need a genuine delivery Acme would not send on
/// its own (and the same body forged, to see the difference).
async fn sim_sign(State(sim): State<AcmeSimulator>, body: axum::body::Bytes) -> Response {
    Json(json!({"signature": signature::header_value(sim.signing_secret(), &body)})).into_response()
}

/// Acme's scheduled refresh of a monitored account ran and found the carrier's data as it was:
/// `account.refreshed` tells the account's notify URL that fresh data can be read.
async fn sim_refresh(State(sim): State<AcmeSimulator>, Path(id): Path<String>) -> Response {
    let notify = match sim.world().accounts.get(&id) {
        Some(account) => account
            .monitoring
            .as_ref()
            .map(|_| account.notify_url.clone()),
        None => return error(StatusCode::NOT_FOUND, "not_found", "no such account"),
    };
    let notified = notify.is_some();
    if let Some(url) = notify {
        sim.notify(
            url,
            AcmeSimulator::event("account.refreshed", json!({"account": id})),
        );
    }
    Json(json!({"notified": notified})).into_response()
}
