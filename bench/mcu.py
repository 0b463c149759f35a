"""`make bench-mcu`: guest instructions per MAC and per training step on the emulated Cortex-M3.

Boots build/qemu/firmware.elf (make firmware BOARD=qemu: MicroPython 1.25 qemu port, which
compiles everything, our module included, with -Os) under `qemu-system-arm -icount shift=0`, where guest time advances exactly one
nanosecond per guest instruction, and times code with the Cortex-M SysTick timer read through
machine.mem32 (ARCHITECTURE.md section 2). SysTick's rate in guest instructions is calibrated
ONCE per run with an inline-assembler loop of a known instruction count (2 Thumb instructions
per iteration: subs + bne), measured at two lengths so call overheads cancel.

Per forward kernel (CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED), two single-layer models that
differ only in the reduction length (conv: input channels; depthwise: kernel width;
FC: input features) are run with `Model.predict` R times each:
  - gross   = instructions per predict / MACs (includes the Python call, input copy,
              requantization and output copy),
  - marginal = delta instructions / delta MACs: the cost of one more MAC in the inner loop,
              what the team goal (<= 4 instructions per MAC) is about.
Per training step: `Model.train(x, label)` on small models (the device app's test model and a
wider conv model), with the forward-only cost for comparison.

The kernels are also compiled for Cortex-M0+ (RP2040) and Cortex-M3 at -Os and -O2 and their
code sizes reported (Cortex-M0+ instruction counts are not measured: QEMU has no Cortex-M0+
board with enough RAM for MicroPython plus our module). Writes build/bench/mcu.json.

    python bench/mcu.py [--firmware build/qemu/firmware.elf] [--out build/bench/mcu.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import tinymodels  # noqa: E402

from edgetune import emulate  # noqa: E402
from edgetune.modelfile import write_etm  # noqa: E402

GOAL = 4.0
KERNELS = REPO / "native_modules" / "edgetune" / "kernels"

DEVICE_PRELUDE = """
import gc, json, micropython, edgetune
from machine import mem32
mem32[0xE000E010] = 0
mem32[0xE000E014] = 0xFFFFFF
mem32[0xE000E018] = 0
mem32[0xE000E010] = 5


def ticks(f, *a):
    c0 = mem32[0xE000E018]
    f(*a)
    c1 = mem32[0xE000E018]
    return (c0 - c1) & 0xFFFFFF


@micropython.asm_thumb
def spin(r0):
    label(loop)
    sub(r0, r0, 1)
    bne(loop)
"""

CALIBRATE = """
def _cal():
    a = min(ticks(spin, 100000) for _ in range(3))
    b = min(ticks(spin, 1100000) for _ in range(3))
    print("BENCH " + json.dumps({"kind": "calibrate", "ticks": b - a, "instructions": 2 * 1000000}))
_cal()
"""

RUN_MODEL = """
def _run():
    buf = bytes.fromhex({hexdata!r})
    m = edgetune.Model(buf, {scheme})
    xs = {x_bytes!r}
    x = bytes(xs[i % len(xs)] for i in range({n_in}))
    def fwd(k):
        for _ in range(k):
            m.predict(x)
    def trn(k):
        for i in range(k):
            m.train(x, i % {n_cls}, lr=0.01)
    def nop(k):
        for _ in range(k):
            pass
    r = {{"kind": "model", "name": {name!r}}}
    r["loop"] = min(ticks(nop, {reps}) for _ in range(2))
    r["predict"] = min(ticks(fwd, {reps}) for _ in range(2))
    if {train}:
        r["train"] = ticks(trn, {reps})
    r["arena"] = m.info()["arena"]
    print("BENCH " + json.dumps(r))
_run()
gc.collect()
"""


def _macs(model) -> dict[str, int]:
    """MACs of each weight layer (valid taps only: SAME padding clips windows at the edges)."""
    from edgetune.modelfile import OP_CONV_2D, OP_DEPTHWISE_CONV_2D, OP_FULLY_CONNECTED

    out: dict[str, int] = {}
    for ly in model.layers:
        tin, tout = model.tensors[ly.input], model.tensors[ly.output]
        if ly.op == OP_FULLY_CONNECTED:
            n = tin.size * tout.shape[3]
        elif ly.op in (OP_CONV_2D, OP_DEPTHWISE_CONV_2D):
            _, h, w, c_in = tin.shape
            _, oh, ow, c_out = tout.shape

            def taps(o, stride, pad, k, size):
                s = o * stride - pad
                return sum(1 for f in range(k) if 0 <= s + f < size)

            valid = sum(taps(y, ly.stride_h, ly.pad_h, ly.filter_h, h) * taps(x, ly.stride_w, ly.pad_w, ly.filter_w, w)
                        for y in range(oh) for x in range(ow))
            n = valid * c_out * (c_in if ly.op == OP_CONV_2D else 1)
        else:
            continue
        key = {OP_FULLY_CONNECTED: "fc", OP_CONV_2D: "conv", OP_DEPTHWISE_CONV_2D: "dw"}[ly.op]
        out[key] = out.get(key, 0) + n
    return out


# Frozen layers (nothing trained: scheme {"n_bias": 0} on models without a FULLY_CONNECTED
# classifier at the end) run the plain inference kernels. A layer with trained weight channels
# (the classifier of the default scheme) runs the _rows_ kernel, which reads each trained
# channel's weights from the arena copy instead of flash: measured separately.
FROZEN = '{"n_bias": 0}'
TRAINED = "None"


def forward_pairs() -> dict[str, tuple]:
    """name -> (kernel, small model, large model, scheme): same layer, longer reduction."""
    return {
        "CONV_2D": ("conv", *(tinymodels.chain([("conv", 1, 5, 16, 1, True, False)], (1, 1, 64, c), seed=11)
                              for c in (8, 32)), FROZEN),
        "DEPTHWISE_CONV_2D": ("dw", *(tinymodels.chain([("dw", 1, k, 1, True, True)], (1, 1, 128, 16), seed=12)
                                      for k in (3, 11)), FROZEN),
        "DEPTHWISE_CONV_2D (3 channels)": ("dw", *(tinymodels.chain([("dw", 1, k, 1, True, True)], (1, 1, 128, 3),
                                                                    seed=12) for k in (3, 11)), FROZEN),
        "FULLY_CONNECTED": ("fc", *(tinymodels.chain([("fc", 32, True), ("mean",)], (1, 1, 1, k), seed=13)
                                    for k in (64, 256)), FROZEN),
        "FULLY_CONNECTED (trained classifier)": (
            "fc", *(tinymodels.chain([("fc", 32, False)], (1, 1, 1, k), seed=13) for k in (64, 256)), TRAINED),
    }


def train_models() -> dict:
    return {
        "app_model": tinymodels.app_model(),
        "conv_mean_fc": tinymodels.chain([("conv", 1, 5, 16, 1, True, True), ("conv", 1, 3, 16, 2, True, True),
                                          ("mean",), ("fc", 4, False)], (1, 1, 32, 6), seed=14),
    }


def _script(name: str, model, reps: int, train: bool, scheme: str = TRAINED) -> str:
    etm = write_etm(model)
    rng = np.random.default_rng(1)
    x = bytes(rng.integers(0, 256, 97, dtype=np.uint8))
    return RUN_MODEL.format(hexdata=etm.hex(), x_bytes=x, n_in=model.input_tensor.size,
                            n_cls=model.output_tensor.size, name=name, reps=reps, train=train,
                            scheme=scheme)


def run_device(firmware: Path | None, scripts: list[str], timeout: float = 900) -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="edgetune-bench-") as tmp:
        args: list[str] = []
        for i, code in enumerate([DEVICE_PRELUDE + CALIBRATE, *scripts]):
            p = Path(tmp) / f"b{i}.py"
            p.write_text(code)
            args += (["+"] if args else []) + ["run", str(p)]
        with emulate.QemuBoard(firmware, icount=True) as board:
            proc = subprocess.run(emulate.mpremote_command(board.pty, *args), capture_output=True, text=True,
                                  timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"mpremote failed:\n{proc.stdout}\n{proc.stderr}")
    return [json.loads(line[6:]) for line in proc.stdout.splitlines() if line.startswith("BENCH ")]


def code_sizes() -> dict:
    """text+data bytes of every kernel object for a few targets and optimization levels."""
    targets = {
        "cortex-m0plus -Os": ["-mcpu=cortex-m0plus", "-mthumb", "-Os"],
        "cortex-m0plus -O2": ["-mcpu=cortex-m0plus", "-mthumb", "-O2"],
        "cortex-m3 -Os": ["-mcpu=cortex-m3", "-mthumb", "-Os"],
    }
    out: dict = {}
    with tempfile.TemporaryDirectory(prefix="edgetune-size-") as tmp:
        for tname, flags in targets.items():
            sizes = {}
            for src in sorted(KERNELS.glob("*.c")):
                obj = Path(tmp) / (src.stem + ".o")
                subprocess.run(["arm-none-eabi-gcc", *flags, "-std=c99", "-ffp-contract=off", "-ffunction-sections",
                                f"-I{KERNELS}", "-c", str(src), "-o", str(obj)], check=True)
                t = subprocess.run(["arm-none-eabi-size", str(obj)], capture_output=True, text=True, check=True)
                text, data = (int(v) for v in t.stdout.splitlines()[1].split()[:2])
                sizes[src.stem] = text + data
            out[tname] = {"kernels": sizes, "total": sum(sizes.values())}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--firmware", type=Path, default=None, help="qemu firmware ELF (default build/qemu/firmware.elf)")
    ap.add_argument("--out", type=Path, default=REPO / "build" / "bench" / "mcu.json")
    ap.add_argument("--reps", type=int, default=4)
    args = ap.parse_args(argv)

    pairs = forward_pairs()
    trains = train_models()
    scripts = []
    for kernel, (_, small, large, scheme) in pairs.items():
        scripts.append(_script(f"{kernel}/small", small, args.reps, False, scheme))
        scripts.append(_script(f"{kernel}/large", large, args.reps, False, scheme))
    for name, model in trains.items():
        scripts.append(_script(f"train/{name}", model, args.reps, True))
    rows = run_device(args.firmware, scripts)
    cal = next(r for r in rows if r["kind"] == "calibrate")
    ipt = cal["instructions"] / cal["ticks"]  # guest instructions per SysTick tick
    by = {r["name"]: r for r in rows if r["kind"] == "model"}

    def instr(r: dict, key: str) -> float:
        return (r[key] - r["loop"]) * ipt / args.reps

    result: dict = {
        "board": "qemu mps2-an385 (Cortex-M3), MicroPython 1.25 qemu port, -icount shift=0",
        "firmware": str(emulate.find_qemu_firmware(args.firmware)),
        "calibration": {"instructions_per_systick_tick": ipt, "ticks": cal["ticks"],
                        "instructions": cal["instructions"]},
        "goal_instructions_per_mac": GOAL,
        "forward": {},
        "training": {},
    }
    for kernel, (key, small, large, scheme) in pairs.items():
        m_s, m_l = _macs(small)[key], _macs(large)[key]
        i_s, i_l = instr(by[f"{kernel}/small"], "predict"), instr(by[f"{kernel}/large"], "predict")
        marginal = (i_l - i_s) / (m_l - m_s)
        result["forward"][kernel] = {
            "macs": [m_s, m_l], "instructions_per_predict": [round(i_s), round(i_l)],
            "gross_instructions_per_mac": [i_s / m_s, i_l / m_l],
            "marginal_instructions_per_mac": marginal, "meets_goal": marginal <= GOAL,
            "trained_weights": scheme == TRAINED,
        }
    for name, model in trains.items():
        r = by[f"train/{name}"]
        macs = sum(_macs(model).values())
        fwd, step = instr(r, "predict"), instr(r, "train")
        result["training"][name] = {"forward_macs": macs, "instructions_per_predict": round(fwd),
                                    "instructions_per_train_step": round(step), "train_over_predict": step / fwd,
                                    "arena_bytes": r["arena"]}
    result["code_size_bytes"] = code_sizes()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"calibration: {ipt:.3f} guest instructions per SysTick tick")
    for k, v in result["forward"].items():
        print(f"{k:38s} marginal {v['marginal_instructions_per_mac']:.2f} instr/MAC "
              f"(gross {v['gross_instructions_per_mac'][1]:.2f}); goal <= {GOAL}: "
              f"{'met' if v['meets_goal'] else 'NOT met'}")
    for k, v in result["training"].items():
        print(f"train {k:14s} {v['instructions_per_train_step']} instr/step, "
              f"{v['instructions_per_predict']} instr/predict ({v['forward_macs']} MACs)")
    for k, v in result["code_size_bytes"].items():
        print(f"kernels {k}: {v['total']} bytes")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
