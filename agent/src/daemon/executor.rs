//! The executor: the one place where the engine's actions become IO. Adverts go to the router's
//! socket, VIPs through the crash-safe journal to rtnetlink, announcements to GARP / unsolicited
//! NA, state changes to the log and the notify hooks.
//!
//! VIPs that a master holds without accept mode (RFC 5798 section 6.4.3) are filtered ahead of
//! need: every such VIP of the running plan is in hav's nftables drop set whether held or not (a
//! VIP this node does not hold receives no local traffic anyway), so a takeover runs no `nft`.
//!
//! All per-router IO state is keyed by the engine's [`RouterId`] (the handle the engine hands
//! out, stable for a name across reloads); a router removed by a reload keeps its entry while it
//! retires, so the actions it still emits find their socket and VIP details. Actions are carried
//! out in the order the engine emitted them; a failure is logged and never stops the ones after
//! it.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use hav_vrrp::engine::{Action, Cause, Engine, RouterId, State};

use super::conncount::BackgroundCounts;
use super::handover::{self, BeaconSocket, Handover, Release, RouterHandover};
use super::plan::{Binding, Plan};
use super::sockets::Sockets;
use crate::hooks::{HookConfig, HookKind, HookQueue, HookState, StateChange};
use crate::lb::{Balancer, check::CheckReport, run_quorum_hook};
use crate::net::nft::VirtualServerApplier;
use crate::net::{
    Announcer, Firewall, HandoverApplier, JournaledVips, NftError, RouteManager, RouteSpec,
    RuleSpec, SocketSpec, TableRemoval, Vip, VrrpSocket,
};
use crate::notify::Notifiers;
use crate::small_hash::SmallMap;
use crate::telemetry::Telemetry;

/// A transition the executor carried out, for the coordinator link.
#[derive(Debug, Clone)]
pub struct Transition {
    pub instance: String,
    pub from: State,
    pub to: State,
    pub cause: Cause,
}

/// The IO of one virtual router.
struct RouterIo {
    name: String,
    /// `None` while the router is unbound (its interface is missing): it is in Fault and sends
    /// nothing.
    socket: Option<Arc<VrrpSocket>>,
    vips: HashMap<IpAddr, Vip>,
    /// The rules and routes held while master: added after the VIPs, removed with them.
    rules: Vec<RuleSpec>,
    routes: Vec<RouteSpec>,
}

/// Hook queues by instance or group name, each with the config it runs.
#[derive(Default)]
pub struct Hooks {
    queues: HashMap<String, (HookConfig, HookQueue)>,
}

impl Hooks {
    /// Queues for `wanted`: the running ones whose config is unchanged are kept, the others are
    /// started anew (the returned map holds only the new ones).
    pub fn prepare(
        &self,
        wanted: &HashMap<String, HookConfig>,
    ) -> Result<HashMap<String, (HookConfig, HookQueue)>, crate::hooks::HookError> {
        let mut started = HashMap::new();
        for (name, config) in wanted {
            if self
                .queues
                .get(name)
                .is_some_and(|(running, _)| running == config)
            {
                continue;
            }
            started.insert(
                name.clone(),
                (config.clone(), HookQueue::spawn(config.clone())?),
            );
        }
        Ok(started)
    }

    /// Keeps the queues `wanted` still names, adds `started`; the others are closed.
    fn install(
        &mut self,
        wanted: &HashMap<String, HookConfig>,
        started: HashMap<String, (HookConfig, HookQueue)>,
    ) {
        self.queues.retain(|name, _| wanted.contains_key(name));
        self.queues.extend(started);
    }

    fn notify(&self, name: &str, change: StateChange) {
        if let Some((_, queue)) = self.queues.get(name) {
            queue.notify(change);
        }
    }

    async fn close(&mut self) {
        for (_, (_, queue)) in self.queues.drain() {
            queue.close().await;
        }
    }
}

/// What a reload prepared and the executor takes over when it commits.
pub struct Prepared {
    pub sockets: HashMap<SocketSpec, Arc<VrrpSocket>>,
    pub instance_hooks: HashMap<String, (HookConfig, HookQueue)>,
    pub group_hooks: HashMap<String, (HookConfig, HookQueue)>,
}

pub struct Executor {
    routers: SmallMap<RouterId, RouterIo>,
    pub(super) sockets: Sockets,
    pub(super) vips: JournaledVips,
    /// The masters' routes and rules (journaled ahead of need with the VIPs).
    routing: RouteManager,
    announcer: Announcer,
    /// hav's nftables tables: VIPs of instances without accept mode, dropped on input; the
    /// virtual servers of the instances this node is master of (through `virtual_servers`).
    firewall: Arc<tokio::sync::Mutex<Firewall>>,
    /// Programs the virtual servers in the background: the loop never waits for `nft` for them.
    virtual_servers: VirtualServerApplier,
    /// The virtual servers and their real servers' health (checked on every node).
    pub(super) balancer: Balancer,
    pub(super) instance_hooks: Hooks,
    pub(super) group_hooks: Hooks,
    /// Planned hand-overs: VIPs kept for their connections, flows passed to a previous master.
    pub(super) handover: Handover,
    /// Parked VIPs' connection counts, taken off the loop.
    pub(super) counts: BackgroundCounts,
    /// Installs the hand-over rules in the background.
    handover_rules: HandoverApplier,
    /// The beacon socket, open while some instance drains connections.
    pub(super) beacons: Option<BeaconSocket>,
    /// Routers holding their VIPs whose routes or rules a reload changed, with the old ones:
    /// brought in line by [`Executor::settle_routing`].
    stale_routing: Vec<(RouterId, Vec<RuleSpec>, Vec<RouteSpec>)>,
    /// The notify FIFO and SMTP alerts.
    pub(super) notifiers: Notifiers,
}

impl Executor {
    pub fn new(
        sockets: Sockets,
        vips: JournaledVips,
        announcer: Announcer,
        firewall: Firewall,
    ) -> Self {
        let handover_tables = firewall.handover_tables();
        let firewall = Arc::new(tokio::sync::Mutex::new(firewall));
        Self {
            routers: SmallMap::default(),
            sockets,
            routing: RouteManager::new(vips.manager().handle().clone()),
            vips,
            announcer,
            balancer: Balancer::new(),
            instance_hooks: Hooks::default(),
            group_hooks: Hooks::default(),
            handover: Handover::default(),
            counts: BackgroundCounts::new(crate::net::sockdiag::count_tcp_connections),
            handover_rules: HandoverApplier::spawn(handover_tables),
            beacons: None,
            stale_routing: Vec::new(),
            notifiers: Notifiers::default(),
            virtual_servers: VirtualServerApplier::spawn(firewall.clone()),
            firewall,
        }
    }

    /// Removes hav's nftables tables, whoever left them (a crashed run, or this one at stop).
    pub async fn remove_filter_table(&mut self) -> Result<TableRemoval, NftError> {
        // No hand-over or virtual-server transaction may run after (or during) the removal.
        self.handover_rules.close().await;
        self.virtual_servers.close().await;
        self.firewall.lock().await.remove_tables().await
    }

    /// Before a plan is committed: filters the VIPs it runs without accept mode (adding to the
    /// filter never harms the running plan: a VIP it holds with accept mode is not in `plan`'s
    /// set unless the new plan turns accept mode off for it).
    pub async fn filter_ahead(&mut self, plan: &Plan) -> Result<(), NftError> {
        self.firewall
            .lock()
            .await
            .block(&no_accept_vips(plan))
            .await
    }

    /// Before a plan's sockets open: the IGMP of the macvlans its sockets join on is dropped
    /// (and only theirs).
    pub async fn quiet_vmacs(&mut self, plan: &Plan) -> Result<(), NftError> {
        self.firewall
            .lock()
            .await
            .quiet_vmacs(&plan.quiet_vmacs)
            .await
    }

    /// After a plan is committed: lifts the filter from VIPs it no longer runs without accept
    /// mode. A failure is logged: those VIPs stay filtered.
    pub async fn settle_filter(&mut self, plan: &Plan) {
        let wanted = no_accept_vips(plan);
        let mut firewall = self.firewall.lock().await;
        let lifted: Vec<IpAddr> = (firewall.blocked().iter())
            .filter(|vip| !wanted.contains(vip))
            .copied()
            .collect();
        if let Err(error) = firewall.unblock(&lifted).await {
            tracing::error!(%error, "accept-mode filter not lifted from VIPs that no longer need it");
        }
        drop(firewall);
        // The virtual servers of the new plan, as far as this node is master of their instance.
        self.program("config changed");
    }

    /// A real server's health changed: its virtual server's pool follows (programmed only where
    /// this node is master), and a quorum change runs its hook.
    pub async fn on_check(&mut self, report: CheckReport) {
        let op = format!("real server {}", report.server);
        for change in self.balancer.record(report) {
            run_quorum_hook(change);
        }
        self.program(&op);
    }

    /// Each checked real server's health, keyed `real_server:<service> <address>[:port]` like
    /// the trackers' in the status.
    pub fn real_server_health(&self) -> impl Iterator<Item = (String, String)> + '_ {
        self.balancer.health().map(|(server, failed)| {
            let health = match failed {
                None => "up".to_owned(),
                Some(reason) => format!("down ({reason})"),
            };
            (format!("real_server:{server}"), health)
        })
    }

    /// Asks for hav's tables to hold the virtual servers the balancer says; never waits for
    /// `nft` (the applier runs it, and retries a failure). Nothing runs when that is what was
    /// asked last, so a config without virtual servers never runs nft for them.
    fn program(&mut self, op: &str) {
        self.virtual_servers.set(self.balancer.programmed(), op);
    }

    /// Takes over what a reload prepared for `plan`, after the engine accepted it: per-router IO
    /// for every router of the plan (by the id the engine gave it); removed routers keep theirs
    /// until they are retired.
    pub fn install(&mut self, plan: &Plan, prepared: Prepared, engine: &Engine) {
        let Prepared {
            sockets,
            instance_hooks,
            group_hooks,
        } = prepared;
        let holding: std::collections::HashSet<RouterId> = (engine.briefs())
            .filter(|brief| brief.holds_vips)
            .map(|brief| brief.id)
            .collect();
        for router in &plan.engine.routers {
            let Some(id) = engine.router_id(&router.name) else {
                continue;
            };
            let socket = (plan.router_sockets.get(&router.name))
                .and_then(|spec| sockets.get(spec))
                .cloned();
            let vips = plan.vips.get(&router.name).cloned().unwrap_or_default();
            let (rules, routes) = plan.routing.get(&router.name).cloned().unwrap_or_default();
            if holding.contains(&id)
                && let Some(old) = self.routers.get(&id)
                && (old.rules != rules || old.routes != routes)
            {
                self.stale_routing
                    .push((id, old.rules.clone(), old.routes.clone()));
            }
            self.routers.insert(
                id,
                RouterIo {
                    name: router.name.clone(),
                    socket,
                    vips,
                    rules,
                    routes,
                },
            );
        }
        self.sockets.replace(sockets);
        self.instance_hooks
            .install(&plan.instance_hooks, instance_hooks);
        self.group_hooks.install(&plan.group_hooks, group_hooks);
        self.notifiers.configure(&plan.notifications);
        self.balancer.configure(plan.virtual_servers.clone());
        self.configure_handover(plan, engine);
        self.prune(engine);
    }

    /// The routers that keep their connections through a planned hand-over, and the beacon
    /// socket they need (opened here, closed when none is left; a failure to open is logged and
    /// their hand-overs then end when the successor's answers fail to come).
    fn configure_handover(&mut self, plan: &Plan, engine: &Engine) {
        let mut routers = HashMap::new();
        for router in &plan.engine.routers {
            let (Some(drain), Some(id), Some(Binding::Bound { ifindex, primary })) = (
                plan.connection_drains.get(&router.name),
                engine.router_id(&router.name),
                plan.bindings.get(&router.name),
            ) else {
                continue;
            };
            routers.insert(
                id,
                RouterHandover {
                    name: router.name.clone(),
                    vrid: router.vrid.get(),
                    ipv6: router.family == hav_vrrp::Family::V6,
                    device: router.interface.clone(),
                    ifindex: *ifindex,
                    source: *primary,
                    drain: *drain,
                    interval: router.advert_interval.as_duration(),
                    vips: router.vips.iter().copied().collect(),
                },
            );
        }
        self.handover.configure(routers, plan.handover_port);
        let wanted = self.handover.enabled().then_some(plan.handover_port);
        if self.beacons.as_ref().map(BeaconSocket::port) != wanted {
            self.beacons = wanted.and_then(|port| match BeaconSocket::open(port) {
                Ok(socket) => Some(socket),
                Err(error) => {
                    tracing::error!(port, %error, "hand-over beacon socket not opened");
                    None
                }
            });
        }
    }

    /// A hand-over deadline passed or a beacon arrived.
    pub async fn on_handover(&mut self, event: handover::Event) {
        let now = std::time::Instant::now();
        if let handover::Event::Counted = event {
            self.handover.count_now(now);
        }
        match event {
            handover::Event::Tick | handover::Event::Counted => {
                let counts = &self.counts;
                let (beacons, released) = self
                    .handover
                    .tick(now, |addresses| counts.latest(addresses));
                for beacon in beacons {
                    self.send_beacon(beacon);
                }
                self.let_go(released).await;
            }
            handover::Event::Beacon(Some(beacon), from) => {
                if let Some(answer) = self.handover.on_beacon(beacon, from, now) {
                    self.send_beacon(answer);
                }
                for router in self.handover.take_reannouncements() {
                    let vips: Vec<Vip> = (self.routers.get(&router))
                        .map(|io| io.vips.values().cloned().collect())
                        .unwrap_or_default();
                    tracing::info!(instance = %self.name(router), "a peer held this master's VIPs for a moment; announcing them again");
                    self.announce(router, &vips).await;
                }
            }
            handover::Event::Beacon(None, from) => {
                tracing::debug!(%from, "datagram on the hand-over port that is not a beacon dropped");
            }
        }
        self.sync_handover_rules("hand-over");
    }

    /// Lets go of every parked VIP now (a second stop signal), or of `only` that router's.
    pub async fn end_drains(&mut self, only: Option<RouterId>) {
        let released = self.handover.release_all(std::time::Instant::now(), only);
        self.let_go(released).await;
        self.sync_handover_rules("stop");
    }

    fn send_beacon(&self, beacon: handover::Outgoing) {
        if let Some(socket) = &self.beacons {
            socket.send(beacon);
        }
    }

    async fn let_go(&mut self, released: Vec<Release>) {
        for release in released {
            tracing::info!(
                instance = %release.name,
                why = %release.why,
                connections = release.connections,
                held_ms = release.held_for.as_millis() as u64,
                "{}: VIPs let go after the hand-over ({})",
                release.name,
                release.why
            );
            if let Some(beacon) = release.beacon {
                self.send_beacon(beacon);
            }
            if let Err(error) = self.vips.remove(&release.vips).await {
                tracing::error!(instance = %release.name, %error, "removing VIPs failed");
            }
            let router = (self.routers.iter())
                .find(|(_, io)| io.name == release.name)
                .map(|(id, _)| *id);
            if let Some(router) = router {
                self.remove_routing(router).await;
            }
        }
    }

    /// Adds the router's rules and routes (after its VIPs: a route may take one as its source).
    async fn add_routing(&self, router: RouterId) {
        let Some(io) = self.routers.get(&router) else {
            return;
        };
        if io.rules.is_empty() && io.routes.is_empty() {
            return;
        }
        if let Err(error) = self.routing.add(&io.rules, &io.routes).await {
            tracing::error!(instance = %io.name, %error, "adding routes or rules failed");
        }
    }

    /// After a reload: a router that holds its VIPs gets the routes and rules of the new config,
    /// and loses those only the old one had.
    pub async fn settle_routing(&mut self) {
        for (router, old_rules, old_routes) in std::mem::take(&mut self.stale_routing) {
            let Some(io) = self.routers.get(&router) else {
                continue;
            };
            let gone_rules: Vec<RuleSpec> = (old_rules.into_iter())
                .filter(|rule| !io.rules.contains(rule))
                .collect();
            let gone_routes: Vec<RouteSpec> = (old_routes.into_iter())
                .filter(|route| !io.routes.contains(route))
                .collect();
            if let Err(error) = self.routing.remove(&gone_rules, &gone_routes).await {
                tracing::error!(instance = %io.name, %error, "removing routes or rules the new config dropped failed");
            }
            self.add_routing(router).await;
            if let Some(io) = self.routers.get(&router) {
                tracing::info!(instance = %io.name, "{}: routes and rules follow the new config", io.name);
            }
        }
    }

    /// Removes the router's routes and rules (absent ones are no failure).
    async fn remove_routing(&self, router: RouterId) {
        let Some(io) = self.routers.get(&router) else {
            return;
        };
        if io.rules.is_empty() && io.routes.is_empty() {
            return;
        }
        if let Err(error) = self.routing.remove(&io.rules, &io.routes).await {
            tracing::error!(instance = %io.name, %error, "removing routes or rules failed");
        }
    }

    /// Asks for the hand-over tables to say what [`Handover::rules`] says; never waits for
    /// `nft` (the applier runs it, and retries a failure). Runs after every batch: nothing is
    /// built unless a forward or a park changed.
    fn sync_handover_rules(&mut self, op: &str) {
        if !self.handover.needs_sync() {
            return;
        }
        self.handover_rules.set(self.handover.rules(), op);
        self.handover.mark_synced();
    }

    /// Forgets routers the engine no longer has (retired). This runs after every batch, so
    /// after every advert: [`outlived_any`] keeps it from scanning the engine per entry (the
    /// square of the routers) while nothing can have been retired.
    #[inline]
    pub fn prune(&mut self, engine: &Engine) {
        if outlived_any(self.routers.len(), engine) {
            self.routers
                .retain(|id, _| engine.router_config(*id).is_some());
        }
    }

    /// The routers and their names, for observers.
    pub fn names(&self) -> impl Iterator<Item = (RouterId, &str)> {
        self.routers.iter().map(|(id, io)| (*id, io.name.as_str()))
    }

    fn name(&self, router: RouterId) -> &str {
        self.routers.get(&router).map_or("?", |io| io.name.as_str())
    }

    fn vip_details(&self, router: RouterId, addresses: &[IpAddr]) -> Vec<Vip> {
        let Some(io) = self.routers.get(&router) else {
            return Vec::new();
        };
        addresses
            .iter()
            .filter_map(|address| io.vips.get(address).cloned())
            .collect()
    }

    /// Gratuitous ARP / unsolicited NA for `vips` of `router`, one packet per address.
    async fn announce(&self, router: RouterId, vips: &[Vip]) {
        let mut by_device: BTreeMap<&str, Vec<IpAddr>> = BTreeMap::new();
        for vip in vips {
            by_device.entry(&vip.iface).or_default().push(vip.addr);
        }
        for (device, addresses) in by_device {
            if let Err(error) = self.announcer.announce(device, &addresses).await {
                tracing::warn!(router = %self.name(router), %error, "announce failed");
            }
        }
    }

    /// Carries out the engine's actions in order; the transitions among them.
    pub async fn execute(
        &mut self,
        engine: &mut Engine,
        telemetry: &mut Telemetry,
    ) -> Vec<Transition> {
        let mut transitions = Vec::new();
        while let Some(action) = engine.poll_action() {
            telemetry.begin(&action);
            self.carry_out(action, &mut transitions).await;
            telemetry.end();
        }
        self.end_batch(engine, telemetry);
        transitions
    }

    /// Carries out the engine's actions when none has to be waited for (a master's adverts,
    /// or nothing: a backup hearing its master), without building [`Executor::execute`]'s
    /// future; `false`, with the adverts before it sent, when one does: the caller then runs
    /// `execute` for the rest.
    pub fn execute_at_once(&mut self, engine: &mut Engine, telemetry: &mut Telemetry) -> bool {
        self.transmit_queued(engine, telemetry);
        if engine.has_actions() {
            return false;
        }
        self.end_batch(engine, telemetry);
        true
    }

    /// Sends the adverts at the head of the engine's queue.
    fn transmit_queued(&mut self, engine: &mut Engine, telemetry: &mut Telemetry) {
        while let Some(action) = engine.poll_transmit() {
            telemetry.begin(&action);
            if let Action::Transmit {
                router,
                dst,
                payload,
            } = action
            {
                self.transmit(router, dst, &payload);
            }
            telemetry.end();
        }
    }

    /// After a batch of actions: traces settle, hand-over rules follow the roles.
    #[inline]
    fn end_batch(&mut self, engine: &Engine, telemetry: &mut Telemetry) {
        telemetry.settle();
        // After the batch: the takeover's adverts and announcements never wait for `nft`.
        if self.handover.enabled() {
            self.handover.follow(engine);
            self.sync_handover_rules("hand-over");
        }
        self.prune(engine);
    }

    #[cfg_attr(target_os = "linux", unsafe(link_section = ".text.hot"))]
    fn transmit(&self, router: RouterId, dst: IpAddr, payload: &[u8]) {
        let Some(socket) = self.routers.get(&router).and_then(|io| io.socket.as_ref()) else {
            return;
        };
        if let Err(error) = socket.send_to(dst, payload) {
            // With the kernel's reason (EPERM from a firewall, ENOBUFS, ...).
            let error = hav_proto::errors::chain(&error);
            tracing::warn!(router = %self.name(router), %error, "advert not sent");
        }
    }

    async fn carry_out(&mut self, action: Action, transitions: &mut Vec<Transition>) {
        match action {
            Action::Transmit {
                router,
                dst,
                payload,
            } => self.transmit(router, dst, &payload),
            Action::AddVips { router, vips, .. } => {
                let reclaimed = self.handover.reclaim(router);
                let vips = self.vip_details(router, &vips);
                if reclaimed {
                    tracing::info!(router = %self.name(router), "parked VIPs reclaimed as master");
                    if let Err(error) = self.vips.set_deprecated(&vips, false).await {
                        tracing::error!(router = %self.name(router), %error, "parked VIPs not made preferred again");
                    }
                }
                if let Err(error) = self.vips.add(&vips).await {
                    tracing::error!(router = %self.name(router), %error, "adding VIPs failed");
                }
                self.add_routing(router).await;
            }
            Action::RemoveVips {
                router,
                vips,
                successor,
            } => {
                // Balancing stops with the VIPs (a resigning master keeps both until it hears the
                // new master): NAT rules first, so no packet to a VIP is left half-handled.
                let name = self.name(router).to_owned();
                if self.balancer.set_master(&name, false) {
                    self.program(&format!("{name} released"));
                }
                let vips = self.vip_details(router, &vips);
                let parked = match successor {
                    Some(successor) if self.handover.drains(router) => {
                        let connections = count_connections(&vips);
                        let now = std::time::Instant::now();
                        let beacon =
                            (self.handover).park(router, successor, vips.clone(), connections, now);
                        if beacon.is_some() {
                            // Later counts come from the background, never older than this one.
                            let addresses = vips.iter().map(|v| v.addr).collect();
                            self.counts.seed(&addresses, connections);
                        }
                        beacon.map(|beacon| (successor, beacon))
                    }
                    _ => None,
                };
                if let Some((successor, beacon)) = parked {
                    tracing::info!(instance = %name, %successor, "{name}: handed over to {successor}; serving its connections until they end");
                    // Deprecated at once (one netlink message), so that the kernel opens
                    // nothing new from them and observers tell them from held ones; silenced
                    // (an `nft` run) before the first beacon leaves.
                    if let Err(error) = self.vips.set_deprecated(&vips, true).await {
                        tracing::warn!(instance = %name, %error, "parked VIPs not marked deprecated");
                    }
                    self.sync_handover_rules("park");
                    self.send_beacon(beacon);
                    return;
                }
                self.remove_routing(router).await;
                if let Err(error) = self.vips.remove(&vips).await {
                    tracing::error!(router = %self.name(router), %error, "removing VIPs failed");
                }
            }
            Action::Announce { router, vips } => {
                let details = self.vip_details(router, &vips);
                self.announce(router, &details).await;
            }
            Action::StateChanged {
                router,
                from,
                to,
                priority,
                cause,
            } => {
                let name = self.name(router).to_owned();
                tracing::info!(instance = %name, %from, %to, %priority, %cause, "{name}: {from} -> {to}: {cause}");
                self.handover
                    .on_state(router, &name, to, &cause, std::time::Instant::now());
                // A new master balances its virtual servers with the health its checks already
                // know (they run on every node).
                if to == State::Master && self.balancer.set_master(&name, true) {
                    self.program(&format!("{name} master"));
                }
                let change = StateChange {
                    kind: HookKind::Instance,
                    name: name.clone(),
                    old: hook_state(from, true),
                    new: hook_state(to, false),
                    priority,
                    cause: cause.to_string(),
                };
                self.notifiers.notify(&change);
                self.instance_hooks.notify(&name, change);
                transitions.push(Transition {
                    instance: name,
                    from,
                    to,
                    cause,
                });
            }
            Action::SyncGroupChanged {
                group,
                from,
                to,
                cause,
            } => {
                tracing::info!(%group, %from, %to, %cause, "sync group {group}: {from} -> {to}: {cause}");
                // A group's priority is 0 for its programs and its FIFO line, as in keepalived.
                let change = StateChange {
                    kind: HookKind::Group,
                    name: group.clone(),
                    old: hook_state(from, true),
                    new: hook_state(to, false),
                    priority: hav_vrrp::Priority(0),
                    cause: cause.to_string(),
                };
                self.notifiers.notify(&change);
                self.group_hooks.notify(&group, change);
            }
            other => tracing::debug!(?other, "action not handled by this agent version"),
        }
    }

    /// Closes the hook queues (each finishes the hooks it has queued), then the notify FIFO and
    /// the mail sender (each finishes what it has queued, within its bound).
    pub async fn close_hooks(&mut self) {
        self.instance_hooks.close().await;
        self.group_hooks.close().await;
        self.notifiers.close().await;
    }
}

/// The connections on `vips` now (when they cannot be counted, as many as can be: the drain
/// holds them until a count succeeds or its deadline passes).
fn count_connections(vips: &[Vip]) -> usize {
    let addresses = vips.iter().map(|v| v.addr).collect();
    crate::net::sockdiag::count_tcp_connections(&addresses).unwrap_or_else(|error| {
        tracing::warn!(%error, "cannot count connections on the VIPs handed over");
        usize::MAX
    })
}

/// The VIPs of the routers that run without accept mode.
fn no_accept_vips(plan: &Plan) -> Vec<IpAddr> {
    (plan.engine.routers.iter())
        .filter(|router| !router.accept)
        .flat_map(|router| router.vips.iter().copied())
        .collect()
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

/// Whether some of `entries` per-router entries may belong to a router `engine` no longer has.
/// Every router of the engine has an entry ([`Executor::install`] gives each one, and only
/// [`Executor::prune`] takes one away, keeping what the engine still has, retiring or not), so
/// when there are no more entries than running routers, the entries are exactly those routers.
fn outlived_any(entries: usize, engine: &Engine) -> bool {
    entries > engine.briefs().len()
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use hav_vrrp::engine::Engine;
    use hav_vrrp::sim::fuzz;

    use super::outlived_any;

    #[test]
    fn entries_outlive_their_router_only_once_the_engine_let_one_go() {
        let now = Instant::now();
        // Three routers; variant 4 of the fuzzer's configs is the same without `v6`.
        let mut engine = Engine::new(fuzz::config(0)).expect("a valid config");
        engine.start(now);
        assert!(!outlived_any(3, &engine));
        engine
            .reconfigure(now, fuzz::config(4))
            .expect("a valid config");
        let later = now + Duration::from_secs(10);
        engine.handle_timeout(later);
        assert!(outlived_any(3, &engine), "an entry for the removed router");
        assert!(!outlived_any(2, &engine), "pruned: one entry per router");
    }
}
