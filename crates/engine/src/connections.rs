//! Which provider serves a link or a delivery: the tenant's own vendor connection when the link
//! (or the endpoint that took the delivery) names one, else the deployment's default.
//!
//! Providers built from connections are kept per connection with the version they were built
//! from. Before one is used it is checked against the stored version (one primary-key read)
//! unless it was checked within [`RECHECK_AFTER`]; a put on this process drops it at once.
//! So a changed connection (a rotated signing secret, say) is in effect on the process that
//! saved it immediately, and on every other replica within [`RECHECK_AFTER`] of the commit.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use coverwatch_core::ids::ConnectionId;
use coverwatch_core::plugin::{RemoteCheck, RemoteCheckError, SettingsError};
use coverwatch_core::{Provider, ProviderError, ProviderId, TenantId};
use coverwatch_store::{ConnectionError, ConnectionRecord, LinkRecord, StoreError};

use crate::{Engine, EngineError};

/// How long a provider built from a connection is used without asking the database whether
/// the connection changed: the bound within which a change made on another replica (a new
/// secret, a removed one) takes effect here.
pub const RECHECK_AFTER: Duration = Duration::from_secs(1);

struct Built {
    version: i64,
    provider: Arc<dyn Provider>,
    checked: Instant,
}

/// Providers built from tenants' connections, by connection.
#[derive(Default)]
pub(crate) struct ConnectionCache {
    built: std::sync::Mutex<HashMap<ConnectionId, Built>>,
}

impl ConnectionCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ConnectionId, Built>> {
        self.built
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn fresh(&self, id: &ConnectionId) -> Option<Arc<dyn Provider>> {
        self.lock()
            .get(id)
            .filter(|b| b.checked.elapsed() < RECHECK_AFTER)
            .map(|b| b.provider.clone())
    }

    /// The provider built from `version`, marking it checked now.
    fn of_version(&self, id: &ConnectionId, version: i64) -> Option<Arc<dyn Provider>> {
        let mut built = self.lock();
        let entry = built.get_mut(id).filter(|b| b.version == version)?;
        entry.checked = Instant::now();
        Some(entry.provider.clone())
    }

    fn keep(&self, id: ConnectionId, version: i64, provider: Arc<dyn Provider>) {
        self.lock().insert(
            id,
            Built {
                version,
                provider,
                checked: Instant::now(),
            },
        );
    }

    /// Whatever was built for `id`, however long ago (for what does not change with settings,
    /// such as the vendor's capabilities).
    fn any(&self, id: &ConnectionId) -> Option<Arc<dyn Provider>> {
        self.lock().get(id).map(|b| b.provider.clone())
    }

    fn forget(&self, id: &ConnectionId) {
        self.lock().remove(id);
    }
}

/// A tenant's vendor connection as the admin API shows it: no secret in it.
#[derive(Debug, Clone)]
pub struct ConnectionView {
    pub id: ConnectionId,
    pub tenant_id: TenantId,
    pub provider: ProviderId,
    pub version: i64,
    /// The settings without the keys the vendor's plug-in names as secret.
    pub public_settings: serde_json::Map<String, serde_json::Value>,
    /// The path (on the webhook listener) to give the vendor for this connection's webhooks,
    /// for vendors that send every webhook to one URL; `None` for vendors with per-link URLs.
    pub webhook_path: Option<String>,
    /// Whether the vendor was asked about the credentials when they were saved (`None`: not
    /// a put, so unknown).
    pub checked_remotely: Option<bool>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

fn connection_error(err: ConnectionError) -> EngineError {
    match err {
        ConnectionError::TenantNotFound(id) => EngineError::NotFound {
            what: "tenant",
            id: id.to_string(),
        },
        ConnectionError::NotFound(id) => EngineError::NotFound {
            what: "vendor connection",
            id: id.to_string(),
        },
        refused @ ConnectionError::InUse { .. } => {
            EngineError::FailedPrecondition(refused.to_string())
        }
        ConnectionError::Store(e) => e.into(),
    }
}

/// A settings error as the admin API reports it: the field path under `settings`.
fn settings_error(err: SettingsError) -> EngineError {
    let err = err.within("settings");
    EngineError::InvalidArgument {
        field: err.path,
        message: err.reason,
    }
}

/// A failed vendor check: wrong settings are the caller's to fix (INVALID_ARGUMENT naming the
/// field); a vendor that could not be reached says nothing about them, so the caller is told to
/// retry (UNAVAILABLE) rather than that its key is wrong. Nothing is saved either way.
fn remote_check_error(provider: &ProviderId, err: RemoteCheckError) -> EngineError {
    match err {
        RemoteCheckError::Refused(e) => settings_error(e),
        RemoteCheckError::Unreachable { vendor, reason } => {
            EngineError::Provider(ProviderError::Unavailable {
                provider: provider.clone(),
                message: format!("could not check the settings with {vendor}: {reason}"),
                vendor: Default::default(),
            })
        }
    }
}

impl Engine {
    /// The provider for a new link of `tenant` to `kind`, and the connection it comes from:
    /// the tenant's own connection if it has one, else the deployment's default.
    pub(crate) async fn provider_for_new_link(
        &self,
        tenant: &TenantId,
        kind: &ProviderId,
    ) -> Result<(Option<ConnectionId>, Arc<dyn Provider>), EngineError> {
        if let Some(record) = self.inner.store.connection_for(tenant, kind).await? {
            let id = record.id;
            let provider = match self.inner.connections.of_version(&id, record.version) {
                Some(provider) => provider,
                None => self.build_connection(&record)?,
            };
            return Ok((Some(id), provider));
        }
        match self.inner.providers.default_for(kind) {
            Some(provider) => Ok((None, provider.clone())),
            None if self.inner.providers.knows(kind) => {
                Err(EngineError::FailedPrecondition(format!(
                    "tenant `{tenant}` has no `{kind}` connection and the deployment has no \
                     default; PutVendorConnection"
                )))
            }
            None => Err(EngineError::ProviderNotConfigured(kind.clone())),
        }
    }

    /// The provider that serves `connection` of `kind` (`None`: the deployment's default).
    /// A connection to another vendor is refused as if it did not exist.
    pub(crate) async fn provider_for(
        &self,
        kind: &ProviderId,
        connection: Option<&ConnectionId>,
    ) -> Result<Arc<dyn Provider>, EngineError> {
        let Some(id) = connection else {
            return Ok(self.inner.providers.get(kind)?.clone());
        };
        let provider = self.connection_provider(id).await?;
        if provider.kind() != *kind {
            return Err(EngineError::NotFound {
                what: "vendor connection",
                id: format!("{id} (of {kind})"),
            });
        }
        Ok(provider)
    }

    async fn connection_provider(
        &self,
        id: &ConnectionId,
    ) -> Result<Arc<dyn Provider>, EngineError> {
        if let Some(provider) = self.inner.connections.fresh(id) {
            return Ok(provider);
        }
        let gone = || EngineError::NotFound {
            what: "vendor connection",
            id: id.to_string(),
        };
        let Some(version) = self.inner.store.connection_version(id).await? else {
            self.inner.connections.forget(id);
            return Err(gone());
        };
        if let Some(provider) = self.inner.connections.of_version(id, version) {
            return Ok(provider);
        }
        let record = self.inner.store.connection(id).await?.ok_or_else(gone)?;
        self.build_connection(&record)
    }

    /// The provider of an existing link: the one of the connection it was created with.
    pub(crate) async fn provider_of(
        &self,
        record: &LinkRecord,
    ) -> Result<Arc<dyn Provider>, EngineError> {
        self.provider_for(&record.link.provider, record.connection_id.as_ref())
            .await
    }

    fn build_connection(
        &self,
        record: &ConnectionRecord,
    ) -> Result<Arc<dyn Provider>, EngineError> {
        let plugin = self
            .inner
            .providers
            .plugin(&record.provider)
            .ok_or_else(|| EngineError::ProviderNotConfigured(record.provider.clone()))?;
        // Validated when saved; failing now means the plug-in's rules changed since, which
        // the operator fixes with a new put.
        let built = plugin
            .build(record.settings.expose().clone())
            .map_err(|e| {
                EngineError::FailedPrecondition(format!(
                    "vendor connection `{}` no longer builds ({}); put it again",
                    record.id,
                    e.within("settings")
                ))
            })?;
        self.inner
            .connections
            .keep(record.id, record.version, built.provider.clone());
        Ok(built.provider)
    }

    fn view(&self, record: ConnectionRecord, checked_remotely: Option<bool>) -> ConnectionView {
        let plugin = self.inner.providers.plugin(&record.provider);
        let secret = plugin.map(|p| p.secret_settings()).unwrap_or(&[]);
        let public_settings = match record.settings.expose() {
            serde_json::Value::Object(map) => map
                .iter()
                // Without the plug-in nothing is known to be safe to show.
                .filter(|(key, _)| plugin.is_some() && !secret.contains(&key.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            _ => serde_json::Map::new(),
        };
        let per_link = self
            .inner
            .connections
            .any(&record.id)
            .map(|p| p.capabilities().per_link_webhook_url)
            .unwrap_or(false);
        ConnectionView {
            webhook_path: (!per_link)
                .then(|| format!("/webhooks/{}/{}", record.provider, record.id)),
            id: record.id,
            tenant_id: record.tenant_id,
            provider: record.provider,
            version: record.version,
            public_settings,
            checked_remotely,
            created_at: record.created_at,
            updated_at: record.updated_at,
        }
    }

    /// Validate `settings` with the vendor's plug-in (locally, then with a cheap authenticated
    /// call where the plug-in has one) and only then save them as the tenant's connection to
    /// `provider`. A bad setting is INVALID_ARGUMENT naming `settings.<field>`; nothing is
    /// saved. The connection's next use on this process builds the new settings; other
    /// replicas follow within [`RECHECK_AFTER`].
    pub async fn put_vendor_connection(
        &self,
        tenant: &TenantId,
        provider: &ProviderId,
        settings: serde_json::Value,
    ) -> Result<ConnectionView, EngineError> {
        let plugin = self.inner.providers.plugin(provider).ok_or_else(|| {
            let known: Vec<String> = self
                .inner
                .providers
                .plugins()
                .map(|p| p.id().to_owned())
                .collect();
            EngineError::invalid(
                "provider",
                format!("no such vendor in this build (known: {})", known.join(", ")),
            )
        })?;
        if !settings.is_object() {
            return Err(EngineError::invalid(
                "settings",
                "must be an object of the vendor's settings",
            ));
        }
        // Unknown tenant first: no vendor call for a request that cannot be saved.
        self.inner.store.tenant(tenant).await.map_err(|e| match e {
            coverwatch_store::TenantError::NotFound(id) => EngineError::NotFound {
                what: "tenant",
                id: id.to_string(),
            },
            coverwatch_store::TenantError::Store(e) => e.into(),
            other => EngineError::Store(StoreError::Database(other.to_string())),
        })?;
        let built = plugin.build(settings.clone()).map_err(settings_error)?;
        let remote = plugin
            .check_remote(settings.clone())
            .await
            .map_err(|e| remote_check_error(provider, e))?;
        let record = self
            .inner
            .store
            .put_connection(tenant, provider, &settings, &built.secret_headers)
            .await
            .map_err(connection_error)?;
        self.inner
            .connections
            .keep(record.id, record.version, built.provider);
        tracing::info!(tenant = %tenant, provider = %provider, connection = %record.id, version = record.version, "vendor connection saved");
        Ok(self.view(record, Some(remote == RemoteCheck::Accepted)))
    }

    pub async fn get_vendor_connection(
        &self,
        id: &ConnectionId,
    ) -> Result<ConnectionView, EngineError> {
        let record =
            self.inner
                .store
                .connection(id)
                .await?
                .ok_or_else(|| EngineError::NotFound {
                    what: "vendor connection",
                    id: id.to_string(),
                })?;
        self.ensure_built(&record);
        Ok(self.view(record, None))
    }

    /// A tenant's connections by provider name, after `after`; and the last provider of the
    /// page when another may follow.
    pub async fn list_vendor_connections(
        &self,
        tenant: &TenantId,
        after: Option<&ProviderId>,
        limit: u64,
    ) -> Result<(Vec<ConnectionView>, Option<ProviderId>), EngineError> {
        let page = self
            .inner
            .store
            .list_connections(tenant, after, limit)
            .await?;
        let views = page
            .connections
            .into_iter()
            .map(|record| {
                self.ensure_built(&record);
                self.view(record, None)
            })
            .collect();
        Ok((views, page.next_after))
    }

    /// Delete a connection no live link uses; FAILED_PRECONDITION naming one that does.
    pub async fn delete_vendor_connection(&self, id: &ConnectionId) -> Result<(), EngineError> {
        self.inner
            .store
            .delete_connection(id)
            .await
            .map_err(connection_error)?;
        self.inner.connections.forget(id);
        tracing::info!(connection = %id, "vendor connection deleted");
        Ok(())
    }

    /// Build a connection that is not cached yet, so that its view can say what kind of
    /// webhook URL its vendor takes; a connection that no longer builds is shown all the same.
    fn ensure_built(&self, record: &ConnectionRecord) {
        if self
            .inner
            .connections
            .of_version(&record.id, record.version)
            .is_none()
        {
            let _ = self.build_connection(record);
        }
    }
}
