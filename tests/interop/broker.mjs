// A private RabbitMQ node of the test's own, to stop and start at will without touching the
// broker the other tests share (rabbit@<host> on 127.0.0.1:5672): for
// cluster-broker-restart.test.mjs.
//
// `startPrivateBroker()` runs Debian's rabbitmq-server in the foreground (not -detached, so
// it is our child) as a node with a unique name (`halley-<pid>-<n>@localhost`), its AMQP and
// Erlang distribution ports free ones of its own, and everything it writes (mnesia, logs,
// pid file, the Erlang cookie) in a temporary directory. It enables no plugin (an empty
// enabled_plugins file): the management or prometheus plugins would clash with the shared
// broker's ports. `stop()` is a graceful broker stop (SIGTERM: the start script runs the
// broker's own shutdown); `start()` starts it again on the same data, so durable exchanges,
// queues and streams survive a restart; `close()` stops it for good and removes the directory.
//
// RABBITMQ_SBIN names the directory of the real scripts (default Debian's /usr/lib/rabbitmq/bin:
// /usr/sbin/rabbitmq-server is a wrapper that switches to the rabbitmq user, whose files and
// environment these are not). Works as any user; the node's cookie is its own (HOME is the
// temporary directory), so the CLI calls made here pass the same HOME.

import { spawn, execFile, execFileSync } from "node:child_process";
import crypto from "node:crypto";
import { existsSync, rmSync } from "node:fs";
import { mkdtemp, writeFile, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";

import { canConnect, freePort } from "./helpers.mjs";

function sbin() {
  if (process.env.RABBITMQ_SBIN) return process.env.RABBITMQ_SBIN;
  if (existsSync("/usr/lib/rabbitmq/bin/rabbitmq-server")) return "/usr/lib/rabbitmq/bin";
  try {
    return path.dirname(execFileSync("sh", ["-c", "command -v rabbitmq-server"], { encoding: "utf8" }).trim());
  } catch {
    return "/usr/lib/rabbitmq/bin";
  }
}

/** Whether this machine can run a private RabbitMQ node (Debian's rabbitmq-server installed). */
export const canRunBroker = () => existsSync(path.join(sbin(), "rabbitmq-server"));

/**
 * A free TCP port outside the ones RabbitMQ reserves for itself: 4369 (epmd), 25672 (the
 * shared node's distribution port) and 35672–35682, which RabbitMQ's CLI tools take for their
 * own distribution listener (node port + 10000 + 20000 − 10000: 35672 onwards).
 */
async function brokerPort(taken) {
  for (;;) {
    const port = await freePort();
    if (port === 4369 || port === 25672 || (port >= 35672 && port <= 35682) || taken.includes(port)) continue;
    return port;
  }
}

// Nodes still running when the test process exits are killed with their process group.
const running = new Set();
process.on("exit", () => {
  for (const broker of running) broker.kill();
});

let count = 0;

/**
 * Starts a private RabbitMQ node and waits until it takes AMQP connections (at most
 * `bootMs`). Returns `{ url, node, port, distPort, dir, start(), stop(), close(), ctl(args),
 * log() }`; `start()` and `stop()` resolve to the time (ms since the epoch) the broker was up
 * (took connections) and gone (its process exited).
 */
export async function startPrivateBroker({ bootMs = 60_000 } = {}) {
  const dir = await mkdtemp(path.join(os.tmpdir(), "halley-rabbit-"));
  const node = `halley-${process.pid}-${++count}@localhost`;
  const port = await brokerPort([]);
  const distPort = await brokerPort([port]);
  await writeFile(path.join(dir, "enabled_plugins"), "[].\n");
  // The node's own cookie (the CLI finds it through the same HOME).
  await writeFile(path.join(dir, ".erlang.cookie"), crypto.randomBytes(20).toString("hex").toUpperCase(), { mode: 0o400 });
  const env = {
    ...process.env,
    HOME: dir,
    RABBITMQ_NODENAME: node,
    RABBITMQ_NODE_IP_ADDRESS: "127.0.0.1",
    RABBITMQ_NODE_PORT: String(port),
    RABBITMQ_DIST_PORT: String(distPort),
    RABBITMQ_MNESIA_BASE: path.join(dir, "mnesia"),
    RABBITMQ_LOG_BASE: path.join(dir, "log"),
    RABBITMQ_PID_FILE: path.join(dir, "pid"),
    RABBITMQ_ENABLED_PLUGINS_FILE: path.join(dir, "enabled_plugins"),
    // None of these exist: no /etc/rabbitmq file applies to this node.
    RABBITMQ_CONFIG_FILE: path.join(dir, "rabbitmq"),
    RABBITMQ_ADVANCED_CONFIG_FILE: path.join(dir, "advanced.config"),
    RABBITMQ_CONF_ENV_FILE: path.join(dir, "rabbitmq-env.conf"),
  };
  let child = null;
  let exited = null;
  let log = "";
  const handle = {
    kill() {
      // The start script and the Erlang VM share the process group it was started in.
      if (child && child.exitCode === null && child.signalCode === null) {
        try {
          process.kill(-child.pid, "SIGKILL");
        } catch {}
      }
    },
  };

  const ctl = (args, ms = 30_000) =>
    new Promise((resolve, reject) =>
      execFile(path.join(sbin(), "rabbitmqctl"), ["-n", node, ...args], { env, timeout: ms }, (error, stdout, stderr) =>
        error ? reject(new Error(`rabbitmqctl ${args.join(" ")}: ${error.message}\n${stdout}${stderr}`)) : resolve(stdout),
      ),
    );

  async function start() {
    if (child) throw new Error(`${node} is running already`);
    child = spawn(path.join(sbin(), "rabbitmq-server"), [], { env, cwd: dir, detached: true, stdio: ["ignore", "pipe", "pipe"] });
    running.add(handle);
    const me = child;
    exited = new Promise((resolve) =>
      me.once("exit", (code, signal) => {
        running.delete(handle);
        resolve({ code, signal, at: Date.now() });
      }),
    );
    for (const stream of [child.stdout, child.stderr]) {
      stream.setEncoding("utf8");
      stream.on("data", (chunk) => {
        log = (log + chunk).slice(-32768);
        if (process.env.HALLEY_SERVER_LOG === "1") process.stderr.write(chunk);
      });
    }
    const deadline = Date.now() + bootMs;
    for (;;) {
      if (me.exitCode !== null || me.signalCode !== null) {
        child = null;
        throw new Error(`${node} exited while booting (${me.exitCode ?? me.signalCode}):\n${log}`);
      }
      // The AMQP listener is the last thing a booting node starts.
      if (await canConnect(port)) return Date.now();
      if (Date.now() > deadline) {
        handle.kill();
        throw new Error(`${node} did not take AMQP connections within ${bootMs} ms:\n${log}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  async function stop(ms = 30_000) {
    if (!child) return Date.now();
    const done = exited;
    child.kill("SIGTERM");
    let result;
    const timer = setTimeout(() => handle.kill(), ms);
    try {
      result = await done;
    } finally {
      clearTimeout(timer);
    }
    child = null;
    return result.at;
  }

  async function close() {
    await stop().catch(() => handle.kill());
    await rm(dir, { recursive: true, force: true });
  }
  process.on("exit", () => rmSync(dir, { recursive: true, force: true }));

  await start();
  return {
    url: `amqp://guest:guest@127.0.0.1:${port}/%2f`,
    node,
    port,
    distPort,
    dir,
    start,
    stop,
    close,
    ctl,
    log: () => log,
  };
}
