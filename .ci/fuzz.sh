#!/usr/bin/env bash
# A short run of every fuzz target: each decoder that reads bytes from the
# network. Go runs one fuzz target per invocation, so they run one after
# another. FUZZTIME is the time per target (default 8s: under two minutes for
# the eleven). A crash fails the run; go test writes the crashing input to the
# package's testdata/fuzz/<Target>/, where it stays as a regression test once
# the bug is fixed.
#
# Go 1.26's fuzz coordinator can fail a target at the end of a duration
# -fuzztime with a bare "context deadline exceeded" and no failing input: it
# applies the duration as a context deadline and, when the deadline fires,
# may read the parent context's error before its child's is set
# (internal/fuzz CoordinateFuzzing; go.dev/issue/75804, fixed in Go 1.27).
# A count (-fuzztime Nx) sets no deadline, so the race cannot happen; a
# longer -test.timeout does not help (it is not involved). So a target that
# fails without writing an input is run again once with a count budget (the
# executions its timed run reached), and whatever that run does decides: a
# failure of any kind fails the script. Nothing passes on a warning.
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
  "./tasks/tracker/ FuzzRelayFrames"
  "./peer/trust/ FuzzRelayTrust"
  "./peer/delegation/ FuzzDecodeChain"
  "./node/ FuzzServedSession"
)
log=$(mktemp)
trap 'rm -f "$log"' EXIT

# inputs lists the saved inputs of a target, one per line.
inputs() { ls "${1}testdata/fuzz/$2" 2>/dev/null || true; }

# fuzz_once runs a target for a budget (a duration, or a count Nx); it
# prints "ok", "crash" or "race".
fuzz_once() {
  local pkg=$1 name=$2 budget=$3 before
  before=$(inputs "$pkg" "$name")
  if go test -run XXX -fuzz "^${name}\$" -fuzztime "$budget" -fuzzminimizetime 2s "$pkg" >"$log" 2>&1; then
    echo ok
  elif [[ "$(inputs "$pkg" "$name")" != "$before" ]] || grep -q 'Failing input written to' "$log"; then
    echo crash
  elif grep -q 'context deadline exceeded' "$log"; then
    echo race
  else
    echo crash # a build or test failure: not the race, so it counts
  fi
}

# execs prints how many inputs the last run tried (at least 1000).
execs() {
  local n
  n=$(grep -o 'execs: [0-9]*' "$log" | tail -n 1 | grep -o '[0-9]*$' || true)
  echo $((${n:-0} > 1000 ? ${n:-0} : 1000))
}

start=$SECONDS
for t in "${targets[@]}"; do
  read -r pkg name <<<"$t"
  echo "fuzz $name ($pkg, $fuzztime)"
  outcome=$(fuzz_once "$pkg" "$name" "$fuzztime")
  if [[ $outcome == race ]]; then
    count="$(execs)x"
    echo "  stopped with \"context deadline exceeded\" and no failing input (go.dev/issue/75804); running it again for $count, which sets no deadline"
    outcome=$(fuzz_once "$pkg" "$name" "$count")
    [[ $outcome == race ]] && outcome=crash # no deadline to race: a real failure
  fi
  case $outcome in
  ok) tail -n 3 "$log" ;;
  crash)
    cat "$log"
    if [[ -n "$(inputs "$pkg" "$name")" ]] && grep -q 'Failing input written to' "$log"; then
      echo "fuzz $name failed: the failing input is in ${pkg}testdata/fuzz/$name/" >&2
    else
      echo "fuzz $name failed without writing an input: see the log above" >&2
    fi
    exit 1
    ;;
  esac
done
echo "fuzzing done in $((SECONDS - start))s"
