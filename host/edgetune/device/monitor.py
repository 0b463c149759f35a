"""`edgetune monitor --port PORT [--csv out.csv] [--plot out.png]`: the device's `@et` log stream.

Reads a serial port with pyserial (a board's USB/UART REPL, QEMU's `-serial pty`, or the
pseudo-terminal `make demo` wires the unix port to), picks out the `@et {json}` lines of
docs/device-app.md §4, shows live progress (tqdm: loss, accuracy, free heap), passes every
other line (REPL output, tracebacks) through to stdout, and survives the port going away:
it keeps what it has, waits for the port to come back (same path, e.g. a /dev/serial/by-id
link) and goes on. Every fully received log line becomes one CSV row immediately (appended and
flushed), so a disconnect or a crash loses at most the line that was in flight; a line cut by
a disconnect is dropped, never stored half. When the monitor ends (`--until EV`, idle timeout,
Ctrl-C, or the port staying away) it writes a PNG of loss / accuracy / memory over the steps.
The port must exist when the monitor starts: a missing or unopenable port fails at once, and a
run that received no log row writes no CSV and no PNG.

The same parser reads captured output (`parse_text`), e.g. of the unix port in tests.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TextIO

PREFIX = "@et "
# CSV columns: the keys of section 8 first, then `extra` (JSON object of any other keys).
COLUMNS = ("t_ms", "ev", "step", "epoch", "loss", "acc", "heap_free", "heap_used", "arena", "peak", "elapsed_ms")
EXTRA = "extra"


def parse_line(line: str) -> dict[str, Any] | None:
    """The JSON object of one `@et` line, or None for any other line (or a broken log line)."""
    line = line.rstrip("\r\n")
    i = line.find(PREFIX)
    if i < 0:
        return None
    try:
        obj = json.loads(line[i + len(PREFIX):])
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


def parse_text(text: str) -> list[dict[str, Any]]:
    """Every log row in captured output (unix-port stdout, a saved serial capture)."""
    return [r for r in (parse_line(s) for s in text.splitlines()) if r is not None]


@dataclass
class LineSplitter:
    """Bytes in, complete lines out. A partial line waits for its newline; `drop_partial`
    throws it away (the connection it came from is gone)."""

    partial: bytes = b""
    dropped: int = 0

    def feed(self, data: bytes) -> list[str]:
        buf = self.partial + data
        *lines, self.partial = buf.split(b"\n")
        return [s.rstrip(b"\r").decode("utf-8", "replace") for s in lines]

    def drop_partial(self) -> bytes:
        p, self.partial = self.partial, b""
        if p:
            self.dropped += 1
        return p


def _cell(v: Any) -> str:
    if isinstance(v, str):
        return v
    return json.dumps(v)


def _uncell(s: str) -> Any:
    try:
        return json.loads(s)
    except ValueError:
        return s


def row_to_csv(row: dict[str, Any]) -> list[str]:
    """CSV cells of a log row: COLUMNS (empty = key absent), then the other keys as JSON."""
    extra = {k: v for k, v in row.items() if k not in COLUMNS}
    return [_cell(row[k]) if k in row else "" for k in COLUMNS] + [json.dumps(extra) if extra else ""]


def read_csv(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The log rows of a monitor CSV (inverse of row_to_csv: equal to the emitted objects)."""
    rows = []
    with open(path, newline="") as f:
        r = csv.reader(f)
        header = next(r, None)
        if header is None:
            return rows
        for cells in r:
            row = {k: _uncell(c) for k, c in zip(header, cells) if k != EXTRA and c != ""}
            if len(cells) > len(COLUMNS) and cells[len(COLUMNS)]:
                row.update(json.loads(cells[len(COLUMNS)]))
            rows.append(row)
    return rows


class CsvLog:
    """Append-only CSV of log rows, flushed after every row."""

    def __init__(self, path: str | os.PathLike):
        self.f = open(path, "w", newline="")
        self.w = csv.writer(self.f)
        self.w.writerow([*COLUMNS, EXTRA])
        self.f.flush()

    def add(self, row: dict[str, Any]) -> None:
        self.w.writerow(row_to_csv(row))
        self.f.flush()

    def close(self) -> None:
        self.f.close()


class Progress:
    """Live tqdm bar over training steps with loss / accuracy / free heap."""

    def __init__(self, enabled: bool | None, file: TextIO):
        from tqdm import tqdm

        # enabled None: only when `file` is a terminal (tqdm's disable=None)
        self.bar = tqdm(total=None, unit="step", desc="train", disable=None, file=file,
                        dynamic_ncols=True, leave=True) if enabled is not False else None

    def row(self, r: dict[str, Any]) -> None:
        if self.bar is None:
            return
        ev = r.get("ev")
        if ev == "start" and isinstance(r.get("steps"), int):
            self.bar.reset(total=r["steps"])
        elif ev == "train":
            self.bar.update(1)
            post = {}
            if isinstance(r.get("loss"), (int, float)):
                post["loss"] = f"{r['loss']:.3f}"
            if isinstance(r.get("acc"), (int, float)):
                post["acc"] = f"{r['acc']:.3f}"
            if isinstance(r.get("heap_free"), int):
                post["heap"] = r["heap_free"]
            self.bar.set_postfix(post, refresh=False)

    def write(self, text: str, file: TextIO) -> None:
        if self.bar is not None and not self.bar.disable:
            self.bar.write(text, file=file)
        else:
            print(text, file=file, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@dataclass
class MonitorResult:
    rows: list[dict[str, Any]] = field(default_factory=list)
    passthrough: int = 0  # non-log lines
    bad: int = 0  # lines with the prefix but no valid JSON object
    disconnects: int = 0
    dropped_partial: int = 0  # half lines thrown away at a disconnect
    reason: str = ""


def monitor(port: str, *, baud: int = 115200, csv_path: str | None = None, plot_path: str | None = None,
            until: str | None = None, idle: float | None = None, reconnect_timeout: float = 10.0,
            progress: bool | None = None, out: TextIO = sys.stdout, err: TextIO = sys.stderr,
            open_port: Callable[..., Any] | None = None) -> MonitorResult:
    """Read `port` until a row with ev == until, `idle` seconds without data, or the port staying
    unavailable for `reconnect_timeout` seconds after a disconnect. A port that cannot be opened
    at the start ends the monitor at once (reason "port unavailable: ..."). The CSV is created
    with the first log row and the PNG written only if there are rows. Returns what was received."""
    import serial

    opener = open_port or (lambda: serial.Serial(port, baud, timeout=0.05))
    res = MonitorResult()
    split = LineSplitter()
    if open_port is None and not os.path.exists(port):
        res.reason = (f"port unavailable: {port} does not exist; check the name (a board: ls /dev/ttyACM* "
                      "/dev/ttyUSB*; the emulated board: the pty `edgetune emulate --board qemu` prints)")
        print(f"monitor: {res.reason}", file=err, flush=True)
        return res
    log = None
    bar = Progress(progress, out)
    ser = None
    gone_since: float | None = time.monotonic()
    last_data = time.monotonic()
    try:
        while True:
            if ser is None:
                try:
                    ser = opener()
                except (serial.SerialException, OSError) as e:
                    if not res.disconnects and open_port is None:  # never connected: say why at once
                        res.reason = f"port unavailable: cannot open {port}: {e}"
                        print(f"monitor: {res.reason}", file=err, flush=True)
                        break
                    if time.monotonic() - (gone_since or 0) > reconnect_timeout:
                        res.reason = "port unavailable"
                        break
                    time.sleep(0.05)
                    continue
                # after the open (pyserial flushes the input then): from here nothing is lost
                print(f"monitor: {'reconnected' if res.disconnects else 'connected'} to {port}", file=err, flush=True)
                gone_since = None
                last_data = time.monotonic()
            try:
                data = ser.read(4096)
            except (serial.SerialException, OSError, TypeError):
                # TypeError: pyserial can trip over a descriptor closed under it
                try:
                    ser.close()
                except Exception:  # noqa: BLE001 - the port is gone anyway
                    pass
                ser = None
                res.disconnects += 1
                if split.drop_partial():
                    res.dropped_partial += 1
                print(f"monitor: {port} disconnected; waiting up to {reconnect_timeout:g} s for it",
                      file=err, flush=True)
                gone_since = time.monotonic()
                continue
            now = time.monotonic()
            if not data:
                if idle is not None and now - last_data > idle:
                    res.reason = "idle"
                    break
                continue
            last_data = now
            stop = False
            for text in split.feed(data):
                row = parse_line(text)
                if row is None:
                    if PREFIX in text:
                        res.bad += 1
                    res.passthrough += 1
                    bar.write(text, out)
                    continue
                res.rows.append(row)
                if csv_path and log is None:
                    log = CsvLog(csv_path)
                if log:
                    log.add(row)
                bar.row(row)
                if until is not None and row.get("ev") == until:
                    stop = True
            if stop:
                res.reason = f"ev {until}"
                break
    except KeyboardInterrupt:
        res.reason = "interrupted"
    finally:
        bar.close()
        if ser is not None:
            ser.close()
        if log:
            log.close()
        res.dropped_partial = max(res.dropped_partial, split.dropped)
    if plot_path and res.rows:
        plot(res.rows, plot_path)
    return res


def _steps(rows: Iterable[dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
    """(x, row): x is the row's step, offset so that it keeps growing across device reboots
    (a `boot` row starts a new session at the highest x so far)."""
    out, offset, high = [], 0, 0
    for r in rows:
        if r.get("ev") == "boot":
            offset = high
        s = r.get("step")
        x = offset + s if isinstance(s, int) else (out[-1][0] if out else 0)
        high = max(high, x)
        out.append((x, r))
    return out


def plot(rows: list[dict[str, Any]], path: str | os.PathLike) -> None:
    """PNG: loss (train steps, moving average, evaluations), accuracy (held-back evaluations and
    scored sessions), memory (live heap after gc, arena, arena peak, heap size)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = _steps(rows)

    def series(key: str, *evs: str) -> tuple[list[int], list[float]]:
        pts = [(x, r[key]) for x, r in xs
               if (not evs or r.get("ev") in evs) and isinstance(r.get(key), (int, float))
               and not isinstance(r.get(key), bool)]
        return [p[0] for p in pts], [p[1] for p in pts]

    fig, ax = plt.subplots(3, 1, figsize=(8, 8), sharex=True)
    x, y = series("loss", "train")
    ax[0].plot(x, y, lw=0.6, alpha=0.35, label="train step")
    if len(y) >= 2:
        k = max(1, min(25, len(y) // 10))
        avg = [sum(y[max(0, i - k + 1):i + 1]) / len(y[max(0, i - k + 1):i + 1]) for i in range(len(y))]
        ax[0].plot(x, avg, lw=1.5, label=f"train, mean of {k}")
    x, y = series("loss", "eval")
    ax[0].plot(x, y, "o-", label="held-back eval")
    ax[0].set_ylabel("loss")
    ax[0].legend()
    x, y = series("acc", "eval")
    ax[1].plot(x, y, "o-", label="held-back windows")
    x, y = series("acc", "score")
    ax[1].plot(x, y, "s", ms=9, label="scored session")
    ax[1].set_ylabel("accuracy")
    ax[1].set_ylim(0, 1.02)
    ax[1].legend()
    x, y = series("heap_used")
    ax[2].plot(x, [v / 1024 for v in y], "o-", label="heap in use (after gc)")
    for key, style in (("arena", "--"), ("peak", ":")):
        x, y = series(key)
        ax[2].plot(x, [v / 1024 for v in y], style, label=f"{key}")
    x, y = series("heap_total", "boot")
    if y:
        ax[2].axhline(y[0] / 1024, color="k", lw=0.8, label="heap size")
    ax[2].set_ylabel("KiB")
    ax[2].set_xlabel("training step")
    ax[2].legend(fontsize="small")
    fig.suptitle("edgetune on-device fine-tuning")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def cli(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="edgetune monitor", description=__doc__.splitlines()[0])
    p.add_argument("--port", required=True, help="serial port (e.g. /dev/ttyACM0, /dev/pts/3)")
    p.add_argument("--baud", type=int, default=115200)
    p.add_argument("--csv", help="write every log row to this CSV as it arrives")
    p.add_argument("--plot", help="PNG of loss / accuracy / memory when the monitor ends")
    p.add_argument("--until", help="stop after a log row with this ev (e.g. done, end)")
    p.add_argument("--idle", type=float, help="stop after this many seconds without data")
    p.add_argument("--reconnect-timeout", type=float, default=10.0,
                   help="seconds to wait for a vanished port before giving up (default 10)")
    p.add_argument("--no-progress", action="store_true", help="no live progress bar")
    a = p.parse_args(argv)
    res = monitor(a.port, baud=a.baud, csv_path=a.csv, plot_path=a.plot, until=a.until, idle=a.idle,
                  reconnect_timeout=a.reconnect_timeout, progress=False if a.no_progress else None)
    wrote = (f"; csv {a.csv}" if a.csv else "") + (f"; plot {a.plot}" if a.plot else "")
    if not res.rows and wrote:
        wrote = "; no CSV or plot written (no log rows)"
    print(f"monitor: {len(res.rows)} log rows, {res.passthrough} other lines, {res.disconnects} disconnects"
          f" ({res.reason or 'end'})" + wrote, file=sys.stderr)
    return 0 if res.rows or res.reason.startswith("ev") else 1
