"""Client-level DP for the fleet refit mode (fleet/refit_dp.py, docs/fleet-refit.md §5):
build/bench/fleet-refit-dp.json.

    python -m bench.fleet_refit_dp [--epsilon 8] [--delta 1e-5] [--splits 7] [--draws 5]

The clients of bench/fleet.py's scale run (every (subject, arm) of the non-test subjects cut in
`--splits` time parts: 112 clients for 7). Hyperparameters (window clip R, windows per board
n_max, l2, alpha) are chosen on a validation split of the TRAINING subjects (the last two
subjects' windows validate, the others' clients release), mean over `--draws` noise draws; the
held-out test subjects are only used for the final numbers: the chosen setting on all clients,
`--draws` noise draws, against the matching non-DP refits (the same clipped statistics without
noise, and the exact centralized refit on the pooled windows with the same l2/alpha and with its
own cross-validation). ~2 min.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time


import edgetune.fleet  # noqa: E402,F401  (one BLAS thread, before numpy loads)
import numpy as np

from edgetune.twin import refit as rf
from edgetune.fleet import client, refit_dp, refit_stats as rs
from edgetune.fleet.accountant import GaussianPrivacyEvent, accountant, noise_for
from edgetune.fleet.data import fleet_data
from edgetune.fleet.report import write_json
from edgetune.twin.training import Trainer

CLIPS = (150.0, 200.0, 300.0)
WEIGHTS = ((1.0, 1.0, 1.0), (0.3, 0.3, 1.0), (0.3, 1.0, 1.0))
L2S = (0.01, 0.1, 1.0, 10.0)
ALPHAS = (0.5, 0.75, 1.0)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=os.path.join("build", "demo", "model", "model.etm"))
    p.add_argument("--epsilon", type=float, default=8.0)
    p.add_argument("--delta", type=float, default=1e-5)
    p.add_argument("--splits", type=int, default=7)
    p.add_argument("--draws", type=int, default=5, help="noise draws per setting")
    p.add_argument("--out", default=os.path.join("build", "bench", "fleet-refit-dp.json"))
    a = p.parse_args()
    if not os.path.exists(a.model):
        print(f"bench/fleet_refit_dp.py: {a.model} does not exist (make demo builds it)", file=sys.stderr)
        return 2
    t0 = time.time()
    _, t, _ = client._model(os.path.abspath(a.model))
    state0 = t.state_bytes()
    fd = fleet_data(t.model.meta, a.splits)
    C = int(t.model.output_tensor.size)
    layer = rf.refit_layer(t.model, t.scheme)
    zp = int(t.model.tensors[t.model.layers[layer].input].zero_point)
    us = [rf.features(t, c.x).astype(np.float64) - zp for c in fd.clients]
    z = noise_for(a.epsilon, 1, a.delta)
    acc = accountant(len(fd.clients), a.delta)
    acc.compose(GaussianPrivacyEvent(noise_multiplier=z, sample_size=len(fd.clients),
                                     population_size=len(fd.clients)))
    eps = acc.get_epsilon(a.delta)
    sizes = [len(c.y) for c in fd.clients]
    nmaxes = [int(np.percentile(sizes, 50))]

    def accuracy(st, l2, alpha, x, y) -> float:
        tr = Trainer(t.model)
        try:
            tr.load_state(refit_dp.global_state(t, st, l2, alpha))
        except ValueError:  # the solve gave non-finite weights: counted as a failure
            return 0.0
        return float(tr.evaluate(x, y)[1])

    def run(ids, clip, n_max, zz, seed, settings, x, y, w) -> list:
        parts = [refit_dp.clip_sum(us[i], fd.clients[i].y, C, clip, n_max, seed * 7919 + i) for i in ids]
        st = refit_dp.release(parts, clip, n_max, zz, np.random.default_rng(seed), w)
        return [accuracy(st, l2, al, x, y) for l2, al in settings]

    # validation split of the training subjects
    subjects = sorted({c.subject for c in fd.clients})
    val = set(subjects[-2:])
    tr_ids = [i for i, c in enumerate(fd.clients) if c.subject not in val]
    vx = np.concatenate([c.x for c in fd.clients if c.subject in val])
    vy = np.concatenate([c.y for c in fd.clients if c.subject in val])
    settings = list(itertools.product(L2S, ALPHAS))
    val_grid = {}
    for clip, n_max, wi in itertools.product(CLIPS, nmaxes, range(len(WEIGHTS))):
        w = WEIGHTS[wi]
        accs = np.mean([run(tr_ids, clip, n_max, z, d, settings, vx, vy, w) for d in range(a.draws)], axis=0)
        for (l2, al), v in zip(settings, accs):
            val_grid[f"clip={clip};n_max={n_max};w={wi};l2={l2};alpha={al}"] = float(v)
        print(f"validation clip {clip} n_max {n_max} weights {w}: best {accs.max():.3f}", file=sys.stderr, flush=True)
    for l2, al in settings:  # the matching non-DP number on the validation split
        val_grid[f"no-noise-unclipped;l2={l2};alpha={al}"] = run(tr_ids, 1e9, 10 ** 9, 0.0, 0, [(l2, al)], vx, vy,
                                                                  WEIGHTS[0])[0]
    best = max((k for k in val_grid if k.startswith("clip")), key=val_grid.get)
    kv = dict(s.split("=") for s in best.split(";"))
    clip, n_max, l2, al = float(kv["clip"]), int(kv["n_max"]), float(kv["l2"]), float(kv["alpha"])
    w = WEIGHTS[int(kv["w"])]
    # held-out test: all clients, the chosen setting
    ids = list(range(len(fd.clients)))
    dp = [run(ids, clip, n_max, z, 100 + d, [(l2, al)], fd.eval_x, fd.eval_y, w)[0] for d in range(a.draws)]
    nodp_clipped = run(ids, clip, n_max, 0.0, 100, [(l2, al)], fd.eval_x, fd.eval_y, w)[0]
    px, py = fd.pooled()
    ex = Trainer(t.model)
    ex.load_state(state0)
    ex.refit(px, py, l2=l2, alpha=al)
    exact_same = float(ex.evaluate(fd.eval_x, fd.eval_y)[1])
    cv = Trainer(t.model)
    cv.load_state(state0)
    r = cv.refit(px, py)
    exact_cv = float(cv.evaluate(fd.eval_x, fd.eval_y)[1])
    start = float(Trainer(t.model).evaluate(fd.eval_x, fd.eval_y)[1])
    out = {
        "model": a.model, "clients": len(fd.clients), "splits": a.splits, "pooled_windows": int(len(py)),
        "epsilon": eps, "delta": a.delta, "noise_multiplier": z, "releases": 1,
        "chosen_on_validation": {"clip": clip, "n_max": n_max, "block_weights": list(w), "l2": l2, "alpha": al,
                                 "validation_acc": val_grid[best]},
        "sensitivity": refit_dp.sensitivity(n_max, w),
        "start_acc": start,
        "dp_acc_draws": dp, "dp_acc_mean": float(np.mean(dp)), "dp_acc_min": float(np.min(dp)),
        "nodp_clipped_acc": nodp_clipped,
        "centralized_refit_same_l2_alpha_acc": exact_same,
        "centralized_refit_cv": {"acc": exact_cv, "l2": r["l2"], "alpha": r["alpha"]},
        "bytes_up_per_client": 4 * (C + (us[0].shape[1] * (us[0].shape[1] + 1)) // 2 + C * us[0].shape[1]),
        "validation_grid": val_grid, "seconds": round(time.time() - t0, 1),
    }
    write_json(a.out, out)
    print(f"bench/fleet_refit_dp.py: {a.out}: {len(fd.clients)} clients, epsilon {eps:.2f} (delta {a.delta:g}, "
          f"z {z:.3f}); chosen on validation clip {clip} n_max {n_max} weights {w} l2 {l2} alpha {al}; held-out: start "
          f"{start:.3f}, DP refit {np.mean(dp):.3f} (min {np.min(dp):.3f}, {a.draws} draws), no noise "
          f"{nodp_clipped:.3f}, centralized refit same l2/alpha {exact_same:.3f}, with CV {exact_cv:.3f}; "
          f"{out['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
