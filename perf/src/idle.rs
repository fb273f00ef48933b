//! Idle connections: memory per connection. Opens N connections that complete the handshake
//! and then only read (whatever the server pushes — presence, ticks — is drained so no
//! buffer grows on either side), waits for the server to settle, and reports
//! `(server RSS after − server RSS before) / N`.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Instant;

use futures_util::StreamExt as _;
use serde_json::json;
use shardgate::auth::device::DeviceIdentity;

use crate::client::Target;
use crate::{open_many, procstat, Args, MAX_CONNS_PER_PROCESS};

pub(crate) async fn run(args: &Args, n: usize) -> Result<serde_json::Value, String> {
    let capped = n.min(MAX_CONNS_PER_PROCESS);
    if capped < n {
        eprintln!(
            "shardgate-load: --idle {n} capped at {MAX_CONNS_PER_PROCESS} in one process (20 000 fds per process here)"
        );
    }
    let n = capped.max(1);
    let target = Target::new(
        &args.url,
        &args.token,
        args.source_ips,
        args.source_ip_first,
        args.read_buffer.unwrap_or(4096),
    )?;
    let device = (!args.no_device).then(DeviceIdentity::generate);
    let server = args.server_pid.map(|p| p.to_string());
    let before = server.as_deref().and_then(procstat::sample);
    let me_before = procstat::rss_kib("self");

    let t0 = Instant::now();
    let (conns, failed, first_err) =
        open_many(&target, n, args.connect_concurrency, device.as_ref()).await?;
    let handshake_s = t0.elapsed().as_secs_f64();
    let open = conns.len();
    if open == 0 {
        return Err(format!(
            "no connection opened: {}",
            first_err.unwrap_or_default()
        ));
    }
    let pushed = Rc::new(Cell::new(0u64));
    let dropped = Rc::new(Cell::new(0u64));
    for (mut ws, _) in conns {
        let pushed = pushed.clone();
        let dropped = dropped.clone();
        tokio::task::spawn_local(async move {
            while let Some(m) = ws.next().await {
                if m.is_err() {
                    break;
                }
                pushed.set(pushed.get() + 1);
            }
            dropped.set(dropped.get() + 1);
        });
    }
    if args.fleet_child {
        // One process of a fleet: the parent samples the server once all are connected.
        let grown = procstat::rss_kib("self")
            .zip(me_before)
            .map(|(a, b)| a as f64 - b as f64);
        crate::fleet::child_ready(json!({
            "connections": open,
            "failed": failed,
            "first_error": first_err,
            "handshake_s": handshake_s,
            "client_read_buffer": target.read_buffer,
            "load_rss_delta_kib": grown,
        }))
        .await?;
        return Ok(json!({"frames_pushed": pushed.get(), "closed_by_server": dropped.get()}));
    }
    tokio::time::sleep(args.settle).await;
    let after = server.as_deref().and_then(procstat::sample);
    let me_after = procstat::rss_kib("self");
    let mut v = json!({
        "label": args.label,
        "kind": "idle",
        "connections": open,
        "requested": n,
        "failed": failed,
        "first_error": first_err,
        "handshake_s": handshake_s,
        "handshakes_per_s": open as f64 / handshake_s.max(1e-9),
        "frames_pushed": pushed.get(),
        "closed_by_server": dropped.get(),
        "client_read_buffer": target.read_buffer,
    });
    if let (Some(b), Some(a)) = (before, after) {
        v["server_rss_before_kib"] = json!(b.rss_kib);
        v["server_rss_after_kib"] = json!(a.rss_kib);
        v["server_rss_per_conn_bytes"] =
            json!((a.rss_kib as f64 - b.rss_kib as f64) * 1024.0 / open as f64);
    }
    if let (Some(b), Some(a)) = (me_before, me_after) {
        v["load_rss_per_conn_bytes"] = json!((a as f64 - b as f64) * 1024.0 / open as f64);
    }
    if !args.hold.is_zero() {
        tokio::time::sleep(args.hold).await;
    }
    Ok(v)
}
