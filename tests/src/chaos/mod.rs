//! The chaos soak: a fleet of real VRRP daemons in network namespaces, faults from a seeded
//! schedule, invariants judged from what the client, the kernel and the process table showed.
//!
//! Guarantees: the schedule is a pure function of (seed, duration, pairs, fault kinds) and
//! `--seed` replays it exactly ([`schedule`]); a pair takes one fault at a time and the next only
//! once the previous has settled, fleet-wide faults (CPU) run alone; every wait has a deadline;
//! a pair that does not settle is restarted (a repair) and, if that fails too, retired, so one
//! defect does not end the soak. Everything the run creates (namespaces, tmpfs mounts, nftables
//! tables inside node namespaces, processes) goes on drop, on error, on panic and, in the
//! binary, on Ctrl-C; mounts and namespaces of a run that was killed are swept by the next one.
//!
//! - [`schedule`]: the seeded fault schedule and the fault kinds.
//! - [`cluster`]: the fleet (pairs, client, tracked processes, state-dir tmpfs) and the settle
//!   check.
//! - [`faults`]: injecting and clearing each fault kind.
//! - [`observe`]: the client prober, VIP holders from netlink, daemon exits from pidfds.
//! - [`invariants`]: the judgement (pure).
//! - [`report`]: the tables.

pub mod cluster;
pub mod faults;
pub mod invariants;
pub mod observe;
pub mod report;
pub mod schedule;

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cluster::{Cluster, ClusterSpec, Meta, Pair, pair_health, wait_settled};
use faults::{Ctx, FaultLog};
use invariants::{Bounds, FaultRecord, FaultRun, Judgement, RepairRun, Violation, ViolationKind};
use schedule::{FaultEvent, FaultKind, Implementation, Schedule, Scope};

/// Errors that end a soak before it could judge anything.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChaosError {
    #[error(transparent)]
    Netns(#[from] crate::netns::NetnsError),
    #[error(transparent)]
    Agent(#[from] crate::agent::AgentError),
    #[error(transparent)]
    Keepalived(#[from] crate::keepalived::KeepalivedError),
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("{0}")]
    Setup(String),
    #[error("the fleet did not settle before the first fault: {problems}; logs in {log_dir}")]
    NotSettled { problems: String, log_dir: String },
    #[error("interrupted")]
    Interrupted,
}

impl ChaosError {
    pub(crate) fn io(what: impl Into<String>, source: io::Error) -> Self {
        ChaosError::Io {
            what: what.into(),
            source,
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct ChaosConfig {
    pub seed: u64,
    /// The span of the fault schedule.
    pub duration: Duration,
    /// Pairs per implementation.
    pub pairs: usize,
    pub kinds: Vec<FaultKind>,
    /// Run the same schedule against keepalived pairs too.
    pub keepalived: bool,
    pub probe_interval: Duration,
    /// How long a pair may take to settle after a fault is cleared.
    pub settle_timeout: Duration,
    /// How long a settled pair must stay settled to count.
    pub quiet: Duration,
    /// Faults not started within this long after the planned end are skipped.
    pub overrun: Duration,
    /// Print a line per fault to stderr as the run goes.
    pub progress: bool,
    /// Planned faults allow no failed probe at all, not even a handover reset.
    pub strict_planned: bool,
}

impl ChaosConfig {
    /// Defaults: every fault kind, probe every 5 ms, settle within 10 s and stay so for 1 s,
    /// up to 30 s of overrun, progress on.
    pub fn new(seed: u64, duration: Duration, pairs: usize) -> ChaosConfig {
        ChaosConfig {
            seed,
            duration,
            pairs,
            kinds: FaultKind::ALL.to_vec(),
            keepalived: false,
            probe_interval: Duration::from_millis(5),
            settle_timeout: Duration::from_secs(10),
            quiet: Duration::from_secs(1),
            overrun: Duration::from_secs(30),
            progress: true,
            strict_planned: false,
        }
    }

    /// The invariants' bounds for this run.
    pub fn bounds(&self) -> Bounds {
        Bounds {
            unplanned_outage: cluster::master_down_interval() + Duration::from_millis(10),
            dual_grace: cluster::ADVERT_INTERVAL + Duration::from_millis(10),
            probe_interval: self.probe_interval,
            strict_planned: self.strict_planned,
        }
    }
}

/// The result of a soak.
#[derive(Debug)]
pub struct ChaosOutcome {
    pub schedule: Schedule,
    pub implementations: Vec<Implementation>,
    pub meta: Meta,
    pub records: Vec<FaultRecord>,
    pub repairs: Vec<RepairRun>,
    pub judgement: Judgement,
    pub bounds: Bounds,
    pub probes: Vec<(u64, u64)>,
    pub start: Instant,
    pub elapsed: Duration,
    /// Where the logs are (kept when there were violations).
    pub log_dir: PathBuf,
    pub keepalived_requested: bool,
}

impl ChaosOutcome {
    pub fn passed(&self) -> bool {
        self.judgement.violations.is_empty()
    }

    fn input(&self) -> report::ReportInput<'_> {
        report::ReportInput {
            schedule: &self.schedule,
            implementations: &self.implementations,
            meta: &self.meta,
            records: &self.records,
            repairs: &self.repairs,
            judgement: &self.judgement,
            bounds: &self.bounds,
            probes: &self.probes,
            start: self.start,
            elapsed: self.elapsed,
            keepalived_requested: self.keepalived_requested,
        }
    }

    /// The report tables.
    pub fn report(&self) -> String {
        report::render(&self.input())
    }

    /// The violations (at most `limit` in full).
    pub fn violations(&self, limit: usize) -> String {
        report::render_violations(&self.input(), limit)
    }

    /// What a failing run prints so it can be replayed: seed, command, schedule, logs.
    pub fn replay(&self) -> String {
        format!(
            "seed {}; replay: {}\nlogs kept in {}\n{}",
            self.schedule.seed,
            self.schedule.replay_command(self.keepalived_requested),
            self.log_dir.display(),
            self.schedule.render()
        )
    }
}

/// Runs the soak. `stop` (Ctrl-C) ends it early: faults not yet started are skipped, the one
/// running is cleared, and the fleet is torn down.
pub fn run(config: &ChaosConfig, stop: &AtomicBool) -> Result<ChaosOutcome, ChaosError> {
    if config.pairs == 0 || config.pairs > cluster::MAX_PAIRS {
        return Err(ChaosError::Setup(format!(
            "--pairs must be 1 to {}",
            cluster::MAX_PAIRS
        )));
    }
    // Missing binaries are found before any namespace exists.
    crate::agent::agent_binary()?;
    crate::bench::sibling_binary("hav-test-httpd").map_err(|e| {
        ChaosError::Setup(format!("{e}; build it: cargo build -p hav-tests --bins"))
    })?;
    let schedule = Schedule::generate(config.seed, config.duration, config.pairs, &config.kinds);
    let swept = cluster::sweep_stale_mounts();
    let swept_ns = crate::netns::sweep_stale()?;
    if config.progress && !(swept.is_empty() && swept_ns.is_empty()) {
        eprintln!("hav-chaos: removed leftovers of killed runs: {swept:?} {swept_ns:?}");
    }
    if config.progress {
        eprintln!(
            "hav-chaos: seed {} ({}); {} faults planned",
            config.seed,
            schedule.replay_command(config.keepalived),
            schedule.events.len()
        );
    }
    let mut cluster = Cluster::build(&ClusterSpec {
        pairs: config.pairs,
        keepalived: config.keepalived,
        probe_interval: config.probe_interval,
    })?;
    let implementations: Vec<Implementation> = if config.keepalived {
        vec![Implementation::Hav, Implementation::Keepalived]
    } else {
        vec![Implementation::Hav]
    };
    let since = Instant::now();
    for pair in &cluster.pairs {
        let settle = wait_settled(
            pair,
            &cluster.meta,
            cluster.recorder(),
            since,
            Duration::from_secs(30),
            config.quiet,
            stop,
        );
        if stop.load(Ordering::SeqCst) {
            return Err(ChaosError::Interrupted);
        }
        if settle.settled_at.is_none() {
            cluster.keep_logs();
            return Err(ChaosError::NotSettled {
                problems: format!("{}: {}", pair.label, settle.last.problems.join("; ")),
                log_dir: cluster.lab.log_dir().display().to_string(),
            });
        }
    }
    if config.progress {
        eprintln!(
            "hav-chaos: fleet settled after {:.1} s; logs in {}",
            since.elapsed().as_secs_f64(),
            cluster.lab.log_dir().display()
        );
    }
    let start = Instant::now();
    let probes_before = cluster.recorder().snapshot().probes;
    let executor = Executor {
        config,
        start,
        hard_end: start + config.duration + config.overrun,
    };
    let (mut records, repairs) = executor.execute(&mut cluster, &schedule, stop);
    let end = Instant::now();
    // The last look: every pair settled at the end, and no daemon died meanwhile.
    let at_end = executor.final_check(&mut cluster, stop);
    records.sort_by_key(|r| (r.event.number, r.implementation));
    cluster.observers.stop_probing();
    let observations = cluster.recorder().snapshot();
    let bounds = config.bounds();
    let mut judgement = invariants::judge(
        &records,
        &repairs,
        &observations,
        &cluster.meta,
        &bounds,
        start,
        end,
    );
    judgement.violations.extend(at_end);
    if !judgement.violations.is_empty() {
        cluster.keep_logs();
    }
    let outcome = ChaosOutcome {
        schedule,
        implementations,
        meta: cluster.meta.clone(),
        records,
        repairs,
        judgement,
        bounds,
        probes: observations
            .probes
            .iter()
            .zip(probes_before.iter().chain(std::iter::repeat(&(0, 0))))
            .map(|(now, before)| (now.0 - before.0, now.1 - before.1))
            .collect(),
        start,
        elapsed: start.elapsed(),
        log_dir: cluster.lab.log_dir().to_owned(),
        keepalived_requested: config.keepalived,
    };
    drop(cluster);
    Ok(outcome)
}

struct Executor<'a> {
    config: &'a ChaosConfig,
    start: Instant,
    hard_end: Instant,
}

impl Executor<'_> {
    /// Runs the schedule: between fleet-wide faults, one worker thread per pair runs that
    /// pair's faults in order; a fleet-wide fault waits for every worker, then runs alone.
    fn execute(
        &self,
        cluster: &mut Cluster,
        schedule: &Schedule,
        stop: &AtomicBool,
    ) -> (Vec<FaultRecord>, Vec<RepairRun>) {
        let mut records = Vec::new();
        let mut repairs = Vec::new();
        let mut segment: Vec<&FaultEvent> = Vec::new();
        for event in &schedule.events {
            if event.kind.scope() == Scope::Fleet {
                self.run_segment(cluster, &segment, stop, &mut records, &mut repairs);
                segment.clear();
                self.run_fleet_fault(cluster, event, stop, &mut records, &mut repairs);
            } else {
                segment.push(event);
            }
        }
        self.run_segment(cluster, &segment, stop, &mut records, &mut repairs);
        (records, repairs)
    }

    fn run_segment(
        &self,
        cluster: &mut Cluster,
        events: &[&FaultEvent],
        stop: &AtomicBool,
        records: &mut Vec<FaultRecord>,
        repairs: &mut Vec<RepairRun>,
    ) {
        if events.is_empty() {
            return;
        }
        let Cluster {
            pairs,
            meta,
            observers,
            lab,
            ..
        } = cluster;
        let ctx = Ctx {
            lab,
            observers,
            stop,
        };
        let meta: &Meta = meta;
        let results = std::thread::scope(|scope| {
            let workers: Vec<_> = pairs
                .iter_mut()
                .map(|pair| {
                    let number = meta.pairs[pair.index].number;
                    let mine: Vec<FaultEvent> = events
                        .iter()
                        .filter(|e| e.pair == number)
                        .map(|e| (*e).clone())
                        .collect();
                    scope.spawn(move || self.run_pair(ctx, meta, pair, &mine))
                })
                .collect();
            workers.into_iter().map(|w| w.join()).collect::<Vec<_>>()
        });
        for result in results {
            match result {
                Ok((mut r, mut p)) => {
                    records.append(&mut r);
                    repairs.append(&mut p);
                }
                // The cluster's drop still tears everything down.
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
    }

    /// One pair's faults, in order.
    fn run_pair(
        &self,
        ctx: Ctx<'_>,
        meta: &Meta,
        pair: &mut Pair,
        events: &[FaultEvent],
    ) -> (Vec<FaultRecord>, Vec<RepairRun>) {
        let mut records = Vec::new();
        let mut repairs = Vec::new();
        for event in events {
            let mut record = FaultRecord {
                event: event.clone(),
                implementation: pair.implementation,
                pairs: vec![pair.index],
                run: None,
                skipped: None,
            };
            if let Some(why) = self.skip_reason(event, pair.implementation, ctx.stop) {
                record.skipped = Some(why);
                records.push(record);
                continue;
            }
            if let Some(why) = &pair.retired {
                record.skipped = Some(format!("pair retired: {why}"));
                records.push(record);
                continue;
            }
            if !self.ready(ctx, meta, pair, &mut repairs) {
                record.skipped = Some("the pair could not be settled first".into());
                records.push(record);
                continue;
            }
            let run = self.run_fault(ctx, meta, pair, event, &mut repairs);
            let target = format!("{}{}", pair.label, event.side.letter());
            self.progress(event, pair.implementation, &target, &run);
            record.run = Some(run);
            records.push(record);
        }
        (records, repairs)
    }

    /// Waits for the planned start; the reason to skip the fault, if any.
    fn skip_reason(
        &self,
        event: &FaultEvent,
        implementation: Implementation,
        stop: &AtomicBool,
    ) -> Option<String> {
        if !event.kind.applies_to(implementation) {
            return Some("n/a".into());
        }
        if !sleep_until(self.start + event.at, stop) {
            return Some("interrupted".into());
        }
        if Instant::now() > self.hard_end {
            return Some("out of time".into());
        }
        None
    }

    /// Before a fault the pair must be settled: if it is not (something happened outside any
    /// fault, which the invariants report), it gets a settle timeout, then a repair.
    fn ready(
        &self,
        ctx: Ctx<'_>,
        meta: &Meta,
        pair: &mut Pair,
        repairs: &mut Vec<RepairRun>,
    ) -> bool {
        let recorder = ctx.observers.recorder();
        let recent = Instant::now()
            .checked_sub(Duration::from_millis(500))
            .unwrap_or_else(Instant::now);
        if pair_health(pair, meta, recorder, recent).ok() {
            return true;
        }
        let settle = wait_settled(
            pair,
            meta,
            recorder,
            recent,
            self.config.settle_timeout,
            self.config.quiet,
            ctx.stop,
        );
        if settle.settled_at.is_some() {
            return true;
        }
        let repair = self.repair(ctx, meta, pair, None);
        let ok = repair.ok;
        repairs.push(repair);
        ok
    }

    fn run_fault(
        &self,
        ctx: Ctx<'_>,
        meta: &Meta,
        pair: &mut Pair,
        event: &FaultEvent,
        repairs: &mut Vec<RepairRun>,
    ) -> FaultRun {
        let recorder = ctx.observers.recorder();
        let mut log = FaultLog::default();
        let injected = Instant::now();
        let active = match faults::inject(ctx, pair, event.side, event.kind, &mut log) {
            Ok(active) => Some(active),
            Err(e) => {
                log.harness.push(format!("injecting: {}", error_chain(&e)));
                None
            }
        };
        sleep_until(injected + event.hold, ctx.stop);
        let mut cleared = Instant::now();
        if let Some(active) = active {
            match faults::clear(ctx, pair, event.side, event.kind, active, &mut log) {
                Ok(Some(later)) => cleared = later,
                Ok(None) => {}
                Err(e) => log.harness.push(format!("clearing: {}", error_chain(&e))),
            }
        }
        let settle = wait_settled(
            pair,
            meta,
            recorder,
            cleared,
            self.config.settle_timeout,
            self.config.quiet,
            ctx.stop,
        );
        let end = Instant::now();
        let run = FaultRun {
            injected,
            cleared,
            end,
            settled_at: settle.settled_at,
            unsettled: settle.last.problems.clone(),
            stale: settle.last.stale.clone(),
            findings: log.findings,
            harness: log.harness,
            notes: log.notes,
            interrupted: settle.settled_at.is_none() && ctx.stop.load(Ordering::SeqCst),
        };
        if settle.settled_at.is_none() && !ctx.stop.load(Ordering::SeqCst) {
            repairs.push(self.repair(ctx, meta, pair, Some(event.number)));
        }
        run
    }

    /// Restarts both daemons of a pair that did not settle (after undoing whatever a fault may
    /// have left) and waits for it to settle; retires the pair if it does not.
    fn repair(
        &self,
        ctx: Ctx<'_>,
        meta: &Meta,
        pair: &mut Pair,
        after: Option<usize>,
    ) -> RepairRun {
        let recorder = ctx.observers.recorder();
        let start = Instant::now();
        let mut problems = Vec::new();
        for side in [schedule::Side::A, schedule::Side::B] {
            let node = pair.node(side);
            if !node.alive(recorder) {
                node.reap();
                let tail = node.log_tail(15);
                recorder.add_log_tail(node.index, node.generation, tail);
            }
            faults::restore(ctx, node);
            if node.alive(recorder)
                && let Err(e) = node.kill(recorder)
            {
                problems.push(format!("{}: kill: {}", node.label, error_chain(&e)));
            }
        }
        // keepalived keeps no journal: VIPs a killed daemon left are the harness's to remove.
        let pair_meta = &meta.pairs[pair.index];
        for side in [schedule::Side::A, schedule::Side::B] {
            let node = pair.node_ref(side);
            for &vip in &pair_meta.vips {
                let address = format!("{}/24", meta.vips[vip].address);
                let _ = ctx
                    .lab
                    .host(&node.label)
                    .map(|ns| ns.ip(&["addr", "del", &address, "dev", &node.iface]));
            }
        }
        for side in [schedule::Side::A, schedule::Side::B] {
            let node = pair.node(side);
            if let Err(e) = node.start(ctx.lab, ctx.observers) {
                problems.push(format!("{}: start: {}", node.label, error_chain(&e)));
            }
        }
        let settle = wait_settled(
            pair,
            meta,
            recorder,
            Instant::now(),
            self.config.settle_timeout * 2,
            self.config.quiet,
            ctx.stop,
        );
        let ok = settle.settled_at.is_some() && problems.is_empty();
        problems.extend(settle.last.problems);
        let detail = problems.join("; ");
        if !ok {
            pair.retired = Some(detail.clone());
        }
        if self.config.progress {
            eprintln!(
                "[+{:>7.1}s] {}: repaired by restarting both daemons: {}",
                start.duration_since(self.start).as_secs_f64(),
                pair.label,
                if ok {
                    "settled".to_string()
                } else {
                    format!("FAILED ({detail}), pair retired")
                }
            );
        }
        RepairRun {
            pair: pair.index,
            start,
            end: Instant::now(),
            ok,
            after,
            detail,
        }
    }

    /// A fleet-wide fault (CPU): every pair of every implementation is in its scope.
    fn run_fleet_fault(
        &self,
        cluster: &mut Cluster,
        event: &FaultEvent,
        stop: &AtomicBool,
        records: &mut Vec<FaultRecord>,
        repairs: &mut Vec<RepairRun>,
    ) {
        let implementations: Vec<Implementation> = {
            let mut seen: Vec<Implementation> =
                cluster.pairs.iter().map(|p| p.implementation).collect();
            seen.dedup();
            seen
        };
        let record_for = |implementation: Implementation, meta: &Meta| FaultRecord {
            event: event.clone(),
            implementation,
            pairs: meta.pairs_of(implementation),
            run: None,
            skipped: None,
        };
        let skip = implementations
            .first()
            .and_then(|&i| self.skip_reason(event, i, stop));
        if let Some(why) = skip {
            for &implementation in &implementations {
                let mut record = record_for(implementation, &cluster.meta);
                record.skipped = Some(why.clone());
                records.push(record);
            }
            return;
        }
        let Cluster {
            pairs,
            meta,
            observers,
            lab,
            ..
        } = cluster;
        let ctx = Ctx {
            lab,
            observers,
            stop,
        };
        let meta: &Meta = meta;
        for pair in pairs.iter_mut().filter(|p| p.retired.is_none()) {
            self.ready(ctx, meta, pair, repairs);
        }
        let host = meta.nodes[meta.pairs[event.pair].nodes[event.side.slot()]]
            .label
            .clone();
        let mut log = FaultLog::default();
        let injected = Instant::now();
        let hogs = match faults::hog(lab, &host) {
            Ok(hogs) => hogs,
            Err(e) => {
                log.harness
                    .push(format!("starting the CPU hogs: {}", error_chain(&e)));
                Vec::new()
            }
        };
        sleep_until(injected + event.hold, stop);
        let cleared = Instant::now();
        drop(hogs);
        // Every pair is checked at once, so each one's settle time is its own.
        let settles: Vec<(usize, cluster::Settle)> = std::thread::scope(|scope| {
            let checks: Vec<_> = pairs
                .iter()
                .filter(|p| p.retired.is_none())
                .map(|pair| {
                    let recorder = observers.recorder();
                    scope.spawn(move || {
                        let settle = wait_settled(
                            pair,
                            meta,
                            recorder,
                            cleared,
                            self.config.settle_timeout,
                            self.config.quiet,
                            stop,
                        );
                        (pair.index, settle)
                    })
                })
                .collect();
            checks.into_iter().filter_map(|c| c.join().ok()).collect()
        });
        let end = Instant::now();
        let mut unsettled_pairs = Vec::new();
        for &implementation in &implementations {
            let mut run = FaultRun {
                injected,
                cleared,
                end,
                settled_at: Some(cleared),
                unsettled: Vec::new(),
                stale: Vec::new(),
                findings: Vec::new(),
                harness: log.harness.clone(),
                notes: Vec::new(),
                interrupted: stop.load(Ordering::SeqCst),
            };
            for (pair, settle) in settles
                .iter()
                .filter(|(p, _)| meta.pairs[*p].implementation == implementation)
            {
                match (settle.settled_at, run.settled_at) {
                    (Some(at), Some(latest)) => run.settled_at = Some(at.max(latest)),
                    (None, _) => {
                        run.settled_at = None;
                        run.unsettled.extend(
                            settle
                                .last
                                .problems
                                .iter()
                                .map(|p| format!("{}: {p}", meta.pairs[*pair].label)),
                        );
                        unsettled_pairs.push(*pair);
                    }
                    (Some(_), None) => {}
                }
                run.stale.extend(settle.last.stale.iter().copied());
            }
            let mut record = record_for(implementation, meta);
            self.progress(event, implementation, "all pairs", &run);
            record.run = Some(run);
            records.push(record);
        }
        if !stop.load(Ordering::SeqCst) {
            for pair in pairs
                .iter_mut()
                .filter(|p| unsettled_pairs.contains(&p.index))
            {
                repairs.push(self.repair(ctx, meta, pair, Some(event.number)));
            }
        }
    }

    /// The state at the end of the schedule: every pair that was not retired must be settled.
    fn final_check(&self, cluster: &mut Cluster, stop: &AtomicBool) -> Vec<Violation> {
        let mut violations = Vec::new();
        let recorder = cluster.observers.recorder().clone();
        for pair in cluster.pairs.iter_mut().filter(|p| p.retired.is_none()) {
            let recent = Instant::now()
                .checked_sub(Duration::from_millis(500))
                .unwrap_or_else(Instant::now);
            let settle = wait_settled(
                pair,
                &cluster.meta,
                &recorder,
                recent,
                self.config.settle_timeout,
                self.config.quiet,
                stop,
            );
            if settle.settled_at.is_some() || stop.load(Ordering::SeqCst) {
                continue;
            }
            for side in [schedule::Side::A, schedule::Side::B] {
                let node = pair.node(side);
                if !node.alive(&recorder) {
                    node.reap();
                    let tail = node.log_tail(15);
                    recorder.add_log_tail(node.index, node.generation, tail);
                }
            }
            violations.push(Violation {
                kind: ViolationKind::NotSettled,
                implementation: Some(pair.implementation),
                fault: None,
                at: Instant::now(),
                detail: format!(
                    "{} not settled at the end of the run: {}",
                    pair.label,
                    settle.last.problems.join("; ")
                ),
            });
        }
        violations
    }

    fn progress(
        &self,
        event: &FaultEvent,
        implementation: Implementation,
        target: &str,
        run: &FaultRun,
    ) {
        if !self.config.progress {
            return;
        }
        let outcome = match run.settled_at {
            Some(at) => format!(
                "settled {:.0} ms after clearing",
                at.saturating_duration_since(run.cleared).as_secs_f64() * 1000.0
            ),
            None if run.interrupted => "interrupted".to_string(),
            None => format!("NOT SETTLED: {}", run.unsettled.join("; ")),
        };
        let mut extra = String::new();
        for finding in run.findings.iter().chain(&run.harness) {
            extra.push_str("; ");
            extra.push_str(finding);
        }
        eprintln!(
            "[+{:>7.1}s] #{:<4} {:<10} {:<9} {:<16} hold {:>5} ms: {outcome}{extra}",
            run.injected.duration_since(self.start).as_secs_f64(),
            event.number,
            implementation.label(),
            target,
            event.kind.label(),
            event.hold.as_millis(),
        );
    }
}

/// `error: its source: its source ...` (the harness's own errors name the file, their sources
/// say what went wrong with it).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Sleeps until `deadline` in short slices, so `stop` is noticed; false if stopped. This waits
/// for a time the schedule chose, not for an event.
fn sleep_until(deadline: Instant, stop: &AtomicBool) -> bool {
    loop {
        if stop.load(Ordering::SeqCst) {
            return false;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        std::thread::sleep(left.min(Duration::from_millis(100)));
    }
}
