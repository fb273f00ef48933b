// Hot path: every frame in and out of a gateway connection passes through here.
//! WebSocket framing (RFC 6455, server side) with no buffer held per connection at rest.
//!
//! Reads land in a per-shard scratch buffer (a thread-local: one shard per thread), complete
//! frames are unmasked in place and handed to a callback as borrowed `&str`/`&[u8]`; only the
//! bytes of a frame not yet complete are copied out and kept by the connection until the rest
//! arrives. Writes are encoded into a per-shard scratch buffer and written at once; only what
//! the socket does not take right away is copied out and kept until it drains. An idle
//! connection therefore holds no WebSocket buffer at all (tuning.md, memory of an idle
//! connection). Frame headers are parsed and formatted by `tungstenite`'s `FrameHeader`.
//!
//! Conformance: Autobahn|Testsuite runs against the `/echo` route, which uses this module
//! (tests/autobahn), every case including permessage-deflate's (12.*, 13.*).
//!
//! permessage-deflate ([`super::deflate`]), when the upgrade negotiated it: RSV1 marks a
//! compressed message on its first frame only; RSV1 on a continuation or a control frame, or
//! without the extension, and RSV2/RSV3 always, are protocol errors (1002). A compressed
//! message is inflated by the shard's decompressor once complete, bounded by the message
//! limit (1009 as soon as the output passes it). Outgoing text and binary messages larger than
//! a threshold are compressed (RSV1 set); smaller ones, pongs and closes are sent as they are.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io::{self, Cursor};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::thread::LocalKey;

use futures_lite::{AsyncRead, AsyncWrite};
use tungstenite::protocol::frame::coding::{CloseCode, Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

use super::deflate::{self, InflateError};

/// Size of the per-shard read buffer: one `recv` takes up to this much, and a frame up to
/// this size is parsed from it without being copied to the connection.
const SCRATCH: usize = 64 * 1024;
/// The write scratch buffer gives back memory above this after a large write.
const TX_KEEP: usize = 256 * 1024;

thread_local! {
    static RX: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    static TX: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on this shard's scratch buffer (or, if it is in use, on a fresh one).
fn with_scratch<R>(
    key: &'static LocalKey<RefCell<Vec<u8>>>,
    f: impl FnOnce(&mut Vec<u8>) -> R,
) -> R {
    key.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => f(&mut buf),
        Err(_) => f(&mut Vec::new()),
    })
}

/// One complete message or control frame from the peer.
#[derive(Debug, PartialEq)]
pub enum Msg<'a> {
    /// A text message (UTF-8 checked).
    Text(&'a str),
    /// A binary message.
    Binary(&'a [u8]),
    /// A ping; the caller queues the pong with this payload.
    Ping(&'a [u8]),
    /// A pong (nothing to do).
    Pong,
    /// The peer's close, with its status code if it sent one (already validated).
    Close(Option<u16>),
}

/// Why reading stopped.
#[derive(Debug)]
pub enum WsError {
    /// A violation of RFC 6455; close 1002.
    Protocol(&'static str),
    /// A text message or close reason that is not UTF-8; close 1007.
    InvalidUtf8,
    /// A frame or message over its limit (bytes); close 1009.
    TooBig(usize),
    /// A message in more frames than [`max_fragments`] allows; close 1008.
    TooManyFragments(u32),
    /// A compressed message that is not a valid deflate stream; close 1007.
    Inflate,
    /// The socket failed (or the pre-auth read budget ran out).
    Io(io::Error),
    /// The peer closed the TCP connection.
    Eof,
}

impl WsError {
    /// The close code and reason to answer with, if the peer is still there to hear it.
    pub fn close(&self) -> Option<(u16, &'static str)> {
        match self {
            WsError::Protocol(why) => Some((1002, why)),
            WsError::InvalidUtf8 => Some((1007, "invalid UTF-8")),
            WsError::TooBig(_) => Some((1009, "message too big")),
            WsError::TooManyFragments(_) => Some((1008, "too many fragments")),
            WsError::Inflate => Some((1007, "invalid compressed data")),
            WsError::Io(_) | WsError::Eof => None,
        }
    }
}

impl std::fmt::Display for WsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WsError::Protocol(why) => write!(f, "protocol error: {why}"),
            WsError::InvalidUtf8 => f.write_str("invalid UTF-8 in a text message"),
            WsError::TooBig(limit) => write!(f, "frame or message over {limit} bytes"),
            WsError::TooManyFragments(n) => write!(f, "a message in more than {n} frames"),
            WsError::Inflate => f.write_str("invalid deflate data in a compressed message"),
            WsError::Io(e) => write!(f, "{e}"),
            WsError::Eof => f.write_str("connection closed by the peer"),
        }
    }
}

/// A fragmented message being assembled (rare: clients send requests in one frame).
#[derive(Debug)]
struct Partial {
    text: bool,
    /// RSV1 was set on the first frame: `data` is deflate data, inflated once complete (no
    /// UTF-8 check before then).
    compressed: bool,
    data: Vec<u8>,
    /// `data[..valid]` is known to be UTF-8 (text only).
    valid: usize,
    /// Frames so far (see [`max_fragments`]).
    frames: u32,
}

/// The most frames one message may come in: what the largest message takes cut into 64-byte
/// fragments (Autobahn's finest), at least 64. The byte limit alone would let a client send
/// empty continuation frames forever, each parsed and none ever ending the message.
pub fn max_fragments(max_message: u32) -> u32 {
    (max_message / 64).max(64)
}

impl Partial {
    /// Fails fast on invalid UTF-8; an incomplete sequence at the end is fine until `fin`.
    fn check_utf8(&mut self, fin: bool) -> Result<(), WsError> {
        match std::str::from_utf8(&self.data[self.valid..]) {
            Ok(_) => {
                self.valid = self.data.len();
                Ok(())
            }
            Err(e) if e.error_len().is_none() && !fin => {
                self.valid += e.valid_up_to();
                Ok(())
            }
            Err(_) => Err(WsError::InvalidUtf8),
        }
    }
}

/// The read side of one connection: what it keeps between reads (nothing, at rest).
#[derive(Debug)]
pub struct WsReader {
    /// An incomplete frame (or bytes left unparsed by a callback that stopped); empty and
    /// unallocated at rest.
    pending: Vec<u8>,
    /// `pending` may hold complete frames: parse it before reading again.
    unparsed: bool,
    /// Assembling a frame larger than the scratch buffer: `pending` has its full length and
    /// this many bytes of it are filled. (32-bit fields here: every connection's task holds a
    /// reader, and a frame is limited below 4 GiB by [`clamp_limit`].)
    filled: Option<u32>,
    partial: Option<Box<Partial>>,
    max_frame: u32,
    max_message: u32,
    /// permessage-deflate was negotiated: RSV1 marks a compressed message.
    deflate: bool,
}

/// A size limit as the reader keeps it: below 4 GiB, with room for a frame header.
fn clamp_limit(limit: usize) -> u32 {
    limit.min(u32::MAX as usize - 16) as u32
}

/// A parsed, checked frame header: the header, its length and the payload length. RSV1 is
/// allowed only with `deflate`, and only on the first frame of a data message.
fn header(
    data: &[u8],
    max_frame: usize,
    deflate: bool,
) -> Result<Option<(FrameHeader, usize, usize)>, WsError> {
    let mut cursor = Cursor::new(data);
    let parsed = FrameHeader::parse(&mut cursor).map_err(|e| match e {
        tungstenite::Error::Protocol(_) => WsError::Protocol("reserved opcode"),
        _ => WsError::Protocol("malformed frame header"),
    })?;
    let Some((h, len)) = parsed else {
        return Ok(None);
    };
    if h.rsv2 || h.rsv3 || (h.rsv1 && !deflate) {
        return Err(WsError::Protocol(
            "reserved bits set (no extension negotiated)",
        ));
    }
    if h.rsv1 && matches!(h.opcode, OpCode::Control(_)) {
        return Err(WsError::Protocol("compressed control frame"));
    }
    if h.rsv1 && h.opcode == OpCode::Data(Data::Continue) {
        return Err(WsError::Protocol("RSV1 on a continuation frame"));
    }
    if h.mask.is_none() {
        return Err(WsError::Protocol("client frames must be masked"));
    }
    if matches!(h.opcode, OpCode::Control(_)) && (!h.is_final || len > 125) {
        return Err(WsError::Protocol(
            "control frames must be final and at most 125 bytes",
        ));
    }
    if len > max_frame as u64 {
        return Err(WsError::TooBig(max_frame));
    }
    Ok(Some((h, cursor.position() as usize, len as usize)))
}

/// XORs `data` with the 4-byte `mask` (RFC 6455 §5.3).
fn unmask(data: &mut [u8], mask: [u8; 4]) {
    let m = u32::from_ne_bytes(mask);
    let mut chunks = data.chunks_exact_mut(4);
    for c in &mut chunks {
        let v = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]) ^ m;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (b, k) in chunks.into_remainder().iter_mut().zip(mask) {
        *b ^= k;
    }
}

/// The status code of a close frame's payload, checked (RFC 6455 §5.5.1, §7.4).
fn close_code(payload: &[u8]) -> Result<Option<u16>, WsError> {
    match payload {
        [] => Ok(None),
        [_] => Err(WsError::Protocol("close frame with a 1-byte payload")),
        [a, b, reason @ ..] => {
            let code = u16::from_be_bytes([*a, *b]);
            if !CloseCode::from(code).is_allowed() {
                return Err(WsError::Protocol("invalid close code"));
            }
            std::str::from_utf8(reason).map_err(|_| WsError::InvalidUtf8)?;
            Ok(Some(code))
        }
    }
}

impl WsReader {
    /// A reader taking frames up to `max_frame` bytes and messages up to `max_message`.
    pub fn new(max_frame: usize, max_message: usize) -> WsReader {
        WsReader {
            pending: Vec::new(),
            unparsed: false,
            filled: None,
            partial: None,
            max_frame: clamp_limit(max_frame),
            max_message: clamp_limit(max_message),
            deflate: false,
        }
    }

    /// Accepts compressed messages (permessage-deflate was negotiated on the upgrade).
    pub fn with_deflate(mut self, on: bool) -> WsReader {
        self.deflate = on;
        self
    }

    /// Starts with bytes that arrived with the HTTP upgrade request.
    pub fn with_initial(mut self, bytes: Vec<u8>) -> WsReader {
        self.unparsed = !bytes.is_empty();
        self.pending = bytes;
        self
    }

    /// Changes the limits (after the handshake, from the pre-auth ones).
    pub fn set_limits(&mut self, max_frame: usize, max_message: usize) {
        self.max_frame = clamp_limit(max_frame);
        self.max_message = clamp_limit(max_message);
    }

    /// Waits for data and hands every complete message in it to `on`, in order, until `on`
    /// returns false. Returns `Ok(false)` when `on` asked to stop (the rest is kept for the
    /// next call), `Ok(true)` when the data read so far is used up.
    pub async fn read<S, F>(&mut self, io: &RefCell<S>, on: &mut F) -> Result<bool, WsError>
    where
        S: AsyncRead + Unpin,
        F: FnMut(Msg<'_>) -> bool,
    {
        poll_fn(|cx| self.poll_read(cx, io, on)).await
    }

    /// [`WsReader::read`] as a poll.
    pub fn poll_read<S, F>(
        &mut self,
        cx: &mut Context<'_>,
        io: &RefCell<S>,
        on: &mut F,
    ) -> Poll<Result<bool, WsError>>
    where
        S: AsyncRead + Unpin,
        F: FnMut(Msg<'_>) -> bool,
    {
        if self.unparsed {
            self.unparsed = false;
            let mut data = std::mem::take(&mut self.pending);
            let (used, go) = match self.parse(&mut data, on) {
                Ok(r) => r,
                Err(e) => return Poll::Ready(Err(e)),
            };
            data.drain(..used);
            self.pending = data;
            if !go {
                self.unparsed = !self.pending.is_empty();
                return Poll::Ready(Ok(false));
            }
            if self.pending.is_empty() {
                self.pending = Vec::new();
            }
        }
        self.poll_fill(cx, io, on)
    }

    fn poll_fill<S, F>(
        &mut self,
        cx: &mut Context<'_>,
        io: &RefCell<S>,
        on: &mut F,
    ) -> Poll<Result<bool, WsError>>
    where
        S: AsyncRead + Unpin,
        F: FnMut(Msg<'_>) -> bool,
    {
        loop {
            let filled = match self.filled {
                Some(f) => f as usize,
                None => match header(&self.pending, self.max_frame as usize, self.deflate) {
                    Ok(Some((_, hlen, len))) if hlen + len > SCRATCH => {
                        // A frame larger than the scratch buffer is assembled in `pending`.
                        let have = self.pending.len();
                        self.pending.resize(hlen + len, 0);
                        have
                    }
                    Ok(_) => return with_scratch(&RX, |buf| self.poll_small(cx, io, buf, on)),
                    Err(e) => return Poll::Ready(Err(e)),
                },
            };
            self.filled = Some(filled as u32);
            let got = Pin::new(&mut *io.borrow_mut()).poll_read(cx, &mut self.pending[filled..]);
            let n = match got {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(WsError::Io(e))),
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(WsError::Eof)),
                Poll::Ready(Ok(n)) => n,
            };
            self.filled = Some((filled + n) as u32);
            if filled + n == self.pending.len() {
                self.filled = None;
                let mut data = std::mem::take(&mut self.pending);
                return Poll::Ready(self.parse(&mut data, on).map(|(_, go)| go));
            }
        }
    }

    /// One read into the scratch buffer (after the kept bytes of an incomplete frame).
    fn poll_small<S, F>(
        &mut self,
        cx: &mut Context<'_>,
        io: &RefCell<S>,
        buf: &mut Vec<u8>,
        on: &mut F,
    ) -> Poll<Result<bool, WsError>>
    where
        S: AsyncRead + Unpin,
        F: FnMut(Msg<'_>) -> bool,
    {
        if buf.len() < SCRATCH {
            buf.resize(SCRATCH, 0);
        }
        let have = self.pending.len();
        buf[..have].copy_from_slice(&self.pending);
        let n = match Pin::new(&mut *io.borrow_mut()).poll_read(cx, &mut buf[have..]) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(WsError::Io(e))),
            Poll::Ready(Ok(0)) => return Poll::Ready(Err(WsError::Eof)),
            Poll::Ready(Ok(n)) => n,
        };
        let data = &mut buf[..have + n];
        let (used, go) = match self.parse(data, on) {
            Ok(r) => r,
            Err(e) => return Poll::Ready(Err(e)),
        };
        if used == data.len() {
            self.pending = Vec::new();
        } else {
            self.pending.clear();
            self.pending.extend_from_slice(&data[used..]);
            self.unparsed = !go;
        }
        Poll::Ready(Ok(go))
    }

    /// Hands the complete frames at the start of `data` to `on`: (bytes used, go on).
    fn parse<F>(&mut self, data: &mut [u8], on: &mut F) -> Result<(usize, bool), WsError>
    where
        F: FnMut(Msg<'_>) -> bool,
    {
        let mut pos = 0;
        while let Some((h, hlen, len)) =
            header(&data[pos..], self.max_frame as usize, self.deflate)?
        {
            let start = pos + hlen;
            let end = start + len;
            if end > data.len() {
                break;
            }
            let payload = &mut data[start..end];
            if let Some(mask) = h.mask {
                unmask(payload, mask);
            }
            pos = end;
            if !self.frame(h.is_final, h.opcode, h.rsv1, payload, on)? {
                return Ok((pos, false));
            }
        }
        Ok((pos, true))
    }

    /// Inflates a complete compressed message and hands it to `on`.
    fn inflated<F>(&self, text: bool, input: &[u8], on: &mut F) -> Result<bool, WsError>
    where
        F: FnMut(Msg<'_>) -> bool,
    {
        deflate::with_inflated(&[input], self.max_message as usize, |m| {
            if text {
                let t = std::str::from_utf8(m).map_err(|_| WsError::InvalidUtf8)?;
                Ok(on(Msg::Text(t)))
            } else {
                Ok(on(Msg::Binary(m)))
            }
        })
        .map_err(|e| match e {
            InflateError::TooBig(limit) => WsError::TooBig(limit),
            InflateError::Corrupt => WsError::Inflate,
        })?
    }

    fn frame<F>(
        &mut self,
        fin: bool,
        op: OpCode,
        compressed: bool,
        payload: &[u8],
        on: &mut F,
    ) -> Result<bool, WsError>
    where
        F: FnMut(Msg<'_>) -> bool,
    {
        match op {
            OpCode::Control(Control::Ping) => Ok(on(Msg::Ping(payload))),
            OpCode::Control(Control::Pong) => Ok(on(Msg::Pong)),
            OpCode::Control(Control::Close) => Ok(on(Msg::Close(close_code(payload)?))),
            OpCode::Control(Control::Reserved(_)) | OpCode::Data(Data::Reserved(_)) => {
                Err(WsError::Protocol("reserved opcode"))
            }
            OpCode::Data(Data::Continue) => {
                let Some(p) = self.partial.as_mut() else {
                    return Err(WsError::Protocol("continuation frame without a message"));
                };
                if p.data.len() + payload.len() > self.max_message as usize {
                    return Err(WsError::TooBig(self.max_message as usize));
                }
                p.frames += 1;
                if p.frames > max_fragments(self.max_message) {
                    return Err(WsError::TooManyFragments(max_fragments(self.max_message)));
                }
                p.data.extend_from_slice(payload);
                if p.text && !p.compressed {
                    p.check_utf8(fin)?;
                }
                if !fin {
                    return Ok(true);
                }
                let p = self.partial.take().expect("checked above");
                if p.compressed {
                    return self.inflated(p.text, &p.data, on);
                }
                Ok(if p.text {
                    on(Msg::Text(
                        std::str::from_utf8(&p.data).map_err(|_| WsError::InvalidUtf8)?,
                    ))
                } else {
                    on(Msg::Binary(&p.data))
                })
            }
            OpCode::Data(d) => {
                if self.partial.is_some() {
                    return Err(WsError::Protocol("new message before the last one ended"));
                }
                if payload.len() > self.max_message as usize {
                    return Err(WsError::TooBig(self.max_message as usize));
                }
                let text = d == Data::Text;
                if fin && compressed {
                    return self.inflated(text, payload, on);
                }
                if fin {
                    return Ok(if text {
                        on(Msg::Text(
                            std::str::from_utf8(payload).map_err(|_| WsError::InvalidUtf8)?,
                        ))
                    } else {
                        on(Msg::Binary(payload))
                    });
                }
                let mut p = Box::new(Partial {
                    text,
                    compressed,
                    data: payload.to_vec(),
                    valid: 0,
                    frames: 1,
                });
                if text && !compressed {
                    p.check_utf8(false)?;
                }
                self.partial = Some(p);
                Ok(true)
            }
        }
    }
}

/// An outgoing frame.
#[derive(Debug, Clone, Copy)]
pub enum Out<'a> {
    /// A text message in one frame.
    Text(&'a [u8]),
    /// A binary message in one frame.
    Binary(&'a [u8]),
    /// A pong answering a ping.
    Pong(&'a [u8]),
    /// A close with a status code and reason (the reason is cut to fit 123 bytes).
    Close(u16, &'a str),
}

/// How one connection's outgoing messages are compressed (permessage-deflate negotiated).
#[derive(Debug, Clone, Copy)]
pub struct Deflate {
    /// The agreed compressor window (log2 bytes).
    pub window_bits: u8,
    /// Messages of at most this many bytes are sent uncompressed
    /// (`network.websocket.compressionThreshold`).
    pub threshold: usize,
}

/// Appends one data message whose payload is `parts` joined, compressed with `z` when it is
/// above the threshold and deflate makes it smaller (RSV1 set), else as it is.
fn encode_message(buf: &mut Vec<u8>, opcode: OpCode, parts: &[&[u8]], z: Option<Deflate>) {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    if let Some(z) = z.filter(|z| len > z.threshold) {
        let done = deflate::with_deflated(z.window_bits, parts, |c| {
            if c.len() >= len {
                return false;
            }
            let h = FrameHeader {
                rsv1: true,
                opcode,
                ..FrameHeader::default()
            };
            // Writing into a Vec cannot fail.
            let _ = h.format(c.len() as u64, buf);
            buf.extend_from_slice(c);
            true
        });
        if done {
            return;
        }
    }
    let h = FrameHeader {
        opcode,
        ..FrameHeader::default()
    };
    // Writing into a Vec cannot fail.
    let _ = h.format(len as u64, buf);
    for p in parts {
        buf.extend_from_slice(p);
    }
}

/// [`encode`], compressing a text or binary message as `z` says (pongs and closes never).
pub fn encode_z(buf: &mut Vec<u8>, frame: Out<'_>, z: Option<Deflate>) {
    match frame {
        Out::Text(p) => encode_message(buf, OpCode::Data(Data::Text), &[p], z),
        Out::Binary(p) => encode_message(buf, OpCode::Data(Data::Binary), &[p], z),
        Out::Pong(_) | Out::Close(..) => encode(buf, frame),
    }
}

/// Appends `frame`, encoded (server frames are not masked), to `buf`.
pub fn encode(buf: &mut Vec<u8>, frame: Out<'_>) {
    let (opcode, payload) = match frame {
        Out::Text(p) => (OpCode::Data(Data::Text), p),
        Out::Binary(p) => (OpCode::Data(Data::Binary), p),
        Out::Pong(p) => (OpCode::Control(Control::Pong), p),
        Out::Close(code, reason) => {
            let mut cut = reason.len().min(123);
            while !reason.is_char_boundary(cut) {
                cut -= 1;
            }
            let h = FrameHeader {
                opcode: OpCode::Control(Control::Close),
                ..FrameHeader::default()
            };
            let _ = h.format(2 + cut as u64, buf);
            buf.extend_from_slice(&code.to_be_bytes());
            buf.extend_from_slice(&reason.as_bytes()[..cut]);
            return;
        }
    };
    let h = FrameHeader {
        opcode,
        ..FrameHeader::default()
    };
    // Writing into a Vec cannot fail.
    let _ = h.format(payload.len() as u64, buf);
    buf.extend_from_slice(payload);
}

/// Appends a text frame whose payload is `head` followed by `tail` (a shared event and this
/// connection's end of it), without joining them first; compressed as `z` says.
pub fn encode_parts(buf: &mut Vec<u8>, head: &[u8], tail: &[u8], z: Option<Deflate>) {
    encode_message(buf, OpCode::Data(Data::Text), &[head, tail], z);
}

/// Appends a client frame (masked with `mask`, RFC 6455 §5.3) of raw opcode `opcode`: what a
/// browser sends. The gateway never sends one; tests and tools build their input with it.
#[doc(hidden)]
pub fn encode_client(buf: &mut Vec<u8>, fin: bool, opcode: u8, mask: [u8; 4], payload: &[u8]) {
    encode_client_rsv1(buf, fin, false, opcode, mask, payload);
}

/// [`encode_client`] with RSV1 as given: `payload` is then deflate data (permessage-deflate)
/// or, for tests of the refusals, anything.
#[doc(hidden)]
pub fn encode_client_rsv1(
    buf: &mut Vec<u8>,
    fin: bool,
    rsv1: bool,
    opcode: u8,
    mask: [u8; 4],
    payload: &[u8],
) {
    let h = FrameHeader {
        is_final: fin,
        rsv1,
        opcode: OpCode::from(opcode),
        mask: Some(mask),
        ..FrameHeader::default()
    };
    // Writing into a Vec cannot fail.
    let _ = h.format(payload.len() as u64, buf);
    let start = buf.len();
    buf.extend_from_slice(payload);
    unmask(&mut buf[start..], mask);
}

/// Writes `buf[*off..]` until done or the socket would block.
fn poll_drain<S: AsyncWrite + Unpin>(
    cx: &mut Context<'_>,
    io: &RefCell<S>,
    buf: &[u8],
    off: &mut usize,
) -> Poll<io::Result<()>> {
    let mut s = io.borrow_mut();
    while *off < buf.len() {
        match Pin::new(&mut *s).poll_write(cx, &buf[*off..]) {
            Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
            Poll::Ready(Ok(n)) => *off += n,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        }
    }
    Pin::new(&mut *s).poll_flush(cx)
}

/// Encodes frames with `fill` into this shard's scratch buffer and writes them in one go,
/// without waiting. `None`: all of it left. `Some(rest)`: the socket would block; `rest` is
/// what it did not take (empty when only a flush is pending, e.g. TLS records still in
/// rustls), to be finished with [`drain`]. Nothing is kept per connection when it all left.
pub fn write_now<S, F>(io: &RefCell<S>, fill: F) -> io::Result<Option<Vec<u8>>>
where
    S: AsyncWrite + Unpin,
    F: FnOnce(&mut Vec<u8>),
{
    // A readiness wait armed by this attempt wakes no one; `drain` polls again with the
    // task's waker, which replaces it.
    let mut cx = Context::from_waker(std::task::Waker::noop());
    with_scratch(&TX, |buf| {
        buf.clear();
        fill(buf);
        let mut off = 0;
        let r = match poll_drain(&mut cx, io, buf, &mut off) {
            Poll::Ready(Ok(())) => Ok(None),
            Poll::Ready(Err(e)) => Err(e),
            Poll::Pending => Ok(Some(buf[off..].to_vec())),
        };
        if buf.capacity() > TX_KEEP {
            *buf = Vec::new();
        }
        r
    })
}

/// Writes `rest` (what [`write_now`] left) as the socket drains, then flushes.
pub async fn drain<S: AsyncWrite + Unpin>(io: &RefCell<S>, rest: Vec<u8>) -> io::Result<()> {
    let mut off = 0;
    poll_fn(|cx| poll_drain(cx, io, &rest, &mut off)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::block_on;

    /// A client frame: masked with a fixed key.
    fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_client(&mut out, fin, opcode, [0x11, 0x22, 0x33, 0x44], payload);
        out
    }

    /// A stream that returns its input in pieces of `step` bytes.
    struct Trickle {
        data: Vec<u8>,
        pos: usize,
        step: usize,
    }

    impl AsyncRead for Trickle {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            let n = self.step.min(buf.len()).min(self.data.len() - self.pos);
            let p = self.pos;
            buf[..n].copy_from_slice(&self.data[p..p + n]);
            self.pos += n;
            Poll::Ready(Ok(n))
        }
    }

    /// Everything read from `bytes` (delivered `step` bytes at a time) until EOF or an error.
    fn read_all(bytes: Vec<u8>, step: usize, max: usize) -> (Vec<String>, Option<WsError>) {
        read_all_z(bytes, step, max, false)
    }

    /// [`read_all`], with permessage-deflate negotiated or not.
    fn read_all_z(
        bytes: Vec<u8>,
        step: usize,
        max: usize,
        deflate: bool,
    ) -> (Vec<String>, Option<WsError>) {
        let io = RefCell::new(Trickle {
            data: bytes,
            pos: 0,
            step,
        });
        let mut reader = WsReader::new(max, max).with_deflate(deflate);
        let mut seen = Vec::new();
        let err = block_on(async {
            loop {
                let r = reader
                    .read(&io, &mut |m| {
                        seen.push(match m {
                            Msg::Text(t) => format!("text:{t}"),
                            Msg::Binary(b) => format!("binary:{}", b.len()),
                            Msg::Ping(p) => format!("ping:{}", String::from_utf8_lossy(p)),
                            Msg::Pong => "pong".into(),
                            Msg::Close(c) => format!("close:{c:?}"),
                        });
                        true
                    })
                    .await;
                if let Err(e) = r {
                    return e;
                }
            }
        });
        (seen, Some(err).filter(|e| !matches!(e, WsError::Eof)))
    }

    #[test]
    fn a_message_in_too_many_frames_is_refused() {
        // max 4096 bytes: at most 64 frames per message.
        let cap = max_fragments(4096) as usize;
        assert_eq!(cap, 64);
        let message = |frames: usize, last_fin: bool| {
            let mut b = client_frame(false, 1, b"a");
            for i in 1..frames {
                let fin = last_fin && i == frames - 1;
                b.extend(client_frame(fin, 0, b""));
            }
            b
        };
        let (seen, err) = read_all(message(cap, true), 7, 4096);
        assert_eq!(
            seen,
            ["text:a"],
            "a message in exactly the cap's frames: {err:?}"
        );
        // A flood of empty continuation frames: refused at the cap, never read on.
        let (seen, err) = read_all(message(cap * 100, false), 7, 4096);
        assert!(seen.is_empty());
        assert!(
            matches!(err, Some(WsError::TooManyFragments(64))),
            "{err:?}"
        );
        assert_eq!(err.unwrap().close(), Some((1008, "too many fragments")));
    }

    #[test]
    fn frames_split_anywhere_come_out_whole() {
        let mut bytes = client_frame(true, 1, b"hello");
        bytes.extend(client_frame(true, 9, b"p"));
        bytes.extend(client_frame(false, 1, "h\u{e9}".as_bytes()));
        bytes.extend(client_frame(true, 0, b"llo"));
        bytes.extend(client_frame(true, 2, &[0; 300]));
        bytes.extend(client_frame(true, 8, &[0x03, 0xe8, b'o', b'k']));
        let want = vec![
            "text:hello".to_string(),
            "ping:p".into(),
            "text:h\u{e9}llo".into(),
            "binary:300".into(),
            "close:Some(1000)".into(),
        ];
        for step in [1, 2, 3, 7, 64, 1 << 20] {
            let (seen, err) = read_all(bytes.clone(), step, 1 << 20);
            assert_eq!(seen, want, "step {step}");
            assert!(err.is_none(), "step {step}: {err:?}");
        }
    }

    #[test]
    fn a_frame_larger_than_the_scratch_buffer_is_assembled() {
        let big = "x".repeat(SCRATCH * 2 + 5);
        let mut bytes = client_frame(true, 1, big.as_bytes());
        bytes.extend(client_frame(true, 1, b"after"));
        let (seen, err) = read_all(bytes, 10_000, 1 << 20);
        assert!(err.is_none(), "{err:?}");
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0].len(), 5 + big.len());
        assert_eq!(seen[1], "text:after");
    }

    #[test]
    fn violations_are_refused_with_their_close_code() {
        let cases: Vec<(Vec<u8>, u16)> = vec![
            // unmasked client frame
            (vec![0x81, 0x02, b'h', b'i'], 1002),
            // reserved bit
            (
                {
                    let mut f = client_frame(true, 1, b"x");
                    f[0] |= 0x40;
                    f
                },
                1002,
            ),
            // reserved opcode
            (client_frame(true, 3, b""), 1002),
            // fragmented ping
            (client_frame(false, 9, b""), 1002),
            // continuation with nothing to continue
            (client_frame(true, 0, b"x"), 1002),
            // invalid UTF-8, fail fast inside a fragmented message
            (client_frame(false, 1, &[0xce, 0xba, 0xf4, 0x90]), 1007),
            // invalid close code
            (client_frame(true, 8, &[0x03, 0xed]), 1002),
            // close reason not UTF-8
            (client_frame(true, 8, &[0x03, 0xe8, 0xff]), 1007),
            // over the frame limit
            (client_frame(true, 1, &[b'a'; 200]), 1009),
        ];
        for (bytes, code) in cases {
            let (_, err) = read_all(bytes.clone(), 1 << 20, 100);
            let err = err.unwrap_or_else(|| panic!("no error for {bytes:02x?}"));
            assert_eq!(err.close().map(|c| c.0), Some(code), "{bytes:02x?}: {err}");
        }
    }

    #[test]
    fn a_stopped_read_keeps_the_rest_for_the_next_call() {
        let mut bytes = client_frame(true, 1, b"one");
        bytes.extend(client_frame(true, 1, b"two"));
        let io = RefCell::new(Trickle {
            data: bytes,
            pos: 0,
            step: 1 << 20,
        });
        let mut reader = WsReader::new(1 << 20, 1 << 20);
        let mut got = Vec::new();
        block_on(async {
            for _ in 0..2 {
                let go = reader
                    .read(&io, &mut |m| {
                        got.push(format!("{m:?}"));
                        false
                    })
                    .await
                    .unwrap();
                assert!(!go);
            }
        });
        assert_eq!(got, vec![r#"Text("one")"#, r#"Text("two")"#]);
        assert!(reader.pending.is_empty());
    }

    /// A socket that takes at most `take` bytes per write, refuses every other write, and
    /// holds written bytes until `flush` (which also refuses every other call), like TLS.
    #[derive(Default)]
    struct Stingy {
        take: usize,
        calls: usize,
        pending: Vec<u8>,
        flushed: Vec<u8>,
    }

    impl AsyncWrite for Stingy {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.calls += 1;
            if self.calls.is_multiple_of(2) {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let n = buf.len().min(self.take);
            self.pending.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.calls += 1;
            if self.calls.is_multiple_of(2) {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let p = std::mem::take(&mut self.pending);
            self.flushed.extend(p);
            Poll::Ready(Ok(()))
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn what_the_socket_does_not_take_at_once_is_drained_and_flushed() {
        for take in [1, 7, 300, 1 << 20] {
            let io = RefCell::new(Stingy {
                take,
                ..Stingy::default()
            });
            let payload = vec![b'x'; 500];
            let rest = write_now(&io, |buf| encode(buf, Out::Text(&payload))).unwrap();
            if let Some(rest) = rest {
                block_on(drain(&io, rest)).unwrap();
            }
            let s = io.into_inner();
            let mut want = Vec::new();
            encode(&mut want, Out::Text(&payload));
            assert_eq!(s.flushed, want, "take {take}");
            assert!(s.pending.is_empty());
        }
    }

    #[test]
    fn encoded_frames_have_rfc_headers() {
        let mut buf = Vec::new();
        encode(&mut buf, Out::Text(b"hi"));
        encode(&mut buf, Out::Binary(&[7; 200]));
        encode(&mut buf, Out::Close(1000, ""));
        assert_eq!(&buf[..4], &[0x81, 2, b'h', b'i']);
        assert_eq!(&buf[4..8], &[0x82, 126, 0, 200]);
        assert_eq!(&buf[208..], &[0x88, 2, 0x03, 0xe8]);
        let mut c = Vec::new();
        encode(&mut c, Out::Close(1001, &"\u{e9}".repeat(100)));
        assert!(c.len() <= 127 && std::str::from_utf8(&c[4..]).is_ok());
    }

    /// A client frame with RSV1 set.
    fn client_frame_z(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_client_rsv1(&mut out, fin, true, opcode, [9, 8, 7, 6], payload);
        out
    }

    /// What a client's compressor sends for `msg`: raw deflate, sync-flushed, tail stripped.
    fn deflated(msg: &[u8]) -> Vec<u8> {
        deflate::with_deflated(15, &[msg], |z| z.to_vec())
    }

    #[test]
    fn compressed_messages_are_inflated_whole_or_fragmented() {
        let long = "gateway ".repeat(200);
        let z = deflated(long.as_bytes());
        let mut bytes = client_frame_z(true, 1, &z);
        // Fragmented: RSV1 on the first frame only, a ping in between.
        let (a, b) = z.split_at(z.len() / 2);
        bytes.extend(client_frame_z(false, 1, a));
        bytes.extend(client_frame(true, 9, b"p"));
        bytes.extend(client_frame(true, 0, b));
        // Uncompressed messages stay legal on a compressed connection.
        bytes.extend(client_frame(true, 1, b"plain"));
        bytes.extend(client_frame_z(true, 2, &deflated(&[7; 5000])));
        // An empty compressed message: the client sends one 0x00 byte.
        bytes.extend(client_frame_z(true, 1, &[0x00]));
        let want = vec![
            format!("text:{long}"),
            "ping:p".into(),
            format!("text:{long}"),
            "text:plain".into(),
            "binary:5000".into(),
            "text:".into(),
        ];
        for step in [1, 5, 64, 1 << 20] {
            let (seen, err) = read_all_z(bytes.clone(), step, 1 << 20, true);
            assert!(err.is_none(), "step {step}: {err:?}");
            assert_eq!(seen, want, "step {step}");
        }
    }

    #[test]
    fn rsv1_is_refused_where_rfc_7692_forbids_it() {
        let z = deflated(b"hello");
        let cases: Vec<(Vec<u8>, bool, u16)> = vec![
            // RSV1 without the extension negotiated.
            (client_frame_z(true, 1, &z), false, 1002),
            // RSV1 on a continuation frame.
            (
                {
                    let mut f = client_frame_z(false, 1, &z[..2]);
                    f.extend(client_frame_z(true, 0, &z[2..]));
                    f
                },
                true,
                1002,
            ),
            (
                {
                    let mut f = client_frame(false, 1, b"he");
                    f.extend(client_frame_z(true, 0, b"llo"));
                    f
                },
                true,
                1002,
            ),
            // Compressed control frames.
            (client_frame_z(true, 9, &z), true, 1002),
            (client_frame_z(true, 8, &[0x03, 0xe8]), true, 1002),
            (client_frame_z(true, 10, b""), true, 1002),
            // RSV2 and RSV3 stay reserved.
            (
                {
                    let mut f = client_frame(true, 1, b"x");
                    f[0] |= 0x20;
                    f
                },
                true,
                1002,
            ),
            (
                {
                    let mut f = client_frame(true, 1, b"x");
                    f[0] |= 0x10;
                    f
                },
                true,
                1002,
            ),
            // Not deflate data; inflates to invalid UTF-8.
            (client_frame_z(true, 1, &[0xff, 0xff, 0xff]), true, 1007),
            (
                client_frame_z(true, 1, &deflated(&[0xff, 0xfe])),
                true,
                1007,
            ),
        ];
        for (bytes, deflate, code) in cases {
            let (_, err) = read_all_z(bytes.clone(), 1 << 20, 1 << 20, deflate);
            let err = err.unwrap_or_else(|| panic!("no error for {bytes:02x?}"));
            assert_eq!(err.close().map(|c| c.0), Some(code), "{bytes:02x?}: {err}");
        }
    }

    #[test]
    fn a_zip_bomb_closes_1009_at_the_message_limit() {
        // 1 MiB of zeros in ~1 KiB; the limit (64 KiB, like the pre-auth one) is what counts.
        let zeros = vec![0u8; 1 << 20];
        let mut c = flate2::Compress::new(flate2::Compression::best(), false);
        let mut z = Vec::with_capacity(1 << 16);
        c.compress_vec(&zeros, &mut z, flate2::FlushCompress::Sync)
            .unwrap();
        assert!(z.len() < 2048, "{}", z.len());
        for frames in [client_frame_z(true, 2, &z), {
            let mut f = client_frame_z(false, 2, &z[..100]);
            f.extend(client_frame(true, 0, &z[100..]));
            f
        }] {
            let (seen, err) = read_all_z(frames, 1 << 20, 64 << 10, true);
            assert!(seen.is_empty());
            let err = err.expect("refused");
            assert!(matches!(err, WsError::TooBig(l) if l == 64 << 10), "{err}");
            assert_eq!(err.close().map(|c| c.0), Some(1009));
        }
    }

    /// The payload of one server frame in `buf`: (rsv1, opcode, payload).
    fn server_frame(buf: &[u8]) -> (bool, OpCode, Vec<u8>) {
        let mut cur = Cursor::new(buf);
        let (h, len) = FrameHeader::parse(&mut cur).unwrap().unwrap();
        let start = cur.position() as usize;
        assert_eq!(start + len as usize, buf.len(), "one frame");
        (h.rsv1, h.opcode, buf[start..].to_vec())
    }

    #[test]
    fn outgoing_messages_are_compressed_above_the_threshold_only() {
        let z = Some(Deflate {
            window_bits: 10,
            threshold: 256,
        });
        let big = "{\"type\":\"event\",\"event\":\"agent\"} ".repeat(40);
        let mut buf = Vec::new();
        encode_z(&mut buf, Out::Text(big.as_bytes()), z);
        let (rsv1, op, payload) = server_frame(&buf);
        assert!(rsv1 && op == OpCode::Data(Data::Text));
        assert!(payload.len() < big.len() / 4, "{}", payload.len());
        assert!(!payload.ends_with(&[0, 0, 0xff, 0xff]));
        let back = deflate::with_inflated(&[&payload], 1 << 20, |m| m.to_vec()).unwrap();
        assert_eq!(back, big.as_bytes());
        // Split across head and tail (a shared event), same bytes.
        let mut parts = Vec::new();
        encode_parts(
            &mut parts,
            &big.as_bytes()[..100],
            &big.as_bytes()[100..],
            z,
        );
        let (rsv1, _, p2) = server_frame(&parts);
        assert!(rsv1);
        assert_eq!(
            deflate::with_inflated(&[&p2], 1 << 20, |m| m.to_vec()).unwrap(),
            big.as_bytes()
        );
        // At the threshold, incompressible, pongs and closes: as they are.
        for (frame, rsv) in [
            (Out::Text(&big.as_bytes()[..256]), false),
            (Out::Binary(&[0x5a; 300]), true),
            (Out::Binary(&(0..=255).collect::<Vec<u8>>()), false),
            (Out::Pong(&[b'p'; 125]), false),
        ] {
            let mut buf = Vec::new();
            encode_z(&mut buf, frame, z);
            let (rsv1, _, _) = server_frame(&buf);
            assert_eq!(rsv1, rsv, "{frame:?}");
            if !rsv {
                let mut plain = Vec::new();
                encode(&mut plain, frame);
                assert_eq!(buf, plain, "{frame:?}");
            }
        }
        let mut close = Vec::new();
        encode_z(&mut close, Out::Close(1000, &"x".repeat(120)), z);
        assert!(!server_frame(&close).0);
    }
}
