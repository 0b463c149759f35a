"""Running the pure-Python fallback (firmware/edgetune_py*.py): on the unix port with firmware/ on
the path, and frozen into the qemu Cortex-M3 firmware (single-precision floats, as on MCUs)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from edgetune.device import emulate
from edgetune.format.modelfile import read_etm

from tests.support import qemuboard

REPO = Path(__file__).resolve().parents[2]
FIRMWARE = REPO / "firmware"
QEMU_SEEDS = (7, 13, 15, 19, 25, 35)  # together: conv, depthwise, max/avg pool, MEAN, hidden FC


def run_with_firmware(code: str, tmp: Path, timeout: float = 600, heap: str | None = None,
                      binary: Path | None = None) -> str:
    """Run code on the unix port (binary, default build/unix/micropython) with firmware/ on its
    path, so `import edgetune_py` is the fallback; returns stdout, fails on a non-zero exit."""
    script = tmp / "runner.py"
    script.write_text(code)
    proc = emulate._run_binary(binary or emulate.find_micropython(), script, heap, timeout, tmp, [str(FIRMWARE)])
    assert proc.returncode == 0, (f"MicroPython exited with {proc.returncode}\n{proc.stdout[-2000:]}\n"
                                  f"{proc.stderr[-3000:]}")
    return proc.stdout


def demo_windows(etm: Path, evalp: Path, n: int) -> tuple[np.ndarray, np.ndarray]:
    """n real windows of the demo's shifted eval session, quantized as the device app does."""
    from edgetune.learn import data

    meta = read_etm(etm.read_bytes()).meta
    riq = meta["raw_input_quant"]
    w = data.make_windows(data.load_session(str(evalp), meta["class_names"]), meta["window"], meta["step"])
    q = np.clip(np.round(w.x / np.asarray(riq["scale"]) + np.asarray(riq["zero_point"])), -128, 127).astype(np.int8)
    pick = np.random.default_rng(3).permutation(len(q))[:n]
    return q[pick].reshape(n, -1), w.y[pick].astype(np.uint8)


@pytest.fixture(scope="module")
def qemu_firmware() -> Path:
    """build/qemu-test/firmware.elf, the same build as tests/qemu/test_qemu.py's (same frozen model)."""
    return qemuboard.build_firmware(qemuboard.app_model_etm())


def run_edgetune_py_on_qemu(firmware: Path, scripts: list[Path], tmp: Path, timeout: float) -> str:
    """Boot the qemu firmware and run each script in its own mpremote session with the
    edgetune_py frozen into that firmware (boards/qemu/manifest.py freezes firmware/*.py; the
    qemu_firmware fixture rebuilds it from the current source); returns the sessions' stdout,
    concatenated. A script must print DONE at its end.

    One session per script: each starts from a soft reset with the whole heap free (143 KB).
    Frozen, the module's bytecode stays in flash: as a .mpy on the RAM filesystem it took
    ~25 KB of heap and left the fallback too little (tests/qemu/test_fallback_heap.py measures
    the margin). The 32 KiB RAM filesystem holds the scripts' saved state files."""
    out = ""
    with emulate.QemuBoard(firmware) as board:
        for s in scripts:
            args = ["exec", "import qemufs; qemufs.mount(32)", "+", "run", str(s)]
            try:
                proc = subprocess.run(emulate.mpremote_command(board.pty, *args), capture_output=True, text=True,
                                      timeout=timeout)
            except subprocess.TimeoutExpired as e:
                pytest.fail(f"mpremote timed out on {s.name}; stdout so far:\n{(e.stdout or b'')[-3000:]!r}",
                            pytrace=False)
            assert proc.returncode == 0 and "DONE" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-2000:]
            out += proc.stdout
    return out
