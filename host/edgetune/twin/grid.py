"""Geometry helpers of the convolution backward pass (docs/training.md §4): the padded gradient
grid, the 0/1 scatter matrix from output taps to input pixels, the zero-point-centred padded
input. All on single samples: arrays (H, W, C) without the batch axis.
"""

from __future__ import annotations

import numpy as np

from . import reference


def grid_crop(grid: np.ndarray, pad_h: int, pad_w: int, h: int, w: int) -> np.ndarray:
    return grid[pad_h: pad_h + h, pad_w: pad_w + w]


def zero_grid(oh, ow, kh, kw, sh, sw, pad_h, pad_w, h, w, c, dtype=np.float64):
    gh = max((oh - 1) * sh + kh, pad_h + h)
    gw = max((ow - 1) * sw + kw, pad_w + w)
    return np.zeros((gh, gw, c), dtype)


_SCATTER: dict[tuple, np.ndarray | None] = {}
_SCATTER_MAX = 1 << 20  # matrix elements (8 MB of float64); larger geometries loop over the taps


def scatter_matrix(oh, ow, kh, kw, sh, sw, pad_h, pad_w, h, w) -> np.ndarray | None:
    """(H*W, OH*OW*KH*KW) 0/1 float64 matrix: tap (ky, kx) of output (oy, ox) reads input row
    oy*sh+ky-pad_h, column ox*sw+kx-pad_w (taps in the padding read nothing); None if too big."""
    key = (oh, ow, kh, kw, sh, sw, pad_h, pad_w, h, w)
    if key not in _SCATTER:
        n = oh * ow * kh * kw
        if h * w * n > _SCATTER_MAX:
            _SCATTER[key] = None
        else:
            y = (np.arange(oh)[:, None, None, None] * sh + np.arange(kh)[None, None, :, None] - pad_h)
            x = (np.arange(ow)[None, :, None, None] * sw + np.arange(kw)[None, None, None, :] - pad_w)
            y, x = np.broadcast_arrays(y, x)
            y, x = y.reshape(-1), x.reshape(-1)
            ok = (y >= 0) & (y < h) & (x >= 0) & (x < w)
            m = np.zeros((h * w, n), np.float64)
            m[(y * w + x)[ok], np.arange(n)[ok]] = 1.0
            _SCATTER[key] = m
    return _SCATTER[key]


def padded_input(x: np.ndarray, zp: int, ly, kh, kw, oh, ow) -> np.ndarray:
    """(x - zp) as int64 with zero padding, laid out so tap (ky, kx) of output (oy, ox) is
    row oy*sh+ky, column ox*sw+kx (reference.pad)."""
    xc = x.astype(np.int64) - zp
    return reference.pad(xc[None], ly.pad_h, ly.pad_w, kh, kw, ly.stride_h, ly.stride_w, oh, ow, 0)[0]
