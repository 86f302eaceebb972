//! Per-tenant vendor connections: a tenant's own account at a vendor, one per (tenant,
//! provider). The settings document (credentials, webhook signing secrets) is sealed with the
//! key ring; the associated data binds it to the row's id, tenant and provider, so a sealed
//! blob copied onto another tenant's row does not open.
//!
//! A connection keeps its id for life (a second put for the same pair updates it in place):
//! the id is in the webhook URL given to the vendor. Its `version` grows with every put, so
//! that a replica holding a provider built from an older version can tell with one indexed
//! read.

use chrono::{DateTime, Utc};
use coverwatch_core::ids::ConnectionId;
use coverwatch_core::{LinkState, ProviderId, TenantId};
use sea_orm::sea_query::{Expr, OnConflict, Query};
use sea_orm::{
    ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Set,
    TransactionTrait,
};

use crate::entities::{link, tenant, vendor_connection};
use crate::{Keyring, Result, Store, StoreError, from_ms, now_ms, parse_column};

/// A vendor's settings document. It holds secrets: `Debug` shows nothing of it, and it is
/// read only through [`ConnectionSettings::expose`].
#[derive(Clone, PartialEq)]
pub struct ConnectionSettings(serde_json::Value);

impl ConnectionSettings {
    pub fn new(value: serde_json::Value) -> Self {
        Self(value)
    }

    pub fn expose(&self) -> &serde_json::Value {
        &self.0
    }
}

impl std::fmt::Debug for ConnectionSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConnectionSettings([redacted])")
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ConnectionRecord {
    pub id: ConnectionId,
    pub tenant_id: TenantId,
    pub provider: ProviderId,
    pub settings: ConnectionSettings,
    /// 1 when created, one more with every put.
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One page of a tenant's connections, ordered by provider.
#[derive(Debug, Clone)]
pub struct ConnectionPage {
    pub connections: Vec<ConnectionRecord>,
    /// The last provider of this page when another page follows.
    pub next_after: Option<ProviderId>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error("tenant `{0}` not found")]
    TenantNotFound(TenantId),
    #[error("vendor connection `{0}` not found")]
    NotFound(ConnectionId),
    #[error(
        "vendor connection `{id}` still serves {links} link(s) that are not descoped, for \
         example {example}; descope them first"
    )]
    InUse {
        id: ConnectionId,
        links: u64,
        example: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<crate::KeyringError> for ConnectionError {
    fn from(err: crate::KeyringError) -> Self {
        Self::Store(err.into())
    }
}

impl From<sea_orm::DbErr> for ConnectionError {
    fn from(err: sea_orm::DbErr) -> Self {
        Self::Store(err.into())
    }
}

/// What binds a sealed settings document to its row.
fn settings_aad(id: &str, tenant: &str, provider: &str) -> Vec<u8> {
    format!("vendor_connection:{id}:{tenant}:{provider}").into_bytes()
}

fn record(keyring: &Keyring, row: vendor_connection::Model) -> Result<ConnectionRecord> {
    let plain = keyring.open(
        &row.key_id,
        &row.settings,
        &settings_aad(&row.id, &row.tenant_id, &row.provider),
    )?;
    let settings = serde_json::from_slice(&plain)
        .map_err(|_| StoreError::Corrupt(format!("settings of vendor connection {}", row.id)))?;
    Ok(ConnectionRecord {
        id: parse_column("connection id", &row.id)?,
        tenant_id: parse_column("tenant id", &row.tenant_id)?,
        provider: parse_column("provider", &row.provider)?,
        settings: ConnectionSettings(settings),
        version: row.version,
        created_at: from_ms(row.created_at),
        updated_at: from_ms(row.updated_at),
    })
}

/// The same settings sealed with the active key (key rotation).
pub(crate) fn reseal(
    keyring: &Keyring,
    row: &vendor_connection::Model,
) -> Result<(String, Vec<u8>)> {
    let aad = settings_aad(&row.id, &row.tenant_id, &row.provider);
    let plain = keyring.open(&row.key_id, &row.settings, &aad)?;
    Ok(keyring.seal(&plain, &aad)?)
}

/// Link states in which a link may still talk to its vendor.
fn live_states() -> [&'static str; 3] {
    [
        LinkState::Pending.as_str(),
        LinkState::Active.as_str(),
        LinkState::ReconnectRequired.as_str(),
    ]
}

impl Store {
    /// Create the tenant's connection to `provider`, or replace its settings: the id stays,
    /// the version grows by one. The settings are stored as given (the caller validated them).
    /// `secret_headers`: the lowercase names of request headers that carry a secret in this
    /// connection's webhooks, masked wherever stored deliveries are shown.
    pub async fn put_connection(
        &self,
        tenant: &TenantId,
        provider: &ProviderId,
        settings: &serde_json::Value,
        secret_headers: &[String],
    ) -> Result<ConnectionRecord, ConnectionError> {
        let plain = serde_json::to_vec(settings)
            .map_err(|e| StoreError::Database(format!("settings: {e}")))?;
        let secret_headers = serde_json::to_string(secret_headers)
            .map_err(|e| StoreError::Database(format!("secret headers: {e}")))?;
        let now = now_ms();
        // Read before the transaction: on SQLite a transaction that reads and then writes
        // cannot wait for another writer (its lock upgrade fails at once with "database is
        // locked"), while one whose first statement writes queues for the lock. Tenants are
        // never deleted, so the answer holds.
        if tenant::Entity::find_by_id(tenant.to_string())
            .one(&self.db)
            .await?
            .is_none()
        {
            return Err(ConnectionError::TenantNotFound(tenant.clone()));
        }
        let txn = self.db.begin().await?;
        let new_id = ConnectionId::new().to_string();
        let (key_id, sealed) = self.keyring.seal(
            &plain,
            &settings_aad(&new_id, tenant.as_str(), provider.as_str()),
        )?;
        // Two puts for a new pair at once: one inserts, the other finds its row below and
        // updates it, so both end with the same connection.
        let inserted = vendor_connection::Entity::insert(vendor_connection::ActiveModel {
            id: Set(new_id),
            tenant_id: Set(tenant.to_string()),
            provider: Set(provider.to_string()),
            settings: Set(sealed),
            key_id: Set(key_id),
            secret_headers: Set(secret_headers.clone()),
            version: Set(1),
            created_at: Set(now),
            updated_at: Set(now),
        })
        .on_conflict(
            OnConflict::columns([
                vendor_connection::Column::TenantId,
                vendor_connection::Column::Provider,
            ])
            .do_nothing()
            .to_owned(),
        )
        .exec_without_returning(&txn)
        .await?;
        let row = find_pair(&txn, tenant, provider)
            .await?
            .ok_or_else(|| StoreError::Corrupt("a vendor connection vanished".into()))?;
        let row = if inserted == 1 {
            row
        } else {
            let (key_id, sealed) = self.keyring.seal(
                &plain,
                &settings_aad(&row.id, &row.tenant_id, &row.provider),
            )?;
            vendor_connection::Entity::update_many()
                .col_expr(vendor_connection::Column::Settings, Expr::value(sealed))
                .col_expr(vendor_connection::Column::KeyId, Expr::value(key_id))
                .col_expr(
                    vendor_connection::Column::SecretHeaders,
                    Expr::value(secret_headers),
                )
                .col_expr(
                    vendor_connection::Column::Version,
                    Expr::col(vendor_connection::Column::Version).add(1),
                )
                .col_expr(vendor_connection::Column::UpdatedAt, Expr::value(now))
                .filter(vendor_connection::Column::Id.eq(row.id.clone()))
                .exec(&txn)
                .await?;
            vendor_connection::Entity::find_by_id(row.id)
                .one(&txn)
                .await?
                .ok_or_else(|| StoreError::Corrupt("a vendor connection vanished".into()))?
        };
        let out = record(&self.keyring, row)?;
        txn.commit().await?;
        Ok(out)
    }

    /// A connection by its id, whatever its tenant (a webhook names only the connection).
    pub async fn connection(&self, id: &ConnectionId) -> Result<Option<ConnectionRecord>> {
        vendor_connection::Entity::find_by_id(id.to_string())
            .one(&self.db)
            .await?
            .map(|row| record(&self.keyring, row))
            .transpose()
    }

    /// The tenant's connection to `provider`, if it has one.
    pub async fn connection_for(
        &self,
        tenant: &TenantId,
        provider: &ProviderId,
    ) -> Result<Option<ConnectionRecord>> {
        find_pair(&self.db, tenant, provider)
            .await?
            .map(|row| record(&self.keyring, row))
            .transpose()
    }

    /// The ids of every connection to `provider`, whatever its tenant, in id order: the sweep
    /// looks at each connection's links with that connection's own stale window.
    pub async fn connection_ids_of(&self, provider: &ProviderId) -> Result<Vec<ConnectionId>> {
        vendor_connection::Entity::find()
            .select_only()
            .column(vendor_connection::Column::Id)
            .filter(vendor_connection::Column::Provider.eq(provider.as_str()))
            .order_by_asc(vendor_connection::Column::Id)
            .into_tuple::<String>()
            .all(&self.db)
            .await?
            .iter()
            .map(|id| parse_column("connection id", id))
            .collect()
    }

    /// The current version of a connection, `None` once deleted: one primary-key read, for a
    /// replica to tell whether a provider it built is still current.
    pub async fn connection_version(&self, id: &ConnectionId) -> Result<Option<i64>> {
        Ok(vendor_connection::Entity::find_by_id(id.to_string())
            .select_only()
            .column(vendor_connection::Column::Version)
            .into_tuple::<i64>()
            .one(&self.db)
            .await?)
    }

    /// Every header name any connection holds secret (see [`Store::put_connection`]).
    pub async fn connection_secret_headers(&self) -> Result<Vec<String>> {
        let lists: Vec<String> = vendor_connection::Entity::find()
            .select_only()
            .column(vendor_connection::Column::SecretHeaders)
            .distinct()
            .into_tuple()
            .all(&self.db)
            .await?;
        let mut names = std::collections::BTreeSet::new();
        for list in lists {
            names.extend(crate::parse_json::<Vec<String>>("secret headers", &list)?);
        }
        Ok(names.into_iter().collect())
    }

    /// A tenant's connections, by provider name, after `after`.
    pub async fn list_connections(
        &self,
        tenant: &TenantId,
        after: Option<&ProviderId>,
        limit: u64,
    ) -> Result<ConnectionPage> {
        let limit = limit.max(1);
        let mut query = vendor_connection::Entity::find()
            .filter(vendor_connection::Column::TenantId.eq(tenant.to_string()))
            .order_by_asc(vendor_connection::Column::Provider)
            .limit(limit + 1);
        if let Some(after) = after {
            query = query.filter(vendor_connection::Column::Provider.gt(after.to_string()));
        }
        let mut rows = query.all(&self.db).await?;
        let more = rows.len() as u64 > limit;
        rows.truncate(limit as usize);
        let connections = rows
            .into_iter()
            .map(|row| record(&self.keyring, row))
            .collect::<Result<Vec<_>>>()?;
        let next_after = if more {
            connections.last().map(|c| c.provider.clone())
        } else {
            None
        };
        Ok(ConnectionPage {
            connections,
            next_after,
        })
    }

    /// Delete a connection that no live link uses (pending, active or reconnect-required).
    /// Links that ended (descoped, exited, failed) keep its id; a delivery still waiting in
    /// the inbox for it fails and is dead-lettered with the reason once it is gone.
    pub async fn delete_connection(&self, id: &ConnectionId) -> Result<(), ConnectionError> {
        // One statement, so that the check and the delete cannot be told apart by a link
        // created in between (and so that SQLite queues it behind other writers).
        let in_use = Query::select()
            .expr(Expr::val(1))
            .from(link::Entity)
            .and_where(link::Column::ConnectionId.eq(id.to_string()))
            .and_where(link::Column::State.is_in(live_states()))
            .to_owned();
        let deleted = vendor_connection::Entity::delete_many()
            .filter(vendor_connection::Column::Id.eq(id.to_string()))
            .filter(Expr::exists(in_use).not())
            .exec(&self.db)
            .await?
            .rows_affected;
        if deleted == 1 {
            return Ok(());
        }
        // Nothing deleted: say why.
        if vendor_connection::Entity::find_by_id(id.to_string())
            .one(&self.db)
            .await?
            .is_none()
        {
            return Err(ConnectionError::NotFound(*id));
        }
        let live = link::Entity::find()
            .filter(link::Column::ConnectionId.eq(id.to_string()))
            .filter(link::Column::State.is_in(live_states()));
        let links = live.clone().count(&self.db).await?;
        let example = live
            .order_by_asc(link::Column::Id)
            .one(&self.db)
            .await?
            .map(|l| l.id)
            .unwrap_or_default();
        Err(ConnectionError::InUse {
            id: *id,
            links,
            example,
        })
    }
}

async fn find_pair(
    conn: &impl sea_orm::ConnectionTrait,
    tenant: &TenantId,
    provider: &ProviderId,
) -> Result<Option<vendor_connection::Model>> {
    Ok(vendor_connection::Entity::find()
        .filter(vendor_connection::Column::TenantId.eq(tenant.to_string()))
        .filter(vendor_connection::Column::Provider.eq(provider.to_string()))
        .one(conn)
        .await?)
}
