// Nothing lost when the network cuts a transport: Halley's client in headless Chromium, each
// transport forced alone (`transports: [name]`, `upgrade: false`; htmlfile through the
// `ActiveXObject` stand-in), loaded from and talking to a TCP relay (relay.mjs) that resets every
// connection 2.5 s after accepting it, as a proxy with a hard response-time limit would. The
// server publishes a `tick` (0..59) every 100 ms through the admin API (`POST /publish`), with
// connection state recovery off (the default), so reconnecting with a new session cannot bring
// back what was lost: every tick must arrive exactly once and in order, over the same Engine.IO
// session (sid unchanged), with no `disconnect`, while the relay cut at least 2 connections. The
// cuts have to be absorbed at the Engine.IO level (the client resuming its session). Each test
// reports what arrived (received / lost / duplicated, cuts) as a diagnostic, passing or not.
//
// Server: the `halley` binary (`HALLEY_BIN`, default target/release/halley; build it first:
// cargo build --release --bins) with `--demo false`, pingInterval 2 s, pingTimeout 2 s.
// Run: node --test client-cuts.test.mjs

import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";

import { startServer } from "./helpers.mjs";
import { until } from "./browser.mjs";
import { HTMLFILE_STANDIN, launchBrowser, openClientPage } from "./client-harness.mjs";
import { startRelay } from "./relay.mjs";

const HALLEY_BIN =
  process.env.HALLEY_BIN ||
  path.resolve(path.dirname(new URL(import.meta.url).pathname), "../../target/release/halley");

const TRANSPORTS = ["polling", "jsonp", "xhr-streaming", "sse", "iframe", "htmlfile", "websocket"];
const TICKS = 60;
const EVERY_MS = 100;
const CUT_AFTER_MS = 2500;
const EXPECTED = Array.from({ length: TICKS }, (_, i) => i);

let server;
let relay;
let browser;

before(async () => {
  server = await startServer(HALLEY_BIN, {
    HALLEY_LISTEN: "127.0.0.1:0",
    HALLEY_DEMO: "false",
    // Heartbeats cross the cuts too: a ping lost with a cut stream must still be answered.
    HALLEY_PING_INTERVAL: "2000",
    HALLEY_PING_TIMEOUT: "2000",
  });
  relay = await startRelay(server.url, { cutAfterMs: CUT_AFTER_MS });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await relay?.close();
  const exit = await server?.stop();
  assert.equal(exit?.code, 0, "server exit code");
});

/** `POST /publish` of tick `i` to every socket of `/`; how many sockets it reached. */
async function publish(i) {
  const res = await fetch(`${server.admin}/publish`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ event: "tick", data: i }),
  });
  const text = await res.text();
  assert.equal(res.status, 200, `POST /publish of tick ${i}: ${text}`);
  return JSON.parse(text).delivered;
}

/** What arrived, against 0..TICKS-1 once each in order. */
function summarize(ticks) {
  const seen = new Map();
  for (const t of ticks) seen.set(t, (seen.get(t) ?? 0) + 1);
  const ordered = ticks.every((t, i) => i === 0 || t > ticks[i - 1]);
  return {
    received: ticks.length,
    distinct: seen.size,
    lost: EXPECTED.filter((t) => !seen.has(t)),
    duplicated: [...seen].filter(([, n]) => n > 1).map(([t]) => t),
    ordered,
  };
}

describe(`through a relay that cuts every connection ${CUT_AFTER_MS} ms after accepting it`, () => {
  for (const name of TRANSPORTS) {
    test(`${name}: every tick arrives once, in order, on the same session`, async (t) => {
      const init = name === "htmlfile" ? [HTMLFILE_STANDIN] : [];
      const client = await openClientPage(browser.context, relay.url, { init });
      const { page } = client;
      try {
        await page.evaluate((name) => T.open("s", "/", { transports: [name], upgrade: false }), name);
        await client.wait("s:connect");
        const sid = await page.evaluate(() => T.sockets.s.io.engine.id);

        const cutsBefore = relay.cuts();
        const connectionsBefore = relay.connections();
        const delivered = [];
        for (let i = 0; i < TICKS; i++) {
          delivered.push(await publish(i));
          await sleep(EVERY_MS);
        }
        const cuts = relay.cuts() - cutsBefore;

        let waitError = null;
        await client.wait("s:tick", TICKS, 20_000).catch((error) => {
          waitError = error;
        });
        // Duplicates may make up the count before the last ticks are in: give those the time
        // to arrive so that "lost" means lost (at once when tick 59 is already there).
        await until(page, (last) => T.all("s:tick").some((a) => a[0] === last), TICKS - 1, `tick ${TICKS - 1}`, {
          ms: 5000,
        }).catch(() => {});

        const seen = await page.evaluate(() => ({
          ticks: T.all("s:tick").map((args) => args[0]),
          sid: T.sockets.s.io.engine ? T.sockets.s.io.engine.id : null,
          sids: T.all("s:connect").map((c) => c.sid),
          disconnects: T.all("s:disconnect"),
          transport: T.sockets.s.io.engine && T.sockets.s.io.engine.transport ? T.sockets.s.io.engine.transport.name : null,
        }));
        const report = {
          transport: name,
          ...summarize(seen.ticks),
          cuts,
          connections: relay.connections() - connectionsBefore,
          sessions: seen.sids.length,
          disconnects: seen.disconnects,
          // Publishes that found no socket on `/` (the client between two sessions).
          publishedToNoOne: delivered.flatMap((n, i) => (n === 0 ? [i] : [])),
        };
        t.diagnostic(JSON.stringify(report));
        const explain = async (what) =>
          `${what}\nreport: ${JSON.stringify(report)}${waitError ? `\n${waitError.message.split("\n")[0]}` : ""}\n${await client.state()}`;

        assert.ok(cuts >= 2, await explain(`the relay cut only ${cuts} connections while the ticks were published`));
        assert.deepEqual(seen.ticks, EXPECTED, await explain("every tick once, in order"));
        assert.deepEqual(seen.disconnects, [], await explain("no disconnect"));
        assert.equal(seen.sid, sid, await explain("the same Engine.IO session all along"));
        assert.deepEqual(seen.sids, [sid], await explain("one connect, on that session"));
        assert.equal(seen.transport, name, await explain("still on its transport"));
        assert.deepEqual(client.problems(), [], await explain("no page error"));
      } finally {
        await page.close();
      }
    });
  }
});
