//! Canopy Connect as a vendor plug-in: `[vendors.canopy]` → [`CanopySettings`] →
//! [`CanopyProvider`].

use std::sync::Arc;

use async_trait::async_trait;
use coverwatch_core::plugin::{
    BuiltVendor, RemoteCheck, RemoteCheckError, SettingsError, Simulator, VendorPlugin,
    decode_settings,
};

use crate::client::CanopyClient;
use crate::config::CanopySettings;
use crate::error::CanopyError;
use crate::provider::CanopyProvider;

/// The provider id, the configuration section `[vendors.canopy]` and the webhook path segment.
pub const ID: &str = "canopy";

/// The team and credentials the embedded Canopy simulator knows (coverwatch-sandbox's
/// `canopy::DEFAULT_*`; a test keeps them equal).
pub const SIMULATOR_TEAM_ID: &str = "5f1a2b3c-4d5e-4f60-8a7b-9c0d1e2f3a4b";
pub const SIMULATOR_CLIENT_ID: &str = "canopy-sandbox-client";
pub const SIMULATOR_CLIENT_SECRET: &str = "canopy-sandbox-secret";
pub const SIMULATOR_PUBLIC_ALIAS: &str = "coverwatch-sandbox";

/// The Canopy plug-in, for the service's list of vendors.
pub fn plugin() -> Arc<dyn VendorPlugin> {
    Arc::new(CanopyPlugin)
}

#[derive(Debug, Clone, Copy, Default)]
pub struct CanopyPlugin;

/// Attempts of the check call: one retry at most, because a caller is waiting for the answer.
const CHECK_ATTEMPTS: u32 = 2;

#[async_trait]
impl VendorPlugin for CanopyPlugin {
    fn id(&self) -> &'static str {
        ID
    }

    fn required_settings(&self) -> &'static [&'static str] {
        &[
            "base_url",
            "widget_base_url",
            "team_id",
            "client_id",
            "client_secret",
            "public_alias",
            "signing_secrets",
        ]
    }

    fn secret_settings(&self) -> &'static [&'static str] {
        &["client_secret", "signing_secrets", "consent_token"]
    }

    fn build(&self, settings: serde_json::Value) -> Result<BuiltVendor, SettingsError> {
        let config = decode_settings::<CanopySettings>(settings)?.into_config()?;
        let provider =
            CanopyProvider::new(config).map_err(|e| SettingsError::new("", e.to_string()))?;
        Ok(BuiltVendor {
            provider: Arc::new(provider),
            secret_headers: Vec::new(),
        })
    }

    /// Lists the team's webhooks (`GET /teams/{teamId}/webhooks`, OpenAPI `get-webhooks`,
    /// https://docs.usecanopy.com/reference/get-webhooks): a read with no effect that needs the
    /// key and the team together. Canopy's answers, as the OpenAPI document gives them for this
    /// operation: 401 `UNAUTHORIZED` for a key it does not know (it does not say whether the
    /// client id or the secret is wrong: the secret is named, the reason mentions both), 403
    /// `UNAUTHORIZED` for a known key on a team it does not belong to, and 403
    /// `SUBSCRIPTION_INACTIVE` (documented on the team's other routes) for a team whose
    /// subscription ended. A 404 is not documented here; it is read as no such team (or a
    /// `base_url` that is not Canopy's API root). Throttling, 5xx, timeouts and refused
    /// connections say nothing about the settings: the vendor could not be asked.
    async fn check_remote(
        &self,
        settings: serde_json::Value,
    ) -> Result<RemoteCheck, RemoteCheckError> {
        // Everything `build` refuses is refused here too, before the vendor is called.
        self.build(settings.clone())?;
        let mut config = decode_settings::<CanopySettings>(settings)?.into_config()?;
        config.max_attempts = config.max_attempts.min(CHECK_ATTEMPTS);
        let client =
            CanopyClient::new(&config).map_err(|e| SettingsError::new("", e.to_string()))?;
        match client.list_webhooks().await {
            Ok(_) => Ok(RemoteCheck::Accepted),
            Err(err) => Err(refusal(err)),
        }
    }

    fn simulated_settings(&self, simulator: &Simulator<'_>) -> Option<serde_json::Value> {
        let base = simulator.base_url;
        Some(serde_json::json!({
            "base_url": format!("{base}/{ID}/api/v1.0.0"),
            "widget_base_url": format!("{base}/{ID}"),
            "team_id": SIMULATOR_TEAM_ID,
            "client_id": SIMULATOR_CLIENT_ID,
            "client_secret": SIMULATOR_CLIENT_SECRET,
            "public_alias": SIMULATOR_PUBLIC_ALIAS,
            "signing_secrets": [simulator.webhook_secret],
        }))
    }
}

/// What a failed check call says about the settings.
fn refusal(err: CanopyError) -> RemoteCheckError {
    if err.is_transient() {
        return RemoteCheckError::Unreachable {
            vendor: ID.to_owned(),
            reason: err.to_string(),
        };
    }
    let refused =
        |path: &str, reason: String| RemoteCheckError::Refused(SettingsError::new(path, reason));
    match &err {
        CanopyError::Api { status: 401, .. } => refused(
            "client_secret",
            format!(
                "Canopy does not accept this API key ({err}): client_id and client_secret must \
                 be a key of the team, as created on Canopy's API settings page"
            ),
        ),
        CanopyError::Api { status: 403, .. } if err.code() == Some("SUBSCRIPTION_INACTIVE") => {
            refused(
                "team_id",
                format!("Canopy says this team's subscription is inactive ({err})"),
            )
        }
        CanopyError::Api { status: 403, .. } => refused(
            "team_id",
            format!(
                "Canopy accepts the API key but not on this team ({err}): team_id must be the \
                 Team ID shown with the key"
            ),
        ),
        CanopyError::Api { status: 404, .. } => refused(
            "team_id",
            format!(
                "Canopy knows no such team ({err}), or base_url is not Canopy's API root \
                 (`https://app.usecanopy.com/api/v1.0.0`)"
            ),
        ),
        CanopyError::Decode(_) => refused(
            "base_url",
            format!("the answer is not Canopy's ({err}): is base_url Canopy's API root?"),
        ),
        _ => refused("", format!("Canopy refused the check: {err}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coverwatch_sandbox::canopy as sim;

    #[test]
    fn the_simulators_settings_are_its_credentials_and_build() {
        assert_eq!(
            (
                SIMULATOR_TEAM_ID,
                SIMULATOR_CLIENT_ID,
                SIMULATOR_CLIENT_SECRET,
                SIMULATOR_PUBLIC_ALIAS
            ),
            (
                sim::DEFAULT_TEAM_ID,
                sim::DEFAULT_CLIENT_ID,
                sim::DEFAULT_CLIENT_SECRET,
                sim::DEFAULT_PUBLIC_ALIAS
            )
        );
        let simulator = Simulator {
            base_url: "http://127.0.0.1:9",
            webhook_secret: "whsec-of-the-simulator",
        };
        let settings = CanopyPlugin.simulated_settings(&simulator).unwrap();
        assert_eq!(settings["signing_secrets"][0], "whsec-of-the-simulator");
        let built = CanopyPlugin.build(settings).unwrap();
        assert_eq!(built.provider.kind().to_string(), ID);
    }

    fn path_of(err: CanopyError) -> Result<String, String> {
        match refusal(err) {
            RemoteCheckError::Refused(e) => Ok(e.path),
            RemoteCheckError::Unreachable { reason, .. } => Err(reason),
        }
    }

    fn api(status: u16, code: &str) -> CanopyError {
        CanopyError::Api {
            status,
            code: Some(code.into()),
            request_id: None,
            retry_after: None,
        }
    }

    /// The answers of `get-webhooks` in Canopy's OpenAPI document (401 and 403 `UNAUTHORIZED`),
    /// 403 `SUBSCRIPTION_INACTIVE` from the team's other routes, and what no document promises.
    #[test]
    fn each_answer_of_the_check_names_its_field_or_says_canopy_was_not_reached() {
        assert_eq!(
            path_of(api(401, "UNAUTHORIZED")),
            Ok("client_secret".into())
        );
        assert_eq!(path_of(api(403, "UNAUTHORIZED")), Ok("team_id".into()));
        assert_eq!(
            path_of(api(403, "SUBSCRIPTION_INACTIVE")),
            Ok("team_id".into())
        );
        assert_eq!(path_of(api(404, "NOT_FOUND")), Ok("team_id".into()));
        assert_eq!(
            path_of(CanopyError::Decode("no webhooks".into())),
            Ok("base_url".into())
        );
        assert_eq!(
            path_of(api(400, "INCORRECT_API_KEY_TYPE")),
            Ok(String::new())
        );
        for status in [408, 429, 500, 502, 503] {
            assert!(path_of(api(status, "INTERNAL_ERROR")).is_err(), "{status}");
        }
        let down = CanopyError::Transport {
            message: "connection refused".into(),
            kind: crate::error::TransportKind::Connect,
        };
        assert!(path_of(down).unwrap_err().contains("connection refused"));
    }

    #[test]
    fn a_bad_signing_secret_is_named_with_its_index() {
        let simulator = Simulator {
            base_url: "http://127.0.0.1:9",
            webhook_secret: "whsec",
        };
        let mut settings = CanopyPlugin.simulated_settings(&simulator).unwrap();
        settings["signing_secrets"] = serde_json::json!(["whsec", ""]);
        let err = CanopyPlugin.build(settings).unwrap_err();
        assert_eq!(
            err.within("vendors.canopy").path,
            "vendors.canopy.signing_secrets[1]"
        );
    }
}
