//! The command line: `serve` runs the gateway; `call` is a small OpenClaw client for operators.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::{AuthMode, Config, Overrides};

mod call;
mod doctor;
mod doctor_redis;
mod ops;
mod watch;
mod worker;

/// shardgate: a thread-per-core, io_uring gateway for OpenClaw clients.
#[derive(Debug, Parser)]
#[command(name = "shardgate", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway (default 127.0.0.1:18789, in-memory queue, built-in echo agent).
    Serve(ServeArgs),
    /// Call one method on a running gateway and print the answer as JSON.
    Call(call::CallArgs),
    /// Run an agent worker (echo behaviour) that serves runs of a gateway's agents.
    Worker(worker::WorkerArgs),
    /// Operator commands against a running gateway (status, health, stats, trace, stress…).
    Gateway {
        /// What to do.
        #[command(subcommand)]
        cmd: ops::GatewayCmd,
        /// Where the gateway is.
        #[command(flatten)]
        target: ops::Target,
    },
    /// The delivery queue of a running gateway (status, stats, inspect, redrive).
    Queue {
        /// What to do.
        #[command(subcommand)]
        cmd: ops::QueueCmd,
        /// Where the gateway is.
        #[command(flatten)]
        target: ops::Target,
    },
    /// Watch a gateway from outside and raise `gateway_down` to a sink when it stops answering.
    Watch(watch::WatchArgs),
    /// Lines of the gateway's log files (in the state dir) that contain PATTERN.
    Logs {
        /// Substring to look for.
        #[arg(long)]
        grep: Option<String>,
        /// Show at most the last N matching lines.
        #[arg(long, default_value_t = 200)]
        tail: usize,
        /// State directory of the gateway.
        #[arg(long, env = "SHARDGATE_STATE_DIR")]
        state_dir: Option<PathBuf>,
    },
    /// Check this host and configuration (works without a running gateway).
    Doctor {
        /// JSON5 config file to check.
        #[arg(long)]
        config: Option<PathBuf>,
        /// State directory.
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// Port to check.
        #[arg(long)]
        port: Option<u16>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `--auth` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum AuthArg {
    /// No shared secret (loopback deployments).
    None,
    /// `auth.token` must match `--token`.
    Token,
    /// `auth.password` must match `--password`.
    Password,
}

/// Log output format.
#[derive(Debug, Clone, Copy, ValueEnum, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Pretty,
    /// One JSON object per line.
    Json,
}

/// `shardgate serve`
#[derive(Debug, Parser)]
pub struct ServeArgs {
    /// JSON5 config file (OpenClaw `openclaw.json` shape plus the seed article's keys:
    /// gateway, queue, deduplication, ordering, network, agents, shards, stateDir).
    /// Durable queue: `queue.backend` "journal" (local segments) or "redis" with
    /// `queue.redis.url` "redis://[user:pass@]host:port" (keyPrefix, slots, commandTimeout).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Port to listen on (0 picks a free one; the ready line tells which). Default 18789.
    #[arg(long, value_name = "N")]
    pub port: Option<u16>,
    /// `loopback` (127.0.0.1, the default), `lan` (0.0.0.0) or an IP address.
    #[arg(long, value_name = "loopback|lan|ADDR")]
    pub bind: Option<String>,
    /// Shared token clients must send in `connect.params.auth.token`.
    /// Also read from OPENCLAW_GATEWAY_TOKEN or SHARDGATE_TOKEN.
    #[arg(long, value_name = "T")]
    pub token: Option<String>,
    /// Shared password (`--auth password`). Also OPENCLAW_GATEWAY_PASSWORD.
    #[arg(long, value_name = "P")]
    pub password: Option<String>,
    /// Authentication mode; default: token when a token is set, else none.
    #[arg(long, value_enum)]
    pub auth: Option<AuthArg>,
    /// State directory: paired devices, the singleton lock. Default $SHARDGATE_STATE_DIR or
    /// ~/.shardgate.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Number of shards (one pinned core each); default "auto" = one per CPU.
    #[arg(long, value_name = "N")]
    pub shards: Option<usize>,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,
    /// Serve a plain WebSocket echo at /echo, for the Autobahn conformance suite only.
    #[arg(long)]
    pub dangerously_enable_ws_echo: bool,
}

/// Logs go to stderr and, when a state dir is known, to `<stateDir>/logs/shardgate.log.<date>`
/// (rotated daily, 7 files kept; one JSON object per line, see [`crate::ops::log_lines`]) for
/// `shardgate logs --grep` and the `logs.tail` method. The returned guard flushes the
/// file writer when dropped.
fn init_logs(
    format: LogFormat,
    state_dir: Option<&std::path::Path>,
) -> Option<tracing_appender::non_blocking::WorkerGuard> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    // One filter for both outputs: an event is checked once, not once per layer.
    let filter = tracing_subscriber::EnvFilter::try_from_env("SHARDGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let stderr = match format {
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .boxed(),
    };
    let (file, guard) = match state_dir.map(|d| d.join("logs")) {
        Some(dir) if std::fs::create_dir_all(&dir).is_ok() => {
            match tracing_appender::rolling::Builder::new()
                .rotation(tracing_appender::rolling::Rotation::DAILY)
                .filename_prefix("shardgate.log")
                .max_log_files(7)
                .build(&dir)
            {
                Ok(appender) => {
                    let (w, g) = tracing_appender::non_blocking(appender);
                    (
                        Some(
                            tracing_subscriber::fmt::layer()
                                .with_ansi(false)
                                .event_format(crate::ops::log_lines::OpenClawLines)
                                .with_writer(w)
                                .boxed(),
                        ),
                        Some(g),
                    )
                }
                Err(_) => (None, None),
            }
        }
        _ => (None, None),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(stderr)
        .with(file)
        .init();
    guard
}

fn report(r: Result<(), String>) -> i32 {
    match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("shardgate: {e}");
            1
        }
    }
}

/// Parses the command line, runs it, returns the exit code.
pub fn run() -> i32 {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(a) => {
            let ov = Overrides {
                port: a.port,
                bind: a.bind.clone(),
                token: a.token.clone(),
                password: a.password.clone(),
                auth: a.auth.map(|m| match m {
                    AuthArg::None => AuthMode::None,
                    AuthArg::Token => AuthMode::Token,
                    AuthArg::Password => AuthMode::Password,
                }),
                state_dir: a.state_dir.clone(),
                shards: a.shards,
            };
            let loaded = match Config::load(a.config.as_deref(), &ov) {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("shardgate: {e}");
                    return 2;
                }
            };
            let _log_guard = init_logs(a.log_format, Some(&loaded.config.state_dir()));
            for w in &loaded.warnings {
                tracing::warn!("{w}");
            }
            let mut config = loaded.config;
            if a.dangerously_enable_ws_echo {
                config.gateway.dangerously_enable_ws_echo = true;
            }
            match crate::app::serve(config) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("shardgate: {e:#}");
                    1
                }
            }
        }
        Command::Call(a) => call::run(a),
        Command::Worker(a) => worker::main(a),
        Command::Gateway { cmd, target } => report(ops::gateway(cmd, &target)),
        Command::Watch(a) => watch::main(a),
        Command::Queue { cmd, target } => report(ops::queue(cmd, &target)),
        Command::Logs {
            grep,
            tail,
            state_dir,
        } => report(ops::logs(state_dir, grep, tail)),
        Command::Doctor {
            config,
            state_dir,
            port,
            json,
        } => {
            let ov = Overrides {
                state_dir,
                port,
                ..Default::default()
            };
            let (ok, v) = doctor::check(config.as_deref(), &ov);
            if json {
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                for c in v["checks"].as_array().into_iter().flatten() {
                    println!(
                        "{:<5} {:<22} {}",
                        c["status"].as_str().unwrap_or(""),
                        c["check"].as_str().unwrap_or(""),
                        c["detail"].as_str().unwrap_or("")
                    );
                }
            }
            if ok {
                0
            } else {
                1
            }
        }
    }
}
