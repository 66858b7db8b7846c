#!/usr/bin/env node
/**
 * Peer of the load benchmarks: the `ws` library (native-bench/package.json) with a room map.
 * A socket joins the room named by `?room=` in its upgrade URL (any path); every message it sends
 * is sent, as received (binary or text), to every socket of that room, the sender included.
 *
 *   node native-bench/peers/ws-rooms.mjs --port 9103 [--host 127.0.0.1]
 *
 * Prints "listening <port>" on stdout once bound; SIGTERM/SIGINT close the listener and exit 0.
 */
import { URL } from 'node:url';
import { WebSocketServer } from 'ws';
import { peerArgs } from './args.mjs';

const { port, host } = peerArgs('ws-rooms', 9103);

/** room name -> Set of sockets */
const rooms = new Map();
const wss = new WebSocketServer({ host, port, perMessageDeflate: false, maxPayload: 64 * 1024, clientTracking: false });
wss.on('connection', (ws, req) => {
  const q = new URL(req.url ?? '/', 'http://x').searchParams;
  const room = q.get('room') ?? 'lobby';
  let set = rooms.get(room);
  if (!set) { set = new Set(); rooms.set(room, set); }
  set.add(ws);
  ws.on('message', (data, isBinary) => {
    for (const s of set) if (s.readyState === 1) s.send(data, { binary: isBinary });
  });
  ws.on('close', () => {
    set.delete(ws);
    if (set.size === 0 && rooms.get(room) === set) rooms.delete(room);
  });
  ws.on('error', () => undefined);
});
wss.on('listening', () => { process.stdout.write(`listening ${port}\n`); });
wss.on('error', (e) => { process.stderr.write(`ws-rooms: ${e.message}\n`); process.exit(1); });

const stop = () => { process.exit(0); };
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
