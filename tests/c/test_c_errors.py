"""The C engine's error convention (native_modules/edgetune/et_err.h), in C.

tests/c/error_reporting.c provokes a refusal in every kind of engine entry point that can refuse
its input (et_model_init, et_scheme_parse, et_scheme_build, et_train_plan, et_train_state_check)
and calls each twice: with no error buffer (err == NULL, err_len == 0) the refusal must still be
reported (a non-NULL message, never NULL = success), and with a buffer the message must be the
formatted text in it. Built with ASan+UBSan against the engine's sources (no bindings) and run on
fuzz/base.etm.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MOD = ROOT / "native_modules" / "edgetune"


def test_engine_reports_every_failure_without_an_error_buffer(tmp_path):
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        pytest.fail("no C compiler (cc/gcc/clang); run: make setup", pytrace=False)
    exe = tmp_path / "error_reporting"
    cmd = [cc, "-std=c99", "-O1", "-g", "-Wall", "-Wextra", "-Werror", "-Wno-unused-function", "-ffp-contract=off",
           "-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer",
           f"-I{MOD}", f"-I{MOD / 'kernels'}", f"-I{ROOT / 'fuzz'}", str(ROOT / "tests" / "c" / "error_reporting.c"),
           *map(str, sorted(MOD.glob("*.c"))), *map(str, sorted((MOD / "kernels").glob("*.c"))), "-o", str(exe)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    env = {"ASAN_OPTIONS": "detect_leaks=0", "UBSAN_OPTIONS": "print_stacktrace=1", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([str(exe), str(ROOT / "fuzz" / "base.etm")], capture_output=True, text=True,
                          timeout=120, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.rstrip().endswith("0 failed, 6 passed"), proc.stdout
