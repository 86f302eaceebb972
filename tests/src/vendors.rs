//! Every vendor, one way: the shared end-to-end cases (`tests/tests/vendors.rs`) iterate the
//! vendors the server registered, and reach each one's vendor side through a [`Driver`]: how the
//! end-user completes its hosted session, how its carrier changes and cancels a policy, whether
//! it still monitors an account, and what a genuine and a forged delivery look like.
//!
//! A registered vendor without a driver fails the shared cases ([`Driver::of`]), so a vendor
//! added to the wiring cannot go untested by being skipped.

use std::sync::Arc;

use chrono::Utc;
use coverwatch_core::{ProviderId, VendorPlugin};
use coverwatch_sandbox::canopy::{Scenario, ScenarioAction, ScenarioTarget, fixtures};
use serde_json::{Value, json};

use crate::flows::{self, Browser, DEADLINE, sandbox};
use crate::{Client, TestServer, eventually, v1};

/// The test-only vendors registered beside the service's own: adding a vendor crate to the
/// shared cases is one line here (and its [`Driver`]).
pub fn test_vendors() -> Vec<Arc<dyn VendorPlugin>> {
    vec![coverwatch_vendor_acme::plugin()]
}

impl TestServer {
    /// The service's vendors and [`test_vendors`], each against its simulator.
    pub async fn start_every_vendor(config: coverwatch::Config) -> Self {
        Self::start_with_plugins(config, test_vendors()).await
    }

    /// Every vendor this server registered, in the registry's order.
    pub fn vendors(&self) -> Vec<ProviderId> {
        self.app.engine.providers().kinds().cloned().collect()
    }
}

/// A link whose end-user completed the vendor's session.
#[derive(Debug, Clone)]
pub struct Linked {
    pub link_id: String,
    pub session_url: String,
    pub account_id: String,
    /// The policy the cases change and cancel.
    pub policy_id: String,
}

/// One delivery to the webhook listener: where, with which headers, what body.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The dedupe key the inbox would file it under (`id:…`), when it names an event id.
    pub event_id: Option<String>,
}

/// A genuine delivery and the same delivery forged, for one pending link.
#[derive(Debug, Clone)]
pub struct Probe {
    pub genuine: Delivery,
    pub forged: Delivery,
    /// The `reason` label the listener counts the forged one under.
    pub forged_reason: &'static str,
}

/// The vendor side of one vendor, as the shared cases need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    Axle,
    Canopy,
    Acme,
}

fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", uuid_like())
}

fn uuid_like() -> String {
    // Unique per call within the process and across processes on the same machine.
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}_{}_{}",
        std::process::id(),
        Utc::now().timestamp_nanos_opt().unwrap_or_default(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn query_param(url: &str, name: &str) -> Option<String> {
    url::Url::parse(url)
        .ok()?
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// The Acme simulator's base URL and the session id, read from a hosted-session URL
/// (`{base}/hosted/{session}`).
fn acme_session(session_url: &str) -> (String, String) {
    let (base, session) = session_url
        .rsplit_once("/hosted/")
        .unwrap_or_else(|| panic!("not an Acme hosted session URL: {session_url}"));
    (base.to_owned(), session.to_owned())
}

async fn acme_sim(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Value,
) -> Value {
    let response = http
        .request(method, url)
        .json(&body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("Acme simulator {url}: {e}"));
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    assert!(status.is_success(), "Acme simulator {url}: {status} {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

impl Driver {
    /// The driver of a registered vendor; a vendor without one fails the test, naming it.
    pub fn of(id: &ProviderId) -> Self {
        match id.as_str() {
            "axle" => Driver::Axle,
            "canopy" => Driver::Canopy,
            coverwatch_vendor_acme::ID => Driver::Acme,
            other => panic!(
                "registered vendor `{other}` has no driver in tests/src/vendors.rs: the shared \
                 cases cannot run it, and a vendor is not left untested"
            ),
        }
    }

    /// StartLink for `id`, over gRPC by its `provider_id` (the `Provider` enum names only the
    /// service's own vendors).
    pub async fn start_link(client: &Client, id: &ProviderId, user: &str) -> v1::StartLinkResponse {
        client
            .clone()
            .start_link(v1::StartLinkRequest {
                provider_id: id.to_string(),
                user_id: user.to_owned(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("StartLink {id}: {e}"))
            .into_inner()
    }

    /// The end-user completes `started`'s hosted session; returns once `link.completed` is
    /// recorded and the link's policies are readable.
    pub async fn complete(
        self,
        server: &TestServer,
        client: &Client,
        started: &v1::StartLinkResponse,
    ) -> Linked {
        let browser = Browser::new();
        let link_id = started.link.as_ref().expect("a link").id.clone();
        let url = &started.session_url;
        match self {
            Driver::Axle => {
                let landing = browser.get(url).await;
                assert_eq!(landing.status, 200, "{}", landing.html);
                let login = browser
                    .submit(&landing, "carrier-form", &[("carrier", "state-farm")])
                    .await;
                let done = browser
                    .submit(
                        &login,
                        "login-form",
                        &[("username", "username"), ("password", "password")],
                    )
                    .await;
                assert_eq!(done.element_text("status").as_deref(), Some("complete"));
            }
            Driver::Canopy => {
                let widget = browser.get(url).await;
                assert_eq!(widget.status, 200, "{}", widget.html);
                let submitted = browser
                    .submit(
                        &widget,
                        "login",
                        &[
                            ("consent", "yes"),
                            ("insurerName", "statefarm"),
                            ("username", fixtures::TestLogin::Good.username()),
                            ("password", fixtures::GOOD_PASSWORD),
                        ],
                    )
                    .await;
                assert_eq!(submitted.status, 303, "{}", submitted.html);
            }
            Driver::Acme => {
                let page = browser.get(url).await;
                assert_eq!(page.status, 200, "{}", page.html);
                let done = browser.submit(&page, "consent", &[]).await;
                assert_eq!(done.element_text("status").as_deref(), Some("completed"));
            }
        }
        let events = flows::wait_for_event(client, &link_id, v1::EventKind::LinkCompleted).await;
        let Some(v1::event::Payload::LinkCompleted(completed)) =
            flows::last_of(&events, v1::EventKind::LinkCompleted)
                .payload
                .clone()
        else {
            panic!("link.completed without its payload")
        };
        let account_id = completed
            .account_external_id
            .expect("link.completed names the account");
        let policies = eventually("the link's policies", DEADLINE, || async {
            let policies = flows::list_policies(client, &link_id).await;
            (!policies.is_empty()).then_some(policies)
        })
        .await;
        let policy_id = match self {
            // Canopy's pull holds an auto and a home policy; the scenarios below act on the
            // auto one.
            Driver::Canopy => policies
                .iter()
                .find(|p| p.policy_type() == v1::PolicyType::Auto)
                .expect("an auto policy")
                .external_id
                .clone(),
            _ => completed
                .policy_external_ids
                .first()
                .cloned()
                .unwrap_or_else(|| policies[0].external_id.clone()),
        };
        let linked = Linked {
            link_id,
            session_url: url.clone(),
            account_id,
            policy_id,
        };
        // Monitoring starts after completion, on the worker's time; changes are only sent for
        // a monitored account.
        eventually("the vendor to monitor the account", DEADLINE, || async {
            self.is_monitored(server, &linked).await.then_some(())
        })
        .await;
        if self == Driver::Canopy {
            // A pull tells of itself in several deliveries (POLICIES_AVAILABLE, then COMPLETE
            // once documents are in); the link completes on the first. Wait for the last, so
            // that what the case reads next is not moved by the rest of the session.
            let pull = self
                .canopy_pull(server, &linked)
                .expect("the link's pull exists");
            sandbox(server)
                .deliveries()
                .wait_until(DEADLINE, |all| {
                    all.iter()
                        .any(|a| {
                            a.event_type == "COMPLETE"
                                && a.delivered()
                                && a.json().is_some_and(|b| b["pull_id"] == pull.as_str())
                        })
                        .then_some(())
                })
                .await
                .unwrap_or_else(|e| panic!("COMPLETE of {pull} never delivered: {e:?}"));
        }
        worked_off(server).await;
        linked
    }

    /// Whether the vendor still monitors the linked account.
    pub async fn is_monitored(self, server: &TestServer, linked: &Linked) -> bool {
        match self {
            Driver::Axle => sandbox(server).axle().is_monitored(&linked.account_id) == Some(true),
            Driver::Canopy => {
                let canopy = sandbox(server).canopy();
                canopy.monitorings().iter().any(|m| {
                    m.status == "ACTIVE"
                        && self.canopy_pull(server, linked).is_some_and(|pull| {
                            canopy.monitoring_pull_ids(&m.monitoring_id).contains(&pull)
                        })
                })
            }
            Driver::Acme => {
                let (base, session) = acme_session(&linked.session_url);
                let http = &server.http;
                let session = acme_sim(
                    http,
                    reqwest::Method::GET,
                    &format!("{base}/_sim/sessions/{session}"),
                    Value::Null,
                )
                .await;
                let account = session["account"].as_str().expect("a completed session");
                acme_sim(
                    http,
                    reqwest::Method::GET,
                    &format!("{base}/_sim/accounts/{account}"),
                    Value::Null,
                )
                .await["monitored"]
                    == true
            }
        }
    }

    /// The Canopy pull the link's session made (its widget session's pull, by our link id).
    fn canopy_pull(self, server: &TestServer, linked: &Linked) -> Option<String> {
        let canopy = sandbox(server).canopy();
        canopy.pull_ids().into_iter().find(|id| {
            canopy.pull(id).is_some_and(|p| {
                p.meta_data["coverwatch_link_id"].as_str() == Some(linked.link_id.as_str())
            })
        })
    }

    /// The carrier changes the policy without cancelling it (the premium, or a lienholder where
    /// the vendor's simulator has no premium scenario); the vendor tells us.
    pub async fn change_policy(self, server: &TestServer, linked: &Linked) {
        match self {
            Driver::Axle => {
                sandbox(server)
                    .axle()
                    .modify_policy(&linked.policy_id, &json!({"premium": 1400.25}))
                    .expect("Axle modifies the policy");
            }
            Driver::Canopy => {
                self.canopy_scenario(
                    server,
                    linked,
                    ScenarioAction::SetLienholder {
                        vin: None,
                        lien_holder: Some("Acme Credit Union".into()),
                    },
                )
                .await
            }
            Driver::Acme => {
                let (base, _) = acme_session(&linked.session_url);
                let answer = acme_sim(
                    &server.http,
                    reqwest::Method::POST,
                    &format!("{base}/_sim/policies/{}/premium", linked.policy_id),
                    json!({"premium_cents": 101_500}),
                )
                .await;
                assert_eq!(answer["notified"], true, "a monitored account is notified");
            }
        }
    }

    /// Fresh data from the vendor with nothing a caller would call a change; returns once one
    /// more `data.refreshed` of the link arrived and the inbox was worked off.
    pub async fn refresh_without_change(
        self,
        server: &TestServer,
        client: &Client,
        linked: &Linked,
    ) {
        let refreshed = |events: &[v1::Event]| {
            events
                .iter()
                .filter(|e| e.kind() == v1::EventKind::DataRefreshed)
                .count()
        };
        let before = refreshed(&flows::link_events(client, &linked.link_id).await);
        match self {
            // Axle has no refresh on demand: the carrier changes a field coverwatch does not
            // keep (an insured's date of birth), Axle announces the policy, it is read again.
            Driver::Axle => {
                let axle = sandbox(server).axle();
                let mut insureds =
                    axle.policy(&linked.policy_id).expect("the policy")["insureds"].clone();
                insureds[0]["dateOfBirth"] = json!(format!("1985-04-{:02}", 1 + before % 28));
                let outcome = axle
                    .modify_policy(&linked.policy_id, &json!({ "insureds": insureds }))
                    .expect("Axle modifies the policy");
                assert!(outcome.event.is_some(), "Axle announces the policy");
            }
            // Canopy refreshes on the caller's request: a new pull of the same data.
            Driver::Canopy => {
                let deliveries = sandbox(server).deliveries();
                let before = canopy_completes(&deliveries.entries());
                client
                    .clone()
                    .refresh_link(v1::RefreshLinkRequest {
                        link_id: linked.link_id.clone(),
                    })
                    .await
                    .expect("RefreshLink");
                deliveries
                    .wait_until(DEADLINE, |all| {
                        (canopy_completes(all) > before).then_some(())
                    })
                    .await
                    .unwrap_or_else(|e| panic!("the refresh pull never completed: {e:?}"));
            }
            // Acme refreshes on its own schedule; its simulator runs one now.
            Driver::Acme => {
                let (base, _) = acme_session(&linked.session_url);
                let answer = acme_sim(
                    &server.http,
                    reqwest::Method::POST,
                    &format!("{base}/_sim/accounts/{}/refresh", linked.account_id),
                    Value::Null,
                )
                .await;
                assert_eq!(answer["notified"], true, "a monitored account is notified");
            }
        }
        eventually("one more data.refreshed", DEADLINE, || async {
            (refreshed(&flows::link_events(client, &linked.link_id).await) > before).then_some(())
        })
        .await;
        worked_off(server).await;
    }

    /// The carrier cancels the policy; the vendor tells us.
    pub async fn cancel_policy(self, server: &TestServer, linked: &Linked) {
        match self {
            Driver::Axle => {
                sandbox(server)
                    .axle()
                    .cancel_policy(&linked.policy_id)
                    .expect("Axle cancels the policy");
            }
            Driver::Canopy => {
                self.canopy_scenario(
                    server,
                    linked,
                    ScenarioAction::CancelPolicy {
                        canceled_date: None,
                    },
                )
                .await
            }
            Driver::Acme => {
                let (base, _) = acme_session(&linked.session_url);
                let answer = acme_sim(
                    &server.http,
                    reqwest::Method::POST,
                    &format!("{base}/_sim/policies/{}/cancel", linked.policy_id),
                    Value::Null,
                )
                .await;
                assert_eq!(answer["notified"], true, "a monitored account is notified");
            }
        }
    }

    /// A change at the carrier that the next pull sees, and that pull started at once through
    /// the account's monitoring (Canopy tells of changes only through pulls). Returns once the
    /// pull's last delivery (COMPLETE) was delivered and worked off, so that nothing of it moves
    /// what the case reads next.
    async fn canopy_scenario(self, server: &TestServer, linked: &Linked, action: ScenarioAction) {
        let pull = self
            .canopy_pull(server, linked)
            .expect("the link's pull exists");
        let deliveries = sandbox(server).deliveries();
        let before = canopy_completes(&deliveries.entries());
        sandbox(server)
            .canopy()
            .apply(
                Scenario::new(ScenarioTarget::pull(&pull).policy_type("AUTO"), action)
                    .and_refresh(),
            )
            .expect("Canopy applies the scenario");
        deliveries
            .wait_until(DEADLINE, |all| {
                (canopy_completes(all) > before).then_some(())
            })
            .await
            .unwrap_or_else(|e| panic!("the refresh pull never completed: {e:?}"));
        worked_off(server).await;
    }

    /// The status a cancelled policy reads as. Axle tells a cancellation as a `policy.modified`
    /// that turns the boolean `isActive` false, without saying why the policy stopped
    /// (docs.axle.insure/guides/policy-events, /guides/monitoring), so it reads as `inactive`;
    /// Canopy's `status` and Acme's name it.
    pub fn cancelled_status(self) -> v1::PolicyStatus {
        match self {
            Driver::Axle => v1::PolicyStatus::Inactive,
            Driver::Canopy | Driver::Acme => v1::PolicyStatus::Cancelled,
        }
    }

    /// A genuine delivery for the pending link `started` and the same delivery forged: what
    /// makes a delivery genuine is the vendor's own rule (a signature, or Axle's per-link URL).
    pub async fn probe(self, server: &TestServer, started: &v1::StartLinkResponse) -> Probe {
        match self {
            Driver::Axle => {
                // Axle signs nothing: events go to the `webhookUri` given at Start Ignition,
                // and authentication is left to that URL (plus optional custom headers arranged
                // with Axle) (docs.axle.insure/guides/monitoring, /guides/ignition-events). So
                // the forgery is the same body on a per-link URL we never issued.
                let token = query_param(&started.session_url, "token").expect("ignition token");
                let webhook = sandbox(server)
                    .axle()
                    .ignition(&token)
                    .expect("the Ignition exists")
                    .webhook_uri
                    .expect("a webhookUri");
                let event_id = unique("evt_probe");
                let body = json!({
                    "id": event_id, "type": "ignition.opened",
                    "createdAt": Utc::now().to_rfc3339(),
                    "data": {"token": token}
                })
                .to_string()
                .into_bytes();
                let forged_url = server.http_url(&format!(
                    "/webhooks/axle/{}",
                    "f".repeat(43) // the shape of a token, never issued
                ));
                Probe {
                    genuine: Delivery {
                        url: webhook,
                        headers: vec![],
                        body: body.clone(),
                        event_id: Some(event_id.clone()),
                    },
                    forged: Delivery {
                        url: forged_url,
                        headers: vec![],
                        body,
                        event_id: Some(event_id),
                    },
                    forged_reason: "unknown_path",
                }
            }
            Driver::Canopy => {
                // `canopy-signature: t=…,s=…`, an HMAC-SHA256 of "{t}.{raw body}" keyed with the
                // webhook's signing secret (docs.usecanopy.com/reference/verifying-webhook-signatures):
                // the forgery is the same body signed with another key.
                let secret = sandbox(server).canopy().config().webhooks[0]
                    .signing_secret
                    .clone();
                let body = json!({"event_type": "AUTH_STATUS", "pull_id": unique("probe")})
                    .to_string()
                    .into_bytes();
                let now = Utc::now().timestamp();
                let sign = |secret: &str| {
                    vec![(
                        "canopy-signature".to_owned(),
                        coverwatch_sandbox::canopy::signature::header_value(secret, now, &body),
                    )]
                };
                let url = server.http_url("/webhooks/canopy");
                Probe {
                    genuine: Delivery {
                        url: url.clone(),
                        headers: sign(&secret),
                        body: body.clone(),
                        event_id: None,
                    },
                    forged: Delivery {
                        url,
                        headers: sign("not-the-teams-signing-secret"),
                        body: body.clone(),
                        event_id: None,
                    },
                    forged_reason: "bad_signature",
                }
            }
            Driver::Acme => {
                let (base, session) = acme_session(&started.session_url);
                let http = &server.http;
                let url = acme_sim(
                    http,
                    reqwest::Method::GET,
                    &format!("{base}/_sim/sessions/{session}"),
                    Value::Null,
                )
                .await["notify_url"]
                    .as_str()
                    .expect("the session's notify URL")
                    .to_owned();
                let event_id = unique("evt_probe");
                let body = json!({"id": event_id, "type": "acme.probe", "data": {}})
                    .to_string()
                    .into_bytes();
                let signed = http
                    .post(format!("{base}/_sim/sign"))
                    .body(body.clone())
                    .send()
                    .await
                    .expect("the simulator signs")
                    .json::<Value>()
                    .await
                    .expect("a signature");
                let header = coverwatch_vendor_acme::signature::HEADER.to_owned();
                let genuine = signed["signature"]
                    .as_str()
                    .expect("a signature")
                    .to_owned();
                let forged = coverwatch_vendor_acme::signature::header_value(
                    "not-acmes-signing-secret",
                    &body,
                );
                Probe {
                    genuine: Delivery {
                        url: url.clone(),
                        headers: vec![(header.clone(), genuine)],
                        body: body.clone(),
                        event_id: Some(event_id.clone()),
                    },
                    forged: Delivery {
                        url,
                        headers: vec![(header, forged)],
                        body,
                        event_id: Some(event_id),
                    },
                    forged_reason: "bad_signature",
                }
            }
        }
    }
}

impl Delivery {
    /// POST it; the listener's status.
    pub async fn send(&self, http: &reqwest::Client) -> u16 {
        let mut request = http
            .post(&self.url)
            .header("content-type", "application/json")
            .body(self.body.clone());
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        request
            .send()
            .await
            .expect("the listener answers")
            .status()
            .as_u16()
    }
}

/// Once no stored delivery waits to be processed.
pub async fn worked_off(server: &TestServer) {
    let store = server.app.engine.store();
    eventually("the inbox to be worked off", DEADLINE, || async {
        (store.count_pending_deliveries().await.ok()? == 0).then_some(())
    })
    .await;
}

/// How many of Canopy's pulls ended: each pull's last delivery is its COMPLETE.
fn canopy_completes(all: &[coverwatch_sandbox::DeliveryAttempt]) -> usize {
    all.iter()
        .filter(|a| a.event_type == "COMPLETE" && a.delivered())
        .count()
}
