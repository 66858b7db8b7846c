/**
 * The single-threaded server of shardchat's v1 protocol (docs/PROTOCOL.md) that a user would write
 * instead of shardchat: one uWebSockets.js thread doing everything inline, written to be fast
 * (it is the bar the engine is measured against). hello, join (since / missed / truncated),
 * leave, pub / ack with seq, msg, hist, read cursors and unread, who, presence, the per-connection
 * token bucket, room / frame / nesting limits and every v1 error code.
 *
 * How it is fast: a client frame is checked by a scanner that does not decode the body
 * (mp-wire.mjs); each msg is encoded once, straight into its history slot, and fanned out with
 * one app.publish (uWS's C++ does the per-recipient work). Publishes are queued during a loop turn
 * and flushed by one setImmediate, then each sender's acks go out corked with its msgs: publishing
 * inside a message handler makes uWS flush subscribers uncorked once several messages are in
 * flight (README, "uws-deferred"). Any non-pub frame flushes first, so replies keep their order.
 *
 * `store` (optional) makes it durable: store.append(room, seq, from, ts, frame) is called for
 * every message as it gets its seq and store.commit() before a turn's publishes and acks go out
 * (acked means kept); see uws-protocol-sqlite.mjs.
 */
import { createRequire } from 'node:module';
import { randomBytes } from 'node:crypto';
import { TextDecoder } from 'node:util';
import { peerArgs } from './args.mjs';
import { WireError, Keys, scan, readStr, readInt, Writer } from './mp-wire.mjs';

const require = createRequire(import.meta.url);
const uws = require('@trufflesuite/uws-js-unofficial');

const ROOM_RE = /^[A-Za-z0-9_.:@-]{1,128}$/;
const USER_RE = /^[A-Za-z0-9_.@-]{1,64}$/;
const KNOWN = ['t', 'room', 'body', 'ref', 'since', 'epoch', 'before', 'after', 'limit', 'seq'];
const num = (flag, def) => { const i = process.argv.indexOf(flag); const v = i >= 0 ? Number(process.argv[i + 1]) : def; if (!Number.isFinite(v) || v <= 0) { process.stderr.write(`${flag} must be a positive number\n`); process.exit(2); } return v; };

export function runProtocolPeer(name, defaultPort, store = null) {
  const { port, host } = peerArgs(name, defaultPort, true);
  const L = {
    maxFrame: num('--max-frame-bytes', 65536), maxRooms: num('--max-rooms', 100), ratePerSec: num('--rate-per-sec', 10),
    burst: num('--rate-burst', 50), maxBuffer: num('--max-buffer-bytes', 1 << 20), historyLimit: num('--history-limit', 1000),
    maxHistBytes: num('--max-hist-bytes', 1 << 20), maxBodyDepth: num('--max-body-depth', 32), roomTtlMs: num('--room-ttl-ms', 300000),
  };
  const dec = new TextDecoder();
  const frameKeys = new Keys(KNOWN);
  const out = new Writer();
  /** name -> { name, epoch, seq, hist: Buffer[] (ring, historyLimit slots), users: Map<user, conns>, cursors: Map<user, seq>, conns, emptyAt } */
  const rooms = new Map();
  let nextConn = 1;

  const room = (n) => {
    let r = rooms.get(n);
    if (!r) {
      r = { name: n, epoch: randomBytes(6).toString('hex'), seq: 0, hist: new Array(L.historyLimit), users: new Map(), cursors: new Map(), conns: 0, emptyAt: 0 };
      rooms.set(n, r);
    }
    return r;
  };
  const firstKept = (r) => Math.max(1, r.seq - L.historyLimit + 1);
  const slot = (s) => s % L.historyLimit;

  // ---- replies (encoded into `out`, sent at once: a message handler corks them) ----
  const head = (t, ref, roomName, extra) => {
    out.reset().map(1 + (ref === undefined ? 0 : 1) + (roomName === null ? 0 : 1) + extra).str('t').str(t);
    if (ref !== undefined) out.str('ref').uint(ref);
    if (roomName !== null) out.str('room').str(roomName);
    return out;
  };
  const send = (ws) => { if (!ws.getUserData().closed) ws.send(out.view(), true); };
  const err = (ws, code, msg, ref, retryAfterMs) => {
    head('err', ref, null, 2 + (retryAfterMs === undefined ? 0 : 1)).str('code').str(code).str('msg').str(msg);
    if (retryAfterMs !== undefined) out.str('retryAfterMs').uint(retryAfterMs);
    send(ws);
  };
  const presence = (r, user, state) => {
    head('presence', undefined, r.name, 2).str('user').str(user).str('state').str(state);
    app.publish(r.name, out.view(), true);
  };

  // ---- the per-turn publish queue ----
  const pubRooms = [];
  const pubFrames = [];
  /** ws -> [start, end, start, end, ...] of its acks in ackW */
  const acks = new Map();
  const ackW = new Writer();
  let scheduled = false;
  const flush = () => {
    scheduled = false;
    if (pubRooms.length === 0 && acks.size === 0) return;
    if (store) store.commit();
    for (let i = 0; i < pubRooms.length; i++) app.publish(pubRooms[i], pubFrames[i], true);
    pubRooms.length = 0;
    pubFrames.length = 0;
    const buf = ackW.buf;
    for (const [ws, spans] of acks) {
      if (ws.getUserData().closed) continue;
      ws.cork(() => { for (let i = 0; i < spans.length; i += 2) ws.send(buf.subarray(spans[i], spans[i + 1]), true); });
    }
    acks.clear();
    ackW.reset();
  };

  const pub = (ws, ud, u8, keys, ref) => {
    const bodySpan = keys.get('body');
    if (!bodySpan) return err(ws, 'bad_request', 'pub needs a body', ref);
    const rs = keys.get('room');
    const r = rs ? rooms.get(readStr(u8, rs, dec)) : undefined;
    if (!r || !ud.rooms.has(r.name)) return notJoinedOrBadRoom(ws, u8, keys, ref);
    const seq = ++r.seq;
    const ts = Date.now();
    // the msg, encoded once, into its own buffer: it is the history entry and what is published
    const w = out.reset().map(6).str('t').str('msg').str('room').str(r.name).str('seq').uint(seq).str('from').str(ud.user)
      .str('body').raw(u8, bodySpan[0], bodySpan[1]).str('ts').uint(ts);
    const frame = w.copy();
    r.hist[slot(seq)] = frame;
    if (r.cursors.has(ud.user)) r.cursors.set(ud.user, seq);
    if (store) store.append(r.name, seq, ud.user, ts, frame);
    pubRooms.push(r.name);
    pubFrames.push(frame);
    const a = ackW.n;
    ackW.map(ref === undefined ? 3 : 4).str('t').str('ack');
    if (ref !== undefined) ackW.str('ref').uint(ref);
    ackW.str('room').str(r.name).str('seq').uint(seq);
    let spans = acks.get(ws);
    if (!spans) { spans = []; acks.set(ws, spans); }
    spans.push(a, ackW.n);
    if (!scheduled) { scheduled = true; setImmediate(flush); }
  };

  const roomOf = (ws, u8, keys, ref) => {
    const sp = keys.get('room');
    if (!sp) { err(ws, 'bad_request', 'room is required', ref); return null; }
    const n = readStr(u8, sp, dec);
    if (n === null || !ROOM_RE.test(n)) { err(ws, 'bad_room', 'room must be 1..128 bytes of [A-Za-z0-9_.:@-]', ref); return null; }
    return n;
  };
  const notJoinedOrBadRoom = (ws, u8, keys, ref) => {
    const n = roomOf(ws, u8, keys, ref);
    if (n !== null) err(ws, 'not_joined', `not joined to ${n}`, ref);
  };
  const optInt = (u8, keys, k) => { const sp = keys.get(k); return sp ? readInt(u8, sp) : undefined; };
  const badInt = (x, min) => x !== undefined && (!Number.isSafeInteger(x) || x < min);

  const join = (ws, ud, u8, keys, ref) => {
    const n = roomOf(ws, u8, keys, ref);
    if (n === null) return;
    const since = optInt(u8, keys, 'since');
    if (badInt(since, 0)) return err(ws, 'bad_request', 'since must be an integer >= 0', ref);
    const es = keys.get('epoch');
    const epoch = es && u8[es[0]] !== 0xc0 ? readStr(u8, es, dec) : undefined;
    if (epoch === null) return err(ws, 'bad_request', 'epoch must be a string', ref);
    const already = ud.rooms.has(n);
    if (!already && ud.rooms.size >= L.maxRooms) return err(ws, 'too_many_rooms', `at most ${L.maxRooms} rooms per connection`, ref);
    const r = room(n);
    let missedFrom = -2; // -1: truncated
    if (since !== undefined) {
      if ((epoch !== undefined && epoch !== r.epoch) || since > r.seq || since + 1 < firstKept(r)) missedFrom = -1;
      else {
        missedFrom = since + 1;
        let bytes = 0;
        for (let s = missedFrom; s <= r.seq; s++) bytes += r.hist[slot(s)].length;
        if (bytes > L.maxHistBytes) missedFrom = -1;
      }
    }
    if (!already) {
      ud.rooms.add(n);
      r.conns++;
      const c = r.users.get(ud.user) ?? 0;
      r.users.set(ud.user, c + 1);
      if (c === 0) presence(r, ud.user, 'join'); // before subscribing: the joiner does not see its own
      if (!r.cursors.has(ud.user)) r.cursors.set(ud.user, r.seq);
      ws.subscribe(n);
    }
    head('joined', ref, n, 4 + (missedFrom === -2 ? 0 : 1)).str('epoch').str(r.epoch).str('seq').uint(r.seq)
      .str('unread').uint(r.seq - r.cursors.get(ud.user)).str('members').uint(r.users.size);
    if (missedFrom === -1) out.str('truncated').bool(true);
    else if (missedFrom >= 0) {
      out.str('missed').arr(r.seq - missedFrom + 1);
      for (let s = missedFrom; s <= r.seq; s++) out.raw(r.hist[slot(s)]);
    }
    send(ws);
  };

  const part = (ud, r, ws) => {
    ud.rooms.delete(r.name);
    if (ws) ws.unsubscribe(r.name);
    if (--r.conns === 0) r.emptyAt = Date.now();
    const c = r.users.get(ud.user) - 1;
    if (c === 0) { r.users.delete(ud.user); presence(r, ud.user, 'leave'); } else r.users.set(ud.user, c);
  };

  const hist = (ws, r, u8, keys, ref) => {
    const before = optInt(u8, keys, 'before');
    const after = optInt(u8, keys, 'after');
    let limit = optInt(u8, keys, 'limit');
    if (badInt(before, 0) || badInt(after, 0) || (before !== undefined && after !== undefined)) return err(ws, 'bad_request', 'at most one of before / after, integers >= 0', ref);
    if (limit === undefined) limit = 50;
    else if (!Number.isSafeInteger(limit) || limit < 1) return err(ws, 'bad_request', 'limit must be an integer >= 1', ref);
    if (limit > 500) limit = 500;
    const first = firstKept(r);
    let lo; let hi;
    if (before !== undefined) { hi = Math.min(before - 1, r.seq); lo = hi - limit + 1; }
    else if (after !== undefined) { lo = after + 1; hi = Math.min(lo + limit - 1, r.seq); }
    else { hi = r.seq; lo = hi - limit + 1; }
    if (lo < 1) lo = 1;
    const truncated = lo < first && lo <= hi;
    if (lo < first) lo = first;
    let a = lo; let z = hi; let bytes = 0;
    if (after === undefined) {
      for (let s = hi; s >= lo; s--) { const l = r.hist[slot(s)].length; if (bytes + l > L.maxHistBytes && s !== hi) { a = s + 1; break; } bytes += l; }
    } else {
      for (let s = lo; s <= hi; s++) { const l = r.hist[slot(s)].length; if (bytes + l > L.maxHistBytes && s !== lo) { z = s - 1; break; } bytes += l; }
    }
    head('hist', ref, r.name, 1 + (truncated ? 1 : 0)).str('msgs').arr(z >= a ? z - a + 1 : 0);
    for (let s = a; s <= z; s++) out.raw(r.hist[slot(s)]);
    if (truncated) out.str('truncated').bool(true);
    send(ws);
  };

  const onFrame = (ws, ud, u8) => {
    let keys;
    try { keys = scan(u8, frameKeys, L.maxBodyDepth); } catch (e) {
      if (e instanceof WireError) return err(ws, e.code, e.message, undefined);
      throw e;
    }
    const rs = keys.get('ref');
    let ref;
    if (rs) {
      ref = readInt(u8, rs);
      if (ref !== undefined && !(Number.isSafeInteger(ref) && ref >= 0 && ref <= 0xffffffff)) return err(ws, 'bad_request', 'ref must be an integer 0..2^32-1', undefined);
    }
    const ts = keys.get('t');
    const t = ts ? readStr(u8, ts, dec) : null;
    if (t === 'pub') return pub(ws, ud, u8, keys, ref);
    if (scheduled) flush(); // replies other than acks keep their order
    switch (t) {
      case 'join': return join(ws, ud, u8, keys, ref);
      case 'leave': case 'hist': case 'read': case 'who': {
        const n = roomOf(ws, u8, keys, ref);
        if (n === null) return undefined;
        const r = rooms.get(n);
        if (!r || !ud.rooms.has(n)) return err(ws, 'not_joined', `not joined to ${n}`, ref);
        if (t === 'leave') { part(ud, r, ws); head('left', ref, n, 0); return send(ws); }
        if (t === 'hist') return hist(ws, r, u8, keys, ref);
        if (t === 'who') {
          let bytes = 0; let k = 0; const users = [];
          for (const u of r.users.keys()) { if (bytes + u.length + 2 > L.maxHistBytes) break; bytes += u.length + 2; users.push(u); k++; }
          const trunc = k < r.users.size;
          head('who', ref, n, 1 + (trunc ? 1 : 0)).str('users').arr(users.length);
          for (const u of users) out.str(u);
          if (trunc) out.str('truncated').bool(true);
          return send(ws);
        }
        const seq = optInt(u8, keys, 'seq');
        if (seq === undefined || badInt(seq, 0)) return err(ws, 'bad_request', 'seq must be an integer >= 0', ref);
        const cur = Math.max(r.cursors.get(ud.user) ?? 0, Math.min(seq, r.seq));
        r.cursors.set(ud.user, cur);
        head('ack', ref, n, 1).str('seq').uint(cur);
        return send(ws);
      }
      default: return err(ws, 'unknown_type', 'unknown or missing t', ref);
    }
  };

  const app = uws.App();
  app.ws('/*', {
    compression: uws.DISABLED,
    maxPayloadLength: L.maxFrame,
    // uWS's own limit closes the socket (the client sees 1006, not 4008): per-recipient checks
    // would be per-recipient work, which this peer does not do
    maxBackpressure: L.maxBuffer,
    closeOnBackpressureLimit: true,
    idleTimeout: 60,
    upgrade: (res, req, ctx) => {
      const conn = `c${nextConn++}`;
      let user = `anon-${conn}`;
      const users = (req.getQuery() ?? '').split('&').filter((kv) => kv === 'user' || kv.startsWith('user='));
      if (users.length > 1) { res.writeStatus('400 Bad Request').end('user given twice'); return; }
      if (users.length === 1) {
        try { user = decodeURIComponent(users[0].slice(5)); } catch { user = ''; }
        if (!USER_RE.test(user)) { res.writeStatus('400 Bad Request').end('user must be 1..64 bytes of [A-Za-z0-9_.@-]'); return; }
      }
      res.upgrade({ conn, user, rooms: new Set(), tokens: L.burst, refillAt: Date.now(), closed: false },
        req.getHeader('sec-websocket-key'), req.getHeader('sec-websocket-protocol'), req.getHeader('sec-websocket-extensions'), ctx);
    },
    open: (ws) => {
      const ud = ws.getUserData();
      out.reset().map(5).str('t').str('hello').str('conn').str(ud.conn).str('user').str(ud.user).str('v').uint(1)
        .str('limits').map(5).str('maxFrame').uint(L.maxFrame).str('maxRooms').uint(L.maxRooms).str('ratePerSec').uint(L.ratePerSec)
        .str('burst').uint(L.burst).str('maxBuffer').uint(L.maxBuffer);
      ws.send(out.view(), true);
    },
    message: (ws, msg, isBinary) => {
      const ud = ws.getUserData();
      const now = Date.now();
      if (now !== ud.refillAt) { ud.tokens = Math.min(L.burst, ud.tokens + ((now - ud.refillAt) * L.ratePerSec) / 1000); ud.refillAt = now; }
      if (ud.tokens < 1) return err(ws, 'rate_limited', 'too many frames', undefined, Math.ceil(((1 - ud.tokens) * 1000) / L.ratePerSec));
      ud.tokens -= 1;
      if (!isBinary) return err(ws, 'bad_frame', 'text frames are not frames', undefined);
      return onFrame(ws, ud, new Uint8Array(msg));
    },
    close: (ws) => {
      const ud = ws.getUserData();
      ud.closed = true;
      if (scheduled) flush();
      for (const n of [...ud.rooms]) part(ud, rooms.get(n), null);
    },
  });
  app.get('/healthz', (res) => { res.end('ok'); });
  app.get('/readyz', (res) => { res.end('ok'); });
  app.any('/*', (res) => { res.writeStatus('404 Not Found').end('not found'); });

  // rooms without members are dropped roomTtlMs after the last one left
  const sweep = setInterval(() => {
    const now = Date.now();
    for (const [n, r] of rooms) if (r.conns === 0 && now - r.emptyAt >= L.roomTtlMs) rooms.delete(n);
  }, Math.min(10000, L.roomTtlMs));
  sweep.unref();

  let listenSocket = null;
  app.listen(host, port, (ls) => {
    if (!ls) { process.stderr.write(`${name}: cannot listen on ${host}:${port}\n`); process.exit(1); }
    listenSocket = ls;
    process.stdout.write(`listening ${uws.us_socket_local_port(ls)}\n`);
  });
  const stop = () => {
    if (listenSocket) { uws.us_listen_socket_close(listenSocket); listenSocket = null; }
    if (store) store.close();
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}
