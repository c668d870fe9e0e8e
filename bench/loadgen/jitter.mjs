// The jitter bench's load (bench/jitter.py): official socket.io-client instances, on their
// default options (polling first, then the upgrade), in rooms; one sender per room sends
// acked messages at a fixed rate; every receiver's connection is cut about every `cutMs`
// (random phase) the way a network does (the engine closed: the client reconnects on its
// own, recovering when the server supports it; a client that comes back as a new socket
// joins its room again, as an application would).
//
// Config as JSON in JITTER (url, secret, clients, rooms, rate per room, durationMs, cutMs,
// drainMs). Prints {"event":"ready"} once every client is in its room and
// {"event":"sending"} when the senders start, then one result line.
import { createHmac } from "node:crypto";
import { performance } from "node:perf_hooks";
import process from "node:process";
import { io } from "socket.io-client";

const cfg = JSON.parse(process.env.JITTER ?? "{}");
const now = () => performance.timeOrigin + performance.now();
const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function jwt(secret, claims) {
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString("base64url");
  const head = b64({ alg: "HS256", typ: "JWT" });
  const body = b64(claims);
  const sig = createHmac("sha256", secret).update(`${head}.${body}`).digest("base64url");
  return `${head}.${body}.${sig}`;
}

function token(id) {
  const exp = Math.floor(Date.now() / 1000) + 3600;
  return jwt(cfg.secret, { userId: id, sub: id, username: id, role: "user", exp });
}

function quantiles(values) {
  if (!values.length) return { count: 0, p50: null, p99: null, max: null };
  const sorted = Float64Array.from(values).sort();
  const at = (q) => sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)];
  return { count: sorted.length, p50: at(0.5), p99: at(0.99), max: sorted[sorted.length - 1] };
}

async function until(check, ms, what) {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out: ${what}`);
    await sleep(20);
  }
}

const ack = (socket, event, payload, ms = 10000) =>
  socket.timeout(ms).emitWithAck(event, payload).catch(() => ({ success: false }));

class Receiver {
  constructor(n, room) {
    this.n = n;
    this.room = room;
    this.socket = io(cfg.url, { auth: { token: token(`j${n}`) }, forceNew: true });
    this.seen = new Set();
    this.last = -1;
    this.duplicates = 0;
    this.outOfOrder = 0;
    this.latencies = [];
    this.replayLatencies = [];
    this.connects = 0;
    this.recovered = 0;
    this.fresh = 0;
    // The last time away: [from, to]; `to` null while away.
    this.away = null;
    this.joined = false;
    this.socket.on("disconnect", () => {
      this.away = { from: now(), to: null };
    });
    this.socket.on("connect", () => this.onConnect());
    this.socket.on("chat message", (message) => this.onMessage(message));
  }

  async onConnect() {
    this.connects += 1;
    if (this.away) this.away.to = now();
    if (this.connects > 1 && this.socket.recovered) {
      this.recovered += 1;
      return;
    }
    if (this.connects > 1) this.fresh += 1;
    // A new socket (first connect, or not recovered): join the room again.
    this.joined = false;
    const reply = await ack(this.socket, "join room", { roomId: this.room });
    this.joined = reply.success === true;
  }

  onMessage(message) {
    const at = now();
    const [room, seqText, sentText] = String(message.content).split("|");
    if (room !== this.room) return;
    const seq = Number(seqText);
    if (this.seen.has(seq)) {
      this.duplicates += 1;
      return;
    }
    this.seen.add(seq);
    if (seq < this.last) this.outOfOrder += 1;
    this.last = Math.max(this.last, seq);
    const sent = Number(sentText);
    const latency = at - sent;
    // Sent while this client was away: it can only have come by replay (Node writes the
    // missed packets before its CONNECT reply, so its client hands them over before
    // "connect"; ours after: the interval, not the event order, tells).
    const away = this.away;
    if (away && sent >= away.from && (away.to === null || sent <= away.to)) {
      this.replayLatencies.push(latency);
    } else {
      this.latencies.push(latency);
    }
  }

  scheduleCuts(stopAt) {
    const cut = () => {
      if (now() >= stopAt) return;
      if (this.socket.connected) this.socket.io.engine.close();
      this.timer = setTimeout(cut, cfg.cutMs * (0.8 + 0.4 * Math.random()));
    };
    this.timer = setTimeout(cut, Math.random() * cfg.cutMs);
  }
}

async function main() {
  const perRoom = Math.floor(cfg.clients / cfg.rooms);
  const senders = [];
  for (let r = 0; r < cfg.rooms; r++) {
    const socket = io(cfg.url, { auth: { token: token(`s${r}`) }, forceNew: true });
    senders.push({ socket, room: `jit${r}`, seq: 0, acked: [], failed: 0 });
  }
  await until(() => senders.every((s) => s.socket.connected), 60000, "senders connected");
  for (const s of senders) {
    const created = await ack(s.socket, "create room",
                              { roomId: s.room, roomName: s.room, maxUsers: perRoom + 10 });
    if (!created.success) throw new Error(`create room ${s.room}: ${JSON.stringify(created)}`);
    const joined = await ack(s.socket, "join room", { roomId: s.room });
    if (!joined.success) throw new Error(`join room ${s.room}: ${JSON.stringify(joined)}`);
  }
  const receivers = [];
  for (let n = 0; n < perRoom * cfg.rooms; n++) {
    receivers.push(new Receiver(n, `jit${n % cfg.rooms}`));
    if (n % 50 === 49) await sleep(50); // a connect burst of 50 at a time
  }
  await until(() => receivers.every((r) => r.joined), 120000, "receivers in their rooms");
  out({ event: "ready" });

  const start = now();
  const stopAt = start + cfg.durationMs;
  for (const r of receivers) r.scheduleCuts(stopAt);
  out({ event: "sending" });
  const interval = 1000 / cfg.rate;
  await Promise.all(senders.map(async (s) => {
    let next = now() + Math.random() * interval;
    while (now() < stopAt) {
      await sleep(Math.max(0, next - now()));
      next += interval;
      const seq = s.seq++;
      const reply = await ack(s.socket, "chat message",
                              { content: `${s.room}|${seq}|${now()}`, roomId: s.room });
      if (reply.success) s.acked.push(seq);
      else s.failed += 1;
    }
  }));
  for (const r of receivers) clearTimeout(r.timer);
  // Everyone back, then what is still on its way.
  await until(() => receivers.every((r) => r.socket.connected && r.joined), 60000,
              "receivers back after the cuts").catch(() => {});
  const expectedOf = new Map(senders.map((s) => [s.room, new Set(s.acked)]));
  const complete = () => receivers.every((r) => {
    const expected = expectedOf.get(r.room);
    for (const seq of expected) if (!r.seen.has(seq)) return false;
    return true;
  });
  await until(complete, cfg.drainMs, "deliveries").catch(() => {});

  let expected = 0;
  let delivered = 0;
  for (const r of receivers) {
    const acked = expectedOf.get(r.room);
    expected += acked.size;
    for (const seq of acked) if (r.seen.has(seq)) delivered += 1;
  }
  const sum = (f) => receivers.reduce((total, r) => total + f(r), 0);
  out({
    result: {
      clients: receivers.length,
      rooms: cfg.rooms,
      acked: senders.reduce((t, s) => t + s.acked.length, 0),
      failedSends: senders.reduce((t, s) => t + s.failed, 0),
      expected,
      delivered,
      duplicates: sum((r) => r.duplicates),
      outOfOrder: sum((r) => r.outOfOrder),
      reconnects: sum((r) => r.connects - 1),
      recovered: sum((r) => r.recovered),
      fresh: sum((r) => r.fresh),
      latency: quantiles(receivers.flatMap((r) => r.latencies)),
      replay: quantiles(receivers.flatMap((r) => r.replayLatencies)),
    },
  });
  for (const s of senders) s.socket.disconnect();
  for (const r of receivers) r.socket.disconnect();
}

main().then(
  () => process.exit(0),
  (err) => {
    out({ error: String(err?.stack ?? err) });
    process.exit(1);
  },
);
