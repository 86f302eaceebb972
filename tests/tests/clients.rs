//! Clients in other languages (issue 15): gRPC reflection in both versions tools speak, and the
//! Python example in `tests/clients/python/` run against the real server with stubs generated
//! from `proto/` at test time.
//!
//! The Python test installs the pinned packages of `tests/clients/python/requirements.txt` from
//! PyPI into a virtual environment under the target directory, once; later runs reuse it. Where
//! `python3` is absent the test says SKIPPED loudly and passes: that is the only thing it skips.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use coverwatch_tests::flows::Browser;
use coverwatch_tests::{TENANT_A, TestServer, test_config, v1};
use serde_json::Value;

/// Generous: the first run downloads and installs grpcio from PyPI.
const INSTALL_DEADLINE: Duration = Duration::from_secs(600);
/// One run of the example, or one event reaching it.
const SCRIPT_DEADLINE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn reflection_v1alpha_lists_the_services() {
    use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;

    let server = TestServer::start(test_config().await, None).await;
    let mut reflection = ServerReflectionClient::new(server.channel().await);
    let list = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let describe = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileContainingSymbol(
            "coverwatch.v1.MonitoringService".into(),
        )),
    };
    let mut responses = reflection
        .server_reflection_info(futures::stream::iter([list, describe]))
        .await
        .expect("reflection v1alpha is served")
        .into_inner();
    let response = responses.message().await.unwrap().expect("a response");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("a service list: {response:?}");
    };
    let names: HashSet<String> = list.service.into_iter().map(|s| s.name).collect();
    for service in [
        "coverwatch.v1.MonitoringService",
        "coverwatch.v1.RequirementsService",
        "coverwatch.v1.AdminService",
        "grpc.health.v1.Health",
    ] {
        assert!(names.contains(service), "{service} in {names:?}");
    }
    let response = responses.message().await.unwrap().expect("a response");
    let Some(MessageResponse::FileDescriptorResponse(files)) = response.message_response else {
        panic!("the service's file: {response:?}");
    };
    assert!(!files.file_descriptor_proto.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn python_example_links_lists_and_resumes_by_consumer_name() {
    let Some(python) = Python::set_up().await else {
        return;
    };
    let server = TestServer::start(test_config().await, None).await;
    let addr = server.app.grpc_addr.to_string();
    let example = |args: &[&str]| python.example(&addr, Some(TENANT_A.1), args);

    // Reflection v1alpha, through Python's own grpcio-reflection client.
    let services = example(&["services"]).finish().await;
    let services: Vec<&str> = services
        .iter()
        .map(|s| s["service"].as_str().unwrap())
        .collect();
    for service in [
        "coverwatch.v1.AdminService",
        "coverwatch.v1.MonitoringService",
        "coverwatch.v1.RequirementsService",
    ] {
        assert!(services.contains(&service), "{service} in {services:?}");
    }

    // Two links for one user; the list pages through both, one per page, oldest first.
    let mut links = Vec::new();
    for _ in 0..2 {
        let started = example(&["start", "--provider", "axle", "--user-id", "py-user"])
            .finish()
            .await;
        let [started] = &started[..] else {
            panic!("one line: {started:?}")
        };
        assert_eq!(started["state"], "LINK_STATE_PENDING", "{started}");
        let link_id = started["link_id"].as_str().unwrap().to_owned();
        assert!(link_id.starts_with("lnk_"), "{started}");
        let session_url = started["session_url"].as_str().unwrap().to_owned();
        assert!(session_url.starts_with("http"), "{started}");
        links.push((link_id, session_url));
    }
    let listed = example(&["list", "--user-id", "py-user", "--page-size", "1"])
        .finish()
        .await;
    let listed: Vec<&str> = listed
        .iter()
        .map(|l| l["link_id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [links[0].0.as_str(), links[1].0.as_str()]);

    // A new consumer starts at the beginning: both links' session_opened.
    let first = example(&["watch", "--consumer", "py-example", "--count", "2"])
        .finish()
        .await;
    assert_eq!(kinds(&first), ["EVENT_KIND_LINK_SESSION_OPENED"; 2]);
    let first_links: Vec<&str> = first
        .iter()
        .map(|e| e["link_id"].as_str().unwrap())
        .collect();
    assert_eq!(first_links, [links[0].0.as_str(), links[1].0.as_str()]);
    assert!(first[0]["payload"]["url"].is_string(), "{}", first[0]);

    // Restarted, the same consumer resumes after what it acknowledged and follows live events
    // while the end-user links the first account through Axle's hosted page.
    let mut watching = example(&[
        "watch",
        "--consumer",
        "py-example",
        "--until-kind",
        "EVENT_KIND_LINK_COMPLETED",
    ]);
    let browser = Browser::new();
    let landing = browser.get(&links[0].1).await;
    assert_eq!(landing.status, 200, "{}", landing.html);
    let login = browser
        .submit(&landing, "carrier-form", &[("carrier", "state-farm")])
        .await;
    let done = browser
        .submit(
            &login,
            "login-form",
            &[("username", "username"), ("password", "password")],
        )
        .await;
    assert_eq!(done.element_text("status").as_deref(), Some("complete"));
    let first_live = watching.next_line().await;
    let mut second = vec![first_live];
    second.extend(watching.finish().await);
    assert_eq!(
        kinds(&second).last().copied(),
        Some("EVENT_KIND_LINK_COMPLETED")
    );
    let ids = |events: &[Value]| -> Vec<String> {
        events
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let seen: HashSet<String> = ids(&first).into_iter().collect();
    assert!(
        ids(&second).iter().all(|id| !seen.contains(id)),
        "no event twice across the restart: {first:?} then {second:?}"
    );
    let cursors: Vec<i64> = first
        .iter()
        .chain(&second)
        .map(|e| e["cursor"].as_i64().unwrap())
        .collect();
    assert!(cursors.windows(2).all(|w| w[0] < w[1]), "{cursors:?}");

    // No gap either: together the two runs saw exactly what is stored up to where they stopped.
    let last = *cursors.last().unwrap();
    let mut client = server.client(TENANT_A).await;
    let stored = client
        .list_events(v1::ListEventsRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("ListEvents")
        .into_inner()
        .events;
    let stored: Vec<String> = stored
        .into_iter()
        .filter(|e| e.cursor <= last)
        .map(|e| e.id)
        .collect();
    let printed: Vec<String> = ids(&first).into_iter().chain(ids(&second)).collect();
    assert_eq!(printed, stored);

    // The server kept the consumer's place: it resumes after the last printed event.
    let resumed = client
        .list_events(v1::ListEventsRequest {
            consumer: Some("py-example".into()),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("ListEvents by consumer")
        .into_inner();
    assert!(
        resumed.events.iter().all(|e| e.cursor > last),
        "{resumed:?}"
    );

    // A wrong key: the example exits with the status code and message, printing nothing.
    let refused = python
        .example(&addr, Some("not-a-key-of-anyone-0123456789"), &["list"])
        .fail()
        .await;
    assert!(refused.contains("UNAUTHENTICATED"), "{refused}");
    server.stop().await;
}

fn kinds(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["kind"].as_str().unwrap()).collect()
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_owned()
}

/// A virtual environment with the pinned packages, and stubs generated from `proto/`.
struct Python {
    python: PathBuf,
    stubs: TempDir,
}

impl Python {
    /// `None` (after saying SKIPPED) where `python3` is not installed.
    async fn set_up() -> Option<Self> {
        let found = Command::new("python3")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            eprintln!(
                "\n*** SKIPPED: the Python client example was NOT tested: `python3` is not \
                 installed on this machine. Install Python 3 (with venv) to run it. ***\n"
            );
            return None;
        }
        tokio::task::spawn_blocking(|| {
            let python = venv();
            let stubs = Self::generate_stubs(&python);
            Self { python, stubs }
        })
        .await
        .map(Some)
        .expect("Python set-up")
    }

    /// Stubs generated from `proto/` now, into a directory removed when the test ends: the
    /// repository keeps no generated code.
    fn generate_stubs(python: &Path) -> TempDir {
        let stubs = TempDir::new("cw-python-stubs");
        let proto = repo_root().join("proto");
        let mut files: Vec<PathBuf> = std::fs::read_dir(proto.join("coverwatch/v1"))
            .expect("proto/coverwatch/v1")
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|e| e == "proto"))
            .collect();
        files.sort();
        let mut protoc = Command::new(python);
        protoc
            .args(["-m", "grpc_tools.protoc"])
            .arg(format!("-I{}", proto.display()))
            .arg(format!("--python_out={}", stubs.0.display()))
            .arg(format!("--grpc_python_out={}", stubs.0.display()))
            .args(&files);
        run(protoc, "generating the Python stubs");
        stubs
    }

    /// Runs the example with `args`, its key in the environment as the example expects.
    fn example(&self, addr: &str, key: Option<&str>, args: &[&str]) -> Script {
        let mut command = Command::new(&self.python);
        command
            .arg(repo_root().join("tests/clients/python/coverwatch_example.py"))
            .args(["--addr", addr])
            .args(args)
            .env("PYTHONPATH", &self.stubs.0)
            .env("PYTHONUNBUFFERED", "1")
            .env_remove("COVERWATCH_API_KEY");
        if let Some(key) = key {
            command.env("COVERWATCH_API_KEY", key);
        }
        Script::spawn(command, args.join(" "))
    }
}

/// The interpreter of a virtual environment under the target directory holding exactly the
/// pinned requirements; made once, then reused while the requirements stay the same.
fn venv() -> PathBuf {
    let requirements = repo_root().join("tests/clients/python/requirements.txt");
    let pinned = std::fs::read_to_string(&requirements).expect("requirements.txt");
    let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let venv = base.join("python-clients");
    let marker = venv.join("installed-requirements.txt");
    if std::fs::read_to_string(&marker).ok().as_deref() == Some(pinned.as_str()) {
        return venv.join("bin/python");
    }
    // Built aside and moved into place, so that an interrupted install is never mistaken for
    // a finished one (the marker is written last).
    // The guard removes a half-made environment when a step fails.
    let staging = TempDir(base.join(format!("python-clients.{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&staging.0);
    let mut create = Command::new("python3");
    create.args(["-m", "venv"]).arg(&staging.0);
    run(create, "creating a Python virtual environment");
    let mut install = Command::new(staging.0.join("bin/python"));
    install
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
        ])
        .arg(&requirements);
    run(install, "installing the pinned Python packages from PyPI");
    std::fs::write(staging.0.join("installed-requirements.txt"), &pinned).unwrap();
    let _ = std::fs::remove_dir_all(&venv);
    // When this fails, another test process finished the same install first: its copy is used
    // and the guard removes this one.
    let _ = std::fs::rename(&staging.0, &venv);
    venv.join("bin/python")
}

/// Runs a set-up step to its end (bounded by INSTALL_DEADLINE), failing the test with its
/// output if it fails.
fn run(command: Command, what: &str) {
    let mut script = Script::spawn(command, what.to_owned());
    let deadline = std::time::Instant::now() + INSTALL_DEADLINE;
    loop {
        if let Some(status) = script.child.try_wait().expect("wait") {
            if !status.success() {
                panic!("{what} failed ({status}):\n{}", script.stderr());
            }
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: no end after {INSTALL_DEADLINE:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A running process whose stdout lines arrive as they are printed. Killed when dropped.
struct Script {
    what: String,
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Script {
    fn spawn(mut command: Command, what: String) -> Self {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut stderr = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        Self {
            what,
            child,
            lines,
            stderr: Some(stderr),
        }
    }

    fn stderr(&mut self) -> String {
        self.stderr
            .take()
            .map(|t| t.join().unwrap_or_default())
            .unwrap_or_default()
    }

    fn parse(&self, line: &str) -> Value {
        serde_json::from_str(line).unwrap_or_else(|e| {
            panic!(
                "`{}` printed a line that is not JSON ({e}): {line}",
                self.what
            )
        })
    }

    /// The next line the script prints, as JSON, within SCRIPT_DEADLINE.
    async fn next_line(&mut self) -> Value {
        let deadline = tokio::time::Instant::now() + SCRIPT_DEADLINE;
        loop {
            match self.lines.try_recv() {
                Ok(line) => return self.parse(&line),
                Err(mpsc::TryRecvError::Disconnected) => {
                    let status = self.child.wait().expect("wait");
                    let stderr = self.stderr();
                    panic!(
                        "`{}` ended ({status}) before printing a line:\n{stderr}",
                        self.what
                    );
                }
                Err(mpsc::TryRecvError::Empty) => {}
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "`{}` printed nothing for {SCRIPT_DEADLINE:?}",
                self.what
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits (within SCRIPT_DEADLINE) for a successful exit; the lines it printed, as JSON.
    async fn finish(mut self) -> Vec<Value> {
        let status = self.exit().await;
        if !status.success() {
            let stderr = self.stderr();
            panic!("`{}` failed ({status}):\n{stderr}", self.what);
        }
        // The exit closed stdout: the reader thread ends once it passed on every line.
        let lines: Vec<String> = self.lines.iter().collect();
        lines.iter().map(|line| self.parse(line)).collect()
    }

    /// Waits for a failed exit that printed nothing; what it said on stderr.
    async fn fail(mut self) -> String {
        let status = self.exit().await;
        let stderr = self.stderr();
        assert!(!status.success(), "`{}` should fail: {stderr}", self.what);
        let lines: Vec<String> = self.lines.iter().collect();
        assert!(lines.is_empty(), "`{}` printed {lines:?}", self.what);
        stderr
    }

    async fn exit(&mut self) -> std::process::ExitStatus {
        let deadline = tokio::time::Instant::now() + SCRIPT_DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "`{}` still running after {SCRIPT_DEADLINE:?}",
                self.what
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory removed when the test ends.
struct TempDir(PathBuf);

impl TempDir {
    fn new(prefix: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let path = std::env::temp_dir().join(format!("{prefix}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).expect("temp dir");
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
