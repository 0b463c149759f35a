"""`edgetune deploy | train | repl`: drive a board's MicroPython through mpremote.

    edgetune deploy --port /dev/ttyACM0 --model runs/small.etm [--board rp2040]
        copies firmware/*.py, the model (as model.etm) and config.json (the board's "imu"
        section of boards/<board>/board.json) to the board's filesystem; main.py boots the app.
    edgetune train --port /dev/ttyACM0 --label PEN --label ABD [--n 20] [--epochs 5] [--lr 0.01]
        [--target 0.9] [--save] [--csv log.csv] [--plot log.png]
        runs app.collect(label, n) for each label, app.train(...) (and app.save()) on the board
        via `mpremote exec`; the @et lines go through the monitor's parser (progress, CSV, PNG).
    edgetune repl --port /dev/ttyACM0

Thin on purpose: every command is an mpremote argv built by a pure function (`deploy_argv`,
`train_code`, `train_argv`, `repl_argv`), which is what the tests check; `--dry-run` prints it.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
FIRMWARE_DIR = REPO_ROOT / "firmware"
# device-side names (app.py's defaults)
DEVICE_MODEL = "model.etm"
DEVICE_CONFIG = "config.json"


def mpremote() -> list[str]:
    """The mpremote command of this Python environment."""
    return [sys.executable, "-m", "mpremote"]


def firmware_files(firmware_dir: Path = FIRMWARE_DIR) -> list[Path]:
    return sorted(p for p in firmware_dir.glob("*.py") if p.name != "manifest.py")


def device_config(board: str) -> dict:
    """config.json for the device: the board's IMU section (boards/<board>/board.json)."""
    cfg = json.loads((REPO_ROOT / "boards" / board / "board.json").read_text())
    return {"board": board, "imu": cfg.get("imu", {"bus": "replay"})}


def deploy_argv(port: str, model: str | os.PathLike, config: str | os.PathLike,
                files: Sequence[str | os.PathLike]) -> list[str]:
    """One chained mpremote call: copy the app files, the model and the config, then soft-reset."""
    argv = [*mpremote(), "connect", port, "fs", "cp", *(str(f) for f in files), ":"]
    argv += ["+", "fs", "cp", str(model), ":" + DEVICE_MODEL]
    argv += ["+", "fs", "cp", str(config), ":" + DEVICE_CONFIG]
    argv += ["+", "soft-reset"]
    return argv


def train_code(labels: Sequence[str], n: int = 20, epochs: int = 5, lr: float = 0.01,
               target: float | None = None, save: bool = False) -> str:
    """The MicroPython statements `edgetune train` runs on the board."""
    lines = ["import app", "app.S or app.boot()"]
    lines += [f"app.collect({lab!r}, n={int(n)})" for lab in labels]
    lines.append(f"app.train(epochs={int(epochs)}, lr={float(lr)!r}, target={target!r})")
    if save:
        lines.append("app.save()")
    return "\n".join(lines)


def train_argv(port: str, code: str) -> list[str]:
    return [*mpremote(), "connect", port, "exec", code]


def repl_argv(port: str) -> list[str]:
    return [*mpremote(), "connect", port, "repl"]


def _run(argv: list[str], dry_run: bool) -> int:
    if dry_run:
        print(shlex.join(argv))
        return 0
    return subprocess.call(argv)


def deploy_cli(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="edgetune deploy", description="copy the device app, a model and the "
                                "board config to a board (mpremote)")
    p.add_argument("--port", required=True)
    p.add_argument("--model", required=True, help=".etm model file")
    p.add_argument("--board", default="rp2040", help="board whose imu config to install (boards/*/board.json)")
    p.add_argument("--dry-run", action="store_true", help="print the mpremote command only")
    a = p.parse_args(argv)
    if not Path(a.model).is_file():
        print(f"edgetune deploy: no model file {a.model}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="edgetune-deploy-") as tmp:
        cfg = Path(tmp) / DEVICE_CONFIG
        cfg.write_text(json.dumps(device_config(a.board)))
        return _run(deploy_argv(a.port, a.model, cfg, firmware_files()), a.dry_run)


def train_cli(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="edgetune train", description="collect labelled windows and fine-tune "
                                "on a board over its REPL (mpremote exec)")
    p.add_argument("--port", required=True)
    p.add_argument("--label", action="append", required=True, help="class to collect (repeatable, in order)")
    p.add_argument("--n", type=int, default=20, help="windows per label")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--target", type=float, help="stop early at this held-back accuracy")
    p.add_argument("--save", action="store_true", help="app.save() afterwards (restored at boot)")
    p.add_argument("--csv", help="log rows to this CSV")
    p.add_argument("--plot", help="PNG of the run")
    p.add_argument("--dry-run", action="store_true", help="print the mpremote command only")
    a = p.parse_args(argv)
    cmd = train_argv(a.port, train_code(a.label, a.n, a.epochs, a.lr, a.target, a.save))
    if a.dry_run:
        return _run(cmd, True)
    from .monitor import CsvLog, parse_line, plot
    from .outpaths import check_file

    try:  # before the board spends minutes collecting and training
        for path, what in ((a.csv, "--csv"), (a.plot, "--plot")):
            if path:
                check_file(path, what)
    except ValueError as e:
        print(f"edgetune train: error: {e}", file=sys.stderr)
        return 2
    log = None  # opened at the first log row: a run that fails before it leaves no empty CSV
    rows = []
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, bufsize=1)
    assert proc.stdout is not None
    for line in proc.stdout:
        row = parse_line(line)
        if row is None:
            sys.stdout.write(line)
            continue
        rows.append(row)
        if a.csv and log is None:
            log = CsvLog(a.csv)
        if log:
            log.add(row)
        if row.get("ev") in ("eval", "score", "end", "collect"):
            print(f"{row['ev']}: " + ", ".join(f"{k}={v}" for k, v in row.items() if k not in ("ev", "t_ms")))
    rc = proc.wait()
    if log:
        log.close()
    if a.plot and rows:
        plot(rows, a.plot)
    if not rows and (a.csv or a.plot):
        print(f"edgetune train: the board sent no @et log rows (exit status {rc}); wrote no "
              + " or ".join(x for x in (a.csv, a.plot) if x), file=sys.stderr)
    return rc


def repl_cli(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="edgetune repl", description="the board's MicroPython REPL (mpremote)")
    p.add_argument("--port", default="auto", help="serial port (default: mpremote's auto)")
    p.add_argument("--dry-run", action="store_true")
    a = p.parse_args(argv)
    return _run(repl_argv(a.port), a.dry_run)
