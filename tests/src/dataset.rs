//! A large data set for read benchmarks: `links` links and `events` events of one tenant,
//! written by PostgreSQL itself (`INSERT … SELECT generate_series`, in chunks), which fills
//! millions of rows in minutes where row-by-row inserts would take hours.
//!
//! Rows are what the service writes: prefixed ids, JSON columns the store parses. Nothing
//! generated carries a secret (no session URL, no credential; the event kinds used have no
//! sealed value), so there is nothing to seal, and every row opens with any key.
//!
//! Shape: each user has two links; events go round-robin over links, so a link has
//! `events / links` events and a user twice that; one event in ten is `data.refreshed`, the
//! others `vendor.event`. Each link has one current-term policy, `pol-0`; even-numbered links
//! hold two versions of it (so that `GetPolicy` has an older version to skip), odd ones one.
//!
//! Secondary indexes are dropped while the rows go in and rebuilt afterwards from the
//! definitions the migrations gave them (`pg_get_indexdef`): one sorted build per index is
//! several times faster than maintaining six B-trees row by row, and the end state is the
//! migrated schema exactly.

use coverwatch_core::policy::{Carrier, Policy, PolicyStatus, PolicyType};
use coverwatch_core::{EventPayload, ProviderDetail};

/// Rows per statement: one transaction per chunk keeps the WAL and memory bounded.
const CHUNK: i64 = 500_000;

/// The id of generated link number `n` (0-based), as the service would print it.
pub fn link_id(n: i64) -> String {
    format!("lnk_{:032x}", n as u128 + 1)
}

/// The user of generated link number `n`.
pub fn user_id(n: i64, links: i64) -> String {
    format!("user-{}", n % (links / 2).max(1))
}

/// Fills `tenant`'s links and events in the (migrated, PostgreSQL) database at `url`.
/// `progress` is called after each chunk with (table, rows written so far).
pub async fn generate(
    url: &str,
    tenant: &str,
    links: i64,
    events: i64,
    mut progress: impl FnMut(&str, i64),
) -> Result<(), sqlx::Error> {
    use sqlx::{Connection, Row};
    let mut conn = sqlx::PgConnection::connect(url).await?;
    // Indexes that back a constraint (primary keys) stay: dropping them would need the
    // constraint dropped too, and the id-ordered inserts keep them cheap.
    let rebuild: Vec<(String, String)> = sqlx::query(
        "SELECT i.indexname, i.indexdef FROM pg_indexes i
         WHERE i.schemaname = current_schema()
           AND i.tablename IN ('links', 'events', 'policy_snapshots')
           AND NOT EXISTS (SELECT 1 FROM pg_constraint c
                           WHERE c.conname = i.indexname AND c.connamespace = i.schemaname::regnamespace)
         ORDER BY i.indexname",
    )
    .fetch_all(&mut conn)
    .await?
    .iter()
    .map(|row| (row.get(0), row.get(1)))
    .collect();
    for (name, _) in &rebuild {
        sqlx::query(&format!("DROP INDEX \"{name}\""))
            .execute(&mut conn)
            .await?;
    }
    let users = (links / 2).max(1);
    let mut done = 0;
    while done < links {
        let end = (done + CHUNK).min(links);
        sqlx::query(
            "INSERT INTO links (id, tenant_id, user_id, provider, state, metadata, created_at, updated_at)
             SELECT 'lnk_' || lpad(to_hex(n + 1), 32, '0'), $1, 'user-' || (n % $2),
                    CASE WHEN n % 2 = 0 THEN 'axle' ELSE 'canopy' END,
                    CASE WHEN n % 50 = 0 THEN 'RECONNECT_REQUIRED' ELSE 'ACTIVE' END,
                    '{}', 1700000000000 + n, 1700000000000 + n
             FROM generate_series($3::bigint, $4::bigint - 1) AS n",
        )
        .bind(tenant)
        .bind(users)
        .bind(done)
        .bind(end)
        .execute(&mut conn)
        .await?;
        done = end;
        progress("links", done);
    }
    let vendor = serde_json::to_string(&EventPayload::Vendor {
        vendor_type: "policy.checked".into(),
    })
    .expect("serializable");
    let refreshed =
        serde_json::to_string(&EventPayload::DataRefreshed { policies: 1 }).expect("serializable");
    let detail = serde_json::to_string(&ProviderDetail::None).expect("serializable");
    let mut done = 0;
    while done < events {
        let end = (done + CHUNK).min(events);
        sqlx::query(
            "INSERT INTO events (id, tenant_id, link_id, user_id, provider, kind, occurred_at,
                                 recorded_at, payload, detail)
             SELECT 'evt_' || lpad(to_hex(n + 1), 32, '0'), $1,
                    'lnk_' || lpad(to_hex(n % $2 + 1), 32, '0'), 'user-' || ((n % $2) % $3),
                    CASE WHEN (n % $2) % 2 = 0 THEN 'axle' ELSE 'canopy' END,
                    CASE WHEN n % 10 = 0 THEN 'data.refreshed' ELSE 'vendor.event' END,
                    1700000000000 + n, 1700000000000 + n,
                    CASE WHEN n % 10 = 0 THEN $4 ELSE $5 END, $6
             FROM generate_series($7::bigint, $8::bigint - 1) AS n ORDER BY n",
        )
        .bind(tenant)
        .bind(links.max(1))
        .bind(users)
        .bind(&refreshed)
        .bind(&vendor)
        .bind(&detail)
        .bind(done)
        .bind(end)
        .execute(&mut conn)
        .await?;
        done = end;
        progress("events", done);
    }
    let normalized = serde_json::to_string(&sample_policy()).expect("serializable");
    let mut done = 0;
    while done < links {
        let end = (done + CHUNK).min(links);
        sqlx::query(
            "INSERT INTO policy_snapshots (tenant_id, link_id, policy_external_id, term, version,
                                           content_hash, normalized, raw, fetched_at)
             SELECT $1, 'lnk_' || lpad(to_hex(n + 1), 32, '0'), 'pol-0', 'current', v,
                    'hash-' || n || '-' || v, $2, '{}', 1700000000000 + n + v
             FROM generate_series($3::bigint, $4::bigint - 1) AS n,
                  LATERAL generate_series(1, CASE WHEN n % 2 = 0 THEN 2 ELSE 1 END) AS v
             ORDER BY n, v",
        )
        .bind(tenant)
        .bind(&normalized)
        .bind(done)
        .bind(end)
        .execute(&mut conn)
        .await?;
        done = end;
        progress("policy_snapshots", done);
    }
    // Index builds sort in memory up to this size, and spill to disk beyond it.
    sqlx::query("SET maintenance_work_mem = '256MB'")
        .execute(&mut conn)
        .await?;
    for (_, definition) in &rebuild {
        sqlx::query(definition).execute(&mut conn).await?;
    }
    for table in ["links", "events", "policy_snapshots"] {
        sqlx::query(&format!("VACUUM ANALYZE {table}"))
            .execute(&mut conn)
            .await?;
    }
    conn.close().await
}

/// The one policy every generated link holds: a plain auto policy with no sealed field.
pub fn sample_policy() -> Policy {
    Policy {
        external_id: "pol-0".into(),
        policy_type: PolicyType::Auto,
        carrier: Carrier {
            id: "bench-carrier".into(),
            name: Some("Bench Carrier".into()),
        },
        policy_number: Some("BENCH-1".into()),
        status: PolicyStatus::Active,
        effective_date: None,
        expiration_date: None,
        cancelled_date: None,
        premium_cents: Some(123_456),
        address: None,
        vehicles: vec![],
        dwellings: vec![],
        coverages: vec![],
        insureds: vec![],
        interested_parties: vec![],
        documents: vec![],
    }
}
