/*
 * The backward pass and the update (docs/training.md §3-§5): loss gradient, per layer the
 * output-gradient fold, the transposed op into the int16 ping-pong of §6.1, and steps 4d-4g
 * on the trainable parameters; one sample (et_train_step) or a mini-batch (et_train_batch).
 */
#include <string.h>

#include "train.h"
#include "train_util.h"
#include "et_ops.h"
#include "kernels/et_kernels.h"
#include "kernels/et_train_kernels.h"

/* ---------------------------------------------------------------------------------------- */
/* Backward and update (docs/training.md §4)                                                 */
/* ---------------------------------------------------------------------------------------- */

/* Byte offset of the int16 gradient of t_j in the backward ping-pong (docs/training.md §6.1). */
static size_t grad_offset(const et_train_t *t, unsigned j) {
    return ((t->m->n_layers - j) & 1u) ? t->grad_pp - et_align4(2 * et_train_chain_elems(t->m, j)) : 0;
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
                : et_scale_of(&tb, (unsigned)c), qas);
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
        et_dims_of(&tin, &din);
        et_dims_of(&tout, &dout);
        et_dims_of(&tw, &dw);
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
                : et_scale_of(&tw, (unsigned)c), qas);
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

/* ---------------------------------------------------------------------------------------- */
/* The ops' input gradients, step 4b (et_ops.c's table dispatches to them)                   */
/* ---------------------------------------------------------------------------------------- */

/* The transposed op over the folded output gradient h. A layer whose weights do not train
 * updates its bias first (4b reads no bias), then folds in place over g. */
void et_input_grad_weights(et_bwd_t *b) {
    et_train_t *t = b->t;
    const et_model_t *m = t->m;
    uint8_t *arena = t->arena;
    const et_train_layer_t *tl = b->tl;
    const et_layer_t *l = b->l;
    et_tensor_t tw;
    et_dims_t dw;
    et_model_tensor(m, l->weight, &tw);
    et_dims_of(&tw, &dw);
    int16_t *h = b->fold;
    if (!(tl->s.flags & ET_SCHEME_WEIGHTS)) {
        /* g is not needed after 4b: its bias update (4b does not read biases)
         * comes first, then h overwrites g. */
        update_layer(t, (unsigned)b->i, b->g, b->s_g, b->lr, b->qas);
        b->updated = 1;
        h = b->g;
    }
    et_grad_fold_s16(b->g, (int32_t)(b->n_out / tl->c_out), tl->c_out,
        b->i == t->refit_layer ? et_train_q_sw(t) : tw.scales, tl->s_wmax, h);
    et_train_touch(t, (size_t)((uint8_t *)h - arena) + 2 * b->n_out);
    const et_weights_t wv = {
        (const int8_t *)tw.data,
        (tl->s.flags & ET_SCHEME_WEIGHTS) ? (const int16_t *)(const void *)(arena + tl->map) : NULL,
        (const int8_t *)(arena + tl->wcopy), (int32_t)tl->per_channel,
    };
    const et_conv_params_t p = {
        l->input_offset, l->output_offset, l->stride_h, l->stride_w, l->pad_h, l->pad_w,
        l->depth_multiplier, l->act_min, l->act_max,
    };
    int64_t big = 0;
    for (int pass = 0; pass < 2 && (pass == 0 || big != 0); ++pass) {
        if (l->op == ET_OP_FULLY_CONNECTED) {
            big = et_fully_connected_grad_s8(h, tl->c_out, (int32_t)b->n_in, &wv, big, b->out);
        } else if (l->op == ET_OP_CONV_2D) {
            big = et_conv_grad_s8(&p, b->din, &dw, &wv, b->dout, h, big, b->out);
        } else {
            big = et_depthwise_conv_grad_s8(&p, b->din, &dw, &wv, b->dout, h, big, b->out);
        }
    }
    b->big = big;
    b->s_acc = b->s_g * tl->s_wmax;
}

/* MAX_POOL_2D (through the saved arg-max) and AVERAGE_POOL_2D. */
void et_input_grad_pool(et_bwd_t *b) {
    const et_layer_t *l = b->l;
    const et_pool_params_t p = {
        l->stride_h, l->stride_w, l->pad_h, l->pad_w, l->filter_h, l->filter_w, l->act_min, l->act_max,
    };
    int64_t big = 0;
    for (int pass = 0; pass < 2 && (pass == 0 || big != 0); ++pass) {
        if (l->op == ET_OP_MAX_POOL_2D) {
            big = et_max_pool_grad_s8(&p, b->din, b->t->arena + b->tl->argmax, b->tl->argmax_bits, b->dout, b->g, big,
                b->out);
        } else {
            big = et_avg_pool_grad_s8(&p, b->din, b->dout, b->g, big, b->out);
        }
    }
    b->big = big;
    if (l->op == ET_OP_AVERAGE_POOL_2D) {
        b->s_acc = b->s_g / 1024.0f;
    }
}

/* MEAN: the gradient spread over height and width. */
void et_input_grad_mean(et_bwd_t *b) {
    int64_t big = 0;
    for (int pass = 0; pass < 2 && (pass == 0 || big != 0); ++pass) {
        big = et_mean_grad_s8(b->din, b->g, big, b->out);
    }
    b->big = big;
    b->s_acc = b->s_g / (float)(b->din->h * b->din->w);
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
    et_train_touch(t, t->loss_off + 4u * (size_t)n_classes);
    if (s_g == 0.0f) {
        return loss;
    }
    et_train_touch(t, 2u * (size_t)n_classes);
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
        et_dims_of(&tin, &din);
        et_dims_of(&tout, &dout);
        const size_t n_in = et_tensor_elems(&tin), n_out = et_tensor_elems(&tout);
        if (i < (int)n_layers - 1) { /* the logits' mask is saved but not applied (§3) */
            et_relu_grad_s16(g, (int32_t)n_out, arena + tl->mask);
        }
        float s_next = 0.0f;
        int updated = 0;
        if (i > t->first) {
            int16_t *out = (int16_t *)(void *)nxt;
            et_bwd_t b = { t, i, tl, &l, &din, &dout, g, fold, out, n_in, n_out, s_g, lr, qas, 0, s_g, 0 };
            et_op(l.op)->input_grad(&b); /* step 4b through the op table */
            updated = b.updated;
            if (b.big != 0) { /* 4c: M == 0 stops the backward pass after this layer's updates */
                et_train_touch(t, (size_t)(nxt - arena) + 2 * n_in);
                s_next = et_grad_requant_scale(b.big, b.s_acc);
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
        et_train_touch(t, t->batch_off + 4u * t->n_trainable);
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
