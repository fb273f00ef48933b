//! `system.info`: the host and the gateway process, read from `/proc` (OpenClaw's shape, as
//! its Control UI shows it; `nodeVersion` has no counterpart, `shardgateVersion` and `shards`
//! are ours).

use std::rc::Rc;

use serde_json::{json, Value};

use crate::shard::GatewayShard;

fn read(p: &str) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// A `/proc/meminfo` value (`MemTotal`, `MemAvailable`…) in bytes.
fn meminfo_bytes(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kib| kib.parse::<u64>().ok())
        .map(|kib| kib * 1024)
}

/// Node's name for the CPU architecture (`os.arch()`), which clients expect.
fn node_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "x64",
        "aarch64" => "arm64",
        "x86" => "ia32",
        other => other,
    }
}

/// `system.info`
pub fn info(shard: &Rc<GatewayShard>) -> Value {
    let release = read("/proc/sys/kernel/osrelease").trim().to_string();
    let cpuinfo = read("/proc/cpuinfo");
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|r| r.split_once(':'))
        .map(|(_, m)| m.trim().to_string());
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let load: Vec<f64> = read("/proc/loadavg")
        .split_whitespace()
        .take(3)
        .filter_map(|x| x.parse().ok())
        .collect();
    let mem = read("/proc/meminfo");
    let rss = super::metrics::rss_bytes();
    let host = &shard.shared().host;
    json!({
        "machineName": host, "hostname": host, "platform": std::env::consts::OS,
        "release": release, "arch": node_arch(), "osLabel": format!("Linux {release}"),
        "port": shard.shared().port.load(std::sync::atomic::Ordering::Relaxed),
        "pid": std::process::id(), "processInstanceId": shard.shared().instance_id,
        "uptimeMs": shard.shared().uptime_ms(), "cpuCount": cpus, "cpuModel": cpu_model,
        "loadAverage": load,
        "memoryTotalBytes": meminfo_bytes(&mem, "MemTotal"),
        "memoryFreeBytes": meminfo_bytes(&mem, "MemAvailable"),
        "processMemory": {"rssBytes": (rss > 0).then_some(rss)},
        "shardgateVersion": env!("CARGO_PKG_VERSION"), "shards": shard.shards(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_values_are_bytes() {
        let t = "MemTotal:       24683664 kB\nMemFree:        1 kB\nMemAvailable:   2048 kB\n";
        assert_eq!(meminfo_bytes(t, "MemTotal"), Some(24_683_664 * 1024));
        assert_eq!(meminfo_bytes(t, "MemAvailable"), Some(2048 * 1024));
        assert_eq!(meminfo_bytes(t, "Mem"), None);
    }
}
