//! Outbound frame encoding: `protocol::frame::event` (a `chat` delta, with and without
//! `seq`/`stateVersion`), `protocol::frame::res_ok` (the final `agent` answer), and
//! `protocol::frame::push_json_str` (string literals of the hand-written per-word events)
//! against serde_json's string serializer.

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
    // The text of a streamed run as the per-word frames carry it (about 20 words), plain and
    // with non-ASCII; serde_json's own string serializer is the baseline in the same run.
    let ascii =
        "the quick brown fox jumps over the lazy dog and then some more words follow it ".repeat(2);
    let mixed =
        "naïve café — déjà vu, 中文 text and an emoji 🎉 in the middle of a sentence ".repeat(2);
    for (name, text) in [("ascii", &ascii), ("non_ascii", &mixed)] {
        g.bench_function(format!("json_str/{name}/push_json_str"), |b| {
            let mut s = String::with_capacity(512);
            b.iter(|| {
                s.clear();
                frame::push_json_str(&mut s, black_box(text));
            })
        });
        g.bench_function(format!("json_str/{name}/serde_json_baseline"), |b| {
            let mut s = Vec::with_capacity(512);
            b.iter(|| {
                s.clear();
                let _ = serde_json::to_writer(&mut s, black_box(text.as_str()));
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
