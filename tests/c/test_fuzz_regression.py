"""Replay the committed fuzz regression corpus (fuzz/corpus/<target>/) through the libFuzzer
harnesses built with clang -fsanitize=fuzzer,address,undefined (scripts/fuzz.sh replay).

Every input runs once: the .etm parser + forward + training round (fuzz_etm), the scheme
parser/builder + training (fuzz_scheme) and the trained-weights loader (fuzz_state); any
AddressSanitizer/UndefinedBehaviorSanitizer report, leak or harness invariant (a model's own
saved file must load; a validated model's forward must succeed) fails the test. The long runs
are `make fuzz` (>= 10^5 executions per target).
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.support.relhelp import REPO

TARGETS = ("etm", "scheme", "state")


@pytest.fixture(scope="module")
def replay() -> subprocess.CompletedProcess:
    if shutil.which(os.environ.get("CLANG", "clang")) is None:
        pytest.fail("clang not found: make setup installs it (the fuzz harnesses need libFuzzer)", pytrace=False)
    return subprocess.run(["bash", str(REPO / "scripts" / "fuzz.sh"), "replay"], capture_output=True, text=True,
                          timeout=600, cwd=REPO)


def test_regression_corpus_is_small_and_complete():
    total = 0
    for t in TARGETS:
        files = list((REPO / "fuzz" / "corpus" / t).iterdir())
        assert 5 <= len(files) <= 60, (t, len(files))
        total += sum(f.stat().st_size for f in files)
    assert total < 200_000


def test_replay_is_sanitizer_clean(replay):
    assert replay.returncode == 0, replay.stdout[-2000:] + replay.stderr[-4000:]
    for t in TARGETS:
        assert f"fuzz: {t}: " in replay.stdout and "regression inputs OK" in replay.stdout


def test_state_seeds_are_loadable(replay):
    """The seed weights files (written by the numpy twin) pass the C loader's checks: the seeds
    exercise the accept path, and the twin and train.c still agree on the file format."""
    exe = REPO / "build" / "fuzz" / "bin" / "fuzz_state"
    seeds = sorted((REPO / "fuzz" / "corpus" / "state").glob("seed-*"))
    assert seeds
    env = dict(os.environ, FUZZ_VERBOSE="1")
    proc = subprocess.run([str(exe), "-runs=1", *map(str, seeds)], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    verdicts = [line for line in proc.stderr.splitlines() if line.startswith("state: ")]
    assert verdicts and all(v == "state: loaded" for v in verdicts), verdicts


def test_harness_catches_an_out_of_bounds_read(tmp_path):
    """The sanitizer build really reports: a harness reading one byte past its input aborts."""
    src = tmp_path / "oob.c"
    src.write_text("#include <stdint.h>\n#include <stddef.h>\n#include <stdlib.h>\n#include <string.h>\n"
                   "int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) {\n"
                   "  uint8_t *p = malloc(n ? n : 1); if (n) memcpy(p, d, n);\n"
                   "  volatile uint8_t x = n ? p[n] : 0; (void)x; free(p); return 0; }\n")
    exe = tmp_path / "oob"
    cc = subprocess.run([os.environ.get("CLANG", "clang"), "-g", "-fsanitize=fuzzer,address,undefined", str(src),
                         "-o", str(exe)], capture_output=True, text=True)
    assert cc.returncode == 0, cc.stderr
    (tmp_path / "in").write_bytes(b"abc")
    proc = subprocess.run([str(exe), "-runs=1", str(tmp_path / "in")], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "heap-buffer-overflow" in proc.stderr
