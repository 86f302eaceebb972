//! The one HTTP executor every vendor client sends through.
//!
//! A vendor crate builds requests (URL, auth headers, JSON body, how safe a repeat is) and
//! reads answers and error bodies; everything between is here and the same for every vendor:
//!
//! * one `reqwest` client per vendor account, built once: connect and whole-request timeouts,
//!   the vendor's default headers, rustls, and **no redirects** (a redirect would carry the
//!   credentials in those headers to wherever it points);
//! * one retry rule: which statuses and transport failures are worth repeating
//!   ([`is_retryable_status`]), counted in attempts (the first included), spaced by the shared
//!   capped exponential backoff with jitter ([`coverwatch_core::backoff::Backoff`]), and never
//!   sooner than the vendor's `Retry-After` (delay-seconds or HTTP-date, RFC 9110 §10.2.3);
//! * per request, how safe a repeat is ([`Retry`]);
//! * the vendor's request-id header, captured into the error and the span;
//! * one `vendor.call` client span and one [`coverwatch_core::telemetry::vendor_call`] record per
//!   attempt, labelled with the route template, never the raw path.
//!
//! The vendor turns a final failure into its own error type through an [`ErrorParser`].

use std::fmt;
use std::time::{Duration, Instant, SystemTime};

use coverwatch_core::backoff::Backoff;
use coverwatch_core::telemetry::{self, CallOutcome};
use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};
use tracing::Instrument;

pub use bytes::Bytes;
pub use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
pub use reqwest::{Method, StatusCode};

/// Worth sending the same request again: the vendor timed out waiting for it (408), refused
/// an early-data replay (425), is throttling (429), or failed on its side (5xx). Every other
/// status is an answer about the request itself, and repeating it would get the same answer.
///
/// * 408: "the client MAY repeat that request" (RFC 9110 §15.5.9).
/// * 425: the server is "unwilling to risk processing a request that might be replayed"; the
///   client "MAY automatically retry" it (RFC 8470 §5.2).
/// * 429: "too many requests in a given amount of time", possibly with a `Retry-After`
///   (RFC 6585 §4). Axle documents it as its rate-limit answer (docs.axle.insure
///   `/api-reference/overview`); Canopy documents no rate limit (see `crates/canopy`).
/// * 5xx: the server's own failure (RFC 9110 §15.6).
pub fn is_retryable_status(status: u16) -> bool {
    matches!(status, 408 | 425 | 429 | 500..=599)
}

/// Whether a request may be sent again after a retryable failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Repeating it changes nothing (reads, deletes, writes the vendor documents as
    /// idempotent): sent again on any retryable failure.
    Idempotent,
    /// A repeat could do the thing twice (create a second record, bill twice), so it is sent
    /// again only when the first try never left: the connection itself could not be made.
    UnsentOnly,
    /// Never sent twice, not even after a failed connect: the request spends something that a
    /// caller must see fail rather than have repeated behind its back (a single-use code, a
    /// session the vendor opens).
    Never,
}

/// How hard to try, for every call of one executor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// TCP + TLS connect timeout.
    pub connect_timeout: Duration,
    /// Whole-request timeout: connect, send, and read the whole body.
    pub request_timeout: Duration,
    /// Attempts of a repeatable call, the first included (at least 1).
    pub max_attempts: u32,
    /// Delay between attempts.
    pub backoff: Backoff,
    /// The longest `Retry-After` waited for inside one call.
    pub max_retry_after: Duration,
}

/// Who the executor talks to: the vendor's name (the `vendor` label of metrics and spans),
/// headers sent on every request, and the response headers that carry the vendor's request id
/// (the first one present wins).
#[derive(Debug, Clone)]
pub struct Vendor {
    pub name: &'static str,
    pub default_headers: HeaderMap,
    pub request_id_headers: &'static [&'static str],
}

/// One call, as the vendor builds it.
#[derive(Debug, Clone)]
pub struct Request {
    /// The vendor's name for the call, in logs and the span name (`pulls.get`).
    pub operation: &'static str,
    /// The route template: the bounded `endpoint` label of the metrics
    /// (`GET /teams/{teamId}/pulls/{pullId}`), never the raw path, which carries ids.
    pub route: &'static str,
    pub method: Method,
    pub url: url::Url,
    /// Headers of this call only (an access token), added to the vendor's defaults.
    pub headers: HeaderMap,
    pub json: Option<serde_json::Value>,
    pub retry: Retry,
}

impl Request {
    pub fn new(
        operation: &'static str,
        route: &'static str,
        method: Method,
        url: url::Url,
        retry: Retry,
    ) -> Self {
        Self {
            operation,
            route,
            method,
            url,
            headers: HeaderMap::new(),
            json: None,
            retry,
        }
    }

    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.insert(name, value);
        self
    }

    pub fn json(mut self, body: serde_json::Value) -> Self {
        self.json = Some(body);
        self
    }
}

/// A 2xx answer.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: StatusCode,
    pub body: Bytes,
    pub request_id: Option<String>,
    /// Attempts it took, this one included.
    pub attempts: u32,
}

/// Why the executor stopped sending a call that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The failure is not worth repeating (a 4xx other than 408/425/429, a redirect).
    NotRetryable,
    /// Worth repeating, but the request is not safe to send again ([`Retry`]).
    NotResent,
    /// Every attempt of [`Settings::max_attempts`] failed.
    Exhausted,
    /// The vendor asked to wait longer than [`Settings::max_retry_after`].
    RetryAfterTooLong { asked: Duration, max: Duration },
}

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stop::NotRetryable => Ok(()),
            Stop::NotResent => f.write_str(" (not sent again: the request is not safe to repeat)"),
            Stop::Exhausted => f.write_str(" (no attempt left)"),
            Stop::RetryAfterTooLong { asked, max } => write!(
                f,
                " (the vendor asks to wait {} s before trying again, longer than the {} s one \
                 call may wait: try again later)",
                asked.as_secs_f64().ceil(),
                max.as_secs_f64()
            ),
        }
    }
}

/// The vendor answered an error status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorResponse {
    pub vendor: &'static str,
    pub operation: &'static str,
    pub status: u16,
    /// The raw body, for the vendor's error parser.
    pub body: Bytes,
    pub request_id: Option<String>,
    /// What `Retry-After` asked, when the vendor sent one that can be read.
    pub retry_after: Option<Duration>,
    pub attempts: u32,
    pub stop: Stop,
}

impl fmt::Display for ErrorResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} answered HTTP {} to {} after {} attempt{}{}",
            self.vendor,
            self.status,
            self.operation,
            self.attempts,
            if self.attempts == 1 { "" } else { "s" },
            self.stop
        )
    }
}

/// How far a request got when no answer came back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// No connection was made, so the request never left.
    Connect,
    /// No (whole) answer within the request timeout.
    Timeout,
    /// The connection broke (reset, closed early, unreadable body).
    Other,
}

/// No answer: the connection failed, broke, or timed out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportError {
    pub vendor: &'static str,
    pub operation: &'static str,
    pub kind: TransportKind,
    /// The error and its causes, without the URL.
    pub message: String,
    pub attempts: u32,
    pub stop: Stop,
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} after {} attempt{}: {}{}",
            self.operation,
            match self.kind {
                TransportKind::Connect => "could not connect",
                TransportKind::Timeout => "timed out",
                TransportKind::Other => "failed",
            },
            self.attempts,
            if self.attempts == 1 { "" } else { "s" },
            self.message,
            self.stop
        )
    }
}

/// A call that did not get a 2xx answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    #[error("{0}")]
    Status(ErrorResponse),
    #[error("{0}")]
    Transport(TransportError),
}

impl Failure {
    pub fn attempts(&self) -> u32 {
        match self {
            Failure::Status(r) => r.attempts,
            Failure::Transport(t) => t.attempts,
        }
    }

    pub fn stop(&self) -> Stop {
        match self {
            Failure::Status(r) => r.stop,
            Failure::Transport(t) => t.stop,
        }
    }

    fn retryable(&self) -> bool {
        match self {
            Failure::Status(r) => is_retryable_status(r.status),
            Failure::Transport(_) => true,
        }
    }

    fn finish(mut self, attempts: u32, stop: Stop) -> Self {
        match &mut self {
            Failure::Status(r) => {
                r.attempts = attempts;
                r.stop = stop;
            }
            Failure::Transport(t) => {
                t.attempts = attempts;
                t.stop = stop;
            }
        }
        self
    }
}

/// The vendor's hook: its reading of a final failure (error-body codes and messages) as its own
/// error type.
pub trait ErrorParser: Clone + Send + Sync + 'static {
    type Error;
    fn parse(&self, failure: Failure) -> Self::Error;
}

/// Keeps the failure as it is.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawFailure;

impl ErrorParser for RawFailure {
    type Error = Failure;
    fn parse(&self, failure: Failure) -> Failure {
        failure
    }
}

/// The executor cannot be built; `field` names the setting at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot build the {vendor} HTTP client: `{field}` {message}")]
pub struct BuildError {
    pub vendor: &'static str,
    pub field: &'static str,
    pub message: String,
}

#[derive(Clone)]
pub struct Executor<P> {
    http: reqwest::Client,
    vendor: &'static str,
    request_id_headers: &'static [&'static str],
    settings: Settings,
    parser: P,
}

impl<P> fmt::Debug for Executor<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The default headers hold credentials: never shown.
        f.debug_struct("Executor")
            .field("vendor", &self.vendor)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl<P: ErrorParser> Executor<P> {
    pub fn new(vendor: Vendor, settings: Settings, parser: P) -> Result<Self, BuildError> {
        let invalid = |field, message: &str| BuildError {
            vendor: vendor.name,
            field,
            message: message.to_owned(),
        };
        if settings.connect_timeout.is_zero() {
            return Err(invalid("connect_timeout", "must be greater than zero"));
        }
        if settings.request_timeout.is_zero() {
            return Err(invalid("request_timeout", "must be greater than zero"));
        }
        if settings.max_attempts == 0 {
            return Err(invalid("max_attempts", "must be at least 1"));
        }
        if settings.backoff.initial > settings.backoff.max {
            return Err(invalid(
                "backoff",
                "the initial delay must not exceed the maximum",
            ));
        }
        let http = reqwest::Client::builder()
            .default_headers(vendor.default_headers)
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.request_timeout)
            // A redirect would carry the credentials of the default headers (and any per-call
            // token) to wherever it points; no vendor API documents one.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| BuildError {
                vendor: vendor.name,
                field: "http_client",
                message: e.to_string(),
            })?;
        Ok(Self {
            http,
            vendor: vendor.name,
            request_id_headers: vendor.request_id_headers,
            settings,
            parser,
        })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn vendor(&self) -> &'static str {
        self.vendor
    }

    /// Send `request` until it gets a 2xx answer or the retry rule says stop; a failure goes
    /// through the vendor's [`ErrorParser`].
    pub async fn send(&self, request: Request) -> Result<Response, P::Error> {
        self.send_raw(request)
            .await
            .map_err(|f| self.parser.parse(f))
    }

    /// [`Executor::send`] without the vendor's reading of the failure.
    pub async fn send_raw(&self, request: Request) -> Result<Response, Failure> {
        // Serialized once: every attempt sends the same bytes.
        let body = request.json.as_ref().map(|v| Bytes::from(v.to_string()));
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let failure = match self.attempt(&request, body.as_ref(), attempt).await {
                Ok(mut response) => {
                    response.attempts = attempt;
                    return Ok(response);
                }
                Err(failure) => failure,
            };
            let delay = match self.next_delay(request.retry, &failure, attempt) {
                Ok(delay) => delay,
                Err(stop) => {
                    let failure = failure.finish(attempt, stop);
                    if matches!(stop, Stop::Exhausted | Stop::RetryAfterTooLong { .. }) {
                        tracing::warn!(
                            vendor = self.vendor,
                            operation = request.operation,
                            attempt,
                            error = %failure,
                            "giving up on a vendor call"
                        );
                    } else {
                        tracing::debug!(
                            vendor = self.vendor,
                            operation = request.operation,
                            attempt,
                            error = %failure,
                            "vendor call failed"
                        );
                    }
                    return Err(failure);
                }
            };
            tracing::warn!(
                vendor = self.vendor,
                operation = request.operation,
                attempt,
                delay_ms = delay.as_millis() as u64,
                error = %failure,
                "retrying a vendor call"
            );
            tokio::time::sleep(delay).await;
        }
    }

    /// How long to wait before attempt `attempt + 1`, or why there is none.
    fn next_delay(&self, retry: Retry, failure: &Failure, attempt: u32) -> Result<Duration, Stop> {
        if !failure.retryable() {
            return Err(Stop::NotRetryable);
        }
        let may_resend = match retry {
            Retry::Idempotent => true,
            Retry::UnsentOnly => matches!(
                failure,
                Failure::Transport(TransportError {
                    kind: TransportKind::Connect,
                    ..
                })
            ),
            Retry::Never => false,
        };
        if !may_resend {
            return Err(Stop::NotResent);
        }
        if attempt >= self.settings.max_attempts {
            return Err(Stop::Exhausted);
        }
        let backoff = self.settings.backoff.delay(attempt, rand::random::<f64>());
        let asked = match failure {
            Failure::Status(r) => r.retry_after,
            Failure::Transport(_) => None,
        };
        match asked {
            // Given up rather than waited out up to the cap: a retry before the time the
            // vendor named would most likely be refused again (and count against our limit),
            // and a call that sleeps that long holds its caller (a gRPC request, an inbox
            // worker). The call ends as unavailable and the caller's own, slower retry takes
            // over. Both vendor clients did this before they shared this executor.
            Some(asked) if asked > self.settings.max_retry_after => Err(Stop::RetryAfterTooLong {
                asked,
                max: self.settings.max_retry_after,
            }),
            // Retry-After is the earliest time to try again, so never sooner; the backoff stays
            // a floor so that `Retry-After: 0` does not make the retries a tight loop.
            Some(asked) => Ok(backoff.max(asked)),
            None => Ok(backoff),
        }
    }

    /// One HTTP exchange, as a client span (a child of whatever span the caller runs in: a
    /// gRPC call or a delivery being processed) naming the vendor's request id, which is what
    /// vendor support asks for.
    async fn attempt(
        &self,
        request: &Request,
        body: Option<&Bytes>,
        attempt: u32,
    ) -> Result<Response, Failure> {
        let span = tracing::info_span!(
            "vendor.call",
            otel.name = %format_args!("{} {}", self.vendor, request.operation),
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            vendor = self.vendor,
            operation = request.operation,
            attempt,
            http.request.method = %request.method,
            http.response.status_code = tracing::field::Empty,
            vendor.request_id = tracing::field::Empty,
        );
        let answer = self
            .exchange(request, body, attempt)
            .instrument(span.clone())
            .await;
        if answer.is_err() {
            span.record("otel.status_code", "ERROR");
        }
        answer
    }

    async fn exchange(
        &self,
        request: &Request,
        body: Option<&Bytes>,
        attempt: u32,
    ) -> Result<Response, Failure> {
        let mut builder = self
            .http
            .request(request.method.clone(), request.url.clone())
            .headers(request.headers.clone());
        if let Some(body) = body {
            builder = builder
                .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                .body(body.clone());
        }
        let started = Instant::now();
        let response = match builder.send().await {
            Ok(response) => response,
            Err(e) => {
                self.record(request, CallOutcome::Transport, started);
                return Err(self.transport(request, e, attempt));
            }
        };
        let status = response.status();
        let request_id = self
            .request_id_headers
            .iter()
            .find_map(|name| response.headers().get(*name))
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let span = tracing::Span::current();
        span.record("http.response.status_code", status.as_u16());
        if let Some(id) = &request_id {
            span.record("vendor.request_id", id.as_str());
        }
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let bytes = match response.bytes().await {
            Ok(bytes) => bytes,
            Err(e) => {
                self.record(request, CallOutcome::Transport, started);
                return Err(self.transport(request, e, attempt));
            }
        };
        self.record(request, CallOutcome::Status(status.as_u16()), started);
        tracing::debug!(
            vendor = self.vendor,
            operation = request.operation,
            status = status.as_u16(),
            request_id = request_id.as_deref().unwrap_or(""),
            "vendor answered"
        );
        if status.is_success() {
            return Ok(Response {
                status,
                body: bytes,
                request_id,
                attempts: attempt,
            });
        }
        Err(Failure::Status(ErrorResponse {
            vendor: self.vendor,
            operation: request.operation,
            status: status.as_u16(),
            body: bytes,
            request_id,
            retry_after,
            attempts: attempt,
            stop: Stop::NotRetryable,
        }))
    }

    fn record(&self, request: &Request, outcome: CallOutcome, started: Instant) {
        telemetry::vendor_call(self.vendor, request.route, outcome, started.elapsed());
    }

    fn transport(&self, request: &Request, err: reqwest::Error, attempt: u32) -> Failure {
        // A failed connect never sent the request; checked first because a connect that timed
        // out is both.
        let kind = if err.is_connect() {
            TransportKind::Connect
        } else if err.is_timeout() {
            TransportKind::Timeout
        } else {
            TransportKind::Other
        };
        // The URL holds only ids, but there is no reason to repeat it in every log line.
        let err = err.without_url();
        let mut message = err.to_string();
        let mut source = std::error::Error::source(&err);
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        Failure::Transport(TransportError {
            vendor: self.vendor,
            operation: request.operation,
            kind,
            message,
            attempts: attempt,
            stop: Stop::NotRetryable,
        })
    }
}

/// `Retry-After` (RFC 9110 §10.2.3): `delay-seconds` or an `HTTP-date`, as the time to wait
/// from `now`. A date in the past means "now". Anything else is not a `Retry-After` and is
/// ignored (the backoff applies). Seconds too large to count are kept as the longest wait, so
/// that they are over any cap rather than ignored.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return Some(
            value
                .parse::<u64>()
                .map(Duration::from_secs)
                .unwrap_or(Duration::MAX),
        );
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_every_http_date_format() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            Some(Duration::MAX)
        );
        // The three date formats RFC 9110 §5.6.7 requires a recipient to accept.
        for date in [
            "Sun, 06 Nov 1994 08:50:07 GMT",
            "Sunday, 06-Nov-94 08:50:07 GMT",
            "Sun Nov  6 08:50:07 1994",
        ] {
            assert_eq!(
                parse_retry_after(date, now),
                Some(Duration::from_secs(30)),
                "{date}"
            );
        }
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO),
            "a date already past"
        );
        for junk in ["", "-1", "1.5", "soon", "Sun, 06 Nov 1994"] {
            assert_eq!(parse_retry_after(junk, now), None, "{junk:?}");
        }
    }

    #[test]
    fn the_retryable_statuses() {
        for status in [408, 425, 429, 500, 502, 503, 504, 599] {
            assert!(is_retryable_status(status), "{status}");
        }
        for status in [200, 301, 400, 401, 403, 404, 409, 410, 422, 600] {
            assert!(!is_retryable_status(status), "{status}");
        }
    }
}
