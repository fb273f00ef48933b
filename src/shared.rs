//! `Shared`: the process-wide state every shard reads (config, the paired-device store, the
//! per-IP limits, pairing, setup codes, TLS, the stop flag). Read-mostly; each table has its
//! own synchronisation and is touched per connection, never per frame.

use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::Arc;
use std::time::Instant;

use crate::auth::limits::PeerLimits;
use crate::auth::store::PairingStore;
use crate::config::Config;

/// Process-wide state shared by all shards (read-mostly or internally synchronized).
#[derive(Debug)]
pub struct Shared {
    /// The configuration (fixed for the process).
    pub config: Arc<Config>,
    /// Paired devices.
    pub store: PairingStore,
    /// The thread that writes the state files (paired devices, node approvals, setup codes)
    /// and its counters (`/metrics`, health).
    pub store_writer: crate::auth::store_writer::StoreWriter,
    /// Pre-auth limits per IP.
    pub limits: PeerLimits,
    /// Pending pairing requests and the TOTP replay guard.
    pub pairing: crate::auth::pairing::Pairing,
    /// Node pairing: pending `node.pair.request`s and approved command sets.
    pub node_pairing: crate::node::pairing::NodePairing,
    /// Setup codes: bootstrap tokens (hashed) and join codes.
    pub bootstrap: crate::auth::bootstrap::Bootstrap,
    /// The address the gateway listens on (the port resolved when 0 was asked for).
    pub listen: std::net::SocketAddr,
    /// IP allowlist, connections per IP, origins, network classes.
    pub access: crate::auth::access::Access,
    /// TLS acceptor state (when `gateway.tls.enabled`), reloaded on rotation.
    pub tls: Option<crate::transport::tls::TlsState>,
    /// Process start.
    pub started: Instant,
    /// Process start, ms since epoch.
    pub started_ms: i64,
    /// Process start on [`shards::clock::monotonic_us`] (the origin of [`Shared::mono_us`]).
    pub started_us: u64,
    /// Number of shards.
    pub shards: usize,
    /// Set by SIGTERM/SIGINT (in the signal handler).
    pub shutdown: Arc<AtomicBool>,
    /// Wakes the shards waiting for `shutdown` ([`StopWaiters::wait`]) once it is set.
    pub stop_waiters: StopWaiters,
    /// Shards that finished draining their runs.
    pub drained: AtomicUsize,
    /// This gateway instance's id (presence "self").
    pub instance_id: String,
    /// The bound port.
    pub port: std::sync::atomic::AtomicU16,
    /// Credits under `queue.maxSize` taken by the shards ([`crate::queue::state::Credits`]):
    /// at least the messages admitted and not finished, never more than `maxSize`.
    pub queued: AtomicUsize,
    /// Host name for presence.
    pub host: String,
    /// Set while over the memory cap: new connections and runs are refused.
    pub shedding: AtomicBool,
    /// The cluster's slot ownership view (`gateway.clustering.enabled`), written by the
    /// cluster driver on shard 0 and read by every shard per session request.
    pub cluster: Option<Arc<crate::cluster::Ownership>>,
    /// The gateway's own Ed25519 identity (`gateway.identity.get`), kept in the state dir.
    pub identity: crate::auth::identity::GatewayIdentity,
}

/// The shards' wakers waiting for the shutdown flag: the thread that sees the signal wakes
/// them ([`StopWaiters::wake_all`]), so a shard does not poll the flag on a timer (a wake-up
/// every 50 ms per shard, and with the default spin before sleeping, 50 µs of polling each).
#[derive(Debug, Default)]
#[expect(
    clippy::disallowed_types,
    reason = "the signal thread, outside the pool, hands the shards their wake-up; locked once per waiter and once at shutdown"
)]
pub struct StopWaiters(std::sync::Mutex<Vec<std::task::Waker>>);

impl StopWaiters {
    /// Completes once `flag` is set and [`StopWaiters::wake_all`] has run after it (or at
    /// once if it is set already).
    pub fn wait<'a>(&'a self, flag: &'a AtomicBool) -> impl std::future::Future<Output = ()> + 'a {
        std::future::poll_fn(move |cx| {
            let set = || flag.load(std::sync::atomic::Ordering::SeqCst);
            if set() {
                return std::task::Poll::Ready(());
            }
            let mut waiters = self.0.lock().unwrap_or_else(|e| e.into_inner());
            if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
                waiters.push(cx.waker().clone());
            }
            // Checked again under the lock: `wake_all` takes it after the flag is set, so a
            // flag set after the first check is seen here or wakes this waker.
            if set() {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        })
    }

    /// Wakes every waiter (the flag was set before).
    pub fn wake_all(&self) {
        let waiters = std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()));
        for w in waiters {
            w.wake();
        }
    }
}

impl Shared {
    /// Milliseconds since the process started.
    pub fn uptime_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// A monotonic clock shared by every shard, microseconds since start.
    pub fn mono_us(&self) -> u64 {
        shards::clock::monotonic_us().saturating_sub(self.started_us)
    }
}
