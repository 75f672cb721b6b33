//! Spans around the fleet operations and their export over OTLP/gRPC.
//!
//! The operations are `tracing` spans: `fleet.push` (and `fleet.rollback`) around a whole call,
//! `fleet.apply_pair` around one rollout sequence (a pair is changed one node at a time),
//! `fleet.apply_node` around one config sent and acknowledged, `fleet.drain` / `fleet.undrain`
//! around a drain command. [`init`] builds the OpenTelemetry pipeline that turns them into OTLP
//! spans; without it they are plain `tracing` spans that no one exports, and
//! [`current_context`] is empty.
//!
//! Every command sent to an agent carries [`current_context`] (W3C `traceparent`/`tracestate`),
//! so the agent's `agent.command` span joins the operation's trace.

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

use hav_proto::config::{OtlpEndpoint, SamplingRatio};
use hav_proto::v1::{ApplyOutcome, PushConfigResponse};
use opentelemetry::KeyValue;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider,
};
use tracing::Instrument;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::metrics::{Metrics, PushOutcome};
use crate::error::ControlError;

/// The coordinator's service name and instrumentation scope.
pub const SCOPE: &str = "hav-coordinator";
/// How long one export may take before it is abandoned.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long spans wait to be batched.
const BATCH_DELAY: Duration = Duration::from_millis(200);

/// Failures building the pipeline.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("OTLP exporter for {endpoint}: {source}")]
    Exporter {
        endpoint: String,
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
}

/// The running export pipeline; keep it until the coordinator stops, then
/// [`Pipeline::shutdown`].
#[derive(Debug)]
pub struct Pipeline {
    provider: SdkTracerProvider,
}

/// Builds the OTLP/gRPC pipeline to `endpoint`, keeping the share `ratio` of new traces (a trace
/// started elsewhere keeps its own decision). `instance` becomes `service.instance.id`. Must run
/// inside the Tokio runtime that will drive the gRPC connection.
pub fn init(
    endpoint: &OtlpEndpoint,
    ratio: SamplingRatio,
    instance: &str,
) -> Result<Pipeline, TraceError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint.as_str())
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|source| TraceError::Exporter {
            endpoint: endpoint.to_string(),
            source,
        })?;
    let resource = Resource::builder()
        .with_service_name(SCOPE)
        .with_attributes([
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            KeyValue::new("service.instance.id", instance.to_owned()),
        ])
        .build();
    let processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_scheduled_delay(BATCH_DELAY)
                .build(),
        )
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            ratio.get(),
        ))))
        .with_resource(resource)
        .build();
    Ok(Pipeline { provider })
}

impl Pipeline {
    /// The tracer for the `tracing-opentelemetry` layer
    /// (`tracing_opentelemetry::layer().with_tracer(pipeline.tracer())`).
    pub fn tracer(&self) -> SdkTracer {
        self.provider.tracer(SCOPE)
    }

    /// Exports what is buffered and stops the exporter, on a blocking thread: the export needs
    /// the runtime that calls this to keep running.
    pub async fn shutdown(self) {
        let result = tokio::task::spawn_blocking(move || self.provider.shutdown()).await;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "trace export at stop failed"),
            Err(error) => tracing::warn!(%error, "trace export at stop did not finish"),
        }
    }
}

/// The W3C trace context of the current span, for a command to an agent: empty without a
/// pipeline; a span the sampler dropped still propagates that decision (flags `00`), so the agent
/// drops its part too.
pub fn current_context() -> HashMap<String, String> {
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&tracing::Span::current().context(), &mut carrier);
    carrier
}

/// Records the outcome of a `PushConfig` on its `fleet.push` span (the current span, created by
/// `#[tracing::instrument(name = "fleet.push", skip_all, fields(fleet.operator, fleet.version,
/// fleet.nodes, fleet.dry_run, fleet.outcome))]`) and counts it. A push dropped before
/// [`PushTrace::finish`] (refused, invalid, store failure) counts as rejected.
pub struct PushTrace<'a> {
    metrics: &'a Metrics,
    span: tracing::Span,
    finished: bool,
}

impl<'a> PushTrace<'a> {
    pub fn start(metrics: &'a Metrics, dry_run: bool) -> PushTrace<'a> {
        let span = tracing::Span::current();
        span.record("fleet.dry_run", dry_run);
        PushTrace {
            metrics,
            span,
            finished: false,
        }
    }

    /// The operator, once the certificate said who it is.
    pub fn operator(&self, who: &str) {
        self.span.record("fleet.operator", who);
    }

    /// The push got this far: its outcome follows from the response.
    pub fn finish(mut self, response: &PushConfigResponse) {
        self.finished = true;
        let outcome = push_outcome(response);
        self.span
            .record("fleet.version", as_attribute(response.version));
        self.span
            .record("fleet.nodes", as_attribute(response.nodes.len() as u64));
        self.span.record("fleet.outcome", outcome.as_str());
        self.metrics.push_finished(outcome);
    }
}

impl Drop for PushTrace<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.span
                .record("fleet.outcome", PushOutcome::Rejected.as_str());
            self.metrics.push_finished(PushOutcome::Rejected);
        }
    }
}

/// OpenTelemetry integers are signed (`tracing-opentelemetry` would turn a `u64` into text).
fn as_attribute(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A push's outcome from its response.
pub fn push_outcome(response: &PushConfigResponse) -> PushOutcome {
    let outcomes = || response.nodes.iter().map(|node| node.outcome());
    if outcomes().any(|outcome| outcome == ApplyOutcome::DryRun) {
        PushOutcome::DryRun
    } else if response.version == 0 {
        PushOutcome::Unchanged
    } else if outcomes()
        .all(|outcome| matches!(outcome, ApplyOutcome::Applied | ApplyOutcome::Unchanged))
    {
        PushOutcome::Applied
    } else {
        PushOutcome::Partial
    }
}

/// The `fleet.apply_pair` span of one rollout sequence (the members of a pair or group, sent one
/// after the other); instrument the sequence's future with it.
pub fn pair_span<'n>(nodes: impl IntoIterator<Item = &'n str>) -> tracing::Span {
    let nodes: Vec<&str> = nodes.into_iter().collect();
    tracing::info_span!("fleet.apply_pair", fleet.nodes = nodes.join(",").as_str())
}

/// Sends one node its config inside a `fleet.apply_node` span (node, version, outcome, error,
/// duration) and counts the outcome. `send` is the send-and-await-ack future returning the
/// outcome and the error text, as `FleetServiceImpl::send_config` does.
pub async fn apply_node<F>(
    metrics: &Metrics,
    node: &str,
    version: u64,
    send: F,
) -> (ApplyOutcome, String)
where
    F: Future<Output = (ApplyOutcome, String)>,
{
    let span = tracing::info_span!(
        "fleet.apply_node",
        fleet.node = node,
        fleet.version = as_attribute(version),
        fleet.outcome = Empty,
        fleet.error = Empty,
        fleet.duration_ms = Empty,
        otel.status_code = Empty,
    );
    let started = Instant::now();
    let (outcome, error) = send.instrument(span.clone()).await;
    let label = super::metrics::apply_outcome_label(outcome);
    span.record("fleet.outcome", label);
    span.record(
        "fleet.duration_ms",
        started.elapsed().as_secs_f64() * 1000.0,
    );
    if !error.is_empty() {
        span.record("fleet.error", error.as_str());
    }
    if !matches!(outcome, ApplyOutcome::Applied | ApplyOutcome::Unchanged) {
        span.record("otel.status_code", "ERROR");
    }
    metrics.node_applied(outcome);
    (outcome, error)
}

/// Runs a drain (`undrain` false) or undrain of `node` inside a `fleet.drain` / `fleet.undrain`
/// span and counts its outcome (`ok` tells a success from a refusal); returns what `operation`
/// returned.
pub async fn drain<T, F>(
    metrics: &Metrics,
    node: &str,
    undrain: bool,
    operation: F,
    ok: impl Fn(&T) -> bool,
) -> Result<T, ControlError>
where
    F: Future<Output = Result<T, ControlError>>,
{
    let span = if undrain {
        tracing::info_span!(
            "fleet.undrain",
            fleet.node = node,
            fleet.outcome = Empty,
            otel.status_code = Empty
        )
    } else {
        tracing::info_span!(
            "fleet.drain",
            fleet.node = node,
            fleet.outcome = Empty,
            otel.status_code = Empty
        )
    };
    let result = operation.instrument(span.clone()).await;
    let outcome = match &result {
        Ok(done) if ok(done) => "ok",
        Ok(_) => "refused",
        Err(_) => "error",
    };
    span.record("fleet.outcome", outcome);
    if outcome != "ok" {
        span.record("otel.status_code", "ERROR");
    }
    metrics.drain_finished(undrain, outcome);
    result
}

#[cfg(test)]
mod tests {
    use hav_proto::v1::NodeResult;

    use super::*;

    fn response(version: u64, outcomes: &[ApplyOutcome]) -> PushConfigResponse {
        PushConfigResponse {
            version,
            nodes: outcomes
                .iter()
                .map(|outcome| NodeResult {
                    outcome: *outcome as i32,
                    ..NodeResult::default()
                })
                .collect(),
        }
    }

    #[test]
    fn push_outcomes() {
        use ApplyOutcome::*;
        assert_eq!(
            push_outcome(&response(3, &[Applied, Unchanged])),
            PushOutcome::Applied
        );
        assert_eq!(
            push_outcome(&response(3, &[Applied, Held])),
            PushOutcome::Partial
        );
        assert_eq!(push_outcome(&response(3, &[Offline])), PushOutcome::Partial);
        assert_eq!(
            push_outcome(&response(0, &[Unchanged])),
            PushOutcome::Unchanged
        );
        assert_eq!(
            push_outcome(&response(0, &[DryRun, DryRun])),
            PushOutcome::DryRun
        );
    }

    #[test]
    fn without_a_pipeline_commands_carry_no_context() {
        let span = tracing::info_span!("fleet.push");
        let _entered = span.enter();
        assert!(current_context().is_empty());
    }
}
