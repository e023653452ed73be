// Publish order and exactly-once delivery of a RabbitMQ work queue in a cluster: three
// `halley --cluster` nodes on the real RabbitMQ, all consuming one queue of their own
// (`--amqp-queue`, fresh per run: Halley declares it durable with x-single-active-consumer),
// behind nginx with fixtures/nginx.conf (round-robin, no stickiness), as cluster.test.mjs.
//
// Clients: socket.io-client over WebSocket only, over polling only (no upgrade) and with the
// default polling → WebSocket upgrade, one of each kind at least on every node. A producer
// (pika, tests/interop/python/amqp_publisher.py) publishes numbered messages `{n}`, each with
// an AMQP message_id. Checked:
//
// - every client gets every message exactly once, in publish order; one node consumes;
// - a message published twice with the same message_id is shown once;
// - SIGKILL of the consuming node in the middle of a stream: another node takes the queue over
//   (RabbitMQ's single active consumer), the other nodes' clients (those not cut, below) keep their sessions and end
//   with every message exactly once, in order, what the dead node had delivered to the cluster
//   but not acked included; ids it had delivered, published again after the failover, are not
//   shown again. Cut: its own clients, and clients of other nodes whose WebSocket upgrade went
//   through it (it tunnelled that WebSocket to their node, and the tunnel dies with it). They
//   reconnect through nginx to a live node: what they got is in order without duplicates, and
//   nothing published before the stream or once they are back is missing (what was published
//   while they were away is lost to them: no recovery across nodes).
//
// Needs what cluster-harness.mjs needs (RabbitMQ, nginx, the release binary) and a Python with
// pika (`HALLEY_PYTHON`, default target/pyvenv as tests/run-all.sh makes it).
// Run: node --test cluster-order.test.mjs

import { test, before, after } from "node:test";
import assert from "node:assert/strict";

import { eventually, healthOf, ioClient, startCluster, startPublisher, unique, upgraded } from "./cluster-harness.mjs";

const NAMES = ["order1", "order2", "order3"];
const HEARTBEAT_MS = 300;
const QUEUE = unique("halley.test.order");
/** How long a batch may take to reach every client (thousands of messages, a dozen clients). */
const BATCH_MS = 20_000;

/** Socket.io-client options of each kind of client. */
const KINDS = {
  websocket: { transports: ["websocket"] },
  polling: { transports: ["polling"], upgrade: false },
  upgrade: {},
};

let cluster;
/** name → { name, url, admin, server, tap } */
let nodes = new Map();
let publisher;
/** The node that consumes the queue (RabbitMQ's single active consumer), until it dies. */
let consumer;
const clients = [];
/** Every number published, once each (a repeat with the same id is not listed again), in order. */
const published = [];
let next = 1;

// --- helpers --------------------------------------------------------------------------------

/** The message numbered `n`: its id names this run's queue and `n`. */
const message = (n) => ({ body: { n }, message_id: `${QUEUE}#${n}` });

/** `count` new messages (listed in `published`); the first and last numbers. */
function batch(count) {
  const messages = [];
  for (let i = 0; i < count; i++) {
    messages.push(message(next));
    published.push(next++);
  }
  return { messages, first: messages[0].body.n, last: messages.at(-1).body.n };
}

/** The numbers `client` received, in arrival order. */
const numbers = (client) => client.news.map((data) => data?.n);

/** `[1, 2, 3, 7]` → `["1-3", "7"]`. */
function ranges(numbers) {
  const spans = [];
  for (const n of numbers) {
    const last = spans.at(-1);
    if (last && last[1] === n - 1) last[1] = n;
    else spans.push([n, n]);
  }
  return spans.map(([from, to]) => (from === to ? `${from}` : `${from}-${to}`));
}

/**
 * What is wrong with `got` against the numbers `expected` (both in order), as ranges: missing
 * numbers, duplicates, numbers that came after a greater one, numbers not expected.
 */
function audit(got, expected) {
  const seen = new Set();
  const duplicates = [];
  const reordered = [];
  got.forEach((n, i) => {
    if (seen.has(n)) duplicates.push(n);
    else if (i > 0 && n < got[i - 1]) reordered.push(`${n} after ${got[i - 1]}`);
    seen.add(n);
  });
  const wanted = new Set(expected);
  return {
    missing: ranges(expected.filter((n) => !seen.has(n))),
    duplicates: ranges(duplicates),
    reordered: reordered.slice(0, 10),
    unexpected: ranges(got.filter((n) => !wanted.has(n))),
  };
}
const CLEAN = { missing: [], duplicates: [], reordered: [], unexpected: [] };

/** A client, for assertion messages. */
const describe = (client) =>
  `${client.label} (session ${client.sid} on ${client.owner}, transport ${client.socket.io.engine?.transport?.name}, ` +
  `connects ${JSON.stringify(client.connects)}, disconnects ${JSON.stringify(client.disconnects)})`;

/** Waits until `client` has received message `n` (or a later one). */
const reach = (client, n, ms = BATCH_MS) =>
  client.until(() => client.news.some((data) => data?.n >= n), `to receive message ${n} (got ${client.news.length})`, ms);

/** Each node's `amqp` block of /healthz, by name (live nodes only). */
async function amqpOf(names = [...nodes.keys()]) {
  return Object.fromEntries(await Promise.all(names.map(async (name) => [name, (await healthOf(nodes.get(name))).amqp])));
}

/** The nodes whose bridge consumed anything so far. */
const consumers = (stats) => Object.keys(stats).filter((name) => stats[name].consumed > 0);

/**
 * Whether `client`'s WebSocket went through the consumer: an upgrade request that reaches
 * another node than the session's is tunnelled by that node to the owner, and dies with it.
 * (A WebSocket-only client's handshake is its WebSocket: it lands on its owner.)
 */
const throughConsumer = (client) =>
  client.owner !== consumer && cluster.requestsFor(client.sid, (r) => r.transport === "websocket")[consumer] > 0;

// --- setup ----------------------------------------------------------------------------------

before(async () => {
  publisher = await startPublisher();
  cluster = await startCluster({
    tag: "order",
    names: NAMES,
    heartbeatMs: HEARTBEAT_MS,
    env: { HALLEY_AMQP_QUEUE: QUEUE },
  });
  nodes = cluster.nodes;
  // Every node consumes the queue, declared by whichever came first, with a single active
  // consumer (the others' declarations confirmed it).
  for (const node of nodes.values()) {
    await eventually(async () => (await healthOf(node)).amqp?.queue_order, `${node.name}'s bridge to declare ${QUEUE}`);
    const { amqp } = await healthOf(node);
    assert.equal(amqp.connected, true, `${node.name}: ${JSON.stringify(amqp)}`);
    assert.equal(amqp.queue_order, "single-active-consumer", `${node.name}: ${JSON.stringify(amqp)}`);
  }
  // A first message, to a room nobody joins, tells which node is the active consumer.
  await publisher.publish(QUEUE, [{ body: { n: 0 }, message_id: `${QUEUE}#warm-up`, headers: { "x-room": "nobody" } }]);
  const stats = await eventually(async () => {
    const all = await amqpOf();
    return consumers(all).length > 0 && all;
  }, "a node to consume the first message");
  [consumer] = consumers(stats);

  // Round-robin decides where each handshake lands: clients of each kind until every node
  // holds one of that kind, and one upgraded client of another node than the consumer has its
  // WebSocket elsewhere too (see `throughConsumer`). They reconnect, quickly, when cut.
  for (const [kind, opts] of Object.entries(KINDS)) {
    const owners = new Set();
    let apart = kind !== "upgrade";
    for (let i = 1; owners.size < NAMES.length || !apart; i++) {
      assert.ok(i <= 12, `${kind} clients: on ${[...owners]} only, or all cut by ${consumer}'s death, after ${i - 1}`);
      const client = await ioClient(cluster.base, `${kind} #${i}`, {
        ...opts,
        reconnection: true,
        reconnectionDelay: 100,
        reconnectionDelayMax: 500,
      });
      if (kind === "upgrade") await upgraded(client.socket);
      clients.push(client);
      owners.add(client.owner);
      apart ||= client.owner !== consumer && !throughConsumer(client);
    }
  }
});

after(async () => {
  for (const client of clients) client.socket.disconnect();
  await cluster?.stop();
  // The queue is durable: deleted once no node would declare it again.
  await publisher?.deleteQueue(QUEUE).catch(() => {});
  await publisher?.close();
});

// --- tests ----------------------------------------------------------------------------------

test("every client gets every message exactly once, in publish order; one node consumes", async () => {
  const before = await amqpOf();
  const { messages, last } = batch(500);
  await publisher.publish(QUEUE, messages);
  await Promise.all(clients.map((client) => reach(client, last)));
  for (const client of clients) assert.deepEqual(audit(numbers(client), published), CLEAN, describe(client));
  const after = await amqpOf();
  assert.deepEqual(consumers(after), [consumer], `one consumer: ${JSON.stringify(after)}`);
  assert.equal(after[consumer].consumed - before[consumer].consumed, messages.length, JSON.stringify(after));
});

test("a message published twice with the same message_id is shown once", async () => {
  const before = await amqpOf();
  const twice = batch(1).messages[0];
  const { messages, last } = batch(1);
  await publisher.publish(QUEUE, [twice, twice, ...messages]);
  await Promise.all(clients.map((client) => reach(client, last)));
  for (const client of clients) {
    assert.deepEqual(audit(numbers(client), published), CLEAN, describe(client));
    assert.equal(numbers(client).filter((n) => n === twice.body.n).length, 1, `${client.label}: copies`);
  }
  const after = await amqpOf();
  assert.equal(after[consumer].consumed - before[consumer].consumed, 3, JSON.stringify(after));
  assert.equal(after[consumer].duplicates - before[consumer].duplicates, 1, `${consumer}: ${JSON.stringify(after)}`);
});

test("SIGKILL of the consuming node mid-stream: the queue fails over, order and exactly-once hold", async () => {
  const before = await amqpOf();
  const victim = nodes.get(consumer);
  const alive = NAMES.filter((n) => n !== victim.name);
  // Cut by the death: the victim's own clients and those whose WebSocket it tunnels.
  const cut = clients.filter((c) => c.owner === victim.name || throughConsumer(c));
  const undisturbed = clients.filter((c) => !cut.includes(c));
  const kinds = (list) => new Set(list.map((c) => c.label.split(" ")[0]));
  assert.deepEqual(kinds(cut.filter((c) => c.owner === victim.name)), kinds(clients), "every kind on the victim");
  assert.deepEqual(kinds(undisturbed), kinds(clients), "and on the other nodes");
  const beforeKill = [...published];

  // A long stream; the victim is killed once a client of another node has 100 of it.
  const a = batch(3000);
  const publishing = publisher.publish(QUEUE, a.messages);
  const [watcher] = undisturbed;
  await reach(watcher, a.first + 100);
  const killed = await cluster.kill(victim);
  const atKill = numbers(watcher).at(-1);
  await publishing;
  // More while the queue fails over, then more once the cut clients are back.
  const b = batch(500);
  await publisher.publish(QUEUE, b.messages);
  await Promise.all(cut.map((c) => c.until(() => c.connects.length > 1, `to reconnect after ${victim.name} died`, 15_000)));
  const backMs = Date.now() - killed;
  // Ids the victim delivered, published again: the cluster has seen them, they are not shown.
  const again = [message(1), message(beforeKill.at(-1)), message(a.first), message(atKill)];
  const c = batch(300);
  await publisher.publish(QUEUE, [...again, ...c.messages]);
  await Promise.all(clients.map((client) => reach(client, c.last)));

  assert.ok(atKill < a.last, `the kill came in the middle of the stream (at ${atKill} of ${a.first}..${a.last})`);
  for (const client of undisturbed) {
    assert.deepEqual(audit(numbers(client), published), CLEAN, describe(client));
    assert.deepEqual(client.disconnects, [], `${describe(client)}: no disconnect`);
    assert.deepEqual(client.connects, [{ id: client.id, sid: client.sid }], `${describe(client)}: same session`);
  }
  const missed = {};
  for (const client of cut) {
    const what = describe(client);
    assert.ok(alive.includes(client.connects.at(-1).sid.slice(0, 6)), `${what}: back on a live node`);
    const got = numbers(client);
    // Whatever it got, in order and once; nothing published before the stream, nor once it
    // was back, missing (in between, no recovery across nodes: it may miss some).
    const { missing, ...wrong } = audit(got, published);
    assert.deepEqual(wrong, { duplicates: [], reordered: [], unexpected: [] }, what);
    assert.deepEqual(audit(got, [...beforeKill, ...published.slice(published.indexOf(c.first))]).missing, [], what);
    missed[client.label] = missing.join(",");
  }

  // One live node took the queue over; what it dropped as delivered already is counted.
  const after = await amqpOf(alive);
  const takers = alive.filter((n) => after[n].consumed > before[n].consumed);
  assert.equal(takers.length, 1, `one node took the queue over: ${JSON.stringify(after)}`);
  const [taker] = takers;
  const dropped = after[taker].duplicates - before[taker].duplicates;
  assert.ok(dropped >= again.length, `${taker} dropped the ids published again: ${JSON.stringify(after[taker])}`);
  console.log(
    `# ${victim.name} killed at message ${atKill} of ${a.first}..${a.last}; ${taker} took the queue over, ` +
      `consumed ${after[taker].consumed - before[taker].consumed}, dropped ${dropped} as delivered already ` +
      `(${again.length} published again, ${dropped - again.length} redelivered after the kill); ` +
      `${cut.length} clients cut (${cut.length - cut.filter((c) => c.owner === victim.name).length} of other nodes, ` +
      `tunnelled through it), all back after ${backMs} ms, missing ${JSON.stringify(missed)}; ` +
      `${undisturbed.length} undisturbed clients got all ${published.length} messages, once each, in order`,
  );
});
