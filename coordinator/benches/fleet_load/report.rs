//! Latency summaries and the figures table: one column per run (N agents on one backend), runs
//! of the same N side by side, and after a pair of redb and etcd runs of the same N a column of
//! etcd ÷ redb ratios for the figures where a ratio means something (times, CPU, memory).

use std::time::Duration;

use crate::Backend;
use crate::etcd::EtcdRates;
use crate::process::Usage;

/// p50 / p99 / max of a set of latencies.
#[derive(Debug, Clone, Copy, Default)]
pub struct Summary {
    pub count: usize,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl Summary {
    pub fn of(mut samples: Vec<Duration>) -> Summary {
        samples.sort_unstable();
        // Nearest-rank percentile.
        let rank = |p: f64| {
            let n = samples.len();
            let index = ((p * n as f64).ceil() as usize).clamp(1, n.max(1)) - 1;
            samples.get(index).copied().unwrap_or_default()
        };
        Summary {
            count: samples.len(),
            p50: rank(0.50),
            p99: rank(0.99),
            max: samples.last().copied().unwrap_or_default(),
        }
    }
}

/// Everything measured for one N on one backend. CPU and memory figures are summed over the
/// coordinator processes.
#[derive(Debug, Clone, Default)]
pub struct RunFigures {
    pub backend: Backend,
    pub coordinators: usize,
    pub agents: usize,
    pub certs_issued: usize,
    pub certs_seconds: f64,
    pub connected: usize,
    pub connect_failures: usize,
    pub connect_all: Duration,
    pub connect_latency: Summary,
    /// Dials refused or failed and tried again (a follower refusing, a dead coordinator).
    pub connect_refused: usize,
    /// Agents welcomed by each coordinator after the connect phase, and which one led then.
    pub held: Vec<usize>,
    pub leader: Option<usize>,
    /// Until the watcher saw every agent's `ready` event (snapshots handled).
    pub settled: Option<Duration>,
    /// Events the watcher missed during the connect phase (presence and `ready` bursts).
    pub connect_lagged: u64,
    pub connect_usage: Usage,
    /// etcd members' CPU and etcd's write rates over the connect phase (etcd only).
    pub etcd_connect_usage: Option<Usage>,
    pub etcd_connect: Option<EtcdRates>,
    pub idle_rss_kib: u64,
    /// Before any agent connected.
    pub base_rss_kib: u64,
    /// Host 1-minute load average when the run started (the machine is shared).
    pub load_average: String,
    pub push_request_bytes: usize,
    pub push_response_bytes: usize,
    pub push_response: Option<Duration>,
    pub push_last_ack: Option<Duration>,
    pub push_applied: usize,
    pub push_error: Option<String>,
    pub push_usage: Usage,
    pub fanout_events: usize,
    pub fanout_rate: f64,
    pub fanout_latency: Summary,
    /// The fan-out latencies of events from agents on the leader (the watcher's coordinator),
    /// and from agents on the others (relayed through the store).
    pub fanout_local: Summary,
    pub fanout_relayed: Summary,
    pub fanout_lost: usize,
    pub fanout_lagged: u64,
    pub fanout_usage: Usage,
    pub etcd_fanout_usage: Option<Usage>,
    pub etcd_fanout: Option<EtcdRates>,
    pub reconnect_all: Duration,
    pub reconnect_failures: usize,
    pub reconnect_refused: usize,
    pub reconnect_latency: Summary,
    /// Until the coordinator's CPU use fell below 10% (desired-config checks done).
    pub reconnect_idle: Option<Duration>,
    pub reconnect_usage: Usage,
    /// The leading coordinator SIGKILLed (etcd only).
    pub failover: Option<Failover>,
    pub load_cpu_seconds: f64,
}

/// The leading coordinator SIGKILLed, with the agents it held.
#[derive(Debug, Clone, Default)]
pub struct Failover {
    /// Until a surviving coordinator said (`About`) that it leads; None: none within the timeout.
    pub leader_after: Option<Duration>,
    pub new_leader: Option<usize>,
    /// Agents the killed coordinator held, each dialling the others again.
    pub moved: usize,
    /// Until every moved agent was welcomed elsewhere (N connected again).
    pub back_after: Option<Duration>,
    pub back_failures: usize,
    pub back_refused: usize,
    pub back_latency: Summary,
    /// Agents held by each coordinator after (the killed one at 0).
    pub held_after: Vec<usize>,
    /// The survivors' CPU from the kill until every moved agent was back.
    pub usage: Usage,
}

/// A column of the table: a run, or the ratios of an etcd run to the redb run of the same N.
enum Column<'a> {
    Run(&'a RunFigures),
    Ratio {
        redb: &'a RunFigures,
        etcd: &'a RunFigures,
    },
}

/// The figure of a run a ratio is taken of (None: not measured).
type Measure = dyn Fn(&RunFigures) -> Option<f64>;

/// The table being built: its columns and the rows so far (the header first).
struct Table<'a> {
    columns: Vec<Column<'a>>,
    rows: Vec<Vec<String>>,
}

impl Table<'_> {
    /// A row: `cell` of each run, and in ratio columns the ratio of `measure` if given.
    fn row(
        &mut self,
        label: &str,
        cell: &dyn Fn(&RunFigures) -> String,
        measure: Option<&Measure>,
    ) {
        let mut cells = vec![label.to_owned()];
        cells.extend(self.columns.iter().map(|column| {
            match column {
                Column::Run(run) => cell(run),
                Column::Ratio { redb, etcd } => measure
                    .and_then(|measure| Some((measure(redb)?, measure(etcd)?)))
                    .filter(|(redb, _)| *redb > 0.0)
                    .map(|(redb, etcd)| format!("×{:.2}", etcd / redb))
                    .unwrap_or_default(),
            }
        }));
        self.rows.push(cells);
    }
}

/// Prints the table: the runs of each N side by side, in the order given, each etcd run
/// followed by its ratios to the redb run of the same N if there is one.
pub fn print_table(runs: &[RunFigures]) {
    let mut columns = Vec::new();
    for (position, run) in runs.iter().enumerate() {
        columns.push(Column::Run(run));
        let same_n = |other: &&RunFigures| other.agents == run.agents;
        let redb = runs[..position]
            .iter()
            .filter(same_n)
            .find(|r| r.backend == Backend::Redb);
        if let (Backend::Etcd, Some(redb)) = (run.backend, redb) {
            columns.push(Column::Ratio { redb, etcd: run });
        }
    }
    let mut header = vec!["figure".to_owned()];
    header.extend(columns.iter().map(|column| match column {
        Column::Run(run) => format!("N={} {}", run.agents, run.backend.label(run.coordinators)),
        Column::Ratio { .. } => "etcd ÷ redb".to_owned(),
    }));
    let mut table = Table {
        columns,
        rows: vec![header],
    };
    let mut row = |label: &str, cell: &dyn Fn(&RunFigures) -> String, measure: Option<&Measure>| {
        table.row(label, cell, measure)
    };
    row(
        "coordinators / agents (N)",
        &|r| format!("{} / {}", r.coordinators, r.agents),
        None,
    );
    row(
        "host load average at start",
        &|r| r.load_average.clone(),
        None,
    );
    row(
        "certs issued now / s",
        &|r| format!("{} / {:.1}", r.certs_issued, r.certs_seconds),
        None,
    );
    row(
        "connected / failed",
        &|r| format!("{} / {}", r.connected, r.connect_failures),
        None,
    );
    row(
        "connect: agents held per coordinator",
        &|r| held(&r.held, r.leader),
        None,
    );
    row(
        "connect: dials refused (tried again)",
        &|r| r.connect_refused.to_string(),
        None,
    );
    row(
        "connect: all Welcomed",
        &|r| secs(r.connect_all),
        Some(&|r| Some(r.connect_all.as_secs_f64())),
    );
    row(
        "connect: p50 / p99 / max",
        &|r| triple(&r.connect_latency),
        Some(&|r| Some(r.connect_latency.p99.as_secs_f64())),
    );
    row(
        "connect: all snapshots handled",
        &|r| match (r.settled, r.connect_lagged) {
            (Some(settled), _) => secs(settled),
            (None, 0) => "timeout".into(),
            (None, _) => "unseen: watcher lagged".into(),
        },
        Some(&|r| r.settled.map(|d| d.as_secs_f64())),
    );
    row(
        "connect: events the watcher missed",
        &|r| r.connect_lagged.to_string(),
        None,
    );
    row(
        "connect: coordinator CPU s / %",
        &|r| {
            format!(
                "{:.1} / {:.0}",
                r.connect_usage.cpu_seconds, r.connect_usage.cpu_percent
            )
        },
        Some(&|r| Some(r.connect_usage.cpu_seconds)),
    );
    row(
        "connect: etcd CPU s / % / RSS",
        &etcd_only(|r| {
            r.etcd_connect_usage.map(|u| {
                format!(
                    "{:.1} / {:.0} / {}",
                    u.cpu_seconds,
                    u.cpu_percent,
                    mib(u.rss_kib)
                )
            })
        }),
        None,
    );
    row(
        "connect: etcd keys / txns / proposals per s",
        &etcd_only(|r| r.etcd_connect.map(|rates| rates_cell(&rates))),
        None,
    );
    row(
        "coordinator RSS idle / per agent",
        &|r| format!("{} / {:.1} KiB", mib(r.idle_rss_kib), rss_per_agent(r)),
        Some(&|r| Some(rss_per_agent(r))),
    );
    row(
        "push: request / response size",
        &|r| {
            format!(
                "{} / {}",
                kib(r.push_request_bytes),
                kib(r.push_response_bytes)
            )
        },
        None,
    );
    row(
        "push: to last ack",
        &|r| opt(r.push_last_ack),
        Some(&|r| r.push_last_ack.map(|d| d.as_secs_f64())),
    );
    row(
        "push: to response",
        &|r| opt(r.push_response),
        Some(&|r| r.push_response.map(|d| d.as_secs_f64())),
    );
    row(
        "push: applied",
        &|r| match &r.push_error {
            // The whole error is in the log; the table keeps its columns narrow.
            Some(e) => shorten(&format!("error: {e}"), 60),
            None => format!("{}/{}", r.push_applied, r.connected),
        },
        None,
    );
    row(
        "push: coordinator CPU % / peak RSS",
        &|r| {
            format!(
                "{:.0} / {}",
                r.push_usage.cpu_percent,
                mib(r.push_usage.peak_rss_kib)
            )
        },
        None,
    );
    row(
        "fan-out: events @ rate",
        &|r| format!("{} @ {:.0}/s", r.fanout_events, r.fanout_rate),
        None,
    );
    row(
        "fan-out: p50 / p99 / max",
        &|r| triple(&r.fanout_latency),
        Some(&|r| Some(r.fanout_latency.p99.as_secs_f64())),
    );
    row(
        "fan-out: p99 from the leader's agents / others'",
        &|r| {
            let p99 = |s: &Summary| match s.count {
                0 => "-".to_owned(),
                count => format!("{} ms ({count})", ms(s.p99)),
            };
            format!("{} / {}", p99(&r.fanout_local), p99(&r.fanout_relayed))
        },
        None,
    );
    row(
        "fan-out: lost / lagged",
        &|r| format!("{} / {}", r.fanout_lost, r.fanout_lagged),
        None,
    );
    row(
        "fan-out: coordinator CPU % / RSS",
        &|r| {
            format!(
                "{:.0} / {}",
                r.fanout_usage.cpu_percent,
                mib(r.fanout_usage.rss_kib)
            )
        },
        Some(&|r| Some(r.fanout_usage.cpu_percent)),
    );
    row(
        "fan-out: etcd CPU %",
        &etcd_only(|r| r.etcd_fanout_usage.map(|u| format!("{:.0}", u.cpu_percent))),
        None,
    );
    row(
        "fan-out: etcd keys / txns / proposals per s",
        &etcd_only(|r| r.etcd_fanout.map(|rates| rates_cell(&rates))),
        None,
    );
    row(
        "reconnect: all Welcomed / failed",
        &|r| format!("{} / {}", secs(r.reconnect_all), r.reconnect_failures),
        Some(&|r| Some(r.reconnect_all.as_secs_f64())),
    );
    row(
        "reconnect: dials refused (tried again)",
        &|r| r.reconnect_refused.to_string(),
        None,
    );
    row(
        "reconnect: p50 / p99 / max",
        &|r| triple(&r.reconnect_latency),
        Some(&|r| Some(r.reconnect_latency.p99.as_secs_f64())),
    );
    row(
        "reconnect: until coordinators idle",
        &|r| opt(r.reconnect_idle),
        Some(&|r| r.reconnect_idle.map(|d| d.as_secs_f64())),
    );
    row(
        "reconnect: coordinator CPU s / %",
        &|r| {
            format!(
                "{:.1} / {:.0}",
                r.reconnect_usage.cpu_seconds, r.reconnect_usage.cpu_percent
            )
        },
        Some(&|r| Some(r.reconnect_usage.cpu_seconds)),
    );
    row(
        "coordinator VmHWM",
        &|r| mib(r.reconnect_usage.hwm_kib),
        Some(&|r| Some(r.reconnect_usage.hwm_kib as f64)),
    );
    row(
        "leader SIGKILLed: another leads after",
        &etcd_only(|r| {
            let failover = r.failover.as_ref()?;
            Some(match (failover.leader_after, failover.new_leader) {
                (Some(after), Some(leader)) => format!("{} (c{leader})", secs(after)),
                _ => "none within the timeout".into(),
            })
        }),
        None,
    );
    row(
        "leader SIGKILLed: its agents back / failed",
        &etcd_only(|r| {
            let failover = r.failover.as_ref()?;
            Some(format!(
                "{} in {} / {}",
                failover.moved,
                opt(failover.back_after),
                failover.back_failures
            ))
        }),
        None,
    );
    row(
        "leader SIGKILLed: back p50 / p99 / max",
        &etcd_only(|r| Some(triple(&r.failover.as_ref()?.back_latency))),
        None,
    );
    row(
        "leader SIGKILLed: dials refused",
        &etcd_only(|r| Some(r.failover.as_ref()?.back_refused.to_string())),
        None,
    );
    row(
        "leader SIGKILLed: agents held after",
        &etcd_only(|r| {
            let failover = r.failover.as_ref()?;
            Some(held(&failover.held_after, failover.new_leader))
        }),
        None,
    );
    row(
        "leader SIGKILLed: survivors' CPU s",
        &etcd_only(|r| Some(format!("{:.1}", r.failover.as_ref()?.usage.cpu_seconds))),
        None,
    );
    row(
        "load generator CPU s",
        &|r| format!("{:.1}", r.load_cpu_seconds),
        None,
    );

    let rows = table.rows;
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| {
            rows.iter()
                .map(|cells| cells[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    println!();
    for (number, cells) in rows.iter().enumerate() {
        let line: String = cells
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(c, (cell, &width))| {
                if c == 0 {
                    format!("| {cell:width$} |")
                } else {
                    format!(" {cell:>width$} |")
                }
            })
            .collect();
        println!("{line}");
        if number == 0 {
            let rule: String = widths
                .iter()
                .map(|w| format!("{}|", "-".repeat(w + 2)))
                .collect();
            println!("|{rule}");
        }
    }
}

/// A cell that some runs do not have (the etcd-only figures on redb): `-` there.
fn etcd_only(cell: impl Fn(&RunFigures) -> Option<String>) -> impl Fn(&RunFigures) -> String {
    move |r| cell(r).unwrap_or_else(|| "-".into())
}

/// Agents held per coordinator, `c0 1000 (leader) / c1 0 / c2 0`; a lone coordinator's count.
fn held(held: &[usize], leader: Option<usize>) -> String {
    if held.len() <= 1 {
        return held.first().copied().unwrap_or(0).to_string();
    }
    held.iter()
        .enumerate()
        .map(|(c, count)| {
            let mark = if leader == Some(c) { "*" } else { "" };
            format!("c{c}{mark} {count}")
        })
        .collect::<Vec<_>>()
        .join(" / ")
}

/// `text` cut to `limit` characters, an ellipsis marking a cut.
fn shorten(text: &str, limit: usize) -> String {
    if text.chars().count() <= limit {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(limit.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

fn rss_per_agent(r: &RunFigures) -> f64 {
    r.idle_rss_kib.saturating_sub(r.base_rss_kib) as f64 / r.agents.max(1) as f64
}

fn rates_cell(rates: &EtcdRates) -> String {
    format!(
        "{:.0} / {:.0} / {:.0}",
        rates.keys_per_second, rates.revisions_per_second, rates.proposals_per_second
    )
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn opt(d: Option<Duration>) -> String {
    d.map(secs).unwrap_or_else(|| "-".into())
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

fn triple(s: &Summary) -> String {
    format!("{} / {} / {} ms", ms(s.p50), ms(s.p99), ms(s.max))
}

fn kib(bytes: usize) -> String {
    format!("{} KiB", bytes / 1024)
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}
