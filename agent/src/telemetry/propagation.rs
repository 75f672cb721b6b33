//! Continuing the coordinator's traces: a command from the coordinator carries the W3C trace
//! context (`traceparent`, `tracestate`) of the operation that sent it, and the agent carries it
//! out inside an `agent.command` span whose parent is that remote span.
//!
//! Without an OTLP exporter (no `tracing-opentelemetry` layer) the span is an ordinary `tracing`
//! span and the context is ignored; a missing or malformed context starts a new trace.

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The span to carry out a command of `kind` (`apply_config`, `drain`, ...) in, child of the
/// coordinator span described by `trace_context` (the `Command.trace_context` map).
///
/// Instrument the handling with it (`future.instrument(span)`), so that everything the daemon
/// does for the command belongs to the coordinator's trace.
pub fn command_span(trace_context: &HashMap<String, String>, kind: &str) -> tracing::Span {
    let parent = TraceContextPropagator::new().extract(trace_context);
    let span = tracing::info_span!("agent.command", command.kind = kind);
    // Fails only when the span is disabled or no OpenTelemetry layer is installed: then there is
    // no trace to continue.
    let _ = span.set_parent(parent);
    span
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use opentelemetry::Context;
    use opentelemetry::trace::{SpanId, TraceContextExt, TraceId, TracerProvider as _};
    use opentelemetry_sdk::error::OTelSdkResult;
    use opentelemetry_sdk::trace::{SdkTracerProvider, Span, SpanData, SpanProcessor};
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    /// Keeps every finished span.
    #[derive(Debug, Clone, Default)]
    struct Collect(Arc<Mutex<Vec<SpanData>>>);

    impl SpanProcessor for Collect {
        fn on_start(&self, _: &mut Span, _: &Context) {}
        fn on_end(&self, span: SpanData) {
            self.0.lock().expect("not poisoned").push(span);
        }
        fn force_flush(&self) -> OTelSdkResult {
            Ok(())
        }
        fn shutdown_with_timeout(&self, _: Duration) -> OTelSdkResult {
            Ok(())
        }
    }

    fn recorded(run: impl FnOnce()) -> Vec<SpanData> {
        let collect = Collect::default();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(collect.clone())
            .build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, run);
        collect.0.lock().expect("not poisoned").clone()
    }

    #[test]
    fn the_command_span_is_a_child_of_the_remote_span() {
        let context = HashMap::from([(
            "traceparent".to_owned(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned(),
        )]);
        let spans = recorded(|| {
            let span = command_span(&context, "apply_config");
            let _entered = span.enter();
            tracing::info_span!("inner").in_scope(|| {});
        });
        let command = spans
            .iter()
            .find(|s| s.name == "agent.command")
            .expect("agent.command exported");
        assert_eq!(
            command.span_context.trace_id(),
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").expect("hex")
        );
        assert_eq!(
            command.parent_span_id,
            SpanId::from_hex("00f067aa0ba902b7").expect("hex")
        );
        assert!(command.parent_span_is_remote);
        assert!(
            command
                .attributes
                .iter()
                .any(|kv| kv.key.as_str() == "command.kind" && kv.value.as_str() == "apply_config")
        );
        let inner = spans.iter().find(|s| s.name == "inner").expect("inner");
        assert_eq!(inner.parent_span_id, command.span_context.span_id());
    }

    #[test]
    fn a_missing_or_malformed_context_starts_a_new_trace() {
        for context in [
            HashMap::new(),
            HashMap::from([("traceparent".to_owned(), "00-zz-yy-01".to_owned())]),
        ] {
            let spans = recorded(|| {
                let span = command_span(&context, "drain");
                assert!(!span.context().span().span_context().is_remote());
                drop(span);
            });
            let command = &spans[0];
            assert_eq!(command.name, "agent.command");
            assert_eq!(command.parent_span_id, SpanId::INVALID);
            assert_ne!(command.span_context.trace_id(), TraceId::INVALID);
        }
    }
}
