"""`edgetune monitor` (host/edgetune/device/monitor.py) with real pyserial over real pseudo-terminals.

The device side is the real device app on the unix-port MicroPython (RP2040 heap budget); a
relay copies its stdout into the pty master, as a board's UART would carry it (and keeps the
exact bytes as ground truth). The monitor runs as `python -m edgetune.cli monitor` and opens the
pty's slave through a stable symlink (like /dev/serial/by-id/...), with pyserial.

- every emitted `@et` line becomes exactly one CSV row, equal to the emitted JSON object;
  other lines pass through to stdout; the PNG is written at the end;
- a forced disconnect mid-run (the pty master closed: the port vanishes, reads fail; then a new
  pty appears under the same name) loses no row that was fully received before it, stores no
  half row, and the rows sent after the reconnect arrive too.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import tty
from pathlib import Path

import pytest

from edgetune.device import emulate
from edgetune.device.monitor import COLUMNS, LineSplitter, parse_line, parse_text, read_csv, row_to_csv

from tests.support.deviceapp import demo, demo_assets

REPO = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------------- unit level


def test_parse_and_csv_round_trip(tmp_path):
    rows = [
        {"t_ms": 1, "ev": "train", "step": 3, "loss": 0.41, "acc": None, "heap_free": 1000, "arena": 14024,
         "peak": 14024, "elapsed_ms": 12},
        {"t_ms": 2, "ev": "warning", "msg": 'bad, "quoted" file'},
        {"t_ms": 3, "ev": "boot", "restored": False, "impl": "c", "weird": [1, 2.5e-9]},
    ]
    lines = ["MicroPython v1.25 on unix", *("@et " + __import__("json").dumps(r) for r in rows), "@et {broken",
             ">>> "]
    assert parse_text("\n".join(lines)) == rows
    assert parse_line("@et {broken") is None and parse_line("plain") is None
    from edgetune.device.monitor import CsvLog

    log = CsvLog(tmp_path / "x.csv")
    for r in rows:
        log.add(r)
    log.close()
    assert read_csv(tmp_path / "x.csv") == rows
    assert len(row_to_csv(rows[0])) == len(COLUMNS) + 1
    sp = LineSplitter()
    assert sp.feed(b"ab\r\ncd") == ["ab"] and sp.feed(b"e\nf") == ["cde"]
    assert sp.drop_partial() == b"f" and sp.feed(b"g\n") == ["g"]


# ------------------------------------------------------------------------------- over a pty


class Port:
    """A pseudo-terminal standing in for a board's serial port, reachable under a fixed name."""

    def __init__(self, link: Path):
        self.link = link
        self.master = -1
        self.plug()

    def plug(self) -> None:
        self.master, slave = os.openpty()
        tty.setraw(slave)  # bytes in, bytes out (no echo, no newline translation)
        name = os.ttyname(slave)
        os.close(slave)
        tmp = self.link.with_name(self.link.name + ".new")
        if tmp.is_symlink():
            tmp.unlink()
        tmp.symlink_to(name)
        os.replace(tmp, self.link)

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.master, view):]

    def unplug(self) -> None:
        os.close(self.master)
        self.master = -1


class Monitor:
    """`edgetune monitor` as a subprocess; stdout/stderr collected by threads."""

    def __init__(self, *args: str):
        self.proc = subprocess.Popen([sys.executable, "-m", "edgetune.cli", "monitor", "--no-progress", *args],
                                     cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
        self.out: list[str] = []
        self.err: list[str] = []
        for stream, sink in ((self.proc.stdout, self.out), (self.proc.stderr, self.err)):
            threading.Thread(target=lambda s=stream, k=sink: k.extend(iter(s.readline, "")), daemon=True).start()

    def wait_for(self, text: str, count: int = 1, timeout: float = 60) -> None:
        end = time.monotonic() + timeout
        while sum(text in s for s in self.err) < count:
            if time.monotonic() > end or self.proc.poll() is not None:
                pytest.fail(f"monitor never said {text!r}: {''.join(self.err)}")
            time.sleep(0.02)

    def finish(self, timeout: float = 60) -> int:
        rc = self.proc.wait(timeout=timeout)
        time.sleep(0.1)  # let the reader threads drain
        return rc


def _wait_rows(path: Path, n: int, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while not path.exists() or len(read_csv(path)) < n:
        if time.monotonic() > end:
            pytest.fail(f"CSV never reached {n} rows")
        time.sleep(0.02)


@pytest.fixture(scope="module")
def assets(micropython) -> dict:
    return demo_assets()


def device_code(assets: dict, weights: Path) -> str:
    code = demo.adapt_script(assets["etm"], assets["adapt"], assets["eval"], weights, n=4, epochs=2, lr=0.01, seed=0)
    # score() on the full eval session is not what this test is about: keep the run short
    code = code.replace(f"app.score({str(assets['eval'])!r})", f"app.score({str(assets['eval'])!r}, limit=40)")
    return "print('MicroPython REPL text, passed through')\n" + code + "print('>>> bye')\nimport log\nlog.emit('done')\n"


def test_monitor_rows_equal_emitted_lines_through_pty(assets, tmp_path):
    port = Port(tmp_path / "ttyDEVICE")
    csv_path, png = tmp_path / "log.csv", tmp_path / "log.png"
    mon = Monitor("--port", str(port.link), "--csv", str(csv_path), "--plot", str(png), "--until", "done")
    mon.wait_for("connected to")
    script = tmp_path / "device.py"
    script.write_text(device_code(assets, tmp_path / "w.etw"))
    cmd, env = demo.device_cmd(emulate.find_micropython(), script, demo.heap_budget("rp2040"))
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    sent = bytearray()
    assert proc.stdout is not None
    while chunk := proc.stdout.read1(4096):  # relay: the device's UART output into the pty
        sent += chunk
        port.write(chunk)
    assert proc.wait() == 0, proc.stderr.read().decode()
    assert mon.finish() == 0, "".join(mon.err)
    port.unplug()
    emitted = parse_text(sent.decode())
    assert len(emitted) > 40 and emitted[-1]["ev"] == "done"
    assert read_csv(csv_path) == emitted
    assert "MicroPython REPL text, passed through\n" in mon.out and ">>> bye\n" in mon.out
    assert not any(s.startswith("@et ") for s in mon.out)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def captured(assets, tmp_path_factory) -> list[str]:
    """The device app's output lines from one short unix-port run."""
    d = tmp_path_factory.mktemp("captured")
    script = d / "device.py"
    script.write_text(device_code(assets, d / "w.etw"))
    cmd, env = demo.device_cmd(emulate.find_micropython(), script, demo.heap_budget("rp2040"))
    proc = subprocess.run(cmd, env=env, cwd=d, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines(keepends=True)


@pytest.mark.parametrize("cut_at", [0.3, 0.7])
def test_disconnect_mid_run_loses_no_received_row(captured, tmp_path, cut_at):
    log_idx = [i for i, s in enumerate(captured) if s.startswith("@et ")]
    k = log_idx[int(len(log_idx) * cut_at)]  # this line is cut in half by the disconnect
    before, cut, after = captured[:k], captured[k], captured[k + 1:]
    port = Port(tmp_path / "ttyACM")
    csv_path = tmp_path / "log.csv"
    mon = Monitor("--port", str(port.link), "--csv", str(csv_path), "--plot", str(tmp_path / "p.png"),
                  "--until", "done", "--reconnect-timeout", "30")
    mon.wait_for("connected to")
    port.write("".join(before).encode())
    n_before = len(parse_text("".join(before)))
    _wait_rows(csv_path, n_before)  # fully received (and already on disk)
    port.write(cut.encode()[: len(cut) // 2])
    time.sleep(0.1)
    port.unplug()  # the cable is pulled mid-line
    mon.wait_for("disconnected")
    assert len(read_csv(csv_path)) == n_before  # nothing lost, no half row stored
    port.plug()  # the board comes back under the same name
    mon.wait_for("reconnected to")
    port.write("".join(after).encode())
    assert mon.finish() == 0, "".join(mon.err)
    port.unplug()
    expected = parse_text("".join(before)) + parse_text("".join(after))
    assert read_csv(csv_path) == expected
    assert parse_line(cut) not in read_csv(csv_path)
    summary = next(s for s in mon.err if s.startswith("monitor: ") and "log rows" in s)
    assert "1 disconnects" in summary
