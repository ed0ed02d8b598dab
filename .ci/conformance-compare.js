// Compares two runs of the MCP conformance suite's server scenarios (the
// folders written by `conformance server -o DIR`), check by check:
//
//   node conformance-compare.js LABEL MODE EXPECTED DIRECT_DIR MESH_DIR
//
// MODE "all-pass": every check must pass both ways, the same.
// MODE "same": every scenario must have the same outcome, check by check, as
// directly (for servers that implement few of the suite's fixtures).
// EXPECTED: the number of checks the suite must run directly and through the
// mesh (asserted, so that a suite or server that runs fewer checks fails).
// One scenario is about the HTTP endpoint, not the server:
// dns-rebinding-protection checks the Host/Origin validation of the endpoint
// the suite talks to, which through the mesh is the gateway's (it always
// validates), while a server run directly over its own HTTP may not (the
// TypeScript reference server does not). There the mesh must pass every
// check, whatever the direct outcome.
// Prints a table and one summary line "LABEL: P same, F not the same";
// exits 1 on any difference.
const fs = require('fs'), path = require('path');
const [label, mode, expectedArg, baseDir, meshDir] = process.argv.slice(2);
const expected = Number(expectedArg);
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
const base = load(baseDir), mesh = load(meshDir);
const endpointScenarios = new Set(['dns-rebinding-protection']);
const summary = (checks) => {
  if (!checks) return 'MISSING';
  const n = {};
  for (const s of checks.values()) n[s] = (n[s] || 0) + 1;
  return Object.entries(n).map(([s, k]) => `${k} ${s}`).join(', ');
};
let bad = 0, same = 0;
const total = { base: 0, mesh: 0 };
const rows = [];
for (const name of [...new Set([...base.keys(), ...mesh.keys()])].sort()) {
  const b = base.get(name), m = mesh.get(name);
  let equal = !!b && !!m && b.size === m.size;
  const diffs = [], failed = [];
  for (const [id, s] of (b || new Map())) {
    const ms = m ? m.get(id) : undefined;
    if (endpointScenarios.has(name) && ms === 'SUCCESS') continue;
    if (ms !== s) { equal = false; diffs.push(`${id}: direct ${s}, mesh ${ms || 'MISSING'}`); }
    if (s === 'FAILURE' && !endpointScenarios.has(name)) failed.push(`direct ${id}`);
  }
  for (const [id, s] of (m || new Map())) {
    if (!b || !b.has(id)) { equal = false; diffs.push(`${id}: direct MISSING, mesh ${s}`); }
    if (s === 'FAILURE') failed.push(`mesh ${id}`);
  }
  total.base += b ? b.size : 0; total.mesh += m ? m.size : 0;
  const ok = equal && (mode !== 'all-pass' || failed.length === 0);
  if (ok) same += b.size; else bad++;
  rows.push([name, summary(b), summary(m), ok ? 'same' : (equal ? 'FAILED: ' + failed.join(', ') : 'DIFFERENT: ' + diffs.join('; '))]);
}
const w = [0, 1, 2].map(i => Math.max(...rows.map(r => r[i].length), ['scenario', 'direct', 'two hops'][i].length));
const line = (r) => r.map((c, i) => i < 3 ? c.padEnd(w[i]) : c).join(' | ');
console.log(`\n${label}`);
console.log(line(['scenario', 'direct', 'two hops', 'outcome']));
console.log(w.map(n => '-'.repeat(n)).join('-|-') + '-|--------');
for (const r of rows) console.log(line(r));
console.log(`${rows.length} scenarios; checks: ${total.base} direct, ${total.mesh} through two hops (expected ${expected}); ${bad} scenarios not the same${mode === 'all-pass' ? ' or failed' : ''}`);
let countOK = true;
if (total.base !== expected || total.mesh !== expected) {
  countOK = false;
  console.log(`${label}: the suite ran ${total.base} checks directly and ${total.mesh} through the mesh, expected ${expected} both ways`);
}
console.log(`${label}: ${same} same, ${bad} not the same`);
process.exit(bad === 0 && countOK && rows.length > 0 ? 0 : 1);
