//! The journal reader ([`shardgate::queue::journal::decode_prefix`]), plain and sealed.
//!
//! Input: `[flags, cut, segment…]`; `flags` bit 0: sealed with a fixed test key; `cut`
//! picks where a power loss cuts the segment.
//!
//! Invariants: never a panic, whatever the bytes (lengths past the end, zero lengths, bad
//! CRCs, bad ciphertext, bad JSON); the records read are exactly those of
//! `segment[..end]`, which reads back with no damage; a segment cut anywhere reads as a
//! prefix of the records of the whole (a torn tail never invents or reorders a record);
//! each record read encodes and decodes to itself.

use aes_gcm::{Aes256Gcm, KeyInit};
use shardgate::queue::journal::{decode_prefix, encode};

/// The key sealed corpus segments are made with.
pub const KEY: [u8; 32] = [7; 32];

/// The target.
pub fn run(data: &[u8]) {
    let [flags, cut, seg @ ..] = data else {
        return;
    };
    let key = Aes256Gcm::new_from_slice(&KEY).expect("32 bytes");
    let cipher = (flags & 1 != 0).then_some(&key);
    let d = decode_prefix(seg, cipher);
    assert!(d.end <= seg.len());
    let head = decode_prefix(&seg[..d.end], cipher);
    assert_eq!(head.records, d.records);
    assert!(head.damage.is_none() && head.end == d.end);
    let at = usize::from(*cut) * seg.len() / 255;
    let torn = decode_prefix(&seg[..at], cipher);
    assert!(
        d.records.starts_with(&torn.records),
        "cut at {at}: {:?} is not a prefix of {:?}",
        torn.records,
        d.records
    );
    for r in &d.records {
        let again = decode_prefix(&encode(r, cipher), cipher);
        assert_eq!(again.records.as_slice(), std::slice::from_ref(r));
    }
}
