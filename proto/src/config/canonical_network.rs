//! The canonical form of an instance's strict mode and network extras, added to what
//! [`canonical`](super::canonical) writes for the rest of the instance.

use hav_vrrp::Version;

use super::network::{MAIN_TABLE, RouteKind, VirtualRoute, VirtualRule};
use super::node::Instance;
use super::raw::{RawInstance, RawRoute, RawRule, RawVmac};

/// `raw` with `instance`'s strict mode (written where it differs from the node's), vmac, routes
/// and rules. A strict version 2 instance writes no `accept`: strict mode refuses the key there
/// and derives the same value.
pub(super) fn extras(mut raw: RawInstance, instance: &Instance, node_strict: bool) -> RawInstance {
    raw.strict = (instance.strict != node_strict).then_some(instance.strict);
    if instance.strict && instance.version == Version::V2 {
        raw.accept = None;
    }
    raw.vmac = instance.vmac.as_ref().map(|vmac| RawVmac {
        name: Some(vmac.name.clone()),
        xmit_base: Some(vmac.xmit_base),
    });
    raw.route = (!instance.routes.is_empty()).then(|| instance.routes.iter().map(route).collect());
    raw.rule = (!instance.rules.is_empty()).then(|| instance.rules.iter().map(rule).collect());
    raw
}

fn route(route: &VirtualRoute) -> RawRoute {
    RawRoute {
        to: Some(route.to.to_string()),
        kind: (route.kind != RouteKind::Unicast).then(|| route.kind.name().to_owned()),
        via: route.via.map(|via| via.to_string()),
        dev: route.dev.clone(),
        src: route.src.map(|src| src.to_string()),
        table: (route.table != MAIN_TABLE).then_some(route.table.into()),
        metric: route.metric.map(Into::into),
    }
}

fn rule(rule: &VirtualRule) -> RawRule {
    RawRule {
        from: rule.from.map(|from| from.to_string()),
        to: rule.to.map(|to| to.to_string()),
        table: Some(rule.table.into()),
        priority: rule.priority.map(Into::into),
        fwmark: rule.fwmark.map(Into::into),
        iif: rule.iif.clone(),
        oif: rule.oif.clone(),
    }
}
