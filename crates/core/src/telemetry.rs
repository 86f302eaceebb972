//! What every vendor client reports about its HTTP calls: one helper, so the clients (and the
//! shared executor they will move to) stay a single call away from the metrics. Records through
//! the `metrics` facade only; whoever runs the process installs a recorder and renders it.
//!
//! Failed calls are also kept in a small in-process list (the status page's "last vendor
//! errors"): vendor, route template, status and time only, never a body, id or credential.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};

/// `coverwatch_vendor_requests_total{vendor, endpoint, status_class, status}`.
pub const VENDOR_REQUESTS: &str = "coverwatch_vendor_requests_total";
/// `coverwatch_vendor_request_duration_seconds{vendor, endpoint}`.
pub const VENDOR_REQUEST_DURATION: &str = "coverwatch_vendor_request_duration_seconds";

/// How many failed vendor calls the process remembers.
pub const RECENT_ERRORS_KEPT: usize = 20;

/// How one request to a vendor ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    /// The vendor answered with this HTTP status.
    Status(u16),
    /// No answer: connection refused or reset, timeout, unreadable body.
    Transport,
}

impl CallOutcome {
    fn class(self) -> &'static str {
        match self {
            CallOutcome::Status(100..=199) => "1xx",
            CallOutcome::Status(200..=299) => "2xx",
            CallOutcome::Status(300..=399) => "3xx",
            CallOutcome::Status(400..=499) => "4xx",
            CallOutcome::Status(500..=599) => "5xx",
            CallOutcome::Status(_) => "other",
            CallOutcome::Transport => "error",
        }
    }

    /// The `status` label: the code itself (a bounded set: HTTP status codes are three digits),
    /// or `transport` when nothing was answered.
    fn label(self) -> String {
        match self {
            CallOutcome::Status(code @ 100..=599) => code.to_string(),
            CallOutcome::Status(_) => "other".to_owned(),
            CallOutcome::Transport => "transport".to_owned(),
        }
    }

    pub fn is_error(self) -> bool {
        !matches!(self, CallOutcome::Status(200..=399))
    }
}

/// One failed vendor call, as the status page lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VendorError {
    pub vendor: &'static str,
    pub endpoint: &'static str,
    /// The HTTP status, or `None` when the vendor did not answer.
    pub status: Option<u16>,
    pub at: DateTime<Utc>,
}

static RECENT_ERRORS: Mutex<VecDeque<VendorError>> = Mutex::new(VecDeque::new());

/// Record one request to `vendor` at `endpoint` (a route template such as `GET /pulls/{id}`,
/// never the raw path: the label set must stay bounded and free of ids).
pub fn vendor_call(
    vendor: &'static str,
    endpoint: &'static str,
    outcome: CallOutcome,
    elapsed: Duration,
) {
    metrics::counter!(
        VENDOR_REQUESTS,
        "vendor" => vendor,
        "endpoint" => endpoint,
        "status_class" => outcome.class(),
        "status" => outcome.label(),
    )
    .increment(1);
    metrics::histogram!(VENDOR_REQUEST_DURATION, "vendor" => vendor, "endpoint" => endpoint)
        .record(elapsed.as_secs_f64());
    if outcome.is_error() {
        let status = match outcome {
            CallOutcome::Status(code) => Some(code),
            CallOutcome::Transport => None,
        };
        let mut recent = RECENT_ERRORS.lock().unwrap_or_else(|e| e.into_inner());
        if recent.len() >= RECENT_ERRORS_KEPT {
            recent.pop_front();
        }
        recent.push_back(VendorError {
            vendor,
            endpoint,
            status,
            at: Utc::now(),
        });
    }
}

/// The most recent failed vendor calls of this process, newest first.
pub fn recent_vendor_errors() -> Vec<VendorError> {
    let recent = RECENT_ERRORS.lock().unwrap_or_else(|e| e.into_inner());
    recent.iter().rev().cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_labels_stay_bounded() {
        assert_eq!(CallOutcome::Status(404).class(), "4xx");
        assert_eq!(CallOutcome::Status(404).label(), "404");
        assert_eq!(CallOutcome::Status(9999).label(), "other");
        assert_eq!(CallOutcome::Transport.class(), "error");
        assert!(CallOutcome::Status(503).is_error());
        assert!(!CallOutcome::Status(204).is_error());
    }

    #[test]
    fn only_failures_are_listed_and_the_list_is_bounded() {
        for _ in 0..RECENT_ERRORS_KEPT + 5 {
            vendor_call(
                "test",
                "GET /x/{id}",
                CallOutcome::Status(500),
                Duration::ZERO,
            );
        }
        vendor_call("test", "GET /ok", CallOutcome::Status(200), Duration::ZERO);
        let recent = recent_vendor_errors();
        assert_eq!(recent.len(), RECENT_ERRORS_KEPT);
        assert!(recent.iter().all(|e| e.endpoint == "GET /x/{id}"));
    }
}
