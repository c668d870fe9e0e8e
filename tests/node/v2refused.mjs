// A Socket.IO v2 client with no token: prints {"error": ...} with what its `error` event got
// (v2 reports a CONNECT_ERROR's plain string there). Bounded; driven by
// tests/integration/test_node_v2_client.py.
import { createRequire } from "node:module";

import { printAndExit } from "./finish.mjs";

const require = createRequire(import.meta.url);
const ioV2 = require("socket.io-client-v2");

const socket = ioV2(process.argv[2], { reconnection: false, transports: ["websocket"] });
const timer = setTimeout(() => printAndExit(JSON.stringify({ timeout: true }), [socket], 2),
                         8000);
socket.on("error", (error) => {
  clearTimeout(timer);
  printAndExit(JSON.stringify({ error }), [socket], 0);
});
socket.on("connect", () => {
  clearTimeout(timer);
  printAndExit(JSON.stringify({ connected: true }), [socket], 1);
});
