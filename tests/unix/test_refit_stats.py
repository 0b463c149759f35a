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
from tests.support.trainingcases import READ_WINDOWS, refittable_models, write_windows

N_MODELS = 16

RUNNER = """
import edgetune, edgetune_py
print('MODULE', getattr(edgetune, '__file__', 'built-in'))
D = {d!r}
for tag, mod in (('C', edgetune), ('P', edgetune_py)):
  for name, mom, n, steps in {cases!r}:""" + READ_WINDOWS + """
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


@pytest.mark.natmod
def test_refit_stats_c_and_fallback_equal_the_twin(micropython, tmp_path):
    rng = np.random.default_rng(17)
    cases, want, moved = [], {}, 0
    for seed, model in refittable_models(N_MODELS):
        etm, xs, labels = write_windows(tmp_path, f"m{seed}", model, rng, 2, 31)
        mom, steps = float(rng.choice([0.0, 0.9])), int(rng.integers(3, 8))
        cases.append((f"m{seed}", mom, len(xs), steps))
        tr = Trainer(etm, momentum=mom)
        flashed = refit_stats.pack(refit_stats.client_stats(tr, xs, labels))
        for i in range(steps):
            tr.step(xs[i % len(xs)], int(labels[i % len(xs)]), 0.05)
        state = tr.state_bytes()
        want[f"m{seed}"] = refit_stats.pack(refit_stats.client_stats(tr, xs, labels))
        assert tr.state_bytes() == state
        moved += want[f"m{seed}"] != flashed
    out = run_with_firmware(RUNNER.format(d=str(tmp_path), cases=cases), tmp_path, binary=micropython)
    assert out.rstrip().endswith("DONE"), out[-2000:]
    # the natmod variant (a wrapper script in a "natmod" directory) imports the .mpy
    assert ("edgetune.mpy" in out) == ("natmod" in str(micropython)), out.splitlines()[0]
    rows = {tuple(line.split()[:3]): line.split()[3:] for line in out.splitlines() if line.startswith(("S ", "SAME "))}
    for name, _, _, _ in cases:
        for tag in ("C", "P"):
            assert bytes.fromhex(rows[("S", tag, name)][0]) == want[name], f"{tag} {name}: differs from the twin"
            assert rows[("SAME", tag, name)] == ["1"], f"{tag} {name}: refit_stats changed the model"
    # (7 of the 16: the others train nothing before the classifier, so its input cannot move)
    assert moved >= 5, f"the SGD steps moved the classifier's input on {moved} models only"


BAD = """
import edgetune, edgetune_py
D, name, n = {d!r}, 'm', {n}
if 1:""" + READ_WINDOWS + """
lab = list(lab)
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
    write_windows(tmp_path, "m", model, np.random.default_rng(3), 12, 13)
    cannot = chain([("conv", 1, 3, 4, 1, False, True), ("mean",)], (1, 1, 8, 3))  # no FULLY_CONNECTED classifier
    (tmp_path / "c.etm").write_bytes(write_etm(cannot))
    code = BAD.format(d=str(tmp_path), n=12, ncls=model.output_tensor.size, etm2=str(tmp_path / "c.etm"),
                      n2=cannot.input_tensor.size)
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
