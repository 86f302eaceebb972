//! Canopy Connect end to end (issue 5): the real server, its real Canopy provider against the
//! embedded sandbox, a fresh database. The hosted widget is driven by plain form posts, the
//! caller's side through gRPC, Canopy's side through the sandbox's scenario API, and
//! hand-signed deliveries where a test needs a delivery Canopy would not send on its own.

use chrono::{DateTime, Months, NaiveTime, TimeZone, Utc};
use coverwatch_core::ProviderId;
use coverwatch_proto::v1::admin_service_client::AdminServiceClient;
use coverwatch_sandbox::canopy::{
    ConnectRequest, RetrySigning, Scenario, ScenarioAction, ScenarioTarget, SignatureMode, fixtures,
};
use coverwatch_sandbox::{CanopySim, DeliveryAttempt, FaultEffect, FaultRule, FaultTarget};
use coverwatch_tests::flows::{
    Browser, DEADLINE, Page, get_account, get_link, kinds, last_of, link_events, list_policies,
    sandbox, start_link, wait_for_event, wait_for_events, wait_for_state,
};
use coverwatch_tests::{Client, TENANT_A, TENANT_B, TestServer, eventually, test_config, v1};
use serde_json::{Value, json};
use tonic::Code;

use v1::EventKind as K;

struct Canopy {
    server: TestServer,
    client: Client,
    browser: Browser,
}

/// A link the end-user completed through the widget.
struct Linked {
    link_id: String,
    pull_id: String,
    linked_at: DateTime<Utc>,
}

impl Canopy {
    async fn start() -> Self {
        Self::start_with(test_config().await).await
    }

    async fn start_with(config: coverwatch::Config) -> Self {
        let server = TestServer::start(config, None).await;
        let client = server.client(TENANT_A).await;
        Self {
            server,
            client,
            browser: Browser::new(),
        }
    }

    fn sim(&self) -> &CanopySim {
        sandbox(&self.server).canopy()
    }

    fn store(&self) -> &coverwatch_store::Store {
        self.server.app.engine.store()
    }

    /// The secret Canopy signs our deliveries with.
    fn signing_secret(&self) -> String {
        self.sim().config().webhooks[0].signing_secret.clone()
    }

    async fn start_link(&self, user: &str) -> v1::StartLinkResponse {
        start_link(&self.client, v1::Provider::Canopy, user, None, None).await
    }

    /// Through the hosted widget: consent, State Farm, the login; returns the pull's status page.
    async fn widget_login(&self, session_url: &str, username: &str) -> Page {
        let widget = self.browser.get(session_url).await;
        assert_eq!(widget.status, 200, "{}", widget.html);
        let submitted = self
            .browser
            .submit(
                &widget,
                "login",
                &[
                    ("consent", "yes"),
                    ("insurerName", "statefarm"),
                    ("username", username),
                    ("password", fixtures::GOOD_PASSWORD),
                ],
            )
            .await;
        assert_eq!(submitted.status, 303, "{}", submitted.html);
        self.browser.follow(&submitted).await
    }

    /// StartLink, the widget (with its verification steps for the MFA logins), and the link
    /// ACTIVE once every delivery of the pull was worked off.
    async fn link(&self, user: &str, login: fixtures::TestLogin) -> Linked {
        let started = self.start_link(user).await;
        let link_id = started.link.unwrap().id;
        let linked_at = Utc::now();
        let mut page = self
            .widget_login(&started.session_url, login.username())
            .await;
        let pull_id = page.body_data("pull-id").expect("the pull's status page");
        if page.body_data("pull-status").as_deref() == Some("IDENTITY_VERIFICATION_OPTIONS") {
            let sent = self
                .browser
                .submit(&page, "idvoptions", &[("optionKey", "email")])
                .await;
            page = self.browser.follow(&sent).await;
        }
        if page.body_data("pull-status").as_deref() == Some("IDENTITY_VERIFICATION") {
            let sent = self
                .browser
                .submit(&page, "idv", &[("mfaValue", "123456")])
                .await;
            assert_eq!(sent.status, 303);
        }
        self.settled_after(&pull_id, "COMPLETE").await;
        assert_eq!(
            get_link(&self.client, &link_id).await.state(),
            v1::LinkState::Active
        );
        Linked {
            link_id,
            pull_id,
            linked_at,
        }
    }

    /// Once Canopy delivered `event_type` of `pull` and every stored delivery was worked off.
    async fn settled_after(&self, pull: &str, event_type: &str) {
        let (wanted_pull, event) = (pull.to_owned(), event_type.to_owned());
        sandbox(&self.server)
            .deliveries()
            .wait_until(DEADLINE, move |all| {
                all.iter()
                    .find(|a| {
                        a.event_type == event
                            && a.delivered()
                            && a.json()
                                .is_some_and(|b| b["pull_id"] == wanted_pull.as_str())
                    })
                    .cloned()
            })
            .await
            .unwrap_or_else(|e| panic!("{event_type} of {pull} never delivered: {e:?}"));
        self.worked_off().await;
    }

    /// Once no stored delivery waits to be processed.
    async fn worked_off(&self) {
        eventually("the inbox to be worked off", DEADLINE, || async {
            (self.store().count_pending_deliveries().await.unwrap() == 0).then_some(())
        })
        .await;
    }

    /// Canopy's webhook envelope, as the sandbox builds it.
    fn envelope(&self, event_type: &str, pull_id: &str, meta_data: Value, data: Value) -> Value {
        json!({
            "widget_id": self.sim().config().widget_id,
            "team_id": self.sim().team_id(),
            "pull_id": pull_id,
            "status": "PULLING_DATA",
            "meta_data": meta_data,
            "event_type": event_type,
            "account_identifier": null,
            "is_monitored": false,
            "monitoring": null,
            "data": data,
        })
    }

    /// POST a delivery with a `canopy-signature` over `t` = now + `skew` seconds.
    async fn post_signed(&self, body: &[u8], secret: &str, skew: i64) -> u16 {
        let t = Utc::now().timestamp() + skew;
        let header = coverwatch_sandbox::canopy::signature::header_value(secret, t, body);
        self.post_raw(body, Some(header)).await
    }

    async fn post_raw(&self, body: &[u8], signature: Option<String>) -> u16 {
        let mut request = self
            .server
            .http
            .post(self.server.http_url("/webhooks/canopy"))
            .header("content-type", "application/json")
            .body(body.to_vec());
        if let Some(signature) = signature {
            request = request.header("canopy-signature", signature);
        }
        request.send().await.unwrap().status().as_u16()
    }

    async fn stop(self) {
        self.server.stop().await;
    }
}

fn payload(event: &v1::Event) -> &v1::event::Payload {
    event.payload.as_ref().expect("an event payload")
}

fn count(events: &[v1::Event], kind: K) -> usize {
    events.iter().filter(|e| e.kind() == kind).count()
}

fn auth_statuses(events: &[v1::Event]) -> Vec<v1::AuthStatus> {
    events
        .iter()
        .filter_map(|e| match payload(e) {
            v1::event::Payload::LinkAuthStatus(s) => Some(s.status()),
            _ => None,
        })
        .collect()
}

fn external_ids(
    access: &coverwatch_core::provider::LinkAccess,
) -> std::collections::BTreeMap<String, String> {
    access.external_ids.clone()
}

async fn access_of(canopy: &Canopy, link_id: &str) -> coverwatch_core::provider::LinkAccess {
    canopy
        .store()
        .link_access(&TENANT_A.0.parse().unwrap(), &link_id.parse().unwrap())
        .await
        .unwrap()
}

/// The pull meta data Canopy records for a pull started from `session_url`: its
/// `ccmeta-KEY=VALUE` parameters, values as strings ("Adding metadata to a pull",
/// https://docs.usecanopy.com/reference/adding-metadata-to-a-pull).
fn session_meta(session_url: &str) -> Value {
    Value::Object(
        url::Url::parse(session_url)
            .unwrap()
            .query_pairs()
            .filter_map(|(key, value)| {
                Some((
                    key.strip_prefix("ccmeta-")?.to_owned(),
                    Value::String(value.into_owned()),
                ))
            })
            .collect(),
    )
}

// ---------------------------------------------------------------------------------------------
// Linking and monitoring creation

#[tokio::test]
async fn a_link_completes_through_the_hosted_widget_and_is_monitored_once() {
    let canopy = Canopy::start().await;
    let started = canopy.start_link("user-42").await;
    let link = started.link.unwrap();
    assert_eq!(link.state(), v1::LinkState::Pending);
    let url = url::Url::parse(&started.session_url).unwrap();
    assert!(started.session_url.starts_with(&canopy.sim().widget_url()));
    // Attribution travels as Canopy documents it for a link URL, `ccmeta-` parameters, and only
    // so: the link id with the session's proof, an unguessable value kept only as a hash.
    let keys: Vec<String> = url.query_pairs().map(|(k, _)| k.into_owned()).collect();
    assert!(keys.iter().all(|k| k.starts_with("ccmeta-")), "{keys:?}");
    let meta = session_meta(&started.session_url);
    let proof = meta["coverwatch_session"]
        .as_str()
        .expect("a session proof");
    assert!(proof.len() >= 43, "at least 256 bits, base64url: {proof}");
    assert_eq!(
        meta,
        json!({"loan": "L-7", "coverwatch_link_id": link.id, "coverwatch_session": proof})
    );

    let status = canopy.widget_login(&started.session_url, "user_good").await;
    let pull_id = status.body_data("pull-id").unwrap();
    assert_eq!(canopy.sim().pull(&pull_id).unwrap().meta_data, meta);
    canopy.settled_after(&pull_id, "COMPLETE").await;

    let events = link_events(&canopy.client, &link.id).await;
    assert_eq!(
        kinds(&events),
        [K::LinkSessionOpened, K::LinkAuthStatus, K::LinkCompleted],
        "one completion for POLICIES_AVAILABLE and COMPLETE, nothing for POLICY_AVAILABLE"
    );
    assert_eq!(auth_statuses(&events), [v1::AuthStatus::Success]);
    let v1::event::Payload::LinkCompleted(completed) = payload(&events[2]) else {
        panic!()
    };
    assert_eq!(
        completed.policy_external_ids,
        ["AU-5550001".to_owned(), "HO-5550002".to_owned()]
    );
    let Some(v1::event::ProviderDetail::Canopy(detail)) = &events[2].provider_detail else {
        panic!("a Canopy detail")
    };
    assert_eq!(detail.pull_id.as_deref(), Some(pull_id.as_str()));

    let link = get_link(&canopy.client, &link.id).await;
    assert_eq!(link.state(), v1::LinkState::Active);
    assert_eq!(link.session_url, None);
    assert_eq!(list_policies(&canopy.client, &link.id).await.len(), 2);

    // One monitoring, of this pull, and its id and the initial pull id are kept.
    let monitorings = canopy.sim().monitorings();
    assert_eq!(monitorings.len(), 1, "{monitorings:?}");
    let monitoring = &monitorings[0];
    assert_eq!(
        canopy.sim().monitoring_pull_ids(&monitoring.monitoring_id)[0],
        pull_id
    );
    let ids = external_ids(&access_of(&canopy, &link.id).await);
    assert_eq!(ids["monitoring"], monitoring.monitoring_id);
    assert_eq!(ids["initial_pull"], pull_id);
    canopy.stop().await;
}

#[tokio::test]
async fn monitoring_is_created_once_through_failures() {
    let canopy = Canopy::start().await;
    let faults = sandbox(&canopy.server).faults();
    let create = FaultTarget::endpoint("canopy.monitorings.create");

    // The create reaches Canopy but its answer is lost: found again, not made twice.
    let lost = faults.add(FaultRule::new(create.clone(), FaultEffect::Malformed).times(1));
    let first = canopy.link("user-1", fixtures::TestLogin::Good).await;
    // Canopy fails outright once: the link completes anyway, and the monitoring follows.
    let failed = faults.add(FaultRule::new(create, FaultEffect::status(500)).times(1));
    let second = canopy.link("user-2", fixtures::TestLogin::GoodDiffs).await;

    let remaining = |id: u64| {
        faults
            .list()
            .into_iter()
            .find(|r| r.id == id)
            .and_then(|r| r.times)
            .unwrap_or(0)
    };
    assert_eq!((remaining(lost), remaining(failed)), (0, 0));
    for linked in [&first, &second] {
        let of_pull: Vec<_> = canopy
            .sim()
            .monitorings()
            .into_iter()
            .filter(|m| canopy.sim().monitoring_pull_ids(&m.monitoring_id)[0] == linked.pull_id)
            .collect();
        assert_eq!(of_pull.len(), 1, "one monitoring for {}", linked.pull_id);
        let ids = external_ids(&access_of(&canopy, &linked.link_id).await);
        assert_eq!(ids["monitoring"], of_pull[0].monitoring_id);
        let events = link_events(&canopy.client, &linked.link_id).await;
        assert_eq!(count(&events, K::LinkCompleted), 1);
    }
    canopy.stop().await;
}

#[tokio::test]
async fn a_session_that_ends_in_an_error_fails_the_link() {
    let canopy = Canopy::start().await;
    for (user, reason) in [
        ("user_provider_error", v1::FailureReason::ProviderError),
        ("user_internal_error", v1::FailureReason::VendorError),
    ] {
        let started = canopy.start_link("user-1").await;
        let link_id = started.link.unwrap().id;
        canopy.widget_login(&started.session_url, user).await;
        let events = wait_for_event(&canopy.client, &link_id, K::LinkFailed).await;
        let v1::event::Payload::LinkFailed(failed) = payload(last_of(&events, K::LinkFailed))
        else {
            panic!()
        };
        assert_eq!(failed.reason(), reason, "{user}");
    }

    // A bad password is progress the caller can show, not an end.
    let started = canopy.start_link("user-2").await;
    let link_id = started.link.unwrap().id;
    canopy
        .widget_login(&started.session_url, "user_locked")
        .await;
    let events = wait_for_event(&canopy.client, &link_id, K::LinkAuthStatus).await;
    let v1::event::Payload::LinkAuthStatus(auth) = payload(last_of(&events, K::LinkAuthStatus))
    else {
        panic!()
    };
    assert_eq!(auth.status(), v1::AuthStatus::NotAuthenticated);
    assert_eq!(
        auth.login_error_message.as_deref(),
        Some(fixtures::LOCKED_MESSAGE)
    );
    assert_eq!(
        get_link(&canopy.client, &link_id).await.state(),
        v1::LinkState::Pending
    );
    canopy.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Refreshes

#[tokio::test]
async fn a_refresh_without_changes_and_one_with_changes() {
    let canopy = Canopy::start().await;
    let linked = canopy.link("user-1", fixtures::TestLogin::Good).await;
    let (link, client) = (&linked.link_id, &canopy.client);
    let monitoring = external_ids(&access_of(&canopy, link).await)["monitoring"].clone();
    let canopy_ref = &canopy;
    let refresh_pull = |n: usize| {
        let monitoring = monitoring.clone();
        async move {
            client
                .clone()
                .refresh_link(v1::RefreshLinkRequest {
                    link_id: link.clone(),
                })
                .await
                .expect("RefreshLink");
            eventually("the refresh's pull", DEADLINE, || async {
                let pulls = canopy_ref.sim().monitoring_pull_ids(&monitoring);
                pulls.get(n).cloned()
            })
            .await
        }
    };

    // Nothing changed at the carrier: one data.refreshed, however many notices the pull sends.
    let pull = refresh_pull(1).await;
    canopy.settled_after(&pull, "COMPLETE").await;
    let events = link_events(client, link).await;
    assert_eq!(count(&events, K::DataRefreshed), 1, "{:?}", kinds(&events));
    assert_eq!(count(&events, K::PolicyUpdated), 0);
    let v1::event::Payload::DataRefreshed(refreshed) = payload(last_of(&events, K::DataRefreshed))
    else {
        panic!()
    };
    assert_eq!(refreshed.policy_count, 2);
    assert_eq!(
        auth_statuses(&events),
        [v1::AuthStatus::Success],
        "a refresh's routine sign-in is not news"
    );
    let Some(v1::event::ProviderDetail::Canopy(detail)) =
        &last_of(&events, K::DataRefreshed).provider_detail
    else {
        panic!("a Canopy detail")
    };
    assert_eq!(detail.pull_id.as_deref(), Some(pull.as_str()));
    assert_eq!(detail.monitoring_id.as_deref(), Some(monitoring.as_str()));

    // The carrier cancelled the auto policy: policy.updated, and no data.refreshed beside it.
    canopy
        .sim()
        .apply(Scenario::new(
            ScenarioTarget::pull(&linked.pull_id).policy_type("AUTO"),
            ScenarioAction::CancelPolicy {
                canceled_date: None,
            },
        ))
        .unwrap();
    let pull = refresh_pull(2).await;
    canopy.settled_after(&pull, "MONITORING_EVENTS").await;
    let events = link_events(client, link).await;
    assert_eq!(count(&events, K::PolicyUpdated), 1, "{:?}", kinds(&events));
    assert_eq!(count(&events, K::DataRefreshed), 1, "{:?}", kinds(&events));
    let v1::event::Payload::PolicyUpdated(updated) = payload(last_of(&events, K::PolicyUpdated))
    else {
        panic!()
    };
    assert_eq!(updated.policy_external_id, "AU-5550001");
    assert_eq!(updated.status(), v1::PolicyStatus::Cancelled);
    // Canopy's own label for it, from `GET /monitorings/{id}/events` (OpenAPI
    // `MonitoringEvent.type`, one of RENEWAL, EXPIRED, CANCELED, NEW_BUSINESS, REINSTATED,
    // ENDORSEMENT, …), agrees with the status change seen in the data.
    assert_eq!(updated.vendor_reasons, ["CANCELED"]);
    assert!(!updated.vendor_disagrees);
    assert!(
        updated
            .changes
            .iter()
            .any(|c| c.kind() == v1::ChangeKind::StatusChanged
                && c.before.as_deref() == Some("active")
                && c.after.as_deref() == Some("cancelled")),
        "{:?}",
        updated.changes
    );
    let stored =
        coverwatch_tests::flows::get_policy(client, link, "AU-5550001", v1::PolicyTerm::Current)
            .await;
    assert_eq!(stored.policy.unwrap().status(), v1::PolicyStatus::Cancelled);
    canopy.stop().await;
}

#[tokio::test]
async fn a_refresh_while_one_runs_is_a_failed_precondition() {
    let canopy = Canopy::start().await;
    let linked = canopy.link("user-1", fixtures::TestLogin::Good).await;
    canopy.sim().hold_pulls(true);
    let refresh = || {
        let mut client = canopy.client.clone();
        let link_id = linked.link_id.clone();
        async move {
            client
                .refresh_link(v1::RefreshLinkRequest { link_id })
                .await
        }
    };
    refresh().await.expect("the first refresh starts");
    let err = refresh().await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    let detail = coverwatch_proto::convert::vendor_error_detail_of(&err).expect("vendor detail");
    assert_eq!(detail.code.as_deref(), Some("CURRENTLY_REFRESHING"));
    canopy.sim().hold_pulls(false);
    canopy.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Reconnect

/// Expire the link's credentials (behind MFA) and refresh: MONITORING_RECONNECT.
async fn require_reconnect(canopy: &Canopy, linked: &Linked) -> String {
    let outcome = canopy
        .sim()
        .apply(
            Scenario::new(
                ScenarioTarget::pull(&linked.pull_id),
                ScenarioAction::RequireMfa,
            )
            .and_refresh(),
        )
        .unwrap();
    let reconnect_pull = outcome.refreshed_pull_ids[0].clone();
    let events = wait_for_event(&canopy.client, &linked.link_id, K::LinkReconnectRequired).await;
    let v1::event::Payload::LinkReconnectRequired(required) =
        payload(last_of(&events, K::LinkReconnectRequired))
    else {
        panic!()
    };
    let url = required.reconnect_url.clone().expect("a reconnect URL");
    assert!(url.contains("/reconnect?reconnectToken="), "{url}");
    let link = get_link(&canopy.client, &linked.link_id).await;
    assert_eq!(link.state(), v1::LinkState::ReconnectRequired);
    assert_eq!(link.session_url.as_deref(), Some(url.as_str()));
    reconnect_pull
}

async fn submit_credentials(canopy: &Canopy, link_id: &str) -> Result<v1::Link, tonic::Status> {
    canopy
        .client
        .clone()
        .submit_reconnect_credentials(v1::SubmitReconnectCredentialsRequest {
            link_id: link_id.to_owned(),
            carrier: None,
            username: "user_good".into(),
            password: Some(fixtures::GOOD_PASSWORD.into()),
            third_field: None,
        })
        .await
        .map(|r| r.into_inner().link.unwrap())
}

async fn select_option(
    canopy: &Canopy,
    link_id: &str,
    key: &str,
) -> Result<v1::Link, tonic::Status> {
    canopy
        .client
        .clone()
        .select_verification_option(v1::SelectVerificationOptionRequest {
            link_id: link_id.to_owned(),
            option_key: key.to_owned(),
        })
        .await
        .map(|r| r.into_inner().link.unwrap())
}

async fn submit_code(
    canopy: &Canopy,
    link_id: &str,
    code: &str,
) -> Result<v1::Link, tonic::Status> {
    canopy
        .client
        .clone()
        .submit_verification_code(v1::SubmitVerificationCodeRequest {
            link_id: link_id.to_owned(),
            code: code.to_owned(),
        })
        .await
        .map(|r| r.into_inner().link.unwrap())
}

/// The auth-status events of the link after the `n`th, once there are `n + more`.
async fn next_auth_statuses(
    canopy: &Canopy,
    link_id: &str,
    total: usize,
) -> Vec<v1::LinkAuthStatus> {
    let events = wait_for_events(&canopy.client, link_id, K::LinkAuthStatus, total).await;
    events
        .iter()
        .filter_map(|e| match payload(e) {
            v1::event::Payload::LinkAuthStatus(s) => Some(s.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_reconnect_in_the_callers_app_through_mfa_ends_active() {
    let canopy = Canopy::start().await;
    let linked = canopy.link("user-1", fixtures::TestLogin::Good).await;
    let link = &linked.link_id;
    let reconnect_pull = require_reconnect(&canopy, &linked).await;
    let seen = auth_statuses(&link_events(&canopy.client, link).await).len();

    let now = submit_credentials(&canopy, link)
        .await
        .expect("credentials");
    assert_eq!(now.state(), v1::LinkState::ReconnectRequired);
    let statuses = next_auth_statuses(&canopy, link, seen + 1).await;
    let options = &statuses[seen];
    assert_eq!(
        options.status(),
        v1::AuthStatus::IdentityVerificationOptions
    );
    let keys: Vec<&str> = options
        .verification_options
        .iter()
        .map(|o| o.key.as_str())
        .collect();
    assert_eq!(keys, ["email", "sms"]);

    select_option(&canopy, link, "sms").await.expect("option");
    let statuses = next_auth_statuses(&canopy, link, seen + 2).await;
    assert_eq!(
        statuses[seen + 1].status(),
        v1::AuthStatus::IdentityVerification
    );

    submit_code(&canopy, link, "424242").await.expect("code");
    let events = wait_for_event(&canopy.client, link, K::LinkReconnected).await;
    assert_eq!(auth_statuses(&events)[seen + 2], v1::AuthStatus::Success);
    let now = wait_for_state(&canopy.client, link, v1::LinkState::Active).await;
    assert_eq!(now.session_url, None);
    canopy.settled_after(&reconnect_pull, "COMPLETE").await;
    let events = link_events(&canopy.client, link).await;
    assert_eq!(count(&events, K::LinkReconnected), 1);
    assert_eq!(count(&events, K::LinkCompleted), 1);

    // What served this one reconnect is forgotten.
    let access = access_of(&canopy, link).await;
    assert!(access.secrets.is_empty(), "{:?}", access.secrets.keys());
    // The monitoring goes on with the reconnected pull.
    let monitoring = &external_ids(&access)["monitoring"];
    assert_eq!(
        canopy.sim().monitoring(monitoring).unwrap().latest_pull_id,
        reconnect_pull
    );

    // In-app steps on a link that needs no reconnect are refused, naming the state.
    let err = submit_code(&canopy, link, "424242").await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("RECONNECT_REQUIRED"),
        "{}",
        err.message()
    );
    canopy.stop().await;
}

#[tokio::test]
async fn a_wrong_code_is_reported_and_the_link_still_needs_a_reconnect() {
    let canopy = Canopy::start().await;
    let linked = canopy.link("user-1", fixtures::TestLogin::Good).await;
    let link = &linked.link_id;
    require_reconnect(&canopy, &linked).await;
    let seen = auth_statuses(&link_events(&canopy.client, link).await).len();

    submit_credentials(&canopy, link)
        .await
        .expect("credentials");
    next_auth_statuses(&canopy, link, seen + 1).await;
    select_option(&canopy, link, "email").await.expect("option");
    next_auth_statuses(&canopy, link, seen + 2).await;
    submit_code(&canopy, link, fixtures::BAD_MFA_CODE)
        .await
        .expect("the code is passed on; Canopy judges it");
    let statuses = next_auth_statuses(&canopy, link, seen + 3).await;
    let wrong = &statuses[seen + 2];
    assert_eq!(wrong.status(), v1::AuthStatus::NotAuthenticated);
    canopy.worked_off().await;
    let now = get_link(&canopy.client, link).await;
    assert_eq!(now.state(), v1::LinkState::ReconnectRequired);
    assert!(!kinds(&link_events(&canopy.client, link).await).contains(&K::LinkReconnected));

    // The user may sign in again, and this time get through.
    submit_credentials(&canopy, link)
        .await
        .expect("credentials again");
    next_auth_statuses(&canopy, link, seen + 4).await;
    select_option(&canopy, link, "email").await.expect("option");
    next_auth_statuses(&canopy, link, seen + 5).await;
    submit_code(&canopy, link, "777777").await.expect("code");
    wait_for_state(&canopy.client, link, v1::LinkState::Active).await;
    canopy.stop().await;
}

#[tokio::test]
async fn the_hosted_reconnect_page_is_offered_too() {
    let canopy = Canopy::start().await;
    let linked = canopy.link("user-1", fixtures::TestLogin::Good).await;
    let link = &linked.link_id;
    let outcome = canopy
        .sim()
        .apply(
            Scenario::new(
                ScenarioTarget::pull(&linked.pull_id),
                ScenarioAction::ExpireCredentials,
            )
            .and_refresh(),
        )
        .unwrap();
    let reconnect_pull = outcome.refreshed_pull_ids[0].clone();
    wait_for_state(&canopy.client, link, v1::LinkState::ReconnectRequired).await;

    // A fresh reconnect URL on demand, opened by the end-user in a browser.
    let started = canopy
        .client
        .clone()
        .start_reconnect(v1::StartReconnectRequest {
            link_id: link.clone(),
            redirect_uri: None,
        })
        .await
        .expect("StartReconnect")
        .into_inner();
    assert!(started.session_url.contains("/reconnect?reconnectToken="));
    let page = canopy.browser.get(&started.session_url).await;
    assert_eq!(page.status, 303, "{}", page.html);
    let page = canopy.browser.follow(&page).await;
    assert_eq!(
        page.body_data("pull-id").as_deref(),
        Some(reconnect_pull.as_str())
    );
    let sent = canopy
        .browser
        .submit(
            &page,
            "connect",
            &[
                ("username", "user_good"),
                ("password", fixtures::GOOD_PASSWORD),
            ],
        )
        .await;
    assert_eq!(sent.status, 303);
    let events = wait_for_event(&canopy.client, link, K::LinkReconnected).await;
    assert_eq!(count(&events, K::LinkSessionOpened), 2);
    wait_for_state(&canopy.client, link, v1::LinkState::Active).await;
    canopy.stop().await;
}

#[tokio::test]
async fn in_app_reconnect_is_refused_for_an_axle_link() {
    let canopy = Canopy::start().await;
    let started = start_link(&canopy.client, v1::Provider::Axle, "user-1", None, None).await;
    let link = started.link.unwrap().id;
    let err = submit_credentials(&canopy, &link).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("in_app_reconnect"),
        "{}",
        err.message()
    );
    let err = select_option(&canopy, &link, "sms").await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("in_app_reconnect"),
        "{}",
        err.message()
    );
    let err = submit_code(&canopy, &link, "123456").await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("in_app_reconnect"),
        "{}",
        err.message()
    );
    canopy.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Descope

#[tokio::test]
async fn descope_stops_the_monitoring_and_can_be_repeated() {
    let canopy = Canopy::start().await;
    let linked = canopy.link("user-1", fixtures::TestLogin::Good).await;
    let link = &linked.link_id;
    let monitoring = external_ids(&access_of(&canopy, link).await)["monitoring"].clone();
    for _ in 0..2 {
        let descoped = canopy
            .client
            .clone()
            .descope(v1::DescopeRequest {
                link_id: link.clone(),
            })
            .await
            .expect("Descope")
            .into_inner()
            .link
            .unwrap();
        assert_eq!(descoped.state(), v1::LinkState::Descoped);
    }
    let stopped = canopy.sim().monitoring(&monitoring).unwrap();
    assert_eq!(stopped.status, "STOPPED", "{stopped:?}");
    let events = link_events(&canopy.client, link).await;
    assert_eq!(count(&events, K::LinkDescoped), 1);
    let err = canopy
        .client
        .clone()
        .refresh_link(v1::RefreshLinkRequest {
            link_id: link.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(list_policies(&canopy.client, link).await.len(), 2);
    canopy.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Signed deliveries

#[tokio::test]
async fn unsigned_forged_and_stale_deliveries_are_refused_and_not_stored() {
    let canopy = Canopy::start().await;
    let started = canopy.start_link("user-1").await;
    let link_id = started.link.unwrap().id;
    let body = canopy
        .envelope(
            "AUTH_STATUS",
            "0d0f1c2a-aaaa-4bbb-8ccc-123456789abc",
            session_meta(&started.session_url),
            json!({"auth_status": "NOT_AUTHENTICATED", "login_error_message": "forged"}),
        )
        .to_string()
        .into_bytes();
    let secret = canopy.signing_secret();
    let stored = || async {
        canopy
            .store()
            .count_deliveries(ProviderId::from_static("canopy"))
            .await
            .unwrap()
    };
    let before = stored().await;

    assert_eq!(canopy.post_raw(&body, None).await, 401, "missing header");
    assert_eq!(
        canopy.post_signed(&body, "not-the-secret", 0).await,
        401,
        "bad signature"
    );
    assert_eq!(
        canopy.post_raw(&body, Some("t=nonsense".into())).await,
        401,
        "malformed header"
    );
    let mut tampered = body.clone();
    tampered.extend_from_slice(b" ");
    let t = Utc::now().timestamp();
    let good_header = coverwatch_sandbox::canopy::signature::header_value(&secret, t, &body);
    assert_eq!(
        canopy.post_raw(&tampered, Some(good_header)).await,
        401,
        "a body other than the one signed"
    );

    // Canopy itself signing wrongly or not at all: refused the same way. (A genuine signature
    // with an old timestamp is taken by default: see the retry tests below.)
    for mode in [SignatureMode::WrongSecret, SignatureMode::Missing] {
        canopy.sim().set_signature_mode(mode);
        canopy
            .widget_login(&started.session_url, "user_locked")
            .await;
    }
    let refused = sandbox(&canopy.server)
        .deliveries()
        .wait_until(DEADLINE, |all| {
            let refused: Vec<_> = all
                .iter()
                .filter(|a| a.vendor == "canopy" && a.status == Some(401))
                .cloned()
                .collect();
            (refused.len() >= 2).then_some(refused)
        })
        .await
        .unwrap();
    assert!(refused.iter().all(|a| a.event_type == "AUTH_STATUS"));
    assert_eq!(stored().await, before, "nothing refused was stored");
    assert_eq!(
        kinds(&link_events(&canopy.client, &link_id).await),
        [K::LinkSessionOpened]
    );

    // The genuine article is taken.
    assert_eq!(canopy.post_signed(&body, &secret, 0).await, 200);
    assert_eq!(stored().await, before + 1);
    wait_for_event(&canopy.client, &link_id, K::LinkAuthStatus).await;
    canopy.stop().await;
}

/// Canopy's "Webhook retries" page (docs.usecanopy.com/reference/webhook-retries): a non-200 is
/// retried "up to 10 times" with "an exponential backoff" of `interval + attempt^4` seconds,
/// interval 60 s: the fourth retry goes out 61 + 76 + 141 + 316 = 594 s after the first try.
/// "Verifying webhook signatures" (docs.usecanopy.com/reference/verifying-webhook-signatures)
/// leaves the tolerance to the receiver and does not say whether a retry is signed afresh. The
/// simulator's retries here keep the first `t`; four 503s make the fifth attempt 594 s old,
/// past the default 300 s tolerance.
async fn a_retry_with_its_first_timestamp(canopy: &Canopy) -> (String, DeliveryAttempt) {
    let started = canopy.start_link("user-1").await;
    let link_id = started.link.unwrap().id;
    canopy.sim().set_retry_signing(RetrySigning::Original);
    canopy.sim().set_retry_time_scale(Some(0.0005));
    sandbox(&canopy.server).faults().add(
        FaultRule::new(
            FaultTarget::webhook_event("canopy", "AUTH_STATUS"),
            FaultEffect::Status {
                status: 503,
                retry_after_secs: None,
                body: None,
            },
        )
        .times(4),
    );
    canopy
        .widget_login(&started.session_url, "user_locked")
        .await;
    let fifth = sandbox(&canopy.server)
        .deliveries()
        .wait_until(DEADLINE, |all| {
            all.iter()
                .find(|a| a.event_type == "AUTH_STATUS" && a.attempt == 5 && a.status.is_some())
                .cloned()
        })
        .await
        .unwrap();
    let header = fifth.header("canopy-signature").unwrap().to_owned();
    let t: i64 = header
        .split(',')
        .find_map(|e| e.strip_prefix("t="))
        .unwrap()
        .parse()
        .unwrap();
    let age = fifth.at.timestamp() - t;
    assert!((594..650).contains(&age), "the first try's t, {age} s old");
    (link_id, fifth)
}

#[tokio::test]
async fn a_retry_that_kept_its_first_timestamp_is_taken_and_counted() {
    let canopy = Canopy::start().await;
    let (link_id, fifth) = a_retry_with_its_first_timestamp(&canopy).await;
    assert_eq!(fifth.status, Some(200), "{fifth:?}");
    let events = wait_for_event(&canopy.client, &link_id, K::LinkAuthStatus).await;
    assert_eq!(auth_statuses(&events), [v1::AuthStatus::NotAuthenticated]);
    assert_eq!(canopy.server.app.engine.late_signed_deliveries(), 1);

    // Only a signature that does not match is refused, however fresh.
    let body = canopy
        .envelope(
            "AUTH_STATUS",
            "0d0f1c2a-aaaa-4bbb-8ccc-123456789abc",
            json!({"coverwatch_link_id": link_id}),
            json!({"auth_status": "IDENTITY_VERIFICATION"}),
        )
        .to_string()
        .into_bytes();
    assert_eq!(canopy.post_signed(&body, "not-the-secret", 0).await, 401);
    assert_eq!(
        canopy
            .post_signed(&body, &canopy.signing_secret(), -5_000)
            .await,
        200
    );
    assert_eq!(canopy.server.app.engine.late_signed_deliveries(), 2);
    canopy.stop().await;
}

#[tokio::test]
async fn with_stale_signatures_rejected_a_late_retry_is_refused_and_not_stored() {
    let mut config = test_config().await;
    config.vendors.insert(
        "canopy".into(),
        serde_json::json!({"stale_signatures": "reject"}),
    );
    let canopy = Canopy::start_with(config).await;
    let before = canopy
        .store()
        .count_deliveries(ProviderId::from_static("canopy"))
        .await
        .unwrap();
    let (link_id, fifth) = a_retry_with_its_first_timestamp(&canopy).await;
    assert_eq!(fifth.status, Some(401), "{fifth:?}");
    let after = canopy
        .store()
        .count_deliveries(ProviderId::from_static("canopy"))
        .await
        .unwrap();
    assert_eq!(after, before, "nothing refused was stored");
    assert_eq!(
        kinds(&link_events(&canopy.client, &link_id).await),
        [K::LinkSessionOpened]
    );
    assert_eq!(canopy.server.app.engine.late_signed_deliveries(), 0);
    canopy.stop().await;
}

#[tokio::test]
async fn a_delivery_sent_again_is_one_event() {
    let canopy = Canopy::start().await;
    let started = canopy.start_link("user-1").await;
    let link_id = started.link.unwrap().id;
    let secret = canopy.signing_secret();
    let body = canopy
        .envelope(
            "AUTH_STATUS",
            "11111111-2222-4333-8444-555555555555",
            session_meta(&started.session_url),
            json!({"auth_status": "IDENTITY_VERIFICATION"}),
        )
        .to_string()
        .into_bytes();
    // Canopy's retry carries the same body under a fresh signature.
    assert_eq!(canopy.post_signed(&body, &secret, -5).await, 200);
    assert_eq!(canopy.post_signed(&body, &secret, 0).await, 200);
    canopy.worked_off().await;

    // And the sandbox delivering one webhook twice.
    sandbox(&canopy.server).faults().add(
        FaultRule::new(
            FaultTarget::webhook_event("canopy", "AUTH_STATUS"),
            FaultEffect::Duplicate { copies: 1 },
        )
        .times(1),
    );
    canopy
        .widget_login(&started.session_url, "user_locked")
        .await;
    sandbox(&canopy.server)
        .deliveries()
        .wait_until(DEADLINE, |all| {
            (all.iter()
                .filter(|a| a.event_type == "AUTH_STATUS" && a.delivered())
                .count()
                >= 2)
                .then_some(())
        })
        .await
        .unwrap();
    canopy.worked_off().await;
    let events = link_events(&canopy.client, &link_id).await;
    assert_eq!(
        auth_statuses(&events),
        [
            v1::AuthStatus::IdentityVerification,
            v1::AuthStatus::NotAuthenticated
        ]
    );
    canopy.stop().await;
}

#[tokio::test]
async fn an_auth_status_older_than_the_last_seen_is_ignored() {
    let canopy = Canopy::start().await;
    let started = canopy.start_link("user-1").await;
    let link_id = started.link.unwrap().id;
    let secret = canopy.signing_secret();
    let pull = "22222222-3333-4444-8555-666666666666";
    let auth = |status: &str, sequence: i64| {
        let mut body = canopy.envelope(
            "AUTH_STATUS",
            pull,
            session_meta(&started.session_url),
            json!({"auth_status": status}),
        );
        body["sequence"] = json!(sequence);
        body.to_string().into_bytes()
    };
    assert_eq!(
        canopy
            .post_signed(&auth("IDENTITY_VERIFICATION", 3), &secret, 0)
            .await,
        200
    );
    wait_for_event(&canopy.client, &link_id, K::LinkAuthStatus).await;
    // Delivered late: sequence 2 was overtaken by sequence 3.
    assert_eq!(
        canopy
            .post_signed(&auth("IDENTITY_VERIFICATION_OPTIONS", 2), &secret, 0)
            .await,
        200
    );
    canopy.worked_off().await;
    assert_eq!(
        canopy
            .post_signed(&auth("NOT_AUTHENTICATED", 4), &secret, 0)
            .await,
        200
    );
    canopy.worked_off().await;
    let events = link_events(&canopy.client, &link_id).await;
    assert_eq!(
        auth_statuses(&events),
        [
            v1::AuthStatus::IdentityVerification,
            v1::AuthStatus::NotAuthenticated
        ]
    );
    // Sequences count per pull: another pull starts again from 1.
    let mut other = canopy.envelope(
        "AUTH_STATUS",
        "33333333-4444-4555-8666-777777777777",
        session_meta(&started.session_url),
        json!({"auth_status": "SUCCESS"}),
    );
    other["sequence"] = json!(1);
    assert_eq!(
        canopy
            .post_signed(other.to_string().as_bytes(), &secret, 0)
            .await,
        200
    );
    wait_for_events(&canopy.client, &link_id, K::LinkAuthStatus, 3).await;
    canopy.stop().await;
}

#[tokio::test]
async fn meta_data_is_read_as_an_object_and_as_a_json_string() {
    let canopy = Canopy::start().await;
    let started = canopy.start_link("user-1").await;
    let link_id = started.link.unwrap().id;
    let secret = canopy.signing_secret();
    let object = canopy.envelope(
        "AUTH_STATUS",
        "44444444-5555-4666-8777-888888888888",
        session_meta(&started.session_url),
        json!({"auth_status": "IDENTITY_VERIFICATION"}),
    );
    let string = canopy.envelope(
        "AUTH_STATUS",
        "55555555-6666-4777-8888-999999999999",
        Value::String(session_meta(&started.session_url).to_string()),
        json!({"auth_status": "NOT_AUTHENTICATED", "login_error_message": "try again"}),
    );
    for body in [object, string] {
        assert_eq!(
            canopy
                .post_signed(body.to_string().as_bytes(), &secret, 0)
                .await,
            200
        );
    }
    let events = wait_for_events(&canopy.client, &link_id, K::LinkAuthStatus, 2).await;
    let mut statuses = auth_statuses(&events);
    statuses.sort_by_key(|s| *s as i32);
    assert_eq!(
        statuses,
        [
            v1::AuthStatus::NotAuthenticated,
            v1::AuthStatus::IdentityVerification
        ]
    );
    canopy.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Attribution: a delivery reaches a link only through a session it proves

const ADMIN_KEY: &str = "admin-key-of-the-canopy-tests";

/// `session_url` as its end user could edit it: naming `link_id` instead of its own link, with
/// `proof` as the session value (or none).
fn naming(session_url: &str, link_id: &str, proof: Option<&str>) -> String {
    let mut url = url::Url::parse(session_url).unwrap();
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .into_owned()
        .filter(|(key, _)| key != "ccmeta-coverwatch_session")
        .map(|(key, value)| match key.as_str() {
            "ccmeta-coverwatch_link_id" => (key, link_id.to_owned()),
            _ => (key, value),
        })
        .collect();
    {
        let mut query = url.query_pairs_mut();
        query.clear().extend_pairs(pairs);
        if let Some(proof) = proof {
            query.append_pair("ccmeta-coverwatch_session", proof);
        }
    }
    url.into()
}

#[tokio::test]
async fn a_session_naming_another_tenants_link_reaches_no_link() {
    let mut config = test_config().await;
    config.admin_api_key_sha256 = vec![coverwatch::auth::hash_key(ADMIN_KEY)];
    let canopy = Canopy::start_with(config).await;
    let victim = canopy.start_link("victim").await;
    let victim_id = victim.link.clone().unwrap().id;
    let other = canopy.server.client(TENANT_B).await;
    let attacker = start_link(&other, v1::Provider::Canopy, "attacker", None, None).await;
    let attacker_id = attacker.link.unwrap().id;
    let attacker_meta = session_meta(&attacker.session_url);
    let attacker_proof = attacker_meta["coverwatch_session"].as_str().unwrap();

    // The end user of tenant B edits their session URL to name tenant A's link: with their own
    // session's proof, with none, with a guess. Canopy signs every delivery of each pull, and
    // each names the victim's link in its meta data.
    let forged = [
        naming(&attacker.session_url, &victim_id, Some(attacker_proof)),
        naming(&attacker.session_url, &victim_id, None),
        naming(
            &attacker.session_url,
            &victim_id,
            Some("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
        ),
    ];
    for url in &forged {
        let page = canopy.widget_login(url, "user_good").await;
        let pull = page.body_data("pull-id").expect("the pull's status page");
        let meta = canopy.sim().pull(&pull).unwrap().meta_data;
        assert_eq!(meta["coverwatch_link_id"], victim_id.as_str(), "{meta}");
        canopy.settled_after(&pull, "COMPLETE").await;
    }

    // Neither link got data or an event: not the one named, not the one whose proof was used.
    for (client, link) in [(&canopy.client, &victim_id), (&other, &attacker_id)] {
        assert_eq!(
            kinds(&link_events(client, link).await),
            [K::LinkSessionOpened]
        );
        assert_eq!(get_link(client, link).await.state(), v1::LinkState::Pending);
        assert!(list_policies(client, link).await.is_empty());
    }

    // Every one of those deliveries is kept as unmatched, saying why, and none was queued
    // behind a link when it was received.
    let mut admin = AdminServiceClient::with_interceptor(
        canopy.server.channel().await,
        |mut request: tonic::Request<()>| {
            request.metadata_mut().insert(
                "authorization",
                format!("Bearer {ADMIN_KEY}").parse().unwrap(),
            );
            Ok(request)
        },
    );
    let deliveries = |status: v1::DeliveryStatus| v1::ListDeliveriesRequest {
        status: status as i32,
        provider: v1::Provider::Canopy as i32,
        page_size: 500,
        ..Default::default()
    };
    let all = admin
        .list_deliveries(deliveries(v1::DeliveryStatus::Unspecified))
        .await
        .unwrap()
        .into_inner()
        .deliveries;
    let unmatched = admin
        .list_deliveries(deliveries(v1::DeliveryStatus::Unmatched))
        .await
        .unwrap()
        .into_inner()
        .deliveries;
    // AUTH_STATUS, POLICY_AVAILABLE for each of two policies, POLICIES_AVAILABLE, COMPLETE.
    assert_eq!(unmatched.len(), 3 * 5, "{unmatched:#?}");
    assert_eq!(all.len(), unmatched.len(), "{all:#?}");
    assert!(
        unmatched.iter().all(|d| d.link_id.is_none()),
        "{unmatched:#?}"
    );
    let reasons: Vec<&str> = unmatched
        .iter()
        .map(|d| d.last_error.as_deref().unwrap_or_default())
        .collect();
    for said in [
        "with the session proof of another link",
        "without a session proof",
        "with a session proof that is not that link's",
    ] {
        assert_eq!(
            reasons
                .iter()
                .filter(|r| r.contains(said) && r.contains(&victim_id))
                .count(),
            5,
            "{said}: {reasons:#?}"
        );
    }

    // The victim's own session still links it, its deliveries attributed as they arrive.
    let page = canopy.widget_login(&victim.session_url, "user_good").await;
    let pull = page.body_data("pull-id").unwrap();
    canopy.settled_after(&pull, "COMPLETE").await;
    assert_eq!(
        get_link(&canopy.client, &victim_id).await.state(),
        v1::LinkState::Active
    );
    let theirs = admin
        .list_deliveries(v1::ListDeliveriesRequest {
            link_id: Some(victim_id.clone()),
            ..deliveries(v1::DeliveryStatus::Done)
        })
        .await
        .unwrap()
        .into_inner()
        .deliveries;
    assert_eq!(theirs.len(), 5, "{theirs:#?}");
    assert!(
        theirs
            .iter()
            .all(|d| d.link_id.as_deref() == Some(victim_id.as_str()))
    );
    canopy.stop().await;
}

// ---------------------------------------------------------------------------------------------
// The normalized data of each sandbox test login, as callers read it

fn midnight(t: DateTime<Utc>) -> DateTime<Utc> {
    Utc.from_utc_datetime(&t.date_naive().and_time(NaiveTime::MIN))
}

fn ts(t: DateTime<Utc>) -> Option<prost_types::Timestamp> {
    coverwatch_tests::flows::timestamp(t)
}

type Limits = (
    v1::CoverageCode,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
);

fn coverages_on(policy: &v1::Policy, property: &str) -> Vec<Limits> {
    policy
        .coverages
        .iter()
        .filter(|c| c.property_id.as_deref() == Some(property))
        .map(|c| {
            (
                c.code(),
                c.limit_per_person_cents,
                c.limit_per_accident_cents,
                c.deductible_cents,
                c.premium_cents,
            )
        })
        .collect()
}

async fn assert_fixture_data(canopy: &Canopy, linked: &Linked, login: fixtures::TestLogin) {
    use v1::CoverageCode as C;
    let (auto_no, home_no) = fixtures::policy_numbers(login);
    let client = &canopy.client;
    let account = get_account(client, &linked.link_id).await;
    assert_eq!(
        (
            account.carrier.clone().map(|c| (c.id, c.name)),
            account.first_name.as_deref(),
            account.last_name.as_deref(),
            account.email.as_deref(),
            account.phone.as_deref(),
            account.connection(),
            account.policy_ids.clone(),
        ),
        (
            Some(("statefarm".to_owned(), Some("State Farm".to_owned()))),
            Some("Morgan"),
            Some("Tester"),
            Some("morgan.tester@example.com"),
            Some("5555550100"),
            v1::ConnectionStatus::Active,
            vec![auto_no.clone(), home_no.clone()],
        ),
        "{login:?}"
    );
    let policies = list_policies(client, &linked.link_id).await;
    assert_eq!(policies.len(), 2);
    let today = midnight(linked.linked_at);
    let (camry, civic) = ("4T1G11AK5MU000001", "2HGFC2F59GH000002");

    let auto = &policies[0];
    let effective = today - chrono::Duration::days(45);
    assert_eq!(
        (
            auto.external_id.as_str(),
            auto.policy_type(),
            auto.policy_number.as_deref(),
            auto.status(),
            auto.carrier.as_ref().map(|c| c.id.as_str()),
            auto.effective_date,
            auto.expiration_date,
            auto.cancelled_date,
            auto.premium_cents,
        ),
        (
            auto_no.as_str(),
            v1::PolicyType::Auto,
            Some(auto_no.as_str()),
            v1::PolicyStatus::Active,
            Some("statefarm"),
            ts(effective),
            ts(effective + Months::new(6)),
            None,
            Some(102_200),
        )
    );
    assert_eq!(
        auto.address,
        coverwatch_tests::flows::address(
            "123 Main St",
            Some("Apt 4B"),
            "Springfield",
            "IL",
            "62701",
            "US"
        )
    );
    let vehicles: Vec<_> = auto
        .vehicles
        .iter()
        .map(|v| {
            (
                v.id.as_str(),
                v.vin.as_deref(),
                v.year,
                v.make.as_deref(),
                v.model.as_deref(),
                v.body_style.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        vehicles,
        [
            (
                camry,
                Some(camry),
                Some(2021),
                Some("TOYOTA"),
                Some("Camry"),
                Some("PASSENGER CAR")
            ),
            (
                civic,
                Some(civic),
                Some(2016),
                Some("HONDA"),
                Some("Civic"),
                Some("PASSENGER CAR")
            ),
        ]
    );
    let mut on_camry = coverages_on(auto, camry);
    on_camry.sort_by_key(|c| c.0 as i32);
    assert_eq!(
        on_camry,
        [
            (
                C::BodilyInjury,
                Some(10_000_000),
                Some(30_000_000),
                None,
                Some(21_000)
            ),
            (
                C::PropertyDamage,
                None,
                Some(10_000_000),
                None,
                Some(15_000)
            ),
            (
                C::UninsuredMotoristBodilyInjury,
                Some(5_000_000),
                Some(10_000_000),
                None,
                Some(4_000)
            ),
            (
                C::UninsuredMotoristPropertyDamage,
                None,
                Some(2_500_000),
                Some(25_000),
                Some(1_200)
            ),
            (C::Comprehensive, None, None, Some(50_000), Some(9_800)),
            (C::Collision, None, None, Some(100_000), Some(18_400)),
            // Unlimited, and a per-day limit: neither is an amount, checked below.
            (C::PersonalInjuryProtection, None, None, None, None),
            (C::RentalReimbursement, None, None, None, None),
        ]
    );
    // Canopy's VehicleCoverage `per_person_unlimited` / `per_incident_unlimited` ("If true, this
    // coverage has an unlimited per-person limit") and `per_day_limit_cents` / `max_days`
    // ("comes in pairs with `per_day_limit_cents`"), carried to the caller as stated.
    let on = |code: v1::CoverageCode| {
        auto.coverages
            .iter()
            .find(|c| c.code() == code && c.property_id.as_deref() == Some(camry))
            .unwrap_or_else(|| panic!("{code:?} on the Camry"))
    };
    let pip = on(C::PersonalInjuryProtection);
    assert!(pip.limit_per_person_unlimited && pip.limit_per_accident_unlimited);
    let rental = on(C::RentalReimbursement);
    assert_eq!(
        (
            rental.limit_per_day_cents,
            rental.max_days,
            rental.limit_per_person_unlimited
        ),
        (Some(3_000), Some(30), false)
    );
    let mut on_civic = coverages_on(auto, civic);
    on_civic.sort_by_key(|c| c.0 as i32);
    assert_eq!(
        on_civic,
        [
            (
                C::BodilyInjury,
                Some(10_000_000),
                Some(30_000_000),
                None,
                Some(16_500)
            ),
            (
                C::PropertyDamage,
                None,
                Some(10_000_000),
                None,
                Some(12_000)
            ),
            (
                C::UninsuredMotoristBodilyInjury,
                Some(5_000_000),
                Some(10_000_000),
                None,
                Some(3_300)
            ),
            (
                C::UninsuredMotoristPropertyDamage,
                None,
                Some(2_500_000),
                Some(25_000),
                Some(1_000)
            ),
        ],
        "liability only on the Civic"
    );
    assert_eq!(auto.coverages.len(), 12);
    assert!(auto.coverages.iter().all(|c| !c.declined));
    assert_eq!(
        auto.interested_parties,
        [v1::InterestedParty {
            kind: v1::PartyKind::Lienholder as i32,
            name: Some("Sandbox Auto Finance".into()),
            address: coverwatch_tests::flows::address(
                "500 Lender Way",
                None,
                "Columbus",
                "OH",
                "43215",
                "US"
            ),
            loan_number: None,
            property_id: Some(camry.into()),
        }]
    );
    let insureds: Vec<_> = auto
        .insureds
        .iter()
        .map(|i| (i.first_name.as_deref(), i.last_name.as_deref(), i.role()))
        .collect();
    assert_eq!(
        insureds,
        [
            (Some("Morgan"), Some("Tester"), v1::InsuredRole::Primary),
            (Some("Casey"), Some("Tester"), v1::InsuredRole::NamedInsured),
            (Some("Morgan"), Some("Tester"), v1::InsuredRole::Driver),
            (Some("Casey"), Some("Tester"), v1::InsuredRole::Driver),
        ]
    );
    let docs: Vec<_> = auto.documents.iter().map(|d| d.kinds.clone()).collect();
    assert_eq!(
        docs,
        [
            vec!["declaration_page".to_owned()],
            vec!["id_card".to_owned()]
        ]
    );

    let home = &policies[1];
    let dwelling = "123 Main Street, Apt 4B, Springfield, IL, 62701";
    let effective = today - chrono::Duration::days(120);
    assert_eq!(
        (
            home.external_id.as_str(),
            home.policy_type(),
            home.status(),
            home.effective_date,
            home.expiration_date,
            home.premium_cents,
            home.vehicles.len(),
        ),
        (
            home_no.as_str(),
            v1::PolicyType::Homeowners,
            v1::PolicyStatus::Active,
            ts(effective),
            ts(effective + Months::new(12)),
            Some(132_700),
            0,
        )
    );
    assert_eq!(home.dwellings.len(), 1);
    assert_eq!(home.dwellings[0].id, dwelling);
    assert_eq!(home.dwellings[0].replacement_cost_cents, Some(35_000_000));
    let mut on_dwelling = coverages_on(home, dwelling);
    on_dwelling.sort_by_key(|c| c.0 as i32);
    assert_eq!(
        on_dwelling,
        [
            (C::Dwelling, None, Some(35_000_000), None, Some(98_000)),
            (C::OtherStructures, None, Some(3_500_000), None, Some(4_900)),
            (
                C::PersonalProperty,
                None,
                Some(17_500_000),
                None,
                Some(23_100)
            ),
            (C::LossOfUse, None, Some(7_000_000), None, Some(2_400)),
            (
                C::PersonalLiability,
                None,
                Some(30_000_000),
                None,
                Some(3_000)
            ),
            (
                C::MedicalPaymentsToOthers,
                Some(500_000),
                None,
                None,
                Some(1_300)
            ),
            (C::Other, None, None, Some(700_000), None),
            // The home deductible, on ALL_OTHER_PERILS as in Canopy's own HOMEOWNERS example.
            (C::AllPerils, None, None, Some(100_000), None),
        ]
    );
    let others: Vec<_> = home
        .coverages
        .iter()
        .filter_map(|c| c.other_code.as_deref())
        .collect();
    assert_eq!(others, ["WINDSTORM_OR_HAIL"]);
    assert!(
        home.coverages
            .iter()
            .any(|c| c.code() == C::AllPerils && c.vendor_code == "ALL_OTHER_PERILS")
    );
    assert_eq!(
        home.interested_parties,
        [v1::InterestedParty {
            kind: v1::PartyKind::Mortgagee as i32,
            name: Some("Sandbox Home Lending".into()),
            address: home.interested_parties[0].address.clone(),
            loan_number: Some("ML-0042-7781".into()),
            property_id: Some(dwelling.into()),
        }]
    );
    assert_eq!(
        home.interested_parties[0]
            .address
            .as_ref()
            .and_then(|a| a.city.as_deref()),
        Some("Dallas")
    );
}

#[tokio::test]
async fn each_test_login_reads_back_field_by_field() {
    let canopy = Canopy::start().await;
    for (n, login) in [
        fixtures::TestLogin::Good,
        fixtures::TestLogin::GoodDiffs,
        fixtures::TestLogin::Mfa,
        fixtures::TestLogin::OptionlessMfa,
    ]
    .into_iter()
    .enumerate()
    {
        let linked = canopy.link(&format!("user-{n}"), login).await;
        assert_fixture_data(&canopy, &linked, login).await;
    }
    canopy.stop().await;
}

#[tokio::test]
async fn a_sandbox_connect_with_meta_data_reaches_its_link_without_the_widget() {
    // The same attribution when the pull is started by a white-label client, which puts the
    // session URL's meta data in the pull itself (the SDK's `pullMetaData`).
    let canopy = Canopy::start().await;
    let started = canopy.start_link("user-1").await;
    let link_id = started.link.unwrap().id;
    let pull = canopy
        .sim()
        .connect(ConnectRequest::good().with_meta(session_meta(&started.session_url)))
        .unwrap();
    canopy.settled_after(&pull, "COMPLETE").await;
    assert_eq!(
        get_link(&canopy.client, &link_id).await.state(),
        v1::LinkState::Active
    );
    canopy.stop().await;
}
