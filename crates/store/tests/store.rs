//! The store against a real database: SQLite by default, PostgreSQL when
//! `COVERWATCH_TEST_DATABASE_URL` is set.

use std::collections::BTreeMap;

use chrono::{Duration, Utc};
use coverwatch_core::event::EventPayload;
use coverwatch_core::ids::ConnectionId;
use coverwatch_core::policy::{
    Carrier, Policy, PolicySnapshot, PolicyStatus, PolicyTerm, PolicyType,
};
use coverwatch_core::{EventKind, LinkId, LinkState, ProviderId, TenantId};
use coverwatch_store::{
    ConnectOptions, DeliveryStatus, EventFilter, Ingested, LinkFilter, NewDelivery, NewEvent,
    NewLink, SESSION_PROOF_KIND, SnapshotOutcome, Store, StoreError, testing,
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
    new_link_of(store, tenant, user, None).await
}

/// A new link served by `connection` (`None`: the deployment's default connection).
async fn new_link_of(
    store: &Store,
    tenant: &TenantId,
    user: &str,
    connection: Option<ConnectionId>,
) -> LinkId {
    let id = LinkId::new();
    store
        .create_link(
            NewLink {
                id,
                tenant_id: tenant.clone(),
                user_id: user.parse().unwrap(),
                provider: ProviderId::from_static("axle"),
                metadata: BTreeMap::from([("loan".into(), "L-1".into())]),
                session_url: Some("https://vendor.example/s".into()),
                webhook_token_hash: Some(format!("hash-{id}")),
                session_proof_hash: Some(format!("proof-{id}")),
                replaces_link_id: None,
                requirement_set_id: None,
                created_at: Utc::now(),
                caller_trace: None,
                connection_id: connection,
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
    // The session proof's hash names its link across tenants, as a webhook token's does: a
    // vendor delivery carries no tenant.
    let by_proof = store
        .find_link_by_external_id(
            ProviderId::from_static("axle"),
            SESSION_PROOF_KIND,
            &format!("proof-{link}"),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_proof.link.id, link);
    assert!(
        store
            .find_link_by_external_id(
                ProviderId::from_static("canopy"),
                SESSION_PROOF_KIND,
                &format!("proof-{link}")
            )
            .await
            .unwrap()
            .is_none(),
        "another provider's proof names nothing"
    );
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
        provider: ProviderId::from_static("canopy"),
        dedupe_key: "sha256:abc".into(),
        link: None,
        path: String::new(),
        headers: vec![("content-type".into(), "application/json".into())],
        body: br#"{"event_type":"COMPLETE"}"#.to_vec(),
        received_at: Utc::now(),
        trace_context: None,
        connection_id: None,
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
            provider: ProviderId::from_static("axle"),
            dedupe_key: "evt-1".into(),
            link: None,
            path: "tok".into(),
            headers: vec![],
            body: b"{}".to_vec(),
            received_at: Utc::now(),
            trace_context: None,
            connection_id: None,
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
        .find_link_by_external_id(ProviderId::from_static("axle"), "account", "acc_1")
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
    // Canopy names the same document anew on every pull.
    let document = |id: &str| coverwatch_core::policy::DocumentInfo {
        id: Some(id.into()),
        name: Some("Declarations".into()),
        kinds: vec!["declaration_page".into()],
        source: None,
        created_at: None,
    };
    let mut with_document = policy("pol_1", PolicyStatus::Active);
    with_document.policy.documents = vec![document("doc-of-pull-1")];
    assert!(matches!(
        save(with_document.clone()).await,
        SnapshotOutcome::Changed { version: 2, .. }
    ));
    with_document.policy.documents = vec![document("doc-of-pull-2")];
    assert_eq!(
        save(with_document).await,
        SnapshotOutcome::Unchanged { version: 2 }
    );
    match save(policy("pol_1", PolicyStatus::Cancelled)).await {
        SnapshotOutcome::Changed { version, previous } => {
            assert_eq!(version, 3);
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
        (3, PolicyStatus::Cancelled)
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

    // Several kinds (one index range each, merged): cursor order, the limit, the cursor and
    // a repeated kind all hold as in a single query.
    let kinds_of =
        |events: &[coverwatch_core::Event]| events.iter().map(|e| e.cursor).collect::<Vec<_>>();
    let wanted = [EventKind::Exited, EventKind::SessionOpened];
    let expected: Vec<i64> = all
        .iter()
        .filter(|e| wanted.contains(&e.payload.kind()))
        .map(|e| e.cursor)
        .collect();
    assert_eq!(expected.len(), 3, "two sessions opened and one exit");
    let several = EventFilter {
        kinds: vec![
            EventKind::SessionOpened,
            EventKind::Exited,
            EventKind::SessionOpened,
        ],
        ..Default::default()
    };
    let page = store.list_events(&t, 0, &several, 2).await.unwrap();
    assert_eq!(kinds_of(&page), expected[..2]);
    let rest = store
        .list_events(&t, page[1].cursor, &several, 100)
        .await
        .unwrap();
    assert_eq!(kinds_of(&rest), expected[2..]);
    let none = EventFilter {
        kinds: vec![EventKind::Descoped, EventKind::Stale],
        ..Default::default()
    };
    assert!(
        store
            .list_events(&t, 0, &none, 100)
            .await
            .unwrap()
            .is_empty()
    );
}

fn requirement_set(id: &str, days: u32) -> coverwatch_core::requirements::RequirementSet {
    use coverwatch_core::requirements::{RequirementSet, Rule};
    RequirementSet {
        id: id.into(),
        name: format!("set {id}"),
        rules: vec![Rule::PolicyActive, Rule::ExpiresAtLeastDaysAhead { days }],
    }
}

#[tokio::test]
async fn requirement_sets_are_replaced_by_revision_and_deleted_only_when_unused() {
    let store = store().await;
    let (a, b) = (tenant("tenant-a"), tenant("tenant-b"));
    store.ensure_tenants(&[a.clone(), b.clone()]).await.unwrap();

    let (first, created) = store
        .put_requirement_set(&a, &requirement_set("lender", 30))
        .await
        .unwrap();
    assert!(created);
    assert_eq!(first.revision, 1);
    let (second, created) = store
        .put_requirement_set(&a, &requirement_set("lender", 60))
        .await
        .unwrap();
    assert!(!created, "the same id replaces");
    assert_eq!(second.revision, 2);
    assert_eq!(second.set, requirement_set("lender", 60));
    assert_eq!(second.created_at, first.created_at);
    assert!(
        store
            .get_requirement_set(&b, "lender")
            .await
            .unwrap()
            .is_none(),
        "another tenant's set is invisible"
    );
    for id in ["a-set", "b-set"] {
        store
            .put_requirement_set(&a, &requirement_set(id, 1))
            .await
            .unwrap();
    }
    let (page, next) = store.list_requirement_sets(&a, None, 2).await.unwrap();
    let ids: Vec<&str> = page.iter().map(|s| s.set.id.as_str()).collect();
    assert_eq!(ids, ["a-set", "b-set"]);
    let (page, next) = store
        .list_requirement_sets(&a, next.as_deref(), 2)
        .await
        .unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].set.id, "lender");
    assert_eq!(next, None);

    // A link attached to the set keeps it from being deleted.
    let link = new_link(&store, &a, "user-1").await;
    let mut tx = store.begin_link_update(&a, &link).await.unwrap().unwrap();
    assert!(matches!(
        tx.attach_requirement_set(Some("missing")).await,
        Err(StoreError::RequirementSetNotFound(id)) if id == "missing"
    ));
    tx.attach_requirement_set(Some("lender")).await.unwrap();
    tx.commit().await.unwrap();
    let attached = store.get_link(&a, &link).await.unwrap().unwrap();
    assert_eq!(attached.link.requirements.unwrap().set_id, "lender");
    match store.delete_requirement_set(&a, "lender").await {
        Err(StoreError::RequirementSetInUse { links, example, .. }) => {
            assert_eq!(links, 1);
            assert_eq!(example, link.to_string());
        }
        other => panic!("expected in use, got {other:?}"),
    }
    assert!(!store.delete_requirement_set(&b, "lender").await.unwrap());

    let mut tx = store.begin_link_update(&a, &link).await.unwrap().unwrap();
    tx.attach_requirement_set(None).await.unwrap();
    tx.commit().await.unwrap();
    assert!(store.delete_requirement_set(&a, "lender").await.unwrap());
    assert!(
        store
            .get_requirement_set(&a, "lender")
            .await
            .unwrap()
            .is_none()
    );
    assert!(!store.delete_requirement_set(&a, "lender").await.unwrap());
}

#[tokio::test]
async fn a_link_cannot_start_with_a_set_its_tenant_lacks() {
    let store = store().await;
    let a = tenant("tenant-a");
    store
        .ensure_tenants(std::slice::from_ref(&a))
        .await
        .unwrap();
    let id = LinkId::new();
    let result = store
        .create_link(
            NewLink {
                id,
                tenant_id: a.clone(),
                user_id: "user-1".parse().unwrap(),
                provider: ProviderId::from_static("axle"),
                metadata: BTreeMap::new(),
                session_url: None,
                webhook_token_hash: None,
                session_proof_hash: None,
                replaces_link_id: None,
                requirement_set_id: Some("nope".into()),
                created_at: Utc::now(),
                caller_trace: None,
                connection_id: None,
            },
            NewEvent::now(EventPayload::SessionOpened {
                url: "https://vendor.example/s".into(),
                reconnect: false,
            }),
        )
        .await;
    assert!(matches!(result, Err(StoreError::RequirementSetNotFound(_))));
    assert!(store.get_link(&a, &id).await.unwrap().is_none());
}

#[tokio::test]
async fn stale_candidates_are_active_links_without_fresh_data_not_yet_reported() {
    let store = store().await;
    let a = tenant("tenant-a");
    store
        .ensure_tenants(std::slice::from_ref(&a))
        .await
        .unwrap();
    let link = new_link(&store, &a, "user-1").await;
    let refreshed = Utc::now() - Duration::hours(30);
    let mut tx = store.begin_link_update(&a, &link).await.unwrap().unwrap();
    tx.set_state(LinkState::Active);
    tx.set_refreshed_at(refreshed);
    tx.commit().await.unwrap();

    let due = |before| {
        let store = store.clone();
        async move {
            store
                .stale_candidates(ProviderId::from_static("axle"), None, before, 10)
                .await
                .unwrap()
                .into_iter()
                .map(|d| d.link_id)
                .collect::<Vec<_>>()
        }
    };
    assert!(due(refreshed - Duration::hours(1)).await.is_empty());
    assert_eq!(due(refreshed + Duration::hours(1)).await, [link]);
    assert!(
        store
            .stale_candidates(ProviderId::from_static("canopy"), None, Utc::now(), 10)
            .await
            .unwrap()
            .is_empty(),
        "other providers' windows apply to their own links"
    );

    let mut tx = store.begin_link_update(&a, &link).await.unwrap().unwrap();
    tx.set_stale_since(Some(Utc::now()));
    tx.commit().await.unwrap();
    assert!(due(Utc::now()).await.is_empty(), "reported once");

    let mut tx = store.begin_link_update(&a, &link).await.unwrap().unwrap();
    tx.set_refreshed_at(Utc::now());
    tx.commit().await.unwrap();
    let fresh = store.get_link(&a, &link).await.unwrap().unwrap();
    assert_eq!(
        fresh.link.stale_since, None,
        "fresh data ends the stale period"
    );
}

#[tokio::test]
async fn stale_candidates_are_scoped_to_the_connection_that_serves_the_link() {
    let store = store().await;
    let a = tenant("tenant-a");
    store
        .ensure_tenants(std::slice::from_ref(&a))
        .await
        .unwrap();
    let axle = ProviderId::from_static("axle");
    let conn = store
        .put_connection(&a, &axle, &serde_json::json!({"client_id": "cli_a"}), &[])
        .await
        .unwrap();
    assert_eq!(store.connection_ids_of(&axle).await.unwrap(), [conn.id]);
    assert!(
        store
            .connection_ids_of(&ProviderId::from_static("canopy"))
            .await
            .unwrap()
            .is_empty()
    );
    let refreshed = Utc::now() - Duration::hours(30);
    let by_default = new_link(&store, &a, "user-1").await;
    let by_conn = new_link_of(&store, &a, "user-2", Some(conn.id)).await;
    for link in [&by_default, &by_conn] {
        let mut tx = store.begin_link_update(&a, link).await.unwrap().unwrap();
        tx.set_state(LinkState::Active);
        tx.set_refreshed_at(refreshed);
        tx.commit().await.unwrap();
    }
    let due = |connection: Option<ConnectionId>| {
        let (store, axle) = (store.clone(), axle.clone());
        async move {
            store
                .stale_candidates(axle, connection.as_ref(), Utc::now(), 10)
                .await
                .unwrap()
                .into_iter()
                .map(|d| d.link_id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(due(None).await, [by_default]);
    assert_eq!(due(Some(conn.id)).await, [by_conn]);
    assert!(due(Some(ConnectionId::new())).await.is_empty());
}

#[tokio::test]
async fn trace_context_is_kept_on_links_and_deliveries() {
    let store = store().await;
    let a = tenant("tenant-a");
    store
        .ensure_tenants(std::slice::from_ref(&a))
        .await
        .unwrap();
    let first = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let link = NewLink {
        caller_trace: Some(first.into()),
        ..testing::new_link(&a, ProviderId::from_static("axle"))
    };
    let id = link.id;
    store
        .create_link(
            link,
            NewEvent::now(EventPayload::SessionOpened {
                url: "https://vendor.example/s".into(),
                reconnect: false,
            }),
        )
        .await
        .unwrap();
    let record = store.get_link(&a, &id).await.unwrap().unwrap();
    assert_eq!(record.caller_trace.as_deref(), Some(first));

    // A later call that opens a new session takes its place; other updates keep it.
    let second = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let mut tx = store.begin_link_update(&a, &id).await.unwrap().unwrap();
    tx.set_caller_trace(second.into());
    tx.commit().await.unwrap();
    let mut tx = store.begin_link_update(&a, &id).await.unwrap().unwrap();
    tx.set_session_url(Some("https://vendor.example/other".into()));
    tx.commit().await.unwrap();
    let record = store.get_link(&a, &id).await.unwrap().unwrap();
    assert_eq!(record.caller_trace.as_deref(), Some(second));

    let traced = "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01";
    for (key, trace_context) in [("id:traced", Some(traced)), ("id:untraced", None)] {
        store
            .ingest_delivery(NewDelivery {
                provider: ProviderId::from_static("axle"),
                dedupe_key: key.into(),
                link: Some((a.clone(), id)),
                path: String::new(),
                headers: Vec::new(),
                body: b"{}".to_vec(),
                received_at: Utc::now(),
                trace_context: trace_context.map(str::to_owned),
                connection_id: None,
            })
            .await
            .unwrap();
    }
    let lease = Utc::now() + Duration::seconds(30);
    let first_claim = store.claim_deliveries("w", lease, 10).await.unwrap();
    assert_eq!(first_claim.len(), 1, "one link: one at a time");
    assert_eq!(first_claim[0].trace_context.as_deref(), Some(traced));
    store
        .settle_delivery(&first_claim[0].id, "w", DeliveryStatus::Done, None)
        .await
        .unwrap();
    let next = store
        .claim_next_of_link("w", &id, lease)
        .await
        .unwrap()
        .expect("the link's next delivery");
    assert_eq!(next.trace_context, None);
}

#[tokio::test]
async fn the_next_deliveries_of_several_links_are_claimed_in_one_statement_oldest_first() {
    let store = store().await;
    let a = tenant("tenant-a");
    store
        .ensure_tenants(std::slice::from_ref(&a))
        .await
        .unwrap();
    let (one, two, three) = (
        new_link(&store, &a, "u1").await,
        new_link(&store, &a, "u2").await,
        new_link(&store, &a, "u3").await,
    );
    let deliver = |link: LinkId, key: &'static str| {
        let (store, a) = (store.clone(), a.clone());
        async move {
            match store
                .ingest_delivery(NewDelivery {
                    provider: ProviderId::from_static("axle"),
                    dedupe_key: key.into(),
                    link: Some((a, link)),
                    path: String::new(),
                    headers: Vec::new(),
                    body: key.as_bytes().to_vec(),
                    received_at: Utc::now(),
                    trace_context: None,
                    connection_id: None,
                })
                .await
                .unwrap()
            {
                Ingested::Stored(id) => id,
                Ingested::Duplicate => panic!("{key} stored twice"),
            }
        }
    };
    let one_first = deliver(one, "one-1").await;
    let one_second = deliver(one, "one-2").await;
    let one_third = deliver(one, "one-3").await;
    let two_first = deliver(two, "two-1").await;
    let two_second = deliver(two, "two-2").await;
    let three_first = deliver(three, "three-1").await;
    let lease = Utc::now() + Duration::seconds(30);

    // Each link's oldest is taken by the first claim; settle two of them and leave the third
    // link's leased.
    let first = store.claim_deliveries("w", lease, 10).await.unwrap();
    let ids: Vec<_> = first.iter().map(|d| d.id).collect();
    assert_eq!(ids, vec![one_first, two_first, three_first]);
    for id in [one_first, two_first] {
        assert!(
            store
                .settle_delivery(&id, "w", DeliveryStatus::Done, None)
                .await
                .unwrap()
        );
    }

    // One statement: the next of each link, oldest first and one per link; the third link's
    // oldest is still leased, so nothing of it is taken.
    let next = store
        .claim_next_of_links("w", &[one, two, three], lease)
        .await
        .unwrap();
    let ids: Vec<_> = next.iter().map(|d| d.id).collect();
    assert_eq!(ids, vec![one_second, two_second]);
    assert!(next.iter().all(|d| d.attempts == 1));

    // Settled rows are not leased again, and a link with nothing pending gives nothing.
    for id in [one_second, two_second] {
        assert!(
            store
                .settle_delivery(&id, "w", DeliveryStatus::Done, None)
                .await
                .unwrap()
        );
    }
    let next = store
        .claim_next_of_links("w", &[two, one], lease)
        .await
        .unwrap();
    let ids: Vec<_> = next.iter().map(|d| d.id).collect();
    assert_eq!(ids, vec![one_third]);
    assert!(
        store
            .claim_next_of_links("w", &[], lease)
            .await
            .unwrap()
            .is_empty()
    );
}
