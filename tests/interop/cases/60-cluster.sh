# Cases: the real OpenClaw CLI against a cluster — two shardgate members on one redis-server
# (`gateway.clustering`), the CLI connected to m1 only, the session leased by m2: `agent`
# answers through the relay and `chat.history` reads the owner's transcript. Only against
# shardgate (an external gateway is not a cluster we start).
# Sourced by run.sh, which defines openclaw/check, WORK, TOKEN, SHARDGATE_BIN, CALL_TIMEOUT_MS.

if [[ -n "${SHARDGATE_INTEROP_URL:-}" ]]; then
  log "60-cluster: skipped against an external gateway"
else
  command -v redis-server >/dev/null || die "60-cluster needs redis-server (.ci/run installs it)"
  CL="$WORK/cluster"
  mkdir -p "$CL/redis"
  CL_RPORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  redis-server --port "$CL_RPORT" --bind 127.0.0.1 --appendonly yes --appendfsync always --save '' \
    --dir "$CL/redis" >"$CL/redis.log" 2>&1 </dev/null &
  CL_PIDS=($!)
  for _ in $(seq 1 100); do redis-cli -p "$CL_RPORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
  CL_PORTS=()
  for m in m1 m2; do
    mkdir -p "$CL/$m"
    echo "{gateway: {clustering: {enabled: true, memberId: '$m'}}, queue: {backend: 'redis', redis: {url: 'redis://127.0.0.1:$CL_RPORT', keyPrefix: 'ic', slots: 16}}}" >"$CL/$m.json5"
    "$SHARDGATE_BIN" serve --port 0 --token "$TOKEN" --config "$CL/$m.json5" --state-dir "$CL/$m" \
      >"$CL/$m.stdout" 2>"$CL/$m.stderr" </dev/null &
    CL_PIDS+=($!)
    for _ in $(seq 1 100); do grep -q '^shardgate ready' "$CL/$m.stdout" 2>/dev/null && break; sleep 0.1; done
    CL_PORTS+=("$(sed -nE 's/^shardgate ready .*listen=[^ ]*:([0-9]+).*/\1/p' "$CL/$m.stdout")")
  done
  # Both members hold slots and each one's view knows every slot's holder.
  cl_converged() {
    local p s
    for s in $(seq 0 15); do [[ -n "$(redis-cli -p "$CL_RPORT" --raw get "ic:lease:$s")" ]] || return 1; done
    for p in "${CL_PORTS[@]}"; do
      s="$("$SHARDGATE_BIN" call status --url "ws://127.0.0.1:$p" --token "$TOKEN" 2>/dev/null)" || return 1
      grep -q '"unknown": 0' <<<"$s" || return 1
      grep -q '"owned": \[\]' <<<"$s" && return 1
    done
    return 0
  }
  for _ in $(seq 1 150); do cl_converged && break; sleep 0.2; done
  # A session key m2 leases (CRC-32 of the normalised key, as the gateways cut them).
  CL_KEY=""
  for i in $(seq 0 200); do
    slot="$(python3 -c 'import sys, zlib; print(zlib.crc32(("agent:main:" + sys.argv[1]).encode()) % 16)' "relay-$i")"
    if [[ "$(redis-cli -p "$CL_RPORT" --raw get "ic:lease:$slot")" == m2 ]]; then CL_KEY="relay-$i"; break; fi
  done
  export CL_KEY
  CL_COMMON=(--url "ws://127.0.0.1:${CL_PORTS[0]}" --token "$TOKEN" --json --timeout "$CALL_TIMEOUT_MS")

  openclaw cl-agent gateway call agent --expect-final \
    --params "{\"sessionKey\":\"$CL_KEY\",\"message\":\"over the relay\",\"idempotencyKey\":\"cl-1\"}" "${CL_COMMON[@]}"
  check cl-agent 0 '
    if (!process.env.CL_KEY) return fail("no session of m2 found (did the cluster converge?)");
    if (!isObj(out)) return fail("final payload is not an object");
    if (out.status !== "ok") fail(`final status ${JSON.stringify(out.status)}, want "ok"`);
    if (out.runId !== "cl-1") fail(`runId ${JSON.stringify(out.runId)}, want "cl-1"`);
    if (out.sessionKey !== "agent:main:" + process.env.CL_KEY) fail(`sessionKey ${JSON.stringify(out.sessionKey)}`);
    const text = out.result && out.result.payloads && out.result.payloads[0] && out.result.payloads[0].text;
    if (text !== "over the relay") fail(`answer text ${JSON.stringify(text)}, want "over the relay"`);
  ' || true

  openclaw cl-history gateway call chat.history --params "{\"sessionKey\":\"$CL_KEY\"}" "${CL_COMMON[@]}"
  check cl-history 0 '
    if (!isObj(out) || !Array.isArray(out.messages)) return fail("no messages array");
    if (!out.messages.some((m) => m.role === "user" && JSON.stringify(m.content).includes("over the relay")))
      fail("the owner m2 transcript, read through m1, lacks the message");
  ' || true

  # The session lives on m2, the owner: m2 lists it, m1 (which only relayed) does not.
  openclaw cl-list-m2 gateway call sessions.list --url "ws://127.0.0.1:${CL_PORTS[1]}" --token "$TOKEN" --json --timeout "$CALL_TIMEOUT_MS"
  check cl-list-m2 0 '
    const keys = (out.sessions || []).map((s) => s.key);
    if (!keys.includes("agent:main:" + process.env.CL_KEY)) fail(`m2 does not list the session: ${JSON.stringify(keys)}`);
  ' || true
  openclaw cl-list-m1 gateway call sessions.list "${CL_COMMON[@]}"
  check cl-list-m1 0 '
    const keys = (out.sessions || []).map((s) => s.key);
    if (keys.includes("agent:main:" + process.env.CL_KEY)) fail("m1 holds the session it should only have relayed");
  ' || true

  for p in "${CL_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${CL_PIDS[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
  done
fi
