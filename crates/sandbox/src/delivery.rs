//! Webhook delivery shared by both simulators: one [`WebhookSender`] POSTs every webhook, applies
//! webhook faults, retries per the vendor's [`RetrySchedule`], and records every attempt in the
//! [`DeliveryLog`] that tests read and wait on.
//!
//! Deliveries leave in the order they were handed to [`WebhookSender::send`] (one queue), unless a
//! fault says otherwise; retries run on their own timers and do not hold the queue.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use crate::clock::SandboxClock;
use crate::faults::{FaultEffect, Faults, malform_bytes};

/// When a vendor retries a webhook that was not answered with 200.
///
/// The delay before retry number `n` (1-based) is `(base_secs + n^power) * time_scale` seconds.
/// Canopy's documented schedule is `60s + n^4 s` for up to 10 retries; tests compress it with a
/// small `time_scale` (0.001 turns the first retry's 61 s into 61 ms).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct RetrySchedule {
    pub max_retries: u32,
    pub base_secs: f64,
    pub power: u32,
    pub time_scale: f64,
}

impl RetrySchedule {
    /// Canopy: up to 10 retries on a non-200, `60 s + attempt^4 s` apart.
    pub fn canopy() -> Self {
        Self {
            max_retries: 10,
            base_secs: 60.0,
            power: 4,
            time_scale: 1.0,
        }
    }

    /// Axle documents no retry policy. The simulator assumes a modest at-least-once sender:
    /// 3 retries, `30 s + attempt^2 s` apart, so integrations are exercised against retries
    /// without depending on a specific schedule.
    pub fn axle() -> Self {
        Self {
            max_retries: 3,
            base_secs: 30.0,
            power: 2,
            time_scale: 1.0,
        }
    }

    pub fn none() -> Self {
        Self {
            max_retries: 0,
            base_secs: 0.0,
            power: 0,
            time_scale: 1.0,
        }
    }

    pub fn with_time_scale(mut self, time_scale: f64) -> Self {
        self.time_scale = time_scale;
        self
    }

    /// How long after the first try attempt `n` (1 for the first try) goes out on the vendor's
    /// own schedule, before `time_scale`: what a vendor that signs a retry with its first
    /// timestamp makes that timestamp look, to a receiver, by then.
    pub fn unscaled_elapsed_before(&self, n: u32) -> f64 {
        (1..n)
            .map(|k| self.base_secs + f64::from(k).powi(self.power as i32))
            .sum()
    }

    /// Delay before retry `n` (1-based).
    pub fn delay(&self, n: u32) -> Duration {
        let secs = (self.base_secs + f64::from(n).powi(self.power as i32)) * self.time_scale;
        Duration::from_secs_f64(secs.max(0.0))
    }
}

/// Computes per-attempt headers from the exact bytes being sent and the attempt's number (1 for
/// the first try): Canopy may sign each attempt afresh or keep its first timestamp.
pub type Signer = Arc<dyn Fn(&[u8], u32) -> Vec<(String, String)> + Send + Sync>;

/// One webhook to deliver.
#[derive(Clone)]
pub struct WebhookRequest {
    /// `"axle"` or `"canopy"`: used by fault matching and the log.
    pub vendor: String,
    /// `ignition.completed`, `COMPLETE`, …: used by fault matching and the log.
    pub event_type: String,
    pub url: String,
    /// Static headers (a `Content-Type: application/json` is added when absent).
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    pub signer: Option<Signer>,
    pub retry: RetrySchedule,
}

impl WebhookRequest {
    pub fn json(
        vendor: impl Into<String>,
        event_type: impl Into<String>,
        url: impl Into<String>,
        body: &serde_json::Value,
        retry: RetrySchedule,
    ) -> Self {
        Self {
            vendor: vendor.into(),
            event_type: event_type.into(),
            url: url.into(),
            headers: Vec::new(),
            body: Bytes::from(body.to_string()),
            signer: None,
            retry,
        }
    }

    pub fn with_signer(mut self, signer: Signer) -> Self {
        self.signer = Some(signer);
        self
    }

    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

impl std::fmt::Debug for WebhookRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookRequest")
            .field("vendor", &self.vendor)
            .field("event_type", &self.event_type)
            .field("url", &self.url)
            .field("body", &String::from_utf8_lossy(&self.body))
            .finish_non_exhaustive()
    }
}

/// One HTTP attempt (or a synthetic one, when a fault stood in for the receiver).
#[derive(Clone, Debug, Serialize)]
pub struct DeliveryAttempt {
    /// Position in the log, from 1.
    pub seq: u64,
    /// Same for every attempt and copy of one `send`.
    pub delivery_id: u64,
    /// 1 for the first try, 2 for the first retry, …
    pub attempt: u32,
    /// 0 for the original, 1.. for copies sent by a `duplicate` fault.
    pub copy: u32,
    pub vendor: String,
    pub event_type: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// The receiver's status, the injected one for a `status` fault, `None` when nothing answered.
    pub status: Option<u16>,
    pub error: Option<String>,
    /// Faults that shaped this attempt (`status`, `malformed`, `duplicate`, `out_of_order`,
    /// `latency`, `drop`).
    pub faults: Vec<String>,
    pub at: DateTime<Utc>,
}

impl DeliveryAttempt {
    pub fn delivered(&self) -> bool {
        self.status == Some(200)
    }

    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_str(&self.body).ok()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("timed out after {0:?} waiting for a matching webhook delivery")]
    WaitTimeout(Duration),
}

/// Every delivery attempt, in order. Cheap to clone.
#[derive(Clone, Debug)]
pub struct DeliveryLog {
    entries: Arc<Mutex<Vec<DeliveryAttempt>>>,
    version: watch::Sender<u64>,
}

impl Default for DeliveryLog {
    fn default() -> Self {
        Self::new()
    }
}

impl DeliveryLog {
    pub fn new() -> Self {
        Self {
            entries: Arc::default(),
            version: watch::channel(0).0,
        }
    }

    pub fn entries(&self) -> Vec<DeliveryAttempt> {
        self.entries.lock().expect("delivery log poisoned").clone()
    }

    pub fn filtered(&self, vendor: Option<&str>, event_type: Option<&str>) -> Vec<DeliveryAttempt> {
        self.entries()
            .into_iter()
            .filter(|a| vendor.is_none_or(|v| a.vendor == v))
            .filter(|a| event_type.is_none_or(|e| a.event_type == e))
            .collect()
    }

    pub fn clear(&self) {
        self.entries.lock().expect("delivery log poisoned").clear();
        self.version.send_modify(|v| *v += 1);
    }

    fn push(&self, mut attempt: DeliveryAttempt) -> DeliveryAttempt {
        {
            let mut entries = self.entries.lock().expect("delivery log poisoned");
            attempt.seq = entries.last().map_or(1, |a| a.seq + 1);
            entries.push(attempt.clone());
        }
        self.version.send_modify(|v| *v += 1);
        attempt
    }

    /// Waits until `check` over the whole log returns `Some`, or `timeout`.
    pub async fn wait_until<T>(
        &self,
        timeout: Duration,
        mut check: impl FnMut(&[DeliveryAttempt]) -> Option<T>,
    ) -> Result<T, DeliveryError> {
        let mut rx = self.version.subscribe();
        let wait = async {
            loop {
                rx.borrow_and_update();
                if let Some(found) = check(&self.entries()) {
                    return found;
                }
                if rx.changed().await.is_err() {
                    // The sender lives as long as `self`, so this cannot happen; park forever and
                    // let the timeout fire.
                    futures::future::pending::<()>().await;
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| DeliveryError::WaitTimeout(timeout))
    }

    /// The first attempt matching `pred`, waiting up to `timeout` for it.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        pred: impl Fn(&DeliveryAttempt) -> bool,
    ) -> Result<DeliveryAttempt, DeliveryError> {
        self.wait_until(timeout, |all| all.iter().find(|a| pred(a)).cloned())
            .await
    }

    /// The first `n` attempts matching `pred`, waiting up to `timeout` for them.
    pub async fn wait_for_n(
        &self,
        n: usize,
        timeout: Duration,
        pred: impl Fn(&DeliveryAttempt) -> bool,
    ) -> Result<Vec<DeliveryAttempt>, DeliveryError> {
        self.wait_until(timeout, |all| {
            let found: Vec<_> = all.iter().filter(|a| pred(a)).take(n).cloned().collect();
            (found.len() == n).then_some(found)
        })
        .await
    }
}

enum Job {
    Deliver(Box<Pending>),
    Release { url: String, delivery_id: u64 },
}

struct Pending {
    id: u64,
    req: WebhookRequest,
    effects: Vec<FaultEffect>,
    tags: Vec<String>,
}

/// Sends webhooks. Cheap to clone; all clones feed one queue.
#[derive(Clone)]
pub struct WebhookSender {
    tx: mpsc::UnboundedSender<Job>,
    shared: Arc<Shared>,
}

struct Shared {
    client: reqwest::Client,
    faults: Faults,
    clock: SandboxClock,
    log: DeliveryLog,
    next_id: Mutex<u64>,
}

impl std::fmt::Debug for WebhookSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSender").finish_non_exhaustive()
    }
}

/// How long one attempt may take before it counts as failed.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

impl WebhookSender {
    /// Starts the delivery worker on the current tokio runtime.
    pub fn start(faults: Faults, clock: SandboxClock, log: DeliveryLog) -> Self {
        let client = reqwest::Client::builder()
            .timeout(ATTEMPT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("reqwest client");
        let shared = Arc::new(Shared {
            client,
            faults,
            clock,
            log,
            next_id: Mutex::new(0),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(worker(rx, tx.clone(), shared.clone()));
        Self { tx, shared }
    }

    /// Queues a webhook and returns its delivery id (see [`DeliveryAttempt::delivery_id`]).
    /// Faults are matched now, so a rule added after this call does not affect it.
    pub fn send(&self, req: WebhookRequest) -> u64 {
        let id = {
            let mut next = self.shared.next_id.lock().expect("sender poisoned");
            *next += 1;
            *next
        };
        let effects = self
            .shared
            .faults
            .take_for_webhook(&req.vendor, &req.event_type, &req.url);
        let pending = Pending {
            id,
            req,
            effects,
            tags: Vec::new(),
        };
        if self.tx.send(Job::Deliver(Box::new(pending))).is_err() {
            tracing::warn!("webhook worker gone; delivery {id} not sent");
        }
        id
    }

    pub fn log(&self) -> &DeliveryLog {
        &self.shared.log
    }
}

async fn worker(
    mut rx: mpsc::UnboundedReceiver<Job>,
    tx: mpsc::UnboundedSender<Job>,
    shared: Arc<Shared>,
) {
    let mut held: HashMap<String, Vec<Pending>> = HashMap::new();
    while let Some(job) = rx.recv().await {
        match job {
            Job::Release { url, delivery_id } => {
                let Some(queue) = held.get_mut(&url) else {
                    continue;
                };
                if let Some(pos) = queue.iter().position(|p| p.id == delivery_id) {
                    let pending = queue.remove(pos);
                    deliver(&shared, pending).await;
                }
            }
            Job::Deliver(pending) => {
                let mut pending = *pending;
                if let Some(pos) = pending
                    .effects
                    .iter()
                    .position(|e| matches!(e, FaultEffect::OutOfOrder { .. }))
                {
                    let FaultEffect::OutOfOrder { max_hold_ms } = pending.effects.remove(pos)
                    else {
                        unreachable!()
                    };
                    pending.tags.push("out_of_order".into());
                    let (url, delivery_id) = (pending.req.url.clone(), pending.id);
                    held.entry(url.clone()).or_default().push(pending);
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(max_hold_ms)).await;
                        let _ = tx.send(Job::Release { url, delivery_id });
                    });
                    continue;
                }
                let url = pending.req.url.clone();
                if let Some(FaultEffect::Latency { ms }) = pending
                    .effects
                    .iter()
                    .find(|e| matches!(e, FaultEffect::Latency { .. }))
                    .cloned()
                {
                    pending.tags.push("latency".into());
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                        deliver(&shared, pending).await;
                    });
                } else {
                    deliver(&shared, pending).await;
                }
                for overtaken in held.remove(&url).unwrap_or_default() {
                    deliver(&shared, overtaken).await;
                }
            }
        }
    }
}

/// First attempt plus duplicates inline; retries on their own task.
async fn deliver(shared: &Arc<Shared>, pending: Pending) {
    let Pending {
        id,
        req,
        effects,
        mut tags,
    } = pending;
    let mut status_fault = None;
    let mut malformed = false;
    let mut copies = 0;
    let mut dropped = false;
    for effect in &effects {
        match effect {
            FaultEffect::Status { status, .. } => status_fault = Some(*status),
            FaultEffect::Malformed => malformed = true,
            FaultEffect::Duplicate { copies: n } => copies += n,
            FaultEffect::Drop => dropped = true,
            FaultEffect::Latency { .. }
            | FaultEffect::Hang { .. }
            | FaultEffect::OutOfOrder { .. } => {}
        }
    }
    let body = if malformed {
        tags.push("malformed".into());
        Bytes::from(malform_bytes(&req.body))
    } else {
        req.body.clone()
    };
    if dropped {
        tags.push("drop".into());
        shared.record(
            id,
            1,
            0,
            &req,
            req.headers.clone(),
            &body,
            None,
            Some("dropped by fault".into()),
            tags,
        );
        return;
    }
    let ok = attempt(shared, id, 1, 0, &req, &body, status_fault, tags.clone()).await;
    if copies > 0 {
        let mut dup_tags = tags.clone();
        dup_tags.push("duplicate".into());
        for copy in 1..=copies {
            attempt(shared, id, 1, copy, &req, &body, None, dup_tags.clone()).await;
        }
    }
    if !ok && req.retry.max_retries > 0 {
        let shared = shared.clone();
        tokio::spawn(async move {
            for n in 1..=req.retry.max_retries {
                tokio::time::sleep(req.retry.delay(n)).await;
                // Each retry is its own occurrence for `status` rules, so "fail the next 3
                // attempts" can be expressed with `times: 3`.
                let status_fault =
                    shared
                        .faults
                        .take_status_for_webhook(&req.vendor, &req.event_type, &req.url);
                if attempt(
                    &shared,
                    id,
                    n + 1,
                    0,
                    &req,
                    &body,
                    status_fault,
                    tags.clone(),
                )
                .await
                {
                    break;
                }
            }
        });
    }
}

#[allow(clippy::too_many_arguments)]
async fn attempt(
    shared: &Arc<Shared>,
    id: u64,
    n: u32,
    copy: u32,
    req: &WebhookRequest,
    body: &Bytes,
    status_fault: Option<u16>,
    mut tags: Vec<String>,
) -> bool {
    let mut headers = req.headers.clone();
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
    {
        headers.push(("content-type".into(), "application/json".into()));
    }
    if let Some(signer) = &req.signer {
        headers.extend(signer(body, n));
    }
    if let Some(status) = status_fault {
        tags.push("status".into());
        shared.record(
            id,
            n,
            copy,
            req,
            headers,
            body,
            Some(status),
            Some("injected status".into()),
            tags,
        );
        return false;
    }
    let mut builder = shared.client.post(&req.url).body(body.clone());
    for (k, v) in &headers {
        builder = builder.header(k, v);
    }
    let (status, error) = match builder.send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            // Drain the body so the connection can be reused.
            let _ = resp.bytes().await;
            (Some(status), None)
        }
        Err(e) => (None, Some(e.to_string())),
    };
    shared.record(id, n, copy, req, headers, body, status, error, tags);
    status == Some(200)
}

impl Shared {
    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        id: u64,
        attempt: u32,
        copy: u32,
        req: &WebhookRequest,
        headers: Vec<(String, String)>,
        body: &Bytes,
        status: Option<u16>,
        error: Option<String>,
        faults: Vec<String>,
    ) {
        self.log.push(DeliveryAttempt {
            seq: 0,
            delivery_id: id,
            attempt,
            copy,
            vendor: req.vendor.clone(),
            event_type: req.event_type.clone(),
            url: req.url.clone(),
            headers,
            body: String::from_utf8_lossy(body).into_owned(),
            status,
            error,
            faults,
            at: self.clock.now(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canopy_schedule_matches_docs() {
        let s = RetrySchedule::canopy();
        assert_eq!(s.delay(1), Duration::from_secs(61));
        assert_eq!(s.delay(2), Duration::from_secs(76));
        assert_eq!(s.delay(10), Duration::from_secs(10_060));
        let fast = s.with_time_scale(0.001);
        assert_eq!(fast.delay(1), Duration::from_millis(61));
    }
}
