//! WebSocket framing in the client role (RFC 6455), sans-IO: the upgrade request and the
//! check of its answer (`Sec-WebSocket-Accept`), masked frames out, unmasked frames in. Used
//! by the gateway's own outbound connections (the Discord Gateway); the server role, which
//! every client connection uses, stays in [`super::ws`] untouched by this module.
//!
//! Invariants: a server frame that is masked, carries an RSV bit (no extension is offered),
//! is a fragmented or oversized control frame, or breaks fragmentation is a protocol error;
//! a text message is valid UTF-8; no message grows past the reader's limit. The reader keeps
//! only bytes not yet consumed, so feeding it in any split gives the same frames.

use std::io::Cursor;

use tungstenite::protocol::frame::coding::{CloseCode, Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

/// A message or control frame from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A whole text message.
    Text(String),
    /// A whole binary message.
    Binary(Vec<u8>),
    /// A ping (answer it with a pong carrying the same payload).
    Ping(Vec<u8>),
    /// A pong.
    Pong(Vec<u8>),
    /// The server closes: its code (none when the frame had no payload) and reason.
    Close(Option<u16>, String),
}

/// Why the server's stream is not a WebSocket stream we accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientWsError {
    /// A framing rule was broken (the text says which).
    Protocol(&'static str),
    /// A message larger than the limit.
    TooBig(usize),
}

impl std::fmt::Display for ClientWsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientWsError::Protocol(why) => write!(f, "WebSocket protocol error: {why}"),
            ClientWsError::TooBig(n) => write!(f, "WebSocket message over {n} bytes"),
        }
    }
}

/// The upgrade request for `target` (path and query) on `host` with the client's `key`
/// (16 random bytes, base64).
pub fn upgrade_request(host: &str, target: &str, key: &str, user_agent: &str) -> String {
    format!(
        "GET {target} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nUser-Agent: {user_agent}\r\n\r\n"
    )
}

/// A fresh `Sec-WebSocket-Key` from 16 bytes of `random`.
pub fn new_key(random: [u8; 16]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(random)
}

/// Reads the upgrade answer in `head`: `Ok(None)` while incomplete, `Ok(Some(len))` (the
/// head's length; bytes after it are already frames) for a `101` whose
/// `Sec-WebSocket-Accept` matches `key`, an error otherwise (with the status when there is
/// one).
pub fn check_upgrade(head: &[u8], key: &str) -> Result<Option<usize>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut r = httparse::Response::new(&mut headers);
    let len = match r.parse(head) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if head.len() > 16 * 1024 => {
            return Err("upgrade answer head too long".into())
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("bad upgrade answer: {e}")),
    };
    let code = r.code.unwrap_or(0);
    if code != 101 {
        return Err(format!("upgrade refused: HTTP {code}"));
    }
    let header = |name: &str| {
        r.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_string())
    };
    if !header("upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket")) {
        return Err("upgrade answer without Upgrade: websocket".into());
    }
    let want = tungstenite::handshake::derive_accept_key(key.as_bytes());
    if header("sec-websocket-accept").as_deref() != Some(want.as_str()) {
        return Err("upgrade answer with a wrong Sec-WebSocket-Accept".into());
    }
    if header("sec-websocket-extensions").is_some_and(|v| !v.is_empty()) {
        // None was offered: a server that answers with one is not speaking our protocol.
        return Err("upgrade answer names an extension that was not offered".into());
    }
    Ok(Some(len))
}

/// Appends a final client frame of `opcode` with `payload`, masked with `mask` (RFC 6455
/// §5.3: every client frame is masked).
pub fn encode(buf: &mut Vec<u8>, opcode: OpCode, mask: [u8; 4], payload: &[u8]) {
    let h = FrameHeader {
        opcode,
        mask: Some(mask),
        ..FrameHeader::default()
    };
    // Writing into a Vec cannot fail.
    let _ = h.format(payload.len() as u64, buf);
    let start = buf.len();
    buf.extend_from_slice(payload);
    for (i, b) in buf[start..].iter_mut().enumerate() {
        *b ^= mask[i % 4];
    }
}

/// A text frame.
pub fn encode_text(buf: &mut Vec<u8>, mask: [u8; 4], text: &str) {
    encode(buf, OpCode::Data(Data::Text), mask, text.as_bytes());
}

/// A close frame with `code` (and no reason).
pub fn encode_close(buf: &mut Vec<u8>, mask: [u8; 4], code: u16) {
    encode(
        buf,
        OpCode::Control(Control::Close),
        mask,
        &code.to_be_bytes(),
    );
}

/// A pong answering a ping's `payload`.
pub fn encode_pong(buf: &mut Vec<u8>, mask: [u8; 4], payload: &[u8]) {
    encode(buf, OpCode::Control(Control::Pong), mask, payload);
}

/// Reads server frames from the bytes fed to it.
#[derive(Debug)]
pub struct Reader {
    buf: Vec<u8>,
    /// A fragmented data message so far: whether it is text, and its bytes.
    partial: Option<(bool, Vec<u8>)>,
    max_message: usize,
}

impl Reader {
    /// A reader taking messages up to `max_message` bytes.
    pub fn new(max_message: usize) -> Reader {
        Reader {
            buf: Vec::new(),
            partial: None,
            max_message,
        }
    }

    /// Adds bytes read from the socket.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole frame, `Ok(None)` until one is complete.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, ClientWsError> {
        loop {
            let mut cursor = Cursor::new(self.buf.as_slice());
            let parsed = FrameHeader::parse(&mut cursor)
                .map_err(|_| ClientWsError::Protocol("malformed frame header"))?;
            let Some((h, len)) = parsed else {
                return Ok(None);
            };
            let head = cursor.position() as usize;
            if h.rsv1 || h.rsv2 || h.rsv3 {
                return Err(ClientWsError::Protocol("reserved bits set"));
            }
            if h.mask.is_some() {
                return Err(ClientWsError::Protocol("server frames must not be masked"));
            }
            let control = matches!(h.opcode, OpCode::Control(_));
            if control && (!h.is_final || len > 125) {
                return Err(ClientWsError::Protocol(
                    "control frames must be final and at most 125 bytes",
                ));
            }
            let have = self.partial.as_ref().map_or(0, |p| p.1.len()) as u64;
            if !control && have + len > self.max_message as u64 {
                return Err(ClientWsError::TooBig(self.max_message));
            }
            let len = len as usize;
            if self.buf.len() < head + len {
                return Ok(None);
            }
            let payload: Vec<u8> = self.buf[head..head + len].to_vec();
            self.buf.drain(..head + len);
            let data = match h.opcode {
                OpCode::Control(Control::Ping) => return Ok(Some(Frame::Ping(payload))),
                OpCode::Control(Control::Pong) => return Ok(Some(Frame::Pong(payload))),
                OpCode::Control(Control::Close) => return close(&payload).map(Some),
                OpCode::Control(_) => return Err(ClientWsError::Protocol("reserved opcode")),
                OpCode::Data(Data::Text) | OpCode::Data(Data::Binary) if self.partial.is_some() => {
                    return Err(ClientWsError::Protocol(
                        "a new message inside a fragmented one",
                    ))
                }
                OpCode::Data(Data::Text) => (true, payload),
                OpCode::Data(Data::Binary) => (false, payload),
                OpCode::Data(Data::Continue) => match self.partial.take() {
                    Some((text, mut so_far)) => {
                        so_far.extend_from_slice(&payload);
                        (text, so_far)
                    }
                    None => return Err(ClientWsError::Protocol("continuation without a start")),
                },
                OpCode::Data(_) => return Err(ClientWsError::Protocol("reserved opcode")),
            };
            if !h.is_final {
                self.partial = Some(data);
                continue;
            }
            return match data {
                (true, bytes) => String::from_utf8(bytes)
                    .map(|t| Some(Frame::Text(t)))
                    .map_err(|_| ClientWsError::Protocol("text message is not UTF-8")),
                (false, bytes) => Ok(Some(Frame::Binary(bytes))),
            };
        }
    }
}

/// A close frame's code and reason, checked (RFC 6455 §5.5.1, §7.4).
fn close(payload: &[u8]) -> Result<Frame, ClientWsError> {
    match payload {
        [] => Ok(Frame::Close(None, String::new())),
        [_] => Err(ClientWsError::Protocol("close frame with a 1-byte payload")),
        [a, b, reason @ ..] => {
            let code = u16::from_be_bytes([*a, *b]);
            if !CloseCode::from(code).is_allowed() {
                return Err(ClientWsError::Protocol("invalid close code"));
            }
            let reason = std::str::from_utf8(reason)
                .map_err(|_| ClientWsError::Protocol("close reason is not UTF-8"))?;
            Ok(Frame::Close(Some(code), reason.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server frame (unmasked).
    fn server(fin: bool, opcode: OpCode, payload: &[u8]) -> Vec<u8> {
        let h = FrameHeader {
            is_final: fin,
            opcode,
            ..FrameHeader::default()
        };
        let mut out = Vec::new();
        h.format(payload.len() as u64, &mut out).unwrap();
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn reads_frames_split_anywhere() {
        let mut bytes = server(false, OpCode::Data(Data::Text), b"hel");
        bytes.extend(server(true, OpCode::Control(Control::Ping), b"p"));
        bytes.extend(server(true, OpCode::Data(Data::Continue), b"lo"));
        bytes.extend(server(
            true,
            OpCode::Control(Control::Close),
            &[0x0f, 0xa4, b'x'],
        ));
        for split in 0..bytes.len() {
            let mut r = Reader::new(1024);
            let mut got = Vec::new();
            for part in [&bytes[..split], &bytes[split..]] {
                r.push(part);
                while let Some(f) = r.next_frame().unwrap() {
                    got.push(f);
                }
            }
            assert_eq!(
                got,
                [
                    Frame::Ping(b"p".to_vec()),
                    Frame::Text("hello".into()),
                    Frame::Close(Some(4004), "x".into())
                ],
                "split at {split}"
            );
        }
    }

    #[test]
    fn refuses_what_a_server_must_not_send() {
        let masked = {
            let mut b = Vec::new();
            encode_text(&mut b, [1, 2, 3, 4], "x");
            b
        };
        let long_ping = server(true, OpCode::Control(Control::Ping), &[0; 126]);
        let stray = server(true, OpCode::Data(Data::Continue), b"x");
        let bad_utf8 = server(true, OpCode::Data(Data::Text), &[0xff]);
        for (what, bytes) in [
            ("masked", masked),
            ("long ping", long_ping),
            ("stray continuation", stray),
            ("bad utf-8", bad_utf8),
        ] {
            let mut r = Reader::new(1024);
            r.push(&bytes);
            assert!(r.next_frame().is_err(), "{what} accepted");
        }
        let mut r = Reader::new(4);
        r.push(&server(true, OpCode::Data(Data::Text), b"12345"));
        assert_eq!(r.next_frame(), Err(ClientWsError::TooBig(4)));
    }

    #[test]
    fn client_frames_are_masked_and_read_back_by_the_server_reader() {
        let mut b = Vec::new();
        encode_text(&mut b, [9, 8, 7, 6], "hi");
        assert_eq!(b[1] & 0x80, 0x80, "mask bit set");
        let mut cur = Cursor::new(b.as_slice());
        let (h, len) = FrameHeader::parse(&mut cur).unwrap().unwrap();
        assert_eq!((h.mask, len), (Some([9, 8, 7, 6]), 2));
    }

    #[test]
    fn upgrade_answers_are_checked() {
        let key = new_key([7; 16]);
        let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
        let ok = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\nrest"
        );
        assert_eq!(check_upgrade(ok.as_bytes(), &key), Ok(Some(ok.len() - 4)));
        assert_eq!(check_upgrade(&ok.as_bytes()[..20], &key), Ok(None));
        let wrong = ok.replace(&accept, "AAAA");
        assert!(check_upgrade(wrong.as_bytes(), &key).is_err());
        assert!(check_upgrade(b"HTTP/1.1 404 Not Found\r\n\r\n", &key)
            .unwrap_err()
            .contains("404"));
        let req = upgrade_request("h", "/?v=10", &key, "ua");
        assert!(req.starts_with("GET /?v=10 HTTP/1.1\r\nHost: h\r\n"));
    }
}
