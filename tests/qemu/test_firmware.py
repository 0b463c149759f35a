"""Firmware build checks that need no board and no ESP-IDF.

What the ESP32-S3 (xtensa) build could break that the unix port (x86-64) would not, checked by
compiling every plain-C source of the module (kernels/*.c and the engine's *.c; the
MicroPython bindings in bindings/ are compiled for real by the qemu and rp2040 builds) for
32-bit targets with -std=c99 -Wall -Wextra -Werror -Wdouble-promotion -Wfloat-conversion
-Wpointer-arith -ffp-contract=off:

- arm-none-eabi-gcc -mcpu=cortex-m0plus -mthumb (RP2040; no hardware divide, no FPU):
  32-bit int/long/pointers, int32_t is `long` (as with ESP-IDF 5's xtensa toolchain);
- arm-none-eabi-gcc -mcpu=cortex-m4 -mfloat-abi=hard (a single-precision FPU with fused
  multiply-add, like the ESP32-S3's): and the objects contain NO fused multiply-add
  instruction (vfma/vfms/vfnma/vfnms), i.e. -ffp-contract=off is honoured -- the same source
  with -ffp-contract=fast does contain them, so the check can fail;
- clang --target=i386 with picolibc's headers: 32-bit with int32_t = `int` (the other typedef
  choice), which catches printf formats and pointer casts that assume one of them.
Also: micropython.cmake (rp2, esp32) applies -ffp-contract=off to every module source, and
`make firmware BOARD=esp32s3` fails at once with the ESP-IDF install hint where IDF_PATH is
unset. The frozen-model alignment rewrite (host/edgetune/device/freeze.py) is checked on
mpy-tool's real output format here and on a linked image in tests/qemu/test_qemu.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from edgetune.device import freeze

REPO = Path(__file__).resolve().parents[2]
MOD = REPO / "native_modules" / "edgetune"
SOURCES = sorted(MOD.glob("kernels/*.c")) + sorted(MOD.glob("*.c"))  # the kernels and the engine (no bindings/)
WARN = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-Wdouble-promotion", "-Wfloat-conversion", "-Wpointer-arith",
        "-ffp-contract=off"]
PICOLIBC_INC = Path("/usr/lib/picolibc/arm-none-eabi/include")


def _need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} missing; run: make setup", pytrace=False)
    return path


def _compile(cmd: list[str], out_dir: Path, extra: list[str] = ()) -> list[Path]:
    objs = []
    errors = []
    for src in SOURCES:
        obj = out_dir / (src.stem + ".o")
        p = subprocess.run([*cmd, *WARN, *extra, f"-I{MOD}", f"-I{MOD / 'kernels'}", "-c", str(src), "-o", str(obj)],
                           capture_output=True, text=True, timeout=120)
        if p.returncode != 0:
            errors.append(f"{src.relative_to(REPO)}:\n{p.stderr}")
        objs.append(obj)
    assert not errors, "\n".join(errors)
    return objs


def test_sources_exist():
    assert len(SOURCES) >= 10 and all(s.is_file() for s in SOURCES)


def test_compiles_for_cortex_m0plus(tmp_path: Path):
    _need("arm-none-eabi-gcc")
    objs = _compile(["arm-none-eabi-gcc", "-mcpu=cortex-m0plus", "-mthumb", "-Os"], tmp_path)
    assert all(o.stat().st_size > 0 for o in objs)


def _fused_ops(objs: list[Path]) -> int:
    n = 0
    for o in objs:
        dis = subprocess.run(["arm-none-eabi-objdump", "-d", str(o)], capture_output=True, text=True, check=True).stdout
        n += sum(1 for line in dis.splitlines() if any(f"\t{op}" in line for op in ("vfma", "vfms", "vfnma", "vfnms")))
    return n


def test_no_fused_multiply_add_on_an_fpu_target(tmp_path: Path):
    _need("arm-none-eabi-gcc")
    m4f = ["arm-none-eabi-gcc", "-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16", "-O2"]
    assert _fused_ops(_compile(m4f, tmp_path)) == 0
    # the detector works: contraction allowed -> fused instructions appear
    (tmp_path / "fast").mkdir()
    assert _fused_ops(_compile(m4f, tmp_path / "fast", ["-ffp-contract=fast"])) > 0


def test_compiles_for_i386_where_int32_t_is_int(tmp_path: Path):
    _need("clang")
    if not (PICOLIBC_INC / "stdio.h").is_file():
        pytest.fail(f"picolibc headers missing at {PICOLIBC_INC}; run: make setup (apt picolibc-arm-none-eabi)",
                    pytrace=False)
    res = subprocess.run(["clang", "-print-resource-dir"], capture_output=True, text=True, check=True).stdout.strip()
    cmd = ["clang", "--target=i386-unknown-none-elf", "-ffreestanding", "-nostdinc", "-isystem", f"{res}/include",
           "-isystem", str(PICOLIBC_INC), "-O2"]
    probe = tmp_path / "probe.c"
    probe.write_text('#include <stdint.h>\n_Static_assert(__builtin_types_compatible_p(int32_t, int), "int");\n'
                     '_Static_assert(sizeof(void *) == 4 && sizeof(long) == 4, "ilp32");\n')
    subprocess.run([*cmd, "-c", str(probe), "-o", str(tmp_path / "probe.o")], check=True)
    _compile(cmd, tmp_path)


def test_cmake_module_turns_off_fp_contraction():
    text = (MOD / "micropython.cmake").read_text()
    assert "-ffp-contract=off" in text and "set_source_files_properties(${EDGETUNE_SOURCES}" in text
    assert "-ffp-contract=off" in (MOD / "micropython.mk").read_text()


def test_esp32s3_build_fails_fast_without_esp_idf(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if k != "IDF_PATH"}
    p = subprocess.run(["make", "--no-print-directory", "firmware", "BOARD=esp32s3"], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode != 0
    assert "ESP-IDF" in p.stderr and "v5.2" in p.stderr and "export.sh" in p.stderr
    # an IDF_PATH that is not an ESP-IDF tree is refused the same way
    env["IDF_PATH"] = str(tmp_path)
    p = subprocess.run(["bash", str(REPO / "scripts" / "firmware_esp32s3.sh")], env=env, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode != 0 and "ESP-IDF not found" in p.stderr


def test_freeze_module_round_trip(tmp_path: Path):
    etm = b"EDTM" + bytes(range(256)) * 3
    etm = etm[:12] + (0x12345678).to_bytes(4, "little") + etm[16:]
    (tmp_path / "m.etm").write_bytes(etm)
    out = freeze.write_module(tmp_path / "m.etm", tmp_path / "et_model.py")
    ns: dict = {}
    exec(compile(out.read_text(), "et_model.py", "exec"), ns)
    assert ns["MODEL"] == etm and ns["SIZE"] == len(etm) and ns["CRC"] == 0x12345678 and ns["NAME"] == "m.etm"
    with pytest.raises(ValueError):
        freeze.module_source(b"nope" + bytes(20))


def test_align_rewrites_only_the_model_constants():
    # The exact shape mpy-tool.py (MicroPython 1.25) prints for frozen bytes constants.
    model = ('static const mp_obj_str_t const_obj_et_model__lt_module_gt__0 = {{&mp_type_bytes}, 4242, 3, '
             '(const byte*)"\\x45\\x00\\x01"};')
    other = ('static const mp_obj_str_t const_obj_app__lt_module_gt__1 = {{&mp_type_bytes}, 17, 2, '
             '(const byte*)"\\x01\\x02"};')
    text, n = freeze.align_c_text(f"x\n{model}\n{other}\n")
    assert n == 1
    assert ('static const byte const_obj_et_model__lt_module_gt__0_data[4] __attribute__((aligned(4))) = '
            '"\\x45\\x00\\x01";') in text
    assert ("static const mp_obj_str_t const_obj_et_model__lt_module_gt__0 = {{&mp_type_bytes}, 4242, 3, "
            "const_obj_et_model__lt_module_gt__0_data};") in text
    assert other in text
    again, n2 = freeze.align_c_text(text)
    assert n2 == 0 and again == text
