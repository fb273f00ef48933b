//! The stable runner's input generator: seeded mutations of a corpus, the classic
//! libFuzzer moves without the coverage feedback (flip a bit, set an interesting byte,
//! insert, delete, duplicate, splice, truncate). Deterministic for a seed, so a failure in
//! CI replays on any machine.

use rand::rngs::StdRng;
use rand::Rng;

/// Bytes that sit on boundaries of the formats fuzzed here.
const INTERESTING: [u8; 16] = [
    0, 1, 0x7e, 0x7f, 0x80, 0xff, b'\r', b'\n', b':', b'"', b'{', b'}', b'[', b'\\', 0xc3, 0x7d,
];

/// One to four mutations of `input`, using `other` for splices.
pub fn mutate(rng: &mut StdRng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..rng.gen_range(1..=4) {
        let len = v.len();
        match rng.gen_range(0..8) {
            0 if len > 0 => {
                let i = rng.gen_range(0..len);
                v[i] ^= 1 << rng.gen_range(0..8);
            }
            1 if len > 0 => {
                let i = rng.gen_range(0..len);
                v[i] = INTERESTING[rng.gen_range(0..INTERESTING.len())];
            }
            2 => {
                let i = rng.gen_range(0..=len);
                let n = rng.gen_range(1..=8);
                let bytes: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
                v.splice(i..i, bytes);
            }
            3 if len > 0 => {
                let i = rng.gen_range(0..len);
                let n = rng.gen_range(1..=(len - i).min(16));
                v.drain(i..i + n);
            }
            4 if len > 0 => {
                // Duplicate a range (repeated headers, frames, records).
                let i = rng.gen_range(0..len);
                let n = rng.gen_range(1..=(len - i).min(256));
                let dup = v[i..i + n].to_vec();
                let at = rng.gen_range(0..=len);
                v.splice(at..at, dup);
            }
            5 if !other.is_empty() => {
                let i = rng.gen_range(0..=len);
                let j = rng.gen_range(0..other.len());
                v.truncate(i);
                v.extend_from_slice(&other[j..]);
            }
            6 if len > 2 => v.truncate(rng.gen_range(2..len)),
            _ if len > 0 => {
                // The option bytes at the front matter most: change them often.
                let i = rng.gen_range(0..len.min(3));
                v[i] = rng.gen();
            }
            _ => v.push(rng.gen()),
        }
    }
    v
}
