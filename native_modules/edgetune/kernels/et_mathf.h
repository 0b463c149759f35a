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
#if defined(__arm__) && !defined(__ARM_FP)
    /* Soft-float ARM (Cortex-M0+/M3): every float comparison is a library call, so the NaN,
     * range and sign tests are made on the bits (the same outcomes: positive floats order like
     * their bits, |v| >= flim <=> v >= flim or v <= -flim, and -0.0f >= 0.0f). */
    union {
        float f;
        uint32_t u;
    } bv, bl;
    bv.f = v;
    bl.f = flim;
    const uint32_t mag = bv.u & 0x7FFFFFFFu;
    if (mag > 0x7F800000u) {
        return 0;
    }
    if (mag >= bl.u) {
        return (bv.u >> 31) ? -lim : lim;
    }
    return ((bv.u >> 31) && mag) ? (int32_t)(v - 0.5f) : (int32_t)(v + 0.5f);
#endif
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

/*
 * et_i64_to_f32 - (float)v. On soft-float ARM, libgcc converts an int64 through double
 * arithmetic (hundreds of instructions on ARMv6-M); a value that fits in int32 takes the int32
 * conversion instead: the same integer, correctly rounded either way, so the same float.
 */
static inline float et_i64_to_f32(int64_t v) {
#if defined(__arm__) && !defined(__ARM_FP)
    if (v >= INT32_MIN && v <= INT32_MAX) {
        return (float)(int32_t)v;
    }
#endif
    return (float)v;
}

/*
 * et_times_32768 - v * 32768.0f. Multiplying by a power of two is exact for a normal v whose
 * result stays finite: the exponent field goes up by 15. On soft-float ARM that replaces a
 * float multiply call; zero, subnormal, huge, infinite and NaN values still take the multiply.
 */
static inline float et_times_32768(float v) {
#if defined(__arm__) && !defined(__ARM_FP)
    union {
        float f;
        uint32_t u;
    } b;
    b.f = v;
    const uint32_t e = (b.u >> 23) & 0xFFu;
    if (e != 0 && e < 0xFFu - 15u) {
        b.u += 15u << 23;
        return b.f;
    }
#endif
    return v * 32768.0f;
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
