//! Setup codes (issue 20): `device.pair.setupCode` mints a single-use, expiring bootstrap
//! token; `GET /j/<code>` serves its payload once; a node connecting with
//! `auth.bootstrapToken` is paired (device and command surface) without an operator, and the
//! same token never admits anything again.

use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};
use shardgate::auth::device::DeviceIdentity;

use crate::support::{http_get, now_ms, Client, ConnectOpts, Gateway, ADMIN, READ};

/// A gateway whose setup codes name `ws://127.0.0.1:<port>` and live `ttl`.
fn gateway(ttl: &str) -> Gateway {
    // The public URL must name the port, which is known only once started: the codes carry
    // a placeholder host the tests never dial (they connect to the port they know).
    Gateway::standard(Some(&format!(
        "{{gateway: {{pairing: {{publicUrl: 'ws://127.0.0.1:1', setupCodeTtl: '{ttl}'}}}}}}"
    )))
}

/// Connects a node with `id` presenting `token` as `auth.bootstrapToken`; the connect `res`.
fn connect_bootstrap(port: u16, id: &DeviceIdentity, token: &str, role: &str) -> (Client, Value) {
    connect_bootstrap_scoped(port, id, token, role, &[])
}

/// [`connect_bootstrap`] asking for `scopes`.
fn connect_bootstrap_scoped(
    port: u16,
    id: &DeviceIdentity,
    token: &str,
    role: &str,
    scopes: &[&str],
) -> (Client, Value) {
    let o = ConnectOpts {
        token: Some(token), // what the device signature covers
        role,
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        client_id: "node-host",
        client_mode: "node",
        ..Default::default()
    };
    let mut c = Client::connect_raw(port);
    let mut p = o.params();
    p["auth"] = json!({"bootstrapToken": token});
    p["commands"] = json!(["system.which"]);
    p["caps"] = json!(["system"]);
    p["device"] = o.device_v3(id, &c.nonce.clone(), c.challenge_ts);
    let res = c.handshake(p);
    (c, res)
}

fn assert_refused(c: &mut Client, res: &Value) {
    assert_eq!(res["ok"], false, "{res}");
    let e = &res["error"];
    assert_eq!(e["code"], "INVALID_REQUEST", "{res}");
    assert_eq!(
        e["details"]["code"], "AUTH_BOOTSTRAP_TOKEN_INVALID",
        "{res}"
    );
    assert_eq!(
        e["message"],
        "unauthorized: setup code invalid, expired, revoked, or already used (create a new code; review `openclaw devices list`)"
    );
    assert_eq!(c.expect_close().0, 1008);
}

fn decode(code: &str) -> Value {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(code)
        .expect("setup code is unpadded base64url");
    serde_json::from_slice(&bytes).expect("setup code is JSON")
}

#[test]
fn bootstrap_token_pairs_a_node_once_and_join_url_serves_once() {
    let gw = gateway("10m");
    let mut admin = gw.operator(&[ADMIN]);
    let r = admin.request_ok(
        "device.pair.setupCode",
        json!({"bootstrapProfile": "node", "includeQr": false, "joinUrl": true}),
    );
    assert_eq!(r["access"], "node", "{r}");
    assert_eq!(r["auth"], "token");
    assert_eq!(r["gatewayUrl"], "ws://127.0.0.1:1");
    let payload = decode(r["setupCode"].as_str().unwrap());
    assert_eq!(payload["url"], "ws://127.0.0.1:1");
    assert_eq!(payload["expiresAtMs"], r["expiresAtMs"]);
    let token = payload["bootstrapToken"].as_str().unwrap().to_string();
    assert_eq!(token.len(), 43, "256-bit token");
    // The join URL: loopback ws → http, a 22-character shortcode.
    let join = r["joinUrl"].as_str().unwrap();
    let code = join.strip_prefix("http://127.0.0.1:1/j/").expect(join);
    assert_eq!(code.len(), 22, "{join}");
    let path = format!("/j/{code}");
    assert_eq!(
        http_get(gw.port, &format!("{path}?x=1")).0,
        404,
        "query refused"
    );
    let (status, _, body) = http_get(gw.port, &path);
    assert_eq!(status, 200, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap(), payload);
    let (status, _, body) = http_get(gw.port, &path);
    assert_eq!((status, body.as_str()), (404, r#"{"error":"not_found"}"#));

    // The token admits a node: device paired, surface approved, no request pending.
    let id = DeviceIdentity::generate();
    let (node, res) = connect_bootstrap(gw.port, &id, &token, "node");
    assert_eq!(res["ok"], true, "{res}");
    let auth = &res["payload"]["auth"];
    assert_eq!(auth["method"], "bootstrap-token", "{auth}");
    assert_eq!(auth["role"], "node");
    assert!(auth["deviceToken"].is_string(), "{auth}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let d = admin.request("node.describe", json!({"nodeId": id.device_id()}));
        if d["payload"]["approvalState"] == "approved" {
            assert_eq!(d["payload"]["paired"], true, "{d}");
            assert_eq!(d["payload"]["commands"], json!(["system.which"]), "{d}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never approved: {d}");
    }
    let l = admin.request_ok("node.pair.list", json!({}));
    assert!(l["pending"].as_array().unwrap().is_empty(), "{l}");
    drop(node);

    // Used: the same token admits nobody again (another device, or the same one).
    let (mut c, res) = connect_bootstrap(gw.port, &DeviceIdentity::generate(), &token, "node");
    assert_refused(&mut c, &res);
    let (mut c, res) = connect_bootstrap(gw.port, &id, &token, "node");
    assert_refused(&mut c, &res);
}

#[test]
fn bootstrap_token_expires_and_admits_only_a_node() {
    // Long enough for three connects on a loaded machine before the first token expires;
    // the expiry check below waits on the clock for the second one.
    let gw = gateway("3s");
    let mut admin = gw.operator(&[ADMIN]);
    let mint = |admin: &mut Client| {
        let r = admin.request_ok("device.pair.setupCode", json!({"bootstrapProfile": "node"}));
        let p = decode(r["setupCode"].as_str().unwrap());
        (
            p["bootstrapToken"].as_str().unwrap().to_string(),
            p["expiresAtMs"].as_i64().unwrap(),
        )
    };
    // A node token does not admit an operator (and is not spent by the attempt).
    let (token, _) = mint(&mut admin);
    let (mut c, res) = connect_bootstrap(gw.port, &DeviceIdentity::generate(), &token, "operator");
    assert_refused(&mut c, &res);
    // Nor by a node asking for scopes (refused before the token is looked at).
    let (mut c, res) = connect_bootstrap_scoped(
        gw.port,
        &DeviceIdentity::generate(),
        &token,
        "node",
        &[READ],
    );
    assert_refused(&mut c, &res);
    let (_node, res) = connect_bootstrap(gw.port, &DeviceIdentity::generate(), &token, "node");
    assert_eq!(res["ok"], true, "unspent by the operator attempt: {res}");
    // Expired: refused once its deadline has passed (waiting on the clock, not a guess).
    let (late, expires) = mint(&mut admin);
    while now_ms() <= expires {
        std::thread::sleep(Duration::from_millis(20));
    }
    let (mut c, res) = connect_bootstrap(gw.port, &DeviceIdentity::generate(), &late, "node");
    assert_refused(&mut c, &res);
    // Unknown tokens are the same refusal.
    let (mut c, res) = connect_bootstrap(gw.port, &DeviceIdentity::generate(), "x", "node");
    assert_refused(&mut c, &res);
    // Minting needs admin; join URLs only for the node profile.
    let mut reader = gw.operator(&[READ]);
    let e = reader.request_err("device.pair.setupCode", json!({}));
    assert_eq!(e["message"], "missing scope: operator.admin", "{e}");
    let e = admin.request_err(
        "device.pair.setupCode",
        json!({"bootstrapProfile": "operator", "joinUrl": true}),
    );
    assert_eq!(e["message"], "Join URLs require bootstrapProfile=node.");
}

#[test]
fn loopback_gateway_without_public_url_mints_no_code() {
    let gw = Gateway::standard(None);
    let mut admin = gw.operator(&[ADMIN]);
    let e = admin.request_err("device.pair.setupCode", json!({"joinUrl": true}));
    assert_eq!(e["code"], "INVALID_REQUEST", "{e}");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .starts_with("Gateway is only bound to loopback."),
        "{e}"
    );
    assert_eq!(http_get(gw.port, "/j/AAAAAAAAAAAAAAAAAAAAAA").0, 404);
}

#[test]
fn setup_code_and_join_url_survive_a_restart_with_their_expiry() {
    let state = tempfile::tempdir().unwrap();
    let launch = || match Gateway::launch(crate::support::Launch {
        args: &["--token", crate::support::TOKEN],
        config: Some("{gateway: {pairing: {publicUrl: 'ws://127.0.0.1:1', setupCodeTtl: '10m'}}}"),
        state_dir: Some(state.path()),
        ..Default::default()
    }) {
        crate::support::Started::Ready(g) => g,
        crate::support::Started::Exited { status, stderr } => panic!("{status}: {stderr}"),
    };
    let (token, join_path, expires) = {
        let gw = launch();
        let mut admin = gw.operator(&[ADMIN]);
        let r = admin.request_ok(
            "device.pair.setupCode",
            json!({"bootstrapProfile": "node", "joinUrl": true}),
        );
        let payload = decode(r["setupCode"].as_str().unwrap());
        let join = r["joinUrl"].as_str().unwrap();
        let code = join.strip_prefix("http://127.0.0.1:1/j/").expect(join);
        (
            payload["bootstrapToken"].as_str().unwrap().to_string(),
            format!("/j/{code}"),
            r["expiresAtMs"].clone(),
        )
    };
    // Restarted on the same state dir: the join URL serves its payload (expiry kept) once,
    // and the setup code's token pairs a node once.
    let gw = launch();
    let (status, _, body) = http_get(gw.port, &join_path);
    assert_eq!(status, 200, "join URL lost on restart: {body}");
    let served: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(served["bootstrapToken"], token.as_str());
    assert_eq!(served["expiresAtMs"], expires);
    assert_eq!(http_get(gw.port, &join_path).0, 404, "served twice");
    let id = DeviceIdentity::generate();
    let (_node, res) = connect_bootstrap(gw.port, &id, &token, "node");
    assert_eq!(res["ok"], true, "setup code lost on restart: {res}");
    assert_eq!(res["payload"]["auth"]["method"], "bootstrap-token");
    drop(gw);
    // Spent before the second restart: refused after it.
    let gw = launch();
    assert_eq!(http_get(gw.port, &join_path).0, 404);
    let (mut c, res) = connect_bootstrap(gw.port, &DeviceIdentity::generate(), &token, "node");
    assert_refused(&mut c, &res);
}
