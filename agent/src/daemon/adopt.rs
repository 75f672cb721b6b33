//! `--adopt`: taking over, without a gap, the VIPs another VRRP daemon on this node left on
//! its interfaces (keepalived stopped with SIGKILL, so that it released nothing).
//!
//! Guarantees: only addresses this config names, on the interface it names, are adopted, and
//! only those found after the journal's recovery (a previous hav run's own VIPs are removed
//! first, as on every start); an instance with any of its VIPs present starts as master and
//! adverts at once, so its peer never adds them too; an adopting instance that a fault keeps
//! from being master gets them removed before the loop starts, so no address is left unowned.

use std::collections::BTreeMap;

use hav_vrrp::engine::{Engine, RouterId, State};

use super::plan::Plan;
use crate::net::journal::JournaledVips;
use crate::net::vip::Vip;

/// The instances that adopt, with the VIPs found for each.
#[derive(Debug, Default)]
pub struct Adopted {
    found: BTreeMap<String, (RouterId, Vec<Vip>)>,
}

impl Adopted {
    /// Finds each instance's VIPs already on its interface and marks the instances that have
    /// any to start as master. Call before [`Engine::start`].
    pub async fn find(plan: &Plan, engine: &mut Engine, vips: &JournaledVips) -> Adopted {
        let mut adopted = Adopted::default();
        for (instance, configured) in &plan.vips {
            let Some(router) = engine.router_id(instance) else {
                continue;
            };
            let configured: Vec<Vip> = configured.values().cloned().collect();
            let present = match vips.manager().present(&configured).await {
                Ok(present) => present,
                Err(error) => {
                    // An instance whose interface is missing is in Fault; nothing to adopt.
                    tracing::debug!(%instance, %error, "nothing to adopt");
                    continue;
                }
            };
            if present.is_empty() {
                continue;
            }
            tracing::info!(
                %instance,
                vips = ?present.iter().map(|v| v.addr).collect::<Vec<_>>(),
                "adopting the VIPs found on the interface: starting as master"
            );
            engine.adopt(router);
            adopted.found.insert(instance.clone(), (router, present));
        }
        adopted
    }

    /// After [`Engine::start`] and its actions: removes the adopted VIPs of instances that did
    /// not become master (a tracker or the sync group held them in Fault).
    pub async fn release_unheld(self, engine: &Engine, vips: &mut JournaledVips) {
        for (instance, (router, found)) in self.found {
            let master = engine
                .router_role(router)
                .is_some_and(|(state, _)| state == State::Master);
            if master {
                continue;
            }
            tracing::warn!(%instance, "not master at start: removing the VIPs it found");
            if let Err(error) = vips.remove(&found).await {
                tracing::error!(%instance, %error, "could not remove the VIPs it found");
            }
        }
    }
}
