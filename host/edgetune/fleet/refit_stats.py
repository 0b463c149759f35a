"""Fleet refit mode: boards send the closed-form refit's sufficient statistics once, the server
sums them exactly and solves (docs/fleet-refit.md; the refit itself is docs/training.md §10).

Per board (`client_stats`): the classifier's int8 inputs under the global parameters, centred by
their zero point (u = x - zp), give cnt[c], S1[k], G[j, k] (lower triangle), B[c, k] — integer
sums over the board's windows (refit.stats). `pack` writes them as little-endian int32 (what a
board sends: C + K + K(K+1)/2 + C*K values). The server (`aggregate`) adds them as integers
(exact: integer addition is associative) and checks the pooled count n <= 32767 (refit.MAX_SAMPLES:
the device's int32 Gram sums hold 32767 * 255^2 < 2^31, and m.refit refuses more windows, so
within that limit the pooled statistics are exactly what m.refit would build on the pooled
windows). `global_state` runs the refit's own solve (refit.solved: ridge, blend with the flashed
classifier, requantization) on the pooled statistics and returns the trained-weights blob
(docs/training.md §7) that every board installs with m.load_state. Hence federated refit ==
centralized refit (Trainer.refit / m.refit on the pooled windows) bit for bit.

l2 and alpha must be given: the refit's cross-validation folds are defined on the pooled window
order per class (§10 d), which the server never sees.
"""

from __future__ import annotations

import numpy as np

from ..twin import refit as rf

I32_MIN, I32_MAX = -(1 << 31), (1 << 31) - 1


def _layer(trainer) -> int:
    layer = rf.refit_layer(trainer.model, trainer.scheme)
    if layer is None:
        raise ValueError("the refit mode needs a FULLY_CONNECTED classifier with a bias whose bias and "
                         "all weights the scheme trains")
    return layer


def dims(trainer) -> tuple[int, int]:
    """(K, C): the classifier's input size and class count."""
    layer = _layer(trainer)
    m = trainer.model
    return int(m.tensors[m.layers[layer].input].size), int(m.output_tensor.size)


def client_stats(trainer, xs, labels) -> dict:
    """One board's statistics under trainer's current parameters (refit.stats of the centred
    classifier inputs). ValueError for bad windows/labels or more than 32767 windows."""
    layer, xs, labels = rf.check_args(trainer, xs, labels, 1.0, 1.0)
    m = trainer.model
    zp = int(m.tensors[m.layers[layer].input].zero_point)
    u = rf.features(trainer, xs).astype(np.int64) - zp
    return rf.stats(u, labels, int(m.output_tensor.size))


def upload_values(K: int, C: int) -> int:
    """int32 values a board sends: cnt C, S1 K, G K(K+1)/2, B C*K."""
    return C + K + K * (K + 1) // 2 + C * K


def pack(st: dict) -> bytes:
    """The upload: cnt, S1, G's lower triangle row by row (G[j, 0..j]), B row-major; int32 LE."""
    K = st["g"].shape[0]
    j, k = np.tril_indices(K)
    v = np.concatenate([st["cnt"], st["s1"], st["g"][j, k], st["b"].reshape(-1)]).astype(np.int64)
    if v.size and (v.min() < I32_MIN or v.max() > I32_MAX):
        raise ValueError("refit statistics exceed int32 (more than 32767 windows on one board?)")
    return v.astype("<i4").tobytes()


def unpack(buf: bytes, K: int, C: int) -> dict:
    """Inverse of pack; ValueError if the size is not that of (K, C) statistics."""
    want = 4 * upload_values(K, C)
    if len(buf) != want:
        raise ValueError(f"refit statistics upload has {len(buf)} bytes, expected {want} for K={K}, C={C}")
    v = np.frombuffer(buf, "<i4").astype(np.int64)
    cnt, s1 = v[:C], v[C:C + K]
    T = K * (K + 1) // 2
    tri = v[C + K:C + K + T]
    b = v[C + K + T:].reshape(C, K)
    g = np.zeros((K, K), np.int64)
    j, k = np.tril_indices(K)
    g[j, k] = tri
    g[k, j] = tri
    if np.any(cnt < 0):
        raise ValueError("refit statistics upload has a negative class count")
    return {"n": int(cnt.sum()), "cnt": cnt, "s1": s1, "g": g, "b": b}


def aggregate(parts: list[dict]) -> dict:
    """Exact integer sum of the boards' statistics. ValueError if there are none, their shapes
    differ, or the pooled count is outside 2..32767 (the device refit's int32 range)."""
    if not parts:
        raise ValueError("aggregate needs at least one board's statistics")
    out = {key: np.array(parts[0][key], np.int64, copy=True) for key in ("cnt", "s1", "g", "b")}
    n = int(parts[0]["n"])
    for p in parts[1:]:
        for key in out:
            if np.shape(p[key]) != out[key].shape:
                raise ValueError(f"statistics '{key}' of shape {np.shape(p[key])} do not match {out[key].shape}")
            out[key] += np.asarray(p[key], np.int64)
        n += int(p["n"])
    if n != int(out["cnt"].sum()):
        raise ValueError("statistics: n is not the sum of the class counts")
    if not 2 <= n <= rf.MAX_SAMPLES:
        raise ValueError(f"pooled refit needs 2..{rf.MAX_SAMPLES} windows (int32 sums on the device), got {n}; "
                         "refit on a subset of the boards")
    out["n"] = n
    return out


def psd_gram(n: int, g, s1) -> tuple[np.ndarray, float]:
    """G whose centred scatter n G - S1 S1^T has its negative eigenvalues clipped to 0, rounded
    to integers (the refit's LDL^T needs the scatter definite; noise or rounding in shared
    statistics can make it indefinite), and the smallest eigenvalue before the clipping. Rounding
    G moves the scatter by at most n / 2 per entry."""
    s1 = np.asarray(s1, np.float64)
    a0 = n * np.asarray(g, np.float64) - np.outer(s1, s1)
    w, v = np.linalg.eigh((a0 + a0.T) / 2)
    a0 = (v * np.maximum(w, 0.0)) @ v.T
    return np.rint((a0 + np.outer(s1, s1)) / n).astype(np.int64), float(w.min())


def global_state(trainer, st: dict, l2: float, alpha: float) -> bytes:
    """The refit's solve on pooled statistics st, installed on a copy of trainer's state; returns
    the trained-weights blob (Trainer.state / m.state format) that boards load with load_state.
    trainer itself is not changed."""
    from ..twin.training import Trainer

    if l2 is None or alpha is None:
        raise ValueError("the fleet refit mode needs l2 and alpha (no cross-validation across boards)")
    rf.check_args(trainer, np.zeros((2, trainer.model.input_tensor.size), np.int8), [0, 0], l2, alpha)
    layer = _layer(trainer)
    t = Trainer(trainer.model, trainer.scheme, momentum=trainer.momentum)
    t.load_state(trainer.state_bytes())
    fl = rf.Flashed(t.model, layer)
    q = rf.solved(st, fl, np.float32(l2), np.float32(alpha), t.model.output_tensor.scale)
    t.install_classifier(layer, q)
    return t.state_bytes()
