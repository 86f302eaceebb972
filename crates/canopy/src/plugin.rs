//! Canopy Connect as a vendor plug-in: `[vendors.canopy]` → [`CanopySettings`] →
//! [`CanopyProvider`].

use std::sync::Arc;

use coverwatch_core::plugin::{
    BuiltVendor, SettingsError, Simulator, VendorPlugin, decode_settings,
};

use crate::config::CanopySettings;
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
