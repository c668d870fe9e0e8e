// The load generator of bench/: many minimal Socket.IO v4 clients in one Node process.
//
// Each client is a bare `ws` WebSocket speaking just enough Engine.IO v4 / Socket.IO v5:
// the open packet, CONNECT with `auth.token`, answering pings, EVENT with an ack id, and
// reading incoming `42[...]` frames only as far as a marker in the message content that
// carries the step and the send time. No JSON parsing on the delivery path. With
// "transport":"polling" a client is HTTP long-polling instead (keep-alive connections, one
// GET waiting at a time, POSTs queued and joined as engine.io-client does); with
// "spread":true each of its requests goes to the next of the URLs (the cost of requests that
// reach a gateway which does not own their session).
//
// Driven over stdin/stdout, one JSON object per line (bench/loadgen.py is the other side):
//   {"cmd":"connect", "urls":[...], "n":1000, "ns":"/", "secret":"...", "addrs":1, ...}
//   {"cmd":"rooms", "rooms":[{"id":"fo0","first":0,"count":100}], "maxUsers":1000}
//   {"cmd":"quiesce", "quietMs":500, "timeoutMs":60000}
//   {"cmd":"step", "rooms":["fo0",...], "rate":20000, "warmMs":2000, "measureMs":4000, ...}
//   {"cmd":"close"}   {"cmd":"exit"}
// Every command answers with one {"reply": <cmd>, ...} line; a step also prints
// {"event":"measure_start"} and {"event":"measure_end"} at the edges of its measure window,
// which is when the harness samples the CPU counters of the server and of this process.
import { createHmac } from "node:crypto";
import http from "node:http";
import { performance } from "node:perf_hooks";
import process from "node:process";
import readline from "node:readline";
import WebSocket from "ws";

const now = () => performance.now(); // ms, same clock for send and receive (one process)

function out(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

// ---------------------------------------------------------------- tokens (HS256 JWT)
function b64url(buf) {
  return Buffer.from(buf).toString("base64url");
}
function jwtHS256(secret, claims) {
  const head = b64url(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  const body = b64url(JSON.stringify(claims));
  const sig = createHmac("sha256", secret).update(`${head}.${body}`).digest("base64url");
  return `${head}.${body}.${sig}`;
}

// ---------------------------------------------------------------- latency histogram
// 10 µs buckets up to 10 s, one overflow bucket: constant memory, O(1) per sample.
class Histogram {
  constructor() {
    this.buckets = new Uint32Array(1_000_001);
    this.count = 0;
    this.max = 0;
    this.sum = 0;
  }
  add(ms) {
    if (ms < 0) ms = 0;
    const i = Math.min(Math.floor(ms * 100), 1_000_000);
    this.buckets[i]++;
    this.count++;
    this.sum += ms;
    if (ms > this.max) this.max = ms;
  }
  quantile(q) {
    if (this.count === 0) return null;
    const target = Math.ceil(q * this.count);
    let seen = 0;
    for (let i = 0; i < this.buckets.length; i++) {
      seen += this.buckets[i];
      if (seen >= target) return (i + 1) / 100; // upper edge of the bucket, ms
    }
    return this.max;
  }
  summary() {
    return {
      count: this.count,
      p50: this.quantile(0.5),
      p90: this.quantile(0.9),
      p99: this.quantile(0.99),
      max: this.count ? this.max : null,
      mean: this.count ? this.sum / this.count : null,
    };
  }
}

// ---------------------------------------------------------------- clients
/** A connect attempt: `finish(ok, error)` settles `promise` with {ok, error, ms} once;
 * after `timeoutMs` it settles as a timeout and `onTimeout` runs. */
function attempt(timeoutMs, onTimeout) {
  const t0 = now();
  let done = false;
  let resolve;
  const promise = new Promise((r) => { resolve = r; });
  const timer = setTimeout(() => {
    finish(false, "timeout");
    onTimeout();
  }, timeoutMs);
  function finish(ok, error) {
    if (done) return;
    done = true;
    clearTimeout(timer);
    resolve({ ok, error, ms: now() - t0 });
  }
  return { promise, finish };
}

const clients = [];
const rooms = new Map(); // id -> {id, first, count}
let openCount = 0;
let disconnects = 0;
let lastFrame = 0;
let frames = 0;

// The marker in a chat message's content: ~B<step>.<measured>.<sendTimeUs>~
const MARK = Buffer.from("~B");

// What the current step counts (replaced at each step).
let step = null;

class Client {
  constructor(index, url, ns, token, localAddress) {
    this.index = index;
    this.url = url;
    this.ns = ns;
    this.prefix = ns === "/" ? "" : `${ns},`;
    this.token = token;
    this.localAddress = localAddress;
    this.ws = null;
    this.connected = false;
    this.nextAck = 1;
    this.pending = new Map(); // ack id -> {t, resolve}
  }

  connect(timeoutMs) {
    const { promise, finish } = attempt(timeoutMs, () => this.ws?.terminate());
    {
      const ws = new WebSocket(`${this.url}/socket.io/?EIO=4&transport=websocket`, {
        perMessageDeflate: false,
        skipUTF8Validation: true,
        localAddress: this.localAddress,
        handshakeTimeout: timeoutMs,
      });
      this.ws = ws;
      ws.on("message", (data) => this.onPacket(data, finish));
      ws.on("error", (err) => finish(false, String(err.message || err)));
      ws.on("close", () => {
        if (this.connected) {
          this.connected = false;
          openCount--;
          if (!closing) disconnects++;
        }
        finish(false, "closed");
        for (const p of this.pending.values()) p.resolve?.(null);
        this.pending.clear();
      });
    }
    return promise;
  }

  /** One Engine.IO packet (a Buffer) from the server, whatever the transport. */
  onPacket(data, finish) {
    frames++;
    lastFrame = now();
    const b0 = data[0];
    if (b0 === 0x34) {
      // Socket.IO packet
      const b1 = data[1];
      if (b1 === 0x32) onEvent(data);
      else if (b1 === 0x33) this.onAck(data);
      else if (b1 === 0x30) {
        if (!this.connected) {
          this.connected = true;
          openCount++;
          finish(true);
        }
      } else if (b1 === 0x34) finish(false, data.toString().slice(0, 200));
    } else if (b0 === 0x32) {
      this.send("3"); // pong
    } else if (b0 === 0x30) {
      this.send(`40${this.prefix}${JSON.stringify({ token: this.token })}`);
    }
  }

  send(packet) {
    this.ws.send(packet);
  }

  terminate() {
    this.ws?.terminate();
  }

  // emit with an ack; resolves with the ack's first argument, or null when the socket closed
  // or no ack came within timeoutMs
  emit(event, payload, timeoutMs = 30000) {
    return new Promise((resolve) => {
      const id = this.nextAck++;
      const timer = setTimeout(() => {
        this.pending.delete(id);
        resolve(null);
      }, timeoutMs);
      const done = (value) => {
        clearTimeout(timer);
        resolve(value);
      };
      this.pending.set(id, { t: now(), resolve: done });
      this.send(`42${this.prefix}${id}${JSON.stringify([event, payload])}`);
    });
  }

  // fire-and-count emit used on the hot path: the ack is counted in the current step
  emitCounted(event, payload, st) {
    const id = this.nextAck++;
    this.pending.set(id, { t: now(), resolve: null, st });
    this.send(`42${this.prefix}${id}${JSON.stringify([event, payload])}`);
  }

  onAck(data) {
    // 43[<ns>,]<id>[...]
    let i = 2;
    if (data[i] === 0x2f) {
      while (i < data.length && data[i] !== 0x2c) i++;
      i++;
    }
    let id = 0;
    while (i < data.length && data[i] >= 0x30 && data[i] <= 0x39) id = id * 10 + data[i++] - 0x30;
    const p = this.pending.get(id);
    if (!p) return;
    this.pending.delete(id);
    let value = null;
    try {
      value = JSON.parse(data.toString("utf8", i))[0];
    } catch {
      value = null;
    }
    if (p.resolve) {
      p.resolve(value);
      return;
    }
    const st = p.st;
    if (st && st === step) {
      if (value && value.success === true) st.ackOk++;
      else {
        st.ackFail++;
        if (st.ackErrors.length < 5) st.ackErrors.push(value);
      }
      st.ackLatency.add(now() - p.t);
    }
  }
}

let closing = false;

// An HTTP long-polling client: the same packets, carried by GETs (one waiting at a time) and
// POSTs (one at a time; what is sent meanwhile is joined with \x1e into the next one).
class PollingClient extends Client {
  constructor(index, urls, ns, token, localAddress) {
    super(index, urls[0], ns, token, localAddress);
    this.urls = urls.map((u) => u.replace(/^ws/, "http")); // the harness names ws:// URLs
    this.turn = index % urls.length;
    this.agent = new http.Agent({ keepAlive: true, maxSockets: 2, localAddress });
    this.sid = null;
    this.outbox = [];
    this.posting = false;
    this.requests = new Set();
    this.closed = false;
  }

  target() {
    const url = this.urls[this.turn];
    this.turn = (this.turn + 1) % this.urls.length;
    const sid = this.sid ? `&sid=${this.sid}` : "";
    return `${url}/socket.io/?EIO=4&transport=polling${sid}`;
  }

  request(method, body) {
    return new Promise((resolve) => {
      const req = http.request(this.target(), {
        method, agent: this.agent,
        headers: body === undefined ? {} : { "Content-Type": "text/plain;charset=UTF-8" },
      }, (res) => {
        const chunks = [];
        res.on("data", (c) => chunks.push(c));
        res.on("end", () => {
          this.requests.delete(req);
          resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString() });
        });
      });
      this.requests.add(req);
      req.on("error", (err) => {
        this.requests.delete(req);
        resolve({ status: 0, body: String(err.message || err) });
      });
      req.end(body);
    });
  }

  connect(timeoutMs) {
    const { promise, finish } = attempt(timeoutMs, () => this.terminate());
    this.finish = finish;
    this.request("GET").then((r) => {
      if (r.status !== 200 || r.body[0] !== "0") {
        finish(false, `handshake ${r.status}: ${r.body.slice(0, 100)}`);
        return;
      }
      this.sid = JSON.parse(r.body.slice(1)).sid;
      this.onPacket(Buffer.from(r.body), finish);
      this.poll();
    });
    return promise;
  }

  async poll() {
    while (!this.closed) {
      const r = await this.request("GET");
      if (r.status !== 200) {
        this.lost(`poll ${r.status}`);
        return;
      }
      for (const packet of r.body.split("\x1e")) {
        if (packet[0] === "1") {
          this.lost("closed by the server");
          return;
        }
        if (packet[0] !== "b" && packet !== "6") this.onPacket(Buffer.from(packet), this.finish);
      }
    }
  }

  send(packet) {
    if (this.closed) return;
    this.outbox.push(packet);
    if (!this.posting) this.flush();
  }

  async flush() {
    this.posting = true;
    while (this.outbox.length && !this.closed) {
      const body = this.outbox.join("\x1e");
      this.outbox = [];
      const r = await this.request("POST", body);
      if (r.status !== 200) {
        this.lost(`post ${r.status}`);
        break;
      }
    }
    this.posting = false;
  }

  lost(why) {
    if (this.closed) return;
    this.closed = true;
    if (this.connected) {
      this.connected = false;
      openCount--;
      if (!closing) disconnects++;
    }
    this.finish?.(false, why);
    for (const p of this.pending.values()) p.resolve?.(null);
    this.pending.clear();
    for (const req of this.requests) req.destroy();
    this.agent.destroy();
  }

  terminate() {
    this.lost("terminated");
  }
}

function onEvent(data) {
  const at = data.indexOf(MARK, 4);
  if (at < 0) return;
  // ~B<step>.<measured>.<sendTimeUs>~
  const end = data.length;
  let i = at + 2;
  let stepId = 0;
  while (i < end && data[i] !== 0x2e) stepId = stepId * 10 + data[i++] - 0x30;
  i++;
  const measured = data[i] === 0x31;
  i += 2;
  let sent = 0;
  while (i < end && data[i] !== 0x7e) sent = sent * 10 + data[i++] - 0x30;
  const st = step;
  if (st === null || stepId !== st.id) {
    if (st !== null) st.late++;
    return;
  }
  if (st.phase === 1) st.rxWindow++;
  if (measured) {
    st.received++;
    st.latency.add(now() - sent / 1000);
  } else {
    st.warmReceived++;
  }
}

// ---------------------------------------------------------------- commands
async function pool(items, concurrency, fn) {
  let next = 0;
  const workers = [];
  for (let w = 0; w < Math.min(concurrency, items.length); w++) {
    workers.push(
      (async () => {
        while (next < items.length) {
          const item = items[next++];
          await fn(item);
        }
      })(),
    );
  }
  await Promise.all(workers);
}

async function cmdConnect(c) {
  const n = c.n;
  const urls = c.urls;
  const addrs = Math.max(1, c.addrs || 1);
  const first = clients.length;
  const exp = Math.floor(Date.now() / 1000) + 24 * 3600;
  const iat = Math.floor(Date.now() / 1000) - 5;
  const created = [];
  for (let k = 0; k < n; k++) {
    const index = first + k;
    const userId = `${c.userPrefix || "u"}${index}`;
    const token = jwtHS256(c.secret, {
      sub: userId,
      userId,
      username: `user${index}`,
      role: "user",
      iat,
      exp,
    });
    const offset = c.addrOffset || 0;
    const localAddress =
      addrs > 1 || offset > 0 ? `127.0.0.${1 + offset + (k % addrs)}` : undefined;
    const client = c.transport === "polling"
      ? new PollingClient(index, c.spread ? urls : [urls[k % urls.length]], c.ns || "/", token,
                          localAddress)
      : new Client(index, urls[k % urls.length], c.ns || "/", token, localAddress);
    clients.push(client);
    created.push(client);
  }
  const hist = new Histogram();
  let failed = 0;
  const errors = new Map();
  const t0 = now();
  const cpu0 = process.cpuUsage();
  let lastProgress = t0;
  let done = 0;
  await pool(created, c.concurrency || 200, async (client) => {
    const r = await client.connect(c.timeoutMs || 30000);
    done++;
    if (r.ok) hist.add(r.ms);
    else {
      failed++;
      errors.set(r.error, (errors.get(r.error) || 0) + 1);
    }
    if (c.progress && now() - lastProgress > 2000) {
      lastProgress = now();
      out({ event: "progress", what: "connect", done, of: n, failed });
    }
  });
  const elapsed = now() - t0;
  const cpu = process.cpuUsage(cpu0);
  return {
    connected: n - failed,
    failed,
    errors: Object.fromEntries([...errors.entries()].slice(0, 5)),
    elapsedMs: elapsed,
    perSecond: ((n - failed) / elapsed) * 1000,
    latency: hist.summary(),
    loadgenCpuMs: (cpu.user + cpu.system) / 1000,
    open: openCount,
  };
}

async function cmdRooms(c) {
  const t0 = now();
  let createFailed = 0;
  let joinFailed = 0;
  const errors = [];
  for (const r of c.rooms) {
    rooms.set(r.id, { id: r.id, first: r.first, count: r.count });
    const creator = clients[r.first];
    const ack = await creator.emit("create room", {
      roomId: r.id,
      roomName: `bench ${r.id}`,
      maxUsers: c.maxUsers || 1000,
    }, c.ackTimeoutMs);
    if (!ack || ack.success !== true) {
      createFailed++;
      if (errors.length < 5) errors.push({ create: r.id, ack });
    }
  }
  const joins = [];
  for (const r of c.rooms) for (let k = 0; k < r.count; k++) joins.push([r.id, clients[r.first + k]]);
  await pool(joins, c.concurrency || 100, async ([roomId, client]) => {
    if (joinFailed >= 20) return; // broken: give up rather than time out a thousand times
    const ack = await client.emit("join room", { roomId }, c.ackTimeoutMs);
    if (!ack || ack.success !== true) {
      joinFailed++;
      if (errors.length < 5) errors.push({ join: roomId, ack });
    }
  });
  return { createFailed, joinFailed, errors, elapsedMs: now() - t0 };
}

function cmdQuiesce(c) {
  const quiet = c.quietMs || 500;
  const t0 = now();
  const f0 = frames;
  return new Promise((resolve) => {
    const check = () => {
      const t = now();
      if (t - lastFrame >= quiet || t - t0 > (c.timeoutMs || 60000)) {
        resolve({ frames: frames - f0, elapsedMs: t - t0, quiet: t - lastFrame >= quiet });
      } else setTimeout(check, 50);
    };
    check();
  });
}

let stepCounter = 0;

function cmdStep(c) {
  const active = c.rooms.map((id) => {
    const r = rooms.get(id);
    if (!r) throw new Error(`unknown room ${id}`);
    return { id, sender: clients[r.first], receivers: r.count - 1 };
  });
  const receivers = active.reduce((a, r) => a + r.receivers, 0);
  // offered deliveries/s -> messages/s (round-robin over the rooms)
  const msgRate = (c.rate * active.length) / receivers;
  const pad = "x".repeat(Math.max(0, (c.contentBytes || 64) - 24));
  const st = {
    id: ++stepCounter,
    phase: 0, // 0 warm, 1 measure, 2 drain
    sent: 0,
    sentMeasured: 0,
    expected: 0,
    received: 0,
    warmReceived: 0,
    rxWindow: 0,
    late: 0,
    ackOk: 0,
    ackFail: 0,
    ackErrors: [],
    latency: new Histogram(),
    ackLatency: new Histogram(),
  };
  step = st;
  const disc0 = disconnects;
  const warm = c.warmMs;
  const measure = c.measureMs;
  const tick = c.tickMs || 2;
  return new Promise((resolve) => {
    const t0 = now();
    let rr = 0;
    let maxLag = 0;
    let lastTick = t0;
    let measureStart = 0;
    let measureEnd = 0;
    const sendOne = (measured) => {
      const r = active[rr];
      rr = (rr + 1) % active.length;
      if (!r.sender.connected) return;
      const t = Math.round(now() * 1000);
      const content = `~B${st.id}.${measured ? 1 : 0}.${t}~${pad}`;
      r.sender.emitCounted("chat message", { roomId: r.id, content }, st);
      st.sent++;
      if (measured) {
        st.sentMeasured++;
        st.expected += r.receivers;
      }
    };
    const timer = setInterval(() => {
      const t = now();
      const lag = t - lastTick - tick;
      if (lag > maxLag) maxLag = lag;
      lastTick = t;
      const elapsed = t - t0;
      if (st.phase === 0 && elapsed >= warm) {
        st.phase = 1;
        measureStart = t;
        out({ event: "measure_start", step: st.id });
      }
      if (st.phase === 1 && elapsed >= warm + measure) {
        st.phase = 2;
        measureEnd = t;
        out({ event: "measure_end", step: st.id });
        clearInterval(timer);
        drain();
        return;
      }
      const due = Math.floor((elapsed / 1000) * msgRate) - st.sent;
      for (let k = 0; k < due; k++) sendOne(st.phase === 1);
    }, tick);
    const drain = () => {
      const deadline = now() + (c.drainMs || 3000);
      const check = () => {
        const pendingAcks = st.sent - st.ackOk - st.ackFail;
        if ((st.received >= st.expected && pendingAcks <= 0) || now() >= deadline) {
          const measureS = (measureEnd - measureStart) / 1000;
          resolve({
            step: st.id,
            rate: c.rate,
            msgRate,
            measureS,
            sent: st.sent,
            sentMeasured: st.sentMeasured,
            offeredMsgRate: st.sentMeasured / measureS,
            expected: st.expected,
            received: st.received,
            lost: st.expected - st.received,
            deliveredRate: st.rxWindow / measureS,
            rxWindow: st.rxWindow,
            warmReceived: st.warmReceived,
            late: st.late,
            ackOk: st.ackOk,
            ackFail: st.ackFail,
            ackErrors: st.ackErrors,
            pendingAcks,
            disconnects: disconnects - disc0,
            open: openCount,
            latency: st.latency.summary(),
            ackLatency: st.ackLatency.summary(),
            maxTickLagMs: maxLag,
          });
        } else setTimeout(check, 20);
      };
      check();
    };
  });
}

async function cmdClose() {
  closing = true;
  for (const c of clients) c.terminate();
  const t0 = now();
  while (openCount > 0 && now() - t0 < 5000) await new Promise((r) => setTimeout(r, 20));
  const open = openCount;
  clients.length = 0;
  rooms.clear();
  closing = false;
  return { open };
}

const handlers = {
  connect: cmdConnect,
  rooms: cmdRooms,
  quiesce: cmdQuiesce,
  step: cmdStep,
  close: cmdClose,
  status: async () => ({ open: openCount, disconnects, frames }),
  exit: async () => {
    setTimeout(() => process.exit(0), 10);
    return {};
  },
};

// Commands run one at a time, in order.
let queue = Promise.resolve();
const rl = readline.createInterface({ input: process.stdin });
rl.on("line", (line) => {
  if (!line.trim()) return;
  let c;
  try {
    c = JSON.parse(line);
  } catch (e) {
    out({ reply: "error", error: `bad json: ${e.message}` });
    return;
  }
  queue = queue.then(async () => {
    const handler = handlers[c.cmd];
    if (!handler) {
      out({ reply: c.cmd, error: "unknown command" });
      return;
    }
    try {
      const result = await handler(c);
      out({ reply: c.cmd, ...result });
    } catch (e) {
      out({ reply: c.cmd, error: String(e.stack || e) });
    }
  });
});
rl.on("close", () => queue.then(() => process.exit(0)));
