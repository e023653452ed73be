// The Admin UI's cost in bytes and time against a running server with the UI installed
// (`examples/bench_admin_ui`, open login): logs in on a raw WebSocket as the official UI does
// and reports the time from CONNECT to `all_sockets` and that frame's bytes, then the bytes
// of each change (a socket connecting, joining and leaving a room by the UI's actions,
// disconnecting) and of one `server_stats`, as JSON on stdout.
//
// Run: node benches/admin-ui.mjs http://127.0.0.1:8092   (with, e.g., 10,000 clients held by
// `halley-loadgen s1 --clients 10000 --duration 120`). Uses `ws` from tests/interop (npm ci).
// `node benches/admin-ui.mjs URL --hold` only logs in and stays, reading what the UI is sent
// (the "UI connected" runs of the CPU comparison).

import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, "../tests/interop/package.json"));
const WebSocket = require("ws");

const base = (process.argv[2] || "http://127.0.0.1:8092").replace(/^http/, "ws");
const url = `${base}/socket.io/?EIO=4&transport=websocket`;

function open(onFrame) {
  const ws = new WebSocket(url);
  ws.on("message", (data, binary) => {
    const text = binary ? data : data.toString();
    if (text === "2") return ws.send("3");
    onFrame(text, data.length);
  });
  return ws;
}

/** Resolves with the first frame of `ws` that `match` accepts: `{ text, bytes, ms }`. */
const frames = [];
const waiters = [];
function next(match) {
  const at = frames.findIndex((f) => match(f.text));
  if (at >= 0) return Promise.resolve(frames.splice(at, 1)[0]);
  return new Promise((resolve) => waiters.push({ match, resolve }));
}
const started = process.hrtime.bigint();
const ms = () => Number(process.hrtime.bigint() - started) / 1e6;

const ui = open((text, bytes) => {
  const frame = { text, bytes, ms: ms() };
  const at = waiters.findIndex((w) => w.match(text));
  if (at >= 0) return waiters.splice(at, 1)[0].resolve(frame);
  frames.push(frame);
});
await new Promise((resolve) => ui.once("open", resolve));
await next((t) => t.startsWith("0{"));
const sent = ms();
ui.send("40/admin,{}");
if (process.argv[3] === "--hold") {
  ui.on("message", () => frames.splice(0));
  console.log("holding");
  await new Promise(() => {});
}
const connected = await next((t) => t.startsWith("40/admin,"));
const all = await next((t) => t.startsWith('42/admin,["all_sockets"'));
const sockets = JSON.parse(all.text.slice("42/admin,".length))[1].length;
const stats = await next((t) => t.startsWith('42/admin,["server_stats"'));

const event = (name) => (t) => t.startsWith(`42/admin,["${name}"`);
let clientId;
const client = open((text) => {
  if (text.startsWith("40{")) clientId = JSON.parse(text.slice(2)).sid;
});
await new Promise((resolve) => client.once("open", resolve));
client.send("40");
const connect = await next(event("socket_connected"));
const id = JSON.parse(connect.text.slice("42/admin,".length))[1].id;
ui.send(`42/admin,["join","/","room-1","${id}"]`);
const joined = await next(event("room_joined"));
ui.send(`42/admin,["leave","/","room-1","${id}"]`);
const left = await next(event("room_left"));
client.close();
const gone = await next(event("socket_disconnected"));
const ownRoomLeft = await next(event("room_left"));

console.log(
  JSON.stringify({
    sockets,
    connect_reply_ms: +(connected.ms - sent).toFixed(1),
    all_sockets_ms: +(all.ms - sent).toFixed(1),
    all_sockets_bytes: all.bytes,
    all_sockets_bytes_per_socket: Math.round(all.bytes / sockets),
    server_stats_bytes: stats.bytes,
    socket_connected_bytes: connect.bytes,
    room_joined_bytes: joined.bytes,
    room_left_bytes: left.bytes,
    socket_disconnected_bytes: gone.bytes + ownRoomLeft.bytes,
  }),
);
ui.close();
process.exit(0);
