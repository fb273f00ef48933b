# Cases: agents and chat as a person uses them: `openclaw agent`, `gateway call` of chat.send /
# chat.history / sessions.list (the TUI's calls), `openclaw sessions delete`, and the TUI itself
# (`openclaw tui` under tmux: five messages, each must be echoed and end "idle").
# Sourced by run.sh, which defines openclaw/openclaw_remote/check/check_text, URL, TOKEN, COMMON.

TUI_KEY="agent:main:interop-chat$KEY_SUFFIX"
export TUI_KEY

# `openclaw agent` (gateway from openclaw.json): prints the agent's reply, as with OpenClaw.
openclaw_remote agent-message agent --message "hello interop agent" --agent main
check_text agent-message 0 '
  has("hello interop agent");
  lacks("Error");
' || true

openclaw_remote agent-message-json agent --message "hello json agent" --agent main --json
check agent-message-json 0 '
  if (out.status !== "ok") fail(`status ${JSON.stringify(out.status)}, want "ok"`);
  if (out.summary !== "completed") fail(`summary ${JSON.stringify(out.summary)}, want "completed"`);
  const text = out.result?.payloads?.[0]?.text;
  if (text !== "hello json agent") fail(`result.payloads[0].text ${JSON.stringify(text)}, want the echo`);
  if (typeof out.result?.meta?.durationMs !== "number") fail("result.meta.durationMs is not a number");
' || true

# The first answer of `agent` names the session, in OpenClaw`s key order.
openclaw agent-accepted-session gateway call agent --params "{\"message\":\"hi\",\"idempotencyKey\":\"acc-$K1\",\"sessionKey\":\"interop-acc\"}" "${COMMON[@]}"
check agent-accepted-session 0 '
  const want = ["runId", "sessionKey", "agentId", "status", "acceptedAt"];
  if (JSON.stringify(Object.keys(out)) !== JSON.stringify(want)) fail(`keys ${JSON.stringify(Object.keys(out))}, want ${JSON.stringify(want)} (OpenClaw)`);
  if (out.status !== "accepted") fail(`status ${JSON.stringify(out.status)}, want "accepted"`);
  if (out.sessionKey !== "agent:main:interop-acc") fail(`sessionKey ${JSON.stringify(out.sessionKey)}, want the canonical "agent:main:interop-acc"`);
  if (out.agentId !== "main") fail(`agentId ${JSON.stringify(out.agentId)}, want "main"`);
' || true

# chat.send as the TUI sends it, then the history the TUI loads.
openclaw chat-send gateway call chat.send --params "{\"sessionKey\":\"$TUI_KEY\",\"message\":\"hello chat\",\"deliver\":false,\"idempotencyKey\":\"chat-$K1\"}" "${COMMON[@]}"
check chat-send 0 '
  if (out.runId !== "chat-" + process.env.K1) fail(`runId ${JSON.stringify(out.runId)}, want the idempotencyKey`);
  if (out.status !== "started") fail(`status ${JSON.stringify(out.status)}, want "started" (OpenClaw)`);
' || true

openclaw chat-history gateway call chat.history --params "{\"sessionKey\":\"$TUI_KEY\",\"limit\":200}" "${COMMON[@]}"
check chat-history 0 '
  if (!Array.isArray(out.messages)) return fail("messages is not an array");
  if (out.sessionKey !== process.env.TUI_KEY) fail(`sessionKey ${JSON.stringify(out.sessionKey)}`);
  if (typeof out.sessionId !== "string") fail("sessionId is not a string");
  const text = (m) => (m.content || []).map((c) => c.text).join("");
  const roles = out.messages.map((m) => m.role + ":" + text(m));
  if (!roles.includes("user:hello chat")) fail(`no user message "hello chat" in ${JSON.stringify(roles)}`);
  if (!roles.includes("assistant:hello chat")) fail(`no assistant echo in ${JSON.stringify(roles)}`);
  for (const m of out.messages) if (typeof m.timestamp !== "number") fail("a message without a numeric timestamp");
' || true

# The TUI asks for one row of its agent: a row with the key and sessionId, and the defaults.
openclaw sessions-list gateway call sessions.list --params '{"agentId":"main","limit":200}' "${COMMON[@]}"
check sessions-list 0 '
  if (!Array.isArray(out.sessions)) return fail("sessions is not an array");
  if (typeof out.count !== "number") fail("count is not a number");
  const row = out.sessions.find((s) => s.key === process.env.TUI_KEY);
  if (!row) return fail(`no row for ${process.env.TUI_KEY}`);
  if (typeof row.sessionId !== "string") fail("row.sessionId is not a string");
  if (row.agentId !== "main") fail(`row.agentId ${JSON.stringify(row.agentId)}`);
  if (typeof row.updatedAt !== "number") fail("row.updatedAt is not a number");
' || true

# sessions.describe: the TUI calls it after every run; an unknown key is {session:null}.
openclaw sessions-describe gateway call sessions.describe --params "{\"key\":\"$TUI_KEY\"}" "${COMMON[@]}"
check sessions-describe 0 '
  const s = out.session;
  if (!isObj(s)) return fail("session is not an object");
  if (s.key !== process.env.TUI_KEY) fail(`session.key ${JSON.stringify(s.key)}`);
  if (typeof s.sessionId !== "string") fail("session.sessionId is not a string");
  if (s.archived !== false) fail("session.archived is not false");
  if (s.isMain !== false) fail("session.isMain is not false");
' || true
openclaw sessions-describe-none gateway call sessions.describe --params '{"key":"agent:main:no-such-session"}' "${COMMON[@]}"
check sessions-describe-none 0 '
  if (out.session !== null) fail(`session ${JSON.stringify(out.session)}, want null (OpenClaw)`);
' || true

# `openclaw sessions delete` (gateway from openclaw.json), and a key that is not there.
DEL_KEY="agent:main:interop-del$KEY_SUFFIX"
openclaw del-prepare gateway call chat.send --params "{\"sessionKey\":\"$DEL_KEY\",\"message\":\"bye\",\"idempotencyKey\":\"del-$K1\"}" "${COMMON[@]}"
openclaw_remote sessions-delete sessions delete "$DEL_KEY" --yes
check_text sessions-delete 0 "has('Deleted session $DEL_KEY.');" || true
openclaw_remote sessions-delete-none sessions delete agent:main:no-such-session --yes
check_text sessions-delete-none 1 '
  if (!err.includes("Session not found")) fail(`stderr lacks "Session not found": ${err.slice(0, 200)}`);
' || true

# `openclaw sessions archive`: sessions.patch {archived:true} with the row's sessionId.
ARC_KEY="agent:main:interop-arc$KEY_SUFFIX"
openclaw arc-prepare gateway call chat.send --params "{\"sessionKey\":\"$ARC_KEY\",\"message\":\"keep\",\"idempotencyKey\":\"arc-$K1\"}" "${COMMON[@]}"
openclaw_remote sessions-archive sessions archive "$ARC_KEY"
check_text sessions-archive 0 "has('Archived session $ARC_KEY.');" || true
openclaw_remote sessions-archive-again sessions archive "$ARC_KEY"
check_text sessions-archive-again 0 "has('Session $ARC_KEY is already archived.');" || true

# `openclaw sessions compact --max-lines`: keeps the last N transcript lines.
openclaw_remote sessions-compact sessions compact "$TUI_KEY" --max-lines 1 --json
check sessions-compact 0 '
  if (out.ok !== true) fail(`ok ${JSON.stringify(out.ok)}`);
  if (out.key !== process.env.TUI_KEY) fail(`key ${JSON.stringify(out.key)}`);
  if (typeof out.compacted !== "boolean") fail("compacted is not a boolean");
  if (typeof out.kept !== "number") fail("kept is not a number");
' || true

# ---------------------------------------------------------------- openclaw tui
# The real TUI under tmux: send a message, wait until the echo shows (the user line and the
# reply line) and the status line says idle, five times. OpenClaw's TUI registers a run from
# the chat.send answer; if the run's events come first it never leaves "waiting".
tui_case() {
  local name=tui home="$WORK/home-tui" session="shardgate-interop-tui-$$"
  local out="$WORK/$name.out" tries=5 t screen
  mkdir -p "$home"
  : >"$out"
  if ! command -v tmux >/dev/null; then
    echo "tmux not installed" >"$WORK/$name.err"; echo 1 >"$WORK/$name.rc"; return
  fi
  tmux new-session -d -s "$session" -x 120 -y 50 \
    "env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=$home TMPDIR=$home LANG=C.UTF-8 TERM=xterm-256color NO_COLOR=1 \
     '$NODE' '$OPENCLAW_MJS' tui --url '$URL' --token '$TOKEN' 2>'$WORK/$name.err'"
  local deadline=$((SECONDS + 60))
  until tmux capture-pane -p -t "$session" 2>/dev/null | grep -q "gateway connected"; do
    if (( SECONDS >= deadline )); then echo "not connected within 60s" >>"$out"; break; fi
    sleep 0.2
  done
  for t in $(seq 1 "$tries"); do
    local msg="tui says $t $RANDOM" state="still waiting"
    tmux send-keys -t "$session" "$msg" Enter
    deadline=$((SECONDS + 20))
    while (( SECONDS < deadline )); do
      screen="$(tmux capture-pane -p -t "$session")"
      # Echoed: the user line and the reply line; idle: the status line ends "idle".
      if [[ $(grep -cxF "$msg" <<<"$screen") -ge 2 ]] && grep -Eq '(^|[ |])idle *$' <<<"$screen"; then
        state="idle"
        break
      fi
      sleep 0.2
    done
    printf '%s\n' "$screen" >"$WORK/$name-$t.screen"
    echo "try $t: $state" >>"$out"
  done
  { echo "--- last screen"; tmux capture-pane -p -t "$session"; } >>"$out"
  tmux kill-session -t "$session" 2>/dev/null || true
  echo 0 >"$WORK/$name.rc"
}
tui_case
check_text tui 0 '
  for (let t = 1; t <= 5; t++) has(`try ${t}: idle`);
  const last = text.split("--- last screen")[1] || "";
  if (!/tui says 5 /.test(last)) fail("the last screen lacks the fifth message");
  if (/unknown method/.test(last)) fail(`the TUI shows an error: ${(last.match(/.*unknown method.*/) || [""])[0].trim()}`);
  if (/agent is busy/.test(last)) fail("the TUI says the agent is busy");
' || true
