/*
 * Scalar helpers of the training arithmetic (docs/training.md): our own
 * float32 exp/log (no libm, so every ISA gives the same bits), the float ->
 * int rounding round_sat, the integer rounding division rdiv and a floor
 * division that does not rely on '>>' of negative numbers.
 *
 * Plain C99, no MicroPython headers. Compile with -ffp-contract=off.
 */
#ifndef EDGETUNE_ET_MATHF_H
#define EDGETUNE_ET_MATHF_H

#include <stdint.h>

/* 2^30, the default saturation limit of et_round_sat. */
#define ET_LIM30 ((int32_t)1 << 30)

/*
 * et_f32_opaque - x, unchanged. Built by LLVM 22 for Xtensa, an empty asm statement hides it
 * from the optimizer: that backend crashes on a select between two float constants
 * (`c ? 1.0f : 0.0f`, also what (float)c becomes); with one operand opaque there is none.
 */
#if defined(__xtensa__) && defined(__clang__)
static inline float et_f32_opaque(float x) {
    __asm__ ("" : "+r" (x));
    return x;
}
#else
#define et_f32_opaque(x) (x)
#endif

/*
 * et_round_sat - round a float32 to an integer, saturating at +-lim.
 * v >= lim -> lim; v <= -lim -> -lim; NaN -> 0; else (int32)(v + 0.5f) for
 * v >= 0 and (int32)(v - 0.5f) otherwise (float32 add, then truncation).
 * lim must be exactly representable as a float (32767 and 2^30 are).
 */
static inline int32_t et_round_sat(float v, int32_t lim) {
    const float flim = (float)lim;
    if (v != v) {
        return 0;
    }
    if (v >= flim) {
        return lim;
    }
    if (v <= -flim) {
        return -lim;
    }
    return v >= 0.0f ? (int32_t)(v + et_f32_opaque(0.5f)) : (int32_t)(v - 0.5f);
}

/*
 * et_rdiv - a / b rounded half away from zero, b > 0:
 * (a + b/2) / b for a >= 0, -((-a + b/2) / b) otherwise (truncating division).
 * |a| must leave room for b/2 below INT64_MAX.
 */
static inline int64_t et_rdiv(int64_t a, int64_t b) {
    return a >= 0 ? (a + b / 2) / b : -((-a + b / 2) / b);
}

/* et_floor_div - floor(a / b) for b > 0, without '>>' on negative values. */
static inline int64_t et_floor_div(int64_t a, int64_t b) {
    return a >= 0 ? a / b : -((-a + b - 1) / b);
}

/* Float whose bit pattern is `bits`, and the bits of a float (type punning via a union, C99). */
static inline float et_f32_from_bits(uint32_t bits) {
    union { uint32_t u; float f; } v;
    v.u = bits;
    return v.f;
}

static inline uint32_t et_f32_bits(float f) {
    union { uint32_t u; float f; } v;
    v.f = f;
    return v.u;
}

float et_expf(float x);
float et_logf(float x);

#endif /* EDGETUNE_ET_MATHF_H */
