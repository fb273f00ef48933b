//! Per-session ordering by the client's `sessionSeq`: a message whose predecessor has not
//! arrived is held until it does, or until `ordering.timeout` has passed; then the gap is
//! skipped (and logged by the driver) and the held messages run in order.
//!
//! Invariant: every held sequence number is above `next` (the one expected), so a held
//! message runs exactly once: released in order, or after its deadline skips the gap.
//! Messages without a `sessionSeq` never pass through here.

use std::collections::BTreeMap;

/// A held message and when it stops waiting for its predecessors (ms).
#[derive(Debug)]
struct Held<T> {
    item: T,
    deadline: i64,
}

/// What became of an offered message.
#[derive(Debug, PartialEq)]
pub enum Offer<T> {
    /// Next in sequence: run it now, then whatever [`SeqOrder::pop_ready`] releases.
    Next(T),
    /// Its slot was skipped already (or it repeats a held number): run it now rather than
    /// never.
    Late {
        /// The message.
        item: T,
        /// The number expected when it came.
        expected: u64,
    },
    /// Waiting for `waiting_for` until `deadline` (ms).
    Held {
        /// The first missing number.
        waiting_for: u64,
        /// When the wait ends.
        deadline: i64,
    },
}

/// Sequence numbers skipped because they did not arrive in time: `from..=to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    /// The first missing number.
    pub from: u64,
    /// The last missing number.
    pub to: u64,
}

/// One session's `sessionSeq` state.
#[derive(Debug)]
pub struct SeqOrder<T> {
    /// Next expected number (None until the first sequenced message).
    next: Option<u64>,
    held: BTreeMap<u64, Held<T>>,
}

impl<T> Default for SeqOrder<T> {
    fn default() -> Self {
        SeqOrder {
            next: None,
            held: BTreeMap::new(),
        }
    }
}

impl<T> SeqOrder<T> {
    /// The number expected next.
    pub fn next(&self) -> Option<u64> {
        self.next
    }

    /// Messages held.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// Nothing held.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Takes message `seq`, arrived at `now`; a held one waits until `now + timeout_ms`.
    pub fn offer(&mut self, seq: u64, item: T, now: i64, timeout_ms: u64) -> Offer<T> {
        let expected = self.next.unwrap_or(seq);
        if seq < expected || self.held.contains_key(&seq) {
            return Offer::Late { item, expected };
        }
        if seq > expected {
            let deadline = now.saturating_add(timeout_ms.min(i64::MAX as u64) as i64);
            self.held.insert(seq, Held { item, deadline });
            return Offer::Held {
                waiting_for: expected,
                deadline,
            };
        }
        self.next = Some(seq + 1);
        Offer::Next(item)
    }

    /// The held message that is now next in sequence, if any (call until `None`).
    pub fn pop_ready(&mut self) -> Option<T> {
        let next = self.next?;
        let h = self.held.remove(&next)?;
        self.next = Some(next + 1);
        Some(h.item)
    }

    /// The earliest deadline of a held message.
    pub fn next_deadline(&self) -> Option<i64> {
        self.held.values().map(|h| h.deadline).min()
    }

    /// At `now`, when a held message has waited its time: skips the missing numbers before
    /// the first held one and returns them; [`SeqOrder::pop_ready`] then releases. Call
    /// until `None` (each call skips one gap).
    pub fn expire(&mut self, now: i64) -> Option<Gap> {
        if !self.held.values().any(|h| h.deadline <= now) {
            return None;
        }
        let first = *self.held.keys().next()?;
        let from = self.next.unwrap_or(first);
        self.next = Some(first);
        (from < first).then_some(Gap {
            from,
            to: first - 1,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: u64 = 10_000;

    fn drain(o: &mut SeqOrder<&'static str>) -> Vec<&'static str> {
        std::iter::from_fn(|| o.pop_ready()).collect()
    }

    #[test]
    fn the_first_number_seen_starts_the_sequence() {
        let mut o = SeqOrder::default();
        assert_eq!(o.offer(7, "a", 0, T), Offer::Next("a"));
        assert_eq!(o.next(), Some(8));
        assert_eq!(o.offer(8, "b", 0, T), Offer::Next("b"));
    }

    #[test]
    fn a_gap_holds_later_messages_until_it_is_filled_then_releases_in_order() {
        let mut o = SeqOrder::default();
        assert_eq!(o.offer(1, "a", 0, T), Offer::Next("a"));
        assert_eq!(
            o.offer(3, "c", 5, T),
            Offer::Held {
                waiting_for: 2,
                deadline: 5 + T as i64
            }
        );
        assert!(matches!(o.offer(4, "d", 6, T), Offer::Held { .. }));
        assert_eq!(o.len(), 2);
        assert_eq!(drain(&mut o), Vec::<&str>::new(), "nothing ready before 2");
        assert_eq!(o.offer(2, "b", 7, T), Offer::Next("b"));
        assert_eq!(drain(&mut o), vec!["c", "d"]);
        assert_eq!(o.next(), Some(5));
        assert!(o.is_empty());
    }

    #[test]
    fn a_held_message_waits_exactly_the_timeout_then_the_gap_is_skipped() {
        let mut o = SeqOrder::default();
        o.offer(1, "a", 0, T);
        o.offer(4, "d", 100, T);
        assert_eq!(o.next_deadline(), Some(100 + T as i64));
        // One ms early: still waiting.
        assert_eq!(o.expire(100 + T as i64 - 1), None);
        assert_eq!(drain(&mut o), Vec::<&str>::new());
        // At the deadline: 2 and 3 are given up, 4 runs.
        assert_eq!(o.expire(100 + T as i64), Some(Gap { from: 2, to: 3 }));
        assert_eq!(drain(&mut o), vec!["d"]);
        assert_eq!(o.next(), Some(5));
        assert_eq!(o.expire(i64::MAX), None, "nothing left to expire");
    }

    #[test]
    fn expiry_releases_up_to_the_next_gap_and_later_deadlines_skip_again() {
        let mut o = SeqOrder::default();
        o.offer(1, "a", 0, T);
        o.offer(3, "c", 0, T);
        o.offer(6, "f", 50, T);
        assert_eq!(o.expire(T as i64), Some(Gap { from: 2, to: 2 }));
        assert_eq!(drain(&mut o), vec!["c"]);
        // 6's own deadline is later.
        assert_eq!(o.expire(T as i64), None);
        assert_eq!(o.expire(50 + T as i64), Some(Gap { from: 4, to: 5 }));
        assert_eq!(drain(&mut o), vec!["f"]);
    }

    #[test]
    fn a_message_after_its_slot_was_skipped_runs_late_without_moving_the_sequence() {
        let mut o = SeqOrder::default();
        o.offer(1, "a", 0, T);
        o.offer(3, "c", 0, T);
        o.expire(T as i64);
        drain(&mut o);
        assert_eq!(
            o.offer(2, "b", T as i64 + 1, T),
            Offer::Late {
                item: "b",
                expected: 4
            }
        );
        assert_eq!(o.next(), Some(4));
    }

    #[test]
    fn a_repeated_held_number_is_not_dropped() {
        let mut o = SeqOrder::default();
        o.offer(1, "a", 0, T);
        o.offer(3, "c", 0, T);
        assert_eq!(
            o.offer(3, "c2", 1, T),
            Offer::Late {
                item: "c2",
                expected: 2
            }
        );
        o.offer(2, "b", 2, T);
        assert_eq!(drain(&mut o), vec!["c"]);
    }
}
