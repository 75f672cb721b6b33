//! Failover benchmark: inflicts each scenario on each contender (keepalived, hav) in fresh
//! network-namespace topologies and prints client-perceived outage tables and idle cost.
//!
//! Needs root, iproute2 and keepalived. Example:
//! `hav-failover-bench --reps 5 --scenarios link-cut,crash --timings v3-100ms,v3-20ms`

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use hav_tests::bench::{
    self, BenchConfig, BenchError, Contender, HavContender, KeepalivedContender, Scenario, Timing,
};
use hav_tests::netns;

#[derive(Debug, Parser)]
#[command(about = "VRRP failover benchmark: keepalived vs hav in network namespaces")]
struct Args {
    /// Repetitions per (contender, scenario, timing).
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Comma-separated: link-cut, crash, graceful-stop, tracked-death-file, tracked-death-script.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "link-cut,crash,graceful-stop,tracked-death-file,tracked-death-script"
    )]
    scenarios: Vec<String>,
    /// Comma-separated: v2-1s, v3-100ms, v3-20ms.
    #[arg(long, value_delimiter = ',', default_value = "v2-1s,v3-100ms,v3-20ms")]
    timings: Vec<String>,
    /// Comma-separated: keepalived, hav, hav-ref (another build of hav-agent, at
    /// `HAV_REF_AGENT_BIN`: the idle ratios then also compare the two builds).
    #[arg(long, value_delimiter = ',', default_value = "keepalived,hav")]
    contenders: Vec<String>,
    /// Milliseconds between client probes.
    #[arg(long, default_value_t = 5)]
    probe_interval_ms: u64,
    /// Idle measurement window in seconds (0 skips it).
    #[arg(long, default_value_t = 10)]
    idle_window_s: u64,
    /// Idle rounds per timing: in each, every contender's pair runs alone for one window, the
    /// contenders taking turns.
    #[arg(long, default_value_t = 3)]
    idle_rounds: usize,
    /// Run every contender's pair at once through the same idle windows (two daemons on one
    /// CPU then share its wake-ups, so each costs less than alone).
    #[arg(long)]
    idle_together: bool,
    /// Measure idle cost in mixed pairs, beside the contender named here (keepalived, hav or
    /// hav-ref): each contender's master beside its backup, then each contender's backup beside
    /// its master.
    #[arg(long, conflicts_with = "idle_together")]
    idle_peer: Option<String>,
    /// Seconds a fresh pair runs before its idle window opens.
    #[arg(long, default_value_t = 6)]
    idle_settle_s: u64,
    /// Comma-separated timings of the idle measurement: v2-1s, v3-100ms, v3-20ms, v3-10ms.
    #[arg(long, value_delimiter = ',', default_value = "v3-100ms")]
    idle_timings: Vec<String>,
    /// Also count system calls per second while idle (strace -c -f, in a second window).
    #[arg(long)]
    syscalls: bool,
    /// Measure idle cost with both nodes free to run on any CPU, as if one host ran both (by
    /// default each node has a CPU of its own, as two hosts do).
    #[arg(long)]
    idle_shared_cpus: bool,
    /// Upper bound (ms) of the random delay before each fault (phase randomisation).
    #[arg(long, default_value_t = 1000)]
    fault_jitter_ms: u64,
    /// VRRP unicast to the peer instead of multicast.
    #[arg(long)]
    unicast: bool,
    /// Path of hav-test-httpd (default: next to this binary).
    #[arg(long)]
    httpd: Option<PathBuf>,
}

/// The contender called `name`.
fn contender(name: &str) -> anyhow::Result<Box<dyn Contender>> {
    Ok(match name {
        "keepalived" => Box::new(KeepalivedContender),
        "hav" => Box::new(HavContender::default()),
        bench::HAV_REFERENCE => {
            let binary = std::env::var_os("HAV_REF_AGENT_BIN")
                .context("the contender hav-ref runs the hav-agent at HAV_REF_AGENT_BIN")?;
            Box::new(HavContender::reference(binary.into()))
        }
        other => bail!("unknown contender {other}"),
    })
}

fn main() -> anyhow::Result<()> {
    // The hav contender runs `HAV_AGENT_BIN`, else the hav-agent built beside this binary.
    let args = Args::parse();
    let scenarios = args
        .scenarios
        .iter()
        .map(|s| Scenario::parse(s).with_context(|| format!("unknown scenario {s}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let timings = args
        .timings
        .iter()
        .map(|t| Timing::parse(t).with_context(|| format!("unknown timing {t}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let contenders = (args.contenders.iter())
        .map(|name| contender(name))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let peer = args.idle_peer.as_deref().map(contender).transpose()?;
    let httpd = match args.httpd {
        Some(path) => path,
        None => bench::sibling_binary("hav-test-httpd")?,
    };
    let mut config = BenchConfig::new(httpd);
    config.probe_interval = Duration::from_millis(args.probe_interval_ms);
    config.unicast = args.unicast;
    config.fault_jitter = Duration::from_millis(args.fault_jitter_ms);
    config.count_syscalls = args.syscalls;
    config.idle_apart = !args.idle_shared_cpus;
    config.idle_together = args.idle_together;
    config.idle_settle = Duration::from_secs(args.idle_settle_s);
    let idle_timings = args
        .idle_timings
        .iter()
        .map(|t| Timing::parse(t).with_context(|| format!("unknown timing {t}")))
        .collect::<anyhow::Result<Vec<_>>>()?;

    let swept = netns::sweep_stale()?;
    if !swept.is_empty() {
        eprintln!("removed stale namespaces of crashed runs: {swept:?}");
    }

    let mut results = Vec::new();
    let mut skipped: Vec<(&'static str, String)> = Vec::new();
    let mut ran: Vec<&'static str> = Vec::new();
    'contenders: for contender in &contenders {
        for &scenario in &scenarios {
            for &timing in &timings {
                for rep in 0..args.reps {
                    match bench::run_once(contender.as_ref(), scenario, timing, &config) {
                        Ok(result) => {
                            eprintln!(
                                "{} {} {} #{rep}: outage {:?}, failed probes {}, old-holder replies {}",
                                contender.name(),
                                scenario.label(),
                                timing.label(),
                                result.report.outage,
                                result.report.failed_probes,
                                result.report.old_holder_replies,
                            );
                            results.push(result);
                        }
                        Err(BenchError::NotWired(what)) => {
                            skipped.push((contender.name(), format!("{what} is not yet wired")));
                            continue 'contenders;
                        }
                        Err(e) => {
                            eprintln!(
                                "{} {} {} #{rep}: FAILED: {e}",
                                contender.name(),
                                scenario.label(),
                                timing.label()
                            );
                        }
                    }
                }
            }
        }
        ran.push(contender.name());
    }
    print!(
        "{}",
        bench::render_tables(&results, &scenarios, &timings, &ran, &skipped, &config)
    );

    if args.idle_window_s > 0 {
        let mut costs = Vec::new();
        let measured: Vec<&dyn Contender> = contenders
            .iter()
            .filter(|c| ran.contains(&c.name()))
            .map(|c| c.as_ref())
            .collect();
        for &timing in &idle_timings {
            match bench::measure_idle(
                &measured,
                peer.as_deref(),
                timing,
                Duration::from_secs(args.idle_window_s),
                args.idle_rounds,
                &config,
            ) {
                Ok(measured) => costs.extend(measured),
                Err(e) => eprintln!("idle {}: FAILED: {e}", timing.label()),
            }
        }
        print!("{}", bench::render_idle(&costs));
    }
    Ok(())
}
