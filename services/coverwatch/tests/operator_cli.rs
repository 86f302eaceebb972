//! The operator CLI as an operator runs it: the real `coverwatch` binary against a real server
//! (the test harness's, with the vendor doubles) — list, show and replay deliveries (by filter,
//! with a dry run that changes nothing), show a link, follow events live, `--json` for scripts,
//! and a clear message with a non-zero exit for a bad key, address or filter.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use coverwatch::auth::hash_key;
use coverwatch_engine::ProviderRegistry;
use coverwatch_proto::v1;
use coverwatch_proto::v1::admin_service_client::AdminServiceClient;
use coverwatch_tests::fake_provider::FakeProvider;
use coverwatch_tests::{TENANT_A, TENANT_B, TestServer, eventually, test_config};

const DEADLINE: Duration = Duration::from_secs(20);
const ADMIN_KEY: &str = "cli-admin-key-0123456789abcdef";

struct World {
    server: TestServer,
    axle: FakeProvider,
    database_url: String,
}

impl World {
    async fn start() -> Self {
        let axle = FakeProvider::default();
        let canopy = FakeProvider::team_wide();
        let registry = ProviderRegistry::new()
            .register(Arc::new(axle.clone()))
            .register(Arc::new(canopy));
        let mut config = test_config().await;
        config.admin_api_key_sha256 = vec![hash_key(ADMIN_KEY)];
        let database_url = config.database_url.clone();
        Self {
            server: TestServer::start(config, Some(registry)).await,
            axle,
            database_url,
        }
    }

    /// The service's own vendors against the embedded simulators (for commands the vendors
    /// check, such as `connections put`).
    async fn start_simulated() -> Self {
        let mut config = test_config().await;
        config.admin_api_key_sha256 = vec![hash_key(ADMIN_KEY)];
        let database_url = config.database_url.clone();
        Self {
            server: TestServer::start(config, None).await,
            axle: FakeProvider::default(),
            database_url,
        }
    }

    async fn stop(self) {
        self.server.stop().await;
        coverwatch_store::testing::drop_database(&self.database_url).await;
    }

    fn addr(&self) -> String {
        self.server.app.grpc_addr.to_string()
    }

    /// `coverwatch` with a clean environment (nothing of the test's own leaks in).
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_coverwatch"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("COVERWATCH_ADDR", self.addr())
            .env("COVERWATCH_ADMIN_KEY", ADMIN_KEY)
            .env("COVERWATCH_API_KEY", TENANT_A.1)
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    /// Run to completion (off the runtime's threads, so the server keeps answering).
    async fn run(&self, args: &[&str], env: &[(&str, Option<&str>)]) -> Output {
        let mut cmd = self.command(args);
        for (name, value) in env {
            match value {
                Some(value) => cmd.env(name, value),
                None => cmd.env_remove(name),
            };
        }
        tokio::task::spawn_blocking(move || cmd.output().expect("the binary runs"))
            .await
            .unwrap()
    }

    /// Run and expect success; the stdout.
    async fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args, &[]).await;
        assert!(
            out.status.success(),
            "coverwatch {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Run and expect `--json` output; the parsed document.
    async fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut args = args.to_vec();
        args.push("--json");
        let text = self.ok(&args).await;
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{args:?}: {e}: {text}"))
    }

    /// Run and expect failure with exit code 1; the stderr.
    async fn fails(&self, args: &[&str], env: &[(&str, Option<&str>)]) -> String {
        let out = self.run(args, env).await;
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            !out.status.success(),
            "coverwatch {args:?} succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(out.stdout.is_empty(), "nothing on stdout: {out:?}");
        stderr
    }

    async fn start_link(&self, user: &str) -> v1::Link {
        let mut client = self.server.client(TENANT_A).await;
        client
            .start_link(v1::StartLinkRequest {
                provider: v1::Provider::Axle as i32,
                user_id: user.into(),
                ..Default::default()
            })
            .await
            .expect("StartLink")
            .into_inner()
            .link
            .expect("a link")
    }

    /// POST as the vendor double expects; the stored delivery's id.
    async fn deliver(&self, url: &str, body: &str) -> String {
        let response = self
            .server
            .http
            .post(url)
            .header("content-type", "application/json")
            .header("x-fake-signature", "sig-123")
            .body(body.to_owned())
            .send()
            .await
            .expect("webhook POST");
        assert_eq!(response.status(), 200);
        let answer: serde_json::Value = response.json().await.unwrap();
        answer["delivery_id"].as_str().unwrap().to_owned()
    }

    async fn delivery(&self, id: &str) -> v1::Delivery {
        let mut request = tonic::Request::new(v1::GetDeliveryRequest {
            delivery_id: id.into(),
        });
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {ADMIN_KEY}").parse().unwrap(),
        );
        AdminServiceClient::new(self.server.channel().await)
            .get_delivery(request)
            .await
            .expect("GetDelivery")
            .into_inner()
            .delivery
            .unwrap()
    }

    async fn settled(&self, id: &str, status: v1::DeliveryStatus) -> v1::Delivery {
        eventually(&format!("{id} to be {status:?}"), DEADLINE, || async {
            let delivery = self.delivery(id).await;
            (delivery.status() == status).then_some(delivery)
        })
        .await
    }
}

fn ids(document: &serde_json::Value, field: &str) -> Vec<String> {
    document[field]
        .as_array()
        .unwrap_or_else(|| panic!("`{field}` is a list: {document}"))
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_are_listed_shown_and_replayed_by_filter() {
    let world = World::start().await;
    let (one, two, three) = (
        world.start_link("user-1").await,
        world.start_link("user-2").await,
        world.start_link("user-3").await,
    );
    let done = world
        .deliver(
            &world.axle.webhook_url(&one.id),
            r#"{"id":"evt-1","type":"completed","account":"acc-1"}"#,
        )
        .await;
    world.settled(&done, v1::DeliveryStatus::Done).await;
    let stray = world
        .deliver(
            &world.server.http_url("/webhooks/canopy"),
            r#"{"id":"evt-stray","type":"changed","account":"nobody"}"#,
        )
        .await;
    world.settled(&stray, v1::DeliveryStatus::Unmatched).await;
    // The vendor goes down: the next two deliveries are dead-lettered.
    world.axle.state.lock().unwrap().unavailable = true;
    let dead_two = world
        .deliver(
            &world.axle.webhook_url(&two.id),
            r#"{"id":"evt-2","type":"completed","account":"acc-2"}"#,
        )
        .await;
    let dead_three = world
        .deliver(
            &world.axle.webhook_url(&three.id),
            r#"{"id":"evt-3","type":"completed","account":"acc-3"}"#,
        )
        .await;
    world.settled(&dead_two, v1::DeliveryStatus::Dead).await;
    world.settled(&dead_three, v1::DeliveryStatus::Dead).await;

    // list: everything, in receipt order, as JSON.
    let all = world.json(&["deliveries", "list"]).await;
    assert_eq!(
        ids(&all, "deliveries"),
        [
            done.as_str(),
            stray.as_str(),
            dead_two.as_str(),
            dead_three.as_str()
        ]
    );
    assert_eq!(all["more"], false);
    assert_eq!(all["deliveries"][2]["status"], "DELIVERY_STATUS_DEAD");
    assert_eq!(all["deliveries"][2]["attempts"], 4);
    assert_eq!(all["deliveries"][1]["provider"], "PROVIDER_CANOPY");
    // ... filtered, and bounded.
    let dead = world
        .json(&[
            "deliveries",
            "list",
            "--status",
            "dead",
            "--provider",
            "axle",
        ])
        .await;
    assert_eq!(
        ids(&dead, "deliveries"),
        [dead_two.as_str(), dead_three.as_str()]
    );
    let by_link = world.json(&["deliveries", "list", "--link", &one.id]).await;
    assert_eq!(ids(&by_link, "deliveries"), [done.as_str()]);
    let first = world.json(&["deliveries", "list", "--limit", "1"]).await;
    assert_eq!(ids(&first, "deliveries"), [done.as_str()]);
    assert_eq!(first["more"], true);
    let since = all["deliveries"][2]["received_at"]
        .as_str()
        .unwrap()
        .to_owned();
    let recent = world.json(&["deliveries", "list", "--since", &since]).await;
    assert_eq!(
        ids(&recent, "deliveries"),
        [dead_two.as_str(), dead_three.as_str()]
    );
    // ... and as a table for people.
    let table = world.ok(&["deliveries", "list", "--status", "dead"]).await;
    assert!(
        table.lines().next().unwrap().contains("LAST ERROR"),
        "{table}"
    );
    assert!(
        table.contains(&dead_two) && table.contains(&dead_three) && !table.contains(&done),
        "{table}"
    );
    assert!(table.contains("fake vendor is down"), "{table}");
    assert!(table.trim_end().ends_with("2 deliveries"), "{table}");

    // show: the raw delivery with its headers.
    let shown = world.ok(&["deliveries", "show", &done]).await;
    assert!(shown.contains("x-fake-signature: sig-123"), "{shown}");
    assert!(shown.contains(r#""account":"acc-1""#), "{shown}");
    assert!(shown.contains(&one.id), "{shown}");
    let shown = world.json(&["deliveries", "show", &stray]).await;
    assert_eq!(shown["status"], "DELIVERY_STATUS_UNMATCHED");
    use base64::Engine as _;
    let body = base64::engine::general_purpose::STANDARD
        .decode(shown["body"].as_str().unwrap())
        .unwrap();
    assert_eq!(
        body,
        br#"{"id":"evt-stray","type":"changed","account":"nobody"}"#
    );

    // A dry run lists what a filter would replay and changes nothing.
    let plan = world
        .json(&[
            "deliveries",
            "replay",
            "--status",
            "dead",
            "--provider",
            "axle",
            "--since",
            &since,
            "--dry-run",
        ])
        .await;
    assert_eq!(plan["dry_run"], true);
    assert_eq!(
        ids(&plan, "deliveries"),
        [dead_two.as_str(), dead_three.as_str()]
    );
    let text = world
        .ok(&["deliveries", "replay", "--status", "dead", "--dry-run"])
        .await;
    assert!(
        text.contains("dry run: 2 deliveries would be replayed; nothing was changed"),
        "{text}"
    );
    for id in [&dead_two, &dead_three] {
        let still = world.delivery(id).await;
        assert_eq!(
            (still.status(), still.attempts),
            (v1::DeliveryStatus::Dead, 4)
        );
    }

    // The vendor is back: the real replay reprocesses exactly the dead ones.
    world.axle.state.lock().unwrap().unavailable = false;
    let replayed = world
        .json(&[
            "deliveries",
            "replay",
            "--status",
            "dead",
            "--provider",
            "axle",
        ])
        .await;
    assert_eq!(replayed["dry_run"], false);
    assert_eq!(
        replayed["replayed"],
        serde_json::json!([&dead_two, &dead_three])
    );
    assert_eq!(replayed["skipped"], serde_json::json!([]));
    for id in [&dead_two, &dead_three] {
        let processed = world.settled(id, v1::DeliveryStatus::Done).await;
        assert_eq!(processed.attempts, 1, "processed again from scratch");
    }
    assert_eq!(
        world.delivery(&stray).await.status(),
        v1::DeliveryStatus::Unmatched,
        "outside the filter"
    );
    let none_left = world
        .ok(&["deliveries", "replay", "--status", "dead"])
        .await;
    assert!(none_left.contains("replayed 0 of 0"), "{none_left}");

    // By id: every id is read first, so one unknown id replays none of them.
    let unknown = coverwatch_core::ids::DeliveryId::new().to_string();
    let err = world
        .fails(&["deliveries", "replay", &stray, &unknown], &[])
        .await;
    assert!(err.contains("not found"), "{err}");
    assert_eq!(
        world.delivery(&stray).await.attempts,
        1,
        "the known one was not replayed"
    );
    let text = world.ok(&["deliveries", "replay", &stray]).await;
    assert!(text.contains("replayed 1 of 1; skipped 0"), "{text}");

    // Bad filters are refused before anything is sent, naming the option.
    for (args, names) in [
        (vec!["deliveries", "list", "--link", "lnk_nope"], "--link"),
        (
            vec!["deliveries", "list", "--since", "yesterday"],
            "--since",
        ),
        (vec!["deliveries", "list", "--status", "lost"], "--status"),
        (vec!["deliveries", "list", "--limit", "0"], "--limit"),
        (
            vec!["deliveries", "replay", "--status", "pending"],
            "--status",
        ),
        (
            vec!["deliveries", "replay", "--provider", "axle"],
            "--status",
        ),
        (
            vec!["deliveries", "replay", &stray, "--status", "dead"],
            "--status",
        ),
    ] {
        let err = world.fails(&args, &[]).await;
        assert!(err.contains(names), "{args:?}: {err}");
    }
    let err = world.fails(&["deliveries", "show", "dlv_nope"], &[]).await;
    assert!(
        err.contains("the server refused the request: delivery_id"),
        "{err}"
    );
    world.stop().await;
}

/// A running `coverwatch events tail` and the lines it printed so far.
struct Tail {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Tail {
    fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        // The stream is open once it says so on stderr.
        let stderr = child.stderr.take().unwrap();
        let (ready_tx, ready) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = ready_tx.send(line);
            }
        });
        let line = ready
            .recv_timeout(DEADLINE)
            .expect("tail says it is following");
        assert!(line.starts_with("following events"), "{line}");
        Self { child, lines }
    }

    /// Lines until one satisfies `wanted`, within the deadline.
    fn until(&self, wanted: impl Fn(&str) -> bool) -> Vec<String> {
        let start = Instant::now();
        let mut seen = Vec::new();
        loop {
            let left = DEADLINE.saturating_sub(start.elapsed());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let done = wanted(&line);
                    seen.push(line);
                    if done {
                        return seen;
                    }
                }
                Err(_) => panic!("no such line within {DEADLINE:?}; saw {seen:?}"),
            }
        }
    }

    /// Ctrl-C: it stops, successfully.
    fn interrupt(mut self) {
        let status = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "Ctrl-C ends tail with success: {status}");
                return;
            }
            if start.elapsed() > DEADLINE {
                let _ = self.child.kill();
                panic!("tail did not stop on Ctrl-C");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_are_shown_and_events_followed_live() {
    let world = World::start().await;
    let link = world.start_link("user-live").await;
    let other = world.start_link("user-other").await;

    // Live: started now, it prints only what happens next, and only for its link.
    let live = Tail::spawn(world.command(&["events", "tail", "--link", &link.id]));
    let json_lines = Tail::spawn(world.command(&[
        "events",
        "tail",
        "--after",
        "0",
        "--kind",
        "link.completed",
        "--json",
    ]));
    world
        .deliver(
            &world.axle.webhook_url(&other.id),
            r#"{"id":"evt-o","type":"completed","account":"acc-o"}"#,
        )
        .await;
    world
        .deliver(
            &world.axle.webhook_url(&link.id),
            r#"{"id":"evt-l","type":"completed","account":"acc-l"}"#,
        )
        .await;
    let seen = live.until(|line| line.contains("link.completed"));
    assert!(
        seen.iter().all(|line| line.contains(&link.id)),
        "only the link's events: {seen:?}"
    );
    assert!(
        !seen.iter().any(|line| line.contains("link.session_opened")),
        "nothing from before it started: {seen:?}"
    );
    let cursor: i64 = seen
        .last()
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(cursor > 0);
    live.interrupt();

    // JSON lines: one event per line, only the kind asked for.
    let lines = json_lines.until(|line| line.contains(&link.id));
    let events: Vec<serde_json::Value> = lines
        .iter()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    assert!(
        events
            .iter()
            .all(|e| e["kind"] == "EVENT_KIND_LINK_COMPLETED"),
        "{events:?}"
    );
    assert_eq!(events.last().unwrap()["link_id"], link.id.as_str());
    json_lines.interrupt();

    // links show: state and the latest policies.
    eventually("the link's policy", DEADLINE, || async {
        let text = world.ok(&["links", "show", &link.id]).await;
        text.contains("pol-acc-l").then_some(())
    })
    .await;
    let text = world.ok(&["links", "show", &link.id]).await;
    assert!(
        text.contains("ACTIVE") && text.contains("user-live"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("POLICY") && l.contains("CARRIER")),
        "{text}"
    );
    assert!(text.contains("FAKE-1"), "{text}");
    let shown = world.json(&["links", "show", &link.id]).await;
    assert_eq!(shown["link"]["id"], link.id.as_str());
    assert_eq!(shown["link"]["state"], "LINK_STATE_ACTIVE");
    assert_eq!(shown["policies"][0]["external_id"], "pol-acc-l");

    // Another tenant does not see it.
    let err = world
        .fails(
            &["links", "show", &link.id],
            &[("COVERWATCH_API_KEY", Some(TENANT_B.1))],
        )
        .await;
    assert!(err.contains("not found"), "{err}");
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_key_or_address_exits_non_zero_with_a_clear_message() {
    let world = World::start().await;
    let list = ["deliveries", "list"];
    let err = world
        .fails(&list, &[("COVERWATCH_ADMIN_KEY", Some("not-the-key"))])
        .await;
    assert!(err.contains("the admin key was refused"), "{err}");
    let err = world
        .fails(&list, &[("COVERWATCH_ADMIN_KEY", Some(TENANT_A.1))])
        .await;
    assert!(
        err.contains("a tenant's API key, not an admin key"),
        "{err}"
    );
    let err = world.fails(&list, &[("COVERWATCH_ADMIN_KEY", None)]).await;
    assert!(err.contains("no admin key"), "{err}");
    let err = world
        .fails(&["deliveries", "list", "--admin-key", "wrong"], &[])
        .await;
    assert!(err.contains("the admin key was refused"), "{err}");

    let link = coverwatch_core::LinkId::new().to_string();
    let err = world
        .fails(
            &["links", "show", &link],
            &[("COVERWATCH_API_KEY", Some("not-a-tenant-key"))],
        )
        .await;
    assert!(err.contains("the API key was refused"), "{err}");
    let err = world
        .fails(&["events", "tail"], &[("COVERWATCH_API_KEY", None)])
        .await;
    assert!(
        err.contains("the admin key was refused as an API key")
            && err.contains("COVERWATCH_API_KEY"),
        "{err}"
    );

    let err = world
        .fails(&list, &[("COVERWATCH_ADDR", Some("127.0.0.1:1"))])
        .await;
    assert!(
        err.contains("cannot reach coverwatch at http://127.0.0.1:1"),
        "{err}"
    );
    let err = world
        .fails(&list, &[("COVERWATCH_ADDR", Some("ftp://127.0.0.1:1"))])
        .await;
    assert!(err.contains("bad --addr"), "{err}");
    let err = world
        .fails(&["deliveries", "list", "--addr", "localhost"], &[])
        .await;
    assert!(err.contains("expected host:port"), "{err}");
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vendor_connections_are_put_listed_shown_and_deleted_without_their_secrets() {
    const SIGNING_SECRET: &str = "whsec-of-the-cli-test-5e2d71";
    let world = World::start_simulated().await;
    let canopy = coverwatch::providers::vendors()
        .into_iter()
        .find(|p| p.id() == "canopy")
        .expect("the canopy plug-in");
    let settings = canopy
        .simulated_settings(&coverwatch_core::plugin::Simulator {
            base_url: coverwatch_tests::flows::sandbox(&world.server).base_url(),
            webhook_secret: SIGNING_SECRET,
        })
        .expect("canopy has a simulator");
    let dir = std::env::temp_dir();
    let name = coverwatch_core::LinkId::new();
    let good = dir.join(format!("{name}-canopy.json"));
    std::fs::write(&good, settings.to_string()).unwrap();
    let mut bad_settings = settings.clone();
    bad_settings["signing_secrets"] = serde_json::json!([SIGNING_SECRET, ""]);
    let bad = dir.join(format!("{name}-bad.json"));
    std::fs::write(&bad, bad_settings.to_string()).unwrap();
    let secrets = [
        SIGNING_SECRET,
        coverwatch_sandbox::canopy::DEFAULT_CLIENT_SECRET,
    ];
    let put = |file: &std::path::Path| {
        [
            "connections",
            "put",
            "--tenant",
            TENANT_A.0,
            "--provider",
            "canopy",
            "--settings-file",
        ]
        .into_iter()
        .map(str::to_owned)
        .chain([file.display().to_string()])
        .collect::<Vec<String>>()
    };

    let err = world
        .fails(
            &put(&bad).iter().map(String::as_str).collect::<Vec<_>>(),
            &[],
        )
        .await;
    assert!(err.contains("settings.signing_secrets[1]"), "{err}");
    assert!(secrets.iter().all(|s| !err.contains(s)), "{err}");

    let saved = world
        .json(&put(&good).iter().map(String::as_str).collect::<Vec<_>>())
        .await;
    let id = saved["id"].as_str().expect("an id").to_owned();
    assert!(id.starts_with("conn_"), "{saved}");
    assert_eq!(saved["version"], 1);
    assert_eq!(saved["webhook_path"], format!("/webhooks/canopy/{id}"));
    let listed = world
        .json(&["connections", "list", "--tenant", TENANT_A.0])
        .await;
    assert_eq!(ids(&listed, "connections"), std::slice::from_ref(&id));
    let shown = world.ok(&["connections", "get", &id]).await;
    assert!(shown.contains(&id) && shown.contains("team_id"), "{shown}");
    for answer in [saved.to_string(), listed.to_string(), shown] {
        assert!(secrets.iter().all(|s| !answer.contains(s)), "{answer}");
    }

    let deleted = world.ok(&["connections", "delete", &id]).await;
    assert!(deleted.contains("deleted"), "{deleted}");
    let err = world.fails(&["connections", "get", &id], &[]).await;
    assert!(err.contains("not found"), "{err}");
    let _ = std::fs::remove_file(good);
    let _ = std::fs::remove_file(bad);
    world.stop().await;
}
