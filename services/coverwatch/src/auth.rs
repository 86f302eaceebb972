//! Callers authenticate with `authorization: Bearer <api key>`. Keys map to tenants; only the
//! SHA-256 of each key is kept, so a leaked configuration or database does not leak keys.
//!
//! Keys live in the database (configured ones are written there at start-up, see
//! [`ApiKeys::load`]), so that a key created, revoked or a tenant disabled through AdminService
//! on one replica is honoured by every replica without a restart. Each process answers from a
//! small cache of key hashes:
//! - a change made by this process clears it before the admin call returns;
//! - a change made by another replica clears it when PostgreSQL delivers the notification the
//!   change committed with ([`ApiKeys::run_change_listener`]);
//! - every answer expires after [`CACHE_TTL`], the bound that holds while the notification
//!   connection is down (it is cleared again once listening resumes).
//!
//! Unknown keys are cached too (so that a client retrying a bad key costs no query), but only
//! [`MAX_UNKNOWN`] of them, and at most [`LOOKUP_CONCURRENCY`] cache misses query the database
//! at once, so a stream of random keys can neither grow memory nor take the database's
//! connections.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use coverwatch_core::TenantId;
use coverwatch_store::{ConfiguredTenant, KeyOwner, Store, StoreError, TenantError};
use rand::RngCore;
use sha2::{Digest, Sha256};
use tokio::sync::{Semaphore, watch};
use tonic::Status;

use crate::config::Config;

/// The development tenant's id, used only when no tenants are configured.
pub const DEV_TENANT: &str = "dev";

/// How keys made by CreateApiKey start, so that a leaked one is recognisable (secret scanners,
/// log reviews).
pub const KEY_PREFIX: &str = "cwk_";

/// How long a cached answer about a key may be used without the database confirming it.
pub const CACHE_TTL: Duration = Duration::from_secs(10);
/// Cached answers in all, known and unknown keys together.
const CACHE_CAPACITY: usize = 10_000;
/// Cached answers that a hash is no key we know.
const MAX_UNKNOWN: usize = 1_000;
/// Cache misses that may query the database at once; more wait their turn.
const LOOKUP_CONCURRENCY: usize = 4;

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

/// A new random tenant key: [`KEY_PREFIX`] and 256 random bits in hex.
pub fn generate_key() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("{KEY_PREFIX}{}", hex::encode(bytes))
}

/// The tenants the configuration declares, with their key hashes; with none configured, the
/// development tenant and its key (configured, or generated for this start).
pub fn configured_tenants(config: &Config) -> (Vec<ConfiguredTenant>, DevKey) {
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
        let tenant = ConfiguredTenant {
            id: DEV_TENANT.parse().expect("valid tenant id"),
            key_sha256: vec![hash_key(&key)],
        };
        return (vec![tenant], dev);
    }
    let tenants = config
        .tenants
        .iter()
        .map(|tenant| ConfiguredTenant {
            id: tenant.id.parse().expect("validated with the config"),
            key_sha256: tenant.api_key_sha256.clone(),
        })
        .collect();
    (tenants, DevKey::None)
}

/// The key of an `authorization` header value (`Bearer <key>`).
pub fn bearer(value: Option<&str>) -> Result<&str, &'static str> {
    let value = value.ok_or("missing `authorization: Bearer <api key>` metadata")?;
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .ok_or("`authorization` must be `Bearer <api key>`")
}

fn header_of<T>(request: &tonic::Request<T>) -> Option<String> {
    request
        .metadata()
        .get("authorization")
        .map(|v| v.to_str().unwrap_or("").to_owned())
}

/// The tenant keys, looked up in the database through a cache (see the module docs).
#[derive(Clone)]
pub struct ApiKeys {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeys").finish_non_exhaustive()
    }
}

struct Inner {
    store: Store,
    cache: Mutex<Cache>,
    lookups: Semaphore,
}

#[derive(Default)]
struct Cache {
    /// Bumped on every invalidation, so that a lookup that read the database before a change
    /// cannot cache its stale answer after the change cleared the cache.
    generation: u64,
    entries: HashMap<String, Cached>,
    unknown: usize,
}

struct Cached {
    owner: Option<KeyOwner>,
    at: Instant,
}

impl Cache {
    fn fresh(&self, hash: &str) -> Option<Option<KeyOwner>> {
        self.entries
            .get(hash)
            .filter(|c| c.at.elapsed() < CACHE_TTL)
            .map(|c| c.owner.clone())
    }

    fn insert(&mut self, hash: String, owner: Option<KeyOwner>) {
        if let Some(old) = self.entries.remove(&hash)
            && old.owner.is_none()
        {
            self.unknown -= 1;
        }
        let unknown_full = owner.is_none() && self.unknown >= MAX_UNKNOWN;
        if unknown_full || self.entries.len() >= CACHE_CAPACITY {
            self.entries.retain(|_, c| c.at.elapsed() < CACHE_TTL);
            self.unknown = self.entries.values().filter(|c| c.owner.is_none()).count();
            // Unknown keys go first: they are the ones a flood of random keys makes.
            if owner.is_none() && self.unknown >= MAX_UNKNOWN {
                self.entries.retain(|_, c| c.owner.is_some());
                self.unknown = 0;
            }
            if self.entries.len() >= CACHE_CAPACITY {
                self.entries.clear();
                self.unknown = 0;
            }
        }
        if owner.is_none() {
            self.unknown += 1;
        }
        self.entries.insert(
            hash,
            Cached {
                owner,
                at: Instant::now(),
            },
        );
    }
}

impl ApiKeys {
    /// Record the configured tenants and their keys (see
    /// [`Store::sync_configured_tenants`]) and answer from the database from then on.
    pub async fn load(store: Store, config: &Config) -> Result<(Self, DevKey), TenantError> {
        let (tenants, dev) = configured_tenants(config);
        store.sync_configured_tenants(&tenants).await?;
        Ok((Self::new(store), dev))
    }

    pub fn new(store: Store) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                cache: Mutex::new(Cache::default()),
                lookups: Semaphore::new(LOOKUP_CONCURRENCY),
            }),
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        // The cache holds no invariant a panic could break halfway that matters beyond a
        // wrong count, which the next overflow recomputes.
        self.inner
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Forget every cached answer: tenants or keys changed.
    pub fn invalidate(&self) {
        let mut cache = self.cache();
        cache.generation += 1;
        cache.entries.clear();
        cache.unknown = 0;
    }

    /// Who a key authenticates (`None`: nobody), from the cache or the database.
    pub async fn resolve(&self, key: &str) -> Result<Option<KeyOwner>, StoreError> {
        let hash = hash_key(key);
        if let Some(owner) = self.cache().fresh(&hash) {
            return Ok(owner);
        }
        let _permit = self
            .inner
            .lookups
            .acquire()
            .await
            .map_err(|_| StoreError::Unavailable("shutting down".into()))?;
        // Another caller may have looked the same key up while this one waited.
        let generation = {
            let cache = self.cache();
            if let Some(owner) = cache.fresh(&hash) {
                return Ok(owner);
            }
            cache.generation
        };
        let owner = self.inner.store.key_owner(&hash).await?;
        let mut cache = self.cache();
        if cache.generation == generation {
            cache.insert(hash, owner.clone());
        }
        Ok(owner)
    }

    /// The tenant of an `authorization` header value: UNAUTHENTICATED for a missing,
    /// malformed or unknown key, PERMISSION_DENIED for a disabled tenant's key.
    pub async fn authenticate(&self, authorization: Option<&str>) -> Result<TenantId, Status> {
        let key = bearer(authorization).map_err(Status::unauthenticated)?;
        match self.resolve(key).await.map_err(store_status)? {
            None => Err(Status::unauthenticated("unknown API key")),
            Some(owner) if !owner.enabled => Err(Status::permission_denied(format!(
                "tenant `{}` is disabled; an operator can enable it again (AdminService.EnableTenant)",
                owner.tenant
            ))),
            Some(owner) => Ok(owner.tenant),
        }
    }

    /// The tenant a gRPC request's `authorization` metadata names (see [`Self::authenticate`]).
    /// The future does not borrow the request, so handlers of any request type can await it.
    pub fn tenant_of<T>(
        &self,
        request: &tonic::Request<T>,
    ) -> impl Future<Output = Result<TenantId, Status>> + Send + 'static {
        let header = header_of(request);
        let keys = self.clone();
        async move { keys.authenticate(header.as_deref()).await }
    }

    /// Clear the cache whenever another replica commits a tenant or key change (PostgreSQL
    /// LISTEN/NOTIFY), until `shutdown` turns true. Returns at once on SQLite, where every
    /// change is made by this process and clears the cache itself.
    pub async fn run_change_listener(&self, mut shutdown: watch::Receiver<bool>) {
        use futures::StreamExt;
        loop {
            if *shutdown.borrow() {
                return;
            }
            match self.inner.store.listen_for_tenant_changes().await {
                Ok(None) => return,
                Ok(Some(stream)) => {
                    // Changes made while nobody listened were not heard.
                    self.invalidate();
                    let mut stream = std::pin::pin!(stream);
                    loop {
                        tokio::select! {
                            item = stream.next() => match item {
                                Some(Ok(())) => self.invalidate(),
                                Some(Err(err)) => {
                                    tracing::warn!(error = %err, "tenant change notifications interrupted; listening again");
                                    break;
                                }
                                None => {
                                    tracing::warn!("tenant change notifications lost their connection; listening again");
                                    break;
                                }
                            },
                            _ = shutdown.changed() => return,
                        }
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, "cannot listen for tenant changes; cached keys expire after {CACHE_TTL:?} meanwhile");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// A store failure while authenticating: the caller should retry, or it is our fault.
pub(crate) fn store_status(err: StoreError) -> Status {
    if err.is_unavailable() {
        Status::unavailable("the database is unavailable; nothing was changed, retry later")
    } else {
        tracing::error!(error = %err, "store error while authenticating");
        Status::internal("internal storage error")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TenantConfig;

    async fn store() -> (Store, String) {
        let url = coverwatch_store::testing::fresh_database_url().await;
        let keyring = coverwatch_store::Keyring::from_base64(&[(
            "t".into(),
            coverwatch_store::Keyring::generate_key_base64(),
        )])
        .unwrap();
        let store = Store::connect(&coverwatch_store::ConnectOptions::new(url.clone()), keyring)
            .await
            .unwrap();
        store.migrate().await.unwrap();
        (store, url)
    }

    async fn code(keys: &ApiKeys, header: &str) -> Result<String, tonic::Code> {
        keys.authenticate(Some(header))
            .await
            .map(|t| t.to_string())
            .map_err(|s| s.code())
    }

    #[tokio::test]
    async fn configured_tenants_replace_the_development_tenant_and_the_file_is_authoritative() {
        let (store, url) = store().await;
        let mut config = Config {
            tenants: vec![TenantConfig {
                id: "acme".into(),
                api_key_sha256: vec![hash_key("acme-key"), hash_key("acme-old")],
            }],
            dev_api_key: Some("development-key-123".into()),
            ..Config::default()
        };
        let (keys, dev) = ApiKeys::load(store.clone(), &config).await.unwrap();
        assert!(matches!(dev, DevKey::None));
        assert_eq!(code(&keys, "Bearer acme-key").await.unwrap(), "acme");
        assert_eq!(code(&keys, "Bearer acme-old").await.unwrap(), "acme");
        let api_key = store
            .create_api_key(&"acme".parse().unwrap(), &hash_key("acme-api"), "api")
            .await
            .unwrap();
        keys.invalidate();
        for refused in ["Bearer development-key-123", "acme-key", "Bearer "] {
            assert_eq!(
                code(&keys, refused).await,
                Err(tonic::Code::Unauthenticated),
                "{refused}"
            );
        }
        assert_eq!(
            keys.authenticate(None).await.unwrap_err().code(),
            tonic::Code::Unauthenticated
        );

        // The next start lists one hash fewer: that key stops, the API-made key stays.
        config.tenants[0].api_key_sha256.pop();
        let (keys, _) = ApiKeys::load(store.clone(), &config).await.unwrap();
        assert_eq!(code(&keys, "Bearer acme-key").await.unwrap(), "acme");
        assert_eq!(
            code(&keys, "Bearer acme-old").await,
            Err(tonic::Code::Unauthenticated)
        );
        assert_eq!(code(&keys, "Bearer acme-api").await.unwrap(), "acme");
        let revoked = store.revoke_api_key(&api_key.id).await.unwrap();
        assert!(revoked.revoked_at.is_some());
        keys.invalidate();
        assert_eq!(
            code(&keys, "Bearer acme-api").await,
            Err(tonic::Code::Unauthenticated)
        );
        store.close().await;
        coverwatch_store::testing::drop_database(&url).await;
    }

    #[tokio::test]
    async fn without_tenants_a_development_key_is_generated() {
        let (store, url) = store().await;
        let (keys, dev) = ApiKeys::load(store.clone(), &Config::default())
            .await
            .unwrap();
        let DevKey::Generated(key) = dev else {
            panic!("expected a generated key")
        };
        assert_eq!(
            code(&keys, &format!("Bearer {key}")).await.unwrap(),
            DEV_TENANT
        );
        let (other, _) = ApiKeys::load(store.clone(), &Config::default())
            .await
            .unwrap();
        assert_eq!(
            code(&other, &format!("Bearer {key}")).await,
            Err(tonic::Code::Unauthenticated),
            "a new key each start"
        );
        store.close().await;
        coverwatch_store::testing::drop_database(&url).await;
    }

    #[test]
    fn unknown_keys_are_cached_within_bounds() {
        let mut cache = Cache::default();
        for i in 0..(MAX_UNKNOWN * 3) {
            cache.insert(format!("unknown-{i}"), None);
            assert!(cache.unknown <= MAX_UNKNOWN, "{i}: {}", cache.unknown);
        }
        let owner = KeyOwner {
            tenant: "acme".parse().unwrap(),
            enabled: true,
        };
        cache.insert("known".into(), Some(owner.clone()));
        for i in 0..(MAX_UNKNOWN * 2) {
            cache.insert(format!("more-{i}"), None);
        }
        assert!(cache.entries.len() <= CACHE_CAPACITY);
        assert_eq!(
            cache.fresh("known"),
            Some(Some(owner)),
            "a flood of unknown keys does not evict known ones"
        );
        assert_eq!(
            cache.unknown,
            cache.entries.values().filter(|c| c.owner.is_none()).count()
        );
    }

    #[test]
    fn generated_keys_are_prefixed_and_random() {
        let (a, b) = (generate_key(), generate_key());
        assert_ne!(a, b);
        let hex = a.strip_prefix(KEY_PREFIX).unwrap();
        assert_eq!(hex.len(), 64);
        assert!(hex.bytes().all(|b| b.is_ascii_hexdigit()));
    }
}
