//! Faults on Canopy endpoints and webhooks, Canopy's retry schedule, and the signature modes.

mod canopy_support;

use std::time::{Duration, Instant};

use canopy_support::{Env, SECRET, WAIT, status_json, verify_signature};
use coverwatch_sandbox::canopy::{CanopySimConfig, ConnectRequest, SignatureMode};
use coverwatch_sandbox::{FaultEffect, FaultRule, FaultTarget, RetrySchedule};
use serde_json::{Value, json};

async fn linked(env: &Env) -> String {
    env.linked_pull("user_good").await["pull_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Connects `user_good` without waiting for webhooks (faults may hold or drop them).
async fn connected(env: &Env) -> String {
    let sim = env.sandbox.canopy();
    let pull = sim.link(ConnectRequest::good(), WAIT).await.unwrap();
    assert_eq!(pull.status, "SUCCESS");
    pull.pull_id
}

#[tokio::test]
async fn endpoint_status_faults_use_canopy_error_bodies_and_run_out() {
    let env = Env::start().await;
    let pull_id = linked(&env).await;
    let url = env.team(&format!("/pulls/{pull_id}"));
    let faults = env.sandbox.faults();

    faults.inject_times(
        FaultTarget::endpoint("canopy.pulls.get"),
        FaultEffect::status(500),
        1,
    );
    assert_eq!(
        env.get(&url).await,
        (500, json!({"error": "INTERNAL_ERROR"}))
    );
    assert_eq!(env.get(&url).await.0, 200, "limited to the next occurrence");

    faults.inject_times(
        FaultTarget::endpoint("canopy.pulls.get"),
        FaultEffect::status(401),
        1,
    );
    assert_eq!(env.get(&url).await, (401, json!({"error": "UNAUTHORIZED"})));

    faults.inject_times(
        FaultTarget::endpoint("canopy.monitorings.*"),
        FaultEffect::rate_limited(7),
        2,
    );
    let r = env
        .http
        .post(env.team("/monitorings"))
        .header("authorization", env.auth())
        .json(&json!({"pull_id": pull_id, "interval": "P1M"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "7");
    let (code, _) = env.get(&env.team("/monitorings")).await;
    assert_eq!(code, 429, "prefix match, second occurrence");
    let (code, _) = env.get(&env.team("/monitorings")).await;
    assert_eq!(code, 200);

    // Through the control API, as JSON.
    let r = env
        .http
        .post(format!("{}/_sandbox/faults", env.sandbox.base_url()))
        .json(&json!({"target": {"kind": "endpoint", "name": "canopy.webhooks.list"}, "effect": {"kind": "status", "status": 503}, "times": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(env.get(&env.team("/webhooks")).await.0, 503);
    assert_eq!(env.get(&env.team("/webhooks")).await.0, 200);

    let (_, names) = status_json(
        env.http
            .get(format!(
                "{}/_sandbox/faults/endpoints",
                env.sandbox.base_url()
            ))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let names: Vec<&str> = names
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    for n in [
        "canopy.pulls.get",
        "canopy.monitorings.create",
        "canopy.monitorings.refresh",
        "canopy.webhooks.create",
        "canopy.widget.reconnect_token",
        "canopy.widget.connect",
        "canopy.link.open",
        "canopy.files",
    ] {
        assert!(names.contains(&n), "{n} in {names:?}");
    }
}

#[tokio::test]
async fn endpoint_latency_hang_and_malformed() {
    let env = Env::start().await;
    let pull_id = linked(&env).await;
    let url = env.team(&format!("/pulls/{pull_id}"));
    let faults = env.sandbox.faults();

    faults.inject_times(
        FaultTarget::endpoint("canopy.pulls.get"),
        FaultEffect::latency(Duration::from_millis(150)),
        1,
    );
    let start = Instant::now();
    assert_eq!(env.get(&url).await.0, 200);
    assert!(start.elapsed() >= Duration::from_millis(150));

    // A hang the client gives up on.
    faults.inject_times(
        FaultTarget::endpoint("canopy.pulls.get"),
        FaultEffect::Hang { ms: None },
        1,
    );
    let err = env
        .http
        .get(&url)
        .header("authorization", env.auth())
        .timeout(Duration::from_millis(200))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    // A bounded hang ends in 504.
    faults.inject_times(
        FaultTarget::endpoint("canopy.pulls.get"),
        FaultEffect::Hang { ms: Some(50) },
        1,
    );
    assert_eq!(env.get(&url).await.0, 504);

    faults.inject_times(
        FaultTarget::endpoint("canopy.pulls.get"),
        FaultEffect::Malformed,
        1,
    );
    let r = env
        .http
        .get(&url)
        .header("authorization", env.auth())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(text.starts_with("{\"") && serde_json::from_str::<Value>(&text).is_err());

    // The hosted page too.
    faults.inject_times(
        FaultTarget::endpoint("canopy.link.open"),
        FaultEffect::status(502),
        1,
    );
    let r = env
        .http
        .get(env.sandbox.canopy().widget_url())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
}

#[tokio::test]
async fn webhook_status_fault_is_retried_on_canopys_schedule() {
    let env = Env::start().await;
    env.sandbox.faults().add(
        FaultRule::new(
            FaultTarget::webhook_event("canopy", "COMPLETE"),
            FaultEffect::status(500),
        )
        .times(3),
    );
    let pull_id = connected(&env).await;
    let attempts = env
        .sandbox
        .deliveries()
        .wait_for_n(4, WAIT, |a| {
            a.event_type == "COMPLETE" && a.body.contains(&pull_id)
        })
        .await
        .unwrap();
    let statuses: Vec<Option<u16>> = attempts.iter().map(|a| a.status).collect();
    assert_eq!(statuses, [Some(500), Some(500), Some(500), Some(200)]);
    assert_eq!(
        attempts.iter().map(|a| a.attempt).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    let scale = 0.0001;
    for (i, w) in attempts.windows(2).enumerate() {
        let n = i as u32 + 1;
        let want = RetrySchedule::canopy().delay(n).as_secs_f64() * scale;
        let got = (w[1].at - w[0].at).num_microseconds().unwrap() as f64 / 1e6;
        assert!(
            got >= want * 0.9,
            "retry {n}: waited {got}s, schedule says {want}s"
        );
    }
    // Every attempt is signed afresh over the same body.
    for a in &attempts {
        assert!(verify_signature(
            SECRET,
            a.header("canopy-signature").unwrap(),
            a.body.as_bytes()
        ));
    }
    assert_eq!(
        env.hooks.of_type("COMPLETE").len(),
        1,
        "only the last attempt reached the receiver"
    );
}

#[tokio::test]
async fn a_failing_receiver_gets_ten_retries_then_nothing() {
    let env = Env::start_with(|c| CanopySimConfig {
        retry: RetrySchedule::canopy().with_time_scale(0.00002),
        ..c
    })
    .await;
    env.hooks.respond_with(503);
    let sim = env.sandbox.canopy();
    let pull_id = sim
        .connect(ConnectRequest::new("statefarm", "user_locked", "pass_good"))
        .unwrap();
    let attempts = env
        .sandbox
        .deliveries()
        .wait_for_n(11, WAIT, |a| {
            a.event_type == "AUTH_STATUS" && a.body.contains(&pull_id)
        })
        .await
        .unwrap();
    assert!(attempts.iter().all(|a| a.status == Some(503)));
    assert_eq!(
        attempts.last().unwrap().attempt,
        11,
        "the first try and 10 retries"
    );
    // Received 11 times, each with a valid signature over the same bytes.
    let got = env
        .hooks
        .wait_until("11 attempts", |all| (all.len() >= 11).then(|| all.to_vec()))
        .await;
    assert!(
        got.iter()
            .all(|r| verify_signature(SECRET, &r.signature().unwrap(), &r.body))
    );
    assert!(got.windows(2).all(|w| w[0].body == w[1].body));
    // Give a 12th attempt the time of the whole schedule again: none comes.
    let total: f64 = (1..=10)
        .map(|n| RetrySchedule::canopy().delay(n).as_secs_f64() * 0.00002)
        .sum();
    let more = env
        .sandbox
        .deliveries()
        .wait_for_n(12, Duration::from_secs_f64(total * 2.0 + 0.2), |a| {
            a.event_type == "AUTH_STATUS" && a.body.contains(&pull_id)
        })
        .await;
    assert!(more.is_err());
}

#[tokio::test]
async fn duplicate_out_of_order_drop_malformed_latency_webhooks() {
    let env = Env::start().await;
    let faults = env.sandbox.faults();
    faults.inject_times(
        FaultTarget::webhook_event("canopy", "COMPLETE"),
        FaultEffect::Duplicate { copies: 2 },
        1,
    );
    faults.inject_times(
        FaultTarget::webhook_event("canopy", "POLICIES_AVAILABLE"),
        FaultEffect::OutOfOrder { max_hold_ms: 5_000 },
        1,
    );
    faults.inject_times(
        FaultTarget::webhook_event("canopy", "AUTH_STATUS"),
        FaultEffect::Drop,
        1,
    );
    faults.inject_times(
        FaultTarget::webhook_event("canopy", "POLICY_AVAILABLE"),
        FaultEffect::Malformed,
        1,
    );
    let pull_id = connected(&env).await;
    let got = env
        .hooks
        .wait_until("6 deliveries", |all| (all.len() >= 6).then(|| all.to_vec()))
        .await;
    let order: Vec<String> = got
        .iter()
        .map(|r| {
            let t = r.event_type();
            if t.is_empty() {
                "<malformed>".to_owned()
            } else {
                t
            }
        })
        .collect();
    // The held POLICIES_AVAILABLE goes right after the next delivery (COMPLETE and its copies).
    assert_eq!(
        order,
        [
            "<malformed>",
            "POLICY_AVAILABLE",
            "COMPLETE",
            "COMPLETE",
            "COMPLETE",
            "POLICIES_AVAILABLE"
        ]
    );
    // Dropped: AUTH_STATUS never arrived, but the log has it.
    assert!(got.iter().all(|r| r.event_type() != "AUTH_STATUS"));
    let dropped = env
        .sandbox
        .deliveries()
        .filtered(Some("canopy"), Some("AUTH_STATUS"));
    assert_eq!(dropped.len(), 1);
    assert!(dropped[0].status.is_none() && dropped[0].faults.contains(&"drop".to_owned()));
    // Duplicates: identical bytes.
    let completes: Vec<_> = got
        .iter()
        .filter(|r| r.event_type() == "COMPLETE")
        .collect();
    assert!(completes.iter().all(|r| r.body == completes[0].body));
    // Malformed: not JSON, but signed over the bytes sent.
    let bad = &got[0];
    assert!(serde_json::from_slice::<Value>(&bad.body).is_err());
    assert!(verify_signature(
        SECRET,
        &bad.signature().unwrap(),
        &bad.body
    ));
    assert_eq!(
        env.hooks.events_for(&pull_id).len(),
        5,
        "the parseable ones: 1 PA, 3 COMPLETE, 1 PAS"
    );

    // Latency: a delayed webhook still arrives.
    faults.inject_times(
        FaultTarget::webhooks("canopy"),
        FaultEffect::latency(Duration::from_millis(100)),
        1,
    );
    env.sandbox
        .canopy()
        .send_event(&pull_id, "DATA_UPDATED", None)
        .unwrap();
    env.hooks.wait_event("DATA_UPDATED", Some(&pull_id)).await;
}

#[tokio::test]
async fn signature_modes() {
    let env = Env::start().await;
    let pull_id = linked(&env).await;
    let sim = env.sandbox.canopy();
    let send = |event: &'static str| {
        env.hooks.clear();
        sim.send_event(&pull_id, event, Some(json!({}))).unwrap();
        env.hooks.wait_event(event, Some(&pull_id))
    };

    sim.set_signature_mode(SignatureMode::WrongSecret);
    let r = send("COMPLETE").await;
    assert!(!verify_signature(SECRET, &r.signature().unwrap(), &r.body));

    let (code, _) = env
        .post(
            &env.control("/signature"),
            json!({"mode": "stale", "seconds": 3600}),
        )
        .await;
    assert_eq!(code, 200);
    let r = send("POLICIES_AVAILABLE").await;
    let sig = r.signature().unwrap();
    assert!(verify_signature(SECRET, &sig, &r.body), "correct HMAC …");
    let t: i64 = sig.split(',').next().unwrap()[2..].parse().unwrap();
    assert!(
        chrono::Utc::now().timestamp() - t >= 3599,
        "… over an old timestamp"
    );

    let (code, _) = env
        .post(&env.control("/signature"), json!({"mode": "missing"}))
        .await;
    assert_eq!(code, 200);
    let r = send("DATA_UPDATED").await;
    assert!(r.signature().is_none());

    env.post(&env.control("/signature"), json!({"mode": "valid"}))
        .await;
    let r = send("ERROR").await;
    assert!(verify_signature(SECRET, &r.signature().unwrap(), &r.body));
}

#[tokio::test]
async fn sandbox_clock_signatures_when_asked() {
    let env = Env::start_with(|c| CanopySimConfig {
        sign_with_sandbox_clock: true,
        ..c
    })
    .await;
    env.sandbox.clock().advance(chrono::Duration::days(3));
    let pull_id = env
        .sandbox
        .canopy()
        .connect(ConnectRequest::new("statefarm", "x", "y"))
        .unwrap();
    let r = env.hooks.wait_event("AUTH_STATUS", Some(&pull_id)).await;
    let t: i64 = r.signature().unwrap().split(',').next().unwrap()[2..]
        .parse()
        .unwrap();
    assert!(t - chrono::Utc::now().timestamp() > 2 * 86_400);
}
