//! The agent's metrics and their exposition (Prometheus text 0.0.4, or OpenMetrics with the
//! failover histogram's exemplars: each bucket's latest failover with its trace id).
//!
//! The values live where they are kept (the engine's RFC counters, the trackers' health); the
//! event loop copies them into a [`Registry`] after every event, and a scrape renders the registry.
//! The registry itself only counts what nobody else does: transitions by cause and failover
//! durations. Every label value is escaped; label sets are bounded by the config (instances,
//! trackers) and by fixed enums (states, cause kinds, counters).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hav_proto::metrics::text::{Exemplar, Exposition, Format};
use hav_vrrp::Counters;
use hav_vrrp::engine::{RouterStatus, State};

/// Upper bounds (seconds) of the failover duration histogram: from a priority-0 resignation
/// (tens of ms) to a master-down interval at the longest advert intervals (seconds).
pub const FAILOVER_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0,
];

const STATES: [(State, &str); 4] = [
    (State::Initialize, "initialize"),
    (State::Backup, "backup"),
    (State::Master, "master"),
    (State::Fault, "fault"),
];

/// Everything `GET /metrics` shows.
#[derive(Debug)]
pub struct Registry {
    started: SystemTime,
    routers: Vec<RouterStatus>,
    router_wide: Counters,
    trackers: BTreeMap<String, f64>,
    socket_drops: BTreeMap<String, u64>,
    /// The notify FIFO's and the SMTP alerts' counters, by name (`crate::notify`).
    notifications: Vec<(&'static str, u64)>,
    /// (instance, to state, cause kind) → count.
    transitions: BTreeMap<(String, &'static str, &'static str), u64>,
    /// (instance, cause kind) → durations.
    failovers: BTreeMap<(String, &'static str), Histogram>,
}

impl Default for Registry {
    fn default() -> Self {
        Self {
            started: SystemTime::now(),
            routers: Vec::new(),
            router_wide: Counters::default(),
            trackers: BTreeMap::new(),
            socket_drops: BTreeMap::new(),
            notifications: Vec::new(),
            transitions: BTreeMap::new(),
            failovers: BTreeMap::new(),
        }
    }
}

impl Registry {
    /// Replaces the values owned elsewhere: per-router status, router-wide counters, tracker
    /// values (1 up, 0 down, the number of a tracked file) and socket-layer drops.
    pub fn update(
        &mut self,
        routers: Vec<RouterStatus>,
        router_wide: &Counters,
        trackers: BTreeMap<String, f64>,
        socket_drops: BTreeMap<String, u64>,
    ) {
        self.routers = routers;
        self.router_wide = router_wide.clone();
        self.trackers = trackers;
        self.socket_drops = socket_drops;
    }

    /// Replaces the notify FIFO's and SMTP alerts' counters (`notify_fifo_lines_dropped`,
    /// `smtp_alerts_sent`, `smtp_alerts_failed`, `smtp_alerts_dropped`).
    pub fn set_notifications(&mut self, counters: &[(&'static str, u64)]) {
        self.notifications.clear();
        self.notifications.extend_from_slice(counters);
    }

    pub fn count_transition(&mut self, instance: &str, to: State, cause_kind: &'static str) {
        *self
            .transitions
            .entry((instance.to_owned(), state_name(to), cause_kind))
            .or_default() += 1;
    }

    /// Counts a failover of `duration`; `trace_id` (hex) is the exemplar of its bucket when the
    /// failover was exported as a trace.
    pub fn observe_failover(
        &mut self,
        instance: &str,
        cause_kind: &'static str,
        duration: Duration,
        trace_id: Option<String>,
    ) {
        self.failovers
            .entry((instance.to_owned(), cause_kind))
            .or_default()
            .observe(duration.as_secs_f64(), trace_id);
    }

    /// The exposition in `format`.
    pub fn render(&self, format: Format) -> String {
        let mut out = Exposition::new(format);
        out.header("hav_build_info", "info", "hav-agent build (value 1).");
        out.sample(
            "hav_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))],
            1.0,
        );
        out.header(
            "hav_process_start_time_seconds",
            "gauge",
            "When the agent started, in seconds since the Unix epoch.",
        );
        let started = self.started.duration_since(UNIX_EPOCH).unwrap_or_default();
        out.sample("hav_process_start_time_seconds", &[], started.as_secs_f64());

        out.header(
            "hav_vrrp_state",
            "gauge",
            "1 for the instance's current VRRP state, 0 for the others.",
        );
        for router in &self.routers {
            for (state, name) in STATES {
                let value = if router.state == state { 1.0 } else { 0.0 };
                out.sample(
                    "hav_vrrp_state",
                    &[("instance", &router.name), ("state", name)],
                    value,
                );
            }
        }
        out.header("hav_vrrp_priority", "gauge", "Configured (base) priority.");
        for router in &self.routers {
            out.sample(
                "hav_vrrp_priority",
                &[("instance", &router.name)],
                f64::from(router.base_priority.get()),
            );
        }
        out.header(
            "hav_vrrp_effective_priority",
            "gauge",
            "Priority advertised: base plus tracker weights, or the override.",
        );
        for router in &self.routers {
            out.sample(
                "hav_vrrp_effective_priority",
                &[("instance", &router.name)],
                f64::from(router.effective_priority.get()),
            );
        }
        out.header(
            "hav_vrrp_holds_vips",
            "gauge",
            "1 while the instance's VIPs are on this node (also while handing over).",
        );
        for router in &self.routers {
            let value = if router.holds_vips { 1.0 } else { 0.0 };
            out.sample("hav_vrrp_holds_vips", &[("instance", &router.name)], value);
        }
        out.header(
            "hav_vrrp_transitions_total",
            "counter",
            "State changes by new state and cause kind.",
        );
        for ((instance, to, cause), count) in &self.transitions {
            out.sample(
                "hav_vrrp_transitions_total",
                &[("instance", instance), ("to", to), ("cause", cause)],
                *count as f64,
            );
        }
        for counter in hav_vrrp::Counter::ALL {
            let name = format!("hav_vrrp_{}_total", counter.name());
            out.header(
                &name,
                "counter",
                &format!("RFC 6527/2787 statistic {} per instance.", counter.name()),
            );
            for router in &self.routers {
                out.sample(
                    &name,
                    &[("instance", &router.name)],
                    router.counters.get(counter) as f64,
                );
            }
        }
        out.header(
            "hav_vrrp_router_errors_total",
            "counter",
            "Packets not attributable to an instance, by RFC counter (router-wide statistics).",
        );
        for (counter, value) in self.router_wide.iter() {
            out.sample(
                "hav_vrrp_router_errors_total",
                &[("counter", counter.name())],
                value as f64,
            );
        }
        out.header(
            "hav_socket_drops_total",
            "counter",
            "Datagrams dropped before the VRRP engine, by reason.",
        );
        for (reason, value) in &self.socket_drops {
            out.sample(
                "hav_socket_drops_total",
                &[("reason", reason)],
                *value as f64,
            );
        }
        out.header(
            "hav_tracker_status",
            "gauge",
            "Tracked object: 1 up, 0 down; a tracked file's value.",
        );
        for (tracker, value) in &self.trackers {
            out.sample("hav_tracker_status", &[("tracker", tracker)], *value);
        }
        out.header(
            "hav_notifications_total",
            "counter",
            "State changes told besides the hooks, by outcome: notify FIFO lines dropped (no reader), SMTP alerts sent, failed and dropped (queue full).",
        );
        for (outcome, value) in &self.notifications {
            out.sample(
                "hav_notifications_total",
                &[("outcome", outcome)],
                *value as f64,
            );
        }
        out.header("hav_failover_duration_seconds",
            "histogram",
            "Backup to Master, by cause: from the old master last heard (or its priority-0 advert received) to VIPs added and the first GARP/NA sent. First elections (no master ever heard) are not failovers and are left out.",
        );
        for ((instance, cause), histogram) in &self.failovers {
            histogram.render(&mut out, "hav_failover_duration_seconds", instance, cause);
        }
        out.finish()
    }
}

/// A cumulative histogram over [`FAILOVER_BUCKETS`].
#[derive(Debug, Clone, Default)]
struct Histogram {
    buckets: [u64; FAILOVER_BUCKETS.len()],
    count: u64,
    sum: f64,
    /// Per bucket (the last one is `+Inf`), its latest traced observation.
    exemplars: [Option<Exemplar>; FAILOVER_BUCKETS.len() + 1],
}

impl Histogram {
    fn observe(&mut self, value: f64, trace_id: Option<String>) {
        for (bound, bucket) in FAILOVER_BUCKETS.iter().zip(&mut self.buckets) {
            if value <= *bound {
                *bucket += 1;
            }
        }
        self.count += 1;
        self.sum += value;
        if let Some(trace_id) = trace_id {
            // The bucket it falls in (not every cumulative one above it).
            let index = FAILOVER_BUCKETS
                .iter()
                .position(|bound| value <= *bound)
                .unwrap_or(FAILOVER_BUCKETS.len());
            let timestamp = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64();
            self.exemplars[index] = Some(Exemplar {
                labels: vec![("trace_id".to_owned(), trace_id)],
                value,
                timestamp,
            });
        }
    }

    fn render(&self, out: &mut Exposition, name: &str, instance: &str, cause: &str) {
        let bucket = format!("{name}_bucket");
        for ((bound, count), exemplar) in FAILOVER_BUCKETS
            .iter()
            .zip(&self.buckets)
            .zip(&self.exemplars)
        {
            out.sample_with_exemplar(
                &bucket,
                &[
                    ("instance", instance),
                    ("cause", cause),
                    ("le", &bound.to_string()),
                ],
                *count as f64,
                exemplar.as_ref(),
            );
        }
        out.sample_with_exemplar(
            &bucket,
            &[("instance", instance), ("cause", cause), ("le", "+Inf")],
            self.count as f64,
            self.exemplars[FAILOVER_BUCKETS.len()].as_ref(),
        );
        out.sample(
            &format!("{name}_sum"),
            &[("instance", instance), ("cause", cause)],
            self.sum,
        );
        out.sample(
            &format!("{name}_count"),
            &[("instance", instance), ("cause", cause)],
            self.count as f64,
        );
    }
}

fn state_name(state: State) -> &'static str {
    STATES
        .iter()
        .find(|(known, _)| *known == state)
        .map_or("unknown", |(_, name)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative() {
        let mut registry = Registry::default();
        registry.observe_failover("VI_1", "master-down", Duration::from_millis(30), None);
        registry.observe_failover("VI_1", "master-down", Duration::from_millis(3_500), None);
        let text = registry.render(Format::Text);
        for line in [
            "hav_failover_duration_seconds_bucket{instance=\"VI_1\",cause=\"master-down\",le=\"0.025\"} 0",
            "hav_failover_duration_seconds_bucket{instance=\"VI_1\",cause=\"master-down\",le=\"0.05\"} 1",
            "hav_failover_duration_seconds_bucket{instance=\"VI_1\",cause=\"master-down\",le=\"2\"} 1",
            "hav_failover_duration_seconds_bucket{instance=\"VI_1\",cause=\"master-down\",le=\"4\"} 2",
            "hav_failover_duration_seconds_bucket{instance=\"VI_1\",cause=\"master-down\",le=\"+Inf\"} 2",
            "hav_failover_duration_seconds_count{instance=\"VI_1\",cause=\"master-down\"} 2",
            "hav_failover_duration_seconds_sum{instance=\"VI_1\",cause=\"master-down\"} 3.53",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
    }

    #[test]
    fn openmetrics_shows_each_buckets_latest_traced_failover_as_its_exemplar() {
        let mut registry = Registry::default();
        let trace = "4bf92f3577b34da6a3ce929d0e0e4736".to_owned();
        registry.observe_failover(
            "VI_1",
            "master-down",
            Duration::from_millis(30),
            Some(trace),
        );
        registry.observe_failover("VI_1", "master-down", Duration::from_millis(40), None);
        let text = registry.render(Format::OpenMetrics);
        let exemplified: Vec<&str> = text.lines().filter(|l| l.contains(" # {")).collect();
        assert_eq!(exemplified.len(), 1, "{text}");
        assert!(
            exemplified[0].starts_with(
                "hav_failover_duration_seconds_bucket{instance=\"VI_1\",cause=\"master-down\",le=\"0.05\"} 2 # {trace_id=\"4bf92f3577b34da6a3ce929d0e0e4736\"} 0.03 "
            ),
            "{text}"
        );
        assert!(
            text.contains("# TYPE hav_vrrp_transitions counter\n"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
        assert!(!registry.render(Format::Text).contains(" # {"));
    }

    #[test]
    fn notifications_are_counted_by_outcome() {
        let mut registry = Registry::default();
        registry.set_notifications(&[("smtp_alerts_sent", 2), ("smtp_alerts_failed", 1)]);
        let text = registry.render(Format::Text);
        assert!(text.contains("# TYPE hav_notifications_total counter\n"));
        assert!(text.contains("hav_notifications_total{outcome=\"smtp_alerts_sent\"} 2\n"));
        assert!(text.contains("hav_notifications_total{outcome=\"smtp_alerts_failed\"} 1\n"));
    }

    /// Every agent metric the shipped Grafana dashboard queries is one the agent serves.
    #[test]
    fn the_grafana_dashboard_queries_only_metrics_the_agent_serves() {
        let dashboard: serde_json::Value =
            serde_json::from_str(include_str!("../../../deploy/grafana/hav-fleet.json"))
                .expect("the dashboard is JSON");
        let families: Vec<String> = Registry::default()
            .render(Format::Text)
            .lines()
            .filter_map(|line| line.strip_prefix("# TYPE "))
            .filter_map(|rest| rest.split(' ').next())
            .map(str::to_owned)
            .collect();
        let served = |name: &str| {
            families.iter().any(|family| {
                name == family
                    || ["_bucket", "_sum", "_count"]
                        .iter()
                        .any(|suffix| name.strip_suffix(suffix) == Some(family.as_str()))
            })
        };
        let mut queried = 0;
        for panel in dashboard["panels"].as_array().expect("panels") {
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr = target["expr"].as_str().expect("an expression");
                for name in metric_names(expr) {
                    if name.starts_with("hav_coordinator_") {
                        continue;
                    }
                    queried += 1;
                    assert!(
                        served(&name),
                        "{name} (panel {}) is not served",
                        panel["title"]
                    );
                }
            }
        }
        assert!(queried >= 8, "{queried}");
    }

    fn metric_names(expr: &str) -> Vec<String> {
        let mut names = Vec::new();
        let mut rest = expr;
        while let Some(at) = rest.find("hav_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[at + name.len()..];
            names.push(name);
        }
        names
    }

    #[test]
    fn transitions_are_counted_by_state_and_cause() {
        let mut registry = Registry::default();
        registry.count_transition("VI_1", State::Master, "master-down");
        registry.count_transition("VI_1", State::Master, "master-down");
        registry.count_transition("VI_1", State::Backup, "startup");
        let text = registry.render(Format::Text);
        assert!(text.contains(
            "hav_vrrp_transitions_total{instance=\"VI_1\",to=\"master\",cause=\"master-down\"} 2\n"
        ));
        assert!(text.contains(
            "hav_vrrp_transitions_total{instance=\"VI_1\",to=\"backup\",cause=\"startup\"} 1\n"
        ));
        assert!(text.contains("hav_build_info{version=\""));
    }
}
