//! Cross-checks the encoder against an independent decoder: adverts emitted by hav, wrapped in
//! correct IPv4/IPv6 headers and written to a pcap, must be decoded by `tshark -V` to the same
//! fields, with a good checksum and nothing malformed.
//!
//! tshark validates a VRRPv3-over-IPv4 checksum with the pseudo-header only, so for the
//! `NoPseudoHeader` form everything but the checksum status is compared (and the status is
//! expected to be Bad, which shows that the two forms really differ).

#[path = "vectors/pcap.rs"]
mod pcap;

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Command;

use hav_vrrp::wire::{self, Advertisement, RecvMeta};
use hav_vrrp::{AdvertInterval, Auth, Priority, V3Checksum, Version, VrId};
use pcap::{parse_tshark, vrrp_frame, write_pcap};

struct Case {
    advert: Advertisement,
    src: IpAddr,
    dst: IpAddr,
    mode: V3Checksum,
}

fn ip(text: &str) -> IpAddr {
    text.parse().expect("test literal")
}

fn cases() -> Vec<Case> {
    let v4_one = vec![ip("198.51.100.100")];
    let v4_eight: Vec<IpAddr> = (100..108).map(|i| ip(&format!("198.51.100.{i}"))).collect();
    let v6_one = vec![ip("2001:db8::100")];
    let v6_eight: Vec<IpAddr> = (0..8)
        .map(|i| ip(&format!("2001:db8:0:1::{i:x}")))
        .collect();
    let advert = |version, vrid, priority, centis, addresses: &Vec<IpAddr>, auth| Advertisement {
        version,
        vrid: VrId::new(vrid).expect("non-zero"),
        priority: Priority(priority),
        interval: AdvertInterval::from_centis(centis).expect("non-zero"),
        addresses: addresses.clone(),
        auth,
    };
    let (v4_src, v4_dst) = (ip("198.51.100.11"), wire::MULTICAST_V4.into());
    let (v6_src, v6_dst) = (ip("fe80::200:5eff:fe00:20b"), wire::MULTICAST_V6.into());
    let unicast_v4 = ip("203.0.113.7");
    let unicast_v6 = ip("2001:db8:ffff::7");
    let mut cases = Vec::new();
    for mode in [V3Checksum::PseudoHeader, V3Checksum::NoPseudoHeader] {
        let mut add = |advert, src, dst| {
            cases.push(Case {
                advert,
                src,
                dst,
                mode,
            })
        };
        add(
            advert(Version::V2, 1, 100, 100, &v4_one, Auth::None),
            v4_src,
            v4_dst,
        );
        add(
            advert(
                Version::V2,
                254,
                255,
                25500,
                &v4_eight,
                Auth::SimpleText(*b"hav-pass"),
            ),
            v4_src,
            unicast_v4,
        );
        add(
            advert(Version::V3, 51, 150, 10, &v4_one, Auth::None),
            v4_src,
            v4_dst,
        );
        add(
            advert(Version::V3, 200, 0, 4095, &v4_eight, Auth::None),
            v4_src,
            unicast_v4,
        );
        add(
            advert(Version::V3, 7, 100, 100, &v6_one, Auth::None),
            v6_src,
            v6_dst,
        );
        add(
            advert(Version::V3, 255, 254, 1, &v6_eight, Auth::None),
            v6_src,
            unicast_v6,
        );
    }
    cases
}

/// A file in the temp directory, removed when dropped (also when the test fails).
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn tshark_decodes_emitted_adverts_to_the_same_fields() {
    let cases = cases();
    let frames: Vec<Vec<u8>> = cases
        .iter()
        .map(|case| {
            let payload = case.advert.to_bytes(case.src, case.dst, case.mode);
            // Our own decoder agrees too, and finds the form that was used.
            let meta = RecvMeta {
                src: case.src,
                dst: case.dst,
                hop_limit: 255,
            };
            let received = wire::decode(&meta, &payload).expect("emitted advert decodes");
            assert_eq!(received.advert, case.advert);
            vrrp_frame(case.advert.vrid.get(), case.src, case.dst, &payload)
        })
        .collect();
    let file = TempFile(std::env::temp_dir().join(format!("hav-vrrp-{}.pcap", std::process::id())));
    std::fs::write(&file.0, write_pcap(&frames)).expect("temp dir writable");

    let output = Command::new("tshark")
        .arg("-r")
        .arg(&file.0)
        .arg("-V")
        .output()
        .expect("tshark is installed (apt-get install tshark)");
    assert!(
        output.status.success(),
        "tshark failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).expect("tshark prints UTF-8");
    assert!(
        !text.contains("Malformed"),
        "tshark found malformed packets:\n{text}"
    );
    // The only complaints allowed: the two v3-over-IPv4 frames without pseudo-header.
    let expert = text.matches("[Expert Info").count();
    let bad_checksum = text
        .matches("[Expert Info (Warning/Checksum): Bad checksum")
        .count();
    assert_eq!(
        (expert, bad_checksum),
        (2, 2),
        "tshark raised expert info:\n{text}"
    );

    let shown = parse_tshark(&text);
    assert_eq!(
        shown.len(),
        cases.len(),
        "every frame has a VRRP layer:\n{text}"
    );
    let mut good = 0;
    for (case, shown) in cases.iter().zip(&shown) {
        let at = format!("frame {}: {:?}", shown.frame, case.advert);
        let advert = &case.advert;
        assert_eq!(shown.src, case.src.to_string(), "{at}");
        assert_eq!(shown.dst, case.dst.to_string(), "{at}");
        assert_eq!(shown.ttl, Some(255), "{at}");
        assert_eq!(shown.version, Some(advert.version.number()), "{at}");
        assert_eq!(shown.packet_type, Some(1), "{at}");
        assert_eq!(shown.vrid, Some(advert.vrid.get()), "{at}");
        assert_eq!(shown.priority, Some(advert.priority.get()), "{at}");
        assert_eq!(shown.count, Some(advert.addresses.len() as u8), "{at}");
        assert_eq!(shown.addresses, advert.addresses, "{at}");
        let bytes = advert.to_bytes(case.src, case.dst, case.mode);
        assert_eq!(
            shown.checksum,
            Some(u16::from_be_bytes([bytes[6], bytes[7]])),
            "{at}"
        );
        match advert.version {
            Version::V2 => {
                assert_eq!(
                    shown.adver_int,
                    Some(advert.interval.centis() / 100),
                    "{at}"
                );
                let (auth_type, auth_string) = match advert.auth {
                    Auth::None => (0, None),
                    Auth::SimpleText(text) => (
                        1,
                        Some(String::from_utf8_lossy(&text).trim_end_matches('\0').into()),
                    ),
                };
                assert_eq!(shown.auth_type, Some(auth_type), "{at}");
                assert_eq!(shown.auth_string, auth_string, "{at}");
            }
            _ => assert_eq!(shown.adver_int, Some(advert.interval.centis()), "{at}"),
        }
        let v3_over_v4 = advert.version == Version::V3 && case.src.is_ipv4();
        let expected_status = if v3_over_v4 && case.mode == V3Checksum::NoPseudoHeader {
            "Bad"
        } else {
            good += 1;
            "Good"
        };
        assert_eq!(
            shown.checksum_status.as_deref(),
            Some(expected_status),
            "{at}"
        );
    }
    assert_eq!(good, 10);
}
