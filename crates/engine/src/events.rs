//! Reading the event log: pages from a cursor, and streams that replay what is stored after the
//! cursor and then follow live events. Both read the same log in cursor order, so there is no
//! gap and no duplicate at the switch from stored to live, across restarts and replicas.

use std::collections::VecDeque;
use std::time::Duration;

use coverwatch_core::{Event, TenantId};
use coverwatch_store::EventFilter;
use futures::Stream;

use crate::fanout::{Registration, StreamStats};
use crate::{Engine, EngineError};

const STREAM_PAGE: u64 = 500;
/// Bounds of the pause between reads of a stream while the database is unreachable: short
/// enough that streams resume soon after it returns, long enough not to hammer it meanwhile.
const UNAVAILABLE_BACKOFF_MIN: Duration = Duration::from_millis(100);
const UNAVAILABLE_BACKOFF_MAX: Duration = Duration::from_secs(2);

/// A position in a tenant's event log plus a filter.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    pub after_cursor: i64,
    pub filter: EventFilter,
}

const MAX_CONSUMER_NAME: usize = 64;

fn validate_consumer(name: &str) -> Result<(), EngineError> {
    let valid = !name.is_empty()
        && name.len() <= MAX_CONSUMER_NAME
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        });
    if valid {
        Ok(())
    } else {
        Err(EngineError::invalid(
            "consumer",
            format!("must be 1 to {MAX_CONSUMER_NAME} of `a-z 0-9 . _ -`"),
        ))
    }
}

impl Engine {
    /// Where a query by consumer name starts: after the cursor that consumer acknowledged.
    pub async fn resume_consumer(
        &self,
        tenant: &TenantId,
        query: &mut EventQuery,
        consumer: &str,
    ) -> Result<(), EngineError> {
        validate_consumer(consumer)?;
        if query.after_cursor != 0 {
            return Err(EngineError::invalid(
                "after_cursor",
                "must be 0 when `consumer` is given: the consumer's acknowledged cursor is used",
            ));
        }
        query.after_cursor = self
            .inner
            .store
            .consumer_cursor(tenant, consumer)
            .await?
            .unwrap_or(0);
        Ok(())
    }

    /// Record that `consumer` processed every event up to `cursor`; returns its cursor now.
    pub async fn ack_events(
        &self,
        tenant: &TenantId,
        consumer: &str,
        cursor: i64,
    ) -> Result<i64, EngineError> {
        validate_consumer(consumer)?;
        if cursor < 0 {
            return Err(EngineError::invalid("cursor", "must not be negative"));
        }
        if cursor > self.inner.store.latest_cursor().await? {
            return Err(EngineError::invalid(
                "cursor",
                format!("no event has cursor {cursor} yet"),
            ));
        }
        Ok(self
            .inner
            .store
            .ack_consumer(tenant, consumer, cursor)
            .await?)
    }

    /// Wake this process's streams when another replica commits events (PostgreSQL
    /// LISTEN/NOTIFY), until `shutdown` turns true. Returns at once on SQLite. Streams also
    /// poll, so a lost connection delays events, never loses them; it is re-established.
    pub async fn run_event_listener(&self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        use futures::StreamExt;
        loop {
            if *shutdown.borrow() {
                return;
            }
            match self.inner.store.listen_for_events().await {
                Ok(None) => return,
                Ok(Some(stream)) => {
                    let mut stream = std::pin::pin!(stream);
                    loop {
                        tokio::select! {
                            item = stream.next() => match item {
                                Some(Ok(cursor)) => self.advance_latest(cursor),
                                Some(Err(err)) => {
                                    tracing::warn!(error = %err, "event notifications interrupted; listening again");
                                    break;
                                }
                                None => break,
                            },
                            _ = shutdown.changed() => return,
                        }
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, "cannot listen for event notifications; streams poll meanwhile")
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    pub async fn list_events(
        &self,
        tenant: &TenantId,
        query: &EventQuery,
        limit: u64,
    ) -> Result<Vec<Event>, EngineError> {
        let events = self
            .inner
            .store
            .list_events(tenant, query.after_cursor, &query.filter, limit)
            .await?;
        // The caller (a stream catching up, or `ListEvents`) may be the first here to see an
        // event another replica committed: its link's cached policy goes before it is seen.
        self.inner
            .policy_cache
            .invalidate(events.iter().map(|e| &e.link_id));
        Ok(events)
    }

    /// How this process's streams read the log (see `fanout`).
    pub fn stream_stats(&self) -> StreamStats {
        self.inner.fanout.stats.snapshot()
    }

    /// Every event after the query's cursor, then live ones as they commit. While the database
    /// is unreachable (or has just cut our connection) the stream stays open and reads again
    /// with capped backoff: nothing can commit meanwhile, so the caller misses nothing, and the
    /// contract (open until cancelled or shutdown) holds through an outage instead of every
    /// watcher reconnecting at once when it ends. Any other error is yielded and ends the
    /// stream; the caller resumes from the last cursor it saw.
    ///
    /// The stream reads the log itself only to catch up (from its cursor, by pages); live
    /// events come from the process-wide fan-out (see `fanout`), which reads each committed
    /// range once for all the streams of the process.
    pub fn watch_events(
        &self,
        tenant: TenantId,
        query: EventQuery,
    ) -> impl Stream<Item = Result<Event, EngineError>> + Send + 'static {
        enum Mode {
            /// Not registered with the fan-out (at the start, or after it dropped us).
            Detached,
            /// Registered: events after `from` arrive on the channel; the log is read up to
            /// there first.
            CatchingUp(Registration),
            Live(Registration),
        }
        struct State {
            engine: Engine,
            tenant: TenantId,
            query: EventQuery,
            buffer: VecDeque<Event>,
            mode: Mode,
            failed: bool,
            /// The pause before the next read while the database is unreachable.
            unavailable_backoff: Duration,
        }
        impl State {
            /// Waits before the next read of an unreachable database; `Err` ends the stream.
            async fn on_error(&mut self, err: EngineError) -> Result<(), EngineError> {
                if !crate::inbox::database_may_recover(&err) {
                    self.failed = true;
                    return Err(err);
                }
                // Once per outage and stream, so that an error that never clears (not an
                // outage after all) still shows.
                if self.unavailable_backoff == UNAVAILABLE_BACKOFF_MIN {
                    tracing::warn!(error = %err, "event stream: cannot read the log; kept open, reading again with backoff");
                }
                tokio::time::sleep(self.unavailable_backoff).await;
                self.unavailable_backoff =
                    (self.unavailable_backoff * 2).min(UNAVAILABLE_BACKOFF_MAX);
                Ok(())
            }
        }
        let state = State {
            engine: self.clone(),
            tenant,
            query,
            buffer: VecDeque::new(),
            mode: Mode::Detached,
            failed: false,
            unavailable_backoff: UNAVAILABLE_BACKOFF_MIN,
        };
        futures::stream::unfold(state, |mut state| async move {
            if state.failed {
                return None;
            }
            loop {
                if let Some(event) = state.buffer.pop_front() {
                    // The log and the fan-out overlap around the hand-over point.
                    if event.cursor <= state.query.after_cursor {
                        continue;
                    }
                    state.query.after_cursor = event.cursor;
                    return Some((Ok(event), state));
                }
                match std::mem::replace(&mut state.mode, Mode::Detached) {
                    Mode::Detached => {
                        let inner = &state.engine.inner;
                        let registered = inner
                            .fanout
                            .register(
                                &inner.store,
                                &inner.latest_event,
                                inner.config.stream_poll,
                                state.tenant.clone(),
                                state.query.filter.clone(),
                            )
                            .await;
                        match registered {
                            Ok(registration) => state.mode = Mode::CatchingUp(registration),
                            Err(err) => {
                                if let Err(err) = state.on_error(err.into()).await {
                                    return Some((Err(err), state));
                                }
                            }
                        }
                    }
                    Mode::CatchingUp(registration) => {
                        if state.query.after_cursor >= registration.from {
                            state.mode = Mode::Live(registration);
                            continue;
                        }
                        state
                            .engine
                            .inner
                            .fanout
                            .stats
                            .stream_reads
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        match state
                            .engine
                            .list_events(&state.tenant, &state.query, STREAM_PAGE)
                            .await
                        {
                            Ok(page) => {
                                state.unavailable_backoff = UNAVAILABLE_BACKOFF_MIN;
                                // A short page holds everything committed so far, which
                                // includes everything up to the hand-over point.
                                state.mode = if (page.len() as u64) < STREAM_PAGE {
                                    Mode::Live(registration)
                                } else {
                                    Mode::CatchingUp(registration)
                                };
                                state.buffer.extend(page);
                            }
                            Err(err) => {
                                state.mode = Mode::CatchingUp(registration);
                                if let Err(err) = state.on_error(err).await {
                                    return Some((Err(err), state));
                                }
                            }
                        }
                    }
                    Mode::Live(mut registration) => match registration.events.recv().await {
                        Some(event) => {
                            state.buffer.push_back(event);
                            state.mode = Mode::Live(registration);
                        }
                        // Dropped by the fan-out (we lagged, or its reader stopped): what the
                        // channel held is consumed; read the log from our cursor and rejoin.
                        None => state.mode = Mode::Detached,
                    },
                }
            }
        })
    }
}
