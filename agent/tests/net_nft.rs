//! hav's nftables table in a throwaway namespace pair (needs root and the `nft` program): the
//! accept-mode filter drops TCP and ping to a blocked VIP while the unblocked one answers, still
//! answers IPv6 neighbour discovery for it, and removing the table removes a stale one too while
//! leaving every other table alone.
//!
//! Namespace A holds the VIPs and the filter (the test thread runs `nft` there); B is the client.
// A failed unwrap is a failed test here.
#![allow(clippy::unwrap_used)]

mod net_support;

use std::io::{self, Read};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::Duration;

use hav_agent::net::{Firewall, TableName, TableRemoval};
use net_support::*;
use socket2::{Domain, Protocol, Socket, Type};

const BLOCKED_V4: &str = "198.51.100.10";
const OPEN_V4: &str = "198.51.100.11";
const BLOCKED_V6: &str = "2001:db8::10";
const OPEN_V6: &str = "2001:db8::11";
const PORT: u16 = 7001;
/// How long a connect or ping to a blocked VIP is given: the open VIP answers in microseconds
/// on a veth, so silence this long means the packets were dropped.
const SILENCE: Duration = Duration::from_millis(700);

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// Adds the four VIPs to A and listens on every address of A (dual-stack): the kernel completes
/// handshakes into the backlog, so nothing needs to accept.
async fn with_vips(lab: &Lab) -> TcpListener {
    for (vip, prefix) in [
        (BLOCKED_V4, 32),
        (OPEN_V4, 32),
        (BLOCKED_V6, 128),
        (OPEN_V6, 128),
    ] {
        add_address(&lab.netlink_a, IFACE_A, ip(vip), prefix).await;
    }
    TcpListener::bind(SocketAddr::new(IpAddr::from(Ipv6Addr::UNSPECIFIED), PORT)).unwrap()
}

/// A TCP connect from B to `vip`.
fn connect_from_b(lab: &Lab, vip: &str) -> io::Result<()> {
    let target = SocketAddr::new(ip(vip), PORT);
    lab.in_b(|| TcpStream::connect_timeout(&target, SILENCE).map(drop))
}

/// One ping from B to `vip`; whether it was answered.
fn ping_from_b(lab: &Lab, vip: &str) -> bool {
    let wait = SILENCE.as_secs_f64().to_string();
    lab.in_b(|| {
        Command::new("ping")
            .args(["-n", "-c", "1", "-W", &wait, vip])
            .output()
            .unwrap()
            .status
            .success()
    })
}

fn assert_reachable(lab: &Lab, vip: &str) {
    connect_from_b(lab, vip).unwrap_or_else(|e| panic!("TCP connect to {vip}: {e}"));
    assert!(ping_from_b(lab, vip), "ping to {vip} unanswered");
}

fn assert_dropped(lab: &Lab, vip: &str) {
    let error = connect_from_b(lab, vip).expect_err("connect to a blocked VIP succeeded");
    assert_eq!(
        error.kind(),
        io::ErrorKind::TimedOut,
        "{vip}: dropped, not refused: {error}"
    );
    assert!(!ping_from_b(lab, vip), "ping to blocked {vip} answered");
}

fn tables_a() -> Vec<String> {
    nft(&["list", "tables"], None)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn blocked_vips_drop_tcp_and_ping_while_the_others_answer() {
    run(|lab| async move {
        let _listener = with_vips(&lab).await;
        let mut filter = Firewall::open(TableName::default());
        filter
            .block(&[ip(BLOCKED_V4), ip(BLOCKED_V6)])
            .await
            .unwrap();
        assert_eq!(tables_a(), ["table inet hav"]);
        for (open, blocked) in [(OPEN_V4, BLOCKED_V4), (OPEN_V6, BLOCKED_V6)] {
            assert_reachable(&lab, open);
            assert_dropped(&lab, blocked);
        }

        // Idempotent: blocking again and unblocking what is not blocked change nothing.
        let before = nft(&["list", "table", "inet", "hav"], None);
        filter.block(&[ip(BLOCKED_V4)]).await.unwrap();
        filter.unblock(&[ip(OPEN_V4)]).await.unwrap();
        assert_eq!(nft(&["list", "table", "inet", "hav"], None), before);

        // Unblocking one family leaves the other blocked; the last one removes the table.
        filter.unblock(&[ip(BLOCKED_V4)]).await.unwrap();
        assert_reachable(&lab, BLOCKED_V4);
        assert_dropped(&lab, BLOCKED_V6);
        filter.unblock(&[ip(BLOCKED_V6)]).await.unwrap();
        assert_reachable(&lab, BLOCKED_V6);
        assert!(tables_a().is_empty(), "{:?}", tables_a());
    });
}

#[test]
fn ipv6_neighbour_discovery_to_a_blocked_vip_is_still_answered() {
    run(|lab| async move {
        let _listener = with_vips(&lab).await;
        let mut filter = Firewall::open(TableName::default());
        filter.block(&[ip(BLOCKED_V6)]).await.unwrap();
        // A connect resolves the VIP through a multicast solicitation first: the SYN is what
        // the filter drops, so B ends up with a neighbour entry for the VIP.
        assert_dropped(&lab, BLOCKED_V6);

        // A unicast solicitation addressed to the VIP itself (RFC 4861 NUD) is answered.
        let socket = lab.in_b(|| {
            let socket = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6)).unwrap();
            socket.set_unicast_hops_v6(255).unwrap();
            socket.set_read_timeout(Some(TIMEOUT)).unwrap();
            socket
        });
        let target = ip(BLOCKED_V6);
        let IpAddr::V6(target_v6) = target else {
            unreachable!()
        };
        // Type 135, code 0, checksum (the kernel fills it in), reserved, target; no options
        // (a unicast solicitation may omit the source link-layer address).
        let mut solicitation = vec![135, 0, 0, 0, 0, 0, 0, 0];
        solicitation.extend_from_slice(&target_v6.octets());
        socket
            .send_to(&solicitation, &SocketAddr::new(target, 0).into())
            .unwrap();
        let mut buf = [0u8; 1500];
        loop {
            let len = (&socket)
                .read(&mut buf)
                .expect("no neighbour advertisement for the blocked VIP");
            let message = &buf[..len];
            if message.len() >= 24 && message[0] == 136 && message[8..24] == target_v6.octets() {
                // Solicited flag set: an answer to our solicitation.
                assert_eq!(message[4] & 0x40, 0x40, "solicited flag: {message:?}");
                break;
            }
        }
        let counters = nft(&["list", "chain", "inet", "hav", "accept_mode"], None);
        assert!(
            counters.contains("ip6 daddr @vips_no_accept_v6 counter packets"),
            "{counters}"
        );
        assert!(
            !counters.contains("ip6 daddr @vips_no_accept_v6 counter packets 0 "),
            "the SYN was counted as dropped: {counters}"
        );
    });
}

#[test]
fn removing_the_table_removes_a_stale_one_and_touches_nothing_else() {
    run(|lab| async move {
        let _listener = with_vips(&lab).await;
        // What a crashed run leaves, and a table of the host's own firewall.
        nft(
            &["-f", "-"],
            Some(&format!(
                "table inet hav {{\n\
                 chain accept_mode {{\n\
                 type filter hook input priority 0;\n\
                 ip daddr {OPEN_V4} drop\n\
                 }}\n\
                 }}\n\
                 table inet host_firewall {{\n\
                 set trusted {{\n\
                 type ipv4_addr\n\
                 elements = {{ 192.0.2.1 }}\n\
                 }}\n\
                 }}\n"
            )),
        );
        assert_dropped(&lab, OPEN_V4);

        let mut filter = Firewall::open(TableName::default());
        assert_eq!(filter.remove_tables().await.unwrap(), TableRemoval::Removed);
        assert_eq!(tables_a(), ["table inet host_firewall"]);
        assert_reachable(&lab, OPEN_V4);
        assert_eq!(filter.remove_tables().await.unwrap(), TableRemoval::Absent);

        // Rewriting hav's table leaves the other one as it was, and so does a last removal.
        let host_firewall = nft(&["list", "table", "inet", "host_firewall"], None);
        filter.block(&[ip(BLOCKED_V4)]).await.unwrap();
        assert_dropped(&lab, BLOCKED_V4);
        assert_eq!(filter.remove_tables().await.unwrap(), TableRemoval::Removed);
        assert!(filter.blocked().is_empty());
        assert_reachable(&lab, BLOCKED_V4);
        assert_eq!(
            nft(&["list", "table", "inet", "host_firewall"], None),
            host_firewall
        );
    });
}

#[test]
fn virtual_servers_fill_both_tables_and_removal_deletes_both() {
    use hav_agent::net::nft::{Forwarding, LbService, Target};
    use hav_proto::config::{LbAlgo, LbProtocol};
    run(|_lab| async move {
        let service = |id, forwarding| LbService {
            id,
            name: format!("vs{id}"),
            address: ip(BLOCKED_V4),
            protocol: LbProtocol::Tcp,
            ports: vec![80 + id as u16],
            algo: LbAlgo::Wrr,
            forwarding,
            pool: vec![
                Target {
                    address: ip("198.51.100.21"),
                    port: None,
                    weight: 2,
                    mark: 1,
                },
                Target {
                    address: ip("198.51.100.22"),
                    port: None,
                    weight: 1,
                    mark: 2,
                },
            ],
        };
        let dr = Forwarding::Dr {
            device: IFACE_A.into(),
            flow_timeout: Duration::from_secs(60),
            targets: vec![(1, ip("198.51.100.21")), (2, ip("198.51.100.22"))],
        };
        let mut firewall = Firewall::open(TableName::default());
        firewall
            .set_virtual_servers(&[service(0, Forwarding::Nat), service(1, dr)], "test")
            .await
            .unwrap();
        assert_eq!(tables_a(), ["table inet hav", "table netdev hav"]);
        let nat = nft(&["list", "table", "inet", "hav"], None);
        assert!(
            nat.contains(
                "dnat ip to numgen inc mod 3 map { 0-1 : 198.51.100.21, 2 : 198.51.100.22 }"
            ),
            "{nat}"
        );
        let netdev = nft(&["list", "table", "netdev", "hav"], None);
        assert!(netdev.contains("fwd ip to meta mark map"), "{netdev}");
        // A crash leaves both: a new run's removal deletes both.
        let mut restarted = Firewall::open(TableName::default());
        assert_eq!(
            restarted.remove_tables().await.unwrap(),
            TableRemoval::Removed
        );
        assert!(tables_a().is_empty(), "{:?}", tables_a());
    });
}
