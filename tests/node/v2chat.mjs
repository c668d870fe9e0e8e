// A Socket.IO v2 client (socket.io-client 2.5.0: Engine.IO v3, Socket.IO protocol 4) chats
// with a v4 client (socket.io-client 4.8) in one room. Driven by
// tests/integration/test_node_v2_client.py, which passes everything in V2_FLOW (JSON):
//
//     {"url", "a": {"token", "userId"}, "b": {"token", "userId"}, "roomId",
//      "transports": ["polling"] | ["websocket"] | null}
//
// a is the v2 client: on "/" and "/chat" over one connection, its token in the query (as v2
// apps pass it), with `transports` (null: v2's defaults, polling then the upgrade). b is a
// v4 client on its defaults. Prints one JSON line {"ok", "result"|"error", "partial"?}; every
// wait is bounded.

import { createRequire } from "node:module";

import { io } from "socket.io-client";

import { runFlow, within as boundedBy } from "./finish.mjs";

const require = createRequire(import.meta.url);
const ioV2 = require("socket.io-client-v2");

const WAIT_MS = 5000;
const DEADLINE_MS = 20000;
const flow = JSON.parse(process.env.V2_FLOW ?? "{}");
const sockets = [];
const result = {};

function within(promise, what, ms = WAIT_MS) {
  return boundedBy(promise, what, ms);
}

/** The next `event` on `socket` (its first argument), bounded. */
function next(socket, event, what) {
  return within(new Promise((resolve) => socket.once(event, resolve)), what);
}

/** An emit with an ack callback (v2 has no emitWithAck): the ack's first argument. */
function ack(socket, what, event, ...args) {
  return within(new Promise((resolve) => socket.emit(event, ...args, resolve)), what);
}

function connected(socket, what) {
  return within(new Promise((resolve, reject) => {
    socket.once("connect", resolve);
    socket.once("connect_error", (err) => reject(new Error(`${what}: connect_error ${err}`)));
    socket.once("error", (err) => reject(new Error(`${what}: error ${JSON.stringify(err)}`)));
  }), `${what}: connect`);
}

async function main() {
  const { url, roomId } = flow;
  const v2options = { query: { token: flow.a.token }, reconnection: false, forceNew: false };
  if (flow.transports) v2options.transports = flow.transports;
  const a = ioV2(url, v2options);
  sockets.push(a);
  const aWelcome = next(a, "welcome", "a: welcome");
  await connected(a, "a /");
  result.aWelcome = await aWelcome;
  const aChat = ioV2(`${url}/chat`, v2options); // the same connection (multiplexed)
  sockets.push(aChat);
  await connected(aChat, "a /chat"); // "/" is connected already: this one cannot come first
  result.multiplexed = aChat.io === a.io;

  const b = io(url, { auth: { token: flow.b.token }, reconnection: false });
  const bChat = io(`${url}/chat`, { auth: { token: flow.b.token }, reconnection: false });
  sockets.push(b, bChat);
  // Listen on both at once: either may connect first (they share one connection).
  await Promise.all([connected(b, "b /"), connected(bChat, "b /chat")]);

  result.create = await ack(a, "a: create", "create room", { roomId, roomName: "v2 and v4" });
  result.joinA = await ack(a, "a: join", "join room", { roomId });
  const userJoined = next(a, "user joined", "a: user joined");
  result.joinB = await ack(b, "b: join", "join room", { roomId });
  result.userJoined = await userJoined;

  let received = next(b, "chat message", "b: chat message from a");
  result.fromA = { ack: await ack(a, "a: chat", "chat message", { roomId, content: "from v2 ✓" }),
                   received: await received };
  received = next(a, "chat message", "a: chat message from b");
  result.fromB = { ack: await ack(b, "b: chat", "chat message", { roomId, content: "from v4 😀" }),
                   received: await received };
  // On /chat: a private message from the v4 client to the v2 one.
  received = next(aChat, "private message", "a /chat: private message");
  result.privateToA = { ack: await ack(bChat, "b /chat: private", "private message",
                                       { to: flow.a.userId, content: "psst" }),
                        received: await received };
  result.transport = a.io.engine.transport.name;
  result.ids = { root: a.id, chat: aChat.id };
  const bye = next(b, "user offline", "b: user offline");
  a.close();
  result.offline = await bye;
}

runFlow("v2 flow", DEADLINE_MS, sockets, result, main);
