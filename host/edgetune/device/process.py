"""The emulators' child processes (qemu-system-arm, qemu-system-xtensa): tied to their parent's
life, stopped the same way by emulate.py and emulate_xtensa.py (and fleet/deploy.py's Flower
processes, with a longer grace).
"""

from __future__ import annotations

import signal
import subprocess


def die_with_parent() -> None:
    """In the child before exec: the kernel sends it SIGKILL when its parent dies (Linux
    PR_SET_PDEATHSIG), so no qemu-system-arm is left running without its parent, whatever
    killed the parent. (Linux counts the thread that started it: a QemuBoard made in a
    thread lives as long as that thread.) Elsewhere a no-op (stop() and the SIGTERM handler
    still apply)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass


def stop_process(proc: subprocess.Popen, grace: float = 5.0) -> None:
    """Terminate a child process, kill it if it is still there after `grace` s, and reap it."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
