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

// Runs `main()` and prints one JSON line: {"ok": true, "result"} (exit 0), {"ok": false,
// "error", "partial"} when it throws (exit 1), or when it has not finished within
// `deadlineMs` (exit 2). `result` is the object main fills; `sockets` are closed at the end.
export function runFlow(name, deadlineMs, sockets, result, main) {
  const finish = (code, body) => printAndExit(JSON.stringify(body), sockets, code);
  const deadline = setTimeout(
    () => finish(2, { ok: false, error: `${name} did not finish in ${deadlineMs} ms`,
                      partial: result }),
    deadlineMs,
  );
  main().then(
    () => {
      clearTimeout(deadline);
      finish(0, { ok: true, result });
    },
    (err) => {
      clearTimeout(deadline);
      finish(1, { ok: false, error: String(err?.message ?? err), partial: result });
    },
  );
}
