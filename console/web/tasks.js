// Tasks: the node's running and recent calls, and the live tree below one
// of them across nodes, which the page can cancel.
import { useEffect, useState } from './vendor/hooks.mjs';
import { html, post, shortID, peerLabel, fmtDuration, fmtTime, taskDuration, terminal, useNow, withNames, State, Progress, ResultView } from './util.js';

// names maps peer IDs to labels, from the feed.
export function peerNames(feed) {
  const m = {};
  for (const p of feed.peers) m[p.id] = peerLabel(p);
  if (feed.self) m[feed.self.id] = peerLabel(feed.self) + ' (here)';
  return m;
}

function nameOf(names, id) {
  return names[id] || shortID(id);
}

// useTree follows one tree on /api/tasks/ID/events until it has ended.
function useTree(id) {
  const [state, setState] = useState({ tree: null, result: null, problem: null, ended: false });
  useEffect(() => {
    if (!id) return;
    setState({ tree: null, result: null, problem: null, ended: false });
    const es = new EventSource(`/api/tasks/${encodeURIComponent(id)}/events`);
    es.addEventListener('tree', (e) => {
      const d = JSON.parse(e.data);
      setState((s) => ({ ...s, tree: d.tree, result: d.result || null }));
    });
    es.addEventListener('problem', (e) => setState((s) => ({ ...s, problem: JSON.parse(e.data).error })));
    es.addEventListener('end', () => {
      es.close(); // else EventSource would open it again
      setState((s) => ({ ...s, ended: true }));
    });
    es.onerror = () => {
      if (es.readyState === EventSource.CLOSED) setState((s) => ({ ...s, ended: true }));
    };
    return () => es.close();
  }, [id]);
  return state;
}

// failedHops collects the tasks where failures of the tree started.
function failedHops(t, out = new Set()) {
  if (t.failedAt && t.failedAt.task) out.add(t.failedAt.task);
  (t.childTasks || []).forEach((c) => failedHops(c, out));
  return out;
}

function countTasks(t) {
  return 1 + (t.childTasks || []).reduce((n, c) => n + countTasks(c), 0);
}

function TreeNode({ t, names, failed, now, root, self }) {
  const here = failed.has(t.id);
  const what = `${t.server}/${t.tool}`;
  const caller = t.peer === self ? 'here' : nameOf(names, t.peer);
  const where = t.role === 'call' ? `called ${caller === 'here' ? 'here' : 'on ' + caller} → ${nameOf(names, t.target)}` : `on ${nameOf(names, t.peer)}`;
  return html`<li class=${'tnode' + (here ? ' failed-here' : '')} data-task=${t.id} data-state=${t.unreachable ? 'unreachable' : t.state}>
    <div class="hop">
      ${t.unreachable ? html`<span class="badge st-unreachable">unreachable</span>` : html`<${State} state=${t.state} />`}
      <code class="what">${what}</code>
      <span class="where">${where}</span>
      ${t.unreachable ? null : html`<span class="dur">${fmtDuration(taskDuration(t, now))}</span>`}
      <${Progress} p=${t.progress} />
      ${here ? html`<strong class="origin">⚠ the failure started here</strong>` : null}
      <code class="tid" title=${t.id}>${t.id.slice(0, 8)}</code>
    </div>
    ${t.unreachable ? html`<p class="bad small">${withNames(t.unreachable, names)}</p>` : null}
    ${root ? null : t.error ? html`<p class="bad small">${withNames(t.error, names)}</p>` : t.message && t.state !== 'working' ? html`<p class="small">${withNames(t.message, names)}</p>` : null}
    ${t.childTasks && t.childTasks.length ? html`<ul>${t.childTasks.map((c) => html`<${TreeNode} t=${c} names=${names} failed=${failed} now=${now} self=${self} />`)}</ul>` : null}
  </li>`;
}

// TreeView shows the live tree below task id, with its cancel button and,
// once it ended, its result.
export function TreeView({ id, feed }) {
  const { tree, result, problem, ended } = useTree(id);
  const [msg, setMsg] = useState('');
  const running = tree && !terminal(tree.state);
  const now = useNow(!ended);
  const cancel = async () => {
    setMsg('Cancelling…');
    try {
      await post(`/tasks/${encodeURIComponent(id)}/cancel`);
      setMsg('Cancelled: every task below it is told to stop.');
    } catch (err) {
      setMsg('Could not cancel: ' + err.message);
    }
  };
  const names = peerNames(feed);
  let parsed = null;
  if (result) parsed = result;
  return html`<section class="card tree" aria-labelledby="tree-title" data-tree=${id}>
    <div class="row spread">
      <h2 id="tree-title">Tree <code>${id.slice(0, 8)}</code></h2>
      <button type="button" class="danger" onClick=${cancel} disabled=${!running}>Cancel this tree</button>
    </div>
    <p class="small" role="status">${msg || (tree ? `${countTasks(tree)} tasks across the mesh; ${ended ? 'ended' : 'live'}.` : problem ? '' : 'Loading…')}</p>
    ${problem ? html`<p class="bad" role="alert">${problem}</p>` : null}
    ${tree ? html`<ul class="treeview">${html`<${TreeNode} t=${tree} names=${names} failed=${failedHops(tree)} now=${now} root=${true} self=${feed.self && feed.self.id} />`}</ul>` : null}
    ${tree && tree.state === 'cancelled'
      ? html`<div class="result"><h3>Cancelled</h3>${tree.error ? html`<p class="small">${withNames(tree.error, names)}</p>` : null}</div>`
      : tree && terminal(tree.state) && (parsed || tree.error)
        ? html`<${ResultView} result=${parsed} error=${parsed ? null : tree.error} names=${names} />`
        : null}
  </section>`;
}

const filters = { all: () => true, running: (t) => !terminal(t.state), failed: (t) => t.state === 'failed', cancelled: (t) => t.state === 'cancelled' };

export function TasksView({ feed, route }) {
  const [filter, setFilter] = useState('all');
  const { items, running, total } = feed.tasks;
  const shown = items.filter(filters[filter]);
  const names = peerNames(feed);
  const now = useNow(running > 0);
  const sel = route.arg;
  return html`
    <h1 tabindex="-1">Tasks</h1>
    <p class="lead">${running} running; ${total} kept on this node (ended tasks for 10 minutes).</p>
    <div class="split wide-left">
      <section aria-labelledby="list-title">
        <div class="row spread">
          <h2 id="list-title">Calls made and served here</h2>
          <label>Show
            <select value=${filter} onChange=${(e) => setFilter(e.target.value)}>
              ${Object.keys(filters).map((f) => html`<option value=${f}>${f}</option>`)}
            </select></label>
        </div>
        ${shown.length === 0
          ? html`<p>No ${filter === 'all' ? '' : filter + ' '}tasks.</p>`
          : html`<table class="grid">
          <caption class="sr-only">Top-level tasks, newest first; choose one to see its tree</caption>
          <thead><tr><th scope="col">Tool</th><th scope="col">Peer</th><th scope="col">State</th><th scope="col">Duration</th><th scope="col">Progress</th><th scope="col">Started</th></tr></thead>
          <tbody>
            ${shown.map((t) => html`<tr class=${sel === t.id ? 'selected' : ''} data-task=${t.id}>
              <th scope="row"><a href=${'#/tasks/' + t.id} aria-current=${sel === t.id ? 'true' : null}><code>${t.server}/${t.tool}</code></a></th>
              <td>${t.role === 'call' ? html`<span title="called from here">→ ${nameOf(names, t.target)}</span>` : html`<span title="called by">← ${nameOf(names, t.caller)}</span>`}</td>
              <td><${State} state=${t.state} />${t.failedBelow ? html` <span class="small">at a hop below</span>` : null}</td>
              <td>${fmtDuration(taskDuration(t, now))}</td>
              <td><${Progress} p=${t.progress} compact=${true} /></td>
              <td>${fmtTime(t.started)}</td>
            </tr>`)}
          </tbody></table>`}
      </section>
      ${sel ? html`<${TreeView} id=${sel} feed=${feed} key=${sel} />` : html`<section class="card"><h2>Tree</h2><p>Choose a task to see its tree across nodes, live.</p></section>`}
    </div>`;
}
