/*
 * Closed-form classifier refit: the walk over windows, folds and grid (docs/training.md §9).
 * The arithmetic is in kernels/et_refit_f32.c; numpy twin host/edgetune/twin/refit.py.
 */
#include <string.h>

#include "refit.h"
#include "et_util.h"
#include "kernels/et_refit_f32.h"

static const float l2_grid[ET_REFIT_N_L2] = { 1.0f, 0.1f, 0.01f, 0.001f };
static const float alpha_grid[ET_REFIT_N_ALPHA] = { 0.0f, 0.25f, 0.5f, 0.75f, 1.0f };

/* Geometry of the refit layer: K features, C classes. */
static void geometry(const et_train_t *t, int32_t *K, int32_t *C) {
    const et_train_layer_t *tl = &t->layers[t->refit_layer];
    *K = (int32_t)tl->per_channel;
    *C = (int32_t)tl->c_out;
}

/* Fold of a window (stratified, interleaved): j % 5 for the j-th window of its class. seen: C
 * counters, advanced here; ncls (the class counts) is not needed by this rule. */
static int32_t fold_of(int32_t label, int32_t *seen, const int32_t *ncls) {
    (void)ncls;
    const int32_t f = seen[label] % ET_REFIT_FOLDS;
    seen[label] += 1;
    return f;
}

static int32_t largest_fold(const int32_t *labels, int32_t n, int32_t C, int32_t *seen, int32_t *ncls) {
    int32_t size[ET_REFIT_FOLDS] = { 0 }, best = 0;
    memset(seen, 0, 4u * (size_t)C);
    memset(ncls, 0, 4u * (size_t)C);
    for (int32_t s = 0; s < n; ++s) {
        ncls[labels[s]] += 1;
    }
    for (int32_t s = 0; s < n; ++s) {
        const int32_t f = fold_of(labels[s], seen, ncls);
        size[f] += 1;
        best = size[f] > best ? size[f] : best;
    }
    return best;
}

const char *et_refit_check(const et_train_t *t, const int32_t *labels, int32_t n, float l2, float alpha) {
    if (t->refit_layer < 0) {
        return "refit needs a FULLY_CONNECTED classifier with a bias whose bias and all weights "
               "the scheme trains";
    }
    if (n < 2 || n > ET_REFIT_MAX_WINDOWS) {
        return "refit needs 2..32767 windows";
    }
    const int32_t C = (int32_t)t->layers[t->refit_layer].c_out;
    for (int32_t s = 0; s < n; ++s) {
        if (labels[s] < 0 || labels[s] >= C) {
            return "label out of range";
        }
    }
    if (l2 == l2 && !(l2 > 0.0f && l2 <= 3.4028235e38f)) {
        return "l2 must be a positive finite number";
    }
    if (alpha == alpha && !(alpha >= 0.0f && alpha <= 1.0f)) {
        return "alpha must be in [0, 1]";
    }
    et_tensor_t to;
    et_model_tensor(t->m, t->m->output, &to);
    if (!(to.scale > 0.0f && to.scale <= 3.4028235e38f)) {
        return "refit needs a positive output scale";
    }
    return NULL;
}

/* Scratch layout (each item 4-aligned, in this order). */
typedef struct {
    int32_t *g, *s1, *b, *cnt, *seen, *ncls, *correct;
    float *L, *D, *e, *wr, *ir, *sf, *bf, *zf, *zr;
    int8_t *hold;
    int32_t *hold_lab;
} scratch_t;

/* Three blocks (a fragmented heap has more room for three smaller ones): 0 the Gram matrix,
 * 1 the factor L, 2 the rest. base == NULL: sizes only. */
static void layout(const et_train_t *t, const int32_t *labels, int32_t n, int cv, uint8_t *const *base,
    scratch_t *s, size_t *size) {
    int32_t K, C;
    geometry(t, &K, &C);
    const size_t T = et_tri(K);
    size_t off[ET_REFIT_BLOCKS] = { 0, 0, 0 };
    int blk = 0;
#define ITEM(field, type, count) \
    do { \
        if (base) { s->field = (type *)(void *)(base[blk] + off[blk]); } \
        off[blk] += et_align4(sizeof(type) * (size_t)(count)); \
    } while (0)
    ITEM(g, int32_t, T);
    blk = 1;
    ITEM(L, float, T);
    blk = 2;
    ITEM(s1, int32_t, K);
    ITEM(b, int32_t, (size_t)C * K);
    ITEM(cnt, int32_t, C);
    ITEM(seen, int32_t, C);
    ITEM(ncls, int32_t, C);
    ITEM(D, float, K);
    ITEM(e, float, K);
    ITEM(wr, float, (size_t)C * K);
    ITEM(ir, float, C);
    ITEM(sf, float, C);
    ITEM(bf, float, C);
    ITEM(zf, float, C);
    ITEM(zr, float, C);
    if (cv) {
        int32_t fmax = 0;
        if (base) {
            fmax = largest_fold(labels, n, C, s->seen, s->ncls);
        } else { /* the same count without scratch: the j-th window of a class is in fold j % 5 */
            for (int32_t f = 0; f < ET_REFIT_FOLDS; ++f) {
                int32_t size = 0;
                for (int32_t c = 0; c < C; ++c) {
                    int32_t nc = 0;
                    for (int32_t q = 0; q < n; ++q) {
                        nc += labels[q] == c;
                    }
                    for (int32_t j = 0; j < nc; ++j) {
                        size += j % ET_REFIT_FOLDS == f;
                    }
                }
                fmax = size > fmax ? size : fmax;
            }
        }
        ITEM(correct, int32_t, ET_REFIT_N_L2 * ET_REFIT_N_ALPHA);
        ITEM(hold, int8_t, (size_t)fmax * K);
        ITEM(hold_lab, int32_t, fmax);
    }
#undef ITEM
    for (int k = 0; k < ET_REFIT_BLOCKS; ++k) {
        size[k] = off[k];
    }
}

void et_refit_scratch_blocks(const et_train_t *t, const int32_t *labels, int32_t n, int cv,
    size_t size[ET_REFIT_BLOCKS]) {
    layout(t, labels, n, cv, NULL, NULL, size);
}

size_t et_refit_scratch_size(const et_train_t *t, const int32_t *labels, int32_t n, int cv) {
    size_t size[ET_REFIT_BLOCKS];
    layout(t, labels, n, cv, NULL, NULL, size);
    return size[0] + size[1] + size[2];
}

/* The classifier's input (K int8 features) of window x under the current parameters. */
static const int8_t *features(et_train_t *t, const int8_t *x) {
    (void)et_train_forward(t, x, 0);
    return (const int8_t *)(t->arena + et_model_chain_offset(t->m, t->m->n_layers - 1));
}

static void zero_stats(int32_t K, int32_t C, int32_t *g, int32_t *s1, int32_t *b, int32_t *cnt) {
    memset(g, 0, 4u * et_tri(K));
    memset(s1, 0, 4u * (size_t)K);
    memset(b, 0, 4u * (size_t)C * K);
    memset(cnt, 0, 4u * (size_t)C);
}

void et_refit_stats(et_train_t *t, const int8_t *const *xs, const int32_t *labels, int32_t n, int32_t *g,
    int32_t *s1, int32_t *b, int32_t *cnt) {
    int32_t K, C;
    geometry(t, &K, &C);
    et_layer_t l;
    et_tensor_t tin;
    et_model_layer(t->m, (unsigned)t->refit_layer, &l);
    et_model_tensor(t->m, l.input, &tin);
    zero_stats(K, C, g, s1, b, cnt);
    for (int32_t q = 0; q < n; ++q) {
        et_refit_accumulate(features(t, xs[q]), tin.zero_point, K, labels[q], g, s1, b, cnt);
    }
}

size_t et_refit_stats_bytes(const et_train_t *t) {
    int32_t K, C;
    geometry(t, &K, &C);
    return 4u * ((size_t)C + (size_t)K + et_tri(K) + (size_t)C * K);
}

/* Store v as 4 little-endian bytes at p (in place of the int32 it was read from). */
static void put_le32(uint8_t *p, int32_t v) {
    const uint32_t u = (uint32_t)v;
    p[0] = (uint8_t)u;
    p[1] = (uint8_t)(u >> 8);
    p[2] = (uint8_t)(u >> 16);
    p[3] = (uint8_t)(u >> 24);
}

void et_refit_stats_pack(et_train_t *t, const int8_t *const *xs, const int32_t *labels, int32_t n, void *out) {
    int32_t K, C;
    geometry(t, &K, &C);
    int32_t *cnt = (int32_t *)out, *s1 = cnt + C, *g = s1 + K, *b = g + et_tri(K);
    et_refit_stats(t, xs, labels, n, g, s1, b, cnt);
    const size_t count = et_refit_stats_bytes(t) / 4u;
    for (size_t i = 0; i < count; ++i) {
        put_le32((uint8_t *)(cnt + i), cnt[i]);
    }
}

const char *et_refit_run(et_train_t *t, const int8_t *const *xs, const int32_t *labels, int32_t n, float l2,
    float alpha, void *const scratch[ET_REFIT_BLOCKS], et_refit_result_t *res) {
    const et_model_t *m = t->m;
    const unsigned li = (unsigned)t->refit_layer;
    int32_t K, C;
    geometry(t, &K, &C);
    const int cv = !(l2 == l2) || !(alpha == alpha);
    scratch_t s;
    size_t size[ET_REFIT_BLOCKS];
    uint8_t *base[ET_REFIT_BLOCKS] = { (uint8_t *)scratch[0], (uint8_t *)scratch[1], (uint8_t *)scratch[2] };
    layout(t, labels, n, cv, base, &s, size);
    et_layer_t l;
    et_tensor_t tin, tw, tb, to;
    et_model_layer(m, li, &l);
    et_model_tensor(m, l.input, &tin);
    et_model_tensor(m, l.weight, &tw);
    et_model_tensor(m, l.bias, &tb);
    et_model_tensor(m, m->output, &to);
    const int32_t zp = tin.zero_point;
    const float s_x = tin.scale;
    const int8_t *wq = (const int8_t *)tw.data;
    const int32_t *bq = (const int32_t *)tb.data;
    for (int32_t c = 0; c < C; ++c) {
        const float swf = tw.scales ? tw.scales[c] : tw.scale, sbf = tb.scales ? tb.scales[c] : tb.scale;
        s.sf[c] = s_x * swf;
        s.bf[c] = sbf * (float)bq[c];
    }
    const float *l2s = l2 == l2 ? &l2 : l2_grid;
    const float *alphas = alpha == alpha ? &alpha : alpha_grid;
    const int nl = l2 == l2 ? 1 : ET_REFIT_N_L2, na = alpha == alpha ? 1 : ET_REFIT_N_ALPHA;
    float l2v = l2s[0], av = alphas[0];
    res->cv = cv;
    res->cv_accuracy = 0.0f;
    if (cv) {
        memset(s.correct, 0, 4u * ET_REFIT_N_L2 * ET_REFIT_N_ALPHA);
        for (int32_t f = 0; f < ET_REFIT_FOLDS; ++f) {
            zero_stats(K, C, s.g, s.s1, s.b, s.cnt);
            memset(s.seen, 0, 4u * (size_t)C);
            int32_t n_tr = 0, n_te = 0;
            for (int32_t q = 0; q < n; ++q) {
                if (fold_of(labels[q], s.seen, s.ncls) != f) {
                    et_refit_accumulate(features(t, xs[q]), zp, K, labels[q], s.g, s.s1, s.b, s.cnt);
                    n_tr += 1;
                } else {
                    memcpy(s.hold + (size_t)n_te * K, features(t, xs[q]), (size_t)K);
                    s.hold_lab[n_te] = labels[q];
                    n_te += 1;
                }
            }
            if (n_tr == 0 || n_te == 0) {
                continue;
            }
            for (int il = 0; il < nl; ++il) {
                float gamma, delta;
                et_refit_solve(n_tr, K, C, s.g, s.s1, s.b, s.cnt, l2s[il], s.L, s.D, s.e, s.wr, s.ir);
                et_refit_terms(n_tr, K, C, s.g, s.s1, s.wr, wq, s.sf, s.bf, &gamma, &delta);
                for (int32_t q = 0; q < n_te; ++q) {
                    const int8_t *x = s.hold + (size_t)q * K;
                    et_refit_logits(x, zp, K, C, NULL, wq, s.sf, s.bf, s.zf);
                    et_refit_logits(x, zp, K, C, s.wr, NULL, NULL, s.ir, s.zr);
                    for (int ia = 0; ia < na; ++ia) {
                        const float a = alphas[ia], a1 = 1.0f - a, ga = a * gamma, ad = a * delta;
                        int32_t best = 0;
                        float zb = 0.0f;
                        for (int32_t c = 0; c < C; ++c) {
                            const float z = ((a1 * s.zf[c]) + (ga * s.zr[c])) + ad;
                            if (c == 0 || z > zb) {
                                zb = z;
                                best = c;
                            }
                        }
                        s.correct[ia * nl + il] += best == s.hold_lab[q];
                    }
                }
            }
        }
        int32_t best = -1;
        for (int ia = 0; ia < na; ++ia) {
            for (int il = 0; il < nl; ++il) {
                if (s.correct[ia * nl + il] > best) {
                    best = s.correct[ia * nl + il];
                    l2v = l2s[il];
                    av = alphas[ia];
                }
            }
        }
        res->cv_accuracy = (float)best / (float)n;
    }
    res->l2 = l2v;
    res->alpha = av;
    if (av == 0.0f) {
        et_train_classifier_flashed(t);
        return NULL;
    }
    et_refit_stats(t, xs, labels, n, s.g, s.s1, s.b, s.cnt);
    float gamma, delta;
    et_refit_solve(n, K, C, s.g, s.s1, s.b, s.cnt, l2v, s.L, s.D, s.e, s.wr, s.ir);
    et_refit_terms(n, K, C, s.g, s.s1, s.wr, wq, s.sf, s.bf, &gamma, &delta);
    const float a1 = 1.0f - av, ga = av * gamma, ad = av * delta;
    for (int32_t c = 0; c < C; ++c) {
        for (int32_t k = 0; k < K; ++k) {
            const size_t j = (size_t)c * K + k;
            const float v = (a1 * (s.sf[c] * (float)wq[j])) + (ga * s.wr[j]);
            if (!(v - v == 0.0f)) {
                return "refit: the solve gave non-finite weights (try a larger l2)";
            }
            s.wr[j] = v;
        }
        s.ir[c] = ((a1 * s.bf[c]) + (ga * s.ir[c])) + ad;
        if (!(s.ir[c] - s.ir[c] == 0.0f)) {
            return "refit: the solve gave non-finite weights (try a larger l2)";
        }
    }
    /* flashed scales for a channel whose refit weights are all 0 */
    float *swf = s.zf, *sbf = s.zr;
    for (int32_t c = 0; c < C; ++c) {
        swf[c] = tw.scales ? tw.scales[c] : tw.scale;
        sbf[c] = tb.scales ? tb.scales[c] : tb.scale;
    }
    const et_train_layer_t *tl = &t->layers[li];
    et_refit_requantize(K, C, s.wr, s.ir, s_x, to.scale, swf, sbf, (int8_t *)(t->arena + tl->wcopy),
        (int32_t *)(void *)(t->arena + tl->bias), et_train_q_sw(t), et_train_q_sb(t), et_train_q_mult(t),
        et_train_q_shift(t));
    const size_t count = (size_t)C + (size_t)C * K;
    memset(t->arena + tl->resid, 0, 2u * count);
    if (tl->mom) {
        memset(t->arena + tl->mom, 0, 4u * count);
    }
    et_train_qscale_changed(t);
    return NULL;
}
