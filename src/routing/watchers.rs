//! A session's run events to its caller and to the other connections watching it (the
//! watcher sets are [`crate::session::watchers`]; see there why and how they are bounded).

use std::rc::Rc;

use crate::addr::ConnRef;
use crate::protocol::method::{ChatMethod, Method};
use crate::shard::GatewayShard;

/// Whether a session method makes its caller a watcher of the session.
pub fn watches(m: Method) -> bool {
    matches!(
        m,
        Method::Chat(ChatMethod::ChatHistory | ChatMethod::ChatSend | ChatMethod::Agent)
    )
}

/// On the caller's shard, before a session method goes to the key's owner: notes the watch
/// and, when that made the connection stop watching an older key, tells that key's owner.
pub fn note(shard: &Rc<GatewayShard>, conn: ConnRef, key: &str) {
    if let Some(old) = shard.sessions.watching.note(conn.id, key) {
        let owner = shard.owner(&old);
        shard.on_shard(owner, move |s| s.sessions.watchers.unwatch(&old, conn));
    }
}

/// Whether a run event of session `key` has anyone to go to: the run's caller or a watcher.
pub fn wanted(shard: &GatewayShard, key: &str, caller: Option<ConnRef>) -> bool {
    caller.is_some() || shard.sessions.watchers.others(key, caller)
}

/// Sends a run event of session `key` (begun with [`crate::protocol::frame::open_event`]) to
/// the run's caller and to every other connection watching the session.
pub fn send_open(
    shard: &GatewayShard,
    key: &str,
    caller: Option<ConnRef>,
    open: String,
    droppable: bool,
) {
    for w in shard.sessions.watchers.others_of(key, caller) {
        shard.event_open_to(w, open.clone(), droppable);
    }
    if let Some(c) = caller {
        shard.event_open_to(c, open, droppable);
    }
}

/// [`send_open`] of `payload` as event `name`.
pub fn send<T: serde::Serialize + ?Sized>(
    shard: &GatewayShard,
    key: &str,
    caller: Option<ConnRef>,
    name: &str,
    payload: &T,
    droppable: bool,
) {
    if wanted(shard, key, caller) {
        let open = crate::protocol::frame::open_event(name, payload);
        send_open(shard, key, caller, open, droppable);
    }
}
