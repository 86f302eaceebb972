//! A worker keeps the lease on what it is working on while a slow vendor holds it up, so two
//! replicas never process one delivery twice.

use std::sync::Arc;
use std::time::Duration;

use coverwatch::Overrides;
use coverwatch_engine::ProviderRegistry;
use coverwatch_tests::fake_provider::FakeProvider;
use coverwatch_tests::{TENANT_A, TestServer, fast_worker, flows, test_config, v1};

async fn replica(config: coverwatch::Config, fake: &FakeProvider) -> TestServer {
    let mut worker = fast_worker();
    // A lease far shorter than the vendor's answer: only renewal keeps it.
    worker.lease = Duration::from_millis(300);
    TestServer::start_with(
        config,
        Overrides {
            providers: Some(ProviderRegistry::new().register(Arc::new(fake.clone()))),
            worker: Some(worker),
            plugins: None,
            stream_poll: None,
            sweep: None,
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_delivery_is_not_taken_over_by_another_replica() {
    let config = test_config().await;
    let (fake_one, fake_two) = (FakeProvider::default(), FakeProvider::default());
    for fake in [&fake_one, &fake_two] {
        fake.state.lock().unwrap().fetch_latency = Duration::from_millis(1500);
    }
    let one = replica(config.clone(), &fake_one).await;
    let two = replica(config, &fake_two).await;

    let client = one.client(TENANT_A).await;
    let link = flows::start_link(&client, v1::Provider::Axle, "user-slow", None, None)
        .await
        .link
        .unwrap();
    let status = one
        .http
        .post(fake_one.webhook_url(&link.id))
        .json(&serde_json::json!({"id": "slow-1", "type": "completed"}))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);

    flows::wait_for_state(&client, &link.id, v1::LinkState::Active).await;
    let fetches = fake_one.state.lock().unwrap().fetches + fake_two.state.lock().unwrap().fetches;
    assert_eq!(fetches, 1, "one replica worked on the delivery, once");
    let events = flows::link_events(&client, &link.id).await;
    assert_eq!(
        events
            .iter()
            .filter(|e| e.kind() == v1::EventKind::LinkCompleted)
            .count(),
        1
    );
    one.stop().await;
    two.stop().await;
}
