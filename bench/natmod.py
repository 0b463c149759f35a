"""Sizes of the native edgetune.mpy per architecture, and what importing it costs in the heap of
the stock qemu board (its machine code is loaded into the GC heap on bare metal), into
build/bench/natmod.json.

    make natmod && make firmware BOARD=qemu-stock && python -m bench.natmod [--no-qemu]

Per architecture: .mpy bytes, linked text and bss bytes (tools/mpy_ld.py's report), the libgcc
members linked; for armv6m and armv7m (both run on the qemu board's Cortex-M3): gc.mem_free()
before and after `import edgetune` (after gc.collect()), and the largest block the import needs.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
from edgetune.device import emulate  # noqa: E402

NATMOD = REPO / "build" / "natmod"
OUT = REPO / "build" / "bench" / "natmod.json"
ARCHS = ("x64", "armv6m", "armv7m", "armv7emsp", "xtensawin")
IMPORT_COST = ("import gc\ngc.collect()\na = gc.mem_free()\nimport edgetune\ngc.collect()\n"
               "print('ETHEAP', a, gc.mem_free(), edgetune.__file__)")


def sizes(arch: str) -> dict | None:
    d = NATMOD / arch
    if not (d / "edgetune.mpy").is_file():
        return None
    row = {"mpy_bytes": (d / "edgetune.mpy").stat().st_size}
    log = (d / "link.log").read_text() if (d / "link.log").is_file() else ""
    for key, pat in (("text_bytes", r"text size:\s+(\d+)"), ("bss_bytes", r"bss size:\s+(\d+)")):
        m = re.search(pat, log)
        if m:
            row[key] = int(m[1])
    row["libgcc_members"] = sorted(p.name for p in (d / "libgcc").glob("*.o"))
    return row


def heap_cost(arch: str) -> dict:
    firmware = REPO / "build" / "qemu-stock" / "firmware.elf"
    with emulate.QemuBoard(firmware) as board:
        def mp(*args: str) -> str:
            p = subprocess.run(emulate.mpremote_command(board.pty, *args), capture_output=True, text=True,
                               timeout=300)
            if p.returncode != 0:
                raise RuntimeError(p.stdout + p.stderr)
            return p.stdout

        mp("exec", "import os\ntry:\n    os.mkdir('/lib')\nexcept OSError:\n    pass", "+", "fs", "cp",
           str(NATMOD / arch / "edgetune.mpy"), ":/lib/edgetune.mpy")
        line = next(ln for ln in mp("exec", IMPORT_COST).splitlines() if ln.startswith("ETHEAP "))
    _, before, after, _path = line.split()
    return {"qemu_stock_heap_free_before": int(before), "qemu_stock_heap_free_after": int(after),
            "import_heap_bytes": int(before) - int(after)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--no-qemu", action="store_true", help="sizes only (no heap cost on the qemu board)")
    a = ap.parse_args(argv)
    rows = {}
    for arch in ARCHS:
        row = sizes(arch)
        if row is None:
            continue
        if arch in ("armv6m", "armv7m") and not a.no_qemu:
            row.update(heap_cost(arch))
        rows[arch] = row
    if not rows:
        print("bench natmod: nothing built; run: make natmod", file=sys.stderr)
        return 1
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"command": "make natmod; python -m bench.natmod", "archs": rows}, indent=1) + "\n")
    for arch, row in rows.items():
        extra = f", import takes {row['import_heap_bytes']} B of heap" if "import_heap_bytes" in row else ""
        print(f"{arch:10} {row['mpy_bytes']:6} B .mpy, text {row.get('text_bytes', '?')} B{extra}")
    print(f"bench natmod: {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
