//! Axle as a vendor plug-in: `[vendors.axle]` → [`AxleSettings`] → [`AxleProvider`].

use std::sync::Arc;

use coverwatch_core::plugin::{
    BuiltVendor, SettingsError, Simulator, VendorPlugin, decode_settings,
};

use crate::config::AxleSettings;
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

    fn simulated_settings(&self, simulator: &Simulator<'_>) -> Option<serde_json::Value> {
        Some(serde_json::json!({
            "base_url": format!("{}/{ID}", simulator.base_url),
            "client_id": SIMULATOR_CLIENT_ID,
            "client_secret": SIMULATOR_CLIENT_SECRET,
        }))
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
