//! The node area's dispatch, on the connection's shard: what nodes and workers report
//! (invoke results, events, host updates, run events) and `node.invoke` are answered at once;
//! listings and capability invokes, which may wait, run in a task ([`super::local_call`]).

use std::rc::Rc;

use serde_json::Value;

use crate::addr::{Caller, ReplyTo};
use crate::node;
use crate::protocol::error::GatewayError;
use crate::protocol::method::{Method, NodeMethod};
use crate::shard::GatewayShard;

/// What [`now`] did with a request.
pub(super) enum Now {
    /// Answered (or handed on with its reply).
    Done,
    /// Not run: it needs a task; here is its reply back.
    Later(ReplyTo),
}

/// Runs a node method that answers without waiting.
pub(super) fn now(
    shard: &Rc<GatewayShard>,
    caller: &Caller,
    reply: ReplyTo,
    m: NodeMethod,
    p: &Value,
) -> Now {
    let me = caller.auth.actor();
    let r = match m {
        NodeMethod::Invoke => {
            // In a cluster the node may be connected to another gateway (asked once: a
            // relayed invoke is answered where it lands).
            let elsewhere = p["nodeId"]
                .as_str()
                .is_some_and(|id| !shard.nodes().registry.borrow().contains_key(id));
            match shard.relay() {
                Some(relay) if elsewhere && caller.conn.is_local() => {
                    super::remote::forward_node_invoke(
                        shard.clone(),
                        relay,
                        caller.clone(),
                        reply,
                        p.clone(),
                    );
                }
                _ => node::invoke(shard, reply, p),
            }
            return Now::Done;
        }
        NodeMethod::InvokeResult => node::result(shard, me, p),
        NodeMethod::Event => node::event(shard, me, p),
        NodeMethod::SkillsUpdate => node::skills_update(me, p),
        NodeMethod::PluginToolsUpdate => node::plugin_tools_update(me, p),
        NodeMethod::RunnerInventoryUpdate => node::runner_inventory_update(shard, me),
        NodeMethod::WorkerRunEvent => node::worker::run_event(shard, caller.conn, p),
        NodeMethod::WorkerRunResult => node::worker::run_result(shard, caller.conn, p),
        NodeMethod::WorkerPong => node::worker::pong(shard, p),
        NodeMethod::List
        | NodeMethod::Describe
        | NodeMethod::WorkersStatus
        | NodeMethod::CapabilitiesStatus
        | NodeMethod::CapabilityInvoke => return Now::Later(reply),
    };
    match r {
        Ok(v) => shard.reply_ok(&reply, &v),
        Err(e) => shard.reply_err(&reply, &e),
    }
    Now::Done
}

/// Runs a node method that may wait (in the request's task).
pub(super) async fn later(
    shard: &Rc<GatewayShard>,
    caller: &Caller,
    m: NodeMethod,
    p: &Value,
) -> Result<Value, GatewayError> {
    Ok(match m {
        NodeMethod::List => node::list(shard, node::may_pair(&caller.auth)),
        NodeMethod::Describe => node::describe(shard, p, node::may_pair(&caller.auth))?,
        NodeMethod::WorkersStatus => node::worker::status(shard),
        NodeMethod::CapabilitiesStatus => node::caps::status(shard),
        NodeMethod::CapabilityInvoke => node::caps::invoke(shard, p).await?,
        // Answered at once by [`now`].
        NodeMethod::Invoke
        | NodeMethod::InvokeResult
        | NodeMethod::Event
        | NodeMethod::SkillsUpdate
        | NodeMethod::PluginToolsUpdate
        | NodeMethod::RunnerInventoryUpdate
        | NodeMethod::WorkerRunEvent
        | NodeMethod::WorkerRunResult
        | NodeMethod::WorkerPong => return Err(Method::Node(m).not_here()),
    })
}
