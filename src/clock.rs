//! The wall clock every layer reads: one place, so tests and the
//! [`shards::clock::WallFreeze`] of a request see the same time.

/// Wall clock, ms since the epoch, at one kernel tick's resolution (1–4 ms) for a fraction of
/// the cost ([`shards::clock::coarse_ms`]). For per-minute counters, never for wire timestamps.
/// Under a [`shards::clock::WallFreeze`] already read, the held reading (finer than a tick, and
/// already paid).
pub fn now_ms_coarse() -> i64 {
    match shards::clock::wall_ms_held() {
        Some(held) => held,
        None => shards::clock::coarse_ms().unwrap_or_else(now_ms),
    }
}

/// Wall clock, ms since the epoch (the reading of a live [`shards::clock::WallFreeze`]).
pub fn now_ms() -> i64 {
    shards::clock::wall_ms()
}
