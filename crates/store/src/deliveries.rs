//! The inbox seen by an operator: list and read stored deliveries, put one back to be processed
//! again, and purge the raw bodies of deliveries processed long ago (the rows stay).

use chrono::{DateTime, Utc};
use coverwatch_core::ids::DeliveryId;
use coverwatch_core::{LinkId, ProviderId, TenantId};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, FromQueryResult, QueryFilter, QueryOrder,
    QuerySelect, Select, TransactionTrait,
};

use crate::crypto::SEAL_OVERHEAD;
use crate::entities::inbox;
use crate::inbox::{open_body, open_headers};
use crate::{
    DeliveryStatus, Keyring, Result, Store, StoreError, from_ms, now_ms, parse_column, to_ms,
};

/// Which deliveries to list, oldest first; every condition set must hold.
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    pub status: Option<DeliveryStatus>,
    pub provider: Option<ProviderId>,
    pub link_id: Option<LinkId>,
    /// Only deliveries received at or after this time.
    pub received_since: Option<DateTime<Utc>>,
    /// Keyset paging: only deliveries stored after this one (its `seq`).
    pub after_seq: Option<i64>,
    pub limit: u64,
}

/// One stored delivery as an operator sees it.
#[derive(Debug, Clone)]
pub struct DeliveryRecord {
    /// Receipt order; the paging key.
    pub seq: i64,
    pub id: DeliveryId,
    pub provider: ProviderId,
    /// The vendor's event id (`id:…`) or the body's hash (`sha256:…`).
    pub dedupe_key: String,
    /// The link it belongs to, when known at receipt.
    pub link: Option<(TenantId, LinkId)>,
    pub path: String,
    pub headers: Vec<(String, String)>,
    /// The raw body; `None` in listings, and once retention purged it.
    pub body: Option<Vec<u8>>,
    /// The raw body's size in bytes; `None` once purged.
    pub body_size: Option<u64>,
    pub status: DeliveryStatus,
    /// Processing attempts so far (reset by a replay).
    pub attempts: u32,
    pub last_error: Option<String>,
    pub received_at: DateTime<Utc>,
    /// When a pending delivery may next be tried.
    pub next_attempt_at: DateTime<Utc>,
    /// When it was settled (done, dead or unmatched).
    pub processed_at: Option<DateTime<Utc>>,
}

/// One page of deliveries.
#[derive(Debug, Clone)]
pub struct DeliveryPage {
    pub deliveries: Vec<DeliveryRecord>,
    /// The `after_seq` of the next page; `None` on the last page.
    pub next_after: Option<i64>,
}

/// What [`Store::replay_delivery`] did.
#[derive(Debug, Clone)]
pub enum Replay {
    /// Back to `pending`; the record as it now is.
    Replayed(DeliveryRecord),
    /// Still pending: the worker has it already. Nothing changed.
    AlreadyPending(DeliveryRecord),
    /// Its raw body was purged by retention, so there is nothing to process again.
    BodyPurged(DeliveryRecord),
    NotFound,
}

/// Every inbox column but the body, plus the body's size.
#[derive(Debug, FromQueryResult)]
struct Row {
    seq: i64,
    id: String,
    provider: String,
    dedupe_key: String,
    tenant_id: Option<String>,
    link_id: Option<String>,
    path: String,
    headers: String,
    status: String,
    attempts: i32,
    last_error: Option<String>,
    received_at: i64,
    next_attempt_at: i64,
    processed_at: Option<i64>,
    key_id: Option<String>,
    /// Stored bytes: for a sealed body, the sealing overhead included.
    body_size: Option<i64>,
}

fn select_rows() -> Select<inbox::Entity> {
    use inbox::Column as C;
    inbox::Entity::find()
        .select_only()
        .columns([
            C::Seq,
            C::Id,
            C::Provider,
            C::DedupeKey,
            C::TenantId,
            C::LinkId,
            C::Path,
            C::Headers,
            C::Status,
            C::Attempts,
            C::LastError,
            C::ReceivedAt,
            C::NextAttemptAt,
            C::ProcessedAt,
            C::KeyId,
        ])
        // LENGTH counts bytes of a BLOB (SQLite) and of a bytea (PostgreSQL).
        .column_as(Expr::cust("CAST(LENGTH(body) AS BIGINT)"), "body_size")
}

/// `body` as stored (sealed or not); it is opened here.
fn record_from_row(keyring: &Keyring, row: Row, body: Option<Vec<u8>>) -> Result<DeliveryRecord> {
    let link = match (row.tenant_id, row.link_id) {
        (Some(tenant), Some(link)) => Some((
            parse_column("tenant id", &tenant)?,
            parse_column("link id", &link)?,
        )),
        _ => None,
    };
    let key_id = row.key_id.as_deref();
    let headers = open_headers(keyring, &row.id, key_id, &row.headers)?;
    let body = body
        .map(|body| open_body(keyring, &row.id, key_id, body))
        .transpose()?;
    let overhead = if key_id.is_some() { SEAL_OVERHEAD } else { 0 };
    Ok(DeliveryRecord {
        seq: row.seq,
        id: parse_column("delivery id", &row.id)?,
        provider: parse_column("provider", &row.provider)?,
        dedupe_key: row.dedupe_key,
        link,
        path: row.path,
        headers,
        body,
        body_size: row
            .body_size
            .map(|n| (n.max(0) as u64).saturating_sub(overhead as u64)),
        status: row
            .status
            .parse()
            .map_err(|()| StoreError::Corrupt(format!("delivery status `{}`", row.status)))?,
        attempts: row.attempts.max(0) as u32,
        last_error: row.last_error,
        received_at: from_ms(row.received_at),
        next_attempt_at: from_ms(row.next_attempt_at),
        processed_at: row.processed_at.map(from_ms),
    })
}

impl Store {
    /// Deliveries matching `filter`, in receipt order, at most `filter.limit` (at least 1).
    pub async fn list_deliveries(&self, filter: &DeliveryFilter) -> Result<DeliveryPage> {
        let limit = filter.limit.max(1);
        let mut query = select_rows();
        if let Some(status) = filter.status {
            query = query.filter(inbox::Column::Status.eq(status.as_str()));
        }
        if let Some(provider) = &filter.provider {
            query = query.filter(inbox::Column::Provider.eq(provider.to_string()));
        }
        if let Some(link) = &filter.link_id {
            query = query.filter(inbox::Column::LinkId.eq(link.to_string()));
        }
        if let Some(since) = filter.received_since {
            // Receipt times are kept in whole milliseconds: round up so that "at or after"
            // holds for a bound with a fraction of a millisecond.
            let sub_ms = since.timestamp_subsec_nanos() % 1_000_000 != 0;
            let ms = to_ms(since).saturating_add(i64::from(sub_ms));
            query = query.filter(inbox::Column::ReceivedAt.gte(ms));
        }
        if let Some(after) = filter.after_seq {
            query = query.filter(inbox::Column::Seq.gt(after));
        }
        let mut rows = query
            .order_by_asc(inbox::Column::Seq)
            .limit(limit + 1)
            .into_model::<Row>()
            .all(&self.db)
            .await?;
        let more = rows.len() as u64 > limit;
        rows.truncate(limit as usize);
        let next_after = if more {
            rows.last().map(|r| r.seq)
        } else {
            None
        };
        let deliveries = rows
            .into_iter()
            .map(|row| record_from_row(&self.keyring, row, None))
            .collect::<Result<Vec<_>>>()?;
        Ok(DeliveryPage {
            deliveries,
            next_after,
        })
    }

    /// One delivery with its raw body (unless purged).
    pub async fn get_delivery(&self, id: &DeliveryId) -> Result<Option<DeliveryRecord>> {
        get_delivery(&self.db, &self.keyring, id).await
    }

    /// Put a settled delivery (dead, unmatched or done) back to `pending`, with its attempts
    /// reset, due now and unleased, so that a worker processes it again. Its last error is
    /// kept until the next attempt settles it. A pending delivery and one whose body was
    /// purged are left alone.
    pub async fn replay_delivery(&self, id: &DeliveryId) -> Result<Replay> {
        let pending = DeliveryStatus::Pending.as_str();
        // Read back inside the same transaction: once it commits a worker may claim the row at
        // once, and the caller must see the delivery as replayed, not as already re-claimed.
        let txn = self.db.begin().await?;
        let result = inbox::Entity::update_many()
            .col_expr(inbox::Column::Status, pending.into())
            .col_expr(inbox::Column::Attempts, 0i32.into())
            .col_expr(inbox::Column::NextAttemptAt, now_ms().into())
            .col_expr(inbox::Column::LeaseOwner, Option::<String>::None.into())
            .col_expr(inbox::Column::LeaseExpiresAt, Option::<i64>::None.into())
            .col_expr(inbox::Column::ProcessedAt, Option::<i64>::None.into())
            .filter(inbox::Column::Id.eq(id.to_string()))
            .filter(inbox::Column::Status.ne(pending))
            .filter(inbox::Column::Body.is_not_null())
            .exec(&txn)
            .await?;
        let Some(record) = get_delivery(&txn, &self.keyring, id).await? else {
            return Ok(Replay::NotFound);
        };
        txn.commit().await?;
        Ok(if result.rows_affected == 1 {
            Replay::Replayed(record)
        } else if record.body.is_none() {
            Replay::BodyPurged(record)
        } else {
            Replay::AlreadyPending(record)
        })
    }

    /// Drop the raw bodies of deliveries processed (`done`) before `cutoff`; their rows, and
    /// every dead, unmatched or pending body, stay. Returns how many bodies were dropped.
    pub async fn purge_processed_bodies(&self, cutoff: DateTime<Utc>) -> Result<u64> {
        self.purge_bodies(DeliveryStatus::Done, cutoff).await
    }

    /// Drop the raw bodies of deliveries settled with `status` (done, dead or unmatched) before
    /// `cutoff`; their rows, headers and status stay. Pending bodies are never dropped (the
    /// worker still needs them). Returns how many bodies were dropped.
    pub async fn purge_bodies(&self, status: DeliveryStatus, cutoff: DateTime<Utc>) -> Result<u64> {
        if status == DeliveryStatus::Pending {
            return Ok(0);
        }
        let result = inbox::Entity::update_many()
            .col_expr(inbox::Column::Body, Option::<Vec<u8>>::None.into())
            .filter(inbox::Column::Status.eq(status.as_str()))
            .filter(inbox::Column::ProcessedAt.lt(crate::to_ms(cutoff)))
            .filter(inbox::Column::Body.is_not_null())
            .exec(&self.db)
            .await?;
        Ok(result.rows_affected)
    }
}

async fn get_delivery<C: ConnectionTrait>(
    conn: &C,
    keyring: &Keyring,
    id: &DeliveryId,
) -> Result<Option<DeliveryRecord>> {
    let Some(model) = inbox::Entity::find()
        .filter(inbox::Column::Id.eq(id.to_string()))
        .one(conn)
        .await?
    else {
        return Ok(None);
    };
    let body_size = model.body.as_ref().map(|b| b.len() as i64);
    let row = Row {
        seq: model.seq,
        id: model.id,
        provider: model.provider,
        dedupe_key: model.dedupe_key,
        tenant_id: model.tenant_id,
        link_id: model.link_id,
        path: model.path,
        headers: model.headers,
        status: model.status,
        attempts: model.attempts,
        last_error: model.last_error,
        received_at: model.received_at,
        next_attempt_at: model.next_attempt_at,
        processed_at: model.processed_at,
        key_id: model.key_id,
        body_size,
    };
    record_from_row(keyring, row, model.body).map(Some)
}
