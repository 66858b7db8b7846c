#!/usr/bin/env node
/**
 * The baseline peer of the load benchmarks: plain uWebSockets.js pub/sub on one thread, no
 * protocol. On open a socket subscribes to the topic named by `?room=` in its upgrade URL; every
 * message it sends is published, as received (binary), to that topic, the sender included.
 * Same native uWS package as the engine (the root node_modules).
 *
 *   node native-bench/peers/uws-plain.mjs --port 9101 [--host 127.0.0.1]
 *
 * Prints "listening <port>" on stdout once bound; SIGTERM/SIGINT close the listener and exit 0.
 */
import { runUwsPeer } from './uws-pubsub.mjs';

runUwsPeer('uws-plain', 9101, (app) => (ws, msg, isBinary) => {
  app.publish(ws.getUserData().room, msg, isBinary);
});
