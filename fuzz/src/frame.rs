//! Request envelopes ([`shardgate::protocol::frame::parse`]).
//!
//! Input: the text of one frame (invalid UTF-8 is dropped: the WebSocket reader refuses it
//! before parsing).
//!
//! Invariants: never a panic; a request has a non-empty id and method; written back as a
//! frame, a request parses to the same request (a submission's fields once normalised);
//! an invalid frame's id, when kept, is non-empty.

use serde_json::json;
use shardgate::protocol::frame::{parse, Inbound};
use shardgate::protocol::params::Params;

/// The target.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse(text) {
        Inbound::Request(r) => {
            assert!(!r.id.is_empty() && !r.method.as_str().is_empty());
            let known = r.method.known();
            let params = r.params.clone().into_json();
            let again = json!({"type": "req", "id": r.id, "method": r.method.as_str(),
                               "params": params})
            .to_string();
            let Inbound::Request(r2) = parse(&again) else {
                panic!("a request written back does not parse: {again}");
            };
            assert_eq!((&r2.id, &r2.method), (&r.id, &r.method));
            match (&r.params, &r2.params) {
                (Params::Json(a), Params::Json(b)) => assert_eq!(a, b),
                (Params::Submit(_), Params::Submit(_)) => {
                    assert_eq!(r2.params.clone().into_json(), params, "{known:?}")
                }
                (a, b) => panic!("params changed form: {a:?} → {b:?}"),
            }
        }
        Inbound::SeedConnect(p) => assert!(p.is_object()),
        Inbound::Invalid { id, .. } => assert!(id.is_none_or(|i| !i.is_empty())),
    }
}
