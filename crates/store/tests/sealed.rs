//! Secrets at rest against a real database (SQLite by default, PostgreSQL when
//! `COVERWATCH_TEST_DATABASE_URL` is set): what grants access is never stored in clear, and a
//! key rotation re-seals everything so that the old key can be removed.

use std::collections::BTreeMap;

use chrono::{Duration, Utc};
use coverwatch_core::event::{EventPayload, ReconnectReason};
use coverwatch_core::{LinkId, ProviderId, TenantId};
use coverwatch_store::{
    ACCESS_SECRET, ConnectOptions, DeliveryFilter, EventFilter, Ingested, Keyring, KeyringError,
    NewDelivery, NewEvent, NewLink, SealedKind, Store, StoreError, entities, testing,
};
use sea_orm::{ActiveValue::Set, EntityTrait};
use secrecy::{ExposeSecret, SecretString};

const SESSION_URL: &str = "https://vendor.example/ignition?token=ign-SECRET-SESSION";
const RECONNECT_URL: &str = "https://vendor.example/reconnect?reconnectToken=SECRET-RECONNECT";
const ACCESS_TOKEN: &str = "SECRET-ACCESS-TOKEN";
const HEADER_VALUE: &str = "SECRET-SHARED-HEADER";
const AUTH_CODE: &str = "SECRET-AUTH-CODE";
/// In a row written before deliveries were sealed.
const LEGACY_CODE: &str = "SECRET-LEGACY-CODE";

fn key_pair(id: &str) -> (String, String) {
    (id.to_owned(), Keyring::generate_key_base64())
}

async fn connect(url: &str, keys: &[(String, String)]) -> Store {
    let store = Store::connect(
        &ConnectOptions::new(url.to_owned()),
        Keyring::from_base64(keys).unwrap(),
    )
    .await
    .expect("connect");
    store.migrate().await.expect("migrate");
    store
}

/// Everything the database holds for our tables, as bytes: the SQLite files themselves (main
/// and write-ahead log), or on PostgreSQL every row as text (`bytea` shows as hex there, so
/// callers look for the hex form too).
async fn raw_contents(url: &str) -> Vec<u8> {
    if let Some(rest) = url.strip_prefix("sqlite://") {
        let path = rest.split('?').next().unwrap();
        let mut bytes = std::fs::read(path).unwrap();
        if let Ok(wal) = std::fs::read(format!("{path}-wal")) {
            bytes.extend(wal);
        }
        return bytes;
    }
    use sqlx::Connection as _;
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    let mut out = Vec::new();
    for table in [
        "inbox",
        "links",
        "events",
        "link_credentials",
        "link_external_ids",
    ] {
        let rows: Vec<(String,)> = sqlx::query_as(&format!("SELECT t::text FROM {table} t"))
            .fetch_all(&mut conn)
            .await
            .unwrap();
        for (row,) in rows {
            out.extend(row.into_bytes());
        }
    }
    out
}

fn holds(raw: &[u8], secret: &str) -> bool {
    let hex = hex::encode(secret);
    [secret.as_bytes(), hex.as_bytes()]
        .iter()
        .any(|needle| raw.windows(needle.len()).any(|w| w == *needle))
}

/// A link with a session URL, an access token, a reconnect URL and their events, plus
/// deliveries carrying a shared header and an auth code; returns the link.
async fn fill(store: &Store, tenant: &TenantId, deliveries: usize) -> LinkId {
    let link = NewLink {
        session_url: Some(SESSION_URL.into()),
        ..coverwatch_store::testing::new_link(tenant, ProviderId::from_static("canopy"))
    };
    let id = link.id;
    store
        .create_link(
            link,
            NewEvent::now(EventPayload::SessionOpened {
                url: SESSION_URL.into(),
                reconnect: false,
            }),
        )
        .await
        .unwrap();
    let mut tx = store.begin_link_update(tenant, &id).await.unwrap().unwrap();
    tx.put_secrets(vec![(
        ACCESS_SECRET.to_owned(),
        Some(SecretString::from(ACCESS_TOKEN)),
    )])
    .await
    .unwrap();
    tx.set_session_url(Some(RECONNECT_URL.into()));
    tx.append_event(NewEvent::now(EventPayload::ReconnectRequired {
        reason: ReconnectReason::CredentialsExpired,
        reconnect_url: Some(RECONNECT_URL.into()),
    }))
    .await
    .unwrap();
    tx.commit().await.unwrap();
    for n in 0..deliveries {
        let stored = store
            .ingest_delivery(NewDelivery {
                provider: ProviderId::from_static("axle"),
                dedupe_key: format!("id:evt-{n}"),
                link: Some((tenant.clone(), id)),
                path: "[token]".into(),
                headers: vec![
                    ("content-type".into(), "application/json".into()),
                    ("x-shared".into(), HEADER_VALUE.into()),
                ],
                body: format!(
                    r#"{{"type":"ignition.completed","data":{{"authCode":"{AUTH_CODE}","n":{n}}}}}"#
                )
                .into_bytes(),
                received_at: Utc::now(),
                trace_context: None,
                connection_id: None,
            })
            .await
            .unwrap();
        assert!(matches!(stored, Ingested::Stored(_)));
    }
    id
}

/// A delivery row as one was written before sealing existed: headers JSON and body in clear.
async fn insert_legacy_delivery(url: &str) -> String {
    let db = sea_orm::Database::connect(url).await.unwrap();
    let id = coverwatch_core::ids::DeliveryId::new().to_string();
    let now = Utc::now().timestamp_millis();
    entities::inbox::Entity::insert(entities::inbox::ActiveModel {
        seq: sea_orm::NotSet,
        id: Set(id.clone()),
        provider: Set("canopy".into()),
        dedupe_key: Set("id:legacy".into()),
        tenant_id: Set(None),
        link_id: Set(None),
        path: Set(String::new()),
        headers: Set(r#"[["content-type","application/json"]]"#.into()),
        body: Set(Some(format!(r#"{{"code":"{LEGACY_CODE}"}}"#).into_bytes())),
        status: Set("unmatched".into()),
        attempts: Set(1),
        last_error: Set(None),
        received_at: Set(now),
        next_attempt_at: Set(now),
        lease_owner: Set(None),
        lease_expires_at: Set(None),
        processed_at: Set(Some(now)),
        key_id: Set(None),
        trace_context: Set(None),
        connection_id: Set(None),
    })
    .exec(&db)
    .await
    .unwrap();
    db.close().await.unwrap();
    id
}

#[tokio::test]
async fn secrets_are_sealed_and_read_back_in_clear() {
    let url = testing::fresh_database_url().await;
    let store = connect(&url, &[key_pair("k1")]).await;
    let tenant: TenantId = "tenant-a".parse().unwrap();
    store
        .ensure_tenants(std::slice::from_ref(&tenant))
        .await
        .unwrap();
    let link = fill(&store, &tenant, 2).await;

    // Read back through the store: callers see every value as it was given.
    let record = store.get_link(&tenant, &link).await.unwrap().unwrap();
    assert_eq!(record.link.session_url.as_deref(), Some(RECONNECT_URL));
    let events = store
        .list_events(&tenant, 0, &EventFilter::default(), 10)
        .await
        .unwrap();
    assert_eq!(
        events.iter().map(|e| e.payload.clone()).collect::<Vec<_>>(),
        vec![
            EventPayload::SessionOpened {
                url: SESSION_URL.into(),
                reconnect: false
            },
            EventPayload::ReconnectRequired {
                reason: ReconnectReason::CredentialsExpired,
                reconnect_url: Some(RECONNECT_URL.into()),
            }
        ]
    );
    let claimed = store
        .claim_deliveries("w", Utc::now() + Duration::seconds(30), 10)
        .await
        .unwrap();
    assert_eq!(
        claimed.len(),
        1,
        "one link's deliveries are claimed in turn"
    );
    assert!(String::from_utf8_lossy(&claimed[0].body).contains(AUTH_CODE));
    assert!(
        claimed[0]
            .headers
            .contains(&("x-shared".to_owned(), HEADER_VALUE.to_owned()))
    );
    let page = store
        .list_deliveries(&DeliveryFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    let listed = &page.deliveries[1];
    assert!(
        listed
            .headers
            .contains(&("x-shared".to_owned(), HEADER_VALUE.to_owned()))
    );
    let full = store.get_delivery(&listed.id).await.unwrap().unwrap();
    let body = full.body.clone().unwrap();
    assert!(String::from_utf8_lossy(&body).contains(AUTH_CODE));
    assert_eq!(
        full.body_size,
        Some(body.len() as u64),
        "the size is the body's, not its ciphertext's"
    );
    assert_eq!(listed.body_size, full.body_size);

    // At rest, none of it is in clear.
    let raw = raw_contents(&url).await;
    for secret in [
        SESSION_URL,
        "ign-SECRET-SESSION",
        RECONNECT_URL,
        "SECRET-RECONNECT",
        ACCESS_TOKEN,
        HEADER_VALUE,
        AUTH_CODE,
    ] {
        assert!(!holds(&raw, secret), "`{secret}` is stored in clear");
    }
    store.close().await;
    testing::drop_database(&url).await;
}

#[tokio::test]
async fn rotation_reseals_everything_and_the_old_key_can_be_removed() {
    let url = testing::fresh_database_url().await;
    let old = key_pair("2025");
    let new = key_pair("2026");
    let tenant: TenantId = "tenant-a".parse().unwrap();

    let store = connect(&url, std::slice::from_ref(&old)).await;
    store
        .ensure_tenants(std::slice::from_ref(&tenant))
        .await
        .unwrap();
    let link = fill(&store, &tenant, 5).await;
    let connection_settings = serde_json::json!({"signing_secrets": ["whsec-of-a-connection"]});
    let connection = store
        .put_connection(
            &tenant,
            &ProviderId::from_static("canopy"),
            &connection_settings,
            &[],
        )
        .await
        .unwrap();
    let legacy = insert_legacy_delivery(&url).await;
    // The check below can see a secret kept in clear: the legacy row is one.
    assert!(holds(&raw_contents(&url).await, LEGACY_CODE));
    store.close().await;

    // The new key first, the old one still there to open what it sealed.
    let store = connect(&url, &[new.clone(), old.clone()]).await;
    let before = store.sealed_key_ids().await.unwrap();
    assert_eq!(
        before.get(&Some("2025".to_owned())),
        Some(&10),
        "{before:?}"
    );
    assert_eq!(before.get(&None), Some(&1), "{before:?}");
    let mut progress = Vec::new();
    let report = store.reseal_all(2, |p| progress.push(p)).await.unwrap();
    assert_eq!(report.active_key, "2026");
    assert_eq!(report.remaining, 0);
    let resealed: BTreeMap<SealedKind, u64> = report.resealed.iter().copied().collect();
    assert_eq!(
        resealed,
        BTreeMap::from([
            (SealedKind::LinkSecrets, 1),
            (SealedKind::SessionUrls, 1),
            (SealedKind::EventUrls, 2),
            (SealedKind::Deliveries, 6),
            (SealedKind::VendorConnections, 1),
        ])
    );
    // Batches of two: the six deliveries took three, each reported.
    let deliveries: Vec<(u64, u64, u64)> = progress
        .iter()
        .filter(|p| p.kind == SealedKind::Deliveries)
        .map(|p| (p.checked, p.total, p.resealed))
        .collect();
    assert_eq!(deliveries, [(2, 6, 2), (4, 6, 4), (6, 6, 6)]);
    assert_eq!(
        store.sealed_key_ids().await.unwrap(),
        BTreeMap::from([(Some("2026".to_owned()), 11)])
    );
    // Nothing left to do: a second run changes nothing.
    let again = store.reseal_all(500, |_| {}).await.unwrap();
    assert!(again.resealed.iter().all(|(_, n)| *n == 0), "{again:?}");
    store.close().await;
    assert!(!holds(&raw_contents(&url).await, LEGACY_CODE));

    // The old key removed: everything still reads.
    let store = connect(&url, std::slice::from_ref(&new)).await;
    // Re-sealed as it was: same settings, same version (no replica rebuilds its provider).
    let reopened = store.connection(&connection.id).await.unwrap().unwrap();
    assert_eq!(reopened.settings.expose(), &connection_settings);
    assert_eq!(reopened.version, connection.version);
    let record = store.get_link(&tenant, &link).await.unwrap().unwrap();
    assert_eq!(record.link.session_url.as_deref(), Some(RECONNECT_URL));
    let access = store.link_access(&tenant, &link).await.unwrap();
    assert_eq!(access.secret.unwrap().expose_secret(), ACCESS_TOKEN);
    let events = store
        .list_events(&tenant, 0, &EventFilter::default(), 10)
        .await
        .unwrap();
    assert!(matches!(
        &events[1].payload,
        EventPayload::ReconnectRequired { reconnect_url: Some(u), .. } if u == RECONNECT_URL
    ));
    let legacy = store
        .get_delivery(&legacy.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&legacy.body.unwrap()).contains(LEGACY_CODE));
    let claimed = store
        .claim_deliveries("w", Utc::now() + Duration::seconds(30), 10)
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&claimed[0].body).contains(AUTH_CODE));
    store.close().await;

    // And the old key alone no longer opens anything: it really was retired.
    let store = connect(&url, std::slice::from_ref(&old)).await;
    match store.get_link(&tenant, &link).await {
        Err(StoreError::Keyring(KeyringError::UnknownKey(key))) => assert_eq!(key, "2026"),
        other => panic!("expected the new key to be needed, got {other:?}"),
    }
    store.close().await;
    testing::drop_database(&url).await;
}

#[tokio::test]
async fn rotation_names_a_key_it_needs_and_does_not_have() {
    let url = testing::fresh_database_url().await;
    let tenant: TenantId = "tenant-a".parse().unwrap();
    let store = connect(&url, &[key_pair("gone")]).await;
    store
        .ensure_tenants(std::slice::from_ref(&tenant))
        .await
        .unwrap();
    fill(&store, &tenant, 1).await;
    store.close().await;

    let store = connect(&url, &[key_pair("2026")]).await;
    match store.reseal_all(500, |_| {}).await {
        Err(StoreError::Keyring(KeyringError::UnknownKey(key))) => assert_eq!(key, "gone"),
        other => panic!("expected UnknownKey(gone), got {other:?}"),
    }
    store.close().await;
    testing::drop_database(&url).await;
}
