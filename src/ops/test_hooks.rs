//! Fault injection for tests, served under `/dangerously/` only when
//! `gateway.dangerouslyEnableTestHooks` is set: anyone who reaches the port could use them.
//!
//! `POST /dangerously/stall/SHARD/MS` blocks shard SHARD's thread for MS milliseconds (at most
//! [`MAX_STALL_MS`]), as a handler stuck on a slow disk or a long computation would: the shard
//! stops draining its mesh inbox, so its peers' requests to sessions it owns pile up in their
//! outboxes until they are refused. It is refused (409) on the shard to stall itself, whose
//! answer would wait for the stall; ask again on a new connection.
//!
//! `POST /dangerously/store/hold` stops the store writer before the I/O of its next write, as
//! a stalled disk would, until `POST /dangerously/store/release`: changes go on in memory and
//! pile up for the next write; only callers waiting for a write wait.

use std::rc::Rc;
use std::time::Duration;

use shards::ShardId;

use crate::shard::GatewayShard;

/// The longest stall a test may ask for.
pub const MAX_STALL_MS: u64 = 10_000;

/// Runs the hook at `path`; the HTTP status and body to answer.
pub fn call(shard: &Rc<GatewayShard>, path: &str) -> (u16, String) {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        ["dangerously", "stall", target, ms] => {
            let (Ok(target), Ok(ms)) = (target.parse::<usize>(), ms.parse::<u64>()) else {
                return (400, "want /dangerously/stall/SHARD/MS\n".into());
            };
            if target >= shard.shards() || ms > MAX_STALL_MS {
                return (
                    400,
                    format!(
                        "shard must be below {} and ms at most {MAX_STALL_MS}\n",
                        shard.shards()
                    ),
                );
            }
            if target == shard.id().0 {
                // Stalling this shard before answering would hold the answer back too.
                return (
                    409,
                    format!("asked on shard {target}, the one to stall: ask on another\n"),
                );
            }
            tracing::warn!(shard = target, ms, "test hook: stalling a shard");
            shard.on_shard(ShardId(target), move |_| {
                // Blocking the executor is the point: nothing on this shard runs meanwhile.
                std::thread::sleep(Duration::from_millis(ms));
            });
            (
                200,
                format!(
                    "stalling shard {target} for {ms} ms (asked on shard {})\n",
                    shard.id()
                ),
            )
        }
        ["dangerously", "store", what @ ("hold" | "release")] => {
            let hold = *what == "hold";
            tracing::warn!(hold, "test hook: store writer");
            shard.shared().store_writer.stats().hold(hold);
            (200, format!("store writer {what}\n"))
        }
        _ => (404, "no such test hook\n".into()),
    }
}
