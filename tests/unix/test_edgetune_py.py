"""firmware/edgetune_py.py (the pure-Python Model) vs the C module and the numpy twin, bit for bit.

On the real unix-port MicroPython, in ONE process per test, each case runs through both
`edgetune.Model` (C) and `edgetune_py.Model` (pure Python) with the same .etm, scheme argument,
momentum, QAS flag and samples:

- the reference IMU model of `make demo` on real windows (5 schemes); random hand-built
  trainable models (tests/support/trainingcases.py `train_model`: conv, depthwise, pools, MEAN,
  hidden FC, FC classifier) and random Keras models through the real TFLite converter and
  export.py (tests/support/modelgen.py), x schemes (default, classifier only, bias-only
  stored in the .etm, classifier + channel-sliced conv/depthwise/FC), x QAS on/off, momentum
  on/off: predict before training, the STEPS losses (float32 bits), the saved trained-weights
  files (byte for byte), evaluate's (loss, accuracy), predict after training and the whole
  info() dict are identical, and equal the numpy twin's (host/edgetune/twin/training.py);
- a file saved by one implementation loads into the other and re-saves to the same bytes;
  refusals (bad label, non-finite lr, wrong input length, momentum 1, bad/truncated files,
  an overflowing scheme) raise ValueError in both;
- on the Cortex-M3 qemu firmware, whose MicroPython has single-precision floats as MCU ports
  do, edgetune_py (frozen into that firmware, as on a board) equals the C module and the twin too;
- the device app (firmware/app.py) runs on the fallback when the C module cannot be imported
  (core.IMPL == "py") and its collect/train/score/save session gives the same @et rows and the
  same weights file as with the C module.
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import numpy as np
import pytest

from edgetune.twin import memory
from edgetune.format.modelfile import read_etm, write_etm
from edgetune.device.monitor import parse_text
from edgetune.format.scheme import Scheme
from edgetune.twin.training import Trainer

from tests.support.relhelp import demo_module
from tests.support.fallback import QEMU_SEEDS, demo_windows, run_edgetune_py_on_qemu, run_with_firmware
from tests.support.fallback import qemu_firmware  # noqa: F401 (fixture)
from tests.support.trainingcases import bound_model, cases_for, f32hex, real_models, train_model

REPO = Path(__file__).resolve().parents[2]
FIRMWARE = REPO / "firmware"
STEPS = 8
N_HAND = 14

RUNNER = """
import edgetune, edgetune_py, struct, binascii
D = {d!r}
def hx(v):
    return binascii.hexlify(struct.pack('<f', v)).decode()
def info_text(info):
    return repr(sorted(info.items()))
for name, scheme, mom, qas, lr in {cases!r}:
    buf = open(D + '/' + name + '.etm', 'rb').read()
    xs = open(D + '/' + name + '.x', 'rb').read()
    labels = open(D + '/' + name + '.lab', 'rb').read()
    n = len(xs) // len(labels)
    mv = memoryview(xs)
    for tag, mod in (('C', edgetune), ('P', edgetune_py)):
        m = mod.Model(buf, scheme=scheme, momentum=mom)
        y0 = binascii.hexlify(m.predict(mv[0:n])).decode()
        losses = [hx(m.train(mv[i * n:(i + 1) * n], labels[i], lr=lr, qas=qas)) for i in range(len(labels))]
        m.save(D + '/' + name + '.' + tag)
        ev = m.evaluate([mv[i * n:(i + 1) * n] for i in range(len(labels))], list(labels))
        y = binascii.hexlify(m.predict(mv[0:n])).decode()
        k = m.predict_class(mv[0:n])
        print('CASE', tag, name, y0, ' '.join(losses), hx(ev[0]), hx(ev[1]), y, k)
        print('INFO', tag, name, info_text(m.info()))
    # cross-load: each implementation loads the other's file and saves the same bytes again
    for src, dst, mod in (('C', 'PC', edgetune_py), ('P', 'CP', edgetune)):
        m = mod.Model(buf, scheme=scheme, momentum=mom)
        m.load(D + '/' + name + '.' + src)
        m.save(D + '/' + name + '.' + dst)
        m = mod.Model(buf, scheme=scheme, momentum=mom)  # the in-RAM checkpoint API: same bytes
        m.load_state(open(D + '/' + name + '.' + src, 'rb').read())
        print('STATE', dst, name, m.state() == open(D + '/' + name + '.' + dst, 'rb').read())
print('DONE')
"""


def check_cases(micropython, tmp: Path, cases, seed: int, inputs=None) -> None:
    """inputs: (xs, labels) for every case (default: random int8 samples and labels)."""
    rng = np.random.default_rng([131, seed])
    data = {}
    for c in cases:
        n_in, n_cls = c.model.input_tensor.size, c.model.output_tensor.size
        xs = rng.integers(-128, 128, (STEPS, n_in)).astype(np.int8)
        labels = rng.integers(0, n_cls, STEPS).astype(np.uint8)
        if inputs is not None:
            xs, labels = inputs
        (tmp / f"{c.name}.etm").write_bytes(c.etm)
        (tmp / f"{c.name}.x").write_bytes(xs.tobytes())
        (tmp / f"{c.name}.lab").write_bytes(labels.tobytes())
        data[c.name] = (xs, labels)
    spec = [(c.name, c.device_scheme, c.momentum, c.qas, c.lr) for c in cases]
    out = run_with_firmware(RUNNER.format(d=str(tmp), cases=spec), tmp)
    assert out.rstrip().endswith("DONE"), out[-2000:]
    rows: dict[tuple[str, str, str], list[str]] = {}
    for line in out.splitlines():
        parts = line.split(" ", 3)
        if parts[0] in ("CASE", "INFO", "STATE"):
            rows[(parts[0], parts[1], parts[2])] = parts[3]
    n_changed = 0
    steps = len(data[cases[0].name][1])
    for c in cases:
        where = (f"{c.name}: ops {[ly.op_name for ly in c.model.layers]} scheme {c.scheme.describe()} "
                 f"momentum {c.momentum} qas {c.qas} lr {c.lr}")
        got_c, got_p = rows[("CASE", "C", c.name)], rows[("CASE", "P", c.name)]
        assert got_p == got_c, f"{where}\nC  {got_c}\npy {got_p}"
        assert rows[("INFO", "P", c.name)] == rows[("INFO", "C", c.name)], where
        state_c = (tmp / f"{c.name}.C").read_bytes()
        state_p = (tmp / f"{c.name}.P").read_bytes()
        assert state_p == state_c, f"{where}: state files differ"
        assert rows[("STATE", "PC", c.name)] == rows[("STATE", "CP", c.name)] == "True", f"{where}: state()/load_state()"
        assert (tmp / f"{c.name}.PC").read_bytes() == state_c, f"{where}: py did not reload C's file"
        assert (tmp / f"{c.name}.CP").read_bytes() == state_p, f"{where}: C did not reload py's file"
        # and the numpy twin
        xs, labels = data[c.name]
        tw = Trainer(c.etm, c.scheme, momentum=c.momentum)
        y0 = tw.predict(xs[0]).tobytes().hex()
        want = [f32hex(tw.step(x, int(lb), c.lr, c.qas)) for x, lb in zip(xs, labels)]
        fields = got_p.split()
        assert fields[0] == y0, where
        assert fields[1:1 + steps] == want, f"{where}: losses differ from the numpy twin"
        assert state_p == tw.state_bytes(), f"{where}: state differs from the numpy twin"
        ev = tw.evaluate(xs, labels)
        assert fields[1 + steps:3 + steps] == [f32hex(ev[0]), f32hex(ev[1])], where
        assert fields[3 + steps] == tw.predict(xs[0]).tobytes().hex(), where
        info = rows[("INFO", "P", c.name)]
        assert f"('arena', {memory.training_arena(c.model, c.scheme, c.momentum > 0)})" in info, where
        n_changed += int(state_p[32:] != Trainer(c.etm, c.scheme, momentum=c.momentum).state_bytes()[32:])
    assert n_changed >= len(cases) // 3, (n_changed, len(cases))  # the steps really moved weights


@pytest.mark.parametrize("chunk", range(2))
def test_py_equals_c_and_twin_hand_built(micropython, tmp_path, chunk):
    """Random hand-built models x up to 4 schemes, STEPS steps each: identical bits."""
    per = N_HAND // 2
    cases = []
    for seed in range(chunk * per, (chunk + 1) * per):
        cases += cases_for(f"h{seed}", train_model(seed), np.random.default_rng([5, seed]))
    kinds = {c.kind for c in cases}
    assert kinds == {"default", "classifier", "bias_etm", "sliced"}, kinds
    assert len({(c.qas, c.momentum > 0) for c in cases}) == 4
    check_cases(micropython, tmp_path, cases, chunk)


def test_py_equals_c_and_twin_converted_models(micropython, tmp_path):
    """Random Keras models through the real converter and export.py: identical bits."""
    models = dict(list(real_models().items())[:4])
    assert len(models) == 4
    cases = []
    for name, m in models.items():
        cases += cases_for(name, m, np.random.default_rng([16, len(cases)]))
    check_cases(micropython, tmp_path, cases, 100)


def test_py_equals_c_and_twin_demo_model(micropython, tmp_path):
    """The reference IMU model on 24 real windows: the bench's schemes with QAS / plain SGD and
    momentum, and channel-sliced weights of the first two convs. (This is the case that catches
    a missing float32 rounding of (float)M in the gradient scale; the small random models don't.)"""
    from fractions import Fraction

    from tests.support.trainingcases import Case

    demo = demo_module()
    etm = demo.ensure_model(REPO / "build" / "demo")
    _, evalp = demo.write_sessions(etm.parent, REPO / "build" / "demo")
    model = read_etm(etm.read_bytes())
    raw = etm.read_bytes()
    wl = [i for i, ly in enumerate(model.layers) if ly.weight != 0xFFFF]
    specs = [  # (name, device scheme, host weights {layer: ratio}, n_bias, momentum, qas, lr)
        ("clf", {"n_bias": 0}, {}, 0, 0.0, True, 0.01),
        ("bias_clf", {"n_bias": len(wl)}, {}, len(wl), 0.0, True, 0.01),
        ("bias_clf_sgd_mom", {"n_bias": len(wl)}, {}, len(wl), 0.9, False, 0.5),
        ("sparse", {"n_bias": len(wl), "weights": [(wl[-2], 2)]}, {wl[-2]: Fraction(1, 2)}, len(wl), 0.5, True,
         0.02),
        ("deep", {"n_bias": 2, "weights": [(wl[0], 4), (wl[1], 8)]}, {wl[0]: Fraction(1, 4), wl[1]: Fraction(1, 8)},
         2, 0.0, True, 0.05),
    ]
    cases = [Case(f"demo_{name}", model, name, Scheme.build(model, nb, wts), dev, mom, qas, lr, raw)
             for name, dev, wts, nb, mom, qas, lr in specs]
    check_cases(micropython, tmp_path, cases, 7, inputs=demo_windows(etm, evalp, 24))


REFUSALS = """
import edgetune, edgetune_py
D = {d!r}
buf = open(D + '/a.etm', 'rb').read()
bound = open(D + '/bound.etm', 'rb').read()
xs = open(D + '/a.x', 'rb').read()
n = {n_in}
def attempt(tag, label, f, *a, **k):
    try:
        f(*a, **k)
        print(tag, label, 'OK')
    except Exception as e:
        print(tag, label, type(e).__name__)
for tag, mod in (('C', edgetune), ('P', edgetune_py)):
    attempt(tag, 'MOM1', mod.Model, buf, momentum=1.0)
    attempt(tag, 'MOMNEG', mod.Model, buf, momentum=-0.1)
    attempt(tag, 'BOUND', mod.Model, bound, scheme={{'n_bias': 0, 'weights': [(0, 1)]}})
    attempt(tag, 'DEN3', mod.Model, buf, scheme={{'n_bias': 0, 'weights': [(0, 3)]}})
    attempt(tag, 'NBIAS', mod.Model, buf, scheme={{'n_bias': 99}})
    attempt(tag, 'CRC', mod.Model, buf[:-1] + bytes([buf[-1] ^ 1]))
    attempt(tag, 'SHORT_ETM', mod.Model, buf[:60])
    m = mod.Model(buf, momentum=0.5)
    m.train(xs[:n], 1, lr=0.1)
    m.save(D + '/s.' + tag)
    attempt(tag, 'LABEL', m.train, xs[:n], {ncls})
    attempt(tag, 'LABELNEG', m.train, xs[:n], -1)
    attempt(tag, 'NAN', m.train, xs[:n], 0, lr=float('nan'))
    attempt(tag, 'INF', m.train, xs[:n], 0, lr=float('inf'))
    attempt(tag, 'LRNEG', m.train, xs[:n], 0, lr=-0.01)
    attempt(tag, 'LRBIG', m.train, xs[:n], 0, lr=1e6)
    attempt(tag, 'SCHEMEKEY', mod.Model, buf, scheme={{'bogus': 1}})
    attempt(tag, 'XLEN', m.train, xs[:n - 1], 0)
    attempt(tag, 'PLEN', m.predict, xs[:n + 1])
    attempt(tag, 'EVLEN', m.evaluate, [xs[:n]], [0, 1])
    for bad in ('trunc', 'crc', 'other', 'nomom'):
        attempt(tag, 'LOAD_' + bad, m.load, D + '/' + bad + '.etw')
    m.save(D + '/t.' + tag)
    m.reset()
    m.save(D + '/r.' + tag)
print('DONE')
"""


def test_refusals_agree_with_c(micropython, tmp_path):
    model = train_model(3)
    etm = write_etm(model)
    (tmp_path / "a.etm").write_bytes(etm)
    (tmp_path / "bound.etm").write_bytes(_bound_etm())
    n_in, n_cls = model.input_tensor.size, model.output_tensor.size
    xs = np.random.default_rng(7).integers(-128, 128, (4, n_in)).astype(np.int8)
    (tmp_path / "a.x").write_bytes(xs.tobytes())
    tw = Trainer(etm, momentum=0.5)
    tw.step(xs[0], 1, 0.1)
    good = tw.state_bytes()
    (tmp_path / "trunc.etw").write_bytes(good[:-4])
    bad = bytearray(good)
    bad[-1] ^= 1
    (tmp_path / "crc.etw").write_bytes(bytes(bad))
    other = Trainer(write_etm(train_model(4)), momentum=0.5)
    (tmp_path / "other.etw").write_bytes(other.state_bytes())
    (tmp_path / "nomom.etw").write_bytes(Trainer(etm).state_bytes())
    out = run_with_firmware(REFUSALS.format(d=str(tmp_path), n_in=n_in, ncls=n_cls), tmp_path)
    assert out.rstrip().endswith("DONE"), out
    res: dict[str, dict[str, str]] = {"C": {}, "P": {}}
    for line in out.splitlines()[:-1]:
        tag, label, outcome = line.split()
        res[tag][label] = outcome
    assert res["P"] == res["C"], (res["C"], res["P"])
    assert all(v == "ValueError" for v in res["P"].values()), res["P"]
    # refusals changed nothing: the state after them is the state after the one good step
    assert (tmp_path / "s.P").read_bytes() == (tmp_path / "s.C").read_bytes() == good
    assert (tmp_path / "t.P").read_bytes() == good
    flashed = Trainer(etm, momentum=0.5).state_bytes()
    assert (tmp_path / "r.P").read_bytes() == (tmp_path / "r.C").read_bytes() == flashed


def _bound_etm() -> bytes:
    m = bound_model()
    return write_etm(m)


# --------------------------------------------------------------------------------------------
# The device app on the fallback
# --------------------------------------------------------------------------------------------

NO_C_MODULE = """
import sys
class _NoCModule:  # `from edgetune import Model` now raises ImportError, as on stock firmware
    pass
sys.modules['edgetune'] = _NoCModule()
"""

APP = """
import app, store, core
print('IMPL', core.IMPL)
app.boot({etm!r}, weights={w!r}, config=None, restore=False, holdout=4, capacity=64,
         source={{"bus": "replay", "path": {adapt!r}, "skip": 0}})
store.forget(app.S.model, {w!r})
for name in app.S.names:
    app.collect(name, n=4)
app.train(epochs=2, lr=0.01, target=None, seed=1)
app.score({evalp!r})
app.save()
"""


def test_device_app_runs_on_the_fallback(micropython, tmp_path):
    """firmware/app.py without the C module: same @et rows and weights file as with it."""
    demo = demo_module()
    out = REPO / "build" / "demo"
    etm = demo.ensure_model(out)
    adapt, evalp = demo.write_sessions(etm.parent, out)
    # a short scoring session: the first 1500 rows of the eval recording
    lines = Path(evalp).read_text().splitlines(keepends=True)
    short = tmp_path / "eval_short.csv"
    short.write_text("".join(lines[:1500]))
    runs = {}
    # The pure-Python core compiles on the device and holds its tables and per-step temporaries
    # as Python objects (8 bytes per list item on the 64-bit unix port): with the app's 76.8 KB
    # window ring it does not fit the RP2040 budget (252 KB) here; measured: 448 KB works.
    for impl, prelude, heap in (("c", "", demo.heap_budget("rp2040")), ("py", NO_C_MODULE, 512 * 1024)):
        d = tmp_path / impl
        d.mkdir()
        code = prelude + APP.format(etm=str(etm), w=str(d / "w.etw"), adapt=str(adapt), evalp=str(short))
        text = run_with_firmware(code, d, timeout=900, heap=str(heap))
        assert f"IMPL {impl}" in text, text[:2000]
        rows = parse_text(text)
        runs[impl] = (rows, (d / "w.etw").read_bytes())
    rows_c, w_c = runs["c"]
    rows_p, w_p = runs["py"]
    assert w_p == w_c
    assert sum(r["ev"] == "train" for r in rows_p) > 0
    assert any(r["ev"] == "score" for r in rows_p)

    # everything but timings, heap figures and the implementation name is the same
    skip = {"t_ms", "path", "elapsed_ms", "impl", "heap_free", "heap_used", "heap_total"}
    cp = [{k: v for k, v in r.items() if k not in skip} for r in rows_p]
    cc = [{k: v for k, v in r.items() if k not in skip} for r in rows_c]
    assert cp == cc
    boot = next(r for r in rows_p if r["ev"] == "boot")
    assert boot["impl"] == "py"
    assert next(r for r in rows_c if r["ev"] == "boot")["impl"] == "c"


# --------------------------------------------------------------------------------------------
# Single-precision MicroPython: the Cortex-M3 qemu firmware (float = C float, as on MCUs)
# --------------------------------------------------------------------------------------------

QEMU_STEPS = 6

QEMU_SCRIPT = """
import edgetune, edgetune_py, binascii, struct, os
print('FLOAT32', 1.0 + 2.0 ** -30 == 1.0)
def hx(v):
    return binascii.hexlify(struct.pack('<f', v)).decode()
for name, etm, xs, labels, scheme, mom, qas, lr in {cases!r}:
    buf = binascii.unhexlify(etm)
    xs = binascii.unhexlify(xs)
    labels = binascii.unhexlify(labels)
    n = len(xs) // len(labels)
    for tag, mod in (('C', edgetune), ('P', edgetune_py)):
        m = mod.Model(buf, scheme=scheme, momentum=mom)
        y0 = binascii.hexlify(m.predict(xs[:n])).decode()
        ls = [hx(m.train(xs[i * n:(i + 1) * n], labels[i], lr=lr, qas=qas)) for i in range(len(labels))]
        m.save('s')
        with open('s', 'rb') as f:  # closed before the remove: a file object left for the GC to
            st = f.read()             # close after its file was removed hangs LittleFS
        os.remove('s')
        print('CASE', tag, name, y0, ' '.join(ls), binascii.hexlify(m.predict(xs[:n])).decode(),
              binascii.hexlify(st).decode())
        m = None
print('DONE')
"""


def test_py_equals_c_on_single_precision_cortex_m3(qemu_firmware, tmp_path):
    """The qemu firmware's MicroPython has float32 floats (MICROPY_FLOAT_IMPL_FLOAT, soft float on
    the Cortex-M3): the array('f') rounding is a no-op there and every float op is the C float
    op. edgetune_py (frozen in the firmware) == the C module == the numpy twin."""
    rng = np.random.default_rng(77)
    scripts, expect = [], {}
    for seed in QEMU_SEEDS:
        spec = []
        for c in cases_for(f"q{seed}", train_model(seed), np.random.default_rng([5, seed])):
            n_in, n_cls = c.model.input_tensor.size, c.model.output_tensor.size
            xs = rng.integers(-128, 128, (QEMU_STEPS, n_in)).astype(np.int8)
            labels = rng.integers(0, n_cls, QEMU_STEPS).astype(np.uint8)
            spec.append((c.name, c.etm.hex(), xs.tobytes().hex(), labels.tobytes().hex(), c.device_scheme,
                         c.momentum, c.qas, c.lr))
            tw = Trainer(c.etm, c.scheme, momentum=c.momentum)
            y0 = tw.predict(xs[0]).tobytes().hex()
            losses = [f32hex(tw.step(x, int(lb), c.lr, c.qas)) for x, lb in zip(xs, labels)]
            expect[c.name] = " ".join([y0, *losses, tw.predict(xs[0]).tobytes().hex(), tw.state_bytes().hex()])
        script = tmp_path / f"q{seed}.py"
        script.write_text(QEMU_SCRIPT.format(cases=spec))
        scripts.append(script)
    out = run_edgetune_py_on_qemu(qemu_firmware, scripts, tmp_path, timeout=120)  # ~5 s each
    assert "FLOAT32 True" in out  # really a single-precision MicroPython
    rows = {}
    for line in out.splitlines():
        if line.startswith("CASE "):
            _, tag, name, rest = line.split(" ", 3)
            rows[(tag, name)] = rest
    assert len(expect) >= 3 * len(QEMU_SEEDS)
    for name, want in expect.items():
        assert rows[("C", name)] == want, f"{name}: the C module on qemu differs from the numpy twin"
        assert rows[("P", name)] == want, f"{name}: edgetune_py on single-precision MicroPython differs"


FLASHED_128 = """
import edgetune, edgetune_py
D = {d!r}
buf = open(D + '/m.etm', 'rb').read()
x = open(D + '/x', 'rb').read()
for tag, mod in (('C', edgetune), ('P', edgetune_py)):
    m = mod.Model(buf)
    try:
        m.load(D + '/fresh.etw')  # a file holding the flashed -128: loads
        print(tag, 'LOAD_FRESH OK')
    except ValueError as e:
        print(tag, 'LOAD_FRESH ValueError')
    try:
        m.load(D + '/bad.etw')  # -128 where the flashed weight is not: refused
        print(tag, 'LOAD_BAD OK')
    except ValueError as e:
        print(tag, 'LOAD_BAD ValueError')
    m.train(x, 1, lr=1e-12)  # every step rounds to n == 0: only the clamp can change a weight
    m.save(D + '/t.' + tag)
print('DONE')
"""


def test_flashed_minus_128_weight(micropython, tmp_path):
    """A flashed -128 weight in a trained channel: a file holding it untouched loads, one with
    -128 elsewhere is refused, and the first update clamps it to -127 -- as C and the twin do."""
    model = train_model(3)
    clf = model.layers[-1]
    w = model.tensors[clf.weight].data.copy()
    w.reshape(-1)[0] = -128
    model.tensors[clf.weight].data = w
    etm = write_etm(model)
    (tmp_path / "m.etm").write_bytes(etm)
    x = np.random.default_rng(1).integers(-128, 128, model.input_tensor.size).astype(np.int8)
    (tmp_path / "x").write_bytes(x.tobytes())
    fresh = Trainer(etm).state_bytes()
    assert b"\x80" in fresh[32:]
    (tmp_path / "fresh.etw").write_bytes(fresh)
    k = fresh.index(b"\x80", 32)
    bad = bytearray(fresh)
    bad[k + 1] = 0x80  # the next weight (flashed != -128) set to -128, CRC fixed
    bad[12:16] = struct.pack("<I", __import__("zlib").crc32(bytes(bad[16:])) & 0xFFFFFFFF)
    (tmp_path / "bad.etw").write_bytes(bytes(bad))
    out = run_with_firmware(FLASHED_128.format(d=str(tmp_path)), tmp_path)
    for tag in ("C", "P"):
        assert f"{tag} LOAD_FRESH OK" in out and f"{tag} LOAD_BAD ValueError" in out, out
    tw = Trainer(etm)
    tw.step(x, 1, 1e-12)
    assert (tmp_path / "t.P").read_bytes() == (tmp_path / "t.C").read_bytes() == tw.state_bytes()
    assert tw.state_bytes()[k] == 0x81  # -127: the update clamped the untouched -128
