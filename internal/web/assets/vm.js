// One VM: its details, its console log following live, its sessions with
// their logs, a terminal, and the actions start, stop, snapshot, fork and
// delete.

import { api, follow, h, age, bytes, stateBadge, esc, confirmDialog } from './api.js';
import { onChange } from './events.js';
import { openTerminal } from './term.js';

// Keep the last this many characters of a followed log in the page.
const logCap = 256 * 1024;

export function vmPage(main, name) {
  const path = `/vms/${esc(name)}`;
  const el = {
    title: h('h1', {}, name, ' ', h('span', { id: 'vm-state' })),
    error: h('p', { class: 'error', id: 'vm-error' }),
    start: h('button', { id: 'vm-start', onclick: () => act('start') }, 'Start'),
    stop: h('button', { id: 'vm-stop', onclick: () => act('stop') }, 'Stop'),
    del: h('button', { id: 'vm-delete', class: 'danger', onclick: () => remove() }, 'Delete'),
    snap: h('button', { id: 'vm-snapshot', onclick: () => snapshot() }, 'Snapshot'),
    forkName: h('input', { id: 'fork-name', placeholder: 'new VM name', size: 16 }),
    fork: h('button', { id: 'vm-fork', onclick: () => fork() }, 'Fork'),
    notice: h('p', { class: 'info', id: 'vm-notice' }),
    details: h('dl', { class: 'details', id: 'vm-details' }),
    console: h('pre', { class: 'log', id: 'console' }),
    sessions: h('tbody'),
    shell: h('button', { id: 'new-shell', onclick: () => newShell() }, 'New shell'),
    sessLog: h('pre', { class: 'log', id: 'session-log', hidden: true }),
    termStatus: h('p', { class: 'term-status', id: 'term-status' }),
    term: h('div', { class: 'term', id: 'terminal', hidden: true }),
  };
  main.append(
    el.title, el.error,
    h('div', { class: 'actions' }, el.start, el.stop, el.snap, el.forkName, el.fork, el.del),
    el.notice,
    el.details,
    h('h2', {}, 'Console'), el.console,
    h('h2', {}, 'Sessions'),
    h('table', { id: 'sessions' },
      h('thead', {}, h('tr', {}, ['Name', 'State', 'Exit', 'Started', 'Command', ''].map((c) => h('th', {}, c)))),
      el.sessions),
    h('div', { class: 'actions' }, el.shell),
    el.sessLog,
    h('h2', {}, 'Terminal'), el.termStatus, el.term,
  );

  let vm = null;
  let gone = false;
  let consoleAbort = null;
  let logAbort = null;
  let detach = null;

  const setError = (e) => { el.error.textContent = e ? e.message || String(e) : ''; };

  const markGone = () => {
    gone = true;
    const n = document.getElementById('notice');
    n.className = 'banner bad';
    n.id = 'notice';
    n.textContent = `VM ${name} was deleted. `;
    n.append(h('a', { href: '#/' }, 'Back to the VMs'));
    n.hidden = false;
    for (const b of [el.start, el.stop, el.del, el.shell, el.snap, el.fork]) b.disabled = true;
    el.title.querySelector('#vm-state').replaceChildren(stateBadge('deleted'));
    if (consoleAbort) consoleAbort.abort();
  };

  const load = async () => {
    if (gone) return;
    try {
      vm = await api('GET', path);
    } catch (e) {
      if (e.status === 404) markGone();
      else setError(e);
      return;
    }
    renderVM(vm, el);
    if (vm.state === 'running' && !consoleAbort) followConsole();
    loadSessions();
  };

  // followConsole streams the console log while the VM runs; when the
  // stream ends (the VM stopped) it says so.
  const followConsole = async () => {
    consoleAbort = new AbortController();
    el.console.textContent = '';
    try {
      await follow(`${path}/logs?follow=true`, (t) => appendCapped(el.console, t), consoleAbort.signal);
      if (!gone) appendCapped(el.console, '\n[console log ends: the VM stopped]\n');
    } catch (e) {
      if (e.name !== 'AbortError') appendCapped(el.console, `\n[console: ${e.message}]\n`);
    }
    consoleAbort = null;
  };

  const loadSessions = async () => {
    try {
      const list = await api('GET', `${path}/sessions`);
      el.sessions.replaceChildren(...list.map((s) => sessionRow(s)));
      if (!list.length) el.sessions.replaceChildren(h('tr', {}, h('td', { colspan: 6, class: 'muted' }, 'no sessions')));
    } catch (e) {
      if (!gone) el.sessions.replaceChildren(h('tr', {}, h('td', { colspan: 6, class: 'error' }, e.message)));
    }
  };

  const sessionRow = (s) => h('tr', { 'data-session': s.name },
    h('td', {}, s.name),
    h('td', {}, stateBadge(s.state), s.reason ? ` ${s.reason}` : ''),
    h('td', { class: 'num' }, s.exit_code ?? '–'),
    h('td', { title: s.started_at }, `${age(s.started_at)} ago`),
    h('td', {}, h('code', {}, s.argv.join(' '))),
    h('td', {},
      h('button', { 'data-action': 'logs', onclick: () => showLog(s.name) }, 'Logs'), ' ',
      s.state === 'running' ? h('button', { 'data-action': 'attach', onclick: () => attach(s.name, s.stdin_mode) }, 'Attach') : '',
      s.state === 'running' ? [' ', h('button', { 'data-action': 'stop', class: 'danger', onclick: () => stopSession(s.name) }, 'Stop')] : ''));

  const showLog = async (sess) => {
    if (logAbort) logAbort.abort();
    logAbort = new AbortController();
    el.sessLog.hidden = false;
    el.sessLog.textContent = '';
    el.sessLog.dataset.session = sess;
    try {
      await follow(`${path}/sessions/${esc(sess)}/logs?stream=stdout&follow=true`, (t) => appendCapped(el.sessLog, t), logAbort.signal);
    } catch (e) {
      if (e.name !== 'AbortError') appendCapped(el.sessLog, `\n[${e.message}]\n`);
    }
  };

  const attach = (sess, mode) => {
    if (detach) detach();
    el.term.hidden = false;
    el.term.replaceChildren();
    detach = openTerminal(el.term, el.termStatus, name, sess, mode, () => loadSessions());
  };

  const newShell = async () => {
    setError(null);
    const sess = `shell-${Date.now().toString(36)}`;
    // The login shell of the guest's user, as ssh would start it.
    const script = 's=$(getent passwd "$(id -un)" | cut -d: -f7); [ -x "$s" ] || s=/bin/sh; exec "$s" -l';
    try {
      await api('POST', `${path}/sessions`, { name: sess, argv: ['/bin/sh', '-c', script], stdin_mode: 'tty', rows: 24, cols: 80 });
      await loadSessions();
      attach(sess, 'tty');
    } catch (e) {
      setError(e);
    }
  };

  const stopSession = async (sess) => {
    try {
      await api('POST', `${path}/sessions/${esc(sess)}/stop`, {});
    } catch (e) {
      setError(e);
    }
    loadSessions();
  };

  const act = async (what) => {
    setError(null);
    el.start.disabled = el.stop.disabled = true;
    try {
      await api('POST', `${path}/${what}`, {});
    } catch (e) {
      setError(e);
    }
    load();
  };

  // snapshot takes a snapshot of the running VM (memory and disk; the
  // VM runs on), named by the daemon.
  const snapshot = async () => {
    setError(null);
    el.notice.textContent = '';
    el.snap.disabled = true;
    try {
      const sn = await api('POST', `${path}/snapshot`, {});
      el.notice.textContent = `Snapshot ${sn.name} taken: banger vm create --from-snapshot ${sn.name}`;
    } catch (e) {
      setError(e);
    }
    load();
  };

  // fork makes a new running VM from a snapshot of this one, which runs on.
  const fork = async () => {
    const to = el.forkName.value.trim();
    setError(null);
    el.notice.textContent = '';
    if (!to) {
      setError(new Error('name the new VM first'));
      return;
    }
    el.fork.disabled = true;
    el.notice.textContent = `Forking into ${to}…`;
    try {
      await api('POST', `${path}/fork`, { name: to });
      el.notice.textContent = '';
      el.notice.append(`Forked into `, h('a', { href: `#/vm/${esc(to)}`, id: 'fork-link' }, to));
    } catch (e) {
      el.notice.textContent = '';
      setError(e);
    }
    load();
  };

  const remove = async () => {
    const sure = await confirmDialog(`Delete VM ${name}? Its disk and logs go with it; this cannot be undone.`);
    if (!sure) return;
    setError(null);
    try {
      await api('DELETE', `${path}?force=true`);
    } catch (e) {
      setError(e);
    }
  };

  const off = onChange((c) => {
    if (c.action === 'resync' || c.name === name) {
      if (c.action === 'deleted') markGone();
      else load();
    }
  });
  const sessionsTimer = setInterval(() => !gone && loadSessions(), 5000);
  load();
  return () => {
    off();
    clearInterval(sessionsTimer);
    for (const a of [consoleAbort, logAbort]) if (a) a.abort();
    if (detach) detach();
  };
}

function renderVM(v, el) {
  el.title.querySelector('#vm-state').replaceChildren(stateBadge(v.state));
  const running = v.state === 'running';
  el.start.disabled = running || v.state === 'starting';
  el.stop.disabled = !running;
  el.shell.disabled = !running;
  el.snap.disabled = el.fork.disabled = !running;
  el.del.disabled = false;
  const rows = [
    ['State', v.state + (v.last_error ? ` (${v.last_error})` : '')],
    ['Image', v.image], ['Kernel', v.kernel],
    ['VMM', v.vmm + (v.accel ? ` (${v.accel})` : '')],
    ['vCPUs', v.vcpus], ['Memory', bytes(v.memory_mib * 1048576)], ['Disk', bytes(v.disk_bytes)],
    ['IP', v.ip || '–'], ['MAC', v.mac || '–'], ['PID', v.pid || '–'],
    ['Agent', v.agent || '–'], ['Network', v.net && v.net.mode ? v.net.mode : 'nat'],
    ['Ports', (v.ports || []).map((p) => `${p.host_addr || ''}:${p.host_port}→${p.guest_port}/${p.proto}`).join(', ') || '–'],
    ['Credentials synced', (v.credentials || []).join(', ') || '–'],
    ['Boot', v.boot || '–'], ['Created', `${new Date(v.created_at).toLocaleString()} (${age(v.created_at)} ago)`],
    ['Directory', v.dir],
  ];
  el.details.replaceChildren(...rows.flatMap(([k, val]) => [h('dt', {}, k), h('dd', {}, val)]));
}

// plain drops terminal control sequences (colours, cursor moves, titles)
// and carriage returns from log text, which a <pre> would show raw.
function plain(text) {
  return text
    .replace(/\x1b\][^\x07\x1b]*(\x07|\x1b\\)/g, '')
    .replace(/\x1b\[[0-9;?]*[ -\/]*[@-~]/g, '')
    .replace(/\x1b[()][0-9A-Za-z]/g, '')
    .replace(/\r/g, '');
}

function appendCapped(pre, raw) {
  const text = plain(raw);
  const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
  let s = pre.textContent + text;
  if (s.length > logCap) s = s.slice(s.length - logCap);
  pre.textContent = s;
  if (atBottom) pre.scrollTop = pre.scrollHeight;
}
