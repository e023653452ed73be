// The official Socket.IO Admin UI (`@socket.io/admin-ui` 0.5.1, its built `ui/dist` from npm,
// unchanged) against the `halley` binary with `--admin-ui`: the UI is served as static files
// by a tiny HTTP server on another origin (another port), opened in headless Chromium, logged
// in through its own connection form, and must list the test clients with their transports:
// one socket.io-client over WebSocket, one over XHR polling (no upgrade), one SSE and one JSONP
// session opened with raw HTTP. A second browser profile logs in with a wrong password: the
// form shows "Invalid credentials" and the UI lists no socket. The disconnect button of a
// socket's row disconnects it on the server (its client hears "io server disconnect"). Against a
// server in production mode the UI shows its dashboard (the statistics) and servers only.
//
// The UI is served and driven by admin-ui-harness.mjs.
//
// Build first: cargo build --release --bins. Run: node --test admin-ui.test.mjs

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { io } from "socket.io-client";

import { logIn as openUi, mainText, serveUi } from "./admin-ui-harness.mjs";
import { until } from "./browser.mjs";
import { startServer, waitFor } from "./helpers.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const HALLEY_BIN = process.env.HALLEY_BIN || path.resolve(here, "../../target/release/halley");

let uiServer;
let uiOrigin;
let server;
const clients = [];
const ids = {};

/** An Engine.IO session opened with raw HTTP on a legacy transport, joined to `/`. */
async function rawSession(query, readOpen) {
  const headers = { referer: `${server.url}/` };
  const res = await fetch(`${server.url}/socket.io/?EIO=4&${query}`, { headers });
  assert.equal(res.status, 200, query);
  const reader = res.body.getReader();
  let text = "";
  let sid;
  while (!(sid = readOpen(text))) {
    const { value, done } = await reader.read();
    assert.ok(!done, `${query}: the open packet`);
    text += new TextDecoder().decode(value);
  }
  const post = await fetch(`${server.url}/socket.io/?EIO=4&${query}&sid=${sid}`, {
    method: "POST",
    headers: { ...headers, "content-type": "text/plain;charset=UTF-8" },
    body: "40",
  });
  assert.equal(post.status, 200);
  clients.push({ close: () => reader.cancel().catch(() => {}) });
  return sid;
}

const openSid = (text) => /"sid\\?":\\?"([^"\\]+)/.exec(text)?.[1];

before(async () => {
  uiServer = await serveUi();
  uiOrigin = uiServer.origin;
  server = await startServer(HALLEY_BIN, {
    HALLEY_LISTEN: "127.0.0.1:0",
    HALLEY_DEMO: "false",
    HALLEY_ADMIN_UI: "true",
    HALLEY_ADMIN_UI_AUTH: "admin:secret",
    HALLEY_ADMIN_UI_ORIGINS: uiOrigin,
  });
  for (const transport of ["websocket", "polling"]) {
    const socket = io(server.url, { forceNew: true, transports: [transport], upgrade: false });
    clients.push(socket);
    await waitFor(socket, "connect");
    ids[transport] = socket.id;
  }
  // SSE and JSONP: the session's sid; the Socket.IO socket is found by its transport.
  ids.sse = await rawSession("transport=sse", openSid);
  ids.jsonp = await rawSession("transport=polling&j=0", openSid);
});

after(async () => {
  for (const client of clients) client.close();
  await server?.stop();
  uiServer?.close();
});

const logIn = (password) => openUi(uiOrigin, server.url, password);

test("the official UI logs in and lists every test client with its transport", async () => {
  const { browser, page, errors } = await logIn("secret");
  try {
    await page.goto(`${uiOrigin}/#/sockets`);
    await until(
      page,
      (ids) => {
        const rows = [...document.querySelectorAll("main tbody tr")].map((tr) => tr.innerText);
        return ids.every((id) => rows.some((row) => row.includes(id)));
      },
      [ids.websocket, ids.polling],
      "the socket.io-client sockets in the UI's socket list",
      { ms: 15_000, describeState: mainText(page) },
    );
    const rows = await page.$$eval("main tbody tr", (trs) => trs.map((tr) => tr.innerText));
    const rowOf = (id) => rows.find((row) => row.includes(id)) ?? "";
    // The UI names the two transports it knows, and shows any other name as it is.
    assert.match(rowOf(ids.websocket), /WebSocket/, rows.join("\n"));
    assert.match(rowOf(ids.polling), /HTTP long-polling/, rows.join("\n"));
    for (const name of ["sse", "jsonp"]) {
      assert.ok(
        rows.some((row) => row.split(/\s+/).includes(name)),
        `a socket on ${name} in:\n${rows.join("\n")}`,
      );
    }
    // The dashboard counts every HTTP transport as polling: polling, SSE and JSONP are 3 of
    // the 5 connections, the WebSocket client and the UI's own (upgraded) the other 2.
    await page.goto(`${uiOrigin}/#/`);
    await until(
      page,
      () => {
        const text = document.querySelector("main")?.innerText ?? "";
        return /WebSocket\s+2\s+40\.0 %/.test(text) && /HTTP long-polling\s+3\s+60\.0 %/.test(text);
      },
      null,
      "the dashboard's transport split",
      { ms: 10_000, describeState: mainText(page) },
    );
    // The session id sent after the CONNECT reply is kept, and a reload logs in with it.
    const session = await page.evaluate(() => localStorage.getItem("session_id"));
    assert.match(session ?? "", /^[0-9a-f]{16}$/);
    await page.goto(`${uiOrigin}/#/sockets`);
    await page.reload();
    await page.locator("main tbody tr", { hasText: ids.websocket }).waitFor({ timeout: 10_000 });
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
  }
});

test("the UI's disconnect button disconnects the socket on the server", async () => {
  const victim = io(server.url, { forceNew: true, transports: ["websocket"] });
  clients.push(victim);
  await waitFor(victim, "connect");
  const { browser, page } = await logIn("secret");
  try {
    await page.goto(`${uiOrigin}/#/sockets`);
    const row = page.locator("main tbody tr", { hasText: victim.id });
    await row.waitFor({ timeout: 10_000 });
    const gone = waitFor(victim, "disconnect", { ms: 10_000 });
    // The row's one button, the logout icon: `_disconnect(nsp, false, id)`.
    await row.locator("button:has(.mdi-logout)").click();
    const [reason] = await gone;
    assert.equal(reason, "io server disconnect");
    await until(page, (id) => ![...document.querySelectorAll("main tbody tr")].some((tr) => tr.innerText.includes(id)),
      victim.id, "the socket gone from the UI's list", { ms: 10_000, describeState: mainText(page) });
  } finally {
    await browser.close();
  }
});

test("in production mode the UI shows its dashboard and servers, not sockets", async () => {
  const production = await startServer(HALLEY_BIN, {
    HALLEY_LISTEN: "127.0.0.1:0",
    HALLEY_DEMO: "false",
    HALLEY_ADMIN_UI: "true",
    HALLEY_ADMIN_UI_AUTH: "admin:secret",
    HALLEY_ADMIN_UI_ORIGINS: uiOrigin,
    HALLEY_ADMIN_UI_MODE: "production",
  });
  const client = io(production.url, { forceNew: true, transports: ["polling"], upgrade: false });
  await waitFor(client, "connect");
  const { browser, page, errors } = await openUi(uiOrigin, production.url, "secret");
  try {
    // The dashboard's statistics: the polling client and the UI's own connection.
    await until(
      page,
      () => /HTTP long-polling\s+1\s+50\.0 %/.test(document.querySelector("main")?.innerText ?? ""),
      null,
      "the dashboard's transport split",
      { ms: 10_000, describeState: mainText(page) },
    );
    const nav = await page.evaluate(() => document.querySelector("nav")?.innerText ?? "");
    assert.match(nav, /Dashboard/);
    assert.match(nav, /Servers/);
    assert.doesNotMatch(nav, /Sockets|Rooms|Clients|Events/, nav);
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
    client.close();
    await production.stop();
  }
});

test("a wrong password shows invalid credentials and no socket", async () => {
  const { browser, page } = await logIn("not the password");
  try {
    await until(page, () => /invalid credentials/i.test(document.body.innerText), null,
      "the invalid credentials message", { ms: 10_000, describeState: () => page.evaluate(() => document.body.innerText) });
    await page.goto(`${uiOrigin}/#/sockets`);
    const text = await mainText(page)();
    for (const id of Object.values(ids)) assert.ok(!text.includes(id), text);
    assert.equal(await page.locator("main tbody tr td.text-start").count(), 0, text);
  } finally {
    await browser.close();
  }
});
