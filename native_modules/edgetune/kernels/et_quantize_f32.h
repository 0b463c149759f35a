/*
 * Input quantization of raw float32 samples to the model's int8 input
 * (docs/data.md §2, the device API m.quantize: docs/training.md §8).
 *
 * Plain C99, no MicroPython headers, no libm. Compile with -ffp-contract=off.
 */
#ifndef EDGETUNE_ET_QUANTIZE_F32_H
#define EDGETUNE_ET_QUANTIZE_F32_H

#include <stddef.h>
#include <stdint.h>

/*
 * et_quantize_scale_ok - 1 if scale is usable by et_quantize_f32: positive, finite and with
 * a finite float32 reciprocal (scale >= about 2.9e-39; a smaller one would give inv = inf
 * and 0 * inf = NaN), else 0.
 */
int et_quantize_scale_ok(float scale);

/*
 * et_quantize_f32 - float32 samples -> int8, per channel (value i has channel i % channels).
 *
 * For each value, in float32 with no contraction (the same bits on every ISA):
 *   inv = 1.0f / scale[c]          float32 division
 *   v   = x * inv                   float32 multiply
 *   v   = v + zero_point[c]         float32 add
 *   q   = round half to even of v, clamped to [-128, 127]  (+-inf clamp too)
 *
 * x           n values;  out: n values written (out[0..k) if a NaN stops at k)
 * channels    >= 1, scale and zero_point have `channels` entries
 * scale       each must pass et_quantize_scale_ok; zero_point: finite floats
 *             (the caller checks both: nothing here validates them)
 *
 * Returns n, or the index of the first NaN sample (the values before it are written).
 * Buffers: x and out may not overlap. No scratch buffer is needed.
 */
size_t et_quantize_f32(const float *x, size_t n, size_t channels,
    const float *scale, const float *zero_point, int8_t *out);

#endif
