//! VRRP statistics counters: the RFC 6527 (VRRPv3 MIB) and RFC 2787 (VRRPv2 MIB) statistics,
//! plus two of hav's own.
//!
//! Every counter has a stable snake_case name used as its metric name; names are never reused
//! or renamed. Counters are plain `u64`s that wrap, like the MIB's Counter64.

use std::fmt;

/// One statistic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Counter {
    // Router-wide (RFC 6527 vrrpv3RouterStatistics).
    /// Packets with an invalid VRRP checksum.
    ChecksumErrors,
    /// Packets with an unknown or unsupported version.
    VersionErrors,
    /// Packets for a VRID not configured on this router (or 0).
    VrIdErrors,

    // Per virtual router (RFC 6527 vrrpv3StatisticsTable).
    /// Transitions to master.
    MasterTransitions,
    /// Advertisements received (valid ones, for this virtual router).
    RcvdAdvertisements,
    /// Advertisements whose interval differs from the configured one (v2), or is 0.
    AdvIntervalErrors,
    /// Packets whose IP TTL / hop limit is not 255.
    IpTtlErrors,
    /// Advertisements with priority 0 received (the master resigned).
    RcvdPriorityZero,
    /// Advertisements with priority 0 sent (this router resigned as master).
    SentPriorityZero,
    /// Packets whose type is not advertisement.
    RcvdInvalidType,
    /// Packets whose address list does not match the configured one, or whose addresses are
    /// not of the IP family they came over.
    AddressListErrors,
    /// Packets shorter than the header, or whose length does not match their address count.
    PacketLengthErrors,

    // VRRPv2 authentication (RFC 2787 vrrpRouterStatsTable).
    /// Packets whose authentication data does not match the configured password.
    AuthFailures,
    /// Packets with an unknown authentication type (or the unsupported IP AH, type 2).
    InvalidAuthType,
    /// Packets whose authentication type differs from the configured one.
    AuthTypeMismatch,

    // hav's own.
    /// Unicast advertisements whose source is not a configured peer.
    UnicastSourceNotPeer,
    /// Advertisements sent.
    SentAdvertisements,
}

impl Counter {
    /// Every counter, in declaration order (the order of [`Counters::iter`]).
    pub const ALL: [Counter; 17] = [
        Counter::ChecksumErrors,
        Counter::VersionErrors,
        Counter::VrIdErrors,
        Counter::MasterTransitions,
        Counter::RcvdAdvertisements,
        Counter::AdvIntervalErrors,
        Counter::IpTtlErrors,
        Counter::RcvdPriorityZero,
        Counter::SentPriorityZero,
        Counter::RcvdInvalidType,
        Counter::AddressListErrors,
        Counter::PacketLengthErrors,
        Counter::AuthFailures,
        Counter::InvalidAuthType,
        Counter::AuthTypeMismatch,
        Counter::UnicastSourceNotPeer,
        Counter::SentAdvertisements,
    ];

    /// The stable metric name.
    pub const fn name(self) -> &'static str {
        match self {
            Counter::ChecksumErrors => "checksum_errors",
            Counter::VersionErrors => "version_errors",
            Counter::VrIdErrors => "vrid_errors",
            Counter::MasterTransitions => "master_transitions",
            Counter::RcvdAdvertisements => "rcvd_advertisements",
            Counter::AdvIntervalErrors => "adv_interval_errors",
            Counter::IpTtlErrors => "ip_ttl_errors",
            Counter::RcvdPriorityZero => "rcvd_priority_zero",
            Counter::SentPriorityZero => "sent_priority_zero",
            Counter::RcvdInvalidType => "rcvd_invalid_type",
            Counter::AddressListErrors => "address_list_errors",
            Counter::PacketLengthErrors => "packet_length_errors",
            Counter::AuthFailures => "auth_failures",
            Counter::InvalidAuthType => "invalid_auth_type",
            Counter::AuthTypeMismatch => "auth_type_mismatch",
            Counter::UnicastSourceNotPeer => "unicast_source_not_peer",
            Counter::SentAdvertisements => "sent_advertisements",
        }
    }

    /// Whether the MIB keeps this counter for the whole router rather than per virtual router
    /// (a packet with a bad checksum, version or VRID cannot be attributed to one).
    pub const fn is_router_wide(self) -> bool {
        matches!(
            self,
            Counter::ChecksumErrors | Counter::VersionErrors | Counter::VrIdErrors
        )
    }

    const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Counter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A value for every [`Counter`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    values: [u64; Counter::ALL.len()],
}

impl Counters {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one.
    pub fn bump(&mut self, counter: Counter) {
        self.add(counter, 1);
    }

    /// Adds `n`, wrapping like a Counter64.
    pub fn add(&mut self, counter: Counter, n: u64) {
        let value = &mut self.values[counter.index()];
        *value = value.wrapping_add(n);
    }

    pub fn get(&self, counter: Counter) -> u64 {
        self.values[counter.index()]
    }

    /// Every counter with its value, in [`Counter::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = (Counter, u64)> + '_ {
        Counter::ALL
            .iter()
            .map(|&counter| (counter, self.get(counter)))
    }

    /// Every counter's metric name with its value.
    pub fn named(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.iter().map(|(counter, value)| (counter.name(), value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_lists_every_counter_at_its_index() {
        for (position, counter) in Counter::ALL.iter().enumerate() {
            assert_eq!(counter.index(), position, "{counter:?}");
        }
    }

    #[test]
    fn names_are_unique_snake_case() {
        let mut names: Vec<&str> = Counter::ALL.iter().map(|c| c.name()).collect();
        for name in &names {
            assert!(
                name.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{name}"
            );
        }
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Counter::ALL.len());
    }

    #[test]
    fn bump_and_get_touch_one_counter() {
        let mut counters = Counters::new();
        counters.bump(Counter::ChecksumErrors);
        counters.bump(Counter::ChecksumErrors);
        counters.bump(Counter::SentAdvertisements);
        assert_eq!(counters.get(Counter::ChecksumErrors), 2);
        assert_eq!(counters.get(Counter::SentAdvertisements), 1);
        assert_eq!(counters.iter().map(|(_, v)| v).sum::<u64>(), 3);
        let named: Vec<_> = counters.named().filter(|(_, v)| *v > 0).collect();
        assert_eq!(named, [("checksum_errors", 2), ("sent_advertisements", 1)]);
    }

    #[test]
    fn counters_wrap() {
        let mut counters = Counters::new();
        counters.add(Counter::VrIdErrors, u64::MAX);
        counters.bump(Counter::VrIdErrors);
        assert_eq!(counters.get(Counter::VrIdErrors), 0);
    }

    #[test]
    fn router_wide_counters() {
        let wide: Vec<_> = Counter::ALL
            .into_iter()
            .filter(|c| c.is_router_wide())
            .collect();
        assert_eq!(
            wide,
            [
                Counter::ChecksumErrors,
                Counter::VersionErrors,
                Counter::VrIdErrors
            ]
        );
    }
}
