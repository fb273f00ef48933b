//! Sizing io_uring registered-buffer memory to fit `RLIMIT_MEMLOCK`.
//!
//! glommio registers one buffer area per executor with each of its three rings and refuses to
//! start below 512 KiB of memlock. Registration that exceeds the limit fails and glommio then
//! runs without registered buffers (plain reads and writes still work). We size the area so the
//! whole pool fits the limit, and report which case applies.

/// glommio's own floor: below this it refuses to create a reactor.
pub const GLOMMIO_MIN_MEMLOCK: u64 = 512 * 1024;
/// glommio's default registered area per executor.
pub const DEFAULT_IO_MEMORY: usize = 10 << 20;
/// Rings per executor that register the same area (main, poll, latency).
const RINGS_PER_EXECUTOR: u64 = 3;

/// What the pool will use, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IoMemoryPlan {
    /// The soft `RLIMIT_MEMLOCK` in bytes (`u64::MAX` when unlimited).
    pub memlock_limit: u64,
    /// Registered-buffer bytes per executor.
    pub io_memory: usize,
    /// True when the area is expected to register; false means glommio falls back to
    /// unregistered buffers (it logs a warning and carries on).
    pub registered: bool,
}

/// The soft memlock limit of this process, in bytes.
pub fn memlock_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own; no other memory is touched.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) };
    if rc != 0 {
        return 0;
    }
    if lim.rlim_cur == libc::RLIM_INFINITY {
        u64::MAX
    } else {
        lim.rlim_cur
    }
}

/// Plans registered memory for `shards` executors under `limit` bytes of memlock.
///
/// Half the limit is left for the rings themselves and other locked pages; the rest is split
/// over every registration (three rings per executor), rounded down to 64 KiB, capped at
/// glommio's 10 MiB default. Below 64 KiB per executor registration is skipped.
pub fn plan(limit: u64, shards: usize) -> IoMemoryPlan {
    let shards = shards.max(1) as u64;
    let budget = if limit == u64::MAX {
        u64::MAX
    } else {
        limit / 2 / (shards * RINGS_PER_EXECUTOR)
    };
    let rounded = (budget.min(DEFAULT_IO_MEMORY as u64) / 65536) * 65536;
    IoMemoryPlan {
        memlock_limit: limit,
        io_memory: rounded.max(65536) as usize,
        registered: rounded >= 65536,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eight_mib_two_shards_fits() {
        let p = plan(8 << 20, 2);
        assert!(p.registered);
        assert!(p.io_memory as u64 * 2 * 3 <= 8 << 20);
        assert_eq!(p.io_memory % 65536, 0);
    }

    #[test]
    fn unlimited_uses_default() {
        assert_eq!(plan(u64::MAX, 4).io_memory, DEFAULT_IO_MEMORY);
    }

    #[test]
    fn tiny_limit_falls_back() {
        let p = plan(512 * 1024, 2);
        assert!(!p.registered);
        assert_eq!(p.io_memory, 65536);
    }
}
