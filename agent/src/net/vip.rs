//! Virtual IP addresses on interfaces, through rtnetlink.
//!
//! Adding and removing are requests on the calling thread ([`super::rtnl`]): a takeover of many
//! instances adds its addresses one system call pair each, never waiting for another thread.
//! Adding and removing are idempotent: adding an address that is already there (`EEXIST`) and
//! removing one that is not (`EADDRNOTAVAIL`, `ENOENT`, or an interface that is gone) succeed.
//! IPv6 VIPs are added with `IFA_F_NODAD`, so they are usable at once rather than tentative for
//! the duration of duplicate address detection (the VRRP master owns the address by protocol).
//! A call on several VIPs tries every one and returns the first failure after all were tried.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex};

use futures::TryStreamExt;
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, CacheInfo,
};
use rtnetlink::packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::address::AddressMessage;
use rtnetlink::{AddressMessageBuilder, Handle};
use serde::{Deserialize, Serialize};

use super::rtnl::{RtnlError, RtnlSocket};

/// The kernel's "forever" address lifetime.
const INFINITY_LIFE_TIME: u32 = u32::MAX;

/// Longest interface name or IPv4 address label the kernel accepts (`IFNAMSIZ` - 1).
const MAX_LABEL_LEN: usize = 15;

/// One virtual address on one interface.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vip {
    /// The address.
    pub addr: IpAddr,
    /// Its prefix length (32 or the subnet's for IPv4, 128 or 64 for IPv6, typically).
    pub prefix_len: u8,
    /// The interface that carries it (not necessarily the one VRRP speaks on).
    pub iface: String,
    /// IPv4 only: the address label (`ip addr add ... label eth0:vip`); must start with `iface`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

impl Vip {
    /// A VIP without a label.
    pub fn new(addr: IpAddr, prefix_len: u8, iface: impl Into<String>) -> Self {
        Self {
            addr,
            prefix_len,
            iface: iface.into(),
            label: None,
        }
    }

    /// The same VIP with an IPv4 label.
    pub fn with_label(self, label: impl Into<String>) -> Self {
        Self {
            label: Some(label.into()),
            ..self
        }
    }

    /// What identifies the address to the kernel: interface, address and prefix length.
    pub(crate) fn key(&self) -> (&str, IpAddr, u8) {
        (&self.iface, self.addr, self.prefix_len)
    }

    fn check(&self) -> Result<(), VipError> {
        let max_prefix = if self.addr.is_ipv4() { 32 } else { 128 };
        if self.prefix_len > max_prefix {
            return Err(self.invalid(format!("prefix length {} > {max_prefix}", self.prefix_len)));
        }
        if let Some(label) = &self.label {
            if self.addr.is_ipv6() {
                return Err(self.invalid("address labels exist for IPv4 only".to_owned()));
            }
            if !label.starts_with(&self.iface) || label.len() > MAX_LABEL_LEN {
                return Err(self.invalid(format!(
                    "label {label:?} must start with the interface name and be at most \
                     {MAX_LABEL_LEN} bytes"
                )));
            }
        }
        Ok(())
    }

    fn invalid(&self, reason: String) -> VipError {
        VipError::Invalid {
            vip: self.to_string(),
            reason,
        }
    }
}

impl fmt::Display for Vip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{} dev {}", self.addr, self.prefix_len, self.iface)?;
        if let Some(label) = &self.label {
            write!(f, " label {label}")?;
        }
        Ok(())
    }
}

/// Errors of VIP management.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VipError {
    /// Opening the rtnetlink socket failed.
    #[error("cannot open an rtnetlink socket")]
    Connect(#[source] std::io::Error),
    /// The VIP is not one the kernel could accept.
    #[error("VIP {vip}: {reason}")]
    Invalid {
        /// The VIP.
        vip: String,
        /// Why.
        reason: String,
    },
    /// The interface does not exist (on add; on remove this is success).
    #[error("VIP {vip}: interface not found")]
    NoSuchInterface {
        /// The VIP.
        vip: String,
    },
    /// The kernel refused the request.
    #[error("VIP {vip}: {op} failed")]
    Netlink {
        /// `address dump`.
        op: &'static str,
        /// The VIP (empty for a dump).
        vip: String,
        /// Cause.
        #[source]
        source: rtnetlink::Error,
    },
    /// The kernel refused an add or a removal, or did not answer it.
    #[error("VIP {vip}: {op} failed")]
    Request {
        /// `add`, `remove` or `link lookup`.
        op: &'static str,
        /// The VIP.
        vip: String,
        /// Cause.
        #[source]
        source: RtnlError,
    },
}

/// Adds and removes VIPs on a netlink socket of its own ([`RtnlSocket`]), and lists them and
/// shares an rtnetlink connection with the routes' and the vmacs' managers.
#[derive(Debug, Clone)]
pub struct VipManager {
    handle: Handle,
    requests: Arc<Mutex<RtnlSocket>>,
}

impl VipManager {
    /// Opens an rtnetlink connection and a netlink socket in the calling thread's network
    /// namespace, and spawns the connection's driver on the current tokio runtime (so it must
    /// be called inside one).
    pub fn new() -> Result<Self, VipError> {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(VipError::Connect)?;
        let requests = RtnlSocket::open().map_err(VipError::Connect)?;
        tokio::spawn(connection);
        Ok(Self {
            handle,
            requests: Arc::new(Mutex::new(requests)),
        })
    }

    /// The rtnetlink connection (shared with the routes' and the vmacs' managers).
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Adds every VIP; a VIP already present succeeds. IPv6 VIPs skip DAD.
    pub async fn add(&self, vips: &[Vip]) -> Result<(), VipError> {
        let mut first_error = None;
        for vip in vips {
            if let Err(e) = self.write_one(vip, None) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Removes every VIP; a VIP (or interface) not present succeeds. The label is not matched.
    /// Returns the VIPs that were on an interface and are gone now, as the kernel answered each
    /// deletion (absent ones are left out), in order.
    pub async fn remove(&self, vips: &[Vip]) -> Result<Vec<Vip>, VipError> {
        let mut first_error = None;
        let mut removed = Vec::new();
        for vip in vips {
            match self.remove_one(vip) {
                Ok(true) => removed.push(vip.clone()),
                Ok(false) => {}
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(removed), Err)
    }

    /// The VIPs of `vips` present now (same interface, address and prefix length), in order.
    pub async fn present(&self, vips: &[Vip]) -> Result<Vec<Vip>, VipError> {
        let mut indexes = HashMap::new();
        for vip in vips {
            if !indexes.contains_key(vip.iface.as_str()) {
                indexes.insert(vip.iface.as_str(), self.link_index(vip)?);
            }
        }
        let mut dump = self.handle.address().get().execute();
        let mut found = Vec::new();
        while let Some(message) = dump.try_next().await.map_err(|source| VipError::Netlink {
            op: "address dump",
            vip: String::new(),
            source,
        })? {
            for attribute in &message.attributes {
                if let AddressAttribute::Local(addr) | AddressAttribute::Address(addr) = attribute {
                    found.push((message.header.index, *addr, message.header.prefix_len));
                }
            }
        }
        Ok(vips
            .iter()
            .filter(|vip| {
                indexes
                    .get(vip.iface.as_str())
                    .copied()
                    .flatten()
                    .is_some_and(|index| found.contains(&(index, vip.addr, vip.prefix_len)))
            })
            .cloned()
            .collect())
    }

    /// Marks each VIP deprecated (preferred lifetime 0: the kernel no longer picks it as a
    /// source, it still accepts traffic to it; `ip addr` shows `deprecated`) or preferred again,
    /// in place: its connections are untouched. A VIP not present is added in that state.
    pub async fn set_deprecated(&self, vips: &[Vip], deprecated: bool) -> Result<(), VipError> {
        let mut first_error = None;
        for vip in vips {
            let preferred = if deprecated { 0 } else { INFINITY_LIFE_TIME };
            if let Err(e) = self.write_one(vip, Some(preferred)) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Adds `vip` (present: success), or with `preferred`, writes it in place with that
    /// preferred lifetime (valid forever).
    fn write_one(&self, vip: &Vip, preferred: Option<u32>) -> Result<(), VipError> {
        vip.check()?;
        let index = self
            .link_index(vip)?
            .ok_or_else(|| VipError::NoSuchInterface {
                vip: vip.to_string(),
            })?;
        let mut message = address_message(vip, index);
        if let Some(preferred) = preferred {
            let mut lifetimes = CacheInfo::default();
            lifetimes.ifa_preferred = preferred;
            lifetimes.ifa_valid = INFINITY_LIFE_TIME;
            message
                .attributes
                .push(AddressAttribute::CacheInfo(lifetimes));
        }
        match vip.addr {
            IpAddr::V4(_) => {
                if let Some(label) = &vip.label {
                    message
                        .attributes
                        .push(AddressAttribute::Label(label.clone()));
                }
            }
            IpAddr::V6(_) => {
                message.header.flags |= AddressHeaderFlags::Nodad;
                message
                    .attributes
                    .push(AddressAttribute::Flags(AddressFlags::Nodad));
            }
        }
        let flags = match preferred {
            Some(_) => NLM_F_CREATE | NLM_F_REPLACE,
            None => NLM_F_CREATE | NLM_F_EXCL,
        };
        match self.request(RouteNetlinkMessage::NewAddress(message), flags) {
            Ok(()) => Ok(()),
            Err(e) if e.errno() == Some(libc::EEXIST) => Ok(()),
            Err(source) => Err(VipError::Request {
                op: "add",
                vip: vip.to_string(),
                source,
            }),
        }
    }

    /// `true` if the address was there and is removed, `false` if it (or its interface) was
    /// absent.
    fn remove_one(&self, vip: &Vip) -> Result<bool, VipError> {
        vip.check()?;
        let Some(index) = self.link_index(vip)? else {
            return Ok(false);
        };
        let message = address_message(vip, index);
        match self.request(RouteNetlinkMessage::DelAddress(message), 0) {
            Ok(()) => Ok(true),
            Err(e)
                if matches!(
                    e.errno(),
                    Some(libc::EADDRNOTAVAIL | libc::ENOENT | libc::ENODEV)
                ) =>
            {
                Ok(false)
            }
            Err(source) => Err(VipError::Request {
                op: "remove",
                vip: vip.to_string(),
                source,
            }),
        }
    }

    /// One request on this manager's own socket, answered before it returns.
    fn request(&self, message: RouteNetlinkMessage, flags: u16) -> Result<(), RtnlError> {
        self.socket().acknowledged(message, flags)
    }

    /// The index of `vip`'s interface, `None` if there is no such interface.
    fn link_index(&self, vip: &Vip) -> Result<Option<u32>, VipError> {
        match self.socket().interface_index(&vip.iface) {
            Ok(index) => Ok(Some(index)),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(VipError::Request {
                op: "link lookup",
                vip: vip.to_string(),
                source: RtnlError::Io(e),
            }),
        }
    }

    fn socket(&self) -> std::sync::MutexGuard<'_, RtnlSocket> {
        // A panic elsewhere while the socket was held leaves it as usable as before.
        (self.requests.lock()).unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The address message naming `vip` on interface `index`: its local address (and, for IPv4,
/// its broadcast address) and prefix length.
fn address_message(vip: &Vip, index: u32) -> AddressMessage {
    match vip.addr {
        IpAddr::V4(addr) => AddressMessageBuilder::<Ipv4Addr>::new()
            .index(index)
            .address(addr, vip.prefix_len)
            .build(),
        IpAddr::V6(addr) => AddressMessageBuilder::<Ipv6Addr>::new()
            .index(index)
            .address(addr, vip.prefix_len)
            .build(),
    }
}

/// The errno of a netlink error reply, positive (`EEXIST`, not `-EEXIST`).
pub(crate) fn errno(error: &rtnetlink::Error) -> Option<i32> {
    match error {
        rtnetlink::Error::NetlinkError(message) => message.code.map(|code| code.get().abs()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_checked() {
        let vip = Vip::new(IpAddr::from([198, 51, 100, 100]), 24, "eth0");
        assert!(vip.clone().check().is_ok());
        assert!(vip.clone().with_label("eth0:vip").check().is_ok());
        assert!(vip.clone().with_label("eth1:vip").check().is_err());
        assert!(vip.with_label("eth0:a-very-long-label").check().is_err());
        let v6 = Vip::new("2001:db8::100".parse().expect("literal"), 64, "eth0");
        assert!(v6.with_label("eth0:x").check().is_err());
    }

    #[test]
    fn prefix_lengths_are_checked() {
        assert!(
            Vip::new(IpAddr::from([198, 51, 100, 100]), 33, "eth0")
                .check()
                .is_err()
        );
        assert!(
            Vip::new("2001:db8::1".parse().expect("literal"), 128, "eth0")
                .check()
                .is_ok()
        );
        assert!(
            Vip::new("2001:db8::1".parse().expect("literal"), 129, "eth0")
                .check()
                .is_err()
        );
    }

    #[test]
    fn display_names_everything() {
        let vip = Vip::new(IpAddr::from([198, 51, 100, 100]), 24, "eth0").with_label("eth0:v");
        assert_eq!(vip.to_string(), "198.51.100.100/24 dev eth0 label eth0:v");
    }
}
