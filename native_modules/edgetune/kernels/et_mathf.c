/*
 * et_expf / et_logf: float32 exp and log evaluated in a fixed operation order
 * (docs/training.md §3), so that C on any ISA and the numpy twin agree bit for
 * bit. They are only as accurate as the softmax loss needs (a few ulp).
 */
#include "et_mathf.h"

/*
 * et_expf - e^x for x <= 0 (the softmax only needs z - max <= 0).
 *
 * x < -87 -> 0. k = round_sat(x * log2(e)); r = x - k*ln2 (Cody-Waite, two
 * parts); p = degree-6 Taylor polynomial of e^r (Horner, innermost first);
 * result p * 2^k with 2^k built from its bit pattern (k < -126 -> 0).
 */
float et_expf(float x) {
    if (x < -87.0f) {
        return 0.0f;
    }
    const int32_t k = et_round_sat(x * 1.44269504f, ET_LIM30);
    if (k < -126) {
        return 0.0f;
    }
    const float kf = (float)k;
    const float r = (x - kf * 0.693145752f) - kf * 1.42860677e-06f;
    float p = 0.00833333377f + r * 0.00138888892f;
    p = 0.0416666679f + r * p;
    p = 0.166666672f + r * p;
    p = 0.5f + r * p;
    p = 1.0f + r * p;
    p = 1.0f + r * p;
    return p * et_f32_from_bits((uint32_t)(k + 127) << 23);
}

/*
 * et_logf - ln(x) for x >= 1 (the softmax sum S is >= 1).
 *
 * x = mf * 2^e with mf in [1, 2), folded to [0.707, 1.414]; with
 * t = (mf - 1) / (mf + 1): ln(mf) = 2t (1 + t^2/3 + t^4/5 + t^6/7 + t^8/9).
 */
float et_logf(float x) {
    const uint32_t bits = et_f32_bits(x);
    int32_t e = (int32_t)((bits >> 23) & 255u) - 127;
    float mf = et_f32_from_bits((bits & 0x7fffffu) | 0x3f800000u);
    if (mf > 1.41421356f) {
        mf = mf * 0.5f;
        e = e + 1;
    }
    const float t = (mf - 1.0f) / (mf + 1.0f);
    const float t2 = t * t;
    float q = 0.142857149f + t2 * 0.111111112f;
    q = 0.200000003f + t2 * q;
    q = 0.333333343f + t2 * q;
    q = 1.0f + t2 * q;
    const float ln_m = (2.0f * t) * q;
    return (float)e * 0.693147182f + ln_m;
}
