//! Limits and TLS, end to end: what a slow, greedy, careless or hostile client can and cannot do
//! to the real server, and that both listeners serve TLS when configured.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use coverwatch::config::{Config, GrpcTlsSettings, TlsFiles};
use coverwatch_core::provider::{
    Capabilities, Completion, FetchedData, LinkAccess, LinkGrant, LinkSession, LinkSessionRequest,
    ProviderError, ReconnectOutcome, ReconnectStep,
};
use coverwatch_core::webhook::{
    AuthenticatedWebhook, DataRef, InboundWebhook, ParsedWebhook, WebhookRejection,
};
use coverwatch_core::{Provider, ProviderId};
use coverwatch_engine::ProviderRegistry;
use coverwatch_proto::v1::monitoring_service_client::MonitoringServiceClient;
use coverwatch_tests::fake_provider::FakeProvider;
use coverwatch_tests::flows;
use coverwatch_tests::{Client, TENANT_A, TENANT_B, TestServer, eventually, test_config, v1};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

const DEADLINE: Duration = Duration::from_secs(15);

async fn fake_server(config: Config) -> (TestServer, FakeProvider) {
    let fake = FakeProvider::default();
    let registry = ProviderRegistry::new().register(Arc::new(fake.clone()));
    (TestServer::start(config, Some(registry)).await, fake)
}

async fn start_link(client: &Client, user: &str) -> v1::Link {
    flows::start_link(client, v1::Provider::Axle, user, None, None)
        .await
        .link
        .expect("a link")
}

fn watch_request() -> v1::WatchEventsRequest {
    v1::WatchEventsRequest {
        after_cursor: 0,
        filter: None,
        consumer: None,
    }
}

async fn list_links(client: &Client) -> Vec<v1::Link> {
    client
        .clone()
        .list_links(v1::ListLinksRequest::default())
        .await
        .expect("ListLinks")
        .into_inner()
        .links
}

#[tokio::test]
async fn slow_clients_holding_connections_do_not_delay_a_genuine_delivery() {
    const HELD: usize = 1000;
    let mut config = test_config().await;
    config.http.header_read_timeout_seconds = 5;
    let server = TestServer::start(config, None).await;
    let addr = server.app.http_addr;

    // Each sends the start of a request head and then nothing, as a slowloris client does.
    let mut held = Vec::with_capacity(HELD);
    for _ in 0..HELD {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream
            .write_all(b"POST /webhooks/canopy HTTP/1.1\r\nHost: coverwatch\r\nContent-Type: appl")
            .await
            .expect("partial head");
        held.push(stream);
    }

    let secret = flows::sandbox(&server).canopy().config().webhooks[0]
        .signing_secret
        .clone();
    let body = json!({"event_type": "AUTH_STATUS", "pull_id": "slowloris-check"}).to_string();
    let signature = coverwatch_sandbox::canopy::signature::header_value(
        &secret,
        Utc::now().timestamp(),
        body.as_bytes(),
    );
    let started = Instant::now();
    let response = server
        .http
        .post(server.http_url("/webhooks/canopy"))
        .header("content-type", "application/json")
        .header("canopy-signature", signature)
        .body(body)
        .send()
        .await
        .expect("the genuine delivery is answered");
    let took = started.elapsed();
    assert_eq!(response.status(), 200);
    let answer: serde_json::Value = response.json().await.unwrap();
    assert_eq!(answer["status"], "stored", "{answer}");
    assert!(
        took < Duration::from_secs(1),
        "answered after {took:?} while {HELD} connections were held"
    );
    assert_eq!(
        server
            .app
            .engine
            .store()
            .count_deliveries(ProviderId::from_static("canopy"))
            .await
            .unwrap(),
        1
    );

    // They were all still held while the delivery went through...
    let mut probe = [0u8; 64];
    let open = held
        .iter()
        .filter(|s| {
            matches!(s.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        })
        .count();
    assert_eq!(
        open, HELD,
        "held connections closed before their header deadline"
    );

    // ...and the header deadline closes every one of them.
    let closed = futures::future::join_all(held.into_iter().map(|mut stream| async move {
        let mut rest = Vec::new();
        tokio::time::timeout(DEADLINE, stream.read_to_end(&mut rest))
            .await
            .is_ok()
    }))
    .await;
    assert_eq!(
        closed.iter().filter(|c| **c).count(),
        HELD,
        "every slow connection is closed by the server"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_body_that_trickles_in_is_answered_408_and_not_stored() {
    let mut config = test_config().await;
    config.http.body_read_timeout_seconds = 1;
    let (server, fake) = fake_server(config).await;
    let client = server.client(TENANT_A).await;
    let link = start_link(&client, "user-trickle").await;
    let url = fake.webhook_url(&link.id);
    let path = url
        .split_once("/webhooks/")
        .map(|(_, rest)| format!("/webhooks/{rest}"))
        .unwrap();

    let mut stream = TcpStream::connect(server.app.http_addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: coverwatch\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"id\":"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(DEADLINE, stream.read_to_end(&mut answer))
        .await
        .expect("answered and closed")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert_eq!(
        server
            .app
            .engine
            .store()
            .count_deliveries(ProviderId::from_static("axle"))
            .await
            .unwrap(),
        0
    );
    server.stop().await;
}

#[tokio::test]
async fn the_connection_cap_holds_further_clients_back_until_one_leaves() {
    let mut config = test_config().await;
    config.http.max_connections = 4;
    let (server, _fake) = fake_server(config).await;
    let addr = server.app.http_addr;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(addr).await.expect("connect"));
    }
    let probe = reqwest::Client::builder()
        .timeout(Duration::from_millis(700))
        .build()
        .unwrap();
    let refused = probe.get(server.http_url("/healthz")).send().await;
    assert!(
        refused.is_err(),
        "a fifth connection was served past the cap of 4: {refused:?}"
    );

    drop(held.pop());
    let status = eventually("a freed connection slot", DEADLINE, || async {
        probe
            .get(server.http_url("/healthz"))
            .send()
            .await
            .ok()
            .map(|r| r.status())
    })
    .await;
    assert_eq!(status, 200);
    drop(held);
    server.stop().await;
}

#[tokio::test]
async fn watch_streams_are_capped_per_tenant() {
    let mut config = test_config().await;
    config.grpc.max_watch_streams_per_tenant = 2;
    let (server, _fake) = fake_server(config).await;
    let a = server.client(TENANT_A).await;
    let b = server.client(TENANT_B).await;

    let first = a
        .clone()
        .watch_events(watch_request())
        .await
        .expect("first");
    let second = a
        .clone()
        .watch_events(watch_request())
        .await
        .expect("second");
    let third = a.clone().watch_events(watch_request()).await;
    assert_eq!(
        third.err().map(|s| s.code()),
        Some(Code::ResourceExhausted),
        "a third stream of the same tenant"
    );
    let other = b
        .clone()
        .watch_events(watch_request())
        .await
        .expect("another tenant is unaffected");

    drop(first);
    let again = eventually("a closed stream frees its slot", DEADLINE, || async {
        match a.clone().watch_events(watch_request()).await {
            Ok(stream) => Some(stream),
            Err(status) if status.code() == Code::ResourceExhausted => None,
            Err(status) => panic!("unexpected {status}"),
        }
    })
    .await;
    drop((second, again, other));
    server.stop().await;
}

#[tokio::test]
async fn an_oversized_message_is_refused_and_nothing_is_stored() {
    let mut config = test_config().await;
    config.grpc.max_decoding_message_bytes = 16 * 1024;
    let (server, _fake) = fake_server(config).await;
    let client = server.client(TENANT_A).await;

    let refused = client
        .clone()
        .start_link(v1::StartLinkRequest {
            provider: v1::Provider::Axle as i32,
            user_id: "user-big".into(),
            metadata: [("blob".to_owned(), "x".repeat(64 * 1024))].into(),
            redirect_uri: None,
            replace_link_id: None,
            requirement_set_id: None,
            provider_id: String::new(),
        })
        .await
        .expect_err("a 64 KiB request past a 16 KiB limit");
    assert!(
        matches!(refused.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{refused:?}"
    );
    assert!(list_links(&client).await.is_empty(), "nothing was stored");

    // A request within the limit still works on the same connection.
    start_link(&client, "user-small").await;
    assert_eq!(list_links(&client).await.len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn calls_past_their_deadline_or_beyond_the_database_slots_are_answered_at_once() {
    let mut config = test_config().await;
    config.grpc.request_timeout_seconds = 1;
    config.grpc.max_concurrent_db_calls = Some(1);
    config.grpc.db_queue_timeout_ms = 200;
    let (server, fake) = fake_server(config).await;
    let client = server.client(TENANT_A).await;
    let link = start_link(&client, "user-slow").await;
    // Completing a link fetches its data from the vendor: a slow vendor makes a slow call.
    // (The server's own deadline is what is tested: a caller's `grpc-timeout` is also enforced
    // by tonic's client, which would answer before the server does.)
    fake.state.lock().unwrap().fetch_latency = Duration::from_secs(5);
    let complete = || {
        let mut client = client.clone();
        let request = v1::CompleteLinkRequest {
            link_id: link.id.clone(),
            auth_code: "code-acc-slow".into(),
        };
        async move { client.complete_link(request).await }
    };

    let started = Instant::now();
    let late = complete().await.expect_err("past its deadline");
    assert_eq!(late.code(), Code::DeadlineExceeded, "{late:?}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );

    // One call holds the only slot; another finds none within the queue timeout and is told
    // to come back, while health (no database) still answers.
    let holder = tokio::spawn(complete());
    eventually("the slow call to reach the vendor", DEADLINE, || async {
        (fake.state.lock().unwrap().fetches >= 2).then_some(())
    })
    .await;
    let shed = client
        .clone()
        .list_links(v1::ListLinksRequest::default())
        .await
        .expect_err("no free slot");
    assert_eq!(shed.code(), Code::Unavailable, "{shed:?}");
    let health = coverwatch_tests::health::HealthClient::new(server.channel().await)
        .check(coverwatch_tests::health::HealthCheckRequest::default())
        .await
        .expect("health is never shed")
        .into_inner();
    assert_eq!(health.status, 1, "SERVING");

    let abandoned = holder.await.unwrap().expect_err("past its deadline too");
    assert_eq!(abandoned.code(), Code::DeadlineExceeded);
    assert_eq!(
        list_links(&client).await[0].state(),
        v1::LinkState::Pending,
        "the slot is free again and the abandoned completion changed nothing"
    );
    server.stop().await;
}

/// The Axle-shaped test double, counting how often a delivery was authenticated or parsed.
#[derive(Clone, Default)]
struct Counting {
    inner: FakeProvider,
    authenticated: Arc<AtomicU32>,
    parsed: Arc<AtomicU32>,
}

#[async_trait]
impl Provider for Counting {
    fn kind(&self) -> ProviderId {
        self.inner.kind()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn start_link_session(
        &self,
        request: &LinkSessionRequest,
    ) -> Result<LinkSession, ProviderError> {
        self.inner.start_link_session(request).await
    }
    async fn complete_link(&self, completion: &Completion) -> Result<LinkGrant, ProviderError> {
        self.inner.complete_link(completion).await
    }
    fn authenticate_webhook(
        &self,
        webhook: &InboundWebhook,
    ) -> Result<AuthenticatedWebhook, WebhookRejection> {
        self.authenticated.fetch_add(1, Ordering::SeqCst);
        self.inner.authenticate_webhook(webhook)
    }
    fn parse_webhook(&self, webhook: &InboundWebhook) -> Result<ParsedWebhook, ProviderError> {
        self.parsed.fetch_add(1, Ordering::SeqCst);
        self.inner.parse_webhook(webhook)
    }
    async fn fetch(
        &self,
        access: &LinkAccess,
        data: &DataRef,
    ) -> Result<FetchedData, ProviderError> {
        self.inner.fetch(access, data).await
    }
    async fn ensure_monitoring(
        &self,
        access: &LinkAccess,
    ) -> Result<BTreeMap<String, String>, ProviderError> {
        self.inner.ensure_monitoring(access).await
    }
    async fn start_reconnect(
        &self,
        access: &LinkAccess,
        request: &LinkSessionRequest,
    ) -> Result<LinkSession, ProviderError> {
        self.inner.start_reconnect(access, request).await
    }
    async fn reconnect_step(
        &self,
        access: &LinkAccess,
        step: &ReconnectStep,
    ) -> Result<ReconnectOutcome, ProviderError> {
        self.inner.reconnect_step(access, step).await
    }
    async fn descope(&self, access: &LinkAccess) -> Result<(), ProviderError> {
        self.inner.descope(access).await
    }
}

#[tokio::test]
async fn unknown_axle_tokens_are_refused_before_any_parse_and_logged_sparingly() {
    const STRANGERS: u64 = 30;
    let counting = Counting::default();
    let registry = ProviderRegistry::new().register(Arc::new(counting.clone()));
    let server = TestServer::start(test_config().await, Some(registry)).await;
    let body = json!({"id": "evt-x", "type": "completed", "account": "acc-x"});

    for i in 0..STRANGERS {
        let status = server
            .http
            .post(server.http_url(&format!("/webhooks/axle/not-a-token-{i}")))
            .json(&body)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 401);
    }
    assert_eq!(counting.authenticated.load(Ordering::SeqCst), 0);
    assert_eq!(counting.parsed.load(Ordering::SeqCst), 0);
    let counts = server.app.webhook_refusals();
    assert_eq!(counts.refused, STRANGERS);
    assert_eq!(counts.logged, 1, "one log line, then a periodic count");
    assert_eq!(
        server
            .app
            .engine
            .store()
            .count_deliveries(ProviderId::from_static("axle"))
            .await
            .unwrap(),
        0
    );

    // The link's own token still gets in, and is checked by the provider.
    let client = server.client(TENANT_A).await;
    let link = start_link(&client, "user-1").await;
    let status = server
        .http
        .post(counting.inner.webhook_url(&link.id))
        .json(&body)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
    assert_eq!(counting.authenticated.load(Ordering::SeqCst), 1);
    assert_eq!(server.app.webhook_refusals().refused, STRANGERS);
    flows::wait_for_state(&client, &link.id, v1::LinkState::Active).await;
    server.stop().await;
}

#[tokio::test]
async fn mid_sized_grpc_answers_are_not_held_back_by_delayed_acks() {
    const EVENTS: usize = 20;
    const CALLS: usize = 20;
    let (server, _fake) = fake_server(test_config().await).await;
    let client = server.client(TENANT_A).await;
    for i in 0..EVENTS {
        start_link(&client, &format!("user-{i}")).await;
    }
    let page = || async {
        client
            .clone()
            .list_events(v1::ListEventsRequest {
                after_cursor: 0,
                filter: None,
                page_size: EVENTS as i32,
                consumer: None,
            })
            .await
            .expect("ListEvents")
            .into_inner()
            .events
    };
    assert_eq!(page().await.len(), EVENTS);
    let mut took = Vec::with_capacity(CALLS);
    for _ in 0..CALLS {
        let started = Instant::now();
        assert_eq!(page().await.len(), EVENTS);
        took.push(started.elapsed());
    }
    took.sort();
    // Nagle's algorithm meeting the client's delayed ACK puts a floor of about 40 ms under
    // every such answer; without it they take a few milliseconds even in a debug build.
    let median = took[CALLS / 2];
    assert!(
        median < Duration::from_millis(20),
        "median {median:?} of {took:?}"
    );
    server.stop().await;
}

/// A throw-away CA, a server certificate for localhost / 127.0.0.1 and a client certificate,
/// written as PEM files into a directory removed on drop.
struct Pki {
    dir: PathBuf,
    ca_pem: String,
    client_cert_pem: String,
    client_key_pem: String,
}

impl Pki {
    fn generate(name: &str) -> Self {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        };
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "coverwatch test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();

        let server_key = KeyPair::generate().unwrap();
        let server = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap()
            .signed_by(&server_key, &ca, &ca_key)
            .unwrap();

        let client_key = KeyPair::generate().unwrap();
        let mut client_params = CertificateParams::new(vec!["internal-caller".to_owned()]).unwrap();
        client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client = client_params.signed_by(&client_key, &ca, &ca_key).unwrap();

        let dir = std::env::temp_dir().join(format!(
            "coverwatch-{name}-{}-{}",
            std::process::id(),
            Utc::now().timestamp_nanos_opt().unwrap_or_default()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("server.pem"), server.pem()).unwrap();
        std::fs::write(dir.join("server.key"), server_key.serialize_pem()).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        Self {
            dir,
            ca_pem: ca.pem(),
            client_cert_pem: client.pem(),
            client_key_pem: client_key.serialize_pem(),
        }
    }

    fn server_files(&self) -> TlsFiles {
        TlsFiles {
            cert_file: self.dir.join("server.pem"),
            key_file: self.dir.join("server.key"),
        }
    }

    fn grpc(&self, verify_clients: bool) -> GrpcTlsSettings {
        let files = self.server_files();
        GrpcTlsSettings {
            cert_file: files.cert_file,
            key_file: files.key_file,
            client_ca_file: verify_clients.then(|| self.dir.join("ca.pem")),
        }
    }

    fn client_tls(&self, with_certificate: bool) -> ClientTlsConfig {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .domain_name("localhost");
        if with_certificate {
            tls.identity(Identity::from_pem(
                &self.client_cert_pem,
                &self.client_key_pem,
            ))
        } else {
            tls
        }
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// ListLinks as tenant A over `channel`; the error is whatever the transport or server said.
async fn list_links_over(channel: Channel) -> Result<usize, tonic::Status> {
    let auth: tonic::metadata::MetadataValue<_> = format!("Bearer {}", TENANT_A.1).parse().unwrap();
    let mut client = MonitoringServiceClient::with_interceptor(
        channel,
        move |mut request: tonic::Request<()>| {
            request.metadata_mut().insert("authorization", auth.clone());
            Ok(request)
        },
    );
    let links = client
        .list_links(v1::ListLinksRequest::default())
        .await?
        .into_inner()
        .links;
    Ok(links.len())
}

/// A call over `endpoint`, failing if either connecting or calling fails.
async fn call(endpoint: Endpoint) -> Result<usize, String> {
    let channel = endpoint.connect().await.map_err(|e| e.to_string())?;
    list_links_over(channel).await.map_err(|s| s.to_string())
}

#[tokio::test]
async fn grpc_serves_tls_and_refuses_plaintext() {
    let pki = Pki::generate("grpc-tls");
    let mut config = test_config().await;
    config.grpc.tls = Some(pki.grpc(false));
    let (server, _fake) = fake_server(config).await;
    let addr = server.app.grpc_addr;

    let tls = Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(pki.client_tls(false))
        .unwrap();
    assert_eq!(call(tls).await, Ok(0), "a call over TLS");

    let plain = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5));
    assert!(
        call(plain).await.is_err(),
        "plaintext to the TLS port must fail"
    );
    server.stop().await;
}

#[tokio::test]
async fn grpc_with_client_verification_refuses_a_caller_without_a_certificate() {
    let pki = Pki::generate("grpc-mtls");
    let mut config = test_config().await;
    config.grpc.tls = Some(pki.grpc(true));
    let (server, _fake) = fake_server(config).await;
    let endpoint = |with_certificate| {
        Endpoint::from_shared(format!("https://{}", server.app.grpc_addr))
            .unwrap()
            .timeout(Duration::from_secs(5))
            .tls_config(pki.client_tls(with_certificate))
            .unwrap()
    };
    assert_eq!(
        call(endpoint(true)).await,
        Ok(0),
        "a caller with a certificate"
    );
    assert!(
        call(endpoint(false)).await.is_err(),
        "a caller without a certificate gets nothing"
    );
    server.stop().await;
}

#[tokio::test]
async fn webhooks_over_https_are_stored() {
    let pki = Pki::generate("https");
    let mut config = test_config().await;
    config.http.tls = Some(pki.server_files());
    let (server, fake) = fake_server(config).await;
    let client = server.client(TENANT_A).await;
    let link = start_link(&client, "user-tls").await;
    let url = fake.webhook_url(&link.id);
    assert!(url.starts_with("https://"), "vendors are given {url}");

    let https = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let response = https
        .post(&url)
        .json(&json!({"id": "evt-tls", "type": "completed", "account": "acc-tls"}))
        .send()
        .await
        .expect("HTTPS delivery");
    assert_eq!(response.status(), 200);
    flows::wait_for_state(&client, &link.id, v1::LinkState::Active).await;

    let plain_url = url.replacen("https://", "http://", 1);
    assert!(
        server
            .http
            .post(&plain_url)
            .body("{}")
            .send()
            .await
            .is_err(),
        "plain HTTP to the HTTPS listener must fail"
    );
    server.stop().await;
}
