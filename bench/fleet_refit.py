"""Fleet refit mode benchmark (docs/fleet-refit.md): build/bench/fleet-refit.json.

    python -m bench.fleet_refit [--model build/demo/model/model.etm]

The clients and held-out set of bench/fleet.py (fleet/data.py: every (subject, arm) of the
non-test subjects a client, 16 with splits 1; the test subjects' shifted windows held out), the
same `make demo` model. Each client computes its refit statistics once at the flashed state
(fleet/refit_stats.py, numpy twin); the server sums them and solves for each (l2, alpha) of the
refit's grid; the global state is checked to be the centralized refit's (Trainer.refit on the
pooled windows, same l2/alpha) bit for bit. Also the centralized refit with its own
cross-validation (l2, alpha None: what m.refit does on a device holding all windows), and the
start model. Bytes: what a client sends once (int32 statistics) vs dense float32 updates of the
scheme's parameters over --rounds rounds. ~1 min.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import edgetune.fleet  # noqa: F401  (one BLAS thread, before numpy loads)
import numpy as np

from edgetune.twin import refit as rf
from edgetune.fleet import client, refit_stats as rs
from edgetune.fleet.data import fleet_data
from edgetune.fleet.report import write_json
from edgetune.twin.training import Trainer


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=os.path.join("build", "demo", "model", "model.etm"))
    p.add_argument("--rounds", type=int, default=20, help="rounds of the dense-update comparison")
    p.add_argument("--splits", type=int, default=1)
    p.add_argument("--out", default=os.path.join("build", "bench", "fleet-refit.json"))
    a = p.parse_args()
    if not os.path.exists(a.model):
        print(f"bench/fleet_refit.py: {a.model} does not exist (python -m bench.fleet or make demo builds it)",
              file=sys.stderr)
        return 2
    t0 = time.time()
    _, t, lay = client._model(os.path.abspath(a.model))
    state0 = t.state_bytes()
    fd = fleet_data(t.model.meta, a.splits)
    K, C = rs.dims(t)

    def fresh(state: bytes) -> Trainer:
        tr = Trainer(t.model)
        tr.load_state(state)
        return tr

    def acc(state: bytes) -> float:
        return float(fresh(state).evaluate(fd.eval_x, fd.eval_y)[1])

    ups = [rs.pack(rs.client_stats(fresh(state0), c.x, c.y)) for c in fd.clients]
    agg = rs.aggregate([rs.unpack(u, K, C) for u in ups])
    px, py = fd.pooled()
    grid = {}
    for alpha in rf.ALPHA_GRID[1:]:
        for l2 in rf.L2_GRID:
            glob = rs.global_state(t, agg, l2, alpha)
            cen = fresh(state0)
            cen.refit(px, py, l2=l2, alpha=alpha)
            same = glob == cen.state_bytes()
            if not same:
                raise RuntimeError(f"federated refit != centralized refit at l2 {l2}, alpha {alpha}")
            grid[f"l2={l2},alpha={alpha}"] = {"federated_acc": acc(glob), "bit_equal_centralized": same}
    cv = fresh(state0)
    r = cv.refit(px, py)
    per_client = len(ups[0])
    dense = 4 * lay.size * a.rounds
    out = {
        "model": a.model, "clients": len(fd.clients), "pooled_windows": int(len(py)), "K": K, "C": C,
        "start_acc": acc(state0),
        "federated_refit": grid,
        "centralized_refit_cv": {"acc": float(cv.evaluate(fd.eval_x, fd.eval_y)[1]), "l2": r["l2"],
                                 "alpha": r["alpha"], "cv_accuracy": r["cv_accuracy"]},
        "bytes_up_per_client": per_client, "bytes_up_total": int(sum(len(u) for u in ups)),
        "dense_rounds": a.rounds, "params": lay.size,
        "bytes_up_dense_per_client": dense, "bytes_up_dense_total": dense * len(fd.clients),
        "seconds": round(time.time() - t0, 1),
    }
    write_json(a.out, out)
    best = max(grid.items(), key=lambda kv: kv[1]["federated_acc"])
    print(f"bench/fleet_refit.py: {a.out}: start {out['start_acc']:.3f}, federated refit "
          + ", ".join(f"{k} {v['federated_acc']:.3f}" for k, v in grid.items())
          + f" (best {best[0]}), centralized refit with CV {out['centralized_refit_cv']['acc']:.3f}; "
          f"{per_client} B per client once vs {dense} B dense over {a.rounds} rounds; {out['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
