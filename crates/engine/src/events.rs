//! Reading the event log: pages from a cursor, and streams that replay what is stored after the
//! cursor and then follow live events. Both read the same log in cursor order, so there is no
//! gap and no duplicate at the switch from stored to live, across restarts and replicas.

use std::collections::VecDeque;
use std::time::Duration;

use coverwatch_core::{Event, TenantId};
use coverwatch_store::EventFilter;
use futures::Stream;

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
        Ok(self
            .inner
            .store
            .list_events(tenant, query.after_cursor, &query.filter, limit)
            .await?)
    }

    /// Every event after the query's cursor, then live ones as they commit. While the database
    /// is unreachable (or has just cut our connection) the stream stays open and reads again
    /// with capped backoff: nothing can commit meanwhile, so the caller misses nothing, and the
    /// contract (open until cancelled or shutdown) holds through an outage instead of every
    /// watcher reconnecting at once when it ends. Any other error is yielded and ends the
    /// stream; the caller resumes from the last cursor it saw.
    pub fn watch_events(
        &self,
        tenant: TenantId,
        query: EventQuery,
    ) -> impl Stream<Item = Result<Event, EngineError>> + Send + 'static {
        struct State {
            engine: Engine,
            tenant: TenantId,
            query: EventQuery,
            buffer: VecDeque<Event>,
            wake: tokio::sync::watch::Receiver<i64>,
            poll: Duration,
            failed: bool,
            /// The pause before the next read while the database is unreachable.
            unavailable_backoff: Duration,
        }
        let state = State {
            wake: self.inner.latest_event.subscribe(),
            poll: self.inner.config.stream_poll,
            engine: self.clone(),
            tenant,
            query,
            buffer: VecDeque::new(),
            failed: false,
            unavailable_backoff: UNAVAILABLE_BACKOFF_MIN,
        };
        futures::stream::unfold(state, |mut state| async move {
            if state.failed {
                return None;
            }
            loop {
                if let Some(event) = state.buffer.pop_front() {
                    state.query.after_cursor = event.cursor;
                    return Some((Ok(event), state));
                }
                // Mark what we have seen before reading, so a commit that lands during the read
                // still wakes us afterwards.
                state.wake.borrow_and_update();
                match state
                    .engine
                    .list_events(&state.tenant, &state.query, STREAM_PAGE)
                    .await
                {
                    Ok(page) if !page.is_empty() => {
                        state.unavailable_backoff = UNAVAILABLE_BACKOFF_MIN;
                        state.buffer.extend(page);
                    }
                    Ok(_) => {
                        state.unavailable_backoff = UNAVAILABLE_BACKOFF_MIN;
                        // Other replicas' commits do not reach our watch channel: poll as well.
                        let _ = tokio::time::timeout(state.poll, state.wake.changed()).await;
                    }
                    Err(err) if crate::inbox::database_may_recover(&err) => {
                        // Once per outage and stream, so that an error that never clears
                        // (not an outage after all) still shows.
                        if state.unavailable_backoff == UNAVAILABLE_BACKOFF_MIN {
                            tracing::warn!(error = %err, "event stream: cannot read the log; kept open, reading again with backoff");
                        }
                        tokio::time::sleep(state.unavailable_backoff).await;
                        state.unavailable_backoff =
                            (state.unavailable_backoff * 2).min(UNAVAILABLE_BACKOFF_MAX);
                    }
                    Err(err) => {
                        state.failed = true;
                        return Some((Err(err), state));
                    }
                }
            }
        })
    }
}
