//! PostgreSQL stopped and started in the middle of a burst of signed webhooks, duplicates mixed
//! in, sent by a client that behaves like the vendor (every refusal is retried later). While the
//! database is down, webhooks are answered `503` (never `200`), `/readyz` is `503` and gRPC
//! health says NOT_SERVING; when it is back, coverwatch recovers by itself: ready and serving
//! again, every acknowledged delivery produced exactly one event, and a `WatchEvents` stream
//! opened before the outage received every event exactly once, in cursor order.
//!
//! A test binary of its own: stopping the cluster would break every other test running in the
//! same process, and cargo runs test binaries one after another. Only meaningful on PostgreSQL.

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{
    Running, all_events, authed, burst_body, burst_counts, client, post_signed, serve_canopy,
    server_log, session_meta, vendor_event_body, workdir,
};
use coverwatch_proto::v1;
use coverwatch_sandbox::{CanopySimConfig, Sandbox, SandboxConfig};
use coverwatch_store::testing::{TEST_DATABASE_URL_VAR, fresh_database_url};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const DISTINCT: usize = 2_000;
const DUPLICATES: usize = 400;
/// Deliveries acknowledged before the database is stopped: the burst is well under way.
const STOP_AFTER_ACKS: usize = 500;
/// Requests the vendor has in flight at once.
const IN_FLIGHT: usize = 32;
/// How long the vendor keeps retrying one delivery before giving up on it.
const VENDOR_PATIENCE: Duration = Duration::from_secs(120);
const HEALTH_SERVICE: &str = "coverwatch.v1.MonitoringService";

// ---- the PostgreSQL cluster ----

/// The local cluster the test database lives on. Dropping it starts the cluster again if the
/// test stopped it, whatever happened in between, so nothing after this test finds the
/// machine's database down.
struct Cluster {
    version: String,
    database_url: String,
    stopped: bool,
}

impl Cluster {
    fn local(database_url: &str) -> Self {
        let versions: Vec<String> = std::fs::read_dir("/etc/postgresql")
            .expect("PostgreSQL clusters are configured under /etc/postgresql")
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            versions.len(),
            1,
            "exactly one PostgreSQL version in /etc/postgresql, found {versions:?}"
        );
        let cluster = Self {
            version: versions[0].clone(),
            // libpq's tools refuse sqlx's own URL parameters (statement-cache-capacity).
            database_url: database_url.split('?').next().unwrap().to_owned(),
            stopped: false,
        };
        assert!(
            cluster.accepting(),
            "pg_isready finds the test database at {}",
            cluster.database_url
        );
        cluster
    }

    fn pg_ctlcluster(&self, action: &str) -> Result<(), String> {
        let mut cmd = Command::new("pg_ctlcluster");
        cmd.args(["--skip-systemctl-redirect", &self.version, "main", action]);
        if action == "stop" {
            cmd.args(["-m", "fast"]);
        }
        let out = cmd.output().map_err(|e| format!("pg_ctlcluster: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "pg_ctlcluster {action}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    fn accepting(&self) -> bool {
        Command::new("pg_isready")
            .args(["-q", "-d", &self.database_url])
            .status()
            .is_ok_and(|s| s.success())
    }

    fn start_and_wait(&mut self) -> Result<(), String> {
        self.pg_ctlcluster("start")?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.accepting() {
            if Instant::now() > deadline {
                return Err("PostgreSQL started but accepts no connections after 60 s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.stopped = false;
        Ok(())
    }

    /// Blocks the calling worker thread, so other tasks (the vendor, the stream) keep running.
    fn stop(&mut self) {
        self.stopped = true;
        tokio::task::block_in_place(|| self.pg_ctlcluster("stop")).unwrap();
        assert!(!self.accepting(), "PostgreSQL still accepts after stop");
    }

    fn start(&mut self) {
        tokio::task::block_in_place(|| self.start_and_wait()).unwrap();
    }

    /// Runs a query returning one count on the test database.
    fn count(&self, sql: &str) -> usize {
        let out = Command::new("psql")
            .args(["-Atq", "-d", &self.database_url, "-c", sql])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    }

    /// Terminates the server's connections that are running a statement; returns how many.
    fn cut_busy_connections(&self) -> usize {
        self.count(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid() \
             AND state <> 'idle') cut",
        )
    }

    /// How many connections to the test database are listening for event notifications.
    fn listeners(&self) -> usize {
        self.count(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND query LIKE 'LISTEN %'",
        )
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.stopped
            && let Err(e) = self.start_and_wait()
        {
            // Not a panic: this may run while a failed assertion unwinds.
            eprintln!("could not start PostgreSQL again: {e}");
        }
    }
}

/// Kills the server when the test ends, also when it fails.
struct Server(Running);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.child.kill();
        let _ = self.0.child.wait();
    }
}

// ---- the vendor ----

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Status(u16),
    /// No HTTP answer at all (connection refused or reset).
    NoAnswer,
}

#[derive(Debug, Clone, Copy)]
struct Attempt {
    started: Instant,
    ended: Instant,
    answer: Answer,
}

/// Sends like Canopy: up to [`IN_FLIGHT`] requests at once, every answer recorded, anything but
/// `200` retried later (first after 200 ms, then doubling up to 2 s) until acknowledged.
struct Vendor {
    http: reqwest::Client,
    url: String,
    slots: tokio::sync::Semaphore,
    attempts: Mutex<Vec<Attempt>>,
    acknowledged: AtomicUsize,
}

impl Vendor {
    /// `true` once acknowledged; `false` if it was still refused after [`VENDOR_PATIENCE`].
    async fn deliver(&self, body: Vec<u8>) -> bool {
        let give_up = Instant::now() + VENDOR_PATIENCE;
        let mut delay = Duration::from_millis(200);
        loop {
            let slot = self.slots.acquire().await.unwrap();
            let started = Instant::now();
            let answer = match post_signed(&self.http, &self.url, &body).await {
                Ok(status) => Answer::Status(status.as_u16()),
                Err(_) => Answer::NoAnswer,
            };
            drop(slot);
            self.attempts.lock().unwrap().push(Attempt {
                started,
                ended: Instant::now(),
                answer,
            });
            if answer == Answer::Status(200) {
                self.acknowledged.fetch_add(1, Ordering::SeqCst);
                return true;
            }
            if Instant::now() > give_up {
                return false;
            }
            // The vendor's retry schedule, not a wait for some condition.
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }

    fn attempts(&self) -> Vec<Attempt> {
        self.attempts.lock().unwrap().clone()
    }
}

// ---- polling ----

/// Evaluates `$check` (an `Option`, may `.await`) until it is `Some`, failing the test with
/// `$what` once `$deadline` has passed.
macro_rules! eventually {
    ($what:expr, $deadline:expr, $check:expr) => {{
        let deadline: Duration = $deadline;
        let until = Instant::now() + deadline;
        loop {
            if let Some(value) = $check {
                break value;
            }
            assert!(Instant::now() < until, "not within {deadline:?}: {}", $what);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }};
}

async fn readyz(http: &reqwest::Client, base: &str) -> Option<u16> {
    let answer = http
        .get(format!("{base}/readyz"))
        .timeout(Duration::from_secs(15))
        .send()
        .await;
    answer.ok().map(|r| r.status().as_u16())
}

async fn health(grpc: &str) -> Option<ServingStatus> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))
        .unwrap()
        .connect()
        .await
        .ok()?;
    let reply = HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: HEALTH_SERVICE.into(),
        })
        .await
        .ok()?;
    Some(reply.into_inner().status())
}

// ---- the stream ----

#[derive(Default)]
struct Watched {
    events: Vec<v1::Event>,
    /// How each stream ended (the client then resumed from its last cursor).
    ended: Vec<String>,
}

/// Follows the tenant's events from the beginning. Should the server end the stream, resumes
/// from the last cursor received, as a client must; the test then asserts it never had to.
async fn watch(grpc: String, watched: Arc<Mutex<Watched>>) {
    let mut client = client(&grpc).await;
    let mut after = 0;
    loop {
        let opened = client
            .watch_events(authed(v1::WatchEventsRequest {
                after_cursor: after,
                ..Default::default()
            }))
            .await;
        match opened {
            Ok(stream) => {
                let mut stream = stream.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(event)) => {
                            after = event.cursor;
                            watched.lock().unwrap().events.push(event);
                        }
                        Ok(None) => {
                            watched.lock().unwrap().ended.push("end of stream".into());
                            break;
                        }
                        Err(status) => {
                            watched.lock().unwrap().ended.push(status.to_string());
                            break;
                        }
                    }
                }
            }
            Err(status) => watched.lock().unwrap().ended.push(status.to_string()),
        }
        // A client's pause before resuming, not a wait for some condition.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_stopped_mid_burst_refuses_then_recovers_losing_nothing() {
    let database_server = std::env::var(TEST_DATABASE_URL_VAR).unwrap_or_default();
    if database_server.trim().is_empty() {
        eprintln!(
            "SKIPPED: this test stops and starts the PostgreSQL cluster; set {TEST_DATABASE_URL_VAR} to run it"
        );
        return;
    }
    let began = Instant::now();
    let sandbox = Sandbox::start(SandboxConfig::for_tests()).await.unwrap();
    let canopy = CanopySimConfig::default();
    let api = sandbox.canopy_base_url();
    let widgets = format!("{}/canopy", sandbox.base_url());
    let dir = workdir();
    let database_url = fresh_database_url().await;
    let mut cluster = Cluster::local(&database_url);
    // A lease far longer than the test: deliveries the outage leaves leased must be given back
    // when the database returns, not waited out.
    let server = Server(serve_canopy(
        &dir,
        &database_url,
        &canopy,
        &api,
        &widgets,
        &[("COVERWATCH_WORKER__LEASE_SECONDS", "300")],
    ));
    let log = server_log(server.0.child.id());
    let (grpc, base) = (server.0.grpc.clone(), server.0.http.clone());
    let http = reqwest::Client::new();

    let started = client(&grpc)
        .await
        .start_link(authed(v1::StartLinkRequest {
            provider: v1::Provider::Canopy as i32,
            user_id: "outage-user".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    // What the vendor's deliveries carry to name the link: the session's meta data.
    let link = session_meta(&started.session_url);
    let watched = Arc::new(Mutex::new(Watched::default()));
    let watcher = tokio::spawn(watch(grpc.clone(), watched.clone()));

    assert_eq!(readyz(&http, &base).await, Some(200), "ready before");
    assert_eq!(health(&grpc).await, Some(ServingStatus::Serving));
    eventually!(
        "the event listener is listening",
        Duration::from_secs(20),
        (cluster.listeners() > 0).then_some(())
    );

    // 2,000 distinct deliveries and 400 copies of earlier ones, shuffled.
    let mut order: Vec<usize> = (0..DISTINCT).collect();
    order.extend((0..DUPLICATES).map(|i| (i * 7919) % DISTINCT));
    order.sort_by_key(|n| (n * 104_729) % (DISTINCT + DUPLICATES));
    let vendor = Arc::new(Vendor {
        http: http.clone(),
        url: format!("{base}/webhooks/canopy"),
        slots: tokio::sync::Semaphore::new(IN_FLIGHT),
        attempts: Mutex::new(Vec::new()),
        acknowledged: AtomicUsize::new(0),
    });
    let burst: Vec<_> = order
        .iter()
        .map(|&n| {
            let (vendor, body) = (vendor.clone(), burst_body(&link, n));
            tokio::spawn(async move { (n, vendor.deliver(body).await) })
        })
        .collect();

    eventually!(
        "the burst is under way",
        Duration::from_secs(60),
        (vendor.acknowledged.load(Ordering::SeqCst) >= STOP_AFTER_ACKS).then_some(())
    );

    // ---- the outage ----
    let stopping = Instant::now();
    cluster.stop();
    let down = Instant::now();
    let acknowledged_at_stop = vendor.acknowledged.load(Ordering::SeqCst);

    // The four checks run side by side: each may take a pool's acquire timeout to answer.
    let mut probes = 0;
    let refuses_webhooks = async {
        eventually!("a new delivery is answered 503", Duration::from_secs(30), {
            probes += 1;
            let body = vendor_event_body(&link, &format!("PROBE_{probes:03}"));
            match post_signed(&http, &vendor.url, &body).await {
                Ok(status) if status == 200 => {
                    panic!("a delivery was acknowledged while the database was down")
                }
                Ok(status) if status == 503 => Some(down.elapsed()),
                _ => None,
            }
        })
    };
    let not_ready = async {
        eventually!(
            "/readyz answers 503",
            Duration::from_secs(30),
            (readyz(&http, &base).await == Some(503)).then(|| down.elapsed())
        )
    };
    let not_serving = async {
        eventually!(
            "gRPC health says NOT_SERVING",
            Duration::from_secs(30),
            (health(&grpc).await == Some(ServingStatus::NotServing)).then(|| down.elapsed())
        )
    };
    let vendor_refused = async {
        eventually!(
            "the vendor's own deliveries are answered 503",
            Duration::from_secs(30),
            vendor
                .attempts()
                .iter()
                .any(|a| a.started >= down && a.answer == Answer::Status(503))
                .then(|| down.elapsed())
        )
    };
    let (refuses_webhooks, not_ready, not_serving, vendor_refused) =
        tokio::join!(refuses_webhooks, not_ready, not_serving, vendor_refused);

    let starting = Instant::now();
    cluster.start();
    let accepting = Instant::now();
    let ready = eventually!(
        "/readyz answers 200 again",
        Duration::from_secs(30),
        (readyz(&http, &base).await == Some(200)).then(|| starting.elapsed())
    );
    let serving = eventually!(
        "gRPC health says SERVING again",
        Duration::from_secs(30),
        (health(&grpc).await == Some(ServingStatus::Serving)).then(|| starting.elapsed())
    );
    // Every backend is new after the restart: a listening one means the listener reconnected.
    let listening = eventually!(
        "the event listener listens again",
        Duration::from_secs(30),
        (cluster.listeners() > 0).then(|| starting.elapsed())
    );

    // A second, short outage while the worker is busy with the backlog: a restart quicker than
    // the pool's acquire timeout, so work the restart interrupted is settled on the new
    // connections. Nothing may be given up on because the database restarted.
    // How far the backlog got depends on the machine's speed; when it is already worked off,
    // the restart still must lose nothing, and the final checks below still hold it to that.
    let processed_before_blip = burst_counts(&all_events(&grpc).await).len();
    if processed_before_blip == DISTINCT {
        eprintln!("note: the backlog was worked off before the second restart");
    }
    let blipping = Instant::now();
    cluster.stop();
    cluster.start();
    let blip = blipping.elapsed();
    // Then connections cut under it, the way a failover or an operator's pg_terminate_backend
    // does: the statement in flight fails (57P01) while the database itself stays up, so a
    // delivery given up on would be recorded as dead at once.
    let mut cut = 0;
    for _ in 0..40 {
        cut += cluster.cut_busy_connections();
        // Lets the server get busy again between cuts; not a wait for some condition.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if cut == 0 {
        eprintln!("note: no statement was in flight while connections were cut");
    }

    // ---- afterwards: the vendor's retries, then processing ----
    let mut acknowledged = std::collections::BTreeSet::new();
    for delivery in burst {
        let (n, ok) = delivery.await.unwrap();
        assert!(ok, "delivery {n} was acknowledged in the end");
        acknowledged.insert(n);
    }
    let all_acknowledged = starting.elapsed();
    assert_eq!(acknowledged.len(), DISTINCT);

    let events = eventually!(
        format!(
            "every distinct delivery produced its event (log: {})",
            log.display()
        ),
        Duration::from_secs(60),
        {
            let events = all_events(&grpc).await;
            (burst_counts(&events).len() >= DISTINCT).then_some(events)
        }
    );
    let processed = starting.elapsed();
    let counts = burst_counts(&events);
    for n in &acknowledged {
        let key = format!("BURST_{n:05}");
        assert_eq!(
            counts.get(&key),
            Some(&1),
            "acknowledged delivery {key} produced exactly one event (log: {})",
            log.display()
        );
    }
    assert_eq!(
        counts.len(),
        DISTINCT,
        "burst events come from the burst's deliveries only"
    );

    // No 200 while the database was down: an answer that began after the stop completed and
    // ended before the start began cannot have been stored.
    let attempts = vendor.attempts();
    let during = |a: &&Attempt| a.started >= down && a.ended <= starting;
    assert!(
        !attempts
            .iter()
            .filter(during)
            .any(|a| a.answer == Answer::Status(200)),
        "a delivery was acknowledged while the database was down"
    );
    let refused_503 = attempts
        .iter()
        .filter(|a| a.answer == Answer::Status(503))
        .count();
    let no_answer = attempts
        .iter()
        .filter(|a| a.answer == Answer::NoAnswer)
        .count();
    let other: Vec<Answer> = attempts
        .iter()
        .map(|a| a.answer)
        .filter(|a| !matches!(a, Answer::Status(200 | 503) | Answer::NoAnswer))
        .collect();
    assert!(other.is_empty(), "only 200 or 503 answers, got {other:?}");

    // The stream opened before the outage saw every event exactly once, in cursor order,
    // without having to be resumed: the server keeps it open while the database is away.
    let last = events.last().unwrap().cursor;
    eventually!(
        "the stream caught up with the log",
        Duration::from_secs(30),
        watched
            .lock()
            .unwrap()
            .events
            .last()
            .is_some_and(|e| e.cursor >= last)
            .then_some(())
    );
    watcher.abort();
    let watched = std::mem::take(&mut *watched.lock().unwrap());
    assert!(
        watched.ended.is_empty(),
        "the stream stayed open through the outage, but ended: {:?}",
        watched.ended
    );
    let streamed: Vec<i64> = watched.events.iter().map(|e| e.cursor).collect();
    let listed: Vec<i64> = events.iter().map(|e| e.cursor).collect();
    assert_eq!(
        streamed, listed,
        "the stream carried exactly the stored events, once each, in cursor order"
    );
    assert!(streamed.windows(2).all(|w| w[0] < w[1]));

    eprintln!(
        "outage: stopped after {acknowledged_at_stop} acknowledgements; stop took {:?}, down for {:?}; \
         503 to a new delivery after {refuses_webhooks:?}, to the vendor after {vendor_refused:?}, \
         /readyz 503 after {not_ready:?}, NOT_SERVING after {not_serving:?}; \
         after the start ({:?} to accept): ready in {ready:?}, SERVING in {serving:?}, listening in {listening:?}; \
         restarted again in {blip:?} with {processed_before_blip} processed, then {cut} busy connections cut; \
         all acknowledged {all_acknowledged:?} and all processed {processed:?} after the first start; \
         vendor attempts {}: {refused_503} answered 503, {no_answer} without answer, {} probes; \
         {} events streamed; whole test {:?}",
        down - stopping,
        starting - down,
        accepting - starting,
        attempts.len(),
        probes,
        streamed.len(),
        began.elapsed(),
    );
    drop(server);
    sandbox.shutdown().await;
}
