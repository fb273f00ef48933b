//! The inbound path after authorization: decide where a request runs and run it.
//!
//! Where is the method table's [`Placement`]: connection-local methods (health, status,
//! presence, nodes, pairing, operations…) run on the connection's shard; session methods run on
//! `owner(sessionKey)`, locally as a plain call or as a [`Call`] over the mesh, and their events
//! and answers come back through [`GatewayShard::deliver`]; `agent.wait` runs on
//! `owner(runId)`, where the run directory entry of that run lives. What is each area's
//! handler: `chat` (messages and transcripts), `session_ops` (a session's lifecycle), `nodes`,
//! the pairing modules, `info` and the `ops` modules, each matching its area's enum
//! exhaustively.

use std::rc::Rc;

use serde_json::Value;

use crate::addr::{Caller, ReplyTo};
use crate::clock::now_ms;
use crate::cluster::SlotOwner;
use crate::protocol::error::GatewayError;
use crate::protocol::method::{KeyFrom, Method, Placement};
use crate::protocol::params::Params;
use crate::protocol::SessionKey;
use crate::queue;
use crate::shard::{Call, GatewayShard, MeshMsg};

mod chat;
mod info;
mod nodes;
pub mod remote;
mod session_ops;
pub mod watchers;

pub use info::{hello_health, publish_health};

/// The session key a session method acts on, read from `p` as its table entry says.
fn session_key_for(
    shard: &GatewayShard,
    from: KeyFrom,
    p: &Params,
) -> Result<SessionKey, GatewayError> {
    let default_agent = shard.config().agents.default_agent.as_str();
    let parse = |raw: &str| {
        SessionKey::parse(raw, default_agent)
            .map_err(|e| GatewayError::InvalidParams(format!("invalid params: {e}")))
    };
    match from {
        KeyFrom::AgentMain => {
            if let Some(k) = p.str("sessionKey") {
                return parse(k);
            }
            let agent = p
                .str("agentId")
                .unwrap_or(default_agent)
                .to_ascii_lowercase();
            if !crate::protocol::session_key::valid_agent_id(&agent) {
                return Err(GatewayError::InvalidParams(format!(
                    "invalid params: invalid agentId {agent:?}"
                )));
            }
            Ok(SessionKey::main(&agent))
        }
        KeyFrom::SendTarget => {
            if let Some(k) = p.str("sessionKey") {
                return parse(k);
            }
            let to = crate::protocol::params::required(p, "to")?;
            let ch = p.str("channel").unwrap_or("log");
            parse(&format!("agent:{default_agent}:{ch}:direct:{to}"))
        }
        KeyFrom::KeyOrNew => match p.str("key").or_else(|| p.str("sessionKey")) {
            Some(k) => parse(k),
            None => {
                let agent = p.str("agentId").unwrap_or(default_agent);
                parse(&format!("agent:{agent}:{}", uuid::Uuid::new_v4()))
            }
        },
        KeyFrom::Key => {
            let k = p.str("key").or_else(|| p.str("sessionKey"));
            parse(
                k.ok_or_else(|| GatewayError::InvalidParams("invalid params: missing key".into()))?,
            )
        }
        KeyFrom::SessionKey => parse(crate::protocol::params::required(p, "sessionKey")?),
    }
}

/// Runs an authorized request from a connection on `shard`. Synchronous: most methods answer
/// (or admit their message) at once, and only those that wait (cluster-wide reads, a durable
/// queue's journal write) spawn a task, so a request costs no task of its own.
pub fn dispatch(
    shard: Rc<GatewayShard>,
    caller: Caller,
    reply: ReplyTo,
    method: Method,
    params: Params,
) {
    if shard
        .shared()
        .shutdown
        .load(std::sync::atomic::Ordering::Relaxed)
        && method.is_submission()
    {
        shard.reply_err(&reply, &GatewayError::ShuttingDown);
        return;
    }
    match method.placement() {
        Placement::SessionOwner(from) => route_session(shard, caller, reply, method, from, params),
        Placement::RunOwner => chat::agent_wait(&shard, reply, &params.into_json()),
        Placement::Connection => dispatch_local(shard, caller, reply, method, params.into_json()),
    }
}

/// A method that acts on a session: run on the session's owner, here or over the mesh.
fn route_session(
    shard: Rc<GatewayShard>,
    caller: Caller,
    reply: ReplyTo,
    method: Method,
    from: KeyFrom,
    params: Params,
) {
    let key = match session_key_for(&shard, from, &params) {
        Ok(k) => k,
        Err(e) => return shard.reply_err(&reply, &e),
    };
    if from == KeyFrom::SendTarget {
        let ch = params.str("channel").unwrap_or("log");
        if queue::channel::lookup(&shard, ch).is_none() {
            return shard.reply_err(
                &reply,
                &GatewayError::InvalidParams(format!("invalid params: unknown channel {ch:?}")),
            );
        }
    }
    let call = Call {
        reply,
        caller,
        method,
        params,
        key,
        received_at: now_ms(),
        received_shard: shard.id().0,
    };
    // In a cluster the session may live on another gateway (its slot's lease holder). The
    // plain `Option` check keeps the relay's refcount off a single gateway's request path.
    let relay = match shard.shared().cluster {
        Some(_) => shard.relay(),
        None => None,
    };
    if let Some(relay) = relay {
        match relay.owner_of(call.key.as_str()).1 {
            SlotOwner::Mine { .. } => {}
            SlotOwner::Member(m) => return remote::forward(shard, relay, m, call),
            SlotOwner::Releasing { .. } | SlotOwner::Unknown => {
                return shard.reply_err(&call.reply, &remote::owner_unavailable())
            }
        }
    }
    if watchers::watches(method) {
        watchers::note(&shard, call.caller.conn, call.key.as_str());
    }
    let owner = shard.owner(call.key.as_str());
    if owner == shard.id() {
        run_owned(shard, call);
    } else {
        match shard.send_mesh(owner, MeshMsg::Call(Box::new(call))) {
            Ok(()) => {}
            Err(refused) => refuse_call(&shard, refused),
        }
    }
}

/// Answers a request the owner shard's mesh outbox did not take: retry later when the owner
/// is behind, or the gateway is stopping when it has closed.
pub fn refuse_call(shard: &GatewayShard, refused: shards::mesh::SendError<MeshMsg>) {
    use shards::mesh::SendError;
    let err = match &refused {
        SendError::Full(_) => GatewayError::ShardBusy {
            retry_after_ms: SHARD_BUSY_RETRY_MS,
        },
        SendError::Closed(_) | SendError::NotAPeer(_) => GatewayError::ShuttingDown,
    };
    if let MeshMsg::Call(call) = refused.into_inner() {
        shard.metrics().mesh_lost("call_refused");
        shard.reply_err(&call.reply, &err);
    }
}

/// The retry hint of a request refused because its owner shard is behind: about the time an
/// owner takes to drain a full outbox at its usual rate (tens of thousands a second).
const SHARD_BUSY_RETRY_MS: u64 = 50;

/// A connection-local method: answered now when it can be, else in a task ([`local_call`]).
fn dispatch_local(
    shard: Rc<GatewayShard>,
    caller: Caller,
    reply: ReplyTo,
    method: Method,
    params: Value,
) {
    let r: Result<Value, GatewayError> = match method {
        Method::Node(m) => match nodes::now(&shard, &caller, reply, m, &params) {
            nodes::Now::Done => return,
            nodes::Now::Later(reply) => return in_task(shard, caller, reply, method, params),
        },
        // Pairing methods answer once their store change is on disk: a task of their own.
        Method::Device(m) => {
            glommio::spawn_local(async move {
                let r = crate::auth::device_methods::call(&shard, &caller, m, &params).await;
                shard.answer(&reply, r);
            })
            .detach();
            return;
        }
        Method::NodePair(m) => {
            glommio::spawn_local(async move {
                let r = crate::node::pair_methods::call(&shard, &caller, m, &params).await;
                shard.answer(&reply, r);
            })
            .detach();
            return;
        }
        Method::Info(_) | Method::Admin(_) | Method::Compat(_) => {
            return in_task(shard, caller, reply, method, params)
        }
        Method::Chat(_) | Method::Session(_) => Err(method.not_here()),
    };
    match r {
        Ok(v) => shard.reply_ok(&reply, &v),
        Err(e) => shard.reply_err(&reply, &e),
    }
}

/// Spawns [`local_call`].
fn in_task(shard: Rc<GatewayShard>, caller: Caller, reply: ReplyTo, method: Method, params: Value) {
    glommio::spawn_local(local_call(shard, caller, reply, method, params)).detach();
}

/// A connection-local method that may wait (some gather every shard's answer), in a task of
/// its own; its latency is recorded under its name.
pub(crate) async fn local_call(
    shard: Rc<GatewayShard>,
    caller: Caller,
    reply: ReplyTo,
    method: Method,
    params: Value,
) {
    let r = match method {
        Method::Info(m) => info::local(&shard, &caller, m, &params).await,
        Method::Admin(m) => crate::ops::admin::call(&shard, m, &params).await,
        Method::Compat(m) => crate::ops::compat::call(&shard, m, &params).await,
        Method::Node(m) => nodes::later(&shard, &caller, m, &params).await,
        Method::Chat(_) | Method::Session(_) | Method::Device(_) | Method::NodePair(_) => {
            Err(method.not_here())
        }
    };
    shard.metrics().latency(
        method,
        shard.shared().mono_us().saturating_sub(caller.received_us),
    );
    match r {
        Ok(v) => shard.reply_ok(&reply, &v),
        Err(e) => shard.reply_err(&reply, &e),
    }
}

/// Handles a message from another shard (the mesh's receive loop calls it).
pub fn on_mesh(shard: &Rc<GatewayShard>, msg: MeshMsg) {
    match msg {
        MeshMsg::Call(call) => run_owned(shard.clone(), *call),
        MeshMsg::Deliver(conn, out) => shard.deliver_local(conn, out),
        MeshMsg::Control(f) => f(shard),
    }
}

/// Runs a session method on the session's owner (this shard).
pub fn run_owned(shard: Rc<GatewayShard>, call: Call) {
    // Sessions and runs may come and go: hello-ok's cached counts look again soon.
    shard.health_parts().mark_changed();
    if watchers::watches(call.method) {
        shard
            .sessions()
            .watchers
            .watch(call.key.as_str(), call.caller.conn);
    }
    match call.method {
        Method::Chat(m) => chat::run_owned(shard, call, m),
        Method::Session(m) => session_ops::run(shard, call, m),
        Method::Node(_)
        | Method::Device(_)
        | Method::NodePair(_)
        | Method::Info(_)
        | Method::Admin(_)
        | Method::Compat(_) => shard.reply_err(&call.reply, &call.method.not_here()),
    }
}
