//! The Internet checksum (RFC 1071) as VRRP uses it, with the optional IP pseudo-header.
//!
//! v2 sums the VRRP message alone (RFC 3768 section 5.3.8). v3 over IPv6 adds the IPv6
//! pseudo-header (RFC 5798 section 5.2.8, RFC 8200 section 8.1). v3 over IPv4 is sent both ways
//! in the field: with the IPv4 pseudo-header (RFC 5798 as written, keepalived, FRR) or without
//! (RFC 9568 section 5.2.8), so the receiver accepts either. All functions are total: any slice
//! length, odd included, and any mix of address families.

use std::net::{IpAddr, Ipv6Addr};

use super::packet::{IP_PROTOCOL, field};

/// What a checksum covers besides the VRRP message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Coverage {
    /// The VRRP message alone (v2; v3 over IPv4 without pseudo-header).
    Message,
    /// The message and the pseudo-header of `src`, `dst`, protocol 112 and the message length.
    /// Two IPv4 addresses give the IPv4 pseudo-header, anything else the IPv6 one (an IPv4
    /// address among IPv6 ones is taken in its IPv4-mapped form, so the sum stays defined).
    PseudoHeader { src: IpAddr, dst: IpAddr },
}

/// The checksum to write into `message`, computed as if its checksum field were zero.
pub(crate) fn compute(message: &[u8], coverage: Coverage) -> u16 {
    let field = field::CHECKSUM;
    let head = message.get(..field.start).unwrap_or(message);
    let tail = message.get(field.end..).unwrap_or(&[]);
    // `head` has an even length when the message holds the field, so the two sums join.
    let sum = add(add(pseudo_header_sum(message.len(), coverage), head), tail);
    !fold(sum)
}

/// Whether `message`, checksum field included, sums to all ones.
pub(crate) fn verify(message: &[u8], coverage: Coverage) -> bool {
    fold(add(pseudo_header_sum(message.len(), coverage), message)) == 0xffff
}

fn pseudo_header_sum(message_len: usize, coverage: Coverage) -> u32 {
    let Coverage::PseudoHeader { src, dst } = coverage else {
        return 0;
    };
    match (src, dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            // RFC 791 pseudo-header: source, destination, zero, protocol, length (16 bits).
            let len = (message_len as u16).to_be_bytes();
            let mut header = [0u8; 12];
            header[0..4].copy_from_slice(&src.octets());
            header[4..8].copy_from_slice(&dst.octets());
            header[9] = IP_PROTOCOL;
            header[10..12].copy_from_slice(&len);
            add(0, &header)
        }
        (src, dst) => {
            // RFC 8200 section 8.1: source, destination, length (32 bits), 3 zeros, next header.
            let mut header = [0u8; 40];
            header[0..16].copy_from_slice(&as_v6(src).octets());
            header[16..32].copy_from_slice(&as_v6(dst).octets());
            header[32..36].copy_from_slice(&(message_len as u32).to_be_bytes());
            header[39] = IP_PROTOCOL;
            add(0, &header)
        }
    }
}

fn as_v6(address: IpAddr) -> Ipv6Addr {
    match address {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// Adds `data` as big-endian 16-bit words to `sum`; an odd last byte is padded with zero. The
/// result is `sum` plus the words, modulo 0xffff in ones' complement, in 32 bits.
fn add(sum: u32, data: &[u8]) -> u32 {
    let mut words = data.chunks_exact(2);
    // The words of any slice shorter than 2^48 words (512 TiB) sum in 64 bits without
    // overflow, so the loop has no branch of its own and folds once at the end.
    let mut total = u64::from(sum)
        + (&mut words)
            .map(|word| u64::from(u16::from_be_bytes([word[0], word[1]])))
            .sum::<u64>();
    if let [last] = words.remainder() {
        total += u64::from(*last) << 8;
    }
    while total > u64::from(u32::MAX) {
        total = (total & 0xffff) + (total >> 16);
    }
    total as u32
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example_sums_to_ddf2() {
        // RFC 1071 section 3: the words 0001 f203 f4f5 f6f7 sum to ddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(add(0, &data)), 0xddf2);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(fold(add(0, &[0x12, 0x34, 0x56])), 0x1234 + 0x5600);
    }

    #[test]
    fn computed_checksum_verifies() {
        let mut message = [0x31, 0x33, 0x64, 0x01, 0x00, 0x0a, 0, 0, 198, 51, 100, 100];
        let coverage = Coverage::PseudoHeader {
            src: "198.51.100.12".parse().expect("literal"),
            dst: "224.0.0.18".parse().expect("literal"),
        };
        let sum = compute(&message, coverage);
        // Frame 5 of keepalived-v3-adv0.1-failover.pcap carries 0x355a.
        assert_eq!(sum, 0x355a);
        message[6..8].copy_from_slice(&sum.to_be_bytes());
        assert!(verify(&message, coverage));
        assert!(!verify(&message, Coverage::Message));
    }

    #[test]
    fn long_input_does_not_overflow() {
        let data = vec![0xff; 1 << 20];
        assert_eq!(fold(add(0, &data)), 0xffff);
    }
}
