"""Iterative gradient-matching attack on the deeper trained layers (docs/fleet.md §6; DLG /
iDLG / "Inverting Gradients" style), complementing leakage.py's analytic classifier attack.

The attacker holds the global state and the twin (the exact update a board computes for one
window), sees one upload v (decoded; for compressed settings only the sent indices J) and looks
for a window x and label y whose one-step update matches it:

    minimise over x, y:  1 - cos(update(x, y)[J'], v[J'])     J' = J without the classifier

(the classifier's entries are left out: leakage.py reads those analytically; this measures what
the convolution biases alone give away). The twin's step is integer (int8 input, QAS), so its
update is piecewise constant in x: the search is derivative-free, SPSA (Spall 1992) on a float
x in the int8 range rounded to int8 at every evaluation, `probes` random +-1 directions per
iteration, a decreasing step, every label (iDLG's label step replaced by trying all C labels
with a short search and keeping the best match, then a longer search for it). Metrics per
trial: the label found vs the window's (for a local epoch: the window whose classifier
features are closest to the recovered ones), `feature_cosine` between the classifier inputs
(pooled features) of the recovered and the true window (centred by the zero point, as
leakage.py), `input_cosine` between the centred int8 windows, and `start_feature_cosine`, the
same feature cosine for the search's start (the zero-point window, no information): the pooled
features are non-negative, so unrelated windows already have a high cosine; the attack's gain is
the difference; `centred_feature_cosine` (and its start value) subtracts the fleet's mean pooled
features from both first (best over the trained windows, as the plain one), so an uninformed
guess scores lower.
"""

from __future__ import annotations

import numpy as np

from . import client, compress, update
from .leakage import features


class Matcher:
    """update(x, y) at the state `glob` on a private Trainer, and the match loss on indices J."""

    def __init__(self, model_path: str, glob: bytes, lr: float, J: np.ndarray):
        _, self.t, self.lay = client._model(model_path)
        self.glob, self.lr, self.J = bytes(glob), float(lr), np.asarray(J, np.int64)
        self.zp = int(self.t.model.input_tensor.zero_point)
        self.evals = 0

    def update(self, x: np.ndarray, y: int) -> np.ndarray:
        self.t.load_state(self.glob)
        self.t.step(x, int(y), self.lr, True)
        self.evals += 1
        return update.delta(self.lay, self.t.state_bytes(), self.glob)

    def loss(self, xf: np.ndarray, y: int, target: np.ndarray) -> float:
        x = np.clip(np.rint(xf), -128, 127).astype(np.int8)
        g = self.update(x, y)[self.J].astype(np.float64)
        ng = np.linalg.norm(g)
        if ng == 0:
            return 1.0
        return 1.0 - float(g @ target) / (ng * np.linalg.norm(target))


def spsa(m: Matcher, y: int, target: np.ndarray, x0: np.ndarray, iters: int, probes: int, rng,
         a: float = 24.0, c: float = 6.0) -> tuple[np.ndarray, float]:
    """(best x, its loss) after `iters` SPSA iterations from x0."""
    x = x0.astype(np.float64).copy()
    best_x, best = x.copy(), m.loss(x, y, target)
    for k in range(iters):
        ck = c / (k + 1) ** 0.101
        ak = a / (k + 1 + iters / 10) ** 0.602
        g = np.zeros_like(x)
        for _ in range(probes):
            d = rng.choice((-1.0, 1.0), size=x.size)
            lp = m.loss(x + ck * d, y, target)
            lm = m.loss(x - ck * d, y, target)
            g += (lp - lm) / (2 * ck) * d
        x = np.clip(x - ak * g / probes * 128, -128, 127)
        lo = m.loss(x, y, target)
        if lo < best:
            best, best_x = lo, x.copy()
    return best_x, best


def attack(model_path: str, glob: bytes, v: np.ndarray, lr: float, sent: np.ndarray | None, *,
           iters: int = 60, label_iters: int = 12, probes: int = 2, seed: int = 0) -> tuple[int, np.ndarray, float]:
    """(label, int8 window, match loss) recovered from the upload v (dense real units; `sent`:
    the indices the upload holds, None = all)."""
    _, t, lay = client._model(model_path)
    L = len(t.model.layers) - 1
    keep = np.ones(lay.size, bool)
    for kind in ("b", "w"):
        sp = lay.span(L, kind)
        if sp is not None:
            keep[sp] = False
    if sent is not None:
        mask = np.zeros(lay.size, bool)
        mask[np.asarray(sent, np.int64)] = True
        keep &= mask
    J = np.flatnonzero(keep)
    n_in = t.model.input_tensor.size
    zp = int(t.model.input_tensor.zero_point)
    if J.size == 0 or not np.any(v[J]):
        return -1, np.full(n_in, zp, np.int8), 1.0
    m = Matcher(model_path, glob, lr, J)
    target = np.asarray(v, np.float64)[J]
    rng = np.random.default_rng(seed)
    x0 = np.full(n_in, float(zp))
    C = int(t.model.output_tensor.size)
    cands = [(spsa(m, y, target, x0, label_iters, probes, rng), y) for y in range(C)]
    (xb, lb), yb = min(cands, key=lambda c: c[0][1])
    xb, lb = spsa(m, yb, target, xb, iters, probes, rng)
    return yb, np.clip(np.rint(xb), -128, 127).astype(np.int8), lb


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return float(a @ b / (na * nb)) if na > 0 and nb > 0 else 0.0


def run(model_path: str, fd, glob: bytes, *, lr: float, clip: float, k: int, sigma: float, trials: int = 6,
        iters: int = 60, label_iters: int = 12, probes: int = 2, seed: int = 0) -> dict:
    """{setting: {label_recovery, feature_cosine, input_cosine, trials}} of the iterative attack
    at the state `glob` (settings as leakage.run: one-sample, local-epoch, top-k,
    clipped+noised; `trials` per setting)."""
    _, t, lay = client._model(model_path)
    t.load_state(glob)
    zp = int(t.model.input_tensor.zero_point)
    rng = np.random.default_rng(seed)
    xa, ya = fd.pooled()
    f0 = features(t, np.full((1, t.model.input_tensor.size), zp, np.int8))[0]  # the search's start
    mu = features(t, xa).mean(0)  # the fleet's mean pooled features (for the centred cosine)
    res: dict = {}
    for name in ("one-sample", "local-epoch", "top-k", "clipped+noised"):
        lab = fc = ic = fc0 = cc = cc0 = 0.0
        for tr in range(trials):
            if name == "one-sample":
                i = int(rng.integers(len(ya)))
                xs, ys = xa[i: i + 1], ya[i: i + 1]
                t.load_state(glob)
                t.step(xs[0], int(ys[0]), lr, True)
                v, sent = update.delta(lay, t.state_bytes(), glob), None
            else:
                c = fd.clients[int(rng.integers(len(fd.clients)))]
                xs, ys = c.x, c.y
                idx = client.order(len(ys), 1, seed * 7919 + tr)
                if name == "local-epoch":
                    t.load_state(glob)
                    for i in idx:
                        t.step(xs[i], int(ys[i]), lr, True)
                    v, sent = update.delta(lay, t.state_bytes(), glob), None
                else:
                    comp = compress.Compressor(lay.size, clip, k, sigma if name == "clipped+noised" else 0.0,
                                               seed * 31 + tr + 1)
                    wire, _ = client.twin_round(model_path, glob, xs, ys, idx, lr, comp)
                    v = compress.decode(wire, lay.size)
                    sent = np.frombuffer(wire, "<u2", k, compress.HEAD.size).astype(np.int64)
            y, x, _ = attack(model_path, glob, v, lr, sent, iters=iters, label_iters=label_iters, probes=probes,
                             seed=seed * 1009 + tr)
            t.load_state(glob)
            fr = features(t, x[None, :])[0]
            ft = features(t, xs)
            cs = [_cos(fr, f) for f in ft]
            j = int(np.argmax(cs))
            fc0 += max(_cos(f0, f) for f in ft)
            cc += max(_cos(fr - mu, f - mu) for f in ft)
            cc0 += max(_cos(f0 - mu, f - mu) for f in ft)
            lab += bool(y == ys[j])
            fc += cs[j]
            ic += _cos(x.astype(np.float64) - zp, xs[j].astype(np.float64) - zp)
        res[name] = {"label_recovery": lab / trials, "feature_cosine": fc / trials, "input_cosine": ic / trials,
                     "start_feature_cosine": fc0 / trials, "centred_feature_cosine": cc / trials,
                     "start_centred_feature_cosine": cc0 / trials, "trials": trials}
    res["chance"] = 1.0 / t.model.output_tensor.size
    res["attack"] = {"iters": iters, "label_iters": label_iters, "probes": probes, "layers": "all but the classifier"}
    return res
