//! Gratuitous ARP and unsolicited NA, captured on the far end of a veth pair (needs root).
// A failed unwrap is a failed test here.
#![allow(clippy::unwrap_used)]

mod net_support;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, OwnedFd};

use hav_agent::net::announce::hardware_address;
use hav_agent::net::{Announcer, Vip, VipManager};
use net_support::*;
use nix::sys::socket::{
    AddressFamily, LinkAddr, SockFlag, SockProtocol, SockType, recvfrom, setsockopt, socket,
    sockopt,
};
use nix::sys::time::TimeVal;
use socket2::{Domain, Protocol, Socket, Type};

const VIP_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 100);
const VIP_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100);

/// An `AF_PACKET` capture socket opened in namespace B (all protocols), with the lab's timeout as
/// receive timeout.
fn capture(lab: &Lab) -> OwnedFd {
    lab.in_b(|| {
        let fd = socket(
            AddressFamily::Packet,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::EthAll,
        )
        .unwrap();
        let timeout = TimeVal::new(TIMEOUT.as_secs() as i64, 0);
        setsockopt(&fd, sockopt::ReceiveTimeout, &timeout).unwrap();
        fd
    })
}

/// Frames captured on `ifindex` until `wanted` accepts one (receive timeout = test failure).
async fn first_frame(
    fd: OwnedFd,
    ifindex: u32,
    wanted: impl Fn(&[u8]) -> bool + Send + 'static,
) -> Vec<u8> {
    tokio::task::spawn_blocking(move || {
        let mut buf = [0u8; 2048];
        loop {
            let (len, from) = recvfrom::<LinkAddr>(fd.as_raw_fd(), &mut buf)
                .expect("no matching frame before the timeout");
            let on_link = from.is_some_and(|a| a.ifindex() == ifindex as usize);
            if on_link && wanted(&buf[..len]) {
                return buf[..len].to_vec();
            }
        }
    })
    .await
    .unwrap()
}

fn ethertype(frame: &[u8]) -> u16 {
    u16::from_be_bytes([frame[12], frame[13]])
}

#[test]
fn gratuitous_arp_decoded_field_by_field() {
    run(|lab| async move {
        let mac = lab.mac_a(IFACE_A).await;
        let index_b = link_index(&lab.netlink_b, IFACE_B).await;
        let capture = capture(&lab);
        let frame = first_frame(capture, index_b, |f| {
            f.len() >= 42 && ethertype(f) == 0x0806
        });

        let announcer = Announcer::new().unwrap();
        announcer
            .announce(IFACE_A, &[IpAddr::V4(VIP_V4)])
            .await
            .unwrap();
        let frame = tokio::time::timeout(TIMEOUT, frame).await.unwrap();

        assert_eq!(frame[0..6], [0xff; 6], "Ethernet destination: broadcast");
        assert_eq!(frame[6..12], mac, "Ethernet source: the interface's MAC");
        assert_eq!(
            u16::from_be_bytes([frame[14], frame[15]]),
            1,
            "hardware type Ethernet"
        );
        assert_eq!(
            u16::from_be_bytes([frame[16], frame[17]]),
            0x0800,
            "protocol type IPv4"
        );
        assert_eq!((frame[18], frame[19]), (6, 4), "address sizes");
        assert_eq!(
            u16::from_be_bytes([frame[20], frame[21]]),
            1,
            "opcode request"
        );
        assert_eq!(frame[22..28], mac, "sender MAC");
        assert_eq!(frame[28..32], VIP_V4.octets(), "sender IP");
        assert_eq!(frame[32..38], [0xff; 6], "target MAC (as keepalived)");
        assert_eq!(frame[38..42], VIP_V4.octets(), "target IP");
    });
}

#[test]
fn unsolicited_na_decoded_field_by_field() {
    run(|lab| async move {
        let mac = lab.mac_a(IFACE_A).await;
        let index_b = link_index(&lab.netlink_b, IFACE_B).await;
        VipManager::new()
            .unwrap()
            .add(&[Vip::new(IpAddr::V6(VIP_V6), 64, IFACE_A)])
            .await
            .unwrap();
        let capture = capture(&lab);
        let is_na = |f: &[u8]| {
            f.len() >= 14 + 40 + 32 && ethertype(f) == 0x86dd && f[20] == 58 && f[54] == 136
        };
        let frame = first_frame(capture, index_b, is_na);

        let announcer = Announcer::new().unwrap();
        announcer
            .announce(IFACE_A, &[IpAddr::V6(VIP_V6)])
            .await
            .unwrap();
        let frame = tokio::time::timeout(TIMEOUT, frame).await.unwrap();

        assert_eq!(
            frame[0..6],
            [0x33, 0x33, 0, 0, 0, 1],
            "Ethernet destination: all-nodes"
        );
        assert_eq!(frame[6..12], mac);
        let ip = &frame[14..54];
        assert_eq!(
            u16::from_be_bytes([ip[4], ip[5]]),
            32,
            "IPv6 payload length"
        );
        assert_eq!(ip[7], 255, "hop limit");
        assert_eq!(ip[8..24], VIP_V6.octets(), "source: the VIP");
        assert_eq!(
            ip[24..40],
            Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1).octets()
        );
        let na = &frame[54..86];
        assert_eq!((na[0], na[1]), (136, 0), "type, code");
        assert_eq!(na[4] & 0x80, 0, "Router flag clear");
        assert_eq!(na[4] & 0x40, 0, "Solicited flag clear");
        assert_eq!(na[4] & 0x20, 0x20, "Override flag set");
        assert_eq!(na[8..24], VIP_V6.octets(), "target");
        assert_eq!(
            (na[24], na[25]),
            (2, 1),
            "target link-layer address option, 8 bytes"
        );
        assert_eq!(na[26..32], mac, "option: the interface's MAC");
        assert_eq!(
            icmpv6_checksum(&ip[8..24], &ip[24..40], na),
            0,
            "kernel-filled checksum"
        );
    });
}

#[test]
fn several_addresses_one_packet_each() {
    run(|lab| async move {
        let index_b = link_index(&lab.netlink_b, IFACE_B).await;
        let second = Ipv4Addr::new(198, 51, 100, 101);
        let capture = capture(&lab);
        let frames = tokio::task::spawn_blocking(move || {
            let mut seen = Vec::new();
            let mut buf = [0u8; 2048];
            while seen.len() < 2 {
                let (len, from) = recvfrom::<LinkAddr>(capture.as_raw_fd(), &mut buf).unwrap();
                let frame = &buf[..len];
                if from.is_some_and(|a| a.ifindex() == index_b as usize)
                    && len >= 42
                    && ethertype(frame) == 0x0806
                {
                    seen.push(Ipv4Addr::new(frame[28], frame[29], frame[30], frame[31]));
                }
            }
            seen
        });
        let announcer = Announcer::new().unwrap();
        announcer
            .announce(IFACE_A, &[IpAddr::V4(VIP_V4), IpAddr::V4(second)])
            .await
            .unwrap();
        let seen = tokio::time::timeout(TIMEOUT, frames)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(seen, vec![VIP_V4, second]);
    });
}

#[test]
fn the_hardware_address_is_the_interfaces_mac_whatever_the_addresses_on_the_host() {
    run(|lab| async move {
        let mac = lab.mac_a(IFACE_A).await;
        // Hundreds of addresses on the link, as on a node mastering hundreds of instances.
        let vips: Vec<Vip> = (1..=200u8)
            .map(|host| Vip::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, host)), 32, IFACE_A))
            .collect();
        VipManager::new().unwrap().add(&vips).await.unwrap();
        let socket = Socket::new(Domain::PACKET, Type::RAW, Some(Protocol::from(0))).unwrap();
        assert_eq!(hardware_address(&socket, IFACE_A), Some(mac));
        assert_eq!(hardware_address(&socket, "hvnone"), None);
        assert_eq!(hardware_address(&socket, "a-name-past-ifnamsiz"), None);
    });
}

#[test]
fn unknown_interface_is_an_error() {
    run(|_lab| async move {
        let announcer = Announcer::new().unwrap();
        let error = announcer
            .announce("hvnone", &[IpAddr::V4(VIP_V4)])
            .await
            .unwrap_err();
        assert!(error.to_string().contains("hvnone"), "{error}");
    });
}

/// The ones' complement sum over the IPv6 pseudo-header and the message: 0 if the checksum in
/// the message is right (RFC 4443 §2.3).
fn icmpv6_checksum(src: &[u8], dst: &[u8], message: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut add = |bytes: &[u8]| {
        for pair in bytes.chunks(2) {
            let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
            sum += u32::from(word);
        }
    };
    add(src);
    add(dst);
    add(&(message.len() as u32).to_be_bytes());
    add(&[0, 0, 0, 58]);
    add(message);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}
