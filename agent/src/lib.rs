//! hav-agent: drives the sans-IO `hav-vrrp` core with real sockets, netlink and trackers.

pub mod control;
pub mod daemon;
pub mod exec_command;
pub mod hooks;
pub mod lb;
pub mod net;
pub mod notify;
mod small_hash;
mod sys;
pub mod telemetry;
pub mod track;
