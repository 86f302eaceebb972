//! The operator's use-cases on the inbox: look at stored deliveries, replay one that was
//! dead-lettered or unmatched, and the retention job that drops the raw bodies of deliveries
//! processed long ago. Replay only puts a delivery back to `pending`: the worker then runs it
//! through the normal pipeline, whose exactly-once commit makes a replay of a delivery that
//! already took effect harmless.

use std::time::Duration;

use chrono::{DateTime, Utc};
use coverwatch_core::ids::DeliveryId;
use coverwatch_store::{DeliveryFilter, DeliveryPage, DeliveryRecord, Replay};
use tokio::sync::watch;

use crate::{Engine, EngineError};

/// How the retention job behaves.
#[derive(Debug, Clone)]
pub struct RetentionConfig {
    /// Raw bodies of deliveries processed (`done`) longer ago than this are dropped.
    pub processed_body_age: Duration,
    /// How often the job runs (it also runs once at start).
    pub interval: Duration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            processed_body_age: Duration::from_secs(30 * 86_400),
            interval: Duration::from_secs(3_600),
        }
    }
}

fn delivery_not_found(id: &DeliveryId) -> EngineError {
    EngineError::NotFound {
        what: "delivery",
        id: id.to_string(),
    }
}

impl Engine {
    /// Stored deliveries matching `filter`, in receipt order, without their bodies.
    pub async fn list_deliveries(
        &self,
        filter: &DeliveryFilter,
    ) -> Result<DeliveryPage, EngineError> {
        Ok(self.inner.store.list_deliveries(filter).await?)
    }

    /// One stored delivery with its raw body (unless retention purged it).
    pub async fn get_delivery(&self, id: &DeliveryId) -> Result<DeliveryRecord, EngineError> {
        self.inner
            .store
            .get_delivery(id)
            .await?
            .ok_or_else(|| delivery_not_found(id))
    }

    /// Put a dead, unmatched or done delivery back to `pending` with its attempts reset and
    /// wake the worker. A pending delivery is FAILED_PRECONDITION (the worker has it), and so
    /// is one whose raw body was purged (nothing left to process).
    pub async fn replay_delivery(&self, id: &DeliveryId) -> Result<DeliveryRecord, EngineError> {
        match self.inner.store.replay_delivery(id).await? {
            Replay::Replayed(record) => {
                tracing::info!(delivery = %id, provider = %record.provider, "inbox: delivery replayed");
                self.inner.inbox_wake.notify_one();
                Ok(record)
            }
            Replay::AlreadyPending(_) => Err(EngineError::FailedPrecondition(format!(
                "delivery {id} is pending already: the worker will process it"
            ))),
            Replay::BodyPurged(_) => Err(EngineError::FailedPrecondition(format!(
                "delivery {id} cannot be replayed: its raw body was purged by retention"
            ))),
            Replay::NotFound => Err(delivery_not_found(id)),
        }
    }

    /// Drop the raw bodies of deliveries processed before `cutoff`; returns how many.
    pub async fn purge_processed_bodies(&self, cutoff: DateTime<Utc>) -> Result<u64, EngineError> {
        Ok(self.inner.store.purge_processed_bodies(cutoff).await?)
    }

    /// Purge once now, then every `retention.interval`, until `shutdown` turns true. A failed
    /// round is logged and tried again at the next one.
    pub async fn run_retention(&self, mut shutdown: watch::Receiver<bool>) {
        let config = self.inner.config.retention.clone();
        loop {
            if *shutdown.borrow() {
                return;
            }
            let age = chrono::Duration::from_std(config.processed_body_age)
                .unwrap_or(chrono::Duration::MAX);
            let cutoff = Utc::now()
                .checked_sub_signed(age)
                .unwrap_or(DateTime::<Utc>::MIN_UTC);
            match self.purge_processed_bodies(cutoff).await {
                Ok(0) => {}
                Ok(purged) => {
                    tracing::info!(purged, %cutoff, "retention: dropped raw bodies of processed deliveries")
                }
                Err(err) => {
                    tracing::warn!(error = %err, "retention: purge failed; next round retries")
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(config.interval) => {}
                _ = shutdown.changed() => {}
            }
        }
    }
}
