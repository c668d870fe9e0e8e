// Binary with a Socket.IO v2 client (Engine.IO v3 framing): an acked emit whose ack and
// echo carry the bytes back, and a room message with bytes fanned out to another v2 client.
// Against the miniapp service (tests/support/miniapp.py); argv: URL, TRANSPORT ("polling" or
// "websocket"). Prints one JSON line; driven by tests/integration/test_node_v2_client.py.
import { createRequire } from "node:module";

import { runFlow, within } from "./finish.mjs";

const require = createRequire(import.meta.url);
const ioV2 = require("socket.io-client-v2");

const WAIT_MS = 5000;
const [url, transport] = process.argv.slice(2);
const sockets = [];
const result = {};
const hex = (value) => (Buffer.isBuffer(value) ? value.toString("hex") : null);

function open(name) {
  const socket = ioV2(url, { transports: [transport], forceNew: true, reconnection: false });
  sockets.push(socket);
  const hello = within(new Promise((resolve) => socket.once("hello", resolve)),
                       `${name}: hello`, WAIT_MS);
  return { socket, hello };
}

function ack(socket, what, event, ...args) {
  return within(new Promise((resolve) => socket.emit(event, ...args, (...reply) => resolve(reply))),
                what, WAIT_MS);
}

async function main() {
  const a = open("a");
  const b = open("b");
  await Promise.all([a.hello, b.hello]);
  const echoed = within(new Promise((resolve) => a.socket.once("echoed", (...args) => resolve(args))),
                        "a: echoed", WAIT_MS);
  const reply = await ack(a.socket, "a: echo", "echo", { n: 1, blob: Buffer.from([1, 2, 3]) });
  result.ack = { n: reply[0].n, blob: hex(reply[0].blob) };
  const got = await echoed;
  result.echoed = { n: got[0].n, blob: hex(got[0].blob) };
  await ack(a.socket, "a: join", "join", "bin-room");
  await ack(b.socket, "b: join", "join", "bin-room");
  const said = within(new Promise((resolve) => b.socket.once("said", (...args) => resolve(args))),
                      "b: said", WAIT_MS);
  await ack(a.socket, "a: say", "say", "bin-room", Buffer.from("héllo"), "text");
  const heard = await said;
  result.said = [hex(heard[0]), heard[1]];
  result.transport = a.socket.io.engine.transport.name;
}

runFlow("v2 binary flow", 15000, sockets, result, main);
