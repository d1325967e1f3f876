// A terminal in the page (xterm.js) attached to a running session over
// a WebSocket, which the daemon bridges to the session's own socket, the
// one `banger vm session attach` uses. Resizes go through the API, as the
// CLI's do.

import { Terminal } from './vendor/xterm/xterm.mjs';
import { FitAddon } from './vendor/xterm/addon-fit.mjs';
import { api, esc, wsToken } from './api.js';

// openTerminal attaches el to session name of vm; status shows the
// attach's state. A pipe session has no terminal of its own, so the page
// is its line editor, as a cooked terminal would be: it echoes what is
// typed, lets Backspace take back a character and sends the line with a
// newline on Enter (so the program's answer never lands in the middle of
// the line being typed), and turns the program's "\n" into new lines. It
// returns the function that detaches.
export function openTerminal(el, status, vm, name, mode, onEnd) {
  const tty = mode === 'tty';
  const term = new Terminal({ fontSize: 13, scrollback: 5000, cursorBlink: true, convertEol: !tty });
  const fit = new FitAddon();
  term.loadAddon(fit);
  term.open(el);
  fit.fit();
  const path = `/vms/${esc(vm)}/sessions/${esc(name)}`;
  const resize = () => api('POST', `${path}/resize`, { rows: term.rows, cols: term.cols }).catch(() => {});
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const ws = new WebSocket(`${proto}//${location.host}/ws${path}?token=${esc(wsToken())}`);
  ws.binaryType = 'arraybuffer';
  const enc = new TextEncoder();
  let ended = false;
  const say = (text, end) => {
    status.textContent = text;
    status.classList.toggle('ended', !!end);
  };
  say(`attaching to ${name}…`);
  let line = ''; // a pipe session's line being typed
  term.onData((d) => {
    if (ws.readyState !== WebSocket.OPEN || mode === 'null') return;
    if (tty) {
      ws.send(enc.encode(d));
      return;
    }
    for (const ch of d) {
      if (ch === '\r' || ch === '\n') {
        term.write('\n');
        ws.send(enc.encode(line + '\n'));
        line = '';
      } else if (ch === '\x7f' || ch === '\b') {
        if (line.length > 0) {
          line = [...line].slice(0, -1).join('');
          term.write('\b \b');
        }
      } else if (ch >= ' ' || ch === '\t') {
        line += ch;
        term.write(ch);
      }
    }
  });
  if (tty) term.onResize(resize);
  ws.onopen = () => {
    say(`attached to session ${name} (${mode})`);
    if (tty) resize();
    term.focus();
  };
  ws.onmessage = (m) => {
    if (typeof m.data !== 'string') {
      term.write(new Uint8Array(m.data));
      return;
    }
    const e = JSON.parse(m.data);
    ended = true;
    say(endText(name, e), true);
    term.write(`\r\n\x1b[2m[${endText(name, e)}]\x1b[0m\r\n`);
    if (onEnd) onEnd(e);
  };
  ws.onclose = () => {
    if (!ended) say(`disconnected from session ${name} (the daemon went away?)`, true);
  };
  const onWindow = () => fit.fit();
  addEventListener('resize', onWindow);
  return () => {
    removeEventListener('resize', onWindow);
    ws.close();
    term.dispose();
  };
}

function endText(name, e) {
  if (e.error) return `session ${name}: ${e.error}`;
  if (e.state === 'exited') return `session ${name} ended (exit code ${e.exit_code})`;
  if (e.state === 'lost') return `session ${name} is lost${e.reason ? ': ' + e.reason : ''}`;
  return `detached from session ${name} (${e.state})`;
}
