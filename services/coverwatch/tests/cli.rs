//! The `coverwatch` binary as an operator runs it: migrate, serve, answer with the development
//! key, stop on SIGTERM with exit code 0, and refuse bad configuration by naming the key.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{DEV_KEY, command, send_sigterm, wait_for_line, wait_with_deadline, workdir};

use coverwatch_proto::v1;
use coverwatch_proto::v1::monitoring_service_client::MonitoringServiceClient;

// Multi-threaded so that the client's connection keeps running (and answers the server's
// shutdown handshake) while this test blocks waiting for the process to exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_answers_and_stops_cleanly_on_sigterm() {
    let dir = workdir();
    let url = coverwatch_store::testing::fresh_database_url().await;

    let migrate = command(&dir, &url).arg("migrate").output().unwrap();
    assert!(
        migrate.status.success(),
        "migrate: {}",
        String::from_utf8_lossy(&migrate.stderr)
    );

    let mut child = command(&dir, &url).arg("serve").spawn().unwrap();
    let line = wait_for_line(&mut child, "gRPC on ", Duration::from_secs(60));
    let grpc = line
        .trim_start_matches("gRPC on ")
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = MonitoringServiceClient::new(channel);
    let mut request = tonic::Request::new(v1::ListLinksRequest::default());
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {DEV_KEY}").parse().unwrap(),
    );
    let links = client
        .list_links(request)
        .await
        .expect("the development key works");
    assert!(links.into_inner().links.is_empty());

    // SIGTERM with the client still connected: graceful shutdown, promptly, exit code 0.
    send_sigterm(child.id());
    let start = std::time::Instant::now();
    let status = wait_with_deadline(&mut child, Duration::from_secs(30));
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "shutdown waited {:?}: an idle client must not hold it up",
        start.elapsed()
    );
    drop(client);
    assert_eq!(status.code(), Some(0), "exit status {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sandbox_runs_alone() {
    let dir = workdir();
    let mut child = command(&dir, "sqlite::memory:")
        .arg("sandbox")
        .spawn()
        .unwrap();
    let line = wait_for_line(&mut child, "sandbox on ", Duration::from_secs(60));
    let base = line
        .trim_start_matches("sandbox on ")
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    let health = reqwest_get(&format!("{base}/_sandbox/health")).await;
    assert_eq!(health, 200);
    let widget = reqwest_get(&format!("{base}/canopy/c/coverwatch-sandbox")).await;
    assert_eq!(widget, 200, "the hosted Canopy widget is served");
    send_sigterm(child.id());
    let status = wait_with_deadline(&mut child, Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "exit status {status:?}");
}

async fn reqwest_get(url: &str) -> u16 {
    reqwest::get(url).await.unwrap().status().as_u16()
}

#[test]
fn bad_configuration_is_refused_naming_the_key() {
    let dir = workdir();
    let out = command(&dir, "sqlite::memory:")
        .env("COVERWATCH_WORKER__CONCURRENCY", "0")
        .arg("serve")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("worker.concurrency"), "{stderr}");

    let out = command(&dir, "mysql://nope")
        .arg("migrate")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("database_url"));

    let out = Command::new(env!("CARGO_BIN_EXE_coverwatch"))
        .arg("frobnicate")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("frobnicate"));
}

#[test]
fn hash_key_prints_the_sha256_to_configure() {
    let out = Command::new(env!("CARGO_BIN_EXE_coverwatch"))
        .args(["hash-key", "abc"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}
