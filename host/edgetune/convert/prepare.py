"""TFLite Micro's `Prepare()` arithmetic, in Python, bit for bit.

Everything a kernel derives from float scales before it can run integer-only is computed here,
on the host, and stored in the .etm: requantization multipliers and shifts, paddings, activation
clamps and the MEAN parameters. The device (and the numpy twin) only do integer arithmetic with
the results. Each function names the TFLM source it mirrors; C `double` is a Python float (IEEE
binary64) and C `float` is `np.float32`, so every rounding step happens where TFLM rounds.

Sources (tensorflow/tflite-micro, current main):
- tensorflow/lite/micro/kernels/internal/quantization_util.cc  (QuantizeMultiplier)
- tensorflow/lite/micro/kernels/kernel_util.cc  (PopulateConvolutionQuantizationParams,
  CalculateActivationRangeQuantized, Quantize)
- tensorflow/lite/micro/kernels/padding.h  (ComputePaddingHeightWidth, ComputeOutSize)
- tensorflow/lite/micro/kernels/conv_common.cc, depthwise_conv_common.cc  (both call
  PopulateConvolutionQuantizationParams)
- tensorflow/lite/micro/kernels/fully_connected_common.cc  (CalculateOpDataFullyConnected)
- tensorflow/lite/micro/kernels/pooling_common.cc  (PoolingPrepare)
- tensorflow/lite/micro/kernels/reduce_common.cc + kernels/internal/reference/reduce.h
  (PrepareMeanOrSumHelper, EvalIntegerMean, QuantizedMeanOrSum)

Where the source and the installed tflite-micro wheel (0.dev20261023) disagree, the wheel wins
(it is the golden oracle): see `fc_multipliers` (per-tensor scale product) and `mean_params`
(single MEAN path). tests/host/test_export_rounding.py pins both against the interpreter at rounding
boundaries. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

ACT_NONE, ACT_RELU, ACT_RELU6 = 0, 1, 2  # same codes as modelfile.ACT_*

# TFLite ActivationFunctionType codes (schema.fbs)
TFL_ACT_NONE, TFL_ACT_RELU, TFL_ACT_RELU_N1_TO_1, TFL_ACT_RELU6 = 0, 1, 2, 3
TFL_ACT_NAMES = {0: "NONE", 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH", 5: "SIGN_BIT"}

# TFLite Padding codes (schema.fbs)
PADDING_SAME, PADDING_VALID = 0, 1


def round_half_away(x: float) -> int:
    """C `std::round` / TFLM `TfLiteRound`: nearest integer, halves away from zero (exact)."""
    a = abs(x)
    f = math.floor(a)
    r = f + 1 if a - f >= 0.5 else f  # a - f is exact for binary64
    return int(r) if x >= 0 else -int(r)


def quantize_multiplier(double_multiplier: float) -> tuple[int, int]:
    """TFLM `QuantizeMultiplier(double, int32_t*, int*)` (micro/kernels/internal/quantization_util.cc).

    Returns (quantized_multiplier, shift) with the multiplier a Q0.31 significand in
    [2^30, 2^31) (or 0) and `shift` the power-of-two exponent (> 0 means a left shift):
        q, shift = frexp(m); q_fixed = round(q * 2^31);
        if q_fixed == 2^31: q_fixed /= 2, ++shift;
        if shift < -31: shift = 0, q_fixed = 0   (flush tiny multipliers to zero).
    TFLITE_SINGLE_ROUNDING is off in the reference build, so shifts > 30 are not saturated here;
    `check_multiplier` rejects them for the .etm.
    """
    m = float(double_multiplier)
    if m == 0.0:
        return 0, 0
    q, shift = math.frexp(m)
    q_fixed = round_half_away(q * float(1 << 31))
    if q_fixed > (1 << 31):
        raise ValueError(f"QuantizeMultiplier({m!r}): significand overflow")
    if q_fixed == (1 << 31):
        q_fixed //= 2
        shift += 1
    if q_fixed > 0x7FFFFFFF:
        raise ValueError(f"QuantizeMultiplier({m!r}): significand overflow")
    if shift < -31:
        shift = 0
        q_fixed = 0
    return int(q_fixed), int(shift)


def check_multiplier(what: str, mult: int, shift: int) -> None:
    """The .etm contract: multiplier in [0, 2^31), shift in [-31, 30]."""
    if not 0 <= mult <= 0x7FFFFFFF or not -31 <= shift <= 30:
        raise ValueError(f"{what}: requantization multiplier {mult} / shift {shift} out of range "
                         "(the effective scale is too large; shift must be in [-31, 30])")


def _f32(x: float) -> np.float32:
    return np.float32(x)


def conv_multipliers(input_scale: float, filter_scales, output_scale: float,
                     num_channels: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel requantization for CONV_2D and DEPTHWISE_CONV_2D.

    Mirrors `PopulateConvolutionQuantizationParams` (micro/kernels/kernel_util.cc), called from
    conv_common.cc `CalculateOpDataConv` and depthwise_conv_common.cc
    `CalculateOpDataDepthwiseConv`: for each output channel c (a per-tensor filter scale is
    broadcast),
        effective = double(input_scale) * double(filter_scale[c]) / double(output_scale)
    evaluated left to right in double, then `QuantizeMultiplier`.
    """
    fs = np.asarray(filter_scales, dtype=np.float32).reshape(-1)
    if fs.size not in (1, num_channels):
        raise ValueError(f"{fs.size} filter scales for {num_channels} output channels")
    i_s, o_s = float(_f32(input_scale)), float(_f32(output_scale))
    mult = np.zeros(num_channels, np.int32)
    shift = np.zeros(num_channels, np.int32)
    for c in range(num_channels):
        f_s = float(fs[c] if fs.size > 1 else fs[0])
        mult[c], shift[c] = quantize_multiplier(i_s * f_s / o_s)
    return mult, shift


def fc_multipliers(input_scale: float, filter_scales, output_scale: float,
                   num_channels: int) -> tuple[np.ndarray, np.ndarray]:
    """Requantization for FULLY_CONNECTED, always returned per output channel.

    Mirrors `CalculateOpDataFullyConnected` (micro/kernels/fully_connected_common.cc). For a
    per-channel filter (more than one scale) that is the conv formula
    `double(input_scale) * double(filter_scale[c]) / double(output_scale)`. For a per-tensor
    filter the TFLM source reads as `GetQuantizedConvolutionMultipler`, whose float product
    `double(input_scale * filter_scale)` would round the product to float first; the installed
    tflite-micro (0.dev20261023) instead matches the all-double product
    `double(input_scale) * double(filter_scale) / double(output_scale)` at every rounding
    boundary we probed (tests/host/test_export_rounding.py edits a model so the output depends only on the
    multiplier), so that is what is computed. The single per-tensor (multiplier, shift) is
    repeated for every output channel.
    """
    fs = np.asarray(filter_scales, dtype=np.float32).reshape(-1)
    if fs.size > 1 and fs.size != num_channels:
        raise ValueError(f"{fs.size} filter scales for {num_channels} output channels")
    return conv_multipliers(input_scale, fs, output_scale, num_channels)


def _quantize_f32(scale: float, zero_point: int, f: float) -> int:
    """TFLM `Quantize` in micro/kernels/kernel_util.cc: `zp + (int)TfLiteRound(f / scale)` in float."""
    tmp = np.float32(f) / np.float32(scale)
    if not np.isfinite(tmp) or abs(float(tmp)) >= 2.0**31:
        raise ValueError(f"activation bound {f} overflows int32 at scale {scale}")
    return int(zero_point) + round_half_away(float(tmp))


def activation_range(activation: int, output_scale: float, output_zero_point: int,
                     op: str = "op") -> tuple[int, int, int]:
    """`CalculateActivationRangeQuantized` for an int8 output (micro/kernels/kernel_util.cc).

    `activation` is the TFLite fused-activation code. Returns (act_min, act_max, etm_code):
    NONE → [-128, 127]; RELU → [max(-128, Q(0)), 127]; RELU6 → [max(-128, Q(0)), min(127, Q(6))]
    where Q(f) = zp + TfLiteRound(float(f) / float(scale)). RELU_N1_TO_1 and others are rejected.
    """
    qmin, qmax = -128, 127
    if activation == TFL_ACT_NONE:
        return qmin, qmax, ACT_NONE
    if activation == TFL_ACT_RELU:
        return max(qmin, _quantize_f32(output_scale, output_zero_point, 0.0)), qmax, ACT_RELU
    if activation == TFL_ACT_RELU6:
        lo = max(qmin, _quantize_f32(output_scale, output_zero_point, 0.0))
        hi = min(qmax, _quantize_f32(output_scale, output_zero_point, 6.0))
        return lo, hi, ACT_RELU6
    name = TFL_ACT_NAMES.get(activation, str(activation))
    raise ValueError(f"{op}: fused activation {name} is not supported (NONE, RELU, RELU6 are)")


def compute_out_size(padding: int, image_size: int, filter_size: int, stride: int,
                     dilation: int = 1) -> int:
    """`ComputeOutSize` (micro/kernels/padding.h)."""
    eff = (filter_size - 1) * dilation + 1
    if stride == 0:
        return 0
    if padding == PADDING_SAME:
        return (image_size + stride - 1) // stride
    if padding == PADDING_VALID:
        return (image_size + stride - eff) // stride
    return 0


def compute_padding_with_offset(stride: int, dilation: int, in_size: int, filter_size: int,
                                out_size: int) -> tuple[int, int]:
    """`ComputePaddingWithOffset` (micro/kernels/padding.h): returns (padding, offset)."""
    eff = (filter_size - 1) * dilation + 1
    total = (out_size - 1) * stride + eff - in_size
    total = total if total > 0 else 0
    return total // 2, total % 2


@dataclass
class Padding:
    """Result of `ComputePaddingHeightWidth`: output size and top/left padding (+ the odd offset)."""

    out_h: int
    out_w: int
    pad_h: int
    pad_w: int
    offset_h: int
    offset_w: int


def compute_padding(padding: int, in_h: int, in_w: int, filter_h: int, filter_w: int,
                    stride_h: int, stride_w: int, dilation_h: int = 1,
                    dilation_w: int = 1) -> Padding:
    """`ComputePaddingHeightWidth` (micro/kernels/padding.h), as conv/depthwise/pool Prepare call it.

    The reference kernels only use the top/left padding (`padding_values.height/width`); the
    extra bottom/right pixel (`*_offset`) is implied by the output size. Only those two are stored.
    """
    if padding not in (PADDING_SAME, PADDING_VALID):
        raise ValueError(f"unknown padding code {padding}")
    out_w = compute_out_size(padding, in_w, filter_w, stride_w, dilation_w)
    out_h = compute_out_size(padding, in_h, filter_h, stride_h, dilation_h)
    ph, oh = compute_padding_with_offset(stride_h, dilation_h, in_h, filter_h, out_h)
    pw, ow = compute_padding_with_offset(stride_w, dilation_w, in_w, filter_w, out_w)
    return Padding(out_h, out_w, ph, pw, oh, ow)


def check_pool_quantization(in_scale: float, in_zp: int, out_scale: float, out_zp: int,
                            op: str = "pool") -> None:
    """`PoolingPrepare` (micro/kernels/pooling_common.cc): int8 pools need the same quantization
    on input and output: `|double(in_scale) - double(out_scale)| <= 1e-6` and equal zero points."""
    diff = abs(float(_f32(in_scale)) - float(_f32(out_scale)))
    if diff > 1.0e-6 or int(in_zp) != int(out_zp):
        raise ValueError(f"{op}: input and output quantization differ (scale {in_scale} vs {out_scale}, "
                         f"zero point {in_zp} vs {out_zp}); int8 pools require them equal")


@dataclass
class MeanParams:
    """What an int8 MEAN (global average over H and W) needs at run time (see `mean_params`)."""

    multiplier: int
    shift: int
    p0: int = 0  # reserved: TFLM has a single int8 MEAN path; stored as Layer.p0


def mean_params(in_scale: float, in_zp: int, out_scale: float, out_zp: int,
                num_elements: int) -> MeanParams:
    """Prepare + the Eval-time constant folding of TFLM's int8 MEAN.

    Mirrors micro/kernels/reduce_common.cc `PrepareMeanOrSumHelper` (Prepare) and
    `EvalIntegerMean` -> micro/kernels/internal/reference/reduce.h `QuantizedMeanOrSum` with
    compute_sum = false (Eval). With N = H*W elements per channel (the reduced axes):

        (m0, s0) = QuantizeMultiplier(double(in_scale) / double(out_scale))          [Prepare]
        k = floor(log2(N)) (= 63 - clz64(N));  k = min(k, 32);  k = min(k, 31 + s0)
        multiplier = (int32)(((int64)m0 << k) / N);   shift = s0 - k                 [Eval]

    and for every channel c, with sum = the int32 sum of the N int8 inputs of channel c:

        out[c] = clamp(MultiplyByQuantizedMultiplier(sum - in_zp * N, multiplier, shift)
                       + out_zp, -128, 127)

    (MultiplyByQuantizedMultiplier with double rounding, int32 input, as for conv). The Eval
    folding depends only on N, so it is done here: the .etm stores `multiplier`/`shift`
    (n_mult = 1), p0 = 0, input_offset = -in_zp, output_offset = out_zp; the kernel takes N from
    the input shape. Older TFLM versions had a second path (`reference_ops::Mean`, truncating
    `sum / N`) when input and output quantization were identical; the installed tflite-micro
    (0.dev20261023) uses the path above in that case too (checked against the interpreter).
    """
    if num_elements < 1:
        raise ValueError("MEAN over an empty axis")
    m0, s0 = quantize_multiplier(float(_f32(in_scale)) / float(_f32(out_scale)))
    k = num_elements.bit_length() - 1
    k = min(k, 32)
    k = min(k, 31 + s0)
    mult = (m0 << k) // num_elements
    return MeanParams(int(mult), s0 - k, 0)
