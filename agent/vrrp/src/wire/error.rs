//! Why a received packet was dropped.
//!
//! Each check of the receive path (RFC 3768 section 7.1, RFC 5798 section 7.1) has its own
//! variant, and each variant maps to the RFC statistics counter it increments.

use std::net::IpAddr;

use thiserror::Error;

use crate::stats::Counter;

/// A received VRRP packet failed a check and is dropped.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// RFC 3768 / RFC 5798 section 7.1: the packet must not have crossed a router.
    #[error(
        "IP TTL / hop limit is {hop_limit}, VRRP requires 255 (the packet was routed, or forged)"
    )]
    HopLimit { hop_limit: u8 },

    /// The driver reported an IPv4 source with an IPv6 destination or the reverse.
    #[error("source {src} and destination {dst} are of different IP families")]
    MixedFamilies { src: IpAddr, dst: IpAddr },

    #[error("packet is {len} bytes, shorter than the 8-byte VRRP header")]
    TooShort { len: usize },

    #[error("VRRP version {version} is not supported (hav speaks versions 2 and 3)")]
    UnknownVersion { version: u8 },

    #[error("VRRP version 2 received over IPv6 (RFC 3768 defines version 2 for IPv4 only)")]
    V2OverIpv6,

    #[error("VRRP packet type {msg_type} is not an advertisement (type 1)")]
    NotAdvertisement { msg_type: u8 },

    #[error("VRID 0 is not a valid virtual router id")]
    ZeroVrId,

    /// The message length does not match the address count in the header.
    #[error("packet is {actual} bytes, but a header announcing {count} addresses needs {expected}")]
    LengthMismatch {
        count: u8,
        expected: usize,
        actual: usize,
    },

    /// v3: the length fits addresses of the other IP family (e.g. IPv6 addresses in IPv4).
    #[error("the {count} addresses are {found}, but the packet came over {carried}")]
    AddressFamily {
        count: u8,
        found: &'static str,
        carried: &'static str,
    },

    #[error("{}", checksum_message(*.received, *.computed, *.computed_without_pseudo_header))]
    Checksum {
        received: u16,
        /// What the sender should have written (with the pseudo-header for v3).
        computed: u16,
        /// v3 over IPv4 only: the RFC 9568 form, also accepted.
        computed_without_pseudo_header: Option<u16>,
    },

    #[error("advertisement interval is 0")]
    ZeroInterval,

    #[error("IP Authentication Header (type 2) is not supported (RFC 3768 removed it)")]
    AuthHeader,

    #[error("unknown VRRPv2 authentication type {auth_type} (known: 0 none, 1 simple text)")]
    UnknownAuthType { auth_type: u8 },
}

impl DecodeError {
    /// The statistics counter (RFC 6527, RFC 2787) this drop increments.
    ///
    /// Router-wide counters (see [`Counter::is_router_wide`]) belong to the whole router; the
    /// others to the virtual router named by the packet's VRID ([`super::peek_vrid`]).
    pub fn counter(&self) -> Counter {
        match self {
            DecodeError::HopLimit { .. } => Counter::IpTtlErrors,
            DecodeError::TooShort { .. } | DecodeError::LengthMismatch { .. } => {
                Counter::PacketLengthErrors
            }
            DecodeError::MixedFamilies { .. } | DecodeError::AddressFamily { .. } => {
                Counter::AddressListErrors
            }
            DecodeError::UnknownVersion { .. } | DecodeError::V2OverIpv6 => Counter::VersionErrors,
            DecodeError::NotAdvertisement { .. } => Counter::RcvdInvalidType,
            DecodeError::ZeroVrId => Counter::VrIdErrors,
            DecodeError::Checksum { .. } => Counter::ChecksumErrors,
            DecodeError::ZeroInterval => Counter::AdvIntervalErrors,
            DecodeError::AuthHeader | DecodeError::UnknownAuthType { .. } => {
                Counter::InvalidAuthType
            }
        }
    }
}

fn checksum_message(received: u16, computed: u16, without: Option<u16>) -> String {
    match without {
        Some(without) => format!(
            "bad checksum {received:#06x}: expected {computed:#06x} with the IPv4 pseudo-header \
             or {without:#06x} without it"
        ),
        None => format!("bad checksum {received:#06x}: expected {computed:#06x}"),
    }
}
