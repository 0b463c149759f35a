"""Run MicroPython code on an emulated board: the real unix-port firmware built with our module.

`edgetune emulate --board unix SCRIPT.py [--heapsize 190K]` runs SCRIPT.py on
build/unix/micropython with the heap limited like the board's (``-X heapsize=``), so scripts
that fit on the unix port fit the board's MicroPython heap too. The default heap is the one
stated in boards/<board>/board.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
BOARDS_DIR = REPO_ROOT / "boards"
DEFAULT_UNIX_BINARY = REPO_ROOT / "build" / "unix" / "micropython"
ENV_BINARY = "EDGETUNE_MICROPYTHON"


class EmulatorMissing(FileNotFoundError):
    """The emulator binary has not been built."""


def find_micropython() -> Path:
    """Path of the unix-port MicroPython binary with the edgetune module.

    $EDGETUNE_MICROPYTHON overrides the default build/unix/micropython (repo-relative).
    Raises EmulatorMissing, saying how to build it, when the file is not there.
    """
    path = Path(os.environ.get(ENV_BINARY) or DEFAULT_UNIX_BINARY)
    if not path.is_file() or not os.access(path, os.X_OK):
        how = f"${ENV_BINARY} points at a missing file" if os.environ.get(ENV_BINARY) else "not built yet"
        raise EmulatorMissing(f"no MicroPython unix binary at {path} ({how}); run: make firmware BOARD=unix")
    return path


def board_config(board: str) -> dict:
    """The parsed boards/<board>/board.json."""
    path = BOARDS_DIR / board / "board.json"
    if not path.is_file():
        known = sorted(p.parent.name for p in BOARDS_DIR.glob("*/board.json"))
        raise ValueError(f"unknown board {board!r}; known boards: {', '.join(known)}")
    return json.loads(path.read_text())


def run_unix(
    code: str,
    heapsize: str | None = None,
    timeout: float = 120,
    cwd: str | os.PathLike | None = None,
    extra_path: Sequence[str] = (),
) -> subprocess.CompletedProcess:
    """Run `code` on the unix-port binary; return the CompletedProcess (text stdout/stderr).

    heapsize: MicroPython's `-X heapsize=` value, e.g. "190K" or "64K" (None: the port's
    default). extra_path: directories prepended to sys.path (MICROPYPATH), e.g. firmware/.
    The code goes through a temporary file so tracebacks carry line numbers. A timeout raises
    subprocess.TimeoutExpired.
    """
    binary = find_micropython()
    with tempfile.TemporaryDirectory(prefix="edgetune-emulate-") as tmp:
        script = Path(tmp) / "main.py"
        script.write_text(code)
        return _run_binary(binary, script, heapsize, timeout, cwd, extra_path)


def _run_binary(
    binary: Path,
    script: Path,
    heapsize: str | None,
    timeout: float,
    cwd: str | os.PathLike | None,
    extra_path: Sequence[str],
) -> subprocess.CompletedProcess:
    cmd = [str(binary)]
    if heapsize:
        cmd += ["-X", f"heapsize={heapsize}"]
    cmd.append(str(script))
    env = dict(os.environ)
    # The unix port's default path is ".frozen:~/.micropython/lib:/usr/lib/micropython"; keep
    # the frozen entry and the script's own directory, drop the user's home-directory libs.
    env["MICROPYPATH"] = os.pathsep.join([*(str(p) for p in extra_path), ".frozen"])
    return subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="edgetune emulate", description="run a MicroPython script on an emulated board"
    )
    parser.add_argument("script", type=Path, help="MicroPython script to run")
    parser.add_argument("--board", default="unix", help="emulated board (implemented: unix)")
    parser.add_argument(
        "--heapsize", help="MicroPython heap, e.g. 190K (default: the board.json heap budget)"
    )
    parser.add_argument("--timeout", type=float, default=600, help="seconds (default 600)")
    parser.add_argument(
        "--path", action="append", default=[], help="directory to prepend to sys.path (repeatable)"
    )
    args = parser.parse_args(argv)
    try:
        config = board_config(args.board)
    except ValueError as e:
        print(f"edgetune emulate: {e}", file=sys.stderr)
        return 2
    if args.board != "unix":
        print(f"edgetune emulate: --board {args.board} is not implemented yet; use --board unix", file=sys.stderr)
        return 2
    heapsize = args.heapsize
    if heapsize is None:
        heapsize = str(config["heap_bytes"])
    try:
        binary = find_micropython()
    except EmulatorMissing as e:
        print(f"edgetune emulate: {e}", file=sys.stderr)
        return 2
    if not args.script.is_file():
        print(f"edgetune emulate: no such script: {args.script}", file=sys.stderr)
        return 2
    cmd = [str(binary), "-X", f"heapsize={heapsize}", str(args.script)]
    env = dict(os.environ)
    env["MICROPYPATH"] = os.pathsep.join([*args.path, ".frozen"])
    try:
        return subprocess.run(cmd, env=env, timeout=args.timeout).returncode
    except subprocess.TimeoutExpired:
        print(f"edgetune emulate: timed out after {args.timeout} s", file=sys.stderr)
        return 124
