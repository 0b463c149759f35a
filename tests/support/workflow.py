"""The documented board workflow as a user runs it (docs/device-app.md §5; tests/qemu/
test_workflow_qemu.py, tests/qemu/test_natmod_qemu.py): the `edgetune` CLI and `mpremote` by
their console scripts, and a session file short enough for the emulated serial link."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

SAMPLES = 460  # per class: 8 windows of 100 samples every 50 need 450


def short_session(src: Path, dst: Path) -> list[str]:
    """For each class, the first SAMPLES samples of its first recording (label run) that long,
    values to 4 decimals; classes in order of appearance. Returns the class names."""
    with open(src, newline="") as f:
        rows = list(csv.reader(f))
    runs: list[list[list[str]]] = []
    for r in rows[1:]:
        if not runs or runs[-1][-1][-1] != r[-1]:
            runs.append([])
        runs[-1].append(r)
    picked: dict[str, list[list[str]]] = {}
    for run in runs:
        if len(run) >= SAMPLES and run[0][-1] not in picked:
            picked[run[0][-1]] = run[:SAMPLES]
    with open(dst, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(rows[0])
        for run in picked.values():
            w.writerows([f"{float(v):.4f}" for v in r[:-1]] + [r[-1]] for r in run)
    return list(picked)


def cli(*args: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgetune.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def mpremote(port: str, *args: str, timeout: float = 120) -> str:
    exe = Path(sys.executable).with_name("mpremote")
    p = subprocess.run([str(exe), "connect", port, *args], capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, p.stdout + p.stderr
    return p.stdout
