"""Seeded random small Keras models, converted to full-integer int8 .tflite, for parity tests.

`tflite_model(seed)` returns the .tflite bytes of model number `seed`. Each model is a random
mix of the ops the project supports (docs/etm-format.md): Conv1D/Conv2D, DepthwiseConv1D/2D
(depth multiplier 1 or 2), Max/AveragePooling 1D/2D, GlobalAveragePooling 1D/2D, Flatten +
Dense, Dense, with fused ReLU / ReLU6 (as `activation=`, or as a separate `layers.ReLU` right
after the layer, which the converter folds in), random channel counts, kernel sizes, strides,
SAME/VALID paddings, with and without bias, and random weight/bias/input scales so that the
quantization parameters (zero points, multipliers, shifts) vary. The output is logits (no
SOFTMAX).

Conversion uses the real TFLite converter (int8 weights/activations, int8 input and output,
representative dataset; a static batch of 1 so that Flatten becomes a plain RESHAPE), then
`edit_tflite` removes zero biases and widens some RELU/RELU6 output ranges (paths the converter
alone never produces). Results are cached as build/testmodels/v<GEN_VERSION>/<seed>.tflite
(+ .json with the architecture), so TensorFlow is imported only when a model is missing.
Bump GEN_VERSION whenever the generator changes what a seed produces.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

GEN_VERSION = 3
ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / "build" / "testmodels" / f"v{GEN_VERSION}"

ACTS = ["none", "relu", "relu6", "relu_layer", "relu6_layer"]


def _spec(seed: int) -> dict:
    """A random architecture as a JSON-able dict (pure numpy, no TensorFlow)."""
    rng = np.random.default_rng([GEN_VERSION, seed])
    two_d = bool(rng.random() < 0.5)
    if two_d:
        shape = [int(rng.integers(4, 15)), int(rng.integers(4, 15)), int(rng.integers(1, 5))]
    else:
        shape = [int(rng.integers(6, 49)), int(rng.integers(1, 7))]
    spatial = shape[:-1]
    ch = shape[-1]
    layers = []

    def pick_act() -> str:
        return str(rng.choice(ACTS, p=[0.3, 0.25, 0.15, 0.15, 0.15]))

    def kernel(limit: list[int]) -> list[int]:
        k = [int(rng.integers(1, min(5, s) + 1)) for s in limit]
        if two_d and rng.random() < 0.6:
            k = [min(k[0], k[1])] * 2 if rng.random() < 0.5 else k
        return k

    def out_size(sizes: list[int], k: list[int], s: list[int], pad: str) -> list[int]:
        if pad == "same":
            return [-(-n // st) for n, st in zip(sizes, s)]
        return [-(-(n - kk + 1) // st) for n, kk, st in zip(sizes, k, s)]

    n_feat = int(rng.integers(1, 5))
    for _ in range(n_feat):
        kind = str(rng.choice(["conv", "dw", "maxpool", "avgpool"], p=[0.4, 0.25, 0.175, 0.175]))
        if min(spatial) < 2 and kind in ("maxpool", "avgpool"):
            kind = "conv"
        pad = str(rng.choice(["same", "valid"], p=[0.5, 0.5] if kind in ("conv", "dw") else [0.7, 0.3]))
        if kind in ("conv", "dw"):
            # SAME padding may use a kernel wider than the input (windows clipped on both sides)
            k = kernel([5 if pad == "same" else n for n in spatial])
            s = [int(rng.choice([1, 1, 2, 3])) if n > 2 else 1 for n in spatial]
            if two_d and rng.random() < 0.5:
                s = [s[0]] * 2
            ly = dict(kind=kind, kernel=k, strides=s, padding=pad, act=pick_act(),
                      use_bias=bool(rng.random() < 0.75),
                      w_std=float(np.exp(rng.uniform(np.log(0.05), np.log(1.0)))),
                      b_std=float(np.exp(rng.uniform(np.log(0.01), np.log(1.0)))))
            if kind == "conv":
                ly["filters"] = int(rng.integers(2, 13))  # C_out=1 Conv1D+bias converts to CONV+ADD
                ch = ly["filters"]
            else:
                ly["depth_multiplier"] = int(rng.choice([1, 2]))
                ch *= ly["depth_multiplier"]
        else:
            p = [int(rng.integers(2, min(3, n) + 1)) for n in spatial]
            s = [int(rng.integers(1, pp + 1)) for pp in p]
            k = p
            ly = dict(kind=kind, pool=p, strides=s, padding=pad)
        new = out_size(spatial, k, s, pad)
        if min(new) < 1:
            continue
        spatial = new
        layers.append(ly)
        if ch > 24:
            break

    head = str(rng.choice(["gap_dense", "flatten_dense", "gap", "dense2", "none"], p=[0.35, 0.3, 0.1, 0.15, 0.1]))
    if head == "none" and not layers:
        head = "gap"
    gap_keepdims = bool(rng.random() < 0.2)
    dense = []
    if head in ("gap_dense", "flatten_dense", "dense2"):
        if head == "dense2":
            dense.append(dict(units=int(rng.integers(2, 17)), act=str(rng.choice(["relu", "relu6", "relu_layer", "none"])),
                              use_bias=bool(rng.random() < 0.8)))
        dense.append(dict(units=int(rng.integers(2, 11)), act="none", use_bias=bool(rng.random() < 0.85)))
        for d in dense:
            d["w_std"] = float(np.exp(rng.uniform(np.log(0.05), np.log(1.0))))
            d["b_std"] = float(np.exp(rng.uniform(np.log(0.01), np.log(1.0))))
    return dict(seed=seed, version=GEN_VERSION, input_shape=shape, layers=layers, head=head,
                gap_keepdims=gap_keepdims, dense=dense,
                in_scale=float(np.exp(rng.uniform(np.log(0.2), np.log(5.0)))),
                in_shift=float(rng.uniform(-1.0, 1.0)),
                strip_bias=bool(rng.random() < 0.5), widen_relu=bool(rng.random() < 0.5),
                edit_seed=int(rng.integers(1 << 30)))


def _activation(x, act: str):
    from keras import layers

    if act == "relu_layer":
        return layers.ReLU()(x)
    if act == "relu6_layer":
        return layers.ReLU(max_value=6.0)(x)
    return x


def _fused(act: str):
    import tensorflow as tf

    return {"relu": "relu", "relu6": tf.nn.relu6}.get(act)


def build_keras(spec: dict):
    """The Keras model of a spec (random weights drawn from the spec's seed)."""
    import keras
    from keras import initializers, layers

    keras.utils.set_random_seed(spec["seed"] * 7919 + GEN_VERSION)
    two_d = len(spec["input_shape"]) == 3
    inp = keras.Input(tuple(spec["input_shape"]), batch_size=1)  # static shapes: Flatten -> RESHAPE
    x = inp
    for ly in spec["layers"]:
        k = tuple(ly.get("kernel", ly.get("pool"))) if two_d else ly.get("kernel", ly.get("pool"))[0]
        s = tuple(ly["strides"]) if two_d else ly["strides"][0]
        if ly["kind"] in ("conv", "dw"):
            init = dict(use_bias=ly["use_bias"], activation=_fused(ly["act"]),
                        bias_initializer=initializers.RandomNormal(stddev=ly["b_std"]))
            if ly["kind"] == "conv":
                cls = layers.Conv2D if two_d else layers.Conv1D
                x = cls(ly["filters"], k, strides=s, padding=ly["padding"],
                        kernel_initializer=initializers.RandomNormal(stddev=ly["w_std"]), **init)(x)
            else:
                cls = layers.DepthwiseConv2D if two_d else layers.DepthwiseConv1D
                x = cls(k, strides=s, padding=ly["padding"], depth_multiplier=ly["depth_multiplier"],
                        depthwise_initializer=initializers.RandomNormal(stddev=ly["w_std"]), **init)(x)
            x = _activation(x, ly["act"])
        else:
            if ly["kind"] == "maxpool":
                cls = layers.MaxPooling2D if two_d else layers.MaxPooling1D
            else:
                cls = layers.AveragePooling2D if two_d else layers.AveragePooling1D
            x = cls(k, strides=s, padding=ly["padding"])(x)
    head = spec["head"]
    if head in ("gap", "gap_dense", "dense2"):
        cls = layers.GlobalAveragePooling2D if two_d else layers.GlobalAveragePooling1D
        x = cls(keepdims=spec["gap_keepdims"])(x)
        if spec["gap_keepdims"] and spec["dense"]:
            x = layers.Flatten()(x)
    elif head == "flatten_dense":
        x = layers.Flatten()(x)
    for d in spec["dense"]:
        x = layers.Dense(d["units"], use_bias=d["use_bias"], activation=_fused(d["act"]),
                         kernel_initializer=initializers.RandomNormal(stddev=d["w_std"]),
                         bias_initializer=initializers.RandomNormal(stddev=d["b_std"]))(x)
        x = _activation(x, d["act"])
    return keras.Model(inp, x)


def representative(spec: dict, n: int = 32) -> np.ndarray:
    """Float calibration inputs of the spec's input distribution, shape (n, *input_shape)."""
    rng = np.random.default_rng([GEN_VERSION, spec["seed"], 1])
    x = rng.standard_normal((n, *spec["input_shape"])) * spec["in_scale"] + spec["in_shift"]
    return x.astype(np.float32)


def convert(model, calib: np.ndarray) -> bytes:
    """Full-integer int8 conversion (int8 input and output) with the real TFLite converter."""
    import tensorflow as tf

    def rep():
        for x in calib:
            yield [x[None]]

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = rep
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    return conv.convert()


_MEAN, _RESHAPE, _CONV, _DW, _FC, _MAXPOOL, _AVGPOOL = 40, 22, 3, 4, 9, 17, 1  # BuiltinOperator codes
_PASS_THROUGH = {_RESHAPE, 70, 43, _MAXPOOL, _AVGPOOL}  # + EXPAND_DIMS, SQUEEZE: same quantization in and out


def edit_tflite(data: bytes, strip_bias: bool, widen_relu: bool, seed: int) -> bytes:
    """Post-conversion edits that keep the model valid but reach kernel paths the converter never
    emits on its own:

    - strip_bias: the converter gives every CONV_2D / DEPTHWISE_CONV_2D a bias operand (zeros for
      `use_bias=False`); an all-zero bias is removed (operand -1), which TFLM allows.
    - widen_relu: the converter quantizes a fused RELU/RELU6 output over exactly [0, max], so the
      activation clamp never bites. Here some such outputs get a wider scale and a zero point above
      -128 (act_min > -128, and act_max < 127 for RELU6); the new quantization is carried through
      the following reshapes/pools, and the consumer's bias scale is set to s_in * s_w[c].
    """
    from tflite_micro.python.tflite_micro import runtime

    if not (strip_bias or widen_relu):
        return data
    import flatbuffers

    rng = np.random.default_rng(seed)
    mo = runtime.convert_bytearray_to_object(data)
    g = mo.subgraphs[0]
    code = [runtime.get_builtin_code_from_operator_code(mo.operatorCodes[op.opcodeIndex]) for op in g.operators]
    consumer = {int(op.inputs[0]): k for k, op in enumerate(g.operators)}
    for k, op in enumerate(g.operators):
        if strip_bias and code[k] in (_CONV, _DW) and len(op.inputs) > 2 and op.inputs[2] >= 0:
            buf = mo.buffers[g.tensors[op.inputs[2]].buffer].data
            if buf is not None and not np.any(np.asarray(buf)):
                op.inputs = np.array(op.inputs[:2], np.int32)  # an absent optional operand
        act = getattr(op.builtinOptions, "fusedActivationFunction", 0)
        if widen_relu and code[k] in (_CONV, _DW, _FC) and act in (1, 3) and rng.random() < 0.7:
            q = g.tensors[op.outputs[0]].quantization
            scale = float(q.scale[0]) * float(rng.uniform(0.8, 3.0))
            zp = int(rng.integers(-110, 30))
            t = int(op.outputs[0])
            while True:
                tq = g.tensors[t].quantization
                tq.scale, tq.zeroPoint = [np.float32(scale)], [zp]
                c = consumer.get(t)
                if c is None:
                    break
                if code[c] in _PASS_THROUGH:
                    t = int(g.operators[c].outputs[0])
                    continue
                cop = g.operators[c]
                if code[c] in (_CONV, _DW, _FC) and len(cop.inputs) > 2 and cop.inputs[2] >= 0:
                    wq = g.tensors[cop.inputs[1]].quantization
                    g.tensors[cop.inputs[2]].quantization.scale = [np.float32(scale * float(w)) for w in wq.scale]
                break
    b = flatbuffers.Builder(len(data) + 1024)
    b.Finish(mo.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def spec(seed: int) -> dict:
    return _spec(seed)


def tflite_model(seed: int) -> bytes:
    """The .tflite bytes of random model `seed` (cached under build/testmodels/)."""
    path = CACHE / f"{seed}.tflite"
    if path.exists():
        return path.read_bytes()
    sp = _spec(seed)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    data = convert(build_keras(sp), representative(sp))
    data = edit_tflite(data, sp["strip_bias"], sp["widen_relu"], sp["edit_seed"])
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    (CACHE / f"{seed}.json").write_text(json.dumps(sp, indent=1))
    return data


def tflite_named(name: str, build, input_shape: tuple[int, ...], seed: int = 0) -> bytes:
    """Convert a fixed Keras model `build()` (standard-normal calibration data), cached under
    build/testmodels/ as `<name>.tflite`: for hand-written test models."""
    path = CACHE / f"{name}.tflite"
    if path.exists():
        return path.read_bytes()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    keras.utils.set_random_seed(seed)
    calib = np.random.default_rng(seed).standard_normal((32, *input_shape)).astype(np.float32)
    data = convert(build(), calib)
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return data


def tflite_models(seeds) -> dict[int, bytes]:
    return {s: tflite_model(s) for s in seeds}


if __name__ == "__main__":
    import sys
    import time

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 60
    t0 = time.time()
    for s in range(n):
        b = tflite_model(s)
        print(s, len(b), json.dumps(_spec(s))[:160])
    print(f"{n} models in {time.time() - t0:.1f} s")
