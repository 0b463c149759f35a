"""Malformed .etm files on the real unix-port MicroPython, and the same parser and kernels built
for the host under AddressSanitizer + UndefinedBehaviorSanitizer.

Every malformed model must raise ValueError from `edgetune.Model(...)` (or, for random
corruption that happens to leave a valid model, load and run): never a crash. The CRC is
recomputed after each structural mutation so that the checks behind it are reached. All cases
of a test run in ONE MicroPython process; a crash shows up as a negative exit code and the
last case printed names the culprit. Heap limits and bad inputs: test_unix_limits.py.
"""

from __future__ import annotations

import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest

from edgetune.format.modelfile import (
    HEADER_SIZE, LAYER_REC, NONE, OP_AVERAGE_POOL_2D, OP_CONV_2D, OP_DEPTHWISE_CONV_2D,
    OP_FULLY_CONNECTED, OP_MAX_POOL_2D, OP_MEAN, TENSOR_REC, EtmModel, Layer, Tensor, read_etm,
    write_etm,
)

from tests.support.randmodels import random_model

# Base models: together they contain every op, per-channel weight scales, biases and MEAN.
BASE_SEEDS = [2, 3, 10, 14, 16, 17, 26, 28]

RUNNER = """
import edgetune, struct
f = open({path!r}, 'rb')
n = struct.unpack('<I', f.read(4))[0]
lens = struct.unpack('<%dI' % n, f.read(4 * n))
for i in range(n):
    buf = f.read(lens[i])
    try:
        m = edgetune.Model(buf)
    except ValueError as e:
        print('VE', i, e)
        continue
    except Exception as e:
        print('EXC', i, type(e).__name__, e)
        continue
    info = m.info()
    k = 1
    for s in info['input_shape']:
        k *= s
    try:
        x0 = bytes(k)
        x1 = b'\\x7f' * k
    except MemoryError:
        print('OK', i, 'input does not fit the heap')
        continue
    y = m.predict(x0)
    m.predict(x1)
    print('OK', i, len(y))
print('DONE')
"""


def fix_crc(buf: bytearray) -> bytearray:
    struct.pack_into("<I", buf, 12, zlib.crc32(bytes(buf[16:])) & 0xFFFFFFFF)
    return buf


def run_cases(micropython: Path, tmp: Path, cases: list[bytes], timeout: float = 300) -> list[tuple[str, str]]:
    """Run Model() on every case in one process; returns [(status, message)] per case."""
    blob = struct.pack("<I", len(cases)) + b"".join(struct.pack("<I", len(c)) for c in cases) + b"".join(cases)
    path = tmp / "cases.bin"
    path.write_bytes(blob)
    script = tmp / "runner.py"
    script.write_text(RUNNER.format(path=str(path)))
    proc = subprocess.run([str(micropython), str(script)], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    lines = proc.stdout.splitlines()
    last = lines[-1] if lines else "<nothing>"
    assert proc.returncode == 0, (f"MicroPython died with exit code {proc.returncode} (negative = signal) after "
                                  f"{last!r}\n{proc.stderr[-2000:]}")
    assert last == "DONE", f"runner did not finish: {last!r}\n{proc.stderr[-2000:]}"
    results: list[tuple[str, str]] = []
    for line in lines[:-1]:
        status, idx, *rest = line.split(" ", 2)
        assert int(idx) == len(results), line
        results.append((status, rest[0] if rest else ""))
    assert len(results) == len(cases)
    return results


class Cases:
    """Collects (bytes, expectation, label); expectation 'VE' = must raise ValueError, 'any' =
    ValueError or a model that loads and runs."""

    def __init__(self):
        self.items: list[tuple[bytes, str, str]] = []

    def add(self, buf, label: str, expect: str = "VE", crc: bool = True) -> None:
        buf = bytearray(buf)
        if crc and len(buf) >= 16:
            fix_crc(buf)
        self.items.append((bytes(buf), expect, label))


def _hdr(base: bytes) -> dict:
    (nt, nl, tin, tout, t_off, l_off, meta_off, meta_len, sch_off, sch_len) = struct.unpack_from("<HHHHIIIIII", base, 16)
    return dict(nt=nt, nl=nl, tin=tin, tout=tout, t_off=t_off, l_off=l_off, meta_off=meta_off,
                meta_len=meta_len, sch_off=sch_off, sch_len=sch_len)


def _patch(base: bytes, off: int, fmt: str, value) -> bytearray:
    b = bytearray(base)
    struct.pack_into(fmt, b, off, value)
    return b


def structural_cases(model: EtmModel, tag: str) -> Cases:
    base = write_etm(model)
    size = len(base)
    h = _hdr(base)
    c = Cases()
    # Truncations (size field left alone: "truncated"), and with size + CRC patched (deeper checks).
    cuts = sorted({0, 1, 4, 15, 16, 63, 64, 65, size - 1, size - 4}
                  | set(range(0, size, max(1, size // 40))))
    for cut in cuts:
        if cut >= size:
            continue
        c.add(base[:cut], f"{tag} truncated to {cut}", crc=False)
        if cut >= HEADER_SIZE:
            # cutting off only the writer's trailing zero padding leaves a valid file
            expect = "any" if not any(base[cut:]) else "VE"
            c.add(_patch(base[:cut], 8, "<I", cut), f"{tag} truncated to {cut}, size+crc fixed", expect=expect)
    c.add(base + b"\0\0\0\0", f"{tag} padded", crc=False)
    # CRC.
    for pos in (16, 20, h["t_off"] + 5, size // 2, size - 1):
        b = bytearray(base)
        b[pos] ^= 0x40
        c.add(b, f"{tag} byte {pos} flipped, stale CRC", crc=False)
    c.add(_patch(base, 12, "<I", struct.unpack_from("<I", base, 12)[0] ^ 1), f"{tag} wrong CRC field", crc=False)
    # Header fields.
    c.add(_patch(base, 0, "4s", b"EDTX"), f"{tag} bad magic")
    for v in (0, 2, 0xFFFF):
        c.add(_patch(base, 4, "<H", v), f"{tag} version {v}")
    for v in (0, 32, 65, 0xFFFF):
        c.add(_patch(base, 6, "<H", v), f"{tag} header size {v}")
    for v in (0, size - 4, size + 4, 0xFFFFFFFF):
        c.add(_patch(base, 8, "<I", v), f"{tag} size field {v}")
    for v in (0, 1025, 0xFFFF, h["nt"] + 1, h["nt"] + 1000):
        c.add(_patch(base, 16, "<H", v), f"{tag} n_tensors {v}")
    for v in (0, 257, 0xFFFF, h["nl"] + 1, h["nl"] + 100):
        c.add(_patch(base, 18, "<H", v), f"{tag} n_layers {v}")
    if h["nt"] > 1:
        c.add(_patch(base, 16, "<H", max(h["tin"], h["tout"])), f"{tag} n_tensors excludes an in/out tensor")
    for v in (h["nt"], 0xFFFF):
        c.add(_patch(base, 20, "<H", v), f"{tag} input index {v}")
        c.add(_patch(base, 22, "<H", v), f"{tag} output index {v}")
    for fld, off in (("tensor table", 24), ("layer table", 28), ("metadata", 32)):
        cur = struct.unpack_from("<I", base, off)[0]
        for v in (0, 4, 60, cur + 2, size, size - 4, 0x7FFFFFFC, 0xFFFFFFFC, 0xFFFFFFFF):
            c.add(_patch(base, off, "<I", v), f"{tag} {fld} offset {v}")
    for v in (size, 0x7FFFFFFF, 0xFFFFFFFF):
        c.add(_patch(base, 36, "<I", v), f"{tag} metadata length {v}")
    for off, ln in ((size, 4), (8, 4), (h["meta_off"] + 1, 0), (h["meta_off"], 0xFFFFFFFF), (0, 4)):
        b = _patch(base, 40, "<I", off)
        struct.pack_into("<I", b, 44, ln)
        c.add(b, f"{tag} scheme [{off}, +{ln})")
    c.add(_patch(base, 50, "<B", 1), f"{tag} reserved header byte")
    # Tensor records.
    for i, t in enumerate(model.tensors):
        r = h["t_off"] + i * TENSOR_REC
        for v in (0, 3, 255):
            c.add(_patch(base, r + 0, "<B", v), f"{tag} tensor {i} dtype {v}")
        c.add(_patch(base, r + 1, "<B", 2), f"{tag} tensor {i} kind 2")
        c.add(_patch(base, r + 2, "<B", 2), f"{tag} tensor {i} quant 2")
        c.add(_patch(base, r + 3, "<B", 4), f"{tag} tensor {i} axis 4")
        for k in range(4):
            # H or W of an activation can change consistently (same SAME-padding output size and
            # padding, or a MEAN input); channels and constants' shapes cannot
            free = "any" if t.data is None and k in (1, 2) else "VE"
            c.add(_patch(base, r + 4 + 2 * k, "<H", 0), f"{tag} tensor {i} shape[{k}] = 0")
            c.add(_patch(base, r + 4 + 2 * k, "<H", 0xFFFF), f"{tag} tensor {i} shape[{k}] = 65535", expect=free)
            if t.shape[k] > 1:
                c.add(_patch(base, r + 4 + 2 * k, "<H", t.shape[k] - 1), f"{tag} tensor {i} shape[{k}] - 1",
                      expect=free)
        if t.data is not None:
            d_off, d_len = struct.unpack_from("<II", base, r + 24)
            for v in (0, 1, d_off + 1, d_off + 2, size, size - 4 if d_len > 4 else size + 4, 0xFFFFFFFC):
                c.add(_patch(base, r + 24, "<I", v), f"{tag} tensor {i} data offset {v}")
            for v in (0, d_len - 1, d_len + 1, d_len + 4, 0xFFFFFFFF):
                c.add(_patch(base, r + 28, "<I", v), f"{tag} tensor {i} data length {v}")
            c.add(_patch(base, r + 1, "<B", 0), f"{tag} tensor {i} constant turned activation", expect="any")
        else:
            c.add(_patch(base, r + 1, "<B", 1), f"{tag} tensor {i} activation turned constant")
            c.add(_patch(base, r + 0, "<B", 2), f"{tag} tensor {i} activation as int32")
            c.add(_patch(base, r + 2, "<B", 1), f"{tag} tensor {i} activation per-channel")
            for v in (128, -129, 1 << 30):
                c.add(_patch(base, r + 12, "<i", v), f"{tag} tensor {i} zero point {v}")
        if t.scales is not None:
            for v in (0, 2, size, 0xFFFFFFFC):
                c.add(_patch(base, r + 20, "<I", v), f"{tag} tensor {i} scales offset {v}")
    # Layer records.
    nt = len(model.tensors)
    for i, ly in enumerate(model.layers):
        r = h["l_off"] + i * LAYER_REC
        for v in (0, 7, 255):
            c.add(_patch(base, r + 0, "<B", v), f"{tag} layer {i} op {v}")
        c.add(_patch(base, r + 1, "<B", 3), f"{tag} layer {i} activation 3")
        c.add(_patch(base, r + 2, "<H", 1), f"{tag} layer {i} reserved")
        for k, fld in enumerate(("input", "output", "weight", "bias")):
            cur = (ly.input, ly.output, ly.weight, ly.bias)[k]
            for v in (nt, 0xFFFE, (cur + 1) % nt):
                # giving a bias-less layer another layer's bias of the right size is well-formed
                free = "any" if k == 3 and cur == NONE and ly.weight != NONE and v < nt else "VE"
                c.add(_patch(base, r + 4 + 2 * k, "<H", v), f"{tag} layer {i} {fld} index {v}", expect=free)
            if k < 2 or ly.op in (OP_CONV_2D, OP_DEPTHWISE_CONV_2D, OP_FULLY_CONNECTED) and k == 2:
                c.add(_patch(base, r + 4 + 2 * k, "<H", NONE), f"{tag} layer {i} {fld} index NONE")
        spatial = ly.op in (OP_CONV_2D, OP_DEPTHWISE_CONV_2D, OP_MAX_POOL_2D, OP_AVERAGE_POOL_2D)
        if spatial:
            c.add(_patch(base, r + 12, "<B", 0), f"{tag} layer {i} stride_h 0")
            c.add(_patch(base, r + 13, "<B", 0), f"{tag} layer {i} stride_w 0")
            c.add(_patch(base, r + 16, "<h", ly.pad_h + 1), f"{tag} layer {i} pad_h + 1")
            c.add(_patch(base, r + 18, "<h", ly.pad_w - 1), f"{tag} layer {i} pad_w - 1")
            c.add(_patch(base, r + 16, "<h", -32768), f"{tag} layer {i} pad_h -32768")
            c.add(_patch(base, r + 14, "<B", 0), f"{tag} layer {i} filter_h 0")
            c.add(_patch(base, r + 12, "<B", 255), f"{tag} layer {i} stride_h 255",
                  expect="VE" if model.tensors[ly.output].shape[1] > 1 else "any")
        if ly.op in (OP_CONV_2D, OP_DEPTHWISE_CONV_2D):
            c.add(_patch(base, r + 14, "<B", ly.filter_h + 1), f"{tag} layer {i} filter_h + 1")
            c.add(_patch(base, r + 15, "<B", 255), f"{tag} layer {i} filter_w 255")
        c.add(_patch(base, r + 20, "<H", 0), f"{tag} layer {i} depth_multiplier 0")
        c.add(_patch(base, r + 20, "<H", ly.depth_multiplier + 1), f"{tag} layer {i} depth_multiplier + 1")
        for v in (0, ly.multipliers.size + 1, 0xFFFF) if ly.multipliers.size else (1, 0xFFFF):
            c.add(_patch(base, r + 22, "<H", v), f"{tag} layer {i} n_mult {v}")
        if ly.op in (OP_CONV_2D, OP_DEPTHWISE_CONV_2D, OP_FULLY_CONNECTED, OP_MEAN):
            c.add(_patch(base, r + 24, "<i", ly.input_offset + 1), f"{tag} layer {i} input_offset + 1")
            c.add(_patch(base, r + 28, "<i", ly.output_offset - 1), f"{tag} layer {i} output_offset - 1")
        c.add(_patch(base, r + 24, "<i", 1 << 30), f"{tag} layer {i} input_offset 2^30")
        c.add(_patch(base, r + 32, "<i", -129), f"{tag} layer {i} act_min -129")
        c.add(_patch(base, r + 36, "<i", 128), f"{tag} layer {i} act_max 128")
        b = _patch(base, r + 32, "<i", 100)
        struct.pack_into("<i", b, r + 36, 99)
        c.add(b, f"{tag} layer {i} act_min > act_max")
        if ly.multipliers.size:
            m_off = struct.unpack_from("<I", base, r + 40)[0]
            n = ly.multipliers.size
            for v in (0, 2, m_off + 2, size - 4, 0xFFFFFFFC):
                c.add(_patch(base, r + 40, "<I", v), f"{tag} layer {i} multiplier offset {v}")
            c.add(_patch(base, m_off, "<i", -1), f"{tag} layer {i} negative multiplier")
            for v in (31, -32, 1 << 20, -(1 << 31)):
                c.add(_patch(base, m_off + 4 * n + 4 * (n - 1), "<i", v), f"{tag} layer {i} shift {v}")
        if ly.op == OP_MEAN:
            c.add(_patch(base, r + 44, "<i", 1), f"{tag} layer {i} MEAN p0 1")
    return c


def _ops(model: EtmModel) -> set[int]:
    return {ly.op for ly in model.layers}


@pytest.fixture(scope="module")
def bases() -> dict[str, EtmModel]:
    models = {f"b{s}": random_model(s) for s in BASE_SEEDS}
    ops = set().union(*(_ops(m) for m in models.values()))
    assert ops == {OP_CONV_2D, OP_DEPTHWISE_CONV_2D, OP_FULLY_CONNECTED, OP_MAX_POOL_2D, OP_AVERAGE_POOL_2D,
                   OP_MEAN}, ops
    for m in models.values():
        read_etm(write_etm(m))  # the bases themselves are valid
    return models


@pytest.mark.natmod
def test_structural_mutations_raise_value_error(micropython, tmp_path, bases):
    cases = Cases()
    for tag, model in bases.items():
        cases.add(write_etm(model), f"{tag} unmodified", expect="OK")
        cases.items += structural_cases(model, tag).items
    results = run_cases(micropython, tmp_path, [b for b, _, _ in cases.items])
    wrong = []
    for (buf, expect, label), (status, msg) in zip(cases.items, results):
        big = status == "EXC" and msg.startswith("MemoryError edgetune: model needs")
        if (status == "EXC" and not (expect == "any" and big)) or (expect == "VE" and status != "VE") \
                or (expect == "OK" and status != "OK"):
            wrong.append(f"{label}: expected {expect}, got {status} {msg}")
        elif status == "VE":
            assert msg.startswith("edgetune: "), msg
    assert not wrong, f"{len(wrong)} of {len(cases.items)} cases wrong:\n" + "\n".join(wrong[:40])
    n_ve = sum(1 for s, _ in results if s == "VE")
    assert n_ve > 0.9 * len(results)


@pytest.mark.natmod
def test_error_messages_say_what_is_wrong(micropython, tmp_path, bases):
    base = write_etm(bases["b3"])
    cases = [
        (base[:40], "header alone is 64"),
        (base[:-4], "truncated"),
        (bytes(fix_crc(_patch(base, 4, "<H", 2))), "version 2"),
        (bytes(_patch(base, 13, "<B", base[13] ^ 1)), "CRC mismatch"),
        (bytes(fix_crc(_patch(base, 18, "<H", 0))), "0 layers"),
        (bytes(fix_crc(_patch(base, 24, "<I", 0xFFFFFFFC))), "tensor table"),
    ]
    results = run_cases(micropython, tmp_path, [b for b, _ in cases])
    for (_, want), (status, msg) in zip(cases, results):
        assert status == "VE" and want in msg, (want, status, msg)


@pytest.mark.parametrize("region", ["tables", "anywhere"])
def test_random_corruption_never_crashes(micropython, tmp_path, bases, region):
    """Random byte flips with the CRC fixed: ValueError, or (e.g. a flipped weight) a model that
    loads and runs; never a crash."""
    rng = np.random.default_rng(2024 if region == "tables" else 2025)
    cases = []
    for model in bases.values():
        base = write_etm(model)
        h = _hdr(base)
        end = h["l_off"] + h["nl"] * LAYER_REC if region == "tables" else len(base)
        for _ in range(250):
            b = bytearray(base)
            for _ in range(int(rng.integers(1, 5))):
                pos = int(rng.integers(16, end))
                b[pos] = int(rng.integers(0, 256)) if rng.random() < 0.7 else b[pos] ^ (1 << int(rng.integers(0, 8)))
            cases.append(bytes(fix_crc(b)))
    results = run_cases(micropython, tmp_path, cases)
    statuses = [s for s, _ in results]
    # a corrupted shape can make a well-formed model whose arena exceeds the heap: MemoryError
    other = [r for r in results if r[0] == "EXC" and not r[1].startswith("MemoryError edgetune: model needs")]
    assert not other, other[:5]
    assert statuses.count("VE") > 0.3 * len(cases)


# --------------------------------------------------------------------------------------------
# The same parser and kernels under AddressSanitizer + UndefinedBehaviorSanitizer
# --------------------------------------------------------------------------------------------

# tests/c/malformed_harness.c (shares fuzz/fuzz_common.h with the libFuzzer targets): the engine
# (native_modules/edgetune/*.c, no bindings) and the kernels, built with ASan+UBSan.
HARNESS_C = Path(__file__).resolve().parents[1] / "c" / "malformed_harness.c"



@pytest.fixture(scope="module")
def sanitized_harness(tmp_path_factory) -> Path:
    import shutil

    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler")
    mod = Path(__file__).resolve().parents[2] / "native_modules" / "edgetune"
    out = tmp_path_factory.mktemp("sanitized")
    exe = out / "harness"
    cmd = [cc, "-std=c99", "-O1", "-g", "-Wall", "-Wextra", "-Werror", "-Wno-unused-parameter",
           "-Wno-unused-function", "-ffp-contract=off",
           "-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer",
           f"-I{mod}", f"-I{mod / 'kernels'}", f"-I{mod.parents[1] / 'fuzz'}", str(HARNESS_C),
           *map(str, sorted(mod.glob("*.c"))), *map(str, sorted((mod / "kernels").glob("*.c"))), "-o", str(exe)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return exe


def _run_harness(exe: Path, *args) -> subprocess.CompletedProcess:
    env = {"ASAN_OPTIONS": "detect_leaks=0:abort_on_error=0", "UBSAN_OPTIONS": "print_stacktrace=1",
           "PATH": "/usr/bin:/bin"}
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, timeout=300, env=env)


def test_parser_and_kernels_under_sanitizers(sanitized_harness, tmp_path, bases):
    """Every structural mutation and 2000 random corruptions through model.c and the kernels
    built with ASan+UBSan: no out-of-bounds access, no undefined behaviour, and the same
    accept/reject decisions as on the unix port's expectations."""
    cases = Cases()
    for tag, model in bases.items():
        cases.add(write_etm(model), f"{tag} unmodified", expect="OK")
        cases.items += structural_cases(model, tag).items
    rng = np.random.default_rng(77)
    for model in bases.values():
        base = write_etm(model)
        for _ in range(250):
            b = bytearray(base)
            for _ in range(int(rng.integers(1, 5))):
                b[int(rng.integers(16, len(b)))] = int(rng.integers(0, 256))
            cases.add(b, "random", expect="any")
    blob = struct.pack("<I", len(cases.items)) + b"".join(struct.pack("<I", len(b)) for b, _, _ in cases.items) \
        + b"".join(b for b, _, _ in cases.items)
    (tmp_path / "cases.bin").write_bytes(blob)
    proc = _run_harness(sanitized_harness, "cases", tmp_path / "cases.bin")
    assert proc.returncode == 0 and proc.stdout.endswith("DONE\n"), (proc.stdout[-500:], proc.stderr[-4000:])
    lines = proc.stdout.splitlines()[:-1]
    assert len(lines) == len(cases.items)
    wrong = [f"{label}: expected {expect}, got {line}" for (_, expect, label), line in zip(cases.items, lines)
             if (expect == "VE" and not line.startswith("VE ")) or (expect == "OK" and not line.startswith("OK "))]
    assert not wrong, "\n".join(wrong[:20])


def test_random_models_under_sanitizers_match_numpy(sanitized_harness, tmp_path):
    """Valid random models (including saturating shifts) through the sanitized kernels: no
    undefined behaviour (signed overflow, bad shifts), outputs equal to the numpy twin."""
    from edgetune.twin import reference

    for seed in range(2000, 2080):
        model = random_model(seed)
        xs = np.random.default_rng(seed).integers(-128, 128, (8, model.input_tensor.size)).astype(np.int8)
        xs[0], xs[1] = -128, 127
        (tmp_path / "m.etm").write_bytes(write_etm(model))
        (tmp_path / "x.bin").write_bytes(xs.tobytes())
        proc = _run_harness(sanitized_harness, "run", tmp_path / "m.etm", tmp_path / "x.bin", tmp_path / "y.bin")
        assert proc.returncode == 0, (seed, proc.stdout, proc.stderr[-4000:])
        got = np.frombuffer((tmp_path / "y.bin").read_bytes(), np.int8).reshape(len(xs), -1)
        want = reference.forward_batch(model, xs).reshape(len(xs), -1)
        np.testing.assert_array_equal(got, want, err_msg=f"seed {seed}")
