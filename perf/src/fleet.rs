//! One run over several processes: more connections than one process may open (20 000 fds
//! per process here, not raisable). The parent starts `k` copies of this program, each with
//! its share of the connections (and of the open-loop rate) and source addresses of its own
//! (127.0.0.x: one address has ~28 000 ephemeral ports towards one server port). Each child
//! connects, says so on stdout and waits; once all are ready the parent says `go` on their
//! stdin, so every child runs the same warm-up and window; the parent samples the server
//! around that window, then merges the children's counts and latency histograms into one
//! report, as one process would have written it (plus `"processes": k`).
//!
//! Idle mode: the children connect and wait; the parent samples the server's RSS after the
//! settle time, then releases them.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{json, Value};

use crate::load::Stats;
use crate::{procstat, render, Args, Measured, MAX_CONNS_PER_PROCESS};

/// A child: says it is ready (with `v`) and waits for the parent's word on stdin.
pub(crate) async fn child_ready(v: Value) -> Result<(), String> {
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{v}")
            .and_then(|_| out.flush())
            .map_err(|e| format!("stdout: {e}"))?;
    }
    // Off the runtime's thread: the connections' tasks keep running while it waits.
    let line = tokio::task::spawn_blocking(|| {
        let mut l = String::new();
        std::io::stdin().read_line(&mut l).map(|_| l)
    })
    .await
    .map_err(|e| format!("stdin: {e}"))?
    .map_err(|e| format!("stdin: {e}"))?;
    if line.trim() == "go" {
        Ok(())
    } else {
        Err("the parent process went away".into())
    }
}

/// A histogram's recorded values as `[[value, count], …]` (values of distinct buckets only).
fn hist_pairs(h: &Histogram<u64>) -> Value {
    Value::Array(
        h.iter_recorded()
            .map(|v| json!([v.value_iterated_to(), v.count_at_value()]))
            .collect(),
    )
}

fn add_pairs(h: &mut Histogram<u64>, pairs: &Value) -> Result<(), String> {
    for p in pairs.as_array().into_iter().flatten() {
        let (Some(v), Some(c)) = (p[0].as_u64(), p[1].as_u64()) else {
            return Err(format!("bad histogram entry {p}"));
        };
        h.record_n(v, c).map_err(|e| format!("histogram: {e}"))?;
    }
    Ok(())
}

/// A child's result: its raw counts, for the parent to merge.
pub(crate) fn raw(st: &Stats, window: f64, load_cpu_s: Option<f64>) -> Value {
    let mut v = json!({
        "window": window,
        "load_cpu_s": load_cpu_s,
        "hist": hist_pairs(&st.hist),
        "send_lag": hist_pairs(&st.send_lag),
        "completed": st.completed,
        "sent": st.sent,
        "events": st.events,
        "frames": st.frames,
    });
    st.put_counters(&mut v);
    v
}

/// Adds a child's raw counts to `st`.
fn merge(st: &mut Stats, r: &Value) -> Result<(), String> {
    add_pairs(&mut st.hist, &r["hist"])?;
    add_pairs(&mut st.send_lag, &r["send_lag"])?;
    let n = |k: &str| r[k].as_u64().unwrap_or(0);
    st.completed += n("completed");
    st.sent += n("sent");
    st.events += n("events");
    st.frames += n("frames");
    st.errors += n("errors");
    st.incomplete += n("incomplete");
    st.seq_gaps += n("seq_gaps");
    st.bad_frames += n("bad_frames");
    st.closed_early += n("closed_early");
    if st.first_error.is_none() {
        st.first_error = r["first_error"].as_str().map(str::to_owned);
    }
    if st.first_close.is_none() {
        st.first_close = r["first_close"].as_str().map(str::to_owned);
    }
    Ok(())
}

/// `n` split into `k` shares that differ by at most one.
fn shares(n: usize, k: usize) -> Vec<usize> {
    (0..k).map(|i| n / k + usize::from(i < n % k)).collect()
}

/// The arguments of child `i`: this run's, with its share.
fn child_args(args: &Args, share: usize, rate: Option<f64>, first_ip: u8) -> Vec<String> {
    let d = |d: Duration| format!("{}ms", d.as_millis());
    let mut a: Vec<String> = vec![
        "--fleet-child".into(),
        "--url".into(),
        args.url.clone(),
        "--label".into(),
        args.label.clone(),
        "--source-ips".into(),
        args.source_ips.to_string(),
        "--source-ip-first".into(),
        first_ip.to_string(),
        "--max-per-process".into(),
        MAX_CONNS_PER_PROCESS.to_string(),
        "--connect-concurrency".into(),
        args.connect_concurrency.to_string(),
    ];
    if let Some(rb) = args.read_buffer {
        a.extend(["--read-buffer".into(), rb.to_string()]);
    }
    if args.no_device {
        a.push("--no-device".into());
    }
    if args.idle.is_some() {
        a.extend(["--idle".into(), share.to_string()]);
        return a;
    }
    a.extend([
        "--connections".into(),
        share.to_string(),
        "--workload".into(),
        value_name(&args.workload),
        "--mode".into(),
        value_name(&args.mode),
        "--inflight".into(),
        args.inflight.to_string(),
        "--placement".into(),
        value_name(&args.placement),
        "--shards".into(),
        args.shards.to_string(),
        "--duration".into(),
        d(args.duration),
        "--warmup".into(),
        d(args.warmup),
        "--drain".into(),
        d(args.drain),
    ]);
    if let Some(r) = rate {
        a.extend(["--rate".into(), r.to_string()]);
    }
    if let Some(w) = args.words {
        a.extend(["--words".into(), w.to_string()]);
    }
    a
}

/// A value enum's name as clap parses it.
fn value_name<T: clap::ValueEnum>(v: &T) -> String {
    v.to_possible_value()
        .map(|p| p.get_name().to_owned())
        .unwrap_or_default()
}

struct Proc {
    child: Child,
    stdin: Option<ChildStdin>,
    out: BufReader<ChildStdout>,
}

impl Proc {
    /// The child's next line of stdout as JSON; an error if it ended instead.
    fn line(&mut self) -> Result<Value, String> {
        let mut l = String::new();
        let n = self
            .out
            .read_line(&mut l)
            .map_err(|e| format!("child stdout: {e}"))?;
        if n == 0 {
            let status = self.child.wait().map_err(|e| format!("child: {e}"))?;
            return Err(format!(
                "a load process ended early ({status}); see its error above"
            ));
        }
        serde_json::from_str(l.trim()).map_err(|e| format!("child output {l:?}: {e}"))
    }

    fn go(&mut self) -> Result<(), String> {
        let stdin = self.stdin.as_mut().ok_or("child stdin closed")?;
        stdin
            .write_all(b"go\n")
            .and_then(|_| stdin.flush())
            .map_err(|e| format!("child stdin: {e}"))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // Closing stdin ends a child that still waits for `go`; one that does not exit is
        // killed, so no load process outlives the run.
        self.stdin.take();
        if !matches!(self.child.try_wait(), Ok(Some(_))) {
            let deadline = Instant::now() + Duration::from_secs(2);
            while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `args` over as many processes as its connections need.
pub(crate) fn run(args: &Args) -> Result<Value, String> {
    let per = args.max_per_process.clamp(1, MAX_CONNS_PER_PROCESS);
    let n = args.idle.unwrap_or(args.connections);
    let k = n.div_ceil(per);
    if args.idle.is_none() {
        args.check_rate()?;
    }
    // Source addresses: child i takes `source_ips` of its own, after the previous child's.
    let ips = usize::from(args.source_ips.max(1));
    if k * ips > 254 {
        return Err(format!(
            "{k} processes × {ips} source addresses exceed 127.0.0.1..=127.0.0.254"
        ));
    }
    let exe = std::env::current_exe().map_err(|e| format!("own executable: {e}"))?;
    let server = args.server_pid.map(|p| p.to_string());
    let before = server.as_deref().and_then(procstat::sample);
    let mut procs = Vec::with_capacity(k);
    for (i, share) in shares(n, k).into_iter().enumerate() {
        let rate = args.rate.map(|r| r * share as f64 / n as f64);
        let mut child = Command::new(&exe)
            .args(child_args(args, share, rate, (1 + i * ips) as u8))
            .env("SHARDGATE_TOKEN", &args.token)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("start load process: {e}"))?;
        let stdin = child.stdin.take();
        let out = BufReader::new(child.stdout.take().ok_or("child stdout")?);
        procs.push(Proc { child, stdin, out });
    }
    let readies = procs
        .iter_mut()
        .map(Proc::line)
        .collect::<Result<Vec<_>, _>>()?;
    if args.idle.is_some() {
        return idle(args, n, procs, &readies, before, server.as_deref());
    }
    for p in &mut procs {
        p.go()?;
    }
    let start = Instant::now() + args.warmup;
    let end = start + args.duration;
    std::thread::sleep(start.saturating_duration_since(Instant::now()));
    let s0 = server.as_deref().and_then(procstat::sample);
    let m0 = procstat::machine_busy_seconds();
    std::thread::sleep(end.saturating_duration_since(Instant::now()));
    let s1 = server.as_deref().and_then(procstat::sample);
    let m1 = procstat::machine_busy_seconds();
    let mut st = Stats::new();
    let mut window = 0f64;
    let mut load_cpu = Some(0f64);
    for p in &mut procs {
        let r = p.line()?;
        merge(&mut st, &r)?;
        window = window.max(r["window"].as_f64().unwrap_or(0.0));
        load_cpu = load_cpu.zip(r["load_cpu_s"].as_f64()).map(|(a, b)| a + b);
    }
    let measured = Measured {
        window: window.max(1e-9),
        load_cpu_s: load_cpu,
        machine: m0.zip(m1),
        server: before.zip(s0).zip(s1).map(|((b, s0), s1)| (b, s0, s1)),
    };
    let mut v = render(args, args.words(), args.inflight.max(1), &st, &measured);
    v["processes"] = json!(k);
    Ok(v)
}

/// Idle mode over several processes: the server's RSS once every child has connected and
/// the settle time passed.
fn idle(
    args: &Args,
    n: usize,
    mut procs: Vec<Proc>,
    readies: &[Value],
    before: Option<procstat::ProcSample>,
    server: Option<&str>,
) -> Result<Value, String> {
    let sum = |k: &str| {
        readies
            .iter()
            .map(|r| r[k].as_u64().unwrap_or(0))
            .sum::<u64>()
    };
    let open = sum("connections");
    let handshake_s = readies
        .iter()
        .filter_map(|r| r["handshake_s"].as_f64())
        .fold(0f64, f64::max);
    std::thread::sleep(args.settle);
    let after = server.and_then(procstat::sample);
    std::thread::sleep(args.hold);
    let load_rss: f64 = readies
        .iter()
        .filter_map(|r| r["load_rss_delta_kib"].as_f64())
        .sum();
    let mut pushed = 0;
    let mut closed = 0;
    for p in &mut procs {
        p.go()?;
    }
    for p in &mut procs {
        let r = p.line()?;
        pushed += r["frames_pushed"].as_u64().unwrap_or(0);
        closed += r["closed_by_server"].as_u64().unwrap_or(0);
    }
    let mut v = json!({
        "label": args.label,
        "kind": "idle",
        "connections": open,
        "requested": n,
        "failed": sum("failed"),
        "first_error": readies.iter().find_map(|r| r["first_error"].as_str()),
        "handshake_s": handshake_s,
        "handshakes_per_s": open as f64 / handshake_s.max(1e-9),
        "frames_pushed": pushed,
        "closed_by_server": closed,
        "client_read_buffer": readies.first().map(|r| r["client_read_buffer"].clone()),
        "processes": procs.len(),
    });
    if let (Some(b), Some(a)) = (before, after) {
        v["server_rss_before_kib"] = json!(b.rss_kib);
        v["server_rss_after_kib"] = json!(a.rss_kib);
        v["server_rss_per_conn_bytes"] =
            json!((a.rss_kib as f64 - b.rss_kib as f64) * 1024.0 / open.max(1) as f64);
    }
    v["load_rss_per_conn_bytes"] = json!(load_rss * 1024.0 / open.max(1) as f64);
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_process_gets_its_share_and_source_addresses_of_its_own() {
        use clap::Parser as _;
        let args = Args::parse_from([
            "shardgate-load",
            "--connections",
            "50000",
            "--source-ips",
            "2",
            "--workload",
            "agent",
            "--mode",
            "open",
            "--rate",
            "30000",
        ]);
        let a = child_args(&args, 16_667, Some(10_000.0), 5);
        let after = |flag: &str| {
            let i = a.iter().position(|x| x == flag).expect(flag);
            a[i + 1].clone()
        };
        assert_eq!(after("--connections"), "16667");
        assert_eq!(after("--source-ip-first"), "5");
        assert_eq!(after("--source-ips"), "2");
        assert_eq!(after("--workload"), "agent");
        assert_eq!(after("--mode"), "open");
        assert_eq!(after("--rate"), "10000");
        assert!(a.contains(&"--fleet-child".to_string()));
        // The token goes through the environment, not the command line.
        assert!(!a.iter().any(|x| x == "--token"));
    }

    #[test]
    fn shares_cover_the_connections_evenly() {
        assert_eq!(shares(50_000, 3), vec![16_667, 16_667, 16_666]);
        assert_eq!(shares(10, 5), vec![2; 5]);
        assert_eq!(shares(7, 3).iter().sum::<usize>(), 7);
    }

    #[test]
    fn merged_histograms_keep_the_percentiles() {
        let mut a = Stats::new();
        let mut b = Stats::new();
        for v in 1..=1000u64 {
            a.hist.record(v * 1000).unwrap();
            b.hist.record((v + 1000) * 1000).unwrap();
        }
        a.completed = 1000;
        b.completed = 1000;
        b.first_error = Some("boom".into());
        let mut all = Stats::new();
        merge(&mut all, &raw(&a, 1.0, None)).unwrap();
        merge(&mut all, &raw(&b, 1.0, None)).unwrap();
        assert_eq!(all.completed, 2000);
        assert_eq!(all.hist.len(), 2000);
        let p50 = all.hist.value_at_quantile(0.5) as f64;
        assert!((p50 - 1_000_000.0).abs() / 1_000_000.0 < 0.01, "{p50}");
        let p99 = all.hist.value_at_quantile(0.99) as f64;
        assert!((p99 - 1_980_000.0).abs() / 1_980_000.0 < 0.01, "{p99}");
        assert_eq!(all.first_error.as_deref(), Some("boom"));
    }
}
