//! Ownership of keys: which shard owns a session key.
//!
//! The owner must be the same on every shard and across restarts (journals are replayed by the
//! owner), so the hash is a fixed, unseeded FNV-1a 64, and the bucket is chosen by jump
//! consistent hashing (Lamping & Veach), which moves only `1/N` of the keys when `N` grows.

use crate::ShardId;

/// FNV-1a 64-bit hash of `bytes`. Fixed constants: the result never changes between builds.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Jump consistent hash: maps `key` to a bucket in `0..buckets` (`buckets >= 1`).
pub fn jump(mut key: u64, buckets: usize) -> usize {
    let buckets = buckets.max(1) as i64;
    let mut b: i64 = -1;
    let mut j: i64 = 0;
    while j < buckets {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = (((b + 1) as f64) * ((1i64 << 31) as f64 / (((key >> 33) + 1) as f64))) as i64;
    }
    b as usize
}

/// The shard that owns `key` among `shards` shards.
pub fn owner(key: &str, shards: usize) -> ShardId {
    ShardId(jump(fnv1a64(key.as_bytes()), shards))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_is_stable_and_in_range() {
        for n in 1..8 {
            for i in 0..1000 {
                let k = format!("agent:main:s{i}");
                let o = owner(&k, n);
                assert!(o.0 < n);
                assert_eq!(o, owner(&k, n));
            }
        }
    }

    #[test]
    fn keys_spread_over_shards() {
        let mut counts = [0usize; 4];
        for i in 0..4000 {
            counts[owner(&format!("agent:main:user{i}"), 4).0] += 1;
        }
        for c in counts {
            assert!((800..1200).contains(&c), "uneven spread: {counts:?}");
        }
    }

    #[test]
    fn growing_moves_few_keys() {
        let moved = (0..10_000)
            .filter(|i| {
                let k = format!("k{i}");
                owner(&k, 4) != owner(&k, 5)
            })
            .count();
        // about 1/5 of the keys move from 4 to 5 buckets
        assert!((1500..2500).contains(&moved), "moved {moved}");
    }

    #[test]
    fn fnv_known_vector() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
