//! Axle (axle.insure) simulator: the REST API under `/axle`, the hosted Ignition page under
//! `/axle/ignition-ui/`, Ignition and monitoring webhooks, and scenario controls under
//! `/_sandbox/axle` plus the Rust API on [`AxleSim`].
//!
//! Faithful to `shared/vendors/axle.md`: `{success, data}` envelopes, `x-axle-request-id` on
//! every response, `x-client-id`/`x-client-secret` on every call and `x-access-token` on
//! account-scoped calls, single-use authCodes that expire after 10 minutes (sandbox clock),
//! one never-expiring accessToken per linked account (relinking the same account returns the same
//! token and resumes monitoring), descope stops monitoring events, monitoring events carry only
//! a `ref`.
//!
//! Where Axle documents nothing the simulator decides, and says so:
//! - error bodies are `{"success": false, "message": "<text>"}`;
//! - an unknown, used or expired authCode is `400`; a bad client id/secret or access token is
//!   `401`; a missing `x-access-token` is `400`; an id the token cannot see is `404`;
//! - Ignition webhooks carry `data.ref` = the ignition token, besides `client`, `user` and
//!   `metadata`; `ignition.attempted` adds `carrier` and `attempt`;
//! - monitoring events are not sent while an account is disconnected or after descope (the
//!   change is still applied, so a later read sees it);
//! - webhooks are retried per [`RetrySchedule::axle`] unless configured otherwise;
//! - several clients ([`AxleAccount`]) can be known at once, each seeing only its own Ignitions,
//!   codes, tokens and accounts: another client's authCode is `400` like an unknown one, another
//!   client's access token `401` like an invalid one, and a platform's
//!   `x-destination-client-id` that is not one of its destination clients is `401`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Months, Utc};
use hmac::{Hmac, Mac};
use rand::Rng;
use serde::Serialize;
use serde_json::{Map, Value, json};
use sha2::Sha256;

use crate::SimContext;
use crate::clock::format_ts;
use crate::delivery::{RetrySchedule, WebhookRequest};

mod api;
mod control;
pub mod fixtures;
mod ui;

pub use api::router;
pub use control::control_router;
use fixtures::{LoginOutcome, PolicyIds, PolicyKind};

#[derive(Clone, Debug)]
pub struct AxleSimConfig {
    /// Expected `x-client-id` of the default client. Default `cli_sandbox`.
    pub client_id: String,
    /// Expected `x-client-secret` of the default client. Default `axle-sandbox-secret`.
    pub client_secret: String,
    /// Further clients known from the start (more can be added with [`AxleSim::add_account`]).
    /// The default client accepts any `x-destination-client-id`, as it always did.
    pub accounts: Vec<AxleAccount>,
    /// Webhook retry policy (Axle documents none; see [`RetrySchedule::axle`]).
    pub retry: RetrySchedule,
    /// Extra headers on every webhook: Axle's "custom webhook headers … for authentication".
    pub webhook_headers: Vec<(String, String)>,
    /// How long an authCode can be exchanged. Axle: 10 minutes.
    pub auth_code_ttl: chrono::Duration,
}

impl Default for AxleSimConfig {
    fn default() -> Self {
        Self {
            client_id: DEFAULT_CLIENT_ID.into(),
            client_secret: DEFAULT_CLIENT_SECRET.into(),
            accounts: Vec::new(),
            retry: RetrySchedule::axle(),
            webhook_headers: Vec::new(),
            auth_code_ttl: chrono::Duration::minutes(10),
        }
    }
}

impl AxleSimConfig {
    pub fn with_account(mut self, account: AxleAccount) -> Self {
        self.accounts.push(account);
        self
    }
}

/// One Axle client the simulator accepts: its credentials and, for a platform, the destination
/// clients it acts for (docs.axle.insure/guides/platform-integration).
#[derive(Clone, PartialEq, Eq)]
pub struct AxleAccount {
    pub client_id: String,
    pub client_secret: String,
    /// `Some`: a platform, which may send only these `x-destination-client-id`s and finds them
    /// at `GET /platform/clients`. `None`: any destination is taken as given and
    /// `GET /platform/clients` lists none.
    pub destination_client_ids: Option<Vec<String>>,
}

impl std::fmt::Debug for AxleAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AxleAccount")
            .field("client_id", &self.client_id)
            .field("destination_client_ids", &self.destination_client_ids)
            .finish_non_exhaustive()
    }
}

impl AxleAccount {
    pub fn new(client_id: impl Into<String>, client_secret: impl Into<String>) -> Self {
        Self {
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            destination_client_ids: None,
        }
    }

    /// A platform client acting for `destinations`.
    pub fn platform(
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
        destinations: &[&str],
    ) -> Self {
        Self {
            destination_client_ids: Some(destinations.iter().map(|d| d.to_string()).collect()),
            ..Self::new(client_id, client_secret)
        }
    }
}

/// A caller the simulator authenticated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AxleCaller {
    pub client_id: String,
    /// `x-destination-client-id`, when a platform sent one.
    pub destination_client_id: Option<String>,
}

impl AxleCaller {
    /// The client the call acts for: the destination client of a platform, else the caller's
    /// own. It owns the Ignitions, codes, tokens and accounts the call creates or reaches.
    pub fn client(&self) -> &str {
        self.destination_client_id
            .as_deref()
            .unwrap_or(&self.client_id)
    }
}

pub const DEFAULT_CLIENT_ID: &str = "cli_sandbox";
pub const DEFAULT_CLIENT_SECRET: &str = "axle-sandbox-secret";

/// The four documented reasons an account stops being monitored.
pub const DISCONNECT_STATUSES: &[&str] = &[
    "credentials-expired",
    "mfa-expired",
    "account-disabled",
    "account-inaccessible",
];

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AxleError {
    #[error("Invalid client credentials")]
    Unauthorized,
    #[error("Invalid access token")]
    InvalidAccessToken,
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
}

impl AxleError {
    pub fn status(&self) -> u16 {
        match self {
            Self::Unauthorized | Self::InvalidAccessToken => 401,
            Self::BadRequest(_) => 400,
            Self::NotFound(_) => 404,
        }
    }

    fn bad(msg: impl Into<String>) -> Self {
        Self::BadRequest(msg.into())
    }
}

pub type AxleResult<T> = Result<T, AxleError>;

/// Body of `POST /ignition` (unknown fields are accepted and ignored, as `config` is).
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartIgnition {
    pub user: Option<Value>,
    pub redirect_uri: Option<String>,
    pub webhook_uri: Option<String>,
    pub metadata: Option<Value>,
    pub config: Option<Value>,
}

impl StartIgnition {
    /// A minimal valid request for `user.id`.
    pub fn for_user(user_id: &str) -> Self {
        Self {
            user: Some(json!({ "id": user_id })),
            ..Self::default()
        }
    }

    pub fn webhook(mut self, uri: impl Into<String>) -> Self {
        self.webhook_uri = Some(uri.into());
        self
    }

    pub fn redirect(mut self, uri: impl Into<String>) -> Self {
        self.redirect_uri = Some(uri.into());
        self
    }

    pub fn metadata(mut self, metadata: Value) -> Self {
        self.metadata = Some(metadata);
        self
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IgnitionStarted {
    pub ignition_token: String,
    pub ignition_uri: String,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Exchanged {
    pub access_token: String,
    /// Absent for a `manual` or `proxy` completion, which reaches a policy but no carrier
    /// account.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    pub policies: Vec<String>,
    /// The policy of a `manual` or `proxy` completion.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IgnitionStatus {
    Created,
    Opened,
    Completed,
    Exited,
    Errored,
}

impl IgnitionStatus {
    pub fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::Exited | Self::Errored)
    }
}

/// What the hosted page (or a test) needs to know about an Ignition session.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IgnitionInfo {
    pub token: String,
    pub client: String,
    pub status: IgnitionStatus,
    pub user: Value,
    pub metadata: Value,
    pub redirect_uri: Option<String>,
    pub webhook_uri: Option<String>,
    pub carrier: Option<String>,
    pub attempts: u32,
    pub account: Option<String>,
}

/// Result of a sign-in on the Ignition page.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum SignIn {
    /// `status=complete`: `redirect` is the redirectUri with the parameters, when one was given.
    Complete {
        auth_code: String,
        account: String,
        result: String,
        redirect: Option<String>,
    },
    /// `status=error`.
    Error {
        message: String,
        redirect: Option<String>,
    },
    /// Wrong credentials: the session stays open.
    Attempted { attempts: u32 },
}

/// A webhook the simulator emitted.
#[derive(Clone, Debug, Serialize)]
pub struct Emitted {
    pub event_id: String,
    pub event_type: String,
    /// `None` when the session or account has no webhookUri.
    pub delivery_id: Option<u64>,
    pub body: Value,
}

/// What a scenario call did.
#[derive(Clone, Debug, Serialize)]
pub struct ScenarioOutcome {
    /// The changes applied (`[{type, key, value, oldValue}]`), empty if none.
    pub changes: Vec<Value>,
    /// The event sent, or `None` when nothing changed or the account is not monitored
    /// (descoped or disconnected).
    pub event: Option<Emitted>,
    /// The object after the change.
    pub data: Value,
}

// ---------------------------------------------------------------------------------------------
// State

#[derive(Debug)]
struct Ignition {
    token: String,
    client: String,
    user: Value,
    metadata: Value,
    redirect_uri: Option<String>,
    webhook_uri: Option<String>,
    status: IgnitionStatus,
    carrier: Option<String>,
    attempts: u32,
    account: Option<String>,
}

#[derive(Debug)]
struct AuthCode {
    /// An account id, or for a `manual`/`proxy` completion the id of its lone policy.
    account: String,
    issued_at: DateTime<Utc>,
    used: bool,
}

#[derive(Debug)]
struct Account {
    json: Map<String, Value>,
    access_token: String,
    monitored: bool,
    client: String,
    user: Value,
    metadata: Value,
    webhook_uri: Option<String>,
}

#[derive(Debug)]
struct Policy {
    kind: PolicyKind,
    current: Map<String, Value>,
    renewal: Option<Map<String, Value>>,
}

#[derive(Debug, Default)]
struct State {
    ignitions: HashMap<String, Ignition>,
    auth_codes: HashMap<String, AuthCode>,
    accounts: BTreeMap<String, Account>,
    policies: BTreeMap<String, Policy>,
    tokens: HashMap<String, String>,
    /// The client (see [`AxleCaller::client`]) owning each account, and each policy of a
    /// `manual`/`proxy` completion: what its access token and authCode may be used by.
    owners: HashMap<String, String>,
    /// `(client, carrier, username)` → account: the same login under two clients is two
    /// accounts, as two Axle customers' users would be.
    logins: HashMap<(String, String, String), String>,
    descopes: Vec<Descoped>,
}

/// One `POST /token/descope` the simulator answered, in order: what a test checks to see that a
/// client stopped monitoring the account it meant to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Descoped {
    pub access_token: String,
    pub account: String,
    pub at: DateTime<Utc>,
}

/// The Axle simulator. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct AxleSim {
    inner: Arc<Inner>,
}

struct Inner {
    config: AxleSimConfig,
    ctx: SimContext,
    /// The default client first, then the configured and added ones.
    clients: Mutex<Vec<AxleAccount>>,
    state: Mutex<State>,
    doc_key: [u8; 32],
}

impl std::fmt::Debug for AxleSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AxleSim")
            .field("client_id", &self.inner.config.client_id)
            .finish_non_exhaustive()
    }
}

const ID_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";

/// Axle-style id: a prefix and 21 url-safe random characters (`acc_gM2wn_gaqUv76ZljeVXOv`).
pub fn new_id(prefix: &str) -> String {
    let mut rng = rand::thread_rng();
    let tail: String = (0..21)
        .map(|_| ID_ALPHABET[rng.gen_range(0..ID_ALPHABET.len())] as char)
        .collect();
    format!("{prefix}{tail}")
}

fn random_secret(len: usize) -> String {
    let mut rng = rand::thread_rng();
    (0..len)
        .map(|_| ID_ALPHABET[rng.gen_range(0..62)] as char)
        .collect()
}

impl AxleSim {
    pub fn new(config: AxleSimConfig, ctx: SimContext) -> Self {
        let doc_key: [u8; 32] = rand::random();
        let mut clients = vec![AxleAccount::new(
            config.client_id.clone(),
            config.client_secret.clone(),
        )];
        clients.extend(config.accounts.iter().cloned());
        Self {
            inner: Arc::new(Inner {
                clients: Mutex::new(clients),
                config,
                ctx,
                state: Mutex::default(),
                doc_key,
            }),
        }
    }

    pub fn config(&self) -> &AxleSimConfig {
        &self.inner.config
    }

    pub fn context(&self) -> &SimContext {
        &self.inner.ctx
    }

    /// `{base}/axle`: what a client uses instead of `https://sandbox.axle.insure`.
    pub fn api_base_url(&self) -> String {
        format!("{}/axle", self.inner.ctx.base_url)
    }

    fn now(&self) -> DateTime<Utc> {
        self.inner.ctx.clock.now()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().expect("axle state poisoned")
    }

    /// Makes another client known, at run time. A client id already known is replaced (its
    /// secret rotated), keeping what it owns.
    pub fn add_account(&self, account: AxleAccount) {
        let mut clients = self.clients();
        clients.retain(|c| c.client_id != account.client_id);
        clients.push(account);
    }

    /// Every client the simulator accepts, the default one first.
    pub fn accounts(&self) -> Vec<AxleAccount> {
        self.clients().clone()
    }

    /// Every API call answered, oldest first, with the client ids it carried.
    pub fn calls(&self) -> Vec<crate::ApiCall> {
        self.inner.ctx.calls.of("axle")
    }

    fn clients(&self) -> MutexGuard<'_, Vec<AxleAccount>> {
        self.inner.clients.lock().expect("axle clients poisoned")
    }

    /// Checks `x-client-id` / `x-client-secret`.
    pub fn check_client(
        &self,
        client_id: Option<&str>,
        client_secret: Option<&str>,
    ) -> AxleResult<()> {
        self.authenticate(client_id, client_secret, None).map(drop)
    }

    /// Checks `x-client-id` / `x-client-secret` and, from a platform, `x-destination-client-id`.
    pub fn authenticate(
        &self,
        client_id: Option<&str>,
        client_secret: Option<&str>,
        destination_client_id: Option<&str>,
    ) -> AxleResult<AxleCaller> {
        use subtle::ConstantTimeEq;
        let (Some(id), Some(secret)) = (client_id, client_secret) else {
            return Err(AxleError::Unauthorized);
        };
        let clients = self.clients();
        let account = clients
            .iter()
            .find(|c| c.client_id == id)
            .filter(|c| bool::from(secret.as_bytes().ct_eq(c.client_secret.as_bytes())))
            .ok_or(AxleError::Unauthorized)?;
        if let (Some(dest), Some(allowed)) =
            (destination_client_id, &account.destination_client_ids)
            && !allowed.iter().any(|a| a == dest)
        {
            return Err(AxleError::Unauthorized);
        }
        Ok(AxleCaller {
            client_id: account.client_id.clone(),
            destination_client_id: destination_client_id.map(str::to_owned),
        })
    }

    /// `GET /platform/clients`: the destination clients of a platform's credential.
    pub fn destination_clients(&self, client_id: &str) -> Vec<String> {
        self.clients()
            .iter()
            .find(|c| c.client_id == client_id)
            .and_then(|c| c.destination_client_ids.clone())
            .unwrap_or_default()
    }

    /// The client owning what an access token reaches, if the token is known.
    pub fn token_owner(&self, access_token: &str) -> Option<String> {
        let st = self.lock();
        let id = st.tokens.get(access_token)?;
        st.owners.get(id).cloned()
    }

    // ---- Ignition ---------------------------------------------------------------------------

    /// `POST /ignition`. `destination_client` is `x-destination-client-id` (platforms): it becomes
    /// the `client` reported in redirects and webhooks.
    pub fn start_ignition(
        &self,
        req: StartIgnition,
        destination_client: Option<&str>,
    ) -> AxleResult<IgnitionStarted> {
        let caller = AxleCaller {
            client_id: self.inner.config.client_id.clone(),
            destination_client_id: destination_client.map(str::to_owned),
        };
        self.start_ignition_for(req, &caller)
    }

    /// `POST /ignition` by an authenticated caller: the session, and what it links, belong to
    /// [`AxleCaller::client`].
    pub fn start_ignition_for(
        &self,
        req: StartIgnition,
        caller: &AxleCaller,
    ) -> AxleResult<IgnitionStarted> {
        let user = match req.user {
            Some(Value::Object(u)) => u,
            Some(_) => return Err(AxleError::bad("user must be an object")),
            None => return Err(AxleError::bad("user is required")),
        };
        match user.get("id") {
            Some(Value::String(id)) if !id.trim().is_empty() => {}
            _ => return Err(AxleError::bad("user.id is required")),
        }
        let metadata = match req.metadata {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => {
                if m.values().any(|v| v.is_object() || v.is_array()) {
                    return Err(AxleError::bad(
                        "metadata must be flat: nested objects and arrays are not allowed",
                    ));
                }
                m
            }
            Some(_) => return Err(AxleError::bad("metadata must be an object")),
        };
        for (name, uri) in [
            ("redirectUri", &req.redirect_uri),
            ("webhookUri", &req.webhook_uri),
        ] {
            if let Some(uri) = uri {
                let ok = url::Url::parse(uri).is_ok_and(|u| matches!(u.scheme(), "http" | "https"));
                if !ok {
                    return Err(AxleError::bad(format!(
                        "{name} must be an absolute http(s) URL"
                    )));
                }
            }
        }
        let token = new_id("ign_");
        let client = caller.client().to_owned();
        let ignition = Ignition {
            token: token.clone(),
            client,
            user: Value::Object(user),
            metadata: Value::Object(metadata),
            redirect_uri: req.redirect_uri,
            webhook_uri: req.webhook_uri,
            status: IgnitionStatus::Created,
            carrier: None,
            attempts: 0,
            account: None,
        };
        let mut st = self.lock();
        self.ignition_event(&ignition, "ignition.created", Map::new());
        st.ignitions.insert(token.clone(), ignition);
        Ok(IgnitionStarted {
            ignition_uri: format!(
                "{}/axle/ignition-ui/?token={token}",
                self.inner.ctx.base_url
            ),
            ignition_token: token,
        })
    }

    pub fn ignition(&self, token: &str) -> Option<IgnitionInfo> {
        self.lock().ignitions.get(token).map(info)
    }

    /// The person opened the Ignition page: `ignition.opened` (once per session).
    pub fn open_ignition(&self, token: &str) -> AxleResult<IgnitionInfo> {
        let mut st = self.lock();
        let ign = st
            .ignitions
            .get_mut(token)
            .ok_or_else(|| AxleError::NotFound("Ignition not found".into()))?;
        if ign.status == IgnitionStatus::Created {
            ign.status = IgnitionStatus::Opened;
            self.ignition_event(ign, "ignition.opened", Map::new());
        }
        Ok(info(ign))
    }

    /// The person picked `carrier` and entered a login.
    pub fn sign_in(
        &self,
        token: &str,
        carrier: &str,
        username: &str,
        password: &str,
    ) -> AxleResult<SignIn> {
        if fixtures::carrier_name(carrier).is_none() {
            return Err(AxleError::bad(format!("unknown carrier {carrier:?}")));
        }
        let now = self.now();
        let mut st = self.lock();
        let st = &mut *st;
        // Taken out of the map while accounts are created, and put back below.
        let mut ign = st
            .ignitions
            .remove(token)
            .ok_or_else(|| AxleError::NotFound("Ignition not found".into()))?;
        let outcome = self.sign_in_locked(st, &mut ign, carrier, username, password, now);
        st.ignitions.insert(ign.token.clone(), ign);
        outcome
    }

    fn sign_in_locked(
        &self,
        st: &mut State,
        ign: &mut Ignition,
        carrier: &str,
        username: &str,
        password: &str,
        now: DateTime<Utc>,
    ) -> AxleResult<SignIn> {
        if ign.status.is_final() {
            return Err(AxleError::bad("This Ignition session has already ended"));
        }
        if ign.status == IgnitionStatus::Created {
            ign.status = IgnitionStatus::Opened;
            self.ignition_event(ign, "ignition.opened", Map::new());
        }
        ign.carrier = Some(carrier.to_owned());
        match fixtures::login(username, password) {
            LoginOutcome::BadCredentials => {
                ign.attempts += 1;
                let mut extra = Map::new();
                extra.insert("carrier".into(), json!(carrier));
                extra.insert("attempt".into(), json!(ign.attempts));
                self.ignition_event(ign, "ignition.attempted", extra);
                Ok(SignIn::Attempted {
                    attempts: ign.attempts,
                })
            }
            LoginOutcome::Error(message) => {
                ign.status = IgnitionStatus::Errored;
                let mut extra = Map::new();
                extra.insert("message".into(), json!(message));
                self.ignition_event(ign, "ignition.errored", extra);
                let redirect = redirect_url(ign, &[("status", "error"), ("message", message)]);
                Ok(SignIn::Error {
                    message: message.to_owned(),
                    redirect,
                })
            }
            LoginOutcome::Link(fixture) => {
                let key = (
                    ign.client.clone(),
                    carrier.to_owned(),
                    fixture.username.to_owned(),
                );
                let account_id = match st.logins.get(&key) {
                    Some(id) => {
                        let acc = st.accounts.get_mut(id).expect("login points to an account");
                        relink(acc, ign, now);
                        id.clone()
                    }
                    None => {
                        let id = create_account(st, ign, carrier, fixture, now);
                        st.logins.insert(key, id.clone());
                        id
                    }
                };
                let code = random_secret(32);
                st.auth_codes.insert(
                    code.clone(),
                    AuthCode {
                        account: account_id.clone(),
                        issued_at: now,
                        used: false,
                    },
                );
                ign.status = IgnitionStatus::Completed;
                ign.account = Some(account_id.clone());
                let mut extra = Map::new();
                extra.insert("authCode".into(), json!(code));
                extra.insert("result".into(), json!("link"));
                self.ignition_event(ign, "ignition.completed", extra);
                let redirect = redirect_url(
                    ign,
                    &[
                        ("status", "complete"),
                        ("authCode", &code),
                        ("result", "link"),
                    ],
                );
                Ok(SignIn::Complete {
                    auth_code: code,
                    account: account_id,
                    result: "link".into(),
                    redirect,
                })
            }
        }
    }

    /// Ignition completed without a carrier login: `result: manual` ("My carrier is not listed"
    /// and a document upload, docs.axle.insure/guides/sandbox) or `result: proxy` (completed on
    /// the user's behalf, docs.axle.insure/guides/proxy-ignition). The result is one policy
    /// with no account behind it: Exchange Token answers `policy` and no `account`, and the
    /// Policy has no `isActive` ("Missing when Ignition completed with result: manual",
    /// docs.axle.insure/api-reference/policies/policy).
    pub fn complete_without_login(&self, token: &str, result: &str) -> AxleResult<SignIn> {
        if !matches!(result, "manual" | "proxy") {
            return Err(AxleError::bad(format!(
                "result {result:?}: expected manual or proxy"
            )));
        }
        let now = self.now();
        let mut st = self.lock();
        let st = &mut *st;
        let ign = st
            .ignitions
            .get_mut(token)
            .ok_or_else(|| AxleError::NotFound("Ignition not found".into()))?;
        if ign.status.is_final() {
            return Err(AxleError::bad("This Ignition session has already ended"));
        }
        let fixture = match fixtures::login("username", "password") {
            LoginOutcome::Link(fixture) => fixture,
            _ => unreachable!("the simple auto login links"),
        };
        let kind = fixture.policies[0];
        let policy_id = new_id("pol_");
        let property_ids: Vec<String> =
            (0..kind.property_count()).map(|_| new_id("prp_")).collect();
        let mut json = kind.build(&PolicyIds {
            policy_id: &policy_id,
            account_id: "",
            carrier: "other",
            property_ids: &property_ids,
            now,
        });
        let ts = format_ts(now);
        json["account"] = Value::Null;
        json["result"] = json!(result);
        json["createdAt"] = json!(ts);
        json["modifiedAt"] = json!(ts);
        json["refreshedAt"] = json!(ts);
        let Value::Object(mut current) = json else {
            unreachable!("fixture policies are objects")
        };
        current.remove("isActive");
        st.policies.insert(
            policy_id.clone(),
            Policy {
                kind,
                current,
                renewal: None,
            },
        );
        st.tokens.insert(random_secret(40), policy_id.clone());
        st.owners.insert(policy_id.clone(), ign.client.clone());
        let code = random_secret(32);
        st.auth_codes.insert(
            code.clone(),
            AuthCode {
                account: policy_id.clone(),
                issued_at: now,
                used: false,
            },
        );
        ign.status = IgnitionStatus::Completed;
        let mut extra = Map::new();
        extra.insert("authCode".into(), json!(code));
        extra.insert("result".into(), json!(result));
        self.ignition_event(ign, "ignition.completed", extra);
        let redirect = redirect_url(
            ign,
            &[
                ("status", "complete"),
                ("authCode", &code),
                ("result", result),
            ],
        );
        Ok(SignIn::Complete {
            auth_code: code,
            account: policy_id,
            result: result.into(),
            redirect,
        })
    }

    /// The person left Ignition at `step`: `ignition.exited`. Returns the redirect URL, if any.
    pub fn exit_ignition(&self, token: &str, step: &str) -> AxleResult<Option<String>> {
        let mut st = self.lock();
        let ign = st
            .ignitions
            .get_mut(token)
            .ok_or_else(|| AxleError::NotFound("Ignition not found".into()))?;
        if ign.status.is_final() {
            return Err(AxleError::bad("This Ignition session has already ended"));
        }
        ign.status = IgnitionStatus::Exited;
        let mut extra = Map::new();
        extra.insert("step".into(), json!(step));
        self.ignition_event(ign, "ignition.exited", extra);
        Ok(redirect_url(ign, &[("status", "exit"), ("step", step)]))
    }

    fn ignition_event(
        &self,
        ign: &Ignition,
        event_type: &str,
        extra: Map<String, Value>,
    ) -> Emitted {
        let mut data = Map::new();
        data.insert("client".into(), json!(ign.client));
        // Axle's Ignition event table names the Ignition token `token`; `ref` is the field
        // every event shares.
        data.insert("token".into(), json!(ign.token));
        data.insert("ref".into(), json!(ign.token));
        data.insert("user".into(), ign.user.clone());
        data.insert("metadata".into(), ign.metadata.clone());
        data.extend(extra);
        self.emit(ign.webhook_uri.as_deref(), event_type, data)
    }

    // ---- Tokens ------------------------------------------------------------------------------

    /// `POST /token/exchange`.
    pub fn exchange(&self, auth_code: &str) -> AxleResult<Exchanged> {
        self.exchange_for(auth_code, None)
    }

    /// `POST /token/exchange` by `client` (see [`AxleCaller::client`]): another client's code is
    /// answered as an unknown one, and stays usable by its owner.
    pub fn exchange_for(&self, auth_code: &str, client: Option<&str>) -> AxleResult<Exchanged> {
        let now = self.now();
        let mut st = self.lock();
        let st = &mut *st;
        let code = st
            .auth_codes
            .get_mut(auth_code)
            .ok_or_else(|| AxleError::bad("Invalid authCode"))?;
        if let Some(client) = client
            && st.owners.get(&code.account).map(String::as_str) != Some(client)
        {
            return Err(AxleError::bad("Invalid authCode"));
        }
        if code.used {
            return Err(AxleError::bad("authCode has already been used"));
        }
        if now - code.issued_at > self.inner.config.auth_code_ttl {
            return Err(AxleError::bad("authCode has expired"));
        }
        code.used = true;
        let account_id = code.account.clone();
        let Some(acc) = st.accounts.get(&account_id) else {
            // A manual or proxy completion: a policy with no account behind it.
            let token = st
                .tokens
                .iter()
                .find(|(_, owner)| **owner == account_id)
                .map(|(token, _)| token.clone())
                .ok_or_else(|| AxleError::bad("Invalid authCode"))?;
            return Ok(Exchanged {
                access_token: token,
                account: None,
                policies: vec![account_id.clone()],
                policy: Some(account_id),
            });
        };
        Ok(Exchanged {
            access_token: acc.access_token.clone(),
            policies: policy_ids(acc),
            account: Some(account_id),
            policy: None,
        })
    }

    /// The account an access token belongs to.
    pub fn account_for_token(&self, access_token: &str) -> AxleResult<String> {
        self.lock()
            .tokens
            .get(access_token)
            .cloned()
            .ok_or(AxleError::InvalidAccessToken)
    }

    /// `POST /token/descope` with `scope: monitoring`: no more Account or Policy events.
    pub fn descope(&self, access_token: &str) -> AxleResult<String> {
        let now = self.now();
        let mut st = self.lock();
        let account_id = st
            .tokens
            .get(access_token)
            .cloned()
            .ok_or(AxleError::InvalidAccessToken)?;
        // A manual or proxy token names a policy, which no monitoring watches.
        if let Some(acc) = st.accounts.get_mut(&account_id) {
            acc.monitored = false;
        }
        st.descopes.push(Descoped {
            access_token: access_token.to_owned(),
            account: account_id,
            at: now,
        });
        Ok(access_token.to_owned())
    }

    /// Every descope answered so far, oldest first.
    pub fn descopes(&self) -> Vec<Descoped> {
        self.lock().descopes.clone()
    }

    pub fn access_token(&self, account_id: &str) -> Option<String> {
        self.lock()
            .accounts
            .get(account_id)
            .map(|a| a.access_token.clone())
    }

    /// False after descope; relinking turns it back on.
    pub fn is_monitored(&self, account_id: &str) -> Option<bool> {
        self.lock().accounts.get(account_id).map(|a| a.monitored)
    }

    // ---- Reads -------------------------------------------------------------------------------

    /// The Account object (as `GET /accounts/{id}` serves it, unexpanded).
    pub fn account(&self, account_id: &str) -> Option<Value> {
        self.lock()
            .accounts
            .get(account_id)
            .map(|a| Value::Object(a.json.clone()))
    }

    /// Every account id, sorted.
    pub fn account_ids(&self) -> Vec<String> {
        self.lock().accounts.keys().cloned().collect()
    }

    /// The current term of a Policy, documents signed as of now.
    pub fn policy(&self, policy_id: &str) -> Option<Value> {
        let st = self.lock();
        st.policies
            .get(policy_id)
            .map(|p| self.served_policy(&p.current))
    }

    /// The renewal term, if `policy.renewal-available` made one readable.
    pub fn policy_renewal(&self, policy_id: &str) -> Option<Value> {
        let st = self.lock();
        st.policies
            .get(policy_id)
            .and_then(|p| p.renewal.as_ref())
            .map(|r| self.served_policy(r))
    }

    /// `GET /accounts/{id}` for a token.
    pub(crate) fn read_account(
        &self,
        access_token: &str,
        account_id: &str,
        expand: bool,
    ) -> AxleResult<Value> {
        let st = self.lock();
        let owner = st
            .tokens
            .get(access_token)
            .ok_or(AxleError::InvalidAccessToken)?;
        let acc = match st.accounts.get(account_id) {
            Some(a) if owner == account_id => a,
            _ => return Err(AxleError::NotFound("Account not found".into())),
        };
        let mut json = acc.json.clone();
        if expand {
            let policies: Vec<Value> = policy_ids(acc)
                .iter()
                .filter_map(|id| st.policies.get(id))
                .map(|p| self.served_policy(&p.current))
                .collect();
            json.insert("policies".into(), Value::Array(policies));
        }
        Ok(Value::Object(json))
    }

    /// `GET /policies/{id}` for a token.
    pub(crate) fn read_policy(
        &self,
        access_token: &str,
        policy_id: &str,
        expand: bool,
        renewal: bool,
    ) -> AxleResult<Value> {
        let st = self.lock();
        let owner = st
            .tokens
            .get(access_token)
            .ok_or(AxleError::InvalidAccessToken)?;
        let policy = match st.policies.get(policy_id) {
            Some(p)
                if p.current.get("account").and_then(Value::as_str) == Some(owner.as_str())
                    || policy_id == owner.as_str() =>
            {
                p
            }
            _ => return Err(AxleError::NotFound("Policy not found".into())),
        };
        let term = if renewal {
            policy.renewal.as_ref().ok_or_else(|| {
                AxleError::NotFound("No renewal term available for this policy".into())
            })?
        } else {
            &policy.current
        };
        let mut json = self.served_policy(term);
        if expand && let Some(acc) = st.accounts.get(owner.as_str()) {
            json["account"] = Value::Object(acc.json.clone());
        }
        Ok(json)
    }

    fn served_policy(&self, term: &Map<String, Value>) -> Value {
        let mut json = Value::Object(term.clone());
        let policy_id = term
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        if let Some(docs) = json.get_mut("documents").and_then(Value::as_array_mut) {
            for (i, doc) in docs.iter_mut().enumerate() {
                doc["url"] = json!(self.document_url(&policy_id, i));
            }
        }
        json
    }

    /// A signed document URL valid for 15 minutes of sandbox time.
    pub fn document_url(&self, policy_id: &str, index: usize) -> String {
        let expires = self.now().timestamp() + 15 * 60;
        let sig = self.document_signature(policy_id, index, expires);
        format!(
            "{}/axle/documents/{policy_id}/{index}?expires={expires}&signature={sig}",
            self.inner.ctx.base_url
        )
    }

    fn document_signature(&self, policy_id: &str, index: usize, expires: i64) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.inner.doc_key).expect("any key length");
        mac.update(format!("{policy_id}/{index}/{expires}").as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// Checks a signed document URL; returns the document's name.
    pub(crate) fn verify_document(
        &self,
        policy_id: &str,
        index: usize,
        expires: i64,
        signature: &str,
    ) -> Option<String> {
        use subtle::ConstantTimeEq;
        let expected = self.document_signature(policy_id, index, expires);
        if !bool::from(expected.as_bytes().ct_eq(signature.as_bytes()))
            || self.now().timestamp() > expires
        {
            return None;
        }
        let st = self.lock();
        let doc = st
            .policies
            .get(policy_id)?
            .current
            .get("documents")?
            .as_array()?
            .get(index)?;
        Some(
            doc.get("name")
                .and_then(Value::as_str)
                .unwrap_or("document")
                .to_owned(),
        )
    }

    // ---- Scenarios (monitoring events) -------------------------------------------------------

    /// Changes Account fields (`firstName`, `lastName`, `email`, `phone`, `carrier`, and
    /// `connection`) as `POST /sandbox/accounts/{id}/event` does: `account.modified` with the
    /// changes, or `account.disconnected` when `connection.status` leaves `active`.
    pub fn modify_account(&self, account_id: &str, fields: &Value) -> AxleResult<ScenarioOutcome> {
        let fields = fields
            .as_object()
            .ok_or_else(|| AxleError::bad("body must be a JSON object"))?;
        const ALLOWED: &[&str] = &[
            "carrier",
            "firstName",
            "lastName",
            "phone",
            "email",
            "connection",
        ];
        if let Some(bad) = fields.keys().find(|k| !ALLOWED.contains(&k.as_str())) {
            return Err(AxleError::bad(format!(
                "{bad} cannot be modified on an Account"
            )));
        }
        let mut plain = fields.clone();
        let connection = plain.remove("connection");
        let status = match &connection {
            None => None,
            Some(c) => match c.get("status").and_then(Value::as_str) {
                Some(s) if s == "active" || DISCONNECT_STATUSES.contains(&s) => Some(s.to_owned()),
                _ => {
                    return Err(AxleError::bad(format!(
                        "connection.status must be one of active, {}",
                        DISCONNECT_STATUSES.join(", ")
                    )));
                }
            },
        };
        let now = self.now();
        let mut st = self.lock();
        let acc = st
            .accounts
            .get_mut(account_id)
            .ok_or_else(|| AxleError::NotFound("Account not found".into()))?;
        let old = acc.json.clone();
        for (k, v) in plain {
            acc.json.insert(k, v);
        }
        let changes = diff(&old, &acc.json);
        if !changes.is_empty() {
            touch(&mut acc.json, now);
        }
        let mut event = None;
        if !changes.is_empty() && connection_active(acc) {
            let mut extra = Map::new();
            extra.insert("changes".into(), Value::Array(changes.clone()));
            event = self.account_event(acc, "account.modified", account_id, extra);
        }
        let mut all_changes = changes;
        if let Some(status) = status {
            let was = acc.json["connection"]["status"]
                .as_str()
                .unwrap_or("active")
                .to_owned();
            if was != status {
                acc.json.insert(
                    "connection".into(),
                    json!({ "status": status, "updatedAt": format_ts(now) }),
                );
                all_changes.push(json!({"type": "UPDATE", "key": "connection.status", "value": status, "oldValue": was}));
                if status != "active" {
                    let mut extra = Map::new();
                    extra.insert("status".into(), json!(status));
                    // Sent even though the account is now disconnected: this is the transition.
                    if acc.monitored {
                        event = Some(self.emit_for_account(
                            acc,
                            "account.disconnected",
                            account_id,
                            None,
                            extra,
                        ));
                    }
                }
            }
        }
        Ok(ScenarioOutcome {
            changes: all_changes,
            event,
            data: Value::Object(acc.json.clone()),
        })
    }

    /// `account.disconnected` with one of [`DISCONNECT_STATUSES`]; sets `connection.status`.
    pub fn disconnect_account(
        &self,
        account_id: &str,
        status: &str,
    ) -> AxleResult<ScenarioOutcome> {
        self.modify_account(account_id, &json!({ "connection": { "status": status } }))
    }

    /// `account.retrying` (Axle is retrying a failing carrier connection).
    pub fn account_retrying(&self, account_id: &str) -> AxleResult<ScenarioOutcome> {
        let st = self.lock();
        let acc = st
            .accounts
            .get(account_id)
            .ok_or_else(|| AxleError::NotFound("Account not found".into()))?;
        let event = if connection_active(acc) {
            self.account_event(acc, "account.retrying", account_id, Map::new())
        } else {
            None
        };
        Ok(ScenarioOutcome {
            changes: Vec::new(),
            event,
            data: Value::Object(acc.json.clone()),
        })
    }

    /// Changes Policy fields as `POST /sandbox/policies/{id}/event` does: `policy.modified` with
    /// the changes. Top-level fields are replaced whole (`coverages` is the full new list).
    pub fn modify_policy(&self, policy_id: &str, fields: &Value) -> AxleResult<ScenarioOutcome> {
        let fields = fields
            .as_object()
            .ok_or_else(|| AxleError::bad("body must be a JSON object"))?;
        const ALLOWED: &[&str] = &[
            "type",
            "carrier",
            "policyNumber",
            "isActive",
            "effectiveDate",
            "expirationDate",
            "premium",
            "address",
            "coverages",
            "properties",
            "insureds",
            "thirdParties",
            "documents",
        ];
        if let Some(bad) = fields.keys().find(|k| !ALLOWED.contains(&k.as_str())) {
            return Err(AxleError::bad(format!(
                "{bad} cannot be modified on a Policy"
            )));
        }
        let now = self.now();
        let mut st = self.lock();
        let st = &mut *st;
        let policy = st
            .policies
            .get_mut(policy_id)
            .ok_or_else(|| AxleError::NotFound("Policy not found".into()))?;
        let old = policy.current.clone();
        for (k, v) in fields {
            policy.current.insert(k.clone(), v.clone());
        }
        let changes = diff(&old, &policy.current);
        if !changes.is_empty() {
            touch(&mut policy.current, now);
        }
        let data = self.served_policy(&policy.current);
        let event = if changes.is_empty() {
            None
        } else {
            let mut extra = Map::new();
            extra.insert("changes".into(), Value::Array(changes.clone()));
            self.policy_event(st, policy_id, "policy.modified", extra)
        };
        Ok(ScenarioOutcome {
            changes,
            event,
            data,
        })
    }

    /// Cancellation: `policy.modified` with `isActive` true → false.
    pub fn cancel_policy(&self, policy_id: &str) -> AxleResult<ScenarioOutcome> {
        self.modify_policy(policy_id, &json!({ "isActive": false }))
    }

    /// Makes a renewal term readable with `term=renewal` and sends `policy.renewal-available`.
    /// The renewal starts when the current term ends, lasts one term, costs 4 % more, and then
    /// takes `overrides` (top-level Policy fields).
    pub fn make_renewal_available(
        &self,
        policy_id: &str,
        overrides: Option<&Value>,
    ) -> AxleResult<ScenarioOutcome> {
        let overrides = match overrides {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(_) => return Err(AxleError::bad("overrides must be a JSON object")),
        };
        let now = self.now();
        let mut st = self.lock();
        let st = &mut *st;
        let policy = st
            .policies
            .get_mut(policy_id)
            .ok_or_else(|| AxleError::NotFound("Policy not found".into()))?;
        let mut renewal = policy.current.clone();
        let months = Months::new(policy.kind.term_months());
        if let Some(exp) = policy.current.get("expirationDate").and_then(Value::as_str)
            && let Ok(exp) = DateTime::parse_from_rfc3339(exp)
        {
            let exp = exp.with_timezone(&Utc);
            renewal.insert("effectiveDate".into(), json!(format_ts(exp)));
            renewal.insert("expirationDate".into(), json!(format_ts(exp + months)));
        }
        if let Some(p) = policy.current.get("premium").and_then(Value::as_f64) {
            renewal.insert("premium".into(), json!((p * 1.04 * 100.0).round() / 100.0));
        }
        renewal.insert("isActive".into(), json!(true));
        renewal.extend(overrides);
        renewal.insert("createdAt".into(), json!(format_ts(now)));
        renewal.insert("modifiedAt".into(), json!(format_ts(now)));
        renewal.insert("refreshedAt".into(), json!(format_ts(now)));
        let data = self.served_policy(&renewal);
        policy.renewal = Some(renewal);
        let event = self.policy_event(st, policy_id, "policy.renewal-available", Map::new());
        Ok(ScenarioOutcome {
            changes: Vec::new(),
            event,
            data,
        })
    }

    /// The renewal term becomes the current one (the new term started): `policy.modified` with
    /// the changes. 404 when there is no renewal.
    pub fn start_renewal_term(&self, policy_id: &str) -> AxleResult<ScenarioOutcome> {
        let renewal = {
            let mut st = self.lock();
            let policy = st
                .policies
                .get_mut(policy_id)
                .ok_or_else(|| AxleError::NotFound("Policy not found".into()))?;
            policy.renewal.take().ok_or_else(|| {
                AxleError::NotFound("No renewal term available for this policy".into())
            })?
        };
        let mut fields = renewal;
        for k in ["id", "account", "createdAt", "modifiedAt", "refreshedAt"] {
            fields.remove(k);
        }
        self.modify_policy(policy_id, &Value::Object(fields))
    }

    /// Sends any event type for an account (for event types the simulator has no scenario for).
    pub fn send_account_event(
        &self,
        account_id: &str,
        event_type: &str,
        extra: Value,
    ) -> AxleResult<Option<Emitted>> {
        let st = self.lock();
        let acc = st
            .accounts
            .get(account_id)
            .ok_or_else(|| AxleError::NotFound("Account not found".into()))?;
        let extra = extra.as_object().cloned().unwrap_or_default();
        Ok(if acc.monitored {
            Some(self.emit_for_account(acc, event_type, account_id, None, extra))
        } else {
            None
        })
    }

    fn account_event(
        &self,
        acc: &Account,
        event_type: &str,
        account_id: &str,
        extra: Map<String, Value>,
    ) -> Option<Emitted> {
        if !acc.monitored {
            return None;
        }
        Some(self.emit_for_account(acc, event_type, account_id, None, extra))
    }

    fn policy_event(
        &self,
        st: &State,
        policy_id: &str,
        event_type: &str,
        extra: Map<String, Value>,
    ) -> Option<Emitted> {
        let account_id = st
            .policies
            .get(policy_id)?
            .current
            .get("account")?
            .as_str()?
            .to_owned();
        let acc = st.accounts.get(&account_id)?;
        if !acc.monitored || !connection_active(acc) {
            return None;
        }
        Some(self.emit_for_account(acc, event_type, policy_id, Some(&account_id), extra))
    }

    fn emit_for_account(
        &self,
        acc: &Account,
        event_type: &str,
        ref_id: &str,
        account_id: Option<&str>,
        extra: Map<String, Value>,
    ) -> Emitted {
        let mut data = Map::new();
        data.insert("client".into(), json!(acc.client));
        if let Some(a) = account_id {
            data.insert("account".into(), json!(a));
        }
        data.insert("ref".into(), json!(ref_id));
        data.insert("user".into(), acc.user.clone());
        data.insert("metadata".into(), acc.metadata.clone());
        data.extend(extra);
        self.emit(acc.webhook_uri.as_deref(), event_type, data)
    }

    fn emit(&self, url: Option<&str>, event_type: &str, data: Map<String, Value>) -> Emitted {
        let event_id = new_id("evt_");
        let body = json!({
            "id": event_id,
            "type": event_type,
            "data": data,
            "createdAt": self.inner.ctx.clock.now_rfc3339(),
        });
        let delivery_id = url.map(|url| {
            let mut req =
                WebhookRequest::json("axle", event_type, url, &body, self.inner.config.retry);
            req.headers
                .extend(self.inner.config.webhook_headers.iter().cloned());
            self.inner.ctx.webhooks.send(req)
        });
        Emitted {
            event_id,
            event_type: event_type.to_owned(),
            delivery_id,
            body,
        }
    }

    /// Everything the simulator holds, for `GET /_sandbox/axle/state` (tokens included: this is
    /// a sandbox).
    pub fn snapshot(&self) -> Value {
        let st = self.lock();
        let accounts: Vec<Value> = st
            .accounts
            .iter()
            .map(|(id, a)| {
                json!({
                    "id": id,
                    "accessToken": a.access_token,
                    "monitored": a.monitored,
                    "webhookUri": a.webhook_uri,
                    "user": a.user,
                    "metadata": a.metadata,
                    "account": a.json,
                })
            })
            .collect();
        let policies: Vec<Value> = st
            .policies
            .values()
            .map(|p| json!({ "current": p.current, "renewal": p.renewal }))
            .collect();
        let mut ignitions: Vec<IgnitionInfo> = st.ignitions.values().map(info).collect();
        ignitions.sort_by(|a, b| a.token.cmp(&b.token));
        json!({ "ignitions": ignitions, "accounts": accounts, "policies": policies })
    }
}

fn info(ign: &Ignition) -> IgnitionInfo {
    IgnitionInfo {
        token: ign.token.clone(),
        client: ign.client.clone(),
        status: ign.status,
        user: ign.user.clone(),
        metadata: ign.metadata.clone(),
        redirect_uri: ign.redirect_uri.clone(),
        webhook_uri: ign.webhook_uri.clone(),
        carrier: ign.carrier.clone(),
        attempts: ign.attempts,
        account: ign.account.clone(),
    }
}

fn connection_active(acc: &Account) -> bool {
    acc.json
        .get("connection")
        .and_then(|c| c.get("status"))
        .and_then(Value::as_str)
        == Some("active")
}

fn policy_ids(acc: &Account) -> Vec<String> {
    acc.json
        .get("policies")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn touch(json: &mut Map<String, Value>, now: DateTime<Utc>) {
    json.insert("modifiedAt".into(), json!(format_ts(now)));
    json.insert("refreshedAt".into(), json!(format_ts(now)));
}

/// `[{type: UPDATE|ADD|REMOVE, key, value, oldValue}]` over top-level fields, bookkeeping
/// timestamps excluded.
pub fn diff(old: &Map<String, Value>, new: &Map<String, Value>) -> Vec<Value> {
    let mut keys: Vec<&String> = old.keys().chain(new.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| {
            !matches!(
                k.as_str(),
                "id" | "createdAt" | "modifiedAt" | "refreshedAt"
            )
        })
        .filter_map(|k| {
            let (o, n) = (old.get(k), new.get(k));
            if o == n {
                return None;
            }
            let kind = match (o, n) {
                (Some(_), Some(_)) => "UPDATE",
                (None, Some(_)) => "ADD",
                _ => "REMOVE",
            };
            Some(json!({
                "type": kind,
                "key": k,
                "value": n.cloned().unwrap_or(Value::Null),
                "oldValue": o.cloned().unwrap_or(Value::Null),
            }))
        })
        .collect()
}

fn redirect_url(ign: &Ignition, params: &[(&str, &str)]) -> Option<String> {
    let mut url = url::Url::parse(ign.redirect_uri.as_deref()?).ok()?;
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in params {
            q.append_pair(k, v);
        }
        q.append_pair("client", &ign.client);
    }
    Some(url.to_string())
}

fn relink(acc: &mut Account, ign: &Ignition, now: DateTime<Utc>) {
    let was_active = connection_active(acc);
    if !was_active {
        acc.json.insert(
            "connection".into(),
            json!({ "status": "active", "updatedAt": format_ts(now) }),
        );
    }
    acc.json.insert("refreshedAt".into(), json!(format_ts(now)));
    acc.monitored = true;
    acc.client = ign.client.clone();
    acc.user = ign.user.clone();
    acc.metadata = ign.metadata.clone();
    // Monitoring events follow the latest Ignition's webhookUri; keep the old one if the new
    // session gave none.
    if ign.webhook_uri.is_some() {
        acc.webhook_uri = ign.webhook_uri.clone();
    }
}

fn create_account(
    st: &mut State,
    ign: &Ignition,
    carrier: &str,
    fixture: &fixtures::AccountFixture,
    now: DateTime<Utc>,
) -> String {
    let account_id = new_id("acc_");
    let ts = format_ts(now);
    let mut policy_list = Vec::new();
    for kind in fixture.policies {
        let policy_id = new_id("pol_");
        let property_ids: Vec<String> =
            (0..kind.property_count()).map(|_| new_id("prp_")).collect();
        let mut json = kind.build(&PolicyIds {
            policy_id: &policy_id,
            account_id: &account_id,
            carrier,
            property_ids: &property_ids,
            now,
        });
        json["createdAt"] = json!(ts);
        json["modifiedAt"] = json!(ts);
        json["refreshedAt"] = json!(ts);
        let current = match json {
            Value::Object(m) => m,
            _ => unreachable!("fixture policies are objects"),
        };
        st.policies.insert(
            policy_id.clone(),
            Policy {
                kind: *kind,
                current,
                renewal: None,
            },
        );
        policy_list.push(policy_id);
    }
    let json = json!({
        "id": account_id,
        "carrier": carrier,
        "firstName": fixture.first_name,
        "lastName": fixture.last_name,
        "email": fixture.email,
        "phone": fixture.phone,
        "policies": policy_list,
        "connection": { "status": "active", "updatedAt": ts },
        "createdAt": ts,
        "modifiedAt": ts,
        "refreshedAt": ts,
    });
    let access_token = random_secret(40);
    st.tokens.insert(access_token.clone(), account_id.clone());
    st.owners.insert(account_id.clone(), ign.client.clone());
    st.accounts.insert(
        account_id.clone(),
        Account {
            json: match json {
                Value::Object(m) => m,
                _ => unreachable!(),
            },
            access_token,
            monitored: true,
            client: ign.client.clone(),
            user: ign.user.clone(),
            metadata: ign.metadata.clone(),
            webhook_uri: ign.webhook_uri.clone(),
        },
    );
    account_id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_reports_update_add_remove() {
        let old = json!({"isActive": true, "premium": 10, "modifiedAt": "a"});
        let new = json!({"isActive": false, "policyNumber": "X", "modifiedAt": "b"});
        let changes = diff(old.as_object().unwrap(), new.as_object().unwrap());
        assert_eq!(
            changes,
            vec![
                json!({"type": "UPDATE", "key": "isActive", "value": false, "oldValue": true}),
                json!({"type": "ADD", "key": "policyNumber", "value": "X", "oldValue": null}),
                json!({"type": "REMOVE", "key": "premium", "value": null, "oldValue": 10}),
            ]
        );
    }

    #[test]
    fn ids_look_like_axle_ids() {
        let id = new_id("acc_");
        assert_eq!(id.len(), 25);
        assert!(id.starts_with("acc_"));
    }
}
