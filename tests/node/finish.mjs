// Shared by the scripts here: how a script ends, and bounded waits.

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

// Resolves with the promise's value, or rejects after `ms` naming what was awaited.
export function within(promise, what, ms) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}
