//! `impl Provider for AcmeProvider`: Acme's API through the shared vendor HTTP executor, its
//! signed webhooks, and its JSON mapped to the normalized model. What Acme cannot do (reconnect,
//! on-demand refresh, a vendor-side policy check) answers `Unsupported`, never a pretend success.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use coverwatch_core::backoff::Backoff;
use coverwatch_core::event::ProviderDetail;
use coverwatch_core::policy::{
    Account, AccountSnapshot, Carrier, ConnectionStatus, Policy, PolicySnapshot, PolicyStatus,
    PolicyTerm, PolicyType,
};
use coverwatch_core::provider::{
    Capabilities, Completion, FetchedData, LinkAccess, LinkGrant, LinkSession, LinkSessionRequest,
    RejectionKind, VendorErrorInfo,
};
use coverwatch_core::webhook::{
    Attribution, AuthenticatedWebhook, DataRef, Happening, InboundWebhook, ParsedWebhook,
    WebhookRejection,
};
use coverwatch_core::{Provider, ProviderError, SettingsError};
use coverwatch_vendor_http::{
    ErrorParser, Executor, Failure, HeaderMap, HeaderValue, Method, Request, Retry, Settings,
    Vendor,
};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use crate::settings::AcmeConfig;
use crate::{EXTERNAL_ACCOUNT, EXTERNAL_MONITORING, ID, PROVIDER, signature};

/// Acme's failures as the engine understands them: 429/5xx and transport failures are worth
/// retrying, everything else is an answer about the request. Acme's own `error.code` is kept.
#[derive(Debug, Clone, Copy)]
struct AcmeErrors;

impl ErrorParser for AcmeErrors {
    type Error = ProviderError;

    fn parse(&self, failure: Failure) -> ProviderError {
        match failure {
            Failure::Transport(t) => ProviderError::Unavailable {
                provider: PROVIDER,
                message: t.to_string(),
                vendor: VendorErrorInfo::default(),
            },
            Failure::Status(response) => {
                let body: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
                let code = body["error"]["code"].as_str().map(str::to_owned);
                let message = body["error"]["message"]
                    .as_str()
                    .map_or_else(|| response.to_string(), str::to_owned);
                let vendor = VendorErrorInfo {
                    http_status: Some(response.status),
                    code,
                    request_id: response.request_id.clone(),
                };
                let kind = match response.status {
                    401 => RejectionKind::Unauthenticated,
                    403 => RejectionKind::PermissionDenied,
                    404 => RejectionKind::NotFound,
                    // Acme answers a spent or expired code with 400 `invalid_code` /
                    // `expired_code`: the request was well formed, the state is not.
                    400 if vendor.code.as_deref().is_some_and(|c| c.ends_with("_code")) => {
                        RejectionKind::FailedPrecondition
                    }
                    409 => RejectionKind::FailedPrecondition,
                    s if coverwatch_vendor_http::is_retryable_status(s) => {
                        return ProviderError::Unavailable {
                            provider: PROVIDER,
                            message,
                            vendor,
                        };
                    }
                    _ => RejectionKind::InvalidArgument,
                };
                ProviderError::Rejected {
                    provider: PROVIDER,
                    kind,
                    message,
                    vendor,
                }
            }
        }
    }
}

/// One Acme endpoint: its names in logs and metrics, its method, and how safe a repeat is.
struct Endpoint {
    operation: &'static str,
    route: &'static str,
    method: Method,
    retry: Retry,
}

const POLICIES_GET: Endpoint = Endpoint {
    operation: "policies.get",
    route: "GET /v1/policies/{id}",
    method: Method::GET,
    retry: Retry::Idempotent,
};
/// Opening a session twice would leave a second one the user never sees.
const SESSIONS_CREATE: Endpoint = Endpoint {
    operation: "sessions.create",
    route: "POST /v1/sessions",
    method: Method::POST,
    retry: Retry::Never,
};
/// The code is single-use: a repeat after a lost answer would only be refused.
const GRANTS_CREATE: Endpoint = Endpoint {
    operation: "grants.create",
    route: "POST /v1/grants",
    method: Method::POST,
    retry: Retry::Never,
};
const ACCOUNTS_GET: Endpoint = Endpoint {
    operation: "accounts.get",
    route: "GET /v1/accounts/{id}",
    method: Method::GET,
    retry: Retry::Idempotent,
};
/// PUT: Acme keeps one monitoring per account, however often it is asked.
const MONITORING_START: Endpoint = Endpoint {
    operation: "monitoring.start",
    route: "PUT /v1/accounts/{id}/monitoring",
    method: Method::PUT,
    retry: Retry::Idempotent,
};
const MONITORING_STOP: Endpoint = Endpoint {
    operation: "monitoring.stop",
    route: "DELETE /v1/accounts/{id}/monitoring",
    method: Method::DELETE,
    retry: Retry::Idempotent,
};

pub struct AcmeProvider {
    base_url: url::Url,
    api_key: SecretString,
    signing_secret: SecretString,
    refresh_interval: Duration,
    http: Executor<AcmeErrors>,
}

fn malformed(message: impl Into<String>) -> ProviderError {
    ProviderError::Malformed {
        provider: PROVIDER,
        message: message.into(),
    }
}

fn bearer(secret: &str) -> Result<HeaderValue, ProviderError> {
    let mut value = HeaderValue::from_str(&format!("Bearer {secret}"))
        .map_err(|_| malformed("a credential holds characters a header cannot carry"))?;
    // Kept out of any debug output of the request.
    value.set_sensitive(true);
    Ok(value)
}

fn date(value: &Value) -> Option<DateTime<Utc>> {
    let day = NaiveDate::parse_from_str(value.as_str()?, "%Y-%m-%d").ok()?;
    Some(day.and_hms_opt(0, 0, 0)?.and_utc())
}

fn status(value: &Value) -> PolicyStatus {
    match value.as_str() {
        Some("active") => PolicyStatus::Active,
        Some("cancelled") => PolicyStatus::Cancelled,
        Some("expired") => PolicyStatus::Expired,
        _ => PolicyStatus::Unknown,
    }
}

fn carrier(value: &Value) -> Carrier {
    Carrier {
        id: value["slug"].as_str().unwrap_or("unknown").to_owned(),
        name: value["name"].as_str().map(str::to_owned),
    }
}

/// Acme's policy JSON → the normalized policy (pure).
pub fn normalize_policy(raw: Value) -> Result<PolicySnapshot, ProviderError> {
    let id = raw["id"]
        .as_str()
        .ok_or_else(|| malformed("policy without an `id`"))?
        .to_owned();
    let policy_type = match raw["line"].as_str() {
        Some("auto") => PolicyType::Auto,
        Some("renters") => PolicyType::Renters,
        Some("home") => PolicyType::Homeowners,
        other => PolicyType::Other(other.unwrap_or("unknown").to_owned()),
    };
    Ok(PolicySnapshot {
        policy: Policy {
            external_id: id,
            policy_type,
            carrier: carrier(&raw["carrier"]),
            policy_number: raw["number"].as_str().map(str::to_owned),
            status: status(&raw["status"]),
            effective_date: date(&raw["effective_on"]),
            expiration_date: date(&raw["expires_on"]),
            cancelled_date: date(&raw["cancelled_on"]),
            premium_cents: raw["premium_cents"].as_i64(),
            address: None,
            vehicles: vec![],
            dwellings: vec![],
            coverages: vec![],
            insureds: vec![],
            interested_parties: vec![],
            documents: vec![],
        },
        term: PolicyTerm::Current,
        raw,
    })
}

/// Acme's account JSON → the normalized account (pure).
pub fn normalize_account(raw: Value) -> Result<AccountSnapshot, ProviderError> {
    let id = raw["id"]
        .as_str()
        .ok_or_else(|| malformed("account without an `id`"))?
        .to_owned();
    let holder = &raw["holder"];
    let text = |v: &Value| v.as_str().map(str::to_owned);
    Ok(AccountSnapshot {
        account: Account {
            external_id: id,
            carrier: carrier(&raw["carrier"]),
            first_name: text(&holder["first_name"]),
            last_name: text(&holder["last_name"]),
            email: text(&holder["email"]),
            phone: text(&holder["phone"]),
            connection: match raw["connection"].as_str() {
                Some("connected") => ConnectionStatus::Active,
                Some("disconnected") => ConnectionStatus::Disconnected,
                _ => ConnectionStatus::Unknown,
            },
            policy_ids: raw["policies"]
                .as_array()
                .map(|ids| {
                    ids.iter()
                        .filter_map(|id| id.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
            refreshed_at: None,
        },
        raw,
    })
}

impl AcmeProvider {
    pub fn new(config: AcmeConfig) -> Result<Self, SettingsError> {
        let http = Executor::new(
            Vendor {
                name: ID,
                default_headers: HeaderMap::new(),
                request_id_headers: &["acme-request-id"],
            },
            Settings {
                connect_timeout: config.request_timeout.min(Duration::from_secs(5)),
                request_timeout: config.request_timeout,
                max_attempts: 3,
                backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(2)),
                max_retry_after: Duration::from_secs(10),
            },
            AcmeErrors,
        )
        .map_err(|e| SettingsError::new(e.field, e.message))?;
        Ok(Self {
            base_url: config.base_url,
            api_key: config.api_key,
            signing_secret: config.signing_secret,
            refresh_interval: config.refresh_interval,
            http,
        })
    }

    /// The API root plus `segments`, each percent-encoded as one path segment: vendor ids come
    /// from webhooks and must not add path parts of their own.
    fn url(&self, segments: &[&str]) -> Result<url::Url, ProviderError> {
        let mut url = self.base_url.clone();
        url.path_segments_mut()
            .map_err(|()| malformed("the API root cannot take a path"))?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    async fn call(
        &self,
        endpoint: &Endpoint,
        path: &[&str],
        credential: &str,
        body: Option<Value>,
    ) -> Result<Value, ProviderError> {
        let mut request = Request::new(
            endpoint.operation,
            endpoint.route,
            endpoint.method.clone(),
            self.url(path)?,
            endpoint.retry,
        )
        .header(
            coverwatch_vendor_http::HeaderName::from_static("authorization"),
            bearer(credential)?,
        );
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = self.http.send(request).await?;
        if response.body.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&response.body)
            .map_err(|e| malformed(format!("{}: {e}", endpoint.operation)))
    }

    fn account_id(access: &LinkAccess) -> Result<&str, ProviderError> {
        access
            .external_ids
            .get(EXTERNAL_ACCOUNT)
            .map(String::as_str)
            .ok_or_else(|| ProviderError::Rejected {
                provider: PROVIDER,
                kind: RejectionKind::FailedPrecondition,
                message: format!("link {} has no Acme account id", access.link_id),
                vendor: VendorErrorInfo::default(),
            })
    }

    fn token(access: &LinkAccess) -> Result<&str, ProviderError> {
        access
            .secret
            .as_ref()
            .map(|s| s.expose_secret())
            .ok_or_else(|| ProviderError::Rejected {
                provider: PROVIDER,
                kind: RejectionKind::FailedPrecondition,
                message: format!("link {} has no Acme access token", access.link_id),
                vendor: VendorErrorInfo::default(),
            })
    }

    async fn policy(&self, token: &str, id: &str) -> Result<PolicySnapshot, ProviderError> {
        let raw = self
            .call(&POLICIES_GET, &["v1", "policies", id], token, None)
            .await?;
        normalize_policy(raw)
    }
}

#[async_trait]
impl Provider for AcmeProvider {
    fn kind(&self) -> coverwatch_core::ProviderId {
        PROVIDER
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            in_app_reconnect: false,
            on_demand_refresh: false,
            per_link_webhook_url: true,
            expected_refresh_interval: self.refresh_interval,
            one_time_completion_code: true,
            // Every Acme session creates an account of its own.
            relink_resumes_monitoring: false,
        }
    }

    async fn start_link_session(
        &self,
        request: &LinkSessionRequest,
    ) -> Result<LinkSession, ProviderError> {
        let answer = self
            .call(
                &SESSIONS_CREATE,
                &["v1", "sessions"],
                self.api_key.expose_secret(),
                Some(json!({
                    "reference": request.link_id.to_string(),
                    "notify_url": request.webhook_url.expose_secret(),
                    "redirect_uri": request.redirect_uri,
                })),
            )
            .await?;
        let url = answer["url"]
            .as_str()
            .ok_or_else(|| malformed("session without a `url`"))?
            .to_owned();
        let expires_at = answer["expires_at"]
            .as_str()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc));
        Ok(LinkSession { url, expires_at })
    }

    async fn complete_link(&self, completion: &Completion) -> Result<LinkGrant, ProviderError> {
        let code = completion
            .code
            .as_ref()
            .ok_or_else(|| ProviderError::Rejected {
                provider: PROVIDER,
                kind: RejectionKind::InvalidArgument,
                message: "an Acme session completes with its one-time code".into(),
                vendor: VendorErrorInfo::default(),
            })?;
        let answer = self
            .call(
                &GRANTS_CREATE,
                &["v1", "grants"],
                self.api_key.expose_secret(),
                Some(json!({"code": code.expose_secret()})),
            )
            .await?;
        let token = answer["access_token"]
            .as_str()
            .ok_or_else(|| malformed("grant without an `access_token`"))?;
        let account = answer["account_id"]
            .as_str()
            .ok_or_else(|| malformed("grant without an `account_id`"))?
            .to_owned();
        Ok(LinkGrant {
            secret: Some(SecretString::from(token.to_owned())),
            external_ids: BTreeMap::from([(EXTERNAL_ACCOUNT.to_owned(), account.clone())]),
            account_key: Some(account),
        })
    }

    fn authenticate_webhook(
        &self,
        webhook: &InboundWebhook,
    ) -> Result<AuthenticatedWebhook, WebhookRejection> {
        let header = webhook
            .header(signature::HEADER)
            .ok_or(WebhookRejection::MissingHeader(signature::HEADER.into()))?;
        signature::verify(self.signing_secret.expose_secret(), header, &webhook.body).map_err(
            |e| match e {
                signature::Invalid::Malformed(reason) => WebhookRejection::MalformedHeader {
                    header: signature::HEADER,
                    reason,
                },
                signature::Invalid::Mismatch => WebhookRejection::BadSignature,
            },
        )?;
        // The body is genuine from here on; its event id keys the inbox's deduplication.
        let id = serde_json::from_slice::<Value>(&webhook.body)
            .ok()
            .and_then(|v| v["id"].as_str().map(str::to_owned));
        Ok(AuthenticatedWebhook {
            vendor_event_id: id,
            link_token: Some(webhook.path.clone()),
            late_by_seconds: None,
        })
    }

    fn parse_webhook(&self, webhook: &InboundWebhook) -> Result<ParsedWebhook, ProviderError> {
        let body: Value = serde_json::from_slice(&webhook.body)
            .map_err(|e| malformed(format!("webhook body: {e}")))?;
        let event_type = body["type"]
            .as_str()
            .ok_or_else(|| malformed("webhook without a `type`"))?;
        let data = &body["data"];
        let text = |key: &str| data[key].as_str().map(str::to_owned);
        let happening = match event_type {
            "session.completed" => Happening::SessionCompleted {
                code: Some(SecretString::from(
                    text("code").ok_or_else(|| malformed("session.completed without a `code`"))?,
                )),
                data: DataRef::All,
            },
            "session.exited" => Happening::SessionExited { step: text("step") },
            // A cancellation is a status change: the policy is read again and compared, and
            // the comparison, not the event name, says what changed.
            "policy.changed" | "policy.cancelled" => Happening::DataChanged {
                data: DataRef::Policy(
                    text("policy").ok_or_else(|| malformed("policy event without a `policy`"))?,
                ),
                hinted: vec![],
            },
            // A scheduled refresh: everything is read again, and the comparison says whether
            // anything changed.
            "account.refreshed" => Happening::DataChanged {
                data: DataRef::All,
                hinted: vec![],
            },
            other => Happening::Vendor {
                vendor_type: other.to_owned(),
            },
        };
        // Acme's deliveries come on the link's own URL, which attributes them; the account
        // named in the body is a second candidate for deliveries replayed from the inbox.
        let attribution = match text("account") {
            Some(account) => Attribution::External {
                kind: EXTERNAL_ACCOUNT.into(),
                value: account,
            },
            None => Attribution::Unknown,
        };
        Ok(ParsedWebhook {
            attribution: vec![attribution],
            occurred_at: body["created_at"]
                .as_str()
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc)),
            // Core's ProviderDetail has no variant for a vendor it does not know: the event's
            // provider id says who sent it.
            detail: ProviderDetail::None,
            happenings: vec![happening],
        })
    }

    async fn fetch(
        &self,
        access: &LinkAccess,
        data: &DataRef,
    ) -> Result<FetchedData, ProviderError> {
        let token = Self::token(access)?;
        let mut fetched = FetchedData::default();
        match data {
            DataRef::All | DataRef::Account(_) => {
                let account_id = Self::account_id(access)?;
                let raw = self
                    .call(&ACCOUNTS_GET, &["v1", "accounts", account_id], token, None)
                    .await?;
                let account = normalize_account(raw)?;
                if *data == DataRef::All {
                    for id in &account.account.policy_ids {
                        fetched.policies.push(self.policy(token, id).await?);
                    }
                }
                fetched.account = Some(account);
            }
            DataRef::Policy(id) => fetched.policies.push(self.policy(token, id).await?),
            DataRef::Renewal(_) | DataRef::Version(_) => {
                return Err(ProviderError::Unsupported {
                    provider: PROVIDER,
                    capability: "renewal terms and versioned data",
                });
            }
        }
        Ok(fetched)
    }

    async fn ensure_monitoring(
        &self,
        access: &LinkAccess,
    ) -> Result<BTreeMap<String, String>, ProviderError> {
        let account = Self::account_id(access)?;
        let answer = self
            .call(
                &MONITORING_START,
                &["v1", "accounts", account, "monitoring"],
                Self::token(access)?,
                None,
            )
            .await?;
        let id = answer["id"]
            .as_str()
            .ok_or_else(|| malformed("monitoring without an `id`"))?;
        Ok(BTreeMap::from([(
            EXTERNAL_MONITORING.to_owned(),
            id.to_owned(),
        )]))
    }

    async fn start_reconnect(
        &self,
        _access: &LinkAccess,
        _request: &LinkSessionRequest,
    ) -> Result<LinkSession, ProviderError> {
        Err(ProviderError::Unsupported {
            provider: PROVIDER,
            capability: "reconnect",
        })
    }

    async fn descope(&self, access: &LinkAccess) -> Result<(), ProviderError> {
        let account = Self::account_id(access)?;
        self.call(
            &MONITORING_STOP,
            &["v1", "accounts", account, "monitoring"],
            Self::token(access)?,
            None,
        )
        .await
        .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vendor_id_stays_one_path_segment_under_the_api_root() {
        let settings = serde_json::json!({
            "base_url": "http://127.0.0.1:9/api/",
            "api_key": "ak", "signing_secret": "0123456789abcdef",
        });
        let config = coverwatch_core::plugin::decode_settings::<crate::AcmeSettings>(settings)
            .unwrap()
            .into_config()
            .unwrap();
        let provider = AcmeProvider::new(config).unwrap();
        let url = provider.url(&["v1", "policies", "pol/../x?y"]).unwrap();
        assert_eq!(url.path(), "/api/v1/policies/pol%2F..%2Fx%3Fy");
        assert_eq!(url.query(), None);
    }

    #[test]
    fn a_cancelled_policy_reads_as_cancelled_with_its_date() {
        let snapshot = normalize_policy(json!({
            "id": "pol_1", "line": "auto", "status": "cancelled", "premium_cents": 98000,
            "carrier": {"slug": "acme-mutual", "name": "Acme Mutual"},
            "effective_on": "2026-01-01", "cancelled_on": "2026-03-04", "unknown": [1, 2]
        }))
        .unwrap();
        let p = snapshot.policy;
        assert_eq!(p.status, PolicyStatus::Cancelled);
        assert_eq!(p.policy_type, PolicyType::Auto);
        assert_eq!(p.premium_cents, Some(98_000));
        assert_eq!(
            p.cancelled_date.unwrap().date_naive().to_string(),
            "2026-03-04"
        );
        assert_eq!(p.expiration_date, None);
        assert!(normalize_policy(json!({"status": "active"})).is_err());
    }
}
