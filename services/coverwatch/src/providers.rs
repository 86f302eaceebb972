//! Which vendors this process talks to. A vendor with no credentials configured is served by
//! the embedded sandbox, so a first run needs no vendor account at all.

use anyhow::Context;
use coverwatch_engine::ProviderRegistry;
use coverwatch_sandbox::{Sandbox, SandboxConfig, SandboxHandle};

use crate::config::Config;

pub async fn from_config(
    config: &Config,
    _public_base_url: &str,
) -> anyhow::Result<(ProviderRegistry, Option<SandboxHandle>)> {
    let sandbox = Sandbox::start(SandboxConfig {
        addr: config.sandbox_addr,
        ..SandboxConfig::default()
    })
    .await
    .with_context(|| {
        format!(
            "cannot start the vendor sandbox on sandbox_addr {}",
            config.sandbox_addr
        )
    })?;
    tracing::info!(addr = %sandbox.addr(), "vendor sandbox started (no vendor credentials configured)");
    Ok((ProviderRegistry::new(), Some(sandbox)))
}
