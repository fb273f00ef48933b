//! The WebSocket frame reader ([`shardgate::transport::ws::WsReader`]) under random chunking.
//!
//! Input: `[flags, seed, stream…]`. `flags` bit 0: permessage-deflate negotiated; bits 1–2:
//! the frame and message limit (125 B, 1 KiB, 64 KiB, 1 MiB); bit 3: the callback asks to
//! stop after some messages (the reader keeps the rest for the next call). `seed` picks how
//! the stream is cut into reads.
//!
//! Invariants: the reader never panics and always ends (EOF or an error); what comes out
//! (messages in order, then how it ended) is the same whether the stream arrives in one read,
//! in random pieces or one byte per read; no message is over the limit (inflated ones
//! included); pings fit a control frame.

use std::cell::RefCell;
use std::pin::Pin;
use std::task::{Context, Poll};

use shardgate::transport::ws::{Msg, WsError, WsReader};

const LIMITS: [usize; 4] = [125, 1024, 64 << 10, 1 << 20];

/// `data` handed out in the planned pieces, then EOF.
struct Planned<'a> {
    data: &'a [u8],
    plan: Vec<usize>,
    next: usize,
    pos: usize,
}

impl futures_lite::AsyncRead for Planned<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        let want = self.plan.get(self.next).copied().unwrap_or(usize::MAX);
        let n = want.min(buf.len()).min(self.data.len() - self.pos);
        if n == want {
            self.next += 1;
        } else if let Some(w) = {
            let next = self.next;
            self.plan.get_mut(next)
        } {
            // The reader offered less room than this piece: the rest comes next time.
            *w -= n;
        }
        let p = self.pos;
        buf[..n].copy_from_slice(&self.data[p..p + n]);
        self.pos += n;
        Poll::Ready(Ok(n))
    }
}

/// What a reader made of a stream: each message, then how it ended.
pub fn transcript(
    data: &[u8],
    plan: Vec<usize>,
    deflate: bool,
    limit: usize,
    stop_every: Option<usize>,
) -> Vec<String> {
    let io = RefCell::new(Planned {
        data,
        plan,
        next: 0,
        pos: 0,
    });
    let mut reader = WsReader::new(limit, limit).with_deflate(deflate);
    let mut seen = Vec::new();
    let mut calls = 0usize;
    futures_lite::future::block_on(async {
        loop {
            let r = reader
                .read(&io, &mut |m| {
                    let line = match m {
                        Msg::Text(t) => {
                            assert!(t.len() <= limit, "text of {} B over {limit}", t.len());
                            format!("t:{t}")
                        }
                        Msg::Binary(b) => {
                            assert!(b.len() <= limit, "binary of {} B over {limit}", b.len());
                            format!("b:{b:?}")
                        }
                        Msg::Ping(p) => {
                            assert!(p.len() <= 125, "ping of {} B", p.len());
                            format!("ping:{p:?}")
                        }
                        Msg::Pong => "pong".into(),
                        Msg::Close(c) => format!("close:{c:?}"),
                    };
                    seen.push(line);
                    calls += 1;
                    stop_every.is_none_or(|k| !calls.is_multiple_of(k))
                })
                .await;
            match r {
                Ok(_) => {}
                Err(WsError::Eof) => {
                    seen.push("eof".into());
                    return;
                }
                Err(e) => {
                    let close = e.close();
                    assert!(close.is_some(), "only EOF ends without a close code: {e}");
                    seen.push(format!("error {close:?}"));
                    return;
                }
            }
        }
    });
    seen
}

/// The target.
pub fn run(data: &[u8]) {
    let [flags, seed, stream @ ..] = data else {
        return;
    };
    let deflate = flags & 1 != 0;
    let limit = LIMITS[usize::from(flags >> 1) & 3];
    let stop = (flags & 8 != 0).then_some(usize::from(seed % 3) + 1);
    let whole = transcript(stream, vec![stream.len()], deflate, limit, None);
    let plan = crate::chunk_plan(stream.len(), u64::from(*seed) ^ (stream.len() as u64) << 8);
    let pieces = transcript(stream, plan, deflate, limit, stop);
    assert_eq!(whole, pieces, "cut into random pieces");
    if stream.len() <= 4096 {
        let bytes = transcript(stream, vec![1; stream.len()], deflate, limit, None);
        assert_eq!(whole, bytes, "one byte per read");
    }
}
