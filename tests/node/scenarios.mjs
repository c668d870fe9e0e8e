// The official Node socket.io-client against a switchboard gateway running the test miniapp
// (tests/support/miniapp.py). Usage:
//
//     node scenarios.mjs <gateway-url> <scenario>
//
// Prints exactly one JSON line to stdout: {"ok": true, "scenario": ..., "result": {...}} or
// {"ok": false, "scenario": ..., "error": "..."}; exits 0 on success, 1 on failure, 2 on the
// overall deadline. Every wait is bounded; the process always ends within DEADLINE_MS.
// The assertions live in Python (tests/integration/test_node_client.py): scenarios only
// record what the client saw. Binary values are written as {"$bin": <hex>, "$type": <class>}.

import { io } from "socket.io-client";

import { printAndExit, within as boundedBy } from "./finish.mjs";

const WAIT_MS = 4000;
const DEADLINE_MS = 9000;

const [url, scenario] = process.argv.slice(2);
const sockets = [];

function finish(code, body) {
  printAndExit(JSON.stringify({ scenario, ...body }, replacer), sockets, code);
}

const deadline = setTimeout(
  () => finish(2, { ok: false, error: `scenario did not finish in ${DEADLINE_MS} ms` }),
  DEADLINE_MS,
);

function replacer(_key, value) {
  // JSON.stringify calls Buffer#toJSON before the replacer sees it: undo that.
  if (value && value.type === "Buffer" && Array.isArray(value.data)) {
    return { $bin: Buffer.from(value.data).toString("hex"), $type: "Buffer" };
  }
  if (value instanceof ArrayBuffer) {
    return { $bin: Buffer.from(value).toString("hex"), $type: "ArrayBuffer" };
  }
  if (ArrayBuffer.isView(value)) {
    const bytes = Buffer.from(value.buffer, value.byteOffset, value.byteLength);
    return { $bin: bytes.toString("hex"), $type: value.constructor.name };
  }
  return value;
}

function within(promise, what, ms = WAIT_MS) {
  return boundedBy(promise, what, ms);
}

/** The next `event` on `socket` (its arguments as an array), bounded. */
function next(socket, event, what = event) {
  return within(new Promise((resolve) => socket.once(event, (...args) => resolve(args))), what);
}

/** Record every `event` on `socket` into an array (arguments as arrays). */
function record(socket, event) {
  const seen = [];
  socket.on(event, (...args) => seen.push(args));
  return seen;
}

/** An acknowledged emit through the callback API (with its own timeout): the ack's arguments. */
function callback(socket, event, ...args) {
  return within(
    new Promise((resolve, reject) => {
      socket.timeout(WAIT_MS).emit(event, ...args, (err, ...ack) => {
        if (err) reject(new Error(`no ack for ${event}: ${err.message}`));
        else resolve(ack);
      });
    }),
    `ack for ${event}`,
    WAIT_MS + 500,
  );
}

function ack(socket, event, ...args) {
  return within(socket.timeout(WAIT_MS).emitWithAck(event, ...args), `ack for ${event}`);
}

// The client's defaults (polling first, then the upgrade), as a user's first try.
const OPTIONS = { reconnection: false, timeout: WAIT_MS };

function open(path = "", options = {}) {
  const socket = io(url + path, { ...OPTIONS, ...options });
  sockets.push(socket);
  return socket;
}

/** Open a socket and wait for its CONNECT (and its `hello`, registered before connecting). */
async function connected(path = "", options = {}) {
  const socket = open(path, options);
  const hello = next(socket, "hello", `hello on ${path || "/"}`);
  const error = next(socket, "connect_error").then(([err]) => {
    throw new Error(`connect_error on ${path || "/"}: ${err.message}`);
  });
  await within(Promise.race([next(socket, "connect"), error]), `connect to ${path || "/"}`);
  error.catch(() => {});
  return { socket, hello: (await hello)[0] };
}

/** Expect a refusal: the connect_error's message and data, and the socket's state after it. */
async function refused(path, options = {}) {
  const socket = open(path, options);
  const connectedEarly = next(socket, "connect").then(() => {
    throw new Error(`CONNECT to ${path || "/"} succeeded`);
  });
  connectedEarly.catch(() => {});
  const [err] = await within(
    Promise.race([next(socket, "connect_error"), connectedEarly]),
    `connect_error on ${path || "/"}`,
  );
  return { message: err.message, data: err.data ?? null, connected: socket.connected,
           active: socket.active };
}

const scenarios = {
  async basic() {
    const { socket, hello } = await connected();
    const echoed = record(socket, "echoed");
    const withAck = await ack(socket, "echo", { a: [1, "two", null] });
    const callbackMany = await callback(socket, "echo", "x", 2, { y: true });
    const callbackNone = await callback(socket, "echo");
    socket.emit("echo", "no ack wanted");
    // The server handles one socket's events in order: after this ack, every `echoed`
    // emit that precedes it has been written.
    const marker = await ack(socket, "echo", "marker");
    await within(
      (async () => {
        while (echoed.length < 5) await next(socket, "echoed");
      })(),
      "five echoed events",
    );
    return {
      id: socket.id,
      hello,
      withAck,
      callbackMany,
      callbackNone,
      marker,
      echoed,
    };
  },

  async binary() {
    const { socket } = await connected();
    const blob = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
    const payload = {
      blob,
      nested: [new Uint8Array([0]), "x", { deep: Uint8Array.from([1, 2, 3]) }],
      empty: Buffer.alloc(0),
    };
    const echoed = next(socket, "echoed", "binary echoed event");
    const withAck = await ack(socket, "echo", payload, Buffer.from("second"));
    const event = await echoed;
    const viaCallback = await callback(socket, "echo", new Uint8Array([255, 254]));
    return { withAck, event, viaCallback };
  },

  async namespaces() {
    const main = open();
    const other = open("/other");
    const helloMain = next(main, "hello", "hello on /");
    const helloOther = next(other, "hello", "hello on /other");
    await within(Promise.all([next(main, "connect"), next(other, "connect")]), "both CONNECTs");
    const whoMain = await ack(main, "whoami");
    const whoOther = await ack(other, "whoami");
    const result = {
      helloMain: (await helloMain)[0],
      helloOther: (await helloOther)[0],
      sameManager: main.io === other.io,
      engineIds: [...new Set([main.io.engine.id, other.io.engine.id])],
      ids: { main: main.id, other: other.id },
      whoami: { main: whoMain, other: whoOther },
    };
    // Leaving one namespace keeps the connection and the other namespace.
    const engine = main.io.engine;
    other.disconnect();
    const stillMain = await ack(main, "echo", "still here");
    result.afterLeaving = {
      otherConnected: other.connected,
      mainConnected: main.connected,
      sameEngine: main.io.engine === engine && engine.readyState === "open",
      echo: stillMain,
    };
    return result;
  },

  async invalidNamespace() {
    const refusal = await refused("/nope");
    // The connection itself is fine: a valid namespace on a fresh client still connects.
    const { hello } = await connected("", { forceNew: true });
    return { refusal, helloAfter: hello };
  },

  async refused() {
    const refusal = await refused("", { auth: { refuse: true } });
    const { hello } = await connected("", { forceNew: true, auth: { refuse: false } });
    return { refusal, helloAfter: hello };
  },

  async failedAck() {
    const { socket } = await connected();
    const errors = record(socket, "error");
    const missingRoom = await ack(socket, "join");
    const unknown = await callback(socket, "no such event", 1);
    socket.emit("join", 42);
    const [errorEvent] = await next(socket, "error", "error event");
    return { missingRoom, unknown, errorEvent, errors: errors.length };
  },

  async rooms() {
    const clients = {};
    for (const name of ["a", "b", "c"]) {
      clients[name] = (await connected("", { forceNew: true })).socket;
    }
    const { a, b, c } = clients;
    const said = { a: record(a, "said"), b: record(b, "said"), c: record(c, "said") };
    const joins = {
      a: await ack(a, "join", "node-room"),
      b: await ack(b, "join", "node-room"),
      c: await ack(c, "join", "node-elsewhere"),
    };
    const sayAck = await ack(a, "say", "node-room", "hi", Buffer.from([1, 2]), { n: 1 });
    await within(
      (async () => {
        while (said.b.length < 1) await next(b, "said");
      })(),
      "b hears a",
    );
    // Markers in delivery order: b → node-room reaches a (so anything a got earlier would be
    // there first), and a → node-elsewhere reaches c.
    await ack(b, "say", "node-room", "from b");
    await ack(a, "say", "node-elsewhere", "to c");
    await within(
      (async () => {
        while (said.a.length < 1) await next(a, "said");
        while (said.c.length < 1) await next(c, "said");
      })(),
      "markers",
    );
    const ids = new Set([a.io.engine.id, b.io.engine.id, c.io.engine.id]);
    return { joins, sayAck, said, distinctEngines: ids.size };
  },
};

async function main() {
  const run = scenarios[scenario];
  if (!url || !run) {
    finish(1, { ok: false, error: `usage: scenarios.mjs <url> <${Object.keys(scenarios).join("|")}>` });
    return;
  }
  try {
    const result = await run();
    clearTimeout(deadline);
    finish(0, { ok: true, result });
  } catch (err) {
    clearTimeout(deadline);
    finish(1, { ok: false, error: String(err && err.stack ? err.stack : err) });
  }
}

main();
