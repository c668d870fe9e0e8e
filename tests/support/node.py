"""The official Node ``socket.io-client`` of tests/node/ (pinned in its package.json): finding
``node`` and the installed client, and running one of its scripts with a bound.

Without ``tests/node/node_modules`` (``npm ci --prefix tests/node``) a test using it skips,
unless ``CI`` is set: then a missing Node client is a failure, not a silent skip.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
NODE_DIR = ROOT / "tests" / "node"
CLIENT_PACKAGE = NODE_DIR / "node_modules" / "socket.io-client" / "package.json"


def find_node(what: str) -> str:
    """The ``node`` executable; skips (fails under CI, naming ``what``) without the client."""
    node = shutil.which("node")
    missing = None
    if node is None:
        missing = "node is not installed"
    elif not CLIENT_PACKAGE.exists():
        missing = f"{CLIENT_PACKAGE.parent} is missing: run `npm ci --prefix tests/node`"
    if missing is not None:
        if os.environ.get("CI"):
            pytest.fail(f"{what} cannot run under CI: {missing}")
        pytest.skip(missing)
    assert node is not None
    return node


def run_script(node: str, script: Path, *args: str, timeout: float, what: str,
               env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``node SCRIPT ARGS`` in tests/node/; an AssertionError naming ``what`` if it hangs
    past ``timeout``."""
    try:
        return subprocess.run(
            [node, str(script), *args],
            cwd=NODE_DIR,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"{what} hung past {timeout}s: {exc}") from exc


#: The chat flows' driver (``tests/node/chat.mjs``).
CHAT_SCRIPT = NODE_DIR / "chat.mjs"
#: The script ends itself within ~15 s; this only guards against a wedged Node process.
CHAT_RUN_TIMEOUT = 30.0


def run_flow(node: str, flow: dict[str, Any], script: Path = CHAT_SCRIPT,
             variable: str = "CHAT_FLOW", timeout: float = CHAT_RUN_TIMEOUT) -> Any:
    """Run one flow script (its flow JSON in ``variable``) with the Node client; the
    ``result`` of the one JSON line it prints, which must say ``ok``."""
    done = run_script(node, script, timeout=timeout, what=f"node {script.name}",
                      env={**os.environ, variable: json.dumps(flow)})
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, f"rc {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    out = json.loads(lines[0])
    assert out["ok"] is True and done.returncode == 0, (out, done.stderr)
    return out["result"]
