//! Admission: whether a new message may enter the queue, weighed against the memory cap, the
//! queue bound (`queue.maxSize`, over every shard: the driver holds this shard's credits,
//! [`crate::queue::state::Credits`], and says whether one was left) and its session's lane bound
//! (`ordering.bufferSize`).
//!
//! Invariant: a refusal is never silent: it names its reason (the trace's `rejected` detail)
//! and maps to a retryable wire error with `retryAfterMs`.

use crate::protocol::error::GatewayError;

/// How loaded the gateway is when a message arrives (read by the driver, which owns the
/// shared counters).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Load {
    /// Over the memory cap: refuse new runs.
    pub shedding: bool,
    /// No room under `queue.maxSize` (counted over every shard by the driver; false
    /// without a queue).
    pub queue_full: bool,
    /// Jobs waiting in the target session's lane, held ones included (0 for a new session).
    pub lane: usize,
}

/// The bounds admission enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// `ordering.bufferSize`.
    pub lane_size: usize,
}

/// Why a message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Over the memory cap.
    Overloaded,
    /// `queue.maxSize` messages queued.
    QueueFull,
    /// `ordering.bufferSize` messages waiting in the session's lane.
    LaneFull,
}

/// How long a refused caller should wait before trying again, ms.
pub const QUEUE_FULL_RETRY_MS: u64 = 1000;
/// The same for a full lane (drains faster: one session's runs).
pub const LANE_FULL_RETRY_MS: u64 = 500;

impl Refusal {
    /// The reason in a trace's `rejected` stage.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::Overloaded => "OVERLOADED",
            Refusal::QueueFull => "QUEUE_FULL",
            Refusal::LaneFull => "LANE_FULL",
        }
    }

    /// The caller's error.
    pub fn error(self) -> GatewayError {
        match self {
            Refusal::Overloaded => GatewayError::Overloaded,
            Refusal::QueueFull => GatewayError::QueueFull {
                retry_after_ms: QUEUE_FULL_RETRY_MS,
            },
            Refusal::LaneFull => GatewayError::LaneFull {
                retry_after_ms: LANE_FULL_RETRY_MS,
            },
        }
    }
}

/// Admits or refuses, checking the memory cap, then the queue, then the lane.
pub fn check(load: Load, bounds: Bounds) -> Result<(), Refusal> {
    if load.shedding {
        return Err(Refusal::Overloaded);
    }
    if load.queue_full {
        return Err(Refusal::QueueFull);
    }
    if load.lane >= bounds.lane_size {
        return Err(Refusal::LaneFull);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Bounds = Bounds { lane_size: 3 };

    fn load(queue_full: bool, lane: usize) -> Load {
        Load {
            shedding: false,
            queue_full,
            lane,
        }
    }

    #[test]
    fn admits_below_both_bounds() {
        assert_eq!(check(load(false, 2), B), Ok(()));
    }

    #[test]
    fn queue_bound_is_inclusive_and_says_queue_full_with_retry_after() {
        assert_eq!(check(load(true, 0), B), Err(Refusal::QueueFull));
        let wire = Refusal::QueueFull.error().wire().to_json();
        assert_eq!(wire["details"]["code"], "QUEUE_FULL");
        assert_eq!(wire["retryAfterMs"], 1000);
        assert_eq!(wire["retryable"], true);
    }

    #[test]
    fn lane_bound_refuses_with_its_own_retry_after() {
        assert_eq!(check(load(false, 3), B), Err(Refusal::LaneFull));
        assert_eq!(
            Refusal::LaneFull.error().wire().to_json()["retryAfterMs"],
            500
        );
    }

    #[test]
    fn shedding_wins_over_the_other_bounds() {
        let l = Load {
            shedding: true,
            ..load(true, 5)
        };
        assert_eq!(check(l, B), Err(Refusal::Overloaded));
        assert_eq!(Refusal::Overloaded.reason(), "OVERLOADED");
    }
}
