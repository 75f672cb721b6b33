//! Validated protocol values shared by the codec and the state machine.
//!
//! Each type can only hold a value the RFCs allow, so code that has one never re-checks it.

use std::fmt;
use std::time::Duration;

/// Virtual router identifier, 1..=255 (RFC 5798 section 5.2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VrId(u8);

impl VrId {
    /// `None` for 0, which no RFC allows.
    pub const fn new(value: u8) -> Option<Self> {
        if value == 0 { None } else { Some(Self(value)) }
    }

    pub const fn get(self) -> u8 {
        self.0
    }
}

impl fmt::Display for VrId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Router priority (RFC 5798 section 5.2.4). 0 means "the master is resigning", 255 "address
/// owner"; everything else is a backup priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Priority(pub u8);

impl Priority {
    /// Sent by a master that stops being master, so that backups take over after skew time.
    pub const RESIGN: Self = Self(0);
    /// The router owns the virtual addresses.
    pub const OWNER: Self = Self(255);
    /// The RFC's default for a backup.
    pub const DEFAULT: Self = Self(100);
    /// Lowest and highest priority a non-owner can hold after tracking adjustments.
    pub const MIN_BACKUP: Self = Self(1);
    pub const MAX_BACKUP: Self = Self(254);

    pub const fn get(self) -> u8 {
        self.0
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Protocol version of a virtual router.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Version {
    /// RFC 3768: IPv4 only, advert interval in whole seconds, optional simple-text auth.
    V2,
    /// RFC 5798 / RFC 9568: IPv4 and IPv6, advert interval in centiseconds.
    V3,
}

impl Version {
    pub const fn number(self) -> u8 {
        match self {
            Version::V2 => 2,
            Version::V3 => 3,
        }
    }
}

/// Address family of a virtual router (all its addresses share it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    V4,
    V6,
}

/// Advertisement interval, held in centiseconds for both versions.
///
/// v3 carries 12 bits of centiseconds (1..=4095); v2 carries 8 bits of whole seconds (1..=255),
/// stored here as 100..=25500 centiseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AdvertInterval(u16);

impl AdvertInterval {
    /// The RFC default: 1 second.
    pub const DEFAULT: Self = Self(100);

    /// An interval in centiseconds; `None` for 0 or more than 25500 (255 s).
    pub const fn from_centis(centis: u16) -> Option<Self> {
        if centis == 0 || centis > 25500 {
            None
        } else {
            Some(Self(centis))
        }
    }

    /// An interval in whole seconds (v2); `None` for 0.
    pub const fn from_secs(secs: u8) -> Option<Self> {
        if secs == 0 {
            None
        } else {
            Some(Self(secs as u16 * 100))
        }
    }

    pub const fn centis(self) -> u16 {
        self.0
    }

    pub const fn as_duration(self) -> Duration {
        Duration::from_millis(self.0 as u64 * 10)
    }

    /// Whether `version` can carry this interval on the wire.
    pub const fn fits(self, version: Version) -> bool {
        match version {
            Version::V2 => self.0.is_multiple_of(100) && self.0 / 100 <= 255,
            Version::V3 => self.0 <= 4095,
        }
    }
}

impl fmt::Display for AdvertInterval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ms", self.0 as u32 * 10)
    }
}

/// How a VRRPv3-over-IPv4 checksum is computed. Over IPv6 the pseudo-header is always included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum V3Checksum {
    /// Include the IPv4 pseudo-header, as keepalived and FRR do by default (RFC 5798 as written).
    #[default]
    PseudoHeader,
    /// Checksum over the VRRP message alone, as RFC 9568 section 5.2.8 specifies for IPv4.
    NoPseudoHeader,
}

/// VRRPv2 authentication (RFC 3768 section 5.3.6). v3 has none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Auth {
    #[default]
    None,
    /// Type 1: up to 8 octets of clear text, zero-padded.
    SimpleText([u8; 8]),
}
