//! Outbound frame encoding: `protocol::frame::event` (a `chat` delta, with and without
//! `seq`/`stateVersion`) and `protocol::frame::res_ok` (the final `agent` answer).

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use shardgate::protocol::frame;
use shardgate_bench::{agent_final_payload, chat_delta_payload};

fn bench(c: &mut Criterion) {
    let delta = chat_delta_payload(20);
    let fin = agent_final_payload();
    let accepted = serde_json::json!({"runId": "p123x9f-7-17", "status": "accepted",
                                      "acceptedAt": 1_760_000_000_000_i64});
    let mut g = c.benchmark_group("frame_encode");
    g.bench_function("event/chat_delta_seq", |b| {
        b.iter(|| frame::event("chat", black_box(&delta), Some(black_box(12_345)), None))
    });
    g.bench_function("event/presence_state_version", |b| {
        b.iter(|| {
            frame::event(
                "presence",
                black_box(r#"{"presence":[]}"#),
                Some(7),
                Some((3, 4)),
            )
        })
    });
    g.bench_function("res_ok/agent_accepted", |b| {
        b.iter(|| frame::res_ok(black_box("17"), black_box(&accepted)))
    });
    g.bench_function("res_ok/agent_final", |b| {
        b.iter(|| frame::res_ok(black_box("17"), black_box(&fin)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
