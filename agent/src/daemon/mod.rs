//! The event loop around the core: the only place where the sans-IO engine meets the kernel.
//!
//! One task owns the [`Engine`]. Sockets, trackers and signals feed it through channels; after
//! every input it drains the engine's actions in order and carries them out (adverts, VIPs through
//! the crash-safe journal, GARP/NA, hooks), then sleeps until the engine's next deadline. Start-up
//! removes VIPs a previous run left behind before anything else; a reload that cannot be applied
//! changes nothing. With a `[coordinator]` table the loop also serves the control link
//! ([`fleet`]): pushed configs go through the same path as a reload, drains and overrides set
//! runtime priorities, and every change is reported; the link never blocks the loop.

pub mod fleet;
pub mod plan;
pub mod status;
mod timer;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use hav_proto::config::{NodeConfig, load_node_config};
use hav_proto::v1::{command, event};
use hav_vrrp::Priority;
use hav_vrrp::engine::{Action, Engine, RouterId, State, TrackEffect};
use hav_vrrp::wire::RecvMeta;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::hooks::{HookKind, HookQueue, HookState, StateChange};
use crate::net::{Announcer, JournaledVips, Received, SocketSpec, Vip, VipManager, VrrpSocket};
use crate::sd_notify::{self, Notifier};
use crate::telemetry::Telemetry;
use crate::track::{self, Contribution, Health, TrackEvent, TrackerHandle};
use plan::Plan;
use status::Snapshot;

/// How long start-up waits for every tracker's first report before electing anyway.
const FIRST_REPORT_WAIT: Duration = Duration::from_secs(3);

/// What the receive tasks hand to the loop.
enum Inbound {
    Packet {
        interface: String,
        meta: RecvMeta,
        payload: Vec<u8>,
    },
    Dropped {
        counter: &'static str,
    },
}

/// Runs the agent from `config_path` until SIGTERM/SIGINT and a graceful stop.
pub async fn run(config_path: PathBuf) -> anyhow::Result<()> {
    let config = load_node_config(&config_path).map_err(|errors| {
        anyhow::anyhow!(
            "config refused, nothing started:\n{}",
            errors.lines().join("\n")
        )
    })?;
    let selected = fleet::select(&config_path, config);
    let mut daemon = Daemon::start(config_path, selected).await?;
    daemon.run().await
}

struct Daemon {
    config_path: PathBuf,
    config: NodeConfig,
    plan: Plan,
    engine: Engine,
    names: HashMap<RouterId, String>,
    sockets: HashMap<SocketSpec, OpenSocket>,
    vips: JournaledVips,
    announcer: Announcer,
    trackers: HashMap<String, RunningTracker>,
    health: BTreeMap<String, Health>,
    hooks: HashMap<String, HookQueue>,
    group_hooks: HashMap<String, HookQueue>,
    inbound: mpsc::Receiver<Inbound>,
    inbound_tx: mpsc::Sender<Inbound>,
    track_events: mpsc::Receiver<TrackEvent>,
    track_tx: mpsc::Sender<TrackEvent>,
    drops: BTreeMap<&'static str, u64>,
    /// systemd's notification socket, when run as a `Type=notify` service.
    notifier: Option<Notifier>,
    status_requests: mpsc::Receiver<status::Request>,
    /// What the last published status said, to publish (and log) only changes.
    last_summary: Vec<Summary>,
    _status_server: Option<status::ServerGuard>,
    /// The coordinator version of the running config (0: the local file).
    config_version: u64,
    overrides: fleet::Overrides,
    link: Option<fleet::Link>,
    telemetry: Telemetry,
}

struct OpenSocket {
    socket: Arc<VrrpSocket>,
    receiver: JoinHandle<()>,
}

impl Drop for OpenSocket {
    fn drop(&mut self) {
        self.receiver.abort();
    }
}

struct RunningTracker {
    handle: TrackerHandle,
    fingerprint: String,
}

impl Daemon {
    async fn start(config_path: PathBuf, selected: fleet::Selected) -> anyhow::Result<Self> {
        let fleet::Selected {
            config,
            version: config_version,
        } = selected;
        // Crash safety first: whatever a previous run added and did not remove goes, before we
        // open a socket or could win an election.
        let manager = VipManager::new().context("netlink")?;
        let mut vips = JournaledVips::new(manager, &config.node.state_dir)
            .with_context(|| format!("VIP journal in {}", config.node.state_dir.display()))?;
        let recovery = vips
            .recover(&[])
            .await
            .context("removing VIPs left by a previous run")?;
        if !recovery.removed.is_empty() {
            tracing::warn!(
                vips = ?recovery.removed.iter().map(|v| v.addr).collect::<Vec<_>>(),
                "removed VIPs a previous run left behind"
            );
        }
        if let Some(corrupt) = &recovery.corrupt {
            tracing::error!(kept_as = %corrupt.kept_as.display(), reason = %corrupt.reason, "VIP journal was corrupt");
        }

        // Named like `--check` names it: `file: reason`.
        let plan = plan::plan(&config).with_context(|| match config_version {
            0 => config_path.display().to_string(),
            version => format!("coordinator config version {version}"),
        })?;
        let engine = Engine::new(plan.engine.clone())?;
        // Journal every VIP this config can make us hold now, so that a takeover writes nothing.
        vips.reserve(&plan.all_vips())
            .context("journalling the configured VIPs")?;
        let (inbound_tx, inbound) = mpsc::channel(1024);
        let (track_tx, track_events) = mpsc::channel(256);
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
        let telemetry = Telemetry::start(&config.telemetry, &config.node.name);
        let mut daemon = Self {
            config_path,
            config,
            plan,
            engine,
            names: HashMap::new(),
            sockets: HashMap::new(),
            vips,
            announcer: Announcer::new().context("opening the GARP/NA sockets")?,
            trackers: HashMap::new(),
            health: BTreeMap::new(),
            hooks: HashMap::new(),
            group_hooks: HashMap::new(),
            inbound,
            inbound_tx,
            track_events,
            track_tx,
            drops: BTreeMap::new(),
            notifier: Notifier::from_env().unwrap_or_else(|error| {
                tracing::warn!(%error, "NOTIFY_SOCKET unusable; systemd will not hear from us");
                None
            }),
            status_requests,
            last_summary: Vec::new(),
            _status_server: status_server,
            config_version,
            overrides: fleet::Overrides::default(),
            link: None,
            telemetry,
        };
        daemon.refresh_names();
        let new_sockets = daemon.open_sockets(&daemon.plan.clone())?;
        daemon.sockets = new_sockets;
        daemon.hooks = spawn_hooks(&daemon.plan.instance_hooks)?;
        daemon.group_hooks = spawn_hooks(&daemon.plan.group_hooks)?;
        daemon.sync_trackers()?;
        daemon.await_first_reports().await;
        daemon.apply_all_effects(Instant::now());
        daemon.engine.start(Instant::now());
        daemon.execute().await;
        // After the first election is under way: the link never delays VRRP.
        daemon.link = fleet::spawn_link(&daemon.config);
        daemon.publish();
        tracing::info!(
            node = %daemon.config.node.name,
            config_version = daemon.config_version,
            instances = daemon.plan.engine.routers.len(),
            "hav-agent started"
        );
        Ok(daemon)
    }

    async fn run(&mut self) -> anyhow::Result<()> {
        let mut sigterm = signal(SignalKind::terminate())?;
        let mut sigint = signal(SignalKind::interrupt())?;
        let mut sighup = signal(SignalKind::hangup())?;
        let mut sigusr1 = signal(SignalKind::user_defined1())?;
        // Ready only once SIGTERM is ours: a stop right after start-up is a graceful one.
        self.notify(|n| n.ready());
        let mut stopping = false;
        // The watchdog is fed from this loop, so a wedged loop is what systemd restarts.
        let mut watchdog = sd_notify::watchdog_interval().map(tokio::time::interval);
        let mut engine_timer = timer::EngineTimer::new()?;
        loop {
            engine_timer.arm(self.engine.poll_timeout())?;
            let expiry = self.overrides.next_expiry();
            let override_expiry = async {
                match expiry {
                    Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = sigterm.recv() => self.begin_stop(&mut stopping, "SIGTERM"),
                _ = sigint.recv() => self.begin_stop(&mut stopping, "SIGINT"),
                _ = sighup.recv() => self.reload().await,
                Some(command) = next_command(&mut self.link) => {
                    // In an `agent.command` span that continues the coordinator's trace.
                    let span = command.span();
                    tracing::Instrument::instrument(self.on_command(command, stopping), span).await;
                }
                () = override_expiry => {
                    let now = Instant::now();
                    for name in self.overrides.expire(now) {
                        tracing::info!(instance = %name, "priority override expired");
                    }
                    self.apply_overrides(now);
                }
                _ = sigusr1.recv() => tracing::info!("status:\n{}", status::render(&self.snapshot())),
                Some(reply) = self.status_requests.recv() => {
                    let _ = reply.send(self.snapshot());
                    continue;
                }
                Some(inbound) = self.inbound.recv() => self.on_inbound(inbound),
                Some(event) = self.track_events.recv() => self.on_track_event(event),
                fired = engine_timer.expired() => {
                    fired?;
                    self.engine.handle_timeout(Instant::now());
                }
                _ = async {
                    match watchdog.as_mut() {
                        Some(interval) => interval.tick().await,
                        None => std::future::pending().await,
                    }
                } => {
                    self.notify(|n| n.watchdog());
                    continue;
                }
            }
            self.execute().await;
            self.publish();
            if stopping && self.engine.is_stopped() {
                break;
            }
        }
        self.finish().await;
        Ok(())
    }

    fn begin_stop(&mut self, stopping: &mut bool, signal: &str) {
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
        for (_, tracker) in self.trackers.drain() {
            tracker.handle.stop().await;
        }
        for (_, queue) in self.hooks.drain().chain(self.group_hooks.drain()) {
            queue.close().await;
        }
        // The engine released everything it held; the journal catches anything else.
        match self.vips.recover(&[]).await {
            Ok(recovery) if !recovery.removed.is_empty() => {
                tracing::warn!(
                    count = recovery.removed.len(),
                    "removed VIPs still journaled at stop"
                )
            }
            Ok(_) => {}
            Err(error) => tracing::error!(%error, "could not clear the VIP journal"),
        }
        tracing::info!("hav-agent stopped");
    }

    /// Sends one notification to systemd, if it is listening; a failure is only logged.
    fn notify(&self, send: impl FnOnce(&Notifier) -> Result<(), crate::sd_notify::NotifyError>) {
        if let Some(notifier) = &self.notifier
            && let Err(error) = send(notifier)
        {
            tracing::warn!(%error, "systemd notification failed");
        }
    }

    fn on_inbound(&mut self, inbound: Inbound) {
        match inbound {
            Inbound::Packet {
                interface,
                meta,
                payload,
            } => {
                self.telemetry.on_packet(&meta, &payload);
                self.engine
                    .handle_packet(Instant::now(), &interface, &meta, &payload)
            }
            Inbound::Dropped { counter } => *self.drops.entry(counter).or_default() += 1,
        }
    }

    fn on_track_event(&mut self, event: TrackEvent) {
        let now = Instant::now();
        tracing::info!(tracker = %event.name, health = %event.health, "tracker changed");
        if let Some(link) = &self.link {
            let refs: Vec<(&String, i32)> = (self.plan.tracker_refs.iter())
                .flat_map(|(router, refs)| {
                    (refs.iter())
                        .filter(|(key, _)| *key == event.name)
                        .map(move |(_, weight)| (router, *weight))
                })
                .collect();
            link.event(event::Kind::Tracker(hav_proto::v1::TrackerChange {
                tracker: event.name.clone(),
                up: matches!(event.health, track::Health::Up),
                instances: refs.iter().map(|(router, _)| (*router).clone()).collect(),
                priority_delta: refs.first().map_or(0, |(_, weight)| *weight),
                detail: event.health.to_string(),
            }));
        }
        self.health.insert(event.name.clone(), event.health);
        self.apply_effects_of(now, &event.name);
    }

    /// Applies one tracker's health to every router that follows it.
    fn apply_effects_of(&mut self, now: Instant, key: &str) {
        let Some(health) = self.health.get(key) else {
            return;
        };
        for (router, refs) in &self.plan.tracker_refs {
            for (tracked, weight) in refs {
                if tracked != key {
                    continue;
                }
                let Some(id) = self.engine.router_id(router) else {
                    continue;
                };
                self.engine
                    .set_tracker(now, id, key, effect(track::contribution(health, *weight)));
            }
        }
    }

    fn apply_all_effects(&mut self, now: Instant) {
        let keys: Vec<String> = self.health.keys().cloned().collect();
        for key in keys {
            self.apply_effects_of(now, &key);
        }
    }

    /// Waits until every tracker has said how it is, so that a node does not win an election
    /// only to give it up a moment later.
    async fn await_first_reports(&mut self) {
        let deadline = tokio::time::Instant::now() + FIRST_REPORT_WAIT;
        while self
            .trackers
            .keys()
            .any(|key| !self.health.contains_key(key))
        {
            match tokio::time::timeout_at(deadline, self.track_events.recv()).await {
                Ok(Some(event)) => {
                    tracing::info!(tracker = %event.name, health = %event.health, "tracker reported");
                    self.health.insert(event.name, event.health);
                }
                Ok(None) | Err(_) => {
                    let silent: Vec<&String> = self
                        .trackers
                        .keys()
                        .filter(|key| !self.health.contains_key(*key))
                        .collect();
                    tracing::warn!(?silent, "starting before every tracker reported");
                    break;
                }
            }
        }
    }

    /// Carries out the engine's actions in order.
    async fn execute(&mut self) {
        while let Some(action) = self.engine.poll_action() {
            self.telemetry.begin(&action);
            match action {
                Action::Transmit {
                    router,
                    dst,
                    payload,
                } => {
                    let Some(socket) = self.socket_of(router) else {
                        continue;
                    };
                    if let Err(error) = socket.send_to(dst, &payload).await {
                        tracing::warn!(router = %self.name(router), %error, "advert not sent");
                    }
                }
                Action::AddVips { router, vips, .. } => {
                    let vips = self.vip_details(router, &vips);
                    if let Err(error) = self.vips.add(&vips).await {
                        tracing::error!(router = %self.name(router), %error, "adding VIPs failed");
                    }
                }
                Action::RemoveVips { router, vips } => {
                    let vips = self.vip_details(router, &vips);
                    if let Err(error) = self.vips.remove(&vips).await {
                        tracing::error!(router = %self.name(router), %error, "removing VIPs failed");
                    }
                }
                Action::Announce { router, vips } => {
                    let details = self.vip_details(router, &vips);
                    let mut by_device: BTreeMap<&str, Vec<IpAddr>> = BTreeMap::new();
                    for vip in &details {
                        by_device.entry(&vip.iface).or_default().push(vip.addr);
                    }
                    for (device, addresses) in by_device {
                        if let Err(error) = self.announcer.announce(device, &addresses).await {
                            tracing::warn!(router = %self.name(router), %error, "announce failed");
                        }
                    }
                }
                Action::StateChanged {
                    router,
                    from,
                    to,
                    priority,
                    cause,
                } => {
                    let name = self.name(router).to_string();
                    tracing::info!(instance = %name, %from, %to, %priority, %cause, "{name}: {from} -> {to}: {cause}");
                    if let Some(link) = &self.link {
                        // The snapshot showing the new state goes out before this event.
                        self.publish_link();
                        link.event(event::Kind::Transition(hav_proto::v1::Transition {
                            instance: name.clone(),
                            from: fleet::vrrp_state(from) as i32,
                            to: fleet::vrrp_state(to) as i32,
                            cause: cause.to_string(),
                        }));
                    }
                    if let Some(queue) = self.hooks.get(&name) {
                        queue.notify(StateChange {
                            kind: HookKind::Instance,
                            name,
                            old: hook_state(from, true),
                            new: hook_state(to, false),
                            priority,
                            cause: cause.to_string(),
                        });
                    }
                }
                Action::SyncGroupChanged {
                    group,
                    from,
                    to,
                    cause,
                } => {
                    tracing::info!(%group, %from, %to, %cause, "sync group {group}: {from} -> {to}: {cause}");
                    if let Some(queue) = self.group_hooks.get(&group) {
                        queue.notify(StateChange {
                            kind: HookKind::Group,
                            name: group,
                            old: hook_state(from, true),
                            new: hook_state(to, false),
                            priority: hav_vrrp::Priority(0),
                            cause: cause.to_string(),
                        });
                    }
                }
                other => tracing::debug!(?other, "action not handled by this agent version"),
            }
            self.telemetry.end();
        }
        self.telemetry.settle();
    }

    /// SIGHUP: the local file is read again and the precedence rule applied ([`fleet::select`]);
    /// the result replaces the running config only if it loads, plans, opens its sockets and
    /// passes the engine's checks; otherwise the old one keeps running untouched.
    async fn reload(&mut self) {
        tracing::info!(config = %self.config_path.display(), "reloading");
        let config = match load_node_config(&self.config_path) {
            Ok(config) => config,
            Err(errors) => {
                for line in errors.lines() {
                    tracing::error!("{line}");
                }
                tracing::error!("reload refused; the running config stays");
                return;
            }
        };
        let selected = fleet::select(&self.config_path, config);
        match self.reconfigure(selected.config).await {
            Ok(()) => self.config_version = selected.version,
            Err(error) => tracing::error!(%error, "reload refused; the running config stays"),
        }
    }

    /// Replaces the running config with `config` (unchanged instances untouched), or changes
    /// nothing and says why.
    async fn reconfigure(&mut self, config: NodeConfig) -> Result<(), String> {
        if config == self.config {
            tracing::info!("config unchanged");
            return Ok(());
        }
        let plan = plan::plan(&config).map_err(|error| error.to_string())?;
        let sockets = self
            .open_sockets(&plan)
            .map_err(|error| format!("{error:#}"))?;
        let (hooks, group_hooks) = match (
            spawn_hooks(&plan.instance_hooks),
            spawn_hooks(&plan.group_hooks),
        ) {
            (Ok(hooks), Ok(group_hooks)) => (hooks, group_hooks),
            (Err(error), _) | (_, Err(error)) => return Err(format!("{error:#}")),
        };
        self.vips
            .reserve(&plan.all_vips())
            .map_err(|error| format!("journalling the new config's VIPs: {error}"))?;
        let now = Instant::now();
        let report = self
            .engine
            .reconfigure(now, plan.engine.clone())
            .map_err(|error| error.to_string())?;
        tracing::info!(
            added = ?report.added, removed = ?report.removed,
            changed = ?report.changed.iter().map(|c| &c.name).collect::<Vec<_>>(),
            unchanged = report.unchanged.len(),
            "config reloaded"
        );
        let old_refs = std::mem::take(&mut self.plan.tracker_refs);
        // A removed router retires: it still releases its VIPs through actions that name it, so
        // the netlink details of its VIPs must outlive the old plan.
        let mut plan = plan;
        for name in &report.removed {
            if let Some(vips) = self.plan.vips.remove(name) {
                plan.vips.entry(name.clone()).or_insert(vips);
            }
        }
        self.sockets = sockets;
        self.hooks = hooks;
        self.group_hooks = group_hooks;
        self.telemetry
            .note_reload(&self.config.telemetry, &config.telemetry);
        self.config = config;
        self.plan = plan;
        self.refresh_names();
        // Routers that no longer follow a tracker lose its effect.
        for (router, refs) in old_refs {
            let Some(id) = self.engine.router_id(&router) else {
                continue;
            };
            for (key, _) in refs {
                if !self.plan.refs_of(&router).iter().any(|(k, _)| *k == key) {
                    self.engine
                        .set_tracker(now, id, &key, TrackEffect::Adjust(0));
                }
            }
        }
        if let Err(error) = self.sync_trackers() {
            tracing::error!(%error, "a tracker of the new config did not start");
        }
        self.apply_all_effects(now);
        self.apply_overrides(now);
        Ok(())
    }

    /// Carries out one coordinator command and acknowledges it.
    async fn on_command(&mut self, command: crate::control::PendingCommand, stopping: bool) {
        let now = Instant::now();
        let id = command.id;
        let kind = match &command.action {
            Some(command::Action::ApplyConfig(_)) => "apply config",
            Some(command::Action::Drain(_)) => "drain",
            Some(command::Action::Undrain(_)) => "undrain",
            Some(command::Action::SetPriorityOverride(_)) => "set priority override",
            Some(command::Action::ClearOverride(_)) => "clear priority override",
            Some(command::Action::Exec(_)) => "exec",
            None => "unknown",
        };
        // Exec runs in its own task and acks when the program ends (exec_command.rs).
        if let (Some(command::Action::Exec(exec)), false, Some(link)) =
            (&command.action, stopping, &self.link)
        {
            tracing::info!(id, argv = ?exec.argv, "coordinator command started: exec");
            let (exec, events) = (exec.clone(), link.side.events.clone());
            crate::exec_command::spawn(command, exec, events);
            return;
        }
        let result = match (&command.action, stopping) {
            (_, true) => Err("the agent is stopping".to_owned()),
            (Some(command::Action::ApplyConfig(apply)), false) => match &apply.config {
                Some(doc) => self.apply_pushed(doc.version, &doc.toml).await,
                None => Err("apply_config without a config".to_owned()),
            },
            (Some(command::Action::Drain(_)), false) => {
                self.overrides.drained = true;
                self.apply_overrides(now);
                Ok(())
            }
            (Some(command::Action::Undrain(_)), false) => {
                self.overrides.drained = false;
                self.apply_overrides(now);
                Ok(())
            }
            (Some(command::Action::SetPriorityOverride(set)), false) => {
                match (
                    self.engine.router_id(&set.instance),
                    u8::try_from(set.priority)
                        .ok()
                        .filter(|p| (1..=254).contains(p)),
                ) {
                    (None, _) => Err(format!("no instance {:?} on this node", set.instance)),
                    (_, None) => Err(format!("priority {} is not in 1..=254", set.priority)),
                    (Some(_), Some(priority)) => {
                        let ttl = (set.ttl_seconds > 0)
                            .then(|| Duration::from_secs(u64::from(set.ttl_seconds)));
                        self.overrides
                            .set(&set.instance, Priority(priority), ttl, now);
                        self.apply_overrides(now);
                        Ok(())
                    }
                }
            }
            (Some(command::Action::ClearOverride(clear)), false) => {
                self.overrides.clear(&clear.instance);
                self.apply_overrides(now);
                Ok(())
            }
            (Some(command::Action::Exec(_)), false) => Err("exec needs the control link".into()),
            (None, false) => {
                Err("unknown command: this agent is older than the coordinator".into())
            }
        };
        match &result {
            Ok(()) => tracing::info!(id, "coordinator command done: {kind}"),
            Err(error) => tracing::warn!(id, %error, "coordinator command refused: {kind}"),
        }
        command.ack(result);
    }

    /// A config pushed by the coordinator: checked, staged on disk, run through the reload path,
    /// then kept as the last good config. On any failure the running config stays.
    async fn apply_pushed(&mut self, version: u64, text: &str) -> Result<(), String> {
        let config = fleet::parse(text, version, &self.config)?;
        let staged = fleet::Staged::write(&self.config.node.state_dir, version, text)
            .map_err(|error| format!("cannot store the config in the state dir: {error}"))?;
        match self.reconfigure(config).await {
            Ok(()) => {
                staged
                    .commit()
                    .map_err(|error| format!("applied, but not stored: {error}"))?;
                self.config_version = version;
                tracing::info!(version, "config from the coordinator applied");
                Ok(())
            }
            Err(error) => {
                staged.discard();
                Err(format!(
                    "config version {version} refused, version {} keeps running: {error}",
                    self.config_version
                ))
            }
        }
    }

    /// Gives every router the priority override it should run with now.
    fn apply_overrides(&mut self, now: Instant) {
        for router in &self.plan.engine.routers {
            if let Some(id) = self.engine.router_id(&router.name) {
                self.engine
                    .set_priority_override(now, id, self.overrides.of(&router.name));
            }
        }
    }

    /// Starts trackers the plan has and we do not run (or run with another definition); stops
    /// those it no longer has.
    fn sync_trackers(&mut self) -> anyhow::Result<()> {
        let wanted: HashSet<&String> = self.plan.trackers.keys().collect();
        let gone: Vec<String> = self
            .trackers
            .keys()
            .filter(|key| !wanted.contains(key))
            .cloned()
            .collect();
        for key in gone {
            self.trackers.remove(&key);
            self.health.remove(&key);
        }
        for (key, planned) in &self.plan.trackers {
            if self
                .trackers
                .get(key)
                .is_some_and(|running| running.fingerprint == planned.fingerprint)
            {
                continue;
            }
            self.health.remove(key);
            let handle = track::spawn(key.clone(), planned.spec.clone(), self.track_tx.clone())?;
            self.trackers.insert(
                key.clone(),
                RunningTracker {
                    handle,
                    fingerprint: planned.fingerprint.clone(),
                },
            );
        }
        Ok(())
    }

    /// Opens the sockets `plan` needs, reusing the ones already open.
    fn open_sockets(&self, plan: &Plan) -> anyhow::Result<HashMap<SocketSpec, OpenSocket>> {
        let mut sockets = HashMap::new();
        for spec in plan.router_sockets.values() {
            let key = spec.clone();
            if sockets.contains_key(&key) {
                continue;
            }
            let socket = match self.sockets.get(&key) {
                Some(open) => open.socket.clone(),
                None => Arc::new(VrrpSocket::open(spec)?),
            };
            let receiver = tokio::spawn(receive(socket.clone(), self.inbound_tx.clone()));
            sockets.insert(key, OpenSocket { socket, receiver });
        }
        Ok(sockets)
    }

    fn socket_of(&self, router: RouterId) -> Option<Arc<VrrpSocket>> {
        let spec = self.plan.router_sockets.get(self.names.get(&router)?)?;
        self.sockets.get(spec).map(|open| open.socket.clone())
    }

    fn vip_details(&self, router: RouterId, addresses: &[IpAddr]) -> Vec<Vip> {
        let details = self
            .names
            .get(&router)
            .and_then(|name| self.plan.vips.get(name));
        addresses
            .iter()
            .filter_map(|address| details.and_then(|d| d.get(address)).cloned())
            .collect()
    }

    fn name(&self, router: RouterId) -> &str {
        self.names.get(&router).map(String::as_str).unwrap_or("?")
    }

    /// Names of the configured routers; a router removed by a reload keeps its name while it
    /// retires (its last actions name it).
    fn refresh_names(&mut self) {
        let mut names: HashMap<RouterId, String> = self
            .plan
            .engine
            .routers
            .iter()
            .filter_map(|r| Some((self.engine.router_id(&r.name)?, r.name.clone())))
            .collect();
        for (id, name) in std::mem::take(&mut self.names) {
            names.entry(id).or_insert(name);
        }
        self.names = names;
        self.telemetry
            .configure(&self.plan.engine.routers, &self.names);
    }

    fn snapshot(&self) -> Snapshot {
        let mut counters: BTreeMap<String, u64> = self
            .engine
            .counters()
            .named()
            .map(|(name, value)| (name.to_string(), value))
            .collect();
        for (name, value) in &self.drops {
            counters.insert((*name).to_string(), *value);
        }
        Snapshot {
            node: self.config.node.name.clone(),
            config: self.config_path.display().to_string(),
            instances: status::instances(&self.engine, Instant::now()),
            trackers: self
                .health
                .iter()
                .map(|(key, health)| (key.clone(), health.to_string()))
                .collect(),
            counters,
        }
    }

    /// Gives the control link the node's state (it sends it only if something changed).
    fn publish_link(&self) {
        if let Some(link) = &self.link {
            link.publish(fleet::snapshot(
                &self.engine,
                &self.config,
                self.config_version,
                &self.overrides,
            ));
        }
    }

    /// Publishes what changed: metrics (when served), and on a change of state, priority, known
    /// master or VIPs the coordinator's snapshot and a debug line, after the fact, so that a
    /// reader following the log finds the change on the status socket. Cheap when nothing
    /// changed, as after most adverts.
    fn publish(&mut self) {
        self.telemetry
            .publish(&self.engine, &self.health, &self.drops);
        // Counters move with every advert: they count as a change only for log followers.
        let with_counters = tracing::enabled!(tracing::Level::DEBUG);
        let summary: Vec<Summary> = self
            .engine
            .status()
            .into_iter()
            .map(|r| {
                let counters = with_counters.then_some(r.counters);
                (
                    r.state,
                    r.effective_priority,
                    r.master,
                    r.holds_vips,
                    counters,
                )
            })
            .collect();
        if summary != self.last_summary {
            self.last_summary = summary;
            self.publish_link();
            tracing::debug!("status published");
        }
    }
}

/// The part of a router's status whose change is worth publishing (counters only while debug
/// logging is on).
type Summary = (
    State,
    hav_vrrp::Priority,
    Option<hav_vrrp::engine::MasterInfo>,
    bool,
    Option<hav_vrrp::Counters>,
);

/// Reads one socket forever, handing adverts to the loop. The multicast socket takes only what
/// was sent to the group and a unicast socket only what was sent to us, so that an instance never
/// hears one advert twice.
async fn receive(socket: Arc<VrrpSocket>, inbound: mpsc::Sender<Inbound>) {
    let interface = socket.spec().interface.clone();
    let multicast = matches!(socket.spec().mode, crate::net::Mode::Multicast { .. });
    let mut buf = vec![0u8; 2048];
    loop {
        let message = match socket.recv(&mut buf).await {
            Ok(Received::Datagram(datagram)) => {
                if datagram.dst.is_multicast() != multicast {
                    continue;
                }
                Inbound::Packet {
                    interface: interface.clone(),
                    meta: RecvMeta {
                        src: datagram.src,
                        dst: datagram.dst,
                        hop_limit: datagram.hop_limit,
                    },
                    payload: datagram.payload(&buf).to_vec(),
                }
            }
            Ok(Received::UnknownPeer { src }) => {
                tracing::debug!(%interface, %src, "advert from a source that is not a peer dropped");
                Inbound::Dropped {
                    counter: "unicast_unknown_peer",
                }
            }
            // A unicast advert seen by the multicast socket: the unicast socket has it.
            Ok(Received::OtherDestination { .. }) => continue,
            Ok(_) => Inbound::Dropped {
                counter: "malformed_datagrams",
            },
            Err(error) => {
                tracing::warn!(%interface, %error, "receive failed");
                // Rate limit a persistent error rather than spin; not a synchronisation.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if inbound.send(message).await.is_err() {
            return;
        }
    }
}

/// The next coordinator command; never resolves without a link.
async fn next_command(link: &mut Option<fleet::Link>) -> Option<crate::control::PendingCommand> {
    match link {
        Some(link) => link.side.commands.recv().await,
        None => std::future::pending().await,
    }
}

fn spawn_hooks(
    configs: &HashMap<String, crate::hooks::HookConfig>,
) -> anyhow::Result<HashMap<String, HookQueue>> {
    configs
        .iter()
        .map(|(name, config)| Ok((name.clone(), HookQueue::spawn(config.clone())?)))
        .collect()
}

fn effect(contribution: Contribution) -> TrackEffect {
    match contribution {
        Contribution::Adjust(weight) => TrackEffect::Adjust(weight),
        Contribution::Fault => TrackEffect::Fault,
    }
}

/// Initialize is "not started yet" as an old state and "stopped" as a new one.
fn hook_state(state: State, old: bool) -> HookState {
    match state {
        State::Master => HookState::Master,
        State::Backup => HookState::Backup,
        State::Fault => HookState::Fault,
        _ if old => HookState::Init,
        _ => HookState::Stop,
    }
}

/// `hav-agent --check`: loads and plans a config as start-up does ([`plan::check`]), starting
/// nothing. `Err`: each reason start-up refuses the config for, as `file: key.path: reason` or
/// `file: reason`. `Ok`: a summary, then `file: warning: …` for each thing this host lacks
/// (an interface, an address, a user, a directory, trust anchors), naming the instance.
pub fn check(path: &Path) -> Result<String, String> {
    let config = load_node_config(path).map_err(|errors| errors.lines().join("\n"))?;
    let problems = plan::check(&config).map_err(|error| format!("{}: {error}", path.display()))?;
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
