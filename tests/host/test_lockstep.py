"""The lockstep twin (host/edgetune/twin/lockstep.py) equals one training.Trainer per scheme, bit for bit.

Hand-built models (tests/support/tinymodels.py) with strided and padded convolutions, max pools, MEAN
and a classifier; schemes with different first layers, bias-only and weight-only entries,
partial channel sets, a flashed -128 weight in a channel that is not trained, per-run learning
rates, QAS and plain SGD. Every run's trained-weights file (weights, biases, residuals), every
loss and the selection accuracy must be identical to a sequential Trainer; the search's batched
runner must return what `_finetune` returns for each scheme alone.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgetune import search
from edgetune.twin.lockstep import Lockstep
from edgetune.format.modelfile import write_etm
from edgetune.format.scheme import Entry, Scheme, out_channels, weight_layers
from edgetune.twin.training import Trainer

from tests.support.tinymodels import chain

SPECS = [
    ([("conv", 3, 3, 6, 2, True, True), ("max", 2, 2, 2), ("conv", 2, 2, 5, 1, True, False), ("mean",),
      ("fc", 4, False)], (1, 12, 10, 3)),
    ([("conv", 1, 5, 8, 1, True, True), ("conv", 1, 3, 6, 2, True, True), ("max", 1, 2, 2),
      ("conv", 1, 3, 7, 1, False, True), ("mean",), ("fc", 5, False)], (1, 1, 30, 4)),
    ([("conv", 1, 3, 5, 1, True, False), ("fc", 6, True), ("fc", 3, False)], (1, 1, 9, 2)),
]


def schemes_for(model, rng) -> list[Scheme]:
    wl = weight_layers(model)
    out = [Scheme(()), Scheme.build(model, 0), Scheme.build(model, len(wl)), Scheme.build(model, 1)]
    for _ in range(9):
        entries = []
        for i in wl:
            bias = bool(rng.integers(0, 2))
            c = out_channels(model, i)
            ch = tuple(sorted(rng.choice(c, int(rng.integers(1, c + 1)), replace=False).tolist())) \
                if rng.integers(0, 2) else ()
            if bias or ch:
                entries.append(Entry(i, bias, ch))
        if entries:
            out.append(Scheme(tuple(entries)))
    return out


@pytest.mark.parametrize("qas", [True, False])
@pytest.mark.parametrize("k", range(len(SPECS)))
def test_lockstep_equals_sequential_trainers(k, qas):
    spec, shape = SPECS[k]
    model = chain(spec, shape, seed=k)
    wl = weight_layers(model)
    # a flashed -128 in a weight channel: only a run that trains it may clamp it to -127
    w0 = model.tensors[model.layers[wl[0]].weight].data
    w0.reshape(w0.shape[0], -1)[0, 0] = -128
    buf = write_etm(model)
    rng = np.random.default_rng([k, int(qas)])
    schemes = schemes_for(model, rng)
    lrs = rng.choice([0.003, 0.01, 0.05, 0.3], len(schemes))
    n_in, n_cls = model.input_tensor.size, model.output_tensor.size
    xs = rng.integers(-128, 128, (24, n_in)).astype(np.int8)
    ys = rng.integers(0, n_cls, 24)
    ls = Lockstep(buf, schemes, lrs, qas)
    losses = [ls.step(x, y) for x, y in zip(xs, ys)]
    accs = ls.accuracy(xs[:10], ys[:10])
    for r, (s, lr) in enumerate(zip(schemes, lrs)):
        tr = Trainer(buf, s)
        for t, (x, y) in enumerate(zip(xs, ys)):
            assert tr.step(x, int(y), float(lr), qas) == losses[t][r], (r, t)
        assert ls.trainer(r).state_bytes() == tr.state_bytes(), r
        assert accs[r] == float(tr.evaluate(xs[:10], ys[:10])[1])


def test_unsupported_layers_fall_back():
    model = chain([("conv", 1, 3, 4, 1, True, True), ("dw", 1, 3, 1, True, True), ("mean",), ("fc", 3, False)],
                  (1, 1, 12, 2))
    with pytest.raises(NotImplementedError):
        Lockstep(write_etm(model), [Scheme.build(model, 3)], [0.01])
    # only the layers from the lowest first trained layer up matter
    Lockstep(write_etm(model), [Scheme.build(model, 0)], [0.01])


def test_runner_batches_equal_single_runs():
    model = chain(SPECS[0][0], SPECS[0][1], seed=5, meta={})
    buf = write_etm(model)
    rng = np.random.default_rng(9)
    n_in, n_cls = model.input_tensor.size, model.output_tensor.size
    d = search.SearchData(rng.integers(-128, 128, (6, n_in)).astype(np.int8), rng.integers(0, n_cls, 6),
                          np.concatenate([rng.permutation(6) for _ in range(3)]),
                          rng.integers(-128, 128, (20, n_in)).astype(np.int8), rng.integers(0, n_cls, 20), "test")
    schemes = schemes_for(model, rng)[1:8]
    runs = [(s.encode(), lr) for s, lr in zip(schemes, [0.01, 0.03, 0.1, 0.01, 0.03, 0.1, 0.3])]
    assert search.finetune_many(buf, d, True, runs) == [search.finetune(buf, d, True, e, lr) for e, lr in runs]


def test_vanishing_gradient_stops_the_run_like_the_trainer():
    """A layer whose outputs all sit at the ReLU floor passes no gradient down: the Trainer stops
    there, so a flashed -128 weight below stays -128 even in a trained channel."""
    spec, shape = SPECS[0]
    model = chain(spec, shape, seed=0)
    wl = weight_layers(model)
    w0 = model.tensors[model.layers[wl[0]].weight].data
    w0.reshape(w0.shape[0], -1)[:, 0] = -128
    b1 = model.tensors[model.layers[wl[1]].bias].data
    b1[...] = -(1 << 24)  # conv 2's outputs are all clamped to the floor: zero gradient below
    buf = write_etm(model)
    c0 = out_channels(model, wl[0])
    schemes = [Scheme.build(model, len(wl), {wl[0]: list(range(c0))}), Scheme.build(model, 1, {wl[0]: [0, 2]}),
               Scheme.build(model, len(wl))]
    rng = np.random.default_rng(3)
    xs = rng.integers(-128, 128, (6, model.input_tensor.size)).astype(np.int8)
    ys = rng.integers(0, model.output_tensor.size, 6)
    ls = Lockstep(buf, schemes, [0.05, 0.05, 0.05])
    for x, y in zip(xs, ys):
        ls.step(x, y)
    for r, s in enumerate(schemes):
        tr = Trainer(buf, s)
        for x, y in zip(xs, ys):
            tr.step(x, int(y), 0.05, True)
        assert tr.info.stopped_at is not None or tr.first > wl[1]
        assert ls.trainer(r).state_bytes() == tr.state_bytes(), r
    assert (ls.trainer(0).trained_weights(wl[0])[:, 0] == -128).all()
