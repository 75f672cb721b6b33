//! Gratuitous ARP (IPv4) and unsolicited neighbour advertisements (IPv6) for VIPs.
//!
//! A new master sends these so that hosts and switches on the link move the VIPs to its MAC at
//! once. A gratuitous ARP is an ARP request with sender and target protocol address both the VIP,
//! sender hardware address the interface's MAC and broadcast destination, written as a whole
//! Ethernet frame to an `AF_PACKET` socket (the frame keepalived sends). An unsolicited neighbour
//! advertisement (RFC 4861 §7.2.6) goes to ff02::1 with hop limit 255, the Override flag set, the
//! Solicited flag clear and a target link-layer address option, through an ICMPv6 raw socket (the
//! kernel fills in the checksum) from the VIP itself. One packet per address per call; repeating
//! them is the caller's business.

use std::io::{self, IoSlice};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV6};
use std::os::fd::AsRawFd;

use nix::sys::socket::{ControlMessage, MsgFlags, SockaddrIn6, sendmsg};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::{interface_index_on, register, setsockopt_raw};

/// EtherType of ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// Length of a gratuitous ARP frame (Ethernet header + ARP for IPv4 over Ethernet).
pub const GARP_FRAME_LEN: usize = 14 + 28;
/// ICMPv6 type of a neighbour advertisement.
pub const ICMPV6_NEIGHBOR_ADVERT: u8 = 136;
/// Length of the neighbour advertisement ICMPv6 message we send (with one 8-byte option).
pub const NA_LEN: usize = 24 + 8;
/// The all-nodes multicast address, destination of unsolicited advertisements.
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
const BROADCAST_MAC: [u8; 6] = [0xff; 6];
const NA_FLAG_OVERRIDE: u8 = 0x20;
const NDP_OPTION_TARGET_LINK_LAYER: u8 = 2;
/// `ICMP6_FILTER` from `<netinet/icmp6.h>` (level `IPPROTO_ICMPV6`).
const ICMP6_FILTER: libc::c_int = 1;

/// Errors of the announcer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AnnounceError {
    /// Opening or configuring a socket failed (needs CAP_NET_RAW).
    #[error("cannot open the {what} socket for announcements")]
    Open {
        /// Which socket or option.
        what: &'static str,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// The interface does not exist.
    #[error("interface {iface}: not found")]
    NoSuchInterface {
        /// Interface name.
        iface: String,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// The interface has no Ethernet (6-byte) hardware address.
    #[error("interface {iface}: no Ethernet hardware address")]
    NoHardwareAddress {
        /// Interface name.
        iface: String,
    },
    /// Sending the announcement of one address failed.
    #[error("interface {iface}: announcing {addr} failed")]
    Send {
        /// Interface name.
        iface: String,
        /// The address.
        addr: IpAddr,
        /// Cause.
        #[source]
        source: io::Error,
    },
}

/// Sends gratuitous ARPs and unsolicited neighbour advertisements on any interface.
#[derive(Debug)]
pub struct Announcer {
    packet: AsyncFd<Socket>,
    icmpv6: AsyncFd<Socket>,
}

impl Announcer {
    /// Opens the two send-only sockets in the calling thread's network namespace. Needs
    /// CAP_NET_RAW and a tokio runtime with IO enabled.
    pub fn new() -> Result<Self, AnnounceError> {
        let open = |what| move |source| AnnounceError::Open { what, source };
        // Protocol 0: this socket receives nothing, it only sends whole frames.
        let packet = Socket::new(Domain::PACKET, Type::RAW, Some(Protocol::from(0)))
            .map_err(open("AF_PACKET"))?;
        packet.set_nonblocking(true).map_err(open("AF_PACKET"))?;
        let icmpv6 =
            Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6)).map_err(open("ICMPv6"))?;
        icmpv6.set_nonblocking(true).map_err(open("ICMPv6"))?;
        icmpv6
            .set_multicast_hops_v6(255)
            .map_err(open("IPV6_MULTICAST_HOPS"))?;
        icmpv6
            .set_unicast_hops_v6(255)
            .map_err(open("IPV6_UNICAST_HOPS"))?;
        icmpv6
            .set_multicast_loop_v6(false)
            .map_err(open("IPV6_MULTICAST_LOOP"))?;
        // Block every ICMPv6 type on receive: the socket is send-only and must not fill up.
        let block_all = [u32::MAX; 8];
        setsockopt_raw(&icmpv6, libc::IPPROTO_ICMPV6, ICMP6_FILTER, &block_all)
            .map_err(open("ICMP6_FILTER"))?;
        Ok(Self {
            packet: register(packet, Interest::WRITABLE).map_err(open("AF_PACKET"))?,
            icmpv6: register(icmpv6, Interest::WRITABLE).map_err(open("ICMPv6"))?,
        })
    }

    /// Sends one gratuitous ARP (IPv4) or unsolicited NA (IPv6) per address on `iface`. Every
    /// address is tried; the first failure is returned after all were tried. IPv6 addresses must
    /// be assigned to `iface` (they are the source of their advertisement).
    pub async fn announce(&self, iface: &str, addrs: &[IpAddr]) -> Result<(), AnnounceError> {
        let ifindex = interface_index_on(self.packet.get_ref(), iface).map_err(|source| {
            AnnounceError::NoSuchInterface {
                iface: iface.to_owned(),
                source,
            }
        })?;
        let mac = hardware_address(self.packet.get_ref(), iface).ok_or_else(|| {
            AnnounceError::NoHardwareAddress {
                iface: iface.to_owned(),
            }
        })?;
        let mut first_error = None;
        for &addr in addrs {
            let sent = match addr {
                IpAddr::V4(addr) => self.send_garp(ifindex, mac, addr).await,
                IpAddr::V6(addr) => self.send_na(ifindex, mac, addr).await,
            };
            if let Err(source) = sent {
                first_error.get_or_insert(AnnounceError::Send {
                    iface: iface.to_owned(),
                    addr,
                    source,
                });
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    async fn send_garp(&self, ifindex: u32, mac: [u8; 6], addr: Ipv4Addr) -> io::Result<()> {
        let frame = gratuitous_arp(mac, addr);
        self.packet
            .async_io(Interest::WRITABLE, |socket| {
                send_frame(socket, ifindex, &frame)
            })
            .await
    }

    async fn send_na(&self, ifindex: u32, mac: [u8; 6], addr: Ipv6Addr) -> io::Result<()> {
        let message = unsolicited_na(mac, addr);
        let info = libc::in6_pktinfo {
            ipi6_addr: libc::in6_addr {
                s6_addr: addr.octets(),
            },
            ipi6_ifindex: ifindex,
        };
        let destination = SockaddrIn6::from(SocketAddrV6::new(ALL_NODES, 0, 0, ifindex));
        self.icmpv6
            .async_io(Interest::WRITABLE, |socket| {
                let cmsgs = [ControlMessage::Ipv6PacketInfo(&info)];
                let iov = [IoSlice::new(&message)];
                sendmsg(
                    socket.as_raw_fd(),
                    &iov,
                    &cmsgs,
                    MsgFlags::empty(),
                    Some(&destination),
                )
                .map(drop)
                .map_err(io::Error::from)
            })
            .await
    }
}

/// The Ethernet frame of a gratuitous ARP for `addr` from `mac` (RFC 826 layout, RFC 5227 §3
/// "ARP Announcement" form with target hardware address broadcast, as keepalived sends).
///
/// ```text
///  dst MAC (6) | src MAC (6) | EtherType 0x0806 (2)
///  htype 1 (2) | ptype 0x0800 (2) | hlen 6 | plen 4 | opcode 1 (2)
///  sender MAC (6) | sender IP (4) | target MAC (6) | target IP (4)
/// ```
pub fn gratuitous_arp(mac: [u8; 6], addr: Ipv4Addr) -> [u8; GARP_FRAME_LEN] {
    let mut frame = [0u8; GARP_FRAME_LEN];
    frame[0..6].copy_from_slice(&BROADCAST_MAC);
    frame[6..12].copy_from_slice(&mac);
    frame[12..14].copy_from_slice(&ETHERTYPE_ARP.to_be_bytes());
    frame[14..16].copy_from_slice(&1u16.to_be_bytes()); // Ethernet
    frame[16..18].copy_from_slice(&0x0800u16.to_be_bytes()); // IPv4
    frame[18] = 6;
    frame[19] = 4;
    frame[20..22].copy_from_slice(&1u16.to_be_bytes()); // request
    frame[22..28].copy_from_slice(&mac);
    frame[28..32].copy_from_slice(&addr.octets());
    frame[32..38].copy_from_slice(&BROADCAST_MAC);
    frame[38..42].copy_from_slice(&addr.octets());
    frame
}

/// The ICMPv6 message of an unsolicited neighbour advertisement for `target` (RFC 4861 §4.4),
/// checksum left zero for the kernel.
///
/// ```text
///  type 136 | code 0 | checksum (2)
///  R S O reserved (4)          -- here O=1, R=0, S=0
///  target address (16)
///  option type 2 | length 1 | link-layer address (6)
/// ```
pub fn unsolicited_na(mac: [u8; 6], target: Ipv6Addr) -> [u8; NA_LEN] {
    let mut message = [0u8; NA_LEN];
    message[0] = ICMPV6_NEIGHBOR_ADVERT;
    message[4] = NA_FLAG_OVERRIDE;
    message[8..24].copy_from_slice(&target.octets());
    message[24] = NDP_OPTION_TARGET_LINK_LAYER;
    message[25] = 1; // in units of 8 bytes
    message[26..32].copy_from_slice(&mac);
    message
}

/// The Ethernet (6-byte) hardware address of `iface` in the namespace of `socket`: one
/// `SIOCGIFHWADDR`, so its cost does not grow with the addresses on the host (a takeover of
/// hundreds of instances announces each of them, with hundreds of VIPs on the link).
pub fn hardware_address(socket: &Socket, iface: &str) -> Option<[u8; 6]> {
    let mut request = super::interface_request(iface).ok()?;
    // SAFETY: SIOCGIFHWADDR reads the NUL-terminated name of `request` and writes its
    // `ifru_hwaddr`; `request` is live and exclusively borrowed for the call.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFHWADDR, &mut request) };
    if rc < 0 {
        return None;
    }
    // SAFETY: a successful SIOCGIFHWADDR wrote `ifru_hwaddr`, the member read here.
    let address = unsafe { request.ifr_ifru.ifru_hwaddr };
    // The link types whose hardware address is 6 bytes long.
    if ![libc::ARPHRD_ETHER, libc::ARPHRD_LOOPBACK].contains(&address.sa_family) {
        return None;
    }
    let mut mac = [0u8; 6];
    for (to, from) in mac.iter_mut().zip(address.sa_data) {
        *to = from as u8;
    }
    Some(mac)
}

fn send_frame(socket: &Socket, ifindex: u32, frame: &[u8]) -> io::Result<()> {
    let mut address: libc::sockaddr_ll = unsafe_zeroed_sockaddr_ll();
    address.sll_family = libc::AF_PACKET as libc::sa_family_t;
    address.sll_protocol = ETHERTYPE_ARP.to_be();
    address.sll_ifindex = libc::c_int::try_from(ifindex).unwrap_or(libc::c_int::MAX);
    address.sll_halen = 6;
    address.sll_addr[..6].copy_from_slice(&BROADCAST_MAC);
    let length = libc::socklen_t::try_from(size_of::<libc::sockaddr_ll>())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `frame` and `address` are live for the call, their lengths are passed exactly, and
    // `sockaddr_ll` is the address type of an AF_PACKET socket.
    let sent = unsafe {
        libc::sendto(
            socket.as_raw_fd(),
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&raw const address).cast(),
            length,
        )
    };
    if sent < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn unsafe_zeroed_sockaddr_ll() -> libc::sockaddr_ll {
    // SAFETY: `sockaddr_ll` is a plain C struct of integers and byte arrays; all-zero is valid.
    unsafe { std::mem::zeroed() }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0c];

    /// Frame 3 of /work/shared/pcap/keepalived-v2-adv1-failover: keepalived's GARP for
    /// 198.51.100.100 from 02:00:00:00:00:0c.
    #[test]
    fn garp_matches_keepalived_frame() {
        let expected: [u8; 42] = [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 0x0c, 0x08,
            0x06, // Ethernet
            0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01, // ARP request, IPv4 over Ethernet
            0x02, 0, 0, 0, 0, 0x0c, 198, 51, 100, 100, // sender
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 198, 51, 100, 100, // target
        ];
        assert_eq!(
            gratuitous_arp(MAC, Ipv4Addr::new(198, 51, 100, 100)),
            expected
        );
    }

    #[test]
    fn na_fields() {
        let target: Ipv6Addr = "2001:db8::100".parse().expect("literal");
        let na = unsolicited_na(MAC, target);
        assert_eq!(na[0], 136);
        assert_eq!(na[1], 0);
        assert_eq!(na[4] & 0xe0, 0x20, "O set, R and S clear");
        assert_eq!(&na[8..24], &target.octets());
        assert_eq!(&na[24..32], &[2, 1, 0x02, 0, 0, 0, 0, 0x0c]);
    }
}
