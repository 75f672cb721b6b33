//! VIPs through real rtnetlink in a network namespace (needs root).
// A failed unwrap is a failed test here.
#![allow(clippy::unwrap_used)]

mod net_support;

use std::net::{IpAddr, Ipv6Addr, SocketAddrV6, UdpSocket};

use hav_agent::net::{Vip, VipError, VipManager};
use net_support::*;
use netlink_packet_route::address::AddressFlags;
use rtnetlink::LinkVeth;

fn v4_vip() -> Vip {
    Vip::new(IpAddr::from([198, 51, 100, 100]), 24, IFACE_A).with_label("hva:vip")
}

const VIP_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100);

async fn count(lab: &Lab, iface: &str, addr: IpAddr) -> usize {
    lab.addresses_a(iface)
        .await
        .iter()
        .filter(|m| address_of(m) == Some(addr))
        .count()
}

#[test]
fn add_twice_is_one_address_with_label_and_remove_twice_succeeds() {
    run(|lab| async move {
        let vips = VipManager::new().unwrap();
        let vip = v4_vip();
        vips.add(std::slice::from_ref(&vip)).await.unwrap();
        vips.add(std::slice::from_ref(&vip)).await.unwrap();

        let messages = lab.addresses_a(IFACE_A).await;
        let ours: Vec<_> = messages
            .iter()
            .filter(|m| address_of(m) == Some(vip.addr))
            .collect();
        assert_eq!(ours.len(), 1, "added twice, present once");
        assert_eq!(ours[0].header.prefix_len, 24);
        assert_eq!(label_of(ours[0]).as_deref(), Some("hva:vip"));
        assert_eq!(
            vips.present(std::slice::from_ref(&vip)).await.unwrap(),
            vec![vip.clone()]
        );

        assert_eq!(
            vips.remove(std::slice::from_ref(&vip)).await.unwrap(),
            vec![vip.clone()],
            "the first removal reports the address as removed"
        );
        assert_eq!(
            vips.remove(std::slice::from_ref(&vip)).await.unwrap(),
            vec![],
            "the second finds it absent"
        );
        assert_eq!(count(&lab, IFACE_A, vip.addr).await, 0);
        assert_eq!(vips.present(&[vip]).await.unwrap(), vec![]);
        assert_eq!(
            count(&lab, IFACE_A, IpAddr::V4(V4_A)).await,
            1,
            "the primary address stays"
        );
    });
}

#[test]
fn ipv6_vip_is_usable_at_once() {
    run(|lab| async move {
        let vips = VipManager::new().unwrap();
        let vip = Vip::new(IpAddr::V6(VIP_V6), 64, IFACE_A);
        vips.add(std::slice::from_ref(&vip)).await.unwrap();

        // A tentative address cannot be bound (EADDRNOTAVAIL); this one can, right away.
        let bound = UdpSocket::bind(SocketAddrV6::new(VIP_V6, 0, 0, 0));
        assert!(bound.is_ok(), "bind to the new VIP: {bound:?}");
        let messages = lab.addresses_a(IFACE_A).await;
        let ours = messages
            .iter()
            .find(|m| address_of(m) == Some(vip.addr))
            .unwrap();
        let flags = flags_of(ours);
        assert!(flags.contains(AddressFlags::Nodad), "{flags:?}");
        assert!(!flags.contains(AddressFlags::Tentative), "{flags:?}");
        assert_eq!(ours.header.prefix_len, 64);

        vips.add(std::slice::from_ref(&vip)).await.unwrap();
        assert_eq!(count(&lab, IFACE_A, vip.addr).await, 1);
        assert_eq!(
            vips.remove(std::slice::from_ref(&vip)).await.unwrap(),
            vec![vip.clone()],
            "the first removal reports the address as removed"
        );
        assert_eq!(
            vips.remove(std::slice::from_ref(&vip)).await.unwrap(),
            vec![],
            "the second finds it absent"
        );
        assert_eq!(count(&lab, IFACE_A, vip.addr).await, 0);
    });
}

#[test]
fn several_vips_on_several_interfaces_in_one_call() {
    run(|lab| async move {
        // A second interface (a veth pair inside namespace A; the test kernel may lack `dummy`).
        let pair = LinkVeth::new("hvd", "hvd-peer").up().build();
        lab.netlink_a.link().add(pair).execute().await.unwrap();
        let vips = VipManager::new().unwrap();
        let set = [
            v4_vip(),
            Vip::new(IpAddr::from([203, 0, 113, 10]), 32, "hvd"),
            Vip::new(IpAddr::V6(VIP_V6), 128, "hvd"),
        ];
        vips.add(&set).await.unwrap();
        assert_eq!(vips.present(&set).await.unwrap(), set.to_vec());
        assert_eq!(count(&lab, "hvd", IpAddr::from([203, 0, 113, 10])).await, 1);
        assert_eq!(count(&lab, "hvd", IpAddr::V6(VIP_V6)).await, 1);
        assert_eq!(
            count(&lab, IFACE_A, IpAddr::V6(VIP_V6)).await,
            0,
            "on hvd only"
        );

        // Same address, other prefix length: not the VIP.
        let other_prefix = Vip::new(IpAddr::from([203, 0, 113, 10]), 24, "hvd");
        assert_eq!(
            vips.present(std::slice::from_ref(&other_prefix))
                .await
                .unwrap(),
            vec![]
        );

        vips.remove(&set).await.unwrap();
        assert_eq!(vips.present(&set).await.unwrap(), vec![]);
    });
}

#[test]
fn missing_interface_fails_add_and_succeeds_remove() {
    run(|_lab| async move {
        let vips = VipManager::new().unwrap();
        let vip = Vip::new(IpAddr::from([198, 51, 100, 101]), 24, "hvnone");
        let error = vips.add(std::slice::from_ref(&vip)).await.unwrap_err();
        assert!(
            matches!(error, VipError::NoSuchInterface { .. }),
            "{error:?}"
        );
        assert!(error.to_string().contains("hvnone"), "{error}");
        assert_eq!(
            vips.remove(std::slice::from_ref(&vip)).await.unwrap(),
            vec![]
        );
        assert_eq!(vips.present(&[vip]).await.unwrap(), vec![]);
    });
}

#[test]
fn one_bad_vip_does_not_stop_the_others() {
    run(|lab| async move {
        let vips = VipManager::new().unwrap();
        let bad = Vip::new(IpAddr::from([198, 51, 100, 102]), 24, IFACE_A).with_label("wrong:x");
        let good = Vip::new(IpAddr::from([198, 51, 100, 103]), 24, IFACE_A);
        let error = vips.add(&[bad, good.clone()]).await.unwrap_err();
        assert!(matches!(error, VipError::Invalid { .. }), "{error:?}");
        assert_eq!(count(&lab, IFACE_A, good.addr).await, 1);
    });
}
