//! keepalived 2.2.7 captures (tests/vectors/, see /work/shared/pcap/README.md) as codec
//! vectors: every VRRP frame decodes to the values tshark printed for it in the matching `.txt`,
//! and re-encodes byte for byte, checksum included.

#[path = "vectors/pcap.rs"]
mod pcap;

use std::path::PathBuf;

use hav_vrrp::wire::{self, Advertisement, RecvMeta};
use hav_vrrp::{AdvertInterval, Auth, Priority, V3Checksum, Version, VrId};
use pcap::{TsharkVrrp, ip_of_frame, parse_tshark, read_frames};

const CAPTURES: [&str; 4] = [
    "keepalived-v2-adv1-adverts",
    "keepalived-v2-adv1-failover",
    "keepalived-v3-adv0.1-adverts",
    "keepalived-v3-adv0.1-failover",
];

fn vector(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/vectors")
        .join(name)
}

/// (frame number, payload, meta) of every VRRP frame of a capture; numbers count from 1.
fn vrrp_frames(capture: &str) -> Vec<(usize, Vec<u8>, RecvMeta)> {
    let file = std::fs::read(vector(&format!("{capture}.pcap"))).expect("vector present");
    read_frames(&file)
        .iter()
        .enumerate()
        .filter_map(|(index, frame)| {
            let ip = ip_of_frame(frame)?;
            (ip.protocol == wire::IP_PROTOCOL).then(|| {
                let meta = RecvMeta {
                    src: ip.src,
                    dst: ip.dst,
                    hop_limit: ip.hop_limit,
                };
                (index + 1, ip.payload, meta)
            })
        })
        .collect()
}

fn tshark_decode(capture: &str) -> Vec<TsharkVrrp> {
    let text = std::fs::read_to_string(vector(&format!("{capture}.txt"))).expect("vector present");
    parse_tshark(&text)
}

#[test]
fn every_frame_decodes_to_what_tshark_shows_and_re_encodes_exactly() {
    let mut checked = 0;
    for capture in CAPTURES {
        let frames = vrrp_frames(capture);
        let expected = tshark_decode(capture);
        let numbers: Vec<usize> = frames.iter().map(|(n, ..)| *n).collect();
        let expected_numbers: Vec<usize> = expected.iter().map(|t| t.frame).collect();
        assert_eq!(
            numbers, expected_numbers,
            "{capture}: VRRP frames differ from tshark's"
        );

        for ((number, payload, meta), shown) in frames.iter().zip(&expected) {
            let at = format!("{capture} frame {number}");
            let received = wire::decode(meta, payload).unwrap_or_else(|e| panic!("{at}: {e}"));
            let advert = &received.advert;
            assert_eq!(meta.src.to_string(), shown.src, "{at}");
            assert_eq!(meta.dst.to_string(), shown.dst, "{at}");
            assert_eq!(Some(meta.hop_limit), shown.ttl, "{at}");
            assert_eq!(Some(advert.version.number()), shown.version, "{at}");
            assert_eq!(shown.packet_type, Some(1), "{at}");
            assert_eq!(Some(advert.vrid.get()), shown.vrid, "{at}");
            assert_eq!(Some(advert.priority.get()), shown.priority, "{at}");
            assert_eq!(Some(advert.addresses.len() as u8), shown.count, "{at}");
            assert_eq!(advert.addresses, shown.addresses, "{at}");
            assert_eq!(shown.checksum_status.as_deref(), Some("Good"), "{at}");
            let checksum = u16::from_be_bytes([payload[6], payload[7]]);
            assert_eq!(Some(checksum), shown.checksum, "{at}");
            match advert.version {
                Version::V2 => {
                    assert_eq!(
                        Some(advert.interval.centis() / 100),
                        shown.adver_int,
                        "{at}"
                    );
                    assert_eq!(shown.auth_type, Some(0), "{at}");
                    assert_eq!(advert.auth, Auth::None, "{at}");
                    assert_eq!(received.checksum, None, "{at}");
                }
                _ => {
                    assert_eq!(Some(advert.interval.centis()), shown.adver_int, "{at}");
                    // keepalived's default, and the form tshark validates.
                    assert_eq!(received.checksum, Some(V3Checksum::PseudoHeader), "{at}");
                }
            }

            let mode = received.checksum.unwrap_or_default();
            let mut buf = vec![0xa5; advert.buffer_len()];
            advert.emit(&mut buf, meta.src, meta.dst, mode);
            assert_eq!(&buf, payload, "{at}: re-encoding differs");
            assert_eq!(advert.to_bytes(meta.src, meta.dst, mode), *payload, "{at}");
            checked += 1;
        }
    }
    // 5 + 6 adverts in the v2 captures, 5 + 11 in the v3 ones.
    assert_eq!(checked, 27);
}

/// The same expectations transcribed by hand from the `.txt` decodes, so that a parser bug in
/// the test cannot hide a codec bug.
#[test]
fn transcribed_frames() {
    let vip = ["198.51.100.100".parse().expect("literal")];
    let advert = |version, priority, centis| Advertisement {
        version,
        vrid: VrId::new(51).expect("non-zero"),
        priority: Priority(priority),
        interval: AdvertInterval::from_centis(centis).expect("non-zero"),
        addresses: vip.to_vec(),
        auth: Auth::None,
    };
    let cases = [
        // capture, frame, advert, checksum tshark printed
        (
            "keepalived-v2-adv1-adverts",
            1,
            advert(Version::V2, 150, 100),
            0x1e32,
        ),
        (
            "keepalived-v2-adv1-failover",
            1,
            advert(Version::V2, 0, 100),
            0xb432,
        ),
        (
            "keepalived-v2-adv1-failover",
            2,
            advert(Version::V2, 100, 100),
            0x5032,
        ),
        (
            "keepalived-v2-adv1-failover",
            8,
            advert(Version::V2, 100, 100),
            0x5032,
        ),
        (
            "keepalived-v3-adv0.1-adverts",
            1,
            advert(Version::V3, 150, 10),
            0x035b,
        ),
        (
            "keepalived-v3-adv0.1-failover",
            5,
            advert(Version::V3, 100, 10),
            0x355a,
        ),
    ];
    for (capture, frame, expected, checksum) in cases {
        let frames = vrrp_frames(capture);
        let (_, payload, meta) = frames
            .iter()
            .find(|(n, ..)| *n == frame)
            .expect("frame is VRRP");
        let received = wire::decode(meta, payload).expect("valid");
        assert_eq!(received.advert, expected, "{capture} frame {frame}");
        assert_eq!(u16::from_be_bytes([payload[6], payload[7]]), checksum);
    }
}

#[test]
fn tshark_shows_a_priority_zero_resignation_in_each_failover() {
    for capture in [
        "keepalived-v2-adv1-failover",
        "keepalived-v3-adv0.1-failover",
    ] {
        let resignations: Vec<_> = vrrp_frames(capture)
            .iter()
            .map(|(_, payload, meta)| wire::decode(meta, payload).expect("valid").advert)
            .filter(|advert| advert.priority == Priority::RESIGN)
            .collect();
        assert_eq!(resignations.len(), 1, "{capture}");
        assert_eq!(resignations[0].addresses.len(), 1);
    }
}
