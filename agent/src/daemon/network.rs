//! The instances' network extras in the daemon: which macvlans, routes and rules a config asks
//! for, and keeping the macvlans there as links come and go.
//!
//! A macvlan is created before the plan that binds its instance to it (at start, on a reload,
//! and whenever a link changes: a base interface deleted takes its macvlan with it, and when
//! the base is back, so is the macvlan, before the instance binds again). Every macvlan, route
//! and rule the config may add is journaled before it is added (ahead of need, as the VIPs), so
//! a restarted agent removes what a crashed one left.

use hav_proto::config::{Instance, NodeConfig, Transport, Vmac};

use crate::net::{Ensured, NetworkEntries, RouteSpec, RuleSpec, VmacManager, VmacSpec};

/// The interface an instance's VRRP socket is on: its macvlan, unless it sends from the base
/// (`xmit_base`) or to unicast peers (their adverts come to the base's own MAC, so only the base
/// hears them).
pub fn vrrp_interface(instance: &Instance) -> &str {
    match &instance.vmac {
        Some(vmac) if !vmac.xmit_base && instance.transport == Transport::Multicast => &vmac.name,
        _ => &instance.interface,
    }
}

/// The macvlans an IPv4 instance's VRRP socket is on (it joins the VRRP group there).
pub fn quiet_vmacs(config: &NodeConfig) -> std::collections::BTreeSet<String> {
    (config.instances.iter())
        .filter(|instance| instance.family == hav_vrrp::Family::V4)
        .map(vrrp_interface_and_base)
        .filter(|(socket, base)| socket != base)
        .map(|(socket, _)| socket.to_owned())
        .collect()
}

fn vrrp_interface_and_base(instance: &Instance) -> (&str, &str) {
    (vrrp_interface(instance), &instance.interface)
}

/// The instance's macvlan, if it has one.
pub fn vmac_spec(instance: &Instance) -> Option<VmacSpec> {
    instance.vmac.as_ref().map(|vmac| VmacSpec {
        name: vmac.name.clone(),
        base: instance.interface.clone(),
        mac: Vmac::mac(instance.family, instance.vrid),
        ipv6: instance.family == hav_vrrp::Family::V6,
    })
}

/// The rules and routes an instance holds while master.
pub fn routing_of(instance: &Instance) -> (Vec<RuleSpec>, Vec<RouteSpec>) {
    (
        instance.rules.iter().map(RuleSpec::from).collect(),
        instance.routes.iter().map(RouteSpec::from).collect(),
    )
}

/// Everything besides VIPs that `config` may make this node add.
pub fn network_of(config: &NodeConfig) -> NetworkEntries {
    let mut entries = NetworkEntries::default();
    for instance in &config.instances {
        entries.vmacs.extend(vmac_spec(instance));
        let (rules, routes) = routing_of(instance);
        entries.rules.extend(rules);
        entries.routes.extend(routes);
    }
    entries
}

/// Makes every macvlan of `config` whose base exists be there; whether one was created (the
/// host must then be read again). Failures are logged: that instance stays unbound (Fault)
/// until a later link change succeeds.
pub async fn ensure_vmacs(manager: &VmacManager, config: &NodeConfig) -> bool {
    let mut created = false;
    for spec in config.instances.iter().filter_map(vmac_spec) {
        match manager.ensure(&spec).await {
            Ok(Ensured::Created) => {
                tracing::info!(vmac = %spec, "virtual MAC interface created");
                created = true;
            }
            Ok(Ensured::Present | Ensured::NoBase) => {}
            Err(error) => tracing::error!(%error, "virtual MAC interface not created"),
        }
    }
    created
}

/// Deletes the macvlans of `before` whose names `after` no longer uses (one it still names was
/// made anew by [`ensure_vmacs`] where it changed).
pub async fn remove_stale_vmacs(manager: &VmacManager, before: &NodeConfig, after: &NodeConfig) {
    let wanted: std::collections::BTreeSet<String> = (network_of(after).vmacs.into_iter())
        .map(|spec| spec.name)
        .collect();
    for spec in network_of(before).vmacs {
        if wanted.contains(&spec.name) {
            continue;
        }
        match manager.remove(&spec).await {
            Ok(true) => tracing::info!(vmac = %spec, "virtual MAC interface removed"),
            Ok(false) => {}
            Err(error) => tracing::error!(%error, "virtual MAC interface not removed"),
        }
    }
}
