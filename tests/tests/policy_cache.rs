//! `GetPolicy` answers from memory (`grpc.policy_cache_ms`), yet never older than what the
//! caller could already know: once a `policy.updated` event reached a caller's stream, a
//! `GetPolicy` right after shows the new version — on the replica that serves the stream exactly,
//! and on a replica with no stream open within the configured bound.

use std::sync::Arc;
use std::time::{Duration, Instant};

use coverwatch::Overrides;
use coverwatch_core::policy::PolicyStatus;
use coverwatch_engine::ProviderRegistry;
use coverwatch_tests::fake_provider::FakeProvider;
use coverwatch_tests::{Client, TENANT_A, TestServer, eventually, fast_worker, test_config, v1};

const DEADLINE: Duration = Duration::from_secs(20);

async fn replica(config: coverwatch::Config, fake: &FakeProvider) -> TestServer {
    TestServer::start_with(
        config,
        Overrides {
            providers: Some(ProviderRegistry::new().register(Arc::new(fake.clone()))),
            worker: Some(fast_worker()),
            ..Default::default()
        },
    )
    .await
}

async fn post(server: &TestServer, url: &str, body: serde_json::Value) {
    let status = server
        .http
        .post(url)
        .json(&body)
        .send()
        .await
        .expect("webhook POST")
        .status();
    assert_eq!(status, 200);
}

fn request(link: &str, account: &str) -> v1::GetPolicyRequest {
    v1::GetPolicyRequest {
        link_id: link.to_owned(),
        policy_id: format!("pol-{account}"),
        term: v1::PolicyTerm::Current as i32,
    }
}

async fn status(client: &mut Client, request: &v1::GetPolicyRequest) -> v1::PolicyStatus {
    client
        .get_policy(request.clone())
        .await
        .expect("GetPolicy")
        .into_inner()
        .policy
        .expect("a policy")
        .status()
}

/// A linked account with a stored policy; returns the link id and the `GetPolicy` request.
async fn linked(
    server: &TestServer,
    client: &mut Client,
    fake: &FakeProvider,
    account: &str,
) -> (String, v1::GetPolicyRequest) {
    let link = client
        .start_link(v1::StartLinkRequest {
            provider: v1::Provider::Axle as i32,
            user_id: format!("user-{account}"),
            ..Default::default()
        })
        .await
        .expect("StartLink")
        .into_inner()
        .link
        .expect("a link");
    post(
        server,
        &fake.webhook_url(&link.id),
        serde_json::json!({"id": format!("{account}-complete"), "type": "completed", "account": account}),
    )
    .await;
    let request = request(&link.id, account);
    eventually("the policy to be stored", DEADLINE, || {
        let (mut client, request) = (client.clone(), request.clone());
        async move { client.get_policy(request).await.ok() }
    })
    .await;
    (link.id, request)
}

async fn watch(client: &mut Client, link: &str) -> tonic::Streaming<v1::Event> {
    let after_cursor = client
        .list_events(v1::ListEventsRequest {
            after_cursor: 0,
            filter: None,
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("ListEvents")
        .into_inner()
        .events
        .last()
        .map_or(0, |e| e.cursor);
    client
        .watch_events(v1::WatchEventsRequest {
            after_cursor,
            filter: Some(v1::EventFilter {
                link_id: Some(link.to_owned()),
                ..Default::default()
            }),
            consumer: None,
        })
        .await
        .expect("WatchEvents")
        .into_inner()
}

/// The next `policy.updated` on the stream, and its new status.
async fn next_update(stream: &mut tonic::Streaming<v1::Event>) -> v1::PolicyStatus {
    let found = tokio::time::timeout(DEADLINE, async {
        loop {
            let event = stream
                .message()
                .await
                .expect("stream")
                .expect("stream open");
            if let Some(v1::event::Payload::PolicyUpdated(updated)) = event.payload {
                return updated.status();
            }
        }
    })
    .await;
    found.expect("a policy.updated event in time")
}

const ROUNDS: [(PolicyStatus, v1::PolicyStatus); 4] = [
    (PolicyStatus::Cancelled, v1::PolicyStatus::Cancelled),
    (PolicyStatus::Active, v1::PolicyStatus::Active),
    (PolicyStatus::Cancelled, v1::PolicyStatus::Cancelled),
    (PolicyStatus::Active, v1::PolicyStatus::Active),
];

#[tokio::test]
async fn get_policy_right_after_its_event_shows_the_new_version() {
    let mut config = test_config().await;
    // Far longer than the test: only invalidation, not expiry, can make the answer fresh.
    config.grpc.policy_cache_ms = 60_000;
    let fake = FakeProvider::default();
    let server = replica(config, &fake).await;
    let mut client = server.client(TENANT_A).await;
    let (link, request) = linked(&server, &mut client, &fake, "acc-cache").await;
    let mut stream = watch(&mut client, &link).await;
    for (round, (vendor, expected)) in ROUNDS.into_iter().enumerate() {
        // Served, and so cached, just before the change.
        assert_ne!(status(&mut client, &request).await, expected);
        fake.set_status("acc-cache", vendor);
        post(
            &server,
            &fake.webhook_url(&link),
            serde_json::json!({"id": format!("change-{round}"), "type": "changed"}),
        )
        .await;
        assert_eq!(next_update(&mut stream).await, expected);
        assert_eq!(
            status(&mut client, &request).await,
            expected,
            "round {round}: GetPolicy right after the event"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn another_replica_shows_the_change_at_once_with_a_stream_and_within_the_bound_without() {
    let mut config = test_config().await;
    if !config.database_url.starts_with("postgres") {
        eprintln!(
            "SKIPPED: replicas share PostgreSQL; set COVERWATCH_TEST_DATABASE_URL to run this"
        );
        return;
    }
    let bound = Duration::from_millis(400);
    config.grpc.policy_cache_ms = bound.as_millis() as u64;
    let fake = FakeProvider::default();
    let watched = replica(config.clone(), &fake).await;
    config.tenants = test_config().await.tenants;
    let other = replica(config, &fake).await;
    let mut on_watched = watched.client(TENANT_A).await;
    let mut on_other = other.client(TENANT_A).await;
    let (link, request) = linked(&watched, &mut on_watched, &fake, "acc-replicas").await;
    let mut stream = watch(&mut on_watched, &link).await;
    for (round, (vendor, expected)) in ROUNDS.into_iter().enumerate() {
        assert_ne!(status(&mut on_watched, &request).await, expected);
        assert_ne!(status(&mut on_other, &request).await, expected);
        fake.set_status("acc-replicas", vendor);
        // Whichever replica's worker takes the delivery, the stream's replica reads the event
        // before handing it on, and forgets the link's cached policy first.
        post(
            &other,
            &fake.webhook_url(&link),
            serde_json::json!({"id": format!("change-{round}"), "type": "changed"}),
        )
        .await;
        assert_eq!(next_update(&mut stream).await, expected);
        let seen = Instant::now();
        assert_eq!(
            status(&mut on_watched, &request).await,
            expected,
            "round {round}: the replica that served the event"
        );
        // The other replica holds no stream, so it may not have read the event yet; its
        // answer may be older only within the configured bound.
        loop {
            let answer = status(&mut on_other, &request).await;
            if answer == expected {
                break;
            }
            assert!(
                seen.elapsed() < bound + Duration::from_millis(250),
                "round {round}: the other replica still answered {answer:?} {:?} after the event",
                seen.elapsed()
            );
            tokio::task::yield_now().await;
        }
    }
    watched.stop().await;
    other.stop().await;
}
