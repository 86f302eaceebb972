//! Group-committed ingest: concurrent webhook deliveries are written by one multi-row
//! `INSERT … ON CONFLICT DO NOTHING RETURNING`, autocommitted (one statement, one transaction),
//! and each caller is answered only once that statement has committed.
//!
//! Everything that can be done per delivery (the id, sealing headers and body) is done by the
//! caller before its delivery is queued, so the writer does nothing but the database round trips.

use std::collections::HashSet;
use std::sync::Arc;

use coverwatch_core::ids::DeliveryId;
use sea_orm::sea_query::{OnConflict, Query, SimpleExpr};
use sea_orm::{ConnectionTrait, EntityTrait, Set, TryInsertResult, Value};

use crate::entities::inbox;
use crate::group_commit::{GroupCommitConfig, GroupCommitter};
use crate::inbox::{DeliveryStatus, Ingested, NewDelivery, seal_delivery};
use crate::{Result, Store, StoreError, to_ms};

/// A delivery ready to be written: its id chosen and its secrets sealed.
#[derive(Debug, Clone)]
pub struct PreparedDelivery {
    id: DeliveryId,
    provider: String,
    dedupe_key: String,
    tenant_id: Option<String>,
    link_id: Option<String>,
    path: String,
    headers: String,
    body: Option<Vec<u8>>,
    received_at: i64,
    key_id: String,
    trace_context: Option<String>,
    connection_id: Option<String>,
}

impl PreparedDelivery {
    fn values(&self) -> [SimpleExpr; 15] {
        let value = |v: Value| SimpleExpr::Value(v);
        [
            value(self.id.to_string().into()),
            value(self.provider.clone().into()),
            value(self.dedupe_key.clone().into()),
            value(self.tenant_id.clone().into()),
            value(self.link_id.clone().into()),
            value(self.path.clone().into()),
            value(self.headers.clone().into()),
            value(self.body.clone().into()),
            value(DeliveryStatus::Pending.as_str().into()),
            value(0i32.into()),
            value(self.received_at.into()),
            value(self.received_at.into()),
            value(Some(self.key_id.clone()).into()),
            value(self.trace_context.clone().into()),
            value(self.connection_id.clone().into()),
        ]
    }

    fn model(self) -> inbox::ActiveModel {
        inbox::ActiveModel {
            seq: sea_orm::NotSet,
            id: Set(self.id.to_string()),
            provider: Set(self.provider),
            dedupe_key: Set(self.dedupe_key),
            tenant_id: Set(self.tenant_id),
            link_id: Set(self.link_id),
            path: Set(self.path),
            headers: Set(self.headers),
            body: Set(self.body),
            status: Set(DeliveryStatus::Pending.as_str().to_owned()),
            attempts: Set(0),
            last_error: Set(None),
            received_at: Set(self.received_at),
            next_attempt_at: Set(self.received_at),
            lease_owner: Set(None),
            lease_expires_at: Set(None),
            processed_at: Set(None),
            key_id: Set(Some(self.key_id)),
            trace_context: Set(self.trace_context),
            connection_id: Set(self.connection_id),
        }
    }
}

/// The columns [`PreparedDelivery::values`] fills, in its order; the others start out NULL.
const COLUMNS: [inbox::Column; 15] = [
    inbox::Column::Id,
    inbox::Column::Provider,
    inbox::Column::DedupeKey,
    inbox::Column::TenantId,
    inbox::Column::LinkId,
    inbox::Column::Path,
    inbox::Column::Headers,
    inbox::Column::Body,
    inbox::Column::Status,
    inbox::Column::Attempts,
    inbox::Column::ReceivedAt,
    inbox::Column::NextAttemptAt,
    inbox::Column::KeyId,
    inbox::Column::TraceContext,
    inbox::Column::ConnectionId,
];

/// The batch insert on PostgreSQL: one array per column, so that the statement's text is the same
/// whatever the batch's size. sqlx prepares each statement text once per connection and keeps
/// it; a `VALUES` list of as many rows as the batch holds is a new text for every size, and so
/// one more round trip (and a plan) for most batches. The rows are inserted in the arrays'
/// order (`ORDER BY n`), which is arrival order: `seq` is taken in that order.
const INSERT_BATCH_POSTGRES: &str = "INSERT INTO inbox (id, provider, dedupe_key, tenant_id, link_id, path, headers, \
       body, status, attempts, received_at, next_attempt_at, key_id, trace_context, connection_id) \
     SELECT d.id, d.provider, d.dedupe_key, d.tenant_id, d.link_id, d.path, d.headers, d.body, 'pending', 0, \
       d.received_at, d.received_at, d.key_id, d.trace_context, d.connection_id \
     FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], \
       $8::bytea[], $9::int8[], $10::text[], $11::text[], $12::text[]) WITH ORDINALITY \
       AS d(id, provider, dedupe_key, tenant_id, link_id, path, headers, body, received_at, key_id, trace_context, connection_id, n) \
     ORDER BY d.n \
     ON CONFLICT (provider, dedupe_key) DO NOTHING \
     RETURNING id";

/// The most deliveries one batch may hold: 15 bound values each stays well below SQLite's
/// limit of 32,766 variables per statement (and PostgreSQL's 65,535).
pub const MAX_INGEST_BATCH: usize = 1024;

/// Where webhook deliveries are queued to be group-committed. Cheap to clone.
#[derive(Clone)]
pub struct IngestQueue {
    store: Store,
    committer: GroupCommitter<PreparedDelivery, Ingested>,
}

impl std::fmt::Debug for IngestQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngestQueue").finish_non_exhaustive()
    }
}

impl IngestQueue {
    /// Seal `new` and store it with whatever else is queued. `Ok` means its row (or an earlier
    /// copy of it) is committed. [`StoreError::QueueFull`]: refused at once, nothing stored.
    pub async fn ingest(&self, new: NewDelivery) -> Result<Ingested> {
        let prepared = self.store.prepare_delivery(new)?;
        self.committer.submit(prepared).await
    }
}

impl Store {
    /// Start a group-commit writer for webhook deliveries on the current tokio runtime.
    pub fn ingest_queue(&self, config: GroupCommitConfig) -> IngestQueue {
        let config = GroupCommitConfig {
            max_batch: config.max_batch.clamp(1, MAX_INGEST_BATCH),
            // SQLite has one write lock: a second writer would only wait on it (in busy-wait
            // sleeps), taking time from the first.
            writers: if self.has_concurrent_writers() {
                config.writers.max(1)
            } else {
                1
            },
            ..config
        };
        let store = self.clone();
        let committer = GroupCommitter::start(
            config,
            Arc::new(move |rows: Vec<PreparedDelivery>| {
                let store = store.clone();
                Box::pin(async move { store.ingest_prepared_batch(rows).await })
            }),
        );
        IngestQueue {
            store: self.clone(),
            committer,
        }
    }

    /// Choose the delivery's id and seal its headers and body with the active key. The dedupe
    /// key is stored in clear: it must not be derived from secrets.
    pub fn prepare_delivery(&self, new: NewDelivery) -> Result<PreparedDelivery> {
        let id = DeliveryId::new();
        let (key_id, headers, body) = seal_delivery(
            &self.keyring,
            &id.to_string(),
            &new.headers,
            Some(&new.body),
        )?;
        Ok(PreparedDelivery {
            id,
            provider: new.provider.to_string(),
            dedupe_key: new.dedupe_key,
            tenant_id: new.link.as_ref().map(|(t, _)| t.to_string()),
            link_id: new.link.as_ref().map(|(_, l)| l.to_string()),
            path: new.path,
            headers,
            body,
            received_at: to_ms(new.received_at),
            key_id,
            trace_context: new.trace_context,
            connection_id: new.connection_id.map(|id| id.to_string()),
        })
    }

    /// Store one prepared delivery in one statement; a second copy writes nothing.
    pub async fn ingest_prepared(&self, row: PreparedDelivery) -> Result<Ingested> {
        let id = row.id;
        let result = inbox::Entity::insert(row.model())
            .on_conflict(
                OnConflict::columns([inbox::Column::Provider, inbox::Column::DedupeKey])
                    .do_nothing()
                    .to_owned(),
            )
            .do_nothing()
            .exec(&self.db)
            .await?;
        Ok(match result {
            TryInsertResult::Inserted(_) => Ingested::Stored(id),
            TryInsertResult::Conflicted | TryInsertResult::Empty => Ingested::Duplicate,
        })
    }

    /// Store `rows` in one statement (one transaction) and answer each, in order. Should the batch fail for a
    /// reason other than the database being unreachable (one row breaking a constraint, a
    /// deadlock with another replica's batch), every row is tried again alone, so that each
    /// caller gets its own answer and one bad row costs the others nothing.
    pub async fn ingest_prepared_batch(
        &self,
        rows: Vec<PreparedDelivery>,
    ) -> Vec<Result<Ingested>> {
        if rows.len() == 1 {
            let row = rows.into_iter().next().expect("one row");
            return vec![self.ingest_prepared(row).await];
        }
        let error = match self.insert_batch(&rows).await {
            Ok(answers) => return answers.into_iter().map(Ok).collect(),
            Err(error) => error,
        };
        if error.is_unavailable() {
            let message = error.to_string();
            return rows
                .iter()
                .map(|_| Err(StoreError::Unavailable(message.clone())))
                .collect();
        }
        tracing::warn!(rows = rows.len(), error = %error, "a group commit of deliveries failed; storing them one by one");
        let mut answers = Vec::with_capacity(rows.len());
        for row in rows {
            answers.push(self.ingest_prepared(row).await);
        }
        answers
    }

    async fn insert_batch(&self, rows: &[PreparedDelivery]) -> Result<Vec<Ingested>> {
        // Two copies of one delivery in a batch: only the first is written; the database would
        // skip the second anyway, this only keeps it out of the statement.
        let mut seen = HashSet::with_capacity(rows.len());
        if self.backend() == sea_orm::DatabaseBackend::Postgres {
            let unique: Vec<&PreparedDelivery> = rows
                .iter()
                .filter(|row| seen.insert((row.provider.as_str(), row.dedupe_key.as_str())))
                .collect();
            let column = |f: &dyn Fn(&PreparedDelivery) -> String| -> Vec<String> {
                unique.iter().map(|row| f(row)).collect()
            };
            let optional =
                |f: &dyn Fn(&PreparedDelivery) -> Option<String>| -> Vec<Option<String>> {
                    unique.iter().map(|row| f(row)).collect()
                };
            // One statement, autocommitted: one transaction (see below).
            let inserted: Vec<String> = sqlx::query_scalar(INSERT_BATCH_POSTGRES)
                .bind(column(&|r| r.id.to_string()))
                .bind(column(&|r| r.provider.clone()))
                .bind(column(&|r| r.dedupe_key.clone()))
                .bind(optional(&|r| r.tenant_id.clone()))
                .bind(optional(&|r| r.link_id.clone()))
                .bind(column(&|r| r.path.clone()))
                .bind(column(&|r| r.headers.clone()))
                .bind(
                    unique
                        .iter()
                        .map(|row| row.body.clone())
                        .collect::<Vec<Option<Vec<u8>>>>(),
                )
                .bind(
                    unique
                        .iter()
                        .map(|row| row.received_at)
                        .collect::<Vec<i64>>(),
                )
                .bind(optional(&|r| Some(r.key_id.clone())))
                .bind(optional(&|r| r.trace_context.clone()))
                .bind(optional(&|r| r.connection_id.clone()))
                .fetch_all(self.db.get_postgres_connection_pool())
                .await?;
            let stored: HashSet<String> = inserted.into_iter().collect();
            return Ok(answers(rows, &stored));
        }
        let mut insert = Query::insert();
        insert
            .into_table(inbox::Entity)
            .columns(COLUMNS)
            .on_conflict(
                OnConflict::columns([inbox::Column::Provider, inbox::Column::DedupeKey])
                    .do_nothing()
                    .to_owned(),
            )
            .returning_col(inbox::Column::Id);
        // In arrival order: `seq` keeps one link's deliveries in the order they were received.
        // With several writers, two deliveries in flight at once may take their `seq` in either
        // order (neither was received before the other was sent), but a delivery acknowledged
        // before another arrives always has the lower one: it took it before its commit.
        for row in rows {
            if seen.insert((row.provider.as_str(), row.dedupe_key.as_str())) {
                insert
                    .values(row.values())
                    .map_err(|e| StoreError::Database(e.to_string()))?;
            }
        }
        let statement = self.backend().build(&insert);
        // One statement is one transaction on both databases (autocommit): all of its rows or
        // none, durable once it returns. An explicit BEGIN and COMMIT around it would only add
        // two round trips per batch.
        let inserted = self.db.query_all(statement).await?;
        let mut stored = HashSet::with_capacity(inserted.len());
        for row in inserted {
            stored.insert(row.try_get::<String>("", "id")?);
        }
        Ok(answers(rows, &stored))
    }
}

/// Each row's answer, given the ids the insert returned (the others were already stored).
fn answers(rows: &[PreparedDelivery], stored: &HashSet<String>) -> Vec<Ingested> {
    rows.iter()
        .map(|row| {
            if stored.contains(&row.id.to_string()) {
                Ingested::Stored(row.id)
            } else {
                Ingested::Duplicate
            }
        })
        .collect()
}
