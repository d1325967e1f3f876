// Images and kernels: size, source, and which VMs use each.

import { api, h, bytes, esc } from './api.js';

export function imagesPage(main) {
  const status = h('p', { class: 'muted' }, 'loading…');
  main.append(h('h1', {}, 'Images & kernels'), status);
  let live = true;
  (async () => {
    try {
      const [images, kernels, vms] = await Promise.all([api('GET', '/images'), api('GET', '/kernels'), api('GET', '/vms')]);
      if (!live) return;
      const users = (pick) => (name) => {
        const list = vms.filter((v) => pick(v) === name);
        return list.length ? list.map((v, i) => [i ? ', ' : '', h('a', { href: `#/vm/${esc(v.name)}` }, v.name)]) : h('span', { class: 'muted' }, 'none');
      };
      const imageUsers = users((v) => v.image);
      const kernelUsers = users((v) => v.kernel);
      status.remove();
      main.append(
        h('h2', {}, 'Images'),
        table('images', ['Name', 'Size', 'Source', 'Kernel', 'Distro', 'Used by'], images.map((im) => [
          im.name, bytes(im.size_bytes), im.source, im.kernel_ref, im.distro || '–', imageUsers(im.name),
        ])),
        h('h2', {}, 'Kernels'),
        table('kernels', ['Name', 'Size', 'Release', 'Source', 'Used by'], kernels.map((k) => [
          k.name, bytes(k.size_bytes), k.release || '–', k.source, kernelUsers(k.name),
        ])),
      );
    } catch (e) {
      status.textContent = `cannot list images: ${e.message}`;
    }
  })();
  return () => { live = false; };
}

function table(id, cols, rows) {
  if (!rows.length) return h('p', { class: 'muted', id }, 'none');
  return h('table', { id },
    h('thead', {}, h('tr', {}, cols.map((c) => h('th', {}, c)))),
    h('tbody', {}, rows.map((r) => h('tr', {}, r.map((c) => h('td', {}, c))))));
}
