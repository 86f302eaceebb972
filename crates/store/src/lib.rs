//! Storage for coverwatch: sea-orm over SQLite (embedded default) and PostgreSQL (production).
//!
//! Every query that touches tenant data filters on `tenant_id`. Writes that change a link go
//! through [`LinkTx`], which locks the link row first, so concurrent writers to one link queue up
//! instead of overwriting each other, and so that a link's state, its events, its snapshots and
//! the delivery that caused them commit together or not at all.

mod batch_tx;
mod connections;
mod consumers;
pub mod crypto;
mod deliveries;
pub mod entities;
mod events;
mod group_commit;
mod inbox;
mod ingest;
mod link_tx;
mod links;
mod requirements;
mod rotate;
mod snapshots;
mod stats;
mod tenants;
pub mod testing;

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use coverwatch_migration::MigratorTrait;
use sea_orm::{ConnectionTrait, DatabaseBackend, DatabaseConnection, DbErr, Statement};

pub use batch_tx::{BatchCommit, BatchTx};
pub use connections::{ConnectionError, ConnectionPage, ConnectionRecord, ConnectionSettings};
pub use crypto::{Keyring, KeyringError};
pub use deliveries::{DeliveryFilter, DeliveryPage, DeliveryRecord, Replay};
pub use events::{EVENTS_CHANNEL, EventFilter, LoggedEvent, NewEvent};
pub use group_commit::GroupCommitConfig;
pub use inbox::{ClaimedDelivery, DeliveryStatus, Ingested, NewDelivery};
pub use ingest::{IngestQueue, MAX_INGEST_BATCH, PreparedDelivery};
pub use link_tx::LinkTx;
pub use links::{
    ACCESS_SECRET, LinkFilter, LinkPage, LinkRecord, NewLink, SESSION_PROOF_KIND,
    WEBHOOK_TOKEN_KIND,
};
pub use requirements::{DueLink, StoredRequirementSet};
pub use rotate::{ResealProgress, ResealReport, SealedKind};
pub use snapshots::{PolicyVersion, SnapshotOutcome, StoredAccount, StoredPolicy};
pub use stats::{InboxCount, LinkCount, PoolUse};
pub use tenants::{
    ApiKeyRecord, ConfiguredTenant, KeyOwner, KeySource, TENANTS_CHANNEL, TenantError, TenantPage,
    TenantRecord, TenantSource,
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached right now; callers answer "try again" (503/UNAVAILABLE).
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Database(String),
    /// Too many writes already wait for the group-commit writer; callers answer "busy, retry
    /// shortly" (503 with Retry-After) rather than queue without limit.
    #[error("{capacity} writes already wait to be committed")]
    QueueFull { capacity: usize },
    #[error("stored data is unreadable: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Keyring(#[from] KeyringError),
    #[error("{provider} {kind} `{value}` already belongs to another link")]
    ExternalIdTaken {
        provider: String,
        kind: String,
        value: String,
    },
    #[error("link {0} not found")]
    LinkNotFound(String),
    #[error("requirement set `{0}` not found")]
    RequirementSetNotFound(String),
    #[error(
        "requirement set `{id}` is attached to {links} monitored link(s), for example {example}; \
         detach it first"
    )]
    RequirementSetInUse {
        id: String,
        links: u64,
        example: String,
    },
    #[error("unsupported database URL `{0}`: expected sqlite://… or postgres://…")]
    UnsupportedUrl(String),
}

impl From<DbErr> for StoreError {
    fn from(err: DbErr) -> Self {
        if is_connection_error(&err) {
            StoreError::Unavailable(err.to_string())
        } else {
            StoreError::Database(err.to_string())
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        match err {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => StoreError::Unavailable(err.to_string()),
            sqlx::Error::Database(ref e) if is_server_going_away(e.code().as_deref()) => {
                StoreError::Unavailable(err.to_string())
            }
            other => StoreError::Database(other.to_string()),
        }
    }
}

fn is_connection_error(err: &DbErr) -> bool {
    match err {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => true,
        DbErr::Exec(sea_orm::RuntimeErr::SqlxError(e))
        | DbErr::Query(sea_orm::RuntimeErr::SqlxError(e)) => match e {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => true,
            sqlx::Error::Database(e) => is_server_going_away(e.code().as_deref()),
            _ => false,
        },
        _ => false,
    }
}

/// SQLSTATEs with which PostgreSQL ends a session it is shutting down or cannot keep (class
/// 08, connection exception; 57P01-57P03, admin shutdown, crash shutdown, cannot connect now):
/// the statement did not fail on its merits, and the same request will succeed once the server
/// is back, so callers are told to retry rather than that something broke.
fn is_server_going_away(code: Option<&str>) -> bool {
    code.is_some_and(|code| code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03"))
}

impl StoreError {
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// How to reach the database.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub url: String,
    pub max_connections: u32,
    /// How long a request waits for a connection before the database counts as unavailable.
    pub acquire_timeout: Duration,
}

impl ConnectOptions {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_connections: 16,
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

/// A pooled PostgreSQL connection idle this long is pinged before it is lent out.
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);

/// The store: a connection pool plus the keyring that seals vendor secrets.
#[derive(Clone)]
pub struct Store {
    db: DatabaseConnection,
    keyring: std::sync::Arc<Keyring>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.db.get_database_backend())
            .finish()
    }
}

impl Store {
    pub async fn connect(options: &ConnectOptions, keyring: Keyring) -> Result<Self> {
        let url = options.url.as_str();
        let db = if url.starts_with("sqlite:") {
            // WAL lets readers (event streams) run beside the one writer; the busy timeout makes
            // writers queue instead of failing when another holds the write lock.
            let connect = sqlx::sqlite::SqliteConnectOptions::from_str(url)?
                .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                .synchronous(sqlx::sqlite::SqliteSynchronous::Full)
                .busy_timeout(Duration::from_secs(30))
                .foreign_keys(true)
                // Space freed by an update or delete is zeroed, so that a value re-sealed by a
                // key rotation (or kept in clear before sealing) does not linger in the file.
                .pragma("secure_delete", "ON");
            let pool = sqlx::sqlite::SqlitePoolOptions::new()
                .max_connections(options.max_connections.clamp(1, 8))
                .acquire_timeout(options.acquire_timeout)
                // A file opened in this process does not go away while idle: sqlx's default ping
                // before lending a connection out would only cost a trip to its worker thread.
                .test_before_acquire(false)
                .connect_with(connect)
                .await?;
            sea_orm::SqlxSqliteConnector::from_sqlx_sqlite_pool(pool)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let connect = sqlx::postgres::PgConnectOptions::from_str(url)?;
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(options.max_connections.max(2))
                .acquire_timeout(options.acquire_timeout)
                // sqlx pings every connection before lending it out by default: a round trip
                // per statement outside a transaction, as many as the statements themselves on
                // the ingest path. Only a connection idle for a while is pinged (what a restarted
                // server or a dropped network leaves behind); one lent out under load that has
                // died fails its statement, which callers already answer as unavailable (`503`,
                // the worker's retry), and the pool replaces it.
                .test_before_acquire(false)
                .before_acquire(|conn, meta| {
                    Box::pin(async move {
                        if meta.idle_for >= PING_IF_IDLE_FOR {
                            sqlx::Connection::ping(conn).await?;
                        }
                        Ok(true)
                    })
                })
                .connect_with(connect)
                .await?;
            sea_orm::SqlxPostgresConnector::from_sqlx_postgres_pool(pool)
        } else {
            return Err(StoreError::UnsupportedUrl(redact_url(url)));
        };
        Ok(Self {
            db,
            keyring: std::sync::Arc::new(keyring),
        })
    }

    pub async fn migrate(&self) -> Result<()> {
        coverwatch_migration::Migrator::up(&self.db, None).await?;
        Ok(())
    }

    /// The key new secrets are sealed with.
    pub fn active_key_id(&self) -> &str {
        self.keyring.active_key_id()
    }

    pub fn backend(&self) -> DatabaseBackend {
        self.db.get_database_backend()
    }

    /// Whether transactions may write side by side (PostgreSQL), rather than one at a time
    /// behind a single write lock (SQLite): more concurrent writers only help in the first case.
    pub fn has_concurrent_writers(&self) -> bool {
        self.backend() == DatabaseBackend::Postgres
    }

    /// A cheap round trip, for readiness checks.
    pub async fn ping(&self) -> Result<()> {
        self.db
            .execute(Statement::from_string(self.backend(), "SELECT 1"))
            .await?;
        Ok(())
    }

    pub async fn close(self) {
        let _ = self.db.close().await;
    }
}

/// Show a database URL without its password.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

pub(crate) fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

pub(crate) fn to_ms(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

pub(crate) fn from_ms(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

pub(crate) fn parse_column<T: FromStr>(what: &str, value: &str) -> Result<T> {
    value
        .parse()
        .map_err(|_| StoreError::Corrupt(format!("{what} `{value}`")))
}

pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(what: &str, value: &str) -> Result<T> {
    serde_json::from_str(value).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::is_server_going_away;

    #[test]
    fn a_server_shutting_down_is_unavailable_not_broken() {
        for code in ["57P01", "57P02", "57P03", "08006", "08003"] {
            assert!(is_server_going_away(Some(code)), "{code}");
        }
        for code in ["23505", "40001", "42P01"] {
            assert!(!is_server_going_away(Some(code)), "{code}");
        }
        assert!(!is_server_going_away(None));
    }
}
