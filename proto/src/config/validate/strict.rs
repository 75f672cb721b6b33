//! Strict mode (keepalived's `vrrp_strict` and `strict_mode`): an instance held to RFC 5798 (and
//! RFC 3768 for version 2) alone.
//!
//! A strict instance refuses what the RFCs do not have: unicast peers, authentication, a preempt
//! delay, `accept` on version 2 (RFC 3768 has no Accept_Mode), and an IPv6 instance whose first
//! VIP is not link-local (RFC 5798 section 5.2.9). Unless `accept` is written, it accepts VIP
//! traffic only as the address owner (RFC 5798's default). Zero VIPs and IPv6 over version 2 are
//! refused for every instance already. At run time a strict instance drops adverts whose address
//! list differs from its own.

use std::net::IpAddr;

use hav_vrrp::{Priority, Version};

use crate::config::error::{Collector, KeyPath, Problem};
use crate::config::node::Instance;
use crate::config::raw::RawNodeConfig;

/// Applies strict mode to each instance that runs it (per `[[instance]] strict`, else
/// `[node] strict`), reporting what it refuses.
pub(super) fn apply(
    raw: &RawNodeConfig,
    instances: &mut [Option<Instance>],
    errors: &mut Collector,
) {
    let node_strict = (raw.node.as_ref())
        .and_then(|node| node.strict)
        .unwrap_or(false);
    let raw_instances = raw.instance.as_deref().unwrap_or_default();
    let root = KeyPath::root().key("instance");
    for (index, (raw, instance)) in raw_instances.iter().zip(instances.iter_mut()).enumerate() {
        let strict = raw.strict.unwrap_or(node_strict);
        let Some(instance) = instance else { continue };
        instance.strict = strict;
        if !strict {
            continue;
        }
        let path = root.index(index);
        let mut refuse = |key: &str, reason: &str| {
            errors.push(
                path.key(key),
                Problem::Conflict(format!(
                    "{reason} (strict mode: set strict = false to allow it)"
                )),
            );
        };
        if raw
            .unicast_peers
            .as_ref()
            .is_some_and(|peers| !peers.is_empty())
        {
            refuse(
                "unicast_peers",
                "RFC 5798 sends adverts to the multicast group only",
            );
        }
        if raw.auth_pass.is_some() {
            refuse("auth_pass", "RFC 5798 has no authentication");
        }
        if !instance.preempt_delay.is_zero() {
            refuse("preempt_delay", "RFC 5798 has no preempt delay");
        }
        if instance.version == Version::V2 && raw.accept.is_some() {
            refuse("accept", "RFC 3768 (version 2) has no Accept_Mode");
        }
        if let Some(first) = instance.vips.first()
            && let IpAddr::V6(address) = first.address
            && address.segments()[0] & 0xffc0 != 0xfe80
        {
            refuse(
                "vips",
                "RFC 5798 section 5.2.9: the first IPv6 virtual address must be link-local",
            );
        }
        if raw.accept.is_none() {
            instance.accept = instance.priority == Priority::OWNER;
        }
    }
}
