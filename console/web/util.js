// Shared helpers of the console's views: the API, formatting, small
// components.
import { Component, h } from './vendor/preact.mjs';
import { useEffect, useState } from './vendor/hooks.mjs';
import htm from './vendor/htm.mjs';

export const html = htm.bind(h);

// pure wraps a view so that it renders again only when its route or the
// parts of the feed it reads changed: the feed changes several times a
// second on a busy node.
export function pure(View, parts) {
  return class extends Component {
    shouldComponentUpdate(next) {
      return next.route !== this.props.route || parts.some((k) => next.feed[k] !== this.props.feed[k]);
    }
    render(props) {
      return h(View, props);
    }
  };
}

// post sends an action to the daemon; it throws the daemon's error message.
export async function post(path, body) {
  const r = await fetch('/api' + path, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(body ?? {}),
    credentials: 'same-origin',
  });
  const data = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(data.error || `${r.status} ${r.statusText}`);
  return data;
}

// shortID shows the end of a peer ID, as the CLI does.
export function shortID(id) {
  if (!id) return '';
  return id.length > 10 ? '…' + id.slice(-8) : id;
}

// peerLabel names a peer by its card name, or the end of its ID.
export function peerLabel(p) {
  if (p && p.name && p.name !== 'mcpmesh') return p.name;
  return shortID(p && p.id);
}

export const plural = (n, thing) => `${n} ${thing}${n === 1 ? '' : 's'}`;

export function fmtDuration(ms) {
  if (ms == null || isNaN(ms)) return '';
  if (ms < 0.01) return '< 0.01 ms';
  if (ms < 1) return ms.toFixed(2) + ' ms';
  if (ms < 1000) return ms.toFixed(ms < 10 ? 1 : 0) + ' ms';
  const s = ms / 1000;
  if (s < 60) return s.toFixed(s < 10 ? 2 : 1) + ' s';
  const m = Math.floor(s / 60);
  return `${m} min ${Math.round(s - m * 60)} s`;
}

const zero = '0001-01-01T00:00:00Z';
export function hasTime(t) {
  return t && t !== zero && !t.startsWith('0001-');
}

// taskDuration is how long a task ran, or has run so far.
export function taskDuration(t, now) {
  if (!hasTime(t.started)) return null;
  const end = hasTime(t.ended) ? Date.parse(t.ended) : now;
  return end - Date.parse(t.started);
}

export function fmtTime(t) {
  if (!hasTime(t)) return '';
  const d = new Date(t);
  return d.toLocaleTimeString([], { hour12: false }) + '.' + String(d.getMilliseconds()).padStart(3, '0');
}

export const terminal = (s) => s === 'completed' || s === 'failed' || s === 'cancelled';

// useNow re-renders every second while on, for durations that grow.
export function useNow(on) {
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    if (!on) return;
    const t = setInterval(() => setNow(Date.now()), 1000);
    return () => clearInterval(t);
  }, [on]);
  return on ? now : Date.now();
}

// State shows a task's or call's state in words (colour is a second cue).
export function State({ state }) {
  const words = { input_required: 'input required' };
  return html`<span class=${'badge st-' + state}>${words[state] || state}</span>`;
}

// Progress shows a task's latest progress; compact leaves the message to a
// tooltip.
export function Progress({ p, compact }) {
  if (!p) return null;
  const label = p.total ? `${p.progress}/${p.total}` : `${p.progress}`;
  return html`<span class="progress" title=${compact ? p.message : null}>
    ${p.total ? html`<progress max=${p.total} value=${p.progress} aria-label=${'progress ' + label}></progress>` : null}
    ${label}${p.message && !compact ? ' ' + p.message : ''}</span>`;
}

// withNames replaces the full peer IDs in a message (errors name peers by
// ID) with their names.
export function withNames(text, names) {
  if (!text) return text;
  return text.replace(/12D3Koo[1-9A-HJ-NP-Za-km-z]{40,}|Qm[1-9A-HJ-NP-Za-km-z]{44}/g, (id) => names[id] || shortID(id));
}

// ResultView shows a tool result: its text, its structured content, or
// the error it carries.
export function ResultView({ result, error, names }) {
  if (error) return html`<div class="result bad" role="alert"><strong>Error:</strong> ${withNames(error, names || {})}</div>`;
  if (!result) return null;
  const texts = (result.content || []).filter((c) => c.type === 'text').map((c) => c.text);
  const others = (result.content || []).filter((c) => c.type !== 'text');
  return html`<div class=${'result' + (result.isError ? ' bad' : '')}>
    <h3>${result.isError ? 'The tool failed' : 'Result'}</h3>
    ${texts.map((t) => html`<pre class="text">${t}</pre>`)}
    ${others.length ? html`<p>${others.length} more content block(s): ${others.map((c) => c.type).join(', ')}</p>` : null}
    ${result.structuredContent
      ? html`<details><summary>Structured content</summary><pre>${JSON.stringify(result.structuredContent, null, 2)}</pre></details>`
      : null}
  </div>`;
}
