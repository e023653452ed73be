// Connection state recovery with the official `socket.io-client` (4.8, whose Socket keeps the
// server's `pid` and each event's offset and sends them back with its next CONNECT, and sets
// `socket.recovered`).
//
// Server under test: the `interop_server` example with RECOVERY_MS=10000 (recovery on,
// middlewares skipped for recovered sockets; see examples/interop_server.rs). Build it first:
//   cargo build --release --example interop_server
// Run: HALLEY_EXAMPLES=/path/to/target/release/examples node --test socketio-recovery.test.mjs
//
// Each scenario runs over polling only, websocket only, and the client's default (polling,
// then upgrade). The events a client misses are sent when it cannot receive them (its
// connection is closed on both ends, or it closed its own), so only a recovery can deliver them.

import { describe as group, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { io } from "socket.io-client";

import { TIMEOUT, describe, examplePath, startServer, withTimeout } from "./helpers.mjs";

const MODES = [
  { name: "polling", opts: { transports: ["polling"], upgrade: false } },
  { name: "websocket", opts: { transports: ["websocket"] } },
  { name: "polling+upgrade", opts: {} },
];

let server;

before(async () => {
  server = await startServer(examplePath("interop_server"), { RECOVERY_MS: "10000" });
});

after(async () => {
  if (!server) return;
  const { code, signal } = await server.stop();
  assert.equal(signal, null, `server killed by ${signal}\n${server.logs()}`);
  assert.equal(code, 0, `server exit code\n${server.logs()}`);
});

/**
 * Records every event of `socket` (reserved ones too) in arrival order as `{ event, args }`;
 * `wait(event, count)` resolves to the arguments of the `count`-th one.
 */
function record(socket) {
  const events = [];
  const waiters = new Set();
  const push = (event, args) => {
    events.push({ event, args });
    for (const w of [...waiters]) w();
  };
  socket.onAny((event, ...args) => push(event, args));
  for (const event of ["connect", "connect_error", "disconnect"]) socket.on(event, (...args) => push(event, args));
  const of = (event) => events.filter((e) => e.event === event).map((e) => e.args);
  const summary = () => events.map((e) => `${e.event}(${e.args.map(describe).join(", ")})`).join("; ");
  return {
    events,
    of,
    names: () => events.map((e) => e.event),
    wait(event, count = 1) {
      let waiter;
      const done = new Promise((resolve, reject) => {
        waiter = () => {
          const seen = of(event);
          if (seen.length >= count) resolve(seen[count - 1]);
          else if (event !== "connect_error" && of("connect_error").length) reject(new Error(`connect_error: ${summary()}`));
        };
        waiters.add(waiter);
        waiter();
      });
      return withTimeout(done, TIMEOUT, `'${event}' #${count} (received: ${summary()})`).finally(() => waiters.delete(waiter));
    },
  };
}

function emitAck(socket, event, ...args) {
  return socket.timeout(TIMEOUT).emitWithAck(event, ...args);
}

for (const mode of MODES) {
  group(`socket.io-client over ${mode.name}`, () => {
    function client(t, opts = {}) {
      const socket = io(server.url, { forceNew: true, ...mode.opts, ...opts });
      socket.inbox = record(socket);
      t.after(() => {
        socket.disconnect();
        socket.io.engine?.close();
      });
      return socket;
    }

    /** A client that has connected, got its welcome, joined room `r` and stored some data. */
    async function settled(t, opts) {
      const socket = client(t, opts);
      const [welcome, offset] = await socket.inbox.wait("welcome");
      assert.deepEqual(welcome, { id: socket.id, recovered: false });
      assert.equal(typeof offset, "string", "the offset arrives as an extra last argument");
      assert.equal(socket.recovered, false);
      assert.equal(await emitAck(socket, "join", "r"), true);
      assert.equal(await emitAck(socket, "set-data", { user: "ann" }), true);
      return socket;
    }

    test("the server drops the connection: the client reconnects by itself and recovers", async (t) => {
      const socket = await settled(t, { reconnectionDelay: 50, reconnectionDelayMax: 100 });
      const id = socket.id;
      const sid = socket.io.engine.id;
      socket.emit("drop-me-then-emit", sid, "r");
      await socket.inbox.wait("connect", 2);
      assert.equal(socket.recovered, true);
      assert.equal(socket.id, id, "same socket id");
      assert.equal(socket.inbox.of("disconnect").length, 1);

      // Sent while the client was away, to everyone and to its room: replayed, before 'connect'.
      const [dropped, o1] = await socket.inbox.wait("dropped");
      const [droppedRoom, o2] = await socket.inbox.wait("dropped-room");
      assert.deepEqual([dropped, droppedRoom], [sid, sid]);
      assert.equal(typeof o1, "string");
      assert.notEqual(o1, o2);
      const names = socket.inbox.names();
      const reconnected = names.lastIndexOf("connect");
      assert.ok(names.indexOf("dropped") < reconnected && names.indexOf("dropped-room") < reconnected, names.join(", "));

      const [welcome] = await socket.inbox.wait("welcome", 2);
      assert.deepEqual(welcome, { id, recovered: true });
      // Data and rooms came back with the session.
      assert.deepEqual(await emitAck(socket, "get-data"), { user: "ann" });
      socket.emit("to-room-all", "r", "still in r");
      assert.deepEqual((await socket.inbox.wait("room-message"))[0], "still in r");
    });

    test("the client closes its transport: a broadcast while away arrives on reconnect", async (t) => {
      const socket = await settled(t, { reconnection: false });
      const other = client(t);
      await other.inbox.wait("welcome");
      const id = socket.id;

      socket.io.engine.close();
      await socket.inbox.wait("disconnect");
      other.emit("to-room-all", "r", "while away");
      other.emit("broadcast", "to all while away");
      // `other` got the broadcast, so the server has sent both.
      await other.inbox.wait("broadcast");
      assert.equal(socket.inbox.of("room-message").length, 0);

      socket.connect();
      await socket.inbox.wait("connect", 2);
      assert.equal(socket.recovered, true);
      assert.equal(socket.id, id);
      assert.equal((await socket.inbox.wait("room-message"))[0], "while away");
      assert.equal((await socket.inbox.wait("broadcast"))[0], "to all while away");
      const names = socket.inbox.names();
      assert.ok(names.indexOf("room-message") < names.indexOf("broadcast"), `in order: ${names.join(", ")}`);
    });

    test("after a deliberate disconnect the next connect is a fresh session", async (t) => {
      const socket = await settled(t, { reconnection: false });
      const id = socket.id;
      socket.disconnect();
      await socket.inbox.wait("disconnect");
      socket.connect();
      await socket.inbox.wait("connect", 2);
      assert.equal(socket.recovered, false);
      assert.notEqual(socket.id, id);
      const [welcome] = await socket.inbox.wait("welcome", 2);
      assert.deepEqual(welcome, { id: socket.id, recovered: false });
      assert.equal(await emitAck(socket, "get-data"), null);
    });
  });
}
