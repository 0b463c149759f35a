"""Raw float samples -> the model's int8 input: the numpy twin of `m.quantize(samples, ...)`.

Bit-exact with the C kernel native_modules/edgetune/kernels/et_quantize_f32.c and with
firmware/edgetune_py.py `Model.quantize` (tests/unix/test_quantize_input.py). The recipe (docs/data.md
§2), per value x of channel c (value i of a flat NHWC stream has channel i % C), all float32:

    inv = 1.0f / scale[c]         float32 division
    v   = x * inv                 float32 multiply (no fused multiply-add)
    v   = v + zero_point[c]       float32 add
    q   = clamp(round_half_even(v), -128, 127)

Inputs are first rounded to float32 (Python numbers: to float64, then to float32). A scale must
be positive and finite with a finite float32 reciprocal, a zero point finite, a sample not NaN
(ValueError otherwise); +-inf samples clamp.

`quantize_normalized` is NOT this contract: float64, on windows already normalized on the host,
as TFLite's converter sees the model input. The host's Keras/TFLite pipeline (the learning
benchmark's int8 windows, the scheme search's data, tests/test_pipeline.py) uses it; its bits can
differ from the device's in ties, which is why it has its own name.
"""

from __future__ import annotations

import numpy as np


def quantize_input(samples, scale, zero_point) -> np.ndarray:
    """int8 array shaped like `samples` (any shape whose size is a multiple of len(scale))."""
    sc = np.asarray(scale, dtype=np.float64).astype(np.float32).reshape(-1)
    zp = np.asarray(zero_point, dtype=np.float64).astype(np.float32).reshape(-1)
    if sc.size == 0 or zp.size != sc.size:
        raise ValueError(f"scale has {sc.size} values, zero_point {zp.size}: need the same number >= 1")
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        inv = np.float32(1.0) / sc
        if not (np.all(sc > 0) and np.all(np.isfinite(sc)) and np.all(np.isfinite(inv))):
            raise ValueError("scale must be positive and finite with a finite 1/scale (float32)")
        if not np.all(np.isfinite(zp)):
            raise ValueError("zero_point must be finite (float32)")
        raw = np.asarray(samples)
        x = (raw.astype(np.float64) if raw.dtype.kind in "iub" else raw).astype(np.float32)
        if x.size % sc.size:
            raise ValueError(f"{x.size} samples are not a multiple of {sc.size} channels")
        if np.isnan(x).any():
            raise ValueError(f"sample {int(np.flatnonzero(np.isnan(x.reshape(-1)))[0])} is NaN")
        v = x.reshape(-1, sc.size) * inv
        v = v + zp
        q = np.clip(np.rint(v), -128, 127).astype(np.int8)
    return q.reshape(x.shape)


def quantize_normalized(x_norm, scale: float, zero_point: int) -> np.ndarray:
    """int8 of normalized float windows with the model's (per-tensor) input quantization, in
    float64: clip(round_half_even(x / scale) + zero_point, -128, 127)."""
    q = np.round(x_norm / scale) + zero_point
    return np.clip(q, -128, 127).astype(np.int8)
