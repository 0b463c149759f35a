"""The iterative gradient-matching attack (fleet/leakage_iter.py) on small random models: the
twin reproduces an upload exactly from the true window (match loss 0: the attack's objective is
the board's real update), the search lowers the match loss from its start on one-sample uploads
of the convolution biases, and an upload holding nothing of the deeper layers gives no guess."""

from __future__ import annotations

import numpy as np
import pytest

from edgetune.fleet import leakage_iter as li, update
from edgetune.format.modelfile import write_etm

from tests.support.trainingcases import train_model


def _setup(seed, tmp_path):
    m = train_model(seed)
    p = tmp_path / f"m{seed}.etm"
    p.write_bytes(write_etm(m))
    from edgetune.fleet import client

    _, t, lay = client._model(str(p))
    return str(p), t, lay


@pytest.mark.parametrize("seed", range(7))
def test_attack_matches_one_sample_uploads(seed, tmp_path):
    path, t, lay = _setup(seed, tmp_path)
    rng = np.random.default_rng([77, seed])
    glob = t.state_bytes()
    n_in, C = t.model.input_tensor.size, t.model.output_tensor.size
    L = len(t.model.layers) - 1
    deep = np.ones(lay.size, bool)
    for kind in ("b", "w"):
        if lay.span(L, kind) is not None:
            deep[lay.span(L, kind)] = False
    J = np.flatnonzero(deep)
    if J.size == 0:
        pytest.skip("this model trains the classifier only")
    for _ in range(10):  # a window whose step moves a deeper layer
        x = rng.integers(-128, 128, n_in).astype(np.int8)
        y = int(rng.integers(C))
        t.load_state(glob)
        t.step(x, y, 0.05, True)
        v = update.delta(lay, t.state_bytes(), glob)
        if np.any(v[J]):
            break
    else:
        pytest.skip("no window moved the deeper layers")
    m = li.Matcher(path, glob, 0.05, J)
    assert m.loss(x.astype(np.float64), y, v[J].astype(np.float64)) == pytest.approx(0.0, abs=1e-12)
    zp = int(t.model.input_tensor.zero_point)
    start = m.loss(np.full(n_in, float(zp)), y, v[J].astype(np.float64))
    yb, xb, loss = li.attack(path, glob, v, 0.05, None, iters=15, label_iters=4, seed=seed)
    assert 0 <= yb < C and xb.dtype == np.int8 and xb.shape == (n_in,)
    assert loss <= start
    if start > 0.01:  # (some uploads move one bias only: any window matches them)
        assert loss < start


def test_nothing_of_the_deeper_layers_sent_gives_no_guess(tmp_path):
    path, t, lay = _setup(0, tmp_path)
    v = np.zeros(lay.size, np.float32)
    y, x, loss = li.attack(path, t.state_bytes(), v, 0.05, np.array([0]))
    assert y == -1 and loss == 1.0
