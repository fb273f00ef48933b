//! WebSocket conformance: the Autobahn|Testsuite fuzzingclient (autobahntestsuite 25.10.1,
//! Python 2.7) against shardgate's `/echo` route (`--dangerously-enable-ws-echo`), which uses
//! the same WebSocket layer as the gateway. `run.sh` installs the suite into
//! `.cache/autobahn-venv` from PyPI, starts the server with `network.websocket.compression`
//! on, runs every case (517, permessage-deflate's 12.* and 13.* included, in two wstest
//! processes side by side), and fails on any FAILED case or any 12.*/13.* case not OK.

use std::process::Command;

#[test]
fn autobahn_fuzzingclient_reports_no_failed_case() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("bash")
        .arg(format!("{root}/tests/autobahn/run.sh"))
        .env("SHARDGATE_BIN", env!("CARGO_BIN_EXE_shardgate"))
        .output()
        .expect("run tests/autobahn/run.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}\n{stderr}");
    assert!(out.status.success(), "autobahn failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains(" 0 failed") || stderr.contains(" 0 failed"),
        "no summary line in:\n{stdout}\n{stderr}"
    );
}
