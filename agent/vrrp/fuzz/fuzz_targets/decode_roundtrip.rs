//! Round-trip fuzzing of the VRRP codec: whatever `decode` accepts, from any bytes with any
//! receive metadata, must re-encode to bytes that decode to the same value.
//!
//! Built by cargo-fuzz with `cfg(fuzzing)`, under which the codec skips checksum verification,
//! so the fuzzer reaches every check after it.
//!
//! Input layout: byte 0 bit 0 / bit 1 select an IPv6 source / destination, byte 1 is the hop
//! limit, then the source and destination addresses (4 or 16 bytes each), then the payload.

#![no_main]

use std::net::IpAddr;

use hav_vrrp::wire::{self, RecvMeta};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((meta, payload)) = split(data) else {
        return;
    };
    let Ok(received) = wire::decode(&meta, payload) else {
        return;
    };
    assert_eq!(received.advert.check_encodable(), Ok(()), "{received:?}");
    let mode = received.checksum.unwrap_or_default();
    let bytes = received.advert.to_bytes(meta.src, meta.dst, mode);
    assert_eq!(bytes.len(), received.advert.buffer_len());
    match wire::decode(&meta, &bytes) {
        Ok(again) => assert_eq!(again, received),
        Err(error) => panic!("re-encoded {received:?} does not decode: {error}"),
    }
});

fn split(data: &[u8]) -> Option<(RecvMeta, &[u8])> {
    let (&[flags, hop_limit], rest) = data.split_first_chunk::<2>()?;
    let (src, rest) = address(rest, flags & 1 != 0)?;
    let (dst, payload) = address(rest, flags & 2 != 0)?;
    Some((
        RecvMeta {
            src,
            dst,
            hop_limit,
        },
        payload,
    ))
}

fn address(data: &[u8], v6: bool) -> Option<(IpAddr, &[u8])> {
    if v6 {
        let (octets, rest) = data.split_first_chunk::<16>()?;
        Some((IpAddr::from(*octets), rest))
    } else {
        let (octets, rest) = data.split_first_chunk::<4>()?;
        Some((IpAddr::from(*octets), rest))
    }
}
