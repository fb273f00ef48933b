//! Inbound frame parsing: `protocol::frame::parse` (typed, borrowed envelope; a submission's
//! params straight into their fields, other methods' into a `Value`)
//! against a plain `serde_json::from_str::<Value>` of the same text, for three typical frames,
//! and the same work done by simd-json, to see whether swapping the parser would pay:
//!
//! - `simd_typed`: the envelope `frame::parse` reads (type, id, method, `serde_json::Value`
//!   params, then sorted into `Params` as `frame::parse` does when params come before the
//!   method) through simd-json's serde deserializer, built into the same `frame::Request`,
//!   reusing simd-json's scratch buffers (`Buffers`, as a shard would keep one);
//! - `simd_typed_fresh`: the same with fresh scratch buffers per frame (`from_slice`);
//! - `simd_serde_value`: simd-json into a `serde_json::Value` (compare `serde_value`);
//! - `simd_borrowed`: simd-json's own DOM (`BorrowedValue`), its fastest tree.
//!
//! simd-json parses in place, so every simd variant first copies the frame into a reused
//! buffer (the gateway owns each frame's bytes and could skip that copy); the copy is timed.

use std::borrow::Cow;

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use serde::Deserialize;
use serde_json::Value;
use shardgate::protocol::frame;
use shardgate::protocol::method::Called;
use shardgate::protocol::params::Params;
use shardgate_bench::{chat_send_req, AGENT_REQ, HEALTH_REQ};

/// The envelope `frame::parse` reads, for simd-json's serde deserializer.
#[derive(Deserialize)]
struct SimdFrame<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    method: Option<Cow<'a, str>>,
    params: Option<Value>,
}

/// The checks `frame::parse` makes, on a simd-json envelope (invalid frames: `None`).
fn to_request(f: SimdFrame<'_>) -> Option<frame::Request> {
    if f.kind.as_deref() != Some("req") {
        return None;
    }
    let id = f.id.filter(|s| !s.is_empty())?.into_owned();
    let method = Called::parse(f.method.filter(|s| !s.is_empty())?);
    let params = match f.params {
        None | Some(Value::Null) => Params::empty(method.known()),
        Some(p @ Value::Object(_)) => Params::for_method(method.known(), p),
        Some(_) => return None,
    };
    Some(frame::Request { id, method, params })
}

/// Copies `text` into `buf`, simd-json's in-place input.
fn load<'b>(buf: &'b mut Vec<u8>, text: &str) -> &'b mut [u8] {
    buf.clear();
    buf.extend_from_slice(text.as_bytes());
    buf.as_mut_slice()
}

fn bench(c: &mut Criterion) {
    let chat = chat_send_req(20);
    let frames = [
        ("health", HEALTH_REQ),
        ("agent", AGENT_REQ),
        ("chat_send_20w", chat.as_str()),
    ];
    let mut buf = Vec::with_capacity(4096);
    let mut scratch = simd_json::Buffers::default();
    let mut g = c.benchmark_group("frame_parse");
    for (name, text) in frames {
        // The simd variants must agree with frame::parse on the fixtures.
        let frame::Inbound::Request(want) = frame::parse(text) else {
            panic!("fixture {name} is a request");
        };
        let got = simd_json::serde::from_slice::<SimdFrame>(load(&mut buf, text))
            .ok()
            .and_then(to_request);
        assert_eq!(got.as_ref(), Some(&want), "simd-json agrees on {name}");

        g.throughput(Throughput::Bytes(text.len() as u64));
        g.bench_function(format!("shardgate/{name}"), |b| {
            b.iter(|| frame::parse(black_box(text)))
        });
        g.bench_function(format!("serde_value/{name}"), |b| {
            b.iter(|| serde_json::from_str::<Value>(black_box(text)).expect("valid json"))
        });
        g.bench_function(format!("simd_typed/{name}"), |b| {
            b.iter(|| {
                let input = load(&mut buf, black_box(text));
                simd_json::serde::from_slice_with_buffers::<SimdFrame>(input, &mut scratch)
                    .ok()
                    .and_then(to_request)
                    .expect("valid request")
            })
        });
        g.bench_function(format!("simd_typed_fresh/{name}"), |b| {
            b.iter(|| {
                let input = load(&mut buf, black_box(text));
                simd_json::serde::from_slice::<SimdFrame>(input)
                    .ok()
                    .and_then(to_request)
                    .expect("valid request")
            })
        });
        g.bench_function(format!("simd_serde_value/{name}"), |b| {
            b.iter(|| {
                let input = load(&mut buf, black_box(text));
                simd_json::serde::from_slice_with_buffers::<Value>(input, &mut scratch)
                    .expect("valid json")
            })
        });
        g.bench_function(format!("simd_borrowed/{name}"), |b| {
            b.iter(|| {
                let input = load(&mut buf, black_box(text));
                // The value borrows `buf`, so it is dropped here rather than returned.
                let v = simd_json::to_borrowed_value_with_buffers(input, &mut scratch)
                    .expect("valid json");
                black_box(&v);
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
