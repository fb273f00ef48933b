# Cases: two real TUIs (`openclaw tui`) on the same session under tmux. OpenClaw sends a
# run's `chat`/`agent` events to the other operator clients too, and the TUI shows those of
# its selected session (tui handleChatEvent): a message typed in TUI A is answered on TUI B's
# screen as well. shardgate sends them to the session's watchers (clients that opened its
# history or sent to it).
# Sourced by run.sh, which defines check_text, NODE, OPENCLAW_MJS, URL, TOKEN, WORK.

tui_watch_case() {
  local name=tui-watch out="$WORK/tui-watch.out" t s screen deadline state
  : >"$out"
  if ! command -v tmux >/dev/null; then
    echo "tmux not installed" >"$WORK/$name.err"; echo 1 >"$WORK/$name.rc"; return
  fi
  : >"$WORK/$name.err"
  for t in a b; do
    s="shardgate-interop-tuiw-$t-$$"
    mkdir -p "$WORK/home-tuiw-$t"
    tmux new-session -d -s "$s" -x 120 -y 50 \
      "env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=$WORK/home-tuiw-$t TMPDIR=$WORK/home-tuiw-$t LANG=C.UTF-8 TERM=xterm-256color NO_COLOR=1 \
       '$NODE' '$OPENCLAW_MJS' tui --url '$URL' --token '$TOKEN' 2>>'$WORK/$name.err'"
    deadline=$((SECONDS + 60))
    until tmux capture-pane -p -t "$s" 2>/dev/null | grep -q "gateway connected"; do
      if (( SECONDS >= deadline )); then echo "tui $t not connected within 60s" >>"$out"; break; fi
      sleep 0.2
    done
  done
  local a="shardgate-interop-tuiw-a-$$" b="shardgate-interop-tuiw-b-$$"
  for t in 1 2; do
    local msg="from tui a $t $RANDOM"
    tmux send-keys -t "$a" "$msg" Enter
    state="a: not answered"
    deadline=$((SECONDS + 20))
    while (( SECONDS < deadline )); do
      if [[ $(tmux capture-pane -p -t "$a" | grep -acxF "$msg") -ge 2 ]]; then state="a: answered"; break; fi
      sleep 0.2
    done
    echo "try $t $state" >>"$out"
    state="b: not shown"
    while (( SECONDS < deadline )); do
      screen="$(tmux capture-pane -p -t "$b")"
      if grep -aqxF "$msg" <<<"$screen" && grep -aEq '(^|[ |])idle *$' <<<"$screen"; then state="b: shown"; break; fi
      sleep 0.2
    done
    echo "try $t $state" >>"$out"
  done
  { echo "--- tui b"; tmux capture-pane -p -t "$b"; } >>"$out"
  tmux kill-session -t "$a" 2>/dev/null || true
  tmux kill-session -t "$b" 2>/dev/null || true
  echo 0 >"$WORK/$name.rc"
}
tui_watch_case
check_text tui-watch 0 '
  for (const t of [1, 2]) { has(`try ${t} a: answered`); has(`try ${t} b: shown`); }
  const b = text.split("--- tui b")[1] || "";
  if (/unknown method|agent is busy/.test(b)) fail("tui b shows an error");
' || true
