//! One transaction over one link: lock it, change it, append its events, save its snapshots and
//! settle the delivery that caused it, then commit all of it or none of it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use coverwatch_core::ids::DeliveryId;
use coverwatch_core::policy::{Account, AccountSnapshot, Policy, PolicySnapshot, PolicyTerm};
use coverwatch_core::requirements::OverallStatus;
use coverwatch_core::{Event, LinkId, LinkRequirements, LinkState, TenantId};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseBackend, DatabaseTransaction, EntityTrait, QueryFilter,
    QuerySelect, Set, TransactionTrait,
};
use secrecy::SecretString;

use crate::entities::{link, link_credential, link_external_id};
use crate::events::{NewEvent, PendingEvent, insert_event};
use crate::inbox::{DeliveryStatus, Settlement, SettlementKind, settle_attributed};
use crate::links::{
    LinkRecord, insert_external_id, open_secrets, record_from_model, seal_secrets, seal_session_url,
};
use crate::requirements::{StoredRequirementSet, read_set};
use crate::snapshots::{SnapshotOutcome, latest_policies, save_account, save_policy};
use crate::{Keyring, Result, Store, StoreError, now_ms, to_ms};

/// An open transaction holding the lock on one link. Never hold one across a vendor call:
/// other writers of the same link (and on SQLite, every writer) wait for it.
pub struct LinkTx {
    txn: Txn,
    keyring: std::sync::Arc<Keyring>,
    record: LinkRecord,
    changed: bool,
    /// Whether this transaction stored a new version of a current-term policy.
    policies_changed: bool,
    /// Where appended events go.
    appends: Appends,
}

/// How a [`LinkTx`] appends events.
pub(crate) enum Appends {
    /// Written at once, taking the cursor-order lock until commit (a transaction of its own).
    Now,
    /// Held, and handed to the enclosing batch by [`LinkTx::commit`]; the batch writes them all
    /// under the cursor-order lock just before it commits (see `BatchTx::commit`).
    ToBatch {
        held: Vec<PendingEvent>,
        batch: PendingEvents,
        /// The delivery this change settles, handed to the batch with the events (the batch
        /// settles all of its deliveries in one statement at commit).
        settle: Option<Settlement>,
        settlements: PendingSettlements,
    },
}

/// The transaction a [`LinkTx`] writes in.
pub(crate) enum Txn {
    /// Its own, committed by [`LinkTx::commit`].
    Own(DatabaseTransaction),
    /// The enclosing batch's, without a savepoint: a savepoint and its release are two round
    /// trips per delivery, the largest per-delivery cost left in a batch. So a change that does
    /// not finish (an error, a panic, a timeout) cannot be undone alone: it poisons the batch,
    /// which must then be rolled back (`BatchTx::commit` refuses) and redone without it.
    Batch {
        txn: std::sync::Arc<DatabaseTransaction>,
        poison: Poison,
    },
}

impl std::ops::Deref for Txn {
    type Target = DatabaseTransaction;

    fn deref(&self) -> &DatabaseTransaction {
        match self {
            Txn::Own(txn) => txn,
            Txn::Batch { txn, .. } => txn,
        }
    }
}

/// Marks a batch poisoned when dropped armed: a link change in the batch's transaction ended
/// without [`LinkTx::commit`], leaving whatever it had written half done.
pub(crate) struct Poison {
    flag: std::sync::Arc<std::sync::atomic::AtomicBool>,
    armed: bool,
}

impl Poison {
    pub(crate) fn armed(flag: std::sync::Arc<std::sync::atomic::AtomicBool>) -> Self {
        Self { flag, armed: true }
    }

    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for Poison {
    fn drop(&mut self) {
        if self.armed {
            self.flag.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

/// A batch's settlements, written in one statement when it commits.
pub(crate) type PendingSettlements = std::sync::Arc<std::sync::Mutex<Vec<Settlement>>>;

/// A batch's events, from the link changes committed into it, in the order they were appended.
pub(crate) type PendingEvents = std::sync::Arc<std::sync::Mutex<Vec<PendingEvent>>>;

impl Store {
    /// Open a transaction on a link, locking its row. `None` when the tenant has no such link.
    pub async fn begin_link_update(
        &self,
        tenant: &TenantId,
        id: &LinkId,
    ) -> Result<Option<LinkTx>> {
        let txn = self.db.begin().await?;
        LinkTx::open(
            Txn::Own(txn),
            self.keyring.clone(),
            tenant,
            id,
            Appends::Now,
        )
        .await
    }
}

impl LinkTx {
    /// Lock the link's row in `txn` (its own transaction, or a batch's) and read it.
    pub(crate) async fn open(
        txn: Txn,
        keyring: std::sync::Arc<Keyring>,
        tenant: &TenantId,
        id: &LinkId,
        appends: Appends,
    ) -> Result<Option<LinkTx>> {
        let mut query = link::Entity::find_by_id(id.to_string())
            .filter(link::Column::TenantId.eq(tenant.as_str()));
        if txn.get_database_backend() == DatabaseBackend::Postgres {
            query = query.lock_exclusive();
        } else {
            // SQLite has no row locks: taking the write lock up front (a no-op write) keeps two
            // transactions from both reading and then failing to upgrade to writers.
            link::Entity::update_many()
                .col_expr(
                    link::Column::UpdatedAt,
                    sea_orm::sea_query::Expr::col(link::Column::UpdatedAt).into(),
                )
                .filter(link::Column::Id.eq(id.to_string()))
                .exec(&*txn)
                .await?;
        }
        let Some(model) = query.one(&*txn).await? else {
            match txn {
                Txn::Own(txn) => txn.rollback().await?,
                // Nothing was changed: the batch may go on.
                Txn::Batch { poison, .. } => poison.disarm(),
            }
            return Ok(None);
        };
        Self::opened(txn, keyring, model, appends).map(Some)
    }

    /// A link transaction on a row `txn` already holds locked, as it reads there.
    pub(crate) fn opened(
        txn: Txn,
        keyring: std::sync::Arc<Keyring>,
        model: link::Model,
        appends: Appends,
    ) -> Result<LinkTx> {
        Ok(LinkTx {
            record: record_from_model(&keyring, model)?,
            txn,
            keyring,
            changed: false,
            policies_changed: false,
            appends,
        })
    }
}

impl LinkTx {
    pub fn record(&self) -> &LinkRecord {
        &self.record
    }

    pub fn state(&self) -> LinkState {
        self.record.link.state
    }

    /// Set the state. The caller has checked the transition against the state machine.
    pub fn set_state(&mut self, state: LinkState) {
        self.record.link.state = state;
        self.changed = true;
    }

    pub fn set_session_url(&mut self, url: Option<String>) {
        self.record.link.session_url = url;
        self.changed = true;
    }

    /// The `traceparent` of the call opening the link's new session (see `NewLink::caller_trace`).
    pub fn set_caller_trace(&mut self, traceparent: String) {
        self.record.caller_trace = Some(traceparent);
        self.changed = true;
    }

    pub fn set_account_key(&mut self, key: Option<String>) {
        self.record.account_key = key;
        self.changed = true;
    }

    /// Fresh data also ends a stale period, so the next one is reported again.
    pub fn set_refreshed_at(&mut self, at: DateTime<Utc>) {
        self.record.link.last_refreshed_at = Some(at);
        self.record.link.stale_since = None;
        self.changed = true;
    }

    pub fn set_stale_since(&mut self, at: Option<DateTime<Utc>>) {
        self.record.link.stale_since = at;
        self.changed = true;
    }

    /// Attach a set of the link's tenant (or detach with `None`). The link then counts as never
    /// checked against it. Fails with `RequirementSetNotFound` when the tenant has no such set.
    pub async fn attach_requirement_set(
        &mut self,
        set_id: Option<&str>,
    ) -> Result<Option<StoredRequirementSet>> {
        let stored = match set_id {
            Some(id) => Some(
                read_set(&*self.txn, &self.record.link.tenant_id, id, true)
                    .await?
                    .ok_or_else(|| StoreError::RequirementSetNotFound(id.to_owned()))?,
            ),
            None => None,
        };
        self.record.link.requirements = set_id.map(|id| LinkRequirements {
            set_id: id.to_owned(),
            status: None,
            evaluated_at: None,
        });
        self.record.requirements_revision = None;
        self.changed = true;
        Ok(stored)
    }

    /// The attached set as it is now, if any.
    pub async fn requirement_set(&self) -> Result<Option<StoredRequirementSet>> {
        match &self.record.link.requirements {
            Some(attached) => {
                read_set(
                    &*self.txn,
                    &self.record.link.tenant_id,
                    &attached.set_id,
                    true,
                )
                .await
            }
            None => Ok(None),
        }
    }

    /// Record a check of the attached set (`status` `None`: nothing to check yet).
    pub fn record_evaluation(
        &mut self,
        revision: i64,
        status: Option<OverallStatus>,
        at: DateTime<Utc>,
    ) {
        if let Some(attached) = &mut self.record.link.requirements {
            attached.status = status;
            attached.evaluated_at = Some(at);
            self.record.requirements_revision = Some(revision);
            self.changed = true;
        }
    }

    /// Whether this transaction stored a new version of a current-term policy.
    pub fn policies_changed(&self) -> bool {
        self.policies_changed
    }

    /// The latest version of each current-term policy of the link, as this transaction sees it.
    pub async fn current_policies(&self) -> Result<Vec<Policy>> {
        let link = &self.record.link;
        Ok(
            latest_policies(&*self.txn, &link.tenant_id, &link.id, PolicyTerm::Current)
                .await?
                .into_iter()
                .map(|stored| stored.policy)
                .collect(),
        )
    }

    pub fn set_auth_sequence(&mut self, session: &str, sequence: i64) {
        self.record
            .auth_sequences
            .insert(session.to_owned(), sequence);
        self.changed = true;
    }

    /// Record vendor ids for this link; `true` when at least one was not recorded for it yet
    /// (so a vendor version id tells whether its data was seen before). An id already recorded
    /// for another link is refused: deliveries are attributed through these, so each must name
    /// one link.
    pub async fn put_external_ids(&mut self, ids: &BTreeMap<String, String>) -> Result<bool> {
        let provider = self.record.link.provider.to_string();
        let mut added = false;
        for (kind, value) in ids {
            let existing = link_external_id::Entity::find_by_id((
                provider.clone(),
                kind.clone(),
                value.clone(),
            ))
            .one(&*self.txn)
            .await?;
            match existing {
                Some(row) if row.link_id == self.record.link.id.to_string() => {}
                Some(_) => {
                    return Err(StoreError::ExternalIdTaken {
                        provider,
                        kind: kind.clone(),
                        value: value.clone(),
                    });
                }
                None => {
                    insert_external_id(&*self.txn, &self.record.link, kind, value).await?;
                    added = true;
                }
            }
        }
        Ok(added)
    }

    /// Stop attributing deliveries to this link through a vendor id it no longer stands for (the
    /// account the end-user switched away from). Forgetting an id the link does not hold is no
    /// error.
    pub async fn forget_external_id(&mut self, kind: &str, value: &str) -> Result<()> {
        let link = &self.record.link;
        link_external_id::Entity::delete_many()
            .filter(link_external_id::Column::Provider.eq(link.provider.to_string()))
            .filter(link_external_id::Column::Kind.eq(kind))
            .filter(link_external_id::Column::Value.eq(value))
            .filter(link_external_id::Column::LinkId.eq(link.id.to_string()))
            .exec(&*self.txn)
            .await?;
        Ok(())
    }

    /// Drop every stored version (both terms) of policies that are no longer the link's: they
    /// belonged to an account the link stopped following, and must not count as its current
    /// policies any more. The events that reported them stay.
    pub async fn retire_policies(&mut self, external_ids: &[String]) -> Result<()> {
        if external_ids.is_empty() {
            return Ok(());
        }
        let link = &self.record.link;
        crate::entities::policy_snapshot::Entity::delete_many()
            .filter(crate::entities::policy_snapshot::Column::TenantId.eq(link.tenant_id.as_str()))
            .filter(crate::entities::policy_snapshot::Column::LinkId.eq(link.id.to_string()))
            .filter(
                crate::entities::policy_snapshot::Column::PolicyExternalId
                    .is_in(external_ids.iter().cloned()),
            )
            .exec(&*self.txn)
            .await?;
        self.policies_changed = true;
        Ok(())
    }

    /// Move the vendor ids of `kind` that another link of the same tenant holds to this one, so
    /// that deliveries attributed through them (a webhook URL's token, say) reach this link.
    pub async fn adopt_external_ids(&mut self, from: &LinkId, kind: &str) -> Result<u64> {
        let link = &self.record.link;
        let result = link_external_id::Entity::update_many()
            .col_expr(
                link_external_id::Column::LinkId,
                sea_orm::sea_query::Expr::value(link.id.to_string()),
            )
            .filter(link_external_id::Column::Provider.eq(link.provider.to_string()))
            .filter(link_external_id::Column::Kind.eq(kind))
            .filter(link_external_id::Column::TenantId.eq(link.tenant_id.to_string()))
            .filter(link_external_id::Column::LinkId.eq(from.to_string()))
            .exec(&*self.txn)
            .await?;
        Ok(result.rows_affected)
    }

    /// Merge named secrets into the link's sealed secrets (`None` removes one).
    pub async fn put_secrets(
        &mut self,
        secrets: Vec<(String, Option<SecretString>)>,
    ) -> Result<()> {
        let id = self.record.link.id;
        let existing = link_credential::Entity::find_by_id(id.to_string())
            .one(&*self.txn)
            .await?;
        let mut all = match &existing {
            Some(row) => open_secrets(&self.keyring, &id, row)?,
            None => BTreeMap::new(),
        };
        for (name, value) in secrets {
            match value {
                Some(value) => all.insert(name, value),
                None => all.remove(&name),
            };
        }
        let (key_id, ciphertext) = seal_secrets(&self.keyring, &id, &all)?;
        let model = link_credential::ActiveModel {
            link_id: Set(id.to_string()),
            tenant_id: Set(self.record.link.tenant_id.to_string()),
            key_id: Set(key_id),
            ciphertext: Set(ciphertext),
            updated_at: Set(now_ms()),
        };
        if existing.is_some() {
            link_credential::Entity::update(model)
                .exec(&*self.txn)
                .await?;
        } else {
            link_credential::Entity::insert(model)
                .exec(&*self.txn)
                .await?;
        }
        Ok(())
    }

    /// Forget every named secret of the link except those in `keep`.
    pub async fn retain_secrets(&mut self, keep: &[&str]) -> Result<()> {
        let id = self.record.link.id;
        let Some(row) = link_credential::Entity::find_by_id(id.to_string())
            .one(&*self.txn)
            .await?
        else {
            return Ok(());
        };
        let all = open_secrets(&self.keyring, &id, &row)?;
        let forget: Vec<(String, Option<SecretString>)> = all
            .into_keys()
            .filter(|name| !keep.contains(&name.as_str()))
            .map(|name| (name, None))
            .collect();
        if forget.is_empty() {
            return Ok(());
        }
        self.put_secrets(forget).await
    }

    /// Append an event. Inside a batch it is written when the batch commits, and the event
    /// returned here has no cursor yet (0): the batch's commit answers the written events.
    pub async fn append_event(&mut self, event: NewEvent) -> Result<Event> {
        match &mut self.appends {
            Appends::Now => insert_event(&*self.txn, &self.keyring, &self.record.link, event).await,
            Appends::ToBatch { held, .. } => {
                let pending = PendingEvent::seal(&self.keyring, &self.record.link, event)?;
                let event = pending.event().clone();
                held.push(pending);
                Ok(event)
            }
        }
    }

    pub async fn save_policy(
        &mut self,
        snapshot: &PolicySnapshot,
        fetched_at: DateTime<Utc>,
    ) -> Result<SnapshotOutcome<Policy>> {
        let link = &self.record.link;
        let outcome =
            save_policy(&*self.txn, &link.tenant_id, &link.id, snapshot, fetched_at).await?;
        if snapshot.term == PolicyTerm::Current
            && !matches!(outcome, SnapshotOutcome::Unchanged { .. })
        {
            self.policies_changed = true;
        }
        Ok(outcome)
    }

    pub async fn save_account(
        &mut self,
        snapshot: &AccountSnapshot,
        fetched_at: DateTime<Utc>,
    ) -> Result<SnapshotOutcome<Account>> {
        let link = &self.record.link;
        save_account(&*self.txn, &link.tenant_id, &link.id, snapshot, fetched_at).await
    }

    /// Mark the delivery that caused this change as done, in this transaction. Fails (and so
    /// the whole transaction must be dropped) when `owner` no longer holds its lease. Inside a
    /// batch the settlement is written with the batch's others when it commits, and the batch
    /// refuses to commit should the lease be lost by then (see `BatchTx::commit`).
    pub async fn settle_delivery(&mut self, id: &DeliveryId, owner: &str) -> Result<()> {
        let link = &self.record.link;
        if let Appends::ToBatch { settle, .. } = &mut self.appends {
            *settle = Some(Settlement {
                id: *id,
                owner: owner.to_owned(),
                kind: SettlementKind::Applied {
                    tenant: link.tenant_id.clone(),
                    link: link.id,
                },
                error: None,
            });
            return Ok(());
        }
        // The delivery is attributed to the link in the same statement that settles it: one
        // round trip per delivery instead of two. Should the lease be lost, the attribution is
        // undone with the rest of this transaction.
        if settle_attributed(
            &*self.txn,
            id,
            owner,
            DeliveryStatus::Done,
            &link.tenant_id,
            &link.id,
        )
        .await?
        {
            Ok(())
        } else {
            Err(StoreError::Database(format!(
                "lease on delivery {id} was lost before it was settled"
            )))
        }
    }

    /// Write the link and commit; inside a batch, hand the change to the batch (it becomes
    /// durable with the batch's commit).
    pub async fn commit(self) -> Result<LinkRecord> {
        let mut record = self.record;
        if self.changed {
            let now = now_ms();
            let link = &record.link;
            link::Entity::update(link::ActiveModel {
                id: Set(link.id.to_string()),
                state: Set(link.state.to_string()),
                session_url: Set(seal_session_url(
                    &self.keyring,
                    &link.id,
                    link.session_url.as_deref(),
                )?),
                account_key: Set(record.account_key.clone()),
                auth_sequence: Set(Some(
                    serde_json::to_string(&record.auth_sequences)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                )),
                last_refreshed_at: Set(link.last_refreshed_at.map(to_ms)),
                requirement_set_id: Set(link.requirements.as_ref().map(|r| r.set_id.clone())),
                requirements_revision: Set(record.requirements_revision),
                requirements_status: Set(link
                    .requirements
                    .as_ref()
                    .and_then(|r| r.status)
                    .map(|s| s.as_str().to_owned())),
                requirements_evaluated_at: Set(link
                    .requirements
                    .as_ref()
                    .and_then(|r| r.evaluated_at)
                    .map(to_ms)),
                stale_since: Set(link.stale_since.map(to_ms)),
                caller_trace: Set(record.caller_trace.clone()),
                updated_at: Set(now),
                ..Default::default()
            })
            .exec(&*self.txn)
            .await?;
            record.link.updated_at = crate::from_ms(now);
        }
        match self.txn {
            Txn::Own(txn) => txn.commit().await?,
            Txn::Batch { poison, .. } => poison.disarm(),
        }
        if let Appends::ToBatch {
            held,
            batch,
            settle,
            settlements,
        } = self.appends
        {
            // Released into the batch: its events and settlement are the batch's now.
            batch.lock().unwrap_or_else(|p| p.into_inner()).extend(held);
            settlements
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(settle);
        }
        Ok(record)
    }
}
