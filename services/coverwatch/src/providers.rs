//! Which vendors this process talks to. A vendor with no credentials configured is served by
//! the embedded sandbox, so a first run needs no vendor account at all; switching to the real
//! vendor is only a change of base URL and credentials.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use coverwatch_axle::{AxleConfig, AxleProvider};
use coverwatch_canopy::{CanopyConfig, CanopyProvider, StaleSignatures};
use coverwatch_engine::ProviderRegistry;
use coverwatch_sandbox::{CanopySimConfig, Sandbox, SandboxConfig, SandboxHandle};
use rand::RngCore;
use secrecy::SecretString;

use crate::config::{AxleSettings, CanopySettings, Config};

fn axle_config(settings: &AxleSettings) -> AxleConfig {
    let mut config = AxleConfig::new(
        settings.base_url.clone(),
        settings.client_id.clone(),
        settings.client_secret.clone(),
    );
    config.destination_client_id = settings.destination_client_id.clone();
    if let (Some(name), Some(value)) = (
        &settings.webhook_header_name,
        &settings.webhook_header_value,
    ) {
        config.webhook_header = Some((name.clone(), SecretString::from(value.clone())));
    }
    config
}

fn canopy_config(
    settings: &CanopySettings,
    interval: &str,
    stale: StaleSignatures,
) -> CanopyConfig {
    let mut config = CanopyConfig::new(
        settings.base_url.clone(),
        settings.widget_base_url.clone(),
        settings.team_id.clone(),
        settings.client_id.clone(),
        SecretString::from(settings.client_secret.clone()),
        settings.public_alias.clone(),
    );
    config.signing_secrets = settings
        .signing_secrets
        .iter()
        .cloned()
        .map(SecretString::from)
        .collect();
    config.signature_tolerance = Duration::from_secs(settings.signature_tolerance_seconds);
    config.stale_signatures = stale;
    config.monitoring_interval = interval.to_owned();
    config.consent_token = settings.consent_token.clone().map(SecretString::from);
    config
}

/// Check the vendor sections the way the provider crates do, before anything starts, so that a
/// bad vendor setting stops start-up with the key named.
pub fn validate(config: &Config) -> Result<(), crate::config::ConfigError> {
    use crate::config::ConfigError;
    if let Some(axle) = &config.axle {
        axle_config(axle)
            .validate()
            .map_err(|e| ConfigError::Invalid {
                key: "axle".into(),
                value: "…".into(),
                reason: e.to_string(),
            })?;
    }
    if let Some(canopy) = &config.canopy {
        canopy_config(
            canopy,
            &config.canopy_monitoring_interval,
            StaleSignatures::default(),
        )
        .validate()
        .map_err(|e| ConfigError::Invalid {
            key: "canopy".into(),
            value: "…".into(),
            reason: e.to_string(),
        })?;
    }
    stale_signatures(config)?;
    let mut probe = canopy_config(
        &sandbox_canopy_settings("http://127.0.0.1", "probe"),
        "",
        StaleSignatures::default(),
    );
    probe.monitoring_interval = config.canopy_monitoring_interval.clone();
    probe
        .monitoring_interval()
        .map_err(|e| ConfigError::Invalid {
            key: "canopy_monitoring_interval".into(),
            value: config.canopy_monitoring_interval.clone(),
            reason: e.to_string(),
        })?;
    Ok(())
}

fn stale_signatures(config: &Config) -> Result<StaleSignatures, crate::config::ConfigError> {
    config
        .canopy_stale_signatures
        .parse()
        .map_err(|reason| crate::config::ConfigError::Invalid {
            key: "canopy_stale_signatures".into(),
            value: config.canopy_stale_signatures.clone(),
            reason,
        })
}

fn sandbox_canopy_settings(sandbox_base: &str, secret: &str) -> CanopySettings {
    let defaults = CanopySimConfig::default();
    CanopySettings {
        base_url: format!("{sandbox_base}/canopy/api/v1.0.0"),
        widget_base_url: format!("{sandbox_base}/canopy"),
        team_id: defaults.team_id,
        client_id: defaults.client_id,
        client_secret: defaults.client_secret,
        public_alias: defaults.public_alias,
        signing_secrets: vec![secret.to_owned()],
        signature_tolerance_seconds: 300,
        consent_token: None,
    }
}

pub async fn from_config(
    config: &Config,
    public_base_url: &str,
) -> anyhow::Result<(ProviderRegistry, Option<SandboxHandle>)> {
    let needs_sandbox = config.axle.is_none() || config.canopy.is_none();
    let mut sandbox = None;
    let mut canopy_secret = String::new();
    if needs_sandbox {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        canopy_secret = hex::encode(bytes);
        let handle = Sandbox::start(SandboxConfig {
            addr: config.sandbox_addr,
            canopy: CanopySimConfig::default().with_webhook(
                format!("{public_base_url}/webhooks/canopy"),
                canopy_secret.clone(),
            ),
            ..SandboxConfig::default()
        })
        .await
        .with_context(|| {
            format!(
                "cannot start the vendor sandbox on sandbox_addr {}",
                config.sandbox_addr
            )
        })?;
        tracing::info!(base_url = %handle.base_url(), "vendor sandbox started for the vendors without credentials");
        sandbox = Some(handle);
    }

    let axle = match (&config.axle, &sandbox) {
        (Some(settings), _) => axle_config(settings),
        (None, Some(sandbox)) => {
            let defaults = coverwatch_sandbox::AxleSimConfig::default();
            AxleConfig::new(
                sandbox.axle_base_url(),
                defaults.client_id,
                defaults.client_secret,
            )
        }
        (None, None) => unreachable!("the sandbox starts when a vendor has no credentials"),
    };
    let stale = stale_signatures(config)?;
    let canopy = match (&config.canopy, &sandbox) {
        (Some(settings), _) => canopy_config(settings, &config.canopy_monitoring_interval, stale),
        (None, Some(sandbox)) => canopy_config(
            &sandbox_canopy_settings(sandbox.base_url(), &canopy_secret),
            &config.canopy_monitoring_interval,
            stale,
        ),
        (None, None) => unreachable!("the sandbox starts when a vendor has no credentials"),
    };
    let registry = ProviderRegistry::new()
        .register(Arc::new(
            AxleProvider::new(axle).context("configuration `axle`")?,
        ))
        .register(Arc::new(
            CanopyProvider::new(canopy).context("configuration `canopy`")?,
        ));
    Ok((registry, sandbox))
}
