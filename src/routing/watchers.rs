//! A session's run events to its caller and to the other connections watching it (the
//! watcher sets are [`crate::session::watchers`]; see there why and how they are bounded).

use std::cell::{Cell, RefCell};
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

/// The watchers besides the caller of one run, kept across its events: looked up again only
/// when the watcher table changed since the last event (a run's few events would otherwise
/// hash its key once each). Small, since a run's future holds it: the session key and the
/// caller stay with the run and are passed in.
pub struct RunTargets {
    /// The table's generation `others` was read at; `u64::MAX` before the first read.
    generation: Cell<u64>,
    others: RefCell<Vec<ConnRef>>,
}

impl Default for RunTargets {
    /// Targets nobody has read yet.
    fn default() -> Self {
        RunTargets {
            generation: Cell::new(u64::MAX),
            others: RefCell::new(Vec::new()),
        }
    }
}

impl RunTargets {
    fn refresh(&self, shard: &GatewayShard, key: &str, caller: Option<ConnRef>) {
        let generation = shard.sessions().watchers.generation();
        if self.generation.get() != generation {
            let mut others = self.others.borrow_mut();
            others.clear();
            others.extend(shard.sessions().watchers.others_of(key, caller));
            self.generation.set(generation);
        }
    }

    /// Whether an event of session `key` has anyone to go to (else build no frame).
    pub fn any(&self, shard: &GatewayShard, key: &str, caller: Option<ConnRef>) -> bool {
        self.refresh(shard, key, caller);
        caller.is_some() || !self.others.borrow().is_empty()
    }

    /// [`send_open`] to the watchers, then the caller.
    pub fn send_open(
        &self,
        shard: &GatewayShard,
        key: &str,
        caller: Option<ConnRef>,
        open: String,
        droppable: bool,
    ) {
        self.refresh(shard, key, caller);
        let others = self.others.borrow();
        match caller {
            None => send_open(shard, &others, open, droppable),
            Some(c) => {
                for w in others.iter() {
                    shard.event_open_to(*w, open.clone(), droppable);
                }
                shard.event_open_to(c, open, droppable);
            }
        }
    }
}

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
