//! The invariants, judged from what was recorded: pure functions of the fault records and the
//! observations, so they are tested here without a kernel.
//!
//! A fault's window runs from one probe interval before it was injected to the end of its
//! settle check. An outage belongs to it when its first failed attempt was in flight at some
//! point of the window (an attempt sent just before the fault and lost to it is the fault's).
//! Inside it:
//! - unplanned faults: every client outage of the pair's VIPs ends within the bound
//!   (master-down interval + 10 ms); planned ones: no probe fails, except, unless
//!   [`Bounds::strict_planned`], a connection in flight at the moment the client's ARP entry
//!   moved to the new holder, which that holder resets (a TCP connection cannot follow a VIP to
//!   another host; see [`Episode::is_handover_reset`]); such resets are counted apart;
//! - after the fault is cleared, no VIP is held by two nodes for longer than the grace (one
//!   advert interval + 10 ms: the split-brain grace of the coordinator, plus scheduling);
//! - the pair settles (each VIP on its master alone, roles as configured, the client answered
//!   by the master) within the settle timeout, with no stale VIP (a VIP on a node whose
//!   instance is not Master);
//! - no daemon exits that the harness did not stop.
//!
//! Outside every window and repair, the same hold with no allowance at all: no failed probe, no
//! second holder beyond the grace, no exit.
//!
//! Where the harness was blind ([`super::blind`]), a duration is held to its bound without the
//! blind time, and a failure that began during a host stall (or within an unplanned bound after
//! it) is not judged: the host did not run the daemons then. Both are reported apart from the
//! violations ([`Judgement::not_judged`]), never dropped.

use std::collections::BTreeSet;
use std::fmt;
use std::time::{Duration, Instant};

use super::blind::{self, BlindSpan};
use super::cluster::Meta;
use super::observe::{Episode, HolderEvent, Observations};
use super::schedule::{Expectation, FaultEvent, FaultKind, Implementation};

/// The figures the invariants hold against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Longest client outage an unplanned fault may cause.
    pub unplanned_outage: Duration,
    /// Longest time two nodes may hold one VIP after a fault cleared (and outside faults).
    pub dual_grace: Duration,
    /// The client's probe interval (a window opens this much before the fault).
    pub probe_interval: Duration,
    /// Planned faults allow no failed probe at all, not even a handover reset.
    pub strict_planned: bool,
}

/// A repair: the harness restarted a pair that did not settle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepairRun {
    pub pair: usize,
    pub start: Instant,
    pub end: Instant,
    pub ok: bool,
    /// The fault after which it ran, or `None` if the pair was found unsettled before a fault.
    pub after: Option<usize>,
    pub detail: String,
}

/// How one fault ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultRun {
    pub injected: Instant,
    pub cleared: Instant,
    /// End of the settle check (settled and quiet, or the deadline).
    pub end: Instant,
    pub settled_at: Option<Instant>,
    /// Why the pair did not settle.
    pub unsettled: Vec<String>,
    /// (VIP, node) held by a node that is not master of it, at the end of the settle check.
    pub stale: Vec<(usize, usize)>,
    pub findings: Vec<String>,
    pub harness: Vec<String>,
    pub notes: Vec<String>,
    /// The run was stopped (Ctrl-C) before the pair settled: settling is not judged.
    pub interrupted: bool,
}

/// One event of the schedule for one implementation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultRecord {
    pub event: FaultEvent,
    pub implementation: Implementation,
    /// The pairs (indexes of [`Meta::pairs`]) in its scope.
    pub pairs: Vec<usize>,
    pub run: Option<FaultRun>,
    /// Why it did not run (`n/a`, out of time, interrupted, pair retired).
    pub skipped: Option<String>,
}

/// What a violation is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ViolationKind {
    /// A client outage longer than the bound (or any failed probe outside faults).
    Outage,
    /// Failed probes during a planned fault.
    FailedProbes,
    /// A VIP unreachable at the end of the run.
    Unrecovered,
    /// Two holders of a VIP for longer than the grace.
    DualHolders,
    StaleVip,
    UnexpectedExit,
    NotSettled,
    /// A check of the fault itself (SIGTERM exit code, invalid config refused, ...).
    FaultCheck,
    /// The harness could not do its part.
    Harness,
}

impl ViolationKind {
    pub fn label(self) -> &'static str {
        match self {
            ViolationKind::Outage => "outage",
            ViolationKind::FailedProbes => "failed probes",
            ViolationKind::Unrecovered => "unrecovered",
            ViolationKind::DualHolders => "two holders",
            ViolationKind::StaleVip => "stale VIP",
            ViolationKind::UnexpectedExit => "unexpected exit",
            ViolationKind::NotSettled => "not settled",
            ViolationKind::FaultCheck => "fault check",
            ViolationKind::Harness => "harness",
        }
    }
}

/// One broken invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub kind: ViolationKind,
    pub implementation: Option<Implementation>,
    /// The fault (number, kind) whose window it fell in; `None`: outside every fault.
    pub fault: Option<(usize, FaultKind)>,
    pub at: Instant,
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let implementation = self.implementation.map_or("-", Implementation::label);
        match self.fault {
            Some((number, kind)) => write!(
                f,
                "[{implementation}] #{number} {kind}: {}: {}",
                self.kind.label(),
                self.detail
            ),
            None => write!(
                f,
                "[{implementation}] outside faults: {}: {}",
                self.kind.label(),
                self.detail
            ),
        }
    }
}

/// The client's view of one VIP during one fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VipFigures {
    pub vip: usize,
    pub failed_probes: u64,
    /// Of those, attempts reset by the new holder at a handover.
    pub handover_resets: u64,
    /// The longest outage episode (started in the window); `None`: no failed probe.
    pub worst_outage: Option<Duration>,
    pub unrecovered: bool,
    /// Time with two or more holders after the fault cleared, in total and the longest stretch.
    pub dual_total: Duration,
    pub dual_worst: Duration,
}

/// The figures of one fault record.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FaultFigures {
    pub vips: Vec<VipFigures>,
    pub stale: usize,
    pub unexpected_exits: usize,
}

/// Everything judged.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Judgement {
    /// Parallel to the records (empty figures for records that did not run).
    pub figures: Vec<FaultFigures>,
    pub violations: Vec<Violation>,
    /// What would have been violations but for the time the harness was blind, with how much
    /// of it was blind.
    pub not_judged: Vec<Violation>,
    /// Holder changes found by a dump rather than an event (the kernel dropped events).
    pub reconciled_holder_events: usize,
}

/// Judges the whole run. `start`/`end` delimit the fault schedule (before `start` the fleet was
/// coming up).
pub fn judge(
    records: &[FaultRecord],
    repairs: &[RepairRun],
    observations: &Observations,
    meta: &Meta,
    bounds: &Bounds,
    start: Instant,
    end: Instant,
) -> Judgement {
    let mut judgement = Judgement {
        reconciled_holder_events: observations
            .holder_events
            .iter()
            .filter(|e| e.reconciled)
            .count(),
        ..Judgement::default()
    };
    for record in records {
        let (figures, verdicts) = judge_record(record, observations, meta, bounds);
        judgement.figures.push(figures);
        judgement.violations.extend(verdicts.violations);
        judgement.not_judged.extend(verdicts.not_judged);
    }
    let outside = judge_outside(records, repairs, observations, meta, bounds, start, end);
    judgement.violations.extend(outside.violations);
    judgement.not_judged.extend(outside.not_judged);
    for error in &observations.harness_errors {
        judgement.violations.push(Violation {
            kind: ViolationKind::Harness,
            implementation: None,
            fault: None,
            at: end,
            detail: error.clone(),
        });
    }
    for repair in repairs.iter().filter(|r| !r.ok) {
        judgement.violations.push(Violation {
            kind: ViolationKind::NotSettled,
            implementation: Some(meta.pairs[repair.pair].implementation),
            fault: None,
            at: repair.end,
            detail: format!(
                "{}: restarting the pair did not settle it either ({}); no more faults on it",
                meta.pairs[repair.pair].label, repair.detail
            ),
        });
    }
    judgement.violations.sort_by_key(|v| v.at);
    judgement.not_judged.sort_by_key(|v| v.at);
    judgement
}

/// A record's violations and what it could not judge.
#[derive(Debug, Default)]
struct Verdicts {
    violations: Vec<Violation>,
    not_judged: Vec<Violation>,
}

impl Verdicts {
    /// Files `violation` as judged unless the harness was blind for `blind` of `measured`
    /// and `measured` without it is within `bound`.
    fn hold(
        &mut self,
        mut violation: Violation,
        measured: Duration,
        blind: Duration,
        bound: Duration,
    ) {
        if blind.is_zero() {
            self.violations.push(violation);
            return;
        }
        violation.detail.push_str(&format!(
            "; the harness was blind for {} of it",
            ms(Some(blind))
        ));
        if measured.saturating_sub(blind) <= bound {
            self.not_judged.push(violation);
        } else {
            self.violations.push(violation);
        }
    }
}

/// Whether `episode` began during a host stall or within `after` of its end.
fn in_host_stall(episode: &Episode, spans: &[BlindSpan], after: Duration) -> Option<Duration> {
    spans
        .iter()
        .filter(|s| s.is_host_stall())
        .find(|s| episode.began_within(s.from, s.to + after))
        .map(BlindSpan::length)
}

/// Of `stretches` of two holders, the one longest without the time the harness was blind:
/// its start, length as measured, and blind time.
fn worst_dual(
    stretches: &[(Instant, Instant)],
    blind_spans: &[BlindSpan],
) -> Option<(Instant, Duration, Duration)> {
    stretches
        .iter()
        .map(|&(a, b)| (a, b - a, blind::overlap(a, b, blind_spans)))
        .max_by_key(|(_, length, blind)| length.saturating_sub(*blind))
}

fn judge_record(
    record: &FaultRecord,
    observations: &Observations,
    meta: &Meta,
    bounds: &Bounds,
) -> (FaultFigures, Verdicts) {
    let mut verdicts = Verdicts::default();
    let Some(run) = &record.run else {
        return (FaultFigures::default(), verdicts);
    };
    let fault = Some((record.event.number, record.event.kind));
    let implementation = Some(record.implementation);
    let violation = |kind, at, detail| Violation {
        kind,
        implementation,
        fault,
        at,
        detail,
    };
    let opens = run
        .injected
        .checked_sub(bounds.probe_interval)
        .unwrap_or(run.injected);
    let mut figures = FaultFigures::default();
    let vips: Vec<usize> = record
        .pairs
        .iter()
        .flat_map(|&p| meta.pairs[p].vips)
        .collect();
    for &vip in &vips {
        let label = &meta.vips[vip].label;
        let episodes: Vec<_> = observations
            .episodes
            .iter()
            .filter(|e| e.vip == vip && e.began_within(opens, run.end))
            .collect();
        let failed_probes = episodes.iter().map(|e| u64::from(e.failed)).sum();
        let handover_resets = episodes
            .iter()
            .filter(|e| e.is_handover_reset())
            .map(|e| u64::from(e.failed))
            .sum();
        let worst_outage = episodes.iter().filter_map(|e| e.outage()).max();
        let unrecovered = episodes.iter().any(|e| e.recovered.is_none());
        // Each counted episode with the host stall it began in, if any.
        let (stalled, counted): (Vec<_>, Vec<_>) = episodes
            .iter()
            .filter(|e| bounds.strict_planned || !e.is_handover_reset())
            .map(|e| {
                let stall = in_host_stall(e, &observations.blind, bounds.unplanned_outage);
                (*e, stall)
            })
            .partition(|(_, stall)| stall.is_some());
        let failed_probes_in = |episodes: &[(&Episode, Option<Duration>)]| {
            let episodes: Vec<&Episode> = episodes.iter().map(|(e, _)| *e).collect();
            format!(
                "{label}: {} failed probes in {} outage(s), longest {} (first: {:?}; answered by {} then {})",
                episodes.iter().map(|e| e.failed).sum::<u32>(),
                episodes.len(),
                ms(episodes.iter().filter_map(|e| e.outage()).max()),
                episodes[0].first_error,
                node_label(meta, episodes[0].answered_before),
                node_label(meta, episodes[0].answered_after),
            )
        };
        match record.event.kind.expectation() {
            Expectation::Planned => {
                if let Some((first, _)) = counted.first() {
                    verdicts.violations.push(violation(
                        ViolationKind::FailedProbes,
                        first.first_failed_sent,
                        failed_probes_in(&counted),
                    ));
                }
                if let Some((first, stall)) = stalled.first() {
                    verdicts.not_judged.push(violation(
                        ViolationKind::FailedProbes,
                        first.first_failed_sent,
                        format!(
                            "{}; began in or just after a host stall of {}",
                            failed_probes_in(&stalled),
                            ms(*stall)
                        ),
                    ));
                }
            }
            Expectation::Unplanned => {
                for episode in &episodes {
                    if let (Some(outage), Some(recovered)) = (episode.outage(), episode.recovered)
                        && outage > bounds.unplanned_outage
                    {
                        let blind = blind::overlap(
                            episode.first_failed_sent,
                            recovered,
                            &observations.blind,
                        );
                        verdicts.hold(violation(
                            ViolationKind::Outage,
                            episode.first_failed_sent,
                            format!(
                                "{label}: client outage {} > bound {} ({} failed probes, {:?}; answered by {} then {})",
                                ms(Some(outage)),
                                ms(Some(bounds.unplanned_outage)),
                                episode.failed,
                                episode.first_error,
                                node_label(meta, episode.answered_before),
                                node_label(meta, episode.answered_after),
                            ),
                        ), outage, blind, bounds.unplanned_outage);
                    }
                }
            }
        }
        if unrecovered {
            verdicts.violations.push(violation(
                ViolationKind::Unrecovered,
                run.end,
                format!("{label}: unreachable from the client until the end of the run"),
            ));
        }
        let dual = dual_holding(&observations.holder_events, vip, run.cleared, run.end);
        let dual_total = dual.iter().map(|(a, b)| *b - *a).sum();
        let dual_worst = dual.iter().map(|(a, b)| *b - *a).max().unwrap_or_default();
        if let Some((at, length, blind)) = worst_dual(&dual, &observations.blind)
            && length > bounds.dual_grace
        {
            verdicts.hold(
                violation(
                    ViolationKind::DualHolders,
                    at,
                    format!(
                        "{label}: two holders for {} after the fault cleared (grace {}; {} in all, from +{} after clearing)",
                        ms(Some(length)),
                        ms(Some(bounds.dual_grace)),
                        ms(Some(dual_total)),
                        ms(Some(at.saturating_duration_since(run.cleared))),
                    ),
                ),
                length,
                blind,
                bounds.dual_grace,
            );
        }
        figures.vips.push(VipFigures {
            vip,
            failed_probes,
            handover_resets,
            worst_outage,
            unrecovered,
            dual_total,
            dual_worst,
        });
    }
    for &(vip, node) in run.stale.iter().filter(|_| !run.interrupted) {
        figures.stale += 1;
        verdicts.violations.push(violation(
            ViolationKind::StaleVip,
            run.end,
            format!(
                "{} still on {}, which is not its master, after settling",
                meta.vips[vip].label, meta.nodes[node].label
            ),
        ));
    }
    if run.settled_at.is_none() && !run.interrupted {
        verdicts.violations.push(violation(
            ViolationKind::NotSettled,
            run.end,
            run.unsettled.join("; "),
        ));
    }
    for finding in &run.findings {
        verdicts.violations.push(violation(
            ViolationKind::FaultCheck,
            run.cleared,
            finding.clone(),
        ));
    }
    for problem in &run.harness {
        verdicts.violations.push(violation(
            ViolationKind::Harness,
            run.cleared,
            problem.clone(),
        ));
    }
    for exit in observations.exits.iter().filter(|e| {
        !e.expected
            && record.pairs.contains(&meta.nodes[e.node].pair)
            && e.at >= opens
            && e.at <= run.end
    }) {
        figures.unexpected_exits += 1;
        verdicts.violations.push(violation(
            ViolationKind::UnexpectedExit,
            exit.at,
            format!(
                "{} exited by itself ({}){}",
                meta.nodes[exit.node].label,
                exit.status,
                tail(&exit.log_tail)
            ),
        ));
    }
    (figures, verdicts)
}

fn judge_outside(
    records: &[FaultRecord],
    repairs: &[RepairRun],
    observations: &Observations,
    meta: &Meta,
    bounds: &Bounds,
    start: Instant,
    end: Instant,
) -> Verdicts {
    // Per pair: the spans where disturbances belong to a fault or a repair.
    let covered: Vec<Vec<(Instant, Instant)>> = (0..meta.pairs.len())
        .map(|pair| {
            let mut spans: Vec<(Instant, Instant)> = records
                .iter()
                .filter(|r| r.pairs.contains(&pair))
                .filter_map(|r| r.run.as_ref())
                .map(|run| {
                    (
                        run.injected
                            .checked_sub(bounds.probe_interval)
                            .unwrap_or(run.injected),
                        run.end,
                    )
                })
                .collect();
            spans.extend(
                repairs
                    .iter()
                    .filter(|r| r.pair == pair)
                    .map(|r| (r.start, r.end)),
            );
            spans
        })
        .collect();
    let inside = |pair: usize, at: Instant| covered[pair].iter().any(|(a, b)| *a <= at && at <= *b);
    let overlaps = |pair: usize, episode: &Episode| {
        covered[pair]
            .iter()
            .any(|(a, b)| episode.began_within(*a, *b))
    };
    let mut verdicts = Verdicts::default();
    for episode in &observations.episodes {
        let pair = meta.vips[episode.vip].pair;
        if episode.first_failed_sent < start || overlaps(pair, episode) {
            continue;
        }
        let mut violation = Violation {
            kind: ViolationKind::Outage,
            implementation: Some(meta.pairs[pair].implementation),
            fault: None,
            at: episode.first_failed_sent,
            detail: format!(
                "{}: {} failed probes, outage {} ({:?}) with no fault on the pair",
                meta.vips[episode.vip].label,
                episode.failed,
                ms(episode.outage()),
                episode.first_error
            ),
        };
        match in_host_stall(episode, &observations.blind, bounds.unplanned_outage) {
            Some(stall) => {
                violation.detail.push_str(&format!(
                    "; began in or just after a host stall of {}",
                    ms(Some(stall))
                ));
                verdicts.not_judged.push(violation);
            }
            None => verdicts.violations.push(violation),
        }
    }
    for exit in observations
        .exits
        .iter()
        .filter(|e| !e.expected && e.at >= start)
    {
        let pair = meta.nodes[exit.node].pair;
        if inside(pair, exit.at) {
            continue;
        }
        verdicts.violations.push(Violation {
            kind: ViolationKind::UnexpectedExit,
            implementation: Some(meta.pairs[pair].implementation),
            fault: None,
            at: exit.at,
            detail: format!(
                "{} exited by itself ({}) with no fault on the pair{}",
                meta.nodes[exit.node].label,
                exit.status,
                tail(&exit.log_tail)
            ),
        });
    }
    for (vip, vip_meta) in meta.vips.iter().enumerate() {
        let covered = &covered[vip_meta.pair];
        // What faults, repairs and the harness's blind spans cover together.
        let covered_or_blind: Vec<(Instant, Instant)> = covered
            .iter()
            .copied()
            .chain(observations.blind.iter().map(|s| (s.from, s.to)))
            .collect();
        for (from, to) in dual_holding(&observations.holder_events, vip, start, end) {
            // Only the part of a stretch that no fault or repair covers counts here.
            let uncovered = uncovered_part(from, to, covered);
            if uncovered > bounds.dual_grace {
                let unblind = uncovered_part(from, to, &covered_or_blind);
                verdicts.hold(
                    Violation {
                        kind: ViolationKind::DualHolders,
                        implementation: Some(meta.pairs[vip_meta.pair].implementation),
                        fault: None,
                        at: from,
                        detail: format!(
                            "{}: two holders for {} with no fault on the pair",
                            vip_meta.label,
                            ms(Some(uncovered))
                        ),
                    },
                    uncovered,
                    uncovered.saturating_sub(unblind),
                    bounds.dual_grace,
                );
            }
        }
    }
    verdicts
}

/// The stretches within `[from, to]` during which two or more nodes held `vip`, from the holder
/// events (replayed from the start of the run, in time order).
pub fn dual_holding(
    events: &[HolderEvent],
    vip: usize,
    from: Instant,
    to: Instant,
) -> Vec<(Instant, Instant)> {
    let mut mine: Vec<&HolderEvent> = events.iter().filter(|e| e.vip == vip).collect();
    mine.sort_by_key(|e| e.at);
    let mut holders = BTreeSet::new();
    let mut stretches = Vec::new();
    let mut dual_since: Option<Instant> = None;
    for event in mine {
        if event.at > to {
            break;
        }
        if event.present {
            holders.insert(event.node);
        } else {
            holders.remove(&event.node);
        }
        match (holders.len() >= 2, dual_since) {
            (true, None) => dual_since = Some(event.at),
            (false, Some(since)) => {
                dual_since = None;
                if event.at > from {
                    stretches.push((since.max(from), event.at));
                }
            }
            _ => {}
        }
    }
    if let Some(since) = dual_since {
        stretches.push((since.max(from), to));
    }
    stretches
}

/// The longest part of `[from, to]` outside every span of `covered`.
fn uncovered_part(from: Instant, to: Instant, covered: &[(Instant, Instant)]) -> Duration {
    let mut spans: Vec<(Instant, Instant)> = covered
        .iter()
        .filter(|(a, b)| *b > from && *a < to)
        .map(|(a, b)| ((*a).max(from), (*b).min(to)))
        .collect();
    spans.sort();
    let mut longest = Duration::ZERO;
    let mut cursor = from;
    for (a, b) in spans {
        if a > cursor {
            longest = longest.max(a - cursor);
        }
        cursor = cursor.max(b);
    }
    if to > cursor {
        longest = longest.max(to - cursor);
    }
    longest
}

fn node_label(meta: &Meta, node: Option<usize>) -> &str {
    node.and_then(|n| meta.nodes.get(n))
        .map_or("nobody", |n| n.label.as_str())
}

fn tail(log: &str) -> String {
    if log.is_empty() {
        String::new()
    } else {
        format!("; log ends:\n{log}")
    }
}

/// `12.3 ms`, or `-`.
pub fn ms(d: Option<Duration>) -> String {
    match d {
        Some(d) => format!("{:.1} ms", d.as_secs_f64() * 1000.0),
        None => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chaos::schedule::Side;
    use crate::probe::ProbeError;

    const MS: Duration = Duration::from_millis(1);

    fn bounds() -> Bounds {
        Bounds {
            unplanned_outage: 371 * MS,
            dual_grace: 110 * MS,
            probe_interval: 5 * MS,
            strict_planned: false,
        }
    }

    fn holder(t: Instant, ms: u32, node: usize, present: bool) -> HolderEvent {
        HolderEvent {
            at: t + ms * MS,
            vip: 0,
            node,
            present,
            reconciled: false,
        }
    }

    fn episode(t: Instant, vip: usize, from: u32, to: Option<u32>) -> Episode {
        Episode {
            vip,
            first_failed_sent: t + from * MS,
            first_failed_done: t + from * MS,
            last_failed_done: t + from * MS,
            recovered: to.map(|to| t + to * MS),
            failed: 3,
            resets: 0,
            first_error: ProbeError::ConnectTimeout,
            answered_before: Some(0),
            answered_after: Some(1),
        }
    }

    fn record(t: Instant, kind: FaultKind, injected: u32, cleared: u32, end: u32) -> FaultRecord {
        FaultRecord {
            event: FaultEvent {
                number: 1,
                at: Duration::ZERO,
                pair: 0,
                side: Side::A,
                kind,
                hold: Duration::ZERO,
            },
            implementation: Implementation::Hav,
            pairs: vec![0],
            run: Some(FaultRun {
                injected: t + injected * MS,
                cleared: t + cleared * MS,
                end: t + end * MS,
                settled_at: Some(t + end * MS),
                unsettled: Vec::new(),
                stale: Vec::new(),
                findings: Vec::new(),
                harness: Vec::new(),
                notes: Vec::new(),
                interrupted: false,
            }),
            skipped: None,
        }
    }

    fn meta() -> Meta {
        Meta::new(1, &[Implementation::Hav])
    }

    /// Judges a run of [`meta`]'s one pair from `t` to `end_ms` after it, without repairs.
    fn judge_run(
        records: &[FaultRecord],
        observations: &Observations,
        t: Instant,
        end_ms: u32,
    ) -> Judgement {
        judge(
            records,
            &[],
            observations,
            &meta(),
            &bounds(),
            t,
            t + end_ms * MS,
        )
    }

    #[test]
    fn dual_holding_is_clipped_to_the_interval_and_open_stretches_end_there() {
        let t = Instant::now();
        let events = [
            holder(t, 0, 0, true),
            holder(t, 100, 1, true),  // two holders from 100 ...
            holder(t, 300, 0, false), // ... to 300
            holder(t, 400, 0, true),  // and again from 400, never ending
        ];
        let stretches = dual_holding(&events, 0, t + 200 * MS, t + 1000 * MS);
        assert_eq!(
            stretches,
            vec![(t + 200 * MS, t + 300 * MS), (t + 400 * MS, t + 1000 * MS)]
        );
        assert!(dual_holding(&events, 0, t + 310 * MS, t + 390 * MS).is_empty());
    }

    #[test]
    fn an_unplanned_outage_over_the_bound_and_a_planned_failed_probe_are_violations() {
        let t = Instant::now();
        let observations = Observations {
            episodes: vec![
                episode(t, 0, 1000, Some(1300)), // 300 ms: within 371 ms
                episode(t, 1, 1100, Some(1500)), // 400 ms: over
                episode(t, 0, 5000, Some(5010)), // in the planned fault
            ],
            ..Observations::default()
        };
        let records = [
            record(t, FaultKind::LinkFlap, 1000, 2000, 3000),
            record(t, FaultKind::TermRestart, 5000, 5500, 6000),
        ];
        let judgement = judge_run(&records, &observations, t, 10_000);
        let kinds: Vec<ViolationKind> = judgement.violations.iter().map(|v| v.kind).collect();
        assert_eq!(kinds, [ViolationKind::Outage, ViolationKind::FailedProbes]);
        assert_eq!(judgement.figures[0].vips[1].worst_outage, Some(400 * MS));
        assert_eq!(judgement.figures[1].vips[0].failed_probes, 3);
    }

    #[test]
    fn blind_time_is_not_held_to_a_bound_and_a_host_stall_excuses_what_began_in_it() {
        use crate::chaos::blind::{BlindCause, Pressure};
        let t = Instant::now();
        let span = |from: u32, to: u32, cause| BlindSpan {
            from: t + from * MS,
            to: t + to * MS,
            cause,
        };
        let observations = Observations {
            episodes: vec![
                // 900 ms, 700 of them with the prober silent: 200 ms seen, within 371.
                episode(t, 0, 1000, Some(1900)),
                // 900 ms, 400 silent: 500 ms seen, over.
                episode(t, 1, 1400, Some(2300)),
                // A failed probe in a planned fault, begun just after a host stall.
                episode(t, 0, 5100, Some(5110)),
                // And one outside every fault, not near a stall: judged.
                episode(t, 1, 8000, Some(8010)),
            ],
            blind: vec![
                span(1100, 1800, BlindCause::ProberSilent),
                span(4900, 5000, BlindCause::HostStall(Pressure::default())),
            ],
            ..Observations::default()
        };
        let records = [
            record(t, FaultKind::LinkFlap, 1000, 2000, 3000),
            record(t, FaultKind::TermRestart, 5000, 5500, 6000),
        ];
        let judgement = judge_run(&records, &observations, t, 10_000);
        let judged: Vec<(ViolationKind, usize)> = judgement
            .violations
            .iter()
            .map(|v| (v.kind, v.fault.map_or(0, |f| f.0)))
            .collect();
        // The second VIP's outage and the failed probe outside faults are judged.
        assert_eq!(
            judged,
            [(ViolationKind::Outage, 1), (ViolationKind::Outage, 0)]
        );
        let not_judged: Vec<ViolationKind> = judgement.not_judged.iter().map(|v| v.kind).collect();
        assert_eq!(
            not_judged,
            [ViolationKind::Outage, ViolationKind::FailedProbes]
        );
        assert!(
            judgement.not_judged[0]
                .detail
                .contains("blind for 700.0 ms")
        );
    }

    #[test]
    fn an_attempt_in_flight_when_the_fault_struck_belongs_to_the_fault() {
        let t = Instant::now();
        // Sent 150 ms before the injection at 1000, timed out after it: the fault's.
        let mut in_flight = episode(t, 0, 850, Some(1200));
        in_flight.first_failed_done = t + 1050 * MS;
        // Sent and failed before the window opened: nobody's.
        let mut before = episode(t, 1, 700, Some(760));
        before.first_failed_done = t + 750 * MS;
        let observations = Observations {
            episodes: vec![in_flight, before],
            ..Observations::default()
        };
        let records = [record(t, FaultKind::LinkFlap, 1000, 2000, 3000)];
        let judgement = judge_run(&records, &observations, t, 4000);
        assert_eq!(judgement.figures[0].vips[0].worst_outage, Some(350 * MS));
        let outside: Vec<&Violation> = judgement
            .violations
            .iter()
            .filter(|v| v.fault.is_none())
            .collect();
        assert_eq!(outside.len(), 1, "{:?}", judgement.violations);
        assert_eq!(outside[0].at, t + 700 * MS);
    }

    #[test]
    fn a_planned_handover_may_reset_the_connection_in_flight_unless_strict() {
        let t = Instant::now();
        let meta = meta();
        let mut reset = episode(t, 0, 5100, Some(5106));
        (reset.failed, reset.resets, reset.first_error) = (1, 1, ProbeError::Reset);
        let mut same_node = reset.clone();
        same_node.answered_after = same_node.answered_before;
        let records = [record(t, FaultKind::ReloadValid, 5000, 5500, 6000)];
        let judge_with = |episodes: Vec<Episode>, strict: bool| {
            let observations = Observations {
                episodes,
                ..Observations::default()
            };
            let bounds = Bounds {
                strict_planned: strict,
                ..bounds()
            };
            judge(
                &records,
                &[],
                &observations,
                &meta,
                &bounds,
                t,
                t + 7000 * MS,
            )
        };
        let lenient = judge_with(vec![reset.clone()], false);
        assert!(lenient.violations.is_empty(), "{:?}", lenient.violations);
        assert_eq!(lenient.figures[0].vips[0].handover_resets, 1);
        assert_eq!(judge_with(vec![reset], true).violations.len(), 1);
        // A reset with no handover (the same node answers before and after) is a failure.
        assert_eq!(judge_with(vec![same_node], false).violations.len(), 1);
    }

    #[test]
    fn two_holders_during_the_fault_are_allowed_after_it_only_within_the_grace() {
        let t = Instant::now();
        let meta = meta();
        // Kill: the dead node keeps its VIP while the peer takes over (during the fault);
        // after the restart at 2000 it takes 50 ms to remove it: within the grace.
        let events = vec![
            holder(t, 0, 0, true),
            holder(t, 1400, 1, true),
            holder(t, 2050, 0, false),
        ];
        let observations = Observations {
            holder_events: events.clone(),
            ..Observations::default()
        };
        let records = [record(t, FaultKind::Kill, 1000, 2000, 3000)];
        let ok = judge(
            &records,
            &[],
            &observations,
            &meta,
            &bounds(),
            t,
            t + 4000 * MS,
        );
        assert!(ok.violations.is_empty(), "{:?}", ok.violations);
        assert_eq!(ok.figures[0].vips[0].dual_worst, 50 * MS);
        // A corrupt journal leaves it until the node preempts, 400 ms later: a violation.
        let mut late = events;
        late[2] = holder(t, 2400, 0, false);
        let observations = Observations {
            holder_events: late,
            ..Observations::default()
        };
        let bad = judge(
            &records,
            &[],
            &observations,
            &meta,
            &bounds(),
            t,
            t + 4000 * MS,
        );
        assert_eq!(bad.violations.len(), 1);
        assert_eq!(bad.violations[0].kind, ViolationKind::DualHolders);
    }

    #[test]
    fn disturbances_outside_faults_and_repairs_are_violations() {
        let t = Instant::now();
        let meta = meta();
        let observations = Observations {
            episodes: vec![
                episode(t, 0, 500, Some(520)),   // before the run: ignored
                episode(t, 0, 2500, Some(2510)), // inside the fault
                episode(t, 1, 4000, Some(4010)), // inside the repair
                episode(t, 1, 8000, Some(8010)), // nowhere: a violation
            ],
            exits: vec![crate::chaos::observe::ExitEvent {
                at: t + 9000 * MS,
                node: 1,
                generation: 1,
                expected: false,
                status: "killed by SIGUSR2".into(),
                log_tail: String::new(),
            }],
            holder_events: vec![
                holder(t, 1000, 0, true),
                holder(t, 6000, 1, true),
                holder(t, 6500, 1, false),
            ],
            ..Observations::default()
        };
        let records = [record(t, FaultKind::LinkFlap, 2000, 2500, 3000)];
        let repairs = [RepairRun {
            pair: 0,
            start: t + 3500 * MS,
            end: t + 4500 * MS,
            ok: true,
            after: Some(1),
            detail: String::new(),
        }];
        let judgement = judge(
            &records,
            &repairs,
            &observations,
            &meta,
            &bounds(),
            t + 1000 * MS,
            t + 10_000 * MS,
        );
        let kinds: Vec<ViolationKind> = judgement.violations.iter().map(|v| v.kind).collect();
        assert_eq!(
            kinds,
            [
                ViolationKind::DualHolders,
                ViolationKind::Outage,
                ViolationKind::UnexpectedExit
            ]
        );
        assert!(judgement.violations.iter().all(|v| v.fault.is_none()));
    }

    #[test]
    fn uncovered_part_is_the_longest_gap_between_spans() {
        let t = Instant::now();
        let spans = [(t + 100 * MS, t + 200 * MS), (t + 150 * MS, t + 300 * MS)];
        assert_eq!(uncovered_part(t, t + 1000 * MS, &spans), 700 * MS);
        assert_eq!(
            uncovered_part(t + 120 * MS, t + 250 * MS, &spans),
            Duration::ZERO
        );
    }
}
