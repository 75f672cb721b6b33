//! The contract between the three hav programs: the gRPC services (`hav.v1`) and the config schema
//! that agent, coordinator and havctl share. Nothing here does IO beyond reading a config file.

pub mod config;
pub mod fleet;
pub mod identity;
pub mod transport;
pub mod v1;
