/// <reference types="./icebox.d.ts" />
// icebox browser SDK: 1:1 and mesh calls through an icebox server. Types: icebox.d.ts beside
// this file (/sdk/icebox.d.ts). The whole API is documented in icebox's README ("Browser SDK").
//
//   import { join } from '/sdk/icebox.js';
//   const call = await join('https://icebox.example.com', { room: 'team', audio: true, video: true });
//   call.addEventListener('track', (e) => attach(e.detail.peer, e.detail.stream));
//   call.addEventListener('peer-left', (e) => detach(e.detail.peer));
//
// One RTCPeerConnection per other peer (a mesh), negotiated with the perfect-negotiation pattern,
// trickle ICE, the iceServers of icebox's welcome, reconnects with resume and backoff. Only the
// side that made a connection's first offer ever offers on it again (ICE restarts included);
// the other side asks it to over signaling: Firefox and Chromium disagree on DTLS roles when
// the answerer of the first negotiation offers an ICE restart.

const ROOM = /^[A-Za-z0-9._-]{1,64}$/;
const MAX_BACKOFF = 10000;
const OUTBOX_LIMIT = 100; // data-channel messages waiting per peer for its channel to open
const TRANSIENT = new Set(['unreachable', 'unavailable', 'rate-limited', 'timeout']);
const KINDS = /** @type {const} */ (['audio', 'video']);
// Storage keys (icebox URL and room) held by a call of this page: a second call to the same
// room in the same page must not resume the first one's session (it would take its seat).
const held = new Set();

/** An error of the SDK or the server; `code` says which (see README, "Error codes"). */
export class IceboxError extends Error {
  /**
   * @param {string} code
   * @param {string} message
   * @param {unknown} [cause]
   */
  constructor(code, message, cause) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'IceboxError';
    this.code = code;
  }
}

/**
 * Joins a room: acquires the media asked for, connects to the icebox at url ('' for the page's
 * own origin) and calls every peer in the room. Resolves once the room is joined, with
 * call.peers holding everyone already there; rejects with an IceboxError within
 * options.timeout.
 * @param {string} url
 * @param {import('./icebox').JoinOptions} options
 * @returns {Promise<Call>}
 */
export async function join(url, options) {
  const call = new Call(url, options);
  await call.rejoin();
  return call;
}

/**
 * A call in one room, made by join(). Events are CustomEvents with their data in `detail`.
 */
export class Call extends EventTarget {
  /**
   * @param {string} url
   * @param {import('./icebox').JoinOptions} options
   */
  constructor(url, options) {
    super();
    if (!options || typeof options !== 'object') throw new IceboxError('bad-option', 'icebox: join(url, options) needs options with a room');
    if (typeof options.room !== 'string' || !ROOM.test(options.room)) {
      throw new IceboxError('bad-room', `icebox: room must be 1-64 of A-Z a-z 0-9 . _ -, not ${JSON.stringify(options.room)}`);
    }
    for (const key of ['timeout', 'iceTimeout']) {
      const v = options[key];
      if (v !== undefined && !(typeof v === 'number' && v > 0)) throw new IceboxError('bad-option', `icebox: ${key} must be a number of milliseconds above 0`);
    }
    if (options.meta !== undefined && (typeof options.meta !== 'object' || options.meta === null || Array.isArray(options.meta))) {
      throw new IceboxError('bad-option', 'icebox: meta must be an object');
    }
    if (options.stream !== undefined && options.stream !== null && !(options.stream instanceof MediaStream)) {
      throw new IceboxError('bad-option', 'icebox: stream must be a MediaStream');
    }
    /** @type {string} */
    this.url = (url || location.origin).replace(/\/+$/, '');
    /** @type {string} */
    this.room = options.room;
    /** @type {Record<string, unknown>} */
    this.meta = options.meta || {};
    this._token = options.token || '';
    this._relayOnly = !!options.relayOnly;
    this._storage = options.storage === undefined ? safeSessionStorage() : options.storage;
    this._timeout = options.timeout || 10000;
    this._iceTimeout = options.iceTimeout || 15000;
    this._want = { audio: options.audio || false, video: options.video || false };
    /** The local media sent to every peer (tracks of options.stream and those the SDK acquired). */
    this.stream = new MediaStream(options.stream ? options.stream.getTracks() : []);
    /** @type {Set<MediaStreamTrack>} tracks the SDK acquired: it stops them on leave() */
    this._owned = new Set();
    /** @type {MediaStreamTrack|null} */
    this.sharing = null;
    this._mic = true;
    this._camera = true;
    /** @type {Map<string, import('./icebox').Peer>} everyone else in the room, by peer id */
    this.peers = new Map();
    this.peerId = '';
    /** @type {import('./icebox').CallState} */
    this.state = 'left';
    /** @type {IceboxError|null} what ended the call, when state is 'failed' */
    this.error = null;
    this.debug = !!options.debug;
    /** @type {string[]} */
    this.trace = [];
    this._iceServers = [];
    this._lastSeq = 0;
    this._attempt = 0;
    this._outbox = []; // signaling messages waiting for the WebSocket
    this._joined = false; // in the room (the server said joined, or resumed us into it)
    this._announce = false; // peer-joined events: for peers that arrive after join() resolved
    this._wanted = false; // the app wants to be in the room: between rejoin() and leave()
    this._pending = null; // the join() in progress: {resolve, reject, last}
    this._onPageHide = (e) => { if (!e.persisted) this.leave(); };
  }

  // ---- joining and leaving ----

  /**
   * Joins the room again after leave() or a failure, with the same options; join() calls it
   * the first time. Resolves with this call.
   * @returns {Promise<Call>}
   */
  async rejoin() {
    if (this._wanted) throw new IceboxError('already-joined', 'icebox: this call is already joining or in its room');
    this._wanted = true;
    this._announce = false;
    this.error = null;
    this._setState('connecting');
    let tracks;
    try {
      tracks = await this._acquire();
    } catch (err) {
      this._end('failed', /** @type {IceboxError} */ (err));
      throw err;
    }
    if (!this._wanted) { // leave() while the browser was asking for the camera
      for (const track of tracks) track.stop();
      throw this.error || new IceboxError('left', 'icebox: left before the room was joined');
    }
    for (const track of tracks) this._own(track);
    addEventListener('pagehide', this._onPageHide);
    this._holdsKey = !held.has(this._storageKey);
    if (this._holdsKey) held.add(this._storageKey);
    const joined = new Promise((resolve, reject) => { this._pending = { resolve, reject, last: null }; });
    this._joinTimer = setTimeout(() => {
      const last = this._pending && this._pending.last;
      this._end('failed', last || new IceboxError('timeout', `icebox at ${this.url} did not let this page join within ${this._timeout / 1000} s`));
    }, this._timeout);
    this._connect();
    return joined;
  }

  /** Leaves the room: closes every connection and stops the tracks the SDK acquired. */
  leave() {
    if (!this._wanted) return;
    if (this.ws && this.ws.readyState === WebSocket.OPEN && this.peerId) this.ws.send(JSON.stringify({ type: 'leave' }));
    this._end('left', null);
  }

  /**
   * @private Ends the call here, by leave() (state left) or an error (state failed): no
   * peer-left events (the others did not leave), every connection closed, acquired tracks stopped.
   * @param {'left'|'failed'} state
   * @param {IceboxError|null} error
   */
  _end(state, error) {
    if (!this._wanted) return;
    this._wanted = false;
    this._joined = false;
    clearTimeout(this._timer);
    clearTimeout(this._joinTimer);
    removeEventListener('pagehide', this._onPageHide);
    if (this._holdsKey) held.delete(this._storageKey);
    this._holdsKey = false;
    const ws = this.ws;
    this.ws = null;
    if (ws) ws.close(1000);
    for (const peer of this.peers.values()) this._closePeer(peer, state === 'left' ? 'left' : 'failed');
    this.peers.clear();
    if (this.sharing && this._owned.has(this.sharing)) this.sharing.stop();
    this.sharing = null;
    for (const track of this._owned) {
      track.stop();
      this.stream.removeTrack(track);
    }
    this._owned.clear();
    this._resume = '';
    this.peerId = '';
    this._lastSeq = 0;
    this._outbox = [];
    this.error = error;
    const pending = this._pending;
    this._pending = null;
    this._setState(state, error);
    if (pending) pending.reject(error || new IceboxError('left', 'icebox: left before the room was joined'));
  }

  /**
   * @private Gets the tracks options.audio and options.video ask for and the stream lacks.
   * @returns {Promise<MediaStreamTrack[]>}
   */
  async _acquire() {
    const ask = {};
    for (const kind of KINDS) {
      if (this._want[kind] && !this._track(kind)) ask[kind] = this._want[kind];
    }
    if (!ask.audio && !ask.video) return [];
    return getMedia(ask);
  }

  /** @private */
  _own(track) {
    this._owned.add(track);
    this.stream.addTrack(track);
  }

  // ---- signaling ----

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
  _setState(state, error) {
    if (this.state === state) return;
    this.state = state;
    this._emit('state', error ? { state, error } : { state });
  }

  /** @private */
  get _storageKey() { return `icebox:${this.url}:${this.room}`; }

  /** @private */
  _saved() {
    if (!this._holdsKey) return null;
    try { return JSON.parse(this._storage?.getItem(this._storageKey) || 'null'); } catch { return null; }
  }

  /** @private */
  _save() {
    if (!this._holdsKey) return;
    try { this._storage?.setItem(this._storageKey, JSON.stringify({ resume: this._resume, last: this._lastSeq })); } catch { /* full or denied */ }
  }

  /** @private */
  _connect() {
    const saved = this._resume ? { resume: this._resume, last: this._lastSeq } : this._saved();
    const q = new URLSearchParams();
    if (this._token) q.set('token', this._token);
    if (saved && saved.resume) {
      q.set('resume', saved.resume);
      if (saved.last) q.set('last', String(saved.last));
      if (!this._resume) this._lastSeq = saved.last || 0; // a reload: continue the numbering
    }
    let ws;
    try {
      ws = new WebSocket(`${this.url.replace(/^http/, 'ws')}/ws?${q}`);
    } catch (err) {
      this._end('failed', new IceboxError('bad-option', `icebox: ${this.url} is not an http(s) URL: ${err}`, err));
      return;
    }
    this.ws = ws;
    let welcomed = false;
    ws.onmessage = (e) => {
      if (this.ws !== ws) return;
      let m;
      try { m = JSON.parse(e.data); } catch { return; }
      if (m.type === 'welcome') { welcomed = true; this._welcome(m); return; }
      if (m.seq) {
        if (m.seq <= this._lastSeq) return; // replayed after a resume: seen already
        this._lastSeq = m.seq;
        this._save();
      }
      this._message(m);
    };
    ws.onclose = (e) => {
      if (this.ws !== ws) return;
      this.ws = null;
      if (e.code === 4001) { // another connection resumed this session (another tab)
        this._end('failed', new IceboxError('replaced', 'icebox: this call continues in another connection (another tab?)'));
        return;
      }
      if (!welcomed) { this._diagnose(); return; }
      this._retry();
    };
  }

  /** @private The WebSocket closed before its welcome: browsers hide why. Find out. */
  async _diagnose() {
    const err = await diagnose(this.url, this._token);
    if (this.ws || !this._wanted) return;
    this._trace('diagnosis', err.code, err.message);
    if (!TRANSIENT.has(err.code)) { this._end('failed', err); return; }
    if (this._pending) this._pending.last = err;
    else this._emit('error', { code: err.code, message: err.message });
    this._retry();
  }

  /** @private */
  _retry() {
    if (!this._wanted) return;
    if (this._joined) this._setState('reconnecting');
    const delay = Math.min(MAX_BACKOFF, 500 * 2 ** this._attempt) * (0.75 + Math.random() / 2);
    this._attempt++;
    clearTimeout(this._timer);
    this._timer = setTimeout(() => this._connect(), delay);
  }

  /** @private */
  _welcome(w) {
    this._attempt = 0;
    const fresh = !w.resumed || (this.peerId && w.peer !== this.peerId);
    this.peerId = w.peer;
    this._resume = w.resume;
    this._iceServers = w.iceServers || [];
    if (!w.resumed) this._lastSeq = 0;
    this._save();
    if (fresh && this._joined) {
      // A new session: the old one is gone, and with it our seat and the others' connections.
      for (const id of [...this.peers.keys()]) this._removePeer(id, 'disconnected');
      this._joined = false;
    }
    if (w.resumed && w.room === this.room) {
      // Back in the room. After a page reload there are no connections yet: build them (the
      // others see a new connection generation and rebuild theirs).
      const present = new Set((w.peers || []).map((p) => p.peer));
      for (const id of [...this.peers.keys()]) if (!present.has(id)) this._removePeer(id, 'left');
      for (const p of w.peers || []) this._addPeer(p.peer, p.meta, true);
      this._inRoom();
    } else {
      this._send({ type: 'join', room: this.room, meta: this.meta, id: 'join' });
    }
    const queued = this._outbox;
    this._outbox = [];
    for (const m of queued) this._send(m);
  }

  /** @private The server put us in the room. */
  _inRoom() {
    this._joined = true;
    this._announce = true;
    this._setState('connected');
    clearTimeout(this._joinTimer);
    const pending = this._pending;
    this._pending = null;
    if (pending) pending.resolve(this);
  }

  /** @private */
  _message(m) {
    switch (m.type) {
      case 'joined':
        for (const p of m.peers || []) this._addPeer(p.peer, p.meta, true); // we arrive: we call
        this._inRoom();
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
        if (m.re === 'join') {
          const err = new IceboxError(m.code, m.message);
          if (!TRANSIENT.has(m.code)) {
            this._end('failed', err);
          } else { // e.g. the shared bus is down: try again
            if (this._pending) this._pending.last = err;
            else this._emit('error', { code: err.code, message: err.message });
            this._dropSocket();
          }
          return;
        }
        if (m.code === 'unknown-peer') { // a peer left while our message to it was on the way
          this._trace('unknown peer', m.message);
          return;
        }
        this._emit('error', { code: m.code, message: m.message });
        break;
    }
  }

  /** @private Closes the WebSocket and reconnects after a backoff. */
  _dropSocket() {
    const ws = this.ws;
    this.ws = null;
    if (ws) ws.close(1000);
    this._retry();
  }

  /** @private */
  _send(m) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN && this.peerId) this.ws.send(JSON.stringify(m));
    else if (m.type !== 'join') this._outbox.push(m); // the server queues what arrives meanwhile; so do we
  }

  // ---- peers ----

  /** @private */
  _config() {
    return { iceServers: this._iceServers, iceTransportPolicy: this._relayOnly ? 'relay' : 'all' };
  }

  /**
   * @private
   * A peer in the room, with its connection. The side that arrives in a room calls (active: it
   * adds its media and offers at once); the side already there waits for that offer. The app
   * hears of it with peer-joined, except for the peers already there when join() resolves.
   */
  _addPeer(id, meta, active) {
    if (this.peers.has(id) || id === this.peerId) return this.peers.get(id);
    const peer = {
      id,
      meta: meta || {},
      pc: /** @type {RTCPeerConnection} */ (/** @type {unknown} */ (null)),
      channel: null,
      stream: new MediaStream(),
      media: { audio: false, video: false, sharing: false },
      restarts: 0,
      _outbox: [],
    };
    this.peers.set(id, peer);
    this._connectPeer(peer, active);
    if (this._announce) this._emit('peer-joined', { peer: id, meta: peer.meta });
    return peer;
  }

  /** @private A new RTCPeerConnection to peer (the first, or after the other side rebuilt its own). */
  _connectPeer(peer, active) {
    const id = peer.id;
    const pc = new RTCPeerConnection(this._config());
    Object.assign(peer, {
      pc,
      channel: null,
      _gen: Math.random().toString(36).slice(2), // this connection's generation
      _remoteGen: null, // the generation of the other side's connection, once known
      _polite: this.peerId > id,
      _makingOffer: false, _ignoreOffer: false,
      _offerer: null, // true: we made this connection's first offer; false: the other side did
      _active: false,
      _senders: {},
      _relays: new Map(), _remoteCandidates: 0, _candidateError: null, _failures: 0,
    });
    this._trace('connect', id, 'gen', peer._gen, 'polite', peer._polite, active ? 'active' : 'passive');
    peer._send = (data) => {
      this._trace('send', id, data.description ? data.description.type : Object.keys(data).join(','), 'gen', peer._gen, 'to', peer._remoteGen);
      this._send({ type: 'signal', to: id, data: { gen: peer._gen, to: peer._remoteGen, ...data } });
    };
    pc.onnegotiationneeded = () => {
      if (peer.pc !== pc) return;
      if (peer._offerer === false) peer._send({ ask: 'negotiate' }); // never offer as the first answerer
      else this._negotiate(peer);
    };
    pc.onicecandidate = ({ candidate }) => {
      if (peer.pc !== pc || !candidate) return;
      if (candidate.type === 'relay' || / typ relay /.test(candidate.candidate)) {
        const u = candidate.usernameFragment || '';
        peer._relays.set(u, (peer._relays.get(u) || 0) + 1);
      }
      peer._send({ candidate: candidate.toJSON() });
    };
    pc.onicecandidateerror = (e) => {
      if (peer.pc === pc) peer._candidateError = { url: e.url, code: e.errorCode, text: e.errorText };
    };
    pc.ontrack = (e) => {
      if (peer.pc !== pc) return;
      for (const old of peer.stream.getTracks()) if (old.kind === e.track.kind && old !== e.track) peer.stream.removeTrack(old);
      if (!peer.stream.getTracks().includes(e.track)) peer.stream.addTrack(e.track);
      this._emit('track', { peer: id, track: e.track, streams: e.streams, stream: peer.stream });
    };
    pc.onsignalingstatechange = () => this._trace('signaling', id, peer._gen, pc.signalingState);
    pc.onconnectionstatechange = () => {
      if (peer.pc !== pc) return;
      const state = pc.connectionState;
      this._trace('connection', id, peer._gen, state);
      if (state === 'failed') { this._iceFailed(peer, 'ice-failed'); return; }
      this._emit('connection-state', { peer: id, state });
      if (state === 'connected') {
        clearTimeout(peer._iceTimer);
        peer._failures = 0;
      }
      else if (state === 'disconnected') this._watch(peer);
    };
    if (active) this._activate(peer);
    this._watch(peer);
  }

  /** @private Adds our media and the data channel to peer's connection. */
  _activate(peer) {
    if (peer._active) return;
    peer._active = true;
    const pc = peer.pc;
    if (pc.getTransceivers().length === 0) {
      // Offering: one sendrecv transceiver per kind, track or not, so a camera added later
      // needs no renegotiation (replaceTrack).
      for (const kind of KINDS) {
        const t = pc.addTransceiver(this._outgoing(kind) || kind, { direction: 'sendrecv', streams: [this.stream] });
        peer._senders[kind] = t.sender;
      }
    } else {
      // Answering: send on the transceivers of the offer.
      for (const t of pc.getTransceivers()) {
        const kind = t.receiver.track.kind;
        if (peer._senders[kind] || (kind !== 'audio' && kind !== 'video')) continue;
        t.direction = 'sendrecv';
        t.sender.replaceTrack(this._outgoing(kind)).catch(() => {});
        t.sender.setStreams?.(this.stream);
        peer._senders[kind] = t.sender;
      }
    }
    const channel = pc.createDataChannel('icebox', { negotiated: true, id: 0 }); // no negotiation race
    peer.channel = channel;
    channel.onopen = () => {
      const queued = peer._outbox;
      peer._outbox = [];
      for (const m of queued) {
        try { channel.send(m.text); } catch { this._emit('undelivered', { peer: peer.id, data: m.data, reason: 'closed' }); }
      }
    };
    channel.onmessage = (e) => {
      let data = e.data;
      try { data = JSON.parse(e.data); } catch { /* a plain string */ }
      this._emit('message', { peer: peer.id, data });
    };
  }

  /** @private Offers on peer's connection (first offer, renegotiation, ICE restart). */
  async _negotiate(peer) {
    const pc = peer.pc;
    try {
      peer._makingOffer = true;
      await pc.setLocalDescription();
      if (pc.localDescription.type === 'offer') peer._send({ description: pc.localDescription.toJSON(), media: this._media() });
    } catch (err) {
      this._trace('offer error', peer.id, String(err));
      this._emit('error', { code: 'negotiation', message: String(err) });
    } finally {
      peer._makingOffer = false;
    }
  }

  /**
   * @private (Re)arms the watchdog: the connection must be up within iceTimeout. While it is
   * still making progress (gathering candidates, or checking pairs of candidates from both
   * sides: a slow TURN server, a busy machine) the browser will say if it fails, so the
   * watchdog waits up to three more times before it restarts ICE itself; it is for what
   * browsers never report, like a side without candidates. After each failure the wait
   * doubles, up to four times iceTimeout, so restarts never pile up.
   */
  _watch(peer) {
    clearTimeout(peer._iceTimer);
    const pc = peer.pc;
    const wait = this._iceTimeout * 2 ** Math.min(peer._failures || 0, 2);
    let waited = 0;
    const check = () => {
      if (peer.pc !== pc || this.peers.get(peer.id) !== peer || pc.connectionState === 'connected') return;
      waited += wait;
      const checking = pc.iceConnectionState === 'checking' && peer._remoteCandidates > 0 && (this._relayCount(peer) > 0 || !this._relayOnly);
      if ((pc.iceGatheringState === 'gathering' || checking) && waited < 4 * wait) {
        peer._iceTimer = setTimeout(check, wait);
        return;
      }
      peer._failures = (peer._failures || 0) + 1;
      this._iceFailed(peer, 'ice-timeout', waited / 1000);
    };
    peer._iceTimer = setTimeout(check, wait);
  }

  /** @private ICE failed or never connected: say why, and restart it. */
  _iceFailed(peer, reason, seconds) {
    const message = this._whyFailed(peer, reason, seconds);
    this._trace('ice failed', peer.id, reason, message);
    this._emit('connection-state', { peer: peer.id, state: 'failed', reason, message });
    if (reason === 'ice-failed' && performance.now() - (peer._restartedAt || -Infinity) < this._iceTimeout) {
      this._watch(peer); // a restart is under way: give it its time before the next
      return;
    }
    this._restartIce(peer);
  }

  /** @private */
  _whyFailed(peer, reason, seconds) {
    const head = reason === 'ice-timeout' ? `not connected within ${seconds} s` : 'ICE failed';
    const e = peer._candidateError;
    const turnError = e && e.code && e.code !== 701 ? `; ${e.url || 'TURN'} answered ${e.code} ${e.text || ''}`.trimEnd() : '';
    if (this._relayOnly && this._relayCount(peer) === 0) {
      return `${head}: no TURN relay address (TURN unreachable, credentials refused, or its quota full${turnError})`;
    }
    if (peer._remoteCandidates === 0) return `${head}: no ICE candidates from the other side${turnError}`;
    return `${head}: no candidate pair worked${turnError}`;
  }

  /**
   * @private The relay candidates of the connection's current ICE generation: after a restart,
   * those gathered before belong to the old one (whose TURN allocation the browser gives up).
   */
  _relayCount(peer) {
    const m = /a=ice-ufrag:(\S+)/.exec(peer.pc.localDescription ? peer.pc.localDescription.sdp : '');
    if (m && peer._relays.has(m[1])) return peer._relays.get(m[1]);
    if (m && [...peer._relays.keys()].some((u) => u !== '')) return 0; // gathered for an earlier generation
    let n = 0; // the browser does not say which generation a candidate is for
    for (const c of peer._relays.values()) n += c;
    return n;
  }

  /** @private Only the side that made the first offer restarts ICE; the other asks it to. */
  _restartIce(peer) {
    peer.restarts++;
    peer._restartedAt = performance.now();
    this._watch(peer);
    if (peer._offerer === false || (peer._offerer === null && !peer._active)) { peer._send({ ask: 'restart' }); return; }
    peer.pc.restartIce();
    if (peer.pc.signalingState === 'have-local-offer') this._negotiate(peer); // the first offer went unanswered
  }

  /**
   * Restarts ICE with one peer, or with every peer (e.g. after the network changed). The SDK
   * does it by itself when a connection fails.
   * @param {string} [peerId]
   */
  restartIce(peerId) {
    for (const peer of this.peers.values()) if (peerId === undefined || peer.id === peerId) this._restartIce(peer);
  }

  /** @private */
  _closePeer(peer, reason) {
    clearTimeout(peer._iceTimer);
    peer.pc.close();
    for (const m of peer._outbox) this._emit('undelivered', { peer: peer.id, data: m.data, reason });
    peer._outbox = [];
  }

  /** @private */
  _removePeer(id, reason) {
    const peer = this.peers.get(id);
    if (!peer) return;
    this.peers.delete(id);
    this._closePeer(peer, 'peer-left');
    this._emit('peer-left', { peer: id, reason });
  }

  /** @private Perfect negotiation, one message of the other side. */
  async _signal(from, data) {
    if (!data || typeof data !== 'object') return;
    const peer = this.peers.get(from);
    this._trace('recv', from, data.description ? data.description.type : Object.keys(data).join(','), 'gen', data.gen, 'to', data.to, 'mine', peer && peer._gen, 'known', peer && peer._remoteGen);
    if (!peer) return; // a late message of a peer that has left
    if (data.to && data.to !== peer._gen) return; // meant for a connection of ours that is gone
    if (peer._remoteGen && data.gen !== peer._remoteGen) {
      // The other side rebuilt its connection (a reload, a new session): so do we. Its offer
      // is on the way.
      this._trace('rebuild', from);
      clearTimeout(peer._iceTimer);
      peer.pc.close();
      this._connectPeer(peer, false);
      this._emit('connection-state', { peer: from, state: 'new' });
    }
    peer._remoteGen = data.gen;
    const pc = peer.pc;
    if (data.media) this._peerMedia(peer, data.media);
    try {
      if (data.description) {
        const offer = data.description.type === 'offer';
        const offerCollision = offer && (peer._makingOffer || pc.signalingState !== 'stable');
        peer._ignoreOffer = !peer._polite && offerCollision;
        if (peer._ignoreOffer) return;
        await pc.setRemoteDescription(data.description);
        if (peer._offerer === null) peer._offerer = !offer;
        if (offer) {
          this._activate(peer); // a passive side adds its media to the answer
          await pc.setLocalDescription();
          peer._send({ description: pc.localDescription.toJSON(), media: this._media() });
        }
      } else if (data.candidate) {
        peer._remoteCandidates++;
        try {
          await pc.addIceCandidate(data.candidate);
        } catch (err) {
          if (!peer._ignoreOffer) throw err;
        }
      } else if (data.ask && peer._offerer !== false) {
        // The first answerer asks us to offer: an ICE restart, or a renegotiation it needs.
        if (data.ask === 'restart') pc.restartIce();
        else if (pc.signalingState === 'stable') this._negotiate(peer);
      }
    } catch (err) {
      this._trace('negotiation error', from, String(err));
      this._emit('error', { code: 'negotiation', message: String(err) });
    }
  }

  // ---- media ----

  /** @private */
  _track(kind) { return this.stream.getTracks().find((t) => t.kind === kind && t.readyState === 'live') || null; }

  /** @private The track sent for kind: the shared screen in place of the camera. */
  _outgoing(kind) { return kind === 'video' && this.sharing ? this.sharing : this._track(kind); }

  /** @private What we send, as the others see it. */
  _media() {
    const audio = this._track('audio');
    const video = this._track('video');
    return {
      audio: !!audio && audio.enabled && this._mic,
      video: !!this.sharing || (!!video && video.enabled && this._camera),
      sharing: !!this.sharing,
    };
  }

  /** @private Tells every peer and the app what we now send. */
  _mediaChanged() {
    const media = this._media();
    for (const peer of this.peers.values()) peer._send({ media });
    this._emit('local-media', { ...media, stream: this.stream });
  }

  /** @private */
  _peerMedia(peer, media) {
    const next = { audio: !!media.audio, video: !!media.video, sharing: !!media.sharing };
    if (next.audio === peer.media.audio && next.video === peer.media.video && next.sharing === peer.media.sharing) return;
    peer.media = next;
    this._emit('peer-media', { peer: peer.id, ...next });
  }

  /** @private Sends the current track of kind on every connection. */
  _replace(kind) {
    const track = this._outgoing(kind);
    for (const peer of this.peers.values()) peer._senders[kind]?.replaceTrack(track).catch(() => {});
  }

  /** What this call sends: audio and video on or off, a shared screen in place of the camera. */
  get media() { return this._media(); }

  /**
   * Turns the microphone on or off; on without a microphone acquires one (options.audio, or the
   * device of setDevice()).
   * @param {boolean} on
   * @returns {Promise<void>}
   */
  async setMicEnabled(on) { await this._setEnabled('audio', on); }

  /**
   * Turns the camera on or off; on without a camera (joined without one) acquires one and
   * sends it to everyone, with no renegotiation.
   * @param {boolean} on
   * @returns {Promise<void>}
   */
  async setCameraEnabled(on) { await this._setEnabled('video', on); }

  /** @private */
  async _setEnabled(kind, on) {
    if (on && !this._track(kind)) {
      const [track] = await getMedia({ [kind]: this._want[kind] || true });
      this._own(track);
      this._replace(kind);
    }
    for (const t of this.stream.getTracks()) if (t.kind === kind) t.enabled = on;
    if (kind === 'audio') this._mic = on;
    else this._camera = on;
    this._mediaChanged();
  }

  /**
   * Switches the microphone or camera to another device (a deviceId of
   * navigator.mediaDevices.enumerateDevices()): the new track is sent to everyone in place of
   * the old one, which is stopped if the SDK acquired it.
   * @param {'audio'|'video'} kind
   * @param {string} deviceId
   * @returns {Promise<MediaStreamTrack>} the new track
   */
  async setDevice(kind, deviceId) {
    if (kind !== 'audio' && kind !== 'video') throw new IceboxError('bad-option', `icebox: setDevice kind must be audio or video, not ${JSON.stringify(kind)}`);
    const base = typeof this._want[kind] === 'object' ? this._want[kind] : {};
    this._want[kind] = { ...base, deviceId: { exact: deviceId } };
    const [track] = await getMedia({ [kind]: this._want[kind] });
    const old = this._track(kind);
    track.enabled = kind === 'audio' ? this._mic : this._camera;
    if (old) {
      this.stream.removeTrack(old);
      if (this._owned.delete(old)) old.stop();
    }
    this._own(track);
    this._replace(kind);
    this._mediaChanged();
    return track;
  }

  /**
   * Shares the screen in place of the camera, until the user stops sharing or stopSharing().
   * @returns {Promise<MediaStreamTrack>} the screen track (stopped by the SDK when sharing ends)
   */
  async shareScreen() {
    if (!navigator.mediaDevices?.getDisplayMedia) throw new IceboxError('media', 'icebox: this browser cannot share the screen');
    const display = await navigator.mediaDevices.getDisplayMedia({ video: true });
    const track = display.getVideoTracks()[0];
    this._owned.add(track);
    return this.shareTrack(track);
  }

  /**
   * Sends track in place of the camera (no renegotiation) until it ends or stopSharing();
   * then the camera comes back. A track the app passes stays the app's: the SDK does not stop it.
   * @param {MediaStreamTrack} track
   * @returns {MediaStreamTrack}
   */
  shareTrack(track) {
    if (!(track instanceof MediaStreamTrack) || track.kind !== 'video') throw new IceboxError('bad-option', 'icebox: shareTrack needs a video MediaStreamTrack');
    const previous = this.sharing;
    this.sharing = track;
    if (previous && this._owned.delete(previous)) previous.stop();
    track.addEventListener('ended', () => { if (this.sharing === track) this.stopSharing(); });
    this._replace('video');
    this._mediaChanged();
    return track;
  }

  /** Goes back from a shared screen or track to the camera. */
  stopSharing() {
    const track = this.sharing;
    if (!track) return;
    this.sharing = null;
    if (this._owned.delete(track)) track.stop();
    this._replace('video');
    this._mediaChanged();
  }

  // ---- data ----

  /**
   * Sends data (JSON-encoded unless a string) over the data channel to one peer, or to all.
   * To a peer whose channel is not open yet it is queued (up to 100 messages) and sent when
   * the channel opens; what cannot be delivered comes back as an 'undelivered' event.
   * @param {unknown} data
   * @param {string} [to] a peer id; omitted: every peer
   * @returns {number} how many peers it was sent or queued to
   */
  send(data, to) {
    if (!this._wanted) throw new IceboxError('not-joined', 'icebox: send() after leave(): the call is not in its room');
    if (to !== undefined && !this.peers.has(to)) throw new IceboxError('unknown-peer', `icebox: no peer ${JSON.stringify(to)} in the room`);
    const text = typeof data === 'string' ? data : JSON.stringify(data);
    let n = 0;
    for (const peer of this.peers.values()) {
      if (to !== undefined && peer.id !== to) continue;
      if (peer.channel && peer.channel.readyState === 'open') {
        peer.channel.send(text);
      } else if (peer._outbox.length >= OUTBOX_LIMIT) {
        this._emit('undelivered', { peer: peer.id, data, reason: 'queue-full' });
        continue;
      } else {
        peer._outbox.push({ data, text });
      }
      n++;
    }
    return n;
  }

  /**
   * Sends data to every other member through the server (signaling), even before any
   * connection is up; they get a 'broadcast' event. Keep it small (signaling.max_message_bytes).
   * @param {unknown} data
   */
  broadcast(data) {
    if (!this._wanted) throw new IceboxError('not-joined', 'icebox: broadcast() after leave(): the call is not in its room');
    this._send({ type: 'broadcast', data });
  }

  // ---- inspection ----

  /**
   * How media flows to a peer, from the selected ICE candidate pair.
   * @param {string} id
   * @returns {Promise<import('./icebox').PathInfo>}
   */
  async path(id) {
    const peer = this.peers.get(id);
    if (!peer) return { kind: 'unknown' };
    const stats = await peer.pc.getStats();
    let pair = null;
    stats.forEach((s) => {
      if (s.type === 'transport' && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId);
    });
    if (!pair) stats.forEach((s) => { if (s.type === 'candidate-pair' && (s.selected || s.nominated) && s.state === 'succeeded') pair = s; });
    if (!pair) return { kind: 'unknown' };
    const local = stats.get(pair.localCandidateId)?.candidateType;
    const remote = stats.get(pair.remoteCandidateId)?.candidateType;
    let kind = 'direct';
    if (local === 'relay' || remote === 'relay') kind = 'relay';
    else if ([local, remote].some((t) => t === 'srflx' || t === 'prflx')) kind = 'stun';
    return { kind, local, remote };
  }
}

/**
 * getUserMedia, with the reason in an IceboxError when the browser says no.
 * @param {{audio?: boolean|MediaTrackConstraints, video?: boolean|MediaTrackConstraints}} ask
 * @returns {Promise<MediaStreamTrack[]>}
 */
async function getMedia(ask) {
  if (!navigator.mediaDevices?.getUserMedia) {
    throw new IceboxError(globalThis.isSecureContext === false ? 'insecure-context' : 'media',
      globalThis.isSecureContext === false
        ? 'icebox: this page is not a secure context (plain http:// from another machine), so the browser keeps the camera and microphone away: open it over https:// (or on localhost)'
        : 'icebox: this browser has no camera or microphone access (navigator.mediaDevices)');
  }
  try {
    const s = await navigator.mediaDevices.getUserMedia(ask);
    return s.getTracks();
  } catch (err) {
    const name = err && err.name;
    const why = name === 'NotAllowedError' ? 'permission denied'
      : name === 'NotFoundError' ? 'no such device'
        : name === 'NotReadableError' ? 'the device is in use or failed' : String(err && err.message || err);
    throw new IceboxError('media', `icebox: cannot use the ${Object.keys(ask).join(' and ')} (${name}: ${why})`, err);
  }
}

/**
 * Why a WebSocket to url closed before its welcome. Browsers hide the HTTP status of a refused
 * WebSocket, so ask /ice-config, which answers the same refusals as JSON. A refused origin gets
 * no CORS headers, so that fetch fails like an unreachable server would; an opaque (no-cors)
 * request tells the two apart: it succeeds whenever the server answers at all.
 * @param {string} url
 * @param {string} token
 * @returns {Promise<IceboxError>}
 */
async function diagnose(url, token) {
  const q = token ? `?token=${encodeURIComponent(token)}` : '';
  try {
    const r = await fetch(`${url}/ice-config${q}`, { cache: 'no-store' });
    if (r.ok) return new IceboxError('unreachable', `icebox at ${url} answers HTTP but its WebSocket (/ws) does not open: a proxy in between that does not pass WebSocket upgrades?`);
    const body = await r.json().catch(() => null);
    if (body && body.error && body.error.code) return new IceboxError(body.error.code, body.error.message);
    return new IceboxError('unreachable', `icebox at ${url} answered HTTP ${r.status}`);
  } catch {
    try {
      await fetch(`${url}/healthz`, { mode: 'no-cors', cache: 'no-store' });
    } catch {
      return new IceboxError('unreachable', `cannot reach icebox at ${url} (or it refuses this page's origin and cannot be asked why)`);
    }
    return new IceboxError('forbidden-origin', `icebox at ${url} does not allow this page's origin ${location.origin}: add it to http.allowed_origins`);
  }
}

function safeSessionStorage() {
  try { return globalThis.sessionStorage || null; } catch { return null; }
}
