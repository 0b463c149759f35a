"""Fleet-learning benchmark (issue 17, docs/fleet.md §8): build/bench/fleet.json and fleet.png.

    python -m bench.fleet [--model build/demo/model/model.etm] [--rounds 20] [--seeds 1]

Runs, all federated ones through Flower's Simulation Engine on the numpy twin (2 Ray workers),
with the local lr / local epochs / server lr / server momentum and the centralized lr chosen by
bench/fleet_tune.py on a validation split of the training subjects (constants below):
1. `compressed`: every (subject, arm) of the non-test subjects a client (16), 20 rounds,
   device clip 8 / top-k 5 % with error feedback / int8 (`--seeds` seeds);
2. `uncompressed`: the same with dense float updates and no clip (what compression costs);
3. `scale`: the compressed run with every client's recordings cut in 7 time parts (112 clients);
4. `dp`: the 112 clients under Flower's central DP wrapper (fixed clipping at the device clip)
   with the noise multiplier for epsilon 8 at delta 1e-5 over the rounds;
5. `centralized`: the same parameters fine-tuned on the pooled client windows, 20 passes;
6. `refit-first`: the product's recipe order: one refit round (refit mode; the boards' statistics
   quantized to `--refit-bits` 12 bits, fleet/refit_quant.py, 0 = exact int32, where the federated
   refit is the centralized one bit for bit) and the compressed FedAvg rounds from its state, at
   its own local lr; against its matching baseline, the centralized (exact) refit + SGD on the
   pooled windows (`--seeds` seeds each); bytes per client include the refit's upload;
7. `leakage`: the analytic attack on what boards upload at the flashed state (leakage.py), and
   `leakage-iter`: the iterative gradient-matching attack on the deeper layers (leakage_iter.py).
Accuracy is on the held-out test subjects (both arms, shifted). `--only` runs some parts,
`--merge` folds parts run apart into one JSON. About 50 min on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


from edgetune.fleet import client, leakage, leakage_iter, report
from edgetune.fleet.data import fleet_data
from edgetune.fleet.simulate import Settings, _k, centralized, simulate


# Chosen with bench/fleet_tune.py on the validation split of the training subjects (docs/fleet.md §8)
LR, EPOCHS, SERVER_LR, SERVER_MOMENTUM = 0.01, 1, 1.0, 0.0
CENTRAL_LR = 0.02
# refit-first (docs/fleet.md §8): the refit's l2/alpha from its own CV on the validation split's
# training windows; local and centralized lr after the refit chosen on that split too
REFIT_L2, REFIT_ALPHA, REFIT_LR, REFIT_CENTRAL_LR = 0.001, 1.0, 0.005, 0.002
# the refit statistics' bits: 12 keeps the refit's validation accuracy (docs/fleet-refit.md §7)
REFIT_BITS = 12


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=os.path.join("build", "demo", "model", "model.etm"))
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--lr", type=float, default=LR, help="local (board) learning rate")
    p.add_argument("--epochs", type=int, default=EPOCHS, help="local epochs per round")
    p.add_argument("--server-lr", type=float, default=SERVER_LR)
    p.add_argument("--server-momentum", type=float, default=SERVER_MOMENTUM)
    p.add_argument("--central-lr", type=float, default=CENTRAL_LR, help="the centralized baseline's learning rate")
    p.add_argument("--clip", type=float, default=8.0)
    p.add_argument("--topk", type=float, default=0.05)
    p.add_argument("--epsilon", type=float, default=8.0)
    p.add_argument("--dp-clip", type=float, default=0.0, help="server clip under DP (0: the device clip)")
    p.add_argument("--splits", type=int, default=7)
    p.add_argument("--attack-trials", type=int, default=16, help="trials per setting of the iterative attack")
    p.add_argument("--seeds", type=int, default=1, help="seeds of the compressed run and the centralized baseline")
    p.add_argument("--out", default=os.path.join("build", "bench", "fleet.json"))
    p.add_argument("--refit-lr", type=float, default=REFIT_LR, help="local lr of the refit-first run")
    p.add_argument("--refit-bits", type=int, default=REFIT_BITS,
                   help="bits of the refit-first run's quantized statistics (0: exact int32)")
    p.add_argument("--refit-central-lr", type=float, default=REFIT_CENTRAL_LR,
                   help="lr of the refit-first run's centralized baseline")
    p.add_argument("--only", default="compressed,uncompressed,scale,dp,centralized,refit-first,leakage,leakage-iter",
                   help="parts to run; the others are kept from an existing --out (so parts can run apart)")
    p.add_argument("--merge", nargs="*", default=[], help="fold these JSONs of parts run apart (--only, another "
                   "--out) into --out and redraw the PNG; runs nothing")
    a = p.parse_args()
    if a.merge:
        out = {}
        for f in [a.out, *a.merge] if os.path.exists(a.out) else a.merge:
            with open(f) as fh:
                part = json.load(fh)
            for k, v in part.items():  # dicts (variants, leakage) merge key by key
                out[k] = {**out[k], **v} if isinstance(v, dict) and isinstance(out.get(k), dict) else v
        report.write_json(a.out, out)
        if "global_acc" in out:
            report.plot(os.path.splitext(a.out)[0] + ".png", out)
        print(f"bench/fleet.py: merged into {a.out}")
        return 0
    only = set(a.only.split(","))
    if not os.path.exists(a.model):
        if os.path.abspath(a.model) != os.path.abspath(os.path.join("build", "demo", "model", "model.etm")):
            print(f"bench/fleet.py: {a.model} does not exist", file=sys.stderr)
            return 2
        import importlib.util
        from pathlib import Path

        root = Path(__file__).resolve().parents[1]
        spec = importlib.util.spec_from_file_location("edgetune_demo", root / "scripts" / "demo.py")
        demo = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(demo)
        a.model = str(demo.ensure_model(root / "build" / "demo"))  # pre-trains the demo model once
    base = dict(model=a.model, rounds=a.rounds, lr=a.lr, epochs=a.epochs, clip=a.clip, topk=a.topk,
                server_lr=a.server_lr, server_momentum=a.server_momentum)
    t0 = time.time()
    out: dict = {}
    if os.path.exists(a.out):
        with open(a.out) as f:
            out = json.load(f)
    variants: dict = out.setdefault("variants", {})
    if "compressed" in only:
        runs = [simulate(Settings(**base, seed=sd)) for sd in range(a.seeds)]
        r = runs[0]
        out.update({k: r[k] for k in ("rounds", "clients", "global_acc", "bytes_up_dense", "bytes_up_sent")})
        out["detail"] = r
        out["global_acc_final_per_seed"] = [x["global_acc"][-1] for x in runs]
    if "uncompressed" in only:  # what the device compression costs: dense float updates, no clip
        variants["uncompressed"] = simulate(Settings(**{**base, "topk": 1.0, "clip": 1e9}))
    if "scale" in only:
        variants["scale"] = simulate(Settings(**base, splits=a.splits))
    if "dp" in only:
        variants["dp"] = simulate(Settings(**base, splits=a.splits, dp_epsilon=a.epsilon, dp_clip=a.dp_clip))
        out["epsilon"] = variants["dp"]["epsilon"]
        out["delta"] = variants["dp"]["delta"]
    if "centralized" in only:
        cs = [centralized(Settings(**{**base, "lr": a.central_lr, "epochs": 1}, seed=sd)) for sd in range(a.seeds)]
        c = cs[0]
        out["centralized_acc"] = c["centralized_acc"]
        out["centralized_curve"] = c["centralized_curve"]
        out["centralized_acc_per_seed"] = [x["centralized_acc"] for x in cs]
        out["centralized_lr"] = a.central_lr
        out["pooled_windows"] = c["pooled_windows"]
    if "refit-first" in only:
        rb = {**base, "lr": a.refit_lr, "refit_l2": REFIT_L2, "refit_alpha": REFIT_ALPHA}
        runs = [simulate(Settings(**rb, refit_bits=a.refit_bits, seed=sd)) for sd in range(a.seeds)]
        variants["refit-first"] = runs[0]
        cs = [centralized(Settings(**{**rb, "lr": a.refit_central_lr}, seed=sd)) for sd in range(a.seeds)]
        out["refit_first"] = {"global_acc_final_per_seed": [x["global_acc"][-1] for x in runs],
                              "refit_acc": runs[0]["global_acc"][0],
                              "centralized_acc_per_seed": [x["centralized_acc"] for x in cs],
                              "centralized_curve": cs[0]["centralized_curve"], "lr": a.refit_lr,
                              "central_lr": a.refit_central_lr, "l2": REFIT_L2, "alpha": REFIT_ALPHA,
                              "bits": a.refit_bits}
        r0 = runs[0]  # bytes per client over the recipe: the refit's upload once + the rounds' uploads
        sent = r0["refit_bytes_up"][0] + r0["bytes_up_sent"] / r0["clients"]
        dense = 4 * r0["refit_values"] + r0["bytes_up_dense"] / r0["clients"]
        out["refit_first"].update({"bytes_per_client_sent": sent, "bytes_per_client_dense_float32": dense,
                                   "bytes_reduction": dense / sent})
    if "leakage" in only or "leakage-iter" in only:
        path = os.path.abspath(a.model)
        _, t, lay = client._model(path)
        fd = fleet_data(t.model.meta)
        if "leakage" in only:
            out["leakage"] = leakage.run(path, fd, t.state_bytes(), lr=a.lr, clip=a.clip, k=_k(lay, a.topk),
                                         sigma=0.25, one_sample_trials=200, repeats=4)
        if "leakage-iter" in only:
            out["leakage_iterative"] = leakage_iter.run(path, fd, t.state_bytes(), lr=a.lr, clip=a.clip,
                                                        k=_k(lay, a.topk), sigma=0.25, trials=a.attack_trials)
            out.setdefault("leakage", {}).update({f"iterative/{k}": v for k, v in out["leakage_iterative"].items()
                                                  if isinstance(v, dict) and "label_recovery" in v})
    out["settings"] = {**base, "central_lr": a.central_lr, "splits": a.splits, "epsilon_target": a.epsilon}
    out["seconds_last_parts"] = round(time.time() - t0, 1)
    report.write_json(a.out, out)
    if "global_acc" in out:
        report.plot(os.path.splitext(a.out)[0] + ".png", out)
    print(f"bench/fleet.py: {a.out} in {out['seconds_last_parts']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
