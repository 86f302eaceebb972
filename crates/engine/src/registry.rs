//! The vendors this process talks to, keyed by provider kind. The service fills it from the
//! vendor plug-ins ([`coverwatch_core::VendorPlugin`]): adding a vendor is its crate and one line
//! in the service's list of plug-ins.

use std::collections::BTreeMap;
use std::sync::Arc;

use coverwatch_core::{Provider, ProviderId};

use crate::EngineError;

#[derive(Clone, Default)]
pub struct ProviderRegistry {
    providers: BTreeMap<ProviderId, Arc<dyn Provider>>,
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

    pub fn get(&self, kind: &ProviderId) -> Result<&Arc<dyn Provider>, EngineError> {
        self.providers
            .get(kind)
            .ok_or_else(|| EngineError::ProviderNotConfigured(kind.clone()))
    }

    /// The registered vendors, in name order.
    pub fn kinds(&self) -> impl Iterator<Item = &ProviderId> + '_ {
        self.providers.keys()
    }
}
