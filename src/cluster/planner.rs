//! The lease decisions of one member, sans-IO: what to acquire, renew, drain and release,
//! and when to stop serving because renewals stopped working.
//!
//! The driver ([`super::driver`]) feeds it what Redis answered and the monotonic time in
//! milliseconds; the planner answers with slot lists and keeps which slots this member holds.
//! It never sleeps and never talks to Redis, so every timing rule is tested with a fake clock.
//!
//! Invariants:
//! - A slot is served (held or draining) only until its **deadline**: the start of the last
//!   call that set its lease TTL (acquire or renew round) + ttl − margin. Redis cannot have
//!   expired the lease before start + ttl (the TTL was set after the call started), so a
//!   member that stops at the deadline stops `margin` before anyone else can take the slot.
//!   When the earliest deadline passes, **every** slot is given up at once: a member that
//!   cannot renew one lease cannot renew the others (they share one script call).
//! - A slot is acquired only when this member is its desired owner among the live members
//!   and nobody else holds its lease (an absent lease, or one still naming this member, e.g.
//!   after a restart or after the deadline gave it up while Redis kept it).
//! - A held slot whose desired owner is now another member is drained, then released
//!   (never released while draining; still renewed while draining).

use super::rendezvous;

/// Lease timing, in ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Lease and heartbeat TTL (`electionTimeout`).
    pub ttl_ms: u64,
    /// How long before the earliest possible expiry a member stops serving.
    pub margin_ms: u64,
}

impl Timing {
    /// The timing of an `electionTimeout`: margin a third of it.
    pub fn from_ttl(ttl_ms: u64) -> Timing {
        Timing {
            ttl_ms,
            margin_ms: ttl_ms / 3,
        }
    }
}

/// What this member does with one slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Local {
    /// Not held here.
    Free,
    /// Held and served, with its fencing epoch; `valid_from` = start (ms) of the last call
    /// that set its TTL.
    Held {
        /// Fencing epoch returned by the acquire script.
        epoch: u64,
        /// Start of the last successful acquire/renew covering it (monotonic ms).
        valid_from: u64,
    },
    /// Held, being drained before a voluntary release (still renewed).
    Draining {
        /// Fencing epoch.
        epoch: u64,
        /// As for `Held`.
        valid_from: u64,
    },
}

impl Local {
    fn valid_from(self) -> Option<u64> {
        match self {
            Local::Free => None,
            Local::Held { valid_from, .. } | Local::Draining { valid_from, .. } => Some(valid_from),
        }
    }
}

/// The decisions of one round.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Slots to acquire (this member is their desired owner and their lease is free).
    pub acquire: Vec<u32>,
    /// Slots to drain then release (now `Draining`).
    pub drain: Vec<u32>,
    /// Slots to take as soon as their lease expires: this member is their desired owner and
    /// their lease names a member that is no longer live (it died; nobody renews it).
    pub expiring: Vec<u32>,
}

/// One member's lease state and decisions.
#[derive(Debug)]
pub struct Planner {
    me: String,
    timing: Timing,
    slots: Vec<Local>,
    leaving: bool,
}

impl Planner {
    /// A member `me` that holds nothing yet, for `slots` slots.
    pub fn new(me: &str, slots: u32, timing: Timing) -> Planner {
        Planner {
            me: me.to_string(),
            timing,
            slots: vec![Local::Free; slots as usize],
            leaving: false,
        }
    }

    /// This member's id.
    pub fn me(&self) -> &str {
        &self.me
    }

    /// The timing it was made with.
    pub fn timing(&self) -> Timing {
        self.timing
    }

    /// The state of `slot`.
    pub fn slot(&self, slot: u32) -> Local {
        self.slots
            .get(slot as usize)
            .copied()
            .unwrap_or(Local::Free)
    }

    /// Slots held or draining: what a renew round covers.
    pub fn held(&self) -> Vec<u32> {
        self.slots_where(|l| l != Local::Free)
    }

    /// True when nothing is held or draining.
    pub fn holds_nothing(&self) -> bool {
        self.slots.iter().all(|l| *l == Local::Free)
    }

    fn slots_where(&self, f: impl Fn(Local) -> bool) -> Vec<u32> {
        (0..self.slots.len() as u32)
            .filter(|&s| f(self.slots[s as usize]))
            .collect()
    }

    /// When serving must stop (monotonic ms): the earliest held slot's valid_from + ttl −
    /// margin. `None` when nothing is held.
    pub fn deadline(&self) -> Option<u64> {
        self.slots
            .iter()
            .filter_map(|l| l.valid_from())
            .min()
            .map(|v| v + self.timing.ttl_ms - self.timing.margin_ms)
    }

    /// At `now`: if the deadline has passed, gives up every slot and returns them (the
    /// caller stops serving them: "lost"). Empty otherwise.
    pub fn expire(&mut self, now: u64) -> Vec<u32> {
        match self.deadline() {
            Some(d) if now >= d => {
                let all = self.held();
                for s in &all {
                    self.slots[*s as usize] = Local::Free;
                }
                all
            }
            _ => Vec::new(),
        }
    }

    /// A renew round that started at `started` covered `asked` and Redis answered that
    /// `still[i]` of them are still this member's. Refreshes those; gives up the others and
    /// returns them (lost: another member holds the lease, or it expired).
    pub fn renewed(&mut self, started: u64, asked: &[u32], still: &[bool]) -> Vec<u32> {
        let mut lost = Vec::new();
        for (i, &s) in asked.iter().enumerate() {
            let Some(l) = self.slots.get_mut(s as usize) else {
                continue;
            };
            let kept = still.get(i).copied().unwrap_or(false);
            *l = match (*l, kept) {
                (Local::Free, _) => Local::Free,
                (_, false) => {
                    lost.push(s);
                    Local::Free
                }
                (Local::Held { epoch, .. }, true) => Local::Held {
                    epoch,
                    valid_from: started,
                },
                (Local::Draining { epoch, .. }, true) => Local::Draining {
                    epoch,
                    valid_from: started,
                },
            };
        }
        lost
    }

    /// Decides a round from the live members (heartbeats, this member included when its own
    /// heartbeat was written) and the lease holder of every slot (`None`: no lease).
    pub fn plan<S: AsRef<str>>(&mut self, live: &[S], holders: &[Option<S>]) -> Plan {
        let mut plan = Plan::default();
        let me_live = !self.leaving && live.iter().any(|m| m.as_ref() == self.me);
        for slot in 0..self.slots.len() as u32 {
            let desired_is_me = me_live
                && rendezvous::owner(live, slot).is_some_and(|i| live[i].as_ref() == self.me);
            let holder = holders.get(slot as usize).and_then(|h| h.as_ref());
            let local = &mut self.slots[slot as usize];
            match *local {
                Local::Held { epoch, valid_from } if !desired_is_me => {
                    *local = Local::Draining { epoch, valid_from };
                    plan.drain.push(slot);
                }
                Local::Free if desired_is_me => match holder {
                    None => plan.acquire.push(slot),
                    Some(h) if h.as_ref() == self.me => plan.acquire.push(slot),
                    Some(h) if !live.iter().any(|m| m.as_ref() == h.as_ref()) => {
                        plan.expiring.push(slot)
                    }
                    Some(_) => {}
                },
                _ => {}
            }
        }
        plan
    }

    /// The acquire script gave `slot` to this member with `epoch`; the call started at
    /// `started`.
    pub fn acquired(&mut self, slot: u32, epoch: u64, started: u64) {
        if let Some(l) = self.slots.get_mut(slot as usize) {
            *l = Local::Held {
                epoch,
                valid_from: started,
            };
        }
    }

    /// The host finished draining `slot`: it is given up now (the caller then deletes the
    /// lease). Returns its epoch when it was still draining (not lost meanwhile).
    pub fn drained(&mut self, slot: u32) -> Option<u64> {
        let l = self.slots.get_mut(slot as usize)?;
        match *l {
            Local::Draining { epoch, .. } => {
                *l = Local::Free;
                Some(epoch)
            }
            _ => None,
        }
    }

    /// From now on acquire nothing and drain every held slot (graceful leave).
    pub fn leave(&mut self) {
        self.leaving = true;
    }

    /// True after [`Planner::leave`].
    pub fn leaving(&self) -> bool {
        self.leaving
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: u64 = 3_000;

    fn planner(me: &str, slots: u32) -> Planner {
        Planner::new(me, slots, Timing::from_ttl(TTL))
    }

    fn none(n: usize) -> Vec<Option<&'static str>> {
        vec![None; n]
    }

    /// Runs plan + acquire-everything-planned at `now`, as the driver does when Redis grants
    /// every request.
    fn grant_all(p: &mut Planner, live: &[&str], holders: &[Option<&str>], now: u64) -> Plan {
        let plan = p.plan(live, holders);
        for &s in &plan.acquire {
            p.acquired(s, 1, now);
        }
        plan
    }

    #[test]
    fn a_lone_member_acquires_every_free_slot() {
        let mut p = planner("a", 8);
        let plan = grant_all(&mut p, &["a"], &none(8), 0);
        assert_eq!(plan.acquire, (0..8).collect::<Vec<_>>());
        assert!(plan.drain.is_empty());
        assert_eq!(p.held().len(), 8);
        // Next round: nothing more to do.
        assert_eq!(p.plan(&["a"], &none(8)), Plan::default());
    }

    #[test]
    fn each_member_acquires_only_its_rendezvous_slots() {
        let live = ["a", "b", "c"];
        let mut got = [0usize; 64];
        for me in live {
            let mut p = planner(me, 64);
            let plan = grant_all(&mut p, &live, &none(64), 0);
            for s in plan.acquire {
                assert_eq!(live[rendezvous::owner(&live, s).unwrap()], me);
                got[s as usize] += 1;
            }
        }
        assert!(
            got.iter().all(|&n| n == 1),
            "every slot exactly once: {got:?}"
        );
    }

    /// A lease still held by someone else (alive or not) is waited out, never taken.
    #[test]
    fn a_slot_leased_by_another_is_not_acquired() {
        let mut p = planner("a", 4);
        let mut holders = none(4);
        holders[2] = Some("dead");
        let plan = grant_all(&mut p, &["a"], &holders, 0);
        assert_eq!(plan.acquire, vec![0, 1, 3]);
        assert_eq!(
            plan.expiring,
            vec![2],
            "a dead member's lease is waited out"
        );
        // A live member's lease (it is draining the slot for us) is not.
        assert!(p.plan(&["a", "dead"], &holders).expiring.is_empty());
        // Once its lease expired, it is taken.
        holders[2] = None;
        assert_eq!(p.plan(&["a"], &holders).acquire, vec![2]);
    }

    /// After a restart (or after the deadline gave slots up while Redis kept the lease),
    /// a lease naming this member is acquired again (the script raises the epoch).
    #[test]
    fn a_lease_naming_me_is_taken_back() {
        let mut p = planner("a", 2);
        let plan = p.plan(&["a"], &[Some("a"), Some("b")]);
        assert_eq!(plan.acquire, vec![0]);
    }

    #[test]
    fn nothing_is_acquired_unless_my_heartbeat_made_me_live() {
        let mut p = planner("a", 4);
        assert!(p.plan(&["b"], &none(4)).acquire.is_empty());
        assert!(p.plan::<&str>(&[], &none(4)).acquire.is_empty());
    }

    /// The release path: a joiner that scores higher makes held slots drain; they stay held
    /// (and renewed) while draining, are not re-acquired, and are given up once drained.
    #[test]
    fn a_joiner_makes_slots_drain_then_release() {
        let mut p = planner("a", 64);
        grant_all(&mut p, &["a"], &none(64), 0);
        let plan = p.plan(&["a", "b"], &vec![Some("a"); 64]);
        assert!(plan.acquire.is_empty());
        let expect: Vec<u32> = (0..64)
            .filter(|&s| rendezvous::owner(&["a", "b"], s) == Some(1))
            .collect();
        assert_eq!(plan.drain, expect);
        assert!(!expect.is_empty());
        let s = expect[0];
        assert!(matches!(p.slot(s), Local::Draining { epoch: 1, .. }));
        assert_eq!(p.held().len(), 64, "draining slots are still renewed");
        // A second round does not drain or acquire them again.
        assert_eq!(p.plan(&["a", "b"], &vec![Some("a"); 64]), Plan::default());
        assert_eq!(p.drained(s), Some(1));
        assert_eq!(p.slot(s), Local::Free);
        assert_eq!(p.drained(s), None, "drained once");
        // The joiner holds it now: not ours to take.
        let mut holders = vec![Some("a"); 64];
        holders[s as usize] = Some("b");
        assert!(p.plan(&["a", "b"], &holders).acquire.is_empty());
    }

    /// The deadline is the start of the last renew round + ttl − margin, not its reply.
    #[test]
    fn the_deadline_counts_from_the_start_of_the_renew_round() {
        let mut p = planner("a", 4);
        assert_eq!(p.deadline(), None);
        grant_all(&mut p, &["a"], &none(4), 1_000);
        assert_eq!(p.deadline(), Some(1_000 + TTL - TTL / 3));
        // A round started at 1 500 answered at 2 400 (slow Redis): valid from 1 500.
        assert!(p.renewed(1_500, &p.held(), &[true; 4]).is_empty());
        assert_eq!(p.deadline(), Some(3_500));
        assert!(p.expire(3_499).is_empty());
        assert_eq!(p.held().len(), 4);
    }

    /// Renewals that keep failing: at the deadline every slot (draining ones too) is given
    /// up at once, before the lease's earliest expiry.
    #[test]
    fn failed_renewals_give_up_everything_at_the_deadline() {
        let mut p = planner("a", 4);
        grant_all(&mut p, &["a"], &none(4), 0);
        p.plan(&["a", "b"], &[Some("a"); 4]);
        let deadline = p.deadline().unwrap();
        assert!(deadline < TTL, "stops before the lease can expire");
        assert!(p.expire(deadline - 1).is_empty());
        let lost = p.expire(deadline);
        assert_eq!(lost, vec![0, 1, 2, 3]);
        assert!(p.holds_nothing());
        assert_eq!(p.deadline(), None);
        assert!(p.held().is_empty(), "nothing is renewed afterwards");
        assert!(p.expire(deadline + 10_000).is_empty(), "reported once");
    }

    /// A slot acquired later does not extend the deadline of the older ones.
    #[test]
    fn the_earliest_slot_sets_the_deadline() {
        let mut p = planner("a", 2);
        p.acquired(0, 7, 0);
        p.acquired(1, 9, 2_000);
        assert_eq!(p.deadline(), Some(TTL - TTL / 3));
        assert_eq!(p.expire(TTL - TTL / 3), vec![0, 1]);
    }

    /// The renew script answers per slot: those no longer ours are lost, the rest kept.
    #[test]
    fn a_renew_that_finds_a_lease_gone_loses_only_that_slot() {
        let mut p = planner("a", 3);
        grant_all(&mut p, &["a"], &none(3), 0);
        let lost = p.renewed(500, &[0, 1, 2], &[true, false, true]);
        assert_eq!(lost, vec![1]);
        assert_eq!(p.held(), vec![0, 2]);
        assert_eq!(
            p.slot(0),
            Local::Held {
                epoch: 1,
                valid_from: 500
            }
        );
        // A short answer counts as not renewed.
        assert_eq!(p.renewed(600, &[0, 2], &[true]), vec![2]);
    }

    #[test]
    fn a_slot_lost_while_draining_is_not_released_twice() {
        let mut p = planner("a", 1);
        grant_all(&mut p, &["a"], &none(1), 0);
        let plan = p.plan(&["b"], &[Some("a")]);
        assert_eq!(plan.drain, vec![0]);
        assert_eq!(p.expire(TTL), vec![0]);
        assert_eq!(p.drained(0), None);
    }

    #[test]
    fn leaving_drains_everything_and_acquires_nothing() {
        let mut p = planner("a", 4);
        grant_all(&mut p, &["a"], &[None, None, Some("b"), Some("b")], 0);
        assert_eq!(p.held(), vec![0, 1]);
        p.leave();
        let plan = p.plan(&["a"], &[Some("a"), Some("a"), None, None]);
        assert_eq!(plan.drain, vec![0, 1]);
        assert!(plan.acquire.is_empty());
        p.drained(0);
        p.drained(1);
        assert!(p.holds_nothing());
    }

    /// The same inputs give the same decisions (no hidden randomness or clock).
    #[test]
    fn plans_are_deterministic() {
        let live = ["gw-1:18789", "gw-2:18789", "gw-3:18789"];
        let run = || {
            let mut p = planner("gw-2:18789", 64);
            grant_all(&mut p, &live, &none(64), 0).acquire
        };
        assert_eq!(run(), run());
        assert!(!run().is_empty());
    }
}
