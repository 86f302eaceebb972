//! Supervision of the required background tasks (inbox worker, event listener, retention, sweep,
//! health watcher). Each runs as a task of its own; one that returns or panics while the service
//! is not shutting down is logged and started again after a capped exponential backoff. While a
//! required task is down, gRPC health says NOT_SERVING and `/readyz` answers 503 naming it: a
//! process whose worker died must not look healthy while webhooks pile up unprocessed.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use coverwatch_core::backoff::Backoff;
use coverwatch_engine::panic_message;
use rand::Rng;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// How long a stopped task waits before it is started again: from 1 s, doubling, up to 1 min.
pub const RESTART_BACKOFF: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));

/// What the service's readiness depends on, shared by the supervisor (which tasks are down),
/// the health watcher (whether the database answers), gRPC health and `/readyz`.
#[derive(Clone)]
pub struct TaskHealth {
    inner: Arc<Inner>,
}

struct Inner {
    state: std::sync::Mutex<State>,
    reporter: HealthReporter,
    /// The gRPC service names that share the one status (the empty name: the whole server).
    services: Vec<&'static str>,
    /// What gRPC health says now. Held across publishing, so that two changes racing cannot
    /// leave the older status published last.
    published: tokio::sync::Mutex<Option<ServingStatus>>,
}

#[derive(Default)]
struct State {
    /// Required tasks that are down, with why.
    down: BTreeMap<&'static str, String>,
    database_reachable: bool,
}

impl TaskHealth {
    /// Reports through `reporter` for each of `services`; nothing is published until the
    /// first change (or [`TaskHealth::publish`]).
    pub fn new(reporter: HealthReporter, services: Vec<&'static str>) -> Self {
        Self {
            inner: Arc::new(Inner {
                state: std::sync::Mutex::new(State {
                    down: BTreeMap::new(),
                    database_reachable: true,
                }),
                reporter,
                services,
                published: tokio::sync::Mutex::new(None),
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Nothing that holds this lock can panic half-way; tolerate poisoning all the same so
        // that health can never be what stops the service.
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The required tasks that are down now, each with why (how it stopped).
    pub fn down_tasks(&self) -> Vec<(&'static str, String)> {
        self.state()
            .down
            .iter()
            .map(|(name, reason)| (*name, reason.clone()))
            .collect()
    }

    fn serving(&self) -> ServingStatus {
        let state = self.state();
        if state.database_reachable && state.down.is_empty() {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        }
    }

    pub(crate) async fn task_down(&self, name: &'static str, reason: String) {
        self.state().down.insert(name, reason);
        self.publish().await;
    }

    pub(crate) async fn task_up(&self, name: &'static str) {
        self.state().down.remove(name);
        self.publish().await;
    }

    pub(crate) async fn set_database_reachable(&self, reachable: bool) {
        self.state().database_reachable = reachable;
        self.publish().await;
    }

    /// Bring gRPC health in line with the current state.
    pub async fn publish(&self) {
        let mut published = self.inner.published.lock().await;
        let status = self.serving();
        if *published == Some(status) {
            return;
        }
        for name in &self.inner.services {
            self.inner.reporter.set_service_status(*name, status).await;
        }
        *published = Some(status);
    }
}

/// Runs required tasks and restarts those that stop while the service is running.
#[derive(Clone)]
pub struct Supervisor {
    health: TaskHealth,
    shutdown: watch::Receiver<bool>,
    backoff: Backoff,
}

impl Supervisor {
    pub fn new(health: TaskHealth, shutdown: watch::Receiver<bool>, backoff: Backoff) -> Self {
        Self {
            health,
            shutdown,
            backoff,
        }
    }

    /// Run `task` (given the shutdown signal) as the required task `name`, and again each time
    /// it returns or panics before shutdown. The handle ends once the task ended after shutdown.
    pub fn spawn<F, Fut>(&self, name: &'static str, mut task: F) -> JoinHandle<()>
    where
        F: FnMut(watch::Receiver<bool>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let health = self.health.clone();
        let mut shutdown = self.shutdown.clone();
        let backoff = self.backoff;
        tokio::spawn(async move {
            // Stops in a row: a task that ran longer than the longest wait before it stopped
            // starts over from the shortest, so one crash a day is not met with the cap.
            let mut stops = 0u32;
            loop {
                let started = tokio::time::Instant::now();
                // A task of its own, so that a panic unwinds that task only and reaches us as
                // a `JoinError` carrying the message.
                let ended = tokio::spawn(task(shutdown.clone())).await;
                let shutting_down = *shutdown.borrow();
                let reason = match ended {
                    Ok(()) if shutting_down => return,
                    Ok(()) => "returned while the service was running".to_owned(),
                    Err(err) if err.is_panic() => {
                        format!("panicked: {}", panic_message(err.into_panic().as_ref()))
                    }
                    Err(_) => {
                        // Only the runtime itself shutting down cancels it.
                        tracing::warn!(task = name, "required background task was cancelled");
                        return;
                    }
                };
                if shutting_down {
                    tracing::error!(task = name, %reason, "required background task stopped while shutting down");
                    return;
                }
                if started.elapsed() > backoff.max {
                    stops = 0;
                }
                stops = stops.saturating_add(1);
                let delay = backoff.delay(stops, rand::thread_rng().r#gen::<f64>());
                tracing::error!(
                    task = name,
                    %reason,
                    restart_in_ms = delay.as_millis() as u64,
                    stops_in_a_row = stops,
                    "required background task stopped; not serving until it is restarted"
                );
                health.task_down(name, reason).await;
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    _ = shutdown.wait_for(|stop| *stop) => return,
                }
                tracing::warn!(task = name, "required background task restarted");
                health.task_up(name).await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn health() -> (TaskHealth, HealthReporter) {
        let (reporter, _service) = tonic_health::server::health_reporter();
        (TaskHealth::new(reporter.clone(), vec![""]), reporter)
    }

    #[tokio::test]
    async fn a_panicking_task_is_restarted_and_reported_down_meanwhile() {
        let (health, _reporter) = health();
        let (stop, shutdown) = watch::channel(false);
        // Long enough a wait that the test reads the down state before the restart.
        let backoff = Backoff::new(Duration::from_secs(2), Duration::from_secs(2));
        let supervisor = Supervisor::new(health.clone(), shutdown, backoff);
        let runs = Arc::new(AtomicU32::new(0));
        let counted = runs.clone();
        let handle = supervisor.spawn("flaky", move |mut shutdown| {
            let run = counted.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                if run == 1 {
                    panic!("first run fails");
                }
                let _ = shutdown.wait_for(|stop| *stop).await;
            }
        });
        let start = tokio::time::Instant::now();
        while health.down_tasks().is_empty() {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "never reported down"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            health.down_tasks(),
            [("flaky", "panicked: first run fails".to_owned())]
        );
        assert_eq!(health.serving(), ServingStatus::NotServing);
        while !health.down_tasks().is_empty() || runs.load(Ordering::SeqCst) < 2 {
            assert!(start.elapsed() < Duration::from_secs(10), "never restarted");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(health.serving(), ServingStatus::Serving);
        stop.send(true).unwrap();
        handle.await.unwrap();
        assert_eq!(
            runs.load(Ordering::SeqCst),
            2,
            "not restarted after shutdown"
        );
    }

    #[tokio::test]
    async fn a_task_ending_at_shutdown_is_not_restarted() {
        let (health, _reporter) = health();
        let (stop, shutdown) = watch::channel(false);
        let supervisor = Supervisor::new(health.clone(), shutdown, RESTART_BACKOFF);
        let runs = Arc::new(AtomicU32::new(0));
        let counted = runs.clone();
        let handle = supervisor.spawn("steady", move |mut shutdown| {
            counted.fetch_add(1, Ordering::SeqCst);
            async move {
                let _ = shutdown.wait_for(|stop| *stop).await;
            }
        });
        stop.send(true).unwrap();
        handle.await.unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(health.down_tasks().is_empty());
    }

    #[tokio::test]
    async fn database_and_tasks_both_decide_serving() {
        let (health, _reporter) = health();
        assert_eq!(health.serving(), ServingStatus::Serving);
        health.set_database_reachable(false).await;
        assert_eq!(health.serving(), ServingStatus::NotServing);
        health.task_down("sweep", "returned".into()).await;
        health.set_database_reachable(true).await;
        assert_eq!(health.serving(), ServingStatus::NotServing);
        health.task_up("sweep").await;
        assert_eq!(health.serving(), ServingStatus::Serving);
    }
}
