"""`edgetune fleet refit` as the tests run it: a subprocess on the demo model, its bad arguments
refused before anything runs, its JSON result line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support import deviceapp

REPO = Path(__file__).resolve().parents[2]


def demo_model() -> str:
    return str(deviceapp.demo.ensure_model(REPO / "build" / "demo"))


def fleet_refit(out: Path, args: list[str], bad: tuple = ()) -> dict:
    """Every (extra args, word) in `bad` exits 2 with `word` on stderr and writes nothing; then
    `edgetune fleet refit --model <demo> ARGS --out OUT` must succeed; its JSON line."""

    def run(*more):
        return subprocess.run([sys.executable, "-m", "edgetune.cli", "fleet", "refit", "--model", demo_model(),
                               *more], capture_output=True, text=True, timeout=900, cwd=REPO)

    bad_out = out.with_name("bad.state")
    for extra, word in bad:
        r = run(*extra, "--out", str(bad_out))
        assert r.returncode == 2 and word in r.stderr, r.stderr[-2000:]
        assert not bad_out.exists()
    r = run(*args, "--out", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])
