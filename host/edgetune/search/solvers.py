"""Search over the candidates under a budget (docs/scheme-search.md §4): the exact DP over the
additive prediction, exhaustive enumeration, evolution, random search, the Pareto front.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .contributions import Contributions
from .pricing import Pricer, base_cost, layer_cost, out_size
from .space import DENS, Candidate, Space


@dataclass
class Result:
    method: str
    cand: Candidate | None
    price: int | None
    predicted: float
    evaluations: int
    seconds: float


def with_crit(space: Space, contrib: Contributions, c: Candidate, criteria: Sequence[str]) -> Candidate:
    """The candidate with the best measured criterion per layer (cost does not depend on it)."""
    return Candidate(c.k, c.dens, tuple(contrib.best_crit(j, d, criteria) if d else "l1"
                                        for j, d in enumerate(c.dens)))


def exhaustive(space: Space, pricer: Pricer, contrib: Contributions, budget: int,
               criteria: Sequence[str] = ("l1",)) -> Result:
    t0 = time.time()
    best, best_key = None, None
    n = 0
    for c in space.all():
        n += 1
        p = pricer.price(c)
        if p is None or p > budget:
            continue
        c = with_crit(space, contrib, c, criteria)
        key = (contrib.predict(c), -p)
        if best_key is None or key > best_key:
            best, best_key = c, key
    return Result("exhaustive", best, None if best is None else -best_key[1],
                  float("-inf") if best is None else best_key[0], n, time.time() - t0)


def dp(space: Space, pricer: Pricer, contrib: Contributions, budget: int,
       criteria: Sequence[str] = ("l1",)) -> Result:
    """Exact optimum of the additive predicted accuracy under the budget (search/__init__.py)."""
    t0 = time.time()
    L = len(space.layers)
    cap = budget - pricer.fixed
    best: tuple[float, int, Candidate] | None = None
    evals = 0
    clf_cost = {}
    if space.clf is not None:
        clf_cost[True] = layer_cost(space, space.clf, True, 1)
    firsts = list(range(L)) + ([L] if space.clf is not None else [])  # L = the classifier
    for k in range(L + 1):
        bias_from = L - k  # layers j >= bias_from train their bias
        for f in firsts:
            if f > bias_from and f < L:
                continue  # a bias below f would make it the first
            if f == L and k > 0:
                continue
            first_layer = space.layers[f] if f < L else space.clf
            # the fold buffer is sized by the largest output of the weight-trained layers above
            # `first` (the classifier is one of them unless it is `first`): enumerate that layer,
            # only layers with outputs no larger may train weights; priced exactly when it is
            # the true maximum, over-priced (never chosen wrongly) otherwise
            folds = [space.layers[j] for j in range(f + 1, L)]
            if f < L and space.clf is not None:
                folds.append(space.clf)
            by_size = {}
            for fl in folds:
                by_size.setdefault(out_size(space, fl), fl)
            if space.clf is not None and f < L:
                h_min = out_size(space, space.clf)
                fold_opts = [(h, fl) for h, fl in sorted(by_size.items()) if h >= h_min]
            else:
                fold_opts = [(0, None)] + sorted(by_size.items())
            for h_fold, fold in fold_opts:
                res = _dp_fold(space, contrib, criteria, k, f, first_layer, fold, h_fold, cap, clf_cost)
                if res is None:
                    continue
                evals += res[1]
                cand = with_crit(space, contrib, Candidate(k, res[0]), criteria)
                pred = contrib.acc_bias[k] + res[2]
                price = pricer.price(cand)
                if price is None or price > budget:  # the exact check; cannot happen if the model is right
                    raise AssertionError(f"dp picked {cand} priced {price} > budget {budget}")
                key = (pred, -price)
                if best is None or key > (best[0], -best[1]):
                    best = (pred, price, cand)
    if best is None:
        return Result("dp", None, None, float("-inf"), evals, time.time() - t0)
    return Result("dp", best[2], best[1], best[0], evals, time.time() - t0)


def _dp_fold(space: Space, contrib: Contributions, criteria: Sequence[str], k: int, f: int, first_layer: int,
             fold: int | None, h_fold: int, cap: int, clf_cost: dict) -> tuple[tuple[int, ...], int, float] | None:
    """Group knapsack for fixed (k, first, fold): (dens, evaluations, gain) or None."""
    L = len(space.layers)
    bias_from = L - k
    evals = 0
    base = base_cost(space, first_layer, fold)
    if base is None:
        return None
    rem = cap - base - clf_cost.get(True, 0)
    if rem < 0:
        return None
    units = rem // 4
    # value[c] = best gain with cost 4*c; -inf = unreachable
    val = np.full(units + 1, -np.inf)
    val[0] = 0.0
    choice: list[np.ndarray] = []
    for j in range(f, L):
        bias = j >= bias_from
        opts = []
        for den in DENS:
            if j == f and den == 0 and not bias:
                continue  # the first layer must train something
            if den and j > f and out_size(space, space.layers[j]) > h_fold:
                continue  # its output would outgrow the fold buffer priced here
            cost = layer_cost(space, space.layers[j], bias, den)
            assert cost % 4 == 0
            crit = contrib.best_crit(j, den, criteria) if den else "l1"
            g = contrib.gain_w(j, den, crit)
            if np.isfinite(g):
                opts.append((den, cost // 4, g))
        new = np.full(units + 1, -np.inf)
        arg = np.full(units + 1, -1, np.int64)
        for o, (den, cu, g) in enumerate(opts):
            if cu > units:
                continue
            cand = np.full(units + 1, -np.inf)
            cand[cu:] = val[:units + 1 - cu] + g
            better = cand > new
            new[better] = cand[better]
            arg[better] = o
            evals += 1
        choice.append((opts, arg))
        val = new
    if not np.isfinite(val).any():
        return None
    c_best = int(np.argmax(val))  # first index of the max = cheapest at that gain
    gain = float(val[c_best])
    dens = [0] * L
    c = c_best
    for jj in range(L - 1, f - 1, -1):
        opts, arg = choice[jj - f]
        o = int(arg[c])
        den, cu, _ = opts[o]
        dens[jj] = den
        c -= cu
    return tuple(dens), evals, gain


def evolution(space: Space, pricer: Pricer, contrib: Contributions, budget: int, evaluations: int = 300,
              seed: int = 0, criteria: Sequence[str] = ("l1",), population: int = 16) -> Result:
    """Regularized evolution (tournament of 4, one mutation per child, the oldest dies):
    fitness = predicted accuracy, -inf over budget. `evaluations` distinct candidates priced."""
    t0 = time.time()
    rng = np.random.default_rng(seed)
    L = len(space.layers)
    seen: dict[tuple, float] = {}

    def fit(c: Candidate) -> float:
        key = (c.k, c.dens)
        if key not in seen:
            p = pricer.price(c)
            seen[key] = (contrib.predict(with_crit(space, contrib, c, criteria))
                         if p is not None and p <= budget else float("-inf"))
        return seen[key]

    def rand() -> Candidate:
        # bias towards cheap candidates: each layer frozen with probability 1/2
        return Candidate(int(rng.integers(L + 1)),
                         tuple(0 if rng.random() < 0.5 else int(rng.choice(DENS[1:])) for _ in range(L)))

    limit = min(evaluations, space.size)
    pop = [Candidate(0, (0,) * L)]  # the classifier alone: the cheapest, so a tight budget has a parent
    fit(pop[0])
    tries = 0
    while len(pop) < population and len(seen) < limit and tries < 100 * population:
        c = rand()
        tries += 1
        fit(c)
        pop.append(c)
    tries = 0
    while len(seen) < limit and tries < 50 * evaluations:
        tries += 1
        idx = rng.choice(len(pop), size=min(4, len(pop)), replace=False)
        parent = max((pop[i] for i in idx), key=fit)
        if rng.random() < 0.3 or L == 0:
            child = Candidate(int(np.clip(parent.k + rng.choice([-1, 1]), 0, L)), parent.dens)
        else:
            j = int(rng.integers(L))
            dens = list(parent.dens)
            dens[j] = int(rng.choice([d for d in DENS if d != dens[j]]))
            child = Candidate(parent.k, tuple(dens))
        fit(child)
        pop.append(child)
        pop.pop(0)
    return _best_of("evolution", seen, space, pricer, contrib, criteria, t0)


def random_search(space: Space, pricer: Pricer, contrib: Contributions, budget: int, evaluations: int = 300,
                  seed: int = 0, criteria: Sequence[str] = ("l1",)) -> Result:
    """Uniform random candidates, `evaluations` distinct ones priced."""
    t0 = time.time()
    rng = np.random.default_rng(seed)
    L = len(space.layers)
    seen: dict[tuple, float] = {}
    limit = min(evaluations, space.size)
    while len(seen) < limit:
        c = Candidate(int(rng.integers(L + 1)), tuple(int(rng.choice(DENS)) for _ in range(L)))
        if (c.k, c.dens) in seen:
            continue
        p = pricer.price(c)
        seen[(c.k, c.dens)] = (contrib.predict(with_crit(space, contrib, c, criteria))
                               if p is not None and p <= budget else float("-inf"))
    return _best_of("random", seen, space, pricer, contrib, criteria, t0)


def _best_of(method, seen, space, pricer, contrib, criteria, t0) -> Result:
    ok = [(v, -pricer.price(Candidate(*key)), key) for key, v in seen.items() if np.isfinite(v)]
    if not ok:
        return Result(method, None, None, float("-inf"), len(seen), time.time() - t0)
    v, negp, key = max(ok)
    c = with_crit(space, contrib, Candidate(*key), criteria)
    return Result(method, c, -negp, v, len(seen), time.time() - t0)


def pareto(space: Space, pricer: Pricer, contrib: Contributions, criteria: Sequence[str] = ("l1",),
           budgets: Sequence[int] | None = None) -> list[dict[str, Any]]:
    """Non-dominated (price, predicted accuracy) candidates, cheapest first (exhaustive when the
    space is small, else the DP at the given `budgets`)."""
    pts = []
    if space.size <= 200_000:
        for c in space.all():
            p = pricer.price(c)
            if p is not None:
                cc = with_crit(space, contrib, c, criteria)
                pts.append((p, -contrib.predict(cc), c.k, c.dens, cc))
        pts.sort()
        front, best = [], float("-inf")
        for p, negv, _, _, cc in pts:
            if -negv > best + 1e-12:
                best = -negv
                front.append((p, cc, -negv))
    else:
        front = []
        for b in budgets or []:
            r = dp(space, pricer, contrib, b, criteria)
            if r.cand is not None and (not front or r.predicted > front[-1][2]):
                front.append((r.price, r.cand, r.predicted))
    return [{"price": p, "arena": p - pricer.fixed, "scheme": c.text(space), "predicted_acc": v,
             "trainable": space.scheme(c).n_params(space.model)} for p, c, v in front]
