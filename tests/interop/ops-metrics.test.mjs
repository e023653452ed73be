// The `halley` binary's `/metrics` (OpenMetrics text) against real traffic: Halley's browser
// client in headless Chromium over each transport alone (`transports: [name]`, `upgrade: false`;
// htmlfile through the `ActiveXObject` stand-in), the upgrade from every HTTP transport to
// WebSocket, and closes by reason. Each test scrapes `/metrics` before, acts, then polls
// `/metrics` (with a deadline) until the counters it expects have moved, and checks that the
// other transports' counters stayed where they were.
//
// The text is parsed by a small OpenMetrics parser below (families, TYPE/HELP/UNIT, label
// escapes, `# EOF`, sample names by family type), not matched by regular expressions.
//
// Server: `halley --demo false --ping-interval 300 --ping-timeout 2000` (through its
// environment variables), so heartbeats, and so RTT samples, come quickly. Build it first:
// cargo build --release --bins. Run: node --test ops-metrics.test.mjs

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";

import { startServer } from "./helpers.mjs";
import { until } from "./browser.mjs";
import { HTMLFILE_STANDIN, launchBrowser, openClientPage } from "./client-harness.mjs";

const HALLEY_BIN =
  process.env.HALLEY_BIN ||
  path.resolve(path.dirname(new URL(import.meta.url).pathname), "../../target/release/halley");

const PING_INTERVAL = 300;
const PING_TIMEOUT = 2000;

/** The client's transports; `jsonp` is `polling` on the server (`polling&j=N`). */
const TRANSPORTS = ["websocket", "polling", "jsonp", "xhr-streaming", "sse", "iframe", "htmlfile"];
const serverTransport = (name) => (name === "jsonp" ? "polling" : name);
/** The server's `transport` label values. */
const SERVER_TRANSPORTS = ["websocket", "htmlfile", "iframe", "sse", "xhr-streaming", "polling"];
const CLOSE_REASONS = [
  "client close",
  "ping timeout",
  "protocol error",
  "transport close",
  "server close",
  "server shutting down",
  "outbox full",
];
/** Per-transport counters that only this test's one session may move. */
const TRAFFIC = [
  "halley_handshakes_total",
  "halley_packets_in_total",
  "halley_bytes_in_total",
  "halley_packets_out_total",
  "halley_bytes_out_total",
  "halley_ping_rtt_seconds_count",
];

// --- A small OpenMetrics text parser ------------------------------------------------------

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*/;
/** Sample name suffixes each metric type allows (OpenMetrics 1.0, "Metric types"). */
const SUFFIXES = {
  counter: ["_total", "_created"],
  gauge: [""],
  histogram: ["_bucket", "_count", "_sum", "_created"],
  gaugehistogram: ["_bucket", "_gcount", "_gsum"],
  summary: ["", "_count", "_sum", "_created"],
  info: ["_info"],
  stateset: [""],
  unknown: [""],
};

function parseNumber(token, where) {
  if (token === "+Inf" || token === "Inf") return Infinity;
  if (token === "-Inf") return -Infinity;
  if (token === "NaN") return NaN;
  if (!/^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(token)) throw new Error(`bad number '${token}' (${where})`);
  return Number(token);
}

/** `{a="1",b="x\"y"}` at the start of `text`: returns `[labels, rest]`. */
function parseLabels(text, where) {
  const labels = {};
  let rest = text.slice(1);
  if (rest.startsWith("}")) return [labels, rest.slice(1)];
  for (;;) {
    const name = LABEL_NAME.exec(rest)?.[0];
    if (!name || rest[name.length] !== "=" || rest[name.length + 1] !== '"') throw new Error(`bad label (${where})`);
    rest = rest.slice(name.length + 2);
    let value = "";
    for (;;) {
      const c = rest[0];
      if (c === undefined) throw new Error(`unterminated label value (${where})`);
      rest = rest.slice(1);
      if (c === '"') break;
      if (c === "\\") {
        const e = rest[0];
        rest = rest.slice(1);
        if (e === "n") value += "\n";
        else if (e === '"' || e === "\\") value += e;
        else throw new Error(`bad escape \\${e} (${where})`);
      } else value += c;
    }
    if (name in labels) throw new Error(`label ${name} twice (${where})`);
    labels[name] = value;
    if (rest[0] === ",") rest = rest.slice(1);
    else if (rest[0] === "}") return [labels, rest.slice(1)];
    else throw new Error(`expected , or } after label ${name} (${where})`);
  }
}

function sameLabels(a, b) {
  const ka = Object.keys(a);
  return ka.length === Object.keys(b).length && ka.every((k) => a[k] === b[k]);
}

/** One scrape: families by name, and lookups that fail loudly on a missing series. */
class Scrape {
  constructor(families) {
    this.families = families;
    this.samples = [...families.values()].flatMap((f) => f.samples);
  }

  /** The value of sample `name` whose labels are exactly `labels`; throws if there is none. */
  value(name, labels = {}) {
    const found = this.samples.filter((s) => s.name === name && sameLabels(s.labels, labels));
    if (found.length !== 1) throw new Error(`${found.length} series ${name}${JSON.stringify(labels)} in /metrics`);
    return found[0].value;
  }

  /** Every sample of `name`, as `[labels, value]`. */
  series(name) {
    return this.samples.filter((s) => s.name === name).map((s) => [s.labels, s.value]);
  }

  type(family) {
    return this.families.get(family)?.type;
  }
}

/** Parses an OpenMetrics text exposition (strictly enough to catch a malformed one). */
export function parseOpenMetrics(text) {
  if (!text.endsWith("# EOF\n")) throw new Error("OpenMetrics text must end with '# EOF\\n'");
  const lines = text.slice(0, -"# EOF\n".length).split("\n");
  if (lines.at(-1) === "") lines.pop();
  const families = new Map();
  let current = null;
  const family = (name, where) => {
    let f = families.get(name);
    if (!f) {
      f = { name, type: "unknown", help: null, unit: null, samples: [] };
      families.set(name, f);
      current = f;
    } else if (f !== current) {
      throw new Error(`family ${name} is not contiguous (${where})`);
    }
    return f;
  };
  lines.forEach((line, i) => {
    const where = `line ${i + 1}: ${JSON.stringify(line)}`;
    if (line.startsWith("#")) {
      const m = /^# (TYPE|HELP|UNIT) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$/.exec(line);
      if (!m) throw new Error(`unknown comment (${where})`);
      const f = family(m[2], where);
      if (f.samples.length > 0) throw new Error(`metadata after samples (${where})`);
      if (m[1] === "TYPE") {
        if (!(m[3] in SUFFIXES)) throw new Error(`unknown type (${where})`);
        f.type = m[3];
      } else if (m[1] === "HELP") f.help = m[3];
      else f.unit = m[3];
      return;
    }
    const name = METRIC_NAME.exec(line)?.[0];
    if (!name) throw new Error(`no metric name (${where})`);
    let rest = line.slice(name.length);
    let labels = {};
    if (rest.startsWith("{")) [labels, rest] = parseLabels(rest, where);
    // ` value [timestamp] [# exemplar]`
    const [sample, exemplar] = rest.split(" # ");
    void exemplar;
    const tokens = sample.split(" ");
    if (tokens[0] !== "" || tokens.length < 2 || tokens.length > 3) throw new Error(`bad sample (${where})`);
    const value = parseNumber(tokens[1], where);
    if (!current || !SUFFIXES[current.type].some((s) => current.name + s === name)) {
      throw new Error(`sample ${name} outside its family (${where})`);
    }
    if (current.samples.some((s) => s.name === name && sameLabels(s.labels, labels))) {
      throw new Error(`duplicate series (${where})`);
    }
    current.samples.push({ name, labels, value });
  });
  return new Scrape(families);
}

// --- The server and scraping ----------------------------------------------------------------

let server;
let browser;

before(async () => {
  server = await startServer(HALLEY_BIN, {
    HALLEY_LISTEN: "127.0.0.1:0",
    HALLEY_DEMO: "false",
    HALLEY_PING_INTERVAL: String(PING_INTERVAL),
    HALLEY_PING_TIMEOUT: String(PING_TIMEOUT),
  });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  const exit = await server?.stop();
  assert.equal(exit?.code, 0, "server exit code");
});

async function scrape() {
  const res = await fetch(`${server.admin}/metrics`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type"), /^application\/openmetrics-text; version=1\.0\.0/);
  const m = parseOpenMetrics(await res.text());
  checkShape(m);
  return m;
}

/** What every scrape must look like, whatever the traffic. */
function checkShape(m) {
  assert.equal(m.type("halley_sessions"), "gauge");
  for (const f of ["halley_handshakes", "halley_upgrades", "halley_packets_in", "halley_packets_out",
    "halley_bytes_in", "halley_bytes_out", "halley_session_closes", "halley_outbox_dropped"]) {
    assert.equal(m.type(f), "counter", f);
  }
  assert.equal(m.type("halley_ping_rtt_seconds"), "histogram");
  for (const transport of SERVER_TRANSPORTS) assert.ok(m.series("halley_ping_rtt_seconds_count").some(([l]) => l.transport === transport));
  // Every histogram: per series, buckets rising in `le` and cumulative, +Inf last and = _count.
  for (const f of [...m.families.values()].filter((f) => f.type === "histogram")) {
    const key = (labels) => JSON.stringify(Object.entries(labels).filter(([k]) => k !== "le").sort());
    const bySeries = new Map();
    for (const s of f.samples.filter((s) => s.name === `${f.name}_bucket`)) {
      const k = key(s.labels);
      if (!bySeries.has(k)) bySeries.set(k, []);
      bySeries.get(k).push([s.labels.le === "+Inf" ? Infinity : Number(s.labels.le), s.value]);
    }
    assert.ok(bySeries.size > 0, `${f.name} has buckets`);
    for (const [k, buckets] of bySeries) {
      const what = `${f.name}${k}`;
      for (let i = 1; i < buckets.length; i++) {
        assert.ok(buckets[i][0] > buckets[i - 1][0], `${what}: le rising`);
        assert.ok(buckets[i][1] >= buckets[i - 1][1], `${what}: buckets cumulative ${JSON.stringify(buckets)}`);
      }
      assert.equal(buckets.at(-1)[0], Infinity, `${what}: +Inf bucket last`);
      const count = f.samples.find((s) => s.name === `${f.name}_count` && key(s.labels) === k);
      assert.equal(buckets.at(-1)[1], count?.value, `${what}: +Inf bucket = _count`);
    }
  }
}

/**
 * Runs `check` (assertions on a fresh scrape) until it passes; after `ms`, fails with its last
 * assertion error. Returns the scrape that passed.
 */
async function eventually(what, check, ms = 10_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const m = await scrape();
    try {
      check(m);
      return m;
    } catch (error) {
      if (Date.now() >= deadline) {
        error.message = `${what}: not within ${ms} ms: ${error.message}`;
        throw error;
      }
    }
    await sleep(50);
  }
}

const delta = (now, before, name, labels) => now.value(name, labels) - before.value(name, labels);

/** The other server transports' counters did not move (nothing else is connected). */
function othersUnmoved(m, before, except) {
  for (const transport of SERVER_TRANSPORTS.filter((t) => !except.includes(t))) {
    assert.equal(m.value("halley_sessions", { transport }), 0, `sessions of ${transport}`);
    for (const name of TRAFFIC) assert.equal(delta(m, before, name, { transport }), 0, `${name} of ${transport}`);
  }
}

function closesSince(m, before) {
  const moved = {};
  for (const reason of CLOSE_REASONS) {
    const d = delta(m, before, "halley_session_closes_total", { reason });
    if (d) moved[reason] = d;
  }
  return moved;
}

async function openClient(name) {
  return openClientPage(browser.context, server.url, { init: name === "htmlfile" ? [HTMLFILE_STANDIN] : [] });
}

async function closePage(client) {
  assert.deepEqual(client.problems(), []);
  await client.page.close();
}

/**
 * The reason a clean `disconnect()` is counted under. Over HTTP the client posts a close packet;
 * over WebSocket it closes the WebSocket without one (as engine.io-client does), so the server
 * sees the connection end.
 */
const CLEAN_CLOSE = Object.fromEntries(
  SERVER_TRANSPORTS.map((t) => [t, t === "websocket" ? "transport close" : "client close"]),
);

const NOT_ALLOWED = [{ ok: false, error: "not allowed", rooms: [] }];

// --- Tests ----------------------------------------------------------------------------------

test("a scrape before any traffic: every series present, all zero", async () => {
  const m = await scrape();
  for (const transport of SERVER_TRANSPORTS) {
    assert.equal(m.value("halley_sessions", { transport }), 0);
    for (const name of TRAFFIC) assert.equal(m.value(name, { transport }), 0, `${name} of ${transport}`);
    if (transport !== "websocket") {
      assert.equal(m.value("halley_upgrades_total", { from: transport, to: "websocket" }), 0);
    }
  }
  for (const reason of CLOSE_REASONS) assert.equal(m.value("halley_session_closes_total", { reason }), 0);
  assert.equal(m.value("halley_outbox_dropped_total"), 0);
});

for (const name of TRANSPORTS) {
  const transport = serverTransport(name);
  test(`${name} alone: sessions, handshakes, packets, bytes and ping RTT move under transport="${transport}", then the close`, async () => {
    const before = await scrape();
    const client = await openClient(name);
    const { page } = client;
    await page.evaluate((name) => T.open("s", "/", { transports: [name], upgrade: false, reconnection: false }), name);
    await client.wait("s:connect");
    assert.equal(await page.evaluate(() => T.sockets.s.io.engine.transport.name), name);
    assert.deepEqual(await page.evaluate(() => T.ack("s", ["subscribe", "metrics-room"])), NOT_ALLOWED);
    const pingsBefore = before.value("halley_ping_rtt_seconds_count", { transport });

    const open = await eventually(`${name} counted`, (m) => {
      const labels = { transport };
      assert.equal(m.value("halley_sessions", labels), 1, "sessions");
      assert.equal(delta(m, before, "halley_handshakes_total", labels), 1, "handshakes");
      // In: the namespace CONNECT and the `subscribe` EVENT at least (pongs come on top).
      assert.ok(delta(m, before, "halley_packets_in_total", labels) >= 2, "packets in");
      assert.ok(delta(m, before, "halley_bytes_in_total", labels) >= `40`.length + `421["subscribe","metrics-room"]`.length, "bytes in");
      // Out: the Engine.IO open, the namespace CONNECT and the ack at least.
      const packetsOut = delta(m, before, "halley_packets_out_total", labels);
      assert.ok(packetsOut >= 3, `packets out (${packetsOut})`);
      assert.ok(delta(m, before, "halley_bytes_out_total", labels) >= JSON.stringify(NOT_ALLOWED).length, "bytes out");
      // A heartbeat answered: one RTT sample at least, with a positive sum.
      assert.ok(m.value("halley_ping_rtt_seconds_count", labels) > pingsBefore, "ping RTT samples");
      assert.ok(delta(m, before, "halley_ping_rtt_seconds_sum", labels) > 0, "ping RTT sum");
      othersUnmoved(m, before, [transport]);
    });
    // More heartbeats, more samples, a pingInterval (300 ms) after each pong: well before the
    // pingTimeout (2 s) would have passed.
    const pingsOpen = open.value("halley_ping_rtt_seconds_count", { transport });
    await eventually(
      `${name} RTT grows`,
      // With a message: without one, assert.ok reads and parses this file to make one (a
      // second or more, past the deadline).
      (m) => assert.ok(m.value("halley_ping_rtt_seconds_count", { transport }) > pingsOpen, "RTT samples"),
      PING_TIMEOUT - 500,
    );

    await page.evaluate(() => T.sockets.s.disconnect());
    const closed = await eventually(`${name} closed`, (m) => {
      assert.equal(m.value("halley_sessions", { transport }), 0, "sessions");
      assert.deepEqual(closesSince(m, before), { [CLEAN_CLOSE[transport]]: 1 }, "closes by reason");
    });
    othersUnmoved(closed, before, [transport]);
    await closePage(client);
  });
}

for (const name of ["polling", "jsonp", "xhr-streaming", "sse", "iframe", "htmlfile"]) {
  const from = serverTransport(name);
  test(`${name} → websocket: halley_upgrades_total{from="${from}",to="websocket"} moves, the session moves with it`, async () => {
    const before = await scrape();
    const client = await openClient(name);
    const { page } = client;
    await page.evaluate((name) => T.open("s", "/", { transports: [name, "websocket"], reconnection: false }), name);
    await until(page, () => T.all("s:transport").some((s) => s.type === "upgrade"), undefined, `the upgrade from ${name}`, {
      ms: 10_000,
      describeState: client.state,
    });
    assert.deepEqual(await page.evaluate(() => T.all("s:transport")), [
      { type: "try", name },
      { type: "open", name },
      { type: "upgrade", from: name, to: "websocket" },
    ]);
    const upgraded = await eventually(`${name} upgrade counted`, (m) => {
      assert.equal(delta(m, before, "halley_upgrades_total", { from, to: "websocket" }), 1, "upgrades");
      assert.equal(m.value("halley_sessions", { transport: from }), 0, `sessions of ${from}`);
      assert.equal(m.value("halley_sessions", { transport: "websocket" }), 1, "sessions of websocket");
      assert.equal(delta(m, before, "halley_handshakes_total", { transport: from }), 1, `handshakes of ${from}`);
      // The probe is no handshake.
      assert.equal(delta(m, before, "halley_handshakes_total", { transport: "websocket" }), 0, "handshakes of websocket");
      for (const other of SERVER_TRANSPORTS.filter((t) => t !== from)) {
        const labels = { from: other, to: "websocket" };
        if (other !== "websocket") assert.equal(delta(m, before, "halley_upgrades_total", labels), 0, `upgrades from ${other}`);
      }
    });
    // Traffic after the upgrade is WebSocket traffic.
    assert.deepEqual(await page.evaluate(() => T.ack("s", ["subscribe", "after-upgrade"])), NOT_ALLOWED);
    await eventually(`${name} traffic after the upgrade`, (m) => {
      for (const n of ["halley_packets_in_total", "halley_packets_out_total", "halley_bytes_out_total"]) {
        assert.ok(delta(m, upgraded, n, { transport: "websocket" }) > 0, n);
      }
    });

    await page.evaluate(() => T.sockets.s.disconnect());
    await eventually(`${name} upgraded session closed`, (m) => {
      for (const transport of SERVER_TRANSPORTS) assert.equal(m.value("halley_sessions", { transport }), 0, `sessions of ${transport}`);
      assert.deepEqual(closesSince(m, before), { [CLEAN_CLOSE.websocket]: 1 }, "closes by reason");
    });
    await closePage(client);
  });
}

test("closed tabs: every session goes, each close counted by its reason", async (t) => {
  const before = await scrape();
  const clients = [];
  // Chromium allows 6 HTTP/1.1 connections per host and profile; the six HTTP transports each
  // hold one open, so half the pages go to a second browser and no POST queues behind them.
  const second = await launchBrowser();
  t.after(() => second.close());
  for (const [i, name] of TRANSPORTS.entries()) {
    const context = i % 2 ? second.context : browser.context;
    const client = await openClientPage(context, server.url, { init: name === "htmlfile" ? [HTMLFILE_STANDIN] : [] });
    await client.page.evaluate((name) => T.open("s", "/", { transports: [name], upgrade: false, reconnection: false }), name);
    await client.wait("s:connect");
    clients.push(client);
  }
  await eventually("every session open", (m) => {
    for (const transport of SERVER_TRANSPORTS) {
      assert.equal(m.value("halley_sessions", { transport }), transport === "polling" ? 2 : 1, `sessions of ${transport}`);
    }
  });
  for (const client of clients) await closePage(client);
  // A closed WebSocket or stream is seen at once; a long-poll between two requests only by its
  // missed pong (pingInterval + pingTimeout).
  const closed = await eventually(
    "every session closed",
    (m) => {
      for (const transport of SERVER_TRANSPORTS) assert.equal(m.value("halley_sessions", { transport }), 0, `sessions of ${transport}`);
      const moved = closesSince(m, before);
      assert.equal(Object.values(moved).reduce((a, b) => a + b, 0), TRANSPORTS.length, JSON.stringify(moved));
    },
    PING_INTERVAL + PING_TIMEOUT + 10_000,
  );
  const reasons = closesSince(closed, before);
  console.log(`closes after closing the tabs: ${JSON.stringify(reasons)}`);
  // The client closes its connection when the page goes (pagehide): a close packet, or the
  // WebSocket's close. HTTP sessions are not closed by a request going away (a stream or poll
  // may be reopened), so one whose close packet did not make it ends by ping timeout.
  assert.ok(reasons["transport close"] >= 1, "the WebSocket's close");
  for (const reason of Object.keys(reasons)) {
    assert.ok(["transport close", "client close", "ping timeout"].includes(reason), reason);
  }
});

test("a stamped POST /publish lands in halley_publish_latency_seconds{source=\"http\"}", async () => {
  const before = await scrape();
  const labels = { source: "http" };
  for (const ago of [0, 30, 3000]) {
    const res = await fetch(`${server.admin}/publish`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ event: "news", data: "stamped", publishedAt: Date.now() - ago }),
    });
    assert.equal(res.status, 200, await res.text());
  }
  const m = await scrape(); // checkShape: buckets cumulative, +Inf = _count
  assert.equal(delta(m, before, "halley_publish_latency_seconds_count", labels), 3);
  assert.ok(delta(m, before, "halley_publish_latency_seconds_sum", labels) >= 3.03);
  const bucket = (le) => delta(m, before, "halley_publish_latency_seconds_bucket", { ...labels, le });
  assert.ok(bucket("0.025") >= 1 && bucket("0.025") <= 2, `le=0.025: ${bucket("0.025")}`);
  assert.equal(bucket("1.0"), 2, "the 3 s old one is above 1 s");
  assert.equal(bucket("5.0"), 3);
  assert.equal(bucket("+Inf"), 3);
  assert.equal(delta(m, before, "halley_publish_latency_seconds_count", { source: "amqp" }), 0);
});
