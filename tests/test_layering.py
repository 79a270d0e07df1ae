"""The architecture, enforced: who may import whom.

Every module under rshell/ is parsed with ``ast`` and all its imports are
collected, including those inside functions and ``TYPE_CHECKING`` blocks (a
lazy import is still a dependency).  A lower layer never imports a higher one,
the sans-IO protocol never touches I/O modules, and each third-party
dependency stays behind its one door.  A new module must be placed in LAYERS.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

#: rshell package or module -> layer, matched on the longest dotted prefix.
#: A module may import only rshell modules of a lower or equal layer.  A new
#: package must be placed here.
LAYERS: dict[str, int] = {
    # 0: foundations, no rshell dependencies beyond each other
    "rshell.errors": 0, "rshell.result": 0, "rshell.paths": 0, "rshell.shellwords": 0,
    # 1: pure building blocks: the sans-IO codec, trust, the execution engine
    "rshell.protocol": 1, "rshell.trust": 1, "rshell.exec": 1,
    # 2: streams, errors mapped at the edge
    "rshell.transport": 2,
    # 3: the daemon, the client contract, the SSH door
    "rshell.server": 3, "rshell.client": 3, "rshell.ssh": 3, "rshell.terminal": 3,
    "rshell.transfer": 3, "rshell.fleet": 3,
    # 4: the command lines
    "rshell.cli": 4,
}

#: (importer prefix, imported prefix) pairs that never hold, whatever the layers
#: say: the client side never reaches into the server side.  The one exception
#: is the ``rshell-server`` command line (EXEMPT).
FORBIDDEN: list[tuple[str, str]] = [
    ("rshell.client", "rshell.server"), ("rshell.client", "rshell.exec"),
    ("rshell.cli", "rshell.server"), ("rshell.cli", "rshell.exec"),
    ("rshell.ssh.client", "rshell.server"), ("rshell.ssh.client", "rshell.exec"),
    ("rshell.ssh.identity", "rshell.server"), ("rshell.ssh.identity", "rshell.exec"),
    ("rshell.server", "rshell.client"), ("rshell.server", "rshell.cli"),
    ("rshell.ssh.server", "rshell.client"), ("rshell.exec", "rshell.protocol"),
    ("rshell.exec", "rshell.transport"),
    ("rshell.terminal", "rshell.server"), ("rshell.terminal", "rshell.exec"),
    # transfer/ is shared by both sides (an upload's server, a download's client)
    ("rshell.transfer", "rshell.server"), ("rshell.transfer", "rshell.exec"),
    ("rshell.transfer", "rshell.client"), ("rshell.transfer", "rshell.cli"),
    ("rshell.fleet", "rshell.server"), ("rshell.fleet", "rshell.exec"),
    # a fleet is hosts through the one client contract; the client knows no fleet
    ("rshell.fleet", "rshell.cli"), ("rshell.client", "rshell.fleet"),
    ("rshell.fleet", "rshell.ssh"), ("rshell.fleet", "rshell.transport"),
]
EXEMPT = {"rshell.cli.server"}

#: Modules the sans-IO protocol package must never import.
PROTOCOL_FORBIDDEN = {
    "socket", "ssl", "threading", "subprocess", "selectors", "paramiko", "click",
}

#: Third-party package -> the only rshell modules allowed to import it.
DEPENDENCY_DOORS: dict[str, set[str]] = {
    "click": {"rshell.cli.commands", "rshell.cli.server"},
    "paramiko": {"rshell.ssh._paramiko", "rshell.ssh.server", "rshell.ssh.channel",
                 "rshell.ssh.client", "rshell.ssh.identity", "rshell.ssh.sftp",
                 "rshell.ssh.files"},
    "cryptography": {"rshell.trust.keys", "rshell.trust.tls"},
}

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "rshell"


@dataclass(frozen=True)
class Import:
    """One imported module name, resolved to absolute, with where it was found."""

    target: str
    line: int


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE_DIR.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def discover() -> dict[str, Path]:
    """Every rshell module name -> its source file."""
    return {module_name(p): p for p in sorted(PACKAGE_DIR.rglob("*.py"))}


MODULES = discover()


def collect_imports(source: str, module: str, is_package: bool, known: set[str]) -> list[Import]:
    """All imports in source, at any depth, relative ones resolved against module.

    ``from pkg import name`` counts as importing ``pkg.name`` when that is a
    known module (so ``from rshell import errors`` is an import of errors).
    """
    package = module if is_package else module.rpartition(".")[0]
    found: list[Import] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [Import(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.append(Import(sub if sub in known else base, node.lineno))
    return found


def imports_of(module: str) -> list[Import]:
    path = MODULES[module]
    return collect_imports(
        path.read_text(encoding="utf-8"), module, path.name == "__init__.py", set(MODULES)
    )


def within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def layer_key(module: str) -> str | None:
    """'rshell.protocol.frames' -> 'rshell.protocol'; None for the package root
    or a module no entry covers."""
    found = [p for p in LAYERS if within(module, p)]
    return max(found, key=len) if found else None


def top(name: str) -> str:
    return name.split(".")[0]


# ---- the collector itself -----------------------------------------------------------


def test_collector_finds_nested_and_relative_imports() -> None:
    """The rules below are only as good as the import walk; prove it sees hidden imports."""
    source = (
        "import os.path\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from rshell.client.api import Connection\n"
        "def f():\n    import socket\n    class C:\n        def g(self):\n"
        "            from . import messages\n            from ..errors import X\n"
        "            from rshell import paths\n"
    )
    known = {"rshell.protocol.messages", "rshell.errors", "rshell.paths"}
    got = {i.target for i in collect_imports(source, "rshell.protocol.frames", False, known)}
    assert got == {
        "os.path", "typing", "rshell.client.api", "socket",
        "rshell.protocol.messages", "rshell.errors", "rshell.paths",
    }
    pkg = collect_imports("from .frames import X\n", "rshell.protocol", True, set())
    assert [i.target for i in pkg] == ["rshell.protocol.frames"]


def test_discovery_sees_the_package() -> None:
    assert {"rshell", "rshell.errors", "rshell.protocol", "rshell.protocol.frames"} <= set(MODULES)


# ---- the rules ---------------------------------------------------------------------


def test_every_module_is_classified() -> None:
    missing = sorted(m for m in MODULES if m != "rshell" and layer_key(m) is None)
    assert not missing, (
        f"modules not in the layer map: {missing}; classify them in LAYERS in "
        f"{Path(__file__).name} (0 foundations ... 4 cli)"
    )


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("rshell.protocol")))
def test_protocol_is_sans_io(module: str) -> None:
    bad = [(i.target, i.line) for i in imports_of(module) if top(i.target) in PROTOCOL_FORBIDDEN]
    assert not bad, f"{module} is sans-IO but imports {bad}"


@pytest.mark.parametrize("dependency", sorted(DEPENDENCY_DOORS))
def test_each_dependency_has_one_door(dependency: str) -> None:
    allowed = DEPENDENCY_DOORS[dependency]
    bad = sorted(
        (m, i.line)
        for m in MODULES
        for i in imports_of(m)
        if top(i.target) == dependency and m not in allowed
    )
    assert not bad, f"only {sorted(allowed)} may import {dependency}; found in {bad}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m != "rshell"))
def test_layers_only_point_down(module: str) -> None:
    """A module imports rshell modules of its own layer or below, never the package root."""
    key = layer_key(module)
    if key is None:
        pytest.fail(f"{module} is not classified; add it to LAYERS in {Path(__file__).name}")
    own = LAYERS[key]
    bad: list[str] = []
    for imp in imports_of(module):
        if top(imp.target) != "rshell":
            continue
        target_key = layer_key(imp.target)
        if imp.target == "rshell":
            bad.append(f"line {imp.line}: imports the package root; import the defining module")
        elif target_key is None:
            bad.append(f"line {imp.line}: {imp.target} is not classified in LAYERS")
        elif LAYERS[target_key] > own:
            bad.append(
                f"line {imp.line}: {imp.target} (layer {LAYERS[target_key]}) is above "
                f"{module} (layer {own})"
            )
    assert not bad, f"{module}: " + "; ".join(bad)


def test_cold_import_stays_lazy() -> None:
    """``import rshell`` on the CLI's cold path must not pay for heavy or optional packages."""
    heavy = ["click", "cryptography", "ssl", "paramiko"]
    code = (
        "import json, sys, rshell\n"
        f"heavy = {heavy!r}\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & set(heavy))))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
        cwd=PACKAGE_DIR.parent,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [], f"import rshell loaded {proc.stdout.strip()}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m != "rshell"))
def test_forbidden_arrows(module: str) -> None:
    """The client side never imports the server side or the engine, and back."""
    if module in EXEMPT:
        return
    bad = sorted(
        f"line {imp.line}: {imp.target}"
        for imp in imports_of(module)
        for importer, imported in FORBIDDEN
        if within(module, importer) and within(imp.target, imported)
    )
    assert not bad, f"{module} must not import: {bad}"


def test_no_import_cycles() -> None:
    """No module reaches itself through imports, lazy ones included: a cycle
    means two modules are one, or one is in the wrong place."""
    graph = {
        m: {i.target for i in imports_of(m) if i.target in MODULES and i.target != m}
        for m in MODULES if m != "rshell"
    }
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, set())):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt in graph and nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)
