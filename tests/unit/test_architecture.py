"""The arrows between the packages: no import circles, everything points toward ``shared``,
the protocol core imports no I/O, and the gateway imports no service; and the layout: every
module has one import name, and no symlinks stand in for packages.

Read from the source (``ast``), so the ``TYPE_CHECKING`` imports count too: a circle hidden
behind one is still a circle between rooms.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PARTS = ("gateway", "broker", "services", "shared")
#: What the sans-I/O core may not import (directly or through a module of ours).
IO_MODULES = ("asyncio", "zmq", "websockets", "httptools", "socket", "selectors")


#: The installed package's folders (pyproject.toml's package-dir): package name → folder.
SETUP = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
PACKAGE_DIR: dict[str, str] = SETUP["package-dir"]


def _modules() -> dict[str, Path]:
    """Every product module's one import name → its file, as the package installs."""
    mods: dict[str, Path] = {}
    for package, folder in PACKAGE_DIR.items():
        if package == "switchboard":
            for path in (ROOT / folder).glob("*.py"):
                mods[package if path.stem == "__init__" else f"{package}.{path.stem}"] = path
            continue
        for path in (ROOT / folder).rglob("*.py"):
            if "node_modules" in path.parts:
                continue
            names = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if names[-1] == "__init__":
                names = names[:-1]
            mods[".".join([package, *names])] = path
    return mods


def _imports(name: str, path: Path) -> set[str]:
    """Every module ``name`` imports (absolute names; packages and the modules in them)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


MODULES = _modules()
IMPORTS = {name: _imports(name, path) for name, path in MODULES.items()}
#: Edges between our modules; a package re-exporting its own modules is not an edge.
GRAPH = {
    name: {dep for dep in deps if dep in MODULES and dep != name
           and not dep.startswith(name + ".")}
    for name, deps in IMPORTS.items()
}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            for dep in edges:
                if dep not in index:
                    index[dep] = low[dep] = len(index)
                    stack.append(dep)
                    on_stack.add(dep)
                    work.append((dep, iter(sorted(graph[dep]))))
                    break
                if dep in on_stack:
                    low[node] = min(low[node], index[dep])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def test_the_graph_is_read() -> None:
    # Not vacuous: the modules and their edges are there to be checked.
    assert len(MODULES) > 60
    assert "switchboard.shared.envelope" in GRAPH["switchboard.gateway.server"] | set().union(
        *(GRAPH[dep] for dep in GRAPH["switchboard.gateway.server"])
    )


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles() -> None:
    assert _cycles(GRAPH) == []


@pytest.mark.parametrize("part", ["shared", "broker"])
def test_arrows_point_toward_shared(part: str) -> None:
    prefix = f"switchboard.{part}"
    allowed = ("switchboard.shared", prefix)
    outward = {
        name: sorted(dep for dep in deps if not dep.startswith(allowed))
        for name, deps in GRAPH.items()
        if name.startswith(prefix)
    }
    assert {name: deps for name, deps in outward.items() if deps} == {}


def test_the_gateway_imports_no_service() -> None:
    into_services = {
        name: sorted(dep for dep in deps if dep.startswith("switchboard.services"))
        for name, deps in GRAPH.items()
        if name.startswith("switchboard.gateway")
    }
    assert {name: deps for name, deps in into_services.items() if deps} == {}


def test_services_import_no_gateway_and_not_each_other() -> None:
    crossing = {}
    for name, deps in GRAPH.items():
        if not name.startswith("switchboard.services."):
            continue
        own = ".".join(name.split(".")[:3])
        bad = sorted(
            dep for dep in deps
            if dep.startswith("switchboard.gateway")
            or (dep.startswith("switchboard.services.") and not dep.startswith(own))
        )
        if bad:
            crossing[name] = bad
    assert crossing == {}


def test_the_protocol_core_imports_no_io() -> None:
    core = {name for name in MODULES if name.startswith("switchboard.gateway.protocol")}
    assert len(core) >= 6
    for name in sorted(core):
        ours = {dep for dep in GRAPH[name] if dep.startswith("switchboard.")}
        assert ours <= core, f"{name} imports {sorted(ours - core)}"
        io = sorted(dep for dep in IMPORTS[name] if dep.split(".")[0] in IO_MODULES)
        assert io == [], f"{name} imports {io}"


def test_no_symlinks_in_the_repository() -> None:
    listed = subprocess.run(["git", "ls-files", "-s"], cwd=ROOT, capture_output=True,
                            text=True, check=True, timeout=30).stdout.splitlines()
    assert len(listed) > 100
    assert [line.split("\t")[1] for line in listed if line.startswith("120000")] == []


def test_every_package_folder_is_installed() -> None:
    """A folder with an ``__init__.py`` that pyproject.toml does not list would be left out
    of the wheel (and work only from a checkout)."""
    folders = {name for name, path in MODULES.items() if path.name == "__init__.py"}
    assert "switchboard.gateway.protocol" in folders
    assert folders == set(SETUP["packages"]) - {"switchboard.web"}  # web: package data only


def test_no_module_has_two_import_names() -> None:
    """From the repository root, where the folders themselves are importable, every module
    loads under its ``switchboard.*`` name only: the folders refuse their own names."""
    importable = sorted(name for name in MODULES if not name.endswith("__main__"))  # runs
    script = f"""
import importlib, sys
sys.path.insert(0, {str(ROOT)!r})
for name in {importable!r}:
    importlib.import_module(name)
for top in {sorted(folder for package, folder in PACKAGE_DIR.items()
                   if package != "switchboard" and package in MODULES)!r}:
    try:
        importlib.import_module(top)
    except ImportError as error:
        assert "switchboard." in str(error), error
    else:
        print("importable as", top)
files = {{}}
for name, module in list(sys.modules.items()):
    path = getattr(module, "__file__", None)
    if path in {sorted(str(path) for path in MODULES.values())!r}:
        files.setdefault(path, []).append(name)
for path, names in files.items():
    if len(names) > 1:
        print("two names:", path, names)
print("loaded", len(files))
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[-1] == f"loaded {len(importable)}", lines
    assert lines[:-1] == []


def _fields(cls: str, module: str = "client.py") -> set[str]:
    """The fields of a class in ``gateway/<module>``: its ``__slots__`` or its annotations."""
    tree = ast.parse((ROOT / "gateway" / module).read_text())
    node = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls)
    found: set[str] = set()
    for item in node.body:
        if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
            found.add(item.target.id)
        elif isinstance(item, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "__slots__" for t in item.targets):
            found.update(ast.literal_eval(item.value))
    return found


def test_only_client_py_writes_a_client_or_a_socket() -> None:
    """``Client`` and ``NsSocket`` change through their own methods (a Client's ``Output``
    part, in output.py, through its own): no other product module assigns one of their
    fields or changes one of their collections in place (read from the source: any
    ``<name>.<field> = ...``, ``del <name>.<field>[...]`` or
    ``<name>.<field>.add/discard/append/pop(...)`` whose name is not ``self``)."""
    fields = _fields("Client") | _fields("NsSocket") | _fields("Output", "output.py")
    assert {"sockets", "rooms", "live", "pid", "polling", "responder"} <= fields
    mutators = {"add", "discard", "append", "pop", "remove", "clear", "update", "extend"}
    # Objects of other classes with a field of the same name, written by their own module.
    others = {("continuity.py", "track"), ("transport.py", "response")}

    def foreign(node: ast.expr) -> str | None:
        while isinstance(node, ast.Subscript):
            node = node.value
        if isinstance(node, ast.Attribute) and node.attr in fields and \
                isinstance(node.value, ast.Name) and node.value.id != "self":
            return f"{node.value.id}.{node.attr}"
        return None

    offenders = []
    for name, path in MODULES.items():
        if not name.startswith("switchboard.gateway") or path.name in ("client.py", "output.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            written: list[ast.expr] = []
            if isinstance(node, ast.Assign | ast.Delete):
                written = list(node.targets)
            elif isinstance(node, ast.AugAssign | ast.AnnAssign):
                written = [node.target]
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                    node.func.attr in mutators:
                written = [node.func.value]
            for target in written:
                for part in ast.walk(target) if isinstance(target, ast.Tuple) else [target]:
                    hit = foreign(part) if isinstance(part, ast.expr) else None
                    if hit and (path.name, hit.split(".")[0]) not in others:
                        line = getattr(node, "lineno", 0)
                        offenders.append(f"{path.relative_to(ROOT)}:{line} {hit}")
    assert offenders == []
