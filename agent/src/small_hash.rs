//! A hasher for the small keys on the per-advert path (router ids, a VRID with an address).
//!
//! One multiply-and-rotate per word instead of SipHash's rounds. It resists no chosen-key
//! flooding, so it only keys maps the daemon bounds itself (the heard sources are capped) or
//! fills from its own config.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// An odd constant with well-spread bits (the golden ratio's fraction).
const SPREAD: u64 = 0x9e37_79b9_7f4a_7c15;

/// See the module documentation.
#[derive(Debug, Default, Clone, Copy)]
pub struct SmallHasher(u64);

impl SmallHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(26) ^ word).wrapping_mul(SPREAD);
    }
}

impl Hasher for SmallHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word) ^ ((rest.len() as u64) << 59));
        }
    }

    fn write_u8(&mut self, value: u8) {
        self.add(u64::from(value));
    }

    fn write_u16(&mut self, value: u16) {
        self.add(u64::from(value));
    }

    fn write_u32(&mut self, value: u32) {
        self.add(u64::from(value));
    }

    fn write_u64(&mut self, value: u64) {
        self.add(value);
    }

    fn write_usize(&mut self, value: usize) {
        self.add(value as u64);
    }

    fn finish(&self) -> u64 {
        // The table takes its control bits from the top and its index from the bottom: one more
        // fold and multiply spreads every input bit over both.
        let folded = (self.0 ^ (self.0 >> 32)).wrapping_mul(SPREAD);
        folded ^ (folded >> 29)
    }
}

/// A `HashMap` keyed through [`SmallHasher`].
pub type SmallMap<K, V> = HashMap<K, V, BuildHasherDefault<SmallHasher>>;

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::hash::{BuildHasher, Hash};
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use super::*;

    fn hash(value: impl Hash) -> u64 {
        BuildHasherDefault::<SmallHasher>::default().hash_one(value)
    }

    #[test]
    fn nearby_keys_spread_over_the_low_and_high_bits() {
        let keys: Vec<(u8, IpAddr)> = (0..=255u8)
            .flat_map(|vrid| {
                (1..=4u8).flat_map(move |host| {
                    [
                        (vrid, IpAddr::V4(Ipv4Addr::new(198, 51, 100, host))),
                        (
                            vrid,
                            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, host.into())),
                        ),
                    ]
                })
            })
            .collect();
        let hashes: HashSet<u64> = keys.iter().map(hash).collect();
        assert_eq!(hashes.len(), keys.len(), "no two keys collide");
        // 2,048 keys into 256 buckets by the low bits, and by the top 7 bits (hashbrown's
        // control byte): none of them may be crowded.
        let mut low = [0u32; 256];
        let mut top = [0u32; 128];
        for h in &hashes {
            low[(h & 0xff) as usize] += 1;
            top[(h >> 57) as usize] += 1;
        }
        assert!(low.iter().all(|&n| n <= 24), "low bits crowd: {low:?}");
        assert!(top.iter().all(|&n| n <= 40), "top bits crowd: {top:?}");
    }

    #[test]
    fn a_map_finds_what_it_holds() {
        let mut map: SmallMap<(u8, IpAddr), u32> = SmallMap::default();
        for vrid in 0..=255u8 {
            map.insert(
                (vrid, IpAddr::V4(Ipv4Addr::new(203, 0, 113, vrid))),
                vrid.into(),
            );
        }
        for vrid in 0..=255u8 {
            let key = (vrid, IpAddr::V4(Ipv4Addr::new(203, 0, 113, vrid)));
            assert_eq!(map.get(&key), Some(&u32::from(vrid)));
        }
        assert_eq!(map.len(), 256);
    }
}
