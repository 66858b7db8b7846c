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
import { runUwsPeer } from './uws-pubsub.mjs';

runUwsPeer('uws-deferred', 9102, (app) => {
  const queue = [];
  const flush = () => {
    for (let i = 0; i < queue.length; i += 2) app.publish(queue[i], queue[i + 1], true);
    queue.length = 0;
  };
  return (ws, msg) => {
    // the ArrayBuffer is only valid during this call: copy it
    if (queue.length === 0) setImmediate(flush);
    queue.push(ws.getUserData().room, msg.slice(0));
  };
});
