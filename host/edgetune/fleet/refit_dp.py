"""Differential privacy for the fleet refit mode: one Gaussian mechanism on the summed
sufficient statistics (docs/fleet-refit.md §5).

Three privacy units, one mechanism:
- **board** (client-level): `n_max` is an int; a board uses at most `n_max` windows (a seeded
  subset when it holds more), and adding or removing one board is what the guarantee covers;
- **window** (example-level): `n_max` is None; every window is used, and adding or removing one
  labelled window is what the guarantee covers. The same arithmetic as a fleet of one-window
  boards (board unit with n_max = 1);
- **sample**: the window mechanism with z multiplied by `windows_per_sample` (2 for the demo's
  overlapping windows), so that one raw sensor sample, which lies in that many windows, is
  covered at the epsilon a window has at z.

Per board (`clipped_stats`), before anything leaves it: every window's centred classifier input
u (refit_stats) minus the server's public `centre` m (a float vector sent with the global
parameters, None = 0), v = u - m, scaled down to L2 norm <= R (`v * min(1, R / |v|)`, float64),
and the sums over the windows

    cnt[c]  (C values),  G = sum v v^T  (lower triangle, K(K+1)/2),  B[c] = sum_{label c} v  (C x K)

(S1 is not sent: S1 = sum_c B[c]). In the scaled units (cnt, G / R^2, B / R) one window changes
each of the three blocks by at most 1 in L2 norm (cnt by a one-hot, G by v v^T of Frobenius norm
|v|^2 <= R^2, the triangle holding each pair once, B by v in one row), so the release of
(w_cnt cnt, w_G G / R^2, w_B B / R) has L2 sensitivity `units * sqrt(w_cnt^2 + w_G^2 + w_B^2)`
with units = n_max (board) or 1 (window); the weights split the budget between the blocks. The
server (`release`) sums the boards' statistics and adds N(0, (z * sensitivity)^2) to every value
of that vector: one Gaussian mechanism with noise multiplier z, calibrated exactly for one
release (accountant.gaussian_noise_for, add-or-remove-one unit). Everything after is post-processing: class counts floored at 1,
the sums moved back to u by the public centre (B[c] + cnt[c] m, G + S1 m^T + m S1^T + n m m^T),
S1 rebuilt from B, the centred scatter n G - S1 S1^T projected onto the positive semidefinite
matrices, rounded to integers, and refit.solved (the same closed-form solve as the exact mode)
gives the global classifier.

Why the centre: u is a ReLU output, so its norm is mostly the common mean (median |u| 285, |u - m|
180 on the demo fleet); clipping u throws away the class information that is left, and the
noise on S1 enters the centred scatter through S1 S1^T. The centre is the mean of u over the
server's own pre-training windows (`public_centre`), data the boards never sent, so it costs
no privacy.

The guarantee is for a trusted server (it adds the noise, as Flower's central DP wrapper does);
it covers everything derived from the release (the global state every board installs).
"""

from __future__ import annotations

import math

import numpy as np

from ..learn import data as ldata
from ..twin import refit as rf
from . import refit_stats as rs

# Per unit, the settings bench/fleet_refit_dp.py chose on its validation split (demo model, 112
# boards, epsilon 8): the window clip R, the block weights (w_cnt, w_G, w_B), the board cap n_max;
# with l2 0.3 (board: 1.0) and alpha 1 for the solve. `edgetune fleet refit --dp-*` defaults.
DEFAULTS = {
    "sample": {"clip": 100.0, "weights": (0.3, 0.5, 1.0), "n_max": None, "l2": 0.3},
    "window": {"clip": 150.0, "weights": (0.3, 0.5, 1.0), "n_max": None, "l2": 0.3},
    "board": {"clip": 100.0, "weights": (1.0, 1.0, 1.0), "n_max": 4, "l2": 1.0},
}


def sensitivity(n_max: int | None, weights=(1.0, 1.0, 1.0)) -> float:
    """L2 sensitivity of one unit's statistics in the scaled units (module doc), the blocks
    (cnt, G, B) multiplied by `weights`: n_max windows for the board unit, one for the window
    unit (n_max None)."""
    return (1 if n_max is None else n_max) * math.sqrt(sum(float(w) ** 2 for w in weights))


def windows_per_sample(meta: dict) -> int:
    """How many windows one raw sensor sample can lie in: ceil(window / step) (2 for the demo's
    2-s windows with 50 % overlap). The window mechanism protects one raw sample at the epsilon
    of noise multiplier z / windows_per_sample, so the `sample` unit multiplies z by it."""
    w, s = int(meta.get("window", ldata.WINDOW)), int(meta.get("step", ldata.STEP))
    if not (w >= 1 and s >= 1):
        raise ValueError(f"window {w} and step {s} must be >= 1")
    return -(-w // s)


def check_params(clip: float, n_max: int | None) -> None:
    if not (n_max is None or (isinstance(n_max, int) and n_max >= 1)):
        raise ValueError(f"n_max={n_max!r} must be an int >= 1 (windows one board contributes at most; "
                         "None: every window, the window is the privacy unit)")
    if not (math.isfinite(clip) and clip > 0):
        raise ValueError(f"clip={clip!r} must be a positive finite L2 norm (centred int8 feature units)")


def _centre(centre, K: int) -> np.ndarray:
    m = np.zeros(K) if centre is None else np.asarray(centre, np.float64)
    if m.shape != (K,) or not np.all(np.isfinite(m)):
        raise ValueError(f"centre must be {K} finite numbers (the classifier's input size), got shape {m.shape}")
    return m


def public_centre(trainer, xs) -> np.ndarray:
    """The centre m: the mean centred classifier input over windows the server holds itself
    (fleet.data.server_windows: the model's pre-training windows), float64 (K,)."""
    layer, xs, _ = rf.check_args(trainer, xs, np.zeros(len(xs), np.int64), 1.0, 1.0)
    m = trainer.model
    zp = int(m.tensors[m.layers[layer].input].zero_point)
    return (rf.features(trainer, xs).astype(np.float64) - zp).mean(0)


def clipped_stats(trainer, xs, labels, clip: float, n_max: int | None, seed: int = 0, centre=None) -> dict:
    """One board's clipped statistics (float64): cnt, G (full symmetric), B."""
    check_params(clip, n_max)
    layer, xs, labels = rf.check_args(trainer, xs, labels, 1.0, 1.0)
    m = trainer.model
    zp = int(m.tensors[m.layers[layer].input].zero_point)
    u = rf.features(trainer, xs).astype(np.float64) - zp
    return clip_sum(u, labels, int(m.output_tensor.size), clip, n_max, seed, centre)


def clip_sum(u: np.ndarray, labels: np.ndarray, n_cls: int, clip: float, n_max: int | None, seed: int = 0,
             centre=None) -> dict:
    """clipped_stats from the centred features u (n, K) already computed."""
    check_params(clip, n_max)
    u = np.asarray(u, np.float64)
    labels = np.asarray(labels, np.int64)
    if n_max is not None and len(labels) > n_max:
        keep = np.sort(np.random.default_rng(seed).permutation(len(labels))[:n_max])
        u, labels = u[keep], labels[keep]
    u = u - _centre(centre, u.shape[1])
    norm = np.sqrt((u * u).sum(1))
    u = u * np.minimum(1.0, clip / np.maximum(norm, 1e-300))[:, None]
    b = np.zeros((n_cls, u.shape[1]))
    np.add.at(b, labels, u)
    return {"cnt": np.bincount(labels, minlength=n_cls).astype(np.float64), "g": u.T @ u, "b": b,
            "clipped": int((norm > clip).sum()), "windows": int(len(labels))}


def upload_values(K: int, C: int) -> int:
    """Values one board sends: cnt (C), G's lower triangle (K(K+1)/2), B (C K)."""
    return C + K * (K + 1) // 2 + C * K


def pack(p: dict) -> bytes:
    """One board's clipped statistics on the wire: float32 little-endian cnt, G's lower triangle
    row by row, B row-major (4 * upload_values bytes; float32 is what a board's sums are, and its
    rounding is far below the noise)."""
    K = p["g"].shape[0]
    j, k = np.tril_indices(K)
    return np.concatenate([p["cnt"], p["g"][j, k], p["b"].ravel()]).astype("<f4").tobytes()


def unpack(buf: bytes, K: int, C: int) -> dict:
    """pack's inverse; ValueError on a wrong size or a non-finite value."""
    n = upload_values(K, C)
    if len(buf) != 4 * n:
        raise ValueError(f"DP refit statistics are {len(buf)} bytes, expected {4 * n} (K={K}, C={C})")
    v = np.frombuffer(buf, "<f4").astype(np.float64)
    if not np.all(np.isfinite(v)):
        raise ValueError("DP refit statistics hold a non-finite value")
    j, k = np.tril_indices(K)
    g = np.zeros((K, K))
    g[j, k] = v[C:C + j.size]
    g[k, j] = v[C:C + j.size]
    return {"cnt": v[:C].copy(), "g": g, "b": v[C + j.size:].reshape(C, K).copy()}


def release(parts: list[dict], clip: float, n_max: int | None, z: float, rng, weights=(1.0, 1.0, 1.0),
            centre=None) -> dict:
    """The noised, summed statistics as refit.stats-style integers (n, cnt, s1, g, b) of u (the
    boards' statistics are of v = u - centre). `weights` (w_cnt, w_G, w_B) split the budget
    between the blocks: the release is of (w_cnt cnt, w_G G / R^2, w_B B / R), so a block's noise
    in its own units is z * sensitivity / w."""
    check_params(clip, n_max)
    wc, wg, wb = (float(w) for w in weights)
    if not all(math.isfinite(w) and w > 0 for w in (wc, wg, wb)):
        raise ValueError(f"block weights {weights!r} must be positive numbers")
    if not parts:
        raise ValueError("release needs at least one board's statistics")
    if not (math.isfinite(z) and z >= 0):
        raise ValueError(f"noise multiplier z={z!r} must be a finite number >= 0")
    cnt = sum(p["cnt"] for p in parts)
    g = sum(p["g"] for p in parts)
    b = sum(p["b"] for p in parts)
    sd = z * sensitivity(n_max, (wc, wg, wb))
    K = g.shape[0]
    m = _centre(centre, K)
    j, k = np.tril_indices(K)
    tri = g[j, k] / clip ** 2 + (rng.normal(0.0, sd / wg, j.size) if sd else 0)
    gn = np.zeros((K, K))
    gn[j, k] = tri
    gn[k, j] = tri
    cnt = cnt + (rng.normal(0.0, sd / wc, cnt.size) if sd else 0)
    b = b / clip + (rng.normal(0.0, sd / wb, b.shape) if sd else 0)
    # post-processing: class counts >= 1; v = u - m back to u; the centred scatter n G - S1 S1^T
    # projected onto the positive semidefinite matrices (noise makes it indefinite and the
    # refit's LDL^T needs it definite); back to integer statistics in the device's units
    cnt_i = np.maximum(1, np.rint(cnt)).astype(np.int64)
    n = int(cnt_i.sum())
    bv, gv = b * clip, gn * clip ** 2
    if centre is not None:
        s1v = bv.sum(0)
        gv = gv + np.outer(s1v, m) + np.outer(m, s1v) + n * np.outer(m, m)
        bv = bv + cnt_i[:, None] * m[None, :]
    b_i = np.rint(bv).astype(np.int64)
    g, _ = rs.psd_gram(n, gv, b_i.sum(0))
    return {"n": n, "cnt": cnt_i, "s1": b_i.sum(0), "g": g, "b": b_i}


def global_state(trainer, st: dict, l2: float, alpha: float) -> bytes:
    """The refit's solve (refit_stats.global_state, refit.solved) on the released statistics."""
    return rs.global_state(trainer, st, l2, alpha)
