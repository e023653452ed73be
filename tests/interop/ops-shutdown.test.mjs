// Graceful shutdown of the `halley` binary, end to end: clients over every transport (Halley's
// browser client in headless Chromium, one page per transport, htmlfile through the ActiveXObject
// stand-in; the official socket.io-client 4.8 in Node over websocket and over polling), all on
// the demo namespace `/demo`, with reconnection on and a short delay. Then SIGTERM:
//
// - the process exits with code 0 within --shutdown-grace (5 s) + 1 s;
// - every client sees its session end as a close told by the server ("transport close": a close
//   packet for HTTP transports, a 1001 close frame for WebSockets), not an error or a timeout,
//   and not "io server disconnect" (which would stop socket.io-client from reconnecting);
// - a new halley on the same port: every client reconnects by itself and gets the demo's `ping`
//   ack from the new server.
//
// The port is fixed (found by binding port 0 here, then closed) so both servers share an origin.
// Server: the `halley` binary, built by cargo build --release --bins. Run:
// node --test ops-shutdown.test.mjs

import { test, after } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";

import { io } from "socket.io-client";

import { freePort, startServer, withTimeout } from "./helpers.mjs";
import { HTMLFILE_STANDIN, launchBrowser, openClientPage } from "./client-harness.mjs";

const HALLEY_BIN =
  process.env.HALLEY_BIN ||
  path.resolve(path.dirname(new URL(import.meta.url).pathname), "../../target/release/halley");

const GRACE_S = 5;
const TRANSPORTS = ["websocket", "polling", "jsonp", "xhr-streaming", "sse", "iframe", "htmlfile"];
const NODE_TRANSPORTS = ["websocket", "polling"];
const RECONNECT = { reconnectionDelay: 200, reconnectionDelayMax: 300 };
/** How long after the exit every client must have seen its disconnect, and after the restart
 * every client must be back. */
const SEE_DISCONNECT_MS = 3000;
const RECONNECT_MS = 10_000;

/** Records every WebSocket close the page sees (code, clean), before the client's own script. */
const WS_CLOSES = `(() => {
  const Native = window.WebSocket;
  window.__wsCloses = [];
  window.WebSocket = function (url, protocols) {
    const ws = protocols === undefined ? new Native(url) : new Native(url, protocols);
    ws.addEventListener("close", (e) => window.__wsCloses.push({ code: e.code, wasClean: e.wasClean }));
    return ws;
  };
  window.WebSocket.prototype = Native.prototype;
  for (const k of ["CONNECTING", "OPEN", "CLOSING", "CLOSED"]) window.WebSocket[k] = Native[k];
})();`;


function startHalley(port) {
  return startServer(HALLEY_BIN, {
    HALLEY_LISTEN: `127.0.0.1:${port}`,
    HALLEY_SHUTDOWN_GRACE: String(GRACE_S),
    HALLEY_DEMO: "true",
  });
}

/** Polls `check()` (sync or async) every 20 ms until it is truthy; fails after `ms`. */
async function waitUntil(what, check, ms, describeState = () => "") {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await check()) return;
    if (Date.now() >= deadline) throw new Error(`${what}: not within ${ms} ms\n${await describeState()}`);
    await sleep(20);
  }
}

/** socket.io-client 4.8 in Node on `/demo`, recording connects and disconnects. */
function nodeClient(url, transport) {
  const socket = io(`${url}/demo`, { transports: [transport], upgrade: false, forceNew: true, ...RECONNECT });
  const log = { connects: [], disconnects: [] };
  socket.on("connect", () => log.connects.push({ id: socket.id, transport: socket.io.engine.transport.name }));
  socket.on("disconnect", (reason, details) =>
    log.disconnects.push({
      reason,
      description: details?.description instanceof Error ? details.description.message : details?.description,
      code: details?.context?.code,
    }),
  );
  return { name: `node ${transport}`, transport, socket, log };
}

/**
 * Pages per Chromium. Chromium allows 6 HTTP/1.1 connections per host and profile, and the six
 * HTTP transports each hold one open (a parked poll or a stream): in one browser, their POSTs
 * (acks, pongs, the namespace CONNECT after a reconnection) would queue behind them.
 */
const PAGES_PER_BROWSER = 3;

const clients = { browser: [], node: [] };
const servers = [];
const browsers = [];

after(async () => {
  for (const c of clients.node) c.socket.disconnect();
  for (const b of browsers) await b.close();
  for (const s of servers) await s.stop().catch(() => {});
});

test("SIGTERM closes every session so clients reconnect to the next server by themselves", async (t) => {
  const started = Date.now();
  const mark = (what) => t.diagnostic(`${what} at ${Date.now() - started} ms`);
  const port = await freePort();
  const first = await startHalley(port);
  servers.push(first);

  // --- Everyone connected to the first server, the demo's ping answered.
  for (const [i, name] of TRANSPORTS.entries()) {
    if (i % PAGES_PER_BROWSER === 0) browsers.push(await launchBrowser());
    const init = name === "htmlfile" ? [HTMLFILE_STANDIN] : name === "websocket" ? [WS_CLOSES] : [];
    const client = await openClientPage(browsers.at(-1).context, first.url, { init });
    await client.page.evaluate(
      ([name, opts]) => T.open("s", "/demo", Object.assign({ transports: [name], upgrade: false }, opts)),
      [name, RECONNECT],
    );
    clients.browser.push({ name, ...client });
  }
  for (const transport of NODE_TRANSPORTS) clients.node.push(nodeClient(first.url, transport));
  for (const c of clients.browser) {
    await c.wait("s:connect");
    assert.equal(await c.page.evaluate(() => T.sockets.s.io.engine.transport.name), c.name);
    assert.deepEqual(await c.page.evaluate(() => T.ack("s", ["ping", "before"])), ["before"], c.name);
  }
  for (const c of clients.node) {
    await waitUntil(`${c.name} connected`, () => c.log.connects.length === 1, 5000);
    assert.equal(c.log.connects[0].transport, c.transport);
    assert.equal(await c.socket.timeout(5000).emitWithAck("ping", "before"), "before", c.name);
  }
  const health = await (await fetch(`${first.admin}/healthz`)).json();
  assert.equal(health.sessions, TRANSPORTS.length + NODE_TRANSPORTS.length, "one session per client");

  mark("all connected");
  // --- SIGTERM: exit 0 within the grace period (+1 s).
  // The demo's feed sends `tick` to every client each second, which ends every parked long-poll;
  // the client polls again at once. A poll in that gap cannot read its close packet once the
  // listener is gone (it is refused and the client reports "transport error"), so SIGTERM goes
  // out just after a tick, while every poll is parked again.
  const pollingClient = clients.node.find((c) => c.transport === "polling").socket;
  await withTimeout(new Promise((resolve) => pollingClient.once("tick", resolve)), 3000, "a demo tick");
  await sleep(150);
  const exit = await first.stop((GRACE_S + 1) * 1000);
  t.diagnostic(`exit after SIGTERM: code ${exit.code}, signal ${exit.signal}, ${exit.ms} ms`);
  assert.equal(exit.signal, null, `killed by ${exit.signal}\n${first.logs()}`);
  assert.equal(exit.code, 0, `exit code\n${first.logs()}`);
  assert.ok(exit.ms <= (GRACE_S + 1) * 1000, `exited after ${exit.ms} ms`);

  // --- Every client saw a close told by the server.
  const browserLog = (c) => c.page.evaluate(() => ({ disconnect: T.all("s:disconnect"), connect: T.count("s:connect") }));
  const state = async () => {
    const lines = [];
    for (const c of clients.browser) lines.push(`${c.name}: ${JSON.stringify(await browserLog(c))}`);
    for (const c of clients.node) lines.push(`${c.name}: ${JSON.stringify(c.log)}`);
    return lines.join("\n");
  };
  for (const c of clients.browser) {
    await waitUntil(`${c.name} disconnect`, async () => (await browserLog(c)).disconnect.length >= 1, SEE_DISCONNECT_MS, state);
  }
  for (const c of clients.node) {
    await waitUntil(`${c.name} disconnect`, () => c.log.disconnects.length >= 1, SEE_DISCONNECT_MS, state);
  }
  const reasons = {};
  for (const c of clients.browser) reasons[c.name] = (await browserLog(c)).disconnect;
  for (const c of clients.node) reasons[c.name] = c.log.disconnects;
  t.diagnostic(`disconnects: ${JSON.stringify(reasons)}`);
  for (const c of clients.browser) {
    assert.deepEqual((await browserLog(c)).disconnect, ["transport close"], `${c.name} disconnect reason`);
  }
  const [wsClose] = await clients.browser.find((c) => c.name === "websocket").page.evaluate(() => __wsCloses);
  assert.deepEqual(wsClose, { code: 1001, wasClean: true }, "the browser's WebSocket got a 1001 close frame");
  for (const c of clients.node) {
    assert.equal(c.log.disconnects.length, 1, c.name);
    assert.equal(c.log.disconnects[0].reason, "transport close", `${c.name} disconnect reason`);
  }
  const nodeWs = clients.node.find((c) => c.transport === "websocket").log.disconnects[0];
  assert.equal(nodeWs.code, 1001, "socket.io-client's WebSocket got a 1001 close frame");
  const nodePolling = clients.node.find((c) => c.transport === "polling").log.disconnects[0];
  assert.equal(nodePolling.description, "transport closed by the server", "socket.io-client polling got a close packet");

  // --- A new server on the same port: everyone back by themselves.
  mark("every disconnect seen");
  const second = await startHalley(port);
  mark("second server up");
  servers.push(second);
  assert.equal(second.url, first.url);
  for (const c of clients.browser) {
    await waitUntil(`${c.name} reconnected`, async () => (await browserLog(c)).connect >= 2, RECONNECT_MS, state);
    const [firstConnect, again] = await c.page.evaluate(() => T.all("s:connect"));
    assert.equal(again.transport, c.name);
    assert.notEqual(again.sid, firstConnect.sid, `${c.name}: a new session`);
    assert.deepEqual(await c.page.evaluate(() => T.ack("s", ["ping", "after"])), ["after"], c.name);
    assert.deepEqual(await c.page.evaluate(() => T.all("s:reconnect_failed")), []);
    assert.deepEqual(c.problems(), [], c.name);
  }
  for (const c of clients.node) {
    await waitUntil(`${c.name} reconnected`, () => c.log.connects.length >= 2, RECONNECT_MS, state);
    assert.equal(c.log.connects[1].transport, c.transport);
    assert.notEqual(c.log.connects[1].id, c.log.connects[0].id, `${c.name}: a new socket`);
    assert.equal(await withTimeout(c.socket.timeout(5000).emitWithAck("ping", "after"), 6000, "ping ack"), "after", c.name);
  }
  mark("everyone back");
  const again = await (await fetch(`${second.admin}/healthz`)).json();
  assert.equal(again.sessions, TRANSPORTS.length + NODE_TRANSPORTS.length, "every client on the new server");

  // Clients leave first, so they do not reconnect into the next shutdown.
  for (const c of clients.node) c.socket.disconnect();
  for (const c of clients.browser) await c.page.evaluate(() => T.sockets.s.disconnect());
  const stopped = await second.stop((GRACE_S + 1) * 1000);
  assert.equal(stopped.code, 0, `second server exit code\n${second.logs()}`);
});
