"""The spec's scalar arithmetic, vectorized (docs/training.md §1-§3): float32 rounding to int,
rounded division, the C module's expf/logf, per-channel scales and their validation. Results
are bit-identical to the C versions; every numpy twin (training, backward, refit, frame, the
search's lockstep runs, the fleet's statistics) takes these from here.
"""

from __future__ import annotations

import numpy as np

from ..format.modelfile import NONE, EtmModel
from ..format.scheme import Scheme, out_channels

F32 = np.float32
LIM30 = 1 << 30

def round_sat(v, lim: int = LIM30) -> np.ndarray:
    """float32 → int: saturate at ±lim, else (int)(v ± 0.5f) truncated; NaN → 0 (int64 array)."""
    v = np.asarray(v, dtype=F32)
    shape = v.shape
    v = v.reshape(-1)
    flim = F32(lim)
    # v + 0.5f for v >= 0, v - 0.5f for v < 0 (-0.0 gives -0.5f, truncated to 0 all the same);
    # |v| >= lim stays >= lim after the add, so clamping the sum saturates; the int64 cast truncates
    t = v + np.copysign(F32(0.5), v)
    np.minimum(t, flim, out=t)  # NaN stays NaN in both
    np.maximum(t, -flim, out=t)
    nan = np.isnan(t)
    if nan.any():
        t[nan] = 0
    return t.astype(np.int64).reshape(shape)


def rdiv(a, b) -> np.ndarray:
    """Integer division rounding half away from zero (b > 0), int64."""
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    # a >= 0: (a + half) // b;  a < 0: -((half - a) // b) = -((half + |a|) // b)
    q = (np.abs(a) + b // 2) // b
    return np.where(a < 0, -q, q)


_EXP_C = [F32(c) for c in (0.00138888892, 0.00833333377, 0.0416666679, 0.166666672, 0.5, 1.0, 1.0)]


def et_expf(x) -> np.ndarray:
    """exp(x) for float32 x <= 0 (docs/training.md §3)."""
    x = np.asarray(x, dtype=F32)
    k = round_sat(x * F32(1.44269504), LIM30)
    kf = k.astype(F32)
    with np.errstate(over="ignore", invalid="ignore"):  # only for x < -87, whose result is 0
        r = (x - kf * F32(0.693145752)) - kf * F32(1.42860677e-06)
        p = r * _EXP_C[0]
        for c in _EXP_C[1:-1]:
            p = r * (c + p)
        p = _EXP_C[-1] + p
    ok = (x >= F32(-87.0)) & (k >= -126)
    kk = np.where(ok, k, 0) + 127
    scale = (kk.astype(np.uint32) << np.uint32(23)).view(F32)
    return np.where(ok, p * scale, F32(0)).astype(F32)


def et_logf(x) -> np.ndarray:
    """ln(x) for float32 x >= 1 (docs/training.md §3)."""
    x = np.asarray(x, dtype=F32)
    bits = x.view(np.uint32).astype(np.int64)
    e = ((bits >> 23) & 255) - 127
    mf = ((bits & 0x7FFFFF) | 0x3F800000).astype(np.uint32).view(F32)
    big = mf > F32(1.41421356)
    mf = np.where(big, mf * F32(0.5), mf)
    e = np.where(big, e + 1, e)
    t = (mf - F32(1)) / (mf + F32(1))
    t2 = t * t
    p = F32(0.142857149) + t2 * F32(0.111111112)
    p = F32(0.200000003) + t2 * p
    p = F32(0.333333343) + t2 * p
    p = F32(1) + t2 * p
    ln_m = (F32(2.0) * t) * p
    return (e.astype(F32) * F32(0.693147182) + ln_m).astype(F32)


def channel_scales(t, n: int) -> np.ndarray:
    """Per-channel float32 scales of a weight/bias tensor (a per-tensor scale repeated)."""
    if t.scales is not None:
        return np.asarray(t.scales, dtype=F32).reshape(-1)
    return np.full(n, F32(t.scale), dtype=F32)


def check_scales(model: EtmModel, scheme: Scheme) -> None:
    """ValueError unless the floats a step uses are usable (docs/training.md §1 validation):
    weight scales of every weight layer i >= first, bias scales of trained biases, the input
    scale of weight-trained layers (finite and > 0); the output scale finite and >= 0."""
    first = scheme.first
    if first is None:
        return
    for i in range(first, len(model.layers)):
        ly = model.layers[i]
        if ly.weight == NONE:
            continue
        c = out_channels(model, i)
        e = scheme.entry(i)
        checks = [("weight", channel_scales(model.tensors[ly.weight], c))]
        if e is not None and e.bias:
            checks.append(("bias", channel_scales(model.tensors[ly.bias], c)))
        if e is not None and e.channels:
            checks.append(("input", np.asarray([model.tensors[ly.input].scale], F32)))
        for what, sc in checks:
            if not np.all(np.isfinite(sc) & (sc > 0)):
                raise ValueError(f"layer {i}: {what} scale is not a positive number")
    so = F32(model.output_tensor.scale)
    if not (np.isfinite(so) and so >= 0):
        raise ValueError("the output scale is not a finite number")
