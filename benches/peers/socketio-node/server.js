'use strict';
// The benchmark app on socket.io v4, a peer of examples/bench_server.rs with the same
// behaviour: namespace `/`: `message` -> `message-back` with the same arguments to the sender
// and, when the client asked for an ack, an ack with the same arguments; `bcast` -> `tick` with
// the same arguments to every socket in `/`.
//
// Production settings: `ws` with bufferutil (and utf-8-validate, which ws only uses on Node
// versions without buffer.isUtf8), no permessage-deflate, no HTTP compression, no client bundle
// served, transports polling + websocket. Heartbeat and payload limit are socket.io's defaults
// (pingInterval 25000, pingTimeout 20000, maxHttpBufferSize 1e6), spelled out.
//
// Run: `node server.js` (PORT overrides 8092; PORT=0 picks a free port). The first line on
// stdout is `listening on http://127.0.0.1:<port>`. SIGTERM/SIGINT close the server and exit 0.

const http = require('node:http');
const { Server } = require('socket.io');

function port() {
  const raw = process.env.PORT;
  if (raw === undefined || raw === '') return 8092;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0 || n > 65535) {
    console.error(`PORT=${raw} is not a port`);
    process.exit(2);
  }
  return n;
}

const httpServer = http.createServer();
const io = new Server(httpServer, {
  path: '/socket.io/',
  serveClient: false,
  transports: ['polling', 'websocket'],
  perMessageDeflate: false,
  httpCompression: false,
  pingInterval: 25000,
  pingTimeout: 20000,
  maxHttpBufferSize: 1e6,
});

// Splits a trailing ack callback off an event's arguments.
function splitAck(args) {
  if (args.length > 0 && typeof args[args.length - 1] === 'function') {
    return [args.slice(0, -1), args[args.length - 1]];
  }
  return [args, null];
}

const root = io.of('/');
root.on('connection', (socket) => {
  socket.on('message', (...received) => {
    const [args, ack] = splitAck(received);
    socket.emit('message-back', ...args);
    if (ack) ack(...args);
  });
  socket.on('bcast', (...received) => {
    // An ack asked for on `bcast` is not answered (as in the other two apps).
    const [args] = splitAck(received);
    root.emit('tick', ...args);
  });
});

// Backlog 1024, as Halley's listener (Node's default is 511).
httpServer.listen({ port: port(), host: '127.0.0.1', backlog: 1024 }, () => {
  process.stdout.write(`listening on http://127.0.0.1:${httpServer.address().port}\n`);
});

let closing = false;
function shutdown() {
  if (closing) return;
  closing = true;
  // Disconnects every socket, then closes the HTTP server; don't wait on stray keep-alives.
  io.close(() => process.exit(0));
  httpServer.closeAllConnections();
  setTimeout(() => process.exit(0), 10000).unref();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
