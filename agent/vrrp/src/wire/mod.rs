//! VRRP advertisement codec: v2 (RFC 3768) over IPv4, v3 (RFC 5798, RFC 9568) over IPv4 and
//! IPv6.
//!
//! Guarantees:
//! - [`decode`] never panics, for any bytes and any [`RecvMeta`]. It either returns an
//!   [`Advertisement`] that passes [`Advertisement::check_encodable`] and re-encodes to an equal
//!   value, or a [`DecodeError`] naming the first failed check, which maps to the RFC statistics
//!   counter to bump ([`DecodeError::counter`]).
//! - [`Advertisement::emit`] is byte-exact against keepalived 2.2 (see `tests/vectors.rs`).
//! - Checksums are verified, except when built with `cfg(fuzzing)` so that fuzzers get past
//!   them; the checks after the checksum still run.
//!
//! Left to the engine: whether the VRID is configured, the v2 password and auth type match, the
//! interval and address list match the configuration, and unicast peers.

mod checksum;
mod error;
mod packet;
mod repr;

use std::net::IpAddr;

pub use error::DecodeError;
pub use packet::{HEADER_LEN, HOP_LIMIT, IP_PROTOCOL, Packet, TYPE_ADVERTISEMENT};
pub use repr::{Advertisement, EncodeError};

use checksum::Coverage;
use repr::{AUTH_TYPE_IP_AH, AUTH_TYPE_NONE, AUTH_TYPE_SIMPLE_TEXT, coverage, family_of};

use crate::types::{AdvertInterval, Auth, Family, Priority, V3Checksum, Version, VrId};

/// The IPv4 multicast group of VRRP (RFC 5798 section 5.1.1.2).
pub const MULTICAST_V4: std::net::Ipv4Addr = std::net::Ipv4Addr::new(224, 0, 0, 18);
/// The IPv6 multicast group of VRRP (RFC 5798 section 5.1.2.2).
pub const MULTICAST_V6: std::net::Ipv6Addr =
    std::net::Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12);

/// What the IP layer tells about a received VRRP payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RecvMeta {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IPv4 TTL or IPv6 hop limit.
    pub hop_limit: u8,
}

/// A decoded advertisement.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Received {
    pub advert: Advertisement,
    /// v3 over IPv4: which checksum form the sender used. `None` for v2 and over IPv6, where
    /// there is only one.
    pub checksum: Option<V3Checksum>,
}

/// Decodes and checks a VRRP payload (the IP payload, without the IP header).
///
/// The checks run in the order of RFC 3768 / RFC 5798 section 7.1: hop limit, IP families,
/// header length, version, type, length against the address count, checksum, VRID, interval,
/// v2 authentication type.
pub fn decode(meta: &RecvMeta, payload: &[u8]) -> Result<Received, DecodeError> {
    decode_into(meta, payload, Vec::new())
}

/// As [`decode`], the addresses collected into `addresses` (cleared first): a receiver that
/// hands back the previous advert's list decodes without allocating.
pub fn decode_into(
    meta: &RecvMeta,
    payload: &[u8],
    mut addresses: Vec<IpAddr>,
) -> Result<Received, DecodeError> {
    if meta.hop_limit != HOP_LIMIT {
        return Err(DecodeError::HopLimit {
            hop_limit: meta.hop_limit,
        });
    }
    let family = match (family_of(meta.src), family_of(meta.dst)) {
        (src, dst) if src == dst => src,
        _ => {
            return Err(DecodeError::MixedFamilies {
                src: meta.src,
                dst: meta.dst,
            });
        }
    };
    let packet = Packet::new_checked(payload)?;
    let version = match (packet.version(), family) {
        (2, Family::V4) => Version::V2,
        (2, Family::V6) => return Err(DecodeError::V2OverIpv6),
        (3, _) => Version::V3,
        (version, _) => return Err(DecodeError::UnknownVersion { version }),
    };
    if packet.msg_type() != TYPE_ADVERTISEMENT {
        return Err(DecodeError::NotAdvertisement {
            msg_type: packet.msg_type(),
        });
    }
    check_length(&packet, version, family)?;
    let checksum = check_checksum(&packet, version, meta)?;
    let vrid = VrId::new(packet.vr_id()).ok_or(DecodeError::ZeroVrId)?;
    let (interval, auth) = match version {
        Version::V2 => (
            AdvertInterval::from_secs(packet.adver_int_secs()),
            v2_auth(&packet)?,
        ),
        Version::V3 => (
            AdvertInterval::from_centis(packet.max_adver_int()),
            Auth::None,
        ),
    };
    let interval = interval.ok_or(DecodeError::ZeroInterval)?;
    addresses.clear();
    let bytes = packet.address_bytes();
    match family {
        Family::V4 => push_addresses::<4>(bytes, &mut addresses),
        Family::V6 => push_addresses::<16>(bytes, &mut addresses),
    }
    let advert = Advertisement {
        version,
        vrid,
        priority: Priority(packet.priority()),
        interval,
        addresses,
        auth,
    };
    Ok(Received { advert, checksum })
}

/// Appends the addresses of `N` octets each in `bytes` (a trailing part is ignored).
fn push_addresses<const N: usize>(bytes: &[u8], addresses: &mut Vec<IpAddr>)
where
    IpAddr: From<[u8; N]>,
{
    for octets in bytes.chunks_exact(N) {
        if let Ok(octets) = <[u8; N]>::try_from(octets) {
            addresses.push(IpAddr::from(octets));
        }
    }
}

/// The VRID of a payload before any check, so that a per-virtual-router counter can be bumped
/// for a packet [`decode`] rejects. `None` if the payload is too short or the VRID is 0.
pub fn peek_vrid(payload: &[u8]) -> Option<VrId> {
    let packet = Packet::new_checked(payload).ok()?;
    VrId::new(packet.vr_id())
}

/// The message must hold exactly its addresses (and v2 authentication data).
fn check_length(
    packet: &Packet<&[u8]>,
    version: Version,
    family: Family,
) -> Result<(), DecodeError> {
    let count = packet.addr_count();
    let auth_len = if version == Version::V2 { 8 } else { 0 };
    let needed = |address_len: usize| HEADER_LEN + usize::from(count) * address_len + auth_len;
    let (own, other, carried, found) = match family {
        Family::V4 => (needed(4), needed(16), "IPv4", "IPv6"),
        Family::V6 => (needed(16), needed(4), "IPv6", "IPv4"),
    };
    let actual = packet.len();
    if actual == own {
        Ok(())
    } else if version == Version::V3 && count > 0 && actual == other {
        Err(DecodeError::AddressFamily {
            count,
            found,
            carried,
        })
    } else {
        Err(DecodeError::LengthMismatch {
            count,
            expected: own,
            actual,
        })
    }
}

/// Verifies the checksum (not under `cfg(fuzzing)`); returns the v3-over-IPv4 form that matched.
fn check_checksum(
    packet: &Packet<&[u8]>,
    version: Version,
    meta: &RecvMeta,
) -> Result<Option<V3Checksum>, DecodeError> {
    let message = packet.as_ref();
    let both_v4 = matches!((meta.src, meta.dst), (IpAddr::V4(_), IpAddr::V4(_)));
    let pseudo = coverage(version, meta.src, meta.dst, V3Checksum::PseudoHeader);
    let (matched, form) = match version {
        Version::V3 if both_v4 => {
            if checksum::verify(message, pseudo) {
                (true, Some(V3Checksum::PseudoHeader))
            } else {
                let plain = checksum::verify(message, Coverage::Message);
                (plain, Some(V3Checksum::NoPseudoHeader))
            }
        }
        _ => (checksum::verify(message, pseudo), None),
    };
    if matched || cfg!(fuzzing) {
        let form = if matched {
            form
        } else {
            form.map(|_| V3Checksum::PseudoHeader)
        };
        return Ok(form);
    }
    Err(DecodeError::Checksum {
        received: packet.checksum(),
        computed: checksum::compute(message, pseudo),
        computed_without_pseudo_header: (version == Version::V3 && both_v4)
            .then(|| checksum::compute(message, Coverage::Message)),
    })
}

fn v2_auth(packet: &Packet<&[u8]>) -> Result<Auth, DecodeError> {
    match packet.auth_type() {
        AUTH_TYPE_NONE => Ok(Auth::None),
        // The length check guarantees the 8 bytes; a missing field reads as zeros regardless.
        AUTH_TYPE_SIMPLE_TEXT => Ok(Auth::SimpleText(packet.auth_data().unwrap_or_default())),
        AUTH_TYPE_IP_AH => Err(DecodeError::AuthHeader),
        auth_type => Err(DecodeError::UnknownAuthType { auth_type }),
    }
}

#[cfg(test)]
mod tests;
