"""The native .mpy build (make natmod, native_modules/edgetune/natmod/): the products per
architecture, choosing the build a board loads, the ARMv6-M float division of the natmod's
libc shim against the host's IEEE division, and the x64 .mpy on the stock unix port giving the
built-in module's API. The module tests marked natmod (conftest.py) run on both builds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgetune.device import natmod

REPO = Path(__file__).resolve().parents[2]
NATMOD = REPO / "build" / "natmod"
ARCHS = ("x64", "armv6m", "armv7m", "armv7emsp")
# e_machine / e_flags the .mpy header carries: byte 2 is (sub-version | arch << 2)
ARCH_CODE = {"x64": 2, "armv6m": 4, "armv7m": 5, "armv7emsp": 7}


@pytest.fixture(scope="module")
def built() -> Path:
    """make natmod (all four; incremental: about a second when nothing changed)."""
    p = subprocess.run(["make", "-s", "natmod"], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout + p.stderr
    return NATMOD


@pytest.mark.parametrize("arch", ARCHS)
def test_each_arch_has_an_mpy_and_a_package(built, arch):
    mpy = (built / arch / "edgetune.mpy").read_bytes()
    assert mpy[0] == ord("M") and mpy[1] == natmod.MPY_VERSION
    assert mpy[2] >> 2 == ARCH_CODE[arch] and mpy[2] & 3 == 3  # MPY_SUB_VERSION 3 (MicroPython 1.25)
    pkg = json.loads((built / arch / "package.json").read_text())
    assert pkg["urls"] == [["edgetune.mpy", "edgetune.mpy"]] and pkg["version"]


def test_xtensawin_without_a_toolchain_says_how_to_get_one():
    """The LLVM route (scripts/xtensa/xtensawin-gcc) is the default without Espressif's gcc; a
    compiler that is not there (here CC=) stops at once with both ways to get one."""
    p = subprocess.run(["make", "natmod", "ARCH=xtensawin", "CC=no-such-xtensa-elf-gcc"], cwd=REPO,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode != 0 and "make setup" in p.stderr and "Espressif" in p.stderr and "install.sh" in p.stderr, p.stderr
    assert len([ln for ln in p.stderr.splitlines() if "no Xtensa compiler" in ln]) == 1


def test_pick_arch_from_sys_implementation_mpy():
    def mpy(arch_code: int) -> int:
        return natmod.MPY_VERSION | (3 | arch_code << 2) << 8

    assert natmod.decode_mpy(0x1B06) == (6, "armv7em")  # the qemu board's value
    assert natmod.pick_arch(mpy(4), ARCHS) == "armv6m"  # RP2040
    assert natmod.pick_arch(mpy(5), ARCHS) == "armv7m"
    assert natmod.pick_arch(mpy(5), ["armv6m"]) == "armv6m"  # a Cortex-M3 runs Thumb-1 code
    assert natmod.pick_arch(mpy(8), ARCHS) == "armv7emsp"
    assert natmod.pick_arch(mpy(2), ARCHS) == "x64"
    with pytest.raises(ValueError, match="make natmod ARCH=armv6m"):
        natmod.pick_arch(mpy(4), ["armv7m", "x64"])
    with pytest.raises(ValueError, match="cannot load native code"):
        natmod.pick_arch(natmod.MPY_VERSION, ARCHS)
    with pytest.raises(ValueError, match="version 5"):
        natmod.pick_arch(5 | (3 | 4 << 2) << 8, ARCHS)


def test_armv6m_fdiv_equals_ieee_division(tmp_path):
    """et_natmod_libc.c's __aeabi_fdiv (ARMv6-M: libgcc's cannot be linked into a native module)
    compiled for the host and compared with the host's float32 division on 2 million pairs:
    random bits, subnormal operands and results, zeros, infinities, NaN."""
    src = (REPO / "native_modules/edgetune/natmod/et_natmod_libc.c").read_text()
    body = src[src.index("static uint32_t et_fdiv_bits"):src.index("float __aeabi_fdiv(float a, float b);")]
    n = 2_000_000
    rng = np.random.default_rng(16)
    a = rng.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32)
    b = rng.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32)
    k = np.arange(n) % 5
    a[k == 1] &= np.uint32(0x807FFFFF)  # subnormal dividends
    b[k == 2] = (b[k == 2] & np.uint32(0x80FFFFFF)) | np.uint32(0x3F000000)  # divisors near 1
    a[k == 3] = (a[k == 3] & np.uint32(0x80FFFFFF)) | np.uint32(0x01000000)  # tiny / large: subnormal results
    b[k == 3] = (b[k == 3] & np.uint32(0x80FFFFFF)) | np.uint32(0x7E000000)
    special = np.array([0, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000, 1, 0x3F800000, 0x7F7FFFFF], np.uint32)
    a[:64], b[:64] = np.repeat(special, 8), np.tile(special, 8)
    (tmp_path / "in.bin").write_bytes(np.stack([a, b], 1).tobytes())
    c = tmp_path / "fdiv.c"
    c.write_text("#include <stdint.h>\n#include <stdio.h>\n" + body + """
int main(int argc, char **argv) {
    FILE *f = fopen(argv[1], "rb"), *g = fopen(argv[2], "wb");
    uint32_t ab[2];
    while (fread(ab, 4, 2, f) == 2) { uint32_t q = et_fdiv_bits(ab[0], ab[1]); fwrite(&q, 4, 1, g); }
    fclose(g);
    return 0;
}
""")
    exe = tmp_path / "fdiv"
    subprocess.run(["cc", "-O2", "-std=c99", "-o", str(exe), str(c)], check=True)
    subprocess.run([str(exe), str(tmp_path / "in.bin"), str(tmp_path / "out.bin")], check=True)
    got = np.frombuffer((tmp_path / "out.bin").read_bytes(), np.uint32)
    with np.errstate(all="ignore"):
        want = (a.view(np.float32) / b.view(np.float32)).view(np.uint32)
    nan = np.isnan(want.view(np.float32))
    assert np.isnan(got.view(np.float32))[nan].all()
    bad = np.flatnonzero((got != want) & ~nan)
    assert bad.size == 0, [f"{a[i]:08x}/{b[i]:08x}: {got[i]:08x} != {want[i]:08x}" for i in bad[:5]]


def test_armv6m_l2f_equals_ieee_conversion(tmp_path):
    """et_natmod_libc.c's __aeabi_l2f (int64 -> float32 without libgcc's soft-double detour) on
    the host against numpy's conversion (round to nearest even): random magnitudes of every bit
    length, exact halfway cases, the extremes."""
    src = (REPO / "native_modules/edgetune/natmod/et_natmod_libc.c").read_text()
    body = src[src.index("static uint32_t et_l2f_bits"):src.index("float __aeabi_l2f(int64_t v);")]
    rng = np.random.default_rng(61)
    n = 1_000_000
    bits = rng.integers(0, 64, n)
    v = (rng.integers(0, 2**63, n, dtype=np.int64) >> (63 - bits)).astype(np.int64)
    v[rng.random(n) < 0.5] *= -1
    k = np.arange(n) % 4 == 1  # halfway: 24 significant bits then a 1 and zeros
    sh = rng.integers(1, 39, n)
    v[k] = ((rng.integers(2**23, 2**24, n) * 2 + 1) << sh)[k] >> 0
    v[:6] = [0, 1, -1, np.iinfo(np.int64).max, np.iinfo(np.int64).min, 2**24 + 1]
    (tmp_path / "in.bin").write_bytes(v.tobytes())
    c = tmp_path / "l2f.c"
    c.write_text("#include <stdint.h>\n#include <stdio.h>\n" + body + """
int main(int argc, char **argv) {
    FILE *f = fopen(argv[1], "rb"), *g = fopen(argv[2], "wb");
    int64_t x;
    while (fread(&x, 8, 1, f) == 1) { uint32_t q = et_l2f_bits(x); fwrite(&q, 4, 1, g); }
    fclose(g);
    return 0;
}
""")
    exe = tmp_path / "l2f"
    subprocess.run(["cc", "-O2", "-std=c99", "-o", str(exe), str(c)], check=True)
    subprocess.run([str(exe), str(tmp_path / "in.bin"), str(tmp_path / "out.bin")], check=True)
    got = np.frombuffer((tmp_path / "out.bin").read_bytes(), np.uint32)
    want = v.astype(np.float32).view(np.uint32)
    bad = np.flatnonzero(got != want)
    assert bad.size == 0, [f"{v[i]}: {got[i]:08x} != {want[i]:08x}" for i in bad[:5]]


def test_natmod_has_the_builtin_api(micropython, built, tmp_path):
    """The stock unix port imports build/natmod/x64/edgetune.mpy (a file, not built in) with the
    same Model methods as the built-in module."""
    from tests.support.natmod import natmod_micropython

    code = "import edgetune\nprint(getattr(edgetune, '__file__', 'built-in'), sorted(dir(edgetune.Model)))\n"
    outs = []
    for binary in (micropython, natmod_micropython(tmp_path)):
        p = subprocess.run([str(binary), "-c", code], capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        outs.append(p.stdout.split(" ", 1))
    assert outs[0][0] == "built-in" and outs[1][0].endswith("build/natmod/x64/edgetune.mpy")
    assert outs[0][1] == outs[1][1]
    stock = subprocess.run([str(REPO / "build/unix-stock/micropython"), "-c", "import edgetune"],
                           capture_output=True, text=True, timeout=60)
    assert stock.returncode != 0 and "no module named 'edgetune'" in stock.stderr


def test_core_picks_builtin_then_mpy_then_python(micropython, built, tmp_path):
    """firmware/core.py: IMPL "c" with the built-in module, "mpy" with the native module, "py"
    on the stock port without it."""
    from tests.support.natmod import natmod_micropython

    code = "import core\nprint('IMPL', core.IMPL)\n"
    env_path = str(REPO / "firmware")
    got = []
    for binary, path in ((micropython, env_path), (natmod_micropython(tmp_path), env_path),
                         (REPO / "build/unix-stock/micropython", env_path)):
        p = subprocess.run([str(binary), "-c", code], capture_output=True, text=True, timeout=60,
                           env={"MICROPYPATH": path, "PATH": "/usr/bin:/bin"})
        assert p.returncode == 0, p.stderr
        got.append(p.stdout.split()[-1])
    assert got == ["c", "mpy", "py"]


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))


def test_install_refuses_bad_arguments_before_touching_a_board(tmp_path):
    """edgetune install: a missing model or port is named at once (exit 2), nothing is run."""
    etm = tmp_path / "m.etm"
    etm.write_bytes(b"x")
    for args, want in ((["--model", str(tmp_path / "nope.etm")], "no model file"),
                       (["--model", str(etm)], "does not exist")):
        p = subprocess.run([sys.executable, "-m", "edgetune.cli", "install", "--port", str(tmp_path / "ttyNOPE"),
                            *args], capture_output=True, text=True, timeout=60)
        assert p.returncode == 2 and want in p.stderr, p.stderr
    assert "install" in subprocess.run([sys.executable, "-m", "edgetune.cli"], capture_output=True,
                                       text=True).stdout
