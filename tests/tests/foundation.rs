//! The foundation end to end: a webhook travels from the HTTP listener through the durable inbox
//! to a caller's gRPC event stream, on a real database, with a test-double provider.

use std::sync::Arc;
use std::time::Duration;

use coverwatch_core::policy::PolicyStatus;
use coverwatch_engine::ProviderRegistry;
use coverwatch_tests::fake_provider::FakeProvider;
use coverwatch_tests::flows::{self, kinds};
use coverwatch_tests::{
    Client, TENANT_A, TENANT_B, TestServer, eventually, take_events, test_config, v1,
};
use tonic::Code;

const DEADLINE: Duration = Duration::from_secs(15);

async fn server() -> (TestServer, FakeProvider) {
    let fake = FakeProvider::default();
    let registry = ProviderRegistry::new().register(Arc::new(fake.clone()));
    (
        TestServer::start(test_config().await, Some(registry)).await,
        fake,
    )
}

async fn start_link(client: &mut Client, user: &str) -> v1::Link {
    client
        .start_link(v1::StartLinkRequest {
            provider: v1::Provider::Axle as i32,
            user_id: user.into(),
            metadata: [("loan".to_owned(), "L-42".to_owned())].into(),
            redirect_uri: None,
            replace_link_id: None,
            requirement_set_id: None,
            provider_id: String::new(),
        })
        .await
        .expect("StartLink")
        .into_inner()
        .link
        .expect("a link")
}

async fn post(server: &TestServer, url: &str, body: serde_json::Value) -> reqwest::StatusCode {
    server
        .http
        .post(url)
        .json(&body)
        .send()
        .await
        .expect("webhook POST")
        .status()
}

async fn all_events(client: &mut Client, after: i64) -> Vec<v1::Event> {
    client
        .list_events(v1::ListEventsRequest {
            after_cursor: after,
            filter: None,
            page_size: 1000,
            consumer: None,
        })
        .await
        .expect("ListEvents")
        .into_inner()
        .events
}

#[tokio::test]
async fn a_webhook_reaches_watchers_and_the_event_log() {
    let (server, fake) = server().await;
    let mut client = server.client(TENANT_A).await;
    let mut stream = client
        .watch_events(v1::WatchEventsRequest {
            after_cursor: 0,
            filter: None,
            consumer: None,
        })
        .await
        .expect("WatchEvents")
        .into_inner();

    let link = start_link(&mut client, "user-1").await;
    assert_eq!(link.state(), v1::LinkState::Pending);
    assert!(link.id.starts_with("lnk_"));
    let opened = take_events(&mut stream, 1, DEADLINE).await;
    assert_eq!(opened[0].kind(), v1::EventKind::LinkSessionOpened);

    let status = post(
        &server,
        &fake.webhook_url(&link.id),
        serde_json::json!({"id": "evt-1", "type": "completed", "account": "acc-1"}),
    )
    .await;
    assert_eq!(status, 200);

    let completed = take_events(&mut stream, 1, DEADLINE).await;
    assert_eq!(completed[0].kind(), v1::EventKind::LinkCompleted);
    assert_eq!(completed[0].link_id, link.id);
    assert_eq!(completed[0].user_id, "user-1");
    assert!(completed[0].cursor > opened[0].cursor);

    let logged = all_events(&mut client, 0).await;
    assert_eq!(
        kinds(&logged),
        [
            v1::EventKind::LinkSessionOpened,
            v1::EventKind::LinkCompleted
        ]
    );
    assert_eq!(logged[1].id, completed[0].id);

    let link = client
        .get_link(v1::GetLinkRequest {
            link_id: link.id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .link
        .unwrap();
    assert_eq!(link.state(), v1::LinkState::Active);
    assert_eq!(link.metadata["loan"], "L-42");
    let policies = client
        .list_policies(v1::ListPoliciesRequest {
            link_id: link.id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .policies;
    assert_eq!(policies.len(), 1);
    assert_eq!(policies[0].premium_cents, Some(123_456));
    server.stop().await;
}

#[tokio::test]
async fn the_same_delivery_twice_yields_one_event() {
    let (server, fake) = server().await;
    let mut client = server.client(TENANT_A).await;
    let link = start_link(&mut client, "user-dup").await;
    let url = fake.webhook_url(&link.id);
    let body = serde_json::json!({"id": "evt-dup", "type": "completed", "account": "acc-dup"});
    assert_eq!(post(&server, &url, body.clone()).await, 200);
    assert_eq!(post(&server, &url, body.clone()).await, 200);

    eventually("the completion to be processed", DEADLINE, || async {
        let events = all_events(&mut client.clone(), 0).await;
        (events.len() >= 2).then_some(())
    })
    .await;
    // A later, different delivery proves the worker has moved past both copies.
    fake.set_status("acc-dup", PolicyStatus::Cancelled);
    assert_eq!(
        post(
            &server,
            &url,
            serde_json::json!({"id": "evt-later", "type": "changed"})
        )
        .await,
        200
    );
    let events = eventually("the later delivery to be processed", DEADLINE, || async {
        let events = all_events(&mut client.clone(), 0).await;
        events
            .iter()
            .any(|e| e.kind() == v1::EventKind::PolicyUpdated)
            .then_some(events)
    })
    .await;
    assert_eq!(
        post(&server, &url, body).await,
        200,
        "a late duplicate is still acknowledged"
    );
    assert_eq!(
        kinds(&events),
        [
            v1::EventKind::LinkSessionOpened,
            v1::EventKind::LinkCompleted,
            v1::EventKind::PolicyUpdated
        ]
    );
    let Some(v1::event::Payload::PolicyUpdated(updated)) = &events[2].payload else {
        panic!("policy.updated carries its payload: {:?}", events[2]);
    };
    assert_eq!(updated.status(), v1::PolicyStatus::Cancelled);
    assert_eq!(updated.changes[0].kind(), v1::ChangeKind::StatusChanged);
    server.stop().await;
}

/// The engine orders sign-in steps within the scope the provider names (issue 13): this double
/// is Axle-shaped, numbers its steps per session as Canopy numbers them per pull, and the
/// engine has no idea which vendor it is.
#[tokio::test]
async fn sign_in_steps_are_ordered_within_the_scope_the_provider_names() {
    let (server, fake) = server().await;
    let mut client = server.client(TENANT_A).await;
    let link = start_link(&mut client, "user-auth").await;
    let url = fake.webhook_url(&link.id);
    let auth = |id: &str, session: &str, sequence: i64, status: &str| {
        serde_json::json!({"id": id, "type": "auth", "session": session,
                           "sequence": sequence, "status": status})
    };
    let statuses = |events: &[v1::Event]| -> Vec<v1::AuthStatus> {
        events
            .iter()
            .filter_map(|e| match &e.payload {
                Some(v1::event::Payload::LinkAuthStatus(s)) => Some(s.status()),
                _ => None,
            })
            .collect()
    };
    let auth_events = |count: usize| {
        let client = client.clone();
        async move {
            eventually("the sign-in steps to be processed", DEADLINE, || async {
                let events = all_events(&mut client.clone(), 0).await;
                (statuses(&events).len() >= count).then_some(events)
            })
            .await
        }
    };
    assert_eq!(
        post(&server, &url, auth("a3", "s1", 3, "verify")).await,
        200
    );
    auth_events(1).await;
    // Overtaken within its session: ignored. The step after it proves it was processed.
    assert_eq!(
        post(&server, &url, auth("a2", "s1", 2, "opened")).await,
        200
    );
    assert_eq!(
        post(&server, &url, auth("a4", "s1", 4, "failed")).await,
        200
    );
    auth_events(2).await;
    // Another session numbers from 1 again, and counts.
    assert_eq!(
        post(&server, &url, auth("b1", "s2", 1, "success")).await,
        200
    );
    let events = auth_events(3).await;
    assert_eq!(
        statuses(&events),
        [
            v1::AuthStatus::IdentityVerification,
            v1::AuthStatus::NotAuthenticated,
            v1::AuthStatus::Success
        ]
    );
    server.stop().await;
}

#[tokio::test]
async fn a_tenant_sees_nothing_of_another() {
    let (server, fake) = server().await;
    let mut a = server.client(TENANT_A).await;
    let mut b = server.client(TENANT_B).await;
    let link = start_link(&mut a, "shared-user-id").await;
    assert_eq!(
        post(
            &server,
            &fake.webhook_url(&link.id),
            serde_json::json!({"id": "e1", "type": "completed"})
        )
        .await,
        200
    );
    eventually("the link to complete", DEADLINE, || async {
        (all_events(&mut a.clone(), 0).await.len() == 2).then_some(())
    })
    .await;

    assert!(all_events(&mut b, 0).await.is_empty());
    let listed = b
        .list_links(v1::ListLinksRequest {
            user_id: Some("shared-user-id".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(listed.links.is_empty());
    for code in [
        b.get_link(v1::GetLinkRequest {
            link_id: link.id.clone(),
        })
        .await
        .unwrap_err()
        .code(),
        b.descope(v1::DescopeRequest {
            link_id: link.id.clone(),
        })
        .await
        .unwrap_err()
        .code(),
        b.list_policies(v1::ListPoliciesRequest {
            link_id: link.id.clone(),
        })
        .await
        .unwrap_err()
        .code(),
        b.get_account(v1::GetAccountRequest {
            link_id: link.id.clone(),
        })
        .await
        .unwrap_err()
        .code(),
    ] {
        assert_eq!(code, Code::NotFound);
    }
    let mut stream = b
        .watch_events(v1::WatchEventsRequest {
            after_cursor: 0,
            filter: None,
            consumer: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        tokio::time::timeout(Duration::from_millis(300), stream.message())
            .await
            .is_err(),
        "tenant B's stream stays silent"
    );
    let a_link = a
        .get_link(v1::GetLinkRequest { link_id: link.id })
        .await
        .unwrap()
        .into_inner()
        .link
        .unwrap();
    assert_eq!(
        a_link.state(),
        v1::LinkState::Active,
        "B's descope attempt changed nothing"
    );
    server.stop().await;
}

#[tokio::test]
async fn bad_requests_name_the_field() {
    let (server, _fake) = server().await;
    let mut client = server.client(TENANT_A).await;
    let invalid = |status: tonic::Status, field: &str| {
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(
            status.message().starts_with(field),
            "`{}` should name `{field}`",
            status.message()
        );
    };

    invalid(
        client
            .get_link(v1::GetLinkRequest {
                link_id: "nope".into(),
            })
            .await
            .unwrap_err(),
        "link_id",
    );
    invalid(
        client
            .get_link(v1::GetLinkRequest {
                link_id: "evt_0123".into(),
            })
            .await
            .unwrap_err(),
        "link_id",
    );
    invalid(
        client
            .get_link(v1::GetLinkRequest {
                link_id: String::new(),
            })
            .await
            .unwrap_err(),
        "link_id",
    );
    let start = |provider: i32, user: &str| v1::StartLinkRequest {
        provider,
        user_id: user.into(),
        ..Default::default()
    };
    invalid(
        client.start_link(start(0, "u")).await.unwrap_err(),
        "provider",
    );
    invalid(
        client.start_link(start(99, "u")).await.unwrap_err(),
        "provider",
    );
    invalid(
        client
            .start_link(start(v1::Provider::Axle as i32, ""))
            .await
            .unwrap_err(),
        "user_id",
    );
    let mut with_bad_metadata = start(v1::Provider::Axle as i32, "u");
    with_bad_metadata
        .metadata
        .insert("has space".into(), "x".into());
    invalid(
        client.start_link(with_bad_metadata).await.unwrap_err(),
        "metadata",
    );
    let mut with_bad_redirect = start(v1::Provider::Axle as i32, "u");
    with_bad_redirect.redirect_uri = Some("javascript:alert(1)".into());
    invalid(
        client.start_link(with_bad_redirect).await.unwrap_err(),
        "redirect_uri",
    );
    invalid(
        client
            .list_events(v1::ListEventsRequest {
                consumer: None,
                after_cursor: 0,
                filter: Some(v1::EventFilter {
                    kinds: vec![v1::EventKind::LinkCompleted as i32, 4242],
                    ..Default::default()
                }),
                page_size: 10,
            })
            .await
            .unwrap_err(),
        "filter.kinds[1]",
    );
    invalid(
        client
            .list_events(v1::ListEventsRequest {
                after_cursor: -1,
                filter: None,
                page_size: 10,
                consumer: None,
            })
            .await
            .unwrap_err(),
        "after_cursor",
    );
    invalid(
        client
            .complete_link(v1::CompleteLinkRequest {
                link_id: format!("lnk_{}", "0".repeat(32)),
                auth_code: String::new(),
            })
            .await
            .unwrap_err(),
        "auth_code",
    );
    invalid(
        client
            .list_links(v1::ListLinksRequest {
                states: vec![77],
                ..Default::default()
            })
            .await
            .unwrap_err(),
        "states[0]",
    );

    let unknown = format!("lnk_{}", "0".repeat(32));
    let err = client
        .get_link(v1::GetLinkRequest {
            link_id: unknown.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains(&unknown), "{}", err.message());

    // Nothing of the refused requests was stored.
    assert!(all_events(&mut client, 0).await.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn callers_without_a_valid_key_are_refused() {
    let (server, _fake) = server().await;
    for key in [None, Some("wrong-key"), Some("")] {
        let mut client = server.client_with_key(key).await;
        let err = client
            .list_links(v1::ListLinksRequest::default())
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "key {key:?}: {err:?}");
    }
    server.stop().await;
}

#[tokio::test]
async fn unauthenticated_and_oversized_webhooks_store_nothing() {
    let (server, fake) = server().await;
    let mut client = server.client(TENANT_A).await;
    let link = start_link(&mut client, "user").await;
    let good = fake.webhook_url(&link.id);
    let base = good.rsplit_once('/').unwrap().0.to_owned();

    let body = serde_json::json!({"id": "x", "type": "completed"});
    assert_eq!(
        post(&server, &format!("{base}/not-the-token"), body.clone()).await,
        401
    );
    assert_eq!(
        post(&server, &base, body.clone()).await,
        401,
        "no token at all"
    );
    assert_eq!(
        post(
            &server,
            &server.http_url("/webhooks/nobody/x"),
            body.clone()
        )
        .await,
        404
    );
    let huge = server
        .http
        .post(&good)
        .body(vec![b' '; 2 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(huge.status(), 413);

    // A good delivery after the refused ones is the only one processed.
    assert_eq!(
        post(
            &server,
            &good,
            serde_json::json!({"id": "y", "type": "exited"})
        )
        .await,
        200
    );
    let events = eventually("the exit to be processed", DEADLINE, || async {
        let events = all_events(&mut client.clone(), 0).await;
        (events.len() >= 2).then_some(events)
    })
    .await;
    assert_eq!(
        kinds(&events),
        [v1::EventKind::LinkSessionOpened, v1::EventKind::LinkExited]
    );
    server.stop().await;
}

#[tokio::test]
async fn a_resumed_stream_misses_nothing_and_repeats_nothing() {
    let (server, fake) = server().await;
    let mut client = server.client(TENANT_A).await;
    let mut links = Vec::new();
    for i in 0..3 {
        links.push(start_link(&mut client, &format!("user-{i}")).await);
    }
    let mut first = client
        .watch_events(v1::WatchEventsRequest {
            after_cursor: 0,
            filter: None,
            consumer: None,
        })
        .await
        .unwrap()
        .into_inner();
    let seen = take_events(&mut first, 2, DEADLINE).await;
    drop(first);

    // Events committed while nobody watches.
    for (i, link) in links.iter().enumerate() {
        let body = serde_json::json!({"id": format!("c{i}"), "type": "completed", "account": format!("acc-{i}")});
        assert_eq!(post(&server, &fake.webhook_url(&link.id), body).await, 200);
    }
    let mut resumed = client
        .watch_events(v1::WatchEventsRequest {
            after_cursor: seen[1].cursor,
            filter: None,
            consumer: None,
        })
        .await
        .unwrap()
        .into_inner();
    let rest = take_events(&mut resumed, 4, DEADLINE).await;

    // And one more, live, on the resumed stream.
    let extra = start_link(&mut client, "user-late").await;
    let live = take_events(&mut resumed, 1, DEADLINE).await;
    assert_eq!(live[0].link_id, extra.id);

    let all: Vec<_> = seen.iter().chain(&rest).chain(&live).collect();
    let logged = all_events(&mut client, 0).await;
    assert_eq!(
        all.iter().map(|e| &e.id).collect::<Vec<_>>(),
        logged.iter().map(|e| &e.id).collect::<Vec<_>>(),
        "stream = log, in cursor order, no gap, no duplicate"
    );
    assert!(all.windows(2).all(|w| w[0].cursor < w[1].cursor));

    // A filtered stream sees only its link's events.
    let mut filtered = client
        .watch_events(v1::WatchEventsRequest {
            consumer: None,
            after_cursor: 0,
            filter: Some(v1::EventFilter {
                link_id: Some(links[1].id.clone()),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let only = take_events(&mut filtered, 2, DEADLINE).await;
    assert!(only.iter().all(|e| e.link_id == links[1].id));
    server.stop().await;
}

#[tokio::test]
async fn descope_is_idempotent_and_final() {
    let (server, fake) = server().await;
    let mut client = server.client(TENANT_A).await;
    let link = start_link(&mut client, "user").await;
    assert_eq!(
        post(
            &server,
            &fake.webhook_url(&link.id),
            serde_json::json!({"id": "c", "type": "completed"})
        )
        .await,
        200
    );
    flows::wait_for_state(&client, &link.id, v1::LinkState::Active).await;
    for _ in 0..2 {
        let descoped = client
            .descope(v1::DescopeRequest {
                link_id: link.id.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .link
            .unwrap();
        assert_eq!(descoped.state(), v1::LinkState::Descoped);
    }
    assert_eq!(
        fake.state.lock().unwrap().descoped,
        vec![link.id.clone()],
        "the vendor is told once"
    );
    let events = all_events(&mut client, 0).await;
    assert_eq!(
        events
            .iter()
            .filter(|e| e.kind() == v1::EventKind::LinkDescoped)
            .count(),
        1
    );
    let err = client
        .start_reconnect(v1::StartReconnectRequest {
            link_id: link.id.clone(),
            redirect_uri: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    server.stop().await;
}

#[tokio::test]
async fn a_failing_vendor_is_retried_until_it_recovers() {
    let (server, fake) = server().await;
    let mut client = server.client(TENANT_A).await;
    let link = start_link(&mut client, "user").await;
    fake.state.lock().unwrap().unavailable = true;
    assert_eq!(
        post(
            &server,
            &fake.webhook_url(&link.id),
            serde_json::json!({"id": "c", "type": "completed"})
        )
        .await,
        200
    );
    // The worker retries with backoff; the link stays pending meanwhile.
    let pending = client
        .get_link(v1::GetLinkRequest {
            link_id: link.id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .link
        .unwrap();
    assert_eq!(pending.state(), v1::LinkState::Pending);
    fake.state.lock().unwrap().unavailable = false;
    // The worker retries with backoff until the vendor answers.
    flows::wait_for_state(&client, &link.id, v1::LinkState::Active).await;
    let events = all_events(&mut client, 0).await;
    assert_eq!(
        events
            .iter()
            .filter(|e| e.kind() == v1::EventKind::LinkCompleted)
            .count(),
        1
    );
    server.stop().await;
}

#[tokio::test]
async fn health_and_reflection_are_served() {
    let (server, _fake) = server().await;
    let mut health = tonic_health_client(&server).await;
    for service in [
        "",
        "coverwatch.v1.MonitoringService",
        "coverwatch.v1.RequirementsService",
        "coverwatch.v1.AdminService",
    ] {
        let reply = health
            .check(tonic_health_request(service))
            .await
            .unwrap_or_else(|e| panic!("health of `{service}`: {e}"))
            .into_inner();
        assert_eq!(reply.status, 1, "`{service}` SERVING");
    }
    let ready = server
        .http
        .get(server.http_url("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    server.stop().await;
}

async fn tonic_health_client(
    server: &TestServer,
) -> coverwatch_tests::health::HealthClient<tonic::transport::Channel> {
    coverwatch_tests::health::HealthClient::new(server.channel().await)
}

fn tonic_health_request(service: &str) -> coverwatch_tests::health::HealthCheckRequest {
    coverwatch_tests::health::HealthCheckRequest {
        service: service.into(),
    }
}
