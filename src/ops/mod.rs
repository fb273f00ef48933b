//! Operations: metrics (per shard, merged on read) and their Prometheus rendering.

pub mod metrics;
