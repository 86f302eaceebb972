//! [`AxleProvider`]: Axle behind the core [`Provider`] trait.

use crate::PROVIDER;
use crate::verdict::AxleValidation;
use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use coverwatch_core::policy::PolicyTerm;
use coverwatch_core::provider::{
    Capabilities, Completion, FetchedData, LinkAccess, LinkGrant, LinkSession, LinkSessionRequest,
    Provider, ProviderError, ProviderId, RejectionKind, StoredVendorData, VendorErrorInfo,
    VendorVerdict,
};
use coverwatch_core::requirements::Rule;
use coverwatch_core::webhook::{
    AuthenticatedWebhook, DataRef, InboundWebhook, ParsedWebhook, WebhookRejection,
};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value, json};

use crate::client::AxleClient;
use crate::config::AxleConfig;
use crate::error::AxleError;
use crate::normalize;
use crate::validation;
use crate::webhook::{self, ACCOUNT_KIND, LINK_ID_METADATA_KEY, SharedHeader};

/// Axle refreshes linked accounts itself "about daily"; two hours of slack before a link counts
/// as stale.
pub const EXPECTED_REFRESH_INTERVAL: Duration = Duration::from_secs(26 * 60 * 60);

#[derive(Debug, Clone)]
pub struct AxleProvider {
    client: AxleClient,
    shared_header: Option<SharedHeader>,
}

impl AxleProvider {
    /// Validates the configuration and builds the HTTP client.
    pub fn new(config: AxleConfig) -> Result<Self, AxleError> {
        let shared_header = config
            .webhook_header
            .as_ref()
            .map(|(name, value)| SharedHeader::new(name, value));
        Ok(Self {
            client: AxleClient::new(config)?,
            shared_header,
        })
    }

    pub fn client(&self) -> &AxleClient {
        &self.client
    }

    /// The `POST /ignition` body for a session: our link id travels in the flat metadata, next
    /// to (and winning over) the caller's own keys.
    pub fn ignition_body(request: &LinkSessionRequest) -> Value {
        let mut metadata: Map<String, Value> = request
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        metadata.insert(
            LINK_ID_METADATA_KEY.to_owned(),
            Value::String(request.link_id.to_string()),
        );
        let mut body = json!({
            "user": { "id": request.user_id.as_str() },
            "metadata": metadata,
            "webhookUri": request.webhook_url.expose_secret(),
        });
        if let Some(redirect) = &request.redirect_uri {
            body["redirectUri"] = Value::String(redirect.clone());
        }
        body
    }

    async fn ignition(&self, request: &LinkSessionRequest) -> Result<LinkSession, ProviderError> {
        let started = self
            .client
            .start_ignition(Self::ignition_body(request))
            .await?;
        let url = started
            .ignition_uri
            .ok_or_else(|| ProviderError::Malformed {
                provider: PROVIDER,
                message: "Start Ignition answered without an `ignitionUri`".to_owned(),
            })?;
        tracing::info!(link_id = %request.link_id, "Axle Ignition session started");
        // An Ignition never expires.
        Ok(LinkSession {
            url,
            expires_at: None,
        })
    }

    async fn policy_snapshot(
        &self,
        token: &SecretString,
        policy_id: &str,
        term: PolicyTerm,
    ) -> Result<coverwatch_core::policy::PolicySnapshot, ProviderError> {
        let raw = self.client.get_policy(token, policy_id, term).await?;
        normalize::policy_snapshot(raw, policy_id, term).ok_or_else(|| ProviderError::Malformed {
            provider: PROVIDER,
            message: format!("the Policy {policy_id} is not a JSON object"),
        })
    }

    async fn account_snapshot(
        &self,
        token: &SecretString,
        account_id: &str,
    ) -> Result<coverwatch_core::policy::AccountSnapshot, ProviderError> {
        let raw = self.client.get_account(token, account_id).await?;
        normalize::account_snapshot(raw, account_id).ok_or_else(|| ProviderError::Malformed {
            provider: PROVIDER,
            message: format!("the Account {account_id} is not a JSON object"),
        })
    }
}

fn rejected(kind: RejectionKind, message: impl Into<String>) -> ProviderError {
    ProviderError::Rejected {
        provider: PROVIDER,
        kind,
        message: message.into(),
        vendor: VendorErrorInfo::default(),
    }
}

/// The external-id kind of a policy an account-less grant reached: `policy` for the first,
/// `policy.2`, `policy.3`, … for any further ones (a kind holds one id per link).
const POLICY_KIND: &str = "policy";

fn policy_external_ids(policy_ids: &[String]) -> BTreeMap<String, String> {
    policy_ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let kind = if i == 0 {
                POLICY_KIND.to_owned()
            } else {
                format!("{POLICY_KIND}.{}", i + 1)
            };
            (kind, id.clone())
        })
        .collect()
}

/// The policies of an account-less grant, in the order the exchange named them.
fn granted_policies(access: &LinkAccess) -> Vec<String> {
    let mut found: Vec<(usize, String)> = access
        .external_ids
        .iter()
        .filter_map(|(kind, id)| {
            let rank = match kind.strip_prefix(POLICY_KIND)? {
                "" => 1,
                rest => rest.strip_prefix('.')?.parse().ok()?,
            };
            Some((rank, id.clone()))
        })
        .collect();
    found.sort();
    found.into_iter().map(|(_, id)| id).collect()
}

fn access_token(access: &LinkAccess) -> Result<&SecretString, ProviderError> {
    access.secret.as_ref().ok_or_else(|| {
        rejected(
            RejectionKind::FailedPrecondition,
            format!("link {} has no Axle access token", access.link_id),
        )
    })
}

#[async_trait]
impl Provider for AxleProvider {
    fn kind(&self) -> ProviderId {
        PROVIDER
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            in_app_reconnect: false,
            on_demand_refresh: false,
            per_link_webhook_url: true,
            expected_refresh_interval: EXPECTED_REFRESH_INTERVAL,
            // The Ignition's authCode, from the webhook or the caller's redirect.
            one_time_completion_code: true,
            // Relinking the same account returns the same access token and resumes monitoring.
            relink_resumes_monitoring: true,
        }
    }

    async fn start_link_session(
        &self,
        request: &LinkSessionRequest,
    ) -> Result<LinkSession, ProviderError> {
        self.ignition(request).await
    }

    async fn complete_link(&self, completion: &Completion) -> Result<LinkGrant, ProviderError> {
        let code = completion.code.as_ref().ok_or_else(|| {
            rejected(
                RejectionKind::InvalidArgument,
                "an Axle link completes with the Ignition's authCode, and none was given",
            )
        })?;
        let exchanged = match self.client.exchange_token(code).await {
            Ok(exchanged) => exchanged,
            Err(err @ AxleError::Api { status, .. })
                if (400..500).contains(&status) && !matches!(status, 401 | 403 | 408 | 429) =>
            {
                // Axle documents no error for this; a client error on a well-formed exchange
                // is the one-time code: expired (10 minutes) or spent.
                let vendor = err.vendor_info();
                let AxleError::Api { message, .. } = err else {
                    unreachable!("matched above")
                };
                return Err(ProviderError::Rejected {
                    provider: PROVIDER,
                    kind: RejectionKind::FailedPrecondition,
                    message: format!(
                        "the one-time Axle authCode expired (codes last 10 minutes) or was \
                         already used; the user has to complete Ignition again (Axle: {message})"
                    ),
                    vendor,
                });
            }
            Err(err) => return Err(err.into()),
        };
        let malformed = |what: &str| ProviderError::Malformed {
            provider: PROVIDER,
            message: format!("Exchange Token answered without `{what}`"),
        };
        let policy_ids = exchanged.policy_ids();
        let secret = exchanged
            .access_token
            .ok_or_else(|| malformed("accessToken"))?;
        let Some(account) = exchanged.account else {
            // A `manual` or `proxy` completion (a document, a form, or done on the user's
            // behalf) reaches a policy with no carrier account behind it.
            if policy_ids.is_empty() {
                return Err(malformed("account` or `policy"));
            }
            tracing::info!(
                policies = policy_ids.len(),
                "Axle authCode exchanged for policies without an account"
            );
            return Ok(LinkGrant {
                secret: Some(secret),
                external_ids: policy_external_ids(&policy_ids),
                account_key: None,
            });
        };
        tracing::info!(account = %account, policies = policy_ids.len(), "Axle authCode exchanged");
        Ok(LinkGrant {
            secret: Some(secret),
            external_ids: BTreeMap::from([(ACCOUNT_KIND.to_owned(), account.clone())]),
            account_key: Some(account),
        })
    }

    fn authenticate_webhook(
        &self,
        webhook: &InboundWebhook,
    ) -> Result<AuthenticatedWebhook, WebhookRejection> {
        webhook::authenticate(webhook, self.shared_header.as_ref())
    }

    fn parse_webhook(&self, webhook: &InboundWebhook) -> Result<ParsedWebhook, ProviderError> {
        webhook::parse(webhook)
    }

    async fn fetch(
        &self,
        access: &LinkAccess,
        data: &DataRef,
    ) -> Result<FetchedData, ProviderError> {
        let token = access_token(access)?;
        let mut fetched = FetchedData::default();
        match data {
            DataRef::All => {
                let Some(account_id) = access.external_ids.get(ACCOUNT_KIND) else {
                    let policies = granted_policies(access);
                    if policies.is_empty() {
                        return Err(rejected(
                            RejectionKind::FailedPrecondition,
                            format!("link {} has no Axle account or policy id", access.link_id),
                        ));
                    }
                    for policy_id in &policies {
                        fetched.policies.push(
                            self.policy_snapshot(token, policy_id, PolicyTerm::Current)
                                .await?,
                        );
                    }
                    return Ok(fetched);
                };
                let account = self.account_snapshot(token, account_id).await?;
                for policy_id in &account.account.policy_ids {
                    fetched.policies.push(
                        self.policy_snapshot(token, policy_id, PolicyTerm::Current)
                            .await?,
                    );
                }
                fetched.account = Some(account);
            }
            DataRef::Account(id) => fetched.account = Some(self.account_snapshot(token, id).await?),
            DataRef::Policy(id) => fetched
                .policies
                .push(self.policy_snapshot(token, id, PolicyTerm::Current).await?),
            DataRef::Renewal(id) => fetched
                .policies
                .push(self.policy_snapshot(token, id, PolicyTerm::Renewal).await?),
            DataRef::Version(_) => {
                return Err(ProviderError::Unsupported {
                    provider: PROVIDER,
                    capability: "versioned data",
                });
            }
        }
        Ok(fetched)
    }

    async fn ensure_monitoring(
        &self,
        _access: &LinkAccess,
    ) -> Result<BTreeMap<String, String>, ProviderError> {
        // Axle monitors an account from the token exchange on; there is nothing to switch on.
        Ok(BTreeMap::new())
    }

    async fn start_reconnect(
        &self,
        _access: &LinkAccess,
        request: &LinkSessionRequest,
    ) -> Result<LinkSession, ProviderError> {
        // A new Ignition for the same user; relinking the same account returns the same access
        // token and resumes monitoring. Start Ignition no longer accepts `x-access-token`.
        self.ignition(request).await
    }

    /// Axle's Validate Policy, live, for each stored policy of the link, with the documented
    /// rules the set maps to (see [`validation::map_rules`]).
    async fn vendor_check(
        &self,
        access: &LinkAccess,
        rules: &[Rule],
        stored: &StoredVendorData,
    ) -> Result<VendorVerdict, ProviderError> {
        let (rules_sent, rules_not_sent) = validation::map_rules(rules);
        if rules_sent.is_empty() {
            return Err(rejected(
                RejectionKind::FailedPrecondition,
                format!(
                    "no rule of the set has an equivalent among Axle's documented validation \
                     rules ({})",
                    validation::DOCUMENTED_RULES.join(", ")
                ),
            ));
        }
        if stored.policies.is_empty() {
            return Err(rejected(
                RejectionKind::FailedPrecondition,
                format!(
                    "link {} has no stored Axle policy to validate",
                    access.link_id
                ),
            ));
        }
        let token = access_token(access)?;
        let vendor_rules: Vec<&str> = rules_sent.iter().map(|r| r.vendor_rule.as_str()).collect();
        let mut policies = Vec::with_capacity(stored.policies.len());
        for (policy_id, _) in &stored.policies {
            let data = self
                .client
                .validate_policy(token, policy_id, &vendor_rules)
                .await?;
            let read = validation::parse_answer(policy_id, &data).map_err(|message| {
                ProviderError::Malformed {
                    provider: PROVIDER,
                    message: format!("Validate Policy for {policy_id}: {message}"),
                }
            })?;
            policies.push(read);
        }
        Ok(AxleValidation {
            rules_sent,
            rules_not_sent,
            policies,
        }
        .into())
    }

    async fn descope(&self, access: &LinkAccess) -> Result<(), ProviderError> {
        let Some(token) = access.secret.as_ref() else {
            // Never exchanged, so never monitored: nothing to stop.
            return Ok(());
        };
        match self.client.descope_token(token).await {
            Ok(()) => Ok(()),
            Err(AxleError::Api {
                status, message, ..
            }) if status == 409
                || (status == 400 && message.to_ascii_lowercase().contains("already")) =>
            {
                tracing::info!(link_id = %access.link_id, "Axle token was already descoped");
                Ok(())
            }
            Err(err) => Err(err.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coverwatch_core::ids::{LinkId, TenantId, UserId};

    fn request() -> LinkSessionRequest {
        LinkSessionRequest {
            link_id: LinkId::new(),
            tenant_id: "acme".parse::<TenantId>().unwrap(),
            user_id: "user-42".parse::<UserId>().unwrap(),
            metadata: BTreeMap::from([
                ("loan".to_owned(), "L-7".to_owned()),
                (LINK_ID_METADATA_KEY.to_owned(), "spoofed".to_owned()),
            ]),
            redirect_uri: Some("https://app.example/done".into()),
            webhook_url: SecretString::from("https://hooks.example/webhooks/axle/tok".to_owned()),
            session_proof: SecretString::from("unused: Axle webhooks name their link by URL"),
        }
    }

    #[test]
    fn the_ignition_body_carries_user_metadata_and_uris() {
        let req = request();
        let body = AxleProvider::ignition_body(&req);
        assert_eq!(
            body,
            json!({
                "user": {"id": "user-42"},
                "metadata": {"loan": "L-7", "coverwatchLinkId": req.link_id.to_string()},
                "redirectUri": "https://app.example/done",
                "webhookUri": "https://hooks.example/webhooks/axle/tok",
            })
        );
        let mut no_redirect = req;
        no_redirect.redirect_uri = None;
        assert!(
            AxleProvider::ignition_body(&no_redirect)
                .get("redirectUri")
                .is_none()
        );
    }

    #[test]
    fn capabilities() {
        let p = AxleProvider::new(AxleConfig::new("http://127.0.0.1:9", "cli", "sec")).unwrap();
        assert_eq!(p.kind(), PROVIDER);
        assert_eq!(
            p.capabilities(),
            Capabilities {
                in_app_reconnect: false,
                on_demand_refresh: false,
                per_link_webhook_url: true,
                expected_refresh_interval: Duration::from_secs(26 * 3600),
                one_time_completion_code: true,
                relink_resumes_monitoring: true,
            }
        );
        assert!(AxleProvider::new(AxleConfig::default()).is_err());
    }

    #[tokio::test]
    async fn calls_without_a_token_are_refused_before_any_request() {
        let p = AxleProvider::new(AxleConfig::new("http://127.0.0.1:9", "cli", "sec")).unwrap();
        let access = LinkAccess {
            link_id: LinkId::new(),
            secret: None,
            secrets: BTreeMap::new(),
            external_ids: BTreeMap::new(),
        };
        assert!(matches!(
            p.fetch(&access, &DataRef::All).await,
            Err(ProviderError::Rejected {
                kind: RejectionKind::FailedPrecondition,
                ..
            })
        ));
        assert!(p.descope(&access).await.is_ok());
        assert!(p.ensure_monitoring(&access).await.unwrap().is_empty());
        let no_code = Completion {
            code: None,
            data: DataRef::All,
        };
        assert!(matches!(
            p.complete_link(&no_code).await,
            Err(ProviderError::Rejected {
                kind: RejectionKind::InvalidArgument,
                ..
            })
        ));
        let with_token = LinkAccess {
            secret: Some(SecretString::from("t".to_owned())),
            ..access
        };
        assert!(matches!(
            p.fetch(&with_token, &DataRef::All).await,
            Err(ProviderError::Rejected {
                kind: RejectionKind::FailedPrecondition,
                ..
            })
        ));
        assert!(matches!(
            p.fetch(&with_token, &DataRef::Version("v".into())).await,
            Err(ProviderError::Unsupported { .. })
        ));
        assert!(matches!(
            p.refresh(&with_token).await,
            Err(ProviderError::Unsupported { .. })
        ));
    }
}
