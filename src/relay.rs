//! The relay: how the gateways of a cluster hand each other requests and answers.
//!
//! A request for a session whose slot another gateway owns ([`crate::cluster`]) is published
//! to that gateway's channel (`{prefix}:relay:{member}`) as a [`Wire::Call`]; the owner runs
//! it as if one of its own connections had asked, and every answer and event for that
//! connection comes back on the caller's channel ([`Wire::Res`], [`Wire::Event`]), in the
//! order the owner's shard sent them (one Redis connection per shard keeps its publishes in
//! order, and Redis delivers a channel's messages in order).
//!
//! Pub/sub delivers at most once: a message is lost if the receiving gateway is down or
//! disconnected. That is the same contract as a connection dropped mid-request: the client
//! resends with the same idempotency key, and the session owner's dedup (kept in Redis) gives
//! it the run it already admitted, so nothing acknowledged is lost or run twice. A publish
//! nobody hears (the owner is gone) is answered `UNAVAILABLE` at once.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use shardgate_redis::{Client, Script};

use crate::addr::ConnRef;
use crate::cluster::{MemberIdx, Ownership, SlotOwner};
use crate::envelope::Out;
use crate::protocol::connect::ConnAuth;
use crate::session::run_entry::RunRecord;

/// A relay message, JSON on the wire.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "camelCase")]
pub enum Wire {
    /// A request for a session the receiver owns.
    Call(Box<CallMsg>),
    /// A complete frame (`res`) for a connection of the receiver.
    Res {
        /// The connection's shard.
        shard: u32,
        /// The connection's id.
        conn: u64,
        /// The frame.
        frame: String,
    },
    /// An event for every subscribed client of every member (`sessions.changed`), sent on
    /// the cluster-wide channel ([`all_channel`]).
    Broadcast {
        /// The sending member (which delivered it locally already).
        from: String,
        /// The event name.
        event: String,
        /// Its payload, JSON text.
        payload: String,
    },
    /// Who runs `run`? Sent on the cluster-wide channel by a gateway with an `agent.wait`er
    /// for a run it does not know; the member that has the run answers with
    /// [`Wire::RunEnded`] once it ended (at once if it has).
    WaitFor {
        /// The asking member.
        from: String,
        /// The run id.
        run: String,
    },
    /// How a run the receiver asked for ([`Wire::WaitFor`]) ended.
    RunEnded {
        /// The run id.
        run: String,
        /// `ok`, `error`, `timeout` or `aborted`.
        status: String,
        /// When it started, ms.
        started_at: Option<i64>,
        /// When it ended, ms.
        ended_at: Option<i64>,
        /// Its error text.
        error: Option<String>,
    },
    /// An event for a connection of the receiver (its `seq` is given there).
    Event {
        /// The connection's shard.
        shard: u32,
        /// The connection's id.
        conn: u64,
        /// The frame without `seq` and its closing brace.
        open: String,
        /// May be skipped under backpressure.
        droppable: bool,
    },
}

/// A request relayed to its session's owner, from a connection of gateway `from`.
#[derive(Debug, Serialize, Deserialize)]
pub struct CallMsg {
    /// The calling gateway's member id (where the answers go).
    pub from: String,
    /// The calling connection's shard there.
    pub shard: u32,
    /// The calling connection's id there.
    pub conn: u64,
    /// The request id.
    pub req: String,
    /// The method's wire name.
    pub method: String,
    /// The request's params.
    pub params: Value,
    /// The session key (normalised).
    pub key: String,
    /// The caller's authorization, as its gateway admitted it.
    pub auth: ConnAuth,
    /// When the calling gateway received it, ms since the epoch.
    pub at: i64,
}

impl Wire {
    /// The message carrying `out` to connection `to` (on the receiving gateway).
    pub fn out(to: ConnRef, out: Out) -> Wire {
        let (shard, conn) = (to.shard.0 as u32, to.id);
        match out {
            Out::Frame(frame) => Wire::Res { shard, conn, frame },
            Out::Event { open, droppable } => Wire::Event {
                shard,
                conn,
                open,
                droppable,
            },
        }
    }
}

/// The relay channel of cluster member `member`.
pub fn channel(prefix: &str, member: &str) -> String {
    format!("{prefix}:relay:{member}")
}

/// The channel every member listens on, for cluster-wide events.
pub fn all_channel(prefix: &str) -> String {
    format!("{prefix}:relay:*all")
}

/// The most runs of one shard other members may wait for at once; past it an `agent.wait`
/// on another member is not registered and answers `timeout` there (its client asks again).
pub const MAX_REMOTE_WAITS: usize = 4096;

/// One shard's end of the relay: publishes on the shard's Redis connection.
pub struct Relay {
    client: Client,
    ownership: Arc<Ownership>,
    prefix: String,
    /// Member index → its channel, filled on first use (members are interned for good).
    channels: RefCell<HashMap<u16, Rc<str>>>,
    sent: Cell<u64>,
    failed: Cell<u64>,
    unheard: Cell<u64>,
    /// Requests relayed from this shard and not finally answered yet: (connection id, request
    /// id) → the member asked. Swept when that member leaves ([`Relay::orphans`]).
    pending: RefCell<HashMap<(u64, String), MemberIdx>>,
    /// On a run id's owner shard: runs of this gateway other members wait for (run id → the
    /// members), told when the run ends. Bounded by [`MAX_REMOTE_WAITS`].
    remote_waits: RefCell<HashMap<String, Vec<MemberIdx>>>,
    /// Removes a node's directory entry only if this gateway wrote it (a node that moved to
    /// another gateway keeps the newer entry).
    forget_node: Script,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("me", &self.ownership.me())
            .field("sent", &self.sent.get())
            .finish_non_exhaustive()
    }
}

impl Relay {
    /// A relay publishing on `client` (the shard's Redis connection) under `prefix`.
    pub fn new(client: Client, ownership: Arc<Ownership>, prefix: &str) -> Rc<Relay> {
        Rc::new(Relay {
            client,
            ownership,
            prefix: prefix.to_string(),
            channels: RefCell::default(),
            sent: Cell::new(0),
            failed: Cell::new(0),
            unheard: Cell::new(0),
            pending: RefCell::default(),
            remote_waits: RefCell::default(),
            forget_node: Script::new(
                "if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then \
                 return redis.call('HDEL', KEYS[1], ARGV[1]) end return 0",
            ),
        })
    }

    /// The cluster's ownership view.
    pub fn ownership(&self) -> &Arc<Ownership> {
        &self.ownership
    }

    /// This gateway's own channel (what it subscribes to).
    pub fn my_channel(&self) -> String {
        channel(&self.prefix, self.ownership.me())
    }

    /// The cluster-wide channel (what every member also subscribes to).
    pub fn all_channel(&self) -> String {
        all_channel(&self.prefix)
    }

    /// Publishes `event` with `payload` (JSON text) to every other member's subscribed
    /// clients, without waiting (an event is a hint to refresh: lost with a member, as a
    /// local one is lost with a connection).
    pub fn broadcast(self: &Rc<Self>, event: &str, payload: &str) {
        let msg = Wire::Broadcast {
            from: self.ownership.me().to_string(),
            event: event.to_string(),
            payload: payload.to_string(),
        };
        self.publish_all(&msg);
    }

    /// Asks every other member for run `run` (see [`Wire::WaitFor`]), without waiting.
    pub fn ask_run(self: &Rc<Self>, run: &str) {
        let msg = Wire::WaitFor {
            from: self.ownership.me().to_string(),
            run: run.to_string(),
        };
        self.publish_all(&msg);
    }

    /// Publishes `msg` on the cluster-wide channel, without waiting.
    fn publish_all(self: &Rc<Self>, msg: &Wire) {
        let Ok(text) = serde_json::to_string(msg) else {
            return;
        };
        let this = self.clone();
        glommio::spawn_local(async move {
            let ch = this.all_channel();
            if let Err(e) = this
                .client
                .call(&[b"PUBLISH", ch.as_bytes(), text.as_bytes()])
                .await
            {
                this.failed.set(this.failed.get() + 1);
                tracing::debug!("relay: cluster message not sent: {e}");
            }
        })
        .detach();
    }

    /// Member `member` waits for run `run` of this gateway, which has not ended yet.
    pub fn wait_remote(&self, run: &str, member: MemberIdx) {
        let mut waits = self.remote_waits.borrow_mut();
        if let Some(members) = waits.get_mut(run) {
            if !members.contains(&member) {
                members.push(member);
            }
        } else if waits.len() < MAX_REMOTE_WAITS {
            waits.insert(run.to_string(), vec![member]);
        }
    }

    /// Run `run` of this gateway ended as `r`: tells the members waiting for it.
    pub fn run_ended(self: &Rc<Self>, run: &str, r: &RunRecord) {
        if self.remote_waits.borrow().is_empty() {
            return;
        }
        let Some(members) = self.remote_waits.borrow_mut().remove(run) else {
            return;
        };
        for m in members {
            self.tell_run(m, run, r);
        }
    }

    /// Tells `member` how run `run` ended, without waiting (lost with that member, whose
    /// waiter then answers `timeout`, as a lost connection's would).
    pub fn tell_run(self: &Rc<Self>, member: MemberIdx, run: &str, r: &RunRecord) {
        let msg = Wire::RunEnded {
            run: run.to_string(),
            status: r.status.to_string(),
            started_at: r.started_at,
            ended_at: r.ended_at,
            error: r.error.clone(),
        };
        let this = self.clone();
        glommio::spawn_local(async move {
            if let Err(e) = this.send(member, &msg).await {
                tracing::debug!(member = member.0, "relay: run outcome not sent: {e}");
            }
        })
        .detach();
    }

    fn channel_of(&self, member: MemberIdx) -> Option<Rc<str>> {
        if let Some(c) = self.channels.borrow().get(&member.0) {
            return Some(c.clone());
        }
        let name = self.ownership.member_name(member)?;
        let c: Rc<str> = channel(&self.prefix, &name).into();
        self.channels.borrow_mut().insert(member.0, c.clone());
        Some(c)
    }

    /// Publishes `msg` to `member` and resolves with how many gateways heard it (0: the
    /// member is not subscribed, so gone).
    pub async fn send(&self, member: MemberIdx, msg: &Wire) -> Result<i64, String> {
        let ch = self
            .channel_of(member)
            .ok_or_else(|| format!("unknown cluster member #{}", member.0))?;
        let text = serde_json::to_string(msg).map_err(|e| e.to_string())?;
        match self
            .client
            .call(&[b"PUBLISH", ch.as_bytes(), text.as_bytes()])
            .await
        {
            Ok(v) => {
                self.sent.set(self.sent.get() + 1);
                let heard = v.as_int().unwrap_or(0);
                if heard == 0 {
                    self.unheard.set(self.unheard.get() + 1);
                }
                Ok(heard)
            }
            Err(e) => {
                self.failed.set(self.failed.get() + 1);
                Err(e.to_string())
            }
        }
    }

    /// Sends `out` to connection `to` of another gateway, without waiting: an answer lost
    /// with its gateway is the lost connection's (its client resends), so failures are
    /// counted and logged, never retried.
    pub fn out(self: &Rc<Self>, to: ConnRef, out: Out) {
        let Some(member) = to.gw.checked_sub(1).map(MemberIdx) else {
            return;
        };
        let this = self.clone();
        let msg = Wire::out(to, out);
        glommio::spawn_local(async move {
            match this.send(member, &msg).await {
                Ok(0) => tracing::debug!(
                    member = member.0,
                    "relay: answer for a gateway that is gone"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(member = member.0, "relay: answer not sent: {e}"),
            }
        })
        .detach();
    }

    /// The gateway-index of a connection of member `name`, for a [`ConnRef`]'s `gw`
    /// (`None` for a member the cluster driver has not seen yet).
    pub fn gw_of(&self, name: &str) -> Option<u16> {
        self.ownership.index_of(name).map(|i| i.0 + 1)
    }

    /// The slot of a session key and who owns it.
    pub fn owner_of(&self, key: &str) -> (u32, SlotOwner) {
        let slot = crate::queue::redis::keys::slot_of(key, self.ownership.slots());
        (slot, self.ownership.owner(slot))
    }

    /// The cluster's node directory: node id → the member it is connected to.
    fn nodes_key(&self) -> String {
        format!("{}:nodes", self.prefix)
    }

    /// Records in the node directory that node `id` is connected here (`here`), or no
    /// longer, without waiting. A stale entry (this gateway died) only makes an invoke from
    /// another gateway fail as "node not connected", as it would anyway.
    pub fn node_here(self: &Rc<Self>, id: &str, here: bool) {
        let (this, id) = (self.clone(), id.to_string());
        glommio::spawn_local(async move {
            let (key, me) = (this.nodes_key(), this.ownership.me().to_string());
            let r = if here {
                this.client
                    .call(&[b"HSET", key.as_bytes(), id.as_bytes(), me.as_bytes()])
                    .await
                    .map(drop)
            } else {
                this.client
                    .eval(
                        &this.forget_node,
                        &[key.as_bytes()],
                        &[id.as_bytes(), me.as_bytes()],
                    )
                    .await
                    .map(drop)
            };
            if let Err(e) = r {
                tracing::warn!(node = %id, "cluster: node directory not updated: {e}");
            }
        })
        .detach();
    }

    /// The member node `id` is connected to, if another one (`None`: here, or unknown).
    pub async fn node_home(&self, id: &str) -> Result<Option<MemberIdx>, String> {
        let v = self
            .client
            .call(&[b"HGET", self.nodes_key().as_bytes(), id.as_bytes()])
            .await
            .map_err(|e| e.to_string())?;
        Ok(v.as_str()
            .filter(|m| *m != self.ownership.me())
            .and_then(|m| self.ownership.index_of(m)))
    }

    /// A request of connection `conn` was relayed to `member`: it is answered by that
    /// member or, should the member leave first, by [`Relay::orphans`].
    pub fn expect(&self, conn: u64, req: &str, member: MemberIdx) {
        self.pending
            .borrow_mut()
            .insert((conn, req.to_string()), member);
    }

    /// A relayed `res` frame for connection `conn` arrived: its request is settled unless
    /// this is only the acceptance of a two-phase call (`agent`: its final answer follows).
    pub fn answered(&self, conn: u64, frame: &str) {
        #[derive(Deserialize)]
        struct Head {
            id: String,
            #[serde(default)]
            payload: Option<Status>,
        }
        #[derive(Deserialize)]
        struct Status {
            #[serde(default)]
            status: Option<String>,
        }
        let Ok(h) = serde_json::from_str::<Head>(frame) else {
            return;
        };
        let accepted = h
            .payload
            .and_then(|p| p.status)
            .is_some_and(|s| s == "accepted");
        if !accepted {
            self.pending.borrow_mut().remove(&(conn, h.id));
        }
    }

    /// Takes the relayed requests whose member is no longer live (it died or left before
    /// answering): the caller answers them `UNAVAILABLE`, so no client waits for an answer
    /// that cannot come.
    pub fn orphans(&self) -> Vec<(u64, String)> {
        let live = self.ownership.live_members();
        let gone = |m: &MemberIdx| {
            self.ownership
                .member_name(*m)
                .is_none_or(|n| !live.contains(&n))
        };
        let mut pending = self.pending.borrow_mut();
        let out: Vec<(u64, String)> = pending
            .iter()
            .filter(|(_, m)| gone(m))
            .map(|(k, _)| k.clone())
            .collect();
        for k in &out {
            pending.remove(k);
        }
        out
    }

    /// Counters for `/metrics` and `gateway status`.
    pub fn stats_json(&self) -> Value {
        json!({"sent": self.sent.get(), "failed": self.failed.get(), "unheard": self.unheard.get(),
               "pending": self.pending.borrow().len()})
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shards::ShardId;

    #[test]
    fn answers_keep_their_kind_and_address() {
        let to = ConnRef {
            shard: ShardId(1),
            id: 9,
            gw: 2,
        };
        let res = serde_json::to_value(Wire::out(to, Out::Frame("{}".into()))).unwrap();
        assert_eq!(
            res,
            json!({"t": "res", "shard": 1, "conn": 9, "frame": "{}"})
        );
        let ev = Wire::out(
            to,
            Out::Event {
                open: "{\"type\":\"event\"".into(),
                droppable: true,
            },
        );
        let back: Wire = serde_json::from_str(&serde_json::to_string(&ev).unwrap()).unwrap();
        assert!(matches!(
            back,
            Wire::Event {
                shard: 1,
                conn: 9,
                droppable: true,
                ..
            }
        ));
        assert_eq!(channel("sg", "h:1"), "sg:relay:h:1");
    }

    #[test]
    fn a_call_carries_its_caller() {
        let text = r#"{"t":"call","from":"a:1","shard":0,"conn":5,"req":"r1","method":"chat.send",
            "params":{"message":"hi"},"key":"agent:main:x","at":7,
            "auth":{"role":"operator","scopes":["operator.write"],"client":{"id":"cli",
            "version":"1","platform":"linux","mode":"cli"},"device_id":null,"seed":false}}"#;
        let Wire::Call(c) = serde_json::from_str(text).unwrap() else {
            panic!("not a call")
        };
        let CallMsg {
            from, auth, key, ..
        } = *c;
        assert_eq!((from.as_str(), key.as_str()), ("a:1", "agent:main:x"));
        assert_eq!(auth.scopes, vec!["operator.write"]);
        assert!(serde_json::from_str::<Wire>(r#"{"t":"nope"}"#).is_err());
    }
}
