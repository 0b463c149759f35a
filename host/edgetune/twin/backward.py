"""The backward pass of docs/training.md §3-§4 with a leading run axis R: the one numpy copy of
the loss gradient, the input gradients, the weight gradients and the integer update.

`training.Trainer` calls these with R = 1 (one model, one scheme); `lockstep.Lockstep` with R
schemes of one model fine-tuned on the same samples (the scheme search). Every element sees the
same float32 operations in the same order whatever R is, and every integer sum is exact (int64,
or float64 products of integers whose partial sums stay far below 2**53), so R = 1 and row r of
R > 1 are the same bits.
"""

from __future__ import annotations

import numpy as np

from . import reference
from ..format.modelfile import OP_FULLY_CONNECTED
from .grid import scatter_matrix, zero_grid
from .qmath import F32, et_expf, et_logf

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
    grid = np.stack([zero_grid(oh, ow, kh, kw, sh, sw, ly.pad_h, ly.pad_w, h_in, w_in, c, np.int64)] * R)
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
    return grid[:, ly.pad_h: ly.pad_h + h_in, ly.pad_w: ly.pad_w + w_in]


def weight_grad(ly, kernel: tuple[int, int], g: np.ndarray, x: np.ndarray, zp_x: int,
                channels: np.ndarray | None = None) -> np.ndarray:
    """§4e of FULLY_CONNECTED / CONV_2D: g (R, OH, OW, C_out) int64, x (R, H, W, C_in) the layer
    input -> A (R, C, per_channel) int64 for the output channels `channels` (default all)."""
    if channels is not None:
        g = g[..., channels]
    R, oh, ow, c_out = g.shape
    xc = x.astype(np.int64) - zp_x
    if ly.op == OP_FULLY_CONNECTED:
        return g.reshape(R, c_out)[:, :, None] * xc.reshape(R, -1)[:, None, :]
    kh, kw = kernel
    xp = reference.pad(xc, ly.pad_h, ly.pad_w, kh, kw, ly.stride_h, ly.stride_w, oh, ow, 0)
    cols = reference.im2col(xp, kh, kw, ly.stride_h, ly.stride_w, oh, ow).reshape(R, oh * ow, -1)
    gs = g.reshape(R, oh * ow, c_out).astype(np.float64)
    return np.matmul(gs.transpose(0, 2, 1), cols.astype(np.float64)).astype(np.int64)


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
