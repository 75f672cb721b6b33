//! The contract between the three hav programs: the gRPC services (`hav.v1`) and the config schema
//! that agent, coordinator and havctl share. Nothing here does IO beyond reading a config file,
//! dialling with mTLS ([`transport`]), serving `GET /metrics` ([`metrics`]) and telling systemd
//! how they are ([`sd_notify`]), which both daemons do alike, as they log alike (`logging`,
//! feature `logging`: their flags, text, JSON, journald).

pub mod codec;
pub mod config;
pub mod errors;
pub mod fleet;
pub mod identity;
#[cfg(feature = "logging")]
pub mod logging;
pub mod metrics;
pub mod sd_notify;
pub mod transport;
pub mod v1;
