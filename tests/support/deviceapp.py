"""The device app (firmware/) on the real unix port with the `make demo` reference model: the
model and its sessions, and running app code under a board's heap budget."""

from __future__ import annotations

from pathlib import Path

from edgetune.device import emulate
from edgetune.device.monitor import parse_text

from tests.support.relhelp import REPO, demo_module

FIRMWARE = REPO / "firmware"
demo = demo_module()
HEAP = demo.heap_budget("rp2040")  # 251936 bytes: the GC heap of our RPI_PICO build


def demo_assets() -> dict:
    """The reference model and the demo's adaptation and shifted eval sessions (cached in
    build/demo): {"etm", "adapt", "eval"} paths."""
    out = REPO / "build" / "demo"
    etm = demo.ensure_model(out)
    adapt, evalp = demo.write_sessions(etm.parent, out)
    return {"etm": etm, "adapt": adapt, "eval": evalp}


def run_device(code: str, cwd: Path, heap: int = HEAP, timeout: float = 300) -> tuple[str, list[dict]]:
    """Run app code on the unix port with -X heapsize=heap; returns (stdout, @et rows)."""
    script = cwd / "device.py"
    script.write_text(code)
    proc = emulate._run_binary(emulate.find_micropython(), script, str(heap), timeout, cwd, [str(FIRMWARE)])
    assert proc.returncode == 0, f"MicroPython failed\n{proc.stdout[-3000:]}\n{proc.stderr}"
    return proc.stdout, parse_text(proc.stdout)
