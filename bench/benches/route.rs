//! The session hash: `shards::route::owner` (FNV-1a 64 + jump consistent hash) for keys of
//! typical lengths and a few shard counts.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use shards::route::owner;

fn bench(c: &mut Criterion) {
    let keys = [
        ("main", "agent:main:main"),
        ("direct", "agent:main:telegram:direct:123456789"),
        ("thread", "agent:main:discord:group:9876543210:thread:1234"),
    ];
    let mut g = c.benchmark_group("route_owner");
    for (name, k) in keys {
        for shards in [1usize, 2, 8, 64] {
            g.bench_function(format!("{name}/{shards}_shards"), |b| {
                b.iter(|| owner(black_box(k), black_box(shards)))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
