/*
 * tests/c/test_requant_paths.py: the requantization and rounding fast paths of et_requant.h and
 * et_mathf.h against their literal forms, on adversarial and random values. Built three ways:
 * plain (the 64-bit nudged high multiply), -D__ARM_ARCH_6M__ (the 16-bit-split multiply the
 * RP2040 build uses) and -D__arm__ (et_round_sat's bit tests of soft-float ARM). Prints
 * "N bad of M" and exits non-zero on any difference. Also et_grad_q15 (the gradient requantization's
 * 32-bit division) against et_rdiv, et_i64_to_f32 against the plain conversion and
 * et_times_32768 against the float multiply.
 */
#include <stdint.h>
#include <stdio.h>

#include "et_mathf.h"
#include "et_requant.h"
#include "et_train_kernels.h"

static uint64_t s = 88172645463325252ull;

static uint32_t rnd(void) {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return (uint32_t)s;
}

/* TFLM's composition, as written in et_requant.h's reference helpers */
static int8_t literal(int32_t acc, int32_t m, int32_t sh, int32_t off, int32_t amin, int32_t amax) {
    int64_t v = (int64_t)et_multiply_by_quantized_multiplier(acc, m, sh) + off;
    v = v < amin ? amin : (v > amax ? amax : v);
    return (int8_t)v;
}

static int32_t literal_round_sat(float v, int32_t lim) {
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
    return v >= 0.0f ? (int32_t)(v + 0.5f) : (int32_t)(v - 0.5f);
}

static long bad, n;

static void check(int32_t acc, int32_t m, int32_t sh, int32_t off, int32_t amin, int32_t amax) {
    const et_requant_t q = et_requant_prep(m, sh);
    const int8_t a = et_requant_apply_s8(acc, &q, off, amin - off, amax - off);
    const int8_t b = literal(acc, m, sh, off, amin, amax);
    uint32_t h = et_mul_nudged_hi(acc, m), h2 = et_mul_nudged_hi_split(acc, m >> 16, (uint32_t)m & 0xFFFFu);
    h -= h == 0x80000000u;
    h2 -= h2 == 0x80000000u;
    const int32_t ref = et_saturating_rounding_doubling_high_mul(acc, m);
    ++n;
    if (a != b || (int32_t)h != ref || (int32_t)h2 != ref) {
        if (bad < 5) {
            printf("acc %ld mult %ld shift %ld: %d vs %d\n", (long)acc, (long)m, (long)sh, a, b);
        }
        ++bad;
    }
}

static void check_round(float v, int32_t lim) {
    ++n;
    if (et_round_sat(v, lim) != literal_round_sat(v, lim)) {
        if (bad < 5) {
            printf("round_sat(%.9g, %ld)\n", (double)v, (long)lim);
        }
        ++bad;
    }
}

int main(void) {
    static const int32_t special[] = {INT32_MIN, INT32_MIN + 1, -65537, -65536, -65535, -32769, -32768, -32767,
        -2, -1, 0, 1, 2, 32767, 32768, 65535, 65536, 0x3FFFFFFF, 0x40000000, -0x40000000, INT32_MAX - 1,
        INT32_MAX};
    const int ns = (int)(sizeof special / sizeof special[0]);
    for (int32_t sh = -31; sh <= 30; ++sh) {
        for (int i = 0; i < ns; ++i) {
            for (int j = 0; j < ns; ++j) {
                const int32_t off = (int32_t)(rnd() % 256) - 128;
                check(special[i], special[j], sh, off, -128, 127);
                check(special[i], special[j], sh, off, off, 127);
            }
        }
    }
    for (long t = 0; t < 3000000; ++t) {
        int32_t acc = (int32_t)rnd();
        if (rnd() & 1) {
            acc >>= rnd() % 31;
        }
        const int32_t m = (rnd() & 3) ? (int32_t)(0x40000000u | (rnd() & 0x3FFFFFFFu)) : (int32_t)rnd();
        const int32_t sh = (int32_t)(rnd() % 62) - 31, off = (int32_t)(rnd() % 256) - 128;
        check(acc, m, sh, off, (rnd() & 1) ? off : -128, 127);
    }
    static const float fs[] = {0.0f, -0.0f, 0.5f, -0.5f, 0.49999997f, -0.49999997f, 1.5f, -2.5f, 32766.5f,
        32767.0f, -32767.0f, 32766.998f, 1e30f, -1e30f, 1e-30f, 1073741824.0f, -1073741824.0f, 1073741760.0f};
    union {
        uint32_t u;
        float f;
    } inf = {0x7F800000u}, ninf = {0xFF800000u}, nan = {0x7FC00001u}, nnan = {0xFFC00000u};
    for (unsigned i = 0; i < sizeof fs / sizeof fs[0]; ++i) {
        check_round(fs[i], 32767);
        check_round(fs[i], ET_LIM30);
    }
    check_round(inf.f, 32767);
    check_round(ninf.f, ET_LIM30);
    check_round(nan.f, 32767);
    check_round(nnan.f, ET_LIM30);
    for (long t = 0; t < 3000000; ++t) {
        union {
            uint32_t u;
            float f;
        } v = {rnd()};
        if (rnd() & 1) { /* mostly the interesting range */
            v.f = (float)((int32_t)rnd() >> (rnd() % 32)) / (float)(1u << (rnd() % 16));
        }
        check_round(v.f, (rnd() & 1) ? 32767 : ET_LIM30);
    }
    /* the gradient requantization of docs/training.md §4c: et_grad_q15 == et_rdiv(acc * 32767, m) */
    for (long t = 0; t < 3000000; ++t) {
        /* M in [1, 2^31], acc in [-M, M] and in int32 (M = 2^31 only as |INT32_MIN|) */
        int64_t m = (int64_t)((rnd() & 0x7FFFFFFFu) >> (rnd() % 31));
        if (t < 62) {
            m = t < 31 ? (int64_t)1 << t : ((int64_t)1 << (t - 30)) - 1;
        }
        if (m == 0) {
            m = 1;
        }
        const int64_t pick = rnd() % 4;
        int64_t acc = pick == 0 ? m : (pick == 1 ? -m : (int64_t)(((uint64_t)rnd() << 32 | rnd()) % (uint64_t)(2 * m + 1)) - m);
        if (t == 62) {
            m = (int64_t)1 << 31;
            acc = INT32_MIN;
        }
        ++n;
        if (et_grad_q15((int32_t)acc, m) != (int32_t)et_rdiv(acc * 32767, m)) {
            if (bad < 5) {
                printf("grad_q15(%lld, %lld)\n", (long long)acc, (long long)m);
            }
            ++bad;
        }
    }
    /* et_i64_to_f32 (the int32 conversion where the value fits, on soft-float ARM) == (float) */
    for (long t = 0; t < 3000000; ++t) {
        const int64_t v = (int64_t)((uint64_t)rnd() << 32 | rnd()) >> (rnd() % 64);
        const int64_t w = t < 6 ? (int64_t[]){INT32_MIN, INT32_MAX, (int64_t)INT32_MIN - 1, (int64_t)INT32_MAX + 1,
                                              INT64_MIN, INT64_MAX}[t] : v;
        const float a = et_i64_to_f32(w), b = (float)w;
        ++n;
        if (a != b) {
            if (bad < 5) {
                printf("i64_to_f32(%lld)\n", (long long)w);
            }
            ++bad;
        }
    }
    /* et_times_32768 (the exponent add on soft-float ARM) == v * 32768.0f, bit for bit */
    for (long t = 0; t < 3000000; ++t) {
        union {
            uint32_t u;
            float f;
        } v = {rnd()}, a, b;
        if (t < 8) {
            v.u = (uint32_t[]){0u, 0x80000000u, 1u, 0x007FFFFFu, 0x7F7FFFFFu, 0x7F800000u, 0x7FC00000u, 0x71FFFFFFu}[t];
        }
        a.f = et_times_32768(v.f);
        b.f = v.f * 32768.0f;
        ++n;
        if (a.u != b.u && !(a.f != a.f && b.f != b.f)) {
            if (bad < 5) {
                printf("times_32768(0x%08lx)\n", (unsigned long)v.u);
            }
            ++bad;
        }
    }
    printf("%ld bad of %ld\n", bad, n);
    return bad != 0;
}
