//! Nodes (issue 5): registry across shards, invoke round trip, timeout, disconnect, late
//! results, command policy.

use std::time::Duration;

use serde_json::{json, Value};
use shardgate::auth::device::DeviceIdentity;

use crate::support::{
    connect_node, connect_node_as, operators_on_each_shard, Client, ConnectOpts, Gateway, ADMIN,
    READ, WRITE,
};

/// Lets test nodes (platform linux) put any command up for approval: the platform defaults
/// would withhold the made-up ones (`x`, `echo`) and OpenClaw's dangerous ones (camera.snap).
const ALLOW_ALL: &str = "{gateway: {nodes: {allowCommands: ['*']}}}";

/// Waits until `op`'s shard lists the node as connected (`present`) or not. A node that was
/// paired stays listed after it leaves, with `connected: false`.
fn wait_listed(op: &mut Client, node: &str, present: bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let l = op.request_ok("node.list", json!({}));
        let has = l["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["nodeId"] == node && n["connected"] == true);
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

/// Approves the node's pending surface (as a pairing operator of its own) and waits until
/// `op`'s shard sees it approved with `command` effective.
fn approve_node(gw: &Gateway, op: &mut Client, node_id: &str, command: &str) {
    let mut pairer = gw.operator(&["operator.pairing"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let rid = loop {
        let l = pairer.request_ok("node.pair.list", json!({}));
        let found = l["pending"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["nodeId"] == node_id)
            .map(|r| r["requestId"].clone());
        if let Some(r) = found {
            break r;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no pending request for {node_id}: {l}"
        );
    };
    pairer.request_ok("node.pair.approve", json!({"requestId": rid}));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let d = op.request_ok("node.describe", json!({"nodeId": node_id}));
        let effective = d["commands"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c == command);
        if d["approvalState"] == "approved" && effective {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{node_id} never approved with {command}: {d}"
        );
    }
}

#[test]
fn invoke_round_trip_across_shards() {
    let gw = Gateway::standard(Some(ALLOW_ALL));
    let (mut node, node_id) = connect_node(gw.port, &["camera.snap"]);
    let mut ops = operators_on_each_shard(&gw, &[READ, WRITE], 2);
    // An operator on the other shard than the node.
    let other = 1 - node.shard();
    let op = &mut ops[other][0];
    wait_listed(op, &node_id, true);
    approve_node(&gw, op, &node_id, "camera.snap");
    let d = op.request_ok("node.describe", json!({"nodeId": node_id}));
    assert_eq!(d["nodeType"], "raspberry-pi", "{d}");
    assert_eq!(d["family"], "headless");
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
    let gw = Gateway::standard(Some(ALLOW_ALL));
    let (mut node, node_id) = connect_node(gw.port, &["x"]);
    let mut op = gw.operator(&[READ, WRITE]);
    wait_listed(&mut op, &node_id, true);
    approve_node(&gw, &mut op, &node_id, "x");
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
    // The second request's, not the first's (timed out, but delivered to the node too):
    // the node must hold t-2 when it goes away.
    node.wait_event("t-2's invoke request", |e| {
        e["event"] == "node.invoke.request" && e["payload"]["idempotencyKey"] == "t-2"
    });
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
    let gw = Gateway::standard(Some(
        "{gateway: {nodes: {allowCommands: ['camera.snap'], denyCommands: ['system.*']}}}",
    ));
    let (_node, node_id) = connect_node(gw.port, &["camera.snap", "system.run"]);
    let mut op = gw.operator(&[READ, WRITE]);
    wait_listed(&mut op, &node_id, true);
    // system.run is denied: withheld at connect, never approved nor run.
    approve_node(&gw, &mut op, &node_id, "camera.snap");
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
    assert_eq!(
        e["message"],
        "node command not allowed: the node (platform: linux) does not support \"mic.record\"",
        "{e}"
    );
    assert_eq!(e["details"]["reason"], "command not declared by node");
    let e = op.request_err(
        "node.invoke",
        json!({"nodeId": "nope", "command": "x", "idempotencyKey": "p-3"}),
    );
    assert_eq!(e["code"], "UNAVAILABLE");
}

/// Issue 20: a new node's surface waits for an operator; until then nothing runs on it.
/// Once approved it is invoked; after it leaves it stays listed, disconnected.
#[test]
fn unapproved_node_is_refused_until_approved_and_stays_listed_after_it_leaves() {
    let gw = Gateway::standard(None);
    let (mut node, node_id) = connect_node(gw.port, &["system.run", "system.which"]);
    let mut op = gw.operator(&[READ, WRITE]);
    let mut pairer = gw.operator(&[READ, "operator.pairing"]);
    wait_listed(&mut op, &node_id, true);
    // As `openclaw nodes status` reads it: paired device, connected, approval pending,
    // nothing effective. Only a pairing operator sees the request's details.
    let row = |c: &mut Client| {
        let l = c.request_ok("node.list", json!({}));
        l["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["nodeId"] == node_id.as_str())
            .cloned()
            .unwrap_or_else(|| panic!("{node_id} not listed: {l}"))
    };
    let r = row(&mut op);
    assert_eq!(
        (&r["paired"], &r["connected"], &r["approvalState"]),
        (&json!(true), &json!(true), &json!("pending-approval")),
        "{r}"
    );
    assert_eq!(r["commands"], json!([]), "{r}");
    assert!(
        r.get("pendingRequestId").is_none(),
        "read scope sees no request: {r}"
    );
    let r = row(&mut pairer);
    assert_eq!(
        r["pendingDeclaredCommands"],
        json!(["system.run", "system.which"]),
        "{r}"
    );
    let rid = r["pendingRequestId"].clone();
    // Refused before approval: nothing reaches the node.
    assert_pairing_changed(&mut op, &node_id, "system.run");
    assert!(node.events_named("node.invoke.request").is_empty());
    // Approved: invoked; describe answers at the top level.
    pairer.request_ok("node.pair.approve", json!({"requestId": rid}));
    wait_pairing(&mut op, &node_id, "approved");
    invoke_answered(&mut op, &mut node, &node_id, "system.which");
    let d = op.request_ok("node.describe", json!({"nodeId": node_id}));
    assert_eq!(d["nodeId"], node_id.as_str(), "{d}");
    assert_eq!(d["caps"], json!(["camera"]), "{d}");
    assert_eq!(d["commands"], json!(["system.run", "system.which"]));
    // Gone: still listed, disconnected; invoking it says so.
    drop(node);
    wait_listed(&mut op, &node_id, false);
    let r = row(&mut op);
    assert_eq!(
        (&r["paired"], &r["connected"], &r["approvalState"]),
        (&json!(true), &json!(false), &json!("approved")),
        "{r}"
    );
    assert_eq!(r["commands"], json!(["system.run", "system.which"]), "{r}");
    let e = op.request_err(
        "node.invoke",
        json!({"nodeId": node_id, "command": "system.which", "idempotencyKey": "gone-1"}),
    );
    assert_eq!(
        (&e["code"], &e["message"], &e["details"]["code"]),
        (
            &json!("UNAVAILABLE"),
            &json!("node not connected"),
            &json!("NOT_CONNECTED")
        ),
        "{e}"
    );
    // Removing the node forgets it.
    pairer.request_ok("node.pair.remove", json!({"nodeId": node_id}));
    let l = op.request_ok("node.list", json!({}));
    assert!(
        !l["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["nodeId"] == node_id.as_str()),
        "{l}"
    );
}

#[test]
fn node_role_may_not_call_operator_methods() {
    let gw = Gateway::standard(None);
    let (mut node, _) = connect_node(gw.port, &[]);
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

const CAPS: &str = "{gateway: {nodes: {allowCommands: ['camera.snap']}, nodeCapabilities: {
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
    approve_node(&gw, &mut op, &phone_id, "camera.snap");
    approve_node(&gw, &mut op, &mac_id, "camera.snap");
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

// ---------------------------------------------------------------------------------------------
// Node pairing (`gateway.nodes.requirePairing`, on by default; `node.pair.*`)
// ---------------------------------------------------------------------------------------------

const PAIRING: &str = "operator.pairing";
const REQUIRE_PAIRING: &str = "{gateway: {nodes: {requirePairing: true, allowCommands: ['*']}}}";

/// Waits until `op`'s shard sees the node's `approvalState` as `state`.
fn wait_pairing(op: &mut Client, node: &str, state: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = op.request("node.describe", json!({"nodeId": node}));
        if r["ok"] == true && r["payload"]["approvalState"] == state {
            return r["payload"].clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "node {node} never reached pairing={state}: {r}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The next `event` about `node`.
fn wait_node_event(op: &mut Client, event: &str, node: &str) -> Value {
    let (e, n) = (event.to_string(), node.to_string());
    op.wait_event(&format!("{event} for {node}"), move |v| {
        v["event"] == e.as_str() && v["payload"]["nodeId"] == n.as_str()
    })["payload"]
        .clone()
}

/// Has `op` invoke `command` on the node and the node answer it; returns the caller's res.
fn invoke_answered(op: &mut Client, node: &mut Client, node_id: &str, command: &str) -> Value {
    let id = op.call(
        "node.invoke",
        json!({"nodeId": node_id, "command": command, "params": {"c": command},
               "idempotencyKey": uuid::Uuid::new_v4().to_string()}),
    );
    let req = node.wait_event_named("node.invoke.request");
    assert_eq!(req["payload"]["command"], command);
    node.request_ok(
        "node.invoke.result",
        json!({"id": req["payload"]["id"], "nodeId": node_id, "ok": true, "payload": {"did": command}}),
    );
    let res = op.wait_res(&id);
    assert_eq!(res["ok"], true, "{res}");
    assert_eq!(res["payload"]["payload"]["did"], command);
    res
}

/// A never-approved node: OpenClaw's `PAIRING_CHANGED` (no pairing to invoke under).
fn assert_pairing_changed(op: &mut Client, node_id: &str, command: &str) {
    let e = op.request_err(
        "node.invoke",
        json!({"nodeId": node_id, "command": command, "idempotencyKey": uuid::Uuid::new_v4().to_string()}),
    );
    assert_eq!(e["code"], "UNAVAILABLE", "{e}");
    assert_eq!(e["details"]["code"], "PAIRING_CHANGED", "{e}");
    assert_eq!(e["retryable"], true, "{e}");
    assert_eq!(
        e["message"],
        "node pairing changed while invocation was active"
    );
}

/// An approved node asked for a command outside its effective surface.
fn assert_not_allowed(op: &mut Client, node_id: &str, command: &str, request: Option<&str>) {
    let e = op.request_err(
        "node.invoke",
        json!({"nodeId": node_id, "command": command, "idempotencyKey": uuid::Uuid::new_v4().to_string()}),
    );
    assert_eq!(e["code"], "INVALID_REQUEST", "{e}");
    assert_eq!(e["details"]["command"], command);
    assert_eq!(e["details"]["requestId"], json!(request), "{e}");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .starts_with("node command not allowed"),
        "{e}"
    );
}

#[test]
fn node_pairing_approve_makes_commands_usable_across_shards() {
    let gw = Gateway::standard(Some(REQUIRE_PAIRING));
    let mut ops = operators_on_each_shard(&gw, &[READ, WRITE, PAIRING], 2);
    let id = DeviceIdentity::generate();
    let node_id = id.device_id();
    let mut node = connect_node_as(gw.port, &id, &["camera.snap"], "linux");
    let other = 1 - node.shard();
    let op = &mut ops[other][0];
    // Operators hear about the request filed at connect.
    let ev = wait_node_event(op, "node.pair.requested", &node_id);
    let rid = ev["requestId"].as_str().unwrap().to_string();
    assert_eq!(ev["commands"], json!(["camera.snap"]), "{ev}");
    assert_eq!(ev["clientId"], "node-host", "{ev}");
    assert_eq!(
        ev["requiredApproveScopes"],
        json!(["operator.pairing", "operator.admin"])
    );
    assert!(ev.get("isRepair").is_none(), "{ev}");
    wait_listed(op, &node_id, true);
    let row = wait_pairing(op, &node_id, "pending-approval");
    assert_eq!(row["pendingRequestId"], rid.as_str());
    assert_eq!(row["pendingDeclaredCommands"], json!(["camera.snap"]));
    assert_eq!(row["commands"], json!([]), "nothing effective: {row}");
    // Pending: the node has no approved command.
    assert_pairing_changed(op, &node_id, "camera.snap");
    let l = op.request_ok("node.pair.list", json!({}));
    let pending = l["pending"].as_array().unwrap();
    assert_eq!(pending.len(), 1, "{l}");
    assert_eq!(pending[0]["requestId"], rid.as_str());
    assert_eq!(pending[0]["nodeId"], node_id.as_str());
    // Only pairing operators (or admins) act on it.
    let mut reader = gw.operator(&[READ, WRITE]);
    let e = reader.request_err("node.pair.approve", json!({"requestId": rid}));
    assert_eq!(e["message"], "missing scope: operator.pairing", "{e}");
    let r = op.request_ok("node.pair.approve", json!({"requestId": rid}));
    assert_eq!(r["node"]["commands"], json!(["camera.snap"]), "{r}");
    let ev = wait_node_event(op, "node.pair.resolved", &node_id);
    assert_eq!(ev["decision"], "approved");
    assert_eq!(ev["requestId"], rid.as_str());
    let ev = wait_node_event(&mut node, "node.pair.resolved", &node_id);
    assert_eq!(ev["decision"], "approved", "the node hears it too");
    // Approved: usable from the other shard.
    wait_pairing(op, &node_id, "approved");
    invoke_answered(op, &mut node, &node_id, "camera.snap");
    let l = op.request_ok("node.pair.list", json!({}));
    assert!(l["pending"].as_array().unwrap().is_empty(), "{l}");
    assert_eq!(l["paired"][0]["nodeId"], node_id.as_str(), "{l}");
    let e = op.request_err("node.pair.approve", json!({"requestId": rid}));
    assert_eq!(e["message"], "unknown requestId", "{e}");
    assert_eq!(e["details"]["code"], "APPROVAL_NOT_FOUND");
}

#[test]
fn node_pairing_reject_keeps_commands_refused() {
    let gw = Gateway::standard(Some(REQUIRE_PAIRING));
    let mut op = gw.operator(&[READ, WRITE, PAIRING]);
    let id = DeviceIdentity::generate();
    let node_id = id.device_id();
    let mut node = connect_node_as(gw.port, &id, &["system.run"], "linux");
    let rid = wait_node_event(&mut op, "node.pair.requested", &node_id)["requestId"]
        .as_str()
        .unwrap()
        .to_string();
    let r = op.request_ok("node.pair.reject", json!({"requestId": rid}));
    assert_eq!(r["nodeId"], node_id.as_str());
    let ev = wait_node_event(&mut op, "node.pair.resolved", &node_id);
    assert_eq!(ev["decision"], "rejected", "{ev}");
    assert_eq!(
        wait_node_event(&mut node, "node.pair.resolved", &node_id)["decision"],
        "rejected"
    );
    wait_pairing(&mut op, &node_id, "unapproved");
    assert_pairing_changed(&mut op, &node_id, "system.run");
    let l = op.request_ok("node.pair.list", json!({}));
    assert!(l["pending"].as_array().unwrap().is_empty(), "{l}");
    assert!(l["paired"].as_array().unwrap().is_empty(), "{l}");
    let v = op.request_ok("node.pair.verify", json!({"nodeId": node_id}));
    assert_eq!(v["paired"], false, "{v}");
    assert_eq!(v["verified"], false);
    assert_eq!(v["unapprovedCommands"], json!(["system.run"]));
    let e = op.request_err("node.pair.reject", json!({"requestId": rid}));
    assert_eq!(e["code"], "INVALID_REQUEST", "{e}");
    assert_eq!(e["details"]["code"], "APPROVAL_NOT_FOUND");
}

#[test]
fn node_declaring_new_commands_keeps_approved_set_until_reapproved() {
    let gw = Gateway::standard(Some(REQUIRE_PAIRING));
    let mut op = gw.operator(&[READ, WRITE, PAIRING]);
    let id = DeviceIdentity::generate();
    let node_id = id.device_id();
    let mut node = connect_node_as(gw.port, &id, &["camera.snap"], "linux");
    let rid = wait_node_event(&mut op, "node.pair.requested", &node_id)["requestId"].clone();
    op.request_ok("node.pair.approve", json!({"requestId": rid}));
    wait_pairing(&mut op, &node_id, "approved");
    invoke_answered(&mut op, &mut node, &node_id, "camera.snap");

    // The live node asks for one more command.
    let r = node.request_ok(
        "node.pair.request",
        json!({"commands": ["camera.snap", "screen.record"], "caps": ["camera", "screen"]}),
    );
    assert_eq!(r["status"], "pending", "{r}");
    let rid2 = r["requestId"].as_str().unwrap().to_string();
    let ev = wait_node_event(&mut op, "node.pair.requested", &node_id);
    assert_eq!(ev["requestId"], rid2.as_str());
    assert_eq!(ev["isRepair"], true);
    assert_eq!(ev["newCommands"], json!(["screen.record"]), "{ev}");
    assert_eq!(ev["approvedCommands"], json!(["camera.snap"]));
    wait_pairing(&mut op, &node_id, "pending-reapproval");
    // Meanwhile: the approved command works, the new one is refused.
    invoke_answered(&mut op, &mut node, &node_id, "camera.snap");
    assert_not_allowed(&mut op, &node_id, "screen.record", Some(&rid2));
    // A node may not ask for another node.
    let e = node.request_err(
        "node.pair.request",
        json!({"nodeId": "someone-else", "commands": ["x"]}),
    );
    assert!(
        e["message"].as_str().unwrap().contains("does not match"),
        "{e}"
    );

    op.request_ok("node.pair.approve", json!({"requestId": rid2}));
    wait_pairing(&mut op, &node_id, "approved");
    invoke_answered(&mut op, &mut node, &node_id, "screen.record");
    invoke_answered(&mut op, &mut node, &node_id, "camera.snap");

    // Reconnecting with yet another command: a new request at connect, approved set kept.
    drop(node);
    wait_listed(&mut op, &node_id, false);
    let mut node = connect_node_as(
        gw.port,
        &id,
        &["camera.snap", "screen.record", "location.get"],
        "linux",
    );
    let ev = wait_node_event(&mut op, "node.pair.requested", &node_id);
    assert_eq!(ev["newCommands"], json!(["location.get"]), "{ev}");
    let rid3 = ev["requestId"].as_str().unwrap().to_string();
    wait_listed(&mut op, &node_id, true);
    wait_pairing(&mut op, &node_id, "pending-reapproval");
    invoke_answered(&mut op, &mut node, &node_id, "screen.record");
    assert_not_allowed(&mut op, &node_id, "location.get", Some(&rid3));
}

#[test]
fn node_pair_verify_and_approvals_survive_restart() {
    let state = tempfile::tempdir().unwrap();
    let launch = || match Gateway::launch(crate::support::Launch {
        args: &["--token", crate::support::TOKEN, "--shards", "2"],
        config: Some(REQUIRE_PAIRING),
        state_dir: Some(state.path()),
        ..Default::default()
    }) {
        crate::support::Started::Ready(g) => g,
        crate::support::Started::Exited { status, stderr } => panic!("{status}: {stderr}"),
    };
    let id = DeviceIdentity::generate();
    let node_id = id.device_id();
    {
        let gw = launch();
        let mut op = gw.operator(&[READ, PAIRING]);
        let _node = connect_node_as(gw.port, &id, &["camera.snap"], "linux");
        let rid = wait_node_event(&mut op, "node.pair.requested", &node_id)["requestId"].clone();
        let v = op.request_ok("node.pair.verify", json!({"nodeId": node_id}));
        assert_eq!(v["paired"], false, "{v}");
        assert_eq!(v["pendingRequestId"], rid);
        op.request_ok("node.pair.approve", json!({"requestId": rid}));
        let v = op.request_ok("node.pair.verify", json!({"nodeId": node_id}));
        assert_eq!(v["paired"], true, "{v}");
        assert_eq!(v["verified"], true, "{v}");
        assert_eq!(v["approvedCommands"], json!(["camera.snap"]));
        // Reading needs the pairing scope.
        let mut reader = gw.operator(&[READ]);
        let e = reader.request_err("node.pair.verify", json!({"nodeId": node_id}));
        assert_eq!(e["message"], "missing scope: operator.pairing");
        let file = state.path().join("nodes").join("paired.json");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", file.display());
    }
    // After a restart the node is still paired: no new request, its command works.
    let gw = launch();
    let mut op = gw.operator(&[READ, WRITE, ADMIN]);
    let mut node = connect_node_as(gw.port, &id, &["camera.snap"], "linux");
    wait_listed(&mut op, &node_id, true);
    wait_pairing(&mut op, &node_id, "approved");
    invoke_answered(&mut op, &mut node, &node_id, "camera.snap");
    let v = op.request_ok("node.pair.verify", json!({"nodeId": node_id}));
    assert_eq!(v["verified"], true, "{v}");
    assert!(op.events_named("node.pair.requested").is_empty());
    let e = op.request_err("node.pair.verify", json!({}));
    assert!(
        e["message"].as_str().unwrap().contains("missing nodeId"),
        "{e}"
    );
}

// ---------------------------------------------------------------------------------------------
// Latency figure
// ---------------------------------------------------------------------------------------------

/// `node.invoke` round trip across shards (operator on one shard, node on the other, a node
/// client answering in its own thread): prints p50/p99; asserts only that every invoke is
/// answered with its own payload. Figures: `cargo test --release --test e2e
/// node_invoke_round_trip -- --nocapture`.
#[test]
fn node_invoke_round_trip_latency_is_reported() {
    const N: usize = 500;
    const WARMUP: usize = 50;
    let gw = Gateway::standard(Some(ALLOW_ALL));
    let (mut node, node_id) = connect_node(gw.port, &["echo"]);
    let other = 1 - node.shard();
    let mut ops = operators_on_each_shard(&gw, &[READ, WRITE], 2);
    let mut op = ops[other].remove(0);
    assert_ne!(op.shard(), node.shard());
    wait_listed(&mut op, &node_id, true);
    approve_node(&gw, &mut op, &node_id, "echo");
    let nid = node_id.clone();
    let answerer = std::thread::spawn(move || {
        for _ in 0..N + WARMUP {
            let req = node.wait_event_named("node.invoke.request");
            let p = &req["payload"];
            let params: Value = serde_json::from_str(p["paramsJSON"].as_str().unwrap()).unwrap();
            node.call(
                "node.invoke.result",
                json!({"id": p["id"], "nodeId": nid, "ok": true, "payload": params}),
            );
        }
        node
    });
    let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    for i in 0..N + WARMUP {
        let t = std::time::Instant::now();
        let r = op.request_ok(
            "node.invoke",
            json!({"nodeId": node_id, "command": "echo", "params": {"i": i},
                   "idempotencyKey": format!("lat-{i}")}),
        );
        let us = t.elapsed().as_micros() as u64;
        assert_eq!(
            r["payload"]["i"], i,
            "invoke {i} answered with another payload: {r}"
        );
        if i >= WARMUP {
            h.record(us.max(1)).unwrap();
        }
    }
    let _node = answerer.join().expect("node thread");
    println!(
        "node.invoke round trip across shards (n={N}): p50={}us p90={}us p99={}us max={}us mean={:.0}us",
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.9),
        h.value_at_quantile(0.99),
        h.max(),
        h.mean()
    );
    assert_eq!(h.len(), N as u64);
}

#[test]
fn node_event_is_refused_until_the_surface_is_approved() {
    let gw = Gateway::standard(None);
    let (mut node, node_id) = connect_node(gw.port, &["system.run", "system.which"]);
    let mut op = gw.operator(&[READ, WRITE]);
    wait_listed(&mut op, &node_id, true);
    // As OpenClaw 2026.9.6 answers a node host that is still pending approval.
    let stats = json!({"event": "node.host.stats", "payloadJSON": "{\"cpuLoad1\":0.5}"});
    for p in [
        json!({"event": "test.ping", "payload": {"n": 1}}),
        stats.clone(),
    ] {
        let e = node.request_err("node.event", p);
        assert_eq!(
            (
                &e["code"],
                &e["message"],
                &e["details"]["code"],
                &e["retryable"]
            ),
            (
                &json!("UNAVAILABLE"),
                &json!("node pairing changed while invocation was active"),
                &json!("PAIRING_CHANGED"),
                &json!(true)
            ),
            "{e}"
        );
    }
    // Nothing it said reached operators or its row.
    op.request_ok("health", json!({}));
    assert!(op.events_named("node.event").is_empty());
    let d = op.request_ok("node.describe", json!({"nodeId": node_id}));
    assert!(d.get("hostStats").is_none(), "{d}");
    // Approved: its events pass and its stats are kept.
    approve_node(&gw, &mut op, &node_id, "system.which");
    node.request_ok(
        "node.event",
        json!({"event": "test.ping", "payload": {"n": 2}}),
    );
    let e = op.wait_event("node.event test.ping", |v| {
        v["event"] == "node.event" && v["payload"]["event"] == "test.ping"
    });
    assert_eq!(
        (&e["payload"]["nodeId"], &e["payload"]["payload"]["n"]),
        (&json!(node_id), &json!(2)),
        "{e}"
    );
    let r = node.request_ok("node.event", stats);
    assert_eq!(r["handled"], true, "{r}");
}
