// A RabbitMQ restart under load across three `halley --cluster` nodes behind nginx: nothing
// accepted vanishes, nothing refused shows up late.
//
// The broker is a private node of this test's own (broker.mjs: another node name, other ports,
// its data in a temporary directory), never the shared one on 5672. Per mode, three nodes on it
// (a cluster exchange of their own), 30 socket.io-client 4.8 clients over WebSocket spread
// round-robin over them by nginx, and a publisher that POSTs
// `{event: "tick", data: {seq, sentAt}, id}` to the nodes' admin `/publish` in turn, one every
// 50 ms. After 3 s the broker is restarted (SIGTERM, a graceful stop; then started again on
// the same data); publishing goes on until the cluster delivers again, and 2 s more.
//
// Every seq is answered within the confirm timeout (5 s), one of three ways, as the README
// says: accepted (200), refused (503), or "maybe delivered" (504 `{maybe_delivered: true}`: it
// was published and the broker's confirm went with the connection). One subtest per promise:
//
// - shared log mode (`--recovery-window 30000`, a `--cluster-stream` of its own): every
//   accepted seq reaches every client exactly once, those accepted during the outage after the
//   broker is back (they waited in the node's outbox); no refused seq reaches any client, ever
//   (it was withdrawn, also when too little of its 5 s was left to wait for a confirm); every
//   client gets the same sequence (the stream's), and each node's seqs in the order they were
//   published to it.
// - plain cluster mode (no recovery window): the node that answered delivered to its own
//   clients at once; an accepted seq reaches every client exactly once, also while the nodes'
//   links come back one by one (a node whose link is back refuses, 503 "cluster rejoining",
//   until every other node has said hello again: only then is its queue bound); a refused one
//   reaches the publishing node's clients only ("it was delivered locally") and no other
//   node's; each node's seqs arrive everywhere in the order they were published to it.
// - in both: a "maybe delivered" seq may reach the other clients or not (never twice); no
//   client is disconnected, and the cluster delivers again (a seq reaches every client) within
//   RECOVERY_BOUND_MS of the broker taking connections again. Why that bound: each node's links
//   reconnect with exponential backoff (200 ms doubling, capped at 10 s, ±50 % jitter), so when
//   the broker comes back a node sleeps 15 s at most before its next attempt; connecting,
//   declaring, the other nodes' hello (a heartbeat, 1 s here) and the first confirmed publish
//   take about a second more on loopback; 2 s more for a broker still settling.
//
// Each mode reports its figures as a diagnostic line (`# {...}`): accepted, refused (and how
// many of them while rejoining), maybe delivered (and how many of those reached another
// node's clients), lost, refused delivered, delivered late (an accepted seq some client got
// more than LATE_MS after it was sent), the broker's stop and boot times, the time from the broker up to the cluster
// delivering again, each node's cluster link back. `BROKER_RESTART_RESULTS=file.jsonl` appends
// them to that file too (BENCHMARKS.md "Broker restart across three nodes": medians of 3 runs).
// `BROKER_RESTART_DUMP=file.jsonl` appends everything (each publish, one client per node, the
// links' changes) for a closer look.
//
// Needs Debian's rabbitmq-server (a private node is started; see broker.mjs), nginx and the
// release binary, as cluster-harness.mjs says. Run: node --test cluster-broker-restart.test.mjs

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { appendFileSync } from "node:fs";

import { io } from "socket.io-client";

import { canRunBroker, startPrivateBroker } from "./broker.mjs";
import { eventually, ownerOf, startCluster, unique } from "./cluster-harness.mjs";
import { withTimeout } from "./helpers.mjs";

const CLIENTS = 30;
const PERIOD_MS = 50;
const WARMUP_MS = 3000;
/** Publishing goes on this long once the cluster delivers again. */
const TAIL_MS = 2000;
/** The server answers within its confirm timeout (5 s); this client gives up much later. */
const PUBLISH_TIMEOUT_MS = 15_000;
/** From the broker taking connections to a seq reaching every client (see above). */
const RECOVERY_BOUND_MS = 18_000;
/** How long the accepted seqs may take to reach every client once publishing stopped. */
const DRAIN_MS = 10_000;
/** A delivery this long after its publish waited for the broker. */
const LATE_MS = 1000;
const HEARTBEAT_MS = 1000;
/** Two publishes to one node this far apart reach it in the order they were sent. */
const ORDER_GAP_MS = 40;

let broker;

before(async () => {
  if (!canRunBroker()) return;
  broker = await startPrivateBroker();
});

after(async () => {
  await broker?.close();
});

// --- helpers --------------------------------------------------------------------------------

/** `[1, 2, 3, 7]` → `"1-3, 7"` (sorted first). */
function ranges(numbers) {
  const spans = [];
  for (const n of [...numbers].sort((a, b) => a - b)) {
    const last = spans.at(-1);
    if (last && last[1] === n - 1) last[1] = n;
    else spans.push([n, n]);
  }
  return spans.map(([a, b]) => (a === b ? `${a}` : `${a}-${b}`)).join(", ");
}

const median = (values) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted.length ? sorted[Math.floor((sorted.length - 1) / 2)] : null;
};

/**
 * 30 socket.io-client clients over WebSocket through nginx (no reconnection: a disconnect is a
 * failure). Each records every `tick` as `{ seq, at }`; `complete` maps a seq to the time it
 * had reached every client.
 */
async function connectClients(base) {
  const clients = [];
  const counts = new Map();
  const complete = new Map();
  for (let i = 0; i < CLIENTS; i++) {
    const socket = io(base, { forceNew: true, reconnection: false, transports: ["websocket"] });
    const client = { label: `client ${i}`, socket, ticks: [], disconnects: [] };
    socket.on("tick", (data) => {
      const at = Date.now();
      client.ticks.push({ seq: data.seq, at });
      const n = (counts.get(data.seq) ?? 0) + 1;
      counts.set(data.seq, n);
      if (n === CLIENTS) complete.set(data.seq, at);
    });
    socket.on("disconnect", (reason) => client.disconnects.push({ reason, at: Date.now() }));
    await withTimeout(
      new Promise((resolve, reject) => {
        socket.once("connect", resolve);
        socket.once("connect_error", reject);
      }),
      5000,
      `${client.label} to connect through nginx`,
    );
    client.sid = socket.io.engine.id;
    client.owner = ownerOf(client.sid);
    clients.push(client);
  }
  return { clients, complete };
}

/**
 * POSTs a tick to the nodes' admin `/publish` in turn, one every `PERIOD_MS` (on a fixed
 * schedule: a slow answer delays nothing; each request on a connection of its own when the
 * others wait for their answer). Each seq's record: `{ seq, node, sentAt, status,
 * answeredAt, body, error }`.
 */
function startTicker(nodes, tag) {
  const list = [...nodes.values()];
  const sent = new Map();
  const pending = new Set();
  let seq = 0;
  let timer;
  let stopped = false;
  const t0 = Date.now();
  const publish = (node = list[(seq + 1) % list.length]) => {
    const s = ++seq;
    const sentAt = Date.now();
    const record = { seq: s, node: node.name, sentAt, status: null, answeredAt: null, body: null, error: null };
    sent.set(s, record);
    const p = fetch(`${node.admin}/publish`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ event: "tick", data: { seq: s, sentAt }, id: `${tag}#${s}` }),
      signal: AbortSignal.timeout(PUBLISH_TIMEOUT_MS),
    })
      .then(async (res) => {
        record.status = res.status;
        record.body = await res.text();
        try {
          record.maybe = res.status === 504 && JSON.parse(record.body).maybe_delivered === true;
        } catch {
          record.maybe = false;
        }
      })
      .catch((error) => {
        record.error = `${error.name}: ${error.message}`;
      })
      .finally(() => {
        record.answeredAt = Date.now();
        pending.delete(p);
      });
    pending.add(p);
    return p.then(() => record);
  };
  const tick = () => {
    if (stopped) return;
    publish();
    // Behind schedule (the event loop was busy): catch up, but never in a burst, whose
    // requests could reach the node in another order than they were sent.
    timer = setTimeout(tick, Math.max(PERIOD_MS / 2, t0 + seq * PERIOD_MS - Date.now()));
  };
  tick();
  return {
    sent,
    publish,
    /** Stops the schedule; resolves once every publish has its answer. */
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await Promise.all([...pending]);
    },
  };
}

/** Polls each node's /healthz `cluster.connected` every 100 ms: `{ name: [{ connected, at }] }` of changes. */
function watchLinks(nodes) {
  const changes = Object.fromEntries([...nodes.keys()].map((name) => [name, []]));
  let stopped = false;
  const loops = [...nodes.values()].map(async (node) => {
    while (!stopped) {
      try {
        const res = await fetch(`${node.admin}/healthz`, { signal: AbortSignal.timeout(1000) });
        const { cluster } = await res.json();
        const list = changes[node.name];
        if (list.at(-1)?.connected !== cluster.connected) list.push({ connected: cluster.connected, at: Date.now() });
      } catch {}
      await new Promise((r) => setTimeout(r, 100));
    }
  });
  return {
    changes,
    async stop() {
      stopped = true;
      await Promise.all(loops);
    },
  };
}

// --- the scenario ---------------------------------------------------------------------------

async function restartUnderLoad(t, { tag, names, logged }) {
  const stream = unique(`halley.test.${tag}`);
  const env = logged ? { HALLEY_RECOVERY_WINDOW: "30000", HALLEY_CLUSTER_STREAM: stream } : {};
  const cluster = await startCluster({ tag, names, heartbeatMs: HEARTBEAT_MS, env, amqpUrl: broker.url });
  let clients = [];
  try {
    const connected = await connectClients(cluster.base);
    clients = connected.clients;
    const { complete } = connected;
    const byNode = Object.fromEntries(names.map((name) => [name, clients.filter((c) => c.owner === name)]));
    for (const name of names) assert.ok(byNode[name].length >= 5, `clients per node: ${JSON.stringify(Object.fromEntries(names.map((n) => [n, byNode[n].length])))}`);

    // --- publish, restart the broker in the middle ---
    const links = watchLinks(cluster.nodes);
    const ticker = startTicker(cluster.nodes, unique(tag));
    await new Promise((r) => setTimeout(r, WARMUP_MS));
    const stopAt = Date.now();
    const goneAt = await broker.stop();
    const startAt = Date.now();
    const upAt = await broker.start();
    // The cluster delivers again: a seq reaches every client after the broker is back.
    const againOf = () => {
      let first = Infinity;
      for (const at of complete.values()) if (at >= upAt && at < first) first = at;
      return first === Infinity ? null : first;
    };
    const againAt = await eventually(againOf, "a seq to reach every client after the broker restart", RECOVERY_BOUND_MS + 10_000).catch(() => null);
    await new Promise((r) => setTimeout(r, TAIL_MS));
    await ticker.stop();
    // One more seq per node, once every answer is in: each node's earlier ones are ahead of it
    // (a node's outbox is first in, first out, and so is the way to every other node).
    const fences = await Promise.all([...cluster.nodes.values()].map((node) => ticker.publish(node)));
    const records = [...ticker.sent.values()];
    const accepted = records.filter((r) => r.status === 200);
    const refused = records.filter((r) => r.status === 503);
    const maybe = records.filter((r) => r.maybe);
    const fenced = await eventually(
      () => fences.every((r) => complete.has(r.seq)),
      "each node's last seq to reach every client",
      DRAIN_MS,
    ).catch(() => false);
    // What is still missing then will not come; a second more for stragglers (and for anything
    // refused arriving late), then judge.
    const drained = await eventually(() => accepted.every((r) => complete.has(r.seq)), "the rest", 1000).catch(() => false);
    await new Promise((r) => setTimeout(r, 500));
    await links.stop();

    // --- what each client got ---
    const acceptedSeqs = new Set(accepted.map((r) => r.seq));
    const refusedSeqs = new Set(refused.map((r) => r.seq));
    const maybeSeqs = new Set(maybe.map((r) => r.seq));
    const recordOf = (seq) => ticker.sent.get(seq);
    const linkBack = Object.fromEntries(
      Object.entries(links.changes).map(([name, list]) => [name, list.find((c) => c.connected && c.at >= stopAt)?.at ?? null]),
    );
    // Problems by kind, then by node: the seqs (union over its clients) and how many clients.
    const problems = {};
    const note = (kind, client, seqs) => {
      if (!seqs.length) return;
      const byNode = (problems[kind] ??= {});
      const entry = (byNode[client.owner] ??= { clients: 0, seqs: new Set() });
      entry.clients += 1;
      for (const seq of seqs) entry.seqs.add(seq);
    };
    /** A kind's problems for an assertion message: `{ node: "N clients: seqs" }`, short. */
    const shown = (kind) =>
      Object.fromEntries(
        Object.entries(problems[kind] ?? {}).map(([node, { clients, seqs }]) => {
          const text = ranges([...seqs]);
          return [node, `${clients} client(s): ${text.length > 400 ? `${text.slice(0, 400)}…` : text}`];
        }),
      );
    const lateSeqs = new Set();
    let maxLatency = 0;
    const latencies = [];
    for (const client of clients) {
      const got = client.ticks.map((x) => x.seq);
      const seen = new Set();
      const duplicates = [];
      for (const seq of got) {
        if (seen.has(seq)) duplicates.push(seq);
        seen.add(seq);
      }
      note("duplicates", client, duplicates);
      const missing = [...acceptedSeqs].filter((s) => !seen.has(s));
      note("missing", client, missing);
      // Refused: never anywhere with the shared log; only on the publishing node's clients otherwise.
      const remote = (s) => logged || recordOf(s).node !== client.owner;
      note("refusedDelivered", client, got.filter((s) => refusedSeqs.has(s) && remote(s)));
      note("maybeDelivered", client, got.filter((s) => maybeSeqs.has(s) && remote(s)));
      if (!logged) {
        // What the node answering 503 or 504 delivered to its own clients before it asked the cluster.
        const unconfirmed = [...refusedSeqs, ...maybeSeqs];
        note("refusedNotLocal", client, unconfirmed.filter((s) => recordOf(s).node === client.owner && !seen.has(s)));
      }
      // Each node's seqs in the order they were published to it: none after one sent to the
      // same node ORDER_GAP_MS or more later (closer requests, each on a connection of its own,
      // may reach the node in either order).
      const latest = {};
      const reordered = [];
      for (const seq of got) {
        const { node, sentAt } = recordOf(seq);
        if (latest[node] !== undefined && sentAt <= latest[node] - ORDER_GAP_MS) reordered.push(seq);
        latest[node] = Math.max(latest[node] ?? 0, sentAt);
      }
      note("perNodeOrder", client, reordered);
      for (const { seq, at } of client.ticks) {
        if (!acceptedSeqs.has(seq)) continue;
        const latency = at - recordOf(seq).sentAt;
        latencies.push(latency);
        maxLatency = Math.max(maxLatency, latency);
        if (latency > LATE_MS) lateSeqs.add(seq);
      }
    }
    // With the shared log, one order cluster-wide: the stream's.
    const orders = new Set(clients.map((c) => JSON.stringify(c.ticks.map((x) => x.seq))));
    const outOfSeqOrder = clients[0].ticks.filter((x, i, all) => i > 0 && x.seq < all[i - 1].seq).length;
    const firstAcceptedAfter = Object.fromEntries(
      names.map((name) => [
        name,
        accepted.filter((r) => r.node === name && r.sentAt >= upAt).reduce((m, r) => Math.min(m, r.answeredAt), Infinity),
      ]),
    );
    const statuses = {};
    for (const r of records) statuses[r.status ?? r.error] = (statuses[r.status ?? r.error] ?? 0) + 1;
    const lastBefore = [...complete.values()].filter((at) => at < upAt).reduce((m, at) => Math.max(m, at), 0);
    const since = (at) => (at === null || at === Infinity ? null : at - upAt);
    const count = (kind) => new Set(Object.values(problems[kind] ?? {}).flatMap((e) => [...e.seqs])).size;
    const figures = {
      mode: logged ? "shared log (--recovery-window 30000)" : "plain cluster",
      clients: clients.length,
      clientsPerNode: Object.fromEntries(names.map((n) => [n, byNode[n].length])),
      published: records.length,
      accepted: accepted.length,
      refused: refused.length,
      // 503 because a node was not bound again yet (plain mode).
      refusedRejoining: refused.filter((r) => r.body?.includes("cluster rejoining")).length,
      // 504: published, the confirm went with the connection; and how many reached other nodes' clients.
      maybe: maybe.length,
      maybeDelivered: count("maybeDelivered"),
      statuses,
      // Accepted seqs that did not reach every client (and how many deliveries that is).
      lost: count("missing"),
      lostDeliveries: clients.reduce((n, c) => n + [...acceptedSeqs].filter((s) => !c.ticks.some((x) => x.seq === s)).length, 0),
      duplicated: count("duplicates"),
      refusedDelivered: count("refusedDelivered"),
      refusedDeliveredLocally: logged ? 0 : refused.filter((r) => clients.some((c) => c.owner === r.node && c.ticks.some((x) => x.seq === r.seq))).length,
      deliveredLate: lateSeqs.size,
      maxLatencyMs: maxLatency,
      medianLatencyMs: median(latencies),
      brokerStopMs: goneAt - stopAt,
      brokerBootMs: upAt - startAt,
      brokerDownMs: upAt - stopAt,
      deliversAgainAfterUpMs: since(againAt),
      blackoutMs: againAt === null ? null : againAt - lastBefore,
      linkBackAfterUpMs: Object.fromEntries(Object.entries(linkBack).map(([n, at]) => [n, since(at)])),
      firstAcceptedAfterUpMs: Object.fromEntries(Object.entries(firstAcceptedAfter).map(([n, at]) => [n, since(at)])),
      refusedSpanMs: refused.length ? Math.max(...refused.map((r) => r.sentAt)) - Math.min(...refused.map((r) => r.sentAt)) : 0,
      sameOrderEverywhere: orders.size === 1,
      outOfSeqOrder,
      disconnects: clients.reduce((n, c) => n + c.disconnects.length, 0),
    };
    t.diagnostic(JSON.stringify(figures));
    if (process.env.BROKER_RESTART_RESULTS) {
      appendFileSync(process.env.BROKER_RESTART_RESULTS, JSON.stringify({ at: new Date().toISOString(), ...figures }) + "\n");
    }

    if (process.env.BROKER_RESTART_DUMP) {
      // Everything, for a closer look: each publish, one client per node, the links' changes.
      const one = Object.fromEntries(names.map((n) => [n, byNode[n][0].ticks]));
      const dump = { figures, stopAt, goneAt, startAt, upAt, againAt, records, clients: one, links: links.changes };
      appendFileSync(process.env.BROKER_RESTART_DUMP, JSON.stringify(dump) + "\n");
    }

    // --- the verdict, one subtest per promise ---
    const context = () =>
      `\nrefused: ${ranges([...refusedSeqs])}\nmaybe delivered: ${ranges([...maybeSeqs])}\nlate: ${ranges([...lateSeqs])}\nfigures: ${JSON.stringify(figures)}`;
    await t.test("every publish is answered 200, 503, or 504 maybe delivered, and the restart refused some", () => {
      const odd = records.filter((r) => r.status !== 200 && r.status !== 503 && !r.maybe);
      assert.deepEqual(odd.map((r) => ({ seq: r.seq, node: r.node, status: r.status, error: r.error, body: r.body })), []);
      assert.ok(refused.length > 0, `nothing refused: did the restart happen? ${context()}`);
    });
    const refusedWhere = logged ? "any client" : "another node's clients";
    await t.test(`no refused (503) seq reaches ${refusedWhere}`, () => {
      assert.deepEqual(shown("refusedDelivered"), {}, `refused seqs delivered ${context()}`);
    });
    if (!logged) {
      await t.test("a refused or maybe delivered seq reached every client of the node that answered it (delivered locally)", () => {
        assert.deepEqual(shown("refusedNotLocal"), {}, context());
      });
    }
    await t.test("no seq reaches a client twice", () => {
      assert.deepEqual(shown("duplicates"), {}, context());
    });
    await t.test("every accepted seq reaches every client", () => {
      const lostMessage = `accepted seqs missing (each node's last seq everywhere: ${fenced}; every accepted one: ${drained})`;
      assert.deepEqual(shown("missing"), {}, `${lostMessage}; cluster links back ${JSON.stringify(figures.linkBackAfterUpMs)} ms after the broker ${context()}`);
    });
    await t.test(logged ? "every client gets the same order (the stream's), each node's seqs in publish order" : "each node's seqs reach every client in the order published to it", () => {
      assert.deepEqual(shown("perNodeOrder"), {}, context());
      if (logged) assert.equal(orders.size, 1, `clients disagree on the order ${context()}`);
    });
    await t.test("no client is disconnected", () => {
      assert.deepEqual(
        clients.filter((c) => c.disconnects.length).map((c) => `${c.label} on ${c.owner}: ${JSON.stringify(c.disconnects)}`),
        [],
      );
    });
    await t.test(`the cluster delivers again within ${RECOVERY_BOUND_MS} ms of the broker taking connections`, () => {
      assert.ok(againAt !== null && againAt - upAt <= RECOVERY_BOUND_MS, context());
    });
    return figures;
  } finally {
    for (const client of clients) client.socket.disconnect();
    await cluster.stop();
  }
}

const skip = canRunBroker() ? false : "needs Debian's rabbitmq-server (a private node of the test's own)";

test(
  "shared log (--recovery-window): a RabbitMQ restart under load across three nodes",
  { skip, timeout: 90_000 },
  (t) => restartUnderLoad(t, { tag: "rstlog", names: ["rstlg1", "rstlg2", "rstlg3"], logged: true }),
);

test(
  "plain cluster: a RabbitMQ restart under load across three nodes",
  { skip, timeout: 90_000 },
  (t) => restartUnderLoad(t, { tag: "rstplain", names: ["rstpl1", "rstpl2", "rstpl3"], logged: false }),
);
