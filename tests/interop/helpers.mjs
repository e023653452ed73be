// Shared helpers for the interoperability tests: start a Halley example binary, wait for things
// with a hang guard, collect messages.

import { spawn } from "node:child_process";
import net from "node:net";
import { createInterface } from "node:readline";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));

/** Default hang guard for every await, in milliseconds. */
export const TIMEOUT = 5000;

/**
 * The directory holding the compiled examples: `$HALLEY_EXAMPLES`, else
 * `../../target/release/examples` relative to this file.
 */
export const EXAMPLES_DIR = path.resolve(
  process.env.HALLEY_EXAMPLES ?? path.join(here, "..", "..", "target", "release", "examples"),
);

/** The path of the compiled example `name` (e.g. "engineio_suite"). */
export function examplePath(name) {
  return path.join(EXAMPLES_DIR, name);
}

// Servers still running when the test process exits are killed, so nothing is left behind.
const running = new Set();
process.on("exit", () => {
  for (const child of running) child.kill("SIGKILL");
});

// The examples' first stdout line: `listening on http://127.0.0.1:<port>`.
const LISTENING_RE = /^listening on (https?:\/\/[\w.-]+:\d+)\s*$/;
// The `halley` binary prints its admin listener's address (publish, metrics) before that line.
const ADMIN_RE = /^admin listening on (https?:\/\/[\w.-]+:\d+)\s*$/;

const MAX_LOG = 64 * 1024;
function appendCapped(log, chunk) {
  const next = log + chunk;
  return next.length > MAX_LOG ? next.slice(next.length - MAX_LOG) : next;
}

/**
 * Spawns the server binary `binaryPath` with `PORT=0` (plus `env`), waits for the line on stdout
 * that carries its address, and returns
 * `{ url, admin, pid, process, logs(), exited, stop(timeoutMs) }`. `admin` is the `halley`
 * binary's admin listener (`/publish`, `/sockets`, `/metrics`, detailed `/healthz`), on a port
 * of its own (`HALLEY_ADMIN_LISTEN` defaults to `127.0.0.1:0` here); undefined for examples.
 *
 * `stop()` sends SIGTERM and resolves to `{ code, signal, ms }` once the process has exited; if it
 * has not exited within `timeoutMs` it is killed and `stop()` rejects. Server output (stdout and
 * stderr) is kept in memory and printed only when startup or shutdown fails; set
 * `HALLEY_SERVER_LOG=1` to see it live (and e.g. `RUST_LOG=debug` for the server's own tracing).
 */
export async function startServer(binaryPath, env = {}, { timeoutMs = TIMEOUT } = {}) {
  const child = spawn(binaryPath, [], {
    env: { ...process.env, HALLEY_ADMIN_LISTEN: "127.0.0.1:0", ...env, PORT: "0" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  running.add(child);

  let stdout = "";
  let stderr = "";
  const live = process.env.HALLEY_SERVER_LOG === "1";
  child.stderr.setEncoding("utf8");
  child.stderr.on("data", (chunk) => {
    stderr = appendCapped(stderr, chunk);
    if (live) process.stderr.write(chunk);
  });
  const logs = () =>
    `--- ${path.basename(binaryPath)} stdout ---\n${stdout}--- ${path.basename(binaryPath)} stderr ---\n${stderr}`;

  const exited = new Promise((resolve) => {
    child.once("exit", (code, signal) => {
      running.delete(child);
      resolve({ code, signal });
    });
  });
  const spawnError = new Promise((_, reject) => child.once("error", reject));
  spawnError.catch(() => {});

  // Keep draining stdout for the whole life of the process so it can never block on a full pipe.
  const lines = createInterface({ input: child.stdout });
  let admin;
  const address = new Promise((resolve, reject) => {
    lines.on("line", (line) => {
      stdout = appendCapped(stdout, line + "\n");
      if (live) process.stdout.write(line + "\n");
      admin ??= ADMIN_RE.exec(line)?.[1];
      const match = LISTENING_RE.exec(line);
      if (match) resolve(match[1]);
    });
    lines.once("close", () => reject(new Error("stdout closed before the server printed its address")));
  });
  address.catch(() => {});

  let url;
  try {
    url = await Promise.race([
      address,
      spawnError,
      exited.then(({ code, signal }) => {
        throw new Error(`server exited before printing its address (code ${code}, signal ${signal})`);
      }),
      rejectAfter(timeoutMs, `server did not print its address within ${timeoutMs} ms`),
    ]);
  } catch (error) {
    child.kill("SIGKILL");
    error.message = `${binaryPath}: ${error.message}\n${logs()}`;
    throw error;
  }

  let stopping;
  const stop = (stopTimeoutMs = TIMEOUT) => {
    stopping ??= (async () => {
      const started = Date.now();
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
      try {
        const result = await withTimeout(exited, stopTimeoutMs, "server exit after SIGTERM");
        return { ...result, ms: Date.now() - started };
      } catch (error) {
        child.kill("SIGKILL");
        await exited;
        error.message += `\n${logs()}`;
        throw error;
      }
    })();
    return stopping;
  };

  return { url, admin, pid: child.pid, process: child, logs, exited, stop };
}

function rejectAfter(ms, message) {
  return new Promise((_, reject) => {
    const timer = setTimeout(() => reject(new Error(message)), ms);
    timer.unref();
  });
}

/** Resolves or rejects like `promise`, but rejects after `ms` with a message naming `what`. */
export function withTimeout(promise, ms = TIMEOUT, what = "operation") {
  let timer;
  const guard = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, guard]).finally(() => clearTimeout(timer));
}

/**
 * Waits for `event` on an emitter with `on`/`off` (engine.io-client's Socket is a
 * component-emitter, not a Node EventEmitter) and resolves to the event's arguments as an array.
 * Rejects after `ms`, or as soon as one of `failOn` (default: "close") is emitted first.
 */
export function waitFor(emitter, event, { ms = TIMEOUT, failOn = event === "close" ? [] : ["close"] } = {}) {
  const listeners = [];
  const listen = (name, fn) => {
    emitter.on(name, fn);
    listeners.push([name, fn]);
  };
  const result = new Promise((resolve, reject) => {
    listen(event, (...args) => resolve(args));
    for (const name of failOn) {
      listen(name, (...args) =>
        reject(new Error(`'${name}' (${args.map(describe).join(", ")}) while waiting for '${event}'`)),
      );
    }
  });
  return withTimeout(result, ms, `'${event}'`).finally(() => {
    for (const [name, fn] of listeners) emitter.off(name, fn);
  });
}

/**
 * Records every 'message' of `socket` in `messages`; `waitForCount(n)` resolves once at least `n`
 * have arrived (and rejects if the socket closes first or after `ms`).
 */
export function collectMessages(socket) {
  const messages = [];
  const waiters = [];
  let closed = null;
  socket.on("message", (data) => {
    messages.push(data);
    for (const w of [...waiters]) if (messages.length >= w.n) w.resolve(messages);
  });
  socket.on("close", (...args) => {
    closed = args;
    for (const w of [...waiters]) w.reject(new Error(`'close' (${args.map(describe).join(", ")}) after ${messages.length} messages`));
  });
  return {
    messages,
    waitForCount(n, ms = TIMEOUT) {
      if (messages.length >= n) return Promise.resolve(messages);
      if (closed) return Promise.reject(new Error(`socket already closed (${closed.map(describe).join(", ")})`));
      const waiter = {};
      const p = new Promise((resolve, reject) => Object.assign(waiter, { n, resolve, reject }));
      waiters.push(waiter);
      return withTimeout(p, ms, `${n} messages (got ${messages.length}: ${JSON.stringify(messages.map(describe))})`).finally(
        () => waiters.splice(waiters.indexOf(waiter), 1),
      );
    },
  };
}

/** A short printable description of an event argument. */
export function describe(value) {
  if (value instanceof Error) return `${value.name}: ${value.message}`;
  if (Buffer.isBuffer(value)) return `Buffer<${value.toString("hex")}>`;
  if (value instanceof ArrayBuffer) return `ArrayBuffer<${Buffer.from(value).toString("hex")}>`;
  if (typeof value === "object" && value !== null) {
    try {
      return JSON.stringify(value);
    } catch {
      return String(value);
    }
  }
  return String(value);
}

/** A TCP port on 127.0.0.1 that was free a moment ago (for servers that need one given). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** Whether something accepts TCP connections on `port`. */
export function canConnect(port, host = "127.0.0.1") {
  return new Promise((resolve) => {
    const socket = net.connect(port, host, () => {
      socket.end();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

/**
 * Waits until something listens on `port` (nginx, say), checking every 25 ms. `alive()`, when
 * given, is called each time and throws to give up early (the process died).
 */
export async function waitForPort(port, { ms = TIMEOUT, alive = () => {}, what = "server" } = {}) {
  const deadline = Date.now() + ms;
  for (;;) {
    alive();
    if (await canConnect(port)) return;
    if (Date.now() > deadline) throw new Error(`${what} did not listen on ${port} within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 25));
  }
}
