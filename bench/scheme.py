"""Scheme-search benchmark: searched scheme vs "biases + classifier of the last k layers".

    python -m bench.scheme [--seeds 5] [--budgets 4.5K,6.5K,12K,18K,28K] [--jobs 2] [--out build/bench]
    python -m bench.scheme --time-only [--time-runs 3]

writes build/bench/scheme.json and build/bench/scheme.png; first (and with --time-only, only) it
times the whole verb as a user runs it, `edgetune scheme MODEL --budget 24K` with default options
and a fresh contribution cache (seed 0's model), and writes build/bench/scheme_time.json (wall
and CPU seconds per run, load average; the issue asks for under a minute). Uses the learning benchmark's cached
pre-trained small models (bench/learning.py builds them: build/bench/learning_models/
rotation_small_e30_sS/model.etm) and its adaptation protocol (k = 8 windows per class from the
shifted fit region, 10 passes, batch 1, seeded order), all int8 QAS with the bit-exact numpy twin.

Per seed: `edgetune.search` measures contributions on the fit (adapt) and fit-val (selection)
regions and picks a scheme per budget: "searched" = the DP's optimum of the additive
prediction, "searched+verify" = the best measured (selection split) of the 5 best predicted
(budget = training arena bytes, no board fixed cost). Baselines per budget, the largest k whose
arena fits: "baseline" = biases of the last k weight layers + the classifier (issue 7's
reference), "last-k-layers" = weights and biases of the last k layers + the classifier. Every
scheme is fine-tuned at each lr of the grid; the lr is chosen per method and
seed by selection accuracy; the reported accuracy is on the shifted **eval** region, which the
search never sees. Mean ± sample std over seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

from edgetune.twin import memory
from edgetune.learn import pretrain
from edgetune import search
from edgetune.format.modelfile import read_etm, write_etm
from edgetune.format.scheme import Scheme
from edgetune.twin.training import Trainer


def stats(v):
    v = np.asarray(v, np.float64)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "values": v.tolist()}


def finetune_eval(model, scheme: Scheme, d: search.SearchData, x_eval, y_eval, lr: float) -> tuple[float, float]:
    """(selection accuracy, eval accuracy) after fine-tuning `scheme` at `lr`."""
    tr = Trainer(write_etm(search.without_scheme(model)), scheme)
    for i in d.order:
        tr.step(d.x_adapt[i], int(d.y_adapt[i]), lr, True)
    return float(tr.evaluate(d.x_select, d.y_select)[1]), float(tr.evaluate(x_eval, y_eval)[1])


def _pool_eval(pool, model, s, d, x_eval, y_eval):
    """finetune_eval at every lr of the grid (on the worker pool when there is one)."""
    if pool is None:
        return [finetune_eval(model, s, d, x_eval, y_eval, lr) for lr in search.LR_GRID]
    return list(pool.map(finetune_eval, *zip(*[(model, s, d, x_eval, y_eval, lr) for lr in search.LR_GRID])))


def baseline(space: search.Space, budget: int) -> Scheme | None:
    """Biases of the last k weight layers + classifier, largest k that fits."""
    best = None
    for k in range(len(space.layers) + 1):
        s = Scheme.build(space.model, k + (1 if space.clf is not None else 0))
        if memory.training_arena(space.model, s) <= budget:
            best = s
    return best


def baseline_layers(space: search.Space, budget: int) -> Scheme | None:
    """Weights and biases of the last k weight layers (whole layers) + classifier, largest k
    that fits (TinyTL-style "fine-tune the last k layers")."""
    best = None
    n_clf = 1 if space.clf is not None else 0
    L = len(space.layers)
    for k in range(L + 1):
        s = Scheme.build(space.model, k + n_clf, {i: 1 for i in space.layers[L - k:]})
        if memory.training_arena(space.model, s) <= budget:
            best = s
    return best


METHODS = ("baseline", "last-k-layers", "searched", "searched+verify")


def time_cli(model_path: str, runs: int, budget: str = "24K") -> dict:
    """Wall and CPU (user + sys, the verb and its worker processes) seconds of `edgetune scheme
    MODEL --budget B` with default options and a fresh cache, `runs` times."""
    exe = os.path.join(os.path.dirname(sys.executable), "edgetune")
    cmd = [exe if os.path.exists(exe) else "edgetune", model_path, "--budget", budget]
    rows = []
    for _ in range(runs):
        out = tempfile.mkdtemp(prefix="scheme_time_")
        try:
            load = os.getloadavg()[0]
            r0 = os.times()
            t0 = time.perf_counter()
            subprocess.run([cmd[0], "scheme", *cmd[1:], "--out", out, "--no-progress"], check=True,
                           stdout=subprocess.DEVNULL)
            wall = time.perf_counter() - t0
            r1 = os.times()
            with open(os.path.join(out, "scheme.json")) as f:
                rep = json.load(f)
        finally:
            shutil.rmtree(out, ignore_errors=True)
        rows.append({"wall_s": round(wall, 2),
                     "cpu_s": round((r1.children_user - r0.children_user) + (r1.children_system - r0.children_system), 2),
                     "contributions_s": rep["contributions"]["seconds"], "runs": rep["contributions"]["runs"],
                     "load_avg_1min_before": round(load, 2)})
        print(f"edgetune scheme {os.path.basename(os.path.dirname(model_path))} --budget {budget}: "
              f"{rows[-1]['wall_s']} s wall, {rows[-1]['cpu_s']} s CPU ({rows[-1]['runs']} fine-tuning runs "
              f"in {rows[-1]['contributions_s']} s), load {load:.2f}", flush=True)
    walls = [r["wall_s"] for r in rows]
    return {"command": f"edgetune scheme {model_path} --budget {budget}", "cpus": os.cpu_count(), "runs": rows,
            "wall_s": stats(walls), "wall_s_min": min(walls), "wall_s_max": max(walls)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--budgets", default="4.5K,6.5K,12K,18K,28K",
                   help="training-arena budgets; the defaults bracket the baselines' prices at the current "
                        "arena layout (docs/scheme-search.md §6)")
    p.add_argument("--jobs", type=int, default=2, help="worker processes")
    p.add_argument("--criteria", default="l1,fisher")
    p.add_argument("--models", default="build/bench/learning_models")
    p.add_argument("--scenario", default="rotation")
    p.add_argument("--out", default="build/bench")
    p.add_argument("--verify", type=int, default=5, help="candidates fine-tuned by the verify step")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--time-runs", type=int, default=1, help="timed runs of the whole `edgetune scheme` verb")
    p.add_argument("--time-only", action="store_true", help="only time the verb (build/bench/scheme_time.json)")
    a = p.parse_args(argv)
    budgets = [search.parse_bytes(b) for b in a.budgets.split(",")]
    crits = tuple(a.criteria.split(","))
    os.makedirs(a.out, exist_ok=True)
    cache = os.path.join(a.out, "scheme_cache.json")
    if a.time_runs > 0 or a.time_only:
        path0 = os.path.join(a.models, f"{a.scenario}_small_e30_s0", "model.etm")
        if not os.path.exists(path0):
            print(f"{path0} missing: run python -m bench.learning first", file=sys.stderr)
            return 1
        timing = time_cli(path0, max(1, a.time_runs))
        with open(os.path.join(a.out, "scheme_time.json"), "w") as f:
            json.dump(timing, f, indent=1)
        if a.time_only:
            return 0
    rows: dict[str, dict[str, list]] = {}
    per_seed = []
    sc_cache = {}
    pool = None
    if a.jobs > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        pool = ProcessPoolExecutor(a.jobs, mp_context=multiprocessing.get_context("spawn"))
    for seed in range(a.seeds):
        path = os.path.join(a.models, f"{a.scenario}_small_e30_s{seed}", "model.etm")
        if not os.path.exists(path):
            print(f"{path} missing: run python -m bench.learning --seeds {a.seeds} first", file=sys.stderr)
            return 1
        with open(path, "rb") as f:
            model = read_etm(f.read())
        cfg = json.dumps(model.meta["split"], sort_keys=True)
        if cfg not in sc_cache:
            sc_cache[cfg] = pretrain.scenario_from_config(model.meta["split"])
        sc = sc_cache[cfg]
        d = search.load_data(model, "watch", a.scenario, k=8, epochs=10, seed=seed)
        s_in, z_in = model.meta["input_scale"], model.meta["input_zero_point"]
        x_eval = np.clip(np.round(sc.norm.apply(sc.shift_eval.x) / s_in) + z_in, -128, 127).astype(np.int8)
        y_eval = sc.shift_eval.y
        t0 = time.time()
        rep = search.search(model, d, budgets[0], 0, crits, None, cache, progress=not a.no_progress, jobs=a.jobs)
        t_search = time.time() - t0
        info = {"seed": seed, "search_seconds": round(t_search, 2), "contrib_runs": rep.contrib.runs,
                "contrib_cached": rep.contrib.cached, "lr_contrib": rep.contrib.lr,
                "contributions": rep.contrib.to_json(rep.space), "budgets": {}}
        for b in budgets:
            r = search.dp(rep.space, rep.pricer, rep.contrib, b, crits)
            ex = search.exhaustive(rep.space, rep.pricer, rep.contrib, b, crits)
            ev = search.evolution(rep.space, rep.pricer, rep.contrib, b, 300, seed, crits)
            rnd = search.random_search(rep.space, rep.pricer, rep.contrib, b, 300, seed, crits)
            runner = search.Runner(model, d, cache)
            vr, vrows = search.verify_top(rep.space, rep.pricer, rep.contrib, runner, b, a.verify, crits, a.jobs)
            runner.save()
            schemes = {"baseline": baseline(rep.space, b), "last-k-layers": baseline_layers(rep.space, b),
                       "searched": rep.space.scheme(r.cand), "searched+verify": rep.space.scheme(vr.cand)}
            bi = {"dp": r.cand.text(rep.space), "dp_pred": r.predicted, "exhaustive_pred": ex.predicted,
                  "evolution_pred": ev.predicted, "random_pred": rnd.predicted,
                  "evolution_evals": ev.evaluations, "random_evals": rnd.evaluations,
                  "verify": vrows, "verify_choice": vr.cand.text(rep.space)}
            for name, s in schemes.items():
                res = dict(zip(search.LR_GRID, _pool_eval(pool, model, s, d, x_eval, y_eval)))
                lr = max(search.LR_GRID, key=lambda v: (res[v][0], -v))
                arena = memory.training_arena(model, s)
                assert arena <= b, (name, arena, b)
                bi[name] = {"scheme": s.describe(), "arena": arena, "trainable": s.n_params(model), "lr": lr,
                            "select_acc": res[lr][0], "eval_acc": res[lr][1]}
                rows.setdefault(f"{b}", {}).setdefault(name, []).append(res[lr][1])
            pred_sel = r.predicted
            bi["additivity"] = {"predicted_select_acc": pred_sel,
                                "measured_select_acc_at_contrib_lr": finetune_eval(model, schemes["searched"], d,
                                                                                  x_eval, y_eval, rep.contrib.lr)[0]}
            info["budgets"][str(b)] = bi
            print(f"seed {seed} budget {b}: " + ", ".join(
                f"{n} {bi[n]['eval_acc']:.3f} ({bi[n]['scheme']}, {bi[n]['arena']} B)" for n in METHODS), flush=True)
        per_seed.append(info)
    summary = []
    for b in budgets:
        row = {"budget": b, "baseline": stats(rows[str(b)]["baseline"])}
        for name in METHODS[1:]:
            diff = np.asarray(rows[str(b)][name]) - np.asarray(rows[str(b)]["baseline"])
            row[name] = stats(rows[str(b)][name])
            row[f"{name} - baseline"] = stats(diff)
            row[f"{name} wins"] = bool(np.mean(diff) > 0)
            row[f"{name} wins by more than std of the difference"] = bool(np.mean(diff) > np.std(diff, ddof=1))
        summary.append(row)
    out = {"benchmark": "scheme", "scenario": a.scenario, "model": "small", "seeds": list(range(a.seeds)),
           "criteria": list(crits), "lr_grid": list(search.LR_GRID),
           "verify": a.verify,
           "protocol": "int8 QAS twin; 8 adapt windows/class x 10 passes; lr per method/seed by selection "
                       "(fit-val) accuracy; eval region reported; budget = training arena bytes",
           "summary": summary, "per_seed": per_seed,
           "search_seconds": stats([x["search_seconds"] for x in per_seed])}
    with open(os.path.join(a.out, "scheme.json"), "w") as f:
        json.dump(out, f, indent=1)
    plot(out, os.path.join(a.out, "scheme.png"))
    print("\neval accuracy, mean ± std over seeds (difference to the last-k-biases baseline)")
    print(f"{'budget':>7}  " + "  ".join(f"{n:<26}" for n in METHODS))
    for r in summary:
        print(f"{r['budget']:>7}  {r['baseline']['mean']:.3f} ± {r['baseline']['std']:.3f}              "
              + "  ".join(f"{r[n]['mean']:.3f} ± {r[n]['std']:.3f} ({r[n + ' - baseline']['mean']:+.3f} ± "
                          f"{r[n + ' - baseline']['std']:.3f})" for n in METHODS[1:]))
    print(f"search time per seed (contributions + search): {out['search_seconds']['mean']:.1f} s")
    return 0


def plot(out, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4))
    xs = np.arange(len(out["summary"]))
    for o, name, col in ((-0.3, "baseline", "#999"), (-0.1, "last-k-layers", "#ccc"), (0.1, "searched", "#4c72b0"),
                         (0.3, "searched+verify", "#dd8452")):
        ax.bar(xs + o, [r[name]["mean"] for r in out["summary"]], width=0.2,
               yerr=[r[name]["std"] for r in out["summary"]], capsize=4, color=col,
               label=name if name != "baseline" else "biases + classifier (last k)")
    ax.set_xticks(xs, [f"{r['budget']} B" for r in out["summary"]])
    ax.set_ylabel("eval accuracy (shifted, held out)")
    ax.set_ylim(0, 1)
    ax.set_title(f"{out['scenario']} shift, small model, {len(out['seeds'])} seeds, int8 QAS twin", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
