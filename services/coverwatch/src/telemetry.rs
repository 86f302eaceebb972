//! Logs, traces and request ids.
//!
//! Log lines go to stdout (text or JSON). When `otlp_endpoint` is set, spans are also exported
//! over OTLP/gRPC, and every log line written inside a traced span names its trace (`trace_id`,
//! a field of the request or delivery span). Spans: one per gRPC call (continuing the caller's
//! W3C `traceparent`), one per webhook ingest, one per delivery processed, one per vendor HTTP
//! call; how a delivery's spans join the trace of the gRPC call that caused it is told in
//! `coverwatch_engine::trace`.
//!
//! Every gRPC and webhook answer carries `x-request-id`: the caller's own when it sent a usable
//! one, else a fresh UUID.

use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use http::HeaderValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Instrument;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{Config, LogFormat};

/// The header carrying a request id, both ways.
pub const REQUEST_ID: &str = "x-request-id";

/// Longest caller-supplied request id we echo; a longer one is replaced by our own.
const MAX_REQUEST_ID_LEN: usize = 128;

/// How long one export to the collector may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// The installed logging and tracing. Dropping it does not flush: call [`Telemetry::shutdown`].
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Export every finished span now. Blocks until the collector answered (or the export timed
    /// out); call it from a blocking context.
    pub fn flush(&self) -> anyhow::Result<()> {
        if let Some(provider) = &self.provider {
            provider
                .force_flush()
                .map_err(|e| anyhow::anyhow!("cannot export spans: {e}"))?;
        }
        Ok(())
    }

    /// Export what is left and stop the exporter. Blocks like [`Telemetry::flush`].
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(e) = provider.shutdown()
        {
            tracing::warn!(error = %e, "spans may have been lost at shutdown");
        }
    }
}

/// Install the process-wide subscriber: log lines filtered by `RUST_LOG` (default `info`) and,
/// when `otlp_endpoint` is set, an OpenTelemetry layer exporting spans at `info` and above,
/// whatever `RUST_LOG` says (quieting logs must not cut traces). Must run inside a Tokio
/// runtime when exporting (the gRPC channel to the collector lives on it). Fails when a
/// subscriber is already installed.
pub fn init(config: &Config) -> anyhow::Result<Telemetry> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = match config.log_format {
        LogFormat::Json => tracing_subscriber::fmt::layer().json().boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer().boxed(),
    }
    .with_filter(filter);
    let provider = config
        .otlp_endpoint
        .as_deref()
        .map(|endpoint| tracer_provider(endpoint, &config.otlp_service_name))
        .transpose()?;
    let otel = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("coverwatch"))
            .with_filter(LevelFilter::INFO)
    });
    tracing_subscriber::registry()
        .with(otel)
        .with(fmt)
        .try_init()
        .context("cannot install the log subscriber")?;
    Ok(Telemetry { provider })
}

fn tracer_provider(endpoint: &str, service_name: &str) -> anyhow::Result<SdkTracerProvider> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .with_context(|| format!("otlp_endpoint {endpoint:?}: cannot build the exporter"))?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name(service_name.to_owned())
                .build(),
        )
        .build())
}

/// A caller's request id, if it is one we can echo: 1 to 128 visible ASCII characters (it goes
/// back in a header and into logs, so no control characters, spaces or non-ASCII).
pub fn usable_request_id(value: &HeaderValue) -> Option<&str> {
    let text = value.to_str().ok()?;
    (!text.is_empty()
        && text.len() <= MAX_REQUEST_ID_LEN
        && text.bytes().all(|b| b.is_ascii_graphic()))
    .then_some(text)
}

/// The request id of a request: the caller's when usable, else a new one.
pub fn request_id(headers: &http::HeaderMap) -> String {
    headers
        .get(REQUEST_ID)
        .and_then(usable_request_id)
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned)
}

/// The request id the webhook listener gave a request, for its handlers.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Webhook listener middleware: settle the request id, hand it to the handler, put it on the
/// answer (whatever the answer: a stored delivery, a refusal, `413`, `404`).
pub async fn http_request_id(mut request: Request, next: Next) -> Response {
    let id = request_id(request.headers());
    request.extensions_mut().insert(RequestId(id.clone()));
    let mut response = next.run(request).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}

/// The outermost gRPC layer: a server span per call, continuing the caller's `traceparent`,
/// and `x-request-id` on every answer, including those the layers inside it make up (busy,
/// deadline exceeded, a caught panic) and authentication failures.
#[derive(Clone, Copy, Default)]
pub struct GrpcTraceLayer;

impl<S> tower::Layer<S> for GrpcTraceLayer {
    type Service = GrpcTrace<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcTrace { inner }
    }
}

#[derive(Clone)]
pub struct GrpcTrace<S> {
    inner: S,
}

impl<S, B> tower::Service<http::Request<B>> for GrpcTrace<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let id = request_id(request.headers());
        let path = request.uri().path().trim_start_matches('/');
        let (service, method) = path.split_once('/').unwrap_or((path, ""));
        let span = tracing::info_span!(
            parent: None,
            "grpc.call",
            otel.name = %path,
            otel.kind = "server",
            otel.status_code = Empty,
            rpc.system = "grpc",
            rpc.service = %service,
            rpc.method = %method,
            rpc.grpc.status_code = Empty,
            request_id = %id,
            trace_id = Empty,
        );
        let caller = request
            .headers()
            .get(coverwatch_engine::trace::TRACEPARENT)
            .and_then(|v| v.to_str().ok());
        if let Some(parent) = caller.and_then(coverwatch_engine::trace::remote_context) {
            let _ = span.set_parent(parent);
        }
        coverwatch_engine::trace::record_trace_id(&span);
        let answer = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        Box::pin(
            async move {
                let mut response = answer.await?;
                if let Ok(value) = HeaderValue::from_str(&id) {
                    response.headers_mut().insert(REQUEST_ID, value);
                }
                // An error with no answer body comes in the headers ("trailers-only"); a
                // success's status follows in the trailers, after this span's work is done.
                let code = tonic::Status::from_header_map(response.headers())
                    .map_or(tonic::Code::Ok, |status| status.code());
                let span = tracing::Span::current();
                span.record("rpc.grpc.status_code", code as i32);
                if is_server_error(code) {
                    span.record("otel.status_code", "ERROR");
                }
                Ok(response)
            }
            .instrument(span),
        )
    }
}

/// The codes OpenTelemetry's gRPC conventions count as a server-side error.
fn is_server_error(code: tonic::Code) -> bool {
    use tonic::Code;
    matches!(
        code,
        Code::Unknown
            | Code::DeadlineExceeded
            | Code::Unimplemented
            | Code::Internal
            | Code::Unavailable
            | Code::DataLoss
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_short_printable_request_ids_are_echoed() {
        let ok = |s: &str| usable_request_id(&HeaderValue::from_str(s).unwrap()).is_some();
        assert!(ok("req-123_ABC.x:y"));
        assert!(ok(&"a".repeat(MAX_REQUEST_ID_LEN)));
        assert!(!ok(&"a".repeat(MAX_REQUEST_ID_LEN + 1)));
        assert!(!ok(""));
        assert!(!ok("two words"));
        assert!(!ok("tab\there"));
        let non_ascii = HeaderValue::from_bytes("é".as_bytes()).unwrap();
        assert!(usable_request_id(&non_ascii).is_none());
        let mut headers = http::HeaderMap::new();
        headers.insert(REQUEST_ID, HeaderValue::from_static("bad id"));
        let made = request_id(&headers);
        assert!(uuid::Uuid::parse_str(&made).is_ok(), "{made}");
        headers.insert(REQUEST_ID, HeaderValue::from_static("mine-1"));
        assert_eq!(request_id(&headers), "mine-1");
    }
}
