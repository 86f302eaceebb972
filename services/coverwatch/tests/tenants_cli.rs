//! `coverwatch tenants …` as an operator runs it: the real binary against a real server.
//! Create a tenant, create a key (printed once, alone on stdout), use it, disable and enable
//! the tenant, revoke the key; a refused call exits non-zero with the server's reason.

use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use coverwatch::auth::hash_key;
use coverwatch_engine::ProviderRegistry;
use coverwatch_proto::v1;
use coverwatch_tests::fake_provider::FakeProvider;
use coverwatch_tests::{TestServer, test_config};
use tonic::Code;

const ADMIN_KEY: &str = "cli-tenants-admin-key-0123456789";

struct World {
    server: TestServer,
    database_url: String,
}

impl World {
    async fn start() -> Self {
        let registry = ProviderRegistry::new().register(Arc::new(FakeProvider::default()));
        let mut config = test_config().await;
        config.admin_api_key_sha256 = vec![hash_key(ADMIN_KEY)];
        let database_url = config.database_url.clone();
        Self {
            server: TestServer::start(config, Some(registry)).await,
            database_url,
        }
    }

    async fn stop(self) {
        self.server.stop().await;
        coverwatch_store::testing::drop_database(&self.database_url).await;
    }

    /// Run `coverwatch` with a clean environment, off the runtime's threads.
    async fn run(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_coverwatch"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("COVERWATCH_ADDR", self.server.app.grpc_addr.to_string())
            .env("COVERWATCH_ADMIN_KEY", ADMIN_KEY)
            .args(args)
            .stdin(Stdio::null());
        tokio::task::spawn_blocking(move || cmd.output().expect("the binary runs"))
            .await
            .unwrap()
    }

    async fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args).await;
        assert!(
            out.status.success(),
            "coverwatch {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    async fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut args = args.to_vec();
        args.push("--json");
        let text = self.ok(&args).await;
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{args:?}: {e}: {text}"))
    }

    /// Expect exit code 1, nothing on stdout; the stderr.
    async fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args).await;
        assert_eq!(out.status.code(), Some(1), "coverwatch {args:?}: {out:?}");
        assert!(out.stdout.is_empty(), "nothing on stdout: {out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    async fn call(&self, key: &str) -> Result<(), Code> {
        self.server
            .client_with_key(Some(key))
            .await
            .list_links(v1::ListLinksRequest::default())
            .await
            .map(|_| ())
            .map_err(|s| s.code())
    }
}

#[tokio::test]
async fn tenants_and_keys_round_trip_through_the_cli() {
    let world = World::start().await;

    let created = world
        .json(&["tenants", "create", "acme-cli", "--name", "Acme CLI"])
        .await;
    assert_eq!(created["id"], "acme-cli");
    assert_eq!(created["display_name"], "Acme CLI");
    assert_eq!(created["state"], "TENANT_STATE_ENABLED");
    assert_eq!(created["source"], "TENANT_SOURCE_API");

    // The key alone on stdout, so that a script can capture it.
    let out = world
        .run(&["tenants", "key", "create", "acme-cli", "--label", "ci"])
        .await;
    assert!(out.status.success(), "{out:?}");
    let key = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(key.starts_with("cwk_") && key.len() == 68, "{key}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("shown only this once"),
        "{out:?}"
    );
    assert_eq!(world.call(&key).await, Ok(()));

    let shown = world.json(&["tenants", "get", "acme-cli"]).await;
    assert_eq!(shown["active_api_keys"], 1);
    let key_id = shown["api_keys"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(shown["api_keys"][0]["label"], "ci");
    let table = world.ok(&["tenants", "get", "acme-cli"]).await;
    assert!(
        table.contains(&key_id) && table.contains("Acme CLI"),
        "{table}"
    );
    assert!(
        !table.contains(&key),
        "the key is never shown again: {table}"
    );

    let listed = world.json(&["tenants", "list"]).await;
    let ids: Vec<&str> = listed["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["acme-cli", "tenant-a", "tenant-b"]);
    assert_eq!(listed["more"], false);
    let first = world.json(&["tenants", "list", "--limit", "1"]).await;
    assert_eq!(first["tenants"].as_array().unwrap().len(), 1);
    assert_eq!(first["more"], true);
    let table = world.ok(&["tenants", "list"]).await;
    assert!(table.contains("3 tenants"), "{table}");

    let disabled = world.json(&["tenants", "disable", "acme-cli"]).await;
    assert_eq!(disabled["state"], "TENANT_STATE_DISABLED");
    assert_eq!(world.call(&key).await, Err(Code::PermissionDenied));
    let enabled = world.json(&["tenants", "enable", "acme-cli"]).await;
    assert_eq!(enabled["state"], "TENANT_STATE_ENABLED");
    assert_eq!(world.call(&key).await, Ok(()));

    let revoked = world.ok(&["tenants", "key", "revoke", &key_id]).await;
    assert!(revoked.contains("revoked"), "{revoked}");
    assert_eq!(world.call(&key).await, Err(Code::Unauthenticated));

    // Refusals: one line with the server's reason, exit code 1.
    let again = world.fails(&["tenants", "key", "revoke", &key_id]).await;
    assert!(again.contains("already revoked"), "{again}");
    let taken = world.fails(&["tenants", "create", "acme-cli"]).await;
    assert!(taken.contains("already exists"), "{taken}");
    let bad = world.fails(&["tenants", "create", "Acme"]).await;
    assert!(bad.contains("tenant_id: "), "{bad}");
    let missing = world.fails(&["tenants", "get", "nobody"]).await;
    assert!(missing.contains("not found"), "{missing}");
    let out = world
        .run(&[
            "tenants",
            "list",
            "--admin-key",
            "key-of-tenant-a-0123456789",
        ])
        .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not an admin key"),
        "{out:?}"
    );

    world.stop().await;
}
