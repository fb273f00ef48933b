//! The seed corpus, made from real inputs: the frames, heads, params, configs and journal
//! segments the gateway sees. `cargo run -p shardgate-fuzz --example
//! write_seeds` writes them to `fuzz/corpus/<target>/seed-*` (committed); inputs kept
//! as regressions (`regress-*`) and those libFuzzer adds sit beside them.

use serde_json::json;
use shardgate::auth::device::DeviceIdentity;
use shardgate::delivery::record::Record;
use shardgate::queue::journal::encode;
use shardgate::transport::deflate;
use shardgate::transport::ws::{encode_client, encode_client_rsv1};

use crate::connect::{NONCE, NOW, TOKEN};

/// A named input.
pub type Seed = (String, Vec<u8>);

const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

fn frame(fin: bool, op: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    encode_client(&mut v, fin, op, MASK, payload);
    v
}

fn zframe(fin: bool, first: bool, op: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    encode_client_rsv1(&mut v, fin, first, op, MASK, payload);
    v
}

fn with(opts: &[u8], data: &[u8]) -> Vec<u8> {
    let mut v = opts.to_vec();
    v.extend_from_slice(data);
    v
}

fn named(list: Vec<(&str, Vec<u8>)>) -> Vec<Seed> {
    list.into_iter()
        .map(|(n, b)| (format!("seed-{n}"), b))
        .collect()
}

const CONNECT_REQ: &str = r#"{"type":"req","id":"c0","method":"connect","params":{"minProtocol":4,"maxProtocol":4,"client":{"id":"cli","version":"2026.9.6","platform":"linux","mode":"cli"},"role":"operator","scopes":["operator.read"],"auth":{"token":"T"}}}"#;
const AGENT_REQ: &str = r#"{"type":"req","id":"r1","method":"agent","params":{"message":"hello","sessionKey":"main","idempotencyKey":"k-1"}}"#;
const CHAT_REQ: &str = r#"{"type":"req","id":"r2","method":"chat.send","params":{"sessionKey":"agent:main:telegram:dm:42","message":"hi \u00e9","idempotencyKey":"k-2","sessionSeq":3}}"#;
const HEALTH_REQ: &str = r#"{"type":"req","id":"h","method":"health"}"#;

/// The seeds of `target`.
pub fn seeds(target: &str) -> Vec<Seed> {
    match target {
        "ws_frames" => ws_frames(),
        "inflate" => inflate(),
        "http_head" => http_head(),
        "frame" => frame_seeds(),
        "connect" => connect(),
        "config" => config(),
        "session_key" => session_key(),
        "journal" => journal(),
        _ => Vec::new(),
    }
}

fn ws_frames() -> Vec<Seed> {
    let conn = frame(true, 1, CONNECT_REQ.as_bytes());
    let mut mixed = frame(false, 1, &AGENT_REQ.as_bytes()[..20]);
    mixed.extend(frame(true, 9, b"hb"));
    mixed.extend(frame(true, 0, &AGENT_REQ.as_bytes()[20..]));
    mixed.extend(frame(true, 2, &[0, 1, 2, 255]));
    mixed.extend(frame(true, 10, b""));
    mixed.extend(frame(true, 8, &[0x03, 0xe8, b'b', b'y', b'e']));
    let big = frame(true, 1, "é".repeat(40_000).as_bytes());
    let z = deflate::with_deflated(15, &[CHAT_REQ.as_bytes()], |z| z.to_vec());
    let mut zmsg = zframe(false, true, 1, &z[..z.len() / 2]);
    zmsg.extend(frame(true, 9, b"p"));
    zmsg.extend(zframe(true, false, 0, &z[z.len() / 2..]));
    zmsg.extend(frame(true, 1, HEALTH_REQ.as_bytes()));
    let bomb = deflate::with_deflated(15, &[&vec![0u8; 1 << 20]], |z| z.to_vec());
    named(vec![
        ("connect", with(&[4, 1], &conn)),
        ("fragmented-ping-close", with(&[6, 2], &mixed)),
        ("fragmented-stop", with(&[12, 5], &mixed)),
        ("over-limit", with(&[2, 3], &big)),
        ("large", with(&[6, 4], &big)),
        ("deflate", with(&[5, 6], &zmsg)),
        ("deflate-bomb", with(&[5, 7], &zframe(true, true, 2, &bomb))),
        ("rsv1-without-deflate", with(&[4, 8], &zmsg)),
    ])
}

fn inflate() -> Vec<Seed> {
    let bomb: Vec<u8> = deflate::with_deflated(15, &[&vec![0u8; 1 << 20]], |z| z.to_vec());
    let z = deflate::with_deflated(12, &[CHAT_REQ.as_bytes()], |z| z.to_vec());
    named(vec![
        ("message", with(&[5, 6, 128], CHAT_REQ.as_bytes())),
        ("compressed-as-input", with(&[4, 3, 40], &z)),
        ("bomb", with(&[3, 6, 200], &bomb)),
        ("empty", vec![2, 0, 0]),
    ])
}

fn http_head() -> Vec<Seed> {
    // What the openclaw CLI sends (Node's `ws`), what a browser sends, a health check, and
    // a long header (the shape that was quadratic when sent one byte per read).
    let cli = "GET / HTTP/1.1\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\nHost: 127.0.0.1:18789\r\n\r\n";
    let browser = "GET /?token=x HTTP/1.1\r\nHost: localhost:18789\r\nOrigin: http://localhost:5173\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: x3JJHMbDL1EzLkh9GBhXDw==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=10, permessage-deflate\r\n\r\n";
    let mut with_frame = cli.as_bytes().to_vec();
    with_frame.extend(frame(true, 1, HEALTH_REQ.as_bytes()));
    let long = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Long: {}\r\n\r\n",
        "a".repeat(15_000)
    );
    named(vec![
        ("openclaw-cli", with(&[1], cli.as_bytes())),
        ("browser", with(&[2], browser.as_bytes())),
        ("upgrade-and-frame", with(&[3], &with_frame)),
        (
            "health",
            with(&[4], b"\r\nGET /health HTTP/1.1\nHost: x\n\n"),
        ),
        ("long-header", with(&[5], long.as_bytes())),
    ])
}

fn frame_seeds() -> Vec<Seed> {
    named(vec![
        ("connect", CONNECT_REQ.into()),
        ("agent", AGENT_REQ.into()),
        ("chat-send", CHAT_REQ.into()),
        ("health", HEALTH_REQ.into()),
        (
            "params-first",
            br#"{"params":{"message":"m","sessionKey":"k"},"id":"x","type":"req","method":"send"}"#
                .to_vec(),
        ),
        (
            "seed-connect",
            br#"{"type":"connect","params":{"auth":{"token":"T"}}}"#.to_vec(),
        ),
        (
            "escaped",
            br#"{"type":"r\u0065q","id":"\u00e9","method":"status","params":{}}"#.to_vec(),
        ),
        ("not-object", b"[1,2]".to_vec()),
    ])
}

fn connect() -> Vec<Seed> {
    let id = DeviceIdentity::from_secret([42; 32]);
    let mut out = Vec::new();
    for (name, terms, scopes) in [
        ("device-local", 0u8, vec!["operator.read"]),
        (
            "device-lan-lenient",
            4,
            vec!["operator.read", "operator.write"],
        ),
        ("device-wan", 2, vec!["operator.admin"]),
    ] {
        let s: Vec<String> = scopes.iter().map(|x| x.to_string()).collect();
        let p = json!({
            "minProtocol": 3, "maxProtocol": 4,
            "client": {"id": "cli", "version": "2026.9.6", "platform": "linux", "mode": "cli",
                       "deviceFamily": "Linux"},
            "role": "operator", "scopes": s, "auth": {"token": TOKEN, "totp": "123456"},
            "device": id.sign_connect(NONCE, NOW, "cli", "cli", "operator", &s, TOKEN,
                                      Some("linux"), Some("Linux")),
        });
        out.push((name, with(&[terms], p.to_string().as_bytes())));
    }
    let token_only = json!({"minProtocol": 4, "maxProtocol": 4,
        "client": {"id": "gateway-client", "version": "1", "platform": "linux", "mode": "probe"},
        "auth": {"token": TOKEN}});
    out.push(("token-only", with(&[1], token_only.to_string().as_bytes())));
    let node = json!({"minProtocol": 3, "maxProtocol": 9, "role": "node",
        "client": {"id": "node-host", "version": "1", "platform": "darwin", "mode": "node"},
        "caps": ["canvas"], "commands": ["system.run"], "auth": {"password": "p"}});
    out.push(("node", with(&[7], node.to_string().as_bytes())));
    named(out)
}

fn config() -> Vec<Seed> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let mut out = vec![(
        "small".to_string(),
        br#"{ // comment
  gateway: { port: 18789, auth: { mode: 'token', token: 'T' } },
  shards: 2, queue: { backend: "memory" }, }"#
            .to_vec(),
    )];
    for f in [
        "src/config/template.json5",
        "perf/configs/spin-0.json5",
        "perf/configs/dedup-256.json5",
    ] {
        let name = f.rsplit('/').next().unwrap_or(f).trim_end_matches(".json5");
        let bytes = std::fs::read(format!("{root}/{f}")).unwrap_or_default();
        out.push((name.to_string(), bytes));
    }
    out.into_iter()
        .map(|(n, b)| (format!("seed-{n}"), b))
        .collect()
}

fn session_key() -> Vec<Seed> {
    named(vec![
        ("main", b"\x00main".to_vec()),
        ("scoped", b"\x01Agent:Ops:Telegram:Group:42".to_vec()),
        (
            "legacy-dm",
            b"\x00agent:main:whatsapp:dm:+1234567890".to_vec(),
        ),
        ("unicode", "\x02caf\u{c9}:\u{c9}t\u{e9}".as_bytes().to_vec()),
        ("agent-only", b"\x00agent:ops".to_vec()),
    ])
}

fn journal() -> Vec<Seed> {
    use aes_gcm::{Aes256Gcm, KeyInit};
    let recs = [
        Record::Acc {
            id: "run-1".into(),
            k: "k-1".into(),
            s: "agent:main:main".into(),
            m: "hello".into(),
            method: "agent".into(),
            ch: None,
            to: None,
            at: NOW,
        },
        Record::Done {
            id: "run-1".into(),
            k: "k-1".into(),
            p: Some(json!({"text": "hello"})),
            e: None,
            at: NOW + 5,
        },
        Record::Dead {
            id: "run-2".into(),
            dl: "dl-1".into(),
            attempts: 3,
            errors: vec![json!({"code": "UNAVAILABLE"})],
            at: NOW + 9,
        },
        Record::Redrive {
            id: "run-2".into(),
            at: NOW + 10,
        },
        Record::Purge { id: "run-3".into() },
    ];
    let key = Aes256Gcm::new_from_slice(&crate::journal::KEY).expect("32 bytes");
    let mut plain = Vec::new();
    let mut sealed = Vec::new();
    for r in &recs {
        plain.extend(encode(r, None));
        sealed.extend(encode(r, Some(&key)));
    }
    let mut padded = plain.clone();
    padded.resize(4096, 0);
    let torn = plain[..plain.len() - 7].to_vec();
    named(vec![
        ("plain", with(&[0, 128], &plain)),
        ("sealed", with(&[1, 200], &sealed)),
        ("dma-padded", with(&[0, 100], &padded)),
        ("torn-tail", with(&[0, 255], &torn)),
    ])
}
