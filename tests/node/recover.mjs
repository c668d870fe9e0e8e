// Connection state recovery with the official Node client, on its default options: a
// receiver (through the balancer) and a sender (straight to another gateway) share a room;
// the sender sends acked messages all along; midway the script asks its driver to kill the
// receiver's gateway (a line {"kill": gatewayId}) and waits for "killed" on stdin. What the
// receiver got, its connects (id, recovered) and what the sender saw of its presence are the
// result (tests/integration/test_recovery.py asserts on them).
import readline from "node:readline";
import { io } from "socket.io-client";
import { runFlow, within } from "./finish.mjs";

const flow = JSON.parse(process.env.RECOVER_FLOW ?? "{}");
const DEADLINE_MS = flow.deadlineMs ?? 40000;
const WAIT_MS = 10000;
const result = { connects: [], received: [], acked: [], offline: [], left: [], failed: [] };
const sockets = [];

const stdin = readline.createInterface({ input: process.stdin });
const lines = [];
let lineWaiter = null;
stdin.on("line", (line) => {
  lines.push(line);
  if (lineWaiter) lineWaiter();
});
function nextLine() {
  return new Promise((resolve) => {
    const take = () => {
      if (lines.length) {
        lineWaiter = null;
        resolve(lines.shift());
      } else {
        lineWaiter = take;
      }
    };
    take();
  });
}

function client(url, token) {
  const options = { auth: { token }, reconnectionDelay: 200, reconnectionDelayMax: 1000 };
  if (flow.transports) options.transports = flow.transports;
  const socket = io(url, options);
  sockets.push(socket);
  return socket;
}

const once = (socket, event) => new Promise((resolve) => socket.once(event, (...a) => resolve(a)));
const ack = (socket, event, payload) =>
  within(socket.timeout(WAIT_MS).emitWithAck(event, payload), `ack of ${event}`, WAIT_MS + 1000);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function until(check, what) {
  const deadline = Date.now() + WAIT_MS;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out: ${what}`);
    await sleep(20);
  }
}

async function main() {
  const receiver = client(flow.balancer, flow.receiver.token);
  receiver.on("connect", () => {
    result.connects.push({ id: receiver.id, recovered: receiver.recovered,
                           transport: receiver.io.engine.transport.name });
  });
  const [welcome] = await within(once(receiver, "welcome"), "welcome", WAIT_MS);
  result.gateway = welcome.serverId;
  receiver.on("chat message", (message) => result.received.push(message.content));

  const other = Object.entries(flow.gateways).find(([id]) => id !== welcome.serverId);
  const sender = client(other[1], flow.sender.token);
  await within(once(sender, "connect"), "sender connect", WAIT_MS);
  sender.on("user offline", (who) => result.offline.push(who));
  sender.on("user left", (who) => result.left.push(who));
  const created = await ack(sender, "create room", { roomId: flow.roomId, roomName: "recovery" });
  if (!created.success) throw new Error(`create room: ${JSON.stringify(created)}`);
  for (const socket of [sender, receiver]) {
    const joined = await ack(socket, "join room", { roomId: flow.roomId });
    if (!joined.success) throw new Error(`join room: ${JSON.stringify(joined)}`);
  }

  let seq = 0;
  const send = async () => {
    const content = `m${seq}`;
    seq += 1;
    const reply = await ack(sender, "chat message", { content, roomId: flow.roomId });
    (reply.success ? result.acked : result.failed).push(content);
  };
  for (let i = 0; i < flow.before; i++) await send();
  await until(() => result.received.length === result.acked.length, "messages before the kill");

  process.stdout.write(JSON.stringify({ kill: welcome.serverId }) + "\n");
  const killed = nextLine();
  // Messages sent while the receiver's gateway dies and the receiver comes back elsewhere.
  while (!(await Promise.race([killed.then(() => true), sleep(0).then(() => false)]))) {
    await send();
    await sleep(20);
  }
  while (result.connects.length < 2) {
    await send();
    await sleep(20);
    if (seq > 100000) throw new Error("no reconnection");
  }
  for (let i = 0; i < flow.after; i++) await send();
  await until(() => result.received.length >= result.acked.length, "every acked message");
  await sleep(300); // a duplicate would arrive right behind: give it the chance to show
  const info = await ack(receiver, "get room info", flow.roomId);
  result.roomUsers = (info.room?.users ?? info.users ?? []).map((u) => u.socketId);
  result.finalId = receiver.id;
}

runFlow("recover flow", DEADLINE_MS, sockets, result, main);
