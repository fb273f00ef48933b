//! The sans-IO core of one Redis connection: commands in, bytes out; bytes in, replies out.
//!
//! [`Pipeline`] owns no socket and no clock. The driver (`conn.rs`) calls [`Pipeline::send`]
//! for each command, writes what [`Pipeline::take_output`] gives it, hands every received chunk
//! to [`Pipeline::feed`], and drains [`Pipeline::poll`]. That split lets the tests feed any
//! byte sequence (a byte at a time, many replies in one read, pushes between replies) and
//! check exactly what comes out.
//!
//! Invariants:
//! - Redis answers the requests of one connection in the order it received them, so replies
//!   are matched to requests FIFO: the oldest pending request takes the next reply.
//! - A RESP3 push (`>`) never answers a request; it is routed out as a [`Push`] — except a
//!   (un)subscribe confirmation while the oldest request is a (un)subscribe waiting for its
//!   confirmations (RESP3 confirms each channel with a push, not with a reply).
//! - After a protocol error (undecodable bytes, a reply with nothing pending) the pairing can
//!   no longer be trusted: every later `poll` fails the same way and the driver must close the
//!   connection and fail what is pending.

use std::collections::VecDeque;

use redis_protocol::resp3::decode::complete::decode;
use redis_protocol::resp3::types::OwnedFrame;

use crate::encode::encode_command;
use crate::error::{ProtocolError, ServerError};
use crate::push::{is_subscription_kind, push_kind, Push};
use crate::value::Value;

/// What completes a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// One reply frame (every command except the subscribe family).
    Reply,
    /// This many (un)subscribe confirmation pushes (one per channel or pattern named), or one
    /// error reply. They are returned together as a [`Value::Array`] of [`Value::Push`].
    Confirmations(usize),
}

/// What one call to [`Pipeline::poll`] yields.
#[derive(Debug, PartialEq)]
pub enum Output<T> {
    /// The reply to the request that was sent with `token`: a value, or the server's error.
    Reply {
        /// The token given to [`Pipeline::send`].
        token: T,
        /// The reply; a top-level error reply is `Err`.
        result: Result<Value, ServerError>,
    },
    /// Out-of-band data.
    Push(Push),
}

#[derive(Debug)]
struct Pending<T> {
    token: T,
    expect: Expect,
    confirmations: Vec<Value>,
}

/// One connection's protocol state. `T` is whatever the driver needs to complete a request
/// (a channel sender, a test's number).
#[derive(Debug)]
pub struct Pipeline<T> {
    /// Encoded commands not yet handed to the socket.
    out: Vec<u8>,
    /// Received bytes; `input[read..]` is not decoded yet.
    input: Vec<u8>,
    read: usize,
    /// Set when the undecoded bytes were found to be an incomplete frame: decoding again is
    /// pointless until more bytes arrive (a byte-at-a-time feed would otherwise re-parse the
    /// same prefix for every poll).
    stalled: bool,
    /// Requests sent and not yet answered, oldest first.
    pending: VecDeque<Pending<T>>,
    broken: Option<ProtocolError>,
}

impl<T> Default for Pipeline<T> {
    fn default() -> Self {
        Pipeline {
            out: Vec::new(),
            input: Vec::new(),
            read: 0,
            stalled: false,
            pending: VecDeque::new(),
            broken: None,
        }
    }
}

impl<T> Pipeline<T> {
    /// An idle connection's state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues a command (`args[0]` is its name) whose completion will carry `token`.
    pub fn send(&mut self, args: &[&[u8]], expect: Expect, token: T) {
        encode_command(&mut self.out, args);
        let expect = match expect {
            // Nothing to confirm means the server answers with one (error) reply.
            Expect::Confirmations(0) => Expect::Reply,
            e => e,
        };
        self.pending.push_back(Pending {
            token,
            expect,
            confirmations: Vec::new(),
        });
    }

    /// True when encoded commands wait to be written.
    pub fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    /// Moves the queued bytes into `buf` (cleared first) and keeps `buf`'s old allocation for
    /// the next commands, so a steady pipeline reuses two buffers.
    pub fn take_output(&mut self, buf: &mut Vec<u8>) {
        buf.clear();
        std::mem::swap(buf, &mut self.out);
    }

    /// Appends received bytes.
    pub fn feed(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if self.read == self.input.len() {
            self.input.clear();
            self.read = 0;
        } else if self.read > 0 && self.read >= self.input.len() / 2 {
            // Compact once the decoded prefix is at least half of the buffer: amortized O(1)
            // per byte, and the buffer stays within twice the largest pending frame.
            self.input.drain(..self.read);
            self.read = 0;
        }
        self.input.extend_from_slice(bytes);
        self.stalled = false;
    }

    /// The next reply or push decoded from the fed bytes; `Ok(None)` when more bytes are
    /// needed. A protocol error is final (see the module invariants).
    pub fn poll(&mut self) -> Result<Option<Output<T>>, ProtocolError> {
        if let Some(e) = &self.broken {
            return Err(e.clone());
        }
        match self.decode_next() {
            Ok(out) => Ok(out),
            Err(e) => {
                self.broken = Some(e.clone());
                Err(e)
            }
        }
    }

    fn decode_next(&mut self) -> Result<Option<Output<T>>, ProtocolError> {
        loop {
            if self.stalled || self.read == self.input.len() {
                return Ok(None);
            }
            let (frame, used) = match decode(&self.input[self.read..]) {
                Ok(Some(decoded)) => decoded,
                Ok(None) => {
                    self.stalled = true;
                    return Ok(None);
                }
                Err(e) => return Err(ProtocolError::Decode(e.to_string())),
            };
            self.read += used;
            if let Some(out) = self.route(frame)? {
                return Ok(Some(out));
            }
        }
    }

    /// Pairs a frame with its request, or routes it out as a push. `None`: the frame was a
    /// confirmation counted toward a request that waits for more.
    fn route(&mut self, frame: OwnedFrame) -> Result<Option<Output<T>>, ProtocolError> {
        let value = Value::from_frame(frame)?;
        let items = match value {
            Value::Push(items) => items,
            value => {
                let done = self
                    .pending
                    .pop_front()
                    .ok_or(ProtocolError::UnexpectedReply)?;
                let result = match value {
                    Value::Error(e) => Err(e),
                    v => Ok(v),
                };
                return Ok(Some(Output::Reply {
                    token: done.token,
                    result,
                }));
            }
        };
        let confirms = push_kind(&items).is_some_and(is_subscription_kind);
        if let (true, Some(head)) = (confirms, self.pending.front_mut()) {
            if let Expect::Confirmations(want) = head.expect {
                head.confirmations.push(Value::Push(items));
                if head.confirmations.len() < want {
                    return Ok(None);
                }
                let done = self.pending.pop_front().expect("head exists");
                return Ok(Some(Output::Reply {
                    token: done.token,
                    result: Ok(Value::Array(done.confirmations)),
                }));
            }
        }
        Ok(Some(Output::Push(Push::classify(items))))
    }

    /// How many requests wait for their reply.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// The connection is gone: hands back every pending request's token, oldest first, and
    /// forgets unsent and undecoded bytes.
    pub fn fail_all(&mut self) -> Vec<T> {
        self.out.clear();
        self.input.clear();
        self.read = 0;
        self.stalled = false;
        self.pending.drain(..).map(|p| p.token).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    fn bulk(s: &str) -> Value {
        Value::Bulk(s.as_bytes().to_vec())
    }

    fn ok(token: u32, v: Value) -> Output<u32> {
        Output::Reply {
            token,
            result: Ok(v),
        }
    }

    fn drain(p: &mut Pipeline<u32>) -> Vec<Output<u32>> {
        let mut got = Vec::new();
        while let Some(o) = p.poll().expect("valid stream") {
            got.push(o);
        }
        got
    }

    #[test]
    fn commands_queue_into_one_output_buffer() {
        let mut p = Pipeline::new();
        p.send(&[b"PING"], Expect::Reply, 1);
        p.send(&[b"GET", b"k"], Expect::Reply, 2);
        assert!(p.has_output());
        let mut buf = b"stale".to_vec();
        p.take_output(&mut buf);
        assert_eq!(buf, b"*1\r\n$4\r\nPING\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
        assert!(!p.has_output());
        assert_eq!(p.in_flight(), 2);
    }

    #[test]
    fn many_replies_in_one_read_complete_their_requests_in_order() {
        let mut p = Pipeline::new();
        for t in 1..=4 {
            p.send(&[b"X"], Expect::Reply, t);
        }
        p.feed(b"+OK\r\n:5\r\n$3\r\nabc\r\n_\r\n");
        assert_eq!(
            drain(&mut p),
            vec![
                ok(1, Value::Simple("OK".into())),
                ok(2, Value::Int(5)),
                ok(3, bulk("abc")),
                ok(4, Value::Nil),
            ]
        );
        assert_eq!(p.in_flight(), 0);
    }

    /// Every RESP3 kind Redis sends, nested, fed one byte at a time: nothing comes out until
    /// the last byte, then exactly the one reply.
    #[test]
    fn a_reply_fed_a_byte_at_a_time_comes_out_once_whole() {
        let wire: &[u8] = b"%2\r\n$4\r\nlist\r\n*7\r\n:-1\r\n,3.5\r\n#t\r\n(12345678901234567890\r\n=8\r\ntxt:hi\r\n\r\n_\r\n~1\r\n+x\r\n$4\r\nnums\r\n*2\r\n$4\r\na\r\nb\r\n-ERR inner\r\n";
        let mut p = Pipeline::new();
        p.send(&[b"X"], Expect::Reply, 7);
        for (i, b) in wire.iter().enumerate() {
            p.feed(std::slice::from_ref(b));
            let got = p.poll().unwrap_or_else(|e| {
                panic!("after {:?}: {e}", String::from_utf8_lossy(&wire[..=i]))
            });
            if i + 1 < wire.len() {
                assert_eq!(
                    got,
                    None,
                    "a reply came out after {} of {} bytes",
                    i + 1,
                    wire.len()
                );
            } else {
                let want = Value::Map(vec![
                    (
                        bulk("list"),
                        Value::Array(vec![
                            Value::Int(-1),
                            Value::Double(3.5),
                            Value::Bool(true),
                            Value::BigNumber(b"12345678901234567890".to_vec()),
                            Value::Verbatim {
                                markdown: false,
                                text: b"hi\r\n".to_vec(),
                            },
                            Value::Nil,
                            Value::Set(vec![Value::Simple("x".into())]),
                        ]),
                    ),
                    (
                        bulk("nums"),
                        Value::Array(vec![
                            bulk("a\r\nb"),
                            Value::Error(ServerError::from_text("ERR inner".into())),
                        ]),
                    ),
                ]);
                assert_eq!(got, Some(ok(7, want)));
            }
        }
        assert_eq!(p.poll(), Ok(None));
    }

    #[test]
    fn a_frame_split_across_reads_completes_on_the_read_that_ends_it() {
        let mut p = Pipeline::new();
        p.send(&[b"A"], Expect::Reply, 1);
        p.send(&[b"B"], Expect::Reply, 2);
        p.feed(b"$5\r\nhel");
        assert_eq!(p.poll(), Ok(None));
        p.feed(b"lo\r\n:4");
        assert_eq!(p.poll(), Ok(Some(ok(1, bulk("hello")))));
        assert_eq!(p.poll(), Ok(None));
        p.feed(b"2\r\n");
        assert_eq!(p.poll(), Ok(Some(ok(2, Value::Int(42)))));
    }

    #[test]
    fn a_push_between_replies_is_routed_apart_and_keeps_the_fifo() {
        let mut p = Pipeline::new();
        p.send(&[b"SET", b"k", b"v"], Expect::Reply, 1);
        p.send(&[b"INCR", b"n"], Expect::Reply, 2);
        let wire: &[u8] =
            b"+OK\r\n>3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n>2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n:2\r\n";
        // The same stream whole and byte at a time gives the same outputs.
        for chunk in [wire.len(), 1] {
            let mut p2 = Pipeline::new();
            p2.send(&[b"SET"], Expect::Reply, 1);
            p2.send(&[b"INCR"], Expect::Reply, 2);
            let mut got = Vec::new();
            for c in wire.chunks(chunk) {
                p2.feed(c);
                got.extend(drain(&mut p2));
            }
            assert_eq!(
                got,
                vec![
                    ok(1, Value::Simple("OK".into())),
                    Output::Push(Push::Message {
                        channel: b"ch".to_vec(),
                        payload: b"hi".to_vec()
                    }),
                    Output::Push(Push::Invalidate(Some(vec![b"k".to_vec()]))),
                    ok(2, Value::Int(2)),
                ]
            );
        }
        p.feed(wire);
        assert_eq!(drain(&mut p).len(), 4);
    }

    #[test]
    fn error_replies_are_typed_by_their_code() {
        let mut p = Pipeline::new();
        for t in 1..=3 {
            p.send(&[b"X"], Expect::Reply, t);
        }
        p.feed(b"-NOSCRIPT No matching script. Please use EVAL.\r\n-BUSY Redis is busy\r\n!21\r\nSYNTAX invalid syntax\r\n");
        let codes: Vec<_> = drain(&mut p)
            .into_iter()
            .map(|o| match o {
                Output::Reply { result: Err(e), .. } => e.code,
                other => panic!("expected an error reply, got {other:?}"),
            })
            .collect();
        assert_eq!(
            codes,
            vec![
                ErrorCode::NoScript,
                ErrorCode::Busy,
                ErrorCode::Other("SYNTAX".into())
            ]
        );
    }

    #[test]
    fn subscribe_confirmations_complete_the_subscribe_and_messages_flow_out() {
        let mut p = Pipeline::new();
        p.send(&[b"SUBSCRIBE", b"a", b"b"], Expect::Confirmations(2), 1);
        p.send(&[b"PING"], Expect::Reply, 2);
        p.feed(b">3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n");
        assert_eq!(
            p.poll(),
            Ok(None),
            "one of two confirmations is not a completion"
        );
        p.feed(b">3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n>3\r\n$7\r\nmessage\r\n$1\r\na\r\n$1\r\nx\r\n+PONG\r\n");
        let got = drain(&mut p);
        assert_eq!(got.len(), 3);
        match &got[0] {
            Output::Reply {
                token: 1,
                result: Ok(Value::Array(confirms)),
            } => assert_eq!(confirms.len(), 2),
            other => panic!("subscribe not completed: {other:?}"),
        }
        assert!(matches!(got[1], Output::Push(Push::Message { .. })));
        assert_eq!(got[2], ok(2, Value::Simple("PONG".into())));
    }

    #[test]
    fn a_confirmation_nobody_waits_for_is_a_push() {
        let mut p: Pipeline<u32> = Pipeline::new();
        p.send(&[b"PING"], Expect::Reply, 1);
        p.feed(b">3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:0\r\n+PONG\r\n");
        let got = drain(&mut p);
        assert!(matches!(
            got[0],
            Output::Push(Push::Subscription { count: 0, .. })
        ));
        assert_eq!(got[1], ok(1, Value::Simple("PONG".into())));
    }

    #[test]
    fn an_error_reply_ends_a_subscribe() {
        let mut p = Pipeline::new();
        p.send(&[b"SUBSCRIBE"], Expect::Confirmations(0), 1);
        p.feed(b"-ERR wrong number of arguments for 'subscribe' command\r\n");
        assert!(matches!(
            p.poll(),
            Ok(Some(Output::Reply {
                token: 1,
                result: Err(_)
            }))
        ));
    }

    #[test]
    fn a_reply_with_nothing_pending_breaks_the_connection_for_good() {
        let mut p: Pipeline<u32> = Pipeline::new();
        p.feed(b"+OK\r\n");
        assert_eq!(p.poll(), Err(ProtocolError::UnexpectedReply));
        p.send(&[b"PING"], Expect::Reply, 1);
        p.feed(b"+PONG\r\n");
        assert_eq!(p.poll(), Err(ProtocolError::UnexpectedReply));
    }

    #[test]
    fn bytes_that_are_not_resp3_are_a_decode_error() {
        let mut p = Pipeline::new();
        p.send(&[b"PING"], Expect::Reply, 1);
        p.feed(b"?garbage\r\n");
        assert!(matches!(p.poll(), Err(ProtocolError::Decode(_))));
    }

    #[test]
    fn fail_all_hands_back_pending_tokens_oldest_first() {
        let mut p = Pipeline::new();
        for t in 1..=3 {
            p.send(&[b"X"], Expect::Reply, t);
        }
        p.feed(b"+OK\r\n$10\r\npart");
        assert_eq!(p.poll(), Ok(Some(ok(1, Value::Simple("OK".into())))));
        assert_eq!(p.fail_all(), vec![2, 3]);
        assert_eq!(p.in_flight(), 0);
        assert!(!p.has_output());
        assert_eq!(p.poll(), Ok(None));
    }

    #[test]
    fn the_input_buffer_is_compacted_as_replies_are_consumed() {
        let mut p = Pipeline::new();
        for t in 0..10_000 {
            p.send(&[b"X"], Expect::Reply, t);
        }
        let mut buf = Vec::new();
        p.take_output(&mut buf);
        for t in 0..10_000u32 {
            // Each read ends mid-frame, so the buffer is never simply emptied.
            p.feed(if t == 0 { b":1" } else { b"\r\n:1" });
            if t > 0 {
                assert_eq!(p.poll(), Ok(Some(ok(t - 1, Value::Int(1)))));
            }
            assert!(p.input.len() < 64, "input grew to {}", p.input.len());
        }
    }
}
