//! The Axle simulator's Validate Policy (`POST /policies/{id}/validate`), checked against
//! Axle's documentation:
//! - docs.axle.insure/api-reference/policies/validate-policy: the body is an array of objects
//!   whose `rule` is one of "Available options: `policy-active`, `rental-covered-for-collision`";
//!   `x-access-token` is required; the answer is `{success, data}`.
//! - docs.axle.insure/guides/policy-validation: `data` has an `overall` status of pass, fail or
//!   caution, a `summary` (rule → status) and `rules` (rule → run details); `policy-active`
//!   passes when the policy is currently active and fails when it is not.

use coverwatch_sandbox::{Sandbox, SandboxConfig, SandboxHandle};
use reqwest::StatusCode;
use serde_json::{Value, json};

const CLIENT_ID: &str = "cli_sandbox";
const SECRET: &str = "axle-sandbox-secret";

struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    fn new(h: &SandboxHandle) -> Self {
        Self {
            base: h.axle_base_url(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
        }
    }

    async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
        let mut request = self
            .http
            .post(format!("{}{path}", self.base))
            .header("x-client-id", CLIENT_ID)
            .header("x-client-secret", SECRET)
            .json(&body);
        if let Some(token) = token {
            request = request.header("x-access-token", token);
        }
        let response = request.send().await.unwrap();
        (response.status(), response.json().await.unwrap())
    }

    /// Links the sandbox's default account through the hosted page; the exchange's `data`.
    async fn link(&self) -> Value {
        let (status, started) = self
            .post(
                "/ignition",
                None,
                json!({ "user": { "id": "usr_1" }, "redirectUri": "https://app.example/done" }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{started}");
        let token = started["data"]["ignitionToken"].as_str().unwrap();
        let response = self
            .http
            .post(format!("{}/ignition-ui/login", self.base))
            .form(&[
                ("token", token),
                ("carrier", "state-farm"),
                ("username", "username"),
                ("password", "password"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        let location = url::Url::parse(response.headers()["location"].to_str().unwrap()).unwrap();
        let code = location
            .query_pairs()
            .find(|(k, _)| k == "authCode")
            .unwrap()
            .1
            .into_owned();
        let (status, exchanged) = self
            .post("/token/exchange", None, json!({ "authCode": code }))
            .await;
        assert_eq!(status, StatusCode::OK, "{exchanged}");
        exchanged["data"].clone()
    }
}

async fn sandbox() -> SandboxHandle {
    Sandbox::start(SandboxConfig::for_tests())
        .await
        .expect("sandbox starts")
}

#[tokio::test]
async fn validate_policy_answers_overall_summary_and_rules() {
    let h = sandbox().await;
    let api = Api::new(&h);
    let linked = api.link().await;
    let token = linked["accessToken"].as_str().unwrap();
    let policy = linked["policies"][0].as_str().unwrap();
    let path = format!("/policies/{policy}/validate");

    // The default account's first policy is active (`isActive` true): `policy-active` is
    // "pass | The policy is currently active" (guide, "Policy is Active").
    let (status, body) = api
        .post(&path, Some(token), json!([{ "rule": "policy-active" }]))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["success"], true);
    assert_eq!(
        body["data"],
        json!({
            "overall": "pass",
            "summary": { "policy-active": "pass" },
            "rules": { "policy-active": { "status": "pass" } },
        })
    );

    // Cancelled through the documented sandbox trigger: "fail | The policy is not currently
    // active", and "fail means that one or more specified Rules evaluated to a status of fail".
    let (status, body) = api
        .post(
            &format!("/sandbox/policies/{policy}/event"),
            Some(token),
            json!({ "isActive": false }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, body) = api
        .post(
            &path,
            Some(token),
            json!([{ "rule": "policy-active" }, { "rule": "rental-covered-for-collision" }]),
        )
        .await;
    assert_eq!(body["data"]["overall"], "fail");
    assert_eq!(body["data"]["summary"]["policy-active"], "fail");
    // The simulator holds no rental terms: "unknown | Not enough data was available".
    assert_eq!(
        body["data"]["summary"]["rental-covered-for-collision"],
        "unknown"
    );
}

#[tokio::test]
async fn validate_policy_refuses_what_the_reference_does_not_allow() {
    let h = sandbox().await;
    let api = Api::new(&h);
    let linked = api.link().await;
    let token = linked["accessToken"].as_str().unwrap();
    let policy = linked["policies"][0].as_str().unwrap();
    let path = format!("/policies/{policy}/validate");

    // `rule` is an enum of two values; the guide's input rules are not among them.
    let (status, body) = api
        .post(
            &path,
            Some(token),
            json!([{ "rule": "expiration-date-comparison" }]),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["success"], false);
    let (status, _) = api
        .post(&path, Some(token), json!({ "rule": "policy-active" }))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = api.post(&path, Some(token), json!([])).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // `x-access-token` is required, and a token reaches only its own account's policies.
    let (status, _) = api
        .post(&path, None, json!([{ "rule": "policy-active" }]))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = api
        .post(
            "/policies/pol_not_mine/validate",
            Some(token),
            json!([{ "rule": "policy-active" }]),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
