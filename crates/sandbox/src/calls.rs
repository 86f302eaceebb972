//! The log of API calls both simulators answered: who called (the client id, the team or the
//! destination client named), what, and what they were told. Tests read it to prove that a
//! tenant's link only ever used that tenant's vendor account.
//!
//! Secrets are never recorded: a client secret, an access token or a `pull-jwt` stays out of
//! the log, only the identifiers that travel beside them are kept.

use std::sync::{Arc, Mutex};

use axum::extract::Request;
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::clock::SandboxClock;

/// One API call a simulator answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ApiCall {
    /// 1, 2, 3… in the order the answers were given.
    pub seq: u64,
    /// `axle` or `canopy`.
    pub vendor: &'static str,
    pub method: String,
    /// The path under the vendor's API root (`/ignition`, `/teams/{teamId}/pulls/{pullId}`),
    /// without the query.
    pub path: String,
    /// The client id the call authenticated with (`x-client-id`, the HTTP Basic user name or
    /// `x-canopy-client-id`), whether or not the simulator accepted it.
    pub client_id: Option<String>,
    /// Canopy: the team of a `/teams/{teamId}/…` path.
    pub team_id: Option<String>,
    /// Axle: `x-destination-client-id`, for platforms.
    pub destination_client_id: Option<String>,
    /// The status the simulator answered (an injected fault's included).
    pub status: u16,
    /// When, on the sandbox clock.
    pub at: DateTime<Utc>,
}

/// Every call either simulator answered, oldest first. Cheap to clone; clones share the log.
#[derive(Clone, Debug, Default)]
pub struct CallLog {
    calls: Arc<Mutex<Vec<ApiCall>>>,
}

impl CallLog {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn all(&self) -> Vec<ApiCall> {
        self.lock().clone()
    }

    /// The calls made to one vendor.
    pub fn of(&self, vendor: &str) -> Vec<ApiCall> {
        self.lock()
            .iter()
            .filter(|c| c.vendor == vendor)
            .cloned()
            .collect()
    }

    pub fn clear(&self) {
        self.lock().clear();
    }

    fn push(&self, mut call: ApiCall) {
        let mut calls = self.lock();
        call.seq = calls.len() as u64 + 1;
        calls.push(call);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<ApiCall>> {
        // A panic elsewhere while the log was held leaves it readable: it is only appended to.
        self.calls.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Who a request says it is, read before it is answered.
pub(crate) struct Caller {
    pub client_id: Option<String>,
    pub team_id: Option<String>,
    pub destination_client_id: Option<String>,
}

/// Records every request of a vendor router in `log`; `who` reads the identifiers from the
/// request (each vendor sends them its own way).
pub(crate) async fn record(
    vendor: &'static str,
    log: CallLog,
    clock: SandboxClock,
    who: fn(&str, &HeaderMap) -> Caller,
    req: Request,
    next: Next,
) -> Response {
    let method = req.method().to_string();
    let path = req.uri().path().to_owned();
    let caller = who(&path, req.headers());
    let response = next.run(req).await;
    log.push(ApiCall {
        seq: 0,
        vendor,
        method,
        path,
        client_id: caller.client_id,
        team_id: caller.team_id,
        destination_client_id: caller.destination_client_id,
        status: response.status().as_u16(),
        at: clock.now(),
    });
    response
}

pub(crate) fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}
