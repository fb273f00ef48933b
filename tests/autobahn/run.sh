#!/usr/bin/env bash
# Run the Autobahn|Testsuite fuzzingclient against shardgate's /echo route.
# Exits non-zero if any case's behavior or behaviorClose is FAILED (or a
# permessage-deflate case, 12.*/13.*, is not OK: declined is UNIMPLEMENTED), if cases
# are missing from the report, if wstest times out, or if the server dies.
#
# Env (all optional):
#   SHARDGATE_BIN                  server binary (default target/release/shardgate
#                                  if present, else target/debug/shardgate)
#   SHARDGATE_AUTOBAHN_URL         ws:// URL of an already running echo endpoint;
#                                  when set, no server is started
#   SHARDGATE_AUTOBAHN_CASES       comma-separated case patterns (default "*": every
#                                  case, permessage-deflate's 12.* and 13.* included),
#                                  e.g. "1.*,2.*,9.1.*"
#   SHARDGATE_AUTOBAHN_JOBS        wstest processes run side by side (default 2; the
#                                  suite is bound by wstest's Python, so two halve the
#                                  time on two cores). Only when ..._CASES is unset: job 1
#                                  runs every case but 13.*, job 2 runs 13.*.
#   SHARDGATE_AUTOBAHN_REPORT_DIR  where reports go (default: a fresh temp dir,
#                                  removed on success unless ..._KEEP=1)
#   SHARDGATE_AUTOBAHN_KEEP        1 = keep the temp dir even on success
#   SHARDGATE_AUTOBAHN_TIMEOUT     seconds for the whole wstest run (default 2400)
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
SERVER_PID=""
WSTEST_PIDS=()
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
    local p
    for p in "${WSTEST_PIDS[@]}"; do
        if kill -0 "$p" 2>/dev/null; then
            kill -TERM "$p" 2>/dev/null || true   # timeout(1) passes it on to wstest
            wait "$p" 2>/dev/null || true
        fi
    done
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
    # permessage-deflate on (off by default), so that 12.* and 13.* test it.
    printf '{ network: { websocket: { compression: true } } }\n' >"$WORK/server.json5"
    log "starting $BIN"
    # The files exist before the server starts: the background job opens them itself, maybe
    # after the first read of the wait loop below.
    : >"$WORK/server.out"; : >"$WORK/server.err"
    setsid "$BIN" serve --port 0 --state-dir "$WORK/state" --config "$WORK/server.json5" \
        --dangerously-enable-ws-echo \
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
# One wstest config per job: (cases, exclude-cases) over the template's.
JOBS="${SHARDGATE_AUTOBAHN_JOBS:-2}"
[[ -n "${SHARDGATE_AUTOBAHN_CASES:-}" ]] && JOBS=1
"$PY" - "$HERE/fuzzingclient.json" "$WORK" "$URL" "$REPORT_DIR" "${SHARDGATE_AUTOBAHN_CASES:-}" "$JOBS" <<'PYEOF'
import json, sys
template, work, url, outdir, cases, jobs = sys.argv[1:7]
spec = json.load(open(template))
for server in spec["servers"]:
    server["url"] = url
if cases.strip():
    splits = [([c.strip() for c in cases.split(",") if c.strip()], [])]
elif int(jobs) >= 2:
    # 13.* (126 deflate cases) against 12.* (90) and the other 301: about equal times.
    splits = [(["*"], ["13.*"]), (["13.*"], [])]
else:
    splits = [(spec["cases"], [])]
for i, (inc, exc) in enumerate(splits, 1):
    job = dict(spec)
    job["cases"] = inc
    job["exclude-cases"] = sorted(set(spec.get("exclude-cases", [])) | set(exc))
    job["outdir"] = "%s/job%d" % (outdir, i)
    with open("%s/fuzzingclient-%d.json" % (work, i), "w") as f:
        json.dump(job, f, indent=2, sort_keys=True)
PYEOF
NJOBS=$(ls "$WORK"/fuzzingclient-*.json | wc -l)

# ---- wstest ------------------------------------------------------------------
TIMEOUT="${SHARDGATE_AUTOBAHN_TIMEOUT:-2400}"
log "running $NJOBS wstest -m fuzzingclient side by side (timeout ${TIMEOUT}s, logs $WORK/wstest-N.log)"
start=$SECONDS
# wstest writes into its working directory; keep that inside $WORK (one per job). Each runs
# as a background job so that INT/TERM sent to this script are handled at once.
for i in $(seq "$NJOBS"); do
    mkdir -p "$WORK/job$i"
    (cd "$WORK/job$i" && exec timeout --kill-after=30 "$TIMEOUT" "$VENV/bin/wstest" -m fuzzingclient -s "$WORK/fuzzingclient-$i.json") \
        >"$WORK/wstest-$i.log" 2>&1 </dev/null &
    WSTEST_PIDS+=("$!")
done
rc=0
for i in $(seq "$NJOBS"); do
    jrc=0
    wait "${WSTEST_PIDS[$((i - 1))]}" || jrc=$?
    if [[ $jrc -ne 0 ]]; then
        rc=$jrc
        [[ $jrc -eq 124 || $jrc -eq 137 ]] && log "wstest job $i timed out after ${TIMEOUT}s"
        log "--- wstest job $i log (tail) ---"; grep -v '^Cases = ' "$WORK/wstest-$i.log" | tail -n 30 >&2
    fi
done
WSTEST_PIDS=()
log "wstest finished in $((SECONDS - start))s (exit $rc)"
EXPECTED=0
for i in $(seq "$NJOBS"); do
    n="$(sed -n 's/.*will run \([0-9]*\) test cases.*/\1/p' "$WORK/wstest-$i.log" | head -n1)"
    log "job $i: will run ${n:-?} test cases"
    EXPECTED=$((EXPECTED + ${n:-0}))
done
if [[ $rc -ne 0 ]]; then
    dump_server_logs
    exit 1
fi

# ---- the verdict -------------------------------------------------------------
summary_rc=0
"$PY" - "$REPORT_DIR" "$NJOBS" "$EXPECTED" "${SHARDGATE_AUTOBAHN_STRICT_CLOSE:-0}" <<'PYEOF' || summary_rc=$?
from __future__ import print_function
import json, sys, re
from collections import Counter

report_dir, njobs, expected, strict_close = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"

def key(case_id):
    return tuple(int(p) for p in re.findall(r"\d+", case_id))

results = {}
agents = set()
for i in range(1, njobs + 1):
    path = "%s/job%d/index.json" % (report_dir, i)
    try:
        index = json.load(open(path))
    except Exception as e:
        print("autobahn: cannot read %s: %s" % (path, e))
        sys.exit(1)
    for agent, cases in index.items():
        agents.add(agent)
        for case_id, r in cases.items():
            results[case_id] = r

behaviors = Counter(r.get("behavior") for r in results.values())
closes = Counter(r.get("behaviorClose") for r in results.values())
order = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED"]
print("autobahn: %d cases (agents: %s)" % (len(results), ", ".join(sorted(agents)) or "none"))
print("  behavior:      " + "  ".join("%s=%d" % (b, behaviors.get(b, 0))
      for b in order + sorted(set(behaviors) - set(order), key=str)))
print("  behaviorClose: " + "  ".join("%s=%d" % (b, n) for b, n in sorted(closes.items(), key=lambda x: str(x[0]))))
deflate = [c for c in results if c.startswith(("12.", "13."))]
print("  permessage-deflate (12.*, 13.*): %d cases, %d OK"
      % (len(deflate), sum(1 for c in deflate if results[c].get("behavior") == "OK")))

bad_close = {"FAILED"} | ({"UNCLEAN", "WRONG CODE", "FAILED BY CLIENT"} if strict_close else set())
# A deflate case that the server declined reports UNIMPLEMENTED: with compression on, that
# is a failure too (negotiation broke), so 12.* and 13.* must be OK.
failed = sorted((c for c, r in results.items()
                 if r.get("behavior") == "FAILED" or r.get("behaviorClose") in bad_close
                 or (c in deflate and r.get("behavior") != "OK")), key=key)
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

if grep -q 'Connection to .* failed' "$WORK"/wstest-*.log; then
    log "wstest could not connect (later cases were not run):"
    grep -h 'Connection to .* failed' "$WORK"/wstest-*.log | head -n 5 >&2
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

