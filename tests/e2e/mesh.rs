//! The bounded mesh between shards: an owner shard that stops draining makes requests to its
//! sessions fail fast with a retry hint instead of piling up, and nothing is dropped unsaid.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{http_raw, keys_on_each_shard, operators_on_each_shard, Gateway, READ};

/// Stalls shard `target` for `ms` through the test hook, asked on another shard (the hook
/// refuses on the shard to stall). Returns the hook's answer.
pub(crate) fn stall(gw: &Gateway, target: usize, ms: u64) -> String {
    for _ in 0..64 {
        let text = http_raw(
            gw.port,
            &format!(
                "POST /dangerously/stall/{target}/{ms} HTTP/1.1\r\nHost: 127.0.0.1\r\n\
                 Content-Length: 0\r\nConnection: close\r\n\r\n"
            ),
        );
        if text.starts_with("HTTP/1.1 200") {
            return text;
        }
        assert!(text.starts_with("HTTP/1.1 409"), "stall hook: {text}");
    }
    panic!("64 connections all landed on shard {target}");
}

#[test]
fn a_stalled_owner_shard_makes_requests_fail_fast_with_retry_after() {
    const REQUESTS: usize = 2000;
    let gw = Gateway::standard(Some(
        "{network: {meshOutboxLimit: 16}, gateway: {dangerouslyEnableTestHooks: true}}",
    ));
    let [mut on0, _] = operators_on_each_shard(&gw, &[READ], 2);
    let mut client = on0.remove(0);
    let [_, owned_by_1] = keys_on_each_shard("stall");
    let hook = stall(&gw, 1, 4000);
    assert!(hook.contains("asked on shard 0"), "{hook}");
    let t0 = Instant::now();
    let ids: Vec<String> = (0..REQUESTS)
        .map(|_| client.call("chat.history", json!({"sessionKey": owned_by_1})))
        .collect();
    // In the order they arrive: refusals while the owner is stalled, then its answers.
    let (mut ok, mut busy) = (Vec::new(), Vec::new());
    while ok.len() + busy.len() < REQUESTS {
        let res = client.recv_json();
        if res["type"] != "res" {
            continue;
        }
        let n: usize = res["id"]
            .as_str()
            .and_then(|id| ids.iter().position(|x| x == id))
            .unwrap_or_else(|| panic!("an answer to no request: {res}"));
        if res["ok"] == true {
            ok.push(n);
            continue;
        }
        let err = &res["error"];
        assert_eq!(err["code"], "UNAVAILABLE", "{res}");
        assert_eq!(err["details"]["code"], "SHARD_BUSY", "{res}");
        assert_eq!(err["retryable"], true, "{res}");
        assert!(err["retryAfterMs"].as_u64().unwrap_or(0) > 0, "{res}");
        assert!(
            ok.is_empty(),
            "a refusal after an answer: refused only while the owner is stalled ({res})"
        );
        busy.push(n);
    }
    // The owner was stalled: the refusals came before it answered anything, and every request
    // got exactly one answer (none dropped), the accepted ones once it drained.
    assert!(
        !busy.is_empty(),
        "no request refused while the owner shard was stalled"
    );
    // The accepted ones are the first sent (the owner's channel, then the outbox's 16), in
    // order; every later one was refused.
    assert!(ok.len() >= 16, "only {} accepted before refusals", ok.len());
    assert_eq!(
        ok,
        (0..ok.len()).collect::<Vec<_>>(),
        "accepted out of order"
    );
    busy.sort_unstable();
    assert_eq!(busy, (ok.len()..REQUESTS).collect::<Vec<_>>());
    assert!(t0.elapsed() < Duration::from_secs(60));
    let metrics = crate::support::http_get(gw.port, "/metrics").2;
    let refused_line = format!(
        "shardgate_mesh_undelivered_total{{outcome=\"call_refused\"}} {}",
        busy.len()
    );
    assert!(
        metrics.contains(&refused_line),
        "want `{refused_line}` in:\n{metrics}"
    );
    for shard in 0..2 {
        let backlog = format!("shardgate_mesh_backlog{{shard=\"{shard}\"}} 0");
        assert!(
            metrics.contains(&backlog),
            "want `{backlog}` in:\n{metrics}"
        );
    }
    assert!(
        !metrics.contains("outcome=\"full\"") && !metrics.contains("outcome=\"closed\""),
        "a message lost on the mesh:\n{metrics}"
    );
}
