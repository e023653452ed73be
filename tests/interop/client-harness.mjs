// Helpers for the tests of Halley's own browser client (client-*.test.mjs): a test page that
// loads the real served script from /socket.io/socket.io.js and records everything the client
// does in `window.T`, and the stand-ins that make old-browser code paths run in Chromium.
// Browser launch and `until` come from browser.mjs.

import { TIMEOUT } from "./helpers.mjs";
import { until } from "./browser.mjs";

export { launchBrowser } from "./browser.mjs";

// The page's recorder. `T.open(name, url, opts)` calls `io(url, opts)` and logs, under
// `<name>:<event>`, the socket's events (every server event through onAny, binary described as
// `{bytes: [...]}`) and its Manager's (transport negotiation steps, reconnection).
const RECORDER = `
window.T = {
  log: [],
  sockets: {},
  add: function (kind, data) { T.log.push({ kind: kind, data: data === undefined ? null : data }); },
  all: function (kind) { return T.log.filter(function (e) { return e.kind === kind; }).map(function (e) { return e.data; }); },
  count: function (kind) { return T.all(kind).length; },
  describe: function (v) {
    if (v instanceof ArrayBuffer) return { bytes: Array.prototype.slice.call(new Uint8Array(v)) };
    if (Array.isArray(v)) return v.map(T.describe);
    if (v && typeof v === 'object') { var o = {}; for (var k in v) o[k] = T.describe(v[k]); return o; }
    return v;
  },
  open: function (name, url, opts) {
    var s = io(url, opts), tag = function (k) { return name + ':' + k; };
    T.sockets[name] = s;
    s.io.on('transport', function (e) { T.add(tag('transport'), e); });
    ['open', 'close', 'reconnect_attempt', 'reconnect', 'reconnect_error', 'reconnect_failed'].forEach(function (ev) {
      s.io.on(ev, function (a) { T.add(tag(ev), a instanceof Error ? a.message : a); });
    });
    s.on('connect', function () { T.add(tag('connect'), { id: s.id, sid: s.io.engine.id, transport: s.io.engine.transport.name }); });
    s.on('disconnect', function (reason) { T.add(tag('disconnect'), reason); });
    s.on('connect_error', function (e) { T.add(tag('connect_error'), { message: e.message, data: e.data === undefined ? null : e.data }); });
    s.onAny(function (ev) { T.add(tag(ev), T.describe(Array.prototype.slice.call(arguments, 1))); });
    return s;
  },
  // Emits with an ack; resolves to the ack's arguments, described.
  ack: function (name, args) {
    return new Promise(function (resolve) {
      T.sockets[name].emit.apply(T.sockets[name], args.concat(function () { resolve(T.describe(Array.prototype.slice.call(arguments))); }));
    });
  }
};`;

const PAGE = `<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>client test</title>
<script src="/socket.io/socket.io.js"></script>
<script>${RECORDER}</script>
</head><body></body></html>`;

/**
 * An `ActiveXObject` stand-in for Chromium: `new ActiveXObject("htmlfile")` returns a wrapper
 * over the document of a hidden about:blank iframe (open/write/close/parentWindow/createElement/
 * body, what the client's htmlfile transport uses), any other ProgID throws as IE does when
 * the control is unavailable. `window.__htmlfile` counts documents, frames made in them and
 * CollectGarbage() calls, and keeps the host frames.
 */
export const HTMLFILE_STANDIN = `(() => {
  const stats = (window.__htmlfile = { documents: 0, frames: 0, gc: 0, hosts: [] });
  window.CollectGarbage = () => { stats.gc++; };
  window.ActiveXObject = function (progid) {
    if (String(progid).toLowerCase() !== "htmlfile") throw new Error("Automation server can't create object");
    stats.documents++;
    const host = document.createElement("iframe");
    host.style.display = "none";
    (document.body || document.documentElement).appendChild(host);
    stats.hosts.push(host);
    const doc = host.contentWindow.document;
    return {
      open: () => doc.open(),
      write: (html) => doc.write(html),
      close: () => doc.close(),
      get parentWindow() { return host.contentWindow; },
      get body() { return doc.body; },
      createElement(tag) {
        if (String(tag).toLowerCase() === "iframe") stats.frames++;
        return doc.createElement(tag);
      },
    };
  };
})();`;

/** Makes the page a browser without WebSocket. */
export const NO_WEBSOCKET = "delete window.WebSocket;";

/** Makes the page a browser without native JSON (IE6/7), so the client's own codec runs. */
export const NO_JSON = "delete window.JSON;";

/**
 * Opens the test page on `origin` (the server's URL, so the page is same-origin with it), with
 * `init` scripts run before any of the page's, `headers` added to its response. The page itself is served by routing only while
 * it loads. Returns `{ page, wait(kind, n), state(), problems() }`, where `wait` resolves once
 * `T.count(kind) >= n` (failing with the page's log after `ms`).
 */
export async function openClientPage(context, origin, { init = [], headers = {} } = {}) {
  const page = await context.newPage();
  const problems = [];
  const consoleLines = [];
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
  page.on("crash", () => problems.push("page crashed"));
  page.on("console", (msg) => {
    consoleLines.push(`${msg.type()}: ${msg.text()}`);
    if (consoleLines.length > 100) consoleLines.shift();
  });
  for (const script of init) await page.addInitScript(script);
  const pattern = "**/test/client.html";
  await page.route(pattern, (route) => route.fulfill({ status: 200, body: PAGE, contentType: "text/html; charset=utf-8", headers }));
  await page.goto(`${origin}/test/client.html`, { timeout: TIMEOUT });
  await page.unroute(pattern);
  const state = async () => {
    // Playwright serializes the log itself: the page's JSON may be gone (NO_JSON).
    const log = await page
      .evaluate(() => T.log)
      .then((l) => JSON.stringify(l))
      .catch((e) => `(no page state: ${e.message})`);
    return `page log: ${log}\nconsole:\n${consoleLines.join("\n")}\nproblems: ${problems.join("; ")}`;
  };
  return {
    page,
    state,
    problems: () => [...problems],
    wait: (kind, n = 1, ms = TIMEOUT) =>
      until(page, ([k, count]) => T.count(k) >= count, [kind, n], `${n} × ${kind}`, { ms, describeState: state }),
  };
}

/** The negotiation steps (`transport` events) the page recorded for socket `name`. */
export function steps(page, name = "s") {
  return page.evaluate((n) => T.all(`${n}:transport`), name);
}
