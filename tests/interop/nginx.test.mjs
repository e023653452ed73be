// One `halley` node behind a real nginx running fixtures/nginx.conf as shipped (placeholders
// filled in: one upstream, a free port). Everything goes through nginx, never straight to Halley:
//
// - Halley's own browser client (served /socket.io/socket.io.js, headless Debian Chromium),
//   forced onto each transport alone (htmlfile through the ActiveXObject stand-in): connects to
//   the demo namespace, gets its `ping` ack, and receives pushes from `POST /publish`. On the
//   streaming transports two pushes in a row must each arrive promptly on the one stream the
//   handshake opened, while that response is still open: what a buffering proxy breaks.
// - socket.io-client over WebSocket only, polling only, and polling upgraded to WebSocket:
//   connect, ack, a publish received (after the upgrade, over the WebSocket).
// - Stream rollover through nginx on sse and xhr-streaming: numbered pushes past the server's
//   128 KiB stream limit, so the stream ends and the client reopens it; every push arrives
//   exactly once, in order, on the same session.
//
// Needs nginx (`NGINX`, default /usr/sbin/nginx), Chromium (`CHROMIUM`) and the release binary
// (`HALLEY_BIN`, default target/release/halley; built here if missing).
// Run: cd tests/interop && node --test nginx.test.mjs

import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, writeFile, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";

import { io } from "socket.io-client";

import { freePort, startServer, waitForPort, withTimeout } from "./helpers.mjs";
import { HTMLFILE_STANDIN, launchBrowser, openClientPage } from "./client-harness.mjs";

const HERE = path.dirname(new URL(import.meta.url).pathname);
const ROOT = path.resolve(HERE, "../..");
const HALLEY_BIN = process.env.HALLEY_BIN || path.join(ROOT, "target/release/halley");
const NGINX = process.env.NGINX || "/usr/sbin/nginx";
// The template, as shipped (overridable only to check that the tests catch a broken config).
const NGINX_CONF = process.env.HALLEY_NGINX_CONF || path.join(ROOT, "fixtures/nginx.conf");

const TRANSPORTS = ["websocket", "polling", "jsonp", "sse", "xhr-streaming", "iframe", "htmlfile"];
const STREAMING = new Set(["sse", "xhr-streaming", "iframe", "htmlfile"]);
/** How long a push may take to cross nginx and reach the page. */
const PROMPT_MS = 2000;

let halley;
let nginx;
let nginxLog = "";
let dir;
let base;
let browser;



before(async () => {
  if (!process.env.HALLEY_BIN && !existsSync(HALLEY_BIN)) {
    execFileSync("cargo", ["build", "--release", "--bin", "halley"], { cwd: ROOT, stdio: "inherit" });
  }
  halley = await startServer(HALLEY_BIN, { HALLEY_LISTEN: "127.0.0.1:0" });
  dir = await mkdtemp(path.join(os.tmpdir(), "halley-nginx-"));
  const port = await freePort();
  const template = await readFile(NGINX_CONF, "utf8");
  assert.match(template, /@UPSTREAMS@/);
  assert.match(template, /@PORT@/);
  const conf = template
    .replaceAll("@UPSTREAMS@", `server ${new URL(halley.url).host};`)
    .replaceAll("@PORT@", String(port));
  await writeFile(path.join(dir, "nginx.conf"), conf);
  nginx = spawn(NGINX, ["-p", dir, "-c", path.join(dir, "nginx.conf"), "-g", "daemon off;"], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  nginx.stderr.setEncoding("utf8");
  nginx.stderr.on("data", (chunk) => {
    nginxLog = (nginxLog + chunk).slice(-16384);
  });
  await waitForPort(port, {
    what: "nginx",
    alive: () => {
      if (nginx.exitCode !== null) throw new Error(`nginx exited (code ${nginx.exitCode}):\n${nginxLog}`);
    },
  });
  base = `http://127.0.0.1:${port}`;
  browser = await launchBrowser();
});

after(async () => {
  try {
    await browser?.close();
  } finally {
    try {
      if (nginx && nginx.exitCode === null && nginx.signalCode === null) {
        const exited = new Promise((r) => nginx.once("exit", r));
        // Fast shutdown: a graceful one (SIGQUIT) would wait for any stream still open.
        nginx.kill("SIGTERM");
        await withTimeout(exited, 5000, "nginx exit").catch(() => {
          nginx.kill("SIGKILL");
          return exited;
        });
      }
      // Above Halley's default 10 s shutdown grace.
      await halley?.stop(15_000);
    } finally {
      if (dir) await rm(dir, { recursive: true, force: true });
    }
  }
});

/**
 * `POST /publish` on Halley's admin listener (which nginx does not proxy); asserts it reached
 * exactly `expect` sockets, which are connected through nginx.
 */
async function publish(body, expect = 1) {
  const res = await fetch(`${halley.admin}/publish`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  const text = await res.text();
  assert.equal(res.status, 200, `POST /publish on the admin listener: ${text}`);
  assert.deepEqual(JSON.parse(text), { delivered: expect }, "publish delivered to the one socket");
}

// nginx on the same host makes every request come from 127.0.0.1: what "loopback only" used to
// trust. Nothing administrative may be reachable through it, with or without a token.
describe("the admin API through nginx", () => {
  test("POST /publish and /sockets and GET /metrics are not served through nginx", async () => {
    for (const route of ["/publish", "/sockets"]) {
      const res = await fetch(`${base}${route}`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ event: "news", data: "forged", action: "disconnect" }),
      });
      assert.equal(res.status, 404, `POST ${route} through nginx: ${await res.text()}`);
    }
    const metrics = await fetch(`${base}/metrics`);
    assert.equal(metrics.status, 404, "GET /metrics through nginx");
    await metrics.arrayBuffer();
  });

  test("/healthz and /readyz through nginx tell the status and nothing else", async () => {
    const health = await fetch(`${base}/healthz`);
    assert.equal(health.status, 200);
    assert.deepEqual(await health.json(), { status: "ok" });
    const ready = await fetch(`${base}/readyz`);
    assert.equal(ready.status, 200);
    assert.deepEqual(await ready.json(), { status: "ready" });
  });
});

/**
 * Records the page's downstream GETs of `transport` (the streams, for the streaming ones): the
 * URL, and whether the response has ended (finished or failed).
 */
function watchStreams(page, transport) {
  const streams = [];
  const byRequest = new Map();
  page.on("request", (req) => {
    if (req.method() !== "GET") return;
    const url = new URL(req.url());
    if (!url.pathname.startsWith("/socket.io/") || url.searchParams.get("transport") !== transport) return;
    const entry = { url: req.url(), ended: null };
    streams.push(entry);
    byRequest.set(req, entry);
  });
  const end = (how) => (req) => {
    const entry = byRequest.get(req);
    if (entry) entry.ended = how;
  };
  page.on("requestfinished", end("finished"));
  page.on("requestfailed", end("failed"));
  return streams;
}

/** A page whose socket `s` is connected to /demo over `name` alone, through nginx. */
async function connectPage(name) {
  const init = name === "htmlfile" ? [HTMLFILE_STANDIN] : [];
  const client = await openClientPage(browser.context, base, { init });
  const streams = watchStreams(client.page, name);
  await client.page.evaluate(
    (name) => T.open("s", "/demo", { transports: [name], upgrade: false, reconnection: false }),
    name,
  );
  await client.wait("s:connect");
  const [connect] = await client.page.evaluate(() => T.all("s:connect"));
  assert.equal(connect.transport, name, "connected over the forced transport");
  return { ...client, streams, connect };
}

/** The page's `news` events so far, as their first arguments. */
function news(page) {
  return page.evaluate(() => T.all("s:news").map((args) => args[0]));
}

/** `error`, with the page's record and nginx's log appended (bounded: floods are long). */
async function explained(error, client) {
  const state = await client.state();
  const cut = (text, n) => (text.length > n ? `${text.slice(0, n)}… (${text.length - n} more characters)` : text);
  error.message += `\n${cut(state, 8000)}\nnginx: ${cut(nginxLog, 4000)}`;
  return error;
}

async function closePage(client) {
  await client.page.evaluate(() => T.sockets.s.disconnect()).catch(() => {});
  assert.deepEqual(client.problems(), []);
  await client.page.close();
}

describe("Halley's client through nginx, each transport alone", () => {
  for (const name of TRANSPORTS) {
    test(`${name}: connect, ack, server pushes${STREAMING.has(name) ? " on the open stream" : ""}`, async () => {
      const client = await connectPage(name);
      const { page, streams, connect } = client;
      try {
        if (name === "htmlfile") {
          // The stream frame really lives in the stand-in's ActiveX document.
          assert.equal(await page.evaluate(() => __htmlfile.frames), 1, "htmlfile stream frame made in the stand-in");
        }
        assert.deepEqual(
          await withTimeout(page.evaluate(() => T.ack("s", ["ping", 42, "x"])), 5000, "ping ack"),
          [42, "x"],
          "the demo namespace acks with the arguments it got",
        );

        let stream;
        if (STREAMING.has(name)) {
          // The handshake GET is the stream; it is still open.
          assert.equal(streams.length, 1, `one ${name} stream so far: ${JSON.stringify(streams)}`);
          stream = streams[0];
          assert.equal(stream.ended, null, "the handshake stream is still open");
        }

        // Two pushes in a row, each awaited: each must cross nginx while the stream stays open.
        for (const n of [1, 2]) {
          const sent = Date.now();
          await publish({ namespace: "/demo", event: "news", socket: connect.id, data: { n, transport: name } });
          await client.wait("s:news", n, PROMPT_MS);
          const ms = Date.now() - sent;
          assert.ok(ms < PROMPT_MS, `push ${n} took ${ms} ms`);
        }
        assert.deepEqual(await news(page), [
          { n: 1, transport: name },
          { n: 2, transport: name },
        ]);

        if (STREAMING.has(name)) {
          assert.equal(streams.length, 1, `both pushes on the first stream, none reopened: ${JSON.stringify(streams)}`);
          assert.equal(stream.ended, null, "the stream response has not ended");
        }
        const state = await page.evaluate(() => ({
          disconnects: T.all("s:disconnect"),
          sid: T.sockets.s.io.engine.id,
          transport: T.sockets.s.io.engine.transport.name,
        }));
        assert.deepEqual(state, { disconnects: [], sid: connect.sid, transport: name }, "same session, same transport");
      } catch (error) {
        throw await explained(error, client);
      } finally {
        await closePage(client);
      }
    });
  }
});

describe("socket.io-client through nginx", () => {
  for (const [label, opts] of [
    ["websocket only", { transports: ["websocket"] }],
    ["polling only", { transports: ["polling"], upgrade: false }],
    ["polling then upgrade to websocket", { transports: ["polling", "websocket"] }],
  ]) {
    test(label, async () => {
      const socket = io(`${base}/demo`, { ...opts, forceNew: true, reconnection: false });
      try {
        await withTimeout(
          new Promise((resolve, reject) => {
            socket.once("connect", resolve);
            socket.once("connect_error", reject);
          }),
          5000,
          "connect through nginx",
        );
        const reply = await withTimeout(socket.timeout(4000).emitWithAck("ping", 42, "x"), 5000, "ping ack");
        assert.equal(reply, 42, "the demo namespace acks with the arguments it got");
        const engine = socket.io.engine;
        if (label.includes("upgrade")) {
          await withTimeout(
            new Promise((resolve) => {
              if (engine.transport.name === "websocket") resolve();
              else engine.once("upgrade", resolve);
            }),
            5000,
            "upgrade to websocket through nginx",
          );
        }
        const expected = opts.transports.at(-1);
        assert.equal(engine.transport.name, expected);
        // A push from outside, received over the transport now in use.
        const received = new Promise((resolve) => socket.once("news", resolve));
        await publish({ namespace: "/demo", event: "news", socket: socket.id, data: { via: label } });
        assert.deepEqual(await withTimeout(received, PROMPT_MS, "the published news"), { via: label });
        assert.equal(engine.transport.name, expected, "still on the same transport");
      } finally {
        socket.disconnect();
      }
    });
  }
});

describe("stream rollover through nginx", () => {
  for (const name of ["sse", "xhr-streaming"]) {
    test(`${name}: numbered pushes past the 128 KiB stream limit, none lost or repeated`, async () => {
      const client = await connectPage(name);
      const { page, streams, connect } = client;
      try {
        // 64 pushes of 4 KiB: 256 KiB, so the stream ends (at least) once and is reopened while
        // the pushes keep coming.
        const count = 64;
        const filler = "x".repeat(4096);
        for (let i = 0; i < count; i++) {
          await publish({ namespace: "/demo", event: "news", socket: connect.id, data: { i, filler } });
        }
        await client.wait("s:news", count, 10_000);
        const got = await page.evaluate(() =>
          T.all("s:news").map((args) => [args[0].i, args[0].filler.length]),
        );
        assert.deepEqual(
          got,
          Array.from({ length: count }, (_, i) => [i, 4096]),
          "every push once, in order, intact",
        );
        assert.ok(streams.length >= 2, `the stream rolled over (${streams.length} stream GETs)`);
        assert.ok(
          streams.slice(0, -1).every((s) => s.ended !== null),
          `every stream but the last has ended: ${JSON.stringify(streams.map((s) => s.ended))}`,
        );
        assert.ok(
          streams.slice(1).every((s) => new URL(s.url).searchParams.get("sid") === connect.sid),
          "reopened with the session id",
        );
        const state = await page.evaluate(() => ({
          disconnects: T.all("s:disconnect"),
          sid: T.sockets.s.io.engine.id,
        }));
        assert.deepEqual(state, { disconnects: [], sid: connect.sid }, "same session throughout");
      } catch (error) {
        throw await explained(error, client);
      } finally {
        await closePage(client);
      }
    });
  }
});
