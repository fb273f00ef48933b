//! The Redis queue backend (`queue.backend: "redis"`): the delivery core's [`Record`]s kept
//! in Redis streams, shaped for a cluster of gateways. A single gateway owns every slot; in a
//! cluster ([`crate::cluster`]) a gateway serves a slot only under its lease, after reading
//! it back (`crate::queue::takeover`), and every script checks the slot's fencing epoch so a
//! paused old owner can never write.
//!
//! Layout ([`keys`]): a session key hashes to one of `queue.redis.slots` slots; each slot has
//! a work stream of admissions (`{prefix}:q:{slot}`), a dead-letter stream trimmed by age,
//! and a hash of final answers kept for the dedup window. Every change is one Lua script
//! (`*.lua`, next to this file), so a crash between two commands cannot leave half a change.
//!
//! Invariants:
//! - An admission resolves `Ok` only once Redis answered the admission script: with
//!   `appendfsync always` the entry is on disk, so nothing acknowledged is missing from Redis.
//! - A work stream is never trimmed by length: an entry leaves it only when its run completed
//!   or was dead-lettered.
//! - While Redis is unreachable (or before this shard has read its slots back), admissions
//!   fail (every failure here is transient) and the client is told to retry; the
//!   link reconnects by itself.
//!
//! One backend per shard, created on the shard's executor (the client is `!Send`). Each shard
//! reads back only the sessions it owns ([`RedisQueue::read_back`]).

pub mod keys;
mod read_back;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use serde_json::{json, Value};
use shardgate_redis::{Client, Options, Script, Value as RValue};

use crate::clock::now_ms;
use crate::config::{parse_redis_url, Config};
use crate::delivery::record::{Fold, Record};
use keys::Keys;

/// The scripts, each loaded once per connection on first use (`EVALSHA`, `NOSCRIPT` → load).
struct Scripts {
    admit: Script,
    complete: Script,
    dead: Script,
    redrive: Script,
}

impl Scripts {
    fn new() -> Scripts {
        Scripts {
            admit: Script::new(include_str!("admit.lua")),
            complete: Script::new(include_str!("complete.lua")),
            dead: Script::new(include_str!("dead.lua")),
            redrive: Script::new(include_str!("redrive.lua")),
        }
    }
}

/// What to answer while Redis is unreachable: retry after this long (the client's reconnect
/// backoff is capped at 2 s, so a retry after 1 s usually finds it back).
pub const RETRY_AFTER_MS: u64 = 1_000;

/// One shard's Redis queue backend.
pub struct RedisQueue {
    client: Client,
    keys: Keys,
    scripts: Scripts,
    /// Fencing epoch of each slot as this gateway knows it (read at start).
    epochs: RefCell<Vec<i64>>,
    /// This shard has read its slots back: before that, admissions are refused (a resend
    /// must meet the replayed dedup entry, not start a second run).
    ready: Cell<bool>,
    /// Per slot: this shard serves it (read back, and in a cluster, under this gateway's
    /// lease). Admissions to a slot not served are refused as transient.
    served: RefCell<Vec<bool>>,
    /// Per slot: admissions written and not yet finished (what a handover waits for).
    in_flight: RefCell<Vec<u32>>,
    /// runId → (slot, session key) of runs this shard wrote (outcomes carry only the runId).
    runs: RefCell<HashMap<String, (u32, String)>>,
    dedup_window_ms: i64,
    dead_max_age_ms: i64,
    appended: Cell<u64>,
    duplicates: Cell<u64>,
    append_failed: Cell<u64>,
    write_failed: Cell<u64>,
    read_back: Cell<u64>,
}

impl std::fmt::Debug for RedisQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisQueue")
            .field("addr", &self.client.options().addr)
            .field("ready", &self.ready.get())
            .finish_non_exhaustive()
    }
}

/// Redis client options from the config (`queue.redis`), named after the shard.
pub fn options(cfg: &Config, shard: usize) -> Result<Options, String> {
    let r = &cfg.queue.redis;
    let url = r.url.as_deref().ok_or("queue.redis.url is not set")?;
    let t = parse_redis_url(url).map_err(|e| format!("queue.redis.url: {e}"))?;
    let mut o = Options::new(t.addr);
    o.username = t.username;
    o.password = t.password;
    o.client_name = Some(format!("shardgate-shard-{shard}"));
    o.command_timeout = r.command_timeout.duration();
    // Answer UNAVAILABLE at once while down rather than hold the caller for the timeout.
    o.fail_fast = true;
    Ok(o)
}

impl RedisQueue {
    /// A backend for shard `shard`; starts connecting in the background. Call on the shard's
    /// executor.
    pub fn new(cfg: &Config, shard: usize) -> Result<Rc<RedisQueue>, String> {
        let opts = options(cfg, shard)?;
        let r = &cfg.queue.redis;
        Ok(Rc::new(RedisQueue {
            client: Client::new(opts),
            keys: Keys::new(&r.key_prefix, r.slots),
            scripts: Scripts::new(),
            epochs: RefCell::new(vec![0; r.slots as usize]),
            ready: Cell::new(false),
            served: RefCell::new(vec![false; r.slots.max(1) as usize]),
            in_flight: RefCell::new(vec![0; r.slots.max(1) as usize]),
            runs: RefCell::default(),
            dedup_window_ms: cfg.deduplication.window.0 as i64,
            dead_max_age_ms: cfg.queue.dead_letter.max_age.0 as i64,
            appended: Cell::new(0),
            duplicates: Cell::new(0),
            append_failed: Cell::new(0),
            write_failed: Cell::new(0),
            read_back: Cell::new(0),
        }))
    }

    /// The client (for its stats and reachability).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// True once this shard's slots are read back and admissions are taken.
    pub fn is_ready(&self) -> bool {
        self.ready.get()
    }

    /// Admissions are taken from now on, for every slot (a single gateway owns them all).
    pub fn set_ready(&self) {
        self.ready.set(true);
        self.served.borrow_mut().fill(true);
    }

    /// Serves `slot` under fencing `epoch` (a cluster lease): its records were read back.
    pub fn serve(&self, slot: u32, epoch: u64) {
        if let Some(e) = self.epochs.borrow_mut().get_mut(slot as usize) {
            *e = epoch as i64;
        }
        if let Some(s) = self.served.borrow_mut().get_mut(slot as usize) {
            *s = true;
        }
        self.ready.set(true);
    }

    /// Stops admitting to `slot` (its lease is being handed over or was lost).
    pub fn stop_serving(&self, slot: u32) {
        if let Some(s) = self.served.borrow_mut().get_mut(slot as usize) {
            *s = false;
        }
    }

    /// Admissions of `slot` written here and not finished.
    pub fn in_flight(&self, slot: u32) -> u32 {
        self.in_flight
            .borrow()
            .get(slot as usize)
            .copied()
            .unwrap_or(0)
    }

    /// Slots this shard serves.
    pub fn served_slots(&self) -> usize {
        self.served.borrow().iter().filter(|s| **s).count()
    }

    /// The slot of a session key.
    pub fn slot_of(&self, session_key: &str) -> u32 {
        self.keys.slot(session_key)
    }

    fn track(&self, id: &str, slot: u32, session: &str) {
        let new = self
            .runs
            .borrow_mut()
            .insert(id.to_string(), (slot, session.to_string()))
            .is_none();
        if new {
            if let Some(n) = self.in_flight.borrow_mut().get_mut(slot as usize) {
                *n += 1;
            }
        }
    }

    fn finished(&self, slot: u32) {
        if let Some(n) = self.in_flight.borrow_mut().get_mut(slot as usize) {
            *n = n.saturating_sub(1);
        }
    }

    fn epoch(&self, slot: u32) -> String {
        self.epochs
            .borrow()
            .get(slot as usize)
            .copied()
            .unwrap_or(0)
            .to_string()
    }

    /// Loads the scripts up front, so the first writes do not each pay a NOSCRIPT round trip
    /// (and keep their order: a NOSCRIPT retry lets a later write of another script go first).
    pub async fn load_scripts(&self) -> Result<(), shardgate_redis::Error> {
        for sc in [
            &self.scripts.admit,
            &self.scripts.complete,
            &self.scripts.dead,
            &self.scripts.redrive,
        ] {
            self.client
                .call(&[b"SCRIPT", b"LOAD", sc.source().as_bytes()])
                .await?;
        }
        Ok(())
    }

    /// Reads every slot back and folds the records of the sessions `mine` accepts (this
    /// shard's), in admission order: work entries (pending), dead letters, kept answers.
    /// Also reads the slots' epochs. (A single gateway: it owns every slot.)
    pub async fn read_back(
        &self,
        mine: impl Fn(&str) -> bool,
    ) -> Result<Fold, shardgate_redis::Error> {
        self.load_scripts().await?;
        let mut epochs = Vec::with_capacity(self.keys.slots as usize);
        for slot in 0..self.keys.slots {
            let e = self
                .client
                .call(&[b"GET", self.keys.epoch(slot).as_bytes()])
                .await?;
            epochs.push(e.as_int().unwrap_or(0));
        }
        *self.epochs.borrow_mut() = epochs;
        let mut fold = Fold::default();
        for slot in 0..self.keys.slots {
            self.read_slot(slot, &mine, &mut fold).await?;
        }
        self.read_back.set(fold.records);
        Ok(fold)
    }

    /// Folds `slot`'s records of the sessions `mine` accepts into `fold` (see
    /// [`read_back::read_slot`]) and tracks its unfinished runs. A gateway that gains the
    /// slot's lease reads it this way before serving it.
    pub async fn read_slot(
        &self,
        slot: u32,
        mine: &impl Fn(&str) -> bool,
        fold: &mut Fold,
    ) -> Result<(), shardgate_redis::Error> {
        let before = fold.records;
        for r in read_back::read_slot(&self.client, &self.keys, slot, mine, fold).await? {
            if r.pending {
                self.track(&r.id, slot, &r.session);
            } else {
                self.runs.borrow_mut().insert(r.id, (slot, r.session));
            }
        }
        self.read_back
            .set(self.read_back.get() + fold.records - before);
        Ok(())
    }

    /// Appends an admission and resolves once Redis has it. Every error is transient:
    /// Redis unreachable or slow, or this shard not read back yet.
    pub async fn admit(&self, r: &Record) -> Result<(), String> {
        let Record::Acc { id, k, s, .. } = r else {
            return Err("only admissions are awaited".into());
        };
        let slot = self.keys.slot(s);
        if !self
            .served
            .borrow()
            .get(slot as usize)
            .copied()
            .unwrap_or(false)
        {
            self.append_failed.set(self.append_failed.get() + 1);
            return Err("the session's slot is not served here yet".into());
        }
        let json = serde_json::to_string(r).unwrap_or_default();
        let (work, ids, dd, epoch_key) = (
            self.keys.work(slot),
            self.keys.ids(slot),
            self.keys.dedup(slot, k),
            self.keys.epoch(slot),
        );
        let (epoch, window) = (self.epoch(slot), self.dedup_window_ms.max(1).to_string());
        let res = self
            .client
            .eval(
                &self.scripts.admit,
                &[
                    work.as_bytes(),
                    ids.as_bytes(),
                    dd.as_bytes(),
                    epoch_key.as_bytes(),
                ],
                &[
                    epoch.as_bytes(),
                    id.as_bytes(),
                    json.as_bytes(),
                    window.as_bytes(),
                ],
            )
            .await;
        match res {
            Ok(v) => {
                let added = v
                    .as_array()
                    .and_then(|a| a.first())
                    .and_then(RValue::as_int)
                    == Some(1);
                if added {
                    self.appended.set(self.appended.get() + 1);
                } else {
                    self.duplicates.set(self.duplicates.get() + 1);
                }
                self.track(id, slot, s);
                Ok(())
            }
            Err(e) => {
                self.append_failed.set(self.append_failed.get() + 1);
                Err(format!("redis: {e}"))
            }
        }
    }

    /// Writes an outcome (or a re-admission) without waiting: lost if Redis is down, which
    /// only makes a finished message run again after a restart (the backend contract).
    pub fn write(self: &Rc<Self>, r: &Record) -> bool {
        let this = self.clone();
        let r = r.clone();
        glommio::spawn_local(async move {
            if let Err(e) = this.write_now(&r).await {
                this.write_failed.set(this.write_failed.get() + 1);
                tracing::warn!(
                    "redis queue: write failed (the run may run again after a restart): {e}"
                );
            }
        })
        .detach();
        true
    }

    async fn write_now(&self, r: &Record) -> Result<(), shardgate_redis::Error> {
        let now = now_ms();
        match r {
            Record::Acc { id, .. } => {
                // A replayed job written again: its entry is there already.
                if self.runs.borrow().contains_key(id) {
                    return Ok(());
                }
                self.admit(r)
                    .await
                    .map_err(shardgate_redis::Error::UnexpectedReply)
            }
            Record::Done { id, .. } => {
                let Some((slot, s)) = self.runs.borrow_mut().remove(id) else {
                    return Ok(());
                };
                self.finished(slot);
                let val = json!({"s": s, "r": r}).to_string();
                let k = &self.keys;
                let (work, ids, res, rx, ep) = (
                    k.work(slot),
                    k.ids(slot),
                    k.results(slot),
                    k.results_expiry(slot),
                    k.epoch(slot),
                );
                let (epoch, now, ttl) = (
                    self.epoch(slot),
                    now.to_string(),
                    self.dedup_window_ms.max(1).to_string(),
                );
                self.client
                    .eval(
                        &self.scripts.complete,
                        &[
                            work.as_bytes(),
                            ids.as_bytes(),
                            res.as_bytes(),
                            rx.as_bytes(),
                            ep.as_bytes(),
                        ],
                        &[
                            epoch.as_bytes(),
                            id.as_bytes(),
                            val.as_bytes(),
                            now.as_bytes(),
                            ttl.as_bytes(),
                        ],
                    )
                    .await
                    .map(drop)
            }
            Record::Dead { id, .. } => {
                let Some((slot, _)) = self.runs.borrow().get(id).cloned() else {
                    return Ok(());
                };
                self.finished(slot);
                let json = serde_json::to_string(r).unwrap_or_default();
                let keys = self.keys.dead_letter_keys(slot);
                let (epoch, minid) = (
                    self.epoch(slot),
                    (now - self.dead_max_age_ms).max(0).to_string(),
                );
                self.client
                    .eval(
                        &self.scripts.dead,
                        &keys.each_ref().map(|k| k.as_bytes()),
                        &[
                            epoch.as_bytes(),
                            id.as_bytes(),
                            json.as_bytes(),
                            minid.as_bytes(),
                        ],
                    )
                    .await
                    .map(drop)
            }
            Record::Redrive { id, .. } | Record::Purge { id } => {
                let mode: &[u8] = if matches!(r, Record::Redrive { .. }) {
                    b"redrive"
                } else {
                    b"purge"
                };
                let found = if mode == b"purge" {
                    self.runs.borrow_mut().remove(id)
                } else {
                    self.runs.borrow().get(id).cloned()
                };
                let Some((slot, _)) = found else {
                    return Ok(());
                };
                if mode == b"redrive" {
                    // Running again: a handover waits for it as for any admission.
                    if let Some(n) = self.in_flight.borrow_mut().get_mut(slot as usize) {
                        *n += 1;
                    }
                }
                let keys = self.keys.dead_letter_keys(slot);
                let epoch = self.epoch(slot);
                self.client
                    .eval(
                        &self.scripts.redrive,
                        &keys.each_ref().map(|k| k.as_bytes()),
                        &[epoch.as_bytes(), id.as_bytes(), mode],
                    )
                    .await
                    .map(drop)
            }
        }
    }

    /// Counters for `queue.stats` (and, summed, `/metrics`).
    pub fn stats_json(&self) -> Value {
        let s = self.client.stats();
        json!({
            "connected": self.client.is_connected(),
            "ready": self.ready.get(),
            "servedSlots": self.served_slots(),
            "slots": self.keys.slots,
            "appended": self.appended.get(),
            "duplicates": self.duplicates.get(),
            "appendFailed": self.append_failed.get(),
            "writeFailed": self.write_failed.get(),
            "readBack": self.read_back.get(),
            "commands": s.commands,
            "errors": s.errors,
            "timeouts": s.timeouts,
            "disconnected": s.disconnected,
            "reconnects": s.reconnects,
            "replies": s.replies,
            "rttSumUs": s.rtt_sum.as_micros() as u64,
        })
    }
}
