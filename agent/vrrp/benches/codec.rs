//! Decode and emit throughput of the VRRP codec: v2, v3 over IPv4 and v3 over IPv6, with 1 and
//! 8 virtual addresses. Criterion reports time per packet and packets per second (elements/s).
//!
//! Run: `cargo bench -p hav-vrrp --bench codec -- --warm-up-time 1 --measurement-time 2`

use std::hint::black_box;
use std::net::IpAddr;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hav_vrrp::wire::{self, Advertisement, RecvMeta};
use hav_vrrp::{AdvertInterval, Auth, Priority, V3Checksum, Version, VrId};

struct Case {
    name: String,
    advert: Advertisement,
    meta: RecvMeta,
}

fn cases() -> Vec<Case> {
    let v4 = |i: u8| IpAddr::from([198, 51, 100, i]);
    let v6 = |i: u16| IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, i]);
    let v4_meta = RecvMeta {
        src: v4(11),
        dst: wire::MULTICAST_V4.into(),
        hop_limit: 255,
    };
    let v6_meta = RecvMeta {
        src: IpAddr::from([0xfe80, 0, 0, 0, 0, 0, 0, 0x11]),
        dst: wire::MULTICAST_V6.into(),
        hop_limit: 255,
    };
    let mut cases = Vec::new();
    for count in [1u8, 8] {
        let flavours = [
            (
                "v2",
                Version::V2,
                (0..count).map(|i| v4(100 + i)).collect::<Vec<_>>(),
                v4_meta,
            ),
            (
                "v3-ipv4",
                Version::V3,
                (0..count).map(|i| v4(100 + i)).collect(),
                v4_meta,
            ),
            (
                "v3-ipv6",
                Version::V3,
                (0..count).map(|i| v6(0x100 + u16::from(i))).collect(),
                v6_meta,
            ),
        ];
        for (flavour, version, addresses, meta) in flavours {
            let advert = Advertisement {
                version,
                vrid: VrId::new(51).expect("non-zero"),
                priority: Priority(150),
                interval: AdvertInterval::DEFAULT,
                addresses,
                auth: Auth::None,
            };
            cases.push(Case {
                name: format!("{flavour}/{count}-addr"),
                advert,
                meta,
            });
        }
    }
    cases
}

fn codec(c: &mut Criterion) {
    let cases = cases();
    let mut decode = c.benchmark_group("decode");
    decode.throughput(Throughput::Elements(1));
    for case in &cases {
        let bytes = case
            .advert
            .to_bytes(case.meta.src, case.meta.dst, V3Checksum::PseudoHeader);
        decode.bench_function(&case.name, |b| {
            b.iter(|| wire::decode(black_box(&case.meta), black_box(&bytes)))
        });
    }
    decode.finish();

    let mut emit = c.benchmark_group("emit");
    emit.throughput(Throughput::Elements(1));
    for case in &cases {
        let mut buf = vec![0; case.advert.buffer_len()];
        emit.bench_function(&case.name, |b| {
            b.iter(|| {
                black_box(&case.advert).emit(
                    &mut buf,
                    case.meta.src,
                    case.meta.dst,
                    V3Checksum::PseudoHeader,
                );
                black_box(&buf);
            })
        });
    }
    emit.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
