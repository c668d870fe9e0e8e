// Shared by chat.mjs and scenarios.mjs: how a script ends.

// Prints `line` (the script's one JSON line) to stdout, disconnects every socket in `sockets`
// and exits with `code`.
export function printAndExit(line, sockets, code) {
  process.stdout.write(line + "\n");
  for (const s of sockets) {
    try {
      s.disconnect();
    } catch {
      // closing is best effort
    }
  }
  process.exit(code);
}
