//! Session key normalisation: `protocol::SessionKey::parse` on the spellings clients send
//! (bare, scoped, direct, legacy upper-case `:dm:`, thread).

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use shardgate::protocol::SessionKey;
use shardgate_bench::SESSION_KEYS;

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("session_key_parse");
    for (name, k) in SESSION_KEYS {
        g.bench_function(*name, |b| {
            b.iter(|| SessionKey::parse(black_box(k), "main").expect("valid"))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
