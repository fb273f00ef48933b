#!/usr/bin/env bash
# Run the Autobahn|Testsuite fuzzingclient against shardgate's /echo route.
# Exits non-zero if any case's behavior or behaviorClose is FAILED, if cases
# are missing from the report, if wstest times out, or if the server dies.
#
# Env (all optional):
#   SHARDGATE_BIN                  server binary (default target/release/shardgate
#                                  if present, else target/debug/shardgate)
#   SHARDGATE_AUTOBAHN_URL         ws:// URL of an already running echo endpoint;
#                                  when set, no server is started
#   SHARDGATE_AUTOBAHN_CASES       comma-separated case patterns (default "*"),
#                                  e.g. "1.*,2.*,9.1.*"; 12.*/13.* stay excluded
#   SHARDGATE_AUTOBAHN_REPORT_DIR  where reports go (default: a fresh temp dir,
#                                  removed on success unless ..._KEEP=1)
#   SHARDGATE_AUTOBAHN_KEEP        1 = keep the temp dir even on success
#   SHARDGATE_AUTOBAHN_TIMEOUT     seconds for the whole wstest run (default 1200)
#   SHARDGATE_AUTOBAHN_READY_TIMEOUT  seconds to wait for the ready line (default 60)
#   SHARDGATE_AUTOBAHN_STRICT_CLOSE   1 = also fail on UNCLEAN / WRONG CODE closes
#   SHARDGATE_AUTOBAHN_VENV, SHARDGATE_AUTOBAHN_PYTHON: see install.sh
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"

log() { echo "autobahn: $*" >&2; }

VENV="$("$HERE/install.sh")"
PY="$VENV/bin/python"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/shardgate-autobahn.XXXXXX")"
REPORT_DIR="${SHARDGATE_AUTOBAHN_REPORT_DIR:-$WORK/reports}"
mkdir -p "$REPORT_DIR"
REPORT_DIR="$(cd "$REPORT_DIR" && pwd)"
CONFIG="$WORK/fuzzingclient.json"
SERVER_PID=""
WSTEST_PID=""
STATUS=1

# The server runs in its own process group (setsid), so signalling the group
# also reaches wrapper scripts and anything they spawned.
server_alive() {
    kill -0 -- "-$SERVER_PID" 2>/dev/null || kill -0 "$SERVER_PID" 2>/dev/null
}
signal_server() {
    kill "-$1" -- "-$SERVER_PID" 2>/dev/null || kill "-$1" "$SERVER_PID" 2>/dev/null || true
}

cleanup() {
    local rc=$?
    if [[ -n "$WSTEST_PID" ]] && kill -0 "$WSTEST_PID" 2>/dev/null; then
        kill -TERM "$WSTEST_PID" 2>/dev/null || true   # timeout(1) passes it on to wstest
        wait "$WSTEST_PID" 2>/dev/null || true
    fi
    if [[ -n "$SERVER_PID" ]] && server_alive; then
        signal_server TERM
        for _ in $(seq 50); do
            server_alive || break
            sleep 0.1
        done
        if server_alive; then
            log "server did not exit on SIGTERM within 5s; sending SIGKILL"
            signal_server KILL
        fi
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    if [[ $STATUS -eq 0 && -z "${SHARDGATE_AUTOBAHN_REPORT_DIR:-}" && "${SHARDGATE_AUTOBAHN_KEEP:-0}" != 1 ]]; then
        rm -rf "$WORK"
    else
        log "logs kept in $WORK; reports in $REPORT_DIR (open index.html)"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

dump_server_logs() {
    [[ -n "$SERVER_PID" ]] || return 0
    log "--- server stdout (tail) ---"; tail -n 30 "$WORK/server.out" >&2 || true
    log "--- server stderr (tail) ---"; tail -n 30 "$WORK/server.err" >&2 || true
}

# ---- the server --------------------------------------------------------------
if [[ -n "${SHARDGATE_AUTOBAHN_URL:-}" ]]; then
    URL="$SHARDGATE_AUTOBAHN_URL"
    log "using already running server at $URL"
else
    BIN="${SHARDGATE_BIN:-}"
    if [[ -z "$BIN" ]]; then
        if [[ -x "$REPO/target/release/shardgate" ]]; then
            BIN="$REPO/target/release/shardgate"
        else
            BIN="$REPO/target/debug/shardgate"
        fi
    fi
    [[ -x "$BIN" ]] || { log "server binary $BIN not found; build it first (cargo build --release)"; exit 1; }
    mkdir -p "$WORK/state"
    log "starting $BIN"
    # The files exist before the server starts: the background job opens them itself, maybe
    # after the first read of the wait loop below.
    : >"$WORK/server.out"; : >"$WORK/server.err"
    setsid "$BIN" serve --port 0 --state-dir "$WORK/state" --dangerously-enable-ws-echo \
        >"$WORK/server.out" 2>"$WORK/server.err" </dev/null &
    SERVER_PID=$!

    READY_TIMEOUT="${SHARDGATE_AUTOBAHN_READY_TIMEOUT:-60}"
    LISTEN=""
    deadline=$((SECONDS + READY_TIMEOUT))
    while [[ -z "$LISTEN" ]]; do
        LISTEN="$(sed -n 's/^shardgate ready listen=\([^ ]*\).*/\1/p' "$WORK/server.out" 2>/dev/null | head -n1 || true)"
        [[ -n "$LISTEN" ]] && break
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            log "server exited before printing its ready line"; dump_server_logs; exit 1
        fi
        if (( SECONDS >= deadline )); then
            log "no ready line within ${READY_TIMEOUT}s"; dump_server_logs; exit 1
        fi
        sleep 0.1
    done
    URL="ws://$LISTEN/echo"
    log "server pid $SERVER_PID ready at $URL"
fi

# ---- the config --------------------------------------------------------------
"$PY" - "$HERE/fuzzingclient.json" "$CONFIG" "$URL" "$REPORT_DIR" "${SHARDGATE_AUTOBAHN_CASES:-}" <<'PYEOF'
import json, sys
template, out, url, outdir, cases = sys.argv[1:6]
spec = json.load(open(template))
spec["outdir"] = outdir
for server in spec["servers"]:
    server["url"] = url
if cases.strip():
    spec["cases"] = [c.strip() for c in cases.split(",") if c.strip()]
with open(out, "w") as f:
    json.dump(spec, f, indent=2, sort_keys=True)
PYEOF

# ---- wstest ------------------------------------------------------------------
TIMEOUT="${SHARDGATE_AUTOBAHN_TIMEOUT:-1200}"
log "running wstest -m fuzzingclient (timeout ${TIMEOUT}s, log $WORK/wstest.log)"
start=$SECONDS
rc=0
# wstest writes into its working directory; keep that inside $WORK. It runs as
# a background job so that INT/TERM sent to this script are handled at once.
(cd "$WORK" && exec timeout --kill-after=30 "$TIMEOUT" "$VENV/bin/wstest" -m fuzzingclient -s "$CONFIG") \
    >"$WORK/wstest.log" 2>&1 </dev/null &
WSTEST_PID=$!
wait "$WSTEST_PID" || rc=$?
WSTEST_PID=""
log "wstest finished in $((SECONDS - start))s (exit $rc)"
grep -m1 'will run' "$WORK/wstest.log" >&2 || true
if [[ $rc -ne 0 ]]; then
    [[ $rc -eq 124 || $rc -eq 137 ]] && log "wstest timed out after ${TIMEOUT}s"
    log "--- wstest log (tail) ---"; grep -v '^Cases = ' "$WORK/wstest.log" | tail -n 30 >&2
    dump_server_logs
    exit 1
fi

# ---- the verdict -------------------------------------------------------------
EXPECTED="$(sed -n 's/.*will run \([0-9]*\) test cases.*/\1/p' "$WORK/wstest.log" | head -n1)"
summary_rc=0
"$PY" - "$REPORT_DIR/index.json" "${EXPECTED:-0}" "${SHARDGATE_AUTOBAHN_STRICT_CLOSE:-0}" <<'PYEOF' || summary_rc=$?
from __future__ import print_function
import json, sys, re
from collections import Counter

path, expected, strict_close = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
try:
    index = json.load(open(path))
except Exception as e:
    print("autobahn: cannot read %s: %s" % (path, e))
    sys.exit(1)

def key(case_id):
    return tuple(int(p) for p in re.findall(r"\d+", case_id))

results = {}
for agent, cases in index.items():
    for case_id, r in cases.items():
        results[case_id] = r

behaviors = Counter(r.get("behavior") for r in results.values())
closes = Counter(r.get("behaviorClose") for r in results.values())
order = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED"]
print("autobahn: %d cases (agents: %s)" % (len(results), ", ".join(sorted(index)) or "none"))
print("  behavior:      " + "  ".join("%s=%d" % (b, behaviors.get(b, 0))
      for b in order + sorted(set(behaviors) - set(order), key=str)))
print("  behaviorClose: " + "  ".join("%s=%d" % (b, n) for b, n in sorted(closes.items(), key=lambda x: str(x[0]))))

bad_close = {"FAILED"} | ({"UNCLEAN", "WRONG CODE", "FAILED BY CLIENT"} if strict_close else set())
failed = sorted((c for c, r in results.items()
                 if r.get("behavior") == "FAILED" or r.get("behaviorClose") in bad_close), key=key)
for c in failed[:50]:
    r = results[c]
    print("  FAILED %-10s behavior=%s behaviorClose=%s remoteCloseCode=%s report=%s"
          % (c, r.get("behavior"), r.get("behaviorClose"), r.get("remoteCloseCode"), r.get("reportfile")))
if len(failed) > 50:
    print("  ... and %d more" % (len(failed) - 50))
soft = sorted((c for c, r in results.items() if c not in failed
               and r.get("behaviorClose") not in ("OK", "INFORMATIONAL", "UNIMPLEMENTED")), key=key)
if soft:
    print("  note: non-OK close (not failing): " + ", ".join(
        "%s(%s)" % (c, results[c].get("behaviorClose")) for c in soft[:20]) + (" ..." if len(soft) > 20 else ""))

missing = expected - len(results)
if expected and missing > 0:
    print("autobahn: %d of %d expected cases missing from the report" % (missing, expected))
if not results:
    print("autobahn: report has no cases")
n_failed = len(failed) + max(missing, 0)
print("autobahn: %d passed, %d failed" % (len(results) - len(failed), n_failed))
sys.exit(1 if n_failed or not results else 0)
PYEOF

if grep -q 'Connection to .* failed' "$WORK/wstest.log"; then
    log "wstest could not connect (later cases were not run):"
    grep 'Connection to .* failed' "$WORK/wstest.log" | head -n 5 >&2
    summary_rc=1
fi
if [[ -n "$SERVER_PID" ]] && ! kill -0 "$SERVER_PID" 2>/dev/null; then
    log "server died during the run"
    summary_rc=1
fi
if [[ $summary_rc -ne 0 ]]; then
    dump_server_logs
    exit 1
fi
STATUS=0

