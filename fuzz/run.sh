#!/usr/bin/env bash
# Runs one fuzz target under libFuzzer (coverage-guided, nightly), on the committed corpus.
#   fuzz/run.sh TARGET [SECONDS] [extra libFuzzer flags…]
# New inputs libFuzzer finds go to target/fuzz-corpus/TARGET (not committed: copy the
# interesting ones into fuzz/corpus/TARGET); a crash is saved under
# fuzz/libfuzzer/artifacts/TARGET/ and replays with
#   cargo +nightly fuzz run --fuzz-dir fuzz/libfuzzer TARGET FILE
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
target=${1:?usage: fuzz/run.sh TARGET [SECONDS] [libFuzzer flags]}
secs=${2:-60}
shift $(( $# >= 2 ? 2 : 1 ))
new="$here/../target/fuzz-corpus/$target"
mkdir -p "$new"
exec cargo +nightly fuzz run --fuzz-dir "$here/libfuzzer" "$target" \
  "$new" "$here/corpus/$target" -- -max_total_time="$secs" -rss_limit_mb=4096 "$@"
