"""The device's default recipe in the learning benchmark (build/bench/adapt.json; bench/learning.py
runs it, docs/data.md §7-8): firmware/recipe.py on the numpy twin (calibrate -> refit -> SGD
with rollback -> guard) and its parts on rotation, side, subject, random_rotation and
subject_all, paired against no adaptation."""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import numpy as np

from edgetune.learn import data

from bench.learning_seed import paired, prepare_seed, stats

ADAPT_SCENARIOS = ("rotation", "side", "subject", "random_rotation", "subject_all")
RANDOM_ROTATION_SEED0 = 1000  # random_rotation, seed s: the mounting data.random_rotation(1000 + s)
# name -> recipe switches (firmware/recipe.py run() through host/edgetune/learn/recipe.py, numpy twin)
RECIPE_ROWS = {
    "default_recipe": {"calibrate": True, "refit": True, "sgd": True, "guard": True, "refit_all": True},
    "recipe_no_refit_all": {"calibrate": True, "refit": True, "sgd": True, "guard": True},
    "calibrate_only": {"calibrate": True, "refit": False, "sgd": False, "guard": False},
    "refit_only": {"calibrate": False, "refit": True, "sgd": False, "guard": False},
    "calibrate_refit": {"calibrate": True, "refit": True, "sgd": False, "guard": False},
    "calibrate_refit_guard": {"calibrate": True, "refit": True, "sgd": False, "guard": True},
    "sgd_rollback": {"calibrate": False, "refit": False, "sgd": True, "guard": False},
    "sgd_rollback_guard": {"calibrate": False, "refit": False, "sgd": True, "guard": True},
}


def adapt_base(name: str) -> str:
    """The pre-training scenario (same source domain, same cached models) of an adapt scenario."""
    return {"random_rotation": "rotation", "subject_all": "subject"}.get(name, name)


def device_order(w: data.Windows, idx: np.ndarray) -> np.ndarray:
    """idx reordered as the device would have collected the windows: by time inside the
    recordings (start sample, then recording), so per class the last ones are the latest."""
    idx = np.asarray(idx)
    return idx[np.lexsort((w.rec[idx], w.start[idx]))]


def raw_quant(x: np.ndarray, meta: dict[str, Any], frame_rt: tuple[Any, bool] | None = None) -> np.ndarray:
    """The device's input path: raw windows (N, T, 6) -> (the model's frame applied) ->
    quantize_input with the folded raw_input_quant (what m.quantize does), flattened (N, T*6)."""
    from edgetune.twin.quantize_input import quantize_input

    riq = meta["raw_input_quant"]
    if frame_rt is not None:
        from edgetune.twin import frame

        x = frame.apply_frame(x, frame_rt[0], frame_rt[1], x.shape[-1])
    return quantize_input(x, riq["scale"], riq["zero_point"]).reshape(len(x), -1)


def _recipe_job(buf: bytes, meta: dict[str, Any], stats: Any, fit: tuple[np.ndarray, np.ndarray],
                evals: list[tuple[np.ndarray, np.ndarray]], row: dict[str, bool], seed: int) -> dict[str, Any]:
    """One recipe run on the numpy twin: the check-set split of firmware/recipe.py over the
    windows in device order, the recipe, then accuracy on each (raw x, y) of `evals` through the
    device's input path with the model's frame. Top level for worker processes."""
    from edgetune.learn import recipe

    x_raw, y = fit
    xq = raw_quant(x_raw, meta)
    tr, ck = recipe.split([int(v) for v in y], recipe.HOLDOUT, recipe.gap_windows(meta["window"], meta["step"]))
    m = recipe.TwinModel(buf, stats=stats, meta=meta)
    xs, ys = [xq[i] for i in tr], [int(y[i]) for i in tr]
    cxs, cys = [xq[i] for i in ck], [int(y[i]) for i in ck]
    ev = recipe.Events()
    cal = m.calibrate_hook(xs, ys, cxs, list(xq), [int(v) for v in y]) if row["calibrate"] else None
    ref = recipe.device.hook(m, "refit", row["refit"], xs, ys)
    ref_all = recipe.device.hook(m, "refit", row.get("refit_all", False), list(xq), [int(v) for v in y])
    steps, kept = recipe.run(m, xs, ys, cxs, cys, calibrate=cal, refit=ref,
                             sgd_epochs=recipe.EPOCHS if row["sgd"] else 0, lr=recipe.LR, seed=seed,
                             guard=row["guard"], emit=ev, acc_margin=row.get("acc_margin", recipe.ACC_MARGIN),
                             loss_margin=row.get("loss_margin", recipe.LOSS_MARGIN), refit_all=ref_all)
    ref_all = None
    accs = [m.accuracy(raw_quant(x, meta, m.frame_rt()), yy) for x, yy in evals]
    return {"accs": accs, "kept": kept, "n_train": len(ys), "n_check": len(cys),
            "steps": [(name, None if r is None else [float(r[0]), float(r[1])]) for name, r in steps],
            "skipped": [e["stage"] for e in ev.rows if e["ev"] == "recipe" and "skipped" in e],
            "chosen_frame": next((e.get("chosen") for e in ev.rows if e.get("stage") == "calibrate"), None)}


def paired_stats(a: list[float], b: list[float]) -> dict[str, Any]:
    d = np.asarray(a) - np.asarray(b)
    return {"mean": float(d.mean()), "min": float(d.min()), "max": float(d.max()), "values": [float(v) for v in d]}


def adapt_scenario(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """no adaptation and RECIPE_ROWS on one adapt scenario, int8 numpy twin, args.seeds seeds."""
    import concurrent.futures
    import multiprocessing

    from edgetune.twin import frame
    from edgetune.learn import pretrain
    from edgetune.twin.reference import forward_batch
    from edgetune.format.modelfile import read_etm

    base = adapt_base(name)
    cfg = pretrain.scenario_config({"scenario": base})
    sc0 = pretrain.scenario_from_config(cfg)
    t0 = time.time()
    jobs, seeds_info, none_acc, none_val = [], [], [], []
    rows = [r for r in args.recipe_rows]
    for seed in range(args.seed0, args.seed0 + args.seeds):
        run = prepare_seed(sc0, cfg, args, seed)
        sc = sc0
        if name == "random_rotation":
            sc = pretrain.scenario_from_config(pretrain.scenario_config(
                {"scenario": "rotation", "rotation_seed": RANDOM_ROTATION_SEED0 + seed}))
        idx = np.arange(len(sc.shift_fit)) if name == "subject_all" else run.fit_idx
        idx = device_order(sc.shift_fit, idx)
        with open(run.etm_path, "rb") as f:
            buf = f.read()
        em = read_etm(buf)
        fstats = frame.stats_sets(frame.frame_metadata(sc0))  # what the export stores, the sets the device tries
        evals = [(sc.shift_val.x, sc.shift_val.y), (sc.shift_eval.x, sc.shift_eval.y)]
        accs = []
        for x, yy in evals:
            q = raw_quant(x, run.meta)
            logits = forward_batch(em, q.reshape((len(q),) + tuple(em.input_tensor.shape[1:]))).reshape(len(q), -1)
            accs.append(float(np.mean(np.argmax(logits, 1) == yy)))
        none_val.append(accs[0])
        none_acc.append(accs[1])
        seeds_info.append({"seed": seed, "n_fit": int(len(idx)),
                           "rotation": sc.info.get("rotation") if name.endswith("rotation") else None})
        for r in rows:
            sw = dict(RECIPE_ROWS[r])
            if args.acc_margin is not None:  # guard-margin studies (choose on the val column, not eval)
                sw["acc_margin"] = args.acc_margin
            if args.loss_margin is not None:
                sw["loss_margin"] = args.loss_margin
            jobs.append(((name, r, seed), (buf, run.meta, fstats, (sc.shift_fit.x[idx], sc.shift_fit.y[idx]), evals,
                                           sw, seed)))
    res: dict[tuple[str, str, int], dict[str, Any]] = {}
    from tqdm import tqdm

    bar = tqdm(total=len(jobs), desc=f"{name}: recipe runs", unit="run", disable=args.no_progress)
    if args.jobs > 1:
        with concurrent.futures.ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as ex:
            futs = {ex.submit(_recipe_job, *a): k for k, a in jobs}
            for fut in concurrent.futures.as_completed(futs):
                res[futs[fut]] = fut.result()
                bar.update()
    else:
        for k, a in jobs:
            res[k] = _recipe_job(*a)
            bar.update()
    bar.close()
    seeds = list(range(args.seed0, args.seed0 + args.seeds))
    out: dict[str, Any] = {
        "base_scenario": base, "seeds": seeds_info,
        "no_adaptation": {**stats(none_acc), "val": stats(none_val)},
    }
    for r in rows:
        per = [res[(name, r, s)] for s in seeds]
        acc = [p["accs"][1] for p in per]
        out[r] = {**stats(acc), "val": stats([p["accs"][0] for p in per]), "switches": RECIPE_ROWS[r],
                  "kept": [p["kept"] for p in per], "n_train": per[0]["n_train"], "n_check": per[0]["n_check"],
                  "check_steps": [p["steps"] for p in per], "skipped": per[0]["skipped"],
                  "chosen_frame": [p["chosen_frame"] for p in per]}
        out[f"paired_{'recipe' if r == 'default_recipe' else r}_minus_none"] = paired_stats(acc, none_acc)
    if args.spot_check:
        out["spot_check_c_module"] = spot_check(name, args, sc0, cfg)
    out["seconds"] = round(time.time() - t0, 1)
    return out


def spot_check(name: str, args: argparse.Namespace, sc0: data.Scenario, cfg: dict[str, Any]) -> dict[str, Any]:
    """The first seed's recipe without the frame step (refit -> SGD -> guard -> refit_all) on the
    unix-port MicroPython with the C module vs the numpy twin, on the scenario's own windows:
    the same events and the same final trained-weights bytes? (The frame fit's C = twin is
    tests/unix/test_frame.py / test_app_calibrate.py.)"""
    import tempfile

    from edgetune.learn import recipe

    seed = args.seed0
    run = prepare_seed(sc0, cfg, args, seed)
    sc = sc0
    if name == "random_rotation":
        from edgetune.learn import pretrain

        sc = pretrain.scenario_from_config(pretrain.scenario_config(
            {"scenario": "rotation", "rotation_seed": RANDOM_ROTATION_SEED0 + seed}))
    idx = device_order(sc.shift_fit, np.arange(len(sc.shift_fit)) if name == "subject_all" else run.fit_idx)
    xq = raw_quant(sc.shift_fit.x[idx], run.meta)
    y = [int(v) for v in sc.shift_fit.y[idx]]
    tr, ck = recipe.split(y, recipe.HOLDOUT, recipe.gap_windows(run.meta["window"], run.meta["step"]))
    with open(run.etm_path, "rb") as f:
        buf = f.read()
    kw = {"sgd_epochs": recipe.EPOCHS, "lr": recipe.LR, "seed": seed}
    ys = np.asarray(y)
    ev_t, st_t, _ = recipe.twin_run(buf, xq[tr], ys[tr], xq[ck], ys[ck], **kw)
    with tempfile.TemporaryDirectory() as d:
        ev_c, st_c = recipe.device_run(buf, xq[tr], ys[tr], xq[ck], ys[ck], d, **kw)
    same_events = [(r["ev"], r.get("stage"), r.get("kept")) for r in ev_c] == \
        [(r["ev"], r.get("stage"), r.get("kept")) for r in ev_t]
    return {"seed": seed, "equal_weights": st_c == st_t, "same_events": same_events, "events": len(ev_t)}


def run_adapt(args: argparse.Namespace, names: tuple[str, ...]) -> dict[str, Any]:
    from edgetune.learn import recipe

    res = {"benchmark": "adapt", "precision": "int8 on-device arithmetic (numpy twin, bit-exact with the C module)",
           "recipe": {"holdout": recipe.HOLDOUT, "acc_margin": recipe.ACC_MARGIN, "loss_margin": recipe.LOSS_MARGIN,
                      "patience": recipe.PATIENCE, "epochs": recipe.EPOCHS, "lr": recipe.LR,
                      "check_set": "per class the last 1 in holdout windows in device order (time inside the "
                                   "recordings), the window before them dropped (firmware/recipe.py split)",
                      "random_rotation": f"data.random_rotation({RANDOM_ROTATION_SEED0} + seed)"},
           "k_per_class": args.k, "scenarios": {}}
    for n in names:
        res["scenarios"][n] = adapt_scenario(n, args)
        with open(os.path.join(args.out, "adapt.json"), "w") as f:
            json.dump(res, f, indent=1)
    return res


def print_adapt(res: dict[str, Any]) -> None:
    for n, sc in res["scenarios"].items():
        print(f"\n{n} (int8 twin, {len(sc['seeds'])} seeds): no adaptation {sc['no_adaptation']['mean']:.3f}")
        if "spot_check_c_module" in sc:
            print(f"  C module spot check (seed {sc['spot_check_c_module']['seed']}): {sc['spot_check_c_module']}")
        for k, v in sc.items():
            if isinstance(v, dict) and "switches" in v:
                p = sc.get(f"paired_{'recipe' if k == 'default_recipe' else k}_minus_none", {})
                print(f"  {k:<24} {v['mean']:.3f}  paired {100 * p.get('mean', 0):+5.1f} pp (min {100 * p.get('min', 0):+.1f})"
                      f"  kept {sum(v['kept'])}/{len(v['kept'])}" + (f"  skipped {v['skipped']}" if v['skipped'] else ""))
