//! Config changes as one transaction: SIGHUP, a pushed config, and a link or address that came
//! or went all go through [`Daemon::apply_plan`].
//!
//! Everything that can fail (planning, opening sockets, starting hooks, journalling the new VIPs,
//! the engine's checks) happens before anything the running config uses is touched; a refused
//! change leaves it running as it was. Only then does the executor take over the new sockets and
//! hooks, the trackers follow the new plan, and routers learn where they run.

use std::time::Instant;

use hav_proto::config::{ConfigErrors, NodeConfig, load_node_config};
use hav_vrrp::engine::{EngineConfigError, TrackEffect};

use super::executor::Prepared;
use super::plan::{self, Binding, Host, Plan, PlanError};
use super::{Daemon, fleet, network};
use crate::hooks::HookError;
use crate::net::{JournalError, NftError, SocketError, VmacManager};

/// Why a config change was refused (the running config stays).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReloadError {
    #[error("{}", .0.lines().join("; "))]
    Load(ConfigErrors),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("opening a VRRP socket: {0}")]
    Socket(#[from] SocketError),
    #[error("starting a notify hook: {0}")]
    Hook(#[from] HookError),
    #[error("journalling the new config's VIPs: {0}")]
    Journal(#[from] JournalError),
    #[error("engine refused the config: {0}")]
    Engine(#[from] EngineConfigError),
    #[error("filtering the VIPs without accept mode: {0}")]
    AcceptFilter(#[from] NftError),
    #[error("silencing the virtual MAC interfaces: {0}")]
    VmacQuiet(NftError),
}

/// The engine tracker through which a router is held in Fault while it cannot run on this host.
fn binding_key(interface: &str) -> String {
    format!("link:{interface}")
}

impl Daemon {
    /// SIGHUP: the local file is read again and the precedence rule applied ([`fleet::select`]);
    /// the result replaces the running config only as a whole.
    pub(super) async fn reload(&mut self) {
        tracing::info!(config = %self.config_path.display(), "reloading");
        let result = match load_node_config(&self.config_path) {
            Ok(config) => {
                let selected = fleet::select(&self.config_path, config);
                self.reconfigure(selected.config)
                    .await
                    .map(|()| self.running.version = selected.version)
            }
            Err(errors) => Err(ReloadError::Load(errors)),
        };
        if let Err(error) = result {
            if let ReloadError::Load(errors) = &error {
                for line in errors.lines() {
                    tracing::error!("{line}");
                }
            }
            tracing::error!(%error, "reload refused; the running config stays");
        }
    }

    /// Replaces the running config with `config` (unchanged instances untouched), or changes
    /// nothing and says why.
    pub(super) async fn reconfigure(&mut self, config: NodeConfig) -> Result<(), ReloadError> {
        if config == self.running.config {
            tracing::info!("config unchanged");
            return Ok(());
        }
        // The new config's macvlans exist (journaled first) before the plan binds to them.
        self.executor
            .vips
            .reserve_network(&network::network_of(&config))?;
        network::ensure_vmacs(&self.vmacs(), &config).await;
        let host = Host::read()?;
        let plan = plan::plan(&config, &host)?;
        let before = self.running.config.clone();
        self.apply_plan(config, plan).await?;
        network::remove_stale_vmacs(&self.vmacs(), &before, &self.running.config).await;
        Ok(())
    }

    /// Creates and deletes the macvlans, over the VIPs' rtnetlink connection.
    fn vmacs(&self) -> VmacManager {
        VmacManager::new(self.executor.vips.manager().handle().clone())
    }

    /// A link or address changed: instances whose interface appeared, vanished or was replaced
    /// (a new index) are bound again, with fresh sockets, through the same transaction.
    pub(super) async fn rebind(&mut self) {
        // A base interface that came back gets its macvlan again before the instances bind.
        network::ensure_vmacs(&self.vmacs(), &self.running.config).await;
        let host = match Host::read() {
            Ok(host) => host,
            Err(error) => {
                tracing::error!(%error, "cannot read the host's links");
                return;
            }
        };
        if plan::bindings(&self.running.config, &host) == self.running.plan.bindings {
            return;
        }
        // What was held counts before the sockets change.
        self.release_held(Instant::now());
        // Sockets on a link that is gone, or was replaced, can neither send nor hear.
        for interface in self.executor.sockets.close_stale(&host) {
            tracing::info!(%interface, "link gone or replaced; its VRRP sockets are closed");
        }
        let config = self.running.config.clone();
        let result = match plan::plan(&config, &host) {
            Ok(plan) => self.apply_plan(config, plan).await,
            Err(error) => Err(error.into()),
        };
        if let Err(error) = result {
            tracing::error!(%error, "links changed but the instances could not follow; trying again at the next change");
        }
    }

    /// The transaction: prepare everything that can fail, then commit.
    async fn apply_plan(&mut self, config: NodeConfig, plan: Plan) -> Result<(), ReloadError> {
        // What was held counts before the sockets change.
        self.release_held(Instant::now());
        // Before a socket joins the VRRP group on a macvlan.
        (self.executor.quiet_vmacs(&plan).await).map_err(ReloadError::VmacQuiet)?;
        let prepared = Prepared {
            sockets: self
                .executor
                .sockets
                .prepare(plan.router_sockets.values())?,
            instance_hooks: self.executor.instance_hooks.prepare(&plan.instance_hooks)?,
            group_hooks: self.executor.group_hooks.prepare(&plan.group_hooks)?,
        };
        self.executor.vips.reserve(&plan.all_vips())?;
        self.executor.vips.reserve_network(&plan.network)?;
        self.executor.filter_ahead(&plan).await?;
        let now = Instant::now();
        let report = self.engine.reconfigure(now, plan.engine.clone())?;
        // Committed: from here on nothing fails.
        if !report.is_empty() {
            tracing::info!(
                added = ?report.added, removed = ?report.removed,
                changed = ?report.changed.iter().map(|c| &c.name).collect::<Vec<_>>(),
                unchanged = report.unchanged.len(),
                "config reloaded"
            );
        }
        self.executor.install(&plan, prepared, &self.engine);
        self.executor.settle_filter(&plan).await;
        self.executor.settle_routing().await;
        self.telemetry
            .note_reload(&self.running.config.telemetry, &config.telemetry);
        let previous = std::mem::replace(&mut self.running.plan, plan);
        self.running.config = config;
        self.configure_telemetry();
        if let Err(error) = self.trackers.sync(&self.running.plan) {
            tracing::error!(%error, "a tracker of the new config did not start");
        }
        self.trackers
            .apply_all(&self.running.plan, Some(&previous), &mut self.engine, now);
        self.apply_bindings(Some(&previous), now);
        self.apply_overrides(now);
        Ok(())
    }

    /// Holds every unbound router in Fault, releases the bound ones, and makes a router whose
    /// link was replaced (same name, new index: its VIPs went with the old link) elect again.
    pub(super) fn apply_bindings(&mut self, previous: Option<&Plan>, now: Instant) {
        let interfaces = |plan: &Plan, name: &str| {
            (plan.engine.routers.iter())
                .find(|router| router.name == name)
                .map(|router| router.interface.clone())
        };
        for (name, binding) in &self.running.plan.bindings {
            let Some(id) = self.engine.router_id(name) else {
                continue;
            };
            let Some(interface) = interfaces(&self.running.plan, name) else {
                continue;
            };
            let before = previous.and_then(|p| Some((p.bindings.get(name)?, interfaces(p, name)?)));
            if let Some((_, old_interface)) = &before
                && *old_interface != interface
            {
                let old = binding_key(old_interface);
                self.engine
                    .set_tracker(now, id, &old, TrackEffect::Adjust(0));
            }
            let key = binding_key(&interface);
            let old_binding = before.as_ref().map(|(binding, _)| *binding);
            match binding {
                Binding::Unbound(why) => {
                    if old_binding != Some(binding) {
                        tracing::warn!(instance = %name, reason = %why, "instance {name}: {why}; it stays in Fault until that changes");
                    }
                    self.engine.set_tracker(now, id, &key, TrackEffect::Fault);
                }
                Binding::Bound { ifindex, .. } => {
                    match old_binding {
                        Some(Binding::Bound { ifindex: old, .. }) if old != ifindex => {
                            tracing::warn!(instance = %name, %interface, "instance {name}: link {interface} was replaced (index {old} -> {ifindex}); electing again");
                            // Through Fault: the VIPs went with the old link, so a master
                            // gives them up and adds them again when it wins.
                            self.engine.set_tracker(now, id, &key, TrackEffect::Fault);
                        }
                        Some(Binding::Unbound(_)) => {
                            tracing::info!(instance = %name, %interface, "instance {name}: link {interface} is back; electing");
                        }
                        _ => {}
                    }
                    self.engine
                        .set_tracker(now, id, &key, TrackEffect::Adjust(0));
                }
            }
        }
    }
}
