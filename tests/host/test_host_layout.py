"""The host package's shape (docs/architecture.md §3): no import cycle between its modules and
no module over ~600 lines.

Imports are read from the source (ast), at module level and inside functions alike: a cycle
hidden in a function is still two modules that each need the other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

HOST = Path(__file__).resolve().parents[2] / "host"
MAX_LINES = 600


def modules(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py under root/edgetune (a package is its __init__)."""
    out = {}
    for p in sorted((root / "edgetune").rglob("*.py")):
        parts = list(p.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The modules of `known` that module `name` imports anywhere in its source."""
    is_pkg = path.name == "__init__.py"
    pkg = name if is_pkg else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")
                base = base[: len(base) - (node.level - 1)]
                src = ".".join(base + ([node.module] if node.module else []))
            else:
                src = node.module or ""
            targets = [f"{src}.{a.name}" if f"{src}.{a.name}" in known else src for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:  # edgetune.x.y.attr -> the module that holds it
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state:
                c = visit(m)
                if c:
                    return c
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state:
            c = visit(n)
            if c:
                return c
    return None


def host_graph() -> dict[str, set[str]]:
    mods = modules(HOST)
    return {n: imports(n, p, set(mods)) for n, p in mods.items()}


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_graph_sees_relative_absolute_and_function_level_imports(tmp_path):
    pkg = tmp_path / "edgetune"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from edgetune.a import g\n")
    mods = modules(tmp_path)
    g = {n: imports(n, p, set(mods)) for n, p in mods.items()}
    assert g["edgetune.a"] == {"edgetune.sub.b"} and g["edgetune.sub.b"] == {"edgetune.a"}
    assert find_cycle(g) == ["edgetune.a", "edgetune.sub.b", "edgetune.a"]


def test_no_import_cycle_in_host():
    g = host_graph()
    assert len(g) > 40  # the walk found the package
    cycle = find_cycle(g)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize("path", sorted(HOST.rglob("*.py")), ids=lambda p: str(p.relative_to(HOST)))
def test_no_host_module_over_600_lines(path):
    n = len(path.read_text(encoding="utf-8").splitlines())
    assert n <= MAX_LINES, f"{path.relative_to(HOST)}: {n} lines; split it by what it holds (docs/architecture.md)"


def test_every_verb_names_a_callable_and_freeze_is_one():
    import importlib

    from edgetune.cli import VERBS

    assert "freeze" in VERBS
    for verb, (target, _) in VERBS.items():
        name, _, func = target.partition(":")
        assert callable(getattr(importlib.import_module(name), func or "cli")), verb
