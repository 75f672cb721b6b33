//! The OpenTelemetry pipeline: one OTLP/gRPC exporter behind one batch processor, shared by the
//! `tracing` layer (spans of the agent's own code) and the failover traces, which are recorded
//! directly as finished spans (see [`super::failover`]).
//!
//! Nothing here exists unless `[telemetry] otlp_endpoint` is set: then [`init`] returns `None`,
//! the subscriber gets no layer and the daemon records no spans. The exporter runs on the
//! processor's own thread; [`Pipeline::shutdown`] flushes it without blocking the event loop's
//! runtime.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hav_proto::config::Telemetry as Settings;
use opentelemetry::trace::{TraceId, TracerProvider as _};
use opentelemetry::{Context, InstrumentationScope, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider, Span, SpanData,
    SpanExporter as _, SpanProcessor,
};

/// How long one export may take before it is abandoned.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long spans wait to be batched. Failovers are rare: export them promptly.
const BATCH_DELAY: Duration = Duration::from_millis(200);
/// The agent's instrumentation scope name.
pub const SCOPE: &str = "hav-agent";

/// Failures building the pipeline.
#[derive(Debug, thiserror::Error)]
pub enum OtelError {
    #[error("OTLP exporter for {endpoint}: {source}")]
    Exporter {
        endpoint: String,
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
}

/// The running pipeline; keep it until the agent stops, then [`Pipeline::shutdown`].
#[derive(Debug)]
pub struct Pipeline {
    provider: SdkTracerProvider,
    processor: Arc<BatchSpanProcessor>,
}

/// Where the failover traces go: the shared processor, the sampling ratio and the scope.
#[derive(Debug, Clone)]
pub struct Sink {
    processor: Arc<BatchSpanProcessor>,
    ratio: f64,
    scope: InstrumentationScope,
}

static SINK: OnceLock<Sink> = OnceLock::new();

/// Builds the pipeline when `settings` names a collector; must run inside the Tokio runtime
/// that will drive the gRPC connection. `node` becomes `host.name` and `service.instance.id`.
pub fn init(settings: &Settings, node: &str) -> Result<Option<Pipeline>, OtelError> {
    let Some(endpoint) = &settings.otlp_endpoint else {
        return Ok(None);
    };
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint.as_str())
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|source| OtelError::Exporter {
            endpoint: endpoint.to_string(),
            source,
        })?;
    let resource = Resource::builder()
        .with_service_name(SCOPE)
        .with_attributes([
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            KeyValue::new("service.instance.id", node.to_owned()),
            KeyValue::new("host.name", node.to_owned()),
        ])
        .with_attributes(
            (settings.resource.iter())
                .map(|(key, value)| KeyValue::new(key.clone(), value.clone())),
        )
        .build();
    // Set on the exporter, which the processor owns from here on.
    exporter.set_resource(&resource);
    let processor = Arc::new(
        BatchSpanProcessor::builder(exporter)
            .with_batch_config(
                BatchConfigBuilder::default()
                    .with_scheduled_delay(BATCH_DELAY)
                    .build(),
            )
            .build(),
    );
    let ratio = settings.sampling_ratio.get();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(Shared(processor.clone()))
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            ratio,
        ))))
        .with_resource(resource)
        .build();
    let scope = InstrumentationScope::builder(SCOPE)
        .with_version(env!("CARGO_PKG_VERSION"))
        .build();
    // A second pipeline in one process (tests only) keeps the first sink.
    let _ = SINK.set(Sink {
        processor: processor.clone(),
        ratio,
        scope,
    });
    Ok(Some(Pipeline {
        provider,
        processor,
    }))
}

/// The failover trace sink, if a pipeline was built.
pub fn sink() -> Option<Sink> {
    SINK.get().cloned()
}

impl Pipeline {
    /// The tracer for the `tracing-opentelemetry` layer.
    pub fn tracer(&self) -> SdkTracer {
        self.provider.tracer(SCOPE)
    }

    /// Exports what is buffered and stops the exporter. Runs on a blocking thread: the export
    /// needs the runtime that calls this to keep running.
    pub async fn shutdown(self) {
        let result = tokio::task::spawn_blocking(move || {
            let flushed = self.processor.force_flush();
            let _ = self.provider.shutdown();
            flushed
        })
        .await;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "trace export at stop failed"),
            Err(error) => tracing::warn!(%error, "trace export at stop did not finish"),
        }
    }
}

impl Sink {
    /// The same decision as the SDK's `TraceIdRatioBased` sampler, so that both nodes of a
    /// failover (which derive the same trace id) keep or drop it alike.
    pub fn samples(&self, trace_id: TraceId) -> bool {
        samples(self.ratio, trace_id)
    }

    pub fn scope(&self) -> &InstrumentationScope {
        &self.scope
    }

    /// Hands finished spans to the exporter (never blocks; a full queue drops).
    pub fn emit(&self, spans: Vec<SpanData>) {
        for span in spans {
            self.processor.on_end(span);
        }
    }
}

/// The SDK's `TraceIdRatioBased` rule: the trace id's low 63 bits against `ratio` × 2^63.
fn samples(ratio: f64, trace_id: TraceId) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    let bytes = trace_id.to_bytes();
    let mut low = [0u8; 8];
    low.copy_from_slice(&bytes[8..]);
    let bound = (ratio.max(0.0) * (1u64 << 63) as f64) as u64;
    (u64::from_be_bytes(low) >> 1) < bound
}

/// The batch processor, shared between the provider and the failover sink.
#[derive(Debug)]
struct Shared(Arc<BatchSpanProcessor>);

impl SpanProcessor for Shared {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.0.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        self.0.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::SpanKind;
    use opentelemetry_sdk::trace::{SamplingDecision, ShouldSample};

    use super::*;

    #[test]
    fn failover_sampling_decides_like_the_sdk() {
        for ratio in [0.0, 0.1, 0.5, 0.9, 1.0] {
            let sdk = Sampler::TraceIdRatioBased(ratio);
            for seed in 0u64..2_000 {
                let mut bytes = [0u8; 16];
                bytes[..8].copy_from_slice(&seed.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_be_bytes());
                bytes[8..].copy_from_slice(
                    &(seed ^ 0x5555)
                        .wrapping_mul(0xbf58_476d_1ce4_e5b9)
                        .to_be_bytes(),
                );
                let trace_id = TraceId::from_bytes(bytes);
                let decision = sdk
                    .should_sample(None, trace_id, "x", &SpanKind::Internal, &[], &[])
                    .decision;
                assert_eq!(
                    samples(ratio, trace_id),
                    decision == SamplingDecision::RecordAndSample,
                    "ratio {ratio}, {trace_id}"
                );
            }
        }
    }
}
