//! One transaction over a batch of inbox deliveries: each delivery's link changes run in a
//! savepoint of their own (a [`LinkTx`]), so one delivery's failure undoes only its own
//! changes, and the whole batch — state changes, snapshots, events and settlements — becomes
//! durable in one commit, or none of it does.

use chrono::{DateTime, Utc};
use coverwatch_core::ids::DeliveryId;
use coverwatch_core::{LinkId, TenantId};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseBackend, DatabaseTransaction, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, TransactionTrait,
};

use crate::entities::link;

use crate::events::take_append_lock;
use crate::inbox::{DeliveryStatus, retry, settle};
use crate::{LinkTx, Result, Store};

/// An open batch transaction. It holds the cursor-order lock from its start (PostgreSQL), so
/// keep it short: never hold one across a vendor call.
pub struct BatchTx {
    txn: DatabaseTransaction,
    keyring: std::sync::Arc<crate::Keyring>,
}

impl Store {
    /// Open a batch transaction over `links` (the links its deliveries change), taking the
    /// cursor-order lock once for all the events it will append.
    ///
    /// The links' rows are locked first, in id order, and the cursor-order lock only then: every
    /// other writer locks its link's row before it appends (and so before it waits for that
    /// lock), and batches lock rows in one order, so no two transactions wait on each other in
    /// a cycle.
    pub async fn begin_batch(&self, links: &[LinkId]) -> Result<BatchTx> {
        let txn = self.db.begin().await?;
        if txn.get_database_backend() == DatabaseBackend::Postgres && !links.is_empty() {
            let mut ids: Vec<String> = links.iter().map(ToString::to_string).collect();
            ids.sort();
            ids.dedup();
            link::Entity::find()
                .select_only()
                .column(link::Column::Id)
                .filter(link::Column::Id.is_in(ids))
                .order_by_asc(link::Column::Id)
                .lock_exclusive()
                .into_tuple::<String>()
                .all(&txn)
                .await?;
        }
        take_append_lock(&txn).await?;
        Ok(BatchTx {
            txn,
            keyring: self.keyring.clone(),
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
        LinkTx::open(savepoint, self.keyring.clone(), tenant, id, true).await
    }

    /// Settle a leased delivery (dead-lettered or unmatched) with the batch; `false` when
    /// `owner` no longer holds its lease.
    pub async fn settle_delivery(
        &self,
        id: &DeliveryId,
        owner: &str,
        status: DeliveryStatus,
        error: Option<&str>,
    ) -> Result<bool> {
        settle(&self.txn, id, owner, status, error).await
    }

    /// Put a leased delivery back for a retry at `retry_at`, with the batch; `false` when
    /// `owner` no longer holds its lease.
    pub async fn retry_delivery(
        &self,
        id: &DeliveryId,
        owner: &str,
        error: &str,
        retry_at: DateTime<Utc>,
    ) -> Result<bool> {
        retry(&self.txn, id, owner, error, retry_at).await
    }

    pub async fn commit(self) -> Result<()> {
        self.txn.commit().await?;
        Ok(())
    }
}
