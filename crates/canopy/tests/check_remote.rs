//! `CanopyPlugin::check_remote` against the Canopy simulator: good settings are accepted, a key
//! Canopy does not know is refused naming `client_secret`, a team the key does not belong to
//! naming `team_id`, and a Canopy that cannot answer is "unreachable", never "bad credentials".
//!
//! The statuses are those of `GET /teams/{teamId}/webhooks` in Canopy's OpenAPI document
//! (operation `get-webhooks`, https://docs.usecanopy.com/reference/get-webhooks; copy in
//! /work/shared/vendors/canopy-openapi.json): 200 `{"webhooks": [...]}`, 401
//! `{"error":"UNAUTHORIZED"}` and 403 `{"error":"UNAUTHORIZED"}`.

use coverwatch_canopy::CanopyPlugin;
use coverwatch_core::plugin::{RemoteCheck, RemoteCheckError, Simulator, VendorPlugin};
use coverwatch_sandbox::canopy::{self as sim, CanopyTeam};
use coverwatch_sandbox::{FaultEffect, FaultTarget, Sandbox, SandboxConfig, SandboxHandle};
use serde_json::{Value, json};

const WEBHOOK_SECRET: &str = "whsec-check-remote";
const TEAM_B: &str = "7c9e6679-7425-40de-944b-e07fc1f90ae7";

async fn sandbox() -> SandboxHandle {
    Sandbox::start(SandboxConfig::for_tests()).await.unwrap()
}

/// The default team's settings, pointed at this sandbox.
fn settings(sandbox: &SandboxHandle) -> Value {
    CanopyPlugin
        .simulated_settings(&Simulator {
            base_url: sandbox.base_url(),
            webhook_secret: WEBHOOK_SECRET,
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
async fn good_settings_are_accepted_with_one_read_of_the_teams_webhooks() {
    let sandbox = sandbox().await;
    let result = CanopyPlugin.check_remote(settings(&sandbox)).await;
    assert_eq!(result, Ok(RemoteCheck::Accepted));
    let calls = sandbox.canopy().calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].method, "GET");
    assert_eq!(
        calls[0].path,
        format!("/teams/{}/webhooks", sim::DEFAULT_TEAM_ID)
    );
    assert_eq!(calls[0].client_id.as_deref(), Some(sim::DEFAULT_CLIENT_ID));
    assert_eq!(calls[0].status, 200);
}

#[tokio::test]
async fn a_wrong_secret_is_refused_naming_client_secret_without_repeating_it() {
    let sandbox = sandbox().await;
    let (path, reason) = refused_path(
        CanopyPlugin
            .check_remote(with(
                settings(&sandbox),
                json!({"client_secret": "not-the-s3cret"}),
            ))
            .await,
    );
    assert_eq!(path, "client_secret", "{reason}");
    assert!(reason.contains("401"), "{reason}");
    assert!(!reason.contains("not-the-s3cret"), "{reason}");
    // An unknown client id gets the same answer from Canopy, so the same field.
    let (path, _) = refused_path(
        CanopyPlugin
            .check_remote(with(
                settings(&sandbox),
                json!({"client_id": "someone-else"}),
            ))
            .await,
    );
    assert_eq!(path, "client_secret");
}

#[tokio::test]
async fn an_unknown_team_and_another_teams_id_are_refused_naming_team_id() {
    let sandbox = sandbox().await;
    let unknown = uuid_like(1);
    let (path, reason) = refused_path(
        CanopyPlugin
            .check_remote(with(settings(&sandbox), json!({"team_id": unknown})))
            .await,
    );
    assert_eq!(path, "team_id", "{reason}");
    assert!(reason.contains("403"), "{reason}");

    // A real team, but not the key's.
    sandbox.canopy().add_team(CanopyTeam::new(
        TEAM_B,
        "client-b",
        "secret-b",
        "team-b-link",
    ));
    let (path, _) = refused_path(
        CanopyPlugin
            .check_remote(with(settings(&sandbox), json!({"team_id": TEAM_B})))
            .await,
    );
    assert_eq!(path, "team_id");
    // Its own key is accepted.
    let b = with(
        settings(&sandbox),
        json!({"team_id": TEAM_B, "client_id": "client-b", "client_secret": "secret-b",
               "public_alias": "team-b-link"}),
    );
    assert_eq!(
        CanopyPlugin.check_remote(b).await,
        Ok(RemoteCheck::Accepted)
    );
}

#[tokio::test]
async fn canopy_down_is_unreachable_not_bad_credentials() {
    let sandbox = sandbox().await;
    // 503 on every attempt.
    sandbox.faults().inject(
        FaultTarget::endpoint("canopy.webhooks.list"),
        FaultEffect::status(503),
    );
    match CanopyPlugin.check_remote(settings(&sandbox)).await {
        Err(RemoteCheckError::Unreachable { vendor, reason }) => {
            assert_eq!(vendor, "canopy");
            assert!(reason.contains("503"), "{reason}");
        }
        other => panic!("expected unreachable, got {other:?}"),
    }
    sandbox.faults().clear();
    assert_eq!(
        CanopyPlugin.check_remote(settings(&sandbox)).await,
        Ok(RemoteCheck::Accepted)
    );

    // Nothing listens on the port.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        format!("http://127.0.0.1:{port}/canopy/api/v1.0.0")
    };
    match CanopyPlugin
        .check_remote(with(settings(&sandbox), json!({"base_url": closed})))
        .await
    {
        Err(RemoteCheckError::Unreachable { vendor, .. }) => assert_eq!(vendor, "canopy"),
        other => panic!("expected unreachable, got {other:?}"),
    }
}

#[tokio::test]
async fn settings_that_fail_locally_are_refused_before_any_call() {
    let sandbox = sandbox().await;
    let (path, _) = refused_path(
        CanopyPlugin
            .check_remote(with(settings(&sandbox), json!({"signing_secrets": [""]})))
            .await,
    );
    assert_eq!(path, "signing_secrets[0]");
    assert!(sandbox.canopy().calls().is_empty());
}

fn uuid_like(n: u8) -> String {
    format!("00000000-0000-4000-8000-0000000000{n:02x}")
}
