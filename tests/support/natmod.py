"""The native .mpy on the stock unix port: a `micropython` that imports build/natmod/x64/edgetune.mpy
(the "natmod" variant of the tests marked @pytest.mark.natmod, tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VARIANTS = ("built-in", "natmod")
UNIX_STOCK = REPO / "build" / "unix-stock" / "micropython"
NATMOD_X64 = REPO / "build" / "natmod" / "x64"


def natmod_micropython(tmp_dir: Path) -> Path:
    """A `micropython` that is the stock unix port with build/natmod/x64 first on its path (a
    shell script, so tests that run the binary themselves need no change)."""
    missing = [p for p in (UNIX_STOCK, NATMOD_X64 / "edgetune.mpy") if not p.is_file()]
    if missing:
        pytest.fail(f"no {missing[0]}; run: make firmware BOARD=unix-stock natmod ARCH=x64", pytrace=False)
    wrapper = tmp_dir / "micropython"
    wrapper.write_text(
        "#!/bin/sh\n"
        "# the stock unix port importing the native edgetune.mpy (tests/support/natmod.py)\n"
        f'MICROPYPATH="{NATMOD_X64}:${{MICROPYPATH:-.frozen}}" exec "{UNIX_STOCK}" "$@"\n'
    )
    wrapper.chmod(0o755)
    return wrapper
