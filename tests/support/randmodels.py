"""Random .etm models with every op (pure numpy) and the MicroPython runner that predicts them with
the C module and checks every output, info() figure and class against the numpy twin
(tests/unix/test_unix_module.py, tests/unix/test_unix_malformed.py, tests/qemu/test_natmod_qemu.py).
"""

from __future__ import annotations

import ast
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest

from edgetune.twin import memory, reference
from edgetune.format.modelfile import (
    ACT_NONE, ACT_RELU, ACT_RELU6, DT_INT8, DT_INT32, NONE, OP_AVERAGE_POOL_2D, OP_CONV_2D,
    OP_DEPTHWISE_CONV_2D, OP_FULLY_CONNECTED, OP_MAX_POOL_2D, OP_MEAN, OP_NAMES, EtmModel, Layer,
    Tensor, write_etm,
)
from edgetune.convert.prepare import PADDING_SAME, PADDING_VALID, compute_padding, mean_params

ACT_NAMES = {ACT_NONE: "NONE", ACT_RELU: "RELU", ACT_RELU6: "RELU6"}


# --------------------------------------------------------------------------------------------
# Random models (pure numpy)
# --------------------------------------------------------------------------------------------


def _shift_for(rng: np.random.Generator, acc_scale: float) -> int:
    """A shift that maps accumulators of magnitude ~acc_scale to ~±64 (plus noise), or, now and
    then, any legal shift (saturating outputs are a legitimate case too)."""
    if rng.random() < 0.08:
        return int(rng.integers(-31, 31))
    s = 5 - int(round(math.log2(max(acc_scale, 1.0)))) + int(rng.integers(-2, 3))
    return int(np.clip(s, -31, 30))


def _requant(rng: np.random.Generator, n: int, acc_scale: float) -> tuple[np.ndarray, np.ndarray]:
    mult = rng.integers(1 << 30, 1 << 31, n, dtype=np.int64).astype(np.int32)
    if rng.random() < 0.5:  # per-tensor style: one shift for all channels
        shift = np.full(n, _shift_for(rng, acc_scale), np.int32)
    else:
        shift = np.array([_shift_for(rng, acc_scale) for _ in range(n)], np.int32)
    return mult, shift


def _clamp(rng: np.random.Generator, zp: int) -> tuple[int, int, int]:
    r = rng.random()
    if r < 0.5:
        return ACT_NONE, -128, 127
    if r < 0.75:
        return ACT_RELU, max(-128, zp), 127
    return ACT_RELU6, max(-128, zp), min(127, zp + int(rng.integers(1, 200)))


def _window(rng: np.random.Generator, h: int, w: int, limit: int = 5):
    """Random filter/stride/padding for an (h, w) input; returns (kh, kw, sh, sw, Padding)."""
    kh = int(rng.integers(1, min(limit, h) + 1)) if rng.random() < 0.8 else int(rng.integers(1, limit + 1))
    kw = int(rng.integers(1, min(limit, w) + 1)) if rng.random() < 0.8 else int(rng.integers(1, limit + 1))
    sh, sw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    pad = PADDING_SAME if (kh > h or kw > w or rng.random() < 0.5) else PADDING_VALID
    return kh, kw, sh, sw, compute_padding(pad, h, w, kh, kw, sh, sw)


def _weight(rng: np.random.Generator, shape, data: np.ndarray, c_out: int, axis: int) -> Tensor:
    if rng.random() < 0.5:  # per-channel scales
        return Tensor(DT_INT8, shape, data=data, quant_axis=axis,
                      scales=rng.uniform(0.001, 0.1, c_out).astype(np.float32))
    return Tensor(DT_INT8, shape, data=data, scale=float(rng.uniform(0.001, 0.1)))


def _maybe_bias(rng: np.random.Generator, add, in_scale: float, wt: Tensor, c_out: int, acc_scale: float) -> int:
    """A (C_out, 1, 1, 1) int32 bias with scale s_in * s_w (as export.py writes it), or NONE."""
    if rng.random() < 0.3:
        return NONE
    lim = int(acc_scale) + 1 if rng.random() < 0.9 else 1 << 24  # now and then a dominating bias
    data = rng.integers(-lim, lim, (c_out, 1, 1, 1)).astype(np.int32)
    if wt.scales is not None:
        return add(Tensor(DT_INT32, (c_out, 1, 1, 1), data=data, quant_axis=0,
                          scales=(np.float32(in_scale) * wt.scales).astype(np.float32)))
    return add(Tensor(DT_INT32, (c_out, 1, 1, 1), data=data, scale=float(np.float32(in_scale) * np.float32(wt.scale))))


def random_model(seed: int, max_layers: int = 5, wide: bool = False) -> EtmModel:
    """A random valid chain of the six ops (1-D inputs are (1, 1, T, C)); `wide` gives up to 48
    channels (long dot products) on small spatial sizes."""
    rng = np.random.default_rng([7, seed, int(wide)])
    max_c = 49 if wide else 9
    if rng.random() < 0.4:
        h, w = 1, int(rng.integers(1, 16 if wide else 40))
    else:
        h, w = int(rng.integers(1, 8 if wide else 13)), int(rng.integers(1, 8 if wide else 13))
    c = int(rng.integers(1, max_c - 2))
    zp = int(rng.integers(-128, 128))
    tensors = [Tensor(DT_INT8, (1, h, w, c), zero_point=zp, scale=float(rng.uniform(0.001, 1)), name="input")]
    # Float scales are metadata for inference but complete and consistent (bias = s_in * s_w),
    # as the exporter writes them and training needs them.
    layers: list[Layer] = []
    cur = 0

    def add(t: Tensor) -> int:
        tensors.append(t)
        return len(tensors) - 1

    n_layers = int(rng.integers(1, max_layers + 1))
    for _ in range(n_layers):
        _, h, w, c = tensors[cur].shape
        zp = tensors[cur].zero_point
        ops = [OP_CONV_2D, OP_DEPTHWISE_CONV_2D, OP_MAX_POOL_2D, OP_AVERAGE_POOL_2D, OP_FULLY_CONNECTED]
        if h * w > 1:
            ops.append(OP_MEAN)
        op = int(rng.choice(ops))
        out_zp = int(rng.integers(-128, 128))
        if op in (OP_CONV_2D, OP_DEPTHWISE_CONV_2D):
            kh, kw, sh, sw, p = _window(rng, h, w)
            dm = int(rng.integers(1, 4 if c < 16 else 2)) if op == OP_DEPTHWISE_CONV_2D else 1
            c_out = c * dm if op == OP_DEPTHWISE_CONV_2D else int(rng.integers(1, max_c))
            wshape = (c_out, kh, kw, c) if op == OP_CONV_2D else (1, kh, kw, c_out)
            wdata = rng.integers(-127, 128, wshape).astype(np.int8)
            wi = add(_weight(rng, wshape, wdata, c_out, 0 if op == OP_CONV_2D else 3))
            taps = kh * kw * (c if op == OP_CONV_2D else 1)
            acc_scale = 73.0 * 100 * math.sqrt(taps)
            bi = _maybe_bias(rng, add, tensors[cur].scale, tensors[wi], c_out, acc_scale)
            mult, shift = _requant(rng, c_out, acc_scale)
            act, lo, hi = _clamp(rng, out_zp)
            oi = add(Tensor(DT_INT8, (1, p.out_h, p.out_w, c_out), zero_point=out_zp, scale=float(rng.uniform(0.01, 1))))
            layers.append(Layer(op, cur, oi, weight=wi, bias=bi, activation=act, stride_h=sh, stride_w=sw,
                                filter_h=kh, filter_w=kw, pad_h=p.pad_h, pad_w=p.pad_w, depth_multiplier=dm,
                                input_offset=-zp, output_offset=out_zp, act_min=lo, act_max=hi,
                                multipliers=mult, shifts=shift))
        elif op in (OP_MAX_POOL_2D, OP_AVERAGE_POOL_2D):
            kh, kw, sh, sw, p = _window(rng, h, w, limit=4)
            act, lo, hi = _clamp(rng, zp) if rng.random() < 0.3 else (ACT_NONE, -128, 127)
            oi = add(Tensor(DT_INT8, (1, p.out_h, p.out_w, c), zero_point=zp, scale=tensors[cur].scale))
            layers.append(Layer(op, cur, oi, activation=act, stride_h=sh, stride_w=sw, filter_h=kh, filter_w=kw,
                                pad_h=p.pad_h, pad_w=p.pad_w, act_min=lo, act_max=hi))
        elif op == OP_FULLY_CONNECTED:
            k = h * w * c
            c_out = int(rng.integers(1, max_c + 2))
            wdata = rng.integers(-127, 128, (c_out, 1, 1, k)).astype(np.int8)
            wi = add(_weight(rng, (c_out, 1, 1, k), wdata, c_out, 0))
            acc_scale = 73.0 * 100 * math.sqrt(k)
            bi = _maybe_bias(rng, add, tensors[cur].scale, tensors[wi], c_out, acc_scale)
            if rng.random() < 0.5:  # per-tensor FC: one multiplier repeated
                m1, s1 = _requant(rng, 1, acc_scale)
                mult, shift = np.repeat(m1, c_out), np.repeat(s1, c_out)
            else:
                mult, shift = _requant(rng, c_out, acc_scale)
            act, lo, hi = _clamp(rng, out_zp)
            oi = add(Tensor(DT_INT8, (1, 1, 1, c_out), zero_point=out_zp, scale=float(rng.uniform(0.01, 1))))
            layers.append(Layer(op, cur, oi, weight=wi, bias=bi, activation=act, input_offset=-zp,
                                output_offset=out_zp, act_min=lo, act_max=hi, multipliers=mult, shifts=shift))
        else:  # MEAN: prepare.mean_params folds 1/(H*W) into the multiplier (p0 = 0)
            in_scale = float(np.float32(tensors[cur].scale))
            out_scale = in_scale if rng.random() < 0.3 else float(rng.uniform(0.001, 1))
            if out_scale == in_scale:
                out_zp = zp
            mp = mean_params(in_scale, zp, out_scale, out_zp, h * w)
            mult, shift = np.array([mp.multiplier], np.int32), np.array([mp.shift], np.int32)
            act, lo, hi = _clamp(rng, out_zp) if rng.random() < 0.3 else (ACT_NONE, -128, 127)
            oi = add(Tensor(DT_INT8, (1, 1, 1, c), zero_point=out_zp, scale=out_scale))
            layers.append(Layer(op, cur, oi, activation=act, input_offset=-zp, output_offset=out_zp,
                                act_min=lo, act_max=hi, multipliers=mult, shifts=shift, p0=mp.p0))
        cur = layers[-1].output
    return EtmModel(tensors, layers, 0, cur, meta={"seed": seed, "classes": ["a", "b"]})


# --------------------------------------------------------------------------------------------
# Running many models in one MicroPython process
# --------------------------------------------------------------------------------------------

RUNNER = """
import edgetune
D = {d!r}
for name in {names!r}:
    buf = open(D + '/' + name + '.etm', 'rb').read()
    m = edgetune.Model(buf)
    info = m.info()
    n = 1
    for s in info['input_shape']:
        n *= s
    xs = open(D + '/' + name + '.x', 'rb').read()
    mv = memoryview(xs)
    f = open(D + '/' + name + '.y', 'wb')
    classes = []
    for i in range(len(xs) // n):
        x = mv[i * n:(i + 1) * n]
        f.write(m.predict(x))
        classes.append(m.predict_class(x))
    f.close()
    print('INFO', name, repr(info))
    print('CLASSES', name, repr(classes))
print('DONE')
"""


def run_models(micropython: Path, tmp: Path, models: dict[str, EtmModel], inputs: dict[str, np.ndarray],
               heapsize: str | None = None, timeout: float = 300) -> tuple[dict, dict, dict]:
    """Write the models and inputs, run them all in one process; returns (outputs, infos, classes)."""
    for name, model in models.items():
        (tmp / f"{name}.etm").write_bytes(write_etm(model))
        (tmp / f"{name}.x").write_bytes(np.ascontiguousarray(inputs[name], dtype=np.int8).tobytes())
    script = tmp / "runner.py"
    script.write_text(RUNNER.format(d=str(tmp), names=list(models)))
    cmd = [str(micropython)] + (["-X", f"heapsize={heapsize}"] if heapsize else []) + [str(script)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0 and "DONE" in proc.stdout, (
        f"MicroPython exited with {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    infos, classes, outs = {}, {}, {}
    for line in proc.stdout.splitlines():
        tag, _, rest = line.partition(" ")
        if tag in ("INFO", "CLASSES"):
            name, _, lit = rest.partition(" ")
            (infos if tag == "INFO" else classes)[name] = ast.literal_eval(lit)
    for name, model in models.items():
        out_size = model.output_tensor.size
        y = np.frombuffer((tmp / f"{name}.y").read_bytes(), np.int8)
        outs[name] = y.reshape(-1, out_size)
    return outs, infos, classes


def check_against_twin(models, inputs, outs, infos, classes) -> None:
    for name, model in models.items():
        xs = inputs[name]
        want = reference.forward_batch(model, xs).reshape(len(xs), -1)
        got = outs[name]
        assert got.shape == want.shape, name
        bad = np.argwhere(got != want)
        assert bad.size == 0, (
            f"{name}: C and numpy differ at {len(bad)} of {got.size} values; first (input, index) {bad[0]}: "
            f"C {got[tuple(bad[0])]} numpy {want[tuple(bad[0])]}; layers "
            f"{[OP_NAMES[ly.op] for ly in model.layers]}")
        assert classes[name] == [int(np.argmax(w)) for w in want], name
        info = infos[name]
        # "arena" is the whole block; with the training core it also holds the training state
        # and "inference_arena" is the activation part (memory.py predicts both).
        assert info.get("inference_arena", info["arena"]) == memory.inference_arena(model), name
        assert info["arena"] >= memory.inference_arena(model), name
        assert info["input_shape"] == tuple(model.input_tensor.shape)
        assert info["output_shape"] == tuple(model.output_tensor.shape)
        assert info["input_zero_point"] == model.input_tensor.zero_point
        assert info["output_zero_point"] == model.output_tensor.zero_point
        assert info["input_scale"] == pytest.approx(float(np.float32(model.input_tensor.scale)), rel=1e-6)
        assert info["output_scale"] == pytest.approx(float(np.float32(model.output_tensor.scale)), rel=1e-6)
        assert len(info["layers"]) == len(model.layers)
        for li, ly in zip(info["layers"], model.layers):
            assert li["op"] == OP_NAMES[ly.op]
            assert li["activation"] == ACT_NAMES[ly.activation]
            assert li["input_shape"] == tuple(model.tensors[ly.input].shape)
            assert li["output_shape"] == tuple(model.tensors[ly.output].shape)
            assert li["bias"] == (ly.bias != NONE)


def random_inputs(model: EtmModel, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng([11, seed])
    xs = rng.integers(-128, 128, (n, model.input_tensor.size)).astype(np.int8)
    xs[0] = -128  # extremes exercise saturation and clamps
    if n > 1:
        xs[1] = 127
    return xs
