//! Maps and sets keyed by host ids, with a hasher made for integer keys.
//!
//! Host choice looks up every matching host's bookings, and whether it is held or taken: at
//! 5,000 matching hosts that is tens of thousands of lookups per create, and std's SipHash (made
//! to resist keys chosen by an attacker, which database ids are not) was ~4% of a create's CPU.

use std::{
    collections::{HashMap, HashSet},
    hash::{BuildHasherDefault, Hasher},
};

/// A map keyed by host id.
pub type HostMap<V> = HashMap<i64, V, BuildHasherDefault<IdHasher>>;
/// A set of host ids.
pub type HostSet = HashSet<i64, BuildHasherDefault<IdHasher>>;

/// Multiply-rotate hashing of integer keys (as rustc's FxHash): one multiplication per key.
#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(SEED);
    }

    fn write_i64(&mut self, n: i64) {
        self.write_u64(n as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_found_and_spread() {
        let mut m: HostMap<i64> = HostMap::default();
        for id in 1..=10_000 {
            m.insert(id, id * 2);
        }
        assert!((1..=10_000).all(|id| m[&id] == id * 2));
        assert!(!m.contains_key(&0) && !m.contains_key(&10_001));
        // hashbrown picks a bucket from a hash's low bits and tags it with its top 7: consecutive
        // ids (database ids are) fill distinct buckets, and their tags take every value.
        let hashes: Vec<u64> = (1..=1024)
            .map(|id: i64| {
                let mut h = IdHasher::default();
                h.write_i64(id);
                h.finish()
            })
            .collect();
        let buckets: HostSet = hashes.iter().map(|h| (h & 1023) as i64).collect();
        let tags: HostSet = hashes.iter().map(|h| (h >> 57) as i64).collect();
        assert_eq!(buckets.len(), 1024, "consecutive ids share buckets");
        assert_eq!(tags.len(), 128, "{} distinct tags of 128", tags.len());
    }
}
