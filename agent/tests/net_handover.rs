//! The hand-over's second-chance tables in a throwaway namespace pair (needs root and the `nft`
//! program): two nodes that each pass a VIP toward the other, neither holding it (as for a
//! moment around a takeover), pass a packet to it on once and never bounce it back.
//!
//! Namespace A and namespace B both install the tables; B is also the client, its neighbour
//! entry for the VIP naming A's MAC.
// A failed unwrap is a failed test here.
#![allow(clippy::unwrap_used)]

mod net_support;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use hav_agent::net::TableName;
use hav_agent::net::nft::handover::transaction;
use hav_agent::net::nft::{HandoverRules, SecondChance};
use net_support::*;

const VIP_V4: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 100));
const VIP_V6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100));
/// Long enough for a bouncing packet to pass between the namespaces thousands of times.
const WATCH: Duration = Duration::from_millis(200);

fn install(name: &TableName, vip: IpAddr, to: IpAddr, device: &str) {
    let rules = HandoverRules {
        forwards: [SecondChance {
            vips: [vip].into(),
            to,
            device: device.to_owned(),
        }]
        .into(),
        silent: Default::default(),
        tracked: Default::default(),
    };
    nft(&["-f", "-"], Some(&transaction(name, &rules)));
}

/// The packets the rule passing on packets to a VIP not held here has counted.
fn passed_on(name: &TableName, ipv6: bool) -> u64 {
    let family = if ipv6 { "ip6" } else { "ip" };
    let table = nft(&["list", "table", family, name.as_str()], None);
    (table.lines())
        .find(|line| line.contains("fib daddr type != local"))
        .and_then(|line| {
            line.split("packets ")
                .nth(1)?
                .split(' ')
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no pass-on rule: {table}"))
}

#[test]
fn two_nodes_passing_a_vip_toward_each_other_pass_a_packet_on_once() {
    run(|lab| async move {
        let name = TableName::new("havloop").unwrap();
        let mac = lab.mac_a(IFACE_A).await;
        let mac = (mac.iter())
            .map(|byte| format!("{byte:02x}"))
            .collect::<Vec<_>>()
            .join(":");
        for (vip, a, b) in [
            (VIP_V4, IpAddr::V4(V4_A), IpAddr::V4(V4_B)),
            (VIP_V6, IpAddr::V6(LL_A), IpAddr::V6(LL_B)),
        ] {
            install(&name, vip, b, IFACE_A);
            lab.in_b(|| {
                install(&name, vip, a, IFACE_B);
                let vip = vip.to_string();
                let argv = ["neigh", "replace", &vip, "lladdr", &mac, "dev", IFACE_B];
                let status = Command::new("ip").args(argv).status().unwrap();
                assert!(status.success(), "ip {argv:?}");
            });
            let socket = lab.in_b(|| {
                let unspecified: IpAddr = if vip.is_ipv6() {
                    Ipv6Addr::UNSPECIFIED.into()
                } else {
                    Ipv4Addr::UNSPECIFIED.into()
                };
                UdpSocket::bind(SocketAddr::new(unspecified, 0)).unwrap()
            });
            socket.send_to(b"stray", SocketAddr::new(vip, 9)).unwrap();
            let deadline = Instant::now() + TIMEOUT;
            while passed_on(&name, vip.is_ipv6()) == 0 {
                assert!(Instant::now() < deadline, "{vip}: A never saw the packet");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            // Nothing comes back to be counted again, however long one watches.
            tokio::time::sleep(WATCH).await;
            assert_eq!(passed_on(&name, vip.is_ipv6()), 1, "{vip}: passed on by A");
            let by_b = lab.in_b(|| passed_on(&name, vip.is_ipv6()));
            assert_eq!(by_b, 0, "{vip}: passed back by B");
        }
    });
}
