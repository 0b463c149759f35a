"""The numpy twin's fast paths give the same bits as the literal spec formulas they replace.

host/edgetune/twin/reference.py, training.py and grid.py compute some steps with fewer numpy operations than
the spec's literal text (docs/training.md, gemmlowp/TFLM): the folded requantization, the
gather-based im2col, the closed-form round_sat / rdiv and the 0/1-matrix scatter of the conv
input gradient. The parity tests (test_unix_train, test_tflm_parity, test_training_ref) compare
whole models; these compare each fast path with its literal form on adversarial values, and the
scatter path with the tap loop that large geometries still take.
"""

from __future__ import annotations

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from edgetune.twin import reference as R
from edgetune.twin import grid, training
from edgetune.format.scheme import Scheme, out_channels, weight_layers
from edgetune.twin.qmath import F32, rdiv, round_sat
from edgetune.twin.training import Trainer

from tests.support.tinymodels import chain


def literal_round_sat(v, lim=training.LIM30):
    v = np.asarray(v, dtype=F32)
    flim = F32(lim)
    inside = np.abs(v) < flim
    vv = np.where(inside, v, F32(0))
    t = np.where(vv >= F32(0), vv + F32(0.5), vv - F32(0.5))
    r = np.trunc(t).astype(np.int64)
    r = np.where(inside, r, np.where(v >= flim, lim, -lim))
    return np.where(np.isnan(v), 0, r).astype(np.int64)


def literal_rdiv(a, b):
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    half = b // 2
    return np.where(a >= 0, (a + half) // b, -((half - a) // b))


def test_round_sat_equals_literal_on_all_kinds_of_floats():
    rng = np.random.default_rng(1)
    raw = rng.integers(0, 1 << 32, 400_000, dtype=np.uint64).astype(np.uint32).view(F32)  # incl. NaN, inf
    spec = np.array([0.0, -0.0, 0.5, -0.5, 1.5, -1.5, 2.5, np.inf, -np.inf, np.nan, 32766.5, 32767, 32767.5,
                     -32767.5, -32768, 2**30, -2**30, 2**30 - 64, 1e30, -1e30, 0.49999997, -0.49999997], F32)
    with np.errstate(all="ignore"):
        for lim in (training.LIM30, 32767, 127):
            for v in (raw, spec, rng.normal(0, 40000, 50_000).astype(F32), rng.normal(0, 3, (50, 7)).astype(F32)):
                got, want = round_sat(v, lim), literal_round_sat(v, lim)
                assert got.dtype == want.dtype and got.shape == want.shape
                assert np.array_equal(got, want)
            for s in (F32(3.5), F32(-2.5), F32(np.nan), 7):
                assert round_sat(s, lim).shape == () and round_sat(s, lim) == literal_round_sat(s, lim)


def test_rdiv_equals_literal():
    rng = np.random.default_rng(2)
    for b in list(range(1, 40)) + [1023, 1024, 32767, 1 << 30]:
        a = np.concatenate([np.arange(-60, 61), rng.integers(-(1 << 45), 1 << 45, 2000)])
        assert np.array_equal(rdiv(a, b), literal_rdiv(a, b))
    a = rng.integers(-(1 << 40), 1 << 40, 9)
    assert np.array_equal(rdiv(a, np.arange(1, 10) * 7), literal_rdiv(a, np.arange(1, 10) * 7))


def test_requantize_equals_primitive_composition():
    rng = np.random.default_rng(3)
    for trial in range(300):
        n = int(rng.integers(1, 40))
        m = rng.integers(0, (1 << 31) - 1, n).astype(np.int32)
        s = rng.integers(-31, 8, n).astype(np.int32)
        if trial % 5 == 0:
            m[0] = -(1 << 31)  # the high-mul's saturating case: the literal path is taken
        wide = 1 << (40 if trial % 2 else 20)
        acc = rng.integers(-wide, wide, (3, n))
        lo, hi = sorted(int(v) for v in rng.integers(-128, 128, 2))
        want = R.multiply_by_quantized_multiplier(R.wrap_int32(acc), m.astype(np.int64), s.astype(np.int64)) + 5
        want = np.clip(want, lo, hi).astype(np.int8)
        assert np.array_equal(R.requantize(acc, m, s, 5, lo, hi), want), trial
    for shift in range(-31, 8):  # scalar multiplier (MEAN)
        acc = rng.integers(-(1 << 33), 1 << 33, 500)
        for mult in (1, 1 << 30, 1234567890, (1 << 31) - 1):
            want = np.clip(R.multiply_by_quantized_multiplier(R.wrap_int32(acc), mult, shift) - 3, -100, 127)
            assert np.array_equal(R.requantize(acc, mult, shift, -3, -100, 127), want.astype(np.int8))
    with pytest.raises(ValueError):
        R.requantize(np.zeros(2, np.int64), np.ones(2, np.int32), np.array([-32, 0], np.int32), 0, -128, 127)


@pytest.mark.parametrize("geom", [(1, 9, 3, 1, 3, 1, 1, 0, 1), (7, 6, 2, 3, 3, 2, 2, 1, 1), (5, 5, 4, 2, 4, 1, 3, 0, 2),
                                  (4, 8, 1, 3, 2, 3, 1, 1, 0)])
def test_pad_and_im2col_equal_np_pad_and_sliding_windows(geom):
    h, w, c, kh, kw, sh, sw, ph, pw = geom
    x = np.random.default_rng(4).integers(-128, 128, (2, h, w, c)).astype(np.int64)
    oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    need_h, need_w = (oh - 1) * sh + kh, (ow - 1) * sw + kw
    bottom, right = need_h - ph - h, need_w - pw - w
    lit = np.pad(x[:, :h + min(bottom, 0), :w + min(right, 0)],
                 ((0, 0), (ph, max(bottom, 0)), (pw, max(right, 0)), (0, 0)), constant_values=-7)
    xp = R.pad(x, ph, pw, kh, kw, sh, sw, oh, ow, -7)
    assert xp.dtype == lit.dtype and np.array_equal(xp, lit)
    win = sliding_window_view(lit, (kh, kw), axis=(1, 2))[:, ::sh, ::sw][:, :oh, :ow]
    cols = win.transpose(0, 1, 2, 4, 5, 3).reshape(2 * oh * ow, kh * kw * c)
    assert np.array_equal(R.im2col(xp, kh, kw, sh, sw, oh, ow), cols)


def _train_all(model, n_steps=12, trace=True):
    wl = weight_layers(model)
    w = {i: [c for c in range(out_channels(model, i)) if c % 2 == 0] for i in wl}
    tr = Trainer(model, Scheme.build(model, len(wl), w))
    rng = np.random.default_rng(5)
    grads = []
    n_in = model.input_tensor.size
    for s in range(n_steps):
        x = rng.integers(-128, 128, n_in).astype(np.int8)
        tr.step(x, int(rng.integers(0, model.output_tensor.size)), 0.05, s % 2 == 0, trace=trace)
        grads.append({k: {kk: np.asarray(vv).copy() for kk, vv in v.items()} for k, v in tr.info.grads.items()})
    return tr.state_bytes(), grads


@pytest.mark.parametrize("spec,shape", [
    ([("conv", 3, 3, 6, 2, True, True), ("dw", 3, 3, 1, True, True), ("max", 2, 2, 2), ("conv", 2, 2, 5, 1, True, False),
      ("avg", 2, 1, 1), ("mean",), ("fc", 4, False)], (1, 12, 10, 3)),
    ([("conv", 1, 5, 8, 1, True, True), ("dw", 1, 3, 2, False, True), ("conv", 1, 3, 6, 2, True, True), ("mean",),
      ("fc", 3, False)], (1, 1, 30, 4)),
])
def test_conv_input_gradient_scatter_equals_tap_loop(monkeypatch, spec, shape):
    model = chain(spec, shape, seed=3)
    grid._SCATTER.clear()
    fast = _train_all(model)
    assert any(v is not None for v in grid._SCATTER.values())  # the scatter path was taken
    monkeypatch.setattr(grid, "_SCATTER_MAX", 0)
    grid._SCATTER.clear()
    slow = _train_all(model)
    assert all(v is None for v in grid._SCATTER.values())  # the tap loop was taken
    grid._SCATTER.clear()
    assert fast[0] == slow[0]
    for a, b in zip(fast[1], slow[1]):
        assert a.keys() == b.keys()
        for k in a:
            assert a[k].keys() == b[k].keys() and all(np.array_equal(a[k][kk], b[k][kk]) for kk in a[k])
