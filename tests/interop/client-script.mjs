// The browser client as the server serves it, for the static tests (ES3 check, size): fetched
// once from a running `interop_server`, at both of its URLs.

import { examplePath, startServer } from "./helpers.mjs";

/** `{ script, halley }`: the bodies of /socket.io/socket.io.js and /halley.js. */
export async function fetchServedClient() {
  const server = await startServer(examplePath("interop_server"));
  try {
    const get = async (path) => {
      const res = await fetch(`${server.url}${path}`);
      if (res.status !== 200) throw new Error(`GET ${path}: ${res.status}`);
      if (!/^application\/javascript/.test(res.headers.get("content-type"))) {
        throw new Error(`GET ${path}: content-type ${res.headers.get("content-type")}`);
      }
      return res.text();
    };
    return { script: await get("/socket.io/socket.io.js"), halley: await get("/halley.js") };
  } finally {
    await server.stop();
  }
}
