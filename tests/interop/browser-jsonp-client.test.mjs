// The official socket.io-client 4.2.0 browser bundle (engine.io-client 5.2.0, the last line with
// a JSONP transport) in headless Chromium, forced onto JSONP polling: GETs are <script> loads of
// `___eio[N]("...")`, POSTs are hidden-form submissions (field `d`).
//
// Server under test: the `socketio_suite` example. Build it first:
//   cargo build --release --example socketio_suite
// Run: node --test browser-jsonp-client.test.mjs   (CHROMIUM=/path/to/chromium to override)
//
// socket.io-client 4.2.0 is installed under the npm alias `sio42` so it does not clash with the
// current socket.io-client the Node tests use.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";

import { examplePath, startServer, withTimeout } from "./helpers.mjs";
import { launchBrowser, openPage, until } from "./browser.mjs";

const require = createRequire(import.meta.url);
const SERVER_BINARY = examplePath("socketio_suite");

const HOSTILE =
  '</script><script>alert(1)</script><!-- \u2028\u2029 \u001e "quotes" \\backslashes\\ 😀 \n newline';
// engine.io's form newline escaping: a literal backslash-n, a real newline, both together.
const NEWLINES = "literal \\n, \\\\n, real \n, backslash+newline \\\n, crlf \r\n end \\";

let server;
let browser;
let pages;

before(async () => {
  const bundle = await readFile(require.resolve("sio42/dist/socket.io.js"), "utf8");
  assert.match(bundle, /Socket\.IO v4\.2\.0/, "the 4.2.0 browser bundle");
  // pingInterval stays 300 ms; a pong rides on the next form POST, which waits for the one in
  // flight (an iframe load, often over 200 ms on a loaded machine): 2 s to answer.
  server = await startServer(SERVER_BINARY, { PING_TIMEOUT_MS: "2000" });
  browser = await launchBrowser();
  pages = {
    "/test/jsonp-client.html": {
      body:
        '<!DOCTYPE html><html><head><meta charset="utf-8"><title>socket.io-client 4.2.0 JSONP</title>' +
        '<script src="/test/sio42.js"></script></head><body></body></html>',
      contentType: "text/html; charset=utf-8",
    },
    "/test/sio42.js": { body: bundle, contentType: "application/javascript; charset=utf-8" },
  };
});

after(async () => {
  await browser?.close();
  if (!server) return;
  const { code, signal } = await server.stop();
  assert.equal(signal, null, `server killed by ${signal}\n${server.logs()}`);
  assert.equal(code, 0, `server exit code\n${server.logs()}`);
});

test("socket.io-client 4.2.0 over forced JSONP in Chromium", { timeout: 60_000 }, async (t) => {
  const opened = await openPage(browser.context, `${server.url}/test/jsonp-client.html`, pages);
  const { page } = opened;
  const requests = [];
  page.on("request", (req) => {
    const url = new URL(req.url());
    if (!url.pathname.startsWith("/socket.io/")) return;
    requests.push({
      method: req.method(),
      url: req.url(),
      j: url.searchParams.get("j"),
      type: req.resourceType(),
      contentType: req.headers()["content-type"] ?? null,
      body: req.postData(),
    });
  });
  const describeState = async () =>
    `R = ${JSON.stringify(await page.evaluate(() => window.R))}\nproblems: ${JSON.stringify(opened.problems())}\n` +
    `requests: ${JSON.stringify(requests.map((r) => `${r.method} ${r.type} ${r.url}`), null, 1)}\nconsole:\n${opened.console()}`;
  const wait = (predicate, arg, what, ms) => until(page, predicate, arg, what, { ms, describeState });
  const evaluate = (fn, arg, what) => withTimeout(page.evaluate(fn, arg), 5000, what);

  try {
    assert.equal(await page.evaluate(() => typeof window.io), "function", "the bundle defines io()");
    await page.evaluate(() => {
      const R = (window.R = { connected: 0, auth: [], backs: [], pings: 0, errors: [], transport: null });
      const socket = (window.socket = window.io(location.origin, {
        forceJSONP: true,
        transports: ["polling"],
        upgrade: false,
      }));
      socket.on("connect", () => {
        R.connected++;
        const transport = socket.io.engine.transport;
        R.transport = { name: transport.name, jsonpIndex: transport.index, supportsBinary: transport.supportsBinary };
      });
      socket.on("auth", (auth) => R.auth.push(auth));
      socket.on("message-back", (...args) => R.backs.push(args));
      socket.on("connect_error", (error) => R.errors.push(`connect_error: ${error.message}`));
      socket.on("disconnect", (reason) => R.errors.push(`disconnect: ${reason}`));
      socket.io.on("ping", () => R.pings++);
    });

    // Connected over JSONP, with the `auth` event.
    await wait(() => window.R.auth.length > 0, null, "the auth event");
    let R = await page.evaluate(() => window.R);
    assert.equal(R.connected, 1);
    assert.deepEqual(R.auth, [{}]);
    assert.equal(R.transport.name, "polling");
    assert.equal(typeof R.transport.jsonpIndex, "number", "engine.io-client's JSONP transport (it has a callback index)");
    assert.equal(R.transport.supportsBinary, false);

    // An ack with the arguments sent.
    const ackArgs = await evaluate(
      () => new Promise((resolve) => window.socket.emit("message-with-ack", 1, "2", { 3: true }, (...args) => resolve(args))),
      undefined,
      "the ack of message-with-ack",
    );
    assert.deepEqual(ackArgs, [1, "2", { 3: true }]);

    // Echoes, the hostile one and engine.io's newline escaping included.
    await page.evaluate(([hostile, newlines]) => {
      window.socket.emit("message", "x");
      window.socket.emit("message", hostile);
      window.socket.emit("message", newlines);
    }, [HOSTILE, NEWLINES]);
    await wait(() => window.R.backs.length >= 3, null, "three message-back events");
    R = await page.evaluate(() => window.R);
    assert.deepEqual(R.backs, [["x"], [HOSTILE], [NEWLINES]]);

    // Heartbeats over JSONP: two pings answered (pongs ride on form POSTs), still connected.
    await wait(() => window.R.pings >= 2, null, "two pings", 5000);
    R = await page.evaluate(() => window.R);
    assert.deepEqual(R.errors, []);
    assert.equal(R.connected, 1);

    // The wire: every GET was a script load with `j=`, every POST a form submission.
    const gets = requests.filter((r) => r.method === "GET");
    const posts = requests.filter((r) => r.method === "POST");
    assert.ok(gets.length >= 3, `several polls (${gets.length})`);
    for (const r of gets) {
      assert.equal(r.type, "script", `GET is a script load: ${r.url}`);
      assert.match(r.j ?? "", /^\d+$/, `GET carries j=: ${r.url}`);
      assert.match(r.url, /[?&]EIO=4(&|$)/);
    }
    assert.ok(posts.length >= 4, `form POSTs (${posts.length})`);
    for (const r of posts) {
      assert.equal(r.type, "document", `POST is a form submission: ${r.url}`);
      assert.equal(r.contentType, "application/x-www-form-urlencoded");
      assert.match(r.body ?? "", /^d=/);
      assert.match(r.j ?? "", /^\d+$/);
    }
    assert.deepEqual(
      requests.filter((r) => r.method !== "GET" && r.method !== "POST"),
      [],
      "no other requests",
    );
    assert.deepEqual(opened.problems(), [], "no dialog, no page error");
    t.diagnostic(`${gets.length} script GETs, ${posts.length} form POSTs, ${R.pings} pings`);

    await page.evaluate(() => window.socket.disconnect());
    await wait(() => window.R.errors.includes("disconnect: io client disconnect"), null, "disconnect");
    assert.deepEqual(opened.problems(), [], "no dialog, no page error");
  } finally {
    await page.close();
  }
});
