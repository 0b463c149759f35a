"""The .etm model file: dataclasses, writer and reader (docs/etm-format.md is the spec).

Nothing here imports TensorFlow: turning a .tflite into an `EtmModel` lives in `export.py`.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

MAGIC = b"EDTM"
VERSION = 1
HEADER_SIZE = 64
TENSOR_REC = 32
LAYER_REC = 48
NONE = 0xFFFF
MAX_TENSORS = 1024
MAX_LAYERS = 256

DT_INT8, DT_INT32 = 1, 2
DTYPES = {DT_INT8: np.int8, DT_INT32: np.int32}
KIND_ACT, KIND_CONST = 0, 1

OP_CONV_2D, OP_DEPTHWISE_CONV_2D, OP_FULLY_CONNECTED = 1, 2, 3
OP_MAX_POOL_2D, OP_AVERAGE_POOL_2D, OP_MEAN = 4, 5, 6
OP_NAMES = {
    OP_CONV_2D: "CONV_2D",
    OP_DEPTHWISE_CONV_2D: "DEPTHWISE_CONV_2D",
    OP_FULLY_CONNECTED: "FULLY_CONNECTED",
    OP_MAX_POOL_2D: "MAX_POOL_2D",
    OP_AVERAGE_POOL_2D: "AVERAGE_POOL_2D",
    OP_MEAN: "MEAN",
}
ACT_NONE, ACT_RELU, ACT_RELU6 = 0, 1, 2

_HDR = struct.Struct("<4sHHII HHHH IIIIII 16s")
_TEN = struct.Struct("<BBBB4HifIII")
_LAY = struct.Struct("<BBHHHHHBBBBhhHHiiiiIi")
assert _HDR.size == HEADER_SIZE and _TEN.size == TENSOR_REC and _LAY.size == LAYER_REC


@dataclass
class Tensor:
    """One tensor: 4-D shape, quantization and (for constants) its data."""

    dtype: int
    shape: tuple[int, int, int, int]
    zero_point: int = 0
    scale: float = 0.0
    scales: np.ndarray | None = None  # float32 per-channel scales, or None
    quant_axis: int = 0
    data: np.ndarray | None = None  # constants only, dtype DTYPES[dtype], shape `shape`
    name: str = ""

    @property
    def kind(self) -> int:
        return KIND_CONST if self.data is not None else KIND_ACT

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def nbytes(self) -> int:
        return self.size * np.dtype(DTYPES[self.dtype]).itemsize


@dataclass
class Layer:
    """One op of the chain, with every integer parameter the kernel needs."""

    op: int
    input: int
    output: int
    weight: int = NONE
    bias: int = NONE
    activation: int = ACT_NONE
    stride_h: int = 1
    stride_w: int = 1
    filter_h: int = 1
    filter_w: int = 1
    pad_h: int = 0
    pad_w: int = 0
    depth_multiplier: int = 1
    input_offset: int = 0
    output_offset: int = 0
    act_min: int = -128
    act_max: int = 127
    multipliers: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    shifts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    p0: int = 0

    @property
    def op_name(self) -> str:
        return OP_NAMES.get(self.op, f"op{self.op}")


@dataclass
class EtmModel:
    tensors: list[Tensor]
    layers: list[Layer]
    input: int
    output: int
    meta: dict[str, Any] = field(default_factory=dict)
    scheme: bytes = b""

    @property
    def input_tensor(self) -> Tensor:
        return self.tensors[self.input]

    @property
    def output_tensor(self) -> Tensor:
        return self.tensors[self.output]


def align4(n: int) -> int:
    """Round a byte count up to a multiple of 4."""
    return (int(n) + 3) & ~3


class _Blob:
    """Append-only byte buffer that hands out 4-aligned absolute offsets."""

    def __init__(self, start: int):
        self.start = start
        self.buf = bytearray()

    def add(self, data: bytes) -> int:
        self.buf += b"\0" * (align4(len(self.buf)) - len(self.buf))
        off = self.start + len(self.buf)
        self.buf += data
        return off


def write_etm(model: EtmModel) -> bytes:
    """Serialize `model` to .etm bytes (see docs/etm-format.md)."""
    nt, nl = len(model.tensors), len(model.layers)
    if not 1 <= nt <= MAX_TENSORS or not 1 <= nl <= MAX_LAYERS:
        raise ValueError(f"model has {nt} tensors and {nl} layers; limits are 1..{MAX_TENSORS} and 1..{MAX_LAYERS}")
    t_off = HEADER_SIZE
    l_off = t_off + nt * TENSOR_REC
    blob = _Blob(l_off + nl * LAYER_REC)
    meta = json.dumps(model.meta, sort_keys=True, separators=(",", ":")).encode()
    meta_off = blob.add(meta)
    scheme_off = blob.add(model.scheme) if model.scheme else 0

    trecs = []
    for i, t in enumerate(model.tensors):
        if len(t.shape) != 4 or not all(1 <= d <= 0xFFFF for d in t.shape):
            raise ValueError(f"tensor {i} ({t.name}): shape {t.shape} must be 4-D with dims 1..65535")
        scales_off, quant = 0, 0
        if t.scales is not None:
            quant = 1
            sc = np.asarray(t.scales, dtype="<f4")
            if sc.shape != (t.shape[t.quant_axis],):
                raise ValueError(f"tensor {i} ({t.name}): {sc.size} scales for axis {t.quant_axis} of shape {t.shape}")
            scales_off = blob.add(sc.tobytes())
        data_off = data_len = 0
        if t.data is not None:
            d = np.ascontiguousarray(t.data, dtype=np.dtype(DTYPES[t.dtype]).newbyteorder("<"))
            if d.size != t.size:
                raise ValueError(f"tensor {i} ({t.name}): data has {d.size} elements, shape {t.shape} needs {t.size}")
            raw = d.tobytes()
            data_off, data_len = blob.add(raw), len(raw)
        trecs.append(
            _TEN.pack(t.dtype, t.kind, quant, t.quant_axis if quant else 0, *t.shape, t.zero_point,
                      0.0 if quant else t.scale, scales_off, data_off, data_len)
        )
    lrecs = []
    for i, ly in enumerate(model.layers):
        mult = np.asarray(ly.multipliers, dtype="<i4")
        shift = np.asarray(ly.shifts, dtype="<i4")
        if mult.shape != shift.shape or mult.ndim != 1:
            raise ValueError(f"layer {i} ({ly.op_name}): multipliers and shifts must be 1-D of equal length")
        mult_off = blob.add(mult.tobytes() + shift.tobytes()) if mult.size else 0
        lrecs.append(
            _LAY.pack(ly.op, ly.activation, 0, ly.input, ly.output, ly.weight, ly.bias, ly.stride_h,
                      ly.stride_w, ly.filter_h, ly.filter_w, ly.pad_h, ly.pad_w, ly.depth_multiplier,
                      mult.size, ly.input_offset, ly.output_offset, ly.act_min, ly.act_max, mult_off, ly.p0)
        )
    body = b"".join(trecs) + b"".join(lrecs) + bytes(blob.buf)
    body += b"\0" * (align4(len(body)) - len(body))
    size = HEADER_SIZE + len(body)
    dir_part = struct.pack("<HHHHIIIIII16s", nt, nl, model.input, model.output, t_off, l_off,
                           meta_off, len(meta), scheme_off, len(model.scheme), b"")
    crc = zlib.crc32(dir_part + body) & 0xFFFFFFFF
    return struct.pack("<4sHHII", MAGIC, VERSION, HEADER_SIZE, size, crc) + dir_part + body


def _check_range(what: str, off: int, length: int, size: int, align: bool = True) -> None:
    if off < HEADER_SIZE or length < 0 or off + length > size:
        raise ValueError(f"{what}: bytes [{off}, {off + length}) lie outside the {size}-byte file")
    if align and off % 4:
        raise ValueError(f"{what}: offset {off} is not 4-byte aligned")


def read_etm(buf: bytes) -> EtmModel:
    """Parse and validate .etm bytes; raises ValueError saying what is wrong."""
    buf = bytes(buf)
    if len(buf) < HEADER_SIZE:
        raise ValueError(f"not an .etm file: {len(buf)} bytes, the header alone is {HEADER_SIZE}")
    (magic, ver, hsize, size, crc, nt, nl, tin, tout, t_off, l_off, meta_off, meta_len,
     scheme_off, scheme_len, reserved) = _HDR.unpack_from(buf, 0)
    if magic != MAGIC:
        raise ValueError(f"not an .etm file: magic {magic!r}, expected {MAGIC!r}")
    if ver != VERSION:
        raise ValueError(f".etm format version {ver} is not supported (this reader knows {VERSION}); re-export the model")
    if hsize != HEADER_SIZE:
        raise ValueError(f".etm header size {hsize}, expected {HEADER_SIZE}")
    if size != len(buf):
        raise ValueError(f".etm file size field says {size} bytes but the buffer has {len(buf)} (truncated or padded?)")
    actual = zlib.crc32(buf[16:]) & 0xFFFFFFFF
    if actual != crc:
        raise ValueError(f".etm CRC mismatch: header {crc:#010x}, contents {actual:#010x} (file corrupted)")
    if not 1 <= nt <= MAX_TENSORS or not 1 <= nl <= MAX_LAYERS:
        raise ValueError(f".etm counts out of range: {nt} tensors, {nl} layers")
    if any(reserved):
        raise ValueError(".etm reserved header bytes are not zero")
    _check_range("tensor table", t_off, nt * TENSOR_REC, size)
    _check_range("layer table", l_off, nl * LAYER_REC, size)
    _check_range("metadata", meta_off, meta_len, size)
    if tin >= nt or tout >= nt:
        raise ValueError(f".etm input/output tensor index {tin}/{tout} out of range (n_tensors={nt})")
    try:
        meta = json.loads(buf[meta_off:meta_off + meta_len].decode()) if meta_len else {}
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f".etm metadata is not valid UTF-8 JSON: {e}") from None
    scheme = b""
    if scheme_off:
        _check_range("scheme section", scheme_off, scheme_len, size)
        scheme = buf[scheme_off:scheme_off + scheme_len]

    tensors = []
    for i in range(nt):
        (dt, kind, quant, axis, s0, s1, s2, s3, zp, scale, sc_off, d_off, d_len) = _TEN.unpack_from(buf, t_off + i * TENSOR_REC)
        shape = (s0, s1, s2, s3)
        if dt not in DTYPES:
            raise ValueError(f"tensor {i}: unknown dtype code {dt}")
        if kind not in (KIND_ACT, KIND_CONST) or quant not in (0, 1) or axis > 3:
            raise ValueError(f"tensor {i}: bad kind/quant/axis {kind}/{quant}/{axis}")
        if 0 in shape:
            raise ValueError(f"tensor {i}: zero dimension in shape {shape}")
        scales = None
        if quant:
            _check_range(f"tensor {i} scales", sc_off, 4 * shape[axis], size)
            scales = np.frombuffer(buf, "<f4", shape[axis], sc_off).astype(np.float32)
        data = None
        n = int(np.prod(shape))
        if kind == KIND_CONST:
            item = np.dtype(DTYPES[dt]).itemsize
            if d_len != n * item:
                raise ValueError(f"tensor {i}: data length {d_len} != {n} elements x {item} bytes")
            _check_range(f"tensor {i} data", d_off, d_len, size)
            data = np.frombuffer(buf, np.dtype(DTYPES[dt]).newbyteorder("<"), n, d_off).astype(DTYPES[dt]).reshape(shape)
        tensors.append(Tensor(dt, shape, zp, scale, scales, axis if quant else 0, data))

    layers = []
    for i in range(nl):
        (op, act, _r, li, lo, lw, lb, sh, sw, fh, fw, ph, pw, dm, n_mult, ioff, ooff, amin, amax, m_off, p0) = _LAY.unpack_from(buf, l_off + i * LAYER_REC)
        if op not in OP_NAMES:
            raise ValueError(f"layer {i}: unknown op code {op}")
        for what, idx in (("input", li), ("output", lo), ("weight", lw), ("bias", lb)):
            if idx != NONE and idx >= nt:
                raise ValueError(f"layer {i} ({OP_NAMES[op]}): {what} tensor index {idx} out of range")
        mult = shift = np.zeros(0, np.int32)
        if n_mult:
            _check_range(f"layer {i} multipliers", m_off, 8 * n_mult, size)
            mult = np.frombuffer(buf, "<i4", n_mult, m_off).astype(np.int32)
            shift = np.frombuffer(buf, "<i4", n_mult, m_off + 4 * n_mult).astype(np.int32)
        layers.append(Layer(op, li, lo, lw, lb, act, sh, sw, fh, fw, ph, pw, dm, ioff, ooff, amin, amax, mult, shift, p0))
    model = EtmModel(tensors, layers, tin, tout, meta, scheme)
    validate_chain(model)
    validate_quant(model)
    return model


MAX_OUTPUT_SCALE = 2.0 ** 32  # keeps the float32 loss finite (model.h ET_MAX_OUTPUT_SCALE)


def validate_quant(model: EtmModel) -> None:
    """The checks of model.c that keep training in bounds: per-channel scales of a weight layer's
    weight (along its output-channel axis) and bias, one per output channel; depthwise channel
    counts; the output scale within [0, 2^32]."""
    for i, ly in enumerate(model.layers):
        if ly.weight == NONE:
            continue
        out_c = model.tensors[ly.output].shape[3]
        tw = model.tensors[ly.weight]
        if ly.op == OP_DEPTHWISE_CONV_2D and model.tensors[ly.input].shape[3] * ly.depth_multiplier != out_c:
            raise ValueError(f"layer {i} ({ly.op_name}): {model.tensors[ly.input].shape[3]} input channels x "
                             f"depth_multiplier {ly.depth_multiplier} != {out_c} output channels")
        w_axis = 3 if ly.op == OP_DEPTHWISE_CONV_2D else 0
        if tw.scales is not None and (tw.quant_axis != w_axis or tw.shape[w_axis] != out_c):
            raise ValueError(f"layer {i} ({ly.op_name}): weight tensor {ly.weight} is quantized per channel along "
                             f"axis {tw.quant_axis}; it needs one scale per output channel along axis {w_axis}")
        if ly.bias != NONE:
            tb = model.tensors[ly.bias]
            if tb.scales is not None and tb.scales.size != out_c:
                raise ValueError(f"layer {i} ({ly.op_name}): bias tensor {ly.bias} has {tb.scales.size} "
                                 f"per-channel scales for {out_c} output channels")
    so = np.float32(model.tensors[model.output].scale)
    if not (so >= 0 and so <= MAX_OUTPUT_SCALE):
        raise ValueError(f"the output scale {so:g} is outside [0, 2^32] (losses would not be finite)")


def validate_chain(model: EtmModel) -> None:
    """Check that the layers form a chain from the input to the output tensor."""
    prev = model.input
    for i, ly in enumerate(model.layers):
        if ly.input != prev:
            raise ValueError(f"layer {i} ({ly.op_name}) reads tensor {ly.input}, expected {prev} (layers must form a chain)")
        for what, idx in (("input", ly.input), ("output", ly.output)):
            if model.tensors[idx].kind != KIND_ACT:
                raise ValueError(f"layer {i} ({ly.op_name}): {what} tensor {idx} must be an activation")
        prev = ly.output
    if prev != model.output:
        raise ValueError(f"the last layer writes tensor {prev} but the model output is tensor {model.output}")
