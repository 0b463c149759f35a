"""DP for the fleet refit mode (fleet/refit_dp.py, docs/fleet-refit.md §5):
build/bench/fleet-refit-dp.json.

    python -m bench.fleet_refit_dp [--epsilon 8] [--delta 1e-5] [--splits 7] [--draws 10] [--val-folds 1]

The clients of bench/fleet.py's scale run (every (subject, arm) of the non-test subjects cut in
`--splits` time parts: 112 clients for 7). For each privacy unit (`sample`: one raw IMU sample,
which lies in up to window/step overlapping windows, so the window mechanism with its noise
multiplied by that; `window`: one labelled window; `board`: one client) the settings (window
clip R, the public centre or none, block weights; for boards the windows per board n_max; l2,
alpha) are chosen on validation folds of the TRAINING subjects (the last `--val-folds` pairs of
subjects; each pair's windows validate what the other subjects' clients release; default one
fold, the last two subjects), mean over the folds and `--val-draws` noise draws per fold. The
held-out test subjects are only used for the final numbers: the chosen setting on all clients,
`--draws` noise draws, against the matching non-DP refits (the same clipped statistics without
noise, and the exact centralized refit on the pooled windows with the same l2/alpha and with its
own cross-validation). Accuracy is the twin's classifier layer on the windows' classifier inputs
(the refit changes nothing before it; checked against Trainer.evaluate at the start).
~1 min on 2 cores (~2 min with --val-folds 4).
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time


import edgetune.fleet  # noqa: E402,F401  (one BLAS thread, before numpy loads)
import numpy as np

from edgetune.twin import reference, refit as rf
from edgetune.fleet import client, refit_dp
from edgetune.fleet.accountant import gaussian_epsilon_for, gaussian_noise_for
from edgetune.fleet.data import fleet_data, server_windows
from edgetune.fleet.report import write_json
from edgetune.twin.training import Trainer

WEIGHTS = ((1.0, 1.0, 1.0), (0.3, 0.5, 1.0), (0.1, 0.5, 1.0))  # (w_cnt, w_G, w_B)
GRID = {"sample": {"clip": (60.0, 80.0, 100.0, 150.0, 200.0, 300.0)},
        "window": {"clip": (60.0, 80.0, 100.0, 150.0, 200.0, 300.0)}, "board": {"clip": (100.0, 200.0)}}
L2S = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
ALPHAS = (0.75, 1.0)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=os.path.join("build", "demo", "model", "model.etm"))
    p.add_argument("--epsilon", type=float, default=8.0)
    p.add_argument("--delta", type=float, default=1e-5)
    p.add_argument("--splits", type=int, default=7)
    p.add_argument("--draws", type=int, default=10, help="noise draws for the held-out numbers")
    p.add_argument("--val-draws", type=int, default=3, help="noise draws per validation fold and setting")
    p.add_argument("--val-folds", type=int, default=1,
                   help="validation folds: pairs of training subjects, counted from the last (1, the default: the "
                        "last two subjects validate; 4: every pair in turn)")
    p.add_argument("--units", default="sample,window,board", help="privacy units to run (sample, window, board)")
    p.add_argument("--out", default=os.path.join("build", "bench", "fleet-refit-dp.json"))
    a = p.parse_args()
    if not os.path.exists(a.model):
        print(f"bench/fleet_refit_dp.py: {a.model} does not exist (make demo builds it)", file=sys.stderr)
        return 2
    if a.val_folds < 1 or a.val_draws < 1 or a.draws < 1:
        print("bench/fleet_refit_dp.py: --val-folds, --val-draws and --draws must be >= 1", file=sys.stderr)
        return 2
    units = [u for u in a.units.split(",") if u]
    if not units or any(u not in GRID for u in units):
        print(f"bench/fleet_refit_dp.py: --units {a.units!r}: choose from {sorted(GRID)}", file=sys.stderr)
        return 2
    t0 = time.time()
    _, t, _ = client._model(os.path.abspath(a.model))
    state0 = t.state_bytes()
    fd = fleet_data(t.model.meta, a.splits)
    C = int(t.model.output_tensor.size)
    layer = rf.refit_layer(t.model, t.scheme)
    zp = int(t.model.tensors[t.model.layers[layer].input].zero_point)
    us = [rf.features(t, c.x).astype(np.float64) - zp for c in fd.clients]
    centre = refit_dp.public_centre(t, server_windows(t.model.meta))
    z = gaussian_noise_for(a.epsilon, a.delta)  # one release: the exact calibration
    eps = gaussian_epsilon_for(z, a.delta)
    group = refit_dp.windows_per_sample(t.model.meta)
    sizes = [len(c.y) for c in fd.clients]
    grid = dict(GRID)
    grid["board"] = dict(GRID["board"], n_max=(4, int(np.percentile(sizes, 50))))
    grid["window"] = dict(GRID["window"], n_max=(None,))
    grid["sample"] = dict(GRID["sample"], n_max=(None,))

    if layer != len(t.model.layers) - 1:
        print("bench/fleet_refit_dp.py: the refit layer is not the model's last layer", file=sys.stderr)
        return 2
    ishape = tuple(t.model.tensors[t.model.layers[layer].input].shape[1:])

    def accuracy(st, l2, alpha, f, y) -> float:
        """Accuracy of the refit's global state on windows whose classifier inputs are f (int8)."""
        tr = Trainer(t.model)
        try:
            tr.load_state(refit_dp.global_state(t, st, l2, alpha))
        except ValueError:  # the solve gave non-finite weights: counted as a failure
            return 0.0
        out = reference.run_layer(tr.live, tr.live.layers[layer], f.reshape((len(f),) + ishape))
        return float(np.mean(out.reshape(len(f), -1).argmax(1) == y))

    wire = {}

    def run(ids, s, zz, seed, settings, f, y) -> list:
        m = centre if s["centre"] else None
        K = us[0].shape[1]
        key = (tuple(ids), s["clip"], s["n_max"], s["centre"], seed if s["n_max"] else 0)
        if key not in wire:  # what the boards send (the wire) depends on the seed only through n_max
            if len(wire) >= 32:
                wire.clear()
            wire[key] = [refit_dp.unpack(refit_dp.pack(refit_dp.clip_sum(
                us[i], fd.clients[i].y, C, s["clip"], s["n_max"], seed * 7919 + i, m)), K, C) for i in ids]
        st = refit_dp.release(wire[key], s["clip"], s["n_max"], zz, np.random.default_rng(seed), s["weights"], m)
        return [accuracy(st, l2, al, f, y) for l2, al in settings]

    # validation folds of the training subjects: consecutive pairs, the last --val-folds of them;
    # each fold's pair validates what the other subjects' clients release
    subjects = sorted({c.subject for c in fd.clients})
    pairs = [subjects[i:i + 2] for i in range(0, len(subjects) - 1, 2)][-a.val_folds:]
    folds = []
    for val in pairs:
        vx = np.concatenate([c.x for c in fd.clients if c.subject in val])
        vy = np.concatenate([c.y for c in fd.clients if c.subject in val])
        folds.append(([i for i, c in enumerate(fd.clients) if c.subject not in val], rf.features(t, vx), vy, vx))
    ef = rf.features(t, fd.eval_x)
    settings = list(itertools.product(L2S, ALPHAS))
    px, py = fd.pooled()
    start = float(Trainer(t.model).evaluate(fd.eval_x, fd.eval_y)[1])
    st0 = refit_dp.release([refit_dp.clip_sum(us[0], fd.clients[0].y, C, 1e9, None)], 1e9, None, 0.0, None)
    sure = Trainer(t.model)
    sure.load_state(refit_dp.global_state(t, st0, 0.3, 1.0))
    for x, f, y in ((folds[0][3], folds[0][1], folds[0][2]), (fd.eval_x, ef, fd.eval_y)):  # classifier-only = model
        if abs(float(sure.evaluate(x, y)[1]) - accuracy(st0, 0.3, 1.0, f, y)) > 0.5 / len(y):
            print("bench/fleet_refit_dp.py: classifier-layer accuracy differs from Trainer.evaluate", file=sys.stderr)
            return 2
    cv = Trainer(t.model)
    cv.load_state(state0)
    r = cv.refit(px, py)
    exact_cv = float(cv.evaluate(fd.eval_x, fd.eval_y)[1])
    out = {
        "model": a.model, "clients": len(fd.clients), "splits": a.splits, "pooled_windows": int(len(py)),
        "windows_per_client_median": int(np.percentile(sizes, 50)),
        "epsilon": eps, "delta": a.delta, "noise_multiplier": z, "releases": 1,
        "windows_per_sample": group, "validation_folds": [[int(v) for v in val] for val in pairs],
        "validation_draws_per_fold": a.val_draws,
        "start_acc": start, "centralized_refit_cv": {"acc": exact_cv, "l2": r["l2"], "alpha": r["alpha"]},
        "bytes_up_per_client": 4 * refit_dp.upload_values(us[0].shape[1], C),  # refit_dp.pack, once
        "units": {},
    }
    for unit in units:
        g = grid[unit]
        zu = z * group if unit == "sample" else z  # the window mechanism, noise for `group` windows
        val_grid = {}
        for clip, n_max, wi, cen in itertools.product(g["clip"], g["n_max"], range(len(WEIGHTS)), (False, True)):
            s = {"clip": clip, "n_max": n_max, "weights": WEIGHTS[wi], "centre": cen}
            accs = np.mean([run(ids, s, zu, d, settings, vf, vy) for ids, vf, vy, _ in folds
                            for d in range(a.val_draws)], axis=0)
            for (l2, al), v in zip(settings, accs):
                val_grid[f"clip={clip};n_max={n_max};w={wi};centre={int(cen)};l2={l2};alpha={al}"] = float(v)
            print(f"{unit}: validation clip {clip} n_max {n_max} weights {WEIGHTS[wi]} centre {cen}: best "
                  f"{accs.max():.3f}", file=sys.stderr, flush=True)
        best = max(val_grid, key=val_grid.get)
        kv = dict(q.split("=") for q in best.split(";"))
        s = {"clip": float(kv["clip"]), "n_max": None if kv["n_max"] == "None" else int(kv["n_max"]),
             "weights": WEIGHTS[int(kv["w"])], "centre": kv["centre"] == "1"}
        l2, al = float(kv["l2"]), float(kv["alpha"])
        ids = list(range(len(fd.clients)))
        dp = [run(ids, s, zu, 100 + d, [(l2, al)], ef, fd.eval_y)[0] for d in range(a.draws)]
        nodp = run(ids, s, 0.0, 100, [(l2, al)], ef, fd.eval_y)[0]
        ex = Trainer(t.model)
        ex.load_state(state0)
        ex.refit(px, py, l2=l2, alpha=al)
        exact_same = float(ex.evaluate(fd.eval_x, fd.eval_y)[1])
        out["units"][unit] = {
            "noise_multiplier": zu, "epsilon_per_window": gaussian_epsilon_for(zu, a.delta) if unit != "board" else None,
            "chosen_on_validation": {**s, "weights": list(s["weights"]), "l2": l2, "alpha": al,
                                     "validation_acc": val_grid[best]},
            "sensitivity": refit_dp.sensitivity(s["n_max"], s["weights"]),
            "dp_acc_draws": dp, "dp_acc_mean": float(np.mean(dp)), "dp_acc_min": float(np.min(dp)),
            "dp_acc_max": float(np.max(dp)), "nodp_clipped_acc": nodp,
            "centralized_refit_same_l2_alpha_acc": exact_same, "validation_grid": val_grid,
        }
        print(f"bench/fleet_refit_dp.py: unit {unit}: chosen {s} l2 {l2} alpha {al}; held-out: DP refit "
              f"{np.mean(dp):.3f} ({np.min(dp):.3f}-{np.max(dp):.3f}, {a.draws} draws), same statistics without "
              f"noise {nodp:.3f}, centralized refit same l2/alpha {exact_same:.3f}", file=sys.stderr, flush=True)
    out["seconds"] = round(time.time() - t0, 1)
    write_json(a.out, out)
    print(f"bench/fleet_refit_dp.py: {a.out}: {len(fd.clients)} clients, epsilon {eps:.2f} (delta {a.delta:g}, "
          f"z {z:.3f} per unit; a raw sample is in {group} windows); start {start:.3f}, centralized refit with CV "
          f"{exact_cv:.3f}; " + "; ".join(f"{u}: DP {v['dp_acc_mean']:.3f}" for u, v in out["units"].items())
          + f"; {out['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
