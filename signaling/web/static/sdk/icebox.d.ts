// Types of the icebox browser SDK (icebox.js beside this file; served at /sdk/icebox.d.ts).
// The README of icebox documents every option, method, event and error code.

/** Error codes of an IceboxError (join() rejections, 'state' failures, thrown by methods). */
export type ErrorCode =
  | 'forbidden-origin' // the server does not allow this page's origin (http.allowed_origins)
  | 'unauthorized' // missing, wrong or expired token (auth.mode)
  | 'forbidden' // the token does not allow this room (a JWT room claim)
  | 'unreachable' // nothing answers at the URL, or WebSocket upgrades do not pass
  | 'unavailable' // the node is draining (shutting down), or its shared bus (Redis) is down
  | 'rate-limited' // too many connections or requests from this address
  | 'room-full' // the room has signaling.max_room_size peers
  | 'bad-room' // the room name is not 1-64 of A-Z a-z 0-9 . _ -
  | 'timeout' // no answer to the join within options.timeout
  | 'replaced' // another connection resumed this session (another tab)
  | 'media' // the camera or microphone could not be used (see cause)
  | 'insecure-context' // the page is not https:// (or localhost): no camera or microphone
  | 'not-joined' // send() or broadcast() after leave()
  | 'unknown-peer' // send() to a peer id that is not in the room
  | 'already-joined' // rejoin() while joining or in the room
  | 'left' // leave() was called while join() was in progress
  | 'bad-option' // an option or argument of the wrong kind
  | (string & {}); // any other code the server sends

/** An error of the SDK or of the server; `code` tells which. */
export class IceboxError extends Error {
  constructor(code: ErrorCode, message: string, cause?: unknown);
  readonly name: 'IceboxError';
  readonly code: ErrorCode;
}

/** Options of join(). */
export interface JoinOptions {
  /** Room name: 1-64 characters of A-Z a-z 0-9 . _ - */
  room: string;
  /** Microphone for the SDK to acquire (true or constraints); leave() stops it. */
  audio?: boolean | MediaTrackConstraints;
  /** Camera for the SDK to acquire (true or constraints); leave() stops it. */
  video?: boolean | MediaTrackConstraints;
  /** The app's own local media; its tracks stay the app's (the SDK never stops them). */
  stream?: MediaStream | null;
  /** Sent to the other peers with peer-joined (a JSON object of at most 1 KiB). */
  meta?: Record<string, unknown>;
  /** API key or JWT, when the server's auth.mode needs one. */
  token?: string;
  /** Relay every connection through TURN (iceTransportPolicy "relay"). */
  relayOnly?: boolean;
  /** join() settles within this many milliseconds (default 10000). */
  timeout?: number;
  /** A connection not up within this many milliseconds counts as failed and restarts ICE (default 15000; longer while ICE makes progress, doubling after each failure up to 4x). */
  iceTimeout?: number;
  /** Where the resume token survives a page reload (default sessionStorage; null: memory only). */
  storage?: Pick<Storage, 'getItem' | 'setItem'> | null;
  /** Keep a trace of signaling and negotiation in call.trace (and console.debug it). */
  debug?: boolean;
}

/** What a participant sends. */
export interface MediaState {
  audio: boolean;
  video: boolean;
  /** A shared screen (or track) in place of the camera. */
  sharing: boolean;
}

/** Another participant in the room. */
export interface Peer {
  /** Peer id, assigned by the server. */
  readonly id: string;
  /** The meta it joined with. */
  readonly meta: Record<string, unknown>;
  /** The connection to it (replaced when it rebuilds its own, e.g. after a reload). */
  readonly pc: RTCPeerConnection;
  /** The data channel of send() and 'message'. */
  readonly channel: RTCDataChannel | null;
  /** Its audio and video tracks, kept current across reconnects: attach it once. */
  readonly stream: MediaStream;
  /** What it sends, as it told us. */
  readonly media: MediaState;
  /** ICE restarts on this connection so far. */
  readonly restarts: number;
}

/** How media flows to a peer. */
export interface PathInfo {
  /** direct between host addresses, through a STUN (reflexive) address, or relayed by TURN. */
  kind: 'direct' | 'stun' | 'relay' | 'unknown';
  /** Local candidate type: host, srflx, prflx, relay. */
  local?: string;
  /** Remote candidate type. */
  remote?: string;
}

/** The state of the call: see the 'state' event. */
export type CallState = 'connecting' | 'connected' | 'reconnecting' | 'left' | 'failed';

/** The events of a Call, by name, with their detail. */
export interface CallEventMap {
  /** The call's own state changed; error when it failed. */
  state: CustomEvent<{ state: CallState; error?: IceboxError }>;
  /** Someone arrived after join() resolved (those already there are in call.peers). */
  'peer-joined': CustomEvent<{ peer: string; meta: Record<string, unknown> }>;
  /** Someone left: left (leave), or disconnected (gone past the server's resume grace). */
  'peer-left': CustomEvent<{ peer: string; reason: 'left' | 'disconnected' | (string & {}) }>;
  /** A remote track arrived (again after a reconnect); stream is the peer's Peer.stream. */
  track: CustomEvent<{ peer: string; track: MediaStreamTrack; streams: readonly MediaStream[]; stream: MediaStream }>;
  /** A connection's state; 'failed' carries a reason and a message, and ICE restarts. */
  'connection-state': CustomEvent<{
    peer: string;
    state: RTCPeerConnectionState;
    reason?: 'ice-failed' | 'ice-timeout';
    message?: string;
  }>;
  /** A participant turned its mic or camera on or off, or shares its screen. */
  'peer-media': CustomEvent<{ peer: string } & MediaState>;
  /** What this call sends changed (mic, camera, device, sharing). */
  'local-media': CustomEvent<MediaState & { stream: MediaStream }>;
  /** A data-channel message (JSON-decoded when it parses). */
  message: CustomEvent<{ peer: string; data: unknown }>;
  /** A broadcast() of another participant, through the server. */
  broadcast: CustomEvent<{ peer: string; data: unknown }>;
  /** A send() that did not reach a peer: its queue was full, or it left or the call ended first. */
  undelivered: CustomEvent<{ peer: string; data: unknown; reason: 'queue-full' | 'closed' | 'peer-left' | 'left' | 'failed' }>;
  /** Something went wrong that the SDK works around (it keeps retrying): server errors, negotiation. */
  error: CustomEvent<{ code: string; message: string }>;
}

/** A call in one room, made by join(). */
export class Call extends EventTarget {
  private constructor(url: string, options: JoinOptions);
  /** The icebox URL, without a trailing slash. */
  readonly url: string;
  readonly room: string;
  readonly meta: Record<string, unknown>;
  /** This participant's peer id ('' before the first welcome). */
  readonly peerId: string;
  readonly state: CallState;
  /** What ended the call, when state is 'failed'. */
  readonly error: IceboxError | null;
  /** Everyone else in the room, by peer id: the way to read the room. */
  readonly peers: ReadonlyMap<string, Peer>;
  /** The local media sent to everyone (attach it to a muted <video> for a preview). */
  readonly stream: MediaStream;
  /** The track shared in place of the camera, or null. */
  readonly sharing: MediaStreamTrack | null;
  /** What this call sends. */
  readonly media: MediaState;
  /** With options.debug: the last 500 lines of signaling and negotiation. */
  readonly trace: readonly string[];

  /** Joins the room again after leave() or a failure. */
  rejoin(): Promise<Call>;
  /** Leaves: closes every connection, stops the tracks the SDK acquired; state 'left'. */
  leave(): void;
  /** Data-channel message to one peer or all; queued until channels open; returns how many peers. */
  send(data: unknown, to?: string): number;
  /** A message to every other member through the server. */
  broadcast(data: unknown): void;
  setMicEnabled(on: boolean): Promise<void>;
  setCameraEnabled(on: boolean): Promise<void>;
  /** Switches microphone or camera to a deviceId of enumerateDevices(). */
  setDevice(kind: 'audio' | 'video', deviceId: string): Promise<MediaStreamTrack>;
  shareScreen(): Promise<MediaStreamTrack>;
  shareTrack(track: MediaStreamTrack): MediaStreamTrack;
  stopSharing(): void;
  /** Restarts ICE with one peer or all (e.g. after a network change). */
  restartIce(peerId?: string): void;
  /** How media flows to a peer. */
  path(peerId: string): Promise<PathInfo>;

  addEventListener<K extends keyof CallEventMap>(type: K, listener: (this: Call, ev: CallEventMap[K]) => unknown, options?: boolean | AddEventListenerOptions): void;
  addEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | AddEventListenerOptions): void;
  removeEventListener<K extends keyof CallEventMap>(type: K, listener: (this: Call, ev: CallEventMap[K]) => unknown, options?: boolean | EventListenerOptions): void;
  removeEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | EventListenerOptions): void;
}

/** Joins a room; resolves with the call once in it, rejects with an IceboxError within options.timeout. */
export function join(url: string, options: JoinOptions): Promise<Call>;
