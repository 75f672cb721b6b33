//! The coordinator's metrics and their exposition (Prometheus text format 0.0.4), served on
//! `GET /metrics` by the shared server of [`hav_proto::metrics::http`].
//!
//! Counters are kept here, by outcome; gauges (connected agents, watchers) and the count of
//! events fanned out are read from the [`Registry`] at scrape time, so they cannot drift from it.
//! Every label value comes from a fixed set (`&'static str`), never from a request, so the
//! number of series is bounded.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use hav_proto::metrics::text::{Exposition, Format};
use hav_proto::v1::ApplyOutcome;

use crate::registry::Registry;

/// How a `PushConfig` ended, as counted in `hav_coordinator_pushes_total{outcome}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PushOutcome {
    /// Every changed node acknowledged its config.
    Applied,
    /// A new version was stored but some node did not apply it (failed, timed out, offline, held).
    Partial,
    /// Nothing differed from the desired state: no new version.
    Unchanged,
    /// A dry run: nothing stored or sent.
    DryRun,
    /// Refused before anything was stored: not allowed, invalid config, or a store failure.
    Rejected,
}

impl PushOutcome {
    pub const ALL: [PushOutcome; 5] = [
        PushOutcome::Applied,
        PushOutcome::Partial,
        PushOutcome::Unchanged,
        PushOutcome::DryRun,
        PushOutcome::Rejected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PushOutcome::Applied => "applied",
            PushOutcome::Partial => "partial",
            PushOutcome::Unchanged => "unchanged",
            PushOutcome::DryRun => "dry_run",
            PushOutcome::Rejected => "rejected",
        }
    }
}

/// The label value of a node's apply outcome.
pub fn apply_outcome_label(outcome: ApplyOutcome) -> &'static str {
    match outcome {
        ApplyOutcome::Applied => "applied",
        ApplyOutcome::Failed => "failed",
        ApplyOutcome::Timeout => "timeout",
        ApplyOutcome::Offline => "offline",
        ApplyOutcome::Held => "held",
        ApplyOutcome::Unchanged => "unchanged",
        ApplyOutcome::DryRun => "dry_run",
        ApplyOutcome::Unspecified => "unspecified",
    }
}

/// Outcomes of a node apply that are shown (as 0) before the first one happens.
const APPLY_OUTCOMES: [&str; 4] = ["applied", "failed", "timeout", "offline"];
/// Outcomes of a drain or undrain: acknowledged, refused by the agent, or not delivered.
pub const DRAIN_OUTCOMES: [&str; 3] = ["ok", "refused", "error"];

/// A counted operation (the metric family it goes to).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Family {
    Pushes,
    NodeApplies,
    Drains,
    Rollouts,
}

impl Family {
    fn name(self) -> &'static str {
        match self {
            Family::Pushes => "hav_coordinator_pushes_total",
            Family::NodeApplies => "hav_coordinator_node_applies_total",
            Family::Drains => "hav_coordinator_drains_total",
            Family::Rollouts => "hav_coordinator_rollouts_total",
        }
    }

    fn help(self) -> &'static str {
        match self {
            Family::Pushes => {
                "PushConfig calls by outcome (applied, partial, unchanged, dry_run, rejected)."
            }
            Family::NodeApplies => "Configs sent to one node, by the node's outcome.",
            Family::Drains => {
                "Drain and undrain commands, by action and outcome (ok, refused, error)."
            }
            Family::Rollouts => "Rollouts finished, by outcome.",
        }
    }
}

/// The coordinator's counters; shared (`Arc`) by the services and the metrics server.
#[derive(Debug)]
pub struct Metrics {
    started: SystemTime,
    /// (family, extra label value, outcome) → count. The extra label is the action of a drain
    /// (`drain`/`undrain`) and empty otherwise.
    counts: Mutex<BTreeMap<(Family, &'static str, &'static str), u64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics {
            started: SystemTime::now(),
            counts: Mutex::new(BTreeMap::new()),
        }
    }

    /// A `PushConfig` call ended.
    pub fn push_finished(&self, outcome: PushOutcome) {
        self.count(Family::Pushes, "", outcome.as_str());
    }

    /// A node answered (or did not answer) the config sent to it.
    pub fn node_applied(&self, outcome: ApplyOutcome) {
        self.count(Family::NodeApplies, "", apply_outcome_label(outcome));
    }

    /// A drain (`undrain` false) or undrain ended with `outcome`, one of [`DRAIN_OUTCOMES`].
    pub fn drain_finished(&self, undrain: bool, outcome: &'static str) {
        let action = if undrain { "undrain" } else { "drain" };
        self.count(Family::Drains, action, outcome);
    }

    /// A rollout ended with `outcome` (a fixed word of the rollout module, e.g. `completed`,
    /// `halted`, `aborted`).
    pub fn rollout_finished(&self, outcome: &'static str) {
        self.count(Family::Rollouts, "", outcome);
    }

    fn count(&self, family: Family, action: &'static str, outcome: &'static str) {
        *self.lock().entry((family, action, outcome)).or_default() += 1;
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, BTreeMap<(Family, &'static str, &'static str), u64>> {
        // Every critical section is one map update: a poisoned lock still holds whole numbers.
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The exposition in `format`, with the registry's live values.
    pub fn render(&self, registry: &Registry, format: Format) -> String {
        let mut out = Exposition::new(format);
        out.header(
            "hav_coordinator_build_info",
            "info",
            "hav-coordinator build (value 1).",
        );
        out.sample(
            "hav_coordinator_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))],
            1.0,
        );
        out.header(
            "hav_coordinator_process_start_time_seconds",
            "gauge",
            "When the coordinator started, in seconds since the Unix epoch.",
        );
        let started = self.started.duration_since(UNIX_EPOCH).unwrap_or_default();
        out.sample(
            "hav_coordinator_process_start_time_seconds",
            &[],
            started.as_secs_f64(),
        );
        out.header(
            "hav_coordinator_connected_agents",
            "gauge",
            "Agents with an open stream.",
        );
        out.sample(
            "hav_coordinator_connected_agents",
            &[],
            registry.connected_count() as f64,
        );
        out.header(
            "hav_coordinator_watchers",
            "gauge",
            "WatchEvents streams open.",
        );
        out.sample("hav_coordinator_watchers", &[], registry.watchers() as f64);
        out.header(
            "hav_coordinator_events_total",
            "counter",
            "Fleet events fanned out to watchers (agent events and presence changes).",
        );
        out.sample(
            "hav_coordinator_events_total",
            &[],
            registry.published() as f64,
        );

        let mut counts = self.lock().clone();
        for outcome in PushOutcome::ALL {
            counts
                .entry((Family::Pushes, "", outcome.as_str()))
                .or_default();
        }
        for outcome in APPLY_OUTCOMES {
            counts
                .entry((Family::NodeApplies, "", outcome))
                .or_default();
        }
        for action in ["drain", "undrain"] {
            for outcome in DRAIN_OUTCOMES {
                counts.entry((Family::Drains, action, outcome)).or_default();
            }
        }
        for family in [
            Family::Pushes,
            Family::NodeApplies,
            Family::Drains,
            Family::Rollouts,
        ] {
            out.header(family.name(), "counter", family.help());
            for ((_, action, outcome), value) in counts.iter().filter(|(key, _)| key.0 == family) {
                let labels: &[(&str, &str)] = if action.is_empty() {
                    &[("outcome", outcome)]
                } else {
                    &[("action", action), ("outcome", outcome)]
                };
                out.sample(family.name(), labels, *value as f64);
            }
        }
        out.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    /// Every coordinator metric the shipped Grafana dashboard queries is one it serves.
    #[test]
    fn the_grafana_dashboard_queries_only_metrics_the_coordinator_serves() {
        let dashboard = include_str!("../../../deploy/grafana/hav-fleet.json");
        let text = Metrics::new().render(&Registry::new(), Format::Text);
        let mut queried = 0;
        let mut rest = dashboard;
        while let Some(at) = rest.find("hav_coordinator_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[at + name.len()..];
            queried += 1;
            assert!(
                text.contains(&format!("# TYPE {name} ")),
                "{name} is not served"
            );
        }
        assert!(queried >= 3, "{queried}");
    }

    #[test]
    fn counters_start_at_zero_and_count_by_outcome() {
        let metrics = Metrics::new();
        let registry = Registry::new();
        let before = metrics.render(&registry, Format::Text);
        assert_eq!(
            value(&before, "hav_coordinator_pushes_total{outcome=\"applied\"}"),
            Some(0.0)
        );
        assert_eq!(
            value(
                &before,
                "hav_coordinator_drains_total{action=\"undrain\",outcome=\"error\"}"
            ),
            Some(0.0)
        );
        assert!(before.contains("# TYPE hav_coordinator_rollouts_total counter\n"));
        assert_eq!(
            value(&before, "hav_coordinator_connected_agents"),
            Some(0.0)
        );

        metrics.push_finished(PushOutcome::Applied);
        metrics.push_finished(PushOutcome::Applied);
        metrics.push_finished(PushOutcome::Rejected);
        metrics.node_applied(ApplyOutcome::Timeout);
        metrics.drain_finished(true, "ok");
        metrics.rollout_finished("completed");
        let after = metrics.render(&registry, Format::Text);
        for (series, expected) in [
            ("hav_coordinator_pushes_total{outcome=\"applied\"}", 2.0),
            ("hav_coordinator_pushes_total{outcome=\"rejected\"}", 1.0),
            (
                "hav_coordinator_node_applies_total{outcome=\"timeout\"}",
                1.0,
            ),
            (
                "hav_coordinator_node_applies_total{outcome=\"applied\"}",
                0.0,
            ),
            (
                "hav_coordinator_drains_total{action=\"undrain\",outcome=\"ok\"}",
                1.0,
            ),
            (
                "hav_coordinator_drains_total{action=\"drain\",outcome=\"ok\"}",
                0.0,
            ),
            ("hav_coordinator_rollouts_total{outcome=\"completed\"}", 1.0),
        ] {
            assert_eq!(
                value(&after, series),
                Some(expected),
                "{series} in\n{after}"
            );
        }
        // Each family has exactly one header.
        assert_eq!(
            after
                .matches("# TYPE hav_coordinator_pushes_total ")
                .count(),
            1
        );
    }

    #[test]
    fn gauges_follow_the_registry() {
        let metrics = Metrics::new();
        let registry = Registry::new();
        let watcher = registry.watcher();
        // An internal subscription (the orchestrator's) is no watcher.
        let _internal = registry.subscribe();
        registry.publish(hav_proto::v1::FleetEvent::default());
        let (_session, _commands) =
            registry.register("lb-1", hav_proto::v1::Hello::default(), String::new());
        let text = metrics.render(&registry, Format::Text);
        assert_eq!(value(&text, "hav_coordinator_connected_agents"), Some(1.0));
        assert_eq!(value(&text, "hav_coordinator_watchers"), Some(1.0));
        // The event, and the presence event of lb-1's session.
        assert_eq!(value(&text, "hav_coordinator_events_total"), Some(2.0));
        drop(watcher);
        let text = metrics.render(&registry, Format::Text);
        assert_eq!(value(&text, "hav_coordinator_watchers"), Some(0.0));
    }
}
