"""Learning-quality benchmark: personalization on a shifted domain of the real watch data.

    python -m bench.learning [--scenario rotation] [--seeds 5] [--out build/bench]

writes build/bench/learning.json and build/bench/learning.png. For every seed it pre-trains a
model of the zoo on the scenario's source domain (cached under OUT/learning_models/), quantizes
it (int8 PTQ) and exports the .etm, then adapts to the shifted domain:

- no adaptation (fp32 Keras model, and the int8 .etm through the numpy forward twin);
- fp32 fine-tuning in TensorFlow of a scheme: classifier only / biases + classifier /
  sparse (biases of all layers + classifier + half the output channels of the last conv,
  channels picked by the device's l1 criterion on the int8 weights, docs/training.md §1) /
  full (every weight, a reference ceiling);
- int8 on-device fine-tuning of the same schemes (classifier / biases + classifier / sparse) with
  the numpy training twin (host/edgetune/twin/training.py, bit-exact with the C module): QAS and plain
  int8 SGD, each with its own lr grid (LR_GRID_QAS, LR_GRID_SGD), plus QAS with momentum 0.9 for
  biases + classifier (`--no-momentum-row` drops it). `--jobs` worker processes (default 2).

With the recipe rows (default; `--adapt-only` for only them) it also writes build/bench/adapt.json:
the device's default recipe (firmware/recipe.py on the numpy twin: calibrate -> refit -> SGD with
rollback -> guard) and its parts on rotation, side, subject, random_rotation (seeded random
mountings) and subject_all (every fit window), paired against no adaptation (docs/data.md §7-8).

Same adaptation samples (k per class from the shifted domain's fit region, drawn with the
seed), same number of steps (`--adapt-epochs` passes over them), batch 1 (one sample per step,
as on the device), plain SGD without momentum, sample order drawn with the seed. The learning
rate of each row is picked from its grid by the mean accuracy over seeds on the fit-val region
(never trained on); accuracies are reported on the eval region (disjoint in time from both).
The int8 rows train on the same windows quantized with the model's input quantization.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # the converter's C++ logging drowns the table

from edgetune.learn import data  # noqa: E402

from bench.learning_recipe import ADAPT_SCENARIOS, RECIPE_ROWS, print_adapt, run_adapt  # noqa: E402
from bench.learning_seed import SCHEMES, SeedRun, paired, prepare_seed, stats  # noqa: E402

LR_GRID = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1)
# int8 grids: QAS updates in real units like fp32 SGD (same grid as fp32); plain int8 SGD's real-unit
# step is lr * s^2 * dL/dw (s = the weight's scale, 1.4e-3..7.9e-3 in the small models, or the
# bias's s_x * s_w, 1.9e-4..8e-4), so its useful rates are 1e4-1e7 times larger: a wide grid.
LR_GRID_QAS = LR_GRID
LR_GRID_SGD = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1e3, 3e3, 1e4, 1e5)
# momentum 0.9 multiplies the long-run step by 10: the QAS grid shifted down by ~10x
LR_GRID_MOMENTUM = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2)


def keras_weight_layers(model: Any) -> list[Any]:
    return [ly for ly in model.layers if any(w.path.endswith("kernel") for w in ly.weights)]


def l1_channels(etm_path: str, weight_layer: int, ratio_den: int) -> list[int]:
    """The device's channel choice (docs/training.md §1): largest sum |w_q|, ties to the lower index."""
    from edgetune.format.modelfile import NONE, OP_DEPTHWISE_CONV_2D, read_etm

    with open(etm_path, "rb") as f:
        em = read_etm(f.read())
    wl = [ly for ly in em.layers if ly.weight != NONE]
    ly = wl[weight_layer]
    w = em.tensors[ly.weight].data.astype(np.int64)
    per = np.abs(w).reshape(-1, w.shape[-1]).sum(0) if ly.op == OP_DEPTHWISE_CONV_2D else np.abs(w).reshape(w.shape[0], -1).sum(1)
    n_sel = max(1, len(per) // ratio_den)
    picked = sorted(range(len(per)), key=lambda c: (-per[c], c))[:n_sel]
    return sorted(picked)


def scheme_masks(model: Any, scheme: str, etm_path: str) -> tuple[list[np.ndarray], int, dict[str, Any]]:
    """Per trainable variable a 0/1 mask (same shape), the trainable count and a description."""
    wls = keras_weight_layers(model)
    last_conv = max(i for i, ly in enumerate(wls) if ly is not wls[-1])
    masks, desc = [], {"layers": {}}
    for v in model.trainable_variables:
        lname = v.path.split("/")[0]
        li = [ly.name for ly in wls].index(lname)
        is_bias = v.path.endswith("bias")
        m = np.zeros(v.shape, np.float32)
        if scheme == "full" or li == len(wls) - 1:
            m[...] = 1
        elif scheme in ("bias+classifier", "sparse") and is_bias:
            m[...] = 1
        elif scheme == "sparse" and li == last_conv and not is_bias:
            ch = l1_channels(etm_path, li, 2)
            m[..., ch] = 1  # Keras kernels keep the output channel last
            desc["sparse_layer"], desc["sparse_channels"] = lname, ch
        elif scheme not in SCHEMES:
            raise ValueError(f"unknown scheme {scheme!r}")
        masks.append(m)
        if m.any():
            desc["layers"].setdefault(lname, []).append(f"{'bias' if is_bias else 'kernel'}:{int(m.sum())}")
    return masks, int(sum(m.sum() for m in masks)), desc


# ----------------------------------------------------------------------------- fp32 fine-tuning


class FloatTuner:
    """SGD (batch 1, no momentum) on a Keras model with per-variable gradient masks, in one tf.function."""

    def __init__(self, model: Any):
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()  # same numbers whether or not pretraining ran here
        self.tf, self.model = tf, model
        self.w0 = [np.array(w) for w in model.get_weights()]
        self.masks = [tf.Variable(np.zeros(v.shape, np.float32), trainable=False) for v in model.trainable_variables]
        import keras

        loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

        @tf.function(reduce_retracing=True)
        def run(x, y, order, lr):
            for i in tf.range(tf.shape(order)[0]):
                j = order[i]
                with tf.GradientTape() as tape:
                    loss = loss_fn(y[j:j + 1], model(x[j:j + 1], training=True))
                grads = tape.gradient(loss, model.trainable_variables)
                for v, g, m in zip(model.trainable_variables, grads, self.masks):
                    v.assign_sub(lr * g * m)
            return loss

        self._run = run

    def tune(self, masks: list[np.ndarray], x: np.ndarray, y: np.ndarray, order: np.ndarray, lr: float) -> None:
        tf = self.tf
        self.model.set_weights(self.w0)
        for var, m in zip(self.masks, masks):
            var.assign(m)
        self._run(tf.constant(x), tf.constant(y.astype(np.int32)), tf.constant(order.astype(np.int32)), tf.constant(lr, tf.float32))

    def accuracy(self, x: np.ndarray, y: np.ndarray) -> float:
        logits = self.model(x, training=False)
        return float(np.mean(np.argmax(np.asarray(logits), 1) == y))


# ----------------------------------------------------------------------------- int8 on-device rows


def _int8_run(buf: bytes, entries: list[tuple[int, bool, list[int]]], xf: np.ndarray, yf: np.ndarray,
              order: np.ndarray, lr: float, qas: bool, momentum: float,
              evals: list[tuple[np.ndarray, np.ndarray]]) -> list[float]:
    """One int8 fine-tune with the numpy training twin (bit-exact with the C module): a fresh
    Trainer on the .etm with the scheme `entries`, one `step` per element of `order`, then the
    accuracy (`Trainer.evaluate`) on each (x, y) of `evals`. Top level so worker processes can run it."""
    from edgetune.format.scheme import Entry, Scheme
    from edgetune.twin.training import Trainer

    tr = Trainer(buf, Scheme(tuple(Entry(i, b, tuple(ch)) for i, b, ch in entries)), momentum=momentum)
    for j in order:
        tr.step(xf[j], int(yf[j]), lr, qas)
    return [float(tr.evaluate(x, y)[1]) for x, y in evals]


def int8_modes(args: argparse.Namespace) -> list[tuple[str, tuple[str, ...], bool, float, tuple[float, ...]]]:
    """(precision label, schemes, qas, momentum, lr grid) of every int8 row family."""
    modes = [("int8 QAS (numpy twin)", SCHEMES[:3], True, 0.0, args.lrs_qas),
             ("int8 SGD (numpy twin)", SCHEMES[:3], False, 0.0, args.lrs_sgd)]
    if args.momentum_row:
        modes.append(("int8 QAS + momentum 0.9 (numpy twin)", ("bias+classifier",), True, 0.9, args.lrs_momentum))
    return modes


def int8_rows(sc: data.Scenario, runs: list[SeedRun], args: argparse.Namespace) -> list[dict[str, Any]]:
    """int8 on-device fine-tuning of SCHEMES[:3] with the numpy training twin
    (host/edgetune/twin/training.py), QAS and plain int8 SGD (+ QAS with momentum 0.9 for
    bias+classifier): same samples, step order and step count as the fp32 rows; the lr of each
    row is chosen from its grid by the mean fit-val accuracy over seeds, as for fp32.
    Runs on `args.jobs` spawned worker processes (the parent has TensorFlow loaded)."""
    import concurrent.futures
    import multiprocessing

    if not args.int8:
        return []
    modes = int8_modes(args)
    per_seed = []
    for r in runs:
        with open(r.etm_path, "rb") as f:
            buf = f.read()
        per_seed.append({
            "buf": buf, "xf": int8_windows(sc, sc.shift_fit.take(r.fit_idx), r.meta), "yf": sc.shift_fit.y[r.fit_idx],
            "evals": [(int8_windows(sc, sc.shift_val, r.meta), sc.shift_val.y),
                      (int8_windows(sc, sc.shift_eval, r.meta), sc.shift_eval.y)],
            "entries": {s: etm_scheme(r.etm_path, s) for s in SCHEMES[:3]}})
    jobs = [(mode, s, lr, k) for mode, schemes, _, _, lrs in modes for s in schemes for lr in lrs for k in range(len(runs))]
    spec = {m[0]: m for m in modes}

    def submit(ex: Any, job: tuple[str, str, float, int]) -> Any:
        mode, s, lr, k = job
        ps, r = per_seed[k], runs[k]
        args_ = (ps["buf"], ps["entries"][s], ps["xf"], ps["yf"], r.order, lr, spec[mode][2], spec[mode][3], ps["evals"])
        return ex.submit(_int8_run, *args_) if ex is not None else _int8_run(*args_)

    t0 = time.time()
    res: dict[tuple[str, str, float, int], list[float]] = {}
    if args.jobs > 1:
        with concurrent.futures.ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as ex:
            futs = {submit(ex, j): j for j in jobs}
            for n, fut in enumerate(concurrent.futures.as_completed(futs), 1):
                res[futs[fut]] = fut.result()
                if n % 25 == 0 or n == len(jobs):
                    print(f"  int8: {n}/{len(jobs)} fine-tunes ({time.time() - t0:.0f} s)", flush=True)
    else:
        for n, j in enumerate(jobs, 1):
            res[j] = submit(None, j)
            if n % 25 == 0 or n == len(jobs):
                print(f"  int8: {n}/{len(jobs)} fine-tunes ({time.time() - t0:.0f} s)", flush=True)
    from edgetune.format.modelfile import read_etm
    from edgetune.format.scheme import Entry, Scheme

    em = read_etm(per_seed[0]["buf"])
    rows = []
    for mode, schemes, qas, mom, lrs in modes:
        for s in schemes:
            val = {lr: [res[(mode, s, lr, k)][0] for k in range(len(runs))] for lr in lrs}
            ev = {lr: [res[(mode, s, lr, k)][1] for k in range(len(runs))] for lr in lrs}
            best = max(lrs, key=lambda lr: (np.mean(val[lr]), -lr))
            sch = Scheme(tuple(Entry(i, b, tuple(ch)) for i, b, ch in per_seed[0]["entries"][s]))
            rows.append({
                "name": s, "precision": mode, "lr": best, "qas": qas, "momentum": mom,
                "lr_at_grid_edge": best in (min(lrs), max(lrs)),
                "accuracy": stats(ev[best]), "val_accuracy": stats(val[best]),
                "lr_grid": {f"{lr:g}": {"val_mean": float(np.mean(val[lr])), "eval_mean": float(np.mean(ev[lr]))}
                            for lr in lrs},
                "trainable_params": sch.n_params(em), "scheme_seed0": sch.describe(),
            })
            print(f"  {s:<16} {mode:<38} lr {best:g}: " + " ".join(f"{lr:g}:{np.mean(ev[lr]):.3f}" for lr in lrs),
                  flush=True)
    return rows


def etm_scheme(etm_path: str, scheme: str) -> list[tuple[int, bool, list[int]]]:
    """A scheme of SCHEMES[:3] as docs/training.md §1 entries over the .etm's layers:
    (layer index, train bias, selected weight channels; [] = weights frozen). Same parameters
    as `scheme_masks` trains in TensorFlow."""
    from edgetune.format.modelfile import NONE, OP_FULLY_CONNECTED, read_etm

    with open(etm_path, "rb") as f:
        em = read_etm(f.read())
    wl = [i for i, ly in enumerate(em.layers) if ly.weight != NONE]
    cls = wl[-1]
    assert em.layers[cls].op == OP_FULLY_CONNECTED
    entries = []
    for k, i in enumerate(wl):
        has_bias = em.layers[i].bias != NONE
        if i == cls:
            entries.append((i, has_bias, list(range(em.tensors[em.layers[i].weight].shape[0]))))
        elif scheme in ("bias+classifier", "sparse"):
            ch = l1_channels(etm_path, k, 2) if scheme == "sparse" and k == len(wl) - 2 else []
            if has_bias or ch:
                entries.append((i, has_bias, ch))
        elif scheme != "classifier":
            raise ValueError(f"no int8 scheme {scheme!r}")
    return entries


def int8_windows(sc: data.Scenario, w: data.Windows, meta: dict[str, Any]) -> np.ndarray:
    from edgetune.twin.quantize_input import quantize_normalized

    return quantize_normalized(sc.norm.apply(w.x), meta["input_scale"], meta["input_zero_point"])


# ----------------------------------------------------------------------------- the benchmark


def tune_rows(sc: data.Scenario, runs: list[SeedRun], args: argparse.Namespace) -> list[dict[str, Any]]:
    import keras

    xv, yv = sc.norm.apply(sc.shift_val.x), sc.shift_val.y
    xe, ye = sc.norm.apply(sc.shift_eval.x), sc.shift_eval.y
    xs_fit = sc.norm.apply(sc.shift_fit.x)
    # res[scheme][lr] = list over seeds of (val acc, eval acc)
    res: dict[str, dict[float, list[tuple[float, float]]]] = {s: {lr: [] for lr in args.lrs} for s in args.schemes}
    info: dict[str, Any] = {}
    for r in runs:
        model = keras.models.load_model(os.path.join(r.run_dir, "model.keras"), compile=False)
        tuner = FloatTuner(model)
        x, y = xs_fit[r.fit_idx], sc.shift_fit.y[r.fit_idx]
        for s in args.schemes:
            masks, n_train, desc = scheme_masks(model, s, r.etm_path)
            info.setdefault(s, {"trainable_params": n_train, **desc})
            for lr in args.lrs:
                tuner.tune(masks, x, y, r.order, lr)
                res[s][lr].append((tuner.accuracy(xv, yv), tuner.accuracy(xe, ye)))
            print(f"  seed {r.seed} {s:<16} " + " ".join(f"{lr:g}:{res[s][lr][-1][1]:.3f}" for lr in args.lrs), flush=True)
    rows = []
    for s in args.schemes:
        best = max(args.lrs, key=lambda lr: (np.mean([v for v, _ in res[s][lr]]), -lr))
        rows.append({
            "name": s, "precision": "fp32 (TensorFlow)", "lr": best,
            "accuracy": stats([e for _, e in res[s][best]]),
            "val_accuracy": stats([v for v, _ in res[s][best]]),
            "lr_grid": {f"{lr:g}": {"val_mean": float(np.mean([v for v, _ in res[s][lr]])),
                                    "eval_mean": float(np.mean([e for _, e in res[s][lr]]))} for lr in args.lrs},
            **info[s],
        })
    return rows


def no_adaptation_rows(sc: data.Scenario, runs: list[SeedRun]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    import keras

    from edgetune.twin import reference
    from edgetune.format.modelfile import read_etm

    fp, i8, src = [], [], []
    for r in runs:
        m = keras.models.load_model(os.path.join(r.run_dir, "model.keras"), compile=False)
        fp.append(float(np.mean(np.argmax(np.asarray(m(sc.norm.apply(sc.shift_eval.x))), 1) == sc.shift_eval.y)))
        src.append(float(np.mean(np.argmax(np.asarray(m(sc.norm.apply(sc.test.x))), 1) == sc.test.y)))
        with open(r.etm_path, "rb") as f:
            em = read_etm(f.read())
        q = reference.forward_batch(em, int8_windows(sc, sc.shift_eval, r.meta)).reshape(len(sc.shift_eval), -1)
        i8.append(float(np.mean(np.argmax(q, 1) == sc.shift_eval.y)))
    rows = [{"name": "no adaptation", "precision": "fp32 (TensorFlow)", "accuracy": stats(fp)},
            {"name": "no adaptation", "precision": "int8 (.etm, numpy forward twin)", "accuracy": stats(i8)}]
    return rows, {"source_test_accuracy": stats(src)}


def run_scenario(name: str, args: argparse.Namespace) -> dict[str, Any]:
    from edgetune.learn import pretrain

    cfg = pretrain.scenario_config({"scenario": name})
    sc = pretrain.scenario_from_config(cfg)
    t0 = time.time()
    runs = [prepare_seed(sc, cfg, args, s) for s in range(args.seed0, args.seed0 + args.seeds)]
    print(f"{name}: models ready ({time.time() - t0:.0f} s)", flush=True)
    rows, extra = no_adaptation_rows(sc, runs)
    rows += tune_rows(sc, runs, args)
    rows += int8_rows(sc, runs, args)
    return {
        "scenario": name, "split": sc.info, "variant": args.variant, "pretrain_epochs": args.epochs,
        "seeds": [r.seed for r in runs], **extra,
        "adapt": {"k_per_class": args.k, "n_fit": int(len(runs[0].fit_idx)), "steps": int(len(runs[0].order)),
                  "batch": 1, "optimizer": "SGD, no momentum (except the momentum 0.9 row), constant lr",
                  "lr_grid": list(args.lrs), "lr_grid_int8_qas": list(args.lrs_qas),
                  "lr_grid_int8_sgd": list(args.lrs_sgd),
                  "lr_grid_int8_qas_momentum": list(args.lrs_momentum),
                  "lr_choice": "max mean accuracy over seeds on shift_val (fit-val region)",
                  "n_val": len(sc.shift_val), "n_eval": len(sc.shift_eval)},
        "rows": rows, "paired_differences": paired(rows), "seconds": round(time.time() - t0, 1),
    }


PREC_STYLE = (  # (precision prefix, legend label, colour), in bar order within a scheme group
    ("fp32", "fp32 (TensorFlow)", "#4c72b0"),
    ("int8 (", "int8 .etm (numpy forward)", "#8c8c8c"),
    ("int8 QAS +", "int8 QAS + momentum 0.9", "#55a868"),
    ("int8 QAS", "int8 QAS", "#dd8452"),
    ("int8 SGD", "int8 plain SGD", "#c44e52"),
)


def _style(precision: str) -> tuple[int, str, str]:
    order = (0, 1, 4, 2, 3)  # bars: fp32, int8 forward, QAS, SGD, QAS + momentum
    for k, (prefix, label, colour) in enumerate(PREC_STYLE):
        if precision.startswith(prefix):
            return order[k], label, colour
    return len(PREC_STYLE), precision, "#333"


def plot(results: list[dict[str, Any]], path: str) -> None:
    """One panel per scenario: scheme groups on x, one bar per precision (mean, whisker = std)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(10 * len(results), 5.2), squeeze=False)
    for ax, res in zip(axes[0], results):
        rows = [r for r in res["rows"] if "accuracy" in r]
        groups = list(dict.fromkeys(r["name"] for r in rows))
        seen: set[str] = set()
        width = 0.8 / max(len([r for r in rows if r["name"] == g]) for g in groups)
        for gi, g in enumerate(groups):
            grow = sorted((r for r in rows if r["name"] == g), key=lambda r: _style(r["precision"])[0])
            for k, r in enumerate(grow):
                _, label, colour = _style(r["precision"])
                x = gi + (k - (len(grow) - 1) / 2) * width
                a = r["accuracy"]
                ax.bar(x, a["mean"], width * 0.92, yerr=a["std"], capsize=3, color=colour,
                       label=None if label in seen else label)
                seen.add(label)
                ax.text(x, 0.02, f"{a['mean']:.2f}" + (f"\nlr {r['lr']:g}" if "lr" in r else ""),
                        ha="center", va="bottom", fontsize=6, rotation=90, color="white")
        ax.axhline(res["source_test_accuracy"]["mean"], ls="--", color="k", lw=1, label="source domain (no shift)")
        ax.set_xticks(range(len(groups)), [g.replace("bias+classifier", "biases +\nclassifier") for g in groups], fontsize=9)
        ax.set_ylim(0, 1)
        ax.set_ylabel("accuracy on shifted eval windows")
        ax.set_title(f"{res['scenario']} shift, {res['variant']} model, mean ± std over {len(res['seeds'])} seeds, "
                     f"{res['adapt']['n_fit']} samples x {res['adapt']['steps'] // max(1, res['adapt']['n_fit'])} passes "
                     f"(batch 1)", fontsize=10)
        ax.legend(fontsize=8, loc="upper left", ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenario", default="rotation", help=f"comma list of {ADAPT_SCENARIOS} or 'all' (the "
                   f"fine-tuning rows run for {data.SCENARIOS}, the recipe rows for all)")
    p.add_argument("--variant", default="small")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--seed0", type=int, default=0)
    p.add_argument("--epochs", type=int, default=30, help="pre-training epochs")
    p.add_argument("--k", type=int, default=8, help="adaptation samples per class")
    p.add_argument("--adapt-epochs", type=int, default=10, help="passes over the adaptation samples")
    p.add_argument("--lrs", type=lambda s: tuple(float(v) for v in s.split(",")), default=LR_GRID)
    p.add_argument("--schemes", type=lambda s: tuple(s.split(",")), default=SCHEMES)
    p.add_argument("--lrs-qas", type=lambda s: tuple(float(v) for v in s.split(",")), default=LR_GRID_QAS,
                   help="lr grid of the int8 QAS rows")
    p.add_argument("--lrs-sgd", type=lambda s: tuple(float(v) for v in s.split(",")), default=LR_GRID_SGD,
                   help="lr grid of the plain int8 SGD rows")
    p.add_argument("--lrs-momentum", type=lambda s: tuple(float(v) for v in s.split(",")),
                   default=LR_GRID_MOMENTUM, help="lr grid of the int8 QAS + momentum 0.9 row")
    p.add_argument("--no-int8", dest="int8", action="store_false", help="skip the int8 (numpy twin) rows")
    p.add_argument("--no-momentum-row", dest="momentum_row", action="store_false",
                   help="skip int8 QAS + momentum 0.9 (biases + classifier)")
    p.add_argument("--jobs", type=int, default=2, help="worker processes for the int8 fine-tunes")
    p.add_argument("--no-adapt", dest="adapt", action="store_false",
                   help="skip the default-recipe rows (build/bench/adapt.json)")
    p.add_argument("--adapt-only", action="store_true", help="only the default-recipe rows (adapt.json)")
    p.add_argument("--recipe-rows", type=lambda s: tuple(s.split(",")), default=tuple(RECIPE_ROWS),
                   help=f"comma list of {tuple(RECIPE_ROWS)}")
    p.add_argument("--spot-check", action="store_true",
                   help="recipe rows: also run the first seed on the unix port's C module and compare with the twin")
    p.add_argument("--acc-margin", type=int, default=None, help="recipe guard: override recipe.ACC_MARGIN (windows)")
    p.add_argument("--loss-margin", type=float, default=None,
                   help="recipe guard: override recipe.LOSS_MARGIN (nats; default off)")
    p.add_argument("--out", default="build/bench")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    names = ADAPT_SCENARIOS if args.scenario == "all" else tuple(args.scenario.split(","))
    os.makedirs(args.out, exist_ok=True)
    if args.adapt:
        res = run_adapt(args, names)
        print_adapt(res)
        print(f"wrote {os.path.join(args.out, 'adapt.json')}")
    if args.adapt_only:
        return 0
    names = tuple(n for n in names if n in data.SCENARIOS)
    results = [run_scenario(n, args) for n in names]
    out = {"benchmark": "learning", "data": "seglearn smartwatch shoulder exercises (watch_dataset.npy, BSD-3)",
           "scenarios": results}
    with open(os.path.join(args.out, "learning.json"), "w") as f:
        json.dump(out, f, indent=1)
    plot(results, os.path.join(args.out, "learning.png"))
    for res in results:
        print(f"\n{res['scenario']}: source-domain accuracy {res['source_test_accuracy']['mean']:.3f}")
        for r in res["rows"]:
            if "accuracy" in r:
                a = r["accuracy"]
                print(f"  {r['name']:<16} {r['precision']:<38} {a['mean']:.3f} ± {a['std']:.3f}" + (f"  lr {r['lr']:g}" if "lr" in r else ""))
            else:
                print(f"  {r['name']:<16} {r['precision']:<38} {r['status']}")
        for label, d in res["paired_differences"].items():
            print(f"  paired {label:<52} {100 * d['mean']:+5.1f} ± {100 * d['std']:.1f} pp "
                  f"(min {100 * d['min']:+.1f}, max {100 * d['max']:+.1f})")
    print(f"wrote {os.path.join(args.out, 'learning.json')} and learning.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
