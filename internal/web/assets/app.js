// The banger UI: a hash router over four pages. Each page's render
// returns the function that stops what it started (streams, sockets,
// listeners) when the user moves on.

import { connect } from './events.js';
import { vmsPage } from './vms.js';
import { vmPage } from './vm.js';
import { imagesPage } from './images.js';
import { doctorPage } from './doctor.js';

let stop = () => {};

function route() {
  stop();
  const main = document.getElementById('main');
  main.replaceChildren();
  document.getElementById('notice').hidden = true;
  const hash = location.hash.replace(/^#/, '') || '/';
  let nav = 'vms';
  if (hash.startsWith('/vm/')) {
    stop = vmPage(main, decodeURIComponent(hash.slice(4)));
  } else if (hash === '/images') {
    nav = 'images';
    stop = imagesPage(main);
  } else if (hash === '/doctor') {
    nav = 'doctor';
    stop = doctorPage(main);
  } else {
    stop = vmsPage(main);
  }
  for (const a of document.querySelectorAll('nav a')) a.classList.toggle('active', a.dataset.nav === nav);
}

addEventListener('hashchange', route);
connect();
route();
