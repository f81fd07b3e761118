// An app written against the SDK's types, type-checked with tsc --strict by
// go test ./signaling/web (against the npm package built from ../static/sdk).
import { join, Call, IceboxError, type JoinOptions, type Peer, type PathInfo, type CallState } from '@icebox-rtc/sdk';

const videos = new Map<string, HTMLVideoElement>();

function attach(peer: Peer): void {
  let v = videos.get(peer.id);
  if (!v) {
    v = document.createElement('video');
    v.autoplay = true;
    v.playsInline = true;
    videos.set(peer.id, v);
    document.body.append(v);
  }
  v.srcObject = peer.stream;
  v.title = `${String(peer.meta.name ?? 'guest')}: ${peer.media.video ? 'camera on' : 'camera off'}`;
}

export async function mesh(room: string, token?: string): Promise<Call | null> {
  const options: JoinOptions = { room, audio: true, video: { width: 640 }, meta: { name: 'Ada' }, token, timeout: 8000 };
  let call: Call;
  try {
    call = await join('https://icebox.example.com', options);
  } catch (err) {
    if (err instanceof IceboxError) {
      const code: string = err.code;
      if (err.code === 'room-full' || err.code === 'forbidden-origin') console.warn(code, err.message);
      return null;
    }
    throw err;
  }
  for (const peer of call.peers.values()) attach(peer);
  call.addEventListener('peer-joined', (e) => console.log('joined', e.detail.peer, e.detail.meta));
  call.addEventListener('track', (e) => {
    const peer = call.peers.get(e.detail.peer);
    if (peer) attach(peer);
    const kind: string = e.detail.track.kind;
    console.log(kind, e.detail.stream.id);
  });
  call.addEventListener('peer-left', (e) => {
    videos.get(e.detail.peer)?.remove();
    videos.delete(e.detail.peer);
  });
  call.addEventListener('peer-media', (e) => console.log(e.detail.peer, e.detail.audio, e.detail.video, e.detail.sharing));
  call.addEventListener('local-media', (e) => console.log(e.detail.stream.getTracks().length, e.detail.sharing));
  call.addEventListener('connection-state', (e) => {
    if (e.detail.state === 'failed') console.warn(e.detail.reason, e.detail.message);
  });
  call.addEventListener('message', (e) => console.log(e.detail.peer, e.detail.data));
  call.addEventListener('broadcast', (e) => console.log(e.detail.peer, e.detail.data));
  call.addEventListener('undelivered', (e) => console.warn(e.detail.reason, e.detail.data));
  call.addEventListener('error', (e) => console.warn(e.detail.code, e.detail.message));
  call.addEventListener('state', (e) => {
    const s: CallState = e.detail.state;
    if (s === 'failed') console.error(e.detail.error?.code);
  });
  // @ts-expect-error: the detail of 'track' has no such field
  call.addEventListener('track', (e) => e.detail.nope);
  // @ts-expect-error: setDevice takes audio or video
  await call.setDevice('screen', 'x');

  const n: number = call.send({ text: 'hi' });
  call.send('to one', [...call.peers.keys()][0]);
  call.broadcast({ hand: 'up' });
  await call.setMicEnabled(false);
  await call.setCameraEnabled(true);
  const track: MediaStreamTrack = await call.setDevice('video', 'some-device-id');
  const path: PathInfo = await call.path([...call.peers.keys()][0] ?? '');
  console.log(n, track.id, path.kind, call.media.audio, call.state, call.peerId, call.sharing, call.trace.length);
  call.restartIce();
  return call;
}

export async function oneToOne(): Promise<void> {
  const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
  const call = await join('', { room: 'ada-and-bob', stream, relayOnly: true, storage: null, debug: true });
  call.addEventListener('track', (e) => {
    const video = document.querySelector('video');
    if (video) video.srcObject = e.detail.stream;
  });
  call.leave(); // stream's tracks stay the app's
  await call.rejoin();
  await call.shareScreen();
  call.stopSharing();
  call.shareTrack(stream.getVideoTracks()[0]);
}
