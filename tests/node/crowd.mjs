// A crowd behind one address: as many official clients as the tokens in flow.tokensFile on their default options
// (each a different user), all from this one host, connect through the balancer; then the
// gateway with pid flow.victimPid is killed (kill -9) and every client must be back, on the
// gateways left. Prints one JSON line (finish.mjs runFlow); tests/integration/test_crowd.py
// asserts.
import { readFileSync } from "node:fs";
import { io } from "socket.io-client";
import { runFlow } from "./finish.mjs";

const flow = JSON.parse(process.env.CROWD_FLOW ?? "{}");
const result = { errors: { before: [], after: [] } };
const sockets = [];
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

let phase = "before";
function errorOf(err) {
  // A refusal is a CONNECT refused by the server (err.data, as Node's server sends it) or an
  // HTTP status on the handshake (429, 403); anything else is a transport that went away.
  const status = typeof err.description === "number" ? err.description : null;
  return { message: String(err.message), status, data: err.data ?? null };
}

async function until(what, check, ms) {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms: ${what}`);
    await sleep(20);
  }
}

const connectedCount = () => sockets.filter((s) => s.connected).length;

runFlow("crowd", flow.deadlineMs, sockets, result, async () => {
  const started = Date.now();
  for (const token of JSON.parse(readFileSync(flow.tokensFile, "utf8"))) {
    const socket = io(flow.url, { auth: { token }, forceNew: true });
    socket.on("connect_error", (err) => result.errors[phase].push(errorOf(err)));
    sockets.push(socket);
  }
  await until("every client connected", () => connectedCount() === sockets.length,
              flow.connectMs);
  result.connectMs = Date.now() - started;
  const victims = sockets.filter((s) => s.id.startsWith(flow.victimId + "."));
  result.victims = victims.length;
  phase = "after";
  const killed = Date.now();
  process.kill(flow.victimPid, "SIGKILL");
  // Back: every client connected again, none of them on the dead gateway.
  await until("every client back on the gateways left",
              () => sockets.every((s) => s.connected && !s.id.startsWith(flow.victimId + ".")),
              flow.backMs);
  result.backMs = Date.now() - killed;
  result.ids = sockets.map((s) => s.id);
});
