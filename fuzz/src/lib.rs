//! shardgate's fuzz targets, one function each, run two ways from one definition:
//!
//! - on stable, inside `cargo test --workspace` (tests/targets.rs): every input of the
//!   committed corpus (`fuzz/corpus/<target>/`), then a bounded number of seeded mutations of
//!   it, so CI exercises every target on every run, deterministically;
//! - under libFuzzer (coverage-guided, nightly): `fuzz/libfuzzer` has one `fuzz_target!` per
//!   function here, each a one-line call (see fuzz/README.md).
//!
//! Each target takes arbitrary bytes, calls the real library functions and panics when an
//! invariant breaks (a panic inside the library is a failure too): never a panic on client
//! input, limits respected, the same answer however the input is cut into reads, round trips
//! where the format has one. The input's layout (a few option bytes, then the data) is
//! documented on each target.

pub mod config;
pub mod connect;
pub mod frame;
pub mod http_head;
pub mod inflate;
pub mod journal;
pub mod mutate;
pub mod seeds;
pub mod session_key;
pub mod ws_frames;

/// A fuzz target: panics when an invariant breaks.
pub type Target = fn(&[u8]);

/// Every target by name (the name of its corpus folder and of its libFuzzer binary).
pub const TARGETS: &[(&str, Target)] = &[
    ("ws_frames", ws_frames::run),
    ("inflate", inflate::run),
    ("http_head", http_head::run),
    ("frame", frame::run),
    ("connect", connect::run),
    ("config", config::run),
    ("session_key", session_key::run),
    ("journal", journal::run),
];

/// Splits chunk sizes for feeding `len` bytes from a seed: single bytes, small reads and
/// large ones mixed, deterministic for a given seed.
pub fn chunk_plan(len: usize, seed: u64) -> Vec<usize> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out = Vec::new();
    let mut left = len;
    while left > 0 {
        let n = match rng.gen_range(0..4) {
            0 => 1,
            1 => rng.gen_range(1..16),
            2 => rng.gen_range(1..2048),
            _ => 1 << 16,
        }
        .min(left);
        out.push(n);
        left -= n;
    }
    out
}
