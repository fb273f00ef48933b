//! The `connect` handshake (PROTOCOL.md §3, FRAMES.md §1–2): challenge, hello-ok, shared auth,
//! device identity, pairing, pre-auth limits.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use shardgate::auth::device::DeviceIdentity;

use std::net::IpAddr;

use crate::support::{
    lan_ip, now_ms, raw_upgrade, scopes, Client, ConnectOpts, Gateway, ADMIN, READ, TOKEN, WRITE,
};

/// Asserts a refused connect: `res ok:false` with `code` / `details.code`, then the close.
fn assert_refused(c: &mut Client, res: &Value, code: &str, detail: Option<&str>, close: u16) {
    assert_eq!(res["type"], "res", "{res}");
    assert_eq!(res["ok"], false, "{res}");
    assert_eq!(res["error"]["code"], code, "{res}");
    assert!(
        res["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{res}"
    );
    if let Some(d) = detail {
        assert_eq!(res["error"]["details"]["code"], d, "{res}");
    }
    let (c_code, _reason) = c.expect_close();
    assert_eq!(c_code, close, "close code after {res}");
}

#[test]
fn challenge_first_has_nonce_and_ts_and_no_seq() {
    let gw = Gateway::standard(None);
    let before = now_ms();
    let c = gw.raw();
    let ch = &c.challenge;
    assert_eq!(ch["type"], "event");
    assert_eq!(ch["event"], "connect.challenge");
    assert!(
        ch.get("seq").is_none(),
        "challenge must not carry seq: {ch}"
    );
    let nonce = ch["payload"]["nonce"].as_str().expect("nonce string");
    assert!(!nonce.is_empty());
    let ts = ch["payload"]["ts"].as_i64().expect("ts integer");
    assert!(
        ts >= before - 5_000 && ts <= now_ms() + 5_000,
        "ts {ts} is now-ish"
    );
    // Nonces are per connection.
    let c2 = gw.raw();
    assert_ne!(c2.nonce, c.nonce);
}

#[test]
fn hello_ok_shape() {
    let gw = Gateway::standard(None);
    let mut c = gw.raw();
    let res = c.handshake(
        ConnectOpts {
            scopes: scopes(&[READ]),
            ..Default::default()
        }
        .params(),
    );
    assert_eq!(res["type"], "res");
    assert_eq!(res["id"], "c1");
    assert_eq!(res["ok"], true, "{res}");
    let h = &res["payload"];
    assert_eq!(h["type"], "hello-ok");
    assert_eq!(h["protocol"], 4);
    assert!(
        h["server"]["version"]
            .as_str()
            .is_some_and(|v| !v.is_empty()),
        "{h}"
    );
    assert!(
        h["server"]["connId"]
            .as_str()
            .is_some_and(|v| !v.is_empty()),
        "{h}"
    );

    let methods: Vec<&str> = h["features"]["methods"]
        .as_array()
        .expect("features.methods array")
        .iter()
        .map(|m| m.as_str().expect("method names are strings"))
        .collect();
    let unique: HashSet<&str> = methods.iter().copied().collect();
    assert_eq!(
        unique.len(),
        methods.len(),
        "duplicate method names: {methods:?}"
    );
    for m in [
        "health",
        "status",
        "system-presence",
        "agent",
        "agent.wait",
        "chat.send",
        "chat.history",
        "chat.abort",
        "sessions.list",
        "sessions.get",
        "sessions.create",
        "sessions.send",
        "sessions.abort",
        "sessions.reset",
        "sessions.delete",
        "sessions.subscribe",
        "sessions.unsubscribe",
        "config.get",
    ] {
        assert!(
            unique.contains(m),
            "features.methods lacks {m}: {methods:?}"
        );
    }
    let events: Vec<&str> = h["features"]["events"]
        .as_array()
        .expect("features.events")
        .iter()
        .filter_map(|e| e.as_str())
        .collect();
    for e in [
        "connect.challenge",
        "tick",
        "presence",
        "shutdown",
        "agent",
        "chat",
    ] {
        assert!(events.contains(&e), "features.events lacks {e}: {events:?}");
    }
    assert!(h["features"]["capabilities"].is_array());

    let snap = &h["snapshot"];
    assert!(snap["presence"].is_array(), "{snap}");
    assert!(snap["health"].is_object(), "{snap}");
    assert!(snap["stateVersion"]["presence"].is_u64(), "{snap}");
    assert!(snap["stateVersion"]["health"].is_u64(), "{snap}");
    assert!(snap["uptimeMs"].is_u64(), "{snap}");
    assert_eq!(snap["sessionDefaults"]["defaultAgentId"], "main");
    assert_eq!(snap["sessionDefaults"]["mainKey"], "main");
    assert_eq!(snap["sessionDefaults"]["mainSessionKey"], "agent:main:main");
    assert_eq!(snap["sessionDefaults"]["scope"], "per-sender");

    assert_eq!(h["auth"]["role"], "operator");
    assert_eq!(h["auth"]["scopes"], json!([READ]));
    assert!(
        h["auth"].get("deviceToken").is_none(),
        "no device, no device token: {h}"
    );

    assert_eq!(h["policy"]["maxPayload"], 26_214_400);
    assert_eq!(h["policy"]["maxBufferedBytes"], 52_428_800);
    assert_eq!(h["policy"]["tickIntervalMs"], 30_000);
}

#[test]
fn every_listed_method_is_routed() {
    // A method listed in features.methods must never answer "unknown method".
    let gw = Gateway::standard(None);
    let mut c = gw.operator(&[ADMIN]);
    let methods: Vec<String> = c.hello["features"]["methods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap().to_string())
        .collect();
    for m in &methods {
        // Empty params: most fail validation, none may be unknown. agent.wait gets a short
        // timeout so it answers at once.
        let params = if m == "agent.wait" {
            json!({"runId": "nope", "timeoutMs": 1})
        } else {
            json!({})
        };
        let res = c.request(m, params);
        let msg = res["error"]["message"].as_str().unwrap_or("");
        assert!(
            !msg.starts_with("unknown method"),
            "{m} is listed but unknown: {res}"
        );
        if m == "agent" {
            // No second res for a refused agent call.
            assert_eq!(res["ok"], false, "{res}");
        }
    }
    // Still alive and in sync.
    c.request_ok("health", json!({}));
}

#[test]
fn wrong_token_closes_1008() {
    let gw = Gateway::standard(None);
    let mut c = gw.raw();
    let res = c.handshake(
        ConnectOpts {
            token: Some("wrong"),
            scopes: scopes(&[READ]),
            ..Default::default()
        }
        .params(),
    );
    assert_eq!(res["id"], "c1");
    assert_refused(
        &mut c,
        &res,
        "INVALID_REQUEST",
        Some("AUTH_TOKEN_MISMATCH"),
        1008,
    );
}

#[test]
fn missing_token_closes_1008() {
    let gw = Gateway::standard(None);
    let mut c = gw.raw();
    let res = c.handshake(
        ConnectOpts {
            token: None,
            scopes: scopes(&[READ]),
            ..Default::default()
        }
        .params(),
    );
    assert_refused(
        &mut c,
        &res,
        "INVALID_REQUEST",
        Some("AUTH_TOKEN_MISSING"),
        1008,
    );
}

#[test]
fn first_frame_not_connect_closes_1008() {
    let gw = Gateway::standard(None);
    let mut c = gw.raw();
    c.send_json(&json!({"type": "req", "id": "h1", "method": "health", "params": {}}));
    let res = c.wait_res("h1");
    assert_eq!(res["ok"], false, "{res}");
    assert_eq!(res["error"]["code"], "INVALID_REQUEST");
    assert_eq!(
        res["error"]["message"],
        "invalid handshake: first request must be connect"
    );
    let (code, _) = c.expect_close();
    assert_eq!(code, 1008);
}

#[test]
fn protocol_mismatch_closes_1002() {
    let gw = Gateway::standard(None);
    let mut c = gw.raw();
    let res = c.handshake(
        ConnectOpts {
            min_protocol: 3,
            max_protocol: 3,
            scopes: scopes(&[READ]),
            ..Default::default()
        }
        .params(),
    );
    assert_eq!(res["ok"], false, "{res}");
    assert_eq!(res["error"]["code"], "INVALID_REQUEST");
    assert_eq!(res["error"]["message"], "protocol mismatch");
    let d = &res["error"]["details"];
    assert_eq!(d["code"], "PROTOCOL_MISMATCH");
    assert_eq!(d["expectedProtocol"], 4);
    assert_eq!(d["clientMinProtocol"], 3);
    assert_eq!(d["clientMaxProtocol"], 3);
    assert_eq!(d["minimumProbeProtocol"], 3);
    let (code, reason) = c.expect_close();
    assert_eq!(code, 1002);
    assert_eq!(reason, "protocol mismatch");

    // A node offering 3..3 is accepted (nodes need a device identity).
    let node = DeviceIdentity::generate();
    let o = ConnectOpts {
        role: "node",
        client_id: "node-host",
        client_mode: "node",
        scopes: vec![],
        min_protocol: 3,
        max_protocol: 3,
        ..Default::default()
    };
    let n = Client::connect_with_device(gw.port, &node, &o);
    assert_eq!(n.hello["type"], "hello-ok");
    assert_eq!(n.hello["protocol"], 3);
    assert_eq!(n.hello["auth"]["role"], "node");
}

#[test]
fn oversize_preauth_frame_closes_1009() {
    let gw = Gateway::standard(None);
    let mut c = gw.raw();
    let mut p = ConnectOpts::default().params();
    p["userAgent"] = json!("x".repeat(70 * 1024));
    let frame = json!({"type": "req", "id": "c1", "method": "connect", "params": p}).to_string();
    assert!(frame.len() > 70 * 1024);
    // The gateway may stop reading mid-frame; a failed write is fine, the close is what counts.
    let _ = c.try_send_text(&frame);
    let (code, reason) = c.expect_close();
    assert_eq!(code, 1009, "reason {reason:?}");
    assert_eq!(reason, "preauth payload too large");
}

#[test]
fn handshake_timeout_closes() {
    let gw = Gateway::standard(Some("{gateway:{handshakeTimeoutMs:500}}"));
    let mut c = gw.raw();
    let res = c.wait_res("invalid");
    assert_eq!(res["ok"], false, "{res}");
    assert_eq!(res["error"]["code"], "INVALID_REQUEST");
    assert_eq!(res["error"]["message"], "handshake timeout");
    assert_eq!(res["error"]["details"]["code"], "HANDSHAKE_TIMEOUT");
    let (code, _) = c.expect_close();
    assert_eq!(code, 1008);
}

#[test]
fn device_signature_ok_v3_gets_device_token() {
    let gw = Gateway::standard(None);
    let id = DeviceIdentity::generate();
    let o = ConnectOpts {
        client_id: "openclaw-macos",
        client_mode: "ui",
        platform: " MacOS ",
        device_family: Some("Mac"),
        scopes: scopes(&[READ, WRITE]),
        ..Default::default()
    };
    let mut c = Client::connect_with_device(gw.port, &id, &o);
    let auth = &c.hello["auth"];
    assert_eq!(auth["role"], "operator");
    assert_eq!(auth["scopes"], json!([READ, WRITE]));
    let device_token = auth["deviceToken"]
        .as_str()
        .unwrap_or_else(|| panic!("hello-ok.auth.deviceToken: {auth}"))
        .to_string();
    assert!(!device_token.is_empty());
    assert!(
        auth["issuedAtMs"].is_i64() || auth["issuedAtMs"].is_u64(),
        "{auth}"
    );
    c.request_ok("status", json!({}));

    // Reconnect with the device token alone (no shared token).
    let o2 = ConnectOpts {
        token: None,
        device_token: Some(&device_token),
        ..o.clone()
    };
    let mut c2 = Client::connect_with_device(gw.port, &id, &o2);
    assert_eq!(c2.hello["auth"]["role"], "operator");
    assert_eq!(c2.hello["auth"]["scopes"], json!([READ, WRITE]));
    c2.request_ok("status", json!({}));

    // A wrong device token is refused.
    let o3 = ConnectOpts {
        token: None,
        device_token: Some("not-the-token"),
        ..o
    };
    let mut c3 = gw.raw();
    let mut p = o3.params();
    p["device"] = o3.device_v3(&id, &c3.nonce.clone(), c3.challenge_ts);
    let res = c3.handshake(p);
    assert_refused(
        &mut c3,
        &res,
        "INVALID_REQUEST",
        Some("AUTH_DEVICE_TOKEN_MISMATCH"),
        1008,
    );
}

#[test]
fn device_v2_signature_accepted() {
    let gw = Gateway::standard(None);
    let id = DeviceIdentity::generate();
    let o = ConnectOpts {
        scopes: scopes(&[READ]),
        ..Default::default()
    };
    let mut c = gw.raw();
    let mut p = o.params();
    p["device"] = o.device_v2(&id, &c.nonce.clone(), c.challenge_ts);
    let res = c.handshake(p);
    assert_eq!(res["ok"], true, "v2 signature refused: {res}");
    assert_eq!(res["payload"]["auth"]["scopes"], json!([READ]));
    assert!(res["payload"]["auth"]["deviceToken"].is_string(), "{res}");
}

/// Connects with a device block built by `tamper` from a valid v3 one; returns the res.
fn device_connect_tampered(
    gw: &Gateway,
    tamper: impl FnOnce(&mut Value, &ConnectOpts<'_>, &Client, &DeviceIdentity),
) -> (Client, Value) {
    let id = DeviceIdentity::generate();
    let o = ConnectOpts {
        scopes: scopes(&[READ]),
        ..Default::default()
    };
    let mut c = gw.raw();
    let mut p = o.params();
    let mut d = o.device_v3(&id, &c.nonce.clone(), c.challenge_ts);
    tamper(&mut d, &o, &c, &id);
    p["device"] = d;
    let res = c.handshake(p);
    (c, res)
}

#[test]
fn bad_signature_rejected() {
    let gw = Gateway::standard(None);
    let (mut c, res) = device_connect_tampered(&gw, |d, o, c, id| {
        // A genuine signature of this key, but over other scopes than the request carries.
        let other = ConnectOpts {
            scopes: scopes(&[ADMIN]),
            ..o.clone()
        };
        d["signature"] = other.device_v3(id, &c.nonce, c.challenge_ts)["signature"].clone();
    });
    assert_refused(
        &mut c,
        &res,
        "INVALID_REQUEST",
        Some("DEVICE_AUTH_SIGNATURE_INVALID"),
        1008,
    );

    // Garbage signature bytes.
    let (mut c, res) = device_connect_tampered(&gw, |d, _, _, _| {
        d["signature"] = json!("AAAA");
    });
    assert_refused(
        &mut c,
        &res,
        "INVALID_REQUEST",
        Some("DEVICE_AUTH_SIGNATURE_INVALID"),
        1008,
    );
}

#[test]
fn stale_signature_rejected() {
    let gw = Gateway::standard(None);
    let id = DeviceIdentity::generate();
    let o = ConnectOpts {
        scopes: scopes(&[READ]),
        ..Default::default()
    };
    let mut c = gw.raw();
    let mut p = o.params();
    p["device"] = o.device_v3(&id, &c.nonce.clone(), now_ms() - 3 * 60_000);
    let res = c.handshake(p);
    assert_refused(
        &mut c,
        &res,
        "INVALID_REQUEST",
        Some("DEVICE_AUTH_SIGNATURE_EXPIRED"),
        1008,
    );
}

#[test]
fn nonce_mismatch_rejected() {
    let gw = Gateway::standard(None);
    let id = DeviceIdentity::generate();
    let o = ConnectOpts {
        scopes: scopes(&[READ]),
        ..Default::default()
    };
    let mut c = gw.raw();
    let mut p = o.params();
    // Correctly signed, but over another connection's nonce.
    let other = gw.raw();
    p["device"] = o.device_v3(&id, &other.nonce, c.challenge_ts);
    let res = c.handshake(p);
    assert_refused(
        &mut c,
        &res,
        "INVALID_REQUEST",
        Some("DEVICE_AUTH_NONCE_MISMATCH"),
        1008,
    );
}

#[test]
fn wrong_device_id_rejected() {
    let gw = Gateway::standard(None);
    let (mut c, res) = device_connect_tampered(&gw, |d, _, _, _| {
        d["id"] = json!(DeviceIdentity::generate().device_id());
    });
    assert_refused(
        &mut c,
        &res,
        "INVALID_REQUEST",
        Some("DEVICE_AUTH_DEVICE_ID_MISMATCH"),
        1008,
    );
}

#[test]
fn token_without_device_scopes_cleared_when_loopback_trust_off() {
    let gw = Gateway::standard(Some(
        "{gateway:{auth:{loopbackSharedSecretKeepsScopes:false}}}",
    ));
    let mut c = gw.operator(&[READ, WRITE]);
    assert_eq!(c.hello["auth"]["scopes"], json!([]), "{}", c.hello);
    let e = c.request_err("status", json!({}));
    assert_eq!(e["code"], "INVALID_REQUEST");
    assert_eq!(e["message"], "missing scope: operator.read");
    let h = c.request_ok("health", json!({}));
    assert_eq!(h["ok"], true, "{h}");
}

#[test]
fn probe_and_ui_token_connects_without_device_get_no_scopes() {
    let gw = Gateway::standard(None);
    // Exactly what `openclaw gateway probe` sends from a fresh HOME (no device identity).
    for (id, mode) in [
        ("cli", "probe"),
        ("openclaw-tui", "ui"),
        ("webchat", "webchat"),
    ] {
        let o = ConnectOpts {
            client_id: id,
            client_mode: mode,
            scopes: scopes(&[READ]),
            ..Default::default()
        };
        let mut c = Client::connect_with(gw.port, &o);
        assert_eq!(
            c.hello["auth"]["scopes"],
            json!([]),
            "{id}/{mode}: {}",
            c.hello
        );
        let e = c.request_err("status", json!({}));
        assert_eq!(e["message"], "missing scope: operator.read", "{id}/{mode}");
    }
    // A browser (an Origin header) does not keep them even as cli/cli.
    let mut b = Client::connect_raw_with_origin(gw.port, &format!("http://127.0.0.1:{}", gw.port));
    let res = b.handshake(
        ConnectOpts {
            scopes: scopes(&[READ]),
            ..Default::default()
        }
        .params(),
    );
    assert_eq!(res["ok"], true, "{res}");
    assert_eq!(res["payload"]["auth"]["scopes"], json!([]), "{res}");
}

#[test]
fn cli_style_token_connect_keeps_requested_scopes() {
    let gw = Gateway::standard(None);
    // Exactly the frame the openclaw CLI sends (FRAMES.md §1).
    let mut c = gw.raw();
    c.send_json(&json!({"type":"req","id":"1:6c202c31-939c-4efe-9f05-4428578caa45","method":"connect","params":{
        "minProtocol":4,"maxProtocol":4,
        "client":{"id":"cli","version":"2026.9.6","platform":"linux","deviceFamily":"Linux","mode":"cli","instanceId":"9a3db093-54e9-40ec-bffc-84b7883e3ec5"},
        "caps":[],"auth":{"token":TOKEN},"role":"operator","scopes":["operator.read"]}}));
    let res = c.wait_res("1:6c202c31-939c-4efe-9f05-4428578caa45");
    assert_eq!(res["ok"], true, "{res}");
    assert_eq!(res["payload"]["auth"]["scopes"], json!([READ]));
    c.request_ok("status", json!({}));
    let p = c.request_ok("system-presence", json!({}));
    assert!(p.is_array(), "{p}");

    // operator.write alone is enough for agent.
    let mut w = gw.operator(&[WRITE]);
    assert_eq!(w.hello["auth"]["scopes"], json!([WRITE]));
    let (_, fin) = w.run_agent("cli-scopes", "hi", "cli-k1");
    assert_eq!(fin["ok"], true, "{fin}");

    // The CLI's "unknown method" scope set includes scope names we do not know.
    let all = [
        ADMIN,
        READ,
        WRITE,
        "operator.approvals",
        "operator.questions",
        "operator.pairing",
        "operator.talk.secrets",
    ];
    let mut a = gw.operator(&all);
    assert_eq!(a.hello["auth"]["scopes"], json!(all));
    a.request_ok("config.get", json!({}));
}

#[test]
fn paired_device_persisted_in_state_dir() {
    let gw = Gateway::standard(None);
    let id = DeviceIdentity::generate();
    let o = ConnectOpts {
        scopes: scopes(&[READ]),
        ..Default::default()
    };
    let _c = Client::connect_with_device(gw.port, &id, &o);
    let path = gw.state_dir.join("devices").join("paired.json");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let v: Value = serde_json::from_str(&text).expect("paired.json is JSON");
    assert!(
        v.get(id.device_id()).is_some(),
        "paired.json is keyed by device id and holds {}: {text}",
        id.device_id()
    );
}

#[test]
fn too_many_unauthenticated_sockets_503() {
    let gw = Gateway::standard(Some("{gateway:{maxUnauthenticatedPerIp:2}}"));
    let mut a = gw.raw();
    let _b = gw.raw();
    let resp = raw_upgrade(gw.port);
    let status = resp.lines().next().unwrap_or("");
    assert!(
        status.starts_with("HTTP/1.1 503"),
        "third unauthenticated socket: {resp:?}"
    );
    assert!(
        resp.contains("Too many unauthenticated sockets"),
        "{resp:?}"
    );

    // Once one of them authenticates, there is room again.
    let res = a.handshake(
        ConnectOpts {
            scopes: scopes(&[READ]),
            ..Default::default()
        }
        .params(),
    );
    assert_eq!(res["ok"], true, "{res}");
    let c = gw.raw();
    assert!(!c.nonce.is_empty());

    // Unauthenticated sockets that go away free their slot.
    drop(c);
    drop(_b);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut upgraded = 0;
    while upgraded < 2 {
        let resp = raw_upgrade(gw.port);
        if resp.starts_with("HTTP/1.1 101") {
            upgraded += 1;
        } else {
            assert!(resp.starts_with("HTTP/1.1 503"), "{resp:?}");
            assert!(
                Instant::now() < deadline,
                "closed unauthenticated sockets never released"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A gateway bound to all interfaces, and this host's LAN address to reach it as a
/// non-loopback peer. `None` (test skipped) when the host has no such address.
fn lan_gateway(config: Option<&str>) -> Option<(Gateway, IpAddr)> {
    let Some(ip) = lan_ip() else {
        eprintln!("skipped: no non-loopback IPv4 address on this host");
        return None;
    };
    let gw = Gateway::start(
        &["--token", TOKEN, "--shards", "2", "--bind", "lan"],
        config,
    );
    Some((gw, ip))
}

#[test]
fn lan_operator_without_device_gets_no_scopes() {
    let Some((gw, ip)) = lan_gateway(None) else {
        return;
    };
    let mut c = Client::connect_raw_at(ip, gw.port);
    let res = c.handshake(
        ConnectOpts {
            scopes: scopes(&[READ, WRITE]),
            ..Default::default()
        }
        .params(),
    );
    assert_eq!(res["ok"], true, "{res}");
    assert_eq!(res["payload"]["auth"]["scopes"], json!([]), "{res}");
    let e = c.request_err("status", json!({}));
    assert_eq!(e["message"], "missing scope: operator.read");
    c.request_ok("health", json!({}));
}

#[test]
fn lan_unknown_device_requires_pairing() {
    let Some((gw, ip)) = lan_gateway(None) else {
        return;
    };
    let id = DeviceIdentity::generate();
    let read = ConnectOpts {
        scopes: scopes(&[READ]),
        ..Default::default()
    };
    let lan_connect = |o: &ConnectOpts<'_>| {
        let mut c = Client::connect_raw_at(ip, gw.port);
        let mut p = o.params();
        p["device"] = o.device_v3(&id, &c.nonce.clone(), c.challenge_ts);
        let res = c.handshake(p);
        (c, res)
    };

    let (mut c, res) = lan_connect(&read);
    assert_refused(&mut c, &res, "NOT_PAIRED", Some("PAIRING_REQUIRED"), 1008);
    let d = &res["error"]["details"];
    assert!(
        d["requestId"].as_str().is_some_and(|r| !r.is_empty()),
        "{res}"
    );
    assert_eq!(d["reason"], "not-paired", "{res}");

    // Paired from loopback (silently approved), the device may then connect from the LAN.
    let _local = Client::connect_with_device(gw.port, &id, &read);
    let (c, res) = lan_connect(&read);
    assert_eq!(res["ok"], true, "{res}");
    assert_eq!(res["payload"]["auth"]["scopes"], json!([READ]));
    drop(c);

    // Asking for more than was approved needs pairing again.
    let more = ConnectOpts {
        scopes: scopes(&[READ, ADMIN]),
        ..Default::default()
    };
    let (mut c, res) = lan_connect(&more);
    assert_refused(&mut c, &res, "NOT_PAIRED", Some("PAIRING_REQUIRED"), 1008);
    assert_eq!(res["error"]["details"]["reason"], "scope-upgrade", "{res}");
}

#[test]
fn lan_auth_failures_rate_limited() {
    let Some((gw, ip)) = lan_gateway(Some("{gateway:{authFailuresPerMinute:3}}")) else {
        return;
    };
    let attempt = |token: &str| {
        let mut c = Client::connect_raw_at(ip, gw.port);
        let res = c.handshake(
            ConnectOpts {
                token: Some(token),
                scopes: scopes(&[READ]),
                ..Default::default()
            }
            .params(),
        );
        (c, res)
    };
    for _ in 0..3 {
        let (mut c, res) = attempt("wrong");
        assert_refused(
            &mut c,
            &res,
            "INVALID_REQUEST",
            Some("AUTH_TOKEN_MISMATCH"),
            1008,
        );
    }
    // Locked out, even with the right token.
    let (mut c, res) = attempt(TOKEN);
    assert_eq!(res["error"]["retryable"], true, "{res}");
    assert!(
        res["error"]["retryAfterMs"]
            .as_u64()
            .is_some_and(|ms| ms > 0),
        "{res}"
    );
    assert_refused(
        &mut c,
        &res,
        "INVALID_REQUEST",
        Some("AUTH_RATE_LIMITED"),
        1008,
    );
    // Loopback is exempt.
    let mut l = gw.operator(&[READ]);
    l.request_ok("status", json!({}));
}

#[test]
fn password_auth_mode() {
    let gw = Gateway::start(
        &["--auth", "password", "--password", "pw-1", "--shards", "2"],
        None,
    );
    let mut ok = gw.raw();
    let mut p = ConnectOpts {
        token: None,
        scopes: scopes(&[READ]),
        ..Default::default()
    }
    .params();
    p["auth"] = json!({"password": "pw-1"});
    let res = ok.handshake(p.clone());
    assert_eq!(res["ok"], true, "{res}");
    assert_eq!(res["payload"]["snapshot"]["authMode"], "password");
    ok.request_ok("status", json!({}));

    let mut bad = gw.raw();
    p["auth"] = json!({"password": "nope"});
    let res = bad.handshake(p.clone());
    assert_refused(
        &mut bad,
        &res,
        "INVALID_REQUEST",
        Some("AUTH_PASSWORD_MISMATCH"),
        1008,
    );

    let mut none = gw.raw();
    p["auth"] = json!({});
    let res = none.handshake(p);
    assert_refused(
        &mut none,
        &res,
        "INVALID_REQUEST",
        Some("AUTH_PASSWORD_MISSING"),
        1008,
    );
}

#[test]
fn node_role_limited_to_node_methods() {
    let gw = Gateway::standard(None);
    let node = DeviceIdentity::generate();
    let o = ConnectOpts {
        role: "node",
        client_id: "node-host",
        client_mode: "node",
        ..Default::default()
    };
    let mut n = Client::connect_with_device(gw.port, &node, &o);
    assert_eq!(n.hello["protocol"], 4);
    n.request_ok("health", json!({}));
    let e = n.request_err("status", json!({}));
    assert_eq!(e["code"], "INVALID_REQUEST");
    assert_eq!(e["message"], "unauthorized role: node");

    // Without a device a node is refused.
    let mut c = gw.raw();
    let res = c.handshake(o.params());
    assert_refused(
        &mut c,
        &res,
        "NOT_PAIRED",
        Some("DEVICE_IDENTITY_REQUIRED"),
        1008,
    );
}
