// passerelle's pages: the status page (/) and the viewer (/view/<camera-id>).
//
// One module, no dependency, no build step. The DOM is built with textContent only: the
// Content-Security-Policy enforces Trusted Types, so no string ever becomes markup.
// Authentication is a bearer token kept in sessionStorage (this tab only), taken from
// the address fragment (#token=...) or the sign-in form; a 401 brings the form back.

const TOKEN_KEY = 'passerelle.token';
/** How often the status page reloads its JSON. */
const REFRESH_MS = 5000;
/** How often a player reads getStats() (and the pages show it). */
const STATS_MS = 1000;
/** How often a player asks the gateway whether its session still runs. */
const SESSION_CHECK_MS = 5000;
/** No new decoded frame for this long: stalled, ask the gateway why. */
const STALL_MS = 3000;
/** Host candidates only (no STUN): gathering takes milliseconds; never wait longer. */
const ICE_GATHERING_TIMEOUT_MS = 2000;
/** Until the first frame, getStats() is polled this often to time it. */
const FIRST_FRAME_POLL_MS = 50;
/** A tile must stay on screen this long before its player starts (fast scrolling). */
const TILE_START_DELAY_MS = 250;
/** Milliseconds between the NTP epoch (1900) and the Unix epoch (1970). */
const NTP_UNIX_OFFSET_MS = 2208988800000;
/** Past this, "behind camera clock" compares unrelated clocks. */
const PLAYOUT_LAG_SANE_MS = 10 * 60 * 1000;

// ---------------------------------------------------------------------------------------
// Small DOM and formatting helpers

const $ = (id) => document.getElementById(id);

function setText(node, value) {
  const text = value == null ? '' : String(value);
  if (node.textContent !== text) node.textContent = text;
}

function setData(node, key, value) {
  const text = value == null ? '' : String(value);
  if (node.dataset[key] !== text) node.dataset[key] = text;
}

function show(node, visible) {
  if (node.hidden === visible) node.hidden = !visible;
}

/** el('span', {className: 'x', text: 'y', dataset: {a: 'b'}}, child, ...) */
function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === 'text') node.textContent = value;
    else if (key === 'dataset') Object.assign(node.dataset, value);
    else node[key] = value;
  }
  for (const child of children) {
    if (child != null) node.append(child);
  }
  return node;
}

const pad = (n) => String(n).padStart(2, '0');

/** Local time, `2026-02-02 18:05`. */
function fmtTime(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

/** `18:05:12` today, else `2026-02-02 18:05`. */
function fmtSince(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  if (d.toDateString() !== new Date().toDateString()) return fmtTime(iso);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

function fmtDuration(ms) {
  const s = Math.round(Math.abs(ms) / 1000);
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h} h ${pad(m % 60)} min`;
  return `${Math.floor(h / 24)} d`;
}

/** `in 2 h 05 min` or `3 min ago`. */
function fmtRelative(iso) {
  const ms = new Date(iso).getTime() - Date.now();
  if (Number.isNaN(ms)) return '';
  return ms >= 0 ? `in ${fmtDuration(ms)}` : `${fmtDuration(ms)} ago`;
}

function fmtNumber(value, digits = 0) {
  if (value == null || !Number.isFinite(value)) return '—';
  return value.toLocaleString('en-US', {
    minimumFractionDigits: digits,
    maximumFractionDigits: digits,
  });
}

function fmtBitrate(kbps) {
  if (kbps == null || !Number.isFinite(kbps)) return '—';
  return kbps >= 1000 ? `${fmtNumber(kbps / 1000, 2)} Mbit/s` : `${fmtNumber(kbps)} kbit/s`;
}

/** For datetime-local inputs: `2026-02-02T18:05` in local time. */
function localInputValue(date) {
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T${pad(date.getHours())}:${pad(date.getMinutes())}`;
}

/** A camera id as a URL path: each segment encoded (ids are URL-safe already). */
function cameraPath(camera) {
  return camera.split('/').map(encodeURIComponent).join('/');
}

// ---------------------------------------------------------------------------------------
// The bearer token

const tokens = {
  memory: null,
  get() {
    try {
      return sessionStorage.getItem(TOKEN_KEY) ?? this.memory;
    } catch {
      return this.memory;
    }
  },
  set(token) {
    this.memory = token;
    try {
      sessionStorage.setItem(TOKEN_KEY, token);
    } catch {
      // Storage disabled: the token lives as long as the page.
    }
  },
  clear() {
    this.memory = null;
    try {
      sessionStorage.removeItem(TOKEN_KEY);
    } catch {
      // Nothing stored.
    }
  },
};

/**
 * Reads `#token=...&intervene=...`, keeps the token, and removes the whole fragment from
 * the address bar and history. Not URLSearchParams: it would turn a token's `+` into a
 * space.
 */
function takeFragment() {
  const values = new Map();
  const hash = location.hash.slice(1);
  if (!hash) return values;
  for (const part of hash.split('&')) {
    const at = part.indexOf('=');
    const key = at < 0 ? part : part.slice(0, at);
    const raw = at < 0 ? '' : part.slice(at + 1);
    let value = raw;
    try {
      value = decodeURIComponent(raw);
    } catch {
      // Keep it as typed.
    }
    values.set(key, value);
  }
  const token = (values.get('token') ?? '').trim();
  if (token) tokens.set(token);
  history.replaceState(history.state, '', location.pathname + location.search);
  return values;
}

// ---------------------------------------------------------------------------------------
// HTTP

class HttpError extends Error {
  constructor(status, message, retryAfter = null) {
    super(message);
    this.name = 'HttpError';
    this.status = status;
    this.retryAfter = retryAfter;
  }
}

const STATUS_TEXT = {
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  406: 'Not Acceptable',
  409: 'Conflict',
  413: 'Content Too Large',
  414: 'URI Too Long',
  415: 'Unsupported Media Type',
  422: 'Unprocessable Content',
  429: 'Too Many Requests',
  500: 'Internal Server Error',
  502: 'Bad Gateway',
  503: 'Service Unavailable',
  504: 'Gateway Timeout',
};

/** Called on any 401: the page drops its token and shows the sign-in form. */
let onUnauthorized = () => {};

/** The `{"error": "..."}` of an answer, else its text. */
async function errorMessage(response) {
  const text = await response.text().catch(() => '');
  try {
    const body = JSON.parse(text);
    if (body && typeof body.error === 'string') return body.error;
  } catch {
    // Not JSON.
  }
  return text.trim().slice(0, 500);
}

/** `404 Not Found: the server's message` (the message alone when it says nothing more). */
function describeError(error) {
  const name = STATUS_TEXT[error.status] ?? '';
  const code = error.status ? `${error.status} ${name}`.trim() : '';
  const message = error.message && error.message !== name ? error.message : '';
  return [code, message].filter(Boolean).join(': ') || 'failed';
}

/** fetch() with the bearer token; resolves to the response when 2xx, else throws HttpError. */
async function call(path, { method = 'GET', json, sdp, keepalive = false } = {}) {
  const headers = {};
  const token = tokens.get();
  if (token) headers.Authorization = `Bearer ${token}`;
  let body;
  if (json !== undefined) {
    headers['Content-Type'] = 'application/json';
    body = JSON.stringify(json);
  } else if (sdp !== undefined) {
    headers['Content-Type'] = 'application/sdp';
    body = sdp;
  }
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body,
      keepalive,
      cache: 'no-store',
      credentials: 'omit',
      redirect: 'error',
    });
  } catch (e) {
    throw new HttpError(0, `no answer from the gateway (${e.message})`);
  }
  if (response.ok) return response;
  const error = new HttpError(
    response.status,
    await errorMessage(response),
    response.headers.get('Retry-After'),
  );
  // A late answer to a request sent with a token since replaced says nothing of the new one.
  if (response.status === 401 && tokens.get() === token) onUnauthorized(error);
  throw error;
}

async function getJson(path) {
  const response = await call(path);
  return response.json();
}

// ---------------------------------------------------------------------------------------
// Sign-in, shared by both pages

/**
 * Wires the sign-in form and the sign-out button. `page.start()` runs once a token is
 * known; `page.stop()` when it is dropped (401 or sign-out).
 */
function setupSignin(page) {
  const form = $('signin');
  const input = $('signin-token');
  let signedIn = false;

  const signOut = (message) => {
    // Stop first: the players' DELETEs still carry the token.
    if (signedIn) page.stop();
    tokens.clear();
    signedIn = false;
    setText($('signin-message'), message);
    show($('signout'), false);
    show(page.main, false);
    show(form, true);
    input.focus();
  };
  const signIn = (from) => {
    signedIn = true;
    show(form, false);
    show($('signout'), true);
    show(page.main, true);
    page.start(from);
  };

  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const token = input.value.trim();
    input.value = '';
    if (!token) return;
    tokens.set(token);
    signIn('sign-in');
  });
  $('signout').addEventListener('click', () => signOut('Signed out. Paste a bearer token to sign in again.'));
  onUnauthorized = (error) => {
    if (signedIn) signOut(`The gateway refused the token: ${error.message}. Paste a valid bearer token.`);
  };

  if (tokens.get()) signIn('page-load');
  else signOut('Paste your bearer token (or open this page with #token=… in the address).');
}

// ---------------------------------------------------------------------------------------
// WHEP player

/** Statistics as the pages show them; null when not known (yet). */
function emptyStats() {
  return {
    framesDecoded: null,
    width: null,
    height: null,
    fps: null,
    bitrateKbps: null,
    packetsLost: null,
    packetsReceived: null,
    framesDropped: null,
    keyFramesDecoded: null,
    lagMs: null,
    jitterBufferAvgMs: null,
    playoutLagMs: null,
    jitterMs: null,
    rttMs: null,
    nackCount: null,
    pliCount: null,
    codec: null,
    decoder: null,
    ice: null,
  };
}

const seconds = (v) => (typeof v === 'number' ? v * 1000 : null);

function candidateText(candidate) {
  // Browsers hide their own host addresses (mDNS) from pages.
  const address = candidate.address || candidate.ip || 'hidden';
  const host = address.includes(':') ? `[${address}]` : address;
  return `${host}:${candidate.port} ${candidate.protocol ?? ''} ${candidate.candidateType ?? ''}`.trim();
}

/** H.264 profile_idc values (ITU-T H.264 Annex A) that cameras send. */
const H264_PROFILES = { 66: 'Baseline', 77: 'Main', 88: 'Extended', 100: 'High' };

/** `H264 Main, level 3.1 (4d001f), packetization-mode=1`, or the codec's fmtp line. */
function codecText(codec) {
  const name = (codec.mimeType ?? '').replace(/^video\//, '');
  const params = new Map(
    (codec.sdpFmtpLine ?? '').split(';').filter(Boolean).map((p) => {
      const at = p.indexOf('=');
      return [p.slice(0, at).trim(), p.slice(at + 1).trim()];
    }),
  );
  const pli = params.get('profile-level-id');
  if (name === 'H264' && pli && /^[0-9a-f]{6}$/i.test(pli)) {
    const profile = parseInt(pli.slice(0, 2), 16);
    // constraint_set1_flag on Baseline: Constrained Baseline (RFC 6184 §8.1).
    const constrained = profile === 66 && (parseInt(pli.slice(2, 4), 16) & 0x40) !== 0;
    const level = parseInt(pli.slice(4, 6), 16) / 10;
    const mode = params.get('packetization-mode');
    const named = H264_PROFILES[profile] ?? `profile ${profile}`;
    return `H264 ${constrained ? 'Constrained ' : ''}${named}, level ${level} (${pli})${mode ? `, packetization-mode=${mode}` : ''}`;
  }
  return [name, ...[...params].map(([k, v]) => `${k}=${v}`)].join(' ');
}

/**
 * Reads a getStats() report: the video inbound-rtp, its codec, the selected candidate
 * pair. `prev` is the previous call's `raw`, for the rates over the last interval.
 */
function readStats(report, prev) {
  const byId = new Map();
  const pairs = [];
  let inbound = null;
  let transport = null;
  report.forEach((s) => {
    byId.set(s.id, s);
    if (s.type === 'inbound-rtp' && (s.kind ?? s.mediaType) === 'video') inbound = s;
    else if (s.type === 'transport') transport = s;
    else if (s.type === 'candidate-pair') pairs.push(s);
  });
  const stats = emptyStats();
  let pair = transport?.selectedCandidatePairId ? byId.get(transport.selectedCandidatePairId) : null;
  pair ??= pairs.find((p) => p.nominated && p.state === 'succeeded') ?? null;
  if (pair) {
    stats.rttMs = seconds(pair.currentRoundTripTime);
    const local = byId.get(pair.localCandidateId);
    const remote = byId.get(pair.remoteCandidateId);
    if (local && remote) stats.ice = `${candidateText(local)} ↔ ${candidateText(remote)}`;
  }
  if (!inbound) return { stats, raw: null };

  stats.framesDecoded = inbound.framesDecoded ?? 0;
  stats.width = inbound.frameWidth ?? null;
  stats.height = inbound.frameHeight ?? null;
  stats.packetsLost = inbound.packetsLost ?? null;
  stats.packetsReceived = inbound.packetsReceived ?? null;
  stats.framesDropped = inbound.framesDropped ?? null;
  stats.keyFramesDecoded = inbound.keyFramesDecoded ?? null;
  stats.jitterMs = seconds(inbound.jitter);
  stats.nackCount = inbound.nackCount ?? null;
  stats.pliCount = inbound.pliCount ?? null;
  stats.decoder = inbound.decoderImplementation ?? null;
  const codec = byId.get(inbound.codecId);
  if (codec) stats.codec = codecText(codec);
  const emitted = inbound.jitterBufferEmittedCount ?? 0;
  if (emitted > 0) stats.jitterBufferAvgMs = (inbound.jitterBufferDelay / emitted) * 1000;

  const raw = {
    t: inbound.timestamp,
    bytes: inbound.bytesReceived ?? 0,
    frames: stats.framesDecoded,
    jbDelay: inbound.jitterBufferDelay ?? 0,
    jbCount: emitted,
  };
  let fps = inbound.framesPerSecond ?? null;
  if (prev && raw.t > prev.t) {
    const dt = raw.t - prev.t;
    // bytes * 8 / ms = kbit/s
    stats.bitrateKbps = ((raw.bytes - prev.bytes) * 8) / dt;
    fps ??= ((raw.frames - prev.frames) * 1000) / dt;
    if (raw.jbCount > prev.jbCount) {
      stats.lagMs = ((raw.jbDelay - prev.jbDelay) / (raw.jbCount - prev.jbCount)) * 1000;
    }
  }
  stats.fps = fps;
  stats.lagMs ??= stats.jitterBufferAvgMs;

  // estimatedPlayoutTimestamp is in the sender's NTP time (ms since 1900) when the
  // sender reports mapped RTP to wall clock; the report's timestamp is ours (ms since
  // 1970, or since timeOrigin in older browsers).
  const playout = inbound.estimatedPlayoutTimestamp;
  if (typeof playout === 'number' && playout > 0) {
    const wall = inbound.timestamp > 1e12 ? inbound.timestamp : performance.timeOrigin + inbound.timestamp;
    const playoutUnix = playout > NTP_UNIX_OFFSET_MS ? playout - NTP_UNIX_OFFSET_MS : playout;
    stats.playoutLagMs = wall - playoutUnix;
  }
  return { stats, raw };
}

function iceGatheringDone(pc, timeoutMs) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      pc.removeEventListener('icegatheringstatechange', check);
      resolve();
    };
    const check = () => {
      if (pc.iceGatheringState === 'complete') done();
    };
    const timer = setTimeout(done, timeoutMs);
    pc.addEventListener('icegatheringstatechange', check);
  });
}

/**
 * One WHEP viewing session of one camera into one <video>.
 *
 * Drive it with start() (POST the offer, then play), read `state`, `error`, `stats`,
 * `ttffMs` whenever `onChange` fires (each state change and each second), and end it
 * with stop() (DELETE the session; `keepalive` when the page is going away). States:
 * connecting -> playing <-> stalled, then ended (by the gateway: `error.message` is its
 * reason), failed (`error.status` is the HTTP status, 0 when the gateway did not answer,
 * null for a browser-side failure) or stopped.
 */
class WhepSession {
  constructor(camera, video, { onChange, t0 }) {
    this.camera = camera;
    this.video = video;
    this.onChange = onChange;
    this.t0 = t0;
    this.state = 'idle';
    this.error = null;
    this.pc = null;
    this.url = null;
    this.closed = false;
    this.ttffMs = null;
    this.whepMs = null;
    this.stats = emptyStats();
    this.prev = null;
    this.lastFrameAt = null;
    this.checking = false;
    this.timers = [];
  }

  set(state, error) {
    this.state = state;
    if (error !== undefined) this.error = error;
    this.onChange(this);
  }

  async start() {
    this.set('connecting', null);
    try {
      const pc = new RTCPeerConnection({ iceServers: [] });
      this.pc = pc;
      pc.addTransceiver('video', { direction: 'recvonly' });
      pc.addEventListener('track', (event) => this.attach(event));
      pc.addEventListener('connectionstatechange', () => this.connectionChanged());
      await pc.setLocalDescription(await pc.createOffer());
      await iceGatheringDone(pc, ICE_GATHERING_TIMEOUT_MS);
      if (this.closed) return;
      const posted = performance.now();
      const endpoint = new URL(`/whep/${cameraPath(this.camera)}`, location.href).href;
      const response = await call(endpoint, {
        method: 'POST',
        sdp: pc.localDescription.sdp,
      });
      this.whepMs = performance.now() - posted;
      const sessionPath = response.headers.get('Location');
      // Relative to the endpoint (RFC 9725 §4.2); the gateway sends /whep/session/<uuid>.
      if (sessionPath) this.url = new URL(sessionPath, response.url || endpoint).href;
      const answer = await response.text();
      if (this.closed) {
        // Stopped while the offer was in flight: end what the gateway just opened.
        this.deleteRemote(false);
        return;
      }
      await pc.setRemoteDescription({ type: 'answer', sdp: answer });
      this.onChange(this);
      this.watchFirstFrame();
      this.timers.push(setInterval(() => this.sample(), STATS_MS));
      this.timers.push(setInterval(() => this.checkSession(), SESSION_CHECK_MS));
    } catch (e) {
      if (this.closed) return;
      if (e instanceof HttpError) {
        this.fail({ status: e.status, message: e.message, retryAfter: e.retryAfter });
      } else {
        this.fail({ status: null, message: `the browser could not set up WebRTC: ${e?.message ?? e}` });
      }
    }
  }

  /** Ends the session: locally, and on the gateway unless it ended it already. */
  stop({ keepalive = false } = {}) {
    if (this.closed) return;
    this.closed = true;
    this.release();
    if (this.state !== 'ended' && this.state !== 'failed') {
      this.deleteRemote(keepalive);
      this.set('stopped');
    }
  }

  deleteRemote(keepalive) {
    if (!this.url) return;
    call(this.url, { method: 'DELETE', keepalive }).catch(() => {
      // Gone already, or the page is leaving: the gateway's timeout ends it.
    });
  }

  release() {
    for (const timer of this.timers) clearInterval(timer);
    this.timers = [];
    if (this.pc) this.pc.close();
    this.video.srcObject = null;
  }

  fail(error) {
    if (this.closed) return;
    this.closed = true;
    this.release();
    if (this.state !== 'ended') this.deleteRemote(false);
    this.set('failed', error);
  }

  /** The gateway ended the session: `reason` is its word. */
  end(reason) {
    if (this.closed) return;
    this.closed = true;
    this.release();
    this.set('ended', { status: null, message: reason, ended: true });
  }

  attach(event) {
    const stream = event.streams[0] ?? new MediaStream([event.track]);
    if (this.video.srcObject !== stream) this.video.srcObject = stream;
    // A remote track goes mute when its packets stop, and ends when the peer removes it.
    event.track.addEventListener('mute', () => this.checkSession());
    event.track.addEventListener('ended', () => this.checkSession());
    this.video.play().catch(() => {
      // Muted autoplay is allowed; a refusal leaves the Play button to the user.
    });
  }

  firstFrame(at) {
    if (this.ttffMs != null || this.closed) return;
    this.ttffMs = Math.max(0, at - this.t0);
    this.lastFrameAt = performance.now();
    this.set('playing');
  }

  /** Times the first frame: the video's first presented frame, or framesDecoded > 0. */
  watchFirstFrame() {
    if (typeof this.video.requestVideoFrameCallback === 'function') {
      this.video.requestVideoFrameCallback((now, meta) => this.firstFrame(meta?.presentationTime ?? now));
    }
    const poll = async () => {
      if (this.ttffMs != null || this.closed || !this.pc) return;
      let decoded = 0;
      try {
        const report = await this.pc.getStats();
        report.forEach((s) => {
          if (s.type === 'inbound-rtp' && (s.kind ?? s.mediaType) === 'video') decoded = s.framesDecoded ?? 0;
        });
      } catch {
        // Closed meanwhile.
      }
      if (decoded > 0) this.firstFrame(performance.now());
      else setTimeout(poll, FIRST_FRAME_POLL_MS);
    };
    poll();
  }

  async sample() {
    if (this.closed || !this.pc) return;
    let report;
    try {
      report = await this.pc.getStats();
    } catch {
      return;
    }
    if (this.closed) return;
    const { stats, raw } = readStats(report, this.prev);
    this.prev = raw;
    const now = performance.now();
    if ((stats.framesDecoded ?? 0) > (this.stats.framesDecoded ?? 0)) this.lastFrameAt = now;
    this.stats = stats;
    if (this.ttffMs == null && stats.framesDecoded > 0) this.firstFrame(now);
    const stalled = this.lastFrameAt != null && now - this.lastFrameAt > STALL_MS;
    if (this.state === 'playing' && stalled) {
      this.set('stalled');
      this.checkSession();
    } else if (this.state === 'stalled' && !stalled) {
      this.set('playing');
    } else {
      this.onChange(this);
    }
  }

  /** `connected (ICE connected)`: the peer connection's and ICE's states, or null. */
  connection() {
    if (!this.pc) return null;
    return `${this.pc.connectionState} (ICE ${this.pc.iceConnectionState})`;
  }

  /** How long since the last new frame, in ms (null before the first). */
  stalledFor() {
    return this.lastFrameAt == null ? null : performance.now() - this.lastFrameAt;
  }

  /** Asks the gateway whether the session still runs; ends it with the gateway's reason. */
  async checkSession() {
    if (!this.url || this.closed || this.checking) return;
    this.checking = true;
    try {
      const body = await (await call(this.url)).json();
      if (body.state === 'ended') this.end(body.reason || 'ended by the gateway (no reason given)');
    } catch (e) {
      if (e instanceof HttpError && e.status === 404) {
        this.end('the gateway no longer knows this session (ended, or the gateway restarted)');
      }
      // Other errors: the next check decides.
    } finally {
      this.checking = false;
    }
  }

  async connectionChanged() {
    const state = this.pc?.connectionState;
    if (state === 'disconnected' || state === 'closed') {
      this.checkSession();
    } else if (state === 'failed') {
      await this.checkSession();
      this.fail({
        status: null,
        message:
          'the media connection failed (ICE/DTLS): no UDP path between this browser and the ' +
          "gateway's WebRTC ports, or the gateway closed it",
      });
    }
  }
}

/** What a failed session means for the operator: a title, a hint, and maybe a link. */
function explainFailure(error, camera) {
  const status = error.status;
  const code = status ? `${status} ${STATUS_TEXT[status] ?? ''}`.trim() : '';
  switch (status) {
    case 403:
      return {
        title: `${code}: you may not watch this camera now`,
        hint:
          'The camera is shared on request and needs an open intervention naming it, or ' +
          'it is outside the hours of the convention.',
        link: { text: 'Open an intervention on the status page', href: `/#intervene=${encodeURIComponent(camera)}` },
      };
    case 404:
      return {
        title: `${code}: camera not found or not visible to you`,
        hint: 'No camera with this id is shared with your account under the policy in force.',
      };
    case 406:
    case 415:
    case 422:
      return {
        title: `${code}: this browser cannot play this camera as it is sent`,
        hint:
          'passerelle never transcodes. Watch it over RTSP (the VMS, VLC) instead, or ask ' +
          "for the camera's stream to be set to a profile browsers decode.",
      };
    case 503: {
      const retry = error.retryAfter ? ` Retry after ${error.retryAfter} s.` : '';
      return {
        title: `${code}: capacity reached or camera unavailable`,
        hint: `The gateway has no room for another WebRTC session, or the camera does not answer.${retry}`,
      };
    }
    case 0:
      return { title: 'No answer from the gateway', hint: 'Check the network path to the gateway.' };
    case null:
    case undefined:
      return { title: 'Playback failed', hint: '' };
    default:
      return { title: code || 'Playback failed', hint: '' };
  }
}

// ---------------------------------------------------------------------------------------
// The viewer: /view/<camera-id>

/** Where time to first frame counts from. */
const TTFF_ORIGIN = { 'page-load': 'page load', play: 'Play', 'sign-in': 'sign-in' };

function viewPage() {
  const prefix = '/view/';
  let camera = location.pathname.startsWith(prefix) ? location.pathname.slice(prefix.length) : '';
  try {
    camera = decodeURIComponent(camera);
  } catch {
    // Served only for valid ids; keep it as typed.
  }
  document.title = `${camera} · passerelle`;
  setText($('camera-id'), camera);

  const video = $('video');
  const stage = $('stage');
  const message = $('player-message');
  const play = $('play');
  const stop = $('stop');
  const errorBox = $('player-error');
  /** The numbers automated tests read; updated every second. */
  const published = {
    camera,
    state: 'idle',
    error: null,
    errorStatus: null,
    session: null,
    ttffMs: null,
    ttffFrom: null,
    whepMs: null,
    connection: null,
    ...emptyStats(),
    updatedAt: null,
  };
  window.passerelleStats = published;

  let session = null;
  let from = null;
  let ticker = null;
  let describer = null;

  const statCells = [
    ['stat-resolution', (s) => (s.width && s.height ? `${s.width} × ${s.height}` : '—'), (s) => (s.width && s.height ? `${s.width}x${s.height}` : '')],
    ['stat-fps', (s) => (s.fps == null ? '—' : `${fmtNumber(s.fps, 1)} fps`), (s) => s.fps],
    ['stat-bitrate', (s) => fmtBitrate(s.bitrateKbps), (s) => s.bitrateKbps],
    ['stat-packets-lost', (s) => (s.packetsLost == null ? '—' : `${fmtNumber(s.packetsLost)} of ${fmtNumber((s.packetsReceived ?? 0) + s.packetsLost)}`), (s) => s.packetsLost],
    ['stat-frames-decoded', (s) => fmtNumber(s.framesDecoded), (s) => s.framesDecoded],
    ['stat-frames-dropped', (s) => fmtNumber(s.framesDropped), (s) => s.framesDropped],
    ['stat-keyframes', (s) => fmtNumber(s.keyFramesDecoded), (s) => s.keyFramesDecoded],
    ['stat-ttff', (s) => (s.ttffMs == null ? '—' : `${fmtNumber(s.ttffMs)} ms (from ${TTFF_ORIGIN[s.ttffFrom] ?? s.ttffFrom})`), (s) => s.ttffMs],
    ['stat-whep', (s) => (s.whepMs == null ? '—' : `${fmtNumber(s.whepMs)} ms`), (s) => s.whepMs],
    ['stat-lag', (s) => (s.lagMs == null ? '—' : `${fmtNumber(s.lagMs)} ms (average since start ${fmtNumber(s.jitterBufferAvgMs)} ms)`), (s) => s.lagMs],
    ['stat-playout-lag', (s) => {
      if (s.playoutLagMs == null) return '— (no camera clock yet)';
      if (Math.abs(s.playoutLagMs) > PLAYOUT_LAG_SANE_MS) return `— (clocks differ by ${fmtDuration(s.playoutLagMs)})`;
      return `${fmtNumber(s.playoutLagMs)} ms`;
    }, (s) => s.playoutLagMs],
    ['stat-jitter', (s) => (s.jitterMs == null ? '—' : `${fmtNumber(s.jitterMs, 1)} ms`), (s) => s.jitterMs],
    ['stat-rtt', (s) => (s.rttMs == null ? '—' : `${fmtNumber(s.rttMs, 1)} ms`), (s) => s.rttMs],
    ['stat-feedback', (s) => (s.nackCount == null ? '—' : `${fmtNumber(s.nackCount)} / ${fmtNumber(s.pliCount)}`), (s) => s.nackCount],
    ['stat-codec', (s) => s.codec ?? '—', (s) => s.codec],
    ['stat-decoder', (s) => s.decoder ?? '—', (s) => s.decoder],
    ['stat-connection', (s) => s.connection ?? '—', (s) => s.connection],
    ['stat-ice', (s) => s.ice ?? '—', (s) => s.ice],
    ['stat-session', (s) => s.session ?? '—', (s) => s.session],
  ].map(([id, text, value]) => ({ node: $(id), text, value }));

  function overlayText(s) {
    switch (s.state) {
      case 'idle':
        return 'Not started. Press Play.';
      case 'connecting': {
        const elapsed = `${fmtNumber((performance.now() - s.t0) / 1000, 1)} s`;
        return s.url
          ? `Session open; waiting for the first frame (starts at a keyframe)… ${elapsed}\nconnection ${s.connection()}`
          : `Connecting: sending the WHEP offer to the gateway… ${elapsed}`;
      }
      case 'stalled':
        return `No new frame for ${fmtDuration(s.stalledFor() ?? 0)}: asking the gateway…`;
      case 'ended':
        return `Session ended by the gateway: ${s.error?.message ?? ''}`;
      case 'failed':
        return [explainFailure(s.error, camera).title, s.error?.message].filter(Boolean).join('\n');
      case 'stopped':
        return 'Stopped. Press Play to watch again.';
      default:
        return '';
    }
  }

  function renderError(s) {
    const failed = s && (s.state === 'failed' || s.state === 'ended') && s.error;
    show(errorBox, Boolean(failed));
    if (!failed) {
      setData(errorBox, 'status', '');
      return;
    }
    const explained = s.state === 'ended' ? { title: 'Session ended by the gateway', hint: 'Press Play to start a new session.' } : explainFailure(s.error, camera);
    setData(errorBox, 'status', s.error.status ?? '');
    setText($('player-error-status'), explained.title);
    setText($('player-error-message'), s.error.message);
    show($('player-error-message'), Boolean(s.error.message));
    const hint = $('player-error-hint');
    const wanted = explained.link ? `${explained.hint} ${explained.link.href}` : explained.hint;
    if (hint.dataset.content !== wanted) {
      hint.dataset.content = wanted;
      hint.replaceChildren(explained.hint);
      if (explained.link) {
        hint.append(' ', el('a', { href: explained.link.href, id: 'player-error-link', text: explained.link.text }));
      }
    }
  }

  function render() {
    const s = session;
    const state = s ? s.state : 'idle';
    const stats = s ? s.stats : emptyStats();
    Object.assign(published, stats, {
      state,
      error: s?.error ? s.error.message || describeError(s.error) : null,
      errorStatus: s?.error?.status ?? null,
      session: s?.url ? new URL(s.url).pathname : null,
      ttffMs: s?.ttffMs ?? null,
      ttffFrom: s ? from : null,
      whepMs: s?.whepMs ?? null,
      connection: s && !s.closed ? s.connection() : null,
      updatedAt: Date.now(),
    });
    const stateNode = $('player-state');
    setText(stateNode, state);
    setData(stateNode, 'state', state);
    setData(stage, 'state', state);
    setData(document.body, 'state', state);
    const text = s ? overlayText(s) : overlayText({ state: 'idle' });
    setText(message, text);
    show(message, state !== 'playing');
    setData(message, 'state', state);
    const running = state === 'connecting' || state === 'playing' || state === 'stalled';
    play.disabled = running;
    setText(play, s && !running ? 'Play again' : 'Play');
    stop.disabled = !running;
    renderError(s);
    for (const cell of statCells) {
      setText(cell.node, cell.text(published));
      setData(cell.node, 'value', cell.value(published));
    }
    const ttff = $('stat-ttff');
    setData(ttff, 'ttffMs', published.ttffMs == null ? '' : Math.round(published.ttffMs));
    setData($('stat-lag'), 'lagMs', published.lagMs == null ? '' : Math.round(published.lagMs));
  }

  function start(origin) {
    if (session) session.stop();
    from = origin;
    // From page load: the navigation's start is time 0 of performance.now().
    const t0 = origin === 'page-load' ? 0 : performance.now();
    session = new WhepSession(camera, video, { onChange: render, t0 });
    session.start();
  }

  async function describeCamera() {
    try {
      const [site, list] = await Promise.all([getJson('/api/v1/site'), getJson('/api/v1/cameras')]);
      setText($('user-name'), `${site.user?.name ?? ''} @ ${site.site ?? ''}`);
      const entry = (list.cameras ?? []).find((c) => c.id === camera);
      if (entry) {
        const parts = [
          entry.source === 'partner' ? `from ${entry.site}` : 'local camera',
          entry.codec ? entry.codec.toUpperCase() : null,
          entry.on_request ? 'on request' : null,
          `camera ${entry.state}`,
          `${entry.viewers ?? 0} viewer(s)`,
        ];
        setText($('camera-info'), parts.filter(Boolean).join(' · '));
      }
    } catch {
      // Informative only: the player reports what matters.
    }
  }

  play.addEventListener('click', () => start('play'));
  stop.addEventListener('click', () => session?.stop());
  video.addEventListener('click', () => {
    if (session?.state === 'playing' && video.paused) video.play().catch(() => {});
  });
  window.addEventListener('pagehide', () => session?.stop({ keepalive: true }));
  window.addEventListener('pageshow', (event) => {
    // Back from the back/forward cache: the session was ended at pagehide.
    if (event.persisted) location.reload();
  });

  setupSignin({
    main: $('viewer'),
    start(origin) {
      ticker ??= setInterval(render, STATS_MS);
      describeCamera();
      // The camera's state and viewers, refreshed like the status page's.
      describer ??= setInterval(() => tokens.get() && describeCamera(), REFRESH_MS);
      start(origin);
    },
    stop() {
      session?.stop();
      render();
    },
  });
  render();
}

// ---------------------------------------------------------------------------------------
// The status page: /

function statusPage(fragment) {
  const maxPlayers = Number(document.body.dataset.maxPlayers) || 9;
  const grid = $('cameras');
  const filter = $('camera-filter');
  /** camera id -> Tile */
  const tiles = new Map();
  const visible = new Set();
  let pumpTimer = null;
  let refreshTimer = null;
  let refreshing = false;
  let refreshAgain = false;
  let ticker = null;
  let running = false;
  let user = null;
  let interventionIds = '';
  /** A summary for automated tests, updated every second and at each refresh. */
  const published = {
    site: null,
    user: null,
    policy: null,
    cameras: 0,
    shown: 0,
    playersActive: 0,
    playersMax: maxPlayers,
    tiles: {},
    links: 0,
    interventions: 0,
    refreshedAt: null,
    error: null,
  };
  window.passerelleStatus = published;

  /** A failure that may pass by itself: the gateway busy or unreachable, the media path, an end. */
  const transient = (error) => error.ended || error.status == null || error.status === 0 || error.status >= 500;

  const playing = () => [...tiles.values()].filter((t) => t.session && !t.session.closed).length;

  class Tile {
    constructor(camera) {
      this.id = camera.id;
      this.camera = camera;
      this.session = null;
      this.error = null;
      const href = `/view/${cameraPath(camera.id)}`;
      this.video = el('video', { muted: true, autoplay: true, playsInline: true, disablePictureInPicture: true });
      this.message = el('p', { className: 'overlay' });
      this.retry = el('button', { type: 'button', className: 'quiet small', text: 'Retry', hidden: true });
      this.intervene = el('button', { type: 'button', className: 'quiet small', text: 'Open an intervention for it', hidden: true });
      this.overlay = el('div', { className: 'tile-overlay' }, this.message, el('div', { className: 'tile-actions' }, this.retry, this.intervene));
      this.figures = el('span', { className: 'tile-figures mono' });
      this.stage = el('div', { className: 'tile-stage' }, this.video, this.overlay);
      this.state = el('span', { className: 'state' });
      this.meta = el('span', { className: 'tile-meta muted' });
      this.link = el('a', { className: 'tile-id mono', href, text: camera.id, title: 'open the viewer' });
      this.newTab = el('a', { className: 'tile-newtab', href, text: '↗', title: 'open the viewer in a new tab' });
      this.node = el(
        'li',
        { className: 'tile', dataset: { camera: camera.id, player: 'off' } },
        el('div', { className: 'tile-head' }, this.link, this.newTab),
        el('div', { className: 'tile-info' }, this.state, this.meta),
        this.stage,
        this.figures,
      );
      this.newTab.addEventListener('click', (event) => {
        event.preventDefault();
        openInNewTab(href);
      });
      this.link.addEventListener('click', (event) => {
        if (event.ctrlKey || event.metaKey || event.shiftKey) {
          event.preventDefault();
          openInNewTab(href);
        }
      });
      this.link.addEventListener('auxclick', (event) => {
        if (event.button === 1) {
          event.preventDefault();
          openInNewTab(href);
        }
      });
      this.stage.addEventListener('click', (event) => {
        if (event.target === this.retry || event.target === this.intervene) return;
        location.assign(href);
      });
      this.intervene.addEventListener('click', () => prefillIntervention(this.id));
      this.retry.addEventListener('click', () => {
        this.error = null;
        this.render();
        schedulePump();
      });
      this.update(camera);
    }

    update(camera) {
      if (this.camera.state !== camera.state && this.error && transient(this.error)) {
        // The camera changed state: worth one more try.
        this.error = null;
      }
      this.camera = camera;
      setText(this.state, camera.state);
      setData(this.state, 'state', camera.state);
      setData(this.node, 'state', camera.state);
      const parts = [
        camera.codec ? camera.codec.toUpperCase() : null,
        camera.source === 'partner' ? `from ${camera.site}` : 'local',
        `${camera.viewers ?? 0} viewer${camera.viewers === 1 ? '' : 's'}`,
        camera.on_request ? 'on request' : null,
        camera.shared_with?.length ? `shared with ${camera.shared_with.join(', ')}` : null,
      ];
      setText(this.meta, parts.filter(Boolean).join(' · '));
      setData(this.node, 'onRequest', camera.on_request ? 'true' : 'false');
      this.render();
    }

    /** Whether a player should start when a slot is free. */
    wanted() {
      return (
        running &&
        !document.hidden &&
        visible.has(this) &&
        !this.node.hidden &&
        !this.error &&
        !(this.session && !this.session.closed) &&
        this.camera.state !== 'unavailable' &&
        this.camera.state !== 'failed'
      );
    }

    play() {
      this.session = new WhepSession(this.id, this.video, {
        onChange: (s) => {
          if (s === this.session && (s.state === 'failed' || s.state === 'ended')) {
            this.error = s.error ?? { status: null, message: s.state };
            this.session = null;
            schedulePump();
          }
          this.render();
        },
        t0: performance.now(),
      });
      this.session.start();
    }

    stop(keepalive = false) {
      const s = this.session;
      this.session = null;
      s?.stop({ keepalive });
      this.render();
    }

    playerState() {
      const s = this.session;
      if (s && !s.closed) return s.state;
      if (this.error) return this.error.ended ? 'ended' : 'failed';
      if (this.camera.state === 'unavailable' || this.camera.state === 'failed') return 'off';
      if (visible.has(this) && running && !document.hidden) return 'waiting';
      return 'off';
    }

    render() {
      const s = this.session;
      const player = this.playerState();
      setData(this.node, 'player', player);
      let text = '';
      if (player === 'connecting') text = s?.url ? 'Waiting for the first frame…' : 'Connecting…';
      else if (player === 'stalled') text = `No new frame for ${fmtDuration(s.stalledFor() ?? 0)}`;
      else if (player === 'ended') text = `Ended by the gateway: ${this.error.message}`;
      else if (player === 'failed') {
        const { status, message } = this.error;
        text = status == null ? message : `${explainFailure(this.error, this.id).title}\n${message}`;
      } else if (player === 'waiting') text = `Waiting for a player slot (${maxPlayers} play at once)`;
      else if (player === 'off') {
        text = this.camera.state === 'unavailable' || this.camera.state === 'failed'
          ? `Camera ${this.camera.state}: not started. Click to try in the viewer.`
          : 'Plays when on screen';
      }
      setText(this.message, text);
      show(this.overlay, player !== 'playing');
      show(this.retry, player === 'failed' || player === 'ended');
      show(this.intervene, player === 'failed' && this.error?.status === 403 && user?.kind !== 'service');
      const st = s?.stats;
      setText(
        this.figures,
        player === 'playing' && st
          ? [st.width && st.height ? `${st.width}×${st.height}` : null, st.fps == null ? null : `${fmtNumber(st.fps)} fps`, fmtBitrate(st.bitrateKbps)].filter(Boolean).join(' · ')
          : '',
      );
    }

    summary() {
      const s = this.session;
      return {
        state: this.camera.state,
        player: this.playerState(),
        framesDecoded: s?.stats.framesDecoded ?? null,
        ttffMs: s?.ttffMs ?? null,
        error: this.error ? this.error.message || describeError(this.error) : null,
        errorStatus: this.error?.status ?? null,
      };
    }
  }

  // The new tab gets a copy of this tab's sessionStorage (a same-origin window.open
  // without noopener), so the token never goes into a URL, where the browser's history
  // would keep it; the opener link is cut once the tab exists.
  function openInNewTab(href) {
    const opened = window.open(href, '_blank');
    if (opened) opened.opener = null;
  }

  const observer = new IntersectionObserver(
    (entries) => {
      for (const entry of entries) {
        const tile = entry.target.tile;
        if (!tile) continue;
        if (entry.isIntersecting) {
          visible.add(tile);
        } else {
          visible.delete(tile);
          // Off screen: end its session so the gateway and the link carry nothing unseen.
          if (tile.session) tile.stop();
          if (tile.error && tile.error.status !== 403) tile.error = null;
        }
        tile.render();
      }
      schedulePump();
    },
    { threshold: 0.2 },
  );

  function schedulePump() {
    if (pumpTimer) return;
    pumpTimer = setTimeout(() => {
      pumpTimer = null;
      pump();
    }, TILE_START_DELAY_MS);
  }

  /** Starts players for the visible tiles, top first, up to the cap. */
  function pump() {
    let active = playing();
    const candidates = [...visible].filter((t) => t.wanted()).sort((a, b) => a.index - b.index);
    for (const tile of candidates) {
      if (active >= maxPlayers) break;
      tile.play();
      active += 1;
    }
    for (const tile of visible) tile.render();
    renderPlayers();
  }

  function renderPlayers() {
    const active = playing();
    const node = $('players-count');
    setText(node, `players ${active} / ${maxPlayers}`);
    setData(node, 'active', active);
    setData(node, 'max', maxPlayers);
    published.playersActive = active;
  }

  function stopAll(keepalive = false) {
    for (const tile of tiles.values()) if (tile.session) tile.stop(keepalive);
    renderPlayers();
  }

  function applyFilter() {
    const words = filter.value.trim().toLowerCase().split(/\s+/).filter(Boolean);
    let shown = 0;
    for (const tile of tiles.values()) {
      const c = tile.camera;
      const haystack = `${c.id} ${c.site ?? ''} ${c.codec ?? ''} ${c.state} ${c.on_request ? 'on request' : ''}`.toLowerCase();
      const match = words.every((w) => haystack.includes(w));
      if (!match && tile.session) tile.stop();
      show(tile.node, match);
      if (match) shown += 1;
    }
    published.shown = shown;
    setText($('camera-count'), shown === tiles.size ? `${tiles.size}` : `${shown} of ${tiles.size}`);
    schedulePump();
  }

  function renderCameras(cameras) {
    const sorted = [...cameras].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    const seen = new Set();
    sorted.forEach((camera, index) => {
      seen.add(camera.id);
      let tile = tiles.get(camera.id);
      if (tile) {
        tile.update(camera);
      } else {
        tile = new Tile(camera);
        tile.node.tile = tile;
        tiles.set(camera.id, tile);
        observer.observe(tile.node);
      }
      tile.index = index;
    });
    for (const [id, tile] of tiles) {
      if (!seen.has(id)) {
        tile.stop();
        observer.unobserve(tile.node);
        visible.delete(tile);
        tile.node.remove();
        tiles.delete(id);
      }
    }
    // Put the nodes in order; moving a node that is in place is skipped.
    let previous = null;
    for (const camera of sorted) {
      const node = tiles.get(camera.id).node;
      const expected = previous ? previous.nextSibling : grid.firstChild;
      if (node !== expected) grid.insertBefore(node, expected);
      previous = node;
    }
    published.cameras = tiles.size;
    show($('cameras-empty'), tiles.size === 0);
    applyFilter();
  }

  function renderSite(site) {
    user = site.user ?? null;
    published.site = site.site ?? null;
    published.user = user?.name ?? null;
    published.policy = site.policy?.state ?? null;
    setText($('site-id'), site.site ?? '—');
    document.title = `${site.site ?? ''} · passerelle`;
    show($('user'), Boolean(user));
    if (user) {
      setText($('user-name'), user.name);
      setText($('user-kind'), user.kind);
      setData($('user-kind'), 'kind', user.kind);
      setText($('user-cameras'), `cameras ${(user.cameras ?? []).join(' ')}`);
    }
    const policy = site.policy ?? { state: 'none' };
    const stateNames = {
      valid: 'valid',
      expired: 'expired',
      not_yet_valid: 'not yet valid',
      refused: 'refused',
      none: 'none',
    };
    show($('policy'), true);
    setData($('policy'), 'state', policy.state);
    setText($('policy-state'), stateNames[policy.state] ?? policy.state);
    setData($('policy-state'), 'state', policy.state);
    setText($('policy-serial'), policy.serial ?? '—');
    const until = policy.valid_until ? ` (${policy.state === 'expired' ? 'ended' : 'ends'} ${fmtRelative(policy.valid_until)})` : '';
    setText($('policy-validity'), policy.valid_from || policy.valid_until ? `${fmtTime(policy.valid_from)} → ${fmtTime(policy.valid_until)}${until}` : '');
    setText($('policy-signers'), policy.signers?.length ? policy.signers.join(', ') : '—');
    show($('policy-problem'), Boolean(policy.problem));
    setText($('policy-problem'), policy.problem ?? '');
    const webrtc = site.webrtc;
    show($('webrtc'), Boolean(webrtc));
    if (webrtc) {
      setText($('webrtc-sessions'), `${webrtc.sessions} / ${webrtc.max_sessions}`);
      setData($('webrtc-sessions'), 'sessions', webrtc.sessions);
    }
    const agent = user?.kind !== 'service';
    show($('intervention-form'), agent);
    show($('intervention-service'), !agent);
  }

  function renderLinks(links) {
    const body = $('links-body');
    const rows = links.map((link) => {
      const since = link.since ? `since ${fmtSince(link.since)} (${fmtDuration(Date.now() - new Date(link.since).getTime())})` : '';
      const state = el('div', { className: 'state', text: link.state, dataset: { state: link.state } });
      return el(
        'tr',
        { dataset: { peer: link.peer, state: link.state } },
        el(
          'td',
          { className: 'peer' },
          el('div', { className: 'mono', text: link.peer }),
          el('div', { className: 'mono muted small', text: link.remote ?? '' }),
        ),
        el('td', {}, state, el('div', { className: 'mono muted small', text: since })),
        el('td', { className: 'mono num', text: link.rtt_ms == null ? '—' : `${fmtNumber(link.rtt_ms, 1)} ms` }),
        el('td', { className: 'mono num', text: fmtNumber(link.streams ?? 0) }),
      );
    });
    body.replaceChildren(...rows);
    show($('links-empty'), links.length === 0);
    published.links = links.length;
  }

  function renderInterventions(list) {
    const rows = list.map((i) => {
      const close = el('button', { type: 'button', className: 'quiet small', text: 'Close' });
      close.addEventListener('click', async () => {
        close.disabled = true;
        try {
          await call(`/api/v1/interventions/${encodeURIComponent(i.id)}`, { method: 'DELETE' });
          showError('interventions-error', null);
        } catch (e) {
          showError('interventions-error', `Closing failed: ${describeError(e)}`);
        }
        refresh();
      });
      return el(
        'li',
        { dataset: { id: i.id } },
        el('div', { className: 'intervention-reason', text: i.reason }),
        el('div', { className: 'mono', text: (i.cameras ?? []).join(' ') }),
        el('div', { className: 'muted small', text: `until ${fmtTime(i.until)} (${fmtRelative(i.until)}) · opened ${fmtTime(i.opened_at)}` }),
        close,
      );
    });
    $('interventions').replaceChildren(...rows);
    show($('interventions-empty'), list.length === 0);
    published.interventions = list.length;
    const ids = list.map((i) => i.id).sort().join(' ');
    if (ids !== interventionIds) {
      interventionIds = ids;
      // A new or closed intervention changes what on-request cameras allow: retry them.
      for (const tile of tiles.values()) {
        if (tile.error?.status === 403) {
          tile.error = null;
          tile.render();
        }
      }
      schedulePump();
    }
  }

  function showError(id, text) {
    const node = $(id);
    show(node, Boolean(text));
    setText(node, text ?? '');
  }

  async function section(path, render, errorId) {
    try {
      render(await getJson(path));
      showError(errorId, null);
      return null;
    } catch (e) {
      if (e.status === 401) return e;
      showError(errorId, `${path}: ${describeError(e)}`);
      return e;
    }
  }

  /** Reloads the four JSON documents; one at a time, then again every REFRESH_MS. */
  async function refresh() {
    if (refreshing) {
      // An action asked for fresh data while a refresh is under way: one more after it.
      refreshAgain = true;
      return;
    }
    clearTimeout(refreshTimer);
    refreshTimer = null;
    if (!running) return;
    refreshing = true;
    const refreshNode = $('refresh-state');
    setData(refreshNode, 'state', 'loading');
    let errors;
    try {
      errors = await Promise.all([
        section('/api/v1/site', renderSite, 'site-error'),
        section('/api/v1/cameras', (body) => renderCameras(body.cameras ?? []), 'cameras-error'),
        section('/api/v1/links', (body) => renderLinks(body.links ?? []), 'links-error'),
        section('/api/v1/interventions', (body) => renderInterventions(body.interventions ?? []), 'interventions-error'),
      ]);
    } finally {
      refreshing = false;
    }
    if (!running) return;
    const failed = errors.filter(Boolean);
    published.refreshedAt = Date.now();
    published.error = failed.length ? failed.map(describeError).join('; ') : null;
    setData(refreshNode, 'state', failed.length ? 'error' : 'ok');
    const time = new Date();
    setText(refreshNode, `${failed.length ? 'partly refreshed' : 'refreshed'} ${pad(time.getHours())}:${pad(time.getMinutes())}:${pad(time.getSeconds())}`);
    if (refreshAgain) {
      refreshAgain = false;
      refresh();
    } else {
      refreshTimer = setTimeout(refresh, REFRESH_MS);
    }
  }

  function tick() {
    const summary = {};
    for (const tile of tiles.values()) {
      if (tile.session) tile.render();
      summary[tile.id] = tile.summary();
    }
    published.tiles = summary;
    renderPlayers();
  }

  // Interventions form
  const form = $('intervention-form');
  const reason = $('intervention-reason');
  const patterns = $('intervention-cameras');
  const until = $('intervention-until');
  const resetUntil = () => {
    const now = new Date();
    until.min = localInputValue(now);
    until.value = localInputValue(new Date(now.getTime() + 2 * 3600 * 1000));
  };
  resetUntil();
  /** Fills the form for `camera` and brings it to the operator's eyes. */
  function prefillIntervention(camera) {
    patterns.value = camera;
    form.classList.add('highlight');
    form.scrollIntoView({ block: 'nearest' });
    reason.focus();
  }
  const intervene = fragment.get('intervene');
  if (intervene) patterns.value = intervene;
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const cameras = patterns.value.split(/[\s,]+/).filter(Boolean);
    const end = new Date(until.value);
    if (Number.isNaN(end.getTime())) {
      showError('intervention-error', 'Until: give a date and time.');
      return;
    }
    $('intervention-submit').disabled = true;
    try {
      const response = await call('/api/v1/interventions', {
        method: 'POST',
        json: { reason: reason.value.trim(), cameras, until: end.toISOString() },
      });
      const opened = await response.json();
      showError('intervention-error', null);
      setText($('intervention-result'), `Opened ${opened.id ?? ''}`.trim());
      reason.value = '';
      form.classList.remove('highlight');
      resetUntil();
    } catch (e) {
      setText($('intervention-result'), '');
      showError('intervention-error', describeError(e));
    } finally {
      $('intervention-submit').disabled = false;
    }
    refresh();
  });

  filter.addEventListener('input', applyFilter);
  document.addEventListener('visibilitychange', () => {
    if (!running) return;
    if (document.hidden) {
      // Nobody sees the tiles: free the gateway's sessions until the tab is back.
      stopAll();
    } else {
      refresh();
      schedulePump();
    }
  });
  window.addEventListener('pagehide', () => stopAll(true));
  window.addEventListener('pageshow', (event) => {
    if (event.persisted) location.reload();
  });

  setupSignin({
    main: $('status'),
    start() {
      running = true;
      ticker ??= setInterval(tick, STATS_MS);
      refresh();
      if (intervene) prefillIntervention(intervene);
    },
    stop() {
      running = false;
      clearTimeout(refreshTimer);
      stopAll();
    },
  });
}

// ---------------------------------------------------------------------------------------

const fragment = takeFragment();
if (document.body.dataset.page === 'view') viewPage();
else if (document.body.dataset.page === 'status') statusPage(fragment);
