// Several real `halley --cluster` nodes on the real RabbitMQ, behind a real nginx running
// fixtures/nginx.conf (round-robin, no stickiness), for cluster.test.mjs,
// cluster-order.test.mjs and the other cluster-*.test.mjs:
//
// - `startCluster({ tag, names, heartbeatMs, env, amqpUrl })` starts one node per name (a
//   cluster exchange and a shared secret of their own, `env` added to each node's environment,
//   on the broker at `amqpUrl`, default the shared one), waits
//   until every node lists the others, puts nginx in front and returns
//   `{ nodes, base, exchange, requestsFor, kill, stop }`.
// - Each node sits behind a tiny TCP tap (nginx → tap → node) that only records the request
//   lines nginx sends it, so a test can tell which node each request of a session really
//   reached; nodes forward to each other directly.
// - `ioClient(base, label, opts)`: a socket.io-client through nginx recording `news` events,
//   disconnects and reconnections, with `until(probe)` to wait for them.
// - `startPublisher()`: publishes to RabbitMQ through pika (tests/interop/python/amqp_publisher.py).
//
// Needs RabbitMQ on 127.0.0.1:5672 (`AMQP_URL` overrides), nginx (`NGINX`, default
// /usr/sbin/nginx) and the release binary (`cargo build --release --bins`; `HALLEY_BIN`
// overrides); the publisher needs a Python with pika (`HALLEY_PYTHON`, default the venv
// tests/run-all.sh makes in target/pyvenv, else python3).

import assert from "node:assert/strict";
import { spawn, execFile } from "node:child_process";
import crypto from "node:crypto";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, writeFile, rm } from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";

import { io } from "socket.io-client";

import { canConnect, freePort, startServer, waitForPort, withTimeout, TIMEOUT } from "./helpers.mjs";

const HERE = path.dirname(new URL(import.meta.url).pathname);
export const ROOT = path.resolve(HERE, "../..");
const HALLEY_BIN = process.env.HALLEY_BIN || path.join(ROOT, "target/release/halley");
const NGINX = process.env.NGINX || "/usr/sbin/nginx";
export const AMQP_URL = process.env.AMQP_URL || "amqp://guest:guest@127.0.0.1:5672/%2f";
const VENV_PYTHON = path.join(ROOT, "target/pyvenv/bin/python");
const PYTHON = process.env.HALLEY_PYTHON || (existsSync(VENV_PYTHON) ? VENV_PYTHON : "python3");

/** The cluster's request timeout (not configurable): how long a cross-node query waits. */
export const REQUEST_TIMEOUT_MS = 1000;

/** A name unique to this run, so that concurrent or earlier runs (and their leftovers) never mix in. */
export const unique = (prefix) => `${prefix}.${process.pid}.${Date.now().toString(36)}`;

/** Polls `probe` (sync or async) every 20 ms until it returns a truthy value; returns it. */
export async function eventually(probe, what, ms = TIMEOUT) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    last = await probe();
    if (last) return last;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

export async function getJson(url) {
  const res = await fetch(url);
  assert.equal(res.status, 200, `GET ${url}`);
  return res.json();
}

/** POSTs JSON to one node's admin listener (loopback: no token needed); answers the parsed body. */
export async function postJson(node, route, body) {
  const res = await fetch(`${node.admin}${route}`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  const text = await res.text();
  assert.equal(res.status, 200, `POST ${route} to ${node.name} ${JSON.stringify(body)} → ${res.status} ${text}`);
  return JSON.parse(text);
}

/** A node's admin `/healthz`: `{ status, sessions, amqp, cluster }`. */
export const healthOf = (node) => getJson(`${node.admin}/healthz`);

export async function membersOf(node) {
  return (await healthOf(node)).cluster;
}

/** The node a session lives on: its sid starts with the node's name (6 characters). */
export const ownerOf = (sid) => sid.slice(0, 6);

/**
 * A TCP relay in front of a node that records each HTTP request line nginx sends through it
 * (`{ method, sid, transport }`). It parses nothing else and changes nothing.
 */
export async function startTap(targetPort) {
  const requests = [];
  const open = new Set();
  // Per connection, the request under way (nginx does not pipeline: one at a time).
  const current = new Map();
  const server = net.createServer((down) => {
    const up = net.connect(targetPort, "127.0.0.1");
    open.add(down);
    open.add(up);
    down.once("close", () => {
      open.delete(down);
      current.delete(down);
    });
    up.once("close", () => open.delete(up));
    up.on("data", () => {
      const request = current.get(down);
      if (request) request.answered = true;
    });
    let tail = "";
    down.on("data", (chunk) => {
      const lines = (tail + chunk.toString("latin1")).split("\r\n");
      tail = lines.pop();
      if (tail.length > 8192) tail = ""; // WebSocket frames after an upgrade: not HTTP.
      for (const line of lines) {
        // Not anchored: a request line follows the previous request's body on a kept-alive
        // connection, and a polling body does not end with a line break.
        const m = /(GET|POST|OPTIONS) (\/socket\.io\/\S*) HTTP\/1\.[01]$/.exec(line);
        if (!m) continue;
        const query = new URL(m[2], "http://x").searchParams;
        const request = { method: m[1], sid: query.get("sid"), transport: query.get("transport"), answered: false };
        requests.push(request);
        current.set(down, request);
      }
    });
    down.pipe(up);
    up.pipe(down);
    down.on("error", () => up.destroy());
    up.on("error", () => down.destroy());
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: server.address().port,
    requests,
    /** Sids with a long poll (GET, polling or JSONP) waiting here for its answer. */
    waitingPolls: () =>
      [...current.values()]
        .filter((r) => r.method === "GET" && r.transport === "polling" && r.sid && !r.answered)
        .map((r) => r.sid),
    /**
     * Stops accepting: new connections are refused, as by a dead node. The open ones end when
     * the node's side does (a killed node's sockets are closed by the kernel).
     */
    stopAccepting() {
      server.close();
    },
    close() {
      server.close();
      for (const socket of open) socket.destroy();
    },
  };
}

/**
 * nginx with fixtures/nginx.conf as shipped, `upstreams` (ports on 127.0.0.1) filled in, on a
 * free port of its own. Its error log (upstream failures are expected once a node is killed)
 * is kept, and shown live with HALLEY_SERVER_LOG=1.
 */
export async function startNginx(upstreams) {
  const dir = await mkdtemp(path.join(os.tmpdir(), "halley-cluster-"));
  const port = await freePort();
  const conf = (await readFile(path.join(ROOT, "fixtures/nginx.conf"), "utf8"))
    .replaceAll("@UPSTREAMS@", upstreams.map((p) => `server 127.0.0.1:${p};`).join(" "))
    .replaceAll("@PORT@", String(port));
  await writeFile(path.join(dir, "nginx.conf"), conf);
  const nginx = spawn(NGINX, ["-p", dir, "-c", path.join(dir, "nginx.conf"), "-g", "daemon off;"], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  let log = "";
  for (const stream of [nginx.stdout, nginx.stderr]) {
    stream.setEncoding("utf8");
    stream.on("data", (chunk) => {
      log = (log + chunk).slice(-16384);
      if (process.env.HALLEY_SERVER_LOG === "1") process.stderr.write(chunk);
    });
  }
  const stop = async () => {
    if (nginx.exitCode === null && nginx.signalCode === null) {
      const exited = new Promise((r) => nginx.once("exit", r));
      nginx.kill("SIGTERM");
      await withTimeout(exited, TIMEOUT, "nginx exit").catch(() => nginx.kill("SIGKILL"));
    }
    await rm(dir, { recursive: true, force: true });
  };
  try {
    await waitForPort(port, {
      what: "nginx",
      alive: () => {
        if (nginx.exitCode !== null) throw new Error(`nginx exited (${nginx.exitCode}):\n${log}`);
      },
    });
  } catch (error) {
    await stop();
    throw error;
  }
  return { base: `http://127.0.0.1:${port}`, log: () => log, stop };
}

/** Throws unless RabbitMQ takes connections at `url` (default `AMQP_URL`). */
export async function requireBroker(url = AMQP_URL) {
  const broker = new URL(url);
  if (!(await canConnect(Number(broker.port || 5672), broker.hostname))) {
    throw new Error(`no RabbitMQ at ${broker.host}: start it (rabbitmq-server -detached) or set AMQP_URL`);
  }
}

/**
 * Starts one `halley --cluster` node per name (6 letters or digits) on the broker, with a
 * cluster exchange named after `tag` and this run, behind nginx; waits until every node lists
 * all the others. `env` is added to every node's environment (`HALLEY_AMQP_QUEUE`, ...);
 * `amqpUrl` is the broker (default `AMQP_URL`, the shared one; cluster-broker-restart.test.mjs
 * gives a private one, broker.mjs). Returns `{ nodes: Map name → { name, url, admin, server,
 * tap }, base, exchange, requestsFor(sid, filter), kill(node), stop() }`.
 */
export async function startCluster({ tag, names, heartbeatMs, env = {}, amqpUrl = AMQP_URL }) {
  await requireBroker(amqpUrl);
  const exchange = unique(`halley.test.${tag}`);
  // The secret the nodes share (through the environment, as the README advises).
  const secret = crypto.randomBytes(32).toString("hex");
  const startNode = async (name) => {
    const server = await startServer(HALLEY_BIN, {
      HALLEY_LISTEN: "127.0.0.1:0",
      HALLEY_AMQP_URL: amqpUrl,
      HALLEY_CLUSTER: "true",
      HALLEY_NODE_NAME: name,
      HALLEY_CLUSTER_HEARTBEAT: String(heartbeatMs),
      HALLEY_CLUSTER_EXCHANGE: exchange,
      HALLEY_CLUSTER_SECRET: secret,
      HALLEY_SUBSCRIBE_PATTERNS: "*",
      HALLEY_DEMO: "false",
      HALLEY_SHUTDOWN_GRACE: "1",
      ...env,
    });
    const tap = await startTap(Number(new URL(server.url).port));
    return { name, url: server.url, admin: server.admin, server, tap };
  };
  const nodes = new Map();
  let nginx;
  const stop = async () => {
    await nginx?.stop();
    await Promise.all(
      [...nodes.values()].map(async (node) => {
        node.tap.close();
        await node.server.stop().catch(() => node.server.process.kill("SIGKILL"));
      }),
    );
    // The exchange is declared durable: delete it (best effort; needs rabbitmqctl and its
    // cookie). A private broker goes away with its data instead.
    if (amqpUrl !== AMQP_URL) return;
    await new Promise((resolve) =>
      execFile(
        "rabbitmqctl",
        ["eval", `rabbit_exchange:delete(rabbit_misc:r(<<"/">>, exchange, <<"${exchange}">>), false, <<"halley-test">>).`],
        { timeout: 10_000 },
        () => resolve(),
      ),
    );
  };
  try {
    const started = await Promise.allSettled(names.map(startNode));
    for (const s of started) if (s.status === "fulfilled") nodes.set(s.value.name, s.value);
    const failed = started.find((s) => s.status === "rejected");
    if (failed) throw failed.reason;
    // Every node lists the others (a hello arrives within a heartbeat of each start).
    for (const node of nodes.values()) {
      const others = names.filter((n) => n !== node.name);
      await eventually(async () => {
        const cluster = await membersOf(node);
        return cluster.connected && JSON.stringify(cluster.members) === JSON.stringify(others);
      }, `${node.name} to list ${others.join(", ")} in /healthz`);
    }
    nginx = await startNginx([...nodes.values()].map((n) => n.tap.port));
  } catch (error) {
    await stop();
    throw error;
  }
  return {
    nodes,
    base: nginx.base,
    exchange,
    /** Requests the taps saw for session `sid`, by node name. */
    requestsFor(sid, filter = () => true) {
      const by = {};
      for (const node of nodes.values()) {
        by[node.name] = node.tap.requests.filter((r) => r.sid === sid && filter(r)).length;
      }
      return by;
    },
    /**
     * SIGKILL of `node`, as a dead machine: its tap refuses connections from the same moment
     * (requests under way through it are cut when the kernel closes the dead node's sockets).
     * Resolves, once it has exited, to the time of the kill (ms since the epoch).
     */
    async kill(node) {
      node.tap.stopAccepting();
      node.server.process.kill("SIGKILL");
      const killed = Date.now();
      await node.server.exited;
      return killed;
    },
    stop,
  };
}

/**
 * socket.io-client through nginx (`base`), `reconnection: false` unless `opts` say otherwise;
 * resolves once connected. Records every `news` event's first argument, disconnect reasons,
 * reconnection attempts and every connect (`{ id, sid }`); `until(probe, what, ms)` resolves
 * once `probe()` is truthy, checked at each of those events (no polling).
 */
export async function ioClient(base, label, opts = {}) {
  const socket = io(base, { forceNew: true, reconnection: false, ...opts });
  const news = [];
  const disconnects = [];
  const reconnects = [];
  const connects = [];
  const waiters = new Set();
  const check = () => {
    for (const waiter of waiters) waiter();
  };
  socket.on("news", (data) => {
    news.push(data);
    check();
  });
  socket.on("disconnect", (reason) => {
    disconnects.push(reason);
    check();
  });
  socket.on("connect", () => {
    connects.push({ id: socket.id, sid: socket.io.engine.id });
    check();
  });
  socket.io.on("reconnect_attempt", (n) => reconnects.push(n));
  await withTimeout(
    new Promise((resolve, reject) => {
      socket.once("connect", resolve);
      socket.once("connect_error", reject);
    }),
    TIMEOUT,
    `${label} connect through nginx`,
  );
  return {
    label,
    socket,
    id: socket.id,
    sid: socket.io.engine.id,
    owner: ownerOf(socket.io.engine.id),
    news,
    disconnects,
    reconnects,
    connects,
    until(probe, what, ms = TIMEOUT) {
      let waiter;
      const reached = new Promise((resolve) => {
        waiter = () => {
          if (probe()) resolve();
        };
        waiters.add(waiter);
        waiter();
      });
      return withTimeout(reached, ms, `${label}: ${what}`).finally(() => waiters.delete(waiter));
    },
  };
}

/** Resolves once socket.io-client `socket`'s engine runs on WebSocket (after an upgrade, if need be). */
export async function upgraded(socket) {
  const engine = socket.io.engine;
  if (engine.transport.name !== "websocket") {
    await withTimeout(
      new Promise((resolve, reject) => {
        engine.once("upgrade", resolve);
        engine.once("upgradeError", reject);
      }),
      TIMEOUT,
      "the upgrade to websocket through nginx",
    );
  }
  assert.equal(engine.transport.name, "websocket");
}

/**
 * A publisher to RabbitMQ: tests/interop/python/amqp_publisher.py (pika), one connection for
 * its whole life. `publish(queue, messages)` sends `[{ body, message_id, headers }]` in order through
 * the default exchange (JSON bodies, application/json) and resolves once the broker has them;
 * `deleteQueue(queue)`; `close()`.
 */
export async function startPublisher() {
  const child = spawn(PYTHON, [path.join(HERE, "python/amqp_publisher.py"), AMQP_URL], {
    stdio: ["pipe", "pipe", "pipe"],
  });
  let stderr = "";
  child.stderr.setEncoding("utf8");
  child.stderr.on("data", (chunk) => {
    stderr = (stderr + chunk).slice(-16384);
  });
  child.stdin.on("error", () => {}); // it died: `exited` says so
  const exited = new Promise((resolve) => {
    child.once("exit", (code, signal) => resolve({ code, signal }));
    child.once("error", (error) => resolve({ code: error.message, signal: null }));
  });
  const pending = [];
  createInterface({ input: child.stdout }).on("line", (line) => pending.shift()?.(JSON.parse(line)));
  const ask = (command, ms = TIMEOUT) =>
    withTimeout(
      Promise.race([
        new Promise((resolve, reject) => {
          pending.push((answer) => (answer.error ? reject(new Error(`amqp_publisher: ${answer.error}`)) : resolve(answer.ok)));
          child.stdin.write(JSON.stringify(command) + "\n");
        }),
        exited.then(({ code, signal }) => {
          throw new Error(`amqp_publisher (${PYTHON}) exited (code ${code}, signal ${signal}):\n${stderr}`);
        }),
      ]),
      ms,
      `amqp_publisher: ${command.op}`,
    );
  await ask({ op: "ping" });
  return {
    publish: (queue, messages) => ask({ op: "publish", queue, messages }),
    deleteQueue: (queue) => ask({ op: "delete_queue", queue }),
    async close() {
      child.stdin.end();
      await withTimeout(exited, TIMEOUT, "amqp_publisher exit").catch(() => child.kill("SIGKILL"));
    },
  };
}
