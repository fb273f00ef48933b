//! The HTTP side of the port: reading a request head, the health endpoints, the upgrade.

use futures_lite::{AsyncReadExt, AsyncWriteExt};

/// Largest request head accepted.
pub const MAX_HEAD: usize = 16 * 1024;

/// A parsed request head.
#[derive(Debug)]
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
    /// Every `Sec-WebSocket-Extensions` value, in order (offers of permessage-deflate).
    pub extensions: Vec<String>,
    /// Bytes read past the head.
    pub rest: Vec<u8>,
}

/// Reads one request head. `Ok(None)` when the peer closed first.
pub async fn read_head<S: futures_lite::AsyncRead + Unpin>(
    s: &mut S,
) -> std::io::Result<Option<Head>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 48];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                let mut upgrade = false;
                let mut key = None;
                let (mut origin, mut host) = (None, None);
                let mut extensions = Vec::new();
                for h in req.headers.iter() {
                    let v = String::from_utf8_lossy(h.value);
                    if h.name.eq_ignore_ascii_case("upgrade") && v.eq_ignore_ascii_case("websocket")
                    {
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
                return Ok(Some(Head {
                    method: req.method.unwrap_or("").to_string(),
                    path,
                    has_query: target.contains('?'),
                    ws_key: if upgrade { key } else { None },
                    origin,
                    host,
                    extensions,
                    rest: buf[len..].to_vec(),
                }));
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => continue,
            Ok(httparse::Status::Partial) => {
                return Err(std::io::Error::other("request head too large"));
            }
            Err(e) => return Err(std::io::Error::other(format!("bad request: {e}"))),
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
