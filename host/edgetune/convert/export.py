"""Turn a full-integer int8 .tflite into an `EtmModel` (`edgetune export`, commands/export.py).

The TFLite flatbuffer is read with the flatbuffers schema module that ships in the tflite-micro
wheel (or TensorFlow's copy); nothing here imports TensorFlow itself. All TFLM `Prepare()`
arithmetic (multipliers, shifts, paddings, clamps, MEAN parameters) comes from `prepare.py`.

What the exporter accepts (anything else is a ValueError naming the operator or tensor):
- one subgraph, one int8 input (batch 1), one int8 output; ops forming a chain from the input to
  the output: CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED (fused NONE/RELU/RELU6, optional bias),
  MAX_POOL_2D, AVERAGE_POOL_2D, MEAN (global average over the spatial axes);
- RESHAPE / EXPAND_DIMS / SQUEEZE are removed (they must not change quantization); the shape
  arithmetic a Keras `Flatten` emits for a dynamic batch (SHAPE, STRIDED_SLICE, PACK, ... feeding
  a RESHAPE's shape input) is ignored with them;
- a trailing SOFTMAX is dropped and `meta["softmax_on_host"] = True` is set.

Shapes (docs/etm-format.md): every activation is 4-D NHWC with N = 1. A tensor takes the shape
its producing layer writes (the model input: the shape the first layer reads), so a Keras
`Flatten` leaves a `(1, H, W, C)` tensor in front of a FULLY_CONNECTED layer: FULLY_CONNECTED
reads its input as a flat vector of K = prod(input shape) elements (like TFLM, which flattens the
input of FULLY_CONNECTED to (batches, K)); its output is `(1, 1, 1, C_out)`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import prepare
from ..format.modelfile import (
    DT_INT8, DT_INT32, NONE, OP_AVERAGE_POOL_2D, OP_CONV_2D, OP_DEPTHWISE_CONV_2D,
    OP_FULLY_CONNECTED, OP_MAX_POOL_2D, OP_MEAN, OP_NAMES, EtmModel, Layer, Tensor,
)

# ops that only compute the int32 shape operand of a RESHAPE (Keras Flatten with dynamic batch)
_SHAPE_OPS = {"SHAPE", "STRIDED_SLICE", "PACK", "CONCATENATION", "GATHER", "SLICE", "CAST",
              "REDUCE_PROD", "MUL", "FILL"}
_NOOP_OPS = {"RESHAPE", "EXPAND_DIMS", "SQUEEZE"}
_LAYER_OPS = {"CONV_2D": OP_CONV_2D, "DEPTHWISE_CONV_2D": OP_DEPTHWISE_CONV_2D,
              "FULLY_CONNECTED": OP_FULLY_CONNECTED, "MAX_POOL_2D": OP_MAX_POOL_2D,
              "AVERAGE_POOL_2D": OP_AVERAGE_POOL_2D, "MEAN": OP_MEAN}
SUPPORTED_OPS = sorted(set(_LAYER_OPS) | _NOOP_OPS | {"SOFTMAX"})


def _schema():
    """The generated flatbuffers schema module (tflite-micro's copy, else TensorFlow's)."""
    try:
        from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as S
    except ImportError:  # pragma: no cover - depends on the installed wheels
        from tensorflow.lite.python import schema_py_generated as S
    return S


@dataclass
class _Graph:
    """The parsed subgraph with name tables and tensor helpers."""

    S: Any
    model: Any
    g: Any
    raw: bytes
    op_names: dict[int, str]
    type_names: dict[int, str]
    consumers: dict[int, list[tuple[int, int]]] = field(default_factory=dict)
    producer: dict[int, int] = field(default_factory=dict)

    def opname(self, k: int) -> str:
        oc = self.model.operatorCodes[self.g.operators[k].opcodeIndex]
        code = max(int(oc.builtinCode), int(oc.deprecatedBuiltinCode))
        if code == self.S.BuiltinOperator.CUSTOM:
            cn = oc.customCode.decode(errors="replace") if oc.customCode else "?"
            return f"CUSTOM({cn})"
        return self.op_names.get(code, f"builtin {code}")

    def where(self, k: int) -> str:
        return f"operator {k} ({self.opname(k)})"

    def tensor(self, i: int):
        return self.g.tensors[i]

    def tname(self, i: int) -> str:
        n = self.tensor(i).name
        return n.decode(errors="replace") if isinstance(n, bytes) else str(n or f"#{i}")

    def ttype(self, i: int) -> str:
        return self.type_names.get(int(self.tensor(i).type), str(self.tensor(i).type))

    def shape(self, i: int) -> tuple[int, ...]:
        s = self.tensor(i).shape
        return tuple(int(d) for d in s) if s is not None else ()

    def desc(self, i: int) -> str:
        return f"tensor {i} '{self.tname(i)}' ({self.ttype(i)}, shape {list(self.shape(i))})"

    def quant(self, i: int) -> tuple[np.ndarray, np.ndarray, int]:
        """(scales float32, zero points int64, quantized dimension); empty arrays if none."""
        q = self.tensor(i).quantization
        if q is None or q.scale is None:
            return np.zeros(0, np.float32), np.zeros(0, np.int64), 0
        zp = np.asarray(q.zeroPoint if q.zeroPoint is not None else [], dtype=np.int64)
        return np.asarray(q.scale, dtype=np.float32).reshape(-1), zp.reshape(-1), int(q.quantizedDimension)

    def data(self, i: int) -> np.ndarray | None:
        """Constant data of tensor i as a numpy array of its shape, or None for activations."""
        t = self.tensor(i)
        if t.buffer <= 0 or t.buffer >= len(self.model.buffers):
            return None
        b = self.model.buffers[t.buffer]
        raw = None
        if b.data is not None and len(b.data):
            raw = np.asarray(b.data, dtype=np.uint8).tobytes()
        elif getattr(b, "offset", 0) and b.offset > 1:
            raw = self.raw[b.offset:b.offset + b.size]
        if raw is None:
            return None
        dt = {"INT8": np.int8, "INT32": "<i4", "INT64": "<i8", "UINT8": np.uint8, "INT16": "<i2",
              "FLOAT32": "<f4"}.get(self.ttype(i))
        if dt is None:
            raise ValueError(f"{self.desc(i)}: constant of unsupported dtype")
        arr = np.frombuffer(raw, dtype=dt)
        shape = self.shape(i)
        if arr.size != int(np.prod(shape)):
            raise ValueError(f"{self.desc(i)}: buffer holds {arr.size} elements, shape needs {int(np.prod(shape))}")
        return arr.reshape(shape)


def _parse(tflite: bytes) -> _Graph:
    S = _schema()
    buf = bytes(tflite)
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise ValueError("not a TFLite model: missing the 'TFL3' flatbuffer identifier")
    try:
        model = S.ModelT.InitFromPackedBuf(bytearray(buf), 0)
    except Exception as e:  # corrupt flatbuffers raise anything (struct.error, IndexError, ...)
        raise ValueError(f"corrupt TFLite flatbuffer: {type(e).__name__}: {e}") from None
    if not model.subgraphs:
        raise ValueError("TFLite model has no subgraph")
    if len(model.subgraphs) != 1:
        raise ValueError(f"TFLite model has {len(model.subgraphs)} subgraphs; only single-subgraph models are supported")
    op_names = {v: k for k, v in vars(S.BuiltinOperator).items() if not k.startswith("_")}
    type_names = {v: k for k, v in vars(S.TensorType).items() if not k.startswith("_")}
    g = model.subgraphs[0]
    G = _Graph(S, model, g, buf, op_names, type_names)
    nt = len(g.tensors or [])
    for k, op in enumerate(g.operators or []):
        if op.opcodeIndex >= len(model.operatorCodes or []):
            raise ValueError(f"corrupt TFLite flatbuffer: operator {k} has opcode index {op.opcodeIndex}")
        for pos, i in enumerate(op.inputs if op.inputs is not None else []):
            if i >= nt:
                raise ValueError(f"corrupt TFLite flatbuffer: {G.where(k)} input tensor {i} out of range")
            if i >= 0:
                G.consumers.setdefault(int(i), []).append((k, pos))
        for i in op.outputs if op.outputs is not None else []:
            if not 0 <= i < nt:
                raise ValueError(f"corrupt TFLite flatbuffer: {G.where(k)} output tensor {i} out of range")
            G.producer[int(i)] = k
    return G


def _norm4(G: _Graph, i: int, who: str) -> tuple[int, int, int, int]:
    """Normalize an activation shape to NHWC with N = 1: (1,T,C) -> (1,1,T,C), (1,K) -> (1,1,1,K)."""
    s = G.shape(i)
    if len(s) == 0 or len(s) > 4:
        raise ValueError(f"{who}: {G.desc(i)} must be 1- to 4-D")
    if len(s) >= 2 and s[0] != 1:
        raise ValueError(f"{who}: {G.desc(i)} has batch {s[0]}; only batch 1 is supported")
    if len(s) == 1:
        s = (1, s[0])
    s = (1,) + (1,) * (4 - len(s)) + tuple(s[1:])
    if not all(1 <= d <= 0xFFFF for d in s):
        raise ValueError(f"{who}: {G.desc(i)} has a dimension outside 1..65535")
    return s  # type: ignore[return-value]


def _act_quant(G: _Graph, i: int, who: str) -> tuple[float, int]:
    """Per-tensor (scale, zero point) of an int8 activation tensor."""
    if G.ttype(i) != "INT8":
        raise ValueError(f"{who}: {G.desc(i)} is {G.ttype(i)}; edgetune needs a full-integer int8 model "
                         "(float, uint8 and int16 models are not supported)")
    sc, zp, _ = G.quant(i)
    if sc.size != 1 or zp.size != 1:
        raise ValueError(f"{who}: {G.desc(i)} needs per-tensor quantization (has {sc.size} scales)")
    if not np.isfinite(sc[0]) or sc[0] <= 0:
        raise ValueError(f"{who}: {G.desc(i)} has invalid scale {sc[0]}")
    if not -128 <= zp[0] <= 127:
        raise ValueError(f"{who}: {G.desc(i)} has zero point {zp[0]} outside int8")
    return float(sc[0]), int(zp[0])


def _weight(G: _Graph, i: int, who: str, shape4: tuple[int, int, int, int], axis: int) -> Tensor:
    """An int8 symmetric weight tensor, reshaped to `shape4`, per-channel scales along `axis`."""
    if G.ttype(i) != "INT8":
        raise ValueError(f"{who}: weights {G.desc(i)} are {G.ttype(i)}; only int8 weights are supported")
    data = G.data(i)
    if data is None:
        raise ValueError(f"{who}: weights {G.desc(i)} are not a constant")
    sc, zp, qdim = G.quant(i)
    if sc.size == 0:
        raise ValueError(f"{who}: weights {G.desc(i)} are not quantized")
    if np.any(zp != 0):
        raise ValueError(f"{who}: weights {G.desc(i)} have non-zero zero points (must be symmetric)")
    if not np.all(np.isfinite(sc)) or np.any(sc <= 0):
        raise ValueError(f"{who}: weights {G.desc(i)} have invalid scales")
    t = Tensor(DT_INT8, shape4, 0, 0.0, None, 0, np.ascontiguousarray(data.reshape(shape4)), G.tname(i))
    if sc.size > 1:
        if sc.size != shape4[axis]:
            raise ValueError(f"{who}: weights {G.desc(i)} have {sc.size} scales for {shape4[axis]} output channels")
        t.scales, t.quant_axis = sc.astype(np.float32), axis
    else:
        t.scale = float(sc[0])
    return t


def _bias(G: _Graph, i: int, who: str, c_out: int) -> Tensor:
    if G.ttype(i) != "INT32":
        raise ValueError(f"{who}: bias {G.desc(i)} is {G.ttype(i)}; only int32 biases are supported")
    data = G.data(i)
    if data is None or data.size != c_out:
        raise ValueError(f"{who}: bias {G.desc(i)} must be a constant of {c_out} elements")
    sc, zp, _ = G.quant(i)
    t = Tensor(DT_INT32, (c_out, 1, 1, 1), 0, 0.0, None, 0,
               np.ascontiguousarray(data.astype(np.int32).reshape(c_out, 1, 1, 1)), G.tname(i))
    if np.any(zp != 0):
        raise ValueError(f"{who}: bias {G.desc(i)} has non-zero zero points")
    if sc.size > 1:
        if sc.size != c_out:
            raise ValueError(f"{who}: bias {G.desc(i)} has {sc.size} scales for {c_out} channels")
        t.scales, t.quant_axis = sc.astype(np.float32), 0
    elif sc.size == 1:
        t.scale = float(sc[0])
    return t


def _opts(G: _Graph, k: int, cls: str):
    o = G.g.operators[k].builtinOptions
    if o is None or type(o).__name__ != cls:
        raise ValueError(f"{G.where(k)}: missing {cls[:-1]}")
    return o


def _check_multipliers(who: str, mult: np.ndarray, shift: np.ndarray) -> None:
    for m, s in zip(mult.tolist(), shift.tolist()):
        prepare.check_multiplier(who, m, s)


def _walk_chain(G: _Graph) -> list[int]:
    """Operator indices from the model input to the model output, found by walking back from the
    output through each operator's data input (input 0). Operands at other positions (weights,
    bias, a RESHAPE's shape, MEAN's axes) are not part of the chain."""
    g = G.g
    cur, tin = int(g.outputs[0]), int(g.inputs[0])
    chain: list[int] = []
    while cur != tin:
        k = G.producer.get(cur)
        if k is None:
            raise ValueError(f"the operators do not form a chain from the model input to the output: "
                             f"{G.desc(cur)} is not computed from the model input")
        if k in chain:
            raise ValueError(f"the operators do not form a chain: {G.where(k)} reached twice")
        op = g.operators[k]
        if op.inputs is None or len(op.inputs) == 0 or op.outputs is None or len(op.outputs) != 1:
            raise ValueError(f"{G.where(k)} must have a data input and exactly one output")
        chain.append(k)
        cur = int(op.inputs[0])
    chain.reverse()
    return chain


def _check_side_ops(G: _Graph, chain: list[int]) -> None:
    """Operators off the chain may only compute the shape operand of a chain RESHAPE (what Keras
    `Flatten` emits for a dynamic batch: SHAPE -> STRIDED_SLICE -> PACK -> RESHAPE). Chain
    activations must not feed anything else."""
    on_chain = set(chain)
    side = [k for k in range(len(G.g.operators or [])) if k not in on_chain]
    side_set = set(side)
    for k in side:
        name = G.opname(k)
        op = G.g.operators[k]
        if name not in _SHAPE_OPS and name not in _NOOP_OPS:
            raise ValueError(f"the operators do not form a chain: {G.where(k)} is not on the path "
                             "from the model input to the model output")
        for i in (int(x) for x in (op.outputs if op.outputs is not None else [])):
            if i == int(G.g.outputs[0]):
                raise ValueError(f"{G.where(k)} writes the model output but is off the chain")
            for kk, pos in G.consumers.get(i, []):
                if kk in side_set:
                    continue
                if not (G.opname(kk) in _NOOP_OPS and pos == 1):
                    raise ValueError(f"the operators do not form a chain: {G.where(kk)} reads the output "
                                     f"of {G.where(k)}, which is not on the path from the model input")
    # each chain activation is read as data by exactly its chain successor (side shape ops aside)
    for n, k in enumerate(chain):
        i = int(G.g.operators[k].outputs[0])
        for kk, pos in G.consumers.get(i, []):
            if kk in side_set and G.opname(kk) in ("SHAPE",) + tuple(_NOOP_OPS):
                continue
            if n + 1 < len(chain) and kk == chain[n + 1] and pos == 0:
                continue
            raise ValueError(f"the operators do not form a chain: {G.desc(i)} also feeds {G.where(kk)}")


def tflite_to_etm(tflite: bytes, meta: dict | None = None) -> EtmModel:
    """Convert a full-integer int8 TFLite flatbuffer into an `EtmModel`.

    Raises ValueError naming the operator (index and builtin name) or tensor (index, name, dtype)
    for anything the .etm cannot express; corrupt input also raises ValueError.

    `meta` (class names, sample rate, ...) is copied into the model's metadata, then these keys
    are set from the model (they override the caller's): input_shape (the TFLite input shape as
    the user feeds it), input_scale, input_zero_point, output_shape (4-D), output_scale,
    output_zero_point (of the logits when a trailing SOFTMAX was dropped), ops (layer op names),
    and softmax_on_host = True when a trailing SOFTMAX was dropped.
    """
    try:
        return _convert(tflite, meta)
    except (IndexError, KeyError, TypeError, AttributeError, OverflowError, struct.error,
            UnicodeDecodeError) as e:  # garbage that parsed as a flatbuffer
        raise ValueError(f"corrupt or malformed TFLite model: {type(e).__name__}: {e}") from None


def _convert(tflite: bytes, meta: dict | None) -> EtmModel:
    G = _parse(tflite)
    g = G.g
    if g.inputs is None or len(g.inputs) != 1 or g.outputs is None or len(g.outputs) != 1:
        raise ValueError(f"the model must have exactly one input and one output "
                         f"(has {0 if g.inputs is None else len(g.inputs)} and {0 if g.outputs is None else len(g.outputs)})")
    tin, tout = int(g.inputs[0]), int(g.outputs[0])
    in_scale, in_zp = _act_quant(G, tin, "model input")
    in_shape = G.shape(tin)
    if len(in_shape) >= 2 and in_shape[0] != 1:
        raise ValueError(f"model input {G.desc(tin)} has batch {in_shape[0]}; only batch 1 is supported")
    for k, op in enumerate(g.operators or []):
        name = G.opname(k)
        outs = [int(i) for i in (op.outputs if op.outputs is not None else [])]
        shape_arith = name in _SHAPE_OPS and all(G.ttype(i) in ("INT32", "INT64") for i in outs)
        if name not in SUPPORTED_OPS and not shape_arith:
            raise ValueError(f"{G.where(k)} is not supported (supported: {', '.join(SUPPORTED_OPS)})")
    _act_quant(G, tout, "model output")
    chain = _walk_chain(G)
    _check_side_ops(G, chain)
    if not chain:
        raise ValueError("the model has no operators")

    tensors: list[Tensor] = []
    layers: list[Layer] = []
    alias: dict[int, int] = {}  # TFLite activation tensor -> etm tensor index
    softmax_on_host = False

    def new_act(i: int, shape4: tuple[int, int, int, int]) -> int:
        s, z = _act_quant(G, i, G.desc(i))
        tensors.append(Tensor(DT_INT8, shape4, z, s, name=G.tname(i)))
        alias[i] = len(tensors) - 1
        return alias[i]

    def add_const(t: Tensor) -> int:
        tensors.append(t)
        return len(tensors) - 1

    new_act(tin, _norm4(G, tin, "model input"))

    for pos, k in enumerate(chain):
        op = g.operators[k]
        name = G.opname(k)
        who = G.where(k)
        i_in, i_out = int(op.inputs[0]), int(op.outputs[0])
        src = alias[i_in]
        x = tensors[src]
        if name in _NOOP_OPS:
            s_in, z_in = _act_quant(G, i_in, who)
            s_out, z_out = _act_quant(G, i_out, who)
            if s_in != s_out or z_in != z_out:
                raise ValueError(f"{who} changes quantization ({s_in}, {z_in}) -> ({s_out}, {z_out}); not supported")
            if int(np.prod(G.shape(i_out))) != x.size:
                raise ValueError(f"{who}: output {G.desc(i_out)} does not have {x.size} elements")
            if len(G.shape(i_out)) >= 2 and G.shape(i_out)[0] != 1:
                raise ValueError(f"{who}: output {G.desc(i_out)} has batch {G.shape(i_out)[0]}; only batch 1 is supported")
            alias[i_out] = src
            continue
        if name == "SOFTMAX":
            if pos != len(chain) - 1:
                raise ValueError(f"{who}: SOFTMAX is only supported as the last operator")
            _act_quant(G, i_out, who)
            softmax_on_host = True
            alias[i_out] = src
            continue
        if name not in _LAYER_OPS:
            raise ValueError(f"{who} is not supported here")
        in_s, in_z = _act_quant(G, i_in, who)
        out_s, out_z = _act_quant(G, i_out, who)
        ly = Layer(_LAYER_OPS[name], src, NONE, input_offset=-in_z, output_offset=out_z)

        if name in ("CONV_2D", "DEPTHWISE_CONV_2D", "MAX_POOL_2D", "AVERAGE_POOL_2D"):
            ishape = G.shape(i_in)
            if len(ishape) != 4 or ishape[0] != 1:
                raise ValueError(f"{who}: input {G.desc(i_in)} must be 4-D with batch 1")
            if tuple(ishape) != tuple(x.shape):
                raise ValueError(f"{who}: reads {G.desc(i_in)} but the preceding reshape leaves it as {list(x.shape)}; "
                                 "layout-changing reshapes are not supported")
            oshape = _norm4(G, i_out, who)
            if len(G.shape(i_out)) != 4:
                raise ValueError(f"{who}: output {G.desc(i_out)} must be 4-D")
            _, h, w, c_in = ishape
            if name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
                o = _opts(G, k, "Conv2DOptionsT" if name == "CONV_2D" else "DepthwiseConv2DOptionsT")
                if o.dilationHFactor != 1 or o.dilationWFactor != 1:
                    raise ValueError(f"{who}: dilation {o.dilationHFactor}x{o.dilationWFactor} is not supported (only 1)")
                wi = int(op.inputs[1])
                wshape = G.shape(wi)
                if len(wshape) != 4:
                    raise ValueError(f"{who}: weights {G.desc(wi)} must be 4-D")
                c_out = oshape[3]
                if name == "CONV_2D":
                    if wshape[0] != c_out or wshape[3] != c_in:
                        raise ValueError(f"{who}: weights {G.desc(wi)} do not match input channels {c_in} / "
                                         f"output channels {c_out} (grouped convolution is not supported)")
                    wt = _weight(G, wi, who, wshape, 0)
                else:
                    dm = int(o.depthMultiplier)
                    if wshape[0] != 1 or wshape[3] != c_out or c_out != c_in * max(dm, 1):
                        raise ValueError(f"{who}: weights {G.desc(wi)} do not match {c_in} input channels x "
                                         f"depth multiplier {dm} = {c_out} output channels")
                    wt = _weight(G, wi, who, wshape, 3)
                    ly.depth_multiplier = c_out // c_in
                ly.filter_h, ly.filter_w = wshape[1], wshape[2]
                stride_h, stride_w, padding, act = o.strideH, o.strideW, o.padding, o.fusedActivationFunction
                ly.weight = add_const(wt)
                if len(op.inputs) > 2 and int(op.inputs[2]) >= 0:
                    ly.bias = add_const(_bias(G, int(op.inputs[2]), who, c_out))
                fs = wt.scales if wt.scales is not None else np.array([wt.scale], np.float32)
                ly.multipliers, ly.shifts = prepare.conv_multipliers(in_s, fs, out_s, c_out)
                _check_multipliers(who, ly.multipliers, ly.shifts)
            else:
                o = _opts(G, k, "Pool2DOptionsT")
                prepare.check_pool_quantization(in_s, in_z, out_s, out_z, who)
                ly.filter_h, ly.filter_w = int(o.filterHeight), int(o.filterWidth)
                stride_h, stride_w, padding, act = o.strideH, o.strideW, o.padding, o.fusedActivationFunction
                if oshape[3] != c_in:
                    raise ValueError(f"{who}: output channels {oshape[3]} != input channels {c_in}")
            if not (1 <= stride_h <= 255 and 1 <= stride_w <= 255 and 1 <= ly.filter_h <= 255 and 1 <= ly.filter_w <= 255):
                raise ValueError(f"{who}: stride {stride_h}x{stride_w} / filter {ly.filter_h}x{ly.filter_w} out of range 1..255")
            ly.stride_h, ly.stride_w = int(stride_h), int(stride_w)
            pad = prepare.compute_padding(int(padding), h, w, ly.filter_h, ly.filter_w, ly.stride_h, ly.stride_w)
            if (pad.out_h, pad.out_w) != (oshape[1], oshape[2]):
                raise ValueError(f"{who}: output {G.desc(i_out)} does not match the {pad.out_h}x{pad.out_w} "
                                 "that stride and padding give")
            ly.pad_h, ly.pad_w = pad.pad_h, pad.pad_w
            ly.act_min, ly.act_max, ly.activation = prepare.activation_range(int(act), out_s, out_z, who)
            ly.output = new_act(i_out, oshape)

        elif name == "FULLY_CONNECTED":
            o = _opts(G, k, "FullyConnectedOptionsT")
            if getattr(o, "weightsFormat", 0) != 0:
                raise ValueError(f"{who}: shuffled weights format is not supported")
            wi = int(op.inputs[1])
            wshape = G.shape(wi)
            if len(wshape) != 2:
                raise ValueError(f"{who}: weights {G.desc(wi)} must be 2-D (C_out, K)")
            c_out, depth = wshape
            if x.size != depth:
                raise ValueError(f"{who}: input has {x.size} elements but the weights expect K={depth} "
                                 "(batch > 1 is not supported)")
            oshape_raw = G.shape(i_out)
            if len(oshape_raw) > 2 and any(d != 1 for d in oshape_raw[:-1]):
                raise ValueError(f"{who}: keep_num_dims output {G.desc(i_out)} is not supported")
            if len(oshape_raw) > 2 or (getattr(o, "keepNumDims", False) and len(oshape_raw) != 2):
                raise ValueError(f"{who}: keep_num_dims producing a {len(oshape_raw)}-D output is not supported")
            if int(np.prod(oshape_raw)) != c_out:
                raise ValueError(f"{who}: output {G.desc(i_out)} must have {c_out} elements (batch 1)")
            wt = _weight(G, wi, who, (c_out, 1, 1, depth), 0)
            ly.weight = add_const(wt)
            if len(op.inputs) > 2 and int(op.inputs[2]) >= 0:
                ly.bias = add_const(_bias(G, int(op.inputs[2]), who, c_out))
            fs = wt.scales if wt.scales is not None else np.array([wt.scale], np.float32)
            ly.multipliers, ly.shifts = prepare.fc_multipliers(in_s, fs, out_s, c_out)
            _check_multipliers(who, ly.multipliers, ly.shifts)
            ly.act_min, ly.act_max, ly.activation = prepare.activation_range(int(o.fusedActivationFunction), out_s, out_z, who)
            ly.output = new_act(i_out, (1, 1, 1, c_out))

        elif name == "MEAN":
            o = _opts(G, k, "ReducerOptionsT")
            ai = int(op.inputs[1])
            axes = G.data(ai)
            if axes is None:
                raise ValueError(f"{who}: the axis operand {G.desc(ai)} must be a constant")
            ishape = G.shape(i_in)
            rank = len(ishape)
            if rank < 2 or ishape[0] != 1:
                raise ValueError(f"{who}: input {G.desc(i_in)} must have batch 1 and a channel axis")
            red = {int(a) + rank if int(a) < 0 else int(a) for a in np.asarray(axes).reshape(-1)}
            if any(not 0 <= a < rank for a in red):
                raise ValueError(f"{who}: axis {sorted(red)} out of range for {G.desc(i_in)}")
            spatial = set(range(1, rank - 1))
            if (rank - 1) in red or not all(a in red or ishape[a] == 1 for a in spatial):
                raise ValueError(f"{who}: only a global average over the spatial axes (keeping channels) "
                                 f"is supported; got axes {sorted(red)} of {G.desc(i_in)}")
            c = ishape[-1]
            if x.shape[3] != c or x.size != int(np.prod(ishape)):
                raise ValueError(f"{who}: input layout {list(x.shape)} does not match {G.desc(i_in)}")
            if int(np.prod(G.shape(i_out))) != c:
                raise ValueError(f"{who}: output {G.desc(i_out)} must have {c} elements")
            n = x.shape[1] * x.shape[2]
            mp = prepare.mean_params(in_s, in_z, out_s, out_z, n)
            prepare.check_multiplier(who, mp.multiplier, mp.shift)
            ly.multipliers = np.array([mp.multiplier], np.int32)
            ly.shifts = np.array([mp.shift], np.int32)
            ly.p0 = mp.p0
            ly.output = new_act(i_out, (1, 1, 1, c))
        layers.append(ly)

    if not layers:
        raise ValueError("the model has no computing layers (only reshapes/softmax)")
    out_t = alias.get(tout)
    if out_t is None or out_t != layers[-1].output:
        raise ValueError(f"the last layer does not write the model output {G.desc(tout)}")

    m: dict[str, Any] = dict(meta or {})
    ot = tensors[out_t]
    m.update({
        "input_shape": [int(d) for d in in_shape],
        "input_scale": float(np.float32(in_scale)),
        "input_zero_point": int(in_zp),
        "output_shape": [int(d) for d in ot.shape],
        "output_scale": float(np.float32(ot.scale)),
        "output_zero_point": int(ot.zero_point),
        "ops": [OP_NAMES[ly.op] for ly in layers],
    })
    if softmax_on_host:
        m["softmax_on_host"] = True
    return EtmModel(tensors, layers, alias[tin], out_t, m)
