//! W3C trace context across the engine's asynchronous hops. A gRPC call that opens a link
//! session leaves its `traceparent` on the link; the vendor's webhooks for that link arrive later
//! as unrelated HTTP requests, and their ingest span continues the caller's trace; the ingest
//! span's own context is stored with the delivery, and the worker's processing span continues
//! from it. With no OpenTelemetry layer installed every function here is a no-op: nothing is
//! stored and no span changes.

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The W3C header (and the name we store it under).
pub const TRACEPARENT: &str = "traceparent";

/// A `traceparent` of version 00 is 55 characters; later versions may append fields. Anything
/// much longer is not one, and is not parsed.
const MAX_TRACEPARENT_LEN: usize = 256;

/// The `traceparent` that makes a remote span a child of `span`, if `span` is traced.
pub fn traceparent(span: &Span) -> Option<String> {
    let context = span.context();
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier.remove(TRACEPARENT)
}

/// [`traceparent`] of the span the caller runs in (a gRPC call's span).
pub fn current_traceparent() -> Option<String> {
    traceparent(&Span::current())
}

/// The remote parent a `traceparent` value names, if it is a valid one.
pub fn remote_context(traceparent: &str) -> Option<opentelemetry::Context> {
    if traceparent.len() > MAX_TRACEPARENT_LEN {
        return None;
    }
    let carrier = HashMap::from([(TRACEPARENT.to_owned(), traceparent.trim().to_owned())]);
    let context = TraceContextPropagator::new().extract(&carrier);
    context.span().span_context().is_valid().then_some(context)
}

/// Make `span` a child of the remote span `traceparent` names. Only possible before the span is
/// first entered; returns whether it took.
pub fn set_remote_parent(span: &Span, traceparent: Option<&str>) -> bool {
    match traceparent.and_then(remote_context) {
        Some(context) => span.set_parent(context).is_ok(),
        None => false,
    }
}

/// Link `span` to the remote span `traceparent` names (a cause that is not its parent).
pub fn add_remote_link(span: &Span, traceparent: Option<&str>) {
    if let Some(context) = traceparent.and_then(remote_context) {
        span.add_link(context.span().span_context().clone());
    }
}

/// Put the span's trace id in its `trace_id` field, so that every log line written inside it
/// names the trace. Fixes the span's parent: call it once the parent is settled.
pub fn record_trace_id(span: &Span) {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    if span_context.is_valid() {
        span.record("trace_id", tracing::field::display(span_context.trace_id()));
    }
}

/// The ingest span's parent: the sender's own trace context when an authenticated vendor sent
/// one (then the caller's trace is a link), else the trace of the gRPC call that opened the
/// link's session. Only ever called after the delivery was authenticated: a stranger cannot
/// graft our spans onto a trace of their choosing.
pub(crate) fn adopt_ingest_parent(span: &Span, sender: Option<&str>, caller: Option<&str>) {
    if set_remote_parent(span, sender) {
        add_remote_link(span, caller);
    } else {
        set_remote_parent(span, caller);
    }
    record_trace_id(span);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_valid_traceparents_name_a_parent() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let context = remote_context(good).expect("a valid traceparent");
        assert_eq!(
            context.span().span_context().trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        for bad in [
            "",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "zz-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e47é6-00f067aa0ba902b7-01",
        ] {
            assert!(remote_context(bad).is_none(), "{bad:?}");
        }
        assert!(remote_context(&format!("{good}{}", "-x".repeat(200))).is_none());
    }

    #[test]
    fn without_an_opentelemetry_layer_nothing_is_traced() {
        let span = tracing::info_span!("untraced", trace_id = tracing::field::Empty);
        assert_eq!(traceparent(&span), None);
        assert!(!set_remote_parent(
            &span,
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        ));
    }
}
