//! The shared vendor executor against local servers (an axum app answering from a script, and
//! raw TCP listeners that reset or refuse): which failures are sent again and how often, how
//! long it waits, what it captures, and what it never does (follow a redirect, resend an unsafe
//! request). No vendor host is called.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap as AxumHeaders;
use coverwatch_core::backoff::Backoff;
use coverwatch_vendor_http::{
    BuildError, Executor, Failure, HeaderMap, HeaderName, HeaderValue, Method, RawFailure, Request,
    Retry, Settings, Stop, TransportKind, Vendor,
};
use serde_json::json;
use tokio::io::AsyncReadExt;

/// One scripted answer of the test server.
#[derive(Clone)]
enum Reply {
    Answer {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: String,
    },
    /// Never answers: the client's timeout has to end the call.
    Hang,
}

fn status(code: u16) -> Reply {
    Reply::Answer {
        status: code,
        headers: vec![],
        body: format!("{{\"error\":\"E{code}\"}}"),
    }
}

fn with_header(code: u16, name: &'static str, value: impl Into<String>) -> Reply {
    Reply::Answer {
        status: code,
        headers: vec![(name, value.into())],
        body: String::new(),
    }
}

/// What the server saw of one request.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    headers: AxumHeaders,
    body: Vec<u8>,
}

#[derive(Clone, Default)]
struct Script {
    replies: Arc<Mutex<VecDeque<Reply>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

struct Server {
    url: String,
    script: Script,
}

impl Server {
    fn hits(&self) -> usize {
        self.script.seen.lock().unwrap().len()
    }

    fn seen(&self) -> Vec<Seen> {
        self.script.seen.lock().unwrap().clone()
    }

    fn url(&self, path: &str) -> url::Url {
        url::Url::parse(&format!("{}{path}", self.url)).unwrap()
    }
}

/// An HTTP server that answers each request with the next reply of `replies` (200 `{}` once
/// they run out) and records what it was sent.
async fn start(replies: Vec<Reply>) -> Server {
    let script = Script {
        replies: Arc::new(Mutex::new(replies.into())),
        seen: Arc::default(),
    };
    let app = axum::Router::new()
        .fallback(answer)
        .with_state(script.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Server { url, script }
}

async fn answer(
    State(script): State<Script>,
    request: axum::extract::Request,
) -> axum::response::Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    script.seen.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        path: parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_default(),
        headers: parts.headers,
        body: body.to_vec(),
    });
    let reply = script.replies.lock().unwrap().pop_front();
    match reply.unwrap_or_else(|| Reply::Answer {
        status: 200,
        headers: vec![],
        body: "{}".into(),
    }) {
        Reply::Answer {
            status,
            headers,
            body,
        } => {
            let mut response = axum::response::Response::builder().status(status);
            for (name, value) in headers {
                response = response.header(name, value);
            }
            response.body(Body::from(body)).unwrap()
        }
        Reply::Hang => std::future::pending().await,
    }
}

/// A listener that reads each request and resets the connection without answering: the
/// request left, and no answer came.
async fn resetting_server() -> (SocketAddr, Arc<AtomicU32>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicU32::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let mut head = Vec::new();
            let mut chunk = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&chunk[..n]),
                }
            }
            // A zero linger makes the close an RST, as a crashing peer or a middlebox would.
            let _ = stream.set_zero_linger();
            drop(stream);
        }
    });
    (addr, accepted)
}

/// An address nothing listens on: connecting is refused, so no request ever leaves.
fn refused_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

const SECRET_HEADER: &str = "x-test-secret";
const SECRET: &str = "s3cret-do-not-leak";

fn settings() -> Settings {
    Settings {
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(5),
        max_attempts: 3,
        // Milliseconds, so that retries without Retry-After cost the tests nothing.
        backoff: Backoff::new(Duration::from_millis(2), Duration::from_millis(10)),
        max_retry_after: Duration::from_secs(5),
    }
}

fn executor_named(name: &'static str, settings: Settings) -> Executor<RawFailure> {
    let mut headers = HeaderMap::new();
    let mut secret = HeaderValue::from_static(SECRET);
    secret.set_sensitive(true);
    headers.insert(HeaderName::from_static(SECRET_HEADER), secret);
    Executor::new(
        Vendor {
            name,
            default_headers: headers,
            request_id_headers: &["x-vendor-request-id", "x-request-id"],
        },
        settings,
        RawFailure,
    )
    .unwrap()
}

fn executor(settings: Settings) -> Executor<RawFailure> {
    executor_named("testvendor", settings)
}

fn get(url: url::Url, retry: Retry) -> Request {
    Request::new("things.get", "GET /things/{id}", Method::GET, url, retry)
}

fn status_failure(failure: Failure) -> coverwatch_vendor_http::ErrorResponse {
    match failure {
        Failure::Status(answer) => answer,
        other => panic!("expected an error status, got {other:?}"),
    }
}

fn transport_failure(failure: Failure) -> coverwatch_vendor_http::TransportError {
    match failure {
        Failure::Transport(err) => err,
        other => panic!("expected a transport failure, got {other:?}"),
    }
}

#[tokio::test]
async fn every_retryable_status_is_sent_again_until_it_succeeds() {
    let http = executor(settings());
    for code in [408, 425, 429, 500, 502, 503, 504] {
        let server = start(vec![status(code)]).await;
        let answer = http
            .send(get(server.url("/things/1"), Retry::Idempotent))
            .await
            .unwrap_or_else(|e| panic!("{code}: {e}"));
        assert_eq!(answer.status.as_u16(), 200, "{code}");
        assert_eq!(answer.attempts, 2, "{code}");
        assert_eq!(server.hits(), 2, "{code}");
    }
}

#[tokio::test]
async fn answers_about_the_request_itself_are_not_sent_again() {
    let http = executor(settings());
    for code in [400, 401, 403, 404, 409, 422] {
        let server = start(vec![status(code)]).await;
        let answer = status_failure(
            http.send(get(server.url("/things/1"), Retry::Idempotent))
                .await
                .unwrap_err(),
        );
        assert_eq!(answer.status, code);
        assert_eq!(answer.stop, Stop::NotRetryable, "{code}");
        assert_eq!(answer.attempts, 1, "{code}");
        assert_eq!(server.hits(), 1, "{code}");
        // The body is handed to the vendor's parser untouched.
        assert_eq!(
            &answer.body[..],
            format!("{{\"error\":\"E{code}\"}}").as_bytes()
        );
    }
}

#[tokio::test]
async fn attempts_are_counted_first_included_and_then_it_gives_up() {
    let server = start(vec![status(503); 10]).await;
    let failure = executor(settings())
        .send(get(server.url("/things/1"), Retry::Idempotent))
        .await
        .unwrap_err();
    assert_eq!(failure.attempts(), 3);
    assert_eq!(failure.stop(), Stop::Exhausted);
    assert_eq!(server.hits(), 3, "max_attempts = 3, the first included");
    assert_eq!(
        failure.to_string(),
        "testvendor answered HTTP 503 to things.get after 3 attempts (no attempt left)"
    );
}

#[tokio::test]
async fn retry_after_in_seconds_is_waited_for() {
    let server = start(vec![with_header(429, "retry-after", "1")]).await;
    let started = Instant::now();
    let answer = executor(settings())
        .send(get(server.url("/things/1"), Retry::Idempotent))
        .await
        .unwrap();
    let waited = started.elapsed();
    assert_eq!(answer.attempts, 2);
    assert!(waited >= Duration::from_secs(1), "waited {waited:?}");
    // The backoff (at most 10 ms here) is a floor, not added on top.
    assert!(waited < Duration::from_secs(3), "waited {waited:?}");
}

#[tokio::test]
async fn retry_after_as_an_http_date_is_waited_for() {
    // An HTTP-date has whole seconds: three seconds ahead is at least two once truncated.
    let at = SystemTime::now() + Duration::from_secs(3);
    let server = start(vec![with_header(
        503,
        "retry-after",
        httpdate::fmt_http_date(at),
    )])
    .await;
    let started = Instant::now();
    let answer = executor(settings())
        .send(get(server.url("/things/1"), Retry::Idempotent))
        .await
        .unwrap();
    let waited = started.elapsed();
    assert_eq!(answer.attempts, 2);
    assert!(waited >= Duration::from_millis(1_500), "waited {waited:?}");
    assert!(waited < Duration::from_secs(5), "waited {waited:?}");
}

#[tokio::test]
async fn a_retry_after_over_the_cap_ends_the_call_at_once_and_says_why() {
    let far = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(3_600));
    for value in ["60".to_owned(), far] {
        let server = start(vec![with_header(429, "retry-after", value.clone())]).await;
        let started = Instant::now();
        let failure = executor(settings())
            .send(get(server.url("/things/1"), Retry::Idempotent))
            .await
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(2), "{value}");
        assert_eq!(server.hits(), 1, "{value}: not sent again");
        let shown = failure.to_string();
        let answer = status_failure(failure);
        assert_eq!(answer.status, 429);
        let Stop::RetryAfterTooLong { asked, max } = answer.stop else {
            panic!("{value}: {:?}", answer.stop)
        };
        assert!(asked > Duration::from_secs(5), "{value}: {asked:?}");
        assert_eq!(max, Duration::from_secs(5));
        assert!(shown.contains("asks to wait"), "{shown}");
        assert!(
            shown.contains("longer than the 5 s one call may wait"),
            "{shown}"
        );
    }
}

#[tokio::test]
async fn requests_not_safe_to_repeat_are_sent_once_on_a_503() {
    let http = executor(settings());
    for retry in [Retry::Never, Retry::UnsentOnly] {
        let server = start(vec![status(503)]).await;
        let request = get(server.url("/ignition"), retry);
        let failure = http.send(request).await.unwrap_err();
        assert_eq!(failure.stop(), Stop::NotResent, "{retry:?}");
        assert_eq!(server.hits(), 1, "{retry:?}");
    }
}

#[tokio::test]
async fn a_reset_connection_is_sent_again_only_when_repeating_is_safe() {
    let (addr, accepted) = resetting_server().await;
    let url = url::Url::parse(&format!("http://{addr}/token/exchange")).unwrap();
    let http = executor(settings());

    for retry in [Retry::Never, Retry::UnsentOnly] {
        accepted.store(0, Ordering::SeqCst);
        let err = transport_failure(http.send(get(url.clone(), retry)).await.unwrap_err());
        assert_eq!(err.stop, Stop::NotResent, "{retry:?}");
        assert_ne!(
            err.kind,
            TransportKind::Connect,
            "{retry:?}: the request left"
        );
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "{retry:?}: sent exactly once"
        );
    }

    accepted.store(0, Ordering::SeqCst);
    let err = transport_failure(
        http.send(get(url.clone(), Retry::Idempotent))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.stop, Stop::Exhausted);
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_refused_connection_is_sent_again_unless_the_request_is_never_resent() {
    let url = url::Url::parse(&format!("http://{}/monitorings", refused_addr())).unwrap();
    let http = executor(settings());
    for (retry, attempts, stop) in [
        (Retry::UnsentOnly, 3, Stop::Exhausted),
        (Retry::Idempotent, 3, Stop::Exhausted),
        (Retry::Never, 1, Stop::NotResent),
    ] {
        let err = transport_failure(http.send(get(url.clone(), retry)).await.unwrap_err());
        assert_eq!(err.kind, TransportKind::Connect, "{retry:?}");
        assert_eq!(err.attempts, attempts, "{retry:?}");
        assert_eq!(err.stop, stop, "{retry:?}");
    }
}

#[tokio::test]
async fn a_hanging_answer_times_out_and_a_read_is_tried_again() {
    let server = start(vec![Reply::Hang, Reply::Hang, Reply::Hang]).await;
    let http = executor(Settings {
        request_timeout: Duration::from_millis(200),
        max_attempts: 2,
        ..settings()
    });
    let started = Instant::now();
    let err = transport_failure(
        http.send(get(server.url("/things/1"), Retry::Idempotent))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.kind, TransportKind::Timeout);
    assert_eq!(err.attempts, 2);
    assert_eq!(server.hits(), 2);
    assert!(started.elapsed() >= Duration::from_millis(400));

    // One hang, then an answer: the retry succeeds.
    let once = start(vec![Reply::Hang]).await;
    let answer = http
        .send(get(once.url("/things/1"), Retry::Idempotent))
        .await
        .unwrap();
    assert_eq!(answer.attempts, 2);
}

#[tokio::test]
async fn the_vendor_request_id_is_captured() {
    let server = start(vec![
        with_header(404, "x-vendor-request-id", "req_404"),
        with_header(200, "x-request-id", "req_ok"),
    ])
    .await;
    let http = executor(settings());
    let answer = status_failure(
        http.send(get(server.url("/things/1"), Retry::Idempotent))
            .await
            .unwrap_err(),
    );
    assert_eq!(answer.request_id.as_deref(), Some("req_404"));
    // The second name of the vendor's list is read when the first is absent.
    let ok = http
        .send(get(server.url("/things/1"), Retry::Idempotent))
        .await
        .unwrap();
    assert_eq!(ok.request_id.as_deref(), Some("req_ok"));
}

#[tokio::test]
async fn a_redirect_is_not_followed_and_the_credentials_stay_home() {
    let elsewhere = start(vec![]).await;
    let server = start(vec![with_header(
        302,
        "location",
        format!("{}/collect", elsewhere.url),
    )])
    .await;
    let answer = status_failure(
        executor(settings())
            .send(get(server.url("/things/1"), Retry::Idempotent))
            .await
            .unwrap_err(),
    );
    assert_eq!(answer.status, 302);
    assert_eq!(answer.stop, Stop::NotRetryable);
    assert_eq!(elsewhere.hits(), 0, "nothing reached the redirect's target");
    assert_eq!(
        server.seen()[0].headers[SECRET_HEADER],
        SECRET,
        "the vendor itself did get its credentials"
    );
}

#[tokio::test]
async fn headers_and_the_json_body_are_sent_alike_on_every_attempt() {
    let server = start(vec![status(500)]).await;
    let body = json!({"pull_id": "p-1", "interval": "P1M"});
    let request = Request::new(
        "monitorings.delete",
        "DELETE /monitorings/{id}",
        Method::DELETE,
        server.url("/monitorings/m-1?force=1"),
        Retry::Idempotent,
    )
    .header(
        HeaderName::from_static("x-access-token"),
        HeaderValue::from_static("tok"),
    )
    .json(body.clone());
    executor(settings()).send(request).await.unwrap();
    let seen = server.seen();
    assert_eq!(seen.len(), 2);
    for s in &seen {
        assert_eq!(s.method, "DELETE");
        assert_eq!(s.path, "/monitorings/m-1?force=1");
        assert_eq!(s.headers[SECRET_HEADER], SECRET);
        assert_eq!(s.headers["x-access-token"], "tok");
        assert_eq!(s.headers["content-type"], "application/json");
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&s.body).unwrap(),
            body
        );
    }
}

/// The recorder of this test binary: the `metrics` facade takes one per process.
fn prometheus() -> &'static metrics_exporter_prometheus::PrometheusHandle {
    static HANDLE: OnceLock<metrics_exporter_prometheus::PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .install_recorder()
            .unwrap()
    })
}

#[tokio::test]
async fn every_attempt_is_counted_under_the_route_template() {
    let handle = prometheus();
    // A vendor name of its own, as other tests of this binary record too.
    let http = executor_named("metricsvendor", settings());
    let server = start(vec![status(503), status(503)]).await;
    http.send(get(server.url("/things/id-123"), Retry::Idempotent))
        .await
        .unwrap();
    let text = handle.render();
    let count = |status: &str| -> Option<f64> {
        text.lines()
            .filter(|l| l.starts_with("coverwatch_vendor_requests_total{"))
            .filter(|l| l.contains("vendor=\"metricsvendor\""))
            .filter(|l| l.contains("endpoint=\"GET /things/{id}\""))
            .find(|l| l.contains(&format!("status=\"{status}\"")))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    };
    assert_eq!(count("503"), Some(2.0), "{text}");
    assert_eq!(count("200"), Some(1.0), "{text}");
    assert!(!text.contains("id-123"), "no raw path in a label");
    assert!(
        text.contains("coverwatch_vendor_request_duration_seconds"),
        "{text}"
    );
    // The status page's list of failed calls has both 503s.
    let recent = coverwatch_core::telemetry::recent_vendor_errors();
    assert_eq!(
        recent
            .iter()
            .filter(|e| e.vendor == "metricsvendor" && e.status == Some(503))
            .count(),
        2
    );
}

#[test]
fn settings_that_cannot_work_are_refused_by_name() {
    let build = |settings: Settings| -> Result<Executor<RawFailure>, BuildError> {
        Executor::new(
            Vendor {
                name: "testvendor",
                default_headers: HeaderMap::new(),
                request_id_headers: &[],
            },
            settings,
            RawFailure,
        )
    };
    for (field, bad) in [
        (
            "connect_timeout",
            Settings {
                connect_timeout: Duration::ZERO,
                ..settings()
            },
        ),
        (
            "request_timeout",
            Settings {
                request_timeout: Duration::ZERO,
                ..settings()
            },
        ),
        (
            "max_attempts",
            Settings {
                max_attempts: 0,
                ..settings()
            },
        ),
        (
            "backoff",
            Settings {
                backoff: Backoff::new(Duration::from_secs(2), Duration::from_secs(1)),
                ..settings()
            },
        ),
    ] {
        let err = build(bad).unwrap_err();
        assert_eq!(err.field, field);
        assert!(err.to_string().contains(field), "{err}");
    }
    // The executor's Debug shows no default header.
    let shown = format!("{:?}", executor(settings()));
    assert!(!shown.contains(SECRET), "{shown}");
}
