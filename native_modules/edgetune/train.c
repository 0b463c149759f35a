/*
 * On-device training: plan, forward with saving, backward, update and the
 * trained-weights file (docs/training.md). The arithmetic lives in the
 * kernels (kernels/et_*_grad*.c, et_update.c); this file walks the chain and
 * owns the arena layout of docs/training.md §6, which host/edgetune/twin/memory.py
 * predicts to the byte.
 */
#include <stdio.h>
#include <string.h>

#include "train.h"
#include "kernels/et_kernels.h"
#include "kernels/et_mathf.h"
#include "kernels/et_train_kernels.h"

static size_t a4(size_t n) {
    return (n + 3u) & ~(size_t)3u;
}

static void dims_of(const et_tensor_t *t, et_dims_t *d) {
    d->n = t->shape[0];
    d->h = t->shape[1];
    d->w = t->shape[2];
    d->c = t->shape[3];
}

static size_t chain_elems(const et_model_t *m, unsigned i) {
    et_tensor_t t;
    et_model_tensor(m, et_model_chain_tensor(m, i), &t);
    return et_tensor_elems(&t);
}

/* Record that the arena was written up to byte `end` (counted in 4-byte slots, the
 * granularity of the layout, so a full plan reports exactly its size). */
static void touch(et_train_t *t, size_t end) {
    end = a4(end);
    if (end > t->peak) {
        t->peak = end;
    }
}

static int finite_pos(float v) {
    return v > 0.0f && v <= 3.4028235e38f;
}

/* Scale of channel c of a per-channel or per-tensor quantized tensor. */
static float scale_of(const et_tensor_t *t, unsigned c) {
    return t->scales ? t->scales[c] : t->scale;
}

static void wr16(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void wr32(uint8_t *p, uint32_t v) {
    wr16(p, v & 0xffffu);
    wr16(p + 2, v >> 16);
}

static uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

/* ---------------------------------------------------------------------------------------- */
/* Plan                                                                                      */
/* ---------------------------------------------------------------------------------------- */

const char *et_train_plan(et_train_t *t, const et_model_t *m, et_train_layer_t *layers, float momentum,
    char *err, size_t err_len) {
    const unsigned n_layers = m->n_layers;
    memset(t, 0, sizeof(*t));
    t->m = m;
    t->layers = layers;
    t->first = -1;
    t->refit_layer = -1;
    t->momentum = momentum;
    for (unsigned i = 0; i < n_layers; ++i) {
        et_train_layer_t *tl = &layers[i];
        et_layer_t l;
        et_model_layer(m, i, &l);
        tl->c_out = 0;
        tl->per_channel = 0;
        tl->s_wmax = 0.0f;
        tl->saved_in = tl->argmax = tl->mask = tl->bias = tl->map = tl->wcopy = tl->resid = tl->mom = tl->acc = 0;
        tl->has_saved_in = tl->has_argmax = tl->argmax_bits = 0;
        if (et_scheme_is_weight_op(l.op)) {
            et_tensor_t tw;
            et_model_tensor(m, l.weight, &tw);
            tl->c_out = l.op == ET_OP_DEPTHWISE_CONV_2D ? tw.shape[3] : tw.shape[0];
            tl->per_channel = (uint32_t)(et_tensor_elems(&tw) / tl->c_out);
        }
        if ((tl->s.flags & ET_SCHEME_WEIGHTS) && tl->c_out > 32767) { /* the channel map: int16 channel numbers */
            snprintf(err, err_len, "layer %u: %u output channels; training handles at most 32767", i,
                (unsigned)tl->c_out);
            return err;
        }
        if (tl->s.flags && t->first < 0) {
            t->first = (int)i;
        }
    }
    const size_t inference = m->arena_size;
    t->arena_size = t->work_size = inference;
    if (t->first < 0) {
        return NULL;
    }
    /* Scales and accumulator bounds (docs/training.md §4b). */
    for (unsigned i = (unsigned)t->first; i < n_layers; ++i) {
        et_train_layer_t *tl = &layers[i];
        et_layer_t l;
        et_model_layer(m, i, &l);
        const int64_t lim = (int64_t)1 << 31;
        int64_t bound = 0;
        if (et_scheme_is_weight_op(l.op)) {
            et_tensor_t tw;
            et_model_tensor(m, l.weight, &tw);
            float mx = 0.0f;
            for (unsigned c = 0; c < tl->c_out; ++c) {
                const float s = scale_of(&tw, c);
                if (!finite_pos(s)) {
                    snprintf(err, err_len, "layer %u: weight scale of channel %u is not a positive number", i, c);
                    return err;
                }
                mx = s > mx ? s : mx;
            }
            tl->s_wmax = mx;
            if (tl->s.flags & ET_SCHEME_BIAS) {
                et_tensor_t tb;
                et_model_tensor(m, l.bias, &tb);
                for (unsigned c = 0; c < tl->c_out; ++c) {
                    if (!finite_pos(scale_of(&tb, c))) {
                        snprintf(err, err_len, "layer %u: bias scale of channel %u is not a positive number", i, c);
                        return err;
                    }
                }
            }
            if (tl->s.flags & ET_SCHEME_WEIGHTS) {
                et_tensor_t tx;
                et_model_tensor(m, l.input, &tx);
                if (!finite_pos(tx.scale)) {
                    snprintf(err, err_len, "layer %u: input scale is not a positive number", i);
                    return err;
                }
            }
            const int64_t taps = l.op == ET_OP_FULLY_CONNECTED ? 1 : (int64_t)tw.shape[1] * tw.shape[2];
            const int64_t fan = l.op == ET_OP_DEPTHWISE_CONV_2D ? (int64_t)l.depth_multiplier * taps
                : (int64_t)tl->c_out * taps;
            bound = 32768 * 128 * fan; /* |g| <= 32768 (int16), |w| <= 128 (a flashed -128) */
        } else if (l.op == ET_OP_AVERAGE_POOL_2D) {
            bound = (int64_t)32768 * 1024 * l.filter_h * l.filter_w;
        } else if (l.op == ET_OP_MAX_POOL_2D) {
            bound = (int64_t)32768 * l.filter_h * l.filter_w;
        }
        if ((int)i > t->first && bound >= lim) {
            snprintf(err, err_len, "layer %u: its input gradient could overflow int32 (train fewer layers)", i);
            return err;
        }
    }
    {
        et_tensor_t to;
        et_model_tensor(m, m->output, &to);
        if (!(to.scale >= 0.0f && to.scale <= 3.4028235e38f)) {
            return "the output scale is not a finite number";
        }
    }
    /* Layout (docs/training.md §6). */
    /* Backward ping-pong (§6.1): the int16 gradient of t_j gets a slot of align4(2 size(t_j))
     * bytes at offset 0 ((L - j) even) or flush against `grad_pp` ((L - j) odd). */
    size_t pp = a4(2 * chain_elems(m, (unsigned)t->first + 1));
    for (unsigned j = (unsigned)t->first + 1; j < n_layers; ++j) {
        const size_t pair = a4(2 * chain_elems(m, j)) + a4(2 * chain_elems(m, j + 1));
        pp = pair > pp ? pair : pp;
    }
    t->grad_pp = pp;
    /* The fold buffer h at offset grad_pp: only layers above `first` that train weights need
     * their output gradient after the transposed op (4e); the others fold in place. */
    size_t hmax = 0, cmax = 0;
    for (unsigned i = (unsigned)t->first; i < n_layers; ++i) {
        if (!(layers[i].s.flags & ET_SCHEME_WEIGHTS)) {
            continue;
        }
        const size_t e = chain_elems(m, i + 1);
        if ((int)i > t->first && e > hmax) {
            hmax = e;
        }
        cmax = layers[i].c_out > cmax ? layers[i].c_out : cmax;
    }
    size_t work = pp + a4(2 * hmax);
    work = 4 * cmax > work ? 4 * cmax : work; /* l1 channel selection at init (et_train_init) */
    t->work_size = inference > work ? inference : work;
    size_t off = t->work_size;
    for (unsigned i = (unsigned)t->first; i < n_layers; ++i) {
        et_train_layer_t *tl = &layers[i];
        et_layer_t l;
        et_model_layer(m, i, &l);
        tl->has_saved_in = (tl->s.flags & ET_SCHEME_WEIGHTS) != 0;
        if (tl->has_saved_in) {
            tl->saved_in = (uint32_t)off;
            off += a4(chain_elems(m, i));
        }
        tl->has_argmax = l.op == ET_OP_MAX_POOL_2D && (int)i > t->first;
        if (tl->has_argmax) {
            tl->argmax_bits = et_max_pool_argmax_bits(l.filter_h, l.filter_w);
            tl->argmax = (uint32_t)off;
            off += a4((chain_elems(m, i + 1) * tl->argmax_bits + 7) / 8);
        }
        tl->mask = (uint32_t)off;
        off += a4((chain_elems(m, i + 1) + 7) / 8);
    }
    t->params_off = off;
    uint32_t n_trainable = 0;
    for (unsigned i = (unsigned)t->first; i < n_layers; ++i) {
        et_train_layer_t *tl = &layers[i];
        if (!tl->s.flags) {
            continue;
        }
        size_t count = 0;
        if (tl->s.flags & ET_SCHEME_BIAS) {
            tl->bias = (uint32_t)off;
            off += a4(4u * tl->c_out);
            count += tl->c_out;
        }
        if (tl->s.flags & ET_SCHEME_WEIGHTS) {
            tl->map = (uint32_t)off;
            off += a4(2u * tl->c_out);
            tl->wcopy = (uint32_t)off;
            off += a4((size_t)tl->s.n_sel * tl->per_channel);
            count += (size_t)tl->s.n_sel * tl->per_channel;
        }
        tl->resid = (uint32_t)off;
        off += a4(2 * count);
        if (momentum != 0.0f) {
            tl->mom = (uint32_t)off;
            off += 4 * count;
        }
        n_trainable += (uint32_t)count;
    }
    t->refit_layer = -1;
    {   /* the classifier-quantization item (§6.3): a FULLY_CONNECTED last layer with a bias whose
         * bias and all weights train (the layer a refit, §9, rewrites) */
        const unsigned last = n_layers - 1;
        et_layer_t l;
        et_model_layer(m, last, &l);
        const et_train_layer_t *tl = &layers[last];
        if (l.op == ET_OP_FULLY_CONNECTED && l.bias != ET_NONE && tl->s.flags == (ET_SCHEME_BIAS | ET_SCHEME_WEIGHTS)
            && tl->s.n_sel == tl->c_out) {
            t->refit_layer = (int)last;
            t->qscale_off = off;
            off += 16u * tl->c_out;
        }
    }
    t->params_size = off - t->params_off;
    t->loss_off = off;
    off += 4 * et_model_output_size(m);
    t->arena_size = off;
    t->n_trainable = n_trainable;
    return NULL;
}

/* ---------------------------------------------------------------------------------------- */
/* Init / reset                                                                              */
/* ---------------------------------------------------------------------------------------- */

void et_train_init(et_train_t *t, uint8_t *arena) {
    const et_model_t *m = t->m;
    t->arena = arena;
    if (t->first < 0) {
        return;
    }
    memset(arena + t->params_off, 0, t->params_size);
    touch(t, t->params_off + t->params_size);
    for (unsigned i = (unsigned)t->first; i < m->n_layers; ++i) {
        et_train_layer_t *tl = &t->layers[i];
        et_layer_t l;
        et_model_layer(m, i, &l);
        if (tl->s.flags & ET_SCHEME_BIAS) {
            et_tensor_t tb;
            et_model_tensor(m, l.bias, &tb);
            memcpy(arena + tl->bias, tb.data, 4u * tl->c_out);
        }
        if (tl->s.flags & ET_SCHEME_WEIGHTS) {
            int16_t *map = (int16_t *)(void *)(arena + tl->map);
            if (tl->s.channels) {
                for (unsigned c = 0; c < tl->c_out; ++c) {
                    map[c] = -1;
                }
                for (unsigned k = 0; k < tl->s.n_sel; ++k) {
                    map[tl->s.channels[2 * k] | (tl->s.channels[2 * k + 1] << 8)] = (int16_t)k;
                }
            } else {
                /* The work region is free at init and holds C_out int32 of l1 sums (§6.1). */
                et_scheme_select_l1(m, i, tl->s.n_sel, map, (int32_t *)(void *)arena);
                touch(t, 4u * tl->c_out);
            }
            et_tensor_t tw;
            et_model_tensor(m, l.weight, &tw);
            const int8_t *w = (const int8_t *)tw.data;
            int8_t *copy = (int8_t *)(arena + tl->wcopy);
            for (unsigned c = 0; c < tl->c_out; ++c) {
                if (map[c] < 0) {
                    continue;
                }
                int8_t *dst = copy + (size_t)map[c] * tl->per_channel;
                for (uint32_t k = 0; k < tl->per_channel; ++k) {
                    dst[k] = l.op == ET_OP_DEPTHWISE_CONV_2D ? w[(size_t)k * tl->c_out + c]
                        : w[(size_t)c * tl->per_channel + k];
                }
            }
        }
    }
    if (t->refit_layer >= 0) {
        et_train_classifier_flashed(t);
    }
}

void et_train_qscale_changed(et_train_t *t) {
    et_train_layer_t *tl = &t->layers[t->refit_layer];
    const float *sw = et_train_q_sw(t);
    float mx = 0.0f;
    for (unsigned c = 0; c < tl->c_out; ++c) {
        mx = sw[c] > mx ? sw[c] : mx;
    }
    tl->s_wmax = mx;
}

void et_train_classifier_flashed(et_train_t *t) {
    const et_model_t *m = t->m;
    const unsigned i = (unsigned)t->refit_layer;
    const et_train_layer_t *tl = &t->layers[i];
    uint8_t *arena = t->arena;
    et_layer_t l;
    et_tensor_t tw, tb;
    et_model_layer(m, i, &l);
    et_model_tensor(m, l.weight, &tw);
    et_model_tensor(m, l.bias, &tb);
    const size_t n_w = (size_t)tl->c_out * tl->per_channel, count = tl->c_out + n_w;
    memcpy(arena + tl->bias, tb.data, 4u * tl->c_out);
    memcpy(arena + tl->wcopy, tw.data, n_w); /* all channels: slot c is channel c */
    memset(arena + tl->resid, 0, 2u * count);
    if (tl->mom) {
        memset(arena + tl->mom, 0, 4u * count);
    }
    float *sw = et_train_q_sw(t), *sb = et_train_q_sb(t);
    int32_t *mult = et_train_q_mult(t), *shift = et_train_q_shift(t);
    for (unsigned c = 0; c < tl->c_out; ++c) {
        sw[c] = scale_of(&tw, c);
        sb[c] = scale_of(&tb, c);
        mult[c] = l.multipliers[c];
        shift[c] = l.shifts[c];
    }
    touch(t, t->qscale_off + 16u * tl->c_out);
    et_train_qscale_changed(t);
}

/* ---------------------------------------------------------------------------------------- */
/* Forward with saving (docs/training.md §2)                                                 */
/* ---------------------------------------------------------------------------------------- */

const int8_t *et_train_forward(et_train_t *t, const int8_t *input, int save) {
    const et_model_t *m = t->m;
    uint8_t *arena = t->arena;
    memcpy(arena + et_model_chain_offset(m, 0), input, et_model_input_size(m));
    touch(t, et_model_chain_offset(m, 0) + et_model_input_size(m));
    for (unsigned i = 0; i < m->n_layers; ++i) {
        const et_train_layer_t *tl = &t->layers[i];
        const int trained = t->first >= 0 && (int)i >= t->first; /* may read RAM parameters */
        const int saving = trained && save;                        /* keeps what backward needs */
        et_layer_t l;
        et_tensor_t tin, tout;
        et_dims_t din, dout;
        et_model_layer(m, i, &l);
        et_model_tensor(m, l.input, &tin);
        et_model_tensor(m, l.output, &tout);
        dims_of(&tin, &din);
        dims_of(&tout, &dout);
        const size_t n_in = et_tensor_elems(&tin), n_out = et_tensor_elems(&tout);
        const int8_t *x = (const int8_t *)(arena + et_model_chain_offset(m, i));
        int8_t *y = (int8_t *)(arena + et_model_chain_offset(m, i + 1));
        if (saving && tl->has_saved_in) {
            memcpy(arena + tl->saved_in, x, n_in);
        }
        const et_per_channel_quant_t q = (int)i == t->refit_layer /* the classifier's own (§6.3) */
            ? (et_per_channel_quant_t){ et_train_q_mult(t), et_train_q_shift(t) }
            : (et_per_channel_quant_t){ l.multipliers, l.shifts };
        switch (l.op) {
            case ET_OP_CONV_2D:
            case ET_OP_DEPTHWISE_CONV_2D:
            case ET_OP_FULLY_CONNECTED: {
                et_tensor_t tw;
                et_dims_t dw;
                et_model_tensor(m, l.weight, &tw);
                dims_of(&tw, &dw);
                const int32_t *bias = NULL;
                if (trained && (tl->s.flags & ET_SCHEME_BIAS)) {
                    bias = (const int32_t *)(const void *)(arena + tl->bias);
                } else if (l.bias != ET_NONE) {
                    et_tensor_t tb;
                    et_model_tensor(m, l.bias, &tb);
                    bias = (const int32_t *)tb.data;
                }
                const int16_t *map = trained && (tl->s.flags & ET_SCHEME_WEIGHTS)
                    ? (const int16_t *)(const void *)(arena + tl->map) : NULL;
                const int8_t *copy = (const int8_t *)(arena + tl->wcopy);
                if (l.op == ET_OP_FULLY_CONNECTED) {
                    const et_fc_params_t p = { l.input_offset, l.output_offset, l.act_min, l.act_max };
                    /* trained channels read their RAM copy, in the same 4-channel passes */
                    et_fully_connected_rows_s8(&p, &q, 1, (int32_t)n_in, x, dw.n, (const int8_t *)tw.data, map,
                        copy, bias, y);
                    break;
                }
                const et_conv_params_t p = {
                    l.input_offset, l.output_offset, l.stride_h, l.stride_w, l.pad_h, l.pad_w,
                    l.depth_multiplier, l.act_min, l.act_max,
                };
                if (l.op == ET_OP_CONV_2D) {
                    et_conv_rows_s8(&p, &q, &din, x, &dw, (const int8_t *)tw.data, map, copy, bias, &dout, y);
                    break;
                }
                /* depthwise: the flash weights interleave channels, so trained channels are redone */
                et_depthwise_conv_s8(&p, &q, &din, x, &dw, (const int8_t *)tw.data, bias, &dout, y);
                for (unsigned c = 0; map && c < tl->c_out; ++c) {
                    if (map[c] >= 0) {
                        et_depthwise_conv_channel_s8(&p, &q, &din, x, &dw,
                            copy + (size_t)map[c] * tl->per_channel, bias, &dout, y, (int32_t)c);
                    }
                }
                break;
            }
            case ET_OP_MAX_POOL_2D:
            case ET_OP_AVERAGE_POOL_2D: {
                const et_pool_params_t p = {
                    l.stride_h, l.stride_w, l.pad_h, l.pad_w, l.filter_h, l.filter_w, l.act_min, l.act_max,
                };
                (l.op == ET_OP_MAX_POOL_2D ? et_max_pool_s8 : et_avg_pool_s8)(&p, &din, x, &dout, y);
                if (saving && tl->has_argmax) {
                    et_max_pool_argmax_s8(&p, &din, x, &dout, tl->argmax_bits, arena + tl->argmax);
                    touch(t, tl->argmax + (n_out * tl->argmax_bits + 7) / 8);
                }
                break;
            }
            case ET_OP_MEAN: {
                const et_mean_params_t p = {
                    l.input_offset, l.output_offset, l.multipliers[0], l.shifts[0], l.act_min, l.act_max,
                };
                et_mean_s8(&p, &din, x, y);
                break;
            }
            default:
                break;
        }
        touch(t, et_model_chain_offset(m, i + 1) + n_out);
        if (saving) {
            et_relu_mask_s8(y, (int32_t)n_out, l.act_min, l.act_max, arena + tl->mask);
            touch(t, tl->mask + (n_out + 7) / 8);
            if (tl->has_saved_in) {
                touch(t, tl->saved_in + n_in);
            }
        }
    }
    return (const int8_t *)(arena + et_model_chain_offset(m, m->n_layers));
}

/* ---------------------------------------------------------------------------------------- */
/* Backward and update (docs/training.md §4)                                                 */
/* ---------------------------------------------------------------------------------------- */

/* Byte offset of the int16 gradient of t_j in the backward ping-pong (docs/training.md §6.1). */
static size_t grad_offset(const et_train_t *t, unsigned j) {
    return ((t->m->n_layers - j) & 1u) ? t->grad_pp - a4(2 * chain_elems(t->m, j)) : 0;
}

/* Steps 4d-4g for layer i with its (masked) output gradient g at scale s_g. */
static void update_layer(et_train_t *t, unsigned i, const int16_t *g, float s_g, float lr, int qas) {
    const et_model_t *m = t->m;
    const et_train_layer_t *tl = &t->layers[i];
    uint8_t *arena = t->arena;
    if (!tl->s.flags) {
        return;
    }
    et_layer_t l;
    et_tensor_t tin, tout;
    et_model_layer(m, i, &l);
    et_model_tensor(m, l.input, &tin);
    et_model_tensor(m, l.output, &tout);
    const int32_t c_out = tl->c_out;
    const int32_t positions = (int32_t)(et_tensor_elems(&tout) / (size_t)c_out);
    const float beta = t->momentum;
    int16_t *resid = (int16_t *)(void *)(arena + tl->resid);
    float *mom = tl->mom ? (float *)(void *)(arena + tl->mom) : NULL;
    float *acc = t->accumulate ? (float *)(void *)(arena + tl->acc) : NULL;
    const float base = (-lr) * s_g;
    int32_t roff = 0;
    if (tl->s.flags & ET_SCHEME_BIAS) {
        et_tensor_t tb;
        et_model_tensor(m, l.bias, &tb);
        int32_t *b = (int32_t *)(void *)(arena + tl->bias);
        for (int32_t c = 0; c < c_out; ++c) {
            const int64_t sum = et_bias_grad_s16(g, positions, c_out, c);
            const float f = et_update_factor(base, (int)i == t->refit_layer ? et_train_q_sb(t)[c]
                : scale_of(&tb, (unsigned)c), qas);
            if (acc) {
                acc[c] = et_update_accumulate(acc[c], f, sum);
                continue;
            }
            const int32_t n = et_update_step(f, sum, beta, mom ? mom + c : NULL, resid + c);
            b[c] = et_update_apply_s32(b[c], n);
        }
        roff = c_out;
    }
    if (tl->s.flags & ET_SCHEME_WEIGHTS) {
        et_tensor_t tw;
        et_dims_t din, dout, dw;
        et_model_tensor(m, l.weight, &tw);
        dims_of(&tin, &din);
        dims_of(&tout, &dout);
        dims_of(&tw, &dw);
        const et_conv_params_t p = {
            l.input_offset, l.output_offset, l.stride_h, l.stride_w, l.pad_h, l.pad_w,
            l.depth_multiplier, l.act_min, l.act_max,
        };
        const int8_t *x = (const int8_t *)(arena + tl->saved_in);
        const int16_t *map = (const int16_t *)(const void *)(arena + tl->map);
        int8_t *copy = (int8_t *)(arena + tl->wcopy);
        const float base_w = base * tin.scale;
        const uint32_t pc = tl->per_channel;
        for (int32_t c = 0; c < c_out; ++c) {
            if (map[c] < 0) {
                continue;
            }
            const float f = et_update_factor(base_w, (int)i == t->refit_layer ? et_train_q_sw(t)[c]
                : scale_of(&tw, (unsigned)c), qas);
            const size_t s0 = (size_t)map[c] * pc;
            int8_t *w = copy + s0;
            for (uint32_t k = 0; k < pc; ++k) {
                int64_t a;
                if (l.op == ET_OP_FULLY_CONNECTED) {
                    a = (int64_t)g[c] * ((int32_t)x[k] + l.input_offset);
                } else if (l.op == ET_OP_CONV_2D) {
                    a = et_conv_weight_grad_s8(&p, &din, x, &dw, &dout, g, c, (int32_t)k);
                } else {
                    a = et_depthwise_conv_weight_grad_s8(&p, &din, x, &dw, &dout, g, c, (int32_t)k);
                }
                const size_t idx = (size_t)roff + s0 + k;
                if (acc) {
                    acc[idx] = et_update_accumulate(acc[idx], f, a);
                    continue;
                }
                const int32_t n = et_update_step(f, a, beta, mom ? mom + idx : NULL, resid + idx);
                w[k] = et_update_apply_s8(w[k], n);
            }
        }
    }
}

float et_train_step(et_train_t *t, const int8_t *input, int32_t label, float lr, int qas) {
    const et_model_t *m = t->m;
    uint8_t *arena = t->arena;
    const int8_t *y = et_train_forward(t, input, 1);
    et_tensor_t to;
    et_model_tensor(m, m->output, &to);
    const int32_t n_classes = (int32_t)et_model_output_size(m);
    if (t->first < 0) {
        return et_softmax_xent_loss_f32(y, n_classes, to.scale, to.zero_point, label);
    }
    float s_g = 0.0f;
    const float loss = et_softmax_xent_f32(y, n_classes, to.scale, to.zero_point, label,
        (float *)(void *)(arena + t->loss_off), (int16_t *)(void *)arena, &s_g);
    touch(t, t->loss_off + 4u * (size_t)n_classes);
    if (s_g == 0.0f) {
        return loss;
    }
    touch(t, 2u * (size_t)n_classes);
    const unsigned n_layers = m->n_layers;
    int16_t *fold = (int16_t *)(void *)(arena + t->grad_pp);
    for (int i = (int)n_layers - 1; i >= t->first; --i) {
        const et_train_layer_t *tl = &t->layers[i];
        uint8_t *cur = arena + grad_offset(t, (unsigned)i + 1);
        uint8_t *nxt = i > t->first ? arena + grad_offset(t, (unsigned)i) : arena; /* written by 4b only */
        int16_t *g = (int16_t *)(void *)cur;
        et_layer_t l;
        et_tensor_t tin, tout;
        et_dims_t din, dout;
        et_model_layer(m, (unsigned)i, &l);
        et_model_tensor(m, l.input, &tin);
        et_model_tensor(m, l.output, &tout);
        dims_of(&tin, &din);
        dims_of(&tout, &dout);
        const size_t n_in = et_tensor_elems(&tin), n_out = et_tensor_elems(&tout);
        if (i < (int)n_layers - 1) { /* the logits' mask is saved but not applied (§3) */
            et_relu_grad_s16(g, (int32_t)n_out, arena + tl->mask);
        }
        float s_next = 0.0f;
        int updated = 0;
        if (i > t->first) {
            int16_t *out = (int16_t *)(void *)nxt;
            float s_acc = s_g;
            int64_t big = 0;
            switch (l.op) {
                case ET_OP_CONV_2D:
                case ET_OP_DEPTHWISE_CONV_2D:
                case ET_OP_FULLY_CONNECTED: {
                    et_tensor_t tw;
                    et_dims_t dw;
                    et_model_tensor(m, l.weight, &tw);
                    dims_of(&tw, &dw);
                    int16_t *h = fold;
                    if (!(tl->s.flags & ET_SCHEME_WEIGHTS)) {
                        /* g is not needed after 4b: its bias update (4b does not read biases)
                         * comes first, then h overwrites g. */
                        update_layer(t, (unsigned)i, g, s_g, lr, qas);
                        updated = 1;
                        h = g;
                    }
                    et_grad_fold_s16(g, (int32_t)(n_out / tl->c_out), tl->c_out,
                        i == t->refit_layer ? et_train_q_sw(t) : tw.scales, tl->s_wmax, h);
                    touch(t, (size_t)((uint8_t *)h - arena) + 2 * n_out);
                    const et_weights_t wv = {
                        (const int8_t *)tw.data,
                        (tl->s.flags & ET_SCHEME_WEIGHTS) ? (const int16_t *)(const void *)(arena + tl->map) : NULL,
                        (const int8_t *)(arena + tl->wcopy), (int32_t)tl->per_channel,
                    };
                    const et_conv_params_t p = {
                        l.input_offset, l.output_offset, l.stride_h, l.stride_w, l.pad_h, l.pad_w,
                        l.depth_multiplier, l.act_min, l.act_max,
                    };
                    for (int pass = 0; pass < 2 && (pass == 0 || big != 0); ++pass) {
                        if (l.op == ET_OP_FULLY_CONNECTED) {
                            big = et_fully_connected_grad_s8(h, tl->c_out, (int32_t)n_in, &wv, big, out);
                        } else if (l.op == ET_OP_CONV_2D) {
                            big = et_conv_grad_s8(&p, &din, &dw, &wv, &dout, h, big, out);
                        } else {
                            big = et_depthwise_conv_grad_s8(&p, &din, &dw, &wv, &dout, h, big, out);
                        }
                    }
                    s_acc = s_g * tl->s_wmax;
                    break;
                }
                case ET_OP_MAX_POOL_2D:
                case ET_OP_AVERAGE_POOL_2D: {
                    const et_pool_params_t p = {
                        l.stride_h, l.stride_w, l.pad_h, l.pad_w, l.filter_h, l.filter_w, l.act_min, l.act_max,
                    };
                    for (int pass = 0; pass < 2 && (pass == 0 || big != 0); ++pass) {
                        if (l.op == ET_OP_MAX_POOL_2D) {
                            big = et_max_pool_grad_s8(&p, &din, arena + tl->argmax, tl->argmax_bits, &dout, g, big, out);
                        } else {
                            big = et_avg_pool_grad_s8(&p, &din, &dout, g, big, out);
                        }
                    }
                    if (l.op == ET_OP_AVERAGE_POOL_2D) {
                        s_acc = s_g / 1024.0f;
                    }
                    break;
                }
                case ET_OP_MEAN:
                default:
                    for (int pass = 0; pass < 2 && (pass == 0 || big != 0); ++pass) {
                        big = et_mean_grad_s8(&din, g, big, out);
                    }
                    s_acc = s_g / (float)(din.h * din.w);
                    break;
            }
            if (big != 0) { /* 4c: M == 0 stops the backward pass after this layer's updates */
                touch(t, (size_t)(nxt - arena) + 2 * n_in);
                s_next = et_grad_requant_scale(big, s_acc);
            }
        }
        if (!updated) {
            update_layer(t, (unsigned)i, g, s_g, lr, qas);
        }
        if (s_next == 0.0f) {
            break;
        }
        s_g = s_next;
    }
    return loss;
}


void et_train_plan_batch(et_train_t *t) {
    if (t->first < 0) {
        return;
    }
    size_t off = t->loss_off;
    t->batch_off = off;
    for (unsigned i = (unsigned)t->first; i < t->m->n_layers; ++i) {
        et_train_layer_t *tl = &t->layers[i];
        if (!tl->s.flags) {
            continue;
        }
        size_t count = (tl->s.flags & ET_SCHEME_BIAS) ? tl->c_out : 0;
        if (tl->s.flags & ET_SCHEME_WEIGHTS) {
            count += (size_t)tl->s.n_sel * tl->per_channel;
        }
        tl->acc = (uint32_t)off;
        off += 4 * count;
    }
    t->loss_off = off;
    t->arena_size = off + 4 * et_model_output_size(t->m);
}

/* Mini-batch end (docs/training.md §5): every trainable parameter gets
 * d = round_sat((acc / k) * 32768, 2^30), then 4f-4g once. */
static void batch_apply(et_train_t *t, int32_t k) {
    uint8_t *arena = t->arena;
    for (unsigned i = (unsigned)t->first; i < t->m->n_layers; ++i) {
        const et_train_layer_t *tl = &t->layers[i];
        if (!tl->s.flags) {
            continue;
        }
        int16_t *resid = (int16_t *)(void *)(arena + tl->resid);
        float *mom = tl->mom ? (float *)(void *)(arena + tl->mom) : NULL;
        const float *acc = (const float *)(const void *)(arena + tl->acc);
        size_t idx = 0;
        if (tl->s.flags & ET_SCHEME_BIAS) {
            int32_t *b = (int32_t *)(void *)(arena + tl->bias);
            for (unsigned c = 0; c < tl->c_out; ++c, ++idx) {
                const int32_t n = et_update_commit(et_update_batch_step(acc[idx], k), t->momentum,
                    mom ? mom + idx : NULL, resid + idx);
                b[c] = et_update_apply_s32(b[c], n);
            }
        }
        if (tl->s.flags & ET_SCHEME_WEIGHTS) {
            int8_t *w = (int8_t *)(arena + tl->wcopy);
            const size_t n_w = (size_t)tl->s.n_sel * tl->per_channel;
            for (size_t j = 0; j < n_w; ++j, ++idx) {
                const int32_t n = et_update_commit(et_update_batch_step(acc[idx], k), t->momentum,
                    mom ? mom + idx : NULL, resid + idx);
                w[j] = et_update_apply_s8(w[j], n);
            }
        }
    }
}

float et_train_batch(et_train_t *t, const int8_t *inputs, const int32_t *labels, int32_t k, float lr, int qas) {
    const size_t n_in = et_model_input_size(t->m);
    const int trains = t->first >= 0;
    if (trains) {
        memset(t->arena + t->batch_off, 0, 4u * t->n_trainable);
        touch(t, t->batch_off + 4u * t->n_trainable);
    }
    float total = 0.0f;
    t->accumulate = trains;
    for (int32_t s = 0; s < k; ++s) {
        const float loss = et_train_step(t, inputs + (size_t)s * n_in, labels[s], lr, qas);
        total = s == 0 ? loss : total + loss;
    }
    t->accumulate = 0;
    if (trains) {
        batch_apply(t, k);
        memset(t->arena + t->batch_off, 0, 4u * t->n_trainable);
    }
    return total / (float)k;
}

/* ---------------------------------------------------------------------------------------- */
/* Scheme CRC and the trained-weights file (docs/training.md §7)                             */
/* ---------------------------------------------------------------------------------------- */

uint32_t et_train_scheme_crc(const et_train_t *t) {
    const et_model_t *m = t->m;
    uint8_t b[8];
    unsigned n = 0;
    for (unsigned i = 0; i < m->n_layers; ++i) {
        n += t->layers[i].s.flags ? 1u : 0u;
    }
    wr16(b, ET_SCHEME_VERSION);
    wr16(b + 2, n);
    uint32_t crc = et_crc32(0, b, 4);
    for (unsigned i = 0; i < m->n_layers; ++i) {
        const et_train_layer_t *tl = &t->layers[i];
        if (!tl->s.flags) {
            continue;
        }
        wr16(b, i);
        b[2] = tl->s.flags;
        b[3] = 0;
        wr16(b + 4, tl->s.n_sel);
        wr16(b + 6, 0);
        crc = et_crc32(crc, b, 8);
        if (tl->s.flags & ET_SCHEME_WEIGHTS) {
            const int16_t *map = (const int16_t *)(const void *)(t->arena + tl->map);
            for (unsigned c = 0; c < tl->c_out; ++c) {
                if (map[c] >= 0) {
                    wr16(b, c);
                    crc = et_crc32(crc, b, 2);
                }
            }
            if (tl->s.n_sel & 1u) {
                wr16(b, 0);
                crc = et_crc32(crc, b, 2);
            }
        }
    }
    return crc;
}

size_t et_train_state_size(const et_train_t *t) {
    return ET_STATE_HEADER + t->params_size;
}

void et_train_state_header(const et_train_t *t, uint8_t *hdr) {
    et_train_state_header_tail(t, hdr, NULL, 0);
}

void et_train_state_header_tail(const et_train_t *t, uint8_t *hdr, const uint8_t *tail, size_t tail_len) {
    memcpy(hdr, ET_STATE_MAGIC, 4);
    wr16(hdr + 4, ET_STATE_VERSION);
    wr16(hdr + 6, ET_STATE_HEADER);
    wr32(hdr + 8, (uint32_t)(et_train_state_size(t) + tail_len));
    wr32(hdr + 16, rd32(t->m->buf + 12));
    wr32(hdr + 20, et_train_scheme_crc(t));
    wr32(hdr + 24, (uint32_t)t->params_size);
    wr32(hdr + 28, (t->momentum != 0.0f ? 1u : 0u) | (tail_len ? ET_STATE_FLAG_FRAME : 0u));
    uint32_t crc = et_crc32(0, hdr + 16, 16);
    crc = et_crc32(crc, t->arena + t->params_off, t->params_size);
    if (tail_len) {
        crc = et_crc32(crc, tail, tail_len);
    }
    wr32(hdr + 12, crc);
}

/* Weight k of layer i's RAM copy (slot k / per_channel) comes from a flashed weight of -128?
 * Training keeps weights in [-127, 127], but a flashed -128 it never touched stays (and is
 * saved as it is), so a file holding exactly that must load. */
static int flashed_minus_128(const et_train_t *t, unsigned i, size_t k) {
    const et_train_layer_t *tl = &t->layers[i];
    const int16_t *map = (const int16_t *)(const void *)(t->arena + tl->map);
    const size_t slot = k / tl->per_channel, kk = k % tl->per_channel;
    et_layer_t l;
    et_tensor_t tw;
    et_model_layer(t->m, i, &l);
    et_model_tensor(t->m, l.weight, &tw);
    const int8_t *w = (const int8_t *)tw.data;
    for (unsigned c = 0; c < tl->c_out; ++c) {
        if (map[c] == (int16_t)slot) {
            return (l.op == ET_OP_DEPTHWISE_CONV_2D ? w[kk * tl->c_out + c] : w[(size_t)c * tl->per_channel + kk]) == -128;
        }
    }
    return 0;
}

const char *et_train_state_check(const et_train_t *t, const uint8_t *buf, size_t len, char *err, size_t err_len) {
    if (len < ET_STATE_HEADER || memcmp(buf, ET_STATE_MAGIC, 4) != 0) {
        return "not a trained-weights file (magic)";
    }
    if ((buf[4] | (buf[5] << 8)) != ET_STATE_VERSION || (buf[6] | (buf[7] << 8)) != ET_STATE_HEADER) {
        return "trained-weights file version or header size not supported";
    }
    if (rd32(buf + 8) != len) {
        snprintf(err, err_len, "trained-weights file says %lu bytes but has %lu (truncated?)",
            (unsigned long)rd32(buf + 8), (unsigned long)len);
        return err;
    }
    if (et_crc32(0, buf + 16, len - 16) != rd32(buf + 12)) {
        return "trained-weights file CRC mismatch (corrupted)";
    }
    if (rd32(buf + 16) != rd32(t->m->buf + 12)) {
        return "trained-weights file belongs to another model (model CRC differs)";
    }
    if (rd32(buf + 20) != et_train_scheme_crc(t)) {
        return "trained-weights file was saved with another training scheme";
    }
    if ((rd32(buf + 28) & ~ET_STATE_FLAG_FRAME) != (t->momentum != 0.0f ? 1u : 0u)) {
        return "trained-weights file momentum flag (bit0; bit1 = frame, no other bits) differs from this model's momentum setting";
    }
    const size_t tail = (rd32(buf + 28) & ET_STATE_FLAG_FRAME) ? ET_STATE_FRAME_BYTES : 0u;
    if (rd32(buf + 24) != t->params_size || len != et_train_state_size(t) + tail) {
        return "trained-weights file has a different parameter size";
    }
    const uint8_t *params = buf + ET_STATE_HEADER - t->params_off; /* params + arena offset */
    for (unsigned i = t->first < 0 ? t->m->n_layers : (unsigned)t->first; i < t->m->n_layers; ++i) {
        const et_train_layer_t *tl = &t->layers[i];
        if (!tl->s.flags) {
            continue;
        }
        size_t count = (tl->s.flags & ET_SCHEME_BIAS) ? tl->c_out : 0;
        if (tl->s.flags & ET_SCHEME_WEIGHTS) {
            if (memcmp(params + tl->map, t->arena + tl->map, 2u * tl->c_out) != 0) {
                snprintf(err, err_len, "trained-weights file: channel map of layer %u differs from the scheme", i);
                return err;
            }
            const size_t n_w = (size_t)tl->s.n_sel * tl->per_channel;
            for (size_t k = 0; k < n_w; ++k) {
                if ((int8_t)params[tl->wcopy + k] == -128 && !flashed_minus_128(t, i, k)) {
                    snprintf(err, err_len, "trained-weights file: layer %u weight -128 outside [-127, 127]", i);
                    return err;
                }
            }
            count += n_w;
        }
        for (size_t k = 0; k < count; ++k) {
            const int16_t r = (int16_t)(params[tl->resid + 2 * k] | (params[tl->resid + 2 * k + 1] << 8));
            if (r < -16384 || r > 16383) {
                snprintf(err, err_len, "trained-weights file: layer %u residual outside [-16384, 16383]", i);
                return err;
            }
        }
        for (size_t k = 0; tl->mom && k < count; ++k) {
            const float v = et_f32_from_bits(rd32(params + tl->mom + 4 * k));
            if (!(v - v == 0.0f)) { /* NaN would freeze the parameter, +-inf pin it at +-127 */
                snprintf(err, err_len, "trained-weights file: layer %u momentum is not a finite number", i);
                return err;
            }
        }
    }
    if (t->refit_layer >= 0) {
        const unsigned c_out = t->layers[t->refit_layer].c_out;
        const uint8_t *q = params + t->qscale_off;
        for (unsigned k = 0; k < 2 * c_out; ++k) {
            const float v = et_f32_from_bits(rd32(q + 4 * k));
            if (!finite_pos(v)) {
                return "trained-weights file: classifier scales must be positive numbers";
            }
        }
        for (unsigned c = 0; c < c_out; ++c) {
            const int32_t mu = (int32_t)rd32(q + 8 * c_out + 4 * c), sh = (int32_t)rd32(q + 12 * c_out + 4 * c);
            if (mu < 0 || sh < -31 || sh > 30) {
                return "trained-weights file: classifier multiplier/shift out of range";
            }
        }
    }
    return NULL;
}

void et_train_state_load(et_train_t *t, const uint8_t *buf) {
    memcpy(t->arena + t->params_off, buf + ET_STATE_HEADER, t->params_size);
    touch(t, t->params_off + t->params_size);
    if (t->refit_layer >= 0) {
        et_train_qscale_changed(t);
    }
}
