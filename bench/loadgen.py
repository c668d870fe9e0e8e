"""The harness side of ``bench/loadgen/loadgen.mjs``: one Node process, JSON lines both ways."""

from __future__ import annotations

import contextlib
import json
import queue
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import procs

SCRIPT = Path(__file__).resolve().parent / "loadgen" / "loadgen.mjs"


class LoadGenError(RuntimeError):
    pass


class LoadGen:
    def __init__(self, log: Path) -> None:
        self.log_path = log
        self._log = open(log, "ab")  # noqa: SIM115 - closed in close()
        self.process = subprocess.Popen(
            ["node", "--max-old-space-size=4096", str(SCRIPT)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
            start_new_session=True, preexec_fn=procs.confine("loadgen"))
        self.lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            try:
                self.lines.put(json.loads(raw))
            except ValueError:
                self._log.write(b"stdout: " + raw)
        self.lines.put(None)

    def call(self, cmd: dict[str, Any], timeout: float,
             on_event: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Send one command; return its reply. Events before the reply go to ``on_event``."""
        self.send(cmd)
        return self.reply(cmd, timeout, on_event)

    def send(self, cmd: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write((json.dumps(cmd) + "\n").encode())
        self.process.stdin.flush()

    def reply(self, cmd: dict[str, Any], timeout: float,
              on_event: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """The reply to ``cmd`` (already sent); events before it go to ``on_event``."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LoadGenError(f"load generator: no reply to {cmd['cmd']} in {timeout:.0f}s")
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise LoadGenError(f"load generator exited (code {self.process.poll()}); "
                                   f"see {self.log_path}")
            if "event" in line:
                if on_event is not None:
                    on_event(line)
                continue
            if line.get("reply") == cmd["cmd"]:
                if "error" in line:
                    raise LoadGenError(f"load generator {cmd['cmd']}: {line['error']}")
                return line

    def close(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(LoadGenError, OSError):
                self.call({"cmd": "exit"}, timeout=10)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._log.close()
