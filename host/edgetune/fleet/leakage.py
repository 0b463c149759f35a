"""Gradient-leakage check on exactly what a board uploads (docs/fleet.md §6).

The analytic attack on the classifier (FULLY_CONNECTED, the scheme trains its bias and every
weight): for one sample, QAS SGD moves the real-unit bias by -lr g_c and the weights by
-lr g_c s_x u (u = the centred int8 pooled features, g = softmax - onehot), so the class whose
bias went up is the label and every weight row is a multiple of u. From a decoded upload v:

    label    = argmax_c Δb_c
    features = (Σ_c Δb_c ΔW_c) / Σ_c Δb_c²     (least squares over all rows)

Settings (each trial starts from the global state):
- `one-sample`: one training step on one window, the dense update (what a board would send
  with no defence); windows whose step does not change the classifier (softmax already 1.0
  at the label: no gradient, nothing to leak) are skipped and counted;
- `local-epoch`: a client's local epoch (every window of a client, seeded order), dense;
- `top-k`: the local epoch through the device's clip + top-k + int8 (no noise);
- `clipped+noised`: the local epoch through clip + device noise (sigma) + top-k + int8.
Metrics: the features are compared with every window the client trained on; `feature_cosine`
is the best cosine (the attacker's best case), `label_recovery` the fraction of trials whose
recovered label is the label of that best-matching window (for one sample: of the window).
Chance is 1/classes. `repeats` runs every client's local epoch that many times (other seeded
orders and noise) for more trials.
"""

from __future__ import annotations

import numpy as np

from ..twin import reference
from . import client, compress, update


def features(t, xs: np.ndarray) -> np.ndarray:
    """Centred int8 inputs of the classifier (u = x - zp) for int8 windows xs, (n, K) float64."""
    m = t.live
    L = len(m.layers) - 1
    ly = m.layers[L]
    n = len(xs)
    acts = reference.forward_batch(dataclasses_replace_layers(m, L), xs.reshape((n,) + tuple(m.input_tensor.shape[1:])))
    zp = int(m.tensors[ly.input].zero_point)
    return acts.reshape(n, -1).astype(np.float64) - zp


def dataclasses_replace_layers(m, upto: int):
    """The live model cut before layer `upto` (its output is that layer's input)."""
    import dataclasses

    ly = m.layers[upto]
    return dataclasses.replace(m, layers=list(m.layers[:upto]), output=ly.input)


def attack(lay: update.Layout, v: np.ndarray, classifier: int) -> tuple[int, np.ndarray]:
    """(label, features) recovered from a dense real-unit update."""
    sb, sw = lay.span(classifier, "b"), lay.span(classifier, "w")
    if sb is None or sw is None:
        raise ValueError("the analytic attack needs the classifier's bias and weights in the update")
    db = np.asarray(v[sb], np.float64)
    dw = np.asarray(v[sw], np.float64).reshape(len(db), -1)
    den = float(db @ db)
    feat = (db @ dw) / den if den > 0 else np.zeros(dw.shape[1])
    return int(np.argmax(db)), feat


def _score(feat: np.ndarray, label: int, u: np.ndarray, y: np.ndarray, rng) -> tuple[bool, float]:
    nf = np.linalg.norm(feat)
    if nf == 0:  # nothing of the classifier was sent: the attacker can only guess a label
        return bool(label == y[int(rng.integers(len(y)))]), 0.0
    cos = (u @ feat) / (np.linalg.norm(u, axis=1) * nf + 1e-30)
    j = int(np.argmax(cos))
    return bool(label == y[j]), float(cos[j])


def run(model_path: str, fd, glob: bytes, *, lr: float, clip: float, k: int, sigma: float,
        one_sample_trials: int = 100, repeats: int = 1, seed: int = 0) -> dict:
    """Leakage table {setting: {label_recovery, feature_cosine, trials}} at the state `glob`."""
    _, t, lay = client._model(model_path)
    L = len(t.model.layers) - 1
    t.load_state(glob)
    rng = np.random.default_rng(seed)
    res: dict = {}
    # one-sample
    lab = cos = 0.0
    xa, ya = fd.pooled()
    zero = 0
    pick = []
    for i in rng.permutation(len(ya)):
        if len(pick) == one_sample_trials:
            break
        t.load_state(glob)
        u = features(t, xa[i: i + 1])
        t.step(xa[i], int(ya[i]), lr, True)
        v = update.delta(lay, t.state_bytes(), glob)
        if not np.any(v[lay.span(L, "b")]):
            zero += 1  # a confidently right window: no gradient, nothing sent, nothing to recover
            continue
        pick.append(i)
        lb, f = attack(lay, v, L)
        ok, c = _score(f, lb, u, ya[i: i + 1], rng)
        lab += ok
        cos += c
    res["one-sample"] = {"label_recovery": lab / len(pick), "feature_cosine": cos / len(pick), "trials": len(pick),
                         "skipped_zero_update": zero}
    settings = {"local-epoch": None, "top-k": 0.0, "clipped+noised": sigma}
    for name, sg in settings.items():
        lab = cos = 0.0
        trials = [(ci, rep) for ci in range(len(fd.clients)) for rep in range(repeats)]
        for ci, rep in trials:
            c = fd.clients[ci]
            t.load_state(glob)
            u = features(t, c.x)
            idx = client.order(len(c.y), 1, seed * 7919 + ci * 101 + rep)
            if sg is None:
                for i in idx:
                    t.step(c.x[i], int(c.y[i]), lr, True)
                v = update.delta(lay, t.state_bytes(), glob)
            else:
                comp = compress.Compressor(lay.size, clip, k, sg, seed * 31 + ci * 101 + rep + 1)
                wire, _ = client.twin_round(model_path, glob, c.x, c.y, idx, lr, comp)
                v = compress.decode(wire, lay.size)
            lb, f = attack(lay, v, L)
            ok, cc = _score(f, lb, u, c.y, rng)
            lab += ok
            cos += cc
        n = len(trials)
        res[name] = {"label_recovery": lab / n, "feature_cosine": cos / n, "trials": n}
    res["chance"] = 1.0 / t.model.output_tensor.size
    return res
