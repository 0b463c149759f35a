"""The numpy twin of the C forward kernels, bit-exact with TFLite Micro's reference int8 kernels.

Everything here is integer arithmetic on int64 numpy arrays that reproduces, bit for bit, what
the C99 kernels in `native_modules/edgetune/kernels/` and TFLM's reference kernels compute:

- `saturating_rounding_doubling_high_mul`, `rounding_divide_by_pot`: gemmlowp's fixed-point
  primitives (tensorflow/lite/kernels/internal/common.h pulls them from gemmlowp).
- `multiply_by_quantized_multiplier`: TFLM's requantization with *double rounding* (the
  multiplier's left shift applied before the high-mul, the right shift after it).
- one function per op over NHWC int8 arrays, taking exactly the prepared integer parameters of a
  `modelfile.Layer` (the host computed them in `prepare.py`; nothing here looks at float scales).
- `forward(model, x)` runs an `EtmModel` chain; `forward_batch` runs many inputs at once.

Accumulation: products are summed exactly (float64 matmuls are exact for int8*int8 products as
long as a dot product has fewer than 2**37 terms) and then wrapped to int32 as the C code's
int32 accumulators would be (they never overflow for realistic models, but the twin must not
silently differ if one ever does).
"""

from __future__ import annotations

import numpy as np

from ..format.modelfile import (
    NONE, OP_AVERAGE_POOL_2D, OP_CONV_2D, OP_DEPTHWISE_CONV_2D, OP_FULLY_CONNECTED, OP_MAX_POOL_2D,
    OP_MEAN, EtmModel, Layer,
)

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1

ArrayLike = np.ndarray | int


# --------------------------------------------------------------------------------------------
# Fixed-point primitives (gemmlowp semantics, vectorized; inputs are int32 values held in int64)
# --------------------------------------------------------------------------------------------


def wrap_int32(x: ArrayLike) -> np.ndarray:
    """Two's-complement wrap of int64 values to the int32 range (what a C int32 store does)."""
    x = np.asarray(x, dtype=np.int64)
    return ((x + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def saturating_rounding_doubling_high_mul(a: ArrayLike, b: ArrayLike) -> np.ndarray:
    """gemmlowp SaturatingRoundingDoublingHighMul for int32 a, b: round(a*b / 2**31), saturating.

    The rounding nudge is 2**30 for a non-negative product and 1 - 2**30 for a negative one, and
    the division truncates toward zero (C integer division), i.e. ties round away from zero.
    The only overflow, INT32_MIN * INT32_MIN, saturates to INT32_MAX.
    """
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    ab = a * b  # |a*b| <= 2**62: exact in int64
    nudged = ab + np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    # C division by 2**31 truncates toward zero; numpy's >> floors, so negate around it.
    high = np.where(nudged >= 0, nudged >> 31, -((-nudged) >> 31))
    overflow = (a == b) & (a == INT32_MIN)
    return np.where(overflow, INT32_MAX, high).astype(np.int64)


def rounding_divide_by_pot(x: ArrayLike, exponent: ArrayLike) -> np.ndarray:
    """gemmlowp RoundingDivideByPOT: x / 2**exponent rounded to nearest, ties away from zero.

    `exponent` must be in [0, 31] (scalar or broadcastable array).
    """
    x = np.asarray(x, dtype=np.int64)
    e = np.asarray(exponent, dtype=np.int64)
    if np.any(e < 0) or np.any(e > 31):
        raise ValueError(f"rounding_divide_by_pot: exponent must be in [0, 31], got {exponent}")
    mask = (np.int64(1) << e) - 1
    remainder = x & mask  # low bits are the same in int64 and int32 two's complement
    threshold = (mask >> 1) + (x < 0)
    return (x >> e) + (remainder > threshold)


def multiply_by_quantized_multiplier(x: ArrayLike, multiplier: ArrayLike, shift: ArrayLike) -> np.ndarray:
    """TFLM MultiplyByQuantizedMultiplier (double rounding) of int32 x.

    shift > 0 is a left shift applied to x before the high-mul (wrapping like C's int32
    `x * (1 << left_shift)`), shift < 0 a rounding right shift applied after it.
    `multiplier` and `shift` broadcast against `x` (per-output-channel arrays on the last axis).
    """
    x = np.asarray(x, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(wrap_int32(x << left), multiplier), right)


_RQ_CACHE: dict[bytes, tuple] = {}


def _requant_consts(multiplier: ArrayLike, shift: ArrayLike) -> tuple:
    """(multiplier, left shift or None, right shift, mask, mask >> 1) as int64 arrays, memoized
    by value: the per-layer constants of multiply_by_quantized_multiplier."""
    mm, ss = np.asarray(multiplier), np.asarray(shift)
    key = (mm.tobytes(), mm.dtype.str, mm.shape, ss.tobytes(), ss.dtype.str, ss.shape)
    c = _RQ_CACHE.get(key)
    if c is None:
        m = mm.astype(np.int64)
        s = ss.astype(np.int64)
        right = np.maximum(-s, 0)
        if np.any(right > 31):
            raise ValueError(f"rounding_divide_by_pot: exponent must be in [0, 31], got {-s}")
        left = np.maximum(s, 0)
        mask = (np.int64(1) << right) - 1
        # multiplier == INT32_MIN is the high-mul's only overflow; the fast path needs it absent
        fast = not np.any(m == INT32_MIN)
        c = (m, left if np.any(left) else None, right, mask, mask >> 1, fast, s)
        if len(_RQ_CACHE) > 4096:
            _RQ_CACHE.clear()
        _RQ_CACHE[key] = c
    return c


def requantize(acc: np.ndarray, multiplier: ArrayLike, shift: ArrayLike, output_offset: int,
                act_min: int, act_max: int) -> np.ndarray:
    """clamp(multiply_by_quantized_multiplier(wrap_int32(acc)) + output_offset) as int8.

    The same integers as the composition of the primitives above, in fewer numpy operations:
    with the nudge folded in, the high-mul's truncating division by 2**31 is `(a*b + 2**30) >> 31`
    for either sign of a*b (for a*b < 0: trunc((a*b + 1 - 2**30) / 2**31) =
    floor((a*b + 1 - 2**30 + 2**31 - 1) / 2**31)); the saturating case a == b == INT32_MIN
    cannot occur unless the multiplier is INT32_MIN (then the primitives are used)."""
    m, left, right, mask, half, fast, s = _requant_consts(multiplier, shift)
    if not fast:
        out = multiply_by_quantized_multiplier(wrap_int32(acc), m, s) + output_offset
        return np.clip(out, act_min, act_max).astype(np.int8)
    x = np.add(acc, 1 << 31, dtype=np.int64)
    x &= 0xFFFFFFFF
    x -= 1 << 31
    if left is not None:
        x <<= left
        x += 1 << 31
        x &= 0xFFFFFFFF
        x -= 1 << 31
    x *= m
    x += 1 << 30
    x >>= 31
    t = x >> 63  # -1 where x < 0, else 0
    t += x & mask  # remainder > (mask >> 1) + (x < 0)  <=>  remainder + (x >> 63) > mask >> 1
    x >>= right
    x += t > half
    x += output_offset
    np.minimum(x, act_max, out=x)
    np.maximum(x, act_min, out=x)
    return x.astype(np.int8)


def _c_div_round(acc: np.ndarray, count: ArrayLike) -> np.ndarray:
    """TFLM's `acc > 0 ? (acc + n/2) / n : (acc - n/2) / n` with C (truncating) division."""
    count = np.asarray(count, dtype=np.int64)
    half = count // 2
    pos = (acc + half) // count
    neg = -((half - acc) // count)
    return np.where(acc > 0, pos, neg)


# --------------------------------------------------------------------------------------------
# Ops. Activations are (N, H, W, C) int8 arrays (N = batch of independent inputs).
# --------------------------------------------------------------------------------------------


def pad(x: np.ndarray, pad_h: int, pad_w: int, kh: int, kw: int, sh: int, sw: int, out_h: int,
         out_w: int, value: int) -> np.ndarray:
    """Pad/crop (N, H, W, C) so output (oy, ox) reads rows oy*sh .. oy*sh+kh-1 of the result."""
    n, h, w, c = x.shape
    need_h = (out_h - 1) * sh + kh
    need_w = (out_w - 1) * sw + kw
    bottom = need_h - pad_h - h
    right = need_w - pad_w - w
    if pad_h < 0 or pad_w < 0:
        raise ValueError(f"negative padding ({pad_h}, {pad_w}) is not supported")
    x = x[:, : h + min(bottom, 0), : w + min(right, 0)]
    hh, ww = x.shape[1], x.shape[2]
    out = np.empty((n, pad_h + hh + max(bottom, 0), pad_w + ww + max(right, 0), c), x.dtype)
    if out.shape[1] != hh or out.shape[2] != ww:
        out.fill(value)
    out[:, pad_h: pad_h + hh, pad_w: pad_w + ww] = x
    return out


_IM2COL: dict[tuple, np.ndarray] = {}


def im2col(xp: np.ndarray, kh: int, kw: int, sh: int, sw: int, out_h: int, out_w: int) -> np.ndarray:
    """(N * OH * OW, KH * KW * C): row (n, oy, ox) holds xp[n, oy*sh+ky, ox*sw+kx, :] for every
    tap in (ky, kx) order (one gather with a cached index)."""
    n, hp, wp, c = xp.shape
    key = (hp, wp, kh, kw, sh, sw, out_h, out_w)
    idx = _IM2COL.get(key)
    if idx is None:
        oy = np.arange(out_h).reshape(-1, 1, 1, 1) * sh
        ox = np.arange(out_w).reshape(1, -1, 1, 1) * sw
        ky = np.arange(kh).reshape(1, 1, -1, 1)
        kx = np.arange(kw).reshape(1, 1, 1, -1)
        idx = ((oy + ky) * wp + ox + kx).reshape(-1)
        _IM2COL[key] = idx
    return xp.reshape(n, hp * wp, c)[:, idx].reshape(n * out_h * out_w, kh * kw * c)


def _taps(xp: np.ndarray, kh: int, kw: int, sh: int, sw: int, out_h: int, out_w: int):
    """Yield (ky, kx, x[:, oy*sh+ky, ox*sw+kx, :]) for every filter tap, each (N, OH, OW, C)."""
    for ky in range(kh):
        for kx in range(kw):
            yield ky, kx, xp[:, ky: ky + (out_h - 1) * sh + 1: sh, kx: kx + (out_w - 1) * sw + 1: sw, :]


def conv_2d(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, *, stride_h: int, stride_w: int,
            pad_h: int, pad_w: int, out_h: int, out_w: int, input_offset: int, output_offset: int,
            multipliers: np.ndarray, shifts: np.ndarray, act_min: int, act_max: int, runs: bool = False) -> np.ndarray:
    """TFLM reference_integer_ops::ConvPerChannel (dilation 1).

    x (N, H, W, C_in) int8; weight OHWI (C_out, KH, KW, C_in) int8; bias (C_out,) int32 or None.
    With runs, x's leading axis is a run axis and every run has its own weights: weight (N, C_out,
    KH, KW, C_in), bias (N, C_out) (the training twin's lockstep runs, backward.py).
    Taps outside the image contribute nothing (same as padding with the input zero point).
    Returns (N, out_h, out_w, C_out) int8.
    """
    c_out, kh, kw, c_in = weight.shape[-4:]
    if x.shape[3] != c_in:
        raise ValueError(f"conv_2d: input has {x.shape[3]} channels, weight expects {c_in}")
    xs = x.astype(np.float64) + input_offset
    xp = pad(xs, pad_h, pad_w, kh, kw, stride_h, stride_w, out_h, out_w, 0)
    n = x.shape[0]
    cols = im2col(xp, kh, kw, stride_h, stride_w, out_h, out_w)
    if runs:
        w = weight.reshape(n, c_out, -1).astype(np.float64).transpose(0, 2, 1)
        acc = np.matmul(cols.reshape(n, out_h * out_w, -1), w)
    else:
        acc = cols @ weight.reshape(c_out, -1).astype(np.float64).T
    acc = acc.astype(np.int64).reshape(n, out_h, out_w, c_out)
    if bias is not None:
        acc = acc + np.asarray(bias, dtype=np.int64).reshape((n, 1, 1, c_out) if runs else (c_out,))
    return requantize(acc, multipliers, shifts, output_offset, act_min, act_max)


def depthwise_conv_2d(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, *, stride_h: int,
                      stride_w: int, pad_h: int, pad_w: int, out_h: int, out_w: int, depth_multiplier: int,
                      input_offset: int, output_offset: int, multipliers: np.ndarray, shifts: np.ndarray,
                      act_min: int, act_max: int) -> np.ndarray:
    """TFLM reference_integer_ops::DepthwiseConvPerChannel (dilation 1).

    x (N, H, W, C_in); weight (1, KH, KW, C_out) with C_out = C_in * depth_multiplier and output
    channel oc = ic * depth_multiplier + m. Returns (N, out_h, out_w, C_out) int8.
    """
    _, kh, kw, c_out = weight.shape
    n, _, _, c_in = x.shape
    if c_in * depth_multiplier != c_out:
        raise ValueError(f"depthwise_conv_2d: {c_in} input channels x {depth_multiplier} != {c_out}")
    xs = x.astype(np.int64) + input_offset
    xp = pad(xs, pad_h, pad_w, kh, kw, stride_h, stride_w, out_h, out_w, 0)
    w = weight.astype(np.int64).reshape(kh, kw, c_in, depth_multiplier)
    acc = np.zeros((n, out_h, out_w, c_in, depth_multiplier), np.int64)
    for ky, kx, tap in _taps(xp, kh, kw, stride_h, stride_w, out_h, out_w):
        acc += tap[..., None] * w[ky, kx]
    acc = acc.reshape(n, out_h, out_w, c_out)
    if bias is not None:
        acc = acc + np.asarray(bias, dtype=np.int64).reshape(c_out)
    return requantize(acc, multipliers, shifts, output_offset, act_min, act_max)


def fully_connected(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, *, input_offset: int,
                    output_offset: int, multipliers: np.ndarray, shifts: np.ndarray, act_min: int,
                    act_max: int, runs: bool = False) -> np.ndarray:
    """TFLM reference_integer_ops::FullyConnected(PerChannel) (filter offset 0).

    x (N, ...) is flattened to (N, K) in NHWC order; weight (C_out, K) or (C_out, 1, 1, K). With
    runs, every run (x's leading axis) has its own weight (N, C_out, ...) and bias (N, C_out).
    Returns (N, C_out) int8.
    """
    n = x.shape[0]
    c_out = weight.shape[1] if runs else weight.shape[0]
    w = weight.reshape(n if runs else 1, c_out, -1).astype(np.float64)
    xs = x.reshape(n, -1).astype(np.float64) + input_offset
    if xs.shape[1] != w.shape[2]:
        raise ValueError(f"fully_connected: input has {xs.shape[1]} elements, weight expects {w.shape[2]}")
    if runs:
        acc = np.matmul(xs[:, None, :], w.transpose(0, 2, 1)).reshape(n, c_out).astype(np.int64)
    else:
        acc = (xs @ w[0].T).astype(np.int64)
    if bias is not None:
        acc = acc + np.asarray(bias, dtype=np.int64).reshape((n, c_out) if runs else (c_out,))
    return requantize(acc, multipliers, shifts, output_offset, act_min, act_max)


def max_pool_2d(x: np.ndarray, *, filter_h: int, filter_w: int, stride_h: int, stride_w: int, pad_h: int,
                pad_w: int, out_h: int, out_w: int, act_min: int, act_max: int) -> np.ndarray:
    """TFLM reference_integer_ops::MaxPool: max over the in-image part of each window, clamped."""
    xp = pad(x.astype(np.int16), pad_h, pad_w, filter_h, filter_w, stride_h, stride_w, out_h, out_w, -1000)
    out = None
    for _, _, tap in _taps(xp, filter_h, filter_w, stride_h, stride_w, out_h, out_w):
        out = tap.copy() if out is None else np.maximum(out, tap)
    return np.clip(out, act_min, act_max).astype(np.int8)


def average_pool_2d(x: np.ndarray, *, filter_h: int, filter_w: int, stride_h: int, stride_w: int,
                    pad_h: int, pad_w: int, out_h: int, out_w: int, act_min: int, act_max: int) -> np.ndarray:
    """TFLM reference_integer_ops::AveragePool: sum of the raw int8 values over the in-image part
    of the window, divided by the number of in-image taps rounding half away from zero, clamped."""
    n, h, w, c = x.shape
    xp = pad(x.astype(np.int64), pad_h, pad_w, filter_h, filter_w, stride_h, stride_w, out_h, out_w, 0)
    ones = pad(np.ones((1, h, w, 1), np.int64), pad_h, pad_w, filter_h, filter_w, stride_h, stride_w,
                out_h, out_w, 0)
    acc = np.zeros((n, out_h, out_w, c), np.int64)
    count = np.zeros((1, out_h, out_w, 1), np.int64)
    for (_, _, tap), (_, _, one) in zip(_taps(xp, filter_h, filter_w, stride_h, stride_w, out_h, out_w),
                                        _taps(ones, filter_h, filter_w, stride_h, stride_w, out_h, out_w)):
        acc += tap
        count += one
    if np.any(count == 0):
        raise ValueError("average_pool_2d: a window lies entirely in the padding (TFLM rejects this)")
    return np.clip(_c_div_round(acc, count), act_min, act_max).astype(np.int8)


def mean(x: np.ndarray, *, input_offset: int, output_offset: int, multiplier: int, shift: int, p0: int = 0,
         act_min: int = -128, act_max: int = 127) -> np.ndarray:
    """Global average over H and W of (N, H, W, C) -> (N, C), as TFLM's int8 MEAN kernel.

    TFLM's QuantizedMeanOrSum (compute_sum = false): with n = H*W and sum the int32 sum of the raw
    int8 values of a channel, out = clamp(MultiplyByQuantizedMultiplier(sum + input_offset * n,
    multiplier, shift) + output_offset). The 1/n is already folded into multiplier/shift on the
    host (prepare.mean_params is normative); TFLM takes this path even when input and output
    quantization are identical. p0 is reserved and must be 0.
    """
    if p0 != 0:
        raise ValueError(f"mean: p0 must be 0, got {p0}")
    n_pos = x.shape[1] * x.shape[2]
    total = wrap_int32(x.astype(np.int64).sum(axis=(1, 2)))
    return requantize(total + input_offset * n_pos, multiplier, shift, output_offset, act_min, act_max)


# --------------------------------------------------------------------------------------------
# Model forward
# --------------------------------------------------------------------------------------------


def _nhwc(shape) -> tuple[int, int, int, int]:
    return tuple(int(d) for d in shape)  # type: ignore[return-value]


def run_layer(model: EtmModel, layer: Layer, x: np.ndarray, weight: np.ndarray | None = None,
              bias: np.ndarray | None = None) -> np.ndarray:
    """Run one layer on a batch x of shape (N, *input_tensor.shape[1:]); returns (N, *out[1:]).

    With `weight` (N, *weight shape) int8 and `bias` (N, C_out) int32 or None, a CONV_2D or
    FULLY_CONNECTED layer runs with per-run parameters instead of the model's: x's leading axis is
    the training twin's run axis (lockstep.py) and run r uses weight[r], bias[r]."""
    t_out = model.tensors[layer.output]
    _, oh, ow, oc = _nhwc(t_out.shape)
    n = x.shape[0]
    runs = weight is not None
    if runs and layer.op not in (OP_CONV_2D, OP_FULLY_CONNECTED):
        raise ValueError(f"reference: {layer.op_name} has no per-run weights")
    if not runs:
        weight = model.tensors[layer.weight].data if layer.weight != NONE else None
        bias = model.tensors[layer.bias].data if layer.bias != NONE else None
    mults = np.asarray(layer.multipliers, dtype=np.int64)
    shifts = np.asarray(layer.shifts, dtype=np.int64)
    common = dict(act_min=layer.act_min, act_max=layer.act_max)
    if layer.op == OP_CONV_2D:
        y = conv_2d(x, weight, bias, stride_h=layer.stride_h, stride_w=layer.stride_w, pad_h=layer.pad_h,
                    pad_w=layer.pad_w, out_h=oh, out_w=ow, input_offset=layer.input_offset,
                    output_offset=layer.output_offset, multipliers=mults, shifts=shifts, runs=runs, **common)
    elif layer.op == OP_DEPTHWISE_CONV_2D:
        y = depthwise_conv_2d(x, weight, bias, stride_h=layer.stride_h, stride_w=layer.stride_w,
                              pad_h=layer.pad_h, pad_w=layer.pad_w, out_h=oh, out_w=ow,
                              depth_multiplier=layer.depth_multiplier, input_offset=layer.input_offset,
                              output_offset=layer.output_offset, multipliers=mults, shifts=shifts, **common)
    elif layer.op == OP_FULLY_CONNECTED:
        y = fully_connected(x, weight, bias, input_offset=layer.input_offset, output_offset=layer.output_offset,
                            multipliers=mults, shifts=shifts, runs=runs, **common)
    elif layer.op == OP_MAX_POOL_2D:
        y = max_pool_2d(x, filter_h=layer.filter_h, filter_w=layer.filter_w, stride_h=layer.stride_h,
                        stride_w=layer.stride_w, pad_h=layer.pad_h, pad_w=layer.pad_w, out_h=oh, out_w=ow, **common)
    elif layer.op == OP_AVERAGE_POOL_2D:
        y = average_pool_2d(x, filter_h=layer.filter_h, filter_w=layer.filter_w, stride_h=layer.stride_h,
                            stride_w=layer.stride_w, pad_h=layer.pad_h, pad_w=layer.pad_w, out_h=oh, out_w=ow,
                            **common)
    elif layer.op == OP_MEAN:
        y = mean(x, input_offset=layer.input_offset, output_offset=layer.output_offset,
                 multiplier=int(mults[0]), shift=int(shifts[0]), p0=layer.p0, **common)
    else:
        raise ValueError(f"reference: unsupported op {layer.op_name}")
    return y.reshape((n,) + _nhwc(t_out.shape)[1:])


def forward_batch(model: EtmModel, xs: np.ndarray, keep: bool = False):
    """Run the model on N inputs at once: xs has N * input-size int8 elements (any shape with a
    leading N). Returns (N, *output_shape[1:]) int8, plus the list of activations t_0..t_L (each
    (N, *shape[1:])) when keep."""
    t_in = model.input_tensor
    xs = np.asarray(xs)
    if xs.dtype != np.int8:
        raise TypeError(f"input must be int8, got {xs.dtype}")
    n = xs.shape[0] if xs.ndim else 1
    if xs.size != n * t_in.size:
        raise ValueError(f"input has {xs.size} elements, expected N x {t_in.size} (shape {t_in.shape})")
    x = xs.reshape((n,) + _nhwc(t_in.shape)[1:])
    acts = [x]
    for layer in model.layers:
        x = run_layer(model, layer, x)
        if keep:
            acts.append(x)
    return (x, acts) if keep else x


def forward(model: EtmModel, x: np.ndarray, keep: bool = False):
    """Run the model on one input (int8, model input size, any shape). Returns the int8 output
    with the model output tensor's shape, plus the activations t_0..t_L when keep (each with its
    tensor's 4-D shape)."""
    x = np.asarray(x)
    if x.size != model.input_tensor.size:
        raise ValueError(f"input has {x.size} elements, model input {model.input_tensor.shape} needs "
                         f"{model.input_tensor.size}")
    res = forward_batch(model, x.reshape((1,) + _nhwc(model.input_tensor.shape)[1:]), keep)
    if not keep:
        return res.reshape(model.output_tensor.shape)
    y, acts = res
    chain = [model.input] + [ly.output for ly in model.layers]
    return y.reshape(model.output_tensor.shape), [a.reshape(model.tensors[t].shape) for a, t in zip(acts, chain)]
