//! The vendors this process talks to, keyed by provider kind. The service fills it from the
//! vendor plug-ins ([`coverwatch_core::VendorPlugin`]): adding a vendor is its crate and one line
//! in the service's list of plug-ins.

use std::collections::BTreeMap;
use std::sync::Arc;

use coverwatch_core::{Provider, ProviderId, VendorPlugin};

use crate::EngineError;

#[derive(Clone, Default)]
pub struct ProviderRegistry {
    /// The deployment's default connection of each configured vendor.
    providers: BTreeMap<ProviderId, Arc<dyn Provider>>,
    /// Every vendor of this build, configured or not: a tenant's own vendor connection is
    /// built by its plug-in even where the deployment has no default connection to that vendor.
    plugins: BTreeMap<ProviderId, Arc<dyn VendorPlugin>>,
}

impl ProviderRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a vendor under its own name.
    ///
    /// # Panics
    /// When the name breaks the naming rule of [`ProviderId::new`] or is already registered:
    /// both are mistakes of the wiring, found by the first test that builds it.
    pub fn register(mut self, provider: Arc<dyn Provider>) -> Self {
        let kind = provider.kind();
        if let Err(error) = kind.validate() {
            panic!("cannot register provider: {error}");
        }
        let previous = self.providers.insert(kind.clone(), provider);
        assert!(previous.is_none(), "provider `{kind}` is registered twice");
        self
    }

    /// Adds a vendor plug-in, so that tenants' own connections to it can be built.
    ///
    /// # Panics
    /// When its id breaks the naming rule or is already registered (a wiring mistake).
    pub fn with_plugin(mut self, plugin: Arc<dyn VendorPlugin>) -> Self {
        let kind = ProviderId::from_static(plugin.id());
        if let Err(error) = kind.validate() {
            panic!("cannot register plug-in: {error}");
        }
        let previous = self.plugins.insert(kind.clone(), plugin);
        assert!(previous.is_none(), "plug-in `{kind}` is registered twice");
        self
    }

    /// The plug-in of a vendor, for building a tenant's connection to it.
    pub fn plugin(&self, kind: &ProviderId) -> Option<&Arc<dyn VendorPlugin>> {
        self.plugins.get(kind)
    }

    /// The registered plug-ins, in name order.
    pub fn plugins(&self) -> impl Iterator<Item = &Arc<dyn VendorPlugin>> + '_ {
        self.plugins.values()
    }

    /// The deployment's default connection to `kind`, if it has one.
    pub fn default_for(&self, kind: &ProviderId) -> Option<&Arc<dyn Provider>> {
        self.providers.get(kind)
    }

    /// Whether `kind` is a vendor of this process at all (a default connection or a plug-in).
    pub fn knows(&self, kind: &ProviderId) -> bool {
        self.providers.contains_key(kind) || self.plugins.contains_key(kind)
    }

    pub fn get(&self, kind: &ProviderId) -> Result<&Arc<dyn Provider>, EngineError> {
        self.providers
            .get(kind)
            .ok_or_else(|| EngineError::ProviderNotConfigured(kind.clone()))
    }

    /// The vendors with a default connection, in name order.
    pub fn kinds(&self) -> impl Iterator<Item = &ProviderId> + '_ {
        self.providers.keys()
    }

    /// Every vendor of this process, with a default connection or only a plug-in (reached
    /// through tenants' own connections), in name order.
    pub fn vendors(&self) -> Vec<ProviderId> {
        let mut all: Vec<ProviderId> = self
            .providers
            .keys()
            .chain(self.plugins.keys())
            .cloned()
            .collect();
        all.sort();
        all.dedup();
        all
    }
}
