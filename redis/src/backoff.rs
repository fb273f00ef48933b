//! [`Backoff`]: how long to wait before the next reconnect attempt.
//!
//! Capped exponential with jitter: the n-th consecutive failure waits a random time in
//! `[d/2, d]` where `d = min(max, min·2ⁿ)`. The exponent keeps a dead server from being
//! hammered; the cap bounds how long a recovered server waits for us; the jitter spreads the
//! shards and gateways that lost the same server. Pure (the random draw is passed in) so the
//! schedule is tested without a clock.

use std::time::Duration;

/// The reconnect schedule of one link.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max: max.max(min),
            failures: 0,
        }
    }

    /// The delay before the next attempt, given a uniform random `draw` in `[0, 1)`; counts one
    /// more failure.
    pub(crate) fn next_delay(&mut self, draw: f64) -> Duration {
        let factor = 2u32.saturating_pow(self.failures.min(31));
        let ceiling = self.min.saturating_mul(factor).min(self.max);
        self.failures = self.failures.saturating_add(1);
        let half = ceiling / 2;
        half + (ceiling - half).mul_f64(draw.clamp(0.0, 1.0))
    }

    /// A connection succeeded: the next failure starts from `min` again.
    pub(crate) fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn delays_double_up_to_the_cap_and_jitter_stays_within_half_to_full() {
        let mut b = Backoff::new(50 * MS, 400 * MS);
        let tops: Vec<_> = (0..6).map(|_| b.next_delay(1.0)).collect();
        assert_eq!(
            tops,
            [50 * MS, 100 * MS, 200 * MS, 400 * MS, 400 * MS, 400 * MS]
        );
        let mut b = Backoff::new(50 * MS, 400 * MS);
        let lows: Vec<_> = (0..4).map(|_| b.next_delay(0.0)).collect();
        assert_eq!(lows, [25 * MS, 50 * MS, 100 * MS, 200 * MS]);
        b.reset();
        assert_eq!(b.next_delay(0.5), Duration::from_micros(37_500));
    }

    #[test]
    fn many_failures_do_not_overflow() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        for _ in 0..1000 {
            assert!(b.next_delay(0.99) <= Duration::from_secs(30));
        }
    }
}
