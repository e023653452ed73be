// The drop rubric of connection state recovery, shared by cluster-recovery.test.mjs (sized for
// CI) and benches/cluster-recovery.mjs (full size):
//
// - N socket.io-client 4.8 clients on WebSocket only, through `base` (nginx in front of the
//   nodes), each cutting its own TCP connection abruptly every `cutMs` (uniform in
//   [min, max], first cut at a random phase): `ws._socket.destroy()` under engine.io-client's
//   WebSocket transport, no close frame, so the client sees "transport close" and reconnects
//   by itself with the `pid` and last `offset` it holds;
// - `messages` numbered events `news` `{seq, sentAt}` published one after another every
//   `intervalMs` with `POST /publish` to one node's admin listener;
// - optionally, SIGKILL of one node once message `kill.afterSeq` was published;
// - then no more cuts, an `end` event published, and every client waited for until it has it
//   (or `drainMs` passed): logged events reach a connection in log order, so whatever the
//   server had to deliver before `end` has arrived.
//
// `runRubric` returns every client's record and `summarize` the figures: distinct seqs
// delivered / expected, duplicates, out-of-order arrivals, reconnects (recovered or not),
// delivery latency (receive time − sentAt, first copy of each seq), and per client what went
// wrong, with the node path of its connections.

import { io } from "socket.io-client";

import { ownerOf } from "./cluster-harness.mjs";
import { withTimeout } from "./helpers.mjs";

const uniform = (min, max) => min + Math.random() * (max - min);

/** `[1, 2, 3, 7]` → `"1-3,7"`. */
export function ranges(numbers) {
  const spans = [];
  for (const n of [...numbers].sort((a, b) => a - b)) {
    const last = spans.at(-1);
    if (last && last[1] === n - 1) last[1] = n;
    else if (!last || last[1] !== n) spans.push([n, n]);
  }
  return spans.map(([from, to]) => (from === to ? `${from}` : `${from}-${to}`)).join(",");
}

/** The value at quantile `q` (0..1) of sorted `values`, nearest rank. */
export function quantile(sorted, q) {
  if (!sorted.length) return null;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
}

/**
 * One rubric client through `base`. Records, with receive times: every `news` seq (and the node
 * whose connection brought it), every connect (`{ at, node, sid, id, recovered, replayed }`:
 * `replayed` = news received since the previous disconnect, i.e. the replay),
 * every disconnect (`{ at, node, reason }`), its cuts, and whether it got `end`.
 */
export function rubricClient(base, index, opts) {
  const socket = io(base, {
    forceNew: true,
    transports: ["websocket"],
    reconnectionDelay: opts.reconnectionDelay ?? 500,
    reconnectionDelayMax: opts.reconnectionDelayMax ?? 2000,
  });
  const client = {
    index,
    socket,
    seqs: [], // arrival order
    arrivals: [], // { seq, at, node, latency, first, replayed }
    connects: [],
    disconnects: [],
    cuts: 0,
    connectErrors: [],
    ended: false,
    warm: false,
    // Arrivals when the last connection ended: those after it, at the next connect, were the
    // replay (socket.io-client buffers events that come before the CONNECT reply and emits
    // them just before `connect`).
    seqsAtDisconnect: 0,
    waiters: new Set(),
    node: () => (socket.io.engine?.id ? ownerOf(socket.io.engine.id) : null),
  };
  const check = () => {
    for (const waiter of client.waiters) waiter();
  };
  socket.on("news", (data) => {
    const at = Date.now();
    const seq = data?.seq;
    const first = !client.seqs.includes(seq);
    client.seqs.push(seq);
    client.arrivals.push({ seq, at, node: client.node(), latency: at - data?.sentAt, first, replayed: false });
    check();
  });
  socket.on("warm", () => {
    client.warm = true;
    check();
  });
  socket.on("end", () => {
    client.ended = true;
    check();
  });
  socket.on("connect", () => {
    client.connects.push({
      at: Date.now(),
      node: client.node(),
      sid: socket.io.engine.id,
      id: socket.id,
      recovered: socket.recovered === true,
      replayed: client.seqs.length - client.seqsAtDisconnect,
    });
    for (const arrival of client.arrivals.slice(client.seqsAtDisconnect)) arrival.replayed = true;
    check();
  });
  // Reconnection attempts that failed (e.g. refused by nginx, or cut by a dying node).
  socket.io.on("reconnect_error", (error) => {
    client.connectErrors.push({ at: Date.now(), message: String(error?.message ?? error) });
  });
  socket.on("disconnect", (reason) => {
    client.disconnects.push({ at: Date.now(), node: client.connects.at(-1)?.node, reason });
    client.seqsAtDisconnect = client.seqs.length;
    check();
  });
  /** Cuts the TCP connection under the WebSocket (no close frame); false when not connected. */
  client.cut = () => {
    const transport = socket.io.engine?.transport;
    const tcp = transport?.name === "websocket" ? transport.ws?._socket : undefined;
    if (!socket.connected || !tcp || tcp.destroyed) return false;
    tcp.destroy();
    client.cuts++;
    return true;
  };
  /** Resolves once `probe()` holds, checked at each event of this client; rejects after `ms`. */
  client.until = (probe, what, ms) => {
    let waiter;
    const reached = new Promise((resolve) => {
      waiter = () => probe() && resolve();
      client.waiters.add(waiter);
      waiter();
    });
    return withTimeout(reached, ms, `client #${index}: ${what}`).finally(() => client.waiters.delete(waiter));
  };
  /** `recov1 → recov3 (r, 2 replayed) → recov2 (fresh)`, with the disconnect reasons. */
  client.path = () =>
    client.connects
      .map((c, i) => {
        const tag = i === 0 ? "" : c.recovered ? ` (r, ${c.replayed} replayed)` : " (FRESH)";
        const reason = i === 0 ? "" : ` [${client.disconnects[i - 1]?.reason ?? "?"}]`;
        return `${reason}${i ? " → " : ""}${c.node}${tag}`;
      })
      .join("");
  return client;
}

/** Connects `count` clients, `concurrency` at a time; resolves to them once all are connected. */
export async function connectClients(base, count, opts = {}, { concurrency = 50, ms = 20_000 } = {}) {
  const clients = [];
  for (let i = 0; i < count; i += concurrency) {
    const batch = [];
    for (let j = i; j < Math.min(count, i + concurrency); j++) batch.push(rubricClient(base, j + 1, opts));
    await Promise.all(batch.map((c) => c.until(() => c.connects.length > 0, "first connect", ms)));
    clients.push(...batch);
  }
  return clients;
}

/** POSTs `body` to `/publish` of the admin listener `admin`; throws unless 200. */
export async function publish(admin, body) {
  const res = await fetch(`${admin}/publish`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  const text = await res.text();
  if (res.status !== 200) throw new Error(`POST ${admin}/publish ${JSON.stringify(body)} → ${res.status} ${text}`);
  return JSON.parse(text);
}

/**
 * Runs the rubric on `clients` (connected): with `warmup`, a `warm` event first, awaited by
 * every client (so every node is shown reading the log, and every client holds an offset
 * before its first cut: socket.io-client sends its `pid` without an offset until it has
 * received an event, and a server, socket.io's as Halley's, then gives it a fresh session);
 * then the messages (the first one at once), the cuts (the first at a random phase from
 * then) and the kill, then `end`.
 * `kill`: `{ afterSeq, node, cluster }` (cluster.kill(node) once that seq was published).
 * Resolves to `{ started, published, kill, endMs, unfinished }`; `published`: `[{ seq, at, ms }]`
 * (`ms`: the POST's round trip).
 */
export async function runRubric({
  clients,
  admin,
  messages,
  intervalMs,
  cutMs: [cutMin, cutMax],
  kill,
  drainMs = 30_000,
  warmup = true,
  log = () => {},
}) {
  if (warmup) {
    await publish(admin, { event: "warm", data: {} });
    await Promise.all(clients.map((c) => c.until(() => c.warm, "the warm-up event", 20_000)));
  }

  let cutting = true;
  const timers = new Set();
  const schedule = (client, ms) => {
    const timer = setTimeout(() => {
      timers.delete(timer);
      if (!cutting) return;
      client.cut();
      schedule(client, uniform(cutMin, cutMax));
    }, ms);
    timers.add(timer);
  };
  for (const client of clients) schedule(client, uniform(0, cutMax));

  const started = Date.now();
  const published = [];
  let killed = null;
  try {
    for (let seq = 1; seq <= messages; seq++) {
      const due = started + (seq - 1) * intervalMs;
      if (Date.now() < due) await new Promise((r) => setTimeout(r, due - Date.now()));
      const at = Date.now();
      await publish(admin, { event: "news", data: { seq, sentAt: at } });
      published.push({ seq, at, ms: Date.now() - at });
      if (kill && seq === kill.afterSeq) {
        // Who the victim holds: the clients whose latest connection is on it.
        const held = clients.filter((c) => c.connects.at(-1)?.node === kill.node.name);
        const at = await kill.cluster.kill(kill.node);
        killed = { node: kill.node.name, at, afterSeq: seq, held };
        log(`# SIGKILL ${kill.node.name} after seq ${seq}: it held ${held.length} clients`);
      }
    }
  } finally {
    cutting = false;
    for (const timer of timers) clearTimeout(timer);
  }
  const endAt = Date.now();
  await publish(admin, { event: "end", data: {} });
  const unfinished = [];
  await Promise.all(
    clients.map((c) =>
      c.until(() => c.ended, "the end event", drainMs).catch((error) => unfinished.push({ client: c, error: error.message })),
    ),
  );
  return { started, published, kill: killed, endMs: Date.now() - endAt, unfinished };
}

/** What is wrong with one client's arrivals against seqs 1..messages. */
export function auditClient(client, messages) {
  const counts = new Map();
  let outOfOrder = 0;
  let highest = 0;
  const reordered = [];
  for (const seq of client.seqs) {
    counts.set(seq, (counts.get(seq) ?? 0) + 1);
    if (counts.get(seq) > 1) continue;
    if (seq < highest) {
      outOfOrder++;
      if (reordered.length < 5) reordered.push(`${seq} after ${highest}`);
    }
    highest = Math.max(highest, seq);
  }
  const missing = [];
  for (let seq = 1; seq <= messages; seq++) if (!counts.has(seq)) missing.push(seq);
  const duplicates = [...counts].filter(([, n]) => n > 1).map(([seq]) => seq);
  const unexpected = [...counts.keys()].filter((seq) => !(seq >= 1 && seq <= messages));
  const reconnects = client.connects.slice(1);
  return {
    distinct: counts.size - unexpected.length,
    missing,
    duplicates,
    duplicateCopies: [...counts.values()].reduce((sum, n) => sum + n - 1, 0),
    outOfOrder,
    reordered,
    unexpected,
    reconnects: reconnects.length,
    recovered: reconnects.filter((c) => c.recovered).length,
    fresh: reconnects.filter((c) => !c.recovered).length,
  };
}

/**
 * Describes a client for a failure report: its seqs' problems, the node path of its
 * connections and, for each missing seq, when it was published against the client's
 * disconnects and reconnects.
 */
export function describeClient(client, audit, run) {
  const t = (ms) => `+${ms - run.started}ms`;
  const lines = [
    `client #${client.index} (socket ${client.connects[0]?.id}): path ${client.path()}; cuts ${client.cuts}`,
    `  missing ${ranges(audit.missing) || "-"}; duplicates ${ranges(audit.duplicates) || "-"}; ` +
      `out of order ${audit.reordered.join(", ") || "-"}; ended ${client.ended}`,
    `  connects ${client.connects.map((c) => `${t(c.at)} ${c.node}${c.recovered ? "(r)" : ""}`).join(", ")}`,
    `  disconnects ${client.disconnects.map((d) => `${t(d.at)} ${d.node} ${d.reason}`).join(", ")}`,
    `  failed reconnect attempts ${client.connectErrors.map((e) => `${t(e.at)} ${e.message}`).join(", ") || "-"}`,
  ];
  for (const seq of audit.missing.slice(0, 5)) {
    const p = run.published.find((x) => x.seq === seq);
    if (p) lines.push(`  seq ${seq} published at ${t(p.at)} (POST ${p.ms} ms)`);
  }
  for (const seq of audit.duplicates.slice(0, 5)) {
    const copies = client.arrivals.filter((a) => a.seq === seq).map((a) => `${t(a.at)} via ${a.node}`);
    lines.push(`  seq ${seq} received ${copies.join(" and ")}`);
  }
  return lines.join("\n");
}

/** The run's figures over every client. */
export function summarize(clients, run, messages) {
  const audits = clients.map((c) => auditClient(c, messages));
  const sum = (key) => audits.reduce((s, a) => s + a[key], 0);
  const firsts = clients.flatMap((c) => c.arrivals.filter((a) => a.first));
  const sorted = (arrivals) => arrivals.map((a) => a.latency).sort((x, y) => x - y);
  const latencies = sorted(firsts);
  const live = sorted(firsts.filter((a) => !a.replayed));
  const replays = sorted(firsts.filter((a) => a.replayed));
  const expected = clients.length * messages;
  const held = run.kill?.held ?? [];
  const heldAudits = held.map((c) => auditClient(c, messages));
  // A client the victim held: back after the kill on a live node, recovered.
  const backAfterKill = held.filter((c) =>
    c.connects.some((x) => x.at >= run.kill.at && x.node !== run.kill.node && x.recovered),
  );
  return {
    clients: clients.length,
    messages,
    expected,
    delivered: sum("distinct"),
    deliveredPct: (100 * sum("distinct")) / expected,
    clientsComplete: audits.filter((a) => a.missing.length === 0).length,
    duplicates: sum("duplicateCopies"),
    outOfOrder: sum("outOfOrder"),
    cuts: clients.reduce((s, c) => s + c.cuts, 0),
    reconnects: sum("reconnects"),
    recovered: sum("recovered"),
    fresh: sum("fresh"),
    // Reconnects through another node than the one the client had left.
    moved: clients.reduce((n, c) => n + c.connects.slice(1).filter((x, i) => x.node !== c.connects[i].node).length, 0),
    // Events a reconnect got in its replay (missed while away), and the reconnects that had any.
    replayed: clients.reduce((n, c) => n + c.connects.reduce((m, x) => m + x.replayed, 0), 0),
    reconnectsWithReplay: clients.reduce((n, c) => n + c.connects.filter((x) => x.replayed > 0).length, 0),
    reconnectErrors: clients.reduce((n, c) => n + c.connectErrors.length, 0),
    // The longest absences, with the failed attempts in them.
    longestAway: clients
      .flatMap((c) =>
        c.disconnects.map((d, i) => {
          const next = c.connects[i + 1];
          const errors = c.connectErrors.filter((e) => e.at >= d.at && (!next || e.at <= next.at));
          return {
            client: c.index,
            from: d.node,
            to: next?.node ?? null,
            atMs: d.at - run.started,
            ms: next ? next.at - d.at : null,
            errors: [...new Set(errors.map((e) => e.message))].join("; ") || undefined,
            failedAttempts: errors.length,
          };
        }),
      )
      .sort((x, y) => (y.ms ?? Infinity) - (x.ms ?? Infinity))
      .slice(0, 3),
    disconnectReasons: clients
      .flatMap((c) => c.disconnects.map((d) => d.reason))
      .reduce((by, reason) => ({ ...by, [reason]: (by[reason] ?? 0) + 1 }), {}),
    // receive time − sentAt of the first copy of each seq: all of them, those that came live
    // (on an open connection) and those that came in a replay (missed while away).
    latency: {
      p50: quantile(latencies, 0.5),
      p99: quantile(latencies, 0.99),
      max: latencies.at(-1) ?? null,
    },
    liveLatency: { count: live.length, p50: quantile(live, 0.5), p99: quantile(live, 0.99), max: live.at(-1) ?? null },
    replayLatency: {
      count: replays.length,
      p50: quantile(replays, 0.5),
      p99: quantile(replays, 0.99),
      max: replays.at(-1) ?? null,
    },
    // Disconnect → the next connect (the client's reconnection delay, 250–750 ms at first with
    // socket.io-client's defaults for 500, included).
    awayMs: (() => {
      const away = clients
        .flatMap((c) => c.disconnects.map((d, i) => (c.connects[i + 1] ? c.connects[i + 1].at - d.at : null)))
        .filter((ms) => ms !== null)
        .sort((a, b) => a - b);
      return { p50: quantile(away, 0.5), p99: quantile(away, 0.99), max: away.at(-1) ?? null };
    })(),
    publishMs: {
      p50: quantile(run.published.map((p) => p.ms).sort((a, b) => a - b), 0.5),
      max: Math.max(...run.published.map((p) => p.ms)),
    },
    unfinished: run.unfinished.length,
    kill: run.kill && {
      node: run.kill.node,
      afterSeq: run.kill.afterSeq,
      held: held.length,
      heldBackRecovered: backAfterKill.length,
      heldComplete: heldAudits.filter((a) => a.missing.length === 0).length,
    },
    failures: clients
      .map((c, i) => [c, audits[i]])
      .filter(([, a]) => a.missing.length || a.duplicates.length || a.outOfOrder || a.unexpected.length || a.fresh)
      .map(([c, a]) => describeClient(c, a, run)),
  };
}

/** Closes every client (no reconnection). */
export function closeClients(clients) {
  for (const client of clients) {
    client.socket.io.reconnection(false);
    client.socket.disconnect();
  }
}
