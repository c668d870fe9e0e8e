// The edges of connection state recovery with the official Node client (default options):
// one scenario per run, its flow JSON in RECOVER_EDGE (url, tokens, roomId, scenario...).
// Prints one JSON line (finish.mjs runFlow); tests/integration/test_recovery.py asserts.
import { io } from "socket.io-client";
import { runFlow, within } from "./finish.mjs";

const flow = JSON.parse(process.env.RECOVER_EDGE ?? "{}");
const WAIT_MS = 8000;
const result = {};
const sockets = [];

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const next = (socket, event) =>
  within(new Promise((resolve) => socket.once(event, (...a) => resolve(a))), event, WAIT_MS);
const ack = (socket, event, payload) =>
  within(socket.timeout(WAIT_MS).emitWithAck(event, payload), `ack of ${event}`, WAIT_MS + 500);

function client(token, extra = {}) {
  const socket = io(flow.url, { auth: { token }, reconnectionDelay: 100,
                                reconnectionDelayMax: 300, forceNew: true, ...extra });
  sockets.push(socket);
  return socket;
}

// Connected, in a room, with at least one logged event received (an offset to come back with).
async function ready(token, extra) {
  const socket = client(token, extra);
  await next(socket, "connect");
  const first = { id: socket.id, recovered: socket.recovered, pid: socket._pid };
  const joined = await ack(socket, "join room", { roomId: flow.roomId });
  if (!joined.success) throw new Error(`join: ${JSON.stringify(joined)}`);
  return { socket, first };
}

// Cut the transport the way a network does (the client reconnects on its own, unless
// reconnection is off).
function cut(socket) {
  socket.io.engine.close();
}

async function reconnected(socket, connect) {
  const back = next(socket, "connect");
  connect?.();
  await back;
  return { id: socket.id, recovered: socket.recovered, pid: socket._pid };
}

const scenarios = {
  // A dropped transport: back at once, recovered, with what was sent meanwhile.
  async drop() {
    const { socket, first } = await ready(flow.token);
    const sender = client(flow.senderToken);
    await next(sender, "connect");
    await ack(sender, "join room", { roomId: flow.roomId });
    const got = [];
    socket.on("chat message", (m, offset) => got.push([m.content, typeof offset]));
    await ack(sender, "chat message", { content: "before", roomId: flow.roomId });
    while (got.length < 1) await sleep(10);
    const back = reconnected(socket);
    cut(socket);
    await ack(sender, "chat message", { content: "meanwhile", roomId: flow.roomId });
    result.again = await back;
    await ack(sender, "chat message", { content: "after", roomId: flow.roomId });
    const expect = flow.expect ?? 3;
    const deadline = Date.now() + WAIT_MS;
    while (got.length < expect && Date.now() < deadline) await sleep(10);
    await sleep(200);
    Object.assign(result, { first, got });
  },
  // The same on a namespace without rooms (flow.url names it, e.g. /chat): a `chat message`
  // with no roomId goes to the whole namespace.
  async dropNamespace() {
    const socket = client(flow.token);
    await next(socket, "connect");
    const first = { id: socket.id, recovered: socket.recovered, pid: socket._pid };
    const sender = client(flow.senderToken);
    await next(sender, "connect");
    const got = [];
    socket.on("chat message", (m, offset) => got.push([m.content, typeof offset]));
    await ack(sender, "chat message", { content: "before" });
    while (got.length < 1) await sleep(10);
    const back = reconnected(socket);
    cut(socket);
    await ack(sender, "chat message", { content: "meanwhile" });
    result.again = await back;
    await ack(sender, "chat message", { content: "after" });
    const deadline = Date.now() + WAIT_MS;
    while (got.length < 3 && Date.now() < deadline) await sleep(10);
    await sleep(200);
    Object.assign(result, { first, got });
  },
  // Away longer than the window: a new socket.
  async expired() {
    const { socket, first } = await ready(flow.token, { reconnection: false });
    const gone = next(socket, "disconnect");
    cut(socket);
    await gone;
    await sleep(flow.waitMs);
    result.again = await reconnected(socket, () => socket.connect());
    result.first = first;
  },
  // A pid nobody issued: a new socket.
  async unknown() {
    const socket = client(flow.token, { autoConnect: false });
    socket._pid = "not-a-pid";
    socket._lastOffset = "0";
    result.again = await reconnected(socket, () => socket.connect());
  },
  // A second client presenting a connected socket's pid and offset: a new socket, and the
  // first stays connected.
  async already() {
    const { socket, first } = await ready(flow.token);
    const copy = client(flow.token, { autoConnect: false });
    copy._pid = socket._pid;
    copy._lastOffset = socket._lastOffset;
    result.copy = await reconnected(copy, () => copy.connect());
    await sleep(300);
    result.first = first;
    result.firstStill = { connected: socket.connected, id: socket.id };
    const info = await ack(socket, "get room info", flow.roomId);
    result.firstInRoom = (info?.users ?? []).some((u) => u.socketId === socket.id);
  },
  // Left on purpose (socket.disconnect()), then connect() again: nothing to recover.
  async ended() {
    const { socket, first } = await ready(flow.token);
    socket.disconnect();
    await sleep(300);
    result.again = await reconnected(socket, () => socket.connect());
    result.first = first;
  },
  // Banned while away: the CONNECT is refused, its session not restored.
  async banned() {
    const { socket, first } = await ready(flow.token, { reconnection: false });
    const gone = next(socket, "disconnect");
    cut(socket);
    await gone;
    const admin = io(`${flow.url}/admin`, { auth: { token: flow.adminToken }, forceNew: true });
    sockets.push(admin);
    await next(admin, "connect");
    const banned = await ack(admin, "ban user", { userId: flow.userId, reason: "test",
                                                   seconds: 60 });
    if (!banned.success) throw new Error(`ban: ${JSON.stringify(banned)}`);
    const refused = next(socket, "connect_error");
    socket.connect();
    const [error] = await refused;
    result.first = first;
    result.refused = { message: error.message, connected: socket.connected };
  },
};

runFlow(`recover edge ${flow.scenario}`, 25000, sockets, result, () => scenarios[flow.scenario]());
