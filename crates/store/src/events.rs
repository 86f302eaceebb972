//! The append-only event log. A cursor is the event's position in one global sequence; each
//! tenant sees the subsequence of its own events, in cursor order.

use chrono::{DateTime, Utc};
use coverwatch_core::ids::DeliveryId;
use coverwatch_core::{
    Event, EventId, EventKind, EventPayload, Link, LinkId, ProviderDetail, TenantId, UserId,
};
use futures::StreamExt;
use sea_orm::sea_query::Query;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseBackend, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, QueryTrait, Set, Statement,
};

use crate::entities::event;
use crate::{Keyring, Result, Store, StoreError, from_ms, now_ms, parse_column, parse_json, to_ms};

/// An event to append; the store adds the cursor, the ids of its link and the time recorded.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub payload: EventPayload,
    pub detail: ProviderDetail,
    pub occurred_at: DateTime<Utc>,
    /// The inbox delivery that caused it, if any.
    pub delivery_id: Option<DeliveryId>,
}

impl NewEvent {
    pub fn now(payload: EventPayload) -> Self {
        Self {
            payload,
            detail: ProviderDetail::None,
            occurred_at: Utc::now(),
            delivery_id: None,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub link_id: Option<LinkId>,
    pub user_id: Option<UserId>,
    /// Empty means every kind.
    pub kinds: Vec<EventKind>,
}

/// A PostgreSQL advisory-lock key, taken by every transaction that appends events.
///
/// A sequence hands out numbers at insert time but transactions commit in any order, so a
/// reader could see cursor 11 committed while 10 is still in flight, move past 10 and never see
/// it. Holding this lock from the insert until commit makes commit order equal cursor order.
/// Transactions that append events are short (no vendor calls inside), so the queue is short;
/// a batch shortens its turn further by taking the lock only to append its events and commit
/// (see [`insert_pending_events`]).
const EVENT_APPEND_LOCK: i64 = 0x636f_7665_7277_6174; // "coverwat"

/// The PostgreSQL channel on which committed event cursors are announced.
pub const EVENTS_CHANNEL: &str = "coverwatch_events";

/// What binds an event's sealed values to its row.
fn event_aad(id: &str) -> Vec<u8> {
    format!("event:{id}").into_bytes()
}

/// The kinds of event whose payload carries a URL that grants access.
pub(crate) const KINDS_WITH_SECRET_URL: [EventKind; 2] =
    [EventKind::SessionOpened, EventKind::ReconnectRequired];

/// The URL in a payload that grants access: a session URL (Axle's Ignition URI carries the
/// session token, Canopy's reconnect URL its reconnect token) or a reconnect URL.
pub(crate) fn secret_url(payload: &mut EventPayload) -> Option<&mut String> {
    match payload {
        EventPayload::SessionOpened { url, .. }
        | EventPayload::ReconnectRequired {
            reconnect_url: Some(url),
            ..
        } => Some(url),
        _ => None,
    }
}

/// The payload as stored: a value that grants access (a reconnect URL carries its reconnect
/// token) is sealed in place; callers still receive it in clear.
pub(crate) fn seal_payload(keyring: &Keyring, id: &str, payload: &EventPayload) -> Result<String> {
    let mut stored = payload.clone();
    if let Some(url) = secret_url(&mut stored) {
        *url = keyring.seal_text(url, &event_aad(id))?;
    }
    serde_json::to_string(&stored).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// The payload as callers see it, sealed values opened.
pub(crate) fn open_payload(keyring: &Keyring, id: &str, stored: &str) -> Result<EventPayload> {
    let mut payload: EventPayload = parse_json("event payload", stored)?;
    if let Some(url) = secret_url(&mut payload) {
        *url = keyring.open_text(url, &event_aad(id))?;
    }
    Ok(payload)
}

pub(crate) async fn insert_event<C: ConnectionTrait>(
    conn: &C,
    keyring: &Keyring,
    link: &Link,
    new: NewEvent,
) -> Result<Event> {
    let pending = PendingEvent::seal(keyring, link, new)?;
    let id = pending.event.id;
    insert_pending_events(conn, vec![pending])
        .await?
        .pop()
        .ok_or_else(|| StoreError::Database(format!("event {id} was not written")))
}

/// An event sealed and ready to be written, still without its cursor: a batch holds its
/// deliveries' events until it commits (see [`insert_pending_events`]).
#[derive(Debug, Clone)]
pub(crate) struct PendingEvent {
    row: event::ActiveModel,
    /// The event as its caller sees it, `cursor` 0 until it is written.
    event: Event,
}

impl PendingEvent {
    pub(crate) fn seal(keyring: &Keyring, link: &Link, new: NewEvent) -> Result<Self> {
        let id = EventId::new();
        let recorded_at = now_ms();
        let payload = seal_payload(keyring, &id.to_string(), &new.payload)?;
        let detail =
            serde_json::to_string(&new.detail).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let row = event::ActiveModel {
            cursor: sea_orm::NotSet,
            id: Set(id.to_string()),
            tenant_id: Set(link.tenant_id.to_string()),
            link_id: Set(link.id.to_string()),
            user_id: Set(link.user_id.to_string()),
            provider: Set(link.provider.to_string()),
            kind: Set(new.payload.kind().to_string()),
            occurred_at: Set(to_ms(new.occurred_at)),
            recorded_at: Set(recorded_at),
            payload: Set(payload),
            detail: Set(detail),
            delivery_id: Set(new.delivery_id.map(|d| d.to_string())),
        };
        let event = Event {
            cursor: 0,
            id,
            tenant_id: link.tenant_id.clone(),
            link_id: link.id,
            user_id: link.user_id.clone(),
            provider: link.provider.clone(),
            occurred_at: new.occurred_at,
            recorded_at: from_ms(recorded_at),
            payload: new.payload,
            detail: new.detail,
        };
        Ok(Self { row, event })
    }

    /// The event as its caller sees it; its cursor is 0 until it is written.
    pub(crate) fn event(&self) -> &Event {
        &self.event
    }
}

/// Rows per insert of pending events: 12 values each, well below SQLite's limit of 32,766
/// bound variables per statement.
const PENDING_EVENTS_PER_INSERT: usize = 500;

/// Write `pending` in their order, taking the cursor-order lock first: the caller commits right
/// after (nothing else may follow in the transaction, since every statement after this one
/// lengthens the time other appenders wait). Returns the events with their cursors.
///
/// Why this keeps cursor order equal to commit order although the batch did all of its other
/// work without the lock: cursors are handed out only here, with the lock held, and the lock
/// is held until commit. So every cursor below ours was handed out to a transaction that
/// released the lock (committed or rolled back) before we took it, and none above ours can
/// commit before us. Nothing in the batch reads its own events before commit, so holding them
/// in memory until now changes nothing the batch sees.
pub(crate) async fn insert_pending_events<C: ConnectionTrait>(
    conn: &C,
    pending: Vec<PendingEvent>,
) -> Result<Vec<Event>> {
    if pending.is_empty() {
        return Ok(Vec::new());
    }
    if conn.get_database_backend() == DatabaseBackend::Postgres {
        return insert_pending_events_postgres(conn, pending).await;
    }
    let mut written = Vec::with_capacity(pending.len());
    for chunk in pending.chunks(PENDING_EVENTS_PER_INSERT) {
        let mut insert =
            event::Entity::insert_many(chunk.iter().map(|p| p.row.clone())).into_query();
        insert.returning(Query::returning().columns([event::Column::Id, event::Column::Cursor]));
        let rows = conn
            .query_all(conn.get_database_backend().build(&insert))
            .await?;
        written.extend(with_cursors(chunk, rows)?);
    }
    Ok(written)
}

/// The lock, the insert and the notification of [`insert_pending_events`] in one statement:
/// three round trips were three waits for every other appender, since the lock is held from the
/// first of them to the commit.
///
/// The lock is taken before any cursor is drawn: the rows to insert come out of a join with the
/// one-row `locked`, which cannot yield a row before `locked` is computed, and the cursors are
/// drawn (the column's default) as the rows reach the insert, in the events' order (`ORDER BY
/// n`). The notification names the highest cursor written, once.
const INSERT_PENDING_EVENTS_POSTGRES: &str = "WITH locked AS MATERIALIZED (SELECT pg_advisory_xact_lock($1) AS held), \
     written AS (INSERT INTO events (id, tenant_id, link_id, user_id, provider, kind, occurred_at, \
         recorded_at, payload, detail, delivery_id) \
       SELECT e.r->>'id', e.r->>'tenant_id', e.r->>'link_id', e.r->>'user_id', e.r->>'provider', \
         e.r->>'kind', (e.r->>'occurred_at')::int8, (e.r->>'recorded_at')::int8, e.r->>'payload', \
         e.r->>'detail', e.r->>'delivery_id' \
       FROM locked, jsonb_array_elements($2::text::jsonb) WITH ORDINALITY AS e(r, n) \
       ORDER BY e.n \
       RETURNING id, cursor), \
     notified AS MATERIALIZED (SELECT pg_notify($3, max(cursor)::text) FROM written) \
     SELECT written.id, written.cursor FROM written, notified";

async fn insert_pending_events_postgres<C: ConnectionTrait>(
    conn: &C,
    pending: Vec<PendingEvent>,
) -> Result<Vec<Event>> {
    fn set<T: Clone + Into<sea_orm::Value>>(value: &sea_orm::ActiveValue<T>) -> Option<T> {
        value.try_as_ref().cloned()
    }
    let rows: Vec<serde_json::Value> = pending
        .iter()
        .map(|p| {
            let r = &p.row;
            serde_json::json!({
                "id": set(&r.id),
                "tenant_id": set(&r.tenant_id),
                "link_id": set(&r.link_id),
                "user_id": set(&r.user_id),
                "provider": set(&r.provider),
                "kind": set(&r.kind),
                "occurred_at": set(&r.occurred_at),
                "recorded_at": set(&r.recorded_at),
                "payload": set(&r.payload),
                "detail": set(&r.detail),
                "delivery_id": set(&r.delivery_id).flatten(),
            })
        })
        .collect();
    let rows = conn
        .query_all(Statement::from_sql_and_values(
            DatabaseBackend::Postgres,
            INSERT_PENDING_EVENTS_POSTGRES,
            [
                EVENT_APPEND_LOCK.into(),
                serde_json::Value::Array(rows).to_string().into(),
                EVENTS_CHANNEL.into(),
            ],
        ))
        .await?;
    with_cursors(&pending, rows)
}

/// `pending` with the cursors `rows` (id, cursor) gave them, in `pending`'s order; each must
/// have been written.
fn with_cursors(pending: &[PendingEvent], rows: Vec<sea_orm::QueryResult>) -> Result<Vec<Event>> {
    let mut cursors = std::collections::HashMap::with_capacity(rows.len());
    for row in rows {
        cursors.insert(
            row.try_get::<String>("", "id")?,
            row.try_get::<i64>("", "cursor")?,
        );
    }
    pending
        .iter()
        .map(|p| {
            let cursor = *cursors.get(&p.event.id.to_string()).ok_or_else(|| {
                StoreError::Database(format!("event {} was not written", p.event.id))
            })?;
            Ok(Event {
                cursor,
                ..p.event.clone()
            })
        })
        .collect()
}

/// A stored event as read, before its payload is opened and its columns parsed.
#[derive(Debug, Clone)]
pub struct LoggedEvent {
    row: event::Model,
}

impl LoggedEvent {
    pub fn cursor(&self) -> i64 {
        self.row.cursor
    }

    /// The event's link; `None` only for a row whose column does not parse (opening the event
    /// reports that).
    pub fn link_id(&self) -> Option<LinkId> {
        self.row.link_id.parse().ok()
    }

    /// Whether a query of `tenant` with `filter` would return this event; the same test the
    /// `list_events` query makes, on the stored columns.
    pub fn matches(&self, tenant: &TenantId, filter: &EventFilter) -> bool {
        self.row.tenant_id == tenant.as_str()
            && filter
                .link_id
                .as_ref()
                .is_none_or(|link| self.row.link_id == link.to_string())
            && filter
                .user_id
                .as_ref()
                .is_none_or(|user| self.row.user_id == user.as_str())
            && (filter.kinds.is_empty() || filter.kinds.iter().any(|k| self.row.kind == k.as_str()))
    }
}

fn event_from_model(keyring: &Keyring, model: event::Model) -> Result<Event> {
    Ok(Event {
        payload: open_payload(keyring, &model.id, &model.payload)?,
        cursor: model.cursor,
        id: parse_column("event id", &model.id)?,
        tenant_id: parse_column("tenant id", &model.tenant_id)?,
        link_id: parse_column("link id", &model.link_id)?,
        user_id: parse_column("user id", &model.user_id)?,
        provider: parse_column("provider", &model.provider)?,
        occurred_at: from_ms(model.occurred_at),
        recorded_at: from_ms(model.recorded_at),
        detail: parse_json("event detail", &model.detail)?,
    })
}

impl Store {
    /// Events of `tenant` after `after`, oldest first.
    ///
    /// Each filter is answered from one ordered index range (see migration m0006): by link
    /// `(link_id, cursor)`, by user `(tenant_id, user_id, cursor)`, by one kind
    /// `(tenant_id, kind, cursor)`. Several kinds are one range each, merged: a single
    /// `kind IN (…) ORDER BY cursor` cannot walk one index in cursor order, and PostgreSQL would
    /// collect and sort every matching event of the tenant to return the first page.
    pub async fn list_events(
        &self,
        tenant: &TenantId,
        after: i64,
        filter: &EventFilter,
        limit: u64,
    ) -> Result<Vec<Event>> {
        let base = || {
            let mut query = event::Entity::find()
                .filter(event::Column::TenantId.eq(tenant.as_str()))
                .filter(event::Column::Cursor.gt(after));
            if let Some(link) = &filter.link_id {
                query = query.filter(event::Column::LinkId.eq(link.to_string()));
            }
            if let Some(user) = &filter.user_id {
                query = query.filter(event::Column::UserId.eq(user.as_str()));
            }
            query.order_by_asc(event::Column::Cursor).limit(limit)
        };
        let mut kinds: Vec<&str> = filter.kinds.iter().map(|k| k.as_str()).collect();
        kinds.sort_unstable();
        kinds.dedup();
        // A link's or a user's events are few: one range, the kinds filtered along it.
        let narrow = filter.link_id.is_some() || filter.user_id.is_some();
        let rows = if kinds.len() <= 1 || narrow {
            let mut query = base();
            match kinds.as_slice() {
                [] => {}
                [kind] => query = query.filter(event::Column::Kind.eq(*kind)),
                _ => query = query.filter(event::Column::Kind.is_in(kinds.iter().copied())),
            }
            query.all(&self.db).await?
        } else {
            use sea_orm::QueryTrait;
            use sea_orm::sea_query::{Alias, Asterisk, Expr, Order, Query, UnionType};
            let range = |i: usize, kind: &str| {
                Query::select()
                    .column(Asterisk)
                    .from_subquery(
                        base().filter(event::Column::Kind.eq(kind)).into_query(),
                        Alias::new(format!("k{i}")),
                    )
                    .to_owned()
            };
            let mut union = range(0, kinds[0]);
            for (i, kind) in kinds.iter().enumerate().skip(1) {
                union.union(UnionType::All, range(i, kind));
            }
            union
                .order_by_expr(Expr::col(Alias::new("cursor")).into(), Order::Asc)
                .limit(limit);
            // Values inlined (escaped by the query builder; a tenant id and kind names are
            // validated identifiers anyway): with bind parameters PostgreSQL soon switches to a
            // generic plan, which prices each branch's `LIMIT $n` as a tenth of the table and
            // picks a scan and sort of every matching event (40 ms at 100k events, measured).
            let backend = self.db.get_database_backend();
            let sql = match backend {
                DatabaseBackend::Postgres => {
                    union.to_string(sea_orm::sea_query::PostgresQueryBuilder)
                }
                DatabaseBackend::Sqlite => union.to_string(sea_orm::sea_query::SqliteQueryBuilder),
                DatabaseBackend::MySql => union.to_string(sea_orm::sea_query::MysqlQueryBuilder),
            };
            let statement = Statement::from_string(backend, sql);
            event::Entity::find()
                .from_raw_sql(statement)
                .all(&self.db)
                .await?
        };
        rows.into_iter()
            .map(|row| event_from_model(&self.keyring, row))
            .collect()
    }

    /// Every tenant's events after `after`, oldest first, unopened: a process-wide reader fans
    /// them out to streams and opens only those some stream wants (see [`LoggedEvent`]).
    pub async fn events_after_any_tenant(
        &self,
        after: i64,
        limit: u64,
    ) -> Result<Vec<LoggedEvent>> {
        Ok(event::Entity::find()
            .filter(event::Column::Cursor.gt(after))
            .order_by_asc(event::Column::Cursor)
            .limit(limit)
            .all(&self.db)
            .await?
            .into_iter()
            .map(|row| LoggedEvent { row })
            .collect())
    }

    /// The event as callers see it (sealed values opened).
    pub fn open_event(&self, event: &LoggedEvent) -> Result<Event> {
        event_from_model(&self.keyring, event.row.clone())
    }

    /// Committed event cursors as other processes (replicas) write them; `None` on SQLite,
    /// where every writer is this process. The stream ends when the connection is lost; the
    /// caller listens again.
    pub async fn listen_for_events(
        &self,
    ) -> Result<Option<impl futures::Stream<Item = Result<i64>> + Send + use<>>> {
        if self.backend() != DatabaseBackend::Postgres {
            return Ok(None);
        }
        let pool = self.db.get_postgres_connection_pool();
        let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
        listener.listen(EVENTS_CHANNEL).await?;
        Ok(Some(listener.into_stream().map(|item| {
            let notification = item?;
            notification.payload().parse::<i64>().map_err(|_| {
                StoreError::Corrupt(format!("event notification `{}`", notification.payload()))
            })
        })))
    }

    /// The highest cursor written so far (0 when there is none).
    pub async fn latest_cursor(&self) -> Result<i64> {
        let row = event::Entity::find()
            .select_only()
            .column_as(event::Column::Cursor.max(), "max")
            .into_tuple::<Option<i64>>()
            .one(&self.db)
            .await?;
        Ok(row.flatten().unwrap_or(0))
    }
}
