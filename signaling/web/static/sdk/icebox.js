// icebox browser SDK: mesh calls through an icebox server.
//
//   import { join } from '/sdk/icebox.js';
//   const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
//   const call = await join('https://icebox.example.com', { room: 'team', stream, meta: { name: 'Ada' } });
//   call.addEventListener('track', (e) => attach(e.detail.peer, e.detail.streams[0]));
//   call.addEventListener('peer-left', (e) => detach(e.detail.peer));
//   call.addEventListener('message', (e) => console.log(e.detail.peer, e.detail.data));
//   call.send({ text: 'hi' });
//
// One RTCPeerConnection per other peer (a mesh), negotiated with the perfect-negotiation pattern
// (polite or impolite by peer id), trickle ICE, the iceServers of icebox's welcome, reconnect
// with resume and backoff, ICE restart when a connection fails.

/**
 * @typedef {Object} JoinOptions
 * @property {string} room Room name: 1-64 characters of A-Z a-z 0-9 . _ -
 * @property {MediaStream} [stream] Local audio/video to send; without one the call only receives.
 * @property {Object} [meta] Sent to the other peers with peer-joined (at most 1 KiB of JSON).
 * @property {string} [token] API key or JWT, when the server's auth.mode needs one.
 * @property {boolean} [relayOnly] Relay every connection through TURN (iceTransportPolicy "relay").
 * @property {Storage|null} [storage] Where the resume token is kept across page reloads
 *   (default sessionStorage; null keeps it in memory only).
 * @property {boolean} [debug] Keep a trace of signaling and negotiation in call.trace (and log it
 *   with console.debug).
 */

/**
 * @typedef {Object} Peer
 * @property {string} id Peer id assigned by the server.
 * @property {Object} meta The peer's meta.
 * @property {RTCPeerConnection} pc The connection to it.
 * @property {RTCDataChannel} channel The data channel to it.
 */

/**
 * @typedef {Object} PathInfo
 * @property {'direct'|'stun'|'relay'|'unknown'} kind How media flows: directly between host
 *   addresses, through a STUN (server/peer reflexive) address, or relayed through TURN.
 * @property {string} [local] Local candidate type (host, srflx, prflx, relay).
 * @property {string} [remote] Remote candidate type.
 */

const CHANNEL = { negotiated: true, id: 0 }; // one data channel per peer, no negotiation race
const MAX_BACKOFF = 10000;

/**
 * Joins a room: connects to the icebox at url ('' for the page's own origin) and starts calling
 * every peer in the room. Resolves once the room is joined; rejects with an Error whose code is
 * the server's (unauthorized, room-full, bad-room, forbidden...).
 * @param {string} url
 * @param {JoinOptions} options
 * @returns {Promise<Call>}
 */
export async function join(url, options) {
  const call = new Call(url, options);
  await call.ready;
  return call;
}

/**
 * A call in one room. Events (CustomEvent, data in event.detail):
 * - 'peer-joined' {peer, meta}; 'peer-left' {peer, reason}
 * - 'track' {peer, track, streams}: a remote track arrived (again after a reconnect)
 * - 'message' {peer, data}: a data-channel message
 * - 'connection-state' {peer, state}: an RTCPeerConnection's connectionState
 * - 'state' {state}: the signaling connection: connecting, connected, reconnecting, closed
 * - 'error' {code, message}: from the server, or 'unreachable'
 */
export class Call extends EventTarget {
  /**
   * @param {string} url
   * @param {JoinOptions} options
   */
  constructor(url, options) {
    super();
    if (!options || !options.room) throw new Error('icebox: options.room is required');
    this.url = (url || location.origin).replace(/\/+$/, '');
    this.room = options.room;
    this.meta = options.meta || {};
    this.token = options.token || '';
    this.relayOnly = !!options.relayOnly;
    this.storage = options.storage === undefined ? safeSessionStorage() : options.storage;
    /** @type {MediaStream|null} */
    this.stream = options.stream || null;
    /** @type {MediaStreamTrack|null} */
    this.sharing = null;
    /** @type {Map<string, Peer>} */
    this.peers = new Map();
    /** @type {string} */
    this.peerId = '';
    this.iceServers = [];
    this.state = 'connecting';
    this.closed = false;
    this.lastSeq = 0;
    this.attempt = 0;
    this.outbox = [];
    this.joined = false;
    this.debug = !!options.debug;
    /** @type {string[]} */
    this.trace = [];
    this.ready = new Promise((resolve, reject) => { this._resolve = resolve; this._reject = reject; });
    this.ready.catch(() => {}); // the caller of join() gets it
    this._onPageHide = (e) => { if (!e.persisted) this.leave(); };
    addEventListener('pagehide', this._onPageHide);
    this._connect();
  }

  /** @private */
  _emit(type, detail) { this.dispatchEvent(new CustomEvent(type, { detail })); }

  /** @private */
  _trace(...args) {
    if (!this.debug) return;
    const line = `${(performance.now() / 1000).toFixed(3)} ${args.join(' ')}`;
    this.trace.push(line);
    if (this.trace.length > 500) this.trace.shift();
    console.debug('icebox', line);
  }

  /** @private */
  _setState(state) {
    if (this.state === state) return;
    this.state = state;
    this._emit('state', { state });
  }

  /** @private */
  get _storageKey() { return `icebox:${this.url}:${this.room}`; }

  /** @private */
  _saved() {
    try { return JSON.parse(this.storage?.getItem(this._storageKey) || 'null'); } catch { return null; }
  }

  /** @private */
  _save(resume) {
    try { this.storage?.setItem(this._storageKey, JSON.stringify({ resume, last: this.lastSeq })); } catch { /* full or denied */ }
  }

  /** @private */
  _connect() {
    const saved = this.resume ? { resume: this.resume, last: this.lastSeq } : this._saved();
    const q = new URLSearchParams();
    if (this.token) q.set('token', this.token);
    if (saved && saved.resume) {
      q.set('resume', saved.resume);
      if (saved.last) q.set('last', String(saved.last));
      if (!this.resume) this.lastSeq = saved.last || 0; // a reload: continue the numbering
    }
    const ws = new WebSocket(`${this.url.replace(/^http/, 'ws')}/ws?${q}`);
    this.ws = ws;
    let welcomed = false;
    ws.onmessage = (e) => {
      let m;
      try { m = JSON.parse(e.data); } catch { return; }
      if (m.type === 'welcome') { welcomed = true; this._welcome(m); return; }
      if (m.seq) {
        if (m.seq <= this.lastSeq) return; // replayed after a resume: seen already
        this.lastSeq = m.seq;
        if (this.resume) this._save(this.resume);
      }
      this._message(m);
    };
    ws.onclose = (e) => {
      if (this.ws !== ws) return;
      this.ws = null;
      if (this.closed) return;
      if (e.code === 4001) { // another connection resumed this session (another tab)
        this._fail('replaced', 'this call continues in another connection');
        return;
      }
      if (!welcomed) { this._diagnose(); return; }
      this._retry();
    };
  }

  /** @private Learn why the WebSocket could not open: browsers hide the HTTP status. */
  async _diagnose() {
    let code = 'unreachable', message = `cannot reach icebox at ${this.url}`;
    try {
      const r = await fetch(`${this.url}/ice-config`, { headers: this.token ? { Authorization: `Bearer ${this.token}` } : {} });
      if (!r.ok) {
        const body = await r.json().catch(() => null);
        if (body && body.error) ({ code, message } = body.error);
      }
    } catch { /* unreachable */ }
    if (code === 'unauthorized' || code === 'forbidden') { this._fail(code, message); return; }
    this._emit('error', { code, message });
    this._retry();
  }

  /** @private */
  _fail(code, message) {
    const err = Object.assign(new Error(message), { code });
    this._emit('error', { code, message });
    this._reject(err);
    this.close();
  }

  /** @private */
  _retry() {
    if (this.closed) return;
    this._setState('reconnecting');
    const delay = Math.min(MAX_BACKOFF, 500 * 2 ** this.attempt) * (0.75 + Math.random() / 2);
    this.attempt++;
    clearTimeout(this._timer);
    this._timer = setTimeout(() => this._connect(), delay);
  }

  /** @private */
  _welcome(w) {
    this.attempt = 0;
    const fresh = !w.resumed || (this.peerId && w.peer !== this.peerId);
    this.peerId = w.peer;
    this.resume = w.resume;
    this.iceServers = w.iceServers || [];
    if (!w.resumed) this.lastSeq = 0;
    this._save(w.resume);
    this._setState('connected');
    if (fresh) {
      // A new session: the old one (if any) is gone, and with it our seat.
      for (const id of [...this.peers.keys()]) this._removePeer(id, 'disconnected');
      this.joined = false;
    }
    if (w.resumed && w.room === this.room) {
      this.joined = true;
      // Back in the room. After a page reload there are no connections yet: build them (the
      // others see a new connection generation and rebuild theirs).
      const present = new Set((w.peers || []).map((p) => p.peer));
      for (const id of [...this.peers.keys()]) if (!present.has(id)) this._removePeer(id, 'left');
      for (const p of w.peers || []) this._addPeer(p.peer, p.meta, true);
      this._resolve(this);
    } else {
      this._send({ type: 'join', room: this.room, meta: this.meta, id: 'join' });
    }
    const queued = this.outbox;
    this.outbox = [];
    for (const m of queued) this._send(m);
  }

  /** @private */
  _message(m) {
    switch (m.type) {
      case 'joined':
        this.joined = true;
        for (const p of m.peers) this._addPeer(p.peer, p.meta, true); // we arrive: we call
        this._resolve(this);
        break;
      case 'peer-joined':
        this._addPeer(m.peer, m.meta, false); // they arrive: they call
        break;
      case 'peer-left':
        this._removePeer(m.peer, m.reason);
        break;
      case 'signal':
        this._signal(m.from, m.data);
        break;
      case 'broadcast':
        this._emit('broadcast', { peer: m.from, data: m.data });
        break;
      case 'bye': // the server is shutting down: reconnect (to another node) after the close
        break;
      case 'error':
        if (m.re === 'join') { this._fail(m.code, m.message); return; }
        this._emit('error', { code: m.code, message: m.message });
        break;
    }
  }

  /** @private */
  _send(m) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN && this.peerId) this.ws.send(JSON.stringify(m));
    else if (m.type !== 'join') this.outbox.push(m); // the server queues what arrives meanwhile; so do we
  }

  /** @private */
  _config() {
    return { iceServers: this.iceServers, iceTransportPolicy: this.relayOnly ? 'relay' : 'all' };
  }

  /**
   * @private
   * A connection to peer id. The side that arrives in a room calls (active: it adds its media
   * and offers at once); the side already there waits for that offer (passive) and adds its
   * media while answering. Both sides offering at once (glare) is then rare: perfect
   * negotiation resolves it, but Chromium can stall ICE gathering after a rollback.
   */
  _addPeer(id, meta, active) {
    if (this.peers.has(id) || id === this.peerId) return this.peers.get(id);
    const pc = new RTCPeerConnection(this._config());
    /** @type {Peer & Object} */
    const peer = {
      id, meta: meta || {}, pc, active: false,
      gen: Math.random().toString(36).slice(2), // this connection's generation
      remoteGen: null, // the generation of the other side's connection, once known
      polite: this.peerId > id,
      makingOffer: false, ignoreOffer: false,
      channel: null,
      videoSender: null,
    };
    this.peers.set(id, peer);
    this._trace('add peer', id, 'gen', peer.gen, 'polite', peer.polite, active ? 'active' : 'passive');
    const send = (data) => {
      this._trace('send', id, data.description ? data.description.type : 'candidate', 'gen', peer.gen, 'to', peer.remoteGen);
      this._send({ type: 'signal', to: id, data: { gen: peer.gen, to: peer.remoteGen, ...data } });
    };
    peer.send = send;
    pc.onnegotiationneeded = async () => {
      try {
        peer.makingOffer = true;
        await pc.setLocalDescription();
        send({ description: pc.localDescription.toJSON() });
      } catch (err) {
        this._emit('error', { code: 'negotiation', message: String(err) });
      } finally {
        peer.makingOffer = false;
      }
    };
    pc.onicecandidate = ({ candidate }) => { if (candidate) send({ candidate: candidate.toJSON() }); };
    pc.ontrack = (e) => this._emit('track', { peer: id, track: e.track, streams: e.streams });
    pc.onicegatheringstatechange = () => this._trace('gathering', id, peer.gen, pc.iceGatheringState);
    pc.onsignalingstatechange = () => this._trace('signaling', id, peer.gen, pc.signalingState);
    pc.onconnectionstatechange = () => {
      this._trace('connection', id, peer.gen, pc.connectionState);
      this._emit('connection-state', { peer: id, state: pc.connectionState });
      if (pc.connectionState === 'failed') pc.restartIce(); // new candidates, same call
    };
    if (active) this._activate(peer);
    this._emit('peer-joined', { peer: id, meta: peer.meta });
    return peer;
  }

  /** @private Adds our media and the data channel to peer's connection. */
  _activate(peer) {
    if (peer.active) return;
    peer.active = true;
    const pc = peer.pc;
    if (this.stream) {
      for (const track of this.stream.getTracks()) {
        const out = track.kind === 'video' && this.sharing ? this.sharing : track;
        const sender = pc.addTrack(out, this.stream);
        if (track.kind === 'video') peer.videoSender = sender;
      }
    } else {
      pc.addTransceiver('audio', { direction: 'recvonly' });
      pc.addTransceiver('video', { direction: 'recvonly' });
    }
    peer.channel = pc.createDataChannel('icebox', CHANNEL);
    peer.channel.onmessage = (e) => {
      let data = e.data;
      try { data = JSON.parse(e.data); } catch { /* a plain string */ }
      this._emit('message', { peer: peer.id, data });
    };
  }

  /** @private */
  _removePeer(id, reason) {
    const peer = this.peers.get(id);
    if (!peer) return;
    this.peers.delete(id);
    peer.pc.close();
    this._emit('peer-left', { peer: id, reason });
  }

  /** @private Perfect negotiation, one message of the other side. */
  async _signal(from, data) {
    if (!data || typeof data !== 'object') return;
    let peer = this.peers.get(from);
    this._trace('recv', from, data.description ? data.description.type : 'candidate', 'gen', data.gen, 'to', data.to, 'mine', peer && peer.gen, 'known', peer && peer.remoteGen);
    if (!peer) return; // a late message of a peer that has left
    if (data.to && data.to !== peer.gen) return; // meant for a connection of ours that is gone
    if (peer.remoteGen && data.gen !== peer.remoteGen) {
      // The other side rebuilt its connection (a reload, a new session): so do we.
      const meta = peer.meta;
      this._removePeer(from, 'reconnected');
      peer = this._addPeer(from, meta, false); // its offer is on the way
    }
    peer.remoteGen = data.gen;
    const pc = peer.pc;
    try {
      if (data.description) {
        const offerCollision = data.description.type === 'offer' && (peer.makingOffer || pc.signalingState !== 'stable');
        peer.ignoreOffer = !peer.polite && offerCollision;
        if (peer.ignoreOffer) return;
        await pc.setRemoteDescription(data.description);
        if (data.description.type === 'offer') {
          this._activate(peer); // a passive side adds its media to the answer
          await pc.setLocalDescription();
          peer.send({ description: pc.localDescription.toJSON() });
        }
      } else if (data.candidate) {
        try {
          await pc.addIceCandidate(data.candidate);
        } catch (err) {
          if (!peer.ignoreOffer) throw err;
        }
      }
    } catch (err) {
      this._trace('negotiation error', from, String(err));
      this._emit('error', { code: 'negotiation', message: String(err) });
    }
  }

  /**
   * Sends data (JSON-encoded unless a string) over the data channel to one peer, or to all.
   * @param {any} data
   * @param {string} [to] A peer id; omitted: every peer.
   * @returns {number} How many peers it was sent to.
   */
  send(data, to) {
    const text = typeof data === 'string' ? data : JSON.stringify(data);
    let n = 0;
    for (const peer of this.peers.values()) {
      if ((to === undefined || peer.id === to) && peer.channel && peer.channel.readyState === 'open') {
        peer.channel.send(text);
        n++;
      }
    }
    return n;
  }

  /** Turns the microphone on or off. @param {boolean} on */
  setMicEnabled(on) { for (const t of this.stream?.getAudioTracks() || []) t.enabled = on; }

  /** Turns the camera on or off. @param {boolean} on */
  setCameraEnabled(on) { for (const t of this.stream?.getVideoTracks() || []) t.enabled = on; }

  /**
   * Shares the screen in place of the camera, until the user stops sharing.
   * @returns {Promise<MediaStreamTrack>} The screen track.
   */
  async shareScreen() {
    const display = await navigator.mediaDevices.getDisplayMedia({ video: true });
    return this.shareTrack(display.getVideoTracks()[0]);
  }

  /**
   * Sends track in place of the camera (replaceTrack, no renegotiation) until it ends or
   * stopSharing() is called; then the camera comes back.
   * @param {MediaStreamTrack} track
   * @returns {MediaStreamTrack}
   */
  shareTrack(track) {
    this.sharing = track;
    track.addEventListener('ended', () => { if (this.sharing === track) this.stopSharing(); });
    for (const peer of this.peers.values()) peer.videoSender?.replaceTrack(track);
    this._emit('sharing', { track });
    return track;
  }

  /** Goes back from a shared track to the camera. */
  stopSharing() {
    const track = this.sharing;
    if (!track) return;
    this.sharing = null;
    const camera = this.stream?.getVideoTracks()[0] || null;
    for (const peer of this.peers.values()) peer.videoSender?.replaceTrack(camera);
    track.stop();
    this._emit('sharing', { track: null });
  }

  /**
   * How media flows to a peer, from the selected ICE candidate pair.
   * @param {string} id
   * @returns {Promise<PathInfo>}
   */
  async path(id) {
    const peer = this.peers.get(id);
    if (!peer) return { kind: 'unknown' };
    const stats = await peer.pc.getStats();
    let pair = null;
    stats.forEach((s) => {
      if (s.type === 'transport' && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId);
    });
    if (!pair) stats.forEach((s) => { if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') pair = s; });
    if (!pair) return { kind: 'unknown' };
    const local = stats.get(pair.localCandidateId)?.candidateType;
    const remote = stats.get(pair.remoteCandidateId)?.candidateType;
    let kind = 'direct';
    if (local === 'relay' || remote === 'relay') kind = 'relay';
    else if ([local, remote].some((t) => t === 'srflx' || t === 'prflx')) kind = 'stun';
    return { kind, local, remote };
  }

  /** Leaves the room and ends the call. */
  leave() {
    if (this.closed) return;
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify({ type: 'leave' }));
    this.close();
  }

  /** @private Ends everything here; the server keeps the seat until resume_grace (use leave()). */
  close() {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this._timer);
    removeEventListener('pagehide', this._onPageHide);
    for (const id of [...this.peers.keys()]) this._removePeer(id, 'left');
    if (this.ws) this.ws.close(1000);
    this.ws = null;
    this._setState('closed');
  }
}

function safeSessionStorage() {
  try { return globalThis.sessionStorage || null; } catch { return null; }
}
