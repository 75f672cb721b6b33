//! The high-level form of an advertisement, and its encoding.
//!
//! [`Advertisement::emit`] never panics on any field values given a buffer of
//! [`Advertisement::buffer_len`] bytes. An advertisement that passes
//! [`Advertisement::check_encodable`] is encoded exactly, so decoding the bytes gives it back;
//! one that does not is encoded as closely as the format allows (documented at `emit`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use thiserror::Error;

use super::checksum::{self, Coverage};
use super::packet::{HEADER_LEN, Packet, TYPE_ADVERTISEMENT, field};
use crate::types::{AdvertInterval, Auth, Family, Priority, V3Checksum, Version, VrId};

/// A VRRP advertisement, v2 or v3.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Advertisement {
    pub version: Version,
    pub vrid: VrId,
    pub priority: Priority,
    /// v2 carries whole seconds, v3 centiseconds (up to 4095).
    pub interval: AdvertInterval,
    /// The virtual addresses, all of one family (IPv4 only for v2).
    pub addresses: Vec<IpAddr>,
    /// v2 only; v3 has no authentication and ignores this field.
    pub auth: Auth,
}

/// Why an [`Advertisement`] cannot be encoded exactly.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum EncodeError {
    #[error("virtual addresses mix IPv4 and IPv6")]
    MixedFamilies,
    #[error("VRRPv2 carries IPv4 addresses only")]
    V2WithIpv6,
    #[error("{count} virtual addresses, one advertisement carries at most 255")]
    TooManyAddresses { count: usize },
    #[error("advertisement interval {interval} cannot be carried by VRRP version {version}")]
    IntervalDoesNotFit {
        interval: AdvertInterval,
        version: u8,
    },
}

/// Length of the v2 authentication data that ends every v2 message.
const AUTH_DATA_LEN: usize = field::AUTH_DATA_LEN;

/// v2 authentication types (RFC 3768 section 5.3.6, RFC 2338 section 5.3.6).
pub(crate) const AUTH_TYPE_NONE: u8 = 0;
pub(crate) const AUTH_TYPE_SIMPLE_TEXT: u8 = 1;
pub(crate) const AUTH_TYPE_IP_AH: u8 = 2;

impl Advertisement {
    /// Length of the encoded message.
    pub fn buffer_len(&self) -> usize {
        let addresses_len = match self.family() {
            Family::V4 => 4 * self.carried_v4().count(),
            Family::V6 => 16 * self.carried_v6().count(),
        };
        let auth_len = if self.version == Version::V2 {
            AUTH_DATA_LEN
        } else {
            0
        };
        HEADER_LEN + addresses_len + auth_len
    }

    /// Whether `emit` encodes this advertisement exactly.
    pub fn check_encodable(&self) -> Result<(), EncodeError> {
        if self.version == Version::V2 && self.addresses.iter().any(IpAddr::is_ipv6) {
            return Err(EncodeError::V2WithIpv6);
        }
        let family = self.family();
        if self.addresses.iter().any(|a| family_of(*a) != family) {
            return Err(EncodeError::MixedFamilies);
        }
        if self.addresses.len() > 255 {
            return Err(EncodeError::TooManyAddresses {
                count: self.addresses.len(),
            });
        }
        if !self.interval.fits(self.version) {
            let version = self.version.number();
            return Err(EncodeError::IntervalDoesNotFit {
                interval: self.interval,
                version,
            });
        }
        Ok(())
    }

    /// Writes the message into `buf[..self.buffer_len()]`, checksum included.
    ///
    /// `src` and `dst` are the IP addresses the packet will carry; they enter the checksum of v3
    /// (always over IPv6; over IPv4 when `checksum` is [`V3Checksum::PseudoHeader`]). v2 ignores
    /// them and `checksum`.
    ///
    /// Values [`Advertisement::check_encodable`] rejects are encoded as closely as possible:
    /// the message carries the family of the first address (IPv4 for v2 or no addresses), and
    /// the first 255 addresses of that family; a v2 interval is rounded to whole seconds within
    /// 1..=255 and a v3 one capped at 4095 centiseconds.
    ///
    /// # Panics
    /// If `buf` is shorter than [`Advertisement::buffer_len`] (a bug of the caller, whose buffer
    /// it is; the input never comes from the network).
    pub fn emit(&self, buf: &mut [u8], src: IpAddr, dst: IpAddr, checksum: V3Checksum) {
        let len = self.buffer_len();
        let mut packet = Packet::new_unchecked(&mut buf[..len]);
        packet.set_version_and_type(self.version.number(), TYPE_ADVERTISEMENT);
        packet.set_vr_id(self.vrid.get());
        packet.set_priority(self.priority.get());
        match self.version {
            Version::V2 => {
                let (auth_type, auth_data) = match self.auth {
                    Auth::None => (AUTH_TYPE_NONE, [0; AUTH_DATA_LEN]),
                    Auth::SimpleText(data) => (AUTH_TYPE_SIMPLE_TEXT, data),
                };
                packet.set_auth_type(auth_type);
                packet.set_adver_int_secs(interval_secs(self.interval));
                if let Some(field) = packet.auth_data_mut() {
                    field.copy_from_slice(&auth_data);
                }
            }
            Version::V3 => packet.set_max_adver_int(self.interval.centis().min(0x0fff)),
        }
        let count = match self.family() {
            Family::V4 => copy_addresses(packet.address_bytes_mut(), self.carried_v4()),
            Family::V6 => copy_addresses(packet.address_bytes_mut(), self.carried_v6()),
        };
        packet.set_addr_count(count);
        packet.set_checksum(0);
        let coverage = coverage(self.version, src, dst, checksum);
        let sum = checksum::compute(packet.as_ref(), coverage);
        packet.set_checksum(sum);
    }

    /// The encoded message in a new buffer (see [`Advertisement::emit`]).
    pub fn to_bytes(&self, src: IpAddr, dst: IpAddr, checksum: V3Checksum) -> Vec<u8> {
        let mut buf = vec![0; self.buffer_len()];
        self.emit(&mut buf, src, dst, checksum);
        buf
    }

    /// The family the message carries: that of the first address, IPv4 for v2 or none.
    fn family(&self) -> Family {
        match (self.version, self.addresses.first()) {
            (Version::V3, Some(IpAddr::V6(_))) => Family::V6,
            _ => Family::V4,
        }
    }

    fn carried_v4(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        let v4 = self.addresses.iter().filter_map(|a| match a {
            IpAddr::V4(v4) => Some(*v4),
            IpAddr::V6(_) => None,
        });
        v4.take(255)
    }

    fn carried_v6(&self) -> impl Iterator<Item = Ipv6Addr> + '_ {
        let v6 = self.addresses.iter().filter_map(|a| match a {
            IpAddr::V6(v6) => Some(*v6),
            IpAddr::V4(_) => None,
        });
        v6.take(255)
    }
}

/// What the checksum of a `version` message sent from `src` to `dst` covers.
pub(crate) fn coverage(version: Version, src: IpAddr, dst: IpAddr, mode: V3Checksum) -> Coverage {
    match (version, src, dst, mode) {
        (Version::V2, ..) => Coverage::Message,
        (Version::V3, IpAddr::V4(_), IpAddr::V4(_), V3Checksum::NoPseudoHeader) => {
            Coverage::Message
        }
        (Version::V3, ..) => Coverage::PseudoHeader { src, dst },
    }
}

pub(crate) fn family_of(address: IpAddr) -> Family {
    match address {
        IpAddr::V4(_) => Family::V4,
        IpAddr::V6(_) => Family::V6,
    }
}

/// The v2 Adver Int: whole seconds, rounded, within 1..=255.
fn interval_secs(interval: AdvertInterval) -> u8 {
    let secs = (interval.centis() + 50) / 100;
    secs.clamp(1, 255) as u8
}

/// Writes octets of `addresses` into `out` while they fit; returns how many were written.
fn copy_addresses<A, const N: usize>(out: &mut [u8], addresses: impl Iterator<Item = A>) -> u8
where
    A: Octets<N>,
{
    let mut count = 0u8;
    for (slot, address) in out.chunks_exact_mut(N).zip(addresses) {
        slot.copy_from_slice(&address.octets_array());
        count = count.saturating_add(1);
    }
    count
}

trait Octets<const N: usize> {
    fn octets_array(&self) -> [u8; N];
}

impl Octets<4> for Ipv4Addr {
    fn octets_array(&self) -> [u8; 4] {
        self.octets()
    }
}

impl Octets<16> for Ipv6Addr {
    fn octets_array(&self) -> [u8; 16] {
        self.octets()
    }
}
