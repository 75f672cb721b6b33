//! fleet-load: simulated agents against the coordinators under test, each agent on its own
//! mTLS stream with its own certificate, and one watching operator. Each N runs on each backend:
//! `redb` (one coordinator process on its own redb file) and `etcd` (three coordinator processes
//! on loopback sharing one prefix of a real three-member etcd cluster, started for the run). For
//! each N and backend it measures:
//!
//! 1. connect: per-agent TCP+TLS+Hello→Welcome latency, the time until every agent is welcomed
//!    and until the leading coordinator has seen every agent's first snapshot; agent `i` dials
//!    coordinator `i % count` first and the next one when refused, as the real agent's link does,
//!    so the agents each coordinator holds are counted;
//! 2. push: one `PushConfig` to the leader that changes every node (rollout groups of two, as
//!    pairs are), timed to the last agent ack and to the response;
//! 3. fan-out: transition events emitted at a steady rate, timed from the agent's send to the
//!    receipt by a watcher on the leader (`WatchEvents`);
//! 4. reconnect: every agent drops its stream and dials again reporting the pushed config version
//!    (a coordinator restart's storm), timed to every Welcome and until the coordinators are idle;
//! 5. on etcd only, failover: the leading coordinator SIGKILLed, timed until a survivor says it
//!    leads (`About`, polled every 50 ms) and until every agent it held is welcomed elsewhere;
//!
//! with the coordinators' CPU and RSS (summed over the processes) from /proc in each phase, and on
//! etcd the members' CPU and etcd's write rates from its `/metrics` over the connect and fan-out
//! phases. Every phase has a timeout; the program ends by itself and kills the coordinators and
//! etcd members whatever happens.
//!
//! Run (optimised; builds the coordinator binary too; etcd needs Debian's `etcd-server`):
//!
//! ```text
//! cargo bench -p hav-coordinator --bench fleet-load -- --agents 1000,10000 --backends redb,etcd
//! ```

mod agents;
mod etcd;
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
    AboutRequest, ApplyOutcome, MAX_MESSAGE_BYTES, NodeConfigEntry, PushConfigRequest, RolloutGroup,
};
use hav_tests::etcd::EtcdCluster;
use nix::unistd::Pid;
use prost::Message;
use tokio::sync::Semaphore;
use tonic::transport::Channel;

use crate::agents::{AckLog, Agent, Connected, DialFrom, Dialer, Seen};
use crate::etcd::{EtcdCounters, EtcdRates};
use crate::pki::{Pki, agent_name};
use crate::process::{
    Coordinator, Reading, Sampler, StoreArgs, Usage, children_named, raise_fd_limit, read_proc,
    read_procs,
};
use crate::report::{Failover, RunFigures, Summary, print_table};

/// Load test of hav-coordinator: N simulated agents (real mTLS agent streams, no VRRP), a config
/// push to all of them, event fan-out to a watching operator, a reconnect storm and, on etcd, the
/// leader's death, with the coordinators' CPU and RSS. One coordinator on redb and three sharing
/// a three-member etcd side by side. Prints a table of figures.
///
/// Run: cargo bench -p hav-coordinator --bench fleet-load -- --agents 1000,10000
/// (CARGO_TARGET_DIR as usual; the coordinator binary is built alongside). Agent certificates
/// are issued once into --pki and reused. HAV_LOAD_COORDINATOR_LOG sets the coordinators'
/// RUST_LOG (default info); their logs go to --logs.
#[derive(Debug, Parser)]
struct Args {
    /// Numbers of agents, one run each (on each backend).
    #[arg(long, value_delimiter = ',', default_value = "100,1000,10000")]
    agents: Vec<usize>,
    /// Stores to run on, side by side: `redb` (one coordinator) and `etcd` (--etcd-coordinators
    /// coordinators sharing a real three-member etcd cluster).
    #[arg(long, value_delimiter = ',', default_value = "redb,etcd")]
    backends: Vec<Backend>,
    /// Coordinators sharing the etcd cluster.
    #[arg(long, default_value_t = 3)]
    etcd_coordinators: usize,
    /// The coordinators' --leader-ttl on etcd, in whole seconds.
    #[arg(long, default_value_t = 3)]
    leader_ttl: u64,
    /// Certificate cache directory (CA, coordinator, operator and agent certificates).
    #[arg(long, default_value_os_t = std::env::temp_dir().join("hav-fleet-load-pki"))]
    pki: PathBuf,
    /// The coordinator binary to test.
    #[arg(long, default_value = env!("CARGO_BIN_EXE_hav-coordinator"))]
    coordinator: PathBuf,
    /// Agent dials in progress at once (a reconnect storm with this many in flight).
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
    /// Where the coordinators' logs of each run are kept (`coordinator-<N>.log` on redb,
    /// `coordinator-<N>-etcd-c<i>.log` on etcd).
    #[arg(long, default_value_os_t = std::env::temp_dir().join("hav-fleet-load-logs"))]
    logs: PathBuf,
    /// Worker threads of this load generator's runtime.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// Where the coordinators under test keep their state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// One coordinator on its own redb file.
    #[default]
    Redb,
    /// Several coordinators sharing a three-member etcd cluster.
    Etcd,
}

impl Backend {
    /// The column heading: the store and how many coordinators, `etcd ×3`.
    pub fn label(self, coordinators: usize) -> String {
        let store = match self {
            Backend::Redb => "redb",
            Backend::Etcd => "etcd",
        };
        format!("{store} ×{coordinators}")
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let largest = args.agents.iter().copied().max().unwrap_or(0) as u64;
    let limit = raise_fd_limit(2 * largest + 4096)?;
    eprintln!("RLIMIT_NOFILE {limit} (inherited by the coordinators)");
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?
        // `run` is polled on this thread, which therefore starts the etcd members: they die with
        // it (`PR_SET_PDEATHSIG`), so a killed load generator leaves none behind.
        .block_on(run_all(args))
}

async fn run_all(args: Args) -> anyhow::Result<()> {
    let pki = Arc::new(Pki::open(&args.pki)?);
    let mut runs = Vec::new();
    let mut failed = Vec::new();
    for &n in &args.agents {
        for &backend in &args.backends {
            // A backend that failed at some N is not tried at a larger one.
            if failed.contains(&backend) {
                continue;
            }
            eprintln!("== N = {n}, {backend:?}");
            match run(&args, &pki, n, backend).await {
                Ok(figures) => runs.push(figures),
                Err(e) => {
                    eprintln!("N = {n}, {backend:?}: {e:#}");
                    failed.push(backend);
                }
            }
        }
    }
    print_table(&runs);
    Ok(())
}

async fn run(
    args: &Args,
    pki: &Arc<Pki>,
    n: usize,
    backend: Backend,
) -> anyhow::Result<RunFigures> {
    let phase_timeout = Duration::from_secs(args.phase_timeout);
    let mut figures = RunFigures {
        backend,
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
    figures.load_average = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_default();
    // Declared before the coordinators, so dropped after them: on any early return the
    // coordinators are killed first, then the members (EtcdCluster's Drop), then `run_dir`.
    let cluster = match backend {
        Backend::Redb => None,
        Backend::Etcd => {
            Some(EtcdCluster::start_members(3).map_err(|e| anyhow::anyhow!("starting etcd: {e}"))?)
        }
    };
    let count = match backend {
        Backend::Redb => 1,
        Backend::Etcd => args.etcd_coordinators.max(1),
    };
    figures.coordinators = count;
    let mut coordinators = Vec::with_capacity(count);
    for c in 0..count {
        let (store, log) = match &cluster {
            None => (StoreArgs::Redb, format!("coordinator-{n}.log")),
            Some(cluster) => (
                StoreArgs::Etcd {
                    endpoints: cluster.endpoints(),
                    name: format!("load-c{c}"),
                    leader_ttl: Duration::from_secs(args.leader_ttl),
                },
                format!("coordinator-{n}-etcd-c{c}.log"),
            ),
        };
        let log = args.logs.join(log);
        eprintln!("coordinator c{c} log: {}", log.display());
        let data = run_dir.path().join(format!("data-c{c}"));
        coordinators.push(Coordinator::start(
            &args.coordinator,
            &pki.coordinator(),
            &data,
            &store,
            log,
        )?);
    }
    let pids: Vec<Pid> = coordinators.iter().map(Coordinator::pid).collect();
    let sampler = Sampler::start(pids.clone());
    let etcd = cluster.as_ref().map(EtcdProbe::start);
    let load_start = read_proc(None)?;
    let mut fleets = Vec::with_capacity(count);
    for coordinator in &mut coordinators {
        let channel = connect_operator(coordinator, pki.operator()?).await?;
        fleets.push(
            FleetServiceClient::new(channel)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        );
    }
    let everyone: Vec<usize> = (0..count).collect();
    let (leader, _) = await_leader(&mut fleets, &everyone, phase_timeout)
        .await
        .context("no coordinator says it leads")?;
    figures.leader = Some(leader);
    eprintln!("leader: c{leader} ({})", coordinators[leader].name);
    let mut fleet = fleets[leader].clone();
    let (mut seen, watcher) = agents::watch(&mut fleet).await?;
    let dialer = Arc::new(Dialer {
        coordinators: coordinators.iter().map(|c| c.address.to_string()).collect(),
        permits: Arc::new(Semaphore::new(args.connect_concurrency.max(1))),
        acks: Arc::new(AckLog::default()),
        epoch: Instant::now(),
        first_refusal: Default::default(),
    });

    // 1. Connect.
    let before = sampler.begin()?;
    let etcd_before = match &etcd {
        Some(probe) => probe.begin().await,
        None => None,
    };
    let started = Instant::now();
    let wave = connect_all(&dialer, tls.clone(), 0, phase_timeout).await;
    figures.connect_all = started.elapsed();
    figures.connected = wave.agents.len();
    figures.connect_failures = wave.failures;
    figures.connect_latency = wave.latency;
    figures.connect_refused = wave.refused;
    figures.held = held(&wave.agents, count);
    let agents = wave.agents;
    eprintln!(
        "connect: {} agents in {:.2} s ({} failed, {} dials refused), held {:?}",
        figures.connected,
        figures.connect_all.as_secs_f64(),
        figures.connect_failures,
        figures.connect_refused,
        figures.held
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
    if let (Some(probe), Some(start)) = (&etcd, etcd_before) {
        (figures.etcd_connect_usage, figures.etcd_connect) = probe.end(start).await.unzip();
    }
    figures.idle_rss_kib = figures.connect_usage.rss_kib;
    figures.base_rss_kib = before.rss_kib;
    eprintln!(
        "connect: snapshots handled after {:?}; coordinators' RSS {} KiB",
        figures.settled, figures.idle_rss_kib
    );

    // 2. Push to all, through the leader.
    let request = push_request(n);
    figures.push_request_bytes = request.encoded_len();
    let before = sampler.begin()?;
    let started = Instant::now();
    let started_ns = started.duration_since(dialer.epoch).as_nanos() as u64;
    dialer.acks.count.store(0, Ordering::Relaxed);
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
    let last_ack = dialer.acks.last_ns.load(Ordering::Relaxed);
    if dialer.acks.count.load(Ordering::Relaxed) > 0 && last_ack > started_ns {
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
        let etcd_before = match &etcd {
            Some(probe) => probe.begin().await,
            None => None,
        };
        fan_out(
            args,
            &agents,
            &mut seen,
            &sampler,
            phase_timeout,
            &mut figures,
        )
        .await?;
        if let (Some(probe), Some(start)) = (&etcd, etcd_before) {
            (figures.etcd_fanout_usage, figures.etcd_fanout) = probe.end(start).await.unzip();
        }
    }

    // 4. Reconnect storm, as after a coordinator restart: every agent drops its stream and dials
    // again reporting the pushed version (nothing to re-apply).
    drop(agents);
    let before = sampler.begin()?;
    let started = Instant::now();
    let wave = connect_all(&dialer, tls.clone(), pushed_version, phase_timeout).await;
    figures.reconnect_all = started.elapsed();
    figures.reconnect_failures = wave.failures;
    figures.reconnect_latency = wave.latency;
    figures.reconnect_refused = wave.refused;
    figures.reconnect_idle = wait_idle(&pids, phase_timeout)
        .await
        .map(|idle| idle.duration_since(started));
    figures.reconnect_usage = sampler.end(before)?;
    eprintln!(
        "reconnect: {} agents in {:.2} s, coordinators idle after {:?}, held {:?}",
        wave.agents.len(),
        figures.reconnect_all.as_secs_f64(),
        figures.reconnect_idle,
        held(&wave.agents, count)
    );
    watcher.abort();
    drop(sampler);

    // 5. The leader SIGKILLed (several coordinators only).
    let mut agents = wave.agents;
    if count > 1 {
        let failover = kill_leader(
            &dialer,
            &mut coordinators,
            &mut fleets,
            leader,
            std::mem::take(&mut agents),
            &tls,
            pushed_version,
            phase_timeout,
        )
        .await?;
        agents = failover.1;
        figures.failover = Some(failover.0);
    }

    drop(agents);
    for coordinator in coordinators {
        let name = coordinator.name.clone();
        let stopped = coordinator.stop(Duration::from_secs(15)).await;
        eprintln!(
            "coordinator {name} stopped in {:.2} s",
            stopped.as_secs_f64()
        );
    }
    drop(etcd);
    drop(cluster);
    let load_end = read_proc(None)?;
    figures.load_cpu_seconds =
        load_end.cpu_ticks.saturating_sub(load_start.cpu_ticks) as f64 / process::clock_ticks();
    Ok(figures)
}

/// SIGKILLs coordinator `leader`, whose agents dial the others as the real link does; times
/// until a survivor leads and until every agent is welcomed again. Returns the figures and all
/// the agents connected at the end.
#[allow(clippy::too_many_arguments)]
async fn kill_leader(
    dialer: &Arc<Dialer>,
    coordinators: &mut [Coordinator],
    fleets: &mut [FleetServiceClient<Channel>],
    leader: usize,
    agents: Vec<Agent>,
    tls: &[Arc<rustls::ClientConfig>],
    config_version: u64,
    phase_timeout: Duration,
) -> anyhow::Result<(Failover, Vec<Agent>)> {
    let count = coordinators.len();
    let survivors: Vec<usize> = (0..count).filter(|&c| c != leader).collect();
    let sampler = Sampler::start(survivors.iter().map(|&c| coordinators[c].pid()).collect());
    let (moving, mut staying): (Vec<Agent>, Vec<Agent>) =
        agents.into_iter().partition(|a| a.coordinator == leader);
    let mut failover = Failover {
        moved: moving.len(),
        ..Failover::default()
    };
    // Each moving agent waits for its stream's end before dialling: spawned before the kill.
    let deadline = tokio::time::Instant::now() + phase_timeout;
    let rejoins: Vec<_> = moving
        .into_iter()
        .map(|agent| {
            let (dialer, tls) = (dialer.clone(), tls[agent.index()].clone());
            tokio::spawn(tokio::time::timeout_at(deadline, async move {
                let rejoined = agent.rejoin(&dialer, config_version, tls).await;
                (rejoined, Instant::now())
            }))
        })
        .collect();
    let before = sampler.begin()?;
    let killed = Instant::now();
    coordinators[leader].kill()?;
    eprintln!(
        "failover: c{leader} SIGKILLed with {} agents",
        failover.moved
    );
    if let Some((new_leader, at)) = await_leader(fleets, &survivors, phase_timeout).await {
        failover.new_leader = Some(new_leader);
        failover.leader_after = Some(at.duration_since(killed));
    }
    let mut back = Vec::with_capacity(rejoins.len());
    let mut last = None::<Instant>;
    for task in rejoins {
        match task.await {
            Ok(Ok((Ok(Connected { agent, refused, .. }), at))) => {
                failover.back_refused += refused;
                back.push(at.duration_since(killed));
                last = Some(last.map_or(at, |last| last.max(at)));
                staying.push(agent);
            }
            Ok(Ok((Err(e), _))) => {
                failover.back_failures += 1;
                eprintln!("failover: an agent did not come back: {e:#}");
            }
            Ok(Err(_)) | Err(_) => failover.back_failures += 1,
        }
    }
    if failover.back_failures == 0 {
        failover.back_after = Some(last.map_or(Duration::ZERO, |at| at.duration_since(killed)));
    }
    failover.back_latency = Summary::of(back);
    failover.usage = sampler.end(before)?;
    failover.held_after = held(&staying, count);
    eprintln!(
        "failover: c{} leads after {:?}; agents back after {:?} ({} failed), held {:?}",
        failover
            .new_leader
            .map_or_else(|| "(none)".to_owned(), |c| c.to_string()),
        failover.leader_after,
        failover.back_after,
        failover.back_failures,
        failover.held_after
    );
    if let Some(e) = dialer.first_refusal.lock().ok().and_then(|mut e| e.take()) {
        eprintln!("failover: first refused dial: {e}");
    }
    Ok((failover, staying))
}

/// The first of `candidates` whose `About` says it leads, and when it said so; asked every 50 ms
/// (the resolution of the figure) until `timeout`.
async fn await_leader(
    fleets: &mut [FleetServiceClient<Channel>],
    candidates: &[usize],
    timeout: Duration,
) -> Option<(usize, Instant)> {
    let started = Instant::now();
    while started.elapsed() < timeout {
        for &c in candidates {
            let asked =
                tokio::time::timeout(Duration::from_secs(1), fleets[c].about(AboutRequest {}));
            if let Ok(Ok(about)) = asked.await
                && about.get_ref().leader
            {
                return Some((c, Instant::now()));
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// Agents held by each of `count` coordinators.
fn held(agents: &[Agent], count: usize) -> Vec<usize> {
    let mut held = vec![0; count];
    for agent in agents {
        if let Some(slot) = held.get_mut(agent.coordinator) {
            *slot += 1;
        }
    }
    held
}

/// The etcd members' CPU (summed) and etcd's counters, read around a phase.
struct EtcdProbe {
    sampler: Sampler,
    /// The member whose `/metrics` is read.
    endpoint: String,
}

/// What [`EtcdProbe::begin`] read.
struct EtcdStart {
    usage: Reading,
    counters: EtcdCounters,
}

impl EtcdProbe {
    fn start(cluster: &EtcdCluster) -> EtcdProbe {
        EtcdProbe {
            sampler: Sampler::start(children_named("etcd")),
            endpoint: cluster.endpoint(0),
        }
    }

    /// The members' CPU and etcd's counters at the start of a phase; None (logged) if either
    /// is unreadable.
    async fn begin(&self) -> Option<EtcdStart> {
        let usage = self
            .sampler
            .begin()
            .inspect_err(|e| eprintln!("etcd members' /proc: {e:#}"))
            .ok()?;
        let counters = EtcdCounters::read(&self.endpoint)
            .await
            .inspect_err(|e| eprintln!("etcd metrics: {e:#}"))
            .ok()?;
        Some(EtcdStart { usage, counters })
    }

    /// The members' CPU and etcd's write rates since `start`; None (logged) if unreadable.
    async fn end(&self, start: EtcdStart) -> Option<(Usage, EtcdRates)> {
        let counters = EtcdCounters::read(&self.endpoint)
            .await
            .inspect_err(|e| eprintln!("etcd metrics: {e:#}"))
            .ok()?;
        let usage = self
            .sampler
            .end(start.usage)
            .inspect_err(|e| eprintln!("etcd members' /proc: {e:#}"))
            .ok()?;
        Some((usage, counters.since(&start.counters)))
    }
}

/// Dials a coordinator as the operator, retrying while it starts (it binds within moments, once
/// its first election is decided on etcd).
async fn connect_operator(
    coordinator: &mut Coordinator,
    tls: Arc<rustls::ClientConfig>,
) -> anyhow::Result<Channel> {
    let address = coordinator.address.to_string();
    let started = Instant::now();
    loop {
        match transport::connect(&address, tls.clone()).await {
            Ok(channel) => return Ok(channel),
            Err(e) if started.elapsed() > Duration::from_secs(15) => {
                return Err(e)
                    .with_context(|| format!("coordinator {} did not come up", coordinator.name));
            }
            Err(_) => {}
        }
        if let Some(status) = coordinator.exited() {
            let log = std::fs::read_to_string(&coordinator.log).unwrap_or_default();
            anyhow::bail!("coordinator {} exited ({status}): {log}", coordinator.name);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The agents of one connect wave.
struct Wave {
    agents: Vec<Agent>,
    latency: Summary,
    failures: usize,
    /// Dials refused or failed and tried again, over all agents.
    refused: usize,
}

/// When the coordinators' CPU use (summed) over half a second fell below 10% of a core (they
/// have finished what the last phase caused); None if that did not happen within `timeout`.
async fn wait_idle(pids: &[Pid], timeout: Duration) -> Option<Instant> {
    let started = Instant::now();
    let window = Duration::from_millis(500);
    while started.elapsed() < timeout {
        let first = read_procs(pids).ok()?;
        tokio::time::sleep(window).await;
        let second = read_procs(pids).ok()?;
        let busy = second.cpu_ticks.saturating_sub(first.cpu_ticks) as f64 / process::clock_ticks();
        if busy < 0.1 * window.as_secs_f64() {
            return Some(first.at);
        }
    }
    None
}

/// Connects every agent, agent `i` dialling coordinator `i % count` first, each in its own task
/// (the dialer bounds the dials in flight).
async fn connect_all(
    dialer: &Arc<Dialer>,
    tls: Vec<Arc<rustls::ClientConfig>>,
    config_version: u64,
    phase_timeout: Duration,
) -> Wave {
    let deadline = tokio::time::Instant::now() + phase_timeout;
    let tasks: Vec<_> = tls
        .into_iter()
        .enumerate()
        .map(|(index, tls)| {
            let dialer = dialer.clone();
            let from = DialFrom {
                first: index,
                failed_in_round: 0,
            };
            tokio::spawn(tokio::time::timeout_at(deadline, async move {
                Agent::connect(&dialer, index, config_version, tls, from).await
            }))
        })
        .collect();
    let mut agents = Vec::with_capacity(tasks.len());
    let mut latencies = Vec::with_capacity(tasks.len());
    let mut first_error = None;
    let (mut failures, mut refused) = (0, 0);
    for (index, task) in tasks.into_iter().enumerate() {
        let error = match task.await {
            Ok(Ok(Ok(connected))) => {
                refused += connected.refused;
                agents.push(connected.agent);
                latencies.push(connected.latency);
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
    if let Some(e) = dialer.first_refusal.lock().ok().and_then(|mut e| e.take()) {
        eprintln!("first refused dial: {e}");
    }
    Wave {
        agents,
        latency: Summary::of(latencies),
        failures,
        refused,
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
    // Probe `seq` came from agent `seq % len`: from the leader's own agents, or relayed to it
    // from another coordinator's (through etcd).
    let (mut local, mut relayed) = (Vec::new(), Vec::new());
    for &(seq, at) in &arrived {
        let Some(sent) = sent.get(seq).copied().flatten() else {
            continue;
        };
        if figures.leader == Some(agents[seq % agents.len()].coordinator) {
            local.push(at.duration_since(sent));
        } else {
            relayed.push(at.duration_since(sent));
        }
    }
    let latencies: Vec<Duration> = local.iter().chain(&relayed).copied().collect();
    figures.fanout_lost = total - latencies.len();
    figures.fanout_latency = Summary::of(latencies);
    figures.fanout_local = Summary::of(local);
    figures.fanout_relayed = Summary::of(relayed);
    eprintln!(
        "fan-out: {} of {} events, p99 {:?} ({} from the leader's agents, p99 {:?}; {} from others', p99 {:?})",
        figures.fanout_latency.count,
        total,
        figures.fanout_latency.p99,
        figures.fanout_local.count,
        figures.fanout_local.p99,
        figures.fanout_relayed.count,
        figures.fanout_relayed.p99
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
