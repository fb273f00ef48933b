//! The relay's inbound side: what other gateways of the cluster send this one
//! ([`crate::relay::Wire`]), handled like frames from a connection — answers and events go
//! to this gateway's connections, requests go to their session's owner shard.
//!
//! Trust: a relayed request runs with the authorization the calling gateway granted (the
//! members share one config and one Redis; whoever can publish on the relay channels can
//! already write the queue).

use std::rc::Rc;
use std::sync::Arc;

use futures_lite::StreamExt;
use shardgate_redis::{Push, Subscriber};
use shards::ShardId;

use crate::addr::{Caller, ConnRef, ReplyTo};
use crate::clock::now_ms;
use crate::cluster::{MemberIdx, SlotOwner};
use crate::envelope::Out;
use crate::protocol::error::GatewayError;
use crate::protocol::method::{Method, NodeMethod, Placement};
use crate::protocol::params::Params;
use crate::protocol::SessionKey;
use crate::relay::{CallMsg, Relay, Wire};
use crate::routing::remote::owner_unavailable;
use crate::routing::{dispatch, refuse_call, run_owned};
use crate::shard::{Call, GatewayShard, MeshMsg, RunRecord};

/// Listens on this gateway's relay channel (on one shard) and hands each message on, for
/// as long as the gateway runs. The subscription is restored by the client after a
/// reconnect; what was published meanwhile is lost (clients resend, see [`crate::relay`]).
pub fn listen(
    shard: &Rc<GatewayShard>,
    relay: Rc<Relay>,
    sub: Subscriber,
    mut rx: futures_channel::mpsc::Receiver<Push>,
) {
    let shard = Rc::downgrade(shard);
    glommio::spawn_local(async move {
        let _keep = sub;
        while let Some(push) = rx.next().await {
            let Some(shard) = shard.upgrade() else { return };
            match push {
                Push::Message { payload, .. } => on_relay(&shard, &relay, &payload),
                Push::Reconnected => {
                    tracing::warn!("relay: reconnected to Redis; messages sent meanwhile are lost")
                }
                _ => {}
            }
        }
    })
    .detach();
}

/// Handles one relay message addressed to this gateway.
pub fn on_relay(shard: &Rc<GatewayShard>, relay: &Relay, text: &[u8]) {
    let msg = match serde_json::from_slice::<Wire>(text) {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(len = text.len(), "relay: unreadable message dropped: {e}");
            return;
        }
    };
    match msg {
        Wire::Res {
            shard: s,
            conn,
            frame,
        } => {
            // On the connection's shard, where its relayed request is remembered.
            shard.on_shard(ShardId(s as usize), move |sh| {
                if let Some(r) = sh.relay() {
                    r.answered(conn, &frame);
                }
                sh.deliver_local(conn, Out::Frame(frame));
            })
        }
        Wire::Broadcast {
            from,
            event,
            payload,
        } => {
            // Our own, echoed back by Redis: delivered here already.
            if from != relay.ownership().me() && event == "sessions.changed" {
                shard.sessions_changed_here(payload);
            }
        }
        Wire::WaitFor { from, run } => {
            if from == relay.ownership().me() {
                return;
            }
            let Some(member) = relay.gw_of(&from).map(|gw| MemberIdx(gw - 1)) else {
                return;
            };
            // On the run id's owner shard, where its record is kept if the run is ours.
            shard.on_shard(shard.owner(&run), move |sh| {
                let Some(relay) = sh.relay() else { return };
                let runs = sh.runs().borrow();
                let Some(e) = runs.get(run.as_str(), now_ms()) else {
                    return;
                };
                match &e.record {
                    r if r.ended() => relay.tell_run(member, &run, r),
                    // A record only waited for here is another gateway's run.
                    r if r.status.is_empty() => {}
                    _ => relay.wait_remote(&run, member),
                }
            })
        }
        Wire::RunEnded {
            run,
            status,
            started_at,
            ended_at,
            error,
        } => {
            let Some(status) = RunRecord::ENDED.into_iter().find(|s| *s == status) else {
                tracing::warn!(%status, "relay: run outcome with an unknown status dropped");
                return;
            };
            let ended = RunRecord {
                status,
                started_at,
                ended_at,
                error,
                waiters: Vec::new(),
            };
            shard.on_shard(shard.owner(&run), move |sh| {
                crate::queue::ended_elsewhere(sh, &run, ended)
            })
        }
        Wire::Event {
            shard: s,
            conn,
            open,
            droppable,
        } => shard.deliver(
            ConnRef::local(ShardId(s as usize), conn),
            Out::Event { open, droppable },
        ),
        Wire::Call(c) => {
            let CallMsg {
                from,
                shard: s,
                conn,
                req,
                method,
                params,
                key,
                auth,
                at,
            } = *c;
            let Some(gw) = relay.gw_of(&from) else {
                // Its answer could not be addressed: the caller times out and resends.
                tracing::warn!(%from, "relay: request from a member not seen yet, dropped");
                return;
            };
            let conn = ConnRef {
                shard: ShardId(s as usize),
                id: conn,
                gw,
            };
            let reply = ReplyTo { conn, req_id: req };
            let Some(method) = Method::parse(&method) else {
                return shard.reply_err(&reply, &GatewayError::UnknownMethod(method));
            };
            let caller = Caller {
                conn,
                auth: Arc::new(auth),
                received_us: shard.shared().mono_us(),
            };
            if method == Method::Node(NodeMethod::Invoke) {
                // For a node held here (the caller's gateway asked the node directory).
                let params = Params::for_method(Some(method), params);
                return dispatch(shard.clone(), caller, reply, method, params);
            }
            if !matches!(method.placement(), Placement::SessionOwner(_)) {
                return shard.reply_err(&reply, &GatewayError::UnknownMethod(method.to_string()));
            }
            let key = match SessionKey::parse(&key, &shard.config().agents.default_agent) {
                Ok(k) => k,
                Err(e) => return shard.reply_err(&reply, &GatewayError::InvalidParams(e)),
            };
            // The lease may have moved while the message travelled.
            if !matches!(relay.owner_of(key.as_str()).1, SlotOwner::Mine { .. }) {
                return shard.reply_err(&reply, &owner_unavailable());
            }
            let call = Call {
                reply,
                caller,
                method,
                params: Params::for_method(Some(method), params),
                key,
                received_at: at,
                received_shard: shard.id().0,
            };
            let owner = shard.owner(call.key.as_str());
            if owner == shard.id() {
                run_owned(shard.clone(), call);
            } else if let Err(refused) = shard.send_mesh(owner, MeshMsg::Call(Box::new(call))) {
                refuse_call(shard, refused);
            }
        }
    }
}
