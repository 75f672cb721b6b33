//! hav-agent: drives the sans-IO `hav-vrrp` core with real sockets, netlink and trackers.
pub mod control;
