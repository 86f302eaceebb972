//! Per-tenant vendor connections (issue 13, point 2), end to end: each tenant's own Canopy
//! account with its own webhook endpoint and signing secrets, links that use their tenant's
//! connection (or the deployment's default, or FAILED_PRECONDITION without either), settings
//! refused by field with nothing saved, signing-secret rotation with deliveries in flight, and
//! no secret in an answer or a log line.
//!
//! `two_tenants_with_their_own_canopy_teams_and_axle_clients_use_only_their_own` gives each
//! tenant its own Canopy team and Axle client (separate accounts of the simulators) and reads
//! the simulators' call logs to prove which credentials each link used. The other tests point
//! both tenants at the simulator's default team, each with signing secrets of its own: what
//! keeps the tenants apart there is what coverwatch does with the endpoint and the secrets.
//!
//! Canopy behaviour relied on: every webhook of a team goes to the URL registered for it
//! ("Using Webhooks", https://docs.usecanopy.com/reference/about-webhooks) and is signed with
//! that webhook's secret in `canopy-signature` ("Verifying Webhook Signatures",
//! https://docs.usecanopy.com/reference/verifying-webhook-signatures); pull meta data set with `ccmeta-` link
//! parameters comes back in every webhook of the pull ("Adding metadata to a pull",
//! https://docs.usecanopy.com/reference/adding-metadata-to-a-pull).

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use chrono::Utc;
use coverwatch::Overrides;
use coverwatch::auth::hash_key;
use coverwatch_core::plugin::Simulator;
use coverwatch_core::{ProviderId, VendorPlugin};
use coverwatch_engine::ProviderRegistry;
use coverwatch_proto::v1::admin_service_client::AdminServiceClient;
use coverwatch_sandbox::axle::AxleAccount;
use coverwatch_sandbox::canopy::CanopyTeam;
use coverwatch_sandbox::canopy::fixtures::{GOOD_PASSWORD, TestLogin};
use coverwatch_sandbox::{Sandbox, SandboxConfig};
use coverwatch_tests::fake_provider::FakeProvider;
use coverwatch_tests::flows::{
    Browser, DEADLINE, get_link, link_events, sandbox, start_link, wait_for_state,
};
use coverwatch_tests::vendors::Driver;
use coverwatch_tests::{
    Client, TENANT_A, TENANT_B, TestServer, eventually, fast_worker, test_config, v1,
};
use serde_json::{Value, json};
use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

const ADMIN_KEY: &str = "connections-admin-key-0123456789";
const SECRET_A: &str = "whsec-tenant-a-4f1c9d2e7b";
const SECRET_B: &str = "whsec-tenant-b-8a3e6c1f0d";
const CLIENT_SECRET_A: &str = "client-secret-of-a-93ab71c2";

// ---------------------------------------------------------------------------------------------
// Captured logs (test 5 looks for secrets in them).

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
                 coverwatch_canopy=debug,coverwatch_sandbox=debug",
            ))
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .try_init()
            .expect("the only subscriber of this test binary");
        logs
    })
}

fn logs_text() -> String {
    String::from_utf8_lossy(&captured_logs().0.lock().unwrap_or_else(|p| p.into_inner()))
        .into_owned()
}

// ---------------------------------------------------------------------------------------------
// Harness

#[derive(Clone)]
struct Bearer(String);

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", self.0).parse().unwrap(),
        );
        Ok(request)
    }
}

type Admin = AdminServiceClient<InterceptedService<Channel, Bearer>>;

async fn config() -> coverwatch::Config {
    let mut config = test_config().await;
    config.admin_api_key_sha256 = vec![hash_key(ADMIN_KEY)];
    config
}

struct World {
    server: TestServer,
    admin: Admin,
}

impl World {
    async fn start() -> Self {
        captured_logs();
        Self::with(TestServer::start(config().await, None).await).await
    }

    async fn with(server: TestServer) -> Self {
        let admin =
            AdminServiceClient::with_interceptor(server.channel().await, Bearer(ADMIN_KEY.into()));
        Self { server, admin }
    }

    fn store(&self) -> &coverwatch_store::Store {
        self.server.app.engine.store()
    }

    /// Canopy settings pointing at the embedded simulator, signed with `secrets`.
    fn canopy_settings(&self, secrets: &[&str]) -> Value {
        let mut settings = plugin("canopy")
            .simulated_settings(&Simulator {
                base_url: sandbox(&self.server).base_url(),
                webhook_secret: "unused",
            })
            .expect("canopy has a simulator");
        settings["signing_secrets"] = json!(secrets);
        settings
    }

    async fn put(
        &self,
        tenant: &str,
        provider: &str,
        settings: &Value,
    ) -> Result<v1::VendorConnection, tonic::Status> {
        self.admin
            .clone()
            .put_vendor_connection(v1::PutVendorConnectionRequest {
                tenant_id: tenant.into(),
                provider: provider.into(),
                settings: settings.to_string(),
            })
            .await
            .map(|r| r.into_inner().connection.expect("a connection"))
    }

    async fn list(&self, tenant: &str) -> Vec<v1::VendorConnection> {
        self.admin
            .clone()
            .list_vendor_connections(v1::ListVendorConnectionsRequest {
                tenant_id: tenant.into(),
                page_size: 0,
                page_token: String::new(),
            })
            .await
            .expect("ListVendorConnections")
            .into_inner()
            .connections
    }

    async fn get(&self, id: &str) -> Result<v1::VendorConnection, tonic::Status> {
        self.admin
            .clone()
            .get_vendor_connection(v1::GetVendorConnectionRequest {
                connection_id: id.into(),
            })
            .await
            .map(|r| r.into_inner().connection.expect("a connection"))
    }

    /// POST `body` to `path` with a `canopy-signature` made with `secret`; the status.
    async fn post_signed(&self, path: &str, body: &[u8], secret: &str) -> u16 {
        let t = Utc::now().timestamp();
        let header = coverwatch_sandbox::canopy::signature::header_value(secret, t, body);
        self.server
            .http
            .post(self.server.http_url(path))
            .header("content-type", "application/json")
            .header("canopy-signature", header)
            .body(body.to_vec())
            .send()
            .await
            .expect("the webhook listener answers")
            .status()
            .as_u16()
    }

    async fn stored_deliveries(&self) -> u64 {
        self.store()
            .count_deliveries(ProviderId::from_static("canopy"))
            .await
            .unwrap()
    }

    async fn worked_off(&self) {
        eventually("the inbox to be worked off", DEADLINE, || async {
            (self.store().count_pending_deliveries().await.unwrap() == 0).then_some(())
        })
        .await;
    }

    async fn unmatched(&self) -> Vec<v1::Delivery> {
        self.admin
            .clone()
            .list_deliveries(v1::ListDeliveriesRequest {
                status: v1::DeliveryStatus::Unmatched as i32,
                page_size: 500,
                ..Default::default()
            })
            .await
            .expect("ListDeliveries")
            .into_inner()
            .deliveries
    }

    async fn stop(self) {
        self.server.stop().await;
    }
}

fn plugin(id: &str) -> Arc<dyn VendorPlugin> {
    coverwatch::providers::vendors()
        .into_iter()
        .find(|p| p.id() == id)
        .expect("a plug-in of this build")
}

/// A PENDING Canopy link of `client`'s tenant, and the pull meta data its session URL makes
/// Canopy carry back (the link id and the session's proof).
async fn pending_canopy_link(client: &Client, user: &str) -> (String, Value) {
    let started = start_link(client, v1::Provider::Canopy, user, None, None).await;
    let meta = Value::Object(
        url::Url::parse(&started.session_url)
            .unwrap()
            .query_pairs()
            .filter_map(|(key, value)| {
                Some((
                    key.strip_prefix("ccmeta-")?.to_owned(),
                    Value::String(value.into_owned()),
                ))
            })
            .collect(),
    );
    (started.link.expect("a link").id, meta)
}

/// An `AUTH_STATUS` delivery of a pull started from a session with `meta`: one
/// `link.auth_status` event for that session's link once processed.
fn auth_status(pull_id: &str, meta: &Value) -> Vec<u8> {
    json!({
        "widget_id": "w",
        "team_id": coverwatch_sandbox::canopy::DEFAULT_TEAM_ID,
        "pull_id": pull_id,
        "status": "PULLING_DATA",
        "meta_data": meta,
        "event_type": "AUTH_STATUS",
        "account_identifier": null,
        "is_monitored": false,
        "monitoring": null,
        "data": {"auth_status": "IDENTITY_VERIFICATION"},
    })
    .to_string()
    .into_bytes()
}

fn pull_id(n: usize) -> String {
    format!("0d0f1c2a-aaaa-4bbb-8ccc-{n:012}")
}

async fn auth_events(client: &Client, link_id: &str) -> usize {
    link_events(client, link_id)
        .await
        .iter()
        .filter(|e| e.kind() == v1::EventKind::LinkAuthStatus)
        .count()
}

// ---------------------------------------------------------------------------------------------
// 1. Two tenants, each with its own connection and endpoint

#[tokio::test]
async fn each_tenants_webhooks_land_on_its_own_links_and_a_cross_signed_delivery_is_refused() {
    let world = World::start().await;
    let (settings_a, settings_b) = (
        world.canopy_settings(&[SECRET_A]),
        world.canopy_settings(&[SECRET_B]),
    );
    let (a, b) = tokio::join!(
        world.put(TENANT_A.0, "canopy", &settings_a),
        world.put(TENANT_B.0, "canopy", &settings_b),
    );
    let (a, b) = (a.expect("A's connection"), b.expect("B's connection"));
    assert_ne!(a.id, b.id);
    assert_eq!(a.webhook_path, format!("/webhooks/canopy/{}", a.id));
    assert_eq!(b.webhook_path, format!("/webhooks/canopy/{}", b.id));
    assert_eq!(a.version, 1);

    // Both tenants link at the same time, each through its own connection.
    let client_a = world.server.client(TENANT_A).await;
    let client_b = world.server.client(TENANT_B).await;
    let ((link_a, meta_a), (link_b, meta_b)) = tokio::join!(
        pending_canopy_link(&client_a, "user-a"),
        pending_canopy_link(&client_b, "user-b"),
    );
    let (body_a, body_b) = (
        auth_status(&pull_id(1), &meta_a),
        auth_status(&pull_id(2), &meta_b),
    );
    let (to_a, to_b) = tokio::join!(
        world.post_signed(&a.webhook_path, &body_a, SECRET_A),
        world.post_signed(&b.webhook_path, &body_b, SECRET_B),
    );
    assert_eq!((to_a, to_b), (200, 200));
    eventually("each link's own delivery applied", DEADLINE, || async {
        (auth_events(&client_a, &link_a).await == 1 && auth_events(&client_b, &link_b).await == 1)
            .then_some(())
    })
    .await;

    // A's signature on B's endpoint, the default endpoint, an unknown connection, or another
    // shape of path: refused, nothing stored.
    let before = world.stored_deliveries().await;
    let other = auth_status(&pull_id(3), &meta_a);
    assert_eq!(
        world.post_signed(&b.webhook_path, &other, SECRET_A).await,
        401
    );
    assert_eq!(
        world
            .post_signed("/webhooks/canopy", &other, SECRET_A)
            .await,
        401
    );
    let unknown = format!("/webhooks/canopy/conn_{}", "0".repeat(32));
    assert_eq!(world.post_signed(&unknown, &other, SECRET_A).await, 401);
    assert_eq!(
        world
            .post_signed("/webhooks/canopy/conn_x", &other, SECRET_A)
            .await,
        401
    );
    assert_eq!(
        world
            .post_signed(&format!("/webhooks/axle/{}", a.id), &other, SECRET_A)
            .await,
        401
    );
    assert_eq!(
        world.stored_deliveries().await,
        before,
        "a refused delivery is stored"
    );

    // A genuine delivery on A's endpoint naming B's link (B's session meta data): taken, as
    // A's secret proves it is A's, but never applied to B's link: kept unmatched.
    let naming_b = auth_status(&pull_id(4), &meta_b);
    assert_eq!(
        world
            .post_signed(&a.webhook_path, &naming_b, SECRET_A)
            .await,
        200
    );
    // The default connection's endpoint, signed as the simulator signs: its deliveries match
    // only links of the default connection, so A's link is not reached through it either.
    let default_secret = sandbox(&world.server).canopy().config().webhooks[0]
        .signing_secret
        .clone();
    let default_naming_a = auth_status(&pull_id(5), &meta_a);
    assert_eq!(
        world
            .post_signed("/webhooks/canopy", &default_naming_a, &default_secret)
            .await,
        200
    );
    world.worked_off().await;
    let unmatched = world.unmatched().await;
    assert_eq!(unmatched.len(), 2, "{unmatched:?}");
    assert!(
        unmatched.iter().all(|d| d
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("another vendor connection"))),
        "{unmatched:?}"
    );
    assert_eq!(auth_events(&client_a, &link_a).await, 1);
    assert_eq!(auth_events(&client_b, &link_b).await, 1);

    // A second put keeps the id (the URL given to the vendor) and counts a version.
    let again = world
        .put(TENANT_A.0, "canopy", &world.canopy_settings(&[SECRET_A]))
        .await
        .unwrap();
    assert_eq!((again.id.as_str(), again.version), (a.id.as_str(), 2));
    world.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 1b. Two tenants, each with its own Canopy team and Axle client (separate vendor accounts)

/// One tenant's own vendor accounts, as the vendors would have issued them.
struct Accounts {
    team: CanopyTeam,
    signing_secret: &'static str,
    axle: AxleAccount,
}

impl World {
    /// Settings for `team`'s key on the embedded Canopy simulator, signed with `secret`.
    fn team_settings(&self, team: &CanopyTeam, secret: &str) -> Value {
        let mut settings = self.canopy_settings(&[secret]);
        settings["team_id"] = json!(team.team_id);
        settings["client_id"] = json!(team.client_id);
        settings["client_secret"] = json!(team.client_secret);
        settings["public_alias"] = json!(team.public_alias);
        settings
    }

    /// Settings for `account` on the embedded Axle simulator.
    fn axle_settings(&self, account: &AxleAccount) -> Value {
        let mut settings = plugin("axle")
            .simulated_settings(&Simulator {
                base_url: sandbox(&self.server).base_url(),
                webhook_secret: "unused",
            })
            .expect("axle has a simulator");
        settings["client_id"] = json!(account.client_id);
        settings["client_secret"] = json!(account.client_secret);
        settings
    }
}

/// A tenant's connections once saved: its Canopy connection (and so its webhook path).
struct Connected {
    canopy: v1::VendorConnection,
}

/// Saves `accounts` as `tenant`'s connections, then registers the Canopy team's webhook at
/// the connection's own path, as an operator does once PutVendorConnection named it.
async fn connect(world: &World, tenant: &str, accounts: &Accounts) -> Connected {
    let canopy_settings = world.team_settings(&accounts.team, accounts.signing_secret);
    let axle_settings = world.axle_settings(&accounts.axle);
    let (canopy, axle) = tokio::join!(
        world.put(tenant, "canopy", &canopy_settings),
        world.put(tenant, "axle", &axle_settings),
    );
    let (canopy, axle) = (
        canopy.expect("Canopy connection"),
        axle.expect("Axle connection"),
    );
    assert_eq!(canopy.remote_check(), v1::RemoteCheck::Accepted);
    assert_eq!(axle.remote_check(), v1::RemoteCheck::Accepted);
    // Registering again under the same team id keeps the team and adds its webhook.
    sandbox(&world.server)
        .canopy()
        .add_team(accounts.team.clone().with_webhook(
            world.server.http_url(&canopy.webhook_path),
            accounts.signing_secret,
        ));
    Connected { canopy }
}

/// The Canopy pull the simulator made for `link_id` (by the link id our session URL put in
/// the pull's meta data).
fn pull_of(world: &World, link_id: &str) -> String {
    let canopy = sandbox(&world.server).canopy();
    canopy
        .pull_ids()
        .into_iter()
        .find(|id| {
            canopy
                .pull(id)
                .is_some_and(|p| p.meta_data["coverwatch_link_id"].as_str() == Some(link_id))
        })
        .unwrap_or_else(|| panic!("no pull of {link_id}"))
}

/// Every Canopy delivery coverwatch stored, with the link it was applied to.
async fn stored_canopy_deliveries(world: &World) -> Vec<v1::Delivery> {
    world
        .admin
        .clone()
        .list_deliveries(v1::ListDeliveriesRequest {
            provider: v1::Provider::Canopy as i32,
            page_size: 500,
            ..Default::default()
        })
        .await
        .expect("ListDeliveries")
        .into_inner()
        .deliveries
}

// Vendor behaviour relied on: every Canopy request is authenticated with an API key of one
// team (Client ID and Client Secret, HTTP Basic; "Authentication",
// https://docs.usecanopy.com/reference/authentication-guide) and a team's pulls are reached
// under `/teams/{teamId}/…`; each team's webhooks go to the URLs registered for that team,
// signed with that webhook's secret ("Using Webhooks",
// https://docs.usecanopy.com/reference/about-webhooks). Every Axle request carries its
// client's own `x-client-id` / `x-client-secret` (API reference "Overview", Authentication,
// https://docs.axle.insure/api-reference).
#[tokio::test]
async fn two_tenants_with_their_own_canopy_teams_and_axle_clients_use_only_their_own() {
    let world = World::start().await;
    let sim = sandbox(&world.server);
    let a = Accounts {
        team: CanopyTeam::new(
            "a1e0c6f2-1b7d-4c3e-9f5a-0d2b4e6f8a01",
            "canopy-client-of-a",
            "canopy-key-secret-of-a-5e21",
            "tenant-a-link",
        ),
        signing_secret: SECRET_A,
        axle: AxleAccount::new("cli_tenant_a", "axle-secret-of-a-9c04"),
    };
    let b = Accounts {
        team: CanopyTeam::new(
            "b2f1d7a3-2c8e-4d4f-8a6b-1e3c5f7a9b02",
            "canopy-client-of-b",
            "canopy-key-secret-of-b-7d38",
            "tenant-b-link",
        ),
        signing_secret: SECRET_B,
        axle: AxleAccount::new("cli_tenant_b", "axle-secret-of-b-2b6f"),
    };
    for accounts in [&a, &b] {
        sim.canopy().add_team(accounts.team.clone());
        sim.axle().add_account(accounts.axle.clone());
    }
    // Calls before this point are the deployment's own start-up, on its default accounts.
    let since = sim.calls().all().last().map_or(0, |c| c.seq);
    let (conn_a, conn_b) = tokio::join!(
        connect(&world, TENANT_A.0, &a),
        connect(&world, TENANT_B.0, &b)
    );
    assert_ne!(conn_a.canopy.webhook_path, conn_b.canopy.webhook_path);

    // Both tenants link with both vendors at the same time, each end-user completing the
    // vendor's session; the vendors' webhooks tell coverwatch the outcome.
    let (client_a, client_b) = (
        world.server.client(TENANT_A).await,
        world.server.client(TENANT_B).await,
    );
    let link = |client: Client, driver: Driver, user: &'static str| {
        let server = &world.server;
        let id = ProviderId::from_static(match driver {
            Driver::Canopy => "canopy",
            _ => "axle",
        });
        async move {
            let started = Driver::start_link(&client, &id, user).await;
            driver.complete(server, &client, &started).await
        }
    };
    let (canopy_a, canopy_b, axle_a, axle_b) = tokio::join!(
        link(client_a.clone(), Driver::Canopy, "user-a"),
        link(client_b.clone(), Driver::Canopy, "user-b"),
        link(client_a.clone(), Driver::Axle, "user-a"),
        link(client_b.clone(), Driver::Axle, "user-b"),
    );

    // Canopy: every call was made with a tenant's own key, under that key's own team, and the
    // calls about a tenant's pull were made with that tenant's key only.
    let canopy_calls: Vec<_> = sim
        .calls()
        .of("canopy")
        .into_iter()
        .filter(|c| c.seq > since)
        .collect();
    let (pull_a, pull_b) = (
        pull_of(&world, &canopy_a.link_id),
        pull_of(&world, &canopy_b.link_id),
    );
    for (own, pull, other) in [(&a, &pull_a, &b), (&b, &pull_b, &a)] {
        let mine: Vec<_> = canopy_calls
            .iter()
            .filter(|c| c.client_id.as_deref() == Some(own.team.client_id.as_str()))
            .collect();
        assert!(
            mine.iter().any(|c| c.path.contains(pull.as_str())),
            "no call about {pull} with its tenant's key: {canopy_calls:#?}"
        );
        for call in &mine {
            assert_eq!(
                call.team_id.as_deref().unwrap_or(&own.team.team_id),
                own.team.team_id,
                "{call:?}"
            );
            assert_eq!(call.status / 100, 2, "{call:?}");
        }
        for call in canopy_calls
            .iter()
            .filter(|c| c.path.contains(pull.as_str()))
        {
            assert_eq!(
                call.client_id.as_deref(),
                Some(own.team.client_id.as_str()),
                "a call about {pull}: {call:?}"
            );
        }
        assert!(
            !canopy_calls.iter().any(
                |c| c.team_id.as_deref() == Some(other.team.team_id.as_str())
                    && c.client_id.as_deref() == Some(own.team.client_id.as_str())
            ),
            "{canopy_calls:#?}"
        );
    }
    let tenants_keys = [a.team.client_id.as_str(), b.team.client_id.as_str()];
    assert!(
        canopy_calls.iter().all(|c| c
            .client_id
            .as_deref()
            .is_some_and(|id| tenants_keys.contains(&id))),
        "a call with the deployment's key or none: {canopy_calls:#?}"
    );

    // Axle: the same, by client id and by the accounts and policies each link got.
    let axle_calls: Vec<_> = sim
        .calls()
        .of("axle")
        .into_iter()
        // The hosted Ignition pages are the end-user's browser, not coverwatch, calling.
        .filter(|c| c.seq > since && !c.path.starts_with("/ignition-ui"))
        .collect();
    for (own, linked) in [(&a, &axle_a), (&b, &axle_b)] {
        let about: Vec<_> = axle_calls
            .iter()
            .filter(|c| c.path.contains(&linked.account_id) || c.path.contains(&linked.policy_id))
            .collect();
        assert!(
            !about.is_empty(),
            "no call about {linked:?}: {axle_calls:#?}"
        );
        for call in about {
            assert_eq!(
                call.client_id.as_deref(),
                Some(own.axle.client_id.as_str()),
                "{call:?}"
            );
            assert_eq!(call.status / 100, 2, "{call:?}");
        }
        assert!(
            axle_calls.iter().any(
                |c| c.client_id.as_deref() == Some(own.axle.client_id.as_str())
                    && c.path == "/ignition"
            ),
            "{axle_calls:#?}"
        );
    }
    let tenants_clients = [a.axle.client_id.as_str(), b.axle.client_id.as_str()];
    assert!(
        axle_calls.iter().all(|c| c
            .client_id
            .as_deref()
            .is_some_and(|id| tenants_clients.contains(&id))),
        "a call with the deployment's client or none: {axle_calls:#?}"
    );

    // Each team's webhooks went to its own connection's endpoint, and each stored delivery
    // reached only its own tenant's link.
    let sent = sim.deliveries().filtered(Some("canopy"), None);
    for (pull, conn) in [(&pull_a, &conn_a), (&pull_b, &conn_b)] {
        let of_pull: Vec<_> = sent
            .iter()
            .filter(|d| d.vendor == "canopy")
            .filter(|d| d.json().is_some_and(|b| b["pull_id"] == pull.as_str()))
            .collect();
        assert!(!of_pull.is_empty(), "no webhook of {pull}");
        for delivery in of_pull {
            assert_eq!(
                delivery.url,
                world.server.http_url(&conn.canopy.webhook_path),
                "{delivery:?}"
            );
            assert_eq!(delivery.status, Some(200), "{delivery:?}");
        }
    }
    let stored = stored_canopy_deliveries(&world).await;
    for (linked, conn, tenant) in [
        (&canopy_a, &conn_a, TENANT_A.0),
        (&canopy_b, &conn_b, TENANT_B.0),
    ] {
        let to_link: Vec<_> = stored
            .iter()
            .filter(|d| d.link_id.as_deref() == Some(linked.link_id.as_str()))
            .collect();
        assert!(!to_link.is_empty(), "no delivery applied to {linked:?}");
        for delivery in to_link {
            // `path` is what followed `/webhooks/canopy/`: the connection's id.
            assert_eq!(delivery.path, conn.canopy.id, "{delivery:?}");
            assert_eq!(delivery.tenant_id.as_deref(), Some(tenant), "{delivery:?}");
        }
    }
    assert_eq!(
        get_link(&client_a, &canopy_a.link_id).await.state(),
        v1::LinkState::Active
    );
    assert_eq!(
        get_link(&client_b, &canopy_b.link_id).await.state(),
        v1::LinkState::Active
    );

    // One of A's genuine webhooks, signed with A's secret, sent to B's endpoint: refused,
    // nothing stored.
    let genuine = sent
        .iter()
        .find(|d| d.vendor == "canopy" && d.json().is_some_and(|b| b["pull_id"] == pull_a.as_str()))
        .expect("a webhook of A's pull");
    let before = world.stored_deliveries().await;
    assert_eq!(
        world
            .post_signed(
                &conn_b.canopy.webhook_path,
                genuine.body.as_bytes(),
                SECRET_A
            )
            .await,
        401
    );
    assert_eq!(
        world.stored_deliveries().await,
        before,
        "a refused delivery is stored"
    );
    world.stop().await;
}

/// The URL a link's Axle session told Axle to send its webhooks to.
fn axle_webhook_url(world: &World, session_url: &str) -> String {
    let token = url::Url::parse(session_url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "token")
        .expect("the ignitionUri carries the session token")
        .1
        .into_owned();
    sandbox(&world.server)
        .axle()
        .ignition(&token)
        .expect("the simulator knows the session")
        .webhook_uri
        .expect("a webhookUri")
}

async fn post_axle(world: &World, url: &str, header: Option<(&str, &str)>, id: &str) -> u16 {
    let mut request = world
        .server
        .http
        .post(url)
        .header("content-type", "application/json")
        .body(json!({"id": id, "type": "ignition.opened", "data": {}}).to_string());
    if let Some((name, value)) = header {
        request = request.header(name, value);
    }
    request.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn an_axle_links_webhooks_are_authenticated_by_its_tenants_connection() {
    // A shared header Axle was asked to add to this tenant's webhooks ("Custom webhook headers
    // can be configured to support use cases like authentication",
    // https://docs.axle.insure/guides/monitoring): only this tenant's connection knows it.
    const HEADER: &str = "x-tenant-a-hook";
    const VALUE: &str = "hook-secret-of-a-71c2e9";
    let world = World::start().await;
    let mut settings = plugin("axle")
        .simulated_settings(&Simulator {
            base_url: sandbox(&world.server).base_url(),
            webhook_secret: "unused",
        })
        .expect("axle has a simulator");
    settings["webhook_header_name"] = json!(HEADER);
    settings["webhook_header_value"] = json!(VALUE);
    let saved = world.put(TENANT_A.0, "axle", &settings).await.unwrap();
    // Axle's webhook URLs are per link and handed over by coverwatch: nothing to register.
    assert_eq!(saved.webhook_path, "");
    let public: Value = serde_json::from_str(&saved.public_settings).unwrap();
    assert_eq!(public["webhook_header_name"], HEADER);
    assert!(public.get("webhook_header_value").is_none(), "{public}");

    let (client_a, client_b) = (
        world.server.client(TENANT_A).await,
        world.server.client(TENANT_B).await,
    );
    let (a, b) = tokio::join!(
        start_link(&client_a, v1::Provider::Axle, "user-a", None, None),
        start_link(&client_b, v1::Provider::Axle, "user-b", None, None),
    );
    let url_a = axle_webhook_url(&world, &a.session_url);
    let url_b = axle_webhook_url(&world, &b.session_url);
    // A's link: its connection wants the header; B's (the default connection) does not.
    assert_eq!(post_axle(&world, &url_a, None, "evt_a1").await, 401);
    assert_eq!(
        post_axle(&world, &url_a, Some((HEADER, "not-the-value")), "evt_a2").await,
        401
    );
    assert_eq!(
        post_axle(&world, &url_a, Some((HEADER, VALUE)), "evt_a3").await,
        200
    );
    assert_eq!(post_axle(&world, &url_b, None, "evt_b1").await, 200);

    // An operator looking at the stored delivery sees the header masked: the connection named
    // it secret, and every replica reads that from the database.
    let listed = world
        .admin
        .clone()
        .list_deliveries(v1::ListDeliveriesRequest {
            provider: v1::Provider::Axle as i32,
            page_size: 500,
            ..Default::default()
        })
        .await
        .expect("ListDeliveries")
        .into_inner()
        .deliveries;
    // The simulator's own webhooks of B's session (its default connection wants no header)
    // may be among them by now; the two taken above must be.
    let sent_here = listed
        .iter()
        .filter(|d| d.dedupe_key.ends_with("id:evt_a3") || d.dedupe_key.ends_with("id:evt_b1"))
        .count();
    assert_eq!(sent_here, 2, "{listed:?}");
    for delivery in listed {
        let full = world
            .admin
            .clone()
            .get_delivery(v1::GetDeliveryRequest {
                delivery_id: delivery.id.clone(),
            })
            .await
            .expect("GetDelivery")
            .into_inner()
            .delivery
            .expect("a delivery");
        let shown = format!("{full:?}");
        assert!(!shown.contains(VALUE), "{shown}");
        if let Some(header) = full.headers.iter().find(|h| h.name == HEADER) {
            assert_eq!(header.value, coverwatch_engine::REDACTED);
        }
    }
    world.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 2. No connection and no default; a default

#[tokio::test]
async fn without_a_connection_or_a_default_linking_fails_naming_what_is_missing() {
    captured_logs();
    // A deployment whose only default is the test vendor: Canopy is known (its plug-in is
    // there) but has no default connection.
    let server = TestServer::start_with(
        config().await,
        Overrides {
            providers: Some(
                ProviderRegistry::new()
                    .register(Arc::new(FakeProvider::default()))
                    .with_plugin(plugin("canopy")),
            ),
            worker: Some(fast_worker()),
            ..Default::default()
        },
    )
    .await;
    let client = server.client(TENANT_A).await;
    let err = client
        .clone()
        .start_link(v1::StartLinkRequest {
            provider: v1::Provider::Canopy as i32,
            user_id: "user-1".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert_eq!(
        err.message(),
        "tenant `tenant-a` has no `canopy` connection and the deployment has no default; \
         PutVendorConnection"
    );
    let page = client
        .clone()
        .list_links(v1::ListLinksRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(page.links.is_empty(), "nothing was created: {page:?}");
    server.stop().await;

    // With a default (the simulator's account), a tenant without a connection uses it: its
    // link's deliveries arrive on the default endpoint, signed with the default's secret.
    let world = World::start().await;
    let client = world.server.client(TENANT_A).await;
    let (link, meta) = pending_canopy_link(&client, "user-1").await;
    let secret = sandbox(&world.server).canopy().config().webhooks[0]
        .signing_secret
        .clone();
    assert_eq!(
        world
            .post_signed(
                "/webhooks/canopy",
                &auth_status(&pull_id(1), &meta),
                &secret
            )
            .await,
        200
    );
    eventually(
        "the default connection's delivery applied",
        DEADLINE,
        || async { (auth_events(&client, &link).await == 1).then_some(()) },
    )
    .await;
    world.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 3. Validation

#[tokio::test]
async fn a_bad_setting_is_refused_naming_the_field_and_nothing_is_saved() {
    let world = World::start().await;
    let good = world.canopy_settings(&[SECRET_A]);

    let mut unknown_field = good.clone();
    unknown_field["client_secert"] = json!(CLIENT_SECRET_A);
    let err = world
        .put(TENANT_A.0, "canopy", &unknown_field)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message()
            .starts_with("settings.client_secert: unknown field `client_secert`"),
        "{}",
        err.message()
    );

    let mut empty_secret = good.clone();
    empty_secret["signing_secrets"] = json!([SECRET_A, ""]);
    let err = world
        .put(TENANT_A.0, "canopy", &empty_secret)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().starts_with("settings.signing_secrets[1]: "),
        "{}",
        err.message()
    );

    let mut empty_client_secret = good.clone();
    empty_client_secret["client_secret"] = json!("");
    let err = world
        .put(TENANT_A.0, "canopy", &empty_client_secret)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().starts_with("settings.client_secret: "),
        "{}",
        err.message()
    );

    let err = world
        .admin
        .clone()
        .put_vendor_connection(v1::PutVendorConnectionRequest {
            tenant_id: TENANT_A.0.into(),
            provider: "canopy".into(),
            settings: format!("{{\"client_secret\": \"{CLIENT_SECRET_A}\""),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().starts_with("settings: "), "{}", err.message());
    assert!(
        !err.message().contains(CLIENT_SECRET_A),
        "{}",
        err.message()
    );

    let err = world.put(TENANT_A.0, "nope", &good).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().starts_with("provider: "), "{}", err.message());

    let err = world
        .put("no-such-tenant", "canopy", &good)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");

    // Nothing of the above was saved.
    assert!(world.list(TENANT_A.0).await.is_empty());
    let err = world
        .get(&format!("conn_{}", "0".repeat(32)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let err = world.get("lnk_0").await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().starts_with("connection_id: "),
        "{}",
        err.message()
    );

    // A connection in use by a live link is not deleted; one that serves none is.
    let saved = world.put(TENANT_A.0, "canopy", &good).await.unwrap();
    let client = world.server.client(TENANT_A).await;
    let (link, _) = pending_canopy_link(&client, "user-1").await;
    let delete = |id: String| {
        let mut admin = world.admin.clone();
        async move {
            admin
                .delete_vendor_connection(v1::DeleteVendorConnectionRequest { connection_id: id })
                .await
        }
    };
    let err = delete(saved.id.clone()).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains(&link), "{}", err.message());
    assert_eq!(world.get(&saved.id).await.unwrap().id, saved.id);
    let unused = world.put(TENANT_B.0, "canopy", &good).await.unwrap();
    delete(unused.id.clone())
        .await
        .expect("DeleteVendorConnection");
    assert_eq!(
        world.get(&unused.id).await.unwrap_err().code(),
        Code::NotFound
    );
    world.stop().await;
}

/// A base URL nothing listens on: a port bound and released.
fn closed_base_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

/// `err` is INVALID_ARGUMENT naming `field`, without repeating `secret`.
fn assert_names(err: &tonic::Status, field: &str, secret: &str) {
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().starts_with(&format!("settings.{field}: ")),
        "{}",
        err.message()
    );
    assert!(!err.message().contains(secret), "{}", err.message());
}

// Vendor behaviour relied on: Canopy answers a key it does not know with 401 and a team the
// key does not belong to with 403 (`GET /teams/{teamId}/webhooks`,
// https://docs.usecanopy.com/reference/get-webhooks); Axle answers wrong client credentials
// with 401 ("Overview", Authentication, https://docs.axle.insure/api-reference).
#[tokio::test]
async fn settings_the_vendor_refuses_or_cannot_check_are_not_saved_and_good_ones_are_checked() {
    const WRONG: &str = "not-the-key-secret-4b1e";
    const TEAM_B: &str = "c3a2e8b4-3d9f-4e5a-9b7c-2f4d6a8b0c13";
    let world = World::start().await;
    let sim = sandbox(&world.server);
    sim.canopy().add_team(CanopyTeam::new(
        TEAM_B,
        "canopy-client-of-b",
        "canopy-key-secret-of-b",
        "team-b-link",
    ));
    let canopy = world.canopy_settings(&[SECRET_A]);
    let axle = world.axle_settings(&AxleAccount::new(
        coverwatch_sandbox::axle::DEFAULT_CLIENT_ID,
        coverwatch_sandbox::axle::DEFAULT_CLIENT_SECRET,
    ));

    // A key secret the vendor does not know.
    let mut wrong = canopy.clone();
    wrong["client_secret"] = json!(WRONG);
    let err = world.put(TENANT_A.0, "canopy", &wrong).await.unwrap_err();
    assert_names(&err, "client_secret", WRONG);
    let mut wrong = axle.clone();
    wrong["client_secret"] = json!(WRONG);
    let err = world.put(TENANT_A.0, "axle", &wrong).await.unwrap_err();
    assert_names(&err, "client_secret", WRONG);

    // A team that exists, but not the key's.
    let mut other_team = canopy.clone();
    other_team["team_id"] = json!(TEAM_B);
    let err = world
        .put(TENANT_A.0, "canopy", &other_team)
        .await
        .unwrap_err();
    assert_names(
        &err,
        "team_id",
        coverwatch_sandbox::canopy::DEFAULT_CLIENT_SECRET,
    );

    // A vendor that cannot be reached says nothing about the settings: try again later.
    let closed = closed_base_url();
    let mut unreachable = canopy.clone();
    unreachable["base_url"] = json!(format!("{closed}/canopy/api/v1.0.0"));
    let err = world
        .put(TENANT_A.0, "canopy", &unreachable)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    let mut unreachable = axle.clone();
    unreachable["base_url"] = json!(format!("{closed}/axle"));
    let err = world
        .put(TENANT_A.0, "axle", &unreachable)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");

    // Nothing was saved: the tenant has no connection, and its next link uses the deployment's
    // default account.
    assert!(world.list(TENANT_A.0).await.is_empty());
    let since = sim.calls().all().last().map_or(0, |c| c.seq);
    let client = world.server.client(TENANT_A).await;
    let started = start_link(&client, v1::Provider::Canopy, "user-1", None, None).await;
    let path = url::Url::parse(&started.session_url)
        .unwrap()
        .path()
        .to_owned();
    assert!(
        path.ends_with(&format!(
            "/c/{}",
            coverwatch_sandbox::canopy::DEFAULT_PUBLIC_ALIAS
        )),
        "{path}"
    );
    start_link(&client, v1::Provider::Axle, "user-1", None, None).await;
    let used: Vec<_> = sim
        .calls()
        .all()
        .into_iter()
        .filter(|c| c.seq > since && c.client_id.is_some())
        .collect();
    assert!(!used.is_empty());
    assert!(
        used.iter().all(|c| {
            let id = c.client_id.as_deref();
            id == Some(coverwatch_sandbox::canopy::DEFAULT_CLIENT_ID)
                || id == Some(coverwatch_sandbox::axle::DEFAULT_CLIENT_ID)
        }),
        "{used:#?}"
    );

    // Good settings: saved, and the answer says the vendor accepted them.
    let since = sim.calls().all().last().map_or(0, |c| c.seq);
    let saved_canopy = world.put(TENANT_A.0, "canopy", &canopy).await.unwrap();
    assert_eq!(saved_canopy.remote_check(), v1::RemoteCheck::Accepted);
    let saved_axle = world.put(TENANT_A.0, "axle", &axle).await.unwrap();
    assert_eq!(saved_axle.remote_check(), v1::RemoteCheck::Accepted);
    // The check was a call to each vendor, authenticated with the settings' key.
    let checks: Vec<_> = sim
        .calls()
        .all()
        .into_iter()
        .filter(|c| c.seq > since)
        .map(|c| (c.vendor, c.client_id, c.status))
        .collect();
    assert!(
        checks.contains(&(
            "canopy",
            Some(coverwatch_sandbox::canopy::DEFAULT_CLIENT_ID.to_owned()),
            200
        )),
        "{checks:?}"
    );
    assert!(
        checks.contains(&(
            "axle",
            Some(coverwatch_sandbox::axle::DEFAULT_CLIENT_ID.to_owned()),
            200
        )),
        "{checks:?}"
    );
    assert_eq!(world.list(TENANT_A.0).await.len(), 2);
    // Read back, the connection says nothing of a check: only the put asked the vendor.
    assert_eq!(
        world.get(&saved_canopy.id).await.unwrap().remote_check(),
        v1::RemoteCheck::Unspecified
    );
    world.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 4. Rotation with deliveries in flight

#[tokio::test]
async fn rotating_the_signing_secret_with_deliveries_in_flight_loses_none() {
    const OLD: &str = "whsec-old-0c1d2e3f4a5b";
    const NEW: &str = "whsec-new-6b7c8d9e0f1a";
    const LINKS: usize = 48;
    let world = Arc::new(World::start().await);
    let conn = world
        .put(TENANT_A.0, "canopy", &world.canopy_settings(&[OLD]))
        .await
        .unwrap();
    let client = world.server.client(TENANT_A).await;
    let mut links = Vec::with_capacity(LINKS);
    for n in 0..LINKS {
        links.push(pending_canopy_link(&client, &format!("user-{n}")).await);
    }

    // Before the rotation starts, the new secret is not accepted.
    let probe = auth_status(&pull_id(9_000), &links[0].1);
    assert_eq!(
        world.post_signed(&conn.webhook_path, &probe, NEW).await,
        401
    );

    // Deliveries signed with the old secret (the vendor has not switched yet) and the new one
    // (it has), sent all at once while the operator puts [old, new] and then [new].
    let mut sends = tokio::task::JoinSet::new();
    for (n, (link, meta)) in links.iter().enumerate() {
        let world = world.clone();
        let (link, body) = (link.clone(), auth_status(&pull_id(n), meta));
        let path = conn.webhook_path.clone();
        let secret = if n % 2 == 0 { OLD } else { NEW };
        sends.spawn(async move {
            let status = world.post_signed(&path, &body, secret).await;
            (link, secret, status)
        });
    }
    world
        .put(TENANT_A.0, "canopy", &world.canopy_settings(&[OLD, NEW]))
        .await
        .unwrap();
    let rotated = world
        .put(TENANT_A.0, "canopy", &world.canopy_settings(&[NEW]))
        .await
        .unwrap();
    assert_eq!(rotated.version, 3);
    let mut answers = Vec::with_capacity(LINKS);
    while let Some(answer) = sends.join_next().await {
        answers.push(answer.unwrap());
    }

    // After the second put: the old secret is refused, the new one taken.
    let after_old = auth_status(&pull_id(9_001), &links[0].1);
    assert_eq!(
        world.post_signed(&conn.webhook_path, &after_old, OLD).await,
        401
    );

    world.worked_off().await;
    let mut acknowledged = 0;
    for (link, secret, status) in &answers {
        let events = auth_events(&client, link).await;
        match status {
            200 => {
                acknowledged += 1;
                assert_eq!(events, 1, "an acknowledged delivery ({secret}) of {link}");
            }
            401 => assert_eq!(events, 0, "a refused delivery ({secret}) of {link}"),
            other => panic!("unexpected answer {other} for {link}"),
        }
    }
    // Every old-signed delivery answered before the second put was acknowledged, so at the very
    // least the ones sent before the rotation began and the ones the rotation let through.
    assert!(acknowledged > 0, "{answers:?}");
    assert!(world.unmatched().await.is_empty());
    Arc::into_inner(world)
        .expect("no task holds the world")
        .stop()
        .await;
}

// ---------------------------------------------------------------------------------------------
// 5. No secret in answers or logs

#[tokio::test]
async fn secrets_never_appear_in_answers_or_logs() {
    let world = World::start().await;
    // The simulator's own client secret: the vendor may check it before the put is saved.
    let settings = world.canopy_settings(&[SECRET_A, SECRET_B]);
    let saved = world.put(TENANT_A.0, "canopy", &settings).await.unwrap();
    let got = world.get(&saved.id).await.unwrap();
    let listed = world.list(TENANT_A.0).await;
    assert_eq!(listed.len(), 1);
    for answer in [
        format!("{saved:?}"),
        format!("{got:?}"),
        format!("{listed:?}"),
    ] {
        for secret in [
            SECRET_A,
            SECRET_B,
            coverwatch_sandbox::canopy::DEFAULT_CLIENT_SECRET,
        ] {
            assert!(!answer.contains(secret), "{secret} in {answer}");
        }
    }
    let public: Value = serde_json::from_str(&got.public_settings).unwrap();
    assert_eq!(
        public["team_id"],
        coverwatch_sandbox::canopy::DEFAULT_TEAM_ID
    );
    for key in ["client_secret", "signing_secrets", "consent_token"] {
        assert!(public.get(key).is_none(), "{key} shown: {public}");
    }
    // Used for a delivery, so that the connection's provider is built and used too.
    let client = world.server.client(TENANT_A).await;
    let (link, meta) = pending_canopy_link(&client, "user-1").await;
    assert_eq!(
        world
            .post_signed(
                &saved.webhook_path,
                &auth_status(&pull_id(1), &meta),
                SECRET_B
            )
            .await,
        200
    );
    eventually("the delivery applied", DEADLINE, || async {
        (auth_events(&client, &link).await == 1).then_some(())
    })
    .await;
    let logs = logs_text();
    assert!(
        logs.contains("vendor connection saved"),
        "the capture sees our lines"
    );
    for secret in [SECRET_A, SECRET_B] {
        assert!(!logs.contains(secret), "{secret} in the logs");
    }
    // What the store hands the engine does not print them either.
    let record = world
        .store()
        .connection(&saved.id.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(!format!("{record:?}").contains(SECRET_A));
    world.stop().await;
}

// ---------------------------------------------------------------------------------------------
// A rotated secret on another replica

#[tokio::test]
async fn a_removed_secret_is_refused_on_another_replica_within_the_documented_bound() {
    const OLD: &str = "whsec-replica-old-3c5e7a";
    const NEW: &str = "whsec-replica-new-9d1b4f";
    captured_logs();
    let config = config().await;
    // On PostgreSQL two replicas share the database; on SQLite there is one process by design,
    // and the same assertions hold for it alone.
    let two_replicas = config.database_url.starts_with("postgres");
    let one = World::with(TestServer::start(config.clone(), None).await).await;
    let two = if two_replicas {
        Some(World::with(TestServer::start(config, None).await).await)
    } else {
        None
    };
    let other = two.as_ref().unwrap_or(&one);
    let conn = one
        .put(TENANT_A.0, "canopy", &one.canopy_settings(&[OLD, NEW]))
        .await
        .unwrap();
    let client = one.server.client(TENANT_A).await;
    let (_, meta) = pending_canopy_link(&client, "user-1").await;
    // The other replica builds the connection's provider, with both secrets, and keeps it.
    assert_eq!(
        other
            .post_signed(&conn.webhook_path, &auth_status(&pull_id(1), &meta), OLD)
            .await,
        200
    );
    one.put(TENANT_A.0, "canopy", &one.canopy_settings(&[NEW]))
        .await
        .unwrap();
    let removed_at = std::time::Instant::now();
    let bound = coverwatch_engine::CONNECTION_RECHECK_AFTER + std::time::Duration::from_secs(1);
    let mut n = 2;
    loop {
        let status = other
            .post_signed(&conn.webhook_path, &auth_status(&pull_id(n), &meta), OLD)
            .await;
        if status == 401 {
            break;
        }
        assert_eq!(status, 200);
        assert!(
            removed_at.elapsed() < bound,
            "the removed secret is still taken after {:?}",
            removed_at.elapsed()
        );
        n += 1;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        other
            .post_signed(
                &conn.webhook_path,
                &auth_status(&pull_id(n + 1), &meta),
                NEW
            )
            .await,
        200
    );
    if let Some(two) = two {
        two.stop().await;
    }
    one.stop().await;
}

// ---------------------------------------------------------------------------------------------
// The stale-link sweep covers vendors reached only through tenants' connections

#[tokio::test]
async fn a_link_of_a_vendor_without_a_default_connection_is_swept_for_staleness() {
    captured_logs();
    // A deployment whose only default is the test vendor: Canopy is reached only through the
    // tenant's own connection, to a Canopy of its own (a sandbox the service did not start).
    let canopy_vendor = Sandbox::start(SandboxConfig::for_tests()).await.unwrap();
    let server = TestServer::start_with(
        config().await,
        Overrides {
            providers: Some(
                ProviderRegistry::new()
                    .register(Arc::new(FakeProvider::default()))
                    .with_plugin(plugin("canopy")),
            ),
            worker: Some(fast_worker()),
            ..Default::default()
        },
    )
    .await;
    let world = World::with(server).await;
    let mut settings = plugin("canopy")
        .simulated_settings(&Simulator {
            base_url: canopy_vendor.base_url(),
            webhook_secret: SECRET_A,
        })
        .expect("canopy has a simulator");
    settings["signing_secrets"] = json!([SECRET_A]);
    let conn = world.put(TENANT_A.0, "canopy", &settings).await.unwrap();
    canopy_vendor.canopy().register_webhook(
        &world.server.http_url(&conn.webhook_path),
        Some(SECRET_A),
        &[],
    );

    // The end-user completes the widget; the team's webhooks make the link ACTIVE.
    let client = world.server.client(TENANT_A).await;
    let started = start_link(&client, v1::Provider::Canopy, "user-1", None, None).await;
    let link = started.link.expect("a link").id;
    let browser = Browser::new();
    let widget = browser.get(&started.session_url).await;
    assert_eq!(widget.status, 200, "{}", widget.html);
    let submitted = browser
        .submit(
            &widget,
            "login",
            &[
                ("consent", "yes"),
                ("insurerName", "statefarm"),
                ("username", TestLogin::Good.username()),
                ("password", GOOD_PASSWORD),
            ],
        )
        .await;
    assert_eq!(submitted.status, 303, "{}", submitted.html);
    let active = wait_for_state(&client, &link, v1::LinkState::Active).await;
    assert!(active.last_refreshed_at.is_some(), "{active:?}");

    // Long after the connection's provider expects fresh data, the sweep reports the link.
    let engine = &world.server.app.engine;
    let later = Utc::now() + chrono::Duration::days(400);
    let report = engine.sweep(later).await.expect("sweep");
    assert_eq!(report.stale_reported, 1, "{report:?}");
    assert_eq!(report.failed, 0, "{report:?}");
    let stale = link_events(&client, &link)
        .await
        .iter()
        .filter(|e| e.kind() == v1::EventKind::LinkStale)
        .count();
    assert_eq!(stale, 1);
    // Once per stale period: the next round does not report it again.
    let again = engine.sweep(later).await.expect("sweep");
    assert_eq!(again.stale_reported, 0, "{again:?}");
    world.stop().await;
    canopy_vendor.shutdown().await;
}
