//! One reader of the event log per process, fanning each newly committed range out to the
//! streams that want it.
//!
//! Without it every open stream re-read the log after every commit: N streams, N queries per
//! event. Here one task (the *tail*) reads each committed range once, for every tenant, and
//! hands each event to the streams whose tenant and filter match, in memory. It wakes on this
//! process's commits (the engine's watch channel) and on other replicas' (NOTIFY feeds the same
//! channel), and re-reads every `stream_poll` in case a notification was lost.
//!
//! Why reading "after the highest cursor seen" misses nothing: every transaction that appends
//! events holds one advisory lock from before its cursors are drawn until it commits (see the
//! store's `insert_event`), and SQLite has one writer, so once cursor N is visible every cursor
//! below N is committed or rolled back for good.
//!
//! The hand-over between a stream's own reads and the tail is exact: a stream registers and
//! learns the tail's position T (under the same lock under which the tail dispatches and moves
//! T), so every matching event after T reaches its channel; it reads the log itself from its own
//! cursor until it has passed T, and drops anything at or before the last cursor it yielded.
//! A stream that does not keep up (its bounded channel is full) is dropped by the tail: it
//! drains what its channel holds, reads the log from its cursor again, and registers again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use coverwatch_core::{Event, TenantId};
use coverwatch_store::{EventFilter, LoggedEvent, Store};
use tokio::sync::{mpsc, watch};

use crate::policy_cache::PolicyCache;

/// Events read by the tail per query.
const TAIL_PAGE: u64 = 500;
/// Events a stream may have waiting before it counts as lagging and reads the log itself.
pub(crate) const STREAM_BUFFER: usize = 1024;
const TAIL_BACKOFF_MIN: Duration = Duration::from_millis(100);
const TAIL_BACKOFF_MAX: Duration = Duration::from_secs(2);

struct Subscriber {
    tenant: TenantId,
    filter: EventFilter,
    tx: mpsc::Sender<Event>,
}

#[derive(Default)]
struct State {
    /// Whether a tail task runs; `position` is meaningful only while it does.
    running: bool,
    /// Every event up to here has been handed to the subscribers registered at the time.
    position: i64,
    subscribers: Vec<Subscriber>,
}

/// The process-wide fan-out; one per engine.
pub(crate) struct Fanout {
    state: Mutex<State>,
    pub(crate) stats: Stats,
    /// Told of every link whose events the tail reads, before they reach a stream: the events
    /// of other replicas' commits reach this process here first.
    policy_cache: Arc<PolicyCache>,
}

/// Counts since start, so that tests and operators can see the fan-out work as designed.
#[derive(Default)]
pub(crate) struct Stats {
    pub(crate) tail_reads: AtomicU64,
    pub(crate) stream_reads: AtomicU64,
    pub(crate) lagged: AtomicU64,
}

/// How this process's event streams read the log, since start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamStats {
    /// Queries of the process-wide tail (one per committed range, for all streams).
    pub tail_reads: u64,
    /// Queries streams made themselves, catching up from their cursor.
    pub stream_reads: u64,
    /// Times a stream fell behind its buffer and went back to reading the log.
    pub lagged: u64,
}

impl Stats {
    pub(crate) fn snapshot(&self) -> StreamStats {
        StreamStats {
            tail_reads: self.tail_reads.load(Ordering::Relaxed),
            stream_reads: self.stream_reads.load(Ordering::Relaxed),
            lagged: self.lagged.load(Ordering::Relaxed),
        }
    }
}

/// A stream's place in the fan-out: every matching event after `from` arrives on `events`, in
/// cursor order, until the channel closes (the stream lagged, or the tail stopped).
pub(crate) struct Registration {
    pub from: i64,
    pub events: mpsc::Receiver<Event>,
}

impl Fanout {
    pub(crate) fn new(policy_cache: Arc<PolicyCache>) -> Self {
        Self {
            state: Mutex::default(),
            stats: Stats::default(),
            policy_cache,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Nothing under this lock can leave the state half-changed: recover from a poisoning.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a stream, starting the tail if none runs.
    pub(crate) async fn register(
        self: &Arc<Self>,
        store: &Store,
        wake: &watch::Sender<i64>,
        poll: Duration,
        tenant: TenantId,
        filter: EventFilter,
    ) -> Result<Registration, coverwatch_store::StoreError> {
        let (tx, events) = mpsc::channel(STREAM_BUFFER);
        let subscriber = Subscriber { tenant, filter, tx };
        {
            let mut state = self.state();
            if state.running {
                state.subscribers.push(subscriber);
                return Ok(Registration {
                    from: state.position,
                    events,
                });
            }
        }
        // No tail: start one at the newest committed cursor (everything below it is committed).
        let latest = store.latest_cursor().await?;
        let mut state = self.state();
        let from = if state.running {
            state.position
        } else {
            state.running = true;
            state.position = latest;
            let fanout = Arc::clone(self);
            let store = store.clone();
            let wake = wake.subscribe();
            tokio::spawn(async move { fanout.run_tail(store, wake, poll).await });
            latest
        };
        state.subscribers.push(subscriber);
        Ok(Registration { from, events })
    }

    /// The tail: reads each committed range once and dispatches it; ends when no stream is left.
    async fn run_tail(
        self: Arc<Self>,
        store: Store,
        mut wake: watch::Receiver<i64>,
        poll: Duration,
    ) {
        // Whatever ends this task (a panic included), streams must not wait on a tail that is
        // gone: dropping the subscribers closes their channels and they read the log themselves.
        struct Stop<'a> {
            fanout: &'a Fanout,
            armed: bool,
        }
        impl Drop for Stop<'_> {
            fn drop(&mut self) {
                if self.armed {
                    let mut state = self.fanout.state();
                    state.running = false;
                    state.subscribers.clear();
                }
            }
        }
        let mut stop = Stop {
            fanout: &self,
            armed: true,
        };
        let mut backoff = TAIL_BACKOFF_MIN;
        loop {
            // Seen before reading, so a commit that lands during the read wakes us again.
            wake.borrow_and_update();
            let position = {
                let mut state = self.state();
                state.subscribers.retain(|s| !s.tx.is_closed());
                if state.subscribers.is_empty() {
                    // In the same critical section as the check, so that a stream registering
                    // next starts a new tail instead of joining this one as it leaves.
                    state.running = false;
                    stop.armed = false;
                    return;
                }
                state.position
            };
            self.stats.tail_reads.fetch_add(1, Ordering::Relaxed);
            match store.events_after_any_tenant(position, TAIL_PAGE).await {
                Ok(page) => {
                    backoff = TAIL_BACKOFF_MIN;
                    let full = page.len() as u64 == TAIL_PAGE;
                    if !page.is_empty() {
                        self.dispatch(&store, &page);
                    }
                    if full {
                        continue;
                    }
                    let _ = tokio::time::timeout(poll, wake.changed()).await;
                }
                Err(err) => {
                    if backoff == TAIL_BACKOFF_MIN {
                        tracing::warn!(error = %err, "event fan-out: cannot read the log; reading again with backoff");
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(TAIL_BACKOFF_MAX);
                }
            }
        }
    }

    fn dispatch(&self, store: &Store, page: &[LoggedEvent]) {
        let links: Vec<_> = page.iter().filter_map(LoggedEvent::link_id).collect();
        self.policy_cache.invalidate(&links);
        let mut state = self.state();
        for logged in page {
            if logged.cursor() <= state.position {
                continue;
            }
            // Opened at most once, and only if some stream wants it.
            let mut opened: Option<Option<Event>> = None;
            state.subscribers.retain(|sub| {
                if !logged.matches(&sub.tenant, &sub.filter) {
                    return !sub.tx.is_closed();
                }
                let event = opened.get_or_insert_with(|| match store.open_event(logged) {
                    Ok(event) => Some(event),
                    Err(err) => {
                        // The stream's own read of the log meets the same error and reports it
                        // to its caller; here it only stops the hand-over.
                        tracing::warn!(error = %err, cursor = logged.cursor(), "event fan-out: cannot open an event; its streams read the log themselves");
                        None
                    }
                });
                match event {
                    Some(event) => match sub.tx.try_send(event.clone()) {
                        Ok(()) => true,
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            self.stats.lagged.fetch_add(1, Ordering::Relaxed);
                            false
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => false,
                    },
                    None => false,
                }
            });
            state.position = logged.cursor();
        }
    }
}
