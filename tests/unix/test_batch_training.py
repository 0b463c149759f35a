"""Mini-batch training (docs/training.md §5): C module, firmware/edgetune_py.py and the numpy twin
(host/edgetune/twin/training.py Trainer.step_batch) compute the same bits, and the arena is memory.py's.

On the real unix-port MicroPython: random hand-built trainable models (tests/support/trainingcases.py
`train_model`) x schemes {default, classifier only, classifier + channel-sliced weights} x momentum
on/off x k in {1, 3, 8}: BATCH_STEPS batch steps (labels alternately bytes and a list), the mean
losses (float32 bits), the saved trained-weights files (byte for byte) and info() are identical
between C and edgetune_py and equal the twin's; info()['arena'] == memory.training_arena(batch=True).
Refusals (k labels on a non-batch model, mismatched lengths, bad labels, empty batch, non-finite lr)
raise ValueError in both and leave the model unchanged.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgetune.twin import memory
from edgetune.twin.training import Trainer

from tests.support.fallback import run_with_firmware
from tests.support.trainingcases import cases_for, f32hex, train_model

N_MODELS = 20
BATCH_STEPS = 10
KINDS = ("default", "classifier", "sliced")

RUNNER = """
import edgetune, edgetune_py, struct, binascii, gc
D = {d!r}
def hx(v):
    return binascii.hexlify(struct.pack('<f', v)).decode()
for name, scheme, mom, qas, lr, k in {cases!r}:
    buf = open(D + '/' + name + '.etm', 'rb').read()
    xs = open(D + '/' + name + '.x', 'rb').read()
    labels = open(D + '/' + name + '.lab', 'rb').read()
    steps = len(labels) // k
    n = len(xs) // len(labels)
    for tag, mod in (('C', edgetune), ('P', edgetune_py)):
        m = None
        gc.collect()
        m = mod.Model(buf, scheme=scheme, momentum=mom, batch=True)
        losses = []
        for s in range(steps):
            lab = labels[s * k:(s + 1) * k]
            if s % 2:
                lab = list(lab)
            losses.append(hx(m.train(xs[s * k * n:(s + 1) * k * n], lab, lr=lr, qas=qas)))
        m.save(D + '/' + name + '.' + tag)
        print('CASE', tag, name, ' '.join(losses), binascii.hexlify(m.predict(xs[0:n])).decode())
        print('INFO', tag, name, repr(sorted(m.info().items())))
print('DONE')
"""


def _cases():
    out = []
    for seed in range(N_MODELS):
        model = train_model(seed)
        rng = np.random.default_rng([977, seed])
        for c in cases_for(f"b{seed}", model, rng):
            if c.kind not in KINDS:
                continue
            out.append(c)
    return out


@pytest.mark.parametrize("k", (1, 3, 8))
def test_batch_steps_c_py_twin(micropython, tmp_path, k):
    cases = []
    data = {}
    rng = np.random.default_rng([313, k])
    for c in _cases():
        for mom in (0.0, 0.5):
            name = f"{c.name}_m{int(mom * 10)}_k{k}"
            n_in, n_cls = c.model.input_tensor.size, c.model.output_tensor.size
            xs = rng.integers(-128, 128, (BATCH_STEPS * k, n_in)).astype(np.int8)
            labels = rng.integers(0, n_cls, BATCH_STEPS * k).astype(np.uint8)
            (tmp_path / f"{name}.etm").write_bytes(c.etm)
            (tmp_path / f"{name}.x").write_bytes(xs.tobytes())
            (tmp_path / f"{name}.lab").write_bytes(labels.tobytes())
            data[name] = (c, mom, xs, labels)
            cases.append((name, c.device_scheme, mom, c.qas, c.lr, k))
    kinds = {data[n][0].kind for n in data}
    assert kinds == set(KINDS) and len({data[n][0].name.split("_")[0] for n in data}) >= N_MODELS, kinds
    out = run_with_firmware(RUNNER.format(d=str(tmp_path), cases=cases), tmp_path, timeout=900, binary=micropython)
    assert out.rstrip().endswith("DONE"), out[-2000:]
    rows = {}
    for line in out.splitlines():
        parts = line.split(" ", 3)
        if parts[0] in ("CASE", "INFO"):
            rows[(parts[0], parts[1], parts[2])] = parts[3]
    n_changed = 0
    for name, (c, mom, xs, labels) in data.items():
        where = (f"{name}: ops {[ly.op_name for ly in c.model.layers]} scheme {c.scheme.describe()} "
                 f"momentum {mom} qas {c.qas} lr {c.lr} k {k}")
        got_c, got_p = rows[("CASE", "C", name)], rows[("CASE", "P", name)]
        assert got_p == got_c, f"{where}\nC  {got_c}\npy {got_p}"
        assert rows[("INFO", "P", name)] == rows[("INFO", "C", name)], where
        state_c = (tmp_path / f"{name}.C").read_bytes()
        assert (tmp_path / f"{name}.P").read_bytes() == state_c, f"{where}: state files differ"
        tw = Trainer(c.etm, c.scheme, momentum=mom, batch=True)
        want = [f32hex(tw.step_batch(xs[s * k:(s + 1) * k], labels[s * k:(s + 1) * k], c.lr, c.qas))
                for s in range(BATCH_STEPS)]
        fields = got_c.split()
        assert fields[:BATCH_STEPS] == want, f"{where}: losses differ from the numpy twin"
        assert state_c == tw.state_bytes(), f"{where}: state differs from the numpy twin"
        assert fields[BATCH_STEPS] == tw.predict(xs[0]).tobytes().hex(), where
        info = rows[("INFO", "C", name)]
        assert f"('arena', {memory.training_arena(c.model, c.scheme, mom > 0, batch=True)})" in info, where
        assert "('batch', True)" in info, where
        # the weights file does not carry the accumulator: a non-batch twin has the same size
        assert len(state_c) == len(Trainer(c.etm, c.scheme, momentum=mom).state_bytes()), where
        n_changed += int(state_c[32:] != Trainer(c.etm, c.scheme, momentum=mom).state_bytes()[32:])
    assert n_changed >= len(data) // 3, (n_changed, len(data))  # the steps really moved weights


REFUSALS = """
import edgetune, edgetune_py, binascii
D = {d!r}
buf = open(D + '/m.etm', 'rb').read()
n = {n_in}
x = bytes(range(n))
def snap(m):
    m.save(D + '/snap')
    return open(D + '/snap', 'rb').read() + m.predict(x)
def attempt(tag, what, m, *a, **k):
    before = snap(m)
    try:
        m.train(*a, **k)
        r = 'ok'
    except ValueError as e:
        r = 'ValueError ' + ('batch=True' if 'batch=True' in str(e) else '')
    except Exception as e:
        r = type(e).__name__
    print('R', tag, what, r, snap(m) == before)
for tag, mod in (('C', edgetune), ('P', edgetune_py)):
    plain = mod.Model(buf)
    print('A', tag, plain.info()['arena'], plain.info()['batch'])
    attempt(tag, 'nobatch_list', plain, x + x, [0, 1])
    attempt(tag, 'nobatch_bytes', plain, x, b'\\x00')
    m = mod.Model(buf, momentum=0.5, batch=True)
    print('A', tag, m.info()['arena'], m.info()['batch'])
    m.train(x + x, [1, 0], lr=0.1)
    attempt(tag, 'short_x', m, x, [0, 1])
    attempt(tag, 'long_x', m, x + x + x, b'\\x00\\x01')
    attempt(tag, 'label_range', m, x + x, [0, {n_cls}])
    attempt(tag, 'label_neg', m, x + x, [0, -1])
    attempt(tag, 'label_type', m, x + x, [0, 'a'])
    attempt(tag, 'empty', m, b'', [])
    attempt(tag, 'lr_inf', m, x + x, [0, 1], lr=float('inf'))
    attempt(tag, 'lr_nan', m, x + x, [0, 1], lr=float('nan'))
    attempt(tag, 'good', m, x + x, [0, 1], lr=0.1)
    attempt(tag, 'single_int', m, x, 1, lr=0.1)
print('DONE')
"""


@pytest.mark.natmod
def test_batch_refusals_and_arena(micropython, tmp_path):
    from edgetune.format.modelfile import write_etm
    from edgetune.format.scheme import Scheme

    model = train_model(3)
    etm = write_etm(model)
    (tmp_path / "m.etm").write_bytes(etm)
    n_in, n_cls = model.input_tensor.size, model.output_tensor.size
    out = run_with_firmware(REFUSALS.format(d=str(tmp_path), n_in=n_in, n_cls=n_cls), tmp_path, timeout=900, binary=micropython)
    assert out.rstrip().endswith("DONE"), out[-2000:]
    lines = [ln.split() for ln in out.splitlines()]
    arenas = [ln for ln in lines if ln[0] == "A"]
    scheme = Scheme.default(model)
    plain, batch = memory.training_arena(model, scheme), memory.training_arena(model, scheme, True, batch=True)
    assert batch > memory.training_arena(model, scheme, True)
    assert arenas == [["A", "C", str(plain), "False"], ["A", "C", str(batch), "True"],
                      ["A", "P", str(plain), "False"], ["A", "P", str(batch), "True"]], arenas
    res = {(ln[1], ln[2]): ln[3:] for ln in lines if ln[0] == "R"}
    for tag in ("C", "P"):
        for what in ("nobatch_list", "nobatch_bytes"):
            assert res[(tag, what)] == ["ValueError", "batch=True", "True"], (tag, what, res[(tag, what)])
        for what in ("short_x", "long_x", "label_range", "label_neg", "label_type", "empty", "lr_inf", "lr_nan"):
            assert res[(tag, what)] == ["ValueError", "True"], (tag, what, res[(tag, what)])
        assert res[(tag, "good")] == ["ok", "False"], res[(tag, "good")]
        assert res[(tag, "single_int")] == ["ok", "False"], res[(tag, "single_int")]
    assert [v for (t, _), v in sorted(res.items()) if t == "C"] == [v for (t, _), v in sorted(res.items()) if t == "P"]
    # the twin refuses the same way
    tw = Trainer(etm, scheme)
    with pytest.raises(ValueError, match="batch=True"):
        tw.step_batch(np.zeros(2 * n_in, np.int8), [0, 1], 0.1)
    tb = Trainer(etm, scheme, batch=True)
    before = tb.state_bytes()
    for xs, lab, lr in ((np.zeros(n_in, np.int8), [0, 1], 0.1), (np.zeros(2 * n_in, np.int8), [0, n_cls], 0.1),
                        (np.zeros(0, np.int8), [], 0.1), (np.zeros(2 * n_in, np.int8), [0, 1], float("inf"))):
        with pytest.raises(ValueError):
            tb.step_batch(xs, lab, lr)
        assert tb.state_bytes() == before
