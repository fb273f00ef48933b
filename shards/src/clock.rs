//! The kernel's coarse wall clock: `CLOCK_REALTIME_COARSE` is read from the vDSO without the
//! TSC arithmetic of the precise clock, at the resolution of one scheduler tick (1–4 ms).
//! Good for counters bucketed by minute on the hot path, not for timestamps a client sees.

/// Reads `clock` from the vDSO; `None` if the kernel refuses it.
fn read(clock: libc::clockid_t) -> Option<libc::timespec> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec that outlives the call.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    (rc == 0).then_some(ts)
}

/// Milliseconds since the epoch (`CLOCK_REALTIME`): what `SystemTime::now()` reads, without
/// its `Duration` arithmetic (a `duration_since` per read was ~80 instructions of the hot
/// path). 0 if the clock cannot be read (never on Linux).
pub fn realtime_ms() -> i64 {
    read(libc::CLOCK_REALTIME).map_or(0, |ts| ts.tv_sec * 1000 + ts.tv_nsec / 1_000_000)
}

/// Microseconds on `CLOCK_MONOTONIC` (the clock of `std::time::Instant`), from an arbitrary
/// origin: for intervals. 0 if the clock cannot be read (never on Linux).
pub fn monotonic_us() -> u64 {
    read(libc::CLOCK_MONOTONIC).map_or(0, |ts| {
        ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
    })
}

/// Milliseconds since the epoch from the coarse clock, or `None` if the kernel refuses it.
pub fn coarse_ms() -> Option<i64> {
    read(libc::CLOCK_REALTIME_COARSE).map(|ts| ts.tv_sec * 1000 + ts.tv_nsec / 1_000_000)
}

#[cfg(test)]
mod tests {
    /// The wall clock as std reads it, ms since the epoch.
    fn std_ms() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    }

    #[test]
    fn coarse_clock_tracks_the_wall_clock() {
        let precise = std_ms();
        let coarse = super::coarse_ms().expect("CLOCK_REALTIME_COARSE");
        assert!((precise - coarse).abs() < 100, "{precise} vs {coarse}");
    }

    #[test]
    fn the_raw_clocks_read_what_std_reads() {
        let theirs = std_ms();
        let ours = super::realtime_ms();
        assert!((ours - theirs).abs() < 100, "{ours} vs {theirs}");
        // Same clock as Instant: an interval measured both ways agrees.
        let (t0, i0) = (super::monotonic_us(), std::time::Instant::now());
        while i0.elapsed() < std::time::Duration::from_millis(20) {
            std::hint::spin_loop();
        }
        let (ours, theirs) = (super::monotonic_us() - t0, i0.elapsed().as_micros() as u64);
        assert!(
            ours >= 20_000 && ours.abs_diff(theirs) < 5_000,
            "{ours} vs {theirs}"
        );
    }
}
