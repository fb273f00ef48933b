//! permessage-deflate's coders ([`shardgate::transport::deflate`]).
//!
//! Input: `[limit, bits, cut, data…]`. `limit` picks the message limit (0 B to 1 MiB),
//! `bits` the compressor's window (9–15), `cut` where the input is split into two frames.
//!
//! Invariants: inflating anything never panics and never hands out more than the limit (a
//! zip bomb is refused with `TooBig`, garbage with `Corrupt`); deflate then inflate gives the
//! message back, split into frames anywhere, or `TooBig` exactly when it is over the limit.

use shardgate::transport::deflate::{self, InflateError};

const LIMITS: [usize; 8] = [0, 1, 125, 1000, 16 << 10, 64 << 10, 256 << 10, 1 << 20];

/// The target.
pub fn run(data: &[u8]) {
    let [limit, bits, cut, data @ ..] = data else {
        return;
    };
    let limit = LIMITS[usize::from(*limit) % LIMITS.len()];
    let bits = 9 + bits % 7;
    let at = if data.is_empty() {
        0
    } else {
        usize::from(*cut) * data.len() / 255
    };
    // Anything as compressed data.
    let (a, b) = data.split_at(at);
    match deflate::with_inflated(&[a, b], limit, |out| out.len()) {
        Ok(n) => assert!(n <= limit, "inflated {n} B past the {limit} B limit"),
        Err(InflateError::TooBig(l)) => assert_eq!(l, limit),
        Err(InflateError::Corrupt) => {}
    }
    // A round trip of `data` as a message (compressed in two parts, inflated in two frames).
    let z = deflate::with_deflated(bits, &[a, b], |z| z.to_vec());
    let zcut = usize::from(*cut) * z.len() / 255;
    let back = deflate::with_inflated(&[&z[..zcut], &z[zcut..]], limit, |out| out.to_vec());
    if data.len() <= limit {
        assert_eq!(back.as_deref(), Ok(data), "round trip at {bits} bits");
    } else {
        assert_eq!(back, Err(InflateError::TooBig(limit)));
    }
}
