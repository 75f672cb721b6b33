//! The chaos soak: a fleet of hav-agent pairs (and, with `--keepalived`, keepalived pairs) in
//! network namespaces, a client probing every VIP every 5 ms, and faults from a seeded schedule;
//! prints a report per fault kind and exits non-zero on any invariant violation, with the seed
//! and the schedule to replay it (`--seed N` with the same other options).
//!
//! Needs root, iproute2, nftables (and keepalived for `--keepalived`). Example:
//! `cargo run --release -p hav-tests --bin hav-chaos -- --minutes 30 --keepalived`

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use hav_tests::chaos::schedule::{FaultKind, Schedule};
use hav_tests::chaos::{self, ChaosConfig};

#[derive(Debug, Parser)]
#[command(about = "Chaos soak: seeded faults against VRRP pairs in network namespaces")]
struct Args {
    /// Seed of the fault schedule (default: random, printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Length of the fault schedule in minutes.
    #[arg(long, conflicts_with = "seconds")]
    minutes: Option<f64>,
    /// Length of the fault schedule in seconds (what a replay line uses).
    #[arg(long)]
    seconds: Option<u64>,
    /// hav pairs (and as many keepalived pairs with --keepalived), two VIPs each.
    #[arg(long, default_value_t = 3)]
    pairs: usize,
    /// Comma-separated fault kinds (default: all). Run with --list-faults to see them.
    #[arg(long, value_delimiter = ',')]
    faults: Vec<String>,
    /// Run the same schedule against keepalived pairs too (where a fault applies to it).
    #[arg(long)]
    keepalived: bool,
    /// Milliseconds between two probes of each VIP.
    #[arg(long, default_value_t = 5)]
    probe_interval_ms: u64,
    /// Seconds a pair may take to settle after a fault is cleared.
    #[arg(long, default_value_t = 10)]
    settle_timeout_s: u64,
    /// Count every failed probe in a planned fault, even a connection in flight that the new
    /// holder reset when the client's ARP entry moved to it.
    #[arg(long)]
    strict_planned: bool,
    /// Print the schedule and exit.
    #[arg(long)]
    dry_run: bool,
    /// List the fault kinds and exit.
    #[arg(long)]
    list_faults: bool,
}

fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    if args.list_faults {
        for kind in FaultKind::ALL {
            println!("{kind}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let seed = match args.seed {
        Some(seed) => seed,
        None => random_seed()?,
    };
    let duration = match (args.minutes, args.seconds) {
        (Some(minutes), _) if minutes > 0.0 => Duration::from_secs((minutes * 60.0).round() as u64),
        (Some(_), _) => bail!("--minutes must be positive"),
        (None, Some(seconds)) => Duration::from_secs(seconds),
        (None, None) => Duration::from_secs(5 * 60),
    };
    let kinds = if args.faults.is_empty() {
        FaultKind::ALL.to_vec()
    } else {
        args.faults
            .iter()
            .map(|f| FaultKind::parse(f).with_context(|| format!("unknown fault kind {f}")))
            .collect::<anyhow::Result<Vec<_>>>()?
    };
    let mut config = ChaosConfig::new(seed, duration, args.pairs);
    config.kinds = kinds;
    config.keepalived = args.keepalived;
    config.probe_interval = Duration::from_millis(args.probe_interval_ms.max(1));
    config.settle_timeout = Duration::from_secs(args.settle_timeout_s.max(1));
    config.strict_planned = args.strict_planned;
    if args.dry_run {
        let schedule = Schedule::generate(seed, duration, args.pairs, &config.kinds);
        println!("{}", schedule.replay_command(args.keepalived));
        print!("{}", schedule.render());
        return Ok(ExitCode::SUCCESS);
    }
    hav_tests::interrupt::watch("hav-chaos");
    let outcome = chaos::run(&config, &hav_tests::interrupt::INTERRUPTED)?;
    print!("{}", outcome.report());
    if hav_tests::interrupt::INTERRUPTED.load(Ordering::SeqCst) {
        eprintln!("hav-chaos: interrupted; the figures cover the faults that ran");
    }
    if outcome.passed() {
        println!("\nPASS: 0 violations (seed {seed})");
        return Ok(ExitCode::SUCCESS);
    }
    print!("{}", outcome.violations(200));
    print!("\n{}", outcome.agent_logs(5));
    println!("\nFAIL: {} violations", outcome.judgement.violations.len());
    println!("{}", outcome.replay());
    Ok(ExitCode::FAILURE)
}

fn random_seed() -> anyhow::Result<u64> {
    use std::io::Read;
    let mut bytes = [0u8; 8];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom")?;
    // Small seeds are easier to type in a replay.
    Ok(u64::from_le_bytes(bytes) % 1_000_000)
}
