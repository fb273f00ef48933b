//! A session's run events to its caller and to the other connections watching it (the
//! watcher sets are [`crate::session::watchers`]; see there why and how they are bounded).

use std::rc::Rc;

use smallvec::SmallVec;

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
    if let Some(old) = shard.sessions().watching.note(conn.id, key) {
        let owner = shard.owner(&old);
        shard.on_shard(owner, move |s| s.sessions().watchers.unwatch(&old, conn));
    }
}

/// Who a run event of session `key` goes to: the session's other watchers, then the run's
/// caller. One lookup per event (a streamed word's frames share it); copied out, so that no
/// borrow of the watcher table is held while the frames are sent (a send may close a
/// connection, which edits the table). Empty: nobody wants the event, so build no frame.
pub fn targets(shard: &GatewayShard, key: &str, caller: Option<ConnRef>) -> Targets {
    let mut to = shard.sessions().watchers.others_of(key, caller);
    to.extend(caller);
    to
}

/// The connections of [`targets`].
pub type Targets = SmallVec<[ConnRef; 4]>;

/// Sends a run event (begun with [`crate::protocol::frame::open_event`]) to `to`: a copy of
/// the frame per target but the last.
pub fn send_open(shard: &GatewayShard, to: &[ConnRef], open: String, droppable: bool) {
    if let Some((last, rest)) = to.split_last() {
        for w in rest {
            shard.event_open_to(*w, open.clone(), droppable);
        }
        shard.event_open_to(*last, open, droppable);
    }
}

/// [`send_open`] of `payload` as event `name` to the [`targets`] of session `key`.
pub fn send<T: serde::Serialize + ?Sized>(
    shard: &GatewayShard,
    key: &str,
    caller: Option<ConnRef>,
    name: &str,
    payload: &T,
    droppable: bool,
) {
    let to = targets(shard, key, caller);
    if !to.is_empty() {
        let open = crate::protocol::frame::open_event(name, payload);
        send_open(shard, &to, open, droppable);
    }
}
