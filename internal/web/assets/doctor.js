// The doctor's results as the daemon sees the host, with their fixes.

import { api, h, stateBadge } from './api.js';

export function doctorPage(main) {
  const status = h('p', { class: 'muted' }, 'running the checks…');
  main.append(h('h1', {}, 'Doctor'), status);
  let live = true;
  (async () => {
    try {
      const r = await api('GET', '/doctor');
      if (!live) return;
      status.textContent = `${r.ok ? 'Everything required is in place.' : 'Something required is missing.'} VMM: ${r.vmm} (${r.accel}): ${r.vmm_reason}`;
      main.append(h('table', { id: 'doctor' },
        h('thead', {}, h('tr', {}, ['Check', 'Status', 'Detail', 'Fix'].map((c) => h('th', {}, c)))),
        h('tbody', {}, r.checks.map((c) => h('tr', { 'data-check': c.name },
          h('td', {}, c.name + (c.required ? '' : ' (optional)')),
          h('td', {}, stateBadge(c.status)),
          h('td', {}, c.detail),
          h('td', {}, c.fix ? h('code', {}, c.fix) : ''))))));
    } catch (e) {
      status.textContent = `cannot run the checks: ${e.message}`;
    }
  })();
  return () => { live = false; };
}
