//! Canopy Connect simulator.
//!
//! * API at `{base}/canopy/api/v1.0.0` (the real one is `https://app.usecanopy.com/api/v1.0.0`):
//!   pulls, documents, monitorings, webhooks, the white-label reconnect routes, consent, carriers.
//!   Paths, JSON field names, error codes and statuses are Canopy's own (OpenAPI 3.1 document).
//! * Hosted widget (a "link") at `{base}/canopy/c/{public_alias}`, plain HTML forms; reconnect
//!   page at `{base}/canopy/c/{public_alias}/reconnect?reconnectToken=…`.
//! * Webhooks, signed with `canopy-signature`, to every registered webhook; retried per
//!   [`RetrySchedule::canopy`].
//! * Controls at `{base}/_sandbox/canopy/…` and the Rust API of [`CanopySim`].
//!
//! Test logins and fixture values: see [`fixtures`].

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::watch;

use crate::SimContext;
use crate::delivery::RetrySchedule;

mod api;
mod control;
pub mod diff;
pub mod duration;
mod engine;
mod error;
pub mod fixtures;
mod jwt;
pub mod model;
mod scenario;
pub mod signature;
mod widget;

pub use engine::CredentialState;
pub use error::{CanopyError, CanopyResult};
pub use model::{Monitoring, MonitoringEvents, Pull, Webhook};
pub use scenario::{CoveragePatch, Scenario, ScenarioAction, ScenarioOutcome, ScenarioTarget};

use engine::State;

/// Team id of the sandbox key (fixed, so that a newcomer's config works unchanged).
pub const DEFAULT_TEAM_ID: &str = "5f1a2b3c-4d5e-4f60-8a7b-9c0d1e2f3a4b";
/// Widget (link) id behind [`DEFAULT_PUBLIC_ALIAS`].
pub const DEFAULT_WIDGET_ID: &str = "0b6c8f2e-3d4a-4e5b-9c6d-7e8f9a0b1c2d";
pub const DEFAULT_CLIENT_ID: &str = "canopy-sandbox-client";
pub const DEFAULT_CLIENT_SECRET: &str = "canopy-sandbox-secret";
pub const DEFAULT_PUBLIC_ALIAS: &str = "coverwatch-sandbox";

/// A webhook registered at start, subscribed to every event type (as one set up in Canopy's
/// dashboard would be).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CanopyWebhookConfig {
    pub url: String,
    pub signing_secret: String,
}

/// One Canopy team the simulator knows besides the default one: its API key, its link (widget)
/// and its webhooks. Each team sees only its own pulls, monitorings and webhooks, and its
/// pulls' webhooks go only to its own webhooks.
#[derive(Clone, PartialEq)]
pub struct CanopyTeam {
    pub team_id: String,
    pub client_id: String,
    pub client_secret: String,
    /// The team's link: its widget lives at `/canopy/c/{public_alias}`.
    pub public_alias: String,
    pub widget_id: String,
    /// Registered from the start, subscribed to every event type.
    pub webhooks: Vec<CanopyWebhookConfig>,
}

impl std::fmt::Debug for CanopyTeam {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CanopyTeam")
            .field("team_id", &self.team_id)
            .field("client_id", &self.client_id)
            .field("public_alias", &self.public_alias)
            .finish_non_exhaustive()
    }
}

impl CanopyTeam {
    /// A team with a fresh widget id and no webhook.
    pub fn new(
        team_id: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
        public_alias: impl Into<String>,
    ) -> Self {
        Self {
            team_id: team_id.into(),
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            public_alias: public_alias.into(),
            widget_id: uuid::Uuid::new_v4().to_string(),
            webhooks: Vec::new(),
        }
    }

    pub fn with_webhook(
        mut self,
        url: impl Into<String>,
        signing_secret: impl Into<String>,
    ) -> Self {
        self.webhooks.push(CanopyWebhookConfig {
            url: url.into(),
            signing_secret: signing_secret.into(),
        });
        self
    }

    /// `Authorization: Basic …` for this team's key.
    pub fn basic_auth(&self) -> String {
        use base64::Engine;
        let raw = format!("{}:{}", self.client_id, self.client_secret);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

/// The default team's key, link and webhooks are the top-level fields; `teams` adds more.
#[derive(Clone, Debug)]
pub struct CanopySimConfig {
    pub team_id: String,
    pub client_id: String,
    pub client_secret: String,
    /// The link's public alias: the widget lives at `/canopy/c/{public_alias}`.
    pub public_alias: String,
    pub widget_id: String,
    pub webhooks: Vec<CanopyWebhookConfig>,
    /// Teams besides the default one (more can be added with [`CanopySim::add_team`]).
    pub teams: Vec<CanopyTeam>,
    /// Canopy retries a non-200 up to 10 times, `60 s + attempt^4 s` apart; tests shrink it
    /// with `time_scale`.
    pub retry: RetrySchedule,
    /// How long the data part of a pull takes (after authentication, before `POLICIES_AVAILABLE`).
    pub pull_duration: Duration,
    /// How often scheduled monitoring refreshes are looked for (real time; the due date is read
    /// from the sandbox clock).
    pub scheduler_tick: Duration,
    /// `Pull.meta_data` is typed `string|null` in the OpenAPI document but an object in its
    /// examples. `false` (default) answers an object; `true` a JSON string. Webhooks always
    /// carry an object.
    pub pull_meta_data_as_string: bool,
    /// The widget's `on_success_redirect_url`: where the hosted page sends the consumer after a
    /// successful pull.
    pub on_success_redirect_url: Option<String>,
    /// `t=` in `canopy-signature` is read from the wall clock by default, because receivers
    /// compare it with their own real clock: moving the sandbox clock a month ahead to reach a
    /// monitoring's due date must not make every signature look stale. `true` reads the sandbox
    /// clock instead.
    pub sign_with_sandbox_clock: bool,
}

impl Default for CanopySimConfig {
    fn default() -> Self {
        Self {
            team_id: DEFAULT_TEAM_ID.into(),
            client_id: DEFAULT_CLIENT_ID.into(),
            client_secret: DEFAULT_CLIENT_SECRET.into(),
            public_alias: DEFAULT_PUBLIC_ALIAS.into(),
            widget_id: DEFAULT_WIDGET_ID.into(),
            webhooks: Vec::new(),
            teams: Vec::new(),
            retry: RetrySchedule::canopy(),
            pull_duration: Duration::ZERO,
            scheduler_tick: Duration::from_millis(200),
            pull_meta_data_as_string: false,
            on_success_redirect_url: None,
            sign_with_sandbox_clock: false,
        }
    }
}

impl CanopySimConfig {
    pub fn with_team(mut self, team: CanopyTeam) -> Self {
        self.teams.push(team);
        self
    }

    /// The default team, as a [`CanopyTeam`].
    pub fn default_team(&self) -> CanopyTeam {
        CanopyTeam {
            team_id: self.team_id.clone(),
            client_id: self.client_id.clone(),
            client_secret: self.client_secret.clone(),
            public_alias: self.public_alias.clone(),
            widget_id: self.widget_id.clone(),
            webhooks: self.webhooks.clone(),
        }
    }

    pub fn with_webhook(
        mut self,
        url: impl Into<String>,
        signing_secret: impl Into<String>,
    ) -> Self {
        self.webhooks.push(CanopyWebhookConfig {
            url: url.into(),
            signing_secret: signing_secret.into(),
        });
        self
    }
}

/// How outgoing webhooks are signed; anything but `Valid` exercises a receiver's rejection path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum SignatureMode {
    #[default]
    Valid,
    /// Signed with a secret the receiver does not know.
    WrongSecret,
    /// A correct signature over a timestamp this many seconds in the past.
    Stale { seconds: i64 },
    /// No `canopy-signature` header.
    Missing,
}

/// How a retried webhook is signed. Canopy's "Verifying webhook signatures" page does not say
/// whether a retry is signed afresh, so a receiver must cope with either.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetrySigning {
    /// Every attempt carries the time it is sent.
    #[default]
    Fresh,
    /// Every retry carries the first attempt's `t`, which is then as old as Canopy's schedule
    /// ("Webhook retries": `60 s + attempt^4 s` apart) makes it, whatever `time_scale` the
    /// simulator runs its retries at.
    Original,
}

/// What a consumer types into the widget (or a white-label client sends).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConnectRequest {
    /// A carrier id of [`fixtures::carriers`] (`statefarm`, …).
    pub carrier: String,
    pub username: String,
    pub password: String,
    /// Arrives as `Pull.meta_data` and in every webhook's `meta_data`.
    #[serde(default)]
    pub meta_data: Value,
}

impl ConnectRequest {
    pub fn new(carrier: &str, username: &str, password: &str) -> Self {
        Self {
            carrier: carrier.into(),
            username: username.into(),
            password: password.into(),
            meta_data: Value::Object(Default::default()),
        }
    }

    /// `user_good` / `pass_good` at State Farm.
    pub fn good() -> Self {
        Self::new("statefarm", "user_good", fixtures::GOOD_PASSWORD)
    }

    pub fn with_meta(mut self, meta_data: Value) -> Self {
        self.meta_data = meta_data;
        self
    }
}

/// `GET …/monitorings/{id}/reconnectToken`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReconnectInfo {
    pub pull_id: String,
    pub reconnect_url: String,
    pub reconnect_token: String,
}

/// The Canopy simulator. Cheap to clone; every clone shares one state.
#[derive(Clone)]
pub struct CanopySim {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: CanopySimConfig,
    ctx: SimContext,
    /// The default team first, then the configured and added ones.
    teams: Mutex<Vec<CanopyTeam>>,
    /// Key of `pull-jwt` tokens and of signed document URLs.
    key: [u8; 32],
    state: Mutex<State>,
    /// Bumped on every pull state change, so waiters need not poll.
    changed: watch::Sender<u64>,
    /// While true, pulls stop before their data arrives (to observe `CURRENTLY_REFRESHING`).
    hold: watch::Sender<bool>,
}

impl std::fmt::Debug for CanopySim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CanopySim")
            .field("team_id", &self.inner.cfg.team_id)
            .finish_non_exhaustive()
    }
}

impl CanopySim {
    /// Builds the simulator and, when called inside a tokio runtime, starts its monitoring
    /// scheduler (which stops when the last clone is dropped).
    pub fn new(config: CanopySimConfig, ctx: SimContext) -> Self {
        let mut teams = vec![config.default_team()];
        teams.extend(config.teams.iter().cloned());
        let state = State::new(&teams);
        let inner = Arc::new(Inner {
            teams: Mutex::new(teams),
            key: rand::random(),
            state: Mutex::new(state),
            changed: watch::channel(0).0,
            hold: watch::channel(false).0,
            cfg: config,
            ctx,
        });
        let sim = Self { inner };
        if tokio::runtime::Handle::try_current().is_ok() {
            engine::spawn_scheduler(&sim);
        }
        sim
    }

    pub fn config(&self) -> &CanopySimConfig {
        &self.inner.cfg
    }

    pub fn team_id(&self) -> &str {
        &self.inner.cfg.team_id
    }

    /// Makes another team known, at run time, with its webhooks registered. A team id already
    /// known is replaced (its key rotated), keeping its pulls and monitorings.
    pub fn add_team(&self, team: CanopyTeam) {
        let hooks: Vec<Webhook> = team
            .webhooks
            .iter()
            .map(|w| engine::team_webhook(&team.team_id, &w.url, &w.signing_secret))
            .collect();
        {
            let mut teams = self.teams_lock();
            teams.retain(|t| t.team_id != team.team_id);
            teams.push(team);
        }
        self.lock().webhooks.extend(hooks);
    }

    /// Every team the simulator knows, the default one first.
    pub fn teams(&self) -> Vec<CanopyTeam> {
        self.teams_lock().clone()
    }

    fn teams_lock(&self) -> MutexGuard<'_, Vec<CanopyTeam>> {
        self.inner.teams.lock().expect("canopy teams poisoned")
    }

    pub(crate) fn team(&self, team_id: &str) -> Option<CanopyTeam> {
        self.teams_lock()
            .iter()
            .find(|t| t.team_id == team_id)
            .cloned()
    }

    pub(crate) fn team_for_alias(&self, alias: &str) -> Option<CanopyTeam> {
        self.teams_lock()
            .iter()
            .find(|t| t.public_alias == alias)
            .cloned()
    }

    /// Every API call answered, oldest first, with the client and team ids it carried.
    pub fn calls(&self) -> Vec<crate::ApiCall> {
        self.inner.ctx.calls.of("canopy")
    }

    /// `{base}/canopy/api/v1.0.0`: what replaces `https://app.usecanopy.com/api/v1.0.0`.
    pub fn api_base_url(&self) -> String {
        format!("{}/canopy/api/v1.0.0", self.inner.ctx.base_url)
    }

    /// `{base}/canopy/c/{public_alias}`: what replaces `https://app.usecanopy.com/c/{alias}`.
    pub fn widget_url(&self) -> String {
        format!(
            "{}/canopy/c/{}",
            self.inner.ctx.base_url, self.inner.cfg.public_alias
        )
    }

    /// The widget URL carrying `meta_data` (an object of flat values) as Canopy documents it
    /// for a link URL: one `ccmeta-KEY=VALUE` parameter per key. Values that are not strings
    /// travel as their JSON text and come back as strings, as they would from Canopy.
    pub fn link_url(&self, meta_data: &Value) -> String {
        let mut url = url::Url::parse(&self.widget_url()).expect("widget url parses");
        if let Value::Object(meta) = meta_data {
            let mut query = url.query_pairs_mut();
            for (key, value) in meta {
                let value = match value {
                    Value::String(text) => text.clone(),
                    other => other.to_string(),
                };
                query.append_pair(&format!("{}{key}", widget::META_QUERY_PREFIX), &value);
            }
        }
        url.to_string()
    }

    /// `Authorization: Basic …` for the default team's key.
    pub fn basic_auth(&self) -> String {
        self.inner.cfg.default_team().basic_auth()
    }

    // ---- the consumer's side -------------------------------------------------------------

    /// Starts a pull the way the widget does after the consumer submits a login: creates the
    /// pull, authenticates (synchronously; AUTH_STATUS / ERROR webhooks go out) and, on
    /// success, lets the data arrive in the background (a tokio task: call it inside a
    /// runtime). Returns the `pull_id`.
    pub fn connect(&self, req: ConnectRequest) -> CanopyResult<String> {
        self.connect_team(&self.inner.cfg.team_id, req)
    }

    /// [`CanopySim::connect`] on another team's link.
    pub fn connect_team(&self, team_id: &str, req: ConnectRequest) -> CanopyResult<String> {
        let team = self
            .team(team_id)
            .ok_or_else(|| CanopyError::Control(format!("unknown team {team_id}")))?;
        self.start_pull(
            &team,
            &req.carrier,
            req.meta_data,
            &req.username,
            &req.password,
        )
    }

    /// Signs in again on a `NOT_AUTHENTICATED` pull (a retry, or a monitoring reconnect), as
    /// `POST /widget/pull/{pullId}/connect` does.
    pub fn reconnect(
        &self,
        pull_id: &str,
        carrier: &str,
        username: &str,
        password: &str,
    ) -> CanopyResult<()> {
        self.connect_pull(pull_id, carrier, username, password)
    }

    /// A `pull-jwt` for this pull (as the widget session or `POST /widget/pull/reconnectToken`
    /// would hand out), valid 24 h on the sandbox clock.
    pub fn pull_jwt(&self, pull_id: &str) -> String {
        self.issue_jwt(pull_id)
    }

    /// Picks an MFA option, as `POST /widget/pull/{pullId}/idvoptions` does.
    pub fn select_mfa_option(&self, pull_id: &str, option_key: &str) -> CanopyResult<()> {
        self.idv_option(pull_id, option_key)
    }

    /// Submits an MFA code, as `POST /widget/pull/{pullId}/idv` does.
    pub fn submit_mfa_code(&self, pull_id: &str, code: &str) -> CanopyResult<()> {
        self.idv_code(pull_id, code)
    }

    /// Connects `user_good` (or any login that needs no MFA) and waits for `SUCCESS`.
    pub async fn link(&self, req: ConnectRequest, timeout: Duration) -> CanopyResult<Pull> {
        let pull_id = self.connect(req)?;
        self.wait_for_pull(&pull_id, timeout, |p| {
            model::pull_status::is_terminal(&p.status)
        })
        .await
    }

    /// The pull as `GET /teams/{teamId}/pulls/{pullId}` returns it.
    pub fn pull(&self, pull_id: &str) -> Option<Pull> {
        self.lock().pulls.get(pull_id).map(|r| r.pull.clone())
    }

    pub fn pull_ids(&self) -> Vec<String> {
        self.lock().pull_order.clone()
    }

    /// Waits until `check` returns `Some`; it is re-run whenever a pull or monitoring changes.
    pub async fn wait_for<T>(
        &self,
        timeout: Duration,
        what: &str,
        mut check: impl FnMut(&CanopySim) -> Option<T>,
    ) -> CanopyResult<T> {
        let mut rx = self.inner.changed.subscribe();
        let wait = async {
            loop {
                rx.borrow_and_update();
                if let Some(found) = check(self) {
                    return found;
                }
                if rx.changed().await.is_err() {
                    futures::future::pending::<()>().await;
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| CanopyError::Timeout(what.to_owned()))
    }

    /// Waits until the pull satisfies `pred`.
    pub async fn wait_for_pull(
        &self,
        pull_id: &str,
        timeout: Duration,
        pred: impl Fn(&Pull) -> bool,
    ) -> CanopyResult<Pull> {
        self.wait_for(timeout, &format!("pull {pull_id}"), |sim| {
            sim.pull(pull_id).filter(|p| pred(p))
        })
        .await
    }

    /// Waits until the pull has the given status.
    pub async fn wait_for_status(
        &self,
        pull_id: &str,
        status: &str,
        timeout: Duration,
    ) -> CanopyResult<Pull> {
        self.wait_for_pull(pull_id, timeout, |p| p.status == status)
            .await
    }

    // ---- the integrator's side (same rules as the HTTP API) -------------------------------

    /// `POST /teams/{teamId}/monitorings`.
    pub fn create_monitoring(&self, pull_id: &str, interval: &str) -> CanopyResult<Monitoring> {
        self.create_monitoring_with(pull_id, interval, None, None)
    }

    pub fn monitoring(&self, monitoring_id: &str) -> Option<Monitoring> {
        self.lock()
            .monitorings
            .get(monitoring_id)
            .map(|m| m.monitoring.clone())
    }

    pub fn monitorings(&self) -> Vec<Monitoring> {
        let st = self.lock();
        st.monitoring_order
            .iter()
            .filter_map(|id| st.monitorings.get(id))
            .map(|m| m.monitoring.clone())
            .collect()
    }

    /// Every pull of a monitoring, oldest first (the initial pull, then each refresh).
    pub fn monitoring_pull_ids(&self, monitoring_id: &str) -> Vec<String> {
        self.lock()
            .monitorings
            .get(monitoring_id)
            .map(|m| m.pull_ids.clone())
            .unwrap_or_default()
    }

    /// `POST /teams/{teamId}/monitorings/{id}/refresh`: returns the new pull's id.
    pub fn refresh_monitoring(&self, monitoring_id: &str) -> CanopyResult<String> {
        self.refresh(monitoring_id, false)
    }

    /// `DELETE /teams/{teamId}/monitorings/{id}`.
    pub fn stop_monitoring(&self, monitoring_id: &str) -> CanopyResult<Monitoring> {
        self.stop(monitoring_id)
    }

    /// `GET /teams/{teamId}/monitorings/{id}/reconnectToken`.
    pub fn reconnect_token(&self, monitoring_id: &str) -> CanopyResult<ReconnectInfo> {
        self.mint_reconnect_token(monitoring_id)
    }

    /// `POST /widget/pull/reconnectToken`: `(pull_id, pull_jwt)`.
    pub fn redeem_reconnect_token(&self, token: &str) -> CanopyResult<(String, String)> {
        self.redeem(token)
    }

    /// `GET /teams/{teamId}/monitorings/{id}/events`.
    pub fn monitoring_events(&self, monitoring_id: &str) -> CanopyResult<MonitoringEvents> {
        self.events_of(monitoring_id)
    }

    /// Refreshes every active monitoring whose `next_pull_date` has passed on the sandbox clock
    /// (the scheduler does this on its own every `scheduler_tick`). Returns the new pull ids.
    pub fn run_due_monitorings(&self) -> Vec<String> {
        self.run_due()
    }

    /// The default team's webhooks, as `GET /teams/{teamId}/webhooks` lists them.
    pub fn webhooks(&self) -> Vec<Webhook> {
        self.team_webhooks(&self.inner.cfg.team_id)
    }

    /// A team's webhooks, as `GET /teams/{teamId}/webhooks` lists them.
    pub fn team_webhooks(&self, team_id: &str) -> Vec<Webhook> {
        self.lock()
            .webhooks
            .iter()
            .filter(|w| w.team_id == team_id)
            .cloned()
            .collect()
    }

    /// Registers a webhook (as the dashboard would), subscribed to `event_types` (all when
    /// empty). Returns it with its id and signing secret.
    pub fn register_webhook(
        &self,
        url: &str,
        signing_secret: Option<&str>,
        event_types: &[&str],
    ) -> Webhook {
        let types: Vec<String> = if event_types.is_empty() {
            model::event_type::ALL
                .iter()
                .map(|s| s.to_string())
                .collect()
        } else {
            event_types.iter().map(|s| s.to_string()).collect()
        };
        let hook = engine::new_webhook(
            &self.inner.cfg.team_id,
            url,
            signing_secret.map(str::to_owned),
            types,
        );
        self.lock().webhooks.push(hook.clone());
        hook
    }

    // ---- scenarios and faults --------------------------------------------------------------

    /// Changes what the carrier holds for an account (and optionally refreshes its
    /// monitorings right away). See [`Scenario`].
    pub fn apply(&self, scenario: Scenario) -> CanopyResult<ScenarioOutcome> {
        self.apply_scenario(scenario)
    }

    /// Sends one webhook of any type for a pull, with the envelope built from the pull.
    /// `data: None` builds the usual data for that event type (an AUTH_STATUS gets the next
    /// `sequence`; a MONITORING_RECONNECT a fresh reconnect token).
    pub fn send_event(
        &self,
        pull_id: &str,
        event_type: &str,
        data: Option<Value>,
    ) -> CanopyResult<()> {
        self.send_custom_event(pull_id, event_type, data, None)
    }

    /// While `true`, pulls wait before their data arrives (they stay `PULLING_DATA`).
    pub fn hold_pulls(&self, hold: bool) {
        self.inner.hold.send_replace(hold);
    }

    pub fn set_signature_mode(&self, mode: SignatureMode) {
        self.lock().signature_mode = mode;
    }

    pub fn set_retry_signing(&self, signing: RetrySigning) {
        self.lock().retry_signing = signing;
    }

    /// Runs later webhooks' retries at this fraction of Canopy's schedule (`None`: as
    /// configured), so a test can reach the fifth retry (about 21 minutes on Canopy's clock)
    /// in well under a second.
    pub fn set_retry_time_scale(&self, scale: Option<f64>) {
        self.lock().retry_time_scale = scale;
    }

    /// Accounts the sandbox knows, by `account_identifier`.
    pub fn account_ids(&self) -> Vec<String> {
        let st = self.lock();
        let mut ids: Vec<_> = st.accounts.keys().cloned().collect();
        ids.sort();
        ids
    }

    pub fn credential_state(&self, account_identifier: &str) -> Option<CredentialState> {
        self.lock()
            .accounts
            .get(account_identifier)
            .map(|a| a.credentials)
    }

    /// Forgets every pull, account, monitoring and token, and the webhooks registered through
    /// the API (the configured ones, and those of added teams, stay).
    pub fn reset(&self) {
        let state = State::new(&self.teams_lock());
        *self.lock() = state;
        self.inner.hold.send_replace(false);
        self.bump();
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().expect("canopy state poisoned")
    }

    fn bump(&self) {
        self.inner.changed.send_modify(|v| *v += 1);
    }
}

/// Mounted under `/canopy`: the API at `/api/v1.0.0/…`, the widget at `/c/{alias}…`.
pub fn router(state: CanopySim) -> Router {
    api::router(state.clone()).merge(widget::router(state))
}

/// Mounted under `/_sandbox/canopy`.
pub fn control_router(state: CanopySim) -> Router {
    control::router(state)
}
