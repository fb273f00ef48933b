//! `shardgate call METHOD`: connect, call one method, print the answer (the final one with
//! `--expect-final`), exit non-zero on an error answer.

use std::time::Duration;

use clap::Parser;
use serde_json::Value;

use crate::client::{CallError, Client};

/// `shardgate call`
#[derive(Debug, Parser)]
pub struct CallArgs {
    /// Method name, e.g. `health`, `status`, `agent`.
    pub method: String,
    /// Parameters as a JSON object.
    #[arg(long, default_value = "{}")]
    pub params: String,
    /// Gateway URL.
    #[arg(long, default_value = "ws://127.0.0.1:18789")]
    pub url: String,
    /// Shared token (also OPENCLAW_GATEWAY_TOKEN).
    #[arg(long, env = "OPENCLAW_GATEWAY_TOKEN")]
    pub token: Option<String>,
    /// Scopes to request.
    #[arg(long, default_value = "operator.admin")]
    pub scopes: String,
    /// Wait for the final answer of a two-phase call (`agent`).
    #[arg(long)]
    pub expect_final: bool,
    /// Print events as they arrive (to stderr).
    #[arg(long)]
    pub events: bool,
    /// Give up after this many milliseconds.
    #[arg(long, default_value_t = 30_000)]
    pub timeout: u64,
}

fn call(a: &CallArgs) -> Result<Value, String> {
    let params: Value =
        serde_json::from_str(&a.params).map_err(|e| format!("--params is not JSON: {e}"))?;
    let scopes: Vec<&str> = a.scopes.split(',').filter(|s| !s.is_empty()).collect();
    let mut c = Client::connect(
        &a.url,
        a.token.as_deref(),
        &scopes,
        Duration::from_millis(a.timeout),
    )
    .map_err(|e| e.to_string())?;
    let events = a.events;
    let r = c
        .request(&a.method, params, a.expect_final, |f| {
            if events {
                eprintln!("{f}");
            }
        })
        .map_err(|e| match e {
            CallError::Answer(v) => v.to_string(),
            CallError::Transport(s) => s,
        });
    c.close();
    r
}

/// Runs the command; the exit code.
pub(super) fn run(a: CallArgs) -> i32 {
    match call(&a) {
        Ok(v) => {
            use std::io::Write;
            // A closed stdout (`| head`) is not an error worth a panic.
            let _ = writeln!(
                std::io::stdout(),
                "{}",
                serde_json::to_string_pretty(&v).unwrap_or_default()
            );
            0
        }
        Err(e) => {
            eprintln!("shardgate call: {e}");
            1
        }
    }
}
