//! Cluster drivers against a real redis-server (`RedisServer`: a private port and directory,
//! `appendfsync always`): three, then four members, each on its own glommio executor thread
//! with its own Redis connection, as three gateway processes would be. The host callbacks are
//! recorded with their instants; every wait is on a condition with a deadline.
//!
//! A safety monitor samples every member's ownership view all along and fails the test if
//! two members ever serve one slot, or if a new holder's epoch is not above the last one.
//!
//! Run with `--nocapture` to see the measured times (convergence, failover, handover).
#![expect(
    clippy::disallowed_types,
    reason = "the recorder and the monitor are shared between executor threads and the test"
)]

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_channel::mpsc;
use futures_lite::StreamExt;
use glommio::timer::Timer;
use glommio::{ExecutorJoinHandle, LocalExecutorBuilder};
use shardgate::cluster::{self, rendezvous, ClusterHost, Ownership, SlotOwner};
use shardgate::config::Config;
use shardgate_redis::test_server::RedisServer;

const SLOTS: u32 = 64;
const TTL: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Gained(u64),
    Drain,
    Lost,
}

#[derive(Debug, Clone, Copy)]
struct Ev {
    slot: u32,
    kind: Kind,
    at: Instant,
}

type Events = Arc<Mutex<Vec<Ev>>>;

/// The views the monitor watches, by member id.
type Views = Arc<Mutex<Vec<(String, Arc<Ownership>)>>>;

/// The host of one member: records every callback; a drain takes 20 ms (in-flight work).
struct Recorder(Events);

impl Recorder {
    fn push(&self, slot: u32, kind: Kind) {
        self.0.lock().unwrap().push(Ev {
            slot,
            kind,
            at: Instant::now(),
        });
    }
}

impl ClusterHost for Recorder {
    fn gained(&self, slot: u32, epoch: u64) {
        self.push(slot, Kind::Gained(epoch));
    }
    fn lost(&self, slot: u32) {
        self.push(slot, Kind::Lost);
    }
    fn drain(&self, slot: u32) -> Pin<Box<dyn Future<Output = ()>>> {
        self.push(slot, Kind::Drain);
        Box::pin(async {
            Timer::new(Duration::from_millis(20)).await;
        })
    }
}

enum Ctl {
    Leave,
    Abandon,
}

/// One member: a driver on its own executor thread.
struct Member {
    id: String,
    view: Arc<Ownership>,
    events: Events,
    ctl: mpsc::UnboundedSender<Ctl>,
    thread: Option<ExecutorJoinHandle<()>>,
}

fn config(redis: &RedisServer) -> Config {
    let text = format!(
        "{{gateway: {{clustering: {{enabled: true, electionTimeout: '{}ms', nodes: ['a:1', 'b:1', 'c:1']}}}}, \
         queue: {{backend: 'redis', redis: {{url: 'redis://{}', keyPrefix: 'sgc', slots: {SLOTS}}}}}}}",
        TTL.as_millis(),
        redis.addr()
    );
    let cfg = Config::from_json5(&text, std::path::Path::new("cluster.json5"))
        .unwrap()
        .config;
    cfg.validate().unwrap();
    cfg
}

impl Member {
    fn start(cfg: &Config, id: &str) -> Member {
        let view = Arc::new(Ownership::new(
            id,
            SLOTS,
            cfg.gateway.clustering.nodes.clone(),
        ));
        let events: Events = Arc::default();
        let (ctl, mut rx) = mpsc::unbounded();
        let (cfg, idc, v, ev) = (cfg.clone(), id.to_string(), view.clone(), events.clone());
        let thread = LocalExecutorBuilder::default()
            .name(id)
            .spawn(move || async move {
                let handle = cluster::start(&cfg, &idc, v, Rc::new(Recorder(ev))).unwrap();
                match rx.next().await {
                    Some(Ctl::Leave) => handle.leave().await,
                    Some(Ctl::Abandon) | None => handle.abandon(),
                }
            })
            .expect("executor");
        Member {
            id: id.to_string(),
            view,
            events,
            ctl,
            thread: Some(thread),
        }
    }

    fn stop(&mut self, how: Ctl) {
        let _ = self.ctl.unbounded_send(how);
        if let Some(t) = self.thread.take() {
            t.join().expect("member thread");
        }
    }

    fn events(&self) -> Vec<Ev> {
        self.events.lock().unwrap().clone()
    }

    /// Slots this member's view says it serves, with their epochs.
    fn owned(&self) -> Vec<(u32, u64)> {
        self.view.owned()
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.stop(Ctl::Abandon);
        }
    }
}

fn wait_until<T>(what: &str, within: Duration, mut f: impl FnMut() -> Result<T, String>) -> T {
    let end = Instant::now() + within;
    loop {
        match f() {
            Ok(t) => return t,
            Err(e) if Instant::now() >= end => panic!("{what}: not within {within:?}: {e}"),
            // The next look; bounded by the deadline above.
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// Every slot is `Mine` at exactly its rendezvous owner among `ms`, every other member sees
/// that owner, and all agree on who is live. Returns each slot's (owner, epoch).
fn converged(ms: &[&Member]) -> Result<Vec<(String, u64)>, String> {
    let mut ids: Vec<&str> = ms.iter().map(|m| m.id.as_str()).collect();
    ids.sort();
    let mut out = Vec::new();
    for slot in 0..SLOTS {
        let want = ids[rendezvous::owner(&ids, slot).unwrap()];
        let mut epoch = None;
        for m in ms {
            match m.view.owner(slot) {
                SlotOwner::Mine { epoch: e } if m.id == want => epoch = Some(e),
                SlotOwner::Member(i)
                    if m.id != want && m.view.member_name(i).as_deref() == Some(want) => {}
                other => return Err(format!("slot {slot}: {} sees {other:?}, want {want}", m.id)),
            }
        }
        out.push((want.to_string(), epoch.unwrap()));
    }
    for m in ms {
        if m.view.live_members() != ids {
            return Err(format!("{} sees live {:?}", m.id, m.view.live_members()));
        }
    }
    Ok(out)
}

/// Each of `slots` is `Mine` at its rendezvous owner among `ms` (what serving needs; the
/// other members' views of it follow at their next tick).
fn served(ms: &[&Member], slots: &[u32]) -> Result<(), String> {
    let mut ids: Vec<&str> = ms.iter().map(|m| m.id.as_str()).collect();
    ids.sort();
    for &slot in slots {
        let want = ids[rendezvous::owner(&ids, slot).unwrap()];
        let m = ms.iter().find(|m| m.id == want).unwrap();
        if !matches!(m.view.owner(slot), SlotOwner::Mine { .. }) {
            return Err(format!("slot {slot}: {want} sees {:?}", m.view.owner(slot)));
        }
    }
    Ok(())
}

/// Samples every registered view continuously; records any two members serving one slot at
/// the same time, and any new holder whose epoch is not above the previous holder's.
struct Monitor {
    views: Views,
    violations: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn serving(o: SlotOwner) -> Option<u64> {
    match o {
        SlotOwner::Mine { epoch } | SlotOwner::Releasing { epoch } => Some(epoch),
        _ => None,
    }
}

impl Monitor {
    fn start() -> Monitor {
        let views: Views = Arc::default();
        let violations: Arc<Mutex<Vec<String>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (v, bad, st) = (views.clone(), violations.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("monitor".into())
            .spawn(move || {
                // slot -> (holder, epoch) last seen serving
                let mut last: Vec<Option<(String, u64)>> = vec![None; SLOTS as usize];
                while !st.load(Ordering::Relaxed) {
                    let members = v.lock().unwrap().clone();
                    for slot in 0..SLOTS {
                        // Read every view twice: a conflict counts only if the first member
                        // read still serves with the same epoch after the second was read,
                        // so a handover between two reads is not mistaken for one.
                        let first: Vec<Option<u64>> = members
                            .iter()
                            .map(|(_, o)| serving(o.owner(slot)))
                            .collect();
                        let again: Vec<Option<u64>> = members
                            .iter()
                            .map(|(_, o)| serving(o.owner(slot)))
                            .collect();
                        for a in 0..members.len() {
                            for b in a + 1..members.len() {
                                if first[a].is_some() && first[b].is_some() && again[a] == first[a]
                                {
                                    bad.lock().unwrap().push(format!(
                                        "slot {slot} served by {} (epoch {:?}) and {} (epoch {:?})",
                                        members[a].0, first[a], members[b].0, first[b]
                                    ));
                                }
                            }
                        }
                        for (i, e) in first.iter().enumerate() {
                            let Some(e) = *e else { continue };
                            let name = &members[i].0;
                            match &last[slot as usize] {
                                Some((h, le)) if h != name && e <= *le => {
                                    bad.lock().unwrap().push(format!(
                                        "slot {slot}: {name} serves with epoch {e}, {h} had {le}"
                                    ))
                                }
                                _ => {}
                            }
                            last[slot as usize] = Some((name.clone(), e));
                        }
                    }
                    std::thread::sleep(Duration::from_micros(500));
                }
            })
            .unwrap();
        Monitor {
            views,
            violations,
            stop,
            thread: Some(thread),
        }
    }

    fn watch(&self, m: &Member) {
        self.views
            .lock()
            .unwrap()
            .push((m.id.clone(), m.view.clone()));
    }

    /// Stops watching `id` (a crashed member: its frozen view serves nobody).
    fn forget(&self, id: &str) {
        self.views.lock().unwrap().retain(|(n, _)| n != id);
    }

    /// Fails the test on any violation seen so far.
    fn check(&self) {
        let v = self.violations.lock().unwrap();
        assert!(
            v.is_empty(),
            "{} violations, first: {:?}",
            v.len(),
            &v[..v.len().min(5)]
        );
    }

    fn finish(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        self.check();
    }
}

/// What an operator reads of member `m` once converged: its status JSON and its Prometheus
/// lines (parsed) show its live peers, its slots and their epochs, a renew round trip.
fn status_and_metrics_agree(m: &Member, owners: &[(String, u64)]) {
    let mine: Vec<(u32, u64)> = (0..SLOTS)
        .filter(|&s| owners[s as usize].0 == m.id)
        .map(|s| (s, owners[s as usize].1))
        .collect();
    let st = wait_until("a renewal happened", Duration::from_secs(2), || {
        let st = m.view.status_json();
        if st["renew"]["lastAgeMs"].is_u64() {
            Ok(st)
        } else {
            Err(st.to_string())
        }
    });
    assert_eq!(st["me"], m.id.as_str());
    assert_eq!(
        st["members"]["live"],
        serde_json::json!(["a:1", "b:1", "c:1"])
    );
    assert_eq!(st["members"]["missingExpected"], serde_json::json!([]));
    let owned = st["slots"]["owned"].as_array().unwrap();
    assert_eq!(owned.len(), mine.len(), "{st}");
    assert_eq!(owned[0]["epoch"].as_u64(), Some(mine[0].1));
    assert!(st["renew"]["lastAgeMs"].as_u64().unwrap() < TTL.as_millis() as u64);
    let text = m.view.prometheus();
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("valid Prometheus text");
    let get = |name: &str| -> Vec<(String, f64)> {
        scrape
            .samples
            .iter()
            .filter(|s| s.metric == name)
            .map(|s| {
                let v = match s.value {
                    prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) => v,
                    _ => f64::NAN,
                };
                (s.labels.get("slot").unwrap_or("").to_string(), v)
            })
            .collect()
    };
    assert_eq!(get("shardgate_cluster_members"), vec![(String::new(), 3.0)]);
    assert_eq!(
        get("shardgate_cluster_slots_owned"),
        vec![(String::new(), mine.len() as f64)]
    );
    let epochs = get("shardgate_cluster_lease_epoch");
    assert_eq!(epochs.len(), mine.len());
    assert!(epochs.contains(&(mine[0].0.to_string(), mine[0].1 as f64)));
    let rtt = get("shardgate_cluster_redis_rtt_seconds")[0].1;
    assert!(rtt > 0.0 && rtt < 1.0, "rtt {rtt}");
}

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

/// Three members converge; one crashes and the others take its slots within ttl + 1 s; it
/// comes back; a fourth joins and takes about a quarter through drain + release; a graceful
/// leave hands slots over without waiting for the TTL. Never two holders.
#[test]
fn members_converge_fail_over_join_and_leave() {
    let redis = RedisServer::start().expect("redis-server");
    let cfg = config(&redis);
    let monitor = Monitor::start();
    let t = Instant::now();
    let mut a = Member::start(&cfg, "a:1");
    let mut b = Member::start(&cfg, "b:1");
    let mut c = Member::start(&cfg, "c:1");
    for m in [&a, &b, &c] {
        monitor.watch(m);
    }
    let first = wait_until("three members converge", Duration::from_secs(15), || {
        converged(&[&a, &b, &c])
    });
    println!(
        "cluster: 3 members started and agreed in {} ms",
        ms(t.elapsed())
    );
    assert!(first.iter().all(|(_, e)| *e >= 1));
    status_and_metrics_agree(&a, &first);

    // --- c crashes (no leave): a and b take its slots once its leases expire.
    monitor.check();
    let c_slots: Vec<(u32, u64)> = c.owned();
    assert!(!c_slots.is_empty());
    monitor.forget("c:1");
    let crash = Instant::now();
    c.stop(Ctl::Abandon);
    let c_only: Vec<u32> = c_slots.iter().map(|(s, _)| *s).collect();
    wait_until(
        "a and b take c's slots",
        TTL + Duration::from_secs(5),
        || served(&[&a, &b], &c_only),
    );
    let failover = crash.elapsed();
    let after = wait_until("a and b agree", Duration::from_secs(2), || {
        converged(&[&a, &b])
    });
    println!(
        "cluster: failover of {} slots after a crash: {} ms (ttl {} ms)",
        c_slots.len(),
        ms(failover),
        ms(TTL)
    );
    assert!(
        failover <= TTL + Duration::from_secs(1),
        "failover took {failover:?}"
    );
    monitor.check();
    for (slot, old) in &c_slots {
        let (owner, epoch) = &after[*slot as usize];
        assert!(epoch > old, "slot {slot}: epoch {epoch} after {old}");
        let m = if owner == "a:1" { &a } else { &b };
        let gained = m
            .events()
            .iter()
            .any(|e| e.slot == *slot && e.kind == Kind::Gained(*epoch) && e.at > crash);
        assert!(gained, "{owner} was not told it gained slot {slot}");
    }

    // --- c comes back under the same id: it gets its slots back through drain + release.
    let t = Instant::now();
    let mut c = Member::start(&cfg, "c:1");
    monitor.watch(&c);
    wait_until("c rejoins", Duration::from_secs(10), || {
        served(&[&a, &b, &c], &c_only)
    });
    println!(
        "cluster: a restarted member got its slots back in {} ms",
        ms(t.elapsed())
    );
    wait_until("a, b and c agree", Duration::from_secs(2), || {
        converged(&[&a, &b, &c])
    });

    // --- d joins: it takes about a quarter, each one drained by its old owner first;
    // every other slot keeps its owner and epoch.
    let before = converged(&[&a, &b, &c]).unwrap();
    let join = Instant::now();
    let mut d = Member::start(&cfg, "d:1");
    monitor.watch(&d);
    let all: Vec<u32> = (0..SLOTS).collect();
    wait_until("d joins", Duration::from_secs(10), || {
        served(&[&a, &b, &c, &d], &all)
    });
    println!(
        "cluster: a joining 4th member took its slots in {} ms",
        ms(join.elapsed())
    );
    let after = wait_until("a, b, c and d agree", Duration::from_secs(2), || {
        converged(&[&a, &b, &c, &d])
    });
    monitor.check();
    let moved: Vec<u32> = (0..SLOTS)
        .filter(|&s| before[s as usize].0 != after[s as usize].0)
        .collect();
    println!(
        "cluster: {} of {SLOTS} slots moved to the 4th member",
        moved.len()
    );
    assert!(
        (SLOTS as usize / 8..=SLOTS as usize * 3 / 8).contains(&moved.len()),
        "{moved:?}"
    );
    let by_id =
        |id: &str| -> &Member { [&a, &b, &c, &d].into_iter().find(|m| m.id == id).unwrap() };
    let d_events = d.events();
    for s in 0..SLOTS {
        let (old, new) = (&before[s as usize], &after[s as usize]);
        if !moved.contains(&s) {
            assert_eq!(old, new, "slot {s} changed without moving to d");
            continue;
        }
        assert_eq!(new.0, "d:1", "slot {s} moved elsewhere than to d");
        let old_events = by_id(&old.0).events();
        let drained = old_events
            .iter()
            .find(|e| e.slot == s && e.kind == Kind::Drain && e.at > join)
            .unwrap_or_else(|| panic!("slot {s}: {} never drained it", old.0));
        let released = old_events
            .iter()
            .find(|e| e.slot == s && e.kind == Kind::Lost && e.at > join)
            .unwrap_or_else(|| panic!("slot {s}: {} never let it go", old.0));
        let gained = d_events
            .iter()
            .find(|e| e.slot == s && matches!(e.kind, Kind::Gained(_)))
            .unwrap_or_else(|| panic!("slot {s}: d was not told"));
        assert!(drained.at <= released.at && released.at <= gained.at);
        assert!(new.1 > old.1, "slot {s}: epoch {} after {}", new.1, old.1);
    }

    // --- d leaves gracefully: its slots are back with their old owners well within the TTL.
    let leave = Instant::now();
    let d_slots = d.owned().len();
    d.stop(Ctl::Leave);
    let left_in = leave.elapsed();
    monitor.forget("d:1");
    wait_until("d's slots handed back", TTL, || served(&[&a, &b, &c], &all));
    let handover = leave.elapsed();
    wait_until("a, b and c agree", Duration::from_secs(2), || {
        converged(&[&a, &b, &c])
    });
    println!(
        "cluster: graceful leave of {d_slots} slots: leave() returned in {} ms, others serve them after {} ms",
        ms(left_in),
        ms(handover)
    );
    assert!(
        handover < TTL,
        "a graceful leave waited for the TTL: {handover:?}"
    );
    assert!(d.view.owned().is_empty());
    let d_ev = d.events();
    let gained = d_ev
        .iter()
        .filter(|e| matches!(e.kind, Kind::Gained(_)))
        .count();
    let lost = d_ev.iter().filter(|e| e.kind == Kind::Lost).count();
    assert_eq!(gained, lost, "every gained is followed by one lost");

    for m in [&mut a, &mut b, &mut c] {
        m.stop(Ctl::Leave);
    }
    monitor.finish();
}

/// Redis killed with -9: every member stops serving before its leases could expire (the
/// local deadline), and after Redis restarts on its directory they converge again with
/// higher epochs (acquisitions survived on disk).
#[test]
fn members_stop_serving_before_their_leases_expire_when_redis_dies() {
    let mut redis = RedisServer::start().expect("redis-server");
    let cfg = config(&redis);
    let monitor = Monitor::start();
    let mut a = Member::start(&cfg, "a:1");
    let mut b = Member::start(&cfg, "b:1");
    let mut c = Member::start(&cfg, "c:1");
    for m in [&a, &b, &c] {
        monitor.watch(m);
    }
    let before = wait_until("three members converge", Duration::from_secs(15), || {
        converged(&[&a, &b, &c])
    });
    let held: Vec<Vec<(u32, u64)>> = [&a, &b, &c].iter().map(|m| m.owned()).collect();

    let kill = Instant::now();
    redis.kill9();
    for (m, held) in [&a, &b, &c].into_iter().zip(&held) {
        let lost_at = wait_until(
            &format!("{} stops serving", m.id),
            TTL + Duration::from_secs(2),
            || {
                let ev = m.events();
                let lost: Vec<Instant> = held
                    .iter()
                    .filter_map(|(s, _)| {
                        ev.iter()
                            .find(|e| e.slot == *s && e.kind == Kind::Lost && e.at > kill)
                            .map(|e| e.at)
                    })
                    .collect();
                if lost.len() == held.len() && m.view.owned().is_empty() {
                    Ok(lost.into_iter().max().unwrap())
                } else {
                    Err(format!("{} of {} lost", lost.len(), held.len()))
                }
            },
        );
        let renewed = m.view.last_renew().expect("renewed before the kill");
        let expiry = renewed + TTL;
        println!(
            "cluster: {} stopped serving {} slots {} ms after Redis died, {} ms before its leases could expire",
            m.id,
            held.len(),
            ms(lost_at - kill),
            ms(expiry.saturating_duration_since(lost_at))
        );
        assert!(
            lost_at < expiry,
            "{} served past its lease: lost at +{:?}",
            m.id,
            lost_at - kill
        );
    }

    let t = Instant::now();
    redis.restart().expect("redis restarts on its directory");
    let all: Vec<u32> = (0..SLOTS).collect();
    wait_until(
        "served after Redis restarts",
        Duration::from_secs(15),
        || served(&[&a, &b, &c], &all),
    );
    println!(
        "cluster: every slot served again {} ms after Redis restarted",
        ms(t.elapsed())
    );
    let after = wait_until(
        "converge after Redis restarts",
        Duration::from_secs(2),
        || converged(&[&a, &b, &c]),
    );
    for s in 0..SLOTS as usize {
        assert!(
            after[s].1 > before[s].1,
            "slot {s}: epoch {} after {} (an epoch went back)",
            after[s].1,
            before[s].1
        );
    }
    for m in [&mut a, &mut b, &mut c] {
        m.stop(Ctl::Leave);
    }
    monitor.finish();
}
