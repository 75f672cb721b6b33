//! Classic BPF programs that sort one advert's repeats from every other datagram a VRRP socket
//! receives, so that the kernel can hold a settled master's repeats on a socket nobody waits on
//! while everything else still wakes the agent at once.
//!
//! A [`Template`] is an advert as received: its IP source, destination and hop limit, and its
//! VRRP payload. A datagram matches it when those are the same, byte for byte, and nothing else
//! is in the IP packet (no IPv4 options, no IPv6 extension header); the fields that change from
//! one packet to the next (IPv4 identification and checksum, TOS, IPv6 traffic class and flow
//! label) are not compared, and the engine compares none of them either. So a match is always
//! the same advert for the engine, never a different one. [`Program::only`] accepts the matches
//! and drops the rest; [`Program::all_but`] does the opposite; on two sockets of one interface
//! they split the traffic without a datagram reaching both or neither.
//!
//! The programs read the packet relative to its network header (`SKF_NET_OFF`), which raw
//! sockets of both families have, whatever their data pointer.

use std::io;
use std::net::IpAddr;
use std::os::fd::AsRawFd;

use hav_vrrp::wire::RecvMeta;

use super::socket::VRRP_PROTOCOL;

/// An advert as received, the pattern of a [`Program`].
#[derive(Debug, Clone, Copy)]
pub struct Template<'a> {
    pub meta: &'a RecvMeta,
    /// The VRRP payload.
    pub payload: &'a [u8],
}

/// A classic BPF socket filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program(Vec<libc::sock_filter>);

/// The comparisons a program is allowed: each is a load and a conditional jump whose false
/// branch must reach the program's end within the 255 instructions a classic jump can skip.
const MAX_CHECKS: usize = 120;

/// What `ret` keeps of an accepted datagram: all of it.
const KEEP_ALL: u32 = u32::MAX;

const LD_ABS_W: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const LD_ABS_H: u16 = (libc::BPF_LD | libc::BPF_H | libc::BPF_ABS) as u16;
const LD_ABS_B: u16 = (libc::BPF_LD | libc::BPF_B | libc::BPF_ABS) as u16;
const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

/// One comparison: the `code` load at `offset` from the network header must give `value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Check {
    code: u16,
    offset: u32,
    value: u32,
}

impl Program {
    /// Accepts every datagram (a socket without a filter behaves the same).
    pub fn accept_all() -> Self {
        Self(vec![ret(KEEP_ALL)])
    }

    /// Drops every datagram.
    pub fn reject_all() -> Self {
        Self(vec![ret(0)])
    }

    /// Accepts the datagrams that match `template`, and nothing else; `None` if the template
    /// is too long to be compared in one program.
    pub fn only(template: Template<'_>) -> Option<Self> {
        Some(Self::build(&checks(template)?, KEEP_ALL, 0))
    }

    /// Accepts every datagram but those that match `template`; `None` as for [`Program::only`].
    pub fn all_but(template: Template<'_>) -> Option<Self> {
        Some(Self::build(&checks(template)?, 0, KEEP_ALL))
    }

    /// The comparisons in order, then the verdict on a match, then the one on a miss, where
    /// every failed comparison jumps.
    fn build(checks: &[Check], on_match: u32, on_miss: u32) -> Self {
        let count = checks.len();
        let mut code = Vec::with_capacity(2 * count + 2);
        for (index, check) in checks.iter().enumerate() {
            // From the jump at 2 * index + 1 to the miss at 2 * count + 1.
            let to_miss = u8::try_from(2 * (count - index) - 1).unwrap_or(u8::MAX);
            code.push(statement(check.code, check.offset));
            code.push(libc::sock_filter {
                code: JEQ_K,
                jt: 0,
                jf: to_miss,
                k: check.value,
            });
        }
        code.push(ret(on_match));
        code.push(ret(on_miss));
        Self(code)
    }

    /// Replaces the filter of the socket `fd` with this program (`SO_ATTACH_FILTER`). The
    /// kernel swaps filters atomically: each datagram meets the old one or the new one.
    pub fn attach(&self, socket: &impl AsRawFd) -> io::Result<()> {
        let len = u16::try_from(self.0.len()).map_err(|_| io::ErrorKind::InvalidInput)?;
        let program = libc::sock_fprog {
            len,
            filter: self.0.as_ptr().cast_mut(),
        };
        super::setsockopt_raw(socket, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &program)
    }
}

fn statement(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn ret(k: u32) -> libc::sock_filter {
    statement(RET_K, k)
}

/// The comparisons that make a datagram `template`'s repeat; `None` if the addresses are of two
/// families or there are more than [`MAX_CHECKS`].
fn checks(template: Template<'_>) -> Option<Vec<Check>> {
    let Template { meta, payload } = template;
    let protocol = u32::from(VRRP_PROTOCOL as u8);
    let hop_limit = u32::from(meta.hop_limit);
    let mut checks = Vec::new();
    let payload_at = match (meta.src, meta.dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            let total = u32::try_from(20 + payload.len())
                .ok()
                .filter(|t| *t <= 0xffff)?;
            // Version 4, a header of five words: no options.
            checks.push(check(LD_ABS_B, 0, 0x45));
            checks.push(check(LD_ABS_H, 2, total));
            checks.push(check(LD_ABS_H, 8, hop_limit << 8 | protocol));
            checks.push(check(LD_ABS_W, 12, u32::from(src)));
            checks.push(check(LD_ABS_W, 16, u32::from(dst)));
            20
        }
        (IpAddr::V6(src), IpAddr::V6(dst)) => {
            let length = u32::try_from(payload.len()).ok().filter(|l| *l <= 0xffff)?;
            checks.push(check(LD_ABS_H, 4, length));
            // VRRP as the next header: no extension header.
            checks.push(check(LD_ABS_H, 6, protocol << 8 | hop_limit));
            words(&src.octets(), 8, &mut checks);
            words(&dst.octets(), 24, &mut checks);
            40
        }
        _ => return None,
    };
    words(payload, payload_at, &mut checks);
    (checks.len() <= MAX_CHECKS).then_some(checks)
}

/// Comparisons of `bytes` at `offset`: whole words, then a half word and a byte for the rest.
fn words(bytes: &[u8], offset: u32, checks: &mut Vec<Check>) {
    let mut at = offset;
    let mut chunks = bytes.chunks_exact(4);
    for word in &mut chunks {
        checks.push(check(
            LD_ABS_W,
            at,
            u32::from_be_bytes([word[0], word[1], word[2], word[3]]),
        ));
        at += 4;
    }
    let rest = chunks.remainder();
    if let [first, second, ..] = rest {
        checks.push(check(
            LD_ABS_H,
            at,
            u32::from(u16::from_be_bytes([*first, *second])),
        ));
        at += 2;
    }
    if rest.len() % 2 == 1
        && let Some(last) = rest.last()
    {
        checks.push(check(LD_ABS_B, at, u32::from(*last)));
    }
}

/// A comparison at `offset` bytes from the network header.
fn check(code: u16, offset: u32, value: u32) -> Check {
    Check {
        code,
        // Negative offsets from SKF_NET_OFF address the network header; the kernel takes `k`
        // as a signed 32-bit value.
        offset: (libc::SKF_NET_OFF as u32).wrapping_add(offset),
        value,
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    fn meta(src: IpAddr, dst: IpAddr) -> RecvMeta {
        RecvMeta {
            src,
            dst,
            hop_limit: 255,
        }
    }

    fn v4() -> RecvMeta {
        meta(
            IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)),
            IpAddr::V4(Ipv4Addr::new(224, 0, 0, 18)),
        )
    }

    #[test]
    fn every_failed_comparison_jumps_to_the_verdict_on_a_miss() {
        for len in [0, 1, 2, 3, 12, 13, 14, 15, 40] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let meta = v4();
            let template = Template {
                meta: &meta,
                payload: &payload,
            };
            let Program(code) = Program::all_but(template).expect("short enough");
            let miss = code.len() - 1;
            assert_eq!(code[miss].k, KEEP_ALL, "a miss wakes the agent");
            assert_eq!(code[miss - 1].k, 0, "a match is held");
            let mut compared = 0;
            for (index, instruction) in code.iter().enumerate() {
                if instruction.code == JEQ_K {
                    assert_eq!(instruction.jt, 0);
                    assert_eq!(index + 1 + usize::from(instruction.jf), miss);
                    compared += 1;
                }
            }
            // Five header fields, then the payload in words, a half word and a byte.
            assert_eq!(compared, 5 + len / 4 + (len % 4) / 2 + len % 2, "len {len}");
        }
    }

    #[test]
    fn payload_bytes_are_compared_in_network_order_at_their_offsets() {
        let meta = v4();
        let payload = [0x31, 0x33, 0x64, 0x01, 0x00, 0x64, 0xab];
        let checks = checks(Template {
            meta: &meta,
            payload: &payload,
        })
        .expect("short");
        let net = |offset: u32| (libc::SKF_NET_OFF as u32).wrapping_add(offset);
        assert_eq!(checks[1], check(LD_ABS_H, 2, 27), "total length");
        assert_eq!(checks[2], check(LD_ABS_H, 8, 0xff70), "TTL and protocol");
        assert_eq!(checks[3].value, 0xc633_6401, "source");
        assert_eq!(checks[5], check(LD_ABS_W, 20, 0x3133_6401));
        assert_eq!(checks[6], check(LD_ABS_H, 24, 0x0064));
        assert_eq!(checks[7], check(LD_ABS_B, 26, 0xab));
        assert_eq!(checks[7].offset, net(26));
    }

    #[test]
    fn ipv6_compares_length_next_header_hop_limit_and_both_addresses() {
        let meta = meta(
            IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1)),
            IpAddr::V6(Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12)),
        );
        let payload = [0x31, 0x33, 0x64, 0x01];
        let checks = checks(Template {
            meta: &meta,
            payload: &payload,
        })
        .expect("short");
        assert_eq!(checks[0], check(LD_ABS_H, 4, 4));
        assert_eq!(checks[1], check(LD_ABS_H, 6, 0x70ff));
        assert_eq!(checks[2], check(LD_ABS_W, 8, 0xfe80_0000));
        assert_eq!(checks[9], check(LD_ABS_W, 36, 0x12));
        assert_eq!(checks[10], check(LD_ABS_W, 40, 0x3133_6401));
        assert_eq!(checks.len(), 11);
    }

    #[test]
    fn a_template_too_long_or_of_two_families_has_no_program() {
        let meta = v4();
        let long = vec![0u8; 4 * MAX_CHECKS];
        let template = Template {
            meta: &meta,
            payload: &long,
        };
        assert_eq!(Program::only(template), None);
        let mixed = RecvMeta {
            dst: IpAddr::V6(Ipv6Addr::LOCALHOST),
            ..v4()
        };
        let template = Template {
            meta: &mixed,
            payload: &[1, 2, 3, 4],
        };
        assert_eq!(Program::all_but(template), None);
    }
}
