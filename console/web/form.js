// Forms made from a JSON schema: a tool's input schema (Try a tool) and
// the schema a tool's question asks with (questions.js).
import { html } from './util.js';

// kindOf says how a schema property is edited.
export function kindOf(s) {
  if (!s || typeof s !== 'object') return 'json';
  if (Array.isArray(s.enum) && s.enum.every((v) => typeof v === 'string')) return 'enum';
  const t = Array.isArray(s.type) ? s.type.filter((x) => x !== 'null') : [s.type];
  if (t.length !== 1) return 'json';
  return { string: 'string', integer: 'integer', number: 'number', boolean: 'boolean' }[t[0]] || 'json';
}

export function initial(schema) {
  const v = {};
  for (const [name, s] of Object.entries((schema && schema.properties) || {})) {
    const k = kindOf(s);
    if (s && s.default !== undefined) v[name] = k === 'json' ? JSON.stringify(s.default) : k === 'boolean' ? !!s.default : String(s.default);
    else v[name] = k === 'boolean' ? false : '';
  }
  return v;
}

// toArgs turns the form's values into the call's arguments; it throws on
// a value that does not parse.
export function toArgs(schema, values) {
  const props = (schema && schema.properties) || {};
  const required = new Set((schema && schema.required) || []);
  const args = {};
  for (const [name, s] of Object.entries(props)) {
    const k = kindOf(s);
    const v = values[name];
    if (k === 'boolean') {
      if (v || required.has(name)) args[name] = !!v;
      continue;
    }
    if (v === '' || v == null) {
      if (required.has(name)) throw new Error(`${name} is required`);
      continue;
    }
    if (k === 'integer' || k === 'number') {
      const n = Number(v);
      if (isNaN(n) || (k === 'integer' && !Number.isInteger(n))) throw new Error(`${name} must be ${k === 'integer' ? 'a whole number' : 'a number'}`);
      args[name] = n;
    } else if (k === 'json') {
      try {
        args[name] = JSON.parse(v);
      } catch (e) {
        throw new Error(`${name} is not valid JSON: ${e.message}`);
      }
    } else args[name] = v;
  }
  return args;
}

// Field edits one property; ids are prefix + name (the Try view's 'arg-').
export function Field({ name, s, required, value, set, prefix = 'arg-' }) {
  const id = prefix + name;
  const k = kindOf(s);
  const hint = [s && s.description, k === 'json' ? 'As JSON.' : ''].filter(Boolean).join(' ');
  const label = html`<label for=${id}>${(s && s.title) || name}${required ? html` <span class="req">(required)</span>` : null}</label>`;
  const described = hint ? id + '-hint' : null;
  let input;
  if (k === 'enum')
    input = html`<select id=${id} value=${value} onChange=${(e) => set(e.target.value)} aria-describedby=${described} required=${required}>
      ${html`<option value="">${required ? '(choose one)' : '(none)'}</option>`}${s.enum.map((o) => html`<option value=${o}>${o}</option>`)}</select>`;
  else if (k === 'boolean')
    input = html`<input id=${id} type="checkbox" checked=${!!value} onChange=${(e) => set(e.target.checked)} aria-describedby=${described} />`;
  else if (k === 'integer' || k === 'number')
    input = html`<input id=${id} type="number" step=${k === 'integer' ? '1' : 'any'} value=${value} onInput=${(e) => set(e.target.value)} aria-describedby=${described} required=${required} />`;
  else if (k === 'json')
    input = html`<textarea id=${id} rows="3" value=${value} onInput=${(e) => set(e.target.value)} aria-describedby=${described} required=${required}></textarea>`;
  else input = html`<input id=${id} type="text" value=${value} onInput=${(e) => set(e.target.value)} aria-describedby=${described} required=${required} />`;
  return html`${label}${input}${hint ? html`<span id=${described} class="hint">${hint}</span>` : html`<span></span>`}`;
}
