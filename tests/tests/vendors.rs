//! The shared end-to-end cases, run for every vendor the server registered: the service's own
//! (Axle, Canopy) and the test-only ones of `coverwatch_tests::vendors::test_vendors` (Acme, a
//! crate of its own registered by one line). Each vendor is reached through its
//! `coverwatch_tests::vendors::Driver`; what a case asserts is the same for all of them.
//! Vendor-specific behaviour stays in the vendor's own suite (axle.rs, canopy.rs).

use std::collections::BTreeMap;
use std::time::Duration;

use coverwatch_store::DeliveryFilter;
use coverwatch_tests::flows::{self, get_link, get_policy, wait_for_event, wait_for_events};
use coverwatch_tests::vendors::{Delivery, Driver};
use coverwatch_tests::{Client, TENANT_A, TENANT_B, TestServer, eventually, test_config, v1};
use sha2::Digest;
use v1::EventKind as K;

const DEADLINE: Duration = Duration::from_secs(30);

fn payload(event: &v1::Event) -> &v1::event::Payload {
    event.payload.as_ref().expect("an event payload")
}

fn policy_updates<'a>(events: &'a [v1::Event], policy: &str) -> Vec<&'a v1::PolicyUpdated> {
    events
        .iter()
        .filter_map(|e| match payload(e) {
            v1::event::Payload::PolicyUpdated(u) if u.policy_external_id == policy => Some(u),
            _ => None,
        })
        .collect()
}

/// Events of `link` read from the stream until `done` says they are all there, failing after
/// the deadline. Events of other links (earlier vendors) are passed over.
async fn stream_until(
    stream: &mut tonic::Streaming<v1::Event>,
    link: &str,
    seen: &mut Vec<v1::Event>,
    done: impl Fn(&[v1::Event]) -> bool,
) {
    let read = tokio::time::timeout(DEADLINE, async {
        while !done(seen) {
            match stream.message().await {
                Ok(Some(event)) if event.link_id == link => seen.push(event),
                Ok(Some(_)) => {}
                Ok(None) => panic!("the stream ended"),
                Err(status) => panic!("the stream failed: {status}"),
            }
        }
    })
    .await;
    if read.is_err() {
        panic!(
            "timed out waiting on the stream for {link}; got {:?}",
            flows::kinds(seen)
        );
    }
}

async fn descope(client: &Client, link: &str) -> v1::Link {
    client
        .clone()
        .descope(v1::DescopeRequest {
            link_id: link.to_owned(),
        })
        .await
        .expect("Descope")
        .into_inner()
        .link
        .expect("the link")
}

#[tokio::test]
async fn every_vendor_links_reads_hears_of_a_change_and_a_cancellation_and_descopes() {
    let server = TestServer::start_every_vendor(test_config().await).await;
    let client = server.client(TENANT_A).await;
    let vendors = server.vendors();
    assert!(
        vendors.iter().any(|v| v == coverwatch_vendor_acme::ID) && vendors.len() >= 3,
        "the service's vendors and the test vendor: {vendors:?}"
    );
    // One stream for the whole run, opened before anything happened: every vendor's events
    // must reach it live.
    let mut stream = client
        .clone()
        .watch_events(v1::WatchEventsRequest {
            after_cursor: 0,
            filter: None,
            consumer: None,
        })
        .await
        .expect("WatchEvents")
        .into_inner();

    for id in &vendors {
        let driver = Driver::of(id);
        let started = Driver::start_link(&client, id, &format!("user-{id}")).await;
        let link = started.link.clone().expect("a link");
        assert_eq!(link.state(), v1::LinkState::Pending, "{id}");
        assert_eq!(link.provider_id, id.as_str(), "{id}");

        // Link → complete: the end-user finishes the hosted session, the vendor's webhook
        // completes the link, and the policy is readable in the common vocabulary.
        let linked = driver.complete(&server, &client, &started).await;
        let link_id = linked.link_id.as_str();
        assert_eq!(
            get_link(&client, link_id).await.state(),
            v1::LinkState::Active,
            "{id}"
        );
        let policy = get_policy(&client, link_id, &linked.policy_id, v1::PolicyTerm::Current)
            .await
            .policy
            .expect("the policy");
        assert_eq!(policy.status(), v1::PolicyStatus::Active, "{id}");
        assert_eq!(policy.external_id, linked.policy_id, "{id}");
        // Another tenant sees neither the link nor its policy.
        let stranger = server.client(TENANT_B).await;
        let hidden = stranger
            .clone()
            .get_link(v1::GetLinkRequest {
                link_id: link_id.to_owned(),
            })
            .await
            .unwrap_err();
        assert_eq!(hidden.code(), tonic::Code::NotFound, "{id}: {hidden:?}");
        let hidden = stranger
            .clone()
            .list_policies(v1::ListPoliciesRequest {
                link_id: link_id.to_owned(),
            })
            .await
            .unwrap_err();
        assert_eq!(hidden.code(), tonic::Code::NotFound, "{id}: {hidden:?}");

        // A change at the carrier: one policy.updated with what changed, still active.
        driver.change_policy(&server, &linked).await;
        let events = wait_for_event(&client, link_id, K::PolicyUpdated).await;
        let updates = policy_updates(&events, &linked.policy_id);
        let changed = updates.first().expect("policy.updated of the policy");
        assert_eq!(changed.status(), v1::PolicyStatus::Active, "{id}");
        assert!(!changed.changes.is_empty(), "{id}: {changed:?}");
        assert!(
            changed
                .changes
                .iter()
                .all(|c| c.kind() != v1::ChangeKind::StatusChanged),
            "{id}: {changed:?}"
        );

        // A cancellation: a second policy.updated whose status change says so.
        driver.cancel_policy(&server, &linked).await;
        let events = wait_for_events(&client, link_id, K::PolicyUpdated, 2).await;
        let updates = policy_updates(&events, &linked.policy_id);
        let cancelled = updates.last().expect("policy.updated of the policy");
        assert_eq!(cancelled.status(), driver.cancelled_status(), "{id}");
        let status_change = cancelled
            .changes
            .iter()
            .find(|c| c.kind() == v1::ChangeKind::StatusChanged)
            .unwrap_or_else(|| panic!("{id}: no status change in {cancelled:?}"));
        assert_eq!(status_change.before.as_deref(), Some("active"), "{id}");
        let stored = get_policy(&client, link_id, &linked.policy_id, v1::PolicyTerm::Current)
            .await
            .policy
            .expect("the policy");
        assert_eq!(stored.status(), driver.cancelled_status(), "{id}");

        // Descope: the link is final and the vendor stops monitoring. Asking again changes
        // nothing (the descope event below is the only one).
        for _ in 0..2 {
            assert_eq!(
                descope(&client, link_id).await.state(),
                v1::LinkState::Descoped,
                "{id}"
            );
        }
        assert!(
            !driver.is_monitored(&server, &linked).await,
            "{id} still monitors after the descope"
        );

        // The same story, live over WatchEvents.
        let cancelled_status = driver.cancelled_status();
        let policy_id = linked.policy_id.clone();
        let mut seen = Vec::new();
        stream_until(&mut stream, link_id, &mut seen, |events| {
            events.iter().any(|e| e.kind() == K::LinkDescoped)
        })
        .await;
        let kinds = flows::kinds(&seen);
        let at = |kind: K| {
            kinds
                .iter()
                .position(|k| *k == kind)
                .unwrap_or_else(|| panic!("{id}: no {kind:?} on the stream: {kinds:?}"))
        };
        assert!(
            at(K::LinkCompleted) < at(K::PolicyUpdated),
            "{id}: {kinds:?}"
        );
        let streamed = policy_updates(&seen, &policy_id);
        assert_eq!(
            streamed.iter().map(|u| u.status()).collect::<Vec<_>>(),
            [v1::PolicyStatus::Active, cancelled_status],
            "{id}: the change, then the cancellation"
        );
        assert_eq!(at(K::LinkDescoped), kinds.len() - 1, "{id}: {kinds:?}");
        let descoped = flows::link_events(&client, link_id).await;
        assert_eq!(
            descoped
                .iter()
                .filter(|e| e.kind() == K::LinkDescoped)
                .count(),
            1,
            "{id}: {:?}",
            flows::kinds(&descoped)
        );
        assert!(
            seen.iter().all(|e| e.provider_id == id.as_str()),
            "{id}: every event names its vendor"
        );
        let cursors: Vec<i64> = seen.iter().map(|e| e.cursor).collect();
        assert!(cursors.windows(2).all(|w| w[0] < w[1]), "{id}: {cursors:?}");
    }

    // Metrics: every vendor's calls and links are labelled with its own name. The link gauges
    // are database figures refreshed on scrape at most every few seconds, so they are polled.
    let text = eventually(
        "every vendor's descoped link in the gauges",
        DEADLINE,
        || async {
            let text = metrics_text(&server).await;
            vendors
                .iter()
                .all(|id| {
                    text.lines().any(|l| {
                        l.starts_with("coverwatch_links{")
                            && l.contains(&format!("provider=\"{id}\""))
                            && l.contains("state=\"DESCOPED\"")
                            && l.ends_with(" 1")
                    })
                })
                .then_some(text)
        },
    )
    .await;
    for id in &vendors {
        assert!(
            text.lines()
                .any(|l| l.starts_with("coverwatch_vendor_requests_total{")
                    && l.contains(&format!("vendor=\"{id}\""))),
            "no vendor-call series for {id}"
        );
    }
    server.stop().await;
}

async fn metrics_text(server: &TestServer) -> String {
    server
        .http
        .get(server.http_url("/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("the exposition")
}

/// The inbox key a delivery is filed under: the vendor's event id, else a hash of the body.
fn dedupe_key(delivery: &Delivery) -> String {
    match &delivery.event_id {
        Some(id) => format!("id:{id}"),
        None => format!(
            "sha256:{}",
            hex::encode(sha2::Sha256::digest(&delivery.body))
        ),
    }
}

async fn stored_under(server: &TestServer, id: &coverwatch_core::ProviderId, key: &str) -> usize {
    server
        .app
        .engine
        .store()
        .list_deliveries(&DeliveryFilter {
            provider: Some(id.clone()),
            limit: 10_000,
            ..Default::default()
        })
        .await
        .expect("list deliveries")
        .deliveries
        .iter()
        .filter(|d| d.dedupe_key == key)
        .count()
}

#[tokio::test]
async fn every_vendor_refuses_a_forged_delivery_stores_nothing_and_counts_it_under_its_name() {
    let server = TestServer::start_every_vendor(test_config().await).await;
    let client = server.client(TENANT_A).await;
    let vendors = server.vendors();
    assert!(vendors.iter().any(|v| v == coverwatch_vendor_acme::ID));
    let mut refused = BTreeMap::new();
    for id in &vendors {
        let driver = Driver::of(id);
        let started = Driver::start_link(&client, id, "user-probe").await;
        let probe = driver.probe(&server, &started).await;
        let key = dedupe_key(&probe.genuine);
        assert_eq!(dedupe_key(&probe.forged), key, "the same delivery, forged");

        // Forged first: refused, and nothing is filed under its key.
        assert_eq!(probe.forged.send(&server.http).await, 401, "{id} forged");
        assert_eq!(
            stored_under(&server, id, &key).await,
            0,
            "{id}: forged and stored"
        );
        // The same bytes without any credential at all.
        let mut bare = probe.forged.clone();
        bare.headers.clear();
        if !probe.genuine.headers.is_empty() {
            assert_eq!(bare.send(&server.http).await, 401, "{id} unsigned");
            *refused
                .entry((id.to_string(), "missing_header"))
                .or_insert(0u64) += 1;
        }
        *refused
            .entry((id.to_string(), probe.forged_reason))
            .or_insert(0u64) += 1;

        // The genuine delivery goes in, under that key: the check above can see a stored row.
        assert_eq!(probe.genuine.send(&server.http).await, 200, "{id} genuine");
        assert_eq!(
            stored_under(&server, id, &key).await,
            1,
            "{id}: genuine stored"
        );
        // The vendor repeating itself: answered 200 so that it stops, not stored again.
        assert_eq!(probe.genuine.send(&server.http).await, 200, "{id} repeated");
        assert_eq!(
            stored_under(&server, id, &key).await,
            1,
            "{id}: stored twice"
        );
    }

    // Counted under each vendor's own name, refusal by refusal.
    let text = metrics_text(&server).await;
    for ((id, reason), sent) in &refused {
        let line = text
            .lines()
            .find(|l| {
                l.starts_with("coverwatch_webhooks_received_total{")
                    && l.contains(&format!("provider=\"{id}\""))
                    && l.contains("outcome=\"unauthenticated\"")
                    && l.contains(&format!("reason=\"{reason}\""))
            })
            .unwrap_or_else(|| panic!("no refusal series for {id} / {reason}:\n{text}"));
        let counted: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        if *reason == "unknown_path" {
            // Axle's simulator sends `ignition.created` as soon as the Ignition exists, which
            // can be before StartLink has stored the link's token: refused and retried, it
            // counts here too. Simulators never send a bad or missing signature.
            assert!(counted >= *sent, "{line}");
        } else {
            assert_eq!(counted, *sent, "{line}");
        }
    }
    for id in &vendors {
        assert!(
            text.lines()
                .any(|l| l.starts_with("coverwatch_webhooks_received_total{")
                    && l.contains(&format!("provider=\"{id}\""))
                    && l.contains("outcome=\"stored\"")),
            "no stored series for {id}"
        );
    }
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Acme's own: what it cannot do, and its settings read through the service's configuration

#[tokio::test]
async fn acme_answers_what_it_cannot_do_as_a_failed_precondition_naming_it() {
    let server = TestServer::start_every_vendor(test_config().await).await;
    let client = server.client(TENANT_A).await;
    let acme = coverwatch_core::ProviderId::from_static(coverwatch_vendor_acme::ID);
    let started = Driver::start_link(&client, &acme, "user-acme").await;
    let linked = Driver::Acme.complete(&server, &client, &started).await;

    // No reconnect session at Acme: the provider says so, nothing is opened.
    let err = client
        .clone()
        .start_reconnect(v1::StartReconnectRequest {
            link_id: linked.link_id.clone(),
            redirect_uri: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("acme does not support reconnect"),
        "{err:?}"
    );
    // No on-demand refresh: refused from the capabilities before Acme is called.
    let err = client
        .clone()
        .refresh_link(v1::RefreshLinkRequest {
            link_id: linked.link_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("on_demand_refresh"), "{err:?}");
    // Neither touched the link.
    assert_eq!(
        get_link(&client, &linked.link_id).await.state(),
        v1::LinkState::Active
    );
    server.stop().await;
}

#[tokio::test]
async fn acme_settings_in_the_configuration_are_checked_by_acme_and_named_from_the_section() {
    // Keys set in `[vendors.acme]` without a base_url go on top of the simulator's settings;
    // Acme's own validation refuses them, and start-up names the key from the section down.
    for (key, value, named) in [
        (
            "signing_secret",
            serde_json::json!("short"),
            "vendors.acme.signing_secret",
        ),
        (
            "request_timeout",
            serde_json::json!("soon"),
            "vendors.acme.request_timeout",
        ),
        (
            "api_secret",
            serde_json::json!("hush-hush-hush"),
            "vendors.acme",
        ),
    ] {
        let mut config = test_config().await;
        config
            .vendors
            .insert("acme".into(), serde_json::json!({ key: value }));
        let plugins = coverwatch::providers::vendors()
            .into_iter()
            .chain(coverwatch_tests::vendors::test_vendors())
            .collect();
        let err = coverwatch::start(
            config,
            coverwatch::Overrides {
                plugins: Some(plugins),
                ..Default::default()
            },
        )
        .await
        .err()
        .unwrap_or_else(|| panic!("{key}: started with a bad setting"));
        let message = format!("{err:#}");
        assert!(message.contains(&format!("`{named}")), "{key}: {message}");
        assert!(
            !message.contains("hush"),
            "{key}: a value was repeated: {message}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Staleness, the same for every vendor

fn stale_payloads(events: &[v1::Event]) -> Vec<v1::LinkStale> {
    events
        .iter()
        .filter_map(|e| match &e.payload {
            Some(v1::event::Payload::LinkStale(stale)) => Some(*stale),
            _ => None,
        })
        .collect()
}

fn seconds(at: &Option<prost_types::Timestamp>) -> Option<i64> {
    at.as_ref().map(|t| t.seconds)
}

/// With a one-hour window for every vendor: `link.stale` once when the hour has passed, not
/// again however many sweeps follow, and again only after fresh data ended that stale period and
/// another began. The sweep is driven by hand at chosen times.
#[tokio::test]
async fn every_vendor_reports_a_stale_link_once_per_stale_period() {
    use chrono::{TimeDelta, Utc};
    let plugins: Vec<_> = coverwatch::providers::vendors()
        .into_iter()
        .chain(coverwatch_tests::vendors::test_vendors())
        .collect();
    let window = Duration::from_secs(3600);
    let stale_after = plugins
        .iter()
        .map(|p| (coverwatch_core::ProviderId::new(p.id()).unwrap(), window))
        .collect();
    let server = TestServer::start_with(
        test_config().await,
        coverwatch::Overrides {
            plugins: Some(plugins),
            worker: Some(coverwatch_tests::fast_worker()),
            // Pushed out of the way: the test sweeps itself.
            sweep: Some(coverwatch_engine::SweepConfig {
                interval: Duration::from_secs(3600),
                reevaluate_every: Duration::from_secs(3600),
                stale_after,
            }),
            ..Default::default()
        },
    )
    .await;
    let client = server.client(TENANT_A).await;
    let engine = &server.app.engine;
    let sweep = |at: chrono::DateTime<Utc>| async move {
        engine.sweep(at).await.expect("sweep").stale_reported
    };
    let vendors = server.vendors();
    assert!(vendors.iter().any(|v| v == coverwatch_vendor_acme::ID));
    for id in &vendors {
        let driver = Driver::of(id);
        let started = Driver::start_link(&client, id, "user-stale").await;
        let linked = driver.complete(&server, &client, &started).await;
        let link_id = linked.link_id.as_str();
        let link = get_link(&client, link_id).await;
        let refreshed = link.last_refreshed_at;
        assert!(refreshed.is_some(), "{id}");
        assert_eq!(link.stale_since, None, "{id}");

        // Only this vendor's link is live: the earlier ones are descoped below.
        let t0 = Utc::now();
        assert_eq!(
            sweep(t0 + TimeDelta::minutes(30)).await,
            0,
            "{id}: in the window"
        );
        let stale_at = t0 + TimeDelta::hours(2);
        assert_eq!(sweep(stale_at).await, 1, "{id}");
        for hours in [3, 5, 24] {
            assert_eq!(
                sweep(t0 + TimeDelta::hours(hours)).await,
                0,
                "{id}: {hours} h"
            );
        }
        let events = flows::link_events(&client, link_id).await;
        let stale = stale_payloads(&events);
        assert_eq!(stale.len(), 1, "{id}: {:?}", flows::kinds(&events));
        assert_eq!(stale[0].last_refreshed_at, refreshed, "{id}");
        let link = get_link(&client, link_id).await;
        assert_eq!(
            seconds(&link.stale_since),
            Some(stale_at.timestamp()),
            "{id}"
        );
        assert_eq!(link.state(), v1::LinkState::Active, "{id}: no state change");

        // Fresh data, even with nothing changed, ends the stale period.
        driver
            .refresh_without_change(&server, &client, &linked)
            .await;
        let link = get_link(&client, link_id).await;
        assert_eq!(link.stale_since, None, "{id}");
        let fresh = link.last_refreshed_at;
        assert!(seconds(&fresh) >= seconds(&refreshed), "{id}");
        let t1 = Utc::now();
        assert_eq!(sweep(t1 + TimeDelta::minutes(30)).await, 0, "{id}");
        assert_eq!(
            sweep(t1 + TimeDelta::hours(2)).await,
            1,
            "{id}: a new period"
        );
        assert_eq!(sweep(t1 + TimeDelta::hours(3)).await, 0, "{id}");
        let stale = stale_payloads(&flows::link_events(&client, link_id).await);
        assert_eq!(stale.len(), 2, "{id}");
        assert_eq!(stale[1].last_refreshed_at, fresh, "{id}");

        descope(&client, link_id).await;
    }
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Policy history, the same for every vendor

async fn history(client: &Client, link_id: &str, policy_id: &str) -> Vec<v1::PolicyVersion> {
    let mut versions = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .clone()
            .get_policy_history(v1::GetPolicyHistoryRequest {
                link_id: link_id.to_owned(),
                policy_id: policy_id.to_owned(),
                term: v1::PolicyTerm::Current as i32,
                page_size: 100,
                page_token,
                ..Default::default()
            })
            .await
            .expect("GetPolicyHistory")
            .into_inner();
        versions.extend(page.versions);
        if page.next_page_token.is_empty() {
            return versions;
        }
        page_token = page.next_page_token;
    }
}

/// Refreshes that found nothing new add no version; a change adds exactly one, with the changes
/// policy.updated carried, and the older version stays as it was. (The exact changes of each
/// sandbox vendor's fixtures are asserted in requirements.rs.)
#[tokio::test]
async fn every_vendor_keeps_one_policy_version_per_change_and_none_per_unchanged_refresh() {
    let server = TestServer::start_every_vendor(test_config().await).await;
    let client = server.client(TENANT_A).await;
    let vendors = server.vendors();
    assert!(vendors.iter().any(|v| v == coverwatch_vendor_acme::ID));
    for id in &vendors {
        let driver = Driver::of(id);
        let started = Driver::start_link(&client, id, "user-history").await;
        let linked = driver.complete(&server, &client, &started).await;
        let (link_id, policy_id) = (linked.link_id.as_str(), linked.policy_id.as_str());
        let first = history(&client, link_id, policy_id).await;
        assert_eq!(first.len(), 1, "{id}: {first:?}");
        assert_eq!(first[0].version, 1, "{id}");
        assert!(first[0].changes.is_empty(), "{id}");
        let current = get_policy(&client, link_id, policy_id, v1::PolicyTerm::Current).await;
        assert_eq!(first[0].policy, current.policy, "{id}");

        driver
            .refresh_without_change(&server, &client, &linked)
            .await;
        let events = flows::link_events(&client, link_id).await;
        assert!(policy_updates(&events, policy_id).is_empty(), "{id}");
        assert_eq!(history(&client, link_id, policy_id).await, first, "{id}");

        driver.change_policy(&server, &linked).await;
        let events = wait_for_event(&client, link_id, K::PolicyUpdated).await;
        let updated = policy_updates(&events, policy_id)
            .last()
            .copied()
            .cloned()
            .expect("policy.updated of the policy");
        // Whatever else the vendor sent about this change is worked off before reading.
        coverwatch_tests::vendors::worked_off(&server).await;
        let history = history(&client, link_id, policy_id).await;
        assert_eq!(
            history.len(),
            2,
            "{id}: one version for one change: {history:?}"
        );
        assert_eq!(
            history[0], first[0],
            "{id}: older versions stay as they were"
        );
        assert_eq!(history[1].version, 2, "{id}");
        assert_eq!(history[1].changes, updated.changes, "{id}");
        let current = get_policy(&client, link_id, policy_id, v1::PolicyTerm::Current).await;
        assert_eq!(history[1].policy, current.policy, "{id}");
        descope(&client, link_id).await;
    }
    server.stop().await;
}
