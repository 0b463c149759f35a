"""m.quantize(samples, scale, zero_point): C module == edgetune_py == numpy twin, bit for bit.

The C kernel (native_modules/edgetune/kernels/et_quantize_f32.c through modedgetune.c) and the
pure-Python Model.quantize (firmware/edgetune_py.py) run on the real unix-port MicroPython in
one process; the numpy twin is host/edgetune/twin/quantize_input.py. Per model (input channels C =
1, 3, 6 and 20, the last beyond the binding's on-stack channel limit) and per case >= 10 200 values go
through float32 arrays and through lists of float64 numbers (rounded to float32 on the way in):
ordinary readings, exact ties (x * inv + zp = k + 0.5 in float32, both parities, both signs),
huge and infinite values, denormals, negative zero, tiny and huge scales, fractional zero points.
Hand-computed values pin the recipe itself (round half to even, the clamp), so a twin that
drifted together with the C code still fails. Refusals raise the same exception types in both.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from edgetune.format.modelfile import write_etm
from edgetune.twin.quantize_input import quantize_input

from tests.support.fallback import qemu_firmware, run_edgetune_py_on_qemu  # noqa: F401 (fixture)
from tests.support.tinymodels import chain

REPO = Path(__file__).resolve().parents[2]
FIRMWARE = REPO / "firmware"
N_VALUES = 10_200  # values per case (rows of C values, rounded up)

RUNNER = """
import edgetune, edgetune_py, binascii
from array import array
D = {d!r}
for name, c, cases in {cases!r}:
    buf = open(D + '/' + name + '.etm', 'rb').read()
    for tag, mod in (('C', edgetune), ('P', edgetune_py)):
        m = mod.Model(buf)
        for k, has_sc in cases:
            x = array('f', open(D + '/%s.%d.x' % (name, k), 'rb').read())
            xd = list(array('d', open(D + '/%s.%d.xd' % (name, k), 'rb').read()))
            if has_sc:
                sc = list(array('d', open(D + '/%s.%d.s' % (name, k), 'rb').read()))
                zp = list(array('d', open(D + '/%s.%d.z' % (name, k), 'rb').read()))
                a = m.quantize(x, sc, zp)
                b = m.quantize(xd, scale=sc, zero_point=zp)
                t = m.quantize(tuple(x), zero_point=zp, scale=tuple(sc))
            else:
                a = m.quantize(x)
                b = m.quantize(xd)
                t = m.quantize(tuple(x))
            print('Q', tag, name, k, binascii.hexlify(a).decode(), binascii.hexlify(b).decode(),
                  binascii.hexlify(t).decode())
print('DONE')
"""

ERRORS = """
import edgetune, edgetune_py
from array import array
buf = open({etm!r}, 'rb').read()
nan, inf = float('nan'), float('inf')
C = 6
cases = [
    ([0.0] * 5, None, None),                     # not a multiple of C
    ([0.0] * 13, None, None),
    ([0.0] * 5 + [nan], None, None),             # NaN sample (list)
    (array('f', [0.0] * 11 + [nan]), None, None),  # NaN sample (float32 buffer)
    ([0.0] * 6, [1.0] * 5, None),                # scale of the wrong length
    ([0.0] * 6, None, [0.0] * 7),                # zero_point of the wrong length
    ([0.0] * 6, [1.0] * 5 + [0.0], None),        # zero scale
    ([0.0] * 6, [1.0] * 5 + [-1.0], None),       # negative scale
    ([0.0] * 6, [1.0] * 5 + [inf], None),        # infinite scale
    ([0.0] * 6, [1.0] * 5 + [nan], None),        # NaN scale
    ([0.0] * 6, [1.0] * 5 + [1e39], None),       # finite double, inf as float32
    ([0.0] * 6, [1.0] * 5 + [1e-39], None),      # 1/scale overflows float32
    ([0.0] * 6, [1.0] * 5 + [1e-50], None),      # 0 as float32
    ([0.0] * 6, None, [0.0] * 5 + [inf]),        # infinite zero point
    ([0.0] * 6, None, [0.0] * 5 + [nan]),
    (b'\\x00' * 24, None, None),                  # bytes are not samples
    (array('b', [0] * 24), None, None),          # nor int8 arrays (C refuses; see edgetune_py)
    (['1'] + [0.0] * 5, None, None),             # a non-number item
    ([0.0] * 6, 1.0, None),                      # a scale that is not a sequence
    ([0.0] * 6, None, 3),
]
for i, (x, s, z) in enumerate(cases):
    for tag, mod in (('C', edgetune), ('P', edgetune_py)):
        m = mod.Model(buf)
        if tag == 'P' and i == 16:
            continue  # the fallback cannot tell an int8 array from a float32 one on MicroPython
        try:
            m.quantize(x, s, z)
            print('E', tag, i, 'none')
        except Exception as e:
            print('E', tag, i, type(e).__name__)
print('DONE')
"""


def _model(c: int, scale: float, zp: int) -> bytes:
    return write_etm(chain([("fc", 3, False)], (1, 1, 4, c), in_scale=scale, in_zp=zp))


def _ties(rng: np.random.Generator, sc: np.ndarray, zp: np.ndarray, rows: int) -> np.ndarray:
    """Samples whose float32 x * inv + zp is exactly k + 0.5 (sc powers of two, zp multiples
    of 1/4, so every step is exact)."""
    inv = (np.float32(1) / sc).astype(np.float64)
    k = rng.integers(-140, 140, (rows, sc.size)).astype(np.float64)
    return ((k + 0.5 - zp) / inv).astype(np.float32)


def _samples(rng: np.random.Generator, sc: np.ndarray, zp: np.ndarray, ties: bool) -> tuple[np.ndarray, np.ndarray]:
    """(float32 samples, float64 samples) of >= N_VALUES values (rows x C channels), a mix of
    kinds; doubles beyond the float32 range become +-inf on the way in."""
    with np.errstate(over="ignore"):
        return _samples_(rng, sc, zp, ties)


def _samples_(rng, sc, zp, ties):
    c = sc.size
    rows = -(-N_VALUES // c)
    inv = (np.float32(1) / sc.astype(np.float32)).astype(np.float64)
    span = 160.0 / inv  # about the int8 range after scaling
    x = rng.uniform(-1, 1, (rows, c)) * span - zp / inv
    kind = rng.integers(0, 10, (rows, c))
    x = np.where(kind == 0, rng.choice([3e38, -3e38, 1e30, -1e30, np.inf, -np.inf], (rows, c)), x)
    x = np.where(kind == 1, rng.choice([0.0, -0.0, 1e-45, -1e-45, 1e-40, -1.2e-38], (rows, c)), x)
    x = np.where(kind == 2, rng.normal(0, 1, (rows, c)) * span * 10, x)
    xd = x.copy()
    x32 = x.astype(np.float32)
    if ties:
        t = _ties(rng, sc.astype(np.float32), zp, rows)
        x32 = np.where(kind >= 5, t, x32)
        xd = np.where(kind >= 5, t.astype(np.float64), xd)
    # exact negative zeros (where() keeps the sign bit of -0.0)
    x32[::97, 0] = np.float32(-0.0)
    xd[::97, 0] = -0.0
    return x32, xd


def _cases(rng: np.random.Generator) -> list[tuple]:
    """(model name, C, model input scale, zp, [(case, scale or None, zp or None, ties)])."""
    out = []
    for name, c, s_in, z_in in (("c1", 1, 0.05, 7), ("c3", 3, 1 / 16, -128), ("c6", 6, 0.037, -3),
                                ("c20", 20, 0.011, 40)):
        cases = [(0, None, None, False)]
        # the raw_input_quant kind of folded scales: random positive, fractional zero points
        cases.append((1, rng.uniform(1e-4, 10.0, c), rng.uniform(-200, 200, c), False))
        # powers of two and quarter zero points: ties everywhere
        cases.append((2, 2.0 ** rng.integers(-12, 8, c), rng.integers(-400, 400, c) / 4.0, True))
        # tiny and huge scales (down to the smallest with a finite float32 reciprocal)
        cases.append((3, rng.choice([3e-39, 1e-30, 1e-10, 1e10, 1e30, 3e38], c), rng.uniform(-5, 5, c), False))
        cases.append((4, 2.0 ** rng.integers(-126, -100, c), np.zeros(c), True))
        out.append((name, c, s_in, z_in, cases))
    return out


@pytest.mark.natmod
def test_quantize_c_equals_py_equals_twin(micropython, run_mpy, tmp_path):
    rng = np.random.default_rng(1234)
    expect: dict[tuple[str, int], str] = {}
    mp_cases = []
    total = 0
    for name, c, s_in, z_in, cases in _cases(rng):
        (tmp_path / f"{name}.etm").write_bytes(_model(c, s_in, z_in))
        listed = []
        for k, sc, zp, ties in cases:
            if sc is None:
                sc_, zp_ = np.full(c, np.float32(s_in), np.float64), np.full(c, float(z_in))
            else:
                sc_, zp_ = np.asarray(sc, np.float64), np.asarray(zp, np.float64)
            x32, xd = _samples(rng, sc_, zp_, ties)
            (tmp_path / f"{name}.{k}.x").write_bytes(x32.tobytes())
            (tmp_path / f"{name}.{k}.xd").write_bytes(xd.astype("<f8").tobytes())
            if sc is not None:
                (tmp_path / f"{name}.{k}.s").write_bytes(sc_.astype("<f8").tobytes())
                (tmp_path / f"{name}.{k}.z").write_bytes(zp_.astype("<f8").tobytes())
            q32 = quantize_input(x32, sc_, zp_).tobytes().hex()
            qd = quantize_input(xd, sc_, zp_).tobytes().hex()
            expect[(name, k)] = f"{q32} {qd} {q32}"
            total += x32.size
            listed.append((k, sc is not None))
            if ties:  # the tie construction really made ties
                with np.errstate(invalid="ignore", over="ignore"):
                    v = x32.astype(np.float32) * (np.float32(1) / sc_.astype(np.float32)) + zp_.astype(np.float32)
                    assert np.count_nonzero(v - np.floor(v) == 0.5) > x32.size // 4
        mp_cases.append((name, c, listed))
    assert total >= 4 * 10_000
    out = run_mpy(RUNNER.format(d=str(tmp_path), cases=mp_cases), heapsize="16M", timeout=600,
                  extra_path=[str(FIRMWARE)])
    assert out.rstrip().endswith("DONE"), out[-2000:]
    got = {}
    for line in out.splitlines():
        if line.startswith("Q "):
            _, tag, name, k, a, b, t = line.split()
            got[(tag, name, int(k))] = f"{a} {b} {t}"
    for (name, k), want in expect.items():
        for tag in ("C", "P"):
            assert got.get((tag, name, k)) == want, f"{tag} {name} case {k} differs from the numpy twin"


def test_recipe_by_hand():
    """Values worked out by hand; the twin must give them (so the bit-parity test above would
    catch an implementation pair that drifted from the documented recipe together)."""
    sc, zp = [0.25], [0.0]
    x = [0.125, 0.375, 0.625, -0.125, -0.375, -0.0, 31.875, 31.75, 31.625, -32.125, -32.0, 1e38, -np.inf, np.inf]
    want = [0, 2, 2, 0, -2, 0, 127, 127, 126, -128, -128, 127, -128, 127]
    assert quantize_input(x, sc, zp).tolist() == want
    # fractional zero point added in float32 after the product: 1/0.1f rounds to 10.0f, then
    # 0.1f * 10 -> 1.0f (+0.5 = 1.5 -> 2) and 0.05f * 10 -> 0.5f (+0.5 = 1.0 -> 1)
    assert quantize_input([0.1, 0.05], [0.1], [0.5]).tolist() == [2, 1]
    with pytest.raises(ValueError):
        quantize_input([np.nan], [1.0], [0.0])
    with pytest.raises(ValueError):
        quantize_input([0.0], [1e-39], [0.0])


def test_python_fallback_on_cpython_matches_twin():
    """edgetune_py under CPython too (the host runs it in bench/training.py): same bits."""
    sys.path.insert(0, str(FIRMWARE))
    import edgetune_py

    rng = np.random.default_rng(7)
    m = edgetune_py.Model(_model(6, 0.037, -3))
    sc = 2.0 ** rng.integers(-8, 4, 6)
    zp = rng.integers(-300, 300, 6) / 4.0
    x32, xd = _samples(rng, sc, zp, True)
    assert m.quantize(list(xd.reshape(-1)), list(sc), list(zp)) == quantize_input(xd, sc, zp).tobytes()
    assert m.quantize(x32.reshape(-1).tolist()) == quantize_input(x32, [np.float32(0.037)] * 6, [-3.0] * 6).tobytes()


@pytest.mark.natmod
def test_refusals_same_types(micropython, run_mpy, tmp_path):
    etm = tmp_path / "m.etm"
    etm.write_bytes(_model(6, 0.037, -3))
    out = run_mpy(ERRORS.format(etm=str(etm)), extra_path=[str(FIRMWARE)])
    assert out.rstrip().endswith("DONE"), out
    rows = [line.split() for line in out.splitlines() if line.startswith("E ")]
    by = {(tag, int(i)): kind for _, tag, i, kind in rows}
    want = ["ValueError"] * 15 + ["TypeError"] * 5
    for i, kind in enumerate(want):
        assert by[("C", i)] == kind, (i, by[("C", i)])
        if i != 16:
            assert by[("P", i)] == kind, (i, by[("P", i)])


QEMU_SCRIPT = """
import edgetune, edgetune_py, binascii
from array import array
print('FLOAT32', 1.0 + 2.0 ** -30 == 1.0)
buf = binascii.unhexlify({etm!r})
for k, xh, sh, zh in {cases!r}:
    x = array('f', binascii.unhexlify(xh))
    sc = array('f', binascii.unhexlify(sh)) if sh else None
    zp = array('f', binascii.unhexlify(zh)) if zh else None
    for tag, mod in (('C', edgetune), ('P', edgetune_py)):
        m = mod.Model(buf)
        print('Q', tag, k, binascii.hexlify(m.quantize(x, sc, zp)).decode(),
              binascii.hexlify(m.quantize(list(x), sc, zp)).decode())
print('DONE')
"""


def test_quantize_on_single_precision_cortex_m3(qemu_firmware, tmp_path):
    """The qemu firmware's MicroPython has float32 floats (as MCU ports): the C module and
    edgetune_py (frozen in the firmware) there == the numpy twin; scale/zero_point given as 'f' arrays."""
    rng = np.random.default_rng(99)
    etm = _model(6, 0.037, -3)
    spec, expect = [], {}
    for k, sc, zp, ties in (
        (0, None, None, False),
        (1, rng.uniform(1e-4, 10.0, 6), rng.uniform(-200, 200, 6), False),
        (2, 2.0 ** rng.integers(-12, 8, 6), rng.integers(-400, 400, 6) / 4.0, True),
        (3, rng.choice([3e-39, 1e-30, 1e-10, 1e10, 3e38], 6), rng.uniform(-5, 5, 6), False),
    ):
        sc_ = np.full(6, np.float32(0.037), np.float64) if sc is None else np.asarray(sc, np.float64)
        zp_ = np.full(6, -3.0) if zp is None else np.asarray(zp, np.float64)
        x32 = _samples(rng, sc_, zp_, ties)[0][:150]  # 900 values: the board's heap is small
        q = quantize_input(x32, sc_, zp_).tobytes().hex()
        expect[k] = f"{q} {q}"
        spec.append((k, x32.tobytes().hex(), "" if sc is None else sc_.astype("<f4").tobytes().hex(),
                     "" if zp is None else zp_.astype("<f4").tobytes().hex()))
    scripts = []
    for case in spec:  # one session (soft reset, whole heap free) per case
        script = tmp_path / f"q{case[0]}.py"
        script.write_text(QEMU_SCRIPT.format(etm=etm.hex(), cases=[case]))
        scripts.append(script)
    out = run_edgetune_py_on_qemu(qemu_firmware, scripts, tmp_path, timeout=300)
    assert "FLOAT32 True" in out  # really a single-precision MicroPython
    rows = {}
    for line in out.splitlines():
        if line.startswith("Q "):
            _, tag, k, a, b = line.split()
            rows[(tag, int(k))] = f"{a} {b}"
    for k, want in expect.items():
        assert rows.get(("C", k)) == want, f"case {k}: the C module on qemu differs from the numpy twin"
        assert rows.get(("P", k)) == want, f"case {k}: edgetune_py on single-precision MicroPython differs"
