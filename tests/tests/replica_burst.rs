//! Two replicas on one database under a burst of 2,000 deliveries (400 duplicates mixed in),
//! posted to both: the work is shared, nothing is processed twice, and a WatchEvents client on
//! each replica receives every event exactly once, in cursor order. Each replica works three
//! batches side by side (`worker.batches_in_flight`; PostgreSQL), so six batch transactions
//! race for the cursor-order lock at their commits.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use coverwatch::Overrides;
use coverwatch_engine::{ProviderRegistry, WorkerConfig};
use coverwatch_tests::fake_provider::FakeProvider;
use coverwatch_tests::{TENANT_A, TestServer, fast_worker, flows, test_config, v1};
use futures::StreamExt;

const DISTINCT: usize = 2_000;
const DUPLICATES: usize = 400;
const LINKS: usize = 20;

/// A replica whose vendor is `fake` (shared between replicas, so it sees every call).
async fn replica(config: coverwatch::Config, fake: &FakeProvider) -> TestServer {
    let providers = ProviderRegistry::new().register(Arc::new(fake.clone()));
    TestServer::start_with(
        config,
        Overrides {
            providers: Some(providers),
            worker: Some(WorkerConfig {
                batches_in_flight: 3,
                ..fast_worker()
            }),
            ..Default::default()
        },
    )
    .await
}

/// Read a stream until `n` burst events arrived; every one must be new and after the last.
async fn collect(mut stream: tonic::Streaming<v1::Event>, n: usize) -> Vec<String> {
    let mut seen = Vec::with_capacity(n);
    let mut last_cursor = 0;
    let result = tokio::time::timeout(Duration::from_secs(240), async {
        while seen.len() < n {
            let event = stream
                .message()
                .await
                .expect("stream")
                .expect("stream open");
            assert!(event.cursor > last_cursor, "cursor order");
            last_cursor = event.cursor;
            if let Some(v1::event::Payload::VendorEvent(vendor)) = event.payload {
                seen.push(vendor.vendor_type);
            }
        }
    })
    .await;
    assert!(
        result.is_ok(),
        "only {} of {n} events arrived in time",
        seen.len()
    );
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_share_a_burst_and_both_streams_see_every_event_once() {
    let config = test_config().await;
    let fake = FakeProvider::default();
    let one = replica(config.clone(), &fake).await;
    let two = replica(config, &fake).await;
    let client_one = one.client(TENANT_A).await;
    let client_two = two.client(TENANT_A).await;

    let mut urls = Vec::new();
    for i in 0..LINKS {
        let link = flows::start_link(
            &client_one,
            v1::Provider::Axle,
            &format!("user-{i}"),
            None,
            None,
        )
        .await
        .link
        .unwrap();
        urls.push(fake.webhook_url(&link.id));
    }
    let filter = Some(v1::EventFilter {
        kinds: vec![v1::EventKind::VendorEvent as i32],
        ..Default::default()
    });
    let watch = |client: coverwatch_tests::Client| {
        let filter = filter.clone();
        async move {
            client
                .clone()
                .watch_events(v1::WatchEventsRequest {
                    after_cursor: 0,
                    filter,
                    consumer: None,
                })
                .await
                .unwrap()
                .into_inner()
        }
    };
    let on_one = tokio::spawn(collect(watch(client_one.clone()).await, DISTINCT));
    let on_two = tokio::spawn(collect(watch(client_two.clone()).await, DISTINCT));

    // Each delivery goes to one replica or the other; its URL names its link.
    let mut order: Vec<usize> = (0..DISTINCT).collect();
    order.extend((0..DUPLICATES).map(|i| (i * 7919) % DISTINCT));
    let http = reqwest::Client::new();
    let hosts = [one.app.http_addr, two.app.http_addr];
    let statuses: Vec<u16> = futures::stream::iter(order.into_iter().enumerate())
        .map(|(i, n)| {
            let url = urls[n % LINKS].replacen(
                &format!("{}", one.app.http_addr),
                &format!("{}", hosts[i % 2]),
                1,
            );
            let http = http.clone();
            async move {
                http.post(url)
                    .json(
                        &serde_json::json!({"id": format!("d{n}"), "type": format!("ping-{n:05}")}),
                    )
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    assert!(statuses.iter().all(|&s| s == 200));

    let expected: BTreeSet<String> = (0..DISTINCT).map(|n| format!("ping-{n:05}")).collect();
    for (name, handle) in [("one", on_one), ("two", on_two)] {
        let seen = handle.await.unwrap();
        let unique: BTreeSet<String> = seen.iter().cloned().collect();
        assert_eq!(unique.len(), seen.len(), "replica {name}: no event twice");
        assert_eq!(unique, expected, "replica {name}: every event");
    }
    one.stop().await;
    two.stop().await;
}
