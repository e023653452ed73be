// The seed's page (fixtures/seed/index.html, the 2012 Socket.IO 0.9 demo: `io.connect('/')`,
// `socket.on('news', ...)`, `socket.emit('my other event', ...)`), unchanged, against the `seed`
// example, in headless Chromium with Halley's served client: the page logs the `news` it gets,
// and the server logs the `my other event` it gets back.
//
// Build first: cargo build --release --examples. Run: node --test client-seed.test.mjs

import { test, before, after } from "node:test";
import assert from "node:assert/strict";

import { TIMEOUT, examplePath, startServer, withTimeout } from "./helpers.mjs";
import { launchBrowser } from "./client-harness.mjs";

let server;
let browser;

before(async () => {
  // The seed logs at info unless RUST_LOG says otherwise; its stderr is what this test reads.
  server = await startServer(examplePath("seed"), { RUST_LOG: "info" });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  const exit = await server?.stop();
  assert.equal(exit?.code, 0, "server exit code");
});

test("the seed's index.html receives news and the server logs my other event", async () => {
  const page = await browser.context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  const news = new Promise((resolve) => {
    page.on("console", async (msg) => {
      if (msg.type() !== "log") return;
      const args = await Promise.all(msg.args().map((a) => a.jsonValue()));
      if (args[0]?.hello) resolve(args);
    });
  });
  // The page really comes from the seed server (no routing): exactly what a browser gets.
  await page.goto(`${server.url}/`, { timeout: TIMEOUT });
  assert.deepEqual(await withTimeout(news, TIMEOUT, "the page's console.log(news)"), [{ hello: "world, for everyone!" }]);

  // Checked on each chunk of server output (helpers.mjs keeps the whole log).
  const logged = () => /my other event .*"my": String\("data"\)/.test(server.logs());
  const seen = new Promise((resolve) => {
    const check = () => logged() && (server.process.stderr.off("data", check), resolve());
    server.process.stderr.on("data", check);
    check();
  });
  await withTimeout(seen, TIMEOUT, "`my other event` in the server log");
  assert.equal(await page.evaluate(() => socket.io.engine.transport.name), "websocket");
  assert.deepEqual(errors, []);
  await page.close();
});
