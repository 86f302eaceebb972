//! Running the `coverwatch` binary from tests: the environment, its start-up lines, signals.

#![allow(dead_code)] // each test file uses its own subset

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub const DEV_KEY: &str = "a-development-key-for-tests";

pub fn command(workdir: &std::path::Path, database_url: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_coverwatch"));
    cmd.current_dir(workdir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("COVERWATCH_DATABASE_URL", database_url)
        .env("COVERWATCH_GRPC_ADDR", "127.0.0.1:0")
        .env("COVERWATCH_HTTP_ADDR", "127.0.0.1:0")
        .env("COVERWATCH_SANDBOX_ADDR", "127.0.0.1:0")
        .env("COVERWATCH_DEV_API_KEY", DEV_KEY)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// A directory of the test's own, removed when the test's thread ends.
pub fn workdir() -> std::path::PathBuf {
    static MADE_SO_FAR: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = MADE_SO_FAR.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("cw-cli-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    remove_when_the_test_ends(dir.clone());
    dir
}

thread_local! {
    static MADE: std::cell::RefCell<Made> = const { std::cell::RefCell::new(Made(Vec::new())) };
}

/// Files and directories a test's thread made, removed with the thread's locals: after the
/// test, passed or failed (a failed test never reaches its own clean-up).
struct Made(Vec<std::path::PathBuf>);

impl Drop for Made {
    fn drop(&mut self) {
        for path in &self.0 {
            if path.is_dir() {
                let _ = std::fs::remove_dir_all(path);
            } else {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

fn remove_when_the_test_ends(path: std::path::PathBuf) {
    MADE.with(|made| made.borrow_mut().0.push(path));
}

/// Where the stdout (its log) of the child with this process id is kept.
pub fn server_log(pid: u32) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("coverwatch-test-{pid}.log"))
}

/// The stdout line that starts with `prefix`, waiting at most `deadline`. The child's stdout is
/// read to its end and copied to [`server_log`] (kept until the test ends), so that a test can
/// read what the server logged.
pub fn wait_for_line(child: &mut Child, prefix: &str, deadline: Duration) -> String {
    let stdout = child.stdout.take().expect("piped stdout");
    let log = std::fs::File::create(server_log(child.id())).ok();
    remove_when_the_test_ends(server_log(child.id()));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        use std::io::Write;
        let mut log = log.map(std::io::LineWriter::new);
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(log) = log.as_mut() {
                let _ = writeln!(log, "{line}");
            }
            // Nobody waits once the line was found; keep reading so the child never blocks
            // on (or fails writing to) a full pipe.
            let _ = tx.send(line);
        }
    });
    let start = std::time::Instant::now();
    loop {
        let left = deadline.saturating_sub(start.elapsed());
        match rx.recv_timeout(left) {
            Ok(line) if line.starts_with(prefix) => return line,
            Ok(_) => continue,
            Err(_) => {
                let _ = child.kill();
                let mut stderr = String::new();
                if let Some(mut pipe) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
                }
                panic!("no `{prefix}` line within {deadline:?}; stderr:\n{stderr}");
            }
        }
    }
}

/// Through `kill(1)`: the workspace forbids the `unsafe` a direct `libc::kill` would need.
pub fn send_sigterm(pid: u32) {
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -TERM {pid}");
}

pub fn wait_with_deadline(child: &mut Child, deadline: Duration) -> std::process::ExitStatus {
    let start = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > deadline {
            let _ = child.kill();
            panic!("did not exit within {deadline:?} after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---- Bursts of signed Canopy deliveries (crash.rs, outage.rs) ----

use std::collections::BTreeMap;

use coverwatch_proto::v1;
use coverwatch_proto::v1::monitoring_service_client::MonitoringServiceClient;
use coverwatch_sandbox::CanopySimConfig;
use coverwatch_sandbox::canopy::signature;

/// The Canopy signing secret the burst tests configure, so they can sign like the vendor.
pub const CANOPY_SECRET: &str = "burst-test-signing-secret";

/// A `coverwatch serve` child and where it listens.
pub struct Running {
    pub child: Child,
    pub grpc: String,
    pub http: String,
}

/// `coverwatch serve` with Canopy pointed at the in-process sandbox and signing with
/// [`CANOPY_SECRET`]; `env` adds or overrides settings.
pub fn serve_canopy(
    dir: &std::path::Path,
    database_url: &str,
    canopy: &CanopySimConfig,
    api: &str,
    widgets: &str,
    env: &[(&str, &str)],
) -> Running {
    let mut cmd = command(dir, database_url);
    cmd.env("COVERWATCH_VENDORS__CANOPY__BASE_URL", api)
        .env("COVERWATCH_VENDORS__CANOPY__WIDGET_BASE_URL", widgets)
        .env("COVERWATCH_VENDORS__CANOPY__TEAM_ID", &canopy.team_id)
        .env("COVERWATCH_VENDORS__CANOPY__CLIENT_ID", &canopy.client_id)
        .env(
            "COVERWATCH_VENDORS__CANOPY__CLIENT_SECRET",
            &canopy.client_secret,
        )
        .env(
            "COVERWATCH_VENDORS__CANOPY__PUBLIC_ALIAS",
            &canopy.public_alias,
        )
        .env(
            "COVERWATCH_VENDORS__CANOPY__SIGNING_SECRETS",
            format!("[\"{CANOPY_SECRET}\"]"),
        );
    for (key, value) in env {
        cmd.env(key, value);
    }
    let mut child = cmd.arg("serve").spawn().unwrap();
    let line = wait_for_line(&mut child, "gRPC on ", Duration::from_secs(60));
    let mut words = line.split_whitespace();
    let grpc = words.nth(2).unwrap().to_owned();
    let http = words.last().unwrap().to_owned();
    Running { child, grpc, http }
}

pub async fn client(grpc: &str) -> MonitoringServiceClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    MonitoringServiceClient::new(channel)
}

pub fn authed<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {DEV_KEY}").parse().unwrap(),
    );
    request
}

/// The pull meta data Canopy records for a pull started from `session_url`: its
/// `ccmeta-KEY=VALUE` parameters, among them the link id and the session's proof that
/// attribute a delivery to the link.
pub fn session_meta(session_url: &str) -> serde_json::Value {
    serde_json::Value::Object(
        reqwest::Url::parse(session_url)
            .unwrap()
            .query_pairs()
            .filter_map(|(key, value)| {
                Some((
                    key.strip_prefix("ccmeta-")?.to_owned(),
                    serde_json::Value::String(value.into_owned()),
                ))
            })
            .collect(),
    )
}

/// A Canopy delivery of the session whose pull meta data is `meta` (see [`session_meta`]) that
/// becomes one `vendor.event` of type `event_type`: processing it needs no vendor call.
pub fn vendor_event_body(meta: &serde_json::Value, event_type: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "widget_id": "00000000-0000-4000-8000-000000000001",
        "team_id": "00000000-0000-4000-8000-000000000002",
        "pull_id": "00000000-0000-4000-8000-000000000003",
        "status": "SUCCESS",
        "meta_data": meta,
        "event_type": event_type,
        "is_monitored": false,
        "monitoring": null,
        "data": {}
    }))
    .unwrap()
}

/// Burst delivery `n`: its event's vendor type is `BURST_{n:05}`.
pub fn burst_body(meta: &serde_json::Value, n: usize) -> Vec<u8> {
    vendor_event_body(meta, &format!("BURST_{n:05}"))
}

/// POST one delivery signed like Canopy signs it; the HTTP status, or the transport error.
pub async fn post_signed(
    http: &reqwest::Client,
    url: &str,
    body: &[u8],
) -> Result<reqwest::StatusCode, reqwest::Error> {
    let t = chrono::Utc::now().timestamp();
    http.post(url)
        .header("content-type", "application/json")
        .header(
            "canopy-signature",
            signature::header_value(CANOPY_SECRET, t, body),
        )
        .body(body.to_vec())
        .send()
        .await
        .map(|response| response.status())
}

/// Every event of the development tenant, in cursor order.
pub async fn all_events(grpc: &str) -> Vec<v1::Event> {
    let mut client = client(grpc).await;
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let page = client
            .list_events(authed(v1::ListEventsRequest {
                after_cursor: after,
                page_size: 1000,
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        if page.events.is_empty() {
            return out;
        }
        after = page.next_cursor;
        out.extend(page.events);
    }
}

/// How many events each vendor type starting with `prefix` produced.
pub fn vendor_type_counts(events: &[v1::Event], prefix: &str) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for event in events {
        if let Some(v1::event::Payload::VendorEvent(vendor)) = &event.payload
            && vendor.vendor_type.starts_with(prefix)
        {
            *counts.entry(vendor.vendor_type.clone()).or_default() += 1;
        }
    }
    counts
}

/// How many events each burst delivery produced.
pub fn burst_counts(events: &[v1::Event]) -> BTreeMap<String, usize> {
    vendor_type_counts(events, "BURST_")
}
