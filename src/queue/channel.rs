//! Outbound channels for `send`: where a message goes after the queue.
//!
//! `log` (built in, always up) records the message in the session's history. A `webhook`
//! channel POSTs `{messageId, channel, to, message, sessionKey}` as JSON to its URL over plain
//! HTTP/1.1; a 2xx answer is delivery, anything else (refused, timeout, non-2xx) is a failed
//! attempt that the queue retries and finally dead-letters. A chat platform (`telegram`, `discord`)
//! sends through its API ([`crate::channels`]).

use std::rc::Rc;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use serde_json::json;

use crate::clock::now_ms;
use crate::config::{ChannelConfig, ChannelKind};
use crate::delivery::Job;
use crate::session::{HistoryEntry, Session};
use crate::shard::GatewayShard;

/// The configuration of channel `name`, with the built-in `log` channel.
pub fn lookup(shard: &GatewayShard, name: &str) -> Option<ChannelConfig> {
    match shard.config().channels.get(name) {
        Some(c) => Some(c.clone()),
        None if name == "log" => Some(ChannelConfig::default()),
        None => None,
    }
}

/// Delivers `job` through `channel`. Ok carries a short delivery note.
pub async fn deliver(
    shard: &Rc<GatewayShard>,
    session: &Rc<Session>,
    channel: &str,
    to: &str,
    job: &Job,
) -> Result<String, String> {
    let cfg = lookup(shard, channel).ok_or_else(|| format!("unknown channel {channel}"))?;
    match cfg.kind {
        ChannelKind::Log => {
            let entry = HistoryEntry::outbound(&job.message, now_ms(), &job.run_id, channel, to);
            session.push_history(entry, shard.config().history_limit());
            Ok(job.message.clone())
        }
        ChannelKind::Webhook => {
            let url = cfg.url.as_deref().ok_or("webhook channel without url")?;
            let body = json!({"messageId": job.run_id, "channel": channel, "to": to,
                              "message": job.message, "sessionKey": job.session_key, "attempt": job.attempts});
            let t = Duration::from_millis(cfg.timeout_ms.max(1));
            match glommio::timer::timeout(t, async { Ok(post_json(url, &body.to_string()).await) })
                .await
            {
                Ok(Ok(status)) if (200..300).contains(&status) => Ok(job.message.clone()),
                Ok(Ok(status)) => Err(format!("channel {channel} answered HTTP {status}")),
                Ok(Err(e)) => Err(format!("channel {channel} unreachable: {e}")),
                Err(_) => Err(format!(
                    "channel {channel} timed out after {} ms",
                    cfg.timeout_ms
                )),
            }
        }
        // A reply to a platform chat (its own history entry is the run's answer).
        ChannelKind::Telegram => {
            crate::channels::telegram::send::send(shard, channel, &cfg, to, &job.message).await
        }
        ChannelKind::Discord => {
            crate::channels::discord::send::send(shard, channel, &cfg, to, &job.message).await
        }
    }
}

/// POSTs `body` to an `http://host:port/path` URL; returns the status code.
pub(crate) async fn post_json(url: &str, body: &str) -> Result<u16, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or("only http:// webhook URLs are supported")?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let mut s = glommio::net::TcpStream::connect(hostport)
        .await
        .map_err(|e| e.to_string())?;
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {hostport}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    s.flush().await.map_err(|e| e.to_string())?;
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 512];
    loop {
        let n = s.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.windows(2).any(|w| w == b"\r\n") || buf.len() > 4096 {
            break;
        }
    }
    let line = String::from_utf8_lossy(&buf);
    line.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad HTTP answer: {:?}", line.lines().next().unwrap_or("")))
}
