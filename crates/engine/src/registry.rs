//! The vendors this process talks to, keyed by provider kind. The service fills it from the
//! vendor plug-ins ([`coverwatch_core::VendorPlugin`]): adding a vendor is its crate and one line
//! in the service's list of plug-ins.

use std::collections::BTreeMap;
use std::sync::Arc;

use coverwatch_core::{Provider, ProviderKind};

use crate::EngineError;

#[derive(Clone, Default)]
pub struct ProviderRegistry {
    providers: BTreeMap<ProviderKind, Arc<dyn Provider>>,
}

impl ProviderRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn register(mut self, provider: Arc<dyn Provider>) -> Self {
        self.providers.insert(provider.kind(), provider);
        self
    }

    pub fn get(&self, kind: ProviderKind) -> Result<&Arc<dyn Provider>, EngineError> {
        self.providers
            .get(&kind)
            .ok_or(EngineError::ProviderNotConfigured(kind))
    }

    pub fn kinds(&self) -> impl Iterator<Item = ProviderKind> + '_ {
        self.providers.keys().copied()
    }
}
