// Halley's HTTP transports in a real browser (headless Chromium, the Debian package): XHR
// polling, JSONP polling, the `iframe` and `htmlfile` forever-frames, SSE and xhr-streaming, plus
// an SSE → WebSocket upgrade. The page speaks the wire format itself (a small ES5 client below,
// one page for every transport), so what is tested is exactly what the browser makes of the
// server's bytes: script escaping, event-stream parsing, streamed XHR text, form POSTs.
//
// Server under test: the `socketio_suite` example (path /socket.io/, pingInterval 300 ms,
// pingTimeout 2000 ms through PING_TIMEOUT_MS, `message` → `message-back`, `message-with-ack`
// → ack, `auth` on connect).
// Build it first: cargo build --release --example socketio_suite
// Run: node --test browser-transports.test.mjs   (CHROMIUM=/path/to/chromium to override)

import { test, before, after } from "node:test";
import assert from "node:assert/strict";

import { examplePath, startServer } from "./helpers.mjs";
import { launchBrowser, openPage, until } from "./browser.mjs";

const SERVER_BINARY = examplePath("socketio_suite");

// Everything that could break out of a script, a string, an HTML comment, an SSE line or an
// Engine.IO payload, plus characters outside the BMP.
const HOSTILE =
  '</script><script>alert(1)</script><!-- \u2028\u2029 \u001e "quotes" \\backslashes\\ 😀 \n newline';
// What engine.io's JSONP newline escaping has to keep apart: a literal backslash-n, an escaped
// backslash before n, a real newline, a backslash before a real newline, CR LF.
const NEWLINES = "literal \\n, \\\\n, real \n, backslash+newline \\\n, crlf \r\n end \\";
// 40 echoes of > 4 KiB each: more than the 128 KiB stream limit, so every stream rolls over.
const BULK_COUNT = 40;
const BULK_FILLER = '0123456789</script>\u2028"\\<!--&😀'.repeat(200).slice(0, 4096);
const BULK_PREFIX = '42["message-back","bulk:';

// ---------------------------------------------------------------------------------------------
// The page: a minimal Engine.IO v4 / Socket.IO client for one transport, ES5 only (these
// transports exist for old browsers). It records what it receives in `window.T`; the test drives
// it with T.start(), T.send(packet, how) and T.upgrade().
//
//   how = "xhr"    (default) queued packets are batched into one text/plain XHR POST
//         "single" one packet per XHR POST
//         "form"   one packet per hidden-form POST (field `d`, engine.io's JSONP newline escaping)
//
// At most one POST is in flight (the server closes a session on overlapping POSTs); pongs ride
// on the next POST, whatever it carries.
function halleyTransportPage() {
  var RS = "\u001e";
  var kind = /[?&]kind=([a-z-]+)/.exec(location.search)[1];
  var TRANSPORT = {
    polling: "polling",
    jsonp: "polling",
    iframe: "iframe",
    htmlfile: "htmlfile",
    sse: "sse",
    "xhr-streaming": "xhr-streaming"
  }[kind];
  var USES_J = kind === "jsonp" || kind === "iframe" || kind === "htmlfile";
  var J = 7; // the callback index: ___eio[7]
  var seq = 0;
  var T = (window.T = {
    kind: kind,
    sid: null,
    open: null,
    packets: [], // every Engine.IO packet received over HTTP, in order
    wsPackets: [], // every WebSocket message received, in order
    opens: [], // the URL of every receiving GET (poll or stream)
    current: null, // { url, packets, pings } of the latest receiving GET
    ends: 0, // receiving GETs that ended normally
    failures: [], // receiving GETs that failed (the page then stops receiving)
    pings: 0,
    pongs: 0,
    posts: [], // { how, packets, ok, detail } per POST
    errors: [], // anything that should not happen
    closing: false, // a close packet `1` was posted
    probed: false,
    upgraded: false,
    ws: null,
    wsClosed: null
  });

  window.___eio = [];
  window.___eio[J] = function (payload) {
    onPayload(payload);
  };

  function url() {
    return (
      "/socket.io/?EIO=4&transport=" + TRANSPORT +
      (T.sid ? "&sid=" + T.sid : "") +
      (USES_J ? "&j=" + J : "") +
      "&t=" + (seq++).toString(36)
    );
  }

  function onPayload(payload) {
    try {
      if (typeof payload !== "string") throw new Error("payload is a " + typeof payload);
      var packets = payload.split(RS);
      for (var i = 0; i < packets.length; i++) {
        T.packets.push(packets[i]);
        if (T.current) T.current.packets++;
        handle(packets[i], false);
      }
    } catch (e) {
      T.errors.push("payload: " + e + " in " + String(payload).slice(0, 200));
    }
  }

  function handle(p, viaWs) {
    var type = p.charAt(0);
    if (type === "0") {
      T.open = JSON.parse(p.slice(1));
      T.sid = T.open.sid;
    } else if (type === "2") {
      T.pings++;
      if (!viaWs && T.current) T.current.pings++;
      pong();
    }
  }

  // --- receiving -----------------------------------------------------------------------------
  function openReceiver() {
    var u = url();
    T.opens.push(u);
    T.current = { url: u, packets: 0, pings: 0 };
    receivers[kind](u);
  }

  function ended() {
    T.ends++;
    if (!T.upgraded) openReceiver();
  }

  function failed(detail) {
    T.failures.push(detail);
  }

  function remove(node) {
    if (node.parentNode) node.parentNode.removeChild(node);
  }

  function pollXhr(u) {
    var xhr = new XMLHttpRequest();
    xhr.open("GET", u, true);
    xhr.onload = function () {
      if (xhr.status !== 200) return failed(xhr.status + " " + xhr.responseText);
      onPayload(xhr.responseText);
      ended();
    };
    xhr.onerror = function () {
      failed("network error");
    };
    xhr.send();
  }

  // JSONP: the answer is `___eio[J]("<payload>");`, loaded as a script.
  function pollJsonp(u) {
    var script = document.createElement("script");
    script.async = true;
    script.onload = function () {
      remove(script);
      ended();
    };
    script.onerror = function () {
      remove(script);
      failed("script error");
    };
    script.src = u;
    document.getElementsByTagName("head")[0].appendChild(script);
  }

  // Forever-frame: a streaming HTML document binding `p = parent.___eio[J]`, then
  // `<script>p("<payload>");</script>` per flush. `htmlfile` uses the same iframe here: the real
  // client's ActiveXObject("htmlfile") exists only in old IE.
  function openFrame(u) {
    var frame = document.createElement("iframe");
    frame.style.display = "none";
    frame.onload = function () {
      var doc = frame.contentDocument;
      if (!doc || doc.URL === "about:blank") return;
      var type = doc.contentType;
      var text = doc.body ? doc.body.textContent : "";
      remove(frame);
      if (type === "text/html") ended();
      else failed(type + " " + text);
    };
    frame.src = u;
    document.body.appendChild(frame);
  }

  // SSE: `data: "<JSON string of the payload>"`. A stream that ends fires `error` with
  // readyState CONNECTING (the browser would retry the same URL, but a handshake URL must not be
  // retried, so the page reopens itself with its sid); a refused one leaves it CLOSED.
  function openSse(u) {
    var source = new EventSource(u);
    source.onmessage = function (e) {
      var payload;
      try {
        payload = JSON.parse(e.data);
      } catch (err) {
        T.errors.push("sse data is not JSON: " + e.data.slice(0, 200));
        return;
      }
      onPayload(payload);
    };
    source.onerror = function () {
      var state = source.readyState;
      source.close();
      if (state === 2) failed("EventSource refused (readyState CLOSED)");
      else ended();
    };
  }

  // xhr-streaming: 2048 spaces + "\n", then one JSON string of the payload per line, read as it
  // arrives (readyState 3).
  function openXhrStreaming(u) {
    var xhr = new XMLHttpRequest();
    var pos = 0;
    var lines = 0;
    function drain() {
      var text = xhr.responseText;
      var nl;
      while ((nl = text.indexOf("\n", pos)) !== -1) {
        var line = text.slice(pos, nl);
        pos = nl + 1;
        if (lines++ === 0) {
          if (!/^ {2048}$/.test(line)) T.errors.push("xhr-streaming prelude: " + JSON.stringify(line.slice(0, 80)));
          continue;
        }
        var payload;
        try {
          payload = JSON.parse(line);
        } catch (err) {
          T.errors.push("xhr-streaming line is not JSON: " + line.slice(0, 200));
          continue;
        }
        onPayload(payload);
      }
    }
    xhr.open("GET", u, true);
    xhr.onreadystatechange = function () {
      if (xhr.readyState === 3 && xhr.status === 200) drain();
      else if (xhr.readyState === 4) {
        if (xhr.status !== 200) return failed(xhr.status + " " + xhr.responseText);
        drain();
        if (pos !== xhr.responseText.length) T.errors.push("xhr-streaming: unterminated last line");
        ended();
      }
    };
    xhr.onprogress = function () {
      if (xhr.status === 200) drain();
    };
    xhr.send();
  }

  var receivers = {
    polling: pollXhr,
    jsonp: pollJsonp,
    iframe: openFrame,
    htmlfile: openFrame,
    sse: openSse,
    "xhr-streaming": openXhrStreaming
  };

  // --- sending -------------------------------------------------------------------------------
  var queue = [];
  var posting = false;
  var pendingPongs = 0;

  function send(data, how) {
    queue.push({ data: data, how: how || "xhr" });
    flush();
  }

  function pong() {
    T.pongs++;
    pendingPongs++;
    flush();
  }

  function flush() {
    if (T.upgraded) {
      for (; pendingPongs > 0; pendingPongs--) T.ws.send("3");
      while (queue.length) T.ws.send(queue.shift().data);
      return;
    }
    if (posting || T.closing) return; // after `1`, nothing more is sent (late pongs included)
    if (T.probed) {
      // Like engine.io-client: no POST in flight, then `5`; what is queued goes over the socket.
      T.ws.send("5");
      T.upgraded = true;
      flush();
      return;
    }
    if (!queue.length && !pendingPongs) return;
    var packets = [];
    var how = "xhr";
    for (; pendingPongs > 0; pendingPongs--) packets.push("3");
    if (queue.length) {
      how = queue[0].how;
      if (how === "xhr") {
        while (queue.length && queue[0].how === "xhr") packets.push(queue.shift().data);
      } else {
        packets.push(queue.shift().data);
      }
    }
    for (var i = 0; i < packets.length; i++) if (packets[i] === "1") T.closing = true;
    posting = true;
    (how === "form" ? postForm : postXhr)(packets.join(RS), function (ok, detail) {
      posting = false;
      T.posts.push({ how: how, packets: packets.length, ok: ok, detail: detail });
      if (!ok) T.errors.push("POST (" + how + ") failed: " + detail);
      flush();
    });
  }

  function postXhr(payload, done) {
    var xhr = new XMLHttpRequest();
    xhr.open("POST", url(), true);
    xhr.setRequestHeader("Content-Type", "text/plain;charset=UTF-8");
    xhr.onload = function () {
      done(xhr.status === 200 && xhr.responseText === "ok", xhr.status + " " + xhr.responseText);
    };
    xhr.onerror = function () {
      done(false, "network error");
    };
    xhr.send(payload);
  }

  // The hidden-form POST of engine.io's JSONP transport: a form targeting a hidden iframe, the
  // payload in a textarea named `d`. Browsers turn a textarea's LF into CRLF, so a real newline
  // is sent as `\n` (two characters) and a literal backslash-n as `\\n`.
  var formSeq = 0;
  function postForm(payload, done) {
    var name = "halley_post_" + formSeq++;
    var frame = document.createElement("iframe");
    frame.name = name;
    frame.style.display = "none";
    document.body.appendChild(frame);
    var form = document.createElement("form");
    form.method = "POST";
    form.action = url();
    form.target = name;
    form.setAttribute("accept-charset", "utf-8");
    form.style.display = "none";
    var area = document.createElement("textarea");
    area.name = "d";
    area.value = payload.replace(/\\n/g, "\\\n").replace(/\n/g, "\\n");
    form.appendChild(area);
    document.body.appendChild(form);
    frame.onload = function () {
      var doc = frame.contentDocument;
      if (!doc || doc.URL === "about:blank") return;
      var text = doc.body ? doc.body.textContent : "";
      remove(form);
      remove(frame);
      done(text === "ok", text);
    };
    form.submit();
  }

  // --- upgrade -------------------------------------------------------------------------------
  function upgrade() {
    var ws = new WebSocket("ws://" + location.host + "/socket.io/?EIO=4&transport=websocket&sid=" + T.sid);
    T.ws = ws;
    ws.onopen = function () {
      ws.send("2probe");
    };
    ws.onmessage = function (e) {
      var p = String(e.data);
      T.wsPackets.push(p);
      if (p === "3probe" && !T.probed) {
        T.probed = true;
        flush();
        return;
      }
      try {
        handle(p, true);
      } catch (err) {
        T.errors.push("ws packet: " + err);
      }
    };
    ws.onerror = function () {
      T.errors.push("websocket error");
    };
    ws.onclose = function (e) {
      T.wsClosed = { code: e.code, reason: e.reason };
    };
  }

  T.start = openReceiver;
  T.send = send;
  T.upgrade = upgrade;
  // A short summary for failure messages.
  T.describe = function () {
    var cut = function (s) {
      return s.length > 120 ? s.slice(0, 120) + "...(" + s.length + " chars)" : s;
    };
    var badPosts = [];
    for (var i = 0; i < T.posts.length; i++) if (!T.posts[i].ok) badPosts.push(T.posts[i]);
    return JSON.stringify(
      {
        kind: T.kind,
        sid: T.sid,
        opens: T.opens.length,
        lastOpen: T.opens[T.opens.length - 1],
        ends: T.ends,
        failures: T.failures,
        pings: T.pings,
        pongs: T.pongs,
        posts: T.posts.length,
        badPosts: badPosts,
        errors: T.errors,
        packets: T.packets.length,
        lastPackets: T.packets.slice(-12).map(cut),
        wsPackets: T.wsPackets.slice(-12).map(cut),
        upgraded: T.upgraded,
        wsClosed: T.wsClosed
      },
      null,
      1
    );
  };
}

const PAGE_HTML =
  '<!DOCTYPE html><html><head><meta charset="utf-8"><title>Halley transports</title></head><body>' +
  // `<\/` keeps any `</script>` in the source (comments included) from closing the element.
  `<script>(${halleyTransportPage.toString().replace(/<\//g, "<\\/")})();</script></body></html>`;

// ---------------------------------------------------------------------------------------------

let server;
let browser;

before(async () => {
  // pingInterval stays 300 ms; a pong rides on the next form POST, which waits for the one in
  // flight (an iframe load, often over 200 ms on a loaded machine): 2 s to answer.
  server = await startServer(SERVER_BINARY, { PING_TIMEOUT_MS: "2000" });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  if (!server) return;
  const { code, signal } = await server.stop();
  assert.equal(signal, null, `server killed by ${signal}\n${server.logs()}`);
  assert.equal(code, 0, `server exit code\n${server.logs()}`);
});

/** Opens the transport page for `kind` and returns helpers bound to it. */
async function transportPage(kind) {
  const opened = await openPage(browser.context, `${server.url}/test/transport.html?kind=${kind}`, {
    "/test/transport.html": { body: PAGE_HTML, contentType: "text/html; charset=utf-8" },
  });
  const { page } = opened;
  const describeState = async () =>
    `page state: ${await page.evaluate(() => window.T.describe())}\npage problems: ${JSON.stringify(opened.problems())}\n` +
    `console:\n${opened.console()}`;
  const wait = (predicate, arg, what, ms) => until(page, predicate, arg, what, { ms, describeState });
  const state = () => page.evaluate(() => window.T);
  const send = (packet, how) => page.evaluate(([p, h]) => window.T.send(p, h), [packet, how]);
  /** Sends `packet` and waits for a packet received over HTTP (after the send) satisfying `match`. */
  const roundTrip = async (packet, how, match, what) => {
    const from = await page.evaluate(() => window.T.packets.length);
    await send(packet, how);
    await wait(
      ([from, source]) => window.T.packets.slice(from).some(new Function("p", `return (${source})(p)`)),
      [from, match.toString()],
      what,
    );
    return page.evaluate(
      ([from, source]) => window.T.packets.slice(from).filter(new Function("p", `return (${source})(p)`)),
      [from, match.toString()],
    );
  };
  return { ...opened, describeState, wait, state, send, roundTrip };
}

/** Asserts the page saw no dialog, error or failed POST; `context` goes into the message. */
async function assertClean(p, context) {
  const problems = p.problems();
  const t = await p.state();
  assert.deepEqual(problems, [], `${context}: page problems\n${await p.describeState()}`);
  assert.deepEqual(t.errors, [], `${context}: page errors\n${await p.describeState()}`);
  assert.deepEqual(t.posts.filter((x) => !x.ok), [], `${context}: failed POSTs`);
}

const STREAMING = new Set(["iframe", "htmlfile", "sse", "xhr-streaming"]);

async function transportScenario(kind, testContext) {
  const p = await transportPage(kind);
  const streaming = STREAMING.has(kind);
  // The hidden-form POST is what JSONP clients (and old IE's forever-frame clients) send.
  const formKinds = new Set(["jsonp", "iframe", "htmlfile"]);
  const how = formKinds.has(kind) ? "form" : "xhr";
  try {
    // Handshake: the first packet delivered is the open packet.
    await p.page.evaluate(() => window.T.start());
    await p.wait(() => window.T.sid !== null, null, "the open packet");
    let t = await p.state();
    assert.match(t.packets[0], /^0\{"sid":"[\w-]+",/, "first packet is the open packet");
    assert.equal(t.open.pingInterval, 300);
    assert.equal(t.open.pingTimeout, 2000);
    assert.deepEqual(t.open.upgrades, ["websocket"]);
    assert.ok(!t.opens[0].includes("sid="), "the handshake GET carries no sid");

    // Socket.IO CONNECT to `/`: CONNECT with the sid, then the `auth` event (empty auth).
    await p.send("40");
    await p.wait(() => window.T.packets.includes('42["auth",{}]'), null, '42["auth",{}]');
    t = await p.state();
    const sio = t.packets.filter((x) => x.startsWith("4"));
    assert.match(sio[0], /^40\{"sid":"[\w-]+"\}$/, "CONNECT answer");
    assert.equal(sio[1], '42["auth",{}]');

    // Heartbeats: the page answers two pings (300 ms apart, 2 s to answer) and lives on.
    await p.wait(() => window.T.pongs >= 2, null, "two pings answered", 5000);

    // The hostile string comes back intact, and nothing in it ran (no dialog).
    const [back] = await p.roundTrip(
      "42" + JSON.stringify(["message", HOSTILE]),
      how,
      (x) => x.startsWith('42["message-back"'),
      "message-back of the hostile string",
    );
    const decoded = JSON.parse(back.slice(2));
    assert.deepEqual(decoded, ["message-back", HOSTILE], `hostile string mangled: ${JSON.stringify(back)}`);
    assert.equal(decoded[1], HOSTILE);

    // engine.io's form newline escaping, over the same path (text POST for the others).
    const [nl] = await p.roundTrip(
      "42" + JSON.stringify(["message", NEWLINES]),
      how,
      (x) => x.startsWith('42["message-back"'),
      "message-back of the newline string",
    );
    assert.deepEqual(JSON.parse(nl.slice(2)), ["message-back", NEWLINES]);

    // An ack with the same arguments, in an XHR text POST.
    const [ack] = await p.roundTrip(
      '421["message-with-ack",{"a":1}]',
      "xhr",
      (x) => x.startsWith("43"),
      "ack 431",
    );
    assert.equal(ack, '431[{"a":1}]');

    // Bulk: 40 echoes of 4 KiB, one POST each. Streams pass the 128 KiB limit and end; the page
    // reopens them with its sid, and every echo arrives exactly once, in order.
    const opensBefore = (await p.state()).opens.length;
    await p.page.evaluate(
      ([n, filler]) => {
        for (let i = 0; i < n; i++) window.T.send("42" + JSON.stringify(["message", `bulk:${i}:${filler}`]), "single");
      },
      [BULK_COUNT, BULK_FILLER],
    );
    await p.wait(
      ([prefix, n]) => window.T.packets.filter((x) => x.startsWith(prefix)).length >= n,
      [BULK_PREFIX, BULK_COUNT],
      `${BULK_COUNT} bulk echoes`,
      20_000,
    );
    // A barrier: anything repeated by a rollover would arrive before this ack.
    await p.roundTrip('429["message-with-ack","barrier"]', "xhr", (x) => x.startsWith("439"), "barrier ack");
    t = await p.state();
    const bulk = t.packets.filter((x) => x.startsWith(BULK_PREFIX)).map((x) => JSON.parse(x.slice(2))[1]);
    assert.deepEqual(
      bulk.map((s) => s.slice(0, s.indexOf(":", 5))),
      Array.from({ length: BULK_COUNT }, (_, i) => `bulk:${i}`),
      "every echo exactly once, in order",
    );
    for (const [i, s] of bulk.entries()) assert.equal(s, `bulk:${i}:${BULK_FILLER}`, `echo ${i} intact`);
    assert.ok(t.opens.slice(1).every((u) => u.includes(`&sid=${t.sid}&`)), "every later GET carries the sid");
    if (streaming) {
      assert.ok(t.opens.length > opensBefore, `the stream rolled over (${t.opens.length} opens)`);
      assert.ok(t.ends >= 1, "a stream ended");
    }
    assert.deepEqual(t.failures, [], "no receiving GET failed");
    await assertClean(p, kind);
    testContext.diagnostic(
      `${t.opens.length} receiving GETs (${t.ends} ended), ${t.posts.length} POSTs ` +
        `(${t.posts.filter((x) => x.how === "form").length} form), ${t.pings} pings answered`,
    );

    // Close: POST `1`. A stream ends with a noop `6`; the next GET is refused.
    if (streaming) {
      // A ping delivered on the current stream proves it is attached now.
      await p.wait(() => window.T.current.pings >= 1, null, "a ping on the current stream", 5000);
    }
    const before = await p.state();
    await p.send("1");
    await p.wait(() => window.T.failures.length >= 1, null, "the GET after close to fail");
    t = await p.state();
    const afterClose = t.packets.slice(before.packets.length);
    if (streaming) {
      assert.equal(afterClose.at(-1), "6", `the stream ends with a noop: ${JSON.stringify(afterClose)}`);
      assert.equal(t.ends, before.ends + 1, "the stream ended");
      assert.equal(t.opens.length, before.opens.length + 1, "one reopen, refused");
    } else {
      // A poll parked when the close arrives answers a noop; one sent after it is refused. Pings
      // sent just before the close may come first.
      const noop = afterClose.indexOf("6");
      assert.ok(
        afterClose.every((x) => x === "2" || x === "6") && (noop === -1 || noop === afterClose.length - 1),
        `polls after close: ${JSON.stringify(afterClose)}`,
      );
    }
    assert.equal(t.failures.length, 1);
    const expectedFailure = {
      polling: /^400 \{"code":1,"message":"Session ID unknown"\}$/,
      jsonp: /^script error$/,
      iframe: /^application\/json .*Session ID unknown/,
      htmlfile: /^application\/json .*Session ID unknown/,
      sse: /^EventSource refused/,
      "xhr-streaming": /^400 \{"code":1,"message":"Session ID unknown"\}$/,
    }[kind];
    assert.match(t.failures[0], expectedFailure);
    // The same request, read with fetch: the exact refusal.
    const refused = await p.page.evaluate(async (u) => {
      const res = await fetch(u);
      return { status: res.status, type: res.headers.get("content-type"), body: await res.text() };
    }, t.opens.at(-1));
    assert.deepEqual(refused, {
      status: 400,
      type: "application/json",
      body: '{"code":1,"message":"Session ID unknown"}',
    });
    await assertClean(p, kind);
  } finally {
    await p.page.close();
  }
}

const TEST_TIMEOUT = 60_000;

test("polling (XHR) in Chromium", { timeout: TEST_TIMEOUT }, (t) => transportScenario("polling", t));
test("jsonp (script GETs, hidden-form POSTs) in Chromium", { timeout: TEST_TIMEOUT }, (t) => transportScenario("jsonp", t));
test("iframe forever-frame in Chromium", { timeout: TEST_TIMEOUT }, (t) => transportScenario("iframe", t));
test("htmlfile forever-frame (iframe stand-in) in Chromium", { timeout: TEST_TIMEOUT }, (t) => transportScenario("htmlfile", t),
);
test("sse (EventSource) in Chromium", { timeout: TEST_TIMEOUT }, (t) => transportScenario("sse", t));
test("xhr-streaming in Chromium", { timeout: TEST_TIMEOUT }, (t) => transportScenario("xhr-streaming", t));

test("sse upgrades to websocket in Chromium", { timeout: TEST_TIMEOUT }, async () => {
  const p = await transportPage("sse");
  try {
    await p.page.evaluate(() => window.T.start());
    await p.wait(() => window.T.sid !== null, null, "the open packet");
    await p.send("40");
    await p.wait(() => window.T.packets.includes('42["auth",{}]'), null, '42["auth",{}]');

    // Probe: 2probe → 3probe, then 5; the SSE stream ends after a noop and is not reopened.
    const before = await p.state();
    await p.page.evaluate(() => window.T.upgrade());
    await p.wait(() => window.T.upgraded, null, "3probe and the upgrade");
    await p.wait(() => window.T.ends >= 1, null, "the SSE stream to end after the upgrade");
    let t = await p.state();
    assert.equal(t.wsPackets[0], "3probe");
    assert.equal(t.packets.at(-1), "6", `the SSE stream ends with a noop: ${JSON.stringify(t.packets.slice(-3))}`);
    assert.equal(t.ends, 1);
    assert.equal(t.opens.length, before.opens.length, "no reopen after the upgrade");
    assert.deepEqual(t.failures, []);

    // Messages now flow over the WebSocket, pings too.
    const wsFrom = t.wsPackets.length;
    await p.send("42" + JSON.stringify(["message", HOSTILE]));
    await p.send('421["message-with-ack",{"a":1}]');
    await p.wait(
      (from) => window.T.wsPackets.slice(from).some((x) => x.startsWith("43")),
      wsFrom,
      "the ack over the websocket",
    );
    const pingsBefore = (await p.state()).pings;
    await p.wait((n) => window.T.pings >= n + 2, pingsBefore, "two pings over the websocket", 5000);
    t = await p.state();
    const overWs = t.wsPackets.slice(wsFrom).filter((x) => x !== "2");
    assert.deepEqual(JSON.parse(overWs[0].slice(2)), ["message-back", HOSTILE]);
    assert.equal(overWs[1], '431[{"a":1}]');
    assert.ok(
      t.packets.slice(before.packets.length).every((x) => x === "2" || x === "6"),
      `nothing but pings and the final noop over SSE after the probe: ${JSON.stringify(t.packets.slice(before.packets.length))}`,
    );
    assert.equal(t.wsClosed, null, "the websocket is still open");
    await assertClean(p, "upgrade");

    // Close over the WebSocket.
    await p.send("1");
    await p.wait(() => window.T.wsClosed !== null, null, "the websocket to close");
  } finally {
    await p.page.close();
  }
});
