//! Where a platform connection stands: the states a channel's driver moves through and
//! `channels.status` reports. Plain data, shared by the sans-IO machines and the shard state.

/// Where a channel's connection stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    /// Started, first contact not made yet.
    Connecting,
    /// The platform answered the last call.
    Connected,
    /// The last call failed; the next attempt is at `next_at` (ms).
    Reconnecting {
        /// When the next attempt starts, ms.
        next_at: i64,
    },
    /// Not running, and will not retry by itself.
    Stopped {
        /// Why.
        reason: String,
    },
}
