// Interoperability of Halley's Socket.IO v5 server with the official `socket.io-client` (4.x).
//
// Server under test: the `interop_server` example (path /socket.io/, pingInterval 300 ms,
// pingTimeout 200 ms; namespaces `/`, `/admin` behind an auth middleware, and `/dyn-*` created
// on demand; see examples/interop_server.rs for every event it answers). Build it first:
//   cargo build --release --example interop_server
// Run: HALLEY_EXAMPLES=/path/to/target/release/examples node --test socketio.test.mjs
//
// Every scenario runs over three transport setups: polling only, websocket only, and the
// client's default (polling, then upgrade to websocket).
//
// Negative checks ("X did not receive Y") never sleep: they rely on per-connection ordering.
// After the action under test, a broadcast (or an echo) is sent that every client of interest
// receives; once it has arrived at a client, anything the action sent that client would have
// arrived before it.

import { describe as group, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { Manager, io } from "socket.io-client";

import { TIMEOUT, describe, examplePath, startServer, waitFor, withTimeout } from "./helpers.mjs";

const SERVER_BINARY = examplePath("interop_server");
const PING_INTERVAL = 300;

const MODES = [
  { name: "polling", opts: { transports: ["polling"], upgrade: false }, transport: "polling" },
  { name: "websocket", opts: { transports: ["websocket"] }, transport: "websocket" },
  // The client's defaults: open over polling, then probe and upgrade to websocket.
  { name: "polling+upgrade", opts: {}, transport: "websocket" },
];

let server;

before(async () => {
  server = await startServer(SERVER_BINARY);
});

after(async () => {
  if (!server) return;
  const { code, signal } = await server.stop();
  assert.equal(signal, null, `server killed by ${signal}\n${server.logs()}`);
  assert.equal(code, 0, `server exit code\n${server.logs()}`);
});

// Reserved client-side events: not seen by `onAny`, recorded explicitly.
const RESERVED = ["connect", "connect_error", "disconnect"];
const FAIL_ON = ["connect_error", "disconnect"];

/**
 * Records every event `socket` receives, from its creation on, as `{ event, args }` (an ack
 * callback, if any, is the last of `args`). Waiting looks at the record first, so an event that
 * arrived before the wait started is not missed.
 */
function record(socket) {
  const events = [];
  const waiters = new Set();
  const push = (event, args) => {
    events.push({ event, args });
    for (const waiter of [...waiters]) waiter.check();
  };
  socket.onAny((event, ...args) => push(event, args));
  for (const event of RESERVED) socket.on(event, (...args) => push(event, args));

  const of = (event) => events.filter((e) => e.event === event).map((e) => e.args);
  const summary = () => events.map((e) => `${e.event}(${e.args.map(describe).join(", ")})`).join("; ");

  return {
    events,
    /** The argument lists of every `event` received so far. */
    of,
    /**
     * Resolves to the arguments of the `count`-th `event` received since the socket was created;
     * rejects after `ms`, or as soon as one of `failOn` has been received instead.
     */
    wait(event, { count = 1, failOn = FAIL_ON, ms = TIMEOUT } = {}) {
      let waiter;
      const done = new Promise((resolve, reject) => {
        waiter = {
          check() {
            const seen = of(event);
            if (seen.length >= count) return resolve(seen[count - 1]);
            const failure = events.find((e) => failOn.includes(e.event) && e.event !== event);
            if (failure) {
              reject(new Error(`'${failure.event}' while waiting for '${event}' #${count}; received: ${summary()}`));
            }
          },
        };
        waiters.add(waiter);
        waiter.check();
      });
      return withTimeout(done, ms, `'${event}' #${count} (received: ${summary()})`).finally(() =>
        waiters.delete(waiter),
      );
    },
  };
}

/** Disconnects `socket` and closes its engine connection, whatever state they are in. */
function close(socket) {
  socket.disconnect();
  const engine = socket.io.engine;
  if (engine && engine.readyState !== "closed") engine.close();
}

/** Emits `event` with `args` and resolves to every argument of the ack (rejects on timeout). */
function emitAck(socket, event, ...args) {
  return new Promise((resolve, reject) => {
    socket.timeout(TIMEOUT).emit(event, ...args, (error, ...reply) => (error ? reject(error) : resolve(reply)));
  });
}

/**
 * Asserts `value` is a Node Buffer (how socket.io-client hands binary over under Node) holding
 * `bytes`.
 */
function assertBinary(value, bytes, what) {
  assert.ok(Buffer.isBuffer(value), `${what} should be a Buffer, got ${describe(value)}`);
  assert.deepEqual([...value], [...bytes], `${what} bytes`);
}

for (const mode of MODES) {
  group(`socket.io-client over ${mode.name}`, () => {
    /** A client of namespace `nsp` on its own connection, closed after the test. */
    function client(t, nsp = "/", opts = {}) {
      const socket = io(server.url + nsp, { forceNew: true, reconnection: false, ...mode.opts, ...opts });
      socket.inbox = record(socket);
      t.after(() => close(socket));
      return socket;
    }

    /** A client of `/` that has connected and got its `welcome`. */
    async function welcomed(t, opts) {
      const socket = client(t, "/", opts);
      await socket.inbox.wait("connect");
      const [welcome] = await socket.inbox.wait("welcome");
      assert.deepEqual(welcome, { id: socket.id });
      return socket;
    }

    test("connect, welcome, transport, heartbeats", async (t) => {
      const socket = client(t);
      await socket.inbox.wait("connect");
      assert.equal(socket.connected, true);
      assert.equal(typeof socket.id, "string");
      assert.notEqual(socket.id, socket.io.engine.id, "the socket id is not the engine session id");
      const [welcome] = await socket.inbox.wait("welcome");
      assert.deepEqual(welcome, { id: socket.id });

      const engine = socket.io.engine;
      if (engine.transport.name !== mode.transport) {
        await waitFor(engine, "upgrade", { failOn: ["close", "upgradeError"] });
      }
      assert.equal(engine.transport.name, mode.transport);

      // Three server pings, answered, and the socket still works.
      let pings = 0;
      const pinged = new Promise((resolve) =>
        engine.on("ping", () => {
          if (++pings === 3) resolve();
        }),
      );
      await withTimeout(pinged, 3 * PING_INTERVAL + TIMEOUT, "3 pings");
      socket.emit("echo", "after pings");
      assert.deepEqual(await socket.inbox.wait("echo"), ["after pings"]);
      assert.equal(socket.connected, true);
      assert.equal(engine.transport.name, mode.transport);
      assert.deepEqual(socket.inbox.of("disconnect"), []);
    });

    test("echo: text arguments, nested objects keep their key order", async (t) => {
      const socket = await welcomed(t);
      const nested = { z: 1, a: { y: [1, { b: 2, a: 1 }], x: null, "é✓🚀": "ünïcødé" }, m: [true, false, 0.5, -3] };
      const args = ["hello", 42, nested, ["x", { k: "v" }], null, true, ""];
      socket.emit("echo", ...args);
      socket.emit("echo", "second");
      const got = await socket.inbox.wait("echo");
      assert.deepEqual(got, args);
      assert.equal(JSON.stringify(got), JSON.stringify(args), "key order preserved");
      assert.deepEqual(await socket.inbox.wait("echo", { count: 2 }), ["second"]);
      // Large text.
      const big = "x".repeat(200_000);
      socket.emit("echo", { big });
      assert.deepEqual(await socket.inbox.wait("echo", { count: 3 }), [{ big }]);
    });

    test("echo: binary arguments come back as binary", async (t) => {
      const socket = await welcomed(t);
      const first = Buffer.from([0, 1, 2, 255, 128, 10, 13]);
      const nestedBin = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
      const typed = Uint8Array.of(9, 8, 7);
      socket.emit("echo", first, { label: "nested", data: nestedBin, list: [typed, "text"] }, "tail");
      const [a, b, c] = await socket.inbox.wait("echo");
      assertBinary(a, first, "first argument");
      assert.equal(b.label, "nested");
      assertBinary(b.data, nestedBin, "nested attachment");
      assertBinary(b.list[0], typed, "attachment in an array");
      assert.equal(b.list[1], "text");
      assert.equal(c, "tail");
      // Binary again, then text: the attachments were consumed exactly.
      socket.emit("echo", Buffer.alloc(100_000, 0xab));
      socket.emit("echo", "text after binary");
      const [big] = await socket.inbox.wait("echo", { count: 2 });
      assertBinary(big, Buffer.alloc(100_000, 0xab), "100 kB attachment");
      assert.deepEqual(await socket.inbox.wait("echo", { count: 3 }), ["text after binary"]);
    });

    test("ack-me: the server acks with the same arguments, binary included", async (t) => {
      const socket = await welcomed(t);
      const reply = await emitAck(socket, "ack-me", "a", { b: [1, 2], c: { z: 0, a: 1 } }, 3);
      assert.deepEqual(reply, ["a", { b: [1, 2], c: { z: 0, a: 1 } }, 3]);
      assert.equal(JSON.stringify(reply[1]), JSON.stringify({ b: [1, 2], c: { z: 0, a: 1 } }));

      const [bin, obj] = await emitAck(socket, "ack-me", Buffer.from([1, 2, 3]), { inner: Buffer.from([4]) });
      assertBinary(bin, [1, 2, 3], "binary ack argument");
      assertBinary(obj.inner, [4], "nested binary ack argument");

      // emitWithAck resolves to the first argument.
      assert.equal(await socket.timeout(TIMEOUT).emitWithAck("ack-me", "only"), "only");
      // Several acks in flight at once come back to the right callbacks.
      const replies = await Promise.all([1, 2, 3, 4, 5].map((n) => emitAck(socket, "ack-me", n, `#${n}`)));
      assert.deepEqual(replies, [1, 2, 3, 4, 5].map((n) => [n, `#${n}`]));
    });

    test("server-to-client ack: ask, question acked by the client, answer", async (t) => {
      const socket = await welcomed(t);
      const questions = [];
      socket.on("question", (...args) => {
        const ack = args.pop();
        assert.equal(typeof ack, "function", "the server asks for an ack");
        questions.push(args);
        ack("my answer", { to: args[0] }, Buffer.from([42, 43]));
      });
      socket.emit("ask", "what is it?", { n: 1 });
      const [text, obj, bin] = await socket.inbox.wait("answer");
      assert.deepEqual(questions, [["what is it?", { n: 1 }]]);
      assert.equal(text, "my answer");
      assert.deepEqual(obj, { to: "what is it?" });
      assertBinary(bin, [42, 43], "binary in the client's ack");

      // A second round trip: the server's ack ids are not reused wrongly.
      socket.emit("ask", "again");
      const second = await socket.inbox.wait("answer", { count: 2 });
      assert.deepEqual(second, ["my answer", { to: "again" }, second[2]]);
      assertBinary(second[2], [42, 43], "binary in the second ack");
    });

    test("rooms: to-room excludes the sender, to-room-all includes it, broadcast reaches all", async (t) => {
      const [a, b, c] = await Promise.all([welcomed(t), welcomed(t), welcomed(t)]);
      assert.deepEqual(await emitAck(a, "join", "r"), [true]);
      assert.deepEqual(await emitAck(b, "join", "r"), [true]);

      a.emit("to-room", "r", { from: "a", n: 1 });
      a.emit("broadcast", "sentinel-1");
      const [bMessage] = await b.inbox.wait("room-message");
      assert.deepEqual(bMessage, { from: "a", n: 1 });
      for (const s of [a, b, c]) assert.deepEqual(await s.inbox.wait("broadcast"), ["sentinel-1"]);
      assert.deepEqual(a.inbox.of("room-message"), [], "the sender is excluded");
      assert.deepEqual(c.inbox.of("room-message"), [], "a socket outside the room gets nothing");
      assert.equal(b.inbox.of("room-message").length, 1);

      b.emit("to-room-all", "r", "to everyone in r");
      b.emit("broadcast", "sentinel-2");
      for (const s of [a, b, c]) assert.deepEqual(await s.inbox.wait("broadcast", { count: 2 }), ["sentinel-2"]);
      assert.deepEqual(a.inbox.of("room-message"), [["to everyone in r"]]);
      assert.deepEqual(b.inbox.of("room-message"), [[{ from: "a", n: 1 }], ["to everyone in r"]], "sender included");
      assert.deepEqual(c.inbox.of("room-message"), []);

      // After leaving, B is no longer reached.
      assert.deepEqual(await emitAck(b, "leave", "r"), [true]);
      c.emit("to-room", "r", "after leave");
      c.emit("broadcast", "sentinel-3");
      for (const s of [a, b, c]) assert.deepEqual(await s.inbox.wait("broadcast", { count: 3 }), ["sentinel-3"]);
      assert.deepEqual(a.inbox.of("room-message").at(-1), ["after leave"]);
      assert.equal(b.inbox.of("room-message").length, 2, "B left the room");
      assert.deepEqual(c.inbox.of("room-message"), []);

      // Broadcast with binary reaches every socket as binary.
      a.emit("broadcast", { bin: Buffer.from([5, 6]) });
      for (const s of [a, b, c]) {
        const [payload] = await s.inbox.wait("broadcast", { count: 4 });
        assertBinary(payload.bin, [5, 6], "broadcast attachment");
      }
    });

    test("two namespaces multiplexed on one connection", async (t) => {
      const manager = new Manager(server.url, { reconnection: false, ...mode.opts });
      const root = manager.socket("/");
      const admin = manager.socket("/admin", { auth: { token: "secret" } });
      for (const socket of [root, admin]) {
        socket.inbox = record(socket);
        t.after(() => close(socket));
      }
      await Promise.all([root.inbox.wait("connect"), admin.inbox.wait("connect")]);
      assert.equal(root.io, admin.io, "one Manager");
      assert.equal(root.io.engine.id, admin.io.engine.id, "one engine connection");
      assert.notEqual(root.id, admin.id, "one socket id per namespace");
      assert.deepEqual(await root.inbox.wait("welcome"), [{ id: root.id }]);
      assert.deepEqual(await admin.inbox.wait("admin-welcome"), [{ id: admin.id }]);
      assert.deepEqual(root.inbox.of("admin-welcome"), []);
      assert.deepEqual(admin.inbox.of("welcome"), []);

      // Each namespace's echo comes back on that namespace only (same connection: ordered).
      admin.emit("echo", "to admin", Buffer.from([1]));
      root.emit("echo", "to root");
      assert.deepEqual(await root.inbox.wait("echo"), ["to root"]);
      const [text, bin] = await admin.inbox.wait("echo");
      assert.equal(text, "to admin");
      assertBinary(bin, [1], "admin echo attachment");
      assert.equal(root.inbox.of("echo").length, 1);
      assert.equal(admin.inbox.of("echo").length, 1);

      // Leaving one namespace keeps the connection and the other namespace.
      const engineId = admin.io.engine.id;
      root.disconnect();
      const [reason] = await root.inbox.wait("disconnect", { failOn: [] });
      assert.equal(reason, "io client disconnect");
      admin.emit("echo", "still here");
      assert.deepEqual(await admin.inbox.wait("echo", { count: 2 }), ["still here"]);
      assert.equal(admin.connected, true);
      assert.equal(admin.io.engine.id, engineId, "same engine connection");
    });

    test("auth refusal on /admin: connect_error with message and data", async (t) => {
      const wrong = client(t, "/admin", { auth: { token: "wrong" } });
      const [error] = await wrong.inbox.wait("connect_error", { failOn: ["connect", "disconnect"] });
      assert.ok(error instanceof Error);
      assert.equal(error.message, "not authorized");
      assert.deepEqual(error.data, { code: 401 });
      assert.equal(wrong.connected, false);

      const none = client(t, "/admin");
      const [error2] = await none.inbox.wait("connect_error", { failOn: ["connect", "disconnect"] });
      assert.equal(error2.message, "not authorized");
      assert.equal(error2.data.code, 401);

      // The right token still gets in.
      const right = client(t, "/admin", { auth: { token: "secret" } });
      await right.inbox.wait("connect");
      assert.deepEqual(await right.inbox.wait("admin-welcome"), [{ id: right.id }]);
    });

    test("unknown namespace: connect_error 'Invalid namespace'", async (t) => {
      const socket = client(t, "/nope");
      const [error] = await socket.inbox.wait("connect_error", { failOn: ["connect", "disconnect"] });
      assert.equal(error.message, "Invalid namespace");
      assert.equal(socket.connected, false);
    });

    test("dynamic namespace /dyn-42", async (t) => {
      const socket = client(t, "/dyn-42");
      await socket.inbox.wait("connect");
      assert.deepEqual(await socket.inbox.wait("dyn-welcome"), ["/dyn-42"]);
      socket.emit("echo", { in: "dyn" });
      assert.deepEqual(await socket.inbox.wait("echo"), [{ in: "dyn" }]);
      // A second client of the same (now existing) dynamic namespace.
      const other = client(t, "/dyn-42");
      assert.deepEqual(await other.inbox.wait("dyn-welcome"), ["/dyn-42"]);
    });

    test("server disconnect: 'io server disconnect'", async (t) => {
      const socket = await welcomed(t);
      socket.emit("disconnect-me");
      const [reason] = await socket.inbox.wait("disconnect", { failOn: ["connect_error"] });
      assert.equal(reason, "io server disconnect");
      assert.equal(socket.connected, false);
    });

    test("client disconnect: 'io client disconnect'", async (t) => {
      const socket = await welcomed(t);
      socket.disconnect();
      const [reason] = await socket.inbox.wait("disconnect", { failOn: ["connect_error"] });
      assert.equal(reason, "io client disconnect");
      assert.equal(socket.connected, false);
    });
  });
}

test("io(url) and io(url + '/admin') share one cached Manager and one engine connection", async (t) => {
  // The only test that lets io() cache its Manager (every other one uses forceNew or its own
  // Manager), so the cache starts empty for this server's address.
  const root = io(server.url, { reconnection: false });
  const admin = io(`${server.url}/admin`, { auth: { token: "secret" } });
  for (const socket of [root, admin]) {
    socket.inbox = record(socket);
    t.after(() => close(socket));
  }
  await Promise.all([root.inbox.wait("connect"), admin.inbox.wait("connect")]);
  assert.equal(root.io, admin.io);
  assert.equal(root.io.engine.id, admin.io.engine.id);
  assert.deepEqual(await root.inbox.wait("welcome"), [{ id: root.id }]);
  assert.deepEqual(await admin.inbox.wait("admin-welcome"), [{ id: admin.id }]);
});
