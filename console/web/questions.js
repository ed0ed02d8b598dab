// Questions a call started here is asked by a tool of its tree (MCP
// elicitation): a form made from the requested schema, or a link to open
// (URL mode), each answered with Accept, Decline or Cancel. The daemon
// checks every answer against the schema; while this page follows the
// call its questions wait, and once it is closed they are declined.
import { useEffect, useState } from './vendor/hooks.mjs';
import { html, post } from './util.js';
import { Field, initial, toArgs } from './form.js';

// safeLink returns the URL of a link question if it is http(s), else null.
function safeLink(u) {
  try {
    const url = new URL(u);
    return url.protocol === 'https:' || url.protocol === 'http:' ? url : null;
  } catch {
    return null;
  }
}

function Question({ task, q }) {
  const p = q.elicit || {};
  const schema = p.requestedSchema || {};
  const [values, setValues] = useState(() => initial(schema));
  const [problem, setProblem] = useState('');
  const [busy, setBusy] = useState(false);
  const key = q.id.slice(0, 8);
  const link = p.mode === 'url' ? safeLink(p.url) : null;

  const send = async (action) => {
    setProblem('');
    let content;
    if (action === 'accept' && p.mode !== 'url') {
      try {
        content = toArgs(schema, values);
      } catch (err) {
        setProblem(err.message);
        return;
      }
    }
    setBusy(true);
    try {
      await post(`/calls/${encodeURIComponent(task)}/answer`, { question: q.id, action, content });
    } catch (err) {
      setProblem(err.message);
      setBusy(false);
    }
  };
  const submit = (e) => {
    e.preventDefault();
    send('accept');
  };
  const required = new Set(schema.required || []);
  // Required fields first, in the schema's order; the others by name (the
  // order of properties does not survive the hops), as the CLI asks them.
  const order = (n) => (required.has(n) ? schema.required.indexOf(n) : Infinity);
  const fields = Object.entries(schema.properties || {}).sort(([a], [b]) => order(a) - order(b) || (a < b ? -1 : a > b ? 1 : 0));
  const buttons = html`<div class="actions">
    <button type="submit" disabled=${busy}>${p.mode === 'url' ? 'Accept' : 'Send'}</button>
    <button type="button" class="secondary" disabled=${busy} onClick=${() => send('decline')}>Decline</button>
    <button type="button" class="secondary" disabled=${busy} onClick=${() => send('cancel')}>Cancel</button>
  </div>`;
  return html`<section class="question" data-question=${q.id} aria-labelledby=${'q-' + key}>
    <h3 id=${'q-' + key}>A tool asks</h3>
    <p class="message" id=${'q-' + key + '-msg'}>${p.message}</p>
    <form onSubmit=${submit} class="form-grid" aria-describedby=${'q-' + key + '-msg'}>
      ${p.mode === 'url'
        ? html`<span>Link</span>
            <span>${link
              ? html`<a href=${link.href} target="_blank" rel="noopener noreferrer" class="ext">Open ${link.host}</a>
                  <span class="hint"> ${link.href}</span>`
              : html`<span class="bad">The link is not http or https: not shown.</span>`}</span><span></span>
            <span></span><p class="hint">Accept to go on with this link (it opens only when you click it); this page says when its server reports the step done.</p><span></span>`
        : fields.map(
            ([name, s]) => html`<${Field} name=${name} s=${s} required=${required.has(name)} value=${values[name] ?? ''} prefix=${'q-' + key + '-'}
              set=${(v) => setValues((cur) => ({ ...cur, [name]: v }))} />`,
          )}
      <span></span>${buttons}<span></span>
    </form>
    ${problem ? html`<p class="bad" role="alert">${problem}</p>` : null}
  </section>`;
}

// Questions follows the questions of the call whose tree is task.
export function Questions({ task }) {
  const [state, setState] = useState({ questions: [], links: [] });
  useEffect(() => {
    const es = new EventSource(`/api/calls/${encodeURIComponent(task)}/questions`);
    es.addEventListener('questions', (e) => setState(JSON.parse(e.data)));
    es.addEventListener('end', () => es.close());
    // A call that has ended has no questions to follow: the browser stops.
    return () => es.close();
  }, [task]);
  const open = state.questions || [];
  const links = state.links || [];
  return html`<div class="questions" data-questions=${task}>
    <p class="sr-only" aria-live="polite">${open.length ? `A tool asks: ${open[0].elicit && open[0].elicit.message}` : ''}</p>
    ${open.map((q) => html`<${Question} task=${task} q=${q} key=${q.id} />`)}
    ${links.map((q) => {
      const link = safeLink(q.elicit && q.elicit.url);
      return html`<p class="link-done" data-link=${q.id} role="status">
        ${q.completed ? `The server says the step at ${link ? link.host : 'the link'} is done.` : `Waiting for the server to say the step at ${link ? link.host : 'the link'} is done.`}</p>`;
    })}
  </div>`;
}
