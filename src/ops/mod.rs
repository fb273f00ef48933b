//! Operations: metrics (per shard, merged on read) and their Prometheus rendering, operator
//! methods, the log file and `logs.tail`, and the OpenClaw-compatible catalogs (`compat`).

pub mod admin;
pub mod audit;
pub mod catalog;
pub mod compat;
pub mod dep_state;
pub mod deps;
pub mod exposition;
pub mod log_lines;
pub mod logs_tail;
pub mod metrics;
pub mod monitor;
pub mod system_info;
pub mod test_hooks;
