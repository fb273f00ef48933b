//! The HTTP side of the port: reading a request head, the health endpoints, the upgrade.

use futures_lite::{AsyncReadExt, AsyncWriteExt};

/// Largest request head accepted.
pub const MAX_HEAD: usize = 16 * 1024;

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// Method.
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// The request target had a query string (`?…`).
    pub has_query: bool,
    /// `Sec-WebSocket-Key` when this is a WebSocket upgrade.
    pub ws_key: Option<String>,
    /// `Origin` (browsers send it; checked against `access.allowedOrigins`).
    pub origin: Option<String>,
    /// `Host`.
    pub host: Option<String>,
    /// A forwarding header came (`X-Forwarded-*`, `Forwarded`, `X-Real-IP`): a proxy speaks
    /// for the client, whose address is not the peer's.
    pub proxied: bool,
    /// Every `Sec-WebSocket-Extensions` value, in order (offers of permessage-deflate).
    pub extensions: Vec<String>,
    /// Bytes read past the head.
    pub rest: Vec<u8>,
}

/// Why a request head was refused (the text is the 400 answer's body).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    /// No end of the head within [`MAX_HEAD`] bytes.
    #[error("request head too large")]
    TooLarge,
    /// Not HTTP/1.x.
    #[error("bad request: {0}")]
    Bad(String),
}

/// A request head read incrementally, in linear time and with the same answer whatever the
/// read sizes.
///
/// Invariants: `httparse` runs only on prefixes of the buffer that end at fixed byte
/// positions, so the answer (a head, a refusal, "need more") depends on the bytes alone, not
/// on how they were cut into reads; and the bytes handed to it in all stay below four times
/// the bytes buffered. Re-parsing the whole buffer on every read would cost quadratic time
/// for a head sent one byte per read (tungstenite's CVE-2023-43669). The positions: each
/// power of two (garbage and a bad header line are refused early; these prefixes add up to
/// twice the buffer), the end of the request line, and the blank line that ends the head.
/// Each byte is looked at once to find the last two.
#[derive(Debug, Default)]
pub struct HeadParser {
    buf: Vec<u8>,
    /// Leading CR/LF bytes (`httparse` skips empty lines before the request line).
    lead: usize,
    /// The end of the request line has been seen.
    line_seen: bool,
    /// Bytes handed to `httparse` so far: the work the invariant bounds.
    work: usize,
}

impl HeadParser {
    /// Bytes handed to the HTTP parser so far (what the linear-cost bound is about).
    pub fn work(&self) -> usize {
        self.work
    }

    /// Bytes buffered so far.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Takes the next bytes read; the head once it is complete (later bytes in
    /// [`Head::rest`]), `None` while more are needed.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Option<Head>, HeadError> {
        let from = self.buf.len();
        self.buf.extend_from_slice(bytes);
        // Decisions only within the first MAX_HEAD bytes: a longer head is refused below,
        // however it arrived.
        for p in from..self.buf.len().min(MAX_HEAD) {
            if self.decides_at(p) {
                if let Some(head) = self.parse(p + 1)? {
                    return Ok(Some(head));
                }
            }
        }
        if self.buf.len() >= MAX_HEAD {
            return Err(HeadError::TooLarge);
        }
        Ok(None)
    }

    /// Whether the prefix ending at byte `p` is parsed: a power-of-two length, the end of
    /// the request line, or the end of the head (`\n` then `\n` or `\r\n`). Called once
    /// per byte, in order.
    fn decides_at(&mut self, p: usize) -> bool {
        let b = &self.buf;
        if self.lead == p && matches!(b[p], b'\r' | b'\n') {
            self.lead += 1;
            return (p + 1).is_power_of_two();
        }
        let mut at_line_end = false;
        if b[p] == b'\n' {
            at_line_end = !self.line_seen;
            self.line_seen = true;
            let blank = (p > self.lead && b[p - 1] == b'\n')
                || (p > self.lead + 1 && b[p - 1] == b'\r' && b[p - 2] == b'\n');
            at_line_end |= blank;
        }
        at_line_end || (p + 1).is_power_of_two()
    }

    /// Runs `httparse` on the first `upto` bytes; a complete head keeps every later byte
    /// buffered in [`Head::rest`].
    fn parse(&mut self, upto: usize) -> Result<Option<Head>, HeadError> {
        self.work += upto;
        let mut headers = [httparse::EMPTY_HEADER; 48];
        let mut req = httparse::Request::new(&mut headers);
        let len = match req.parse(&self.buf[..upto]) {
            // The same limit whatever the read sizes: a long head that came in one read
            // is refused as one that trickled in.
            Ok(httparse::Status::Complete(len)) if len > MAX_HEAD => {
                return Err(HeadError::TooLarge)
            }
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(HeadError::Bad(e.to_string())),
        };
        let mut upgrade = false;
        let mut key = None;
        let (mut origin, mut host) = (None, None);
        let mut extensions = Vec::new();
        let mut proxied = false;
        for h in req.headers.iter() {
            proxied |= is_forwarding(h.name);
            let v = String::from_utf8_lossy(h.value);
            if h.name.eq_ignore_ascii_case("upgrade") && v.eq_ignore_ascii_case("websocket") {
                upgrade = true;
            } else if h.name.eq_ignore_ascii_case("sec-websocket-key") {
                key = Some(v.trim().to_string());
            } else if h.name.eq_ignore_ascii_case("origin") {
                origin = Some(v.trim().to_string());
            } else if h.name.eq_ignore_ascii_case("host") {
                host = Some(v.trim().to_string());
            } else if h.name.eq_ignore_ascii_case("sec-websocket-extensions") {
                extensions.push(v.into_owned());
            }
        }
        let target = req.path.unwrap_or("/");
        let path = target.split('?').next().unwrap_or("/").to_string();
        Ok(Some(Head {
            method: req.method.unwrap_or("").to_string(),
            path,
            has_query: target.contains('?'),
            ws_key: if upgrade { key } else { None },
            origin,
            host,
            proxied,
            extensions,
            rest: self.buf[len..].to_vec(),
        }))
    }
}

/// A header a proxy adds for the client it speaks for.
fn is_forwarding(name: &str) -> bool {
    let prefix = "x-forwarded-";
    name.get(..prefix.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
        || name.eq_ignore_ascii_case("forwarded")
        || name.eq_ignore_ascii_case("x-real-ip")
}

/// Reads one request head. `Ok(None)` when the peer closed first.
pub async fn read_head<S: futures_lite::AsyncRead + Unpin>(
    s: &mut S,
) -> std::io::Result<Option<Head>> {
    let mut parser = HeadParser::default();
    let mut chunk = [0u8; 2048];
    loop {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        match parser.push(&chunk[..n]) {
            Ok(Some(head)) => return Ok(Some(head)),
            Ok(None) => {}
            Err(e) => return Err(std::io::Error::other(e.to_string())),
        }
    }
}

/// Writes a small complete response and lets the caller close.
pub async fn respond<S: futures_lite::AsyncWrite + Unpin>(
    s: &mut S,
    status: u16,
    reason: &str,
    ctype: &str,
    body: &str,
) {
    respond_with(s, status, reason, ctype, "", body).await
}

/// [`respond`] with extra header lines (each ending in `\r\n`).
pub async fn respond_with<S: futures_lite::AsyncWrite + Unpin>(
    s: &mut S,
    status: u16,
    reason: &str,
    ctype: &str,
    extra_headers: &str,
    body: &str,
) {
    let text = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n{extra_headers}Connection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = s.write_all(text.as_bytes()).await;
    let _ = s.flush().await;
}

/// Accepts a WebSocket upgrade, with the `Sec-WebSocket-Extensions` answer if an extension
/// was agreed.
pub async fn switch<S: futures_lite::AsyncWrite + Unpin>(
    s: &mut S,
    key: &str,
    extensions: Option<&str>,
) -> std::io::Result<()> {
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let ext = extensions
        .map(|e| format!("Sec-WebSocket-Extensions: {e}\r\n"))
        .unwrap_or_default();
    let text = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n{ext}\r\n"
    );
    s.write_all(text.as_bytes()).await?;
    s.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(extra: &str) -> Head {
        let req = format!("GET / HTTP/1.1\r\nHost: h\r\n{extra}\r\n");
        HeadParser::default()
            .push(req.as_bytes())
            .expect("valid head")
            .expect("complete head")
    }

    #[test]
    fn forwarding_headers_mark_a_proxied_request() {
        assert!(!head("").proxied);
        assert!(!head("X-Forwarded: no\r\nOrigin: http://a\r\n").proxied);
        for h in [
            "X-Forwarded-For: 1.2.3.4",
            "x-forwarded-proto: https",
            "Forwarded: for=1.2.3.4",
            "X-Real-IP: 1.2.3.4",
        ] {
            assert!(head(&format!("{h}\r\n")).proxied, "{h}");
        }
    }
}
