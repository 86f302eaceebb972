//! Axle end to end (issue 4): the real server, its real Axle provider against the embedded
//! sandbox, a fresh database. The hosted Ignition page is driven by plain form posts, the
//! caller's side through gRPC, Axle's side through the sandbox's scenario API.

use chrono::{DateTime, Months, NaiveTime, Utc};
use coverwatch_core::ProviderId;
use coverwatch_sandbox::{AxleSim, FaultEffect, FaultRule, FaultTarget};
use coverwatch_tests::flows::{
    Browser, DEADLINE, Page, address, get_account, get_link, get_policy, kinds, last_of,
    link_events, list_policies, sandbox, start_link, timestamp, wait_for_event, wait_for_events,
    wait_for_state,
};
use coverwatch_tests::{Client, TENANT_A, TestServer, test_config, v1};
use serde_json::json;
use tonic::Code;

use v1::EventKind as K;

struct Axle {
    server: TestServer,
    client: Client,
    browser: Browser,
}

/// A link the end-user completed.
struct Linked {
    link_id: String,
    account_id: String,
    policy_ids: Vec<String>,
    linked_at: DateTime<Utc>,
}

impl Axle {
    async fn start() -> Self {
        let server = TestServer::start(test_config().await, None).await;
        let client = server.client(TENANT_A).await;
        Self {
            server,
            client,
            browser: Browser::new(),
        }
    }

    fn sim(&self) -> &AxleSim {
        sandbox(&self.server).axle()
    }

    async fn start_link(&self, user: &str, redirect: Option<&str>) -> v1::StartLinkResponse {
        start_link(&self.client, v1::Provider::Axle, user, redirect, None).await
    }

    /// Through the hosted Ignition page: pick State Farm, sign in.
    async fn sign_in(&self, session_url: &str, username: &str, password: &str) -> Page {
        let landing = self.browser.get(session_url).await;
        assert_eq!(landing.status, 200, "{}", landing.html);
        let login = self
            .browser
            .submit(&landing, "carrier-form", &[("carrier", "state-farm")])
            .await;
        assert_eq!(login.status, 200, "{}", login.html);
        self.browser
            .submit(
                &login,
                "login-form",
                &[("username", username), ("password", password)],
            )
            .await
    }

    /// StartLink, sign in through the page, and wait for the webhook to complete the link.
    async fn link(&self, user: &str, username: &str, password: &str) -> Linked {
        let started = self.start_link(user, None).await;
        let link_id = started.link.unwrap().id;
        let linked_at = Utc::now();
        let done = self.sign_in(&started.session_url, username, password).await;
        assert_eq!(done.element_text("status").as_deref(), Some("complete"));
        let events = wait_for_event(&self.client, &link_id, K::LinkCompleted).await;
        let Some(v1::event::Payload::LinkCompleted(completed)) =
            last_of(&events, K::LinkCompleted).payload.clone()
        else {
            panic!("link.completed without its payload")
        };
        Linked {
            link_id,
            account_id: completed.account_external_id.expect("the account id"),
            policy_ids: completed.policy_external_ids,
            linked_at,
        }
    }

    async fn stop(self) {
        self.server.stop().await;
    }
}

fn payload(event: &v1::Event) -> &v1::event::Payload {
    event.payload.as_ref().expect("an event payload")
}

fn ignition_token(session_url: &str) -> String {
    url::Url::parse(session_url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "token")
        .expect("ignitionUri carries the token")
        .1
        .into_owned()
}

// ---------------------------------------------------------------------------------------------
// Linking

#[tokio::test]
async fn a_link_completes_through_the_hosted_page_and_the_webhook() {
    let axle = Axle::start().await;
    let started = axle.start_link("user-42", None).await;
    let link = started.link.clone().unwrap();
    assert_eq!(link.state(), v1::LinkState::Pending);
    assert_eq!(
        link.session_url.as_deref(),
        Some(started.session_url.as_str())
    );

    // What Axle was asked for: our user, flat metadata with our link id, our webhook URL.
    let ignition = axle
        .sim()
        .ignition(&ignition_token(&started.session_url))
        .expect("the Ignition exists");
    assert_eq!(ignition.user, json!({"id": "user-42"}));
    assert_eq!(
        ignition.metadata,
        json!({"loan": "L-7", "coverwatchLinkId": link.id})
    );
    let webhook = ignition.webhook_uri.expect("a webhookUri");
    let prefix = axle.server.http_url("/webhooks/axle/");
    assert!(webhook.starts_with(&prefix), "{webhook}");
    assert!(webhook.len() >= prefix.len() + 40, "an unguessable token");
    assert_eq!(ignition.redirect_uri, None);

    let done = axle
        .sign_in(&started.session_url, "username", "password")
        .await;
    assert_eq!(done.element_text("status").as_deref(), Some("complete"));

    let events = wait_for_event(&axle.client, &link.id, K::LinkCompleted).await;
    assert_eq!(
        kinds(&events),
        [
            K::LinkSessionOpened,
            K::LinkAuthStatus, // ignition.opened (ignition.created repeats session_opened)
            K::LinkCompleted
        ]
    );
    let completed = last_of(&events, K::LinkCompleted);
    let v1::event::Payload::LinkCompleted(payload) = payload(completed) else {
        panic!()
    };
    let account_id = payload.account_external_id.clone().unwrap();
    assert!(account_id.starts_with("acc_"));
    assert_eq!(payload.policy_external_ids.len(), 2);
    let Some(v1::event::ProviderDetail::Axle(detail)) = &completed.provider_detail else {
        panic!("an Axle detail")
    };
    assert_eq!(detail.event_type, "ignition.completed");
    assert!(detail.event_id.as_deref().unwrap().starts_with("evt_"));

    let link = get_link(&axle.client, &link.id).await;
    assert_eq!(link.state(), v1::LinkState::Active);
    assert_eq!(link.session_url, None);
    assert!(link.last_refreshed_at.is_some());
    let account = get_account(&axle.client, &link.id).await;
    assert_eq!(account.external_id, account_id);
    assert_eq!(account.first_name.as_deref(), Some("John"));
    assert_eq!(account.policy_ids, payload.policy_external_ids);
    assert_eq!(list_policies(&axle.client, &link.id).await.len(), 2);
    assert_eq!(axle.sim().is_monitored(&account_id), Some(true));

    // The access token is kept encrypted, with the account id.
    let tenant = TENANT_A.0.parse().unwrap();
    let access = axle
        .server
        .app
        .engine
        .store()
        .link_access(&tenant, &link.id.parse().unwrap())
        .await
        .unwrap();
    assert_eq!(access.external_ids["account"], account_id);
    assert_eq!(
        secrecy::ExposeSecret::expose_secret(access.secret.as_ref().unwrap()),
        axle.sim().access_token(&account_id).unwrap()
    );
    axle.stop().await;
}

#[tokio::test]
async fn a_link_completes_through_the_redirect_with_complete_link() {
    let axle = Axle::start().await;
    // Only the redirect path: the completion webhook never arrives.
    sandbox(&axle.server).faults().add(FaultRule::new(
        FaultTarget::webhook_event("axle", "ignition.completed"),
        FaultEffect::Drop,
    ));
    let started = axle
        .start_link("user-1", Some("https://app.example/linked"))
        .await;
    let link_id = started.link.unwrap().id;
    let done = axle
        .sign_in(&started.session_url, "user-home", "pass-home")
        .await;
    assert_eq!(done.status, 303);
    let location = done.location.clone().unwrap();
    assert!(
        location.starts_with("https://app.example/linked?"),
        "{location}"
    );
    assert_eq!(done.location_param("status").as_deref(), Some("complete"));
    let code = done
        .location_param("authCode")
        .expect("authCode on the redirect");

    let completed = axle
        .client
        .clone()
        .complete_link(v1::CompleteLinkRequest {
            link_id: link_id.clone(),
            auth_code: code.clone(),
        })
        .await
        .expect("CompleteLink")
        .into_inner()
        .link
        .unwrap();
    assert_eq!(completed.state(), v1::LinkState::Active);
    let events = link_events(&axle.client, &link_id).await;
    assert_eq!(
        events
            .iter()
            .filter(|e| e.kind() == K::LinkCompleted)
            .count(),
        1
    );
    assert_eq!(list_policies(&axle.client, &link_id).await.len(), 1);

    // The same code again: the link is already complete, nothing changes.
    let again = axle
        .client
        .clone()
        .complete_link(v1::CompleteLinkRequest {
            link_id: link_id.clone(),
            auth_code: code,
        })
        .await
        .expect("CompleteLink again")
        .into_inner()
        .link
        .unwrap();
    assert_eq!(again.state(), v1::LinkState::Active);
    // Ignition's own progress webhooks (`link.auth_status`) may still be arriving while the
    // test runs; the second CompleteLink must add nothing else.
    let applied = |events: &[v1::Event]| {
        events
            .iter()
            .filter(|e| e.kind() != K::LinkAuthStatus)
            .count()
    };
    assert_eq!(
        applied(&link_events(&axle.client, &link_id).await),
        applied(&events)
    );
    axle.stop().await;
}

#[tokio::test]
async fn expired_and_reused_auth_codes_are_a_failed_precondition() {
    let axle = Axle::start().await;
    sandbox(&axle.server).faults().add(FaultRule::new(
        FaultTarget::webhook_event("axle", "ignition.completed"),
        FaultEffect::Drop,
    ));
    let complete = |link_id: String, code: String| {
        let mut client = axle.client.clone();
        async move {
            client
                .complete_link(v1::CompleteLinkRequest {
                    link_id,
                    auth_code: code,
                })
                .await
        }
    };
    let redirect = Some("https://app.example/linked");

    // A code used by one link cannot complete another.
    let first = axle.start_link("user-1", redirect).await;
    let first_id = first.link.unwrap().id;
    let page = axle
        .sign_in(&first.session_url, "username", "password")
        .await;
    let used = page.location_param("authCode").unwrap();
    complete(first_id.clone(), used.clone()).await.unwrap();
    let second = axle.start_link("user-2", redirect).await;
    let second_id = second.link.unwrap().id;
    let err = complete(second_id.clone(), used).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("expired") && err.message().contains("already used"),
        "{}",
        err.message()
    );
    let detail = coverwatch_proto::convert::vendor_error_detail_of(&err).expect("vendor detail");
    assert_eq!(detail.http_status, Some(400));
    assert!(detail.request_id.is_some());
    assert_eq!(
        get_link(&axle.client, &second_id).await.state(),
        v1::LinkState::Pending
    );

    // A code older than 10 minutes.
    let page = axle
        .sign_in(&second.session_url, "user-home", "pass-home")
        .await;
    let late = page.location_param("authCode").unwrap();
    sandbox(&axle.server)
        .clock()
        .advance(chrono::Duration::minutes(11));
    let err = complete(second_id.clone(), late).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("10 minutes"), "{}", err.message());
    assert_eq!(
        get_link(&axle.client, &second_id).await.state(),
        v1::LinkState::Pending
    );

    // A provider that completes sessions on its own has no code to redeem.
    let canopy = start_link(&axle.client, v1::Provider::Canopy, "user-3", None, None).await;
    let err = complete(canopy.link.unwrap().id, "code".into())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("one_time_completion_code"),
        "{}",
        err.message()
    );
    axle.stop().await;
}

#[tokio::test]
async fn a_completion_cut_short_after_the_code_exchange_is_finished_on_retry() {
    let axle = Axle::start().await;
    // Every read of the account fails through the client's own retries, once: the delivery
    // fails after the one-time code was spent, and is tried again.
    let faults = sandbox(&axle.server).faults();
    let outage = faults.add(
        FaultRule::new(
            FaultTarget::endpoint("axle.accounts.get"),
            FaultEffect::status(503),
        )
        .times(4),
    );
    let linked = axle.link("user-1", "username", "password").await;
    let spent = faults
        .list()
        .into_iter()
        .find(|r| r.id == outage)
        .is_none_or(|r| r.times == Some(0));
    assert!(
        spent,
        "the first attempt met the outage: {:?}",
        faults.list()
    );
    let events = link_events(&axle.client, &linked.link_id).await;
    assert_eq!(
        events
            .iter()
            .filter(|e| e.kind() == K::LinkCompleted)
            .count(),
        1
    );
    assert_eq!(list_policies(&axle.client, &linked.link_id).await.len(), 2);
    axle.stop().await;
}

#[tokio::test]
async fn a_completion_that_arrives_after_its_code_expired_ends_the_session() {
    let axle = Axle::start().await;
    sandbox(&axle.server).faults().add(FaultRule::new(
        FaultTarget::webhook_event("axle", "ignition.completed"),
        FaultEffect::latency(std::time::Duration::from_millis(300)),
    ));
    let started = axle.start_link("user-1", None).await;
    let link_id = started.link.unwrap().id;
    axle.sign_in(&started.session_url, "username", "password")
        .await;
    // The notice is late: the code has expired by the time it arrives.
    sandbox(&axle.server)
        .clock()
        .advance(chrono::Duration::minutes(11));
    let events = wait_for_event(&axle.client, &link_id, K::LinkFailed).await;
    let v1::event::Payload::LinkFailed(failed) = payload(last_of(&events, K::LinkFailed)) else {
        panic!()
    };
    assert_eq!(failed.reason(), v1::FailureReason::Other);
    assert!(
        failed.message.as_deref().unwrap().contains("10 minutes"),
        "{failed:?}"
    );
    axle.stop().await;
}

#[tokio::test]
async fn failed_attempts_errors_and_exits_end_or_inform_the_session() {
    let axle = Axle::start().await;

    // A wrong password is progress, not an end; then the carrier's error ends the session.
    let started = axle.start_link("user-1", None).await;
    let link_id = started.link.unwrap().id;
    let page = axle
        .sign_in(&started.session_url, "username", "wrong")
        .await;
    assert!(page.html.contains("incorrect"));
    let retry = axle
        .browser
        .submit(
            &page,
            "login-form",
            &[("username", "user-error"), ("password", "pass-error")],
        )
        .await;
    assert_eq!(retry.element_text("status").as_deref(), Some("error"));
    let events = wait_for_event(&axle.client, &link_id, K::LinkFailed).await;
    let statuses: Vec<v1::AuthStatus> = events
        .iter()
        .filter_map(|e| match payload(e) {
            v1::event::Payload::LinkAuthStatus(s) => Some(s.status()),
            _ => None,
        })
        .collect();
    assert_eq!(
        statuses,
        [v1::AuthStatus::Opened, v1::AuthStatus::NotAuthenticated]
    );
    let v1::event::Payload::LinkFailed(failed) = payload(last_of(&events, K::LinkFailed)) else {
        panic!()
    };
    assert_eq!(failed.reason(), v1::FailureReason::ProviderError);
    assert_eq!(
        failed.message.as_deref(),
        Some("Unable to connect to the insurance carrier. Please try again later.")
    );
    assert_eq!(
        get_link(&axle.client, &link_id).await.state(),
        v1::LinkState::Failed
    );

    // Leaving the page.
    let started = axle.start_link("user-2", None).await;
    let link_id = started.link.unwrap().id;
    let landing = axle.browser.get(&started.session_url).await;
    let left = axle.browser.submit(&landing, "exit-form", &[]).await;
    assert_eq!(left.element_text("status").as_deref(), Some("exit"));
    let events = wait_for_event(&axle.client, &link_id, K::LinkExited).await;
    let v1::event::Payload::LinkExited(exited) = payload(last_of(&events, K::LinkExited)) else {
        panic!()
    };
    assert_eq!(exited.step.as_deref(), Some("carrier-select"));
    let link = get_link(&axle.client, &link_id).await;
    assert_eq!(link.state(), v1::LinkState::Exited);
    axle.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Monitoring

#[tokio::test]
async fn each_monitoring_event_reaches_the_caller() {
    let axle = Axle::start().await;
    let linked = axle.link("user-1", "username", "password").await;
    let (link, client) = (&linked.link_id, &axle.client);
    let policy = &linked.policy_ids[0];
    let count = |events: &[v1::Event], kind: K| events.iter().filter(|e| e.kind() == kind).count();

    // account.modified → the account is read again → account.updated with the change.
    axle.sim()
        .modify_account(&linked.account_id, &json!({"email": "jane@example.com"}))
        .unwrap();
    let events = wait_for_event(client, link, K::AccountUpdated).await;
    let v1::event::Payload::AccountUpdated(updated) = payload(last_of(&events, K::AccountUpdated))
    else {
        panic!()
    };
    assert_eq!(updated.account_external_id, linked.account_id);
    assert_eq!(
        updated.changes,
        [v1::FieldChange {
            field: "email".into(),
            before: Some("john.smith@example.com".into()),
            after: Some("jane@example.com".into()),
        }]
    );
    assert_eq!(
        get_account(client, link).await.email.as_deref(),
        Some("jane@example.com")
    );

    // policy.modified → the policy is read again → policy.updated with normalized changes.
    axle.sim()
        .modify_policy(policy, &json!({"premium": 1400.25}))
        .unwrap();
    let events = wait_for_event(client, link, K::PolicyUpdated).await;
    let v1::event::Payload::PolicyUpdated(updated) = payload(last_of(&events, K::PolicyUpdated))
    else {
        panic!()
    };
    assert_eq!(&updated.policy_external_id, policy);
    assert_eq!(updated.status(), v1::PolicyStatus::Active);
    assert_eq!(
        updated.changes,
        [v1::PolicyChange {
            kind: v1::ChangeKind::PremiumChanged as i32,
            subject: None,
            field: Some("premium_cents".into()),
            before: Some("134250".into()),
            after: Some("140025".into()),
        }]
    );

    // A cancellation is a status change.
    axle.sim().cancel_policy(policy).unwrap();
    let events = wait_for_events(client, link, K::PolicyUpdated, 2).await;
    let v1::event::Payload::PolicyUpdated(updated) = payload(last_of(&events, K::PolicyUpdated))
    else {
        panic!()
    };
    assert_eq!(updated.status(), v1::PolicyStatus::Inactive);
    assert_eq!(
        updated.changes[0],
        v1::PolicyChange {
            kind: v1::ChangeKind::StatusChanged as i32,
            subject: None,
            field: Some("status".into()),
            before: Some("active".into()),
            after: Some("inactive".into()),
        }
    );
    let stored = get_policy(client, link, policy, v1::PolicyTerm::Current).await;
    assert_eq!(stored.policy.unwrap().status(), v1::PolicyStatus::Inactive);

    // isActive becoming null: the policy may have left the account.
    axle.sim()
        .modify_policy(policy, &json!({"isActive": null}))
        .unwrap();
    let events = wait_for_events(client, link, K::PolicyUpdated, 3).await;
    let v1::event::Payload::PolicyUpdated(updated) = payload(last_of(&events, K::PolicyUpdated))
    else {
        panic!()
    };
    assert_eq!(updated.status(), v1::PolicyStatus::Removed);

    // account.retrying: an event, the state stays.
    axle.sim().account_retrying(&linked.account_id).unwrap();
    let events = wait_for_event(client, link, K::VendorEvent).await;
    let v1::event::Payload::VendorEvent(vendor) = payload(last_of(&events, K::VendorEvent)) else {
        panic!()
    };
    assert_eq!(vendor.vendor_type, "account.retrying");
    assert_eq!(get_link(client, link).await.state(), v1::LinkState::Active);

    // policy.renewal-available: the renewal term is read and kept beside the current one.
    let second = &linked.policy_ids[1];
    axle.sim().make_renewal_available(second, None).unwrap();
    let events = wait_for_event(client, link, K::PolicyRenewalAvailable).await;
    let v1::event::Payload::PolicyRenewalAvailable(renewal) =
        payload(last_of(&events, K::PolicyRenewalAvailable))
    else {
        panic!()
    };
    assert_eq!(&renewal.policy_external_id, second);
    let renewal = get_policy(client, link, second, v1::PolicyTerm::Renewal).await;
    assert_eq!(renewal.term(), v1::PolicyTerm::Renewal);
    let renewal = renewal.policy.unwrap();
    let current = get_policy(client, link, second, v1::PolicyTerm::Current)
        .await
        .policy
        .unwrap();
    assert_eq!(renewal.premium_cents, Some(63_440)); // 610.00 × 1.04
    assert_eq!(current.premium_cents, Some(61_000));
    assert_eq!(renewal.effective_date, current.expiration_date);

    // An event type nobody knows yet is kept as a vendor event.
    axle.sim()
        .send_account_event(&linked.account_id, "account.reviewed", json!({"note": 1}))
        .unwrap();
    let events = wait_for_events(client, link, K::VendorEvent, 2).await;
    let v1::event::Payload::VendorEvent(vendor) = payload(last_of(&events, K::VendorEvent)) else {
        panic!()
    };
    assert_eq!(vendor.vendor_type, "account.reviewed");

    // Each monitoring event was one event for the caller, nothing more.
    let events = link_events(client, link).await;
    assert_eq!(count(&events, K::AccountUpdated), 1);
    assert_eq!(count(&events, K::PolicyUpdated), 3);
    assert_eq!(count(&events, K::DataRefreshed), 0);
    axle.stop().await;
}

#[tokio::test]
async fn a_disconnected_account_is_reconnected_through_a_new_session() {
    let axle = Axle::start().await;
    let linked = axle.link("user-1", "username", "password").await;
    let (link, client) = (&linked.link_id, &axle.client);

    for (n, (status, reason)) in [
        (
            "credentials-expired",
            v1::ReconnectReason::CredentialsExpired,
        ),
        ("mfa-expired", v1::ReconnectReason::MfaExpired),
        ("account-disabled", v1::ReconnectReason::AccountDisabled),
        (
            "account-inaccessible",
            v1::ReconnectReason::AccountInaccessible,
        ),
    ]
    .into_iter()
    .enumerate()
    {
        axle.sim()
            .disconnect_account(&linked.account_id, status)
            .unwrap();
        let events = wait_for_events(client, link, K::LinkReconnectRequired, n + 1).await;
        let v1::event::Payload::LinkReconnectRequired(required) =
            payload(last_of(&events, K::LinkReconnectRequired))
        else {
            panic!()
        };
        assert_eq!(required.reason(), reason, "{status}");
        assert_eq!(
            get_link(client, link).await.state(),
            v1::LinkState::ReconnectRequired
        );

        // Axle has no in-app reconnect: the calls that would do one say so.
        let err = client
            .clone()
            .submit_reconnect_credentials(v1::SubmitReconnectCredentialsRequest {
                link_id: link.clone(),
                username: "username".into(),
                password: Some("password".into()),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition);
        assert!(
            err.message().contains("in_app_reconnect"),
            "{}",
            err.message()
        );

        let reconnect = client
            .clone()
            .start_reconnect(v1::StartReconnectRequest {
                link_id: link.clone(),
                redirect_uri: None,
            })
            .await
            .expect("StartReconnect")
            .into_inner();
        let ignition = axle
            .sim()
            .ignition(&ignition_token(&reconnect.session_url))
            .unwrap();
        assert_eq!(
            ignition.metadata["coverwatchLinkId"],
            json!(link),
            "the same link id"
        );
        assert_eq!(
            reconnect.link.unwrap().session_url.as_deref(),
            Some(reconnect.session_url.as_str())
        );
        let page = axle
            .sign_in(&reconnect.session_url, "username", "password")
            .await;
        assert_eq!(page.element_text("status").as_deref(), Some("complete"));
        let events = wait_for_events(client, link, K::LinkReconnected, n + 1).await;
        let v1::event::Payload::LinkReconnected(reconnected) =
            payload(last_of(&events, K::LinkReconnected))
        else {
            panic!()
        };
        assert_eq!(
            reconnected.account_external_id.as_deref(),
            Some(linked.account_id.as_str())
        );
        let now = get_link(client, link).await;
        assert_eq!(now.state(), v1::LinkState::Active);
        assert_eq!(now.session_url, None);
    }
    let events = link_events(client, link).await;
    let opened: Vec<bool> = events
        .iter()
        .filter_map(|e| match payload(e) {
            v1::event::Payload::LinkSessionOpened(o) => Some(o.reconnect),
            _ => None,
        })
        .collect();
    assert_eq!(opened, [false, true, true, true, true]);
    assert_eq!(
        events
            .iter()
            .filter(|e| e.kind() == K::LinkCompleted)
            .count(),
        1
    );

    // Monitoring goes on: events of the reconnected account still reach the link.
    axle.sim()
        .modify_policy(&linked.policy_ids[0], &json!({"premium": 999.0}))
        .unwrap();
    wait_for_event(client, link, K::PolicyUpdated).await;
    axle.stop().await;
}

#[tokio::test]
async fn descope_stops_monitoring_and_can_be_repeated() {
    let axle = Axle::start().await;
    let linked = axle.link("user-1", "username", "password").await;
    let (link, client) = (&linked.link_id, &axle.client);
    for _ in 0..2 {
        let descoped = client
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
    assert_eq!(axle.sim().is_monitored(&linked.account_id), Some(false));
    let events = link_events(client, link).await;
    assert_eq!(
        events
            .iter()
            .filter(|e| e.kind() == K::LinkDescoped)
            .count(),
        1
    );
    let v1::event::Payload::LinkDescoped(descoped) = payload(last_of(&events, K::LinkDescoped))
    else {
        panic!()
    };
    assert_eq!(descoped.reason(), v1::DescopeReason::Requested);
    assert_eq!(descoped.replaced_by_link_id, None);
    // The last snapshots stay readable.
    assert_eq!(list_policies(client, link).await.len(), 2);
    axle.stop().await;
}

// ---------------------------------------------------------------------------------------------
// One link per account

#[tokio::test]
async fn relinking_the_same_account_resumes_its_link_instead_of_a_second_one() {
    let axle = Axle::start().await;
    let linked = axle.link("user-1", "username", "password").await;
    let (first, client) = (&linked.link_id, &axle.client);
    axle.sim()
        .disconnect_account(&linked.account_id, "credentials-expired")
        .unwrap();
    wait_for_state(client, first, v1::LinkState::ReconnectRequired).await;

    // The user starts over instead of reconnecting, and signs in to the same account.
    let started = axle.start_link("user-1", None).await;
    let second = started.link.unwrap().id;
    axle.sign_in(&started.session_url, "username", "password")
        .await;
    let events = wait_for_event(client, &second, K::LinkFailed).await;
    let v1::event::Payload::LinkFailed(failed) = payload(last_of(&events, K::LinkFailed)) else {
        panic!()
    };
    assert_eq!(failed.reason(), v1::FailureReason::Other);
    assert!(
        failed.message.as_deref().unwrap().contains(first.as_str()),
        "{failed:?}"
    );
    assert!(!kinds(&events).contains(&K::LinkCompleted));

    let events = wait_for_event(client, first, K::LinkReconnected).await;
    let v1::event::Payload::LinkReconnected(reconnected) =
        payload(last_of(&events, K::LinkReconnected))
    else {
        panic!()
    };
    assert_eq!(
        reconnected.account_external_id.as_deref(),
        Some(linked.account_id.as_str())
    );
    assert_eq!(get_link(client, first).await.state(), v1::LinkState::Active);
    let active = client
        .clone()
        .list_links(v1::ListLinksRequest {
            user_id: Some("user-1".into()),
            states: vec![v1::LinkState::Active as i32],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .links;
    assert_eq!(active.len(), 1, "one link for one account");

    // Axle now sends the account's events to the newest session's URL; they reach the link
    // that holds the account.
    axle.sim()
        .modify_policy(&linked.policy_ids[0], &json!({"premium": 1500.0}))
        .unwrap();
    wait_for_event(client, first, K::PolicyUpdated).await;
    let second_events = link_events(client, &second).await;
    assert_eq!(
        kinds(&second_events),
        [K::LinkSessionOpened, K::LinkAuthStatus, K::LinkFailed]
    );
    axle.stop().await;
}

/// Ignition completions other than a carrier login: `result` is "`link` (direct carrier
/// connection was made and policy is available) OR `manual` (policy details were collected via
/// document or form) OR `proxy` (operation was completed on behalf of user)"
/// (docs.axle.insure/guides/ignition-events, "Redirect and Window MessageEvent parameters").
/// Such a completion reaches a policy without a carrier account, whose `isActive` is "Missing
/// when Ignition completed with result: manual" (docs.axle.insure/api-reference/policies/policy).
/// Every Ignition event carries the Ignition's token (`data.token`,
/// docs.axle.insure/api-reference/webhooks/ignition-events).
#[tokio::test]
async fn manual_and_proxy_completions_link_the_policy_without_an_account() {
    let axle = Axle::start().await;
    for result in ["manual", "proxy"] {
        let started = axle.start_link("user-1", None).await;
        let link = started.link.unwrap().id;
        let token = ignition_token(&started.session_url);
        axle.sim().open_ignition(&token).unwrap();
        axle.sim().complete_without_login(&token, result).unwrap();

        let events = wait_for_event(&axle.client, &link, K::LinkCompleted).await;
        let completed_event = last_of(&events, K::LinkCompleted);
        let v1::event::Payload::LinkCompleted(completed) = payload(completed_event) else {
            panic!()
        };
        assert_eq!(completed.account_external_id, None, "{result}");
        assert_eq!(completed.policy_external_ids.len(), 1, "{result}");
        let Some(v1::event::ProviderDetail::Axle(detail)) = &completed_event.provider_detail else {
            panic!("{completed_event:?}")
        };
        assert_eq!(detail.ignition_token.as_deref(), Some(token.as_str()));
        assert_eq!(detail.result.as_deref(), Some(result));
        assert_eq!(detail.event_type, "ignition.completed");

        let policies = list_policies(&axle.client, &link).await;
        assert_eq!(policies.len(), 1);
        assert_eq!(policies[0].external_id, completed.policy_external_ids[0]);
        // No `isActive`: whether the policy is in force is not known.
        assert_eq!(policies[0].status(), v1::PolicyStatus::Unknown, "{result}");
        assert_eq!(
            get_link(&axle.client, &link).await.state(),
            v1::LinkState::Active
        );
        // The opened event named the same Ignition.
        let opened = events
            .iter()
            .find(|e| e.kind() == K::LinkAuthStatus)
            .expect("ignition.opened");
        assert!(matches!(&opened.provider_detail,
            Some(v1::event::ProviderDetail::Axle(d)) if d.ignition_token.as_deref() == Some(token.as_str())));
    }
    axle.stop().await;
}

/// Axle's monitoring guide (docs.axle.insure/guides/monitoring, step 2 "Store accessToken for
/// future access"): "If a returning user links a new insurance account, a new access token will
/// be returned. You should compare the new token against the one you have stored for this user
/// and determine if the old access token needs to be de-scoped." Descope Token
/// (docs.axle.insure/api-reference/tokens/descope-token) names the case: the user "links a
/// different account and a new token comes back (carrier switch)".
#[tokio::test]
async fn a_reconnect_to_a_different_account_descopes_the_old_token_and_follows_the_new_one() {
    let axle = Axle::start().await;
    let linked = axle.link("user-1", "username", "password").await;
    let (link, client) = (&linked.link_id, &axle.client);
    let old_token = axle.sim().access_token(&linked.account_id).unwrap();
    axle.sim()
        .disconnect_account(&linked.account_id, "credentials-expired")
        .unwrap();
    wait_for_state(client, link, v1::LinkState::ReconnectRequired).await;

    let reconnect = client
        .clone()
        .start_reconnect(v1::StartReconnectRequest {
            link_id: link.clone(),
            redirect_uri: None,
        })
        .await
        .expect("StartReconnect")
        .into_inner();
    // The user comes back with another carrier login: another account, another token.
    let page = axle
        .sign_in(&reconnect.session_url, "user-home", "pass-home")
        .await;
    assert_eq!(page.element_text("status").as_deref(), Some("complete"));

    let events = wait_for_event(client, link, K::LinkReconnected).await;
    let v1::event::Payload::LinkReconnected(reconnected) =
        payload(last_of(&events, K::LinkReconnected))
    else {
        panic!()
    };
    let new_account = reconnected.account_external_id.clone().unwrap();
    assert_ne!(new_account, linked.account_id);
    assert_eq!(
        reconnected.previous_account_external_id.as_deref(),
        Some(linked.account_id.as_str())
    );
    let new_token = axle.sim().access_token(&new_account).unwrap();
    assert_ne!(new_token, old_token, "a different account, a new token");

    // The simulator's record: exactly the old token was descoped, the new account is monitored.
    let descopes = axle.sim().descopes();
    assert_eq!(descopes.len(), 1, "{descopes:?}");
    assert_eq!(descopes[0].access_token, old_token);
    assert_eq!(descopes[0].account, linked.account_id);
    assert_eq!(axle.sim().is_monitored(&linked.account_id), Some(false));
    assert_eq!(axle.sim().is_monitored(&new_account), Some(true));

    // The link follows the new account: its policies are the new account's only, the old
    // ones are reported removed.
    let now = get_link(client, link).await;
    assert_eq!(now.state(), v1::LinkState::Active);
    assert_eq!(get_account(client, link).await.external_id, new_account);
    let new_policies = axle.sim().account(&new_account).unwrap()["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_owned())
        .collect::<Vec<_>>();
    let mut listed: Vec<String> = list_policies(client, link)
        .await
        .into_iter()
        .map(|p| p.external_id)
        .collect();
    listed.sort();
    let mut expected = new_policies.clone();
    expected.sort();
    assert_eq!(listed, expected);
    let events = link_events(client, link).await;
    let removed: Vec<String> = events
        .iter()
        .filter_map(|e| match payload(e) {
            v1::event::Payload::PolicyUpdated(u)
                if u.changes
                    .iter()
                    .any(|c| c.kind() == v1::ChangeKind::PolicyRemoved) =>
            {
                Some(u.policy_external_id.clone())
            }
            _ => None,
        })
        .collect();
    let mut old_policies = linked.policy_ids.clone();
    old_policies.sort();
    let mut removed_sorted = removed.clone();
    removed_sorted.sort();
    assert_eq!(removed_sorted, old_policies);

    // Events of the new account reach the link.
    let updates = events
        .iter()
        .filter(|e| e.kind() == K::PolicyUpdated)
        .count();
    axle.sim()
        .modify_policy(&new_policies[0], &json!({"premium": 2222.0}))
        .unwrap();
    let events = wait_for_events(client, link, K::PolicyUpdated, updates + 1).await;
    let v1::event::Payload::PolicyUpdated(update) = payload(last_of(&events, K::PolicyUpdated))
    else {
        panic!()
    };
    assert_eq!(update.policy_external_id, new_policies[0]);
    axle.stop().await;
}

#[tokio::test]
async fn a_replacing_link_with_another_account_descopes_the_old_one() {
    let axle = Axle::start().await;
    let old = axle.link("user-1", "username", "password").await;
    let client = &axle.client;

    let started = start_link(
        client,
        v1::Provider::Axle,
        "user-1",
        None,
        Some(&old.link_id),
    )
    .await;
    let new = started.link.unwrap().id;
    axle.sign_in(&started.session_url, "user-home", "pass-home")
        .await;
    wait_for_state(client, &new, v1::LinkState::Active).await;
    let events = wait_for_event(client, &old.link_id, K::LinkDescoped).await;
    let v1::event::Payload::LinkDescoped(descoped) = payload(last_of(&events, K::LinkDescoped))
    else {
        panic!()
    };
    assert_eq!(descoped.reason(), v1::DescopeReason::Replaced);
    assert_eq!(descoped.replaced_by_link_id.as_deref(), Some(new.as_str()));
    assert_eq!(
        get_link(client, &old.link_id).await.state(),
        v1::LinkState::Descoped
    );
    assert_eq!(axle.sim().is_monitored(&old.account_id), Some(false));

    // Replacing with the same account leaves both as they are: it is one link.
    let started = start_link(client, v1::Provider::Axle, "user-1", None, Some(&new)).await;
    let third = started.link.unwrap().id;
    axle.sign_in(&started.session_url, "user-home", "pass-home")
        .await;
    wait_for_state(client, &third, v1::LinkState::Failed).await;
    assert_eq!(get_link(client, &new).await.state(), v1::LinkState::Active);
    axle.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Faults and hostile input

#[tokio::test]
async fn a_fetch_through_429_then_500_is_retried_and_succeeds() {
    let axle = Axle::start().await;
    let linked = axle.link("user-1", "username", "password").await;
    let faults = sandbox(&axle.server).faults();
    let endpoint = FaultTarget::endpoint("axle.policies.get");
    let limited =
        faults.add(FaultRule::new(endpoint.clone(), FaultEffect::rate_limited(0)).times(1));
    let failed = faults.add(FaultRule::new(endpoint, FaultEffect::status(500)).times(1));

    axle.sim()
        .modify_policy(&linked.policy_ids[0], &json!({"premium": 1500.0}))
        .unwrap();
    let events = wait_for_event(&axle.client, &linked.link_id, K::PolicyUpdated).await;
    let v1::event::Payload::PolicyUpdated(updated) = payload(last_of(&events, K::PolicyUpdated))
    else {
        panic!()
    };
    assert_eq!(updated.changes[0].after.as_deref(), Some("150000"));
    let spent = |id: u64| {
        faults
            .list()
            .into_iter()
            .find(|r| r.id == id)
            .is_none_or(|r| r.times == Some(0))
    };
    assert!(spent(limited) && spent(failed), "{:?}", faults.list());
    axle.stop().await;
}

#[tokio::test]
async fn a_webhook_with_an_unknown_token_is_refused_and_not_stored() {
    let axle = Axle::start().await;
    let linked = axle.link("user-1", "username", "password").await;
    let store = axle.server.app.engine.store();
    let stored = store
        .count_deliveries(ProviderId::from_static("axle"))
        .await
        .unwrap();
    let body = json!({
        "id": "evt_forged", "type": "policy.modified", "createdAt": "2026-01-01T00:00:00.000Z",
        "data": {"ref": linked.policy_ids[0], "account": linked.account_id}
    });
    for path in ["/webhooks/axle/not-a-token-we-gave", "/webhooks/axle"] {
        let response = axle
            .server
            .http
            .post(axle.server.http_url(path))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{path}");
    }
    assert_eq!(
        store
            .count_deliveries(ProviderId::from_static("axle"))
            .await
            .unwrap(),
        stored
    );
    assert!(!kinds(&link_events(&axle.client, &linked.link_id).await).contains(&K::PolicyUpdated));
    axle.stop().await;
}

#[tokio::test]
async fn payloads_with_unknown_fields_nulls_and_missing_keys_are_read() {
    let axle = Axle::start().await;
    let linked = axle.link("user-1", "username", "password").await;
    let (link, client) = (&linked.link_id, &axle.client);
    let webhook = axle.sim().snapshot()["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == json!(linked.account_id))
        .and_then(|a| a["webhookUri"].as_str().map(str::to_owned))
        .expect("the account's webhookUri");
    let post = |body: serde_json::Value| {
        let http = axle.server.http.clone();
        let url = webhook.clone();
        async move { http.post(url).json(&body).send().await.unwrap().status() }
    };

    // Unknown fields everywhere, `changes` missing, `account` null: the ref says what to read.
    axle.sim()
        .modify_policy(&linked.policy_ids[0], &json!({"premium": 1111.0}))
        .unwrap();
    wait_for_event(client, link, K::PolicyUpdated).await;
    let status = post(json!({
        "id": "evt_extra_1", "type": "policy.modified", "createdAt": "2026-01-01T00:00:00.000Z",
        "apiVersion": "2099-01-01", "unexpected": {"nested": [1, 2]},
        "data": {"ref": linked.policy_ids[1], "account": null, "user": null, "metadata": null,
                 "client": 42, "somethingNew": true}
    }))
    .await;
    assert_eq!(status, 200);
    // Nothing changed in that policy: fresh data, no change.
    wait_for_event(client, link, K::DataRefreshed).await;

    // An account event with `changes` in a shape of its own and no createdAt.
    let status = post(json!({
        "id": "evt_extra_2", "type": "account.modified",
        "data": {"ref": linked.account_id, "changes": {"email": {"value": 7}}}
    }))
    .await;
    assert_eq!(status, 200);
    wait_for_events(client, link, K::DataRefreshed, 2).await;

    // An unknown type with no data at all.
    let status = post(json!({"id": "evt_extra_3", "type": "account.audited"})).await;
    assert_eq!(status, 200);
    let events = wait_for_event(client, link, K::VendorEvent).await;
    let v1::event::Payload::VendorEvent(vendor) = payload(last_of(&events, K::VendorEvent)) else {
        panic!()
    };
    assert_eq!(vendor.vendor_type, "account.audited");

    // The same event id again is the same delivery: one event.
    let before = link_events(client, link).await.len();
    assert_eq!(
        post(json!({"id": "evt_extra_3", "type": "account.audited"})).await,
        200
    );
    // A later delivery is processed after it, so its events prove the repeat was skipped.
    assert_eq!(
        post(json!({"id": "evt_extra_4", "type": "account.audited2"})).await,
        200
    );
    let events = wait_for_events(client, link, K::VendorEvent, 2).await;
    assert_eq!(events.len(), before + 1);
    assert_eq!(get_link(client, link).await.state(), v1::LinkState::Active);
    axle.stop().await;
}

// ---------------------------------------------------------------------------------------------
// The normalized data of each sandbox test login, as callers read it

fn fixture_day(linked_at: DateTime<Utc>) -> DateTime<Utc> {
    linked_at
        .date_naive()
        .and_time(NaiveTime::from_hms_opt(4, 0, 0).unwrap())
        .and_utc()
}

fn term(linked_at: DateTime<Utc>, days_ago: i64, months: u32) -> (DateTime<Utc>, DateTime<Utc>) {
    let eff = fixture_day(linked_at) - chrono::Duration::days(days_ago);
    (eff, eff + Months::new(months))
}

fn dollars(d: i64) -> Option<i64> {
    Some(d * 100)
}

fn coverage(
    code: v1::CoverageCode,
    vendor_code: &str,
    label: &str,
    per_person: Option<i64>,
    per_accident: Option<i64>,
    deductible: Option<i64>,
    property_id: Option<&str>,
) -> v1::Coverage {
    let other = code == v1::CoverageCode::Other;
    v1::Coverage {
        code: code as i32,
        other_code: other.then(|| vendor_code.to_owned()),
        vendor_code: vendor_code.into(),
        label: Some(label.into()),
        limit_per_person_cents: per_person,
        limit_per_accident_cents: per_accident,
        deductible_cents: deductible,
        premium_cents: None,
        property_id: property_id.map(Into::into),
        declined: false,
        ..Default::default()
    }
}

fn insured(first: &str, last: &str, role: v1::InsuredRole, license: Option<&str>) -> v1::Insured {
    v1::Insured {
        first_name: Some(first.into()),
        last_name: Some(last.into()),
        full_name: None,
        role: role as i32,
        license_masked: license.map(Into::into),
        license_state: license.map(|_| "GA".into()),
        property_id: None,
    }
}

fn vehicle(id: &str, year: i32, make: &str, model: &str, vin: &str, body: &str) -> v1::Vehicle {
    v1::Vehicle {
        id: id.into(),
        vin: Some(vin.into()),
        year: Some(year),
        make: Some(make.into()),
        model: Some(model.into()),
        body_style: Some(body.into()),
        garaging_address: None,
    }
}

fn declaration(created_at: DateTime<Utc>) -> Vec<v1::DocumentInfo> {
    vec![v1::DocumentInfo {
        id: None,
        name: Some("Declaration Page".into()),
        kinds: vec!["declaration_page".into()],
        source: Some("carrier".into()),
        created_at: timestamp(created_at),
    }]
}

fn state_farm() -> Option<v1::Carrier> {
    Some(v1::Carrier {
        id: "state-farm".into(),
        name: None,
    })
}

/// The sandbox's property ids of a policy, in order (Axle's ids for vehicles and dwellings).
fn property_ids(axle: &Axle, policy_id: &str) -> Vec<String> {
    axle.sim().policy(policy_id).unwrap()["properties"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn each_test_login_reads_back_field_by_field() {
    use v1::CoverageCode as C;
    let axle = Axle::start().await;
    let client = &axle.client;

    // `username` / `password`: two active auto policies.
    let linked = axle.link("user-1", "username", "password").await;
    let policies = list_policies(client, &linked.link_id).await;
    let mut ids = linked.policy_ids.clone();
    ids.sort();
    assert_eq!(
        policies
            .iter()
            .map(|p| p.external_id.clone())
            .collect::<Vec<_>>(),
        ids,
        "ordered by external_id"
    );
    let atlanta = address(
        "123 Fake St.",
        Some("Unit 456"),
        "Atlanta",
        "Georgia",
        "30315",
        "USA",
    );
    let main_id = &linked.policy_ids[0];
    let v = property_ids(&axle, main_id);
    let (eff, exp) = term(linked.linked_at, 60, 6);
    let main = get_policy(
        client,
        &linked.link_id,
        main_id,
        v1::PolicyTerm::Unspecified,
    )
    .await;
    assert_eq!(main.term(), v1::PolicyTerm::Current);
    assert!(main.fetched_at.is_some());
    assert_eq!(
        main.policy.unwrap(),
        v1::Policy {
            external_id: main_id.clone(),
            policy_type: v1::PolicyType::Auto as i32,
            other_policy_type: None,
            carrier: state_farm(),
            policy_number: Some("AUTO-100-2001".into()),
            status: v1::PolicyStatus::Active as i32,
            effective_date: timestamp(eff),
            expiration_date: timestamp(exp),
            cancelled_date: None,
            premium_cents: Some(134_250),
            address: atlanta.clone(),
            vehicles: vec![
                vehicle(&v[0], 2017, "HONDA", "CR-V", "SMTD44GN3HT812287", "SUV"),
                vehicle(&v[1], 2020, "TOYOTA", "CAMRY", "4T1B11HK5LU000002", "Sedan"),
            ],
            dwellings: vec![],
            coverages: vec![
                coverage(
                    C::BodilyInjury,
                    "BI",
                    "Bodily Injury",
                    dollars(250_000),
                    dollars(500_000),
                    None,
                    None
                ),
                coverage(
                    C::PropertyDamage,
                    "PD",
                    "Property Damage",
                    None,
                    dollars(100_000),
                    None,
                    None
                ),
                coverage(
                    C::UninsuredMotoristBodilyInjury,
                    "UMBI",
                    "Uninsured Motorists Bodily Injury",
                    dollars(100_000),
                    dollars(300_000),
                    None,
                    None,
                ),
                coverage(
                    C::UninsuredMotoristPropertyDamage,
                    "UMPD",
                    "Uninsured Motorists Property Damage",
                    None,
                    dollars(25_000),
                    dollars(250),
                    None,
                ),
                // Axle's underinsured codes, normalized as Canopy's underinsured types are.
                coverage(
                    C::UnderinsuredMotoristBodilyInjury,
                    "UIMBI",
                    "Underinsured Motorists Bodily Injury",
                    dollars(100_000),
                    dollars(300_000),
                    None,
                    None,
                ),
                coverage(
                    C::UnderinsuredMotoristPropertyDamage,
                    "UIMPD",
                    "Underinsured Motorists Property Damage",
                    None,
                    dollars(25_000),
                    dollars(250),
                    None,
                ),
                coverage(
                    C::Comprehensive,
                    "COMP",
                    "Comprehensive",
                    None,
                    None,
                    dollars(500),
                    Some(&v[0])
                ),
                coverage(
                    C::Collision,
                    "COLL",
                    "Collision",
                    None,
                    None,
                    dollars(500),
                    Some(&v[0])
                ),
                coverage(
                    C::Comprehensive,
                    "COMP",
                    "Comprehensive",
                    None,
                    None,
                    dollars(1_000),
                    Some(&v[1])
                ),
                coverage(
                    C::Collision,
                    "COLL",
                    "Collision",
                    None,
                    None,
                    dollars(1_000),
                    Some(&v[1])
                ),
            ],
            insureds: vec![
                insured("John", "Smith", v1::InsuredRole::Primary, Some("•••••1234")),
                insured(
                    "Jane",
                    "Smith",
                    v1::InsuredRole::Secondary,
                    Some("•••••5678")
                ),
            ],
            interested_parties: vec![v1::InterestedParty {
                kind: v1::PartyKind::Lienholder as i32,
                name: Some("Capital One Auto Finance".into()),
                address: address("Po Box 105205", None, "Atlanta", "GA", "30348-5205", "USA"),
                loan_number: None,
                property_id: Some(v[0].clone()),
            }],
            documents: declaration(eff),
        }
    );
    let csl_id = &linked.policy_ids[1];
    let v = property_ids(&axle, csl_id);
    let (eff, exp) = term(linked.linked_at, 20, 6);
    let csl = get_policy(client, &linked.link_id, csl_id, v1::PolicyTerm::Current).await;
    assert_eq!(
        csl.policy.unwrap(),
        v1::Policy {
            external_id: csl_id.clone(),
            policy_type: v1::PolicyType::Auto as i32,
            other_policy_type: None,
            carrier: state_farm(),
            policy_number: Some("AUTO-100-2002".into()),
            status: v1::PolicyStatus::Active as i32,
            effective_date: timestamp(eff),
            expiration_date: timestamp(exp),
            cancelled_date: None,
            premium_cents: Some(61_000),
            address: atlanta.clone(),
            vehicles: vec![vehicle(
                &v[0],
                2015,
                "FORD",
                "F-150",
                "1FTEW1EF0FKD00003",
                "Pickup"
            )],
            dwellings: vec![],
            coverages: vec![
                coverage(
                    C::BodilyInjury,
                    "BI",
                    "Bodily Injury",
                    None,
                    dollars(300_000),
                    None,
                    None
                ),
                coverage(
                    C::PropertyDamage,
                    "PD",
                    "Property Damage",
                    None,
                    dollars(300_000),
                    dollars(500),
                    None,
                ),
                // The same limit on BI and PD is how Axle writes a combined single limit, and
                // also how it writes a lone BI limit: the CSL is inferred, and says so.
                v1::Coverage {
                    inferred: true,
                    ..coverage(
                        C::CombinedSingleLimit,
                        "BI+PD",
                        "Combined Single Limit",
                        None,
                        dollars(300_000),
                        None,
                        None,
                    )
                },
                coverage(
                    C::UninsuredMotoristBodilyInjury,
                    "UUIMBI",
                    "Uninsured/Underinsured Motorists Bodily Injury",
                    None,
                    dollars(300_000),
                    None,
                    None,
                ),
                coverage(
                    C::UnderinsuredMotoristBodilyInjury,
                    "UUIMBI",
                    "Uninsured/Underinsured Motorists Bodily Injury",
                    None,
                    dollars(300_000),
                    None,
                    None,
                ),
                coverage(
                    C::Comprehensive,
                    "COMP",
                    "Comprehensive",
                    None,
                    None,
                    dollars(250),
                    Some(&v[0])
                ),
                coverage(
                    C::Collision,
                    "COLL",
                    "Collision",
                    None,
                    None,
                    dollars(500),
                    Some(&v[0])
                ),
            ],
            insureds: vec![insured(
                "John",
                "Smith",
                v1::InsuredRole::Primary,
                Some("•••••1234")
            )],
            interested_parties: vec![],
            documents: declaration(eff),
        }
    );
    let account = get_account(client, &linked.link_id).await;
    assert_eq!(
        (
            account.carrier.clone(),
            account.first_name.as_deref(),
            account.last_name.as_deref(),
            account.email.as_deref(),
            account.phone.as_deref(),
            account.connection(),
        ),
        (
            state_farm(),
            Some("John"),
            Some("Smith"),
            Some("john.smith@example.com"),
            Some("+14045550101"),
            v1::ConnectionStatus::Active
        )
    );

    // `user-auto-state-minimum`: one inactive policy, state-minimum liability only.
    let linked = axle
        .link(
            "user-2",
            "user-auto-state-minimum",
            "pass-auto-state-minimum",
        )
        .await;
    let id = &linked.policy_ids[0];
    let v = property_ids(&axle, id);
    let (eff, exp) = term(linked.linked_at, 400, 6);
    let minimum = get_policy(client, &linked.link_id, id, v1::PolicyTerm::Current).await;
    assert_eq!(
        minimum.policy.unwrap(),
        v1::Policy {
            external_id: id.clone(),
            policy_type: v1::PolicyType::Auto as i32,
            other_policy_type: None,
            carrier: state_farm(),
            policy_number: Some("AUTO-200-3001".into()),
            status: v1::PolicyStatus::Inactive as i32,
            effective_date: timestamp(eff),
            expiration_date: timestamp(exp),
            cancelled_date: None,
            premium_cents: Some(48_000),
            address: address("77 Low Rd.", None, "Macon", "Georgia", "31201", "USA"),
            vehicles: vec![vehicle(
                &v[0],
                2012,
                "NISSAN",
                "ALTIMA",
                "1N4AL2AP0CN000004",
                "Sedan"
            )],
            dwellings: vec![],
            coverages: vec![
                coverage(
                    C::BodilyInjury,
                    "BI",
                    "Bodily Injury",
                    dollars(25_000),
                    dollars(50_000),
                    None,
                    None
                ),
                coverage(
                    C::PropertyDamage,
                    "PD",
                    "Property Damage",
                    None,
                    dollars(25_000),
                    None,
                    None
                ),
            ],
            insureds: vec![insured(
                "Alex",
                "Minimum",
                v1::InsuredRole::Primary,
                Some("•••••4321")
            )],
            interested_parties: vec![],
            documents: vec![],
        }
    );

    // `user-home`: the dwelling and the lender's interest.
    let linked = axle.link("user-3", "user-home", "pass-home").await;
    let id = &linked.policy_ids[0];
    let d = property_ids(&axle, id);
    let (eff, exp) = term(linked.linked_at, 120, 12);
    let home = get_policy(client, &linked.link_id, id, v1::PolicyTerm::Current).await;
    assert_eq!(
        home.policy.unwrap(),
        v1::Policy {
            external_id: id.clone(),
            policy_type: v1::PolicyType::Homeowners as i32,
            other_policy_type: None,
            carrier: state_farm(),
            policy_number: Some("HOME-300-4001".into()),
            status: v1::PolicyStatus::Active as i32,
            effective_date: timestamp(eff),
            expiration_date: timestamp(exp),
            cancelled_date: None,
            premium_cents: Some(185_000),
            address: address("500 Oak Ave.", None, "Decatur", "Georgia", "30030", "USA"),
            vehicles: vec![],
            dwellings: vec![v1::Dwelling {
                id: d[0].clone(),
                address: Some(v1::Address {
                    country: None,
                    ..address("500 Oak Ave.", None, "Decatur", "Georgia", "30030", "USA").unwrap()
                }),
                replacement_cost_cents: None,
            }],
            coverages: vec![
                coverage(
                    C::Other,
                    "DWELL",
                    "Dwelling",
                    None,
                    dollars(350_000),
                    dollars(1_000),
                    None
                ),
                coverage(
                    C::Other,
                    "OS",
                    "Other Structures",
                    None,
                    dollars(35_000),
                    None,
                    None
                ),
                coverage(
                    C::Other,
                    "PP",
                    "Personal Property",
                    None,
                    dollars(175_000),
                    None,
                    None
                ),
                coverage(
                    C::Other,
                    "LOU",
                    "Loss of Use",
                    None,
                    dollars(70_000),
                    None,
                    None
                ),
                coverage(
                    C::Other,
                    "PL",
                    "Personal Liability",
                    None,
                    dollars(300_000),
                    None,
                    None
                ),
                coverage(
                    C::Other,
                    "MED",
                    "Medical Payments",
                    dollars(5_000),
                    None,
                    None,
                    None
                ),
            ],
            insureds: vec![insured("Harper", "Holmes", v1::InsuredRole::Primary, None)],
            // Axle's Coverage object lists `code` as "Available options: BI PD UMBI UMPD UIMBI
            // UIMPD UUIMBI UUIMPD COLL COMP" (docs.axle.insure/api-reference/_snippets/coverage),
            // so each home code stays Axle's own (COVERAGE_CODE_OTHER). Axle types the lender
            // `interest`, its default when the data source did not classify the party
            // (changelog, 2023-05-24): unclassified, neither a mortgagee nor "no mortgagee".
            interested_parties: vec![v1::InterestedParty {
                kind: v1::PartyKind::Unclassified as i32,
                name: Some("Sandbox Home Lending".into()),
                address: address("900 Mortgage Blvd", None, "Dallas", "TX", "75201", "USA"),
                loan_number: None,
                property_id: None,
            }],
            documents: declaration(eff),
        }
    );
    axle.stop().await;
}

#[tokio::test]
async fn streams_see_an_axle_link_from_session_to_monitoring() {
    let axle = Axle::start().await;
    let mut stream = axle
        .client
        .clone()
        .watch_events(v1::WatchEventsRequest {
            after_cursor: 0,
            consumer: None,
            filter: Some(v1::EventFilter {
                kinds: vec![
                    K::LinkSessionOpened as i32,
                    K::LinkCompleted as i32,
                    K::PolicyUpdated as i32,
                ],
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let linked = axle.link("user-1", "user-home", "pass-home").await;
    axle.sim()
        .modify_policy(&linked.policy_ids[0], &json!({"premium": 1900.0}))
        .unwrap();
    let seen = coverwatch_tests::take_events(&mut stream, 3, DEADLINE).await;
    assert_eq!(
        kinds(&seen),
        [K::LinkSessionOpened, K::LinkCompleted, K::PolicyUpdated]
    );
    assert!(seen.iter().all(|e| e.link_id == linked.link_id));
    assert!(seen.iter().all(|e| e.provider() == v1::Provider::Axle));
    axle.stop().await;
}

/// GetPolicy reads the policy in one query and the link only when no policy matched: a missing
/// link, another tenant's link and a missing policy must still be told apart, and another
/// tenant must learn nothing about the link.
#[tokio::test]
async fn get_policy_tells_a_missing_link_from_a_missing_policy_and_hides_other_tenants() {
    let axle = Axle::start().await;
    let linked = axle.link("user-1", "username", "password").await;
    let policy = &linked.policy_ids[0];
    let ask = |client: Client, link: String, policy: String| async move {
        client
            .clone()
            .get_policy(v1::GetPolicyRequest {
                link_id: link,
                policy_id: policy,
                term: v1::PolicyTerm::Current as i32,
            })
            .await
    };
    let found = ask(axle.client.clone(), linked.link_id.clone(), policy.clone())
        .await
        .expect("GetPolicy of the caller's own policy");
    assert_eq!(
        found.into_inner().policy.expect("a policy").external_id,
        *policy
    );

    let missing_policy = ask(
        axle.client.clone(),
        linked.link_id.clone(),
        "no-such".into(),
    )
    .await
    .unwrap_err();
    assert_eq!(missing_policy.code(), Code::NotFound);
    assert!(
        missing_policy.message().contains("no-such"),
        "{missing_policy:?}"
    );

    let other_tenant = axle.server.client(coverwatch_tests::TENANT_B).await;
    let hidden = ask(other_tenant, linked.link_id.clone(), policy.clone())
        .await
        .unwrap_err();
    assert_eq!(hidden.code(), Code::NotFound);
    assert!(hidden.message().contains(&linked.link_id), "{hidden:?}");
    assert!(!hidden.message().contains(policy.as_str()), "{hidden:?}");
    axle.stop().await;
}
