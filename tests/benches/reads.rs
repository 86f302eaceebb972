//! Read latency against data-set size, on PostgreSQL: p50/p99 of each read the gRPC service
//! makes (the same store calls), at a small size and a large one, in the same run, so that the
//! large figure is printed next to its baseline.
//!
//! `COVERWATCH_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
//!  READS_SIZES=10000:100000,1000000:10000000 cargo bench -p coverwatch-tests --bench reads`
//!
//! Each size gets a fresh database (filled by `coverwatch_tests::dataset`), dropped at the end.
//! 1M links / 10M events need about 7 GB of disk while they exist. `READS_SAMPLES` sets the
//! calls per read (default 300).

use std::time::{Duration, Instant};

use coverwatch_core::policy::PolicyTerm;
use coverwatch_core::{EventKind, LinkState, TenantId};
use coverwatch_store::{ConnectOptions, EventFilter, LinkFilter, Store, testing};
use coverwatch_tests::dataset;

const TENANT: &str = "bench-tenant";

type Figures = Vec<(&'static str, Duration, Duration)>;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn measure(store: &Store, links: i64, samples: usize) -> Figures {
    let tenant: TenantId = TENANT.parse().unwrap();
    let mut figures = Vec::new();
    let mut pick = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        // xorshift: spreads picks over the whole set without a dependency.
        pick ^= pick << 13;
        pick ^= pick >> 7;
        pick ^= pick << 17;
        (pick % links as u64) as i64
    };
    macro_rules! read {
        ($name:literal, |$n:ident| $call:expr) => {{
            let mut times = Vec::with_capacity(samples);
            for _ in 0..samples {
                let $n = next();
                let start = Instant::now();
                let found = $call.await.expect($name);
                times.push(start.elapsed());
                std::hint::black_box(found);
            }
            times.sort();
            figures.push(($name, percentile(&times, 0.5), percentile(&times, 0.99)));
        }};
    }
    let link = |n: i64| dataset::link_id(n).parse().unwrap();
    read!("GetLink", |n| store.get_link(&tenant, &link(n)));
    read!("GetPolicy (latest version of one policy)", |n| store
        .latest_policy(
            &tenant,
            &link(n),
            "pol-0",
            PolicyTerm::Current
        ));
    read!("ListPolicies (latest of each policy)", |n| store
        .latest_policies(&tenant, &link(n), PolicyTerm::Current));
    read!("ListEvents by link, page 100", |n| store.list_events(
        &tenant,
        0,
        &EventFilter {
            link_id: Some(link(n)),
            ..Default::default()
        },
        100
    ));
    read!("ListEvents by user, page 100", |n| store.list_events(
        &tenant,
        0,
        &EventFilter {
            user_id: Some(dataset::user_id(n, links).parse().unwrap()),
            ..Default::default()
        },
        100
    ));
    read!("ListEvents by kind (1 in 10), page 100", |n| store
        .list_events(
            &tenant,
            n,
            &EventFilter {
                kinds: vec![EventKind::DataRefreshed],
                ..Default::default()
            },
            100
        ));
    read!("ListEvents by two kinds, page 100", |n| store.list_events(
        &tenant,
        n,
        &EventFilter {
            kinds: vec![EventKind::DataRefreshed, EventKind::Stale],
            ..Default::default()
        },
        100
    ));
    read!("ListEvents from a cursor, page 500", |n| store.list_events(
        &tenant,
        n,
        &EventFilter::default(),
        500
    ));
    read!("ListLinks first page (100)", |_n| store.list_links(
        &tenant,
        &LinkFilter {
            limit: 100,
            ..Default::default()
        }
    ));
    read!("ListLinks a later page (after a random link)", |n| store
        .list_links(
            &tenant,
            &LinkFilter {
                after: Some(link(n)),
                limit: 100,
                ..Default::default()
            }
        ));
    read!("ListLinks by user", |n| store.list_links(
        &tenant,
        &LinkFilter {
            user_id: Some(dataset::user_id(n, links).parse().unwrap()),
            limit: 100,
            ..Default::default()
        }
    ));
    read!("ListLinks by state (1 in 50), page 100", |_n| store
        .list_links(
            &tenant,
            &LinkFilter {
                states: vec![LinkState::ReconnectRequired],
                limit: 100,
                ..Default::default()
            }
        ));
    figures
}

/// The plan of each query shape, so that a regression to a scan shows by name.
async fn plans(url: &str) {
    use sqlx::{Connection, Row};
    let mut conn = sqlx::PgConnection::connect(url).await.expect("connect");
    let queries = [
        (
            "events by user",
            "SELECT * FROM events WHERE tenant_id = 'bench-tenant' AND cursor > 0 AND user_id = 'user-7' ORDER BY cursor LIMIT 100",
        ),
        (
            "events by kind",
            "SELECT * FROM events WHERE tenant_id = 'bench-tenant' AND cursor > 0 AND kind = 'data.refreshed' ORDER BY cursor LIMIT 100",
        ),
        (
            "events by link",
            "SELECT * FROM events WHERE tenant_id = 'bench-tenant' AND cursor > 0 AND link_id = 'lnk_00000000000000000000000000000007' ORDER BY cursor LIMIT 100",
        ),
        (
            "links first page",
            "SELECT * FROM links WHERE tenant_id = 'bench-tenant' ORDER BY id LIMIT 101",
        ),
        (
            "links later page",
            "SELECT * FROM links WHERE tenant_id = 'bench-tenant' AND id > 'lnk_0000000000000000000000000000a000' ORDER BY id LIMIT 101",
        ),
        (
            "policy snapshots of a link",
            "SELECT * FROM policy_snapshots WHERE tenant_id = 'bench-tenant' AND link_id = 'lnk_00000000000000000000000000000007' AND term = 'current' ORDER BY policy_external_id, version DESC",
        ),
        (
            "links by state",
            "SELECT * FROM links WHERE tenant_id = 'bench-tenant' AND state IN ('RECONNECT_REQUIRED') ORDER BY id LIMIT 101",
        ),
    ];
    let size: String = sqlx::query("SELECT pg_size_pretty(pg_database_size(current_database()))")
        .fetch_one(&mut conn)
        .await
        .expect("database size")
        .get(0);
    println!("  database size: {size}");
    for (name, sql) in queries {
        let rows = sqlx::query(&format!("EXPLAIN {sql}"))
            .fetch_all(&mut conn)
            .await
            .expect("explain");
        let plan: Vec<String> = rows.iter().map(|r| r.get::<String, _>(0)).collect();
        println!("  plan, {name}: {}", plan.join(" / ").trim());
    }
    let _ = conn.close().await;
}

fn main() {
    let Ok(server) = std::env::var(testing::TEST_DATABASE_URL_VAR) else {
        println!(
            "reads bench NOT RUN: it measures PostgreSQL; set {} (e.g. postgres://postgres@127.0.0.1:5432/test)",
            testing::TEST_DATABASE_URL_VAR
        );
        return;
    };
    if !server.starts_with("postgres") {
        println!("reads bench NOT RUN: {server} is not a PostgreSQL URL");
        return;
    }
    let sizes: Vec<(i64, i64)> = std::env::var("READS_SIZES")
        .unwrap_or_else(|_| "10000:100000".into())
        .split(',')
        .map(|pair| {
            let (l, e) = pair.split_once(':').expect("READS_SIZES: links:events,…");
            (
                l.trim().parse().expect("links"),
                e.trim().parse().expect("events"),
            )
        })
        .collect();
    let samples: usize = std::env::var("READS_SAMPLES")
        .ok()
        .map(|s| s.parse().expect("READS_SAMPLES"))
        .unwrap_or(300);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let mut all: Vec<((i64, i64), Figures)> = Vec::new();
        for (links, events) in sizes {
            let url = testing::fresh_database_url().await;
            let store = Store::connect(&ConnectOptions::new(url.clone()), testing::keyring())
                .await
                .expect("connect");
            store.migrate().await.expect("migrate");
            let start = Instant::now();
            dataset::generate(&url, TENANT, links, events, |table, n| {
                eprintln!("  {table}: {n} rows ({:.0?})", start.elapsed())
            })
            .await
            .expect("generate");
            println!(
                "{links} links / {events} events generated in {:.1?}",
                start.elapsed()
            );
            plans(&url).await;
            all.push(((links, events), measure(&store, links, samples).await));
            drop(store);
            testing::drop_database(&url).await;
        }
        let base = &all[0];
        println!(
            "\n{:<42} {:>22} {:>22}",
            "read",
            "p50 / p99 (baseline)",
            ""
        );
        for (size, figures) in &all {
            println!("-- {} links / {} events", size.0, size.1);
            for ((name, p50, p99), (_, b50, b99)) in figures.iter().zip(&base.1) {
                println!(
                    "{name:<42} p50 {:>8.2} ms  p99 {:>8.2} ms   p99 vs baseline {:.2}x (baseline p50 {:.2} ms, p99 {:.2} ms)",
                    p50.as_secs_f64() * 1e3,
                    p99.as_secs_f64() * 1e3,
                    p99.as_secs_f64() / b99.as_secs_f64(),
                    b50.as_secs_f64() * 1e3,
                    b99.as_secs_f64() * 1e3,
                );
            }
        }
    });
}
