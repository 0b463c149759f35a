/*
 * Fixed-point requantization helpers, bit-exact with TFLite Micro's reference
 * kernels (tensorflow/lite/kernels/internal/common.h) and gemmlowp's
 * fixedpoint.h in the default double-rounding mode (TFLITE_SINGLE_ROUNDING off).
 *
 * Plain C99, no MicroPython headers. Signed right shifts are arithmetic on
 * every compiler we target (GCC/Clang on x86-64, ARM, Xtensa).
 */
#ifndef EDGETUNE_ET_REQUANT_H
#define EDGETUNE_ET_REQUANT_H

#include <stdint.h>

/*
 * gemmlowp SaturatingRoundingDoublingHighMul: the high 32 bits of 2*a*b,
 * rounded half away from zero, via an int64 intermediate. The only overflow,
 * a == b == INT32_MIN, saturates to INT32_MAX.
 */
static inline int32_t et_saturating_rounding_doubling_high_mul(int32_t a, int32_t b) {
    if (a == b && a == INT32_MIN) {
        return INT32_MAX;
    }
    const int64_t ab = (int64_t)a * (int64_t)b;
    const int32_t nudge = ab >= 0 ? (1 << 30) : (1 - (1 << 30));
    /* C99 '/' truncates toward zero, exactly like the C++ original. */
    return (int32_t)((ab + nudge) / ((int64_t)1 << 31));
}

/*
 * gemmlowp RoundingDivideByPOT: x / 2^exponent rounded to nearest, ties away
 * from zero. exponent must be in [0, 31].
 */
static inline int32_t et_rounding_divide_by_pot(int32_t x, int exponent) {
    const int32_t mask = (int32_t)(((int64_t)1 << exponent) - 1);
    const int32_t remainder = x & mask;
    const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

/*
 * TFLM MultiplyByQuantizedMultiplier (double rounding): x * multiplier * 2^shift
 * where multiplier is a Q0.31 value and shift > 0 is a left shift. shift must be
 * in [-31, 30]. The left shift wraps modulo 2^32 exactly as TFLM's
 * `x * (1 << left_shift)` does on two's-complement targets (done on uint32_t
 * here so that it is defined behaviour in C).
 */
static inline int32_t et_multiply_by_quantized_multiplier(int32_t x, int32_t multiplier, int shift) {
    const int left_shift = shift > 0 ? shift : 0;
    const int right_shift = shift > 0 ? 0 : -shift;
    const int32_t shifted = (int32_t)((uint32_t)x << left_shift);
    return et_rounding_divide_by_pot(et_saturating_rounding_doubling_high_mul(shifted, multiplier), right_shift);
}

/* Clamp v to [lo, hi]. */
static inline int32_t et_clamp_s32(int32_t v, int32_t lo, int32_t hi) {
    return v < lo ? lo : (v > hi ? hi : v);
}

/*
 * The common tail of the conv/depthwise/FC kernels: requantize the int32
 * accumulator, add the output offset and clamp to [act_min, act_max].
 * The offset is added in int64: TFLM adds in int32, which only differs when
 * that addition would overflow (undefined in C; never the case in real models,
 * and the numpy twin also adds without wrapping).
 */
static inline int8_t et_requantize_s8(int32_t acc, int32_t multiplier, int32_t shift,
    int32_t output_offset, int32_t act_min, int32_t act_max) {
    int64_t v = (int64_t)et_multiply_by_quantized_multiplier(acc, multiplier, shift) + output_offset;
    v = v < act_min ? act_min : (v > act_max ? act_max : v);
    return (int8_t)v;
}

#endif /* EDGETUNE_ET_REQUANT_H */
