"""Closed-form classifier refit: the numpy twin (docs/training.md §9 is the normative text).

`refit(trainer, xs, labels, l2=None, alpha=None)` does exactly what `Model.refit` does in the C
module (native_modules/edgetune/refit.c + kernels/et_refit_f32.c) and the pure-Python fallback
(firmware/edgetune_py_refit.py): forward passes give the classifier's int8 input (the pooled
features) under the current parameters; integer sufficient statistics (Gram matrix, feature
sums, per-class sums, class counts of the features centred by their zero point); a float32
ridge solve (LDL^T) in the written order; the blend with the flashed classifier, its logit
scale matched; requantization to int8 weights, int32 biases, new per-channel scales and
requantization multipliers built from the float32 bits (no double). l2/alpha None: chosen by
stratified (interleaved) 5-fold cross-validation on the written grid.

Every float operation is an np.float32 operation; the sequential sums are written as loops over
the summed index (vectorized over the other indices only), so they are the C loops' order.
"""

from __future__ import annotations

import numpy as np

from . import reference
from ..format.modelfile import NONE, OP_FULLY_CONNECTED, EtmModel, align4
from ..format.scheme import out_channels, per_channel
from .qmath import channel_scales, round_sat

F32 = np.float32
FOLDS = 5
L2_GRID = (1.0, 0.1, 0.01, 0.001)  # inner loop of the CV, in this order (ties: the earlier)
ALPHA_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)  # outer loop (ties: the smaller alpha)
MAX_SAMPLES = 32767  # int32 Gram sums: 32767 * 255^2 < 2^31
LIM30 = 1 << 30
FLT_MAX = F32(3.4028235e38)


def refit_layer(model: EtmModel, scheme) -> int | None:
    """The layer a refit writes: the classifier (layer L-1, FULLY_CONNECTED, with a bias tensor)
    when the scheme trains its bias and all its weights; else None (no refit, no params item)."""
    last = len(model.layers) - 1
    ly = model.layers[last]
    if ly.op != OP_FULLY_CONNECTED or ly.bias == NONE:
        return None
    e = scheme.entry(last)
    c_out = int(model.tensors[ly.output].shape[3])
    if e is None or not e.bias or len(e.channels) != c_out:
        return None
    return last


def qscale_bytes(c_out: int) -> int:
    """Size of the params region's classifier-quantization item (§6.3): float32 s_w, float32 s_b,
    int32 multiplier, int32 shift, C_out each."""
    return 16 * c_out


# ------------------------------------------------------------------------------------------
# float32 helpers
# ------------------------------------------------------------------------------------------


def _bits(v) -> int:
    return int(np.asarray(v, F32).view(np.uint32))


def _fbits(b: int) -> F32:
    return np.asarray(b, np.uint32).view(F32)[()]


def et_sqrtf(x) -> F32:
    """sqrt for float32 x > 0, finite: seed from the bits, then 4 Newton steps
    y = 0.5f * (y + x / y)."""
    x = F32(x)
    y = _fbits((_bits(x) >> 1) + 0x1FBD1DF5)
    for _ in range(4):
        y = F32(F32(0.5) * F32(y + F32(x / y)))
    return y


def f32_multiplier(m) -> tuple[int, int]:
    """(multiplier, shift) with m = multiplier * 2^(shift - 31) exactly, from the float32 bits:
    multiplier = (mantissa | 2^23) << 7, shift = exponent + 1; 0/subnormal/NaN -> (0, 0);
    shift > 30 (or inf) -> (2^31 - 1, 30); shift < -31 -> (0, 0)."""
    b = _bits(F32(m))
    e = ((b >> 23) & 255) - 127
    if b >> 31 or e == -127 or (e == 128 and b & 0x7FFFFF):
        return 0, 0
    if e == 128 or e + 1 > 30:
        return 0x7FFFFFFF, 30
    if e + 1 < -31:
        return 0, 0
    return ((b & 0x7FFFFF) | 0x800000) << 7, e + 1


def _round_sat(v, lim):
    return round_sat(v, lim)


# ------------------------------------------------------------------------------------------
# Statistics and solve
# ------------------------------------------------------------------------------------------


def stats(u: np.ndarray, labels: np.ndarray, n_cls: int) -> dict:
    """Integer sufficient statistics of centred features u (int64 (n, K)): n, cnt[c], S1[k],
    G[j, k] (full symmetric; the device keeps the lower triangle), B[c, k]."""
    u = u.astype(np.int64)
    b = np.zeros((n_cls, u.shape[1]), np.int64)
    np.add.at(b, labels, u)
    return {"n": len(u), "cnt": np.bincount(labels, minlength=n_cls).astype(np.int64),
            "s1": u.sum(0), "g": u.T @ u, "b": b}


def centred(st: dict) -> np.ndarray:
    """A0[j, k] = (float)(n * G[j, k] - S1[j] * S1[k]) (int64 exact, one rounding)."""
    s1 = st["s1"]
    return (st["n"] * st["g"] - s1[:, None] * s1[None, :]).astype(F32)


def solve(st: dict, l2) -> tuple[np.ndarray, np.ndarray, np.ndarray, F32]:
    """Ridge on one-hot targets: (Wr (C, K), ir (C,), A0, lam) float32 (§9 b)."""
    n, K = st["n"], st["g"].shape[0]
    a0 = centred(st)
    s1 = st["s1"]
    r = (n * st["b"] - st["cnt"][:, None] * s1[None, :]).astype(F32)  # (C, K)
    tr = a0[0, 0]
    for k in range(1, K):
        tr = F32(tr + a0[k, k])
    lam = F32(F32(F32(l2) * tr) / F32(K))
    if not lam > 0:
        lam = F32(1.0)
    a = a0.copy()
    a[np.arange(K), np.arange(K)] = a[np.arange(K), np.arange(K)] + lam
    L = np.zeros((K, K), F32)
    D = np.zeros(K, F32)
    for j in range(K):
        e = (L[j, :j] * D[:j]).astype(F32)
        d = a[j, j]
        for i in range(j):
            d = F32(d - F32(L[j, i] * e[i]))
        if not d > 0:
            d = lam
        D[j] = d
        s = a[j + 1:, j].copy()
        for i in range(j):
            s = (s - L[j + 1:, i] * e[i]).astype(F32)
        L[j + 1:, j] = (s / d).astype(F32)
    C = r.shape[0]
    y = np.zeros((K, C), F32)
    for q in range(K):
        v = r[:, q].copy()
        for i in range(q):
            v = (v - L[q, i] * y[i]).astype(F32)
        y[q] = v
    z = (y / D[:, None]).astype(F32)
    x = np.zeros((K, C), F32)
    for q in range(K - 1, -1, -1):
        v = z[q].copy()
        for i in range(q + 1, K):
            v = (v - L[i, q] * x[i]).astype(F32)
        x[q] = v
    wr = np.ascontiguousarray(x.T)
    mean = (s1.astype(F32) / F32(n)).astype(F32)
    ir = (st["cnt"].astype(F32) / F32(n)).astype(F32) - _dot_rows(wr, mean)
    return wr, ir.astype(F32), a0, lam


def _dot_rows(w: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Per row c: sequential sum over k of w[c, k] * v[k], starting from the first term."""
    acc = (w[:, 0] * v[0]).astype(F32)
    for k in range(1, w.shape[1]):
        acc = (acc + w[:, k] * v[k]).astype(F32)
    return acc


def quad(a0: np.ndarray, w: np.ndarray) -> F32:
    """sum over c, j (c outer, j inner, sequential) of w[c, j] * t[c, j], t[c, j] = sequential
    sum over k of a0[j, k] * w[c, k]."""
    C, K = w.shape
    t = (a0[None, :, 0] * w[:, 0:1]).astype(F32)
    for k in range(1, K):
        t = (t + a0[None, :, k] * w[:, k:k + 1]).astype(F32)
    p = (w * t).astype(F32).reshape(-1)
    acc = p[0]
    for v in p[1:]:
        acc = F32(acc + v)
    return acc


class Flashed:
    """The flashed classifier in real logit units per centred feature unit (§9 c)."""

    def __init__(self, model: EtmModel, layer: int):
        ly = model.layers[layer]
        c_out = int(model.tensors[ly.output].shape[3])
        self.s_x = F32(model.tensors[ly.input].scale)
        self.s_w = channel_scales(model.tensors[ly.weight], c_out)
        self.s_b = channel_scales(model.tensors[ly.bias], c_out)
        self.w_q = model.tensors[ly.weight].data.reshape(c_out, -1).astype(np.int8)
        self.b_q = model.tensors[ly.bias].data.reshape(-1).astype(np.int32)
        self.mult = np.asarray(ly.multipliers, np.int32).copy()
        self.shift = np.asarray(ly.shifts, np.int32).copy()
        sf = (self.s_x * self.s_w).astype(F32)
        self.w = (sf[:, None] * self.w_q.astype(F32)).astype(F32)
        self.b = (self.s_b * self.b_q.astype(F32)).astype(F32)


def blend_terms(st: dict, fl: Flashed, l2):
    """(Wr, ir, gamma, delta) of one fit (§9 c)."""
    wr, ir, a0, _ = solve(st, l2)
    vf, vr = quad(a0, fl.w), quad(a0, wr)
    q = F32(vf / vr) if vr > 0 else F32(0)
    gamma = et_sqrtf(q) if (vr > 0 and vf > 0 and q <= FLT_MAX and q > 0) else F32(1.0)
    n, C = st["n"], wr.shape[0]
    mean = (st["s1"].astype(F32) / F32(n)).astype(F32)
    zf = (_dot_rows(fl.w, mean) + fl.b).astype(F32)
    mf = zf[0]
    for v in zf[1:]:
        mf = F32(mf + v)
    mf = F32(mf / F32(C))
    delta = F32(mf - F32(gamma / F32(C)))
    return wr, ir, gamma, delta


def _logits(w: np.ndarray, b: np.ndarray, u: np.ndarray) -> np.ndarray:
    """(n, C): per sample and class the sequential sum over k of w[c, k] * (float)u[k], then + b."""
    uf = u.astype(F32)
    z = (uf[:, None, 0] * w[None, :, 0]).astype(F32)
    for k in range(1, w.shape[1]):
        z = (z + uf[:, None, k] * w[None, :, k]).astype(F32)
    return (z + b[None, :]).astype(F32)


def folds(labels: np.ndarray, n_cls: int) -> np.ndarray:
    """Stratified interleaved folds: the j-th window (0-based, in order) of its class goes to
    fold j % 5."""
    f = np.zeros(len(labels), np.int64)
    seen = np.zeros(n_cls, np.int64)
    for s, c in enumerate(labels):
        f[s] = seen[c] % FOLDS
        seen[c] += 1
    return f


def cross_validate(u: np.ndarray, labels: np.ndarray, fl: Flashed, l2s, alphas):
    """correct[alpha index, l2 index] over the 5 folds (§9 d)."""
    n_cls = fl.w.shape[0]
    fo = folds(labels, n_cls)
    correct = np.zeros((len(alphas), len(l2s)), np.int64)
    for f in range(FOLDS):
        tr, te = fo != f, fo == f
        if not tr.any() or not te.any():
            continue
        st = stats(u[tr], labels[tr], n_cls)
        zf = _logits(fl.w, fl.b, u[te])
        for li, l2 in enumerate(l2s):
            wr, ir, gamma, delta = blend_terms(st, fl, l2)
            zr = _logits(wr, ir, u[te])
            for ai, a in enumerate(alphas):
                a = F32(a)
                a1, ga, ad = F32(F32(1.0) - a), F32(a * gamma), F32(a * delta)
                z = ((a1 * zf + ga * zr).astype(F32) + ad).astype(F32)
                correct[ai, li] += int((np.argmax(z, axis=1) == labels[te]).sum())
    return correct


def requantize(w: np.ndarray, b: np.ndarray, fl: Flashed, s_out) -> dict:
    """int8 weights, int32 biases, scales and multipliers of the blended classifier (§9 e)."""
    C = w.shape[0]
    s_x = fl.s_x
    w_q = np.zeros(w.shape, np.int8)
    s_w = np.zeros(C, F32)
    s_b = np.zeros(C, F32)
    b_q = np.zeros(C, np.int32)
    mult = np.zeros(C, np.int32)
    shift = np.zeros(C, np.int32)
    for c in range(C):
        m = F32(np.abs(w[c]).max())
        sw = F32(F32(m / F32(127.0)) / s_x) if m > 0 else F32(0)
        sb = F32(s_x * sw)
        if m > 0 and 0 < sw <= FLT_MAX and 0 < sb <= FLT_MAX:
            inv = F32(F32(127.0) / m)
            w_q[c] = _round_sat((w[c] * inv).astype(F32), 127)
        else:
            sw, sb = fl.s_w[c], fl.s_b[c]
        s_w[c], s_b[c] = sw, sb
        b_q[c] = _round_sat(F32(b[c] / sb), LIM30)
        mult[c], shift[c] = f32_multiplier(F32(sb / F32(s_out)))
    return {"w": w_q, "b": b_q, "s_w": s_w, "s_b": s_b, "mult": mult, "shift": shift}


def solved(st: dict | None, fl: Flashed, l2v, av, s_out) -> dict:
    """The classifier a refit installs from the statistics st (§9 b, c, e) with l2 l2v and alpha
    av (float32): the flashed one when av == 0 (st unused), else the blend, requantized.
    ValueError on non-finite weights. The fleet's refit mode (fleet/refit_stats.py) calls this
    with statistics summed over boards."""
    if av == 0:
        return {"w": fl.w_q, "b": fl.b_q, "s_w": fl.s_w, "s_b": fl.s_b, "mult": fl.mult, "shift": fl.shift}
    wr, ir, gamma, delta = blend_terms(st, fl, l2v)
    a1, ga, ad = F32(F32(1.0) - av), F32(av * gamma), F32(av * delta)
    w = ((a1 * fl.w).astype(F32) + (ga * wr).astype(F32)).astype(F32)
    b = (((a1 * fl.b).astype(F32) + (ga * ir).astype(F32)).astype(F32) + ad).astype(F32)
    if not (np.all(np.isfinite(w)) and np.all(np.isfinite(b))):
        raise ValueError("refit: the solve gave non-finite weights (try a larger l2)")
    return requantize(w, b, fl, s_out)


def features(trainer, xs: np.ndarray) -> np.ndarray:
    """(n, K) int8: the classifier's input for every sample under the trainer's parameters."""
    m = trainer.model
    t_in = m.input_tensor
    x = np.asarray(xs, np.int8).reshape((-1,) + tuple(t_in.shape[1:]))
    for ly in trainer.live.layers[:-1]:
        x = reference.run_layer(trainer.live, ly, x)
    return x.reshape(x.shape[0], -1)


def check_args(trainer, xs, labels, l2, alpha):
    """The refit's argument checks (ValueError, nothing changed): (xs int8 (n, n_in), labels)."""
    layer = refit_layer(trainer.model, trainer.scheme)
    if layer is None:
        raise ValueError("refit needs a FULLY_CONNECTED classifier with a bias whose bias and all "
                         "weights the scheme trains")
    n_cls = trainer.model.output_tensor.size
    labels = np.asarray(labels, np.int64).reshape(-1)
    n = len(labels)
    if n < 2 or n > MAX_SAMPLES:
        raise ValueError(f"refit needs 2..{MAX_SAMPLES} windows, got {n}")
    if np.any(labels < 0) or np.any(labels >= n_cls):
        raise ValueError(f"labels must be in 0..{n_cls - 1}")
    n_in = trainer.model.input_tensor.size
    xs = np.asarray(xs)
    if xs.dtype != np.int8 or xs.size != n * n_in:
        raise ValueError(f"xs must be {n} windows of {n_in} int8 values")
    if l2 is not None and not (F32(l2) > 0 and F32(l2) <= FLT_MAX):
        raise ValueError("l2 must be a positive finite number")
    if alpha is not None and not (F32(alpha) >= 0 and F32(alpha) <= 1):
        raise ValueError("alpha must be in [0, 1]")
    s_out = F32(trainer.model.output_tensor.scale)
    if not (s_out > 0 and s_out <= FLT_MAX):
        raise ValueError("refit needs a positive output scale")
    return layer, xs.reshape(n, n_in), labels


def refit(trainer, xs, labels, l2=None, alpha=None) -> dict:
    """Refit trainer's classifier in place (§9); returns {"l2", "alpha", "cv_accuracy", "n"}."""
    layer, xs, labels = check_args(trainer, xs, labels, l2, alpha)
    m = trainer.model
    n_cls = m.output_tensor.size
    fl = Flashed(m, layer)
    zp = int(m.tensors[m.layers[layer].input].zero_point)
    u = features(trainer, xs).astype(np.int64) - zp
    l2s = (F32(l2),) if l2 is not None else tuple(F32(v) for v in L2_GRID)
    alphas = (F32(alpha),) if alpha is not None else tuple(F32(v) for v in ALPHA_GRID)
    cv = None
    if len(l2s) * len(alphas) > 1:
        correct = cross_validate(u, labels, fl, l2s, alphas)
        best = (-1, 0, 0)
        for ai in range(len(alphas)):
            for li in range(len(l2s)):
                if correct[ai, li] > best[0]:
                    best = (int(correct[ai, li]), ai, li)
        cv = F32(F32(best[0]) / F32(len(labels)))
        l2v, av = l2s[best[2]], alphas[best[1]]
    else:
        l2v, av = l2s[0], alphas[0]
    q = solved(None if av == 0 else stats(u, labels, n_cls), fl, l2v, av, m.output_tensor.scale)
    trainer.install_classifier(layer, q)
    return {"l2": float(l2v), "alpha": float(av), "cv_accuracy": None if cv is None else float(cv),
            "n": len(labels), "scratch": refit_scratch(m, trainer.scheme, labels, cv is not None)}


def refit_scratch(model: EtmModel, scheme, labels=None, cv: bool = True) -> int:
    """Bytes of the C module's refit scratch (native_modules/edgetune/refit.c, docs/training.md
    §9 f): for K features and C classes, each item rounded up to 4: Gram int32 K(K+1)/2, S1 K,
    B C*K, counts 3*C int32; L float32 K(K+1)/2, D and e K, W C*K, intercepts and four more C;
    with cv also 20 int32 counts, the largest fold's K-byte features and its int32 labels."""

    layer = refit_layer(model, scheme)
    if layer is None:
        return 0
    K, C = per_channel(model, layer), out_channels(model, layer)
    T = K * (K + 1) // 2
    items = [4 * T, 4 * K, 4 * C * K, 4 * C, 4 * C, 4 * C, 4 * T, 4 * K, 4 * K, 4 * C * K] + [4 * C] * 5
    if cv:
        f = folds(np.asarray(labels, np.int64), C)
        fmax = int(np.bincount(f, minlength=FOLDS).max())
        items += [4 * len(L2_GRID) * len(ALPHA_GRID), fmax * K, 4 * fmax]
    return sum(align4(v) for v in items)
