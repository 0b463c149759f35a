"""The requantization and rounding fast paths against their literal forms, on the host's compiler.

tests/c/requant_paths.c checks et_requant_apply_s8 (the nudged high multiply, the rounding divide
on one compare, the clamp before the offset) against TFLM's MultiplyByQuantizedMultiplier
composition, both high multiplies (64-bit and the ARMv6-M 16-bit split) against gemmlowp's
SaturatingRoundingDoublingHighMul, and et_round_sat against its float-compare form, on
adversarial and random values. It is compiled three ways so that the ARM-only paths run here
too: plain, with __ARM_ARCH_6M__ (the RP2040 build's multiply) and with __arm__ (soft-float
round_sat). test_mcu_bare runs the same paths inside the kernels on qemu.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
KERNELS = ROOT / "native_modules" / "edgetune" / "kernels"


@pytest.mark.parametrize("define", [None, "__ARM_ARCH_6M__", "__arm__"])
def test_requant_paths(tmp_path, define):
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        pytest.fail("no C compiler (cc/gcc/clang); run: make setup", pytrace=False)
    exe = tmp_path / "requant_paths"
    flags = ["-std=c99", "-O2", "-ffp-contract=off", f"-I{KERNELS}"] + ([f"-D{define}"] if define else [])
    subprocess.run([cc, *flags, str(ROOT / "tests" / "c" / "requant_paths.c"), "-o", str(exe)], check=True)
    proc = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().startswith("0 bad of ")
