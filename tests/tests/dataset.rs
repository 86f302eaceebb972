//! The read benchmark's data set is what the service itself would read: generated links and
//! events open through the store, with the shape the benchmark's figures assume.

use coverwatch_core::policy::PolicyTerm;
use coverwatch_core::{EventKind, EventPayload, LinkState, TenantId};
use coverwatch_store::{ConnectOptions, EventFilter, LinkFilter, Store, testing};
use coverwatch_tests::dataset;

#[tokio::test]
async fn a_generated_data_set_reads_like_the_services_own_rows() {
    let url = testing::fresh_database_url().await;
    if !url.starts_with("postgres") {
        eprintln!(
            "NOT RUN: the data-set generator fills PostgreSQL only; set {}",
            testing::TEST_DATABASE_URL_VAR
        );
        testing::drop_database(&url).await;
        return;
    }
    let store = Store::connect(&ConnectOptions::new(url.clone()), testing::keyring())
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let (links, events) = (20, 200);
    let indexes = |url: String| async move {
        use sqlx::{Connection, Row};
        let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
        let defs: Vec<String> = sqlx::query(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = current_schema()
             AND tablename IN ('links', 'events', 'policy_snapshots') ORDER BY indexname",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
        conn.close().await.unwrap();
        defs
    };
    let migrated = indexes(url.clone()).await;
    let mut reported = Vec::new();
    dataset::generate(&url, "gen-tenant", links, events, |table, n| {
        reported.push((table.to_string(), n))
    })
    .await
    .unwrap();
    assert_eq!(
        reported,
        [
            ("links".to_string(), 20),
            ("events".to_string(), 200),
            ("policy_snapshots".to_string(), 20)
        ]
    );
    // The generator drops secondary indexes for the fill: the reads must then be measured on
    // exactly the indexes the migrations made, none missing and none extra.
    assert_eq!(indexes(url.clone()).await, migrated);
    let tenant: TenantId = "gen-tenant".parse().unwrap();

    let link = store
        .get_link(&tenant, &dataset::link_id(3).parse().unwrap())
        .await
        .unwrap()
        .expect("generated link");
    assert_eq!(link.link.user_id.as_str(), dataset::user_id(3, links));
    let by_link = store
        .list_events(
            &tenant,
            0,
            &EventFilter {
                link_id: Some(link.link.id),
                ..Default::default()
            },
            100,
        )
        .await
        .unwrap();
    assert_eq!(by_link.len(), 10, "events / links per link");
    assert!(by_link.iter().all(|e| e.user_id == link.link.user_id));
    let refreshed = store
        .list_events(
            &tenant,
            0,
            &EventFilter {
                kinds: vec![EventKind::DataRefreshed],
                ..Default::default()
            },
            100,
        )
        .await
        .unwrap();
    assert_eq!(refreshed.len(), 20, "one event in ten");
    assert!(
        refreshed
            .iter()
            .all(|e| matches!(e.payload, EventPayload::DataRefreshed { .. }))
    );
    let by_user = store
        .list_events(
            &tenant,
            0,
            &EventFilter {
                user_id: Some(dataset::user_id(3, links).parse().unwrap()),
                ..Default::default()
            },
            100,
        )
        .await
        .unwrap();
    assert_eq!(by_user.len(), 20, "two links per user");
    let reconnect = store
        .list_links(
            &tenant,
            &LinkFilter {
                states: vec![LinkState::ReconnectRequired],
                limit: 100,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(reconnect.links.len(), 1, "one link in fifty");
    for (n, versions) in [(2, 2), (3, 1)] {
        let policies = store
            .latest_policies(
                &tenant,
                &dataset::link_id(n).parse().unwrap(),
                PolicyTerm::Current,
            )
            .await
            .unwrap();
        assert_eq!(policies.len(), 1, "one policy per link");
        assert_eq!(policies[0].version, versions, "the latest of its versions");
        assert_eq!(policies[0].policy, dataset::sample_policy());
    }
    drop(store);
    testing::drop_database(&url).await;
}
