"""Small hand-built, trainable .etm models for the firmware tests and bench/mcu.py.

`chain(spec, ...)` builds a chain of CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED / pools /
MEAN layers from a short spec with consistent float scales (so training gradients are
meaningful), requantization parameters from host/edgetune/convert/prepare.py, and metadata the device
app (firmware/app.py) understands (class_names, sample_rate). Pure numpy, deterministic.
"""

from __future__ import annotations

import math

import numpy as np

from edgetune.format.modelfile import (
    ACT_NONE, ACT_RELU, DT_INT8, DT_INT32, OP_AVERAGE_POOL_2D, OP_CONV_2D, OP_DEPTHWISE_CONV_2D,
    OP_FULLY_CONNECTED, OP_MAX_POOL_2D, OP_MEAN, EtmModel, Layer, Tensor, read_etm, write_etm,
)
from edgetune.convert.prepare import PADDING_SAME, PADDING_VALID, compute_padding, conv_multipliers, fc_multipliers, mean_params


def chain(spec: list[tuple], input_shape: tuple[int, int, int, int], seed: int = 0, in_scale: float = 1 / 16,
          in_zp: int = 0, meta: dict | None = None) -> EtmModel:
    """Build a model. spec items:
    ("conv", kh, kw, c_out, stride, relu, same) ("dw", kh, kw, stride, relu, same)
    ("fc", c_out, relu) ("max" | "avg", kh, kw, stride) ("mean",)
    """
    rng = np.random.default_rng([77, seed])
    tensors = [Tensor(DT_INT8, input_shape, zero_point=in_zp, scale=in_scale, name="input")]
    layers: list[Layer] = []

    def add(t: Tensor) -> int:
        tensors.append(t)
        return len(tensors) - 1

    def weights(shape, c_out: int, axis: int, taps: int):
        data = rng.integers(-127, 128, shape).astype(np.int8)
        sc = rng.uniform(0.5, 2.0, c_out).astype(np.float32) * np.float32(0.5 / (127 * math.sqrt(taps)))
        return Tensor(DT_INT8, shape, data=data, quant_axis=axis, scales=sc.astype(np.float32)), sc

    def bias(in_scale: float, wt: Tensor, c_out: int) -> int:
        sc = (np.float32(in_scale) * wt.scales).astype(np.float32)
        data = np.round(rng.normal(0, 0.1, c_out) / sc).astype(np.int64)
        data = np.clip(data, -(1 << 24), 1 << 24).astype(np.int32).reshape(c_out, 1, 1, 1)
        return add(Tensor(DT_INT32, (c_out, 1, 1, 1), data=data, quant_axis=0, scales=sc))

    def out_tensor(shape, scale: float, relu: bool):
        zp = -128 if relu else int(rng.integers(-20, 20))
        return add(Tensor(DT_INT8, shape, zero_point=zp, scale=scale)), zp

    cur = 0
    for item in spec:
        kind = item[0]
        t_in = tensors[cur]
        _, h, w, c = t_in.shape
        if kind in ("conv", "dw"):
            if kind == "conv":
                _, kh, kw, c_out, stride, relu, same = item
                wt, ws = weights((c_out, kh, kw, c), c_out, 0, kh * kw * c)
            else:
                _, kh, kw, stride, relu, same = item
                c_out = c
                wt, ws = weights((1, kh, kw, c_out), c_out, 3, kh * kw)
            wi = add(wt)
            bi = bias(t_in.scale, wt, c_out)
            p = compute_padding(PADDING_SAME if same else PADDING_VALID, h, w, kh, kw, stride, stride)
            oi, ozp = out_tensor((1, p.out_h, p.out_w, c_out), t_in.scale * 2.0, relu)
            mult, shift = conv_multipliers(t_in.scale, ws, tensors[oi].scale, c_out)
            layers.append(Layer(OP_CONV_2D if kind == "conv" else OP_DEPTHWISE_CONV_2D, cur, oi, weight=wi,
                                bias=bi, activation=ACT_RELU if relu else ACT_NONE, stride_h=stride,
                                stride_w=stride, filter_h=kh, filter_w=kw, pad_h=p.pad_h, pad_w=p.pad_w,
                                input_offset=-t_in.zero_point, output_offset=ozp,
                                act_min=ozp if relu else -128, act_max=127, multipliers=mult, shifts=shift))
        elif kind == "fc":
            _, c_out, relu = item
            kin = t_in.size
            wt, ws = weights((c_out, 1, 1, kin), c_out, 0, kin)
            wi = add(wt)
            bi = bias(t_in.scale, wt, c_out)
            oi, ozp = out_tensor((1, 1, 1, c_out), t_in.scale * 2.0 if relu else 0.08, relu)
            mult, shift = fc_multipliers(t_in.scale, ws, tensors[oi].scale, c_out)
            layers.append(Layer(OP_FULLY_CONNECTED, cur, oi, weight=wi, bias=bi,
                                activation=ACT_RELU if relu else ACT_NONE, input_offset=-t_in.zero_point,
                                output_offset=ozp, act_min=ozp if relu else -128, act_max=127,
                                multipliers=mult, shifts=shift))
        elif kind in ("max", "avg"):
            _, kh, kw, stride = item
            p = compute_padding(PADDING_VALID, h, w, kh, kw, stride, stride)
            oi = add(Tensor(DT_INT8, (1, p.out_h, p.out_w, c), zero_point=t_in.zero_point, scale=t_in.scale))
            layers.append(Layer(OP_MAX_POOL_2D if kind == "max" else OP_AVERAGE_POOL_2D, cur, oi,
                                stride_h=stride, stride_w=stride, filter_h=kh, filter_w=kw,
                                input_offset=-t_in.zero_point, output_offset=t_in.zero_point))
        elif kind == "mean":
            ozp = int(rng.integers(-20, 20))
            mp = mean_params(t_in.scale, t_in.zero_point, t_in.scale, ozp, h * w)
            oi = add(Tensor(DT_INT8, (1, 1, 1, c), zero_point=ozp, scale=t_in.scale))
            layers.append(Layer(OP_MEAN, cur, oi, input_offset=-t_in.zero_point, output_offset=ozp,
                                multipliers=np.array([mp.multiplier], np.int32),
                                shifts=np.array([mp.shift], np.int32), p0=mp.p0))
        else:
            raise ValueError(f"unknown layer kind {kind!r}")
        cur = layers[-1].output
    return read_etm(write_etm(EtmModel(tensors, layers, 0, cur, meta=dict(meta or {}))))


def app_model(window: int = 16, classes: tuple[str, ...] = ("rest", "walk", "wave")) -> EtmModel:
    """A small model the device app runs: (1, 1, window, 6) IMU windows -> len(classes) logits.

    Input scale 1/16, zero point 0: replayed samples that are multiples of 1/16 quantize
    exactly in float32 (qemu) and float64 (unix port) alike.
    """
    spec = [("conv", 1, 5, 8, 1, True, True), ("dw", 1, 3, 2, True, True), ("mean",), ("fc", len(classes), False)]
    return chain(spec, (1, 1, window, 6), seed=3,
                 meta={"class_names": list(classes), "sample_rate": 50, "step": window // 2})


def session_csv(classes: tuple[str, ...], per_class: int, seed: int = 0) -> str:
    """A replay session (ax..gz,label CSV as data.write_session writes) whose values are
    multiples of 1/16 in [-6, 6]: each class has its own mean pattern plus noise."""
    rng = np.random.default_rng([5, seed])
    lines = ["ax,ay,az,gx,gy,gz,label"]
    for k, name in enumerate(classes):
        mean = rng.integers(-40, 40, 6)
        for _ in range(per_class):
            q = np.clip(mean + rng.integers(-24, 25, 6), -96, 96)
            lines.append(",".join(f"{v / 16:g}" for v in q) + f",{name}")
    return "\n".join(lines) + "\n"
