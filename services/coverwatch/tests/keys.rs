//! The operator's side of secrets at rest, through the binary: `coverwatch keys rotate`
//! re-seals everything so that the old key can be removed from `encryption_keys`, and a
//! half-configured Axle shared header stops start-up naming the missing key.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use common::{command, wait_with_deadline, workdir};
use coverwatch_core::event::EventPayload;
use coverwatch_core::{LinkId, ProviderId, TenantId};
use coverwatch_store::{
    ACCESS_SECRET, ConnectOptions, Ingested, Keyring, NewDelivery, NewEvent, NewLink, Store,
};
use secrecy::{ExposeSecret, SecretString};

const SESSION_URL: &str = "https://vendor.example/reconnect?reconnectToken=tok-1";

fn keys_env(keys: &[(&str, &str)]) -> String {
    let entries: Vec<String> = keys
        .iter()
        .map(|(id, key)| format!("{{id=\"{id}\", key=\"{key}\"}}"))
        .collect();
    format!("[{}]", entries.join(", "))
}

async fn store(url: &str, keys: &[(&str, &str)]) -> Store {
    let pairs: Vec<(String, String)> = keys
        .iter()
        .map(|(id, key)| ((*id).to_owned(), (*key).to_owned()))
        .collect();
    let store = Store::connect(
        &ConnectOptions::new(url.to_owned()),
        Keyring::from_base64(&pairs).unwrap(),
    )
    .await
    .unwrap();
    store.migrate().await.unwrap();
    store
}

/// A link with a session URL and an access token, and three deliveries, sealed with `keys`.
async fn fill(store: &Store, tenant: &TenantId) -> LinkId {
    store
        .ensure_tenants(std::slice::from_ref(tenant))
        .await
        .unwrap();
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
                reconnect: true,
            }),
        )
        .await
        .unwrap();
    let mut tx = store.begin_link_update(tenant, &id).await.unwrap().unwrap();
    tx.put_secrets(vec![(
        ACCESS_SECRET.to_owned(),
        Some(SecretString::from("access-token-1")),
    )])
    .await
    .unwrap();
    tx.commit().await.unwrap();
    for n in 0..3 {
        let stored = store
            .ingest_delivery(NewDelivery {
                provider: ProviderId::from_static("canopy"),
                dedupe_key: format!("id:{n}"),
                link: None,
                path: String::new(),
                headers: vec![("content-type".into(), "application/json".into())],
                body: format!(r#"{{"n":{n}}}"#).into_bytes(),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_reseals_everything_so_the_old_key_can_be_removed() {
    let dir = workdir();
    let url = coverwatch_store::testing::fresh_database_url().await;
    let old = Keyring::generate_key_base64();
    let new = Keyring::generate_key_base64();
    let tenant: TenantId = "acme".parse().unwrap();

    let before = store(&url, &[("old", &old)]).await;
    let link = fill(&before, &tenant).await;
    before.close().await;

    // Without the old key nothing can be re-sealed: refused, naming the key it needs.
    let refused = command(&dir, &url)
        .args(["keys", "rotate"])
        .env("COVERWATCH_ENCRYPTION_KEYS", keys_env(&[("new", &new)]))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(stderr.contains("encryption key `old`"), "{stderr}");

    // The new key first, the old one still there: everything moves to the new one, in batches
    // of two, with progress.
    let rotated = command(&dir, &url)
        .args(["keys", "rotate", "--batch", "2"])
        .env(
            "COVERWATCH_ENCRYPTION_KEYS",
            keys_env(&[("new", &new), ("old", &old)]),
        )
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&rotated.stdout);
    assert!(
        rotated.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&rotated.stderr)
    );
    for line in [
        "re-sealing with key `new`, 2 rows per transaction",
        "link secrets: 1/1 checked, 1 re-sealed",
        "session URLs: 1/1 checked, 1 re-sealed",
        "event URLs: 1/1 checked, 1 re-sealed",
        "deliveries: 2/3 checked, 2 re-sealed",
        "deliveries: 3/3 checked, 3 re-sealed",
        "done: 6 values re-sealed; all 6 sealed values use key `new`",
        "no longer needed, and can be removed from encryption_keys: old",
    ] {
        assert!(
            stdout.lines().any(|l| l == line),
            "no `{line}` in:\n{stdout}"
        );
    }

    // The old key removed: everything reads.
    let after = store(&url, &[("new", &new)]).await;
    let record = after.get_link(&tenant, &link).await.unwrap().unwrap();
    assert_eq!(record.link.session_url.as_deref(), Some(SESSION_URL));
    let access = after.link_access(&tenant, &link).await.unwrap();
    assert_eq!(access.secret.unwrap().expose_secret(), "access-token-1");
    let claimed = after
        .claim_deliveries("w", Utc::now() + chrono::Duration::seconds(30), 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 3);
    assert_eq!(claimed[0].body, br#"{"n":0}"#);
    assert_eq!(
        after.sealed_key_ids().await.unwrap(),
        BTreeMap::from([(Some("new".to_owned()), 6)])
    );
    after.close().await;
    coverwatch_store::testing::drop_database(&url).await;
}

#[test]
fn a_half_configured_axle_shared_header_refuses_to_start() {
    let dir = workdir();
    for (set, missing) in [
        (
            "COVERWATCH_VENDORS__AXLE__WEBHOOK_HEADER_NAME",
            "vendors.axle.webhook_header_value",
        ),
        (
            "COVERWATCH_VENDORS__AXLE__WEBHOOK_HEADER_VALUE",
            "vendors.axle.webhook_header_name",
        ),
    ] {
        let mut child = command(&dir, "sqlite::memory:")
            .arg("serve")
            .env(
                "COVERWATCH_VENDORS__AXLE__BASE_URL",
                "https://sandbox.axle.insure",
            )
            .env("COVERWATCH_VENDORS__AXLE__CLIENT_ID", "cli_1")
            .env("COVERWATCH_VENDORS__AXLE__CLIENT_SECRET", "client-secret-1")
            .env(set, "x-shared-0123456789")
            .spawn()
            .unwrap();
        let status = wait_with_deadline(&mut child, Duration::from_secs(30));
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
        assert!(!status.success(), "started with only {set}");
        assert!(stderr.contains(&format!("`{missing}`")), "{stderr}");
    }
}
