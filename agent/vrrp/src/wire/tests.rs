//! Unit tests of the codec: construction into dirty buffers, and one test per drop reason.

use std::net::IpAddr;

use super::checksum::{self, Coverage};
use super::*;
use crate::stats::Counter;

fn ip(text: &str) -> IpAddr {
    text.parse().expect("test literal")
}

fn v4_meta() -> RecvMeta {
    RecvMeta {
        src: ip("198.51.100.11"),
        dst: ip("224.0.0.18"),
        hop_limit: 255,
    }
}

fn v6_meta() -> RecvMeta {
    RecvMeta {
        src: ip("fe80::1"),
        dst: ip("ff02::12"),
        hop_limit: 255,
    }
}

fn advert(version: Version, addresses: &[&str]) -> Advertisement {
    Advertisement {
        version,
        vrid: VrId::new(51).expect("non-zero"),
        priority: Priority(150),
        interval: AdvertInterval::DEFAULT,
        addresses: addresses.iter().map(|a| ip(a)).collect(),
        auth: Auth::None,
    }
}

fn encode(advert: &Advertisement, meta: &RecvMeta) -> Vec<u8> {
    advert.to_bytes(meta.src, meta.dst, V3Checksum::PseudoHeader)
}

/// Rewrites the checksum after a test changed the bytes, so that the intended check fails.
fn fix_checksum(bytes: &mut [u8], meta: &RecvMeta) {
    let coverage = if bytes[0] >> 4 == 2 {
        Coverage::Message
    } else {
        Coverage::PseudoHeader {
            src: meta.src,
            dst: meta.dst,
        }
    };
    let sum = checksum::compute(bytes, coverage);
    bytes[6..8].copy_from_slice(&sum.to_be_bytes());
}

fn decode_err(meta: &RecvMeta, bytes: &[u8]) -> DecodeError {
    match decode(meta, bytes) {
        Ok(received) => panic!("decoded {received:?}, expected an error"),
        Err(error) => error,
    }
}

// Construction.

#[test]
fn emit_v2_matches_keepalived_frame_into_dirty_buffer() {
    // keepalived-v2-adv1-adverts.pcap frame 1, VRRP payload.
    let expected = [
        0x21, 0x33, 0x96, 0x01, 0x00, 0x01, 0x1e, 0x32, 198, 51, 100, 100, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    let advert = advert(Version::V2, &["198.51.100.100"]);
    assert_eq!(advert.buffer_len(), 20);
    let mut buf = [0xa5; 24];
    let meta = v4_meta();
    advert.emit(&mut buf, meta.src, meta.dst, V3Checksum::PseudoHeader);
    assert_eq!(buf[..20], expected);
    assert_eq!(buf[20..], [0xa5; 4], "emit wrote past buffer_len");
}

#[test]
fn emit_v3_ipv4_both_checksum_forms_into_dirty_buffer() {
    // keepalived-v3-adv0.1-failover.pcap frame 5 (from 198.51.100.12, priority 100, 10 cs).
    let mut advert = advert(Version::V3, &["198.51.100.100"]);
    advert.priority = Priority(100);
    advert.interval = AdvertInterval::from_centis(10).expect("non-zero");
    let (src, dst) = (ip("198.51.100.12"), ip("224.0.0.18"));
    let mut buf = [0xa5; 12];
    advert.emit(&mut buf, src, dst, V3Checksum::PseudoHeader);
    assert_eq!(
        buf,
        [
            0x31, 0x33, 0x64, 0x01, 0x00, 0x0a, 0x35, 0x5a, 198, 51, 100, 100
        ]
    );

    let mut buf = [0xa5; 12];
    advert.emit(&mut buf, src, dst, V3Checksum::NoPseudoHeader);
    let plain = checksum::compute(&buf, Coverage::Message);
    assert_ne!(plain, 0x355a);
    assert_eq!(buf[..6], [0x31, 0x33, 0x64, 0x01, 0x00, 0x0a]);
    assert_eq!(buf[6..8], plain.to_be_bytes());
}

#[test]
fn emit_v3_ipv6_into_dirty_buffer() {
    let mut advert = advert(Version::V3, &["2001:db8::100", "2001:db8::101"]);
    advert.interval = AdvertInterval::from_centis(0x0abc).expect("non-zero");
    advert.auth = Auth::SimpleText(*b"ignored!");
    assert_eq!(advert.buffer_len(), 8 + 32);
    let mut buf = [0xa5; 41];
    let meta = v6_meta();
    advert.emit(&mut buf, meta.src, meta.dst, V3Checksum::NoPseudoHeader);
    assert_eq!(
        buf[..6],
        [0x31, 51, 150, 2, 0x0a, 0xbc],
        "reserved bits must be zero"
    );
    assert_eq!(buf[8..24], ip_octets("2001:db8::100"));
    assert_eq!(buf[24..40], ip_octets("2001:db8::101"));
    assert_eq!(buf[40], 0xa5);
    // Over IPv6 the pseudo-header is always included, whatever the IPv4 mode says.
    assert!(checksum::verify(
        &buf[..40],
        Coverage::PseudoHeader {
            src: meta.src,
            dst: meta.dst
        }
    ));
}

fn ip_octets(text: &str) -> Vec<u8> {
    match ip(text) {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

#[test]
fn emit_v2_simple_text_auth() {
    let mut advert = advert(Version::V2, &["198.51.100.100", "198.51.100.101"]);
    advert.auth = Auth::SimpleText(*b"secret\0\0");
    advert.interval = AdvertInterval::from_secs(3).expect("non-zero");
    let bytes = encode(&advert, &v4_meta());
    assert_eq!(bytes.len(), 8 + 8 + 8);
    assert_eq!(bytes[4..6], [1, 3]);
    assert_eq!(bytes[16..], *b"secret\0\0");
    assert_eq!(decode(&v4_meta(), &bytes).expect("valid").advert, advert);
}

#[test]
fn non_encodable_adverts_are_reported_and_still_emit() {
    let mixed = advert(Version::V3, &["2001:db8::1", "198.51.100.1"]);
    assert_eq!(mixed.check_encodable(), Err(EncodeError::MixedFamilies));
    // The message carries the family of the first address only.
    assert_eq!(mixed.buffer_len(), 8 + 16);
    let bytes = encode(&mixed, &v6_meta());
    assert_eq!(bytes[3], 1);

    let v2_v6 = advert(Version::V2, &["2001:db8::1"]);
    assert_eq!(v2_v6.check_encodable(), Err(EncodeError::V2WithIpv6));
    assert_eq!(encode(&v2_v6, &v4_meta())[3], 0);

    let mut odd = advert(Version::V2, &["198.51.100.1"]);
    odd.interval = AdvertInterval::from_centis(149).expect("non-zero");
    assert!(matches!(
        odd.check_encodable(),
        Err(EncodeError::IntervalDoesNotFit { .. })
    ));
    assert_eq!(encode(&odd, &v4_meta())[5], 1, "rounded to whole seconds");

    let mut long = advert(Version::V3, &[]);
    long.interval = AdvertInterval::from_centis(25500).expect("in range");
    assert_eq!(
        encode(&long, &v4_meta())[4..6],
        [0x0f, 0xff],
        "capped at 4095"
    );

    let mut many = advert(Version::V3, &[]);
    many.addresses = (0..300u32)
        .map(|i| IpAddr::from((0xc6336400u32 + i).to_be_bytes()))
        .collect();
    assert_eq!(
        many.check_encodable(),
        Err(EncodeError::TooManyAddresses { count: 300 })
    );
    let bytes = encode(&many, &v4_meta());
    assert_eq!((bytes.len(), bytes[3]), (8 + 4 * 255, 255));
}

// Decoding: what is accepted.

#[test]
fn v3_ipv4_accepts_both_checksum_forms_and_reports_which() {
    let advert = advert(Version::V3, &["198.51.100.100"]);
    let meta = v4_meta();
    for mode in [V3Checksum::PseudoHeader, V3Checksum::NoPseudoHeader] {
        let bytes = advert.to_bytes(meta.src, meta.dst, mode);
        let received = decode(&meta, &bytes).expect("valid");
        assert_eq!(received.checksum, Some(mode));
        assert_eq!(received.advert, advert);
    }
}

#[test]
fn checksum_form_is_none_for_v2_and_ipv6() {
    let v2 = encode(&advert(Version::V2, &["198.51.100.100"]), &v4_meta());
    assert_eq!(decode(&v4_meta(), &v2).expect("valid").checksum, None);
    let v6 = encode(&advert(Version::V3, &["2001:db8::1"]), &v6_meta());
    assert_eq!(decode(&v6_meta(), &v6).expect("valid").checksum, None);
}

#[test]
fn v3_reserved_bits_are_ignored() {
    let meta = v4_meta();
    let mut bytes = encode(&advert(Version::V3, &["198.51.100.100"]), &meta);
    bytes[4] |= 0xf0;
    fix_checksum(&mut bytes, &meta);
    let received = decode(&meta, &bytes).expect("reserved bits are ignored on receipt");
    assert_eq!(received.advert.interval, AdvertInterval::DEFAULT);
}

#[test]
fn v2_auth_data_is_ignored_without_auth() {
    let meta = v4_meta();
    let mut bytes = encode(&advert(Version::V2, &["198.51.100.100"]), &meta);
    bytes[12..20].copy_from_slice(b"leftover");
    fix_checksum(&mut bytes, &meta);
    assert_eq!(
        decode(&meta, &bytes).expect("valid").advert.auth,
        Auth::None
    );
}

#[test]
fn priority_zero_and_no_addresses_decode() {
    let mut advert = advert(Version::V3, &[]);
    advert.priority = Priority::RESIGN;
    let bytes = encode(&advert, &v6_meta());
    assert_eq!(decode(&v6_meta(), &bytes).expect("valid").advert, advert);
}

#[test]
fn peek_vrid_reads_rejected_packets() {
    let meta = v4_meta();
    let bytes = encode(&advert(Version::V2, &["198.51.100.100"]), &meta);
    let ttl_254 = RecvMeta {
        hop_limit: 254,
        ..meta
    };
    assert!(decode(&ttl_254, &bytes).is_err());
    assert_eq!(peek_vrid(&bytes), VrId::new(51));
    assert_eq!(peek_vrid(&bytes[..7]), None);
    assert_eq!(peek_vrid(&[0x21, 0, 0, 0, 0, 0, 0, 0]), None);
}

// Decoding: one test per drop reason, each with its counter.

#[test]
fn hop_limit_not_255() {
    let meta = v4_meta();
    let bytes = encode(&advert(Version::V2, &["198.51.100.100"]), &meta);
    for hop_limit in [0, 1, 64, 254] {
        let error = decode_err(&RecvMeta { hop_limit, ..meta }, &bytes);
        assert_eq!(error, DecodeError::HopLimit { hop_limit });
        assert_eq!(error.counter(), Counter::IpTtlErrors);
    }
}

#[test]
fn mixed_families() {
    let meta = RecvMeta {
        dst: ip("ff02::12"),
        ..v4_meta()
    };
    let bytes = encode(&advert(Version::V3, &["198.51.100.100"]), &v4_meta());
    let error = decode_err(&meta, &bytes);
    assert!(
        matches!(error, DecodeError::MixedFamilies { .. }),
        "{error:?}"
    );
    assert_eq!(error.counter(), Counter::AddressListErrors);
}

#[test]
fn too_short_for_header() {
    for len in 0..HEADER_LEN {
        let bytes = vec![0x31; len];
        let error = decode_err(&v4_meta(), &bytes);
        assert_eq!(error, DecodeError::TooShort { len });
        assert_eq!(error.counter(), Counter::PacketLengthErrors);
    }
}

#[test]
fn unknown_version() {
    let meta = v4_meta();
    let mut bytes = encode(&advert(Version::V3, &["198.51.100.100"]), &meta);
    for version in [0u8, 1, 4, 15] {
        bytes[0] = (version << 4) | 1;
        fix_checksum(&mut bytes, &meta);
        let error = decode_err(&meta, &bytes);
        assert_eq!(error, DecodeError::UnknownVersion { version });
        assert_eq!(error.counter(), Counter::VersionErrors);
    }
}

#[test]
fn v2_over_ipv6() {
    let meta = v6_meta();
    let mut bytes = encode(&advert(Version::V3, &["2001:db8::1"]), &meta);
    bytes[0] = 0x21;
    let error = decode_err(&meta, &bytes);
    assert_eq!(error, DecodeError::V2OverIpv6);
    assert_eq!(error.counter(), Counter::VersionErrors);
}

#[test]
fn not_an_advertisement() {
    let meta = v4_meta();
    let mut bytes = encode(&advert(Version::V2, &["198.51.100.100"]), &meta);
    bytes[0] = 0x22;
    fix_checksum(&mut bytes, &meta);
    let error = decode_err(&meta, &bytes);
    assert_eq!(error, DecodeError::NotAdvertisement { msg_type: 2 });
    assert_eq!(error.counter(), Counter::RcvdInvalidType);
}

#[test]
fn zero_vrid() {
    let meta = v6_meta();
    let mut bytes = encode(&advert(Version::V3, &["2001:db8::1"]), &meta);
    bytes[1] = 0;
    fix_checksum(&mut bytes, &meta);
    let error = decode_err(&meta, &bytes);
    assert_eq!(error, DecodeError::ZeroVrId);
    assert_eq!(error.counter(), Counter::VrIdErrors);
}

#[test]
fn length_does_not_match_count() {
    let meta = v4_meta();
    let good = encode(
        &advert(Version::V2, &["198.51.100.100", "198.51.100.101"]),
        &meta,
    );
    // Truncated, one byte too long, and a count that disagrees with the length.
    let mut truncated = good[..good.len() - 1].to_vec();
    let mut padded = [good.as_slice(), &[0]].concat();
    let mut recounted = good.clone();
    recounted[3] = 3;
    for (bytes, count, expected, actual) in [
        (&mut truncated, 2, 24, 23),
        (&mut padded, 2, 24, 25),
        (&mut recounted, 3, 28, 24),
    ] {
        fix_checksum(bytes, &meta);
        let error = decode_err(&meta, bytes);
        assert_eq!(
            error,
            DecodeError::LengthMismatch {
                count,
                expected,
                actual
            }
        );
        assert_eq!(error.counter(), Counter::PacketLengthErrors);
    }
}

#[test]
fn v2_without_room_for_auth_data() {
    let meta = v4_meta();
    let mut bytes = encode(&advert(Version::V2, &["198.51.100.100"]), &meta);
    bytes.truncate(12);
    let error = decode_err(&meta, &bytes);
    assert_eq!(
        error,
        DecodeError::LengthMismatch {
            count: 1,
            expected: 20,
            actual: 12
        }
    );
}

#[test]
fn addresses_of_the_other_family() {
    // IPv6 addresses sent over IPv4, and IPv4 addresses sent over IPv6.
    let v6_in_v4 = encode(&advert(Version::V3, &["2001:db8::1"]), &v4_meta());
    let error = decode_err(&v4_meta(), &v6_in_v4);
    assert_eq!(
        error,
        DecodeError::AddressFamily {
            count: 1,
            found: "IPv6",
            carried: "IPv4"
        }
    );
    assert_eq!(error.counter(), Counter::AddressListErrors);
    assert_eq!(
        error.to_string(),
        "the 1 addresses are IPv6, but the packet came over IPv4"
    );

    let v4_in_v6 = encode(&advert(Version::V3, &["198.51.100.1"]), &v6_meta());
    let error = decode_err(&v6_meta(), &v4_in_v6);
    assert_eq!(
        error,
        DecodeError::AddressFamily {
            count: 1,
            found: "IPv4",
            carried: "IPv6"
        }
    );
}

#[test]
fn bad_checksum_v2() {
    let meta = v4_meta();
    let mut bytes = encode(&advert(Version::V2, &["198.51.100.100"]), &meta);
    bytes[7] ^= 1;
    let error = decode_err(&meta, &bytes);
    assert_eq!(
        error,
        DecodeError::Checksum {
            received: 0x1e33,
            computed: 0x1e32,
            computed_without_pseudo_header: None
        }
    );
    assert_eq!(error.counter(), Counter::ChecksumErrors);
    assert_eq!(error.to_string(), "bad checksum 0x1e33: expected 0x1e32");
}

#[test]
fn bad_checksum_v3_ipv4_names_both_forms() {
    let meta = v4_meta();
    let mut bytes = encode(&advert(Version::V3, &["198.51.100.100"]), &meta);
    bytes[2] = 151; // priority changed in flight, checksum not updated
    let error = decode_err(&meta, &bytes);
    let DecodeError::Checksum {
        computed,
        computed_without_pseudo_header: Some(plain),
        ..
    } = error
    else {
        panic!("expected a v3 IPv4 checksum error, got {error:?}");
    };
    assert_eq!(
        computed,
        checksum::compute(
            &bytes,
            Coverage::PseudoHeader {
                src: meta.src,
                dst: meta.dst
            }
        )
    );
    assert_eq!(plain, checksum::compute(&bytes, Coverage::Message));
    assert!(
        error.to_string().contains("with the IPv4 pseudo-header or"),
        "{error}"
    );
}

#[test]
fn bad_checksum_v3_ipv6_requires_pseudo_header() {
    let meta = v6_meta();
    let advert = advert(Version::V3, &["2001:db8::1"]);
    let mut bytes = encode(&advert, &meta);
    // A checksum over the message alone is not accepted over IPv6.
    let plain = checksum::compute(&bytes, Coverage::Message);
    bytes[6..8].copy_from_slice(&plain.to_be_bytes());
    let error = decode_err(&meta, &bytes);
    assert!(matches!(
        error,
        DecodeError::Checksum {
            computed_without_pseudo_header: None,
            ..
        }
    ));
    // Nor one computed for other addresses.
    let other = RecvMeta {
        src: ip("fe80::2"),
        ..meta
    };
    assert!(matches!(
        decode_err(&other, &encode(&advert, &meta)),
        DecodeError::Checksum { .. }
    ));
}

#[test]
fn zero_interval() {
    for (version, meta) in [
        (Version::V2, v4_meta()),
        (Version::V3, v4_meta()),
        (Version::V3, v6_meta()),
    ] {
        let address = if meta.src.is_ipv4() {
            "198.51.100.1"
        } else {
            "2001:db8::1"
        };
        let mut bytes = encode(&advert(version, &[address]), &meta);
        bytes[4] &= 0xf0;
        bytes[5] = 0;
        fix_checksum(&mut bytes, &meta);
        let error = decode_err(&meta, &bytes);
        assert_eq!(error, DecodeError::ZeroInterval);
        assert_eq!(error.counter(), Counter::AdvIntervalErrors);
    }
}

#[test]
fn ip_authentication_header_is_rejected_with_its_reason() {
    let meta = v4_meta();
    let mut bytes = encode(&advert(Version::V2, &["198.51.100.100"]), &meta);
    bytes[4] = 2;
    fix_checksum(&mut bytes, &meta);
    let error = decode_err(&meta, &bytes);
    assert_eq!(error, DecodeError::AuthHeader);
    assert_eq!(error.counter(), Counter::InvalidAuthType);
    assert_eq!(
        error.to_string(),
        "IP Authentication Header (type 2) is not supported (RFC 3768 removed it)"
    );
}

#[test]
fn unknown_auth_type() {
    let meta = v4_meta();
    let mut bytes = encode(&advert(Version::V2, &["198.51.100.100"]), &meta);
    for auth_type in [3u8, 0x80, 0xff] {
        bytes[4] = auth_type;
        fix_checksum(&mut bytes, &meta);
        let error = decode_err(&meta, &bytes);
        assert_eq!(error, DecodeError::UnknownAuthType { auth_type });
        assert_eq!(error.counter(), Counter::InvalidAuthType);
    }
}

// The view.

#[test]
fn packet_view_never_panics_after_new_checked() {
    for len in 0..40 {
        let bytes = vec![0x21; len];
        let Ok(packet) = Packet::new_checked(bytes.as_slice()) else {
            assert!(len < HEADER_LEN);
            continue;
        };
        let _ = (
            packet.version(),
            packet.msg_type(),
            packet.vr_id(),
            packet.priority(),
        );
        let _ = (
            packet.addr_count(),
            packet.auth_type(),
            packet.adver_int_secs(),
        );
        let _ = (packet.reserved(), packet.max_adver_int(), packet.checksum());
        let expected_addresses = len.saturating_sub(16);
        assert_eq!(
            packet.address_bytes().len(),
            expected_addresses,
            "len {len}"
        );
        assert_eq!(packet.auth_data().is_some(), len >= 16);
    }
}

#[test]
fn packet_setters_round_trip() {
    let mut buf = [0xa5u8; 12];
    let mut packet = Packet::new_checked(&mut buf[..]).expect("long enough");
    packet.set_version_and_type(3, 1);
    packet.set_vr_id(7);
    packet.set_priority(200);
    packet.set_addr_count(1);
    packet.set_max_adver_int(0xfabc);
    packet.set_checksum(0x1234);
    packet.address_bytes_mut().copy_from_slice(&[1, 2, 3, 4]);
    let packet = Packet::new_unchecked(&buf[..]);
    assert_eq!(
        (packet.version(), packet.msg_type(), packet.vr_id()),
        (3, 1, 7)
    );
    assert_eq!(
        (packet.priority(), packet.addr_count(), packet.reserved()),
        (200, 1, 0)
    );
    assert_eq!(
        (packet.max_adver_int(), packet.checksum()),
        (0x0abc, 0x1234)
    );
    assert_eq!(packet.address_bytes(), [1, 2, 3, 4]);
}
