//! Bounded, seeded fuzzing of the parsers an attacker feeds first: WebSocket frames (the
//! gateway's own reader, `transport::ws`), `connect.params` (through the whole sans-IO
//! admission, with pairing terms from every network class) and the pairing store loader. Deterministic (fixed seeds), so a failure replays; each run prints its
//! execution counts (`cargo test --test fuzz -- --nocapture`). `FUZZ_ITERS=N` sets the rounds
//! (default 2000: a debug admission with a device costs an Ed25519 verify and a store fsync).
//!
//! permessage-deflate frames too (compressed at random levels, fragmented anywhere, some
//! inflating past the limit).
//!
//! Properties: never a panic; frames split anywhere come out whole and in order, and garbage
//! ends in an error, not a hang; an admission only for a verified device or a device-less
//! operator; a store that loads keeps its invariant (every id is the hash of its key).

use std::net::IpAddr;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use shardgate::auth::device::{self, DeviceIdentity};
use shardgate::auth::handshake::{self, HandshakeEnv};
use shardgate::auth::net::NetClass;
use shardgate::auth::pairing::{Pairing, PeerTerms};
use shardgate::auth::store::{ApproveRequest, PairingStore};
use shardgate::config::{Config, PairingMode};

const NONCE: &str = "9c1e3c9e-2b39-4a7e-9f0c-2f7c7c0a1b11";
const NOW: i64 = 1_700_000_000_000;

fn iters() -> u32 {
    std::env::var("FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000)
}

fn valid_params(id: &DeviceIdentity, scopes: &[&str]) -> Value {
    let s: Vec<String> = scopes.iter().map(|x| x.to_string()).collect();
    json!({
        "minProtocol": 4, "maxProtocol": 4,
        "client": {"id": "cli", "version": "1", "platform": "linux", "mode": "cli", "deviceFamily": "Linux"},
        "role": "operator", "scopes": s, "auth": {"token": "T", "totp": "123456"},
        "device": id.sign_connect(NONCE, NOW, "cli", "cli", "operator", &s, "T", Some("linux"), Some("Linux")),
    })
}

/// A random JSON value, small.
fn random_value(r: &mut StdRng, depth: u32) -> Value {
    match r.gen_range(0..if depth > 2 { 6 } else { 8 }) {
        0 => Value::Null,
        1 => json!(r.gen::<bool>()),
        2 => json!(r.gen::<i64>()),
        3 => json!(r.gen::<f64>()),
        4 => json!(""),
        5 => {
            let n = r.gen_range(0..40);
            json!((0..n)
                .map(|_| r.gen_range(1u8..=127) as char)
                .collect::<String>())
        }
        6 => Value::Array(
            (0..r.gen_range(0..4))
                .map(|_| random_value(r, depth + 1))
                .collect(),
        ),
        _ => {
            let mut m = serde_json::Map::new();
            for _ in 0..r.gen_range(0..4) {
                m.insert(
                    format!("k{}", r.gen_range(0..5)),
                    random_value(r, depth + 1),
                );
            }
            Value::Object(m)
        }
    }
}

/// Replaces, removes or retypes one field somewhere in `v`.
fn mutate(r: &mut StdRng, v: &mut Value) {
    match v {
        Value::Object(m) if !m.is_empty() && r.gen_bool(0.7) => {
            let keys: Vec<String> = m.keys().cloned().collect();
            let k = &keys[r.gen_range(0..keys.len())];
            match r.gen_range(0..4) {
                0 => {
                    m.remove(k);
                }
                1 => {
                    m.insert(k.clone(), random_value(r, 0));
                }
                _ => mutate(r, m.get_mut(k).unwrap()),
            }
        }
        Value::Array(a) if !a.is_empty() && r.gen_bool(0.7) => {
            let i = r.gen_range(0..a.len());
            mutate(r, &mut a[i]);
        }
        Value::String(s) if r.gen_bool(0.5) => {
            // Flip, cut or extend the string (signatures, keys, ids).
            let mut b = s.clone().into_bytes();
            match r.gen_range(0..3) {
                0 if !b.is_empty() => {
                    let i = r.gen_range(0..b.len());
                    b[i] = r.gen_range(b'0'..=b'z');
                }
                1 => b.truncate(r.gen_range(0..=b.len())),
                _ => b.extend((0..r.gen_range(1..8)).map(|_| r.gen_range(b'a'..=b'z'))),
            }
            *s = String::from_utf8_lossy(&b).into_owned();
        }
        other => *other = random_value(r, 0),
    }
}

#[test]
fn connect_params_never_panic_and_admit_only_verified() {
    let dir = tempfile::tempdir().unwrap();
    let store = PairingStore::open(dir.path()).unwrap();
    let mut cfg = Config::default();
    cfg.gateway.auth.token = Some("T".into());
    cfg.access.authentication.mfa.enabled = true;
    let pairing = Pairing::new(&cfg);
    let mut r = StdRng::seed_from_u64(0x5eed_c0de);
    let ids: Vec<DeviceIdentity> = (0..4).map(|_| DeviceIdentity::generate()).collect();
    let (mut execs, mut admitted, mut with_device) = (0u64, 0u64, 0u64);
    for i in 0..iters() {
        let id = &ids[i as usize % ids.len()];
        let mut p = valid_params(id, &["operator.read"]);
        for _ in 0..r.gen_range(0..4) {
            mutate(&mut r, &mut p);
        }
        // Byte-level damage to the serialized form, half of the time.
        if r.gen_bool(0.5) {
            let mut text = p.to_string().into_bytes();
            for _ in 0..r.gen_range(1..4) {
                let i = r.gen_range(0..text.len());
                text[i] = r.gen();
            }
            match serde_json::from_slice::<Value>(&text) {
                Ok(v) => p = v,
                Err(_) => continue,
            }
        }
        let (net, policy) = match i % 3 {
            0 => (NetClass::Localhost, &cfg.gateway.pairing.policies.localhost),
            1 => (NetClass::Lan, &cfg.gateway.pairing.policies.lan),
            _ => (NetClass::Wan, &cfg.gateway.pairing.policies.wan),
        };
        let env = HandshakeEnv {
            auth: &cfg.gateway.auth,
            nonce: NONCE,
            now_ms: NOW,
            direct_loopback: net == NetClass::Localhost,
            store: &store,
            terms: PeerTerms {
                mode: [
                    PairingMode::Strict,
                    PairingMode::Lenient,
                    PairingMode::Disabled,
                ][(i / 3 % 3) as usize],
                net,
                policy,
                mfa: &cfg.access.authentication.mfa,
                pairing: &pairing,
                peer_ip: IpAddr::from([10, 0, 0, 1]),
                client_cert: None,
                cert_auth: false,
            },
            bootstrap: None,
        };
        execs += 1;
        if let Ok((adm, _, _)) = handshake::admit(&p, &env) {
            admitted += 1;
            match &adm.device_id {
                Some(d) => {
                    with_device += 1;
                    let key = device::parse_public_key(p["device"]["publicKey"].as_str().unwrap())
                        .expect("admitted device has a valid key");
                    assert_eq!(&device::device_id_for(&key), d);
                }
                None => assert!(adm.scopes.is_empty(), "device-less operator gets no scopes"),
            }
        }
    }
    eprintln!(
        "fuzz connect: {execs} executions, {admitted} admitted ({with_device} with a device)"
    );
    assert!(execs > u64::from(iters()) / 3 && with_device > 0);
}

#[test]
fn store_loader_never_panics_and_keeps_its_invariant() {
    let dir = tempfile::tempdir().unwrap();
    let seed_store = PairingStore::open(dir.path()).unwrap();
    for _ in 0..3 {
        let id = DeviceIdentity::generate();
        let (_, durable) = seed_store
            .approve(
                ApproveRequest {
                    device_id: id.device_id(),
                    public_key: id.public_key_b64url(),
                    role: "operator".into(),
                    scopes: vec!["operator.read".into()],
                    ..Default::default()
                },
                NOW,
            )
            .unwrap();
        futures_lite::future::block_on(durable.wait()).unwrap();
    }
    let good: Value = serde_json::from_slice(&std::fs::read(seed_store.path()).unwrap()).unwrap();
    let file = seed_store.path().to_owned();
    let mut r = StdRng::seed_from_u64(0x57_0e);
    let (mut execs, mut loaded) = (0u64, 0u64);
    for _ in 0..iters() {
        let mut v = good.clone();
        for _ in 0..r.gen_range(0..3) {
            mutate(&mut r, &mut v);
        }
        let mut bytes = serde_json::to_vec(&v).unwrap();
        if r.gen_bool(0.3) {
            let i = r.gen_range(0..bytes.len());
            bytes[i] = r.gen();
        }
        std::fs::write(&file, &bytes).unwrap();
        execs += 1;
        if let Ok(s) = PairingStore::open(dir.path()) {
            loaded += 1;
            for d in s.list() {
                let key = device::parse_public_key(&d.public_key).expect("stored key parses");
                assert_eq!(device::device_id_for(&key), d.device_id);
            }
        }
    }
    eprintln!("fuzz store loader: {execs} executions, {loaded} loaded");
    assert!(loaded > 0 && loaded < execs);
}

/// A byte stream handed out in random pieces (1 byte up to 64 KiB), then EOF.
struct Pieces {
    data: Vec<u8>,
    pos: usize,
    rng: StdRng,
}

impl futures_lite::AsyncRead for Pieces {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let left = self.data.len() - self.pos;
        let want = match self.rng.gen_range(0..4) {
            0 => 1,
            1 => self.rng.gen_range(1..16),
            2 => self.rng.gen_range(1..2048),
            _ => 1 << 16,
        };
        let n = want.min(left).min(buf.len());
        let p = self.pos;
        buf[..n].copy_from_slice(&self.data[p..p + n]);
        self.pos += n;
        std::task::Poll::Ready(Ok(n))
    }
}

/// A masked client frame (random mask).
fn client_frame(rng: &mut StdRng, fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    shardgate::transport::ws::encode_client(&mut out, fin, opcode, rng.gen(), payload);
    out
}

/// Reads `data` to its end with the gateway's reader; what came out, and how it ended.
fn read_stream(data: Vec<u8>, seed: u64, max: usize) -> (Vec<String>, String) {
    read_stream_z(data, seed, max, false)
}

/// [`read_stream`] with permessage-deflate negotiated or not.
fn read_stream_z(data: Vec<u8>, seed: u64, max: usize, deflate: bool) -> (Vec<String>, String) {
    use shardgate::transport::ws::{Msg, WsError, WsReader};
    let io = std::cell::RefCell::new(Pieces {
        data,
        pos: 0,
        rng: StdRng::seed_from_u64(seed),
    });
    let mut reader = WsReader::new(max, max).with_deflate(deflate);
    let mut seen = Vec::new();
    let end = futures_lite::future::block_on(async {
        loop {
            let r = reader
                .read(&io, &mut |m| {
                    seen.push(match m {
                        Msg::Text(t) => format!("t:{t}"),
                        Msg::Binary(b) => format!("b:{}", b.len()),
                        Msg::Ping(p) => format!("ping:{}", p.len()),
                        Msg::Pong => "pong".into(),
                        Msg::Close(c) => format!("close:{c:?}"),
                    });
                    true
                })
                .await;
            match r {
                Ok(_) => {}
                Err(WsError::Eof) => return "eof".to_string(),
                Err(e) => return format!("error {:?}", e.close().map(|c| c.0)),
            }
        }
    });
    (seen, end)
}

#[test]
fn websocket_frames_split_anywhere_come_out_whole_and_garbage_never_panics() {
    let mut rng = StdRng::seed_from_u64(6455);
    let rounds = iters();
    for round in 0..rounds {
        // Valid traffic: whole and fragmented messages of all sizes, pings between fragments.
        let mut data = Vec::new();
        let mut want = Vec::new();
        for _ in 0..rng.gen_range(1..8) {
            let len = match rng.gen_range(0..5) {
                0 => 0,
                1 => rng.gen_range(1..126),
                2 => rng.gen_range(126..70_000),
                3 => rng.gen_range(65_536..200_000),
                _ => rng.gen_range(1..1000),
            };
            let text: String = (0..len)
                .map(|i| ['a', 'é', '中', '🎉', '"', '\\'][(i * 7 + round as usize) % 6])
                .take(len)
                .collect();
            let bytes = text.as_bytes();
            if rng.gen_bool(0.3) && bytes.len() > 4 {
                // Fragmented, cut inside multi-byte characters too.
                let cut = rng.gen_range(1..bytes.len());
                data.extend(client_frame(&mut rng, false, 1, &bytes[..cut]));
                data.extend(client_frame(&mut rng, true, 9, b"hb"));
                want.push("ping:2".to_string());
                data.extend(client_frame(&mut rng, true, 0, &bytes[cut..]));
            } else {
                data.extend(client_frame(&mut rng, true, 1, bytes));
            }
            want.push(format!("t:{text}"));
        }
        let (seen, end) = read_stream(data.clone(), round as u64, 1 << 20);
        assert_eq!(end, "eof", "round {round}");
        assert_eq!(seen, want, "round {round}");

        // Garbage: the same stream with random bytes flipped, or plain noise. Any outcome
        // but a panic or a hang is fine; the reader ends (EOF or an error) every time.
        let mut bad = if rng.gen_bool(0.5) {
            data
        } else {
            (0..rng.gen_range(1..5000)).map(|_| rng.gen()).collect()
        };
        for _ in 0..rng.gen_range(1..8) {
            if !bad.is_empty() {
                let i = rng.gen_range(0..bad.len());
                bad[i] ^= rng.gen::<u8>() | 1;
            }
        }
        let (_, end) = read_stream(bad, round as u64 + 1, 1 << 18);
        assert!(
            end == "eof" || end.starts_with("error"),
            "round {round}: {end}"
        );
    }
    println!("websocket frames: {rounds} rounds of valid and corrupted streams");
}

/// A compressed client frame: RSV1 when `first`, `payload` already deflated.
fn client_frame_z(rng: &mut StdRng, fin: bool, first: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    shardgate::transport::ws::encode_client_rsv1(&mut out, fin, first, opcode, rng.gen(), payload);
    out
}

/// What a browser sends: raw deflate at a random level, sync flush, tail cut.
fn deflate(rng: &mut StdRng, msg: &[u8]) -> Vec<u8> {
    let level = flate2::Compression::new(rng.gen_range(0..10));
    let mut c = flate2::Compress::new(level, false);
    let mut out = Vec::with_capacity(msg.len() + msg.len() / 100 + 64);
    c.compress_vec(msg, &mut out, flate2::FlushCompress::Sync)
        .unwrap();
    out.truncate(out.len() - 4);
    out
}

#[test]
fn compressed_messages_split_anywhere_inflate_whole_and_garbage_never_panics() {
    let mut rng = StdRng::seed_from_u64(7692);
    let rounds = iters() / 4;
    let limit = 1 << 18;
    for round in 0..rounds {
        // Valid traffic: compressed and plain messages, compressed ones fragmented anywhere
        // (RSV1 on the first frame only), pings between fragments; some inflate past the limit.
        let mut data = Vec::new();
        let mut want = Vec::new();
        let mut too_big = false;
        for _ in 0..rng.gen_range(1..6) {
            let len = match rng.gen_range(0..4) {
                0 => 0,
                1 => rng.gen_range(1..300),
                2 => rng.gen_range(300..70_000),
                _ => rng.gen_range(limit - 16..limit + 16),
            };
            let text: String = (0..len)
                .map(|i| ['a', 'é', '{', '🎉', '"', 'x'][(i * 13 / 7 + round as usize) % 6])
                .take(len)
                .collect();
            let bytes = text.as_bytes();
            if rng.gen_bool(0.2) {
                data.extend(client_frame(&mut rng, true, 1, bytes));
            } else {
                let z = deflate(&mut rng, bytes);
                let mut at = 0;
                let cuts = rng.gen_range(0..4);
                for k in 0..=cuts {
                    let end = if k == cuts {
                        z.len()
                    } else {
                        rng.gen_range(at..=z.len())
                    };
                    let op = if k == 0 { 1 } else { 0 };
                    data.extend(client_frame_z(&mut rng, k == cuts, k == 0, op, &z[at..end]));
                    if k < cuts && rng.gen_bool(0.3) {
                        data.extend(client_frame(&mut rng, true, 9, b"hb"));
                        want.push("ping:2".to_string());
                    }
                    at = end;
                }
            }
            if bytes.len() > limit {
                too_big = true;
                break;
            }
            want.push(format!("t:{text}"));
        }
        let (seen, end) = read_stream_z(data.clone(), round as u64, limit, true);
        if too_big {
            // Refused at the frame that passed the limit (compressed or inflated size): the
            // pings among its fragments after that frame are never read.
            assert_eq!(end, "error Some(1009)", "round {round}");
            assert!(want.starts_with(&seen), "round {round}: {seen:?}");
            assert!(seen.len() >= want.iter().filter(|w| w.starts_with("t:")).count());
        } else {
            assert_eq!(end, "eof", "round {round}");
            assert_eq!(seen, want, "round {round}");
        }

        // Garbage: bytes flipped anywhere, compressed data included. Never a panic or a hang.
        let mut bad = data;
        for _ in 0..rng.gen_range(1..8) {
            if !bad.is_empty() {
                let i = rng.gen_range(0..bad.len());
                bad[i] ^= rng.gen::<u8>() | 1;
            }
        }
        let (_, end) = read_stream_z(bad, round as u64 + 1, limit, true);
        assert!(
            end == "eof" || end.starts_with("error"),
            "round {round}: {end}"
        );
    }
    println!("compressed websocket frames: {rounds} rounds of valid and corrupted streams");
}
