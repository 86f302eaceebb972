//! The use-cases of coverwatch: start and complete links, take in vendor webhooks, work off the
//! inbox, reconnect, descope, refresh, and serve event streams. Written against the `Provider`
//! trait only; the transports (gRPC, HTTP) call in here and hold no rules of their own.

mod admin;
mod apply;
mod connections;
mod error;
mod events;
mod fanout;
mod inbox;
mod isolation;
mod links;
mod policy_cache;
mod registry;
mod requirements;
pub mod telemetry;
mod token_cache;
pub mod trace;
mod webhooks;

pub use webhooks::MAX_WEBHOOK_BYTES;

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use coverwatch_core::LinkId;
use coverwatch_core::backoff::Backoff;
use coverwatch_store::{GroupCommitConfig, IngestQueue, Store};
use tokio::sync::{Notify, OwnedMutexGuard, watch};

pub use admin::{REDACTED, RetentionConfig, redact_delivery};
pub use connections::{ConnectionView, RECHECK_AFTER as CONNECTION_RECHECK_AFTER};
pub use error::{EngineError, IngestError};
pub use events::EventQuery;
pub use fanout::StreamStats;
pub use isolation::{UnitFailure, isolated, panic_message};
pub use links::{LinkRequest, StartedSession};
pub use registry::ProviderRegistry;
pub use requirements::{
    LinkEvaluation, PolicyHistoryEntry, PolicyHistoryPage, PutSetOutcome, SweepConfig, SweepReport,
    VendorCheck,
};

/// How the inbox worker behaves.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Names this process's leases; unique per replica.
    pub owner: String,
    /// How long a claimed delivery stays ours before another worker may take it over.
    pub lease: Duration,
    /// Deliveries claimed per round; their vendor calls run side by side (up to
    /// `concurrency`), and their changes are committed in one transaction.
    pub batch: u64,
    /// Deliveries processed at once (different links; one link's stay in order).
    pub concurrency: usize,
    /// Batches worked on side by side, each by a loop of its own (PostgreSQL; SQLite has one).
    pub batches_in_flight: usize,
    /// Attempts before a delivery is dead-lettered.
    pub max_attempts: u32,
    pub backoff: Backoff,
    /// How often to look for work when nothing woke us (other replicas, retries coming due).
    pub idle_poll: Duration,
    /// How long one unit of work (one delivery; one link in the sweep) may take before it is
    /// given up as a transient failure, so that a vendor call or a lock that never answers
    /// holds up that unit only.
    pub process_timeout: Duration,
    /// Runs just before a batch commits; an error fails the commit (tests inject faults here).
    pub before_batch_commit: Option<BatchCommitHook>,
    /// Runs with each delivery once its changes are written into the batch's transaction; an
    /// error (or a panic) fails that delivery there (tests inject faults here).
    pub after_apply: Option<ApplyHook>,
}

/// A check run with a delivery's id once its changes are in the batch's transaction.
#[derive(Clone)]
pub struct ApplyHook(pub Arc<ApplyCheck>);

/// What an [`ApplyHook`] runs: `Err` fails the delivery with that message.
pub type ApplyCheck = dyn Fn(&coverwatch_core::ids::DeliveryId) -> Result<(), String> + Send + Sync;

impl std::fmt::Debug for ApplyHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApplyHook")
    }
}

/// A check run with a batch's delivery ids just before the batch commits.
#[derive(Clone)]
pub struct BatchCommitHook(pub Arc<BatchCheck>);

/// What a [`BatchCommitHook`] runs: `Err` fails the commit with that message.
pub type BatchCheck =
    dyn Fn(&[coverwatch_core::ids::DeliveryId]) -> Result<(), String> + Send + Sync;

impl std::fmt::Debug for BatchCommitHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BatchCommitHook")
    }
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            owner: format!("worker-{}", uuid_like()),
            lease: Duration::from_secs(60),
            batch: 32,
            concurrency: 8,
            batches_in_flight: 1,
            max_attempts: 8,
            backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(300)),
            idle_poll: Duration::from_millis(500),
            process_timeout: Duration::from_secs(300),
            before_batch_commit: None,
            after_apply: None,
        }
    }
}

/// Seven days: longer than any vendor's documented retry schedule.
pub const DEFAULT_DESCOPED_TOKEN_GRACE: Duration = Duration::from_secs(7 * 86_400);

/// A second: a replica that has no stream open learns of other replicas' commits only by
/// expiry, and a caller switching replicas should not see an older policy for longer.
pub const DEFAULT_POLICY_CACHE_TTL: Duration = Duration::from_secs(1);
/// Policies of about a kilobyte each: some ten megabytes at most.
pub const DEFAULT_POLICY_CACHE_CAPACITY: usize = 10_000;

/// Five seconds: a token is read from the database at most once per link and period, and a
/// link's state changed by another replica is seen here that late at most (exact for this
/// process's own changes; see `token_cache`).
pub const DEFAULT_WEBHOOK_TOKEN_CACHE_TTL: Duration = Duration::from_secs(5);
/// Tokens of that many links sending within the period are answered from memory (an entry is
/// a few hundred bytes).
pub const DEFAULT_WEBHOOK_TOKEN_CACHE_CAPACITY: usize = 50_000;

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The public base URL of the webhook listener, as vendors reach it.
    pub public_base_url: String,
    pub worker: WorkerConfig,
    /// What the retention job keeps, and how often it runs.
    pub retention: RetentionConfig,
    /// How often an idle event stream re-reads the log, for events written by other replicas.
    pub stream_poll: Duration,
    /// Stale-link reports and periodic requirement checks.
    pub sweep: SweepConfig,
    /// How long a descoped link's webhook URLs are still accepted (the vendor may still be
    /// delivering what it sent before the descope); after it they are refused like unknown ones.
    pub descoped_token_grace: Duration,
    /// Header names (lowercase) whose values grant access, masked in admin answers beside the
    /// well-known ones (`authorization`, …): a configured shared webhook header, say.
    pub secret_headers: Vec<String>,
    /// How webhook deliveries are group-committed to the inbox.
    pub ingest: GroupCommitConfig,
    /// How long `GetPolicy` may answer from memory (zero: always from the database). Exact for
    /// what this process commits or reads from the log; for a change committed by another
    /// replica that this process has not read yet, the bound on how old an answer can be
    /// (see `policy_cache`).
    pub policy_cache_ttl: Duration,
    /// Most policies kept in memory for `GetPolicy`.
    pub policy_cache_capacity: usize,
    /// How long a per-link webhook token's link may be answered from memory (zero: always
    /// from the database). Exact for this process's changes; for another replica's, the bound
    /// on how old the link's state can be, never longer than `descoped_token_grace`.
    pub webhook_token_cache_ttl: Duration,
    /// Most webhook tokens kept in memory.
    pub webhook_token_cache_capacity: usize,
}

impl EngineConfig {
    pub fn new(public_base_url: impl Into<String>) -> Self {
        Self {
            public_base_url: public_base_url.into(),
            worker: WorkerConfig::default(),
            retention: RetentionConfig::default(),
            stream_poll: Duration::from_millis(500),
            sweep: SweepConfig::default(),
            descoped_token_grace: DEFAULT_DESCOPED_TOKEN_GRACE,
            secret_headers: Vec::new(),
            ingest: GroupCommitConfig::default(),
            policy_cache_ttl: DEFAULT_POLICY_CACHE_TTL,
            policy_cache_capacity: DEFAULT_POLICY_CACHE_CAPACITY,
            webhook_token_cache_ttl: DEFAULT_WEBHOOK_TOKEN_CACHE_TTL,
            webhook_token_cache_capacity: DEFAULT_WEBHOOK_TOKEN_CACHE_CAPACITY,
        }
    }
}

/// The engine: cheap to clone, shared by the gRPC service, the webhook listener and the workers.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    providers: ProviderRegistry,
    /// Providers built from tenants' own vendor connections.
    connections: connections::ConnectionCache,
    config: EngineConfig,
    /// The highest event cursor this process has committed; streams wait on it.
    latest_event: watch::Sender<i64>,
    /// Reads each committed range of the log once and hands it to this process's streams.
    fanout: Arc<fanout::Fanout>,
    /// Recently read policies, forgotten as soon as an event of their link is committed or
    /// read here.
    policy_cache: Arc<policy_cache::PolicyCache>,
    /// Recently looked-up per-link webhook tokens, forgotten when their link changes state here.
    token_cache: token_cache::TokenCache,
    /// Wakes the inbox worker when a delivery was stored.
    inbox_wake: Notify,
    /// One lock per link being worked on in this process. Vendor calls happen outside any
    /// database transaction, so without it two deliveries about one link (Canopy's
    /// `POLICIES_AVAILABLE` and `COMPLETE` of one pull, say) could both decide to create the
    /// same vendor object. Entries die with their last guard.
    link_locks: std::sync::Mutex<HashMap<LinkId, Weak<tokio::sync::Mutex<()>>>>,
    /// Deliveries taken with a genuine but late signature, since start.
    late_signed: std::sync::atomic::AtomicU64,
    /// The group-commit writer for webhook deliveries, started by the first delivery (on the
    /// runtime that serves webhooks).
    ingest_queue: std::sync::OnceLock<IngestQueue>,
}

impl Engine {
    pub fn new(store: Store, providers: ProviderRegistry, config: EngineConfig) -> Self {
        let (latest_event, _) = watch::channel(0);
        let policy_cache = Arc::new(policy_cache::PolicyCache::new(
            config.policy_cache_ttl,
            config.policy_cache_capacity,
        ));
        let token_cache = token_cache::TokenCache::new(
            config.webhook_token_cache_ttl,
            config.webhook_token_cache_capacity,
            config.descoped_token_grace,
        );
        Self {
            inner: Arc::new(Inner {
                store,
                providers,
                connections: connections::ConnectionCache::default(),
                config,
                token_cache,
                latest_event,
                fanout: Arc::new(fanout::Fanout::new(Arc::clone(&policy_cache))),
                policy_cache,
                inbox_wake: Notify::new(),
                link_locks: std::sync::Mutex::default(),
                late_signed: std::sync::atomic::AtomicU64::new(0),
                ingest_queue: std::sync::OnceLock::new(),
            }),
        }
    }

    /// How many deliveries this process took whose signature was genuine but whose timestamp
    /// was outside the provider's tolerance (see `AuthenticatedWebhook::late_by_seconds`).
    pub fn late_signed_deliveries(&self) -> u64 {
        self.inner
            .late_signed
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn providers(&self) -> &ProviderRegistry {
        &self.inner.providers
    }

    /// [`Self::lock_link`] without waiting: `None` while another task of this process works on
    /// `link`.
    pub(crate) fn try_lock_link(&self, link: LinkId) -> Option<OwnedMutexGuard<()>> {
        self.link_lock(link).try_lock_owned().ok()
    }

    fn link_lock(&self, link: LinkId) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self
            .inner
            .link_locks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match locks.get(&link).and_then(Weak::upgrade) {
            Some(lock) => lock,
            None => {
                locks.retain(|_, lock| lock.strong_count() > 0);
                let lock = Arc::new(tokio::sync::Mutex::new(()));
                locks.insert(link, Arc::downgrade(&lock));
                lock
            }
        }
    }

    /// Wait until no other task of this process works on `link`; the work is ours while the
    /// guard lives.
    pub(crate) async fn lock_link(&self, link: LinkId) -> OwnedMutexGuard<()> {
        self.link_lock(link).lock_owned().await
    }

    /// Called after every commit that appended events, before any stream is woken.
    fn announce(&self, events: &[coverwatch_core::Event]) {
        // Before the streams hear of the events, so that no caller learns of a change while
        // an older policy of its link is still served from memory.
        self.inner
            .policy_cache
            .invalidate(events.iter().map(|e| &e.link_id));
        // Before the commit's caller is answered: a descoped link's token is read again.
        self.inner.token_cache.invalidate(events);
        telemetry::events_appended(events);
        if let Some(max) = events.iter().map(|e| e.cursor).max() {
            self.advance_latest(max);
        }
    }

    fn advance_latest(&self, cursor: i64) {
        self.inner.latest_event.send_if_modified(|latest| {
            if cursor > *latest {
                *latest = cursor;
                true
            } else {
                false
            }
        });
    }
}

fn uuid_like() -> String {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    (0..12)
        .map(|_| format!("{:x}", rng.gen_range(0..16u8)))
        .collect()
}
