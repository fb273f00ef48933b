//! hello-ok's snapshot comes from each shard's cache (issue 21): it follows a node joining and
//! leaving on another shard, and a connect does not wait for a stalled shard.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::mesh::stall;
use crate::support::{connect_node, operators_on_each_shard, Client, Gateway, READ, TOKEN};

/// Whether hello-ok's presence lists the device.
fn in_presence(hello: &Value, device_id: &str) -> bool {
    hello["snapshot"]["presence"]
        .as_array()
        .is_some_and(|p| p.iter().any(|e| e["deviceId"] == device_id))
}

/// Authenticated connections on `shard` as hello-ok's health reports them.
fn connections_on(hello: &Value, shard: usize) -> u64 {
    hello["snapshot"]["health"]["gateway"]["perShard"][shard]["connections"]
        .as_u64()
        .unwrap_or_else(|| panic!("no perShard[{shard}].connections: {hello}"))
}

/// Connects operators until one lands on `shard` and its hello-ok satisfies `want`; panics
/// after 10 s with the last hello-ok seen there.
fn wait_hello_on(gw: &Gateway, shard: usize, what: &str, want: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = Value::Null;
    while Instant::now() < deadline {
        let c = gw.operator(&[READ]);
        if c.shard() != shard {
            continue;
        }
        if want(&c.hello) {
            return c.hello.clone();
        }
        last = c.hello.clone();
    }
    panic!("no hello-ok on shard {shard} with {what} within 10 s; last: {last}");
}

#[test]
fn hello_ok_follows_a_node_joining_and_leaving_another_shard() {
    let gw = Gateway::standard(None);
    let (node, node_id) = connect_node(gw.port, &[]);
    let at = node.shard();
    let other = 1 - at;
    let h = wait_hello_on(&gw, other, "the node up", |h| {
        in_presence(h, &node_id) && connections_on(h, at) >= 1
    });
    assert_eq!(h["snapshot"]["health"]["gateway"]["shards"], 2, "{h}");
    drop(node);
    // The node's shard publishes its part again once the node has gone, as presence forgets
    // it; other connections of this test may come and go there meanwhile.
    wait_hello_on(&gw, other, "the node gone", |h| {
        !in_presence(h, &node_id) && connections_on(h, at) == 0
    });
}

#[test]
fn a_connect_gets_hello_ok_while_another_shard_is_stalled() {
    const STALL_MS: u64 = 4_000;
    let gw = Gateway::standard(Some("{gateway: {dangerouslyEnableTestHooks: true}}"));
    // A connection on each shard, and shard 0 knows of shard 1's (shard 1 published it).
    let warm = operators_on_each_shard(&gw, &[READ], 2);
    wait_hello_on(&gw, 0, "shard 1's connection", |h| {
        connections_on(h, 1) >= 1
    });
    let hook = stall(&gw, 1, STALL_MS);
    assert!(hook.contains("asked on shard 0"), "{hook}");
    let t0 = Instant::now();
    // Connections land on either shard; those on the stalled one finish after the stall.
    let (tx, rx) = mpsc::channel();
    let port = gw.port;
    let tries: Vec<_> = (0..12)
        .map(|_| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let c = Client::connect_operator(port, Some(TOKEN), &[READ]);
                let _ = tx.send((c.shard(), t0.elapsed(), c.hello.clone()));
                c
            })
        })
        .collect();
    drop(tx);
    let (elapsed, hello) = loop {
        let (shard, elapsed, hello) = rx
            .recv_timeout(Duration::from_millis(STALL_MS * 2))
            .expect("every connect answered");
        if shard == 0 {
            break (elapsed, hello);
        }
    };
    assert!(
        elapsed < Duration::from_millis(STALL_MS / 2),
        "hello-ok on shard 0 took {elapsed:?} while shard 1 was stalled for {STALL_MS} ms"
    );
    let health = &hello["snapshot"]["health"];
    assert_eq!(health["gateway"]["shards"], 2, "{hello}");
    assert_eq!(
        health["gateway"]["perShard"][1]["shard"], 1,
        "the stalled shard's part, as it last published it: {hello}"
    );
    assert!(
        connections_on(&hello, 1) >= 1,
        "the warm connection on shard 1: {hello}"
    );
    for t in tries {
        t.join().expect("connect thread");
    }
    drop(warm);
}
