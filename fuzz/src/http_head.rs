//! The HTTP upgrade request parser ([`shardgate::transport::http::HeadParser`]) and the
//! permessage-deflate offer it carries ([`shardgate::transport::deflate::negotiate`]).
//!
//! Input: `[seed, bytes…]`; `seed` picks how the bytes are cut into reads.
//!
//! Invariants: never a panic; the same head (or a refusal, or "need more") whether the bytes
//! arrive in one read, in random pieces or one byte per read; the work stays linear: the
//! bytes handed to `httparse` stay below four times the bytes buffered (tungstenite's
//! CVE-2023-43669 was a head re-parsed whole on every one-byte read); no head over
//! `MAX_HEAD` is accepted; an agreed deflate offer's answer is itself an offer that agrees
//! the same.

use shardgate::transport::deflate;
use shardgate::transport::http::{Head, HeadParser, MAX_HEAD};

/// How feeding ended.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// A head, with every byte after it in `rest`.
    Head(Head),
    /// Refused.
    Refused,
    /// All bytes in, no end of the head yet.
    More,
}

/// Feeds `data` in the planned pieces; what came out and the parser's work.
pub fn feed(data: &[u8], plan: &[usize]) -> (Outcome, usize, usize) {
    let mut p = HeadParser::default();
    let mut at = 0;
    for &n in plan {
        let r = p.push(&data[at..at + n]);
        at += n;
        let (work, buffered) = (p.work(), p.buffered());
        assert!(
            work <= 4 * buffered,
            "parser work {work} B for {buffered} B buffered: not linear"
        );
        match r {
            Ok(Some(mut h)) => {
                h.rest.extend_from_slice(&data[at..]);
                return (Outcome::Head(h), work, buffered);
            }
            Ok(None) => assert!(buffered < MAX_HEAD, "{buffered} B buffered, no refusal"),
            Err(_) => return (Outcome::Refused, work, buffered),
        }
    }
    (Outcome::More, p.work(), p.buffered())
}

/// The target.
pub fn run(data: &[u8]) {
    let [seed, data @ ..] = data else {
        return;
    };
    let (whole, _, _) = feed(data, &[data.len()]);
    let plan = crate::chunk_plan(data.len(), u64::from(*seed) ^ (data.len() as u64) << 8);
    let (pieces, _, _) = feed(data, &plan);
    let ones = vec![1; data.len().min(MAX_HEAD + 64)];
    let (bytes, _, _) = feed(&data[..ones.len()], &ones);
    match (&whole, &pieces) {
        (Outcome::Head(a), Outcome::Head(b)) => assert_eq!(a, b),
        (a, b) => assert_eq!(a, b, "whole vs pieces"),
    }
    if ones.len() == data.len() {
        assert_eq!(whole, bytes, "whole vs one byte per read");
    }
    if let Outcome::Head(h) = &whole {
        assert!(data.len() - h.rest.len() <= MAX_HEAD);
        if let Some(a) = deflate::negotiate(h.extensions.iter().map(String::as_str)) {
            let again = deflate::negotiate([a.response().as_str()]);
            assert_eq!(again, Some(a), "answer {:?}", a.response());
        }
    }
}
