//! Metrics and failover traces: what the event loop tells the outside world about itself.
//!
//! The daemon owns one [`Telemetry`] and calls it at fixed points: the engine heard a valid
//! advert ([`Telemetry::heard`]), an action starts and ends ([`Telemetry::begin`],
//! [`Telemetry::end`]), a batch of actions is done ([`Telemetry::settle`]), the status changed
//! ([`Telemetry::publish`]). It never changes what the daemon does: a metrics listener that cannot
//! bind is logged, an exporter that cannot reach its collector drops spans. Without a `[telemetry]`
//! table nothing listens and nothing is exported; the only work left is counting transitions.

pub mod failover;
pub mod http;
pub mod metrics;
pub mod otel;
pub mod propagation;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use hav_proto::config::Telemetry as Settings;
use hav_vrrp::engine::{Action, Engine, Heard, RouterConfig, RouterId};

use crate::track::Health;
use failover::{Failovers, Moment, Record, Step};
use metrics::Registry;

/// The file in the state dir holding the latest failover trace ids.
const TRACE_IDS_FILE: &str = "failover-trace-ids.json";

/// The daemon's telemetry; see the module documentation.
#[derive(Debug)]
pub struct Telemetry {
    registry: Arc<Mutex<Registry>>,
    server: Option<http::ServerGuard>,
    /// Where the latest failover trace ids are kept across restarts.
    trace_ids_file: Option<std::path::PathBuf>,
    failovers: Failovers,
    sink: Option<otel::Sink>,
}

impl Telemetry {
    /// Starts serving metrics if `settings` asks for it (a failure to bind is logged, not
    /// fatal: metrics must not stop a failover daemon) and picks up the trace sink that
    /// [`otel::init`] built, if any.
    pub fn start(settings: &Settings, node: &str) -> Self {
        let registry = Arc::new(Mutex::new(Registry::default()));
        let server = settings.metrics_listen.and_then(|address| {
            let tls = match settings
                .metrics_tls
                .as_ref()
                .map(hav_proto::metrics::tls::server_config)
            {
                None => None,
                Some(Ok(tls)) => Some(tls),
                Some(Err(error)) => {
                    tracing::error!(%address, %error, "cannot serve metrics: TLS");
                    return None;
                }
            };
            let scheme = if tls.is_some() { "https" } else { "http" };
            match http::serve(address, tls, registry.clone()) {
                Ok(server) => {
                    tracing::info!(%address, "serving metrics on {scheme}://{address}/metrics");
                    Some(server)
                }
                Err(error) => {
                    tracing::error!(%address, %error, "cannot serve metrics");
                    None
                }
            }
        });
        Self {
            registry,
            server,
            trace_ids_file: None,
            failovers: Failovers::new(node),
            sink: settings.otlp_endpoint.as_ref().and(otel::sink()),
        }
    }

    /// A reload keeps the running telemetry: the listener and the exporter are set up once.
    pub fn note_reload(&self, running: &Settings, loaded: &Settings) {
        if running != loaded {
            tracing::warn!("[telemetry] changed; the new settings take effect at the next restart");
        }
    }

    /// Whether metrics are served (else [`Telemetry::publish`] has nothing to do).
    pub fn serves_metrics(&self) -> bool {
        self.server.is_some()
    }

    /// Where metrics are served, if they are.
    pub fn metrics_address(&self) -> Option<std::net::SocketAddr> {
        self.server.as_ref().map(http::ServerGuard::local_addr)
    }

    /// The routers as configured now, by id (at start-up and after a reload).
    pub fn configure<'a>(
        &mut self,
        routers: impl IntoIterator<Item = (RouterId, &'a RouterConfig)>,
    ) {
        self.failovers.configure(routers);
    }

    /// A valid advert the engine decoded at `now` (before its actions are carried out): who was
    /// heard when, with which priority.
    pub fn heard(&mut self, heard: &Heard, now: std::time::Instant) {
        self.failovers
            .heard(now, heard.vrid.get(), heard.src, heard.priority);
    }

    /// The daemon starts carrying out `action`. Outside failovers (an advert sent by a settled
    /// master) nothing is recorded and no clock is read.
    #[cfg_attr(target_os = "linux", unsafe(link_section = ".text.hot"))]
    pub fn begin(&mut self, action: &Action) {
        let step = match action {
            Action::StateChanged {
                router,
                from,
                to,
                priority,
                cause,
            } => {
                if let Ok(mut registry) = self.registry.lock()
                    && let Some(name) = self.failovers.name_of(*router)
                {
                    registry.count_transition(name, *to, cause.kind());
                }
                self.failovers
                    .state_changed(Moment::now(), *router, *from, *to, *priority, cause);
                return;
            }
            Action::Transmit { router, .. } => (*router, Step::Transmit),
            Action::AddVips { router, .. } => (*router, Step::AddVips),
            Action::RemoveVips { router, .. } => (*router, Step::RemoveVips),
            Action::Announce { router, .. } => (*router, Step::Announce),
            _ => {
                self.end();
                return;
            }
        };
        if self.failovers.follows(step.0) {
            self.failovers.begin(Moment::now(), step.0, step.1);
        }
    }

    /// The action begun last finished now.
    pub fn end(&mut self) {
        if !self.failovers.is_idle() {
            self.failovers.end(Moment::now());
        }
    }

    /// A batch of actions is done: finished failovers are measured and exported.
    #[inline]
    pub fn settle(&mut self) {
        if !self.failovers.is_idle() {
            self.settle_failovers();
        }
    }

    #[inline(never)]
    fn settle_failovers(&mut self) {
        let records = self.failovers.settle(Moment::now());
        self.record(records);
    }

    /// Copies the notify FIFO's and SMTP alerts' counters into the metrics.
    pub fn notifications(&self, counters: &[(&'static str, u64)]) {
        if self.server.is_none() {
            return;
        }
        if let Ok(mut registry) = self.registry.lock() {
            registry.set_notifications(counters);
        }
    }

    /// Copies the values the engine and the trackers own into the metrics.
    pub fn publish(
        &self,
        engine: &Engine,
        health: &BTreeMap<String, Health>,
        drops: &BTreeMap<&'static str, u64>,
    ) {
        if self.server.is_none() {
            return;
        }
        let trackers = health
            .iter()
            .map(|(name, health)| {
                let value = match health {
                    Health::Up => 1.0,
                    Health::Value(value) => *value as f64,
                    _ => 0.0,
                };
                (name.clone(), value)
            })
            .collect();
        let drops = drops
            .iter()
            .map(|(reason, count)| ((*reason).to_owned(), *count))
            .collect();
        if let Ok(mut registry) = self.registry.lock() {
            registry.update(engine.status(), engine.counters(), trackers, drops);
        }
    }

    /// Reads the trace ids an earlier run kept in `state_dir` (nothing if none or unreadable),
    /// and keeps this run's there from now on.
    pub fn keep_trace_ids_in(&mut self, state_dir: &std::path::Path) {
        let path = state_dir.join(TRACE_IDS_FILE);
        let ids: Vec<String> = std::fs::read(&path)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        self.failovers.remember(
            ids.iter()
                .filter_map(|hex| opentelemetry::trace::TraceId::from_hex(hex).ok()),
        );
        self.trace_ids_file = Some(path);
    }

    fn save_trace_ids(&self) {
        let Some(path) = &self.trace_ids_file else {
            return;
        };
        let ids: Vec<String> = self
            .failovers
            .recent_ids()
            .map(|id| id.to_string())
            .collect();
        let tmp = path.with_extension("json.new");
        let written = std::fs::write(&tmp, serde_json::to_vec(&ids).unwrap_or_default())
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(error) = written {
            tracing::debug!(path = %path.display(), %error, "failover trace ids not kept");
        }
    }

    fn record(&mut self, records: Vec<Record>) {
        if !records.is_empty() {
            self.save_trace_ids();
        }
        for record in records {
            if let Record::Takeover(takeover) = &record {
                tracing::info!(
                    instance = takeover.instance(),
                    duration_ms = takeover.duration().as_secs_f64() * 1000.0,
                    "failover complete: VIPs added and announced"
                );
                // The exemplar names the failover's trace only when that trace is exported.
                let traced = (self.sink.as_ref())
                    .is_some_and(|sink| sink.samples(record.trace_id()))
                    .then(|| record.trace_id().to_string());
                if takeover.replaced_a_master()
                    && let Ok(mut registry) = self.registry.lock()
                {
                    registry.observe_failover(
                        takeover.instance(),
                        takeover.cause_kind(),
                        takeover.duration(),
                        traced,
                    );
                }
            }
            if let Some(sink) = &self.sink
                && sink.samples(record.trace_id())
            {
                sink.emit(record.spans(self.failovers.node(), sink.scope()));
            }
        }
    }
}

impl Drop for Telemetry {
    /// A stopping agent exports the resignations it has not closed yet (the exporter itself is
    /// flushed by [`otel::Pipeline::shutdown`] afterwards).
    fn drop(&mut self) {
        let records = self.failovers.drain(Moment::now());
        self.record(records);
    }
}
