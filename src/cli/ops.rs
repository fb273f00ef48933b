//! Operator commands of SPEC §9: the binary talks to a running gateway over the protocol and
//! prints human tables (or `--json`), exiting non-zero on failure.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::client::Client;

/// How to reach the gateway (shared by every operator command).
#[derive(Debug, Clone, Args)]
pub struct Target {
    /// Gateway URL.
    #[arg(
        long,
        global = true,
        default_value = "ws://127.0.0.1:18789",
        env = "SHARDGATE_URL"
    )]
    pub url: String,
    /// Shared token (also OPENCLAW_GATEWAY_TOKEN).
    #[arg(long, global = true, env = "OPENCLAW_GATEWAY_TOKEN")]
    pub token: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// Give up after this many milliseconds.
    #[arg(long, global = true, default_value_t = 30_000)]
    pub timeout: u64,
}

/// `shardgate gateway …`
#[derive(Debug, Subcommand)]
pub enum GatewayCmd {
    /// Gateway status (version, uptime, shards, connections, sessions).
    Status {
        /// Also per-shard detail.
        #[arg(long)]
        verbose: bool,
    },
    /// Health of the gateway and what it depends on.
    Health {
        /// Include per-shard and dependency detail.
        #[arg(long)]
        detailed: bool,
    },
    /// Connections, grouped by channel (client mode) or listed.
    Connections {
        /// Counts by channel (the default).
        #[arg(long)]
        by_channel: bool,
        /// Every connection.
        #[arg(long)]
        all: bool,
    },
    /// Throughput over a period.
    Stats {
        /// Period like 15m, 1h, 24h.
        #[arg(long, default_value = "1h")]
        period: String,
        /// Comma-separated: messages, events, runs, errors.
        #[arg(long, default_value = "messages")]
        metrics: String,
    },
    /// Request latency percentiles (ms).
    Latency {
        /// Comma-separated percentiles.
        #[arg(long, default_value = "50,95,99")]
        percentiles: String,
    },
    /// Every pipeline stage one message passed, with timestamps and shards.
    Trace {
        /// The message id (idempotencyKey / runId).
        #[arg(long)]
        message_id: String,
    },
    /// Round-trip time to the gateway (or one channel's status).
    Ping {
        /// Channel to check.
        #[arg(long)]
        channel: Option<String>,
        /// How many pings.
        #[arg(long, default_value_t = 5)]
        count: u32,
    },
    /// Checks on the running gateway, with warnings.
    Diagnose {
        /// Include per-shard detail.
        #[arg(long)]
        full: bool,
    },
    /// CPU (per shard), memory and top methods over a window.
    Profile {
        /// Report CPU time per shard.
        #[arg(long)]
        cpu: bool,
        /// Report memory.
        #[arg(long)]
        memory: bool,
        /// Window like 10s, 60s.
        #[arg(long, default_value = "10s")]
        duration: String,
    },
    /// Drive real load (agent runs) and report throughput and latency. Arguments after `--`
    /// run the full load generator instead (`shardgate-load`, next to this binary: workloads,
    /// open loop, percentiles, server CPU; see `shardgate-load --help`), with this command's
    /// --url and --token, e.g. `shardgate gateway stress -- --workload chat --connections 100`.
    Stress {
        /// Total agent runs.
        #[arg(long, default_value_t = 1000)]
        messages: u64,
        /// Parallel connections.
        #[arg(long, default_value_t = 10)]
        concurrency: u64,
        /// `shardgate-load` arguments (after `--`).
        #[arg(last = true, value_name = "LOAD_ARGS")]
        load: Vec<String>,
    },
    /// Security audit of the running configuration.
    Audit {
        /// Security findings (the default).
        #[arg(long)]
        security: bool,
    },
}

/// `shardgate queue …`
#[derive(Debug, Subcommand)]
pub enum QueueCmd {
    /// Depth, bound, dead letters.
    Status {
        /// List dead letters too.
        #[arg(long)]
        dead_letter: bool,
    },
    /// Counters (accepted, completed, retries, dead-lettered…).
    Stats {
        /// Per shard and dedup detail.
        #[arg(long)]
        detailed: bool,
    },
    /// Messages waiting or running (or dead letters).
    Inspect {
        /// How many.
        #[arg(long, default_value_t = 10)]
        limit: u64,
        /// Dead letters instead of live messages.
        #[arg(long)]
        dead_letter: bool,
    },
    /// Re-queue dead letters.
    Redrive {
        /// One dead letter (its id or message id).
        #[arg(long)]
        id: Option<String>,
        /// All of them.
        #[arg(long)]
        all: bool,
    },
}

fn connect(t: &Target) -> Result<Client, String> {
    Client::connect(
        &t.url,
        t.token.as_deref(),
        &["operator.admin"],
        Duration::from_millis(t.timeout),
    )
    .map_err(|e| e.to_string())
}

fn call(t: &Target, method: &str, params: Value) -> Result<Value, String> {
    let mut c = connect(t)?;
    let r = c
        .request(method, params, false, |_| {})
        .map_err(|e| e.to_string());
    c.close();
    r
}

fn print_kv(rows: &[(&str, String)]) {
    let w = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in rows {
        println!("{k:<w$}  {v}");
    }
}

fn print_table(head: &[&str], rows: &[Vec<String>]) {
    let mut w: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < w.len() {
                w[i] = w[i].max(c.len());
            }
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = w[i]))
            .collect::<Vec<_>>()
            .join("  ")
    };
    println!("{}", line(head.iter().map(|s| s.to_string()).collect()));
    for r in rows {
        println!("{}", line(r.clone()));
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn out(t: &Target, v: &Value, human: impl FnOnce(&Value)) {
    if t.json {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    } else {
        human(v);
    }
}

/// Runs a `gateway` subcommand.
pub(super) fn gateway(cmd: GatewayCmd, t: &Target) -> Result<(), String> {
    match cmd {
        GatewayCmd::Status { verbose } => {
            let v = call(t, "status", json!({}))?;
            out(t, &v, |v| {
                let g = &v["gateway"];
                print_kv(&[
                    ("version", s(&v["shardgateVersion"])),
                    ("pid", s(&v["pid"])),
                    (
                        "uptime",
                        format!("{} s", g["uptimeMs"].as_u64().unwrap_or(0) / 1000),
                    ),
                    ("shards", s(&g["shards"])),
                    ("connections", s(&g["connections"])),
                    ("sessions", s(&v["sessions"]["count"])),
                ]);
                if verbose {
                    let rows: Vec<Vec<String>> = g["perShard"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|r| {
                            vec![
                                s(&r["shard"]),
                                s(&r["connections"]),
                                s(&r["sockets"]),
                                s(&r["sessions"]),
                                s(&r["inflightRuns"]),
                            ]
                        })
                        .collect();
                    println!();
                    print_table(
                        &["shard", "connections", "sockets", "sessions", "inflight"],
                        &rows,
                    );
                    let c = &v["cluster"];
                    if c.is_object() {
                        println!();
                        let owned: Vec<String> = c["slots"]["owned"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|o| format!("{}@{}", s(&o["slot"]), s(&o["epoch"])))
                            .collect();
                        print_kv(&[
                            ("cluster member", s(&c["me"])),
                            ("live members", s(&c["members"]["live"])),
                            ("missing members", s(&c["members"]["missingExpected"])),
                            ("owned slots (slot@epoch)", owned.join(" ")),
                            ("slots elsewhere", s(&c["slots"]["elsewhere"])),
                            ("renew rtt", format!("{} ms", s(&c["renew"]["rttMs"]))),
                            ("redis errors", s(&c["errors"]["redis"])),
                        ]);
                    }
                }
            });
        }
        GatewayCmd::Health { detailed } => {
            let v = call(t, "health", json!({}))?;
            out(t, &v, |v| {
                print_kv(&[
                    (
                        "status",
                        if v["ok"] == true {
                            "healthy".into()
                        } else {
                            "unhealthy".into()
                        },
                    ),
                    ("check took", format!("{} ms", s(&v["durationMs"]))),
                    ("default agent", s(&v["defaultAgentId"])),
                    ("sessions", s(&v["sessions"]["count"])),
                    ("connections", s(&v["gateway"]["connections"])),
                ]);
                if detailed {
                    if let Ok(d) = call(t, "gateway.diagnose", json!({})) {
                        println!();
                        let rows: Vec<Vec<String>> = d["checks"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|c| vec![s(&c["check"]), s(&c["status"]), s(&c["detail"])])
                            .collect();
                        print_table(&["check", "status", "detail"], &rows);
                    }
                }
            });
            if v["ok"] != true {
                return Err("gateway unhealthy".into());
            }
        }
        GatewayCmd::Connections { by_channel: _, all } => {
            let v = call(t, "gateway.connections", json!({"all": all}))?;
            out(t, &v, |v| {
                if all {
                    let rows: Vec<Vec<String>> = v["connections"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|c| {
                            vec![
                                s(&c["shard"]),
                                s(&c["peer"]),
                                s(&c["role"]),
                                s(&c["clientId"]),
                                s(&c["mode"]),
                                s(&c["bufferedBytes"]),
                                format!("{} s", c["ageMs"].as_i64().unwrap_or(0) / 1000),
                            ]
                        })
                        .collect();
                    print_table(
                        &["shard", "peer", "role", "client", "mode", "buffered", "age"],
                        &rows,
                    );
                } else {
                    let rows: Vec<Vec<String>> = v["byChannel"]
                        .as_object()
                        .into_iter()
                        .flatten()
                        .map(|(k, n)| vec![k.clone(), s(n)])
                        .collect();
                    print_table(&["channel", "connections"], &rows);
                    println!("total {}", s(&v["total"]));
                }
            });
        }
        GatewayCmd::Stats { period, metrics } => {
            let m: Vec<&str> = metrics.split(',').map(str::trim).collect();
            let v = call(t, "gateway.stats", json!({"period": period, "metrics": m}))?;
            out(t, &v, |v| {
                let rows: Vec<Vec<String>> = v["metrics"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, x)| {
                        vec![
                            k.clone(),
                            s(&x["total"]),
                            format!("{:.2}", x["perSecond"].as_f64().unwrap_or(0.0)),
                        ]
                    })
                    .collect();
                println!("period {} ({} minutes)", s(&v["period"]), s(&v["minutes"]));
                print_table(&["metric", "total", "per second"], &rows);
            });
        }
        GatewayCmd::Latency { percentiles } => {
            let p: Vec<&str> = percentiles.split(',').map(str::trim).collect();
            let v = call(t, "gateway.latency", json!({"percentiles": p}))?;
            out(t, &v, |v| {
                let mut head = vec!["method".to_string(), "count".to_string()];
                head.extend(p.iter().map(|x| format!("p{x} ms")));
                let mut rows = Vec::new();
                let mut push = |name: String, m: &Value| {
                    let mut r = vec![name, s(&m["count"])];
                    for x in &p {
                        r.push(format!(
                            "{:.3}",
                            m["percentiles"][format!("p{x}")].as_f64().unwrap_or(0.0)
                        ));
                    }
                    rows.push(r);
                };
                push("(all)".into(), &v["overall"]);
                for (k, m) in v["methods"].as_object().into_iter().flatten() {
                    push(k.clone(), m);
                }
                let head: Vec<&str> = head.iter().map(String::as_str).collect();
                print_table(&head, &rows);
            });
        }
        GatewayCmd::Trace { message_id } => {
            let v = call(t, "gateway.trace", json!({"messageId": message_id}))?;
            out(t, &v, |v| {
                let t0 = v["stages"][0]["ts"].as_i64().unwrap_or(0);
                let rows: Vec<Vec<String>> = v["stages"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|st| {
                        vec![
                            format!("+{} ms", st["ts"].as_i64().unwrap_or(0) - t0),
                            s(&st["shard"]),
                            s(&st["stage"]),
                            s(&st["detail"]),
                        ]
                    })
                    .collect();
                println!("message {}", s(&v["messageId"]));
                print_table(&["at", "shard", "stage", "detail"], &rows);
            });
        }
        GatewayCmd::Ping { channel, count } => {
            let mut c = connect(t)?;
            let mut times = Vec::new();
            for _ in 0..count.max(1) {
                let t0 = Instant::now();
                let r = match &channel {
                    Some(_) => c.request("channels.status", json!({}), false, |_| {}),
                    None => c.request("health", json!({}), false, |_| {}),
                };
                r.map_err(|e| e.to_string())?;
                times.push(t0.elapsed().as_secs_f64() * 1000.0);
            }
            c.close();
            let v = json!({"channel": channel, "rttMs": times, "minMs": times.iter().cloned().fold(f64::MAX, f64::min),
                           "avgMs": times.iter().sum::<f64>() / times.len() as f64});
            out(t, &v, |v| {
                println!(
                    "{}: {} pings, min {:.3} ms, avg {:.3} ms",
                    channel.as_deref().unwrap_or("gateway"),
                    times.len(),
                    v["minMs"].as_f64().unwrap_or(0.0),
                    v["avgMs"].as_f64().unwrap_or(0.0)
                )
            });
        }
        GatewayCmd::Diagnose { full } => {
            let v = call(t, "gateway.diagnose", json!({}))?;
            out(t, &v, |v| {
                let rows: Vec<Vec<String>> = v["checks"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|c| vec![s(&c["check"]), s(&c["status"]), s(&c["detail"])])
                    .collect();
                print_table(&["check", "status", "detail"], &rows);
                if full {
                    println!(
                        "\n{}",
                        serde_json::to_string_pretty(&v["perShard"]).unwrap_or_default()
                    );
                }
            });
        }
        GatewayCmd::Profile {
            cpu,
            memory,
            duration,
        } => {
            let ms = crate::config::Millis::parse(&duration)?;
            let t2 = Target {
                timeout: t.timeout.max(ms.0 + 10_000),
                ..t.clone()
            };
            let v = call(&t2, "gateway.profile", json!({"duration": duration}))?;
            out(t, &v, |v| {
                let all = !cpu && !memory;
                if cpu || all {
                    let rows: Vec<Vec<String>> = v["cpu"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|c| {
                            vec![
                                s(&c["thread"]),
                                format!("{:.2}", c["cpuSeconds"].as_f64().unwrap_or(0.0)),
                                format!("{:.1}%", 100.0 * c["busyRatio"].as_f64().unwrap_or(0.0)),
                            ]
                        })
                        .collect();
                    print_table(&["shard", "cpu s", "busy"], &rows);
                }
                if memory || all {
                    println!(
                        "rss {} KiB -> {} KiB",
                        s(&v["memory"]["rssKiBStart"]),
                        s(&v["memory"]["rssKiBEnd"])
                    );
                }
                let rows: Vec<Vec<String>> = v["topMethods"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|m| {
                        vec![
                            s(&m["method"]),
                            s(&m["calls"]),
                            format!("{:.1}", m["totalMs"].as_f64().unwrap_or(0.0)),
                        ]
                    })
                    .collect();
                if !rows.is_empty() {
                    print_table(&["method", "calls", "total ms"], &rows);
                }
            });
        }
        GatewayCmd::Stress {
            messages,
            concurrency,
            load,
        } if load.is_empty() => stress(t, messages, concurrency)?,
        GatewayCmd::Stress { load, .. } => load_generator(t, &load)?,
        GatewayCmd::Audit { security: _ } => {
            let v = call(t, "gateway.audit", json!({}))?;
            out(t, &v, |v| {
                let rows: Vec<Vec<String>> = v["findings"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|f| vec![s(&f["severity"]), s(&f["id"]), s(&f["message"])])
                    .collect();
                if rows.is_empty() {
                    println!("no findings");
                } else {
                    print_table(&["severity", "finding", "detail"], &rows);
                }
            });
        }
    }
    Ok(())
}

/// `gateway stress -- ARGS`: runs `shardgate-load` (built next to this binary by the
/// workspace) with `ARGS`, this command's URL (`ws://host:port/`) and its token (through the
/// environment, not the command line), and exits with its status.
fn load_generator(t: &Target, args: &[String]) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| format!("own executable: {e}"))?;
    let load = exe.with_file_name("shardgate-load");
    if !load.is_file() {
        return Err(format!(
            "{} not found: build it with `cargo build --release -p shardgate-perf`",
            load.display()
        ));
    }
    let mut url = t.url.clone();
    if !url.ends_with('/') {
        url.push('/');
    }
    let mut cmd = std::process::Command::new(&load);
    cmd.arg("--url").arg(&url).args(args);
    if let Some(token) = &t.token {
        cmd.env("SHARDGATE_TOKEN", token);
    }
    if t.json && !args.iter().any(|a| a == "--json") {
        cmd.arg("--json");
    }
    let status = cmd
        .status()
        .map_err(|e| format!("{}: {e}", load.display()))?;
    if !status.success() {
        std::process::exit(status.code().unwrap_or(1));
    }
    Ok(())
}

/// `gateway stress`: `concurrency` connections run `messages` agent calls in all.
fn stress(t: &Target, messages: u64, concurrency: u64) -> Result<(), String> {
    let concurrency = concurrency.clamp(1, 1000);
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let run_tag = uuid::Uuid::new_v4().to_string();
    let mut handles = Vec::new();
    for w in 0..concurrency {
        let share = messages / concurrency + u64::from(w < messages % concurrency);
        let (t, done, failed, tag) = (t.clone(), done.clone(), failed.clone(), run_tag.clone());
        let client = std::thread::Builder::new().name(format!("stress-{w}"));
        let handle = client.spawn(move || -> Result<Vec<u64>, String> {
            let mut c = connect(&t)?;
            let mut lat = Vec::with_capacity(share as usize);
            for i in 0..share {
                let t0 = Instant::now();
                let r = c.request(
                    "agent",
                    json!({"message": "stress test message", "sessionKey": format!("stress-{tag}-{w}"), "idempotencyKey": format!("stress-{tag}-{w}-{i}")}),
                    true,
                    |_| {},
                );
                lat.push(t0.elapsed().as_micros() as u64);
                if r.is_err() {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            c.close();
            Ok(lat)
        });
        handles.push(handle.map_err(|e| format!("cannot start a client thread: {e}"))?);
    }
    let mut last = 0;
    while done.load(Ordering::Relaxed) < messages && handles.iter().any(|h| !h.is_finished()) {
        std::thread::sleep(Duration::from_millis(200));
        let d = done.load(Ordering::Relaxed);
        let pct = d * 100 / messages.max(1);
        if pct / 10 != last / 10 && !t.json {
            let bar = "#".repeat((pct / 5) as usize);
            eprint!("\r[{bar:<20}] {pct:>3}% ({d}/{messages})");
            last = pct;
        }
    }
    if !t.json {
        eprintln!();
    }
    let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)
        .map_err(|e| e.to_string())?;
    for th in handles {
        for v in th
            .join()
            .map_err(|_| "a stress thread panicked".to_string())??
        {
            let _ = h.record(v.max(1));
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let v = json!({"messages": messages, "concurrency": concurrency, "failed": failed.load(Ordering::Relaxed),
                   "seconds": secs, "perSecond": messages as f64 / secs,
                   "latencyMs": {"p50": h.value_at_quantile(0.5) as f64 / 1000.0, "p95": h.value_at_quantile(0.95) as f64 / 1000.0,
                                 "p99": h.value_at_quantile(0.99) as f64 / 1000.0, "max": h.max() as f64 / 1000.0}});
    out(t, &v, |v| {
        print_kv(&[
            ("runs", format!("{messages} ({} failed)", s(&v["failed"]))),
            ("concurrency", concurrency.to_string()),
            (
                "throughput",
                format!("{:.1} runs/s", v["perSecond"].as_f64().unwrap_or(0.0)),
            ),
            (
                "p50",
                format!("{:.3} ms", v["latencyMs"]["p50"].as_f64().unwrap_or(0.0)),
            ),
            (
                "p95",
                format!("{:.3} ms", v["latencyMs"]["p95"].as_f64().unwrap_or(0.0)),
            ),
            (
                "p99",
                format!("{:.3} ms", v["latencyMs"]["p99"].as_f64().unwrap_or(0.0)),
            ),
            (
                "max",
                format!("{:.3} ms", v["latencyMs"]["max"].as_f64().unwrap_or(0.0)),
            ),
        ])
    });
    if v["failed"].as_u64().unwrap_or(0) > 0 {
        return Err(format!("{} runs failed", s(&v["failed"])));
    }
    Ok(())
}

/// Runs a `queue` subcommand.
pub(super) fn queue(cmd: QueueCmd, t: &Target) -> Result<(), String> {
    match cmd {
        QueueCmd::Status { dead_letter } => {
            let mut v = call(t, "queue.status", json!({}))?;
            if dead_letter && t.json {
                v["deadLetterItems"] = call(
                    t,
                    "queue.inspect",
                    json!({"limit": 100, "deadLetter": true}),
                )?["items"]
                    .take();
                out(t, &v, |_| {});
                return Ok(());
            }
            out(t, &v, |v| {
                print_kv(&[
                    ("backend", s(&v["backend"])),
                    (
                        "depth",
                        format!("{} / {}", s(&v["depth"]), s(&v["maxSize"])),
                    ),
                    ("dead letters", s(&v["deadLetters"])),
                ])
            });
            if dead_letter {
                queue(
                    QueueCmd::Inspect {
                        limit: 100,
                        dead_letter: true,
                    },
                    t,
                )?;
            }
        }
        QueueCmd::Stats { detailed } => {
            let v = call(t, "queue.stats", json!({}))?;
            out(t, &v, |v| {
                let rows: Vec<Vec<String>> = v["total"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter(|(_, x)| x.is_number())
                    .map(|(k, x)| vec![k.clone(), s(x)])
                    .collect();
                print_table(&["counter", "value"], &rows);
                if detailed {
                    println!("\n{}", serde_json::to_string_pretty(&json!({"perShard": v["perShard"], "dedup": v["dedup"], "retryPolicy": v["retryPolicy"]})).unwrap_or_default());
                }
            });
        }
        QueueCmd::Inspect { limit, dead_letter } => {
            let v = call(
                t,
                "queue.inspect",
                json!({"limit": limit, "deadLetter": dead_letter}),
            )?;
            out(t, &v, |v| {
                let rows: Vec<Vec<String>> = v["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|i| {
                        if dead_letter {
                            let last = i["errors"]
                                .as_array()
                                .and_then(|e| e.last())
                                .map(|e| s(&e["error"]))
                                .unwrap_or_default();
                            vec![
                                s(&i["id"]),
                                s(&i["messageId"]),
                                s(&i["sessionKey"]),
                                s(&i["attempts"]),
                                last,
                            ]
                        } else {
                            vec![
                                s(&i["messageId"]),
                                s(&i["sessionKey"]),
                                s(&i["state"]),
                                s(&i["shard"]),
                            ]
                        }
                    })
                    .collect();
                if dead_letter {
                    print_table(
                        &[
                            "dead letter",
                            "message",
                            "session",
                            "attempts",
                            "last error",
                        ],
                        &rows,
                    );
                } else {
                    print_table(&["message", "session", "state", "shard"], &rows);
                }
            });
        }
        QueueCmd::Redrive { id, all } => {
            if id.is_none() && !all {
                return Err("give --id ID or --all".into());
            }
            let v = call(t, "queue.redrive", json!({"id": id, "all": all}))?;
            out(t, &v, |v| println!("redriven {}", s(&v["redriven"])));
        }
    }
    Ok(())
}

/// `shardgate logs --grep PATTERN`: lines of the gateway's log files containing PATTERN.
pub(super) fn logs(
    state_dir: Option<PathBuf>,
    grep: Option<String>,
    tail: usize,
) -> Result<(), String> {
    let dir = crate::config::Config {
        state_dir,
        ..Default::default()
    }
    .state_dir()
    .join("logs");
    let files = crate::ops::logs_tail::log_files(&dir).map_err(|e| {
        format!(
            "no logs in {}: {e} (has the gateway run with this state dir?)",
            dir.display()
        )
    })?;
    let mut lines: Vec<String> = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        lines.extend(
            text.lines()
                .filter(|l| grep.as_deref().is_none_or(|g| l.contains(g)))
                .map(str::to_string),
        );
    }
    let skip = lines.len().saturating_sub(tail);
    for l in &lines[skip..] {
        println!("{l}");
    }
    Ok(())
}
