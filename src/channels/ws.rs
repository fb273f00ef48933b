//! A WebSocket client connection on glommio sockets (no tokio): `ws://` or `wss://` (TLS as
//! [`super::http`] does it), the HTTP upgrade with a `Sec-WebSocket-Accept` check, then
//! frames in the client role ([`crate::transport::ws_client`]: masked out, unmasked in).
//! What a platform's realtime API (the Discord Gateway) runs on.
//!
//! Cancel safety: [`WsConn::read`] may be dropped while it waits (the driver races it with a
//! timer); bytes already read stay in the connection's reader, and none is lost in flight.

use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};

use super::http::{Endpoint, Stream};
use crate::transport::ws_client::{self, Frame, Reader};

/// The largest message taken from a server (a READY of a bot in many guilds is large).
const MAX_MESSAGE: usize = 16 << 20;

/// An open client connection.
pub struct WsConn {
    stream: Stream,
    reader: Reader,
    chunk: Vec<u8>,
    out: Vec<u8>,
}

impl std::fmt::Debug for WsConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsConn").finish_non_exhaustive()
    }
}

/// Opens a WebSocket to `url` (the upgrade bounded by `timeout`).
pub async fn open(
    url: &str,
    ca_file: Option<&std::path::Path>,
    timeout: Duration,
) -> Result<WsConn, String> {
    if !(url.starts_with("ws://") || url.starts_with("wss://")) {
        return Err(format!("not a ws:// or wss:// URL: {url}"));
    }
    let ep = Endpoint::parse(url, ca_file)?;
    let fut = async {
        let mut stream = ep.connect().await?;
        let key = ws_client::new_key(rand::random());
        let target = match ep.prefix.as_str() {
            "" => "/".to_string(),
            p if p.starts_with('?') => format!("/{p}"),
            p => p.to_string(),
        };
        let ua = concat!("shardgate/", env!("CARGO_PKG_VERSION"));
        // `Host` without a default port, as browsers send it.
        let host = ep
            .authority
            .strip_suffix(":443")
            .or_else(|| ep.authority.strip_suffix(":80"))
            .unwrap_or(&ep.authority);
        let req = ws_client::upgrade_request(host, &target, &key, ua);
        stream
            .write_all(req.as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        stream.flush().await.map_err(|e| format!("write: {e}"))?;
        let mut head = Vec::new();
        let mut chunk = vec![0u8; 16 * 1024];
        loop {
            let n = stream
                .read(&mut chunk)
                .await
                .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("closed during the upgrade".to_string());
            }
            head.extend_from_slice(&chunk[..n]);
            if let Some(len) = ws_client::check_upgrade(&head, &key)? {
                let mut reader = Reader::new(MAX_MESSAGE);
                reader.push(&head[len..]);
                return Ok(WsConn {
                    stream,
                    reader,
                    chunk,
                    out: Vec::new(),
                });
            }
        }
    };
    match glommio::timer::timeout(timeout, async { Ok(fut.await) }).await {
        Ok(r) => r,
        Err(_) => Err(format!("no upgrade within {} ms", timeout.as_millis())),
    }
}

impl WsConn {
    /// The next frame; an error when the stream ends or breaks the protocol.
    pub async fn read(&mut self) -> Result<Frame, String> {
        loop {
            if let Some(f) = self.reader.next_frame().map_err(|e| e.to_string())? {
                return Ok(f);
            }
            let n = self
                .stream
                .read(&mut self.chunk)
                .await
                .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("the server closed the connection".into());
            }
            self.reader.push(&self.chunk[..n]);
        }
    }

    /// Sends a text message.
    pub async fn send_text(&mut self, text: &str) -> Result<(), String> {
        self.out.clear();
        ws_client::encode_text(&mut self.out, rand::random(), text);
        self.flush_out().await
    }

    /// Answers a ping.
    pub async fn pong(&mut self, payload: &[u8]) -> Result<(), String> {
        self.out.clear();
        ws_client::encode_pong(&mut self.out, rand::random(), payload);
        self.flush_out().await
    }

    /// Sends a close frame with `code` and ends the connection (without waiting for the
    /// server's close: the caller is done with it either way).
    pub async fn close(mut self, code: u16) {
        self.out.clear();
        ws_client::encode_close(&mut self.out, rand::random(), code);
        let _ = glommio::timer::timeout(Duration::from_secs(1), async {
            let _ = self.flush_out().await;
            let _ = self.stream.close().await;
            Ok(())
        })
        .await;
    }

    async fn flush_out(&mut self) -> Result<(), String> {
        self.stream
            .write_all(&self.out)
            .await
            .map_err(|e| format!("write: {e}"))?;
        self.stream.flush().await.map_err(|e| format!("write: {e}"))
    }
}
