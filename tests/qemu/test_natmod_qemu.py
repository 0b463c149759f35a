"""The native .mpy on a stock MicroPython board: the emulated Cortex-M3 built without our module
and without the app (make firmware BOARD=qemu-stock), driven by the real mpremote.

1. 24 random models (tests.support.randmodels.random_model) run by the armv6m .mpy (the RP2040's
   Thumb-1 code: ARMv6-M is a subset of the board's ARMv7-M) and by the armv7m .mpy give the
   numpy twin's outputs bit for bit; 24 training steps of the demo model (QAS and plain SGD)
   give the same trained-weights bytes and losses as the built-in module on the unix port.
2. The documented user flow: `edgetune emulate --board qemu-stock`, `edgetune install --port P
   --model M --session S --arch armv6m`, then `edgetune train --port P ...` trains the demo
   model on the board (core.IMPL "mpy" in the boot event).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgetune.device import emulate
from edgetune.twin import reference
from edgetune.format.modelfile import write_etm
from edgetune.device.monitor import parse_text, read_csv

from tests.support import randmodels
from tests.support import workflow
from tests.support.relhelp import demo_module

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
N_MODELS, N_INPUTS = 24, 4


@pytest.fixture(scope="module")
def stock() -> Path:
    """build/qemu-stock/firmware.elf and build/natmod/{armv6m,armv7m} (make: no-ops when built)."""
    for target in (["firmware", "BOARD=qemu-stock"], ["natmod", "ARCH=armv6m armv7m"]):
        p = subprocess.run(["make", "-s", *target], cwd=REPO, capture_output=True, text=True, timeout=900)
        if p.returncode != 0:
            pytest.fail(f"make {' '.join(target)} failed:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}", pytrace=False)
    return REPO / "build" / "qemu-stock" / "firmware.elf"


def _mpremote(pty: str, *args: str, timeout: float = 600) -> str:
    p = subprocess.run(emulate.mpremote_command(pty, *args), capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, f"mpremote {' '.join(args)[:200]} failed:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}"
    return p.stdout


MKLIB = "import os\ntry:\n    os.mkdir('/lib')\nexcept OSError:\n    pass"

FORWARD = """
import edgetune, binascii
print('FILE', edgetune.__file__)
for name in {names!r}:
    m = edgetune.Model(open(name + '.etm', 'rb').read())
    n = 1
    for s in m.info()['input_shape']:
        n *= s
    xs = open(name + '.x', 'rb').read()
    out = bytearray()
    for i in range(len(xs) // n):
        out += m.predict(xs[i * n:(i + 1) * n])
    print('Y', name, binascii.hexlify(out).decode())
    m = None
"""

# Deterministic training of the demo model: inputs from a 32-bit LCG (the same on every port),
# labels cycling; the losses as float32 bits and the trained-weights image (m.state()).
TRAIN = """
import edgetune, binascii, struct
m = edgetune.Model(open({etm!r}, 'rb').read())
info = m.info()
n = 1
for s in info['input_shape']:
    n *= s
k = info['output_shape'][-1]
seed = 12345
x = bytearray(n)
losses = []
for step in range(24):
    for i in range(n):
        seed = (seed * 1103515245 + 12345) & 0x7fffffff
        x[i] = (seed >> 16) & 0xff
    losses.append(struct.pack('<f', m.train(x, step % k, lr=0.02, qas=step % 3 != 2)))
print('LOSS', binascii.hexlify(b''.join(losses)).decode())
st = m.state()
h = 0
for b in st:
    h = (h * 31 + b) & 0xffffffff
print('STATE', len(st), h, m.predict_class(x))
"""


def _tagged(out: str, tag: str) -> list[str]:
    return [ln.split(" ", 1)[1] for ln in out.splitlines() if ln.startswith(tag + " ")]


@pytest.mark.parametrize("arch", ["armv6m", "armv7m"])
def test_random_models_and_training_bit_exact_on_the_stock_board(stock: Path, tmp_path: Path, micropython, arch):
    models = {f"r{s}": randmodels.random_model(900 + s) for s in range(N_MODELS)}
    inputs = {name: randmodels.random_inputs(m, N_INPUTS, 900 + i) for i, (name, m) in enumerate(models.items())}
    files = []
    for name, m in models.items():
        (tmp_path / f"{name}.etm").write_bytes(write_etm(m))
        (tmp_path / f"{name}.x").write_bytes(np.ascontiguousarray(inputs[name], np.int8).tobytes())
        files += [str(tmp_path / f"{name}.etm"), str(tmp_path / f"{name}.x")]
    etm = demo_module().ensure_model(REPO / "build" / "demo")
    (tmp_path / "fwd.py").write_text(FORWARD.format(names=list(models)))
    (tmp_path / "train.py").write_text(TRAIN.format(etm="demo.etm"))
    with emulate.QemuBoard(stock) as board:
        _mpremote(board.pty, "exec", MKLIB, "+", "fs", "cp", str(REPO / "build/natmod" / arch / "edgetune.mpy"),
                  ":/lib/edgetune.mpy", "+", "fs", "cp", *files, ":", "+", "fs", "cp", str(etm), ":demo.etm")
        out = _mpremote(board.pty, "run", str(tmp_path / "fwd.py"))
        train_out = _mpremote(board.pty, "run", str(tmp_path / "train.py"))
    assert _tagged(out, "FILE") == ["/lib/edgetune.mpy"]
    ys = dict(line.split() for line in _tagged(out, "Y"))
    assert sorted(ys) == sorted(models)
    for name, m in models.items():
        want = reference.forward_batch(m, inputs[name]).astype(np.int8).tobytes().hex()
        assert ys[name] == want, f"{arch} {name}: differs from the twin ({[randmodels.OP_NAMES[ly.op] for ly in m.layers]})"
    # the same training on the unix port's built-in module (== the twin: tests/unix/test_unix_train.py)
    ref = subprocess.run([str(micropython), "-c", TRAIN.format(etm=str(etm))], capture_output=True, text=True,
                         timeout=300)
    assert ref.returncode == 0, ref.stderr
    assert _tagged(train_out, "LOSS") == _tagged(ref.stdout, "LOSS") != []
    assert _tagged(train_out, "STATE") == _tagged(ref.stdout, "STATE") != []


def test_install_then_train_on_the_stock_board(stock: Path, tmp_path: Path):
    demo = demo_module()
    out = REPO / "build" / "demo"
    etm = demo.ensure_model(out)
    adapt, _ = demo.write_sessions(etm.parent, out)
    session = tmp_path / "adapt.csv"
    labels = workflow.short_session(adapt, session)
    emu = subprocess.Popen([sys.executable, "-m", "edgetune.cli", "emulate", "--board", "qemu-stock"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        m = re.search(r"(/dev/pts/\d+)", emu.stdout.readline())
        assert m
        port = m[1]
        p = workflow.cli("install", "--port", port, "--model", str(etm), "--session", str(session), "--arch", "armv6m",
                     timeout=900)
        assert p.returncode == 0, p.stdout + p.stderr
        assert "installing the armv6m module" in p.stdout and "core.IMPL mpy" in p.stdout, p.stdout
        assert "the app boots (7 classes" in p.stdout, p.stdout
        out_csv = tmp_path / "out.csv"
        p = workflow.cli("train", "--port", port, *(x for lab in labels for x in ("--label", lab)), "--n", "8",
                     "--epochs", "2", "--save", "--csv", str(out_csv), timeout=900)
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
        rows = read_csv(out_csv)
        boot = rows[0]
        assert boot["ev"] == "boot" and boot["impl"] == "mpy", boot
        assert [r["ev"] for r in rows].count("collect") == len(labels) and "save" in [r["ev"] for r in rows]
        train_rows = [r for r in rows if r["ev"] == "train"]
        assert train_rows and all(np.isfinite(r["loss"]) for r in train_rows)
        first = next(r for r in rows if r["ev"] == "recipe" and r.get("stage") == "before")
        final = [r for r in rows if r["ev"] == "guard" and r.get("stage") == "final"][-1]
        print(f"stock board, armv6m edgetune.mpy: check-set accuracy {first['acc']:.3f} -> {final['after']:.3f}")
        assert final["after"] >= first["acc"]
        # the weights survive a reset: the next boot restores them, still on the native module
        rows2 = parse_text(workflow.mpremote(port, "exec", "import app\napp.boot()"))
        boot2 = next(r for r in rows2 if r["ev"] == "boot")
        assert boot2["restored"] is True and boot2["impl"] == "mpy"
    finally:
        emu.send_signal(signal.SIGTERM)
        try:
            emu.wait(15)
        except subprocess.TimeoutExpired:
            emu.kill()
            emu.wait()


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q", os.environ.get("PYTEST_K", "")]))
