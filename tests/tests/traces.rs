//! Traces and request ids end to end (issue 15): the real server exports its spans over OTLP to
//! an in-process collector (a test double of the OTLP/gRPC trace service), and a gRPC caller's
//! trace is followed from its call to the webhook the vendor sends because of it and to the
//! processing of that delivery.
//!
//! This is a test binary of its own because it installs the process-wide log subscriber with
//! an OpenTelemetry layer, once: no other test binary sees it. The collector and the exporter's
//! channel live on a runtime of their own that outlasts each test's runtime; the tests here
//! share them and tell their spans apart by trace id.

use std::sync::{Arc, Mutex, OnceLock};

use coverwatch::telemetry::Telemetry;
use coverwatch_tests::flows::{Browser, DEADLINE, Page, wait_for_event};
use coverwatch_tests::{TENANT_A, TestServer, eventually, test_config, v1};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;

/// Every span the collector received.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Span>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            for scope in resource.scope_spans {
                spans.extend(scope.spans);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

struct Harness {
    collector: Collector,
    telemetry: Telemetry,
    _runtime: tokio::runtime::Runtime,
}

/// The collector and the installed subscriber, started once for the whole binary.
fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        // Its own thread: a runtime cannot be started from inside a test's runtime.
        std::thread::spawn(|| {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            let collector = Collector::default();
            let served = collector.clone();
            let telemetry = runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let addr = listener.local_addr().unwrap();
                tokio::spawn(
                    tonic::transport::Server::builder()
                        .add_service(TraceServiceServer::new(served))
                        .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
                );
                let config = coverwatch::Config {
                    otlp_endpoint: Some(format!("http://{addr}")),
                    otlp_service_name: "coverwatch-under-test".into(),
                    ..coverwatch::Config::default()
                }
                .validated()
                .expect("a valid tracing configuration");
                coverwatch::telemetry::init(&config).expect("the subscriber installs")
            });
            Harness {
                collector,
                telemetry,
                _runtime: runtime,
            }
        })
        .join()
        .expect("the collector starts")
    })
}

impl Harness {
    /// Export what has finished, then return the spans of `trace_id` received so far.
    async fn spans_of(&'static self, trace_id: &[u8]) -> Vec<Span> {
        tokio::task::spawn_blocking(move || self.telemetry.flush())
            .await
            .unwrap()
            .expect("the collector accepts spans");
        self.collector
            .spans
            .lock()
            .unwrap()
            .iter()
            .filter(|span| span.trace_id == trace_id)
            .cloned()
            .collect()
    }
}

fn attribute<'a>(span: &'a Span, key: &str) -> Option<&'a str> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| match &v.value {
            Some(Value::StringValue(s)) => Some(s.as_str()),
            _ => None,
        })
}

/// `bytes` random bytes in lowercase hex (at most 16).
fn random_hex(bytes: usize) -> String {
    let hex = uuid::Uuid::new_v4().simple().to_string();
    hex.chars().take(2 * bytes).collect()
}

/// Whether every delivery ingested in `spans` was processed (a `done` processing span that is
/// the ingest span's child) and a processing span made a vendor call.
fn all_processed(spans: &[Span]) -> bool {
    let ingests: Vec<&Span> = spans
        .iter()
        .filter(|s| s.name == "webhook.ingest")
        .collect();
    !ingests.is_empty()
        && ingests
            .iter()
            .all(|ingest| processing_of(spans, ingest).is_some())
        && !vendor_calls_under_processing(spans).is_empty()
}

fn processing_of<'a>(spans: &'a [Span], ingest: &Span) -> Option<&'a Span> {
    let delivery = attribute(ingest, "delivery_id")?;
    spans.iter().find(|s| {
        s.name == "delivery.process"
            && attribute(s, "delivery_id") == Some(delivery)
            && attribute(s, "outcome") == Some("done")
    })
}

fn vendor_calls_under_processing(spans: &[Span]) -> Vec<&Span> {
    spans
        .iter()
        .filter(|s| s.name.starts_with("axle "))
        .filter(|v| {
            spans
                .iter()
                .any(|p| p.name == "delivery.process" && p.span_id == v.parent_span_id)
        })
        .collect()
}

async fn sign_in(browser: &Browser, session_url: &str) -> Page {
    let landing = browser.get(session_url).await;
    assert_eq!(landing.status, 200, "{}", landing.html);
    let login = browser
        .submit(&landing, "carrier-form", &[("carrier", "state-farm")])
        .await;
    assert_eq!(login.status, 200, "{}", login.html);
    browser
        .submit(
            &login,
            "login-form",
            &[("username", "username"), ("password", "password")],
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callers_trace_reaches_the_ingest_and_processing_of_the_delivery_it_caused() {
    let harness = harness();
    let server = TestServer::start(test_config().await, None).await;
    let client = server.client(TENANT_A).await;

    // The caller's own span, as its tracing library would send it.
    let trace_id = random_hex(16);
    let caller_span = random_hex(8);
    let traceparent = format!("00-{trace_id}-{caller_span}-01");
    let mut request = tonic::Request::new(v1::StartLinkRequest {
        provider: v1::Provider::Axle as i32,
        user_id: "user-traced".into(),
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert("traceparent", traceparent.parse().unwrap());
    let started = client
        .clone()
        .start_link(request)
        .await
        .expect("StartLink")
        .into_inner();
    let link_id = started.link.unwrap().id;

    // The end user signs in; Axle's webhooks arrive as requests of their own, with no trace
    // context, and are processed later by the worker.
    let done = sign_in(&Browser::new(), &started.session_url).await;
    assert_eq!(done.element_text("status").as_deref(), Some("complete"));
    wait_for_event(&client, &link_id, v1::EventKind::LinkCompleted).await;

    let trace = hex_bytes(&trace_id);
    let spans = eventually(
        "the delivery's spans in the caller's trace",
        DEADLINE,
        || {
            let trace = trace.clone();
            async move {
                let spans = harness.spans_of(&trace).await;
                all_processed(&spans).then_some(spans)
            }
        },
    )
    .await;

    // The gRPC call's span continues the caller's span.
    let call = spans
        .iter()
        .find(|s| s.name == "coverwatch.v1.MonitoringService/StartLink")
        .expect("a span for the StartLink call");
    assert_eq!(call.parent_span_id, hex_bytes(&caller_span));
    assert_eq!(attribute(call, "rpc.system"), Some("grpc"));
    assert!(attribute(call, "request_id").is_some_and(|id| !id.is_empty()));

    // Each delivery of the link was ingested in the caller's trace, and processed as a child
    // of its ingest span.
    let ingests: Vec<&Span> = spans
        .iter()
        .filter(|s| s.name == "webhook.ingest")
        .collect();
    assert!(!ingests.is_empty(), "no ingest span in the caller's trace");
    for ingest in &ingests {
        assert_eq!(attribute(ingest, "link_id"), Some(link_id.as_str()));
        assert_eq!(attribute(ingest, "provider"), Some("axle"));
        let process = processing_of(&spans, ingest).expect("its processing span");
        assert_eq!(process.parent_span_id, ingest.span_id);
        assert_eq!(attribute(process, "link_id"), Some(link_id.as_str()));
    }

    // Vendor calls made while processing are child spans naming Axle's request id.
    for call in vendor_calls_under_processing(&spans) {
        let request_id = attribute(call, "vendor.request_id").expect("x-axle-request-id");
        assert!(request_id.starts_with("req_"), "{request_id}");
    }
    server.stop().await;
}

fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

#[tokio::test]
async fn every_grpc_answer_carries_a_request_id() {
    harness();
    let server = TestServer::start(test_config().await, None).await;
    let client = server.client(TENANT_A).await;
    let is_uuid = |value: Option<&tonic::metadata::MetadataValue<tonic::metadata::Ascii>>| {
        value
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| uuid::Uuid::parse_str(v).is_ok())
    };

    // Success, no id given: a fresh one.
    let answer = client
        .clone()
        .list_links(v1::ListLinksRequest::default())
        .await
        .expect("ListLinks");
    assert!(is_uuid(answer.metadata().get("x-request-id")), "{answer:?}");

    // An error answer carries one too.
    let unauthenticated = server
        .client_with_key(None)
        .await
        .list_links(v1::ListLinksRequest::default())
        .await
        .expect_err("no key");
    assert_eq!(unauthenticated.code(), tonic::Code::Unauthenticated);
    assert!(is_uuid(unauthenticated.metadata().get("x-request-id")));
    let invalid = client
        .clone()
        .get_link(v1::GetLinkRequest {
            link_id: "not-a-link-id".into(),
        })
        .await
        .expect_err("a malformed link id");
    assert_eq!(invalid.code(), tonic::Code::InvalidArgument);
    assert!(is_uuid(invalid.metadata().get("x-request-id")));

    // The caller's own id is echoed, on success and on error.
    let with_id = |id: &str| {
        let mut request = tonic::Request::new(v1::ListLinksRequest::default());
        request
            .metadata_mut()
            .insert("x-request-id", id.parse().unwrap());
        request
    };
    let answer = client
        .clone()
        .list_links(with_id("caller-42"))
        .await
        .unwrap();
    assert_eq!(answer.metadata().get("x-request-id").unwrap(), "caller-42");
    let refused = server
        .client_with_key(None)
        .await
        .list_links(with_id("caller-43"))
        .await
        .unwrap_err();
    assert_eq!(refused.metadata().get("x-request-id").unwrap(), "caller-43");

    // One we cannot echo (too long, or not printable) is replaced, not refused.
    let answer = client
        .clone()
        .list_links(with_id(&"x".repeat(129)))
        .await
        .expect("served anyway");
    assert!(is_uuid(answer.metadata().get("x-request-id")));
    let answer = client
        .clone()
        .list_links(with_id("two words"))
        .await
        .expect("served anyway");
    assert!(is_uuid(answer.metadata().get("x-request-id")));
    server.stop().await;
}

#[tokio::test]
async fn every_webhook_answer_carries_a_request_id() {
    harness();
    let server = TestServer::start(test_config().await, None).await;
    let post = |path: &str, id: Option<&str>| {
        let mut request = server
            .http
            .post(server.http_url(path))
            .header("content-type", "application/json")
            .body("{}");
        if let Some(id) = id {
            request = request.header("x-request-id", id);
        }
        request.send()
    };
    let id_of = |response: &reqwest::Response| {
        response
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };

    // A refusal (a path token we never issued) and an unknown provider.
    let refused = post("/webhooks/axle/not-a-token", None).await.unwrap();
    assert_eq!(refused.status(), 401);
    let id = id_of(&refused).expect("x-request-id on a 401");
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
    let unknown = post("/webhooks/nobody", Some("vendor-req-7"))
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    assert_eq!(id_of(&unknown).as_deref(), Some("vendor-req-7"));

    // Too large: refused before the handler, still with an id.
    let large = server
        .http
        .post(server.http_url("/webhooks/canopy"))
        .header("x-request-id", "big-1")
        .body(vec![b' '; coverwatch_engine::MAX_WEBHOOK_BYTES + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(large.status(), 413);
    assert_eq!(id_of(&large).as_deref(), Some("big-1"));

    let health = server
        .http
        .get(server.http_url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert!(id_of(&health).is_some());
    server.stop().await;
}
