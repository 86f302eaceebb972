//! One transaction over a batch of inbox deliveries: each delivery's link changes run in it as
//! a [`LinkTx`], and the whole batch — state changes, snapshots, events and settlements —
//! becomes durable in one commit, or none of it does.
//!
//! There is no savepoint per delivery: a savepoint and its release are a round trip each,
//! the largest per-delivery cost a batch had left. A link change that does not finish (an
//! error, a panic, a timeout) so poisons the batch, which refuses to commit; the caller rolls
//! it back and runs the batch again without that delivery, whose failure stays its own.
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
use crate::link_tx::{Appends, PendingEvents, PendingSettlements, Poison, Txn};
use crate::{LinkTx, Result, Store, StoreError, to_ms};

/// An open batch transaction. It holds its links' rows from its start, so keep it short: never
/// hold one across a vendor call.
pub struct BatchTx {
    /// Shared with the batch's open [`LinkTx`]s; unshared again by the time it commits.
    txn: std::sync::Arc<DatabaseTransaction>,
    /// Set when a link change in the batch ended unfinished: the batch must not commit.
    poisoned: std::sync::Arc<std::sync::atomic::AtomicBool>,
    keyring: std::sync::Arc<crate::Keyring>,
    /// The events of the link changes committed into the batch so far, written by
    /// [`BatchTx::commit`].
    events: PendingEvents,
    /// The settlements of the link changes committed into the batch so far and of the
    /// deliveries settled without changes, written by [`BatchTx::commit`] in one statement.
    settlements: PendingSettlements,
    /// Deliveries settled without changes whose lease was found lost by [`BatchTx::settle`].
    lost: std::sync::Mutex<Vec<DeliveryId>>,
    /// The links' rows as locked at the start (PostgreSQL), each handed to the first change of
    /// its link instead of being read again: only this transaction can change a row it holds
    /// locked, and the first change of a link in the batch is the first to change it.
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
            // Whole rows: the link changes take them from here instead of reading each again.
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
            txn: std::sync::Arc::new(txn),
            poisoned: std::sync::Arc::default(),
            keyring: self.keyring.clone(),
            events: PendingEvents::default(),
            settlements: PendingSettlements::default(),
            lost: std::sync::Mutex::default(),
            locked: std::sync::Mutex::new(locked),
        })
    }
}

impl BatchTx {
    /// Change a link in the batch, locking its row. Committing the [`LinkTx`] hands its
    /// changes to the batch; dropping it unfinished (an error, a panic) poisons the batch, which
    /// then refuses to commit ([`BatchTx::is_poisoned`]). `None` when the tenant has no such
    /// link. One link change at a time: they share the batch's connection.
    pub async fn begin_link_update(
        &self,
        tenant: &TenantId,
        id: &LinkId,
    ) -> Result<Option<LinkTx>> {
        let txn = Txn::Batch {
            txn: self.txn.clone(),
            poison: Poison::armed(self.poisoned.clone()),
        };
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
            Some(row) => LinkTx::opened(txn, self.keyring.clone(), row, appends).map(Some),
            None => LinkTx::open(txn, self.keyring.clone(), tenant, id, appends).await,
        }
    }

    /// Undo everything of the batch.
    pub async fn rollback(self) -> Result<()> {
        match std::sync::Arc::into_inner(self.txn) {
            Some(txn) => Ok(txn.rollback().await?),
            // A link change still holds it: dropping the last holder rolls it back.
            None => Ok(()),
        }
    }

    /// Whether a link change ended unfinished in this batch: it must be dropped (rolled back),
    /// never committed.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.load(std::sync::atomic::Ordering::SeqCst)
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
        self.refuse_if_poisoned()?;
        let settlements =
            std::mem::take(&mut *self.settlements.lock().unwrap_or_else(|p| p.into_inner()));
        let lost = settle_all(&*self.txn, &settlements).await?;
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
    /// link change committed into the batch (taking the cursor-order lock), then commit. On an
    /// error nothing of the batch is committed; a poisoned batch is refused.
    pub async fn commit(self) -> Result<BatchCommit> {
        self.refuse_if_poisoned()?;
        self.settle().await?;
        let pending = std::mem::take(&mut *self.events.lock().unwrap_or_else(|p| p.into_inner()));
        let events = insert_pending_events(&*self.txn, pending).await?;
        self.refuse_if_poisoned()?;
        let txn = std::sync::Arc::into_inner(self.txn).ok_or_else(|| {
            StoreError::Database(
                "a link change of the batch is still open; the batch must not commit".to_owned(),
            )
        })?;
        txn.commit().await?;
        let lost = std::mem::take(&mut *self.lost.lock().unwrap_or_else(|p| p.into_inner()));
        Ok(BatchCommit { events, lost })
    }
}

impl BatchTx {
    fn refuse_if_poisoned(&self) -> Result<()> {
        if self.is_poisoned() {
            return Err(StoreError::Database(
                "a link change of the batch did not finish; the batch must be rolled back"
                    .to_owned(),
            ));
        }
        Ok(())
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
