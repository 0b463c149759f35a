"""The documented board workflow (docs/device-app.md §5), run exactly as a user runs it, against
the emulated board: every step is the real CLI as a subprocess, the board is qemu-system-arm
booting our Cortex-M3 firmware (build/qemu-test, shared with tests/qemu/test_qemu.py; chosen by
$EDGETUNE_QEMU_FIRMWARE, so the commands are the documented ones), the serial port is qemu's pty.

    edgetune emulate --board qemu                        (in the background; first line: the pty)
    edgetune deploy --port P --model model.etm --session adapt.csv
    mpremote connect P exec "import app; app.boot(); app.score('session.csv')"   (untrained)
    edgetune train --port P --label ... --n 8 --epochs 4 --save --csv out.csv --plot out.png   (on a pty)
    mpremote connect P exec "... app.score('session.csv')"                      (trained, restored)
    edgetune train --port P --label NOPE ...             (fails: says why, no plot)
    edgetune repl --port P                               (on a real pty: a line of Python, Ctrl-])
    SIGTERM to `edgetune emulate`                        (qemu stops too)

The model is the demo's reference model (build/demo/model, the pretrain/quantize/export verbs;
cached), the data the demo's shifted domain (sensor turned 90 degrees): the adaptation session
cut to the first SAMPLES samples of each class (the serial link carries ~7 KB/s). Checked: the
CSV has the run's rows (collect per label, a train row per step, eval, end), the live bar
was drawn on the terminal, the PNG is a non-empty image, the held-back accuracy after training is above the one before, and the
adaptation session scores higher with the saved weights (restored at boot) than without.
"""

from __future__ import annotations

import csv
import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgetune.device.monitor import parse_text, read_csv

from tests.support import qemuboard  # the shared firmware build
from tests.support.relhelp import demo_module
from tests.support.workflow import cli, mpremote, short_session

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
N, EPOCHS = 8, 4


def _on_terminal(argv: list[str], timeout: float = 600) -> tuple[int, str]:
    """Run argv with stdin/stdout/stderr on a real pty of 100 columns, as in a user's terminal;
    returns (exit status, everything it wrote)."""
    import fcntl
    import struct
    import termios

    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    out = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if select.select([master], [], [], 0.5)[0]:
                try:
                    data = os.read(master, 4096)
                except OSError:  # EIO: the child side is closed
                    break
                if not data:
                    break
                out += data
            elif proc.poll() is not None:
                break
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return proc.returncode, out.decode(errors="replace")


def _repl(port: str) -> str:
    """`edgetune repl --port P` on a real pty (a terminal, as a user has): run one line, Ctrl-]."""
    master, slave = os.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "edgetune.cli", "repl", "--port", port],
                            stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    seen = b""

    def read_until(pat: bytes, timeout: float) -> None:
        nonlocal seen
        deadline = time.monotonic() + timeout
        while pat not in seen and time.monotonic() < deadline:
            if select.select([master], [], [], 0.2)[0]:
                try:
                    seen += os.read(master, 4096)
                except OSError:
                    break

    try:
        read_until(b"Connected to MicroPython", 30)
        os.write(master, b"\r\n")
        read_until(b">>> ", 30)
        os.write(master, b"import app; print('classes', len(app.S.names) if app.S else 'none', 6 * 7)\r\n")
        read_until(b" 42", 30)
        os.write(master, b"\x1d")  # Ctrl-]: leave mpremote's REPL
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    assert proc.returncode == 0, seen.decode(errors="replace")
    return seen.decode(errors="replace")


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_documented_flow_on_the_qemu_board(tmp_path):
    firmware = qemuboard.build_firmware(qemuboard.app_model_etm())
    demo = demo_module()
    out = REPO / "build" / "demo"
    etm = demo.ensure_model(out)
    adapt, _ = demo.write_sessions(etm.parent, out)
    session = tmp_path / "adapt.csv"
    labels = short_session(adapt, session)
    out_csv, out_png = tmp_path / "out.csv", tmp_path / "out.png"
    env = dict(os.environ, EDGETUNE_QEMU_FIRMWARE=str(firmware))

    emu = subprocess.Popen([sys.executable, "-m", "edgetune.cli", "emulate", "--board", "qemu"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        first = emu.stdout.readline()
        m = re.search(r"(/dev/pts/\d+)", first)
        assert m, first
        port = m[1]
        qemu = [int(k) for k in Path(f"/proc/{emu.pid}/task/{emu.pid}/children").read_text().split()]

        p = cli("deploy", "--port", port, "--model", str(etm), "--session", str(session))
        assert p.returncode == 0, p.stdout + p.stderr
        assert "the app boots (7 classes" in p.stdout, p.stdout

        score = "import app\napp.boot()\napp.score('session.csv')"
        before = next(r["acc"] for r in parse_text(mpremote(port, "exec", score)) if r["ev"] == "score")

        args = ["train", "--port", port, *(x for lab in labels for x in ("--label", lab)), "--n", str(N),
                "--epochs", str(EPOCHS), "--save", "--csv", str(out_csv), "--plot", str(out_png)]
        rc, text = _on_terminal([sys.executable, "-m", "edgetune.cli", *args])
        assert rc == 0, text[-3000:]
        rows = read_csv(out_csv)
        evs = [r["ev"] for r in rows]
        assert evs[0] == "boot" and evs.count("collect") == len(labels) and "save" in evs, evs
        # The recipe (docs/device-app.md): per class the last windows are the check set; SGD
        # epochs may stop early (patience) and roll back; a final guard keeps or restores.
        start = next(r for r in rows if r["ev"] == "start")
        per_epoch, held = start["samples"], start["held"]
        assert held >= len(labels) and per_epoch + held <= len(labels) * N, start
        train_rows = [r for r in rows if r["ev"] == "train"]
        assert train_rows and len(train_rows) % per_epoch == 0 and len(train_rows) <= EPOCHS * per_epoch
        evals = [r for r in rows if r["ev"] == "eval"]
        assert evals and all(r["n"] == held for r in evals)
        first = next(r for r in rows if r["ev"] == "recipe" and r.get("stage") == "before")
        final = [r for r in rows if r["ev"] == "guard" and r.get("stage") == "final"][-1]
        assert final["kept"] and final["after"] > first["acc"], (first, final)
        # On a terminal, train draws the live bar itself (tqdm, from the @et lines it reads).
        steps = len(train_rows)
        assert re.search(rf"\| {steps}/\d+ \[", text) and "step/s, loss=" in text and "heap=" in text, text[-3000:]
        assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out_png.stat().st_size > 10_000

        # A new mpremote session soft-resets: the saved weights are restored at boot.
        rows2 = parse_text(mpremote(port, "exec", score))
        assert next(r for r in rows2 if r["ev"] == "boot")["restored"] is True
        after = next(r["acc"] for r in rows2 if r["ev"] == "score")
        print(f"check-set accuracy {first['acc']:.3f} -> {final['after']:.3f}; "
              f"adaptation session {before:.3f} -> {after:.3f}")
        assert after > before

        # A failure on the board is named; no plot without training rows.
        bad_csv, bad_png = tmp_path / "bad.csv", tmp_path / "bad.png"
        p = cli("train", "--port", port, "--label", "NOPE", "--csv", str(bad_csv), "--plot", str(bad_png))
        assert p.returncode != 0 and "the board raised ValueError: unknown class 'NOPE'" in p.stderr, p.stderr
        assert not bad_png.exists() and [r["ev"] for r in read_csv(bad_csv)] == ["boot"]

        text = _repl(port)
        assert "classes 7 42" in text, text  # the app booted by the last exec is still there

        emu.send_signal(signal.SIGTERM)
        emu.wait(15)
        deadline = time.monotonic() + 5
        while any(_alive(q) for q in qemu) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(q) for q in qemu)
    finally:
        if emu.poll() is None:
            emu.kill()
            emu.wait()


def test_train_on_a_missing_port_writes_nothing(tmp_path):
    """A failed `edgetune train` says what is wrong and leaves no empty CSV or PNG."""
    out_csv, out_png = tmp_path / "out.csv", tmp_path / "out.png"
    p = cli("train", "--port", str(tmp_path / "ttyNOPE"), "--label", "PEN", "--csv", str(out_csv),
             "--plot", str(out_png), timeout=60)
    assert p.returncode != 0 and "ttyNOPE does not exist" in p.stderr, p.stderr
    assert not out_csv.exists() and not out_png.exists()
