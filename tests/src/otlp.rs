//! An OTLP/gRPC trace collector inside the test process: the real `TraceService` of the
//! OpenTelemetry protocol, forwarding every exported span to the test, which awaits the spans it
//! expects (with a timeout as a safety net) and checks their parents and attributes.

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
pub use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
pub use opentelemetry_proto::tonic::trace::v1::Span;

/// Safety net for every awaited span.
pub const WAIT: Duration = Duration::from_secs(10);

/// One exported span with the `host.name` and `service.name` of its resource.
#[derive(Debug, Clone)]
pub struct Exported {
    pub host: String,
    pub service: String,
    pub span: Span,
}

impl Exported {
    pub fn attribute(&self, key: &str) -> Option<&AnyValue> {
        attribute(&self.span.attributes, key)
    }

    /// A string attribute; panics (naming it) if it is missing or of another type.
    pub fn string(&self, key: &str) -> String {
        match self.attribute(key) {
            Some(AnyValue::StringValue(value)) => value.clone(),
            other => panic!("{key} of {} is {other:?}", self.span.name),
        }
    }

    /// An integer attribute; panics (naming it) if it is missing or of another type.
    pub fn int(&self, key: &str) -> i64 {
        match self.attribute(key) {
            Some(AnyValue::IntValue(value)) => *value,
            other => panic!("{key} of {} is {other:?}", self.span.name),
        }
    }

    /// A boolean attribute; panics (naming it) if it is missing or of another type.
    pub fn bool(&self, key: &str) -> bool {
        match self.attribute(key) {
            Some(AnyValue::BoolValue(value)) => *value,
            other => panic!("{key} of {} is {other:?}", self.span.name),
        }
    }

    pub fn duration(&self) -> Duration {
        Duration::from_nanos(
            self.span
                .end_time_unix_nano
                .saturating_sub(self.span.start_time_unix_nano),
        )
    }

    /// Whether `self` is a direct child of `parent` (same trace, parent span id).
    pub fn is_child_of(&self, parent: &Exported) -> bool {
        self.span.trace_id == parent.span.trace_id
            && self.span.parent_span_id == parent.span.span_id
    }
}

fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a AnyValue> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|value| value.value.as_ref())
}

fn resource_string(attributes: &[KeyValue], key: &str) -> String {
    attribute(attributes, key)
        .map(|value| match value {
            AnyValue::StringValue(text) => text.clone(),
            other => format!("{other:?}"),
        })
        .unwrap_or_default()
}

/// The OTLP/gRPC TraceService, forwarding every span to the test.
struct Receiver {
    spans: mpsc::Sender<Exported>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        for resource_spans in request.into_inner().resource_spans {
            let resource = resource_spans
                .resource
                .map(|resource| resource.attributes)
                .unwrap_or_default();
            let host = resource_string(&resource, "host.name");
            let service = resource_string(&resource, "service.name");
            for scope_spans in resource_spans.scope_spans {
                for span in scope_spans.spans {
                    let _ = self.spans.send(Exported {
                        host: host.clone(),
                        service: service.clone(),
                        span,
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// A collector serving on its own thread and runtime; it stops with the test process.
pub struct Collector {
    spans: mpsc::Receiver<Exported>,
    seen: Vec<Exported>,
}

impl Collector {
    /// Serves OTLP/gRPC on `listener` (bound by the caller: on loopback, or inside a namespace).
    pub fn serve(listener: std::net::TcpListener) -> Self {
        listener.set_nonblocking(true).expect("nonblocking");
        let (sender, spans) = mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                tonic::transport::Server::builder()
                    .add_service(TraceServiceServer::new(Receiver { spans: sender }))
                    .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
                    .await
                    .expect("collector serves");
            });
        });
        Self {
            spans,
            seen: Vec::new(),
        }
    }

    /// Waits (blocking, up to [`WAIT`]) until a span matching `wanted` arrived (spans seen before
    /// count too). From async code, run it on a blocking thread.
    pub fn wait_for(&mut self, what: &str, wanted: impl Fn(&Exported) -> bool) -> Exported {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(found) = self.seen.iter().find(|span| wanted(span)) {
                return found.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.spans.recv_timeout(left) {
                Ok(span) => self.seen.push(span),
                Err(_) => panic!(
                    "no {what} within {WAIT:?}; received:\n{}",
                    self.seen
                        .iter()
                        .map(|s| format!(
                            "  {} {} {} {:?}",
                            s.service,
                            s.host,
                            s.span.name,
                            s.attribute("vrrp.cause")
                        ))
                        .collect::<Vec<_>>()
                        .join("\n")
                ),
            }
        }
    }

    /// Like [`Collector::wait_for`], but `None` after `timeout` instead of a panic (for the lab,
    /// which reports and tears down rather than panics).
    pub fn try_wait_for(
        &mut self,
        timeout: Duration,
        wanted: impl Fn(&Exported) -> bool,
    ) -> Option<Exported> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(found) = self.seen.iter().find(|span| wanted(span)) {
                return Some(found.clone());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.spans.recv_timeout(left) {
                Ok(span) => self.seen.push(span),
                Err(_) => return None,
            }
        }
    }

    /// Takes every span that has arrived without waiting.
    pub fn collect_pending(&mut self) {
        while let Ok(span) = self.spans.try_recv() {
            self.seen.push(span);
        }
    }

    /// Every span received so far.
    pub fn seen(&self) -> &[Exported] {
        &self.seen
    }

    /// Every child of `root` received so far, by name.
    pub fn children(&self, root: &Exported) -> BTreeMap<String, Exported> {
        self.seen
            .iter()
            .filter(|span| span.is_child_of(root))
            .map(|span| (span.span.name.clone(), span.clone()))
            .collect()
    }
}
