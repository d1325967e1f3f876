// The daemon's API, as the page reaches it: /api/v1/... on this origin.
// State-changing requests carry the per-daemon token from the page.

let token = document.querySelector('meta[name="banger-token"]').content;

// refreshToken fetches the page again for the token of a daemon that has
// restarted since this page loaded (each start makes a new one).
export async function refreshToken() {
  const html = await (await fetch('/', { cache: 'no-store' })).text();
  const m = html.match(/name="banger-token" content="([0-9a-f]+)"/);
  if (m) token = m[1];
}

export const esc = encodeURIComponent;

// wsToken is the token for a terminal WebSocket, which cannot carry
// headers.
export const wsToken = () => token;

// api sends one request and returns its JSON (or, for a progress stream,
// its result), throwing an Error with the daemon's message and hint.
export async function api(method, path, body) {
  const opts = { method, headers: {} };
  if (method !== 'GET') opts.headers['X-Banger-Token'] = token;
  if (body !== undefined) {
    opts.headers['Content-Type'] = 'application/json';
    opts.body = JSON.stringify(body);
  }
  const r = await fetch('/api/v1' + path, opts);
  const type = r.headers.get('Content-Type') || '';
  if (!r.ok) throw await apiError(r);
  if (type.includes('ndjson')) return streamResult(await r.text());
  if (type.includes('json')) return r.json();
  return r.text();
}

// apiError is the daemon's error as an Error with its HTTP status.
async function apiError(r) {
  let err;
  try {
    const e = (await r.json()).error;
    err = new Error(e.message + (e.hint ? ` (${e.hint})` : ''));
  } catch {
    err = new Error(`${r.status} ${r.statusText}`);
  }
  err.status = r.status;
  return err;
}

// streamResult is the outcome of a progress stream: its last result or
// error event.
function streamResult(text) {
  const events = text.split('\n').filter(Boolean).map((l) => JSON.parse(l));
  const last = events[events.length - 1] || {};
  if (last.type === 'error') throw new Error(last.error.message + (last.error.hint ? ` (${last.error.hint})` : ''));
  return last.result;
}

// follow streams a text endpoint (a console or session log) to onText
// until it ends or signal aborts; it resolves when the stream ends.
export async function follow(path, onText, signal) {
  const r = await fetch('/api/v1' + path, { signal });
  if (!r.ok) throw await apiError(r);
  const reader = r.body.getReader();
  const dec = new TextDecoder();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return;
    onText(dec.decode(value, { stream: true }));
  }
}

export function bytes(n) {
  if (!n) return '0 B';
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  const i = Math.min(u.length - 1, Math.floor(Math.log2(n) / 10));
  return `${(n / 2 ** (10 * i)).toFixed(i ? 1 : 0)} ${u[i]}`;
}

export function age(t) {
  const s = Math.max(0, (Date.now() - new Date(t).getTime()) / 1000);
  if (s < 60) return `${Math.floor(s)}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  if (s < 86400) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}

// h builds an element: h('td', {class: 'num'}, 'text', child...).
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export function stateBadge(s) {
  return h('span', { class: `state state-${s}`, 'data-state': s }, s);
}

// confirmDialog asks the question in the page's own dialog and resolves
// true on OK.
export function confirmDialog(text) {
  const d = document.getElementById('confirm');
  document.getElementById('confirm-text').textContent = text;
  d.returnValue = '';
  d.showModal();
  return new Promise((resolve) => {
    d.addEventListener('close', () => resolve(d.returnValue === 'ok'), { once: true });
  });
}
