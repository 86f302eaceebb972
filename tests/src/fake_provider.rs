//! A test double implementing `Provider`, so that the foundation (listener → inbox → worker →
//! events → gRPC) is tested without either vendor. It registers as Axle-shaped: per-link
//! webhook URLs whose last segment is the link's token.
//!
//! [`FakeProvider::team_wide`] is a second double, registered as Canopy-shaped: one webhook URL
//! for every link (`/webhooks/canopy`), deliveries attributed by the `account` they name.
//!
//! Its deliveries are JSON: `{"id": "...", "type": "...", "account": "...", "policy": {...}}`
//! with types `completed`, `exited`, `failed`, `changed`, `disconnected`, `auth` (sign-in
//! progress: `status` `opened` or `failed`, numbered by `sequence` within `session`), and
//! anything else treated as unknown.
//!
//! It can also be a *buggy* provider, to prove that one poisoned input fails alone: it panics
//! parsing a delivery that names an account of `FakeState::panic_parsing`, and reading the data
//! of an account of `FakeState::panic_fetching`, as a vendor crate with a parsing bug would.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use coverwatch_axle::AxleEventDetail;
use coverwatch_core::event::{AuthStatus, FailureReason, ReconnectReason};
use coverwatch_core::policy::{
    Account, AccountSnapshot, Address, Carrier, ConnectionStatus, Policy, PolicySnapshot,
    PolicyStatus, PolicyTerm, PolicyType,
};
use coverwatch_core::provider::{
    Capabilities, Completion, FetchedData, LinkAccess, LinkGrant, LinkSession, LinkSessionRequest,
    ProviderError, RejectionKind, VendorErrorInfo,
};
use coverwatch_core::webhook::{
    Attribution, AuthenticatedWebhook, DataRef, Happening, InboundWebhook, ParsedWebhook,
    WebhookRejection,
};
use coverwatch_core::{Provider, ProviderId};
use secrecy::{ExposeSecret, SecretString};

/// What the double has been asked, and what it will answer.
#[derive(Default)]
pub struct FakeState {
    /// Webhook URLs handed out, by link id.
    pub webhook_urls: BTreeMap<String, String>,
    /// Policy status served by `fetch`, by account.
    pub statuses: BTreeMap<String, PolicyStatus>,
    pub descoped: Vec<String>,
    /// While set, `fetch` answers as an unavailable vendor.
    pub unavailable: bool,
    /// How long `fetch` takes, as a slow vendor would.
    pub fetch_latency: std::time::Duration,
    /// How many times `fetch` was called.
    pub fetches: u32,
    /// Fetches running now, and the most that ever ran at once.
    pub fetches_in_flight: u32,
    pub max_fetches_in_flight: u32,
    /// Accounts whose deliveries `parse_webhook` panics on.
    pub panic_parsing: BTreeSet<String>,
    /// Accounts whose data `fetch` answers as an unavailable vendor would.
    pub failing_fetching: BTreeSet<String>,
    /// Accounts whose data `fetch` panics on.
    pub panic_fetching: BTreeSet<String>,
    /// Accounts served a homeowners policy on this address instead of an auto policy.
    pub homes: BTreeMap<String, Address>,
}

#[derive(Clone, Default)]
pub struct FakeProvider {
    pub state: Arc<Mutex<FakeState>>,
    /// Canopy-shaped: one team-wide webhook URL, deliveries matched by account.
    team_wide: bool,
}

impl FakeProvider {
    /// The Canopy-shaped double: registers as Canopy, takes deliveries at `/webhooks/canopy`
    /// without a per-link token, and attributes them by the `account` they name.
    pub fn team_wide() -> Self {
        Self {
            team_wide: true,
            ..Self::default()
        }
    }

    pub fn webhook_url(&self, link_id: &str) -> String {
        self.state.lock().unwrap().webhook_urls[link_id].clone()
    }

    pub fn set_status(&self, account: &str, status: PolicyStatus) {
        self.state
            .lock()
            .unwrap()
            .statuses
            .insert(account.into(), status);
    }

    fn policy(&self, account: &str) -> PolicySnapshot {
        let (status, home) = {
            let state = self.state.lock().unwrap();
            let status = state
                .statuses
                .get(account)
                .copied()
                .unwrap_or(PolicyStatus::Active);
            (status, state.homes.get(account).cloned())
        };
        let policy_type = match home {
            Some(_) => PolicyType::Homeowners,
            None => PolicyType::Auto,
        };
        PolicySnapshot {
            policy: Policy {
                external_id: format!("pol-{account}"),
                policy_type,
                carrier: Carrier {
                    id: "fake-carrier".into(),
                    name: Some("Fake Carrier".into()),
                },
                policy_number: Some("FAKE-1".into()),
                status,
                effective_date: None,
                expiration_date: None,
                cancelled_date: None,
                premium_cents: Some(123_456),
                address: home,
                vehicles: vec![],
                dwellings: vec![],
                coverages: vec![],
                insureds: vec![],
                interested_parties: vec![],
                documents: vec![],
            },
            term: PolicyTerm::Current,
            raw: serde_json::json!({"account": account}),
        }
    }
}

fn unavailable() -> ProviderError {
    ProviderError::Unavailable {
        provider: ProviderId::from_static("axle"),
        message: "fake vendor is down".into(),
        vendor: VendorErrorInfo {
            http_status: Some(503),
            ..Default::default()
        },
    }
}

#[async_trait]
impl Provider for FakeProvider {
    fn kind(&self) -> ProviderId {
        if self.team_wide {
            ProviderId::from_static("canopy")
        } else {
            ProviderId::from_static("axle")
        }
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            in_app_reconnect: false,
            on_demand_refresh: false,
            per_link_webhook_url: !self.team_wide,
            expected_refresh_interval: Duration::from_secs(86_400),
            one_time_completion_code: true,
            // Every fake completion names the same account by default; the foundation tests
            // treat each link as its own.
            relink_resumes_monitoring: false,
        }
    }

    async fn start_link_session(
        &self,
        request: &LinkSessionRequest,
    ) -> Result<LinkSession, ProviderError> {
        self.state.lock().unwrap().webhook_urls.insert(
            request.link_id.to_string(),
            request.webhook_url.expose_secret().to_owned(),
        );
        Ok(LinkSession {
            url: format!("https://fake.example/session/{}", request.link_id),
            expires_at: None,
        })
    }

    async fn complete_link(&self, completion: &Completion) -> Result<LinkGrant, ProviderError> {
        let code = completion
            .code
            .as_ref()
            .map(|c| c.expose_secret().to_owned())
            .unwrap_or_default();
        let account = code
            .strip_prefix("code-")
            .ok_or_else(|| ProviderError::Rejected {
                provider: ProviderId::from_static("axle"),
                kind: RejectionKind::FailedPrecondition,
                message: "the one-time code expired or was already used".into(),
                vendor: VendorErrorInfo::default(),
            })?
            .to_owned();
        Ok(LinkGrant {
            secret: Some(SecretString::from(format!("token-{account}"))),
            external_ids: BTreeMap::from([("account".into(), account.clone())]),
            account_key: Some(account),
        })
    }

    fn authenticate_webhook(
        &self,
        webhook: &InboundWebhook,
    ) -> Result<AuthenticatedWebhook, WebhookRejection> {
        if webhook.path.is_empty() && !self.team_wide {
            return Err(WebhookRejection::UnknownPath);
        }
        let id = serde_json::from_slice::<serde_json::Value>(&webhook.body)
            .ok()
            .and_then(|v| v.get("id").and_then(|id| id.as_str()).map(str::to_owned));
        Ok(AuthenticatedWebhook {
            vendor_event_id: id,
            link_token: (!self.team_wide).then(|| webhook.path.clone()),
            late_by_seconds: None,
        })
    }

    fn parse_webhook(&self, webhook: &InboundWebhook) -> Result<ParsedWebhook, ProviderError> {
        let body: serde_json::Value =
            serde_json::from_slice(&webhook.body).map_err(|e| ProviderError::Malformed {
                provider: ProviderId::from_static("axle"),
                message: e.to_string(),
            })?;
        let kind = body["type"].as_str().unwrap_or_default().to_owned();
        let account = body["account"].as_str().unwrap_or("acc-1").to_owned();
        // Decided under the lock, raised after it is released: a test double that poisoned its
        // own mutex would fail every later call, which is not the bug being simulated.
        let poisoned = self.state.lock().unwrap().panic_parsing.contains(&account);
        if poisoned {
            panic!("fake provider cannot parse the delivery for account {account}");
        }
        let attribution = if self.team_wide {
            Attribution::External {
                kind: "account".into(),
                value: account.clone(),
            }
        } else {
            Attribution::Unknown
        };
        let happening = match kind.as_str() {
            "completed" => Happening::SessionCompleted {
                code: Some(SecretString::from(format!("code-{account}"))),
                data: DataRef::All,
            },
            "exited" => Happening::SessionExited {
                step: Some("carrier".into()),
            },
            "failed" => Happening::SessionFailed {
                reason: FailureReason::ProviderError,
                message: Some("carrier down".into()),
            },
            "changed" => Happening::DataChanged {
                data: DataRef::All,
                hinted: vec![],
            },
            "auth" => Happening::AuthProgress {
                status: match body["status"].as_str() {
                    Some("failed") => AuthStatus::NotAuthenticated,
                    Some("verify") => AuthStatus::IdentityVerification,
                    Some("success") => AuthStatus::Success,
                    _ => AuthStatus::Opened,
                },
                login_error_message: None,
                verification_options: vec![],
                sequence: body["sequence"].as_i64(),
                sequence_scope: body["session"].as_str().unwrap_or_default().to_owned(),
            },
            "disconnected" => Happening::ReconnectRequired {
                reason: ReconnectReason::CredentialsExpired,
                reconnect_url: None,
                reconnect_token: None,
            },
            other => Happening::Vendor {
                vendor_type: other.to_owned(),
            },
        };
        Ok(ParsedWebhook {
            attribution: vec![attribution],
            occurred_at: None,
            // Axle's detail whichever vendor the double plays: it is the one detail that
            // carries the delivery's own event id, which tests read back to check ordering.
            detail: AxleEventDetail {
                event_id: body["id"].as_str().map(str::to_owned),
                event_type: kind,
                reference: None,
                ignition_token: None,
                result: None,
            }
            .into(),
            happenings: vec![happening],
        })
    }

    async fn fetch(
        &self,
        access: &LinkAccess,
        _data: &DataRef,
    ) -> Result<FetchedData, ProviderError> {
        let latency = {
            let mut state = self.state.lock().unwrap();
            state.fetches += 1;
            if state.unavailable {
                return Err(unavailable());
            }
            state.fetches_in_flight += 1;
            state.max_fetches_in_flight = state.max_fetches_in_flight.max(state.fetches_in_flight);
            state.fetch_latency
        };
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let account = access
            .external_ids
            .get("account")
            .cloned()
            .unwrap_or_default();
        let (poisoned, failing) = {
            let mut state = self.state.lock().unwrap();
            state.fetches_in_flight -= 1;
            (
                state.panic_fetching.contains(&account),
                state.failing_fetching.contains(&account),
            )
        };
        if failing {
            return Err(unavailable());
        }
        if poisoned {
            let postal_code = self
                .policy(&account)
                .policy
                .address
                .and_then(|a| a.postal_code);
            panic!(
                "fake provider cannot normalize the data of account {account} (postal code {postal_code:?})"
            );
        }
        Ok(FetchedData {
            account: Some(AccountSnapshot {
                account: Account {
                    external_id: account.clone(),
                    carrier: Carrier {
                        id: "fake-carrier".into(),
                        name: None,
                    },
                    first_name: Some("Jo".into()),
                    last_name: Some("Doe".into()),
                    email: None,
                    phone: None,
                    connection: ConnectionStatus::Active,
                    policy_ids: vec![format!("pol-{account}")],
                    refreshed_at: None,
                },
                raw: serde_json::json!({"id": account}),
            }),
            policies: vec![self.policy(&account)],
            external_ids: BTreeMap::new(),
            vendor_reasons: BTreeMap::new(),
        })
    }

    async fn ensure_monitoring(
        &self,
        _access: &LinkAccess,
    ) -> Result<BTreeMap<String, String>, ProviderError> {
        Ok(BTreeMap::new())
    }

    async fn start_reconnect(
        &self,
        access: &LinkAccess,
        request: &LinkSessionRequest,
    ) -> Result<LinkSession, ProviderError> {
        self.start_link_session(request).await.map(|mut s| {
            s.url = format!("{}?reconnect={}", s.url, access.link_id);
            s
        })
    }

    async fn descope(&self, access: &LinkAccess) -> Result<(), ProviderError> {
        self.state
            .lock()
            .unwrap()
            .descoped
            .push(access.link_id.to_string());
        Ok(())
    }
}
