//! The operator's use-cases on the inbox: look at stored deliveries, replay one that was
//! dead-lettered or unmatched, and the retention job that drops the raw bodies of deliveries
//! processed long ago. Replay only puts a delivery back to `pending`: the worker then runs it
//! through the normal pipeline, whose exactly-once commit makes a replay of a delivery that
//! already took effect harmless.

use std::time::Duration;

use chrono::{DateTime, Utc};
use coverwatch_core::ids::DeliveryId;
use coverwatch_store::{DeliveryFilter, DeliveryPage, DeliveryRecord, DeliveryStatus, Replay};
use tokio::sync::watch;

use crate::{Engine, EngineError};

/// How the retention job behaves.
#[derive(Debug, Clone)]
pub struct RetentionConfig {
    /// Raw bodies of deliveries processed (`done`) longer ago than this are dropped.
    pub processed_body_age: Duration,
    /// Raw bodies of dead-lettered deliveries settled longer ago than this are dropped: by then
    /// nobody will replay them, and they may carry secrets.
    pub dead_body_age: Duration,
    /// Raw bodies of deliveries that matched no link, settled longer ago than this.
    pub unmatched_body_age: Duration,
    /// How often the job runs (it also runs once at start).
    pub interval: Duration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            processed_body_age: Duration::from_secs(30 * 86_400),
            dead_body_age: Duration::from_secs(90 * 86_400),
            unmatched_body_age: Duration::from_secs(90 * 86_400),
            interval: Duration::from_secs(3_600),
        }
    }
}

/// What a masked value reads as in an admin answer.
pub const REDACTED: &str = "[redacted]";

/// Header names whose values grant access, whoever sends them.
const SECRET_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
    "x-client-secret",
];

/// JSON field names (compared without case, `_` or `-`) whose values grant access: Axle's
/// `authCode` and `accessToken`, Canopy's `reconnect_token` and `reconnect_url`, and the usual
/// names of credentials.
const SECRET_FIELDS: &[&str] = &[
    "authcode",
    "code",
    "token",
    "accesstoken",
    "refreshtoken",
    "idtoken",
    "reconnecttoken",
    "reconnecturl",
    "pulljwt",
    "jwt",
    "password",
    "secret",
    "clientsecret",
    "apikey",
    "consenttoken",
    "authorization",
];

fn is_secret_field(name: &str) -> bool {
    let normalized: String = name
        .chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect();
    SECRET_FIELDS.contains(&normalized.as_str())
        || normalized.ends_with("token")
        || normalized.ends_with("secret")
        || normalized.ends_with("password")
}

/// Mask the secret fields of `value`; `true` when there was one.
fn redact_json(value: &mut serde_json::Value) -> bool {
    let mut masked = false;
    match value {
        serde_json::Value::Object(map) => {
            for (name, field) in map.iter_mut() {
                if is_secret_field(name) && !field.is_null() {
                    *field = serde_json::Value::String(REDACTED.to_owned());
                    masked = true;
                } else {
                    masked |= redact_json(field);
                }
            }
        }
        serde_json::Value::Array(items) => {
            for item in items {
                masked |= redact_json(item);
            }
        }
        _ => {}
    }
    masked
}

/// A delivery as an operator may see it: the values of secret headers (the well-known ones
/// and `secret_headers`, lowercase) and of secret JSON fields anywhere in the body replaced by
/// [`REDACTED`]. A body that is not JSON is shown as it is: no vendor sends one, and an
/// operator looking into a malformed delivery needs its bytes.
pub fn redact_delivery(mut record: DeliveryRecord, secret_headers: &[String]) -> DeliveryRecord {
    for (name, value) in &mut record.headers {
        let name = name.to_ascii_lowercase();
        if SECRET_HEADERS.contains(&name.as_str()) || secret_headers.contains(&name) {
            *value = REDACTED.to_owned();
        }
    }
    // A body without secrets stays byte for byte as received; one with secrets is written
    // again from its parsed form (same content, fields in sorted order).
    if let Some(body) = &mut record.body
        && let Ok(mut json) = serde_json::from_slice::<serde_json::Value>(body)
        && redact_json(&mut json)
        && let Ok(masked) = serde_json::to_vec(&json)
    {
        *body = masked;
    }
    record
}

fn delivery_not_found(id: &DeliveryId) -> EngineError {
    EngineError::NotFound {
        what: "delivery",
        id: id.to_string(),
    }
}

impl Engine {
    /// Stored deliveries matching `filter`, in receipt order, without their bodies and with
    /// secret headers masked.
    pub async fn list_deliveries(
        &self,
        filter: &DeliveryFilter,
    ) -> Result<DeliveryPage, EngineError> {
        let mut page = self.inner.store.list_deliveries(filter).await?;
        let secret = self.secret_headers().await?;
        page.deliveries = page
            .deliveries
            .into_iter()
            .map(|record| redact_delivery(record, &secret))
            .collect();
        Ok(page)
    }

    /// One stored delivery with its raw body (unless retention purged it), secrets masked.
    pub async fn get_delivery(&self, id: &DeliveryId) -> Result<DeliveryRecord, EngineError> {
        let secret = self.secret_headers().await?;
        self.inner
            .store
            .get_delivery(id)
            .await?
            .map(|record| redact_delivery(record, &secret))
            .ok_or_else(|| delivery_not_found(id))
    }

    /// The configured vendors' secret headers and those of every tenant's connection (read
    /// each time: a connection put on another replica must be masked here at once).
    async fn secret_headers(&self) -> Result<Vec<String>, EngineError> {
        let mut names = self.inner.config.secret_headers.clone();
        names.extend(self.inner.store.connection_secret_headers().await?);
        Ok(names)
    }

    /// Put a dead, unmatched or done delivery back to `pending` with its attempts reset and
    /// wake the worker. A pending delivery is FAILED_PRECONDITION (the worker has it), and so
    /// is one whose raw body was purged (nothing left to process).
    pub async fn replay_delivery(&self, id: &DeliveryId) -> Result<DeliveryRecord, EngineError> {
        match self.inner.store.replay_delivery(id).await? {
            Replay::Replayed(record) => {
                tracing::info!(delivery = %id, provider = %record.provider, "inbox: delivery replayed");
                self.inner.inbox_wake.notify_one();
                Ok(redact_delivery(record, &self.secret_headers().await?))
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

    /// One round of retention: drop the raw bodies of done, dead and unmatched deliveries
    /// settled longer ago than their configured age. Returns how many bodies of each status
    /// were dropped; stops at the first failure (the next round retries).
    pub async fn run_retention_once(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Vec<(DeliveryStatus, u64)>, EngineError> {
        let config = &self.inner.config.retention;
        let mut purged = Vec::new();
        for (status, age) in [
            (DeliveryStatus::Done, config.processed_body_age),
            (DeliveryStatus::Dead, config.dead_body_age),
            (DeliveryStatus::Unmatched, config.unmatched_body_age),
        ] {
            let age = chrono::Duration::from_std(age).unwrap_or(chrono::Duration::MAX);
            let cutoff = now
                .checked_sub_signed(age)
                .unwrap_or(DateTime::<Utc>::MIN_UTC);
            let n = self.inner.store.purge_bodies(status, cutoff).await?;
            if n > 0 {
                tracing::info!(purged = n, status = status.as_str(), %cutoff, "retention: dropped raw bodies of settled deliveries");
            }
            purged.push((status, n));
        }
        Ok(purged)
    }

    /// Purge once now, then every `retention.interval`, until `shutdown` turns true. A failed
    /// round is logged and tried again at the next one.
    pub async fn run_retention(&self, mut shutdown: watch::Receiver<bool>) {
        let interval = self.inner.config.retention.interval;
        loop {
            if *shutdown.borrow() {
                return;
            }
            if let Err(err) = self.run_retention_once(Utc::now()).await {
                tracing::warn!(error = %err, "retention: purge failed; next round retries")
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.changed() => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coverwatch_core::ProviderId;

    fn record(headers: &[(&str, &str)], body: &str) -> DeliveryRecord {
        DeliveryRecord {
            seq: 1,
            id: DeliveryId::new(),
            provider: ProviderId::from_static("canopy"),
            dedupe_key: "id:1".into(),
            link: None,
            path: String::new(),
            headers: headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
            body: Some(body.as_bytes().to_vec()),
            body_size: Some(body.len() as u64),
            status: DeliveryStatus::Done,
            attempts: 1,
            last_error: None,
            received_at: Utc::now(),
            next_attempt_at: Utc::now(),
            processed_at: None,
        }
    }

    #[test]
    fn secret_headers_and_fields_are_masked_everything_else_kept() {
        let masked = redact_delivery(
            record(
                &[
                    ("Authorization", "Bearer abc"),
                    ("x-axle-secret", "shared-value"),
                    ("content-type", "application/json"),
                ],
                r#"{"type":"ignition.completed","data":{"authCode":"c0de","ref":"ign_1",
                    "nested":[{"reconnect_url":"https://x/?reconnectToken=t","reconnect_token":"t",
                    "accessToken":"at","pull_jwt":"j","postal_code":"12345","code":"otp"}]}}"#,
            ),
            &["x-axle-secret".to_owned()],
        );
        assert_eq!(
            masked.headers,
            vec![
                ("Authorization".to_owned(), REDACTED.to_owned()),
                ("x-axle-secret".to_owned(), REDACTED.to_owned()),
                ("content-type".to_owned(), "application/json".to_owned()),
            ]
        );
        let body: serde_json::Value = serde_json::from_slice(&masked.body.unwrap()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"type":"ignition.completed","data":{"authCode":REDACTED,"ref":"ign_1",
                "nested":[{"reconnect_url":REDACTED,"reconnect_token":REDACTED,"accessToken":REDACTED,
                "pull_jwt":REDACTED,"postal_code":"12345","code":REDACTED}]}})
        );
    }

    #[test]
    fn a_body_without_secrets_is_kept_byte_for_byte() {
        let raw = r#"{"type": "changed",  "id":"evt-1"}"#;
        let masked = redact_delivery(record(&[], raw), &[]);
        assert_eq!(masked.body.unwrap(), raw.as_bytes());
    }

    #[test]
    fn a_body_that_is_not_json_is_shown_as_it_is() {
        let masked = redact_delivery(record(&[], "token=abc; not json"), &[]);
        assert_eq!(masked.body.unwrap(), b"token=abc; not json");
    }
}
