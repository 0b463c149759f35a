/*
 * Sensor-frame calibration kernels; recipe and operation order: host/edgetune/twin/frame.py.
 */
#include "et_frame_f32.h"

#define SQUARINGS 24
#define ITERS 16

static const float ALPHA = 3.0f, BETA = 1.0f, GUARD = 0.5f, MIRROR = 0.8f;
static const float FLUSH = 9.094947017729282e-13f; /* 2^-40, exact */
static const uint8_t TRI[6][2] = { { 0, 0 }, { 0, 1 }, { 0, 2 }, { 1, 1 }, { 1, 2 }, { 2, 2 } };

static float fabs_(float v) {
    return v < 0.0f ? -v : v;
}

int et_frame_accumulate(et_frame_acc_t *acc, const int8_t *x, size_t len, size_t channels,
    const uint8_t accel[3], const uint8_t gyro[3]) {
    const size_t n = len / channels;
    if ((int64_t)acc->n + (int64_t)n > (int64_t)ET_FRAME_MAX_CLASS_SAMPLES) {
        return -1;
    }
    const int groups = gyro[0] == ET_FRAME_NONE ? 1 : 2;
    for (size_t t = 0; t < n; ++t) {
        const int8_t *v = x + t * channels;
        for (int g = 0; g < groups; ++g) {
            const uint8_t *ch = g ? gyro : accel;
            for (int i = 0; i < 3; ++i) {
                acc->s[3 * g + i] += v[ch[i]];
            }
            for (int k = 0; k < 6; ++k) {
                acc->p[6 * g + k] += (int32_t)v[ch[TRI[k][0]]] * (int32_t)v[ch[TRI[k][1]]];
            }
        }
    }
    acc->n += (int32_t)n;
    return 0;
}

void et_frame_mm(const float *a, const float *b, float *out) {
    for (int i = 0; i < 3; ++i) {
        for (int j = 0; j < 3; ++j) {
            float t = a[3 * i + 0] * b[0 + j];
            t = t + a[3 * i + 1] * b[3 + j];
            t = t + a[3 * i + 2] * b[6 + j];
            out[3 * i + j] = t;
        }
    }
}

static void tr3(const float *a, float *out) {
    for (int i = 0; i < 3; ++i) {
        for (int j = 0; j < 3; ++j) {
            out[3 * i + j] = a[3 * j + i];
        }
    }
}

static void sym3(const float *v, float *m) {
    for (int k = 0; k < 6; ++k) {
        m[3 * TRI[k][0] + TRI[k][1]] = v[k];
        m[3 * TRI[k][1] + TRI[k][0]] = v[k];
    }
}

static void eye3(float *r) {
    for (int k = 0; k < 9; ++k) {
        r[k] = (k % 4 == 0) ? 1.0f : 0.0f;
    }
}

/* r @ diag(1, 1, d) (in place). */
static void rdiag(float *r, int d) {
    if (d < 0) {
        r[2] = -r[2];
        r[5] = -r[5];
        r[8] = -r[8];
    }
}

/* The proper rotation maximizing tr(R^T h): Horn's quaternion method (frame.py _solve). */
static void solve(const float *h, float *r) {
    const float sxx = h[0], sxy = h[3], sxz = h[6];
    const float syx = h[1], syy = h[4], syz = h[7];
    const float szx = h[2], szy = h[5], szz = h[8];
    float a[16] = {
        (sxx + syy) + szz, syz - szy, szx - sxz, sxy - syx,
        syz - szy, (sxx - syy) - szz, sxy + syx, szx + sxz,
        szx - sxz, sxy + syx, (syy - sxx) - szz, syz + szy,
        sxy - syx, szx + sxz, syz + szy, (szz - sxx) - syy,
    };
    float c = 0.0f;
    for (int k = 0; k < 9; ++k) {
        c = c + fabs_(h[k]);
    }
    c = c + c;
    if (!(c > 0.0f)) {
        eye3(r);
        return;
    }
    for (int i = 0; i < 4; ++i) {
        a[5 * i] = a[5 * i] + c;
    }
    for (int it = 0; it < SQUARINGS; ++it) {
        float b[16];
        float mx = 0.0f;
        for (int i = 0; i < 4; ++i) {
            for (int j = 0; j < 4; ++j) {
                float t = a[4 * i + 0] * a[0 + j];
                t = t + a[4 * i + 1] * a[4 + j];
                t = t + a[4 * i + 2] * a[8 + j];
                t = t + a[4 * i + 3] * a[12 + j];
                b[4 * i + j] = t;
                if (fabs_(t) > mx) {
                    mx = fabs_(t);
                }
            }
        }
        if (!(mx > 0.0f)) {
            eye3(r);
            return;
        }
        for (int k = 0; k < 16; ++k) {
            const float t = b[k] / mx;
            a[k] = fabs_(t) < FLUSH ? 0.0f : t;
        }
    }
    int jm = 0;
    for (int j = 1; j < 4; ++j) {
        if (a[5 * j] > a[5 * jm]) {
            jm = j;
        }
    }
    const float w = a[jm], x = a[4 + jm], y = a[8 + jm], z = a[12 + jm];
    const float ww = w * w, xx = x * x, yy = y * y, zz = z * z;
    const float nn = ((ww + xx) + yy) + zz;
    const float inv = 1.0f / nn;
    const float two = 2.0f;
    const float q[9] = {
        ((ww + xx) - yy) - zz, two * (x * y - w * z), two * (x * z + w * y),
        two * (x * y + w * z), ((ww - xx) + yy) - zz, two * (y * z - w * x),
        two * (x * z - w * y), two * (y * z + w * x), ((ww - xx) - yy) + zz,
    };
    for (int k = 0; k < 9; ++k) {
        r[k] = q[k] * inv;
    }
}

static float sqdist(const float *a, const float *b) {
    float t = 0.0f;
    for (int k = 0; k < 9; ++k) {
        const float d = a[k] - b[k];
        t = t + d * d;
    }
    return t;
}

typedef struct {
    size_t n_classes;
    const et_frame_acc_t *acc;
    const float *stats;
    int has_gyro;
} fit_ctx_t;

static void class_src(const float *st, float *mu, float *a, float *g) {
    mu[0] = st[0];
    mu[1] = st[1];
    mu[2] = st[2];
    sym3(st + 3, a);
    sym3(st + 9, g);
}

static float energy(const fit_ctx_t *cx, const float *r, float wm, float wa, float wg) {
    float em = 0.0f, ea = 0.0f, eg = 0.0f;
    float rt[9], t1[9], t2[9];
    for (size_t k = 0; k < cx->n_classes; ++k) {
        if (cx->acc[k].n == 0) {
            continue;
        }
        float mu[3], a[9], g[9];
        class_src(cx->stats + k * ET_FRAME_STAT_FLOATS, mu, a, g);
        for (int i = 0; i < 3; ++i) {
            float t = r[3 * i + 0] * mu[0];
            t = t + r[3 * i + 1] * mu[1];
            t = t + r[3 * i + 2] * mu[2];
            const float d = cx->acc[k].m[i] - t;
            em = em + d * d;
        }
        tr3(r, rt);
        et_frame_mm(r, a, t1);
        et_frame_mm(t1, rt, t2);
        ea = ea + sqdist(cx->acc[k].sa, t2);
        if (cx->has_gyro) {
            et_frame_mm(r, g, t1);
            et_frame_mm(t1, rt, t2);
            eg = eg + sqdist(cx->acc[k].sg, t2);
        }
    }
    float e = em * wm;
    e = e + ea * wa;
    return e + eg * wg;
}

/* Step 1 for one group of class k: raw means and covariances from the integer sums. */
static void group_stats(const et_frame_acc_t *acc, int g, const uint8_t *ch, const float *scale,
    const float *zero_point, float *m, float *cov) {
    const float fn = (float)acc->n;
    for (int i = 0; i < 3; ++i) {
        const float mean_q = (float)acc->s[3 * g + i] / fn;
        m[i] = (mean_q - zero_point[ch[i]]) * scale[ch[i]];
    }
    for (int k = 0; k < 6; ++k) {
        const int i = TRI[k][0], j = TRI[k][1];
        const int64_t num = (int64_t)acc->n * acc->p[6 * g + k] - (int64_t)acc->s[3 * g + i] * acc->s[3 * g + j];
        float t = (float)num / (fn * fn);
        t = t * (scale[ch[i]] * scale[ch[j]]);
        cov[3 * i + j] = t;
        cov[3 * j + i] = t;
    }
}

/* One set's fit (frame.py _fit_set): the candidates' R and residuals, the identity's. */
typedef struct {
    float r[2][9]; /* proper, improper */
    float e[2];
    float e0;
    int c;         /* the candidate: 0 proper, 1 improper (the mirror margin) */
} set_fit_t;

static void fit_set(const et_frame_acc_t *acc, size_t n_classes, const float *stats, int has_gyro, set_fit_t *f) {
    fit_ctx_t cx = { n_classes, acc, stats, has_gyro };
    float nm = 0.0f, na = 0.0f, ng = 0.0f;
    float hm[9] = { 0 };
    for (size_t k = 0; k < n_classes; ++k) {
        if (acc[k].n == 0) {
            continue;
        }
        float mu[3], a[9], g[9];
        class_src(stats + k * ET_FRAME_STAT_FLOATS, mu, a, g);
        for (int i = 0; i < 3; ++i) {
            nm = nm + mu[i] * mu[i];
        }
        for (int i = 0; i < 9; ++i) {
            na = na + a[i] * a[i];
        }
        for (int i = 0; i < 9; ++i) {
            ng = ng + g[i] * g[i];
        }
    }
    const float wm = nm > 0.0f ? 1.0f / nm : 0.0f;
    const float wa = na > 0.0f ? ALPHA / na : 0.0f;
    const float wg = (ng > 0.0f && has_gyro) ? BETA / ng : 0.0f;
    const float wa2 = wa + wa, wg2 = wg + wg;
    for (size_t k = 0; k < n_classes; ++k) {
        if (acc[k].n == 0) {
            continue;
        }
        const float *mu = stats + k * ET_FRAME_STAT_FLOATS;
        for (int i = 0; i < 3; ++i) {
            for (int j = 0; j < 3; ++j) {
                hm[3 * i + j] = hm[3 * i + j] + acc[k].m[i] * mu[j];
            }
        }
    }
    for (int i = 0; i < 9; ++i) {
        hm[i] = hm[i] * wm;
    }
    for (int c = 0; c < 2; ++c) {
        const int d = c == 0 ? 1 : -1;
        float h[9], r[9];
        for (int i = 0; i < 9; ++i) {
            h[i] = hm[i];
        }
        rdiag(h, d);
        solve(h, r);
        rdiag(r, d);
        for (int it = 0; it < ITERS; ++it) {
            float acc_a[9] = { 0 }, acc_g[9] = { 0 }, t1[9], u[9];
            for (size_t k = 0; k < n_classes; ++k) {
                if (acc[k].n == 0) {
                    continue;
                }
                float mu[3], a[9], g[9];
                class_src(stats + k * ET_FRAME_STAT_FLOATS, mu, a, g);
                et_frame_mm(r, a, t1);
                et_frame_mm(acc[k].sa, t1, u);
                for (int i = 0; i < 9; ++i) {
                    acc_a[i] = acc_a[i] + u[i];
                }
                if (has_gyro) {
                    et_frame_mm(r, g, t1);
                    et_frame_mm(acc[k].sg, t1, u);
                    for (int i = 0; i < 9; ++i) {
                        acc_g[i] = acc_g[i] + u[i];
                    }
                }
            }
            for (int i = 0; i < 9; ++i) {
                h[i] = (hm[i] + wa2 * acc_a[i]) + wg2 * acc_g[i];
            }
            rdiag(h, d);
            solve(h, r);
            rdiag(r, d);
        }
        for (int i = 0; i < 9; ++i) {
            f->r[c][i] = r[i];
        }
        f->e[c] = energy(&cx, r, wm, wa, wg);
    }
    float id[9];
    eye3(id);
    f->e0 = energy(&cx, id, wm, wa, wg);
    f->c = f->e[1] <= MIRROR * f->e[0] ? 1 : 0;
}

void et_frame_fit(et_frame_acc_t *acc, size_t n_classes, size_t n_sets, const float *stats,
    const float *scale, const float *zero_point, const uint8_t accel[3], const uint8_t gyro[3],
    et_frame_fit_t *out) {
    const int has_gyro = gyro[0] != ET_FRAME_NONE;
    for (size_t k = 0; k < n_classes; ++k) {
        if (acc[k].n == 0) {
            continue;
        }
        group_stats(&acc[k], 0, accel, scale, zero_point, acc[k].m, acc[k].sa);
        if (has_gyro) {
            float mm_[3];
            group_stats(&acc[k], 1, gyro, scale, zero_point, mm_, acc[k].sg);
        }
    }
    set_fit_t best, f;
    best.c = 0; /* n_sets >= 1: set by s == 0 */
    best.e[0] = best.e[1] = 0.0f;
    float e0 = 0.0f;
    size_t b = 0;
    for (size_t s = 0; s < n_sets; ++s) {
        fit_set(acc, n_classes, stats + s * n_classes * ET_FRAME_STAT_FLOATS, has_gyro, &f);
        if (s == 0 || f.e0 < e0) {
            e0 = f.e0;
        }
        if (s == 0 || f.e[f.c] < best.e[best.c]) {
            best = f;
            b = s;
        }
    }
    out->set = (int)b;
    out->e_identity = e0;
    out->e_proper = best.e[0];
    out->e_improper = best.e[1];
    if (best.e[best.c] <= GUARD * e0) {
        for (int i = 0; i < 9; ++i) {
            out->r[i] = best.r[best.c][i];
        }
        out->improper = best.c;
        out->chosen = 1 + best.c;
    } else {
        eye3(out->r);
        out->improper = 0;
        out->chosen = 0;
    }
}

void et_frame_apply(const float *r, int improper, const uint8_t accel[3], const uint8_t gyro[3], float *x) {
    for (int g = 0; g < 2; ++g) {
        const uint8_t *ch = g ? gyro : accel;
        if (ch[0] == ET_FRAME_NONE) {
            continue;
        }
        const float x0 = x[ch[0]], x1 = x[ch[1]], x2 = x[ch[2]];
        for (int i = 0; i < 3; ++i) {
            float t = r[0 + i] * x0;
            t = t + r[3 + i] * x1;
            t = t + r[6 + i] * x2;
            x[ch[i]] = (g && improper) ? -t : t;
        }
    }
}
