//! Requirement sets and what keeps links honest over time: checking a link's policies against
//! its set (on new data, on demand, and as time passes), reporting stale links, and reading a
//! policy's history.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use coverwatch_core::change::diff_policies;
use coverwatch_core::event::{EventPayload, PolicyChange};
use coverwatch_core::ids::ConnectionId;
use coverwatch_core::policy::PolicyTerm;
use coverwatch_core::provider::{ProviderError, StoredVendorData, VendorVerdict};
use coverwatch_core::requirements::{
    Evaluation, RequirementSet, StaleAction, check_set_id, evaluate, is_stale, stale_action,
    transition_event,
};
use coverwatch_core::{Event, LinkId, LinkState, ProviderId, TenantId};
use coverwatch_store::{DueLink, LinkRecord, LinkTx, PolicyVersion, StoredRequirementSet};
use tokio::sync::watch;

use crate::apply::{Origin, emit};
use crate::inbox::database_may_recover;
use crate::isolation::{UnitFailure, catch_panic, isolated};
use crate::{Engine, EngineError};

/// How the periodic sweep behaves.
#[derive(Debug, Clone)]
pub struct SweepConfig {
    /// How often it runs.
    pub interval: Duration,
    /// Links with a set are checked again at least this often, new data or not.
    pub reevaluate_every: Duration,
    /// How long a provider's link may go without fresh data before `link.stale`; a provider not
    /// named here uses its `Capabilities::expected_refresh_interval`.
    pub stale_after: BTreeMap<ProviderId, Duration>,
}

impl Default for SweepConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(60),
            reevaluate_every: Duration::from_secs(3600),
            stale_after: BTreeMap::new(),
        }
    }
}

/// Links looked at per query of the sweep; the next round takes the rest.
const SWEEP_PAGE: u64 = 200;

/// A link checked against its set.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkEvaluation {
    pub set_id: String,
    pub evaluation: Evaluation,
    pub evaluated_at: DateTime<Utc>,
    /// The vendor's own verdict, next to ours; asked for by EvaluateLink only.
    pub vendor: Option<VendorCheck>,
}

/// The vendor's own verdict on a link, or why there is none. Never a reason to fail our
/// evaluation: a vendor that is down, refuses, or has no such check leaves ours standing.
#[derive(Debug, Clone, PartialEq)]
pub enum VendorCheck {
    Available(VendorVerdict),
    Unavailable {
        provider: ProviderId,
        reason: String,
    },
}

#[derive(Debug, Clone)]
pub struct PutSetOutcome {
    pub stored: StoredRequirementSet,
    pub created: bool,
    /// Attached links checked again against the new rules.
    pub links_evaluated: u32,
}

/// What one round of the sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub stale_reported: u32,
    pub evaluated: u32,
    /// Links whose part of the round failed, panicked or timed out (each logged with its link);
    /// the round went on with the others.
    pub failed: u32,
}

/// One version of a policy with the changes from the version before it (none for the first).
#[derive(Debug, Clone)]
pub struct PolicyHistoryEntry {
    pub version: PolicyVersion,
    pub changes: Vec<PolicyChange>,
}

#[derive(Debug, Clone)]
pub struct PolicyHistoryPage {
    pub versions: Vec<PolicyHistoryEntry>,
    /// Pass as `after_version` for the next page; set when more may follow.
    pub next_after_version: Option<i32>,
}

/// Why a vendor gave no verdict, in words a caller can act on.
fn vendor_reason(err: &ProviderError) -> String {
    match err {
        ProviderError::Unsupported { provider, .. } => {
            format!("{provider} offers no policy check of its own")
        }
        other => other.to_string(),
    }
}

fn invalid_set_id(field: &str, id: &str) -> Result<(), EngineError> {
    check_set_id(id).map_err(|e| EngineError::invalid(field, e.message))
}

/// Check the link's current policies against its attached set, record the result, and emit
/// `policy.requirements_met` / `_unmet` when the standing changed since the last check of the
/// same revision of the set. `None` when there is nothing to check: no set, or a link that is
/// not linked to an account.
pub(crate) async fn evaluate_in_tx(
    tx: &mut LinkTx,
    origin: &Origin,
    events: &mut Vec<Event>,
    now: DateTime<Utc>,
) -> Result<Option<LinkEvaluation>, EngineError> {
    if !tx.state().is_linked() {
        return Ok(None);
    }
    // The store keeps milliseconds; answer with the time that GetLink will read back.
    let now = now.trunc_subsecs(3);
    let Some(stored) = tx.requirement_set().await? else {
        return Ok(None);
    };
    let policies = tx.current_policies().await?;
    let evaluation = match catch_panic(|| evaluate(&stored.set, &policies, now)) {
        Ok(evaluation) => evaluation,
        Err(message) => {
            let record = tx.record();
            let link = record.link.id;
            tracing::error!(%link, tenant = %record.link.tenant_id, set = %stored.set.id, panic = %message, "requirement evaluation panicked");
            // Recorded as tried now, with the standing it had: a caller that keeps the
            // transaction (the sweep) moves the link to the back of its queue, rather than
            // picking the same poisoned link first on every round ahead of all others.
            let status = record.link.requirements.as_ref().and_then(|a| a.status);
            let revision = record.requirements_revision.unwrap_or(stored.revision);
            tx.record_evaluation(revision, status, now);
            return Err(EngineError::Panicked(format!(
                "{message} (evaluating requirement set `{}` for link {link})",
                stored.set.id
            )));
        }
    };
    let record = tx.record();
    let previous = match &record.link.requirements {
        Some(attached) if record.requirements_revision == Some(stored.revision) => attached.status,
        _ => None,
    };
    if let Some(payload) = transition_event(&stored.set, previous, &evaluation) {
        emit(tx, origin, payload, events).await?;
    }
    tx.record_evaluation(stored.revision, Some(evaluation.status), now);
    Ok(Some(LinkEvaluation {
        set_id: stored.set.id,
        evaluation,
        evaluated_at: now,
        vendor: None,
    }))
}

impl Engine {
    pub async fn put_requirement_set(
        &self,
        tenant: &TenantId,
        set: RequirementSet,
    ) -> Result<PutSetOutcome, EngineError> {
        set.validate()
            .map_err(|e| EngineError::invalid(e.path, e.message))?;
        let (stored, created) = self.inner.store.put_requirement_set(tenant, &set).await?;
        let mut links_evaluated = 0;
        if !created {
            // The links' last results read the old rules: check them against the new ones now,
            // rather than at their next data, so callers hear where they stand.
            let mut after: Option<LinkId> = None;
            loop {
                let page = self
                    .inner
                    .store
                    .links_with_requirement_set(tenant, &set.id, after.as_ref(), SWEEP_PAGE)
                    .await?;
                let Some(last) = page.last().copied() else {
                    break;
                };
                let limit = self.inner.config.worker.process_timeout;
                for link in page {
                    let check = self.evaluate_now(tenant, &link, Utc::now());
                    match isolated(limit, check).await {
                        Ok(Ok(Some(_))) => links_evaluated += 1,
                        Ok(Ok(None)) => {}
                        // The set is stored; the link's next data or the sweep checks it again.
                        Ok(Err(err)) => {
                            tracing::warn!(%link, error = %err, "could not re-check link against replaced set")
                        }
                        Err(failure) => {
                            tracing::error!(%link, error = %failure, "could not re-check link against replaced set")
                        }
                    }
                }
                after = Some(last);
            }
        }
        Ok(PutSetOutcome {
            stored,
            created,
            links_evaluated,
        })
    }

    pub async fn get_requirement_set(
        &self,
        tenant: &TenantId,
        id: &str,
    ) -> Result<StoredRequirementSet, EngineError> {
        self.requirement_set_named(tenant, "id", id).await
    }

    /// The tenant's set `id`, which the request names in `field`.
    pub(crate) async fn requirement_set_named(
        &self,
        tenant: &TenantId,
        field: &str,
        id: &str,
    ) -> Result<StoredRequirementSet, EngineError> {
        invalid_set_id(field, id)?;
        self.inner
            .store
            .get_requirement_set(tenant, id)
            .await?
            .ok_or_else(|| EngineError::NotFound {
                what: "requirement set",
                id: id.to_owned(),
            })
    }

    pub async fn list_requirement_sets(
        &self,
        tenant: &TenantId,
        after: Option<&str>,
        limit: u64,
    ) -> Result<(Vec<StoredRequirementSet>, Option<String>), EngineError> {
        if let Some(after) = after {
            invalid_set_id("page_token", after)?;
        }
        Ok(self
            .inner
            .store
            .list_requirement_sets(tenant, after, limit)
            .await?)
    }

    pub async fn delete_requirement_set(
        &self,
        tenant: &TenantId,
        id: &str,
    ) -> Result<bool, EngineError> {
        invalid_set_id("id", id)?;
        Ok(self.inner.store.delete_requirement_set(tenant, id).await?)
    }

    /// Attach `set_id` to the link (`None` detaches) and check the link at once when it has
    /// data.
    pub async fn attach_requirement_set(
        &self,
        tenant: &TenantId,
        link: &LinkId,
        set_id: Option<&str>,
    ) -> Result<(LinkRecord, Option<LinkEvaluation>), EngineError> {
        if let Some(id) = set_id {
            invalid_set_id("requirement_set_id", id)?;
        }
        let mut tx = self
            .inner
            .store
            .begin_link_update(tenant, link)
            .await?
            .ok_or_else(|| EngineError::link_not_found(link))?;
        if tx.state() == LinkState::Descoped {
            return Err(EngineError::FailedPrecondition(format!(
                "link {link} is descoped; it is never checked again"
            )));
        }
        tx.attach_requirement_set(set_id).await?;
        let now = Utc::now();
        let mut events = Vec::new();
        let evaluation = evaluate_in_tx(&mut tx, &Origin::caller(), &mut events, now).await?;
        let record = tx.commit().await?;
        self.announce(&events);
        Ok((record, evaluation))
    }

    /// Check the link against its set now (EvaluateLink).
    pub async fn evaluate_link(
        &self,
        tenant: &TenantId,
        link: &LinkId,
    ) -> Result<LinkEvaluation, EngineError> {
        let record = self.link_record(tenant, link).await?;
        if record.link.requirements.is_none() {
            return Err(EngineError::FailedPrecondition(format!(
                "link {link} has no requirement set attached; attach one first"
            )));
        }
        if !record.link.state.is_linked() {
            return Err(EngineError::FailedPrecondition(format!(
                "link {link} is {} and has no policy data to check",
                record.link.state
            )));
        }
        let mut evaluation = self
            .evaluate_now(tenant, link, Utc::now())
            .await?
            .ok_or_else(|| {
                EngineError::FailedPrecondition(format!(
                    "link {link} changed meanwhile and has nothing to check; try again"
                ))
            })?;
        // Asked after our evaluation is committed and outside any transaction: a vendor call
        // must neither hold the link's lock nor decide our answer.
        let vendor = self.vendor_check(tenant, &record).await;
        evaluation.vendor = Some(vendor);
        Ok(evaluation)
    }

    /// The vendor's own verdict on the link, against the rules of its attached set. Every
    /// failure (vendor down, refusal, unreadable answer, no such check, time limit, even a
    /// panic in the provider) becomes `Unavailable` with the reason.
    async fn vendor_check(&self, tenant: &TenantId, record: &LinkRecord) -> VendorCheck {
        let provider_kind = &record.link.provider;
        let unavailable = |reason: String| VendorCheck::Unavailable {
            provider: provider_kind.clone(),
            reason,
        };
        let work = async {
            let provider = self.provider_of(record).await?;
            let rules = match &record.link.requirements {
                Some(attached) => {
                    self.requirement_set_named(tenant, "requirement_set_id", &attached.set_id)
                        .await?
                        .set
                        .rules
                }
                None => Vec::new(),
            };
            let access = self.access(&record.link).await?;
            let (policies, account) = self.inner.store.latest_raw(tenant, &record.link.id).await?;
            let stored = StoredVendorData { policies, account };
            Ok::<_, EngineError>(provider.vendor_check(&access, &rules, &stored).await)
        };
        let limit = self.inner.config.worker.process_timeout;
        match isolated(limit, work).await {
            Ok(Ok(Ok(verdict))) => VendorCheck::Available(verdict),
            Ok(Ok(Err(err))) => {
                tracing::info!(link = %record.link.id, error = %err, "no vendor verdict");
                unavailable(vendor_reason(&err))
            }
            Ok(Err(err)) => {
                tracing::warn!(link = %record.link.id, error = %err, "vendor check could not run");
                unavailable(err.to_string())
            }
            Err(failure) => {
                tracing::warn!(link = %record.link.id, error = %failure, "vendor check failed");
                unavailable(failure.to_string())
            }
        }
    }

    async fn evaluate_now(
        &self,
        tenant: &TenantId,
        link: &LinkId,
        now: DateTime<Utc>,
    ) -> Result<Option<LinkEvaluation>, EngineError> {
        let mut tx = self
            .inner
            .store
            .begin_link_update(tenant, link)
            .await?
            .ok_or_else(|| EngineError::link_not_found(link))?;
        let mut events = Vec::new();
        let origin = Origin {
            occurred_at: now,
            ..Origin::caller()
        };
        let evaluation = evaluate_in_tx(&mut tx, &origin, &mut events, now).await?;
        tx.commit().await?;
        self.announce(&events);
        Ok(evaluation)
    }

    /// The versions of one policy, oldest first, each with what changed from the one before.
    pub async fn policy_history(
        &self,
        tenant: &TenantId,
        link: &LinkId,
        policy_id: &str,
        term: PolicyTerm,
        after_version: i32,
        limit: u64,
    ) -> Result<PolicyHistoryPage, EngineError> {
        if after_version < 0 {
            return Err(EngineError::invalid(
                "after_version",
                "must not be negative",
            ));
        }
        self.link_record(tenant, link).await?;
        let (mut previous, versions) = self
            .inner
            .store
            .policy_history(tenant, link, policy_id, term, after_version, limit)
            .await?;
        if versions.is_empty() && previous.is_none() && after_version == 0 {
            return Err(EngineError::NotFound {
                what: "policy",
                id: policy_id.to_owned(),
            });
        }
        let next_after_version = (versions.len() as u64 >= limit.max(1))
            .then(|| versions.last().map(|v| v.version))
            .flatten();
        let mut entries = Vec::with_capacity(versions.len());
        for version in versions {
            let changes = match &previous {
                Some(before) => diff_policies(&before.policy, &version.policy),
                None => Vec::new(),
            };
            previous = Some(version.clone());
            entries.push(PolicyHistoryEntry { version, changes });
        }
        Ok(PolicyHistoryPage {
            versions: entries,
            next_after_version,
        })
    }

    /// Runs [`Engine::sweep`] every `sweep.interval` until shutdown.
    pub async fn run_sweep(&self, mut shutdown: watch::Receiver<bool>) {
        let interval = self.inner.config.sweep.interval;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
            match self.sweep(Utc::now()).await {
                Ok(report) if report != SweepReport::default() => {
                    tracing::info!(
                        stale = report.stale_reported,
                        evaluated = report.evaluated,
                        "sweep"
                    )
                }
                Ok(_) => {}
                Err(err) => tracing::warn!(error = %err, "sweep failed; the next round retries"),
            }
        }
    }

    /// One round, as of `now`: report links that went stale (once per stale period) and check
    /// links whose last check is older than `reevaluate_every`. Each link is a unit of its own:
    /// one that fails, panics or hangs is logged against that link and the round goes on. Only
    /// a database error ends the round early (every other link would meet it too).
    pub async fn sweep(&self, now: DateTime<Utc>) -> Result<SweepReport, EngineError> {
        let mut report = SweepReport::default();
        // Every vendor, not only those with a default connection: a vendor reached only through
        // tenants' own connections has links that go stale too. Each connection's links are
        // looked at with the window of the provider that serves them.
        for kind in self.inner.providers.vendors() {
            let mut scopes = Vec::new();
            if self.inner.providers.default_for(&kind).is_some() {
                scopes.push((None, self.stale_window(&kind)?));
            }
            for id in self.inner.store.connection_ids_of(&kind).await? {
                match self.connection_stale_window(&kind, &id).await {
                    Ok(window) => scopes.push((Some(id), window)),
                    Err(err) if database_may_recover(&err) => return Err(err),
                    // One connection that no longer builds (or was deleted since the list was
                    // read) must not keep the others' links from being swept.
                    Err(err) => {
                        tracing::warn!(connection = %id, provider = %kind, error = %err, "sweep: no stale window for a vendor connection; its links are skipped this round");
                    }
                }
            }
            for (connection, window) in scopes {
                let Some(before) = chrono::TimeDelta::from_std(window)
                    .ok()
                    .and_then(|w| now.checked_sub_signed(w))
                else {
                    continue;
                };
                let due = self
                    .inner
                    .store
                    .stale_candidates(kind.clone(), connection.as_ref(), before, SWEEP_PAGE)
                    .await?;
                for link in due {
                    let check = self.sweep_stale_link(&link, window, now);
                    if self
                        .sweep_unit(&link, "stale check", check, &mut report)
                        .await?
                        == Some(true)
                    {
                        report.stale_reported += 1;
                    }
                }
            }
        }
        let Some(before) = chrono::TimeDelta::from_std(self.inner.config.sweep.reevaluate_every)
            .ok()
            .and_then(|w| now.checked_sub_signed(w))
        else {
            return Ok(report);
        };
        let due = self
            .inner
            .store
            .links_due_for_evaluation(before, SWEEP_PAGE)
            .await?;
        for link in due {
            let check = self.sweep_evaluate(&link, now);
            if self
                .sweep_unit(&link, "requirement check", check, &mut report)
                .await?
                == Some(true)
            {
                report.evaluated += 1;
            }
        }
        Ok(report)
    }

    /// Run one link's part of the sweep under the unit time limit, catching a panic. `None`:
    /// it failed, was logged with the link and counted; the round goes on.
    async fn sweep_unit<T>(
        &self,
        link: &DueLink,
        what: &'static str,
        work: impl Future<Output = Result<T, EngineError>>,
        report: &mut SweepReport,
    ) -> Result<Option<T>, EngineError> {
        let limit = self.inner.config.worker.process_timeout;
        let failure = match isolated(limit, work).await {
            Ok(Ok(done)) => return Ok(Some(done)),
            Ok(Err(err)) if database_may_recover(&err) => return Err(err),
            Ok(Err(err)) => err.to_string(),
            Err(failure @ UnitFailure::TimedOut(_)) => failure.to_string(),
            Err(failure @ UnitFailure::Panicked(_)) => {
                tracing::error!(link = %link.link_id, tenant = %link.tenant_id, error = %failure, "sweep: {what} of a link panicked; the round goes on");
                report.failed += 1;
                return Ok(None);
            }
        };
        tracing::warn!(link = %link.link_id, tenant = %link.tenant_id, error = %failure, "sweep: {what} of a link failed; the round goes on");
        report.failed += 1;
        Ok(None)
    }

    /// Emit `link.stale` for the link if it is (still) stale; whether it did.
    async fn sweep_stale_link(
        &self,
        link: &DueLink,
        window: Duration,
        now: DateTime<Utc>,
    ) -> Result<bool, EngineError> {
        let Some(mut tx) = self
            .inner
            .store
            .begin_link_update(&link.tenant_id, &link.link_id)
            .await?
        else {
            return Ok(false);
        };
        // Decided again under the lock: fresh data may have arrived since the query.
        let current = &tx.record().link;
        let stale = current.state == LinkState::Active
            && is_stale(current.last_refreshed_at, current.created_at, window, now);
        let mut events = Vec::new();
        let emitted = stale_action(current.stale_since.is_some(), stale) == StaleAction::Emit;
        if emitted {
            let last_refreshed_at = current.last_refreshed_at;
            let origin = Origin {
                occurred_at: now,
                ..Origin::caller()
            };
            emit(
                &mut tx,
                &origin,
                EventPayload::Stale { last_refreshed_at },
                &mut events,
            )
            .await?;
            tx.set_stale_since(Some(now));
        }
        tx.commit().await?;
        self.announce(&events);
        Ok(emitted)
    }

    /// The sweep's periodic check of one link; whether it was checked. A check that panicked
    /// is kept as tried now (see [`evaluate_in_tx`]), then reported as the failure it is.
    async fn sweep_evaluate(
        &self,
        link: &DueLink,
        now: DateTime<Utc>,
    ) -> Result<bool, EngineError> {
        let Some(mut tx) = self
            .inner
            .store
            .begin_link_update(&link.tenant_id, &link.link_id)
            .await?
        else {
            return Ok(false);
        };
        let mut events = Vec::new();
        let origin = Origin {
            occurred_at: now,
            ..Origin::caller()
        };
        match evaluate_in_tx(&mut tx, &origin, &mut events, now).await {
            Ok(evaluation) => {
                tx.commit().await?;
                self.announce(&events);
                Ok(evaluation.is_some())
            }
            Err(panicked @ EngineError::Panicked(_)) => {
                tx.commit().await?;
                Err(panicked)
            }
            Err(err) => Err(err),
        }
    }

    /// How long links of a tenant's connection `id` to `kind` may go without fresh data: the
    /// configured window of the vendor if there is one, else the connection's own provider's.
    async fn connection_stale_window(
        &self,
        kind: &ProviderId,
        id: &ConnectionId,
    ) -> Result<Duration, EngineError> {
        if let Some(window) = self.inner.config.sweep.stale_after.get(kind) {
            return Ok(*window);
        }
        Ok(self
            .provider_for(kind, Some(id))
            .await?
            .capabilities()
            .expected_refresh_interval)
    }

    /// How long links of `kind` served by the deployment's default connection may go without
    /// fresh data.
    pub fn stale_window(&self, kind: &ProviderId) -> Result<Duration, EngineError> {
        Ok(match self.inner.config.sweep.stale_after.get(kind) {
            Some(window) => *window,
            None => {
                self.inner
                    .providers
                    .get(kind)?
                    .capabilities()
                    .expected_refresh_interval
            }
        })
    }
}
