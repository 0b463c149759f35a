"""Sensor-frame calibration accuracy (docs/data.md §9):

    python -m bench.calibration [--scenario rotation,random_rotation,side,subject] [--seeds 5]

For every scenario and seed: the cached bench/learning.py model of that seed (run
`python -m bench.learning --scenario rotation,side` first, or the models are pre-trained here
through the same code), k = 8 fit windows per class drawn as bench/learning.py draws them (and,
as a second row, the whole fit region), quantized with the model's raw_input_quant; the frame
fit of the numpy twin (edgetune.twin.frame.fit_frame, bit-exact with the device); then the eval
region mapped by the fitted frame, quantized and run through the int8 forward twin. random_rotation
= the rotation scenario with data.random_rotation(100 + seed); subject reuses the rotation
models (same source split). Prints one line per (scenario, seed, k) and writes OUT/calibration.json.

`--one-arm`: instead, the way a user collects: per rotation model (seeds), test subject and arm,
the first 8 fit-region windows per class of that one subject's one arm, rotated (90 degrees) or
not, calibrated against the pooled statistics alone and against all sets; accuracy on the same
subject's same arm's eval region (docs/data.md §9).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from edgetune.learn import data, pretrain
from edgetune.twin import frame, reference
from edgetune.twin import quantize_input as qi
from edgetune.format.modelfile import read_etm


def main(argv: list[str] | None = None) -> int:
    from bench import learning

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenario", default="rotation,random_rotation,side,subject")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--out", default="build/bench")
    p.add_argument("--one-arm", action="store_true")
    a = p.parse_args(argv)
    if a.one_arm:
        return one_arm(a)
    largs = argparse.Namespace(out=a.out, variant="small", epochs=30, k=8, adapt_epochs=10, no_progress=True)
    out: dict = {}
    for name in a.scenario.split(","):
        for seed in range(a.seeds):
            if name == "random_rotation":
                sc = data.build_scenario("rotation", rotation_seed=100 + seed)
            else:
                sc = data.build_scenario(name)
            mname = "side" if name == "side" else "rotation"
            cfg = pretrain.scenario_config({"scenario": mname})
            run = learning.prepare_seed(pretrain.scenario_from_config(cfg), cfg, largs, seed)
            em = read_etm(open(run.etm_path, "rb").read())
            f = run.meta["raw_input_quant"]
            # the statistics sets the device gets (pooled, then each arm when the source has both)
            st = frame.stats_sets(run.meta if "frame_stats" in run.meta else frame.frame_metadata(sc))

            def acc(x, y):
                q = qi.quantize_input(x, f["scale"], f["zero_point"])
                return float(np.mean(np.argmax(reference.forward_batch(em, q).reshape(len(y), -1), 1) == y))

            base = acc(sc.shift_eval.x, sc.shift_eval.y)
            res = {"none": base}
            for tag, idx in (("k8", data.per_class_sample(sc.shift_fit, 8, seed)), ("all", np.arange(len(sc.shift_fit)))):
                q = qi.quantize_input(sc.shift_fit.x[idx], f["scale"], f["zero_point"]).reshape(len(idx), -1)
                r = frame.fit_frame(q, sc.shift_fit.y[idx], len(sc.class_names), st, f["scale"], f["zero_point"])
                acc_c = acc(frame.apply_frame(sc.shift_eval.x, r["R"], r["improper"], 6), sc.shift_eval.y)
                err = None
                if "rotation" in sc.info and name != "side" and name != "subject":
                    rt, g = np.asarray(sc.info["rotation"]), np.asarray(r["R"])
                    err = float(np.degrees(np.arccos(np.clip((np.trace(rt.T @ g) - 1) / 2, -1, 1))))
                res[tag] = {"acc": acc_c, "diff": acc_c - base, "chosen": r["chosen"], "set": r["set"], "err_deg": err,
                            "e": [r["e_identity"], r["e_proper"], r["e_improper"]]}
                print(f"{name:16s} seed {seed} {tag:3s}: none {base:.3f} calibrated {acc_c:.3f} ({acc_c - base:+.3f}) "
                      f"{r['chosen']} set {r['set']}" + (f" error {err:.1f} deg" if err is not None else ""), flush=True)
            out.setdefault(name, {})[seed] = res
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "calibration.json"), "w") as fh:
        json.dump(out, fh, indent=1)
    return 0


def one_arm(a: argparse.Namespace) -> int:
    from bench import learning

    largs = argparse.Namespace(out=a.out, variant="small", epochs=30, k=8, adapt_epochs=10, no_progress=True)
    cfg = pretrain.scenario_config({"scenario": "rotation"})
    sc = pretrain.scenario_from_config(cfg)
    sets = frame.stats_sets(frame.frame_metadata(sc))
    ds = data.load_watch()
    rot = np.asarray(sc.info["rotation"])
    gains: dict = {}
    for seed in range(a.seeds):
        run = learning.prepare_seed(sc, cfg, largs, seed)
        em = read_etm(open(run.etm_path, "rb").read())
        f = run.meta["raw_input_quant"]

        def acc(x, y):
            q = qi.quantize_input(x, f["scale"], f["zero_point"])
            return float(np.mean(np.argmax(reference.forward_batch(em, q).reshape(len(y), -1), 1) == y))

        for subj in sc.info["test_subjects"]:
            for side in (0, 1):
                for rotated in (True, False):
                    recs = ds.select([subj], [side])
                    recs = data.rotate(recs, rot) if rotated else recs
                    fr = data.WINDOW, data.STEP
                    fit = data.make_windows(recs, *fr, region=(0.0, 0.3))
                    ev = data.make_windows(recs, *fr, region=(0.5, 1.0))
                    idx = np.concatenate([np.flatnonzero(fit.y == c)[:8] for c in range(len(sc.class_names))])
                    q = qi.quantize_input(fit.x[idx], f["scale"], f["zero_point"]).reshape(len(idx), -1)
                    none = acc(ev.x, ev.y)
                    line = f"seed {seed} subject {subj} arm {side} rotated {rotated!s:5}: none {none:.3f}"
                    for tag, st in (("pooled", sets[:1]), ("sets", sets)):
                        r = frame.fit_frame(q, fit.y[idx], len(sc.class_names), st, f["scale"], f["zero_point"])
                        c = acc(frame.apply_frame(ev.x, r["R"], r["improper"], 6), ev.y)
                        gains.setdefault((rotated, tag), []).append(c - none)
                        line += f" | {tag} {r['chosen']} set {r['set']} {c:.3f}"
                    print(line, flush=True)
    for (rotated, tag), g in sorted(gains.items()):
        print(f"rotated {rotated!s:5} {tag:6}: gain mean {100 * np.mean(g):+.1f} pp, min {100 * np.min(g):+.1f} pp, n {len(g)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
