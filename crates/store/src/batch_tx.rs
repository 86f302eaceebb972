//! One transaction over a batch of inbox deliveries: each delivery's link changes run in a
//! savepoint of their own (a [`LinkTx`]), so one delivery's failure undoes only its own
//! changes, and the whole batch — state changes, snapshots, events and settlements — becomes
//! durable in one commit, or none of it does.
//!
//! The batch's events are held in memory until it commits, then written in one statement under
//! the cursor-order lock, which the batch so holds only for that statement and the commit
//! (PostgreSQL): other replicas' batches do all the rest of their work at the same time.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use coverwatch_core::ids::DeliveryId;
use coverwatch_core::{Event, LinkId, TenantId};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseBackend, DatabaseTransaction, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, TransactionTrait,
};

use crate::entities::link;

use crate::events::insert_pending_events;
use crate::inbox::{DeliveryStatus, Settlement, SettlementKind, settle_all};
use crate::link_tx::{Appends, PendingEvents, PendingSettlements};
use crate::{LinkTx, Result, Store, StoreError, to_ms};

/// An open batch transaction. It holds its links' rows from its start, so keep it short: never
/// hold one across a vendor call.
pub struct BatchTx {
    txn: DatabaseTransaction,
    keyring: std::sync::Arc<crate::Keyring>,
    /// The events of the savepoints released so far, written by [`BatchTx::commit`].
    events: PendingEvents,
    /// The settlements of the savepoints released so far and of the deliveries settled without
    /// changes, written by [`BatchTx::commit`] in one statement.
    settlements: PendingSettlements,
    /// Deliveries settled without changes whose lease was found lost by [`BatchTx::settle`].
    lost: std::sync::Mutex<Vec<DeliveryId>>,
    /// The links' rows as locked at the start (PostgreSQL), each handed to the first savepoint
    /// on its link instead of being read again: only this transaction can change a row it
    /// holds locked, and the first savepoint on a link is the first to change it.
    locked: std::sync::Mutex<HashMap<String, link::Model>>,
}

impl Store {
    /// Open a batch transaction over `links` (the links its deliveries change).
    ///
    /// The links' rows are locked first, in id order, and the cursor-order lock only at commit:
    /// every other writer locks its link's row before it appends (and so before it waits for
    /// that lock), and batches lock rows in one order, so no two transactions wait on each
    /// other in a cycle.
    pub async fn begin_batch(&self, links: &[LinkId]) -> Result<BatchTx> {
        let txn = self.db.begin().await?;
        let mut locked = HashMap::new();
        if txn.get_database_backend() == DatabaseBackend::Postgres && !links.is_empty() {
            let mut ids: Vec<String> = links.iter().map(ToString::to_string).collect();
            ids.sort();
            ids.dedup();
            // Whole rows: the savepoints take them from here instead of reading each again.
            for row in link::Entity::find()
                .filter(link::Column::Id.is_in(ids))
                .order_by_asc(link::Column::Id)
                .lock_exclusive()
                .all(&txn)
                .await?
            {
                locked.insert(row.id.clone(), row);
            }
        }
        Ok(BatchTx {
            txn,
            keyring: self.keyring.clone(),
            events: PendingEvents::default(),
            settlements: PendingSettlements::default(),
            lost: std::sync::Mutex::default(),
            locked: std::sync::Mutex::new(locked),
        })
    }
}

impl BatchTx {
    /// Open a savepoint on a link, locking its row. Committing the [`LinkTx`] releases the
    /// savepoint into the batch; dropping it (an error, a panic) rolls back to the savepoint,
    /// undoing only this link's changes. `None` when the tenant has no such link.
    pub async fn begin_link_update(
        &self,
        tenant: &TenantId,
        id: &LinkId,
    ) -> Result<Option<LinkTx>> {
        let savepoint = self.txn.begin().await?;
        let appends = Appends::ToBatch {
            held: Vec::new(),
            batch: self.events.clone(),
            settle: None,
            settlements: self.settlements.clone(),
        };
        let locked = self
            .locked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id.to_string())
            .filter(|row| row.tenant_id == tenant.as_str());
        match locked {
            Some(row) => LinkTx::opened(savepoint, self.keyring.clone(), row, appends).map(Some),
            None => LinkTx::open(savepoint, self.keyring.clone(), tenant, id, appends).await,
        }
    }

    /// Settle a leased delivery (dead-lettered or unmatched) with the batch: written at commit,
    /// where [`BatchCommit::lost`] names it if `owner` no longer holds its lease by then.
    pub fn settle_delivery(
        &self,
        id: &DeliveryId,
        owner: &str,
        status: DeliveryStatus,
        error: Option<&str>,
    ) {
        self.queue(Settlement {
            id: *id,
            owner: owner.to_owned(),
            kind: SettlementKind::Settled(status),
            error: error.map(str::to_owned),
        });
    }

    /// Put a leased delivery back for a retry at `retry_at`, with the batch: written at commit,
    /// where [`BatchCommit::lost`] names it if `owner` no longer holds its lease by then.
    pub fn retry_delivery(
        &self,
        id: &DeliveryId,
        owner: &str,
        error: &str,
        retry_at: DateTime<Utc>,
    ) {
        self.queue(Settlement {
            id: *id,
            owner: owner.to_owned(),
            kind: SettlementKind::Retry(to_ms(retry_at)),
            error: Some(error.to_owned()),
        });
    }

    fn queue(&self, settlement: Settlement) {
        self.settlements
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(settlement);
    }

    /// Write the settlements queued so far in one statement (the lease-owner fence kept per
    /// row). [`BatchTx::commit`] writes whatever is still queued; calling this first lets the
    /// caller learn of a lost lease before it decides to commit.
    ///
    /// A delivery whose changes were applied must not have them committed once its lease is
    /// lost (its new owner applies them): should any such delivery's settlement find the lease
    /// gone, this fails naming them, and the batch must be dropped (rolled back). A lost lease
    /// of a delivery settled without changes only leaves it to its new owner
    /// ([`BatchCommit::lost`]).
    pub async fn settle(&self) -> Result<()> {
        let settlements =
            std::mem::take(&mut *self.settlements.lock().unwrap_or_else(|p| p.into_inner()));
        let lost = settle_all(&self.txn, &settlements).await?;
        let applied_lost: Vec<String> = settlements
            .iter()
            .filter(|s| matches!(s.kind, SettlementKind::Applied { .. }) && lost.contains(&s.id))
            .map(|s| s.id.to_string())
            .collect();
        if !applied_lost.is_empty() {
            return Err(StoreError::Database(format!(
                "lease on deliveries {} was lost before they were settled; the batch must not commit",
                applied_lost.join(", ")
            )));
        }
        self.lost
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(lost);
        Ok(())
    }

    /// Settle the deliveries still queued ([`BatchTx::settle`]), write the events of every
    /// savepoint released into the batch (taking the cursor-order lock), then commit. On an
    /// error nothing of the batch is committed.
    pub async fn commit(self) -> Result<BatchCommit> {
        self.settle().await?;
        let pending = std::mem::take(&mut *self.events.lock().unwrap_or_else(|p| p.into_inner()));
        let events = insert_pending_events(&self.txn, pending).await?;
        self.txn.commit().await?;
        let lost = std::mem::take(&mut *self.lost.lock().unwrap_or_else(|p| p.into_inner()));
        Ok(BatchCommit { events, lost })
    }
}

/// What a committed batch wrote.
#[derive(Debug)]
pub struct BatchCommit {
    /// The events written, with their cursors, in the order appended.
    pub events: Vec<Event>,
    /// Deliveries settled without changes whose lease was lost before the commit: left to
    /// their new owner, unchanged.
    pub lost: Vec<DeliveryId>,
}
