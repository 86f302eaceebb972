//! Group commit: many callers' writes share one transaction. Each caller queues its item and
//! waits; a writer task takes whatever is queued, commits it in one batch, and answers every
//! caller with its own result. While one batch commits, the next one queues up behind it (the
//! classic leader/follower scheme), so under load batches grow by themselves and no caller waits
//! for a timer; when idle, a lone item is committed at once.
//!
//! Several writers may share one queue ([`GroupCommitConfig::writers`]): a writer holds the queue
//! only while it gathers its batch and lets go of it before committing, so the next writer
//! gathers what arrives meanwhile and commits beside it. A commit is mostly waiting (a round trip,
//! a flush to disk), so on a database that takes concurrent writers several commits in flight
//! take in more than one; each batch is still one transaction, and what makes a write happen
//! once (a unique key) is the database's, so it holds across writers as within one.
//!
//! The queue is bounded: past its capacity a caller is refused at once ([`StoreError::QueueFull`])
//! instead of being buffered without limit. A panic in a writer fails only the batch it was
//! committing (those callers' answer channels are dropped, which they report as the database
//! being unavailable) and that writer is started again.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, mpsc, oneshot};

use crate::{Result, StoreError};

/// How a group committer batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupCommitConfig {
    /// Most items committed together.
    pub max_batch: usize,
    /// How long the writer waits for more items after the first of a batch when fewer than
    /// `max_batch` are queued. Zero: never wait, take only what queued during the last commit.
    pub max_wait: Duration,
    /// Items that may wait for the writer; one more is refused with [`StoreError::QueueFull`].
    pub queue_capacity: usize,
    /// Batches committed at the same time, each by a writer of its own (at least one).
    pub writers: usize,
}

impl Default for GroupCommitConfig {
    fn default() -> Self {
        Self {
            max_batch: 256,
            max_wait: Duration::ZERO,
            queue_capacity: 4096,
            writers: DEFAULT_WRITERS,
        }
    }
}

/// Writers by default, where the database takes concurrent writers (see `ingest.writers` in the
/// README for the measurement behind it).
pub const DEFAULT_WRITERS: usize = 2;

type CommitFuture<R> = Pin<Box<dyn Future<Output = Vec<Result<R>>> + Send>>;

/// Commits one batch; answers one result per item, in the items' order.
pub(crate) type CommitFn<T, R> = Arc<dyn Fn(Vec<T>) -> CommitFuture<R> + Send + Sync>;

struct Job<T, R> {
    item: T,
    reply: oneshot::Sender<Result<R>>,
}

/// The callers' side of a group committer. Cheap to clone; the writer stops when the last
/// clone is dropped.
pub(crate) struct GroupCommitter<T, R> {
    queue: mpsc::Sender<Job<T, R>>,
    capacity: usize,
}

impl<T, R> Clone for GroupCommitter<T, R> {
    fn clone(&self) -> Self {
        Self {
            queue: self.queue.clone(),
            capacity: self.capacity,
        }
    }
}

impl<T: Send + 'static, R: Send + 'static> GroupCommitter<T, R> {
    /// Start the writers on the current tokio runtime.
    pub(crate) fn start(config: GroupCommitConfig, commit: CommitFn<T, R>) -> Self {
        let capacity = config.queue_capacity.max(1);
        let (queue, receiver) = mpsc::channel(capacity);
        let receiver = Arc::new(Mutex::new(receiver));
        for _ in 0..config.writers.max(1) {
            tokio::spawn(supervise(receiver.clone(), commit.clone(), config));
        }
        Self { queue, capacity }
    }

    /// Queue `item` and wait until the batch holding it has committed.
    pub(crate) async fn submit(&self, item: T) -> Result<R> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .try_send(Job { item, reply })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => StoreError::QueueFull {
                    capacity: self.capacity,
                },
                mpsc::error::TrySendError::Closed(_) => {
                    StoreError::Unavailable("the group-commit writer has stopped".into())
                }
            })?;
        answer.await.unwrap_or_else(|_| {
            Err(StoreError::Unavailable(
                "the group-commit writer failed before this write was committed".into(),
            ))
        })
    }
}

/// Run the writer, and run it again whenever it panics, until every caller is gone.
async fn supervise<T: Send + 'static, R: Send + 'static>(
    receiver: Arc<Mutex<mpsc::Receiver<Job<T, R>>>>,
    commit: CommitFn<T, R>,
    config: GroupCommitConfig,
) {
    loop {
        let run = tokio::spawn(write_batches(receiver.clone(), commit.clone(), config));
        match run.await {
            Ok(()) => return,
            Err(e) if e.is_panic() => {
                let payload = e.into_panic();
                let message = payload
                    .downcast_ref::<&'static str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic without a message".into());
                let message: String = message.chars().take(500).collect();
                tracing::error!(panic = %message, "group-commit writer panicked: its batch was answered unavailable; restarting it");
            }
            // Cancelled: the runtime is shutting down.
            Err(_) => return,
        }
    }
}

async fn write_batches<T, R>(
    receiver: Arc<Mutex<mpsc::Receiver<Job<T, R>>>>,
    commit: CommitFn<T, R>,
    config: GroupCommitConfig,
) {
    let max_batch = config.max_batch.max(1);
    loop {
        let Some(batch) = gather(&receiver, max_batch, config.max_wait).await else {
            return;
        };
        let (items, replies): (Vec<T>, Vec<oneshot::Sender<Result<R>>>) =
            batch.into_iter().map(|job| (job.item, job.reply)).unzip();
        // If the commit panics, `replies` is dropped while unwinding: every caller of this
        // batch is answered "unavailable" instead of waiting forever.
        let results = commit(items).await;
        let mut results = results.into_iter();
        for reply in replies {
            let result = results.next().unwrap_or_else(|| {
                Err(StoreError::Database(
                    "the batch commit gave no answer for this write".into(),
                ))
            });
            // The caller may have gone (its client disconnected); what was written stays.
            let _ = reply.send(result);
        }
    }
}

/// The next batch: the first job to arrive, whatever queued behind it, and (with `max_wait`)
/// what arrives within that wait. `None` once every caller is gone. The queue is held only
/// while gathering, never while committing, so other writers gather the next batches meanwhile;
/// nothing here can panic with the guard held, and tokio's mutex is not poisoned anyway.
async fn gather<T, R>(
    receiver: &Mutex<mpsc::Receiver<Job<T, R>>>,
    max_batch: usize,
    max_wait: Duration,
) -> Option<Vec<Job<T, R>>> {
    let mut receiver = receiver.lock().await;
    let first = receiver.recv().await?;
    let mut batch = Vec::with_capacity(max_batch.min(64));
    batch.push(first);
    while batch.len() < max_batch {
        match receiver.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
    if !max_wait.is_zero() && batch.len() < max_batch {
        let until = tokio::time::Instant::now() + max_wait;
        while batch.len() < max_batch {
            match tokio::time::timeout_at(until, receiver.recv()).await {
                Ok(Some(job)) => batch.push(job),
                _ => break,
            }
        }
    }
    Some(batch)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::sync::Notify;

    use super::*;

    /// A commit that records batch sizes, can be held shut, and panics on item 666.
    #[derive(Default)]
    struct Recorder {
        batches: std::sync::Mutex<Vec<Vec<u32>>>,
        gate: Notify,
        held: std::sync::atomic::AtomicBool,
        entered: AtomicUsize,
        taken: AtomicUsize,
    }

    fn committer(recorder: Arc<Recorder>, config: GroupCommitConfig) -> GroupCommitter<u32, u32> {
        GroupCommitter::start(
            config,
            Arc::new(move |items: Vec<u32>| {
                let recorder = recorder.clone();
                Box::pin(async move {
                    recorder.entered.fetch_add(1, Ordering::SeqCst);
                    recorder.taken.fetch_add(items.len(), Ordering::SeqCst);
                    if recorder.held.load(Ordering::SeqCst) {
                        recorder.gate.notified().await;
                    }
                    assert!(!items.contains(&666), "poisoned item");
                    recorder.batches.lock().unwrap().push(items.clone());
                    items
                        .into_iter()
                        .map(|i| {
                            if i == 13 {
                                Err(StoreError::Database("unlucky".into()))
                            } else {
                                Ok(i * 2)
                            }
                        })
                        .collect()
                })
            }),
        )
    }

    fn one_writer() -> GroupCommitConfig {
        GroupCommitConfig {
            writers: 1,
            ..GroupCommitConfig::default()
        }
    }

    async fn until(what: &str, mut check: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !check() {
            assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    #[tokio::test]
    async fn writes_queued_during_a_commit_share_the_next_one_and_each_gets_its_own_answer() {
        let recorder = Arc::new(Recorder::default());
        recorder.held.store(true, Ordering::SeqCst);
        let commits = committer(recorder.clone(), one_writer());
        let first = tokio::spawn({
            let commits = commits.clone();
            async move { commits.submit(1).await }
        });
        until("the first commit started", || {
            recorder.entered.load(Ordering::SeqCst) == 1
        })
        .await;
        // Queued while the first commit is in flight.
        let rest: Vec<_> = (2..=20)
            .map(|i| {
                let commits = commits.clone();
                tokio::spawn(async move { commits.submit(i).await })
            })
            .collect();
        until("all queued", || commits.queue.capacity() == 4096 - 19).await;
        recorder.held.store(false, Ordering::SeqCst);
        recorder.gate.notify_one();
        assert_eq!(first.await.unwrap().unwrap(), 2);
        for (i, handle) in (2..=20).zip(rest) {
            match handle.await.unwrap() {
                Ok(doubled) => assert_eq!(doubled, i * 2),
                Err(StoreError::Database(e)) => {
                    assert_eq!(i, 13);
                    assert_eq!(e, "unlucky");
                }
                Err(e) => panic!("{i}: {e}"),
            }
        }
        let batches = recorder.batches.lock().unwrap().clone();
        assert_eq!(batches, vec![vec![1], (2..=20).collect::<Vec<_>>()]);
    }

    #[tokio::test]
    async fn a_batch_never_exceeds_max_batch() {
        let recorder = Arc::new(Recorder::default());
        recorder.held.store(true, Ordering::SeqCst);
        let config = GroupCommitConfig {
            max_batch: 4,
            ..one_writer()
        };
        let commits = committer(recorder.clone(), config);
        let handles: Vec<_> = (0..11)
            .map(|i| {
                let commits = commits.clone();
                tokio::spawn(async move { commits.submit(i).await })
            })
            .collect();
        until("all queued or taken", || {
            4096 - commits.queue.capacity() + recorder.taken.load(Ordering::SeqCst) == 11
        })
        .await;
        recorder.held.store(false, Ordering::SeqCst);
        recorder.gate.notify_one();
        for handle in handles {
            let _ = handle.await.unwrap();
        }
        let batches = recorder.batches.lock().unwrap().clone();
        assert!(batches.iter().all(|b| b.len() <= 4), "{batches:?}");
        let mut all: Vec<u32> = batches.concat();
        all.sort();
        assert_eq!(all, (0..11).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once() {
        let recorder = Arc::new(Recorder::default());
        recorder.held.store(true, Ordering::SeqCst);
        let config = GroupCommitConfig {
            max_batch: 1,
            queue_capacity: 2,
            ..one_writer()
        };
        let commits = committer(recorder.clone(), config);
        let first = tokio::spawn({
            let commits = commits.clone();
            async move { commits.submit(1).await }
        });
        until("the first commit started", || {
            recorder.entered.load(Ordering::SeqCst) == 1
        })
        .await;
        let queued: Vec<_> = (2..=3)
            .map(|i| {
                let commits = commits.clone();
                tokio::spawn(async move { commits.submit(i).await })
            })
            .collect();
        until("the queue is full", || commits.queue.capacity() == 0).await;
        match commits.submit(4).await {
            Err(StoreError::QueueFull { capacity }) => assert_eq!(capacity, 2),
            other => panic!("expected QueueFull, got {other:?}"),
        }
        recorder.held.store(false, Ordering::SeqCst);
        for _ in 0..3 {
            recorder.gate.notify_one();
        }
        assert_eq!(first.await.unwrap().unwrap(), 2);
        for (i, handle) in (2..=3).zip(queued) {
            assert_eq!(handle.await.unwrap().unwrap(), i * 2);
        }
    }

    #[tokio::test]
    async fn with_two_writers_a_slow_commit_does_not_hold_up_the_next_batches() {
        let gate = Arc::new(Notify::new());
        let slow_entered = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let commits: GroupCommitter<u32, u32> = GroupCommitter::start(
            GroupCommitConfig {
                writers: 2,
                ..GroupCommitConfig::default()
            },
            Arc::new({
                let (gate, slow_entered) = (gate.clone(), slow_entered.clone());
                move |items: Vec<u32>| {
                    let (gate, slow_entered) = (gate.clone(), slow_entered.clone());
                    Box::pin(async move {
                        if items.contains(&100) {
                            slow_entered.store(true, Ordering::SeqCst);
                            gate.notified().await;
                        }
                        items.into_iter().map(|i| Ok(i + 1)).collect()
                    })
                }
            }),
        );
        let slow = tokio::spawn({
            let commits = commits.clone();
            async move { commits.submit(100).await }
        });
        until("the slow commit started", || {
            slow_entered.load(Ordering::SeqCst)
        })
        .await;
        // Each answered while the batch holding 100 is still committing: the other writer
        // took them.
        for i in 0..5 {
            let answered = tokio::time::timeout(Duration::from_secs(10), commits.submit(i))
                .await
                .expect("answered beside the slow commit");
            assert_eq!(answered.unwrap(), i + 1);
        }
        assert!(!slow.is_finished());
        gate.notify_one();
        assert_eq!(slow.await.unwrap().unwrap(), 101);
    }

    #[tokio::test]
    async fn a_panicking_commit_fails_its_batch_only_and_the_writer_goes_on() {
        let recorder = Arc::new(Recorder::default());
        let commits = committer(recorder.clone(), GroupCommitConfig::default());
        match commits.submit(666).await {
            Err(StoreError::Unavailable(message)) => {
                assert!(message.contains("failed before"), "{message}")
            }
            other => panic!("expected Unavailable, got {other:?}"),
        }
        // The writer was started again and serves the next callers.
        for i in 0..3 {
            assert_eq!(commits.submit(i).await.unwrap(), i * 2);
        }
    }
}
