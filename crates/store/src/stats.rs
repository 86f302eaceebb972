//! Aggregate figures for operators (metrics and the status page): counts by provider, status
//! and state across all tenants. They name no tenant, link or delivery, which is why these are
//! the only queries that do not filter on `tenant_id`.

use chrono::{DateTime, Utc};
use coverwatch_core::{LinkState, ProviderId};
use sea_orm::{ConnectionTrait, Statement};

use crate::inbox::DeliveryStatus;
use crate::{Result, Store, from_ms, parse_column};

/// Inbox rows of one provider in one status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxCount {
    pub provider: ProviderId,
    pub status: DeliveryStatus,
    pub count: u64,
    /// When the oldest of them was received.
    pub oldest_received_at: Option<DateTime<Utc>>,
}

/// Links of one provider in one state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkCount {
    pub provider: ProviderId,
    pub state: LinkState,
    pub count: u64,
}

/// The connection pool as sqlx sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolUse {
    /// Connections open (busy and idle).
    pub size: u32,
    pub idle: u32,
    pub max: u32,
}

impl Store {
    /// Inbox rows grouped by provider and status, with the oldest receipt of each group.
    pub async fn inbox_counts(&self) -> Result<Vec<InboxCount>> {
        let rows = self
            .db
            .query_all(Statement::from_string(
                self.backend(),
                "SELECT provider, status, COUNT(*) AS n, MIN(received_at) AS oldest \
                 FROM inbox GROUP BY provider, status",
            ))
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let provider: String = row.try_get("", "provider")?;
            let status: String = row.try_get("", "status")?;
            let count: i64 = row.try_get("", "n")?;
            let oldest: Option<i64> = row.try_get("", "oldest")?;
            out.push(InboxCount {
                provider: parse_column("provider", &provider)?,
                status: status
                    .parse()
                    .map_err(|()| crate::StoreError::Corrupt(format!("inbox status {status:?}")))?,
                count: u64::try_from(count).unwrap_or(0),
                oldest_received_at: oldest.map(from_ms),
            });
        }
        Ok(out)
    }

    /// Links grouped by provider and state.
    pub async fn link_counts(&self) -> Result<Vec<LinkCount>> {
        let rows = self
            .db
            .query_all(Statement::from_string(
                self.backend(),
                "SELECT provider, state, COUNT(*) AS n FROM links GROUP BY provider, state",
            ))
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let provider: String = row.try_get("", "provider")?;
            let state: String = row.try_get("", "state")?;
            let count: i64 = row.try_get("", "n")?;
            out.push(LinkCount {
                provider: parse_column("provider", &provider)?,
                state: parse_column("state", &state)?,
                count: u64::try_from(count).unwrap_or(0),
            });
        }
        Ok(out)
    }

    /// How much of the connection pool is in use (no query: read from the pool itself).
    pub fn pool_use(&self) -> PoolUse {
        let (size, idle, max) = match self.db.get_database_backend() {
            sea_orm::DatabaseBackend::Postgres => {
                let pool = self.db.get_postgres_connection_pool();
                (
                    pool.size(),
                    pool.num_idle(),
                    pool.options().get_max_connections(),
                )
            }
            _ => {
                let pool = self.db.get_sqlite_connection_pool();
                (
                    pool.size(),
                    pool.num_idle(),
                    pool.options().get_max_connections(),
                )
            }
        };
        PoolUse {
            size,
            idle: u32::try_from(idle).unwrap_or(u32::MAX),
            max,
        }
    }
}
