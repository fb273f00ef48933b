//! The cluster driver: one task on shard 0 with its own Redis connection, ticking every
//! electionTimeout/6. Each tick is one pipelined round — renew the held leases, write the
//! heartbeat (and read the live members), read every slot's lease holder — then the
//! [`Planner`]'s decisions: acquire (one script), drain then release.
//!
//! Beside the tick loop, in the same task, a watchdog wakes at the planner's deadline and
//! gives every slot up when it passes, whatever the loop is waiting for (a Redis call that
//! hangs cannot keep a member serving past its lease).
//!
//! Host callbacks ([`ClusterHost`]) are called on shard 0, after the [`Ownership`] view was
//! updated: `gained` after the view says `Mine`, `lost` after it no longer does. Every
//! `gained(slot)` is followed by exactly one `lost(slot)` (also after a voluntary release and
//! on leave), so the host can keep per-slot state balanced.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_channel::{mpsc, oneshot};
use futures_lite::{future, StreamExt};
use glommio::timer::Timer;
use shardgate_redis::{Client, Error, Options};

use super::host::ClusterHost;
use super::lease::{ClusterKeys, Leases};
use super::ownership::{Ownership, SlotOwner};
use super::planner::{Local, Planner, Timing};
use crate::clock::now_ms;
use crate::config::{parse_redis_url, Config};

/// Ticks per electionTimeout: a lease is renewed about this many times per TTL, so one or
/// two lost rounds do not lose it.
pub const TICKS_PER_TTL: u64 = 6;

enum Msg {
    /// The host finished draining a slot (or its drain timed out).
    Drained(u32),
    /// Leave gracefully; answer when done.
    Leave(oneshot::Sender<()>),
}

/// The running driver. Dropping it leaves the driver running; call [`ClusterHandle::leave`]
/// at shutdown.
#[derive(Debug)]
pub struct ClusterHandle {
    tx: mpsc::UnboundedSender<Msg>,
    task: glommio::task::JoinHandle<()>,
    ownership: Arc<Ownership>,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Msg::Drained(s) => write!(f, "Drained({s})"),
            Msg::Leave(_) => f.write_str("Leave"),
        }
    }
}

impl ClusterHandle {
    /// The ownership view the driver writes.
    pub fn ownership(&self) -> &Arc<Ownership> {
        &self.ownership
    }

    /// Leaves the cluster gracefully (SIGTERM): the heartbeat goes at once (the others stop
    /// counting this member), every held slot is drained and released (the others take them
    /// at their next tick, without waiting for the TTL), then the driver stops. Bounded by
    /// two electionTimeouts; if Redis is unreachable the leases simply expire.
    pub async fn leave(self) {
        let (done, wait) = oneshot::channel();
        if self.tx.unbounded_send(Msg::Leave(done)).is_ok() {
            let _ = wait.await;
        }
        let _ = self.task.await;
    }

    /// Stops the driver at once without telling Redis or the host anything: its heartbeat
    /// and leases expire by their TTL, as after `kill -9` (tests; a process dying on a
    /// fatal error). The view keeps its last state.
    pub fn abandon(self) {
        self.task.cancel();
    }
}

/// The driver's Redis options: the queue's Redis (`queue.redis.url`), fail fast while down
/// (the watchdog, not a waiting call, decides when to stop serving), each call bounded by a
/// third of the TTL, reconnects at least once per tick.
pub fn options(cfg: &Config) -> Result<Options, String> {
    let r = &cfg.queue.redis;
    let url = r.url.as_deref().ok_or("queue.redis.url is not set")?;
    let t = parse_redis_url(url).map_err(|e| format!("queue.redis.url: {e}"))?;
    let ttl = cfg.gateway.clustering.election_timeout.duration();
    let mut o = Options::new(t.addr);
    o.username = t.username;
    o.password = t.password;
    o.client_name = Some("shardgate-cluster".into());
    o.fail_fast = true;
    o.command_timeout = r.command_timeout.duration().min(ttl / 3);
    o.connect_timeout = o.connect_timeout.min(ttl / 3);
    o.reconnect_max = o.reconnect_max.min(ttl / TICKS_PER_TTL as u32);
    Ok(o)
}

/// Starts the driver for member `me` on the current executor (shard 0). `ownership` must be
/// made for `me` and `queue.redis.slots`; `host` is told about gained and lost slots.
pub fn start(
    cfg: &Config,
    me: &str,
    ownership: Arc<Ownership>,
    host: Rc<dyn ClusterHost>,
) -> Result<ClusterHandle, String> {
    let c = &cfg.gateway.clustering;
    if !c.enabled {
        return Err("gateway.clustering.enabled is false".into());
    }
    if ownership.me() != me {
        return Err(format!(
            "the ownership view is for {:?}, not {me:?}",
            ownership.me()
        ));
    }
    let slots = cfg.queue.redis.slots;
    if ownership.slots() != slots {
        return Err(format!(
            "the ownership view has {} slots, queue.redis.slots is {slots}",
            ownership.slots()
        ));
    }
    let ttl_ms = c.election_timeout.0;
    let client = Client::new(options(cfg)?);
    let keys = ClusterKeys::new(&cfg.queue.redis.key_prefix, slots);
    let (tx, rx) = mpsc::unbounded();
    let driver = Rc::new(Driver {
        leases: Leases::new(client, keys, me, ttl_ms),
        planner: RefCell::new(Planner::new(me, slots, Timing::from_ttl(ttl_ms))),
        ownership: ownership.clone(),
        host,
        base: Instant::now(),
        tick: Duration::from_millis((ttl_ms / TICKS_PER_TTL).max(1)),
        ttl: Duration::from_millis(ttl_ms),
        started_wall: now_ms(),
        tx: tx.clone(),
    });
    let task = glommio::spawn_local(async move {
        let watchdog = driver.clone().watchdog();
        future::or(driver.clone().run(rx), watchdog).await;
        driver.leases.client.close();
    })
    .detach();
    Ok(ClusterHandle {
        tx,
        task,
        ownership,
    })
}

/// The driver's state, shared by its tick loop, its watchdog and its drain tasks (all on one
/// executor; no `RefCell` borrow is held across an await).
struct Driver {
    leases: Leases,
    planner: RefCell<Planner>,
    ownership: Arc<Ownership>,
    host: Rc<dyn ClusterHost>,
    /// The zero of the planner's monotonic milliseconds.
    base: Instant,
    tick: Duration,
    ttl: Duration,
    started_wall: i64,
    tx: mpsc::UnboundedSender<Msg>,
}

impl Driver {
    fn ms(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.base).as_millis() as u64
    }

    fn now(&self) -> u64 {
        self.ms(Instant::now())
    }

    /// Waits until monotonic ms `at`.
    async fn sleep_until(&self, at: u64) {
        let now = self.now();
        if at > now {
            Timer::new(Duration::from_millis(at - now)).await;
        }
    }

    fn error(&self, e: &Error) {
        self.ownership.redis_errors.fetch_add(1, Ordering::Relaxed);
        let text = e.to_string();
        tracing::debug!(error = %text, "cluster: redis call failed");
        self.ownership
            .with_health(|h| h.last_error = Some(text.clone()));
    }

    /// Slots no longer served (lease lost, taken, or the deadline passed).
    fn give_up(&self, slots: &[u32], why: &str) {
        if slots.is_empty() {
            return;
        }
        tracing::warn!(slots = ?slots, why, "cluster: stopped serving slots");
        for &s in slots {
            self.ownership.set(s, SlotOwner::Unknown);
            self.ownership.lost_total.fetch_add(1, Ordering::Relaxed);
            self.host.lost(s);
        }
    }

    /// Gives every slot up when the planner's deadline has passed.
    fn expire(&self) {
        let lost = self.planner.borrow_mut().expire(self.now());
        self.give_up(&lost, "lease renewal deadline passed");
    }

    /// Wakes at the deadline (at least once per tick, as a renewal may have set the first
    /// one) and expires.
    async fn watchdog(self: Rc<Self>) {
        loop {
            let next = self.now() + self.tick.as_millis() as u64;
            let at = self
                .planner
                .borrow()
                .deadline()
                .map_or(next, |d| d.min(next));
            self.sleep_until(at).await;
            self.expire();
        }
    }

    async fn run(self: Rc<Self>, mut rx: mpsc::UnboundedReceiver<Msg>) {
        // The first round waits for the connection (up to a tick) rather than failing fast
        // and losing a tick at start.
        let _ = self.leases.client.wait_connected(self.tick).await;
        let mut next_tick = self.now();
        let mut leaving: Option<(oneshot::Sender<()>, u64)> = None;
        loop {
            if let Some((_, by)) = &leaving {
                let done = self.planner.borrow().holds_nothing();
                if done || self.now() >= *by {
                    // Redis unreachable while leaving: stop serving; the leases expire.
                    let lost = self.planner.borrow_mut().expire(u64::MAX);
                    self.give_up(&lost, "left the cluster");
                    self.ownership.with_health(|h| {
                        h.left = true;
                        h.live.clear();
                    });
                    if let Some((done, _)) = leaving.take() {
                        let _ = done.send(());
                    }
                    return;
                }
            }
            let wait = async {
                self.sleep_until(next_tick).await;
                None
            };
            match future::or(wait, async { Some(rx.next().await) }).await {
                None => {}
                Some(Some(Msg::Drained(slot))) => {
                    self.release(slot).await;
                    continue;
                }
                Some(Some(Msg::Leave(done))) => {
                    self.planner.borrow_mut().leave();
                    if let Err(e) = self.leases.leave().await {
                        self.error(&e);
                    }
                    let by = self.now() + 2 * self.ttl.as_millis() as u64;
                    leaving = Some((done, by));
                    next_tick = self.now();
                    continue;
                }
                // Cannot happen: the driver holds a sender itself.
                Some(None) => return,
            }
            if self.now() >= next_tick {
                let t0 = Instant::now();
                next_tick = self.ms(t0) + self.tick.as_millis() as u64;
                if let Some(early) = self.round(t0).await {
                    next_tick = next_tick.min(early);
                }
            }
        }
    }

    /// One tick: renew + heartbeat + holders in one pipelined round, then acquire and drain.
    /// Returns when to run the next round early (a dead member's lease expires then).
    async fn round(self: &Rc<Self>, t0: Instant) -> Option<u64> {
        let started = self.ms(t0);
        let asked = self.planner.borrow().held();
        let leaving = self.planner.borrow().leaving();
        let heartbeat = serde_json::json!({
            "id": self.planner.borrow().me(),
            "started": self.started_wall,
            "slots": self.leases.keys.slots(),
            "held": asked.len(),
        })
        .to_string();
        let renew = self.leases.renew(&asked);
        let members = async {
            if leaving {
                let ids = self.leases.members().await?;
                Ok(ids.into_iter().map(|m| (m, None)).collect())
            } else {
                self.leases.heartbeat(&heartbeat).await
            }
        };
        let holders = self.leases.holders();
        let (renewed, (members, holders)) = future::zip(renew, future::zip(members, holders)).await;
        let rtt = t0.elapsed();
        match renewed {
            Ok(still) => {
                let lost = self.planner.borrow_mut().renewed(started, &asked, &still);
                self.give_up(&lost, "lease no longer ours");
                self.ownership.with_health(|h| {
                    h.rtt_us = rtt.as_micros() as u64;
                    if !asked.is_empty() {
                        h.last_renew = Some(t0);
                    }
                });
            }
            Err(e) => {
                if !asked.is_empty() {
                    self.ownership
                        .renew_failures
                        .fetch_add(1, Ordering::Relaxed);
                }
                self.error(&e);
            }
        }
        let (members, holders): (Vec<(String, Option<u64>)>, _) = match (members, holders) {
            (Ok(l), Ok(h)) => (l, h),
            (Err(e), _) | (_, Err(e)) => {
                self.error(&e);
                return None;
            }
        };
        // A member whose heartbeat ends before our next tick stopped renewing it (a live one
        // renews every tick): look again right after, so its slots move about one
        // electionTimeout after it died rather than up to a tick later.
        let now = self.now();
        let gone_at = members
            .iter()
            .filter(|(m, _)| m != self.ownership.me())
            .filter_map(|(_, left)| left.map(|l| now + l + 1))
            .min();
        let live: Vec<String> = members.into_iter().map(|(m, _)| m).collect();
        self.ownership.with_health(|h| h.live = live.clone());
        self.show_others(&holders);
        let plan = self.planner.borrow_mut().plan(&live, &holders);
        for &slot in &plan.drain {
            self.drain(slot);
        }
        let early = match (self.expiry_of(&plan.expiring).await, gone_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if plan.acquire.is_empty() {
            return early;
        }
        let t_acq = Instant::now();
        match self.leases.acquire(&plan.acquire).await {
            Ok(got) => {
                // Before the first renew round, the acquisition is what set the TTL.
                if !got.is_empty() {
                    self.ownership.with_health(|h| {
                        h.last_renew.get_or_insert(t_acq);
                    });
                }
                for (slot, epoch) in got {
                    if self.planner.borrow().slot(slot) != Local::Free {
                        continue;
                    }
                    self.planner
                        .borrow_mut()
                        .acquired(slot, epoch, self.ms(t_acq));
                    self.ownership.set(slot, SlotOwner::Mine { epoch });
                    self.ownership.gained_total.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(slot, epoch, "cluster: slot gained");
                    self.host.gained(slot, epoch);
                }
            }
            Err(e) => self.error(&e),
        }
        early
    }

    /// When the first of `slots`' leases expires (monotonic ms, a little after), to take it
    /// then rather than at the next tick: a crashed member's slots move within about one
    /// electionTimeout instead of one electionTimeout plus a tick.
    async fn expiry_of(&self, slots: &[u32]) -> Option<u64> {
        if slots.is_empty() {
            return None;
        }
        match self.leases.pttl(slots).await {
            Ok(left) => left
                .into_iter()
                .map(|t| self.now() + t.unwrap_or(0) + 1)
                .min(),
            Err(e) => {
                self.error(&e);
                None
            }
        }
    }

    /// The view of slots this member does not hold: their lease holder, or unknown.
    fn show_others(&self, holders: &[Option<String>]) {
        let me = self.ownership.me();
        for (slot, holder) in holders.iter().enumerate() {
            let slot = slot as u32;
            if self.planner.borrow().slot(slot) != Local::Free {
                continue;
            }
            let o = match holder {
                Some(h) if h != me => self
                    .ownership
                    .intern(h)
                    .map_or(SlotOwner::Unknown, SlotOwner::Member),
                _ => SlotOwner::Unknown,
            };
            self.ownership.set(slot, o);
        }
    }

    /// Starts draining `slot` (the planner made it `Draining`): the view says `Releasing`
    /// and the host's drain runs in its own task, bounded by one electionTimeout, so
    /// renewals go on meanwhile.
    fn drain(&self, slot: u32) {
        let Local::Draining { epoch, .. } = self.planner.borrow().slot(slot) else {
            return;
        };
        self.ownership.set(slot, SlotOwner::Releasing { epoch });
        tracing::info!(slot, epoch, "cluster: draining slot before release");
        let work = self.host.drain(slot);
        let ttl = self.ttl;
        let tx = self.tx.clone();
        glommio::spawn_local(async move {
            future::or(work, async {
                Timer::new(ttl).await;
            })
            .await;
            let _ = tx.unbounded_send(Msg::Drained(slot));
        })
        .detach();
    }

    /// `slot` is drained: stop serving it, then delete its lease so its next owner takes it
    /// at once. If the delete fails, the lease expires by its TTL (nobody renews it).
    async fn release(&self, slot: u32) {
        if self.planner.borrow_mut().drained(slot).is_none() {
            return; // lost while draining: already reported
        }
        self.ownership.set(slot, SlotOwner::Unknown);
        self.host.lost(slot);
        tracing::info!(slot, "cluster: slot released");
        if let Err(e) = self.leases.release(&[slot]).await {
            self.error(&e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_bound_calls_by_a_third_of_the_ttl() {
        let cfg = Config::from_json5(
            "{gateway: {clustering: {enabled: true, electionTimeout: '3s'}}, \
             queue: {backend: 'redis', redis: {url: 'redis://u:pw@127.0.0.1:6390', commandTimeout: '5s'}}}",
            std::path::Path::new("t.json5"),
        )
        .unwrap()
        .config;
        let o = options(&cfg).unwrap();
        assert_eq!(o.command_timeout, Duration::from_secs(1));
        assert!(o.fail_fast);
        assert_eq!(o.reconnect_max, Duration::from_millis(500));
        assert_eq!(o.password.as_deref(), Some("pw"));
    }
}
