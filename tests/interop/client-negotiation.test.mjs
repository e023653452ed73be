// Transport negotiation of Halley's browser client in headless Chromium: the ordered list with
// feature checks, falling back on error or connectTimeout, the `transport` events that report
// each step, the probe-upgrade to WebSocket from every HTTP transport, rememberTransport, the
// heartbeat watchdog and reconnection while the server is unreachable.
//
// Failures are made with Playwright routing: `routeWebSocket` refuses or silences WebSockets,
// `route` aborts or holds HTTP requests; a missing WebSocket is `delete window.WebSocket`.
//
// Server: the `interop_server` example, and the `halley` binary for its /metrics. Build them
// first: cargo build --release --examples --bins. Run: node --test client-negotiation.test.mjs

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";

import { examplePath, startServer } from "./helpers.mjs";
import { HTMLFILE_STANDIN, NO_WEBSOCKET, launchBrowser, openClientPage, steps } from "./client-harness.mjs";

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

// The `halley` binary (it serves /metrics), built by `cargo build --release --bins`.
const HALLEY_BIN =
  process.env.HALLEY_BIN ||
  path.resolve(path.dirname(new URL(import.meta.url).pathname), "../../target/release/halley");

const STREAMS = /[?&]transport=(xhr-streaming|sse|iframe|htmlfile)(&|$)/;
const unsupported = (name) => ({ type: "fail", name, reason: "unsupported" });

async function open(opts, init = []) {
  const client = await openClientPage(browser.context, server.url, { init });
  return client;
}

async function start(client, opts) {
  await client.page.evaluate((o) => T.open("s", "/", o), opts);
}

async function done(client) {
  assert.deepEqual(client.problems(), []);
  await client.page.close();
}

test("opens a WebSocket first when everything works", async () => {
  const client = await open();
  await start(client, {});
  await client.wait("s:welcome");
  assert.deepEqual(await steps(client.page), [
    { type: "try", name: "websocket" },
    { type: "open", name: "websocket" },
  ]);
  await done(client);
});

test("without WebSocket, lands on xhr-streaming and does not probe an upgrade", async () => {
  const client = await open({}, [NO_WEBSOCKET]);
  await start(client, {});
  await client.wait("s:welcome");
  assert.deepEqual(await client.page.evaluate(() => T.ack("s", ["ack-me", 1])), [1]);
  assert.deepEqual(await steps(client.page), [
    unsupported("websocket"),
    unsupported("htmlfile"),
    { type: "try", name: "xhr-streaming" },
    { type: "open", name: "xhr-streaming" },
  ]);
  await done(client);
});

test("where ActiveX htmlfile works (IE8), htmlfile comes right after WebSocket", async () => {
  const client = await open({}, [NO_WEBSOCKET, HTMLFILE_STANDIN]);
  await start(client, {});
  await client.wait("s:welcome");
  assert.deepEqual(await steps(client.page), [
    unsupported("websocket"),
    { type: "try", name: "htmlfile" },
    { type: "open", name: "htmlfile" },
  ]);
  await done(client);
});

test("a refused WebSocket falls back to the next transport, and its upgrade probe fails quietly", async () => {
  const client = await open();
  await client.page.routeWebSocket(/transport=websocket/, (ws) => ws.close());
  await start(client, {});
  await client.wait("s:welcome");
  await client.wait("s:transport", 6);
  const log = await steps(client.page);
  assert.deepEqual(log.map((s) => [s.type, s.name]), [
    ["try", "websocket"],
    ["fail", "websocket"],
    ["fail", "htmlfile"],
    ["try", "xhr-streaming"],
    ["open", "xhr-streaming"],
    ["fail", "websocket"],
  ]);
  assert.match(log[5].reason, /^upgrade: /);
  assert.deepEqual(await client.page.evaluate(() => T.ack("s", ["ack-me", "still here"])), ["still here"]);
  assert.equal(await client.page.evaluate(() => T.sockets.s.io.engine.transport.name), "xhr-streaming");
  await done(client);
});

test("a silent WebSocket times out after connectTimeout and the next transport opens", async () => {
  const client = await open();
  // A WebSocket that connects (to Playwright) and then says nothing, like a broken proxy.
  await client.page.routeWebSocket(/transport=websocket/, () => {});
  await start(client, { connectTimeout: 1000 });
  await client.wait("s:welcome", 1, 10_000);
  await client.wait("s:transport", 6, 10_000);
  assert.deepEqual(await steps(client.page), [
    { type: "try", name: "websocket" },
    { type: "fail", name: "websocket", reason: "timeout" },
    unsupported("htmlfile"),
    { type: "try", name: "xhr-streaming" },
    { type: "open", name: "xhr-streaming" },
    { type: "fail", name: "websocket", reason: "upgrade: timeout" },
  ]);
  await done(client);
});

test("with every stream refused, lands on polling", async () => {
  const client = await open({}, [NO_WEBSOCKET]);
  await client.page.route(STREAMS, (route) => route.abort());
  await start(client, {});
  await client.wait("s:welcome");
  await client.page.unrouteAll();
  const log = await steps(client.page);
  assert.deepEqual(log.map((s) => [s.type, s.name]), [
    ["fail", "websocket"],
    ["fail", "htmlfile"],
    ["try", "xhr-streaming"],
    ["fail", "xhr-streaming"],
    ["try", "sse"],
    ["fail", "sse"],
    ["try", "iframe"],
    ["fail", "iframe"],
    ["try", "polling"],
    ["open", "polling"],
  ]);
  for (const step of log.filter((s) => s.type === "fail").slice(2)) assert.match(step.reason, /stream error/);
  assert.deepEqual(await client.page.evaluate(() => T.ack("s", ["ack-me", 2])), [2]);
  await done(client);
});

test("with every stream held without an answer, skips the other streams after one timeout and lands on polling", async () => {
  const client = await open({}, [NO_WEBSOCKET]);
  await client.page.route(STREAMS, () => {}); // never answered
  const tried = [];
  client.page.on("request", (r) => {
    const url = new URL(r.url());
    if (url.pathname === "/socket.io/" && !url.searchParams.has("sid")) tried.push(url.searchParams.get("tried"));
  });
  await start(client, { connectTimeout: 800 });
  await client.wait("s:welcome", 1, 10_000);
  await client.page.unrouteAll({ behavior: "ignoreErrors" });
  // Each fallback told once: a handshake held until the timeout counts as one that arrived.
  assert.deepEqual(tried, [
    "websocket:unsupported,htmlfile:unsupported",
    "xhr-streaming:timeout,sse:skipped,iframe:skipped",
  ]);
  assert.deepEqual(await steps(client.page), [
    unsupported("websocket"),
    unsupported("htmlfile"),
    { type: "try", name: "xhr-streaming" },
    { type: "fail", name: "xhr-streaming", reason: "timeout" },
    // A proxy that holds one stream holds them all: not worth a timeout each.
    { type: "fail", name: "sse", reason: "skipped" },
    { type: "fail", name: "iframe", reason: "skipped" },
    { type: "try", name: "polling" },
    { type: "open", name: "polling" },
  ]);
  await done(client);
});

test("a refusal (403) ends the walk at the first transport that can read a status", async () => {
  const client = await open({}, [NO_WEBSOCKET]);
  // Every Engine.IO request refused, as a server does for an origin it does not allow.
  await client.page.route(/\/socket\.io\/\?/, (route) =>
    route.fulfill({ status: 403, contentType: "application/json", body: '{"code":4,"message":"Origin not allowed"}' }),
  );
  await start(client, { reconnection: false });
  await client.wait("s:connect_error");
  await client.page.unrouteAll({ behavior: "ignoreErrors" });
  // XHR streaming reads the status: sse, iframe, polling and jsonp would be refused as well.
  assert.deepEqual(await steps(client.page), [
    unsupported("websocket"),
    unsupported("htmlfile"),
    { type: "try", name: "xhr-streaming" },
    { type: "fail", name: "xhr-streaming", reason: "xhr status 403" },
  ]);
  assert.deepEqual(await client.page.evaluate(() => T.all("s:connect_error")), [{ message: "xhr status 403", data: null }]);
  await done(client);
});

test("a transport that opened, then died before its first ping, is tried last on reconnection", async () => {
  const client = await open();
  // The WebSocket opens, then hears nothing more from the server (a proxy that passes the
  // handshake and then holds every frame): the client closes it by ping timeout.
  await client.page.routeWebSocket(/transport=websocket/, (ws) => {
    const upstream = ws.connectToServer();
    let opened = false;
    upstream.onMessage((message) => {
      // Up to the handshake (Halley's resume position `6s0` comes first).
      if (!opened) ws.send(message);
      if (String(message).startsWith("0")) opened = true;
    });
    // The server's close (its heartbeat gives up too) is held as well: the page's end stays open.
    upstream.onClose(() => {});
  });
  await start(client, { reconnectionDelay: 50, reconnectionDelayMax: 100, upgrade: false });
  await client.wait("s:connect");
  await client.page.unrouteAll({ behavior: "ignoreErrors" });
  assert.deepEqual(await client.page.evaluate(() => T.all("s:close")), ["ping timeout"]);
  // The second connection does not start with WebSocket again.
  assert.deepEqual(await steps(client.page), [
    { type: "try", name: "websocket" },
    { type: "open", name: "websocket" },
    unsupported("htmlfile"),
    { type: "try", name: "xhr-streaming" },
    { type: "open", name: "xhr-streaming" },
  ]);
  assert.equal(await client.page.evaluate(() => T.sockets.s.io.engine.transport.name), "xhr-streaming");
  await done(client);
});

test("with tryAllTransports off, the first failure is a connect_error", async () => {
  const client = await open();
  await client.page.routeWebSocket(/transport=websocket/, (ws) => ws.close());
  await start(client, { tryAllTransports: false, reconnection: false });
  await client.wait("s:connect_error");
  const log = await steps(client.page);
  assert.deepEqual(log.map((s) => [s.type, s.name]), [
    ["try", "websocket"],
    ["fail", "websocket"],
  ]);
  assert.equal(await client.page.evaluate(() => T.count("s:connect")), 0);
  await done(client);
});

for (const name of ["polling", "jsonp", "xhr-streaming", "sse", "iframe", "htmlfile"]) {
  test(`upgrades from ${name} to websocket without losing or reordering messages`, async () => {
    const client = await open({}, name === "htmlfile" ? [HTMLFILE_STANDIN] : []);
    const { page } = client;
    // Default options otherwise (upgrade on). Echoes are emitted while the probe runs and
    // after the switch; all must come back, in order.
    await page.evaluate((name) => {
      const s = T.open("s", "/", { transports: [name, "websocket"] });
      let n = 0;
      s.io.engine.once("upgrading", () => {
        for (let i = 0; i < 20; i++) s.emit("echo", n++);
      });
      s.io.engine.once("upgrade", () => {
        for (let i = 0; i < 20; i++) s.emit("echo", n++);
      });
    }, name);
    await client.wait("s:echo", 40);
    assert.deepEqual(await steps(page), [
      { type: "try", name },
      { type: "open", name },
      { type: "upgrade", from: name, to: "websocket" },
    ]);
    const echoes = await page.evaluate(() => T.all("s:echo").map((a) => a[0]));
    assert.deepEqual(echoes, Array.from({ length: 40 }, (_, i) => i));
    assert.equal(await page.evaluate(() => T.sockets.s.io.engine.transport.name), "websocket");
    const reply = await page.evaluate(() => T.ack("s", ["ack-me", new Uint8Array([1, 2, 3]).buffer]));
    assert.deepEqual(reply, [{ bytes: [1, 2, 3] }]);
    await done(client);
  });
}

test("rememberTransport tries the transport that worked first, next time", async () => {
  const first = await open({}, [NO_WEBSOCKET]);
  await start(first, { rememberTransport: true });
  await first.wait("s:welcome");
  assert.equal(await first.page.evaluate(() => T.sockets.s.io.engine.transport.name), "xhr-streaming");
  await done(first);

  const second = await open();
  await start(second, { rememberTransport: true, upgrade: false });
  await second.wait("s:welcome");
  assert.deepEqual(await steps(second.page), [
    { type: "try", name: "xhr-streaming" },
    { type: "open", name: "xhr-streaming" },
  ]);
  await done(second);

  // Without the option the stored choice is ignored.
  const third = await open();
  await start(third, {});
  await third.wait("s:welcome");
  assert.deepEqual((await steps(third.page))[0], { type: "try", name: "websocket" });
  await third.page.evaluate(() => localStorage.clear());
  await done(third);
});

test("rememberTransport falls back to a cookie where localStorage is unusable", async () => {
  const NO_STORAGE = "Object.defineProperty(window, 'localStorage', { get() { throw new Error('denied'); } });";
  const first = await open({}, [NO_STORAGE]);
  await start(first, { rememberTransport: true, transports: ["websocket", "polling"], upgrade: false });
  await first.wait("s:welcome");
  assert.equal(await first.page.evaluate(() => T.sockets.s.io.engine.transport.name), "websocket");
  await done(first);

  const second = await open({}, [NO_STORAGE]);
  await start(second, { rememberTransport: true, transports: ["polling", "websocket"], upgrade: false });
  await second.wait("s:welcome");
  assert.deepEqual((await steps(second.page))[0], { type: "try", name: "websocket" });
  // One entry per server, `name|saved at` (forgotten after a day).
  const { hostname, port } = new URL(server.url);
  const key = `halley-transport.${hostname}.${port}`;
  const cookie = await second.page.evaluate(() => document.cookie);
  const saved = new RegExp(`(^|; )${key.replace(/\./g, "\\.")}=([^;]*)`).exec(cookie);
  assert.ok(saved, cookie);
  assert.match(decodeURIComponent(saved[2]), /^websocket\|\d+$/);
  await second.page.evaluate((key) => (document.cookie = `${key}=; path=/; expires=Thu, 01 Jan 1970 00:00:00 GMT`), key);
  await done(second);
});

test("a stalled link is closed by the heartbeat watchdog, then the client reconnects", async () => {
  const client = await open();
  const { page } = client;
  await start(client, { transports: ["polling"], reconnectionDelay: 50, reconnectionDelayMax: 100 });
  await client.wait("s:welcome");
  // From now on polls of this session get no answer: nothing arrives any more.
  await page.route(/[?&]sid=/, (route) => (route.request().method() === "GET" ? undefined : route.fallback()));
  await client.wait("s:disconnect");
  await page.unrouteAll({ behavior: "ignoreErrors" });
  assert.deepEqual(await page.evaluate(() => T.all("s:disconnect")), ["ping timeout"]);
  await client.wait("s:connect", 2);
  assert.deepEqual(await page.evaluate(() => T.ack("s", ["ack-me", "back"])), ["back"]);
  await done(client);
});

test("reports reconnection attempts while the server is unreachable, then reconnects", async () => {
  const client = await open();
  const { page } = client;
  await start(client, { transports: ["polling"], reconnectionDelay: 50, reconnectionDelayMax: 100 });
  await client.wait("s:welcome");
  await page.route(/\/socket\.io\/\?/, (route) => (route.request().method() === "GET" ? route.abort() : route.fallback()));
  await page.evaluate(() => T.sockets.s.emit("drop-me", T.sockets.s.io.engine.id));
  await client.wait("s:reconnect_error", 2);
  await page.unrouteAll();
  await client.wait("s:reconnect");
  await client.wait("s:connect", 2);
  const log = await page.evaluate(() =>
    T.log.filter((e) => /^s:(reconnect|connect|disconnect)/.test(e.kind)).map((e) => e.kind.slice(2)),
  );
  const errors = log.filter((k) => k === "reconnect_error").length;
  assert.ok(errors >= 2);
  assert.deepEqual(log, [
    "connect",
    "disconnect",
    // Each failed attempt: the socket's connect_error, then the Manager's reconnect_error.
    ...Array.from({ length: errors }, () => ["reconnect_attempt", "connect_error", "reconnect_error"]).flat(),
    "reconnect_attempt",
    "reconnect",
    "connect",
  ]);
  const attempts = await page.evaluate(() => T.all("s:reconnect_attempt"));
  assert.deepEqual(attempts, Array.from({ length: errors + 1 }, (_, i) => i + 1));
  assert.deepEqual(await page.evaluate(() => T.all("s:reconnect")), [errors + 1]);
  await done(client);
});

test("gives up after reconnectionAttempts", async () => {
  const client = await open();
  const { page } = client;
  await start(client, { transports: ["polling"], reconnectionDelay: 50, reconnectionDelayMax: 100, reconnectionAttempts: 2 });
  await client.wait("s:welcome");
  await page.route(/\/socket\.io\/\?/, (route) => (route.request().method() === "GET" ? route.abort() : route.fallback()));
  await page.evaluate(() => T.sockets.s.emit("drop-me", T.sockets.s.io.engine.id));
  await client.wait("s:reconnect_failed");
  await page.unrouteAll();
  assert.deepEqual(await page.evaluate(() => T.all("s:reconnect_attempt")), [1, 2]);
  assert.equal(await page.evaluate(() => T.count("s:reconnect_error")), 2);
  assert.equal(await page.evaluate(() => T.sockets.s.connected), false);
  await done(client);
});

test("tells the server which transports it gave up, in the handshake (halley_client_fallbacks)", async () => {
  const halley = await startServer(HALLEY_BIN, { HALLEY_LISTEN: "127.0.0.1:0" });
  try {
    const client = await openClientPage(browser.context, halley.url, { init: [NO_WEBSOCKET] });
    await client.page.route(/[?&]transport=xhr-streaming(&|$)/, (route) => route.abort());
    const handshakes = [];
    client.page.on("request", (r) => {
      const url = new URL(r.url());
      if (url.pathname === "/socket.io/" && !url.searchParams.has("sid")) handshakes.push(url.search);
    });
    await start(client, { upgrade: false });
    await client.wait("s:connect");
    await client.page.unrouteAll();
    // Each handshake carries what failed before it, unencoded (the server reads it verbatim).
    assert.match(handshakes[0], /transport=xhr-streaming.*&tried=websocket:unsupported,htmlfile:unsupported$/);
    assert.match(handshakes[1], /transport=sse.*&tried=websocket:unsupported,htmlfile:unsupported,xhr-streaming:error$/);
    const metrics = await (await fetch(`${halley.admin}/metrics`)).text();
    const count = (t, r) =>
      Number(new RegExp(`^halley_client_fallbacks_total\\{transport="${t}",reason="${r}"\\} (\\d+)$`, "m").exec(metrics)?.[1]);
    assert.deepEqual(
      [count("websocket", "unsupported"), count("htmlfile", "unsupported"), count("xhr-streaming", "error")],
      [1, 1, 1],
    );
    await done(client);
  } finally {
    await halley.stop();
  }
});
