//! Group-committed webhook ingest end to end, over HTTP against the real server on a real
//! database: a concurrent burst with copies is acknowledged delivery by delivery, each `200`
//! only once its row is readable by another connection (and still there after the server is
//! gone), exactly the distinct deliveries are stored and each becomes one event; a full ingest
//! queue is answered `503` with `Retry-After` and stores nothing; a database that is gone is
//! answered `503` and stores nothing.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use coverwatch_core::ProviderId;
use coverwatch_core::ids::DeliveryId;
use coverwatch_engine::ProviderRegistry;
use coverwatch_store::{ConnectOptions, Keyring, Store};
use coverwatch_tests::fake_provider::FakeProvider;
use coverwatch_tests::{Client, TENANT_A, TestServer, eventually, test_config, v1};
use futures::StreamExt;

const DEADLINE: Duration = Duration::from_secs(60);

/// A second connection to the server's database, with its key, to read what it committed.
async fn reader(config: &coverwatch::config::Config) -> Store {
    let keys: Vec<(String, String)> = config
        .encryption_keys
        .iter()
        .map(|k| (k.id.clone(), k.key.clone()))
        .collect();
    Store::connect(
        &ConnectOptions::new(config.database_url.clone()),
        Keyring::from_base64(&keys).unwrap(),
    )
    .await
    .expect("a second connection to the test database")
}

async fn start_link(client: &mut Client, user: &str) -> v1::Link {
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

async fn event_count(client: &mut Client) -> usize {
    let mut cursor = 0;
    let mut count = 0;
    loop {
        let page = client
            .list_events(v1::ListEventsRequest {
                after_cursor: cursor,
                filter: None,
                page_size: 1000,
                consumer: None,
            })
            .await
            .expect("ListEvents")
            .into_inner();
        if page.events.is_empty() {
            return count;
        }
        count += page.events.len();
        cursor = page.next_cursor;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_with_copies_is_acknowledged_only_once_durable_and_stored_exactly_once() {
    const LINKS: usize = 8;
    const DISTINCT: usize = 400;
    let fake = FakeProvider::default();
    let registry = ProviderRegistry::new().register(Arc::new(fake.clone()));
    let config = test_config().await;
    let database_url = config.database_url.clone();
    let reader = Arc::new(reader(&config).await);
    let server = TestServer::start(config, Some(registry)).await;
    let mut client = server.client(TENANT_A).await;
    let mut urls = Vec::new();
    for i in 0..LINKS {
        let link = start_link(&mut client, &format!("burst-{i}")).await;
        urls.push(fake.webhook_url(&link.id));
    }
    let events_before = event_count(&mut client).await;

    // Every delivery once; a quarter of them again right behind the first copy (so both
    // copies are often in one group commit), and a tenth of them again much later.
    let mut order: Vec<usize> = Vec::new();
    for n in 0..DISTINCT {
        order.push(n);
        if n % 4 == 0 {
            order.push(n);
        }
        if n % 10 == 0 && n >= 100 {
            order.push(n - 100);
        }
    }
    let copies = order.len() - DISTINCT;
    let http = server.http.clone();
    let answers: Vec<(usize, String, Option<DeliveryId>)> = futures::stream::iter(order)
        .map(|n| {
            let http = http.clone();
            let reader = reader.clone();
            let url = urls[n % LINKS].clone();
            async move {
                let response = http
                    .post(&url)
                    .json(&serde_json::json!({"id": format!("evt-{n}"), "type": "burst.ping"}))
                    .send()
                    .await
                    .expect("POST");
                assert_eq!(response.status(), 200, "delivery {n}");
                let body: serde_json::Value = response.json().await.unwrap();
                let status = body["status"].as_str().unwrap().to_owned();
                let id = body["delivery_id"]
                    .as_str()
                    .map(|id| id.parse::<DeliveryId>().unwrap());
                if let Some(id) = &id {
                    // Acknowledged, so committed: another connection reads it at once.
                    let record = reader.get_delivery(id).await.unwrap();
                    let record = record.unwrap_or_else(|| {
                        panic!("delivery {n} was acknowledged before its row was readable")
                    });
                    assert_eq!(record.dedupe_key, format!("id:evt-{n}"));
                }
                (n, status, id)
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;

    let mut stored: HashMap<usize, DeliveryId> = HashMap::new();
    let mut duplicates = 0;
    for (n, status, id) in answers {
        match (status.as_str(), id) {
            ("stored", Some(id)) => {
                assert!(stored.insert(n, id).is_none(), "delivery {n} stored twice")
            }
            ("duplicate", None) => duplicates += 1,
            other => panic!("delivery {n}: unexpected answer {other:?}"),
        }
    }
    assert_eq!(stored.len(), DISTINCT, "each distinct delivery stored once");
    assert_eq!(duplicates, copies, "every copy answered as a duplicate");

    // Each stored delivery becomes exactly one event (the fake maps an unknown type to one).
    eventually("every delivery processed", DEADLINE, || {
        let mut client = client.clone();
        async move { (event_count(&mut client).await >= events_before + DISTINCT).then_some(()) }
    })
    .await;
    assert_eq!(event_count(&mut client).await, events_before + DISTINCT);
    server.stop().await;

    // The server is gone; what it acknowledged is in the database.
    let ids: HashSet<DeliveryId> = stored.values().copied().collect();
    for id in &ids {
        assert!(reader.get_delivery(id).await.unwrap().is_some());
    }
    assert_eq!(
        reader
            .count_deliveries(ProviderId::from_static("axle"))
            .await
            .unwrap(),
        DISTINCT as u64
    );
    Arc::try_unwrap(reader).unwrap().close().await;
    coverwatch_store::testing::drop_database(&database_url).await;
}

/// Holds the database's write lock on the inbox from another connection, so that the ingest
/// writer blocks on its commit the way it does behind a slow disk.
enum InboxLock {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

impl InboxLock {
    async fn take(url: &str) -> Self {
        use sqlx::Connection as _;
        if url.starts_with("sqlite:") {
            let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
            sqlx::query("BEGIN IMMEDIATE")
                .execute(&mut conn)
                .await
                .unwrap();
            InboxLock::Sqlite(conn)
        } else {
            let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
            sqlx::query("BEGIN").execute(&mut conn).await.unwrap();
            sqlx::query("LOCK TABLE inbox IN EXCLUSIVE MODE")
                .execute(&mut conn)
                .await
                .unwrap();
            InboxLock::Postgres(conn)
        }
    }

    async fn release(self) {
        use sqlx::Connection as _;
        match self {
            InboxLock::Sqlite(mut conn) => {
                sqlx::query("ROLLBACK").execute(&mut conn).await.unwrap();
                conn.close().await.unwrap();
            }
            InboxLock::Postgres(mut conn) => {
                sqlx::query("ROLLBACK").execute(&mut conn).await.unwrap();
                conn.close().await.unwrap();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_ingest_queue_is_answered_503_with_retry_after_and_stores_nothing() {
    let fake = FakeProvider::default();
    let registry = ProviderRegistry::new().register(Arc::new(fake.clone()));
    let mut config = test_config().await;
    config.ingest.max_batch = 1;
    config.ingest.queue_capacity = 1;
    config.ingest.writers = 2;
    let database_url = config.database_url.clone();
    // SQLite has one writer whatever the setting.
    let writers = if database_url.starts_with("postgres") {
        2
    } else {
        1
    };
    let reader = reader(&config).await;
    let server = TestServer::start(config, Some(registry)).await;
    let mut client = server.client(TENANT_A).await;
    let link = start_link(&mut client, "queue").await;
    let url = fake.webhook_url(&link.id);

    let lock = InboxLock::take(&database_url).await;
    // One delivery blocks in each writer's commit and one waits in the queue; the rest must be
    // refused at once instead of piling up.
    const SENT: usize = 6;
    let holding = writers + 1;
    let posts: Vec<_> = (0..SENT)
        .map(|n| {
            let http = server.http.clone();
            let url = url.clone();
            tokio::spawn(async move {
                let response = http
                    .post(&url)
                    .json(&serde_json::json!({"id": format!("q-{n}"), "type": "queue.ping"}))
                    .send()
                    .await
                    .expect("POST");
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap().to_owned());
                let status = response.status().as_u16();
                let body: serde_json::Value = response.json().await.unwrap();
                (status, retry_after, body)
            })
        })
        .collect();
    eventually(
        "all but the held deliveries answered while the inbox is locked",
        DEADLINE,
        || {
            let finished = posts.iter().filter(|p| p.is_finished()).count();
            async move { (finished >= SENT - holding).then_some(()) }
        },
    )
    .await;
    let (done, held): (Vec<_>, Vec<_>) = posts.into_iter().partition(|p| p.is_finished());
    assert_eq!(held.len(), holding, "one in each writer, one in the queue");
    for post in done {
        let (status, retry_after, body) = post.await.unwrap();
        assert_eq!(status, 503, "{body}");
        assert_eq!(retry_after.as_deref(), Some("1"));
        assert_eq!(body["error"], "busy; retry shortly");
    }
    lock.release().await;
    for post in held {
        let (status, _, body) = post.await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["status"], "stored");
    }
    assert_eq!(
        reader
            .count_deliveries(ProviderId::from_static("axle"))
            .await
            .unwrap(),
        holding as u64,
        "only the acknowledged deliveries are stored"
    );
    server.stop().await;
    reader.close().await;
    coverwatch_store::testing::drop_database(&database_url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_the_database_gone_a_delivery_is_answered_503_and_nothing_is_stored() {
    // Deliveries on the team-wide URL name no link by path: they go straight to the writer.
    let fake = FakeProvider::team_wide();
    let registry = ProviderRegistry::new().register(Arc::new(fake.clone()));
    let config = test_config().await;
    let database_url = config.database_url.clone();
    let reader = reader(&config).await;
    let server = TestServer::start(config, Some(registry)).await;
    let url = server.http_url("/webhooks/canopy");
    let post = |n: usize| {
        server
            .http
            .post(&url)
            .json(&serde_json::json!({"id": format!("gone-{n}"), "type": "gone.ping"}))
            .send()
    };
    assert_eq!(post(0).await.unwrap().status(), 200);
    // Closing the server's pool: every statement now fails the way it does when the database
    // cannot be reached.
    server.app.engine.store().clone().close().await;
    let answers = futures::future::join_all((1..=10).map(post)).await;
    for answer in answers {
        let answer = answer.unwrap();
        assert_eq!(answer.status(), 503);
        let body: serde_json::Value = answer.json().await.unwrap();
        assert_eq!(body["error"], "temporarily unavailable; retry");
    }
    assert_eq!(
        reader
            .count_deliveries(ProviderId::from_static("canopy"))
            .await
            .unwrap(),
        1,
        "only the delivery acknowledged before is stored"
    );
    server.stop().await;
    reader.close().await;
    coverwatch_store::testing::drop_database(&database_url).await;
}
