//! The soak's report: one row per fault kind and implementation (hav and keepalived next to
//! each other), the worst outage per VIP, and every violation with the seed to replay it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use super::blind::{self, BlindCause, BlindSpan};
use super::cluster::Meta;
use super::invariants::{Bounds, FaultRecord, Judgement, RepairRun, ms};
use super::schedule::{Expectation, FaultKind, Implementation, Schedule};

/// The figures of one fault kind on one implementation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KindRow {
    pub injected: usize,
    pub not_run: usize,
    /// The longest outage and the VIP it hit.
    pub worst_outage: Option<(Duration, usize)>,
    pub failed_probes: u64,
    pub handover_resets: u64,
    pub dual_total: Duration,
    pub dual_worst: Duration,
    pub stale: usize,
    pub unexpected_exits: usize,
    pub not_settled: usize,
    pub violations: usize,
    /// The longest time from clearing to settled.
    pub worst_settle: Option<Duration>,
}

/// Aggregates the records of `kind` on `implementation`.
pub fn kind_row(
    kind: FaultKind,
    implementation: Implementation,
    records: &[FaultRecord],
    judgement: &Judgement,
) -> KindRow {
    let mut row = KindRow::default();
    for (record, figures) in records.iter().zip(&judgement.figures) {
        if record.event.kind != kind || record.implementation != implementation {
            continue;
        }
        let Some(run) = &record.run else {
            if record.skipped.as_deref() != Some("n/a") {
                row.not_run += 1;
            }
            continue;
        };
        row.injected += 1;
        for vip in &figures.vips {
            row.failed_probes += vip.failed_probes;
            row.handover_resets += vip.handover_resets;
            row.dual_total += vip.dual_total;
            row.dual_worst = row.dual_worst.max(vip.dual_worst);
            if let Some(outage) = vip.worst_outage
                && row.worst_outage.is_none_or(|(worst, _)| outage > worst)
            {
                row.worst_outage = Some((outage, vip.vip));
            }
        }
        row.stale += figures.stale;
        row.unexpected_exits += figures.unexpected_exits;
        match run.settled_at {
            Some(at) => {
                let settle = at.saturating_duration_since(run.cleared);
                row.worst_settle = Some(row.worst_settle.map_or(settle, |w| w.max(settle)));
            }
            None if run.interrupted => {}
            None => row.not_settled += 1,
        }
        row.violations += judgement
            .violations
            .iter()
            .filter(|v| {
                v.fault == Some((record.event.number, kind))
                    && v.implementation == Some(implementation)
            })
            .count();
    }
    row
}

/// Everything the report needs.
pub struct ReportInput<'a> {
    pub schedule: &'a Schedule,
    pub implementations: &'a [Implementation],
    pub meta: &'a Meta,
    pub records: &'a [FaultRecord],
    pub repairs: &'a [RepairRun],
    pub judgement: &'a Judgement,
    pub bounds: &'a Bounds,
    /// Attempts and failures per VIP.
    pub probes: &'a [(u64, u64)],
    /// When the harness could not see.
    pub blind: &'a [BlindSpan],
    pub start: Instant,
    pub elapsed: Duration,
    pub keepalived_requested: bool,
}

/// The whole report as text (Markdown tables).
pub fn render(input: &ReportInput<'_>) -> String {
    let mut out = String::new();
    let ReportInput {
        schedule,
        implementations,
        meta,
        records,
        judgement,
        bounds,
        ..
    } = input;
    let _ = writeln!(
        out,
        "\n## chaos soak: seed {}, {} pair(s) per implementation, {} s of faults ({:.0} s run), probe every {} ms",
        schedule.seed,
        schedule.pairs,
        schedule.duration.as_secs(),
        input.elapsed.as_secs_f64(),
        bounds.probe_interval.as_millis()
    );
    let _ = writeln!(
        out,
        "bounds: unplanned outage <= {} (master-down interval + 10 ms); planned: 0 failed probes{}; two holders after clearing <= {}\n",
        ms(Some(bounds.unplanned_outage)),
        if bounds.strict_planned {
            ""
        } else {
            " (a connection in flight when the client's ARP entry moves may be reset by the new holder: counted as a handover reset)"
        },
        ms(Some(bounds.dual_grace))
    );
    let _ = writeln!(
        out,
        "| fault | expect | impl | injected | worst outage (VIP) | failed probes (handover resets) | 2 holders after clear: total / longest | slowest settle | stale VIPs | unexpected exits | not settled | violations |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|---|");
    for &kind in &schedule.kinds {
        let expect = match kind.expectation() {
            Expectation::Unplanned => "unplanned",
            Expectation::Planned => "planned",
        };
        for &implementation in *implementations {
            if !kind.applies_to(implementation) {
                let _ = writeln!(
                    out,
                    "| {kind} | {expect} | {} | n/a | | | | | | | | |",
                    implementation.label()
                );
                continue;
            }
            let row = kind_row(kind, implementation, records, judgement);
            let injected = if row.not_run > 0 {
                format!("{} (+{} not run)", row.injected, row.not_run)
            } else {
                row.injected.to_string()
            };
            let worst = match row.worst_outage {
                Some((outage, vip)) => format!("{} ({})", ms(Some(outage)), meta.vips[vip].label),
                None => "-".into(),
            };
            let verdict = if row.violations == 0 {
                "0".to_string()
            } else {
                format!("**{}**", row.violations)
            };
            let _ = writeln!(
                out,
                "| {kind} | {expect} | {} | {injected} | {worst} | {} ({}) | {} / {} | {} | {} | {} | {} | {verdict} |",
                implementation.label(),
                row.failed_probes,
                row.handover_resets,
                ms(Some(row.dual_total)),
                ms(Some(row.dual_worst)),
                ms(row.worst_settle),
                row.stale,
                row.unexpected_exits,
                row.not_settled,
            );
        }
    }
    if input.keepalived_requested && !implementations.contains(&Implementation::Keepalived) {
        let _ = writeln!(out, "\nnote: keepalived was requested but not run");
    }
    render_vips(&mut out, input);
    let outside = judgement
        .violations
        .iter()
        .filter(|v| v.fault.is_none())
        .count();
    let _ = writeln!(
        out,
        "\nrepairs (pair restarted after it did not settle): {}; violations outside faults: {outside}; holder changes found by dumps, not events: {}",
        input.repairs.len(),
        judgement.reconciled_holder_events
    );
    render_blind(&mut out, input);
    let notes: Vec<String> = records
        .iter()
        .filter_map(|r| r.run.as_ref().map(|run| (r, run)))
        .flat_map(|(r, run)| {
            run.notes
                .iter()
                .map(move |n| format!("#{} {}: {n}", r.event.number, r.event.kind))
        })
        .collect();
    if !notes.is_empty() {
        let _ = writeln!(out, "\nnotes:");
        for note in notes.iter().take(20) {
            let _ = writeln!(out, "- {note}");
        }
        if notes.len() > 20 {
            let _ = writeln!(out, "- ... and {} more", notes.len() - 20);
        }
    }
    out
}

/// When the harness was blind, and what it therefore did not judge.
fn render_blind(out: &mut String, input: &ReportInput<'_>) {
    let offset = |at: Instant| at.saturating_duration_since(input.start).as_secs_f64();
    let of = |wanted: fn(&BlindCause) -> bool| -> Vec<&BlindSpan> {
        input.blind.iter().filter(|s| wanted(&s.cause)).collect()
    };
    let stalls = of(|c| matches!(c, BlindCause::HostStall(_)));
    let task_stalls = of(|c| matches!(c, BlindCause::TaskStall(_)));
    let silences = of(|c| matches!(c, BlindCause::ProberSilent));
    let longest = |spans: &[&BlindSpan]| spans.iter().map(|s| s.length()).max();
    let _ = writeln!(
        out,
        "\nharness blind: {} host stall(s) (a real-time thread not run for > {} ms), longest {}; {} stall(s) of ordinary tasks only, longest {}; {} prober silence(s) (> {} ms between attempts), longest {}; {} would-be violation(s) not judged",
        stalls.len(),
        blind::HOST_STALL.as_millis(),
        ms(longest(&stalls)),
        task_stalls.len(),
        ms(longest(&task_stalls)),
        silences.len(),
        blind::PROBER_SILENCE.as_millis(),
        ms(longest(&silences)),
        input.judgement.not_judged.len()
    );
    // In time order (the spans are sorted).
    for span in input.blind.iter().take(40) {
        let (what, pressure) = match span.cause {
            BlindCause::HostStall(pressure) => ("host stall", Some(pressure)),
            BlindCause::TaskStall(pressure) => ("ordinary tasks stalled", Some(pressure)),
            BlindCause::ProberSilent => ("prober silent", None),
        };
        let pressure = pressure.map_or(String::new(), |p| format!(" ({p})"));
        let _ = writeln!(
            out,
            "- {what} +{:.3}s for {}{pressure}",
            offset(span.from),
            ms(Some(span.length()))
        );
    }
    for v in input.judgement.not_judged.iter().take(20) {
        let _ = writeln!(out, "- not judged: +{:.3}s {v}", offset(v.at));
    }
}

fn render_vips(out: &mut String, input: &ReportInput<'_>) {
    // VIP -> (worst outage, fault number and kind)
    let mut worst: BTreeMap<usize, (Duration, usize, FaultKind)> = BTreeMap::new();
    for (record, figures) in input.records.iter().zip(&input.judgement.figures) {
        for vip in &figures.vips {
            if let Some(outage) = vip.worst_outage
                && worst.get(&vip.vip).is_none_or(|(w, _, _)| outage > *w)
            {
                worst.insert(vip.vip, (outage, record.event.number, record.event.kind));
            }
        }
    }
    let _ = writeln!(
        out,
        "\n| VIP | address | worst outage | during | attempts | failed |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|");
    for (index, vip) in input.meta.vips.iter().enumerate() {
        let (attempts, failed) = input.probes.get(index).copied().unwrap_or_default();
        let (outage, during) = match worst.get(&index) {
            Some((outage, number, kind)) => (ms(Some(*outage)), format!("#{number} {kind}")),
            None => ("-".into(), "-".into()),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {outage} | {during} | {attempts} | {failed} |",
            vip.label, vip.address
        );
    }
}

/// The violations, at most `limit` in full, with the time since the start of the run.
pub fn render_violations(input: &ReportInput<'_>, limit: usize) -> String {
    let mut out = String::new();
    let violations = &input.judgement.violations;
    let _ = writeln!(out, "\nviolations: {}", violations.len());
    for v in violations.iter().take(limit) {
        let _ = writeln!(
            out,
            "- +{:.3}s {v}",
            v.at.saturating_duration_since(input.start).as_secs_f64()
        );
    }
    if violations.len() > limit {
        let _ = writeln!(out, "- ... and {} more", violations.len() - limit);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chaos::invariants::{FaultFigures, FaultRun, Violation, ViolationKind, VipFigures};
    use crate::chaos::schedule::{FaultEvent, Side};

    #[test]
    fn a_kind_row_aggregates_its_records_and_counts_not_run_but_not_n_a() {
        let t = Instant::now();
        let event = |number, kind| FaultEvent {
            number,
            at: Duration::ZERO,
            pair: 0,
            side: Side::A,
            kind,
            hold: Duration::ZERO,
        };
        let run = FaultRun {
            injected: t,
            cleared: t + Duration::from_millis(500),
            end: t + Duration::from_secs(2),
            settled_at: Some(t + Duration::from_millis(900)),
            unsettled: vec![],
            stale: vec![],
            findings: vec![],
            harness: vec![],
            notes: vec![],
            interrupted: false,
        };
        let records = vec![
            FaultRecord {
                event: event(1, FaultKind::Kill),
                implementation: Implementation::Hav,
                pairs: vec![0],
                run: Some(run.clone()),
                skipped: None,
            },
            FaultRecord {
                event: event(2, FaultKind::Kill),
                implementation: Implementation::Hav,
                pairs: vec![0],
                run: None,
                skipped: Some("out of time".into()),
            },
            FaultRecord {
                event: event(2, FaultKind::Kill),
                implementation: Implementation::Keepalived,
                pairs: vec![1],
                run: None,
                skipped: Some("n/a".into()),
            },
        ];
        let judgement = Judgement {
            figures: vec![
                FaultFigures {
                    vips: vec![VipFigures {
                        vip: 1,
                        failed_probes: 7,
                        handover_resets: 0,
                        worst_outage: Some(Duration::from_millis(300)),
                        unrecovered: false,
                        dual_total: Duration::from_millis(20),
                        dual_worst: Duration::from_millis(20),
                    }],
                    stale: 0,
                    unexpected_exits: 0,
                },
                FaultFigures::default(),
                FaultFigures::default(),
            ],
            violations: vec![Violation {
                kind: ViolationKind::DualHolders,
                implementation: Some(Implementation::Hav),
                fault: Some((1, FaultKind::Kill)),
                at: t,
                detail: String::new(),
            }],
            not_judged: vec![],
            reconciled_holder_events: 0,
        };
        let row = kind_row(FaultKind::Kill, Implementation::Hav, &records, &judgement);
        assert_eq!(row.injected, 1);
        assert_eq!(row.not_run, 1);
        assert_eq!(row.failed_probes, 7);
        assert_eq!(row.worst_outage, Some((Duration::from_millis(300), 1)));
        assert_eq!(row.worst_settle, Some(Duration::from_millis(400)));
        assert_eq!(row.violations, 1);
        let keepalived = kind_row(
            FaultKind::Kill,
            Implementation::Keepalived,
            &records,
            &judgement,
        );
        assert_eq!((keepalived.injected, keepalived.not_run), (0, 0));
    }
}
