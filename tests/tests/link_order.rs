//! One link's deliveries are worked one at a time, in the order they were received, even when
//! they arrive at a URL shared by every link and two replicas take work side by side.

use std::sync::Arc;
use std::time::Duration;

use coverwatch_engine::ProviderRegistry;
use coverwatch_tests::fake_provider::FakeProvider;
use coverwatch_tests::{TENANT_A, TestServer, flows, test_config, v1};

/// A replica whose vendor is `fake` (shared between replicas, so it sees every call).
async fn replica(config: coverwatch::Config, fake: &FakeProvider) -> TestServer {
    let providers = ProviderRegistry::new().register(Arc::new(fake.clone()));
    TestServer::start(config, Some(providers)).await
}

/// Canopy-shaped deliveries all arrive at one URL, so only what they carry names their link.
/// Two replicas taking them side by side must still work one link's deliveries one at a time,
/// in the order they were received.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_links_deliveries_at_a_shared_url_are_worked_in_order_across_replicas() {
    let config = test_config().await;
    // One double behind both replicas, so it sees every fetch either makes.
    let fake = FakeProvider::team_wide();
    let one = replica(config.clone(), &fake).await;
    let two = replica(config, &fake).await;

    let mut client = one.client(TENANT_A).await;
    let link = flows::start_link(&client, v1::Provider::Canopy, "user-order", None, None)
        .await
        .link
        .unwrap();
    client
        .complete_link(v1::CompleteLinkRequest {
            link_id: link.id.clone(),
            auth_code: "code-acc-order".into(),
        })
        .await
        .expect("CompleteLink");
    flows::wait_for_state(&client, &link.id, v1::LinkState::Active).await;
    {
        let mut state = fake.state.lock().unwrap();
        state.fetch_latency = Duration::from_millis(250);
        state.max_fetches_in_flight = 0;
    }

    let ids: Vec<String> = (0..6).map(|i| format!("change-{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        let replica = if i % 2 == 0 { &one } else { &two };
        let status = replica
            .http
            .post(replica.http_url("/webhooks/canopy"))
            .json(&serde_json::json!({"id": id, "type": "changed", "account": "acc-order"}))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200);
    }
    let refreshed =
        flows::wait_for_events(&client, &link.id, v1::EventKind::DataRefreshed, ids.len()).await;
    assert_eq!(
        fake.state.lock().unwrap().max_fetches_in_flight,
        1,
        "never two deliveries of the link at once, whichever replica took them"
    );
    let worked: Vec<String> = refreshed
        .iter()
        .filter(|e| e.kind() == v1::EventKind::DataRefreshed)
        .filter_map(|e| match &e.provider_detail {
            Some(v1::event::ProviderDetail::Axle(detail)) => detail.event_id.clone(),
            _ => None,
        })
        .collect();
    assert_eq!(worked, ids, "in the order they were received");
    one.stop().await;
    two.stop().await;
}
