// Try a tool: a form made from the tool's input schema, the call, its live
// tree and its result.
import { useEffect, useState } from './vendor/hooks.mjs';
import { html, post, peerLabel, shortID, ResultView } from './util.js';
import { TreeView } from './tasks.js';
import { Field, initial, toArgs } from './form.js';
import { Questions } from './questions.js';


export function TryView({ feed, route }) {
  const self = feed.self;
  const wantPeer = route.params.get('peer');
  const wantTool = route.params.get('tool');
  const [peer, setPeer] = useState(wantPeer || '');
  const [tools, setTools] = useState(null);
  const [toolRef, setToolRef] = useState(wantTool || '');
  // What was typed, and for which tool of which listing: a new tool or a
  // new listing starts from the schema's defaults. Derived while rendering,
  // not reset in an effect: an effect runs after the form is drawn and
  // would wipe what a quick user typed in between.
  const [entered, setEntered] = useState({ tool: null, values: {}, json: '{}' });
  const [asJSON, setAsJSON] = useState(false);
  const [call, setCall] = useState(null); // {task} or {result, error}
  const [problem, setProblem] = useState('');
  const [busy, setBusy] = useState(false);

  useEffect(() => { if (!peer && self) setPeer(self.id); }, [self]);
  useEffect(() => { if (wantPeer) setPeer(wantPeer); if (wantTool) setToolRef(wantTool); }, [wantPeer, wantTool]);
  useEffect(() => {
    if (!peer) return;
    let live = true;
    setTools(null);
    setProblem('');
    post('/tools', { peer })
      .then((d) => live && setTools(d.tools))
      .catch((err) => live && (setTools([]), setProblem('Could not list its tools: ' + err.message)));
    return () => { live = false; };
  }, [peer]);
  const tool = (tools || []).find((t) => `${t.server}/${t.tool.name}` === toolRef);
  const schema = tool && tool.tool.inputSchema;
  const mine = tool && entered.tool === tool;
  const values = mine ? entered.values : initial(schema);
  const jsonText = mine ? entered.json : '{}';
  // edit changes what was typed for this tool, from its latest state.
  const edit = (change) =>
    setEntered((e) => {
      const cur = e.tool === tool ? e : { tool, values: initial(schema), json: '{}' };
      return { ...cur, ...change(cur) };
    });
  const setJsonText = (json) => edit(() => ({ json }));

  const choices = [];
  if (self) choices.push({ id: self.id, label: peerLabel(self) + ' (this node)' });
  feed.peers.filter((p) => p.state === 'connected').forEach((p) => choices.push({ id: p.id, label: `${peerLabel(p)} (${shortID(p.id)})` }));
  if (peer && !choices.some((c) => c.id === peer)) choices.push({ id: peer, label: shortID(peer) });

  const submit = async (e) => {
    e.preventDefault();
    setProblem('');
    let args;
    try {
      args = asJSON ? JSON.parse(jsonText) : toArgs(schema, values);
    } catch (err) {
      setProblem(err.message);
      return;
    }
    const [server, ...rest] = toolRef.split('/');
    setBusy(true);
    setCall(null);
    try {
      setCall(await post('/call', { peer, server, tool: rest.join('/'), args }));
    } catch (err) {
      setProblem(err.message);
    }
    setBusy(false);
  };
  const toggleJSON = (e) => {
    if (e.target.checked) {
      try { setJsonText(JSON.stringify(toArgs(schema, values), null, 2)); } catch { setJsonText('{}'); }
    }
    setAsJSON(e.target.checked);
  };
  const props = (schema && schema.properties) || {};
  const required = new Set((schema && schema.required) || []);
  return html`
    <h1 tabindex="-1">Try a tool</h1>
    <div class="split">
      <section class="card" aria-labelledby="call-title">
        <h2 id="call-title">Call</h2>
        <form onSubmit=${submit} class="form-grid">
          <label for="try-peer">Peer</label>
          <select id="try-peer" value=${peer} onChange=${(e) => { setPeer(e.target.value); setToolRef(''); }}>
            ${choices.map((c) => html`<option value=${c.id}>${c.label}</option>`)}
          </select><span></span>
          <label for="try-tool">Tool</label>
          <select id="try-tool" value=${toolRef} onChange=${(e) => setToolRef(e.target.value)} disabled=${!tools}>
            <option value="">${tools ? `(choose one of ${tools.length})` : 'loading…'}</option>
            ${(tools || []).map((t) => html`<option value=${t.server + '/' + t.tool.name}>${t.server}/${t.tool.name}</option>`)}
          </select><span></span>
          ${tool && tool.tool.description ? html`<span></span><p class="hint">${tool.tool.description}</p><span></span>` : null}
          ${tool
            ? asJSON
              ? html`<label for="try-json">Arguments (JSON object)</label><textarea id="try-json" rows="8" value=${jsonText} onInput=${(e) => setJsonText(e.target.value)}></textarea><span></span>`
              : Object.entries(props).map(([name, s]) => html`<${Field} name=${name} s=${s} required=${required.has(name)} value=${values[name] ?? ''} set=${(v) => edit((e) => ({ values: { ...e.values, [name]: v } }))} />`)
            : null}
          ${tool ? html`<span></span><label class="inline"><input type="checkbox" checked=${asJSON} onChange=${toggleJSON} /> Edit the arguments as JSON</label><span></span>` : null}
          <span></span><button type="submit" disabled=${!tool || busy}>${busy ? 'Calling…' : 'Call'}</button><span></span>
        </form>
        <div aria-live="polite">${problem ? html`<p class="bad" role="alert">${problem}</p>` : null}</div>
        ${call && !call.task ? html`<${ResultView} result=${call.result} error=${call.error} />` : null}
        ${call && call.task ? html`<${Questions} task=${call.task} key=${call.task} />` : null}
      </section>
      ${call && call.task
        ? html`<${TreeView} id=${call.task} feed=${feed} key=${call.task} />`
        : html`<section class="card"><h2>Tree</h2><p>The call's tree across nodes appears here, live, with its result.</p></section>`}
    </div>`;
}
