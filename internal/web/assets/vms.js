// The VMs page: every VM, updated from the daemon's events.

import { api, h, age, bytes, stateBadge, esc } from './api.js';
import { onChange } from './events.js';

export function vmsPage(main) {
  const body = h('tbody');
  const status = h('p', { class: 'muted', id: 'vms-status' }, 'loading…');
  main.append(
    h('h1', {}, 'VMs'),
    h('table', { id: 'vms' },
      h('thead', {}, h('tr', {}, ['Name', 'State', 'IP', 'Image', 'VMM', 'vCPUs', 'Memory', 'Age'].map((c) => h('th', {}, c)))),
      body),
    status,
  );
  let timer = null;
  const load = async () => {
    try {
      const vms = await api('GET', '/vms');
      body.replaceChildren(...vms.map(row));
      status.textContent = vms.length ? '' : 'No VMs yet: banger vm create --name NAME';
    } catch (e) {
      status.textContent = `cannot list VMs: ${e.message}`;
    }
  };
  // Coalesce bursts of changes (a start writes several) into one fetch.
  const soon = () => {
    clearTimeout(timer);
    timer = setTimeout(load, 50);
  };
  const off = onChange(soon);
  const ages = setInterval(load, 30000);
  load();
  return () => {
    off();
    clearTimeout(timer);
    clearInterval(ages);
  };
}

function row(v) {
  return h('tr', { 'data-vm': v.name },
    h('td', {}, h('a', { href: `#/vm/${esc(v.name)}` }, v.name)),
    h('td', {}, stateBadge(v.state)),
    h('td', {}, v.ip || '–'),
    h('td', {}, v.image),
    h('td', {}, v.vmm + (v.accel ? ` (${v.accel})` : '')),
    h('td', { class: 'num' }, v.vcpus),
    h('td', { class: 'num' }, bytes(v.memory_mib * 1048576)),
    h('td', { class: 'num', title: v.created_at }, age(v.created_at)),
  );
}
