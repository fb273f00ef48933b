//! Operations: metrics (per shard, merged on read) and their Prometheus rendering.

pub mod admin;
pub mod audit;
pub mod deps;
pub mod metrics;
pub mod monitor;
pub mod test_hooks;
