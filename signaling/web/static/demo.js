// The demo call page: one room, everyone in it on video, chat over the data channel.
// URL parameters: room (generated when absent), name, policy=relay, token, debug, camera=off
// (join with the microphone only; the Camera button turns a camera on later).
import { join } from '/sdk/icebox.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);

// A room name nobody guesses: 65 random bits in 13 characters of an alphabet without look-alikes.
function randomRoom() {
  const alphabet = 'abcdefghjkmnpqrstvwxyz0123456789';
  const bytes = crypto.getRandomValues(new Uint8Array(13));
  const s = [...bytes].map((b) => alphabet[b % 32]).join('');
  return `${s.slice(0, 4)}-${s.slice(4, 8)}-${s.slice(8)}`;
}

let room = params.get('room');
if (!room || !/^[A-Za-z0-9._-]{1,64}$/.test(room)) {
  room = randomRoom();
  params.set('room', room);
  history.replaceState(null, '', `${location.pathname}?${params}`);
}
const name = (params.get('name') || localStorage.getItem('icebox:name') || `Guest ${Math.floor(Math.random() * 900 + 100)}`).slice(0, 40);
try { localStorage.setItem('icebox:name', name); } catch { /* private mode */ }
$('room').textContent = room;
$('local-name').textContent = `${name} (you)`;
$('tile-local').querySelector('.placeholder').textContent = `${name} (camera off)`;

const status = (text, error = false) => {
  $('status').textContent = text;
  $('status').classList.toggle('error', error);
};

function say(who, text, kind = '') {
  const li = document.createElement('li');
  if (kind) li.className = kind;
  if (who) {
    const w = document.createElement('span');
    w.className = 'who';
    w.textContent = who;
    li.append(w);
  }
  li.append(document.createTextNode(text));
  $('messages').append(li);
  $('messages').scrollTop = $('messages').scrollHeight;
}
const note = (text) => say('', text, 'system');

$('invite').addEventListener('click', async () => {
  const link = `${location.origin}${location.pathname}?room=${encodeURIComponent(room)}`;
  try {
    await navigator.clipboard.writeText(link);
    $('invite').textContent = 'Copied';
  } catch {
    prompt('Copy this link', link);
  }
  setTimeout(() => { $('invite').textContent = 'Copy invite'; }, 1500);
});

// ---- tiles, sized to fit the grid: the largest 4:3 tiles for which all of them fit ----

/** @type {Map<string, {tile: HTMLElement, video: HTMLVideoElement, badge: HTMLElement, name: string}>} */
const tiles = new Map();

function layout() {
  const grid = $('grid');
  const n = grid.children.length;
  const gap = n > 1 ? 12 : 0;
  const w = grid.clientWidth, h = grid.clientHeight;
  let best = { cols: 1, tw: 0 };
  for (let cols = 1; cols <= n; cols++) {
    const rows = Math.ceil(n / cols);
    const tw = Math.min((w - gap * (cols - 1)) / cols, ((h - gap * (rows - 1)) / rows) * 4 / 3);
    if (tw > best.tw) best = { cols, tw };
  }
  const tw = Math.max(Math.floor(best.tw), 0);
  grid.style.setProperty('--cols', String(best.cols));
  grid.style.setProperty('--gap', `${gap}px`);
  grid.style.setProperty('--tile-w', `${tw}px`);
  grid.style.setProperty('--tile-h', `${Math.floor(tw * 3 / 4)}px`);
}
new ResizeObserver(layout).observe($('grid'));

function tileFor(peer, meta) {
  let t = tiles.get(peer);
  if (t) return t;
  const tile = /** @type {HTMLElement} */ ($('tile-template').content.firstElementChild.cloneNode(true));
  tile.id = `tile-${peer}`;
  tile.dataset.peer = peer;
  const label = (meta && typeof meta.name === 'string' && meta.name.slice(0, 40)) || 'Guest';
  tile.querySelector('.name').textContent = label;
  tile.querySelector('.placeholder').textContent = `${label} (camera off)`;
  $('grid').append(tile);
  t = { tile, video: tile.querySelector('video'), badge: tile.querySelector('.badge'), name: label };
  tiles.set(peer, t);
  layout();
  return t;
}

function removeTile(peer) {
  const t = tiles.get(peer);
  if (!t) return null;
  tiles.delete(peer);
  t.tile.remove();
  layout();
  return t;
}

function showMedia(tile, media) {
  tile.classList.toggle('mic-off', !media.audio);
  tile.classList.toggle('video-off', !media.video);
}

// ---- the call ----

const controls = ['mic', 'camera', 'share', 'devices', 'chat-send'];
const enable = (on) => {
  for (const id of controls) $(id).disabled = !on;
  if (on && !navigator.mediaDevices?.getDisplayMedia) $('share').disabled = true; // phones
};

/** @type {import('/sdk/icebox.js').Call | null} */
let call = null;
window.demo = { call: null, tiles, error: null };

async function start() {
  enable(false);
  status('connecting…');
  $('leave').textContent = 'Leave';
  const options = {
    room, meta: { name },
    token: params.get('token') || undefined,
    relayOnly: params.get('policy') === 'relay',
    debug: params.has('debug'),
  };
  let media = true;
  if (!window.isSecureContext) {
    media = false;
    note('This page is not a secure context (it came over plain http:// from another machine), so the browser does not let it use the camera or microphone. Open it over https:// (set http.tls_cert and http.tls_key, or put icebox behind an HTTPS proxy) or on localhost. Joining to watch and listen.');
  }
  try {
    try {
      const video = params.get('camera') !== 'off' && { width: { ideal: 640 }, height: { ideal: 480 }, frameRate: { ideal: 24 } };
      call = await join('', media ? { ...options, audio: true, video } : options);
    } catch (err) {
      if (err.code !== 'media' && err.code !== 'insecure-context') throw err;
      note(`No camera or microphone (${err.message.replace(/^icebox: /, '')}): joining to watch and listen.`);
      call = await join('', options);
    }
  } catch (err) {
    failed(err);
    return;
  }
  window.demo.call = call;
  window.demo.error = null;
  wire(call);
  joined();
}

function failed(err) {
  const text = {
    'forbidden-origin': 'this page\'s origin is not allowed by the server',
    unauthorized: 'a valid token is needed (add &token=… to the link)',
    'room-full': 'the room is full',
    unavailable: 'the server is shutting down or unavailable; try again shortly',
    unreachable: 'the server cannot be reached',
    timeout: 'the server did not answer in time',
  }[err.code] || err.message;
  status(`Cannot join: ${text}`, true);
  note(`Cannot join (${err.code || 'error'}): ${err.message}`);
  window.demo.error = { code: err.code, message: err.message };
  enable(false);
  $('leave').textContent = 'Try again';
}

function joined() {
  status(`in ${room}`);
  note(`You joined ${room} as ${name}.`);
  enable(true);
  $('leave').textContent = 'Leave';
  $('local').srcObject = call.stream;
  for (const peer of call.peers.values()) {
    const t = tileFor(peer.id, peer.meta);
    t.video.srcObject = peer.stream;
    showMedia(t.tile, peer.media);
  }
  localMedia(call.media);
  listDevices();
}

function localMedia(m) {
  showMedia($('tile-local'), m);
  $('tile-local').classList.toggle('sharing', m.sharing);
  $('local').srcObject = m.sharing && call.sharing ? new MediaStream([call.sharing]) : call.stream;
  for (const [id, on, label] of [['mic', m.audio, 'Mic'], ['camera', m.video && !m.sharing, 'Camera']]) {
    $(id).setAttribute('aria-pressed', String(on));
    $(id).textContent = `${label} ${on ? 'on' : 'off'}`;
  }
  $('share').setAttribute('aria-pressed', String(m.sharing));
  $('share').textContent = m.sharing ? 'Stop sharing' : 'Share screen';
}

const wired = new WeakSet();
function wire(c) {
  if (wired.has(c)) return;
  wired.add(c);
  c.addEventListener('peer-joined', (e) => {
    const t = tileFor(e.detail.peer, e.detail.meta);
    note(`${t.name} joined.`);
  });
  c.addEventListener('peer-left', (e) => {
    const t = removeTile(e.detail.peer);
    if (t) note(`${t.name} left${e.detail.reason === 'disconnected' ? ' (connection lost)' : ''}.`);
  });
  c.addEventListener('track', (e) => {
    const peer = c.peers.get(e.detail.peer);
    const t = tileFor(e.detail.peer, peer && peer.meta);
    if (t.video.srcObject !== e.detail.stream) t.video.srcObject = e.detail.stream;
  });
  c.addEventListener('peer-media', (e) => {
    const t = tiles.get(e.detail.peer);
    if (t) showMedia(t.tile, e.detail);
  });
  c.addEventListener('local-media', (e) => localMedia(e.detail));
  c.addEventListener('connection-state', (e) => {
    const t = tiles.get(e.detail.peer);
    if (!t || e.detail.state !== 'failed') return;
    t.badge.textContent = 'failed';
    t.badge.className = 'badge failed';
    t.badge.title = e.detail.message;
    note(`No connection to ${t.name}: ${e.detail.message}. Retrying.`);
  });
  c.addEventListener('message', (e) => {
    const d = e.detail.data;
    if (d && typeof d.chat === 'string') say(tiles.get(e.detail.peer)?.name || 'Guest', d.chat.slice(0, 500));
  });
  c.addEventListener('undelivered', (e) => {
    const d = e.detail.data;
    if (d && typeof d.chat === 'string') say('', `Not delivered to ${tiles.get(e.detail.peer)?.name || 'a participant who left'}: "${d.chat.slice(0, 80)}" (${e.detail.reason})`, 'undelivered');
  });
  c.addEventListener('state', (e) => {
    const s = e.detail.state;
    if (s === 'connected') status(`in ${room}`);
    else if (s === 'reconnecting') status('reconnecting…');
    else if (s === 'left' || s === 'failed') {
      for (const id of [...tiles.keys()]) removeTile(id);
      enable(false);
      $('leave').textContent = 'Join again';
      if (s === 'left') {
        status('You left the call');
        note('You left.');
      } else {
        status(`Disconnected: ${e.detail.error?.message || 'error'}`, true);
        note(`The call ended (${e.detail.error?.code}): ${e.detail.error?.message}`);
      }
    }
  });
  c.addEventListener('error', (e) => status(`${e.detail.code}: ${e.detail.message}`, true));
}

// ---- controls ----

$('chat-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const text = $('chat-input').value.trim();
  if (!text || !call) return;
  say(name, text);
  if (call.send({ chat: text }) === 0) say('', 'Not delivered: no one else is here.', 'undelivered');
  $('chat-input').value = '';
});

const attempt = async (what, fn) => {
  try {
    await fn();
  } catch (err) {
    note(`${what} failed: ${err.message.replace(/^icebox: /, '')}`);
  }
};
$('mic').addEventListener('click', () => attempt('Microphone', () => call.setMicEnabled($('mic').getAttribute('aria-pressed') !== 'true')));
$('camera').addEventListener('click', () => attempt('Camera', () => call.setCameraEnabled($('camera').getAttribute('aria-pressed') !== 'true')));
$('share').addEventListener('click', () => {
  if (call.sharing) call.stopSharing();
  else attempt('Screen sharing', () => call.shareScreen());
});
$('devices').addEventListener('click', () => {
  const open = $('device-panel').hidden;
  $('device-panel').hidden = !open;
  $('devices').setAttribute('aria-expanded', String(open));
  if (open) listDevices();
});
$('leave').addEventListener('click', () => {
  if (call && (call.state === 'connected' || call.state === 'reconnecting' || call.state === 'connecting')) {
    call.leave();
    return;
  }
  if (!call) { start(); return; }
  status('connecting…');
  $('leave').textContent = 'Leave';
  call.rejoin().then(joined, failed);
});

async function listDevices() {
  if (!navigator.mediaDevices?.enumerateDevices || !call) return;
  const devices = await navigator.mediaDevices.enumerateDevices();
  for (const [kind, select] of [['videoinput', $('camera-select')], ['audioinput', $('mic-select')]]) {
    const current = call.stream.getTracks().find((t) => `${t.kind}input` === kind)?.getSettings().deviceId;
    select.replaceChildren(...devices.filter((d) => d.kind === kind).map((d, i) => {
      const o = new Option(d.label || `${kind === 'videoinput' ? 'Camera' : 'Microphone'} ${i + 1}`, d.deviceId);
      o.selected = d.deviceId === current;
      return o;
    }));
  }
}
navigator.mediaDevices?.addEventListener?.('devicechange', listDevices);
for (const [kind, select] of [['video', $('camera-select')], ['audio', $('mic-select')]]) {
  select.addEventListener('change', () => attempt(kind === 'video' ? 'Switching the camera' : 'Switching the microphone', () => call.setDevice(kind, select.value)));
}

// The path badge: direct, through a STUN address, or relayed by TURN.
setInterval(async () => {
  if (!call) return;
  for (const [peer, t] of tiles) {
    const p = await call.path(peer);
    if (p.kind === 'unknown' && t.badge.classList.contains('failed')) continue;
    t.badge.textContent = { direct: 'direct', stun: 'STUN', relay: 'TURN relay', unknown: '…' }[p.kind];
    t.badge.className = `badge ${p.kind}`;
    t.badge.title = 'How media reaches this participant';
  }
}, 2000);

layout();
start();
