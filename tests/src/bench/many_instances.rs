//! Many instances per node: 255 IPv4 and 255 IPv6 VRRPv3 instances on one interface, for a hav
//! pair and a keepalived pair, each in a fresh [`ScalePair`].
//!
//! Idle cost first ([`idle_costs_each_alone`]): a settled pair of each contender in turn, alone
//! on the host, each node and its receive path on a CPU of its own: the daemon's CPU from
//! schedstat (as [`super::measure_idle`] does), each node's whole CPU from `/proc/stat` (the
//! receive path's softirq work included, which schedstat charges to whatever task it
//! interrupts), and RSS summed over the daemon's processes. Then per repetition: the pair
//! settles (node `a` master of every instance, `b` backup of every one), then `a`'s switch port
//! goes down and the figure is the time from the cut until `b` holds every
//! VIP, read from netlink address notifications in `b`'s namespace. Nothing asserts on timing:
//! the report prints the figures next to the protocol's bound and as hav / keepalived ratios.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use super::scale_pair::{DaemonKind, NODE_A, NODE_B, PairSpec, ScalePair, per_family};
use super::stats::{Spread, ms, ratio};
use super::{
    BenchError, CpuTimes, Timing, can_place_apart, place_apart, random_below, rss_kib,
    sample_windows,
};
use crate::chaos::observe::HolderEvent;

/// Parameters of the benchmark.
#[derive(Debug, Clone)]
pub struct ManyInstancesConfig {
    /// Instances per address family (VRIDs 1 to this).
    pub per_family: u8,
    pub advert_interval: Duration,
    pub master_priority: u8,
    pub backup_priority: u8,
    /// Idle measurement window (zero skips it).
    pub idle_window: Duration,
    /// Upper bound of the random delay before the cut (its phase against the adverts varies).
    pub fault_jitter: Duration,
    /// Limit of every wait (a safety net, not a measurement).
    pub wait: Duration,
}

impl Default for ManyInstancesConfig {
    fn default() -> Self {
        ManyInstancesConfig {
            per_family: 255,
            advert_interval: Duration::from_millis(100),
            master_priority: 150,
            backup_priority: 100,
            idle_window: Duration::from_secs(10),
            fault_jitter: Duration::from_millis(100),
            wait: Duration::from_secs(60),
        }
    }
}

impl ManyInstancesConfig {
    pub fn instances(&self) -> usize {
        usize::from(self.per_family) * 2
    }

    /// The backup's master-down interval plus 50 ms: the bound the takeover of every VIP is
    /// printed next to.
    pub fn bound(&self) -> Duration {
        let timing = Timing {
            version: 3,
            advert_interval: self.advert_interval,
        };
        timing.master_down_interval(self.backup_priority) + Duration::from_millis(50)
    }
}

/// Idle cost of a settled pair.
#[derive(Debug, Clone, Copy)]
pub struct ScaleIdle {
    pub window: Duration,
    /// (master, backup): % of one core, from /proc/PID/task/*/schedstat.
    pub cpu_percent: (f64, f64),
    /// (master, backup): VmRSS summed over the daemon's processes, KiB.
    pub rss_kib: (u64, u64),
    pub processes: (usize, usize),
    /// Whether each node and its receive path ran on a CPU of its own ([`place_apart`]).
    pub apart: bool,
    /// (master, backup): % of the node's CPU that was busy, from `/proc/stat` ([`CpuTimes`]);
    /// only with the nodes apart.
    pub node_cpu_percent: Option<(f64, f64)>,
}

/// How the backup took every VIP over after the cut.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Takeover {
    /// From the cut to the first VIP on the backup.
    pub first: Option<Duration>,
    /// From the cut to the moment the backup held every VIP: the arrival of the last one.
    pub all_held: Option<Duration>,
    /// The VIP (index) whose arrival completed the set.
    pub last_vip: Option<usize>,
    /// VIPs the backup did not hold when the record was taken.
    pub missing: usize,
    /// Arrivals found by a periodic dump rather than an event (the kernel dropped it): their
    /// time is late by up to two dump periods.
    pub reconciled: usize,
}

/// Reads [`Takeover`] from the holder record: replays `events` in time order, `node`'s set of
/// held VIPs starting from what it held at `fault`, until it holds all `vips`.
pub fn takeover(events: &[HolderEvent], fault: Instant, node: usize, vips: usize) -> Takeover {
    let mut ordered: Vec<&HolderEvent> = events.iter().filter(|e| e.node == node).collect();
    ordered.sort_by_key(|e| e.at);
    let mut held = BTreeSet::new();
    let mut first = None;
    let mut arrivals: BTreeMap<usize, bool> = BTreeMap::new();
    let mut completed = None;
    for event in ordered {
        let changed = if event.present {
            held.insert(event.vip)
        } else {
            held.remove(&event.vip)
        };
        if event.at < fault || !changed {
            continue;
        }
        if event.present {
            first.get_or_insert(event.at - fault);
            arrivals.entry(event.vip).or_insert(event.reconciled);
            if held.len() == vips && completed.is_none() {
                completed = Some((event.at - fault, event.vip));
            }
        }
    }
    Takeover {
        first,
        all_held: completed.map(|(at, _)| at),
        last_vip: completed.map(|(_, vip)| vip),
        missing: vips.saturating_sub(held.len()),
        reconciled: arrivals.values().filter(|r| **r).count(),
    }
}

/// One repetition of one contender.
#[derive(Debug, Clone)]
pub struct ManyInstancesRun {
    pub kind: DaemonKind,
    /// The idle cost of this contender, on its first repetition ([`idle_costs_each_alone`]).
    pub idle: Option<ScaleIdle>,
    pub takeover: Takeover,
    /// The name of the instance of [`Takeover::last_vip`].
    pub last_instance: Option<String>,
}

/// The pair of `kind` that `config` describes.
fn pair_spec(kind: DaemonKind, config: &ManyInstancesConfig) -> PairSpec {
    PairSpec {
        kind,
        advert_interval: config.advert_interval,
        master_priority: config.master_priority,
        backup_priority: config.backup_priority,
        httpd: false,
        wait: config.wait,
    }
}

/// One repetition: a fresh pair and the cut (its idle cost is measured apart:
/// [`idle_costs_each_alone`]).
pub fn run_once(
    kind: DaemonKind,
    config: &ManyInstancesConfig,
) -> Result<ManyInstancesRun, BenchError> {
    let pair = ScalePair::start(pair_spec(kind, config), |_| per_family(config.per_family))?;
    let result = measure(&pair, config);
    if result.is_err() {
        pair.keep_logs();
    }
    result
}

fn measure(pair: &ScalePair, config: &ManyInstancesConfig) -> Result<ManyInstancesRun, BenchError> {
    // Phase randomisation, not a synchronisation.
    std::thread::sleep(random_below(config.fault_jitter)?);
    let fault = Instant::now();
    pair.cut_master_link()?;
    pair.wait_holders("node b to hold every VIP", |h| h.contains(&NODE_B))?;
    let events = pair.recorder().snapshot().holder_events;
    let takeover = takeover(&events, fault, NODE_B, pair.instances.len());
    let last_instance = (takeover.last_vip)
        .and_then(|vip| pair.instances.get(vip))
        .map(|i| i.name.clone());
    // Node `a` is cut off; what it still holds is its own business, but say so.
    let stale_on_a = (0..pair.instances.len())
        .filter(|&vip| pair.recorder().holders(vip).contains(&NODE_A))
        .count();
    if stale_on_a > 0 {
        eprintln!(
            "{}: the cut-off master still holds {stale_on_a} VIPs",
            pair.spec.kind.label()
        );
    }
    Ok(ManyInstancesRun {
        kind: pair.spec.kind,
        idle: None,
        takeover,
        last_instance,
    })
}

/// The idle cost of `pair` over `window`, each node and its receive path on a CPU of its own
/// where the host has two (then each node's CPU is measured whole as well: nothing else of
/// the benchmark's may run then, but its idle observers).
fn idle_cost(pair: &ScalePair, window: Duration) -> Result<ScaleIdle, BenchError> {
    let pids = [(pair.a.pids(), pair.b.pids())];
    let (a, b) = &pids[0];
    let apart = can_place_apart();
    if apart {
        place_apart(&pair.pair, a, b)?;
    }
    let cpus = || Ok::<_, BenchError>([CpuTimes::read(0)?, CpuTimes::read(1)?]);
    let before = apart.then(cpus).transpose()?;
    let windows = sample_windows(&pids, window, 1);
    let after = apart.then(cpus).transpose()?;
    let measured = (windows.first().and_then(|w| w.first()))
        .ok_or_else(|| BenchError::Io("no idle window was measured".into()))?;
    Ok(ScaleIdle {
        window,
        cpu_percent: measured.cpu_percent_schedstat,
        rss_kib: (rss_kib(a), rss_kib(b)),
        processes: (a.len(), b.len()),
        apart,
        node_cpu_percent: before
            .zip(after)
            .map(|([a0, b0], [a1, b1])| (a0.busy_percent_until(&a1), b0.busy_percent_until(&b1))),
    })
}

/// The idle cost of a settled pair of every kind of `kinds`, one after the other, each alone
/// on the host: a node's whole CPU is its own only while no other contender runs.
pub fn idle_costs_each_alone(
    kinds: &[DaemonKind],
    config: &ManyInstancesConfig,
) -> Result<Vec<(DaemonKind, ScaleIdle)>, BenchError> {
    let mut costs = Vec::new();
    for &kind in kinds {
        let pair = ScalePair::start(pair_spec(kind, config), |_| per_family(config.per_family))?;
        costs.push((kind, idle_cost(&pair, config.idle_window)?));
    }
    Ok(costs)
}

/// The report: idle cost and takeover of every VIP per contender, then hav / keepalived.
pub fn render(runs: &[ManyInstancesRun], config: &ManyInstancesConfig) -> String {
    let mut out = String::new();
    let instances = config.instances();
    let _ = writeln!(
        out,
        "\n## {instances} VRRPv3 instances on one interface ({} IPv4 + {} IPv6, {} ms adverts)",
        config.per_family,
        config.per_family,
        config.advert_interval.as_millis()
    );
    if runs
        .iter()
        .find_map(|r| r.idle)
        .is_some_and(|idle| idle.apart)
    {
        let _ = writeln!(
            out,
            "Idle: each contender alone, each node and its receive path on a CPU of its own, as on \
             two hosts; daemon CPU from schedstat (softirq work is charged to whatever task it \
             interrupts), node CPU the node's whole CPU from /proc/stat (its receive path's \
             softirq work wherever it ran)."
        );
    }
    let _ = writeln!(
        out,
        "| contender | idle CPU % master | idle CPU % backup | node CPU % master | node CPU % backup | RSS KiB master (procs) | RSS KiB backup (procs) | runs | all {instances} held: median | worst | first VIP (median) | bound MDI + 50 ms | last instance (worst run) | VIPs missing / late events |"
    );
    let _ = writeln!(
        out,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    let mut rows: Vec<(&'static str, Option<ScaleIdle>, Option<Spread>)> = Vec::new();
    for kind in distinct_kinds(runs) {
        let mine: Vec<&ManyInstancesRun> = runs.iter().filter(|r| r.kind == kind).collect();
        let idle = mine.iter().find_map(|r| r.idle);
        let held: Vec<Duration> = mine.iter().filter_map(|r| r.takeover.all_held).collect();
        let firsts: Vec<Duration> = mine.iter().filter_map(|r| r.takeover.first).collect();
        let spread = Spread::of(&held);
        let worst = (mine.iter())
            .filter(|r| r.takeover.all_held.is_some())
            .max_by_key(|r| r.takeover.all_held);
        let missing: usize = mine.iter().map(|r| r.takeover.missing).sum();
        let late: usize = mine.iter().map(|r| r.takeover.reconciled).sum();
        let (cpu, rss) = match idle {
            Some(i) => (
                [
                    format!("{:.2}", i.cpu_percent.0),
                    format!("{:.2}", i.cpu_percent.1),
                ],
                [
                    format!("{} ({})", i.rss_kib.0, i.processes.0),
                    format!("{} ({})", i.rss_kib.1, i.processes.1),
                ],
            ),
            None => (["–".into(), "–".into()], ["–".into(), "–".into()]),
        };
        let node = match idle.and_then(|i| i.node_cpu_percent) {
            Some((master, backup)) => [format!("{master:.2}"), format!("{backup:.2}")],
            None => ["–".into(), "–".into()],
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {}/{} | {} | {} | {} | {} | {} | {missing} / {late} |",
            kind.label(),
            cpu[0],
            cpu[1],
            node[0],
            node[1],
            rss[0],
            rss[1],
            held.len(),
            mine.len(),
            ms(spread.map(|s| s.median)),
            ms(spread.map(|s| s.worst)),
            ms(Spread::of(&firsts).map(|s| s.median)),
            ms(Some(config.bound())),
            worst
                .and_then(|r| r.last_instance.as_deref())
                .unwrap_or("–"),
        );
        rows.push((kind.label(), idle, spread));
    }
    let find = |label: &str| rows.iter().find(|(l, _, _)| *l == label);
    if let (Some((_, hav_idle, hav)), Some((_, ka_idle, ka))) = (find("hav"), find("keepalived")) {
        let (cpu, rss) = match (hav_idle, ka_idle) {
            (Some(h), Some(k)) => (
                [
                    ratio(h.cpu_percent.0, k.cpu_percent.0),
                    ratio(h.cpu_percent.1, k.cpu_percent.1),
                ],
                [
                    ratio(h.rss_kib.0 as f64, k.rss_kib.0 as f64),
                    ratio(h.rss_kib.1 as f64, k.rss_kib.1 as f64),
                ],
            ),
            _ => (["–".into(), "–".into()], ["–".into(), "–".into()]),
        };
        let node = match (
            hav_idle.and_then(|i| i.node_cpu_percent),
            ka_idle.and_then(|i| i.node_cpu_percent),
        ) {
            (Some(h), Some(k)) => [ratio(h.0, k.0), ratio(h.1, k.1)],
            _ => ["–".into(), "–".into()],
        };
        let held = match (hav, ka) {
            (Some(h), Some(k)) => [
                ratio(h.median.as_secs_f64(), k.median.as_secs_f64()),
                ratio(h.worst.as_secs_f64(), k.worst.as_secs_f64()),
            ],
            _ => ["–".into(), "–".into()],
        };
        let _ = writeln!(
            out,
            "| hav / keepalived | {} | {} | {} | {} | {} | {} | | {} | {} | | | | |",
            cpu[0], cpu[1], node[0], node[1], rss[0], rss[1], held[0], held[1]
        );
    }
    out
}

/// The contenders of `runs`, in the order they first appear.
pub fn distinct_kinds<'a>(runs: impl IntoIterator<Item = &'a ManyInstancesRun>) -> Vec<DaemonKind> {
    let mut kinds = Vec::new();
    for run in runs {
        if !kinds.contains(&run.kind) {
            kinds.push(run.kind);
        }
    }
    kinds
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::bench::scale_pair::holder_event as event;

    #[test]
    fn the_takeover_ends_when_the_backup_holds_every_vip() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let events = [
            event(t0, 0, NODE_A, true),
            event(t0, 1, NODE_A, true),
            event(t0, 2, NODE_A, true),
            // The fault at t0 + 100 ms; the backup takes VIP 1, then 0, drops 0, then 2 and 0.
            event(t0 + ms(460), 1, NODE_B, true),
            event(t0 + ms(470), 0, NODE_B, true),
            event(t0 + ms(480), 0, NODE_B, false),
            event(t0 + ms(490), 2, NODE_B, true),
            HolderEvent {
                reconciled: true,
                ..event(t0 + ms(500), 0, NODE_B, true)
            },
            event(t0 + ms(600), 1, NODE_A, false),
        ];
        let takeover = takeover(&events, t0 + ms(100), NODE_B, 3);
        assert_eq!(
            takeover,
            Takeover {
                first: Some(ms(360)),
                all_held: Some(ms(400)),
                last_vip: Some(0),
                missing: 0,
                // VIP 0 first arrived by an event.
                reconciled: 0,
            }
        );
    }

    #[test]
    fn vips_held_before_the_fault_count_and_missing_ones_are_reported() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let events = [
            event(t0, 0, NODE_B, true),
            HolderEvent {
                reconciled: true,
                ..event(t0 + ms(400), 1, NODE_B, true)
            },
        ];
        let partial = takeover(&events, t0 + ms(100), NODE_B, 3);
        assert_eq!(partial.first, Some(ms(300)));
        assert_eq!(
            (partial.all_held, partial.missing, partial.reconciled),
            (None, 1, 1)
        );
        let complete = takeover(&events, t0 + ms(100), NODE_B, 2);
        assert_eq!(
            (complete.all_held, complete.last_vip),
            (Some(ms(300)), Some(1))
        );
    }

    #[test]
    fn the_bound_is_the_master_down_interval_plus_fifty_milliseconds() {
        let config = ManyInstancesConfig::default();
        // 3 × 100 ms + (256 − 100) × 100 ms / 256 + 50 ms
        assert_eq!(
            config.bound(),
            Duration::from_millis(350) + Duration::from_millis(100) * 156 / 256
        );
        assert_eq!(config.instances(), 510);
    }
}
