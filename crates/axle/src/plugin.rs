//! Axle as a vendor plug-in: `[vendors.axle]` → [`AxleSettings`] → [`AxleProvider`].

use std::sync::Arc;

use async_trait::async_trait;
use coverwatch_core::plugin::{
    BuiltVendor, RemoteCheck, RemoteCheckError, SettingsError, Simulator, VendorPlugin,
    decode_settings,
};

use crate::client::AxleClient;
use crate::config::AxleSettings;
use crate::error::AxleError;
use crate::provider::AxleProvider;

/// The provider id, the configuration section `[vendors.axle]` and the webhook path segment.
pub const ID: &str = "axle";

/// The credentials the embedded Axle simulator accepts (coverwatch-sandbox's
/// `axle::DEFAULT_CLIENT_ID` and `DEFAULT_CLIENT_SECRET`; a test keeps them equal).
pub const SIMULATOR_CLIENT_ID: &str = "cli_sandbox";
pub const SIMULATOR_CLIENT_SECRET: &str = "axle-sandbox-secret";

/// The Axle plug-in, for the service's list of vendors.
pub fn plugin() -> Arc<dyn VendorPlugin> {
    Arc::new(AxlePlugin)
}

#[derive(Debug, Clone, Copy, Default)]
pub struct AxlePlugin;

/// Retries of the check call: one at most, because a caller is waiting for the answer.
const CHECK_RETRIES: u32 = 1;

#[async_trait]
impl VendorPlugin for AxlePlugin {
    fn id(&self) -> &'static str {
        ID
    }

    fn required_settings(&self) -> &'static [&'static str] {
        &["base_url", "client_id", "client_secret"]
    }

    fn secret_settings(&self) -> &'static [&'static str] {
        &["client_secret", "webhook_header_value"]
    }

    fn build(&self, settings: serde_json::Value) -> Result<BuiltVendor, SettingsError> {
        let config = decode_settings::<AxleSettings>(settings)?.into_config()?;
        let secret_headers = config
            .webhook_header
            .iter()
            .map(|(name, _)| name.to_ascii_lowercase())
            .collect();
        let provider =
            AxleProvider::new(config).map_err(|e| SettingsError::new("", e.to_string()))?;
        Ok(BuiltVendor {
            provider: Arc::new(provider),
            secret_headers,
        })
    }

    /// Axle documents two reads that need only the client's credentials and change nothing:
    /// `GET /carriers` (docs.axle.insure/api-reference/carriers/get-carriers) and, for
    /// platforms, `GET /platform/clients` (docs.axle.insure/api-reference/platform/get-clients),
    /// which lists "the destination clients associated with your credential". A platform's
    /// settings are checked with the second, which proves the client id and secret and that
    /// `destination_client_id` is one of the platform's; other clients with the first. Nothing
    /// is created: Start Ignition would open a session that never expires, Exchange Token
    /// would spend a code. Axle answers keys it does not accept with 401
    /// (docs.axle.insure/api-reference/overview, "Authentication") without saying which half is
    /// wrong: the secret is named, the reason mentions both. 429, 5xx, timeouts and refused
    /// connections say nothing about the settings: the vendor could not be asked.
    async fn check_remote(
        &self,
        settings: serde_json::Value,
    ) -> Result<RemoteCheck, RemoteCheckError> {
        // Everything `build` refuses is refused here too, before the vendor is called.
        self.build(settings.clone())?;
        let mut config = decode_settings::<AxleSettings>(settings)?.into_config()?;
        // The listing is the platform's own: sent without the destination header.
        let destination = config.destination_client_id.take();
        config.max_retries = config.max_retries.min(CHECK_RETRIES);
        let client = AxleClient::new(config).map_err(|e| SettingsError::new("", e.to_string()))?;
        let Some(destination) = destination else {
            return match client.list_carriers().await {
                Ok(_) => Ok(RemoteCheck::Accepted),
                Err(err) => Err(refusal(err)),
            };
        };
        let clients = client.platform_clients().await.map_err(refusal)?;
        if clients.contains(&destination) {
            Ok(RemoteCheck::Accepted)
        } else {
            Err(RemoteCheckError::Refused(SettingsError::new(
                "destination_client_id",
                format!(
                    "is not one of the {} destination clients Axle lists for this platform \
                     client (GET /platform/clients)",
                    clients.len()
                ),
            )))
        }
    }

    fn simulated_settings(&self, simulator: &Simulator<'_>) -> Option<serde_json::Value> {
        Some(serde_json::json!({
            "base_url": format!("{}/{ID}", simulator.base_url),
            "client_id": SIMULATOR_CLIENT_ID,
            "client_secret": SIMULATOR_CLIENT_SECRET,
        }))
    }
}

/// What a failed check call says about the settings.
fn refusal(err: AxleError) -> RemoteCheckError {
    if err.is_transient() {
        return RemoteCheckError::Unreachable {
            vendor: ID.to_owned(),
            reason: err.to_string(),
        };
    }
    let refused =
        |path: &str, reason: String| RemoteCheckError::Refused(SettingsError::new(path, reason));
    match &err {
        AxleError::Api { status: 401, .. } => refused(
            "client_secret",
            format!(
                "Axle does not accept these credentials ({err}): client_id and client_secret \
                 must be a pair Axle issued for the environment of base_url"
            ),
        ),
        AxleError::Api { status: 403, .. } => refused(
            "client_id",
            format!("Axle does not let this client make the check call ({err})"),
        ),
        AxleError::Api { status: 404, .. } | AxleError::Malformed { .. } => refused(
            "base_url",
            format!("the answer is not Axle's ({err}): is base_url Axle's API root?"),
        ),
        _ => refused("", format!("Axle refused the check: {err}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_simulators_settings_are_its_credentials_and_build() {
        assert_eq!(
            (SIMULATOR_CLIENT_ID, SIMULATOR_CLIENT_SECRET),
            (
                coverwatch_sandbox::axle::DEFAULT_CLIENT_ID,
                coverwatch_sandbox::axle::DEFAULT_CLIENT_SECRET
            )
        );
        let simulator = Simulator {
            base_url: "http://127.0.0.1:9",
            webhook_secret: "unused",
        };
        let settings = AxlePlugin.simulated_settings(&simulator).unwrap();
        assert_eq!(settings["base_url"], "http://127.0.0.1:9/axle");
        let built = AxlePlugin.build(settings).unwrap();
        assert_eq!(built.provider.kind().to_string(), ID);
        assert!(built.secret_headers.is_empty());
    }

    fn path_of(err: AxleError) -> Result<String, String> {
        match refusal(err) {
            RemoteCheckError::Refused(e) => Ok(e.path),
            RemoteCheckError::Unreachable { reason, .. } => Err(reason),
        }
    }

    fn api(status: u16) -> AxleError {
        AxleError::Api {
            operation: "list_carriers",
            status,
            message: "nope".into(),
            code: None,
            request_id: None,
            retry_after: None,
        }
    }

    /// 401 is Axle's documented answer to keys it does not accept
    /// (docs.axle.insure/api-reference/overview), 429 its rate limit; the rest is HTTP's.
    #[test]
    fn each_answer_of_the_check_names_its_field_or_says_axle_was_not_reached() {
        assert_eq!(path_of(api(401)), Ok("client_secret".into()));
        assert_eq!(path_of(api(403)), Ok("client_id".into()));
        assert_eq!(path_of(api(404)), Ok("base_url".into()));
        assert_eq!(path_of(api(400)), Ok(String::new()));
        let malformed = AxleError::Malformed {
            operation: "list_carriers",
            message: "the body is not JSON".into(),
            request_id: None,
        };
        assert_eq!(path_of(malformed), Ok("base_url".into()));
        for status in [408, 429, 500, 503] {
            assert!(path_of(api(status)).is_err(), "{status}");
        }
        let down = AxleError::Transport {
            operation: "list_carriers",
            message: "connection refused".into(),
            timeout: false,
        };
        assert!(path_of(down).unwrap_err().contains("connection refused"));
    }

    #[test]
    fn the_shared_header_is_reported_secret_in_lowercase() {
        let built = AxlePlugin
            .build(serde_json::json!({
                "base_url": "https://api.axle.insure",
                "client_id": "cli_1",
                "client_secret": "s3cret",
                "webhook_header_name": "X-Coverwatch-Auth",
                "webhook_header_value": "hush-hush-value",
            }))
            .unwrap();
        assert_eq!(built.secret_headers, vec!["x-coverwatch-auth".to_owned()]);
        let err = AxlePlugin
            .build(serde_json::json!({"base_url": "https://api.axle.insure"}))
            .unwrap_err();
        assert!(err.reason.contains("client_id"), "{err}");
    }
}
