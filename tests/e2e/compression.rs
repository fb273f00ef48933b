//! permessage-deflate (RFC 7692, `network.websocket.compression`) over a real socket.
//!
//! tungstenite 0.30 (our test client) has no permessage-deflate, so these tests speak raw
//! frames: the upgrade by hand, client frames compressed with flate2 the way a browser does
//! (raw deflate, sync flush, `00 00 ff ff` stripped, RSV1 on the first frame), server frames
//! inflated the same way.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use serde_json::{json, Value};

use crate::support::{ConnectOpts, Gateway, FRAME_TIMEOUT, READ};

const ON: &str = "{ network: { websocket: { compression: true } } }";
const ANSWER: &str = "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover";

/// One server frame.
#[derive(Debug)]
struct Frame {
    fin: bool,
    rsv1: bool,
    opcode: u8,
    payload: Vec<u8>,
}

/// A hand-driven WebSocket client.
struct Raw {
    s: TcpStream,
    buf: Vec<u8>,
    /// The window our inflater uses (the agreed `server_max_window_bits`).
    window: u8,
}

impl Raw {
    /// Upgrades `/` with `extensions` offered; returns the client and the response head.
    fn open(port: u16, extensions: Option<&str>) -> (Raw, String) {
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let ext = extensions
            .map(|e| format!("Sec-WebSocket-Extensions: {e}\r\n"))
            .unwrap_or_default();
        let mut raw = Raw {
            s,
            buf: Vec::new(),
            window: 15,
        };
        raw.s
            .write_all(
                format!(
                    "GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n\
                     Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                     Sec-WebSocket-Version: 13\r\n{ext}\r\n"
                )
                .as_bytes(),
            )
            .unwrap();
        let deadline = Instant::now() + FRAME_TIMEOUT;
        let end = loop {
            if let Some(i) = raw.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            raw.fill(deadline);
        };
        let head = String::from_utf8_lossy(&raw.buf[..end]).into_owned();
        raw.buf.drain(..end);
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        (raw, head)
    }

    /// Reads more bytes, or panics at the deadline.
    fn fill(&mut self, deadline: Instant) -> usize {
        let mut chunk = [0u8; 65536];
        loop {
            match self.s.read(&mut chunk) {
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return n;
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    assert!(
                        Instant::now() < deadline,
                        "no data within {FRAME_TIMEOUT:?}"
                    );
                }
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    /// The next frame from the server (unmasked).
    fn frame(&mut self) -> Frame {
        let deadline = Instant::now() + FRAME_TIMEOUT;
        loop {
            if let Some((f, used)) = parse(&self.buf) {
                self.buf.drain(..used);
                return f;
            }
            if self.fill(deadline) == 0 {
                panic!("connection closed before a frame; have {:02x?}", self.buf);
            }
        }
    }

    /// The next text message as JSON (inflated when RSV1 says so), skipping pings/pongs.
    fn json(&mut self) -> (bool, Value) {
        loop {
            let f = self.frame();
            assert!(f.fin, "the gateway sends messages in one frame");
            match f.opcode {
                1 => {
                    let text = if f.rsv1 {
                        inflate(&f.payload, self.window)
                    } else {
                        f.payload
                    };
                    return (f.rsv1, serde_json::from_slice(&text).expect("JSON"));
                }
                8 => panic!("closed: {:?}", close_code(&f)),
                _ => {}
            }
        }
    }

    /// The close frame's code, skipping anything before it.
    fn close(&mut self) -> u16 {
        loop {
            let f = self.frame();
            if f.opcode == 8 {
                return close_code(&f);
            }
        }
    }

    /// Sends one masked frame.
    fn send(&mut self, fin: bool, rsv1: bool, opcode: u8, payload: &[u8]) {
        let mut out = Vec::new();
        shardgate::transport::ws::encode_client_rsv1(
            &mut out,
            fin,
            rsv1,
            opcode,
            [1, 2, 3, 4],
            payload,
        );
        self.s.write_all(&out).unwrap();
    }

    /// Sends a request, compressed in one frame.
    fn call_z(&mut self, id: &str, method: &str, params: Value) {
        let text = json!({"type":"req","id":id,"method":method,"params":params}).to_string();
        self.send(true, true, 1, &deflate(text.as_bytes()));
    }

    /// The `res` to `id` (events before it skipped), and whether it came compressed.
    fn res(&mut self, id: &str) -> (bool, Value) {
        loop {
            let (z, v) = self.json();
            if v["type"] == "res" && v["id"] == id {
                return (z, v);
            }
        }
    }
}

fn close_code(f: &Frame) -> u16 {
    u16::from_be_bytes([f.payload[0], f.payload[1]])
}

/// A complete unmasked frame at the start of `b`, and its length.
fn parse(b: &[u8]) -> Option<(Frame, usize)> {
    if b.len() < 2 {
        return None;
    }
    assert_eq!(b[1] & 0x80, 0, "server frames are not masked");
    let (len, at) = match b[1] & 0x7f {
        126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
        127 if b.len() >= 10 => (
            u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize,
            10,
        ),
        126 | 127 => return None,
        n => (n as usize, 2),
    };
    if b.len() < at + len {
        return None;
    }
    let f = Frame {
        fin: b[0] & 0x80 != 0,
        rsv1: b[0] & 0x40 != 0,
        opcode: b[0] & 0x0f,
        payload: b[at..at + len].to_vec(),
    };
    Some((f, at + len))
}

/// What a browser sends for `msg`: raw deflate, sync flush, the trailing `00 00 ff ff` cut.
fn deflate(msg: &[u8]) -> Vec<u8> {
    let mut c = Compress::new(Compression::default(), false);
    let mut out = Vec::with_capacity(msg.len() + 64);
    c.compress_vec(msg, &mut out, FlushCompress::Sync).unwrap();
    assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
    out.truncate(out.len() - 4);
    out
}

/// Inflates a server message with a `window`-bit inflater (fails on a longer distance).
fn inflate(z: &[u8], window: u8) -> Vec<u8> {
    let mut d = Decompress::new_with_window_bits(false, window);
    let mut input = z.to_vec();
    input.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut out = Vec::with_capacity(1 << 20);
    d.decompress_vec(&input, &mut out, FlushDecompress::Sync)
        .expect("valid deflate data within the agreed window");
    assert_eq!(d.total_in() as usize, input.len(), "all input used");
    out
}

/// Challenge, then `connect` compressed; returns the hello-ok `res` and whether it was.
fn handshake(raw: &mut Raw) -> (bool, Value) {
    let (z, ch) = raw.json();
    assert_eq!(ch["event"], "connect.challenge", "{ch}");
    assert!(
        !z,
        "a short frame goes uncompressed (under compressionThreshold)"
    );
    let opts = ConnectOpts {
        scopes: vec![READ.to_string()],
        ..ConnectOpts::default()
    };
    raw.call_z("c1", "connect", opts.params());
    raw.res("c1")
}

#[test]
fn compressed_connect_and_requests_round_trip() {
    let gw = Gateway::standard(Some(ON));
    let (mut raw, head) = Raw::open(gw.port, Some("permessage-deflate; client_max_window_bits"));
    assert!(head.contains(ANSWER), "{head}");
    let (z, hello) = handshake(&mut raw);
    assert_eq!(hello["ok"], true, "{hello}");
    assert_eq!(hello["payload"]["type"], "hello-ok");
    assert!(z, "hello-ok (several KiB) leaves compressed");

    // A request fragmented in two frames: RSV1 on the first only.
    let text = json!({"type":"req","id":"h1","method":"health","params":{}}).to_string();
    let zt = deflate(text.as_bytes());
    let (a, b) = zt.split_at(zt.len() / 2);
    raw.send(false, true, 1, a);
    raw.send(true, false, 0, b);
    let (_, res) = raw.res("h1");
    assert_eq!(res["ok"], true, "{res}");

    // Uncompressed messages stay legal on the same connection.
    let plain = json!({"type":"req","id":"s1","method":"status","params":{}}).to_string();
    raw.send(true, false, 1, plain.as_bytes());
    let (_, res) = raw.res("s1");
    assert_eq!(res["ok"], true, "{res}");

    // RSV1 on a continuation frame is a protocol error.
    raw.send(false, true, 1, a);
    raw.send(true, true, 0, b);
    assert_eq!(raw.close(), 1002);
}

#[test]
fn the_clients_server_window_is_honoured_and_an_8_bit_offer_declined() {
    let gw = Gateway::standard(Some(ON));
    let (mut raw, head) = Raw::open(
        gw.port,
        Some("permessage-deflate; server_max_window_bits=9"),
    );
    assert!(
        head.contains(&format!("{ANSWER}; server_max_window_bits=9")),
        "{head}"
    );
    raw.window = 9;
    let (z, hello) = handshake(&mut raw);
    assert!(z && hello["payload"]["type"] == "hello-ok", "{hello}");

    // zlib cannot deflate with a 256-byte window: that offer is declined, the next one taken.
    let (_, head) = Raw::open(
        gw.port,
        Some("permessage-deflate; server_max_window_bits=8, permessage-deflate"),
    );
    assert!(head.contains(ANSWER), "{head}");
    assert!(!head.contains("server_max_window_bits"), "{head}");
    // A lone unacceptable offer: no extension (uncompressed), not a refusal.
    let (_, head) = Raw::open(gw.port, Some("permessage-deflate; foo=1"));
    assert!(!head.contains("Sec-WebSocket-Extensions"), "{head}");
}

#[test]
fn a_zip_bomb_before_hello_closes_1009_and_the_gateway_lives_on() {
    let gw = Gateway::standard(Some(ON));
    let (mut raw, _) = Raw::open(gw.port, Some("permessage-deflate"));
    let (_, ch) = raw.json();
    assert_eq!(ch["event"], "connect.challenge");
    // 1 MiB of zeros in about 1 KiB; the pre-auth limit is 64 KiB.
    let bomb = deflate(&vec![0u8; 1 << 20]);
    assert!(bomb.len() < 4096, "{}", bomb.len());
    raw.send(true, true, 2, &bomb);
    assert_eq!(raw.close(), 1009);

    let (mut raw, _) = Raw::open(gw.port, Some("permessage-deflate"));
    let (z, hello) = handshake(&mut raw);
    assert!(z && hello["ok"] == true, "{hello}");
}

#[test]
fn without_compression_the_offer_is_ignored_and_rsv1_closes_1002() {
    let gw = Gateway::standard(None);
    let (mut raw, head) = Raw::open(gw.port, Some("permessage-deflate; client_max_window_bits"));
    assert!(!head.contains("Sec-WebSocket-Extensions"), "{head}");
    let (z, ch) = raw.json();
    assert!(!z && ch["event"] == "connect.challenge");
    raw.send(true, true, 1, &deflate(b"{}"));
    assert_eq!(raw.close(), 1002);
}
