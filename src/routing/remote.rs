//! Session requests for another gateway of a cluster ([`crate::relay`]): sent to the
//! gateway whose lease covers the session's slot, which runs them as if one of its own
//! connections had asked (its inbound side is [`crate::transport::relay_in`]).

use std::rc::Rc;

use serde_json::Value;

use crate::addr::{Caller, ReplyTo};
use crate::cluster::MemberIdx;
use crate::protocol::error::GatewayError;
use crate::relay::{CallMsg, Relay, Wire};
use crate::shard::{Call, GatewayShard};

/// How long a client waits before retrying a request whose session's gateway is changing:
/// about one cluster tick (electionTimeout / 6 at the default 3 s).
pub const OWNER_RETRY_MS: u64 = 500;

/// The error for a session whose owner is changing or unreachable.
pub fn owner_unavailable() -> GatewayError {
    GatewayError::OwnerUnavailable {
        retry_after_ms: OWNER_RETRY_MS,
    }
}

/// `node.invoke` of a node this gateway does not hold: relayed to the member the node
/// directory names, or run here (which answers "unknown node") when none does.
pub(super) fn forward_node_invoke(
    shard: Rc<GatewayShard>,
    relay: Rc<Relay>,
    caller: Caller,
    reply: ReplyTo,
    params: Value,
) {
    glommio::spawn_local(async move {
        let node_id = params["nodeId"].as_str().unwrap_or_default().to_string();
        let home = match relay.node_home(&node_id).await {
            Ok(Some(m)) => m,
            Ok(None) => return crate::node::invoke(&shard, reply, &params),
            Err(e) => {
                tracing::warn!("cluster: node directory unreachable: {e}");
                return shard.reply_err(&reply, &owner_unavailable());
            }
        };
        let msg = Wire::Call(Box::new(CallMsg {
            from: relay.ownership().me().to_string(),
            shard: caller.conn.shard.0 as u32,
            conn: caller.conn.id,
            req: reply.req_id.clone(),
            method: "node.invoke".into(),
            params,
            key: String::new(),
            auth: (*caller.auth).clone(),
            at: crate::clock::now_ms(),
        }));
        match relay.send(home, &msg).await {
            Ok(heard) if heard > 0 => {}
            _ => shard.reply_err(
                &reply,
                &GatewayError::NodeUnavailable(format!("node not connected: {node_id}")),
            ),
        }
    })
    .detach();
}

/// Sends `call` to member `to` over the relay; answers `UNAVAILABLE` (retryable) when it
/// cannot be published or no gateway listens on that member's channel.
pub(super) fn forward(shard: Rc<GatewayShard>, relay: Rc<Relay>, to: MemberIdx, call: Call) {
    let Call {
        reply,
        caller,
        method,
        params,
        key,
        received_at,
        ..
    } = call;
    let msg = Wire::Call(Box::new(CallMsg {
        from: relay.ownership().me().to_string(),
        shard: caller.conn.shard.0 as u32,
        conn: caller.conn.id,
        req: reply.req_id.clone(),
        method: method.to_string(),
        params: params.into_json(),
        key: key.as_str().to_string(),
        auth: (*caller.auth).clone(),
        at: received_at,
    }));
    relay.expect(caller.conn.id, &reply.req_id, to);
    glommio::spawn_local(async move {
        match relay.send(to, &msg).await {
            Ok(heard) if heard > 0 => {}
            Ok(_) => shard.reply_err(&reply, &owner_unavailable()),
            Err(e) => {
                tracing::warn!(member = to.0, "relay: request not sent: {e}");
                shard.reply_err(&reply, &owner_unavailable());
            }
        }
    })
    .detach();
}

/// Answers, every half second, the requests this shard relayed to a member that left
/// before answering them (`UNAVAILABLE`, retryable: a resend with the same idempotency key
/// meets the run the new owner restored, if it was admitted).
pub fn sweep_orphans(shard: &Rc<GatewayShard>, relay: Rc<Relay>) {
    let weak = Rc::downgrade(shard);
    glommio::spawn_local(async move {
        loop {
            glommio::timer::sleep(std::time::Duration::from_millis(OWNER_RETRY_MS)).await;
            let Some(shard) = weak.upgrade() else { return };
            for (conn, req_id) in relay.orphans() {
                let reply = ReplyTo {
                    conn: shard.conn_ref(conn),
                    req_id,
                };
                shard.reply_err(&reply, &owner_unavailable());
            }
        }
    })
    .detach();
}
