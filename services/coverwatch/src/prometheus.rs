//! Metrics in Prometheus form, and the figures the status page shows: both read one
//! [`Telemetry`] so that they always agree.
//!
//! Two recorders render into one `/metrics` answer:
//! - the server's own (webhook outcomes, inbox and link gauges, pool use, open streams), held
//!   here and written through [`metrics::with_local_recorder`]: every server has its own, so
//!   that several servers in one process (tests, an embedding program) count only their own
//!   traffic;
//! - the process-wide one that the engine and the vendor clients record into through the
//!   `metrics` facade (processing latency, attempts, retries, dead letters, events appended,
//!   vendor calls). It is installed once per process; if the embedding program already
//!   installed a recorder of its own, those series go there and `/metrics` shows ours only.
//!
//! Metric families never appear in both, so the concatenation is one valid exposition.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use coverwatch_core::ProviderId;
use coverwatch_core::webhook::WebhookRejection;
use coverwatch_engine::{Engine, ProviderRegistry};
use coverwatch_store::{DeliveryStatus, PoolUse};
use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

use crate::grpc::OpenStreams;

/// Webhooks received, by provider and outcome.
pub const WEBHOOKS_RECEIVED: &str = "coverwatch_webhooks_received_total";
pub const INBOX_DELIVERIES: &str = "coverwatch_inbox_deliveries";
pub const INBOX_OLDEST_PENDING_AGE: &str = "coverwatch_inbox_oldest_pending_age_seconds";
pub const LINKS: &str = "coverwatch_links";
pub const WATCH_STREAMS_OPEN: &str = "coverwatch_watch_streams_open";
pub const DB_POOL_CONNECTIONS: &str = "coverwatch_db_pool_connections";
pub const DB_POOL_MAX_CONNECTIONS: &str = "coverwatch_db_pool_max_connections";

/// The database figures are read at most this often, however often `/metrics` and the
/// status page are requested: a scrape storm must not turn into a query storm.
pub const DB_FIGURES_MAX_AGE: Duration = Duration::from_secs(2);

/// How far back the status page's webhook outcomes reach, one bucket a minute.
const WINDOW_MINUTES: i64 = 60;

/// Latency buckets (seconds) for every histogram: from a fast local call to a slow vendor.
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// How a webhook request was answered: the `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum WebhookOutcome {
    Stored,
    Duplicate,
    Unauthenticated(&'static str),
    TooLarge,
    Unavailable,
    UnknownProvider,
    /// The body could not be read (it did not arrive in time, or the request was malformed).
    Malformed,
}

impl WebhookOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookOutcome::Stored => "stored",
            WebhookOutcome::Duplicate => "duplicate",
            WebhookOutcome::Unauthenticated(_) => "unauthenticated",
            WebhookOutcome::TooLarge => "too_large",
            WebhookOutcome::Unavailable => "unavailable",
            WebhookOutcome::UnknownProvider => "unknown_provider",
            WebhookOutcome::Malformed => "malformed",
        }
    }

    /// The `reason` label of a refused delivery: which check failed, in a bounded vocabulary.
    pub fn unauthenticated(rejection: &WebhookRejection) -> Self {
        WebhookOutcome::Unauthenticated(match rejection {
            WebhookRejection::MissingHeader(_) => "missing_header",
            WebhookRejection::MalformedHeader { .. } => "malformed_header",
            WebhookRejection::BadSignature => "bad_signature",
            WebhookRejection::StaleTimestamp { .. } => "stale_timestamp",
            WebhookRejection::BadSharedSecret => "bad_shared_secret",
            WebhookRejection::UnknownPath => "unknown_path",
        })
    }
}

/// The provider label of a webhook: the URL names it, and anyone can post to any URL, so a name
/// no registered vendor has is one label value, not the name.
pub fn provider_label<'a>(named: &'a str, providers: &ProviderRegistry) -> &'a str {
    match named.parse::<ProviderId>() {
        Ok(kind) if providers.get(&kind).is_ok() => named,
        _ => "unknown",
    }
}

/// Counts by (provider label, outcome label).
pub type OutcomeCounts = BTreeMap<(String, &'static str), u64>;

/// Per-minute webhook outcome counts of the last hour.
#[derive(Default)]
struct Window {
    minutes: VecDeque<(i64, OutcomeCounts)>,
}

impl Window {
    fn add(&mut self, minute: i64, provider: &str, outcome: &'static str) {
        match self.minutes.back_mut() {
            Some((m, counts)) if *m == minute => {
                *counts.entry((provider.to_owned(), outcome)).or_default() += 1;
            }
            _ => {
                let mut counts = BTreeMap::new();
                counts.insert((provider.to_owned(), outcome), 1);
                self.minutes.push_back((minute, counts));
            }
        }
        self.trim(minute);
    }

    fn trim(&mut self, now_minute: i64) {
        while self
            .minutes
            .front()
            .is_some_and(|(m, _)| *m <= now_minute - WINDOW_MINUTES)
        {
            self.minutes.pop_front();
        }
    }

    fn totals(&mut self, now_minute: i64) -> OutcomeCounts {
        self.trim(now_minute);
        let mut out = BTreeMap::new();
        for (_, counts) in &self.minutes {
            for (key, n) in counts {
                *out.entry(key.clone()).or_default() += n;
            }
        }
        out
    }
}

/// The database-backed figures, read together.
#[derive(Debug, Clone, Default)]
pub struct DbFigures {
    /// Inbox rows by provider and status.
    pub inbox: BTreeMap<(ProviderId, &'static str), u64>,
    /// When the oldest pending delivery of each provider was received.
    pub oldest_pending: BTreeMap<ProviderId, DateTime<Utc>>,
    /// Links by provider and state.
    pub links: BTreeMap<(ProviderId, &'static str), u64>,
    pub read_at: Option<DateTime<Utc>>,
    /// Set when the last read failed: the figures are from before.
    pub error: Option<String>,
}

/// Everything `/metrics` and the status page show, at one moment.
#[derive(Debug, Clone)]
pub struct Figures {
    pub db: DbFigures,
    /// Webhook outcomes of the last hour by (provider, outcome).
    pub webhooks_last_hour: OutcomeCounts,
    /// The registered vendors: each has its rows, even when it has no link or delivery yet.
    pub providers: Vec<ProviderId>,
    pub pool: PoolUse,
    pub watch_streams: usize,
    pub vendor_errors: Vec<coverwatch_core::telemetry::VendorError>,
    pub now: DateTime<Utc>,
}

/// A server's metrics and status figures.
pub struct Telemetry {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    global: Option<&'static PrometheusHandle>,
    window: Mutex<Window>,
    engine: Engine,
    streams: OpenStreams,
    db: tokio::sync::Mutex<(Option<Instant>, DbFigures)>,
}

fn builder() -> PrometheusBuilder {
    PrometheusBuilder::new()
        .set_buckets(BUCKETS)
        .expect("the bucket list is not empty")
}

/// The process-wide recorder behind the `metrics` facade, installed on first use.
fn global_handle() -> Option<&'static PrometheusHandle> {
    static GLOBAL: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    GLOBAL
        .get_or_init(|| {
            let recorder = builder().build_recorder();
            let handle = recorder.handle();
            match metrics::set_global_recorder(recorder) {
                Ok(()) => {
                    describe_process_metrics();
                    Some(handle)
                }
                Err(_) => {
                    tracing::warn!(
                        "a metrics recorder was already installed; engine and vendor metrics go to it, /metrics shows the server's own"
                    );
                    None
                }
            }
        })
        .as_ref()
}

fn describe_process_metrics() {
    use coverwatch_core::telemetry as vendor;
    use coverwatch_engine::telemetry as engine;
    describe_counter!(
        vendor::VENDOR_REQUESTS,
        "Requests sent to a vendor's API, by vendor, route template and answer status"
    );
    describe_histogram!(
        vendor::VENDOR_REQUEST_DURATION,
        Unit::Seconds,
        "Time from sending a vendor request to reading its whole answer"
    );
    describe_counter!(
        engine::INBOX_ATTEMPTS,
        "Processing attempts of inbox deliveries"
    );
    describe_counter!(
        engine::INBOX_RETRIES,
        "Processing attempts that failed and were scheduled to run again"
    );
    describe_counter!(
        engine::INBOX_DEAD_LETTERS,
        "Deliveries given up on after their last attempt"
    );
    describe_histogram!(
        engine::INBOX_PROCESSING,
        Unit::Seconds,
        "Time to process one delivery attempt, by its outcome"
    );
    describe_counter!(
        engine::EVENTS_APPENDED,
        "Events committed to the event log, by kind"
    );
}

impl Telemetry {
    pub(crate) fn new(engine: Engine, streams: OpenStreams) -> Arc<Self> {
        let recorder = builder().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            describe_counter!(
                WEBHOOKS_RECEIVED,
                "Webhook requests received, by provider and how they were answered"
            );
            describe_gauge!(
                INBOX_DELIVERIES,
                "Deliveries in the inbox by provider and status (pending is the backlog)"
            );
            describe_gauge!(
                INBOX_OLDEST_PENDING_AGE,
                Unit::Seconds,
                "Age of the oldest delivery still waiting to be processed"
            );
            describe_gauge!(LINKS, "Links by provider and state");
            describe_gauge!(WATCH_STREAMS_OPEN, "Open WatchEvents streams");
            describe_gauge!(
                DB_POOL_CONNECTIONS,
                "Database pool connections, busy and idle"
            );
            describe_gauge!(DB_POOL_MAX_CONNECTIONS, "Largest database pool allowed");
        });
        Arc::new(Self {
            recorder,
            handle,
            global: global_handle(),
            window: Mutex::default(),
            engine,
            streams,
            db: tokio::sync::Mutex::new((None, DbFigures::default())),
        })
    }

    /// Count one webhook request by how it was answered.
    pub fn webhook(&self, provider: &str, outcome: WebhookOutcome) {
        metrics::with_local_recorder(&self.recorder, || match outcome {
            WebhookOutcome::Unauthenticated(reason) => metrics::counter!(
                WEBHOOKS_RECEIVED,
                "provider" => provider.to_owned(),
                "outcome" => outcome.as_str(),
                "reason" => reason,
            )
            .increment(1),
            _ => metrics::counter!(
                WEBHOOKS_RECEIVED,
                "provider" => provider.to_owned(),
                "outcome" => outcome.as_str(),
            )
            .increment(1),
        });
        let minute = Utc::now().timestamp().div_euclid(60);
        self.window.lock().unwrap_or_else(|e| e.into_inner()).add(
            minute,
            provider,
            outcome.as_str(),
        );
    }

    /// The database figures, read again only when older than [`DB_FIGURES_MAX_AGE`]. Callers
    /// that arrive while a read runs wait for it instead of starting their own.
    async fn db_figures(&self) -> DbFigures {
        let mut cached = self.db.lock().await;
        if cached.0.is_some_and(|at| at.elapsed() < DB_FIGURES_MAX_AGE) {
            return cached.1.clone();
        }
        let store = self.engine.store();
        let read = async {
            let inbox = store.inbox_counts().await?;
            let links = store.link_counts().await?;
            Ok::<_, coverwatch_store::StoreError>((inbox, links))
        };
        match read.await {
            Ok((inbox, links)) => {
                let mut figures = DbFigures {
                    read_at: Some(Utc::now()),
                    ..DbFigures::default()
                };
                for row in inbox {
                    *figures
                        .inbox
                        .entry((row.provider.clone(), row.status.as_str()))
                        .or_default() += row.count;
                    if row.status == DeliveryStatus::Pending
                        && let Some(oldest) = row.oldest_received_at
                    {
                        figures.oldest_pending.insert(row.provider, oldest);
                    }
                }
                for row in links {
                    *figures
                        .links
                        .entry((row.provider, row.state.as_str()))
                        .or_default() += row.count;
                }
                cached.1 = figures;
            }
            Err(e) => {
                tracing::warn!(error = %e, "metrics: cannot read inbox and link counts");
                cached.1.error = Some("the database did not answer".to_owned());
            }
        }
        cached.0 = Some(Instant::now());
        cached.1.clone()
    }

    /// Everything both views show, at one moment.
    pub async fn figures(&self) -> Figures {
        let db = self.db_figures().await;
        let now = Utc::now();
        let webhooks_last_hour = self
            .window
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .totals(now.timestamp().div_euclid(60));
        Figures {
            db,
            webhooks_last_hour,
            providers: self.engine.providers().kinds().cloned().collect(),
            pool: self.engine.store().pool_use(),
            watch_streams: self.streams.total(),
            vendor_errors: coverwatch_core::telemetry::recent_vendor_errors(),
            now,
        }
    }

    /// The Prometheus text exposition of this server and of the process.
    pub async fn render(&self) -> String {
        let figures = self.figures().await;
        metrics::with_local_recorder(&self.recorder, || set_gauges(&figures));
        let mut text = self.handle.render();
        if let Some(global) = self.global {
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str(&global.render());
        }
        text
    }
}

fn set_gauges(figures: &Figures) {
    for provider in &figures.providers {
        for status in [
            DeliveryStatus::Pending,
            DeliveryStatus::Dead,
            DeliveryStatus::Unmatched,
            DeliveryStatus::Done,
        ] {
            let n = figures
                .db
                .inbox
                .get(&(provider.clone(), status.as_str()))
                .copied()
                .unwrap_or(0);
            metrics::gauge!(INBOX_DELIVERIES, "provider" => provider.to_string(), "status" => status.as_str())
                .set(n as f64);
        }
        let age = figures
            .db
            .oldest_pending
            .get(provider)
            .map(|oldest| (figures.now - *oldest).num_milliseconds().max(0) as f64 / 1000.0)
            .unwrap_or(0.0);
        metrics::gauge!(INBOX_OLDEST_PENDING_AGE, "provider" => provider.to_string()).set(age);
        for state in coverwatch_core::LinkState::ALL {
            let n = figures
                .db
                .links
                .get(&(provider.clone(), state.as_str()))
                .copied()
                .unwrap_or(0);
            metrics::gauge!(LINKS, "provider" => provider.to_string(), "state" => state.as_str())
                .set(n as f64);
        }
    }
    metrics::gauge!(WATCH_STREAMS_OPEN).set(figures.watch_streams as f64);
    let busy = figures.pool.size.saturating_sub(figures.pool.idle);
    metrics::gauge!(DB_POOL_CONNECTIONS, "state" => "busy").set(f64::from(busy));
    metrics::gauge!(DB_POOL_CONNECTIONS, "state" => "idle").set(f64::from(figures.pool.idle));
    metrics::gauge!(DB_POOL_MAX_CONNECTIONS).set(f64::from(figures.pool.max));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_forgets_what_is_older_than_an_hour() {
        let mut window = Window::default();
        window.add(100, "axle", "stored");
        window.add(100, "axle", "stored");
        window.add(130, "canopy", "duplicate");
        let totals = window.totals(130);
        assert_eq!(totals.get(&("axle".to_owned(), "stored")), Some(&2));
        assert_eq!(totals.get(&("canopy".to_owned(), "duplicate")), Some(&1));
        let totals = window.totals(160);
        assert_eq!(totals.get(&("axle".to_owned(), "stored")), None);
        assert_eq!(totals.get(&("canopy".to_owned(), "duplicate")), Some(&1));
    }

    #[test]
    fn unknown_provider_names_share_one_label() {
        let config = coverwatch_axle::AxleConfig {
            client_id: "client".to_owned(),
            client_secret: "secret".to_owned().into(),
            ..coverwatch_axle::AxleConfig::default()
        };
        let axle = coverwatch_axle::AxleProvider::new(config).expect("a valid Axle configuration");
        let registry = ProviderRegistry::new().register(Arc::new(axle));
        assert_eq!(provider_label("axle", &registry), "axle");
        // A well-formed name is still a stranger's until a vendor of that name is registered.
        assert_eq!(provider_label("canopy", &registry), "unknown");
        assert_eq!(
            provider_label("anything-a-stranger-posts", &registry),
            "unknown"
        );
    }
}
