// Halley behind nginx with TLS, using fixtures/nginx/halley-tls.conf as shipped: the official
// socket.io-client reaches the demo namespace over wss:// and https:// polling (with and
// without the upgrade), and an SSE stream flows through unbuffered.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { mkdtemp, readFile, writeFile, rm } from "node:fs/promises";
import https from "node:https";
import os from "node:os";
import path from "node:path";

import { io } from "socket.io-client";

import { freePort, startServer, waitForPort, withTimeout } from "./helpers.mjs";

const HERE = path.dirname(new URL(import.meta.url).pathname);
const ROOT = path.resolve(HERE, "../..");
const HALLEY_BIN = process.env.HALLEY_BIN || path.join(ROOT, "target/release/halley");
const NGINX = process.env.NGINX || "/usr/sbin/nginx";

let halley;
let nginx;
let dir;
let base;



before(async () => {
  halley = await startServer(HALLEY_BIN, { HALLEY_LISTEN: "127.0.0.1:0" });
  dir = await mkdtemp(path.join(os.tmpdir(), "halley-nginx-"));
  execFileSync("openssl", [
    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
    "-subj", "/CN=127.0.0.1",
    "-keyout", path.join(dir, "key.pem"), "-out", path.join(dir, "cert.pem"),
  ], { stdio: "ignore" });
  const port = await freePort();
  const conf = (await readFile(path.join(ROOT, "fixtures/nginx/halley-tls.conf"), "utf8"))
    .replaceAll("@UPSTREAM@", new URL(halley.url).host)
    .replaceAll("@PORT@", String(port))
    .replaceAll("@CERT_DIR@", dir);
  await writeFile(path.join(dir, "nginx.conf"), conf);
  nginx = spawn(NGINX, ["-p", dir, "-c", path.join(dir, "nginx.conf"), "-g", "daemon off;"], {
    stdio: ["ignore", "inherit", "inherit"],
  });
  await waitForPort(port, { what: "nginx" });
  base = `https://127.0.0.1:${port}`;
});

after(async () => {
  if (nginx && nginx.exitCode === null) {
    const exited = new Promise((r) => nginx.once("exit", r));
    nginx.kill("SIGQUIT");
    await withTimeout(exited, 5000, "nginx exit");
  }
  await halley?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

for (const [label, opts] of [
  ["websocket", { transports: ["websocket"] }],
  ["polling", { transports: ["polling"], upgrade: false }],
  ["polling then upgrade", { transports: ["polling", "websocket"] }],
]) {
  test(`socket.io-client through nginx TLS: ${label}`, async () => {
    const socket = io(`${base}/demo`, { ...opts, forceNew: true, reconnection: false, rejectUnauthorized: false });
    try {
      await withTimeout(new Promise((resolve, reject) => {
        socket.once("connect", resolve);
        socket.once("connect_error", reject);
      }), 5000, "connect through nginx");
      const reply = await withTimeout(socket.timeout(4000).emitWithAck("ping", 42, "x"), 5000, "ping ack");
      assert.equal(reply, 42, "the demo namespace acks with the arguments it got");
      if (label === "polling then upgrade") {
        await withTimeout(new Promise((resolve) => {
          if (socket.io.engine.transport.name === "websocket") resolve();
          else socket.io.engine.once("upgrade", resolve);
        }), 5000, "upgrade to websocket through nginx");
      }
    } finally {
      socket.disconnect();
    }
  });
}

test("an SSE stream flows through nginx unbuffered", async () => {
  const body = await withTimeout(new Promise((resolve, reject) => {
    const req = https.get(`${base}/socket.io/?EIO=4&transport=sse`, { rejectUnauthorized: false }, (res) => {
      assert.equal(res.statusCode, 200);
      assert.match(res.headers["content-type"], /^text\/event-stream/);
      let seen = "";
      res.setEncoding("utf8");
      res.on("data", (chunk) => {
        seen += chunk;
        // The open packet arrives while the stream is still open: nothing held it back.
        if (seen.includes('data: "0{')) {
          req.destroy();
          resolve(seen);
        }
      });
    });
    req.on("error", reject);
  }), 5000, "the SSE open packet through nginx");
  assert.ok(body.startsWith(":"), "the padding prelude comes first");
});
