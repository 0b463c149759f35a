"""`edgetune deploy | train | repl`: drive a board's MicroPython through mpremote.

    edgetune deploy --port /dev/ttyACM0 --model runs/small.etm [--board auto] [--session s.csv]
        copies firmware/*.py (only main.py when the firmware has the app frozen in), the model
        (as model.etm) and config.json (the board's "imu" section of boards/<board>/board.json;
        --board auto asks the board its sys.platform) to the board's filesystem, with --session
        a recorded session as session.csv for the replay sensor, then boots the app once to
        check it; main.py boots it at every reset.
    edgetune train --port /dev/ttyACM0 --label PEN --label ABD [--n 20] [--epochs 5] [--lr 0.01]
        [--target 0.9] [--no-calibrate] [--no-refit] [--no-sgd] [--no-guard] [--no-refit-all] [--save]
        [--csv log.csv] [--plot log.png]
        runs app.collect(label, n) for each label, app.train(...) (the default recipe: calibrate ->
        refit -> SGD with rollback -> guard) (and app.save()) on the board
        via `mpremote exec`; the @et lines go through the monitor's parser: a live progress bar
        (this process owns the port: no `edgetune monitor` at the same time), the CSV and PNG
        (only with log rows to put in them); a failure says what the board reported.
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

REPO_ROOT = Path(__file__).resolve().parents[3]
FIRMWARE_DIR = REPO_ROOT / "firmware"
# device-side names (app.py's defaults)
DEVICE_MODEL = "model.etm"
DEVICE_CONFIG = "config.json"
DEVICE_SESSION = "session.csv"
# sys.platform -> boards/<name> (edgetune deploy --board auto)
PLATFORM_BOARDS = {"rp2": "rp2040", "esp32": "esp32s3", "qemu": "qemu", "linux": "unix"}
# What deploy asks the board first: its platform and whether the app is frozen in the firmware
# or installed in /lib by `edgetune install` (importable with only those on sys.path).
PROBE_CODE = ("import sys\nsys.path[:] = ['.frozen', '/lib']\ntry:\n    import app\n    frozen = 1\n"
              "except ImportError:\n    frozen = 0\nexcept Exception:\n    frozen = 1\nprint('ETPROBE', sys.platform, frozen)")
# Removes the app's source files from the filesystem (where they would shadow the frozen app).
REMOVE_CODE = "import os\nfor f in {names!r}:\n    try:\n        os.remove(f)\n    except OSError:\n        pass"


def mpremote() -> list[str]:
    """The mpremote command of this Python environment."""
    return [sys.executable, "-m", "mpremote"]


def firmware_files(firmware_dir: Path = FIRMWARE_DIR) -> list[Path]:
    return sorted(p for p in firmware_dir.glob("*.py") if p.name != "manifest.py")


def device_config(board: str, session: bool = False) -> dict:
    """config.json for the device: the board's IMU section (boards/<board>/board.json), or with
    session=True the replay sensor looping over session.csv."""
    cfg = json.loads((REPO_ROOT / "boards" / board / "board.json").read_text())
    imu = {"bus": "replay", "path": DEVICE_SESSION, "loop": True} if session else cfg.get("imu", {"bus": "replay"})
    return {"board": board, "imu": imu}


BOOT_CHECK = "import app\napp.boot()\nprint('ETBOOT', len(app.S.names), app.S.ring.capacity)"


def deploy_argv(port: str, model: str | os.PathLike, config: str | os.PathLike,
                files: Sequence[str | os.PathLike], session: str | os.PathLike | None = None,
                remove: Sequence[str] = ()) -> list[str]:
    """One chained mpremote call: copy the app files, the model, the config (and the session),
    soft-reset (a fresh heap, as at a real boot: a native edgetune.mpy needs one ~60 KB block),
    boot the app once (BOOT_CHECK: a failure shows at once), then soft-reset."""
    argv = [*mpremote(), "connect", port]
    if files:
        argv += ["fs", "cp", *(str(f) for f in files), ":", "+"]
    argv += ["fs", "cp", str(model), ":" + DEVICE_MODEL]
    argv += ["+", "fs", "cp", str(config), ":" + DEVICE_CONFIG]
    if session is not None:
        argv += ["+", "fs", "cp", str(session), ":" + DEVICE_SESSION]
    if remove:
        argv += ["+", "exec", REMOVE_CODE.format(names=list(remove))]
    argv += ["+", "soft-reset", "+", "exec", BOOT_CHECK, "+", "soft-reset"]
    return argv


def probe_board(port: str, timeout: float = 60) -> tuple[str, bool]:
    """(sys.platform, app frozen in the firmware) of the board on `port` (mpremote exec).
    Raises RuntimeError with mpremote's message when the board does not answer."""
    try:
        r = subprocess.run([*mpremote(), "connect", port, "exec", PROBE_CODE], capture_output=True, text=True,
                           timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"no answer from {port} within {timeout:g} s") from None
    for line in r.stdout.splitlines():
        if line.startswith("ETPROBE "):
            _, plat, frozen = line.split()
            return plat, frozen == "1"
    msg = (r.stderr or r.stdout).strip().splitlines()
    raise RuntimeError(msg[-1] if msg else f"mpremote exited with {r.returncode}")


def _port_problem(port: str) -> str | None:
    """Why `port` cannot be a serial port, if that is visible without opening it."""
    if port.startswith("/") and not os.path.exists(port):
        return (f"{port} does not exist; check the name (a board: ls /dev/ttyACM* /dev/ttyUSB*; the emulated "
                "board: the pty `edgetune emulate --board qemu` prints)")
    return None


def train_code(labels: Sequence[str], n: int = 20, epochs: int = 5, lr: float = 0.01,
               target: float | None = None, save: bool = False, calibrate: bool = True, refit: bool = True,
               sgd: bool = True, guard: bool = True, refit_all: bool = True) -> str:
    """The MicroPython statements `edgetune train` runs on the board: collect, then the default
    recipe (app.train: calibrate -> refit -> SGD with rollback -> guard; steps switchable)."""
    lines = ["import app", "app.S or app.boot()"]
    lines += [f"app.collect({lab!r}, n={int(n)})" for lab in labels]
    off = "".join(f", {k}=False" for k, v in (("calibrate", calibrate), ("refit", refit), ("sgd", sgd),
                                               ("guard", guard), ("refit_all", refit_all)) if not v)
    lines.append(f"app.train(epochs={int(epochs)}, lr={float(lr)!r}, target={target!r}{off})")
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
    p.add_argument("--board", default="auto", help="board whose imu config to install (boards/*/board.json); "
                   "auto (default): from the board's sys.platform (rp2 -> rp2040, qemu -> qemu, esp32 -> esp32s3)")
    p.add_argument("--session", help="recorded session CSV (ax,ay,az,gx,gy,gz,label) to copy as session.csv; the "
                   "app's sensor then replays it (the emulated board has no sensor)")
    p.add_argument("--copy-app", action="store_true", help="copy firmware/*.py even when the firmware has the "
                   "app frozen in (the copies shadow it and cost heap)")
    p.add_argument("--dry-run", action="store_true", help="print the mpremote command only")
    a = p.parse_args(argv)
    err = lambda msg: print(f"edgetune deploy: {msg}", file=sys.stderr)  # noqa: E731
    if not Path(a.model).is_file():
        err(f"no model file {a.model}")
        return 2
    if a.session and not Path(a.session).is_file():
        err(f"no session file {a.session}")
        return 2
    files = firmware_files()
    remove: list[str] = []
    board_name = a.board
    if not a.dry_run:
        problem = _port_problem(a.port)
        if problem:
            err(problem)
            return 2
        try:
            plat, frozen = probe_board(a.port)
        except RuntimeError as e:
            err(f"the board on {a.port} did not answer: {e}")
            return 1
        if board_name == "auto":
            board_name = PLATFORM_BOARDS.get(plat, "")
            if not board_name:
                err(f"unknown board platform {plat!r}; pass --board (one of {', '.join(sorted(set(PLATFORM_BOARDS.values())))})")
                return 2
        if frozen and not a.copy_app:
            remove = [f.name for f in files if f.name != "main.py"]  # earlier --copy-app copies
            files = [f for f in files if f.name == "main.py"]
            print(f"edgetune deploy: the app is frozen in the {board_name} firmware (or installed in /lib); "
                  "copying main.py only (--copy-app copies firmware/*.py)", flush=True)
    elif board_name == "auto":
        board_name = "rp2040"
        print("# --board auto asks the board its sys.platform; shown for rp2040")
    if not (REPO_ROOT / "boards" / board_name / "board.json").is_file():
        err(f"unknown board {board_name!r}")
        return 2
    config = device_config(board_name, session=bool(a.session))
    if config["imu"].get("bus") == "replay" and not a.session:
        print(f"edgetune deploy: the {board_name} board's sensor replays {config['imu'].get('path', DEVICE_SESSION)}:"
              " pass --session FILE.csv to copy one", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="edgetune-deploy-") as tmp:
        cfg = Path(tmp) / DEVICE_CONFIG
        cfg.write_text(json.dumps(config))
        cmd = deploy_argv(a.port, a.model, cfg, files, a.session, remove)
        if a.dry_run:
            return _run(cmd, True)
        r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0 or "ETBOOT " not in r.stdout:
        out = (r.stdout + r.stderr).strip().splitlines()
        tail = "\n".join(out[-12:])
        err(f"deploying to {a.port} failed (mpremote exit {r.returncode}); the board said:\n{tail}")
        if "MemoryError" in tail and a.copy_app:
            err("the app's source files compile into the heap: deploy without --copy-app (the firmware has the "
                "app frozen in; that deploy also removes the copies)")
        return 1
    n_cls, cap = next(line.split()[1:] for line in r.stdout.splitlines() if line.startswith("ETBOOT "))
    print(f"edgetune deploy: {a.model} on the {board_name} board at {a.port}: the app boots ({n_cls} classes, "
          f"ring buffer of {cap} windows)" + (f"; sensor: replay of {a.session}" if a.session else ""))
    return 0


def train_cli(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="edgetune train", description="collect labelled windows and fine-tune "
                                "on a board over its REPL (mpremote exec)")
    p.add_argument("--port", required=True)
    p.add_argument("--label", action="append", required=True, help="class to collect (repeatable, in order)")
    p.add_argument("--n", type=int, default=20, help="windows per label")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--target", type=float, help="stop SGD early at this check-set accuracy")
    p.add_argument("--no-calibrate", dest="calibrate", action="store_false", help="recipe: skip the frame fit")
    p.add_argument("--no-refit", dest="refit", action="store_false", help="recipe: skip the classifier refit")
    p.add_argument("--no-sgd", dest="sgd", action="store_false", help="recipe: skip SGD with rollback")
    p.add_argument("--no-refit-all", dest="refit_all", action="store_false",
                   help="recipe: no last refit over every collected window after a kept refit")
    p.add_argument("--no-guard", dest="guard", action="store_false",
                   help="recipe: keep the result even if the check set did not improve")
    p.add_argument("--save", action="store_true", help="app.save() afterwards (restored at boot)")
    p.add_argument("--csv", help="log rows to this CSV")
    p.add_argument("--plot", help="PNG of the run")
    p.add_argument("--dry-run", action="store_true", help="print the mpremote command only")
    a = p.parse_args(argv)
    cmd = train_argv(a.port, train_code(a.label, a.n, a.epochs, a.lr, a.target, a.save, a.calibrate, a.refit,
                                        a.sgd, a.guard, a.refit_all))
    if a.dry_run:
        return _run(cmd, True)
    from ..outpaths import check_file

    try:  # before the board spends minutes collecting and training
        for path, what in ((a.csv, "--csv"), (a.plot, "--plot")):
            if path:
                check_file(path, what)
    except ValueError as e:
        print(f"edgetune train: error: {e}", file=sys.stderr)
        return 2
    problem = _port_problem(a.port)
    if problem:
        outs = [x for x in (a.csv, a.plot) if x]
        print(f"edgetune train: {problem}" + (f" (wrote no {' or '.join(outs)})" if outs else ""), file=sys.stderr)
        return 2
    return _train_stream(cmd, a)


def _train_stream(cmd: list[str], a: argparse.Namespace) -> int:
    """Run the training exec, show its progress live, keep its rows; say what failed."""
    from .monitor import CsvLog, Progress, parse_line, plot

    log = None
    rows: list[dict] = []
    other: list[str] = []
    bar = Progress(None, sys.stderr)  # a live bar when stderr is a terminal
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            row = parse_line(line)
            if row is None:
                other.append(line.rstrip("\r\n"))
                bar.write(other[-1], sys.stdout)
                continue
            rows.append(row)
            if a.csv and log is None:
                log = CsvLog(a.csv)
            if log:
                log.add(row)
            bar.row(row)
            if row.get("ev") in ("eval", "score", "end", "collect", "recipe", "guard", "rollback", "calibrate", "refit"):
                bar.write(f"{row['ev']}: " + ", ".join(f"{k}={v}" for k, v in row.items() if k not in ("ev", "t_ms")),
                          sys.stdout)
        rc = proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait()
        rc = 130
    finally:
        bar.close()
        if log:
            log.close()
    if a.plot and any(r.get("ev") == "train" for r in rows):
        plot(rows, a.plot)
    done = any(r.get("ev") == "end" for r in rows)
    if rc == 0 and done:
        return 0
    wrote = [f for f, ok in ((a.csv, log is not None), (a.plot, a.plot and any(r.get("ev") == "train" for r in rows)))
             if f and ok]
    last = next((t for t in reversed(other) if t.strip()), "")
    why = (f"the board raised {last.strip()}" if rc and "Error" in last else
           f"mpremote exited with {rc}: {last.strip() or 'no output'}" if rc else "the board never logged the end of training")
    if "failed to access" in last or "could not" in last.lower():
        why += " (is another program, e.g. `edgetune monitor` or a terminal, holding the port? one process owns a serial port)"
    outs = [x for x in (a.csv, a.plot) if x and x not in wrote]
    print(f"edgetune train: failed: {why}" + (f"; partial log in {', '.join(wrote)}" if wrote else "")
          + (f"; wrote no {' or '.join(outs)}" if outs else ""), file=sys.stderr)
    return rc or 1


def repl_cli(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="edgetune repl", description="the board's MicroPython REPL (mpremote)")
    p.add_argument("--port", default="auto", help="serial port (default: mpremote's auto)")
    p.add_argument("--dry-run", action="store_true")
    a = p.parse_args(argv)
    return _run(repl_argv(a.port), a.dry_run)
