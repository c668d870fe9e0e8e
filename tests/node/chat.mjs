// The main chat flow of namespace "/" (../../../shared/EVENTS.md) with the official Node
// socket.io-client: two users, each on its own gateway. Driven by
// tests/integration/test_node_chat.py, which passes everything in the CHAT_FLOW environment
// variable (JSON):
//
//     {"a": {"url", "token", "userId"}, "b": {"url", "token", "userId"},
//      "roomId", "roomName", "chat", "private", "transports"?}
//
// The clients use socket.io-client's default options (polling, then the upgrade) unless
// "transports" names others.
//
//     CHAT_FLOW='{...}' node chat.mjs
//
// Prints exactly one JSON line to stdout: {"ok": true, "result": {...}} or
// {"ok": false, "error": "...", "partial": {...}}; exits 0 on success, 1 on failure, 2 on the
// overall deadline. Every wait is bounded; the process always ends within DEADLINE_MS.
// The script only records what the clients saw; the assertions live in Python.

import { io } from "socket.io-client";

import { runFlow, within as boundedBy } from "./finish.mjs";

const WAIT_MS = 4000;
const DEADLINE_MS = 15000;

const flow = JSON.parse(process.env.CHAT_FLOW ?? "{}");
const sockets = [];
const result = {};

function within(promise, what, ms = WAIT_MS) {
  return boundedBy(promise, what, ms);
}

/**
 * Every `event` a socket receives, in order, from before it connects: `next()` takes the
 * oldest one not taken yet (waiting, bounded, if there is none), so an event that arrives
 * before the script asks for it is not lost. `all` keeps everything received.
 */
class Mailbox {
  constructor(socket, event, owner) {
    this.event = event;
    this.owner = owner;
    this.all = [];
    this.queue = [];
    this.waiters = [];
    socket.on(event, (...args) => {
      const value = args.length === 1 ? args[0] : args;
      this.all.push(value);
      const waiter = this.waiters.shift();
      if (waiter) waiter(value);
      else this.queue.push(value);
    });
  }

  next() {
    if (this.queue.length) return Promise.resolve(this.queue.shift());
    return within(new Promise((resolve) => this.waiters.push(resolve)),
                  `${this.owner}: "${this.event}"`);
  }
}

const EVENTS = ["welcome", "user online", "user offline", "room joined", "user joined",
                "user left", "chat message", "private message", "room error", "error"];

function client(name, { url, token }) {
  const options = { auth: { token }, reconnection: false, timeout: WAIT_MS };
  if (flow.transports) options.transports = flow.transports;
  const socket = io(url, options);
  sockets.push(socket);
  const boxes = Object.fromEntries(EVENTS.map((e) => [e, new Mailbox(socket, e, name)]));
  const connected = new Promise((resolve, reject) => {
    socket.once("connect", resolve);
    socket.once("connect_error", (err) => reject(new Error(`${name}: connect_error ${err.message}`)));
  });
  const disconnected = new Promise((resolve) => socket.once("disconnect", resolve));
  return { name, socket, boxes, connected: within(connected, `${name}: connect`), disconnected };
}

/** An acknowledged emit: the ack's single argument (or all of them, if several). */
async function ack(peer, event, ...args) {
  const reply = await within(peer.socket.timeout(WAIT_MS).emitWithAck(event, ...args),
                             `${peer.name}: ack for "${event}"`, WAIT_MS + 500);
  return reply;
}

async function main() {
  const { roomId, roomName } = flow;
  const a = client("a", flow.a);
  await a.connected;
  result.a = { id: a.socket.id, welcome: await a.boxes.welcome.next() };
  const b = client("b", flow.b);
  await b.connected;
  result.b = { id: b.socket.id, welcome: await b.boxes.welcome.next() };
  result.userOnline = await a.boxes["user online"].next();

  result.create = await ack(a, "create room", { roomId, roomName });
  result.joinA = { ack: await ack(a, "join room", { roomId }),
                   roomJoined: await a.boxes["room joined"].next() };
  result.joinB = { ack: await ack(b, "join room", { roomId }),
                   roomJoined: await b.boxes["room joined"].next() };
  result.userJoined = await a.boxes["user joined"].next();

  result.chat = { ack: await ack(a, "chat message", { content: flow.chat, roomId }),
                  received: await b.boxes["chat message"].next() };
  result.private = { ack: await ack(b, "private message", { to: flow.a.userId,
                                                             content: flow.private }),
                     received: await a.boxes["private message"].next() };
  result.history = await ack(a, "get history", { roomId });
  result.online = await ack(b, "get online users");
  // Several round trips after connecting: a client that can upgrade has done so by now.
  result.transports = { a: a.socket.io.engine.transport.name,
                        b: b.socket.io.engine.transport.name };

  result.leave = { ack: await ack(b, "leave room", roomId),
                   userLeft: await a.boxes["user left"].next() };
  b.socket.disconnect();
  await within(b.disconnected, "b: disconnect");
  result.offline = await a.boxes["user offline"].next();
  // One more round trip for a: whatever was sent to it before this ack has arrived, so
  // the counts below are final (events of one socket are handled in order).
  result.roomsAfter = await ack(a, "get rooms");

  // Everything else each client received: the sender gets no echo of its own messages,
  // and nobody got an error.
  const extra = (peer) => Object.fromEntries(
    EVENTS.map((e) => [e, peer.boxes[e].all.length]).filter(([, n]) => n > 0),
  );
  result.received = { a: extra(a), b: extra(b) };
  a.socket.disconnect();
  await within(a.disconnected, "a: disconnect");
  result.disconnected = { a: !a.socket.connected, b: !b.socket.connected };
}

runFlow("chat flow", DEADLINE_MS, sockets, result, main);
