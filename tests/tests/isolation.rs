//! Failure isolation (issue 11), end to end through the real server: one tenant's poisoned input
//! fails alone — caught where it is processed, recorded on its delivery with the panic message,
//! retried, then dead-lettered — while every other delivery is processed and health stays
//! honest; and a required background task that dies is restarted, with health saying NOT_SERVING
//! while it is down.
//!
//! The panics come from a buggy test-double provider (`FakeState::panic_parsing` /
//! `panic_fetching`): the requirement-rule bug that first showed the problem is fixed, and the
//! service must survive the next one wherever it hides.

use std::io::Write;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use coverwatch::auth::hash_key;
use coverwatch_core::policy::{Address, PolicyStatus};
use coverwatch_engine::{ProviderRegistry, WorkerConfig};
use coverwatch_proto::v1::admin_service_client::AdminServiceClient;
use coverwatch_tests::fake_provider::FakeProvider;
use coverwatch_tests::flows::{get_link, kinds, link_events, wait_for_event, wait_for_state};
use coverwatch_tests::health::{HealthCheckRequest, HealthClient};
use coverwatch_tests::{
    Client, RequirementsClient, TENANT_A, TENANT_B, TestServer, eventually, fast_worker,
    test_config, v1,
};
use futures::StreamExt;
use serde_json::json;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tracing_subscriber::fmt::MakeWriter;

use v1::EventKind as K;

const DEADLINE: Duration = Duration::from_secs(30);
const ADMIN_KEY: &str = "admin-key-0123456789abcdef";
/// `grpc.health.v1` statuses as numbers on the wire.
const SERVING: i32 = 1;
const NOT_SERVING: i32 = 2;

#[derive(Clone)]
struct Bearer(String);

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", self.0).parse().unwrap(),
        );
        Ok(request)
    }
}

type Admin = AdminServiceClient<InterceptedService<Channel, Bearer>>;

/// The Axle-shaped test double and a server using it, with an admin key to read the inbox.
async fn server() -> (TestServer, FakeProvider, Admin) {
    let fake = FakeProvider::default();
    let registry = ProviderRegistry::new().register(Arc::new(fake.clone()));
    let mut config = test_config().await;
    config.admin_api_key_sha256 = vec![hash_key(ADMIN_KEY)];
    let server = TestServer::start(config, Some(registry)).await;
    let admin =
        AdminServiceClient::with_interceptor(server.channel().await, Bearer(ADMIN_KEY.to_owned()));
    (server, fake, admin)
}

async fn start_link(client: &Client, user: &str, set: Option<&str>) -> v1::Link {
    client
        .clone()
        .start_link(v1::StartLinkRequest {
            provider: v1::Provider::Axle as i32,
            user_id: user.into(),
            requirement_set_id: set.map(str::to_owned),
            ..Default::default()
        })
        .await
        .expect("StartLink")
        .into_inner()
        .link
        .expect("a link")
}

/// POST a delivery as the vendor would; returns the stored delivery's id.
async fn deliver(server: &TestServer, url: &str, body: serde_json::Value) -> String {
    let response = server
        .http
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("webhook POST");
    assert_eq!(response.status(), 200, "delivery stored");
    let answer: serde_json::Value = response.json().await.unwrap();
    answer["delivery_id"]
        .as_str()
        .unwrap_or_else(|| panic!("stored, with an id: {answer}"))
        .to_owned()
}

async fn get_delivery(admin: &Admin, id: &str) -> v1::Delivery {
    admin
        .clone()
        .get_delivery(v1::GetDeliveryRequest {
            delivery_id: id.into(),
        })
        .await
        .expect("GetDelivery")
        .into_inner()
        .delivery
        .expect("a delivery")
}

async fn wait_for_delivery(admin: &Admin, id: &str, status: v1::DeliveryStatus) -> v1::Delivery {
    eventually(&format!("{id} to be {status:?}"), DEADLINE, || async {
        let delivery = get_delivery(admin, id).await;
        (delivery.status() == status).then_some(delivery)
    })
    .await
}

/// Every delivery with `status`, all pages.
async fn deliveries_with(admin: &Admin, status: v1::DeliveryStatus) -> Vec<v1::Delivery> {
    let mut all = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = admin
            .clone()
            .list_deliveries(v1::ListDeliveriesRequest {
                status: status as i32,
                page_size: 500,
                page_token: page_token.clone(),
                ..Default::default()
            })
            .await
            .expect("ListDeliveries")
            .into_inner();
        all.extend(page.deliveries);
        if page.next_page_token.is_empty() {
            return all;
        }
        page_token = page.next_page_token;
    }
}

async fn health_of(server: &TestServer, service: &str) -> i32 {
    HealthClient::new(server.channel().await)
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .expect("health check")
        .into_inner()
        .status
}

/// The next status a health `Watch` reports (it reports changes only).
async fn next_status(watch: &mut tonic::Streaming<tonic_health::pb::HealthCheckResponse>) -> i32 {
    tokio::time::timeout(DEADLINE, watch.message())
        .await
        .expect("a health change")
        .expect("health stream open")
        .expect("a status")
        .status
}

async fn readyz(server: &TestServer) -> (u16, String) {
    let response = server
        .http
        .get(server.http_url("/readyz"))
        .send()
        .await
        .expect("GET /readyz");
    (response.status().as_u16(), response.text().await.unwrap())
}

/// A homeowners set whose postal code carries a character wider than one byte: the input
/// that first took the inbox worker down for every tenant.
async fn put_home_set(client: &RequirementsClient) {
    let set = json!({"id": "home-lender", "name": "Home lender", "rules": [
        {"rule": "policy_active"},
        {"rule": "address_covered", "line1": "1 Main St", "city": "Springfield", "state": "IL",
         "postal_code": "1234é"}
    ]});
    client
        .clone()
        .put_requirement_set(v1::PutRequirementSetRequest {
            definition: Some(v1::put_requirement_set_request::Definition::Json(
                set.to_string(),
            )),
        })
        .await
        .expect("PutRequirementSet");
}

fn home_address() -> Address {
    Address {
        line1: Some("1 Main Street".into()),
        line2: None,
        city: Some("Springfield".into()),
        state: Some("IL".into()),
        postal_code: Some("1234é".into()),
        country: Some("US".into()),
    }
}

#[tokio::test]
async fn a_poisoned_link_fails_alone_while_another_tenants_links_are_processed() {
    let (server, fake, admin) = server().await;
    let (client_a, client_b) = (server.client(TENANT_A).await, server.client(TENANT_B).await);
    for tenant in [TENANT_A, TENANT_B] {
        put_home_set(&server.requirements_client(tenant).await).await;
    }
    let poisoned = start_link(&client_a, "typo-tenant-user", Some("home-lender")).await;
    let healthy = start_link(&client_b, "other-tenant-user", Some("home-lender")).await;
    {
        let mut state = fake.state.lock().unwrap();
        state.homes.insert("acc-poison".into(), home_address());
        state.homes.insert("acc-b".into(), home_address());
        state.panic_fetching.insert("acc-poison".into());
    }
    let mut b_events = client_b
        .clone()
        .watch_events(v1::WatchEventsRequest::default())
        .await
        .expect("WatchEvents")
        .into_inner();

    let poison = deliver(
        &server,
        &fake.webhook_url(&poisoned.id),
        json!({"id": "evt-poison", "type": "completed", "account": "acc-poison"}),
    )
    .await;
    deliver(
        &server,
        &fake.webhook_url(&healthy.id),
        json!({"id": "evt-b-1", "type": "completed", "account": "acc-b"}),
    )
    .await;

    // The other tenant's link is linked and checked against the very same set, the non-ASCII
    // postal code included, and its caller hears of it on its stream.
    let mut seen = Vec::new();
    while !seen.contains(&K::PolicyRequirementsMet) {
        let event = tokio::time::timeout(DEADLINE, b_events.message())
            .await
            .expect("tenant B's events arrive")
            .expect("stream open")
            .expect("an event");
        assert_eq!(event.link_id, healthy.id, "tenant B sees only its own link");
        seen.push(event.kind());
    }
    assert!(seen.contains(&K::LinkCompleted), "{seen:?}");

    // The poisoned delivery failed alone, on every attempt, with the panic as its reason.
    let dead = wait_for_delivery(&admin, &poison, v1::DeliveryStatus::Dead).await;
    assert_eq!(
        dead.attempts, 4,
        "retried up to the test worker's max_attempts"
    );
    let error = dead.last_error.unwrap_or_default();
    assert!(
        error
            .starts_with("panicked: fake provider cannot normalize the data of account acc-poison"),
        "{error}"
    );
    let link = get_link(&client_a, &poisoned.id).await;
    assert_eq!(
        link.state(),
        v1::LinkState::Pending,
        "nothing of it applied"
    );
    assert_eq!(
        link.requirements_status(),
        v1::RequirementsStatus::Unspecified
    );
    assert_eq!(
        kinds(&link_events(&client_a, &poisoned.id).await),
        [K::LinkSessionOpened]
    );

    // The worker survived: what arrives after the poison is processed too.
    fake.set_status("acc-b", PolicyStatus::Cancelled);
    deliver(
        &server,
        &fake.webhook_url(&healthy.id),
        json!({"id": "evt-b-2", "type": "changed", "account": "acc-b"}),
    )
    .await;
    wait_for_event(&client_b, &healthy.id, K::PolicyRequirementsUnmet).await;

    // Health is honest: the failure was one delivery's, and the service serves.
    assert_eq!(health_of(&server, "").await, SERVING);
    assert_eq!(readyz(&server).await, (200, "ready".to_owned()));

    // Once the bug is fixed the operator replays the dead delivery, and the link completes and
    // is checked: nothing of the panicking attempts (the link's lock among them) stayed held.
    fake.state.lock().unwrap().panic_fetching.clear();
    admin
        .clone()
        .replay_delivery(v1::ReplayDeliveryRequest {
            delivery_id: poison.clone(),
        })
        .await
        .expect("ReplayDelivery");
    wait_for_delivery(&admin, &poison, v1::DeliveryStatus::Done).await;
    wait_for_event(&client_a, &poisoned.id, K::PolicyRequirementsMet).await;
    server.stop().await;
}

#[tokio::test]
async fn a_vendor_call_that_hangs_times_out_and_the_delivery_is_retried() {
    let fake = FakeProvider::default();
    let registry = ProviderRegistry::new().register(Arc::new(fake.clone()));
    let mut config = test_config().await;
    config.admin_api_key_sha256 = vec![hash_key(ADMIN_KEY)];
    let server = TestServer::start_with(
        config,
        coverwatch::Overrides {
            providers: Some(registry),
            worker: Some(WorkerConfig {
                process_timeout: Duration::from_millis(300),
                max_attempts: 100,
                ..fast_worker()
            }),
            ..Default::default()
        },
    )
    .await;
    let admin =
        AdminServiceClient::with_interceptor(server.channel().await, Bearer(ADMIN_KEY.to_owned()));
    let client = server.client(TENANT_A).await;
    let link = start_link(&client, "user", None).await;
    // Far longer than a unit may take: without the limit the worker would wait for it.
    fake.state.lock().unwrap().fetch_latency = Duration::from_secs(3600);
    let id = deliver(
        &server,
        &fake.webhook_url(&link.id),
        json!({"id": "evt-slow", "type": "completed", "account": "acc-slow"}),
    )
    .await;
    let retried = eventually("the hanging attempt to be given up", DEADLINE, || async {
        let delivery = get_delivery(&admin, &id).await;
        delivery
            .last_error
            .as_deref()
            .is_some_and(|e| e == "timed out after 0.3s")
            .then_some(delivery)
    })
    .await;
    assert_eq!(
        retried.status(),
        v1::DeliveryStatus::Pending,
        "kept for a retry"
    );

    // The vendor answers again: the next attempt links the account.
    fake.state.lock().unwrap().fetch_latency = Duration::ZERO;
    wait_for_delivery(&admin, &id, v1::DeliveryStatus::Done).await;
    wait_for_state(&client, &link.id, v1::LinkState::Active).await;
    server.stop().await;
}

#[tokio::test]
async fn a_delivery_that_panics_the_provider_is_dead_lettered_and_a_thousand_others_are_processed()
{
    const LINKS: usize = 10;
    const OTHERS: usize = 1000;
    let (server, fake, admin) = server().await;
    let clients = [server.client(TENANT_A).await, server.client(TENANT_B).await];
    let mut urls = Vec::new();
    for i in 0..LINKS {
        let client = &clients[i % 2];
        let link = start_link(client, &format!("user-{i}"), None).await;
        deliver(
            &server,
            &fake.webhook_url(&link.id),
            json!({"id": format!("evt-complete-{i}"), "type": "completed", "account": format!("acc-{i}")}),
        )
        .await;
        wait_for_state(client, &link.id, v1::LinkState::Active).await;
        urls.push(fake.webhook_url(&link.id));
    }
    let poisoned = start_link(&clients[0], "poisoned-user", None).await;
    fake.state
        .lock()
        .unwrap()
        .panic_parsing
        .insert("acc-poison".into());

    // The poisoned delivery arrives in the middle of the others and is worked on among them.
    let bodies = (0..OTHERS).map(|n| {
        let i = n % LINKS;
        (
            urls[i].clone(),
            json!({"id": format!("evt-{n}"), "type": "changed", "account": format!("acc-{i}")}),
        )
    });
    let (first, rest): (Vec<_>, Vec<_>) = bodies.enumerate().partition(|(n, _)| *n < OTHERS / 2);
    let post_all = |batch: Vec<(usize, (String, serde_json::Value))>| {
        let server = &server;
        futures::stream::iter(batch)
            .map(move |(_, (url, body))| async move { deliver(server, &url, body).await })
            .buffer_unordered(32)
            .collect::<Vec<String>>()
    };
    let mut others = post_all(first).await;
    let poison = deliver(
        &server,
        &fake.webhook_url(&poisoned.id),
        json!({"id": "evt-poison", "type": "changed", "account": "acc-poison"}),
    )
    .await;
    others.extend(post_all(rest).await);
    assert_eq!(others.len(), OTHERS);

    let dead = wait_for_delivery(&admin, &poison, v1::DeliveryStatus::Dead).await;
    assert_eq!(
        dead.attempts, 4,
        "retried up to the test worker's max_attempts"
    );
    let error = dead.last_error.unwrap_or_default();
    assert!(
        error.starts_with(
            "panicked: fake provider cannot parse the delivery for account acc-poison"
        ),
        "{error}"
    );

    eventually(
        "every delivery to be settled",
        Duration::from_secs(180),
        || async {
            deliveries_with(&admin, v1::DeliveryStatus::Pending)
                .await
                .is_empty()
                .then_some(())
        },
    )
    .await;
    let done: std::collections::BTreeSet<String> =
        deliveries_with(&admin, v1::DeliveryStatus::Done)
            .await
            .into_iter()
            .map(|d| d.id)
            .collect();
    let missing = others.iter().filter(|id| !done.contains(*id)).count();
    assert_eq!(missing, 0, "every other delivery was processed");
    assert_eq!(done.len(), OTHERS + LINKS, "the completions and the others");
    let dead: Vec<String> = deliveries_with(&admin, v1::DeliveryStatus::Dead)
        .await
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(dead, [poison]);
    assert_eq!(health_of(&server, "").await, SERVING);
    server.stop().await;
}

/// Log lines written while the guard lives, on this thread: the test runtime runs the server's
/// tasks here too.
#[derive(Clone, Default)]
struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl CapturedLogs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for CapturedLogs {
    type Writer = CapturedLogs;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test]
async fn a_required_task_that_dies_is_restarted_and_health_is_not_serving_meanwhile() {
    let logs = CapturedLogs::default();
    let _logging = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_writer(logs.clone())
            .with_ansi(false)
            .finish(),
    );
    let (mut server, fake, _admin) = server().await;
    let mut health = HealthClient::new(server.channel().await)
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health Watch")
        .into_inner();
    assert_eq!(next_status(&mut health).await, SERVING);

    // A required task under the service's own supervisor: its first run dies when told to,
    // the runs after it work until shutdown.
    let runs = Arc::new(AtomicU32::new(0));
    let die = Arc::new(tokio::sync::Notify::new());
    let (counted, trigger) = (runs.clone(), die.clone());
    server.app.supervise("test task", move |mut shutdown| {
        let run = counted.fetch_add(1, Ordering::SeqCst) + 1;
        let trigger = trigger.clone();
        async move {
            if run == 1 {
                trigger.notified().await;
                panic!("injected failure of the test task");
            }
            let _ = shutdown.wait_for(|stop| *stop).await;
        }
    });
    die.notify_one();

    assert_eq!(next_status(&mut health).await, NOT_SERVING);
    let (status, body) = readyz(&server).await;
    assert_eq!(status, 503);
    assert_eq!(body, "required task down: test task");
    assert_eq!(
        health_of(&server, "coverwatch.v1.MonitoringService").await,
        NOT_SERVING
    );

    // Restarted after its backoff: serving again, with no second death.
    assert_eq!(next_status(&mut health).await, SERVING);
    assert_eq!(readyz(&server).await, (200, "ready".to_owned()));
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    let logged = logs.text();
    let stopped = logged
        .lines()
        .find(|line| line.contains("required background task stopped"))
        .unwrap_or_else(|| panic!("the death is logged:\n{logged}"));
    assert!(stopped.contains("ERROR"), "{stopped}");
    assert!(stopped.contains("test task"), "{stopped}");
    assert!(
        stopped.contains("panicked: injected failure of the test task"),
        "{stopped}"
    );
    assert!(
        logged.contains("required background task restarted"),
        "{logged}"
    );

    // The service's own work went on under supervision all along.
    let client = server.client(TENANT_A).await;
    let link = start_link(&client, "user", None).await;
    deliver(
        &server,
        &fake.webhook_url(&link.id),
        json!({"id": "evt-after", "type": "completed", "account": "acc-after"}),
    )
    .await;
    wait_for_state(&client, &link.id, v1::LinkState::Active).await;
    server.stop().await;
}
