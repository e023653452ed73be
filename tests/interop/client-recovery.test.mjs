// Connection state recovery with Halley's browser client (client-js/, as served) in headless
// Chromium, each transport forced alone: the client keeps the server's `pid` and the offset of
// the last event it handled, sends them with its next CONNECT, and `socket.recovered` tells
// whether it got its session back. `htmlfile` runs through the `ActiveXObject("htmlfile")`
// stand-in; one run uses the client's own JSON codec (no native JSON), as IE6/7 would.
//
// Server: the `interop_server` example with RECOVERY_MS=10000. Its `drop-me-then-emit` closes
// the client's connection and then emits to everyone and to a room the client is in: events the
// client can only get through a recovery.
// Build it first: cargo build --release --examples. Run: node --test client-recovery.test.mjs

import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";

import { examplePath, startServer } from "./helpers.mjs";
import { HTMLFILE_STANDIN, NO_JSON, launchBrowser, openClientPage } from "./client-harness.mjs";

const TRANSPORTS = ["websocket", "polling", "jsonp", "xhr-streaming", "sse", "iframe", "htmlfile"];

let server;
let browser;

before(async () => {
  server = await startServer(examplePath("interop_server"), { RECOVERY_MS: "10000" });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  const exit = await server?.stop();
  assert.equal(exit?.code, 0, "server exit code");
});

/** A page with socket `s` connected over `name` alone, in room `r`, with data stored. */
async function settled(name, init = []) {
  if (name === "htmlfile") init = [...init, HTMLFILE_STANDIN];
  const client = await openClientPage(browser.context, server.url, { init });
  const { page } = client;
  await page.evaluate(
    (name) => T.open("s", "/", { transports: [name], upgrade: false, reconnectionDelay: 50, reconnectionDelayMax: 100 }),
    name,
  );
  await client.wait("s:welcome");
  const [first] = await page.evaluate(() => T.all("s:connect"));
  const [[welcome, offset]] = await page.evaluate(() => T.all("s:welcome"));
  assert.deepEqual(welcome, { id: first.id, recovered: false });
  assert.equal(typeof offset, "string", "the offset arrives as an extra last argument");
  assert.equal(await page.evaluate(() => T.sockets.s.recovered), false);
  assert.deepEqual(await page.evaluate(() => T.ack("s", ["join", "r"])), [true]);
  assert.deepEqual(await page.evaluate(() => T.ack("s", ["set-data", { user: "ann" }])), [true]);
  return { client, first };
}

async function closePage(client) {
  assert.deepEqual(client.problems(), []);
  await client.page.close();
}

/** Drops the connection from the server side, with events sent after; checks the recovery. */
async function dropAndRecover(client, first, name) {
  const { page } = client;
  await page.evaluate(() => T.sockets.s.emit("drop-me-then-emit", T.sockets.s.io.engine.id, "r"));
  await client.wait("s:connect", 2);
  await client.wait("s:welcome", 2);
  const log = await page.evaluate(() => ({
    second: T.all("s:connect")[1],
    recovered: T.sockets.s.recovered,
    dropped: T.all("s:dropped"),
    droppedRoom: T.all("s:dropped-room"),
    welcome: T.all("s:welcome")[1],
    kinds: T.log.map((e) => e.kind),
  }));
  assert.equal(log.recovered, true);
  assert.equal(log.second.id, first.id, "same socket id");
  assert.notEqual(log.second.sid, first.sid, "over a new Engine.IO session");
  assert.equal(log.second.transport, name);
  // The events sent while it was away, each with its offset, handled before 'connect'.
  assert.equal(log.dropped.length, 1);
  assert.equal(log.droppedRoom.length, 1);
  assert.equal(log.dropped[0][0], first.sid);
  assert.equal(log.droppedRoom[0][0], first.sid);
  assert.equal(typeof log.dropped[0][1], "string");
  const reconnected = log.kinds.lastIndexOf("s:connect");
  assert.ok(log.kinds.indexOf("s:dropped") < log.kinds.indexOf("s:dropped-room"), log.kinds.join(", "));
  assert.ok(log.kinds.indexOf("s:dropped-room") < reconnected, log.kinds.join(", "));
  assert.deepEqual(log.welcome[0], { id: first.id, recovered: true });
  // Its data and rooms came back with it.
  assert.deepEqual(await page.evaluate(() => T.ack("s", ["get-data"])), [{ user: "ann" }]);
  await page.evaluate(() => T.sockets.s.emit("to-room-all", "r", "still in r"));
  await client.wait("s:room-message");
  const [[message]] = await page.evaluate(() => T.all("s:room-message"));
  assert.equal(message, "still in r");
}

for (const name of TRANSPORTS) {
  describe(`${name} alone`, () => {
    test("recovers its session and the events it missed after the server drops it", async () => {
      const { client, first } = await settled(name);
      await dropAndRecover(client, first, name);
      // And again: the second recovery starts from the newest offset.
      const { page } = client;
      const second = await page.evaluate(() => T.all("s:connect")[1]);
      await page.evaluate(() => T.sockets.s.emit("drop-me-then-emit", T.sockets.s.io.engine.id, "r"));
      await client.wait("s:connect", 3);
      const third = await page.evaluate(() => ({
        connect: T.all("s:connect")[2],
        recovered: T.sockets.s.recovered,
        dropped: T.all("s:dropped").map((args) => args[0]),
      }));
      assert.equal(third.recovered, true);
      assert.equal(third.connect.id, first.id);
      assert.deepEqual(third.dropped, [first.sid, second.sid], "each missed event once");
      await closePage(client);
    });

    test("after a deliberate disconnect, connect() gets a fresh session", async () => {
      const { client, first } = await settled(name);
      const { page } = client;
      await page.evaluate(() => T.sockets.s.disconnect());
      await page.evaluate(() => T.sockets.s.connect());
      await client.wait("s:welcome", 2);
      const log = await page.evaluate(() => ({
        second: T.all("s:connect")[1],
        recovered: T.sockets.s.recovered,
        welcome: T.all("s:welcome")[1],
      }));
      assert.equal(log.recovered, false);
      assert.notEqual(log.second.id, first.id);
      assert.deepEqual(log.welcome[0], { id: log.second.id, recovered: false });
      assert.deepEqual(await page.evaluate(() => T.ack("s", ["get-data"])), [null]);
      await closePage(client);
    });
  });
}

describe("without native JSON", () => {
  test("the client's own codec carries pid and offset", async () => {
    const { client, first } = await settled("polling", [NO_JSON]);
    assert.equal(await client.page.evaluate(() => typeof window.JSON), "undefined");
    await dropAndRecover(client, first, "polling");
    await closePage(client);
  });
});
