#!/usr/bin/env node
/**
 * Peer of the load benchmarks: Socket.IO 4 (native-bench/package.json), websocket transport only,
 * no compression. A client emits 'join'(room[, ack]) (the server joins the socket to the room and
 * calls the ack when the client asked for one), then 'msg'(payload) events; the server does
 * io.to(room).emit('msg', payload) (the sender included) for the room it joined last.
 *
 *   node native-bench/peers/socketio-rooms.mjs --port 9104 [--host 127.0.0.1]
 *
 * Prints "listening <port>" on stdout once bound; SIGTERM/SIGINT exit 0.
 */
import { createServer } from 'node:http';
import { Server } from 'socket.io';
import { peerArgs } from './args.mjs';

const { port, host } = peerArgs('socketio-rooms', 9104);

const http = createServer((req, res) => { res.writeHead(404); res.end(); });
const io = new Server(http, { transports: ['websocket'], serveClient: false, perMessageDeflate: false, httpCompression: false, maxHttpBufferSize: 64 * 1024 });
io.on('connection', (socket) => {
  let room = null;
  socket.on('join', (r, ack) => {
    if (typeof r !== 'string') return;
    room = r;
    socket.join(r);
    if (typeof ack === 'function') ack();
  });
  socket.on('msg', (payload) => {
    if (room !== null) io.to(room).emit('msg', payload);
  });
});
http.on('error', (e) => { process.stderr.write(`socketio-rooms: ${e.message}\n`); process.exit(1); });
http.listen(port, host, () => { process.stdout.write(`listening ${port}\n`); });

const stop = () => { process.exit(0); };
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
