//! VRRP virtual MAC interfaces (keepalived's `use_vmac`): a macvlan on the instance's interface
//! whose MAC is the virtual router MAC (RFC 5798 section 7.3), carrying the VIPs.
//!
//! The macvlan is in private mode, as keepalived creates it: a frame from the wire whose source
//! is the macvlan's own MAC (the peer's adverts, sent from its macvlan with the same MAC) reaches
//! the macvlan alone, so the adverts are heard on it. It stays up in every state (a backup hears
//! the master's adverts on it) and holds VIPs only as master. Before it comes up, the kernel is
//! told: answer ARP on it only for its own addresses (`arp_ignore=1`, so a backup's macvlan
//! answers nothing and no macvlan answers for the node's own addresses with the virtual MAC), no
//! reverse-path filter, accept local sources; an IPv4 instance's macvlan has IPv6 off, an IPv6
//! instance's makes no link-local address (either would send from the virtual MAC on a backup).
//! The base interface answers ARP only for its own addresses too (`arp_ignore=1`,
//! `arp_filter=1`), or it would answer for the VIPs with its own MAC, and asks with its own
//! address (`arp_announce=2`): a request sent from a VIP (a reply to a client leaves by the base)
//! would make every host that hears it move the VIP to the base's MAC.
//!
//! [`VmacManager::ensure`] is idempotent: a macvlan already there with the right parent and MAC
//! is kept; one with a wrong parent or MAC is replaced; a link of that name that is not a macvlan
//! is never touched (an error). [`VmacManager::remove`] deletes only macvlans.

use std::fmt;

use futures::TryStreamExt;
use netlink_packet_route::link::{
    InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage, MacVlanMode,
};
use rtnetlink::{Handle, LinkMacVlan, LinkUnspec};
use serde::{Deserialize, Serialize};

use super::vip::errno;

/// One macvlan, as the journal records it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmacSpec {
    /// The macvlan's name.
    pub name: String,
    /// The interface it sits on.
    pub base: String,
    pub mac: [u8; 6],
    /// An IPv6 instance's (IPv6 stays on, without a link-local address).
    pub ipv6: bool,
}

impl fmt::Display for VmacSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.mac;
        write!(
            f,
            "{}@{} ({a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x})",
            self.name, self.base
        )
    }
}

/// What [`VmacManager::ensure`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ensured {
    /// It was there as asked.
    Present,
    /// It was created (or replaced).
    Created,
    /// Its base interface does not exist: nothing was done.
    NoBase,
}

/// Errors of vmac management.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VmacError {
    /// A link of that name exists and is not a macvlan.
    #[error("vmac {vmac}: a link of that name exists and is not a macvlan; it is left alone")]
    NotMacvlan { vmac: String },
    /// A sysctl of the macvlan or its base could not be written.
    #[error("vmac {vmac}: cannot write {path}")]
    Sysctl {
        vmac: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The kernel refused the request.
    #[error("vmac {vmac}: {op} failed")]
    Netlink {
        /// `create`, `delete`, `up` or `link lookup`.
        op: &'static str,
        vmac: String,
        #[source]
        source: rtnetlink::Error,
    },
}

/// Creates and deletes macvlans over one rtnetlink connection.
#[derive(Debug, Clone)]
pub struct VmacManager {
    handle: Handle,
}

/// What a link lookup found of a name.
struct Found {
    index: u32,
    parent: Option<u32>,
    mac: Option<Vec<u8>>,
    macvlan: bool,
    up: bool,
}

impl VmacManager {
    pub fn new(handle: Handle) -> Self {
        Self { handle }
    }

    /// Makes the macvlan exist as `spec` says, up, with the sysctls above.
    pub async fn ensure(&self, spec: &VmacSpec) -> Result<Ensured, VmacError> {
        let Some(base) = self.lookup(&spec.base, spec).await? else {
            return Ok(Ensured::NoBase);
        };
        if let Some(found) = self.lookup(&spec.name, spec).await? {
            if !found.macvlan {
                return Err(VmacError::NotMacvlan {
                    vmac: spec.to_string(),
                });
            }
            if found.parent == Some(base.index) && found.mac.as_deref() == Some(&spec.mac[..]) {
                // Brought up again if something took it down (only then: a request that changes
                // nothing would still wake every link watcher); the sysctls were written when it
                // was created.
                if !found.up {
                    self.up(found.index, spec).await?;
                }
                return Ok(Ensured::Present);
            }
            tracing::warn!(vmac = %spec, "replacing a macvlan of that name with another parent or MAC");
            self.delete(found.index, spec).await?;
        }
        let message = LinkMacVlan::new(&spec.name, base.index, MacVlanMode::Private)
            .address(spec.mac.to_vec())
            .build();
        match self.handle.link().add(message).execute().await {
            Ok(()) => {}
            Err(e) if errno(&e) == Some(libc::EEXIST) => {}
            Err(source) => {
                return Err(VmacError::Netlink {
                    op: "create",
                    vmac: spec.to_string(),
                    source,
                });
            }
        }
        let Some(created) = self.lookup(&spec.name, spec).await? else {
            // Deleted again at once (its base went): the next link change tries again.
            return Ok(Ensured::NoBase);
        };
        configure(spec)?;
        self.up(created.index, spec).await?;
        Ok(Ensured::Created)
    }

    /// Deletes the macvlan (absent: `Ok(false)`); a link of that name that is not a macvlan is
    /// left alone (an error).
    pub async fn remove(&self, spec: &VmacSpec) -> Result<bool, VmacError> {
        let Some(found) = self.lookup(&spec.name, spec).await? else {
            return Ok(false);
        };
        if !found.macvlan {
            return Err(VmacError::NotMacvlan {
                vmac: spec.to_string(),
            });
        }
        self.delete(found.index, spec).await?;
        Ok(true)
    }

    async fn up(&self, index: u32, spec: &VmacSpec) -> Result<(), VmacError> {
        let message = LinkUnspec::new_with_index(index).up().build();
        self.handle
            .link()
            .set(message)
            .execute()
            .await
            .map_err(|source| VmacError::Netlink {
                op: "up",
                vmac: spec.to_string(),
                source,
            })
    }

    async fn delete(&self, index: u32, spec: &VmacSpec) -> Result<(), VmacError> {
        match self.handle.link().del(index).execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(()),
            Err(source) => Err(VmacError::Netlink {
                op: "delete",
                vmac: spec.to_string(),
                source,
            }),
        }
    }

    async fn lookup(&self, name: &str, spec: &VmacSpec) -> Result<Option<Found>, VmacError> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_owned())
            .execute();
        let link: LinkMessage = match links.try_next().await {
            Ok(Some(link)) => link,
            Ok(None) => return Ok(None),
            Err(e) if errno(&e) == Some(libc::ENODEV) => return Ok(None),
            Err(source) => {
                return Err(VmacError::Netlink {
                    op: "link lookup",
                    vmac: spec.to_string(),
                    source,
                });
            }
        };
        let mut found = Found {
            index: link.header.index,
            parent: None,
            mac: None,
            macvlan: false,
            up: link.header.flags.contains(LinkFlags::Up),
        };
        for attribute in link.attributes {
            match attribute {
                LinkAttribute::Link(parent) => found.parent = Some(parent),
                LinkAttribute::Address(mac) => found.mac = Some(mac),
                LinkAttribute::LinkInfo(infos) => {
                    found.macvlan = infos
                        .iter()
                        .any(|info| matches!(info, LinkInfo::Kind(InfoKind::MacVlan)));
                }
                _ => {}
            }
        }
        Ok(Some(found))
    }
}

/// The sysctls of a new macvlan and of its base (see the module's doc), written before the
/// macvlan comes up.
fn configure(spec: &VmacSpec) -> Result<(), VmacError> {
    let mut settings = vec![
        (format!("ipv4/conf/{}/arp_ignore", spec.name), "1"),
        (format!("ipv4/conf/{}/rp_filter", spec.name), "0"),
        (format!("ipv4/conf/{}/accept_local", spec.name), "1"),
        (format!("ipv4/conf/{}/arp_ignore", spec.base), "1"),
        (format!("ipv4/conf/{}/arp_filter", spec.base), "1"),
        (format!("ipv4/conf/{}/arp_announce", spec.base), "2"),
    ];
    if spec.ipv6 {
        // IN6_ADDR_GEN_MODE_NONE: no link-local address of the virtual MAC.
        settings.push((format!("ipv6/conf/{}/addr_gen_mode", spec.name), "1"));
    } else {
        settings.push((format!("ipv6/conf/{}/disable_ipv6", spec.name), "1"));
    }
    for (key, value) in settings {
        let path = format!("/proc/sys/net/{key}");
        match std::fs::write(&path, value) {
            Ok(()) => {}
            // No IPv6 in this kernel: nothing to turn off.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && key.starts_with("ipv6/") => {}
            Err(source) => {
                return Err(VmacError::Sysctl {
                    vmac: spec.to_string(),
                    path,
                    source,
                });
            }
        }
    }
    Ok(())
}
