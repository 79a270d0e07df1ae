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

#: rshell module (first component under ``rshell.``) -> layer.  A module may
#: import only rshell modules of a lower or equal layer.  Extend this when
#: adding a module.
LAYERS: dict[str, int] = {
    # 0: foundations, no rshell dependencies beyond each other
    "errors": 0, "result": 0, "paths": 0,
    # 1: pure building blocks
    "protocol": 1, "execution": 1, "keys": 1, "tls": 1, "knownhosts": 1, "authkeys": 1,
    "audit": 1, "sweep": 1, "builtins": 1, "pumps": 1,
    # 2: streams and authentication
    "transport": 2, "auth": 2,
    # 3: one connection's worth of behaviour
    "service": 3, "commands": 3, "server": 3, "client": 3, "ssh": 3, "probe": 3,
    # 4: front ends over the client / server
    "output": 4, "repl": 4, "batch": 4, "daemon_main": 4,
    # 5: the command line
    "cli": 5, "oneshot": 5,
}

#: Modules the sans-IO protocol package must never import.
PROTOCOL_FORBIDDEN = {
    "socket", "ssl", "threading", "subprocess", "selectors", "paramiko", "click",
}

#: Third-party package -> the only rshell modules allowed to import it.
DEPENDENCY_DOORS: dict[str, set[str]] = {
    "click": {"rshell.cli"},
    "paramiko": {"rshell.ssh"},
    "cryptography": {"rshell.keys", "rshell.tls"},
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


def layer_key(module: str) -> str | None:
    """'rshell.protocol.frames' -> 'protocol'; None for the package root."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def top(name: str) -> str:
    return name.split(".")[0]


# ---- the collector itself -----------------------------------------------------------


def test_collector_finds_nested_and_relative_imports() -> None:
    """The rules below are only as good as the import walk; prove it sees hidden imports."""
    source = (
        "import os.path\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from rshell.client import Connection\n"
        "def f():\n    import socket\n    class C:\n        def g(self):\n"
        "            from . import messages\n            from ..errors import X\n"
        "            from rshell import paths\n"
    )
    known = {"rshell.protocol.messages", "rshell.errors", "rshell.paths"}
    got = {i.target for i in collect_imports(source, "rshell.protocol.frames", False, known)}
    assert got == {
        "os.path", "typing", "rshell.client", "socket",
        "rshell.protocol.messages", "rshell.errors", "rshell.paths",
    }
    pkg = collect_imports("from .frames import X\n", "rshell.protocol", True, set())
    assert [i.target for i in pkg] == ["rshell.protocol.frames"]


def test_discovery_sees_the_package() -> None:
    assert {"rshell", "rshell.errors", "rshell.protocol", "rshell.protocol.frames"} <= set(MODULES)


# ---- the rules ---------------------------------------------------------------------


def test_every_module_is_classified() -> None:
    missing = sorted(
        m for m in MODULES if (key := layer_key(m)) is not None and key not in LAYERS
    )
    assert not missing, (
        f"modules not in the layer map: {missing}; classify them in LAYERS in "
        f"{Path(__file__).name} (0 foundations ... 5 cli)"
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
    if key not in LAYERS:
        pytest.fail(f"{module} is not classified; add it to LAYERS in {Path(__file__).name}")
    own = LAYERS[key]
    bad: list[str] = []
    for imp in imports_of(module):
        if top(imp.target) != "rshell":
            continue
        target_key = layer_key(imp.target)
        if target_key is None:
            bad.append(f"line {imp.line}: imports the package root; import the defining module")
        elif target_key not in LAYERS:
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
