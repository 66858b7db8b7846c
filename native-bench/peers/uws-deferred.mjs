#!/usr/bin/env node
/**
 * Diagnostic peer (not in the default run): plain uWebSockets.js pub/sub like uws-plain.mjs, but
 * the message handler only queues (copies) each message, and one setImmediate per event-loop turn
 * publishes the queue with app.publish. Publishing outside the sockets' message handlers lets uWS
 * cork every subscriber while it drains its pub/sub queue (one send of many messages), which is
 * what shardchat's outbound pump does too; uws-plain.mjs publishes inside the handler, where uWS
 * flushes a subscriber's queue without corking once it is full (many small sends).
 *
 *   node native-bench/peers/uws-deferred.mjs --port 9102 [--host 127.0.0.1]
 */
import { createRequire } from 'node:module';
import { URLSearchParams } from 'node:url';
import { peerArgs } from './args.mjs';

const require = createRequire(import.meta.url);
const uws = require('@trufflesuite/uws-js-unofficial');

const { port, host } = peerArgs('uws-deferred', 9102);

const app = uws.App();
const queue = [];
const flush = () => {
  for (let i = 0; i < queue.length; i += 2) app.publish(queue[i], queue[i + 1], true);
  queue.length = 0;
};
app.ws('/*', {
  compression: uws.DISABLED,
  maxPayloadLength: 64 * 1024,
  maxBackpressure: 16 << 20,
  idleTimeout: 60,
  upgrade: (res, req, ctx) => {
    const q = new URLSearchParams(req.getQuery() ?? '');
    const room = q.get('room') ?? 'lobby';
    res.upgrade({ room }, req.getHeader('sec-websocket-key'), req.getHeader('sec-websocket-protocol'),
      req.getHeader('sec-websocket-extensions'), ctx);
  },
  open: (ws) => { ws.subscribe(ws.getUserData().room); },
  message: (ws, msg) => {
    // the ArrayBuffer is only valid during this call: copy it
    if (queue.length === 0) setImmediate(flush);
    queue.push(ws.getUserData().room, msg.slice(0));
  },
});
app.get('/healthz', (res) => { res.end('ok'); });

let listenSocket = null;
app.listen(host, port, (ls) => {
  if (!ls) { process.stderr.write(`uws-deferred: cannot listen on ${host}:${port}\n`); process.exit(1); }
  listenSocket = ls;
  process.stdout.write(`listening ${port}\n`);
});

const stop = () => {
  if (listenSocket) { uws.us_listen_socket_close(listenSocket); listenSocket = null; }
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
