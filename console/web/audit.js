// Audit: the calls this node served, relayed and refused, newest first,
// with refusals explained.
import { useState } from './vendor/hooks.mjs';
import { html, fmtDuration, fmtTime } from './util.js';
import { peerNames } from './tasks.js';

const maxRows = 200; // rows drawn at most: the newest that pass the filters

function matches(it, f, names) {
  const r = it.record;
  if (f.kind && it.kind !== f.kind) return false;
  if (f.outcome && r.outcome !== f.outcome) return false;
  if (f.peer) {
    const q = f.peer.toLowerCase();
    const hit = [r.caller, r.for, names[r.caller], names[r.for]].some((v) => v && v.toLowerCase().includes(q));
    if (!hit) return false;
  }
  if (f.tool) {
    const q = f.tool.toLowerCase();
    if (!(`${r.server}/${r.name}`.toLowerCase().includes(q))) return false;
  }
  return true;
}

function who(id, names) {
  return html`<span title=${id}>${names[id] || id.slice(-8)}</span>`;
}

export function AuditView({ feed }) {
  const [f, setF] = useState({ kind: '', outcome: '', peer: '', tool: '' });
  const set = (k) => (e) => setF({ ...f, [k]: e.target.value });
  const names = peerNames(feed);
  const shown = feed.audit.filter((it) => matches(it, f, names)).reverse();
  const refused = feed.audit.filter((it) => it.kind === 'refused').length;
  return html`
    <h1 tabindex="-1">Audit</h1>
    <p class="lead">${feed.audit.length} recent records (${refused} refused)${feed.auditKept ? '' : '; this node keeps no audit log'}. The full trail is in the node's audit.log.</p>
    ${feed.auditSkipped ? html`<p class="small">Busy node: ${feed.auditSkipped} served calls were left out of this page since it opened (it gets every refusal, and the newest 100 other records per update). <code>mcpmesh audit</code> shows them all.</p>` : null}
    <form class="filters" onSubmit=${(e) => e.preventDefault()} aria-label="Filter the records">
      <label>Kind <select value=${f.kind} onChange=${set('kind')}>
        <option value="">any</option><option value="served">served</option><option value="relayed">relayed</option><option value="refused">refused</option>
      </select></label>
      <label>Outcome <select value=${f.outcome} onChange=${set('outcome')}>
        <option value="">any</option><option value="ok">ok</option><option value="error">error</option><option value="refused">refused</option><option value="cancelled">cancelled</option>
      </select></label>
      <label>Peer <input type="search" value=${f.peer} onInput=${set('peer')} placeholder="name or ID" /></label>
      <label>Tool <input type="search" value=${f.tool} onInput=${set('tool')} placeholder="server/tool" /></label>
    </form>
    <p class="small">${shown.length} of ${feed.audit.length} pass the filters${shown.length > maxRows ? `; the newest ${maxRows} are shown` : ''}.</p>
    <table class="grid audit">
      <caption class="sr-only">Audit records, newest first</caption>
      <thead><tr><th scope="col">Time</th><th scope="col">Kind</th><th scope="col">Outcome</th><th scope="col">Caller</th><th scope="col">Call</th><th scope="col">Duration</th><th scope="col">Why</th></tr></thead>
      <tbody>
        ${shown.slice(0, maxRows).map((it) => {
          const r = it.record;
          return html`<tr class=${'k-' + it.kind} data-outcome=${r.outcome} data-tool=${r.name}>
            <td>${fmtTime(r.time)}</td>
            <td>${it.kind}</td>
            <td><span class=${'badge o-' + r.outcome}>${r.outcome}</span></td>
            <td>${who(r.caller, names)}${r.for ? html` for ${who(r.for, names)}` : null}</td>
            <td><code>${r.server}/${r.name}</code>${r.method !== 'tools/call' ? html` <span class="small">(${r.method})</span>` : null}</td>
            <td>${fmtDuration(r.durationMs)}</td>
            <td class="why">${it.explain
              ? html`<span>${it.explain}</span>${it.grant ? html` <code class="grant">${it.grant}</code>` : null}`
              : r.reason || ''}</td>
          </tr>`;
        })}
      </tbody>
    </table>`;
}
