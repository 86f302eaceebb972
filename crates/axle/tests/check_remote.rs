//! `AxlePlugin::check_remote` against the Axle simulator: good credentials are accepted, keys
//! Axle does not accept are refused naming `client_secret`, a platform's destination client
//! that is not one of its own is refused naming `destination_client_id`, and an Axle that
//! cannot answer is "unreachable", never "bad credentials".
//!
//! The calls are Axle's documented side-effect-free reads: `GET /carriers`
//! (https://docs.axle.insure/api-reference/carriers/get-carriers) and `GET /platform/clients`
//! (https://docs.axle.insure/api-reference/platform/get-clients). Keys Axle does not accept are
//! answered 401 (https://docs.axle.insure/api-reference/overview, "Authentication").

use coverwatch_axle::AxlePlugin;
use coverwatch_core::plugin::{RemoteCheck, RemoteCheckError, Simulator, VendorPlugin};
use coverwatch_sandbox::axle::{self as sim, AxleAccount};
use coverwatch_sandbox::{FaultEffect, FaultTarget, Sandbox, SandboxConfig, SandboxHandle};
use serde_json::{Value, json};

async fn sandbox() -> SandboxHandle {
    Sandbox::start(SandboxConfig::for_tests()).await.unwrap()
}

fn settings(sandbox: &SandboxHandle) -> Value {
    AxlePlugin
        .simulated_settings(&Simulator {
            base_url: sandbox.base_url(),
            webhook_secret: "unused",
        })
        .unwrap()
}

fn with(mut settings: Value, changes: Value) -> Value {
    for (k, v) in changes.as_object().unwrap() {
        settings[k] = v.clone();
    }
    settings
}

fn refused_path(result: Result<RemoteCheck, RemoteCheckError>) -> (String, String) {
    match result {
        Err(RemoteCheckError::Refused(e)) => (e.path, e.reason),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn good_credentials_are_accepted_with_one_read_of_the_carriers() {
    let sandbox = sandbox().await;
    assert_eq!(
        AxlePlugin.check_remote(settings(&sandbox)).await,
        Ok(RemoteCheck::Accepted)
    );
    let calls = sandbox.axle().calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(
        (calls[0].method.as_str(), calls[0].path.as_str()),
        ("GET", "/carriers")
    );
    assert_eq!(calls[0].client_id.as_deref(), Some(sim::DEFAULT_CLIENT_ID));
    assert_eq!(calls[0].status, 200);
    // Nothing was created: no Ignition session, no account.
    assert!(sandbox.axle().account_ids().is_empty());
}

#[tokio::test]
async fn a_wrong_secret_or_client_id_is_refused_naming_client_secret() {
    let sandbox = sandbox().await;
    for changes in [
        json!({"client_secret": "not-the-s3cret"}),
        json!({"client_id": "cli_someone_else"}),
    ] {
        let (path, reason) = refused_path(
            AxlePlugin
                .check_remote(with(settings(&sandbox), changes))
                .await,
        );
        assert_eq!(path, "client_secret", "{reason}");
        assert!(reason.contains("401"), "{reason}");
        assert!(!reason.contains("not-the-s3cret"), "{reason}");
    }
}

#[tokio::test]
async fn a_platform_is_checked_with_its_destination_clients() {
    let sandbox = sandbox().await;
    sandbox.axle().add_account(AxleAccount::platform(
        "cli_platform",
        "platform-secret",
        &["cli_dest_1", "cli_dest_2"],
    ));
    let platform = with(
        settings(&sandbox),
        json!({"client_id": "cli_platform", "client_secret": "platform-secret",
               "destination_client_id": "cli_dest_2"}),
    );
    assert_eq!(
        AxlePlugin.check_remote(platform.clone()).await,
        Ok(RemoteCheck::Accepted)
    );
    let last = sandbox.axle().calls().pop().unwrap();
    assert_eq!(last.path, "/platform/clients");
    // The platform's own listing: sent without a destination.
    assert_eq!(last.destination_client_id, None);

    let (path, reason) = refused_path(
        AxlePlugin
            .check_remote(with(
                platform.clone(),
                json!({"destination_client_id": "cli_dest_3"}),
            ))
            .await,
    );
    assert_eq!(path, "destination_client_id", "{reason}");
    let (path, _) = refused_path(
        AxlePlugin
            .check_remote(with(platform, json!({"client_secret": "wrong"})))
            .await,
    );
    assert_eq!(path, "client_secret");
}

#[tokio::test]
async fn axle_down_is_unreachable_not_bad_credentials() {
    let sandbox = sandbox().await;
    sandbox.faults().inject(
        FaultTarget::endpoint("axle.carriers.list"),
        FaultEffect::status(503),
    );
    match AxlePlugin.check_remote(settings(&sandbox)).await {
        Err(RemoteCheckError::Unreachable { vendor, reason }) => {
            assert_eq!(vendor, "axle");
            assert!(reason.contains("503"), "{reason}");
        }
        other => panic!("expected unreachable, got {other:?}"),
    }
    sandbox.faults().clear();

    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        format!("http://127.0.0.1:{port}/axle")
    };
    match AxlePlugin
        .check_remote(with(settings(&sandbox), json!({"base_url": closed})))
        .await
    {
        Err(RemoteCheckError::Unreachable { vendor, .. }) => assert_eq!(vendor, "axle"),
        other => panic!("expected unreachable, got {other:?}"),
    }
}
