//! Which live member should own a slot: rendezvous (highest-random-weight) hashing.
//!
//! Every member computes the same answer from the same live set, with no coordination:
//! the desired owner of a slot is the member with the highest `score(member, slot)`. When a
//! member joins, it takes only the slots where it now scores highest (about 1/n of them);
//! when one leaves, only its slots move, each to its runner-up. Nothing else moves.
//!
//! Invariant: the hash is fixed by this file, never by the build or the process (no
//! `std::collections::hash_map::DefaultHasher`, whose algorithm may change between Rust
//! releases): gateways of different builds in one cluster must agree.

/// FNV-1a, 64-bit, of `bytes`.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// splitmix64's finalizer: spreads every input bit over the output (FNV alone leaves the
/// high bits of similar short strings correlated, which would skew the weights).
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The weight of `member` for `slot`.
pub fn score(member: &str, slot: u32) -> u64 {
    mix64(fnv1a64(member.as_bytes()) ^ mix64(u64::from(slot).wrapping_add(1)))
}

/// Index into `members` of the desired owner of `slot` (highest score; on a tie, the greater
/// name, so the order of `members` never matters). `None` when there is no member.
pub fn owner<S: AsRef<str>>(members: &[S], slot: u32) -> Option<usize> {
    members
        .iter()
        .enumerate()
        .max_by(|(_, a), (_, b)| {
            let (a, b) = (a.as_ref(), b.as_ref());
            score(a, slot).cmp(&score(b, slot)).then_with(|| a.cmp(b))
        })
        .map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owners(members: &[&str], slots: u32) -> Vec<String> {
        (0..slots)
            .map(|s| members[owner(members, s).unwrap()].to_string())
            .collect()
    }

    /// The hash is pinned: a change here reshuffles every running cluster's slots.
    #[test]
    fn the_hash_is_fixed() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
        assert_eq!(mix64(0), 0);
        assert_eq!(mix64(1), 0x5692_161d_100b_05e5);
        assert_eq!(score("gw-a:18789", 0), score("gw-a:18789", 0));
        assert_ne!(score("gw-a:18789", 0), score("gw-a:18789", 1));
    }

    #[test]
    fn the_answer_does_not_depend_on_member_order() {
        let a = ["a:1", "b:1", "c:1"];
        let b = ["c:1", "a:1", "b:1"];
        assert_eq!(owners(&a, 256), owners(&b, 256));
        assert_eq!(owner::<&str>(&[], 3), None);
        assert_eq!(owner(&["only"], 3), Some(0));
    }

    #[test]
    fn slots_spread_evenly() {
        let m = ["a:1", "b:1", "c:1"];
        let o = owners(&m, 3000);
        for name in m {
            let n = o.iter().filter(|x| **x == name).count();
            assert!((850..=1150).contains(&n), "{name} owns {n} of 3000");
        }
    }

    /// A fourth member takes about a quarter, each moved slot goes to it, nothing else moves.
    #[test]
    fn a_join_moves_about_one_in_n_and_only_to_the_joiner() {
        let before = owners(&["a:1", "b:1", "c:1"], 4096);
        let after = owners(&["a:1", "b:1", "c:1", "d:1"], 4096);
        let moved: Vec<usize> = (0..4096).filter(|&i| before[i] != after[i]).collect();
        assert!(moved.iter().all(|&i| after[i] == "d:1"));
        let frac = moved.len() as f64 / 4096.0;
        assert!((0.21..=0.29).contains(&frac), "moved {frac}");
    }

    /// When a member leaves only its slots move; the others keep theirs.
    #[test]
    fn a_leave_moves_only_the_leavers_slots() {
        let before = owners(&["a:1", "b:1", "c:1", "d:1"], 4096);
        let after = owners(&["a:1", "b:1", "d:1"], 4096);
        for i in 0..4096 {
            if before[i] != "c:1" {
                assert_eq!(before[i], after[i], "slot {i} moved");
            } else {
                assert_ne!(after[i], "c:1");
            }
        }
    }
}
