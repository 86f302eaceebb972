//! Webhook ingestion throughput and latency, with a baseline measured in the same run.
//!
//! `cargo bench -p coverwatch-tests --bench webhook_ingest` (set `COVERWATCH_TEST_DATABASE_URL`
//! for PostgreSQL; `BENCH_DELIVERIES` and `BENCH_CONCURRENCY` change the load).
//!
//! Three figures, each over the same deliveries and concurrency:
//! - baseline: the same POSTs to a bare HTTP handler that answers 200 without storing, i.e.
//!   what HTTP alone costs on this machine;
//! - acknowledged: POSTs to coverwatch's webhook listener, each answered only after it is
//!   durably stored in the inbox (the latency a vendor sees);
//! - processed: from the first POST until every delivery became an event a caller can read.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::post;
use coverwatch_engine::ProviderRegistry;
use coverwatch_tests::fake_provider::FakeProvider;
use coverwatch_tests::{TENANT_A, TestServer, test_config, v1};
use futures::StreamExt;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Run {
    label: &'static str,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Run {
    fn print(&mut self) {
        self.latencies.sort();
        let pick = |q: f64| {
            self.latencies
                [((self.latencies.len() as f64 * q) as usize).min(self.latencies.len() - 1)]
        };
        println!(
            "{:<14} {:>6} deliveries in {:>8.3} s  {:>9.0}/s   p50 {:>8.2} ms   p99 {:>8.2} ms   max {:>8.2} ms",
            self.label,
            self.latencies.len(),
            self.elapsed.as_secs_f64(),
            self.latencies.len() as f64 / self.elapsed.as_secs_f64(),
            pick(0.50).as_secs_f64() * 1e3,
            pick(0.99).as_secs_f64() * 1e3,
            pick(1.0).as_secs_f64() * 1e3,
        );
    }
}

async fn post_all(
    label: &'static str,
    http: &reqwest::Client,
    urls: Vec<(String, serde_json::Value)>,
    concurrency: usize,
) -> Run {
    let start = Instant::now();
    let latencies: Vec<Duration> = futures::stream::iter(urls)
        .map(|(url, body)| async move {
            let sent = Instant::now();
            let response = http.post(&url).json(&body).send().await.expect("POST");
            assert_eq!(
                response.status(),
                200,
                "{label}: {}",
                response.text().await.unwrap_or_default()
            );
            sent.elapsed()
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    Run {
        label,
        elapsed: start.elapsed(),
        latencies,
    }
}

fn resident_memory_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let deliveries = env_usize("BENCH_DELIVERIES", 2_000);
    let concurrency = env_usize("BENCH_CONCURRENCY", 32);
    let links = 50.min(deliveries);
    println!(
        "webhook ingestion: {deliveries} deliveries over {links} links, {concurrency} in flight, database {}",
        if std::env::var("COVERWATCH_TEST_DATABASE_URL").is_ok() {
            "PostgreSQL"
        } else {
            "SQLite"
        }
    );
    let http = reqwest::Client::new();

    // Baseline: HTTP alone.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let bare = Router::new().route("/webhooks/{provider}/{*path}", post(|| async { "ok" }));
    tokio::spawn(async move { axum::serve(listener, bare).await });
    let urls = (0..deliveries)
        .map(|i| {
            (
                format!("http://{addr}/webhooks/axle/token"),
                serde_json::json!({"id": format!("b{i}"), "type": "bench"}),
            )
        })
        .collect();
    post_all("baseline", &http, urls, concurrency).await.print();

    // coverwatch, with a provider double so that only coverwatch is measured.
    let fake = FakeProvider::default();
    let registry = ProviderRegistry::new().register(Arc::new(fake.clone()));
    let server = TestServer::start(test_config().await, Some(registry)).await;
    let mut client = server.client(TENANT_A).await;
    let mut link_urls = Vec::new();
    for i in 0..links {
        let link = client
            .start_link(v1::StartLinkRequest {
                provider: v1::Provider::Axle as i32,
                user_id: format!("bench-{i}"),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .link
            .unwrap();
        link_urls.push(fake.webhook_url(&link.id));
    }
    let before = client
        .list_events(v1::ListEventsRequest {
            after_cursor: 0,
            filter: None,
            page_size: 1000,
            consumer: None,
        })
        .await
        .unwrap()
        .into_inner()
        .next_cursor;
    // Unknown event types: each becomes one vendor.event, so every delivery is one event.
    let urls = (0..deliveries)
        .map(|i| {
            (
                link_urls[i % links].clone(),
                serde_json::json!({"id": format!("d{i}"), "type": "bench.ping"}),
            )
        })
        .collect();
    let start = Instant::now();
    let mut acked = post_all("acknowledged", &http, urls, concurrency).await;
    acked.print();

    let mut seen = 0usize;
    let mut cursor = before;
    let deadline = Instant::now() + Duration::from_secs(600);
    while seen < deliveries {
        assert!(
            Instant::now() < deadline,
            "only {seen} of {deliveries} processed in time"
        );
        let page = client
            .list_events(v1::ListEventsRequest {
                after_cursor: cursor,
                filter: None,
                page_size: 1000,
                consumer: None,
            })
            .await
            .unwrap()
            .into_inner();
        seen += page.events.len();
        cursor = page.next_cursor;
        if page.events.is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let processed = start.elapsed();
    println!(
        "{:<14} {:>6} deliveries in {:>8.3} s  {:>9.0}/s   (POST to readable event, end to end)",
        "processed",
        deliveries,
        processed.as_secs_f64(),
        deliveries as f64 / processed.as_secs_f64()
    );
    if let Some(rss) = resident_memory_mib() {
        println!(
            "{:<14} {rss:.1} MiB resident (server, sandbox-free, and this client in one process)",
            "memory"
        );
    }
    server.stop().await;
}
