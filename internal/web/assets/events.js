// The daemon's live events (GET /v1/events, server-sent events). The
// connection line in the header says whether the page is connected; when
// the daemon goes away the browser reconnects by itself, and a daemon
// that restarted meanwhile gets its new token fetched.

import { refreshToken } from './api.js';

const listeners = new Set();
let daemon = null; // pid and start time of the daemon last connected

// onChange registers fn for every VM change ({action, name, id, state})
// and for {action: 'resync'} after each (re)connection, when anything
// may have changed unseen. It returns the function that unregisters.
export function onChange(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

function emit(c) {
  for (const fn of listeners) fn(c);
}

function setConn(state, text) {
  const el = document.getElementById('conn');
  el.dataset.state = state;
  el.textContent = text;
}

export function connect() {
  const es = new EventSource('/api/v1/events');
  es.addEventListener('hello', async (ev) => {
    const v = JSON.parse(ev.data);
    const restarted = daemon && (daemon.pid !== v.pid || daemon.started_at !== v.started_at);
    const reconnected = daemon !== null;
    daemon = v;
    if (restarted) await refreshToken();
    setConn('up', reconnected ? `reconnected to bangerd (pid ${v.pid})` : `connected to bangerd ${v.version}`);
    emit({ action: 'resync' });
  });
  es.addEventListener('vm', (ev) => emit(JSON.parse(ev.data)));
  es.onerror = () => {
    setConn('down', 'lost connection to bangerd: reconnecting…');
    // The browser retries a dropped connection by itself, but gives up
    // on an answer that is not an event stream: then start over.
    if (es.readyState === EventSource.CLOSED) setTimeout(connect, 2000);
  };
}
