// The public drop rubric of connection state recovery, full size, against real `halley`
// nodes behind nginx (fixtures/nginx.conf, round-robin) on the local RabbitMQ:
//
//   300 socket.io-client 4.8 clients on WebSocket (reconnectionDelay 500,
//   reconnectionDelayMax 2000), each cutting its own TCP connection every 8–11 s at a random
//   phase; 60 numbered messages {seq, sentAt} published with POST /publish (admin listener of
//   one node) every 500 ms; each client counts the distinct seqs it got.
//
// Variants (arguments, default `a b single`):
//   a        three `halley --cluster --recovery-window 30000` nodes, no kill
//   b        the same, SIGKILL of the first node at ~15 s (after message 30); publishing goes
//            to the third node
//   single   one `halley --recovery-window 30000` (no cluster: the in-memory store), behind
//            the same nginx
//   cluster1 one `halley --cluster --recovery-window 30000` node (the stream, no other node)
//
// Each run starts fresh nodes (a fresh cluster exchange and recovery stream, both deleted
// afterwards) and prints one JSON line of figures; after all runs, a table of medians per
// variant. Results go to benches/results/cluster-recovery-<stamp>/ (one JSON file per run,
// summary.md). The clients and the publisher run in this process (the rubric code is
// tests/interop/recovery-rubric.mjs, the cluster tests/interop/cluster-harness.mjs, whose
// node_modules this uses: `cd tests/interop && npm ci` first). Nothing is pinned: the nodes,
// nginx, RabbitMQ and the clients share the machine's cores.
//
// The first message is published as soon as every client is connected, and the cuts start at
// a random phase from then, as the rubric has it. socket.io-client sends an offset only once it
// has received an event: a client whose first cut comes before the first message reached it
// comes back with its `pid` alone, which socket.io answers with a fresh session; Halley replays
// it from where its session started. WARMUP=1 publishes a `warm` event first and waits until
// every client has it (every client then holds an offset before its first cut).
//
// Environment: RUNS (3), CLIENTS (300), MESSAGES (60), INTERVAL_MS (500), CUT_MIN_MS (8000),
// CUT_MAX_MS (11000), KILL_AT_MS (15000), WINDOW_MS (30000), HEARTBEAT_MS (2000, the default),
// WARMUP (0), and those of the harness (HALLEY_BIN, NGINX, AMQP_URL).
//
// Run from the repository root: node benches/cluster-recovery.mjs [variant...]

import { execFile } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";

import { ROOT, requireBroker, startCluster, startNginx, unique } from "../tests/interop/cluster-harness.mjs";
import { startServer } from "../tests/interop/helpers.mjs";
import { closeClients, connectClients, runRubric, summarize } from "../tests/interop/recovery-rubric.mjs";

const env = (name, fallback) => Number(process.env[name] ?? fallback);
const RUNS = env("RUNS", 3);
const CLIENTS = env("CLIENTS", 300);
const MESSAGES = env("MESSAGES", 60);
const INTERVAL_MS = env("INTERVAL_MS", 500);
const CUT_MS = [env("CUT_MIN_MS", 8000), env("CUT_MAX_MS", 11000)];
const KILL_AT_MS = env("KILL_AT_MS", 15000);
const WINDOW_MS = env("WINDOW_MS", 30000);
const HEARTBEAT_MS = env("HEARTBEAT_MS", 2000);
const WARMUP = env("WARMUP", 0) === 1;
const HALLEY_BIN = process.env.HALLEY_BIN || path.join(ROOT, "target/release/halley");

const VARIANTS = {
  a: { nodes: 3, cluster: true, kill: false },
  b: { nodes: 3, cluster: true, kill: true },
  single: { nodes: 1, cluster: false, kill: false },
  cluster1: { nodes: 1, cluster: true, kill: false },
};

const deleteQueue = (name) =>
  new Promise((resolve) => execFile("rabbitmqctl", ["delete_queue", name], { timeout: 10_000 }, () => resolve()));

/** Nodes behind nginx for `variant`: `{ base, publisher, victim, cluster, stop }`. */
async function deploy(variant) {
  const recovery = { HALLEY_RECOVERY_WINDOW: String(WINDOW_MS), HALLEY_LOG: "warn" };
  if (!variant.cluster) {
    const server = await startServer(HALLEY_BIN, {
      HALLEY_LISTEN: "127.0.0.1:0",
      HALLEY_DEMO: "false",
      HALLEY_SHUTDOWN_GRACE: "1",
      ...recovery,
    });
    const nginx = await startNginx([Number(new URL(server.url).port)]);
    return {
      base: nginx.base,
      publisher: server,
      async stop() {
        await nginx.stop();
        await server.stop().catch(() => server.process.kill("SIGKILL"));
      },
    };
  }
  const stream = unique("halley.bench.recovery");
  const names = Array.from({ length: variant.nodes }, (_, i) => `bench${i + 1}`);
  const cluster = await startCluster({
    tag: "bench.recovery",
    names,
    heartbeatMs: HEARTBEAT_MS,
    env: { ...recovery, HALLEY_CLUSTER_STREAM: stream },
  }).catch(async (error) => {
    await deleteQueue(stream);
    throw error;
  });
  const nodes = names.map((n) => cluster.nodes.get(n));
  return {
    base: cluster.base,
    publisher: nodes.at(-1),
    victim: nodes[0],
    cluster,
    async stop() {
      await cluster.stop();
      await deleteQueue(stream);
    },
  };
}

async function runOnce(name, variant) {
  const deployment = await deploy(variant);
  let clients = [];
  try {
    clients = await connectClients(deployment.base, CLIENTS);
    const run = await runRubric({
      clients,
      admin: deployment.publisher.admin,
      messages: MESSAGES,
      intervalMs: INTERVAL_MS,
      cutMs: CUT_MS,
      kill: variant.kill && {
        afterSeq: Math.round(KILL_AT_MS / INTERVAL_MS),
        node: deployment.victim,
        cluster: deployment.cluster,
      },
      drainMs: 30_000,
      warmup: WARMUP,
      log: (line) => process.stderr.write(`${line}\n`),
    });
    const result = { variant: name, ...summarize(clients, run, MESSAGES), endMs: run.endMs };
    // One node: session ids carry no node name to tell where a client went.
    if (!variant.cluster) result.moved = null;
    return result;
  } finally {
    closeClients(clients);
    await deployment.stop();
  }
}

const median = (values) => {
  const v = values.filter((x) => typeof x === "number").sort((a, b) => a - b);
  if (!v.length) return null;
  const mid = Math.floor(v.length / 2);
  return v.length % 2 ? v[mid] : (v[mid - 1] + v[mid]) / 2;
};

const fmt = (v, digits = 0) =>
  typeof v === "number"
    ? v.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits })
    : (v ?? "–");

function table(results) {
  const columns = [
    ["runs", (r) => r.length, 0],
    ["delivered %", (r) => median(r.map((x) => x.deliveredPct)), 2],
    ["clients complete", (r) => median(r.map((x) => x.clientsComplete)), 0],
    ["duplicates", (r) => median(r.map((x) => x.duplicates)), 0],
    ["out of order", (r) => median(r.map((x) => x.outOfOrder)), 0],
    ["reconnects", (r) => median(r.map((x) => x.reconnects)), 0],
    ["recovered", (r) => median(r.map((x) => x.recovered)), 0],
    ["via another node", (r) => median(r.map((x) => x.moved)), 0],
    ["p50 ms", (r) => median(r.map((x) => x.latency.p50)), 0],
    ["p99 ms", (r) => median(r.map((x) => x.latency.p99)), 0],
    ["live p50 / p99 ms", (r) => `${fmt(median(r.map((x) => x.liveLatency.p50)))} / ${fmt(median(r.map((x) => x.liveLatency.p99)))}`],
    ["replayed p50 / p99 ms", (r) => `${fmt(median(r.map((x) => x.replayLatency.p50)))} / ${fmt(median(r.map((x) => x.replayLatency.p99)))}`],
    ["killed node's clients / back recovered", (r) => (r[0].kill ? `${fmt(median(r.map((x) => x.kill.held)))} / ${fmt(median(r.map((x) => x.kill.heldBackRecovered)))}` : null)],
  ];
  const lines = [
    `| variant | ${columns.map(([c]) => c).join(" | ")} |`,
    `|---|${columns.map(() => "---").join("|")}|`,
  ];
  for (const [name, runs] of Object.entries(results)) {
    const cells = columns.map(([, f, digits]) => fmt(f(runs), digits));
    lines.push(`| ${name} | ${cells.join(" | ")} |`);
  }
  return lines.join("\n");
}

async function main() {
  const names = process.argv.slice(2).length ? process.argv.slice(2) : ["a", "b", "single"];
  for (const name of names) if (!VARIANTS[name]) throw new Error(`unknown variant ${name} (${Object.keys(VARIANTS)})`);
  if (names.some((n) => VARIANTS[n].cluster)) await requireBroker();
  const stamp = new Date().toISOString().replace(/[-:]/g, "").replace(/\..*/, "Z");
  const dir = path.join(ROOT, "benches/results", `cluster-recovery-${stamp}`);
  mkdirSync(dir, { recursive: true });
  const results = {};
  for (let run = 1; run <= RUNS; run++) {
    for (const name of names) {
      process.stderr.write(`# ${name} run ${run}/${RUNS}\n`);
      const result = await runOnce(name, VARIANTS[name]);
      writeFileSync(path.join(dir, `${name}.${run}.json`), JSON.stringify(result, null, 2));
      const { failures, ...figures } = result;
      console.log(JSON.stringify({ run, ...figures, failures: failures.length }));
      for (const failure of failures.slice(0, 10)) process.stderr.write(`${failure}\n`);
      (results[name] ??= []).push(result);
    }
  }
  const summary = [
    `${CLIENTS} clients, ${MESSAGES} messages every ${INTERVAL_MS} ms, cuts every ${CUT_MS.join("–")} ms, ` +
      `recovery window ${WINDOW_MS} ms, heartbeat ${HEARTBEAT_MS} ms, ${WARMUP ? "warm-up event first" : "no warm-up"}; ` +
      `${os.cpus().length} cores; medians of ${RUNS} runs`,
    "",
    table(results),
  ].join("\n");
  writeFileSync(path.join(dir, "summary.md"), `${summary}\n`);
  console.log(`\n${summary}\n\nresults: ${path.relative(ROOT, dir)}`);
  // The clients' timers are gone; nothing else should keep the process alive.
  process.exit(0);
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
