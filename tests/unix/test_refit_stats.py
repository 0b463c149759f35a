"""m.refit_stats(xs, labels) (docs/training.md §8, §10a): the refit's integer statistics packed as
the fleet refit mode's upload (docs/fleet-refit.md §1) == the twin's
refit_stats.pack(refit_stats.client_stats(...)) byte for byte, from the C module (unix port, and
the native .mpy) and the pure-Python fallback, on random refittable models after some SGD steps
(so the classifier's input is not the flashed model's); nothing in the model changes; the refit's
checks and messages for bad arguments.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgetune.fleet import refit_stats
from edgetune.format.modelfile import write_etm
from edgetune.twin.training import Trainer

from tests.support.fallback import run_with_firmware
from tests.support.tinymodels import chain
from tests.support.trainingcases import refittable_models, run_script

N_MODELS = 16

RUNNER = """
import edgetune, edgetune_py
D = {d!r}
for tag, mod in (('C', edgetune), ('P', edgetune_py)):
  for name, mom, n, steps in {cases!r}:
    buf = open(D + '/' + name + '.etm', 'rb').read()
    raw = open(D + '/' + name + '.x', 'rb').read()
    lab = open(D + '/' + name + '.lab', 'rb').read()
    k = len(raw) // n
    xs = [raw[i * k:(i + 1) * k] for i in range(n)]
    m = mod.Model(buf, momentum=mom)
    for i in range(steps):
        m.train(xs[i % n], lab[i % n], lr=0.05)
    s0 = m.state()
    p0 = [m.predict(x) for x in xs]
    st = m.refit_stats(xs, lab if n % 2 else list(lab))
    print('S', tag, name, st.hex())
    print('SAME', tag, name, int(m.state() == s0 and [m.predict(x) for x in xs] == p0))
print('DONE')
"""


def _cases(tmp_path):
    rng = np.random.default_rng(17)
    cases, want = [], {}
    for seed, model in refittable_models(N_MODELS):
        name = f"m{seed}"
        etm = write_etm(model)
        n = int(rng.integers(2, 31))
        n_in, n_cls = model.input_tensor.size, model.output_tensor.size
        xs = rng.integers(-128, 128, (n, n_in)).astype(np.int8)
        labels = rng.integers(0, n_cls, n).astype(np.uint8)
        mom = float(rng.choice([0.0, 0.9]))
        steps = int(rng.integers(3, 8))
        (tmp_path / f"{name}.etm").write_bytes(etm)
        (tmp_path / f"{name}.x").write_bytes(xs.tobytes())
        (tmp_path / f"{name}.lab").write_bytes(labels.tobytes())
        cases.append((name, mom, n, steps))
        tr = Trainer(etm, momentum=mom)
        flashed = refit_stats.pack(refit_stats.client_stats(tr, xs, labels))
        for i in range(steps):
            tr.step(xs[i % n], int(labels[i % n]), 0.05)
        state = tr.state_bytes()
        want[name] = (refit_stats.pack(refit_stats.client_stats(tr, xs, labels)), flashed)
        assert tr.state_bytes() == state
    return cases, want


def _parse(out):
    assert out.rstrip().endswith("DONE"), out[-2000:]
    got, same = {}, {}
    for line in out.splitlines():
        parts = line.split()
        if parts and parts[0] == "S":
            got[(parts[1], parts[2])] = bytes.fromhex(parts[3]) if len(parts) > 3 else b""
        elif parts and parts[0] == "SAME":
            same[(parts[1], parts[2])] = parts[3]
    return got, same


def test_refit_stats_c_and_fallback_equal_the_twin(micropython, tmp_path):
    cases, want = _cases(tmp_path)
    out = run_with_firmware(RUNNER.format(d=str(tmp_path), cases=cases), tmp_path, binary=micropython)
    got, same = _parse(out)
    moved = 0
    for name, _, _, _ in cases:
        for tag in ("C", "P"):
            assert got[(tag, name)] == want[name][0], f"{tag} {name}: refit_stats differs from the twin's upload"
            assert same[(tag, name)] == "1", f"{tag} {name}: refit_stats changed the model"
        moved += want[name][0] != want[name][1]
    # (7 of the 16: the others train nothing before the classifier, so its input cannot move)
    assert moved >= 5, f"the SGD steps moved the classifier's input on {moved} models only"


NATMOD = """
import edgetune
D = {d!r}
for name, mom, n, steps in {cases!r}:
    buf = open(D + '/' + name + '.etm', 'rb').read()
    raw = open(D + '/' + name + '.x', 'rb').read()
    lab = open(D + '/' + name + '.lab', 'rb').read()
    k = len(raw) // n
    xs = [raw[i * k:(i + 1) * k] for i in range(n)]
    m = edgetune.Model(buf, momentum=mom)
    for i in range(steps):
        m.train(xs[i % n], lab[i % n], lr=0.05)
    print('S', 'C', name, m.refit_stats(xs, lab).hex())
print('DONE')
"""


@pytest.mark.natmod
def test_refit_stats_module_builds(micropython, tmp_path):
    """The built-in module and the native .mpy (stock unix port): the same bytes as the twin."""
    cases, want = _cases(tmp_path)
    cases = cases[:6]
    out = run_script(micropython, tmp_path, NATMOD.format(d=str(tmp_path), cases=cases)).stdout
    got, _ = _parse(out)
    for name, _, _, _ in cases:
        assert got[("C", name)] == want[name][0], name


BAD = """
import edgetune, edgetune_py
buf = open({etm!r}, 'rb').read()
raw = open({x!r}, 'rb').read()
n = {n}
k = len(raw) // n
xs = [raw[i * k:(i + 1) * k] for i in range(n)]
lab = list(open({lab!r}, 'rb').read())
for tag, mod in (('C', edgetune), ('P', edgetune_py)):
    m = mod.Model(buf)
    m.train(xs[0], lab[0], lr=0.1)
    s0 = m.state()
    def attempt(what, *a, **kw):
        try:
            m.refit_stats(*a, **kw)
            print(tag, what, 'OK')
        except Exception as e:
            print(tag, what, type(e).__name__ + ':', e)
        print(tag, what, 'same', int(m.state() == s0))
    attempt('few', xs[:1], lab[:1])
    attempt('none', [], [])
    attempt('many', [xs[0]] * 32768, bytes(32768))
    attempt('len', xs, lab[:-1])
    attempt('label', xs, lab[:-1] + [{ncls}])
    attempt('neg', xs, lab[:-1] + [-1])
    attempt('short', xs[:-1] + [xs[0][:-1]], lab)
    attempt('xsint', 5, lab)
    attempt('labstr', xs, 'ab')
    attempt('l2', xs, lab, l2=1.0)
    m2 = mod.Model(open({etm2!r}, 'rb').read())
    try:
        m2.refit_stats([bytes({n2})] * 3, [0, 1, 2])
        print(tag, 'cannot OK')
    except Exception as e:
        print(tag, 'cannot', type(e).__name__ + ':', e)
print('DONE')
"""


def test_refit_stats_bad_arguments(micropython, tmp_path):
    """The refit's argument errors and messages, C = fallback, and the model unchanged."""
    _, model = refittable_models(1)[0]
    rng = np.random.default_rng(3)
    n = 12
    xs = rng.integers(-128, 128, (n, model.input_tensor.size)).astype(np.int8)
    labels = rng.integers(0, model.output_tensor.size, n).astype(np.uint8)
    cannot = chain([("conv", 1, 3, 4, 1, False, True), ("mean",)], (1, 1, 8, 3))  # no FULLY_CONNECTED classifier
    for f, b in (("m.etm", write_etm(model)), ("x", xs.tobytes()), ("lab", labels.tobytes()),
                 ("c.etm", write_etm(cannot))):
        (tmp_path / f).write_bytes(b)
    code = BAD.format(etm=str(tmp_path / "m.etm"), x=str(tmp_path / "x"), lab=str(tmp_path / "lab"), n=n,
                      ncls=model.output_tensor.size, etm2=str(tmp_path / "c.etm"), n2=cannot.input_tensor.size)
    out = run_with_firmware(code, tmp_path, binary=micropython)
    assert out.rstrip().endswith("DONE"), out
    rows = {}
    for line in out.splitlines():
        parts = line.split(" ", 2)
        if len(parts) == 3 and parts[0] in ("C", "P") and not parts[2].startswith("same"):
            rows[(parts[0], parts[1])] = parts[2]
    assert all(line.endswith("same 1") for line in out.splitlines() if " same " in line), out
    expect = {
        "few": "ValueError: edgetune: refit needs 2..32767 windows",
        "none": "ValueError: edgetune: refit needs 2..32767 windows",
        "many": "ValueError: edgetune: refit needs 2..32767 windows",
        "len": "ValueError: edgetune: refit needs as many labels as windows",
        "label": "ValueError:",
        "neg": "ValueError:",
        "short": "ValueError:",
        "xsint": "TypeError:",
        "labstr": "TypeError:",
        "l2": "TypeError:",
        "cannot": "ValueError: edgetune: refit needs a FULLY_CONNECTED classifier",
    }
    for what, start in expect.items():
        for tag in ("C", "P"):
            assert rows[(tag, what)].startswith(start), (tag, what, rows[(tag, what)])
        if what in ("label", "neg", "short"):
            assert rows[("C", what)] == rows[("P", what)], (what, out)
