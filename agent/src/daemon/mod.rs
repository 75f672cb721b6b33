//! The daemon: one task that owns the sans-IO [`Engine`] and feeds it what happens.
//!
//! Inputs (adverts read from the sockets, tracker reports, link and address changes,
//! signals, coordinator commands, the engine's own deadline) reach the loop in [`Daemon::run`];
//! after each one the loop hands the engine's actions to the [`executor`], the only place actions
//! become IO, then publishes what changed. Start-up removes the VIPs a previous run left behind
//! before anything else. A config change (SIGHUP, a push, a link that came or went) is one
//! transaction ([`reload`]): everything that can fail is prepared first, and a refused change
//! leaves the running config untouched. An instance whose interface is missing runs in Fault
//! while the others run; it elects again when the link is back.

mod adopt;
mod commands;
mod conncount;
mod executor;
pub mod fleet;
mod handover;
mod held;
mod links;
pub mod network;
pub mod plan;
mod poller;
mod rare;
mod realtime;
mod reload;
mod signals;
mod sockets;
pub mod status;
mod trackers;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::task::Poll;
use std::time::{Duration, Instant};

use anyhow::Context;
use hav_proto::config::{NodeConfig, load_node_config};
use hav_proto::v1::event;
use hav_vrrp::engine::Engine;
use tokio::sync::mpsc;

use crate::net::{
    Announcer, Firewall, JournaledVips, TableName, TableRemoval, VipManager, VmacManager,
};
use crate::telemetry::Telemetry;
use executor::{Executor, Transition};
use hav_proto::sd_notify::{self, Notifier};
use links::HostWatch;
use plan::{Host, Plan};
use rare::Rare;
use signals::{Received, Signals};
use sockets::{Inbound, Sockets};
use status::Snapshot;
use trackers::Trackers;

pub use reload::ReloadError;
pub use signals::HANDLED_SIGNALS;

/// What one turn of the loop serves.
enum Turn {
    /// A socket the last wait reported readable is still to be read; when the loop woke for it.
    /// The loop reads it itself, so the datagram never travels inside a turn.
    Readable(Instant),
    /// The engine's deadline passed; the time that was seen.
    Deadline(Instant),
    /// The engine's steady advert is not the one whose repeats the kernel holds ([`held`]).
    Steady(Instant),
    Other(Other),
}

/// A turn that does more than feed the engine: the async part of the loop serves it.
enum Other {
    /// Boxed: the frequent turns stay small to move.
    Rare(Box<Rare>),
    OverridesExpired,
    Handover(handover::Event),
    Watchdog,
}

/// Why [`Daemon::engine_turns`] handed the loop back to its async part.
enum Pause {
    /// An engine turn asked for actions that are awaited.
    Execute,
    Other(Other),
    /// Stopping, and everything has stopped.
    Stopped,
}

/// The time of one turn, read when first asked for.
#[derive(Default)]
struct LazyNow(Option<Instant>);

impl LazyNow {
    fn now(&mut self) -> Instant {
        *self.0.get_or_insert_with(Instant::now)
    }
}

/// What the loop waits with between turns (see [`Daemon::next_turn`]).
struct Waiting {
    signals: Signals,
    gate: rare::Gate,
    poller: poller::Poller,
    /// What the last wait found, reused.
    ready: Vec<poller::Ready>,
    /// Whether the rare sources are polled in the next iteration; the first polls them all,
    /// so each registers the loop's waker.
    poll_rare: bool,
    /// The watchdog is fed from this loop, so a wedged loop is what systemd restarts.
    watchdog_every: Option<Duration>,
    next_watchdog: Option<Instant>,
}

impl Waiting {
    fn new(signals: Signals) -> anyhow::Result<Self> {
        let watchdog_every = sd_notify::watchdog_interval();
        Ok(Self {
            signals,
            gate: rare::Gate::default(),
            poller: poller::Poller::new()?,
            ready: Vec::new(),
            poll_rare: true,
            watchdog_every,
            next_watchdog: watchdog_every.map(|_| Instant::now()),
        })
    }

    fn watchdog_fed(&mut self, now: Instant) {
        self.next_watchdog = self.watchdog_every.map(|every| now + every);
    }
}

/// A deadline handled this much after it passed means the loop did not run for a while.
const LATE_DEADLINE: Duration = Duration::from_millis(5);

/// How long start-up waits for every tracker's first report before electing anyway.
const FIRST_REPORT_WAIT: Duration = Duration::from_secs(3);

/// Runs the agent from `config_path` until SIGTERM/SIGINT/SIGQUIT and a graceful stop.
/// How the daemon starts, beyond its config.
#[derive(Debug, Clone, Copy, Default)]
pub struct StartOptions {
    /// Instances whose VIPs are already on their interfaces start as master and keep them
    /// (see [`adopt`]).
    pub adopt: bool,
}

pub async fn run(config_path: PathBuf, options: StartOptions) -> anyhow::Result<()> {
    let config = load_node_config(&config_path).map_err(|errors| {
        anyhow::anyhow!(
            "config refused, nothing started:\n{}",
            errors.lines().join("\n")
        )
    })?;
    let selected = fleet::select(&config_path, config);
    let mut daemon = Daemon::start(config_path, selected, options).await?;
    daemon.run().await
}

/// The config that runs, what was derived from it, and where it came from.
struct Running {
    config: NodeConfig,
    plan: Plan,
    /// The coordinator version of the config (0: the local file).
    version: u64,
}

struct Daemon {
    config_path: PathBuf,
    running: Running,
    engine: Engine,
    executor: Executor,
    trackers: Trackers,
    host: HostWatch,
    /// Datagrams the socket layer dropped, by counter name.
    drops: BTreeMap<&'static str, u64>,
    overrides: fleet::Overrides,
    link: Option<fleet::Link>,
    telemetry: Telemetry,
    /// systemd's notification socket, when run as a `Type=notify` service.
    notifier: Option<Notifier>,
    status_requests: mpsc::Receiver<status::Request>,
    _status_server: Option<status::ServerGuard>,
    /// What the last published status said, to publish (and log) only changes.
    last_summary: Vec<Summary>,
    /// The engine's revision `last_summary` was taken at.
    summary_revision: u64,
    /// `[node] max_auto_priority`: how far the agent raised its own scheduling priority.
    auto_priority: Option<realtime::AutoPriority>,
}

impl Daemon {
    async fn start(
        config_path: PathBuf,
        selected: fleet::Selected,
        options: StartOptions,
    ) -> anyhow::Result<Self> {
        let fleet::Selected { config, version } = selected;
        // Planning reads the host and changes nothing; it comes first so that a journal that
        // cannot be read still lets the configured VIPs be removed.
        // Subscribed before the host is read: a link that appears after the read wakes the loop.
        let host_watch = HostWatch::spawn();
        let host = Host::read()?;
        // Named like `--check` names it: `file: reason`.
        let plan = plan::plan(&config, &host).with_context(|| match version {
            0 => config_path.display().to_string(),
            version => format!("coordinator config version {version}"),
        })?;
        // Crash safety first: whatever a previous run added and did not remove goes, before we
        // open a socket or could win an election. If the journal is unreadable, every VIP this
        // config names goes instead.
        let manager = VipManager::new().context("netlink")?;
        let mut vips = JournaledVips::new(manager, &config.node.state_dir)
            .with_context(|| format!("VIP journal in {}", config.node.state_dir.display()))?;
        let recovery = vips
            .recover(&plan.all_vips(), &plan.network)
            .await
            .context("removing VIPs left by a previous run")?;
        if !recovery.removed.is_empty() {
            tracing::warn!(
                vips = ?recovery.removed.iter().map(|v| v.addr).collect::<Vec<_>>(),
                "removed VIPs a previous run left behind"
            );
        }
        if !recovery.removed_network.is_empty() {
            tracing::warn!(
                removed = ?recovery.removed_network,
                "removed routes, rules and virtual MAC interfaces a previous run left behind"
            );
        }
        // The macvlans exist before the plan that binds their instances to them.
        vips.reserve_network(&plan.network)
            .context("journalling the configured virtual MAC interfaces, routes and rules")?;
        let vmacs = VmacManager::new(vips.manager().handle().clone());
        let plan = if network::ensure_vmacs(&vmacs, &config).await {
            plan::plan(&config, &Host::read()?)?
        } else {
            plan
        };
        if let Some(corrupt) = &recovery.corrupt {
            tracing::error!(kept_as = %corrupt.kept_as.display(), reason = %corrupt.reason, "VIP journal was corrupt");
        }
        // Rules a crashed run left would drop traffic to VIPs this run may hold with accept
        // mode on: hav's table goes too (a config that needs it writes it anew).
        let mut accept = Firewall::open(TableName::default());
        match accept.remove_tables().await {
            Ok(TableRemoval::Removed) => tracing::warn!(
                table = %accept.table(),
                "removed the nftables table a previous run left behind"
            ),
            Ok(TableRemoval::Absent | TableRemoval::NftMissing) => {}
            Err(error) => tracing::error!(%error, "could not remove hav's nftables table"),
        }
        for (instance, why) in plan.unbound() {
            tracing::warn!(%instance, reason = %why, "instance {instance}: {why}; it stays in Fault until that changes");
        }
        let engine = Engine::new(plan.engine.clone())?;
        let announcer = Announcer::new().context("opening the GARP/NA sockets")?;
        let mut executor = Executor::new(Sockets::default(), vips, announcer, accept);
        // Journal every VIP this config can make us hold now, so that a takeover writes nothing.
        executor
            .vips
            .reserve(&plan.all_vips())
            .context("journalling the configured VIPs")?;
        executor
            .filter_ahead(&plan)
            .await
            .context("filtering the VIPs without accept mode")?;
        executor
            .quiet_vmacs(&plan)
            .await
            .context("silencing the virtual MAC interfaces")?;
        let prepared = executor::Prepared {
            sockets: executor.sockets.prepare(plan.router_sockets.values())?,
            instance_hooks: executor.instance_hooks.prepare(&plan.instance_hooks)?,
            group_hooks: executor.group_hooks.prepare(&plan.group_hooks)?,
        };
        executor.install(&plan, prepared, &engine);

        let (status_tx, status_requests) = mpsc::channel(16);
        let status_path = config
            .node
            .status_socket
            .clone()
            .unwrap_or_else(|| config.node.state_dir.join("hav-agent.sock"));
        let status_server = match status::serve(&status_path, status_tx) {
            Ok(guard) => Some(guard),
            Err(error) => {
                tracing::warn!(path = %status_path.display(), %error, "no status socket");
                None
            }
        };
        let mut telemetry = Telemetry::start(&config.telemetry, &config.node.name);
        telemetry.keep_trace_ids_in(&config.node.state_dir);
        let mut daemon = Self {
            config_path,
            running: Running {
                config,
                plan,
                version,
            },
            engine,
            executor,
            trackers: Trackers::new(),
            host: host_watch,
            drops: BTreeMap::new(),
            overrides: fleet::Overrides::default(),
            link: None,
            telemetry,
            notifier: Notifier::from_env().unwrap_or_else(|error| {
                tracing::warn!(%error, "NOTIFY_SOCKET unusable; systemd will not hear from us");
                None
            }),
            status_requests,
            _status_server: status_server,
            last_summary: Vec::new(),
            summary_revision: u64::MAX,
            auto_priority: None,
        };
        daemon.configure_telemetry();
        daemon.trackers.sync(&daemon.running.plan)?;
        daemon.trackers.await_first_reports(FIRST_REPORT_WAIT).await;
        let now = Instant::now();
        daemon
            .trackers
            .apply_all(&daemon.running.plan, None, &mut daemon.engine, now);
        daemon.apply_bindings(None, now);
        // Before the first election: a node restarted while drained or overridden stays so.
        daemon.overrides = fleet::Overrides::load(&daemon.running.config.node.state_dir, now);
        daemon.apply_overrides(now);
        let adopted = if options.adopt {
            Some(
                adopt::Adopted::find(
                    &daemon.running.plan,
                    &mut daemon.engine,
                    &daemon.executor.vips,
                )
                .await,
            )
        } else {
            None
        };
        daemon.engine.start(now);
        daemon.execute().await;
        if let Some(adopted) = adopted {
            adopted
                .release_unheld(&daemon.engine, &mut daemon.executor.vips)
                .await;
        }
        // After the first election is under way: the link never delays VRRP.
        daemon.link = fleet::spawn_link(&daemon.running.config);
        daemon.publish(false);
        tracing::info!(
            node = %daemon.running.config.node.name,
            config_version = daemon.running.version,
            instances = daemon.running.plan.engine.routers.len(),
            "hav-agent started"
        );
        Ok(daemon)
    }

    /// The loop. It blocks its thread in its own `epoll` ([`poller`]) between turns, so it
    /// must run on a thread of its own: the one blocking on a multi-thread runtime, whose
    /// workers drive the rest.
    async fn run(&mut self) -> anyhow::Result<()> {
        if tokio::runtime::Handle::current().runtime_flavor()
            != tokio::runtime::RuntimeFlavor::MultiThread
        {
            anyhow::bail!("the daemon's loop needs a multi-thread runtime to block beside");
        }
        let mut waiting = Waiting::new(Signals::install()?)?;
        // Ready only once SIGTERM is ours: a stop right after start-up is a graceful one.
        self.notify(|n| n.ready());
        let mut stopping = false;
        // The overdue deadline whose lateness was last taken as a stall of this process: one
        // stall raises the scheduling priority once, whichever event woke the loop first.
        let mut late_seen: Option<Instant> = None;
        loop {
            let engine_only = match self.engine_turns(&mut waiting, &mut late_seen, stopping)? {
                Pause::Stopped => break,
                Pause::Execute => true,
                Pause::Other(other) => {
                    if !self.serve(other, &mut waiting, &mut stopping).await {
                        continue;
                    }
                    false
                }
            };
            self.execute().await;
            self.publish(engine_only);
            if self.stopped(stopping) {
                break;
            }
        }
        self.finish().await;
        Ok(())
    }

    /// Serves a turn that is more than feeding the engine. Whether it may have changed
    /// anything: then the actions it caused are carried out and the changes published.
    async fn serve(&mut self, other: Other, waiting: &mut Waiting, stopping: &mut bool) -> bool {
        match other {
            Other::Rare(rare) => match *rare {
                Rare::Signal(Received::Stop(name)) => self.begin_stop(stopping, name).await,
                Rare::Signal(Received::Reload) => self.reload().await,
                Rare::Signal(Received::Status) => {
                    tracing::info!("status:\n{}", status::render(&self.snapshot()));
                    return false;
                }
                Rare::Signal(Received::Statistics) => {
                    let statistics = status::render_statistics(&self.snapshot());
                    tracing::info!("statistics:\n{statistics}");
                    return false;
                }
                Rare::Signal(Received::Ignored(name)) => {
                    tracing::info!(signal = name, "{name} ignored");
                    return false;
                }
                Rare::Command(command) => {
                    // In an `agent.command` span that continues the coordinator's trace.
                    let span = command.span();
                    let command = self.on_command(command, *stopping);
                    tracing::Instrument::instrument(command, span).await;
                }
                Rare::Status(reply) => {
                    let _ = reply.send(self.snapshot());
                    return false;
                }
                Rare::CheckReport(report) => self.executor.on_check(report).await,
                Rare::Track(event) => {
                    let now = Instant::now();
                    (self.trackers).record(event, &self.running.plan, &mut self.engine, now);
                }
                Rare::HostChanged => self.rebind().await,
            },
            Other::OverridesExpired => {
                let now = Instant::now();
                for name in self.overrides.expire(now) {
                    tracing::info!(instance = %name, "priority override expired");
                }
                self.apply_overrides(now);
            }
            Other::Handover(event) => self.executor.on_handover(event).await,
            Other::Watchdog => {
                self.notify(|n| n.watchdog());
                waiting.watchdog_fed(Instant::now());
                return false;
            }
        }
        true
    }

    /// Serves turns that only feed the engine an advert or its deadline, and whose actions
    /// (adverts to send, if any) need nothing awaited: an idle node's every turn. Returns at the
    /// first turn that needs more. A function of its own, kept out of the async loop, so that
    /// the code an idle node runs per advert is compact.
    #[inline(never)]
    #[cfg_attr(target_os = "linux", unsafe(link_section = ".text.hot"))]
    fn engine_turns(
        &mut self,
        waiting: &mut Waiting,
        late_seen: &mut Option<Instant>,
        stopping: bool,
    ) -> anyhow::Result<Pause> {
        loop {
            let deadline = self.engine.poll_timeout();
            (waiting.poller.follow_sockets(
                self.executor.sockets.generation(),
                self.executor.sockets.descriptors(),
            ))
            .context("cannot wait for the VRRP sockets")?;
            match self.next_turn(waiting, stopping, deadline)? {
                Turn::Readable(now) => {
                    // Woken late, an advert can win the wake-up, and hearing it can move the
                    // overdue deadline (a master re-announces): the stall counts here then.
                    if let Some(lateness) = new_stall(deadline, now, late_seen) {
                        self.on_late_wakeup(lateness);
                    }
                    if let Some(inbound) = self.executor.sockets.try_next() {
                        self.on_inbound(inbound, now);
                    }
                }
                Turn::Deadline(mut now) => {
                    // Compared without a subtraction: on time is the rule.
                    let late = deadline.and_then(|at| at.checked_add(LATE_DEADLINE));
                    if late.is_some_and(|late| now > late) {
                        now = self.on_late_deadline(deadline, now, late_seen);
                    }
                    self.engine.handle_timeout(now);
                }
                Turn::Steady(now) => self.follow_steady(now),
                Turn::Other(other) => return Ok(Pause::Other(other)),
            }
            // Usually adverts to send or nothing: no future is built then.
            if !(self.executor).execute_at_once(&mut self.engine, &mut self.telemetry) {
                return Ok(Pause::Execute);
            }
            self.publish(true);
            if self.stopped(stopping) {
                return Ok(Pause::Stopped);
            }
        }
    }

    /// Woken late for the engine's deadline (the process was stopped, or starved of CPU):
    /// adverts that arrived meanwhile are older than this expiry and count first, or a backup
    /// would take over from a master it has in fact heard. The time to handle the deadline at.
    #[cold]
    fn on_late_deadline(
        &mut self,
        deadline: Option<Instant>,
        now: Instant,
        late_seen: &mut Option<Instant>,
    ) -> Instant {
        self.take_queued_adverts();
        if let Some(lateness) = new_stall(deadline, now, late_seen) {
            self.on_late_wakeup(lateness);
        }
        Instant::now()
    }

    /// Whether the loop is done: stopping, and the engine and the hand-overs have stopped.
    fn stopped(&self, stopping: bool) -> bool {
        stopping && self.engine.is_stopped() && self.executor.handover.is_idle()
    }

    /// The next turn, the repeats held since the last one handed to the engine first. A change
    /// of the engine's steady advert is a turn of its own, before any wait. `deadline` is the
    /// engine's.
    fn next_turn(
        &mut self,
        w: &mut Waiting,
        stopping: bool,
        deadline: Option<Instant>,
    ) -> anyhow::Result<Turn> {
        if self.engine.steady_repeat().map(|steady| steady.key) != self.executor.sockets.following()
        {
            return Ok(Turn::Steady(Instant::now()));
        }
        let turn = self.wait_turn(w, stopping, deadline)?;
        if self.executor.sockets.holding() {
            let now = match turn {
                Turn::Readable(now) | Turn::Deadline(now) | Turn::Steady(now) => now,
                Turn::Other(_) => Instant::now(),
            };
            self.take_held(now);
        }
        Ok(turn)
    }

    /// Hands the engine the repeats held since the last turn, each at the time it arrived.
    fn take_held(&mut self, now: Instant) {
        let mut drain = self.executor.sockets.begin_drain(now);
        while let Some((inbound, at)) = self.executor.sockets.next_held(&mut drain) {
            self.on_inbound(inbound, at);
        }
        self.executor.sockets.end_drain(drain);
    }

    /// Lets every advert wake the loop again, and hands the engine what was held.
    fn release_held(&mut self, now: Instant) {
        if let Err(error) = self.executor.sockets.release() {
            let error = hav_proto::errors::chain(&error);
            tracing::warn!(%error, "cannot let repeats wake the loop again");
        }
        self.take_held(now);
    }

    /// The kernel's filters follow the engine's steady advert: the old one's repeats are
    /// handed over first.
    #[cold]
    fn follow_steady(&mut self, now: Instant) {
        self.release_held(now);
        let steady = self.engine.steady_repeat();
        match self.executor.sockets.follow(steady) {
            Ok(holding) => {
                tracing::debug!(holding, "the kernel's filters follow the steady advert")
            }
            Err(error) => {
                let error = hav_proto::errors::chain(&error);
                tracing::warn!(%error, "cannot hold repeats in the kernel; every advert wakes the loop");
            }
        }
    }

    /// The first source with something, in order: the rare ones, expired overrides, adverts,
    /// hand-over events, the engine's `deadline`, the watchdog; else a wait in the poller until
    /// the first of them (never before it: a deadline is met on time or late, never early).
    fn wait_turn(
        &mut self,
        w: &mut Waiting,
        stopping: bool,
        deadline: Option<Instant>,
    ) -> anyhow::Result<Turn> {
        loop {
            // Only after the doorbell rang (a rare source's wake-up rings it) or a rare turn
            // (the gate stays open: a source may hold more): an advert's turn skips them.
            if std::mem::take(&mut w.poll_rare)
                && let Some(rare) = self.poll_rare(w, stopping)
            {
                w.poll_rare = true;
                return Ok(Turn::Other(Other::Rare(Box::new(rare))));
            }
            // Read once a turn at most, and only if something needs it.
            let mut clock = LazyNow::default();
            let override_expiry = self.overrides.next_expiry();
            if override_expiry.is_some_and(|at| at <= clock.now()) {
                return Ok(Turn::Other(Other::OverridesExpired));
            }
            if self.executor.sockets.any_readable() {
                return Ok(Turn::Readable(clock.now()));
            }
            let handover = &self.executor.handover;
            let beacons = self.executor.beacons.as_ref();
            let none_left = self.executor.counts.none_left();
            // Alive through the wait below: its sleep and its socket ring the doorbell. Not
            // built at all when it could not resolve (most nodes have no hand-over).
            let mut handover_event =
                std::pin::pin!(handover::has_events(handover, beacons).then(|| {
                    tokio::task::coop::unconstrained(handover::next_event(
                        handover, beacons, none_left,
                    ))
                }));
            if let Some(Poll::Ready(event)) = (handover_event.as_mut().as_pin_mut())
                .map(|event| event.poll(&mut w.poller.context()))
            {
                return Ok(Turn::Other(Other::Handover(event)));
            }
            if deadline.is_some_and(|at| at <= clock.now()) {
                return Ok(Turn::Deadline(clock.now()));
            }
            if w.next_watchdog.is_some_and(|at| at <= clock.now()) {
                return Ok(Turn::Other(Other::Watchdog));
            }
            let timeout = [deadline, override_expiry, w.next_watchdog]
                .into_iter()
                .flatten()
                .min()
                .map(|at| at.saturating_duration_since(clock.now()));
            w.ready.clear();
            w.poller.wait(timeout, &mut w.ready)?;
            for event in &w.ready {
                match *event {
                    poller::Ready::Doorbell => w.poll_rare = true,
                    poller::Ready::Socket(fd) => self.executor.sockets.mark_readable(fd),
                }
            }
        }
    }

    /// Polls the rare sources once, outside tokio's budget: this thread runs one poll of its
    /// task for as long as it loops, and a spent budget would make every source look empty.
    /// Out of line: an advert's turn skips it.
    #[inline(never)]
    fn poll_rare(&mut self, w: &mut Waiting, stopping: bool) -> Option<Rare> {
        let rare = std::pin::pin!(tokio::task::coop::unconstrained(std::future::poll_fn(
            |cx| {
                w.gate.poll(cx, |cx| {
                    rare::Sources {
                        signals: &mut w.signals,
                        link: &mut self.link,
                        status_requests: &mut self.status_requests,
                        balancer: &mut self.executor.balancer,
                        trackers: &mut self.trackers.events,
                        host: &mut self.host,
                        stopping,
                    }
                    .poll_next(cx)
                })
            }
        )))
        .poll(&mut w.poller.context());
        match rare {
            Poll::Ready(rare) => Some(rare),
            Poll::Pending => None,
        }
    }

    async fn begin_stop(&mut self, stopping: &mut bool, signal: &str) {
        if *stopping && !self.executor.handover.is_idle() {
            tracing::info!(
                signal,
                "stopping now: letting go of the VIPs kept for connections"
            );
            self.executor.end_drains(None).await;
        }
        if !*stopping {
            tracing::info!(
                signal,
                "stopping: resigning mastership, keeping VIPs until a peer takes over"
            );
            *stopping = true;
            self.notify(|n| n.stopping());
            self.engine.shutdown(Instant::now());
        }
    }

    async fn finish(&mut self) {
        self.trackers.stop().await;
        self.executor.close_hooks().await;
        // The engine released everything it held; the journal catches anything else.
        match (self.executor.vips).recover(&[], &Default::default()).await {
            Ok(recovery) => {
                if !recovery.removed.is_empty() {
                    tracing::warn!(
                        vips = ?recovery.removed.iter().map(|v| v.addr).collect::<Vec<_>>(),
                        "removed VIPs still on an interface at stop"
                    )
                }
                if !recovery.removed_network.is_empty() {
                    tracing::info!(removed = ?recovery.removed_network, "removed the virtual MAC interfaces, and the routes and rules still there");
                }
            }
            Err(error) => tracing::error!(%error, "could not clear the VIP journal"),
        }
        if let Err(error) = self.executor.remove_filter_table().await {
            tracing::error!(%error, "could not remove hav's nftables table");
        }
        tracing::info!("hav-agent stopped");
    }

    /// Sends one notification to systemd, if it is listening; a failure is only logged.
    fn notify(&self, send: impl FnOnce(&Notifier) -> Result<(), sd_notify::NotifyError>) {
        if let Some(notifier) = &self.notifier
            && let Err(error) = send(notifier)
        {
            tracing::warn!(%error, "systemd notification failed");
        }
    }

    /// `[node] max_auto_priority`: a wake-up this late may raise the agent's scheduling priority
    /// ([`realtime`]); the key removed by a reload leaves the priority reached as it is.
    #[cold]
    fn on_late_wakeup(&mut self, lateness: Duration) {
        let Some(max) = self.running.config.node.max_auto_priority else {
            return;
        };
        let auto = (self.auto_priority).get_or_insert_with(|| realtime::AutoPriority::new(max));
        auto.set_max(max);
        let fastest = (self.running.plan.engine.routers.iter())
            .map(|router| router.advert_interval.as_duration())
            .min();
        let Some(priority) = auto.on_wakeup(lateness, realtime::late_threshold(fastest)) else {
            return;
        };
        let late_ms = lateness.as_millis() as u64;
        match realtime::apply(priority) {
            Ok(threads) => {
                auto.raised(priority);
                tracing::warn!(
                    priority,
                    max = max.get(),
                    late_ms,
                    threads,
                    "woken {late_ms} ms late: now SCHED_RR at priority {priority} (max_auto_priority {})",
                    max.get()
                );
            }
            Err(error) => {
                auto.refused();
                tracing::error!(
                    %error,
                    late_ms,
                    "woken {late_ms} ms late, but cannot switch to SCHED_RR ({error}): needs \
                     CAP_SYS_NICE and no RestrictRealtime=yes; not trying again"
                );
            }
        }
    }

    /// Feeds the engine what the kernel has queued on the sockets.
    fn take_queued_adverts(&mut self) {
        while let Some(inbound) = self.executor.sockets.try_next_queued() {
            self.on_inbound(inbound, Instant::now());
        }
    }

    /// Feeds the engine one datagram received at `now`.
    #[cfg_attr(target_os = "linux", unsafe(link_section = ".text.hot"))]
    fn on_inbound(&mut self, inbound: Inbound, now: Instant) {
        match inbound {
            Inbound::Packet { socket, datagram } => {
                let (interface, payload) = self.executor.sockets.packet(socket, datagram.payload);
                let meta = &datagram.meta;
                if let Some(heard) = self.engine.handle_packet(now, interface, meta, payload) {
                    self.telemetry.heard(&heard, now);
                }
            }
            Inbound::Dropped { counter } => *self.drops.entry(counter).or_default() += 1,
        }
    }

    /// Hands the engine's actions to the executor; reports the transitions to the coordinator.
    async fn execute(&mut self) {
        let transitions = self
            .executor
            .execute(&mut self.engine, &mut self.telemetry)
            .await;
        if !transitions.is_empty() {
            self.report(&transitions);
        }
    }

    /// Tells the coordinator about transitions: the snapshot showing the new states first.
    fn report(&self, transitions: &[Transition]) {
        let Some(link) = &self.link else {
            return;
        };
        self.publish_link();
        for transition in transitions {
            link.event(event::Kind::Transition(hav_proto::v1::Transition {
                instance: transition.instance.clone(),
                from: fleet::vrrp_state(transition.from) as i32,
                to: fleet::vrrp_state(transition.to) as i32,
                cause: transition.cause.to_string(),
            }));
        }
    }

    /// Gives every router the priority override it should run with now.
    /// Gives every router the override it runs with now, and keeps them in the state dir.
    fn apply_overrides(&mut self, now: Instant) {
        let state_dir = &self.running.config.node.state_dir;
        if let Err(error) = self.overrides.save(state_dir, now) {
            tracing::warn!(dir = %state_dir.display(), %error, "priority overrides not saved: a restart will not keep them");
        }
        for router in &self.running.plan.engine.routers {
            if let Some(id) = self.engine.router_id(&router.name) {
                self.engine
                    .set_priority_override(now, id, self.overrides.of(&router.name));
            }
        }
    }

    /// Tells the failover traces which router is which (after start and every reload).
    fn configure_telemetry(&mut self) {
        let engine = &self.engine;
        self.telemetry.configure(
            (self.executor.names()).filter_map(|(id, _)| Some((id, engine.router_config(id)?))),
        );
    }

    fn snapshot(&self) -> Snapshot {
        let mut counters: BTreeMap<String, u64> = (self.engine.counters().named())
            .map(|(name, value)| (name.to_string(), value))
            .collect();
        for (name, value) in &self.drops {
            counters.insert((*name).to_string(), *value);
        }
        for (name, value) in self.executor.notifiers.counters() {
            counters.insert(name.to_owned(), value);
        }
        Snapshot {
            node: self.running.config.node.name.clone(),
            config: self.config_path.display().to_string(),
            instances: status::instances(&self.engine, Instant::now()),
            trackers: (self.trackers.health().iter())
                .map(|(key, health)| (key.clone(), health.to_string()))
                .chain(self.executor.real_server_health())
                .collect(),
            counters,
        }
    }

    /// Gives the control link the node's state (it sends it only if something changed).
    fn publish_link(&self) {
        if let Some(link) = &self.link {
            link.publish(fleet::snapshot(
                &self.engine,
                &self.running.config,
                self.running.version,
                &self.overrides,
                |id| self.executor.handover.draining(id),
            ));
        }
    }

    /// Publishes what changed: metrics (when served), and on a change of state, priority, known
    /// master or VIPs the coordinator's snapshot and a debug line, after the fact, so that a
    /// reader following the log finds the change on the status socket. After a turn that only
    /// fed the engine adverts or its deadline (`engine_only`), the routers are compared only if
    /// the engine's revision moved: a backup of hundreds of instances hears thousands of adverts
    /// a second, and comparing every router after each one made its cost grow with the square of
    /// them; a master's advert timer changes nothing either.
    ///
    /// The checks are in line and the work out of line: an idle node's turn serves no metrics,
    /// logs no debug line and leaves the revision where it was.
    #[inline]
    fn publish(&mut self, engine_only: bool) {
        if self.telemetry.serves_metrics() {
            self.publish_metrics();
        }
        // Counters move with every advert: they count as a change only for log followers.
        let debug = debug_logging();
        let revision = self.engine.revision();
        if engine_only && !debug && revision == self.summary_revision {
            return;
        }
        self.publish_summaries(revision, debug);
    }

    #[inline(never)]
    fn publish_metrics(&self) {
        self.telemetry
            .publish(&self.engine, self.trackers.health(), &self.drops);
        self.telemetry
            .notifications(&self.executor.notifiers.counters());
    }

    /// The coordinator's snapshot and a debug line, if a router's summary changed since the
    /// last; the summaries are those at `revision` (with counters while `debug`).
    #[inline(never)]
    fn publish_summaries(&mut self, revision: u64, debug: bool) {
        self.summary_revision = revision;
        let counters = debug.then(|| self.engine.status());
        let handover = &self.executor.handover;
        let engine = &self.engine;
        let summaries = || {
            engine.briefs().enumerate().map(|(index, brief)| Summary {
                draining: handover.draining(brief.id),
                counters: (counters.as_ref())
                    .and_then(|status| status.get(index))
                    .map(|status| status.counters.clone()),
                brief,
            })
        };
        // Compared in place: after most adverts nothing changed and nothing is allocated.
        if summaries().len() != self.last_summary.len()
            || !summaries()
                .zip(&self.last_summary)
                .all(|(now, last)| now == *last)
        {
            self.last_summary = summaries().collect();
            self.publish_link();
            tracing::debug!("status published");
        }
    }
}

/// Whether debug lines are logged. The level hint, not `enabled!`: that leaves
/// tracing-subscriber's per-layer filter state set when no event follows, and the loop's thread
/// may create no event before its next span, which the OTLP layer would then take as filtered
/// out.
fn debug_logging() -> bool {
    tracing::level_filters::LevelFilter::current() >= tracing::Level::DEBUG
}

/// How late a wake-up at `now` came past the engine's `deadline`, if that is a stall of this
/// process not counted yet: one per overdue deadline, whichever event woke the loop first
/// (`seen` holds the deadline last counted).
fn new_stall(
    deadline: Option<Instant>,
    now: Instant,
    seen: &mut Option<Instant>,
) -> Option<Duration> {
    // Compared before anything is subtracted: an advert before the deadline is the rule.
    let at = deadline.filter(|at| now > *at)?;
    let lateness = now.duration_since(at);
    if lateness <= LATE_DEADLINE || *seen == Some(at) {
        return None;
    }
    *seen = Some(at);
    Some(lateness)
}

/// The part of a router's status whose change is worth publishing (counters only while debug
/// logging is on).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Summary {
    brief: hav_vrrp::engine::RouterBrief,
    /// Connections still served after a hand-over.
    draining: Option<usize>,
    counters: Option<hav_vrrp::Counters>,
}

/// `hav-agent --check`: loads and plans a config as start-up does ([`plan::check`]), starting
/// nothing. `Err`: each reason start-up refuses the config for, as `file: key.path: reason` or
/// `file: reason`. `Ok`: a summary, then `file: warning: …` for each thing this host lacks (an
/// interface, an address, a user, a program, trust anchors), naming the instance; the daemon
/// starts with such a config and runs what it can.
pub fn check(path: &Path) -> Result<String, String> {
    let config = load_node_config(path).map_err(|errors| errors.lines().join("\n"))?;
    let host = Host::read().map_err(|error| format!("{}: {error}", path.display()))?;
    let problems =
        plan::check(&config, &host).map_err(|error| format!("{}: {error}", path.display()))?;
    let mut report = format!(
        "{}: ok: node {}, {} instance(s), {} sync group(s)",
        path.display(),
        config.node.name,
        config.instances.len(),
        config.sync_groups.len()
    );
    for problem in problems {
        report.push_str(&format!("\n{}: warning: {problem}", path.display()));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stall_counts_once_per_overdue_deadline() {
        let t = Instant::now();
        let deadline = Some(t);
        let mut seen = None;
        // On time, or late by no more than the slack: no stall.
        assert_eq!(new_stall(deadline, t + LATE_DEADLINE, &mut seen), None);
        assert_eq!(new_stall(None, t + Duration::from_secs(1), &mut seen), None);
        // Woken a second late: one stall, whichever event comes next with the same deadline.
        let late = t + Duration::from_secs(1);
        assert_eq!(
            new_stall(deadline, late, &mut seen),
            Some(Duration::from_secs(1))
        );
        assert_eq!(new_stall(deadline, late + LATE_DEADLINE, &mut seen), None);
        // A later deadline missed again is a new stall.
        let next = Some(late + Duration::from_millis(100));
        assert_eq!(
            new_stall(next, late + Duration::from_millis(300), &mut seen),
            Some(Duration::from_millis(200))
        );
    }
}
