//! Latency summaries and the figures table.

use std::time::Duration;

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

/// Everything measured for one N.
#[derive(Debug, Clone, Default)]
pub struct RunFigures {
    pub agents: usize,
    pub certs_issued: usize,
    pub certs_seconds: f64,
    pub connected: usize,
    pub connect_failures: usize,
    pub connect_all: Duration,
    pub connect_latency: Summary,
    /// Until the watcher saw every agent's `ready` event (snapshots handled).
    pub settled: Option<Duration>,
    /// Events the watcher missed during the connect phase (presence and `ready` bursts).
    pub connect_lagged: u64,
    pub connect_usage: Usage,
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
    pub fanout_lost: usize,
    pub fanout_lagged: u64,
    pub fanout_usage: Usage,
    pub reconnect_all: Duration,
    pub reconnect_failures: usize,
    pub reconnect_latency: Summary,
    /// Until the coordinator's CPU use fell below 10% (desired-config checks done).
    pub reconnect_idle: Option<Duration>,
    pub reconnect_usage: Usage,
    pub load_cpu_seconds: f64,
}

/// Prints the table, one column per N.
pub fn print_table(runs: &[RunFigures]) {
    let mut rows: Vec<(String, Vec<String>)> = Vec::new();
    let mut row = |label: &str, f: &dyn Fn(&RunFigures) -> String| {
        rows.push((label.to_owned(), runs.iter().map(f).collect()));
    };
    row("agents (N)", &|r| r.agents.to_string());
    row("host load average at start", &|r| r.load_average.clone());
    row("certs issued now / s", &|r| {
        format!("{} / {:.1}", r.certs_issued, r.certs_seconds)
    });
    row("connected / failed", &|r| {
        format!("{} / {}", r.connected, r.connect_failures)
    });
    row("connect: all Welcomed", &|r| secs(r.connect_all));
    row("connect: p50 / p99 / max", &|r| triple(&r.connect_latency));
    row(
        "connect: all snapshots handled",
        &|r| match (r.settled, r.connect_lagged) {
            (Some(settled), _) => secs(settled),
            (None, 0) => "timeout".into(),
            (None, _) => "unseen: watcher lagged".into(),
        },
    );
    row("connect: events the watcher missed", &|r| {
        r.connect_lagged.to_string()
    });
    row("connect: coordinator CPU s / %", &|r| {
        format!(
            "{:.1} / {:.0}",
            r.connect_usage.cpu_seconds, r.connect_usage.cpu_percent
        )
    });
    row("coordinator RSS idle / per agent", &|r| {
        format!(
            "{} / {:.0} KiB",
            mib(r.idle_rss_kib),
            r.idle_rss_kib.saturating_sub(r.base_rss_kib) as f64 / r.agents.max(1) as f64
        )
    });
    row("push: request / response size", &|r| {
        format!(
            "{} / {}",
            kib(r.push_request_bytes),
            kib(r.push_response_bytes)
        )
    });
    row("push: to last ack", &|r| opt(r.push_last_ack));
    row("push: to response", &|r| opt(r.push_response));
    row("push: applied", &|r| match &r.push_error {
        Some(e) => format!("error: {e}"),
        None => format!("{}/{}", r.push_applied, r.connected),
    });
    row("push: coordinator CPU % / peak RSS", &|r| {
        format!(
            "{:.0} / {}",
            r.push_usage.cpu_percent,
            mib(r.push_usage.peak_rss_kib)
        )
    });
    row("fan-out: events @ rate", &|r| {
        format!("{} @ {:.0}/s", r.fanout_events, r.fanout_rate)
    });
    row("fan-out: p50 / p99 / max", &|r| triple(&r.fanout_latency));
    row("fan-out: lost / lagged", &|r| {
        format!("{} / {}", r.fanout_lost, r.fanout_lagged)
    });
    row("fan-out: coordinator CPU % / RSS", &|r| {
        format!(
            "{:.0} / {}",
            r.fanout_usage.cpu_percent,
            mib(r.fanout_usage.rss_kib)
        )
    });
    row("reconnect: all Welcomed / failed", &|r| {
        format!("{} / {}", secs(r.reconnect_all), r.reconnect_failures)
    });
    row("reconnect: p50 / p99 / max", &|r| {
        triple(&r.reconnect_latency)
    });
    row("reconnect: until coordinator idle", &|r| {
        opt(r.reconnect_idle)
    });
    row("reconnect: coordinator CPU s / %", &|r| {
        format!(
            "{:.1} / {:.0}",
            r.reconnect_usage.cpu_seconds, r.reconnect_usage.cpu_percent
        )
    });
    row("coordinator VmHWM", &|r| mib(r.reconnect_usage.hwm_kib));
    row("load generator CPU s", &|r| {
        format!("{:.1}", r.load_cpu_seconds)
    });

    let width = rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
    let cell = rows
        .iter()
        .flat_map(|(_, cells)| cells.iter().map(String::len))
        .max()
        .unwrap_or(0);
    println!();
    println!(
        "| {:width$} |{}",
        "figure",
        runs.iter()
            .map(|_| format!(" {:cell$} |", ""))
            .collect::<String>()
    );
    println!(
        "|{}|{}",
        "-".repeat(width + 2),
        runs.iter()
            .map(|_| format!("{}|", "-".repeat(cell + 2)))
            .collect::<String>()
    );
    for (label, cells) in rows {
        println!(
            "| {label:width$} |{}",
            cells
                .iter()
                .map(|c| format!(" {c:>cell$} |"))
                .collect::<String>()
        );
    }
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
