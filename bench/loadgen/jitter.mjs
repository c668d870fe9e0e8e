// The jitter bench's load (bench/jitter.py): official socket.io-client instances, on their
// default options (polling first, then the upgrade), in rooms; one sender per room sends
// acked messages at a fixed rate; every receiver's connection is cut about every `cutMs`
// (random phase) the way a network does (see dropConnection: the client reconnects on its
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

const connectErrors = new Map();
const duplicateSamples = [];
// The client's defaults (polling first), unless the bench asks for one transport.
const options = { forceNew: true, ...(cfg.transports ? { transports: cfg.transports } : {}) };

const ack = (socket, event, payload, ms = 10000) =>
  socket.timeout(ms).emitWithAck(event, payload).catch(() => ({ success: false }));

// A network drop: the TCP connection of a WebSocket destroyed under the client (nothing more
// is read from it), or, on polling, the transport failing as on a network error. (Not
// engine.close(): frames already on their way are still read after its "disconnect", and
// socket.io-client emits them after its next connect, beside the replay of the same packets:
// duplicates that no network drop causes.)
function dropConnection(socket) {
  const transport = socket.io.engine?.transport;
  const raw = transport?.name === "websocket" ? transport.ws?._socket : null;
  if (raw) raw.destroy();
  else transport?.onError("simulated network drop");
}

class Receiver {
  constructor(n, room) {
    this.n = n;
    this.room = room;
    this.socket = io(cfg.url, { auth: { token: token(`j${n}`) }, ...options });
    this.seen = new Set();
    this.lastOffset = null;
    this.last = -1;
    this.duplicates = 0;
    this.outOfOrder = 0;
    this.latencies = [];
    this.replayLatencies = [];
    this.connects = 0;
    this.recovered = 0;
    this.fresh = 0;
    this.joinFailures = 0;
    this.awayTimes = [];
    // The last time away: [from, to]; `to` null while away.
    this.away = null;
    this.joined = false;
    this.socket.on("disconnect", (reason) => {
      this.away = { from: now(), to: null, offset: this.socket._lastOffset, reason,
                    lastSeen: this.lastOffset };
    });
    this.socket.on("connect", () => this.onConnect());

    this.socket.on("connect_error", (err) => {
      const key = String(err?.message ?? err).slice(0, 60);
      connectErrors.set(key, (connectErrors.get(key) ?? 0) + 1);
    });
    this.socket.on("chat message", (message, offset) => this.onMessage(message, offset));
  }

  async onConnect() {
    this.connects += 1;
    if (this.away) {
      this.away.to = now();
      this.awayTimes.push(this.away.to - this.away.from);
    }
    if (this.connects > 1 && this.socket.recovered) {
      this.recovered += 1;
      return;
    }
    if (this.connects > 1) this.fresh += 1;
    // A new socket (first connect, or not recovered): join the room again.
    this.joined = false;
    const reply = await ack(this.socket, "join room", { roomId: this.room });
    this.joined = reply.success === true;
    if (!this.joined) this.joinFailures += 1;
  }

  onMessage(message, offset) {
    const at = now();
    const [room, seqText, sentText] = String(message.content).split("|");
    if (room !== this.room) return;
    const seq = Number(seqText);
    if (this.seen.has(seq)) {
      this.duplicates += 1;
      if (duplicateSamples.length < 20) {
        duplicateSamples.push({ receiver: this.n, sid: this.socket.id, seq, offset,
                                connects: this.connects, sinceConnect: at - (this.away?.to ?? 0),
                                transport: this.socket.io.engine?.transport?.name,
                                away: this.away });
      }
      return;
    }
    this.seen.add(seq);
    this.lastOffset = offset;
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
      if (this.socket.connected) dropConnection(this.socket);
      this.timer = setTimeout(cut, cfg.cutMs * (0.8 + 0.4 * Math.random()));
    };
    this.timer = setTimeout(cut, Math.random() * cfg.cutMs);
  }
}

async function main() {
  const perRoom = Math.floor(cfg.clients / cfg.rooms);
  const senders = [];
  for (let r = 0; r < cfg.rooms; r++) {
    const socket = io(cfg.url, { auth: { token: token(`s${r}`) }, ...options });
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
  // How the deliveries spread over receivers (tenths of what each was owed).
  const spread = new Array(11).fill(0);
  for (const r of receivers) {
    const acked = expectedOf.get(r.room);
    let got = 0;
    for (const seq of acked) if (r.seen.has(seq)) got += 1;
    spread[acked.size ? Math.floor((10 * got) / acked.size) : 10] += 1;
  }
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
      joinFailures: sum((r) => r.joinFailures),
      spread,
      duplicateSamples,
      connectErrors: Object.fromEntries(connectErrors),
      away: quantiles(receivers.flatMap((r) => r.awayTimes)),
      connectedAtEnd: sum((r) => (r.socket.connected ? 1 : 0)),
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
