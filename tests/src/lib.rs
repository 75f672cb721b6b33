//! Shared harness for the cross-process tests: network namespaces named with a per-run prefix,
//! bridges and veths inside them, and processes started there; everything removed on drop.
//!
//! - [`netns`]: named namespaces, processes in them, netlink address waits, stale sweeps.
//! - [`topology`]: LANs (a bridge in a switch namespace) and hosts attached to them.
//! - [`probe`]: a client that polls a VIP over HTTP and measures the failover outage.
//! - [`keepalived`]: keepalived config generation and a runner in a namespace.
//! - [`bench`]: the failover benchmark (contenders, scenarios, figures).

pub mod bench;
pub mod keepalived;
pub mod netns;
pub mod probe;
pub mod topology;
