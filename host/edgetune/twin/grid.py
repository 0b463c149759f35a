"""Geometry helpers of the convolution backward pass (docs/training.md §4): the padded gradient
grid, the 0/1 scatter matrix from output taps to input pixels. Grids carry backward.py's leading
run axis: (R, H, W, C).
"""

from __future__ import annotations

import numpy as np


def grid_crop(grid: np.ndarray, pad_h: int, pad_w: int, h: int, w: int) -> np.ndarray:
    """(R, GH, GW, C) in reference.pad's layout -> the (R, H, W, C) input positions."""
    return grid[:, pad_h: pad_h + h, pad_w: pad_w + w]


def zero_grid(R, oh, ow, kh, kw, sh, sw, pad_h, pad_w, h, w, c, dtype=np.float64):
    """Zeros (R, GH, GW, C) covering every tap of every output and every input position."""
    gh = max((oh - 1) * sh + kh, pad_h + h)
    gw = max((ow - 1) * sw + kw, pad_w + w)
    return np.zeros((R, gh, gw, c), dtype)


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
