//! What real OpenClaw clients read from any gateway (issue 20): `logs.tail` serving the
//! gateway's own recent log lines with a working cursor, the gateway's Ed25519 identity kept
//! across restarts, the capabilities and version in hello-ok, `wake` queuing a system event,
//! and the catalogs answering OpenClaw's shapes instead of "unknown method".

use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};
use sha2::Digest as _;

use crate::support::{Client, Gateway, Launch, Started, ADMIN, READ, TOKEN, WRITE};

/// Calls `logs.tail` until a returned line contains `needle` (the file writer is
/// asynchronous); returns that answer.
fn tail_until(c: &mut Client, params: Value, needle: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = c.request_ok("logs.tail", params.clone());
        let lines = v["lines"].as_array().expect("lines").clone();
        if lines.iter().any(|l| l.as_str().unwrap().contains(needle)) {
            return v;
        }
        assert!(Instant::now() < deadline, "no {needle:?} in the log: {v}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Connects with `token` (a wrong one: the gateway refuses and logs "connect refused").
fn connect_with_token(gw: &Gateway, token: &str) {
    let _ = gw.raw().handshake(
        crate::support::ConnectOpts {
            token: Some(token),
            ..Default::default()
        }
        .params(),
    );
}

#[test]
fn logs_tail_returns_the_recent_log_lines_and_follows_with_the_cursor() {
    let gw = Gateway::standard(None);
    let mut c = gw.operator(&[READ]);
    // A refused connect is logged ("connect refused").
    connect_with_token(&gw, "wrong");
    let first = tail_until(&mut c, json!({}), "connect refused");
    let file = first["file"].as_str().unwrap();
    assert!(
        file.starts_with(&gw.state_dir.join("logs").display().to_string()),
        "{file}"
    );
    let size = first["size"].as_u64().unwrap();
    let cursor = first["cursor"].as_u64().unwrap();
    assert!(cursor > 0 && cursor <= size, "{first}");
    // Each line is one JSON object with the keys `openclaw logs` reads.
    let lines = first["lines"].as_array().unwrap();
    let refused: Value = lines
        .iter()
        .map(|l| serde_json::from_str::<Value>(l.as_str().unwrap()).expect("a JSON line"))
        .find(|l| l["message"] == "connect refused")
        .expect("the refused connect");
    assert_eq!(refused["level"], "info");
    assert_eq!(refused["subsystem"], "shardgate::transport::server");
    assert!(
        refused["time"].as_str().unwrap().ends_with('Z'),
        "{refused}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.as_str().unwrap().contains("gateway ready")),
        "the start-up lines are there too: {first}"
    );
    assert!(!first.to_string().contains("wrong"), "no secret in the log");

    // From the cursor on: only what came after.
    connect_with_token(&gw, "wrong-again");
    let next = tail_until(&mut c, json!({"cursor": cursor}), "connect refused");
    assert_eq!(next["reset"], false);
    assert!(
        !next["lines"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l.as_str().unwrap().contains("gateway ready")),
        "lines before the cursor are not sent again: {next}"
    );
    // `limit` keeps the last lines; bad params are refused as OpenClaw refuses them.
    let one = c.request_ok("logs.tail", json!({"limit": 1}));
    assert_eq!(one["lines"].as_array().unwrap().len(), 1, "{one}");
    let e = c.request_err("logs.tail", json!({"limit": 0}));
    assert_eq!(e["code"], "INVALID_REQUEST", "{e}");
}

fn identity_of(c: &mut Client) -> (String, String) {
    let v = c.request_ok("gateway.identity.get", json!({}));
    assert_eq!(
        v.as_object().unwrap().len(),
        2,
        "exactly deviceId and publicKey: {v}"
    );
    (
        v["deviceId"].as_str().unwrap().to_string(),
        v["publicKey"].as_str().unwrap().to_string(),
    )
}

#[test]
fn gateway_identity_is_an_ed25519_key_kept_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let start = || match Gateway::launch(Launch {
        args: &["--token", TOKEN, "--shards", "2"],
        state_dir: Some(dir.path()),
        ..Default::default()
    }) {
        Started::Ready(g) => g,
        Started::Exited { status, stderr } => panic!("exited ({status}): {stderr}"),
    };
    let mut gw = start();
    let (id, key) = identity_of(&mut gw.operator(&[READ]));
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(&key)
        .expect("unpadded base64url");
    let raw: [u8; 32] = raw.try_into().expect("32 bytes");
    ed25519_dalek::VerifyingKey::from_bytes(&raw).expect("an Ed25519 point");
    assert_eq!(
        id,
        hex::encode(sha2::Sha256::digest(raw)),
        "deviceId = sha256(key)"
    );

    // The private key in the state dir is the one behind it (OpenClaw's file shape).
    let file: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("identity/device.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(file["deviceId"], id.as_str());
    let pem: String = file["privateKeyPem"]
        .as_str()
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(pem)
        .unwrap();
    let seed: [u8; 32] = der[16..].try_into().unwrap();
    let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
    assert_eq!(signing.verifying_key().to_bytes(), raw);

    gw.terminate();
    assert!(gw.wait_exit(Duration::from_secs(20)).is_some());
    drop(gw);
    let gw = start();
    assert_eq!(identity_of(&mut gw.operator(&[READ])), (id, key));
}

#[test]
fn hello_ok_lists_the_served_capabilities_and_the_openclaw_version() {
    let gw = Gateway::standard(None);
    let mut c = gw.operator(&[READ]);
    let h = c.hello.clone();
    assert_eq!(
        h["features"]["capabilities"],
        json!(["published-model-catalog"])
    );
    assert_eq!(h["server"]["version"], "2026.9.6");
    assert_eq!(h["server"]["shardgateVersion"], env!("CARGO_PKG_VERSION"));
    let methods = h["features"]["methods"].as_array().unwrap();
    for m in [
        "logs.tail",
        "cron.list",
        "cron.status",
        "wake",
        "exec.approvals.get",
        "sessions.describe",
        "agents.list",
        "question.list",
        "plugin.approval.list",
        "commands.list",
        "diagnostics.stability",
        "doctor.memory.status",
        "usage.status",
        "usage.cost",
        "tools.catalog",
        "skills.status",
        "hooks.status",
        "system.info",
        "tasks.list",
        "talk.config",
        "update.status",
        "voicewake.get",
        "taskSuggestions.list",
        "agent.identity.get",
    ] {
        assert!(
            methods.iter().any(|x| x == m),
            "{m} not in features.methods"
        );
    }
    // The published catalog: the model runs use, with details.
    let models = c.request_ok(
        "models.list",
        json!({"view": "default", "includeDetails": true}),
    );
    assert_eq!(
        models["models"][0],
        json!({"id": "echo", "name": "echo", "provider": "shardgate", "input": ["text"],
               "available": true, "local": true})
    );
    let status = c.request_ok("status", json!({}));
    assert_eq!(status["runtimeVersion"], "2026.9.6");
    assert_eq!(status["shardgateVersion"], env!("CARGO_PKG_VERSION"));
    let health = c.request_ok("health", json!({}));
    assert_eq!(health["sessions"]["path"], "memory");
    assert_eq!(health["agents"][0]["sessions"]["path"], "memory");
}

#[test]
fn wake_queues_a_system_event_and_no_heartbeat_runs() {
    let gw = Gateway::standard(None);
    let mut c = gw.operator(&[WRITE]);
    let e = c.request_err("wake", json!({"text": "x"}));
    assert_eq!(e["code"], "INVALID_REQUEST");
    assert!(e["message"].as_str().unwrap().contains("'mode'"), "{e}");
    let e = c.request_err("wake", json!({"mode": "later", "text": "x"}));
    assert_eq!(e["code"], "INVALID_REQUEST");
    assert_eq!(
        c.request_ok("wake", json!({"mode": "now", "text": "deploy finished"})),
        json!({"ok": true})
    );
    // Every shard queues it (broadcast); a status from a connection on any shard shows it.
    for mut other in crate::support::operators_on_each_shard(&gw, &[READ], 2)
        .into_iter()
        .flatten()
    {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let s = other.request_ok("status", json!({}));
            if s["queuedSystemEvents"] == json!(["deploy finished"]) {
                break;
            }
            assert!(Instant::now() < deadline, "not queued: {s}");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(other.request_ok("last-heartbeat", json!({})), Value::Null);
    }
    let mut reader = gw.operator(&[READ]);
    let e = reader.request_err("wake", json!({"mode": "now", "text": "x"}));
    assert!(
        e["message"].as_str().unwrap().contains("missing scope"),
        "wake needs operator.write: {e}"
    );
}

#[test]
fn catalogs_answer_openclaw_shapes_with_openclaws_scopes() {
    let gw = Gateway::standard(None);
    let mut c = gw.operator(&[ADMIN]);
    assert_eq!(
        c.request_ok("cron.list", json!({"limit": 200, "offset": 0}))["jobs"],
        json!([])
    );
    assert_eq!(c.request_ok("cron.status", json!({}))["jobs"], 0);
    assert_eq!(c.request_ok("plugin.approval.list", json!({})), json!([]));
    assert_eq!(
        c.request_ok("question.list", json!({})),
        json!({"questions": []})
    );
    assert_eq!(
        c.request_ok("skills.status", json!({}))["skills"],
        json!([])
    );
    assert_eq!(c.request_ok("hooks.status", json!({}))["hooks"], json!([]));
    assert_eq!(c.request_ok("tasks.list", json!({})), json!({"tasks": []}));
    let agents = c.request_ok("agents.list", json!({}));
    assert_eq!(agents["defaultId"], "main");
    assert_eq!(agents["agents"][0]["id"], "main");
    let who = c.request_ok("agent.identity.get", json!({}));
    assert_eq!(who["agentId"], "main");
    let info = c.request_ok("system.info", json!({}));
    assert_eq!(info["port"], gw.port);
    assert_eq!(info["pid"], gw.pid);
    assert!(info["memoryTotalBytes"].as_u64().unwrap() > 0, "{info}");
    let cost = c.request_ok("usage.cost", json!({"days": 7}));
    assert_eq!(cost["daily"].as_array().unwrap().len(), 7);
    let mem = c.request_ok("doctor.memory.status", json!({"probe": false}));
    assert_eq!(mem["embedding"]["checked"], false);
    // sessions.describe: a session the gateway has, and null for one it has not.
    c.run_agent("agent:main:main", "hi", "describe-1");
    let d = c.request_ok("sessions.describe", json!({"key": "agent:main:main"}));
    assert_eq!(d["session"]["key"], "agent:main:main");
    let d = c.request_ok("sessions.describe", json!({"key": "agent:main:nope"}));
    assert_eq!(d, json!({"session": null}));
    assert_eq!(
        c.request_err("sessions.describe", json!({}))["code"],
        "INVALID_REQUEST"
    );

    // OpenClaw's scopes: reading approvals config needs admin, questions their own scope.
    let mut reader = gw.operator(&[READ]);
    for m in [
        "exec.approvals.get",
        "question.list",
        "update.status",
        "talk.config",
    ] {
        let e = reader.request_err(m, json!({}));
        assert!(
            e["message"].as_str().unwrap().contains("missing scope"),
            "{m}: {e}"
        );
    }
    assert_eq!(
        reader.request_ok("voicewake.get", json!({})),
        json!({"triggers": []})
    );
}
