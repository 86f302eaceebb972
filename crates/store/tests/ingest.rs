//! Group-committed ingest against a real database (SQLite by default, PostgreSQL when
//! `COVERWATCH_TEST_DATABASE_URL` is set): concurrent deliveries share commits, duplicates stay
//! exact inside a batch and across batches, each answer comes only once its row is readable by
//! another connection, one bad row fails alone, and a database that is gone stores nothing.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::Utc;
use coverwatch_core::ProviderId;
use coverwatch_core::ids::DeliveryId;
use coverwatch_store::{
    ConnectOptions, DeliveryFilter, GroupCommitConfig, Ingested, Keyring, NewDelivery, Store,
    StoreError, testing,
};

/// A migrated store on a fresh database, a second connection to the same database (to read
/// what the first committed), and the database's URL so that the test can drop it.
struct Db {
    store: Store,
    reader: Store,
    url: String,
}

impl Db {
    async fn new() -> Self {
        let url = testing::fresh_database_url().await;
        // Both connections hold the same key: the reader opens what the writer sealed.
        let key = Keyring::generate_key_base64();
        let keyring = || Keyring::from_base64(&[("test".to_owned(), key.clone())]).unwrap();
        let store = Store::connect(&ConnectOptions::new(url.clone()), keyring())
            .await
            .expect("connect");
        store.migrate().await.expect("migrate");
        let reader = Store::connect(&ConnectOptions::new(url.clone()), keyring())
            .await
            .expect("second connection");
        Self { store, reader, url }
    }

    async fn drop(self) {
        self.store.close().await;
        self.reader.close().await;
        testing::drop_database(&self.url).await;
    }
}

fn delivery(key: &str) -> NewDelivery {
    NewDelivery {
        provider: ProviderId::from_static("canopy"),
        dedupe_key: format!("id:{key}"),
        link: None,
        path: String::new(),
        headers: vec![("content-type".into(), "application/json".into())],
        body: format!(r#"{{"event_id":"{key}"}}"#).into_bytes(),
        received_at: Utc::now(),
        trace_context: None,
        connection_id: None,
    }
}

async fn stored_body(reader: &Store, id: &DeliveryId) -> Option<Vec<u8>> {
    reader
        .get_delivery(id)
        .await
        .expect("read back")
        .and_then(|record| record.body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_deliveries_are_group_committed_exactly_once_each_and_readable_when_answered() {
    let db = Db::new().await;
    let queue = db.store.ingest_queue(GroupCommitConfig::default());
    const DISTINCT: usize = 150;
    // Every key once, a third of them again (often in the same batch as the first copy) and
    // a few a third time.
    let mut keys: Vec<usize> = (0..DISTINCT).collect();
    keys.extend((0..DISTINCT).step_by(3));
    keys.extend((0..DISTINCT).step_by(10));
    let reader = Arc::new(db.reader.clone());
    let tasks: Vec<_> = keys
        .iter()
        .map(|&key| {
            let queue = queue.clone();
            let reader = reader.clone();
            tokio::spawn(async move {
                let answer = queue
                    .ingest(delivery(&format!("k{key}")))
                    .await
                    .expect("stored");
                // Answered, so committed: another connection reads it at once.
                if let Ingested::Stored(id) = answer {
                    assert_eq!(
                        stored_body(&reader, &id).await.as_deref(),
                        Some(format!(r#"{{"event_id":"k{key}"}}"#).as_bytes()),
                        "delivery k{key} answered stored but not readable"
                    );
                }
                (key, answer)
            })
        })
        .collect();
    let mut stored: HashMap<usize, DeliveryId> = HashMap::new();
    let mut duplicates = 0;
    for task in tasks {
        let (key, answer) = task.await.expect("no panic");
        match answer {
            Ingested::Stored(id) => {
                assert!(stored.insert(key, id).is_none(), "k{key} was stored twice");
            }
            Ingested::Duplicate => duplicates += 1,
        }
    }
    assert_eq!(
        stored.len(),
        DISTINCT,
        "every distinct delivery stored once"
    );
    assert_eq!(duplicates, keys.len() - DISTINCT);
    assert_eq!(
        db.reader
            .count_deliveries(ProviderId::from_static("canopy"))
            .await
            .unwrap(),
        DISTINCT as u64
    );
    // Copies arriving after the first is committed (a later batch) are duplicates too.
    for key in [0, 7, DISTINCT - 1] {
        assert_eq!(
            queue.ingest(delivery(&format!("k{key}"))).await.unwrap(),
            Ingested::Duplicate
        );
    }
    db.drop().await;
}

#[tokio::test]
async fn copies_inside_one_batch_and_across_batches_are_one_row() {
    let db = Db::new().await;
    let prepare = |key: &str| db.store.prepare_delivery(delivery(key)).unwrap();
    let first = db
        .store
        .ingest_prepared_batch(vec![prepare("a"), prepare("b"), prepare("a"), prepare("c")])
        .await;
    let first: Vec<Ingested> = first.into_iter().map(|r| r.unwrap()).collect();
    assert!(matches!(first[0], Ingested::Stored(_)), "{first:?}");
    assert!(matches!(first[1], Ingested::Stored(_)), "{first:?}");
    assert_eq!(
        first[2],
        Ingested::Duplicate,
        "the second copy in one batch"
    );
    assert!(matches!(first[3], Ingested::Stored(_)), "{first:?}");

    let second = db
        .store
        .ingest_prepared_batch(vec![prepare("c"), prepare("d"), prepare("a")])
        .await;
    let second: Vec<Ingested> = second.into_iter().map(|r| r.unwrap()).collect();
    assert_eq!(second[0], Ingested::Duplicate);
    assert!(matches!(second[1], Ingested::Stored(_)), "{second:?}");
    assert_eq!(second[2], Ingested::Duplicate);
    assert_eq!(
        db.reader
            .count_deliveries(ProviderId::from_static("canopy"))
            .await
            .unwrap(),
        4
    );
    // Rows keep arrival order: a worker processes one link's deliveries in the order received.
    let ids: Vec<DeliveryId> = [first[0], first[1], first[3], second[1]]
        .iter()
        .map(|i| match i {
            Ingested::Stored(id) => *id,
            Ingested::Duplicate => unreachable!(),
        })
        .collect();
    let claimed = db
        .store
        .claim_deliveries("w", Utc::now() + chrono::Duration::seconds(30), 10)
        .await
        .unwrap();
    assert_eq!(claimed.iter().map(|c| c.id).collect::<Vec<_>>(), ids);
    db.drop().await;
}

/// Make the database refuse deliveries whose dedupe key is `id:poison`, the way a constraint
/// refuses a bad row.
async fn poison(db: &Db) {
    use sea_orm::ConnectionTrait as _;
    let sql = if db.url.starts_with("sqlite:") {
        "CREATE TRIGGER poison BEFORE INSERT ON inbox WHEN NEW.dedupe_key = 'id:poison' \
         BEGIN SELECT RAISE(ABORT, 'poisoned row'); END"
    } else {
        "ALTER TABLE inbox ADD CONSTRAINT poison CHECK (dedupe_key <> 'id:poison')"
    };
    let conn = sea_orm::Database::connect(db.url.as_str()).await.unwrap();
    conn.execute_unprepared(sql).await.unwrap();
    conn.close().await.unwrap();
}

#[tokio::test]
async fn one_bad_row_fails_alone_and_the_rest_of_its_batch_is_stored() {
    let db = Db::new().await;
    poison(&db).await;
    let prepare = |key: &str| db.store.prepare_delivery(delivery(key)).unwrap();
    let answers = db
        .store
        .ingest_prepared_batch(vec![
            prepare("good-1"),
            prepare("poison"),
            prepare("good-2"),
            prepare("good-1"),
        ])
        .await;
    assert_eq!(answers.len(), 4);
    let mut answers = answers.into_iter();
    let good_1 = answers.next().unwrap().expect("good-1 stored");
    match answers.next().unwrap() {
        Err(StoreError::Database(message)) => {
            assert!(message.contains("poison"), "{message}")
        }
        other => panic!("the poisoned row must fail with its own error, got {other:?}"),
    }
    let good_2 = answers.next().unwrap().expect("good-2 stored");
    assert_eq!(answers.next().unwrap().unwrap(), Ingested::Duplicate);
    for answer in [good_1, good_2] {
        let Ingested::Stored(id) = answer else {
            panic!("expected stored, got {answer:?}")
        };
        assert!(stored_body(&db.reader, &id).await.is_some());
    }
    assert_eq!(
        db.reader
            .count_deliveries(ProviderId::from_static("canopy"))
            .await
            .unwrap(),
        2
    );

    // Through the queue too: the poisoned delivery's caller alone gets the error.
    let queue = db.store.ingest_queue(GroupCommitConfig::default());
    let tasks: Vec<_> = ["good-3", "poison", "good-4"]
        .into_iter()
        .map(|key| {
            let queue = queue.clone();
            tokio::spawn(async move { (key, queue.ingest(delivery(key)).await) })
        })
        .collect();
    for task in tasks {
        let (key, answer) = task.await.unwrap();
        match (key, answer) {
            ("poison", Err(StoreError::Database(_))) => {}
            ("poison", other) => panic!("poison: {other:?}"),
            (key, Ok(Ingested::Stored(_))) => assert!(key.starts_with("good")),
            (key, other) => panic!("{key}: {other:?}"),
        }
    }
    assert_eq!(
        db.reader
            .count_deliveries(ProviderId::from_static("canopy"))
            .await
            .unwrap(),
        4
    );
    db.drop().await;
}

#[tokio::test]
async fn with_the_database_gone_every_waiting_delivery_is_unavailable_and_nothing_is_stored() {
    let db = Db::new().await;
    let queue = db.store.ingest_queue(GroupCommitConfig::default());
    queue.ingest(delivery("before")).await.unwrap();
    // Closing the pool shared by the store and its writer: every statement now fails the way
    // it does when the database cannot be reached.
    db.store.clone().close().await;
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let queue = queue.clone();
            tokio::spawn(async move { queue.ingest(delivery(&format!("during-{i}"))).await })
        })
        .collect();
    for task in tasks {
        match task.await.unwrap() {
            Err(e) => assert!(e.is_unavailable(), "{e}"),
            Ok(answer) => panic!("stored while the database is gone: {answer:?}"),
        }
    }
    let keys: HashSet<String> = db
        .reader
        .list_deliveries(&DeliveryFilter {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .deliveries
        .into_iter()
        .map(|d| d.dedupe_key)
        .collect();
    assert_eq!(keys, HashSet::from(["id:before".to_owned()]));
    db.drop().await;
}

/// Several writers commit side by side (PostgreSQL), and what keeps a delivery from being
/// stored twice is the database's unique key, not the writer: two copies of one delivery in two
/// writers' transactions at the same moment are one row, and the second is answered duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn copies_of_one_delivery_in_different_writers_at_once_are_one_row_and_one_duplicate() {
    use sea_orm::{ConnectionTrait as _, TransactionTrait as _};
    let db = Db::new().await;
    let queue = db.store.ingest_queue(GroupCommitConfig {
        writers: 4,
        ..GroupCommitConfig::default()
    });
    if db.url.starts_with("postgres") {
        // An uncommitted row with the same key, on a connection of its own: each writer's
        // insert of that key waits on it, so both copies are seen in flight in two writers'
        // transactions at once before it is rolled back and the writers race for the key.
        let conn = sea_orm::Database::connect(db.url.as_str()).await.unwrap();
        let blocker = conn.begin().await.unwrap();
        blocker
            .execute_unprepared(
                "INSERT INTO inbox (id, provider, dedupe_key, path, headers, status, attempts, \
                 received_at, next_attempt_at) \
                 VALUES ('blocker', 'canopy', 'id:same', '', '[]', 'pending', 0, 0, 0)",
            )
            .await
            .unwrap();
        let waiting_writers = || async {
            let row = conn
                .query_one(sea_orm::Statement::from_string(
                    sea_orm::DatabaseBackend::Postgres,
                    "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() \
                     AND wait_event_type = 'Lock' AND query LIKE 'INSERT INTO \"inbox\"%'",
                ))
                .await
                .unwrap()
                .unwrap();
            row.try_get::<i64>("", "n").unwrap()
        };
        let mut copies = Vec::new();
        for expected in 1..=2 {
            let queue = queue.clone();
            copies.push(tokio::spawn(
                async move { queue.ingest(delivery("same")).await },
            ));
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            while waiting_writers().await < expected {
                assert!(
                    std::time::Instant::now() < deadline,
                    "copy {expected} is not waiting in a writer of its own"
                );
                tokio::task::yield_now().await;
            }
        }
        blocker.rollback().await.unwrap();
        let mut answers = Vec::new();
        for copy in copies {
            answers.push(copy.await.unwrap().expect("answered"));
        }
        let stored = answers
            .iter()
            .filter(|a| matches!(a, Ingested::Stored(_)))
            .count();
        assert_eq!(stored, 1, "{answers:?}");
        assert!(answers.contains(&Ingested::Duplicate), "{answers:?}");
        conn.close().await.unwrap();
    } else {
        queue.ingest(delivery("same")).await.unwrap();
    }

    // Many copies of a few deliveries all at once, spread over the writers as they come.
    const KEYS: usize = 8;
    const COPIES: usize = 16;
    let tasks: Vec<_> = (0..KEYS * COPIES)
        .map(|i| {
            let queue = queue.clone();
            tokio::spawn(async move {
                let key = i % KEYS;
                (key, queue.ingest(delivery(&format!("many-{key}"))).await)
            })
        })
        .collect();
    let mut stored = vec![0; KEYS];
    let mut duplicates = vec![0; KEYS];
    for task in tasks {
        match task.await.unwrap() {
            (key, Ok(Ingested::Stored(_))) => stored[key] += 1,
            (key, Ok(Ingested::Duplicate)) => duplicates[key] += 1,
            (key, Err(e)) => panic!("many-{key}: {e}"),
        }
    }
    assert_eq!(stored, vec![1; KEYS]);
    assert_eq!(duplicates, vec![COPIES - 1; KEYS]);
    assert_eq!(
        db.reader
            .count_deliveries(ProviderId::from_static("canopy"))
            .await
            .unwrap(),
        1 + KEYS as u64
    );
    db.drop().await;
}
