//! [`ClusterHost`]: what the cluster driver tells the gateway (the contract is in the
//! module docs of [`crate::cluster`]: `gained` after the view says `Mine`, `lost` exactly once
//! per `gained`, `drain` before a voluntary release).

use std::future::Future;
use std::pin::Pin;

/// What the gateway does when the driver gains, drains or loses a slot. Called on the
/// driver's executor (shard 0); calls are short (`drain` returns a future the driver awaits
/// in a task of its own, bounded by one electionTimeout).
pub trait ClusterHost {
    /// This member now holds `slot` with fencing `epoch` (the view already says `Mine`).
    fn gained(&self, slot: u32, epoch: u64);
    /// `slot` is no longer served here (the view no longer says `Mine`/`Releasing`).
    fn lost(&self, slot: u32);
    /// Finish the slot's in-flight work before it is handed over; accept nothing new (the
    /// view says `Releasing`). Cut off after one electionTimeout.
    fn drain(&self, slot: u32) -> Pin<Box<dyn Future<Output = ()>>>;
}
