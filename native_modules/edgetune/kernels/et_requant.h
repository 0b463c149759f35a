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
 * et_mul_nudged_hi - (a*b + 2^30) >> 31 (arithmetic shift), the low 32 bits.
 *
 * This is et_saturating_rounding_doubling_high_mul(a, b) for every a, b but a == b == INT32_MIN:
 * gemmlowp's nudge (2^30 for a*b >= 0, 1 - 2^30 below) followed by C's truncating division by
 * 2^31 equals the floor of (a*b + 2^30) / 2^31 for both signs (for a*b < 0:
 * trunc((a*b + 1 - 2^30) / 2^31) = floor((a*b + 1 - 2^30 + 2^31 - 1) / 2^31)). The result lies in
 * [-2^31 + 1, 2^31 - 1] except for that one overflow, where it is 2^31 (low 32 bits INT32_MIN).
 */
static inline uint32_t et_mul_nudged_hi(int32_t a, int32_t b) {
    return (uint32_t)(((int64_t)a * (int64_t)b + (1 << 30)) >> 31);
}

/*
 * et_mul_nudged_hi_split - et_mul_nudged_hi(a, b) from b's halves bh = b >> 16 (arithmetic) and
 * bl = b & 0xFFFF, in 32-bit arithmetic only (ARMv6-M has no 32x32->64 multiply; gcc's 64-bit
 * version there costs about 60 instructions). With a = ah*2^16 + al likewise,
 * a*b = hi*2^32 + (m1 + m2)*2^16 + lo with hi = ah*bh, m1 = ah*bl, m2 = al*bh (each exact in
 * int32: |ah|, |bh| <= 2^15, al, bl < 2^16) and lo = al*bl (exact in uint32). Then
 * floor((a*b + 2^30) / 2^31) = 2*hi + floor((m1 + m2 + (lo >> 16) + 2^14) / 2^15) (the floors
 * nest: 2^30 and hi*2^32 are multiples of 2^16), and the sum is split so nothing overflows:
 * (m1 >> 15) + (m2 >> 15) + (((m1 & 0x7FFF) + (m2 & 0x7FFF) + (lo >> 16) + 2^14) >> 15).
 * Everything is taken modulo 2^32 (unsigned), which is the low 32 bits asked for.
 */
static inline uint32_t et_mul_nudged_hi_split(int32_t a, int32_t bh, uint32_t bl) {
    const int32_t ah = a >> 16;
    const uint32_t al = (uint32_t)a & 0xFFFFu;
    const int32_t m1 = ah * (int32_t)bl, m2 = (int32_t)al * bh;
    const uint32_t lo = al * bl;
    const uint32_t frac = (((uint32_t)m1 & 0x7FFFu) + ((uint32_t)m2 & 0x7FFFu) + (lo >> 16) + 0x4000u) >> 15;
    return 2u * (uint32_t)(ah * bh) + (uint32_t)(m1 >> 15) + (uint32_t)(m2 >> 15) + frac;
}

/*
 * Per-channel requantization constants for et_requant_apply_s8: TFLM MultiplyByQuantizedMultiplier
 * (double rounding) of (multiplier, shift) split into what one output needs.
 */
typedef struct {
    int32_t multiplier; /* Q0.31 */
    int32_t left;       /* left shift, 0 if shift <= 0 */
    int32_t pre;        /* right shift - 1 (0 if shift > 0) */
    int32_t round;      /* 1 if there is a right shift, else 0 */
    int32_t mult_hi;    /* multiplier >> 16 and multiplier & 0xFFFF (et_mul_nudged_hi_split) */
    uint32_t mult_lo;
} et_requant_t;

static inline et_requant_t et_requant_prep(int32_t multiplier, int32_t shift) {
    et_requant_t q;
    q.multiplier = multiplier;
    q.mult_hi = multiplier >> 16;
    q.mult_lo = (uint32_t)multiplier & 0xFFFFu;
    /* branch-free (shift >> 31 is -1 for a right shift): left = max(shift, 0),
     * round = (shift < 0), pre = max(-shift - 1, 0) = shift < 0 ? ~shift : 0 */
    const int32_t neg = shift >> 31;
    q.left = shift & ~neg;
    q.round = neg & 1;
    q.pre = ~shift & neg;
    return q;
}

/*
 * et_requant_apply_s8 - clamp(MultiplyByQuantizedMultiplier(acc) + output_offset, act_min, act_max)
 * as int8, with lo = act_min - output_offset and hi = act_max - output_offset (clamping before
 * the offset is added gives the same value as TFLM's clamp after it, without an overflow of the
 * addition). Bit-exact with the et_multiply_by_quantized_multiplier composition for every input:
 * the high multiply is et_mul_nudged_hi with its single overflow saturated to INT32_MAX, so x lies
 * in [INT32_MIN + 1, INT32_MAX]. gemmlowp's RoundingDivideByPOT(x, e) (ties away from zero) is
 * floor((x' + 2^(e-1)) / 2^e) with x' = x - (x < 0) for e >= 1 (a remainder above
 * (mask >> 1) + (x < 0) rounds up), i.e. floor((y + 1) / 2) = (y >> 1) + (y & 1) with
 * y = x' >> (e - 1): no mask, no compare, no overflow (x' >= INT32_MIN). For e == 0
 * (pre = round = 0) the same expression is x.
 */
static inline int8_t et_requant_apply_s8(int32_t acc, const et_requant_t *q, int32_t output_offset, int32_t lo,
    int32_t hi) {
#if defined(__ARM_ARCH_6M__)
    uint32_t r = et_mul_nudged_hi_split((int32_t)((uint32_t)acc << q->left), q->mult_hi, q->mult_lo);
#else
    uint32_t r = et_mul_nudged_hi((int32_t)((uint32_t)acc << q->left), q->multiplier);
#endif
    r -= r == 0x80000000u; /* a == b == INT32_MIN: 2^31 saturates to INT32_MAX */
    const int32_t x = (int32_t)r;
    const int32_t y = (x + ((x >> 31) & -q->round)) >> q->pre;
    int32_t v = (y >> q->round) + (y & q->round);
    v = v < lo ? lo : (v > hi ? hi : v);
    return (int8_t)(v + output_offset);
}

/*
 * The common tail of the conv/depthwise/FC kernels: requantize the int32
 * accumulator, add the output offset and clamp to [act_min, act_max].
 * The offset is added without overflow (TFLM adds in int32, which only differs when that
 * addition would overflow: undefined in C, never the case in real models, and the numpy twin
 * also adds without wrapping).
 */
static inline int8_t et_requantize_s8(int32_t acc, int32_t multiplier, int32_t shift,
    int32_t output_offset, int32_t act_min, int32_t act_max) {
    const et_requant_t q = et_requant_prep(multiplier, shift);
    return et_requant_apply_s8(acc, &q, output_offset, act_min - output_offset, act_max - output_offset);
}

#endif /* EDGETUNE_ET_REQUANT_H */
