//! The kernel's coarse wall clock: `CLOCK_REALTIME_COARSE` is read from the vDSO without the
//! TSC arithmetic of the precise clock, at the resolution of one scheduler tick (1–4 ms).
//! Good for counters bucketed by minute on the hot path, not for timestamps a client sees.

/// Milliseconds since the epoch from the coarse clock, or `None` if the kernel refuses it.
pub fn coarse_ms() -> Option<i64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec that outlives the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) };
    (rc == 0).then(|| ts.tv_sec * 1000 + ts.tv_nsec / 1_000_000)
}

#[cfg(test)]
mod tests {
    #[test]
    fn coarse_clock_tracks_the_wall_clock() {
        let precise = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let coarse = super::coarse_ms().expect("CLOCK_REALTIME_COARSE");
        assert!((precise - coarse).abs() < 100, "{precise} vs {coarse}");
    }
}
