//! The inbox worker: claims stored deliveries under a lease, turns each into state changes and
//! events through its provider, and settles it in the same transaction. Transient failures
//! retry with capped exponential backoff and jitter; past the limit a delivery is dead-lettered
//! (kept, with its last error, for replay). A delivery that matches no link is kept as
//! `unmatched`, never dropped.

use chrono::Utc;
use coverwatch_core::ProviderId;
use coverwatch_core::ids::{ConnectionId, DeliveryId};
use coverwatch_core::provider::ProviderError;
use coverwatch_core::webhook::{Attribution, InboundWebhook};
use std::collections::{HashMap, HashSet};

use coverwatch_core::{Event, Link, LinkId, TenantId};
use coverwatch_store::{
    BatchTx, ClaimedDelivery, DeliveryStatus, LinkRecord, SESSION_PROOF_KIND, StoreError,
    WEBHOOK_TOKEN_KIND,
};
use futures::StreamExt;
use rand::Rng;
use tokio::sync::OwnedMutexGuard;
use tokio::sync::watch;
use tracing::Instrument;
use tracing::field::{Empty, display};

use crate::apply::{Origin, Prepared, apply_prepared};
use crate::isolation::{UnitFailure, isolated};
use crate::links::token_hash;
use crate::telemetry::{self, Settled};
use crate::{Engine, EngineError};

/// Whether trying again later may succeed where this failed because of the database. Besides
/// "unavailable", any database error counts: a connection the server terminated in the middle of
/// a statement (a restart, a failover, `pg_terminate_backend`: SQLSTATE 57P01) reaches us as a
/// database error, not as a connection error, and nothing may be given up on because the
/// database restarted. Deliveries still stop after `max_attempts`; streams back off.
/// A span of its own for processing one delivery, continuing the trace its ingest was part of.
fn delivery_span(delivery: &ClaimedDelivery) -> tracing::Span {
    let span = tracing::info_span!(
        parent: None,
        "delivery.process",
        otel.kind = "consumer",
        delivery_id = %delivery.id,
        provider = %delivery.provider,
        attempt = delivery.attempts,
        link_id = Empty,
        outcome = Empty,
        otel.status_code = Empty,
        trace_id = Empty,
    );
    crate::trace::set_remote_parent(&span, delivery.trace_context.as_deref());
    crate::trace::record_trace_id(&span);
    if let Some((_, link)) = &delivery.link {
        span.record("link_id", display(link));
    }
    span
}

pub(crate) fn database_may_recover(err: &EngineError) -> bool {
    matches!(
        err,
        EngineError::Store(StoreError::Unavailable(_) | StoreError::Database(_))
    )
}

enum Outcome {
    Unmatched(String),
    Failed { error: String, transient: bool },
}

/// A parsed delivery and the link it is about (read under the link's lock when staged).
struct Attributed {
    parsed: coverwatch_core::webhook::ParsedWebhook,
    tenant: TenantId,
    link: LinkId,
}

/// A link's in-process lock and the link as read under it (`None`: no such link of the tenant).
type LinkRead = (OwnedMutexGuard<()>, Option<LinkRecord>);

/// A delivery whose vendor calls are made, waiting for the round's transaction.
struct Staged {
    link: Link,
    prepared: Vec<Prepared>,
    origin: Origin,
    /// Why the delivery must be tried again after what could be applied is.
    retry: Option<String>,
    /// The link's in-process lock, held until the round commits.
    working: OwnedMutexGuard<()>,
}

#[derive(Default)]
struct RoundResult {
    /// Deliveries of links already in the round, still leased by us.
    deferred: Vec<ClaimedDelivery>,
    /// Links (named at receipt) whose delivery was settled: their next may follow.
    settled_links: Vec<LinkId>,
    /// Deliveries whose outcome could not be recorded (the lease is still ours).
    unsettled: Vec<DeliveryId>,
}

fn failed(err: EngineError) -> Outcome {
    Outcome::Failed {
        transient: err.is_transient() || database_may_recover(&err),
        error: err.to_string(),
    }
}

impl Engine {
    /// Work off the inbox until `shutdown` turns true; in-flight deliveries are finished first.
    ///
    /// Runs `worker.batches_in_flight` batch loops side by side, each claiming and committing
    /// batches of its own under a lease owner of its own, exactly as that many replicas would:
    /// the claim never gives two of them deliveries of one link at once, and a batch takes the
    /// cursor-order lock only to append its events and commit, so their batches overlap for
    /// everything else (vendor calls, reads, their changes). On SQLite there is one loop: it has
    /// one writer, which a second loop would only wait for.
    pub async fn run_inbox_worker(&self, shutdown: watch::Receiver<bool>) {
        let config = &self.inner.config.worker;
        let loops = if self.inner.store.has_concurrent_writers() {
            config.batches_in_flight.max(1)
        } else {
            1
        };
        futures::future::join_all((0..loops).map(|i| {
            // Lease owners must differ: a loop finding its lease lost must not mistake another
            // loop's lease for its own.
            let owner = match i {
                0 => config.owner.clone(),
                i => format!("{}.{i}", config.owner),
            };
            self.run_inbox_loop(owner, shutdown.clone())
        }))
        .await;
    }

    async fn run_inbox_loop(&self, owner: String, mut shutdown: watch::Receiver<bool>) {
        let config = self.inner.config.worker.clone();
        // Deliveries we still hold a lease on because settling them failed (the database went
        // away mid-batch). No one else may take them until the lease runs out, so without this
        // they would sit idle for up to a whole lease after the database returns.
        let mut stranded: Vec<DeliveryId> = Vec::new();
        loop {
            if *shutdown.borrow() {
                return;
            }
            if !stranded.is_empty() {
                // Expire our own leases now: the next claim (ours or another replica's) takes
                // them. We are between batches, so no work of ours holds them any more.
                match self
                    .inner
                    .store
                    .renew_leases(&owner, &stranded, Utc::now())
                    .await
                {
                    Ok(_) => stranded.clear(),
                    Err(err) => {
                        tracing::debug!(error = %err, count = stranded.len(), "inbox: cannot release unsettled leases yet")
                    }
                }
            }
            let processed = match self.process_batch(&owner, &mut stranded).await {
                Ok(n) => n,
                Err(err) => {
                    tracing::warn!(error = %err, "inbox: could not claim deliveries");
                    0
                }
            };
            // After a batch that could not be recorded, wait a little as when idle: trying
            // again at once would only spin while the database is away.
            if processed > 0 && stranded.is_empty() {
                continue;
            }
            tokio::select! {
                _ = self.inner.inbox_wake.notified() => {}
                _ = tokio::time::sleep(config.idle_poll) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    /// Claim one batch and process it; returns how many deliveries were claimed.
    pub async fn process_inbox_batch(&self) -> Result<usize, EngineError> {
        self.process_batch(&self.inner.config.worker.owner, &mut Vec::new())
            .await
    }

    /// [`Self::process_inbox_batch`], adding to `unsettled` the deliveries whose outcome could
    /// not be recorded (their lease is still ours).
    async fn process_batch(
        &self,
        owner: &str,
        unsettled: &mut Vec<DeliveryId>,
    ) -> Result<usize, EngineError> {
        let config = &self.inner.config.worker;
        let lease_until = Utc::now()
            + chrono::Duration::from_std(config.lease).unwrap_or(chrono::Duration::seconds(60));
        let claimed = self
            .inner
            .store
            .claim_deliveries(owner, lease_until, config.batch)
            .await?;
        let count = claimed.len();
        if count == 0 {
            return Ok(0);
        }
        let held: std::sync::Mutex<Vec<DeliveryId>> =
            std::sync::Mutex::new(claimed.iter().map(|d| d.id).collect());
        let work = self.run_rounds(owner, claimed, &held);
        // Keep the leases alive while a slow vendor holds us up, so that no other worker takes
        // over a delivery this one is still working on. A crashed worker renews nothing, and
        // its deliveries are taken over when their lease runs out. The renewal runs beside the
        // work, never instead of it: a renewal can wait on the rows the batch transaction holds
        // until that commits.
        let renew = async {
            let renew_every = config.lease / 3;
            loop {
                tokio::time::sleep(renew_every).await;
                let until = Utc::now()
                    + chrono::Duration::from_std(config.lease)
                        .unwrap_or(chrono::Duration::seconds(60));
                let ids = held.lock().unwrap_or_else(|p| p.into_inner()).clone();
                if let Err(err) = self.inner.store.renew_leases(owner, &ids, until).await {
                    tracing::warn!(error = %err, "inbox: could not renew leases");
                }
            }
        };
        tokio::select! {
            stranded = work => unsettled.extend(stranded),
            never = renew => match never {},
        }
        Ok(count)
    }

    /// Work off `claimed` in rounds of one transaction each. After a round, the links it
    /// settled go on with their next ready delivery (one link's deliveries one after another
    /// in receipt order, without a full claim each, up to a batch's worth per link), and a
    /// delivery that turned out to be of a link already in the round comes next. Returns the
    /// ids whose outcome could not be recorded.
    async fn run_rounds(
        &self,
        owner: &str,
        claimed: Vec<ClaimedDelivery>,
        held: &std::sync::Mutex<Vec<DeliveryId>>,
    ) -> Vec<DeliveryId> {
        let config = &self.inner.config.worker;
        let mut settled_of_link: HashMap<LinkId, u64> = HashMap::new();
        let mut round = claimed;
        while !round.is_empty() {
            let done = self.run_round(owner, round).await;
            if !done.unsettled.is_empty() {
                // The database is away; the rest waits for the next claim.
                return done
                    .unsettled
                    .into_iter()
                    .chain(done.deferred.iter().map(|d| d.id))
                    .collect();
            }
            round = done.deferred;
            let mut following = Vec::new();
            for link in done.settled_links {
                let settled = settled_of_link.entry(link).or_default();
                *settled += 1;
                if *settled < config.batch {
                    following.push(link);
                }
            }
            let lease_until = Utc::now()
                + chrono::Duration::from_std(config.lease).unwrap_or(chrono::Duration::seconds(60));
            // One statement for all of them: a round trip (and a statement for the database to
            // run) per round, not per link.
            match self
                .inner
                .store
                .claim_next_of_links(owner, &following, lease_until)
                .await
            {
                Ok(claimed) => {
                    held.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .extend(claimed.iter().map(|d| d.id));
                    round.extend(claimed);
                }
                Err(err) => {
                    tracing::debug!(links = following.len(), error = %err, "inbox: next deliveries of the links left to the next claim");
                }
            }
        }
        Vec::new()
    }

    /// One round: the vendor calls of every delivery side by side (bounded, outside any
    /// transaction), then all their changes and outcomes in one transaction.
    async fn run_round(&self, owner: &str, round: Vec<ClaimedDelivery>) -> RoundResult {
        let config = &self.inner.config.worker;
        let started = std::time::Instant::now();
        let spans: HashMap<DeliveryId, tracing::Span> =
            round.iter().map(|d| (d.id, delivery_span(d))).collect();
        let span_of = |id: &DeliveryId| spans.get(id).cloned().unwrap_or_else(tracing::Span::none);
        let attributed = futures::stream::iter(round)
            .map(|delivery| async {
                let attributed = self
                    .attribute_isolated(&delivery)
                    .instrument(span_of(&delivery.id))
                    .await;
                (delivery, attributed)
            })
            .buffer_unordered(config.concurrency.max(1))
            .collect::<Vec<_>>()
            .await;
        let mut result = RoundResult::default();
        let mut outcomes = Vec::new();
        let mut ready = Vec::new();
        // One delivery per link per round, the one received first: the next must see its
        // effects, so it waits for the next round.
        let mut in_round = HashSet::new();
        let mut attributed = attributed;
        attributed.sort_by_key(|(delivery, _)| delivery.seq);
        for (delivery, attributed) in attributed {
            if let (Ok(found), None) = (&attributed, &delivery.link) {
                // Attributed only now: the span could not name the link when it began.
                span_of(&delivery.id).record("link_id", display(found.link));
            }
            match attributed {
                Err(outcome) => outcomes.push((delivery, outcome)),
                Ok(found) if !in_round.insert(found.link) => result.deferred.push(delivery),
                Ok(found) => ready.push((delivery, found)),
            }
        }
        // The round's links read in one query, each under its in-process lock taken first (the
        // read must see what the last delivery of its link changed). A link whose lock another
        // task holds right now is left to its own delivery's stage, which waits for the lock
        // and reads the link itself, so that one busy link does not hold up the round's reads.
        let mut guards: HashMap<LinkId, OwnedMutexGuard<()>> = ready
            .iter()
            .filter_map(|(_, found)| Some((found.link, self.try_lock_link(found.link)?)))
            .collect();
        let wanted: Vec<(TenantId, LinkId)> = ready
            .iter()
            .filter(|(_, found)| guards.contains_key(&found.link))
            .map(|(_, found)| (found.tenant.clone(), found.link))
            .collect();
        let mut read = match self.inner.store.get_links(&wanted).await {
            Ok(read) => Some(read),
            Err(err) => {
                // Each stage reads its link itself and fails alone if the database is away.
                tracing::debug!(error = %err, links = wanted.len(), "inbox: the round's links are read one by one");
                None
            }
        };
        let ready: Vec<_> = ready
            .into_iter()
            .map(|(delivery, found)| {
                let pre = match (guards.remove(&found.link), read.as_mut()) {
                    (Some(guard), Some(read)) => Some((guard, read.remove(&found.link))),
                    _ => None,
                };
                (delivery, found, pre)
            })
            .collect();
        drop(guards);
        let steps = futures::stream::iter(ready)
            .map(|(delivery, found, pre)| async {
                let step = self
                    .stage(owner, &delivery, found, pre)
                    .instrument(span_of(&delivery.id))
                    .await;
                (delivery, step)
            })
            .buffer_unordered(config.concurrency.max(1))
            .collect::<Vec<_>>()
            .await;
        let mut staged = Vec::new();
        for (delivery, step) in steps {
            match step {
                Ok(item) => staged.push((delivery, *item)),
                Err(outcome) => outcomes.push((delivery, outcome)),
            }
        }
        if staged.is_empty() && outcomes.is_empty() {
            return result;
        }
        staged.sort_by_key(|(_, item)| item.link.id.to_string());
        let ids: Vec<DeliveryId> = staged
            .iter()
            .map(|(d, _)| d.id)
            .chain(outcomes.iter().map(|(d, _)| d.id))
            .collect();
        // Held until the batch is durable: nothing else in this process reads these links
        // before their changes are.
        let mut working = Vec::with_capacity(staged.len());
        let mut pending = Vec::with_capacity(staged.len());
        for (delivery, item) in staged {
            working.push(item.working);
            pending.push((delivery, item.link, item.prepared, item.origin, item.retry));
        }
        // The deliveries' changes share the batch's transaction without a savepoint each (see
        // `BatchTx`). When one does not finish, the batch is rolled back and run again without
        // it, from the vendor results already fetched: its failure stays its own, at the cost of
        // redoing the others' statements, which is rare next to two round trips per delivery
        // every time. Each run leaves one delivery out, so there are at most as many runs as
        // deliveries.
        let store = &self.inner.store;
        let batch = loop {
            let links: Vec<LinkId> = pending.iter().map(|(_, link, ..)| link.id).collect();
            let batch = match store.begin_batch(&links).await {
                Ok(batch) => batch,
                Err(err) => {
                    tracing::warn!(error = %err, count = ids.len(), "inbox: cannot open the batch transaction; retried once the database answers again");
                    result.unsettled = ids;
                    return result;
                }
            };
            let mut unfinished = None;
            for (at, (delivery, link, prepared, origin, retry)) in pending.iter().enumerate() {
                // Its events are written (and get their cursors) when the batch commits.
                let applied = self
                    .apply_in_batch(
                        &batch,
                        delivery,
                        link,
                        prepared.clone(),
                        origin,
                        retry.is_none(),
                    )
                    .await;
                if let Err(outcome) = applied {
                    unfinished = Some((at, outcome));
                    break;
                }
            }
            let Some((at, outcome)) = unfinished else {
                break batch;
            };
            if let Err(err) = batch.rollback().await {
                tracing::warn!(error = %err, count = ids.len(), "inbox: cannot roll the batch back; retried once the database answers again");
                result.unsettled = ids;
                return result;
            }
            let (delivery, ..) = pending.remove(at);
            tracing::debug!(delivery = %delivery.id, left = pending.len(), "inbox: a delivery's changes did not finish; the batch runs again without it");
            outcomes.push((delivery, outcome));
        };
        let mut done_links = Vec::new();
        let mut done = Vec::new();
        for (delivery, _, _, _, retry) in pending {
            match retry {
                // What could be applied is; the rest is tried again with the delivery.
                Some(error) => outcomes.push((
                    delivery,
                    Outcome::Failed {
                        error,
                        transient: true,
                    },
                )),
                None => {
                    done.push((delivery.id, delivery.provider));
                    done_links.extend(delivery.link.as_ref().map(|(_, l)| *l));
                }
            }
        }
        // Queued with the batch: all of its settlements are written in one statement at commit.
        for (delivery, outcome) in &outcomes {
            self.record_outcome(owner, &batch, delivery, outcome);
        }
        // Settled before the hook, so that it sees the batch as it is just before the commit.
        let committed = match batch.settle().await {
            Ok(()) => match &config.before_batch_commit {
                Some(hook) => (hook.0)(&ids),
                None => Ok(()),
            },
            Err(err) => Err(err.to_string()),
        };
        let committed = match committed {
            Ok(()) => batch.commit().await.map_err(|e| e.to_string()),
            Err(err) => Err(err),
        };
        drop(working);
        let (events, lost) = match committed {
            Ok(commit) => (commit.events, commit.lost),
            Err(err) => {
                // Nothing of the batch happened: every delivery in it is tried again.
                tracing::warn!(error = %err, count = ids.len(), "inbox: the batch did not commit; all of its deliveries are tried again");
                result.unsettled = ids;
                return result;
            }
        };
        self.announce(&events);
        // Counted and traced once the outcomes are durable: a batch that did not commit is tried
        // again and counted then.
        let elapsed = started.elapsed();
        let finished = done
            .into_iter()
            .map(|(id, provider)| (id, provider, Settled::Processed, "done"))
            .chain(outcomes.iter().map(|(delivery, outcome)| {
                let (settled, label) = match outcome {
                    Outcome::Unmatched(_) => (Settled::Unmatched, "unmatched"),
                    Outcome::Failed { transient, .. }
                        if *transient && delivery.attempts < config.max_attempts =>
                    {
                        (Settled::Retried, "retry")
                    }
                    Outcome::Failed { .. } => (Settled::DeadLettered, "dead"),
                };
                (delivery.id, delivery.provider.clone(), settled, label)
            }));
        for (id, provider, settled, label) in finished {
            telemetry::delivery_attempt(&provider, settled, elapsed);
            let span = span_of(&id);
            span.record("outcome", label);
            if !matches!(settled, Settled::Processed | Settled::Unmatched) {
                span.record("otel.status_code", "ERROR");
            }
        }
        done_links.extend(
            outcomes
                .iter()
                .filter(|(delivery, _)| !lost.contains(&delivery.id))
                .filter_map(|(delivery, _)| delivery.link.as_ref().map(|(_, l)| *l)),
        );
        for id in lost {
            tracing::warn!(delivery = %id, "inbox: lease lost before settling; the new owner finishes it");
        }
        result.settled_links = done_links;
        result
    }

    /// Apply one staged delivery in `batch`, as a unit of its own: an error, a panic or a hang
    /// becomes its failure (and poisons the batch, which the caller then runs again without it).
    async fn apply_in_batch(
        &self,
        batch: &BatchTx,
        delivery: &ClaimedDelivery,
        link: &Link,
        prepared: Vec<Prepared>,
        origin: &Origin,
        settle: bool,
    ) -> Result<Vec<Event>, Outcome> {
        let limit = self.inner.config.worker.process_timeout;
        let work = async {
            let tx = batch
                .begin_link_update(&link.tenant_id, &link.id)
                .await?
                .ok_or_else(|| EngineError::link_not_found(link.id))?;
            let (_, events) = apply_prepared(tx, prepared, origin, settle).await?;
            if let Some(hook) = &self.inner.config.worker.after_apply {
                (hook.0)(&delivery.id)
                    .map_err(|e| EngineError::Store(coverwatch_store::StoreError::Database(e)))?;
            }
            Ok::<_, EngineError>(events)
        };
        match isolated(limit, work).await {
            Ok(Ok(events)) => Ok(events),
            Ok(Err(err)) => Err(failed(err)),
            Err(failure) => Err(self.contained(delivery, failure)),
        }
    }

    /// Write what became of a delivery that was not applied, with the batch (written when it
    /// commits, which tells whether its lease was lost meanwhile).
    fn record_outcome(
        &self,
        owner: &str,
        batch: &BatchTx,
        delivery: &ClaimedDelivery,
        outcome: &Outcome,
    ) {
        let config = &self.inner.config.worker;
        let id = delivery.id;
        let attempts = delivery.attempts;
        match outcome {
            Outcome::Unmatched(reason) => {
                tracing::warn!(delivery = %id, provider = %delivery.provider, %reason, "inbox: delivery matches no link; kept as unmatched");
                batch.settle_delivery(&id, owner, DeliveryStatus::Unmatched, Some(reason));
            }
            Outcome::Failed { error, transient }
                if *transient && attempts < config.max_attempts =>
            {
                let delay = config
                    .backoff
                    .delay(attempts, rand::thread_rng().r#gen::<f64>());
                let retry_at = Utc::now()
                    + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::seconds(1));
                tracing::info!(delivery = %id, attempts, %error, retry_in_ms = delay.as_millis() as u64, "inbox: will retry");
                batch.retry_delivery(&id, owner, error, retry_at);
            }
            Outcome::Failed { error, .. } => {
                tracing::error!(delivery = %id, attempts, %error, "inbox: delivery dead-lettered");
                batch.settle_delivery(&id, owner, DeliveryStatus::Dead, Some(error));
            }
        }
    }

    /// Parse and attribute one delivery as a unit of its own: an error, a panic or a hang in it
    /// becomes this delivery's failure (retried, then dead-lettered with the reason), never the
    /// worker's, so one tenant's poisoned input cannot stop anyone else's deliveries.
    async fn attribute_isolated(&self, delivery: &ClaimedDelivery) -> Result<Attributed, Outcome> {
        let limit = self.inner.config.worker.process_timeout;
        match isolated(limit, self.try_attribute(delivery)).await {
            Ok(Ok(found)) => found,
            Ok(Err(err)) => Err(failed(err)),
            Err(failure) => Err(self.contained(delivery, failure)),
        }
    }

    /// Make the vendor calls of an attributed delivery, isolated like
    /// [`Self::attribute_isolated`].
    async fn stage(
        &self,
        owner: &str,
        delivery: &ClaimedDelivery,
        found: Attributed,
        pre: Option<LinkRead>,
    ) -> Result<Box<Staged>, Outcome> {
        let limit = self.inner.config.worker.process_timeout;
        match isolated(limit, self.try_stage(owner, delivery, found, pre)).await {
            Ok(Ok(staged)) => staged,
            Ok(Err(err)) => Err(failed(err)),
            Err(failure) => Err(self.contained(delivery, failure)),
        }
    }

    fn contained(&self, delivery: &ClaimedDelivery, failure: UnitFailure) -> Outcome {
        if let UnitFailure::Panicked(message) = &failure {
            tracing::error!(delivery = %delivery.id, provider = %delivery.provider, panic = %message, "inbox: processing a delivery panicked; the delivery fails, the worker goes on");
        }
        Outcome::Failed {
            transient: true,
            error: failure.to_string(),
        }
    }

    async fn try_attribute(
        &self,
        delivery: &ClaimedDelivery,
    ) -> Result<Result<Attributed, Outcome>, EngineError> {
        let provider = self
            .provider_for(&delivery.provider, delivery.connection_id.as_ref())
            .await?;
        let inbound = InboundWebhook {
            path: delivery.path.clone(),
            headers: delivery.headers.clone(),
            body: delivery.body.clone(),
            received_at: delivery.received_at,
        };
        let parsed = match provider.parse_webhook(&inbound) {
            Ok(parsed) => parsed,
            Err(err @ ProviderError::Malformed { .. }) => {
                return Ok(Err(Outcome::Failed {
                    error: err.to_string(),
                    transient: false,
                }));
            }
            Err(err) => return Err(err.into()),
        };
        if let Some((tenant, link)) = &delivery.link {
            // Set at ingest only from a per-link URL token or through `link_named_by`, so it
            // was proven then. The link is read once, under its lock, when staged.
            return Ok(Ok(Attributed {
                parsed,
                tenant: tenant.clone(),
                link: *link,
            }));
        }
        Ok(
            match self
                .link_named_by(
                    &delivery.provider,
                    delivery.connection_id.as_ref(),
                    &parsed.attribution,
                )
                .await?
            {
                Matched::Link(record) => Ok(Attributed {
                    parsed,
                    tenant: record.link.tenant_id,
                    link: record.link.id,
                }),
                Matched::None(reason) => Err(Outcome::Unmatched(reason)),
            },
        )
    }

    async fn try_stage(
        &self,
        owner: &str,
        delivery: &ClaimedDelivery,
        found: Attributed,
        pre: Option<LinkRead>,
    ) -> Result<Result<Box<Staged>, Outcome>, EngineError> {
        let Attributed {
            parsed,
            tenant,
            link,
        } = found;
        let (working, record) = match pre {
            Some(read) => read,
            None => {
                let working = self.lock_link(link).await;
                // Read under the lock: another delivery of this link may have just changed it.
                let record = self.inner.store.get_link(&tenant, &link).await?;
                (working, record)
            }
        };
        let Some(record) = record else {
            return Ok(Err(Outcome::Unmatched(format!(
                "link {link} it was attributed to is gone"
            ))));
        };
        let mut prepared = Vec::with_capacity(parsed.happenings.len());
        for happening in parsed.happenings {
            prepared.push(self.prepare(&record, happening).await?);
        }
        let retry = prepared
            .iter()
            .find_map(|p| p.retry_reason().map(str::to_owned));
        let origin = Origin {
            delivery: Some((delivery.id, owner.to_owned())),
            detail: parsed.detail,
            occurred_at: parsed.occurred_at.unwrap_or(delivery.received_at),
        };
        let prepared = self.commit_folds(&record.link, prepared, &origin).await?;
        Ok(Ok(Box::new(Staged {
            link: record.link,
            prepared,
            origin,
            retry,
            working,
        })))
    }

    /// The first link of `provider` that one of the delivery's candidates proves it belongs to:
    /// a session proof whose hash we stored for the very link it names, or a vendor id recorded
    /// on a link after an earlier, proven delivery. A bare link id proves nothing (the end user
    /// may have typed it into the session URL). Only links of `connection` (the endpoint that
    /// took the delivery; `None`: the default connection) count: a delivery that arrived on
    /// one connection's endpoint, authenticated with its secrets, says nothing about another
    /// connection's links, and is kept unmatched instead. Without a match, says why.
    pub(crate) async fn link_named_by(
        &self,
        provider: &ProviderId,
        connection: Option<&ConnectionId>,
        candidates: &[Attribution],
    ) -> Result<Matched, EngineError> {
        let store = &self.inner.store;
        let mut unproven = Vec::new();
        let mut vendor_ids = Vec::new();
        for candidate in candidates {
            match candidate {
                Attribution::Session { link, proof } => {
                    let owner = store
                        .find_link_by_external_id(
                            provider.clone(),
                            SESSION_PROOF_KIND,
                            &token_hash(proof.expose()),
                        )
                        .await?
                        .filter(|r| r.link.provider == *provider);
                    match owner {
                        Some(record) if record.connection_id.as_ref() != connection => unproven
                            .push(format!(
                                "it names link {link}, which another vendor connection serves"
                            )),
                        Some(record) if record.link.id == *link => {
                            return Ok(Matched::Link(Box::new(record)));
                        }
                        Some(_) => unproven.push(format!(
                            "it names link {link} with the session proof of another link"
                        )),
                        None => unproven.push(format!(
                            "it names link {link} with a session proof that is not that link's"
                        )),
                    }
                }
                Attribution::Link(link) => {
                    unproven.push(format!("it names link {link} without a session proof"))
                }
                // Our own secrets' hashes are not vendor ids: no delivery names a link by them.
                Attribution::External { kind, .. }
                    if kind == SESSION_PROOF_KIND || kind == WEBHOOK_TOKEN_KIND => {}
                Attribution::External { kind, value } => {
                    if let Some(record) = store
                        .find_link_by_external_id(provider.clone(), kind, value)
                        .await?
                        .filter(|r| r.link.provider == *provider)
                    {
                        if record.connection_id.as_ref() == connection {
                            return Ok(Matched::Link(Box::new(record)));
                        }
                        unproven.push(format!(
                            "its {kind} {value} belongs to a link another vendor connection serves"
                        ));
                        continue;
                    }
                    vendor_ids.push(format!("{kind} {value}"));
                }
                Attribution::Unknown => {}
            }
        }
        let mut reason = String::from("no link matches: ");
        if !unproven.is_empty() {
            reason.push_str(&unproven.join("; "));
            reason.push_str("; ");
        }
        if vendor_ids.is_empty() {
            reason.push_str("it carries no vendor id of a linked account");
        } else {
            reason.push_str(&format!(
                "no link holds its vendor ids ({})",
                vendor_ids.join(", ")
            ));
        }
        Ok(Matched::None(reason))
    }
}

/// The outcome of attributing a delivery.
pub(crate) enum Matched {
    Link(Box<LinkRecord>),
    /// No link it can be proven to belong to, and why: kept as `unmatched`, never applied.
    None(String),
}
