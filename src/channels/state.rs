//! What a shard knows of the chat channels: per-channel counters (messages in and out,
//! errors; every shard counts what it did, merged on read) and, on the shard that drives a
//! channel's connection (shard 0), the connection's state.
//!
//! Invariant: only the driver writes a channel's [`LinkState`]; everyone else reads it
//! through `channels.status`, `health` and `/metrics`, gathered over the mesh.

use std::cell::RefCell;
use std::collections::BTreeMap;

use serde_json::{json, Value};

pub use super::link::Link;
use crate::config::ChannelConfig;

/// One channel's counters on one shard.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    /// Platform messages admitted to the queue.
    pub messages_in: u64,
    /// Replies the platform accepted.
    pub messages_out: u64,
    /// Failed polls and failed sends.
    pub errors: u64,
    /// Deliveries of an update already taken (dropped).
    pub duplicates: u64,
    /// Messages from senders outside `allowFrom` (dropped).
    pub filtered: u64,
    /// Sends that hit a rate limit (429) and waited it out.
    pub rate_limited: u64,
    /// Connections re-opened after a drop (Discord Gateway).
    pub reconnects: u64,
}

/// A channel's connection state, kept by its driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkState {
    /// The platform (`telegram`, `discord`).
    pub platform: &'static str,
    /// `polling` or `webhook` (OpenClaw's names for Telegram); none for Discord.
    pub mode: Option<&'static str>,
    /// Where the token comes from (`config`, `env`, `file`).
    pub token_source: &'static str,
    /// The API root (no secret in it).
    pub base_url: String,
    /// The bound agent.
    pub agent: String,
    /// The sender allowlist.
    pub allow_from: Vec<String>,
    /// The state.
    pub link: Link,
    /// The last failure, kept after recovery until the next one.
    pub last_error: Option<String>,
    /// Failed attempts since the last success.
    pub reconnect_attempts: u32,
    /// When the driver started, ms.
    pub started_at: i64,
    /// When the platform last answered, ms.
    pub last_connected_at: Option<i64>,
    /// When the last message came in, ms.
    pub last_inbound_at: Option<i64>,
    /// The next update the platform is asked for (what was acknowledged: everything below).
    pub offset: Option<i64>,
    /// Discord: the Gateway URL.
    pub gateway_url: Option<String>,
    /// Discord: the last sequence number received.
    pub sequence: Option<u64>,
    /// Discord: the last heartbeat's round trip, ms.
    pub latency_ms: Option<u64>,
    /// Discord: sessions resumed since the start.
    pub resumes: u64,
}

impl LinkState {
    /// The state a driver starts in: connecting, nothing received yet.
    pub fn starting(
        platform: &'static str,
        cfg: &ChannelConfig,
        agent: String,
        now: i64,
    ) -> LinkState {
        LinkState {
            platform,
            mode: None,
            token_source: cfg.token_source(),
            base_url: cfg.api_base().to_string(),
            agent,
            allow_from: cfg.allow_from.clone(),
            link: Link::Connecting,
            last_error: None,
            reconnect_attempts: 0,
            started_at: now,
            last_connected_at: None,
            last_inbound_at: None,
            offset: None,
            gateway_url: None,
            sequence: None,
            latency_ms: None,
            resumes: 0,
        }
    }
}

/// A shard's channel state.
#[derive(Debug, Default)]
pub struct ChannelsState {
    counters: RefCell<BTreeMap<String, Counters>>,
    links: RefCell<BTreeMap<String, LinkState>>,
    last_outbound: RefCell<BTreeMap<String, i64>>,
}

impl ChannelsState {
    /// Adds to channel `name`'s counters on this shard.
    pub fn count(&self, name: &str, f: impl FnOnce(&mut Counters)) {
        let mut c = self.counters.borrow_mut();
        match c.get_mut(name) {
            Some(x) => f(x),
            None => f(c.entry(name.to_string()).or_default()),
        }
    }

    /// A reply went out through `name` at `at`.
    pub fn sent(&self, name: &str, at: i64) {
        self.count(name, |c| c.messages_out += 1);
        self.last_outbound.borrow_mut().insert(name.to_string(), at);
    }

    /// Sets (or replaces) channel `name`'s connection state (its driver only).
    pub fn set_link(&self, name: &str, s: LinkState) {
        self.links.borrow_mut().insert(name.to_string(), s);
    }

    /// Changes channel `name`'s connection state in place; false when it has none.
    pub fn update_link(&self, name: &str, f: impl FnOnce(&mut LinkState)) -> bool {
        match self.links.borrow_mut().get_mut(name) {
            Some(s) => {
                f(s);
                true
            }
            None => false,
        }
    }

    /// A copy of channel `name`'s connection state.
    pub fn link(&self, name: &str) -> Option<LinkState> {
        self.links.borrow().get(name).cloned()
    }

    /// This shard's part, as JSON (sent over the mesh): `{counters: {name: {...}},
    /// links: {name: {...}}, lastOutboundAt: {name: ms}}`.
    pub fn json(&self, now: i64) -> Value {
        let counters: serde_json::Map<String, Value> = self
            .counters
            .borrow()
            .iter()
            .map(|(k, c)| {
                (
                    k.clone(),
                    json!({"in": c.messages_in, "out": c.messages_out, "errors": c.errors,
                           "duplicates": c.duplicates, "filtered": c.filtered,
                           "rateLimited": c.rate_limited, "reconnects": c.reconnects}),
                )
            })
            .collect();
        let links: serde_json::Map<String, Value> = self
            .links
            .borrow()
            .iter()
            .map(|(k, s)| (k.clone(), link_json(s, now)))
            .collect();
        json!({"counters": counters, "links": links, "lastOutboundAt": *self.last_outbound.borrow()})
    }
}

impl ChannelsState {
    /// The connection states in brief, for `health` (hello-ok): only what changes with a
    /// transition (no clock), so an unchanged state is not published again.
    pub fn health_json(&self) -> Value {
        let links: serde_json::Map<String, Value> = self
            .links
            .borrow()
            .iter()
            .map(|(k, s)| {
                let state = match &s.link {
                    Link::Connecting => "connecting",
                    Link::Connected => "connected",
                    Link::Reconnecting { .. } => "reconnecting",
                    Link::Stopped { .. } => "stopped",
                };
                (
                    k.clone(),
                    json!({"platform": s.platform, "state": state, "mode": s.mode, "lastError": s.last_error}),
                )
            })
            .collect();
        Value::Object(links)
    }
}

/// A connection state as JSON: OpenClaw's account snapshot fields (`running`, `connected`,
/// `lastError`, `mode`, …) and shardgate's own (`state`, `nextAttemptInMs`, `stopReason`).
fn link_json(s: &LinkState, now: i64) -> Value {
    let (state, running, connected) = match &s.link {
        Link::Connecting => ("connecting", true, false),
        Link::Connected => ("connected", true, true),
        Link::Reconnecting { .. } => ("reconnecting", true, false),
        Link::Stopped { .. } => ("stopped", false, false),
    };
    let mut v = json!({
        "platform": s.platform, "state": state, "running": running, "connected": connected,
        "mode": s.mode, "tokenSource": s.token_source, "baseUrl": s.base_url, "agentId": s.agent,
        "allowFrom": s.allow_from, "lastError": s.last_error,
        "reconnectAttempts": s.reconnect_attempts, "lastStartAt": s.started_at,
        "lastConnectedAt": s.last_connected_at, "lastInboundAt": s.last_inbound_at,
        "offset": s.offset,
    });
    if s.platform == "discord" {
        v["gatewayUrl"] = json!(s.gateway_url);
        v["sequence"] = json!(s.sequence);
        v["heartbeatLatencyMs"] = json!(s.latency_ms);
        v["resumes"] = json!(s.resumes);
    }
    match &s.link {
        Link::Reconnecting { next_at } => {
            v["nextAttemptAt"] = json!(next_at);
            v["nextAttemptInMs"] = json!((next_at - now).max(0));
        }
        Link::Stopped { reason } => {
            v["stopReason"] = json!(reason);
            v["stateReason"] = json!(reason);
        }
        Link::Connecting | Link::Connected => {}
    }
    v
}
