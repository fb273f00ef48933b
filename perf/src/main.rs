//! `shardgate-load`: the load generator for shardgate and for the baseline server in
//! `perf/baselines/echo`, which speaks just enough of the same protocol to be driven by it.
//!
//! It speaks the real OpenClaw protocol (challenge, `connect` with the shared token and a
//! signed device proof), then runs one workload over N connections on a tokio current-thread
//! runtime (one core: pin it with `taskset`), and prints a table or one JSON line:
//! requests/s, events/s, frames/s, latency percentiles (hdrhistogram), and the server's CPU
//! seconds and RSS read from `/proc/<pid>` before and after the window (`--server-pid`).
//!
//! `--idle N` opens N connections that only complete the handshake and reports the server's
//! RSS growth per connection. One process may hold at most 20 000 fds here, so one process
//! opens at most 19 000 connections (`--max-per-process`); above that the run is spread over
//! several processes (`fleet`), each from source addresses of its own, and reported as one.
//!
//! `--compare SUBJECT.jsonl BASELINE.jsonl` turns JSON lines of repeated runs into the
//! markdown table of `perf/reports/` (median, min–max, ratio of medians).

mod client;
mod compare;
mod fleet;
mod idle;
mod load;
mod procstat;
mod scan;

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::json;
use shardgate::auth::device::DeviceIdentity;

use crate::client::Target;
use crate::load::{Mode, Plan, Stats, Workload};

/// Most connections one process opens (the fd limit here is 20 000 and not raisable).
pub(crate) const MAX_CONNS_PER_PROCESS: usize = 19_000;

/// Load generator for shardgate (and the tokio-tungstenite baseline).
#[derive(Debug, Parser)]
#[command(name = "shardgate-load", version)]
pub(crate) struct Args {
    /// Gateway WebSocket URL.
    #[arg(long, default_value = "ws://127.0.0.1:18789/")]
    pub(crate) url: String,
    /// Shared token (`connect.params.auth.token`).
    #[arg(long, env = "SHARDGATE_TOKEN", default_value = "")]
    pub(crate) token: String,
    /// Connections. Above `--max-per-process` the run is spread over several processes.
    #[arg(long, default_value_t = 100)]
    pub(crate) connections: usize,
    /// Most connections (and node clients) one process opens; a run with more is spread over
    /// several processes of this program, each on source addresses of its own (loopback
    /// targets: 127.0.0.x), started and measured together and reported as one run.
    #[arg(long, default_value_t = MAX_CONNS_PER_PROCESS)]
    pub(crate) max_per_process: usize,
    /// One process of a fleet (internal): first source address's last byte.
    #[arg(long, default_value_t = 1, hide = true)]
    pub(crate) source_ip_first: u8,
    /// One process of a fleet (internal): report readiness, wait for `go` on stdin, print
    /// raw counts and histograms.
    #[arg(long, hide = true)]
    pub(crate) fleet_child: bool,
    /// Measurement window, e.g. `10s`, `500ms`.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub(crate) duration: Duration,
    /// Time between the last connection being ready and the window.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub(crate) warmup: Duration,
    /// How long after the window outstanding requests may still finish.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub(crate) drain: Duration,
    /// Request type.
    #[arg(long, value_enum, default_value_t = Workload::Health)]
    pub(crate) workload: Workload,
    /// Closed loop (`--inflight` per connection) or open loop (`--rate`).
    #[arg(long, value_enum, default_value_t = Mode::Closed)]
    pub(crate) mode: Mode,
    /// Open loop: total requests per second over all connections.
    #[arg(long)]
    pub(crate) rate: Option<f64>,
    /// Closed loop: requests outstanding per connection (pipelining).
    #[arg(long, default_value_t = 1)]
    pub(crate) inflight: usize,
    /// Words in the message (one `agent`/`chat` delta per word). Default: agent 1, chat 20.
    #[arg(long)]
    pub(crate) words: Option<usize>,
    /// Where each connection's session lives: `any` (`perf-<n>`, wherever it hashes), `same`
    /// (a key owned by the connection's own shard) or `cross` (owned by another shard).
    #[arg(long, value_enum, default_value_t = load::Placement::Any)]
    pub(crate) placement: load::Placement,
    /// The gateway's shard count (for `--placement same|cross`).
    #[arg(long, default_value_t = 1)]
    pub(crate) shards: usize,
    /// Server process to read CPU time and RSS from (/proc/PID).
    #[arg(long)]
    pub(crate) server_pid: Option<u32>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
    /// Name of the target in the output (e.g. `shardgate`, `baseline`).
    #[arg(long, default_value = "target")]
    pub(crate) label: String,
    /// Idle mode: open N connections that only handshake, report server RSS per connection.
    #[arg(long, value_name = "N")]
    pub(crate) idle: Option<usize>,
    /// Idle mode: wait this long after the last handshake before sampling RSS.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub(crate) settle: Duration,
    /// Idle mode: keep the connections open this long after sampling.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub(crate) hold: Duration,
    /// Spread connections over source addresses 127.0.0.1..=127.0.0.N (loopback targets).
    #[arg(long, default_value_t = 1)]
    pub(crate) source_ips: u8,
    /// Handshakes in flight at once (shardgate allows 32 unauthenticated sockets per IP).
    #[arg(long, default_value_t = 16)]
    pub(crate) connect_concurrency: usize,
    /// Connect with the token only (no device proof: shardgate then grants no scopes, so
    /// only `health` works).
    #[arg(long)]
    pub(crate) no_device: bool,
    /// Client read buffer per connection, bytes (tungstenite allocates it eagerly, and
    /// zero-fills this many bytes before every read: 64 KiB made that memset 9-14% of the load
    /// generator's CPU). Default 16 KiB under load, 4 KiB in idle mode.
    #[arg(long)]
    pub(crate) read_buffer: Option<usize>,
    /// Print the markdown comparison of two JSON-lines files (repeated runs) and exit.
    #[arg(long, num_args = 2, value_names = ["SUBJECT", "BASELINE"])]
    pub(crate) compare: Option<Vec<PathBuf>>,
}

impl Args {
    /// Words per message: `--words`, else 20 for `chat` and 1 otherwise.
    pub(crate) fn words(&self) -> usize {
        self.words.unwrap_or(match self.workload {
            Workload::Chat => 20,
            _ => 1,
        })
    }

    /// An open loop needs a positive `--rate`.
    pub(crate) fn check_rate(&self) -> Result<(), String> {
        if self.mode == Mode::Open && self.rate.is_none_or(|r| r <= 0.0) {
            return Err("--mode open needs --rate R (requests/s over all connections)".into());
        }
        Ok(())
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map_or((s, "s"), |i| (&s[..i], &s[i..]));
    let v: f64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    let secs = match unit {
        "ms" => v / 1000.0,
        "s" | "" => v,
        "m" => v * 60.0,
        _ => return Err(format!("bad duration unit in {s:?} (use ms, s, m)")),
    };
    Ok(Duration::from_secs_f64(secs))
}

fn main() {
    let args = Args::parse();
    if let Some(files) = &args.compare {
        match compare::markdown(&files[0], &files[1]) {
            Ok(md) => print!("{md}"),
            Err(e) => {
                eprintln!("shardgate-load: {e}");
                std::process::exit(2);
            }
        }
        return;
    }
    let wanted = args.idle.unwrap_or(args.connections);
    let out = if !args.fleet_child && wanted > args.max_per_process.clamp(1, MAX_CONNS_PER_PROCESS)
    {
        fleet::run(&args)
    } else {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let local = tokio::task::LocalSet::new();
        local.block_on(&rt, async {
            if let Some(n) = args.idle {
                idle::run(&args, n).await
            } else {
                run_load(&args).await
            }
        })
    };
    match out {
        Ok(v) => {
            if args.json || args.fleet_child {
                println!("{v}");
            } else {
                print_table(&v);
            }
        }
        Err(e) => {
            eprintln!("shardgate-load: {e}");
            std::process::exit(1);
        }
    }
}

/// Opens `n` connections, `concurrency` handshakes at a time. The first one is opened alone
/// so that its device gets paired before the others present it.
pub(crate) async fn open_many(
    target: &Target,
    n: usize,
    concurrency: usize,
    device: Option<&DeviceIdentity>,
) -> Result<(Vec<client::Connected>, u64, Option<String>), String> {
    let mut conns = Vec::with_capacity(n);
    if n == 0 {
        return Ok((conns, 0, None));
    }
    conns.push(client::connect(target, 0, device).await?);
    let mut failed = 0u64;
    let mut first_err = None;
    let mut rest = futures_util::stream::iter(1..n)
        .map(|i| client::connect(target, i, device))
        .buffer_unordered(concurrency.max(1));
    while let Some(r) = rest.next().await {
        match r {
            Ok(ws) => conns.push(ws),
            Err(e) => {
                failed += 1;
                first_err.get_or_insert(e);
            }
        }
    }
    Ok((conns, failed, first_err))
}

/// One request on a connection; its `res` (events before it are skipped).
async fn rpc(
    ws: &mut client::Ws,
    id: &str,
    method: &str,
    params: serde_json::Value,
) -> Result<serde_json::Value, String> {
    let req = json!({"type": "req", "id": id, "method": method, "params": params});
    ws.send(tokio_tungstenite::tungstenite::Message::text(
        req.to_string(),
    ))
    .await
    .map_err(|e| format!("{method}: {e}"))?;
    loop {
        let text = client::next_text(ws).await?;
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        if v["type"] == "res" && v["id"] == id {
            return Ok(v);
        }
    }
}

/// Approves the node surfaces the built-in node clients filed at connect (a gateway gates
/// every node's commands on an operator's approval, as OpenClaw does), then waits (at most
/// 10 s) until `node.list` shows every node in `ids` connected with its command effective,
/// asked on one connection of each shard the connections landed on (the registry reaches
/// shards by broadcast). A server without a node registry (the baseline) is not waited for.
async fn wait_nodes_listed(conns: &mut [client::Connected], ids: &[String]) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    if let Some((ws, _)) = conns.first_mut() {
        let mut pending: Vec<String> = ids.to_vec();
        let mut n = 0u64;
        while !pending.is_empty() {
            n += 1;
            let l = rpc(ws, &format!("pl{n}"), "node.pair.list", json!({})).await?;
            // No node pairing here (the baseline echo, or an ungated gateway).
            let Some(reqs) = l["payload"]["pending"].as_array() else {
                break;
            };
            for r in reqs {
                let node = r["nodeId"].as_str().unwrap_or_default();
                if pending.iter().any(|p| p == node) {
                    n += 1;
                    let a = rpc(
                        ws,
                        &format!("pa{n}"),
                        "node.pair.approve",
                        json!({"requestId": r["requestId"]}),
                    )
                    .await?;
                    if a["ok"] != true {
                        return Err(format!("node.pair.approve: {a}"));
                    }
                    pending.retain(|p| p != node);
                }
            }
            let paired = l["payload"]["paired"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            pending.retain(|p| !paired.iter().any(|x| x["nodeId"] == p.as_str()));
            if Instant::now() > deadline {
                return Err(format!(
                    "{} node surfaces never pending for approval",
                    pending.len()
                ));
            }
            tokio::task::yield_now().await;
        }
    }
    let mut seen_shards = Vec::new();
    for (ws, shard) in conns.iter_mut() {
        if seen_shards.contains(shard) {
            continue;
        }
        seen_shards.push(*shard);
        let mut n = 0u64;
        loop {
            n += 1;
            let v = rpc(ws, &format!("nl{n}"), "node.list", json!({})).await?;
            // No node registry (the baseline echo answers every request alike).
            let Some(nodes) = v["payload"]["nodes"].as_array() else {
                return Ok(());
            };
            let ready = |id: &String| {
                nodes.iter().any(|x| {
                    x["nodeId"] == id.as_str()
                        && x["connected"] != false
                        && x["commands"]
                            .as_array()
                            .is_none_or(|c| c.iter().any(|c| c == client::NODE_COMMAND))
                })
            };
            let listed = ids.iter().filter(|id| ready(id)).count();
            if listed == ids.len() {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "nodes not listed within 10 s on shard {shard:?} ({listed} of {})",
                    ids.len()
                ));
            }
            tokio::task::yield_now().await;
        }
    }
    Ok(())
}

fn run_tag() -> String {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("p{}x{:x}", std::process::id(), t)
}

fn pid_str(p: Option<u32>) -> Option<String> {
    p.map(|p| p.to_string())
}

async fn run_load(args: &Args) -> Result<serde_json::Value, String> {
    let n = args.connections;
    if n == 0 || n > MAX_CONNS_PER_PROCESS {
        return Err(format!(
            "--connections must be 1..={MAX_CONNS_PER_PROCESS} in one process (fd limit 20 000 per process; more are spread over processes by --max-per-process)"
        ));
    }
    args.check_rate()?;
    let target = Target::new(
        &args.url,
        &args.token,
        args.source_ips,
        args.source_ip_first,
        args.read_buffer.unwrap_or(16 * 1024),
    )?;
    let device = (!args.no_device).then(DeviceIdentity::generate);
    let server = pid_str(args.server_pid);
    let before = server.as_deref().and_then(procstat::sample);

    let (mut conns, failed, first_err) =
        open_many(&target, n, args.connect_concurrency, device.as_ref()).await?;
    if failed > 0 {
        return Err(format!(
            "{failed} of {n} connections failed: {}",
            first_err.unwrap_or_default()
        ));
    }
    // `invoke`: one built-in node client per connection, listed everywhere before the run.
    let mut node_ids = Vec::new();
    let mut nodes = Vec::new();
    if args.workload == Workload::Invoke {
        for i in 0..n {
            let id = DeviceIdentity::generate();
            let (ws, _) = client::connect_as(&target, n + i, client::Role::Node(&id)).await?;
            node_ids.push(id.device_id());
            nodes.push(ws);
        }
        wait_nodes_listed(&mut conns, &node_ids).await?;
    }
    let words = args.words();
    let message = (1..=words.max(1))
        .map(|i| format!("w{i}"))
        .collect::<Vec<_>>()
        .join(" ");
    if args.fleet_child {
        fleet::child_ready(json!({"ready": true})).await?;
    }
    let ready = Instant::now();
    let start = ready + args.warmup;
    let end = start + args.duration;
    let rate = args.rate.unwrap_or(0.0);
    let plan = Rc::new(Plan {
        workload: args.workload,
        mode: args.mode,
        inflight: args.inflight.max(1),
        interval: if rate > 0.0 {
            Duration::from_secs_f64(n as f64 / rate)
        } else {
            Duration::from_secs(1)
        },
        connections: n,
        open_from: start
            .checked_sub(args.warmup.min(Duration::from_secs(1)))
            .unwrap_or(start),
        start,
        end,
        drain_until: end + args.drain,
        message,
        tag: run_tag(),
    });
    let stats = Rc::new(RefCell::new(Stats::new()));
    let node_stop = plan.drain_until + Duration::from_secs(1);
    for (ws, id) in nodes.into_iter().zip(node_ids.iter()) {
        tokio::task::spawn_local(load::node_client(ws, id.clone(), node_stop));
    }
    // Open loop: each connection sends when the pacer rings its bell (closed: never rung).
    let mut bells = match plan.mode {
        Mode::Open => load::start_pacer(&plan),
        Mode::Closed => Vec::new(),
    }
    .into_iter();
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, (ws, shard))| {
            let key = match node_ids.get(i) {
                Some(node) => node.clone(),
                None => load::session_key(i, shard, args.placement, args.shards),
            };
            let bell = bells.next().unwrap_or_default();
            tokio::task::spawn_local(load::drive(ws, i, key, plan.clone(), stats.clone(), bell))
        })
        .collect();

    tokio::time::sleep_until(start.into()).await;
    let s0 = server.as_deref().and_then(procstat::sample);
    let me0 = procstat::cpu_seconds("self");
    let m0 = procstat::machine_busy_seconds();
    tokio::time::sleep_until(end.into()).await;
    let s1 = server.as_deref().and_then(procstat::sample);
    let me1 = procstat::cpu_seconds("self");
    let m1 = procstat::machine_busy_seconds();
    let t1 = Instant::now();
    for t in tasks {
        let _ = t.await;
    }
    let window = (t1 - start).as_secs_f64().max(1e-9);
    let st = stats.borrow();
    let load_cpu_s = me0.zip(me1).map(|(a, b)| b - a);
    if args.fleet_child {
        return Ok(fleet::raw(&st, window, load_cpu_s));
    }
    let server = before.zip(s0).zip(s1).map(|((b, s0), s1)| (b, s0, s1));
    let measured = Measured {
        window,
        load_cpu_s,
        machine: m0.zip(m1),
        server,
    };
    Ok(render(args, words, plan.inflight, &st, &measured))
}

/// What was measured around a window besides the client's own counts.
pub(crate) struct Measured {
    /// The window, seconds.
    pub(crate) window: f64,
    /// CPU seconds of the load generator (all its processes) in the window.
    pub(crate) load_cpu_s: Option<f64>,
    /// The machine's busy and steal seconds at the window's start and end.
    pub(crate) machine: Option<((f64, f64), (f64, f64))>,
    /// The server before connecting, at the window's start and at its end.
    pub(crate) server: Option<(
        procstat::ProcSample,
        procstat::ProcSample,
        procstat::ProcSample,
    )>,
}

/// The report of a load run (one JSON object), from its counts and what was measured.
pub(crate) fn render(
    args: &Args,
    words: usize,
    inflight: usize,
    st: &Stats,
    m: &Measured,
) -> serde_json::Value {
    let window = m.window;
    let h = &st.hist;
    let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let req_s = st.completed as f64 / window;
    let open = args.mode == Mode::Open;
    let mut v = json!({
        "label": args.label,
        "kind": "load",
        "workload": args.workload,
        "mode": args.mode,
        "connections": args.connections,
        "inflight": if open { json!(null) } else { json!(inflight) },
        "rate": args.rate,
        "words": words,
        "placement": args.placement,
        "shards": args.shards,
        "duration_s": window,
        "requests": st.completed,
        "requests_per_s": req_s,
        "offered_per_s": st.sent as f64 / window,
        "events_per_s": st.events as f64 / window,
        "frames_per_s": st.frames as f64 / window,
        "p50_us": us(0.50),
        "p90_us": us(0.90),
        "p99_us": us(0.99),
        "p99_9_us": us(0.999),
        "max_us": h.max() as f64 / 1000.0,
        "mean_us": h.mean() / 1000.0,
        "latency_samples": h.len(),
        "send_lag_p99_us": if open { json!(st.send_lag.value_at_quantile(0.99) as f64 / 1000.0) } else { json!(null) },
        "send_lag_max_us": if open { json!(st.send_lag.max() as f64 / 1000.0) } else { json!(null) },
        "load_cpu_util": m.load_cpu_s.map(|c| c / window),
    });
    st.put_counters(&mut v);
    if let Some((m0, m1)) = m.machine {
        v["machine_busy_cores"] = json!((m1.0 - m0.0) / window);
        v["steal_cores"] = json!((m1.1 - m0.1) / window);
        // Whatever ran besides the server and us (other builds on a shared machine) skews a run.
        let server_cpu = m.server.as_ref().map(|(_, a, b)| b.cpu_s - a.cpu_s);
        if let Some(ours) = server_cpu.zip(m.load_cpu_s).map(|(a, b)| a + b) {
            v["other_busy_cores"] = json!(((m1.0 - m0.0) - ours).max(0.0) / window);
        }
    }
    if let Some((b, s0, s1)) = &m.server {
        let cpu = s1.cpu_s - s0.cpu_s;
        v["server_cpu_s"] = json!(cpu);
        v["server_cpu_util"] = json!(cpu / window);
        v["requests_per_server_cpu_s"] = if cpu > 0.0 {
            json!(st.completed as f64 / cpu)
        } else {
            json!(null)
        };
        v["server_rss_before_kib"] = json!(b.rss_kib);
        v["server_rss_after_kib"] = json!(s1.rss_kib);
    }
    v
}

fn print_table(v: &serde_json::Value) {
    let obj = v.as_object().expect("report object");
    println!("{:<28} value", "metric");
    for (k, val) in obj {
        let shown = match val {
            serde_json::Value::Number(n) => match n.as_f64() {
                Some(f) if n.is_f64() => format!("{f:.3}"),
                _ => n.to_string(),
            },
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Null => "-".into(),
            other => other.to_string(),
        };
        println!("{k:<28} {shown}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("3h").is_err());
    }
}
