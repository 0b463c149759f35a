"""The scheme search end to end (docs/scheme-search.md): contributions, then every solver at the
budget, the Pareto front, optional verification of the best-predicted candidates; `attach_spec`
for `edgetune export --scheme`.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

from ..format.modelfile import EtmModel
from ..format.scheme import Entry, Scheme
from .contributions import Contributions, Runner, analyze, fisher_scores
from .data import SearchData, load_data
from .pricing import Pricer, board_fixed
from .solvers import Result, dp, evolution, exhaustive, pareto, random_search, with_crit
from .space import CRITERIA, Candidate, Space, parse_bytes


@dataclass
class Report:
    space: Space
    contrib: Contributions
    pricer: Pricer
    budget: int
    criteria: tuple[str, ...]
    results: dict[str, Result]
    chosen: Result
    front: list[dict[str, Any]]
    extra: dict[str, Any] = field(default_factory=dict)

    def scheme(self) -> Scheme:
        if self.chosen.cand is None:
            raise ValueError(f"no scheme fits the budget of {self.budget} bytes "
                             f"(fixed cost {self.pricer.fixed} B)")
        return self.space.scheme(self.chosen.cand)

    def to_json(self) -> dict[str, Any]:
        sp = self.space

        def res(r: Result) -> dict[str, Any]:
            return {"scheme": None if r.cand is None else r.cand.text(sp), "price": r.price,
                    "arena": None if r.price is None else r.price - self.pricer.fixed,
                    "predicted_acc": r.predicted, "evaluations": r.evaluations, "seconds": round(r.seconds, 4)}

        out = {
            "budget": self.budget, "fixed_cost": self.pricer.fixed, "criteria": list(self.criteria),
            "layers": sp.layers, "classifier": sp.clf, "space_size": sp.size,
            "contributions": self.contrib.to_json(sp),
            "search": {k: res(r) for k, r in self.results.items()},
            "chosen": res(self.chosen), "pareto": self.front, **self.extra,
        }
        if self.chosen.cand is not None:
            s = self.scheme()
            out["chosen"]["entries"] = [{"layer": e.layer, "bias": e.bias, "channels": list(e.channels)}
                                        for e in s.entries]
            out["chosen"]["description"] = s.describe()
        return out


def cheapest(space: Space, pricer: Pricer) -> tuple[Candidate, int] | None:
    """The cheapest candidate and its price: the fewest biases with no weights (training
    weights only adds arena), i.e. the classifier alone where there is one."""
    best = None
    for k in range(len(space.layers) + 1):
        c = Candidate(k, (0,) * len(space.layers))
        p = pricer.price(c)
        if p is not None and (best is None or p < best[1]):
            best = (c, p)
    return best


def check_budget(space: Space, pricer: Pricer, budget: int) -> None:
    """ValueError naming the cheapest scheme's price when not even it fits `budget`."""
    low = cheapest(space, pricer)
    if low is None:
        raise ValueError("no scheme can train this model (no layer with weights or biases to train)")
    c, price = low
    if price > budget:
        fixed = pricer.fixed
        raise ValueError(f"no scheme fits the budget of {budget} B: the cheapest, {c.text(space)}, needs {price} B "
                         f"(training arena {price - fixed} B + fixed cost {fixed} B); give --budget {price} or more")


def search(model: EtmModel, d: SearchData, budget: int, fixed: int = 0, criteria: Sequence[str] = CRITERIA,
           lr: float | None = None, cache: str | None = None, evaluations: int = 300, seed: int = 0,
           progress: bool = True, contrib: Contributions | None = None, verify: int = 0, jobs: int = 1) -> Report:
    """Contribution analysis (or the given `contrib`), then DP / exhaustive / evolution / random
    search at `budget` (bytes: arena + fixed) and the Pareto front. With `verify` > 0 the chosen
    scheme is the best *measured* of the `verify` best-predicted candidates (verify_top)."""
    space = Space.of(model)
    check_budget(space, Pricer(space, fixed), budget)  # at once, not after the analysis
    crits = tuple(criteria)
    if "fisher" in crits:
        space.fisher = fisher_scores(space, d)
    runner = Runner(model, d, cache)  # one pool of worker processes for the analysis and verify
    try:
        return _search(space, runner, budget, fixed, crits, lr, evaluations, seed, progress, contrib, verify, jobs)
    finally:
        runner.close()


def _search(space: Space, runner: Runner, budget: int, fixed: int, crits: tuple[str, ...], lr: float | None,
            evaluations: int, seed: int, progress: bool, contrib: Contributions | None, verify: int,
            jobs: int) -> Report:
    if contrib is None:
        contrib = analyze(space, runner, crits, lr, progress, jobs)
    pricer = Pricer(space, fixed)
    results = {"dp": dp(space, pricer, contrib, budget, crits)}
    if space.size <= 200_000:
        results["exhaustive"] = exhaustive(space, pricer, contrib, budget, crits)
    results["evolution"] = evolution(space, pricer, contrib, budget, evaluations, seed, crits)
    results["random"] = random_search(space, pricer, contrib, budget, evaluations, seed, crits)
    front = pareto(space, pricer, contrib, crits)
    chosen = results["dp"]
    extra: dict[str, Any] = {}
    if verify and chosen.cand is not None:
        chosen, extra["verify"] = verify_top(space, pricer, contrib, runner, budget, verify, crits, jobs)
        runner.save()
        results["dp+verify"] = chosen
    return Report(space, contrib, pricer, budget, crits, results, chosen, front, extra)


def top_candidates(space: Space, pricer: Pricer, contrib: Contributions, budget: int, n: int,
                   criteria: Sequence[str]) -> list[Candidate]:
    """The n candidates with the highest predicted accuracy within the budget (exhaustive when
    the space is small, else the DP at n budgets down the Pareto front)."""
    if space.size <= 200_000:
        ok = []
        for c in space.all():
            p = pricer.price(c)
            if p is not None and p <= budget:
                cc = with_crit(space, contrib, c, criteria)
                ok.append((-contrib.predict(cc), p, c.k, c.dens, cc))
        ok.sort()
        return [x[-1] for x in ok[:n]]
    out, b = [], budget
    for _ in range(n):
        r = dp(space, pricer, contrib, b, criteria)
        if r.cand is None:
            break
        out.append(r.cand)
        b = r.price - 4
    return out


def verify_top(space: Space, pricer: Pricer, contrib: Contributions, runner: "Runner", budget: int, n: int,
               criteria: Sequence[str], jobs: int = 1) -> tuple[Result, list[dict[str, Any]]]:
    """Fine-tune the n best-predicted candidates within the budget and keep the one with the
    highest *measured* selection accuracy (the additive prediction is optimistic: the largest
    predicted sums collect the most measurement noise). Ties go to the cheaper one."""
    t0 = time.time()
    rows = []
    cands = top_candidates(space, pricer, contrib, budget, n, criteria)
    accs = runner.accuracy_many([(space.scheme(c), contrib.lr) for c in cands], jobs)
    for c, acc in zip(cands, accs):
        rows.append({"scheme": c.text(space), "price": pricer.price(c), "predicted_acc": contrib.predict(c),
                     "measured_acc": acc, "_c": c})
    best = max(rows, key=lambda r: (r["measured_acc"], -r["price"]))
    res = Result("dp+verify", best["_c"], best["price"], best["predicted_acc"], len(rows), time.time() - t0)
    for r in rows:
        del r["_c"]
    return res, rows


def measure_actual(report: Report, model: EtmModel, d: SearchData, cache: str | None = None) -> dict[str, Any]:
    """Additivity check: measured selection accuracy vs the additive prediction, for the DP's
    optimum (the pure test of the assumption) and for the chosen scheme."""
    if report.chosen.cand is None:
        return {}
    r = Runner(model, d, cache)
    base = report.contrib.acc_bias[0]
    out: dict[str, Any] = {}
    for name, res in (("dp", report.results["dp"]), ("chosen", report.chosen)):
        actual = r.accuracy(report.space.scheme(res.cand), report.contrib.lr)
        out[name] = {"scheme": res.cand.text(report.space), "predicted_acc": res.predicted, "actual_acc": actual,
                     "predicted_gain": res.predicted - base, "actual_gain": actual - base}
    r.save()
    out.update(out["chosen"])
    return out


def attach_spec(model: EtmModel, spec: str) -> Scheme:
    """For `edgetune export --scheme`: `@FILE` (a search JSON: its chosen entries) or
    `auto[:key=value,...]` (keys: budget, board, data, scenario, k, epochs, seed, lr, criteria;
    runs the search on `model` and attaches the DP's choice)."""
    if spec.startswith("@"):
        with open(spec[1:]) as f:
            j = json.load(f)
        ent = j.get("chosen", j).get("entries")
        if ent is None:
            raise ValueError(f"{spec[1:]}: no chosen scheme entries (did the search find one within budget?)")
        s = Scheme(tuple(Entry(int(e["layer"]), bool(e["bias"]), tuple(int(c) for c in e["channels"]))
                         for e in ent))
        s.validate(model)
    else:
        opts = dict(kv.split("=", 1) for kv in spec.partition(":")[2].split(",") if "=" in kv)
        fixed, heap, _ = board_fixed(opts.get("board"), model)
        budget = parse_bytes(opts.get("budget", str(heap) if heap else "96K"))
        space = Space.of(model)
        check_budget(space, Pricer(space, fixed), budget)  # search() checks too; this is before load_data
        d = load_data(model, opts.get("data", "watch"), opts.get("scenario"), int(opts.get("k", 8)),
                      int(opts.get("epochs", 10)), int(opts.get("seed", 0)))
        crit = tuple(opts.get("criteria", "l1+fisher").split("+"))
        rep = search(model, d, budget, fixed, crit, float(opts["lr"]) if "lr" in opts else None,
                     opts.get("cache", os.path.join("build", "scheme_cache.json")), progress=True,
                     verify=int(opts.get("verify", 5)), jobs=int(opts.get("jobs", 2)))
        s = rep.scheme()
        print(f"scheme auto: {rep.chosen.cand.text(rep.space)} -> {s.describe()}, arena "
              f"{rep.chosen.price - fixed} B, predicted selection accuracy {rep.chosen.predicted:.3f}",
              file=sys.stderr)
    model.scheme = s.encode()
    return s
