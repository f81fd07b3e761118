// The demo call page: one room, everyone in it on video, chat over the data channel.
// URL parameters: room (generated when absent), name, policy=relay, token.
import { join } from '/sdk/icebox.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);

function randomRoom() {
  const words = ['amber', 'birch', 'cedar', 'delta', 'ember', 'fjord', 'glade', 'harbor', 'iris', 'juniper'];
  const pick = () => words[Math.floor(Math.random() * words.length)];
  return `${pick()}-${pick()}-${Math.floor(Math.random() * 1000)}`;
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

const status = (text, error = false) => {
  $('status').textContent = text;
  $('status').classList.toggle('error', error);
};

function say(who, text, system = false) {
  const li = document.createElement('li');
  if (system) {
    li.className = 'system';
    li.textContent = text;
  } else {
    const w = document.createElement('span');
    w.className = 'who';
    w.textContent = who;
    li.append(w, document.createTextNode(text));
  }
  $('messages').append(li);
  $('messages').scrollTop = $('messages').scrollHeight;
}

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

/** @type {Map<string, {tile: HTMLElement, video: HTMLVideoElement, badge: HTMLElement, name: string}>} */
const tiles = new Map();

function tileFor(peer, meta) {
  let t = tiles.get(peer);
  if (t) return t;
  const tile = $('tile-template').content.firstElementChild.cloneNode(true);
  tile.id = `tile-${peer}`;
  tile.dataset.peer = peer;
  const label = (meta && typeof meta.name === 'string' && meta.name.slice(0, 40)) || 'Guest';
  tile.querySelector('.name').textContent = label;
  $('grid').append(tile);
  t = { tile, video: tile.querySelector('video'), badge: tile.querySelector('.badge'), name: label };
  tiles.set(peer, t);
  return t;
}

let stream = null;
try {
  stream = await navigator.mediaDevices.getUserMedia({
    audio: true,
    video: { width: { ideal: 640 }, height: { ideal: 480 }, frameRate: { ideal: 24 } },
  });
  $('local').srcObject = stream;
} catch (err) {
  say('', `No camera or microphone (${err.name}): joining to watch and listen.`, true);
  $('mic').disabled = $('camera').disabled = $('share').disabled = true;
}

status('connecting…');
let call;
try {
  call = await join('', {
    room, stream, meta: { name },
    token: params.get('token') || undefined,
    relayOnly: params.get('policy') === 'relay',
    debug: params.has('debug'),
  });
} catch (err) {
  status(`Cannot join: ${err.message}`, true);
  say('', `Cannot join (${err.code || 'error'}): ${err.message}`, true);
  window.demo = { error: { code: err.code, message: err.message } };
  throw err;
}
window.demo = { call, tiles };
status(`in ${room}`);
say('', `You joined ${room} as ${name}.`, true);

call.addEventListener('peer-joined', (e) => {
  const t = tileFor(e.detail.peer, e.detail.meta);
  say('', `${t.name} joined.`, true);
});
for (const peer of call.peers.values()) tileFor(peer.id, peer.meta);
call.addEventListener('peer-left', (e) => {
  const t = tiles.get(e.detail.peer);
  if (!t) return;
  tiles.delete(e.detail.peer);
  t.tile.remove();
  if (e.detail.reason !== 'reconnected') say('', `${t.name} left.`, true);
});
call.addEventListener('track', (e) => {
  const peer = call.peers.get(e.detail.peer);
  const t = tileFor(e.detail.peer, peer && peer.meta);
  const s = e.detail.streams[0] || new MediaStream([e.detail.track]);
  if (t.video.srcObject !== s) t.video.srcObject = s;
});
call.addEventListener('message', (e) => {
  const d = e.detail.data;
  if (d && typeof d.chat === 'string') say(tiles.get(e.detail.peer)?.name || 'Guest', d.chat.slice(0, 500));
});
call.addEventListener('state', (e) => {
  const s = e.detail.state;
  status(s === 'connected' ? `in ${room}` : s, s === 'closed');
});
call.addEventListener('error', (e) => status(`${e.detail.code}: ${e.detail.message}`, true));
call.addEventListener('sharing', (e) => {
  const on = !!e.detail.track;
  $('local').srcObject = on ? new MediaStream([e.detail.track]) : stream;
  $('tile-local').classList.toggle('sharing', on);
  $('share').setAttribute('aria-pressed', String(on));
  $('share').textContent = on ? 'Stop sharing' : 'Share screen';
});

$('chat-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const text = $('chat-input').value.trim();
  if (!text) return;
  call.send({ chat: text });
  say(name, text);
  $('chat-input').value = '';
});

const toggle = (button, label, apply) => button.addEventListener('click', () => {
  const on = button.getAttribute('aria-pressed') !== 'true';
  apply(on);
  button.setAttribute('aria-pressed', String(on));
  button.textContent = `${label} ${on ? 'on' : 'off'}`;
});
if (!navigator.mediaDevices?.getDisplayMedia) $('share').disabled = true; // phones
toggle($('mic'), 'Mic', (on) => call.setMicEnabled(on));
toggle($('camera'), 'Camera', (on) => call.setCameraEnabled(on));
$('share').addEventListener('click', async () => {
  if (call.sharing) { call.stopSharing(); return; }
  try {
    await call.shareScreen();
  } catch (err) {
    say('', `Screen sharing is not available (${err.name}).`, true);
  }
});
$('leave').addEventListener('click', () => {
  call.leave();
  for (const t of tiles.values()) t.tile.remove();
  tiles.clear();
  status('left the call');
  say('', 'You left. Reload the page to join again.', true);
});

// The path badge: direct, through a STUN address, or relayed by TURN.
setInterval(async () => {
  for (const [peer, t] of tiles) {
    const p = await call.path(peer);
    const text = { direct: 'direct', stun: 'STUN', relay: 'TURN relay', unknown: '…' }[p.kind];
    t.badge.textContent = text;
    t.badge.className = `badge ${p.kind}`;
  }
}, 2000);
