//! Ed25519 device proof verification at connect: `auth::device::verify` (public key decode,
//! device id = SHA-256 check, skew and nonce checks, v3 payload, `verify_strict`), plus the
//! v2 fallback path (v3 fails, then v2 verifies) and signing as the client does it.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use shardgate::auth::device::verify;
use shardgate_bench::SignedConnect;

fn bench(c: &mut Criterion) {
    let s = SignedConnect::new();
    let v2_sig = s.identity.sign_connect_v2(
        &s.nonce,
        s.signed_at_ms,
        "cli",
        "cli",
        "operator",
        &s.scopes,
        &s.token,
    )["signature"]
        .as_str()
        .expect("signature")
        .to_string();
    let mut g = c.benchmark_group("device");
    g.bench_function("verify_v3", |b| {
        b.iter(|| verify(black_box(&s.proof()), &s.nonce, s.signed_at_ms).expect("valid"))
    });
    g.bench_function("verify_v2_fallback", |b| {
        let mut p = s.proof();
        p.signature = &v2_sig;
        b.iter(|| verify(black_box(&p), &s.nonce, s.signed_at_ms).expect("valid"))
    });
    g.bench_function("sign_connect_v3", |b| {
        b.iter(|| {
            s.identity.sign_connect(
                black_box(&s.nonce),
                s.signed_at_ms,
                "cli",
                "cli",
                "operator",
                &s.scopes,
                &s.token,
                Some("linux"),
                None,
            )
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
