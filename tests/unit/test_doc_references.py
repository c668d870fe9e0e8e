"""The docs name only what exists: every repository path, module, ``Class.member`` and
``module.name`` written in backticks in ``docs/*.md`` and ``README.md`` is looked up in the
code, so a rename that forgets a doc fails here.

How a backticked token is read:

- a path (``gateway/server.py``, ``services/room/``, ``bench/run``) whose first part is a
  top-level folder of the repository must exist (``<…>`` and ``*`` parts are placeholders:
  not checked);
- a file name alone (``pipelines.py``) must be the name of some Python file of the
  repository; so must every ``name.py`` in a code block (the file trees);
- a dotted name whose first part is one of our classes (``Backbone._on_reply``,
  ``RequestKind.KEYS``) must be a member of that class (inherited members count);
- a dotted name whose first part is one of our modules, optionally under its package
  (``policing.EventPolicy.judge``, ``shared.envelope.Request``), must resolve attribute by
  attribute from that module — or, for ``module.name`` with one more part, name a member of
  some class of that module (``client.flush()``: an instance's method);
- anything else (other libraries, JavaScript, payload fields) is not ours to check; the names
  that look like ours but are not are listed in ``FOREIGN`` with what they are.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from functools import cache
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]
#: Where the product's code lives, as the package ``switchboard`` sees it.
PACKAGES = {"gateway": "switchboard.gateway", "services": "switchboard.services",
            "shared": "switchboard.shared", "broker": "switchboard.broker",
            "switchboard": "switchboard"}
#: Folders a run creates (ignored by git): a doc may name what a command writes there.
GENERATED = {"test-output", "var", ".venv"}
TOP = {p.name for p in ROOT.iterdir() if not p.name.startswith(".git")}
#: Dotted names in the docs that share a first part with one of our modules but are not ours.
FOREIGN = {
    "transport.write", "transport.set_protocol",  # asyncio's transport
    "engine.close()", "socket.io.engine.close()",  # the JavaScript client's engine
    "socket.id", "socket.recovered",  # the client's socket
    "handshake.query",  # Node's socket.handshake
    "auth.token",  # the CONNECT payload's field
    "reply.args", "reply.emits", "reply.joins", "reply.session",  # a Reply's fields (shown
    "session.sid",  # as the handler sees them; checked below as Reply/Session members)
    "events.md",
}
TOKEN = re.compile(r"`([^`\s]+)`")
PY_FILE = re.compile(r"(?<![\w/.-])(?:[\w-]+/)*\w+\.py\b")
DOTTED = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+(?:\(\))?")


def product_files() -> list[Path]:
    files: list[Path] = []
    for top in ("gateway", "services", "shared", "broker", "switchboard"):
        files += [p for p in (ROOT / top).rglob("*.py") if "node_modules" not in p.parts]
    return files


@cache
def sources() -> dict[str, Path]:
    """Each product module's dotted name → its file."""
    found: dict[str, Path] = {}
    for path in product_files():
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[PACKAGES[parts[0]] + "".join("." + p for p in parts[1:])] = path
    return found


@cache
def modules() -> dict[str, list[str]]:
    """Each module's short name → its dotted names (``client`` → ``switchboard.gateway.
    client``), also by its dotted path below its top package (``room.messages``,
    ``shared.envelope``)."""
    names: dict[str, list[str]] = {}
    for dotted in sources():
        parts = dotted.split(".")
        if parts[0] == "switchboard" and len(parts) > 1 and parts[1] in PACKAGES:
            parts = parts[1:]
        for i in range(len(parts)):
            names.setdefault(".".join(parts[i:]), []).append(dotted)
    return names


@cache
def classes() -> dict[str, list[str]]:
    """Each class name of the product → the modules that define one of that name."""
    found: dict[str, list[str]] = {}
    for module, source in sources().items():
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.ClassDef):
                found.setdefault(node.name, []).append(module)
    return {name: sorted(set(mods)) for name, mods in found.items()}


def member(owner: object, name: str) -> bool:
    if hasattr(owner, name):
        return True
    # Instance attributes and dataclass fields set in __init__ or declared by annotation.
    if inspect.isclass(owner):
        for klass in owner.__mro__:
            if name in getattr(klass, "__annotations__", {}):
                return True
            if name in getattr(klass, "__dataclass_fields__", {}):
                return True
            try:
                source = inspect.getsource(klass)
            except (OSError, TypeError):
                continue
            if re.search(rf"self\.{re.escape(name)}\s*[:=]", source):
                return True
    return False


def resolves(obj: object, parts: list[str]) -> bool:
    for part in parts:
        if not member(obj, part):
            return False
        obj = getattr(obj, part, None)
        if obj is None:  # an instance attribute: nothing further to walk
            return part == parts[-1]
    return True


def load(name: str) -> ModuleType:
    return importlib.import_module(name)


def check_dotted(token: str) -> str | None:
    """Why ``token`` names nothing of ours (None: it does, or it is not ours)."""
    name = token.removesuffix("()")
    if token in FOREIGN or name in FOREIGN:
        return None
    parts = name.split(".")
    if parts[0] in classes():
        rest = parts[1:]
        for module in classes()[parts[0]]:
            if resolves(getattr(load(module), parts[0]), rest):
                return None
        return f"{token}: {parts[0]} has no {'.'.join(rest)}"
    mods = modules()
    for cut in range(len(parts), 0, -1):
        short = ".".join(parts[:cut])
        if short in mods:
            rest = parts[cut:]
            for module in mods[short]:
                loaded = load(module)
                if resolves(loaded, rest):
                    return None
                if len(rest) == 1 and any(
                        member(obj, rest[0]) for obj in vars(loaded).values()
                        if inspect.isclass(obj) and obj.__module__ == loaded.__name__):
                    return None
            return f"{token}: module {short} has no {'.'.join(rest)}"
    return None  # not ours


def check_path(token: str) -> str | None:
    if "<" in token or "*" in token or "…" in token:
        return None
    path = token.rstrip("/").split(":")[0]
    first = path.split("/")[0]
    if first in GENERATED:
        return None
    if "/" in path and first in TOP:
        return None if (ROOT / path).exists() else f"{token}: no such path"
    if "/" not in path and path.endswith(".py"):
        return None if path in python_files() else f"{token}: no file of that name"
    return None


@cache
def python_files() -> frozenset[str]:
    """The names of the repository's Python files (product, tests, bench, scripts)."""
    return frozenset(p.name for p in ROOT.rglob("*.py") if not any(
        part in GENERATED or part.startswith(".") or part == "node_modules"
        for part in p.relative_to(ROOT).parts))


def references() -> list[tuple[str, str]]:
    found = []
    for doc in DOCS:
        in_code_block = False
        for line in doc.read_text().splitlines():
            if line.startswith("```"):
                in_code_block = not in_code_block
                continue
            if in_code_block:  # a file tree or a command: its Python file names
                found += [(doc.name, name) for name in PY_FILE.findall(line)]
                continue
            for match in TOKEN.finditer(line):
                found.append((doc.name, match.group(1)))
    return found


def problems() -> list[str]:
    out = []
    for doc, token in references():
        token = token.rstrip(".,;:")
        why = check_path(token) if ("/" in token or token.endswith(".py")) else (
            check_dotted(token) if DOTTED.fullmatch(token) else None)
        if why is not None:
            out.append(f"{doc}: {why}")
    return sorted(set(out))


def test_every_name_in_the_docs_exists() -> None:
    assert problems() == []


@pytest.mark.parametrize("token", [
    "gateway/nosuch.py", "nosuch_module_file.py", "Backbone.no_such_method",
    "policing.EventPolicy.no_such", "RequestKind.NOSUCH", "shared.envelope.NoSuch",
])
def test_a_name_that_does_not_exist_is_caught(token: str) -> None:
    why = check_path(token) if ("/" in token or token.endswith(".py")) else check_dotted(token)
    assert why is not None, token


@pytest.mark.parametrize("token", [
    "gateway/server.py", "pipelines.py", "Backbone._on_reply", "RequestKind.KEYS",
    "policing.EventPolicy.judge", "shared.envelope.Request", "client.Client.write",
    "Request.recovery", "zmq.Socket.send",
])
def test_names_that_exist_pass(token: str) -> None:
    why = check_path(token) if ("/" in token or token.endswith(".py")) else check_dotted(token)
    assert why is None, why
