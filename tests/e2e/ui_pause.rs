//! A UI client's `chat.send` (OpenClaw's TUI): its answer reaches the client in a read of its
//! own, and the run's events only `gateway.uiChatAckPauseMs` later, so the client has handled
//! the answer (and registered the run) before the run's first event. Other clients keep the
//! coalesced write: answer and run at once.

use std::io::Read;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use shardgate::auth::device::DeviceIdentity;

use crate::support::{scopes, Client, ConnectOpts, Gateway, FRAME_TIMEOUT, READ, WRITE};

/// The pause the gateway is given: long enough that the test reads the answer before the
/// pause ends even on a loaded machine.
const PAUSE_MS: u64 = 1000;

/// The complete unmasked server frames at the start of `buf` (text payloads), and how many
/// bytes they take.
fn split_frames(buf: &[u8]) -> (Vec<Value>, usize) {
    let mut frames = Vec::new();
    let mut pos = 0;
    while buf.len() >= pos + 2 {
        assert_eq!(buf[pos] & 0x0f, 1, "a text frame from the gateway");
        let (len, head) = match buf[pos + 1] & 0x7f {
            126 if buf.len() >= pos + 4 => {
                (u16::from_be_bytes([buf[pos + 2], buf[pos + 3]]) as usize, 4)
            }
            127 if buf.len() >= pos + 10 => {
                let mut b = [0; 8];
                b.copy_from_slice(&buf[pos + 2..pos + 10]);
                (u64::from_be_bytes(b) as usize, 10)
            }
            126 | 127 => break,
            n => (n as usize, 2),
        };
        if buf.len() < pos + head + len {
            break;
        }
        let text = &buf[pos + head..pos + head + len];
        frames.push(serde_json::from_slice(text).expect("a JSON frame"));
        pos += head + len;
    }
    (frames, pos)
}

/// Reads from `sock` until `done` holds for a frame; returns every frame and the instant the
/// first of them arrived.
fn read_until(
    sock: &mut std::net::TcpStream,
    mut done: impl FnMut(&Value) -> bool,
) -> (Vec<Value>, Instant) {
    let mut buf = Vec::new();
    let mut chunk = vec![0; 1 << 16];
    let mut first = None;
    let deadline = Instant::now() + FRAME_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "the run did not end within {FRAME_TIMEOUT:?}"
        );
        sock.set_read_timeout(Some(left)).unwrap();
        let n = sock.read(&mut chunk).expect("read");
        assert!(n > 0, "the gateway closed the socket");
        first.get_or_insert_with(Instant::now);
        buf.extend_from_slice(&chunk[..n]);
        let (frames, used) = split_frames(&buf);
        if used == buf.len() && frames.iter().any(&mut done) {
            return (frames, first.expect("read once"));
        }
    }
}

fn is_final(f: &Value) -> bool {
    f["event"] == "chat" && f["payload"]["state"] == "final"
}

#[test]
fn ui_chat_send_answer_is_read_alone_and_the_run_follows_after_the_pause() {
    let gw = Gateway::standard(Some(&format!(
        "{{ gateway: {{ uiChatAckPauseMs: {PAUSE_MS} }} }}"
    )));
    let ui_opts = ConnectOpts {
        client_id: "openclaw-tui",
        client_mode: "ui",
        scopes: scopes(&[READ, WRITE]),
        ..Default::default()
    };
    let mut ui = Client::connect_with_device(gw.port, &DeviceIdentity::generate(), &ui_opts);
    // Several sessions, so that both shards own one: a run's frames cross the mesh or not.
    for (i, key) in ["main", "tui-a", "tui-b"].into_iter().enumerate() {
        // A round trip first: nothing else is on its way to `ui` when the message goes.
        ui.request_ok("health", json!({}));
        let idem = format!("ui-{i}");
        let id = ui.call(
            "chat.send",
            json!({"sessionKey": key, "message": "hello there", "idempotencyKey": idem}),
        );
        let sock = ui.socket();
        sock.set_read_timeout(Some(FRAME_TIMEOUT)).unwrap();
        let mut chunk = vec![0; 1 << 16];
        let n = sock.read(&mut chunk).expect("read the answer");
        let answered = Instant::now();
        let (frames, used) = split_frames(&chunk[..n]);
        let names: Vec<&Value> = frames
            .iter()
            .map(|f| {
                if f["type"] == "event" {
                    &f["event"]
                } else {
                    &f["type"]
                }
            })
            .collect();
        assert_eq!(
            (frames.len(), used),
            (1, n),
            "{key}: the first read holds the answer alone, not {names:?}"
        );
        let res = &frames[0];
        assert_eq!(res["type"], "res", "{key}: {res}");
        assert_eq!(res["id"], id.as_str(), "{key}: {res}");
        assert_eq!(res["payload"]["status"], "started", "{key}: {res}");
        assert_eq!(res["payload"]["runId"], idem.as_str(), "{key}: {res}");

        let (run, arrived) = read_until(sock, is_final);
        let waited = arrived - answered;
        assert!(
            waited >= Duration::from_millis(PAUSE_MS * 8 / 10),
            "{key}: the run's first frame came {waited:?} after the answer (pause {PAUSE_MS} ms)"
        );
        assert_eq!(
            run[0]["event"], "agent",
            "{key}: the run starts: {}",
            run[0]
        );
        assert_eq!(
            run[0]["payload"]["data"]["phase"], "start",
            "{key}: {}",
            run[0]
        );
        assert!(run.iter().all(|f| f["payload"]["runId"] == idem.as_str()));
        let seqs: Vec<u64> = run.iter().map(|f| f["seq"].as_u64().unwrap()).collect();
        assert!(
            seqs.windows(2).all(|w| w[1] == w[0] + 1),
            "{key}: event seq without gaps: {seqs:?}"
        );
        let last = run.last().unwrap();
        assert_eq!(
            last["payload"]["message"]["content"][0]["text"], "hello there",
            "{key}: the echo: {last}"
        );
    }

    // A CLI client's run is not paused: answer and run come at once.
    let mut cli = gw.operator(&[WRITE]);
    cli.request_ok("health", json!({}));
    let sent = Instant::now();
    let id = cli.call(
        "chat.send",
        json!({"sessionKey": "main", "message": "quick", "idempotencyKey": "cli-0"}),
    );
    let (frames, _) = read_until(cli.socket(), is_final);
    let took = sent.elapsed();
    assert_eq!(
        frames[0]["id"],
        id.as_str(),
        "the answer first: {}",
        frames[0]
    );
    assert!(
        took < Duration::from_millis(PAUSE_MS),
        "a CLI client's run took {took:?} (the UI pause is {PAUSE_MS} ms)"
    );
}
