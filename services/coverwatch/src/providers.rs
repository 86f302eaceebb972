//! Which vendors this process talks to. Each vendor crate owns its settings, their validation
//! and how they become a provider ([`VendorPlugin`]); this module only lists the plug-ins and
//! hands each its `[vendors.<id>]` section.
//!
//! In a build with the `sandbox` feature (the default), a vendor without settings of its own is
//! served by the embedded simulator, so a first run needs no vendor account at all. A build
//! without it registers only the vendors that are configured, and refuses to start with none.

use std::collections::BTreeMap;
use std::sync::Arc;

use coverwatch_core::VendorPlugin;
use coverwatch_core::plugin::{SettingsError, Simulator};
use coverwatch_engine::ProviderRegistry;
use coverwatch_proto::detail::DetailCodec;
use serde_json::Value;

use crate::config::{Config, ConfigError};

/// Every vendor this build knows, one line each.
pub fn vendors() -> Vec<Arc<dyn VendorPlugin>> {
    vec![coverwatch_axle::plugin(), coverwatch_canopy::plugin()]
}

/// The codecs of the vendors' typed event detail (the `provider_detail` of a gRPC `Event`),
/// one line per vendor that has a proto detail message; a vendor without one still has its
/// events delivered, named by `provider_id`, with no detail.
///
/// A list of its own rather than a part of each plug-in: events are read long after they were
/// stored, so a vendor's detail must render whether or not this deployment configures that
/// vendor (or a test replaces the providers with doubles), while [`vendors`] is filtered by
/// configuration. And `VendorPlugin` lives in core, which knows nothing of the proto.
pub fn detail_codecs() -> Vec<Arc<dyn DetailCodec>> {
    vec![
        coverwatch_axle::detail_codec(),
        coverwatch_canopy::detail_codec(),
    ]
}

/// Whether this build carries the vendor simulators.
pub const SIMULATORS: bool = cfg!(feature = "sandbox");

/// Where one vendor's settings come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// The operator's own section.
    Configured(Value),
    /// The simulator's settings, with whatever keys the operator's section sets on top (a
    /// section without `base_url`: `monitoring_interval`, `stale_signatures`, …).
    Simulated(serde_json::Map<String, Value>),
}

/// The vendors to build, each with where its settings come from.
pub type Plan = Vec<(Arc<dyn VendorPlugin>, Source)>;

/// Decide, for each plug-in, where its settings come from; vendors with neither settings nor a
/// simulator are left out. Refuses a section no plug-in owns.
pub fn plan(
    plugins: &[Arc<dyn VendorPlugin>],
    sections: &BTreeMap<String, Value>,
    simulators: bool,
) -> Result<Plan, ConfigError> {
    let known = || {
        plugins
            .iter()
            .map(|p| p.id())
            .collect::<Vec<_>>()
            .join(", ")
    };
    for (id, section) in sections {
        if !plugins.iter().any(|p| p.id() == id) {
            return Err(ConfigError::Vendor(SettingsError::new(
                format!("vendors.{id}"),
                format!("no such vendor in this build (known: {})", known()),
            )));
        }
        if !section.is_object() {
            return Err(ConfigError::Vendor(SettingsError::new(
                format!("vendors.{id}"),
                "must be a table of that vendor's settings",
            )));
        }
    }
    let mut out = Vec::new();
    for plugin in plugins {
        let section = sections.get(plugin.id()).and_then(Value::as_object);
        let source = match section {
            Some(keys) if keys.contains_key("base_url") || !simulators => {
                Source::Configured(Value::Object(keys.clone()))
            }
            Some(keys) => Source::Simulated(keys.clone()),
            None if simulators => Source::Simulated(serde_json::Map::new()),
            None => continue,
        };
        out.push((plugin.clone(), source));
    }
    Ok(out)
}

/// [`plan`] for a serving process: with no vendor at all it refuses to start, naming the keys
/// to set. Only `serve` asks this: `migrate`, `hash-key` and the other commands need no vendor.
pub fn serving_plan(
    plugins: &[Arc<dyn VendorPlugin>],
    sections: &BTreeMap<String, Value>,
    simulators: bool,
) -> Result<Plan, ConfigError> {
    let out = plan(plugins, sections, simulators)?;
    if out.is_empty() {
        let wanted: Vec<String> = plugins
            .iter()
            .map(|p| {
                format!(
                    "vendors.{}.{{{}}}",
                    p.id(),
                    p.required_settings().join(", ")
                )
            })
            .collect();
        return Err(ConfigError::Vendor(SettingsError::new(
            "vendors",
            format!(
                "no vendor is configured, and this build has no simulators to fall back on (built without the `sandbox` feature): set {} (variables COVERWATCH_VENDORS__<VENDOR>__<KEY>)",
                wanted.join(" or ")
            ),
        )));
    }
    Ok(out)
}

/// The settings a plug-in is built with; `None` when it is simulated but has no simulator.
fn settings(plugin: &dyn VendorPlugin, source: Source, simulator: &Simulator<'_>) -> Option<Value> {
    match source {
        Source::Configured(value) => Some(value),
        Source::Simulated(overrides) => {
            let mut settings = plugin.simulated_settings(simulator)?;
            if let Some(map) = settings.as_object_mut() {
                map.extend(overrides);
            }
            Some(settings)
        }
    }
}

fn named(id: &str, e: SettingsError) -> ConfigError {
    ConfigError::Vendor(e.within(&format!("vendors.{id}")))
}

/// Check every vendor section the way start-up builds it, before anything starts, so that a
/// bad vendor setting stops start-up with its key named. Nothing is contacted.
pub fn check(
    sections: &BTreeMap<String, Value>,
    plugins: &[Arc<dyn VendorPlugin>],
) -> Result<(), ConfigError> {
    // Simulated settings are checked against a stand-in address: only the operator's own
    // keys on top of them can be wrong.
    let stand_in = Simulator {
        base_url: "http://127.0.0.1:1",
        webhook_secret: "stand-in",
    };
    for (plugin, source) in plan(plugins, sections, SIMULATORS)? {
        if let Some(value) = settings(plugin.as_ref(), source, &stand_in) {
            plugin.build(value).map_err(|e| named(plugin.id(), e))?;
        }
    }
    Ok(())
}

/// The vendors of a running process.
pub struct Vendors {
    pub registry: ProviderRegistry,
    /// Webhook headers whose values are secrets, for every vendor registered.
    pub secret_headers: Vec<String>,
    /// The embedded simulators, when a vendor uses them.
    #[cfg(feature = "sandbox")]
    pub sandbox: Option<coverwatch_sandbox::SandboxHandle>,
}

/// Build every vendor of `plugins` from the configuration, starting the simulators first when
/// one of them has no settings (builds with the `sandbox` feature).
pub async fn from_config(
    config: &Config,
    plugins: &[Arc<dyn VendorPlugin>],
    public_base_url: &str,
) -> anyhow::Result<Vendors> {
    let planned = serving_plan(plugins, &config.vendors, SIMULATORS)?;
    let simulated = planned
        .iter()
        .any(|(_, source)| matches!(source, Source::Simulated(_)));
    #[cfg(feature = "sandbox")]
    let (sandbox, webhook_secret) = if simulated {
        let (handle, secret) = sandbox::start(config, public_base_url).await?;
        (Some(handle), secret)
    } else {
        (None, String::new())
    };
    #[cfg(not(feature = "sandbox"))]
    let webhook_secret = {
        // `plan` makes nothing simulated without simulators.
        debug_assert!(!simulated);
        let _ = public_base_url;
        String::new()
    };
    #[cfg(feature = "sandbox")]
    let simulator_base = sandbox
        .as_ref()
        .map(|s| s.base_url().to_owned())
        .unwrap_or_default();
    #[cfg(not(feature = "sandbox"))]
    let simulator_base = String::new();
    let simulator = Simulator {
        base_url: &simulator_base,
        webhook_secret: &webhook_secret,
    };

    let mut registry = ProviderRegistry::new();
    let mut secret_headers = Vec::new();
    for (plugin, source) in planned {
        let id = plugin.id();
        let how = match &source {
            Source::Configured(_) => "configured",
            Source::Simulated(_) => "simulator",
        };
        let Some(value) = settings(plugin.as_ref(), source, &simulator) else {
            tracing::info!(
                vendor = id,
                "no settings and no simulator for this vendor: not registered"
            );
            continue;
        };
        let built = plugin.build(value).map_err(|e| named(id, e))?;
        let kind = built.provider.kind();
        if kind.as_str() != id {
            anyhow::bail!(
                "vendor plug-in `{id}` built a provider of kind `{kind}`: the two must be the same"
            );
        }
        tracing::info!(vendor = id, settings = how, "vendor registered");
        secret_headers.extend(built.secret_headers);
        registry = registry.register(built.provider);
    }
    // Every plug-in, configured or not: a tenant may bring its own account at a vendor the
    // deployment has no default connection to.
    for plugin in plugins {
        registry = registry.with_plugin(plugin.clone());
    }
    Ok(Vendors {
        registry,
        secret_headers,
        #[cfg(feature = "sandbox")]
        sandbox,
    })
}

#[cfg(feature = "sandbox")]
mod sandbox {
    use anyhow::Context;
    use coverwatch_sandbox::{CanopySimConfig, Sandbox, SandboxConfig, SandboxHandle};
    use rand::RngCore;

    use crate::config::Config;

    /// The simulators on `sandbox_addr`, their webhooks sent to this process and signed with a
    /// fresh secret (returned, for the vendors that check signatures).
    pub(super) async fn start(
        config: &Config,
        public_base_url: &str,
    ) -> anyhow::Result<(SandboxHandle, String)> {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let secret = hex::encode(bytes);
        let handle = Sandbox::start(SandboxConfig {
            addr: config.sandbox_addr,
            canopy: CanopySimConfig::default()
                .with_webhook(format!("{public_base_url}/webhooks/canopy"), secret.clone()),
            ..SandboxConfig::default()
        })
        .await
        .with_context(|| {
            format!(
                "cannot start the vendor sandbox on sandbox_addr {}",
                config.sandbox_addr
            )
        })?;
        tracing::info!(base_url = %handle.base_url(), "vendor sandbox started for the vendors without settings");
        Ok((handle, secret))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(planned: &[(Arc<dyn VendorPlugin>, Source)]) -> Vec<(&'static str, bool)> {
        planned
            .iter()
            .map(|(p, s)| (p.id(), matches!(s, Source::Simulated(_))))
            .collect()
    }

    /// Whatever this build carries, the decision without simulators is the production one:
    /// nothing configured is a refusal that names the keys to set, never a silent simulator.
    #[test]
    fn without_simulators_no_vendor_configured_is_refused_naming_the_keys() {
        // The configuration itself is fine: other commands than `serve` need no vendor.
        assert!(
            plan(&vendors(), &BTreeMap::new(), false)
                .unwrap()
                .is_empty()
        );
        let err = serving_plan(&vendors(), &BTreeMap::new(), false)
            .err()
            .expect("refused")
            .to_string();
        for wanted in [
            "`vendors`",
            "no vendor is configured",
            "sandbox",
            "vendors.axle.{base_url, client_id, client_secret}",
            "vendors.canopy.{base_url, widget_base_url, team_id",
            "COVERWATCH_VENDORS__",
        ] {
            assert!(err.contains(wanted), "{wanted}: {err}");
        }
    }

    #[test]
    fn without_simulators_only_configured_vendors_are_registered() {
        let sections = BTreeMap::from([(
            "canopy".to_owned(),
            serde_json::json!({"team_id": "t", "monitoring_interval": "P2M"}),
        )]);
        let planned = serving_plan(&vendors(), &sections, false).unwrap();
        assert_eq!(ids(&planned), vec![("canopy", false)]);
        // A section without base_url is the operator's own, and refused for what it lacks.
        let (plugin, source) = planned.into_iter().next().unwrap();
        let Source::Configured(value) = source else {
            panic!("configured")
        };
        let err = named(plugin.id(), plugin.build(value).unwrap_err()).to_string();
        assert!(
            err.contains("`vendors.canopy`") && err.contains("base_url"),
            "{err}"
        );
    }

    #[test]
    fn with_simulators_a_vendor_without_base_url_is_simulated_with_the_keys_it_sets() {
        let sections = BTreeMap::from([(
            "canopy".to_owned(),
            serde_json::json!({"stale_signatures": "reject"}),
        )]);
        let planned = serving_plan(&vendors(), &sections, true).unwrap();
        assert_eq!(ids(&planned), vec![("axle", true), ("canopy", true)]);
        let simulator = Simulator {
            base_url: "http://127.0.0.1:9",
            webhook_secret: "whsec",
        };
        let (plugin, source) = planned.into_iter().nth(1).unwrap();
        let value = settings(plugin.as_ref(), source, &simulator).unwrap();
        assert_eq!(value["stale_signatures"], "reject");
        assert_eq!(value["signing_secrets"][0], "whsec");
        plugin.build(value).unwrap();
    }

    #[test]
    fn a_section_that_is_not_a_table_is_refused() {
        let sections = BTreeMap::from([("axle".to_owned(), serde_json::json!("cli_1"))]);
        let err = plan(&vendors(), &sections, true).err().unwrap().to_string();
        assert!(err.contains("`vendors.axle`"), "{err}");
    }
}
