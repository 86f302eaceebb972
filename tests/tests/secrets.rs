//! Secrets kept out of view (issue 11, point 5), end to end: after a full Axle flow (with a
//! shared webhook header) and a full Canopy flow (with a reconnect), neither the database files
//! nor the logs hold an auth code, an access token, a reconnect token, an API key, the shared
//! header value or a vendor credential; AdminService masks them; a descoped link's webhook URL
//! is refused once its grace period is over.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use coverwatch::auth::hash_key;
use coverwatch::config::Config;
use coverwatch_core::ProviderId;
use coverwatch_proto::v1::admin_service_client::AdminServiceClient;
use coverwatch_sandbox::canopy::{Scenario, ScenarioAction, ScenarioTarget, fixtures};
use coverwatch_sandbox::{AxleSimConfig, CanopySimConfig, Sandbox, SandboxConfig, SandboxHandle};
use coverwatch_tests::flows::{
    Browser, DEADLINE, Page, last_of, link_events, sandbox, start_link, wait_for_event,
    wait_for_state,
};
use coverwatch_tests::{Client, TENANT_A, TestServer, eventually, test_config, v1};
use serde_json::json;

use v1::EventKind as K;

const SHARED_HEADER: &str = "x-axle-webhook-secret";
const SHARED_VALUE: &str = "shared-header-value-7f3c9e21d4b8";
const CANOPY_SIGNING_SECRET: &str = "canopy-signing-secret-5a1e0c77";
const ADMIN_KEY: &str = "admin-key-of-the-secrets-test-01";

// ---------------------------------------------------------------------------------------------
// Captured logs: everything this process logs, at the level a deployment runs with and at debug
// for our own crates.

#[derive(Clone)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn captured_logs() -> &'static Captured {
    static LOGS: OnceLock<Captured> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Captured(Arc::default());
        let writer = logs.clone();
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "info,coverwatch=debug,coverwatch_engine=debug,coverwatch_store=debug,\
                 coverwatch_axle=debug,coverwatch_canopy=debug,coverwatch_sandbox=debug",
            ))
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .try_init()
            .expect("the only subscriber of this test binary");
        logs
    })
}

fn logs_text(logs: &Captured) -> String {
    String::from_utf8_lossy(&logs.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
}

// ---------------------------------------------------------------------------------------------
// The database as stored.

/// Every byte the database holds: the SQLite file and its write-ahead log, or on PostgreSQL
/// every row of every table as text (`bytea` shows as hex: callers look for that form too).
async fn database_contents(url: &str) -> Vec<u8> {
    if let Some(path) = sqlite_path(url) {
        let mut bytes = std::fs::read(&path).expect("the SQLite file");
        if let Ok(wal) = std::fs::read(format!("{path}-wal")) {
            bytes.extend(wal);
        }
        return bytes;
    }
    use sqlx::Connection as _;
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    let tables: Vec<(String,)> = sqlx::query_as(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public'",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let mut out = Vec::new();
    for (table,) in tables {
        let rows: Vec<(String,)> = sqlx::query_as(&format!("SELECT t::text FROM \"{table}\" t"))
            .fetch_all(&mut conn)
            .await
            .unwrap();
        for (row,) in rows {
            out.extend(row.into_bytes());
        }
    }
    out
}

fn sqlite_path(url: &str) -> Option<String> {
    url.strip_prefix("sqlite://")
        .map(|rest| rest.split('?').next().unwrap_or(rest).to_owned())
}

fn holds(haystack: &[u8], secret: &str) -> bool {
    let hex = hex_of(secret);
    [secret.as_bytes(), hex.as_bytes()]
        .iter()
        .any(|needle| haystack.windows(needle.len()).any(|w| w == *needle))
}

fn hex_of(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------------------------------------
// A server whose vendors are a sandbox of the test's own, so that Axle adds a shared header to
// every webhook and the server is configured to require it.

struct World {
    sandbox: SandboxHandle,
    server: TestServer,
    client: Client,
    browser: Browser,
    database_url: String,
}

impl World {
    async fn start() -> Self {
        captured_logs();
        let sandbox = Sandbox::start(SandboxConfig {
            axle: AxleSimConfig {
                webhook_headers: vec![(SHARED_HEADER.into(), SHARED_VALUE.into())],
                ..AxleSimConfig::default()
            },
            ..SandboxConfig::for_tests()
        })
        .await
        .expect("sandbox");
        let base = sandbox.base_url().to_owned();
        let axle = AxleSimConfig::default();
        let canopy = CanopySimConfig::default();
        let mut config: Config = test_config().await;
        config.admin_api_key_sha256 = vec![hash_key(ADMIN_KEY)];
        config.vendors.insert(
            "axle".into(),
            serde_json::json!({
                "base_url": sandbox.axle_base_url(),
                "client_id": axle.client_id,
                "client_secret": axle.client_secret,
                "webhook_header_name": SHARED_HEADER,
                "webhook_header_value": SHARED_VALUE,
            }),
        );
        config.vendors.insert(
            "canopy".into(),
            serde_json::json!({
                "base_url": format!("{base}/canopy/api/v1.0.0"),
                "widget_base_url": format!("{base}/canopy"),
                "team_id": canopy.team_id,
                "client_id": canopy.client_id,
                "client_secret": canopy.client_secret,
                "public_alias": canopy.public_alias,
                "signing_secrets": [CANOPY_SIGNING_SECRET],
            }),
        );
        let database_url = config.database_url.clone();
        let server = TestServer::start(config, None).await;
        assert!(
            server.app.sandbox.is_none(),
            "both vendors configured: no embedded sandbox"
        );
        sandbox.canopy().register_webhook(
            &server.http_url("/webhooks/canopy"),
            Some(CANOPY_SIGNING_SECRET),
            &[],
        );
        let client = server.client(TENANT_A).await;
        Self {
            sandbox,
            server,
            client,
            browser: Browser::new(),
            database_url,
        }
    }

    async fn worked_off(&self) {
        let store = self.server.app.engine.store();
        eventually("the inbox to be worked off", DEADLINE, || async {
            (store.count_pending_deliveries().await.unwrap() == 0).then_some(())
        })
        .await;
    }

    async fn admin(&self) -> AdminServiceClient<tonic::transport::Channel> {
        AdminServiceClient::new(self.server.channel().await)
    }
}

fn admin_request<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {ADMIN_KEY}").parse().unwrap(),
    );
    request
}

/// An Axle link through the hosted Ignition page; returns its id and the Axle account's.
async fn link_axle(world: &World, browser: &Browser) -> (String, String) {
    let started = start_link(&world.client, v1::Provider::Axle, "user-axle", None, None).await;
    let link_id = started.link.unwrap().id;
    let landing: Page = browser.get(&started.session_url).await;
    let login = browser
        .submit(&landing, "carrier-form", &[("carrier", "state-farm")])
        .await;
    let done = browser
        .submit(
            &login,
            "login-form",
            &[("username", "username"), ("password", "password")],
        )
        .await;
    assert_eq!(done.element_text("status").as_deref(), Some("complete"));
    let events = wait_for_event(&world.client, &link_id, K::LinkCompleted).await;
    let Some(v1::event::Payload::LinkCompleted(completed)) =
        last_of(&events, K::LinkCompleted).payload.clone()
    else {
        panic!("link.completed without its payload")
    };
    (link_id, completed.account_external_id.expect("an account"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_full_flows_no_secret_is_in_the_database_the_logs_or_admin_answers() {
    let world = World::start().await;
    let logs = captured_logs();

    // ---- Axle: Ignition, authCode by webhook (with the shared header), exchange, descope.
    let (axle_link, account) = link_axle(&world, &world.browser).await;
    let completed = world
        .sandbox
        .deliveries()
        .filtered(Some("axle"), Some("ignition.completed"));
    let completed = completed.first().expect("ignition.completed was sent");
    assert_eq!(completed.header(SHARED_HEADER), Some(SHARED_VALUE));
    let auth_code = completed.json().unwrap()["data"]["authCode"]
        .as_str()
        .expect("the authCode")
        .to_owned();
    let webhook_url = completed.url.clone();
    let access_token = world
        .sandbox
        .axle()
        .access_token(&account)
        .expect("Axle issued an access token");

    // ---- Canopy: widget, pull, monitoring; the credentials expire behind MFA: a reconnect
    // token by webhook; the user reconnects in the caller's app.
    let started = start_link(
        &world.client,
        v1::Provider::Canopy,
        "user-canopy",
        None,
        None,
    )
    .await;
    let canopy_link = started.link.unwrap().id;
    let widget = world.browser.get(&started.session_url).await;
    let submitted = world
        .browser
        .submit(
            &widget,
            "login",
            &[
                ("consent", "yes"),
                ("insurerName", "statefarm"),
                ("username", "user_good"),
                ("password", fixtures::GOOD_PASSWORD),
            ],
        )
        .await;
    assert_eq!(submitted.status, 303, "{}", submitted.html);
    let status_page = world.browser.follow(&submitted).await;
    let pull_id = status_page.body_data("pull-id").expect("a pull");
    wait_for_state(&world.client, &canopy_link, v1::LinkState::Active).await;
    world.worked_off().await;
    world
        .sandbox
        .canopy()
        .apply(
            Scenario::new(ScenarioTarget::pull(&pull_id), ScenarioAction::RequireMfa).and_refresh(),
        )
        .unwrap();
    let events = wait_for_event(&world.client, &canopy_link, K::LinkReconnectRequired).await;
    let Some(v1::event::Payload::LinkReconnectRequired(required)) =
        last_of(&events, K::LinkReconnectRequired).payload.clone()
    else {
        panic!("link.reconnect_required without its payload")
    };
    let reconnect_url = required.reconnect_url.expect("a reconnect URL");
    let reconnect_token = url::Url::parse(&reconnect_url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "reconnectToken")
        .expect("the URL carries the token")
        .1
        .into_owned();
    // The caller still gets what it needs to send the user back: the URL, in clear.
    let link = coverwatch_tests::flows::get_link(&world.client, &canopy_link).await;
    assert_eq!(link.session_url.as_deref(), Some(reconnect_url.as_str()));
    let mut client = world.client.clone();
    client
        .submit_reconnect_credentials(v1::SubmitReconnectCredentialsRequest {
            link_id: canopy_link.clone(),
            carrier: None,
            username: "user_good".into(),
            password: Some(fixtures::GOOD_PASSWORD.into()),
            third_field: None,
        })
        .await
        .expect("credentials");
    eventually("the verification options", DEADLINE, || async {
        let events = link_events(&world.client, &canopy_link).await;
        events
            .iter()
            .any(|e| {
                matches!(&e.payload, Some(v1::event::Payload::LinkAuthStatus(s))
                    if s.status() == v1::AuthStatus::IdentityVerificationOptions)
            })
            .then_some(())
    })
    .await;
    client
        .select_verification_option(v1::SelectVerificationOptionRequest {
            link_id: canopy_link.clone(),
            option_key: "sms".into(),
        })
        .await
        .expect("option");
    eventually("the verification step", DEADLINE, || async {
        let events = link_events(&world.client, &canopy_link).await;
        events
            .iter()
            .any(|e| {
                matches!(&e.payload, Some(v1::event::Payload::LinkAuthStatus(s))
                    if s.status() == v1::AuthStatus::IdentityVerification)
            })
            .then_some(())
    })
    .await;
    client
        .submit_verification_code(v1::SubmitVerificationCodeRequest {
            link_id: canopy_link.clone(),
            code: "424242".into(),
        })
        .await
        .expect("code");
    wait_for_state(&world.client, &canopy_link, v1::LinkState::Active).await;

    // ---- Descope the Axle link: within the grace period its URL is still accepted (the
    // vendor may be retrying), and stored like any delivery.
    client
        .descope(v1::DescopeRequest {
            link_id: axle_link.clone(),
        })
        .await
        .expect("Descope");
    let late = world
        .server
        .http
        .post(&webhook_url)
        .header(SHARED_HEADER, SHARED_VALUE)
        .json(
            &json!({"id": "evt_after_descope", "type": "account.modified",
                      "data": {"ref": account}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(late.status(), 200, "within the grace period");
    world.worked_off().await;

    let secrets = [
        ("the Axle authCode", auth_code.as_str()),
        ("the Axle access token", access_token.as_str()),
        ("the Canopy reconnect token", reconnect_token.as_str()),
        ("the tenant API key", TENANT_A.1),
        ("the admin API key", ADMIN_KEY),
        ("the Axle shared header value", SHARED_VALUE),
        (
            "the Axle client secret",
            &AxleSimConfig::default().client_secret,
        ),
        (
            "the Canopy client secret",
            &CanopySimConfig::default().client_secret,
        ),
        ("the Canopy signing secret", CANOPY_SIGNING_SECRET),
    ];

    // ---- AdminService: every delivery, listed and read one by one, masks them.
    let mut admin = world.admin().await;
    let listed = admin
        .list_deliveries(admin_request(v1::ListDeliveriesRequest {
            page_size: 500,
            ..Default::default()
        }))
        .await
        .expect("ListDeliveries")
        .into_inner();
    assert!(listed.deliveries.len() >= 8, "{}", listed.deliveries.len());
    let mut answers = format!("{listed:?}");
    let mut masked_code = false;
    for delivery in &listed.deliveries {
        let full = admin
            .get_delivery(admin_request(v1::GetDeliveryRequest {
                delivery_id: delivery.id.clone(),
            }))
            .await
            .expect("GetDelivery")
            .into_inner();
        // Bodies are bytes (their Debug form is a list of numbers): read them as text.
        let body_text =
            String::from_utf8_lossy(&full.delivery.as_ref().expect("a delivery").body).into_owned();
        let text = format!("{full:?}\n{body_text}");
        let delivery = full.delivery.as_ref().expect("a delivery");
        if body_text.contains("ignition.completed") {
            let body: serde_json::Value = serde_json::from_slice(&delivery.body).unwrap();
            assert_eq!(body["data"]["authCode"], "[redacted]", "{body}");
            let header = delivery.headers.iter().find(|h| h.name == SHARED_HEADER);
            assert_eq!(header.map(|h| h.value.as_str()), Some("[redacted]"));
            masked_code = true;
        }
        if body_text.contains("MONITORING_RECONNECT") {
            let body: serde_json::Value = serde_json::from_slice(&delivery.body).unwrap();
            assert_eq!(body["data"]["reconnect_token"], "[redacted]", "{body}");
            assert_eq!(body["data"]["reconnect_url"], "[redacted]", "{body}");
        }
        answers.push_str(&text);
    }
    assert!(masked_code, "the ignition.completed delivery was looked at");
    assert!(answers.contains("MONITORING_RECONNECT"));
    for (what, secret) in secrets {
        assert!(!answers.contains(secret), "{what} is in an admin answer");
    }

    // ---- The database, while the server runs (main file and write-ahead log).
    let stored = database_contents(&world.database_url).await;
    // What is not secret is there to be found: the check can see what is stored.
    assert!(holds(&stored, &canopy_link), "the check reads the database");
    for (what, secret) in secrets {
        assert!(!holds(&stored, secret), "{what} is stored in clear");
    }

    // ---- The logs.
    let text = logs_text(logs);
    assert!(
        text.contains("Axle authCode exchanged"),
        "the capture sees the flows' log lines"
    );
    for (what, secret) in secrets {
        assert!(!text.contains(secret), "{what} was logged");
    }

    // And once stopped, with the log checkpointed into the main file.
    world.server.stop().await;
    world.sandbox.shutdown().await;
    let stored = database_contents(&world.database_url).await;
    for (what, secret) in secrets {
        assert!(!holds(&stored, secret), "{what} is stored in clear");
    }
    coverwatch_store::testing::drop_database(&world.database_url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_descoped_links_webhook_url_is_refused_after_the_grace_period() {
    captured_logs();
    let mut config = test_config().await;
    config.webhooks.descoped_token_grace_hours = 0;
    let database_url = config.database_url.clone();
    let server = TestServer::start(config, None).await;
    let client = &server.client(TENANT_A).await;
    let browser = Browser::new();

    let started = start_link(client, v1::Provider::Axle, "user-1", None, None).await;
    let link_id = started.link.unwrap().id;
    let landing = browser.get(&started.session_url).await;
    let login = browser
        .submit(&landing, "carrier-form", &[("carrier", "state-farm")])
        .await;
    browser
        .submit(
            &login,
            "login-form",
            &[("username", "username"), ("password", "password")],
        )
        .await;
    wait_for_event(client, &link_id, K::LinkCompleted).await;
    let webhook_url = sandbox(&server)
        .deliveries()
        .filtered(Some("axle"), Some("ignition.completed"))
        .first()
        .expect("ignition.completed was sent")
        .url
        .clone();

    // While the link is monitored its URL is good.
    let post = |id: &'static str| {
        let http = server.http.clone();
        let url = webhook_url.clone();
        async move {
            http.post(url)
                .json(&json!({"id": id, "type": "account.audited"}))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(post("evt_before_descope").await, 200);
    // Processed before anything is counted below: one link's deliveries are applied in receipt
    // order, so every earlier one (Ignition's progress events too) has been applied as well.
    wait_for_event(client, &link_id, K::VendorEvent).await;

    client
        .clone()
        .descope(v1::DescopeRequest {
            link_id: link_id.clone(),
        })
        .await
        .expect("Descope");
    let store = server.app.engine.store();
    let stored = store
        .count_deliveries(ProviderId::from_static("axle"))
        .await
        .unwrap();
    let events = link_events(client, &link_id).await.len();

    // No grace configured: refused at once, like a URL we never gave out, and nothing stored.
    assert_eq!(post("evt_after_descope").await, 401);
    assert_eq!(
        store
            .count_deliveries(ProviderId::from_static("axle"))
            .await
            .unwrap(),
        stored
    );
    assert_eq!(link_events(client, &link_id).await.len(), events);
    server.stop().await;
    coverwatch_store::testing::drop_database(&database_url).await;
}
