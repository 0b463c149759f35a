"""The numpy twin of one on-device training step (docs/training.md is the normative text).

`Trainer(etm_bytes_or_model, scheme=None, momentum=0.0, batch=False)` holds the trainable copies
(int32 biases, int8 weights of the selected channels), their int16 residuals and optional float32
momentum, and does exactly what the C module does (`step` one sample; with batch=True,
`step_batch(xs, labels, lr, qas)` a mini-batch, docs/training.md §5):

- the forward pass reuses `reference.run_layer` on a *live* copy of the model whose trained
  tensors are this object's arrays (so the kernels are REF's, not duplicated);
- every float operation is an np.float32 operation in the written order (no float sums except
  the sequential softmax sum); every reduction is an exact integer sum (int64 numpy, or float64
  matmuls of integers whose partial sums stay far below 2**53, which are exact in any order);
- `et_expf`, `et_logf`, `round_sat` and `rdiv` are the spec's functions, vectorized.

`state_bytes()` / `load_state()` / `save()` / `load()` are the trained-weights file (§7) whose
payload is the params region of §6.3 byte for byte. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import dataclasses
import os
import struct
import zlib

import numpy as np

from . import reference
from .modelfile import (
    NONE,
    OP_AVERAGE_POOL_2D,
    OP_CONV_2D,
    OP_DEPTHWISE_CONV_2D,
    OP_FULLY_CONNECTED,
    OP_MAX_POOL_2D,
    OP_MEAN,
    EtmModel,
    read_etm,
    write_etm,
)
from .scheme import Scheme, channel_weights, out_channels, per_channel

F32 = np.float32
LIM30 = 1 << 30
INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1

# ------------------------------------------------------------------------------------------
# Scalar helpers of the spec (vectorized; results bit-identical to the C versions)
# ------------------------------------------------------------------------------------------


def round_sat(v, lim: int = LIM30) -> np.ndarray:
    """float32 → int: saturate at ±lim, else (int)(v ± 0.5f) truncated; NaN → 0 (int64 array)."""
    v = np.asarray(v, dtype=F32)
    shape = v.shape
    v = v.reshape(-1)
    flim = F32(lim)
    # v + 0.5f for v >= 0, v - 0.5f for v < 0 (-0.0 gives -0.5f, truncated to 0 all the same);
    # |v| >= lim stays >= lim after the add, so clamping the sum saturates; the int64 cast truncates
    t = v + np.copysign(F32(0.5), v)
    np.minimum(t, flim, out=t)  # NaN stays NaN in both
    np.maximum(t, -flim, out=t)
    nan = np.isnan(t)
    if nan.any():
        t[nan] = 0
    return t.astype(np.int64).reshape(shape)


def rdiv(a, b) -> np.ndarray:
    """Integer division rounding half away from zero (b > 0), int64."""
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    # a >= 0: (a + half) // b;  a < 0: -((half - a) // b) = -((half + |a|) // b)
    q = (np.abs(a) + b // 2) // b
    return np.where(a < 0, -q, q)


_EXP_C = [F32(c) for c in (0.00138888892, 0.00833333377, 0.0416666679, 0.166666672, 0.5, 1.0, 1.0)]


def et_expf(x) -> np.ndarray:
    """exp(x) for float32 x <= 0 (docs/training.md §3)."""
    x = np.asarray(x, dtype=F32)
    k = round_sat(x * F32(1.44269504), LIM30)
    kf = k.astype(F32)
    with np.errstate(over="ignore", invalid="ignore"):  # only for x < -87, whose result is 0
        r = (x - kf * F32(0.693145752)) - kf * F32(1.42860677e-06)
        p = r * _EXP_C[0]
        for c in _EXP_C[1:-1]:
            p = r * (c + p)
        p = _EXP_C[-1] + p
    ok = (x >= F32(-87.0)) & (k >= -126)
    kk = np.where(ok, k, 0) + 127
    scale = (kk.astype(np.uint32) << np.uint32(23)).view(F32)
    return np.where(ok, p * scale, F32(0)).astype(F32)


def et_logf(x) -> np.ndarray:
    """ln(x) for float32 x >= 1 (docs/training.md §3)."""
    x = np.asarray(x, dtype=F32)
    bits = x.view(np.uint32).astype(np.int64)
    e = ((bits >> 23) & 255) - 127
    mf = ((bits & 0x7FFFFF) | 0x3F800000).astype(np.uint32).view(F32)
    big = mf > F32(1.41421356)
    mf = np.where(big, mf * F32(0.5), mf)
    e = np.where(big, e + 1, e)
    t = (mf - F32(1)) / (mf + F32(1))
    t2 = t * t
    p = F32(0.142857149) + t2 * F32(0.111111112)
    p = F32(0.200000003) + t2 * p
    p = F32(0.333333343) + t2 * p
    p = F32(1) + t2 * p
    ln_m = (F32(2.0) * t) * p
    return (e.astype(F32) * F32(0.693147182) + ln_m).astype(F32)


def softmax_xent(q: np.ndarray, scale: float, zp: int, label: int):
    """§3: (loss, g) with g = dL/dz in real units (float32 arrays)."""
    z = F32(scale) * (np.asarray(q, np.int64).reshape(-1) - zp).astype(F32)
    m = z.max()
    e = et_expf(z - m)
    s = e[0]
    for ek in e[1:]:
        s = F32(s + ek)
    p = e / s
    loss = F32(F32(et_logf(s) + m) - z[label])
    g = p.copy()
    g[label] = g[label] - F32(1.0)
    return loss, g


def _scales(t, n: int) -> np.ndarray:
    """Per-channel float32 scales of a weight/bias tensor (a per-tensor scale repeated)."""
    if t.scales is not None:
        return np.asarray(t.scales, dtype=F32).reshape(-1)
    return np.full(n, F32(t.scale), dtype=F32)


# ------------------------------------------------------------------------------------------
# Backward helpers (all on single samples: arrays (H, W, C) without the batch axis)
# ------------------------------------------------------------------------------------------


def _grid_crop(grid: np.ndarray, pad_h: int, pad_w: int, h: int, w: int) -> np.ndarray:
    return grid[pad_h: pad_h + h, pad_w: pad_w + w]


def _grid(oh, ow, kh, kw, sh, sw, pad_h, pad_w, h, w, c, dtype=np.float64):
    gh = max((oh - 1) * sh + kh, pad_h + h)
    gw = max((ow - 1) * sw + kw, pad_w + w)
    return np.zeros((gh, gw, c), dtype)


_SCATTER: dict[tuple, np.ndarray | None] = {}
_SCATTER_MAX = 1 << 20  # matrix elements (8 MB of float64); larger geometries loop over the taps


def _scatter(oh, ow, kh, kw, sh, sw, pad_h, pad_w, h, w) -> np.ndarray | None:
    """(H*W, OH*OW*KH*KW) 0/1 float64 matrix: tap (ky, kx) of output (oy, ox) reads input row
    oy*sh+ky-pad_h, column ox*sw+kx-pad_w (taps in the padding read nothing); None if too big."""
    key = (oh, ow, kh, kw, sh, sw, pad_h, pad_w, h, w)
    if key not in _SCATTER:
        n = oh * ow * kh * kw
        if h * w * n > _SCATTER_MAX:
            _SCATTER[key] = None
        else:
            y = (np.arange(oh)[:, None, None, None] * sh + np.arange(kh)[None, None, :, None] - pad_h)
            x = (np.arange(ow)[None, :, None, None] * sw + np.arange(kw)[None, None, None, :] - pad_w)
            y, x = np.broadcast_arrays(y, x)
            y, x = y.reshape(-1), x.reshape(-1)
            ok = (y >= 0) & (y < h) & (x >= 0) & (x < w)
            m = np.zeros((h * w, n), np.float64)
            m[(y * w + x)[ok], np.arange(n)[ok]] = 1.0
            _SCATTER[key] = m
    return _SCATTER[key]


def _padded_input(x: np.ndarray, zp: int, ly, kh, kw, oh, ow) -> np.ndarray:
    """(x - zp) as int64 with zero padding, laid out so tap (ky, kx) of output (oy, ox) is
    row oy*sh+ky, column ox*sw+kx (reference._pad)."""
    xc = x.astype(np.int64) - zp
    return reference._pad(xc[None], ly.pad_h, ly.pad_w, kh, kw, ly.stride_h, ly.stride_w, oh, ow, 0)[0]


@dataclasses.dataclass
class StepInfo:
    """Debug record of the last step (real-unit gradients for tests)."""

    loss: np.float32
    g_logits: np.ndarray | None = None  # dL/dz, float32
    # layer -> {"b": dL/db, "w": dL/dW[slot, k] (float64, real units: s_g*G, s_g*s_x*A),
    #           "db", "dw": the steps d in 2^-15 LSB before momentum (int64)}
    grads: dict = dataclasses.field(default_factory=dict)
    stopped_at: int | None = None


class Trainer:
    """Training state of one model + scheme, bit-identical with the C module."""

    MAGIC = b"EDTW"
    VERSION = 2  # 2: the params region ends with the classifier-quantization item (§6.3)
    HEADER = struct.Struct("<4sHHIIIIII")

    def __init__(self, model: EtmModel | bytes, scheme: Scheme | None = None, momentum: float = 0.0,
                 batch: bool = False):
        if isinstance(model, EtmModel):
            buf = write_etm(model)
            model = read_etm(buf)
        else:
            buf = bytes(model)
            model = read_etm(buf)
        self.model = model
        self.model_crc = struct.unpack_from("<I", buf, 12)[0]
        self.scheme = scheme if scheme is not None else Scheme.for_model(model)
        self.scheme.validate(model)
        for e in self.scheme.entries:  # the C channel map holds int16 channel numbers
            if e.channels and out_channels(model, e.layer) > 32767:
                raise ValueError(f"layer {e.layer}: {out_channels(model, e.layer)} output channels; "
                                 f"training handles at most 32767")
        _check_scales(model, self.scheme)
        self.momentum = F32(momentum)
        if not (self.momentum >= 0 and self.momentum < 1):
            raise ValueError(f"momentum {momentum} must be in [0, 1)")
        self.first = self.scheme.first
        self.batch = bool(batch)
        self._acc: dict | None = None  # inside step_batch: {("b"|"w", layer): float32 accumulator}
        # live model: trained tensors are replaced by our own arrays (mutated in place)
        self.live = dataclasses.replace(model, tensors=list(model.tensors), layers=list(model.layers))
        self.bias: dict[int, np.ndarray] = {}
        self.weight: dict[int, np.ndarray] = {}
        self.sel: dict[int, np.ndarray] = {}
        for e in self.scheme.entries:
            ly = model.layers[e.layer]
            if e.bias:
                self.live.tensors[ly.bias] = dataclasses.replace(model.tensors[ly.bias], data=None)
            if e.channels:
                self.live.tensors[ly.weight] = dataclasses.replace(model.tensors[ly.weight], data=None)
                self.sel[e.layer] = np.asarray(e.channels, dtype=np.int64)
        # fixed per-layer float32 constants
        self.s_w: dict[int, np.ndarray] = {}
        self.r_c: dict[int, np.ndarray] = {}
        self.s_wmax: dict[int, np.float32] = {}
        self.s_b: dict[int, np.ndarray] = {}  # bias scales, filled on first use
        for i, ly in enumerate(model.layers):
            if ly.weight != NONE:
                sw = _scales(model.tensors[ly.weight], out_channels(model, i))
                self.s_w[i] = sw
                self.s_wmax[i] = sw.max()
                self.r_c[i] = (sw / sw.max()).astype(F32)
        from .refit import refit_layer

        self.refit_layer = refit_layer(model, self.scheme)  # has the §6.3 quantization item
        self.qscale = None
        self.reset()

    # ------------------------------------------------------------------ state

    def reset(self) -> None:
        """Back to the flashed weights; residuals and momentum zero."""
        m = self.model
        self.res_b: dict[int, np.ndarray] = {}
        self.res_w: dict[int, np.ndarray] = {}
        self.mom_b: dict[int, np.ndarray] = {}
        self.mom_w: dict[int, np.ndarray] = {}
        for e in self.scheme.entries:
            ly = m.layers[e.layer]
            c_out = out_channels(m, e.layer)
            if e.bias:
                b = m.tensors[ly.bias].data.astype(np.int32).copy()
                self.bias[e.layer] = b
                self.live.tensors[ly.bias].data = b
                self.res_b[e.layer] = np.zeros(c_out, np.int16)
                self.mom_b[e.layer] = np.zeros(c_out, F32)
            if e.channels:
                w = m.tensors[ly.weight].data.astype(np.int8).copy()
                self.weight[e.layer] = w
                self.live.tensors[ly.weight].data = w
                shape = (len(e.channels), per_channel(m, e.layer))
                self.res_w[e.layer] = np.zeros(shape, np.int16)
                self.mom_w[e.layer] = np.zeros(shape, F32)
        if self.refit_layer is not None:
            from .refit import Flashed

            fl = Flashed(m, self.refit_layer)
            self._set_qscale(self.refit_layer, fl.s_w, fl.s_b, fl.mult, fl.shift)

    def _set_qscale(self, i: int, s_w, s_b, mult, shift) -> None:
        """The classifier's per-channel weight/bias scales and requantization multipliers
        (the params region's last item, §6.3): every later forward and update uses them."""
        s_w = np.asarray(s_w, F32).copy()
        self.s_w[i] = s_w
        self.s_wmax[i] = s_w.max()
        self.r_c[i] = (s_w / s_w.max()).astype(F32)
        self.s_b[i] = np.asarray(s_b, F32).copy()
        self.live.layers[i] = dataclasses.replace(self.model.layers[i], multipliers=np.asarray(mult, np.int32).copy(),
                                                  shifts=np.asarray(shift, np.int32).copy())
        self.qscale = (self.s_w[i], self.s_b[i], self.live.layers[i].multipliers, self.live.layers[i].shifts)

    def install_classifier(self, i: int, q: dict) -> None:
        """A refit's result (refit.py): int8 weights (C, K), int32 biases, scales and multipliers;
        the classifier's residuals and momentum restart at zero."""
        self.bias[i].reshape(-1)[:] = q["b"]
        channel_weights(self.model, i, self.weight[i])[:] = q["w"]
        self.res_b[i][:] = 0
        self.res_w[i][:] = 0
        self.mom_b[i][:] = 0
        self.mom_w[i][:] = 0
        self._set_qscale(i, q["s_w"], q["s_b"], q["mult"], q["shift"])

    def refit(self, xs, labels, l2=None, alpha=None) -> dict:
        """Closed-form classifier refit (docs/training.md §9, host/edgetune/refit.py)."""
        from .refit import refit

        return refit(self, xs, labels, l2, alpha)

    def trained_weights(self, layer: int) -> np.ndarray:
        """(n_sel, per_channel) int8 copy of the selected channels of `layer`."""
        return channel_weights(self.model, layer, self.weight[layer])[self.sel[layer]].copy()

    def params_region(self) -> bytes:
        """The params region of docs/training.md §6.3 (little-endian, padding zero)."""
        out = bytearray()

        def put(b: bytes) -> None:
            out.extend(b)
            out.extend(b"\0" * (-len(b) % 4))

        m = self.model
        for e in self.scheme.entries:
            c_out = out_channels(m, e.layer)
            if e.bias:
                put(self.bias[e.layer].astype("<i4").tobytes())
            if e.channels:
                cmap = np.full(c_out, -1, np.int64)
                cmap[self.sel[e.layer]] = np.arange(len(e.channels))
                put(cmap.astype("<i2").tobytes())
                put(self.trained_weights(e.layer).astype(np.int8).tobytes())
            res = []
            if e.bias:
                res.append(self.res_b[e.layer].reshape(-1))
            if e.channels:
                res.append(self.res_w[e.layer].reshape(-1))
            put(np.concatenate(res).astype("<i2").tobytes())
            if self.momentum > 0:
                mom = []
                if e.bias:
                    mom.append(self.mom_b[e.layer].reshape(-1))
                if e.channels:
                    mom.append(self.mom_w[e.layer].reshape(-1))
                put(np.concatenate(mom).astype("<f4").tobytes())
        if self.refit_layer is not None:
            sw, sb, mult, shift = self.qscale
            put(sw.astype("<f4").tobytes() + sb.astype("<f4").tobytes() + np.asarray(mult).astype("<i4").tobytes()
                + np.asarray(shift).astype("<i4").tobytes())
        return bytes(out)

    def state_bytes(self) -> bytes:
        """The trained-weights file (§7)."""
        params = self.params_region()
        size = 32 + len(params)
        tail = struct.pack("<IIII", self.model_crc, self.scheme.crc(), len(params),
                           1 if self.momentum > 0 else 0) + params
        crc = zlib.crc32(tail) & 0xFFFFFFFF
        return struct.pack("<4sHHII", self.MAGIC, self.VERSION, 32, size, crc) + tail

    def state(self) -> bytes:
        """The device's m.state(): the trained-weights file's bytes (an in-RAM checkpoint)."""
        return self.state_bytes()

    def save(self, path: str) -> None:
        """Write the trained-weights file as path + ".tmp", then rename it over `path`."""
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(self.state_bytes())
        os.replace(tmp, path)

    def load(self, path: str) -> None:
        with open(path, "rb") as f:
            self.load_state(f.read())

    def load_state(self, data: bytes) -> None:
        """Check everything (§7), then install the state; ValueError leaves the state unchanged."""
        data = bytes(data)
        if len(data) < 32:
            raise ValueError(f"trained-weights file has {len(data)} bytes; the header alone is 32")
        magic, ver, hsize, size, crc, mcrc, scrc, p, flags = self.HEADER.unpack_from(data, 0)
        if magic != self.MAGIC:
            raise ValueError(f"not a trained-weights file: magic {magic!r}, expected {self.MAGIC!r}")
        if ver != self.VERSION or hsize != 32:
            raise ValueError(f"trained-weights file version {ver} / header size {hsize} not supported")
        if size != len(data):
            raise ValueError(f"trained-weights file says {size} bytes but has {len(data)} (truncated?)")
        if zlib.crc32(data[16:]) & 0xFFFFFFFF != crc:
            raise ValueError("trained-weights file CRC mismatch (corrupted)")
        if mcrc != self.model_crc:
            raise ValueError(f"trained-weights file belongs to another model (model CRC {mcrc:#010x}, "
                             f"this model {self.model_crc:#010x})")
        if scrc != self.scheme.crc():
            raise ValueError("trained-weights file was saved with a different scheme")
        mom = self.momentum > 0
        if flags != (1 if mom else 0):
            raise ValueError(f"trained-weights file flags {flags:#x}: momentum buffers "
                             f"{'present' if flags & 1 else 'absent'}, "
                             f"this model has momentum {'on' if mom else 'off'}")
        expect = len(self.params_region())
        if p != expect or size != 32 + p:
            raise ValueError(f"trained-weights params region is {p} bytes, this model + scheme needs {expect}")
        m = self.model
        off = 32
        new = []  # (kind, layer, array) installed only after every check passed

        def take(n: int, dt: str) -> np.ndarray:
            nonlocal off
            item = np.dtype(dt).itemsize
            arr = np.frombuffer(data, dt, n, off).copy()
            off += n * item + (-(n * item) % 4)
            return arr

        for e in self.scheme.entries:
            c_out = out_channels(m, e.layer)
            pc = per_channel(m, e.layer)
            n_sel = len(e.channels)
            if e.bias:
                new.append(("b", e.layer, take(c_out, "<i4").astype(np.int32)))
            if e.channels:
                cmap = take(c_out, "<i2")
                want = np.full(c_out, -1, np.int64)
                want[self.sel[e.layer]] = np.arange(n_sel)
                if not np.array_equal(cmap.astype(np.int64), want):
                    raise ValueError(f"trained-weights file: channel map of layer {e.layer} differs from the scheme")
                w = take(n_sel * pc, "i1").astype(np.int8)
                # Training keeps weights in [-127, 127]; a flashed -128 it never touched stays.
                flashed = channel_weights(m, e.layer)[self.sel[e.layer]].reshape(-1)
                if np.any((w == -128) & (flashed != -128)):
                    raise ValueError(f"trained-weights file: layer {e.layer} weight -128 outside [-127, 127]")
                new.append(("w", e.layer, w.reshape(n_sel, pc)))
            nb = c_out if e.bias else 0
            r = take(nb + n_sel * pc, "<i2").astype(np.int16)
            if np.any(r < -16384) or np.any(r > 16383):
                raise ValueError(f"trained-weights file: layer {e.layer} residual outside [-16384, 16383]")
            if e.bias:
                new.append(("rb", e.layer, r[:nb].copy()))
            if e.channels:
                new.append(("rw", e.layer, r[nb:].reshape(n_sel, pc).copy()))
            if mom:
                v = take(nb + n_sel * pc, "<f4").astype(F32)
                if not np.all(np.isfinite(v)):  # NaN freezes a parameter, +-inf pins it at +-127
                    raise ValueError(f"trained-weights file: layer {e.layer} momentum is not a finite number")
                if e.bias:
                    new.append(("mb", e.layer, v[:nb].copy()))
                if e.channels:
                    new.append(("mw", e.layer, v[nb:].reshape(n_sel, pc).copy()))
        if self.refit_layer is not None:
            c = out_channels(m, self.refit_layer)
            sw, sb = take(c, "<f4").astype(F32), take(c, "<f4").astype(F32)
            mult, shift = take(c, "<i4").astype(np.int32), take(c, "<i4").astype(np.int32)
            if not (np.all(np.isfinite(sw) & (sw > 0)) and np.all(np.isfinite(sb) & (sb > 0))):
                raise ValueError("trained-weights file: classifier scales must be positive numbers")
            if np.any(mult < 0) or np.any(shift < -31) or np.any(shift > 30):
                raise ValueError("trained-weights file: classifier multiplier/shift out of range")
            new.append(("q", self.refit_layer, (sw, sb, mult, shift)))
        for kind, layer, arr in new:
            if kind == "b":
                self.bias[layer].reshape(-1)[:] = arr
            elif kind == "w":
                channel_weights(m, layer, self.weight[layer])[self.sel[layer]] = arr
            elif kind == "rb":
                self.res_b[layer][:] = arr
            elif kind == "rw":
                self.res_w[layer][:] = arr
            elif kind == "mb":
                self.mom_b[layer][:] = arr
            elif kind == "mw":
                self.mom_w[layer][:] = arr
            elif kind == "q":
                self._set_qscale(layer, *arr)

    # ------------------------------------------------------------------ inference

    def _input(self, x) -> np.ndarray:
        x = np.asarray(x)
        if x.dtype != np.int8:
            raise TypeError(f"input must be int8, got {x.dtype}")
        t = self.model.input_tensor
        if x.size != t.size:
            raise ValueError(f"input has {x.size} elements, model input {t.shape} needs {t.size}")
        return x.reshape((1,) + tuple(t.shape[1:]))

    def predict(self, x) -> np.ndarray:
        """int8 logits with the current weights."""
        return reference.forward_batch(self.live, self._input(x)).reshape(self.model.output_tensor.shape)

    def _label(self, label) -> int:
        c = self.model.output_tensor.size
        label = int(label)
        if not 0 <= label < c:
            raise ValueError(f"label {label} out of range 0..{c - 1}")
        return label

    def evaluate(self, xs, labels) -> tuple[np.float32, np.float32]:
        """(mean loss, accuracy) as in docs/training.md §5."""
        xs = np.asarray(xs)
        labels = [self._label(lb) for lb in np.asarray(labels).reshape(-1)]
        n = len(labels)
        if n == 0:
            raise ValueError("evaluate needs at least one sample")
        t_in, t_out = self.model.input_tensor, self.model.output_tensor
        if xs.dtype != np.int8 or xs.size != n * t_in.size:
            raise ValueError(f"xs must be int8 with {n} x {t_in.size} elements")
        ys = reference.forward_batch(self.live, xs.reshape((n,) + tuple(t_in.shape[1:]))).reshape(n, -1)
        total = F32(0)
        correct = 0
        for k in range(n):
            loss, _ = softmax_xent(ys[k], t_out.scale, t_out.zero_point, labels[k])
            total = loss if k == 0 else F32(total + loss)
            correct += int(np.argmax(ys[k]) == labels[k])
        return F32(total / F32(n)), F32(F32(correct) / F32(n))

    # ------------------------------------------------------------------ training step

    def step(self, x, label: int, lr: float, qas: bool = True, trace: bool = False) -> np.float32:
        """One SGD step on one sample (§2–§4); returns the float32 loss. With `trace`, the
        real-unit gradients are kept in `self.info` (a StepInfo)."""
        m = self.model
        label = self._label(label)
        x = self._input(x)
        lr = F32(lr)
        # §2 forward (all activations kept; the device keeps only what §2 lists)
        acts = [x]
        for ly in self.live.layers:  # the classifier's multipliers may be a refit's (§6.3)
            acts.append(reference.run_layer(self.live, ly, acts[-1]))
        t_out = m.output_tensor
        loss, g = softmax_xent(acts[-1], t_out.scale, t_out.zero_point, label)
        info = StepInfo(loss, g.copy() if trace else None)
        self.info = info
        if self.first is None:
            return loss
        big = np.abs(g).max()
        if big == 0:
            return loss
        s_g = F32(big / F32(32767.0))
        g_q = round_sat(g / s_g, 32767).reshape(acts[-1].shape[1:])
        for i in range(len(m.layers) - 1, self.first - 1, -1):
            ly = m.layers[i]
            if i < len(m.layers) - 1:  # §3: the logits layer's mask is not applied
                y = acts[i + 1][0]
                g_q = np.where((y > ly.act_min) & (y < ly.act_max), g_q, 0)
            stop = False
            g_next = s_next = None
            if i > self.first:
                acc, s_acc = self._input_grad(i, g_q, s_g, acts[i][0])
                big = int(np.abs(acc).max()) if acc.size else 0
                if big == 0:
                    stop = True
                else:
                    g_next = rdiv(acc * 32767, big)
                    s_next = F32(F32(s_acc * F32(big)) / F32(32767.0))
            e = self.scheme.entry(i)
            if e is not None:
                self._update(i, e, g_q, s_g, acts[i][0], lr, qas, info if trace else None)
            if stop:
                info.stopped_at = i
                break
            g_q, s_g = g_next, s_next
        return loss

    def step_batch(self, xs, labels, lr: float, qas: bool = True) -> np.float32:
        """One mini-batch step on k samples (docs/training.md §5); returns the mean float32 loss.
        Every sample runs with the weights as at the start; the real-valued steps accumulate
        in float32 in sample order; then d = round_sat((acc / k) * 32768) and §4f-g once for
        every trainable parameter."""
        if not self.batch:
            raise ValueError("k labels need a batch model: create the Model with batch=True")
        labels = [self._label(lb) for lb in np.asarray(labels).reshape(-1)]
        k = len(labels)
        if k == 0:
            raise ValueError("a batch needs at least one label")
        xs = np.asarray(xs)
        n_in = self.model.input_tensor.size
        if xs.dtype != np.int8 or xs.size != k * n_in:
            raise ValueError(f"xs must be int8 with {k} x {n_in} elements")
        lr = F32(lr)
        if not np.isfinite(lr):
            raise ValueError("lr must be a finite number")
        xs = xs.reshape(k, n_in)
        acc = {}
        for e in self.scheme.entries:
            if e.bias:
                acc[("b", e.layer)] = np.zeros(len(self.res_b[e.layer]), F32)
            if e.channels:
                acc[("w", e.layer)] = np.zeros(self.res_w[e.layer].shape, F32)
        self._acc = acc
        try:
            total = F32(0)
            for s in range(k):
                loss = self.step(xs[s], labels[s], lr, qas)
                total = loss if s == 0 else F32(total + loss)
        finally:
            self._acc = None
        kf = F32(k)
        m = self.model
        for e in self.scheme.entries:
            i = e.layer
            if e.bias:
                d = round_sat((acc[("b", i)] / kf) * F32(32768.0))
                self.res_b[i][:] = self._apply(d, self.res_b[i], self.mom_b[i], self.bias[i].reshape(-1), True)
            if e.channels:
                sel = self.sel[i]
                d = round_sat((acc[("w", i)] / kf) * F32(32768.0))
                view = channel_weights(m, i, self.weight[i])
                wsel = view[sel].astype(np.int64)
                self.res_w[i][:] = self._apply(d, self.res_w[i], self.mom_w[i], wsel, False)
                view[sel] = wsel.astype(np.int8)
        return F32(total / kf)

    def _input_grad(self, i: int, g: np.ndarray, s_g, x: np.ndarray):
        """§4b: (acc int64 shaped like t_i without the batch axis, s_acc float32)."""
        m = self.model
        ly = m.layers[i]
        h_in, w_in, c_in = m.tensors[ly.input].shape[1:]
        oh, ow, c_out = g.shape
        if ly.op in (OP_FULLY_CONNECTED, OP_CONV_2D, OP_DEPTHWISE_CONV_2D):
            w = self.live.tensors[ly.weight].data
            h = round_sat(g.astype(F32) * self.r_c[i], 32767).astype(np.float64)
            s_acc = F32(s_g * self.s_wmax[i])
            if ly.op == OP_FULLY_CONNECTED:
                acc = h.reshape(-1) @ w.reshape(c_out, -1).astype(np.float64)
                return acc.astype(np.int64).reshape(h_in, w_in, c_in), s_acc
            kh, kw = w.shape[1], w.shape[2]
            sc = _scatter(oh, ow, kh, kw, ly.stride_h, ly.stride_w, ly.pad_h, ly.pad_w, h_in, w_in)
            if sc is not None:
                # per (output position, tap): the input-channel contributions, then one exact
                # scatter-add (a 0/1 matrix) onto the input positions; integers, sums < 2**53
                if ly.op == OP_CONV_2D:
                    taps = h.reshape(-1, c_out) @ w.reshape(c_out, -1).astype(np.float64)
                else:
                    dm = ly.depth_multiplier
                    taps = (h.reshape(-1, 1, c_out) * w.reshape(1, kh * kw, c_out).astype(np.float64))
                    taps = taps.reshape(-1, kh * kw, c_in, dm).sum(-1)
                acc = sc @ taps.reshape(-1, c_in)
                return acc.astype(np.int64).reshape(h_in, w_in, c_in), s_acc
            grid = _grid(oh, ow, kh, kw, ly.stride_h, ly.stride_w, ly.pad_h, ly.pad_w, h_in, w_in, c_in)
            hs = (oh - 1) * ly.stride_h + 1
            ws = (ow - 1) * ly.stride_w + 1
            for ky in range(kh):
                for kx in range(kw):
                    if ly.op == OP_CONV_2D:
                        contrib = h.reshape(-1, c_out) @ w[:, ky, kx, :].astype(np.float64)
                        contrib = contrib.reshape(oh, ow, c_in)
                    else:
                        dm = ly.depth_multiplier
                        contrib = (h * w[0, ky, kx, :].astype(np.float64)).reshape(oh, ow, c_in, dm).sum(-1)
                    grid[ky: ky + hs: ly.stride_h, kx: kx + ws: ly.stride_w] += contrib
            return _grid_crop(grid, ly.pad_h, ly.pad_w, h_in, w_in).astype(np.int64), s_acc
        if ly.op == OP_MEAN:
            acc = np.broadcast_to(g.reshape(1, 1, c_in), (h_in, w_in, c_in)).astype(np.int64)
            return acc, F32(s_g / F32(h_in * w_in))
        kh, kw, sh, sw = ly.filter_h, ly.filter_w, ly.stride_h, ly.stride_w
        grid = _grid(oh, ow, kh, kw, sh, sw, ly.pad_h, ly.pad_w, h_in, w_in, c_in, np.int64)
        hs, ws = (oh - 1) * sh + 1, (ow - 1) * sw + 1
        if ly.op == OP_AVERAGE_POOL_2D:
            ys = np.arange(oh)[:, None] * sh - ly.pad_h
            xs = np.arange(ow)[:, None] * sw - ly.pad_w
            ny = ((ys + np.arange(kh)[None]) >= 0) & ((ys + np.arange(kh)[None]) < h_in)
            nx = ((xs + np.arange(kw)[None]) >= 0) & ((xs + np.arange(kw)[None]) < w_in)
            count = ny.sum(1)[:, None] * nx.sum(1)[None, :]
            contrib = g * rdiv(1024, count)[..., None]
            for ky in range(kh):
                for kx in range(kw):
                    grid[ky: ky + hs: sh, kx: kx + ws: sw] += contrib
            return _grid_crop(grid, ly.pad_h, ly.pad_w, h_in, w_in), F32(s_g / F32(1024.0))
        if ly.op == OP_MAX_POOL_2D:
            xp = reference._pad(x[None].astype(np.int16), ly.pad_h, ly.pad_w, kh, kw, sh, sw, oh, ow, -1000)[0]
            best = np.full((oh, ow, c_in), -10000, np.int16)
            arg = np.zeros((oh, ow, c_in), np.int64)
            for t, (ky, kx) in enumerate((a, b) for a in range(kh) for b in range(kw)):
                tap = xp[ky: ky + hs: sh, kx: kx + ws: sw]
                better = tap > best
                best = np.where(better, tap, best)
                arg = np.where(better, t, arg)
            # grid index space must match reference._pad's layout: rebuild in an uncropped grid
            for t, (ky, kx) in enumerate((a, b) for a in range(kh) for b in range(kw)):
                grid[ky: ky + hs: sh, kx: kx + ws: sw] += np.where(arg == t, g, 0)
            return _grid_crop(grid, ly.pad_h, ly.pad_w, h_in, w_in), F32(s_g)
        raise ValueError(f"layer {i}: backward of {ly.op_name} is not supported")

    def _update(self, i: int, e, g: np.ndarray, s_g, x: np.ndarray, lr, qas: bool, info) -> None:
        """§4d–g for layer i with the masked output gradient g (int64 (OH, OW, C))."""
        m = self.model
        ly = m.layers[i]
        c_out = g.shape[-1]
        g2 = g.reshape(-1, c_out)
        neg = F32(F32(-lr) * s_g)
        if e.bias:
            G = g2.sum(axis=0)
            s_b = self.s_b.get(i)
            if s_b is None:
                s_b = self.s_b[i] = _scales(m.tensors[ly.bias], c_out)
            f = (neg / s_b) if qas else (neg * s_b)
            if self._acc is not None:
                a = self._acc[("b", i)]
                a[...] = (a + (f * G.astype(F32))).astype(F32)
                return self._update_w(i, g, x, neg, s_g, qas, info) if e.channels else None
            d = round_sat((f * G.astype(F32)) * F32(32768.0))
            if info is not None:
                info.grads.setdefault(i, {}).update(b=float(s_g) * G.astype(np.float64), db=d.copy())
            self.res_b[i][:] = self._apply(d, self.res_b[i], self.mom_b[i], self.bias[i].reshape(-1), True)
        if e.channels:
            self._update_w(i, g, x, neg, s_g, qas, info)

    def _update_w(self, i: int, g: np.ndarray, x: np.ndarray, neg, s_g, qas: bool, info) -> None:
        """§4e (and f, g) for layer i's selected channels."""
        m = self.model
        ly = m.layers[i]
        sel = self.sel[i]
        t_in = m.tensors[ly.input]
        s_x, zp_x = F32(t_in.scale), int(t_in.zero_point)
        A = self._weight_grad(i, g, x, sel, zp_x)
        s_w = self.s_w[i][sel]
        base = F32(neg * s_x)
        f = (base / s_w) if qas else (base * s_w)
        if self._acc is not None:
            a = self._acc[("w", i)]
            a[...] = (a + (f[:, None] * A.astype(F32))).astype(F32)
            return
        d = round_sat((f[:, None] * A.astype(F32)) * F32(32768.0))
        if info is not None:
            info.grads.setdefault(i, {}).update(w=float(s_g) * float(s_x) * A.astype(np.float64), dw=d.copy())
        view = channel_weights(m, i, self.weight[i])
        wsel = view[sel].astype(np.int64)
        self.res_w[i][:] = self._apply(d, self.res_w[i], self.mom_w[i], wsel, False)
        view[sel] = wsel.astype(np.int8)

    def _apply(self, d: np.ndarray, res: np.ndarray, mom: np.ndarray, param: np.ndarray, is_bias: bool) -> np.ndarray:
        """§4f–g in place on `param` (int32 bias view or int64 weight copy); returns the new residual."""
        if self.momentum > 0:
            v = (self.momentum * mom + d.astype(F32)).astype(F32)
            mom[...] = v
            d = round_sat(v)
        a = d + res.astype(np.int64)
        n = (a + 16384) >> 15  # floor division by 32768
        r = a - (n << 15)
        if is_bias:
            p = param.astype(np.int64) + n
            param[...] = np.maximum(np.minimum(p, INT32_MAX, out=p), INT32_MIN, out=p)
        else:
            p = param + n
            param[...] = np.maximum(np.minimum(p, 127, out=p), -127, out=p)
        return r.astype(np.int16)

    def _weight_grad(self, i: int, g: np.ndarray, x: np.ndarray, sel: np.ndarray, zp_x: int) -> np.ndarray:
        """§4e: A[slot, k] int64 for the selected channels."""
        m = self.model
        ly = m.layers[i]
        oh, ow, c_out = g.shape
        if ly.op == OP_FULLY_CONNECTED:
            xc = x.reshape(-1).astype(np.int64) - zp_x
            return g.reshape(-1)[sel][:, None] * xc[None, :]
        w_shape = m.tensors[ly.weight].shape
        kh, kw = w_shape[1], w_shape[2]
        xp = _padded_input(x, zp_x, ly, kh, kw, oh, ow)
        hs, ws = (oh - 1) * ly.stride_h + 1, (ow - 1) * ly.stride_w + 1
        if ly.op == OP_CONV_2D:
            cols = reference._im2col(xp[None], kh, kw, ly.stride_h, ly.stride_w, oh, ow).astype(np.float64)
            gs = g.reshape(-1, c_out)[:, sel].astype(np.float64)
            return (gs.T @ cols).astype(np.int64)
        dm = ly.depth_multiplier
        A = np.zeros((len(sel), kh * kw), np.int64)
        gs = g[..., sel]
        cin = sel // dm
        for ky in range(kh):
            for kx in range(kw):
                tap = xp[ky: ky + hs: ly.stride_h, kx: kx + ws: ly.stride_w][..., cin]
                A[:, ky * kw + kx] = (gs * tap).sum(axis=(0, 1))
        return A


def _check_scales(model: EtmModel, scheme: Scheme) -> None:
    """ValueError unless the floats a step uses are usable (docs/training.md §1 validation):
    weight scales of every weight layer i >= first, bias scales of trained biases, the input
    scale of weight-trained layers (finite and > 0); the output scale finite and >= 0."""
    first = scheme.first
    if first is None:
        return
    for i in range(first, len(model.layers)):
        ly = model.layers[i]
        if ly.weight == NONE:
            continue
        c = out_channels(model, i)
        e = scheme.entry(i)
        checks = [("weight", _scales(model.tensors[ly.weight], c))]
        if e is not None and e.bias:
            checks.append(("bias", _scales(model.tensors[ly.bias], c)))
        if e is not None and e.channels:
            checks.append(("input", np.asarray([model.tensors[ly.input].scale], F32)))
        for what, sc in checks:
            if not np.all(np.isfinite(sc) & (sc > 0)):
                raise ValueError(f"layer {i}: {what} scale is not a positive number")
    so = F32(model.output_tensor.scale)
    if not (np.isfinite(so) and so >= 0):
        raise ValueError("the output scale is not a finite number")
