//! Reading a process's CPU time and resident memory from `/proc`, before and after a
//! measurement window. Linux only; a missing process reads as `None`, never a panic.

use std::fs;

/// One sample of a process's counters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ProcSample {
    /// utime + stime, seconds (all threads).
    pub(crate) cpu_s: f64,
    /// VmRSS, KiB.
    pub(crate) rss_kib: u64,
}

/// Clock ticks per second for `/proc/<pid>/stat` times.
fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions; a negative answer falls back to the usual 100.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// utime + stime of `pid` ("self" for this process), seconds.
pub(crate) fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    // After the name, field 3 (state) is index 0, so utime (14) is 11 and stime (15) is 12.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / clk_tck())
}

/// VmRSS of `pid`, KiB.
pub(crate) fn rss_kib(pid: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_ascii_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Busy CPU seconds of the whole machine (all CPUs, from the `cpu` line of `/proc/stat`:
/// everything but idle and iowait), and the steal seconds (time a hypervisor ran something
/// else while this VM wanted the CPU).
pub(crate) fn machine_busy_seconds() -> Option<(f64, f64)> {
    let stat = fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<f64> = line
        .split_ascii_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal guest guest_nice (guest is inside user).
    let busy: f64 = v.iter().take(8).sum::<f64>() - v.get(3)? - v.get(4)?;
    let steal = *v.get(7)?;
    Some((busy / clk_tck(), steal / clk_tck()))
}

/// Both counters of `pid`, if it exists.
pub(crate) fn sample(pid: &str) -> Option<ProcSample> {
    Some(ProcSample {
        cpu_s: cpu_seconds(pid)?,
        rss_kib: rss_kib(pid)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_self() {
        let s = sample("self").expect("own /proc entry");
        assert!(s.rss_kib > 0);
        assert!(s.cpu_s >= 0.0);
        let (busy, steal) = machine_busy_seconds().expect("/proc/stat");
        assert!(busy > 0.0 && steal >= 0.0);
    }
}
