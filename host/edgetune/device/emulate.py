"""Run MicroPython code on an emulated board: the real unix-port firmware built with our module.

`edgetune emulate --board unix SCRIPT.py [--heapsize 190K]` runs SCRIPT.py on
build/unix/micropython with the heap limited like the board's (``-X heapsize=``), so scripts
that fit on the unix port fit the board's MicroPython heap too. The default heap is the one
stated in boards/<board>/board.json.

`edgetune emulate --board qemu [SCRIPT.py]` boots build/qemu/firmware.elf (make firmware
BOARD=qemu: Cortex-M3 MPS2-AN385, our module + the device app + the frozen model) under
qemu-system-arm with the serial port on a pseudo-terminal. Without a script it prints the pty
and keeps the board running until Ctrl-C, so `mpremote connect /dev/pts/N ...` and
`edgetune monitor --port /dev/pts/N` talk to it like to a USB board; with a script it runs it
through mpremote (raw REPL) and exits. SIGTERM stops the board like Ctrl-C (qemu never outlives this process: it also
gets SIGKILL if we die). `--icount` counts guest time in instructions
(`-icount shift=0`, deterministic; bench/mcu.py uses it).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from .process import die_with_parent
from .process import stop_process

REPO_ROOT = Path(__file__).resolve().parents[3]
BOARDS_DIR = REPO_ROOT / "boards"
FIRMWARE_DIR = REPO_ROOT / "firmware"  # the device app, importable by scripts on the unix board
DEFAULT_UNIX_BINARY = REPO_ROOT / "build" / "unix" / "micropython"
ENV_BINARY = "EDGETUNE_MICROPYTHON"
DEFAULT_QEMU_FIRMWARE = REPO_ROOT / "build" / "qemu" / "firmware.elf"
# make firmware BOARD=qemu-stock: the same machine without our module (edgetune install)
STOCK_QEMU_FIRMWARE = REPO_ROOT / "build" / "qemu-stock" / "firmware.elf"
ENV_QEMU_FIRMWARE = "EDGETUNE_QEMU_FIRMWARE"
QEMU_SYSTEM = "qemu-system-arm"


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
    binary: str | os.PathLike | None = None,
) -> subprocess.CompletedProcess:
    """Run `code` on the unix-port binary (`binary`, default find_micropython()); return the
    CompletedProcess (text stdout/stderr).

    heapsize: MicroPython's `-X heapsize=` value, e.g. "190K" or "64K" (None: the port's
    default). extra_path: directories prepended to sys.path (MICROPYPATH), e.g. firmware/.
    The code goes through a temporary file so tracebacks carry line numbers. A timeout raises
    subprocess.TimeoutExpired.
    """
    binary = Path(binary) if binary else find_micropython()
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


def find_qemu_firmware(path: str | os.PathLike | None = None) -> Path:
    """The qemu firmware ELF: `path`, else $EDGETUNE_QEMU_FIRMWARE, else build/qemu/firmware.elf.

    Raises EmulatorMissing, saying how to build it, when the file is not there.
    """
    p = Path(path or os.environ.get(ENV_QEMU_FIRMWARE) or DEFAULT_QEMU_FIRMWARE)
    if not p.is_file():
        raise EmulatorMissing(f"no qemu firmware at {p}; run: make firmware BOARD=qemu")
    return p


def qemu_command(firmware: str | os.PathLike, icount: bool = False) -> list[str]:
    """The qemu-system-arm command line booting `firmware` with its serial port on a pty."""
    cmd = [QEMU_SYSTEM, "-machine", "mps2-an385", "-nographic", "-monitor", "null", "-semihosting"]
    if icount:
        cmd += ["-icount", "shift=0"]
    return cmd + ["-serial", "pty", "-kernel", str(firmware)]


class QemuBoard:
    """A running emulated board: `with QemuBoard() as b: mpremote connect b.pty ...`.

    Boots qemu-system-arm (qemu_command) and reads the pty name qemu reports
    ("char device redirected to /dev/pts/N"). stop() (or leaving the with block) terminates
    this one qemu process.
    """

    def __init__(self, firmware: str | os.PathLike | None = None, icount: bool = False, timeout: float = 20):
        self.firmware = find_qemu_firmware(firmware)
        if shutil.which(QEMU_SYSTEM) is None:
            raise EmulatorMissing(f"{QEMU_SYSTEM} not found; run: make setup (apt: qemu-system-arm)")
        self.cmd = qemu_command(self.firmware, icount)
        self.proc = subprocess.Popen(
            self.cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )
        self.pty = self._wait_for_pty(timeout)

    def _wait_for_pty(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        seen = b""
        fd = self.proc.stdout.fileno()
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                chunk = os.read(fd, 4096)
                if not chunk:
                    break
                seen += chunk
                m = re.search(rb"redirected to (/dev/pts/\d+)", seen)
                if m:
                    return m.group(1).decode()
            elif self.proc.poll() is not None:
                break
        self.stop()
        raise RuntimeError(f"qemu did not report a pty within {timeout} s: {seen.decode(errors='replace')!r}")

    def stop(self) -> None:
        stop_process(self.proc)
        if self.proc.stdout:
            self.proc.stdout.close()

    def __enter__(self) -> QemuBoard:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def mpremote_command(pty: str, *args: str) -> list[str]:
    """`mpremote connect <pty> args...` with the mpremote next to this Python (the venv's)."""
    exe = Path(sys.executable).with_name("mpremote")
    head = [str(exe)] if exe.is_file() else [sys.executable, "-m", "mpremote"]
    return [*head, "connect", pty, *args]


def _cli_qemu(args: argparse.Namespace) -> int:
    try:
        board = QemuBoard(args.firmware, icount=args.icount)
    except (EmulatorMissing, RuntimeError) as e:
        print(f"edgetune emulate: {e}", file=sys.stderr)
        return 2

    return _serve(board, args, f"qemu board on {board.pty}", f"mpremote connect {board.pty} repl",
                  board.proc.wait)


def _serve(board, args: argparse.Namespace, what: str, hint: str, wait) -> int:
    """An emulated board's console on its pty: wait until Ctrl-C / SIGTERM / SIGHUP (no script),
    or run args.script on it with mpremote; leaving the with block stops qemu."""

    def _terminate(signum, frame):  # SIGTERM/SIGHUP: leave the with block, which stops qemu
        raise KeyboardInterrupt

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _terminate)
    with board:
        if args.script is None:
            print(f"edgetune emulate: {what} (Ctrl-C or SIGTERM stops it)", flush=True)
            print(f"  {hint}", flush=True)
            try:
                wait()
            except KeyboardInterrupt:
                pass
            return 0
        if not args.script.is_file():
            print(f"edgetune emulate: no such script: {args.script}", file=sys.stderr)
            return 2
        try:
            return subprocess.run(mpremote_command(board.pty, "run", str(args.script)), timeout=args.timeout).returncode
        except subprocess.TimeoutExpired:
            print(f"edgetune emulate: timed out after {args.timeout} s", file=sys.stderr)
            return 124
        except KeyboardInterrupt:
            return 130


def _cli_qemu_xtensa(args: argparse.Namespace) -> int:
    """The emulated Xtensa LX7 (host/edgetune/device/emulate_xtensa.py): its console on a pty."""
    from .emulate_xtensa import EmulatorMissing as XtensaMissing
    from .emulate_xtensa import XtensaBoard

    try:
        board = XtensaBoard(args.firmware)
    except XtensaMissing as e:
        print(f"edgetune emulate: {e}", file=sys.stderr)
        return 2

    return _serve(board, args, f"qemu-xtensa board on {board.pty}",
                  f"mpremote connect {board.pty} cp build/natmod/xtensawin-qemu/edgetune.mpy : + repl", board.wait)


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="edgetune emulate", description="run a MicroPython script on an emulated board"
    )
    parser.add_argument("script", type=Path, nargs="?", help="MicroPython script to run (qemu: optional)")
    parser.add_argument("--board", default="unix", help="emulated board: unix, qemu, qemu-xtensa or qemu-stock (the qemu "
                        "board without the edgetune module: make firmware BOARD=qemu-stock)")
    parser.add_argument("--firmware", type=Path, help="qemu: firmware ELF (default build/qemu/firmware.elf; "
                        "qemu-stock: build/qemu-stock/firmware.elf)")
    parser.add_argument("--icount", action="store_true", help="qemu: -icount shift=0 (guest time = instructions)")
    parser.add_argument(
        "--heapsize", help="MicroPython heap, e.g. 190K (default: the board.json heap budget)"
    )
    parser.add_argument("--timeout", type=float, default=600, help="seconds (default 600)")
    parser.add_argument(
        "--path", action="append", default=[],
        help="unix: directory to prepend to sys.path (repeatable; firmware/, the device app, is always on it)"
    )
    args = parser.parse_args(argv)
    try:
        config = board_config(args.board)
    except ValueError as e:
        print(f"edgetune emulate: {e}", file=sys.stderr)
        return 2
    if args.board == "qemu-stock":
        if args.firmware is None and not STOCK_QEMU_FIRMWARE.is_file():
            print(f"edgetune emulate: no {STOCK_QEMU_FIRMWARE}; run: make firmware BOARD=qemu-stock", file=sys.stderr)
            return 2
        args.firmware = args.firmware or STOCK_QEMU_FIRMWARE
        return _cli_qemu(args)
    if args.board == "qemu":
        return _cli_qemu(args)
    if args.board == "qemu-xtensa":
        return _cli_qemu_xtensa(args)
    if args.board != "unix":
        print(f"edgetune emulate: --board {args.board} is not implemented; use --board unix, qemu or qemu-stock",
              file=sys.stderr)
        return 2
    if args.script is None:
        parser.error("the unix board needs a script")
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
    # As on a board, where the app is frozen or deployed: `import app` works without --path.
    env["MICROPYPATH"] = os.pathsep.join([*args.path, str(FIRMWARE_DIR), ".frozen"])
    try:
        return subprocess.run(cmd, env=env, timeout=args.timeout).returncode
    except subprocess.TimeoutExpired:
        print(f"edgetune emulate: timed out after {args.timeout} s", file=sys.stderr)
        return 124
