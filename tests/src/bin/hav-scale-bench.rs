//! Scale benchmarks, hav and keepalived side by side in one run, printed as tables and
//! hav / keepalived ratios:
//!
//! - `many-instances`: 255 IPv4 + 255 IPv6 VRRPv3 instances at 100 ms on one interface per
//!   node: idle CPU and RSS, and the time from a link cut of the master until the backup holds
//!   every VIP.
//! - `loaded`: 10 ms adverts while `stress-ng --cpu` loads every core: false failovers in a
//!   fault-free soak, then link-cut failover times; hav also runs with `max_auto_priority`.
//!
//! Needs root, iproute2, keepalived and stress-ng (`scripts/setup-host.sh`). The hav contender
//! runs `HAV_AGENT_BIN`, else the hav-agent built beside this binary. Examples:
//! `hav-scale-bench many-instances --reps 5`, `hav-scale-bench loaded --minutes 10 --cuts 20`.

use std::time::Duration;

use anyhow::bail;
use clap::{Parser, Subcommand};
use hav_tests::bench::loaded::{self, LoadedConfig};
use hav_tests::bench::many_instances::{self, ManyInstancesConfig};
use hav_tests::bench::scale_pair::DaemonKind;
use hav_tests::netns;

#[derive(Debug, Parser)]
#[command(about = "VRRP scale benchmarks: hav vs keepalived in network namespaces")]
struct Args {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// 255 IPv4 + 255 IPv6 instances per node at 100 ms: idle cost and takeover of every VIP.
    ManyInstances {
        /// Link cuts per contender, each on a fresh pair.
        #[arg(long, default_value_t = 5)]
        reps: usize,
        /// Instances per address family (VRIDs 1 to this).
        #[arg(long, default_value_t = 255)]
        per_family: u8,
        /// Idle measurement window in seconds, in each contender's first repetition (0 skips it).
        #[arg(long, default_value_t = 10)]
        idle_window_s: u64,
        /// Comma-separated: keepalived, hav.
        #[arg(long, value_delimiter = ',', default_value = "keepalived,hav")]
        contenders: Vec<String>,
    },
    /// 10 ms adverts under stress-ng: false failovers in a soak, then link-cut failovers.
    Loaded {
        /// Length of the fault-free soak in minutes.
        #[arg(long, default_value_t = 10)]
        minutes: u64,
        /// A 1-minute soak (overrides --minutes).
        #[arg(long)]
        quick: bool,
        /// Link cuts per contender after the soak, still under load.
        #[arg(long, default_value_t = 20)]
        cuts: usize,
        /// `stress-ng --cpu` workers.
        #[arg(long, default_value_t = 2)]
        cpu_workers: usize,
        /// The realtime priority of the `hav + max_auto_priority` pair.
        #[arg(long, default_value_t = 10)]
        max_auto_priority: u8,
        /// Milliseconds between the client's connection attempts during the cuts.
        #[arg(long, default_value_t = 2)]
        probe_interval_ms: u64,
        /// Comma-separated: keepalived, hav, hav-auto-priority.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "keepalived,hav,hav-auto-priority"
        )]
        contenders: Vec<String>,
    },
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let swept = netns::sweep_stale()?;
    if !swept.is_empty() {
        eprintln!("removed stale namespaces of crashed runs: {swept:?}");
    }
    match args.bench {
        Bench::ManyInstances {
            reps,
            per_family,
            idle_window_s,
            contenders,
        } => {
            let config = ManyInstancesConfig {
                per_family,
                idle_window: Duration::from_secs(idle_window_s),
                ..ManyInstancesConfig::default()
            };
            let kinds = parse_kinds(&contenders, 10)?;
            let mut idle = Vec::new();
            if !config.idle_window.is_zero() {
                match many_instances::idle_costs_each_alone(&kinds, &config) {
                    Ok(costs) => idle = costs,
                    Err(e) => eprintln!("idle cost: FAILED: {e}"),
                }
            }
            let mut runs = Vec::new();
            for kind in kinds {
                for rep in 0..reps {
                    match many_instances::run_once(kind, &config) {
                        Ok(mut run) => {
                            if rep == 0 {
                                run.idle = (idle.iter())
                                    .find(|(measured, _)| *measured == kind)
                                    .map(|(_, cost)| *cost);
                            }
                            eprintln!(
                                "{} #{rep}: every VIP on the backup after {:?} (first {:?}, last {:?}), {} missing",
                                kind.label(),
                                run.takeover.all_held,
                                run.takeover.first,
                                run.last_instance,
                                run.takeover.missing
                            );
                            runs.push(run);
                        }
                        Err(e) => eprintln!("{} #{rep}: FAILED: {e}", kind.label()),
                    }
                }
            }
            print!("{}", many_instances::render(&runs, &config));
        }
        Bench::Loaded {
            minutes,
            quick,
            cuts,
            cpu_workers,
            max_auto_priority,
            probe_interval_ms,
            contenders,
        } => {
            let config = LoadedConfig {
                soak: Duration::from_secs(if quick { 60 } else { minutes * 60 }),
                cuts,
                cpu_workers,
                probe_interval: Duration::from_millis(probe_interval_ms),
                ..LoadedConfig::default()
            };
            let kinds = parse_kinds(&contenders, max_auto_priority)?;
            let results = loaded::run(&kinds, &config)?;
            print!("{}", loaded::render(&results, &config));
        }
    }
    Ok(())
}

fn parse_kinds(names: &[String], max_auto_priority: u8) -> anyhow::Result<Vec<DaemonKind>> {
    names
        .iter()
        .map(|name| match name.as_str() {
            "keepalived" => Ok(DaemonKind::Keepalived),
            "hav" => Ok(DaemonKind::Hav),
            "hav-auto-priority" => Ok(DaemonKind::HavAutoPriority(max_auto_priority)),
            other => bail!("unknown contender {other}"),
        })
        .collect()
}
