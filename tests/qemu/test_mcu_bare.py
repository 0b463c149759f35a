"""The kernels as the microcontrollers run them: both Cortex-M instruction sets on qemu, bit for bit.

bench/mcu_bare builds the kernels (and model.c / train.c) bare-metal for the Cortex-M3
(-mcpu=cortex-m3: the Thumb-2 path, the nudged high multiply on SMULL) and for ARMv6-M
(-mcpu=cortex-m0plus: the RP2040's instruction set, with et_dot4_armv6m.c's assembly loop and the
16-bit-split high multiply of et_requant.h) and runs them on qemu's mps2-an385 (ARMv6-M code runs
on the M3 model: a subset). Each case calls one forward kernel on random input and compares its
output with the numpy twin's; the demo model's predict is compared with the twin's forward, and its
state after training steps (a CRC of the predict output) must be the same on both instruction sets.
The unix port runs none of these paths (x86-64 takes the generic C).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest


from bench import mcu
from tests.support import tinymodels


def _cases() -> list[tuple[str, object]]:
    """One-layer models covering the kernels' paths: channel groups of 1-4 (the 4-row loop with
    repeated rows), 8/4/1-channel depthwise groups, SAME padding at the edges, strides 2, ReLU or
    not, odd reductions, kernel heights > 1."""
    ch = tinymodels.chain
    out = []
    for k, (spec, shape) in enumerate([
        (("conv", 1, 5, 24, 1, True, False), (1, 1, 50, 16)),
        (("conv", 3, 3, 5, 1, False, True), (1, 6, 7, 3)),
        (("conv", 3, 3, 7, 2, True, True), (1, 9, 8, 5)),
        (("conv", 1, 1, 1, 1, False, False), (1, 1, 9, 13)),
        (("conv", 2, 5, 6, 2, False, True), (1, 5, 11, 2)),
        (("dw", 1, 3, 1, True, True), (1, 1, 50, 16)),
        (("dw", 3, 3, 2, False, True), (1, 7, 6, 13)),
        (("dw", 1, 7, 1, True, False), (1, 1, 20, 3)),
        (("fc", 7, False), (1, 1, 1, 48)),
        (("fc", 64, True), (1, 1, 1, 256)),
        (("fc", 1, False), (1, 1, 1, 33)),
        (("fc", 6, True), (1, 1, 1, 17)),
        (("fc", 3, False), (1, 1, 1, 1)),
    ]):
        out.append((f"{spec} on {shape}", ch([spec], shape, seed=100 + k)))
    return out


@pytest.fixture(scope="module")
def runs() -> dict[str, list[dict]]:
    if shutil.which("qemu-system-arm") is None or shutil.which("arm-none-eabi-gcc") is None:
        pytest.fail("qemu-system-arm / arm-none-eabi-gcc missing; run: make setup", pytrace=False)
    cases_h = mcu.bare_cases_h(_cases(), tinymodels.app_model(), reps=1)
    with tempfile.TemporaryDirectory(prefix="edgetune-test-bare-") as tmp:
        return {isa: mcu.bare_run(mcu.bare_build(isa, cases_h, Path(tmp))) for isa in mcu.ISAS}


@pytest.mark.parametrize("isa", list(mcu.ISAS))
def test_kernels_match_twin(runs, isa):
    rows = runs[isa]
    assert not [r for r in rows if r["kind"] in ("fault", "error")], rows
    cases = [r for r in rows if r["kind"] == "case"]
    assert len(cases) == len(_cases())
    bad = [r["name"] for r in cases if not r["same_bits"]]
    assert not bad, f"{isa}: kernel output differs from the numpy twin for {bad}"


@pytest.mark.parametrize("isa", list(mcu.ISAS))
def test_model_predict_matches_twin(runs, isa):
    model = next(r for r in runs[isa] if r["kind"] == "model")
    assert model["same_bits"], f"{isa}: the app model's predict differs from the numpy twin"


def test_training_same_on_both_isas(runs):
    crc = {isa: next(r for r in rows if r["kind"] == "model")["trained_crc"] for isa, rows in runs.items()}
    assert len(set(crc.values())) == 1, f"the trained app model differs between instruction sets: {crc}"
