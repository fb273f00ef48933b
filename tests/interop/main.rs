//! Interop with the real OpenClaw CLI (npm `openclaw@2026.9.6` on Node 26.10.0).
//!
//! `run.sh` installs both into `.cache/interop` (npm registry), starts this build of shardgate
//! on a free port and runs `openclaw gateway call health|status|system-presence|agent …`
//! against it, checking each answer's shape. See FRAMES.md for what the CLI sends and expects.

use std::process::Command;

#[test]
fn openclaw_cli_calls_succeed_against_shardgate() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("bash")
        .arg(format!("{root}/tests/interop/run.sh"))
        .env("SHARDGATE_BIN", env!("CARGO_BIN_EXE_shardgate"))
        .output()
        .expect("run tests/interop/run.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}\n{stderr}");
    assert!(out.status.success(), "interop failed:\n{stdout}\n{stderr}");
    for check in [
        "PASS health",
        "PASS status",
        "PASS system-presence",
        "PASS agent",
    ] {
        assert!(stdout.contains(check), "missing `{check}` in:\n{stdout}");
    }
}
