/**
 * ShardchatClient: the SDK's public facade. One WebSocket at a time; reconnects with full-jitter
 * back-off (the attempt counter resets only after a connection stayed up `stableMs`); rejoins
 * every room the app is in with its epoch and last seq and delivers what was missed exactly once;
 * queues publishes while offline (bounded) and resends unacked ones after a reconnect; keeps to
 * the engine's advertised limits (frame size, rate). `close()` clears every timer and listener.
 *
 * Imports only protocol/ (the codec): no Node-only API, so it runs in browsers and in Node.
 */
import { decode, encode } from '../protocol/codec.js';
import { backoffDelay } from './backoff.js';
import { Emitter } from './emitter.js';
import { ClientError, ServerError, TimeoutError } from './errors.js';
import { Outbox, type Pending } from './outbox.js';
import { RoomTrack, toMessage } from './room.js';
import { authCheckUrl, refreshDelay, tokenExp } from './token.js';
import type {
  Cause, ClientEvents, ClientOptions, ClientState, Frame, HistOptions, HistPage, Limits, Message, RoomState,
  UserInfo, WebSocketCtor, WebSocketLike,
} from './types.js';

type Timer = ReturnType<typeof setTimeout>;
interface Request { kind: string; room: string; resolve: (f: Frame) => void; reject: (e: Error) => void; timer: Timer | null }

const MAX_REF = 0xffffffff;

/** The share of the engine's token bucket the client uses (see pump()). */
function localBucket(l: Limits): { burst: number; rate: number } {
  return { burst: Math.max(1, l.burst - Math.ceil(l.burst / 5)), rate: l.ratePerSec * 0.8 };
}

export class ShardchatClient {
  private readonly o: Required<Omit<ClientOptions, 'token' | 'getToken' | 'user' | 'WebSocket' | 'tokenIn'>>
    & Pick<ClientOptions, 'token' | 'getToken' | 'user'> & { tokenIn: 'protocol' | 'query' };
  private readonly WS: WebSocketCtor;
  private readonly events: Emitter<ClientEvents>;
  private readonly roomsByName = new Map<string, RoomTrack>();
  private readonly requests = new Map<number, Request>();
  private readonly outbox: Outbox;
  private readonly timers = new Set<Timer>();
  private ws: WebSocketLike | null = null;
  private gen = 0;
  private _state: ClientState = 'disconnected';
  private attempt = 0;
  private ref = 0;
  private cidCount = 0;
  private readonly cidPrefix: string;
  private reconnectTimer: Timer | null = null;
  private stableTimer: Timer | null = null;
  private connectTimer: Timer | null = null;
  private pumpTimer: Timer | null = null;
  /** Replaces the token on the open connection before its exp (with getToken only). */
  private refreshTimer: Timer | null = null;
  /** The token of the current (or last) attempt. */
  private token: string | undefined;
  /** Attempts in a row refused as `expired` (getToken gave an old token again): the second is final. */
  private expiredRefusals = 0;
  private wire: Uint8Array[] = [];
  private tokens = 0;
  private refilledAt = 0;
  private _limits: Limits | null = null;
  private _user: string | null = null;
  private _conn: string | null = null;

  constructor(options: ClientOptions) {
    if (!options || typeof options.url !== 'string' || !/^wss?:\/\//.test(options.url)) {
      throw new TypeError('options.url must be a ws:// or wss:// URL');
    }
    const WS = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketCtor }).WebSocket;
    if (!WS) throw new TypeError('options.WebSocket is required where there is no global WebSocket (Node: pass `ws`)');
    this.WS = WS;
    const pos = (name: keyof ClientOptions, v: number | undefined, def: number, min = 0): number => {
      if (v === undefined) return def;
      if (typeof v !== 'number' || !Number.isFinite(v) || v < min) throw new TypeError(`options.${name} must be a number >= ${min}, got ${String(v)}`);
      return v;
    };
    this.o = {
      url: options.url,
      user: options.user,
      token: options.token,
      getToken: options.getToken,
      tokenIn: options.tokenIn ?? (options.WebSocket ? 'query' : 'protocol'),
      backoffBaseMs: pos('backoffBaseMs', options.backoffBaseMs, 500, 1),
      backoffCapMs: pos('backoffCapMs', options.backoffCapMs, 20_000, 1),
      stableMs: pos('stableMs', options.stableMs, 10_000),
      shutdownJitterMs: pos('shutdownJitterMs', options.shutdownJitterMs, 5_000),
      connectTimeoutMs: pos('connectTimeoutMs', options.connectTimeoutMs, 10_000, 1),
      maxQueue: pos('maxQueue', options.maxQueue, 1000, 1),
      maxQueueBytes: pos('maxQueueBytes', options.maxQueueBytes, 1 << 20, 1),
      publishTimeoutMs: pos('publishTimeoutMs', options.publishTimeoutMs, 30_000, 1),
      requestTimeoutMs: pos('requestTimeoutMs', options.requestTimeoutMs, 10_000, 1),
      gapPageSize: pos('gapPageSize', options.gapPageSize, 50, 1),
      maxHeldMessages: pos('maxHeldMessages', options.maxHeldMessages, 5000, 1),
      random: options.random ?? Math.random,
      autoConnect: options.autoConnect ?? true,
    };
    this.events = new Emitter<ClientEvents>((e) => this.events.emit('error', { error: e instanceof Error ? e : new Error(String(e)) }));
    this.outbox = new Outbox(this.o.maxQueue, this.o.maxQueueBytes, this.o.publishTimeoutMs);
    this.cidPrefix = Math.floor(Math.random() * 2 ** 48).toString(36);
    if (this.o.autoConnect) this.connect();
  }

  get state(): ClientState { return this._state; }
  get limits(): Limits | null { return this._limits; }
  get user(): string | null { return this._user; }
  get conn(): string | null { return this._conn; }
  /** Publishes waiting for an ack (queued offline or in flight). */
  get queued(): { count: number; bytes: number } { return { count: this.outbox.size, bytes: this.outbox.byteSize }; }
  /** Listeners still registered (0 after close()). */
  get listenerCount(): number { return this.events.size; }

  on<K extends keyof ClientEvents>(name: K, fn: (e: ClientEvents[K]) => void): () => void { return this.events.on(name, fn); }
  off<K extends keyof ClientEvents>(name: K, fn: (e: ClientEvents[K]) => void): void { this.events.off(name, fn); }

  roomState(room: string): RoomState { return this.roomsByName.get(room)?.state ?? 'left'; }
  rooms(): string[] { return [...this.roomsByName.values()].filter((r) => r.wanted).map((r) => r.name); }
  unread(room: string): number { return this.roomsByName.get(room)?.unread ?? 0; }
  members(room: string): string[] { return [...(this.roomsByName.get(room)?.users ?? [])]; }
  /** Last seq delivered to the app in `room` (0 if none). */
  lastSeq(room: string): number { return this.roomsByName.get(room)?.last ?? 0; }

  /** Opens the connection if it is not open or scheduled; called by the constructor unless autoConnect is false. */
  connect(): void {
    if (this._state === 'closed' || this.ws || this._state === 'connecting') return;
    this.clearTimer('reconnectTimer');
    this.setState('connecting', { reason: 'connect' });
    const gen = ++this.gen;
    const open = (token: string | undefined): void => {
      if (gen !== this.gen || this._state !== 'connecting') return;
      this.token = token;
      let url = this.o.url;
      const q: string[] = [];
      if (this.o.user !== undefined) q.push(`user=${encodeURIComponent(this.o.user)}`);
      if (token !== undefined && this.o.tokenIn === 'query') q.push(`token=${encodeURIComponent(token)}`);
      if (q.length > 0) url += (url.includes('?') ? '&' : '?') + q.join('&');
      const protocols = token !== undefined && this.o.tokenIn === 'protocol' ? ['shardchat.v1', `bearer.${token}`] : undefined;
      let ws: WebSocketLike;
      try {
        ws = protocols ? new this.WS(url, protocols) : new this.WS(url);
      } catch (e) {
        this.lost({ reason: 'error', error: e as Error });
        return;
      }
      this.ws = ws;
      ws.binaryType = 'arraybuffer';
      ws.onmessage = (ev: { data: unknown }) => { if (gen === this.gen) this.onData(ev.data); };
      ws.onclose = (ev: { code: number }) => { if (gen === this.gen) this.lost({ reason: 'close', code: ev.code }); };
      ws.onerror = () => undefined; // the close that follows says what happened
      this.connectTimer = this.timer(() => {
        this.connectTimer = null;
        this.lost({ reason: 'timeout' });
      }, this.o.connectTimeoutMs);
    };
    if (this.o.getToken) {
      Promise.resolve().then(() => this.o.getToken!()).then(open, (e: unknown) => {
        if (gen === this.gen) this.lost({ reason: 'token', error: e instanceof Error ? e : new Error(String(e)) });
      });
    } else open(this.o.token);
  }

  /** Joins `room` (and rejoins it after every reconnect until leave()). Resolves once joined. */
  join(room: string): Promise<void> {
    if (this._state === 'closed') return Promise.reject(new ClientError('closed', 'client is closed'));
    let r = this.roomsByName.get(room);
    if (!r) { r = new RoomTrack(room); this.roomsByName.set(room, r); }
    if (r.wanted && r.state === 'joined') return Promise.resolve();
    const track = r;
    const p = new Promise<void>((resolve, reject) => track.waiters.push({ resolve, reject }));
    if (!track.wanted) {
      track.wanted = true;
      this.setRoom(track, 'joining', { reason: 'join' });
      if (this._state === 'connected') this.sendJoin(track);
    }
    return p;
  }

  /** Leaves `room`; its queued publishes reject with `not_joined`. */
  async leave(room: string): Promise<void> {
    const r = this.roomsByName.get(room);
    if (!r || !r.wanted) return;
    r.wanted = false;
    this.outbox.failRoom(room, () => new ClientError('not_joined', `left ${room}`));
    for (const w of r.waiters.splice(0)) w.reject(new ClientError('not_joined', `left ${room} before it was joined`));
    const connected = this._state === 'connected' && r.state !== 'left';
    r.held = null;
    if (connected) {
      try { await this.request('leave', room, { t: 'leave', room }); } catch (e) {
        if (!(e instanceof ServerError && e.serverCode === 'not_joined')) throw e;
      }
    }
    if (!r.wanted) { this.setRoom(r, 'left', { reason: 'leave' }); this.roomsByName.delete(room); }
  }

  /**
   * Publishes `body` to `room`; resolves with its seq once acknowledged. While disconnected (or
   * the room not yet joined) it waits in the bounded queue; unacked publishes are sent again
   * after a reconnect, each with the same `cid`.
   */
  publish(room: string, body: unknown): Promise<{ seq: number }> {
    if (this._state === 'closed') return Promise.reject(new ClientError('closed', 'client is closed'));
    const r = this.roomsByName.get(room);
    if (!r || !r.wanted) return Promise.reject(new ClientError('not_joined', `join ${room} before publishing to it`));
    const cid = `${this.cidPrefix}.${(++this.cidCount).toString(36)}`;
    let bytes: number;
    try {
      bytes = encode({ t: 'pub', room, body, ref: MAX_REF, cid }).length;
    } catch (e) {
      return Promise.reject(e);
    }
    const maxFrame = this._limits?.maxFrame;
    if (maxFrame !== undefined && bytes > maxFrame) {
      return Promise.reject(new ClientError('too_large', `publish of ${bytes} bytes is over the engine's maxFrame ${maxFrame}`));
    }
    return new Promise((resolve, reject) => {
      let p: Pending;
      try { p = this.outbox.add(room, cid, body, bytes, resolve, reject); } catch (e) { reject(e); return; }
      if (this._state === 'connected' && r.state === 'joined') this.sendPub(p);
    });
  }

  /** A page of history (latest without before/after). The room must be joined. */
  async history(room: string, opts: HistOptions = {}): Promise<HistPage> {
    const f = await this.request('hist', room, { t: 'hist', room, before: opts.before, after: opts.after, limit: opts.limit });
    const msgs = Array.isArray(f.msgs) ? (f.msgs as Frame[]).map((m) => toMessage(m, room)).filter((m): m is Message => m !== null) : [];
    return { room, msgs, truncated: f.truncated === true };
  }

  /** Users present in `room` now. */
  async who(room: string): Promise<string[]> {
    const f = await this.request('who', room, { t: 'who', room });
    return Array.isArray(f.users) ? (f.users as unknown[]).filter((u): u is string => typeof u === 'string') : [];
  }

  /** Users present in `room` now, with the identity info of those who have one (user -> info). */
  async whoWithInfo(room: string): Promise<{ users: string[]; info: Record<string, UserInfo> }> {
    const f = await this.request('who', room, { t: 'who', room });
    const users = Array.isArray(f.users) ? (f.users as unknown[]).filter((u): u is string => typeof u === 'string') : [];
    const info: Record<string, UserInfo> = {};
    if (f.info !== null && typeof f.info === 'object') {
      for (const [u, v] of Object.entries(f.info as Record<string, unknown>)) if (v !== null && typeof v === 'object' && !Array.isArray(v)) info[u] = v as UserInfo;
    }
    return { users, info };
  }

  /** Marks `room` read up to `seq` (default: the last delivered); resolves with the cursor. */
  async read(room: string, seq?: number): Promise<number> {
    const r = this.roomsByName.get(room);
    const f = await this.request('read', room, { t: 'read', room, seq: seq ?? r?.last ?? 0 });
    const cursor = typeof f.seq === 'number' ? f.seq : 0;
    if (r && cursor > r.cursor) { r.cursor = cursor; this.emitUnread(r); }
    return cursor;
  }

  /** Closes for good: the socket, every timer, every listener; pending calls reject with `closed`. */
  close(): void {
    this.shut({ reason: 'closed-by-app' }, () => new ClientError('closed', 'client is closed'));
  }

  /** Closed for good (by the app, or a token the engine refuses): everything goes, listeners last. */
  private shut(cause: Cause, error: () => ClientError): void {
    if (this._state === 'closed') return;
    const ws = this.ws;
    this.detach();
    if (ws) { try { ws.close(1000, 'client closed'); } catch { /* a socket still connecting may refuse: it is dropped either way */ } }
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    this.reconnectTimer = this.stableTimer = this.connectTimer = this.pumpTimer = this.refreshTimer = null;
    const closed = error;
    this.failRequests(closed);
    this.outbox.failAll(closed);
    for (const r of this.roomsByName.values()) {
      for (const w of r.waiters.splice(0)) w.reject(closed());
      if (r.state !== 'left') this.setRoom(r, 'left', cause);
    }
    this.roomsByName.clear();
    this.setState('closed', cause);
    this.events.clear();
  }

  // ---- connection ----

  private detach(): void {
    this.gen++;
    const ws = this.ws;
    this.ws = null;
    if (ws) { ws.onmessage = null; ws.onclose = null; ws.onopen = null; }
    this.clearTimer('connectTimer');
    this.clearTimer('stableTimer');
    this.clearTimer('pumpTimer');
    this.clearTimer('refreshTimer');
    this.wire = [];
  }

  /** The connection is gone (or never came up): tidy up and schedule the next attempt. */
  private lost(cause: Cause): void {
    if (this._state === 'closed') return;
    // Closed before any hello with a token: maybe the token was refused (a browser sees only 1006).
    const refusedMaybe = this._state === 'connecting' && cause.reason === 'close' && this.token !== undefined;
    const ws = this.ws;
    this.detach();
    if (ws && ws.readyState <= 1) { try { ws.close(); } catch { /* connecting sockets may throw; it is abandoned */ } }
    this.failRequests(() => new ClientError('disconnected', 'connection lost before the reply'));
    this.outbox.unsendAll();
    for (const r of this.roomsByName.values()) {
      r.held = null; r.joinRef = -1;
      if (r.wanted && r.state === 'joined') this.setRoom(r, 'joining', { reason: 'disconnected', code: cause.code });
    }
    this.setState('disconnected', cause);
    if (refusedMaybe) { this.checkToken(this.token!, cause); return; }
    this.retry(cause);
  }

  /**
   * Asks the engine's `GET /auth/check` whether `token` is refused (docs/AUTH.md). `missing` or
   * `invalid` is final: the client closes (cause `unauthorized`) instead of retrying a token that
   * cannot pass; so is `expired` without getToken, or twice in a row with it (getToken is asked
   * for a new token at every attempt). Anything else (the engine down, no fetch here) retries.
   */
  private checkToken(token: string, cause: Cause): void {
    const gen = this.gen;
    const f = (globalThis as { fetch?: (url: string, init: { headers: Record<string, string> }) => Promise<{ status: number; json(): Promise<unknown> }> }).fetch;
    if (f === undefined) { this.retry(cause); return; }
    let url: string;
    try { url = authCheckUrl(this.o.url); } catch { this.retry(cause); return; }
    f(url, { headers: { authorization: `Bearer ${token}` } }).then(async (res) => {
      if (res.status !== 401) return null;
      const body = await res.json() as { error?: { reason?: unknown } };
      return typeof body.error?.reason === 'string' ? body.error.reason : null;
    }).then((reason) => {
      if (gen !== this.gen || this._state !== 'disconnected') return;
      if (reason === 'expired' && this.o.getToken && ++this.expiredRefusals < 2) { this.retry(cause); return; }
      if (reason === 'missing' || reason === 'invalid' || reason === 'expired') {
        const msg = `the engine refused the token (${reason}): not retrying`;
        this.shut({ reason: 'unauthorized', code: cause.code, error: new ClientError('unauthorized', msg) }, () => new ClientError('unauthorized', msg));
        return;
      }
      this.retry(cause);
    }, () => { if (gen === this.gen && this._state === 'disconnected') this.retry(cause); });
  }

  /** Schedules the next attempt (full-jitter back-off). */
  private retry(cause: Cause): void {
    const n = this.attempt++;
    let delay = backoffDelay(n, { baseMs: this.o.backoffBaseMs, capMs: this.o.backoffCapMs, random: this.o.random });
    if (cause.code === 1001) delay += this.o.random() * this.o.shutdownJitterMs;
    this.events.emit('retry', { attempt: n + 1, delayMs: delay, at: Date.now() + delay });
    this.reconnectTimer = this.timer(() => { this.reconnectTimer = null; this.connect(); }, delay);
  }

  private onData(data: unknown): void {
    let f: unknown;
    try {
      if (data instanceof ArrayBuffer) f = decode(new Uint8Array(data));
      else if (data instanceof Uint8Array) f = decode(data);
      else throw new ClientError('bad_frame', 'the engine sent a text frame');
    } catch (e) {
      this.events.emit('error', { error: e as Error });
      return;
    }
    if (f === null || typeof f !== 'object' || Array.isArray(f) || typeof (f as Frame).t !== 'string') {
      this.events.emit('error', { error: new ClientError('bad_frame', 'a frame that is not a map with t') });
      return;
    }
    this.onFrame(f as Frame);
  }

  private onFrame(f: Frame): void {
    const ref = typeof f.ref === 'number' ? f.ref : -1;
    const room = typeof f.room === 'string' ? this.roomsByName.get(f.room) : undefined;
    switch (f.t) {
      case 'hello': return this.onHello(f);
      case 'joined': if (room) this.onJoined(room, f, ref); return;
      case 'msg': if (room) this.onMsg(room, f); return;
      case 'presence': if (room) this.onPresence(room, f); return;
      case 'ack': {
        const p = this.outbox.byRef(ref);
        if (p) { this.outbox.done(p, Number(f.seq)); return; }
        break;
      }
      case 'err': return this.onErr(f, ref);
    }
    const req = this.requests.get(ref);
    if (req) this.settle(ref, req, f);
  }

  private onHello(f: Frame): void {
    this.clearTimer('connectTimer');
    const l = (f.limits ?? {}) as Record<string, unknown>;
    const num = (v: unknown, d: number): number => (typeof v === 'number' && v > 0 ? v : d);
    this._limits = {
      maxFrame: num(l.maxFrame, 65536), maxRooms: num(l.maxRooms, 100), ratePerSec: num(l.ratePerSec, 10),
      burst: num(l.burst, 50), maxBuffer: num(l.maxBuffer, 1 << 20),
    };
    this._user = String(f.user);
    this._conn = String(f.conn);
    this.tokens = localBucket(this._limits).burst;
    this.refilledAt = performance.now();
    this.stableTimer = this.timer(() => { this.stableTimer = null; this.attempt = 0; }, this.o.stableMs);
    this.expiredRefusals = 0;
    this.scheduleRefresh();
    this.setState('connected', { reason: 'hello' });
    this.events.emit('hello', { conn: this._conn, user: this._user, limits: this._limits });
    for (const r of this.roomsByName.values()) if (r.wanted) this.sendJoin(r);
  }

  // ---- token refresh (docs/AUTH.md: `refresh`, close 4401) ----

  /** With getToken, replaces the token on the open connection at 70..90% of its remaining life. */
  private scheduleRefresh(): void {
    this.clearTimer('refreshTimer');
    const exp = this.token === undefined || !this.o.getToken ? null : tokenExp(this.token);
    if (exp === null) return;
    this.refreshTimer = this.timer(() => { this.refreshTimer = null; void this.refreshToken(exp); }, refreshDelay(exp, Date.now(), this.o.random));
  }

  private async refreshToken(oldExp: number): Promise<void> {
    const gen = this.gen;
    try {
      const token = await this.o.getToken!();
      if (gen !== this.gen || this._state !== 'connected') return;
      await this.control({ t: 'refresh', token });
      if (gen !== this.gen) return;
      this.token = token;
      this.scheduleRefresh();
    } catch (e) {
      if (gen !== this.gen || this._state !== 'connected') return;
      this.events.emit('error', { error: e instanceof Error ? e : new Error(String(e)) });
      // Once more within what is left; past exp the engine closes with 4401 and the reconnect asks getToken.
      const left = oldExp * 1000 - Date.now();
      if (left > 2000) this.refreshTimer = this.timer(() => { this.refreshTimer = null; void this.refreshToken(oldExp); }, left / 2);
    }
  }

  /** A request about the connection, not a room (`refresh`). */
  private control(frame: Frame): Promise<Frame> {
    if (this._state !== 'connected') return Promise.reject(new ClientError('disconnected', 'not connected'));
    return new Promise((resolve, reject) => {
      const ref = this.nextRef();
      const timer = this.timer(() => {
        if (this.requests.delete(ref)) reject(new TimeoutError(`${String(frame.t)} not answered within ${this.o.requestTimeoutMs} ms`));
      }, this.o.requestTimeoutMs);
      this.requests.set(ref, { kind: String(frame.t), room: '', resolve, reject, timer });
      this.send({ ...frame, ref });
    });
  }

  // ---- rooms ----

  private sendJoin(r: RoomTrack): void {
    if (r.state !== 'joining') this.setRoom(r, 'joining', { reason: 'rejoin' });
    const ref = this.nextRef();
    r.joinRef = ref;
    const timer = this.timer(() => { if (this.requests.delete(ref)) this.lost({ reason: 'timeout' }); }, this.o.requestTimeoutMs);
    this.requests.set(ref, { kind: 'join', room: r.name, resolve: () => undefined, reject: () => undefined, timer });
    this.send({ ...r.joinFrame(), ref });
  }

  private onJoined(r: RoomTrack, f: Frame, ref: number): void {
    const solicited = ref >= 0 && ref === r.joinRef;
    if (solicited) { this.dropRequest(ref); r.joinRef = -1; }
    else if (ref >= 0) { this.dropRequest(ref); return; } // the reply to a join this client superseded: its timer must not fire
    if (!r.wanted) return;
    const outcome = r.onJoined(f, solicited);
    this.setRoom(r, 'joined', { reason: outcome.kind === 'gap' ? 'gap' : outcome.kind === 'resume' ? 'resumed' : 'join' });
    for (const w of r.waiters.splice(0)) w.resolve();
    if (outcome.kind === 'resume') for (const m of outcome.missed) this.deliver(r, m);
    if (outcome.kind === 'gap') this.reload(r, outcome.reason);
    this.emitUnread(r);
    this.refreshMembers(r);
    for (const p of this.outbox.unsent(r.name)) this.sendPub(p);
  }

  /** After a gap: say so, then deliver the latest page, holding live messages until it is in. */
  private reload(r: RoomTrack, reason: 'truncated' | 'epoch'): void {
    this.events.emit('gap', { room: r.name, reason, epoch: r.epoch ?? '', seq: r.latest });
    r.held = [];
    const held = r.held;
    this.history(r.name, { before: r.latest + 1, limit: this.o.gapPageSize }).then((page) => {
      if (r.held !== held) return;
      r.held = null;
      for (const m of page.msgs) this.deliver(r, m);
      for (const m of held) this.deliver(r, m);
    }, () => {
      if (r.held !== held) return;
      r.held = null;
      for (const m of held) this.deliver(r, m);
    });
  }

  private onMsg(r: RoomTrack, f: Frame): void {
    const m = toMessage(f, r.name);
    if (!m || r.state !== 'joined') return;
    if (r.held) {
      r.held.push(m);
      if (r.held.length > this.o.maxHeldMessages) {
        // The reload takes too long: give up the page rather than hold without bound.
        const held = r.held;
        r.held = null;
        for (const x of held) this.deliver(r, x);
      }
      return;
    }
    this.deliver(r, m);
  }

  private deliver(r: RoomTrack, m: Message): void {
    if (!r.accept(m)) return;
    if (m.from === this._user && m.seq > r.cursor) r.cursor = m.seq;
    this.events.emit('message', m);
    this.emitUnread(r);
  }

  private onPresence(r: RoomTrack, f: Frame): void {
    if (typeof f.user !== 'string' || (f.state !== 'join' && f.state !== 'leave')) return;
    if (f.state === 'join') r.users.add(f.user); else r.users.delete(f.user);
    r.presenceLog?.push({ user: f.user, join: f.state === 'join' });
    const info = f.state === 'join' && f.info !== null && typeof f.info === 'object' && !Array.isArray(f.info) ? f.info as UserInfo : undefined;
    this.events.emit('presence', info === undefined ? { room: r.name, user: f.user, state: f.state } : { room: r.name, user: f.user, state: f.state, info });
    this.events.emit('members', { room: r.name, users: [...r.users] });
  }

  /**
   * Asks `who` and applies it. The engine does not order a `who` reply against `presence`
   * frames (a presence sent after the snapshot may arrive before the reply), so presence seen
   * while the request is out is replayed on the snapshot: the last change per user wins.
   */
  private refreshMembers(r: RoomTrack): void {
    const seen: { user: string; join: boolean }[] = [];
    r.presenceLog = seen;
    this.who(r.name).then((users) => {
      if (r.presenceLog !== seen) return;
      r.presenceLog = null;
      r.users = new Set(users);
      for (const p of seen) { if (p.join) r.users.add(p.user); else r.users.delete(p.user); }
      this.events.emit('members', { room: r.name, users: [...r.users] });
    }, () => { if (r.presenceLog === seen) r.presenceLog = null; }); // lost with the connection; the next join asks again
  }

  private emitUnread(r: RoomTrack): void {
    this.events.emit('unread', { room: r.name, count: r.unread });
  }

  // ---- requests and publishes ----

  private sendPub(p: Pending): void {
    p.ref = this.nextRef();
    this.send({ t: 'pub', room: p.room, body: p.body, ref: p.ref, cid: p.cid });
  }

  private request(kind: string, room: string, frame: Frame): Promise<Frame> {
    if (this._state === 'closed') return Promise.reject(new ClientError('closed', 'client is closed'));
    const r = this.roomsByName.get(room);
    if (kind !== 'leave' && (!r || r.state !== 'joined')) return Promise.reject(new ClientError('not_joined', `${room} is not joined`));
    if (this._state !== 'connected') return Promise.reject(new ClientError('disconnected', 'not connected'));
    return new Promise((resolve, reject) => {
      const ref = this.nextRef();
      const timer = this.timer(() => {
        if (this.requests.delete(ref)) reject(new TimeoutError(`${kind} ${room} not answered within ${this.o.requestTimeoutMs} ms`));
      }, this.o.requestTimeoutMs);
      this.requests.set(ref, { kind, room, resolve, reject, timer });
      this.send({ ...frame, ref });
    });
  }

  private onErr(f: Frame, ref: number): void {
    const code = typeof f.code === 'string' ? f.code : 'unknown';
    const msg = typeof f.msg === 'string' ? f.msg : '';
    const retry = typeof f.retryAfterMs === 'number' ? f.retryAfterMs : undefined;
    const p = this.outbox.byRef(ref);
    if (p) {
      if (retry !== undefined || code === 'internal') {
        // Not acted on (rate_limited, overloaded) or lost with a shard: send again later.
        p.ref = -1;
        this.timer(() => {
          const r = this.roomsByName.get(p.room);
          if (p.ref < 0 && this._state === 'connected' && r?.state === 'joined' && this.outbox.has(p)) this.sendPub(p);
        }, retry ?? this.o.backoffBaseMs);
      } else this.outbox.fail(p, new ServerError(code, msg, retry));
      return;
    }
    const req = this.requests.get(ref);
    if (!req) { this.events.emit('error', { error: new ServerError(code, msg, retry) }); return; }
    this.dropRequest(ref);
    if (req.kind !== 'join') { req.reject(new ServerError(code, msg, retry)); return; }
    const r = this.roomsByName.get(req.room);
    if (!r || !r.wanted) return;
    if (r.joinRef !== ref) return; // an err for a superseded join: the current one is still out
    r.joinRef = -1;
    if (retry !== undefined || code === 'internal' || code === 'shutting_down') {
      this.timer(() => { if (r.wanted && r.state !== 'joined' && r.joinRef < 0 && this._state === 'connected') this.sendJoin(r); }, retry ?? this.o.backoffBaseMs);
      return;
    }
    r.wanted = false;
    const e = new ServerError(code, msg, retry);
    for (const w of r.waiters.splice(0)) w.reject(e);
    this.outbox.failRoom(r.name, () => e);
    this.setRoom(r, 'left', { reason: 'refused', error: e });
    this.roomsByName.delete(r.name);
  }

  private settle(ref: number, req: Request, f: Frame): void {
    this.dropRequest(ref);
    req.resolve(f);
  }

  private dropRequest(ref: number): void {
    const req = this.requests.get(ref);
    if (!req) return;
    this.requests.delete(ref);
    if (req.timer) { clearTimeout(req.timer); this.timers.delete(req.timer); }
  }

  private failRequests(e: () => Error): void {
    for (const [ref, req] of [...this.requests]) { this.dropRequest(ref); req.reject(e()); }
  }

  // ---- the wire: every frame costs one token of the engine's bucket ----
  // The local bucket is smaller and slower than the engine's (a fifth of the burst held back,
  // 80% of the rate): frames sent apart can arrive together, and the engine counts arrivals.

  private send(frame: Frame): void {
    this.wire.push(encode(frame));
    this.pump();
  }

  private pump(): void {
    const ws = this.ws;
    const l = this._limits;
    if (!ws || !l || this.pumpTimer) return;
    const b = localBucket(l);
    const now = performance.now(); // monotonic: a wall-clock step must not stall sending
    this.tokens = Math.min(b.burst, this.tokens + ((now - this.refilledAt) / 1000) * b.rate);
    this.refilledAt = now;
    while (this.wire.length > 0 && this.tokens >= 1) {
      this.tokens -= 1;
      ws.send(this.wire.shift()!);
    }
    if (this.wire.length > 0) {
      const wait = Math.ceil(((1 - this.tokens) / b.rate) * 1000);
      this.pumpTimer = this.timer(() => { this.pumpTimer = null; this.pump(); }, wait);
    }
  }

  // ---- small things ----

  private nextRef(): number {
    this.ref = this.ref >= MAX_REF ? 1 : this.ref + 1;
    return this.ref;
  }

  private timer(fn: () => void, ms: number): Timer {
    const t = setTimeout(() => { this.timers.delete(t); fn(); }, ms);
    this.timers.add(t);
    return t;
  }

  private clearTimer(name: 'reconnectTimer' | 'stableTimer' | 'connectTimer' | 'pumpTimer' | 'refreshTimer'): void {
    const t = this[name];
    if (t) { clearTimeout(t); this.timers.delete(t); this[name] = null; }
  }

  private setState(state: ClientState, cause: Cause): void {
    const prev = this._state;
    if (prev === state) return;
    this._state = state;
    this.events.emit('state', { state, prev, cause });
  }

  private setRoom(r: RoomTrack, state: RoomState, cause: Cause): void {
    const prev = r.state;
    if (prev === state) return;
    r.state = state;
    this.events.emit('room', { room: r.name, state, prev, cause });
  }
}
