// Three `halley --cluster` nodes sharing the real RabbitMQ, behind a real nginx using
// fixtures/nginx.conf as shipped (round-robin, no stickiness): any node takes any request and
// forwards it to the node that owns the session.
//
// Clients through nginx: socket.io-client over WebSocket only, over polling only (no upgrade),
// and with the default polling → WebSocket upgrade; Halley's own browser client in Chromium over
// JSONP polling, SSE and htmlfile (through the ActiveXObject stand-in). Checked: a broadcast
// reaches each member of a room exactly once, whichever node holds it; an HTTP publish to one
// node reaches all of them; a polling session survives its requests landing on different
// nodes; `POST /sockets` lists, joins, leaves and disconnects sockets of other nodes; a node
// killed with SIGKILL disturbs nobody else and leaves the membership and the socket lists
// within 3 heartbeats + the request timeout, although long polls of other nodes' clients were
// under way through it; an upgrade probe through another node is tunnelled.
//
// The nodes, nginx and the TCP taps that tell which node each request of a session really
// reached come from cluster-harness.mjs. Needs RabbitMQ on 127.0.0.1:5672 (`AMQP_URL`
// overrides), nginx (`NGINX`, default /usr/sbin/nginx), Chromium and the release binary
// (`cargo build --release`; `HALLEY_BIN` overrides). Run: node --test cluster.test.mjs

import { test, before, after } from "node:test";
import assert from "node:assert/strict";

import { TIMEOUT } from "./helpers.mjs";
import { HTMLFILE_STANDIN, launchBrowser, openClientPage } from "./client-harness.mjs";
import {
  REQUEST_TIMEOUT_MS,
  eventually,
  ioClient,
  membersOf,
  ownerOf,
  postJson,
  startCluster,
  upgraded,
} from "./cluster-harness.mjs";

const HEARTBEAT_MS = 300;
/** The documented bound: a dead node leaves the membership after 3 silent heartbeats, and a
 * query waits at most the request timeout for a node that does not answer. */
const GONE_BOUND_MS = 3 * HEARTBEAT_MS + REQUEST_TIMEOUT_MS;
const NAMES = ["node01", "node02", "node03"];
const ROOM = "lobby";

/** The nodes, nginx in front: see startCluster. */
let cluster;
/** name → { name, url, admin, server, tap } */
let nodes = new Map();
let base;
let browser;
/** Every client opened, closed in `after`. */
const clients = [];
/** The room members of test 1, reused by the later tests. */
let members = [];

const publish = (node, body) => postJson(node, "/publish", { event: "news", ...body });
const sockets = (node, body) => postJson(node, "/sockets", body);
/** Requests the taps saw for session `sid`, by node name. */
const requestsFor = (sid, filter) => cluster.requestsFor(sid, filter);

// --- clients --------------------------------------------------------------------------------

/** socket.io-client through nginx, recording `news` events, disconnects and reconnections. */
async function nodeClient(label, opts) {
  const recorded = await ioClient(base, label, opts);
  const { socket, news, disconnects } = recorded;
  const client = {
    ...recorded,
    news: async () => [...news],
    disconnects: async () => [...disconnects],
    state: async () => ({ id: socket.id, sid: socket.io.engine.id, transport: socket.io.engine.transport.name }),
    subscribe: (room) => socket.timeout(TIMEOUT).emitWithAck("subscribe", room),
    describe: async () =>
      `sid ${client.sid}, now ${JSON.stringify(await client.state())}, connected ${socket.connected}, ` +
      `disconnects ${JSON.stringify(disconnects)}, news ${JSON.stringify(news)}\n` +
      `requests with its sid by node: ${JSON.stringify(requestsFor(client.sid))}`,
    close: async () => socket.disconnect(),
  };
  clients.push(client);
  return client;
}
/** Halley's browser client in its own Chromium page, one transport forced, through nginx. */
async function browserClient(transport) {
  const init = transport === "htmlfile" ? [HTMLFILE_STANDIN] : [];
  const page = await openClientPage(browser.context, base, { init });
  await page.page.evaluate(
    (t) => T.open("s", "/", { transports: [t], upgrade: false, reconnection: false }),
    transport,
  );
  await page.wait("s:connect");
  const [connect] = await page.page.evaluate(() => T.all("s:connect"));
  assert.equal(connect.transport, transport, `halley.js ${transport}: connected over the forced transport`);
  const evaluate = (fn, arg) => page.page.evaluate(fn, arg);
  const client = {
    label: `halley.js ${transport}`,
    page,
    id: connect.id,
    sid: connect.sid,
    owner: ownerOf(connect.sid),
    news: () => evaluate(() => T.all("s:news").map((args) => args[0])),
    disconnects: () => evaluate(() => T.all("s:disconnect")),
    state: () =>
      evaluate(() => ({
        id: T.sockets.s.id,
        sid: T.sockets.s.io.engine.id,
        transport: T.sockets.s.io.engine.transport.name,
      })),
    subscribe: (room) => evaluate((r) => T.ack("s", ["subscribe", r]), room).then((args) => args[0]),
    describe: async () =>
      `sid ${client.sid}, requests with it by node: ${JSON.stringify(requestsFor(client.sid))}\n${await page.state()}`,
    close: async () => {
      assert.deepEqual(page.problems(), [], `${transport} page problems`);
      await page.page.close();
    },
  };
  clients.push(client);
  return client;
}

async function join(client, room) {
  const ack = await client.subscribe(room);
  assert.deepEqual(ack, { ok: true, rooms: [room] }, `${client.label}: subscribe ack`);
}

let seq = 0;
/**
 * Publishes `{tag}` to `rooms` through `node`, then a marker to `markerRooms` (default: the
 * same), waits until every client of `expected ∪ absent` has the marker, then asserts that each
 * of `expected` got the tagged event exactly once and each of `absent` never. The marker goes
 * the same way as the event (same node, same broker channel, same session), so once it is
 * there, any copy of the event is there too.
 */
async function broadcastOnce(node, rooms, expected, { absent = [], markerRooms = rooms } = {}) {
  const tag = `b${++seq}`;
  const marker = `${tag}-marker`;
  const result = await publish(node, { rooms, data: { tag } });
  await publish(node, { rooms: markerRooms, data: { tag: marker } });
  for (const client of [...expected, ...absent]) {
    try {
      await eventually(
        async () => (await client.news()).some((d) => d?.tag === marker),
        `${client.label} (on ${client.owner}) to receive ${marker} published to ${node.name}`,
      );
    } catch (error) {
      error.message += `\n${await client.describe()}`;
      throw error;
    }
  }
  for (const client of expected) {
    const copies = (await client.news()).filter((d) => d?.tag === tag).length;
    assert.equal(copies, 1, `${client.label} (on ${client.owner}): copies of ${tag} published to ${node.name}`);
  }
  for (const client of absent) {
    const copies = (await client.news()).filter((d) => d?.tag === tag).length;
    assert.equal(copies, 0, `${client.label} (on ${client.owner}) must not get ${tag}`);
  }
  return result;
}


// --- setup ----------------------------------------------------------------------------------

before(async () => {
  cluster = await startCluster({ tag: "cluster", names: NAMES, heartbeatMs: HEARTBEAT_MS });
  ({ nodes, base } = cluster);
  browser = await launchBrowser();
});

after(async () => {
  for (const client of clients) await client.close().catch(() => {});
  await browser?.close().catch(() => {});
  await cluster?.stop();
});

// --- tests ----------------------------------------------------------------------------------

test("clients on every transport, spread over the nodes, each get a room broadcast exactly once", async () => {
  const ws = await nodeClient("socket.io-client websocket", { transports: ["websocket"] });
  const polling = await nodeClient("socket.io-client polling", { transports: ["polling"], upgrade: false });
  members = [ws, polling];
  for (const transport of ["jsonp", "sse", "htmlfile"]) members.push(await browserClient(transport));
  // Round-robin decides where each handshake lands; add WebSocket clients until every node
  // holds at least one member, so that every node has to deliver.
  for (let i = 0; new Set(members.map((c) => c.owner)).size < NAMES.length; i++) {
    assert.ok(i < 9, `members still on ${[...new Set(members.map((c) => c.owner))]} only after ${i} extra clients`);
    members.push(await nodeClient(`socket.io-client websocket #${i + 2}`, { transports: ["websocket"] }));
  }
  for (const client of members) {
    assert.ok(NAMES.includes(client.owner), `${client.label}: sid ${client.sid} names a node`);
    await join(client, ROOM);
  }
  // Through nginx, the HTTP transports' requests (JSONP polls, SSE/htmlfile POSTs, ...) do not
  // all land on their session's node. (Per client that is chance; over all of them it is not.)
  const spread = Object.fromEntries(
    members.filter((c) => c.page || c.label.includes("polling")).map((c) => [c.label, { owner: c.owner, ...requestsFor(c.sid) }]),
  );
  assert.ok(
    Object.values(spread).some(({ owner, ...by }) => Object.entries(by).some(([name, n]) => name !== owner && n > 0)),
    `some request reached another node than its session's: ${JSON.stringify(spread)}`,
  );
  // A broadcast published to each node in turn.
  for (const node of nodes.values()) await broadcastOnce(node, [ROOM], members);
  for (const client of members) {
    assert.deepEqual(await client.disconnects(), [], `${client.label}: no disconnect`);
    const state = await client.state();
    assert.deepEqual(state.sid, client.sid, `${client.label}: same session`);
  }
});

test("an HTTP publish to one node reaches the room's clients on all nodes", async () => {
  assert.ok(members.length >= 5, "the room of the first test");
  assert.deepEqual([...new Set(members.map((c) => c.owner))].sort(), NAMES);
  const node = nodes.get("node02");
  const { delivered } = await broadcastOnce(node, [ROOM], members);
  assert.equal(delivered, members.filter((c) => c.owner === node.name).length, "delivered counts node02's own sockets");
});

test("a polling client keeps its session while its requests land on different nodes", async () => {
  const client = await nodeClient("socket.io-client polling (session check)", {
    transports: ["polling"],
    upgrade: false,
    reconnection: true,
  });
  const { id, sid } = client;
  for (let i = 0; i < 20; i++) {
    const ack = await client.subscribe(`poll-${i}`);
    assert.deepEqual(ack, { ok: true, rooms: [`poll-${i}`] }, `acked emit #${i}`);
    assert.equal(client.socket.id, id, `socket.id after emit #${i}`);
    assert.equal(client.socket.io.engine.id, sid, `engine id after emit #${i}`);
    assert.equal(client.socket.io.engine.transport.name, "polling");
  }
  assert.deepEqual(await client.disconnects(), [], "no disconnect");
  assert.deepEqual(client.reconnects, [], "no reconnection attempt");

  const by = requestsFor(sid);
  const reached = Object.entries(by).filter(([, n]) => n > 0).map(([name]) => name);
  assert.ok(reached.length >= 2, `the session's requests reached one node only: ${JSON.stringify(by)}`);
  assert.ok(reached.some((n) => n !== client.owner), `a request reached a node other than ${client.owner}: ${JSON.stringify(by)}`);
  // Also posts must have been forwarded (the emits), not only the long polls.
  const posts = requestsFor(sid, (r) => r.method === "POST");
  assert.ok(
    Object.entries(posts).some(([name, n]) => name !== client.owner && n > 0),
    `a POST went through another node: ${JSON.stringify(posts)}`,
  );

  // Every acked emit joined its room on the owner: ask a node that is not the owner.
  const other = nodes.get(NAMES.find((n) => n !== client.owner));
  const { sockets: found } = await sockets(other, { action: "list", socket: id });
  assert.equal(found.length, 1, JSON.stringify(found));
  assert.equal(found[0].node, client.owner);
  for (let i = 0; i < 20; i++) assert.ok(found[0].rooms.includes(`poll-${i}`), `room poll-${i} in ${found[0].rooms}`);
  await client.close();
});

test("one Engine.IO session driven by hand through each node directly", async () => {
  const [a, b, c] = NAMES.map((n) => nodes.get(n));
  const handshake = await (await fetch(`${a.url}/socket.io/?EIO=4&transport=polling`)).text();
  assert.match(handshake, /^0\{/);
  const { sid } = JSON.parse(handshake.slice(1));
  assert.equal(ownerOf(sid), a.name);
  const poll = async (node) => {
    const res = await fetch(`${node.url}/socket.io/?EIO=4&transport=polling&sid=${sid}`);
    const text = await res.text();
    assert.equal(res.status, 200, `GET via ${node.name}: ${text}`);
    return text.split("\x1e");
  };
  const send = async (node, payload) => {
    const res = await fetch(`${node.url}/socket.io/?EIO=4&transport=polling&sid=${sid}`, {
      method: "POST",
      headers: { "content-type": "text/plain;charset=UTF-8" },
      body: payload,
    });
    assert.equal(res.status, 200, `POST via ${node.name}: ${await res.text()}`);
  };
  await send(b, "40");
  const [connect] = await poll(c);
  assert.match(connect, /^40\{"sid":"/, "the CONNECT answer, read through a third node");
  const socketId = JSON.parse(connect.slice(2)).sid;
  await send(c, '421["subscribe","by-hand"]');
  assert.deepEqual(await poll(b), ['431[{"ok":true,"rooms":["by-hand"]}]']);
  const { sockets: found } = await sockets(b, { action: "list", room: "by-hand" });
  assert.deepEqual(found.map((s) => [s.id, s.node]), [[socketId, a.name]]);
  await send(b, "1");
  await eventually(
    async () => (await sockets(c, { action: "list", room: "by-hand" })).sockets.length === 0,
    "the session closed through node02 to be gone from node03's list",
  );
});

test("a request claiming to be forwarded by a node is refused unless a node signed it", async () => {
  const [a, b] = NAMES.map((n) => nodes.get(n));
  const handshake = await (await fetch(`${a.url}/socket.io/?EIO=4&transport=polling`)).text();
  const { sid } = JSON.parse(handshake.slice(1));
  const url = (node) => `${node.url}/socket.io/?EIO=4&transport=polling&sid=${sid}`;
  // Through the other node, genuinely forwarded: the session's first poll answers.
  const genuine = await fetch(url(b));
  assert.equal(genuine.status, 200, await genuine.text());
  for (const node of [a, b]) {
    const before = (await membersOf(node)).rejected.forward_mark;
    const res = await fetch(url(node), { headers: { "x-halley-forwarded": "1" } });
    assert.equal(res.status, 403, `${node.name}`);
    assert.deepEqual(await res.json(), { code: 4, message: "Forbidden" });
    assert.equal((await membersOf(node)).rejected.forward_mark, before + 1, `${node.name} counted it`);
  }
  await fetch(url(a), { method: "POST", body: "1" });
});

test("POST /sockets lists, joins, leaves and disconnects sockets of other nodes", async () => {
  // list: every member, from each node, with the node it lives on.
  const expected = members.map((c) => [c.id, c.owner]).sort();
  for (const node of nodes.values()) {
    const started = Date.now();
    const { sockets: found } = await sockets(node, { action: "list", room: ROOM });
    assert.ok(Date.now() - started < REQUEST_TIMEOUT_MS, "every node answered: no waiting for the timeout");
    assert.deepEqual(found.map((s) => [s.id, s.node]).sort(), expected, `list from ${node.name}`);
    for (const s of found) {
      assert.equal(s.ns, "/");
      assert.ok(s.rooms.includes(ROOM), `${s.id} rooms ${s.rooms}`);
    }
  }

  // join: a socket of another node joins a room; a broadcast to that room reaches it alone.
  const joiner = members.find((c) => c.label === "socket.io-client websocket");
  const via = nodes.get(NAMES.find((n) => n !== joiner.owner));
  assert.deepEqual(await sockets(via, { action: "join", socket: joiner.id, target: "joined" }), { ok: true });
  await broadcastOnce(via, ["joined"], [joiner], { absent: members.filter((c) => c !== joiner), markerRooms: [ROOM] });
  const { sockets: inJoined } = await sockets(via, { action: "list", room: "joined" });
  assert.deepEqual(inJoined.map((s) => [s.id, s.node]), [[joiner.id, joiner.owner]]);

  // leave: a polling socket of another node leaves the room; the next broadcast skips it.
  const leaver = members.find((c) => c.label === "halley.js jsonp");
  const via2 = nodes.get(NAMES.find((n) => n !== leaver.owner));
  assert.deepEqual(await sockets(via2, { action: "leave", socket: leaver.id, target: ROOM }), { ok: true });
  const { sockets: inRoom } = await sockets(via2, { action: "list", room: ROOM });
  assert.ok(!inRoom.some((s) => s.id === leaver.id), "left the room on its node");
  assert.equal(inRoom.length, members.length - 1);
  await broadcastOnce(via2, [ROOM], members.filter((c) => c !== leaver), {
    absent: [leaver],
    markerRooms: [ROOM, leaver.id],
  });
  // ... and back in, by the same route.
  assert.deepEqual(await sockets(via2, { action: "join", socket: leaver.id, target: ROOM }), { ok: true });
  await broadcastOnce(via2, [ROOM], members);

  // disconnect: a socket of another node is disconnected; the client sees it.
  const victim = await nodeClient("socket.io-client websocket (to disconnect)", { transports: ["websocket"] });
  const via3 = nodes.get(NAMES.find((n) => n !== victim.owner));
  assert.deepEqual(await sockets(via3, { action: "disconnect", socket: victim.id }), { ok: true });
  await eventually(async () => (await victim.disconnects()).length > 0, "the disconnect to reach the client");
  assert.deepEqual(await victim.disconnects(), ["io server disconnect"]);
  const { sockets: left } = await sockets(via3, { action: "list", socket: victim.id });
  assert.deepEqual(left, []);
  for (const client of members) assert.deepEqual(await client.disconnects(), [], `${client.label}: no disconnect`);
});

test("a polling → WebSocket upgrade whose probe goes through another node keeps the session", async () => {
  // nginx round-robin may send the probe to the owner; retry until it went elsewhere.
  let crossed = null;
  for (let attempt = 0; attempt < 8 && !crossed; attempt++) {
    const client = await nodeClient(`socket.io-client default transports #${attempt + 1}`, {});
    const { sid, id } = client;
    const engine = client.socket.io.engine;
    await upgraded(client.socket);
    assert.equal(engine.id, sid, "same Engine.IO session after the upgrade");
    assert.equal(client.socket.id, id);
    assert.deepEqual(await client.subscribe("upgraded"), { ok: true, rooms: ["upgraded"] });
    await broadcastOnce(nodes.get(client.owner), ["upgraded"], [client]);
    const probes = requestsFor(sid, (r) => r.transport === "websocket");
    assert.equal(Object.values(probes).reduce((a, b) => a + b, 0), 1, `one upgrade request: ${JSON.stringify(probes)}`);
    if (probes[client.owner] === 0) crossed = { client, probes };
    assert.deepEqual(await client.disconnects(), []);
    await client.close();
  }
  assert.ok(crossed, "no upgrade probe went through another node in 8 attempts");
});

test("SIGKILL of a node: the others' clients are undisturbed, the node leaves within the bound", async () => {
  // The victim: a node that does not hold the socket.io-client polling member, so that member
  // can have a long poll under way through the victim (forwarded to its owner) when it dies.
  const poller = members.find((c) => c.label === "socket.io-client polling");
  const victim = nodes.get(NAMES.findLast((n) => n !== poller.owner));
  const [a, b] = NAMES.filter((n) => n !== victim.name).map((n) => nodes.get(n));
  const survivors = members.filter((c) => c.owner !== victim.name);
  const lost = members.filter((c) => c.owner === victim.name);
  assert.ok(lost.length > 0 && survivors.length > 0);
  const { sockets: listedBefore } = await sockets(a, { action: "list", room: ROOM });
  assert.equal(listedBefore.length, members.length);
  // Each broadcast makes the polling clients poll again, round-robin: soon one of the
  // survivors' long polls waits in the victim, forwarded to the survivor's owner.
  const survivorSids = new Set(survivors.map((c) => c.sid));
  const cut = () => victim.tap.waitingPolls().filter((sid) => survivorSids.has(sid));
  for (let i = 0; cut().length === 0; i++) {
    assert.ok(i < 15, `no survivor's long poll went through ${victim.name} after ${i} broadcasts`);
    await broadcastOnce(a, [ROOM], members);
  }
  const cutPolls = cut().map((sid) => survivors.find((c) => c.sid === sid).label);

  // A dead node refuses connections: its tap stops accepting at the same moment. Requests
  // under way through it are cut when the kernel closes the dead node's sockets.
  const killed = await cluster.kill(victim);
  // Watch the survivors' membership from now on.
  const goneMs = {};
  const dropped = Promise.all(
    [a, b].map(async (node) => {
      await eventually(async () => !(await membersOf(node)).members.includes(victim.name), `${node.name} to drop ${victim.name}`, 5000);
      goneMs[node.name] = Date.now() - killed;
    }),
  );
  dropped.catch(() => {});

  // Right away, a list does not wait past the request timeout for the dead node.
  let started = Date.now();
  const { sockets: listed } = await sockets(a, { action: "list", room: ROOM });
  const listMs = Date.now() - started;

  // The survivors' clients go on: a broadcast from either node reaches each once, and nothing
  // happened to their sessions (a long poll cut in the victim is retried by nginx elsewhere).
  await broadcastOnce(a, [ROOM], survivors);
  await broadcastOnce(b, [ROOM], survivors);
  for (const client of survivors) {
    assert.deepEqual(await client.disconnects(), [], `${client.label} (on ${client.owner}): no disconnect`);
    const state = await client.state();
    assert.equal(state.sid, client.sid, `${client.label}: same session`);
    assert.equal(state.id, client.id, `${client.label}: same socket`);
  }

  assert.ok(listMs <= REQUEST_TIMEOUT_MS + 400, `list right after the kill took ${listMs} ms`);
  assert.deepEqual(
    listed.map((s) => [s.id, s.node]).sort(),
    survivors.map((c) => [c.id, c.owner]).sort(),
    `the list from ${a.name} right after the kill (${listMs} ms): the survivors' sockets, not the dead node's`,
  );

  // The membership drops it on both survivors.
  await dropped;
  for (const [name, ms] of Object.entries(goneMs)) {
    assert.ok(ms <= GONE_BOUND_MS, `${name} dropped ${victim.name} after ${ms} ms (bound ${GONE_BOUND_MS} ms)`);
  }
  for (const node of [a, b]) {
    const cluster = await membersOf(node);
    assert.deepEqual(cluster.members, [a, b].filter((n) => n !== node).map((n) => n.name));
  }
  // Once it is gone, lists no longer wait for it at all.
  for (const node of [a, b]) {
    started = Date.now();
    const { sockets: listedAfter } = await sockets(node, { action: "list", room: ROOM });
    assert.ok(Date.now() - started < REQUEST_TIMEOUT_MS / 2, "no waiting for a departed node");
    assert.deepEqual(
      listedAfter.map((s) => [s.id, s.node]).sort(),
      survivors.map((c) => [c.id, c.owner]).sort(),
      `the list from ${node.name} once ${victim.name} left`,
    );
  }
  console.log(
    `# ${victim.name} killed with long polls of ${cutPolls.join(", ")} under way through it; ` +
      `a list right after took ${listMs} ms; the membership dropped it after ` +
      `${JSON.stringify(goneMs)} ms (bound ${GONE_BOUND_MS}); ${lost.length} of its clients lost`,
  );
});
