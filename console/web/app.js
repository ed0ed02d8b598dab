// The console's page: one live feed from the daemon (server-sent events),
// five views chosen by the URL's fragment.
import { render } from './vendor/preact.mjs';
import { useEffect, useRef, useState } from './vendor/hooks.mjs';
import { html, pure, peerLabel, shortID } from './util.js';
import { MeshView } from './mesh.js';
import { TasksView } from './tasks.js';
import { AuditView } from './audit.js';
import { PolicyView } from './policy.js';
import { TryView } from './try.js';

// Each view renders again only when the parts of the feed it shows change.
const views = [
  { path: 'mesh', title: 'Mesh', view: pure(MeshView, ['self', 'peers']) },
  { path: 'tasks', title: 'Tasks', view: pure(TasksView, ['self', 'peers', 'tasks']) },
  { path: 'audit', title: 'Audit', view: pure(AuditView, ['self', 'peers', 'audit', 'auditKept', 'auditSkipped']) },
  { path: 'policy', title: 'Policy', view: pure(PolicyView, ['peers', 'policy']) },
  { path: 'try', title: 'Try a tool', view: pure(TryView, ['self', 'peers']) },
];

const maxAudit = 2000; // records the page keeps

// useFeed follows /api/events. The browser never polls: the daemon pushes
// what changed, and EventSource reconnects after a lost connection.
function useFeed() {
  const [feed, setFeed] = useState({ self: null, peers: [], tasks: { items: [], running: 0, total: 0 }, audit: [], auditKept: true, auditSkipped: 0, policy: null });
  const [status, setStatus] = useState('connecting');
  useEffect(() => {
    const es = new EventSource('/api/events');
    // One update per change: every section that changed, rendered at once.
    es.addEventListener('update', (e) => {
      const u = JSON.parse(e.data);
      setFeed((s) => {
        const n = { ...s };
        if (u.self) n.self = u.self;
        if (u.peers) n.peers = u.peers;
        if (u.tasks) n.tasks = u.tasks;
        if (u.policy) n.policy = u.policy;
        if (u.audit) {
          const d = u.audit;
          const all = d.reset ? d.items : s.audit.concat(d.items);
          n.audit = all.length > maxAudit ? all.slice(all.length - maxAudit) : all;
          n.auditKept = d.kept;
          n.auditSkipped = (d.reset ? 0 : s.auditSkipped) + (d.skipped || 0);
        }
        return n;
      });
    });
    es.onopen = () => setStatus('live');
    es.onerror = () => setStatus(es.readyState === EventSource.CLOSED ? 'closed' : 'reconnecting');
    return () => es.close();
  }, []);
  return [feed, status];
}

function useRoute() {
  const read = () => {
    const [path, query] = (location.hash.replace(/^#\/?/, '') || 'mesh').split('?');
    const [view, ...rest] = path.split('/');
    return { view, arg: rest.join('/'), params: new URLSearchParams(query || '') };
  };
  const [route, setRoute] = useState(read);
  useEffect(() => {
    const f = () => setRoute(read());
    addEventListener('hashchange', f);
    return () => removeEventListener('hashchange', f);
  }, []);
  return route;
}

const statusWords = {
  connecting: 'Connecting…',
  live: 'Live',
  reconnecting: 'Connection lost, reconnecting…',
  closed: 'Disconnected: the daemon stopped, or this page is signed out. Run “mcpmesh ui” to open it again.',
};

function App() {
  const [feed, status] = useFeed();
  const route = useRoute();
  const current = views.find((v) => v.path === route.view) || views[0];
  const main = useRef(null);
  const first = useRef(true);
  useEffect(() => {
    document.title = `${current.title} · mcpmesh console`;
    // Move focus to the new view's heading, so that keyboard and screen
    // reader users land on it (not on the first load).
    if (first.current) {
      first.current = false;
      return;
    }
    const h1 = main.current && main.current.querySelector('h1');
    if (h1) h1.focus();
  }, [current.path]);
  const View = current.view;
  const self = feed.self;
  return html`
    <a class="skip" href="#main" onClick=${(e) => { e.preventDefault(); main.current.focus(); }}>Skip to content</a>
    <header class="top">
      <div class="brand">
        <span class="logo" aria-hidden="true">◈</span>
        <span>mcpmesh console</span>
        ${self ? html`<span class="self" title=${self.id}>${peerLabel(self)} · ${shortID(self.id)}</span>` : null}
      </div>
      <nav aria-label="Views">
        <ul>
          ${views.map((v) => html`<li><a href=${'#/' + v.path} aria-current=${v === current ? 'page' : null}>${v.title}</a></li>`)}
        </ul>
      </nav>
      <p class=${'conn conn-' + status} role="status">${statusWords[status]}</p>
    </header>
    <main id="main" ref=${main} tabindex="-1">
      <${View} feed=${feed} route=${route} />
    </main>
    <footer><p>Served by this node's daemon, on loopback only. Updates arrive as they happen; this page never polls.</p></footer>
  `;
}

render(html`<${App} />`, document.getElementById('app'));
