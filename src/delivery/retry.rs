//! Retry of failed dispatch attempts: how many attempts a message gets and how long it waits
//! between them (exponential or fixed backoff with jitter, `queue.retryPolicy`).
//!
//! Invariant: a retry keeps its place at the head of its session's lane (the driver waits out
//! the delay in the lane), so later messages of the session never overtake it. An aborted run
//! is not retried.

use crate::config::Config;

/// `queue.retryPolicy`, resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, ≥ 1 (1 when the queue is disabled: no retries).
    pub max_attempts: u32,
    /// First delay, ms.
    pub initial_ms: u64,
    /// Longest delay, ms.
    pub max_ms: u64,
    /// Doubling per attempt (`exponential`) or always `initial_ms` (`fixed`).
    pub exponential: bool,
}

impl RetryPolicy {
    /// From the configuration.
    pub fn of(cfg: &Config) -> RetryPolicy {
        let rp = &cfg.queue.retry_policy;
        RetryPolicy {
            max_attempts: if cfg.queue.enabled {
                rp.max_attempts.max(1)
            } else {
                1
            },
            initial_ms: rp.initial_delay.0,
            max_ms: rp.max_delay.0,
            exponential: rp.backoff == crate::config::Backoff::Exponential,
        }
    }

    /// After attempt `attempts` (1-based) failed: the delay before the next one, or `None`
    /// when the message is out of attempts (or was aborted). `rand01` is the jitter draw.
    pub fn next_delay(&self, attempts: u32, aborted: bool, rand01: f64) -> Option<u64> {
        if attempts >= self.max_attempts || aborted {
            return None;
        }
        Some(backoff_ms(
            attempts,
            self.initial_ms,
            self.max_ms,
            self.exponential,
            rand01,
        ))
    }
}

/// Exponential backoff with jitter for `attempt` (1-based): `initial × 2^(attempt−1)`, capped
/// at `max`, then a random point in its upper half (so retries of many messages that failed
/// together spread out, and none comes back sooner than half its step).
pub fn backoff_ms(attempt: u32, initial: u64, max: u64, exponential: bool, rand01: f64) -> u64 {
    let base = if exponential {
        initial.saturating_mul(1u64 << (attempt.saturating_sub(1)).min(30))
    } else {
        initial
    };
    let d = base.min(max);
    d / 2 + ((d as f64 / 2.0) * rand01.clamp(0.0, 1.0)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: RetryPolicy = RetryPolicy {
        max_attempts: 3,
        initial_ms: 1000,
        max_ms: 30_000,
        exponential: true,
    };

    #[test]
    fn backoff_grows_and_caps() {
        let d = |a, r| backoff_ms(a, 1000, 30_000, true, r);
        assert_eq!(d(1, 1.0), 1000);
        assert_eq!(d(1, 0.0), 500);
        assert_eq!(d(2, 1.0), 2000);
        assert_eq!(d(3, 1.0), 4000);
        assert_eq!(d(10, 1.0), 30_000);
        assert_eq!(d(40, 1.0), 30_000);
        assert_eq!(backoff_ms(5, 1000, 30_000, false, 1.0), 1000);
    }

    #[test]
    fn jitter_stays_in_the_upper_half_of_each_step() {
        for attempt in 1..=8 {
            let step = (1000u64 << (attempt - 1)).min(30_000);
            for i in 0..=100 {
                let r = i as f64 / 100.0;
                let d = backoff_ms(attempt, 1000, 30_000, true, r);
                assert!(
                    (step / 2..=step).contains(&d),
                    "attempt {attempt} r {r}: {d} outside {}..={step}",
                    step / 2
                );
            }
        }
        // A draw out of range is clamped, never beyond the step.
        assert_eq!(backoff_ms(1, 1000, 30_000, true, 7.0), 1000);
        assert_eq!(backoff_ms(1, 1000, 30_000, true, -1.0), 500);
    }

    #[test]
    fn huge_attempt_numbers_and_delays_do_not_overflow() {
        assert_eq!(
            backoff_ms(u32::MAX, u64::MAX, u64::MAX, true, 1.0),
            u64::MAX
        );
    }

    #[test]
    fn retries_until_the_last_attempt_then_gives_up() {
        assert_eq!(P.next_delay(1, false, 1.0), Some(1000));
        assert_eq!(P.next_delay(2, false, 1.0), Some(2000));
        assert_eq!(P.next_delay(3, false, 1.0), None);
    }

    #[test]
    fn an_aborted_run_is_not_retried() {
        assert_eq!(P.next_delay(1, true, 1.0), None);
    }

    #[test]
    fn a_disabled_queue_makes_one_attempt() {
        let mut cfg = Config::default();
        cfg.queue.enabled = false;
        cfg.queue.retry_policy.max_attempts = 5;
        assert_eq!(RetryPolicy::of(&cfg).max_attempts, 1);
        cfg.queue.enabled = true;
        cfg.queue.retry_policy.max_attempts = 0;
        assert_eq!(
            RetryPolicy::of(&cfg).max_attempts,
            1,
            "at least one attempt"
        );
        cfg.queue.retry_policy.backoff = crate::config::Backoff::Fixed;
        assert!(!RetryPolicy::of(&cfg).exponential);
    }
}
