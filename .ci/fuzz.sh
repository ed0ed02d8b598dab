#!/usr/bin/env bash
# A short run of every fuzz target: each decoder that reads bytes from the
# network. Go runs one fuzz target per invocation, so they run one after
# another. FUZZTIME is the time per target (default 8s: under two minutes for
# the ten). A crash fails the run; go test writes the crashing input to the
# package's testdata/fuzz/<Target>/, where it stays as a regression test once
# the bug is fixed.
#
# Go 1.26's fuzz coordinator can fail a target at the end of -fuzztime with a
# bare "context deadline exceeded" and no failing input (a race between the
# deadline and its child context: go.dev/issue/75804, fixed in Go 1.27). That
# is not a finding, so a failure counts only if go test wrote a failing input;
# a failure without one is run again once, and if it recurs it is reported as
# the known race, not as a crash.
set -euo pipefail
cd "$(dirname "$0")/.."

fuzztime=${FUZZTIME:-8s}
targets=(
  "./internal/sdkcompat/ FuzzDecodeFrame"
  "./mcp/transport/ FuzzStreamConnRead"
  "./mcp/ask/ FuzzDecodeState"
  "./discovery/ FuzzOpenCard"
  "./discovery/ FuzzCardContents"
  "./tasks/ FuzzParse"
  "./tasks/ FuzzDecodeMeta"
  "./mcp/relay/ FuzzRelayFrames"
  "./peer/trust/ FuzzRelayTrust"
  "./peer/delegation/ FuzzDecodeChain"
)
log=$(mktemp)
trap 'rm -f "$log"' EXIT

# inputs lists the saved inputs of a target, one per line.
inputs() { ls "${1}testdata/fuzz/$2" 2>/dev/null || true; }

# fuzz_once runs a target; it prints "ok", "crash" or "race".
fuzz_once() {
  local pkg=$1 name=$2 before
  before=$(inputs "$pkg" "$name")
  if go test -run XXX -fuzz "^${name}\$" -fuzztime "$fuzztime" -fuzzminimizetime 2s "$pkg" >"$log" 2>&1; then
    echo ok
  elif [[ "$(inputs "$pkg" "$name")" != "$before" ]] || grep -q 'Failing input written to' "$log"; then
    echo crash
  elif grep -q 'context deadline exceeded' "$log"; then
    echo race
  else
    echo crash # a build or test failure: not the race, so it counts
  fi
}

start=$SECONDS
for t in "${targets[@]}"; do
  read -r pkg name <<<"$t"
  echo "fuzz $name ($pkg, $fuzztime)"
  outcome=$(fuzz_once "$pkg" "$name")
  if [[ $outcome == race ]]; then
    echo "  stopped with \"context deadline exceeded\" and no failing input (go.dev/issue/75804); running it again"
    outcome=$(fuzz_once "$pkg" "$name")
  fi
  case $outcome in
  ok) tail -n 3 "$log" ;;
  race) echo "  WARNING: $name hit go.dev/issue/75804 twice; no failing input was found" ;;
  crash)
    cat "$log"
    echo "fuzz $name failed: the failing input is in ${pkg}testdata/fuzz/$name/" >&2
    exit 1
    ;;
  esac
done
echo "fuzzing done in $((SECONDS - start))s"
