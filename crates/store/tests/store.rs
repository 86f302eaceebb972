//! The store against a real database: SQLite by default, PostgreSQL when
//! `COVERWATCH_TEST_DATABASE_URL` is set.

use std::collections::BTreeMap;

use chrono::{Duration, Utc};
use coverwatch_core::event::EventPayload;
use coverwatch_core::policy::{
    Carrier, Policy, PolicySnapshot, PolicyStatus, PolicyTerm, PolicyType,
};
use coverwatch_core::{EventKind, LinkId, LinkState, ProviderKind, TenantId};
use coverwatch_store::{
    ConnectOptions, DeliveryStatus, EventFilter, Ingested, LinkFilter, NewDelivery, NewEvent,
    NewLink, SnapshotOutcome, Store, StoreError, testing,
};
use secrecy::{ExposeSecret, SecretString};

async fn store() -> Store {
    let url = testing::fresh_database_url().await;
    let store = Store::connect(&ConnectOptions::new(url), testing::keyring())
        .await
        .expect("connect");
    store.migrate().await.expect("migrate");
    store
        .migrate()
        .await
        .expect("migrations run twice without harm");
    store
}

fn tenant(name: &str) -> TenantId {
    name.parse().unwrap()
}

async fn new_link(store: &Store, tenant: &TenantId, user: &str) -> LinkId {
    let id = LinkId::new();
    store
        .create_link(
            NewLink {
                id,
                tenant_id: tenant.clone(),
                user_id: user.parse().unwrap(),
                provider: ProviderKind::Axle,
                metadata: BTreeMap::from([("loan".into(), "L-1".into())]),
                session_url: Some("https://vendor.example/s".into()),
                webhook_token_hash: Some(format!("hash-{id}")),
                replaces_link_id: None,
                created_at: Utc::now(),
            },
            NewEvent::now(EventPayload::SessionOpened {
                url: "https://vendor.example/s".into(),
                reconnect: false,
            }),
        )
        .await
        .expect("create link");
    id
}

fn policy(id: &str, status: PolicyStatus) -> PolicySnapshot {
    PolicySnapshot {
        policy: Policy {
            external_id: id.into(),
            policy_type: PolicyType::Auto,
            carrier: Carrier {
                id: "state-farm".into(),
                name: None,
            },
            policy_number: Some("P-1".into()),
            status,
            effective_date: None,
            expiration_date: None,
            cancelled_date: None,
            premium_cents: Some(120_000),
            address: None,
            vehicles: vec![],
            dwellings: vec![],
            coverages: vec![],
            insureds: vec![],
            interested_parties: vec![],
            documents: vec![],
        },
        term: PolicyTerm::Current,
        raw: serde_json::json!({"id": id}),
    }
}

#[tokio::test]
async fn links_and_events_are_scoped_to_their_tenant() {
    let store = store().await;
    let (a, b) = (tenant("tenant-a"), tenant("tenant-b"));
    store.ensure_tenants(&[a.clone(), b.clone()]).await.unwrap();
    let link = new_link(&store, &a, "user-1").await;

    let found = store.get_link(&a, &link).await.unwrap().unwrap();
    assert_eq!(found.link.state, LinkState::Pending);
    assert_eq!(found.link.metadata["loan"], "L-1");
    assert!(store.get_link(&b, &link).await.unwrap().is_none());
    assert!(
        store
            .list_links(
                &b,
                &LinkFilter {
                    limit: 10,
                    ..Default::default()
                }
            )
            .await
            .unwrap()
            .links
            .is_empty()
    );

    let events = store
        .list_events(&a, 0, &EventFilter::default(), 10)
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind(), EventKind::SessionOpened);
    assert!(
        store
            .list_events(&b, 0, &EventFilter::default(), 10)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn link_pages_follow_creation_order() {
    let store = store().await;
    let t = tenant("paging");
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(new_link(&store, &t, &format!("user-{i}")).await);
    }
    let first = store
        .list_links(
            &t,
            &LinkFilter {
                limit: 3,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let second = store
        .list_links(
            &t,
            &LinkFilter {
                limit: 3,
                after: first.next_after,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let seen: Vec<_> = first
        .links
        .iter()
        .chain(&second.links)
        .map(|l| l.link.id)
        .collect();
    assert_eq!(seen, ids);
    assert!(second.next_after.is_none());
    let by_user = store
        .list_links(
            &t,
            &LinkFilter {
                limit: 10,
                user_id: Some("user-3".parse().unwrap()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(by_user.links.len(), 1);
    assert_eq!(by_user.links[0].link.id, ids[3]);
}

#[tokio::test]
async fn a_delivery_is_stored_once_and_leased_to_one_worker() {
    let store = store().await;
    let delivery = || NewDelivery {
        provider: ProviderKind::Canopy,
        dedupe_key: "sha256:abc".into(),
        link: None,
        path: String::new(),
        headers: vec![("content-type".into(), "application/json".into())],
        body: br#"{"event_type":"COMPLETE"}"#.to_vec(),
        received_at: Utc::now(),
    };
    assert!(matches!(
        store.ingest_delivery(delivery()).await.unwrap(),
        Ingested::Stored(_)
    ));
    assert_eq!(
        store.ingest_delivery(delivery()).await.unwrap(),
        Ingested::Duplicate
    );

    let lease = Utc::now() + Duration::seconds(30);
    let claimed = store.claim_deliveries("worker-1", lease, 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].attempts, 1);
    assert_eq!(claimed[0].body, br#"{"event_type":"COMPLETE"}"#);
    assert!(
        store
            .claim_deliveries("worker-2", lease, 10)
            .await
            .unwrap()
            .is_empty(),
        "leased rows are not handed out twice"
    );

    assert!(
        !store
            .settle_delivery(&claimed[0].id, "worker-2", DeliveryStatus::Dead, Some("x"))
            .await
            .unwrap(),
        "only the lease holder settles"
    );
    assert!(
        store
            .retry_delivery(
                &claimed[0].id,
                "worker-1",
                "vendor down",
                Utc::now() - Duration::seconds(1)
            )
            .await
            .unwrap()
    );
    let again = store.claim_deliveries("worker-2", lease, 10).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempts, 2);
    assert!(
        store
            .settle_delivery(
                &again[0].id,
                "worker-2",
                DeliveryStatus::Unmatched,
                Some("no link")
            )
            .await
            .unwrap()
    );
    assert!(
        store
            .claim_deliveries("worker-3", lease, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn an_expired_lease_is_taken_over() {
    let store = store().await;
    store
        .ingest_delivery(NewDelivery {
            provider: ProviderKind::Axle,
            dedupe_key: "evt-1".into(),
            link: None,
            path: "tok".into(),
            headers: vec![],
            body: b"{}".to_vec(),
            received_at: Utc::now(),
        })
        .await
        .unwrap();
    let expired = Utc::now() - Duration::seconds(1);
    assert_eq!(
        store
            .claim_deliveries("crashed", expired, 1)
            .await
            .unwrap()
            .len(),
        1
    );
    let taken = store
        .claim_deliveries("survivor", Utc::now() + Duration::seconds(30), 1)
        .await
        .unwrap();
    assert_eq!(taken.len(), 1, "a lease that ran out is claimable again");
}

#[tokio::test]
async fn a_link_transaction_commits_everything_or_nothing() {
    let store = store().await;
    let t = tenant("tx");
    let link = new_link(&store, &t, "user").await;

    // Dropped without commit: nothing stays.
    {
        let mut tx = store.begin_link_update(&t, &link).await.unwrap().unwrap();
        tx.set_state(LinkState::Active);
        tx.append_event(NewEvent::now(EventPayload::Completed {
            account_external_id: None,
            policy_external_ids: vec![],
        }))
        .await
        .unwrap();
        tx.save_policy(&policy("pol_1", PolicyStatus::Active), Utc::now())
            .await
            .unwrap();
    }
    assert_eq!(
        store.get_link(&t, &link).await.unwrap().unwrap().link.state,
        LinkState::Pending
    );
    assert_eq!(
        store
            .list_events(&t, 0, &EventFilter::default(), 10)
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(
        store
            .latest_policies(&t, &link, PolicyTerm::Current)
            .await
            .unwrap()
            .is_empty()
    );

    let mut tx = store.begin_link_update(&t, &link).await.unwrap().unwrap();
    tx.set_state(LinkState::Active);
    tx.set_account_key(Some("acc_1".into()));
    tx.put_external_ids(&BTreeMap::from([("account".into(), "acc_1".into())]))
        .await
        .unwrap();
    tx.put_secrets(vec![(
        "access".into(),
        Some(SecretString::from("tok_live_123")),
    )])
    .await
    .unwrap();
    let created = tx
        .save_policy(&policy("pol_1", PolicyStatus::Active), Utc::now())
        .await
        .unwrap();
    assert_eq!(created, SnapshotOutcome::Created { version: 1 });
    tx.append_event(NewEvent::now(EventPayload::Completed {
        account_external_id: Some("acc_1".into()),
        policy_external_ids: vec!["pol_1".into()],
    }))
    .await
    .unwrap();
    let record = tx.commit().await.unwrap();
    assert_eq!(record.link.state, LinkState::Active);

    let found = store
        .find_link_by_external_id(ProviderKind::Axle, "account", "acc_1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.link.id, link);
    let access = store.link_access(&t, &link).await.unwrap();
    assert_eq!(access.secret.unwrap().expose_secret(), "tok_live_123");
    assert_eq!(access.external_ids["account"], "acc_1");

    // A second link cannot claim the same vendor id.
    let other = new_link(&store, &t, "user-2").await;
    let mut tx = store.begin_link_update(&t, &other).await.unwrap().unwrap();
    let err = tx
        .put_external_ids(&BTreeMap::from([("account".into(), "acc_1".into())]))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::ExternalIdTaken { .. }), "{err}");
}

#[tokio::test]
async fn snapshots_version_only_on_change() {
    let store = store().await;
    let t = tenant("snap");
    let link = new_link(&store, &t, "user").await;
    let save = |snapshot: PolicySnapshot| {
        let store = store.clone();
        let t = t.clone();
        async move {
            let mut tx = store.begin_link_update(&t, &link).await.unwrap().unwrap();
            let outcome = tx.save_policy(&snapshot, Utc::now()).await.unwrap();
            tx.commit().await.unwrap();
            outcome
        }
    };
    assert_eq!(
        save(policy("pol_1", PolicyStatus::Active)).await,
        SnapshotOutcome::Created { version: 1 }
    );
    let mut same = policy("pol_1", PolicyStatus::Active);
    same.raw = serde_json::json!({"id": "pol_1", "refreshedAt": "later"});
    assert_eq!(save(same).await, SnapshotOutcome::Unchanged { version: 1 });
    match save(policy("pol_1", PolicyStatus::Cancelled)).await {
        SnapshotOutcome::Changed { version, previous } => {
            assert_eq!(version, 2);
            assert_eq!(previous.status, PolicyStatus::Active);
        }
        other => panic!("expected a new version, got {other:?}"),
    }
    let latest = store
        .latest_policies(&t, &link, PolicyTerm::Current)
        .await
        .unwrap();
    assert_eq!(latest.len(), 1);
    assert_eq!(
        (latest[0].version, latest[0].policy.status),
        (2, PolicyStatus::Cancelled)
    );
}

#[tokio::test]
async fn event_filters_select_by_link_user_and_kind() {
    let store = store().await;
    let t = tenant("filters");
    let one = new_link(&store, &t, "alice").await;
    let two = new_link(&store, &t, "bob").await;
    let mut tx = store.begin_link_update(&t, &two).await.unwrap().unwrap();
    tx.append_event(NewEvent::now(EventPayload::Exited { step: None }))
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let all = store
        .list_events(&t, 0, &EventFilter::default(), 100)
        .await
        .unwrap();
    assert_eq!(all.len(), 3);
    assert!(all.windows(2).all(|w| w[0].cursor < w[1].cursor));
    let by_link = EventFilter {
        link_id: Some(one),
        ..Default::default()
    };
    assert_eq!(
        store.list_events(&t, 0, &by_link, 100).await.unwrap().len(),
        1
    );
    let by_user = EventFilter {
        user_id: Some("bob".parse().unwrap()),
        ..Default::default()
    };
    assert_eq!(
        store.list_events(&t, 0, &by_user, 100).await.unwrap().len(),
        2
    );
    let by_kind = EventFilter {
        kinds: vec![EventKind::Exited],
        ..Default::default()
    };
    let exited = store.list_events(&t, 0, &by_kind, 100).await.unwrap();
    assert_eq!(exited.len(), 1);
    assert_eq!(
        store
            .list_events(&t, exited[0].cursor, &by_kind, 100)
            .await
            .unwrap()
            .len(),
        0
    );
    assert_eq!(store.latest_cursor().await.unwrap(), exited[0].cursor);
}
