//! Carrying out a schedule on a fleet: one worker thread per pair between fleet-wide faults, a
//! fault at a time per pair, each followed by its settle check, and a repair (both daemons
//! restarted) when a pair does not settle; a pair whose repair fails is retired.
//!
//! Guarantees: a fault starts only on a settled pair; every wait ends at a deadline or when
//! `stop` is set; what a fault or a repair could not do is recorded, never swallowed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hav_proto::errors::chain;

use super::ChaosConfig;
use super::cluster::{Cluster, Meta, Pair};
use super::faults::{self, Ctx, FaultLog};
use super::invariants::{FaultRecord, FaultRun, RepairRun, Violation, ViolationKind};
use super::schedule::{self, FaultEvent, Implementation, Schedule, Scope};
use super::settle::{self, pair_health, wait_settled};

/// The schedule's runner.
pub(crate) struct Executor<'a> {
    pub(crate) config: &'a ChaosConfig,
    /// When the schedule's clock started.
    pub(crate) start: Instant,
    /// Faults not started by then are skipped.
    pub(crate) hard_end: Instant,
}

impl Executor<'_> {
    /// Runs the schedule: between fleet-wide faults, one worker thread per pair runs that
    /// pair's faults in order; a fleet-wide fault waits for every worker, then runs alone.
    pub(crate) fn execute(
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
                log.harness.push(format!("injecting: {}", chain(&e)));
                None
            }
        };
        sleep_until(injected + event.hold, ctx.stop);
        let mut cleared = Instant::now();
        if let Some(active) = active {
            match faults::clear(ctx, pair, event.side, event.kind, active, &mut log) {
                Ok(Some(later)) => cleared = later,
                Ok(None) => {}
                Err(e) => log.harness.push(format!("clearing: {}", chain(&e))),
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
                problems.push(format!("{}: kill: {}", node.label, chain(&e)));
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
                problems.push(format!("{}: start: {}", node.label, chain(&e)));
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
                    .push(format!("starting the CPU hogs: {}", chain(&e)));
                Vec::new()
            }
        };
        sleep_until(injected + event.hold, stop);
        let cleared = Instant::now();
        drop(hogs);
        // Every pair is checked at once, so each one's settle time is its own.
        let settles: Vec<(usize, settle::Settle)> = std::thread::scope(|scope| {
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
    pub(crate) fn final_check(&self, cluster: &mut Cluster, stop: &AtomicBool) -> Vec<Violation> {
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
