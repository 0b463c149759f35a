"""Shared pytest fixtures: the repo root and the real unix-port MicroPython binary.

A test marked `@pytest.mark.natmod` runs twice: `micropython` (and `run_mpy`) is the unix
port with the built-in module ("built-in"), then the stock unix port (make firmware
BOARD=unix-stock) importing build/natmod/x64/edgetune.mpy (make natmod ARCH=x64) ("natmod").
With $EDGETUNE_MICROPYTHON set (a binary under test, e.g. make test-sanitize's ASan build) only
that binary runs.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from edgetune.device import emulate

from tests.support.natmod import VARIANTS, natmod_micropython

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if ("micropython" in metafunc.fixturenames and metafunc.definition.get_closest_marker("natmod")
            and not os.environ.get(emulate.ENV_BINARY)):
        metafunc.parametrize("micropython", VARIANTS, indirect=True, scope="session")


@pytest.fixture(scope="session")
def micropython(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path of build/unix/micropython (or $EDGETUNE_MICROPYTHON); fails with the make hint.
    For the "natmod" variant of a @pytest.mark.natmod test: natmod_micropython()."""
    if getattr(request, "param", "built-in") == "natmod":
        return natmod_micropython(tmp_path_factory.mktemp("natmod"))
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
            proc = emulate.run_unix(code, heapsize=heapsize, timeout=timeout, extra_path=extra_path,
                                    binary=micropython)
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
