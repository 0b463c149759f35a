"""`edgetune fleet refit`: the refit mode over the watch fleet on Flower's Simulation Engine
(docs/fleet-refit.md): one query round, the global state written to --out; with --dp-epsilon
the differentially private release (§5)."""

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
    p.add_argument("--bits", type=int, default=0,
                   help="4..16: boards send their statistics quantized to this many bits a value (docs/fleet-refit.md "
                        "§7; 12 is the measured choice); 0 (default): exact int32")
    p.add_argument("--dp-epsilon", type=float, default=None,
                   help="differential privacy: one Gaussian release at this epsilon (off when not given)")
    p.add_argument("--dp-delta", type=float, default=1e-5, help="DP delta (default 1e-5)")
    p.add_argument("--dp-unit", choices=("sample", "window", "board"), default="sample",
                   help="what the guarantee covers: one raw sensor sample (default; it lies in "
                        "window/step windows), one labelled window, or one board")
    p.add_argument("--dp-clip", type=float, default=None,
                   help="L2 clip of every window's centred features (default per unit: refit_dp.DEFAULTS, "
                        "chosen by bench/fleet_refit_dp.py on validation; use --l2 0.3 --alpha 1 with them)")
    p.add_argument("--dp-n-max", type=int, default=None, help="board unit: windows one board contributes at most (4)")
    p.add_argument("--dp-weights", default=None,
                   help="budget split over (counts, Gram, class sums), e.g. 0.3,0.5,1.0 (default per unit)")
    p.add_argument("--dp-no-centre", action="store_true", help="clip u itself, not u minus the public centre")
    p.add_argument("--dp-seed", type=int, default=None,
                   help="seed the server's noise (tests only: a known seed voids the guarantee)")


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
    if a.bits:
        from .refit_quant import check_bits

        check_bits(a.bits)
        if a.dp_epsilon is not None:
            raise ValueError("--bits quantizes the exact statistics; the DP release (--dp-epsilon) sends float32")
    _, t, _ = client._model(os.path.abspath(a.model))
    dp = None if a.dp_epsilon is None else dp_setting(a, t)
    r = simulate_refit(a.model, a.l2, a.alpha, a.splits, dp, a.bits)
    with open(a.out, "wb") as f:
        f.write(r["state"])
    fd = fleet_data(t.model.meta, a.splits)
    before = float(t.evaluate(fd.eval_x, fd.eval_y)[1])
    ev = Trainer(t.model)
    ev.load_state(r["state"])
    after = float(ev.evaluate(fd.eval_x, fd.eval_y)[1])
    res = {"clients": r["clients"], "bytes_up_per_client": r["bytes_up"][0], "held_out_before": before,
           "held_out_after": after, "state": a.out}
    if a.bits:
        res["bits"] = a.bits
        res["projected"] = r["projected"]
    if dp is not None:
        res["dp"] = {"unit": a.dp_unit, "epsilon": dp["epsilon"], "delta": a.dp_delta, "noise_multiplier": dp["z"],
                     "clip": dp["clip"], "n_max": dp["n_max"], "weights": list(dp["weights"]),
                     "centre": dp["centre"] is not None}
    print(json.dumps(res))
    return 0


def dp_setting(a: argparse.Namespace, t) -> dict:
    """refit_flower's `dp` from the arguments (ValueError on a bad one): z for --dp-epsilon on one
    release of the chosen unit, the public centre from the server's own windows."""
    import math

    from . import refit_dp
    from .accountant import gaussian_epsilon_for, gaussian_noise_for
    from .data import server_windows

    if not (math.isfinite(a.dp_epsilon) and 0 < a.dp_epsilon <= 100):
        raise ValueError(f"--dp-epsilon {a.dp_epsilon} must be in (0, 100]")
    if not 0 < a.dp_delta < 1:
        raise ValueError(f"--dp-delta {a.dp_delta} must be in (0, 1)")
    d = refit_dp.DEFAULTS[a.dp_unit]
    n_max = d["n_max"] if a.dp_n_max is None else a.dp_n_max
    if a.dp_unit == "board" and n_max < 1:
        raise ValueError(f"--dp-n-max {a.dp_n_max} must be >= 1 (windows one board contributes at most)")
    if a.dp_unit != "board":
        n_max = None
    clip = d["clip"] if a.dp_clip is None else a.dp_clip
    weights = d["weights"]
    if a.dp_weights is not None:
        try:
            weights = tuple(float(w) for w in a.dp_weights.split(","))
        except ValueError:
            weights = ()
        if len(weights) != 3 or not all(math.isfinite(w) and w > 0 for w in weights):
            raise ValueError(f"--dp-weights {a.dp_weights!r} must be three positive numbers, e.g. 0.3,0.5,1.0")
    z = gaussian_noise_for(a.dp_epsilon, a.dp_delta)  # one release: the exact calibration
    eps = gaussian_epsilon_for(z, a.dp_delta)  # what that z gives for the unit (<= --dp-epsilon)
    if a.dp_unit == "sample":
        z *= refit_dp.windows_per_sample(t.model.meta)
    refit_dp.check_params(clip, n_max)
    centre = None if a.dp_no_centre else refit_dp.public_centre(t, server_windows(t.model.meta))
    return {"clip": clip, "n_max": n_max, "z": z, "weights": weights, "centre": centre, "seed": a.dp_seed,
            "epsilon": eps}
