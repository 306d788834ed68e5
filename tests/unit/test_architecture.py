"""The invariants of docs/architecture.md, read off the source with ast: what the resident
daemon may import, what core/ may import, no import circles, and how big a module or a
function may grow. Nothing is imported or run."""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "agent"
PACKAGE = ROOT / "join_agent"
# What the resident process must never hold: the worker child's libraries.
WORKER_ONLY = ("cryptography", "httpx", "httpcore", "yaml", "tenacity")


@dataclass(frozen=True)
class Import:
    target: str  # a dotted module name as imported
    lazy: bool  # inside a function: only when that function runs
    line: int


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(name: str) -> Iterator[Import]:
    """Every import statement of a module (not those under ``if TYPE_CHECKING:``)."""
    tree = ast.parse(MODULES[name].read_text())
    in_functions: set[int] = set()
    for_typing: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            in_functions.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for_typing.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    for node in ast.walk(tree):
        if id(node) in for_typing or not isinstance(node, ast.Import | ast.ImportFrom):
            continue
        lazy = node.lineno in in_functions
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(alias.name, lazy, node.lineno)
        elif node.module and node.level == 0:
            yield Import(node.module, lazy, node.lineno)
            for alias in node.names:  # `from join_agent.storage import files`: a module
                if f"{node.module}.{alias.name}" in MODULES:
                    yield Import(f"{node.module}.{alias.name}", lazy, node.lineno)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def ours(target: str) -> list[str]:
    """The join_agent modules an import runs: the module and every package above it."""
    if not target.startswith("join_agent"):
        return []
    parts = target.split(".")
    return [m for i in range(1, len(parts) + 1) if (m := ".".join(parts[:i])) in MODULES]


def closure(start: list[str], *, lazy: bool) -> dict[str, list[str]]:
    """Every join_agent module reachable from ``start``, with the path that reaches it."""
    seen: dict[str, list[str]] = {s: [s] for s in start}
    todo = list(start)
    while todo:
        here = todo.pop()
        for imp in imports(here):
            if imp.lazy and not lazy:
                continue
            for m in ours(imp.target):
                if m not in seen:
                    seen[m] = [*seen[here], m]
                    todo.append(m)
    return seen


# Read by worker children and verbs only (the kubelet's settings may be YAML).
WORKER_SIDE = (
    "join_agent.worker",
    "join_agent.pki",
    "join_agent.net",
    "join_agent.signers",
    "join_agent.kubelet.settings",
)


def resident() -> list[str]:
    """The daemon package and the kubelet's (its settings reader aside): `join-agent run`."""
    roots = ("join_agent.daemon", "join_agent.kubelet")
    return sorted(m for m in MODULES if m.startswith(roots) and not m.startswith(WORKER_SIDE))


def test_the_resident_daemon_never_imports_the_workers_libraries() -> None:
    """Every module the daemon and kubelet packages can reach, lazily or not (the whole
    daemon, not one module), imports none of the worker child's libraries: those are
    loaded in the short-lived worker process only."""
    reach = closure(resident(), lazy=True)
    assert "join_agent.daemon" in reach and "join_agent.host.notify" in reach
    found = [
        f"{' -> '.join(path)} imports {imp.target} (line {imp.line})"
        for m, path in reach.items()
        for imp in imports(m)
        if imp.target.split(".")[0] in WORKER_ONLY
    ]
    assert found == []


def test_the_resident_daemon_does_not_reach_the_worker_side_packages() -> None:
    reach = closure(resident(), lazy=True)
    assert sorted(m for m in reach if m.startswith(WORKER_SIDE)) == []


def test_core_is_pure() -> None:
    """core/ imports the standard library and core/ only, and none of the modules that
    reach the clock, files, processes or the network on their own."""
    impure = {"os", "subprocess", "socket", "time", "pathlib", "shutil", "io", "select"}
    for name in (m for m in MODULES if m.startswith("join_agent.core")):
        for imp in imports(name):
            top = imp.target.split(".")[0]
            if imp.target in ("join_agent", "join_agent.TYPE_CHECKING"):
                continue  # the package's TYPE_CHECKING constant, a plain False
            if top == "join_agent":
                assert imp.target.startswith("join_agent.core"), (name, imp)
                continue
            assert top in sys.stdlib_module_names, (name, imp)
            assert top not in impure, (name, imp)


def test_no_import_circles() -> None:
    """No module reaches itself through module-level imports (what runs at import time)."""
    circles = []
    for name in MODULES:
        for imp in imports(name):
            if imp.lazy:
                continue
            for m in ours(imp.target):
                if m == name or name.startswith(m + "."):
                    continue  # a package's own __init__ above it
                back = closure([m], lazy=False)
                if name in back:
                    circles.append(" -> ".join([name, *back[name]]))
    assert circles == []


# --- size -------------------------------------------------------------------------------
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 400, 60
# Exceptions, each at its current size (it may only shrink): none today. A data table
# that cannot be split would be listed here with the reason.
MODULES_OVER: dict[str, int] = {}
FUNCTIONS_OVER: dict[str, int] = {}


def function_sizes(name: str) -> Iterator[tuple[str, int]]:
    tree = ast.parse(MODULES[name].read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node.name, (node.end_lineno or node.lineno) - node.lineno + 1


@pytest.mark.parametrize("name", sorted(MODULES))
def test_modules_and_functions_stay_small(name: str) -> None:
    lines = len(MODULES[name].read_text().splitlines())
    assert lines <= MODULES_OVER.get(name, MAX_MODULE_LINES), f"{name}: {lines} lines"
    for function, size in function_sizes(name):
        limit = FUNCTIONS_OVER.get(f"{name}:{function}", MAX_FUNCTION_LINES)
        assert size <= limit, f"{name}:{function} is {size} lines"


# Which way imports go: the lower layers know nothing of the upper ones.
LOWER = ("join_agent.core", "join_agent.config", "join_agent.storage", "join_agent.host")
UPPER = ("join_agent.daemon", "join_agent.worker", "join_agent.verbs", "join_agent.signers",
         "join_agent.kubelet", "join_agent.net")  # fmt: skip
# The pair store parses PEM (storage's one worker-side module; the daemon never reaches it).
LOWER_MAY = {("join_agent.storage.store", "join_agent.pki")}
WORKER_SIDE_TOP = ("join_agent.worker", "join_agent.signers", "join_agent.pki", "join_agent.net")


def test_imports_go_one_way() -> None:
    wrong = []
    for name in MODULES:
        for imp in imports(name):
            for m in ours(imp.target):
                below = name.startswith(LOWER) and m.startswith((*UPPER, "join_agent.pki"))
                if below and not any(name == a and m.startswith(b) for a, b in LOWER_MAY):
                    wrong.append(f"{name} -> {m}")
                if name.startswith(WORKER_SIDE_TOP) and m.startswith(
                    ("join_agent.daemon", "join_agent.verbs")
                ):
                    wrong.append(f"{name} -> {m}")
                if name.startswith("join_agent.daemon") and m.startswith("join_agent.verbs"):
                    wrong.append(f"{name} -> {m}")
    assert wrong == []
