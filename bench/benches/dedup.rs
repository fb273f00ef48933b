//! The dedup ring (`shards::dedup::DedupRing`) at steady state: inserting into a full ring
//! (each insert evicts the oldest entry), and lookups that hit and miss, with the key shape
//! the gateway uses (`method:idempotencyKey`).

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion};
use shards::dedup::DedupRing;

const CAPACITY: usize = 10_000;
const WINDOW_MS: i64 = 300_000;

fn key(i: usize) -> String {
    format!("agent:p123x9f-{}-{i}", i % 100)
}

fn full_ring() -> DedupRing<String, u64> {
    let mut r = DedupRing::new(CAPACITY, WINDOW_MS);
    for i in 0..CAPACITY {
        r.insert(key(i), i as u64, 1_000);
    }
    r
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("dedup_ring");
    let keys: Vec<String> = (CAPACITY..CAPACITY * 2).map(key).collect();
    g.bench_function("insert_full_evicting", |b| {
        b.iter_batched_ref(
            full_ring,
            |r| {
                for (i, k) in keys.iter().take(1000).enumerate() {
                    r.insert(k.clone(), i as u64, 2_000);
                }
            },
            BatchSize::LargeInput,
        )
    });
    // The gateway's trace and run-directory pattern: a new run id, looked up by `&str` and
    // inserted (evicting the oldest) on the miss.
    g.bench_function("get_or_insert_new_full", |b| {
        b.iter_batched_ref(
            full_ring,
            |r| {
                for (i, k) in keys.iter().take(1000).enumerate() {
                    *r.get_or_insert_with(k.as_str(), 2_000, || 0) += i as u64;
                }
            },
            BatchSize::LargeInput,
        )
    });
    let ring = full_ring();
    let hit = key(CAPACITY / 2);
    let miss = key(CAPACITY * 3);
    g.bench_function("get_hit", |b| {
        b.iter(|| ring.get(black_box(&hit), 2_000).copied())
    });
    g.bench_function("get_miss", |b| {
        b.iter(|| ring.get(black_box(&miss), 2_000).copied())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
