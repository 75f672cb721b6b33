//! Planned hand-over benchmark: N long-lived TCP connections through a hav pair's master, then a
//! graceful stop of that master (`connection_drain` on). Reports, per N: connections broken,
//! echo latency (p50, p99) straight to the master before the hand-over against forwarded
//! through the new master after it, the CPU the machine spent per echo in each phase, and how
//! long the old master took to let go of the VIP after the last connection closed. The same
//! connections through a keepalived pair stopped gracefully are the reference (in the same run).
//!
//! Needs root, iproute2, nft and keepalived; builds its own namespaces and removes them.
//! Example: `hav-handover-bench --connections 1000,10000 --rounds 3`

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use clap::Parser;
use hav_tests::agent::{
    Agent, AgentConfig, ECHO_PORT, InstanceSpec, find_instance, start_echo_httpd,
};
use hav_tests::keepalived::{VrrpState, start_pair};
use hav_tests::netns::{self, NetnsError, Presence};
use hav_tests::topology::Pair;

const WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, Parser)]
#[command(about = "hav planned hand-over: connections kept, forwarding latency, let-go time")]
struct Args {
    /// Connection counts, one run each.
    #[arg(long, value_delimiter = ',', default_values_t = vec![1000, 10000])]
    connections: Vec<usize>,
    /// Echo rounds (one byte through every connection) before and after the hand-over.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Skip the keepalived reference.
    #[arg(long)]
    no_keepalived: bool,
}

/// What one phase of echoes measured.
#[derive(Debug, Default)]
struct Phase {
    latencies: Vec<Duration>,
    busy_jiffies: u64,
}

impl Phase {
    fn percentile(&self, p: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        sorted
            .get(((sorted.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or_default()
    }

    /// CPU time of the whole machine per echo, in microseconds (jiffies are 10 ms).
    fn cpu_per_echo_us(&self) -> f64 {
        self.busy_jiffies as f64 * 10_000.0 / self.latencies.len().max(1) as f64
    }
}

#[derive(Debug, Default)]
struct Run {
    broken: usize,
    direct: Phase,
    forwarded: Phase,
    let_go: Option<Duration>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    netns::sweep_stale().context("removing namespaces a crashed run left")?;
    raise_fd_limit()?;
    let mut rows = Vec::new();
    for &n in &args.connections {
        eprintln!("hav: {n} connections");
        let hav = hav_run(n, args.rounds)?;
        let keepalived = if args.no_keepalived {
            None
        } else {
            eprintln!("keepalived: {n} connections");
            Some(keepalived_run(n)?)
        };
        rows.push((n, hav, keepalived));
    }
    println!("\n## planned hand-over with long-lived connections (graceful stop of the master)\n");
    println!(
        "| connections | hav broken | keepalived broken | echo p50 direct / forwarded | echo p99 direct / forwarded | CPU per echo direct / forwarded | old master let go after last close |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (n, hav, keepalived) in rows {
        println!(
            "| {n} | {} | {} | {} / {} µs ({:.2}×) | {} / {} µs ({:.2}×) | {:.1} / {:.1} µs | {} |",
            hav.broken,
            keepalived.map_or("-".into(), |k| k.to_string()),
            hav.direct.percentile(0.5).as_micros(),
            hav.forwarded.percentile(0.5).as_micros(),
            ratio(hav.forwarded.percentile(0.5), hav.direct.percentile(0.5)),
            hav.direct.percentile(0.99).as_micros(),
            hav.forwarded.percentile(0.99).as_micros(),
            ratio(hav.forwarded.percentile(0.99), hav.direct.percentile(0.99)),
            hav.direct.cpu_per_echo_us(),
            hav.forwarded.cpu_per_echo_us(),
            hav.let_go
                .map_or("-".into(), |d| format!("{} ms", d.as_millis())),
        );
    }
    Ok(())
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64().max(1e-9)
}

/// Raises the soft open-file limit to the hard one (10,000 connections need more than the
/// usual 1,024); children (the echo servers) inherit it.
fn raise_fd_limit() -> anyhow::Result<()> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit with a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return Err(std::io::Error::last_os_error()).context("reading RLIMIT_NOFILE");
        }
        limit.rlim_cur = limit.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
            return Err(std::io::Error::last_os_error()).context("raising RLIMIT_NOFILE");
        }
    }
    Ok(())
}

/// Busy jiffies of the whole machine (user + nice + system + irq + softirq).
fn busy_jiffies() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let cpu = stat.lines().next().unwrap_or_default();
    let fields: Vec<u64> = (cpu.split_whitespace().skip(1))
        .filter_map(|f| f.parse().ok())
        .collect();
    [0, 1, 2, 5, 6].iter().filter_map(|&i| fields.get(i)).sum()
}

/// One byte through every open connection; failures close the connection and count.
fn echo_round(streams: &mut [Option<TcpStream>], phase: &mut Phase, byte: u8) -> usize {
    let mut failed = 0;
    for slot in streams.iter_mut() {
        let Some(stream) = slot else { continue };
        let started = Instant::now();
        let mut back = [0u8; 1];
        let ok = stream
            .write_all(&[byte])
            .and_then(|()| stream.read_exact(&mut back))
            .is_ok()
            && back[0] == byte;
        if ok {
            phase.latencies.push(started.elapsed());
        } else {
            failed += 1;
            *slot = None;
        }
    }
    failed
}

fn open(vip: IpAddr, n: usize) -> Result<Vec<Option<TcpStream>>, NetnsError> {
    let mut streams = Vec::with_capacity(n);
    for _ in 0..n {
        let mut stream = TcpStream::connect_timeout(&SocketAddr::new(vip, ECHO_PORT), WAIT)
            .map_err(|e| NetnsError::io("connect", e))?;
        stream.set_nodelay(true).ok();
        stream.set_read_timeout(Some(Duration::from_secs(3))).ok();
        let mut byte = [0u8; 1];
        while byte[0] != b'\n' {
            stream
                .read_exact(&mut byte)
                .map_err(|e| NetnsError::io("greeting", e))?;
        }
        streams.push(Some(stream));
    }
    Ok(streams)
}

/// The client side of a run: opens, echoes directly, waits for the hand-over, echoes through
/// it, closes. `handover` is told when to hand over and answers once it is done.
fn client(
    vip: IpAddr,
    n: usize,
    rounds: usize,
    go: mpsc::Sender<()>,
    done: mpsc::Receiver<()>,
) -> Result<Run, NetnsError> {
    let mut streams = open(vip, n)?;
    let mut run = Run::default();
    for round in 0..rounds {
        let before = busy_jiffies();
        run.broken += echo_round(&mut streams, &mut run.direct, round as u8);
        run.direct.busy_jiffies += busy_jiffies().saturating_sub(before);
    }
    let _ = go.send(());
    let _ = done.recv();
    for round in 0..rounds {
        let before = busy_jiffies();
        run.broken += echo_round(&mut streams, &mut run.forwarded, (100 + round) as u8);
        run.forwarded.busy_jiffies += busy_jiffies().saturating_sub(before);
    }
    drop(streams);
    Ok(run)
}

fn hav_run(n: usize, rounds: usize) -> anyhow::Result<Run> {
    let pair = Pair::new()?;
    let vip = IpAddr::V4(pair.vip4);
    let _servers = [
        start_echo_httpd(&pair.lab, "a")?,
        start_echo_httpd(&pair.lab, "b")?,
    ];
    let config = |node: &str, priority: u8| {
        let iface = &pair.node(node).expect("node of the pair").iface;
        let mut spec = InstanceSpec::new(iface, 51, priority, &[&format!("{}/24", pair.vip4)]);
        spec.connection_drain = Some(Duration::from_secs(600));
        AgentConfig::new(node, vec![spec])
    };
    let mut a = Agent::start(&pair.lab, "a", &config("a", 150))?;
    a.wait_state("VI_1", "Master", WAIT)?;
    pair.lab.wait_address("a", vip, Presence::Present, WAIT)?;
    let mut b = Agent::start(&pair.lab, "b", &config("b", 100))?;
    b.wait_status("b backup of a", WAIT, |status| {
        find_instance(status, "VI_1")
            .is_some_and(|s| s["state"] == "Backup" && !s["master"].is_null())
    })?;
    let (go_tx, go_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel();
    let thread = pair
        .lab
        .host("client")?
        .in_thread(move || client(vip, n, rounds, go_tx, done_rx))?;
    go_rx.recv_timeout(Duration::from_secs(600))?;
    a.terminate()?;
    b.wait_state("VI_1", "Master", WAIT)?;
    a.wait_log("serving its connections until they end", WAIT)?;
    let _ = done_tx.send(());
    let mut run = thread
        .join()
        .map_err(|_| anyhow!("client thread panicked"))??;
    let closed = Instant::now();
    pair.lab
        .wait_address("a", vip, Presence::Absent, Duration::from_secs(60))?;
    run.let_go = Some(closed.elapsed());
    a.wait_exit(WAIT)?;
    Ok(run)
}

fn keepalived_run(n: usize) -> anyhow::Result<usize> {
    let pair = Pair::new()?;
    let vip = IpAddr::V4(pair.vip4);
    let _servers = [
        start_echo_httpd(&pair.lab, "a")?,
        start_echo_httpd(&pair.lab, "b")?,
    ];
    let (mut a, mut b) = start_pair(&pair, vip, 24, WAIT)?;
    let (go_tx, go_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel();
    let thread = pair
        .lab
        .host("client")?
        .in_thread(move || client(vip, n, 1, go_tx, done_rx))?;
    go_rx.recv_timeout(Duration::from_secs(600))?;
    a.stop(WAIT)?;
    b.wait_state("VI_1", VrrpState::Master, WAIT)?;
    let _ = done_tx.send(());
    let run = thread
        .join()
        .map_err(|_| anyhow!("client thread panicked"))??;
    Ok(run.broken)
}
