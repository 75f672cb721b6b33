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
//! - [`cluster`]: the fleet (pairs, client, tracked processes, state-dir tmpfs).
//! - [`settle`]: whether a pair is back in its layout, and the wait for it.
//! - [`executor`]: carrying out the schedule (workers per pair, repairs).
//! - [`faults`]: injecting and clearing each fault kind.
//! - [`observe`]: the client prober, VIP holders from netlink, daemon exits from pidfds.
//! - [`blind`]: when the harness could not see (prober silences, host stalls).
//! - [`invariants`]: the judgement (pure).
//! - [`report`]: the tables.
//! - [`excerpt`]: what the agents logged around a violation.

pub mod blind;
pub mod cluster;
mod excerpt;
mod executor;
pub mod faults;
pub mod invariants;
pub mod observe;
pub mod report;
pub mod schedule;
pub mod settle;

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use cluster::{Cluster, ClusterSpec, Meta};
use executor::Executor;
use invariants::{Bounds, FaultRecord, Judgement, RepairRun};
use schedule::{FaultKind, Implementation, Schedule};
use settle::wait_settled;

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
    pub blind: Vec<blind::BlindSpan>,
    pub start: Instant,
    /// The wall clock at `start`, to find a violation's instant in the daemons' logs.
    pub wall_start: SystemTime,
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
            blind: &self.blind,
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

    /// What the hav agents logged (INFO and above) from 2 s before to 1 s after each of the
    /// first `limit` violations.
    pub fn agent_logs(&self, limit: usize) -> String {
        let mut out = String::new();
        for violation in self.judgement.violations.iter().take(limit) {
            let at = self.wall_start + violation.at.saturating_duration_since(self.start);
            let (from, to) = excerpt::window(at, Duration::from_secs(2), Duration::from_secs(1));
            out.push_str(&format!("agents' logs around: {violation}\n"));
            for line in excerpt::agent_lines(&self.log_dir, from, to, 60) {
                out.push_str(&line);
                out.push('\n');
            }
        }
        out
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
    let wall_start = SystemTime::now();
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
        blind: observations
            .blind
            .iter()
            .filter(|s| s.to >= start)
            .copied()
            .collect(),
        start,
        wall_start,
        elapsed: start.elapsed(),
        log_dir: cluster.lab.log_dir().to_owned(),
        keepalived_requested: config.keepalived,
    };
    drop(cluster);
    Ok(outcome)
}
