"""The emulation layer: the real unix-port binary, its heap limit, and `edgetune emulate`."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from edgetune.device import emulate


def test_runs_real_micropython(run_mpy):
    out = run_mpy("import sys\nprint(sys.implementation.name, sys.implementation.version[:2])")
    assert out.split() == ["micropython", "(1,", "25)"]


def test_heap_limit_raises_memoryerror(run_mpy):
    code = (
        "try:\n"
        "    b = bytearray(100 * 1024)\n"
        "    print('allocated', len(b))\n"
        "except MemoryError:\n"
        "    print('MemoryError')\n"
    )
    assert run_mpy(code, heapsize="64K").strip() == "MemoryError"
    # The same allocation fits in the RP2040 budget, so the limit really is what decides.
    assert run_mpy(code, heapsize="190K").strip() == "allocated 102400"


def test_heapsize_is_applied(run_mpy):
    out = run_mpy("import gc\ngc.collect()\nprint(gc.mem_free() + gc.mem_alloc())", heapsize="64K")
    assert 60 * 1024 <= int(out) <= 64 * 1024


def test_nonzero_exit_and_stderr_are_reported():
    proc = emulate.run_unix("print('before')\nraise ValueError('boom')\n")
    assert proc.returncode == 1
    assert proc.stdout == "before\n"
    assert "ValueError: boom" in proc.stderr
    assert "line 2" in proc.stderr


def test_extra_path_imports(tmp_path):
    (tmp_path / "helper_mod.py").write_text("VALUE = 41 + 1\n")
    proc = emulate.run_unix("import helper_mod\nprint(helper_mod.VALUE)", extra_path=[str(tmp_path)])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "42"


def test_timeout_raises():
    with pytest.raises(subprocess.TimeoutExpired):
        emulate.run_unix("while True:\n    pass\n", timeout=1)


def test_missing_binary_names_the_make_command(monkeypatch, tmp_path):
    monkeypatch.setenv(emulate.ENV_BINARY, str(tmp_path / "nope"))
    with pytest.raises(emulate.EmulatorMissing, match="make firmware BOARD=unix"):
        emulate.find_micropython()


def test_cli_runs_script_with_board_heap(tmp_path, micropython, repo_root):
    script = tmp_path / "s.py"
    script.write_text("import gc\ngc.collect()\nprint(gc.mem_free() + gc.mem_alloc())\n")
    heap = json.loads((repo_root / "boards" / "unix" / "board.json").read_text())["heap_bytes"]
    env = dict(os.environ, EDGETUNE_MICROPYTHON=str(micropython))
    proc = subprocess.run(
        [sys.executable, "-m", "edgetune.cli", "emulate", "--board", "unix", str(script)],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert heap - 4096 <= int(proc.stdout) <= heap


def test_cli_unknown_board(tmp_path):
    script = tmp_path / "s.py"
    script.write_text("print(1)\n")
    proc = subprocess.run(
        [sys.executable, "-m", "edgetune.cli", "emulate", "--board", "nosuchboard", str(script)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert "unknown board 'nosuchboard'" in proc.stderr


def test_board_files_are_consistent(repo_root):
    boards = {p.parent.name: json.loads(p.read_text()) for p in (repo_root / "boards").glob("*/board.json")}
    assert set(boards) >= {"unix", "rp2040", "esp32s3", "qemu"}
    for name, cfg in boards.items():
        assert cfg["board"] == name
        assert isinstance(cfg["heap_bytes"], int) and cfg["heap_bytes"] > 32 * 1024
        assert cfg["imu"]["bus"] in ("i2c", "replay")
        assert "method" in cfg["flash"]
    # The unix emulation enforces the RP2040 budget.
    assert boards["unix"]["heap_bytes"] == boards["rp2040"]["heap_bytes"]


def test_cli_unix_script_imports_the_app_without_path(tmp_path, micropython):
    """`edgetune emulate --board unix script.py` puts the device app (firmware/) on sys.path, as
    a board has it frozen or deployed: `import app` needs no --path."""
    script = tmp_path / "s.py"
    script.write_text("import app, collect\nprint('app', app.MODEL, collect.Ring(2, 3).capacity)\n")
    env = dict(os.environ, EDGETUNE_MICROPYTHON=str(micropython))
    proc = subprocess.run(
        [sys.executable, "-m", "edgetune.cli", "emulate", "--board", "unix", str(script)],
        capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.split() == ["app", "model.etm", "2"]
