"""Accuracy of the closed-form classifier refit (int8, numpy twin host/edgetune/twin/refit.py) on the
scenarios of bench/learning.py, held-out shifted eval windows, several seeds.

    python -m bench.refit_accuracy --scenario rotation,side,subject --seeds 3 [--all-fit]

Per seed: the cached pre-trained int8 .etm of bench/learning.py (built if missing), the same
k-per-class fit windows (or with --all-fit every window of the fit region), then
- none: the flashed model;
- refit a=1 (l2 by CV): the ridge refit alone;
- refit a=1 l2=0.01: the ridge refit with a fixed l2;
- refit CV: alpha and l2 chosen by the device's 5-fold CV over the fit windows.
Accuracy on shift_eval; paired differences against none. Writes OUT/refit_accuracy.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from bench import learning

from edgetune.learn import pretrain
from edgetune.twin.training import Trainer

METHODS = (("refit a=1 (l2 CV)", None, 1.0), ("refit a=1 l2=0.01", 0.01, 1.0), ("refit CV (a, l2)", None, None))


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--scenario", default="rotation")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--seed0", type=int, default=0)
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--all-fit", action="store_true", help="every fit-region window instead of k per class")
    p.add_argument("--out", default="build/bench")
    a = p.parse_args(argv)
    largs = learning.main.__globals__["argparse"].Namespace(
        variant="small", epochs=30, k=a.k, adapt_epochs=10, out=a.out, no_progress=True)
    out = {}
    for name in a.scenario.split(","):
        cfg = pretrain.scenario_config({"scenario": name})
        sc = pretrain.scenario_from_config(cfg)
        res = {"none": []} | {m[0]: [] for m in METHODS}
        chosen = {m[0]: [] for m in METHODS}
        for seed in range(a.seed0, a.seed0 + a.seeds):
            r = learning.prepare_seed(sc, cfg, largs, seed)
            buf = open(r.etm_path, "rb").read()
            idx = np.arange(len(sc.shift_fit)) if a.all_fit else r.fit_idx
            xf = learning.int8_windows(sc, sc.shift_fit.take(idx), r.meta)
            yf = sc.shift_fit.y[idx]
            xe, ye = learning.int8_windows(sc, sc.shift_eval, r.meta), sc.shift_eval.y
            tr = Trainer(buf)
            res["none"].append(float(tr.evaluate(xe, ye)[1]))
            for label, l2, alpha in METHODS:
                tr.reset()
                info = tr.refit(xf, yf, l2=l2, alpha=alpha)
                res[label].append(float(tr.evaluate(xe, ye)[1]))
                chosen[label].append(info)
            print(f"{name} seed {seed} n={len(yf)} " + " ".join(f"{k}: {v[-1]:.3f}" for k, v in res.items())
                  + " | chosen " + "; ".join(f"{c[-1]['l2']:g}/{c[-1]['alpha']:g}" for c in chosen.values()),
                  flush=True)
        summ = {k: {"mean": float(np.mean(v)), "values": v} for k, v in res.items()}
        for k in chosen:
            d = np.asarray(res[k]) - np.asarray(res["none"])
            summ[k]["paired_minus_none"] = {"mean": float(d.mean()), "min": float(d.min()), "values": d.tolist()}
            summ[k]["chosen"] = chosen[k]
        out[name + ("_all_fit" if a.all_fit else "")] = summ
        print(name, {k: round(v["mean"], 4) for k, v in summ.items()}, flush=True)
    os.makedirs(a.out, exist_ok=True)
    path = os.path.join(a.out, "refit_accuracy.json")
    old = json.load(open(path)) if os.path.exists(path) else {}
    old.update(out)
    json.dump(old, open(path, "w"), indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
