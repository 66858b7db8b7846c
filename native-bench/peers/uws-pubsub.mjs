/**
 * The plain uWebSockets.js pub/sub server both uWS peers run, differing only in what a message
 * does: `makeOnMessage(app)` returns the handler. On open a socket subscribes to the topic named
 * by `?room=`. Same native uWS package as the engine (the root node_modules). Prints
 * "listening <port>" once bound; SIGTERM/SIGINT close the listener and exit 0.
 */
import { createRequire } from 'node:module';
import { URLSearchParams } from 'node:url';
import { peerArgs } from './args.mjs';

const require = createRequire(import.meta.url);
const uws = require('@trufflesuite/uws-js-unofficial');

export function runUwsPeer(name, defaultPort, makeOnMessage) {
  const { port, host } = peerArgs(name, defaultPort);
  const app = uws.App();
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
    message: makeOnMessage(app),
  });
  app.get('/healthz', (res) => { res.end('ok'); });

  let listenSocket = null;
  app.listen(host, port, (ls) => {
    if (!ls) { process.stderr.write(`${name}: cannot listen on ${host}:${port}\n`); process.exit(1); }
    listenSocket = ls;
    process.stdout.write(`listening ${port}\n`);
  });
  const stop = () => {
    if (listenSocket) { uws.us_listen_socket_close(listenSocket); listenSocket = null; }
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}
