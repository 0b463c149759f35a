"""The device code's imports (firmware/*.py): nothing private shared between modules, and no
import cycle among them (the pure-Python fallback's edgetune_py*.py, the device app, fleet).

A module that imports another one back works only by the accident of import order, and a
leading-underscore name is a module's own business. Read from the source (every import
statement, also those inside functions: the fallback loads its batch, frame and refit parts
lazily, and app.py imports app_train.py on first train(), handing itself over), not by running it.
"""

from __future__ import annotations

import ast
from pathlib import Path

FIRMWARE = Path(__file__).resolve().parents[2] / "firmware"


def _imports() -> dict[str, list[tuple[str, list[str], int]]]:
    """{module: [(imported firmware module, names taken from it, line)]}."""
    mods = {p.stem: p for p in FIRMWARE.glob("*.py")}
    out: dict[str, list[tuple[str, list[str], int]]] = {}
    for name, path in sorted(mods.items()):
        edges = []
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                edges += [(a.name, [], node.lineno) for a in node.names if a.name in mods]
            elif isinstance(node, ast.ImportFrom) and node.module in mods and not node.level:
                edges.append((node.module, [a.name for a in node.names], node.lineno))
        out[name] = edges
    return out


def test_firmware_has_no_import_cycle():
    graph = {m: sorted({t for t, _, _ in e}) for m, e in _imports().items()}
    assert {"edgetune_py", "edgetune_py_batch", "edgetune_py_refit", "app", "app_train"} <= set(graph)
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for t in graph[m]:
            assert state.get(t) != 1, f"import cycle in firmware/: {' -> '.join(path[path.index(t):] + [t])}"
            if t not in state:
                visit(t, path + [t])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [m])


def test_firmware_modules_share_no_private_name():
    private = [f"firmware/{m}.py:{line} takes {n} from {t}" for m, edges in _imports().items()
               for t, names, line in edges for n in names if n.startswith("_")]
    assert not private, "\n".join(private)
