//! Every fuzz target as a bounded, deterministic test on stable: the committed corpus
//! (`fuzz/corpus/<target>/`) replayed, then seeded mutations of it. `FUZZ_ITERS=N` sets the
//! mutations per target (default 300; CI uses the default). A failing input is written to
//! `target/fuzz-failures/<target>-<n>` and named in the panic message; copy it into the
//! corpus as `regress-*` once fixed.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use shardgate_fuzz::{mutate::mutate, Target, TARGETS};

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target)
}

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(corpus_dir(target))
        .unwrap_or_else(|e| panic!("corpus of {target}: {e}"))
        .flatten()
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (name, std::fs::read(e.path()).expect("corpus file"))
        })
        .collect();
    v.sort();
    v
}

fn iters() -> u32 {
    std::env::var("FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
}

/// Runs `f` on `input`; on a panic, keeps the input and fails naming it.
fn check(target: &str, n: u64, f: Target, input: &[u8]) {
    if let Err(e) = catch_unwind(AssertUnwindSafe(|| f(input))) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/fuzz-failures");
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join(format!("{target}-{n}"));
        let _ = std::fs::write(&path, input);
        let why = e
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        panic!("{target}: input {} failed: {why}", path.display());
    }
}

fn run(target: &str) {
    let f = TARGETS
        .iter()
        .find(|(n, _)| *n == target)
        .map(|(_, f)| *f)
        .expect("a target of that name");
    let corpus = corpus(target);
    assert!(
        corpus.iter().any(|(n, _)| n.starts_with("seed-")),
        "{target}: no seed corpus"
    );
    for (i, (_, input)) in corpus.iter().enumerate() {
        check(target, i as u64, f, input);
    }
    let seed = target
        .bytes()
        .fold(0xf022u64, |h, b| h.wrapping_mul(31) ^ u64::from(b));
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let n = iters();
    for i in 0..n {
        let a = &corpus[rng.gen_range(0..corpus.len())].1;
        let b = &corpus[rng.gen_range(0..corpus.len())].1;
        let input = mutate(&mut rng, a, b);
        check(target, 1_000_000 + u64::from(i), f, &input);
    }
    eprintln!(
        "fuzz {target}: {} corpus inputs, {n} mutations",
        corpus.len()
    );
}

#[test]
fn ws_frames() {
    run("ws_frames");
}

#[test]
fn inflate() {
    run("inflate");
}

#[test]
fn http_head() {
    run("http_head");
}

#[test]
fn frame() {
    run("frame");
}

#[test]
fn connect() {
    run("connect");
}

#[test]
fn config() {
    run("config");
}

#[test]
fn session_key() {
    run("session_key");
}

#[test]
fn journal() {
    run("journal");
}

/// The CVE-2023-43669 shape in full: a head near the limit, one byte per read, costs work
/// linear in its length (the old parser re-scanned the whole buffer each read: ~120 MB of
/// scanning for this head, against < 64 KB now).
#[test]
fn long_head_one_byte_per_read_costs_linear_work() {
    use shardgate_fuzz::http_head::{feed, Outcome};
    let head = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Long: {}\r\n\r\n",
        "a".repeat(16_000)
    );
    let (out, work, buffered) = feed(head.as_bytes(), &vec![1; head.len()]);
    assert!(matches!(out, Outcome::Head(_)), "{out:?}");
    assert_eq!(buffered, head.len());
    assert!(
        work <= 4 * head.len(),
        "{work} B parsed for {} B",
        head.len()
    );
    eprintln!(
        "long head: {} B, one byte per read, {work} B parsed",
        head.len()
    );
    // Past the limit: refused once the limit is reached, the work still linear.
    let too_long = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(40_000));
    let (out, work, buffered) = feed(too_long.as_bytes(), &vec![1; too_long.len()]);
    assert_eq!(out, Outcome::Refused);
    assert!(buffered <= shardgate::transport::http::MAX_HEAD && work <= 4 * buffered);
}
