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

/// [`FROZEN_MS`] while no [`WallFreeze`] lives on this thread.
const NOT_HELD: i64 = 0;
/// [`FROZEN_MS`] while a [`WallFreeze`] lives but nothing has read the clock under it yet.
const HELD_UNREAD: i64 = i64::MIN;

thread_local! {
    /// The wall clock held by a live [`WallFreeze`] on this thread ([`NOT_HELD`] without
    /// one, [`HELD_UNREAD`] until the first read under it).
    static FROZEN_MS: std::cell::Cell<i64> = const { std::cell::Cell::new(NOT_HELD) };
}

/// Holds [`wall_ms`] at one reading while it lives, for code that runs without yielding and
/// stamps several records with the wall clock (one request's acceptance, run start, events and
/// end): one `clock_gettime` instead of one per stamp, taken at the first stamp (code that
/// stamps nothing reads no clock). At millisecond resolution the held value is as good as a
/// fresh one for as long as the code does not wait, so never hold it across an `.await`: the
/// executor would run other tasks under the stale reading.
#[derive(Debug)]
#[must_use = "the clock is held only while the guard lives"]
pub struct WallFreeze {
    prev: i64,
}

impl WallFreeze {
    /// Holds the wall clock from its first read until the guard drops (nested guards restore
    /// the outer reading).
    pub fn hold() -> WallFreeze {
        WallFreeze {
            prev: FROZEN_MS.with(|f| f.replace(HELD_UNREAD)),
        }
    }
}

impl Drop for WallFreeze {
    fn drop(&mut self) {
        FROZEN_MS.with(|f| f.set(self.prev));
    }
}

/// The reading a live [`WallFreeze`] holds on this thread, if one was taken under it.
pub fn wall_ms_held() -> Option<i64> {
    Some(FROZEN_MS.with(|f| f.get())).filter(|&ms| ms != NOT_HELD && ms != HELD_UNREAD)
}

/// Milliseconds since the epoch: the reading a live [`WallFreeze`] holds (taken now if this
/// is the first read under it), else [`realtime_ms`].
pub fn wall_ms() -> i64 {
    FROZEN_MS.with(|f| match f.get() {
        NOT_HELD => realtime_ms(),
        HELD_UNREAD => {
            let now = realtime_ms();
            f.set(now);
            now
        }
        held => held,
    })
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
    fn a_freeze_holds_the_wall_clock_until_it_drops() {
        let outer = super::WallFreeze::hold();
        let held = super::wall_ms();
        // Past the next millisecond: a fresh reading would differ.
        while super::realtime_ms() <= held + 1 {
            std::hint::spin_loop();
        }
        assert_eq!(super::wall_ms(), held);
        {
            let _inner = super::WallFreeze::hold();
            assert!(super::wall_ms() > held);
        }
        assert_eq!(
            super::wall_ms(),
            held,
            "the inner guard restores the outer reading"
        );
        drop(outer);
        assert!(
            super::wall_ms() > held + 1,
            "no guard: the clock is read again"
        );
    }

    #[test]
    fn a_freeze_reads_the_clock_only_when_asked() {
        let _held = super::WallFreeze::hold();
        assert_eq!(super::wall_ms_held(), None, "nothing read yet");
        let first = super::wall_ms();
        assert_eq!(super::wall_ms_held(), Some(first));
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
