//! The paired-device store under a burst of pairings (issue 21): new loopback devices pair at
//! once on 2 shards, each handshake hands out its device token only once it is on disk, the
//! store writer coalesces the writes, and no handshake waits behind other handshakes' writes.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use shardgate::auth::device::DeviceIdentity;

use crate::support::{
    http_get, http_raw, scopes, Client, ConnectOpts, Gateway, Launch, Started, READ, TOKEN,
};

/// Devices pairing at once.
const DEVICES: usize = 500;

/// Enough unauthenticated sockets per IP for all of them at once, and time for the slowest
/// handshake on a loaded machine (the test waits on frames and conditions, not on this).
/// The test hooks hold the store writer, as a stalled disk would.
const CONFIG: &str = "{gateway: {maxUnauthenticatedPerIp: 1000, handshakeTimeoutMs: 120000, \
                      dangerouslyEnableTestHooks: true}}";

fn start(state: &std::path::Path) -> Gateway {
    match Gateway::launch(Launch {
        args: &["--token", TOKEN, "--shards", "2"],
        config: Some(CONFIG),
        state_dir: Some(state),
        ..Default::default()
    }) {
        Started::Ready(g) => g,
        Started::Exited { status, stderr } => panic!("gateway exited ({status}):\n{stderr}"),
    }
}

/// The value of an unlabelled sample in Prometheus text.
fn metric(body: &str, name: &str) -> u64 {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in:\n{body}"))
}

/// Opens one socket per device and reads its challenge, then sends every `connect` (signed
/// beforehand) in one tight loop, so the handshakes reach the shards together.
fn send_all<'a>(
    gw: &Gateway,
    ids: &[DeviceIdentity],
    opts: impl Fn(usize) -> ConnectOpts<'a>,
) -> Vec<Client> {
    let mut clients: Vec<Client> = ids.iter().map(|_| gw.raw()).collect();
    let frames: Vec<String> = clients
        .iter()
        .zip(ids)
        .enumerate()
        .map(|(i, (c, id))| {
            let o = opts(i);
            let mut p = o.params();
            p["device"] = o.device_v3(id, &c.nonce, c.challenge_ts);
            json!({"type": "req", "id": "c1", "method": "connect", "params": p}).to_string()
        })
        .collect();
    for (c, f) in clients.iter_mut().zip(&frames) {
        // A loaded 2-core machine answers 500 handshakes slowly; each wait is still for a frame.
        c.timeout = Duration::from_secs(120);
        c.send_text(f);
    }
    clients
}

/// Each client's `connect` answer.
fn answers(clients: Vec<Client>) -> Vec<(Client, Value)> {
    clients
        .into_iter()
        .map(|mut c| {
            let res = c.wait_res("c1");
            (c, res)
        })
        .collect()
}

/// Posts a test hook.
fn hook(gw: &Gateway, path: &str) {
    let text = http_raw(
        gw.port,
        &format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ),
    );
    assert!(text.starts_with("HTTP/1.1 200"), "{path}: {text}");
}

/// Waits until `name` reads `want` in /metrics.
fn wait_metric(gw: &Gateway, name: &str, want: u64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, _, body) = http_get(gw.port, "/metrics");
        let v = metric(&body, name);
        if v == want {
            return;
        }
        assert!(Instant::now() < deadline, "{name} is {v}, not {want}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn five_hundred_devices_pair_at_once_with_coalesced_writes_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let ids: Vec<DeviceIdentity> = (0..DEVICES).map(|_| DeviceIdentity::generate()).collect();
    let read = || ConnectOpts {
        scopes: scopes(&[READ]),
        ..Default::default()
    };

    let mut gw = start(&state);
    // A device paired before the disk stalls.
    let early = DeviceIdentity::generate();
    let early_token = Client::connect_with_device(gw.port, &early, &read()).hello["auth"]
        ["deviceToken"]
        .as_str()
        .unwrap()
        .to_owned();

    // The disk stalls in the middle of a write; 500 new devices connect at once. Each
    // handshake makes its change and waits for the write that carries it.
    hook(&gw, "/dangerously/store/hold");
    let clients = send_all(&gw, &ids, |_| read());
    wait_metric(&gw, "shardgate_store_waiting", DEVICES as u64);
    // Meanwhile handshakes that need no write are not held up by it (no lock is held across
    // the I/O): an operator without a device, and the early device with its token.
    let mut op = gw.operator(&[READ]);
    op.request_ok("status", json!({}));
    let again = Client::connect_with_device(
        gw.port,
        &early,
        &ConnectOpts {
            token: None,
            device_token: Some(&early_token),
            ..read()
        },
    );
    assert_eq!(again.hello["auth"]["deviceToken"], early_token.as_str());
    let (_, _, body) = http_get(gw.port, "/metrics");
    assert_eq!(metric(&body, "shardgate_store_waiting"), DEVICES as u64);
    hook(&gw, "/dangerously/store/release");

    let answered = answers(clients);
    let mut tokens: Vec<String> = Vec::new();
    let mut per_shard = [0usize; 2];
    for (i, (_, res)) in answered.iter().enumerate() {
        assert_eq!(res["ok"], true, "device {i} refused: {res}");
        let auth = &res["payload"]["auth"];
        let t = auth["deviceToken"]
            .as_str()
            .unwrap_or_else(|| panic!("device {i}: hello-ok without a device token: {auth}"));
        tokens.push(t.to_owned());
        per_shard[res["payload"]["server"]["shard"].as_u64().unwrap() as usize] += 1;
    }
    assert!(
        per_shard.iter().all(|&n| n > 0),
        "the handshakes ran on both shards: {per_shard:?}"
    );

    // 500 pairings, each on disk before its hello-ok, cost two writes: the stalled one (which
    // had taken the first changes) and one carrying all the rest (one, if the writer took its
    // snapshot after all of them), after the early device's.
    let (_, _, body) = http_get(gw.port, "/metrics");
    let writes = metric(&body, "shardgate_store_writes_total");
    assert!(
        (2..=3).contains(&writes),
        "{writes} store writes for 1 + {DEVICES} pairings"
    );
    assert_eq!(metric(&body, "shardgate_store_write_errors_total"), 0);
    // Every new device's handshake waited for its own token's write; the reconnects did not.
    assert_eq!(
        metric(&body, "shardgate_store_waits_total"),
        DEVICES as u64 + 1
    );
    assert_eq!(metric(&body, "shardgate_store_waiting"), 0);
    // None waited for more than the write in progress when it paired plus the one carrying
    // its token (with the file written under a lock on the shard, the last of 500 waited for
    // up to 499 writes).
    let max = metric(&body, "shardgate_store_wait_writes_max");
    assert!(
        (1..=2).contains(&max),
        "a handshake waited for {max} writes"
    );

    drop((answered, op, again));
    gw.terminate();
    assert!(
        gw.wait_exit(Duration::from_secs(60)).is_some(),
        "graceful stop"
    );
    drop(gw);

    // On disk: every device, with the token it was given.
    let file: Value =
        serde_json::from_slice(&std::fs::read(state.join("devices").join("paired.json")).unwrap())
            .unwrap();
    assert_eq!(file.as_object().unwrap().len(), DEVICES + 1);
    for (id, t) in ids.iter().zip(&tokens) {
        assert_eq!(
            file[id.device_id()]["tokens"]["operator"]["token"],
            t.as_str(),
            "device {} on disk",
            id.device_id()
        );
    }

    // After a restart each device gets in with its device token alone, and keeps it: a
    // paired device's connect writes nothing.
    let gw = start(&state);
    let clients = send_all(&gw, &ids, |i| ConnectOpts {
        token: None,
        device_token: Some(tokens[i].as_str()),
        ..read()
    });
    for (i, (_, res)) in answers(clients).iter().enumerate() {
        assert_eq!(res["ok"], true, "device {i} refused after restart: {res}");
        assert_eq!(res["payload"]["auth"]["method"], "device-token", "{res}");
        assert_eq!(
            res["payload"]["auth"]["deviceToken"],
            tokens[i].as_str(),
            "{res}"
        );
    }
    let (_, _, body) = http_get(gw.port, "/metrics");
    assert_eq!(metric(&body, "shardgate_store_writes_total"), 0);
    assert_eq!(metric(&body, "shardgate_store_waits_total"), 0);
}
