//! Many streams on one server under a burst: each sees every event once, in cursor order, while
//! the log is read once per committed range for all of them (not once per stream and event);
//! a stream whose reader stalls past its buffer falls back to the log and still misses nothing.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use coverwatch_engine::ProviderRegistry;
use coverwatch_tests::fake_provider::FakeProvider;
use coverwatch_tests::{TENANT_A, TestServer, flows, test_config, v1};
use futures::StreamExt;

/// More than a stream's buffer (1,024), so that the stalled stream must lag.
const DELIVERIES: usize = 1_400;
const STREAMS: usize = 12;
const LINKS: usize = 10;

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
async fn streams_share_one_reader_and_a_stalled_stream_catches_up_from_the_log() {
    let config = test_config().await;
    let fake = FakeProvider::default();
    let providers = ProviderRegistry::new().register(Arc::new(fake.clone()));
    let server = TestServer::start(config, Some(providers)).await;
    let client = server.client(TENANT_A).await;
    let mut urls = Vec::new();
    for i in 0..LINKS {
        let link = flows::start_link(&client, v1::Provider::Axle, &format!("u{i}"), None, None)
            .await
            .link
            .unwrap();
        urls.push(fake.webhook_url(&link.id));
    }
    let watch = || {
        let mut client = client.clone();
        async move {
            client
                .watch_events(v1::WatchEventsRequest {
                    after_cursor: 0,
                    filter: Some(v1::EventFilter {
                        kinds: vec![v1::EventKind::VendorEvent as i32],
                        ..Default::default()
                    }),
                    consumer: None,
                })
                .await
                .unwrap()
                .into_inner()
        }
    };
    let mut readers = Vec::new();
    for _ in 0..STREAMS {
        readers.push(tokio::spawn(collect(watch().await, DELIVERIES)));
    }
    // Opened now (on the engine, below any transport buffer), read only once the whole burst
    // is processed.
    let mut stalled = Box::pin(server.app.engine.watch_events(
        TENANT_A.0.parse().unwrap(),
        coverwatch_engine::EventQuery {
            after_cursor: 0,
            filter: coverwatch_store::EventFilter {
                kinds: vec![coverwatch_core::EventKind::Vendor],
                ..Default::default()
            },
        },
    ));
    // Polled once so that it registers with the fan-out before the burst.
    assert!(
        tokio::time::timeout(Duration::from_millis(200), stalled.next())
            .await
            .is_err(),
        "no vendor event yet"
    );
    let before = server.app.engine.stream_stats();

    let http = reqwest::Client::new();
    let statuses: Vec<u16> = futures::stream::iter(0..DELIVERIES)
        .map(|n| {
            let (http, url) = (http.clone(), urls[n % LINKS].clone());
            async move {
                http.post(url)
                    .json(&serde_json::json!({"id": format!("d{n}"), "type": format!("p-{n:05}")}))
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

    let expected: BTreeSet<String> = (0..DELIVERIES).map(|n| format!("p-{n:05}")).collect();
    for reader in readers {
        let seen = reader.await.unwrap();
        assert_eq!(seen.len(), DELIVERIES, "no event twice");
        assert_eq!(seen.into_iter().collect::<BTreeSet<_>>(), expected);
    }
    let live = server.app.engine.stream_stats();
    let mut seen = Vec::new();
    let mut last_cursor = 0;
    while seen.len() < DELIVERIES {
        let event = tokio::time::timeout(Duration::from_secs(60), stalled.next())
            .await
            .expect("stalled stream: next event in time")
            .expect("open")
            .expect("event");
        assert!(event.cursor > last_cursor, "stalled stream: cursor order");
        last_cursor = event.cursor;
        if let coverwatch_core::EventPayload::Vendor { vendor_type } = event.payload {
            seen.push(vendor_type);
        }
    }
    assert_eq!(seen.len(), DELIVERIES, "stalled stream: no event twice");
    assert_eq!(
        seen.into_iter().collect::<BTreeSet<_>>(),
        expected,
        "stalled stream: every event"
    );
    let after = server.app.engine.stream_stats();

    assert!(
        live.lagged > before.lagged,
        "the stalled stream overflowed its buffer: {before:?} → {live:?}"
    );
    // While the burst ran, the streams that kept up made (next to) no query of their own: the
    // events reached them from the one tail. A stream that a loaded machine leaves unscheduled
    // long enough may lag once and catch up by a page or two; one query per stream per commit,
    // as when each stream read the log itself, would be thousands.
    assert!(
        live.stream_reads - before.stream_reads <= 2 * STREAMS as u64,
        "streams read the log themselves during the burst: {before:?} → {live:?}"
    );
    assert!(
        live.tail_reads - before.tail_reads <= DELIVERIES as u64,
        "the tail reads at most once per commit: {before:?} → {live:?}"
    );
    // Catching up a stalled stream is a few pages, not a query per event.
    assert!(
        after.stream_reads - live.stream_reads <= (DELIVERIES / 500 + 4) as u64,
        "catch-up by pages: {live:?} → {after:?}"
    );
    server.stop().await;
}
