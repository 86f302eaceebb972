//! Tenants and their API keys, as the admin API and authentication see them.
//!
//! Only the SHA-256 of a key is kept. Every change that can alter what a key authenticates
//! (a key created or revoked, a tenant disabled or enabled, the configured keys replaced at
//! start-up) notifies [`TENANTS_CHANNEL`] inside its transaction on PostgreSQL, so that every
//! replica drops what it cached the moment the change commits, and never before.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use coverwatch_core::TenantId;
use coverwatch_core::ids::ApiKeyId;
use futures::Stream;
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveValue::NotSet, ColumnTrait, ConnectionTrait, DatabaseBackend, DbErr, EntityTrait,
    QueryFilter, QueryOrder, QuerySelect, Set, Statement, TransactionTrait,
};

use crate::entities::{api_key, tenant};
use crate::{Result, Store, StoreError, from_ms, now_ms, parse_column};

/// The PostgreSQL notification channel of tenant and key changes (payload empty).
pub const TENANTS_CHANNEL: &str = "coverwatch_tenants";

const ENABLED: &str = "enabled";
const DISABLED: &str = "disabled";
const FROM_CONFIG: &str = "config";
const FROM_API: &str = "api";
/// The label of a key that coverwatch.toml lists.
const CONFIG_KEY_LABEL: &str = "coverwatch.toml";

/// Where a tenant was first declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TenantSource {
    /// coverwatch.toml (`tenants[]`), or the development tenant.
    Config,
    /// AdminService.CreateTenant.
    Api,
}

/// Where a key's hash comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    /// `tenants[].api_key_sha256` in coverwatch.toml (or the development key): the file is
    /// authoritative, so such a key lives exactly as long as it is listed.
    Config,
    /// AdminService.CreateApiKey; lives until RevokeApiKey.
    Api,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantRecord {
    pub id: TenantId,
    pub display_name: String,
    pub enabled: bool,
    pub source: TenantSource,
    pub created_at: DateTime<Utc>,
    /// When it was last disabled; `None` while enabled.
    pub disabled_at: Option<DateTime<Utc>>,
    /// Keys that authenticate it now (not revoked).
    pub active_keys: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    pub id: ApiKeyId,
    pub tenant_id: TenantId,
    pub label: String,
    pub source: KeySource,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// One page of tenants, ordered by id.
#[derive(Debug, Clone)]
pub struct TenantPage {
    pub tenants: Vec<TenantRecord>,
    /// The last id of this page when another page follows.
    pub next_after: Option<String>,
}

/// A tenant as coverwatch.toml declares it.
#[derive(Debug, Clone)]
pub struct ConfiguredTenant {
    pub id: TenantId,
    /// Lowercase hex SHA-256 of each key.
    pub key_sha256: Vec<String>,
}

/// What a key hash authenticates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyOwner {
    pub tenant: TenantId,
    pub enabled: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum TenantError {
    #[error("tenant `{0}` already exists")]
    AlreadyExists(TenantId),
    #[error("tenant `{0}` not found")]
    NotFound(TenantId),
    #[error("API key `{0}` not found")]
    KeyNotFound(ApiKeyId),
    #[error("API key `{id}` is already revoked (since {at})")]
    KeyRevoked { id: ApiKeyId, at: DateTime<Utc> },
    #[error(
        "API key `{0}` is listed in the configuration (tenants[].api_key_sha256); remove its \
         hash there and restart to revoke it"
    )]
    ConfiguredKey(ApiKeyId),
    #[error(
        "a configured key hash of tenant `{tenant}` is already an API key of tenant `{owner}`; \
         one key can authenticate only one tenant"
    )]
    HashTaken { tenant: TenantId, owner: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<DbErr> for TenantError {
    fn from(err: DbErr) -> Self {
        Self::Store(err.into())
    }
}

fn tenant_record(row: tenant::Model, active_keys: u64) -> Result<TenantRecord> {
    Ok(TenantRecord {
        id: parse_column("tenant id", &row.id)?,
        display_name: row.display_name,
        enabled: match row.state.as_str() {
            ENABLED => true,
            DISABLED => false,
            other => return Err(StoreError::Corrupt(format!("tenant state `{other}`"))),
        },
        source: match row.source.as_str() {
            FROM_CONFIG => TenantSource::Config,
            FROM_API => TenantSource::Api,
            other => return Err(StoreError::Corrupt(format!("tenant source `{other}`"))),
        },
        created_at: from_ms(row.created_at),
        disabled_at: row.disabled_at.map(from_ms),
        active_keys,
    })
}

fn key_record(row: api_key::Model) -> Result<ApiKeyRecord> {
    Ok(ApiKeyRecord {
        id: parse_column("API key id", &row.id)?,
        tenant_id: parse_column("tenant id", &row.tenant_id)?,
        label: row.label,
        source: match row.source.as_str() {
            FROM_CONFIG => KeySource::Config,
            FROM_API => KeySource::Api,
            other => return Err(StoreError::Corrupt(format!("API key source `{other}`"))),
        },
        created_at: from_ms(row.created_at),
        revoked_at: row.revoked_at.map(from_ms),
    })
}

/// Tell every replica that what keys authenticate may have changed. Delivered at commit,
/// never if the transaction rolls back.
async fn notify(conn: &impl ConnectionTrait) -> Result<()> {
    if conn.get_database_backend() == DatabaseBackend::Postgres {
        conn.execute(Statement::from_sql_and_values(
            DatabaseBackend::Postgres,
            "SELECT pg_notify($1, '')",
            [TENANTS_CHANNEL.into()],
        ))
        .await?;
    }
    Ok(())
}

/// Active key counts of the given tenants.
async fn active_key_counts(
    conn: &impl ConnectionTrait,
    ids: &[String],
) -> Result<HashMap<String, u64>> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<(String, i64)> = api_key::Entity::find()
        .select_only()
        .column(api_key::Column::TenantId)
        .column_as(api_key::Column::Id.count(), "n")
        .filter(api_key::Column::TenantId.is_in(ids.iter().cloned()))
        .filter(api_key::Column::RevokedAt.is_null())
        .group_by(api_key::Column::TenantId)
        .into_tuple()
        .all(conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(id, n)| (id, u64::try_from(n).unwrap_or(0)))
        .collect())
}

async fn find_tenant(
    conn: &impl ConnectionTrait,
    id: &TenantId,
) -> Result<TenantRecord, TenantError> {
    let row = tenant::Entity::find_by_id(id.to_string())
        .one(conn)
        .await?
        .ok_or_else(|| TenantError::NotFound(id.clone()))?;
    let counts = active_key_counts(conn, std::slice::from_ref(&row.id)).await?;
    let n = counts.get(&row.id).copied().unwrap_or(0);
    Ok(tenant_record(row, n)?)
}

impl Store {
    /// Record the configured tenants and make their configured key hashes exactly those of the
    /// file: new hashes are added, hashes no longer listed (for any tenant) stop working. Keys
    /// created through the API are left alone, and so is a tenant's state (a configured tenant
    /// an operator disabled stays disabled across restarts). All or nothing.
    pub async fn sync_configured_tenants(
        &self,
        tenants: &[ConfiguredTenant],
    ) -> Result<(), TenantError> {
        let txn = self.db.begin().await?;
        let now = now_ms();
        let mut configured: HashSet<&str> = HashSet::new();
        for configured_tenant in tenants {
            let id = configured_tenant.id.to_string();
            tenant::Entity::insert(new_tenant(id.clone(), String::new(), FROM_CONFIG, now))
                .on_conflict(
                    OnConflict::column(tenant::Column::Id)
                        .update_column(tenant::Column::Source)
                        .to_owned(),
                )
                .exec_without_returning(&txn)
                .await?;
            for hash in &configured_tenant.key_sha256 {
                configured.insert(hash.as_str());
                // Replicas starting together write the same hashes: the first insert wins,
                // the others find its row.
                api_key::Entity::insert(api_key::ActiveModel {
                    id: Set(ApiKeyId::new().to_string()),
                    tenant_id: Set(id.clone()),
                    key_sha256: Set(hash.clone()),
                    label: Set(CONFIG_KEY_LABEL.into()),
                    source: Set(FROM_CONFIG.into()),
                    created_at: Set(now),
                    revoked_at: Set(None),
                })
                .on_conflict(
                    OnConflict::column(api_key::Column::KeySha256)
                        .do_nothing()
                        .to_owned(),
                )
                .exec_without_returning(&txn)
                .await?;
                let row = api_key::Entity::find()
                    .filter(api_key::Column::KeySha256.eq(hash.as_str()))
                    .one(&txn)
                    .await?
                    .ok_or_else(|| {
                        StoreError::Corrupt(format!("configured key of {id} vanished"))
                    })?;
                if row.source == FROM_CONFIG && row.tenant_id != id {
                    // The file moved the hash to another tenant; the file is authoritative.
                    api_key::Entity::update_many()
                        .col_expr(api_key::Column::TenantId, Expr::value(id.clone()))
                        .filter(api_key::Column::Id.eq(row.id))
                        .exec(&txn)
                        .await?;
                } else if row.source != FROM_CONFIG {
                    return Err(TenantError::HashTaken {
                        tenant: configured_tenant.id.clone(),
                        owner: row.tenant_id,
                    });
                }
            }
        }
        api_key::Entity::delete_many()
            .filter(api_key::Column::Source.eq(FROM_CONFIG))
            .filter(api_key::Column::KeySha256.is_not_in(configured.iter().copied()))
            .exec(&txn)
            .await?;
        notify(&txn).await?;
        txn.commit().await?;
        Ok(())
    }

    /// Record tenants that must exist (as configured ones, enabled), leaving existing ones as
    /// they are and touching no key. Rows are never removed: their data stays addressable.
    pub async fn ensure_tenants(&self, tenants: &[TenantId]) -> Result<()> {
        let now = now_ms();
        for id in tenants {
            tenant::Entity::insert(new_tenant(id.to_string(), String::new(), FROM_CONFIG, now))
                .on_conflict(
                    OnConflict::column(tenant::Column::Id)
                        .do_nothing()
                        .to_owned(),
                )
                .exec_without_returning(&self.db)
                .await?;
        }
        Ok(())
    }

    /// A new, enabled tenant; ALREADY_EXISTS when the id is taken, whatever its source.
    pub async fn create_tenant(
        &self,
        id: &TenantId,
        display_name: &str,
    ) -> Result<TenantRecord, TenantError> {
        let now = now_ms();
        let inserted = tenant::Entity::insert(new_tenant(
            id.to_string(),
            display_name.to_owned(),
            FROM_API,
            now,
        ))
        .on_conflict(
            OnConflict::column(tenant::Column::Id)
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(&self.db)
        .await?;
        if inserted == 0 {
            return Err(TenantError::AlreadyExists(id.clone()));
        }
        find_tenant(&self.db, id).await
    }

    pub async fn tenant(&self, id: &TenantId) -> Result<TenantRecord, TenantError> {
        find_tenant(&self.db, id).await
    }

    /// Every key of a tenant, revoked ones included, oldest first.
    pub async fn tenant_keys(&self, id: &TenantId) -> Result<Vec<ApiKeyRecord>> {
        api_key::Entity::find()
            .filter(api_key::Column::TenantId.eq(id.to_string()))
            .order_by_asc(api_key::Column::CreatedAt)
            .order_by_asc(api_key::Column::Id)
            .all(&self.db)
            .await?
            .into_iter()
            .map(key_record)
            .collect()
    }

    /// Tenants ordered by id, after `after` (keyset paging).
    pub async fn list_tenants(&self, after: Option<&str>, limit: u64) -> Result<TenantPage> {
        let mut query = tenant::Entity::find().order_by_asc(tenant::Column::Id);
        if let Some(after) = after {
            query = query.filter(tenant::Column::Id.gt(after));
        }
        let mut rows = query.limit(limit.saturating_add(1)).all(&self.db).await?;
        let more = rows.len() as u64 > limit;
        rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        let ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
        let counts = active_key_counts(&self.db, &ids).await?;
        let next_after = if more { ids.last().cloned() } else { None };
        let tenants = rows
            .into_iter()
            .map(|row| {
                let n = counts.get(&row.id).copied().unwrap_or(0);
                tenant_record(row, n)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(TenantPage {
            tenants,
            next_after,
        })
    }

    /// Enable or disable a tenant. Setting the state it already has changes nothing (a
    /// disabled tenant keeps the time it was first disabled).
    pub async fn set_tenant_enabled(
        &self,
        id: &TenantId,
        enabled: bool,
    ) -> Result<TenantRecord, TenantError> {
        let txn = self.db.begin().await?;
        let current = find_tenant(&txn, id).await?;
        if current.enabled != enabled {
            tenant::Entity::update_many()
                .col_expr(
                    tenant::Column::State,
                    Expr::value(if enabled { ENABLED } else { DISABLED }),
                )
                .col_expr(
                    tenant::Column::DisabledAt,
                    Expr::value(if enabled { None } else { Some(now_ms()) }),
                )
                .filter(tenant::Column::Id.eq(id.to_string()))
                .exec(&txn)
                .await?;
            notify(&txn).await?;
        }
        let record = find_tenant(&txn, id).await?;
        txn.commit().await?;
        Ok(record)
    }

    /// Record a new key of `tenant` by its hash. The caller made the key and shows it once.
    pub async fn create_api_key(
        &self,
        tenant_id: &TenantId,
        key_sha256: &str,
        label: &str,
    ) -> Result<ApiKeyRecord, TenantError> {
        let txn = self.db.begin().await?;
        find_tenant(&txn, tenant_id).await?;
        let row = api_key::Model {
            id: ApiKeyId::new().to_string(),
            tenant_id: tenant_id.to_string(),
            key_sha256: key_sha256.to_owned(),
            label: label.to_owned(),
            source: FROM_API.into(),
            created_at: now_ms(),
            revoked_at: None,
        };
        api_key::Entity::insert(api_key::ActiveModel {
            id: Set(row.id.clone()),
            tenant_id: Set(row.tenant_id.clone()),
            key_sha256: Set(row.key_sha256.clone()),
            label: Set(row.label.clone()),
            source: Set(row.source.clone()),
            created_at: Set(row.created_at),
            revoked_at: NotSet,
        })
        .exec_without_returning(&txn)
        .await?;
        // A replica may remember this hash as unknown (someone tried it early).
        notify(&txn).await?;
        txn.commit().await?;
        Ok(key_record(row)?)
    }

    /// Revoke an API-created key: it stops authenticating on every replica. A configured key
    /// is revoked by removing it from the configuration instead.
    pub async fn revoke_api_key(&self, id: &ApiKeyId) -> Result<ApiKeyRecord, TenantError> {
        let txn = self.db.begin().await?;
        let row = api_key::Entity::find_by_id(id.to_string())
            .one(&txn)
            .await?
            .ok_or(TenantError::KeyNotFound(*id))?;
        if row.source == FROM_CONFIG {
            return Err(TenantError::ConfiguredKey(*id));
        }
        if let Some(at) = row.revoked_at {
            return Err(TenantError::KeyRevoked {
                id: *id,
                at: from_ms(at),
            });
        }
        let now = now_ms();
        api_key::Entity::update_many()
            .col_expr(api_key::Column::RevokedAt, Expr::value(now))
            .filter(api_key::Column::Id.eq(id.to_string()))
            .filter(api_key::Column::RevokedAt.is_null())
            .exec(&txn)
            .await?;
        notify(&txn).await?;
        txn.commit().await?;
        Ok(key_record(api_key::Model {
            revoked_at: Some(now),
            ..row
        })?)
    }

    /// The tenant a key hash authenticates, and whether it is enabled; `None` for a hash no
    /// live key has.
    pub async fn key_owner(&self, key_sha256: &str) -> Result<Option<KeyOwner>> {
        let Some(key) = api_key::Entity::find()
            .filter(api_key::Column::KeySha256.eq(key_sha256))
            .filter(api_key::Column::RevokedAt.is_null())
            .one(&self.db)
            .await?
        else {
            return Ok(None);
        };
        let Some(row) = tenant::Entity::find_by_id(key.tenant_id.clone())
            .one(&self.db)
            .await?
        else {
            return Err(StoreError::Corrupt(format!(
                "API key {} names a missing tenant",
                key.id
            )));
        };
        let record = tenant_record(row, 0)?;
        Ok(Some(KeyOwner {
            tenant: record.id,
            enabled: record.enabled,
        }))
    }

    /// Tenant and key changes as other replicas commit them; `None` on SQLite, where every
    /// writer is this process. LISTEN is in place when this returns. The stream ends when the
    /// connection is lost (notifications sent meanwhile are lost with it): the caller must
    /// forget what it cached and listen again.
    pub async fn listen_for_tenant_changes(
        &self,
    ) -> Result<Option<impl Stream<Item = Result<()>> + Send + use<>>> {
        if self.backend() != DatabaseBackend::Postgres {
            return Ok(None);
        }
        let pool = self.db.get_postgres_connection_pool();
        let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
        listener.listen(TENANTS_CHANNEL).await?;
        // `try_recv` (not `recv`, which reconnects silently) so that a lost connection ends
        // the stream instead of hiding a gap.
        Ok(Some(futures::stream::unfold(
            Some(listener),
            |listener| async move {
                let mut listener = listener?;
                match listener.try_recv().await {
                    Ok(Some(_)) => Some((Ok(()), Some(listener))),
                    Ok(None) => None,
                    Err(err) => Some((Err(err.into()), None)),
                }
            },
        )))
    }
}

/// A new tenant's row: enabled, from `source`.
fn new_tenant(id: String, display_name: String, source: &str, now: i64) -> tenant::ActiveModel {
    tenant::ActiveModel {
        id: Set(id),
        created_at: Set(now),
        display_name: Set(display_name),
        state: Set(ENABLED.into()),
        source: Set(source.into()),
        disabled_at: Set(None),
    }
}
