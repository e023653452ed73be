// The Socket.IO API of Halley's browser client in headless Chromium, as pages written for
// socket.io-client use it: namespaces multiplexed on one connection, auth and refused
// namespaces, forceNew/multiplex, URLs and the `path` option, emits buffered before connect,
// ack timeouts and emitWithAck, server-side disconnects, and the JSON fallback of browsers
// without JSON (IE6/7).
//
// Server: the `interop_server` example. Build it first: cargo build --release --examples.
// Run: node --test client-api.test.mjs

import { test, before, after } from "node:test";
import assert from "node:assert/strict";

import { examplePath, startServer } from "./helpers.mjs";
import { NO_JSON, launchBrowser, openClientPage } from "./client-harness.mjs";

let server;
let browser;

before(async () => {
  server = await startServer(examplePath("interop_server"));
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  const exit = await server?.stop();
  assert.equal(exit?.code, 0, "server exit code");
});

async function done(client) {
  assert.deepEqual(client.problems(), []);
  await client.page.close();
}

test("namespaces share one connection; a refused one gets connect_error with the server's data", async () => {
  const client = await openClientPage(browser.context, server.url);
  const { page } = client;
  await page.evaluate((origin) => {
    T.open("root", "/");
    T.open("admin", "/admin", { auth: { token: "secret" } });
    // An absolute URL of the same server multiplexes too.
    T.open("dyn", origin + "/dyn-42");
  }, server.url);
  await client.wait("root:welcome");
  await client.wait("admin:admin-welcome");
  await client.wait("dyn:dyn-welcome");
  const shared = await page.evaluate(() => ({
    admin: T.sockets.admin.io === T.sockets.root.io,
    dyn: T.sockets.dyn.io === T.sockets.root.io,
    dynWelcome: T.all("dyn:dyn-welcome"),
  }));
  assert.deepEqual(shared, { admin: true, dyn: true, dynWelcome: [["/dyn-42"]] });

  // A second socket for a namespace in use gets its own connection, refused without the token.
  await page.evaluate(() => T.open("intruder", "/admin", { auth: { token: "wrong" }, reconnection: false }));
  await client.wait("intruder:connect_error");
  assert.deepEqual(await page.evaluate(() => T.all("intruder:connect_error")), [
    { message: "not authorized", data: { code: 401 } },
  ]);
  const after = await page.evaluate(() => ({
    separate: T.sockets.intruder.io !== T.sockets.root.io,
    connected: T.sockets.intruder.connected,
    others: [T.sockets.root.connected, T.sockets.admin.connected],
  }));
  assert.deepEqual(after, { separate: true, connected: false, others: [true, true] });
  await page.evaluate(() => T.sockets.admin.emit("echo", "still there"));
  await client.wait("admin:echo");
  assert.deepEqual(await page.evaluate(() => T.all("admin:echo")), [["still there"]]);
  await done(client);
});

test("auth may be a function; forceNew and multiplex:false open separate connections", async () => {
  const client = await openClientPage(browser.context, server.url);
  const { page } = client;
  await page.evaluate(() => {
    T.open("a", "/");
    T.open("b", "/", { forceNew: true });
    T.open("c", "/", { multiplex: false });
    T.open("admin", "/admin", { auth: (cb) => setTimeout(() => cb({ token: "secret" }), 10) });
  });
  for (const name of ["a", "b", "c"]) await client.wait(`${name}:welcome`);
  await client.wait("admin:admin-welcome");
  const ids = await page.evaluate(() => ["a", "b", "c"].map((n) => T.sockets[n].io.engine.id));
  assert.equal(new Set(ids).size, 3);
  await done(client);
});

test("io.connect() with Socket.IO 0.9 option names", async () => {
  const client = await openClientPage(browser.context, server.url);
  const { page } = client;
  const result = await page.evaluate(
    () =>
      new Promise((resolve) => {
        const first = io.connect("/");
        const second = io.connect("/", { "force new connection": true, reconnect: false, resource: "socket.io" });
        second.on("welcome", () =>
          resolve({ separate: first.io !== second.io, reconnection: second.io.reconnection(), connect: io.connect === io }),
        );
      }),
  );
  assert.deepEqual(result, { separate: true, reconnection: false, connect: true });
  await done(client);
});

test("the path option selects the Engine.IO endpoint", async () => {
  const client = await openClientPage(browser.context, server.url);
  const { page } = client;
  await page.evaluate(() => {
    T.open("ok", "/", { path: "/socket.io", forceNew: true });
    T.open("wrong", "/", { path: "/elsewhere/", forceNew: true, transports: ["polling"], reconnection: false });
  });
  await client.wait("ok:welcome");
  await client.wait("wrong:connect_error");
  assert.deepEqual(await page.evaluate(() => T.all("wrong:connect_error")), [
    { message: "no transport could connect", data: null },
  ]);
  await done(client);
});

test("emits before the connection opens are sent once it does, acks included", async () => {
  const client = await openClientPage(browser.context, server.url);
  const reply = await client.page.evaluate(
    () =>
      new Promise((resolve) => {
        const s = io("/", { forceNew: true, transports: ["polling"] });
        s.emit("ack-me", "early", (v) => resolve([v, s.connected]));
      }),
  );
  assert.deepEqual(reply, ["early", true]);
  await done(client);
});

test("timeout().emit reports a missing ack; emitWithAck resolves", async () => {
  const client = await openClientPage(browser.context, server.url);
  const { page } = client;
  await page.evaluate(() => T.open("s", "/"));
  await client.wait("s:welcome");
  const result = await page.evaluate(async () => {
    const s = T.sockets.s;
    const missing = await new Promise((resolve) => s.timeout(100).emit("echo", "no ack", (err) => resolve(err && err.message)));
    const timely = await new Promise((resolve) => s.timeout(5000).emit("ack-me", "yes", (err, v) => resolve([err, v])));
    const promised = await s.emitWithAck("ack-me", "promise");
    let reserved;
    try {
      s.emit("disconnect");
    } catch (e) {
      reserved = e.message;
    }
    return { missing, timely, promised, reserved };
  });
  assert.deepEqual(result, {
    missing: "operation has timed out",
    timely: [null, "yes"],
    promised: "promise",
    reserved: '"disconnect" is a reserved event name',
  });
  await done(client);
});

test("a server-side disconnect is final until connect() is called", async () => {
  const client = await openClientPage(browser.context, server.url);
  const { page } = client;
  await page.evaluate(() => T.open("s", "/", { forceNew: true, reconnectionDelay: 10 }));
  await client.wait("s:welcome");
  await page.evaluate(() => T.sockets.s.emit("disconnect-me"));
  await client.wait("s:disconnect");
  assert.deepEqual(await page.evaluate(() => T.all("s:disconnect")), ["io server disconnect"]);
  // Nothing reconnects by itself (its reconnectionDelay is 10 ms): a round trip on another
  // connection later, still one connect and no attempt.
  await page.evaluate(() => T.open("other", "/", { forceNew: true }));
  await client.wait("other:welcome");
  await page.evaluate(() => T.ack("other", ["ack-me", 1]));
  assert.equal(await page.evaluate(() => T.count("s:reconnect_attempt") + T.count("s:connect")), 1);
  await page.evaluate(() => T.sockets.s.connect());
  await client.wait("s:welcome", 2);
  assert.equal(await page.evaluate(() => T.sockets.s.connected), true);
  await done(client);
});

for (const name of ["websocket", "polling", "jsonp", "iframe"]) {
  test(`without native JSON (IE6/7), the client's own JSON codec carries everything over ${name}`, async () => {
    const client = await openClientPage(browser.context, server.url, { init: [NO_JSON] });
    const { page } = client;
    assert.equal(await page.evaluate(() => typeof window.JSON), "undefined");
    await page.evaluate((name) => T.open("s", "/", { transports: [name], upgrade: false }), name);
    await client.wait("s:welcome");
    const data = {
      text: 'q " b \\ / </script> \u2028\u2029 \u0001 \t\r\n é 😀',
      numbers: [0, -1, 1.5, -2.5e-7, 1e21],
      flags: [true, false, null],
      nested: { empty: {}, list: [[], [{}]], "key with \"quotes\"": 1 },
    };
    assert.deepEqual(await page.evaluate((d) => T.ack("s", ["ack-me", d, ""]), data), [data, ""]);
    await done(client);
  });
}
