"""`edgetune pretrain`: train a model of the zoo on the source domain of a scenario (Keras).

Writes into --out: model.keras, history.json (per-epoch loss/accuracy), norm.json
(per-channel mean/std of the training split), split.json (the scenario's configuration,
subjects and window counts, enough to rebuild the exact splits) and result.json (final
accuracies on source test and on the shifted domain before adaptation).
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any, Sequence

import numpy as np

from . import data

DEFAULTS = {"epochs": 40, "batch": 32, "lr": 2e-3, "seed": 0, "variant": "small"}


def scenario_config(args: argparse.Namespace | dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of `data.build_scenario` as stored in split.json."""
    a = vars(args) if isinstance(args, argparse.Namespace) else dict(args)
    cfg = {
        "name": a.get("scenario", "rotation"),
        "window": a.get("window", data.WINDOW),
        "step": a.get("step", data.STEP),
        "val_subjects": list(a.get("val_subjects") or data.DEFAULT_VAL_SUBJECTS),
        "test_subjects": list(a.get("test_subjects") or data.DEFAULT_TEST_SUBJECTS),
        "train_side": a.get("train_side", 1),
        "rotation_deg": list(a.get("rotation_deg") or data.DEFAULT_ROTATION_DEG),
        "rotation_seed": a.get("rotation_seed"),
        "fractions": list(a.get("fractions") or data.DEFAULT_PERSONAL_FRACTIONS),
    }
    return cfg


def scenario_from_config(cfg: dict[str, Any]) -> data.Scenario:
    cfg = dict(cfg)
    return data.build_scenario(cfg.pop("name"), **cfg)


def load_run(path: str) -> tuple[Any, data.Scenario, dict[str, Any]]:
    """(Keras model, scenario, split.json) of a pretrain output dir or a .keras file inside one."""
    import keras

    d = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    mpath = os.path.join(path, "model.keras") if os.path.isdir(path) else path
    with open(os.path.join(d, "split.json")) as f:
        split = json.load(f)
    return keras.models.load_model(mpath, compile=False), scenario_from_config(split["config"]), split


def _progress(epochs: int, enabled: bool) -> Any:
    import keras
    from tqdm import tqdm

    class Bar(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.bar = tqdm(total=epochs, desc="pretrain", unit="epoch", disable=not enabled)

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            self.bar.set_postfix({k: f"{v:.3f}" for k, v in logs.items() if k in ("loss", "accuracy", "val_accuracy")})
            self.bar.update(1)

        def on_train_end(self, logs=None):
            self.bar.close()

    return Bar()


def accuracy(model: Any, sc: data.Scenario, w: data.Windows) -> float:
    if len(w) == 0:
        return float("nan")
    logits = model.predict(sc.norm.apply(w.x), verbose=0, batch_size=256)
    return float(np.mean(np.argmax(logits, 1) == w.y))


def pretrain(sc: data.Scenario, variant: str = "small", epochs: int = 40, seed: int = 0, batch: int = 32,
             lr: float = 2e-3, progress: bool = True) -> tuple[Any, dict[str, list[float]]]:
    """Train a fresh `variant` on sc.train (validated on sc.val); returns (model, history)."""
    import keras
    import tensorflow as tf

    from . import zoo

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    m = zoo.compile_model(zoo.build(variant, len(sc.class_names), sc.window, seed=seed), lr)
    hist = m.fit(sc.norm.apply(sc.train.x), sc.train.y, batch_size=batch, epochs=epochs, shuffle=True,
                 validation_data=(sc.norm.apply(sc.val.x), sc.val.y), verbose=0,
                 callbacks=[_progress(epochs, progress)])
    return m, {k: [float(v) for v in vs] for k, vs in hist.history.items()}


def save_run(out: str, m: Any, sc: data.Scenario, history: dict[str, Any], cfg: dict[str, Any],
             train_args: dict[str, Any]) -> dict[str, Any]:
    os.makedirs(out, exist_ok=True)
    m.save(os.path.join(out, "model.keras"))
    result = {
        "source_test_accuracy": accuracy(m, sc, sc.test),
        "shift_eval_accuracy": accuracy(m, sc, sc.shift_eval),
        "val_accuracy": accuracy(m, sc, sc.val),
    }
    split = {"config": cfg, "info": sc.info, "class_names": list(sc.class_names), "sample_rate": sc.sample_rate,
             "data": "watch", "train": train_args}
    for name, obj in (("history.json", history), ("norm.json", sc.norm.to_json()), ("split.json", split),
                      ("result.json", result)):
        with open(os.path.join(out, name), "w") as f:
            json.dump(obj, f, indent=1)
    return result


def _floats(s: str) -> list[float]:
    try:
        return [float(v) for v in s.split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{s!r} is not a comma list of numbers") from None


def _ints(s: str) -> list[int]:
    try:
        return [int(v) for v in s.split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{s!r} is not a comma list of integers") from None


def positive_int(s: str) -> int:
    """argparse type: an integer >= 1 (`--epochs 0` makes no model)."""
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{s!r} is not an integer") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {v}")
    return v


def positive_float(s: str) -> float:
    """argparse type: a finite number > 0."""
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{s!r} is not a number") from None
    if not (v > 0 and v < float("inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {s}")
    return v


def _check_args(p: argparse.ArgumentParser, a: argparse.Namespace) -> None:
    """Cross-field checks argparse types cannot do (p.error exits with status 2)."""
    if a.step > a.window:
        p.error(f"--step {a.step} is larger than --window {a.window} (samples between windows would be lost)")
    if a.fractions is not None:
        if len(a.fractions) != 3 or any(not 0 < f < 1 for f in a.fractions) or sum(a.fractions) > 1 + 1e-9:
            p.error(f"--fractions needs three numbers in (0, 1) summing to at most 1, got {a.fractions}")
    if a.rotation_deg is not None and len(a.rotation_deg) != 3:
        p.error(f"--rotation-deg needs three angles z,y,x, got {a.rotation_deg}")
    from ..outpaths import check_dir

    try:  # before minutes of training
        check_dir(a.out, "--out directory")
    except ValueError as e:
        p.error(str(e))


def cli(argv: Sequence[str]) -> int:
    from .zoo import VARIANTS

    p = argparse.ArgumentParser(prog="edgetune pretrain", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", default="watch", choices=["watch"], help="data set (seglearn smartwatch exercises)")
    p.add_argument("--scenario", default="rotation", choices=data.SCENARIOS, help="domain shift to pre-train for")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--epochs", type=positive_int, default=DEFAULTS["epochs"], help="passes over the training split")
    p.add_argument("--seed", type=int, default=DEFAULTS["seed"], help="weight init, shuffling and TF op seed")
    p.add_argument("--variant", default=DEFAULTS["variant"], choices=VARIANTS, help="model of the zoo (edgetune.learn.zoo)")
    p.add_argument("--batch", type=positive_int, default=DEFAULTS["batch"], help="mini-batch size")
    p.add_argument("--lr", type=positive_float, default=DEFAULTS["lr"], help="Adam learning rate")
    p.add_argument("--window", type=positive_int, default=data.WINDOW, help="samples per window")
    p.add_argument("--step", type=positive_int, default=data.STEP, help="samples between window starts")
    p.add_argument("--val-subjects", type=_ints, default=None, help="comma list (default: 8)")
    p.add_argument("--test-subjects", type=_ints, default=None, help="comma list (default: 9,10)")
    p.add_argument("--train-side", type=int, default=1, choices=[0, 1], help="side scenario: arm trained on")
    p.add_argument("--rotation-deg", type=_floats, default=None,
                   help="rotation scenario: z,y,x Euler degrees (default: 90,0,0)")
    p.add_argument("--rotation-seed", type=int, default=None, help="rotation scenario: seeded uniform random rotation instead")
    p.add_argument("--fractions", type=_floats, default=None,
                   help="shifted domain split in time: fit,fit-val,eval fractions (default: 0.3,0.2,0.5)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--verbose", action="store_true", help="show TensorFlow's own log output")
    a = p.parse_args(argv)
    _check_args(p, a)
    from .. import tfquiet

    tfquiet.setup(a.verbose)
    cfg = scenario_config(a)
    sc = scenario_from_config(cfg)
    print(f"scenario {sc.name}: " + ", ".join(f"{k} {v}" for k, v in sc.info["counts"].items()) + " windows")
    with tfquiet.quiet(a.verbose):  # TensorFlow's import-time notices
        import keras  # noqa: F401
        import tensorflow  # noqa: F401
    m, hist = pretrain(sc, a.variant, a.epochs, a.seed, a.batch, a.lr, progress=not a.no_progress)
    train_args = {k: getattr(a, k) for k in ("variant", "epochs", "seed", "batch", "lr")}
    with tfquiet.quiet(a.verbose):
        res = save_run(a.out, m, sc, hist, cfg, train_args)
    print(f"wrote {a.out}: source test acc {res['source_test_accuracy']:.3f}, "
          f"shifted (no adaptation) {res['shift_eval_accuracy']:.3f}")
    return 0
