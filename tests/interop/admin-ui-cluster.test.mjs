// The official Socket.IO Admin UI (npm `@socket.io/admin-ui` 0.5.1, unchanged, served on its
// own origin by admin-ui-harness.mjs) on a cluster of two real `halley --cluster --admin-ui`
// nodes on the real RabbitMQ (cluster-harness.mjs): logged in on node A, it lists the socket
// of a client connected to node B with its transport, lists both nodes on its Servers page,
// and its disconnect button disconnects that socket on node B.
//
// Needs RabbitMQ and nginx, as cluster.test.mjs. Build first: cargo build --release --bins.
// Run: node --test admin-ui-cluster.test.mjs

import { test, before, after } from "node:test";
import assert from "node:assert/strict";

import { io } from "socket.io-client";

import { logIn, mainText, serveUi } from "./admin-ui-harness.mjs";
import { until } from "./browser.mjs";
import { startCluster } from "./cluster-harness.mjs";
import { waitFor } from "./helpers.mjs";

let ui;
let cluster;
let client;

before(async () => {
  ui = await serveUi();
  cluster = await startCluster({
    tag: "admin-ui",
    names: ["uinode", "binode"],
    heartbeatMs: 200,
    env: {
      HALLEY_ADMIN_UI: "true",
      HALLEY_ADMIN_UI_AUTH: "admin:secret",
      HALLEY_ADMIN_UI_ORIGINS: ui.origin,
    },
  });
  client = io(cluster.nodes.get("binode").url, { forceNew: true, transports: ["websocket"] });
  await waitFor(client, "connect");
});

after(async () => {
  client?.close();
  await cluster?.stop();
  ui?.close();
});

test("a UI logged in on one node lists and disconnects a socket of the other", async () => {
  const { browser, page, errors } = await logIn(ui.origin, cluster.nodes.get("uinode").url, "secret");
  try {
    await page.goto(`${ui.origin}/#/sockets`);
    const row = page.locator("main tbody tr", { hasText: client.id });
    await row.waitFor({ timeout: 10_000 });
    assert.match(await row.innerText(), /WebSocket/);

    await page.goto(`${ui.origin}/#/servers`);
    await until(
      page,
      () => ["uinode", "binode"].every((id) => (document.querySelector("main")?.innerText ?? "").includes(id)),
      null,
      "both nodes on the Servers page",
      { ms: 10_000, describeState: mainText(page) },
    );

    await page.goto(`${ui.origin}/#/sockets`);
    await row.waitFor({ timeout: 10_000 });
    const gone = waitFor(client, "disconnect", { ms: 10_000 });
    await row.locator("button:has(.mdi-logout)").click();
    const [reason] = await gone;
    assert.equal(reason, "io server disconnect");
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
  }
});
