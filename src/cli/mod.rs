//! The command line: `serve` runs the gateway; `call` is a small OpenClaw client for operators.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::{AuthMode, Config, Overrides};

mod call;
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

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SHARDGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Pretty => b.init(),
        LogFormat::Json => b.json().init(),
    }
}

/// Parses the command line, runs it, returns the exit code.
pub fn run() -> i32 {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(a) => {
            init_logs(a.log_format);
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
    }
}
