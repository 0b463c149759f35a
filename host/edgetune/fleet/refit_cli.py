"""`edgetune fleet refit`: the refit mode over the watch fleet on Flower's Simulation Engine
(docs/fleet-refit.md): one query round, the global state written to --out."""

from __future__ import annotations

import argparse
import json
import os


def add_parser(sub) -> None:
    p = sub.add_parser("refit", help="refit mode: boards send refit statistics once, the server solves exactly")
    p.add_argument("--model", default=os.path.join("build", "demo", "model", "model.etm"),
                   help="the .etm (default: the `make demo` model)")
    p.add_argument("--l2", type=float, required=True, help="ridge strength (no cross-validation across boards)")
    p.add_argument("--alpha", type=float, required=True, help="blend with the flashed classifier, 0..1")
    p.add_argument("--splits", type=int, default=1, help="time parts per (subject, arm)")
    p.add_argument("--out", default=os.path.join("build", "fleet-refit.state"),
                   help="global state (m.load_state / Trainer.load_state format)")


def run(a: argparse.Namespace) -> int:
    from ..outpaths import check_file
    from ..twin.training import Trainer
    from . import client
    from .data import fleet_data
    from .refit_flower import simulate_refit

    import math

    if not (a.l2 > 0 and math.isfinite(a.l2)):
        raise ValueError(f"--l2 {a.l2} must be a positive finite number")
    if not 0 <= a.alpha <= 1:
        raise ValueError(f"--alpha {a.alpha} must be in [0, 1]")
    if not os.path.exists(a.model):
        raise ValueError(f"{a.model} does not exist: run `make demo` or give --model")
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    check_file(a.out)
    r = simulate_refit(a.model, a.l2, a.alpha, a.splits)
    with open(a.out, "wb") as f:
        f.write(r["state"])
    _, t, _ = client._model(os.path.abspath(a.model))
    fd = fleet_data(t.model.meta, a.splits)
    before = float(t.evaluate(fd.eval_x, fd.eval_y)[1])
    ev = Trainer(t.model)
    ev.load_state(r["state"])
    after = float(ev.evaluate(fd.eval_x, fd.eval_y)[1])
    print(json.dumps({"clients": r["clients"], "bytes_up_per_client": r["bytes_up"][0], "held_out_before": before,
                      "held_out_after": after, "state": a.out}))
    return 0
