//! 10 ms adverts under CPU load: pairs of each contender (hav, hav with `max_auto_priority`,
//! keepalived), one VRRPv3 instance each, run side by side while `stress-ng --cpu` loads every
//! core.
//!
//! First a soak with no fault: every change of a VIP's holders is recorded from netlink address
//! notifications in both nodes' namespaces, and a false failover is the backup taking a VIP or
//! two nodes holding one ([`false_failovers`]). Then, still under load, node `a`'s switch port
//! goes down `cuts` times per pair (one pair at a time, the link restored and the pair settled
//! in between): the holder figure is the time from the cut to the VIP on `b`, the client figure
//! the time to the first answer from `b` of a client opening a new connection every few
//! milliseconds. Nothing asserts on timing; the report prints medians, p90 and the worst.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::scale_pair::{DaemonKind, NODE_A, NODE_B, PairSpec, ScaleInstance, ScalePair};
use super::stats::{Spread, ms, ratio};
use super::{BenchError, Timing, random_below};
use crate::chaos::observe::{BACKSTOP, HolderEvent, Recorder};
use crate::netns::{NsProcess, SpawnSpec};
use crate::topology::Lab;

/// Parameters of the benchmark.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    pub advert_interval: Duration,
    /// The fault-free window in which false failovers are counted.
    pub soak: Duration,
    /// Link cuts per contender after the soak.
    pub cuts: usize,
    /// `stress-ng --cpu` workers (one per core loads every core).
    pub cpu_workers: usize,
    pub probe_interval: Duration,
    pub fault_jitter: Duration,
    pub master_priority: u8,
    pub backup_priority: u8,
    /// Limit of every wait (a safety net, not a measurement).
    pub wait: Duration,
}

impl Default for LoadedConfig {
    fn default() -> Self {
        LoadedConfig {
            advert_interval: Duration::from_millis(10),
            soak: Duration::from_secs(600),
            cuts: 20,
            cpu_workers: 2,
            probe_interval: Duration::from_millis(2),
            fault_jitter: Duration::from_millis(100),
            master_priority: 150,
            backup_priority: 100,
            wait: Duration::from_secs(30),
        }
    }
}

impl LoadedConfig {
    pub fn master_down_interval(&self) -> Duration {
        let timing = Timing {
            version: 3,
            advert_interval: self.advert_interval,
        };
        timing.master_down_interval(self.backup_priority)
    }
}

/// What a fault-free window showed for one pair.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FalseFailovers {
    /// False failovers: the backup coming to hold a VIP, plus spans with two holders that
    /// began otherwise (the master taking a VIP back that the backup holds, or one open when
    /// the window began).
    pub total: usize,
    /// Times the backup came to hold a VIP.
    pub takeovers: usize,
    /// Spans with two holders of one VIP that began in (or were open at the start of) the
    /// window, whoever began them.
    pub dual_holders: usize,
    /// Their total length within the window.
    pub dual_holder_time: Duration,
}

/// Counts [`FalseFailovers`] in `[from, to]` from the holder record: `events` are replayed in
/// time order from the start, so the holders at `from` are known.
pub fn false_failovers(
    events: &[HolderEvent],
    backup: usize,
    from: Instant,
    to: Instant,
) -> FalseFailovers {
    let mut ordered: Vec<&HolderEvent> = events.iter().collect();
    ordered.sort_by_key(|e| e.at);
    let mut holders: BTreeMap<usize, BTreeSet<usize>> = BTreeMap::new();
    let mut dual_since: BTreeMap<usize, Instant> = BTreeMap::new();
    let mut counted = FalseFailovers::default();
    let overlap =
        |start: Instant, end: Instant| end.min(to).saturating_duration_since(start.max(from));
    for event in ordered.into_iter().filter(|e| e.at <= to) {
        let set = holders.entry(event.vip).or_default();
        let changed = if event.present {
            set.insert(event.node)
        } else {
            set.remove(&event.node)
        };
        if !changed {
            continue;
        }
        let in_window = event.at >= from;
        let takeover = event.present && event.node == backup;
        if takeover && in_window {
            counted.takeovers += 1;
            counted.total += 1;
        }
        match (set.len() >= 2, dual_since.get(&event.vip).copied()) {
            (true, None) => {
                dual_since.insert(event.vip, event.at);
                if in_window {
                    counted.dual_holders += 1;
                    counted.total += usize::from(!takeover);
                }
            }
            (false, Some(since)) => {
                dual_since.remove(&event.vip);
                if since < from && in_window {
                    counted.dual_holders += 1;
                    counted.total += 1;
                }
                counted.dual_holder_time += overlap(since, event.at);
            }
            _ => {}
        }
    }
    for since in dual_since.into_values() {
        if since < from {
            counted.dual_holders += 1;
            counted.total += 1;
        }
        counted.dual_holder_time += overlap(since, to);
    }
    counted
}

/// Everything measured for one contender.
#[derive(Debug, Clone)]
pub struct LoadedResult {
    pub kind: DaemonKind,
    pub soak: Duration,
    pub false_failovers: FalseFailovers,
    /// The transitions both nodes logged during the soak (each with its cause, for hav).
    pub soak_transitions: Vec<String>,
    /// hav's `max_auto_priority` raises (its "now SCHED_RR" lines), over the whole run.
    pub priority_raises: Vec<String>,
    /// Per cut: from the cut to the VIP on the backup.
    pub holder: Vec<Duration>,
    /// Per cut: from the cut to the client's first answer from the backup (`None`: none came).
    pub client: Vec<Option<Duration>>,
    /// Cuts that did not complete (the error).
    pub failed_cuts: Vec<String>,
}

/// `stress-ng --cpu N` in a lab host; stopped with SIGTERM (it stops its workers) on drop, and
/// its own `--timeout` ends it should this process die first.
struct CpuLoad {
    process: NsProcess,
}

impl CpuLoad {
    fn start(lab: &Lab, host: &str, workers: usize, limit: Duration) -> Result<Self, BenchError> {
        let spec = SpawnSpec::new("stress-ng", "/usr/bin/stress-ng").args([
            "--cpu".to_owned(),
            workers.to_string(),
            "--timeout".to_owned(),
            format!("{}s", limit.as_secs().max(1)),
        ]);
        Ok(CpuLoad {
            process: lab.spawn(host, spec)?,
        })
    }
}

impl Drop for CpuLoad {
    fn drop(&mut self) {
        let _ = self.process.terminate(Duration::from_secs(5));
    }
}

/// Runs the soak and the cuts for `kinds` side by side; see the module documentation.
pub fn run(kinds: &[DaemonKind], config: &LoadedConfig) -> Result<Vec<LoadedResult>, BenchError> {
    let mut pairs = Vec::new();
    for &kind in kinds {
        let spec = PairSpec {
            kind,
            advert_interval: config.advert_interval,
            master_priority: config.master_priority,
            backup_priority: config.backup_priority,
            httpd: true,
            wait: config.wait,
        };
        pairs.push(ScalePair::start(spec, |pair| {
            vec![ScaleInstance {
                name: "VI_1".into(),
                vrid: 51,
                vip: IpAddr::V4(pair.vip4),
                prefix_len: 24,
            }]
        })?);
    }
    let Some(first) = pairs.first() else {
        return Ok(Vec::new());
    };
    // Ends by itself a minute after the longest the run can take, should the drop not run.
    let limit = config.soak + (config.wait * 3) * (config.cuts * pairs.len()) as u32;
    let load = CpuLoad::start(&first.pair.lab, "client", config.cpu_workers, limit)?;

    let log_offsets: Vec<(usize, usize)> = (pairs.iter_mut())
        .map(|p| (p.a.log().len(), p.b.log().len()))
        .collect();
    let soak_start = Instant::now();
    eprintln!(
        "soak: {} pairs side by side for {:?} under stress-ng --cpu {}",
        pairs.len(),
        config.soak,
        config.cpu_workers
    );
    // The soak window itself: a fixed span of fault-free operation, not a synchronisation.
    std::thread::sleep(config.soak);
    let soak_end = Instant::now();

    let mut results = Vec::new();
    for (pair, (offset_a, offset_b)) in pairs.iter_mut().zip(log_offsets) {
        let events = pair.recorder().snapshot().holder_events;
        let counted = false_failovers(&events, NODE_B, soak_start, soak_end);
        let mut soak_transitions = transitions(pair.a.log().get(offset_a..).unwrap_or(""), "a");
        soak_transitions.extend(transitions(pair.b.log().get(offset_b..).unwrap_or(""), "b"));
        if counted.total > 0 {
            pair.keep_logs();
        }
        results.push(LoadedResult {
            kind: pair.spec.kind,
            soak: soak_end - soak_start,
            false_failovers: counted,
            soak_transitions,
            priority_raises: Vec::new(),
            holder: Vec::new(),
            client: Vec::new(),
            failed_cuts: Vec::new(),
        });
    }
    for (pair, result) in pairs.iter_mut().zip(results.iter_mut()) {
        cuts(pair, config, result)?;
        for (node, daemon) in [("a", &mut pair.a), ("b", &mut pair.b)] {
            let log = daemon.log();
            let raises = log.lines().filter(|l| l.contains("now SCHED_RR"));
            result
                .priority_raises
                .extend(raises.map(|l| format!("{node}: {}", l.trim())));
        }
    }
    drop(load);
    Ok(results)
}

/// The transition lines of a daemon's log: hav's `NAME: FROM -> TO: CAUSE` (without the
/// structured fields that repeat it), keepalived's `(NAME) Entering STATE`.
fn transitions(log: &str, node: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains(" -> ") || l.contains("Entering "))
        .map(|l| {
            let message = l.split(" instance=").next().unwrap_or(l);
            format!("{node}: {}", message.trim())
        })
        .collect()
}

/// How many transition lines of a soak the report shows per contender.
const TRANSITIONS_SHOWN: usize = 12;

/// The link cuts of one pair, with the client probing its VIP.
fn cuts(
    pair: &mut ScalePair,
    config: &LoadedConfig,
    result: &mut LoadedResult,
) -> Result<(), BenchError> {
    pair.start_probing(
        SocketAddr::new(IpAddr::V4(pair.pair.vip4), 8080),
        config.probe_interval,
    )?;
    let recorder = pair.recorder().clone();
    wait_answer(&recorder, NODE_A, Instant::now(), config.wait)?;
    for cut in 0..config.cuts {
        match cut_once(pair, &recorder, config) {
            Ok((holder, client)) => {
                eprintln!(
                    "{} cut #{cut}: VIP on the backup after {}, client answered after {}",
                    pair.spec.kind.label(),
                    ms(Some(holder)),
                    ms(client)
                );
                result.holder.push(holder);
                result.client.push(client);
            }
            Err(e) => {
                eprintln!("{} cut #{cut}: FAILED: {e}", pair.spec.kind.label());
                pair.keep_logs();
                result.failed_cuts.push(e.to_string());
                // The pair may be anywhere now: no further cut would measure the same thing.
                break;
            }
        }
    }
    pair.stop_probing();
    Ok(())
}

fn cut_once(
    pair: &ScalePair,
    recorder: &Recorder,
    config: &LoadedConfig,
) -> Result<(Duration, Option<Duration>), BenchError> {
    // Phase randomisation, not a synchronisation.
    std::thread::sleep(random_below(config.fault_jitter)?);
    let fault = Instant::now();
    pair.cut_master_link()?;
    pair.wait_holders("the backup to hold the VIP", |h| h.contains(&NODE_B))?;
    let client = wait_answer(recorder, NODE_B, fault, config.wait).ok();
    let events = recorder.snapshot().holder_events;
    let holder = (events.iter())
        .find(|e| e.node == NODE_B && e.present && e.at >= fault)
        .map(|e| e.at - fault)
        .ok_or_else(|| BenchError::Io("no arrival of the VIP on the backup recorded".into()))?;
    let restored = Instant::now();
    pair.restore_master_link()?;
    pair.wait_holders("node a alone to hold the VIP again", |h| {
        h.len() == 1 && h.contains(&NODE_A)
    })?;
    wait_answer(recorder, NODE_A, restored, config.wait)?;
    Ok((holder, client.map(|at| at - fault)))
}

/// Waits until the client's answer to the first VIP came from `node` after `since`; when.
fn wait_answer(
    recorder: &Recorder,
    node: usize,
    since: Instant,
    timeout: Duration,
) -> Result<Instant, BenchError> {
    let deadline = Instant::now() + timeout;
    loop {
        let generation = recorder.generation();
        let answered = (recorder.snapshot().answer_changes.iter())
            .find(|c| c.vip == 0 && c.to == node && c.at >= since)
            .map(|c| c.at);
        if let Some(at) = answered {
            return Ok(at);
        }
        if recorder
            .last_answer(0)
            .is_some_and(|(n, at)| n == node && at >= since)
        {
            // Answering already before `since` and still: no change to wait for.
            return Ok(since);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(BenchError::Io(format!(
                "timed out after {timeout:?} waiting for the client to be answered by node {node}"
            )));
        }
        recorder.wait_change(generation, left.min(BACKSTOP));
    }
}

/// The report: false failovers of the soak, then the cuts, a row per contender.
pub fn render(results: &[LoadedResult], config: &LoadedConfig) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n## {} ms VRRPv3 adverts under stress-ng --cpu {} (pairs side by side)",
        config.advert_interval.as_millis(),
        config.cpu_workers
    );
    let _ = writeln!(
        out,
        "| contender | soak | false failovers (backup took the VIP / two holders) | two holders, total | cuts | holder median | holder p90 | holder worst | client median | client p90 | client worst | MDI | raised to SCHED_RR |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in results {
        let holder = Spread::of(&r.holder);
        let answered: Vec<Duration> = r.client.iter().flatten().copied().collect();
        let client = Spread::of(&answered);
        let raised = if r.kind.is_hav() {
            r.priority_raises.len().to_string()
        } else {
            "n/a".into()
        };
        let _ = writeln!(
            out,
            "| {} | {:.0} s | {} ({} / {}) | {} | {}/{} | {} | {} | {} | {} | {} | {} | {} | {raised} |",
            r.kind.label(),
            r.soak.as_secs_f64(),
            r.false_failovers.total,
            r.false_failovers.takeovers,
            r.false_failovers.dual_holders,
            ms(Some(r.false_failovers.dual_holder_time)),
            r.holder.len(),
            config.cuts,
            ms(holder.map(|s| s.median)),
            ms(holder.map(|s| s.p90)),
            ms(holder.map(|s| s.worst)),
            ms(client.map(|s| s.median)),
            ms(client.map(|s| s.p90)),
            ms(client.map(|s| s.worst)),
            ms(Some(config.master_down_interval())),
        );
    }
    let find = |kind: DaemonKind| results.iter().find(|r| r.kind == kind);
    if let (Some(hav), Some(ka)) = (find(DaemonKind::Hav), find(DaemonKind::Keepalived)) {
        let median_ratio = |h: &[Duration], k: &[Duration]| match (Spread::of(h), Spread::of(k)) {
            (Some(h), Some(k)) => ratio(h.median.as_secs_f64(), k.median.as_secs_f64()),
            _ => "–".into(),
        };
        let answered = |r: &LoadedResult| r.client.iter().flatten().copied().collect::<Vec<_>>();
        let _ = writeln!(
            out,
            "| hav / keepalived (medians) | | | | | {} | | | {} | | | | |",
            median_ratio(&hav.holder, &ka.holder),
            median_ratio(&answered(hav), &answered(ka)),
        );
    }
    let _ = writeln!(
        out,
        "\nhav's target: no false failover, and a median of at most 40 ms from the cut to the VIP on the backup."
    );
    for r in results {
        if r.false_failovers.total > 0 || !r.failed_cuts.is_empty() {
            let _ = writeln!(out, "\n{} during the soak:", r.kind.label());
            for line in r.soak_transitions.iter().take(TRANSITIONS_SHOWN) {
                let _ = writeln!(out, "    {line}");
            }
            if let Some(more) = r.soak_transitions.len().checked_sub(TRANSITIONS_SHOWN)
                && more > 0
            {
                let _ = writeln!(out, "    … and {more} more (the daemons' logs are kept)");
            }
            for failure in &r.failed_cuts {
                let _ = writeln!(out, "    cut failed: {failure}");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::bench::scale_pair::holder_event;

    /// A change of the holders of the one VIP of a loaded pair.
    fn event(at: Instant, node: usize, present: bool) -> HolderEvent {
        holder_event(at, 0, node, present)
    }

    #[test]
    fn a_quiet_soak_has_no_false_failover() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let events = [event(t0, NODE_A, true)];
        let counted = false_failovers(&events, NODE_B, t0 + ms(10), t0 + ms(1000));
        assert_eq!(counted, FalseFailovers::default());
    }

    #[test]
    fn a_backup_taking_the_vip_and_two_holders_are_counted_in_the_window_only() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let events = [
            event(t0, NODE_A, true),
            // Before the window: the start-up's own election, not counted.
            event(t0 + ms(5), NODE_B, true),
            event(t0 + ms(8), NODE_B, false),
            // In the window: the backup takes the VIP while the master keeps it for 30 ms …
            event(t0 + ms(100), NODE_B, true),
            event(t0 + ms(130), NODE_B, false),
            // … and once more, the master letting go (a real failover with no fault).
            event(t0 + ms(500), NODE_B, true),
            event(t0 + ms(510), NODE_A, false),
            event(t0 + ms(520), NODE_A, true),
            event(t0 + ms(525), NODE_B, false),
        ];
        let counted = false_failovers(&events, NODE_B, t0 + ms(50), t0 + ms(1000));
        assert_eq!(
            counted,
            FalseFailovers {
                takeovers: 2,
                dual_holders: 3,
                dual_holder_time: ms(30 + 10 + 5),
                total: 3,
            }
        );
    }

    #[test]
    fn two_holders_across_the_window_edges_count_only_their_part_inside() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let events = [
            event(t0, NODE_A, true),
            event(t0 + ms(10), NODE_B, true),
            event(t0 + ms(200), NODE_B, false),
            event(t0 + ms(900), NODE_B, true),
        ];
        let counted = false_failovers(&events, NODE_B, t0 + ms(100), t0 + ms(1000));
        assert_eq!(counted.takeovers, 1);
        assert_eq!(counted.dual_holders, 2);
        // The span open at the start, then the backup's takeover at 900 ms.
        assert_eq!(counted.total, 2);
        assert_eq!(counted.dual_holder_time, ms(100 + 100));
    }

    #[test]
    fn transitions_are_taken_from_both_daemons_log_formats() {
        let log = "2026-12-03T06:00:00Z  INFO hav_agent: VI_1: Backup -> Master: master-down timer instance=VI_1 from=Backup\n\
                   2026-12-03T06:00:01Z  INFO hav_agent: status published\n\
                   Thu Dec  3 06:00:02 2026: (VI_1) Entering MASTER STATE\n";
        assert_eq!(
            transitions(log, "b"),
            vec![
                "b: 2026-12-03T06:00:00Z  INFO hav_agent: VI_1: Backup -> Master: master-down timer",
                "b: Thu Dec  3 06:00:02 2026: (VI_1) Entering MASTER STATE",
            ]
        );
    }
}
