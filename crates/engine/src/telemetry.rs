//! The engine's metrics, recorded through the `metrics` facade (the service installs the
//! recorder). Labels are bounded: provider, outcome and event kind, never ids.

use std::time::Duration;

use coverwatch_core::{Event, ProviderId};

/// `coverwatch_inbox_attempts_total{provider}`: every processing attempt of a delivery.
pub const INBOX_ATTEMPTS: &str = "coverwatch_inbox_attempts_total";
/// `coverwatch_inbox_retries_total{provider}`: attempts that failed and were scheduled again.
pub const INBOX_RETRIES: &str = "coverwatch_inbox_retries_total";
/// `coverwatch_inbox_dead_letters_total{provider}`: deliveries given up on.
pub const INBOX_DEAD_LETTERS: &str = "coverwatch_inbox_dead_letters_total";
/// `coverwatch_inbox_processing_seconds{provider, outcome}`: one attempt, claim to outcome.
pub const INBOX_PROCESSING: &str = "coverwatch_inbox_processing_seconds";
/// `coverwatch_events_appended_total{kind}`: events committed to the log.
pub const EVENTS_APPENDED: &str = "coverwatch_events_appended_total";

/// What became of one processing attempt.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Settled {
    Processed,
    Unmatched,
    Retried,
    DeadLettered,
}

impl Settled {
    fn as_str(self) -> &'static str {
        match self {
            Settled::Processed => "processed",
            Settled::Unmatched => "unmatched",
            Settled::Retried => "retried",
            Settled::DeadLettered => "dead_lettered",
        }
    }
}

pub(crate) fn delivery_attempt(provider: &ProviderId, settled: Settled, elapsed: Duration) {
    let provider = provider.to_string();
    metrics::counter!(INBOX_ATTEMPTS, "provider" => provider.clone()).increment(1);
    match settled {
        Settled::Retried => {
            metrics::counter!(INBOX_RETRIES, "provider" => provider.clone()).increment(1)
        }
        Settled::DeadLettered => {
            metrics::counter!(INBOX_DEAD_LETTERS, "provider" => provider.clone()).increment(1);
        }
        Settled::Processed | Settled::Unmatched => {}
    }
    metrics::histogram!(INBOX_PROCESSING, "provider" => provider, "outcome" => settled.as_str())
        .record(elapsed.as_secs_f64());
}

/// Count events once their transaction committed.
pub(crate) fn events_appended(events: &[Event]) {
    for event in events {
        metrics::counter!(EVENTS_APPENDED, "kind" => event.kind().as_str()).increment(1);
    }
}
