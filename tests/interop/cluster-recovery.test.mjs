// Connection state recovery on any node of a cluster: three `halley --cluster
// --recovery-window 30000` nodes on the real RabbitMQ, sharing a recovery stream of their own
// (`--cluster-stream`, fresh per run, deleted at the end), behind nginx with fixtures/nginx.conf
// (round-robin, no stickiness), as cluster.test.mjs.
//
// The drop rubric (recovery-rubric.mjs), sized for CI: 80 socket.io-client 4.8 clients on
// WebSocket (reconnectionDelay 500, reconnectionDelayMax 2000), each cutting its own TCP
// connection abruptly every 3–5 s at a random phase (`ws._socket.destroy()`: no close frame,
// the client sees "transport close" and reconnects with its pid and offset, through nginx to
// whichever node comes next); 40 numbered messages `{seq, sentAt}` published with
// `POST /publish` to one node every 300 ms; SIGKILL of another node once message 13 was
// published. Checked, for every client: each seq exactly once, in increasing order; every
// reconnect recovered (`socket.recovered`), many of them on another node than the one the
// client left; every client the killed node held back on a live node, recovered, with
// everything. A failure lists, per client, the missing or repeated seqs, when they were
// published, and the node path of its connections. No warm-up event: a client cut before its
// first event comes back with its pid and no offset, and is replayed from where its session
// started (the second test checks that on its own).
//
// Needs what cluster-harness.mjs needs (RabbitMQ, nginx, the release binary); deleting the
// stream at the end needs rabbitmqctl (best effort).
// Run: node --test cluster-recovery.test.mjs

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";

import { io } from "socket.io-client";

import { startCluster, unique } from "./cluster-harness.mjs";
import { withTimeout } from "./helpers.mjs";
import { closeClients, connectClients, publish, runRubric, summarize } from "./recovery-rubric.mjs";

const NAMES = ["recov1", "recov2", "recov3"];
const HEARTBEAT_MS = 300;
const WINDOW_MS = 30_000;
const STREAM = unique("halley.test.recovery");
const CLIENTS = 80;
const MESSAGES = 40;
const INTERVAL_MS = 300;
const CUT_MS = [3000, 5000];
/** The victim dies once this message was published (about a third of them). */
const KILL_AFTER = 13;

let cluster;
let clients = [];

before(async () => {
  cluster = await startCluster({
    tag: "recovery",
    names: NAMES,
    heartbeatMs: HEARTBEAT_MS,
    env: { HALLEY_RECOVERY_WINDOW: String(WINDOW_MS), HALLEY_CLUSTER_STREAM: STREAM },
  });
  clients = await connectClients(cluster.base, CLIENTS);
});

after(async () => {
  closeClients(clients);
  await cluster?.stop();
  // A stream is a durable queue: delete it once no node would declare it again (best effort).
  await new Promise((resolve) => execFile("rabbitmqctl", ["delete_queue", STREAM], { timeout: 10_000 }, () => resolve()));
});

test("every client gets every message once, in order, through cuts and a node's SIGKILL, recovering on any node", async () => {
  const owners = new Set(clients.map((c) => c.connects[0].node));
  assert.deepEqual([...owners].sort(), NAMES, "round-robin spread the clients over every node");
  const [victim, , publisher] = NAMES.map((name) => cluster.nodes.get(name));

  const run = await runRubric({
    clients,
    admin: publisher.admin,
    messages: MESSAGES,
    intervalMs: INTERVAL_MS,
    cutMs: CUT_MS,
    kill: { afterSeq: KILL_AFTER, node: victim, cluster },
    drainMs: 20_000,
    warmup: false,
    log: (line) => console.log(line),
  });
  const s = summarize(clients, run, MESSAGES);
  const { failures, ...figures } = s;
  console.log(`# ${JSON.stringify(figures)}`);

  assert.deepEqual(
    failures,
    [],
    `${failures.length} clients missed, repeated or reordered seqs, or came back fresh:\n${failures.join("\n")}`,
  );
  assert.deepEqual(run.unfinished.map((u) => u.error), [], "every client got the end event");
  assert.equal(s.delivered, s.expected);
  assert.equal(s.duplicates, 0);
  assert.equal(s.outOfOrder, 0);
  // Each client reconnected several times, all recovered, many through another node.
  assert.ok(s.reconnects >= 2 * CLIENTS, `reconnects: ${s.reconnects} for ${CLIENTS} clients`);
  assert.equal(s.recovered, s.reconnects, "every reconnect recovered");
  assert.ok(s.moved >= s.reconnects / 3, `reconnects through another node: ${s.moved} of ${s.reconnects}`);
  assert.ok(s.reconnectsWithReplay > 0, "some reconnects had missed events replayed");
  // The killed node's clients: back on a live node, recovered, with everything.
  assert.ok(s.kill.held > 0, `${victim.name} held clients when it was killed`);
  assert.equal(s.kill.heldBackRecovered, s.kill.held, `${victim.name}'s clients recovered on a live node`);
  assert.equal(s.kill.heldComplete, s.kill.held, `${victim.name}'s clients got everything`);
});

// socket.io-client sends its `pid` with an `offset` only once it has received an event; until
// then a reconnect carries `{pid}` alone. socket.io, which needs both, answers with a fresh
// session and what was published while the client was away is lost to it. Halley keeps the
// log position where each session started and replays from there, on any node.
test(
  "a client cut before its first event (pid, no offset yet) gets what was published while it was away",
  async () => {
    const outcomes = [];
    for (let i = 1; i <= 6; i++) {
      const socket = io(cluster.base, {
        forceNew: true,
        transports: ["websocket"],
        reconnectionDelay: 500,
        randomizationFactor: 0,
      });
      try {
        const got = [];
        const connected = () => new Promise((resolve) => socket.once("connect", resolve));
        socket.on("away", (data) => got.push(data.n));
        await withTimeout(connected(), 5000, `client ${i} connect`);
        const first = { id: socket.id, node: socket.io.engine.id.slice(0, 6) };
        const back = connected();
        const gone = new Promise((resolve) => socket.once("disconnect", resolve));
        socket.io.engine.transport.ws._socket.destroy();
        await withTimeout(gone, 5000, `client ${i} disconnect`);
        // Published (and logged: the answer waits for the stream) while it is away.
        await publish(cluster.nodes.get(NAMES[1]).admin, { event: "away", data: { n: i } });
        const publishedAt = Date.now();
        await withTimeout(back, 5000, `client ${i} reconnect`);
        const outcome = {
          client: i,
          path: `${first.node} → ${socket.io.engine.id.slice(0, 6)}`,
          backAfterPublish: Date.now() >= publishedAt,
          recovered: socket.recovered === true,
          sameId: socket.id === first.id,
          got: [...got],
        };
        outcomes.push(outcome);
      } finally {
        socket.disconnect();
      }
    }
    console.log(`# pid without offset: ${JSON.stringify(outcomes)}`);
    for (const o of outcomes) {
      assert.ok(o.backAfterPublish, JSON.stringify(o));
      assert.deepEqual({ recovered: o.recovered, sameId: o.sameId, got: o.got }, { recovered: true, sameId: true, got: [o.client] }, JSON.stringify(o));
    }
  },
);
