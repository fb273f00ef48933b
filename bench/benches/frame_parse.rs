//! Inbound frame parsing: `protocol::frame::parse` (typed, borrowed envelope + `Value` params)
//! against a plain `serde_json::from_str::<Value>` of the same text, for three typical frames.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use serde_json::Value;
use shardgate::protocol::frame;
use shardgate_bench::{chat_send_req, AGENT_REQ, HEALTH_REQ};

fn bench(c: &mut Criterion) {
    let chat = chat_send_req(20);
    let frames = [
        ("health", HEALTH_REQ),
        ("agent", AGENT_REQ),
        ("chat_send_20w", chat.as_str()),
    ];
    let mut g = c.benchmark_group("frame_parse");
    for (name, text) in frames {
        g.throughput(Throughput::Bytes(text.len() as u64));
        g.bench_function(format!("shardgate/{name}"), |b| {
            b.iter(|| frame::parse(black_box(text)))
        });
        g.bench_function(format!("serde_value/{name}"), |b| {
            b.iter(|| serde_json::from_str::<Value>(black_box(text)).expect("valid json"))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
