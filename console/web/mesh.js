// Mesh: the peers as a graph around this node, each peer's card, and a
// search over the mesh's capabilities.
import { useState } from './vendor/hooks.mjs';
import { html, post, peerLabel, shortID, fmtDuration, hasTime, fmtTime, plural } from './util.js';

const W = 640, H = 450, CX = W / 2, CY = 215; // labels hang below the nodes

// layout spreads the peers evenly around this node, connected ones close,
// the others farther out (the list comes connected first).
function layout(peers) {
  const pos = {};
  const n = peers.length;
  const from = n === 1 ? 0 : -Math.PI / 2 + Math.PI / n; // one: to the right; two: left and right
  peers.forEach((p, i) => {
    const a = from + (2 * Math.PI * i) / n;
    const r = p.state === 'connected' ? 120 : 175;
    pos[p.id] = { x: CX + r * Math.cos(a), y: CY + r * Math.sin(a) };
  });
  return pos;
}

function stateWords(p) {
  if (p.state === 'connected') return p.relayed ? 'connected through a relay' : 'connected directly';
  if (p.state === 'banned') return 'banned';
  return 'known, not connected';
}

const maxDrawn = 40; // peers drawn in the graph; the table lists them all

// clip keeps a label short: names come from other nodes' cards.
const clip = (s) => (s.length > 20 ? s.slice(0, 19) + '…' : s);

function Graph({ self, peers: all, selected, select }) {
  const peers = all.slice(0, maxDrawn);
  const pos = layout(peers);
  const label = (p) => `${peerLabel(p)}, ${stateWords(p)}${p.latencyMs ? ', ' + fmtDuration(p.latencyMs) : ''}`;
  return html`<figure class="graph">
    <svg viewBox=${`0 0 ${W} ${H}`} role="group" aria-labelledby="graph-title">
      <title id="graph-title">Peers of this node: ${all.length}</title>
      ${peers.map((p) => {
        const q = pos[p.id];
        return html`<line x1=${CX} y1=${CY} x2=${q.x} y2=${q.y} class=${'edge edge-' + p.state + (p.relayed ? ' edge-relayed' : '')} />`;
      })}
      <g class="node node-self" transform=${`translate(${CX},${CY})`}>
        <circle r="26" />
        <text y="5" class="glyph" aria-hidden="true">◈</text>
        <text y="44">${self ? peerLabel(self) : 'this node'} (here)</text>
      </g>
      ${peers.map((p) => {
        const q = pos[p.id];
        const on = () => select(p.id);
        return html`<g class=${'node node-' + p.state + (selected === p.id ? ' selected' : '')} transform=${`translate(${q.x},${q.y})`}
            role="button" tabindex="0" data-peer=${p.id} aria-label=${label(p)} aria-pressed=${selected === p.id ? 'true' : 'false'}
            onClick=${on} onKeyDown=${(e) => { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); on(); } }}>
          <circle r="20" />
          ${p.state === 'banned' ? html`<text y="5" class="glyph" aria-hidden="true">✕</text>` : null}
          <text y="37" class="name">${clip(peerLabel(p))}</text>
        </g>
        <text x=${q.x} y=${q.y + 53} class="sub" aria-hidden="true">${p.latencyMs ? fmtDuration(p.latencyMs) : shortID(p.id)}</text>`;
      })}
    </svg>
    ${all.length > peers.length ? html`<p class="small">${all.length - peers.length} more peers in the table below.</p>` : null}
    <figcaption class="legend">
      <span><svg width="28" height="8" aria-hidden="true"><line x1="0" y1="4" x2="28" y2="4" class="edge edge-connected" /></svg> connected directly</span>
      <span><svg width="28" height="8" aria-hidden="true"><line x1="0" y1="4" x2="28" y2="4" class="edge edge-connected edge-relayed" /></svg> through a relay</span>
      <span><svg width="28" height="8" aria-hidden="true"><line x1="0" y1="4" x2="28" y2="4" class="edge edge-known" /></svg> known (DHT, earlier connections), not connected</span>
      <span><svg width="28" height="8" aria-hidden="true"><line x1="0" y1="4" x2="28" y2="4" class="edge edge-banned" /></svg> banned</span>
    </figcaption>
  </figure>`;
}

function PeerCard({ p }) {
  if (!p) return html`<section class="card" aria-labelledby="peer-title"><h2 id="peer-title">Peer</h2><p>Choose a peer in the graph or the table.</p></section>`;
  return html`<section class="card" aria-labelledby="peer-title">
    <h2 id="peer-title">${peerLabel(p)}</h2>
    ${p.description ? html`<p>${p.description}</p>` : null}
    <dl class="facts">
      <dt>Peer ID</dt><dd><code class="id">${p.id}</code></dd>
      <dt>State</dt><dd>${stateWords(p)}${p.state === 'banned' && hasTime(p.bannedUntil) ? ' until ' + fmtTime(p.bannedUntil) : ''}</dd>
      ${p.latencyMs ? html`<dt>Latency</dt><dd>${fmtDuration(p.latencyMs)}</dd>` : null}
      ${p.agent ? html`<dt>Agent</dt><dd>${p.agent}</dd>` : null}
      ${p.tags && p.tags.length ? html`<dt>Tags</dt><dd>${p.tags.join(', ')}</dd>` : null}
      <dt>Addresses</dt><dd>${p.addrs && p.addrs.length ? html`<ul class="plain">${p.addrs.map((a) => html`<li><code>${a}</code></li>`)}</ul>` : 'none known'}</dd>
    </dl>
    <h3>What it shares</h3>
    ${p.shares && p.shares.length
      ? p.shares.map((s) => html`<div class="share"><h4>${s.name}</h4>
          ${s.tools && s.tools.length
            ? html`<ul class="tools">${s.tools.map((t) => html`<li><a href=${`#/try?peer=${encodeURIComponent(p.id)}&tool=${encodeURIComponent(s.name + '/' + t.name)}`}><code>${t.name}</code></a>${t.description ? ' — ' + t.description : ''}</li>`)}</ul>`
            : html`<p>No tools listed.</p>`}
          ${s.resources || s.prompts ? html`<p>${s.resources || 0} resources, ${s.prompts || 0} prompts</p>` : null}</div>`)
      : html`<p>${p.cardError ? 'No card: ' + p.cardError : 'No card fetched yet.'}</p>`}
  </section>`;
}

function Search() {
  const [q, setQ] = useState('');
  const [res, setRes] = useState(null);
  const [busy, setBusy] = useState(false);
  const submit = async (e) => {
    e.preventDefault();
    setBusy(true);
    try {
      setRes(await post('/search', { query: q }));
    } catch (err) {
      setRes({ error: err.message });
    }
    setBusy(false);
  };
  return html`<section class="card" aria-labelledby="search-title">
    <h2 id="search-title">Search capabilities</h2>
    <form onSubmit=${submit} class="row">
      <label for="search-q">Words or tags (<code>tag:NAME</code>)</label>
      <input id="search-q" type="search" value=${q} onInput=${(e) => setQ(e.target.value)} placeholder="translate tag:docs" />
      <button type="submit" disabled=${busy}>${busy ? 'Searching…' : 'Search'}</button>
    </form>
    <div aria-live="polite">
      ${res && res.error ? html`<p class="bad" role="alert">${res.error}</p>` : null}
      ${res && res.hits
        ? res.hits.length
          ? html`<p>${res.hits.length} found:</p><ul class="hits">${res.hits.map((hit) => {
              const [peer, server, tool] = hit.ref.split('/');
              return html`<li><a href=${`#/try?peer=${encodeURIComponent(peer)}&tool=${encodeURIComponent(server + '/' + tool)}`}><code>${server}/${tool}</code></a>${' '}on <strong>${hit.peer}</strong>${hit.desc ? ' — ' + hit.desc : ''}${hit.tags && hit.tags.length ? html` <span class="tags">${hit.tags.map((t) => html`<span class="tag">${t}</span>`)}</span>` : null}</li>`;
            })}</ul>`
          : html`<p>Nothing in the mesh matches.</p>`
        : null}
    </div>
  </section>`;
}

export function MeshView({ feed }) {
  const [selected, setSelected] = useState(null);
  const peers = feed.peers;
  const count = (s) => peers.filter((p) => p.state === s).length;
  const sel = peers.find((p) => p.id === selected);
  return html`
    <h1 tabindex="-1">Mesh</h1>
    <p class="lead">${peers.length} peers: ${count('connected')} connected, ${count('known')} known but not connected, ${count('banned')} banned.</p>
    <div class="split">
      <div>
        <${Graph} self=${feed.self} peers=${peers} selected=${selected} select=${setSelected} />
      </div>
      <${PeerCard} p=${sel} />
    </div>
    <${Search} />
    <section aria-labelledby="peers-title">
      <h2 id="peers-title">Peers</h2>
      <table class="grid">
        <caption class="sr-only">Every peer this node knows, as in the graph</caption>
        <thead><tr><th scope="col">Name</th><th scope="col">Peer ID</th><th scope="col">State</th><th scope="col">Latency</th><th scope="col">Shares</th></tr></thead>
        <tbody>
          ${peers.map((p) => html`<tr class=${selected === p.id ? 'selected' : ''}>
            <th scope="row"><button class="link" onClick=${() => setSelected(p.id)}>${peerLabel(p)}</button></th>
            <td><code title=${p.id}>${shortID(p.id)}</code></td>
            <td>${stateWords(p)}</td>
            <td>${p.latencyMs ? fmtDuration(p.latencyMs) : ''}</td>
            <td>${(p.shares || []).map((s) => `${s.name} (${plural((s.tools || []).length, 'tool')})`).join(', ')}</td>
          </tr>`)}
        </tbody>
      </table>
    </section>`;
}
