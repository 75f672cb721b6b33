//! Zero-copy view of a VRRP message (the IP payload, without the IP header).
//!
//! [`Packet::new_checked`] guarantees the 8-byte fixed header is present; after it no accessor
//! panics. The variable part (addresses, v2 authentication data) is returned as slices bounded by
//! the buffer, so a short or long buffer yields short or long slices, never a panic. The view does
//! not know the IP family: [`super::decode`] checks the lengths against it.

use super::DecodeError;

/// VRRPv2 message (RFC 3768 section 5.1), carried over IPv4 with protocol number 112.
///
/// ```text
///     0                   1                   2                   3
///     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
///    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
///    |Version| Type  | Virtual Rtr ID|   Priority    | Count IP Addrs|
///    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
///    |   Auth Type   |   Adver Int   |          Checksum             |
///    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
///    |                         IP Address (1)                        |
///    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
///    |                            .                                  |
///    |                            .                                  |
///    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
///    |                         IP Address (n)                        |
///    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
///    |                     Authentication Data (1)                   |
///    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
///    |                     Authentication Data (2)                   |
///    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// ```
///
/// VRRPv3 message (RFC 5798 section 5.1), over IPv4 (protocol 112) or IPv6 (next header 112).
///
/// ```text
///     0                   1                   2                   3
///     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
///    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
///    |Version| Type  | Virtual Rtr ID|   Priority    |Count IPvX Addr|
///    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
///    |(rsvd) |     Max Adver Int     |          Checksum             |
///    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
///    |                                                               |
///    +                                                               +
///    |                       IPvX Address(es)                        |
///    +                                                               +
///    +                                                               +
///    +                                                               +
///    +                                                               +
///    |                                                               |
///    +                                                               +
///    |                                                               |
///    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

/// Byte offsets and sizes of the fields.
pub(crate) mod field {
    use std::ops::Range;

    pub const VER_TYPE: usize = 0;
    pub const VRID: usize = 1;
    pub const PRIORITY: usize = 2;
    pub const COUNT: usize = 3;
    /// v2: Auth Type. v3: 4 reserved bits and the high 4 bits of Max Adver Int.
    pub const AUTH_TYPE: usize = 4;
    /// v2: Adver Int (seconds). v3: the low 8 bits of Max Adver Int.
    pub const ADVER_INT: usize = 5;
    pub const CHECKSUM: Range<usize> = 6..8;
    pub const ADDRESSES: usize = 8;
    /// Length of the v2 trailing authentication data.
    pub const AUTH_DATA_LEN: usize = 8;
}

/// Length of the fixed header shared by v2 and v3.
pub const HEADER_LEN: usize = 8;

/// The only message type defined by either version.
pub const TYPE_ADVERTISEMENT: u8 = 1;

/// IP protocol number (IPv4) and next header (IPv6) of VRRP.
pub const IP_PROTOCOL: u8 = 112;

/// The TTL (IPv4) or hop limit (IPv6) every VRRP packet is sent with and must arrive with.
pub const HOP_LIMIT: u8 = 255;

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking its length; accessors of the fixed header may then panic.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps a buffer after checking it holds the fixed header, so that no accessor panics.
    pub fn new_checked(buffer: T) -> Result<Packet<T>, DecodeError> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks the buffer holds the 8-byte fixed header. Whether the variable part matches the
    /// address count depends on the IP family and is checked by [`super::decode`].
    pub fn check_len(&self) -> Result<(), DecodeError> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            Err(DecodeError::TooShort { len })
        } else {
            Ok(())
        }
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Length of the whole message (the buffer).
    pub fn len(&self) -> usize {
        self.buffer.as_ref().len()
    }

    pub fn is_empty(&self) -> bool {
        self.buffer.as_ref().is_empty()
    }

    /// The 4-bit version field.
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_TYPE] >> 4
    }

    /// The 4-bit type field (1 = advertisement).
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::VER_TYPE] & 0x0f
    }

    /// The raw Virtual Rtr ID (0 is invalid on the wire).
    pub fn vr_id(&self) -> u8 {
        self.buffer.as_ref()[field::VRID]
    }

    pub fn priority(&self) -> u8 {
        self.buffer.as_ref()[field::PRIORITY]
    }

    /// Count IP Addrs (v2) / Count IPvX Addr (v3).
    pub fn addr_count(&self) -> u8 {
        self.buffer.as_ref()[field::COUNT]
    }

    /// v2 only: Auth Type.
    pub fn auth_type(&self) -> u8 {
        self.buffer.as_ref()[field::AUTH_TYPE]
    }

    /// v2 only: Adver Int, in whole seconds.
    pub fn adver_int_secs(&self) -> u8 {
        self.buffer.as_ref()[field::ADVER_INT]
    }

    /// v3 only: the 4 reserved bits (sent as 0, ignored on receipt).
    pub fn reserved(&self) -> u8 {
        self.buffer.as_ref()[field::AUTH_TYPE] >> 4
    }

    /// v3 only: Max Adver Int, 12 bits of centiseconds.
    pub fn max_adver_int(&self) -> u16 {
        let data = self.buffer.as_ref();
        u16::from_be_bytes([data[field::AUTH_TYPE] & 0x0f, data[field::ADVER_INT]])
    }

    pub fn checksum(&self) -> u16 {
        let data = self.buffer.as_ref();
        u16::from_be_bytes([data[field::CHECKSUM.start], data[field::CHECKSUM.start + 1]])
    }

    /// The address bytes after the header: for v2 everything up to the 8 trailing bytes of
    /// authentication data, for v3 everything. Empty when the buffer is shorter than that.
    pub fn address_bytes(&self) -> &[u8] {
        let data = self.buffer.as_ref();
        let end = self.address_end();
        data.get(field::ADDRESSES..end).unwrap_or(&[])
    }

    /// v2 only: the trailing 8 bytes of authentication data, `None` if the buffer cannot hold
    /// them after the header.
    pub fn auth_data(&self) -> Option<[u8; 8]> {
        let data = self.buffer.as_ref();
        if data.len() < HEADER_LEN + field::AUTH_DATA_LEN {
            return None;
        }
        data[data.len() - field::AUTH_DATA_LEN..].try_into().ok()
    }

    /// End of the address list: before the v2 auth data, else the end of the buffer.
    fn address_end(&self) -> usize {
        let len = self.buffer.as_ref().len();
        if self.version() == 2 {
            len.saturating_sub(field::AUTH_DATA_LEN)
        } else {
            len
        }
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets version and type together (they share a byte).
    pub fn set_version_and_type(&mut self, version: u8, msg_type: u8) {
        self.buffer.as_mut()[field::VER_TYPE] = (version << 4) | (msg_type & 0x0f);
    }

    pub fn set_vr_id(&mut self, value: u8) {
        self.buffer.as_mut()[field::VRID] = value;
    }

    pub fn set_priority(&mut self, value: u8) {
        self.buffer.as_mut()[field::PRIORITY] = value;
    }

    pub fn set_addr_count(&mut self, value: u8) {
        self.buffer.as_mut()[field::COUNT] = value;
    }

    /// v2 only.
    pub fn set_auth_type(&mut self, value: u8) {
        self.buffer.as_mut()[field::AUTH_TYPE] = value;
    }

    /// v2 only.
    pub fn set_adver_int_secs(&mut self, value: u8) {
        self.buffer.as_mut()[field::ADVER_INT] = value;
    }

    /// v3 only: writes the 12-bit interval (higher bits dropped) and zeroes the reserved bits.
    pub fn set_max_adver_int(&mut self, centis: u16) {
        let [high, low] = (centis & 0x0fff).to_be_bytes();
        let data = self.buffer.as_mut();
        data[field::AUTH_TYPE] = high;
        data[field::ADVER_INT] = low;
    }

    pub fn set_checksum(&mut self, value: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&value.to_be_bytes());
    }

    /// Mutable form of [`Packet::address_bytes`].
    pub fn address_bytes_mut(&mut self) -> &mut [u8] {
        let end = self.address_end();
        self.buffer
            .as_mut()
            .get_mut(field::ADDRESSES..end)
            .unwrap_or(&mut [])
    }

    /// v2 only: the trailing 8 bytes of authentication data, `None` if the buffer is too short.
    pub fn auth_data_mut(&mut self) -> Option<&mut [u8]> {
        let data = self.buffer.as_mut();
        let len = data.len();
        if len < HEADER_LEN + field::AUTH_DATA_LEN {
            return None;
        }
        Some(&mut data[len - field::AUTH_DATA_LEN..])
    }

    /// The whole message, e.g. to compute its checksum.
    pub fn as_mut_bytes(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}
