//! Named durable consumers: the server keeps what a consumer acknowledged, so it resumes by
//! name — after a restart, on a new connection — missing nothing and repeating nothing.

use std::sync::Arc;
use std::time::Duration;

use coverwatch_engine::ProviderRegistry;
use coverwatch_tests::fake_provider::FakeProvider;
use coverwatch_tests::{Client, TENANT_A, TENANT_B, TestServer, take_events, test_config, v1};
use tonic::Code;

const DEADLINE: Duration = Duration::from_secs(15);

async fn server() -> TestServer {
    let registry = ProviderRegistry::new().register(Arc::new(FakeProvider::default()));
    TestServer::start(test_config().await, Some(registry)).await
}

async fn start_links(client: &mut Client, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let link = client
            .start_link(v1::StartLinkRequest {
                provider: v1::Provider::Axle as i32,
                user_id: format!("user-{i}"),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .link
            .unwrap();
        ids.push(link.id);
    }
    ids
}

async fn watch_as(client: &mut Client, consumer: &str) -> tonic::Streaming<v1::Event> {
    client
        .watch_events(v1::WatchEventsRequest {
            after_cursor: 0,
            filter: None,
            consumer: Some(consumer.into()),
        })
        .await
        .unwrap()
        .into_inner()
}

async fn ack(client: &mut Client, consumer: &str, cursor: i64) -> Result<i64, tonic::Status> {
    client
        .ack_events(v1::AckEventsRequest {
            consumer: consumer.into(),
            cursor,
        })
        .await
        .map(|r| r.into_inner().cursor)
}

#[tokio::test]
async fn a_consumer_resumes_after_what_it_acknowledged() {
    let server = server().await;
    let mut client = server.client(TENANT_A).await;
    let links = start_links(&mut client, 4).await;

    let mut first = watch_as(&mut client, "billing-sync").await;
    let seen = take_events(&mut first, 2, DEADLINE).await;
    assert_eq!(
        ack(&mut client, "billing-sync", seen[1].cursor)
            .await
            .unwrap(),
        seen[1].cursor
    );
    drop(first);

    // A retried, older ack does not rewind.
    assert_eq!(
        ack(&mut client, "billing-sync", seen[0].cursor)
            .await
            .unwrap(),
        seen[1].cursor
    );

    let mut resumed = watch_as(&mut client, "billing-sync").await;
    let rest = take_events(&mut resumed, 2, DEADLINE).await;
    assert_eq!(
        rest.iter().map(|e| e.link_id.as_str()).collect::<Vec<_>>(),
        [links[2].as_str(), links[3].as_str()],
        "exactly the events after the acknowledged one"
    );

    // ListEvents resumes the same way; another consumer starts from the beginning.
    let page = client
        .list_events(v1::ListEventsRequest {
            consumer: Some("billing-sync".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.events.len(), 2);
    let fresh = client
        .list_events(v1::ListEventsRequest {
            consumer: Some("audit".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fresh.events.len(), 4);

    // Consumers are per tenant: B's consumer of the same name is its own.
    let mut b = server.client(TENANT_B).await;
    let b_page = b
        .list_events(v1::ListEventsRequest {
            consumer: Some("billing-sync".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(b_page.events.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn bad_acks_and_names_are_refused_by_field() {
    let server = server().await;
    let mut client = server.client(TENANT_A).await;
    start_links(&mut client, 1).await;
    for (consumer, cursor, field) in [
        ("", 0, "consumer"),
        ("Has Space", 0, "consumer"),
        ("ok", -1, "cursor"),
        ("ok", 1_000_000, "cursor"),
    ] {
        let err = ack(&mut client, consumer, cursor).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{consumer:?} {cursor}");
        assert!(err.message().starts_with(field), "{}", err.message());
    }
    let err = client
        .list_events(v1::ListEventsRequest {
            after_cursor: 5,
            consumer: Some("ok".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().starts_with("after_cursor"),
        "{}",
        err.message()
    );
    server.stop().await;
}
