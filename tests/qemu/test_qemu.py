"""The real firmware on an emulated Cortex-M3, driven exactly as a user drives a board.

build/qemu-test/firmware.elf (scripts/firmware_qemu.sh with OUT= and MODEL=: MicroPython for
the MPS2-AN385 with our C module, the device app from firmware/, boards/qemu/modules and a
small app model frozen in as a 4-byte-aligned bytes object) is built by the fixture if missing
or stale (~1 min from scratch on 2 cores, ~3 s otherwise), booted with
`edgetune.device.emulate.QemuBoard` (qemu-system-arm, serial on a pty), and then:

1. `mpremote connect <pty>` (the real mpremote, raw REPL; the filesystem is mounted at boot) copies a
   replay session and the device script over, and starts it with `exec --no-follow`;
2. the device app boots from the FROZEN model, collects labelled windows from the replay
   sensor, trains (shuffled one-sample SGD with held-back evaluation), saves the weights;
   its `@et` lines are read off the same pty by `edgetune.device.monitor.monitor` (pyserial) until
   the "save" event;
3. `mpremote connect <pty> resume` fetches the trained-weights file and the exact (window,
   label) sequence the model was trained on.

The same script runs on the unix-port binary (x86-64) with the .etm as a file, and the numpy
twin (host/edgetune/twin/training.py) replays the recorded steps: the three trained-weights files
must be identical byte for byte (cross-ISA determinism: Cortex-M3 soft-float float32 vs
x86-64 SSE), and the sequences of training windows too. Replayed values are multiples of 1/16
and the model's input scale is 1/16, so quantizing them is exact in float32 (qemu's
MicroPython) and float64 (unix port) alike.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edgetune.device import emulate
from edgetune.twin.training import Trainer

from tests.support import tinymodels
from tests.support.qemuboard import CLASSES, app_model_etm, build_firmware, mpremote

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
LR, EPOCHS, N_PER_CLASS, SEED = 0.05, 2, 6, 1

# The device script (firmware/ API). MODEL: the frozen model on qemu, the .etm file on unix.
DEVICE = f"""
import binascii
import app, log, sensors
try:
    import et_model
    MODEL = et_model.MODEL
except ImportError:
    MODEL = "model.etm"
import time
time.sleep_ms(WAIT_MS)  # qemu: let the host's monitor open the pty first


class Rec:
    # Forwards to the C Model and records every training step.
    def __init__(self, m):
        self.m = m
        self.steps = []

    def train(self, x, label, lr=0.01, qas=True):
        self.steps.append((bytes(x), label))
        return self.m.train(x, label, lr=lr, qas=qas)

    def __getattr__(self, name):
        return getattr(self.m, name)


# holdout=0 and the recipe's other steps off: plain SGD over every window, so the twin can replay
# the recorded steps (the whole recipe's C = twin check is tests/unix/test_recipe.py)
s = app.boot(model=MODEL, source=sensors.Replay("session.csv", {list(CLASSES)!r}), config=None, holdout=0)
REC = Rec(s.model)
s.model = REC
for k in range({len(CLASSES)}):
    app.collect(k, n={N_PER_CLASS})
app.train(epochs={EPOCHS}, lr={LR}, seed={SEED}, calibrate=False, refit=False, guard=False)
app.save()
"""

DUMP = """
for x, k in REC.steps:
    print("STEP", binascii.hexlify(x).decode(), k)
print("DONE", len(REC.steps))
"""


def _steps(text: str) -> list[tuple[bytes, int]]:
    out = []
    for line in text.splitlines():
        if line.startswith("STEP "):
            _, hx, k = line.split()
            out.append((bytes.fromhex(hx), int(k)))
    assert f"DONE {len(out)}" in text, text[-2000:]
    return out


@pytest.fixture(scope="module")
def model_etm() -> bytes:
    return app_model_etm()


@pytest.fixture(scope="module")
def firmware(model_etm: bytes) -> Path:
    return build_firmware(model_etm)


@pytest.fixture(scope="module")
def session(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("session")
    (d / "session.csv").write_text(tinymodels.session_csv(CLASSES, per_class=40, seed=2))
    return d


def test_frozen_model_is_aligned_in_the_image(firmware: Path, model_etm: bytes):
    from edgetune.device.freeze import elf_offset_of

    addr = elf_offset_of(firmware, model_etm)
    assert addr is not None and addr % 4 == 0


def test_qemu_training_is_bit_identical_to_unix_and_twin(firmware: Path, model_etm: bytes, session: Path,
                                                         tmp_path: Path, micropython):
    from edgetune.device.monitor import monitor

    dev = tmp_path / "device.py"
    dev.write_text(DEVICE.replace("WAIT_MS", "1500"))
    with emulate.QemuBoard(firmware) as board:
        # The REPL-visible facts first: Cortex-M3 build, our module, the frozen model in flash.
        out = mpremote(board.pty, "exec",
                        "import sys, edgetune, et_model; print(sys.platform, sys.implementation._machine, "
                        "len(et_model.MODEL), edgetune.Model(et_model.MODEL).info()['arena'])")
        plat, *_rest = out.split()
        assert plat == "qemu" and "Cortex-M3" in out and str(len(model_etm)) in out
        mpremote(board.pty, "exec", "import qemufs", "+", "cp", str(session / "session.csv"), ":session.csv",
                  "+", "cp", str(dev), ":device.py", "+", "exec", "--no-follow",
                  "f = open('device.py'); s = f.read(); f.close(); exec(s)")  # no open file left to the GC
        log = io.StringIO()
        res = monitor(board.pty, until="save", idle=120, progress=False, out=log, err=io.StringIO(),
                      csv_path=str(tmp_path / "log.csv"))
        assert res.reason != "port unavailable", log.getvalue()
        evs = [r["ev"] for r in res.rows]
        assert evs[0] == "boot" and evs[-1] == "save", (evs, log.getvalue()[-2000:])
        train_rows = [r for r in res.rows if r["ev"] == "train"]
        assert train_rows and all(np.isfinite(float(r["loss"])) for r in train_rows)
        dump = mpremote(board.pty, "resume", "exec", DUMP, "+", "cp", ":weights.etw", str(tmp_path / "qemu.etw"))
    qemu_steps = _steps(dump)
    assert len(qemu_steps) == len(train_rows)
    qemu_w = (tmp_path / "qemu.etw").read_bytes()

    # The unix port, same app, same data, same seed.
    work = tmp_path / "unix"
    work.mkdir()
    (work / "model.etm").write_bytes(model_etm)
    shutil.copy(session / "session.csv", work / "session.csv")
    proc = emulate.run_unix(DEVICE.replace("WAIT_MS", "0") + DUMP, cwd=work, extra_path=[str(REPO / "firmware")],
                            timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr
    unix_steps = _steps(proc.stdout)
    unix_w = (work / "weights.etw").read_bytes()

    # The numpy twin replays the steps the device recorded.
    tw = Trainer(model_etm)
    for x, k in qemu_steps:
        tw.step(np.frombuffer(x, np.int8), k, LR, qas=True)
    twin_w = tw.state_bytes()

    assert qemu_steps == unix_steps
    assert qemu_w == unix_w, "trained weights differ between Cortex-M3 (qemu) and x86-64 (unix port)"
    assert qemu_w == twin_w, "trained weights differ between the firmware and the numpy twin"
    # ... and training changed something.
    assert twin_w[32:] != Trainer(model_etm).state_bytes()[32:]


def test_systick_counts_guest_instructions_under_icount(firmware: Path, tmp_path: Path):
    """The premise of bench/mcu.py: under -icount shift=0 SysTick (read via machine.mem32) ticks
    once per 40 guest instructions, measured with an inline-assembler loop of known length."""
    import json
    from bench import mcu

    script = tmp_path / "cal.py"
    script.write_text(mcu.DEVICE_PRELUDE + mcu.CALIBRATE)
    with emulate.QemuBoard(firmware, icount=True) as board:
        out = mpremote(board.pty, "run", str(script))
    cal = json.loads(next(line for line in out.splitlines() if line.startswith("BENCH "))[6:])
    per_tick = cal["instructions"] / cal["ticks"]
    assert abs(per_tick - 40.0) < 0.05, per_tick


def test_edgetune_emulate_board_qemu_runs_a_script(firmware: Path, tmp_path: Path):
    """The user-facing verb: boot, run SCRIPT.py through mpremote, exit with its status."""
    ok = tmp_path / "ok.py"
    ok.write_text("import time, qemufs, os\nt = time.ticks_ms()\nwith open('f', 'w') as f:\n    f.write('x')\n"
                  "print('files', os.listdir(), time.ticks_diff(time.ticks_ms(), t) >= 0)\n")
    bad = tmp_path / "bad.py"
    bad.write_text("raise ValueError('boom')\n")
    cmd = [sys.executable, "-m", "edgetune.cli", "emulate", "--board", "qemu", "--firmware", str(firmware)]
    p = subprocess.run([*cmd, str(ok)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and "files ['f'] True" in p.stdout, p.stdout + p.stderr
    p = subprocess.run([*cmd, str(bad)], capture_output=True, text=True, timeout=120)
    assert p.returncode != 0 and "boom" in p.stdout + p.stderr
    p = subprocess.run([*cmd[:-1], str(tmp_path / "none.elf"), str(ok)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "make firmware BOARD=qemu" in p.stderr


def _children(pid: int) -> list[int]:
    kids = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        kids += [int(k) for k in (task / "children").read_text().split()]
    return kids


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_edgetune_emulate_board_qemu_stops_qemu_on_sigterm(firmware: Path):
    """`edgetune emulate --board qemu` names its port on its first line and, sent SIGTERM (what
    a service manager, `kill` or a test harness sends), stops its qemu-system-arm like Ctrl-C."""
    import signal

    proc = subprocess.Popen([sys.executable, "-m", "edgetune.cli", "emulate", "--board", "qemu", "--firmware",
                             str(firmware)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()
        assert "/dev/pts/" in first, first
        qemu = _children(proc.pid)
        assert len(qemu) == 1 and "qemu-system-arm" in Path(f"/proc/{qemu[0]}/cmdline").read_text()
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
        for _ in range(50):
            if not _alive(qemu[0]):
                break
            time.sleep(0.1)
        assert not _alive(qemu[0]), "qemu-system-arm still running after SIGTERM to edgetune emulate"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_filesystem_survives_soft_reset_and_boot_main_run(firmware: Path, tmp_path: Path):
    """The board's filesystem: 1408 KiB of LittleFS mounted at / at boot (no import needed),
    kept across mpremote's soft resets; boot.py runs at every boot and main.py after a soft
    reset from the friendly REPL (not from mpremote's raw REPL), as on the rp2 port."""
    import serial

    big = tmp_path / "big.bin"
    big.write_bytes(bytes(range(256)) * (64 * 1024 // 256))  # more than the old 24 KiB RAM disk held
    (tmp_path / "boot.py").write_text("with open('boots', 'a') as f:\n    f.write('b')\n")
    (tmp_path / "main.py").write_text("print('main.py ran')\n")
    with emulate.QemuBoard(firmware) as board:
        out = mpremote(board.pty, "exec", "import os; print(os.getcwd(), os.statvfs('/')[:3], os.listdir())")
        assert out.split("\n")[0].strip() == "/ (4096, 4096, 352) []", out
        mpremote(board.pty, "cp", str(big), ":big.bin", "+", "cp", str(tmp_path / "boot.py"), ":boot.py",
                  "+", "cp", str(tmp_path / "main.py"), ":main.py", timeout=300)
        # A new mpremote session soft-resets: the files are still there, boot.py ran, main.py not.
        out = mpremote(board.pty, "exec", "import os; print(sorted(os.listdir()), os.stat('big.bin')[6], "
                        "open('boots').read())")
        assert out.split() == ["['big.bin',", "'boot.py',", "'boots',", "'main.py']", str(big.stat().st_size), "b"], out
        mpremote(board.pty, "cp", ":big.bin", str(tmp_path / "back.bin"), timeout=300)
        assert (tmp_path / "back.bin").read_bytes() == big.read_bytes()
        with serial.Serial(board.pty, timeout=0.5) as s:  # Ctrl-D at the friendly REPL
            s.write(b"\r\x03\x03\x02")
            time.sleep(0.5)
            s.read(4096)
            s.write(b"\x04")
            seen = b""
            deadline = time.monotonic() + 20
            while b">>> " not in seen and time.monotonic() < deadline:
                seen += s.read(4096)
        assert b"soft reboot" in seen and b"main.py ran" in seen, seen
        # qemufs.mount(kib) formats a fresh filesystem of that size; the next boot mounts it again.
        mpremote(board.pty, "exec", "import qemufs; qemufs.mount(32)\nwith open('s', 'w') as f:\n    f.write('1')")
        out = mpremote(board.pty, "exec", "import os, qemufs; print(os.listdir(), qemufs.dev.block, qemufs.dev.blocks)")
        assert out.split() == ["['s']", "256", "128"], out
