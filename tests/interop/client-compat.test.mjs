// Halley's client where old IE and old pages take it, in headless Chromium:
//
// - IE6–8 JSONP: through a stand-in that takes away the script `error` event (IE6–8 have none)
//   and gives scripts IE's `readyState`/`onreadystatechange`, a poll response lost in flight is
//   noticed when the script reaches `loaded` without calling back, sent again, and nothing is
//   lost, on a server whose heartbeat (25 s) could not have noticed it.
// - On `pagehide` (`unload` in IE) every pending script, frame and XHR of the client is
//   dropped and the session closed with a close packet (the server counts a client close at
//   once, long before its heartbeat would).
// - Pages that relaxed `document.domain`: the iframe and htmlfile transports work (Chromium
//   honours `document.domain` with `Origin-Agent-Cluster: ?0` on host names, given here by
//   `--host-resolver-rules`).
// - The clients people already have in their pages: Socket.IO 0.9's transport names, its
//   `host`/`port`/`secure` options and its socket events; `forceJSONP`; `polling` meaning JSONP
//   where XHR is missing; a query string whose values contain `=`; `socket.io.opts.transports`
//   changed between attempts; the remembered transport kept per server and forgotten after a
//   day.
//
// Servers: the `halley` binary (default heartbeat, admin API) and the `interop_server` example.
// Build first: cargo build --release --examples --bins. Run: node --test client-compat.test.mjs

import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";

import { examplePath, freePort, startServer } from "./helpers.mjs";
import { HTMLFILE_STANDIN, launchBrowser, openClientPage, steps } from "./client-harness.mjs";

const HALLEY_BIN =
  process.env.HALLEY_BIN ||
  path.resolve(path.dirname(new URL(import.meta.url).pathname), "../../target/release/halley");

/**
 * IE6–8's script element in Chromium: no `error` event reaches the page (`onerror` is ignored,
 * the event stopped), and `readyState` becomes `loaded` with an `onreadystatechange` call when
 * the script ran or failed to load, as IE does. `window.__ie.failures` counts the failed loads.
 */
const IE_SCRIPTS = `(() => {
  const stats = (window.__ie = { scripts: 0, failures: 0 });
  const create = Document.prototype.createElement;
  Document.prototype.createElement = function (tag) {
    const el = create.apply(this, arguments);
    if (String(tag).toLowerCase() !== "script") return el;
    stats.scripts++;
    let state = "loading";
    let handler = null;
    Object.defineProperty(el, "onerror", { get: () => null, set: () => {}, configurable: true });
    Object.defineProperty(el, "readyState", { get: () => state, configurable: true });
    Object.defineProperty(el, "onreadystatechange", { get: () => handler, set: (f) => { handler = f; }, configurable: true });
    const settle = (failed) => {
      state = "loaded";
      if (failed) stats.failures++;
      if (handler) handler.call(el);
    };
    el.addEventListener("load", () => settle(false));
    el.addEventListener("error", (e) => { e.stopImmediatePropagation(); settle(true); });
    return el;
  };
})();`;

let halley;
let interop;
let browser;

before(async () => {
  halley = await startServer(HALLEY_BIN, { HALLEY_LISTEN: "127.0.0.1:0", HALLEY_DEMO: "false" });
  interop = await startServer(examplePath("interop_server"));
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  const exits = [await halley?.stop(), await interop?.stop()];
  assert.deepEqual(exits.map((e) => e?.code), [0, 0], "server exit codes");
});

async function done(client) {
  assert.deepEqual(client.problems(), []);
  await client.page.close();
}

async function publish(event, data) {
  const res = await fetch(`${halley.admin}/publish`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ event, data }),
  });
  assert.equal(res.status, 200, await res.text());
}

/** The halley binary's `halley_session_closes_total{reason}`. */
async function closes(reason) {
  const text = await (await fetch(`${halley.admin}/metrics`)).text();
  const m = new RegExp(`^halley_session_closes_total\\{reason="${reason}"\\} (\\d+)$`, "m").exec(text);
  assert.ok(m, `no halley_session_closes_total{reason="${reason}"} in /metrics`);
  return Number(m[1]);
}

test("IE6–8 JSONP: a poll lost in flight is noticed without onerror (readyState) and sent again", async () => {
  const client = await openClientPage(browser.context, halley.url, { init: [IE_SCRIPTS] });
  const { page } = client;
  await page.evaluate(() => T.open("s", "/", { transports: ["jsonp"], upgrade: false }));
  await client.wait("s:connect");
  const sid = await page.evaluate(() => T.sockets.s.io.engine.id);
  // The first poll answer that carries a tick is read from the server, then lost on the way.
  let lost = 0;
  await page.route(/[?&]sid=/, async (route) => {
    if (route.request().method() !== "GET" || lost) return route.fallback();
    const response = await route.fetch();
    const body = await response.text();
    if (!body.includes("tick")) return route.fulfill({ response, body });
    lost++;
    return route.abort();
  });
  for (let i = 0; i < 10; i++) await publish("tick", i);
  await client.wait("s:tick", 10);
  await page.unrouteAll({ behavior: "ignoreErrors" });
  assert.equal(lost, 1);
  const seen = await page.evaluate(() => ({
    ticks: T.all("s:tick").map((a) => a[0]),
    sid: T.sockets.s.io.engine.id,
    disconnects: T.all("s:disconnect"),
    ie: window.__ie,
  }));
  assert.deepEqual(seen.ticks, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  assert.equal(seen.sid, sid);
  assert.deepEqual(seen.disconnects, []);
  assert.ok(seen.ie.failures >= 1, `the stand-in reported the failed script: ${JSON.stringify(seen.ie)}`);
  await done(client);
});

describe("pagehide closes everything the client holds", () => {
  for (const name of ["jsonp", "iframe", "htmlfile", "polling"]) {
    test(`${name}: pending requests dropped, session closed by a close packet`, async () => {
      const init = name === "htmlfile" ? [HTMLFILE_STANDIN] : [];
      const client = await openClientPage(browser.context, halley.url, { init });
      const { page } = client;
      const failed = [];
      page.on("requestfailed", (r) => failed.push(r.url()));
      // XHR long-polls on their way (not in the DOM), to know one is pending at pagehide.
      const polls = new Set();
      page.on("request", (r) => r.url().includes("sid=") && r.method() === "GET" && polls.add(r));
      page.on("requestfinished", (r) => polls.delete(r));
      page.on("requestfailed", (r) => polls.delete(r));
      await page.evaluate((name) => T.open("s", "/", { transports: [name], upgrade: false }), name);
      await client.wait("s:connect");
      const sid = await page.evaluate(() => T.sockets.s.io.engine.id);
      // What of this session the page holds in its DOM: the poll's script, the forever frame
      // (for htmlfile, in the stand-in's document).
      const held = () =>
        page.evaluate(() => {
          const docs = [document, ...(window.__htmlfile ? window.__htmlfile.hosts.map((h) => h.contentDocument) : [])];
          return docs.flatMap((d) => [...d.querySelectorAll("script[src], iframe[src]")].map((e) => e.src)).filter((src) => src.includes("/socket.io/?")).length;
        });
      if (name !== "polling") assert.equal(await held(), 1, "a request pending before pagehide");
      else {
        const pending = () => [...polls].some((r) => r.url().includes(sid));
        const until = Date.now() + 5000;
        while (!pending() && Date.now() < until) await sleep(20);
        assert.ok(pending(), "a poll pending before pagehide");
      }
      const before = await closes("client close");
      await page.evaluate(() => window.dispatchEvent(new Event("pagehide")));
      assert.equal(await page.evaluate(() => T.sockets.s.io.engine.readyState), "closed");
      assert.equal(await held(), 0, "nothing of the session left in the page");
      // The close packet, not the heartbeat (25 s + 20 s), closed the session.
      const deadline = Date.now() + 5000;
      while ((await closes("client close")) === before && Date.now() < deadline) await sleep(50);
      assert.equal((await closes("client close")) - before, 1);
      // An XHR long-poll is not in the DOM: it was aborted (the request failed in the page).
      if (name === "polling") {
        const aborted = () => failed.some((url) => url.includes(sid));
        const until = Date.now() + 5000;
        while (!aborted() && Date.now() < until) await sleep(20);
        assert.ok(aborted(), `the pending poll was aborted: ${JSON.stringify(failed)}`);
      }
      await done(client);
    });
  }
});

describe("pages that relaxed document.domain", () => {
  let hosts;
  let origin;
  before(async () => {
    origin = `http://www.halley.test:${new URL(interop.url).port}`;
    hosts = await launchBrowser({
      args: [
        "--host-resolver-rules=MAP *.halley.test 127.0.0.1",
        // A page served by routing has no address, so it counts as public, and an http page on
        // a host name is no secure context: Chromium would then block its requests to
        // loopback (local network access). 127.0.0.1 pages are secure contexts; this one is
        // declared one.
        `--unsafely-treat-insecure-origin-as-secure=${origin}`,
      ],
    });
  });
  after(async () => {
    await hosts?.close();
  });

  for (const name of ["iframe", "htmlfile"]) {
    test(`${name} reaches a page whose document.domain is its parent domain`, async () => {
      const init = [...(name === "htmlfile" ? [HTMLFILE_STANDIN] : []), "document.domain = 'halley.test';"];
      const client = await openClientPage(hosts.context, origin, { init, headers: { "Origin-Agent-Cluster": "?0" } });
      const { page } = client;
      const frames = [];
      page.on("request", (r) => {
        if (r.url().includes(`transport=${name}`)) frames.push(new URL(r.url()).searchParams.get("domain"));
      });
      assert.deepEqual(await page.evaluate(() => [document.domain, location.hostname]), ["halley.test", "www.halley.test"]);
      await page.evaluate((name) => T.open("s", "/", { transports: [name], upgrade: false }), name);
      await client.wait("s:welcome");
      assert.deepEqual(await page.evaluate(() => T.ack("s", ["ack-me", "through the frame"])), ["through the frame"]);
      assert.equal(frames[0], "halley.test", "the frame is told the page's domain");
      await done(client);
    });
  }
});

describe("the clients people already have in their pages", () => {
  test("Socket.IO 0.9: transport names, host/port/secure, and its socket events", async () => {
    const client = await openClientPage(browser.context, interop.url);
    const { page } = client;
    const port = Number(new URL(interop.url).port);
    await page.evaluate((port) => {
      const s = (window.s09 = io.connect("http://nowhere.invalid:1", {
        host: "127.0.0.1",
        port,
        secure: false,
        transports: ["flashsocket", "xhr-polling", "jsonp-polling"],
        "reconnection delay": 50,
        "reconnection limit": 100,
      }));
      T.sockets.s09 = s;
      ["connecting", "connect", "reconnecting", "reconnect", "disconnect"].forEach((ev) =>
        s.on(ev, function () {
          T.add("s09:" + ev, Array.prototype.slice.call(arguments));
        }),
      );
      s.on("welcome", () => T.add("s09:welcome"));
    }, port);
    await client.wait("s09:welcome");
    await page.evaluate(() => window.s09.emit("drop-me", window.s09.io.engine.id));
    await client.wait("s09:reconnect");
    await client.wait("s09:connect", 2);
    const events = await page.evaluate(() => T.log.filter((e) => e.kind.startsWith("s09:") && e.kind !== "s09:welcome"));
    const kinds = events.map((e) => e.kind.slice(4));
    assert.deepEqual(kinds, ["connecting", "connect", "disconnect", "reconnecting", "connecting", "reconnect", "connect"]);
    const [connecting, , , reconnecting, , reconnect] = events.map((e) => e.data);
    // flashsocket skipped, xhr-polling is `polling`.
    assert.deepEqual(connecting, ["polling"]);
    assert.equal(reconnecting.length, 2);
    assert.ok(reconnecting[0] >= 25 && reconnecting[0] <= 100, `delay ${reconnecting[0]}`);
    assert.equal(reconnecting[1], 1);
    assert.deepEqual(reconnect, ["polling", 1]);
    // jsonp-polling is `jsonp`.
    await page.evaluate(() => T.open("j", "/", { transports: ["jsonp-polling"], forceNew: true }));
    await client.wait("j:welcome");
    assert.equal(await page.evaluate(() => T.sockets.j.io.engine.transport.name), "jsonp");
    await done(client);
  });

  test("Socket.IO 0.9: connect_failed without reconnection, reconnect_failed after the last attempt", async () => {
    const client = await openClientPage(browser.context, interop.url);
    const { page } = client;
    const dead = await freePort();
    await page.evaluate((dead) => {
      const record = (name, s) => {
        ["connect_failed", "reconnect_failed", "reconnecting"].forEach((ev) => s.on(ev, () => T.add(name + ":" + ev)));
      };
      const url = "http://127.0.0.1:" + dead;
      record("once", io.connect(url, { reconnect: false, transports: ["xhr-polling"], "force new connection": true }));
      record("twice", io.connect(url, { "max reconnection attempts": 2, "reconnection delay": 20, transports: ["xhr-polling"], "force new connection": true }));
    }, dead);
    await client.wait("once:connect_failed");
    await client.wait("twice:reconnect_failed");
    assert.equal(await page.evaluate(() => T.count("twice:reconnecting")), 2);
    assert.equal(await page.evaluate(() => T.count("twice:connect_failed")), 1);
    assert.equal(await page.evaluate(() => T.count("once:reconnect_failed")), 0);
    await done(client);
  });

  test("forceJSONP, and polling without XHR, are JSONP", async () => {
    const client = await openClientPage(browser.context, interop.url);
    await client.page.evaluate(() => T.open("f", "/", { transports: ["polling"], forceJSONP: true, upgrade: false }));
    await client.wait("f:welcome");
    assert.equal(await client.page.evaluate(() => T.sockets.f.io.engine.transport.name), "jsonp");
    await done(client);

    const noXhr = await openClientPage(browser.context, interop.url, { init: ["delete window.XMLHttpRequest;"] });
    await noXhr.page.evaluate(() => T.open("p", "/", { transports: ["polling"], upgrade: false }));
    await noXhr.wait("p:welcome");
    assert.equal(await noXhr.page.evaluate(() => T.sockets.p.io.engine.transport.name), "jsonp");
    // Upstream too (the hidden form): an ack comes back.
    assert.deepEqual(await noXhr.page.evaluate(() => T.ack("p", ["ack-me", "a=b"])), ["a=b"]);
    await done(noXhr);
  });

  test("a query string keeps the = inside its values", async () => {
    const client = await openClientPage(browser.context, interop.url);
    const handshakes = [];
    client.page.on("request", (r) => {
      const url = new URL(r.url());
      if (url.pathname === "/socket.io/" && !url.searchParams.has("sid")) handshakes.push(url.searchParams);
    });
    await client.page.evaluate(() => T.open("q", "/", { query: "token=YWJj==&next=/a?b=c", transports: ["polling"], upgrade: false }));
    await client.wait("q:welcome");
    assert.equal(handshakes[0].get("token"), "YWJj==");
    assert.equal(handshakes[0].get("next"), "/a?b=c");
    await done(client);
  });

  test("socket.io.opts.transports set on reconnect_attempt is used for that attempt", async () => {
    const client = await openClientPage(browser.context, interop.url);
    const { page } = client;
    await page.evaluate(() => {
      const s = T.open("s", "/", { transports: ["websocket"], reconnectionDelay: 20, reconnectionDelayMax: 50 });
      s.io.on("reconnect_attempt", () => {
        s.io.opts.transports = ["polling", "websocket"];
      });
    });
    await client.wait("s:connect");
    assert.equal(await page.evaluate(() => T.sockets.s.io.engine.transport.name), "websocket");
    await page.evaluate(() => T.sockets.s.emit("drop-me", T.sockets.s.io.engine.id));
    await client.wait("s:connect", 2);
    const connects = await page.evaluate(() => T.all("s:connect").map((c) => c.transport));
    assert.deepEqual(connects, ["websocket", "polling"]);
    await done(client);
  });

  test("the remembered transport is kept per server and forgotten after a day", async () => {
    const { hostname, port } = new URL(interop.url);
    const key = `halley-transport.${hostname}.${port}`;
    const first = async (stored) => {
      const client = await openClientPage(browser.context, interop.url);
      await client.page.evaluate((stored) => {
        localStorage.clear();
        for (const [k, v] of Object.entries(stored)) localStorage.setItem(k, v);
      }, stored);
      await client.page.evaluate(() => T.open("s", "/", { rememberTransport: true, upgrade: false }));
      await client.wait("s:welcome");
      const tried = (await steps(client.page))[0];
      await client.page.evaluate(() => localStorage.clear());
      await done(client);
      return tried;
    };
    const day = 864e5;
    assert.deepEqual(await first({ [key]: `sse|${Date.now() - 60_000}` }), { type: "try", name: "sse" });
    assert.deepEqual(await first({ [key]: `sse|${Date.now() - day - 60_000}` }), { type: "try", name: "websocket" });
    assert.deepEqual(await first({ [`halley-transport.${hostname}.1`]: `sse|${Date.now()}` }), { type: "try", name: "websocket" });
  });
});
