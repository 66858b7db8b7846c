#!/usr/bin/env node
/**
 * Peer of the load benchmarks: shardchat's v1 protocol served by one uWebSockets.js thread, every
 * part of it inline (protocol-server.mjs): the server a user would write instead of shardchat,
 * written to be fast. The generator speaks the shardchat protocol to it.
 *
 *   node native-bench/peers/uws-protocol.mjs --port 9105 [--host 127.0.0.1] [--rate-per-sec N] [--rate-burst N]
 *        [--max-frame-bytes N] [--max-rooms N] [--max-buffer-bytes N] [--history-limit N] [--max-hist-bytes N]
 *
 * Prints "listening <port>" on stdout once bound; SIGTERM/SIGINT close the listener and exit 0.
 */
import { runProtocolPeer } from './protocol-server.mjs';

runProtocolPeer('uws-protocol', 9105);
