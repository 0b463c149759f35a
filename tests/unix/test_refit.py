"""Closed-form classifier refit (docs/training.md §9): the C module on the unix port = the numpy
twin (host/edgetune/twin/refit.py), bit for bit, on random models; memory; save/load; refit then SGD;
bad inputs.

Per random model (tests/support/trainingcases.py's hand-built generator, default scheme, momentum on or
off): refit with l2 and alpha chosen by cross-validation, save, 3 SGD steps, save, a second refit
with given l2/alpha, save; every file (the whole params region: bias and weight copies, residuals,
momentum, the classifier's scales and multipliers) equals the twin's byte for byte, and so do the
chosen (l2, alpha), the CV accuracy bits, the SGD losses, the scratch size (memory.refit_scratch),
info()['arena'] (memory.training_arena) and a fresh Model loading the last file predicts alike.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest

from edgetune.fleet import refit_stats
from edgetune.twin import memory
from edgetune.format.modelfile import write_etm
from edgetune.format.scheme import Scheme
from edgetune.twin.training import Trainer

from tests.support.fallback import run_with_firmware
from tests.support.trainingcases import refittable_models, run_script

N_MODELS = 24

RUNNER = """
import edgetune, edgetune_py, struct
D = {d!r}
def fx(v):
    return 'None' if v is None else struct.pack('<f', v).hex()
for tag, mod in (('C', edgetune), ('P', edgetune_py)):
  for name0, mom, n in {cases!r}:
    name = tag + name0
    buf = open(D + '/' + name0 + '.etm', 'rb').read()
    raw = open(D + '/' + name0 + '.x', 'rb').read()
    lab = open(D + '/' + name0 + '.lab', 'rb').read()
    k = len(raw) // n
    xs = [raw[i * k:(i + 1) * k] for i in range(n)]
    m = mod.Model(buf, momentum=mom)
    r = m.refit(xs, lab)
    print('R1', name, fx(r['l2']), fx(r['alpha']), fx(r['cv_accuracy']), r['n'], r['scratch'])
    m.save(D + '/' + name + '.s1')
    print('L', name, ' '.join(fx(m.train(xs[i], lab[i], lr=0.05)) for i in range(3)))
    m.save(D + '/' + name + '.s2')
    r = m.refit(xs, list(lab), l2=0.1, alpha=0.5)
    print('R2', name, fx(r['l2']), fx(r['alpha']), fx(r['cv_accuracy']), r['scratch'])
    m.save(D + '/' + name + '.s3')
    m2 = mod.Model(buf, momentum=mom)
    m2.load(D + '/' + name + '.s3')
    print('P', name, int(all(m.predict(x) == m2.predict(x) for x in xs)))
    i = m.info()
    print('I', name, i['arena'], i['refit_scratch'])
print('DONE')
"""


def fx(v) -> str:
    return "None" if v is None else struct.pack("<f", v).hex()


def test_refit_c_vs_twin(micropython, tmp_path):
    rng = np.random.default_rng(7)
    cases, twins = [], {}
    for seed, model in refittable_models(N_MODELS):
        name = f"m{seed}"
        etm = write_etm(model)
        n = int(rng.integers(6, 41))
        n_in, n_cls = model.input_tensor.size, model.output_tensor.size
        xs = rng.integers(-128, 128, (n, n_in)).astype(np.int8)
        labels = rng.integers(0, n_cls, n).astype(np.uint8)
        mom = float(rng.choice([0.0, 0.9]))
        (tmp_path / f"{name}.etm").write_bytes(etm)
        (tmp_path / f"{name}.x").write_bytes(xs.tobytes())
        (tmp_path / f"{name}.lab").write_bytes(labels.tobytes())
        cases.append((name, mom, n))
        twins[name] = (etm, xs, labels, mom)
    out = run_with_firmware(RUNNER.format(d=str(tmp_path), cases=cases), tmp_path, binary=micropython)
    assert out.rstrip().endswith("DONE"), out[-2000:]
    got = {}
    for line in out.splitlines():
        parts = line.split()
        if parts and parts[0] in ("R1", "L", "R2", "P", "I"):
            got[(parts[0], parts[1])] = parts[2:]
    chosen = set()
    for name0, (etm, xs, labels, mom) in twins.items():
        for name in ('C' + name0, 'P' + name0):
            tr = Trainer(etm, momentum=mom)
            r = tr.refit(xs, labels)
            chosen.add((r["l2"], r["alpha"]))
            scratch = memory.refit_scratch(tr.model, tr.scheme, labels, cv=True)
            assert got[("R1", name)] == [fx(r["l2"]), fx(r["alpha"]), fx(r["cv_accuracy"]), str(len(labels)),
                                         str(scratch)], name
            assert (tmp_path / f"{name}.s1").read_bytes() == tr.state_bytes(), name
            losses = [tr.step(xs[i], int(labels[i]), 0.05) for i in range(3)]
            assert got[("L", name)] == [fx(v) for v in losses], name
            assert (tmp_path / f"{name}.s2").read_bytes() == tr.state_bytes(), name
            r = tr.refit(xs, labels, l2=0.1, alpha=0.5)
            assert got[("R2", name)] == [fx(r["l2"]), fx(r["alpha"]), "None",
                                         str(memory.refit_scratch(tr.model, tr.scheme, labels, cv=False))], name
            assert (tmp_path / f"{name}.s3").read_bytes() == tr.state_bytes(), name
            assert got[("P", name)] == ["1"], name
            assert got[("I", name)] == [str(memory.training_arena(tr.model, tr.scheme, momentum=mom > 0)),
                                        str(memory.refit_scratch(tr.model, tr.scheme, None, cv=False))], name
    assert len(chosen) > 1, chosen  # the CV does choose between grid points


BAD = """
import edgetune
buf = open({etm!r}, 'rb').read()
m = edgetune.Model(buf)
raw = open({x!r}, 'rb').read()
n = {n}
k = len(raw) // n
xs = [raw[i * k:(i + 1) * k] for i in range(n)]
lab = list(open({lab!r}, 'rb').read())
m.train(xs[0], lab[0], lr=0.1)
before = [m.predict(x) for x in xs]
def attempt(tag, *a, **kw):
    try:
        m.refit(*a, **kw)
        print(tag, 'OK')
    except Exception as e:
        print(tag, type(e).__name__)
    print(tag, 'same', int([m.predict(x) for x in xs] == before))
attempt('few', xs[:1], lab[:1])
attempt('len', xs, lab[:-1])
attempt('label', xs, lab[:-1] + [{ncls}])
attempt('neg', xs, lab[:-1] + [-1])
attempt('short', xs[:-1] + [xs[0][:-1]], lab)
attempt('l2', xs, lab, l2=0.0)
attempt('l2nan', xs, lab, l2=float('nan'))
attempt('alpha', xs, lab, alpha=1.5)
attempt('alphastr', xs, lab, alpha='x')
attempt('xsint', 5, lab)


# hostile numbers: their __int__/__float__ run Python while the binding converts its arguments
class Shrink:  # empties the windows and labels lists it is in
    def __init__(self, v, lists):
        self.v, self.lists = v, lists

    def __int__(self):
        for L in self.lists:
            L.clear()
        return self.v


class Flip:  # out of range, then in range, then out of range again
    def __init__(self):
        self.n = 0

    def __int__(self):
        self.n += 1
        return 0 if self.n == 2 else 1000


class Clear:  # empties a list, then is 0.1
    def __init__(self, lst):
        self.lst = lst

    def __float__(self):
        self.lst.clear()
        return 0.1


xs2, lab2 = list(xs), list(lab)
lab2[3] = Shrink(lab[3], (xs2, lab2))
attempt('hostile_shrink', xs2, lab2)
lab3 = list(lab)
lab3[0] = Flip()
attempt('hostile_flip', xs, lab3)
xs4 = list(xs)
attempt('hostile_l2', xs4, lab, l2=Clear(xs4), alpha=0.5)
m2 = edgetune.Model(buf, scheme={{'n_bias': 0}})
try:
    m2.refit(xs, lab)
    print('ok2')
except ValueError:
    print('noclassifierbias ValueError')
print('DONE')
"""


@pytest.mark.natmod
def test_refit_bad_inputs_change_nothing(micropython, tmp_path):
    _, model = refittable_models(1)[0]
    rng = np.random.default_rng(3)
    n = 12
    xs = rng.integers(-128, 128, (n, model.input_tensor.size)).astype(np.int8)
    labels = rng.integers(0, model.output_tensor.size, n).astype(np.uint8)
    for f, b in (("m.etm", write_etm(model)), ("x", xs.tobytes()), ("lab", labels.tobytes())):
        (tmp_path / f).write_bytes(b)
    code = BAD.format(etm=str(tmp_path / "m.etm"), x=str(tmp_path / "x"), lab=str(tmp_path / "lab"), n=n,
                      ncls=model.output_tensor.size)
    out = run_script(micropython, tmp_path, code).stdout
    assert out.rstrip().endswith("DONE"), out
    res = dict(line.split(" ", 1) for line in out.splitlines() if " " in line and not line.endswith(("same 1", "same 0")))
    same = [line for line in out.splitlines() if " same " in line]
    assert all(s.endswith("same 1") for s in same), out
    for tag in ("few", "len", "label", "neg", "short", "l2", "l2nan", "alpha", "hostile_shrink", "hostile_flip",
                "hostile_l2"):
        assert res[tag] == "ValueError", (tag, out)
    assert res["alphastr"] == "TypeError" and res["xsint"] == "TypeError", out
    # the classifier-only scheme {'n_bias': 0} still trains the classifier's bias and weights
    assert "ok2" in out or "noclassifierbias ValueError" in out


@pytest.mark.natmod
@pytest.mark.parametrize("heap", ["40k"])
def test_refit_memory_error_changes_nothing(micropython, tmp_path, heap):
    """A scratch that does not fit: MemoryError, the model unchanged (a wide classifier input)."""
    from tests.support.tinymodels import chain

    model = chain([("fc", 96, True), ("fc", 4, False)], (1, 1, 1, 64), seed=2)
    rng = np.random.default_rng(0)
    n = 30
    xs = rng.integers(-128, 128, (n, 64)).astype(np.int8)
    labels = rng.integers(0, 4, n).astype(np.uint8)
    (tmp_path / "m.etm").write_bytes(write_etm(model))
    (tmp_path / "x").write_bytes(xs.tobytes())
    (tmp_path / "lab").write_bytes(labels.tobytes())
    tr = Trainer(write_etm(model))
    need = memory.refit_scratch(tr.model, tr.scheme, labels, cv=True)
    code = f"""
import edgetune, gc
m = edgetune.Model(open({str(tmp_path / 'm.etm')!r}, 'rb').read())
raw = open({str(tmp_path / 'x')!r}, 'rb').read()
xs = [raw[i * 64:(i + 1) * 64] for i in range({n})]
lab = open({str(tmp_path / 'lab')!r}, 'rb').read()
before = [m.predict(x) for x in xs]
gc.collect()
try:
    m.refit(xs, lab)
    print('OK')
except MemoryError:
    print('MemoryError')
print('same', int([m.predict(x) for x in xs] == before))
"""
    out = run_script(micropython, tmp_path, code, heapsize=heap).stdout
    assert need > 40 * 1024, need
    assert "MemoryError" in out and "same 1" in out, out


def test_app_refit_on_the_demo_model_under_the_rp2040_heap(micropython, tmp_path):
    """app.refit() on the `make demo` model (rotation shift) through the replay sensor, C module,
    RP2040 heap budget: collects 8 windows per class (1 in 4 held back), refits with l2/alpha
    chosen by CV, logs `@et refit`, scores the eval region; then app.save() and a restart restore
    the refit bit for bit. Measured (skip 0): 0.169 -> 0.498 (alpha 0.75, l2 1 by CV)."""
    from tests.support.deviceapp import HEAP, demo, run_device

    from pathlib import Path

    out = Path(__file__).resolve().parents[2] / "build" / "demo"
    etm = demo.ensure_model(out)
    adapt, evalp = demo.write_sessions(etm.parent, out)
    w = tmp_path / "w.etw"
    code = f"""
import app, store
app.boot({str(etm)!r}, weights={str(w)!r}, config=None, restore=False, holdout=4, capacity=64,
         source={{"bus": "replay", "path": {str(adapt)!r}, "skip": 0}})
store.forget(app.S.model, {str(w)!r})
app.score({str(evalp)!r})
for name in app.S.names:
    app.collect(name, n=8)
app.refit()
app.score({str(evalp)!r})
app.save()
print('LOGITS', app.S.model.predict(bytes([i & 255 for i in range(600)])).hex())
"""
    stdout, rows = run_device(code, tmp_path, heap=HEAP)
    refit = next(r for r in rows if r["ev"] == "refit")
    before, after = [r["acc"] for r in rows if r["ev"] == "score"]
    print(f"refit {refit}: accuracy {before:.3f} -> {after:.3f}")
    # 8 a class: 2 check, 1 gap (checkset.split), 5 train
    assert refit["n"] == 35 and refit["alpha"] > 0 and refit["cv_acc"] is not None
    assert after >= before + 0.25, (before, after)  # 35 training windows since the recipe's check split (42 before): 0.169 -> 0.460
    logits = [line for line in stdout.splitlines() if line.startswith("LOGITS")]
    code2 = f"""
import app
app.boot({str(etm)!r}, weights={str(w)!r}, config=None)
print('LOGITS', app.S.model.predict(bytes([i & 255 for i in range(600)])).hex())
"""
    stdout2, rows2 = run_device(code2, tmp_path, heap=HEAP)
    assert next(r for r in rows2 if r["ev"] == "boot")["restored"] is True
    assert [line for line in stdout2.splitlines() if line.startswith("LOGITS")] == logits


# --------------------------------------------------------------------------------------------
# Single-precision MicroPython: the Cortex-M3 qemu firmware (float = C float, soft float)
# --------------------------------------------------------------------------------------------

QEMU_MODELS = 20
QEMU_PY_MODELS = 20  # the pure-Python fallback too, on every model

QEMU_SCRIPT = """
import edgetune, binascii, struct, os, gc
print('FLOAT32', 1.0 + 2.0 ** -30 == 1.0)
def hx(v):
    return 'None' if v is None else binascii.hexlify(struct.pack('<f', v)).decode()
for name, etm, xs, labels, py in {cases!r}:
    buf = binascii.unhexlify(etm)
    xs = binascii.unhexlify(xs)
    labels = binascii.unhexlify(labels)
    n = len(xs) // len(labels)
    ws = [xs[i * n:(i + 1) * n] for i in range(len(labels))]
    mods = [('C', edgetune)]
    if py:  # a session of its own: the fallback's tables fill much of the 143 KB heap
        import edgetune_py
        mods = [('P', edgetune_py)]
    for tag, mod in mods:
        gc.collect()
        m = mod.Model(buf)
        gc.collect()
        rs = binascii.hexlify(m.refit_stats(ws, labels)).decode()
        r = m.refit(ws, labels)
        l = hx(m.train(ws[0], labels[0], lr=0.05))
        m.save('s')
        with open('s', 'rb') as f:  # closed before the remove (LittleFS and the GC)
            st = f.read()
        os.remove('s')
        if st != m.state():
            st = b'state() differs from the saved file'
        print('CASE', tag, name, rs, hx(r['l2']), hx(r['alpha']), hx(r['cv_accuracy']), l, binascii.hexlify(st).decode())
        m = None
print('DONE')
"""


def test_refit_on_single_precision_cortex_m3(tmp_path):
    """C module and edgetune_py_refit (frozen) on the qemu board's float32 MicroPython == the twin
    (m.refit_stats before the refit, then the refit, a step and the state)."""
    import subprocess

    from tests.support import tinymodels
    from tests.support.qemuboard import CLASSES, build_firmware

    from edgetune.device import emulate

    fw = build_firmware(write_etm(tinymodels.app_model(window=16, classes=CLASSES)))
    scripts, expect = [], {}
    # smallest first
    # (and only models whose refit scratch fits the board's heap next to the script: <= 40 KB)
    cand = [(sd, m) for sd, m in refittable_models(QEMU_MODELS + 12)
            if memory.refit_scratch(m, Scheme.default(m), [0] * 20, cv=True) <= 40_000]
    models = sorted(cand[:QEMU_MODELS], key=lambda sm: len(write_etm(sm[1])))
    # sessions of 3 models for the C module, of 4 for the fallback (the scripts' hex and the
    # models share the 143 KB heap)
    parts = [(i, min(i + 3, QEMU_MODELS), False) for i in range(0, QEMU_MODELS, 3)]
    parts += [(i, min(i + 4, QEMU_PY_MODELS), True) for i in range(0, QEMU_PY_MODELS, 4)]
    for part, end, py in parts:
        spec = []
        for seed, model in models[part:end]:
            etm = write_etm(model)
            rng = np.random.default_rng([11, seed])  # the same windows in both sessions
            n = int(rng.integers(6, 21))
            xs = rng.integers(-128, 128, (n, model.input_tensor.size)).astype(np.int8)
            labels = rng.integers(0, model.output_tensor.size, n).astype(np.uint8)
            spec.append((f"q{seed}", etm.hex(), xs.tobytes().hex(), labels.tobytes().hex(), py))
            tr = Trainer(etm)
            st = refit_stats.pack(refit_stats.client_stats(tr, xs, labels))
            r = tr.refit(xs, labels)
            loss = tr.step(xs[0], int(labels[0]), 0.05)
            expect[f"q{seed}"] = " ".join([st.hex(), fx(r["l2"]), fx(r["alpha"]), fx(r["cv_accuracy"]), fx(loss),
                                          tr.state_bytes().hex()])
        script = tmp_path / f"r{part}_{int(py)}.py"
        script.write_text(QEMU_SCRIPT.format(cases=spec))
        scripts.append((script, py))
    out = ""
    with emulate.QemuBoard(fw) as board:
        for s, py in scripts:  # edgetune_py and edgetune_py_refit are frozen into the firmware
            args = ["exec", "import qemufs; qemufs.mount(32)", "+", "run", str(s)]
            proc = subprocess.run(emulate.mpremote_command(board.pty, *args), capture_output=True, text=True,
                                  timeout=600)
            assert proc.returncode == 0 and "DONE" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-2000:]
            out += proc.stdout
    assert "FLOAT32 True" in out
    rows = {}
    for line in out.splitlines():
        if line.startswith("CASE "):
            _, tag, name, rest = line.split(" ", 3)
            rows[(tag, name)] = rest
    assert len(expect) == QEMU_MODELS
    for i, (name, want) in enumerate(expect.items()):
        assert rows[("C", name)] == want, f"{name}: the C module on qemu differs from the numpy twin"
        if i < QEMU_PY_MODELS:
            assert rows[("P", name)] == want, f"{name}: edgetune_py_refit on float32 MicroPython differs"


BATCH = """
import edgetune, edgetune_py, struct
D = {d!r}
for name, n in {cases!r}:
    buf = open(D + '/' + name + '.etm', 'rb').read()
    raw = open(D + '/' + name + '.x', 'rb').read()
    lab = open(D + '/' + name + '.lab', 'rb').read()
    k = len(raw) // n
    xs = [raw[i * k:(i + 1) * k] for i in range(n)]
    for tag, mod in (('C', edgetune), ('P', edgetune_py)):
        m = mod.Model(buf, momentum=0.5, batch=True)
        m.refit(xs, lab, l2=0.01, alpha=1.0)
        loss = m.train(raw[:4 * k], lab[:4], lr=0.05)
        m.save(D + '/b')
        print('B', tag, name, struct.pack('<f', loss).hex(), open(D + '/b', 'rb').read().hex())
print('DONE')
"""


@pytest.mark.natmod
def test_refit_then_batch_steps_with_momentum(micropython, tmp_path):
    """A batch model with momentum: refit, then one 4-sample mini-batch step; C = fallback = twin."""
    rng = np.random.default_rng(5)
    cases, want = [], {}
    for seed, model in refittable_models(6):
        name, n = f"b{seed}", 16
        etm = write_etm(model)
        xs = rng.integers(-128, 128, (n, model.input_tensor.size)).astype(np.int8)
        labels = rng.integers(0, model.output_tensor.size, n).astype(np.uint8)
        for f, b in ((".etm", etm), (".x", xs.tobytes()), (".lab", labels.tobytes())):
            (tmp_path / f"{name}{f}").write_bytes(b)
        cases.append((name, n))
        tr = Trainer(etm, momentum=0.5, batch=True)
        tr.refit(xs, labels, l2=0.01, alpha=1.0)
        loss = tr.step_batch(xs[:4], labels[:4], 0.05)
        want[name] = [fx(loss), tr.state_bytes().hex()]
    out = run_with_firmware(BATCH.format(d=str(tmp_path), cases=cases), tmp_path, binary=micropython)
    got = {(p[1], p[2]): p[3:] for p in (line.split() for line in out.splitlines()) if p and p[0] == "B"}
    for name, w in want.items():
        assert got[("C", name)] == w and got[("P", name)] == w, name
