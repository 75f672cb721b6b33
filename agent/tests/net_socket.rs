//! VRRP raw sockets across a real veth pair between two network namespaces (needs root).
// A failed unwrap is a failed test here.
#![allow(clippy::unwrap_used)]

mod net_support;

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr, SocketAddrV4, SocketAddrV6};

use hav_agent::net::batch::Batch;
use hav_agent::net::hold::{Program, Template};
use hav_agent::net::socket::{VRRP_GROUP_V4, VRRP_GROUP_V6, VRRP_PROTOCOL};
use hav_agent::net::{Datagram, Mode, Received, SocketSpec, Stamped, VrrpSocket};
use hav_vrrp::Family;
use net_support::*;
use socket2::{Domain, Protocol, Socket, Type};

/// A hand-made payload shaped like a VRRPv3 advert (the codec is not under test here).
const PAYLOAD: [u8; 20] = [
    0x31, 51, 100, 1, 0x00, 0x64, 0xa5, 0xa5, 198, 51, 100, 100, 1, 2, 3, 4, 5, 6, 7, 8,
];

fn multicast(iface: &str, family: Family, source: Option<IpAddr>) -> SocketSpec {
    SocketSpec {
        interface: iface.to_owned(),
        family,
        mode: Mode::Multicast { source },
    }
}

fn unicast(iface: &str, family: Family, source: IpAddr, peers: &[IpAddr]) -> SocketSpec {
    let peers: BTreeSet<IpAddr> = peers.iter().copied().collect();
    SocketSpec {
        interface: iface.to_owned(),
        family,
        mode: Mode::Unicast { source, peers },
    }
}

/// What `read` finds on `socket` first, waited for with `poll(2)` (the socket belongs to no
/// reactor).
fn wait_for<T>(socket: &VrrpSocket, mut read: impl FnMut() -> Option<T>) -> T {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::BorrowedFd;
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        if let Some(found) = read() {
            return found;
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        assert!(!left.is_zero(), "no datagram in time");
        // SAFETY: the descriptor is the socket's, open for the whole call.
        let fd = unsafe { BorrowedFd::borrow_raw(socket.as_raw_fd()) };
        let timeout = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
        poll(&mut [PollFd::new(fd, PollFlags::POLLIN)], timeout).unwrap();
    }
}

/// The next datagram.
async fn recv(socket: &VrrpSocket, buf: &mut [u8]) -> Received {
    wait_for(socket, || socket.try_recv(buf).unwrap())
}

/// A multicast IPv4 VRRP socket on a's interface, and one on b's in namespace b.
fn multicast_v4_pair(lab: &Lab) -> (VrrpSocket, VrrpSocket) {
    let sender = VrrpSocket::open(&multicast(IFACE_A, Family::V4, None)).unwrap();
    let receiver = lab
        .in_b(|| VrrpSocket::open(&multicast(IFACE_B, Family::V4, None)))
        .unwrap();
    (sender, receiver)
}

fn datagram(received: Received) -> Datagram {
    match received {
        Received::Datagram(datagram) => datagram,
        other => panic!("expected a datagram, got {other:?}"),
    }
}

#[test]
fn multicast_v4_advert_arrives_with_ttl_255_and_cs6() {
    run(|lab| async move {
        let (sender, receiver) = multicast_v4_pair(&lab);
        sender.send_advert(&PAYLOAD).unwrap();

        let mut buf = [0u8; 1500];
        let got = datagram(recv(&receiver, &mut buf).await);
        assert_eq!(got.meta.src, IpAddr::V4(V4_A));
        assert_eq!(got.meta.dst, IpAddr::V4(VRRP_GROUP_V4));
        assert_eq!(got.meta.hop_limit, 255);
        assert_eq!(got.payload(&buf), PAYLOAD);
        assert_eq!(
            buf[1], 0xc0,
            "TOS byte of the received IPv4 header: DSCP CS6"
        );
        assert_eq!(buf[9], 112, "IP protocol");
    });
}

#[test]
fn multicast_v6_advert_arrives_with_hop_limit_255_from_link_local() {
    run(|lab| async move {
        let sender =
            VrrpSocket::open(&multicast(IFACE_A, Family::V6, Some(IpAddr::V6(LL_A)))).unwrap();
        let receiver = lab
            .in_b(|| VrrpSocket::open(&multicast(IFACE_B, Family::V6, None)))
            .unwrap();
        sender.send_advert(&PAYLOAD).unwrap();

        let mut buf = [0u8; 1500];
        let got = datagram(recv(&receiver, &mut buf).await);
        assert_eq!(got.meta.src, IpAddr::V6(LL_A));
        assert_eq!(got.meta.dst, IpAddr::V6(VRRP_GROUP_V6));
        assert_eq!(got.meta.hop_limit, 255);
        assert_eq!(got.payload, 0..PAYLOAD.len());
        assert_eq!(got.payload(&buf), PAYLOAD);
    });
}

#[test]
fn one_socket_serves_several_senders_and_reports_each_datagram() {
    run(|lab| async move {
        let (sender, receiver) = multicast_v4_pair(&lab);
        let mut second = PAYLOAD;
        second[1] = 52; // another VRID on the same socket
        sender.send_advert(&PAYLOAD).unwrap();
        sender.send_advert(&second).unwrap();
        let mut buf = [0u8; 1500];
        let first = datagram(recv(&receiver, &mut buf).await);
        assert_eq!(first.payload(&buf), PAYLOAD);
        let next = datagram(recv(&receiver, &mut buf).await);
        assert_eq!(next.payload(&buf), second);
    });
}

#[test]
fn v4_datagram_sent_with_ttl_64_is_reported_with_hop_limit_64() {
    run(|lab| async move {
        let receiver = lab
            .in_b(|| VrrpSocket::open(&multicast(IFACE_B, Family::V4, None)))
            .unwrap();
        let plain =
            Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(VRRP_PROTOCOL))).unwrap();
        plain.bind_device(Some(IFACE_A.as_bytes())).unwrap();
        plain.set_multicast_if_v4(&V4_A).unwrap();
        plain.set_multicast_ttl_v4(64).unwrap();
        let group = SocketAddr::V4(SocketAddrV4::new(VRRP_GROUP_V4, 0));
        plain.send_to(&PAYLOAD, &group.into()).unwrap();

        let mut buf = [0u8; 1500];
        let got = datagram(recv(&receiver, &mut buf).await);
        assert_eq!(got.meta.hop_limit, 64);
        assert_eq!(got.meta.src, IpAddr::V4(V4_A));
        assert_eq!(got.payload(&buf), PAYLOAD);
    });
}

#[test]
fn v6_datagram_sent_with_hop_limit_64_is_reported_with_hop_limit_64() {
    run(|lab| async move {
        let receiver = lab
            .in_b(|| VrrpSocket::open(&multicast(IFACE_B, Family::V6, None)))
            .unwrap();
        let plain =
            Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::from(VRRP_PROTOCOL))).unwrap();
        let index = link_index(&lab.netlink_a, IFACE_A).await;
        plain
            .bind(&SocketAddr::V6(SocketAddrV6::new(LL_A, 0, 0, index)).into())
            .unwrap();
        plain.set_multicast_if_v6(index).unwrap();
        plain.set_multicast_hops_v6(64).unwrap();
        let group = SocketAddr::V6(SocketAddrV6::new(VRRP_GROUP_V6, 0, 0, index));
        plain.send_to(&PAYLOAD, &group.into()).unwrap();

        let mut buf = [0u8; 1500];
        let got = datagram(recv(&receiver, &mut buf).await);
        assert_eq!(got.meta.hop_limit, 64);
        assert_eq!(got.meta.src, IpAddr::V6(LL_A));
        assert_eq!(got.payload(&buf), PAYLOAD);
    });
}

#[test]
fn unicast_v4_reaches_peers_and_strangers_are_reported() {
    run(|lab| async move {
        let (a, b) = (IpAddr::V4(V4_A), IpAddr::V4(V4_B));
        let stranger = IpAddr::from([198, 51, 100, 9]);
        let sender = VrrpSocket::open(&unicast(IFACE_A, Family::V4, a, &[b])).unwrap();
        let (knows_a, knows_other) = lab.in_b(|| {
            (
                VrrpSocket::open(&unicast(IFACE_B, Family::V4, b, &[a])).unwrap(),
                VrrpSocket::open(&unicast(IFACE_B, Family::V4, b, &[stranger])).unwrap(),
            )
        });
        sender.send_advert(&PAYLOAD).unwrap();

        let mut buf = [0u8; 1500];
        let got = datagram(recv(&knows_a, &mut buf).await);
        assert_eq!(
            (got.meta.src, got.meta.dst, got.meta.hop_limit),
            (a, b, 255)
        );
        assert_eq!(got.payload(&buf), PAYLOAD);
        assert_eq!(
            recv(&knows_other, &mut buf).await,
            Received::UnknownPeer { src: a }
        );
    });
}

#[test]
fn unicast_v6_reaches_every_peer_from_the_configured_source() {
    run(|lab| async move {
        let (a, b, ll_b) = (IpAddr::V6(V6_A), IpAddr::V6(V6_B), IpAddr::V6(LL_B));
        // Two peers on the same node: one copy to each (a global and a link-local address).
        let sender = VrrpSocket::open(&unicast(IFACE_A, Family::V6, a, &[b, ll_b])).unwrap();
        let (receiver, stranger) = lab.in_b(|| {
            (
                VrrpSocket::open(&unicast(IFACE_B, Family::V6, b, &[a])).unwrap(),
                VrrpSocket::open(&unicast(IFACE_B, Family::V6, b, &[IpAddr::V6(LL_A)])).unwrap(),
            )
        });
        sender.send_advert(&PAYLOAD).unwrap();

        let mut buf = [0u8; 1500];
        let mut destinations = BTreeSet::new();
        for _ in 0..2 {
            let got = datagram(recv(&receiver, &mut buf).await);
            assert_eq!((got.meta.src, got.meta.hop_limit), (a, 255));
            assert_eq!(got.payload(&buf), PAYLOAD);
            destinations.insert(got.meta.dst);
        }
        assert_eq!(destinations, BTreeSet::from([b, ll_b]));
        assert_eq!(
            recv(&stranger, &mut buf).await,
            Received::UnknownPeer { src: a }
        );
    });
}

#[test]
fn truncated_datagram_is_reported_malformed() {
    run(|lab| async move {
        let (sender, receiver) = multicast_v4_pair(&lab);
        sender.send_advert(&PAYLOAD).unwrap();
        let mut small = [0u8; 24];
        match recv(&receiver, &mut small).await {
            Received::Malformed { src, .. } => assert_eq!(src, Some(IpAddr::V4(V4_A))),
            other => panic!("expected malformed, got {other:?}"),
        }
    });
}

#[test]
fn open_fails_with_context() {
    run(|_lab| async move {
        let missing = VrrpSocket::open(&multicast("hvnone", Family::V4, None)).unwrap_err();
        assert!(missing.to_string().contains("hvnone"), "{missing}");
        let mismatch =
            VrrpSocket::open(&multicast(IFACE_A, Family::V4, Some(IpAddr::V6(LL_A)))).unwrap_err();
        assert!(mismatch.to_string().contains("fe80::a"), "{mismatch}");
    });
}

#[test]
fn multicast_and_unicast_sockets_on_one_interface_keep_apart() {
    run(|lab| async move {
        let (a, b) = (IpAddr::V4(V4_A), IpAddr::V4(V4_B));
        let multicast_sender = VrrpSocket::open(&multicast(IFACE_A, Family::V4, None)).unwrap();
        let unicast_sender = VrrpSocket::open(&unicast(IFACE_A, Family::V4, a, &[b])).unwrap();
        let (multicast_receiver, unicast_receiver) = lab.in_b(|| {
            (
                VrrpSocket::open(&multicast(IFACE_B, Family::V4, None)).unwrap(),
                VrrpSocket::open(&unicast(IFACE_B, Family::V4, b, &[a])).unwrap(),
            )
        });
        let mut unicast_payload = PAYLOAD;
        unicast_payload[1] = 60;
        multicast_sender.send_advert(&PAYLOAD).unwrap();
        unicast_sender.send_advert(&unicast_payload).unwrap();

        let mut buf = [0u8; 1500];
        let got = datagram(recv(&multicast_receiver, &mut buf).await);
        assert_eq!(got.payload(&buf), PAYLOAD);
        assert_eq!(
            recv(&multicast_receiver, &mut buf).await,
            Received::OtherDestination { src: a, dst: b }
        );
        // The unicast socket never saw the multicast advert: its first datagram is the unicast one.
        let got = datagram(recv(&unicast_receiver, &mut buf).await);
        assert_eq!((got.meta.dst, got.payload(&buf)), (b, &unicast_payload[..]));
    });
}

#[test]
fn the_longest_v4_advert_leaves_whole_and_a_datagram_beyond_the_mtu_is_refused() {
    run(|lab| async move {
        let (sender, receiver) = multicast_v4_pair(&lab);
        // VRRPv2 with 255 addresses and authentication: 8 + 4 × 255 + 8 bytes.
        let longest: Vec<u8> = (0..1036u32).map(|i| (i % 251) as u8).collect();
        sender.send_advert(&longest).unwrap();
        let mut buf = [0u8; 1500];
        let got = datagram(recv(&receiver, &mut buf).await);
        assert_eq!(got.payload(&buf), &longest[..]);

        let error = sender.send_advert(&[0u8; 1481]).unwrap_err();
        let error = hav_proto::errors::chain(&error);
        assert!(error.contains("too long"), "{error}");
    });
}

#[test]
fn sending_to_the_other_family_is_refused() {
    run(|_lab| async move {
        let socket = VrrpSocket::open(&multicast(IFACE_A, Family::V4, None)).unwrap();
        let error = socket.send_to(IpAddr::V6(V6_B), &PAYLOAD).unwrap_err();
        assert!(error.to_string().contains("2001:db8::2"), "{error}");
    });
}

#[test]
fn configured_source_is_used_for_multicast_and_unicast() {
    run(|lab| async move {
        let secondary = IpAddr::from([198, 51, 100, 5]);
        add_address(&lab.netlink_a, IFACE_A, secondary, 24).await;
        let b = IpAddr::V4(V4_B);
        let multicast_sender =
            VrrpSocket::open(&multicast(IFACE_A, Family::V4, Some(secondary))).unwrap();
        let unicast_sender =
            VrrpSocket::open(&unicast(IFACE_A, Family::V4, secondary, &[b])).unwrap();
        let (multicast_receiver, unicast_receiver) = lab.in_b(|| {
            (
                VrrpSocket::open(&multicast(IFACE_B, Family::V4, None)).unwrap(),
                VrrpSocket::open(&unicast(IFACE_B, Family::V4, b, &[secondary])).unwrap(),
            )
        });
        multicast_sender.send_advert(&PAYLOAD).unwrap();
        unicast_sender.send_advert(&PAYLOAD).unwrap();
        let mut buf = [0u8; 1500];
        assert_eq!(
            datagram(recv(&multicast_receiver, &mut buf).await).meta.src,
            secondary
        );
        assert_eq!(
            datagram(recv(&unicast_receiver, &mut buf).await).meta.src,
            secondary
        );
    });
}

/// The next datagram of a holding socket, with its stamp, if one is queued.
fn try_recv_stamped(socket: &VrrpSocket, buf: &mut [u8]) -> Option<Stamped> {
    let mut batch = Batch::default();
    if socket.recv_held(&mut batch, 1).unwrap() == 0 {
        return None;
    }
    socket.take_held(&batch, 0, buf)
}

/// The next datagram of a holding socket, with its stamp.
async fn recv_stamped(socket: &VrrpSocket, buf: &mut [u8]) -> Stamped {
    wait_for(socket, || try_recv_stamped(socket, buf))
}

/// One advert's repeats go to the holding socket, stamped, and nothing else does; released,
/// they wake the VRRP socket again. `send` sends a payload from the other namespace.
async fn repeats_are_held_and_released(
    wake: &VrrpSocket,
    hold: &VrrpSocket,
    send: impl Fn(&[u8]),
    source: IpAddr,
) {
    let mut buf = [0u8; 1500];
    let mut other = PAYLOAD;
    other[4] = 0x50; // another priority
    send(&PAYLOAD);
    let first = datagram(recv(wake, &mut buf).await);
    assert_eq!(first.meta.src, source);
    let template_payload = first.payload(&buf).to_vec();
    let template = Template {
        meta: &first.meta,
        payload: &template_payload,
    };
    wake.set_filter(&Program::all_but(template).unwrap())
        .unwrap();
    hold.set_filter(&Program::only(template).unwrap()).unwrap();

    let before = std::time::SystemTime::now();
    send(&PAYLOAD);
    send(&other);
    // The same sender, the same path: the other advert arrives after the repeat.
    let woke = datagram(recv(wake, &mut buf).await);
    assert_eq!(woke.payload(&buf), other, "the repeat woke the VRRP socket");
    let held = recv_stamped(hold, &mut buf).await;
    let Received::Datagram(held_datagram) = held.received else {
        panic!("held {:?}", held.received);
    };
    assert_eq!(held_datagram.meta, first.meta);
    assert_eq!(held_datagram.payload(&buf), PAYLOAD);
    let arrived = held.arrived.expect("a held datagram is stamped");
    let after = std::time::SystemTime::now();
    assert!(before <= arrived && arrived <= after, "stamped {arrived:?}");
    assert_eq!(held.dropped, None, "nothing dropped");
    assert!(
        try_recv_stamped(hold, &mut buf).is_none(),
        "only the repeat is held"
    );

    hold.set_filter(&Program::reject_all()).unwrap();
    wake.set_filter(&Program::accept_all()).unwrap();
    send(&PAYLOAD);
    send(&other);
    let again = datagram(recv(wake, &mut buf).await);
    assert_eq!(again.payload(&buf), PAYLOAD, "released, the repeat wakes");
    let fence = datagram(recv(wake, &mut buf).await);
    assert_eq!(fence.payload(&buf), other);
    assert!(
        try_recv_stamped(hold, &mut buf).is_none(),
        "released, nothing is held"
    );
}

/// A multicast VRRP socket of `family` in namespace b, and a holding socket of the same spec.
fn wake_and_hold(lab: &Lab, family: Family) -> (VrrpSocket, VrrpSocket) {
    let spec = multicast(IFACE_B, family, None);
    lab.in_b(|| {
        (
            VrrpSocket::open(&spec).unwrap(),
            VrrpSocket::open_holding(&spec).unwrap(),
        )
    })
}

#[test]
fn a_v4_advert_repeated_is_held_stamped_and_anything_else_wakes() {
    run(|lab| async move {
        let sender = VrrpSocket::open(&multicast(IFACE_A, Family::V4, None)).unwrap();
        let (wake, hold) = wake_and_hold(&lab, Family::V4);
        let send = |payload: &[u8]| sender.send_advert(payload).unwrap();
        repeats_are_held_and_released(&wake, &hold, send, IpAddr::V4(V4_A)).await;
    });
}

#[test]
fn a_v6_advert_repeated_is_held_stamped_and_anything_else_wakes() {
    run(|lab| async move {
        let sender =
            VrrpSocket::open(&multicast(IFACE_A, Family::V6, Some(IpAddr::V6(LL_A)))).unwrap();
        let (wake, hold) = wake_and_hold(&lab, Family::V6);
        let send = |payload: &[u8]| sender.send_advert(payload).unwrap();
        repeats_are_held_and_released(&wake, &hold, send, IpAddr::V6(LL_A)).await;
    });
}

#[test]
fn a_holding_socket_holds_nothing_until_its_filter_lets_it() {
    run(|lab| async move {
        let sender = VrrpSocket::open(&multicast(IFACE_A, Family::V4, None)).unwrap();
        let (wake, hold) = wake_and_hold(&lab, Family::V4);
        sender.send_advert(&PAYLOAD).unwrap();
        let mut buf = [0u8; 1500];
        datagram(recv(&wake, &mut buf).await);
        assert!(try_recv_stamped(&hold, &mut buf).is_none());
    });
}
