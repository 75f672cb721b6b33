//! The coordinator's own telemetry: Prometheus metrics of the fleet operations it runs
//! ([`metrics`]) and OpenTelemetry spans around them ([`trace`]), whose context travels to the
//! agents inside every command so that an agent's work shows up in the same trace.
//!
//! Both are off unless asked for: without `--metrics-listen` nothing listens (the counters are
//! still kept, they cost a lock and an add), without `--otlp-endpoint` no span leaves the process
//! and commands carry an empty trace context. Neither ever changes what an operation does.

pub mod metrics;
pub mod trace;

pub use metrics::Metrics;
