// Halley's browser client (client-js/, served at /socket.io/socket.io.js) in headless Chromium,
// each transport forced alone (`transports: [name]`, `upgrade: false`): connect, events both
// ways with acks, binary, streams rolling over at the server's 128 KiB limit, reconnection after
// the server drops the connection, and a clean disconnect. `htmlfile` runs through an
// `ActiveXObject("htmlfile")` stand-in, so the client's own htmlfile code path runs.
//
// Server: the `interop_server` example (pingInterval 300 ms, pingTimeout 200 ms).
// Build it first: cargo build --release --examples. Run: node --test client-transports.test.mjs

import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";

import { examplePath, startServer } from "./helpers.mjs";
import { HTMLFILE_STANDIN, launchBrowser, openClientPage, steps } from "./client-harness.mjs";

const TRANSPORTS = ["websocket", "polling", "jsonp", "xhr-streaming", "sse", "iframe", "htmlfile"];

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

/** A page with socket `s` connected over `name` alone, its welcome received. */
async function connected(name, opts = {}) {
  const init = name === "htmlfile" ? [HTMLFILE_STANDIN] : [];
  const client = await openClientPage(browser.context, server.url, { init });
  await client.page.evaluate(
    ([name, opts]) => T.open("s", "/", Object.assign({ transports: [name], upgrade: false }, opts)),
    [name, opts],
  );
  await client.wait("s:welcome");
  return client;
}

async function closePage(client) {
  assert.deepEqual(client.problems(), []);
  await client.page.close();
}

const BYTES = Array.from({ length: 256 }, (_, i) => i);

for (const name of TRANSPORTS) {
  describe(`${name} alone`, () => {
    test("connects and receives the server's welcome", async () => {
      const client = await connected(name);
      const { page } = client;
      assert.deepEqual(await steps(page), [
        { type: "try", name },
        { type: "open", name },
      ]);
      const [connect] = await page.evaluate(() => T.all("s:connect"));
      assert.equal(connect.transport, name);
      const [welcome] = await page.evaluate(() => T.all("s:welcome"));
      assert.deepEqual(welcome, [{ id: connect.id }]);
      assert.equal(await page.evaluate(() => T.sockets.s.io.engine.transport.name), name);
      if (name === "htmlfile") {
        // The stream frame lives in the stand-in's document, which got the page's callbacks.
        const hosted = await page.evaluate(() => ({
          frames: __htmlfile.frames,
          callbacks: __htmlfile.hosts.some((h) => h.contentWindow.___eio === window.___eio),
          streamInHost: __htmlfile.hosts.some((h) =>
            h.contentWindow.document.querySelector('iframe[src*="transport=htmlfile"]'),
          ),
          streamInPage: !!document.querySelector('iframe[src*="transport=htmlfile"]'),
        }));
        assert.deepEqual(hosted, { frames: 1, callbacks: true, streamInHost: true, streamInPage: false });
      }
      await closePage(client);
    });

    test("emits with acks and answers the server's acks", async () => {
      const client = await connected(name);
      const { page } = client;
      const data = { text: 'quote " backslash \\ </script> \u2028 é 😀\n', list: [1, -2.5, true, null], nested: { a: { b: [] } } };
      assert.deepEqual(await page.evaluate((d) => T.ack("s", ["ack-me", d, "second"]), data), [data, "second"]);
      // The server asks with an ack id; the client's answer comes back as `answer`.
      await page.evaluate(() => {
        T.sockets.s.once("question", (q, reply) => reply("answer to " + q));
        T.sockets.s.emit("ask", "life");
      });
      await client.wait("s:answer");
      assert.deepEqual(await page.evaluate(() => T.all("s:answer")), [["answer to life"]]);
      await closePage(client);
    });

    test("sends and receives binary as ArrayBuffer", async () => {
      const client = await connected(name);
      const { page } = client;
      const reply = await page.evaluate((bytes) => {
        const all = new Uint8Array(bytes);
        // A view at an offset: only its own bytes may travel.
        const view = new Uint8Array(all.buffer, 10, 5);
        return T.ack("s", ["ack-me", all.buffer, { nested: [view] }, "text"]);
      }, BYTES);
      assert.deepEqual(reply, [{ bytes: BYTES }, { nested: [{ bytes: [10, 11, 12, 13, 14] }] }, "text"]);
      await page.evaluate(() => T.sockets.s.emit("echo", new Uint8Array([0, 255]).buffer, "x"));
      await client.wait("s:echo");
      assert.deepEqual(await page.evaluate(() => T.all("s:echo")), [[{ bytes: [0, 255] }, "x"]]);
      await closePage(client);
    });

    test("receives a flood larger than the stream limit, in order", async () => {
      const client = await connected(name);
      const { page } = client;
      // 48 events of 4 Ki characters that must be escaped: past the server's 128 KiB stream
      // limit, so streams end and are reopened meanwhile.
      const count = 48;
      await page.evaluate((count) => T.sockets.s.emit("burst", count, 4096), count);
      await client.wait("s:burst", count, 10_000);
      const events = await page.evaluate(() => T.all("s:burst"));
      assert.deepEqual(events.map((args) => args[0]), Array.from({ length: count }, (_, i) => i));
      // The server's 4096 characters are code points (😀 is one, two UTF-16 units).
      const filler = Array.from("</script>\u2028\"\\😀".repeat(400)).slice(0, 4096).join("");
      assert.ok(events.every((args) => args[1] === filler), "every payload intact");
      assert.equal(await page.evaluate(() => T.sockets.s.io.engine.transport.name), name);
      await closePage(client);
    });

    test("sends a burst of emits, split to fit maxPayload", async () => {
      const client = await connected(name);
      const { page } = client;
      // About 1.2 MB of echo requests at once, more than the server's maxPayload (1 MB): the
      // HTTP transports must spread them over several POSTs.
      const count = 40;
      await page.evaluate((count) => {
        const text = "x".repeat(30000);
        for (let i = 0; i < count; i++) T.sockets.s.emit("echo", i, text);
      }, count);
      await client.wait("s:echo", count, 10_000);
      const order = await page.evaluate(() => T.all("s:echo").map((args) => args[0]));
      assert.deepEqual(order, Array.from({ length: count }, (_, i) => i));
      await closePage(client);
    });

    test("reconnects after the server drops the connection", async () => {
      const client = await connected(name, { reconnectionDelay: 50, reconnectionDelayMax: 100 });
      const { page } = client;
      const first = await page.evaluate(() => T.all("s:connect")[0]);
      await page.evaluate(() => T.sockets.s.emit("drop-me", T.sockets.s.io.engine.id));
      await client.wait("s:connect", 2);
      await client.wait("s:welcome", 2);
      const log = await page.evaluate(() => ({
        disconnect: T.all("s:disconnect"),
        attempts: T.all("s:reconnect_attempt"),
        reconnect: T.all("s:reconnect"),
        second: T.all("s:connect")[1],
        steps: T.all("s:transport"),
      }));
      // A polling client whose next GET finds the session gone sees an error rather than the
      // close packet (the server answers 400 "Session ID unknown").
      assert.equal(log.disconnect.length, 1);
      assert.match(log.disconnect[0], /^transport (close|error)$/);
      assert.deepEqual(log.attempts, [1]);
      assert.deepEqual(log.reconnect, [1]);
      assert.notEqual(log.second.sid, first.sid, "a new Engine.IO session");
      assert.notEqual(log.second.id, first.id, "a new socket id");
      assert.equal(log.second.transport, name);
      assert.deepEqual(log.steps.map((s) => s.type), ["try", "open", "try", "open"]);
      assert.deepEqual(await page.evaluate(() => T.ack("s", ["ack-me", "again"])), ["again"]);
      await closePage(client);
    });

    test("disconnects cleanly", async () => {
      const client = await connected(name);
      const { page } = client;
      const { id, sid } = await page.evaluate(() => T.all("s:connect")[0]);
      await page.evaluate(() => T.sockets.s.disconnect());
      assert.deepEqual(await page.evaluate(() => T.all("s:disconnect")), ["io client disconnect"]);
      assert.equal(await page.evaluate(() => T.sockets.s.connected), false);
      // Ask the server, over a second connection, until it has seen the socket and the session go.
      await page.evaluate(() => T.open("probe", "/", { forceNew: true, transports: ["websocket"] }));
      await client.wait("probe:connect");
      let status;
      for (let i = 0; i < 100; i++) {
        status = await page.evaluate(([id, sid]) => T.ack("probe", ["status", id, sid]), [id, sid]);
        if (!status[0].socket && !status[0].session) break;
        await new Promise((r) => setTimeout(r, 50));
      }
      assert.deepEqual(status, [{ socket: false, session: false }]);
      // And the client stays quiet: no reconnection.
      assert.equal(await page.evaluate(() => T.count("s:reconnect_attempt")), 0);
      if (name === "htmlfile") assert.ok(await page.evaluate(() => __htmlfile.gc >= 1), "CollectGarbage() called");
      await closePage(client);
    });
  });
}
