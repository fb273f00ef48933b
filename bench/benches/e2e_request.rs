//! One request end to end, as a client sees it: a real gateway (`shardgate::app::serve`, one
//! shard, token auth, in-memory queue, no log subscriber) runs in this process on its own
//! threads; one client (`shardgate::client::Client`, blocking tungstenite over loopback, after
//! the real `connect.challenge` → `connect` handshake) sends a request and waits for its answer.
//!
//! - `health`: request → `res`.
//! - `agent`: request (unique `idempotencyKey`, session `bench-1`, message `"hi"`) → `res`
//!   `accepted` → echo-agent events (skipped) → final `res`.
//!
//! The time includes the client's own JSON work (it builds the request as a `Value` and parses
//! every frame it reads), two loopback socket hops and the wake-ups of the shard's executor and
//! of the client thread; on a 2-vCPU machine the shard (pinned) and the client share the box.
//! Like the binary, the process allocates with mimalloc.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde_json::json;
use shardgate_bench::{agent_params, InProcessGateway};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn bench(c: &mut Criterion) {
    let gw = InProcessGateway::start();
    let mut client = gw.client();
    let mut n = 0u64;
    let mut g = c.benchmark_group("e2e_request");
    g.throughput(Throughput::Elements(1));
    g.bench_function("health", |b| {
        b.iter(|| {
            client
                .request("health", json!({}), false, |_| {})
                .expect("health answers")
        })
    });
    g.bench_function("agent", |b| {
        b.iter(|| {
            n += 1;
            let fin = client
                .request("agent", agent_params(n), true, |_| {})
                .expect("agent answers");
            debug_assert_eq!(fin["status"], "ok");
            fin
        })
    });
    g.finish();
    client.close();
}

criterion_group!(benches, bench);
criterion_main!(benches);
