//! `impl Provider for CanopyProvider`: Canopy's pulls and monitorings behind the common trait.

use crate::PROVIDER;
use crate::verdict::{CanopyCheckStatus, CanopyPolicyCheck};
use std::collections::BTreeMap;

use async_trait::async_trait;
use coverwatch_core::provider::{
    Capabilities, Completion, FetchedData, LinkAccess, LinkGrant, LinkSession, LinkSessionRequest,
    Provider, ProviderError, ProviderId, RECONNECT_SECRET, ReconnectOutcome, ReconnectStep,
    RejectionKind, StoredVendorData, VendorErrorInfo, VendorVerdict,
};
use coverwatch_core::requirements::Rule;
use coverwatch_core::webhook::{
    Attribution, AuthenticatedWebhook, DataRef, InboundWebhook, ParsedWebhook, WebhookRejection,
};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use crate::client::{CanopyClient, ConnectCredentials};
use crate::config::{CanopyConfig, REFRESH_SLACK};
use crate::error::CanopyError;
use crate::model::Monitoring;
use crate::normalize::normalize_pull;
use crate::webhook::{
    self, EXTERNAL_INITIAL_PULL, EXTERNAL_MONITORING, EXTERNAL_PULL, LINK_ID_META_KEY,
    SESSION_META_KEY,
};

/// The `pull-jwt` that authorizes the white-label reconnect steps after the credentials step.
pub const PULL_JWT_SECRET: &str = "pull_jwt";
/// The pull the white-label reconnect steps act on. Not secret, but the steps can only hand
/// secrets forward (see requests-canopy.md).
pub const RECONNECT_PULL_SECRET: &str = "reconnect_pull";

/// Pull statuses of a pull still on its way; anything else is where it ended.
const RUNNING_STATUSES: &[&str] = &[
    "STARTED",
    "QUEUED",
    "PROCESSING",
    "DOCUMENT_PARSING",
    "GETTING_CONSUMERS",
    "PULLING_DATA",
];

/// Statuses in which a pull ended without data.
const FAILED_STATUSES: &[&str] = &[
    "NOT_AUTHENTICATED",
    "IDENTITY_VERIFICATION_OPTIONS",
    "IDENTITY_VERIFICATION",
    "PROVIDER_ERROR",
    "INTERNAL_ERROR",
];

#[derive(Debug, Clone)]
pub struct CanopyProvider {
    config: CanopyConfig,
    client: CanopyClient,
    capabilities: Capabilities,
}

impl CanopyProvider {
    /// Validates the configuration (the error names the bad key) and builds the client.
    pub fn new(config: CanopyConfig) -> Result<Self, CanopyError> {
        config.validate()?;
        let interval = config.monitoring_interval()?;
        let client = CanopyClient::new(&config)?;
        Ok(Self {
            capabilities: Capabilities {
                in_app_reconnect: true,
                on_demand_refresh: true,
                per_link_webhook_url: false,
                expected_refresh_interval: interval.longest() + REFRESH_SLACK,
                // A pull completes on Canopy's own notice; there is no code to redeem.
                one_time_completion_code: false,
                // A new pull of an already linked account is watched only through a monitoring
                // of its own, so folding it into the older link would leave that link's
                // monitoring as it was.
                relink_resumes_monitoring: false,
            },
            config,
            client,
        })
    }

    /// Canopy's own account of what a monitoring refresh changed (`GET …/monitorings/{id}/events`,
    /// the diff between its two most recent pulls), per policy. Only when its `latest_pull_id`
    /// is the pull being read, so the labels describe this data; the endpoint is plan-gated, so
    /// a refusal or failure means no labels, never a failed fetch.
    async fn monitoring_reasons(
        &self,
        monitoring_id: &str,
        pull_id: &str,
        policies: &[coverwatch_core::policy::PolicySnapshot],
    ) -> BTreeMap<String, Vec<String>> {
        match self.client.monitoring_events(monitoring_id).await {
            Ok(answer) => crate::webhook::monitoring_reasons(&answer, pull_id, policies),
            Err(err) => {
                tracing::info!(monitoring = monitoring_id, error = %err, "Canopy monitoring events not read; policy.updated goes without the vendor's reasons");
                BTreeMap::new()
            }
        }
    }

    pub fn config(&self) -> &CanopyConfig {
        &self.config
    }

    pub fn client(&self) -> &CanopyClient {
        &self.client
    }

    fn widget_url(&self) -> String {
        format!(
            "{}/c/{}",
            self.config.widget_base_url.trim_end_matches('/'),
            self.config.public_alias
        )
    }

    /// The monitoring among these that is still running, if any.
    fn active(monitorings: Vec<Monitoring>) -> Option<Monitoring> {
        monitorings
            .into_iter()
            .find(|m| m.is_active() && !m.monitoring_id.is_empty())
    }

    fn monitoring_ids(monitoring: Monitoring) -> BTreeMap<String, String> {
        BTreeMap::from([(EXTERNAL_MONITORING.to_owned(), monitoring.monitoring_id)])
    }

    /// `PULL_NOT_SUCCESS` on a pull that is still running only means "not yet".
    async fn explain_pull_not_success(&self, pull_id: &str, err: CanopyError) -> ProviderError {
        if err.code() != Some("PULL_NOT_SUCCESS") {
            return err.into();
        }
        let status = match self.client.get_pull(pull_id).await {
            Ok(pull) => pull
                .get("status")
                .and_then(Value::as_str)
                .map(str::to_owned),
            Err(_) => None,
        };
        match status.as_deref() {
            Some(s) if RUNNING_STATUSES.contains(&s) => ProviderError::Unavailable {
                provider: PROVIDER,
                message: format!(
                    "pull {pull_id} is still running ({s}); monitor it once it succeeds"
                ),
                vendor: VendorErrorInfo {
                    http_status: err.status(),
                    code: err.code().map(str::to_owned),
                    request_id: None,
                },
            },
            _ => err.into(),
        }
    }

    /// The pull and `pull-jwt` of a reconnect: from the link's reconnect token, else from a
    /// token minted now for its monitoring.
    async fn open_reconnect(
        &self,
        access: &LinkAccess,
        keep: &mut Vec<(String, Option<SecretString>)>,
    ) -> Result<(String, SecretString), CanopyError> {
        if let Some(token) = access.secrets.get(RECONNECT_SECRET) {
            match self.client.redeem_reconnect_token(token).await {
                Ok(opened) => return opened_pull(opened),
                // A token can expire, or be used up by an earlier attempt: mint a new one.
                Err(err) if err.code() == Some("INVALID_RECONNECT_TOKEN") => {}
                Err(err) => return Err(err),
            }
        }
        let monitoring = access
            .external_ids
            .get(EXTERNAL_MONITORING)
            .ok_or_else(|| {
                CanopyError::precondition(
                    "the link has no reconnect token and no Canopy monitoring",
                )
            })?;
        let minted = self.client.reconnect_token(monitoring).await?;
        let token = minted
            .reconnect_token
            .ok_or_else(|| CanopyError::Decode("no `reconnect_token` in the answer".into()))?;
        let opened = self.client.redeem_reconnect_token(&token).await?;
        keep.push((RECONNECT_SECRET.to_owned(), Some(token)));
        opened_pull(opened)
    }
}

fn opened_pull(
    opened: crate::model::PullJwtResponse,
) -> Result<(String, SecretString), CanopyError> {
    match (opened.pull_id.filter(|p| !p.is_empty()), opened.pull_jwt) {
        (Some(pull_id), Some(jwt)) => Ok((pull_id, jwt)),
        _ => Err(CanopyError::Decode(
            "no `pull_id` or `pull_jwt` in the answer".into(),
        )),
    }
}

/// The query prefix Canopy reads pull meta data from on a link URL: `ccmeta-KEY=VALUE` becomes
/// `"KEY": "VALUE"` in the pull's `meta_data` (docs.usecanopy.com/reference/adding-metadata-to-a-pull).
pub const META_QUERY_PREFIX: &str = "ccmeta-";

/// The caller's metadata, then our link id and the session's proof, as `ccmeta-` parameters.
fn append_meta(
    query: &mut url::form_urlencoded::Serializer<'_, url::UrlQuery<'_>>,
    request: &LinkSessionRequest,
) {
    for (key, value) in &request.metadata {
        // The engine reserves our keys; a provider used on its own must not let a caller's
        // value stand in for ours either.
        if key != LINK_ID_META_KEY && key != SESSION_META_KEY {
            query.append_pair(&format!("{META_QUERY_PREFIX}{key}"), value);
        }
    }
    query.append_pair(
        &format!("{META_QUERY_PREFIX}{LINK_ID_META_KEY}"),
        &request.link_id.to_string(),
    );
    query.append_pair(
        &format!("{META_QUERY_PREFIX}{SESSION_META_KEY}"),
        request.session_proof.expose_secret(),
    );
}

/// The pull the link's data lives in now.
fn latest_pull(access: &LinkAccess) -> Result<&str, CanopyError> {
    access
        .external_ids
        .get(EXTERNAL_PULL)
        .or_else(|| access.external_ids.get(EXTERNAL_INITIAL_PULL))
        .map(String::as_str)
        .ok_or_else(|| CanopyError::precondition("the link has no Canopy pull yet"))
}

fn monitoring_of(access: &LinkAccess) -> Result<&str, CanopyError> {
    access
        .external_ids
        .get(EXTERNAL_MONITORING)
        .map(String::as_str)
        .ok_or_else(|| CanopyError::precondition("the link has no Canopy monitoring"))
}

fn reconnect_pull(access: &LinkAccess) -> Result<(&str, &SecretString), CanopyError> {
    match (
        access.secrets.get(RECONNECT_PULL_SECRET),
        access.secrets.get(PULL_JWT_SECRET),
    ) {
        (Some(pull), Some(jwt)) => Ok((pull.expose_secret(), jwt)),
        _ => Err(CanopyError::precondition(
            "no reconnect in progress: send the credentials step first",
        )),
    }
}

/// Canopy's own record of the pull must not name another link: its meta data is what the
/// session URL carried, so a pull started from another link's session is that link's data,
/// however the delivery that led here was attributed.
fn refuse_another_links_pull(
    pull: &Value,
    pull_id: &str,
    access: &LinkAccess,
) -> Result<(), ProviderError> {
    let named = match pull.get("meta_data").and_then(webhook::session_claim) {
        Some(Attribution::Session { link, .. } | Attribution::Link(link)) => link,
        _ => return Ok(()),
    };
    if named == access.link_id {
        return Ok(());
    }
    Err(ProviderError::Rejected {
        provider: PROVIDER,
        kind: RejectionKind::PermissionDenied,
        message: format!(
            "pull {pull_id} was started from a session of link {named}, not of link {}; \
             its data is not applied",
            access.link_id
        ),
        vendor: VendorErrorInfo::default(),
    })
}

fn pull_status(pull: &Value) -> Option<&str> {
    pull.get("status").and_then(Value::as_str)
}

/// A Policy Check status as Canopy's OpenAPI document spells it: `Pull.policy_check_status`
/// and `PolicyCheck.status` are both the enum `NONE`, `COMPLIANT`, `NOT_COMPLIANT`,
/// `REVIEW_REQUIRED`.
pub fn check_status(value: &str) -> Option<CanopyCheckStatus> {
    match value {
        "NONE" => Some(CanopyCheckStatus::None),
        "COMPLIANT" => Some(CanopyCheckStatus::Compliant),
        "NOT_COMPLIANT" => Some(CanopyCheckStatus::NotCompliant),
        "REVIEW_REQUIRED" => Some(CanopyCheckStatus::ReviewRequired),
        _ => None,
    }
}

/// Canopy's Policy Check as the link's stored pull carries it: the pull's `policy_check_status`
/// and each policy's `policy_check.status` (a `policy_check` may be null). Canopy runs every
/// configured Policy Check on every submission, so the stored pull already holds the verdict.
pub fn stored_policy_check(stored: &StoredVendorData) -> Result<CanopyPolicyCheck, String> {
    let pull = stored
        .account
        .as_ref()
        .ok_or_else(|| "no pull is stored for the link yet".to_owned())?;
    let read = |value: Option<&Value>, what: &str| -> Result<Option<CanopyCheckStatus>, String> {
        match value {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) => check_status(text)
                .map(Some)
                .ok_or_else(|| format!("{what} `{text}` is not a documented Policy Check status")),
            Some(other) => Err(format!("{what} is not a string: {other}")),
        }
    };
    let pull_status = read(pull.get("policy_check_status"), "policy_check_status")?;
    let mut policies = Vec::with_capacity(stored.policies.len());
    for (policy_id, raw) in &stored.policies {
        let status = read(
            raw.get("policy_check")
                .and_then(|check| check.get("status")),
            &format!("policy {policy_id}: policy_check.status"),
        )?;
        policies.push((policy_id.clone(), status));
    }
    Ok(CanopyPolicyCheck {
        pull_id: pull
            .get("pull_id")
            .and_then(Value::as_str)
            .map(str::to_owned),
        pull_status,
        policies,
    })
}

#[async_trait]
impl Provider for CanopyProvider {
    fn kind(&self) -> ProviderId {
        PROVIDER
    }

    fn capabilities(&self) -> Capabilities {
        self.capabilities
    }

    /// The widget URL, carrying our link id and the session's proof as pull meta data; no API
    /// call.
    async fn start_link_session(
        &self,
        request: &LinkSessionRequest,
    ) -> Result<LinkSession, ProviderError> {
        let mut url = url::Url::parse(&self.widget_url()).map_err(|err| {
            ProviderError::from(CanopyError::config("widget_base_url", err.to_string()))
        })?;
        {
            let mut query = url.query_pairs_mut();
            append_meta(&mut query, request);
            if let Some(token) = &self.config.consent_token {
                query.append_pair("consentToken", token.expose_secret());
            }
        }
        Ok(LinkSession {
            url: url.into(),
            expires_at: None,
        })
    }

    /// Nothing to exchange: the pull is the link. Its account identifier keys relinks.
    async fn complete_link(&self, completion: &Completion) -> Result<LinkGrant, ProviderError> {
        let DataRef::Version(pull_id) = &completion.data else {
            return Err(CanopyError::invalid(format!(
                "a Canopy completion names its pull, not {:?}",
                completion.data
            ))
            .into());
        };
        let pull = self.client.get_pull(pull_id).await?;
        if let Some(status) = pull_status(&pull).filter(|s| FAILED_STATUSES.contains(s)) {
            return Err(CanopyError::precondition(format!(
                "pull {pull_id} ended as {status}, with no account to link"
            ))
            .into());
        }
        let account_key = pull
            .get("account_identifier")
            .and_then(Value::as_str)
            .filter(|a| !a.is_empty())
            .unwrap_or(pull_id)
            .to_owned();
        Ok(LinkGrant {
            secret: None,
            external_ids: BTreeMap::from([
                (EXTERNAL_INITIAL_PULL.to_owned(), pull_id.clone()),
                (EXTERNAL_PULL.to_owned(), pull_id.clone()),
            ]),
            account_key: Some(account_key),
        })
    }

    fn authenticate_webhook(
        &self,
        webhook: &InboundWebhook,
    ) -> Result<AuthenticatedWebhook, WebhookRejection> {
        let tolerance =
            i64::try_from(self.config.signature_tolerance.as_secs()).unwrap_or(i64::MAX);
        webhook::authenticate(
            webhook,
            &self.config.signing_secrets,
            tolerance,
            self.config.stale_signatures,
        )
    }

    fn parse_webhook(&self, webhook: &InboundWebhook) -> Result<ParsedWebhook, ProviderError> {
        webhook::parse(webhook)
    }

    /// A Canopy pull holds the whole account, so every reference reads one pull: the one named,
    /// else the latest the link knows.
    async fn fetch(
        &self,
        access: &LinkAccess,
        data: &DataRef,
    ) -> Result<FetchedData, ProviderError> {
        let pull_id = match data {
            DataRef::Version(pull_id) => pull_id.as_str(),
            DataRef::All | DataRef::Account(_) | DataRef::Policy(_) | DataRef::Renewal(_) => {
                latest_pull(access)?
            }
        };
        let raw = self.client.get_pull(pull_id).await?;
        refuse_another_links_pull(&raw, pull_id, access)?;
        let fallback = access
            .external_ids
            .get(EXTERNAL_INITIAL_PULL)
            .map(String::as_str)
            .unwrap_or(pull_id);
        let pull = normalize_pull(&raw, fallback)?;
        // No policies means "none" only from a finished pull; from one still running or one
        // that failed it would read as every policy removed.
        let finished = matches!(pull.status.as_deref(), Some("SUCCESS" | "INCOMPLETE"));
        if pull.policies.is_empty() && !finished {
            let status = pull.status.as_deref().unwrap_or("no status");
            if RUNNING_STATUSES.contains(&status) {
                return Err(ProviderError::Unavailable {
                    provider: PROVIDER,
                    message: format!("pull {pull_id} has no data yet ({status})"),
                    vendor: VendorErrorInfo::default(),
                });
            }
            return Err(CanopyError::precondition(format!(
                "pull {pull_id} holds no data ({status})"
            ))
            .into());
        }
        let vendor_reasons = match access.external_ids.get(EXTERNAL_MONITORING) {
            Some(monitoring) if matches!(data, DataRef::Version(_)) => {
                self.monitoring_reasons(monitoring, pull_id, &pull.policies)
                    .await
            }
            _ => BTreeMap::new(),
        };
        Ok(FetchedData {
            account: Some(pull.account),
            policies: pull.policies,
            external_ids: BTreeMap::from([(EXTERNAL_PULL.to_owned(), pull_id.to_owned())]),
            vendor_reasons,
        })
    }

    /// Finds the link's running monitoring before creating one, and looks again after a
    /// failed create: Canopy has no idempotency key, and a create that reached it before the
    /// failure must not be made twice.
    async fn ensure_monitoring(
        &self,
        access: &LinkAccess,
    ) -> Result<BTreeMap<String, String>, ProviderError> {
        let pull_id = access
            .external_ids
            .get(EXTERNAL_INITIAL_PULL)
            .map(String::as_str)
            .map_or_else(|| latest_pull(access), Ok)?;
        if let Some(found) = Self::active(self.client.monitorings_of_pull(pull_id).await?) {
            return Ok(Self::monitoring_ids(found));
        }
        match self
            .client
            .create_monitoring(pull_id, &self.config.monitoring_interval)
            .await
        {
            Ok(created) => Ok(Self::monitoring_ids(created)),
            Err(err) if err.is_transient() || matches!(err, CanopyError::Decode(_)) => {
                match self.client.monitorings_of_pull(pull_id).await {
                    Ok(list) => match Self::active(list) {
                        Some(found) => Ok(Self::monitoring_ids(found)),
                        None => Err(err.into()),
                    },
                    Err(_) => Err(err.into()),
                }
            }
            Err(err) => Err(self.explain_pull_not_success(pull_id, err).await),
        }
    }

    /// Canopy's hosted reconnect page, with a freshly minted reconnect token. The reconnect
    /// goes on in the monitored pull, whose meta data already holds the first session's proof,
    /// and its deliveries name the link's monitoring; the new session's claim rides along as
    /// `ccmeta-` parameters all the same, so that a pull Canopy might start from this page is
    /// attributed as one started from the widget would be.
    async fn start_reconnect(
        &self,
        access: &LinkAccess,
        request: &LinkSessionRequest,
    ) -> Result<LinkSession, ProviderError> {
        let monitoring = monitoring_of(access)?;
        let minted = self.client.reconnect_token(monitoring).await?;
        let url = minted
            .reconnect_url
            .filter(|u| !u.is_empty())
            .ok_or_else(|| CanopyError::Decode("no `reconnect_url` in the answer".into()))?;
        let mut url = url::Url::parse(&url)
            .map_err(|err| CanopyError::Decode(format!("`reconnect_url` is not a URL: {err}")))?;
        append_meta(&mut url.query_pairs_mut(), request);
        Ok(LinkSession {
            url: url.into(),
            expires_at: None,
        })
    }

    async fn reconnect_step(
        &self,
        access: &LinkAccess,
        step: &ReconnectStep,
    ) -> Result<ReconnectOutcome, ProviderError> {
        match step {
            ReconnectStep::Credentials {
                carrier,
                username,
                password,
                third_field,
            } => {
                let mut keep = Vec::new();
                let (pull_id, jwt) = self.open_reconnect(access, &mut keep).await?;
                let carrier = match carrier.as_deref().filter(|c| !c.is_empty()) {
                    Some(carrier) => carrier.to_owned(),
                    None => self
                        .client
                        .get_pull(&pull_id)
                        .await?
                        .get("insurance_provider_name")
                        .and_then(Value::as_str)
                        .filter(|c| !c.is_empty())
                        .map(str::to_owned)
                        .ok_or_else(|| CanopyError::invalid("the carrier is required"))?,
                };
                self.client
                    .connect(
                        &pull_id,
                        &jwt,
                        ConnectCredentials {
                            insurer_name: &carrier,
                            username,
                            password: password.as_ref(),
                            third_field: third_field.as_ref(),
                        },
                    )
                    .await?;
                keep.push((PULL_JWT_SECRET.to_owned(), Some(jwt)));
                keep.push((
                    RECONNECT_PULL_SECRET.to_owned(),
                    Some(SecretString::from(pull_id)),
                ));
                Ok(ReconnectOutcome { secrets: keep })
            }
            ReconnectStep::VerificationOption { key } => {
                let (pull_id, jwt) = reconnect_pull(access)?;
                self.client
                    .choose_verification_option(pull_id, jwt, key)
                    .await?;
                Ok(ReconnectOutcome::default())
            }
            ReconnectStep::VerificationCode { code } => {
                let (pull_id, jwt) = reconnect_pull(access)?;
                self.client
                    .submit_verification_code(pull_id, jwt, code)
                    .await?;
                Ok(ReconnectOutcome::default())
            }
        }
    }

    /// Stopping a monitoring that is already stopped, or gone, is done.
    async fn descope(&self, access: &LinkAccess) -> Result<(), ProviderError> {
        let Some(monitoring) = access.external_ids.get(EXTERNAL_MONITORING) else {
            return Ok(());
        };
        match self.client.stop_monitoring(monitoring).await {
            Ok(()) => Ok(()),
            Err(err)
                if matches!(err.code(), Some("MONITORING_INACTIVE" | "NOT_FOUND"))
                    || err.status() == Some(404) =>
            {
                Ok(())
            }
            Err(err) => Err(err.into()),
        }
    }

    /// Read from the stored pull: no call to Canopy (whose `POST …/policyCheck` would evaluate
    /// again against settings given in the request, not the team's configured checks).
    async fn vendor_check(
        &self,
        _access: &LinkAccess,
        _rules: &[Rule],
        stored: &StoredVendorData,
    ) -> Result<VendorVerdict, ProviderError> {
        stored_policy_check(stored)
            .map(VendorVerdict::from)
            .map_err(|message| ProviderError::Malformed {
                provider: PROVIDER,
                message,
            })
    }

    async fn refresh(&self, access: &LinkAccess) -> Result<(), ProviderError> {
        let monitoring = monitoring_of(access)?;
        let new_pull = self.client.refresh_monitoring(monitoring).await?;
        tracing::info!(
            monitoring,
            new_pull = new_pull.as_deref(),
            "canopy refresh started"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coverwatch_core::ids::{LinkId, TenantId, UserId};
    use serde_json::json;

    #[test]
    fn policy_check_values_are_the_documented_enum() {
        // canopy-openapi.json, `Pull.policy_check_status` and `PolicyCheck.status`:
        // "enum": ["NONE", "COMPLIANT", "NOT_COMPLIANT", "REVIEW_REQUIRED"].
        assert_eq!(check_status("NONE"), Some(CanopyCheckStatus::None));
        assert_eq!(
            check_status("COMPLIANT"),
            Some(CanopyCheckStatus::Compliant)
        );
        assert_eq!(
            check_status("NOT_COMPLIANT"),
            Some(CanopyCheckStatus::NotCompliant)
        );
        assert_eq!(
            check_status("REVIEW_REQUIRED"),
            Some(CanopyCheckStatus::ReviewRequired)
        );
        assert_eq!(check_status("compliant"), None);
    }

    #[test]
    fn the_stored_pull_carries_the_verdict() {
        // canopy-openapi.json: `Pull.policy_check_status` is the pull's overview, and
        // `Policy.policy_check` is `null` or a `PolicyCheck` object with a `status`.
        let stored = StoredVendorData {
            policies: vec![
                (
                    "p-auto".into(),
                    json!({"policy_id": "p-auto", "policy_check": {"status": "NOT_COMPLIANT"}}),
                ),
                (
                    "p-home".into(),
                    json!({"policy_id": "p-home", "policy_check": null}),
                ),
            ],
            account: Some(json!({"pull_id": "pull-1", "policy_check_status": "NOT_COMPLIANT"})),
        };
        assert_eq!(
            stored_policy_check(&stored).unwrap(),
            CanopyPolicyCheck {
                pull_id: Some("pull-1".into()),
                pull_status: Some(CanopyCheckStatus::NotCompliant),
                policies: vec![
                    ("p-auto".into(), Some(CanopyCheckStatus::NotCompliant)),
                    ("p-home".into(), None),
                ],
            }
        );
        let mut odd = stored.clone();
        odd.account = Some(json!({"pull_id": "pull-1", "policy_check_status": "PASSED"}));
        assert!(stored_policy_check(&odd).unwrap_err().contains("PASSED"));
        let none = StoredVendorData::default();
        assert!(stored_policy_check(&none).is_err());
    }

    fn provider(consent: Option<&str>) -> CanopyProvider {
        let mut config = CanopyConfig::new(
            "http://127.0.0.1:9/canopy/api/v1.0.0",
            "http://127.0.0.1:9/canopy/",
            "team",
            "client",
            SecretString::from("secret"),
            "coverwatch-sandbox",
        )
        .with_signing_secret("whsec");
        config.consent_token = consent.map(SecretString::from);
        CanopyProvider::new(config).unwrap()
    }

    fn request(link_id: LinkId) -> LinkSessionRequest {
        LinkSessionRequest {
            link_id,
            tenant_id: "tenant-a".parse::<TenantId>().unwrap(),
            user_id: "user-1".parse::<UserId>().unwrap(),
            metadata: BTreeMap::from([
                ("loan".to_owned(), "L-1".to_owned()),
                (LINK_ID_META_KEY.to_owned(), "forged".to_owned()),
                (SESSION_META_KEY.to_owned(), "forged".to_owned()),
            ]),
            redirect_uri: None,
            webhook_url: SecretString::from("unused"),
            session_proof: SecretString::from("proof-of-the-session"),
        }
    }

    /// Canopy documents meta data on a link URL as `ccmeta-KEY=VALUE` query parameters, which
    /// become the pull's `meta_data` `{"KEY": "VALUE"}`, and no `meta_data=` parameter:
    /// "Adding metadata to a pull", https://docs.usecanopy.com/reference/adding-metadata-to-a-pull
    /// ("?ccmeta-user_id=5&ccmeta-referrer=John" → `{"user_id": "5", "referrer": "John"}`).
    #[tokio::test]
    async fn link_session_is_the_widget_with_our_claim_in_ccmeta_parameters_only() {
        let link = LinkId::new();
        let session = provider(Some("consent-1"))
            .start_link_session(&request(link))
            .await
            .unwrap();
        let url = url::Url::parse(&session.url).unwrap();
        assert_eq!(url.path(), "/canopy/c/coverwatch-sandbox");
        let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        let link_text = link.to_string();
        assert_eq!(
            pairs,
            [
                ("ccmeta-loan", "L-1"),
                ("ccmeta-coverwatch_link_id", link_text.as_str()),
                ("ccmeta-coverwatch_session", "proof-of-the-session"),
                ("consentToken", "consent-1"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
            "the caller's keys of our names are dropped, and nothing travels as `meta_data=`"
        );
        assert!(!session.url.contains("meta_data"));
        assert_eq!(session.expires_at, None);

        let session = provider(None)
            .start_link_session(&request(link))
            .await
            .unwrap();
        assert!(!session.url.contains("consentToken"));
    }

    #[test]
    fn a_pull_of_another_links_session_is_refused() {
        let (mine, other) = (LinkId::new(), LinkId::new());
        let access = LinkAccess {
            link_id: mine,
            secret: None,
            secrets: BTreeMap::new(),
            external_ids: BTreeMap::new(),
        };
        let pull = |meta: Value| serde_json::json!({"pull_id": "p-1", "meta_data": meta});
        for ok in [
            serde_json::json!({"coverwatch_link_id": mine.to_string(), "coverwatch_session": "x"}),
            serde_json::json!({"coverwatch_link_id": mine.to_string()}),
            serde_json::json!({"user_id": "5"}),
            Value::Null,
        ] {
            refuse_another_links_pull(&pull(ok.clone()), "p-1", &access)
                .unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        let err = refuse_another_links_pull(
            &pull(serde_json::json!({"coverwatch_link_id": other.to_string()})),
            "p-1",
            &access,
        )
        .unwrap_err();
        assert!(matches!(
            err,
            ProviderError::Rejected {
                kind: RejectionKind::PermissionDenied,
                ..
            }
        ));
        assert!(err.to_string().contains(&other.to_string()), "{err}");
    }

    #[test]
    fn capabilities() {
        let caps = provider(None).capabilities();
        assert!(caps.in_app_reconnect && caps.on_demand_refresh && !caps.per_link_webhook_url);
        assert!(!caps.one_time_completion_code && !caps.relink_resumes_monitoring);
        assert_eq!(
            caps.expected_refresh_interval,
            std::time::Duration::from_secs((31 + 2) * 24 * 3600)
        );
    }

    #[test]
    fn a_bad_config_is_refused_at_construction() {
        let mut config = provider(None).config().clone();
        config.monitoring_interval = "P7D".into();
        let err = CanopyProvider::new(config).unwrap_err().to_string();
        assert!(err.contains("`monitoring_interval`"), "{err}");
    }
}
