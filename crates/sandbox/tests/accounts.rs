//! Several vendor accounts in one sandbox: each Axle client and each Canopy team sees only what
//! it made, and the log of calls names the credentials each call carried, so that a test can
//! prove one tenant's link only ever used that tenant's account.

use std::time::Duration;

use coverwatch_sandbox::axle::{AxleAccount, SignIn, StartIgnition};
use coverwatch_sandbox::canopy::{self as canopy_sim, CanopyTeam, ConnectRequest};
use coverwatch_sandbox::{RetrySchedule, Sandbox, SandboxConfig, SandboxHandle};
use reqwest::StatusCode;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(10);
const TEAM_A: &str = canopy_sim::DEFAULT_TEAM_ID;
const TEAM_B: &str = "7c9e6679-7425-40de-944b-e07fc1f90ae7";

/// A port nothing listens on: deliveries fail at once and stay in the delivery log.
fn dead_url(path: &str) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}{path}")
}

async fn sandbox() -> SandboxHandle {
    let mut cfg = SandboxConfig::for_tests();
    cfg.canopy = cfg
        .canopy
        .with_webhook(dead_url("/hooks/team-a"), "whsec-team-a");
    cfg.canopy.retry = RetrySchedule::none();
    cfg.axle.retry = RetrySchedule::none();
    Sandbox::start(cfg).await.unwrap()
}

fn team_b() -> CanopyTeam {
    CanopyTeam::new(TEAM_B, "client-b", "secret-b", "team-b-link")
        .with_webhook(dead_url("/hooks/team-b"), "whsec-team-b")
}

async fn canopy_get(h: &SandboxHandle, path: &str, auth: &str) -> (StatusCode, Value) {
    let resp = reqwest::Client::new()
        .get(format!("{}{path}", h.canopy_base_url()))
        .header("authorization", auth)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn canopy_teams_see_only_their_own_pulls_webhooks_and_events() {
    let h = sandbox().await;
    let sim = h.canopy();
    // Added at run time, as a test does for a second tenant.
    sim.add_team(team_b());
    let a_auth = sim.basic_auth();
    let b_auth = team_b().basic_auth();

    let pull_a = sim.connect(ConnectRequest::good()).unwrap();
    let pull_b = sim.connect_team(TEAM_B, ConnectRequest::good()).unwrap();
    for pull in [&pull_a, &pull_b] {
        sim.wait_for_status(pull, "SUCCESS", WAIT).await.unwrap();
    }
    assert_eq!(sim.pull(&pull_b).unwrap().team_id, TEAM_B);
    assert_eq!(sim.pull(&pull_b).unwrap().public_alias, "team-b-link");

    // Each key reads its own team's pull.
    let (status, body) = canopy_get(&h, &format!("/teams/{TEAM_A}/pulls/{pull_a}"), &a_auth).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = canopy_get(&h, &format!("/teams/{TEAM_B}/pulls/{pull_b}"), &b_auth).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // B's key on A's path: the key does not belong to that team (get-pull documents 401).
    let (status, body) = canopy_get(&h, &format!("/teams/{TEAM_A}/pulls/{pull_a}"), &b_auth).await;
    assert_eq!(
        (status, &body["error"]),
        (StatusCode::UNAUTHORIZED, &json!("UNAUTHORIZED"))
    );
    // B's key on B's path naming A's pull: answered exactly as an unknown pull (get-pull
    // answers an unknown id with 400 NOT_FOUND in the OpenAPI document).
    let (status, body) = canopy_get(&h, &format!("/teams/{TEAM_B}/pulls/{pull_a}"), &b_auth).await;
    assert_eq!(
        (status, &body["error"]),
        (StatusCode::BAD_REQUEST, &json!("NOT_FOUND"))
    );
    // Lists hold only the team's own pulls and webhooks.
    let (_, list) = canopy_get(&h, &format!("/teams/{TEAM_B}/pulls"), &b_auth).await;
    let ids: Vec<&str> = list["pulls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["pull_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [pull_b.as_str()]);
    let (_, hooks) = canopy_get(&h, &format!("/teams/{TEAM_B}/webhooks"), &b_auth).await;
    let hooks = hooks["webhooks"].as_array().unwrap().clone();
    assert_eq!(hooks.len(), 1);
    assert_eq!(hooks[0]["signing_secret"], "whsec-team-b");
    // The team is Canopy's path, not a field of its answer.
    assert!(hooks[0].get("team_id").is_none());
    // A's key listing B's webhooks: 403 UNAUTHORIZED (get-webhooks).
    let (status, _) = canopy_get(&h, &format!("/teams/{TEAM_B}/webhooks"), &a_auth).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // A monitoring of B's pull is B's: A's key cannot stop it.
    let monitoring = sim.create_monitoring(&pull_b, "P1M").unwrap();
    let resp = reqwest::Client::new()
        .delete(format!(
            "{}/teams/{TEAM_A}/monitorings/{}",
            h.canopy_base_url(),
            monitoring.monitoring_id
        ))
        .header("authorization", &a_auth)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        sim.monitoring(&monitoring.monitoring_id).unwrap().status,
        "ACTIVE"
    );

    // Each pull's webhooks went to its own team's URL only, signed with that team's secret.
    for (pull, hook) in [(&pull_a, "/hooks/team-a"), (&pull_b, "/hooks/team-b")] {
        let sent = h
            .deliveries()
            .wait_for(WAIT, |d| {
                d.vendor == "canopy" && d.body.contains(pull.as_str())
            })
            .await
            .unwrap();
        assert!(sent.url.ends_with(hook), "{} went to {}", pull, sent.url);
    }
    let all = h.deliveries().entries();
    assert!(
        all.iter()
            .filter(|d| d.body.contains(pull_b.as_str()))
            .all(|d| d.url.ends_with("/hooks/team-b"))
    );

    // Team B's link opens; an unknown alias does not.
    let page = reqwest::get(format!("{}/canopy/c/team-b-link", h.base_url()))
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let page = reqwest::get(format!("{}/canopy/c/nobodys-link", h.base_url()))
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::NOT_FOUND);

    // The call log names the key and the team of every call, and never a secret.
    let calls = sim.calls();
    assert!(
        calls
            .iter()
            .any(|c| c.client_id.as_deref() == Some("client-b")
                && c.team_id.as_deref() == Some(TEAM_B)
                && c.status == 200)
    );
    assert!(
        calls
            .iter()
            .any(|c| c.client_id.as_deref() == Some("client-b")
                && c.team_id.as_deref() == Some(TEAM_A)
                && c.status == 401)
    );
    assert!(calls.windows(2).all(|w| w[0].seq < w[1].seq));
    let shown = format!("{calls:?}");
    assert!(!shown.contains("secret-b") && !shown.contains(canopy_sim::DEFAULT_CLIENT_SECRET));
    h.shutdown().await;
}

async fn axle_post(
    h: &SandboxHandle,
    path: &str,
    client: (&str, &str),
    extra: &[(&str, &str)],
    body: Value,
) -> (StatusCode, Value) {
    let mut req = reqwest::Client::new()
        .post(format!("{}{path}", h.axle_base_url()))
        .header("x-client-id", client.0)
        .header("x-client-secret", client.1);
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let resp = req.json(&body).send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap())
}

async fn axle_get(
    h: &SandboxHandle,
    path: &str,
    client: (&str, &str),
    extra: &[(&str, &str)],
) -> (StatusCode, Value) {
    let mut req = reqwest::Client::new()
        .get(format!("{}{path}", h.axle_base_url()))
        .header("x-client-id", client.0)
        .header("x-client-secret", client.1);
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap())
}

/// Starts an Ignition as `client` and signs in with the sandbox's simple auto login.
async fn link(h: &SandboxHandle, client: (&str, &str), extra: &[(&str, &str)]) -> String {
    let (status, body) =
        axle_post(h, "/ignition", client, extra, json!({"user": {"id": "u1"}})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let token = body["data"]["ignitionToken"].as_str().unwrap();
    let SignIn::Complete { auth_code, .. } = h
        .axle()
        .sign_in(token, "state-farm", "username", "password")
        .unwrap()
    else {
        panic!("the simple auto login links")
    };
    auth_code
}

#[tokio::test]
async fn axle_clients_see_only_their_own_codes_tokens_and_accounts() {
    let h = sandbox().await;
    let a = (
        coverwatch_sandbox::axle::DEFAULT_CLIENT_ID,
        coverwatch_sandbox::axle::DEFAULT_CLIENT_SECRET,
    );
    let b = ("cli_b", "secret-b");
    h.axle().add_account(AxleAccount::new(b.0, b.1));

    let code_a = link(&h, a, &[]).await;
    // B cannot spend A's code: answered as an unknown one, and A still can.
    let (status, body) =
        axle_post(&h, "/token/exchange", b, &[], json!({"authCode": code_a})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) =
        axle_post(&h, "/token/exchange", a, &[], json!({"authCode": code_a})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let token_a = body["data"]["accessToken"].as_str().unwrap().to_owned();
    let account_a = body["data"]["account"].as_str().unwrap().to_owned();

    // The same carrier login under B is another account, with another token.
    let code_b = link(&h, b, &[]).await;
    let (_, body) = axle_post(&h, "/token/exchange", b, &[], json!({"authCode": code_b})).await;
    let token_b = body["data"]["accessToken"].as_str().unwrap().to_owned();
    assert_ne!(body["data"]["account"], json!(account_a));
    assert_ne!(token_b, token_a);

    // A's token under B's keys is an invalid token.
    let account_path = format!("/accounts/{account_a}");
    let (status, _) = axle_get(&h, &account_path, b, &[("x-access-token", &token_a)]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = axle_get(&h, &account_path, a, &[("x-access-token", &token_a)]).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = axle_post(
        &h,
        "/token/descope",
        b,
        &[("x-access-token", &token_a)],
        json!({"scope": "monitoring"}),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(h.axle().is_monitored(&account_a), Some(true));

    // The log says which client made each call.
    let calls = h.axle().calls();
    let by_b: Vec<_> = calls
        .iter()
        .filter(|c| c.client_id.as_deref() == Some("cli_b"))
        .map(|c| (c.method.as_str(), c.path.as_str(), c.status))
        .collect();
    assert_eq!(
        by_b,
        [
            ("POST", "/token/exchange", 400),
            ("POST", "/ignition", 200),
            ("POST", "/token/exchange", 200),
            ("GET", account_path.as_str(), 401),
            ("POST", "/token/descope", 401),
        ]
    );
    let shown = format!("{calls:?}");
    assert!(!shown.contains(&token_a) && !shown.contains("secret-b"));
    h.shutdown().await;
}

#[tokio::test]
async fn a_platform_acts_only_for_its_destination_clients() {
    let h = sandbox().await;
    let p = ("cli_platform", "platform-secret");
    h.axle().add_account(AxleAccount::platform(
        p.0,
        p.1,
        &["cli_dest_1", "cli_dest_2"],
    ));

    let (status, body) = axle_get(&h, "/platform/clients", p, &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"], json!(["cli_dest_1", "cli_dest_2"]));
    let (_, body) = axle_get(&h, "/platform/clients?expand=true", p, &[]).await;
    assert_eq!(body["data"][0]["id"], "cli_dest_1");

    let dest = [("x-destination-client-id", "cli_dest_2")];
    let code = link(&h, p, &dest).await;
    // Exchanged for the destination client it was made for; the platform alone cannot.
    let (status, _) = axle_post(&h, "/token/exchange", p, &[], json!({"authCode": code})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, body) =
        axle_post(&h, "/token/exchange", p, &dest, json!({"authCode": code})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // A destination that is not the platform's is refused.
    let (status, _) = axle_post(
        &h,
        "/ignition",
        p,
        &[("x-destination-client-id", "cli_dest_9")],
        json!({"user": {"id": "u"}}),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let last = h.axle().calls().pop().unwrap();
    assert_eq!(last.destination_client_id.as_deref(), Some("cli_dest_9"));

    // The default client still takes any destination, as it always did.
    h.axle()
        .start_ignition(StartIgnition::for_user("u"), Some("cli_anyone"))
        .unwrap();
    h.shutdown().await;
}

#[tokio::test]
async fn accounts_can_be_added_and_calls_read_over_the_control_api() {
    let h = sandbox().await;
    let http = reqwest::Client::new();
    let resp = http
        .post(format!("{}/_sandbox/canopy/teams", h.base_url()))
        .json(
            &json!({"team_id": TEAM_B, "client_id": "client-b", "client_secret": "secret-b",
                      "public_alias": "team-b-link",
                      "webhooks": [{"url": dead_url("/hooks/b"), "signing_secret": "whsec-b"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let resp = http
        .post(format!("{}/_sandbox/canopy/teams", h.base_url()))
        .json(&json!({"team_id": "", "client_id": "c", "client_secret": "s", "public_alias": "a"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let (status, hooks) = canopy_get(
        &h,
        &format!("/teams/{TEAM_B}/webhooks"),
        &team_b().basic_auth(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(hooks["webhooks"][0]["signing_secret"], "whsec-b");

    let resp = http
        .post(format!("{}/_sandbox/axle/clients", h.base_url()))
        .json(&json!({"client_id": "cli_c", "client_secret": "secret-c"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let (status, _) = axle_get(&h, "/carriers", ("cli_c", "secret-c"), &[]).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = axle_get(&h, "/carriers", ("cli_c", "wrong"), &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let calls: Vec<Value> = http
        .get(format!("{}/_sandbox/calls?vendor=axle", h.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let seen: Vec<(&str, u64)> = calls
        .iter()
        .map(|c| {
            (
                c["client_id"].as_str().unwrap(),
                c["status"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(seen, [("cli_c", 200), ("cli_c", 401)]);
    let resp = http
        .delete(format!("{}/_sandbox/calls", h.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert!(h.calls().all().is_empty());
    h.shutdown().await;
}
