//! `kill -9` in the middle of a burst of signed webhooks, duplicates mixed in: after a restart
//! on the same database, every delivery that got `200` produced its event exactly once, and the
//! vendor's retries of the rest do too.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{
    all_events, authed, burst_body as body, burst_counts, client, post_signed, serve_canopy,
    session_meta, workdir,
};
use coverwatch_proto::v1;
use coverwatch_sandbox::{CanopySimConfig, Sandbox, SandboxConfig};
use futures::StreamExt;

const DISTINCT: usize = 2_000;
const DUPLICATES: usize = 400;

/// POST one signed delivery; `true` when coverwatch acknowledged it with 200.
async fn post(http: &reqwest::Client, url: &str, body: &[u8]) -> bool {
    post_signed(http, url, body)
        .await
        .is_ok_and(|status| status == 200)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_kill_9_mid_burst_loses_nothing_acknowledged() {
    let sandbox = Sandbox::start(SandboxConfig::for_tests()).await.unwrap();
    let canopy = CanopySimConfig::default();
    let api = sandbox.canopy_base_url();
    let widgets = format!("{}/canopy", sandbox.base_url());
    let dir = workdir();
    let database_url = coverwatch_store::testing::fresh_database_url().await;

    let mut first = serve_canopy(&dir, &database_url, &canopy, &api, &widgets, &[]);
    let started = client(&first.grpc)
        .await
        .start_link(authed(v1::StartLinkRequest {
            provider: v1::Provider::Canopy as i32,
            user_id: "burst-user".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    // What the vendor's deliveries carry to name the link: the session's meta data.
    let link = session_meta(&started.session_url);

    // 2,000 distinct deliveries and 400 copies of earlier ones, 32 in flight.
    let mut order: Vec<usize> = (0..DISTINCT).collect();
    order.extend((0..DUPLICATES).map(|i| (i * 7919) % DISTINCT));
    order.sort_by_key(|n| (n * 104_729) % (DISTINCT + DUPLICATES));
    let http = reqwest::Client::new();
    let url = format!("{}/webhooks/canopy", first.http);
    let sent = Arc::new(AtomicUsize::new(0));
    let kill_after = (DISTINCT + DUPLICATES) / 3;
    let burst = futures::stream::iter(order.clone())
        .map(|n| {
            let (http, url, body, sent) = (http.clone(), url.clone(), body(&link, n), sent.clone());
            async move {
                let ok = post(&http, &url, &body).await;
                sent.fetch_add(1, Ordering::SeqCst);
                (n, ok)
            }
        })
        .buffer_unordered(32);
    let mut burst = std::pin::pin!(burst);
    let mut acknowledged = std::collections::BTreeSet::new();
    let mut refused = Vec::new();
    let mut killed = false;
    while let Some((n, ok)) = burst.next().await {
        if ok {
            acknowledged.insert(n);
        } else {
            refused.push(n);
        }
        if !killed && sent.load(Ordering::SeqCst) >= kill_after {
            first.child.kill().unwrap(); // SIGKILL: no graceful anything
            first.child.wait().unwrap();
            killed = true;
        }
    }
    assert!(killed);
    assert!(
        acknowledged.len() >= kill_after / 2,
        "the burst was under way when killed"
    );
    assert!(
        !refused.is_empty(),
        "deliveries after the kill were refused"
    );

    // Restart on the same database; the vendor retries what was not acknowledged.
    let mut second = serve_canopy(&dir, &database_url, &canopy, &api, &widgets, &[]);
    let url = format!("{}/webhooks/canopy", second.http);
    for n in &refused {
        assert!(
            post(&http, &url, &body(&link, *n)).await,
            "retry of {n} is acknowledged"
        );
    }

    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    let counts = loop {
        let counts = burst_counts(&all_events(&second.grpc).await);
        if counts.len() >= DISTINCT || tokio::time::Instant::now() > deadline {
            break counts;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for n in &acknowledged {
        let key = format!("BURST_{n:05}");
        assert_eq!(
            counts.get(&key),
            Some(&1),
            "acknowledged delivery {key} produced exactly one event"
        );
    }
    assert_eq!(
        counts.len(),
        DISTINCT,
        "every distinct delivery produced its event"
    );
    assert!(
        counts.values().all(|&c| c == 1),
        "no delivery produced two events"
    );

    second.child.kill().unwrap();
    second.child.wait().unwrap();
    sandbox.shutdown().await;
}
