"""The backward pass of docs/training.md §3-§4 with a leading run axis R: the one numpy copy of
the step loop (`backprop`), the loss gradient, the input gradients of every layer, the weight
gradients and the integer update.

`training.Trainer` calls these with R = 1 (one model, one scheme); `lockstep.Lockstep` with R
schemes of one model fine-tuned on the same samples (the scheme search). Every element sees the
same float32 operations in the same order whatever R is, and every integer sum is exact (int64,
or float64 products of integers whose partial sums stay far below 2**53), so R = 1 and row r of
R > 1 are the same bits. What differs between the two is only the state an update writes (a
Trainer's selected channels, momentum and mini-batch accumulators; a Lockstep's per-run copies):
`backprop` calls the caller's `update` for it.
"""

from __future__ import annotations

import numpy as np

from . import reference
from ..format.modelfile import (
    OP_AVERAGE_POOL_2D, OP_CONV_2D, OP_DEPTHWISE_CONV_2D, OP_FULLY_CONNECTED, OP_MAX_POOL_2D, OP_MEAN,
)
from .grid import grid_crop, scatter_matrix, zero_grid
from .qmath import F32, et_expf, et_logf, rdiv, round_sat

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


def softmax_xent(q: np.ndarray, scale: float, zp: int, label: int) -> tuple[np.ndarray, np.ndarray]:
    """§3 for R runs: q (R, n) int8 logits -> (loss (R,), g = dL/dz (R, n)), float32."""
    z = F32(scale) * (np.asarray(q, np.int64).reshape(len(q), -1) - zp).astype(F32)
    zmax = z.max(axis=1)
    e = et_expf(z - zmax[:, None])
    s = e[:, 0].copy()
    for k in range(1, e.shape[1]):
        s = (s + e[:, k]).astype(F32)
    p = e / s[:, None]
    loss = ((et_logf(s) + zmax).astype(F32) - z[:, label]).astype(F32)
    g = p.copy()
    g[:, label] = g[:, label] - F32(1.0)
    return loss, g


def weighted_input_grad(ly, w: np.ndarray, h: np.ndarray, h_in: int, w_in: int, c_in: int) -> np.ndarray | None:
    """§4b of FULLY_CONNECTED / CONV_2D: h (R, OH, OW, C_out) the rescaled gradient (integers
    as float64), w (R or 1, C_out, KH, KW, C_in) int8 -> acc (R, H, W, C_in) int64. None for a
    conv geometry too large for the scatter matrix (the caller loops over the taps)."""
    R, oh, ow, c_out = h.shape
    wf = w.reshape(w.shape[0], c_out, -1).astype(np.float64)
    if ly.op == OP_FULLY_CONNECTED:
        return np.matmul(h.reshape(R, 1, -1), wf).astype(np.int64).reshape(R, h_in, w_in, c_in)
    kh, kw = w.shape[2], w.shape[3]
    sc = scatter_matrix(oh, ow, kh, kw, ly.stride_h, ly.stride_w, ly.pad_h, ly.pad_w, h_in, w_in)
    if sc is None:
        return None
    # per (output position, tap): the input-channel contributions, then one exact scatter-add
    # (a 0/1 matrix) onto the input positions
    taps = np.matmul(h.reshape(R, oh * ow, c_out), wf)
    return np.matmul(sc, taps.reshape(R, -1, c_in)).astype(np.int64).reshape(R, h_in, w_in, c_in)


def mean_input_grad(g: np.ndarray, h_in: int, w_in: int) -> np.ndarray:
    """§4b of MEAN: g (R, 1, 1, C) spread over (R, H, W, C), int64 (the scale divides by H*W)."""
    R, c = g.shape[0], g.shape[-1]
    return np.broadcast_to(g.reshape(R, 1, 1, c), (R, h_in, w_in, c)).astype(np.int64)


def max_pool_input_grad(ly, g: np.ndarray, x: np.ndarray, h_in: int, w_in: int) -> np.ndarray:
    """§4b of MAX_POOL_2D: each output's gradient to its window's first arg-max (in tap order);
    g (R, OH, OW, C) int64, x (R, H, W, C) int8 the layer input -> (R, H, W, C) int64."""
    R, oh, ow, c = g.shape
    kh, kw, sh, sw = ly.filter_h, ly.filter_w, ly.stride_h, ly.stride_w
    grid = zero_grid(R, oh, ow, kh, kw, sh, sw, ly.pad_h, ly.pad_w, h_in, w_in, c, np.int64)
    hs, ws = (oh - 1) * sh + 1, (ow - 1) * sw + 1
    xp = reference.pad(x.astype(np.int16), ly.pad_h, ly.pad_w, kh, kw, sh, sw, oh, ow, -1000)
    best = np.full((R, oh, ow, c), -10000, np.int16)
    arg = np.zeros((R, oh, ow, c), np.int64)
    taps = [(a, b) for a in range(kh) for b in range(kw)]
    for t, (ky, kx) in enumerate(taps):
        tap = xp[:, ky: ky + hs: sh, kx: kx + ws: sw]
        better = tap > best
        best = np.where(better, tap, best)
        arg = np.where(better, t, arg)
    # the grid's index space is reference.pad's layout: crop the padding afterwards
    for t, (ky, kx) in enumerate(taps):
        grid[:, ky: ky + hs: sh, kx: kx + ws: sw] += np.where(arg == t, g, 0)
    return grid_crop(grid, ly.pad_h, ly.pad_w, h_in, w_in)


def _weighted_taps(ly, w: np.ndarray, h: np.ndarray, h_in: int, w_in: int, c_in: int) -> np.ndarray:
    """§4b of DEPTHWISE_CONV_2D, and of CONV_2D where the scatter matrix would be too large:
    w (R or 1, C_out or 1, KH, KW, C_in or C_out) int8, h as weighted_input_grad's."""
    R, oh, ow, c_out = h.shape
    kh, kw = w.shape[2], w.shape[3]
    dm = ly.depth_multiplier if ly.op == OP_DEPTHWISE_CONV_2D else 1
    if ly.op == OP_DEPTHWISE_CONV_2D:
        sc = scatter_matrix(oh, ow, kh, kw, ly.stride_h, ly.stride_w, ly.pad_h, ly.pad_w, h_in, w_in)
        if sc is not None:  # as weighted_input_grad does CONV_2D
            taps = h.reshape(R, -1, 1, c_out) * w.reshape(w.shape[0], 1, kh * kw, c_out).astype(np.float64)
            taps = taps.reshape(R, -1, kh * kw, c_in, dm).sum(-1)
            acc = np.matmul(sc, taps.reshape(R, -1, c_in))
            return acc.astype(np.int64).reshape(R, h_in, w_in, c_in)
    grid = zero_grid(R, oh, ow, kh, kw, ly.stride_h, ly.stride_w, ly.pad_h, ly.pad_w, h_in, w_in, c_in)
    hs = (oh - 1) * ly.stride_h + 1
    ws = (ow - 1) * ly.stride_w + 1
    for ky in range(kh):
        for kx in range(kw):
            if ly.op == OP_CONV_2D:
                contrib = np.matmul(h.reshape(R, -1, c_out), w[:, :, ky, kx, :].astype(np.float64))
                contrib = contrib.reshape(R, oh, ow, c_in)
            else:
                wt = w[:, 0, ky, kx, :].astype(np.float64).reshape(-1, 1, 1, c_out)
                contrib = (h * wt).reshape(R, oh, ow, c_in, dm).sum(-1)
            grid[:, ky: ky + hs: ly.stride_h, kx: kx + ws: ly.stride_w] += contrib
    return grid_crop(grid, ly.pad_h, ly.pad_w, h_in, w_in).astype(np.int64)


def avg_pool_input_grad(ly, g: np.ndarray, h_in: int, w_in: int) -> np.ndarray:
    """§4b of AVERAGE_POOL_2D: g (R, OH, OW, C) int64 -> (R, H, W, C) int64 in units of 1/1024 of
    the gradient (each tap gets rdiv(1024, in-image taps of its window))."""
    R, oh, ow, c = g.shape
    kh, kw, sh, sw = ly.filter_h, ly.filter_w, ly.stride_h, ly.stride_w
    grid = zero_grid(R, oh, ow, kh, kw, sh, sw, ly.pad_h, ly.pad_w, h_in, w_in, c, np.int64)
    hs, ws = (oh - 1) * sh + 1, (ow - 1) * sw + 1
    ys = np.arange(oh)[:, None] * sh - ly.pad_h
    xs = np.arange(ow)[:, None] * sw - ly.pad_w
    ny = ((ys + np.arange(kh)[None]) >= 0) & ((ys + np.arange(kh)[None]) < h_in)
    nx = ((xs + np.arange(kw)[None]) >= 0) & ((xs + np.arange(kw)[None]) < w_in)
    count = ny.sum(1)[:, None] * nx.sum(1)[None, :]
    contrib = g * rdiv(1024, count)[..., None]
    for ky in range(kh):
        for kx in range(kw):
            grid[:, ky: ky + hs: sh, kx: kx + ws: sw] += contrib
    return grid_crop(grid, ly.pad_h, ly.pad_w, h_in, w_in)


def input_grad(ly, g: np.ndarray, s_g: np.ndarray, x: np.ndarray, w: np.ndarray | None, r_c, s_wmax,
               in_shape) -> tuple[np.ndarray, np.ndarray]:
    """§4b of any layer for R runs: g (R, OH, OW, C_out) int64 the masked output gradient, s_g (R,)
    float32 its scales, x (R, H, W, C_in) the layer input, w (R or 1, *weight shape) int8 (None
    for a layer without weights), r_c / s_wmax the layer's channel-scale ratios and largest scale,
    in_shape (H, W, C_in) -> (acc (R, H, W, C_in) int64, s_acc (R,) float32)."""
    h_in, w_in, c_in = in_shape
    if ly.op in (OP_FULLY_CONNECTED, OP_CONV_2D, OP_DEPTHWISE_CONV_2D):
        h = round_sat(g.astype(F32) * r_c, 32767).astype(np.float64)
        s_acc = s_g * s_wmax  # float32 (R,) times a float32 scalar
        acc = weighted_input_grad(ly, w, h, h_in, w_in, c_in) if ly.op != OP_DEPTHWISE_CONV_2D else None
        if acc is None:
            acc = _weighted_taps(ly, w, h, h_in, w_in, c_in)
        return acc, s_acc
    if ly.op == OP_MEAN:
        return mean_input_grad(g, h_in, w_in), s_g / F32(h_in * w_in)
    if ly.op == OP_AVERAGE_POOL_2D:
        return avg_pool_input_grad(ly, g, h_in, w_in), s_g / F32(1024.0)
    if ly.op == OP_MAX_POOL_2D:
        return max_pool_input_grad(ly, g, x, h_in, w_in), s_g
    raise ValueError(f"backward of {ly.op_name} is not supported")


def backprop(layers, acts, g: np.ndarray, first: np.ndarray, lo: int, grad_in, update) -> np.ndarray:
    """§3-§4 for R runs, the one step loop: acts[i] (R, ...) the input of layer i and acts[L] the
    int8 logits; g (R, n) float32 dL/dz; first (R,) each run's first trained layer (L: none); lo
    <= min(first) the lowest layer visited. From the top layer down: the activation mask (not on
    the logits layer), `grad_in(i, g_q, s_g, acts[i]) -> (acc, s_acc)` above lo (input_grad), the caller's
    `update(i, g_q, s_g, acts[i], rows)` for the runs that train at or above their first layer,
    and the §4c rescale of acc to the next g_q. A run whose logit gradient is zero does nothing;
    one whose input gradient vanishes above its first layer stops there. Returns (R,) int64: the
    layer where each run stopped, -1 for none."""
    L = len(layers)
    R = g.shape[0]
    stopped = np.full(R, -1, np.int64)
    big = np.abs(g).max(axis=1)  # float32
    active = (big != 0) & (first < L)
    if active.all():  # (the common case, kept cheap: R = 1 is the Trainer's inner loop)
        s_g = big / F32(32767.0)
        lo_active = int(first.min())  # the lowest layer an active run updates
    elif active.any():
        s_g = np.where(active, big / F32(32767.0), F32(1)).astype(F32)
        lo_active = int(first[active].min())
    else:
        return stopped
    g_q = round_sat(g / s_g[:, None], 32767).reshape(acts[L].shape)
    for i in range(L - 1, lo - 1, -1):
        ly = layers[i]
        if i < L - 1:  # §3: the logits layer's mask is not applied
            y = acts[i + 1]
            g_q = np.where((y > ly.act_min) & (y < ly.act_max), g_q, 0)
        stop = None
        if i > lo:
            acc, s_acc = grad_in(i, g_q, s_g, acts[i])
            bigi = np.abs(acc.reshape(R, -1)).max(axis=1) if acc.size else np.zeros(R, np.int64)
            zero = bigi == 0
            vanished = bool(zero.any())  # (the common case without is kept cheap: R = 1 is the Trainer)
            safe = np.where(zero, 1, bigi) if vanished else bigi
            g_next = rdiv(acc * 32767, safe.reshape((R,) + (1,) * (acc.ndim - 1)))
            s_next = s_acc * bigi.astype(F32) / F32(32767.0)  # float32 throughout
            if vanished:
                s_next = np.where(zero, F32(1), s_next).astype(F32)
                stop = zero & (i > first)
        if i >= lo_active:  # (with one run, that run is active and trains here)
            update(i, g_q, s_g, acts[i], active if R == 1 else active & (i >= first))
        if i > lo:
            if stop is not None:
                stopped[stop & active] = i
                active = active & ~stop
                if not active.any():
                    break
                lo_active = int(first[active].min())
            g_q, s_g = g_next, s_next
    return stopped


def weight_grad(ly, kernel: tuple[int, int], g: np.ndarray, x: np.ndarray, zp_x: int,
                channels: np.ndarray | None = None) -> np.ndarray:
    """§4e of FULLY_CONNECTED / CONV_2D / DEPTHWISE_CONV_2D: g (R, OH, OW, C_out) int64, x (R, H,
    W, C_in) the layer input -> A (R, C, per_channel) int64 for the output channels `channels`
    (default all)."""
    sel = channels
    if channels is not None:
        g = g[..., channels]
    R, oh, ow, c_out = g.shape
    xc = x.astype(np.int64) - zp_x
    if ly.op == OP_FULLY_CONNECTED:
        return g.reshape(R, c_out)[:, :, None] * xc.reshape(R, -1)[:, None, :]
    kh, kw = kernel
    xp = reference.pad(xc, ly.pad_h, ly.pad_w, kh, kw, ly.stride_h, ly.stride_w, oh, ow, 0)
    if ly.op == OP_DEPTHWISE_CONV_2D:  # output channel oc reads input channel oc // depth_multiplier
        cin = (np.arange(c_out) if sel is None else np.asarray(sel)) // ly.depth_multiplier
        hs, ws = (oh - 1) * ly.stride_h + 1, (ow - 1) * ly.stride_w + 1
        A = np.zeros((R, c_out, kh * kw), np.int64)
        for ky in range(kh):
            for kx in range(kw):
                tap = xp[:, ky: ky + hs: ly.stride_h, kx: kx + ws: ly.stride_w][..., cin]
                A[:, :, ky * kw + kx] = (g * tap).sum(axis=(1, 2))
        return A
    cols = reference.im2col(xp, kh, kw, ly.stride_h, ly.stride_w, oh, ow).reshape(R, oh * ow, -1)
    gs = g.reshape(R, oh * ow, c_out).astype(np.float64)
    return np.matmul(gs.transpose(0, 2, 1), cols.astype(np.float64)).astype(np.int64)


def factor(neg, s: np.ndarray, qas: bool) -> np.ndarray:
    """§4d: neg (R,) or a scalar = -lr * s_g (times s_x for weights), float32, s (C,) the parameter
    scales -> the float32 factor (R, C) or (C,) of each gradient sum: neg / s with QAS, neg * s in
    plain SGD."""
    return (np.divide.outer if qas else np.multiply.outer)(neg, s)  # float32 op float32


def to_lsb(v: np.ndarray) -> np.ndarray:
    """§4d: a float32 real-valued step -> d in 2^-15 LSB (int64)."""
    return round_sat(v * F32(32768.0))


def commit(d: np.ndarray, res: np.ndarray, param: np.ndarray, is_bias: bool) -> tuple[np.ndarray, np.ndarray]:
    """§4f-g: the step d (2^-15 LSB, int64) plus the residual -> (new parameter, new residual):
    n = floor((d + res + 2^14) / 2^15) added to the parameter (int32 saturated for a bias,
    clamped to [-127, 127] for a weight); the remainder is the residual (int16)."""
    a = d + res.astype(np.int64)
    n = (a + 16384) >> 15  # floor division by 32768
    r = a - (n << 15)
    p = param.astype(np.int64) + n
    lo, hi = (INT32_MIN, INT32_MAX) if is_bias else (-127, 127)
    return np.maximum(np.minimum(p, hi, out=p), lo, out=p), r.astype(np.int16)
