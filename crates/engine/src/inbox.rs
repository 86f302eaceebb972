//! The inbox worker: claims stored deliveries under a lease, turns each into state changes and
//! events through its provider, and settles it in the same transaction. Transient failures
//! retry with capped exponential backoff and jitter; past the limit a delivery is dead-lettered
//! (kept, with its last error, for replay). A delivery that matches no link is kept as
//! `unmatched`, never dropped.

use chrono::Utc;
use coverwatch_core::ProviderKind;
use coverwatch_core::ids::DeliveryId;
use coverwatch_core::provider::ProviderError;
use coverwatch_core::webhook::{Attribution, InboundWebhook};
use coverwatch_store::{
    ClaimedDelivery, DeliveryStatus, LinkRecord, SESSION_PROOF_KIND, StoreError, WEBHOOK_TOKEN_KIND,
};
use futures::StreamExt;
use rand::Rng;
use tokio::sync::watch;
use tracing::Instrument;
use tracing::field::{Empty, display};

use crate::apply::Origin;
use crate::isolation::{UnitFailure, isolated};
use crate::links::token_hash;
use crate::telemetry::{self, Settled};
use crate::{Engine, EngineError};

/// Whether trying again later may succeed where this failed because of the database. Besides
/// "unavailable", any database error counts: a connection the server terminated in the middle of
/// a statement (a restart, a failover, `pg_terminate_backend`: SQLSTATE 57P01) reaches us as a
/// database error, not as a connection error, and nothing may be given up on because the
/// database restarted. Deliveries still stop after `max_attempts`; streams back off.
pub(crate) fn database_may_recover(err: &EngineError) -> bool {
    matches!(
        err,
        EngineError::Store(StoreError::Unavailable(_) | StoreError::Database(_))
    )
}

enum Outcome {
    Done,
    Unmatched(String),
    Failed { error: String, transient: bool },
}

impl Engine {
    /// Work off the inbox until `shutdown` turns true; in-flight deliveries are finished first.
    pub async fn run_inbox_worker(&self, mut shutdown: watch::Receiver<bool>) {
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
                    .renew_leases(&config.owner, &stranded, Utc::now())
                    .await
                {
                    Ok(_) => stranded.clear(),
                    Err(err) => {
                        tracing::debug!(error = %err, count = stranded.len(), "inbox: cannot release unsettled leases yet")
                    }
                }
            }
            let processed = match self.process_batch(&mut stranded).await {
                Ok(n) => n,
                Err(err) => {
                    tracing::warn!(error = %err, "inbox: could not claim deliveries");
                    0
                }
            };
            if processed > 0 {
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
        self.process_batch(&mut Vec::new()).await
    }

    /// [`Self::process_inbox_batch`], adding to `unsettled` the deliveries whose outcome could
    /// not be recorded (their lease is still ours).
    async fn process_batch(&self, unsettled: &mut Vec<DeliveryId>) -> Result<usize, EngineError> {
        let config = &self.inner.config.worker;
        let lease_until = Utc::now()
            + chrono::Duration::from_std(config.lease).unwrap_or(chrono::Duration::seconds(60));
        let claimed = self
            .inner
            .store
            .claim_deliveries(&config.owner, lease_until, config.batch)
            .await?;
        let count = claimed.len();
        if count == 0 {
            return Ok(0);
        }
        let held: std::sync::Mutex<Vec<DeliveryId>> =
            std::sync::Mutex::new(claimed.iter().map(|d| d.id).collect());
        let work = futures::stream::iter(claimed)
            .map(|delivery| self.settle_in_link_order(delivery, &held))
            .buffer_unordered(config.concurrency.max(1))
            .flat_map(futures::stream::iter)
            .collect::<Vec<DeliveryId>>();
        let mut work = std::pin::pin!(work);
        // Keep the leases alive while a slow vendor holds us up, so that no other worker takes
        // over a delivery this one is still working on. A crashed worker renews nothing, and
        // its deliveries are taken over when their lease runs out.
        let renew_every = config.lease / 3;
        loop {
            tokio::select! {
                stranded = &mut work => {
                    unsettled.extend(stranded);
                    break;
                }
                () = tokio::time::sleep(renew_every) => {
                    let until = Utc::now()
                        + chrono::Duration::from_std(config.lease).unwrap_or(chrono::Duration::seconds(60));
                    let ids = held.lock().unwrap_or_else(|p| p.into_inner()).clone();
                    if let Err(err) = self.inner.store.renew_leases(&config.owner, &ids, until).await {
                        tracing::warn!(error = %err, "inbox: could not renew leases");
                    }
                }
            }
        }
        Ok(count)
    }

    /// Settle `first`, then, while its link has the next delivery ready, that one too, up to a
    /// batch's worth: one link's deliveries run one after another in receipt order without a
    /// full claim each. Returns the ids whose outcome could not be recorded.
    async fn settle_in_link_order(
        &self,
        first: ClaimedDelivery,
        held: &std::sync::Mutex<Vec<DeliveryId>>,
    ) -> Vec<DeliveryId> {
        let config = &self.inner.config.worker;
        let mut unsettled = Vec::new();
        let mut next = Some(first);
        let mut settled = 0;
        while let Some(delivery) = next.take() {
            let link = delivery.link.as_ref().map(|(_, link)| *link);
            if let Some(id) = self.settle(delivery).await {
                // The database is away; the rest waits for the next claim.
                unsettled.push(id);
                break;
            }
            settled += 1;
            let Some(link) = link else { break };
            if settled >= config.batch {
                break;
            }
            let lease_until = Utc::now()
                + chrono::Duration::from_std(config.lease).unwrap_or(chrono::Duration::seconds(60));
            next = match self
                .inner
                .store
                .claim_next_of_link(&config.owner, &link, lease_until)
                .await
            {
                Ok(claimed) => claimed,
                Err(err) => {
                    tracing::debug!(%link, error = %err, "inbox: next delivery of the link left to the next claim");
                    None
                }
            };
            if let Some(delivery) = &next {
                held.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(delivery.id);
            }
        }
        unsettled
    }

    /// Process one delivery and record the outcome, under a span of its own that continues the
    /// trace its ingest was part of; returns its id if the outcome could not be recorded.
    async fn settle(&self, delivery: ClaimedDelivery) -> Option<DeliveryId> {
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
        self.settle_in_span(delivery).instrument(span).await
    }

    async fn settle_in_span(&self, delivery: ClaimedDelivery) -> Option<DeliveryId> {
        let config = &self.inner.config.worker;
        let store = &self.inner.store;
        let owner = config.owner.as_str();
        let id = delivery.id;
        let attempts = delivery.attempts;
        let started = std::time::Instant::now();
        let outcome = self.process_delivery(&delivery).await;
        let span = tracing::Span::current();
        span.record(
            "outcome",
            match &outcome {
                Outcome::Done => "done",
                Outcome::Unmatched(_) => "unmatched",
                Outcome::Failed { transient, .. }
                    if *transient && attempts < config.max_attempts =>
                {
                    "retry"
                }
                Outcome::Failed { .. } => "dead",
            },
        );
        if matches!(outcome, Outcome::Failed { .. }) {
            span.record("otel.status_code", "ERROR");
        }
        let settled = match &outcome {
            Outcome::Done => Settled::Processed,
            Outcome::Unmatched(_) => Settled::Unmatched,
            Outcome::Failed { transient, .. } if *transient && attempts < config.max_attempts => {
                Settled::Retried
            }
            Outcome::Failed { .. } => Settled::DeadLettered,
        };
        telemetry::delivery_attempt(delivery.provider, settled, started.elapsed());
        let result = match outcome {
            Outcome::Done => Ok(true),
            Outcome::Unmatched(reason) => {
                tracing::warn!(delivery = %id, provider = %delivery.provider, %reason, "inbox: delivery matches no link; kept as unmatched");
                store
                    .settle_delivery(&id, owner, DeliveryStatus::Unmatched, Some(&reason))
                    .await
            }
            Outcome::Failed { error, transient } if transient && attempts < config.max_attempts => {
                let delay = config
                    .backoff
                    .delay(attempts, rand::thread_rng().r#gen::<f64>());
                let retry_at = Utc::now()
                    + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::seconds(1));
                tracing::info!(delivery = %id, attempts, %error, retry_in_ms = delay.as_millis() as u64, "inbox: will retry");
                store.retry_delivery(&id, owner, &error, retry_at).await
            }
            Outcome::Failed { error, .. } => {
                tracing::error!(delivery = %id, attempts, %error, "inbox: delivery dead-lettered");
                store
                    .settle_delivery(&id, owner, DeliveryStatus::Dead, Some(&error))
                    .await
            }
        };
        match result {
            Ok(true) => None,
            Ok(false) => {
                tracing::warn!(delivery = %id, "inbox: lease lost before settling; the new owner finishes it");
                None
            }
            Err(err) => {
                tracing::warn!(delivery = %id, error = %err, "inbox: could not settle; retried once the database answers again");
                Some(id)
            }
        }
    }

    /// Process one delivery as a unit of its own: an error, a panic or a hang in it becomes
    /// this delivery's failure (retried, then dead-lettered with the reason), never the
    /// worker's, so one tenant's poisoned input cannot stop anyone else's deliveries.
    async fn process_delivery(&self, delivery: &ClaimedDelivery) -> Outcome {
        let limit = self.inner.config.worker.process_timeout;
        match isolated(limit, self.try_process(delivery)).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(err)) => Outcome::Failed {
                transient: err.is_transient() || database_may_recover(&err),
                error: err.to_string(),
            },
            Err(failure) => {
                if let UnitFailure::Panicked(message) = &failure {
                    tracing::error!(delivery = %delivery.id, provider = %delivery.provider, panic = %message, "inbox: processing a delivery panicked; the delivery fails, the worker goes on");
                }
                Outcome::Failed {
                    transient: true,
                    error: failure.to_string(),
                }
            }
        }
    }

    async fn try_process(&self, delivery: &ClaimedDelivery) -> Result<Outcome, EngineError> {
        let provider = self.inner.providers.get(delivery.provider)?.clone();
        let inbound = InboundWebhook {
            path: delivery.path.clone(),
            headers: delivery.headers.clone(),
            body: delivery.body.clone(),
            received_at: delivery.received_at,
        };
        let parsed = match provider.parse_webhook(&inbound) {
            Ok(parsed) => parsed,
            Err(err @ ProviderError::Malformed { .. }) => {
                return Ok(Outcome::Failed {
                    error: err.to_string(),
                    transient: false,
                });
            }
            Err(err) => return Err(err.into()),
        };
        let record = match self.attribute(delivery, &parsed.attribution).await? {
            Matched::Link(record) => record,
            Matched::None(reason) => return Ok(Outcome::Unmatched(reason)),
        };
        if delivery.link.is_none() {
            // Attributed only now: the span could not name the link when it began.
            tracing::Span::current().record("link_id", display(record.link.id));
        }
        let _working = self.lock_link(record.link.id).await;
        // Read again under the lock: another delivery of this link may have just changed it.
        let record = self
            .link_record(&record.link.tenant_id, &record.link.id)
            .await?;
        let mut prepared = Vec::with_capacity(parsed.happenings.len());
        for happening in parsed.happenings {
            prepared.push(self.prepare(&record, happening, &parsed.detail).await?);
        }
        let retry = prepared
            .iter()
            .find_map(|p| p.retry_reason().map(str::to_owned));
        let origin = Origin {
            delivery: Some((delivery.id, self.inner.config.worker.owner.clone())),
            detail: parsed.detail,
            occurred_at: parsed.occurred_at.unwrap_or(delivery.received_at),
        };
        self.commit_prepared(&record.link, prepared, origin, retry.is_none())
            .await?;
        Ok(match retry {
            // What could be applied is; the rest is tried again with the delivery.
            Some(error) => Outcome::Failed {
                error,
                transient: true,
            },
            None => Outcome::Done,
        })
    }

    /// The link a delivery is about: named by its URL, else by what the vendor put in it.
    async fn attribute(
        &self,
        delivery: &ClaimedDelivery,
        candidates: &[Attribution],
    ) -> Result<Matched, EngineError> {
        if let Some((tenant, link)) = &delivery.link {
            // Set at ingest only from a per-link URL token or through `link_named_by`, so it
            // was proven then.
            return Ok(match self.inner.store.get_link(tenant, link).await? {
                Some(record) => Matched::Link(Box::new(record)),
                None => Matched::None(format!("link {link} it was attributed to is gone")),
            });
        }
        self.link_named_by(delivery.provider, candidates).await
    }

    /// The first link of `provider` that one of the delivery's candidates proves it belongs to:
    /// a session proof whose hash we stored for the very link it names, or a vendor id recorded
    /// on a link after an earlier, proven delivery. A bare link id proves nothing (the end user
    /// may have typed it into the session URL). Without a match, says why.
    pub(crate) async fn link_named_by(
        &self,
        provider: ProviderKind,
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
                            provider,
                            SESSION_PROOF_KIND,
                            &token_hash(proof.expose()),
                        )
                        .await?
                        .filter(|r| r.link.provider == provider);
                    match owner {
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
                        .find_link_by_external_id(provider, kind, value)
                        .await?
                        .filter(|r| r.link.provider == provider)
                    {
                        return Ok(Matched::Link(Box::new(record)));
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
