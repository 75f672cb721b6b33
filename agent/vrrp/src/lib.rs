//! `hav-vrrp`: a sans-IO VRRP core (RFC 3768 for v2, RFC 5798 and RFC 9568 for v3).
//!
//! The core does no IO and reads no clock. Its driver passes `now` and what it received in, and
//! takes actions out (send an advert, add or remove VIPs, announce them, report a state change).
//! Nothing here panics on input from the network: every malformed packet is a typed error that
//! maps to an RFC statistics counter.

pub mod engine;
#[cfg(feature = "sim")]
pub mod sim;
pub mod stats;
pub mod types;
pub mod wire;

pub use stats::{Counter, Counters};
pub use types::{AdvertInterval, Auth, Family, Priority, V3Checksum, Version, VrId};
pub use wire::{Advertisement, DecodeError, Received, RecvMeta, decode};
