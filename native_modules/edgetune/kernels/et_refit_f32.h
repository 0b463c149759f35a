/*
 * Closed-form classifier refit: the arithmetic of docs/training.md §9 (integer sufficient
 * statistics, float32 ridge solve by LDL^T, logit-scale match, blend, requantization).
 * Plain C99, no allocation: the caller passes every buffer. Numpy twin: host/edgetune/twin/refit.py.
 * Compiled with -ffp-contract=off: every float operation is the written float32 operation.
 *
 * Conventions: K features (the classifier's input elements), C classes. Symmetric K x K
 * matrices are packed lower triangles: element (j, k), k <= j, at et_tri(j) + k.
 * A flashed classifier is given as int8 weights wq (C x K), per-class factors sf[c] = s_x * s_w[c]
 * and real biases bf[c]; its real weight is sf[c] * (float)wq[c*K+k].
 */
#ifndef EDGETUNE_ET_REFIT_F32_H
#define EDGETUNE_ET_REFIT_F32_H

#include <stddef.h>
#include <stdint.h>

#define ET_REFIT_FOLDS 5

static inline size_t et_tri(int32_t j) {
    return (size_t)j * (size_t)(j + 1) / 2u;
}

/* Sufficient statistics of one window (features x, zero point zp, label): g (packed, int32),
 * s1 (K), b (C x K) += centred sums, cnt[label] += 1. Exact int32 for n <= 32767 windows. */
void et_refit_accumulate(const int8_t *x, int32_t zp, int32_t K, int32_t label, int32_t *g, int32_t *s1,
    int32_t *b, int32_t *cnt);

/* Ridge solve (§9b) of n windows' statistics: wr (C x K) and ir (C); L (packed), D, e (K) scratch. */
void et_refit_solve(int32_t n, int32_t K, int32_t C, const int32_t *g, const int32_t *s1, const int32_t *b,
    const int32_t *cnt, float l2, float *L, float *D, float *e, float *wr, float *ir);

/* gamma and delta (§9c) of the solve wr/ir against the flashed classifier (wq, sf, bf). */
void et_refit_terms(int32_t n, int32_t K, int32_t C, const int32_t *g, const int32_t *s1, const float *wr,
    const int8_t *wq, const float *sf, const float *bf, float *gamma, float *delta);

/* Logits (§9d) of one window: z[c] = sum_k w[c,k] * (float)(x[k] - zp) sequentially, + bias[c];
 * w == NULL: the flashed classifier (wq, sf). */
void et_refit_logits(const int8_t *x, int32_t zp, int32_t K, int32_t C, const float *w, const int8_t *wq,
    const float *sf, const float *bias, float *z);

/* float32 sqrt of x > 0 (§9c): bit seed, 4 Newton steps. */
float et_refit_sqrtf(float x);

/* (multiplier, shift) of a positive float32 real multiplier (§9e), exact, no double. */
void et_refit_multiplier(float m, int32_t *mult, int32_t *shift);

/* Requantize the blended real classifier w (C x K, per centred feature unit) and b (§9e) into
 * wq_out (C x K), bq_out, s_w, s_b, mult, shift; s_wf/s_bf the flashed scales (fallback of a
 * channel whose weights are all 0). */
void et_refit_requantize(int32_t K, int32_t C, const float *w, const float *b, float s_x, float s_out,
    const float *s_wf, const float *s_bf, int8_t *wq_out, int32_t *bq_out, float *s_w, float *s_b,
    int32_t *mult, int32_t *shift);

#endif /* EDGETUNE_ET_REFIT_F32_H */
