"""Host robustness of `edgetune monitor` over a real pseudo-terminal (docs/reliability.md).

What tests/host/test_monitor.py already covers is not repeated: a disconnect mid-run that is
replugged (no received row lost, no half row stored). Added here, each with the real CLI
(`python -m edgetune.cli monitor`) reading the pty's slave with pyserial:

- garbage: random bytes (invalid UTF-8, NULs, lone CRs), broken `@et` lines (bad JSON, a JSON
  list, a cut-off object), a 200 KB line without a newline, between valid log lines: exactly
  the valid rows reach the CSV, in order, and the monitor ends normally;
- a partial last line when the port vanishes for good: not stored; the monitor gives up after
  --reconnect-timeout with a clear message and keeps every complete row;
- a port that never existed: exit 1 with a message, no CSV rows, no traceback.

`edgetune export` with a float model, unsupported ops and corrupt/truncated files (clear
one-line message, non-zero exit, nothing written, an existing output untouched) is covered by
tests/host/test_export.py (test_float_model_rejected, test_unsupported_ops_rejected,
test_corrupt_input_rejected, test_cli_writes_atomically).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import tty
from pathlib import Path

import numpy as np

from edgetune.device.monitor import read_csv

from tests.support.relhelp import REPO, record


def _pty() -> tuple[int, str]:
    master, slave = os.openpty()
    tty.setraw(slave)
    name = os.ttyname(slave)
    os.close(slave)
    return master, name


def _monitor(port: str, csv: Path, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO / "host"))
    # stdout (the passed-through lines, 200 KB of them here) goes to a file: a pipe nobody
    # reads yet would block the monitor, and with it the pty.
    stdout = open(csv.with_suffix(".out"), "w")
    return subprocess.Popen([sys.executable, "-m", "edgetune.cli", "monitor", "--port", port, "--csv", str(csv),
                             "--no-progress", *extra], stdout=stdout, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=REPO)


def _wait_connected(proc: subprocess.Popen, timeout: float = 30) -> None:
    # The monitor prints "monitor: connected to ..." on stderr once the port is open (pyserial
    # flushes input at open, so nothing may be written before).
    t0 = time.monotonic()
    line = ""
    while time.monotonic() - t0 < timeout:
        line = proc.stderr.readline()
        if "connected to" in line:
            return
    raise AssertionError(f"monitor never connected: {line!r}")


def _row(i: int) -> dict:
    return {"t_ms": 1000 + i, "ev": "step", "step": i, "epoch": 0, "loss": round(1.5 - 0.01 * i, 4)}


def _write_all(master: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(master, view[:4096])
        view = view[n:]


def test_garbage_between_valid_lines(tmp_path):
    master, port = _pty()
    csv = tmp_path / "log.csv"
    proc = _monitor(port, csv, "--idle", "1.5")
    _wait_connected(proc)
    rng = np.random.default_rng(0)
    rows = [_row(i) for i in range(40)]
    junk = [
        bytes(rng.integers(0, 256, 300, dtype=np.uint8)).replace(b"\n", b"") + b"\n",
        b"\xff\xfe\xfd invalid utf-8 \xc3\x28\n",
        b"\0\0\0\r\r\r\n",
        b"@et {\"ev\": \"step\", \"loss\": \n",
        b"@et [1, 2, 3]\n",
        b"@et not json at all\n",
        b"x" * 200_000 + b"\n",
        b"@et {\"ev\": \"step\"" + b"\r\n",
    ]
    for i, r in enumerate(rows):
        _write_all(master, junk[i % len(junk)])
        _write_all(master, b"@et " + json.dumps(r).encode() + b"\r\n")
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        os.close(master)
    assert proc.returncode == 0, err
    got = read_csv(csv)
    assert [{k: r[k] for k in rows[0]} for r in got] == rows
    assert "Traceback" not in err
    record("host_monitor_garbage", {"valid_rows": len(rows), "garbage_lines": len(rows), "rows_received": len(got)})


def test_port_vanishes_with_a_partial_line(tmp_path):
    master, port = _pty()
    csv = tmp_path / "log.csv"
    proc = _monitor(port, csv, "--reconnect-timeout", "1")
    _wait_connected(proc)
    rows = [_row(i) for i in range(5)]
    for r in rows:
        _write_all(master, b"@et " + json.dumps(r).encode() + b"\n")
    _write_all(master, b"@et " + json.dumps(_row(99)).encode()[:20])  # cut mid-line
    time.sleep(0.5)
    os.close(master)  # the board is unplugged for good
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err  # rows were received
    assert "disconnected" in err and "port unavailable" in err
    assert "Traceback" not in err
    assert [r["step"] for r in read_csv(csv)] == [0, 1, 2, 3, 4]


def test_port_that_never_existed(tmp_path):
    csv = tmp_path / "log.csv"
    proc = _monitor(str(tmp_path / "ttyNOPE"), csv, "--reconnect-timeout", "0.5")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "port unavailable" in err and "Traceback" not in err
    assert not csv.exists() or read_csv(csv) == []


def test_missing_port_fails_at_once_and_writes_nothing(tmp_path):
    """`monitor --port /dev/nonexistent` (default --reconnect-timeout 10 s): exit 1 within a
    couple of seconds, a message naming the port and what to check, no CSV and no PNG."""
    csv, png = tmp_path / "log.csv", tmp_path / "log.png"
    t0 = time.monotonic()
    proc = _monitor(str(tmp_path / "ttyNOPE"), csv, "--plot", str(png))
    _, err = proc.communicate(timeout=60)
    took = time.monotonic() - t0
    assert proc.returncode == 1, err
    assert took < 5, f"took {took:.1f} s"
    assert "ttyNOPE does not exist" in err and "edgetune emulate" in err and "Traceback" not in err, err
    assert not csv.exists() and not png.exists()
