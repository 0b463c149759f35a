"""Shared helpers of the reliability tests (docs/reliability.md): the reference model, running
MicroPython scripts, and recording figures for bench/reliability.py."""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path

from edgetune.device import emulate

REPO = Path(__file__).resolve().parents[2]
FIGURES = REPO / "build" / "bench" / "reliability.d"


def demo_module():
    """scripts/demo.py as a module (ensure_model, write_sessions, heap_budget, ...)."""
    spec = importlib.util.spec_from_file_location("edgetune_demo", REPO / "scripts" / "demo.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def reference_etm() -> Path:
    """The reference model: host/edgetune/learn/zoo.py's small variant, pre-trained, quantized and
    exported exactly as `make demo` does (cached in build/demo/model)."""
    return demo_module().ensure_model(REPO / "build" / "demo")


def heap_budgets() -> dict[str, int]:
    """{board[/variant]: heap bytes} from boards/*/board.json (variants included)."""
    out: dict[str, int] = {}
    for p in sorted((REPO / "boards").glob("*/board.json")):
        cfg = json.loads(p.read_text())
        out[cfg["board"]] = int(cfg["heap_bytes"])
        for name, v in (cfg.get("variants") or {}).items():
            if name != "default" and "heap_bytes" in v:
                out[f"{cfg['board']}/{name}"] = int(v["heap_bytes"])
    return out


def run_script(code: str, cwd: Path, heap: int | str | None = None, timeout: float = 300,
               extra_path: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """Run code on the real unix port (build/unix/micropython) in cwd; returns the process."""
    script = cwd / "script.py"
    script.write_text(code)
    return emulate._run_binary(emulate.find_micropython(), script, None if heap is None else str(heap), timeout,
                               cwd, list(extra_path))


def record(name: str, figures: dict) -> None:
    """Store figures for bench/reliability.py (build/bench/reliability.d/NAME.json)."""
    FIGURES.mkdir(parents=True, exist_ok=True)
    tmp = FIGURES / f".{name}.json.tmp"
    tmp.write_text(json.dumps(figures, indent=1, sort_keys=True))
    tmp.replace(FIGURES / f"{name}.json")
