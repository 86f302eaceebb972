//! A batch transaction's events (SQLite by default, PostgreSQL when
//! `COVERWATCH_TEST_DATABASE_URL` is set): they are written when the batch commits, in the order
//! they were appended, only for the link changes committed into it (one left unfinished makes the batch refuse to
//! commit); and on PostgreSQL the batch
//! takes the cursor-order lock only then, so other writers append while it works, and cursor
//! order stays commit order.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use coverwatch_core::event::EventPayload;
use coverwatch_core::ids::DeliveryId;
use coverwatch_core::{EventId, LinkId, LinkState, ProviderId, TenantId};
use coverwatch_store::{
    ConnectOptions, DeliveryStatus, EventFilter, Ingested, NewDelivery, NewEvent, NewLink, Store,
    testing,
};

struct Db {
    store: Store,
    url: String,
}

impl Db {
    async fn new() -> Self {
        let url = testing::fresh_database_url().await;
        let store = Store::connect(&ConnectOptions::new(url.clone()), testing::keyring())
            .await
            .expect("connect");
        store.migrate().await.expect("migrate");
        Self { store, url }
    }

    async fn drop(self) {
        self.store.close().await;
        testing::drop_database(&self.url).await;
    }
}

fn tenant() -> TenantId {
    "batch".parse().unwrap()
}

async fn new_link(store: &Store, user: &str) -> LinkId {
    let id = LinkId::new();
    store
        .create_link(
            NewLink {
                id,
                tenant_id: tenant(),
                user_id: user.parse().unwrap(),
                provider: ProviderId::from_static("axle"),
                metadata: BTreeMap::new(),
                session_url: None,
                webhook_token_hash: Some(format!("hash-{id}")),
                session_proof_hash: Some(format!("proof-{id}")),
                replaces_link_id: None,
                requirement_set_id: None,
                created_at: Utc::now(),
                caller_trace: None,
                connection_id: None,
            },
            NewEvent::now(EventPayload::Exited { step: None }),
        )
        .await
        .expect("create link");
    id
}

fn completed() -> NewEvent {
    NewEvent::now(EventPayload::Completed {
        account_external_id: None,
        policy_external_ids: vec![],
    })
}

/// Every event of the tenant after `after`, as (cursor, id), in cursor order.
async fn log_after(store: &Store, after: i64) -> Vec<(i64, EventId)> {
    store
        .list_events(&tenant(), after, &EventFilter::default(), 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.cursor, e.id))
        .collect()
}

/// The link's state as stored now.
async fn state(store: &Store, link: LinkId) -> LinkState {
    store
        .get_link(&tenant(), &link)
        .await
        .unwrap()
        .unwrap()
        .link
        .state
}

#[tokio::test]
async fn a_batch_writes_the_events_of_its_link_changes_at_commit_in_order() {
    let db = Db::new().await;
    let store = &db.store;
    let links = [new_link(store, "one").await, new_link(store, "two").await];
    let start = log_after(store, 0).await.last().unwrap().0;

    let batch = store.begin_batch(&links).await.unwrap();
    let mut kept = Vec::new();
    {
        let mut tx = batch
            .begin_link_update(&tenant(), &links[0])
            .await
            .unwrap()
            .unwrap();
        kept.push(tx.append_event(completed()).await.unwrap().id);
        tx.set_state(LinkState::Active);
        kept.push(tx.append_event(completed()).await.unwrap().id);
        tx.commit().await.unwrap();
    }
    {
        let mut tx = batch
            .begin_link_update(&tenant(), &links[1])
            .await
            .unwrap()
            .unwrap();
        kept.push(tx.append_event(completed()).await.unwrap().id);
        tx.commit().await.unwrap();
    }
    assert!(
        batch
            .begin_link_update(&tenant(), &LinkId::new())
            .await
            .unwrap()
            .is_none(),
        "no such link"
    );
    assert!(
        !batch.is_poisoned(),
        "looking for a missing link changes nothing"
    );
    let written = batch.commit().await.unwrap().events;
    assert_eq!(written.iter().map(|e| e.id).collect::<Vec<_>>(), kept);
    let cursors: Vec<i64> = written.iter().map(|e| e.cursor).collect();
    assert!(
        cursors.windows(2).all(|w| w[0] < w[1]) && cursors[0] > start,
        "cursors in the order appended, after the log's end: {cursors:?}"
    );
    let logged = log_after(store, start).await;
    assert_eq!(
        logged,
        written.iter().map(|e| (e.cursor, e.id)).collect::<Vec<_>>(),
        "the log holds exactly the committed link changes' events, with the cursors answered"
    );
    assert_eq!(state(store, links[0]).await, LinkState::Active);
    db.drop().await;
}

/// A link change dropped unfinished (an error or a panic half way) leaves the batch's
/// transaction with half of its writes, and there is no savepoint to undo them alone: the batch
/// refuses to commit, and rolling it back leaves nothing of any of its changes.
#[tokio::test]
async fn a_batch_with_an_unfinished_link_change_refuses_to_commit_and_rolls_back_whole() {
    let db = Db::new().await;
    let store = &db.store;
    let links = [new_link(store, "one").await, new_link(store, "two").await];
    let start = log_after(store, 0).await.last().unwrap().0;
    let before = state(store, links[0]).await;
    assert_ne!(before, LinkState::Active);

    for finish in [true, false] {
        let batch = store.begin_batch(&links).await.unwrap();
        let mut tx = batch
            .begin_link_update(&tenant(), &links[0])
            .await
            .unwrap()
            .unwrap();
        tx.append_event(completed()).await.unwrap();
        tx.set_state(LinkState::Active);
        tx.commit().await.unwrap();
        let mut tx = batch
            .begin_link_update(&tenant(), &links[1])
            .await
            .unwrap()
            .unwrap();
        tx.append_event(completed()).await.unwrap();
        tx.set_state(LinkState::Active);
        drop(tx);
        assert!(batch.is_poisoned());
        let err = if finish {
            batch.commit().await.unwrap_err().to_string()
        } else {
            batch.settle().await.unwrap_err().to_string()
        };
        assert!(err.contains("did not finish"), "{err}");
    }
    assert!(log_after(store, start).await.is_empty(), "no event written");
    assert_eq!(
        state(store, links[0]).await,
        before,
        "the finished change undone too"
    );
    assert_eq!(state(store, links[1]).await, before);

    // And the batch run again without the unfinished change commits the rest.
    let batch = store.begin_batch(&links[..1]).await.unwrap();
    let mut tx = batch
        .begin_link_update(&tenant(), &links[0])
        .await
        .unwrap()
        .unwrap();
    let event = tx.append_event(completed()).await.unwrap().id;
    tx.set_state(LinkState::Active);
    tx.commit().await.unwrap();
    let written = batch.commit().await.unwrap().events;
    assert_eq!(
        written.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![event]
    );
    assert_eq!(state(store, links[0]).await, LinkState::Active);
    assert_eq!(state(store, links[1]).await, before);
    db.drop().await;
}

/// PostgreSQL: a batch that has done its work but not yet committed does not hold up another
/// link's transaction appending an event (the batch has not taken the cursor-order lock yet),
/// and the batch, committing after it, gets the higher cursors: a reader that has seen the
/// other event never misses the batch's.
#[tokio::test]
async fn a_batch_at_work_does_not_hold_up_other_appenders_and_commits_in_cursor_order() {
    let db = Db::new().await;
    if !db.url.starts_with("postgres") {
        // SQLite has one writer at a time: the other transaction waits for the batch anyway.
        db.drop().await;
        return;
    }
    let store = &db.store;
    let (batched, other) = (
        new_link(store, "batched").await,
        new_link(store, "other").await,
    );
    let start = log_after(store, 0).await.last().unwrap().0;

    let batch = store.begin_batch(&[batched]).await.unwrap();
    let mut tx = batch
        .begin_link_update(&tenant(), &batched)
        .await
        .unwrap()
        .unwrap();
    let in_batch = tx.append_event(completed()).await.unwrap().id;
    tx.commit().await.unwrap();

    let alone = tokio::time::timeout(Duration::from_secs(20), async {
        let mut tx = store
            .begin_link_update(&tenant(), &other)
            .await
            .unwrap()
            .unwrap();
        let event = tx.append_event(completed()).await.unwrap();
        tx.commit().await.unwrap();
        event
    })
    .await
    .expect("another link's append is not held up by a batch at work");
    assert_eq!(
        log_after(store, start).await,
        vec![(alone.cursor, alone.id)]
    );

    let written = batch.commit().await.unwrap().events;
    assert_eq!(written.len(), 1);
    assert_eq!(written[0].id, in_batch);
    assert!(
        written[0].cursor > alone.cursor,
        "{written:?} after {alone:?}"
    );
    assert_eq!(
        log_after(store, alone.cursor).await,
        vec![(written[0].cursor, in_batch)]
    );
    db.drop().await;
}

/// A pending delivery of `link` (or of no link yet), stored and leased to `owner`.
async fn leased(store: &Store, key: &str, link: Option<LinkId>, owner: &str) -> DeliveryId {
    let stored = store
        .ingest_delivery(NewDelivery {
            provider: ProviderId::from_static("axle"),
            dedupe_key: format!("id:{key}"),
            link: link.map(|link| (tenant(), link)),
            path: "token".into(),
            headers: vec![],
            body: key.as_bytes().to_vec(),
            received_at: Utc::now(),
            trace_context: None,
            connection_id: None,
        })
        .await
        .unwrap();
    let Ingested::Stored(id) = stored else {
        panic!("{key} stored twice")
    };
    let claimed = store
        .claim_deliveries(owner, Utc::now() + chrono::Duration::seconds(60), 10)
        .await
        .unwrap();
    assert!(
        claimed.iter().any(|d| d.id == id),
        "{key} leased to {owner}"
    );
    id
}

/// Another worker takes over `id`, as after its lease ran out.
async fn take_over(store: &Store, id: DeliveryId) {
    store
        .renew_leases("w", &[id], Utc::now() - chrono::Duration::seconds(1))
        .await
        .unwrap();
    let claimed = store
        .claim_deliveries("thief", Utc::now() + chrono::Duration::seconds(60), 10)
        .await
        .unwrap();
    assert_eq!(claimed.iter().map(|d| d.id).collect::<Vec<_>>(), vec![id]);
}

async fn status(store: &Store, id: &DeliveryId) -> (DeliveryStatus, Option<String>) {
    let row = store.get_delivery(id).await.unwrap().unwrap();
    (row.status, row.last_error)
}

/// The batch settles its deliveries in one statement at commit, each only while its lease is
/// still the worker's: one settled without changes whose lease was lost is left to its new
/// owner and named to the caller, while the rest of the batch commits.
#[tokio::test]
async fn a_batch_settles_at_commit_and_names_a_lost_lease_without_failing_the_rest() {
    let db = Db::new().await;
    let store = &db.store;
    let link = new_link(store, "settled").await;
    let applied = leased(store, "applied", Some(link), "w").await;
    let retried = leased(store, "retried", None, "w").await;
    let lost = leased(store, "lost", None, "w").await;
    take_over(store, lost).await;

    let batch = store.begin_batch(&[link]).await.unwrap();
    let mut tx = batch
        .begin_link_update(&tenant(), &link)
        .await
        .unwrap()
        .unwrap();
    let event = tx.append_event(completed()).await.unwrap().id;
    tx.settle_delivery(&applied, "w").await.unwrap();
    tx.commit().await.unwrap();
    batch.retry_delivery(&retried, "w", "vendor busy", Utc::now());
    batch.settle_delivery(&lost, "w", DeliveryStatus::Unmatched, Some("no link"));
    let commit = batch.commit().await.unwrap();

    assert_eq!(commit.lost, vec![lost]);
    assert_eq!(
        commit.events.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![event]
    );
    assert_eq!(status(store, &applied).await, (DeliveryStatus::Done, None));
    assert_eq!(
        status(store, &retried).await,
        (DeliveryStatus::Pending, Some("vendor busy".to_owned()))
    );
    assert_eq!(
        status(store, &lost).await,
        (DeliveryStatus::Pending, None),
        "the new owner's delivery is left alone"
    );
    db.drop().await;
}

/// A delivery whose changes are in the batch but whose lease was lost before the commit must not
/// have them committed (its new owner applies them): the batch commits nothing, and says which.
#[tokio::test]
async fn a_batch_whose_applied_delivery_lost_its_lease_commits_nothing() {
    let db = Db::new().await;
    let store = &db.store;
    let link = new_link(store, "lost").await;
    let before = state(store, link).await;
    assert_ne!(before, LinkState::Active);
    let start = log_after(store, 0).await.last().unwrap().0;
    let applied = leased(store, "applied", Some(link), "w").await;
    let other = leased(store, "other", None, "w").await;
    take_over(store, applied).await;

    let batch = store.begin_batch(&[link]).await.unwrap();
    let mut tx = batch
        .begin_link_update(&tenant(), &link)
        .await
        .unwrap()
        .unwrap();
    tx.append_event(completed()).await.unwrap();
    tx.set_state(LinkState::Active);
    tx.settle_delivery(&applied, "w").await.unwrap();
    tx.commit().await.unwrap();
    batch.settle_delivery(&other, "w", DeliveryStatus::Dead, Some("gave up"));
    let err = batch.commit().await.unwrap_err().to_string();

    assert!(err.contains(&applied.to_string()), "{err}");
    assert!(log_after(store, start).await.is_empty(), "no event written");
    assert_eq!(state(store, link).await, before, "the link's change undone");
    assert_eq!(
        status(store, &applied).await,
        (DeliveryStatus::Pending, None)
    );
    assert_eq!(status(store, &other).await, (DeliveryStatus::Pending, None));
    db.drop().await;
}
