//! The operator's view of the inbox (list, get, replay, purge) against a real database: SQLite
//! by default, PostgreSQL when `COVERWATCH_TEST_DATABASE_URL` is set.

use chrono::{Duration, Utc};
use coverwatch_core::ids::DeliveryId;
use coverwatch_core::{LinkId, ProviderId, TenantId};
use coverwatch_store::{
    ConnectOptions, DeliveryFilter, DeliveryStatus, Ingested, NewDelivery, Replay, Store, testing,
};

async fn store() -> Store {
    let url = testing::fresh_database_url().await;
    let store = Store::connect(&ConnectOptions::new(url), testing::keyring())
        .await
        .expect("connect");
    store.migrate().await.expect("migrate");
    store
}

async fn ingest(
    store: &Store,
    provider: ProviderId,
    key: &str,
    link: Option<(TenantId, LinkId)>,
) -> DeliveryId {
    let delivery = NewDelivery {
        provider,
        dedupe_key: format!("id:{key}"),
        link,
        path: "token".into(),
        headers: vec![("content-type".into(), "application/json".into())],
        body: format!("{{\"id\":\"{key}\"}}").into_bytes(),
        received_at: Utc::now(),
        trace_context: None,
        connection_id: None,
    };
    match store.ingest_delivery(delivery).await.unwrap() {
        Ingested::Stored(id) => id,
        Ingested::Duplicate => panic!("{key} stored twice"),
    }
}

/// Claim everything pending and settle each delivery as `status_of` says.
async fn settle_all(store: &Store, status_of: impl Fn(&DeliveryId) -> DeliveryStatus) {
    let lease = Utc::now() + Duration::seconds(30);
    loop {
        let claimed = store.claim_deliveries("w", lease, 100).await.unwrap();
        if claimed.is_empty() {
            return;
        }
        for delivery in claimed {
            let status = status_of(&delivery.id);
            let error = (status != DeliveryStatus::Done).then_some("it went wrong");
            assert!(
                store
                    .settle_delivery(&delivery.id, "w", status, error)
                    .await
                    .unwrap()
            );
        }
    }
}

#[tokio::test]
async fn list_filters_and_pages_in_receipt_order() {
    let store = store().await;
    let tenant: TenantId = "acme".parse().unwrap();
    let link = LinkId::new();
    let a = ingest(
        &store,
        ProviderId::from_static("axle"),
        "a",
        Some((tenant.clone(), link)),
    )
    .await;
    let b = ingest(&store, ProviderId::from_static("canopy"), "b", None).await;
    let c = ingest(
        &store,
        ProviderId::from_static("axle"),
        "c",
        Some((tenant.clone(), link)),
    )
    .await;
    let d = ingest(&store, ProviderId::from_static("axle"), "d", None).await;
    settle_all(&store, |id| {
        if *id == b {
            DeliveryStatus::Unmatched
        } else if *id == c {
            DeliveryStatus::Dead
        } else {
            DeliveryStatus::Done
        }
    })
    .await;
    let ids = |page: &coverwatch_store::DeliveryPage| -> Vec<DeliveryId> {
        page.deliveries.iter().map(|d| d.id).collect()
    };

    let all = store
        .list_deliveries(&DeliveryFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(&all), [a, b, c, d]);
    assert!(all.next_after.is_none());
    assert!(
        all.deliveries.iter().all(|d| d.body.is_none()),
        "no bodies in listings"
    );
    assert_eq!(
        all.deliveries[0].body_size,
        Some(br#"{"id":"a"}"#.len() as u64)
    );

    let by = |filter: DeliveryFilter| {
        let store = store.clone();
        async move { ids(&store.list_deliveries(&filter).await.unwrap()) }
    };
    let filter = |status, provider, link_id| DeliveryFilter {
        status,
        provider,
        link_id,
        limit: 10,
        ..Default::default()
    };
    assert_eq!(
        by(filter(Some(DeliveryStatus::Dead), None, None)).await,
        [c]
    );
    assert_eq!(
        by(filter(Some(DeliveryStatus::Unmatched), None, None)).await,
        [b]
    );
    assert_eq!(
        by(filter(None, Some(ProviderId::from_static("axle")), None)).await,
        [a, c, d]
    );
    assert_eq!(by(filter(None, None, Some(link))).await, [a, c]);
    assert_eq!(
        by(filter(Some(DeliveryStatus::Done), None, Some(link))).await,
        [a]
    );

    let first = store
        .list_deliveries(&DeliveryFilter {
            limit: 3,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(&first), [a, b, c]);
    let second = store
        .list_deliveries(&DeliveryFilter {
            limit: 3,
            after_seq: first.next_after,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(&second), [d]);
    assert!(second.next_after.is_none());
}

#[tokio::test]
async fn replay_puts_a_settled_delivery_back_and_purge_keeps_rows() {
    let store = store().await;
    let dead = ingest(&store, ProviderId::from_static("axle"), "dead", None).await;
    let done = ingest(&store, ProviderId::from_static("axle"), "done", None).await;
    let also_done = ingest(&store, ProviderId::from_static("axle"), "also-done", None).await;
    settle_all(&store, |id| {
        if *id == dead {
            DeliveryStatus::Dead
        } else {
            DeliveryStatus::Done
        }
    })
    .await;
    let pending = ingest(&store, ProviderId::from_static("axle"), "pending", None).await;

    let got = store.get_delivery(&dead).await.unwrap().unwrap();
    assert_eq!(got.status, DeliveryStatus::Dead);
    assert_eq!(got.attempts, 1);
    assert_eq!(got.last_error.as_deref(), Some("it went wrong"));
    assert_eq!(got.body.as_deref(), Some(br#"{"id":"dead"}"#.as_slice()));
    assert!(got.processed_at.is_some());
    assert!(
        store
            .get_delivery(&DeliveryId::new())
            .await
            .unwrap()
            .is_none()
    );

    let Replay::Replayed(replayed) = store.replay_delivery(&dead).await.unwrap() else {
        panic!("a dead delivery is replayed");
    };
    assert_eq!(replayed.status, DeliveryStatus::Pending);
    assert_eq!(replayed.attempts, 0);
    assert!(replayed.processed_at.is_none());
    assert!(matches!(
        store.replay_delivery(&pending).await.unwrap(),
        Replay::AlreadyPending(_)
    ));
    assert!(matches!(
        store.replay_delivery(&DeliveryId::new()).await.unwrap(),
        Replay::NotFound
    ));
    let claimed = store
        .claim_deliveries("w2", Utc::now() + Duration::seconds(30), 10)
        .await
        .unwrap();
    let claimed: Vec<_> = claimed.iter().map(|c| (c.id, c.attempts)).collect();
    assert_eq!(
        claimed,
        [(dead, 1), (pending, 1)],
        "replayed: claimable again"
    );

    // Processed before the cutoff: body gone, row kept. Everything else keeps its body.
    assert_eq!(
        store
            .purge_processed_bodies(Utc::now() - Duration::hours(1))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store
            .purge_processed_bodies(Utc::now() + Duration::seconds(1))
            .await
            .unwrap(),
        2
    );
    assert!(
        store
            .get_delivery(&also_done)
            .await
            .unwrap()
            .unwrap()
            .body
            .is_none()
    );
    let purged = store.get_delivery(&done).await.unwrap().unwrap();
    assert_eq!(purged.status, DeliveryStatus::Done);
    assert!(purged.body.is_none() && purged.body_size.is_none());
    assert_eq!(purged.headers.len(), 1);
    assert!(
        store
            .get_delivery(&dead)
            .await
            .unwrap()
            .unwrap()
            .body
            .is_some()
    );
    assert!(matches!(
        store.replay_delivery(&done).await.unwrap(),
        Replay::BodyPurged(_)
    ));
    assert_eq!(
        store
            .list_deliveries(&DeliveryFilter {
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap()
            .deliveries
            .len(),
        4
    );
}

#[tokio::test]
async fn dead_and_unmatched_bodies_are_purged_by_their_own_cutoff() {
    let store = store().await;
    let dead = ingest(&store, ProviderId::from_static("canopy"), "dead", None).await;
    let unmatched = ingest(&store, ProviderId::from_static("canopy"), "unmatched", None).await;
    let done = ingest(&store, ProviderId::from_static("canopy"), "done", None).await;
    settle_all(&store, |id| {
        if *id == dead {
            DeliveryStatus::Dead
        } else if *id == unmatched {
            DeliveryStatus::Unmatched
        } else {
            DeliveryStatus::Done
        }
    })
    .await;
    let pending = ingest(&store, ProviderId::from_static("canopy"), "pending", None).await;
    let body_of = |id: DeliveryId| {
        let store = store.clone();
        async move { store.get_delivery(&id).await.unwrap().unwrap().body }
    };

    // Settled after the cutoff: kept.
    let earlier = Utc::now() - Duration::hours(1);
    assert_eq!(
        store
            .purge_bodies(DeliveryStatus::Dead, earlier)
            .await
            .unwrap(),
        0
    );
    let later = Utc::now() + Duration::seconds(1);
    // A pending body is never dropped, whatever the cutoff: the worker still needs it.
    assert_eq!(
        store
            .purge_bodies(DeliveryStatus::Pending, later)
            .await
            .unwrap(),
        0
    );
    assert!(body_of(pending).await.is_some());

    // Each status by its own cutoff: dropping dead bodies leaves the unmatched and done ones.
    assert_eq!(
        store
            .purge_bodies(DeliveryStatus::Dead, later)
            .await
            .unwrap(),
        1
    );
    assert!(body_of(dead).await.is_none());
    assert!(body_of(unmatched).await.is_some());
    assert!(body_of(done).await.is_some());
    assert_eq!(
        store
            .purge_bodies(DeliveryStatus::Unmatched, later)
            .await
            .unwrap(),
        1
    );
    assert!(body_of(unmatched).await.is_none());
    assert!(body_of(done).await.is_some());

    // The rows stay, and a purged dead delivery can no longer be replayed.
    let record = store.get_delivery(&dead).await.unwrap().unwrap();
    assert_eq!(record.status, DeliveryStatus::Dead);
    assert_eq!(record.headers.len(), 1);
    assert!(matches!(
        store.replay_delivery(&dead).await.unwrap(),
        Replay::BodyPurged(_)
    ));
}

#[tokio::test]
async fn list_filters_by_receipt_time_at_or_after_the_bound() {
    let store = store().await;
    let at = |ms: i64| chrono::DateTime::from_timestamp_millis(ms).unwrap();
    let base = Utc::now().timestamp_millis();
    let mut ids = Vec::new();
    for (n, offset) in [0, 1_000, 2_000].into_iter().enumerate() {
        let delivery = NewDelivery {
            provider: ProviderId::from_static("canopy"),
            dedupe_key: format!("id:t{n}"),
            link: None,
            path: String::new(),
            headers: Vec::new(),
            body: b"{}".to_vec(),
            received_at: at(base + offset),
            trace_context: None,
            connection_id: None,
        };
        match store.ingest_delivery(delivery).await.unwrap() {
            Ingested::Stored(id) => ids.push(id),
            Ingested::Duplicate => panic!("t{n} stored twice"),
        }
    }
    let since = |bound| DeliveryFilter {
        received_since: Some(bound),
        limit: 10,
        ..Default::default()
    };
    let listed = |page: coverwatch_store::DeliveryPage| -> Vec<DeliveryId> {
        page.deliveries.iter().map(|d| d.id).collect()
    };
    // Exactly at a receipt time: that delivery is included.
    let page = store
        .list_deliveries(&since(at(base + 1_000)))
        .await
        .unwrap();
    assert_eq!(listed(page), ids[1..]);
    // Half a millisecond after the second one: receipt times are whole milliseconds, and the
    // second is before the bound even though it shares its millisecond.
    let bound = at(base + 1_000) + Duration::microseconds(500);
    let page = store.list_deliveries(&since(bound)).await.unwrap();
    assert_eq!(listed(page), ids[2..]);
    let page = store
        .list_deliveries(&since(at(base + 2_001)))
        .await
        .unwrap();
    assert!(page.deliveries.is_empty());
}
