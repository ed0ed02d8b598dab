#!/usr/bin/env bash
# A short run of every fuzz target: each decoder that reads bytes from the
# network. Go runs one fuzz target per invocation, so they run one after
# another. FUZZTIME is the time per target (default 8s: under two minutes for
# the nine). A crash fails the run; go test writes the crashing input to the
# package's testdata/fuzz/<Target>/, where it stays as a regression test once
# the bug is fixed.
set -euo pipefail
cd "$(dirname "$0")/.."

fuzztime=${FUZZTIME:-8s}
targets=(
  "./mcp/ FuzzDecodeFrame"
  "./mcp/ FuzzStreamConnRead"
  "./mcp/ FuzzDecodeState"
  "./discovery/ FuzzOpenCard"
  "./discovery/ FuzzCardContents"
  "./tasks/ FuzzParse"
  "./tasks/ FuzzDecodeMeta"
  "./node/ FuzzRelayFrames"
  "./peer/ FuzzDecodeChain"
)
log=$(mktemp)
trap 'rm -f "$log"' EXIT
start=$SECONDS
for t in "${targets[@]}"; do
  read -r pkg name <<<"$t"
  echo "fuzz $name ($pkg, $fuzztime)"
  if ! go test -run XXX -fuzz "^${name}\$" -fuzztime "$fuzztime" -fuzzminimizetime 2s "$pkg" >"$log" 2>&1; then
    cat "$log"
    echo "fuzz $name failed: the failing input is in ${pkg}testdata/fuzz/$name/" >&2
    exit 1
  fi
  tail -n 3 "$log"
done
echo "fuzzing done in $((SECONDS - start))s"
