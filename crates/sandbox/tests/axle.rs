//! Black-box tests of the Axle simulator: every endpoint's success and documented error cases,
//! the hosted Ignition page driven by plain form posts, Ignition and monitoring webhooks, and
//! the lifecycle rules (authCode reuse and expiry, same account → same token, descope silence).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use coverwatch_sandbox::axle::{AxleSimConfig, SignIn, StartIgnition};
use coverwatch_sandbox::{RetrySchedule, Sandbox, SandboxConfig, SandboxHandle};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::watch;

const WAIT: Duration = Duration::from_secs(5);
const CLIENT_ID: &str = "cli_sandbox";
const SECRET: &str = "axle-sandbox-secret";

// ---- helpers ---------------------------------------------------------------------------------

async fn sandbox() -> SandboxHandle {
    let cfg = SandboxConfig {
        axle: AxleSimConfig {
            retry: RetrySchedule::axle().with_time_scale(0.001),
            ..AxleSimConfig::default()
        },
        ..SandboxConfig::for_tests()
    };
    Sandbox::start(cfg).await.expect("sandbox starts")
}

/// A webhook receiver: a tiny axum server on port 0 that records every POST.
#[derive(Clone)]
struct Receiver {
    url: String,
    hits: Arc<Mutex<Vec<Value>>>,
    changed: watch::Sender<usize>,
}

impl Receiver {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let rx = Receiver {
            url,
            hits: Arc::default(),
            changed: watch::channel(0).0,
        };
        let app = Router::new()
            .route(
                "/hook",
                post(
                    |State(r): State<Receiver>, _h: HeaderMap, body: Bytes| async move {
                        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                        let n = {
                            let mut hits = r.hits.lock().unwrap();
                            hits.push(v);
                            hits.len()
                        };
                        r.changed.send_replace(n);
                        "ok"
                    },
                ),
            )
            .with_state(rx.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        rx
    }

    fn hits(&self) -> Vec<Value> {
        self.hits.lock().unwrap().clone()
    }

    /// Waits for the first event of `event_type` (with a deadline).
    async fn event(&self, event_type: &str) -> Value {
        self.wait(|hits| hits.iter().find(|h| h["type"] == event_type).cloned())
            .await
    }

    async fn wait<T>(&self, check: impl Fn(&[Value]) -> Option<T>) -> T {
        let mut rx = self.changed.subscribe();
        tokio::time::timeout(WAIT, async {
            loop {
                if let Some(found) = check(&self.hits()) {
                    return found;
                }
                rx.changed().await.unwrap();
            }
        })
        .await
        .unwrap_or_else(|_| panic!("timed out; received: {:#?}", self.hits()))
    }

    fn types(&self) -> Vec<String> {
        self.hits()
            .iter()
            .map(|h| h["type"].as_str().unwrap_or("?").to_owned())
            .collect()
    }
}

struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    fn new(h: &SandboxHandle) -> Self {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Self {
            base: h.axle_base_url(),
            http,
        }
    }

    fn req(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let mut r = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("x-client-id", CLIENT_ID)
            .header("x-client-secret", SECRET);
        if let Some(t) = token {
            r = r.header("x-access-token", t);
        }
        r
    }

    async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
        let resp = self
            .req(reqwest::Method::POST, path, token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(
            resp.headers().contains_key("x-axle-request-id"),
            "{path}: no x-axle-request-id"
        );
        (resp.status(), resp.json().await.unwrap())
    }

    async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        let resp = self
            .req(reqwest::Method::GET, path, token)
            .send()
            .await
            .unwrap();
        assert!(
            resp.headers().contains_key("x-axle-request-id"),
            "{path}: no x-axle-request-id"
        );
        (resp.status(), resp.json().await.unwrap())
    }

    async fn start(&self, webhook: Option<&str>, redirect: Option<&str>) -> (String, String) {
        let mut body = json!({ "user": { "id": "usr_1", "firstName": "John" }, "metadata": { "loanId": "L-1" } });
        if let Some(w) = webhook {
            body["webhookUri"] = json!(w);
        }
        if let Some(r) = redirect {
            body["redirectUri"] = json!(r);
        }
        let (status, body) = self.post("/ignition", None, body).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        (
            body["data"]["ignitionToken"].as_str().unwrap().to_owned(),
            body["data"]["ignitionUri"].as_str().unwrap().to_owned(),
        )
    }

    /// Drives the hosted page with form posts; returns the 303 Location.
    async fn page_sign_in(
        &self,
        token: &str,
        carrier: &str,
        username: &str,
        password: &str,
    ) -> reqwest::Response {
        self.http
            .post(format!("{}/ignition-ui/login", self.base))
            .form(&[
                ("token", token),
                ("carrier", carrier),
                ("username", username),
                ("password", password),
            ])
            .send()
            .await
            .unwrap()
    }

    /// Full link through the page; returns the exchange data.
    async fn link(
        &self,
        webhook: Option<&str>,
        carrier: &str,
        username: &str,
        password: &str,
    ) -> Value {
        let (token, _) = self
            .start(webhook, Some("https://app.example/axle/done"))
            .await;
        let resp = self.page_sign_in(&token, carrier, username, password).await;
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
        let location = url::Url::parse(resp.headers()["location"].to_str().unwrap()).unwrap();
        let code = location
            .query_pairs()
            .find(|(k, _)| k == "authCode")
            .unwrap()
            .1
            .into_owned();
        let (status, body) = self
            .post("/token/exchange", None, json!({ "authCode": code }))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["data"].clone()
    }
}

fn query(location: &str) -> Vec<(String, String)> {
    url::Url::parse(location)
        .unwrap()
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn param(location: &str, name: &str) -> Option<String> {
    query(location)
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

// ---- Start Ignition --------------------------------------------------------------------------

#[tokio::test]
async fn start_ignition_success_and_errors() {
    let h = sandbox().await;
    let api = Api::new(&h);
    let hook = Receiver::start().await;

    let (token, uri) = api.start(Some(&hook.url), None).await;
    assert!(token.starts_with("ign_") && token.len() == 25, "{token}");
    assert_eq!(
        uri,
        format!("{}/axle/ignition-ui/?token={token}", h.base_url())
    );
    let created = hook.event("ignition.created").await;
    assert_eq!(created["data"]["ref"], json!(token));
    assert_eq!(created["data"]["client"], CLIENT_ID);
    assert_eq!(
        created["data"]["user"],
        json!({ "id": "usr_1", "firstName": "John" })
    );
    assert_eq!(created["data"]["metadata"], json!({ "loanId": "L-1" }));
    assert!(created["id"].as_str().unwrap().starts_with("evt_"));
    assert!(created["createdAt"].as_str().unwrap().ends_with('Z'));

    // Request ids differ per call.
    let a = api
        .req(reqwest::Method::POST, "/ignition", None)
        .json(&json!({"user": {"id": "u"}}))
        .send()
        .await
        .unwrap();
    let b = api
        .req(reqwest::Method::POST, "/ignition", None)
        .json(&json!({"user": {"id": "u"}}))
        .send()
        .await
        .unwrap();
    let (ra, rb) = (
        &a.headers()["x-axle-request-id"],
        &b.headers()["x-axle-request-id"],
    );
    assert_ne!(ra, rb);
    assert!(ra.to_str().unwrap().starts_with("req_"));

    // Wrong secret, missing client id: 401.
    let resp = api
        .http
        .post(format!("{}/ignition", api.base))
        .header("x-client-id", CLIENT_ID)
        .header("x-client-secret", "wrong")
        .json(&json!({"user": {"id": "u"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(resp.headers().contains_key("x-axle-request-id"));
    assert_eq!(resp.json::<Value>().await.unwrap()["success"], false);
    let resp = api
        .http
        .post(format!("{}/ignition", api.base))
        .json(&json!({"user": {"id": "u"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    // Validation: 400 with {success: false}.
    for body in [
        json!({}),
        json!({ "user": {} }),
        json!({ "user": { "id": "" } }),
        json!({ "user": { "id": "u" }, "metadata": { "nested": { "a": 1 } } }),
        json!({ "user": { "id": "u" }, "webhookUri": "not a url" }),
    ] {
        let (status, resp) = api.post("/ignition", None, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(resp["success"], false);
        assert!(resp["message"].is_string());
    }
    // An access token is no longer accepted here.
    let (status, _) = api
        .post("/ignition", Some("tok"), json!({ "user": { "id": "u" } }))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // Not JSON.
    let resp = api
        .req(reqwest::Method::POST, "/ignition", None)
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);

    // Platforms: x-destination-client-id becomes `client`.
    let resp = api
        .req(reqwest::Method::POST, "/ignition", None)
        .header("x-destination-client-id", "cli_dest")
        .json(&json!({ "user": { "id": "u" }, "webhookUri": hook.url }))
        .send()
        .await
        .unwrap();
    let t = resp.json::<Value>().await.unwrap()["data"]["ignitionToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let ev = hook
        .wait(|hits| hits.iter().find(|e| e["data"]["ref"] == json!(t)).cloned())
        .await;
    assert_eq!(ev["data"]["client"], "cli_dest");

    // Unknown path: Axle-shaped 404.
    let (status, body) = api.get("/nope", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["success"], false);
}

// ---- Hosted Ignition page ---------------------------------------------------------------------

#[tokio::test]
async fn hosted_page_complete_flow_with_redirect_and_webhooks() {
    let h = sandbox().await;
    let api = Api::new(&h);
    let hook = Receiver::start().await;
    let (token, uri) = api
        .start(Some(&hook.url), Some("https://app.example/done?x=1"))
        .await;

    // Landing page: carrier choice form, sends ignition.opened.
    let page = api.http.get(&uri).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.headers().contains_key("x-axle-request-id"));
    let html = page.text().await.unwrap();
    assert!(
        html.contains(r#"<form id="carrier-form" method="get" action="login">"#),
        "{html}"
    );
    assert!(html.contains(r#"value="state-farm""#));
    assert!(html.contains(&format!(r#"name="token" value="{token}""#)));
    hook.event("ignition.opened").await;

    // Without a trailing slash the page redirects to the canonical URL.
    let resp = api
        .http
        .get(format!("{}/ignition-ui?token={token}", api.base))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_redirection());

    // Login form for the chosen carrier.
    let html = api
        .http
        .get(format!(
            "{}/ignition-ui/login?token={token}&carrier=geico",
            api.base
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("Sign in to GEICO"));
    assert!(html.contains(r#"name="password""#));

    // Wrong password: the page shows an error, ignition.attempted is sent, session stays open.
    let resp = api.page_sign_in(&token, "geico", "username", "wrong").await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.text().await.unwrap().contains(r#"id="error""#));
    let attempted = hook.event("ignition.attempted").await;
    assert_eq!(attempted["data"]["carrier"], "geico");
    assert_eq!(attempted["data"]["attempt"], 1);

    // Right login: 303 to redirectUri with status, authCode, result, client.
    let resp = api
        .page_sign_in(&token, "geico", "username", "password")
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        location.starts_with("https://app.example/done?x=1&status=complete&"),
        "{location}"
    );
    let code = param(&location, "authCode").unwrap();
    assert_eq!(param(&location, "result").as_deref(), Some("link"));
    assert_eq!(param(&location, "client").as_deref(), Some(CLIENT_ID));

    let completed = hook.event("ignition.completed").await;
    assert_eq!(completed["data"]["authCode"], json!(code));
    assert_eq!(completed["data"]["result"], "link");
    assert_eq!(completed["data"]["client"], CLIENT_ID);
    assert_eq!(completed["data"]["user"]["id"], "usr_1");
    assert_eq!(completed["data"]["metadata"], json!({ "loanId": "L-1" }));
    assert_eq!(
        hook.types(),
        [
            "ignition.created",
            "ignition.opened",
            "ignition.attempted",
            "ignition.completed"
        ]
    );

    let (status, body) = api
        .post("/token/exchange", None, json!({ "authCode": code }))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["success"], true);
    let data = &body["data"];
    assert!(data["accessToken"].as_str().unwrap().len() >= 32);
    assert!(data["account"].as_str().unwrap().starts_with("acc_"));
    assert_eq!(data["policies"].as_array().unwrap().len(), 2);

    // The session is over: the page says so and a new sign-in is refused.
    let html = api
        .http
        .get(&uri)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("has ended"));
    let resp = api
        .page_sign_in(&token, "geico", "username", "password")
        .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);

    // Unknown token.
    let resp = api
        .http
        .get(format!("{}/ignition-ui/?token=ign_nope", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn hosted_page_without_redirect_shows_the_result() {
    let h = sandbox().await;
    let api = Api::new(&h);
    let (token, _) = api.start(None, None).await;
    let resp = api
        .page_sign_in(&token, "state-farm", "user-home", "pass-home")
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let html = resp.text().await.unwrap();
    assert!(html.contains(r#"<dd id="status">complete</dd>"#), "{html}");
    let code = html
        .split(r#"<dd id="authCode">"#)
        .nth(1)
        .unwrap()
        .split('<')
        .next()
        .unwrap();
    let (status, body) = api
        .post("/token/exchange", None, json!({ "authCode": code }))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn hosted_page_exit_and_error() {
    let h = sandbox().await;
    let api = Api::new(&h);
    let hook = Receiver::start().await;

    // Exit from the login step.
    let (token, _) = api
        .start(Some(&hook.url), Some("https://app.example/done"))
        .await;
    let resp = api
        .http
        .post(format!("{}/ignition-ui/exit", api.base))
        .form(&[("token", token.as_str()), ("step", "login")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(param(&location, "status").as_deref(), Some("exit"));
    assert_eq!(param(&location, "step").as_deref(), Some("login"));
    assert_eq!(param(&location, "client").as_deref(), Some(CLIENT_ID));
    assert_eq!(param(&location, "authCode"), None);
    let exited = hook.event("ignition.exited").await;
    assert_eq!(exited["data"]["step"], "login");
    assert_eq!(exited["data"]["ref"], json!(token));

    // The errored test login.
    let (token, _) = api
        .start(Some(&hook.url), Some("https://app.example/done"))
        .await;
    let resp = api
        .page_sign_in(&token, "progressive", "user-error", "pass-error")
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(param(&location, "status").as_deref(), Some("error"));
    assert!(
        param(&location, "message")
            .unwrap()
            .contains("Unable to connect")
    );
    let errored = hook.event("ignition.errored").await;
    assert!(
        errored["data"]["message"]
            .as_str()
            .unwrap()
            .contains("Unable to connect")
    );
    assert_eq!(
        h.axle().ignition(&token).unwrap().status,
        coverwatch_sandbox::axle::IgnitionStatus::Errored
    );
}

// ---- Tokens ------------------------------------------------------------------------------------

#[tokio::test]
async fn auth_code_is_single_use_and_expires_after_ten_minutes() {
    let h = sandbox().await;
    let api = Api::new(&h);
    let sim = h.axle();

    let start = |user: &str| {
        sim.start_ignition(StartIgnition::for_user(user), None)
            .unwrap()
            .ignition_token
    };
    let code = |token: &str| match sim
        .sign_in(token, "state-farm", "username", "password")
        .unwrap()
    {
        SignIn::Complete { auth_code, .. } => auth_code,
        other => panic!("{other:?}"),
    };

    // Reuse: 400.
    let c = code(&start("u1"));
    let (status, _) = api
        .post("/token/exchange", None, json!({ "authCode": c }))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = api
        .post("/token/exchange", None, json!({ "authCode": c }))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["success"], false);

    // Unknown or missing: 400; bad credentials: 401.
    let (status, _) = api
        .post("/token/exchange", None, json!({ "authCode": "nope" }))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = api.post("/token/exchange", None, json!({})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let resp = api
        .http
        .post(format!("{}/token/exchange", api.base))
        .json(&json!({"authCode": c}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    // Nine minutes later: still valid. Eleven: expired.
    let fresh = code(&start("u2"));
    h.clock().advance(chrono::Duration::minutes(9));
    let (status, _) = api
        .post("/token/exchange", None, json!({ "authCode": fresh }))
        .await;
    assert_eq!(status, StatusCode::OK);
    let stale = code(&start("u3"));
    h.clock().advance(chrono::Duration::minutes(11));
    let (status, body) = api
        .post("/token/exchange", None, json!({ "authCode": stale }))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["message"].as_str().unwrap().contains("expired"));
}

#[tokio::test]
async fn same_account_gets_the_same_token_and_a_different_one_a_new_token() {
    let h = sandbox().await;
    let api = Api::new(&h);
    let first = api.link(None, "state-farm", "username", "password").await;
    let again = api.link(None, "state-farm", "username", "password").await;
    assert_eq!(first, again, "relinking the same login at the same carrier");
    let other_carrier = api.link(None, "geico", "username", "password").await;
    assert_ne!(other_carrier["accessToken"], first["accessToken"]);
    assert_ne!(other_carrier["account"], first["account"]);
    let home = api.link(None, "state-farm", "user-home", "pass-home").await;
    assert_ne!(home["accessToken"], first["accessToken"]);
    assert_eq!(home["policies"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn descope_silences_monitoring_until_relinked() {
    let h = sandbox().await;
    let api = Api::new(&h);
    let hook = Receiver::start().await;
    let linked = api
        .link(Some(&hook.url), "state-farm", "username", "password")
        .await;
    let token = linked["accessToken"].as_str().unwrap().to_owned();
    let policy = linked["policies"][0].as_str().unwrap().to_owned();
    let marker = api
        .link(Some(&hook.url), "state-farm", "user-home", "pass-home")
        .await;

    // Errors first.
    let (status, _) = api
        .post(
            "/token/descope",
            Some(&token),
            json!({ "scope": "everything" }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = api.post("/token/descope", Some(&token), json!({})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = api
        .post("/token/descope", None, json!({ "scope": "monitoring" }))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = api
        .post(
            "/token/descope",
            Some("bogus"),
            json!({ "scope": "monitoring" }),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (status, body) = api
        .post(
            "/token/descope",
            Some(&token),
            json!({ "scope": "monitoring" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({ "success": true, "data": { "accessToken": token } })
    );
    assert_eq!(
        h.axle().is_monitored(linked["account"].as_str().unwrap()),
        Some(false)
    );

    // A change on the descoped account sends nothing (the marker proves the queue drained past it).
    let (status, _) = api
        .post(
            &format!("/sandbox/policies/{policy}/event"),
            Some(&token),
            json!({ "isActive": false }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    h.axle()
        .account_retrying(marker["account"].as_str().unwrap())
        .unwrap();
    hook.event("account.retrying").await;
    assert!(
        !hook.types().contains(&"policy.modified".to_owned()),
        "{:?}",
        hook.types()
    );
    // Reads still work and show the change.
    let (status, body) = api.get(&format!("/policies/{policy}"), Some(&token)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"]["isActive"], false);

    // Relinking the same account returns the same token and resumes monitoring.
    let relinked = api
        .link(Some(&hook.url), "state-farm", "username", "password")
        .await;
    assert_eq!(relinked["accessToken"], json!(token));
    let (status, _) = api
        .post(
            &format!("/sandbox/policies/{policy}/event"),
            Some(&token),
            json!({ "premium": 1.0 }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let ev = hook.event("policy.modified").await;
    assert_eq!(ev["data"]["ref"], json!(policy));
}

// ---- Reads -------------------------------------------------------------------------------------

#[tokio::test]
async fn get_account_and_policy() {
    let h = sandbox().await;
    let api = Api::new(&h);
    let linked = api.link(None, "state-farm", "username", "password").await;
    let token = linked["accessToken"].as_str().unwrap();
    let account_id = linked["account"].as_str().unwrap();
    let policy_id = linked["policies"][0].as_str().unwrap();

    let (status, body) = api
        .get(&format!("/accounts/{account_id}"), Some(token))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["success"], true);
    let acc = &body["data"];
    assert_eq!(acc["id"], json!(account_id));
    assert_eq!(acc["carrier"], "state-farm");
    assert_eq!(acc["firstName"], "John");
    assert_eq!(acc["lastName"], "Smith");
    assert_eq!(acc["email"], "john.smith@example.com");
    assert_eq!(acc["connection"]["status"], "active");
    assert_eq!(acc["policies"], linked["policies"]);
    for k in ["createdAt", "modifiedAt", "refreshedAt"] {
        assert!(acc[k].as_str().unwrap().ends_with('Z'));
    }

    let (_, body) = api
        .get(&format!("/accounts/{account_id}?expand=true"), Some(token))
        .await;
    assert_eq!(body["data"]["policies"][0]["id"], json!(policy_id));
    assert_eq!(body["data"]["policies"][0]["type"], "auto");

    let (status, body) = api
        .get(&format!("/policies/{policy_id}"), Some(token))
        .await;
    assert_eq!(status, StatusCode::OK);
    let p = &body["data"];
    assert_eq!(p["id"], json!(policy_id));
    assert_eq!(p["account"], json!(account_id));
    assert_eq!(p["type"], "auto");
    assert_eq!(p["carrier"], "state-farm");
    assert_eq!(p["policyNumber"], "AUTO-100-2001");
    assert_eq!(p["isActive"], true);
    assert_eq!(p["premium"], 1342.5);
    assert_eq!(p["properties"][0]["type"], "vehicle");
    assert_eq!(p["properties"][0]["data"]["year"], "2017");
    assert_eq!(p["properties"][0]["data"]["vin"], "SMTD44GN3HT812287");
    let bi = &p["coverages"][0];
    assert_eq!(
        bi,
        &json!({"code": "BI", "label": "Bodily Injury", "limitPerPerson": 250000, "limitPerAccident": 500000})
    );
    let codes: Vec<&str> = p["coverages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["code"].as_str().unwrap())
        .collect();
    assert_eq!(
        codes,
        [
            "BI", "PD", "UMBI", "UMPD", "UIMBI", "UIMPD", "COMP", "COLL", "COMP", "COLL"
        ]
    );
    assert_eq!(p["coverages"][6]["property"], p["properties"][0]["id"]);
    assert_eq!(p["thirdParties"][0]["type"], "lienholder");
    assert_eq!(p["thirdParties"][0]["property"], p["properties"][0]["id"]);
    assert_eq!(p["insureds"][0]["type"], "primary");
    assert_eq!(p["insureds"][0]["dateOfBirth"], Value::Null);

    // The signed document URL works without credentials, and only as signed.
    let url = p["documents"][0]["url"].as_str().unwrap().to_owned();
    let resp = reqwest::get(&url).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "application/pdf");
    assert!(resp.bytes().await.unwrap().starts_with(b"%PDF-"));
    let tampered = url.replace("signature=", "signature=0");
    assert_eq!(
        reqwest::get(&tampered).await.unwrap().status(),
        StatusCode::FORBIDDEN
    );

    let (_, body) = api
        .get(&format!("/policies/{policy_id}?expand=true"), Some(token))
        .await;
    assert_eq!(body["data"]["account"]["id"], json!(account_id));

    // term=renewal: 404 until a renewal exists; term=current is the default; bad values 400.
    let (status, body) = api
        .get(&format!("/policies/{policy_id}?term=renewal"), Some(token))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["success"], false);
    let (status, _) = api
        .get(&format!("/policies/{policy_id}?term=current"), Some(token))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = api
        .get(&format!("/policies/{policy_id}?term=next"), Some(token))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = api
        .get(&format!("/policies/{policy_id}?expand=maybe"), Some(token))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Missing token 400, bad token 401, another account's objects 404, unknown ids 404.
    let (status, _) = api.get(&format!("/accounts/{account_id}"), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = api
        .get(&format!("/accounts/{account_id}"), Some("bogus"))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let other = api.link(None, "state-farm", "user-home", "pass-home").await;
    let other_token = other["accessToken"].as_str().unwrap();
    let (status, _) = api
        .get(&format!("/accounts/{account_id}"), Some(other_token))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = api
        .get(&format!("/policies/{policy_id}"), Some(other_token))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = api.get("/policies/pol_unknown", Some(token)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let resp = api
        .http
        .get(format!("{}/accounts/{account_id}", api.base))
        .header("x-access-token", token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    // Home and minimum fixtures.
    let (_, body) = api
        .get(
            &format!("/policies/{}", other["policies"][0].as_str().unwrap()),
            Some(other_token),
        )
        .await;
    assert_eq!(body["data"]["type"], "home");
    assert_eq!(body["data"]["properties"][0]["type"], "dwelling");
    let min = api
        .link(
            None,
            "allstate",
            "user-auto-state-minimum",
            "pass-auto-state-minimum",
        )
        .await;
    let (_, body) = api
        .get(
            &format!("/policies/{}", min["policies"][0].as_str().unwrap()),
            min["accessToken"].as_str(),
        )
        .await;
    assert_eq!(body["data"]["isActive"], false);
    assert_eq!(body["data"]["coverages"].as_array().unwrap().len(), 2);
    assert_eq!(body["data"]["carrier"], "allstate");
}

#[tokio::test]
async fn document_urls_expire() {
    let h = sandbox().await;
    let api = Api::new(&h);
    let linked = api.link(None, "state-farm", "username", "password").await;
    let (_, body) = api
        .get(
            &format!("/policies/{}", linked["policies"][0].as_str().unwrap()),
            linked["accessToken"].as_str(),
        )
        .await;
    let url = body["data"]["documents"][0]["url"]
        .as_str()
        .unwrap()
        .to_owned();
    h.clock().advance(chrono::Duration::minutes(16));
    assert_eq!(
        reqwest::get(&url).await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
}

// ---- Monitoring events ---------------------------------------------------------------------------

#[tokio::test]
async fn sandbox_trigger_endpoints_send_monitoring_events_with_only_a_ref() {
    let h = sandbox().await;
    let api = Api::new(&h);
    let hook = Receiver::start().await;
    let linked = api
        .link(Some(&hook.url), "state-farm", "username", "password")
        .await;
    let token = linked["accessToken"].as_str().unwrap();
    let account = linked["account"].as_str().unwrap();
    let policy = linked["policies"][0].as_str().unwrap();

    // account.modified
    let (status, body) = api
        .post(
            &format!("/sandbox/accounts/{account}/event"),
            Some(token),
            json!({ "email": "updatedEmail@axle.insure", "firstName": "Jane" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"]["email"], "updatedEmail@axle.insure");
    let ev = hook.event("account.modified").await;
    assert_eq!(ev["data"]["ref"], json!(account));
    assert_eq!(ev["data"]["client"], CLIENT_ID);
    assert_eq!(ev["data"]["user"]["id"], "usr_1");
    assert_eq!(ev["data"]["metadata"]["loanId"], "L-1");
    assert!(
        ev["data"].get("email").is_none(),
        "events never carry the object"
    );
    let changes = ev["data"]["changes"].as_array().unwrap();
    assert!(changes.contains(&json!({"type": "UPDATE", "key": "email", "value": "updatedEmail@axle.insure", "oldValue": "john.smith@example.com"})));
    assert!(changes.contains(
        &json!({"type": "UPDATE", "key": "firstName", "value": "Jane", "oldValue": "John"})
    ));

    // policy.modified (cancellation)
    let (status, _) = api
        .post(
            &format!("/sandbox/policies/{policy}/event"),
            Some(token),
            json!({ "isActive": false }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let ev = hook.event("policy.modified").await;
    assert_eq!(ev["data"]["ref"], json!(policy));
    assert_eq!(ev["data"]["account"], json!(account));
    assert_eq!(
        ev["data"]["changes"],
        json!([{"type": "UPDATE", "key": "isActive", "value": false, "oldValue": true}])
    );

    // account.disconnected: sets connection.status.
    let (status, _) = api
        .post(
            &format!("/sandbox/account/{account}/event"),
            Some(token),
            json!({ "connection": { "status": "credentials-expired" } }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let ev = hook.event("account.disconnected").await;
    assert_eq!(ev["data"]["status"], "credentials-expired");
    assert_eq!(ev["data"]["ref"], json!(account));
    let (_, body) = api.get(&format!("/accounts/{account}"), Some(token)).await;
    assert_eq!(body["data"]["connection"]["status"], "credentials-expired");

    // Errors: unknown field, bad status, missing/bad token, another account's ids.
    let (status, _) = api
        .post(
            &format!("/sandbox/accounts/{account}/event"),
            Some(token),
            json!({ "nope": 1 }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = api
        .post(
            &format!("/sandbox/accounts/{account}/event"),
            Some(token),
            json!({ "connection": { "status": "weird" } }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = api
        .post(
            &format!("/sandbox/policies/{policy}/event"),
            Some(token),
            json!({ "nope": 1 }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = api
        .post(
            &format!("/sandbox/policies/{policy}/event"),
            None,
            json!({ "isActive": true }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = api
        .post(
            &format!("/sandbox/policies/{policy}/event"),
            Some("bogus"),
            json!({ "isActive": true }),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let other = api.link(None, "state-farm", "user-home", "pass-home").await;
    let (status, _) = api
        .post(
            &format!("/sandbox/policies/{policy}/event"),
            other["accessToken"].as_str(),
            json!({ "isActive": true }),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = api
        .post(
            &format!("/sandbox/accounts/{account}/event"),
            other["accessToken"].as_str(),
            json!({ "firstName": "X" }),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn disconnected_account_is_silent_until_relinked_with_the_same_token() {
    let h = sandbox().await;
    let api = Api::new(&h);
    let hook = Receiver::start().await;
    let linked = api
        .link(Some(&hook.url), "usaa", "username", "password")
        .await;
    let account = linked["account"].as_str().unwrap().to_owned();
    let policy = linked["policies"][1].as_str().unwrap().to_owned();
    let sim = h.axle();

    let out = sim.account_retrying(&account).unwrap();
    assert!(out.event.is_some());
    hook.event("account.retrying").await;
    let out = sim.disconnect_account(&account, "mfa-expired").unwrap();
    assert_eq!(out.data["connection"]["status"], "mfa-expired");
    let ev = hook.event("account.disconnected").await;
    assert_eq!(ev["data"]["status"], "mfa-expired");

    // No policy events while disconnected.
    let out = sim.cancel_policy(&policy).unwrap();
    assert!(out.event.is_none());
    assert_eq!(out.changes.len(), 1);

    // Reconnect through a new Ignition: same token, active again, events resume.
    let again = api
        .link(Some(&hook.url), "usaa", "username", "password")
        .await;
    assert_eq!(again["accessToken"], linked["accessToken"]);
    assert_eq!(
        sim.account(&account).unwrap()["connection"]["status"],
        "active"
    );
    let out = sim
        .modify_policy(&policy, &json!({ "isActive": true }))
        .unwrap();
    assert!(out.event.is_some());
    let ev = hook.event("policy.modified").await;
    assert_eq!(ev["data"]["changes"][0]["value"], true);
}

#[tokio::test]
async fn renewal_available_makes_the_renewal_term_readable() {
    let h = sandbox().await;
    let api = Api::new(&h);
    let hook = Receiver::start().await;
    let linked = api
        .link(Some(&hook.url), "state-farm", "user-home", "pass-home")
        .await;
    let token = linked["accessToken"].as_str().unwrap();
    let policy = linked["policies"][0].as_str().unwrap();
    let (_, current) = api.get(&format!("/policies/{policy}"), Some(token)).await;

    // Through the control HTTP API.
    let resp: Value = api
        .http
        .post(format!(
            "{}/_sandbox/axle/policies/{policy}/renewal",
            h.base_url()
        ))
        .json(&json!({ "overrides": { "premium": 1999.0 } }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(resp["event"]["event_type"], "policy.renewal-available");
    let ev = hook.event("policy.renewal-available").await;
    assert_eq!(ev["data"]["ref"], json!(policy));
    assert_eq!(ev["data"]["account"], linked["account"]);

    let (status, renewal) = api
        .get(&format!("/policies/{policy}?term=renewal"), Some(token))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(renewal["data"]["id"], json!(policy));
    assert_eq!(
        renewal["data"]["effectiveDate"],
        current["data"]["expirationDate"]
    );
    assert_eq!(renewal["data"]["premium"], 1999.0);
    // The current term is unchanged.
    let (_, still) = api.get(&format!("/policies/{policy}"), Some(token)).await;
    assert_eq!(still["data"]["premium"], 1850.0);

    // The renewal term starts: policy.modified, and no renewal is left.
    let out = h.axle().start_renewal_term(policy).unwrap();
    assert!(out.changes.iter().any(|c| c["key"] == "premium"));
    let ev = hook
        .wait(|hits| {
            hits.iter()
                .rev()
                .find(|e| e["type"] == "policy.modified")
                .cloned()
        })
        .await;
    assert!(
        ev["data"]["changes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["key"] == "effectiveDate")
    );
    let (status, _) = api
        .get(&format!("/policies/{policy}?term=renewal"), Some(token))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn control_http_api_drives_everything() {
    let h = sandbox().await;
    let api = Api::new(&h);
    let hook = Receiver::start().await;
    let ctl = format!("{}/_sandbox/axle", h.base_url());
    let (token, _) = api
        .start(Some(&hook.url), Some("https://app.example/r"))
        .await;

    let resp: Value = api
        .http
        .post(format!("{ctl}/ignitions/{token}/sign-in"))
        .json(&json!({ "carrier": "nationwide", "username": "username", "password": "password" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(resp["status"], "complete");
    assert!(
        resp["redirect"]
            .as_str()
            .unwrap()
            .contains("status=complete")
    );
    let account = resp["account"].as_str().unwrap().to_owned();

    let info: Value = api
        .http
        .get(format!("{ctl}/ignitions/{token}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["status"], "completed");
    assert_eq!(info["carrier"], "nationwide");

    let acc: Value = api
        .http
        .get(format!("{ctl}/accounts/{account}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(acc["monitored"], true);
    assert!(acc["accessToken"].is_string());

    for (path, body, event) in [
        (
            "modify",
            json!({ "phone": "+14040000000" }),
            "account.modified",
        ),
        ("retrying", json!({}), "account.retrying"),
        (
            "event",
            json!({ "type": "account.custom", "data": { "x": 1 } }),
            "account.custom",
        ),
        (
            "disconnect",
            json!({ "status": "account-disabled" }),
            "account.disconnected",
        ),
    ] {
        let resp = api
            .http
            .post(format!("{ctl}/accounts/{account}/{path}"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        hook.event(event).await;
    }
    let policy = acc["account"]["policies"][0].as_str().unwrap();
    let resp = api
        .http
        .post(format!("{ctl}/policies/{policy}/cancel"))
        .send()
        .await
        .unwrap();
    let out: Value = resp.json().await.unwrap();
    assert_eq!(out["event"], Value::Null, "disconnected: no event");
    assert_eq!(out["data"]["isActive"], false);

    let state: Value = api
        .http
        .get(format!("{ctl}/state"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(state["accounts"].as_array().unwrap().len(), 1);
    assert_eq!(state["policies"].as_array().unwrap().len(), 2);

    let resp = api
        .http
        .post(format!("{ctl}/accounts/acc_nope/retrying"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let resp = api
        .http
        .post(format!("{ctl}/ignitions/ign_nope/exit"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);

    // Exit through the control API, and the deliveries log records everything.
    let (token2, _) = api.start(Some(&hook.url), None).await;
    let resp = api
        .http
        .post(format!("{ctl}/ignitions/{token2}/exit"))
        .json(&json!({ "step": "carrier-select" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    hook.event("ignition.exited").await;
    let log = h
        .deliveries()
        .wait_for(WAIT, |a| a.event_type == "ignition.exited" && a.delivered())
        .await
        .unwrap();
    assert_eq!(log.vendor, "axle");
    assert_eq!(log.url, hook.url);
    assert_eq!(log.json().unwrap()["data"]["step"], "carrier-select");
}
