//! The simulator's state and its rules: how a pull moves through authentication and data, how
//! a monitoring refreshes (a NEW pull each time, same `account_identifier`), how a reconnect
//! works, and which webhooks each step sends.
//!
//! Webhooks are queued while the state lock is held, so their order is the order of the state
//! changes even when several requests race.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::duration::IsoDuration;
use super::fixtures::{self, AccountData, LoginOutcome, TestLogin};
use super::model::{
    Address, Carrier, Document, Driver, Monitoring, MonitoringEvents, Policy, Pull, Webhook,
    WebhookBody, WebhookMonitoring, event_type as ev, pull_status as ps,
};
use super::{
    CanopyError, CanopyResult, CanopySim, CanopyTeam, ReconnectInfo, RetrySigning, SignatureMode,
    jwt, signature,
};
use crate::clock::format_ts;
use crate::delivery::{Signer, WebhookRequest};

/// The 30-day floor on monitoring intervals and on `next_pull_date`.
pub const MIN_INTERVAL_DAYS: i64 = 30;

/// Whether the carrier still lets the sandbox in with the stored credentials.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialState {
    Valid,
    /// The password changed: the next refresh needs the consumer (MONITORING_RECONNECT).
    Expired,
    /// The carrier wants MFA again: the next refresh needs the consumer, and the reconnect goes
    /// through MFA whatever the login.
    MfaRequired,
}

pub(crate) struct Account {
    pub account_identifier: String,
    pub carrier: Carrier,
    pub login: TestLogin,
    pub data: AccountData,
    pub credentials: CredentialState,
    /// `PROVIDER_ERROR` or `INTERNAL_ERROR` for the next refresh only.
    pub next_refresh_error: Option<&'static str>,
}

pub(crate) struct PullRecord {
    /// `meta_data` is kept as an object; the API layer turns it into a string if configured.
    pub pull: Pull,
    pub auth_sequence: u64,
    pub mfa_options: Option<Map<String, Value>>,
    /// The account a sign-in reached while MFA is pending.
    pub pending_account: Option<String>,
    pub monitoring_id: Option<String>,
    /// A monitoring refresh that needs the consumer: only the monitored account may sign in.
    pub reconnecting: bool,
    pub login_error_message: Option<String>,
    /// Sign-in attempts that failed on this pull (the hosted page words its prompt with it).
    pub failed_logins: u32,
}

pub(crate) struct MonitoringRecord {
    pub monitoring: Monitoring,
    pub interval: IsoDuration,
    pub initial_pull_id: String,
    /// Oldest first: the initial pull, then each refresh.
    pub pull_ids: Vec<String>,
    pub account_identifier: String,
}

pub(crate) struct ReconnectTokenRecord {
    pub monitoring_id: String,
    pub pull_id: String,
}

pub(crate) struct State {
    pub accounts: HashMap<String, Account>,
    pub pulls: HashMap<String, PullRecord>,
    pub pull_order: Vec<String>,
    pub monitorings: HashMap<String, MonitoringRecord>,
    pub monitoring_order: Vec<String>,
    pub webhooks: Vec<Webhook>,
    pub reconnect_tokens: HashMap<String, ReconnectTokenRecord>,
    pub consent_tokens: HashSet<String>,
    pub signature_mode: SignatureMode,
    pub retry_signing: RetrySigning,
    pub retry_time_scale: Option<f64>,
}

impl State {
    /// A fresh state with the teams' configured webhooks registered.
    pub fn new(teams: &[CanopyTeam]) -> Self {
        Self {
            accounts: HashMap::new(),
            pulls: HashMap::new(),
            pull_order: Vec::new(),
            monitorings: HashMap::new(),
            monitoring_order: Vec::new(),
            webhooks: teams
                .iter()
                .flat_map(|t| {
                    t.webhooks
                        .iter()
                        .map(|w| team_webhook(&t.team_id, &w.url, &w.signing_secret))
                })
                .collect(),
            reconnect_tokens: HashMap::new(),
            consent_tokens: HashSet::new(),
            signature_mode: SignatureMode::Valid,
            retry_signing: RetrySigning::Fresh,
            retry_time_scale: None,
        }
    }

    pub fn pull_mut(&mut self, pull_id: &str) -> CanopyResult<&mut PullRecord> {
        self.pulls
            .get_mut(pull_id)
            .ok_or_else(CanopyError::not_found)
    }
}

/// Where a new pull belongs: its team and the link (widget) it was made on.
pub(crate) struct PullTeam {
    team_id: String,
    widget_id: String,
    public_alias: String,
}

impl PullTeam {
    fn of(pull: &Pull) -> Self {
        Self {
            team_id: pull.team_id.clone(),
            widget_id: pull.widget_id.clone(),
            public_alias: pull.public_alias.clone(),
        }
    }
}

impl From<&CanopyTeam> for PullTeam {
    fn from(team: &CanopyTeam) -> Self {
        Self {
            team_id: team.team_id.clone(),
            widget_id: team.widget_id.clone(),
            public_alias: team.public_alias.clone(),
        }
    }
}

/// A webhook configured for a team (as one set up in Canopy's dashboard would be): subscribed
/// to every event type.
pub(crate) fn team_webhook(team_id: &str, url: &str, signing_secret: &str) -> Webhook {
    let all: Vec<String> = ev::ALL.iter().map(|s| s.to_string()).collect();
    new_webhook(team_id, url, Some(signing_secret.to_owned()), all)
}

/// A webhook with a fresh id and, unless given, a fresh base64-looking signing secret.
pub(crate) fn new_webhook(
    team_id: &str,
    url: &str,
    signing_secret: Option<String>,
    event_types: Vec<String>,
) -> Webhook {
    use base64::Engine;
    let secret = signing_secret.unwrap_or_else(|| {
        let bytes: Vec<u8> = (0..48).map(|_| rand::random::<u8>()).collect();
        base64::engine::general_purpose::STANDARD.encode(bytes)
    });
    Webhook {
        team_id: team_id.to_owned(),
        webhook_id: uuid::Uuid::new_v4().to_string(),
        signing_secret: secret,
        url: url.into(),
        is_sandbox: true,
        is_active: true,
        event_types,
    }
}

pub(crate) fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

pub(crate) fn parse_ts(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

pub(crate) fn spawn_scheduler(sim: &CanopySim) {
    let weak = Arc::downgrade(&sim.inner);
    let tick = sim
        .inner
        .cfg
        .scheduler_tick
        .max(std::time::Duration::from_millis(10));
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(tick).await;
            let Some(inner) = weak.upgrade() else { break };
            CanopySim { inner }.run_due();
        }
    });
}

/// Id fields that a pull gets fresh copies of (consistently: a driver keeps one id on the pull
/// and on each vehicle).
const ID_KEYS: [&str; 10] = [
    "address_id",
    "driver_id",
    "vehicle_id",
    "vehicle_coverage_id",
    "policy_id",
    "dwelling_id",
    "dwelling_coverage_id",
    "mortgagee_id",
    "named_insured_id",
    "additional_interest_id",
];

fn remap_ids(v: &mut Value, map: &mut HashMap<String, String>) {
    match v {
        Value::Object(o) => {
            for (k, val) in o.iter_mut() {
                if ID_KEYS.contains(&k.as_str())
                    && let Value::String(s) = val
                {
                    *s = map.entry(s.clone()).or_insert_with(new_id).clone();
                } else {
                    remap_ids(val, map);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| remap_ids(x, map)),
        _ => {}
    }
}

impl CanopySim {
    fn now(&self) -> DateTime<Utc> {
        self.inner.ctx.clock.now()
    }

    pub(crate) fn base_url(&self) -> &str {
        &self.inner.ctx.base_url
    }

    pub(crate) fn issue_jwt(&self, pull_id: &str) -> String {
        let team = self
            .lock()
            .pulls
            .get(pull_id)
            .map(|r| r.pull.team_id.clone())
            .unwrap_or_else(|| self.inner.cfg.team_id.clone());
        jwt::issue(
            &self.inner.key,
            pull_id,
            &team,
            self.inner.ctx.clock.unix_seconds(),
        )
    }

    /// The team a pull belongs to.
    pub(crate) fn pull_team(&self, pull_id: &str) -> Option<String> {
        self.lock()
            .pulls
            .get(pull_id)
            .map(|r| r.pull.team_id.clone())
    }

    /// The team a monitoring belongs to: its initial pull's.
    pub(crate) fn monitoring_team(&self, monitoring_id: &str) -> Option<String> {
        let st = self.lock();
        st.monitorings
            .get(monitoring_id)
            .and_then(|m| st.pulls.get(&m.initial_pull_id))
            .map(|r| r.pull.team_id.clone())
    }

    /// The team whose monitoring a reconnect token was minted for.
    pub(crate) fn reconnect_token_team(&self, token: &str) -> Option<String> {
        let st = self.lock();
        let pull_id = &st.reconnect_tokens.get(token)?.pull_id;
        st.pulls.get(pull_id).map(|r| r.pull.team_id.clone())
    }

    /// The pull a `pull-jwt` was issued for.
    pub(crate) fn verify_jwt(&self, token: &str) -> Option<String> {
        jwt::verify(&self.inner.key, token, self.inner.ctx.clock.unix_seconds())
    }

    pub(crate) fn file_signature(&self, pull_id: &str, document_id: &str, expires: i64) -> String {
        signature::compute(
            &hex::encode(self.inner.key),
            expires,
            format!("{pull_id}/{document_id}").as_bytes(),
        )
    }

    pub(crate) fn with_state<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.lock())
    }

    // ---- pulls: authentication --------------------------------------------------------------

    pub(crate) fn start_pull(
        &self,
        team: &CanopyTeam,
        carrier_id: &str,
        meta: Value,
        username: &str,
        password: &str,
    ) -> CanopyResult<String> {
        let carrier =
            fixtures::carrier(carrier_id).ok_or(CanopyError::bad_request("UNSUPPORTED_INSURER"))?;
        let meta = match meta {
            Value::Object(_) => meta,
            _ => Value::Object(Map::new()),
        };
        let mut st = self.lock();
        let pull_id = self.new_pull(&mut st, &PullTeam::from(team), &carrier, meta, None, None);
        self.sign_in(&mut st, &pull_id, &carrier, username, password);
        drop(st);
        self.bump();
        Ok(pull_id)
    }

    fn new_pull(
        &self,
        st: &mut State,
        team: &PullTeam,
        carrier: &Carrier,
        meta: Value,
        account_identifier: Option<String>,
        monitoring_id: Option<String>,
    ) -> String {
        let pull_id = new_id();
        let pull = Pull {
            pull_id: pull_id.clone(),
            status: ps::STARTED.into(),
            account_identifier,
            insurance_provider_name: Some(carrier.carrier_id.clone()),
            insurance_provider_friendly_name: Some(carrier.name.clone()),
            team_id: team.team_id.clone(),
            widget_id: team.widget_id.clone(),
            meta_data: meta,
            created_at: format_ts(self.now()),
            public_alias: team.public_alias.clone(),
            public_url: format!("{}/canopy/c/{}", self.base_url(), team.public_alias),
            no_policies: true,
            no_drivers: true,
            no_documents: true,
            no_claims: true,
            no_loss_events: true,
            pull_type: "PULLING_DATA".into(),
            policy_check_status: "NONE".into(),
            ..Pull::default()
        };
        st.pulls.insert(
            pull_id.clone(),
            PullRecord {
                pull,
                auth_sequence: 0,
                mfa_options: None,
                pending_account: None,
                monitoring_id,
                reconnecting: false,
                login_error_message: None,
                failed_logins: 0,
            },
        );
        st.pull_order.push(pull_id.clone());
        pull_id
    }

    /// `POST /widget/pull/{pullId}/connect`: a new sign-in on a `NOT_AUTHENTICATED` pull.
    pub(crate) fn connect_pull(
        &self,
        pull_id: &str,
        carrier_id: &str,
        username: &str,
        password: &str,
    ) -> CanopyResult<()> {
        let carrier =
            fixtures::carrier(carrier_id).ok_or(CanopyError::bad_request("UNSUPPORTED_INSURER"))?;
        let mut st = self.lock();
        let rec = st.pull_mut(pull_id)?;
        if rec.pull.status != ps::NOT_AUTHENTICATED {
            return Err(CanopyError::bad_request("INVALID_ACTION"));
        }
        self.sign_in(&mut st, pull_id, &carrier, username, password);
        drop(st);
        self.bump();
        Ok(())
    }

    fn sign_in(
        &self,
        st: &mut State,
        pull_id: &str,
        carrier: &Carrier,
        username: &str,
        password: &str,
    ) {
        let Some(rec) = st.pulls.get_mut(pull_id) else {
            return;
        };
        let team = rec.pull.team_id.clone();
        let reconnecting = rec.reconnecting;
        if reconnecting
            && rec.pull.insurance_provider_name.as_deref() != Some(carrier.carrier_id.as_str())
        {
            self.auth_state(
                st,
                pull_id,
                ps::NOT_AUTHENTICATED,
                Some(fixtures::WRONG_ACCOUNT_MESSAGE.into()),
            );
            return;
        }
        rec.pull.insurance_provider_name = Some(carrier.carrier_id.clone());
        rec.pull.insurance_provider_friendly_name = Some(carrier.name.clone());
        let expected_account = rec.pull.account_identifier.clone();
        match fixtures::classify_login(username, password) {
            LoginOutcome::NotAuthenticated {
                login_error_message,
            } => {
                self.auth_state(st, pull_id, ps::NOT_AUTHENTICATED, login_error_message);
            }
            LoginOutcome::ProviderError => self.fail(st, pull_id, ps::PROVIDER_ERROR),
            LoginOutcome::InternalError => self.fail(st, pull_id, ps::INTERNAL_ERROR),
            LoginOutcome::Account(login) => {
                let account_id =
                    fixtures::account_identifier(&team, &carrier.carrier_id, login.username());
                if reconnecting && expected_account.as_deref() != Some(account_id.as_str()) {
                    self.auth_state(
                        st,
                        pull_id,
                        ps::NOT_AUTHENTICATED,
                        Some(fixtures::WRONG_ACCOUNT_MESSAGE.into()),
                    );
                    return;
                }
                let now = self.now();
                let account = st
                    .accounts
                    .entry(account_id.clone())
                    .or_insert_with(|| Account {
                        account_identifier: account_id.clone(),
                        carrier: carrier.clone(),
                        login,
                        data: fixtures::account_data(login, carrier, now),
                        credentials: CredentialState::Valid,
                        next_refresh_error: None,
                    });
                let needs_mfa = matches!(login, TestLogin::Mfa | TestLogin::OptionlessMfa)
                    || account.credentials == CredentialState::MfaRequired;
                if !needs_mfa {
                    self.auth_success(st, pull_id, &account_id);
                    return;
                }
                let rec = st.pulls.get_mut(pull_id).expect("pull exists");
                rec.pending_account = Some(account_id);
                rec.pull.encountered_mfa = true;
                if login == TestLogin::OptionlessMfa {
                    rec.mfa_options = None;
                    self.auth_state(st, pull_id, ps::IDENTITY_VERIFICATION, None);
                } else {
                    rec.mfa_options = Some(fixtures::mfa_options());
                    self.auth_state(st, pull_id, ps::IDENTITY_VERIFICATION_OPTIONS, None);
                }
            }
        }
    }

    /// `POST /widget/pull/{pullId}/idvoptions`.
    pub(crate) fn idv_option(&self, pull_id: &str, option_key: &str) -> CanopyResult<()> {
        let mut st = self.lock();
        let rec = st.pull_mut(pull_id)?;
        if rec.pull.status != ps::IDENTITY_VERIFICATION_OPTIONS {
            return Err(CanopyError::bad_request("INVALID_ACTION"));
        }
        if !rec
            .mfa_options
            .as_ref()
            .is_some_and(|o| o.contains_key(option_key))
        {
            return Err(CanopyError::bad_request("INVALID_INPUT"));
        }
        self.auth_state(&mut st, pull_id, ps::IDENTITY_VERIFICATION, None);
        drop(st);
        self.bump();
        Ok(())
    }

    /// `POST /widget/pull/{pullId}/idv`.
    pub(crate) fn idv_code(&self, pull_id: &str, code: &str) -> CanopyResult<()> {
        let mut st = self.lock();
        let rec = st.pull_mut(pull_id)?;
        if rec.pull.status != ps::IDENTITY_VERIFICATION {
            return Err(CanopyError::bad_request("INVALID_ACTION"));
        }
        let code = code.trim();
        if code.is_empty() {
            return Err(CanopyError::bad_request("INVALID_INPUT"));
        }
        match code {
            fixtures::BAD_MFA_CODE => {
                self.auth_state(&mut st, pull_id, ps::NOT_AUTHENTICATED, None)
            }
            fixtures::MESSAGE_MFA_CODE => self.auth_state(
                &mut st,
                pull_id,
                ps::NOT_AUTHENTICATED,
                Some(fixtures::MFA_EXPIRED_MESSAGE.into()),
            ),
            _ => {
                let account = rec
                    .pending_account
                    .clone()
                    .ok_or(CanopyError::bad_request("INVALID_ACTION"))?;
                self.auth_success(&mut st, pull_id, &account);
            }
        }
        drop(st);
        self.bump();
        Ok(())
    }

    /// Moves the pull to an authentication state and sends AUTH_STATUS with the next sequence.
    fn auth_state(
        &self,
        st: &mut State,
        pull_id: &str,
        status: &str,
        login_error_message: Option<String>,
    ) {
        let Some(rec) = st.pulls.get_mut(pull_id) else {
            return;
        };
        rec.pull.status = status.into();
        rec.login_error_message = login_error_message;
        if status == ps::NOT_AUTHENTICATED {
            rec.failed_logins += 1;
            rec.pending_account = None;
            rec.mfa_options = None;
        }
        rec.auth_sequence += 1;
        let data = auth_status_data(rec, status);
        let seq = rec.auth_sequence;
        self.emit(st, pull_id, ev::AUTH_STATUS, data, Some(seq), None);
    }

    fn fail(&self, st: &mut State, pull_id: &str, error_type: &'static str) {
        let Some(rec) = st.pulls.get_mut(pull_id) else {
            return;
        };
        rec.pull.status = error_type.into();
        self.emit(
            st,
            pull_id,
            ev::ERROR,
            json!({ "type": error_type }),
            None,
            None,
        );
    }

    fn auth_success(&self, st: &mut State, pull_id: &str, account_id: &str) {
        if let Some(account) = st.accounts.get_mut(account_id) {
            account.credentials = CredentialState::Valid;
        }
        let Some(rec) = st.pulls.get_mut(pull_id) else {
            return;
        };
        rec.pull.account_identifier = Some(account_id.to_owned());
        rec.pending_account = None;
        rec.mfa_options = None;
        rec.login_error_message = None;
        rec.reconnecting = false;
        // The pull goes on to fetch data; AUTH_STATUS carries the pull's status at that moment.
        rec.pull.status = ps::PULLING_DATA.into();
        rec.auth_sequence += 1;
        let seq = rec.auth_sequence;
        let data = json!({ "auth_status": ps::SUCCESS, "login_error_message": null });
        self.emit(st, pull_id, ev::AUTH_STATUS, data, Some(seq), None);
        self.spawn_data_phase(pull_id.to_owned());
    }

    fn spawn_data_phase(&self, pull_id: String) {
        let sim = self.clone();
        tokio::spawn(async move {
            let delay = sim.inner.cfg.pull_duration;
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let mut hold = sim.inner.hold.subscribe();
            let _ = hold.wait_for(|h| !*h).await;
            let mut st = sim.lock();
            sim.complete_pull(&mut st, &pull_id);
            drop(st);
            sim.bump();
        });
    }

    /// The data part of a pull: copies what the carrier holds into the pull and announces it.
    fn complete_pull(&self, st: &mut State, pull_id: &str) {
        let Some(rec) = st.pulls.get(pull_id) else {
            return;
        };
        if rec.pull.status != ps::PULLING_DATA {
            return;
        }
        let Some(account_id) = rec.pull.account_identifier.clone() else {
            return;
        };
        let monitoring_id = rec.monitoring_id.clone();
        let is_refresh = monitoring_id
            .as_ref()
            .and_then(|m| st.monitorings.get(m))
            .is_some_and(|m| m.initial_pull_id != pull_id);
        let Some(account) = st.accounts.get_mut(&account_id) else {
            return;
        };
        if is_refresh && account.login == TestLogin::GoodDiffs {
            bump_premium_for_diffs(&mut account.data);
        }
        let data = account.data.clone();
        let team_id = st
            .pulls
            .get(pull_id)
            .map(|r| r.pull.team_id.clone())
            .unwrap_or_default();
        let (addresses, drivers, policies, documents) = self.snapshot(&data, &team_id, pull_id);

        let rec = st.pulls.get_mut(pull_id).expect("pull exists");
        let p = &mut rec.pull;
        p.first_name = data.first_name;
        p.middle_name = data.middle_name;
        p.last_name = data.last_name;
        p.account_email = data.account_email;
        p.phone = data.phone;
        p.mobile_phone = data.mobile_phone;
        p.home_phone = data.home_phone;
        p.work_phone = data.work_phone;
        p.work_phone_extension = data.work_phone_extension;
        p.no_policies = policies.is_empty();
        p.no_drivers = drivers.is_empty();
        p.no_documents = documents.is_empty();
        p.addresses = addresses;
        p.drivers = drivers;
        p.policy_check_status = policy_check_overview(&policies).into();
        p.policies = policies.clone();
        p.documents = documents;

        for policy in &policies {
            let data = json!({ "policy_id": policy.policy_id, "policy_type": policy.policy_type });
            self.emit(st, pull_id, ev::POLICY_AVAILABLE, data, None, None);
        }
        self.emit(st, pull_id, ev::POLICIES_AVAILABLE, json!({}), None, None);
        st.pulls.get_mut(pull_id).expect("pull exists").pull.status = ps::SUCCESS.into();
        self.emit(st, pull_id, ev::COMPLETE, json!({}), None, None);

        if is_refresh && let Some(mid) = monitoring_id {
            let events = events_between_latest(st, &mid);
            if let Some(events) =
                events.filter(|e| !e.events.is_empty() && e.latest_pull_id == pull_id)
            {
                let data = serde_json::to_value(events).expect("serialisable");
                self.emit(st, pull_id, ev::MONITORING_EVENTS, data, None, None);
            }
        }
    }

    /// The carrier's data as this pull's own copies: fresh ids, documents pointing at this pull.
    fn snapshot(
        &self,
        data: &AccountData,
        team_id: &str,
        pull_id: &str,
    ) -> (Vec<Address>, Vec<Driver>, Vec<Policy>, Vec<Document>) {
        let mut map = HashMap::new();
        let mut v = json!([data.addresses, data.drivers, data.policies]);
        remap_ids(&mut v, &mut map);
        let (addresses, drivers, policies): (Vec<Address>, Vec<Driver>, Vec<Policy>) =
            serde_json::from_value(v).expect("round trip of our own types");
        let api = format!(
            "{}/canopy/api/v1.0.0/teams/{team_id}/pulls/{pull_id}/documents",
            self.base_url(),
        );
        let documents = data
            .documents
            .iter()
            .map(|t| {
                let document_id = new_id();
                Document {
                    download_url: format!("{api}/{document_id}"),
                    document_id,
                    title: t.title.clone(),
                    date_added: Some(t.date_added.clone()),
                    document_type: Some(t.document_type.clone()),
                    policy_id: policies
                        .iter()
                        .find(|p| {
                            p.carrier_policy_number.as_deref()
                                == Some(t.carrier_policy_number.as_str())
                        })
                        .map(|p| p.policy_id.clone()),
                    mime_type: "application/pdf".into(),
                }
            })
            .collect();
        (addresses, drivers, policies, documents)
    }

    // ---- webhooks ---------------------------------------------------------------------------

    /// Queues one event for every active webhook subscribed to its type.
    pub(crate) fn emit(
        &self,
        st: &State,
        pull_id: &str,
        event_type: &str,
        data: Value,
        sequence: Option<u64>,
        status_override: Option<&str>,
    ) {
        let Some(rec) = st.pulls.get(pull_id) else {
            return;
        };
        let monitoring = rec
            .monitoring_id
            .as_ref()
            .and_then(|m| st.monitorings.get(m))
            .filter(|m| m.monitoring.status == "ACTIVE");
        let body = WebhookBody {
            widget_id: rec.pull.widget_id.clone(),
            team_id: rec.pull.team_id.clone(),
            pull_id: pull_id.to_owned(),
            status: status_override.unwrap_or(&rec.pull.status).to_owned(),
            meta_data: match &rec.pull.meta_data {
                Value::Object(_) => rec.pull.meta_data.clone(),
                _ => json!({}),
            },
            event_type: event_type.to_owned(),
            account_identifier: rec.pull.account_identifier.clone(),
            is_monitored: monitoring.is_some(),
            monitoring: monitoring.map(|m| WebhookMonitoring {
                initial_pull_id: m.initial_pull_id.clone(),
                monitoring_id: m.monitoring.monitoring_id.clone(),
            }),
            data,
            sequence,
        };
        let value = serde_json::to_value(&body).expect("serialisable");
        // An event type outside Canopy's list (sent through the control API to exercise a
        // client's handling of unknown types) cannot be subscribed to, so every webhook gets it.
        let known = ev::ALL.contains(&event_type);
        let subscribed =
            |h: &&Webhook| h.is_active && (!known || h.event_types.iter().any(|t| t == event_type));
        let mut retry = self.inner.cfg.retry;
        if let Some(scale) = st.retry_time_scale {
            retry.time_scale = scale;
        }
        // A pull's events go to its own team's webhooks only.
        let team = &rec.pull.team_id;
        for hook in st
            .webhooks
            .iter()
            .filter(|h| &h.team_id == team)
            .filter(subscribed)
        {
            let mut req = WebhookRequest::json("canopy", event_type, &hook.url, &value, retry);
            let clock = self
                .inner
                .cfg
                .sign_with_sandbox_clock
                .then(|| self.inner.ctx.clock.clone());
            let signing = (st.retry_signing, retry);
            if let Some(signer) = signer(
                hook.signing_secret.clone(),
                st.signature_mode,
                clock,
                signing,
            ) {
                req = req.with_signer(signer);
            }
            self.inner.ctx.webhooks.send(req);
        }
    }

    /// Sends any event for a pull (the control API), building the usual data when none is given.
    pub(crate) fn send_custom_event(
        &self,
        pull_id: &str,
        event_type: &str,
        data: Option<Value>,
        status: Option<&str>,
    ) -> CanopyResult<()> {
        if event_type.trim().is_empty() {
            return Err(CanopyError::Control("event_type is empty".into()));
        }
        let mut st = self.lock();
        if !st.pulls.contains_key(pull_id) {
            return Err(CanopyError::Control(format!("unknown pull {pull_id}")));
        }
        let mut sequence = None;
        let data = match (event_type, data) {
            (ev::AUTH_STATUS, data) => {
                let rec = st.pulls.get_mut(pull_id).expect("checked");
                rec.auth_sequence += 1;
                sequence = Some(rec.auth_sequence);
                let auth = if ps::needs_user(&rec.pull.status) {
                    rec.pull.status.clone()
                } else {
                    ps::SUCCESS.into()
                };
                data.unwrap_or_else(|| auth_status_data(rec, &auth))
            }
            (_, Some(data)) => data,
            (ev::POLICY_AVAILABLE, None) => {
                let items: Vec<Value> = st.pulls[pull_id]
                    .pull
                    .policies
                    .iter()
                    .map(|p| json!({ "policy_id": p.policy_id, "policy_type": p.policy_type }))
                    .collect();
                for d in items {
                    self.emit(&st, pull_id, event_type, d, None, status);
                }
                return Ok(());
            }
            (ev::MONITORING_RECONNECT, None) => {
                let mid = st.pulls[pull_id].monitoring_id.clone().ok_or_else(|| {
                    CanopyError::Control("MONITORING_RECONNECT needs a monitored pull".into())
                })?;
                let token = self.new_reconnect_token(&mut st, &mid, pull_id);
                reconnect_data(&self.reconnect_url(&st, pull_id, &token), &token)
            }
            (ev::MONITORING_EVENTS, None) => {
                let mid = st.pulls[pull_id].monitoring_id.clone();
                let events = mid
                    .and_then(|m| events_between_latest(&st, &m))
                    .unwrap_or_else(|| MonitoringEvents {
                        previous_pull_id: None,
                        latest_pull_id: pull_id.to_owned(),
                        events: Vec::new(),
                    });
                serde_json::to_value(events).expect("serialisable")
            }
            (ev::ERROR, None) => {
                let t = if st.pulls[pull_id].pull.status == ps::PROVIDER_ERROR {
                    ps::PROVIDER_ERROR
                } else {
                    ps::INTERNAL_ERROR
                };
                json!({ "type": t })
            }
            (ev::DATA_UPDATED, None) => {
                let p = &st.pulls[pull_id].pull;
                json!({ "updates": [{
                    "type": "CONTACT_UPDATED",
                    "data": {
                        "first_name": p.first_name,
                        "last_name": p.last_name,
                        "mobile_phone": p.mobile_phone,
                        "email": p.account_email,
                    }
                }]})
            }
            (_, None) => json!({}),
        };
        self.emit(&st, pull_id, event_type, data, sequence, status);
        Ok(())
    }

    /// The reconnect page on the link the pull was made on.
    pub(crate) fn reconnect_url(&self, st: &State, pull_id: &str, token: &str) -> String {
        let alias = st
            .pulls
            .get(pull_id)
            .map(|r| r.pull.public_alias.as_str())
            .unwrap_or(&self.inner.cfg.public_alias);
        let mut url = url::Url::parse(&format!("{}/canopy/c/{alias}/reconnect", self.base_url(),))
            .expect("reconnect url parses");
        url.query_pairs_mut().append_pair("reconnectToken", token);
        url.to_string()
    }

    fn new_reconnect_token(&self, st: &mut State, monitoring_id: &str, pull_id: &str) -> String {
        let token = new_id();
        st.reconnect_tokens.insert(
            token.clone(),
            ReconnectTokenRecord {
                monitoring_id: monitoring_id.to_owned(),
                pull_id: pull_id.to_owned(),
            },
        );
        token
    }

    // ---- monitorings ------------------------------------------------------------------------

    pub(crate) fn create_monitoring_with(
        &self,
        pull_id: &str,
        interval: &str,
        next_pull_date: Option<&str>,
        stop_after_date: Option<&str>,
    ) -> CanopyResult<Monitoring> {
        let parsed = parse_interval(interval)?;
        let now = self.now();
        let mut st = self.lock();
        let rec = st.pulls.get(pull_id).ok_or_else(CanopyError::not_found)?;
        if rec.pull.status != ps::SUCCESS {
            return Err(CanopyError::bad_request("PULL_NOT_SUCCESS"));
        }
        let Some(account_identifier) = rec
            .pull
            .account_identifier
            .clone()
            .filter(|_| rec.pull.pull_type == "PULLING_DATA")
        else {
            return Err(CanopyError::bad_request("PULL_NOT_SUPPORTED"));
        };
        let created = parse_ts(&rec.pull.created_at).unwrap_or(now);
        let next = match next_pull_date {
            Some(s) => {
                let t = parse_ts(s).ok_or(CanopyError::bad_request("INVALID_INPUT"))?;
                if t < created + ChronoDuration::days(MIN_INTERVAL_DAYS) {
                    return Err(CanopyError::bad_request("INVALID_INPUT"));
                }
                t
            }
            None => parsed
                .add_to(created)
                .ok_or(CanopyError::bad_request("INVALID_INTERVAL"))?,
        };
        let stop = parse_stop_after(stop_after_date, now)?;
        let monitoring_id = new_id();
        let monitoring = Monitoring {
            monitoring_id: monitoring_id.clone(),
            latest_pull_id: pull_id.to_owned(),
            status: "ACTIVE".into(),
            next_pull_date: Some(format_ts(next)),
            interval: interval.to_owned(),
            stop_after_date: stop.map(format_ts),
        };
        if let Some(rec) = st.pulls.get_mut(pull_id)
            && rec.monitoring_id.is_none()
        {
            rec.monitoring_id = Some(monitoring_id.clone());
        }
        st.monitorings.insert(
            monitoring_id.clone(),
            MonitoringRecord {
                monitoring: monitoring.clone(),
                interval: parsed,
                initial_pull_id: pull_id.to_owned(),
                pull_ids: vec![pull_id.to_owned()],
                account_identifier,
            },
        );
        st.monitoring_order.push(monitoring_id);
        Ok(monitoring)
    }

    pub(crate) fn patch_monitoring(
        &self,
        monitoring_id: &str,
        patch: MonitoringPatch,
    ) -> CanopyResult<Monitoring> {
        let interval = patch.interval.as_deref().map(parse_interval).transpose()?;
        let now = self.now();
        let mut st = self.lock();
        let latest_created = {
            let m = st
                .monitorings
                .get(monitoring_id)
                .ok_or_else(CanopyError::not_found)?;
            st.pulls
                .get(&m.monitoring.latest_pull_id)
                .and_then(|p| parse_ts(&p.pull.created_at))
                .unwrap_or(now)
        };
        let next = patch
            .next_pull_date
            .as_deref()
            .map(|s| {
                let t = parse_ts(s).ok_or(CanopyError::bad_request("INVALID_INPUT"))?;
                if t < latest_created + ChronoDuration::days(MIN_INTERVAL_DAYS) {
                    return Err(CanopyError::bad_request("INVALID_INPUT"));
                }
                Ok(t)
            })
            .transpose()?;
        let stop = parse_stop_after(patch.stop_after_date.as_deref(), now)?;
        let status = match patch.status.as_deref() {
            None => None,
            Some(s @ ("ACTIVE" | "STOPPED")) => Some(s.to_owned()),
            Some(_) => return Err(CanopyError::bad_request("INVALID_INPUT")),
        };
        let m = st
            .monitorings
            .get_mut(monitoring_id)
            .expect("checked above");
        if let (Some(parsed), Some(raw)) = (interval, patch.interval) {
            m.interval = parsed;
            m.monitoring.interval = raw;
        }
        if let Some(stop) = stop {
            m.monitoring.stop_after_date = Some(format_ts(stop));
        }
        if let Some(status) = status {
            m.monitoring.status = status;
        }
        if m.monitoring.status == "STOPPED" {
            m.monitoring.next_pull_date = None;
        } else if let Some(next) = next {
            m.monitoring.next_pull_date = Some(format_ts(next));
        } else if interval.is_some() || m.monitoring.next_pull_date.is_none() {
            let mut t = m.interval.add_to(latest_created).unwrap_or(now);
            if t < now {
                t = m.interval.add_to(now).unwrap_or(now);
            }
            m.monitoring.next_pull_date = Some(format_ts(t));
        }
        Ok(m.monitoring.clone())
    }

    pub(crate) fn stop(&self, monitoring_id: &str) -> CanopyResult<Monitoring> {
        let mut st = self.lock();
        let m = st
            .monitorings
            .get_mut(monitoring_id)
            .ok_or_else(CanopyError::not_found)?;
        m.monitoring.status = "STOPPED".into();
        m.monitoring.next_pull_date = None;
        Ok(m.monitoring.clone())
    }

    /// A refresh: a NEW pull of the same account. With valid credentials the data arrives as for
    /// any pull; otherwise the pull waits for the consumer and MONITORING_RECONNECT goes out.
    pub(crate) fn refresh(&self, monitoring_id: &str, scheduled: bool) -> CanopyResult<String> {
        let now = self.now();
        let mut st = self.lock();
        let m = st
            .monitorings
            .get(monitoring_id)
            .ok_or_else(CanopyError::not_found)?;
        if m.monitoring.status != "ACTIVE" {
            return Err(CanopyError::bad_request("MONITORING_INACTIVE"));
        }
        let latest = st
            .pulls
            .get(&m.monitoring.latest_pull_id)
            .ok_or_else(CanopyError::not_found)?;
        if !ps::is_terminal(&latest.pull.status) && latest.pull.status != ps::NOT_AUTHENTICATED {
            return Err(CanopyError::bad_request("CURRENTLY_REFRESHING"));
        }
        let account_id = m.account_identifier.clone();
        let Some(account) = st.accounts.get(&account_id) else {
            return Err(CanopyError::bad_request("PULL_NOT_SUPPORTED"));
        };
        let carrier = account.carrier.clone();
        let meta = st
            .pulls
            .get(&m.initial_pull_id)
            .map(|p| p.pull.meta_data.clone())
            .unwrap_or_else(|| json!({}));
        // A refresh belongs to the monitoring's team, on the same link.
        let team = st
            .pulls
            .get(&m.initial_pull_id)
            .map(|p| PullTeam::of(&p.pull))
            .ok_or_else(CanopyError::not_found)?;
        let pull_id = self.new_pull(
            &mut st,
            &team,
            &carrier,
            meta,
            Some(account_id.clone()),
            Some(monitoring_id.to_owned()),
        );

        let m = st.monitorings.get_mut(monitoring_id).expect("exists");
        m.pull_ids.push(pull_id.clone());
        m.monitoring.latest_pull_id = pull_id.clone();
        if scheduled {
            let mut next = m
                .monitoring
                .next_pull_date
                .as_deref()
                .and_then(parse_ts)
                .unwrap_or(now);
            // After a big clock jump, one refresh stands for all the missed ones.
            for _ in 0..10_000 {
                if next > now {
                    break;
                }
                next = m
                    .interval
                    .add_to(next)
                    .unwrap_or(now + ChronoDuration::days(MIN_INTERVAL_DAYS));
            }
            m.monitoring.next_pull_date = Some(format_ts(next));
        }

        let account = st.accounts.get_mut(&account_id).expect("exists");
        let error = account.next_refresh_error.take();
        let credentials = account.credentials;
        if let Some(error) = error {
            st.pulls.get_mut(&pull_id).expect("exists").pull.status = ps::PROCESSING.into();
            self.fail(&mut st, &pull_id, error);
        } else if credentials == CredentialState::Valid {
            st.pulls.get_mut(&pull_id).expect("exists").pull.status = ps::PULLING_DATA.into();
            self.spawn_data_phase(pull_id.clone());
        } else {
            let rec = st.pulls.get_mut(&pull_id).expect("exists");
            rec.pull.status = ps::NOT_AUTHENTICATED.into();
            rec.reconnecting = true;
            let token = self.new_reconnect_token(&mut st, monitoring_id, &pull_id);
            let data = reconnect_data(&self.reconnect_url(&st, &pull_id, &token), &token);
            self.emit(&st, &pull_id, ev::MONITORING_RECONNECT, data, None, None);
        }
        drop(st);
        self.bump();
        Ok(pull_id)
    }

    pub(crate) fn run_due(&self) -> Vec<String> {
        let now = self.now();
        let due: Vec<String> = {
            let mut st = self.lock();
            let mut due = Vec::new();
            for m in st
                .monitorings
                .values_mut()
                .filter(|m| m.monitoring.status == "ACTIVE")
            {
                if m.monitoring
                    .stop_after_date
                    .as_deref()
                    .and_then(parse_ts)
                    .is_some_and(|t| t <= now)
                {
                    m.monitoring.status = "STOPPED".into();
                    m.monitoring.next_pull_date = None;
                    continue;
                }
                if m.monitoring
                    .next_pull_date
                    .as_deref()
                    .and_then(parse_ts)
                    .is_some_and(|t| t <= now)
                {
                    due.push(m.monitoring.monitoring_id.clone());
                }
            }
            due
        };
        due.iter()
            .filter_map(|id| self.refresh(id, true).ok())
            .collect()
    }

    pub(crate) fn mint_reconnect_token(&self, monitoring_id: &str) -> CanopyResult<ReconnectInfo> {
        let mut st = self.lock();
        let m = st
            .monitorings
            .get(monitoring_id)
            .ok_or_else(CanopyError::not_found)?;
        let pull_id = m.monitoring.latest_pull_id.clone();
        let token = self.new_reconnect_token(&mut st, monitoring_id, &pull_id);
        let reconnect_url = self.reconnect_url(&st, &pull_id, &token);
        Ok(ReconnectInfo {
            pull_id,
            reconnect_url,
            reconnect_token: token,
        })
    }

    /// `POST /widget/pull/reconnectToken`.
    pub(crate) fn redeem(&self, token: &str) -> CanopyResult<(String, String)> {
        let st = self.lock();
        let rec = st
            .reconnect_tokens
            .get(token.trim())
            .ok_or(CanopyError::bad_request("INVALID_RECONNECT_TOKEN"))?;
        let m = st
            .monitorings
            .get(&rec.monitoring_id)
            .ok_or(CanopyError::bad_request("INVALID_RECONNECT_TOKEN"))?;
        if m.monitoring.status != "ACTIVE" {
            return Err(CanopyError::bad_request("MONITORING_INACTIVE"));
        }
        if m.monitoring.latest_pull_id != rec.pull_id {
            return Err(CanopyError::bad_request("NEWER_PULL_AVAILABLE"));
        }
        let pull = st
            .pulls
            .get(&rec.pull_id)
            .ok_or_else(CanopyError::not_found)?;
        if !ps::needs_user(&pull.pull.status) {
            return Err(CanopyError::bad_request("ALREADY_RECONNECTED"));
        }
        let pull_id = rec.pull_id.clone();
        drop(st);
        let jwt = self.issue_jwt(&pull_id);
        Ok((pull_id, jwt))
    }

    pub(crate) fn events_of(&self, monitoring_id: &str) -> CanopyResult<MonitoringEvents> {
        let st = self.lock();
        let m = st
            .monitorings
            .get(monitoring_id)
            .ok_or_else(CanopyError::not_found)?;
        Ok(
            events_between_latest(&st, monitoring_id).unwrap_or_else(|| MonitoringEvents {
                previous_pull_id: None,
                latest_pull_id: m.monitoring.latest_pull_id.clone(),
                events: Vec::new(),
            }),
        )
    }
}

/// `PATCH /monitorings/{id}` body.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct MonitoringPatch {
    pub interval: Option<String>,
    pub next_pull_date: Option<String>,
    pub stop_after_date: Option<String>,
    pub status: Option<String>,
}

fn parse_interval(s: &str) -> CanopyResult<IsoDuration> {
    let d = IsoDuration::parse(s.trim()).ok_or(CanopyError::bad_request("INVALID_INTERVAL"))?;
    if !d.at_least_days(MIN_INTERVAL_DAYS) {
        return Err(CanopyError::bad_request("INTERVAL_TOO_SHORT"));
    }
    Ok(d)
}

fn parse_stop_after(s: Option<&str>, now: DateTime<Utc>) -> CanopyResult<Option<DateTime<Utc>>> {
    s.map(|s| {
        parse_ts(s)
            .filter(|t| *t > now)
            .ok_or(CanopyError::bad_request("INVALID_STOP_AFTER"))
    })
    .transpose()
}

fn auth_status_data(rec: &PullRecord, auth_status: &str) -> Value {
    let mut data = json!({
        "auth_status": auth_status,
        "login_error_message": if auth_status == ps::NOT_AUTHENTICATED { rec.login_error_message.clone() } else { None },
    });
    if auth_status == ps::IDENTITY_VERIFICATION_OPTIONS
        && let Some(options) = &rec.mfa_options
    {
        data["mfa_options"] = Value::Object(options.clone());
    }
    data
}

fn reconnect_data(url: &str, token: &str) -> Value {
    json!({ "auth_status": ps::NOT_AUTHENTICATED, "reconnect_url": url, "reconnect_token": token })
}

/// Diff between the two most recent successful pulls of a monitoring.
fn events_between_latest(st: &State, monitoring_id: &str) -> Option<MonitoringEvents> {
    let m = st.monitorings.get(monitoring_id)?;
    let mut ok = m
        .pull_ids
        .iter()
        .rev()
        .filter_map(|id| st.pulls.get(id))
        .filter(|r| r.pull.status == ps::SUCCESS);
    let latest = ok.next()?;
    let previous = ok.next();
    Some(MonitoringEvents {
        previous_pull_id: previous.map(|p| p.pull.pull_id.clone()),
        latest_pull_id: latest.pull.pull_id.clone(),
        events: previous
            .map(|p| super::diff::monitoring_events(&p.pull, &latest.pull))
            .unwrap_or_default(),
    })
}

/// `user_good_diffs`: each refresh, $25.00 more for bodily injury on the first vehicle.
fn bump_premium_for_diffs(data: &mut AccountData) {
    if let Some(auto) = data
        .policies
        .iter_mut()
        .find(|p| p.policy_type.as_deref() == Some("AUTO"))
    {
        if let Some(bi) = auto.vehicles.first_mut().and_then(|v| {
            v.coverages
                .iter_mut()
                .find(|c| c.name == "BODILY_INJURY_LIABILITY")
        }) {
            bi.premium_cents = Some(bi.premium_cents.unwrap_or(0) + 2_500);
        }
        fixtures::recompute_premium(auto);
    }
}

/// Signs each attempt at send time. `t` comes from the wall clock unless a sandbox clock is
/// given (see `CanopySimConfig::sign_with_sandbox_clock`).
fn signer(
    secret: String,
    mode: SignatureMode,
    clock: Option<crate::clock::SandboxClock>,
    (retry_signing, schedule): (RetrySigning, crate::delivery::RetrySchedule),
) -> Option<Signer> {
    let (key, skew) = match mode {
        SignatureMode::Missing => return None,
        SignatureMode::Valid => (secret, 0),
        SignatureMode::WrongSecret => (format!("{secret}-not-the-secret"), 0),
        SignatureMode::Stale { seconds } => (secret, seconds),
    };
    let header = signature::HEADER.to_owned();
    Some(Arc::new(move |body: &[u8], attempt: u32| {
        let now = clock
            .as_ref()
            .map_or_else(|| Utc::now().timestamp(), |c| c.unix_seconds());
        let kept = match retry_signing {
            RetrySigning::Fresh => 0,
            RetrySigning::Original => schedule.unscaled_elapsed_before(attempt).round() as i64,
        };
        vec![(
            header.clone(),
            signature::header_value(&key, now - skew - kept, body),
        )]
    }))
}

/// `Pull.policy_check_status`, the "Overview of Policy Check Status" (canopy-openapi.json),
/// from the policies' `policy_check.status`. Canopy does not document how the overview is
/// formed; the simulator takes the least compliant status (NOT_COMPLIANT, then
/// REVIEW_REQUIRED, then COMPLIANT), and `NONE` when no policy was checked.
pub(crate) fn policy_check_overview(policies: &[super::model::Policy]) -> &'static str {
    const ORDER: [&str; 3] = ["NOT_COMPLIANT", "REVIEW_REQUIRED", "COMPLIANT"];
    let statuses: Vec<&str> = policies
        .iter()
        .filter_map(|p| p.policy_check.as_ref())
        .filter_map(|check| check.get("status").and_then(serde_json::Value::as_str))
        .collect();
    ORDER
        .into_iter()
        .find(|status| statuses.contains(status))
        .unwrap_or("NONE")
}
