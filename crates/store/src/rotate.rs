//! Key rotation: re-seal every sealed value with the active key, so that an older key can be
//! removed from the configuration and everything stays readable.
//!
//! It runs online, beside serving replicas: rows are read in batches outside any transaction,
//! re-sealed in memory, and written back in one short transaction per batch, each row only if
//! it still holds exactly what was read. A row that changed meanwhile (a replica wrote new
//! secrets, retention dropped a body) is left to the next pass, which reads it again.

use coverwatch_core::{EventPayload, LinkId};

use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect, Set, TransactionTrait,
};

use crate::crypto::sealed_text_key_id;
use crate::entities::{event, inbox, link, link_credential, vendor_connection};
use crate::events::{KINDS_WITH_SECRET_URL, open_payload, seal_payload, secret_url};
use crate::inbox::{open_body, open_headers, seal_delivery};
use crate::links::{open_secrets, open_session_url, seal_secrets, seal_session_url};
use crate::{Result, Store, StoreError, now_ms, parse_column};

/// What kind of sealed value a rotation step works on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SealedKind {
    /// Vendor access tokens, reconnect tokens, pending grants (`link_credentials`).
    LinkSecrets,
    /// Session and reconnect URLs of links.
    SessionUrls,
    /// Session and reconnect URLs inside `link.session_opened` and `link.reconnect_required`
    /// events.
    EventUrls,
    /// Raw deliveries: headers and body.
    Deliveries,
    /// Tenants' vendor connection settings (credentials, webhook signing secrets).
    VendorConnections,
}

impl SealedKind {
    pub const ALL: [SealedKind; 5] = [
        SealedKind::LinkSecrets,
        SealedKind::SessionUrls,
        SealedKind::EventUrls,
        SealedKind::Deliveries,
        SealedKind::VendorConnections,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SealedKind::LinkSecrets => "link secrets",
            SealedKind::SessionUrls => "session URLs",
            SealedKind::EventUrls => "event URLs",
            SealedKind::Deliveries => "deliveries",
            SealedKind::VendorConnections => "vendor connections",
        }
    }
}

impl std::fmt::Display for SealedKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a rotation stands after one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResealProgress {
    pub kind: SealedKind,
    /// Rows looked at so far in this pass, and how many there were to look at when it began.
    pub checked: u64,
    pub total: u64,
    /// Rows re-sealed with the active key so far in this pass.
    pub resealed: u64,
}

/// What a rotation did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResealReport {
    pub active_key: String,
    /// Rows re-sealed, per kind.
    pub resealed: Vec<(SealedKind, u64)>,
    /// Values still not sealed with the active key afterwards (changed under every pass).
    pub remaining: u64,
}

/// Passes over the tables before a rotation gives up on rows that keep changing under it.
const MAX_PASSES: usize = 3;

impl Store {
    /// Re-seal every sealed value that is not sealed with the active key (and seal values kept
    /// in clear before sealing existed), `batch` rows per transaction, reporting progress after
    /// each batch. Fails with `UnknownKey` naming a key that some row needs and that is not
    /// configured: nothing is lost, the rows that could be re-sealed are.
    pub async fn reseal_all(
        &self,
        batch: u64,
        mut progress: impl FnMut(ResealProgress),
    ) -> Result<ResealReport> {
        let batch = batch.max(1);
        let mut totals: Vec<(SealedKind, u64)> = SealedKind::ALL.iter().map(|k| (*k, 0)).collect();
        for _ in 0..MAX_PASSES {
            for (kind, resealed) in totals.iter_mut() {
                *resealed += self.reseal_kind(*kind, batch, &mut progress).await?;
            }
            if self.count_not_under_active_key().await? == 0 {
                break;
            }
        }
        if self.db.get_database_backend() == sea_orm::DatabaseBackend::Sqlite {
            // `secure_delete` zeroes what the rotation freed in the database file, but the WAL
            // still holds earlier page images (old ciphertexts, values from before sealing)
            // until a checkpoint writes them back and empties it: do that now rather than at
            // some later close.
            self.db
                .execute_unprepared("PRAGMA wal_checkpoint(TRUNCATE)")
                .await?;
        }
        Ok(ResealReport {
            active_key: self.keyring.active_key_id().to_owned(),
            resealed: totals,
            remaining: self.count_not_under_active_key().await?,
        })
    }

    /// How many stored values are sealed with each key id (`None`: kept in clear, from before
    /// sealing). After a rotation only the active key is left.
    pub async fn sealed_key_ids(&self) -> Result<std::collections::BTreeMap<Option<String>, u64>> {
        let mut counts = std::collections::BTreeMap::new();
        for (key, n) in link_credential::Entity::find()
            .select_only()
            .column(link_credential::Column::KeyId)
            .column_as(link_credential::Column::LinkId.count(), "n")
            .group_by(link_credential::Column::KeyId)
            .into_tuple::<(String, i64)>()
            .all(&self.db)
            .await?
        {
            *counts.entry(Some(key)).or_default() += n.max(0) as u64;
        }
        for (key, n) in inbox::Entity::find()
            .select_only()
            .column(inbox::Column::KeyId)
            .column_as(inbox::Column::Seq.count(), "n")
            .group_by(inbox::Column::KeyId)
            .into_tuple::<(Option<String>, i64)>()
            .all(&self.db)
            .await?
        {
            *counts.entry(key).or_default() += n.max(0) as u64;
        }
        for (key, n) in vendor_connection::Entity::find()
            .select_only()
            .column(vendor_connection::Column::KeyId)
            .column_as(vendor_connection::Column::Id.count(), "n")
            .group_by(vendor_connection::Column::KeyId)
            .into_tuple::<(String, i64)>()
            .all(&self.db)
            .await?
        {
            *counts.entry(Some(key)).or_default() += n.max(0) as u64;
        }
        for url in link::Entity::find()
            .select_only()
            .column(link::Column::SessionUrl)
            .filter(link::Column::SessionUrl.is_not_null())
            .into_tuple::<String>()
            .all(&self.db)
            .await?
        {
            *counts
                .entry(sealed_text_key_id(&url).map(str::to_owned))
                .or_default() += 1;
        }
        for payload in url_events()
            .select_only()
            .column(event::Column::Payload)
            .into_tuple::<String>()
            .all(&self.db)
            .await?
        {
            if let Some(url) = stored_url(&payload)? {
                *counts
                    .entry(sealed_text_key_id(&url).map(str::to_owned))
                    .or_default() += 1;
            }
        }
        Ok(counts)
    }

    async fn count_not_under_active_key(&self) -> Result<u64> {
        let active = Some(self.keyring.active_key_id().to_owned());
        Ok(self
            .sealed_key_ids()
            .await?
            .into_iter()
            .filter(|(key, _)| *key != active)
            .map(|(_, n)| n)
            .sum())
    }

    async fn reseal_kind(
        &self,
        kind: SealedKind,
        batch: u64,
        progress: &mut impl FnMut(ResealProgress),
    ) -> Result<u64> {
        let total = match kind {
            SealedKind::LinkSecrets => {
                link_credential::Entity::find()
                    .filter(link_credential::Column::KeyId.ne(self.keyring.active_key_id()))
                    .count(&self.db)
                    .await?
            }
            SealedKind::SessionUrls => {
                link::Entity::find()
                    .filter(link::Column::SessionUrl.is_not_null())
                    .count(&self.db)
                    .await?
            }
            SealedKind::EventUrls => url_events().count(&self.db).await?,
            SealedKind::Deliveries => {
                inbox::Entity::find()
                    .filter(not_active_delivery(self.keyring.active_key_id()))
                    .count(&self.db)
                    .await?
            }
            SealedKind::VendorConnections => {
                vendor_connection::Entity::find()
                    .filter(vendor_connection::Column::KeyId.ne(self.keyring.active_key_id()))
                    .count(&self.db)
                    .await?
            }
        };
        let mut state = ResealProgress {
            kind,
            checked: 0,
            total,
            resealed: 0,
        };
        let mut after: Option<Cursor> = None;
        loop {
            let (checked, resealed, last) = match kind {
                SealedKind::LinkSecrets => self.reseal_credentials(after.take(), batch).await?,
                SealedKind::SessionUrls => self.reseal_session_urls(after.take(), batch).await?,
                SealedKind::EventUrls => self.reseal_event_urls(after.take(), batch).await?,
                SealedKind::Deliveries => self.reseal_deliveries(after.take(), batch).await?,
                SealedKind::VendorConnections => {
                    self.reseal_connections(after.take(), batch).await?
                }
            };
            if checked == 0 {
                break;
            }
            state.checked += checked;
            state.resealed += resealed;
            progress(state);
            after = last;
            if after.is_none() {
                break;
            }
        }
        Ok(state.resealed)
    }

    async fn reseal_credentials(
        &self,
        after: Option<Cursor>,
        batch: u64,
    ) -> Result<(u64, u64, Option<Cursor>)> {
        let mut query = link_credential::Entity::find()
            .filter(link_credential::Column::KeyId.ne(self.keyring.active_key_id()));
        if let Some(Cursor::Text(after)) = after {
            query = query.filter(link_credential::Column::LinkId.gt(after));
        }
        let rows = query
            .order_by_asc(link_credential::Column::LinkId)
            .limit(batch)
            .all(&self.db)
            .await?;
        let last = rows.last().map(|r| Cursor::Text(r.link_id.clone()));
        let mut updates = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: LinkId = parse_column("link id", &row.link_id)?;
            let secrets = open_secrets(&self.keyring, &id, row)?;
            updates.push((row, seal_secrets(&self.keyring, &id, &secrets)?));
        }
        let txn = self.db.begin().await?;
        let mut resealed = 0;
        for (row, (key_id, ciphertext)) in updates {
            let result = link_credential::Entity::update_many()
                .set(link_credential::ActiveModel {
                    key_id: Set(key_id),
                    ciphertext: Set(ciphertext),
                    updated_at: Set(now_ms()),
                    ..Default::default()
                })
                .filter(link_credential::Column::LinkId.eq(row.link_id.as_str()))
                .filter(link_credential::Column::KeyId.eq(row.key_id.as_str()))
                .filter(link_credential::Column::Ciphertext.eq(row.ciphertext.clone()))
                .exec(&txn)
                .await?;
            resealed += result.rows_affected;
        }
        txn.commit().await?;
        Ok((rows.len() as u64, resealed, last))
    }

    /// The settings are opened and sealed again as they are: same document, same version, so
    /// no replica rebuilds a provider for it.
    async fn reseal_connections(
        &self,
        after: Option<Cursor>,
        batch: u64,
    ) -> Result<(u64, u64, Option<Cursor>)> {
        let mut query = vendor_connection::Entity::find()
            .filter(vendor_connection::Column::KeyId.ne(self.keyring.active_key_id()));
        if let Some(Cursor::Text(after)) = after {
            query = query.filter(vendor_connection::Column::Id.gt(after));
        }
        let rows = query
            .order_by_asc(vendor_connection::Column::Id)
            .limit(batch)
            .all(&self.db)
            .await?;
        let last = rows.last().map(|r| Cursor::Text(r.id.clone()));
        let mut updates = Vec::with_capacity(rows.len());
        for row in &rows {
            updates.push((row, crate::connections::reseal(&self.keyring, row)?));
        }
        let txn = self.db.begin().await?;
        let mut resealed = 0;
        for (row, (key_id, settings)) in updates {
            let result = vendor_connection::Entity::update_many()
                .set(vendor_connection::ActiveModel {
                    key_id: Set(key_id),
                    settings: Set(settings),
                    ..Default::default()
                })
                .filter(vendor_connection::Column::Id.eq(row.id.as_str()))
                .filter(vendor_connection::Column::Version.eq(row.version))
                .filter(vendor_connection::Column::KeyId.eq(row.key_id.as_str()))
                .exec(&txn)
                .await?;
            resealed += result.rows_affected;
        }
        txn.commit().await?;
        Ok((rows.len() as u64, resealed, last))
    }

    async fn reseal_session_urls(
        &self,
        after: Option<Cursor>,
        batch: u64,
    ) -> Result<(u64, u64, Option<Cursor>)> {
        let mut query = link::Entity::find()
            .select_only()
            .columns([link::Column::Id, link::Column::SessionUrl])
            .filter(link::Column::SessionUrl.is_not_null());
        if let Some(Cursor::Text(after)) = after {
            query = query.filter(link::Column::Id.gt(after));
        }
        let rows = query
            .order_by_asc(link::Column::Id)
            .limit(batch)
            .into_tuple::<(String, String)>()
            .all(&self.db)
            .await?;
        let last = rows.last().map(|(id, _)| Cursor::Text(id.clone()));
        let active = self.keyring.active_key_id();
        let mut updates = Vec::new();
        for (id, stored) in &rows {
            if sealed_text_key_id(stored) == Some(active) {
                continue;
            }
            let url = open_session_url(&self.keyring, id, stored)?;
            let link_id: LinkId = parse_column("link id", id)?;
            let sealed = seal_session_url(&self.keyring, &link_id, Some(&url))?;
            updates.push((id, stored, sealed));
        }
        let mut resealed = 0;
        if !updates.is_empty() {
            let txn = self.db.begin().await?;
            for (id, stored, sealed) in updates {
                let result = link::Entity::update_many()
                    .col_expr(link::Column::SessionUrl, sealed.into())
                    .filter(link::Column::Id.eq(id.as_str()))
                    .filter(link::Column::SessionUrl.eq(stored.as_str()))
                    .exec(&txn)
                    .await?;
                resealed += result.rows_affected;
            }
            txn.commit().await?;
        }
        Ok((rows.len() as u64, resealed, last))
    }

    async fn reseal_event_urls(
        &self,
        after: Option<Cursor>,
        batch: u64,
    ) -> Result<(u64, u64, Option<Cursor>)> {
        let mut query = url_events().select_only().columns([
            event::Column::Cursor,
            event::Column::Id,
            event::Column::Payload,
        ]);
        if let Some(Cursor::Seq(after)) = after {
            query = query.filter(event::Column::Cursor.gt(after));
        }
        let rows = query
            .order_by_asc(event::Column::Cursor)
            .limit(batch)
            .into_tuple::<(i64, String, String)>()
            .all(&self.db)
            .await?;
        let last = rows.last().map(|(cursor, _, _)| Cursor::Seq(*cursor));
        let active = self.keyring.active_key_id();
        let mut updates = Vec::new();
        for (cursor, id, stored) in &rows {
            let Some(url) = stored_url(stored)? else {
                continue;
            };
            if sealed_text_key_id(&url) == Some(active) {
                continue;
            }
            let payload = open_payload(&self.keyring, id, stored)?;
            updates.push((*cursor, stored, seal_payload(&self.keyring, id, &payload)?));
        }
        let mut resealed = 0;
        if !updates.is_empty() {
            let txn = self.db.begin().await?;
            for (cursor, stored, sealed) in updates {
                let result = event::Entity::update_many()
                    .col_expr(event::Column::Payload, sealed.into())
                    .filter(event::Column::Cursor.eq(cursor))
                    .filter(event::Column::Payload.eq(stored.as_str()))
                    .exec(&txn)
                    .await?;
                resealed += result.rows_affected;
            }
            txn.commit().await?;
        }
        Ok((rows.len() as u64, resealed, last))
    }

    async fn reseal_deliveries(
        &self,
        after: Option<Cursor>,
        batch: u64,
    ) -> Result<(u64, u64, Option<Cursor>)> {
        let mut query = inbox::Entity::find()
            .select_only()
            .columns([
                inbox::Column::Seq,
                inbox::Column::Id,
                inbox::Column::KeyId,
                inbox::Column::Headers,
                inbox::Column::Body,
            ])
            .filter(not_active_delivery(self.keyring.active_key_id()));
        if let Some(Cursor::Seq(after)) = after {
            query = query.filter(inbox::Column::Seq.gt(after));
        }
        type Row = (i64, String, Option<String>, String, Option<Vec<u8>>);
        let rows = query
            .order_by_asc(inbox::Column::Seq)
            .limit(batch)
            .into_tuple::<Row>()
            .all(&self.db)
            .await?;
        let last = rows.last().map(|row| Cursor::Seq(row.0));
        let checked = rows.len() as u64;
        let mut updates = Vec::with_capacity(rows.len());
        for (seq, id, key_id, headers, body) in rows {
            let had_body = body.is_some();
            let headers = open_headers(&self.keyring, &id, key_id.as_deref(), &headers)?;
            let body = body
                .map(|body| open_body(&self.keyring, &id, key_id.as_deref(), body))
                .transpose()?;
            let sealed = seal_delivery(&self.keyring, &id, &headers, body.as_deref())?;
            updates.push((seq, key_id, had_body, sealed));
        }
        let txn = self.db.begin().await?;
        let mut resealed = 0;
        for (seq, old_key, had_body, (key_id, headers, body)) in updates {
            let mut update = inbox::Entity::update_many()
                .col_expr(inbox::Column::KeyId, Some(key_id).into())
                .col_expr(inbox::Column::Headers, headers.into())
                .filter(inbox::Column::Seq.eq(seq))
                .filter(match old_key {
                    Some(old) => inbox::Column::KeyId.eq(old),
                    None => inbox::Column::KeyId.is_null(),
                });
            // A body dropped by retention meanwhile must stay dropped: only a row whose body is
            // still there gets the re-sealed one.
            update = if had_body {
                update
                    .col_expr(inbox::Column::Body, body.into())
                    .filter(inbox::Column::Body.is_not_null())
            } else {
                update.filter(inbox::Column::Body.is_null())
            };
            resealed += update.exec(&txn).await?.rows_affected;
        }
        txn.commit().await?;
        Ok((checked, resealed, last))
    }
}

/// Keyset position within one table.
enum Cursor {
    Text(String),
    Seq(i64),
}

fn not_active_delivery(active: &str) -> Condition {
    Condition::any()
        .add(inbox::Column::KeyId.is_null())
        .add(inbox::Column::KeyId.ne(active))
}

/// The events whose payload may hold a sealed URL.
fn url_events() -> sea_orm::Select<event::Entity> {
    event::Entity::find()
        .filter(event::Column::Kind.is_in(KINDS_WITH_SECRET_URL.iter().map(|kind| kind.as_str())))
}

/// The secret URL of an event payload as stored (sealed or, from before sealing, not).
fn stored_url(stored: &str) -> Result<Option<String>> {
    let mut payload = serde_json::from_str::<EventPayload>(stored)
        .map_err(|e| StoreError::Corrupt(format!("event payload: {e}")))?;
    Ok(secret_url(&mut payload).map(|url| url.clone()))
}
