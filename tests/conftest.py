"""Shared pytest fixtures: the repo root and the real unix-port MicroPython binary."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from edgetune import emulate

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def micropython() -> Path:
    """Path of build/unix/micropython (or $EDGETUNE_MICROPYTHON); fails with the make hint."""
    try:
        return emulate.find_micropython()
    except emulate.EmulatorMissing as e:
        pytest.fail(str(e), pytrace=False)


@pytest.fixture
def run_mpy(micropython: Path) -> Callable[..., str]:
    """run_mpy(code, heapsize=None, timeout=120, extra_path=()) -> stdout of the unix port.

    Fails the test, showing stdout and stderr, when MicroPython exits non-zero (an uncaught
    exception, a crash or a timeout).
    """

    def run(code: str, heapsize: str | None = None, timeout: float = 120, extra_path=()) -> str:
        try:
            proc = emulate.run_unix(code, heapsize=heapsize, timeout=timeout, extra_path=extra_path)
        except emulate.subprocess.TimeoutExpired:
            pytest.fail(f"MicroPython timed out after {timeout} s", pytrace=False)
        if proc.returncode != 0:
            pytest.fail(
                f"MicroPython exited with {proc.returncode}\n--- stdout ---\n{proc.stdout}"
                f"\n--- stderr ---\n{proc.stderr}",
                pytrace=False,
            )
        return proc.stdout

    return run
