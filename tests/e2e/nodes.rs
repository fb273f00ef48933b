//! Nodes (issue 5): registry across shards, invoke round trip, timeout, disconnect, late
//! results, command policy.

use std::time::Duration;

use serde_json::{json, Value};
use shardgate::auth::device::DeviceIdentity;

use crate::support::{operators_on_each_shard, Client, ConnectOpts, Gateway, READ, WRITE};

fn connect_node(gw: &Gateway, commands: &[&str]) -> (Client, String) {
    let id = DeviceIdentity::generate();
    let o = ConnectOpts {
        role: "node",
        client_id: "node-host",
        client_mode: "node",
        ..Default::default()
    };
    let mut c = Client::connect_raw(gw.port);
    let mut p = o.params();
    p["commands"] = json!(commands);
    p["caps"] = json!(["camera"]);
    p["nodeType"] = json!("raspberry-pi");
    p["device"] = o.device_v3(&id, &c.nonce.clone(), c.challenge_ts);
    let res = c.handshake(p);
    assert_eq!(res["ok"], true, "node connect refused: {res}");
    (c, id.device_id())
}

fn wait_listed(op: &mut Client, node: &str, present: bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let l = op.request_ok("node.list", json!({}));
        let has = l["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["nodeId"] == node);
        if has == present {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "node {node} present={has}: {l}"
        );
        op.request_ok("health", json!({}));
    }
}

#[test]
fn invoke_round_trip_across_shards() {
    let gw = Gateway::standard(None);
    let (mut node, node_id) = connect_node(&gw, &["camera.snap"]);
    let mut ops = operators_on_each_shard(&gw, &[READ, WRITE], 2);
    // An operator on the other shard than the node.
    let other = 1 - node.shard();
    let op = &mut ops[other][0];
    wait_listed(op, &node_id, true);
    let d = op.request_ok("node.describe", json!({"nodeId": node_id}));
    assert_eq!(d["node"]["nodeType"], "raspberry-pi");
    assert_eq!(d["node"]["family"], "headless");
    let id = op.call("node.invoke", json!({"nodeId": node_id, "command": "camera.snap", "params": {"q": 1}, "idempotencyKey": "inv-1"}));
    let req = node.wait_event_named("node.invoke.request");
    let p = &req["payload"];
    assert_eq!(p["command"], "camera.snap");
    assert_eq!(p["paramsJSON"], "{\"q\":1}");
    let r = node.request_ok(
        "node.invoke.result",
        json!({"id": p["id"], "nodeId": node_id, "ok": true, "payload": {"jpeg": "abc"}}),
    );
    assert_eq!(r["ok"], true);
    let res = op.wait_res(&id);
    assert_eq!(res["ok"], true, "{res}");
    assert_eq!(res["payload"]["payload"]["jpeg"], "abc");
    assert_eq!(res["payload"]["nodeId"], node_id.as_str());
    // A late duplicate result is ignored.
    let late = node.request_ok(
        "node.invoke.result",
        json!({"id": p["id"], "nodeId": node_id, "ok": true}),
    );
    assert_eq!(late["ignored"], true);
}

#[test]
fn invoke_times_out_and_disconnect_fails_pending() {
    let gw = Gateway::standard(None);
    let (mut node, node_id) = connect_node(&gw, &[]);
    let mut op = gw.operator(&[READ, WRITE]);
    wait_listed(&mut op, &node_id, true);
    let e = op.request_err(
        "node.invoke",
        json!({"nodeId": node_id, "command": "x", "timeoutMs": 100, "idempotencyKey": "t-1"}),
    );
    assert_eq!(e["code"], "AGENT_TIMEOUT", "{e}");
    assert_eq!(e["details"]["code"], "TIMEOUT");
    let id = op.call(
        "node.invoke",
        json!({"nodeId": node_id, "command": "x", "timeoutMs": 20000, "idempotencyKey": "t-2"}),
    );
    node.wait_event_named("node.invoke.request");
    drop(node);
    let res = op.wait_res(&id);
    assert_eq!(res["ok"], false);
    assert_eq!(res["error"]["code"], "UNAVAILABLE");
    assert!(
        res["error"]["message"]
            .as_str()
            .unwrap()
            .contains("node disconnected"),
        "{res}"
    );
    wait_listed(&mut op, &node_id, false);
}

#[test]
fn command_policy_refuses_denied_and_undeclared_commands() {
    let gw = Gateway::standard(Some("{gateway: {nodes: {denyCommands: ['system.*']}}}"));
    let (_node, node_id) = connect_node(&gw, &["camera.snap", "system.run"]);
    let mut op = gw.operator(&[READ, WRITE]);
    wait_listed(&mut op, &node_id, true);
    let e = op.request_err(
        "node.invoke",
        json!({"nodeId": node_id, "command": "system.run", "idempotencyKey": "p-1"}),
    );
    assert!(
        e["message"].as_str().unwrap().contains("not allowed"),
        "{e}"
    );
    let e = op.request_err(
        "node.invoke",
        json!({"nodeId": node_id, "command": "mic.record", "idempotencyKey": "p-2"}),
    );
    assert!(
        e["message"].as_str().unwrap().contains("does not declare"),
        "{e}"
    );
    let e = op.request_err(
        "node.invoke",
        json!({"nodeId": "nope", "command": "x", "idempotencyKey": "p-3"}),
    );
    assert_eq!(e["code"], "UNAVAILABLE");
}

#[test]
fn node_role_may_not_call_operator_methods() {
    let gw = Gateway::standard(None);
    let (mut node, _) = connect_node(&gw, &[]);
    let e: Value = node.request_err("status", json!({}));
    assert_eq!(e["message"], "unauthorized role: node");
    assert_eq!(node.request_ok("health", json!({}))["ok"], true);
}

fn connect_capable_node(gw: &Gateway, node_type: &str, caps: &[&str]) -> (Client, String) {
    let id = DeviceIdentity::generate();
    let o = ConnectOpts {
        role: "node",
        client_id: "node-host",
        client_mode: "node",
        ..Default::default()
    };
    let mut c = Client::connect_raw(gw.port);
    let mut p = o.params();
    p["caps"] = json!(caps);
    p["commands"] = json!(["camera.snap"]);
    p["nodeType"] = json!(node_type);
    p["device"] = o.device_v3(&id, &c.nonce.clone(), c.challenge_ts);
    let res = c.handshake(p);
    assert_eq!(res["ok"], true, "node connect refused: {res}");
    (c, id.device_id())
}

const CAPS: &str = "{gateway: {nodeCapabilities: {
    camera: {providers: ['node:ios', 'node:macos'], fallback: 'host', preference: 'local_first'},
    vision: {providers: ['node:vision'], required: true}}}}";

#[test]
fn capability_prefers_first_provider_then_falls_back_when_it_drops() {
    let gw = Gateway::standard(Some(CAPS));
    let (mut phone, phone_id) = connect_capable_node(&gw, "ios", &["camera"]);
    let (mut mac, mac_id) = connect_capable_node(&gw, "macos", &["camera"]);
    let mut op = gw.operator(&[READ, WRITE]);
    wait_listed(&mut op, &phone_id, true);
    wait_listed(&mut op, &mac_id, true);
    let st = op.request_ok("capabilities.status", json!({}));
    let cam = st["capabilities"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["capability"] == "camera")
        .unwrap()
        .clone();
    assert_eq!(cam["servedBy"], "node:ios", "{st}");
    // The phone serves it.
    let id = op.call(
        "capability.invoke",
        json!({"capability": "camera", "command": "camera.snap", "idempotencyKey": "cap-1"}),
    );
    let req = phone.wait_event_named("node.invoke.request");
    phone.request_ok("node.invoke.result", json!({"id": req["payload"]["id"], "nodeId": phone_id, "ok": true, "payload": {"from": "phone"}}));
    let r = op.wait_res(&id);
    assert_eq!(r["payload"]["provider"], "node:ios", "{r}");
    assert_eq!(r["payload"]["payload"]["from"], "phone");
    // The phone takes the request and then drops: the mac serves it.
    let id = op.call(
        "capability.invoke",
        json!({"capability": "camera", "command": "camera.snap", "idempotencyKey": "cap-2"}),
    );
    phone.wait_event_named("node.invoke.request");
    drop(phone);
    let req = mac.wait_event_named("node.invoke.request");
    mac.request_ok("node.invoke.result", json!({"id": req["payload"]["id"], "nodeId": mac_id, "ok": true, "payload": {"from": "mac"}}));
    let r = op.wait_res(&id);
    assert_eq!(r["payload"]["provider"], "node:macos", "{r}");
    assert_eq!(r["payload"]["tried"][0]["provider"], "node:ios");
    // Both gone: the host fallback answers (its echo command).
    drop(mac);
    wait_listed(&mut op, &mac_id, false);
    let r = op.request_ok("capability.invoke", json!({"capability": "camera", "command": "echo", "params": {"x": 1}, "idempotencyKey": "cap-3"}));
    assert_eq!(r["provider"], "host");
    assert_eq!(r["payload"]["echo"]["x"], 1);
}

#[test]
fn required_capability_without_provider_is_a_clear_error() {
    let gw = Gateway::standard(Some(CAPS));
    let mut op = gw.operator(&[READ, WRITE]);
    let e = op.request_err(
        "capability.invoke",
        json!({"capability": "vision", "command": "detect", "idempotencyKey": "v-1"}),
    );
    assert_eq!(e["code"], "UNAVAILABLE");
    assert_eq!(e["details"]["code"], "CAPABILITY_UNAVAILABLE");
    assert_eq!(e["details"]["required"], true);
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("required capability vision"),
        "{e}"
    );
    let e = op.request_err(
        "capability.invoke",
        json!({"capability": "nope", "command": "x", "idempotencyKey": "v-2"}),
    );
    assert!(e["message"]
        .as_str()
        .unwrap()
        .contains("unknown capability"));
}
