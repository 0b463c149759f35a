"""`edgetune scheme`: search a sparse-update scheme under an SRAM budget (docs/scheme-search.md).

    edgetune scheme MODEL.tflite|MODEL.etm [--data watch|SESSION.csv] [--scenario rotation]
                    --budget 96K [--board rp2040] [--out DIR] [--etm OUT.etm]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from ..convert.export import tflite_to_etm
from ..format.modelfile import EtmModel, read_etm, write_etm
from ..learn.pretrain import positive_float, positive_int
from ..outpaths import check_dir, check_file
from ..search.data import load_data
from ..search.pricing import Pricer, board_fixed
from ..search.report import plot, print_table
from ..search.run import check_budget, measure_actual, search
from ..search.space import CRITERIA, Space, parse_bytes


def load_model(path: str) -> EtmModel:
    """A .etm, or a .tflite (exported on the fly; metadata from MODEL.meta.json if present)."""
    with open(path, "rb") as f:
        blob = f.read()
    if path.endswith(".tflite"):
        meta = None
        mp = os.path.splitext(path)[0] + ".meta.json"
        if os.path.exists(mp):
            with open(mp) as f:
                meta = json.load(f)
        return tflite_to_etm(blob, meta)
    return read_etm(blob)


def cli(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="edgetune scheme",
                                description="Search a sparse-update scheme under an SRAM budget.")
    p.add_argument("model", help="MODEL.etm or MODEL.tflite (with MODEL.meta.json beside it)")
    p.add_argument("--data", default="watch", help="'watch' (the model's scenario) or a session CSV/NPZ")
    p.add_argument("--scenario", help="override the scenario name stored in the model's metadata")
    p.add_argument("--budget", help="bytes for the training arena + the board's fixed cost, e.g. 96K "
                                    "(default: the board's heap)")
    p.add_argument("--board", help="board config under boards/ (fixed costs and heap), e.g. rp2040")
    p.add_argument("--k", type=positive_int, default=8, help="adapt samples per class")
    p.add_argument("--epochs", type=positive_int, default=10, help="passes over the adapt samples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=positive_float, help="learning rate (default: best of 0.003/0.01/0.03 on the selection split)")
    p.add_argument("--criteria", default="l1,fisher", help="channel criteria to measure: l1, fisher or both")
    p.add_argument("--evaluations", type=positive_int, default=300, help="evaluations of evolution and random search")
    p.add_argument("--out", default="build/scheme", help="directory for scheme.json, scheme.png")
    p.add_argument("--cache", help="contribution cache (default OUT/cache.json)")
    p.add_argument("--etm", help="write the model with the chosen scheme to this .etm")
    p.add_argument("--verify", type=int, default=5, help="fine-tune the N best-predicted schemes and keep the "
                                                         "best measured one (0: the DP's choice as is)")
    p.add_argument("--jobs", type=positive_int, default=2, help="worker processes for the fine-tuning runs")
    p.add_argument("--no-measure", action="store_true", help="skip the additivity check run")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    try:
        model = load_model(a.model)
        fixed, heap, fsrc = board_fixed(a.board, model)
        if a.budget is None and heap is None:
            raise ValueError("give --budget or --board")
        budget = parse_bytes(a.budget) if a.budget else heap
        if heap is not None and budget > heap:
            print(f"edgetune scheme: note: budget {budget} B exceeds the {a.board} heap ({heap} B); using the heap",
                  file=sys.stderr)
            budget = heap
        crits = tuple(c for c in a.criteria.replace("+", ",").split(",") if c)
        if not crits or any(c not in CRITERIA for c in crits):
            raise ValueError(f"--criteria must name some of {CRITERIA}")
        check_dir(a.out, "--out directory")
        if a.etm:
            check_file(a.etm, "--etm")
        space = Space.of(model)
        check_budget(space, Pricer(space, fixed), budget)
        t0 = time.time()
        d = load_data(model, a.data, a.scenario, a.k, a.epochs, a.seed)
        rep = search(model, d, budget, fixed, crits, a.lr, a.cache or os.path.join(a.out, "cache.json"),
                     a.evaluations, a.seed, not a.no_progress, verify=a.verify, jobs=a.jobs)
        rep.extra["fixed_cost_source"] = fsrc
        rep.extra["data"] = d.source
        if not a.no_measure:
            rep.extra["additivity"] = measure_actual(rep, model, d, a.cache or os.path.join(a.out, "cache.json"))
        rep.extra["seconds"] = round(time.time() - t0, 2)
        os.makedirs(a.out, exist_ok=True)
        print_table(rep)
        if "additivity" in rep.extra and rep.extra["additivity"]:
            ad = rep.extra["additivity"]
            for name in ("dp", "chosen"):
                x = ad[name]
                print(f"  additivity ({name}): predicted gain {x['predicted_gain']:+.3f}, measured "
                      f"{x['actual_gain']:+.3f} (selection accuracy {x['predicted_acc']:.3f} predicted, "
                      f"{x['actual_acc']:.3f} measured)  {x['scheme']}")
        with open(os.path.join(a.out, "scheme.json"), "w") as f:
            json.dump(rep.to_json(), f, indent=1)
        plot(rep, os.path.join(a.out, "scheme.png"))
        rep.scheme()  # ValueError when nothing fits (after the table and JSON are written)
        if a.etm:
            s = rep.scheme()
            model.scheme = s.encode()
            with open(a.etm, "wb") as f:
                f.write(write_etm(model))
            print(f"{a.etm}: scheme {s.describe()}")
        print(f"wrote {os.path.join(a.out, 'scheme.json')} and scheme.png ({rep.extra['seconds']} s)")
    except (OSError, ValueError) as e:
        print(f"edgetune scheme: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    return 0
