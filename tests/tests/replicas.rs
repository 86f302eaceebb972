//! Two `coverwatch` replicas on one PostgreSQL: an event committed by one reaches a stream
//! held open on the other at once, through LISTEN/NOTIFY rather than the streams' poll.

use std::sync::Arc;
use std::time::Duration;

use coverwatch::Overrides;
use coverwatch_engine::ProviderRegistry;
use coverwatch_tests::fake_provider::FakeProvider;
use coverwatch_tests::{TENANT_A, TestServer, fast_worker, take_events, test_config, v1};

async fn replica(config: coverwatch::Config) -> (TestServer, FakeProvider) {
    let fake = FakeProvider::default();
    let server = TestServer::start_with(
        config,
        Overrides {
            providers: Some(ProviderRegistry::new().register(Arc::new(fake.clone()))),
            worker: Some(fast_worker()),
            // Far longer than the test waits: only a notification can deliver in time.
            plugins: None,
            stream_poll: Some(Duration::from_secs(120)),
            sweep: None,
        },
    )
    .await;
    (server, fake)
}

#[tokio::test]
async fn a_stream_on_one_replica_sees_events_committed_by_another() {
    let mut config = test_config().await;
    if !config.database_url.starts_with("postgres") {
        eprintln!(
            "SKIPPED: replicas share PostgreSQL; set COVERWATCH_TEST_DATABASE_URL to run this"
        );
        return;
    }
    let (one, _) = replica(config.clone()).await;
    config.tenants = test_config().await.tenants;
    let (two, _) = replica(config).await;

    let mut watcher = one.client(TENANT_A).await;
    let mut stream = watcher
        .watch_events(v1::WatchEventsRequest {
            after_cursor: 0,
            filter: None,
            consumer: None,
        })
        .await
        .unwrap()
        .into_inner();
    // The stream is idle on replica one when replica two commits.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), stream.message())
            .await
            .is_err()
    );

    let mut writer = two.client(TENANT_A).await;
    let mut started = Vec::new();
    for i in 0..5 {
        let link = writer
            .start_link(v1::StartLinkRequest {
                provider: v1::Provider::Axle as i32,
                user_id: format!("user-{i}"),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .link
            .unwrap();
        started.push(link.id);
    }
    let seen = take_events(&mut stream, 5, Duration::from_secs(10)).await;
    assert_eq!(
        seen.iter().map(|e| e.link_id.clone()).collect::<Vec<_>>(),
        started,
        "every event, once, in cursor order"
    );
    one.stop().await;
    two.stop().await;
}

/// Replica two answers a per-link webhook token from memory once it has seen it
/// (`webhooks.token_cache_ms`); a descope committed on replica one reaches it only when that
/// entry expires. Without a grace period a descoped link's URL must be refused at once on every
/// replica, so the cache's bound is clamped to the grace: here it is off, and replica two reads
/// the link again.
#[tokio::test]
async fn a_link_descoped_on_one_replica_is_refused_at_once_on_another_without_a_grace() {
    let mut config = test_config().await;
    if !config.database_url.starts_with("postgres") {
        eprintln!(
            "SKIPPED: replicas share PostgreSQL; set COVERWATCH_TEST_DATABASE_URL to run this"
        );
        return;
    }
    config.webhooks.descoped_token_grace_hours = 0;
    // Far longer than the test: only the clamp to the grace can make replica two read again.
    config.webhooks.token_cache_ms = 60_000;
    let (one, fake) = replica(config.clone()).await;
    config.tenants = test_config().await.tenants;
    let (two, _) = replica(config).await;

    let mut client = one.client(TENANT_A).await;
    let link = client
        .start_link(v1::StartLinkRequest {
            provider: v1::Provider::Axle as i32,
            user_id: "user-1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .link
        .unwrap();
    // The URL replica one gave the vendor, sent to replica two (as a load balancer would).
    let given = fake.webhook_url(&link.id);
    let (_, path) = given.split_once("/webhooks/").expect("a webhook URL");
    let on_two = two.http_url(&format!("/webhooks/{path}"));
    let post = |id: &'static str| {
        let (http, url) = (two.http.clone(), on_two.clone());
        async move {
            http.post(url)
                .json(&serde_json::json!({"id": id, "type": "bench.ping"}))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(post("before-descope").await, 200);
    assert_eq!(post("before-descope-again").await, 200);

    client
        .descope(v1::DescopeRequest {
            link_id: link.id.clone(),
        })
        .await
        .expect("Descope");
    assert_eq!(
        post("after-descope").await,
        401,
        "no grace: refused at once on the other replica too"
    );
}
