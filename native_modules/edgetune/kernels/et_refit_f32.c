/*
 * Closed-form classifier refit arithmetic (docs/training.md §9; numpy twin host/edgetune/twin/refit.py).
 * Every sum over many terms is either an exact integer sum or a float32 sum in the written
 * order (index ascending, starting from the first term).
 */
#include "et_refit_f32.h"
#include "et_mathf.h"

#define ET_FLT_MAX 3.4028235e38f

void et_refit_accumulate(const int8_t *x, int32_t zp, int32_t K, int32_t label, int32_t *g, int32_t *s1,
    int32_t *b, int32_t *cnt) {
    int32_t *bl = b + (size_t)label * K;
    for (int32_t j = 0; j < K; ++j) {
        const int32_t uj = (int32_t)x[j] - zp;
        int32_t *gj = g + et_tri(j);
        s1[j] += uj;
        bl[j] += uj;
        for (int32_t k = 0; k <= j; ++k) {
            gj[k] += uj * ((int32_t)x[k] - zp);
        }
    }
    cnt[label] += 1;
}

/* A0(j, k) = (float)(n * G(j, k) - S1[j] * S1[k]), exact int64 then one rounding. */
static float a0(int32_t n, const int32_t *g, const int32_t *s1, int32_t j, int32_t k) {
    const int32_t hi = j > k ? j : k, lo = j > k ? k : j;
    return (float)((int64_t)n * g[et_tri(hi) + lo] - (int64_t)s1[j] * s1[k]);
}

void et_refit_solve(int32_t n, int32_t K, int32_t C, const int32_t *g, const int32_t *s1, const int32_t *b,
    const int32_t *cnt, float l2, float *L, float *D, float *e, float *wr, float *ir) {
    float tr = 0.0f;
    for (int32_t k = 0; k < K; ++k) {
        const float a = a0(n, g, s1, k, k);
        tr = k == 0 ? a : tr + a;
    }
    float lam = (l2 * tr) / (float)K;
    if (!(lam > 0.0f)) {
        lam = 1.0f;
    }
    for (int32_t j = 0; j < K; ++j) {
        for (int32_t k = 0; k < j; ++k) {
            L[et_tri(j) + k] = a0(n, g, s1, j, k);
        }
        L[et_tri(j) + j] = a0(n, g, s1, j, j) + lam;
    }
    /* LDL^T, column by column */
    for (int32_t j = 0; j < K; ++j) {
        const float *lj = L + et_tri(j);
        for (int32_t i = 0; i < j; ++i) {
            e[i] = lj[i] * D[i];
        }
        float d = lj[j];
        for (int32_t i = 0; i < j; ++i) {
            d = d - lj[i] * e[i];
        }
        if (!(d > 0.0f)) {
            d = lam;
        }
        D[j] = d;
        for (int32_t r = j + 1; r < K; ++r) {
            float *lr = L + et_tri(r);
            float s = lr[j];
            for (int32_t i = 0; i < j; ++i) {
                s = s - lr[i] * e[i];
            }
            lr[j] = s / d;
        }
    }
    for (int32_t c = 0; c < C; ++c) {
        float *x = wr + (size_t)c * K;
        for (int32_t q = 0; q < K; ++q) { /* forward: y = L^-1 R */
            const float *lq = L + et_tri(q);
            float v = (float)((int64_t)n * b[(size_t)c * K + q] - (int64_t)cnt[c] * s1[q]);
            for (int32_t i = 0; i < q; ++i) {
                v = v - lq[i] * x[i];
            }
            x[q] = v;
        }
        for (int32_t q = 0; q < K; ++q) {
            x[q] = x[q] / D[q];
        }
        for (int32_t q = K - 1; q >= 0; --q) { /* back: x = L^-T z */
            float v = x[q];
            for (int32_t i = q + 1; i < K; ++i) {
                v = v - L[et_tri(i) + q] * x[i];
            }
            x[q] = v;
        }
        float dot = 0.0f;
        for (int32_t k = 0; k < K; ++k) {
            const float t = x[k] * ((float)s1[k] / (float)n);
            dot = k == 0 ? t : dot + t;
        }
        ir[c] = ((float)cnt[c] / (float)n) - dot;
    }
}

static float wget(const float *w, const int8_t *wq, const float *sf, int32_t K, int32_t c, int32_t k) {
    return w ? w[(size_t)c * K + k] : sf[c] * (float)wq[(size_t)c * K + k];
}

/* sum over c, j (sequential) of w[c,j] * (sum over k (sequential) of A0(j,k) * w[c,k]) */
static float quad(int32_t n, int32_t K, int32_t C, const int32_t *g, const int32_t *s1, const float *w,
    const int8_t *wq, const float *sf) {
    float acc = 0.0f;
    for (int32_t c = 0; c < C; ++c) {
        for (int32_t j = 0; j < K; ++j) {
            float t = 0.0f;
            for (int32_t k = 0; k < K; ++k) {
                const float p = a0(n, g, s1, j, k) * wget(w, wq, sf, K, c, k);
                t = k == 0 ? p : t + p;
            }
            const float p = wget(w, wq, sf, K, c, j) * t;
            acc = (c == 0 && j == 0) ? p : acc + p;
        }
    }
    return acc;
}

float et_refit_sqrtf(float x) {
    float y = et_f32_from_bits((et_f32_bits(x) >> 1) + 0x1FBD1DF5u);
    for (int i = 0; i < 4; ++i) {
        y = 0.5f * (y + x / y);
    }
    return y;
}

void et_refit_terms(int32_t n, int32_t K, int32_t C, const int32_t *g, const int32_t *s1, const float *wr,
    const int8_t *wq, const float *sf, const float *bf, float *gamma, float *delta) {
    const float vf = quad(n, K, C, g, s1, NULL, wq, sf);
    const float vr = quad(n, K, C, g, s1, wr, NULL, NULL);
    const float q = vr > 0.0f ? vf / vr : 0.0f;
    const float gm = (vr > 0.0f && vf > 0.0f && q <= ET_FLT_MAX && q > 0.0f) ? et_refit_sqrtf(q) : 1.0f;
    float mf = 0.0f;
    for (int32_t c = 0; c < C; ++c) {
        float dot = 0.0f;
        for (int32_t k = 0; k < K; ++k) {
            const float t = wget(NULL, wq, sf, K, c, k) * ((float)s1[k] / (float)n);
            dot = k == 0 ? t : dot + t;
        }
        const float z = dot + bf[c];
        mf = c == 0 ? z : mf + z;
    }
    mf = mf / (float)C;
    *gamma = gm;
    *delta = mf - gm / (float)C;
}

void et_refit_logits(const int8_t *x, int32_t zp, int32_t K, int32_t C, const float *w, const int8_t *wq,
    const float *sf, const float *bias, float *z) {
    for (int32_t c = 0; c < C; ++c) {
        float s = 0.0f;
        for (int32_t k = 0; k < K; ++k) {
            const float t = (float)((int32_t)x[k] - zp) * wget(w, wq, sf, K, c, k);
            s = k == 0 ? t : s + t;
        }
        z[c] = s + bias[c];
    }
}

void et_refit_multiplier(float m, int32_t *mult, int32_t *shift) {
    const uint32_t b = et_f32_bits(m);
    const int32_t e = (int32_t)((b >> 23) & 255u) - 127;
    if ((b >> 31) || e == -127 || (e == 128 && (b & 0x7FFFFFu))) {
        *mult = 0;
        *shift = 0;
    } else if (e == 128 || e + 1 > 30) {
        *mult = 0x7FFFFFFF;
        *shift = 30;
    } else if (e + 1 < -31) {
        *mult = 0;
        *shift = 0;
    } else {
        *mult = (int32_t)(((b & 0x7FFFFFu) | 0x800000u) << 7);
        *shift = e + 1;
    }
}

void et_refit_requantize(int32_t K, int32_t C, const float *w, const float *b, float s_x, float s_out,
    const float *s_wf, const float *s_bf, int8_t *wq_out, int32_t *bq_out, float *s_w, float *s_b,
    int32_t *mult, int32_t *shift) {
    for (int32_t c = 0; c < C; ++c) {
        const float *wc = w + (size_t)c * K;
        float m = 0.0f;
        for (int32_t k = 0; k < K; ++k) {
            const float a = wc[k] < 0.0f ? -wc[k] : wc[k];
            m = a > m ? a : m;
        }
        float sw = m > 0.0f ? (m / 127.0f) / s_x : 0.0f;
        float sb = s_x * sw;
        if (m > 0.0f && sw > 0.0f && sw <= ET_FLT_MAX && sb > 0.0f && sb <= ET_FLT_MAX) {
            const float inv = 127.0f / m;
            for (int32_t k = 0; k < K; ++k) {
                wq_out[(size_t)c * K + k] = (int8_t)et_round_sat(wc[k] * inv, 127);
            }
        } else {
            sw = s_wf[c];
            sb = s_bf[c];
            for (int32_t k = 0; k < K; ++k) {
                wq_out[(size_t)c * K + k] = 0;
            }
        }
        s_w[c] = sw;
        s_b[c] = sb;
        bq_out[c] = et_round_sat(b[c] / sb, ET_LIM30);
        et_refit_multiplier(sb / s_out, mult + c, shift + c);
    }
}
