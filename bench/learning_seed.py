"""One seed of the learning benchmarks (bench/learning.py, its recipe rows in
bench/learning_recipe.py, bench/calibration.py, bench/refit_accuracy.py): the model of the zoo
pre-trained on the scenario's source domain, quantized and exported (cached), the adaptation
samples and their order; and the summary statistics of the rows."""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgetune.learn import data

SCHEMES = ("classifier", "bias+classifier", "sparse", "full")


@dataclass
class SeedRun:
    """Everything one seed's adaptation needs: the pre-trained models and the samples."""

    seed: int
    run_dir: str
    etm_path: str
    tflite_path: str
    meta: dict[str, Any]
    fit_idx: np.ndarray  # indices into scenario.shift_fit
    order: np.ndarray  # (steps,) indices into fit_idx: the SGD sample order


def stats(values: list[float]) -> dict[str, Any]:
    v = np.asarray(values, np.float64)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
            "values": [float(x) for x in v]}


def prepare_seed(sc: data.Scenario, cfg: dict[str, Any], args: argparse.Namespace, seed: int) -> SeedRun:
    """Pre-train (cached), quantize and export the model of one seed; draw its samples."""
    from edgetune import cli
    from edgetune.learn import pretrain
    from edgetune.convert import quantize

    tag = f"{sc.name}_{args.variant}_e{args.epochs}_s{seed}"
    d = os.path.join(args.out, "learning_models", tag)
    tfl, etm = os.path.join(d, "model.tflite"), os.path.join(d, "model.etm")
    split_json = os.path.join(d, "split.json")
    fresh = os.path.exists(os.path.join(d, "result.json")) and os.path.exists(etm)
    if fresh:
        with open(split_json) as f:
            fresh = json.load(f)["config"] == cfg
    if not fresh:  # (re)build when missing or made for another split configuration
        m, hist = pretrain.pretrain(sc, args.variant, args.epochs, seed, progress=not args.no_progress)
        pretrain.save_run(d, m, sc, hist, cfg, {"variant": args.variant, "epochs": args.epochs, "seed": seed,
                                                "batch": pretrain.DEFAULTS["batch"], "lr": pretrain.DEFAULTS["lr"]})
        quantize.quantize_run(d, tfl)
        if cli.main(["export", tfl, "-o", etm, "--meta", quantize.meta_path(tfl)]) != 0:
            raise RuntimeError(f"export of {tfl} failed")
    with open(quantize.meta_path(tfl)) as f:
        meta = json.load(f)
    fit_idx = data.per_class_sample(sc.shift_fit, args.k, seed)
    steps = args.adapt_epochs * len(fit_idx)
    rng = np.random.default_rng(1000 + seed)
    order = np.concatenate([rng.permutation(len(fit_idx)) for _ in range(args.adapt_epochs)])[:steps]
    return SeedRun(seed, d, etm, tfl, meta, fit_idx, order)


def paired(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-seed (paired: same model, samples and order) accuracy differences behind the team
    goals: int8 QAS vs fp32 and vs plain int8 SGD per scheme, biases + classifier vs classifier
    only per precision, momentum vs none. Each: mean, std, min, max in accuracy units."""
    acc = {(r["name"], r["precision"]): np.asarray(r["accuracy"]["values"]) for r in rows if "accuracy" in r}
    fp, qas, sgd, mom = ("fp32 (TensorFlow)", "int8 QAS (numpy twin)", "int8 SGD (numpy twin)",
                         "int8 QAS + momentum 0.9 (numpy twin)")
    pairs = [(f"{s}: int8 QAS - fp32", (s, qas), (s, fp)) for s in SCHEMES[:3]]
    pairs += [(f"{s}: int8 QAS - int8 SGD", (s, qas), (s, sgd)) for s in SCHEMES[:3]]
    pairs += [(f"{p}: bias+classifier - classifier", ("bias+classifier", p), ("classifier", p)) for p in (fp, qas, sgd)]
    pairs += [("bias+classifier: int8 QAS momentum 0.9 - none", ("bias+classifier", mom), ("bias+classifier", qas))]
    out = {}
    for label, a, b in pairs:
        if a in acc and b in acc:
            d = acc[a] - acc[b]
            out[label] = {**stats(list(d)), "min": float(d.min()), "max": float(d.max())}
    return out
