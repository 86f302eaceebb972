//! `/metrics` end to end: after a burst of good and bad deliveries to both vendors' webhook
//! routes, the exposition parses as Prometheus text and its webhook counters equal what was
//! sent, outcome by outcome; the inbox and link gauges agree with what was stored; and with
//! `metrics_addr` set, the public listener no longer serves the operator pages.
//!
//! Webhook outcomes and gauges live in a per-server registry, so other tests in this binary
//! (each with its own server) cannot change the counts asserted here.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use coverwatch_sandbox::{FaultEffect, FaultTarget};
use coverwatch_tests::flows::{self, sandbox};
use coverwatch_tests::{TENANT_A, TestServer, eventually, test_config, v1};
use prometheus_parse::{Sample, Scrape, Value};
use serde_json::json;

const DEADLINE: Duration = Duration::from_secs(20);

/// (provider, outcome, reason) → how many requests were answered that way.
type Tally = BTreeMap<(String, String, String), u64>;

async fn scrape(server: &TestServer, url: &str) -> Scrape {
    let response = server.http.get(url).send().await.expect("GET /metrics");
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = response.text().await.unwrap();
    strict_check(&text);
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("Prometheus text exposition")
}

/// What `prometheus-parse` lets pass silently: every non-comment line must be
/// `name{labels} value`, with a known family declared by `# TYPE` before its samples.
fn strict_check(text: &str) {
    let mut typed = std::collections::BTreeSet::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let name = parts.next().expect("a family name");
            let kind = parts.next().expect("a family type");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{line}"
            );
            assert!(typed.insert(name.to_owned()), "family typed twice: {line}");
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let name = line.split(['{', ' ']).next().unwrap_or_default();
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix).filter(|f| typed.contains(*f)))
            .unwrap_or(name);
        assert!(typed.contains(family), "sample before its # TYPE: {line}");
        assert!(
            name.starts_with("coverwatch_"),
            "every series is ours: {line}"
        );
        let value = line.rsplit(' ').next().unwrap();
        assert!(value.parse::<f64>().is_ok(), "value of {line}");
    }
}

fn value(sample: &Sample) -> f64 {
    match sample.value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
        ref other => panic!("{} is not a plain value: {other:?}", sample.metric),
    }
}

fn label(sample: &Sample, name: &str) -> String {
    sample.labels.get(name).unwrap_or("").to_owned()
}

fn webhook_counts(scrape: &Scrape) -> Tally {
    let mut out = Tally::new();
    for sample in &scrape.samples {
        if sample.metric != "coverwatch_webhooks_received_total" {
            continue;
        }
        assert!(
            matches!(sample.value, Value::Counter(_)),
            "webhook counts are counters"
        );
        let key = (
            label(sample, "provider"),
            label(sample, "outcome"),
            label(sample, "reason"),
        );
        *out.entry(key).or_default() += value(sample) as u64;
    }
    out
}

fn gauge(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .find(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(value)
}

fn sum(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(value)
        .sum()
}

struct Burst<'a> {
    server: &'a TestServer,
    sent: Tally,
}

impl Burst<'_> {
    /// POST and check the answer's status; count it as `outcome` of `provider`.
    async fn post(
        &mut self,
        path_or_url: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
        status: u16,
        (provider, outcome, reason): (&str, &str, &str),
    ) {
        let url = if path_or_url.starts_with("http") {
            path_or_url.to_owned()
        } else {
            self.server.http_url(path_or_url)
        };
        let mut request = self
            .server
            .http
            .post(&url)
            .header("content-type", "application/json");
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let response = request.body(body).send().await.expect("answered");
        assert_eq!(
            response.status().as_u16(),
            status,
            "{url}: {}",
            response.text().await.unwrap_or_default()
        );
        *self
            .sent
            .entry((provider.into(), outcome.into(), reason.into()))
            .or_default() += 1;
    }
}

fn canopy_signature(server: &TestServer, body: &[u8]) -> String {
    let secret = sandbox(server).canopy().config().webhooks[0]
        .signing_secret
        .clone();
    coverwatch_sandbox::canopy::signature::header_value(&secret, Utc::now().timestamp(), body)
}

fn ignition_token(session_url: &str) -> String {
    url::Url::parse(session_url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "token")
        .expect("ignitionUri carries the token")
        .1
        .into_owned()
}

#[tokio::test]
async fn webhook_counters_equal_what_was_sent_by_outcome() {
    let server = TestServer::start(test_config().await, None).await;
    // The simulators send webhooks of their own (Axle's `ignition.created` on StartLink): kept
    // out, so that every request the listener sees is one this test sent and counted.
    for vendor in ["axle", "canopy"] {
        sandbox(&server)
            .faults()
            .inject(FaultTarget::webhooks(vendor), FaultEffect::Drop);
    }
    let client = server.client(TENANT_A).await;
    let started = flows::start_link(&client, v1::Provider::Axle, "user-m", None, None).await;
    let link_id = started.link.as_ref().unwrap().id.clone();
    let axle_webhook = sandbox(&server)
        .axle()
        .ignition(&ignition_token(&started.session_url))
        .expect("the Ignition exists")
        .webhook_uri
        .expect("a webhookUri");
    let oversized = vec![b' '; coverwatch_engine::MAX_WEBHOOK_BYTES + 1];

    let mut burst = Burst {
        server: &server,
        sent: Tally::new(),
    };
    // Axle: genuine deliveries on the link's own URL, each twice; strangers' URLs; oversized.
    for i in 0..3 {
        let body = json!({
            "id": format!("evt_metrics_{i}"), "type": "ignition.opened",
            "createdAt": "2026-01-01T00:00:00.000Z",
            "data": {"token": ignition_token(&started.session_url)}
        })
        .to_string()
        .into_bytes();
        let ok = ("axle", "stored", "");
        burst.post(&axle_webhook, &[], body.clone(), 200, ok).await;
        let again = ("axle", "duplicate", "");
        burst.post(&axle_webhook, &[], body, 200, again).await;
    }
    for i in 0..4 {
        let path = format!("/webhooks/axle/not-a-token-{i}");
        let refused = ("axle", "unauthenticated", "unknown_path");
        burst.post(&path, &[], b"{}".to_vec(), 401, refused).await;
    }
    let too_large = ("axle", "too_large", "");
    burst
        .post(&axle_webhook, &[], oversized.clone(), 413, too_large)
        .await;

    // Canopy: signed deliveries (one repeated), a forged signature, a missing one, oversized.
    for i in 0..5 {
        let body = json!({"event_type": "AUTH_STATUS", "pull_id": format!("metrics-pull-{i}")})
            .to_string()
            .into_bytes();
        let signature = canopy_signature(&server, &body);
        let headers = [("canopy-signature", signature)];
        burst
            .post(
                "/webhooks/canopy",
                &headers,
                body.clone(),
                200,
                ("canopy", "stored", ""),
            )
            .await;
        if i == 0 {
            let again = ("canopy", "duplicate", "");
            burst
                .post("/webhooks/canopy", &headers, body, 200, again)
                .await;
        }
    }
    let body = br#"{"event_type":"AUTH_STATUS","pull_id":"forged"}"#.to_vec();
    let forged = canopy_signature(&server, b"something else entirely");
    for _ in 0..2 {
        let refused = ("canopy", "unauthenticated", "bad_signature");
        burst
            .post(
                "/webhooks/canopy",
                &[("canopy-signature", forged.clone())],
                body.clone(),
                401,
                refused,
            )
            .await;
    }
    let refused = ("canopy", "unauthenticated", "missing_header");
    burst
        .post("/webhooks/canopy", &[], body.clone(), 401, refused)
        .await;
    let too_large = ("canopy", "too_large", "");
    burst
        .post("/webhooks/canopy", &[], oversized, 413, too_large)
        .await;

    // A route for no provider: one `unknown` label, whatever name the stranger used.
    for name in ["nosuch", "another-name"] {
        let unknown = ("unknown", "unknown_provider", "");
        burst
            .post(
                &format!("/webhooks/{name}"),
                &[],
                b"{}".to_vec(),
                404,
                unknown,
            )
            .await;
    }
    let sent = burst.sent;

    assert!(
        sandbox(&server)
            .deliveries()
            .entries()
            .iter()
            .all(|attempt| attempt.status.is_none()),
        "no simulator webhook reached the listener"
    );
    let first = scrape(&server, &server.http_url("/metrics")).await;
    assert_eq!(
        webhook_counts(&first),
        sent,
        "the counters equal what was sent"
    );

    // Stored deliveries are in the inbox, whatever the worker made of them since; the gauges
    // are refreshed at most every couple of seconds, so poll.
    let stored = |provider: &str| {
        sent.get(&(provider.to_owned(), "stored".to_owned(), String::new()))
            .copied()
            .unwrap_or(0) as f64
    };
    let metrics_url = server.http_url("/metrics");
    let last = eventually(
        "the inbox gauges to count every stored delivery",
        DEADLINE,
        || {
            let (server, url) = (&server, metrics_url.clone());
            async move {
                let now = scrape(server, &url).await;
                let axle = sum(&now, "coverwatch_inbox_deliveries", &[("provider", "axle")]);
                let canopy = sum(
                    &now,
                    "coverwatch_inbox_deliveries",
                    &[("provider", "canopy")],
                );
                (axle == stored("axle") && canopy == stored("canopy")).then_some(now)
            }
        },
    )
    .await;
    assert_eq!(
        sum(&last, "coverwatch_links", &[("provider", "axle")]),
        1.0,
        "the one Axle link"
    );
    assert_eq!(
        sum(&last, "coverwatch_links", &[("provider", "canopy")]),
        0.0
    );
    assert!(gauge(&last, "coverwatch_db_pool_max_connections", &[]).unwrap() >= 1.0);
    assert_eq!(
        gauge(&last, "coverwatch_watch_streams_open", &[]),
        Some(0.0)
    );
    // The engine and vendor series are process-wide: at least this test's own calls.
    assert!(
        sum(
            &last,
            "coverwatch_vendor_requests_total",
            &[
                ("vendor", "axle"),
                ("endpoint", "POST /ignition"),
                ("status_class", "2xx")
            ]
        ) >= 1.0,
        "StartLink's Ignition call is counted under its route template"
    );
    assert!(
        sum(
            &last,
            "coverwatch_events_appended_total",
            &[("kind", "link.session_opened")]
        ) >= 1.0
    );
    // No label carries an id or a token.
    let text = server
        .http
        .get(&metrics_url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let token = ignition_token(&started.session_url);
    assert!(!text.contains(&link_id), "no link id in /metrics");
    assert!(!text.contains(&token), "no token in /metrics");
    assert!(!text.contains("nosuch"), "no stranger-chosen provider name");
    server.stop().await;
}

#[tokio::test]
async fn with_metrics_addr_the_operator_pages_leave_the_public_listener() {
    let mut config = test_config().await;
    config.metrics_addr = Some("127.0.0.1:0".parse().unwrap());
    let server = TestServer::start(config, None).await;
    let operator = server.app.metrics_addr.expect("the metrics listener runs");
    for path in ["/metrics", "/"] {
        let public = server.http.get(server.http_url(path)).send().await.unwrap();
        assert_eq!(public.status(), 404, "{path} is not on the public listener");
        let private = server
            .http
            .get(format!("http://{operator}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(private.status(), 200, "{path} is on metrics_addr");
    }
    // Webhooks are still taken on the public listener, and counted.
    let response = server
        .http
        .post(server.http_url("/webhooks/canopy"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let operator_scrape = scrape(&server, &format!("http://{operator}/metrics")).await;
    let expected: Tally = [(
        (
            "canopy".into(),
            "unauthenticated".into(),
            "missing_header".into(),
        ),
        1,
    )]
    .into();
    assert_eq!(webhook_counts(&operator_scrape), expected);
    server.stop().await;
}
