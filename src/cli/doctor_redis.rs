//! `shardgate doctor`'s Redis checks (when `queue.backend` is `"redis"`): reachability, and
//! the persistence the queue's promise rests on (`appendonly yes`, `appendfsync always`: an
//! acknowledged admission is on Redis's disk). A blocking socket drives the client's sans-IO
//! pipeline: the doctor runs without a glommio executor, so it works where one cannot start.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use serde_json::{json, Value};
use shardgate_redis::pipeline::{Expect, Output, Pipeline};
use shardgate_redis::Value as RValue;

use crate::config::{parse_redis_url, Config};

/// Runs `cmds` in one round trip; the replies in order (a server error as `Err` text).
fn run(
    addr: &str,
    cmds: &[Vec<&[u8]>],
    timeout: Duration,
) -> Result<Vec<Result<RValue, String>>, String> {
    let sa = addr
        .to_socket_addrs()
        .map_err(|e| format!("{addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("{addr}: no address"))?;
    let mut s = TcpStream::connect_timeout(&sa, timeout).map_err(|e| format!("{addr}: {e}"))?;
    let _ = s.set_read_timeout(Some(timeout));
    let _ = s.set_write_timeout(Some(timeout));
    let mut p: Pipeline<usize> = Pipeline::new();
    for (i, c) in cmds.iter().enumerate() {
        p.send(c, Expect::Reply, i);
    }
    let mut out = Vec::new();
    p.take_output(&mut out);
    s.write_all(&out).map_err(|e| format!("{addr}: {e}"))?;
    let mut replies = Vec::new();
    let mut buf = [0u8; 4096];
    while replies.len() < cmds.len() {
        while let Some(o) = p.poll().map_err(|e| format!("{addr}: {e}"))? {
            if let Output::Reply { result, .. } = o {
                replies.push(result.map_err(|e| e.to_string()));
            }
        }
        if replies.len() == cmds.len() {
            break;
        }
        let n = s.read(&mut buf).map_err(|e| format!("{addr}: {e}"))?;
        if n == 0 {
            return Err(format!("{addr}: connection closed"));
        }
        p.feed(&buf[..n]);
    }
    Ok(replies)
}

/// The value of a `CONFIG GET` reply (a map in RESP3, pairs in RESP2).
fn config_value(v: &RValue) -> Option<String> {
    match v {
        RValue::Map(m) => m.first().and_then(|(_, v)| v.as_str()).map(str::to_string),
        _ => v.as_array()?.get(1)?.as_str().map(str::to_string),
    }
}

/// The checks, as `(name, status, detail)`; none when the backend is not redis.
pub(super) fn checks(cfg: &Config) -> Vec<Value> {
    if cfg.queue.backend != "redis" {
        return Vec::new();
    }
    let check = |status: &str, detail: String| json!({"check": "redis", "status": status, "detail": detail});
    let Some(t) = cfg
        .queue
        .redis
        .url
        .as_deref()
        .and_then(|u| parse_redis_url(u).ok())
    else {
        return vec![check(
            "fail",
            "queue.redis.url is missing or invalid".into(),
        )];
    };
    let hello_owned = hello_cmd(&t);
    let hello: Vec<&[u8]> = hello_owned.iter().map(Vec::as_slice).collect();
    let cmds = vec![
        hello,
        vec![b"CONFIG".as_slice(), b"GET", b"appendonly"],
        vec![b"CONFIG".as_slice(), b"GET", b"appendfsync"],
    ];
    let timeout = cfg
        .queue
        .redis
        .command_timeout
        .duration()
        .min(Duration::from_secs(5));
    let replies = match run(&t.addr, &cmds, timeout) {
        Ok(r) => r,
        Err(e) => return vec![check("fail", format!("unreachable: {e}"))],
    };
    if let Some(Err(e)) = replies.first() {
        return vec![check("fail", format!("{}: HELLO refused: {e}", t.addr))];
    }
    let mut out = vec![check("ok", format!("{} answers", t.addr))];
    let get = |i: usize| match replies.get(i) {
        Some(Ok(v)) => config_value(v),
        _ => None,
    };
    let persist = match (get(1).as_deref(), get(2).as_deref()) {
        (Some("yes"), Some("always")) => ("ok", "appendonly yes, appendfsync always: acked work is on disk".to_string()),
        (Some(a), Some(f)) => ("warn", format!(
            "appendonly {a}, appendfsync {f}: acknowledged work can be lost if Redis dies; set appendonly yes and appendfsync always"
        )),
        _ => ("warn", "CONFIG GET not allowed (managed Redis?): check appendonly yes, appendfsync always by hand".into()),
    };
    out.push(json!({"check": "redis persistence", "status": persist.0, "detail": persist.1}));
    if cfg.gateway.clustering.enabled {
        out.push(cluster_check(cfg, &t.addr, hello_owned, timeout));
    }
    out
}

/// `HELLO 3` with the URL's credentials.
fn hello_cmd(t: &crate::config::RedisTarget) -> Vec<Vec<u8>> {
    let mut hello = vec![b"HELLO".to_vec(), b"3".to_vec()];
    if let Some(p) = &t.password {
        let user = t.username.clone().unwrap_or_else(|| "default".into());
        hello.extend([b"AUTH".to_vec(), user.into_bytes(), p.clone().into_bytes()]);
    }
    hello
}

/// Which cluster members Redis sees alive (a heartbeat key), against `clustering.nodes`.
fn cluster_check(cfg: &Config, addr: &str, hello: Vec<Vec<u8>>, timeout: Duration) -> Value {
    let keys =
        crate::cluster::lease::ClusterKeys::new(&cfg.queue.redis.key_prefix, cfg.queue.redis.slots);
    let check = |status: &str, detail: String| json!({"check": "cluster", "status": status, "detail": detail});
    let members_key = keys.members();
    let list = [
        hello.iter().map(Vec::as_slice).collect::<Vec<_>>(),
        vec![b"SMEMBERS".as_slice(), members_key.as_bytes()],
    ];
    let members: Vec<String> = match run(addr, &list, timeout) {
        Ok(r) => match r.get(1) {
            Some(Ok(v)) => v
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|m| m.as_str().map(str::to_string))
                .collect(),
            _ => return check("warn", "cannot read the members set".into()),
        },
        Err(e) => return check("fail", format!("unreachable: {e}")),
    };
    let heartbeat_keys: Vec<String> = members.iter().map(|m| keys.member(m)).collect();
    let mut probes = vec![hello.iter().map(Vec::as_slice).collect::<Vec<_>>()];
    probes.extend(
        heartbeat_keys
            .iter()
            .map(|k| vec![b"EXISTS".as_slice(), k.as_bytes()]),
    );
    let live: Vec<&String> = match run(addr, &probes, timeout) {
        Ok(r) => members
            .iter()
            .zip(r.iter().skip(1))
            .filter(|(_, e)| matches!(e, Ok(v) if v.as_int() == Some(1)))
            .map(|(m, _)| m)
            .collect(),
        Err(e) => return check("fail", format!("unreachable: {e}")),
    };
    let missing: Vec<&String> = cfg
        .gateway
        .clustering
        .nodes
        .iter()
        .filter(|n| !live.contains(n))
        .collect();
    if missing.is_empty() {
        check("ok", format!("live members: {live:?}"))
    } else {
        check(
            "warn",
            format!("live members: {live:?}; expected but not live: {missing:?}"),
        )
    }
}
