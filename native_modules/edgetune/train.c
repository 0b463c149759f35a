/*
 * On-device training, the plan: validation of a scheme against the model and the arena layout
 * of docs/training.md §6 (host/edgetune/twin/memory.py predicts it to the byte), the batch region,
 * and init/reset of the trainable parameters. The forward walker is forward.c, the backward
 * pass and update backward.c, the trained-weights file train_state.c; the arithmetic lives in
 * the kernels (kernels/et_*_grad*.c, et_update.c).
 */
#include <string.h>

#include "train.h"
#include "train_util.h"
#include "et_err.h"
#include "kernels/et_kernels.h"
#include "kernels/et_train_kernels.h"

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
            return et_fail(err, err_len, "layer %u: %u output channels; training handles at most 32767", i,
                (unsigned)tl->c_out);
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
                const float s = et_scale_of(&tw, c);
                if (!et_finite_pos(s)) {
                    return et_fail(err, err_len, "layer %u: weight scale of channel %u is not a positive number", i, c);
                }
                mx = s > mx ? s : mx;
            }
            tl->s_wmax = mx;
            if (tl->s.flags & ET_SCHEME_BIAS) {
                et_tensor_t tb;
                et_model_tensor(m, l.bias, &tb);
                for (unsigned c = 0; c < tl->c_out; ++c) {
                    if (!et_finite_pos(et_scale_of(&tb, c))) {
                        return et_fail(err, err_len, "layer %u: bias scale of channel %u is not a positive number", i, c);
                    }
                }
            }
            if (tl->s.flags & ET_SCHEME_WEIGHTS) {
                et_tensor_t tx;
                et_model_tensor(m, l.input, &tx);
                if (!et_finite_pos(tx.scale)) {
                    return et_fail(err, err_len, "layer %u: input scale is not a positive number", i);
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
            return et_fail(err, err_len, "layer %u: its input gradient could overflow int32 (train fewer layers)", i);
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
    size_t pp = et_align4(2 * et_train_chain_elems(m, (unsigned)t->first + 1));
    for (unsigned j = (unsigned)t->first + 1; j < n_layers; ++j) {
        const size_t pair = et_align4(2 * et_train_chain_elems(m, j)) + et_align4(2 * et_train_chain_elems(m, j + 1));
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
        const size_t e = et_train_chain_elems(m, i + 1);
        if ((int)i > t->first && e > hmax) {
            hmax = e;
        }
        cmax = layers[i].c_out > cmax ? layers[i].c_out : cmax;
    }
    size_t work = pp + et_align4(2 * hmax);
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
            off += et_align4(et_train_chain_elems(m, i));
        }
        tl->has_argmax = l.op == ET_OP_MAX_POOL_2D && (int)i > t->first;
        if (tl->has_argmax) {
            tl->argmax_bits = et_max_pool_argmax_bits(l.filter_h, l.filter_w);
            tl->argmax = (uint32_t)off;
            off += et_align4((et_train_chain_elems(m, i + 1) * tl->argmax_bits + 7) / 8);
        }
        tl->mask = (uint32_t)off;
        off += et_align4((et_train_chain_elems(m, i + 1) + 7) / 8);
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
            off += et_align4(4u * tl->c_out);
            count += tl->c_out;
        }
        if (tl->s.flags & ET_SCHEME_WEIGHTS) {
            tl->map = (uint32_t)off;
            off += et_align4(2u * tl->c_out);
            tl->wcopy = (uint32_t)off;
            off += et_align4((size_t)tl->s.n_sel * tl->per_channel);
            count += (size_t)tl->s.n_sel * tl->per_channel;
        }
        tl->resid = (uint32_t)off;
        off += et_align4(2 * count);
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
    et_train_touch(t, t->params_off + t->params_size);
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
                et_train_touch(t, 4u * tl->c_out);
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
        sw[c] = et_scale_of(&tw, c);
        sb[c] = et_scale_of(&tb, c);
        mult[c] = l.multipliers[c];
        shift[c] = l.shifts[c];
    }
    et_train_touch(t, t->qscale_off + 16u * tl->c_out);
    et_train_qscale_changed(t);
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
