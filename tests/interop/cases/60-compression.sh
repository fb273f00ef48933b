# Cases: permessage-deflate (`network.websocket.compression: true`) with the real CLI. Its
# client (Node `ws`) offers `permessage-deflate; client_max_window_bits` on every upgrade;
# OpenClaw's gateway declines (perMessageDeflate: false), shardgate with compression on
# accepts, imposing no context takeover. The CLI must then read compressed hello-ok, answers
# and streamed events, and send compressed requests, with the same output as without.
# A second shardgate (compression on, threshold 0: every message compressed) serves these.
# Sourced by run.sh, which defines openclaw/check/check_text, URL, TOKEN, CALL_TIMEOUT_MS.

Z_DIR="$WORK/deflate-gateway"
mkdir -p "$Z_DIR/state"
printf '{ network: { websocket: { compression: true, compressionThreshold: 0 } } }\n' >"$Z_DIR/config.json5"
"$SHARDGATE_BIN" serve --port 0 --token "$TOKEN" --state-dir "$Z_DIR/state" \
  --config "$Z_DIR/config.json5" >"$Z_DIR/stdout" 2>"$Z_DIR/stderr" </dev/null &
Z_PID=$!
INTEROP_BG_PIDS+=("$Z_PID")
Z_URL=""
for _ in $(seq 1 200); do
  Z_LINE="$(grep -m1 -E '^shardgate ready .*listen=' "$Z_DIR/stdout" 2>/dev/null || true)"
  [[ -n "$Z_LINE" ]] && { Z_URL="ws://127.0.0.1:$(sed -E 's/.*listen=[^ ]*:([0-9]+).*/\1/' <<<"$Z_LINE")"; break; }
  kill -0 "$Z_PID" 2>/dev/null || break
  sleep 0.1
done
if [[ -z "$Z_URL" ]]; then
  log "deflate gateway did not start:"; cat "$Z_DIR/stdout" "$Z_DIR/stderr" >&2 || true
  interop_pass_fail deflate-gateway-start no
else
  Z_COMMON=(--url "$Z_URL" --token "$TOKEN" --json --timeout "$CALL_TIMEOUT_MS")

  openclaw deflate-health gateway call health "${Z_COMMON[@]}"
  check deflate-health 0 '
    if (!isObj(out)) return fail("payload is not an object");
    if (out.ok !== true) fail("payload.ok is not true");
    if (typeof out.ts !== "number") fail("payload.ts is not a number");
  ' || true

  # A streamed run: the agent events before the final answer come compressed too.
  openclaw deflate-agent gateway call agent --expect-final \
    --params "{\"message\":\"compressed hello\",\"idempotencyKey\":\"z1$KEY_SUFFIX\"}" "${Z_COMMON[@]}"
  check deflate-agent 0 '
    if (!isObj(out)) return fail("final payload is not an object");
    if (out.status !== "ok") fail(`final status is ${JSON.stringify(out.status)}, want "ok"`);
  ' || true

  # What a person reads: the same text as against a gateway without compression.
  openclaw deflate-status-text gateway call status --url "$Z_URL" --token "$TOKEN" --timeout "$CALL_TIMEOUT_MS"
  check_text deflate-status-text 0 '
    has("Gateway call: status");
    has("\"sessions\"");
  ' || true

  # The extension was really agreed with the CLI (not silently declined).
  Z_AGREED=no
  grep -q 'hello-ok.*deflate.*true' "$Z_DIR/stderr" && ! grep -q 'hello-ok.*deflate.*false' "$Z_DIR/stderr" && Z_AGREED=yes
  interop_pass_fail deflate-negotiated-with-cli "$Z_AGREED"
  [[ "$Z_AGREED" == yes ]] || { log "deflate gateway log:"; grep hello-ok "$Z_DIR/stderr" >&2 || true; }

  interop_bg_stop "$Z_PID"
fi
