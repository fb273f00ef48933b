//! Security (SPEC §3, §8): pairing policies by network class and the pairing methods, device
//! token expiry / revocation / rotation, TOTP, the IP allowlist, rate limits, the Origin check,
//! connections per IP, TLS 1.3 with rotation, mTLS, and `gateway.audit`.
//!
//! Network classes are real: a gateway bound to `lan` is reached through this host's
//! non-loopback address ([`lan_ip`]), which `gateway.pairing.lanRanges` then classifies as
//! `lan` (listed) or `wan` (not listed).

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::{json, Value};
use shardgate::auth::device::DeviceIdentity;
use shardgate::auth::totp;
use tungstenite::protocol::WebSocket;
use tungstenite::Message;

use crate::support::{
    http_get, http_raw, lan_ip, now_ms, scopes, Client, ConnectOpts, Gateway, Launch, Started,
    ADMIN, FRAME_TIMEOUT, READ, TOKEN, WRITE,
};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Asserts a refused `res` with `code` / `details.code`, then the close.
fn refused(c: &mut Client, res: &Value, code: &str, detail: &str, close: u16) {
    assert_eq!(res["ok"], false, "{res}");
    assert_eq!(res["error"]["code"], code, "{res}");
    assert_eq!(res["error"]["details"]["code"], detail, "{res}");
    let (cc, _) = c.expect_close();
    assert_eq!(cc, close, "close code after {res}");
}

/// A connect from `ip` with a v3-signed device and, optionally, a TOTP code.
fn dev_connect(
    ip: IpAddr,
    port: u16,
    id: &DeviceIdentity,
    o: &ConnectOpts<'_>,
    code: Option<&str>,
) -> (Client, Value) {
    let mut c = Client::connect_raw_at(ip, port);
    let mut p = o.params();
    p["device"] = o.device_v3(id, &c.nonce.clone(), c.challenge_ts);
    if let Some(code) = code {
        p["auth"]["totp"] = json!(code);
    }
    let res = c.handshake(p);
    (c, res)
}

fn loopback() -> IpAddr {
    IpAddr::from([127, 0, 0, 1])
}

/// A gateway bound to all interfaces plus this host's LAN address; `None` (skip) without one.
fn lan_gateway(args: &[&str], config: &dyn Fn(IpAddr) -> String) -> Option<(Gateway, IpAddr)> {
    let Some(ip) = lan_ip() else {
        eprintln!("skipped: no non-loopback IPv4 address on this host");
        return None;
    };
    let mut a = vec!["--shards", "2", "--bind", "lan"];
    a.extend_from_slice(args);
    let cfg = config(ip);
    Some((Gateway::start(&a, Some(&cfg)), ip))
}

fn read_opts() -> ConnectOpts<'static> {
    ConnectOpts {
        scopes: scopes(&[READ]),
        ..Default::default()
    }
}

/// An HTTP request head for a WebSocket upgrade of `/` with extra header lines.
fn upgrade_with(ip: IpAddr, port: u16, extra: &str) -> String {
    let mut s = TcpStream::connect((ip, port)).expect("connect");
    s.set_read_timeout(Some(FRAME_TIMEOUT)).unwrap();
    let req = format!(
        "GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    let mut b = [0u8; 1];
    while !out.ends_with(b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(0) => break,
            Ok(_) => out.push(b[0]),
            Err(e) => panic!("reading upgrade response: {e}"),
        }
    }
    let head = String::from_utf8_lossy(&out).into_owned();
    if head.starts_with("HTTP/1.1 101") {
        return head;
    }
    let mut rest = String::new();
    let _ = s.read_to_string(&mut rest);
    head + &rest
}

// ---------------------------------------------------------------------------------------------
// Pairing policies and methods
// ---------------------------------------------------------------------------------------------

#[test]
fn lan_device_waits_for_operator_approval_then_gets_a_30d_token() {
    let Some((gw, ip)) = lan_gateway(&["--token", TOKEN], &|ip| {
        format!("{{gateway:{{pairing:{{lanRanges:['{ip}/32']}}}}}}")
    }) else {
        return;
    };
    let mut admin = gw.operator(&[ADMIN]);
    let id = DeviceIdentity::generate();

    let (mut c, res) = dev_connect(ip, gw.port, &id, &read_opts(), None);
    let rid = res["error"]["details"]["requestId"]
        .as_str()
        .unwrap_or_else(|| panic!("requestId: {res}"))
        .to_string();
    assert_eq!(res["error"]["details"]["reason"], "not-paired");
    refused(&mut c, &res, "NOT_PAIRED", "PAIRING_REQUIRED", 1008);

    // Operators hear about it, with the network class it came from.
    let ev = admin.wait_event_named("device.pair.requested");
    assert_eq!(ev["payload"]["requestId"], rid.as_str(), "{ev}");
    assert_eq!(ev["payload"]["deviceId"], id.device_id());
    assert_eq!(ev["payload"]["network"], "lan");
    assert_eq!(ev["payload"]["scopes"], json!([READ]));

    // Asking again while pending is the same request.
    let (_c, res) = dev_connect(ip, gw.port, &id, &read_opts(), None);
    assert_eq!(res["error"]["details"]["requestId"], rid.as_str(), "{res}");
    let list = admin.request_ok("device.pair.list", json!({}));
    let pending = list["pending"].as_array().unwrap();
    assert_eq!(pending.len(), 1, "{list}");
    assert_eq!(pending[0]["requestId"], rid.as_str());

    // A reader may not approve.
    let mut reader = gw.operator(&[READ]);
    let e = reader.request_err("device.pair.approve", json!({"requestId": rid}));
    assert_eq!(e["message"], "missing scope: operator.pairing", "{e}");

    let r = admin.request_ok("device.pair.approve", json!({"requestId": rid}));
    assert_eq!(r["device"]["deviceId"], id.device_id(), "{r}");
    let ev = admin.wait_event_named("device.pair.resolved");
    assert_eq!(ev["payload"]["decision"], "approved", "{ev}");
    assert_eq!(ev["payload"]["requestId"], rid.as_str());

    let before = now_ms();
    let (_c, res) = dev_connect(ip, gw.port, &id, &read_opts(), None);
    assert_eq!(
        res["ok"], true,
        "approved device connects from the LAN: {res}"
    );
    assert!(res["payload"]["auth"]["deviceToken"].is_string(), "{res}");
    let list = admin.request_ok("device.pair.list", json!({}));
    assert!(list["pending"].as_array().unwrap().is_empty(), "{list}");
    let dev = list["paired"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["deviceId"] == id.device_id().as_str())
        .unwrap_or_else(|| panic!("paired: {list}"))
        .clone();
    let exp = dev["tokens"][0]["expiresAtMs"].as_i64().expect("expiry");
    let want = before + 30 * 86_400_000;
    assert!((exp - want).abs() < 60_000, "lan tokenLifetime 30d: {dev}");
    assert!(!dev
        .to_string()
        .contains(res["payload"]["auth"]["deviceToken"].as_str().unwrap()));
}

#[test]
fn rejected_request_is_gone_and_a_new_attempt_files_a_new_one() {
    let Some((gw, ip)) = lan_gateway(&["--token", TOKEN], &|ip| {
        format!("{{gateway:{{pairing:{{lanRanges:['{ip}/32']}}}}}}")
    }) else {
        return;
    };
    let mut admin = gw.operator(&["operator.pairing"]);
    let id = DeviceIdentity::generate();
    let (_c, res) = dev_connect(ip, gw.port, &id, &read_opts(), None);
    let rid = res["error"]["details"]["requestId"]
        .as_str()
        .unwrap()
        .to_string();
    let r = admin.request_ok("device.pair.reject", json!({"requestId": rid}));
    assert_eq!(r["deviceId"], id.device_id());
    let ev = admin.wait_event("resolved", |e| {
        e["event"] == "device.pair.resolved" && e["payload"]["requestId"] == rid.as_str()
    });
    assert_eq!(ev["payload"]["decision"], "rejected");
    let e = admin.request_err("device.pair.approve", json!({"requestId": rid}));
    assert_eq!(e["code"], "INVALID_REQUEST", "{e}");
    assert_eq!(
        e["message"], "unknown requestId",
        "OpenClaw's words, which its CLI reads"
    );
    assert_eq!(e["details"]["code"], "APPROVAL_NOT_FOUND", "{e}");
    let (_c, res) = dev_connect(ip, gw.port, &id, &read_opts(), None);
    assert_eq!(res["error"]["details"]["code"], "PAIRING_REQUIRED");
    assert_ne!(res["error"]["details"]["requestId"], rid.as_str());
    // Remove: a loopback-paired device is unpaired and its live connection closed.
    let other = DeviceIdentity::generate();
    let mut live = Client::connect_with_device(gw.port, &other, &read_opts());
    let r = admin.request_ok("device.pair.remove", json!({"deviceId": other.device_id()}));
    assert_eq!(r["removed"], true);
    assert_eq!(live.expect_close(), (1008, "device removed".into()));
}

#[test]
fn lenient_mode_admits_pending_device_with_no_scopes() {
    let Some((gw, ip)) = lan_gateway(&["--token", TOKEN], &|ip| {
        format!("{{gateway:{{pairing:{{mode:'lenient', lanRanges:['{ip}/32']}}}}}}")
    }) else {
        return;
    };
    let id = DeviceIdentity::generate();
    let (mut c, res) = dev_connect(ip, gw.port, &id, &read_opts(), None);
    assert_eq!(res["ok"], true, "{res}");
    let auth = &res["payload"]["auth"];
    assert_eq!(auth["scopes"], json!([]), "{res}");
    assert_eq!(auth["pairing"]["status"], "pending", "{res}");
    assert!(
        auth["deviceToken"].is_null(),
        "no token before approval: {res}"
    );
    let e = c.request_err("status", json!({}));
    assert_eq!(e["message"], "missing scope: operator.read");
    c.request_ok("health", json!({}));
    let mut admin = gw.operator(&[ADMIN]);
    let list = admin.request_ok("device.pair.list", json!({}));
    assert_eq!(
        list["pending"][0]["requestId"],
        auth["pairing"]["requestId"]
    );
}

#[test]
fn wan_device_needs_totp_for_admin_and_replayed_codes_are_refused() {
    // lanRanges [] makes this host's address `wan` (policy: mfa for admin/write).
    let Some((gw, ip)) = lan_gateway(&["--token", TOKEN], &|_| {
        "{gateway:{pairing:{lanRanges:[]}}}".into()
    }) else {
        return;
    };
    let id = DeviceIdentity::generate();
    let adm = ConnectOpts {
        scopes: scopes(&[READ, ADMIN]),
        ..Default::default()
    };
    // Paired (silently) on loopback, where the localhost policy asks no second factor.
    let _local = Client::connect_with_device(gw.port, &id, &adm);
    // Read from the WAN needs no code.
    let (_c, res) = dev_connect(ip, gw.port, &id, &read_opts(), None);
    assert_eq!(res["ok"], true, "{res}");

    let (mut c, res) = dev_connect(ip, gw.port, &id, &adm, None);
    refused(&mut c, &res, "INVALID_REQUEST", "MFA_NOT_ENROLLED", 1008);

    let mut admin = gw.operator(&[ADMIN]);
    let en = admin.request_ok("device.mfa.enroll", json!({"deviceId": id.device_id()}));
    let secret = en["secret"].as_str().expect("secret").to_string();
    assert!(en["otpauthUrl"]
        .as_str()
        .unwrap()
        .starts_with("otpauth://totp/"));

    let (mut c, res) = dev_connect(ip, gw.port, &id, &adm, None);
    refused(&mut c, &res, "INVALID_REQUEST", "MFA_REQUIRED", 1008);
    let (mut c, res) = dev_connect(ip, gw.port, &id, &adm, Some("000000x"));
    refused(&mut c, &res, "INVALID_REQUEST", "MFA_INVALID", 1008);

    let code = totp::code_now(&secret, now_ms()).unwrap();
    let (mut ok, res) = dev_connect(ip, gw.port, &id, &adm, Some(&code));
    assert_eq!(res["ok"], true, "{res}");
    assert_eq!(res["payload"]["auth"]["scopes"], json!([READ, ADMIN]));
    ok.request_ok("config.get", json!({}));

    let (mut c, res) = dev_connect(ip, gw.port, &id, &adm, Some(&code));
    refused(&mut c, &res, "INVALID_REQUEST", "MFA_REPLAYED", 1008);
}

#[test]
fn operator_totp_when_mfa_enabled_everywhere() {
    let secret = totp::generate_secret();
    let gw = Gateway::standard(Some(&format!(
        "{{access:{{authentication:{{mfa:{{enabled:true, operatorSecret:'{secret}'}}}}}}}}"
    )));
    // Read needs no code.
    let _r = gw.operator(&[READ]);
    let mut c = gw.raw();
    let res = c.handshake(
        ConnectOpts {
            scopes: scopes(&[WRITE]),
            ..Default::default()
        }
        .params(),
    );
    refused(&mut c, &res, "INVALID_REQUEST", "MFA_REQUIRED", 1008);
    let mut c = gw.raw();
    let mut p = ConnectOpts {
        scopes: scopes(&[WRITE]),
        ..Default::default()
    }
    .params();
    p["auth"]["totp"] = json!(totp::code_now(&secret, now_ms()).unwrap());
    let res = c.handshake(p.clone());
    assert_eq!(res["ok"], true, "{res}");
    let mut c = gw.raw();
    let res = c.handshake(p);
    refused(&mut c, &res, "INVALID_REQUEST", "MFA_REPLAYED", 1008);
}

#[test]
fn wan_require_token_applies_even_with_auth_none() {
    let Some((gw, ip)) = lan_gateway(&["--auth", "none"], &|_| {
        "{gateway:{pairing:{lanRanges:[]}}}".into()
    }) else {
        return;
    };
    let no_token = ConnectOpts {
        token: None,
        scopes: scopes(&[READ]),
        ..Default::default()
    };
    let mut c = Client::connect_raw_at(ip, gw.port);
    let res = c.handshake(no_token.params());
    refused(&mut c, &res, "INVALID_REQUEST", "AUTH_TOKEN_MISSING", 1008);
    // Loopback: no token required.
    let id = DeviceIdentity::generate();
    let local = Client::connect_with_device(gw.port, &id, &no_token);
    let tok = local.hello["auth"]["deviceToken"]
        .as_str()
        .unwrap()
        .to_string();
    // From the WAN, the device token is the token.
    let with_dt = ConnectOpts {
        token: None,
        device_token: Some(&tok),
        scopes: scopes(&[READ]),
        ..Default::default()
    };
    let (_c, res) = dev_connect(ip, gw.port, &id, &with_dt, None);
    assert_eq!(res["ok"], true, "{res}");
    assert_eq!(res["payload"]["auth"]["method"], "device-token");
}

fn device_token_opts(tok: &str) -> ConnectOpts<'_> {
    ConnectOpts {
        token: None,
        device_token: Some(tok),
        scopes: scopes(&[READ]),
        ..Default::default()
    }
}

#[test]
fn expired_device_token_refused() {
    let gw = Gateway::standard(Some(
        "{gateway:{pairing:{policies:{localhost:{autoApprove:true, requireToken:false, tokenLifetime:'1s', mfa:false}}}}}",
    ));
    let id = DeviceIdentity::generate();
    let c = Client::connect_with_device(gw.port, &id, &read_opts());
    let tok = c.hello["auth"]["deviceToken"].as_str().unwrap().to_string();
    let (_ok, res) = dev_connect(loopback(), gw.port, &id, &device_token_opts(&tok), None);
    assert_eq!(res["ok"], true, "fresh token works: {res}");
    std::thread::sleep(Duration::from_millis(1100));
    let (mut c, res) = dev_connect(loopback(), gw.port, &id, &device_token_opts(&tok), None);
    refused(
        &mut c,
        &res,
        "INVALID_REQUEST",
        "AUTH_DEVICE_TOKEN_EXPIRED",
        1008,
    );
}

#[test]
fn revoked_device_token_refused_and_its_connection_closed() {
    let gw = Gateway::standard(None);
    let id = DeviceIdentity::generate();
    let mut live = Client::connect_with_device(gw.port, &id, &read_opts());
    let tok = live.hello["auth"]["deviceToken"]
        .as_str()
        .unwrap()
        .to_string();
    let mut admin = gw.operator(&[ADMIN]);
    let r = admin.request_ok(
        "device.token.revoke",
        json!({"deviceId": id.device_id(), "role": "operator"}),
    );
    assert!(r["revokedAtMs"].is_i64(), "{r}");
    assert_eq!(live.expect_close(), (1008, "device token revoked".into()));
    let (mut c, res) = dev_connect(loopback(), gw.port, &id, &device_token_opts(&tok), None);
    refused(
        &mut c,
        &res,
        "INVALID_REQUEST",
        "AUTH_DEVICE_TOKEN_REVOKED",
        1008,
    );
}

#[test]
fn rotated_device_token_replaces_the_old_one_and_reaches_only_its_device() {
    let gw = Gateway::standard(None);
    let id = DeviceIdentity::generate();
    let own = ConnectOpts {
        scopes: scopes(&[READ, "operator.pairing"]),
        ..Default::default()
    };
    let mut c = Client::connect_with_device(gw.port, &id, &own);
    let old = c.hello["auth"]["deviceToken"].as_str().unwrap().to_string();
    // The device rotates its own token: the new one comes back in band.
    let r = c.request_ok("device.token.rotate", json!({"deviceId": id.device_id()}));
    assert_eq!(r["tokenDelivery"], "in-band", "{r}");
    let new = r["token"].as_str().unwrap().to_string();
    assert_ne!(new, old);
    let (mut c2, res) = dev_connect(loopback(), gw.port, &id, &device_token_opts(&old), None);
    refused(
        &mut c2,
        &res,
        "INVALID_REQUEST",
        "AUTH_DEVICE_TOKEN_MISMATCH",
        1008,
    );
    let (_c3, res) = dev_connect(loopback(), gw.port, &id, &device_token_opts(&new), None);
    assert_eq!(res["ok"], true, "{res}");
    // Another operator rotates it: the token is withheld (OpenClaw), the device's sessions
    // of that role end.
    let mut admin = gw.operator(&["operator.pairing"]);
    let r = admin.request_ok("device.token.rotate", json!({"deviceId": id.device_id()}));
    assert_eq!(r["tokenDelivery"], "withheld-cross-device", "{r}");
    assert!(
        r.get("token").is_none(),
        "a device token reached another operator: {r}"
    );
    let (code, reason) = c.expect_close();
    assert_eq!((code, reason.as_str()), (1008, "device token rotated"));
    let (mut c4, res) = dev_connect(loopback(), gw.port, &id, &device_token_opts(&new), None);
    refused(
        &mut c4,
        &res,
        "INVALID_REQUEST",
        "AUTH_DEVICE_TOKEN_MISMATCH",
        1008,
    );
    let e = admin.request_err("device.token.rotate", json!({"deviceId": "nope"}));
    assert_eq!(e["details"]["code"], "NOT_FOUND", "{e}");
    let e = admin.request_err("device.pair.remove", json!({"deviceId": "nope"}));
    assert_eq!(e["message"], "unknown deviceId", "{e}");
}

// ---------------------------------------------------------------------------------------------
// Access limits
// ---------------------------------------------------------------------------------------------

#[test]
fn ip_allowlist_refuses_with_403_and_counts() {
    let Some((gw, ip)) = lan_gateway(&["--token", TOKEN], &|_| {
        "{access:{ipWhitelist:['10.99.0.0/16', 'localhost'], hostResolveTtl:'1ms'}}".into()
    }) else {
        return;
    };
    // Twice: the second check finds the host-name cache stale and refreshes it in the
    // background (on a blocking thread), answering from the cached addresses meanwhile.
    for _ in 0..2 {
        let resp = upgrade_with(ip, gw.port, "");
        assert!(resp.starts_with("HTTP/1.1 403"), "{resp}");
        assert!(resp.contains("address not allowed"), "{resp}");
        std::thread::sleep(Duration::from_millis(5));
    }
    // Loopback is always allowed.
    let mut op = gw.operator(&[READ]);
    op.request_ok("status", json!({}));
    let (_, _, metrics) = http_get(gw.port, "/metrics");
    assert!(
        metrics.contains("shardgate_refusals_total{reason=\"ip_not_allowed\"} 2"),
        "{metrics}"
    );
}

#[test]
fn origin_not_allowed_is_refused_with_403() {
    let gw = Gateway::standard(Some("{access:{allowedOrigins:['https://ui.example.com']}}"));
    let ip = loopback();
    let r = upgrade_with(ip, gw.port, "Origin: https://evil.example\r\n");
    assert!(r.starts_with("HTTP/1.1 403"), "{r}");
    assert!(r.contains("origin not allowed"), "{r}");
    let r = upgrade_with(ip, gw.port, "Origin: https://ui.example.com\r\n");
    assert!(r.starts_with("HTTP/1.1 101"), "{r}");
    let own = format!("Origin: http://127.0.0.1:{}\r\n", gw.port);
    assert!(upgrade_with(ip, gw.port, &own).starts_with("HTTP/1.1 101"));
    // No Origin: not a browser.
    assert!(upgrade_with(ip, gw.port, "").starts_with("HTTP/1.1 101"));
}

#[test]
fn connections_per_ip_capped_with_429() {
    let gw = Gateway::standard(Some("{access:{maxConnectionsPerIp:2}}"));
    let a = gw.operator(&[READ]);
    let _b = gw.raw();
    let r = upgrade_with(loopback(), gw.port, "");
    assert!(r.starts_with("HTTP/1.1 429"), "{r}");
    drop(a);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = upgrade_with(loopback(), gw.port, "");
        if r.starts_with("HTTP/1.1 101") {
            break;
        }
        assert!(Instant::now() < deadline, "slot never freed: {r}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends `health` until one is refused; returns the refusal's error.
fn until_limited(c: &mut Client, max: usize) -> Value {
    for _ in 0..max {
        let res = c.request("health", json!({}));
        if res["ok"] == false {
            return res["error"].clone();
        }
    }
    panic!("no rate limit within {max} requests");
}

#[test]
fn per_connection_rate_limit_fires_and_recovers() {
    // 120/min, 1 s deep: two at once, then one every 500 ms.
    let gw = Gateway::standard(Some(
        "{access:{rateLimiting:{perConnection:'120rpm', burst:'1s'}}}",
    ));
    let mut c = gw.operator(&[READ]);
    let e = until_limited(&mut c, 10);
    assert_eq!(e["code"], "UNAVAILABLE", "{e}");
    assert_eq!(e["details"]["code"], "RATE_LIMITED", "{e}");
    assert_eq!(e["details"]["limit"], "perConnection", "{e}");
    assert_eq!(e["retryable"], true);
    let wait = e["retryAfterMs"].as_u64().expect("retryAfterMs");
    assert!((1..=500).contains(&wait), "{e}");
    // Another connection has its own budget.
    gw.operator(&[READ]).request_ok("health", json!({}));
    std::thread::sleep(Duration::from_millis(wait + 20));
    c.request_ok("health", json!({}));
    let (_, _, metrics) = http_get(gw.port, "/metrics");
    assert!(
        metrics.contains("shardgate_refusals_total{reason=\"rate_limited\"}"),
        "{metrics}"
    );
}

#[test]
fn per_ip_rate_limit_spares_other_addresses() {
    // 120/min split over 2 shards: 60/min each, 1 deep.
    let Some((gw, ip)) = lan_gateway(&["--token", TOKEN], &|_| {
        "{access:{rateLimiting:{perIp:'120rpm', burst:'1s'}}}".into()
    }) else {
        return;
    };
    let mut c = gw.operator(&[READ]);
    let e = until_limited(&mut c, 10);
    assert_eq!(e["details"]["limit"], "perIp", "{e}");
    // The LAN address has its own bucket.
    let mut other = Client::connect_raw_at(ip, gw.port);
    let res = other.handshake(read_opts().params());
    assert_eq!(res["ok"], true, "{res}");
    other.request_ok("health", json!({}));
    std::thread::sleep(Duration::from_millis(
        e["retryAfterMs"].as_u64().unwrap() + 20,
    ));
    c.request_ok("health", json!({}));
}

#[test]
fn global_rate_limit_fires_and_recovers() {
    let gw = Gateway::standard(Some(
        "{access:{rateLimiting:{global:'120rpm', burst:'1s'}}}",
    ));
    let mut c = gw.operator(&[READ]);
    let e = until_limited(&mut c, 10);
    assert_eq!(e["details"]["limit"], "global", "{e}");
    std::thread::sleep(Duration::from_millis(
        e["retryAfterMs"].as_u64().unwrap() + 20,
    ));
    c.request_ok("health", json!({}));
}

// ---------------------------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------------------------

/// A CA and certificates it signs, as PEM files in a temp dir.
struct Pki {
    dir: tempfile::TempDir,
    ca: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(rcgen::DnType::CommonName, format!("{name} test CA"));
        p.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let ca =
            rcgen::CertifiedIssuer::self_signed(p, rcgen::KeyPair::generate().unwrap()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        Pki { dir, ca }
    }

    fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn ca_der(&self) -> CertificateDer<'static> {
        self.ca.der().clone()
    }

    /// A leaf for `localhost` / 127.0.0.1 (server) or a client; returns (cert DER, cert PEM,
    /// key PEM).
    fn leaf(&self, cn: &str, client: bool) -> (CertificateDer<'static>, String, String) {
        let mut p =
            rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        p.extended_key_usages = vec![if client {
            rcgen::ExtendedKeyUsagePurpose::ClientAuth
        } else {
            rcgen::ExtendedKeyUsagePurpose::ServerAuth
        }];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.ca).unwrap();
        (cert.der().clone(), cert.pem(), key.serialize_pem())
    }

    /// Writes a server cert/key pair (atomically, by rename) to `cert.pem` / `key.pem`.
    fn install_server(&self, cn: &str) -> CertificateDer<'static> {
        let (der, cert, key) = self.leaf(cn, false);
        let d = self.dir.path();
        std::fs::write(d.join("key.tmp"), key).unwrap();
        std::fs::write(d.join("cert.tmp"), cert).unwrap();
        std::fs::rename(d.join("key.tmp"), d.join("key.pem")).unwrap();
        std::fs::rename(d.join("cert.tmp"), d.join("cert.pem")).unwrap();
        der
    }

    /// Config with TLS on; `tls_extra` goes into `gateway.tls`, `top` at the top level.
    fn tls_config(&self, tls_extra: &str, top: &str) -> String {
        let d = self.dir.path();
        format!(
            "{{gateway:{{tls:{{enabled:true, cert:'{}', key:'{}'{tls_extra}}}}}{top}}}",
            d.join("cert.pem").display(),
            d.join("key.pem").display()
        )
    }
}

type TlsWs = WebSocket<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>;

fn client_config(
    roots: &[CertificateDer<'static>],
    tls12_only: bool,
    client_cert: Option<(CertificateDer<'static>, &str)>,
) -> Arc<rustls::ClientConfig> {
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        store.add(r.clone()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = if tls12_only {
        &[&rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13]
    };
    let b = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(store);
    Arc::new(match client_cert {
        Some((cert, key_pem)) => b
            .with_client_auth_cert(
                vec![cert],
                PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => b.with_no_client_auth(),
    })
}

/// TLS handshake, WebSocket upgrade, challenge; returns the socket, the server's leaf, the
/// negotiated version and the challenge nonce/ts.
fn tls_open(
    port: u16,
    cfg: Arc<rustls::ClientConfig>,
) -> Result<
    (
        TlsWs,
        CertificateDer<'static>,
        rustls::ProtocolVersion,
        String,
        i64,
    ),
    String,
> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(FRAME_TIMEOUT)).unwrap();
    let conn = rustls::ClientConnection::new(cfg, ServerName::try_from("localhost").unwrap())
        .map_err(|e| e.to_string())?;
    let mut s = rustls::StreamOwned::new(conn, tcp);
    while s.conn.is_handshaking() {
        s.conn
            .complete_io(&mut s.sock)
            .map_err(|e| format!("TLS handshake: {e}"))?;
    }
    let leaf = s.conn.peer_certificates().unwrap()[0].clone();
    let version = s.conn.protocol_version().unwrap();
    let (mut ws, resp) = tungstenite::client(format!("ws://127.0.0.1:{port}/"), s)
        .map_err(|e| format!("upgrade: {e}"))?;
    assert_eq!(resp.status().as_u16(), 101);
    let ch = tls_recv(&mut ws)?;
    assert_eq!(ch["event"], "connect.challenge", "{ch}");
    let nonce = ch["payload"]["nonce"].as_str().unwrap().to_string();
    let ts = ch["payload"]["ts"].as_i64().unwrap();
    Ok((ws, leaf, version, nonce, ts))
}

fn tls_recv(ws: &mut TlsWs) -> Result<Value, String> {
    let deadline = Instant::now() + FRAME_TIMEOUT;
    loop {
        match ws.read() {
            Ok(Message::Text(t)) => return Ok(serde_json::from_str(t.as_str()).unwrap()),
            Ok(Message::Close(f)) => return Err(format!("closed: {f:?}")),
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
                    && Instant::now() < deadline => {}
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Sends a request and returns its `res`.
fn tls_call(ws: &mut TlsWs, id: &str, method: &str, params: Value) -> Result<Value, String> {
    ws.send(Message::text(
        json!({"type":"req","id":id,"method":method,"params":params}).to_string(),
    ))
    .map_err(|e| e.to_string())?;
    loop {
        let v = tls_recv(ws)?;
        if v["type"] == "res" && v["id"] == id {
            return Ok(v);
        }
    }
}

#[test]
fn tls13_serves_wss_and_tls12_or_plaintext_clients_are_refused() {
    let pki = Pki::new("tls");
    pki.install_server("server-a");
    let gw = Gateway::standard(Some(&pki.tls_config("", "")));
    let (mut ws, _, version, _, _) =
        tls_open(gw.port, client_config(&[pki.ca_der()], false, None)).expect("TLS 1.3 works");
    assert_eq!(version, rustls::ProtocolVersion::TLSv1_3);
    let res = tls_call(&mut ws, "c1", "connect", read_opts().params()).unwrap();
    assert_eq!(res["ok"], true, "{res}");
    let h = tls_call(&mut ws, "h1", "health", json!({})).unwrap();
    assert_eq!(h["ok"], true, "{h}");

    let Err(e) = tls_open(gw.port, client_config(&[pki.ca_der()], true, None)) else {
        panic!("a TLS 1.2-only client is refused");
    };
    assert!(e.contains("TLS handshake"), "{e}");

    let (code, _, body) = http_get(gw.port, "/health");
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("TLS required"), "{body}");
}

fn wait_for_leaf(port: u16, roots: &[CertificateDer<'static>], want: &CertificateDer<'static>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_ws, leaf, ..) = tls_open(port, client_config(roots, false, None)).unwrap();
        if &leaf == want {
            return;
        }
        assert!(Instant::now() < deadline, "new certificate never served");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn cert_rotation_keeps_open_connections_and_serves_the_new_cert() {
    let pki = Pki::new("rot");
    let a = pki.install_server("server-a");
    let gw = Gateway::standard(Some(&pki.tls_config(
        "",
        ", security:{transport:{tls:{certificateRotation:{enabled:true, checkInterval:'200ms'}}}}",
    )));
    let roots = [pki.ca_der()];
    let (mut old, leaf, ..) = tls_open(gw.port, client_config(&roots, false, None)).unwrap();
    assert_eq!(leaf, a);
    let res = tls_call(&mut old, "c1", "connect", read_opts().params()).unwrap();
    assert_eq!(res["ok"], true, "{res}");

    // File change.
    let b = pki.install_server("server-b");
    wait_for_leaf(gw.port, &roots, &b);
    // SIGHUP reloads at once too.
    let c = pki.install_server("server-c");
    // SAFETY: plain kill(2) on our own child.
    assert_eq!(
        unsafe { libc::kill(gw.pid as libc::pid_t, libc::SIGHUP) },
        0
    );
    wait_for_leaf(gw.port, &roots, &c);
    assert!(gw.wait_stderr_contains("TLS certificate reloaded", FRAME_TIMEOUT));

    // The connection opened under the first certificate carries on.
    let h = tls_call(&mut old, "h1", "health", json!({})).unwrap();
    assert_eq!(h["ok"], true, "{h}");
}

#[test]
fn mtls_good_cert_authenticates_and_binds_bad_cert_refused() {
    let pki = Pki::new("mtls");
    pki.install_server("server");
    let extra = format!(", clientCa:'{}'", pki.ca_path().display());
    let cfg = pki.tls_config(
        &extra,
        ", access:{authentication:{methods:['token','certificate']}}",
    );
    let gw = Gateway::standard(Some(&cfg));
    let roots = [pki.ca_der()];
    let (good, _, good_key) = pki.leaf("device-1", true);
    let (other, _, other_key) = pki.leaf("device-2", true);
    let id = DeviceIdentity::generate();
    let no_token = ConnectOpts {
        token: None,
        scopes: scopes(&[READ]),
        ..Default::default()
    };
    let connect = |cfg: Arc<rustls::ClientConfig>| -> Result<Value, String> {
        let (mut ws, _, _, nonce, ts) = tls_open(gw.port, cfg)?;
        let mut p = no_token.params();
        p["device"] = no_token.device_v3(&id, &nonce, ts);
        tls_call(&mut ws, "c1", "connect", p)
    };

    // A client certificate from the CA stands in for the shared token.
    let res = connect(client_config(
        &roots,
        false,
        Some((good.clone(), &good_key)),
    ))
    .unwrap();
    assert_eq!(res["ok"], true, "{res}");
    assert_eq!(res["payload"]["auth"]["method"], "certificate", "{res}");

    // The device is now bound to that certificate: another one (same CA) is refused.
    let res = connect(client_config(&roots, false, Some((other, &other_key)))).unwrap();
    assert_eq!(
        res["error"]["details"]["code"], "DEVICE_CERT_MISMATCH",
        "{res}"
    );

    // Without a certificate: a token is needed again.
    let res = connect(client_config(&roots, false, None)).unwrap();
    assert_eq!(
        res["error"]["details"]["code"], "AUTH_TOKEN_MISSING",
        "{res}"
    );

    // A certificate from another CA fails the TLS handshake.
    let rogue = Pki::new("rogue");
    let (bad, _, bad_key) = rogue.leaf("device-1", true);
    let r = connect(client_config(&roots, false, Some((bad, &bad_key))));
    assert!(r.is_err(), "rogue client certificate accepted: {r:?}");
    assert!(gw.wait_stderr_contains("TLS handshake failed", FRAME_TIMEOUT));
}

// ---------------------------------------------------------------------------------------------
// Audit
// ---------------------------------------------------------------------------------------------

#[test]
fn gateway_audit_lists_weaknesses_with_severities() {
    let Some((gw, _ip)) = lan_gateway(&["--token", TOKEN], &|_| {
        "{gateway:{pairing:{mode:'disabled'}}, security:{transport:{tls:{minVersion:'TLSv1.2'}}}}"
            .into()
    }) else {
        return;
    };
    let mut admin = gw.operator(&[ADMIN]);
    let a = admin.request_ok("gateway.audit", json!({}));
    let ids: Vec<(&str, &str)> = a["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["id"].as_str().unwrap(), f["severity"].as_str().unwrap()))
        .collect();
    for want in [
        ("tls-off-exposed", "high"),
        ("pairing-disabled", "high"),
        ("tls-below-1.3", "low"),
        ("rate-limits-off", "medium"),
        ("allowlist-empty", "low"),
    ] {
        assert!(ids.contains(&want), "{want:?} not in {a}");
    }
    assert_eq!(a["ok"], false, "{a}");
    assert!(!ids.iter().any(|(id, _)| *id == "auth-none-exposed"), "{a}");
    let mut reader = gw.operator(&[READ]);
    let e = reader.request_err("gateway.audit", json!({}));
    assert_eq!(e["message"], "missing scope: operator.admin");
}

#[test]
fn device_secrets_sealed_at_rest_survive_restart() {
    let state = tempfile::tempdir().unwrap();
    let cfg = "{storage:{encryption:'aes-256-gcm'}}";
    let launch = || match Gateway::launch(Launch {
        args: &["--token", TOKEN, "--shards", "2"],
        config: Some(cfg),
        state_dir: Some(state.path()),
        ..Default::default()
    }) {
        Started::Ready(g) => g,
        Started::Exited { stderr, .. } => panic!("not ready: {stderr}"),
    };
    let id = DeviceIdentity::generate();
    let tok = {
        let gw = launch();
        let c = Client::connect_with_device(gw.port, &id, &read_opts());
        let tok = c.hello["auth"]["deviceToken"].as_str().unwrap().to_string();
        let text =
            std::fs::read_to_string(state.path().join("devices").join("paired.json")).unwrap();
        assert!(text.contains(&id.device_id()), "{text}");
        assert!(!text.contains(&tok), "device token in the clear: {text}");
        tok
    };
    let gw = launch();
    let (_c, res) = dev_connect(loopback(), gw.port, &id, &device_token_opts(&tok), None);
    assert_eq!(
        res["ok"], true,
        "sealed token verifies after restart: {res}"
    );
}

// ---------------------------------------------------------------------------------------------
// Hostile frames
// ---------------------------------------------------------------------------------------------

/// JSON nested 100 000 deep (a 200 KB request): answered with an error (as any frame whose
/// id cannot be read: `id` "invalid"), the connection and the gateway go on serving.
#[test]
fn json_nested_100000_deep_is_answered_not_crashed() {
    let gw = Gateway::standard(None);
    let mut c = gw.operator(&[READ]);
    let deep = format!(
        r#"{{"type":"req","id":"deep","method":"health","params":{{"x":{}{}}}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    c.send_text(&deep);
    let res = c.wait_res("invalid");
    assert_eq!(res["ok"], false, "{res}");
    assert_eq!(res["error"]["code"], "INVALID_REQUEST", "{res}");
    assert!(
        res["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("recursion limit")),
        "{res}"
    );
    // The same connection, and a new one, still answer.
    assert_eq!(c.request_ok("health", json!({}))["ok"], true);
    let mut other = gw.operator(&[READ]);
    assert_eq!(other.request_ok("health", json!({}))["ok"], true);
}

/// A message sent as endless empty continuation frames: refused with 1008 once it passes
/// `maxPayload / 64` frames (1 024 here), however few bytes it carries.
#[test]
fn a_flood_of_empty_fragments_is_closed_1008() {
    let gw = Gateway::standard(Some("{gateway: {maxPayload: 65536}}"));
    let mut c = gw.operator(&[READ]);
    let mask = [1, 2, 3, 4];
    let mut flood = Vec::new();
    shardgate::transport::ws::encode_client(&mut flood, false, 1, mask, b"{");
    for _ in 0..5_000 {
        shardgate::transport::ws::encode_client(&mut flood, false, 0, mask, b"");
    }
    // The server may close before reading it all: a write error then is the expected end.
    let _ = c.socket().write_all(&flood);
    let (code, reason) = c.expect_close();
    assert_eq!((code, reason.as_str()), (1008, "too many fragments"));
    let mut other = gw.operator(&[READ]);
    assert_eq!(other.request_ok("health", json!({}))["ok"], true);
}

/// The failed-auth limiter spares only a local program: a loopback peer that came with an
/// (allowed) `Origin` — a browser page — or through a proxy (`X-Forwarded-For`) is locked
/// out after `authFailuresPerMinute` wrong tokens, even with the right one next.
#[test]
fn loopback_browser_or_proxied_peers_are_not_spared_by_the_auth_limiter() {
    let cfg = "{gateway: {authFailuresPerMinute: 3,
                         controlUi: {allowedOrigins: ['http://app.example']}}}";
    let wrong = |headers: &[(&str, &str)], gw: &Gateway, token: &str| {
        let mut c = Client::connect_raw_with_headers(gw.port, headers);
        let res = c.handshake(
            ConnectOpts {
                token: Some(token),
                scopes: scopes(&[READ]),
                ..Default::default()
            }
            .params(),
        );
        res["error"]["details"]["code"].clone()
    };
    for headers in [
        &[("Origin", "http://app.example")][..],
        &[("X-Forwarded-For", "203.0.113.9")][..],
    ] {
        let gw = Gateway::standard(Some(cfg));
        for _ in 0..3 {
            assert_eq!(
                wrong(headers, &gw, "wrong"),
                "AUTH_TOKEN_MISMATCH",
                "{headers:?}"
            );
        }
        assert_eq!(
            wrong(headers, &gw, TOKEN),
            "AUTH_RATE_LIMITED",
            "{headers:?}: locked out"
        );
    }
    // A plain loopback client (the CLI) is spared.
    let gw = Gateway::standard(Some(cfg));
    for _ in 0..5 {
        assert_eq!(wrong(&[], &gw, "wrong"), "AUTH_TOKEN_MISMATCH");
    }
    gw.operator(&[READ]).request_ok("status", json!({}));
}

/// The shared token, a wrong guess and a query-string token never show in the gateway's logs
/// (at debug level, stderr and the log files), in `/metrics`, or in any answer.
#[test]
fn secrets_never_appear_in_logs_metrics_or_answers() {
    const SECRET: &str = "sg-secret-7f3a9c51";
    const GUESS: &str = "sg-guess-b41e2d07";
    let gw = match Gateway::launch(Launch {
        args: &["--token", SECRET, "--shards", "2"],
        env: &[("SHARDGATE_LOG", "debug")],
        ..Default::default()
    }) {
        Started::Ready(g) => g,
        Started::Exited { stderr, .. } => panic!("gateway did not start: {stderr}"),
    };
    let mut seen = String::new();
    let mut c = Client::connect_operator(gw.port, Some(SECRET), &[ADMIN]);
    for method in ["health", "status", "config.get", "gateway.audit"] {
        seen.push_str(&c.request(method, json!({})).to_string());
    }
    let mut bad = Client::connect_raw(gw.port);
    let res = bad.handshake(
        ConnectOpts {
            token: Some(GUESS),
            scopes: scopes(&[READ]),
            ..Default::default()
        }
        .params(),
    );
    assert_eq!(
        res["error"]["details"]["code"], "AUTH_TOKEN_MISMATCH",
        "{res}"
    );
    seen.push_str(&res.to_string());
    // Tokens in a query string (what a careless client or a join URL sends).
    seen.push_str(&http_raw(
        gw.port,
        &format!("GET /?token={SECRET} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"),
    ));
    seen.push_str(&http_raw(
        gw.port,
        &format!("GET /j/{GUESS}?token={GUESS} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"),
    ));
    let (_, _, metrics) = http_get(gw.port, "/metrics");
    seen.push_str(&metrics);
    drop(c);
    drop(bad);
    // The log files, once the appender wrote the session's lines (the last connection's
    // hello-ok is among them).
    let log_files = || {
        let mut all = String::new();
        for e in std::fs::read_dir(gw.state_dir.join("logs"))
            .into_iter()
            .flatten()
            .flatten()
        {
            all.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
        }
        all
    };
    let deadline = Instant::now() + FRAME_TIMEOUT;
    while log_files().matches("hello-ok").count() < 1 {
        assert!(Instant::now() < deadline, "no hello-ok in the log files");
        std::thread::sleep(Duration::from_millis(20));
    }
    seen.push_str(&gw.stderr());
    seen.push_str(&log_files());
    assert!(seen.len() > 1000, "too little to search: {seen}");
    for secret in [SECRET, GUESS] {
        assert!(
            !seen.contains(secret),
            "{secret} leaked: …{}…",
            &seen[seen.find(secret).unwrap().saturating_sub(200)..][..400.min(seen.len())]
        );
    }
}
