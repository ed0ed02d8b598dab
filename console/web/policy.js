// Policy: what each peer may call here, and "would this be allowed?".
import { useState } from './vendor/hooks.mjs';
import { html, post, peerLabel, shortID } from './util.js';

function Cell({ d }) {
  if (d.allowed && d.listed) return html`<td class="yes">yes</td>`;
  if (d.allowed) return html`<td class="yes">yes, hidden</td>`;
  return html`<td class="no">no</td>`;
}

function Check({ feed }) {
  const [a, setA] = useState({ peer: '', for: '', server: 'node', kind: 'tool', name: '' });
  const [answer, setAnswer] = useState(null);
  const set = (k) => (e) => setA({ ...a, [k]: e.target.value.trim() });
  const submit = async (e) => {
    e.preventDefault();
    try {
      setAnswer(await post('/policy/check', a));
    } catch (err) {
      setAnswer({ error: err.message });
    }
  };
  return html`<section class="card" aria-labelledby="check-title">
    <h2 id="check-title">Would this be allowed?</h2>
    <form onSubmit=${submit} class="form-grid">
      <label for="ck-peer">Caller (peer ID)</label>
      <input id="ck-peer" list="known-peers" required value=${a.peer} onInput=${set('peer')} /><span></span>
      <label for="ck-for">Acting for (peer ID, optional)</label>
      <input id="ck-for" list="known-peers" value=${a.for} onInput=${set('for')} aria-describedby="ck-for-hint" />
      <span id="ck-for-hint" class="hint">A call made for someone else, through a delegation.</span>
      <label for="ck-server">Server</label>
      <input id="ck-server" required value=${a.server} onInput=${set('server')} /><span></span>
      <label for="ck-kind">Kind</label>
      <select id="ck-kind" value=${a.kind} onChange=${set('kind')}><option>tool</option><option>resource</option><option>prompt</option></select><span></span>
      <label for="ck-name">Name (tool, resource URI or prompt)</label>
      <input id="ck-name" required value=${a.name} onInput=${set('name')} /><span></span>
      <span></span><button type="submit">Check</button><span></span>
    </form>
    <datalist id="known-peers">${feed.peers.map((p) => html`<option value=${p.id}>${peerLabel(p)}</option>`)}</datalist>
    <div aria-live="polite" class="answer">
      ${answer && answer.error ? html`<p class="bad" role="alert">${answer.error}</p>` : null}
      ${answer && !answer.error ? html`<p class=${answer.allowed ? 'good' : 'bad'}><strong>${answer.allowed ? 'Yes.' : 'No.'}</strong> ${answer.says}</p>` : null}
    </div>
  </section>`;
}

export function PolicyView({ feed }) {
  const pol = feed.policy;
  if (!pol) return html`<h1 tabindex="-1">Policy</h1><p>Loading…</p>`;
  const names = {};
  feed.peers.forEach((p) => (names[p.id] = peerLabel(p)));
  return html`
    <h1 tabindex="-1">Policy</h1>
    <p class="lead">${pol.open ? html`<strong class="bad">Open:</strong> every peer that connects may see and call everything (a lab setting).` : html`In force: ${pol.summary}. Reread when the configuration file changes.`}</p>
    ${pol.note ? html`<p class="small">${pol.note}</p>` : null}
    <section aria-labelledby="matrix-title">
      <h2 id="matrix-title">What each peer may call here, for itself</h2>
      ${pol.rows.length === 0 || pol.tools.length === 0
        ? html`<p>${pol.tools.length === 0 ? 'This node shares no tools.' : 'No peers known yet.'}</p>`
        : html`<div class="scroll"><table class="grid matrix">
          <caption class="sr-only">Rows are peers, columns this node's tools; “hidden” means callable but not listed</caption>
          <thead><tr><th scope="col">Peer</th>${pol.tools.map((t) => html`<th scope="col"><code>${t}</code></th>`)}</tr></thead>
          <tbody>${pol.rows.map((r) => html`<tr>
            <th scope="row"><span title=${r.peer}>${names[r.peer] || r.name || shortID(r.peer)}</span> <span class="small">${r.state}</span></th>
            ${r.cells.map((d) => html`<${Cell} d=${d} />`)}
          </tr>`)}</tbody></table></div>`}
    </section>
    <${Check} feed=${feed} />
    <details class="card"><summary>The policy as written (JSON)</summary><pre>${JSON.stringify(pol.json, null, 2)}</pre></details>`;
}
