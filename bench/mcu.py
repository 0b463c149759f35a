"""`make bench-mcu`: guest instructions per call, per MAC and per training step on emulated Cortex-M.

Boots build/qemu/firmware.elf (make firmware BOARD=qemu: MicroPython 1.25 qemu port, which
compiles everything, our module included, with -Os) under `qemu-system-arm -icount shift=0`, where guest time advances exactly one
nanosecond per guest instruction, and times code with the Cortex-M SysTick timer read through
machine.mem32 (docs/firmware.md). SysTick's rate in guest instructions is calibrated
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
code sizes reported.

Bare metal, both instruction sets ("bare_metal" in the JSON; bench/mcu_bare): the kernels, model.c
and train.c built without MicroPython for the Cortex-M3 (-mcpu=cortex-m3) and for ARMv6-M
(-mcpu=cortex-m0plus, the RP2040's instruction set, run on the same M3 model: ARMv6-M is a subset,
so the counts are the Cortex-M0+'s), each kernel call timed with SysTick and its output checked
against the numpy twin. For the four layer shapes of issue 18: instructions per call, per output,
per output beyond the MACs (call minus marginal x MACs, over outputs) and marginal per MAC (from
the same layer with twice the reduction), against the CMSIS-NN figures recorded in BASELINE; the
app model's predict and training step (default scheme: biases + classifier); code sizes; and,
when bench/xtensa.py has written build/bench/xtensa.json (`make bench-mcu` runs it first), the
emulated Xtensa LX7 rows under "xtensa". Writes build/bench/mcu.json.

    python -m bench.mcu [--firmware build/qemu/firmware.elf] [--out build/bench/mcu.json] [--bare-only]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
from tests.support import tinymodels  # noqa: E402

from edgetune.device import emulate  # noqa: E402
from edgetune.format.modelfile import write_etm  # noqa: E402

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
    from edgetune.format.modelfile import OP_CONV_2D, OP_DEPTHWISE_CONV_2D, OP_FULLY_CONNECTED

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


# ---------------------------------------------------------------------------------------------
# Bare metal (bench/mcu_bare): one kernel call at a time, both instruction sets.
# ---------------------------------------------------------------------------------------------

BARE = REPO / "bench" / "mcu_bare"
EDGETUNE = REPO / "native_modules" / "edgetune"

# ISA -> gcc flags. The ARMv6-M build (the RP2040's Cortex-M0+) runs on the same Cortex-M3
# model: ARMv6-M is a subset of ARMv7-M, so its instruction counts are the Cortex-M0+'s.
ISAS = {
    "M3": ["-mcpu=cortex-m3", "-mthumb"],
    "ARMv6-M": ["-mcpu=cortex-m0plus", "-mthumb"],
}

# CMSIS-NN (plain-C paths, no DSP extension) and TFLite Micro reference kernels, instructions per
# call for the same shapes and bit-identical outputs, as measured in issue 18's side-by-side
# bare-metal run (qemu mps2-an385, -icount shift=0, SysTick calibrated, -O2 -ffp-contract=off;
# ARMv6-M code built -mcpu=cortex-m0plus run on the M3 model). Neither library is in this
# repository; these are that run's figures, recorded here as the comparison baseline.
BASELINE_SOURCE = "issue 18 table (bare-metal qemu mps2-an385, -icount shift=0, -O2)"
BASELINE = {
    "CONV_2D 1x50x16 -> 46x24, k1x5": {"edgetune_before": {"M3": 368865, "ARMv6-M": 720276},
                                        "cmsis_nn": {"M3": 310843, "ARMv6-M": 706124},
                                        "tflm_ref": {"M3": 883484}},
    "FULLY_CONNECTED 48 -> 7": {"edgetune_before": {"M3": 2049, "ARMv6-M": 3731},
                                "cmsis_nn": {"M3": 1679, "ARMv6-M": 3085}, "tflm_ref": {"M3": 3986}},
    "FULLY_CONNECTED 256 -> 64": {"edgetune_before": {"M3": 54536, "ARMv6-M": 102268},
                                  "cmsis_nn": {"M3": 57817, "ARMv6-M": 105298}, "tflm_ref": {"M3": 167677}},
    "DEPTHWISE 1x50x16, k1x3": {"edgetune_before": {"M3": 72133, "ARMv6-M": 158048},
                                "cmsis_nn": {"M3": 130802, "ARMv6-M": 238713}, "tflm_ref": {"M3": 159026}},
}
TARGET_VS_CMSIS = 0.8  # issue 18: instructions per call <= 0.8 x CMSIS-NN's on both ISAs
TARGET_V6M_PER_MAC = 4.5  # issue 18: ARMv6-M marginal instructions per MAC, CONV_2D and FC
TARGET_TRAIN_OVER_FORWARD = 3.0  # issue 18: biases + classifier training step <= 3 x forward


def bare_shapes() -> dict:
    """name -> (model, partner model): each issue-18 shape as a one-layer model, and the same
    layer with a longer reduction (conv: 2x input channels; FC: 2x inputs; depthwise: a 1x7
    kernel, SAME padding both) and the same outputs, for the marginal cost per MAC."""
    ch = tinymodels.chain
    return {
        "CONV_2D 1x50x16 -> 46x24, k1x5": tuple(
            ch([("conv", 1, 5, 24, 1, True, False)], (1, 1, 50, c), seed=21) for c in (16, 32)),
        "FULLY_CONNECTED 48 -> 7": tuple(ch([("fc", 7, False)], (1, 1, 1, k), seed=22) for k in (48, 96)),
        "FULLY_CONNECTED 256 -> 64": tuple(ch([("fc", 64, True)], (1, 1, 1, k), seed=23) for k in (256, 512)),
        "DEPTHWISE 1x50x16, k1x3": tuple(
            ch([("dw", 1, k, 1, True, True)], (1, 1, 50, 16), seed=24) for k in (3, 7)),
    }


def _c_array(ctype: str, name: str, values) -> str:
    vals = ",".join(str(int(v)) for v in np.asarray(values).reshape(-1))
    return f"static const {ctype} {name}[] __attribute__((aligned(4))) = {{{vals}}};\n"


def _layer_case(tag: str, label: str, model, reps: int) -> tuple[str, str]:
    """C definitions calling the kernel of the model's only weight layer on random input, and
    the case table entry; the expected output is the numpy twin's (edgetune.twin.reference)."""
    from edgetune.twin import reference
    from edgetune.format.modelfile import NONE, OP_CONV_2D, OP_DEPTHWISE_CONV_2D, OP_FULLY_CONNECTED

    ly = model.layers[0]
    tin, tout = model.tensors[ly.input], model.tensors[ly.output]
    w = model.tensors[ly.weight]
    rng = np.random.default_rng(zlib.crc32(label.encode()))
    x = rng.integers(-128, 128, tin.size).astype(np.int8)
    y = reference.run_layer(model, ly, x.reshape((1,) + tuple(reference._nhwc(tin.shape)[1:])))
    c_out = len(ly.multipliers)
    src = _c_array("int8_t", f"{tag}_x", x) + _c_array("int8_t", f"{tag}_w", w.data)
    src += _c_array("int8_t", f"{tag}_y", y) + f"static int8_t {tag}_out[{y.size}];\n"
    src += _c_array("int32_t", f"{tag}_m", ly.multipliers) + _c_array("int32_t", f"{tag}_s", ly.shifts)
    bias = "NULL"
    if ly.bias != NONE:
        src += _c_array("int32_t", f"{tag}_b", model.tensors[ly.bias].data)
        bias = f"{tag}_b"
    src += f"static const et_per_channel_quant_t {tag}_q = {{{tag}_m, {tag}_s}};\n"
    if ly.op == OP_FULLY_CONNECTED:
        src += (f"static const et_fc_params_t {tag}_p = {{{ly.input_offset}, {ly.output_offset}, {ly.act_min}, "
                f"{ly.act_max}}};\n")
        call = f"et_fully_connected_s8(&{tag}_p, &{tag}_q, 1, {tin.size}, {tag}_x, {c_out}, {tag}_w, {bias}, {tag}_out)"
    else:
        fn = {OP_CONV_2D: "et_conv_s8", OP_DEPTHWISE_CONV_2D: "et_depthwise_conv_s8"}[ly.op]
        dims = [reference._nhwc(t) for t in (tin.shape, w.shape, tout.shape)]
        for nm, d in zip(("id", "fd", "od"), dims):
            src += f"static const et_dims_t {tag}_{nm} = {{{', '.join(str(v) for v in d)}}};\n"
        src += (f"static const et_conv_params_t {tag}_p = {{{ly.input_offset}, {ly.output_offset}, {ly.stride_h}, "
                f"{ly.stride_w}, {ly.pad_h}, {ly.pad_w}, {ly.depth_multiplier}, {ly.act_min}, {ly.act_max}}};\n")
        call = (f"{fn}(&{tag}_p, &{tag}_q, &{tag}_id, {tag}_x, &{tag}_fd, {tag}_w, {bias}, &{tag}_od, "
                f"{tag}_out)")
    src += f"static void {tag}_call(void) {{ (void){call}; }}\n"
    entry = f'    {{"{label}", {tag}_call, {tag}_out, {tag}_y, {y.size}, {reps}}},\n'
    return src, entry


def bare_cases_h(cases: list[tuple[str, object]], demo, reps: int) -> str:
    """cases.h for bench/mcu_bare/harness.c: (label, one-layer model) kernel cases, and the demo
    model's predict and training step unless demo is None."""
    src, entries = "", ""
    for k, (label, model) in enumerate(cases):
        s, e = _layer_case(f"c{k}", label, model, reps)
        src, entries = src + s, entries + e
    src += "static const bench_case_t CASES[] = {\n" + entries + "};\n"
    if demo is not None:
        from edgetune.twin import reference

        etm = write_etm(demo)
        rng = np.random.default_rng(7)
        x = rng.integers(-128, 128, demo.input_tensor.size).astype(np.int8)
        y = reference.forward(demo, x)
        src += "#define BENCH_MODEL 1\n#define MODEL_ARENA_MAX 65536\n"
        src += f"#define MODEL_REPS {reps}\n#define MODEL_CLASSES {demo.output_tensor.size}\n"
        src += _c_array("uint8_t", "MODEL_ETM", np.frombuffer(etm, np.uint8))
        src += _c_array("int8_t", "MODEL_INPUT", x) + _c_array("int8_t", "MODEL_EXPECT", y)
    return src


def bare_build(isa: str, cases_h: str, tmp: Path) -> Path:
    """harness + startup + every kernel (-O2, as the firmware builds them) + the engine (model.c,
    scheme.c, train*.c, forward.c, ...; -Os, as the ports build them) for one ISA -> ELF."""
    d = tmp / isa
    d.mkdir(parents=True, exist_ok=True)
    (d / "cases.h").write_text(cases_h)
    common = [*ISAS[isa], "-std=c99", "-ffp-contract=off", "-ffunction-sections", "-fdata-sections",
              "--specs=picolibc.specs", f"-I{d}", f"-I{EDGETUNE}", f"-I{EDGETUNE / 'kernels'}"]
    objs = []
    units = [(BARE / "harness.c", "-O2"), (BARE / "startup.c", "-O2")]
    units += [(p, "-O2") for p in sorted((EDGETUNE / "kernels").glob("*.c"))]
    units += [(p, "-Os") for p in sorted(EDGETUNE.glob("*.c"))]  # the engine (bindings/ aside)
    for src, opt in units:
        obj = d / (src.stem + ".o")
        subprocess.run(["arm-none-eabi-gcc", *common, opt, "-c", str(src), "-o", str(obj)], check=True)
        objs.append(str(obj))
    elf = d / "bench.elf"
    subprocess.run(["arm-none-eabi-gcc", *common, "-nostartfiles", "-T", str(BARE / "link.ld"),
                    "-Wl,--gc-sections", *objs, "-o", str(elf)], check=True)
    return elf


def bare_run(elf: Path, timeout: float = 600) -> list[dict]:
    proc = subprocess.run([emulate.QEMU_SYSTEM, "-machine", "mps2-an385", "-nographic", "-monitor", "null",
                           "-serial", "null", "-semihosting", "-icount", "shift=0", "-kernel", str(elf)],
                          capture_output=True, text=True, timeout=timeout)
    # semihosting console output goes to qemu's stderr
    rows = [json.loads(line[6:]) for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("BENCH ")]
    # exit status 1: the harness found outputs that differ from the twin's (reported in the rows)
    if proc.returncode not in (0, 1) or not rows or not any(r["kind"] == "case" for r in rows):
        raise RuntimeError(f"bare-metal bench {elf} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return rows


def _outputs(model) -> int:
    return model.output_tensor.size


def bare_bench(reps: int = 8, demo=None) -> dict:
    """Per ISA: instructions per call, per output and marginal per MAC of the issue-18 shapes,
    against the recorded CMSIS-NN figures; the demo model's predict and training step."""
    shapes = bare_shapes()
    demo = tinymodels.app_model() if demo is None else demo
    cases = [(name + variant, model) for name, models in shapes.items()
             for variant, model in zip(("", " (longer reduction)"), models)]
    cases_h = bare_cases_h(cases, demo, reps)
    out: dict = {"source": "bench/mcu_bare (bare metal, kernels -O2, model/train -Os, qemu mps2-an385, "
                           "-icount shift=0)",
                 "baseline": BASELINE_SOURCE, "isa": {}}
    with tempfile.TemporaryDirectory(prefix="edgetune-bare-") as tmp:
        for isa in ISAS:
            rows = bare_run(bare_build(isa, cases_h, Path(tmp)))
            if any(r["kind"] in ("fault", "error") for r in rows):
                raise RuntimeError(f"bare-metal bench ({isa}): {rows}")
            cal = next(r for r in rows if r["kind"] == "calibrate")
            ipt = cal["instructions"] / cal["ticks"]
            by = {r["name"]: r for r in rows if r["kind"] == "case"}
            res: dict = {"instructions_per_systick_tick": ipt, "layers": {}}
            for name, (m1, m2) in shapes.items():
                r1, r2 = by[name], by[name + " (longer reduction)"]
                i1 = (r1["ticks"] - r1["loop"]) * ipt / r1["reps"]
                i2 = (r2["ticks"] - r2["loop"]) * ipt / r2["reps"]
                a1, a2 = sum(_macs(m1).values()), sum(_macs(m2).values())
                marginal = (i2 - i1) / (a2 - a1)
                n_out = _outputs(m1)
                cm = BASELINE[name]["cmsis_nn"][isa]
                row = {"instructions_per_call": round(i1), "macs": a1, "outputs": n_out,
                       "instructions_per_output": i1 / n_out,
                       "instructions_per_output_beyond_macs": (i1 - marginal * a1) / n_out,
                       "marginal_instructions_per_mac": marginal,
                       "longer_reduction": {"macs": a2, "instructions_per_call": round(i2)},
                       "same_bits_as_twin": bool(r1["same_bits"] and r2["same_bits"]),
                       "cmsis_nn_instructions_per_call": cm, "vs_cmsis_nn": i1 / cm,
                       "edgetune_before_instructions_per_call": BASELINE[name]["edgetune_before"][isa],
                       "meets_target": i1 <= TARGET_VS_CMSIS * cm}
                if isa == "ARMv6-M" and not name.startswith("DEPTHWISE"):
                    row["meets_per_mac_target"] = marginal <= TARGET_V6M_PER_MAC
                res["layers"][name] = row
            mr = next((r for r in rows if r["kind"] == "model"), None)
            if mr is not None:
                fwd = (mr["forward"] - mr["loop"]) * ipt / mr["reps"]
                step = (mr["step"] - mr["loop"]) * ipt / mr["reps"]
                res["demo_model"] = {"model": "tests/support/tinymodels.app_model() (the device app's qemu model), "
                                              "default scheme (biases + classifier)",
                                     "instructions_per_predict": round(fwd), "instructions_per_train_step": round(step),
                                     "train_over_predict": step / fwd, "arena_bytes": mr["arena"],
                                     "same_bits_as_twin": bool(mr["same_bits"]), "trained_crc": mr["trained_crc"],
                                     "meets_target": step <= TARGET_TRAIN_OVER_FORWARD * fwd}
            res["code_size_bytes"] = _bare_size(Path(tmp) / isa)
            out["isa"][isa] = res
    return out


def _bare_size(d: Path) -> dict:
    """text+data bytes of the kernels and of the training core (the engine's files but refit.c:
    model, scheme, forward/backward, train plan and state, ops table, errors) in one ISA's
    bare-metal build (objects before --gc-sections: every function of each file)."""
    def size(o: Path) -> int:
        t = subprocess.run(["arm-none-eabi-size", str(o)], capture_output=True, text=True, check=True)
        text, data = (int(v) for v in t.stdout.splitlines()[1].split()[:2])
        return text + data

    kern = {p.stem: size(d / (p.stem + ".o")) for p in sorted((EDGETUNE / "kernels").glob("*.c"))}
    forward = {k: kern[k] for k in ("et_conv_s8", "et_depthwise_conv_s8", "et_fully_connected_s8",
                                    "et_train_forward_s8")}
    return {"kernels_O2": sum(kern.values()), "forward_kernels_O2": forward,
            "model_scheme_train_Os": sum(size(d / f"{p.stem}.o") for p in sorted(EDGETUNE.glob("*.c"))
                                         if p.stem != "refit")}


def _print_bare(bare: dict) -> None:
    for isa, v in bare["isa"].items():
        print(f"{isa} (bare metal, {v['instructions_per_systick_tick']:.2f} instructions per SysTick tick):")
        for name, r in v["layers"].items():
            extra = ""
            if "meets_per_mac_target" in r:
                extra = f", per-MAC target <= {TARGET_V6M_PER_MAC}: {'met' if r['meets_per_mac_target'] else 'NOT met'}"
            print(f"  {name:32s} {r['instructions_per_call']:7d}/call ({r['vs_cmsis_nn']:.3f}x CMSIS-NN "
                  f"{r['cmsis_nn_instructions_per_call']}, target <= {TARGET_VS_CMSIS}: "
                  f"{'met' if r['meets_target'] else 'NOT met'}), {r['instructions_per_output']:.1f}/output, "
                  f"{r['instructions_per_output_beyond_macs']:.1f}/output beyond the MACs, "
                  f"{r['marginal_instructions_per_mac']:.2f}/MAC{extra}"
                  f"{'' if r['same_bits_as_twin'] else '  OUTPUT DIFFERS FROM THE TWIN'}")
        d = v.get("demo_model")
        if d:
            print(f"  app model: predict {d['instructions_per_predict']}, train step {d['instructions_per_train_step']} "
                  f"({d['train_over_predict']:.2f}x, target <= {TARGET_TRAIN_OVER_FORWARD}: "
                  f"{'met' if d['meets_target'] else 'NOT met'}), arena {d['arena_bytes']} B"
                  f"{'' if d['same_bits_as_twin'] else '  OUTPUT DIFFERS FROM THE TWIN'}")
        c = v["code_size_bytes"]
        print(f"  code: kernels {c['kernels_O2']} B (-O2), model/scheme/train {c['model_scheme_train_Os']} B (-Os)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--firmware", type=Path, default=None, help="qemu firmware ELF (default build/qemu/firmware.elf)")
    ap.add_argument("--out", type=Path, default=REPO / "build" / "bench" / "mcu.json")
    ap.add_argument("--reps", type=int, default=4)
    ap.add_argument("--bare-only", action="store_true",
                    help="only the bare-metal per-call figures of both ISAs (no MicroPython firmware needed)")
    args = ap.parse_args(argv)

    bare = bare_bench(reps=8)
    _print_bare(bare)
    if args.bare_only:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"bare_metal": bare}, indent=2) + "\n")
        print(f"wrote {args.out}")
        return 0

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
    result["bare_metal"] = bare
    # The emulated Xtensa LX7 rows (bench/xtensa.py, run first by `make bench-mcu`): exact
    # instruction traces of the xtensawin .mpy on boards/qemu-xtensa, beside the ARM figures.
    xt = args.out.parent / "xtensa.json"
    if xt.exists():
        result["xtensa"] = json.loads(xt.read_text())
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
