// The demo page in headless Chromium against the real `halley` binary: every panel this browser
// can run reaches "connected" and shows a round trip, htmlfile says it is unsupported, and a
// broadcast typed in the box arrives in every panel. A fresh screenshot is saved to a temporary
// folder so a person can look at it.

import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp } from "node:fs/promises";
import os from "node:os";
import path from "node:path";

import { startServer } from "./helpers.mjs";
import { launchBrowser, until } from "./browser.mjs";

const HALLEY_BIN =
  process.env.HALLEY_BIN ||
  path.resolve(path.dirname(new URL(import.meta.url).pathname), "../../target/release/halley");

const MODERN = ["websocket", "iframe", "sse", "xhr-streaming", "polling", "jsonp", "auto"];

test("demo page: every runnable panel connects, measures latency and receives a broadcast", async () => {
  const server = await startServer(HALLEY_BIN, { HALLEY_LISTEN: "127.0.0.1:0" });
  const browser = await launchBrowser();
  try {
    const page = await browser.context.newPage();
    const errors = [];
    page.on("pageerror", (e) => errors.push(e.message));
    await page.goto(`${server.url}/`, { waitUntil: "load" });
    const states = () =>
      page.$$eval(".panel", (ps) =>
        ps.map((p) => `${p.id}: ${p.getAttribute("data-state")} rtt=${p.getAttribute("data-rtt")}`).join("\n"),
      );
    await until(
      page,
      (names) =>
        names.every((n) => {
          const p = document.getElementById(`panel-${n}`);
          return p && p.getAttribute("data-state") === "connected" && p.getAttribute("data-rtt") !== null;
        }),
      MODERN,
      "every modern panel connected with a round trip",
      { ms: 20000, describeState: states },
    );
    assert.equal(
      await page.getAttribute("#panel-htmlfile", "data-state"),
      "unsupported",
      "Chromium has no ActiveXObject: the htmlfile panel says so",
    );

    const text = `broadcast ${Date.now()}`;
    await page.fill("#bcast-text", text);
    await page.click("#bcast-send");
    await until(
      page,
      ([names, expected]) =>
        names.every((n) => document.getElementById(`panel-${n}`).getAttribute("data-broadcast") === expected),
      [MODERN, text],
      "the broadcast in every panel",
      { ms: 10000, describeState: states },
    );

    const dir = await mkdtemp(path.join(os.tmpdir(), "halley-demo-"));
    const file = path.join(dir, "demo.png");
    await page.screenshot({ path: file, fullPage: true });
    console.log(`demo screenshot: ${file}`);
    assert.deepEqual(errors, [], "no script errors on the page");
  } finally {
    await browser.close();
    await server.stop();
  }
});
