//! The inbox: raw vendor deliveries, stored before we acknowledge them and worked off by leased
//! workers. A row leaves `pending` only by being processed (`done`), given up on (`dead`), or
//! matching no link (`unmatched`); every one of those keeps the raw delivery.

use chrono::{DateTime, Utc};
use coverwatch_core::ids::{ConnectionId, DeliveryId};
use coverwatch_core::{LinkId, ProviderId, TenantId};
use sea_orm::{ColumnTrait, ConnectionTrait, DatabaseBackend, EntityTrait, QueryFilter, Statement};

use crate::entities::inbox;
use base64::Engine as _;

use crate::{Keyring, Result, Store, StoreError, from_ms, now_ms, parse_column, parse_json, to_ms};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryStatus {
    Pending,
    Done,
    Dead,
    Unmatched,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Done => "done",
            DeliveryStatus::Dead => "dead",
            DeliveryStatus::Unmatched => "unmatched",
        }
    }
}

impl std::str::FromStr for DeliveryStatus {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        [
            DeliveryStatus::Pending,
            DeliveryStatus::Done,
            DeliveryStatus::Dead,
            DeliveryStatus::Unmatched,
        ]
        .into_iter()
        .find(|status| status.as_str() == s)
        .ok_or(())
    }
}

#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub provider: ProviderId,
    /// The vendor's event id, else a hash of the raw body: the same delivery twice is one row.
    pub dedupe_key: String,
    /// Known at receipt when the delivery's URL names its link.
    pub link: Option<(TenantId, LinkId)>,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub received_at: DateTime<Utc>,
    /// W3C `traceparent` of the ingest span, so that processing continues its trace.
    pub trace_context: Option<String>,
    /// The vendor connection whose endpoint took it; `None`: the deployment's default.
    pub connection_id: Option<ConnectionId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingested {
    Stored(DeliveryId),
    /// Already in the inbox; nothing new was written.
    Duplicate,
}

/// A delivery a worker holds a lease on.
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    pub id: DeliveryId,
    pub provider: ProviderId,
    pub link: Option<(TenantId, LinkId)>,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub received_at: DateTime<Utc>,
    /// Including this one.
    pub attempts: u32,
    /// W3C `traceparent` of the span that ingested it, if traced.
    pub trace_context: Option<String>,
    /// Position in receipt order.
    pub seq: i64,
    /// The vendor connection whose endpoint took it (its provider parses it, and only that
    /// connection's links can be named by it); `None`: the deployment's default.
    pub connection_id: Option<ConnectionId>,
}

fn claimed_from_model(keyring: &Keyring, model: inbox::Model) -> Result<ClaimedDelivery> {
    let link = match (model.tenant_id, model.link_id) {
        (Some(tenant), Some(link)) => Some((
            parse_column("tenant id", &tenant)?,
            parse_column("link id", &link)?,
        )),
        _ => None,
    };
    let key_id = model.key_id.as_deref();
    Ok(ClaimedDelivery {
        headers: open_headers(keyring, &model.id, key_id, &model.headers)?,
        body: match model.body {
            Some(body) => open_body(keyring, &model.id, key_id, body)?,
            None => Vec::new(),
        },
        id: parse_column("delivery id", &model.id)?,
        provider: parse_column("provider", &model.provider)?,
        link,
        path: model.path,
        received_at: from_ms(model.received_at),
        attempts: model.attempts.max(0) as u32,
        trace_context: model.trace_context,
        seq: model.seq,
        connection_id: model
            .connection_id
            .as_deref()
            .map(|id| parse_column("connection id", id))
            .transpose()?,
    })
}

/// What binds a delivery's sealed headers or body to its row, so that neither can be moved to
/// another delivery (or swapped with the other) without failing to open.
fn delivery_aad(id: &str, part: &str) -> Vec<u8> {
    format!("inbox:{id}:{part}").into_bytes()
}

/// A delivery's headers and body as stored: the key id, the headers column (base64 of the
/// sealed JSON) and the sealed body.
pub(crate) fn seal_delivery(
    keyring: &Keyring,
    id: &str,
    headers: &[(String, String)],
    body: Option<&[u8]>,
) -> Result<(String, String, Option<Vec<u8>>)> {
    let json = serde_json::to_vec(headers).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let (key_id, sealed_headers) = keyring.seal(&json, &delivery_aad(id, "headers"))?;
    let sealed_body = body
        .map(|body| {
            keyring
                .seal(body, &delivery_aad(id, "body"))
                .map(|(_, blob)| blob)
        })
        .transpose()?;
    Ok((
        key_id,
        base64::engine::general_purpose::STANDARD.encode(sealed_headers),
        sealed_body,
    ))
}

/// The headers of a stored delivery; `key_id` `None`: stored in plaintext (before sealing).
pub(crate) fn open_headers(
    keyring: &Keyring,
    id: &str,
    key_id: Option<&str>,
    stored: &str,
) -> Result<Vec<(String, String)>> {
    let Some(key_id) = key_id else {
        return parse_json("delivery headers", stored);
    };
    let blob = base64::engine::general_purpose::STANDARD
        .decode(stored)
        .map_err(|_| StoreError::Corrupt(format!("sealed headers of delivery {id}")))?;
    let json = keyring.open(key_id, &blob, &delivery_aad(id, "headers"))?;
    serde_json::from_slice(&json).map_err(|e| StoreError::Corrupt(format!("delivery headers: {e}")))
}

/// The raw body of a stored delivery, opened when it was sealed.
pub(crate) fn open_body(
    keyring: &Keyring,
    id: &str,
    key_id: Option<&str>,
    stored: Vec<u8>,
) -> Result<Vec<u8>> {
    match key_id {
        Some(key_id) => Ok(keyring.open(key_id, &stored, &delivery_aad(id, "body"))?),
        None => Ok(stored),
    }
}

const CLAIM_SQLITE: &str = "UPDATE inbox SET lease_owner = ?, lease_expires_at = ?, attempts = attempts + 1 \
     WHERE seq IN (SELECT i.seq FROM inbox i WHERE i.status = 'pending' AND i.next_attempt_at <= ? \
       AND (i.lease_expires_at IS NULL OR i.lease_expires_at < ?) \
       AND (i.link_id IS NULL OR NOT EXISTS (SELECT 1 FROM inbox e WHERE e.link_id = i.link_id \
             AND e.status = 'pending' AND e.seq < i.seq)) \
       ORDER BY i.seq LIMIT ?) \
     RETURNING *";

// SKIP LOCKED lets replicas claim side by side without waiting on each other's rows.
const CLAIM_POSTGRES: &str = "UPDATE inbox SET lease_owner = $1, lease_expires_at = $2, attempts = attempts + 1 \
     WHERE seq IN (SELECT i.seq FROM inbox i WHERE i.status = 'pending' AND i.next_attempt_at <= $3 \
       AND (i.lease_expires_at IS NULL OR i.lease_expires_at < $4) \
       AND (i.link_id IS NULL OR NOT EXISTS (SELECT 1 FROM inbox e WHERE e.link_id = i.link_id \
             AND e.status = 'pending' AND e.seq < i.seq)) \
       ORDER BY i.seq LIMIT $5 FOR UPDATE SKIP LOCKED) \
     RETURNING *";

const CLAIM_NEXT_OF_LINK_SQLITE: &str = "UPDATE inbox SET lease_owner = ?, lease_expires_at = ?, attempts = attempts + 1 \
     WHERE seq = (SELECT i.seq FROM inbox i WHERE i.link_id = ? AND i.status = 'pending' ORDER BY i.seq LIMIT 1) \
       AND next_attempt_at <= ? AND (lease_expires_at IS NULL OR lease_expires_at < ?) \
     RETURNING *";

// No SKIP LOCKED here: it would pass over the oldest delivery while another worker is claiming
// it and lease the one behind it, two of the link's deliveries at once. Updating the oldest row
// itself waits for such a claim and then finds it leased.
const CLAIM_NEXT_OF_LINK_POSTGRES: &str = "UPDATE inbox SET lease_owner = $1, lease_expires_at = $2, attempts = attempts + 1 \
     WHERE seq = (SELECT i.seq FROM inbox i WHERE i.link_id = $3 AND i.status = 'pending' ORDER BY i.seq LIMIT 1) \
       AND next_attempt_at <= $4 AND (lease_expires_at IS NULL OR lease_expires_at < $5) \
     RETURNING *";

/// [`CLAIM_NEXT_OF_LINK_POSTGRES`] for several links in one statement: the oldest pending
/// delivery of each, under the same conditions (no SKIP LOCKED, for the same reason; a row
/// settled meanwhile by whoever held it is not leased again). `{links}` is a list of
/// placeholders from the fifth on.
///
/// Written so that its plan cannot go wrong: each link's oldest pending delivery is one probe of
/// `inbox_pending_by_link`, found once (a materialized CTE), then each row is taken by its key.
/// Written as `seq IN (SELECT min(seq) … GROUP BY link_id)`, the planner, trusting estimates of
/// one pending row, chose a nested loop that ran the grouping once per pending delivery of the
/// whole inbox: 7 ms on average and up to 200 ms a claim during a burst of 2,000 deliveries, the
/// largest single cost of processing them.
const CLAIM_NEXT_OF_LINKS_POSTGRES: &str = "WITH next AS MATERIALIZED ( \
       SELECT (SELECT i.seq FROM inbox i WHERE i.link_id = l.id AND i.status = 'pending' ORDER BY i.seq LIMIT 1) AS seq \
       FROM unnest(ARRAY[{links}]::text[]) AS l(id)) \
     UPDATE inbox SET lease_owner = $1, lease_expires_at = $2, attempts = inbox.attempts + 1 \
     FROM next WHERE inbox.seq = next.seq \
       AND inbox.status = 'pending' AND inbox.next_attempt_at <= $3 \
       AND (inbox.lease_expires_at IS NULL OR inbox.lease_expires_at < $4) \
     RETURNING inbox.*";

const CLAIM_NEXT_OF_LINKS_SQLITE: &str = "UPDATE inbox SET lease_owner = ?, lease_expires_at = ?, attempts = attempts + 1 \
     WHERE seq IN (SELECT min(i.seq) FROM inbox i WHERE i.link_id IN ({links}) AND i.status = 'pending' GROUP BY i.link_id) \
       AND status = 'pending' AND next_attempt_at <= ? AND (lease_expires_at IS NULL OR lease_expires_at < ?) \
     RETURNING *";

impl Store {
    /// [`Store::claim_next_of_link`] for each of `links`, in one round trip: the deliveries
    /// leased, in receipt order (at most one per link).
    pub async fn claim_next_of_links(
        &self,
        owner: &str,
        links: &[LinkId],
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<ClaimedDelivery>> {
        if links.is_empty() {
            return Ok(Vec::new());
        }
        let now = now_ms();
        let backend = self.backend();
        let (sql, placeholders) = match backend {
            DatabaseBackend::Postgres => (
                CLAIM_NEXT_OF_LINKS_POSTGRES,
                (0..links.len())
                    .map(|i| format!("${}", i + 5))
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            _ => (
                CLAIM_NEXT_OF_LINKS_SQLITE,
                vec!["?"; links.len()].join(", "),
            ),
        };
        let mut values: Vec<sea_orm::Value> = vec![owner.into(), to_ms(lease_until).into()];
        let times = [now.into(), now.into()];
        let links = links.iter().map(|link| link.to_string().into());
        // PostgreSQL's placeholders are numbered (the links' from $5 on); SQLite's `?` are
        // taken in the order they appear, and the links' come before the times'.
        match backend {
            DatabaseBackend::Postgres => {
                values.extend(times);
                values.extend(links);
            }
            _ => {
                values.extend(links);
                values.extend(times);
            }
        }
        let stmt =
            Statement::from_sql_and_values(backend, sql.replace("{links}", &placeholders), values);
        let mut rows = inbox::Entity::find()
            .from_raw_sql(stmt)
            .all(&self.db)
            .await?;
        rows.sort_by_key(|row| row.seq);
        rows.into_iter()
            .map(|row| claimed_from_model(&self.keyring, row))
            .collect()
    }

    /// Lease the link's oldest pending delivery, if it is ready and nobody holds it: a worker
    /// that has just settled one of the link's deliveries goes on with the next without a full
    /// claim, which would scan past every delivery waiting behind it.
    pub async fn claim_next_of_link(
        &self,
        owner: &str,
        link: &LinkId,
        lease_until: DateTime<Utc>,
    ) -> Result<Option<ClaimedDelivery>> {
        let now = now_ms();
        let backend = self.backend();
        let sql = match backend {
            DatabaseBackend::Postgres => CLAIM_NEXT_OF_LINK_POSTGRES,
            _ => CLAIM_NEXT_OF_LINK_SQLITE,
        };
        let stmt = Statement::from_sql_and_values(
            backend,
            sql,
            [
                owner.into(),
                to_ms(lease_until).into(),
                link.to_string().into(),
                now.into(),
                now.into(),
            ],
        );
        inbox::Entity::find()
            .from_raw_sql(stmt)
            .one(&self.db)
            .await?
            .map(|row| claimed_from_model(&self.keyring, row))
            .transpose()
    }

    /// Store a delivery in one statement; a second copy of the same delivery writes nothing.
    /// Its headers and body are sealed with the active key (they can carry webhook secrets and
    /// one-time codes); the dedupe key must therefore not be derived from secrets in clear.
    /// Webhooks go through [`Store::ingest_queue`] instead, which commits them in groups.
    pub async fn ingest_delivery(&self, new: NewDelivery) -> Result<Ingested> {
        let prepared = self.prepare_delivery(new)?;
        self.ingest_prepared(prepared).await
    }

    /// Lease up to `limit` ready deliveries for `owner` until `lease_until`, oldest first, never
    /// more than one per link at a time, and never one whose link has an older one pending.
    pub async fn claim_deliveries(
        &self,
        owner: &str,
        lease_until: DateTime<Utc>,
        limit: u64,
    ) -> Result<Vec<ClaimedDelivery>> {
        let now = now_ms();
        let backend = self.backend();
        let sql = match backend {
            DatabaseBackend::Postgres => CLAIM_POSTGRES,
            _ => CLAIM_SQLITE,
        };
        let stmt = Statement::from_sql_and_values(
            backend,
            sql,
            [
                owner.into(),
                to_ms(lease_until).into(),
                now.into(),
                now.into(),
                (limit as i64).into(),
            ],
        );
        let mut rows = inbox::Entity::find()
            .from_raw_sql(stmt)
            .all(&self.db)
            .await?;
        rows.sort_by_key(|row| row.seq);
        rows.into_iter()
            .map(|row| claimed_from_model(&self.keyring, row))
            .collect()
    }

    /// How many deliveries of `provider` the inbox holds, whatever their status.
    pub async fn count_deliveries(&self, provider: ProviderId) -> Result<u64> {
        use sea_orm::PaginatorTrait;
        Ok(inbox::Entity::find()
            .filter(inbox::Column::Provider.eq(provider.to_string()))
            .count(&self.db)
            .await?)
    }

    /// How many deliveries wait to be processed (or to be tried again), across providers.
    pub async fn count_pending_deliveries(&self) -> Result<u64> {
        use sea_orm::PaginatorTrait;
        Ok(inbox::Entity::find()
            .filter(inbox::Column::Status.eq(DeliveryStatus::Pending.as_str()))
            .count(&self.db)
            .await?)
    }

    /// Extend the leases `owner` still holds on `ids` to `until` (settled ones are left alone).
    pub async fn renew_leases(
        &self,
        owner: &str,
        ids: &[DeliveryId],
        until: DateTime<Utc>,
    ) -> Result<u64> {
        let result = inbox::Entity::update_many()
            .col_expr(inbox::Column::LeaseExpiresAt, Some(to_ms(until)).into())
            .filter(inbox::Column::LeaseOwner.eq(owner))
            .filter(inbox::Column::Id.is_in(ids.iter().map(|id| id.to_string())))
            .exec(&self.db)
            .await?;
        Ok(result.rows_affected)
    }

    /// Give a leased delivery back to be tried again at `retry_at`.
    pub async fn retry_delivery(
        &self,
        id: &DeliveryId,
        owner: &str,
        error: &str,
        retry_at: DateTime<Utc>,
    ) -> Result<bool> {
        retry(&self.db, id, owner, error, retry_at).await
    }

    /// Settle a leased delivery outside a link transaction (dead-lettered or unmatched).
    pub async fn settle_delivery(
        &self,
        id: &DeliveryId,
        owner: &str,
        status: DeliveryStatus,
        error: Option<&str>,
    ) -> Result<bool> {
        settle(&self.db, id, owner, status, error).await
    }
}

/// Mark a leased delivery settled, only while `owner` still holds its lease: a worker whose
/// lease expired and was taken over must not settle what the new owner is working on.
pub(crate) async fn settle<C: ConnectionTrait>(
    conn: &C,
    id: &DeliveryId,
    owner: &str,
    status: DeliveryStatus,
    error: Option<&str>,
) -> Result<bool> {
    let result = inbox::Entity::update_many()
        .col_expr(inbox::Column::Status, status.as_str().into())
        .col_expr(inbox::Column::ProcessedAt, Some(now_ms()).into())
        .col_expr(inbox::Column::LastError, error.map(str::to_owned).into())
        .col_expr(inbox::Column::LeaseOwner, Option::<String>::None.into())
        .col_expr(inbox::Column::LeaseExpiresAt, Option::<i64>::None.into())
        .filter(inbox::Column::Id.eq(id.to_string()))
        .filter(inbox::Column::LeaseOwner.eq(owner))
        .exec(conn)
        .await?;
    Ok(result.rows_affected == 1)
}

/// [`settle`], attributing the delivery to `link` in the same statement.
pub(crate) async fn settle_attributed<C: ConnectionTrait>(
    conn: &C,
    id: &DeliveryId,
    owner: &str,
    status: DeliveryStatus,
    tenant: &TenantId,
    link: &LinkId,
) -> Result<bool> {
    let result = inbox::Entity::update_many()
        .col_expr(inbox::Column::TenantId, Some(tenant.to_string()).into())
        .col_expr(inbox::Column::LinkId, Some(link.to_string()).into())
        .col_expr(inbox::Column::Status, status.as_str().into())
        .col_expr(inbox::Column::ProcessedAt, Some(now_ms()).into())
        .col_expr(inbox::Column::LastError, Option::<String>::None.into())
        .col_expr(inbox::Column::LeaseOwner, Option::<String>::None.into())
        .col_expr(inbox::Column::LeaseExpiresAt, Option::<i64>::None.into())
        .filter(inbox::Column::Id.eq(id.to_string()))
        .filter(inbox::Column::LeaseOwner.eq(owner))
        .exec(conn)
        .await?;
    Ok(result.rows_affected == 1)
}

/// Put a leased delivery back for another attempt at `retry_at`, only while `owner` still holds
/// its lease.
pub(crate) async fn retry<C: ConnectionTrait>(
    conn: &C,
    id: &DeliveryId,
    owner: &str,
    error: &str,
    retry_at: DateTime<Utc>,
) -> Result<bool> {
    let result = inbox::Entity::update_many()
        .col_expr(inbox::Column::NextAttemptAt, to_ms(retry_at).into())
        .col_expr(inbox::Column::LastError, Some(error.to_owned()).into())
        .col_expr(inbox::Column::LeaseOwner, Option::<String>::None.into())
        .col_expr(inbox::Column::LeaseExpiresAt, Option::<i64>::None.into())
        .filter(inbox::Column::Id.eq(id.to_string()))
        .filter(inbox::Column::LeaseOwner.eq(owner))
        .exec(conn)
        .await?;
    Ok(result.rows_affected == 1)
}

/// What becomes of one leased delivery, held until its batch commits and then written with the
/// batch's other settlements in one statement (see [`settle_all`]).
#[derive(Debug, Clone)]
pub(crate) struct Settlement {
    pub(crate) id: DeliveryId,
    pub(crate) owner: String,
    pub(crate) kind: SettlementKind,
    pub(crate) error: Option<String>,
}

#[derive(Debug, Clone)]
pub(crate) enum SettlementKind {
    /// Processed: its changes are in the batch, and it is attributed to their link.
    Applied { tenant: TenantId, link: LinkId },
    /// Dead-lettered or unmatched.
    Settled(DeliveryStatus),
    /// Put back for another attempt at this time (ms).
    Retry(i64),
}

/// The whole round's settlements in one statement on PostgreSQL, one row of a JSON array per
/// delivery, the lease-owner fence kept per row: a row whose lease was lost is not changed, and
/// is missing from what the statement returns. One parameter of one type whatever the round's
/// size, so that the statement's text (and the plan sqlx prepares once per connection) is the
/// same for every round. A leased row is `pending`, so a retry writing `pending` changes nothing
/// of its status, and `processed_at` is left alone for it as before.
///
/// The rows are found through the `id` index (`inbox.id = ANY(…)`): joined on `id` alone, the
/// planner, which guesses 100 rows for the JSON array, hashed it against a scan of the whole
/// inbox (0.3 to 0.7 ms a round on a young inbox of a few thousand rows, and growing with it).
const SETTLE_ALL_POSTGRES: &str = "WITH s AS MATERIALIZED (SELECT * FROM jsonb_to_recordset($1::text::jsonb) \
       AS s(id text, owner text, status text, error text, next_attempt_at int8, tenant_id text, link_id text)) \
     UPDATE inbox SET status = s.status, \
       processed_at = CASE WHEN s.status = 'pending' THEN inbox.processed_at ELSE $2 END, \
       last_error = s.error, next_attempt_at = COALESCE(s.next_attempt_at, inbox.next_attempt_at), \
       tenant_id = COALESCE(s.tenant_id, inbox.tenant_id), link_id = COALESCE(s.link_id, inbox.link_id), \
       lease_owner = NULL, lease_expires_at = NULL \
     FROM s \
     WHERE inbox.id = ANY(ARRAY(SELECT id FROM s)) AND inbox.id = s.id AND inbox.lease_owner = s.owner \
     RETURNING inbox.id";

/// Write `settlements` in `conn`; returns the ids that were not settled because their lease is
/// no longer their owner's.
pub(crate) async fn settle_all<C: ConnectionTrait>(
    conn: &C,
    settlements: &[Settlement],
) -> Result<Vec<DeliveryId>> {
    if settlements.is_empty() {
        return Ok(Vec::new());
    }
    let mut lost = Vec::new();
    if conn.get_database_backend() == DatabaseBackend::Postgres {
        let rows: Vec<serde_json::Value> = settlements
            .iter()
            .map(|s| {
                let (status, next, tenant, link) = match &s.kind {
                    SettlementKind::Applied { tenant, link } => (
                        DeliveryStatus::Done,
                        None,
                        Some(tenant.to_string()),
                        Some(link.to_string()),
                    ),
                    SettlementKind::Settled(status) => (*status, None, None, None),
                    SettlementKind::Retry(at) => (DeliveryStatus::Pending, Some(*at), None, None),
                };
                serde_json::json!({
                    "id": s.id.to_string(),
                    "owner": s.owner,
                    "status": status.as_str(),
                    "error": s.error,
                    "next_attempt_at": next,
                    "tenant_id": tenant,
                    "link_id": link,
                })
            })
            .collect();
        let json = serde_json::Value::Array(rows).to_string();
        let stmt = Statement::from_sql_and_values(
            DatabaseBackend::Postgres,
            SETTLE_ALL_POSTGRES,
            [json.into(), now_ms().into()],
        );
        let mut settled = std::collections::HashSet::new();
        for row in conn.query_all(stmt).await? {
            settled.insert(row.try_get::<String>("", "id")?);
        }
        lost.extend(
            settlements
                .iter()
                .filter(|s| !settled.contains(&s.id.to_string()))
                .map(|s| s.id),
        );
        return Ok(lost);
    }
    // SQLite runs in-process: a statement per delivery costs no round trip, so the simplest
    // correct form is the single-row statements.
    for s in settlements {
        let settled = match &s.kind {
            SettlementKind::Applied { tenant, link } => {
                settle_attributed(conn, &s.id, &s.owner, DeliveryStatus::Done, tenant, link).await?
            }
            SettlementKind::Settled(status) => {
                settle(conn, &s.id, &s.owner, *status, s.error.as_deref()).await?
            }
            SettlementKind::Retry(at) => {
                retry(
                    conn,
                    &s.id,
                    &s.owner,
                    s.error.as_deref().unwrap_or_default(),
                    from_ms(*at),
                )
                .await?
            }
        };
        if !settled {
            lost.push(s.id);
        }
    }
    Ok(lost)
}
