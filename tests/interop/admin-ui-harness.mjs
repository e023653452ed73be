// The official Socket.IO Admin UI (`@socket.io/admin-ui` 0.5.1, its built `ui/dist` from npm,
// unchanged) for admin-ui.test.mjs and admin-ui-cluster.test.mjs:
//
// - `serveUi()`: serves `ui/dist` as published, on 127.0.0.1 and a port of its own (so another
//   origin than any Halley node); returns `{ origin, close() }`.
// - `logIn(uiOrigin, serverUrl, password)`: opens the UI in headless Chromium with a fresh
//   profile and submits its connection form (server URL, user `admin`, `password`); returns
//   `{ browser, page, errors }` (`errors`: uncaught page errors).
// - `mainText(page)`: a function giving the UI's main pane as text, for failure messages.
//
// The UI's index.html loads fonts and icons from fonts.googleapis.com and cdn.jsdelivr.net:
// Chromium resolves those names to a closed local port, so nothing leaves the machine (icons
// are blank).

import http from "node:http";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { launchBrowser } from "./browser.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const UI_DIST = path.join(here, "node_modules/@socket.io/admin-ui/ui/dist");
const OFFLINE =
  "MAP fonts.googleapis.com 127.0.0.1:9, MAP fonts.gstatic.com 127.0.0.1:9, MAP cdn.jsdelivr.net 127.0.0.1:9";
const TYPES = {
  ".html": "text/html",
  ".js": "application/javascript",
  ".css": "text/css",
  ".svg": "image/svg+xml",
  ".png": "image/png",
};

export async function serveUi() {
  const srv = http.createServer(async (req, res) => {
    let file = decodeURIComponent(new URL(req.url, "http://ui").pathname);
    if (file.endsWith("/")) file += "index.html";
    const full = path.join(UI_DIST, path.normalize(file));
    if (!full.startsWith(UI_DIST)) return res.writeHead(403).end();
    try {
      const body = await readFile(full);
      res.writeHead(200, { "content-type": TYPES[path.extname(full)] ?? "application/octet-stream" });
      res.end(body);
    } catch {
      res.writeHead(404).end();
    }
  });
  await new Promise((resolve) => srv.listen(0, "127.0.0.1", resolve));
  return { origin: `http://127.0.0.1:${srv.address().port}`, close: () => srv.close() };
}

export async function logIn(uiOrigin, serverUrl, password) {
  const browser = await launchBrowser({ args: [`--host-resolver-rules=${OFFLINE}`] });
  const page = await browser.context.newPage();
  const errors = [];
  page.on("pageerror", (error) => errors.push(error.message));
  await page.goto(`${uiOrigin}/`);
  await page.getByLabel("Server URL").fill(serverUrl);
  await page.getByLabel("Username").fill("admin");
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Connect" }).click();
  return { browser, page, errors };
}

export const mainText = (page) => () =>
  page.evaluate(() => document.querySelector("main")?.innerText ?? "");
