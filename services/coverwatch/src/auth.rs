//! Callers authenticate with `authorization: Bearer <api key>`. Keys map to tenants; only the
//! SHA-256 of each key is kept, so a leaked configuration does not leak keys.

use std::collections::HashMap;

use coverwatch_core::TenantId;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::config::Config;

/// The development tenant's id, used only when no tenants are configured.
pub const DEV_TENANT: &str = "dev";

#[derive(Debug, Clone)]
pub struct ApiKeys {
    by_hash: HashMap<String, TenantId>,
}

/// What start-up must tell the operator about the development tenant, if it exists.
#[derive(Debug, Clone)]
pub enum DevKey {
    None,
    Configured,
    Generated(String),
}

pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

impl ApiKeys {
    /// The configured tenants' key hashes; with none configured, the development tenant.
    pub fn from_config(config: &Config) -> (Self, DevKey) {
        let mut by_hash = HashMap::new();
        if config.tenants.is_empty() {
            let (key, dev) = match &config.dev_api_key {
                Some(key) => (key.clone(), DevKey::Configured),
                None => {
                    let mut bytes = [0u8; 24];
                    rand::rngs::OsRng.fill_bytes(&mut bytes);
                    let key = format!("cwdev_{}", hex::encode(bytes));
                    (key.clone(), DevKey::Generated(key))
                }
            };
            by_hash.insert(hash_key(&key), DEV_TENANT.parse().expect("valid tenant id"));
            return (Self { by_hash }, dev);
        }
        for tenant in &config.tenants {
            let id: TenantId = tenant.id.parse().expect("validated with the config");
            for hash in &tenant.api_key_sha256 {
                by_hash.insert(hash.clone(), id.clone());
            }
        }
        (Self { by_hash }, DevKey::None)
    }

    pub fn tenants(&self) -> Vec<TenantId> {
        let mut ids: Vec<_> = self.by_hash.values().cloned().collect();
        ids.sort();
        ids.dedup();
        ids
    }

    /// The tenant of an `authorization` header value.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<TenantId, &'static str> {
        let value = authorization.ok_or("missing `authorization: Bearer <api key>` metadata")?;
        let key = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .ok_or("`authorization` must be `Bearer <api key>`")?;
        self.by_hash
            .get(&hash_key(key))
            .cloned()
            .ok_or("unknown API key")
    }

    /// The tenant a gRPC request's `authorization` metadata names; UNAUTHENTICATED otherwise.
    pub fn tenant_of<T>(&self, request: &tonic::Request<T>) -> Result<TenantId, tonic::Status> {
        let header = request
            .metadata()
            .get("authorization")
            .map(|v| v.to_str().unwrap_or(""));
        self.authenticate(header)
            .map_err(tonic::Status::unauthenticated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TenantConfig;

    #[test]
    fn configured_tenants_replace_the_development_tenant() {
        let config = Config {
            tenants: vec![TenantConfig {
                id: "acme".into(),
                api_key_sha256: vec![hash_key("acme-key")],
            }],
            dev_api_key: Some("development-key-123".into()),
            ..Config::default()
        };
        let (keys, dev) = ApiKeys::from_config(&config);
        assert!(matches!(dev, DevKey::None));
        assert_eq!(
            keys.authenticate(Some("Bearer acme-key")).unwrap().as_str(),
            "acme"
        );
        assert!(
            keys.authenticate(Some("Bearer development-key-123"))
                .is_err()
        );
        assert!(keys.authenticate(Some("acme-key")).is_err());
        assert!(keys.authenticate(None).is_err());
    }

    #[test]
    fn without_tenants_a_development_key_is_generated() {
        let (keys, dev) = ApiKeys::from_config(&Config::default());
        let DevKey::Generated(key) = dev else {
            panic!("expected a generated key")
        };
        assert_eq!(
            keys.authenticate(Some(&format!("Bearer {key}")))
                .unwrap()
                .as_str(),
            DEV_TENANT
        );
        let (other, _) = ApiKeys::from_config(&Config::default());
        assert!(
            other.authenticate(Some(&format!("Bearer {key}"))).is_err(),
            "a new key each start"
        );
    }
}
