//! Acme as a vendor plug-in: `[vendors.acme]` → [`AcmeSettings`] → [`AcmeProvider`].
//!
//! The embedded sandbox (coverwatch-sandbox) knows only the vendors of the service; Acme brings
//! its own simulator. [`VendorPlugin::simulated_settings`] starts it, once per plug-in, on a
//! local port of the running tokio runtime, and answers settings that point at it: a test that
//! registers `plugin()` without `[vendors.acme]` gets a working Acme, as `serve` does for Axle
//! and Canopy.

use std::sync::{Arc, OnceLock};

use coverwatch_core::plugin::{
    BuiltVendor, SettingsError, Simulator, VendorPlugin, decode_settings,
};

use crate::ID;
use crate::provider::AcmeProvider;
use crate::settings::AcmeSettings;
use crate::simulator::{AcmeSimulator, RunningSimulator};

/// The Acme plug-in, for a list of vendors.
pub fn plugin() -> Arc<dyn VendorPlugin> {
    Arc::new(AcmePlugin::default())
}

#[derive(Default)]
pub struct AcmePlugin {
    /// Started by the first `simulated_settings`; `None` inside when there was no runtime.
    simulator: OnceLock<Option<RunningSimulator>>,
}

impl AcmePlugin {
    /// The simulator this plug-in started, if it started one.
    pub fn simulator(&self) -> Option<&AcmeSimulator> {
        self.simulator.get()?.as_ref().map(|r| &r.simulator)
    }
}

impl VendorPlugin for AcmePlugin {
    fn id(&self) -> &'static str {
        ID
    }

    fn required_settings(&self) -> &'static [&'static str] {
        &["base_url", "api_key", "signing_secret"]
    }

    fn build(&self, settings: serde_json::Value) -> Result<BuiltVendor, SettingsError> {
        let config = decode_settings::<AcmeSettings>(settings)?.into_config()?;
        Ok(BuiltVendor {
            provider: Arc::new(AcmeProvider::new(config)?),
            // The signature header is a MAC of the body, not a reusable secret.
            secret_headers: Vec::new(),
        })
    }

    fn simulated_settings(&self, _simulator: &Simulator<'_>) -> Option<serde_json::Value> {
        // Acme's simulator is not mounted in the embedded sandbox (which knows only the
        // service's own vendors), so the sandbox's address and secret do not apply: Acme signs
        // with the secret it issued itself.
        let running = self.simulator.get_or_init(AcmeSimulator::start).as_ref()?;
        let sim = &running.simulator;
        Some(serde_json::json!({
            "base_url": sim.base_url(),
            "api_key": sim.api_key(),
            "signing_secret": sim.signing_secret(),
            "request_timeout": "10s",
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAND_IN: Simulator<'static> = Simulator {
        base_url: "http://127.0.0.1:1",
        webhook_secret: "stand-in",
    };

    #[test]
    fn without_a_runtime_there_is_no_simulator() {
        assert_eq!(AcmePlugin::default().simulated_settings(&STAND_IN), None);
    }

    #[tokio::test]
    async fn the_simulated_settings_build_and_name_one_simulator() {
        let plugin = AcmePlugin::default();
        let settings = plugin.simulated_settings(&STAND_IN).unwrap();
        assert_eq!(plugin.simulated_settings(&STAND_IN).unwrap(), settings);
        let sim = plugin.simulator().unwrap();
        assert_eq!(settings["base_url"], sim.base_url());
        assert_ne!(settings["signing_secret"], "stand-in");
        let built = plugin.build(settings).unwrap();
        assert_eq!(built.provider.kind().as_str(), ID);
        let mut bad = plugin.simulated_settings(&STAND_IN).unwrap();
        bad["signing_secret"] = serde_json::json!("short");
        let err = plugin.build(bad).unwrap_err().within("vendors.acme");
        assert_eq!(err.path, "vendors.acme.signing_secret");
    }
}
