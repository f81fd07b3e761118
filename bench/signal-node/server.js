// The yardstick of `make bench`'s signaling comparison: icebox's signaling protocol (welcome,
// join/joined/peer-joined, signal, broadcast, leave/peer-left, ping/pong, seq on every message
// after the welcome) relayed by Node.js with the ws package, as a typical socket.io-style signaling
// server would. No resume, no auth, no Redis: what a minimal relay of the same messages costs.
//
//   node server.js PORT   (listens on 127.0.0.1:PORT, path /ws)
import { randomBytes } from 'node:crypto';
import { WebSocketServer } from 'ws';

const port = Number(process.argv[2] || 8090);
const rooms = new Map(); // room -> Map(peer -> {ws, meta})
const maxRoom = 16;
const roomName = /^[A-Za-z0-9._-]{1,64}$/;

const wss = new WebSocketServer({ host: '127.0.0.1', port, path: '/ws', perMessageDeflate: false, maxPayload: 65536 });

function send(c, msg) {
  msg.seq = ++c.seq;
  c.ws.send(JSON.stringify(msg));
}

wss.on('connection', (ws) => {
  const c = { ws, peer: randomBytes(12).toString('base64url'), room: null, seq: 0 };
  ws.send(JSON.stringify({ type: 'welcome', peer: c.peer, resume: randomBytes(32).toString('base64url'), iceServers: [], ttl: 86400 }));
  ws.on('message', (raw, isBinary) => {
    let m;
    try {
      m = JSON.parse(isBinary ? '' : raw.toString());
    } catch {
      return send(c, { type: 'error', code: 'bad-message', message: 'not JSON' });
    }
    if (m === null || typeof m !== 'object' || typeof m.type !== 'string') {
      return send(c, { type: 'error', code: 'bad-message', message: 'no type' });
    }
    const re = m.id;
    switch (m.type) {
      case 'ping':
        return send(c, { type: 'pong', re });
      case 'join': {
        if (c.room) return send(c, { type: 'error', code: 'already-joined', re });
        if (typeof m.room !== 'string' || !roomName.test(m.room)) return send(c, { type: 'error', code: 'bad-room', re });
        let members = rooms.get(m.room);
        if (!members) rooms.set(m.room, (members = new Map()));
        if (members.size >= maxRoom) return send(c, { type: 'error', code: 'room-full', re });
        const meta = m.meta && typeof m.meta === 'object' ? m.meta : {};
        const peers = [...members].map(([peer, o]) => ({ peer, meta: o.meta }));
        members.set(c.peer, { c, meta });
        c.room = m.room;
        send(c, { type: 'joined', room: m.room, peers, re });
        for (const [, o] of members) if (o.c !== c) send(o.c, { type: 'peer-joined', room: m.room, peer: c.peer, meta });
        return;
      }
      case 'signal': {
        const members = c.room && rooms.get(c.room);
        if (!members) return send(c, { type: 'error', code: 'not-joined', re });
        const to = members.get(m.to);
        if (!to || m.to === c.peer) return send(c, { type: 'error', code: 'unknown-peer', re });
        return send(to.c, { type: 'signal', from: c.peer, data: m.data });
      }
      case 'broadcast': {
        const members = c.room && rooms.get(c.room);
        if (!members) return send(c, { type: 'error', code: 'not-joined', re });
        for (const [, o] of members) if (o.c !== c) send(o.c, { type: 'broadcast', from: c.peer, data: m.data });
        return;
      }
      case 'leave':
        if (!c.room) return send(c, { type: 'error', code: 'not-joined', re });
        leave(c, 'left');
        return send(c, { type: 'left', re });
      default:
        return send(c, { type: 'error', code: 'bad-message', message: 'unknown type', re });
    }
  });
  ws.on('close', () => leave(c, 'disconnected'));
});

function leave(c, reason) {
  const members = c.room && rooms.get(c.room);
  if (!members) return;
  members.delete(c.peer);
  for (const [, o] of members) send(o.c, { type: 'peer-left', room: c.room, peer: c.peer, reason });
  if (members.size === 0) rooms.delete(c.room);
  c.room = null;
}

wss.on('listening', () => console.error(`node ws signaling on ws://127.0.0.1:${port}/ws`));
