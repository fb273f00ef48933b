#!/usr/bin/env bash
# Install Autobahn|Testsuite (wstest, Python 2.7 only) into a dedicated
# virtualenv. Idempotent: skips when the venv already matches requirements.txt.
#
# Env:
#   SHARDGATE_AUTOBAHN_VENV    venv dir (default <repo>/.cache/autobahn-venv)
#   SHARDGATE_AUTOBAHN_PYTHON  CPython 2.7 interpreter (default: pyenv 2.7.18,
#                              then python2.7 on PATH)
# Prints nothing on stdout but the venv path on success (for callers).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
VENV="${SHARDGATE_AUTOBAHN_VENV:-$REPO/.cache/autobahn-venv}"
REQS="$HERE/requirements.txt"
BOOT_REQS="$HERE/bootstrap-requirements.txt"
MARKER="$VENV/.shardgate-autobahn-installed"

log() { echo "autobahn-install: $*" >&2; }

find_python() {
    local cands=()
    [[ -n "${SHARDGATE_AUTOBAHN_PYTHON:-}" ]] && cands+=("$SHARDGATE_AUTOBAHN_PYTHON")
    cands+=("${PYENV_ROOT:-/root/.pyenv}/versions/2.7.18/bin/python"
            "/root/.pyenv/versions/2.7.18/bin/python")
    if command -v pyenv >/dev/null 2>&1; then
        cands+=("$(pyenv root 2>/dev/null)/versions/2.7.18/bin/python")
    fi
    command -v python2.7 >/dev/null 2>&1 && cands+=("$(command -v python2.7)")
    local p
    for p in "${cands[@]}"; do
        if [[ -x "$p" ]] && "$p" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (2, 7) else 1)' 2>/dev/null; then
            echo "$p"; return 0
        fi
    done
    return 1
}

want_hash="$(cat "$REQS" "$BOOT_REQS" | sha256sum | cut -d' ' -f1)"
if [[ -f "$MARKER" && "$(cat "$MARKER")" == "$want_hash" && -x "$VENV/bin/wstest" ]]; then
    log "already installed in $VENV"
    echo "$VENV"
    exit 0
fi

PY="$(find_python)" || {
    log "no CPython 2.7 found (set SHARDGATE_AUTOBAHN_PYTHON, or 'pyenv install 2.7.18')"
    exit 1
}
log "using $PY ($("$PY" -c 'import sys; print(sys.version.split()[0])'))"

export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 PYTHONWARNINGS=ignore

rm -rf "$VENV"
mkdir -p "$(dirname "$VENV")"
BOOT="$(mktemp -d "${TMPDIR:-/tmp}/shardgate-autobahn-boot.XXXXXX")"
trap 'rm -rf "$BOOT"' EXIT

# 1. virtualenv (pinned, py2.7-capable) into a throwaway dir, run from there.
log "bootstrapping virtualenv"
"$PY" -m pip install -q --no-warn-script-location --target "$BOOT/lib" -r "$BOOT_REQS" >&2
PYTHONPATH="$BOOT/lib" VIRTUALENV_OVERRIDE_APP_DATA="$BOOT/appdata" \
    "$PY" -m virtualenv -q --no-download --no-periodic-update -p "$PY" "$VENV" >&2

# 2. Build tooling first, then everything pinned, without dependency
#    resolution or build isolation, so nothing unpinned is ever fetched.
log "installing requirements (builds wsaccel; ~1 min)"
"$VENV/bin/python" -m pip install -q setuptools==44.0.0 wheel==0.37.1 >&2
"$VENV/bin/python" -m pip install -q --no-deps --no-build-isolation -r "$REQS" >&2
"$VENV/bin/python" -m pip check >&2
"$VENV/bin/python" -c 'import autobahn, autobahntestsuite, twisted, wsaccel' >&2
[[ -x "$VENV/bin/wstest" ]] || { log "wstest missing after install"; exit 1; }

echo "$want_hash" > "$MARKER"
log "installed in $VENV"
echo "$VENV"
