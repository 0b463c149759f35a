"""Training-cost benchmark: arena bytes and instructions per training step, C module vs pure Python.

    python -m bench.training [--etm build/demo/model/model.etm] [--steps 8] [--out build/bench/training.json]

Model: the reference IMU model of `make demo` (Keras `small`, rotation scenario, through the
pretrain -> quantize -> export verbs; cached in build/demo/model/ and built by scripts/demo.py
if missing). Samples: real windows of the shifted domain's eval session (demo.write_sessions),
quantized as the device app does. Schemes (same definitions as bench/learning.py):

- classifier:       the classifier's weights and bias        Model(buf, scheme={"n_bias": 0})
- bias+classifier:  biases of every weight layer + classifier (the default scheme)
- sparse:           bias+classifier + half the output channels of the last conv (l1 criterion)

Per scheme:
- memory: `info()['inference_arena']` and `info()['arena']` of the C module on the unix port,
  checked against host/edgetune/twin/memory.py (`inference_arena`, `training_arena`) -- they must
  agree to the byte -- and the training/inference ratio; also the GC heap the Model object
  holds after Model(...) (gc.mem_alloc difference on the 64-bit unix port) for both modules;
- instructions on the unix port (x86-64 build/unix/micropython), counted by
  `valgrind --tool=callgrind` (instructions retired, Ir): one run does the setup (import, read
  the model and the samples, Model(...)) and then N training steps (or N predicts); a baseline
  run does the same setup and stops. (run - baseline) / N is the cost per step, for the C module
  (`edgetune`) and for the pure-Python module (`firmware/edgetune_py.py`, the same bits) on the
  SAME N samples; their ratio is what the C module buys.

Writes build/bench/training.json. Team goals, reported (not asserted): training arena <= 1.3x
the inference arena for bias+classifier; >= 10x fewer instructions per step than pure Python.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
FIRMWARE = REPO / "firmware"
HEAP = "1M"  # same heap for both implementations (the pure-Python core needs more than the RP2040's)
ARENA_GOAL = 1.3
INSTR_GOAL = 10.0

SCRIPT = """
import sys, gc
IMPL, SCHEME, MODE, N = {impl!r}, {scheme!r}, {mode!r}, {n}
gc.collect()
h0 = gc.mem_alloc()
if IMPL == 'py':
    from edgetune_py import Model
else:
    from edgetune import Model
buf = open({etm!r}, 'rb').read()
xs = open({xs!r}, 'rb').read()
labels = open({labels!r}, 'rb').read()
k = len(xs) // len(labels)
mv = memoryview(xs)
gc.collect()
h1 = gc.mem_alloc()
m = Model(buf, scheme=SCHEME)
gc.collect()
h2 = gc.mem_alloc()
out = []
for i in range(N):
    x = mv[i * k:(i + 1) * k]
    if MODE == 'train':
        out.append(m.train(x, labels[i], lr=0.01))
    else:
        out.append(m.predict(x))
info = m.info()
print('RESULT', info['inference_arena'], info['arena'], info['peak'], info['trainable'], h2 - h1, repr(out))
"""


def _demo():
    spec = importlib.util.spec_from_file_location("edgetune_demo", REPO / "scripts" / "demo.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def device_schemes(model) -> dict[str, dict]:
    """The three schemes as Model(..., scheme=) dicts for this model."""
    from edgetune.format.modelfile import OP_CONV_2D
    from edgetune.format.scheme import weight_layers

    wl = weight_layers(model)
    last_conv = max(i for i in wl if model.layers[i].op == OP_CONV_2D)
    return {
        "classifier": {"n_bias": 0},
        "bias+classifier": {"n_bias": len(wl)},
        "sparse": {"n_bias": len(wl), "weights": [(last_conv, 2)]},
    }


def forward_macs(model) -> int:
    """Multiply-accumulates of one forward pass (every filter tap, padding included)."""
    from edgetune.format.modelfile import OP_CONV_2D, OP_DEPTHWISE_CONV_2D, OP_FULLY_CONNECTED

    total = 0
    for ly in model.layers:
        out = model.tensors[ly.output]
        if ly.op in (OP_CONV_2D, OP_DEPTHWISE_CONV_2D, OP_FULLY_CONNECTED):
            w = model.tensors[ly.weight].shape
            per = w[1] * w[2] if ly.op == OP_DEPTHWISE_CONV_2D else w[1] * w[2] * w[3]
            total += out.size * per
    return total


def host_scheme(model, dev: dict):
    from fractions import Fraction

    from edgetune.format.scheme import Scheme

    return Scheme.build(model, dev["n_bias"], {k: Fraction(1, d) for k, d in dev.get("weights", [])})


def samples(etm_path: Path, evalp: Path, n: int) -> tuple[np.ndarray, np.ndarray]:
    """n real int8 windows (and labels) of the eval session, quantized like the device app."""
    from edgetune.learn import data
    from edgetune.format.modelfile import read_etm

    meta = read_etm(etm_path.read_bytes()).meta
    riq = meta["raw_input_quant"]
    recs = data.load_session(str(evalp), meta["class_names"])
    w = data.make_windows(recs, meta["window"], meta["step"])
    q = np.clip(np.round(w.x / np.asarray(riq["scale"]) + np.asarray(riq["zero_point"])), -128, 127).astype(np.int8)
    pick = np.random.default_rng(0).permutation(len(q))[:n]  # spread over the classes
    return q[pick].reshape(n, -1), w.y[pick].astype(np.uint8)


def callgrind(micropython: Path, code: str, tmp: Path, tag: str) -> tuple[int, str]:
    """(instructions retired, stdout) of the unix port running `code` under callgrind."""
    script = tmp / f"{tag}.py"
    script.write_text(code)
    out = tmp / f"{tag}.callgrind"
    env = {"MICROPYPATH": f"{FIRMWARE}:.frozen", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", str(micropython),
                           "-X", f"heapsize={HEAP}", str(script)], capture_output=True, text=True, env=env,
                          timeout=1200)
    if proc.returncode != 0 or "RESULT" not in proc.stdout:
        raise RuntimeError(f"callgrind run {tag} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n"
                           f"{proc.stderr[-3000:]}")
    m = re.search(r"^(?:summary|totals):\s+(\d+)", out.read_text(), re.M)
    if not m:
        raise RuntimeError(f"no instruction total in {out}")
    return int(m.group(1)), proc.stdout


def _result(stdout: str) -> dict:
    line = next(s for s in stdout.splitlines() if s.startswith("RESULT "))
    inf, arena, peak, trainable, heap, rest = line.split(" ", 6)[1:]
    return {"inference_arena": int(inf), "arena": int(arena), "peak": int(peak), "trainable": int(trainable),
            "model_heap": int(heap), "out": rest}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--etm", type=Path, default=None, help="model (default: the cached demo model)")
    ap.add_argument("--steps", type=int, default=8, help="training steps / predicts per measured run")
    ap.add_argument("--out", type=Path, default=REPO / "build" / "bench" / "training.json")
    args = ap.parse_args(argv)
    from edgetune.device import emulate
    from edgetune.twin import memory
    from edgetune.format.modelfile import read_etm

    t0 = time.time()
    micropython = emulate.find_micropython()
    demo = _demo()
    etm_path = args.etm or demo.ensure_model(REPO / "build" / "demo")
    _, evalp = demo.write_sessions(Path(etm_path).parent, REPO / "build" / "demo")
    model = read_etm(Path(etm_path).read_bytes())
    xs, ys = samples(Path(etm_path), Path(evalp), args.steps)
    macs = forward_macs(model)
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgetune-bench-") as d:
        tmp = Path(d)
        (tmp / "x.bin").write_bytes(xs.tobytes())
        (tmp / "y.bin").write_bytes(ys.tobytes())
        for name, dev in device_schemes(model).items():
            scheme = host_scheme(model, dev)
            row = {"scheme": name, "device_scheme": dev, "description": scheme.describe(),
                   "trainable": scheme.n_params(model)}
            counts: dict[str, dict[str, float]] = {}
            heap: dict[str, int] = {}
            outs = {}
            for impl in ("c", "py"):
                counts[impl] = {}
                fmt = dict(impl=impl, scheme=dev, etm=str(etm_path), xs=str(tmp / "x.bin"),
                           labels=str(tmp / "y.bin"))
                base, so = callgrind(micropython, SCRIPT.format(mode="train", n=0, **fmt), tmp, f"{impl}_base")
                res = _result(so)
                heap[impl] = res["model_heap"]
                for mode in ("train", "predict"):
                    ir, so = callgrind(micropython, SCRIPT.format(mode=mode, n=args.steps, **fmt), tmp,
                                       f"{impl}_{mode}")
                    counts[impl][mode] = (ir - base) / args.steps
                    outs[(impl, mode)] = _result(so)
                counts[impl]["setup"] = base
                if impl == "c":
                    row["inference_arena"] = res["inference_arena"]
                    row["training_arena"] = outs[("c", "train")]["arena"]
                    row["peak_after_training"] = outs[("c", "train")]["peak"]
                else:
                    row["py_info_arena"] = outs[("py", "train")]["arena"]
            same = all(outs[("c", m)]["out"] == outs[("py", m)]["out"] for m in ("train", "predict"))
            mem_inf = memory.inference_arena(model)
            mem_train = memory.training_arena(model, scheme)
            row.update({
                "training_arena_regions": {r.name: r.size for r in memory.training_layout(model, scheme)},
                "memory_py_inference_arena": mem_inf,
                "memory_py_training_arena": mem_train,
                "arena_agrees_with_memory_py": mem_inf == row["inference_arena"] and mem_train == row["training_arena"],
                "training_over_inference_arena": round(row["training_arena"] / row["inference_arena"], 4),
                "instructions_per_step": {"c": round(counts["c"]["train"]), "py": round(counts["py"]["train"])},
                "instructions_per_predict": {"c": round(counts["c"]["predict"]), "py": round(counts["py"]["predict"])},
                "setup_instructions": {"c": counts["c"]["setup"], "py": counts["py"]["setup"]},
                "py_over_c_step": round(counts["py"]["train"] / counts["c"]["train"], 2),
                "py_over_c_predict": round(counts["py"]["predict"] / counts["c"]["predict"], 2),
                "instructions_per_mac_predict": {k: round(counts[k]["predict"] / macs, 2) for k in ("c", "py")},
                "training_over_predict_c": round(counts["c"]["train"] / counts["c"]["predict"], 3),
                "same_losses_and_logits": same,
                "heap_bytes_of_model_object": heap,
            })
            rows.append(row)
            print(f"{name:16s} arena {row['inference_arena']:6d} -> {row['training_arena']:6d} B "
                  f"(x{row['training_over_inference_arena']:.3f}, memory.py agrees: "
                  f"{row['arena_agrees_with_memory_py']})  instr/step C {row['instructions_per_step']['c']:>11,} "
                  f"py {row['instructions_per_step']['py']:>13,}  py/C x{row['py_over_c_step']:.1f}  "
                  f"same bits: {same}", flush=True)
    bc = next(r for r in rows if r["scheme"] == "bias+classifier")
    worst = min(r["py_over_c_step"] for r in rows)
    vg = subprocess.run(["valgrind", "--version"], capture_output=True, text=True).stdout.strip()
    result = {
        "model": {"path": str(Path(etm_path).relative_to(REPO)) if Path(etm_path).is_relative_to(REPO)
                  else str(etm_path), "variant": model.meta.get("variant"), "scenario": model.meta.get("scenario"),
                  "ops": [ly.op_name for ly in model.layers], "input_shape": list(model.input_tensor.shape),
                  "classes": model.output_tensor.size, "model_bytes": Path(etm_path).stat().st_size,
                  "macs_per_forward": macs},
        "method": {"counter": f"{vg} --tool=callgrind, instructions retired (Ir), whole process",
                   "binary": str(micropython), "heap": HEAP, "steps_per_run": args.steps,
                   "binary_sha256": hashlib.sha256(Path(micropython).read_bytes()).hexdigest(),
                   "per_step": "(Ir of setup + N steps - Ir of setup only) / N, same samples for C and py",
                   "samples": "real eval-session windows of the demo's shifted domain", "lr": 0.01, "qas": True},
        "schemes": rows,
        "goals": {
            "training_arena_bias_classifier_over_inference": bc["training_over_inference_arena"],
            "arena_goal": ARENA_GOAL,
            "arena_goal_met": bc["training_over_inference_arena"] <= ARENA_GOAL,
            "min_py_over_c_instructions_per_step": worst,
            "instructions_goal": INSTR_GOAL,
            "instructions_goal_met": worst >= INSTR_GOAL,
        },
        "seconds": round(time.time() - t0, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    g = result["goals"]
    print(f"bias+classifier training arena x{g['training_arena_bias_classifier_over_inference']:.3f} of inference "
          f"(goal <= {ARENA_GOAL}: {'met' if g['arena_goal_met'] else 'NOT met'}); C needs "
          f">= x{worst:.1f} fewer instructions per step than pure Python (goal >= {INSTR_GOAL}: "
          f"{'met' if g['instructions_goal_met'] else 'NOT met'}); wrote {args.out} in {result['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
