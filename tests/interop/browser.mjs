// Shared helpers for the browser tests: headless Chromium (the Debian package, never a downloaded
// browser) driven by playwright-core, and test pages served same-origin with the Halley server
// through Playwright request routing (no extra HTTP server).
//
// The routes live only while a page loads: as long as any route is set, Playwright intercepts
// every request of the page (CDP Fetch, pattern `*`) and each one, pongs included, waits for the
// Node test process to let it through. With the suite server's 200 ms pingTimeout, a busy test
// process could then cost the session its heartbeat.
//
// `CHROMIUM` overrides the browser binary (default /usr/bin/chromium, from `apt-get install
// chromium`).

import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";

import { chromium } from "playwright-core";

import { TIMEOUT } from "./helpers.mjs";

export const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";

export const CHROMIUM_ARGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
  "--disable-quic",
];

/**
 * Launches headless Chromium with a fresh temporary profile, `args` added to CHROMIUM_ARGS (a
 * proxy, host-resolver rules). Returns `{ context, close() }`.
 */
export async function launchBrowser({ args = [] } = {}) {
  if (!existsSync(CHROMIUM)) {
    throw new Error(
      `no Chromium at ${CHROMIUM}: install it with 'apt-get install chromium' or set CHROMIUM`,
    );
  }
  const userDataDir = await mkdtemp(path.join(os.tmpdir(), "halley-chromium-"));
  let context;
  try {
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM,
      headless: true,
      args: [...CHROMIUM_ARGS, ...args],
      // Pages fulfilled by `route` have no IP address, so Chromium's Local Network Access check
      // counts them as public and blocks their WebSocket to 127.0.0.1 (a page really loaded from
      // the server is loopback itself and needs nothing).
      permissions: ["local-network-access"],
      timeout: 30_000,
    });
  } catch (error) {
    await context?.close().catch(() => {});
    await rm(userDataDir, { recursive: true, force: true });
    throw error;
  }
  return {
    context,
    async close() {
      try {
        await context.close();
      } finally {
        await rm(userDataDir, { recursive: true, force: true });
      }
    },
  };
}

/**
 * Opens a new page at `url` and watches it: any dialog (an injected `alert`), uncaught page error
 * or crash is recorded, and `problems()` lists them; console output is kept for failure messages.
 *
 * While it loads, `pages` (a map from a path under `/test/`, e.g. `/test/page.html`, to
 * `{ body, contentType }`) is served on the page's origin by Playwright routing; everything else
 * (the Socket.IO requests under /socket.io/) goes to the network. The routes are removed once the
 * page has loaded.
 */
export async function openPage(context, url, pages) {
  const page = await context.newPage();
  const problems = [];
  const consoleLines = [];
  page.on("dialog", (dialog) => {
    problems.push(`dialog (${dialog.type()}): ${dialog.message()}`);
    dialog.dismiss().catch(() => {});
  });
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
  page.on("crash", () => problems.push("page crashed"));
  page.on("console", (msg) => {
    consoleLines.push(`${msg.type()}: ${msg.text()}`);
    if (consoleLines.length > 200) consoleLines.shift();
  });
  await page.route("**/test/**", (route) => {
    const served = pages[new URL(route.request().url()).pathname];
    if (!served) return route.fulfill({ status: 404, body: "not a test page", contentType: "text/plain" });
    return route.fulfill({ status: 200, body: served.body, contentType: served.contentType });
  });
  await page.goto(url, { timeout: TIMEOUT });
  await page.unrouteAll();
  return { page, problems: () => [...problems], console: () => consoleLines.join("\n") };
}

/**
 * Waits until `predicate(arg)`, evaluated in the page, is truthy (a hang guard of `ms`). On
 * timeout the error names `what` and carries `describeState()` of the page, if given.
 */
export async function until(page, predicate, arg, what, { ms = TIMEOUT, describeState } = {}) {
  try {
    return await page.waitForFunction(predicate, arg, { timeout: ms, polling: 10 });
  } catch (error) {
    let state = "";
    if (describeState) state = await describeState().catch((e) => `(page state unavailable: ${e.message})`);
    throw new Error(`waiting for ${what}: ${error.message.split("\n")[0]}\n${state}`);
  }
}
