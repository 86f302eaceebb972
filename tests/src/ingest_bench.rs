//! The ingest benchmark (`cargo bench -p coverwatch-tests --bench webhook_ingest`), kept in the
//! library so that a test runs it at a tiny size and it cannot rot.
//!
//! Webhook ingestion throughput and latency, with baselines measured in the same run.
//!
//! `cargo bench -p coverwatch-tests --bench webhook_ingest` (set `COVERWATCH_TEST_DATABASE_URL`
//! for PostgreSQL; `BENCH_DELIVERIES`, `BENCH_CALLS` and `BENCH_CONCURRENCY` change the load).
//!
//! Three figures, each over the same deliveries and concurrency:
//! - baseline: the same POSTs to a bare HTTP handler that answers 200 without storing, i.e.
//!   what HTTP alone costs on this machine;
//! - acknowledged: POSTs to coverwatch's webhook listener, each answered only after it is
//!   durably stored in the inbox (the latency a vendor sees);
//! - processed: from the first POST until every delivery became an event a caller can read;
//! - the yardstick: the same bodies as single-row `INSERT … ON CONFLICT DO NOTHING` into the same
//!   database server, same concurrency, same client library;
//! - webhook → `WatchEvents` latency at steady offered rates (`BENCH_RATES`, default `100,500`,
//!   for `BENCH_RATE_SECONDS`, default 3);
//! - the read path: `BENCH_CALLS` (default 20000) `GetPolicy` calls for a stored policy from
//!   `BENCH_CONCURRENCY` callers, each on its own tonic channel (its own HTTP/2 connection, as
//!   separate client processes would be), next to the same calls to a hello-world: a bare tonic
//!   server answering only `grpc.health.v1.Health/Check`; `BENCH_POLICY_CACHE_MS=0` measures
//!   `GetPolicy` with its cache off (every call a database read);
//!
//! and the ratios against the targets of issue 14.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::fake_provider::FakeProvider;
use crate::{TENANT_A, TestServer, test_config, v1};
use axum::Router;
use axum::routing::post;
use coverwatch_engine::ProviderRegistry;
use futures::StreamExt;

/// With `BENCH_MARKS` set, prints when a phase starts on the monotonic clock (Linux prints an
/// `Instant` as its `CLOCK_MONOTONIC` reading), so that a `perf record -k CLOCK_MONOTONIC` of the
/// run can be cut into phases with `perf report --time`.
fn mark(phase: &str) {
    if std::env::var_os("BENCH_MARKS").is_some() {
        eprintln!("mark {phase} {:?}", Instant::now());
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Every line the benchmark prints, also kept for the caller.
#[derive(Default)]
pub struct Report {
    pub lines: std::sync::Mutex<Vec<String>>,
}

impl Report {
    fn say(&self, line: String) {
        println!("{line}");
        self.lines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(line);
    }
}

macro_rules! say {
    ($report:expr, $($arg:tt)*) => { $report.say(format!($($arg)*)) };
}

/// The load: read from `BENCH_*` variables by [`Settings::from_env`].
#[derive(Debug, Clone)]
pub struct Settings {
    pub deliveries: usize,
    pub concurrency: usize,
    /// Unary calls of the read-path figures; more than deliveries, since a hello-world call
    /// takes tens of microseconds and a short run would time mostly its ramp-up.
    pub calls: usize,
    pub rates: Vec<u32>,
    pub rate_seconds: u32,
    /// `ingest.writers` of the server (`BENCH_INGEST_WRITERS`); its default when unset.
    pub ingest_writers: Option<usize>,
    /// `worker.batches_in_flight` of the server (`BENCH_BATCHES_IN_FLIGHT`); its default when
    /// unset.
    pub batches_in_flight: Option<usize>,
}

impl Settings {
    pub fn from_env() -> Self {
        Self {
            deliveries: env_usize("BENCH_DELIVERIES", 2_000),
            concurrency: env_usize("BENCH_CONCURRENCY", 32),
            calls: env_usize("BENCH_CALLS", 20_000),
            rates: std::env::var("BENCH_RATES")
                .unwrap_or_else(|_| "100,500".into())
                .split(',')
                .map(|r| {
                    r.trim()
                        .parse()
                        .expect("BENCH_RATES: comma-separated rates")
                })
                .collect(),
            rate_seconds: env_usize("BENCH_RATE_SECONDS", 3) as u32,
            ingest_writers: std::env::var("BENCH_INGEST_WRITERS")
                .ok()
                .map(|w| w.parse().expect("BENCH_INGEST_WRITERS: a number")),
            batches_in_flight: std::env::var("BENCH_BATCHES_IN_FLIGHT")
                .ok()
                .map(|b| b.parse().expect("BENCH_BATCHES_IN_FLIGHT: a number")),
        }
    }
}

struct Run {
    label: &'static str,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

/// `calls` unary calls from `callers` tasks, each with its own client (cloned per call, which
/// tonic makes cheap), each taking the next call once its previous one was answered.
async fn call_all<C, F, Fut>(label: &'static str, clients: Vec<C>, calls: usize, call: F) -> Run
where
    C: Clone + Send + 'static,
    F: Fn(C) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    use std::sync::atomic::{AtomicUsize, Ordering};
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let callers: Vec<_> = clients
        .into_iter()
        .map(|client| {
            let (next, call) = (next.clone(), call.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while next.fetch_add(1, Ordering::Relaxed) < calls {
                    let sent = Instant::now();
                    call(client.clone()).await;
                    latencies.push(sent.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(calls);
    for caller in callers {
        latencies.extend(caller.await.expect("caller"));
    }
    Run {
        label,
        elapsed: start.elapsed(),
        latencies,
    }
}

/// The hello-world of the read path: a bare tonic server with nothing but the health service
/// (whose overall status answers `SERVING`), on port 0, with the same TCP_NODELAY the service
/// sets, so that the difference is what coverwatch does per call.
async fn hello_world(concurrency: usize, calls: usize) -> Run {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_reporter, health) = tonic_health::server::health_reporter();
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health)
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            }),
    );
    let mut clients = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .expect("hello-world connects");
        clients.push(HealthClient::new(channel));
    }
    let run = call_all("hello-world", clients, calls, |mut client| async move {
        let answer = client
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .expect("Check")
            .into_inner();
        assert_eq!(answer.status(), ServingStatus::Serving);
    })
    .await;
    let _ = stop.send(());
    server
        .await
        .expect("hello-world")
        .expect("hello-world serves");
    run
}

/// A policy stored on `link`: the double's completion fetches one policy, `pol-{account}`.
async fn stored_policy(
    http: &reqwest::Client,
    client: &crate::Client,
    link: &str,
    webhook_url: &str,
) -> v1::GetPolicyRequest {
    let response = http
        .post(webhook_url)
        .json(
            &serde_json::json!({"id": "gp-complete", "type": "completed", "account": "acc-bench"}),
        )
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), 200);
    let request = v1::GetPolicyRequest {
        link_id: link.to_owned(),
        policy_id: "pol-acc-bench".into(),
        term: v1::PolicyTerm::Current as i32,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match client.clone().get_policy(request.clone()).await {
            Ok(_) => return request,
            Err(status) if status.code() == tonic::Code::NotFound => {
                assert!(
                    Instant::now() < deadline,
                    "the policy was not stored in time: {status:?}"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(status) => panic!("GetPolicy: {status:?}"),
        }
    }
}

impl Run {
    fn print(&mut self, report: &Report, unit: &str) {
        self.latencies.sort();
        let pick = |q: f64| {
            self.latencies
                [((self.latencies.len() as f64 * q) as usize).min(self.latencies.len() - 1)]
        };
        say!(
            report,
            "{:<14} {:>6} {unit:<10} in {:>8.3} s  {:>9.0}/s   p50 {:>8.2} ms   p99 {:>8.2} ms   max {:>8.2} ms",
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

/// The yardstick: what the same database takes in when each of the same bodies is one
/// single-row `INSERT … ON CONFLICT DO NOTHING`, autocommitted, at the same concurrency, through
/// the same client library (sqlx) the service uses; pgbench's simple-protocol figure is of the
/// same kind. Runs in a fresh database on the same server (or a fresh SQLite file).
async fn insert_baseline(deliveries: usize, concurrency: usize) -> Run {
    use coverwatch_store::testing;
    let url = testing::fresh_database_url().await;
    let body = serde_json::json!({"id": "d0", "type": "bench.ping"}).to_string();
    let start;
    let latencies: Vec<Duration>;
    if url.starts_with("postgres") {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(concurrency as u32)
            .connect(&url)
            .await
            .expect("connect");
        sqlx::query("CREATE TABLE bench_inbox (dedupe_key TEXT PRIMARY KEY, body TEXT NOT NULL)")
            .execute(&pool)
            .await
            .expect("create");
        start = Instant::now();
        latencies = futures::stream::iter(0..deliveries)
            .map(|i| {
                let (pool, body) = (pool.clone(), body.clone());
                async move {
                    let sent = Instant::now();
                    sqlx::query(
                        "INSERT INTO bench_inbox (dedupe_key, body) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                    )
                    .bind(format!("d{i}"))
                    .bind(body)
                    .execute(&pool)
                    .await
                    .expect("insert");
                    sent.elapsed()
                }
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;
        pool.close().await;
    } else {
        let options: sqlx::sqlite::SqliteConnectOptions = url.parse().expect("sqlite url");
        // SQLite has one writer: more connections only queue on its lock (with busy-wait
        // sleeps), which would understate what it takes in.
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(
                options
                    .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                    .busy_timeout(Duration::from_secs(30)),
            )
            .await
            .expect("connect");
        sqlx::query("CREATE TABLE bench_inbox (dedupe_key TEXT PRIMARY KEY, body TEXT NOT NULL)")
            .execute(&pool)
            .await
            .expect("create");
        start = Instant::now();
        latencies = futures::stream::iter(0..deliveries)
            .map(|i| {
                let (pool, body) = (pool.clone(), body.clone());
                async move {
                    let sent = Instant::now();
                    sqlx::query(
                        "INSERT INTO bench_inbox (dedupe_key, body) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                    )
                    .bind(format!("d{i}"))
                    .bind(body)
                    .execute(&pool)
                    .await
                    .expect("insert");
                    sent.elapsed()
                }
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;
        pool.close().await;
    }
    let elapsed = start.elapsed();
    testing::drop_database(&url).await;
    Run {
        label: "insert 1-row",
        elapsed,
        latencies,
    }
}

/// Webhook → `WatchEvents` latency at a steady offered rate: one POST every 1/rate s for
/// `seconds`, each to one of the links, timed from just before the POST until the stream
/// yields its event.
async fn watch_latency(
    http: &reqwest::Client,
    client: &crate::Client,
    link_urls: &[String],
    rate: u32,
    seconds: u32,
    after_cursor: i64,
) -> Vec<Duration> {
    use std::collections::HashMap;
    use std::sync::Mutex;
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let mut stream = client
        .clone()
        .watch_events(v1::WatchEventsRequest {
            after_cursor,
            filter: Some(v1::EventFilter {
                kinds: vec![v1::EventKind::VendorEvent as i32],
                ..Default::default()
            }),
            consumer: None,
        })
        .await
        .expect("watch")
        .into_inner();
    let total = (rate * seconds) as usize;
    let sender = {
        let (http, sent, urls) = (http.clone(), sent.clone(), link_urls.to_vec());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut posts = Vec::with_capacity(total);
            for i in 0..total {
                tick.tick().await;
                let kind = format!("lat-{rate}-{i}");
                let (http, url) = (http.clone(), urls[i % urls.len()].clone());
                sent.lock().unwrap().insert(kind.clone(), Instant::now());
                posts.push(tokio::spawn(async move {
                    let response = http
                        .post(url)
                        .json(&serde_json::json!({"id": kind, "type": kind}))
                        .send()
                        .await
                        .expect("POST");
                    assert_eq!(response.status(), 200);
                }));
            }
            for post in posts {
                post.await.expect("post");
            }
        })
    };
    let mut latencies = Vec::with_capacity(total);
    let deadline = Instant::now() + Duration::from_secs(u64::from(seconds) * 20 + 60);
    while latencies.len() < total {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = tokio::time::timeout(left, stream.message())
            .await
            .expect("events arrive in time")
            .expect("stream")
            .expect("stream open");
        if let Some(v1::event::Payload::VendorEvent(vendor)) = event.payload
            && let Some(at) = sent.lock().unwrap().remove(&vendor.vendor_type)
        {
            latencies.push(at.elapsed());
        }
    }
    sender.await.expect("sender");
    latencies.sort();
    latencies
}

fn resident_memory_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Runs the whole benchmark once; `report` receives every printed line.
pub async fn run(settings: &Settings, report: &Report) {
    let (deliveries, concurrency) = (settings.deliveries, settings.concurrency);
    let links = 50.min(deliveries);
    say!(
        report,
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
    post_all("baseline", &http, urls, concurrency)
        .await
        .print(report, "deliveries");
    let mut yardstick = insert_baseline(deliveries, concurrency).await;
    yardstick.print(report, "deliveries");

    // coverwatch, with a provider double so that only coverwatch is measured.
    let fake = FakeProvider::default();
    let registry = ProviderRegistry::new().register(Arc::new(fake.clone()));
    let mut config = test_config().await;
    if let Some(writers) = settings.ingest_writers {
        config.ingest.writers = writers;
    }
    if let Some(batches) = settings.batches_in_flight {
        config.worker.batches_in_flight = batches;
    }
    if let Ok(ms) = std::env::var("BENCH_POLICY_CACHE_MS") {
        config.grpc.policy_cache_ms = ms.parse().expect("BENCH_POLICY_CACHE_MS: milliseconds");
    }
    // The tests' quick retries and polls, with the configured (by default, the shipped)
    // processing concurrency.
    let worker = coverwatch_engine::WorkerConfig {
        batches_in_flight: config.worker.batches_in_flight,
        ..crate::fast_worker()
    };
    let server = TestServer::start_with(
        config,
        coverwatch::Overrides {
            providers: Some(registry),
            worker: Some(worker),
            plugins: None,
            stream_poll: None,
            sweep: None,
        },
    )
    .await;
    let mut client = server.client(TENANT_A).await;
    let mut link_urls = Vec::new();
    let mut link_ids = Vec::new();
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
        link_ids.push(link.id);
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
    mark("acknowledged");
    let start = Instant::now();
    let mut acked = post_all("acknowledged", &http, urls, concurrency).await;
    mark("processing");
    acked.print(report, "deliveries");

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
    mark("processed");
    say!(
        report,
        "{:<14} {:>6} deliveries in {:>8.3} s  {:>9.0}/s   (POST to readable event, end to end)",
        "processed",
        deliveries,
        processed.as_secs_f64(),
        deliveries as f64 / processed.as_secs_f64()
    );
    let insert_rate = deliveries as f64 / yardstick.elapsed.as_secs_f64();
    let acked_rate = deliveries as f64 / acked.elapsed.as_secs_f64();
    let processed_rate = deliveries as f64 / processed.as_secs_f64();

    let seconds = settings.rate_seconds;
    let mut p99_at_500 = None;
    for &rate in &settings.rates {
        let latencies = watch_latency(&http, &client, &link_urls, rate, seconds, cursor).await;
        let pick = |q: f64| {
            latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)]
                .as_secs_f64()
                * 1e3
        };
        say!(
            report,
            "{:<14} {:>6} deliveries at {rate}/s   webhook → WatchEvents   p50 {:>8.2} ms   p99 {:>8.2} ms   max {:>8.2} ms",
            "watch latency",
            latencies.len(),
            pick(0.5),
            pick(0.99),
            pick(1.0),
        );
        if rate == 500 {
            p99_at_500 = Some(pick(0.99));
        }
    }

    // The read path, after every delivery was processed so that the worker is idle.
    let request = stored_policy(&http, &client, &link_ids[0], &link_urls[0]).await;
    let mut hello = hello_world(concurrency, settings.calls).await;
    hello.print(report, "calls");
    let mut clients = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        clients.push(server.client(TENANT_A).await);
    }
    let mut reads = call_all("GetPolicy", clients, settings.calls, move |mut client| {
        let request = request.clone();
        async move {
            let answer = client.get_policy(request).await.expect("GetPolicy");
            assert!(answer.into_inner().policy.is_some(), "GetPolicy: no policy");
        }
    })
    .await;
    reads.print(report, "calls");
    let rate = |run: &Run| run.latencies.len() as f64 / run.elapsed.as_secs_f64();

    say!(report, "\nagainst the targets (same run, same machine):");
    say!(
        report,
        "  acknowledged / insert yardstick   {:>6.2}x   (target >= 1.0x)",
        acked_rate / insert_rate
    );
    say!(
        report,
        "  processed / insert yardstick      {:>6.2}x   (target >= 0.3x)",
        processed_rate / insert_rate
    );
    match p99_at_500 {
        Some(p99) => {
            say!(
                report,
                "  watch p99 at 500/s              {p99:>8.2} ms   (target <= 25 ms)"
            )
        }
        None => {
            say!(
                report,
                "  watch p99 at 500/s                 not measured (500 not in BENCH_RATES)"
            )
        }
    }
    say!(
        report,
        "  GetPolicy / hello-world           {:>6.2}x   (target >= 0.5x)",
        rate(&reads) / rate(&hello)
    );
    if let Some(rss) = resident_memory_mib() {
        say!(
            report,
            "{:<14} {rss:.1} MiB resident (server, sandbox-free, and this client in one process)",
            "memory"
        );
    }
    server.stop().await;
    // The server's database: a benchmark's main thread keeps its locals to the process's end,
    // when they are not dropped.
    coverwatch_store::testing::drop_databases_of_this_thread();
}
