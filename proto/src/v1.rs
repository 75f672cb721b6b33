//! The generated `hav.v1` messages and services (see `proto/hav/v1/*.proto` for the contract and its
//! evolution rules). Everything here is produced at build time by `protox` + `tonic-prost-build`.

#![allow(clippy::all, missing_docs)]

tonic::include_proto!("hav.v1");

/// The protocol version this build speaks, sent in `Hello` and `Welcome`. Bumped only for a change
/// that an older peer cannot ignore; additive changes (new fields, new oneof arms) keep it.
pub const PROTOCOL_VERSION: u32 = 1;

/// The largest gRPC message either side accepts or sends (4 MiB): a node config or a snapshot is
/// a few kilobytes; anything near this size is a bug or an attack.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;
