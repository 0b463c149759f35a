"""The emulated Xtensa LX7 board (boards/qemu-xtensa): MicroPython's core built with upstream
LLVM, on `qemu-system-xtensa -M sim -cpu de233_fpu`, with the console on a pseudo-terminal.

QEMU 7.2's Xtensa semihosting reads and writes the emulator's own stdin/stdout (it ignores
`-semihosting-config chardev=`), so XtensaBoard gives qemu one pty as stdin/stdout and relays
it, in a thread, to a second pty whose name it publishes (`board.pty`): `mpremote connect
<board.pty>` and `edgetune monitor --port <board.pty>` then talk to the board as to a USB one.
The relay keeps running while the board does; stop() (or leaving the with block) ends both.

`edgetune emulate --board qemu-xtensa [SCRIPT.py]` uses it (host/edgetune/device/emulate.py).
"""

from __future__ import annotations

import os
import pty
import select
import shutil
import subprocess
import termios
import threading
import time
import tty
from pathlib import Path

from .process import die_with_parent
from .process import stop_process

REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_FIRMWARE = REPO_ROOT / "build" / "qemu-xtensa" / "firmware.elf"
ENV_FIRMWARE = "EDGETUNE_QEMU_XTENSA_FIRMWARE"
QEMU_SYSTEM = "qemu-system-xtensa"


class EmulatorMissing(FileNotFoundError):
    """The firmware or the emulator is not there."""


def find_firmware(path: str | os.PathLike | None = None) -> Path:
    """`path`, else $EDGETUNE_QEMU_XTENSA_FIRMWARE, else build/qemu-xtensa/firmware.elf."""
    p = Path(path or os.environ.get(ENV_FIRMWARE) or DEFAULT_FIRMWARE)
    if not p.is_file():
        raise EmulatorMissing(f"no qemu-xtensa firmware at {p}; run: make firmware BOARD=qemu-xtensa")
    return p


def qemu_command(firmware: str | os.PathLike, monitor: str | None = None, log: str | None = None) -> list[str]:
    """The qemu-system-xtensa command line (console = qemu's stdin/stdout through semihosting).

    monitor: a unix socket for the human monitor (bench/xtensa.py switches `singlestep` and
    `log exec,nochain` on and off there: an exact instruction trace of one region);
    log: where that trace goes (-D).
    """
    cmd = [QEMU_SYSTEM, "-M", "sim", "-cpu", "de233_fpu", "-semihosting", "-display", "none",
           "-monitor", f"unix:{monitor},server,nowait" if monitor else "none", "-serial", "none", "-nodefaults"]
    if log:
        cmd += ["-D", str(log)]
    return cmd + ["-kernel", str(firmware)]


def _raw(fd: int) -> None:
    attrs = termios.tcgetattr(fd)
    tty.setraw(fd)
    attrs = termios.tcgetattr(fd)
    attrs[3] &= ~termios.ECHO
    termios.tcsetattr(fd, termios.TCSANOW, attrs)


class XtensaBoard:
    """A running emulated Xtensa board: `with XtensaBoard() as b: mpremote connect b.pty ...`."""

    def __init__(self, firmware: str | os.PathLike | None = None, monitor: str | None = None,
                 log: str | None = None):
        self.firmware = find_firmware(firmware)
        if shutil.which(QEMU_SYSTEM) is None:
            raise EmulatorMissing(f"{QEMU_SYSTEM} not found; run: make setup (apt: qemu-system-misc)")
        self.cmd = qemu_command(self.firmware, monitor, log)
        # qemu's side: a pty as its stdin/stdout, raw (no echo, no CR/LF translation).
        self._qemu_master, qemu_slave = pty.openpty()
        _raw(qemu_slave)
        # The user's side: the pty whose name we publish.
        self._user_master, user_slave = pty.openpty()
        _raw(user_slave)
        self.pty = os.ttyname(user_slave)
        self._user_slave = user_slave  # kept open: the pty stays usable between mpremote runs
        self.proc = subprocess.Popen(self.cmd, stdin=qemu_slave, stdout=qemu_slave, stderr=subprocess.DEVNULL,
                                     preexec_fn=die_with_parent, close_fds=True)
        os.close(qemu_slave)
        self._stop = threading.Event()
        self._relay = threading.Thread(target=self._run_relay, daemon=True)
        self._relay.start()

    def _run_relay(self) -> None:
        fds = {self._qemu_master: self._user_master, self._user_master: self._qemu_master}
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select(list(fds), [], [], 0.2)
            except (OSError, ValueError):
                return
            for fd in ready:
                try:
                    data = os.read(fd, 4096)
                except OSError:
                    data = b""
                if not data:
                    if fd == self._qemu_master:
                        return  # qemu is gone
                    continue
                out = fds[fd]
                while data:
                    try:
                        n = os.write(out, data)
                    except BlockingIOError:
                        time.sleep(0.01)
                        continue
                    except OSError:
                        return
                    data = data[n:]

    def wait(self) -> int:
        return self.proc.wait()

    def stop(self) -> None:
        stop_process(self.proc)
        self._stop.set()
        self._relay.join(2)
        for fd in (self._qemu_master, self._user_master, self._user_slave):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> XtensaBoard:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
