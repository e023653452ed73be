// The hostile proxies of issue #19, started on loopback for a test and stopped after it:
//
// - `startSquid()`: Debian's squid with its stock configuration (/etc/squid/squid.conf as the
//   package ships it: CONNECT only to port 443, so a `ws://` tunnel to any other port is
//   refused), only moved to a free port, its files in a temporary folder and caching off.
// - `startBufferingNginx(upstream)`: nginx as a reverse proxy that buffers responses
//   (`proxy_buffering on`, `proxy_ignore_headers X-Accel-Buffering`, so Halley cannot turn it
//   off) and does not forward `Upgrade` (nginx's defaults: HTTP/1.0 to the upstream).
//
// Both return `{ url, port, close() }`. Chromium goes through squid only if started with
// `--proxy-server=<url>` and, for loopback targets, `--proxy-bypass-list=<-loopback>`.

import { spawn } from "node:child_process";
import { chmod, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";

import { freePort, waitForPort } from "./helpers.mjs";

export const SQUID = process.env.SQUID || "/usr/sbin/squid";
export const SQUID_CONF = "/etc/squid/squid.conf";
const NGINX = process.env.NGINX || "/usr/sbin/nginx";

async function run(what, binary, args, dir, port) {
  const child = spawn(binary, args, { stdio: ["ignore", "ignore", "pipe"] });
  let log = "";
  child.stderr.setEncoding("utf8");
  child.stderr.on("data", (chunk) => {
    log = (log + chunk).slice(-16384);
  });
  const exited = new Promise((resolve) => child.once("exit", resolve));
  try {
    await waitForPort(port, {
      what,
      ms: 30_000,
      alive: () => {
        if (child.exitCode !== null) throw new Error(`${what} exited (code ${child.exitCode}):\n${log}`);
      },
    });
  } catch (error) {
    child.kill("SIGKILL");
    await rm(dir, { recursive: true, force: true });
    throw error;
  }
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    log: () => log,
    async close() {
      if (child.exitCode === null) {
        child.kill("SIGTERM");
        const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
        await exited;
        clearTimeout(timer);
      }
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** squid with the stock rules, on a free loopback port. */
export async function startSquid() {
  const dir = await mkdtemp(path.join(os.tmpdir(), "halley-squid-"));
  // squid started as root runs as the `proxy` user: its log must be writable by it.
  await chmod(dir, 0o777);
  const port = await freePort();
  const stock = await readFile(SQUID_CONF, "utf8");
  if (!/^http_port 3128$/m.test(stock)) throw new Error(`${SQUID_CONF} is not the stock file: no 'http_port 3128' line`);
  const conf =
    stock.replace(/^http_port 3128$/m, `http_port 127.0.0.1:${port}`).replace(/^coredump_dir .*$/m, `coredump_dir ${dir}`) +
    [
      "",
      `pid_filename ${dir}/squid.pid`,
      `cache_log ${dir}/cache.log`,
      "access_log none",
      "cache deny all",
      "shutdown_lifetime 0 seconds",
      "",
    ].join("\n");
  await writeFile(path.join(dir, "squid.conf"), conf);
  return run("squid", SQUID, ["-N", "-f", path.join(dir, "squid.conf")], dir, port);
}

/** nginx buffering every response from `upstream` (`host:port`), no Upgrade forwarded. */
export async function startBufferingNginx(upstream) {
  const dir = await mkdtemp(path.join(os.tmpdir(), "halley-nginx-buffering-"));
  const port = await freePort();
  const conf = `
worker_processes 1;
pid ${dir}/nginx.pid;
error_log stderr warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  server {
    listen 127.0.0.1:${port};
    location / {
      proxy_pass http://${upstream};
      proxy_buffering on;
      proxy_ignore_headers X-Accel-Buffering;
      proxy_read_timeout 120s;
      # As any deployment does: the origin check compares Origin with the Host the browser used.
      proxy_set_header Host $http_host;
    }
  }
}
`;
  await writeFile(path.join(dir, "nginx.conf"), conf);
  return run("nginx", NGINX, ["-p", dir, "-c", path.join(dir, "nginx.conf"), "-g", "daemon off;"], dir, port);
}
