//! Fault injection for simulated endpoints and webhook deliveries.
//!
//! A [`FaultRule`] pairs a [`FaultTarget`] (an endpoint by name, or webhook deliveries matched by
//! vendor / event type / URL) with a [`FaultEffect`], optionally limited to the next N matching
//! occurrences. Endpoint names are plain strings such as `axle.token.exchange` or
//! `canopy.pulls.get`; routers declare them with [`guard`], which also registers the name so the
//! control API can list them. A target name ending in `*` matches by prefix (`axle.*`).
//!
//! Several rules may match one occurrence. Effects that decide the outcome on their own
//! (`status`, `hang`, `malformed`, `drop`; see [`FaultEffect::is_outcome`]) apply **one per
//! occurrence**: the earliest-added matching rule that has occurrences left is consumed, and the
//! later ones wait for the next occurrences. So three rules added in this order on one endpoint,
//! `429 ×1`, `500 ×1`, then nothing, give 429, then 500, then the real answer. A rule without a
//! `times` limit stays in front of every rule added after it until it is removed.
//!
//! The other effects (`latency`, `duplicate`, `out_of_order`) combine: every matching rule is
//! consumed once and applies, together with at most one outcome, in this order: latency, hang,
//! status, malformed body, duplicate, out of order, drop.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// What a fault rule applies to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FaultTarget {
    /// A simulated HTTP endpoint, by the name its router gave it (see [`guard`]).
    /// A trailing `*` matches every endpoint with that prefix.
    Endpoint { name: String },
    /// Webhook deliveries. Every given field must match; a missing field matches anything.
    Webhook {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        vendor: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event_type: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        url_contains: Option<String>,
    },
}

impl FaultTarget {
    pub fn endpoint(name: impl Into<String>) -> Self {
        Self::Endpoint { name: name.into() }
    }

    /// Every webhook of one vendor (`"axle"` or `"canopy"`).
    pub fn webhooks(vendor: impl Into<String>) -> Self {
        Self::Webhook {
            vendor: Some(vendor.into()),
            event_type: None,
            url_contains: None,
        }
    }

    /// Webhooks of one vendor and one event type (`ignition.completed`, `COMPLETE`, …).
    pub fn webhook_event(vendor: impl Into<String>, event_type: impl Into<String>) -> Self {
        Self::Webhook {
            vendor: Some(vendor.into()),
            event_type: Some(event_type.into()),
            url_contains: None,
        }
    }

    fn matches_endpoint(&self, endpoint: &str) -> bool {
        match self {
            Self::Endpoint { name } => name_matches(name, endpoint),
            Self::Webhook { .. } => false,
        }
    }

    fn matches_webhook(&self, vendor: &str, event_type: &str, url: &str) -> bool {
        match self {
            Self::Endpoint { .. } => false,
            Self::Webhook {
                vendor: v,
                event_type: e,
                url_contains: u,
            } => {
                v.as_deref().is_none_or(|v| v.eq_ignore_ascii_case(vendor))
                    && e.as_deref().is_none_or(|e| name_matches(e, event_type))
                    && u.as_deref().is_none_or(|u| url.contains(u))
            }
        }
    }
}

fn name_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

/// What happens to a matched occurrence.
///
/// Endpoints honour `status`, `latency`, `hang` and `malformed`. Webhooks honour `status` (the
/// attempt fails with that status without reaching the receiver, so the vendor's retry policy
/// runs), `latency` (the delivery is sent late, so it can overtake nothing but is overtaken),
/// `malformed`, `duplicate`, `out_of_order` and `drop`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FaultEffect {
    /// Answer with this status instead of calling the endpoint. `body` defaults to the vendor's
    /// own error shape (Axle `{"success":false,…}`, Canopy `{"error":"CODE"}`).
    Status {
        status: u16,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_secs: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        body: Option<String>,
    },
    /// Wait this long before handling (or sending) it.
    Latency { ms: u64 },
    /// Never answer: the request hangs until the client gives up, `ms` elapses, or the sandbox
    /// shuts down.
    Hang {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ms: Option<u64>,
    },
    /// Answer (or send) a truncated, unparseable body with the normal status and headers.
    Malformed,
    /// Send the webhook `copies` extra times (same body, same event id).
    Duplicate {
        #[serde(default = "one")]
        copies: u32,
    },
    /// Hold the webhook back and send it right after the next webhook to the same URL (or after
    /// `max_hold_ms` if none comes).
    OutOfOrder {
        #[serde(default = "default_hold_ms")]
        max_hold_ms: u64,
    },
    /// Never send the webhook (it is still logged, with no status).
    Drop,
}

fn one() -> u32 {
    1
}

fn default_hold_ms() -> u64 {
    2_000
}

impl FaultEffect {
    pub fn status(status: u16) -> Self {
        Self::Status {
            status,
            retry_after_secs: None,
            body: None,
        }
    }

    pub fn rate_limited(retry_after_secs: u64) -> Self {
        Self::Status {
            status: 429,
            retry_after_secs: Some(retry_after_secs),
            body: None,
        }
    }

    pub fn latency(d: Duration) -> Self {
        Self::Latency {
            ms: d.as_millis() as u64,
        }
    }

    /// Whether this effect decides the occurrence's outcome on its own (`status`, `hang`,
    /// `malformed`, `drop`). Of such effects, one per occurrence applies, in the order the rules
    /// were added; the others (`latency`, `duplicate`, `out_of_order`) combine with it.
    pub fn is_outcome(&self) -> bool {
        match self {
            Self::Status { .. } | Self::Hang { .. } | Self::Malformed | Self::Drop => true,
            Self::Latency { .. } | Self::Duplicate { .. } | Self::OutOfOrder { .. } => false,
        }
    }

    fn order(&self) -> u8 {
        match self {
            Self::Latency { .. } => 0,
            Self::Hang { .. } => 1,
            Self::Status { .. } => 2,
            Self::Malformed => 3,
            Self::Duplicate { .. } => 4,
            Self::OutOfOrder { .. } => 5,
            Self::Drop => 6,
        }
    }
}

/// A rule as registered. `times: None` means "until removed".
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FaultRule {
    /// Assigned by [`Faults::add`]; ignored on input.
    #[serde(default)]
    pub id: u64,
    pub target: FaultTarget,
    pub effect: FaultEffect,
    /// How many more matching occurrences this rule applies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub times: Option<u32>,
}

impl FaultRule {
    pub fn new(target: FaultTarget, effect: FaultEffect) -> Self {
        Self {
            id: 0,
            target,
            effect,
            times: None,
        }
    }

    /// Limit the rule to the next `n` matching occurrences.
    pub fn times(mut self, n: u32) -> Self {
        self.times = Some(n);
        self
    }
}

#[derive(Debug, Default)]
struct Inner {
    next_id: u64,
    rules: Vec<FaultRule>,
    endpoints: BTreeSet<String>,
}

/// The registry of active fault rules, shared by every simulator and the webhook sender.
#[derive(Clone, Debug)]
pub struct Faults {
    inner: Arc<Mutex<Inner>>,
    // Flipped to true at shutdown so that hanging requests let the server stop.
    released: watch::Sender<bool>,
}

impl Default for Faults {
    fn default() -> Self {
        Self::new()
    }
}

impl Faults {
    pub fn new() -> Self {
        Self {
            inner: Arc::default(),
            released: watch::channel(false).0,
        }
    }

    /// Registers a rule and returns its id.
    pub fn add(&self, mut rule: FaultRule) -> u64 {
        let mut inner = self.lock();
        inner.next_id += 1;
        rule.id = inner.next_id;
        let id = rule.id;
        inner.rules.push(rule);
        id
    }

    /// Shorthand for `add(FaultRule::new(target, effect))`.
    pub fn inject(&self, target: FaultTarget, effect: FaultEffect) -> u64 {
        self.add(FaultRule::new(target, effect))
    }

    /// Shorthand for a rule limited to the next `times` occurrences.
    pub fn inject_times(&self, target: FaultTarget, effect: FaultEffect, times: u32) -> u64 {
        self.add(FaultRule::new(target, effect).times(times))
    }

    pub fn remove(&self, id: u64) -> bool {
        let mut inner = self.lock();
        let before = inner.rules.len();
        inner.rules.retain(|r| r.id != id);
        inner.rules.len() != before
    }

    pub fn clear(&self) {
        self.lock().rules.clear();
    }

    /// Active rules (exhausted ones are removed as they run out).
    pub fn list(&self) -> Vec<FaultRule> {
        self.lock().rules.clone()
    }

    /// Declares an endpoint name so that the control API can list it. [`guard`] calls this.
    pub fn register_endpoint(&self, name: &str) {
        self.lock().endpoints.insert(name.to_owned());
    }

    /// Every endpoint name registered by a router, sorted.
    pub fn endpoints(&self) -> Vec<String> {
        self.lock().endpoints.iter().cloned().collect()
    }

    /// Consumes one occurrence of the rules matching this endpoint and returns their effects:
    /// every combining effect, and the first outcome effect in the order the rules were added
    /// (see the [module docs](self)).
    pub fn take_for_endpoint(&self, endpoint: &str) -> Vec<FaultEffect> {
        self.take(|t| t.matches_endpoint(endpoint))
    }

    /// Consumes one occurrence of the rules matching this webhook delivery, like
    /// [`Faults::take_for_endpoint`].
    pub fn take_for_webhook(&self, vendor: &str, event_type: &str, url: &str) -> Vec<FaultEffect> {
        self.take(|t| t.matches_webhook(vendor, event_type, url))
    }

    /// Like [`Faults::take_for_webhook`], but only `status` rules: a retry attempt is an
    /// occurrence for them and for nothing else. At most one rule is consumed, the
    /// earliest-added, so `500 ×1` then `503 ×1` fail the first attempt and the first retry.
    pub fn take_status_for_webhook(
        &self,
        vendor: &str,
        event_type: &str,
        url: &str,
    ) -> Option<u16> {
        self.take_where(
            |t| t.matches_webhook(vendor, event_type, url),
            |e| matches!(e, FaultEffect::Status { .. }),
        )
        .into_iter()
        .find_map(|e| match e {
            FaultEffect::Status { status, .. } => Some(status),
            _ => None,
        })
    }

    fn take(&self, pred: impl FnMut(&FaultTarget) -> bool) -> Vec<FaultEffect> {
        self.take_where(pred, |_| true)
    }

    fn take_where(
        &self,
        mut pred: impl FnMut(&FaultTarget) -> bool,
        effect_pred: impl Fn(&FaultEffect) -> bool,
    ) -> Vec<FaultEffect> {
        let mut inner = self.lock();
        let mut effects = Vec::new();
        let mut outcome_taken = false;
        // Rules are kept in the order they were added, so the first outcome met is the oldest.
        for rule in inner.rules.iter_mut() {
            if rule.times == Some(0) || !effect_pred(&rule.effect) || !pred(&rule.target) {
                continue;
            }
            if rule.effect.is_outcome() {
                if outcome_taken {
                    continue;
                }
                outcome_taken = true;
            }
            if let Some(n) = rule.times.as_mut() {
                *n -= 1;
            }
            effects.push(rule.effect.clone());
        }
        inner.rules.retain(|r| r.times != Some(0));
        effects.sort_by_key(FaultEffect::order);
        effects
    }

    /// Lets every hanging request finish (with 504) so the server can shut down.
    pub fn release_hangs(&self) {
        self.released.send_replace(true);
    }

    /// Waits until [`Faults::release_hangs`] or `limit` elapses.
    pub async fn hang(&self, limit: Option<Duration>) {
        let mut rx = self.released.subscribe();
        let released = async move {
            let _ = rx.wait_for(|r| *r).await;
        };
        match limit {
            Some(d) => {
                let _ = tokio::time::timeout(d, released).await;
            }
            None => released.await,
        }
    }

    /// Applies this endpoint's faults around `next`. Use [`guard`] rather than calling this.
    pub async fn apply_endpoint(&self, endpoint: &str, req: Request, next: Next) -> Response {
        let effects = self.take_for_endpoint(endpoint);
        if effects.is_empty() {
            return next.run(req).await;
        }
        let mut malformed = false;
        for effect in &effects {
            match effect {
                FaultEffect::Latency { ms } => tokio::time::sleep(Duration::from_millis(*ms)).await,
                FaultEffect::Hang { ms } => {
                    self.hang(ms.map(Duration::from_millis)).await;
                    return StatusCode::GATEWAY_TIMEOUT.into_response();
                }
                FaultEffect::Status {
                    status,
                    retry_after_secs,
                    body,
                } => {
                    return error_response(endpoint, *status, *retry_after_secs, body.as_deref());
                }
                FaultEffect::Malformed => malformed = true,
                // Webhook-only effects have no meaning for an endpoint.
                FaultEffect::Duplicate { .. }
                | FaultEffect::OutOfOrder { .. }
                | FaultEffect::Drop => {}
            }
        }
        let response = next.run(req).await;
        if malformed {
            malform_response(response).await
        } else {
            response
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("faults lock poisoned")
    }
}

/// Wraps a route so that faults targeting `endpoint` apply to it, and registers the name.
///
/// ```ignore
/// Router::new().route("/token/exchange", faults::guard(&faults, "axle.token.exchange", post(exchange)))
/// ```
pub fn guard<S>(faults: &Faults, endpoint: &'static str, route: MethodRouter<S>) -> MethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    faults.register_endpoint(endpoint);
    let faults = faults.clone();
    route.layer(axum::middleware::from_fn(
        move |req: Request, next: Next| {
            let faults = faults.clone();
            async move { faults.apply_endpoint(endpoint, req, next).await }
        },
    ))
}

/// Same as [`guard`] for every route of a router (for example a hosted page with many routes):
/// the whole router shares one endpoint name.
pub fn guard_router<S>(faults: &Faults, endpoint: &'static str, router: Router<S>) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    faults.register_endpoint(endpoint);
    let faults = faults.clone();
    router.layer(axum::middleware::from_fn(
        move |req: Request, next: Next| {
            let faults = faults.clone();
            async move { faults.apply_endpoint(endpoint, req, next).await }
        },
    ))
}

/// The injected error response, shaped like the vendor's own errors unless a body is given.
pub fn error_response(
    endpoint: &str,
    status: u16,
    retry_after_secs: Option<u64>,
    body: Option<&str>,
) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = match body {
        Some(b) => b.to_owned(),
        None => default_error_body(endpoint, status),
    };
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    if let Some(secs) = retry_after_secs {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

fn default_error_body(endpoint: &str, status: StatusCode) -> String {
    if endpoint.starts_with("canopy") {
        let code = match status.as_u16() {
            400 => "INVALID_INPUT",
            401 => "UNAUTHORIZED",
            403 => "FORBIDDEN",
            404 => "NOT_FOUND",
            429 => "TOO_MANY_REQUESTS",
            _ => "INTERNAL_ERROR",
        };
        serde_json::json!({ "error": code }).to_string()
    } else {
        let message = status.canonical_reason().unwrap_or("Error");
        serde_json::json!({ "success": false, "message": message }).to_string()
    }
}

/// Cuts a body in half (and drops a closing brace if that is all it takes to stay valid) so
/// that it cannot parse as JSON.
pub fn malform_bytes(body: &[u8]) -> Vec<u8> {
    if body.len() < 2 {
        return b"{\"".to_vec();
    }
    let mut cut = body[..body.len() / 2].to_vec();
    if serde_json::from_slice::<serde_json::Value>(&cut).is_ok() {
        cut.extend_from_slice(b",{");
    }
    cut
}

async fn malform_response(response: Response) -> Response {
    let (mut parts, body) = response.into_parts();
    let bytes = to_bytes(body, usize::MAX).await.unwrap_or_default();
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(malform_bytes(&bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_limits_occurrences() {
        let faults = Faults::new();
        faults.inject_times(
            FaultTarget::endpoint("axle.token.exchange"),
            FaultEffect::status(500),
            2,
        );
        assert_eq!(faults.take_for_endpoint("axle.token.exchange").len(), 1);
        assert_eq!(faults.take_for_endpoint("axle.accounts.get").len(), 0);
        assert_eq!(faults.take_for_endpoint("axle.token.exchange").len(), 1);
        assert!(faults.take_for_endpoint("axle.token.exchange").is_empty());
        assert!(faults.list().is_empty());
    }

    #[test]
    fn prefix_and_webhook_matching() {
        let faults = Faults::new();
        faults.inject(FaultTarget::endpoint("axle.*"), FaultEffect::Malformed);
        faults.inject(
            FaultTarget::webhook_event("canopy", "COMPLETE"),
            FaultEffect::Drop,
        );
        assert_eq!(
            faults.take_for_endpoint("axle.policies.get"),
            vec![FaultEffect::Malformed]
        );
        assert!(faults.take_for_endpoint("canopy.pulls.get").is_empty());
        assert_eq!(
            faults.take_for_webhook("canopy", "COMPLETE", "http://x"),
            vec![FaultEffect::Drop]
        );
        assert!(
            faults
                .take_for_webhook("canopy", "ERROR", "http://x")
                .is_empty()
        );
    }

    #[test]
    fn retries_consume_only_status_rules() {
        let faults = Faults::new();
        faults.inject_times(
            FaultTarget::webhooks("axle"),
            FaultEffect::Duplicate { copies: 1 },
            1,
        );
        faults.inject_times(FaultTarget::webhooks("axle"), FaultEffect::status(500), 1);
        assert_eq!(faults.take_status_for_webhook("axle", "x", "u"), Some(500));
        assert_eq!(faults.take_status_for_webhook("axle", "x", "u"), None);
        assert_eq!(
            faults.take_for_webhook("axle", "x", "u"),
            vec![FaultEffect::Duplicate { copies: 1 }]
        );
    }

    #[test]
    fn outcome_rules_apply_one_per_request_in_the_order_added() {
        let faults = Faults::new();
        let endpoint = || FaultTarget::endpoint("axle.accounts.get");
        faults.inject_times(endpoint(), FaultEffect::rate_limited(1), 1);
        faults.inject_times(endpoint(), FaultEffect::status(500), 1);
        // Latency combines with whichever outcome applies.
        faults.inject_times(
            endpoint(),
            FaultEffect::latency(Duration::from_millis(5)),
            2,
        );
        assert_eq!(
            faults.take_for_endpoint("axle.accounts.get"),
            vec![
                FaultEffect::latency(Duration::from_millis(5)),
                FaultEffect::rate_limited(1)
            ]
        );
        assert_eq!(
            faults.take_for_endpoint("axle.accounts.get"),
            vec![
                FaultEffect::latency(Duration::from_millis(5)),
                FaultEffect::status(500)
            ]
        );
        assert!(faults.take_for_endpoint("axle.accounts.get").is_empty());
        assert!(faults.list().is_empty());
    }

    #[test]
    fn every_outcome_kind_takes_its_turn() {
        let faults = Faults::new();
        let endpoint = || FaultTarget::endpoint("canopy.pulls.get");
        faults.inject_times(endpoint(), FaultEffect::Hang { ms: Some(1) }, 1);
        // A prefix rule and an exact rule queue together, in the order added.
        faults.inject_times(FaultTarget::endpoint("canopy.*"), FaultEffect::Malformed, 1);
        faults.inject_times(endpoint(), FaultEffect::status(503), 2);
        let mut seen = Vec::new();
        loop {
            let effects = faults.take_for_endpoint("canopy.pulls.get");
            assert!(effects.len() <= 1, "one outcome per request: {effects:?}");
            match effects.into_iter().next() {
                Some(e) => seen.push(e),
                None => break,
            }
        }
        assert_eq!(
            seen,
            vec![
                FaultEffect::Hang { ms: Some(1) },
                FaultEffect::Malformed,
                FaultEffect::status(503),
                FaultEffect::status(503),
            ]
        );
    }

    #[test]
    fn an_unlimited_rule_stays_in_front_until_removed() {
        let faults = Faults::new();
        let endpoint = || FaultTarget::endpoint("axle.policies.get");
        let forever = faults.inject(endpoint(), FaultEffect::status(503));
        faults.inject_times(endpoint(), FaultEffect::status(500), 1);
        for _ in 0..3 {
            assert_eq!(
                faults.take_for_endpoint("axle.policies.get"),
                vec![FaultEffect::status(503)]
            );
        }
        assert!(faults.remove(forever));
        assert_eq!(
            faults.take_for_endpoint("axle.policies.get"),
            vec![FaultEffect::status(500)]
        );
        assert!(faults.take_for_endpoint("axle.policies.get").is_empty());
    }

    #[test]
    fn webhook_status_rules_fail_one_attempt_each() {
        let faults = Faults::new();
        faults.inject_times(FaultTarget::webhooks("canopy"), FaultEffect::status(500), 1);
        faults.inject_times(
            FaultTarget::webhook_event("canopy", "COMPLETE"),
            FaultEffect::status(503),
            1,
        );
        faults.inject_times(
            FaultTarget::webhooks("canopy"),
            FaultEffect::Duplicate { copies: 1 },
            1,
        );
        // The first attempt: the oldest status rule, and the duplicate that combines with it.
        assert_eq!(
            faults.take_for_webhook("canopy", "COMPLETE", "u"),
            vec![
                FaultEffect::status(500),
                FaultEffect::Duplicate { copies: 1 }
            ]
        );
        // Each retry attempt meets the next status rule.
        assert_eq!(
            faults.take_status_for_webhook("canopy", "COMPLETE", "u"),
            Some(503)
        );
        assert_eq!(
            faults.take_status_for_webhook("canopy", "COMPLETE", "u"),
            None
        );
        assert!(faults.list().is_empty());
    }

    #[test]
    fn rules_round_trip_as_json() {
        let rule: FaultRule = serde_json::from_value(serde_json::json!({
            "target": {"kind": "endpoint", "name": "axle.token.exchange"},
            "effect": {"kind": "status", "status": 429, "retry_after_secs": 3},
            "times": 1
        }))
        .unwrap();
        assert_eq!(rule.effect, FaultEffect::rate_limited(3));
        assert_eq!(rule.times, Some(1));
        let dup: FaultEffect = serde_json::from_str(r#"{"kind":"duplicate"}"#).unwrap();
        assert_eq!(dup, FaultEffect::Duplicate { copies: 1 });
    }

    #[test]
    fn malformed_bytes_do_not_parse() {
        for body in [
            &b"{\"success\":true,\"data\":{}}"[..],
            b"[1,2]",
            b"{}",
            b"x",
        ] {
            let m = malform_bytes(body);
            assert!(
                serde_json::from_slice::<serde_json::Value>(&m).is_err(),
                "{m:?}"
            );
        }
    }
}
