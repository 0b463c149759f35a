"""Fleet-learning benchmark (issue 17, docs/fleet.md §8): build/bench/fleet.json and fleet.png.

    python -m bench.fleet [--model build/demo/model/model.etm] [--rounds 20]

Runs, all through Flower's Simulation Engine on the numpy twin (2 Ray workers):
1. `compressed`: every (subject, arm) of the non-test subjects a client (16), 20 rounds of
   FedAvg, one local epoch, device clip 8 / top-k 5 % with error feedback / int8;
2. `scale`: the same with every client's recordings cut in 7 time parts (112 clients);
3. `dp`: the 112 clients under Flower's central DP wrapper (fixed clipping at the device clip)
   with the noise multiplier for epsilon 8 at delta 1e-5 over the rounds;
4. `centralized`: the same parameters fine-tuned on the pooled client windows for as many passes;
5. leakage: the analytic attack on what boards upload at the flashed state (leakage.py).
Accuracy is on the held-out test subjects (both arms, shifted). Takes ~15 min on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from edgetune.fleet import client, leakage, report
from edgetune.fleet.data import fleet_data
from edgetune.fleet.simulate import Settings, _k, centralized, simulate


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=os.path.join("build", "demo", "model", "model.etm"))
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--clip", type=float, default=8.0)
    p.add_argument("--topk", type=float, default=0.05)
    p.add_argument("--epsilon", type=float, default=8.0)
    p.add_argument("--dp-clip", type=float, default=0.0, help="server clip under DP (0: the device clip)")
    p.add_argument("--splits", type=int, default=7)
    p.add_argument("--out", default=os.path.join("build", "bench", "fleet.json"))
    p.add_argument("--only", default="compressed,scale,dp,centralized,leakage")
    a = p.parse_args()
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
    base = dict(model=a.model, rounds=a.rounds, lr=a.lr, clip=a.clip, topk=a.topk)
    t0 = time.time()
    out: dict = {}
    variants: dict = {}
    if "compressed" in only:
        r = simulate(Settings(**base))
        out.update({k: r[k] for k in ("rounds", "clients", "global_acc", "bytes_up_dense", "bytes_up_sent")})
        out["detail"] = r
    if "scale" in only:
        variants["scale"] = simulate(Settings(**base, splits=a.splits))
    if "dp" in only:
        variants["dp"] = simulate(Settings(**base, splits=a.splits, dp_epsilon=a.epsilon, dp_clip=a.dp_clip))
        out["epsilon"] = variants["dp"]["epsilon"]
        out["delta"] = variants["dp"]["delta"]
    if "centralized" in only:
        c = centralized(Settings(**base))
        out["centralized_acc"] = c["centralized_acc"]
        out["centralized_curve"] = c["centralized_curve"]
        out["pooled_windows"] = c["pooled_windows"]
    if "leakage" in only:
        path = os.path.abspath(a.model)
        _, t, lay = client._model(path)
        t.reset()
        fd = fleet_data(t.model.meta)
        out["leakage"] = leakage.run(path, fd, t.state_bytes(), lr=a.lr, clip=a.clip, k=_k(lay, a.topk), sigma=0.25,
                                     one_sample_trials=200, repeats=4)
    out["variants"] = variants
    out["seconds"] = round(time.time() - t0, 1)
    if "global_acc" in out:
        report.write_json(a.out, out)
        report.plot(os.path.splitext(a.out)[0] + ".png", out)
    else:
        report.write_json(a.out, out)
    print(f"bench/fleet.py: {a.out} in {out['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
