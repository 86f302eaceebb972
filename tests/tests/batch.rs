//! Batched processing (issue 14): a worker claims a batch of deliveries, makes their vendor
//! calls side by side and commits all their changes in one transaction. One delivery failing (a
//! vendor fault or a panic before the transaction, an error or a panic inside it) fails alone:
//! the rest of its batch commits once and it is retried by itself; a batch whose commit fails
//! leaves nothing behind, and every delivery of it is applied exactly once afterwards; one
//! link's deliveries claimed together are still applied one after another, in the order they
//! were received.
//!
//! A commit hook of the worker records each batch's deliveries and, while `hold` is set, fails
//! the commit: that is how the tests gather deliveries into one batch and break its commit. An
//! apply hook fails or panics named deliveries once their changes are in the batch's
//! transaction.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use coverwatch::Overrides;
use coverwatch_engine::{ApplyHook, BatchCommitHook, ProviderRegistry, WorkerConfig};
use coverwatch_tests::fake_provider::FakeProvider;
use coverwatch_tests::flows::{link_events, wait_for_state};
use coverwatch_tests::{Client, TENANT_A, TestServer, eventually, fast_worker, test_config, v1};
use serde_json::json;

const DEADLINE: Duration = Duration::from_secs(30);

/// One batch's delivery ids, and whether the hook let it commit.
type Seen = (BTreeSet<String>, bool);

/// What the commit hook saw.
#[derive(Clone, Default)]
struct Batches {
    hold: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Deliveries whose changes fail, or panic, once written into the batch's transaction.
    fail_apply: Arc<Mutex<BTreeSet<String>>>,
    panic_apply: Arc<Mutex<BTreeSet<String>>>,
    /// Every delivery the apply hook saw, in order.
    applied: Arc<Mutex<Vec<String>>>,
}

impl Batches {
    fn apply_hook(&self) -> ApplyHook {
        let batches = self.clone();
        ApplyHook(Arc::new(move |id| {
            let id = id.to_string();
            batches.applied.lock().unwrap().push(id.clone());
            if batches.panic_apply.lock().unwrap().contains(&id) {
                panic!("injected: applying delivery {id} panics");
            }
            if batches.fail_apply.lock().unwrap().contains(&id) {
                return Err(format!("injected: applying delivery {id} fails"));
            }
            Ok(())
        }))
    }

    fn hook(&self) -> BatchCommitHook {
        let batches = self.clone();
        BatchCommitHook(Arc::new(move |ids| {
            let held = batches.hold.load(Ordering::SeqCst);
            let ids = ids.iter().map(ToString::to_string).collect();
            batches.seen.lock().unwrap().push((ids, !held));
            if held {
                Err("injected: the batch commit fails".into())
            } else {
                Ok(())
            }
        }))
    }

    /// Wait for a batch holding every one of `ids`, rejected (`committed` off) or let through.
    async fn wait_for_batch_of(&self, ids: &[String], committed: bool) {
        let wanted: BTreeSet<String> = ids.iter().cloned().collect();
        eventually(
            &format!(
                "a batch (committed: {committed}) of {} deliveries",
                ids.len()
            ),
            DEADLINE,
            || async {
                self.seen
                    .lock()
                    .unwrap()
                    .iter()
                    .any(|(batch, passed)| *passed == committed && batch.is_superset(&wanted))
                    .then_some(())
            },
        )
        .await
    }

    fn committed_with(&self, id: &str) -> Vec<BTreeSet<String>> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(batch, passed)| *passed && batch.contains(id))
            .map(|(batch, _)| batch.clone())
            .collect()
    }
}

async fn server(fake: &FakeProvider, batches: &Batches) -> TestServer {
    let registry = ProviderRegistry::new().register(Arc::new(fake.clone()));
    TestServer::start_with(
        test_config().await,
        Overrides {
            providers: Some(registry),
            worker: Some(WorkerConfig {
                before_batch_commit: Some(batches.hook()),
                after_apply: Some(batches.apply_hook()),
                // Rejected batches count as attempts; the faults here must not dead-letter.
                max_attempts: 1_000,
                ..fast_worker()
            }),
            plugins: None,
            stream_poll: None,
            sweep: None,
        },
    )
    .await
}

/// POST a delivery as the vendor would; returns the stored delivery's id.
async fn deliver(server: &TestServer, url: &str, body: serde_json::Value) -> String {
    let response = server
        .http
        .post(url)
        .json(&body)
        .send()
        .await
        .expect("webhook POST");
    assert_eq!(response.status(), 200, "delivery stored");
    let answer: serde_json::Value = response.json().await.unwrap();
    answer["delivery_id"]
        .as_str()
        .unwrap_or_else(|| panic!("stored, with an id: {answer}"))
        .to_owned()
}

/// The vendor event ids of the link's events, in cursor order.
async fn vendor_event_ids(client: &Client, link_id: &str) -> Vec<String> {
    link_events(client, link_id)
        .await
        .into_iter()
        .filter_map(|e| match e.provider_detail {
            Some(v1::event::ProviderDetail::Axle(detail)) => detail.event_id,
            _ => None,
        })
        .collect()
}

fn count(ids: &[String], id: &str) -> usize {
    ids.iter().filter(|i| *i == id).count()
}

/// `n` Axle-shaped links of `client`'s tenant, each completed (`acc-{i}`) and active.
async fn active_links(
    server: &TestServer,
    fake: &FakeProvider,
    client: &Client,
    n: usize,
) -> Vec<String> {
    let mut links = Vec::new();
    for i in 0..n {
        let link = client
            .clone()
            .start_link(v1::StartLinkRequest {
                provider: v1::Provider::Axle as i32,
                user_id: format!("user-{i}"),
                ..Default::default()
            })
            .await
            .expect("StartLink")
            .into_inner()
            .link
            .expect("a link");
        deliver(
            server,
            &fake.webhook_url(&link.id),
            json!({"id": format!("evt-complete-{i}"), "type": "completed", "account": format!("acc-{i}")}),
        )
        .await;
        wait_for_state(client, &link.id, v1::LinkState::Active).await;
        links.push(link.id);
    }
    links
}

/// Wait until every link but those at `except` shows its `evt-change-{i}` (a batch's changes
/// commit together, so the batch may still be committing when its hook has run).
async fn wait_for_changes_but(client: &Client, links: &[String], except: &[usize]) {
    eventually("the batch's changes to show", DEADLINE, || async {
        for (i, link) in links.iter().enumerate() {
            if !except.contains(&i)
                && count(
                    &vendor_event_ids(client, link).await,
                    &format!("evt-change-{i}"),
                ) == 0
            {
                return None;
            }
        }
        Some(())
    })
    .await;
}

/// Each link's `evt-change-{i}` applied exactly once, but for the links at `except`, which have
/// none of it.
async fn assert_changes_but(client: &Client, links: &[String], except: &[usize]) {
    for (i, link) in links.iter().enumerate() {
        let ids = vendor_event_ids(client, link).await;
        assert_eq!(
            count(&ids, &format!("evt-change-{i}")),
            usize::from(!except.contains(&i)),
            "link {i}: {ids:?}"
        );
    }
}

#[tokio::test]
async fn one_failing_and_one_panicking_delivery_fail_alone_and_the_rest_of_their_batch_commits_once()
 {
    const LINKS: usize = 6;
    let fake = FakeProvider::default();
    let batches = Batches::default();
    let server = server(&fake, &batches).await;
    let client = server.client(TENANT_A).await;
    let links = active_links(&server, &fake, &client, LINKS).await;
    {
        let mut state = fake.state.lock().unwrap();
        state.failing_fetching.insert("acc-1".into());
        state.panic_fetching.insert("acc-2".into());
    }

    // Held, so that the six deliveries end up claimed together, and the commit of every batch
    // fails meanwhile.
    batches.hold.store(true, Ordering::SeqCst);
    let mut deliveries = Vec::new();
    for (i, link) in links.iter().enumerate() {
        deliveries.push(
            deliver(
                &server,
                &fake.webhook_url(link),
                json!({"id": format!("evt-change-{i}"), "type": "changed", "account": format!("acc-{i}")}),
            )
            .await,
        );
    }
    batches.wait_for_batch_of(&deliveries, false).await;
    // Nothing of a batch whose commit failed happened: no event of it, on any link.
    for (i, link) in links.iter().enumerate() {
        let ids = vendor_event_ids(&client, link).await;
        assert_eq!(count(&ids, &format!("evt-change-{i}")), 0, "{ids:?}");
    }

    batches.hold.store(false, Ordering::SeqCst);
    batches.wait_for_batch_of(&deliveries, true).await;
    // The hook runs just before the commit, so the batch may still be committing: wait until
    // its events show (they commit together, so one link's event showing means all do).
    wait_for_changes_but(&client, &links, &[1, 2]).await;
    // The batch with all six committed: the four healthy deliveries' events are there, once;
    // the failing and the panicking one left nothing.
    assert_changes_but(&client, &links, &[1, 2]).await;

    // The two are retried by themselves: a later committed batch holds them and none of the
    // four that are done.
    eventually("the failing delivery to be retried", DEADLINE, || async {
        (batches.committed_with(&deliveries[1]).len() >= 2).then_some(())
    })
    .await;
    eventually("the panicking delivery to be retried", DEADLINE, || async {
        (batches.committed_with(&deliveries[2]).len() >= 2).then_some(())
    })
    .await;
    let done: BTreeSet<&String> = [0, 3, 4, 5].iter().map(|&i| &deliveries[i]).collect();
    for k in [1, 2] {
        let retries = batches.committed_with(&deliveries[k]);
        for batch in &retries[1..] {
            assert!(
                batch.iter().all(|id| !done.contains(id)),
                "a retry of delivery {k} carries no delivery that was done: {batch:?}"
            );
        }
    }

    // Once the vendor answers and the bug is gone, each is applied, once.
    {
        let mut state = fake.state.lock().unwrap();
        state.failing_fetching.clear();
        state.panic_fetching.clear();
    }
    wait_for_changes_but(&client, &links, &[]).await;
    assert_changes_but(&client, &links, &[]).await;
    server.stop().await;
}

/// A delivery whose changes fail or panic inside the batch's transaction, after they were
/// written there, leaves nothing of them: there is no savepoint per delivery, so the batch is
/// rolled back and run again without it, and the others' changes commit exactly once.
#[tokio::test]
async fn a_delivery_failing_inside_the_batch_transaction_fails_alone_and_the_rest_commit_once() {
    const LINKS: usize = 6;
    let fake = FakeProvider::default();
    let batches = Batches::default();
    let server = server(&fake, &batches).await;
    let client = server.client(TENANT_A).await;
    let links = active_links(&server, &fake, &client, LINKS).await;

    // Held, so that the six deliveries end up claimed together.
    batches.hold.store(true, Ordering::SeqCst);
    let mut deliveries = Vec::new();
    for (i, link) in links.iter().enumerate() {
        let id = deliver(
            &server,
            &fake.webhook_url(link),
            json!({"id": format!("evt-change-{i}"), "type": "changed", "account": format!("acc-{i}")}),
        )
        .await;
        match i {
            1 => batches.fail_apply.lock().unwrap().insert(id.clone()),
            2 => batches.panic_apply.lock().unwrap().insert(id.clone()),
            _ => false,
        };
        deliveries.push(id);
    }
    batches.wait_for_batch_of(&deliveries, false).await;
    batches.hold.store(false, Ordering::SeqCst);
    batches.wait_for_batch_of(&deliveries, true).await;
    wait_for_changes_but(&client, &links, &[1, 2]).await;
    // The faulty two got as far as the batch's transaction (the hook runs there only), and left
    // nothing there; the four healthy ones, applied again after each fault, are there once.
    let applied: Vec<String> = batches.applied.lock().unwrap().clone();
    for k in [1, 2] {
        assert!(
            applied.contains(&deliveries[k]),
            "delivery {k} was applied in a batch before it failed: {applied:?}"
        );
    }
    assert_changes_but(&client, &links, &[1, 2]).await;

    // Once the fault is gone, each of the two is applied, once.
    batches.fail_apply.lock().unwrap().clear();
    batches.panic_apply.lock().unwrap().clear();
    wait_for_changes_but(&client, &links, &[]).await;
    assert_changes_but(&client, &links, &[]).await;
    server.stop().await;
}

/// Deliveries that name their link only in what they carry (Canopy-shaped, one URL for every
/// link) are claimed together; one link's must still be applied in the order received, each
/// seeing the one before.
#[tokio::test]
async fn one_links_deliveries_in_one_batch_are_applied_in_receipt_order() {
    let fake = FakeProvider::team_wide();
    let batches = Batches::default();
    let server = server(&fake, &batches).await;
    let mut client = server.client(TENANT_A).await;
    let mut links = Vec::new();
    for account in ["acc-order", "acc-other"] {
        let link = coverwatch_tests::flows::start_link(
            &client,
            v1::Provider::Canopy,
            &format!("user-{account}"),
            None,
            None,
        )
        .await
        .link
        .unwrap();
        client
            .complete_link(v1::CompleteLinkRequest {
                link_id: link.id.clone(),
                auth_code: format!("code-{account}"),
            })
            .await
            .expect("CompleteLink");
        wait_for_state(&client, &link.id, v1::LinkState::Active).await;
        links.push(link.id);
    }

    batches.hold.store(true, Ordering::SeqCst);
    let mut deliveries = Vec::new();
    let mut expected = [Vec::new(), Vec::new()];
    for n in 0..8 {
        let which = usize::from(n % 3 == 2);
        let account = ["acc-order", "acc-other"][which];
        let id = format!("change-{n}");
        deliveries.push(
            deliver(
                &server,
                &server.http_url("/webhooks/canopy"),
                json!({"id": id, "type": "changed", "account": account}),
            )
            .await,
        );
        expected[which].push(id);
    }
    // Each round of a batch takes the oldest delivery of each link; the rest of the link's wait
    // for the rounds after it, all under the one claim.
    batches
        .wait_for_batch_of(&[deliveries[0].clone(), deliveries[2].clone()], false)
        .await;
    batches.hold.store(false, Ordering::SeqCst);

    for (which, link) in links.iter().enumerate() {
        let wanted = expected[which].clone();
        let applied = eventually(
            &format!("{} deliveries applied to {link}", wanted.len()),
            DEADLINE,
            || async {
                let ids: Vec<String> = vendor_event_ids(&client, link)
                    .await
                    .into_iter()
                    .filter(|id| id.starts_with("change-"))
                    .collect();
                (ids.len() >= wanted.len()).then_some(ids)
            },
        )
        .await;
        assert_eq!(applied, wanted, "in the order received, each once");
    }
    let of_order: BTreeSet<&String> = (0..8)
        .filter(|n| n % 3 != 2)
        .map(|n| &deliveries[n])
        .collect();
    for (batch, passed) in batches.seen.lock().unwrap().iter() {
        if *passed {
            assert!(
                batch.iter().filter(|id| of_order.contains(id)).count() <= 1,
                "never two deliveries of one link in one transaction: {batch:?}"
            );
        }
    }
    server.stop().await;
}
