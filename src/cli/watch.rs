//! `shardgate watch`: raises `gateway_down` from outside, since a dead gateway cannot
//! report itself. Polls `GET /healthz` every `--interval`; after `--failure-threshold`
//! consecutive failures it POSTs a firing notification to `--sink`, after
//! `--success-threshold` consecutive successes a resolved one (same bodies as the gateway's own
//! sinks: generic webhook, Slack, PagerDuty Events v2).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use clap::Args;
use serde_json::Value;

use crate::config::SinkConfig;
use crate::ops::monitor::{payload, Notice};

/// `shardgate watch`
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Gateway HTTP address to probe (host:port).
    #[arg(long, default_value = "127.0.0.1:18789")]
    pub addr: String,
    /// Sink URL (`http://…`).
    #[arg(long)]
    pub sink: String,
    /// Sink kind: webhook, slack, pagerduty.
    #[arg(long, default_value = "webhook")]
    pub sink_kind: crate::config::SinkKind,
    /// PagerDuty routing key.
    #[arg(long)]
    pub routing_key: Option<String>,
    /// Probe period (checkInterval), e.g. 30s.
    #[arg(long, default_value = "30s")]
    pub interval: String,
    /// Consecutive failures before firing (failureThreshold).
    #[arg(long, default_value_t = 3)]
    pub failure_threshold: u32,
    /// Consecutive successes before resolving (successThreshold).
    #[arg(long, default_value_t = 2)]
    pub success_threshold: u32,
    /// Stop after this many probes (0 = forever).
    #[arg(long, default_value_t = 0)]
    pub probes: u64,
}

fn http(addr: &str, req: &str, timeout: Duration) -> Result<u16, String> {
    let sa = addr
        .parse()
        .or_else(|_| {
            std::net::ToSocketAddrs::to_socket_addrs(addr)
                .map_err(|e| e.to_string())?
                .next()
                .ok_or("no address".into())
        })
        .map_err(|e: String| e)?;
    let mut s = TcpStream::connect_timeout(&sa, timeout).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(timeout)).ok();
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut buf = [0u8; 256];
    let n = s.read(&mut buf).map_err(|e| e.to_string())?;
    String::from_utf8_lossy(&buf[..n])
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| "bad HTTP answer".into())
}

fn probe(addr: &str) -> bool {
    let req = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    matches!(http(addr, &req, Duration::from_secs(5)), Ok(200))
}

fn post(url: &str, body: &Value) -> Result<(), String> {
    let rest = url.strip_prefix("http://").ok_or("only http:// sinks")?;
    let (hostport, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let b = body.to_string();
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {hostport}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{b}",
        b.len()
    );
    match http(hostport, &req, Duration::from_secs(5))? {
        c if (200..300).contains(&c) => Ok(()),
        c => Err(format!("sink answered HTTP {c}")),
    }
}

/// Runs the watch loop; the exit code.
pub(super) fn main(a: WatchArgs) -> i32 {
    let interval = match crate::config::Millis::parse(&a.interval) {
        Ok(m) => m.duration(),
        Err(e) => {
            eprintln!("shardgate: --interval: {e}");
            return 2;
        }
    };
    let sink = SinkConfig {
        kind: a.sink_kind,
        url: a.sink.clone(),
        routing_key: a.routing_key.clone(),
    };
    let (mut fails, mut oks, mut down, mut n) = (0u32, 0u32, false, 0u64);
    loop {
        let up = probe(&a.addr);
        if up {
            oks += 1;
            fails = 0;
        } else {
            fails += 1;
            oks = 0;
        }
        let change =
            (!down && fails >= a.failure_threshold) || (down && oks >= a.success_threshold);
        if change {
            down = !down;
            eprintln!(
                "gateway_down {} for {}",
                if down { "firing" } else { "resolved" },
                a.addr
            );
            let body = payload(
                &sink,
                &Notice {
                    alert: "gateway_down",
                    firing: down,
                    severity: "critical",
                    value: if down { 0.0 } else { 1.0 },
                    threshold: None,
                    host: &a.addr,
                },
            );
            let mut delay = 200;
            for attempt in 1..=5 {
                match post(&a.sink, &body) {
                    Ok(()) => break,
                    Err(e) => {
                        eprintln!("alert delivery attempt {attempt} failed: {e}");
                        std::thread::sleep(Duration::from_millis(delay));
                        delay *= 2;
                    }
                }
            }
        }
        n += 1;
        if a.probes > 0 && n >= a.probes {
            return 0;
        }
        std::thread::sleep(interval);
    }
}
