//! `GatewayShard`: everything one shard owns, and the mesh messages between shards.
//!
//! Ownership: connections live on the shard that accepted them; sessions (and their runs,
//! history and ordering lanes) on the shard that owns their key (`shards::route::owner`); the
//! run directory entry of a run on `owner(runId)`. Everything here is `!Send` and touched only
//! from its shard's thread. Other shards reach it through [`MeshMsg`].

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::Arc;

use serde_json::{json, Value};
use shards::mesh::{Class, Mesh, MeshStats, SendError};
use shards::ShardId;

use crate::addr::{ConnRef, ReplyTo};
use crate::clock::now_ms;
use crate::config::Config;
use crate::protocol::connect::ConnAuth;
use crate::protocol::error::GatewayError;
use crate::protocol::frame;
use crate::protocol::SessionKey;
use crate::session::SessionTable;

pub use crate::envelope::{Call, Out};
pub use crate::session::run_entry::{RunEntry, RunRecord};
pub use crate::shared::{Shared, StopWaiters};
use crate::transport::conn::Conn;

/// Control-plane work to run on another shard.
pub type Control = Box<dyn FnOnce(&Rc<GatewayShard>) + Send>;

/// Messages between shards.
pub enum MeshMsg {
    /// Run a session-owned request here.
    Call(Box<Call>),
    /// Put a frame on one of this shard's connections.
    Deliver(u64, Out),
    /// Run a closure here (control plane, not the data path).
    Control(Control),
}

impl std::fmt::Debug for MeshMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MeshMsg::Call(c) => write!(f, "Call({})", c.method),
            MeshMsg::Deliver(id, _) => write!(f, "Deliver({id})"),
            MeshMsg::Control(_) => f.write_str("Control"),
        }
    }
}

/// A cross-shard call that got no answer: the shard is stopping or its mesh is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardGone(pub ShardId);

/// Everything one shard owns.
pub struct GatewayShard {
    /// This shard.
    id: ShardId,
    /// Process-wide state.
    shared: Arc<Shared>,
    mesh: Rc<Mesh<MeshMsg>>,
    conns: RefCell<HashMap<u64, Rc<Conn>, ahash::RandomState>>,
    next_conn: Cell<u64>,
    /// Sessions this shard owns.
    sessions: SessionTable,
    /// Queue state: dead letters, counters, the durable journal.
    queue: crate::queue::state::QueueState,
    /// Node registry replica and the invokes pending on this shard's nodes.
    nodes: crate::node::registry::NodeState,
    /// Counters (merged on read).
    metrics: crate::ops::metrics::ShardMetrics,
    /// Request rate limiters (this shard's share of `access.rateLimiting`).
    limiter: crate::auth::access::ShardLimiter,
    /// Agent worker runs (by session shard) and assignments (by worker shard).
    workers: crate::node::worker_pool::WorkerState,
    /// Run entries: traces recorded here, and the run directory of the run ids owned here.
    /// Bounded like the dedup ring (capacity and window): a client cannot grow it without
    /// limit by submitting runs faster than the window expires them.
    runs: RefCell<shards::dedup::DedupRing<String, RunEntry>>,
    /// Presence, replicated on every shard (keyed by connection).
    presence: RefCell<BTreeMap<String, Value>>,
    presence_version: Cell<u64>,
    health_version: Cell<u64>,
    /// The other shards' parts of hello-ok's health, as they last published them.
    health_parts: crate::snapshot::HealthParts,
    /// Runs executing on this shard.
    inflight: Cell<usize>,
    /// Dependency health states (shard 0 checks them).
    deps: crate::ops::dep_state::Deps,
    /// Alert states (shard 0 evaluates them).
    alert_state: RefCell<Vec<(String, bool)>>,
    /// System events queued by `wake` for the default agent's main session, oldest first
    /// (the same on every shard: `wake` broadcasts). No heartbeat runs here to consume them,
    /// so they stay queued, bounded as in OpenClaw; `status.queuedSystemEvents` shows them.
    system_events: RefCell<std::collections::VecDeque<String>>,
    /// This shard's end of the cluster relay (clustering only).
    relay: RefCell<Option<Rc<crate::relay::Relay>>>,
    /// Chat channels: counters, and the connections' states (shard 0 drives them).
    channels: crate::channels::state::ChannelsState,
}

impl std::fmt::Debug for GatewayShard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayShard")
            .field("id", &self.id)
            .finish()
    }
}

impl GatewayShard {
    /// A shard with no connections yet.
    pub fn new(id: ShardId, shared: Arc<Shared>, mesh: Rc<Mesh<MeshMsg>>) -> Rc<GatewayShard> {
        let sessions = SessionTable::new();
        let health_parts = crate::snapshot::HealthParts::new(shared.shards);
        let queue = crate::queue::state::QueueState::new(&shared.config, shared.shards);
        let limiter = crate::auth::access::ShardLimiter::new(&shared.config, shared.shards);
        let runs = shards::dedup::DedupRing::new(
            shared.config.deduplication.capacity,
            shared.config.deduplication.window.0 as i64,
        );
        Rc::new(GatewayShard {
            id,
            shared,
            mesh,
            conns: RefCell::new(HashMap::default()),
            next_conn: Cell::new(1),
            sessions,
            queue,
            nodes: Default::default(),
            metrics: Default::default(),
            limiter,
            workers: Default::default(),
            runs: RefCell::new(runs),
            presence: RefCell::new(BTreeMap::new()),
            presence_version: Cell::new(1),
            health_version: Cell::new(1),
            health_parts,
            inflight: Cell::new(0),
            system_events: RefCell::new(Default::default()),
            alert_state: RefCell::new(Vec::new()),
            deps: Default::default(),
            relay: RefCell::new(None),
            channels: Default::default(),
        })
    }

    // ----- state (each subsystem's own API is on its type) -----

    /// This shard.
    pub fn id(&self) -> ShardId {
        self.id
    }

    /// Process-wide state.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Sessions this shard owns.
    pub fn sessions(&self) -> &SessionTable {
        &self.sessions
    }

    /// Queue state: dead letters, counters, the durable journal.
    pub fn queue(&self) -> &crate::queue::state::QueueState {
        &self.queue
    }

    /// Chat channels' counters and connection states on this shard.
    pub fn channels(&self) -> &crate::channels::state::ChannelsState {
        &self.channels
    }

    /// Node registry replica and the invokes pending on this shard's nodes.
    pub fn nodes(&self) -> &crate::node::registry::NodeState {
        &self.nodes
    }

    /// Counters (merged on read).
    pub fn metrics(&self) -> &crate::ops::metrics::ShardMetrics {
        &self.metrics
    }

    /// Request rate limiters (this shard's share of `access.rateLimiting`).
    pub fn limiter(&self) -> &crate::auth::access::ShardLimiter {
        &self.limiter
    }

    /// Agent worker runs (by session shard) and assignments (by worker shard).
    pub fn workers(&self) -> &crate::node::worker_pool::WorkerState {
        &self.workers
    }

    /// Run entries: traces recorded here, and the run directory of the run ids owned here.
    /// Bounded like the dedup ring (capacity and window): a client cannot grow it without
    /// limit by submitting runs faster than the window expires them.
    pub fn runs(&self) -> &RefCell<shards::dedup::DedupRing<String, RunEntry>> {
        &self.runs
    }

    /// The other shards' parts of hello-ok's health, as they last published them.
    pub fn health_parts(&self) -> &crate::snapshot::HealthParts {
        &self.health_parts
    }

    /// Runs executing on this shard.
    pub fn inflight(&self) -> &Cell<usize> {
        &self.inflight
    }

    /// Dependency health states (shard 0 checks them).
    pub fn deps(&self) -> &crate::ops::dep_state::Deps {
        &self.deps
    }

    /// Alert states (shard 0 evaluates them).
    pub fn alert_state(&self) -> &RefCell<Vec<(String, bool)>> {
        &self.alert_state
    }

    /// System events queued by `wake` for the default agent's main session, oldest first
    /// (the same on every shard: `wake` broadcasts). No heartbeat runs here to consume them,
    /// so they stay queued, bounded as in OpenClaw; `status.queuedSystemEvents` shows them.
    pub fn system_events(&self) -> &RefCell<std::collections::VecDeque<String>> {
        &self.system_events
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.shared.shards
    }

    /// The shard owning `key`.
    pub fn owner(&self, key: &str) -> ShardId {
        shards::route::owner(key, self.shards())
    }

    /// Sends a mesh message to another shard (in order per destination), or hands it back
    /// ([`SendError`]): a request ([`MeshMsg::Call`]) is new work and is refused first when
    /// the peer falls behind; answers and control messages get the mesh's headroom.
    pub fn send_mesh(&self, to: ShardId, msg: MeshMsg) -> Result<(), SendError<MeshMsg>> {
        let class = match msg {
            MeshMsg::Call(_) => Class::Work,
            MeshMsg::Deliver(..) | MeshMsg::Control(_) => Class::Answer,
        };
        self.mesh.try_send(to, msg, class)
    }

    /// Counts and logs a mesh message that could not be sent and has no caller to answer:
    /// never a silent drop.
    fn mesh_refused(&self, to: ShardId, err: SendError<MeshMsg>) {
        let reason = match &err {
            SendError::Full(_) => "full",
            SendError::Closed(_) => "closed",
            SendError::NotAPeer(_) => "not_a_peer",
        };
        let msg = err.into_inner();
        self.metrics.mesh_lost(reason);
        // Expected only while stopping (a closed peer); otherwise the peer is stuck.
        if reason == "closed"
            && self
                .shared
                .shutdown
                .load(std::sync::atomic::Ordering::Relaxed)
        {
            tracing::debug!(shard = %self.id, to = %to, ?msg, "mesh message to a stopped shard");
        } else {
            tracing::warn!(shard = %self.id, to = %to, ?msg, reason, "mesh message not delivered");
        }
    }

    /// This shard's mesh send counters.
    pub fn mesh_stats(&self) -> MeshStats {
        self.mesh.stats()
    }

    /// Runs `f` on shard `to` (directly when local).
    pub fn on_shard(
        self: &Rc<Self>,
        to: ShardId,
        f: impl FnOnce(&Rc<GatewayShard>) + Send + 'static,
    ) {
        if to == self.id {
            f(self);
        } else if let Err(e) = self.send_mesh(to, MeshMsg::Control(Box::new(f))) {
            self.mesh_refused(to, e);
        }
    }

    // ----- connections -----

    /// Registers a new connection.
    pub fn add_conn(&self, peer: std::net::SocketAddr) -> Rc<Conn> {
        let n = self.next_conn.get();
        self.next_conn.set(n + 1);
        let id = ((self.id.0 as u64) << 48) | n;
        let c = Rc::new(Conn::new(
            id,
            peer,
            self.config().gateway.max_buffered_bytes,
        ));
        self.conns.borrow_mut().insert(id, c.clone());
        c
    }

    /// Forgets a connection and withdraws it from presence; returns it, so the caller can
    /// end what else it was (a node, a worker).
    pub fn remove_conn(self: &Rc<Self>, id: u64) -> Option<Rc<Conn>> {
        let removed = self.conns.borrow_mut().remove(&id);
        if let Some(c) = &removed {
            c.mark_closed();
            self.health_parts.mark_changed();
            self.unwatch_all(self.conn_ref(id));
            if c.auth
                .borrow()
                .as_ref()
                .is_some_and(|a| presence_visible(a))
            {
                let key = c.conn_uuid.to_string();
                self.broadcast(move |s| s.presence_remove(&key));
            }
        }
        removed
    }

    /// Closes the live connections of a device (for one role, or all), on every shard.
    pub fn close_device(
        self: &Rc<Self>,
        device_id: &str,
        role: Option<&str>,
        reason: &'static str,
    ) {
        let (device_id, role) = (device_id.to_owned(), role.map(str::to_owned));
        self.broadcast(move |s| {
            for c in s.all_conns() {
                let hit = c.auth.borrow().as_ref().is_some_and(|a| {
                    a.device_id.as_deref() == Some(device_id.as_str())
                        && role.as_deref().is_none_or(|r| r == a.role)
                });
                if hit {
                    c.close(1008, reason);
                }
            }
        });
    }

    /// Tells every `sessions.subscribe`d client that a session changed (in a cluster, on
    /// every member).
    pub fn sessions_changed(self: &Rc<Self>, key: &SessionKey, reason: &'static str) {
        let payload =
            json!({"sessionKey": key.as_str(), "reason": reason, "ts": now_ms()}).to_string();
        if let Some(r) = self.relay() {
            r.broadcast("sessions.changed", &payload);
        }
        self.sessions_changed_here(payload);
    }

    /// [`GatewayShard::sessions_changed`] for this gateway's clients only (also what a
    /// cluster member's event becomes here).
    pub fn sessions_changed_here(self: &Rc<Self>, payload: String) {
        self.broadcast(move |s| {
            s.event_local_all("sessions.changed", &payload, true, false, |c| {
                c.sessions_subscribed.get()
            });
        });
    }

    /// A connection closed: removes it from the watcher set of every session it watched
    /// ([`crate::session::watchers`]).
    pub fn unwatch_all(self: &Rc<Self>, conn: ConnRef) {
        for key in self.sessions.watching.forget(conn.id) {
            let owner = self.owner(&key);
            self.on_shard(owner, move |s| s.sessions.watchers.unwatch(&key, conn));
        }
    }

    /// Answers a session method's result (`Null`: answered already, or later).
    pub fn answer(&self, reply: &ReplyTo, r: Result<Value, GatewayError>) {
        match r {
            Ok(Value::Null) => {}
            Ok(v) => self.reply_ok(reply, &v),
            Err(e) => self.reply_err(reply, &e),
        }
    }

    /// The connection with `id`, if it lives here.
    pub fn conn(&self, id: u64) -> Option<Rc<Conn>> {
        self.conns.borrow().get(&id).cloned()
    }

    /// Number of connections on this shard (authenticated, total).
    pub fn conn_counts(&self) -> (usize, usize) {
        let c = self.conns.borrow();
        (
            c.values().filter(|c| c.auth.borrow().is_some()).count(),
            c.len(),
        )
    }

    /// A reference to a local connection.
    pub fn conn_ref(&self, id: u64) -> ConnRef {
        ConnRef::local(self.id, id)
    }

    pub fn deliver_local(&self, conn: u64, out: Out) {
        let Some(c) = self.conn(conn) else { return };
        match out {
            Out::Frame(f) => c.push_frame(f),
            Out::Event { open, droppable } => {
                self.metrics.events_sent(1);
                c.push_open_event(open, droppable)
            }
        }
    }

    /// This shard's end of the cluster relay, once clustering started.
    pub fn relay(&self) -> Option<Rc<crate::relay::Relay>> {
        self.relay.borrow().clone()
    }

    /// Installs this shard's end of the cluster relay.
    pub fn set_relay(&self, relay: Rc<crate::relay::Relay>) {
        *self.relay.borrow_mut() = Some(relay);
    }

    /// Puts `out` on connection `to`, wherever it lives (on another gateway: over the
    /// relay).
    pub fn deliver(&self, to: ConnRef, out: Out) {
        if !to.is_local() {
            match self.relay.borrow().as_ref() {
                Some(r) => r.out(to, out),
                None => self.metrics.mesh_lost("no_relay"),
            }
        } else if to.shard == self.id {
            self.deliver_local(to.id, out);
        } else {
            match self.send_mesh(to.shard, MeshMsg::Deliver(to.id, out)) {
                Ok(()) => {}
                // Skippable under backpressure by the protocol: counted as skipped.
                Err(SendError::Full(MeshMsg::Deliver(
                    _,
                    Out::Event {
                        droppable: true, ..
                    },
                ))) => {
                    self.metrics.mesh_lost("event_skipped");
                }
                Err(e) => self.mesh_refused(to.shard, e),
            }
        }
    }

    /// Sends a `res ok` to `reply`.
    pub fn reply_ok<T: serde::Serialize + ?Sized>(&self, reply: &ReplyTo, payload: &T) {
        self.deliver(
            reply.conn,
            Out::Frame(frame::res_ok(&reply.req_id, payload)),
        );
    }

    /// Sends a `res` error to `reply`.
    pub fn reply_err(&self, reply: &ReplyTo, err: &GatewayError) {
        self.metrics.minutes.borrow_mut().at(now_ms()).errors += 1;
        self.deliver(
            reply.conn,
            Out::Frame(frame::res_err(&reply.req_id, &err.wire())),
        );
    }

    /// Sends an event to one connection.
    pub fn event_to<T: serde::Serialize + ?Sized>(
        &self,
        to: ConnRef,
        name: &'static str,
        payload: &T,
        droppable: bool,
    ) {
        let open = frame::open_event(name, payload);
        self.deliver(to, Out::Event { open, droppable });
    }

    /// Sends an event already begun with [`frame::open_event_with`] to one connection.
    pub fn event_open_to(&self, to: ConnRef, open: String, droppable: bool) {
        self.deliver(to, Out::Event { open, droppable });
    }

    /// Sends an event to every authenticated connection on this shard that `filter` accepts.
    pub fn event_local_all(
        &self,
        name: &str,
        payload: &str,
        droppable: bool,
        sv: bool,
        filter: impl Fn(&Conn) -> bool,
    ) {
        let sv = sv.then(|| (self.presence_version.get(), self.health_version.get()));
        // Built once; each connection queues a pointer to it and its own `seq`.
        let mut open: Option<Rc<str>> = None;
        for c in self.conns.borrow().values() {
            let ok = c.auth.borrow().as_ref().is_some_and(|a| !a.seed);
            if ok && filter(c) {
                self.metrics.events_sent(1);
                let open = open.get_or_insert_with(|| frame::open_event_raw(name, payload).into());
                c.push_shared_event(open, droppable, sv);
            }
        }
    }

    /// Runs `f` on every shard (this one included).
    pub fn broadcast(
        self: &Rc<Self>,
        f: impl Fn(&Rc<GatewayShard>) + Send + Sync + Clone + 'static,
    ) {
        for s in 0..self.shards() {
            let f = f.clone();
            self.on_shard(ShardId(s), move |sh| f(sh));
        }
    }

    /// Runs `f` on shard `to` and resolves with its result (at once when `to` is this
    /// shard). The call is sent now, not when the future is first polled, so several calls
    /// made before awaiting any run in parallel. The answer comes back over the mesh, so it
    /// is handed over on this shard's thread; a call or an answer the mesh refuses (a stopped
    /// or stuck peer) resolves [`ShardGone`], counted and logged, never a silent wait.
    pub fn invoke_on<T: Send + 'static>(
        self: &Rc<Self>,
        to: ShardId,
        f: impl FnOnce(&Rc<GatewayShard>) -> T + Send + 'static,
    ) -> impl std::future::Future<Output = Result<T, ShardGone>> + 'static {
        let sent = if to == self.id {
            Err(Ok(f(self)))
        } else {
            let (tx, rx) = futures_channel::oneshot::channel();
            let origin = self.id;
            let ask = MeshMsg::Control(Box::new(move |remote: &Rc<GatewayShard>| {
                let v = f(remote);
                // Dropped with `tx` if refused: the caller sees `ShardGone`.
                remote.on_shard(origin, move |_| {
                    let _ = tx.send(v);
                });
            }));
            match self.send_mesh(to, ask) {
                Ok(()) => Ok(rx),
                Err(e) => {
                    self.mesh_refused(to, e);
                    Err(Err(ShardGone(to)))
                }
            }
        };
        async move {
            match sent {
                Ok(rx) => rx.await.map_err(|_| ShardGone(to)),
                Err(done) => done,
            }
        }
    }

    /// Runs `f` on every shard (this one included) at once and returns the results in
    /// shard order.
    pub async fn map_reduce<T: Send + 'static>(
        self: &Rc<Self>,
        f: impl Fn(&Rc<GatewayShard>) -> T + Send + Sync + Clone + 'static,
    ) -> Vec<Result<T, ShardGone>> {
        let calls: Vec<_> = (0..self.shards())
            .map(|s| self.invoke_on(ShardId(s), f.clone()))
            .collect();
        let mut out = Vec::with_capacity(calls.len());
        for c in calls {
            out.push(c.await);
        }
        out
    }

    /// [`GatewayShard::map_reduce`] of JSON parts, a shard that did not answer standing as
    /// `{"error": "shard N unavailable"}` (status and metrics show what they have).
    pub async fn gather(
        self: &Rc<Self>,
        f: impl Fn(&Rc<GatewayShard>) -> Value + Send + Sync + Clone + 'static,
    ) -> Vec<Value> {
        self.map_reduce(f)
            .await
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|ShardGone(s)| json!({"error": format!("shard {s} unavailable")}))
            })
            .collect()
    }

    // ----- presence -----

    /// Applies a presence upsert and tells local clients.
    pub fn presence_upsert(&self, key: String, entry: Value) {
        self.presence.borrow_mut().insert(key, entry);
        self.presence_changed();
    }

    /// Applies a presence removal and tells local clients.
    pub fn presence_remove(&self, key: &str) {
        if self.presence.borrow_mut().remove(key).is_some() {
            self.presence_changed();
        }
    }

    fn presence_changed(&self) {
        self.presence_version.set(self.presence_version.get() + 1);
        let payload = json!({ "presence": self.presence_list() }).to_string();
        self.event_local_all("presence", &payload, true, true, |_| true);
    }

    /// The presence list: the gateway itself, then connected clients.
    pub fn presence_list(&self) -> Vec<Value> {
        let mut v = vec![self.self_presence()];
        v.extend(self.presence.borrow().values().cloned());
        v
    }

    /// The gateway's own entry, in OpenClaw's shape. `version` is the OpenClaw version we
    /// are wire-compatible with (as `hello-ok.server.version`): the CLI prints it as "app
    /// VERSION" (`gateway probe`, `status`' "Gateway self") and compares it with its own.
    /// shardgate's own version is in `shardgateVersion`.
    fn self_presence(&self) -> Value {
        let host = &self.shared.host;
        let ip = &self.config().gateway.host;
        let version = crate::protocol::OPENCLAW_COMPAT_VERSION;
        json!({
            "host": host, "ip": ip, "version": version,
            "shardgateVersion": env!("CARGO_PKG_VERSION"),
            "platform": self_platform(), "deviceFamily": "Linux", "mode": "gateway",
            "reason": "self", "instanceId": self.shared.instance_id,
            "text": format!("Gateway: {host} ({ip}) · app {version} · mode gateway · reason self"),
            "ts": self.shared.started_ms,
        })
    }

    /// `stateVersion` now.
    pub fn state_version(&self) -> Value {
        json!({"presence": self.presence_version.get(), "health": self.health_version.get()})
    }

    /// All connections on this shard (for tick and shutdown).
    pub fn all_conns(&self) -> Vec<Rc<Conn>> {
        self.conns.borrow().values().cloned().collect()
    }
}

/// `linux <kernel release>`, as OpenClaw's self presence names its platform; read once
/// (presence is rebuilt on every change).
fn self_platform() -> &'static str {
    static PLATFORM: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PLATFORM.get_or_init(|| {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        match release.trim() {
            "" => std::env::consts::OS.to_string(),
            r => format!("{} {r}", std::env::consts::OS),
        }
    })
}

/// Whether a connection appears in presence (the CLI's short calls do not, as in OpenClaw).
pub fn presence_visible(a: &ConnAuth) -> bool {
    !matches!(&*a.client.mode, "cli" | "probe" | "test") && !a.seed
}
