//! A small HTTP/1.1 client for the chat platforms' REST APIs, on glommio sockets (no tokio):
//! one request per connection (`Connection: close`), `http://` or `https://` (rustls with the
//! system's CA bundle, or `caFile`), answers read to their end by `Content-Length`, chunked
//! encoding, or the close, at most [`MAX_BODY`] bytes.
//!
//! One connection per call keeps it simple and is enough for a bot: a long poll lasts tens of
//! seconds, and replies are a few a second at most per chat. Keep-alive is a later step.
//!
//! [`Endpoint::connect`] gives the bare (TLS when `https://`/`wss://`) stream to a caller that
//! speaks its own protocol on it: the Discord Gateway's WebSocket client.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The largest answer body read (a `getUpdates` batch of 100 updates is well below).
pub const MAX_BODY: usize = 8 << 20;

/// Where an API lives: parsed once from its base URL.
#[derive(Clone)]
pub struct Endpoint {
    /// `host:port` to connect to.
    pub authority: String,
    /// The host, for `Host:` and TLS server name.
    pub host: String,
    /// Path prefix (no trailing slash; empty for the root).
    pub prefix: String,
    /// TLS client config for `https://`.
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("authority", &self.authority)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers, names lower-cased (a platform's rate-limit headers are read from here).
    pub headers: Vec<(String, String)>,
    /// Body (decoded from chunks).
    pub body: Vec<u8>,
}

impl Response {
    /// The value of header `name` (lower-case), trimmed.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A connection to an endpoint: plain TCP, or TLS over it.
pub enum Stream {
    /// `http://`, `ws://`
    Plain(glommio::net::TcpStream),
    /// `https://`, `wss://`
    Tls(Box<futures_rustls::client::TlsStream<glommio::net::TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_close(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_close(cx),
        }
    }
}

/// The system CA bundle used for `https://` when no `caFile` is given.
pub const SYSTEM_CA_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";

impl Endpoint {
    /// Parses `http://host[:port][/prefix]` or `https://…` (with `ca_file`'s roots, the
    /// system bundle by default); `ws://` and `wss://` as `http://` and `https://`. The
    /// prefix keeps a query (`wss://gateway.discord.gg/?v=10`).
    pub fn parse(base: &str, ca_file: Option<&std::path::Path>) -> Result<Endpoint, String> {
        let (tls, rest, default_port) = if let Some(r) = base.strip_prefix("http://") {
            (false, r, 80)
        } else if let Some(r) = base.strip_prefix("https://") {
            (true, r, 443)
        } else if let Some(r) = base.strip_prefix("ws://") {
            (false, r, 80)
        } else if let Some(r) = base.strip_prefix("wss://") {
            (true, r, 443)
        } else {
            return Err(format!("not an http(s):// or ws(s):// URL: {base}"));
        };
        let (hostport, prefix) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if hostport.is_empty() {
            return Err(format!("no host in {base}"));
        }
        let (host, port, v6) = match hostport.strip_prefix('[') {
            Some(v6) => {
                let (h, rest) = v6.split_once(']').ok_or(format!("bad host in {base}"))?;
                (h, rest.strip_prefix(':'), true)
            }
            None => match hostport.rsplit_once(':') {
                Some((h, p)) => (h, Some(p), false),
                None => (hostport, None, false),
            },
        };
        let port: u16 = match port {
            Some(p) => p.parse().map_err(|_| format!("bad port in {base}"))?,
            None => default_port,
        };
        let authority = if v6 {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let host = host.to_string();
        let tls = if tls {
            Some(Arc::new(client_config(ca_file)?))
        } else {
            None
        };
        Ok(Endpoint {
            authority,
            host,
            prefix: prefix.to_string(),
            tls,
        })
    }

    /// Makes one request: `path` is appended to the prefix; `body` is sent as JSON. Gives up
    /// after `timeout`.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Response, String> {
        let fut = async {
            let s = self.connect().await?;
            Ok(self.exchange(s, method, path, body).await)
        };
        match glommio::timer::timeout(timeout, async { Ok(fut.await) }).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(e),
            Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
        }
    }

    /// Opens a connection (TCP, then TLS for `https://`/`wss://`), without a timeout of its
    /// own: the caller bounds it.
    pub async fn connect(&self) -> Result<Stream, String> {
        let tcp = glommio::net::TcpStream::connect(self.authority.as_str())
            .await
            .map_err(|e| format!("connect {}: {e}", self.authority))?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => Ok(Stream::Plain(tcp)),
            Some(cfg) => {
                let name = rustls_pki_types::ServerName::try_from(self.host.clone())
                    .map_err(|e| format!("bad TLS server name {}: {e}", self.host))?;
                let s = futures_rustls::TlsConnector::from(cfg.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS handshake with {}: {e}", self.host))?;
                Ok(Stream::Tls(Box::new(s)))
            }
        }
    }

    /// Makes one request with extra header lines (`Name: value\r\n` each), as
    /// [`Endpoint::request`] does otherwise. The headers are not part of any error text (one
    /// may carry a credential).
    pub async fn request_with(
        &self,
        method: &str,
        path: &str,
        headers: &str,
        body: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Response, String> {
        let fut = async {
            let s = self.connect().await?;
            Ok(self.exchange_with(s, method, path, headers, body).await)
        };
        match glommio::timer::timeout(timeout, async { Ok(fut.await) }).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(e),
            Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
        }
    }

    async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        s: S,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<Response, String> {
        self.exchange_with(s, method, path, "", body).await
    }

    async fn exchange_with<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        mut s: S,
        method: &str,
        path: &str,
        headers: &str,
        body: Option<&[u8]>,
    ) -> Result<Response, String> {
        let body = body.unwrap_or_default();
        let mut req = format!(
            "{method} {}{path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: shardgate/{}\r\nAccept: application/json\r\nConnection: close\r\n",
            self.prefix,
            self.host,
            env!("CARGO_PKG_VERSION")
        );
        req.push_str(headers);
        if method != "GET" {
            req.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        req.push_str("\r\n");
        let mut out = req.into_bytes();
        out.extend_from_slice(body);
        s.write_all(&out).await.map_err(|e| format!("write: {e}"))?;
        s.flush().await.map_err(|e| format!("write: {e}"))?;
        read_response(&mut s).await
    }
}

/// A rustls client config trusting the roots in `ca_file` (the system bundle by default).
fn client_config(ca_file: Option<&std::path::Path>) -> Result<rustls::ClientConfig, String> {
    use rustls_pki_types::pem::PemObject;
    let path = ca_file.unwrap_or(std::path::Path::new(SYSTEM_CA_FILE));
    let mut roots = rustls::RootCertStore::empty();
    let certs = rustls_pki_types::CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read CA bundle {}: {e}", path.display()))?;
    for c in certs.flatten() {
        let _ = roots.add(c);
    }
    if roots.is_empty() {
        return Err(format!("no CA certificates in {}", path.display()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Reads one response: the head, then the body by its framing.
async fn read_response<S: AsyncRead + Unpin>(s: &mut S) -> Result<Response, String> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 8192];
    let (status, headers, head_len, framing) = loop {
        let n = s.read(&mut chunk).await.map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("connection closed before the answer".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut r = httparse::Response::new(&mut headers);
        match r.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                let status = r.code.unwrap_or(0);
                let header = |name: &str| {
                    r.headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case(name))
                        .map(|h| String::from_utf8_lossy(h.value).trim().to_ascii_lowercase())
                };
                let framing = if header("transfer-encoding").is_some_and(|v| v.contains("chunked"))
                {
                    Framing::Chunked
                } else if let Some(n) = header("content-length") {
                    Framing::Length(n.parse().map_err(|_| "bad Content-Length")?)
                } else {
                    Framing::Close
                };
                let headers = r
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_ascii_lowercase(),
                            String::from_utf8_lossy(h.value).trim().to_string(),
                        )
                    })
                    .collect();
                break (status, headers, len, framing);
            }
            Ok(httparse::Status::Partial) if buf.len() < 64 * 1024 => continue,
            Ok(httparse::Status::Partial) => return Err("answer head too long".into()),
            Err(e) => return Err(format!("bad answer: {e}")),
        }
    };
    let mut body = buf.split_off(head_len);
    match framing {
        Framing::Length(n) => {
            if n > MAX_BODY {
                return Err(format!("answer body of {n} bytes is too large"));
            }
            while body.len() < n {
                let k = s.read(&mut chunk).await.map_err(|e| format!("read: {e}"))?;
                if k == 0 {
                    return Err("connection closed inside the answer".into());
                }
                body.extend_from_slice(&chunk[..k]);
            }
            body.truncate(n);
        }
        Framing::Close => loop {
            let k = s.read(&mut chunk).await.map_err(|e| format!("read: {e}"))?;
            if k == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..k]);
            if body.len() > MAX_BODY {
                return Err("answer body too large".into());
            }
        },
        Framing::Chunked => loop {
            match dechunk(&body) {
                Ok(Some(decoded)) => {
                    body = decoded;
                    break;
                }
                Ok(None) if body.len() <= MAX_BODY + 64 * 1024 => {
                    let k = s.read(&mut chunk).await.map_err(|e| format!("read: {e}"))?;
                    if k == 0 {
                        return Err("connection closed inside the answer".into());
                    }
                    body.extend_from_slice(&chunk[..k]);
                }
                Ok(None) => return Err("answer body too large".into()),
                Err(e) => return Err(e),
            }
        },
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// How an answer's body ends.
enum Framing {
    Length(usize),
    Chunked,
    Close,
}

/// Decodes a complete chunked body; `None` while it is incomplete.
fn dechunk(raw: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let mut out = Vec::with_capacity(raw.len());
    let mut at = 0;
    loop {
        let Some(eol) = raw[at..].windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let line = std::str::from_utf8(&raw[at..at + eol]).map_err(|_| "bad chunk size")?;
        let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| format!("bad chunk size {line:?}"))?;
        at += eol + 2;
        if size == 0 {
            return Ok(Some(out));
        }
        if raw.len() < at + size + 2 {
            return Ok(None);
        }
        out.extend_from_slice(&raw[at..at + size]);
        at += size + 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse() {
        let e = Endpoint::parse("http://127.0.0.1:8081/tg/", None).unwrap();
        assert_eq!(
            (e.authority.as_str(), e.host.as_str(), e.prefix.as_str()),
            ("127.0.0.1:8081", "127.0.0.1", "/tg")
        );
        let e = Endpoint::parse("http://localhost", None).unwrap();
        assert_eq!(
            (e.authority.as_str(), e.prefix.as_str()),
            ("localhost:80", "")
        );
        assert!(Endpoint::parse("ftp://x", None).is_err());
        let e = Endpoint::parse("ws://127.0.0.1:9/?v=10&encoding=json", None).unwrap();
        assert_eq!(
            (e.authority.as_str(), e.prefix.as_str()),
            ("127.0.0.1:9", "/?v=10&encoding=json")
        );
        let e = Endpoint::parse("ws://h?v=10", None).unwrap();
        assert_eq!((e.authority.as_str(), e.prefix.as_str()), ("h:80", "?v=10"));
        assert!(Endpoint::parse("https://x", Some(std::path::Path::new("/nonexistent"))).is_err());
    }

    #[test]
    fn chunks_decode() {
        assert_eq!(
            dechunk(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
                .unwrap()
                .unwrap(),
            b"abcde"
        );
        assert_eq!(dechunk(b"3\r\nab").unwrap(), None);
        assert!(dechunk(b"zz\r\n").is_err());
    }
}
