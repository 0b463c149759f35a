"""The edgetune native module for xtensawin (ESP32-S3), built with upstream LLVM, on the emulated
Xtensa LX7 board (boards/qemu-xtensa, docs/xtensa.md), driven by the real mpremote.

- build/natmod/xtensawin/edgetune.mpy (ESP32-S3 feature set) and xtensawin-qemu (the same
  without MUL32_HIGH, which QEMU's de233_fpu lacks) have the xtensawin .mpy header;
- on the board, the .mpy equals the numpy twin bit for bit on 20 random hand-built models x up to
  4 schemes (QAS on/off, momentum, sliced weights): 20 training steps (losses), the saved
  trained-weights file, evaluate and predict after training (test_unix_train's runner and
  checks), and load() restores the saved state into a fresh Model;
- the reference (demo) model trains on the board as the twin does;
- the core's own C through the same compiler: formatted error messages (va_start repaired by
  scripts/xtensa/vafix.py) equal the unix port's;
- the runtime helpers (scripts/xtensa/rt/xtensa_rt.c, boards/qemu-xtensa/libc_extra.c) equal the
  host's arithmetic on millions of operands (host gcc, x86-64);
- the ESP32-S3 build differs from the test build only in 64-bit multiplies: every function
  whose code differs uses mulsh/muluh in one and calls __muldi3 in the other.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgetune.device import emulate
from edgetune.device.emulate_xtensa import XtensaBoard
from edgetune.format.modelfile import read_etm
from edgetune.format.scheme import Scheme

from tests.support import trainingcases
from tests.support.relhelp import demo_module

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
FIRMWARE = REPO / "build" / "qemu-xtensa" / "firmware.elf"
MPY_S3 = REPO / "build" / "natmod" / "xtensawin" / "edgetune.mpy"
MPY_QEMU = REPO / "build" / "natmod" / "xtensawin-qemu" / "edgetune.mpy"
XTENSA = REPO / "scripts" / "xtensa"


def _make(*args: str, timeout: float = 1200) -> None:
    proc = subprocess.run(["make", "--no-print-directory", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        pytest.fail(f"make {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}", pytrace=False)


@pytest.fixture(scope="module")
def built() -> None:
    """make firmware BOARD=qemu-xtensa and make natmod ARCH=xtensawin (no-ops when up to date)."""
    _make("firmware", "BOARD=qemu-xtensa")
    _make("natmod", "ARCH=xtensawin")


def _mpremote(pty: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run(emulate.mpremote_command(pty, *args), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"mpremote {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def board(built):
    """The emulated LX7 with the test build of the .mpy in its filesystem."""
    with XtensaBoard(FIRMWARE) as b:
        _mpremote(b.pty, "cp", str(MPY_QEMU), ":edgetune.mpy")
        yield b


def test_mpy_headers(built):
    for path in (MPY_S3, MPY_QEMU):
        head = path.read_bytes()[:4]
        assert head[0:2] == b"M\x06", path  # .mpy version 6
        assert head[2] >> 2 == 10, f"{path}: arch {head[2] >> 2}, want 10 (xtensawin)"


def _board_runner(board: XtensaBoard):
    """A stand-in for test_unix_train.run_script that runs the runner on the board: the case
    files go to /t on the board's filesystem, the saved state files come back to tmp."""

    def run(micropython, tmp: Path, code: str, heapsize=None, timeout: float = 1200):
        files = sorted(str(p) for p in tmp.iterdir() if p.suffix in (".etm", ".x", ".lab"))
        code = code.replace(repr(str(tmp)), repr("/t"))
        script = tmp / "runner_board.py"
        script.write_text(code)
        _mpremote(board.pty, "exec", "import os\ntry:\n os.mkdir('/t')\nexcept OSError:\n pass",
                  "+", "cp", *files, ":/t/")
        proc = subprocess.run(emulate.mpremote_command(board.pty, "run", str(script)), capture_output=True,
                              text=True, timeout=timeout)
        pulls: list[str] = []
        for name in re.findall(r"^CASE (\S+)", proc.stdout, re.M):
            pulls += ["cp", f":/t/{name}.state", str(tmp / f"{name}.state"), "+"]
        pulls += ["exec", "import os\nfor f in os.listdir('/t'):\n os.remove('/t/' + f)"]
        _mpremote(board.pty, *pulls)
        return proc

    return run


def test_training_bit_exact_20_models(board, tmp_path, monkeypatch):
    """20 random hand-built models (every op, FULLY_CONNECTED classifier) x up to 4 schemes, 20
    steps each with QAS on or off: losses, saved state, evaluate, predict = the numpy twin."""
    monkeypatch.setattr(trainingcases, "run_script", _board_runner(board))
    cases = trainingcases.hand_cases(0, 20)
    assert len({c.name.split("_")[0] for c in cases}) == 20
    assert any(c.qas for c in cases) and any(not c.qas for c in cases)
    n_trained = trainingcases.check_cases(None, tmp_path, cases, 0)
    assert n_trained >= len(cases) // 3


def test_demo_model_trains(board, tmp_path, monkeypatch):
    """The reference (demo) IMU model: classifier, biases + classifier, sliced conv weights with
    momentum; 20 steps each, bit for bit the twin."""
    from fractions import Fraction

    monkeypatch.setattr(trainingcases, "run_script", _board_runner(board))
    etm = demo_module().ensure_model(REPO / "build" / "demo")
    raw = etm.read_bytes()
    model = read_etm(raw)
    wl = [i for i, ly in enumerate(model.layers) if ly.weight != 0xFFFF]
    specs = [("clf", {"n_bias": 0}, {}, 0, 0.0, True, 0.01),
             ("bias_clf", {"n_bias": len(wl)}, {}, len(wl), 0.0, True, 0.01),
             ("sparse_mom", {"n_bias": len(wl), "weights": [(wl[-2], 2)]}, {wl[-2]: Fraction(1, 2)}, len(wl), 0.5,
              True, 0.02)]
    cases = [trainingcases.Case(f"demo_{n}", model, n, Scheme.build(model, nb, w), dev, mom, qas, lr, raw)
             for n, dev, w, nb, mom, qas, lr in specs]
    assert trainingcases.check_cases(None, tmp_path, cases, 7) >= 1


LOAD = """
import edgetune
buf = open('/t/m.etm', 'rb').read()
xs = open('/t/m.x', 'rb').read()
n = len(xs) // 8
m = edgetune.Model(buf)
for i in range(8):
    m.train(memoryview(xs)[i * n:(i + 1) * n], i % 2, lr=0.1, qas=True)
m.save('/t/m.state')
y1 = bytes(m.predict(memoryview(xs)[0:n]))
m2 = edgetune.Model(buf)
y0 = bytes(m2.predict(memoryview(xs)[0:n]))
m2.load('/t/m.state')
y2 = bytes(m2.predict(memoryview(xs)[0:n]))
print('LOAD', y1 == y2, y0 != y1 or y0 == y2)
"""


def test_save_load_roundtrip(board, tmp_path):
    from edgetune.format.modelfile import write_etm

    model = trainingcases.train_model(3)
    (tmp_path / "m.etm").write_bytes(write_etm(model))
    rng = np.random.default_rng(1)
    (tmp_path / "m.x").write_bytes(rng.integers(-128, 128, (8, model.input_tensor.size)).astype(np.int8).tobytes())
    (tmp_path / "load.py").write_text(LOAD)
    _mpremote(board.pty, "exec", "import os\ntry:\n os.mkdir('/t')\nexcept OSError:\n pass",
              "+", "cp", str(tmp_path / "m.etm"), str(tmp_path / "m.x"), ":/t/")
    out = _mpremote(board.pty, "run", str(tmp_path / "load.py")).stdout
    assert "LOAD True True" in out, out


MESSAGES = """
for f in (lambda: 1 + 'a', lambda: 'a' * 'b', lambda: [1][2:3:0], lambda: undefined_name, lambda: [].pop(),
          lambda: {}['k'], lambda: bytes(3)[7], lambda: (1, 2, 3)[9], lambda: int.from_bytes(b'', 'x')):
    try:
        f()
    except Exception as e:
        print(type(e).__name__, e)
print('%s|%d|%x' % ('a', -7, 255), 1 / 4, 3 * 0.5)
"""


def test_core_messages_equal_unix_port(board, micropython, tmp_path):
    """Error messages formatted by mp_printf/mp_raise_msg_varg in the LLVM-built core (variadic
    functions, repaired by vafix.py) equal those of the unix port."""
    script = tmp_path / "msg.py"
    script.write_text(MESSAGES)
    got = _mpremote(board.pty, "run", str(script)).stdout.replace("\r\n", "\n")
    want = subprocess.run([str(micropython), str(script)], capture_output=True, text=True, timeout=60).stdout
    assert got.strip() == want.strip()
    assert "isn't defined" in got and "0.25" in got


HELPERS = r"""
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#define __divsf3 t_divsf3
#define __muldi3 t_muldi3
#define __udivdi3 t_udivdi3
#define __divdi3 t_divdi3
#define __umoddi3 t_umoddi3
#define __moddi3 t_moddi3
#define __ashldi3 t_ashldi3
#define __lshrdi3 t_lshrdi3
#define __ashrdi3 t_ashrdi3
#define __floatdisf t_floatdisf
#include "xtensa_rt.c"
static uint64_t s = 88172645463325252ull;
static uint64_t rnd(void) { s ^= s << 13; s ^= s >> 7; s ^= s << 17; return s; }
static int same(float a, float b) { return !memcmp(&a, &b, 4) || (isnan(a) && isnan(b)); }
int main(void) {
    long bad = 0;
    for (long k = 0; k < 3000000; k++) {
        uint32_t ua = (uint32_t)rnd(), ub = (uint32_t)rnd();
        if (k % 4 == 1) ub = (ub & 0x807fffffu) | ((uint32_t)(rnd() % 256) << 23);
        if (k % 4 == 2) ua &= 0x80ffffffu;  /* subnormal / tiny dividends */
        if (k % 4 == 3) ub = (ua & 0xff800000u) ^ ((uint32_t)rnd() & 0x0fffffffu);
        float a, b; memcpy(&a, &ua, 4); memcpy(&b, &ub, 4);
        bad += !same(a / b, t_divsf3(a, b));
        uint64_t x = rnd(), y = rnd(); int sh = (int)(rnd() % 64);
        if (k % 3 == 1) y >>= rnd() % 64;
        if (k % 3 == 2) { x >>= 32; y >>= 32; }
        if (y == 0) y = 1;
        int64_t sx = (int64_t)x, sy = (int64_t)y;
        bad += t_muldi3(sx, sy) != (int64_t)(x * y);
        bad += t_udivdi3(x, y) != x / y || t_umoddi3(x, y) != x % y;
        if (!(sx == INT64_MIN && sy == -1)) bad += t_divdi3(sx, sy) != sx / sy || t_moddi3(sx, sy) != sx % sy;
        bad += t_ashldi3(x, sh) != x << sh || t_lshrdi3(x, sh) != x >> sh || t_ashrdi3(sx, sh) != sx >> sh;
        int64_t v = k % 2 ? sx >> sh : sx;
        bad += !same((float)v, t_floatdisf(v));
    }
    printf("BAD %ld\n", bad);
    return bad != 0;
}
"""


def test_runtime_helpers_equal_host_arithmetic(tmp_path):
    """__divsf3 (IEEE round to nearest even, subnormals), __muldi3, 64-bit division, shifts and
    __floatdisf equal x86-64's own arithmetic on 3 M random operands each."""
    src = tmp_path / "helpers.c"
    src.write_text(HELPERS)
    exe = tmp_path / "helpers"
    subprocess.run(["gcc", "-O1", "-std=c99", "-I", str(XTENSA / "rt"), "-o", str(exe), str(src), "-lm"],
                   check=True, capture_output=True, timeout=120)
    proc = subprocess.run([str(exe)], capture_output=True, text=True, timeout=300)
    assert proc.stdout.strip() == "BAD 0", proc.stdout


def _functions(asm: str) -> dict[str, list[str]]:
    """{function: its instructions}, literal-pool labels normalised."""
    out: dict[str, list[str]] = {}
    cur = None
    for line in asm.splitlines():
        m = re.match(r"^([A-Za-z_][\w.]*):", line)
        if m:
            cur = m.group(1)
            out[cur] = []
            continue
        code = line.split("#", 1)[0].strip()
        if cur and code and not code.startswith("."):
            out[cur].append(re.sub(r"\.LCPI\d+_\d+", ".LCPI", code))
    return out


def test_s3_build_differs_only_in_64bit_multiplies(tmp_path):
    """Each edgetune source compiled for the ESP32-S3 (MUL32_HIGH) and for QEMU's core (without):
    the same functions, and every function whose code differs has mulsh/muluh in the S3 build
    and a call through __muldi3 in the test build."""
    natmod = REPO / "native_modules" / "edgetune"
    srcs = sorted(natmod.glob("kernels/*.c")) + sorted(natmod.glob("*.c"))
    flags = ["-std=c99", "-O2", "-DNDEBUG", "-DNO_QSTR", "-DMICROPY_ENABLE_DYNRUNTIME",
             "-DMICROPY_FLOAT_IMPL=MICROPY_FLOAT_IMPL_FLOAT", f"-I{REPO / 'build' / 'micropython'}",
             f"-I{natmod}", f"-I{natmod / 'kernels'}", "-mrodata-rw"]
    kernels_only = [s for s in srcs if "kernels" in s.parts]  # no MicroPython config header needed
    n_diff = 0
    for src in kernels_only:
        asm = {}
        for tag, extra in (("s3", []), ("qemu", ["-mno-mul32high"])):
            out = tmp_path / f"{src.stem}.{tag}.s"
            subprocess.run([str(XTENSA / "xtensawin-gcc"), *flags, *extra, "-S", "-o", str(out), str(src)],
                           check=True, capture_output=True, timeout=120)
            asm[tag] = _functions(out.read_text())
        assert asm["s3"].keys() == asm["qemu"].keys(), src
        for fn in asm["s3"]:
            a, b = asm["s3"][fn], asm["qemu"][fn]
            if a == b:
                continue
            n_diff += 1
            assert any(i.startswith(("mulsh", "muluh")) for i in a), f"{src.name}:{fn} differs without mulsh/muluh"
            assert not any(i.startswith(("mulsh", "muluh")) for i in b), f"{src.name}:{fn}"
            lits = (tmp_path / f"{src.stem}.qemu.s").read_text()
            assert "__muldi3" in lits, f"{src.name}:{fn} differs but the test build calls no __muldi3"
    assert n_diff >= 1  # the requantization's 64-bit products


def test_emulate_cli_runs_a_script(built, tmp_path):
    """`edgetune emulate --board qemu-xtensa SCRIPT.py`: boots the board, runs the script
    through mpremote, exits with its status."""
    ok = tmp_path / "ok.py"
    ok.write_text("import sys\nprint('on', sys.platform, 7 * 6)\n")
    bad = tmp_path / "bad.py"
    bad.write_text("raise ValueError('boom')\n")
    cmd = [sys.executable, "-m", "edgetune.cli", "emulate", "--board", "qemu-xtensa"]
    r = subprocess.run([*cmd, str(ok)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "on qemu-xtensa 42" in r.stdout, r.stdout + r.stderr
    r = subprocess.run([*cmd, str(bad)], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "ValueError: boom" in r.stdout + r.stderr
