// A TCP relay that cuts every connection it carries a fixed time after accepting it, with a TCP
// reset on both sides: a proxy with a hard response-time limit, or a mobile network handing
// over. Tests put it between Chromium and the server to check that a transport loses nothing
// when the network breaks it mid-response (client-cuts.test.mjs).

import net from "node:net";

/**
 * Listens on 127.0.0.1:0 and forwards each connection to `targetUrl`'s host and port, both ways,
 * resetting both sides (`resetAndDestroy()`) `cutAfterMs` after accepting it if it is still open
 * then. Returns `{ url, port, cuts(), connections(), close() }`: `cuts()` counts the connections
 * it cut that way, `connections()` those it accepted; `close()` stops listening and destroys
 * every live socket.
 */
export async function startRelay(targetUrl, { cutAfterMs = 2500 } = {}) {
  const target = new URL(targetUrl);
  const live = new Set();
  let cuts = 0;
  let connections = 0;
  const server = net.createServer((client) => {
    connections++;
    const upstream = net.connect(Number(target.port), target.hostname);
    const pair = [client, upstream];
    const timer = setTimeout(() => {
      if (pair.every((s) => s.destroyed)) return;
      cuts++;
      for (const s of pair) if (!s.destroyed) s.resetAndDestroy();
    }, cutAfterMs);
    timer.unref();
    for (const socket of pair) {
      live.add(socket);
      // ECONNRESET and the like are what this relay is for: never thrown, the peer goes too.
      socket.on("error", () => {});
      socket.on("close", () => {
        live.delete(socket);
        for (const s of pair) if (!s.destroyed) s.destroy();
        if (pair.every((s) => s.destroyed)) clearTimeout(timer);
      });
    }
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", resolve);
  });
  const { port } = server.address();
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    cuts: () => cuts,
    connections: () => connections,
    close: () =>
      new Promise((resolve) => {
        server.close(() => resolve());
        for (const socket of live) socket.destroy();
      }),
  };
}
