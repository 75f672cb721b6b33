//! fleet-load: one `hav-coordinator` process against N simulated agents, each on its own mTLS
//! stream with its own certificate, and one watching operator. For each N it measures:
//!
//! 1. connect: per-agent TCP+TLS+Hello→Welcome latency, the time until every agent is welcomed
//!    and until the coordinator has handled every agent's first snapshot;
//! 2. push: one `PushConfig` that changes every node (rollout groups of two, as pairs are),
//!    timed to the last agent ack and to the response;
//! 3. fan-out: transition events emitted at a steady rate, timed from the agent's send to the
//!    watcher's receipt (`WatchEvents`);
//! 4. reconnect: every agent drops its stream and dials again reporting the pushed config version
//!    (a coordinator restart's storm), timed to every Welcome and until the coordinator is idle;
//!
//! with the coordinator's CPU and RSS from /proc in each phase. Every phase has a timeout; the
//! program ends by itself and kills the coordinator whatever happens.
//!
//! Run (optimised; builds the coordinator binary too):
//!
//! ```text
//! cargo bench -p hav-coordinator --bench fleet-load -- --agents 100,1000,10000
//! ```

mod agents;
mod pki;
mod process;
mod report;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use hav_proto::transport;
use hav_proto::v1::fleet_service_client::FleetServiceClient;
use hav_proto::v1::{
    ApplyOutcome, MAX_MESSAGE_BYTES, NodeConfigEntry, PushConfigRequest, RolloutGroup,
};
use prost::Message;
use tokio::sync::Semaphore;
use tonic::transport::Channel;

use crate::agents::{AckLog, Agent, Seen};
use crate::pki::{Pki, agent_name};
use crate::process::{Coordinator, Sampler, raise_fd_limit, read_proc};
use crate::report::{RunFigures, Summary, print_table};

/// Load test of hav-coordinator: N simulated agents (real mTLS agent streams, no VRRP), a config
/// push to all of them, event fan-out to a watching operator and a reconnect storm, with the
/// coordinator's CPU and RSS. Prints a table of figures.
///
/// Run: cargo bench -p hav-coordinator --bench fleet-load -- --agents 100,1000,10000
/// (CARGO_TARGET_DIR as usual; the coordinator binary is built alongside). Agent certificates
/// are issued once into --pki and reused. HAV_LOAD_COORDINATOR_LOG sets the coordinator's
/// RUST_LOG (default info); its log goes to --logs.
#[derive(Debug, Parser)]
struct Args {
    /// Numbers of agents, one run each.
    #[arg(long, value_delimiter = ',', default_value = "100,1000,10000")]
    agents: Vec<usize>,
    /// Certificate cache directory (CA, coordinator, operator and agent certificates).
    #[arg(long, default_value_os_t = std::env::temp_dir().join("hav-fleet-load-pki"))]
    pki: PathBuf,
    /// The coordinator binary to test.
    #[arg(long, default_value = env!("CARGO_BIN_EXE_hav-coordinator"))]
    coordinator: PathBuf,
    /// Agent connections in progress at once (a reconnect storm with this many in flight).
    #[arg(long, default_value_t = 256)]
    connect_concurrency: usize,
    /// Fan-out probe events per run (default: max(N, 1000)), spread evenly over the agents.
    #[arg(long)]
    fanout_events: Option<usize>,
    /// Fan-out probes are events only, without the snapshot a real agent sends before each
    /// transition event (isolates the event path from snapshot persistence).
    #[arg(long)]
    events_only: bool,
    /// Seconds over which the fan-out events are emitted.
    #[arg(long, default_value_t = 5.0)]
    fanout_seconds: f64,
    /// Timeout of each phase, in seconds.
    #[arg(long, default_value_t = 120)]
    phase_timeout: u64,
    /// Where the coordinator's log of each run is kept (`coordinator-<N>.log`).
    #[arg(long, default_value_os_t = std::env::temp_dir().join("hav-fleet-load-logs"))]
    logs: PathBuf,
    /// Worker threads of this load generator's runtime.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let largest = args.agents.iter().copied().max().unwrap_or(0) as u64;
    let limit = raise_fd_limit(2 * largest + 4096)?;
    eprintln!("RLIMIT_NOFILE {limit} (inherited by the coordinator)");
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?
        .block_on(run_all(args))
}

async fn run_all(args: Args) -> anyhow::Result<()> {
    let pki = Arc::new(Pki::open(&args.pki)?);
    let mut runs = Vec::new();
    for &n in &args.agents {
        eprintln!("== N = {n}");
        match run(&args, &pki, n).await {
            Ok(figures) => runs.push(figures),
            Err(e) => {
                eprintln!("N = {n}: {e:#}");
                break;
            }
        }
    }
    print_table(&runs);
    Ok(())
}

async fn run(args: &Args, pki: &Arc<Pki>, n: usize) -> anyhow::Result<RunFigures> {
    let phase_timeout = Duration::from_secs(args.phase_timeout);
    let mut figures = RunFigures {
        agents: n,
        ..RunFigures::default()
    };
    let threads = std::thread::available_parallelism().map_or(2, |p| p.get());
    let issued = {
        let pki = pki.clone();
        tokio::task::spawn_blocking(move || pki.ensure_agents(n, threads)).await??
    };
    figures.certs_issued = issued.issued;
    figures.certs_seconds = issued.elapsed.as_secs_f64();
    eprintln!(
        "certificates: {} issued in {:.1} s, {} cached",
        issued.issued,
        issued.elapsed.as_secs_f64(),
        n - issued.issued
    );
    let tls = {
        let pki = pki.clone();
        tokio::task::spawn_blocking(move || {
            (0..n).map(|i| pki.agent(i)).collect::<Result<Vec<_>, _>>()
        })
        .await??
    };

    let run_dir = tempfile::Builder::new()
        .prefix("hav-fleet-load-")
        .tempdir()?;
    std::fs::create_dir_all(&args.logs)?;
    let log = args.logs.join(format!("coordinator-{n}.log"));
    eprintln!("coordinator log: {}", log.display());
    figures.load_average = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_default();
    let mut coordinator =
        Coordinator::start(&args.coordinator, &pki.coordinator(), run_dir.path(), log)?;
    let sampler = Sampler::start(Some(coordinator.pid()));
    let load_start = read_proc(None)?;
    let address = coordinator.address.to_string();
    let channel = connect_operator(&mut coordinator, &address, pki.operator()?).await?;
    let mut fleet = FleetServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let (mut seen, watcher) = agents::watch(&mut fleet).await?;
    let epoch = Instant::now();
    let acks = Arc::new(AckLog::default());

    // 1. Connect.
    let before = sampler.begin()?;
    let started = Instant::now();
    let wave = connect_all(args, &address, tls.clone(), 0, &acks, epoch, phase_timeout).await;
    figures.connect_all = started.elapsed();
    figures.connected = wave.agents.len();
    figures.connect_failures = wave.failures;
    figures.connect_latency = wave.latency;
    let agents = wave.agents;
    eprintln!(
        "connect: {} agents in {:.2} s ({} failed)",
        figures.connected,
        figures.connect_all.as_secs_f64(),
        figures.connect_failures
    );
    let deadline = tokio::time::Instant::now() + phase_timeout;
    let mut ready = 0;
    while ready < figures.connected {
        match tokio::time::timeout_at(deadline, seen.recv()).await {
            Ok(Some(Seen::Ready)) => ready += 1,
            Ok(Some(Seen::Lagged(missed))) => {
                // Some `ready` events are gone: completion can no longer be observed.
                figures.connect_lagged += missed;
                break;
            }
            Ok(Some(Seen::Probe(..))) => {}
            Ok(None) | Err(_) => break,
        }
    }
    if ready == figures.connected {
        figures.settled = Some(started.elapsed());
    }
    figures.connect_usage = sampler.end(before)?;
    figures.idle_rss_kib = figures.connect_usage.rss_kib;
    figures.base_rss_kib = before.rss_kib;
    eprintln!(
        "connect: snapshots handled after {:?}; coordinator RSS {} KiB",
        figures.settled, figures.idle_rss_kib
    );

    // 2. Push to all.
    let request = push_request(n);
    figures.push_request_bytes = request.encoded_len();
    let before = sampler.begin()?;
    let started = Instant::now();
    let started_ns = started.duration_since(epoch).as_nanos() as u64;
    acks.count.store(0, Ordering::Relaxed);
    let mut pushed_version = 0;
    match tokio::time::timeout(phase_timeout, fleet.push_config(request)).await {
        Ok(Ok(response)) => {
            figures.push_response = Some(started.elapsed());
            let response = response.into_inner();
            pushed_version = response.version;
            figures.push_response_bytes = response.encoded_len();
            figures.push_applied = response
                .nodes
                .iter()
                .filter(|r| r.outcome == ApplyOutcome::Applied as i32)
                .count();
        }
        Ok(Err(status)) => figures.push_error = Some(transport::explain_status(&status)),
        Err(_) => figures.push_error = Some(format!("no response in {phase_timeout:?}")),
    }
    let last_ack = acks.last_ns.load(Ordering::Relaxed);
    if acks.count.load(Ordering::Relaxed) > 0 && last_ack > started_ns {
        figures.push_last_ack = Some(Duration::from_nanos(last_ack - started_ns));
    }
    figures.push_usage = sampler.end(before)?;
    eprintln!(
        "push: last ack {:?}, response {:?}, {} applied, {:?}",
        figures.push_last_ack, figures.push_response, figures.push_applied, figures.push_error
    );

    // 3. Fan-out. What the watcher still holds from the connect phase is counted there.
    while let Ok(item) = seen.try_recv() {
        if let Seen::Lagged(missed) = item {
            figures.connect_lagged += missed;
        }
    }
    if !agents.is_empty() {
        fan_out(
            args,
            &agents,
            &mut seen,
            &sampler,
            phase_timeout,
            &mut figures,
        )
        .await?;
    }

    // 4. Reconnect storm, as after a coordinator restart: every agent drops its stream and dials
    // again reporting the pushed version (nothing to re-apply).
    drop(agents);
    let before = sampler.begin()?;
    let started = Instant::now();
    let wave = connect_all(
        args,
        &address,
        tls,
        pushed_version,
        &acks,
        epoch,
        phase_timeout,
    )
    .await;
    figures.reconnect_all = started.elapsed();
    figures.reconnect_failures = wave.failures;
    figures.reconnect_latency = wave.latency;
    figures.reconnect_idle = wait_idle(&coordinator, phase_timeout)
        .await
        .map(|idle| idle.duration_since(started));
    figures.reconnect_usage = sampler.end(before)?;
    eprintln!(
        "reconnect: {} agents in {:.2} s, coordinator idle after {:?}",
        wave.agents.len(),
        figures.reconnect_all.as_secs_f64(),
        figures.reconnect_idle
    );

    drop(wave);
    watcher.abort();
    let stopped = coordinator.stop(Duration::from_secs(15)).await;
    eprintln!("coordinator stopped in {:.2} s", stopped.as_secs_f64());
    let load_end = read_proc(None)?;
    figures.load_cpu_seconds =
        load_end.cpu_ticks.saturating_sub(load_start.cpu_ticks) as f64 / process::clock_ticks();
    Ok(figures)
}

/// Dials the coordinator as the operator, retrying while it starts (it binds within moments).
async fn connect_operator(
    coordinator: &mut Coordinator,
    address: &str,
    tls: Arc<rustls::ClientConfig>,
) -> anyhow::Result<Channel> {
    let started = Instant::now();
    loop {
        match transport::connect(address, tls.clone()).await {
            Ok(channel) => return Ok(channel),
            Err(e) if started.elapsed() > Duration::from_secs(15) => {
                return Err(e).context("the coordinator did not come up");
            }
            Err(_) => {}
        }
        if let Some(status) = coordinator.exited() {
            let log = std::fs::read_to_string(&coordinator.log).unwrap_or_default();
            anyhow::bail!("the coordinator exited ({status}): {log}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The agents of one connect wave.
struct Wave {
    agents: Vec<Agent>,
    latency: Summary,
    failures: usize,
}

/// When the coordinator's CPU use over half a second fell below 10% of a core (it has finished
/// what the last phase caused); None if that did not happen within `timeout`.
async fn wait_idle(coordinator: &Coordinator, timeout: Duration) -> Option<Instant> {
    let started = Instant::now();
    let window = Duration::from_millis(500);
    while started.elapsed() < timeout {
        let first = read_proc(Some(coordinator.pid())).ok()?;
        tokio::time::sleep(window).await;
        let second = read_proc(Some(coordinator.pid())).ok()?;
        let busy = (second.cpu_ticks - first.cpu_ticks) as f64 / process::clock_ticks();
        if busy < 0.1 * window.as_secs_f64() {
            return Some(first.at);
        }
    }
    None
}

/// Connects every agent, at most `connect_concurrency` at a time, each in its own task.
async fn connect_all(
    args: &Args,
    address: &str,
    tls: Vec<Arc<rustls::ClientConfig>>,
    config_version: u64,
    acks: &Arc<AckLog>,
    epoch: Instant,
    phase_timeout: Duration,
) -> Wave {
    let permits = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let deadline = tokio::time::Instant::now() + phase_timeout;
    let tasks: Vec<_> = tls
        .into_iter()
        .enumerate()
        .map(|(index, tls)| {
            let (permits, acks, address) = (permits.clone(), acks.clone(), address.to_owned());
            tokio::spawn(tokio::time::timeout_at(deadline, async move {
                let _permit = permits.acquire_owned().await?;
                Agent::connect(&address, index, config_version, tls, acks, epoch).await
            }))
        })
        .collect();
    let mut agents = Vec::with_capacity(tasks.len());
    let mut latencies = Vec::with_capacity(tasks.len());
    let mut first_error = None;
    let mut failures = 0;
    for (index, task) in tasks.into_iter().enumerate() {
        let error = match task.await {
            Ok(Ok(Ok((agent, latency)))) => {
                agents.push(agent);
                latencies.push(latency);
                continue;
            }
            Ok(Ok(Err(e))) => format!("{e:#}"),
            Ok(Err(_)) => "connect phase timed out".into(),
            Err(e) => e.to_string(),
        };
        failures += 1;
        first_error.get_or_insert_with(|| format!("{}: {error}", agent_name(index)));
    }
    if let Some(error) = first_error {
        eprintln!("first connect failure: {error}");
    }
    Wave {
        agents,
        latency: Summary::of(latencies),
        failures,
    }
}

/// Emits `fanout_events` transitions round-robin over the agents at a steady rate and times each
/// one to the watcher.
async fn fan_out(
    args: &Args,
    agents: &[Agent],
    seen: &mut tokio::sync::mpsc::UnboundedReceiver<Seen>,
    sampler: &Sampler,
    phase_timeout: Duration,
    figures: &mut RunFigures,
) -> anyhow::Result<()> {
    let total = args.fanout_events.unwrap_or(agents.len().max(1000));
    let spread = Duration::from_secs_f64(args.fanout_seconds.max(0.001));
    figures.fanout_events = total;
    figures.fanout_rate = total as f64 / spread.as_secs_f64();
    let mut sent: Vec<Option<Instant>> = vec![None; total];
    let mut arrived: Vec<(usize, Instant)> = Vec::with_capacity(total);
    let before = sampler.begin()?;
    let started = tokio::time::Instant::now();
    let deadline = started + spread + phase_timeout;
    let mut next = 0;
    // Emitting and receiving interleave in this one task: the emitter is a paced loop that
    // yields to the receiver between due batches.
    while arrived.len() < total {
        if next < total {
            let due = started + spread.mul_f64(next as f64 / total as f64);
            tokio::select! {
                biased;
                item = seen.recv() => match item {
                    Some(item) => record(item, &mut arrived, figures),
                    None => break,
                },
                () = tokio::time::sleep_until(due) => {
                    let now = tokio::time::Instant::now();
                    while next < total && started + spread.mul_f64(next as f64 / total as f64) <= now {
                        sent[next] = Some(Instant::now());
                        if !agents[next % agents.len()].emit(next, !args.events_only) {
                            sent[next] = None;
                        }
                        next += 1;
                    }
                }
            }
        } else {
            match tokio::time::timeout_at(deadline, seen.recv()).await {
                Ok(Some(item)) => record(item, &mut arrived, figures),
                Ok(None) | Err(_) => break,
            }
        }
    }
    figures.fanout_usage = sampler.end(before)?;
    let latencies: Vec<Duration> = arrived
        .iter()
        .filter_map(|&(seq, at)| Some(at.duration_since(sent.get(seq).copied().flatten()?)))
        .collect();
    figures.fanout_lost = total - latencies.len();
    figures.fanout_latency = Summary::of(latencies);
    eprintln!(
        "fan-out: {} of {} events, p99 {:?}",
        figures.fanout_latency.count, total, figures.fanout_latency.p99
    );
    Ok(())
}

fn record(item: Seen, arrived: &mut Vec<(usize, Instant)>, figures: &mut RunFigures) {
    match item {
        Seen::Probe(seq, at) => arrived.push((seq, at)),
        Seen::Lagged(missed) => figures.fanout_lagged += missed,
        Seen::Ready => {}
    }
}

/// A push that changes every node: pairs `load-2k`, `load-2k+1` as rollout groups.
fn push_request(n: usize) -> PushConfigRequest {
    PushConfigRequest {
        configs: (0..n)
            .map(|i| NodeConfigEntry {
                node: agent_name(i),
                toml: node_config(i),
            })
            .collect(),
        dry_run: false,
        comment: format!("fleet-load: {n} nodes"),
        groups: (0..n)
            .step_by(2)
            .map(|first| RolloutGroup {
                name: format!("pair-{:05}", first / 2),
                nodes: (first..(first + 2).min(n)).map(agent_name).collect(),
            })
            .collect(),
        ..PushConfigRequest::default()
    }
}

/// Node `i`'s config: one IPv6 instance of pair `i / 2`, in the node schema.
fn node_config(i: usize) -> String {
    let pair = i / 2;
    let (me, peer, priority) = if i.is_multiple_of(2) {
        (11, 12, 150)
    } else {
        (12, 11, 100)
    };
    format!(
        "[node]\nname = \"{name}\"\n\n[[instance]]\nname = \"VI_1\"\ninterface = \"eth0\"\n\
         vrid = {vrid}\npriority = {priority}\nsource_address = \"2001:db8:{pair:x}::{me}\"\n\
         unicast_peers = [{{ address = \"2001:db8:{pair:x}::{peer}\" }}]\n\
         vips = [\"2001:db8:{pair:x}::100/64\"]\n",
        name = agent_name(i),
        vrid = pair % 255 + 1,
    )
}
