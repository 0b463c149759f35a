/*
 * The forward walker (docs/training.md §2): the one pass over the layer chain, for inference
 * (nothing trains, or save == 0: predict, evaluate, refit's features) and for training (save
 * != 0 keeps the masks, input copies and arg-max indices the backward pass needs). Trained
 * layers read their parameters from the arena; everything else from the model buffer. Each
 * layer runs through the op table (et_ops.c) to its forward function below.
 */
#include <string.h>

#include "train.h"
#include "train_util.h"
#include "et_ops.h"
#include "kernels/et_kernels.h"
#include "kernels/et_train_kernels.h"

/* ---------------------------------------------------------------------------------------- */
/* The ops' forward functions (et_ops.c's table dispatches to them)                          */
/* ---------------------------------------------------------------------------------------- */

/* CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED: trained channels read their RAM copy. */
void et_forward_weights(const et_fwd_t *f) {
    const et_model_t *m = f->t->m;
    uint8_t *arena = f->t->arena;
    const et_train_layer_t *tl = f->tl;
    const et_layer_t *l = f->l;
    et_tensor_t tw;
    et_dims_t dw;
    et_model_tensor(m, l->weight, &tw);
    et_dims_of(&tw, &dw);
    const int32_t *bias = NULL;
    if (f->trained && (tl->s.flags & ET_SCHEME_BIAS)) {
        bias = (const int32_t *)(const void *)(arena + tl->bias);
    } else if (l->bias != ET_NONE) {
        et_tensor_t tb;
        et_model_tensor(m, l->bias, &tb);
        bias = (const int32_t *)tb.data;
    }
    const int16_t *map = f->trained && (tl->s.flags & ET_SCHEME_WEIGHTS)
        ? (const int16_t *)(const void *)(arena + tl->map) : NULL;
    const int8_t *copy = (const int8_t *)(arena + tl->wcopy);
    if (l->op == ET_OP_FULLY_CONNECTED) {
        const et_fc_params_t p = { l->input_offset, l->output_offset, l->act_min, l->act_max };
        /* trained channels read their RAM copy, in the same 4-channel passes */
        et_fully_connected_rows_s8(&p, f->q, 1, (int32_t)f->n_in, f->x, dw.n, (const int8_t *)tw.data, map, copy,
            bias, f->y);
        return;
    }
    const et_conv_params_t p = {
        l->input_offset, l->output_offset, l->stride_h, l->stride_w, l->pad_h, l->pad_w,
        l->depth_multiplier, l->act_min, l->act_max,
    };
    if (l->op == ET_OP_CONV_2D) {
        et_conv_rows_s8(&p, f->q, f->din, f->x, &dw, (const int8_t *)tw.data, map, copy, bias, f->dout, f->y);
        return;
    }
    /* depthwise: the flash weights interleave channels, so trained channels are redone */
    et_depthwise_conv_s8(&p, f->q, f->din, f->x, &dw, (const int8_t *)tw.data, bias, f->dout, f->y);
    for (unsigned c = 0; map && c < tl->c_out; ++c) {
        if (map[c] >= 0) {
            et_depthwise_conv_channel_s8(&p, f->q, f->din, f->x, &dw, copy + (size_t)map[c] * tl->per_channel, bias,
                f->dout, f->y, (int32_t)c);
        }
    }
}

/* MAX_POOL_2D, AVERAGE_POOL_2D; a max pool above the first trained layer keeps its arg-max. */
void et_forward_pool(const et_fwd_t *f) {
    const et_layer_t *l = f->l;
    const et_pool_params_t p = {
        l->stride_h, l->stride_w, l->pad_h, l->pad_w, l->filter_h, l->filter_w, l->act_min, l->act_max,
    };
    (l->op == ET_OP_MAX_POOL_2D ? et_max_pool_s8 : et_avg_pool_s8)(&p, f->din, f->x, f->dout, f->y);
    if (f->saving && f->tl->has_argmax) {
        et_max_pool_argmax_s8(&p, f->din, f->x, f->dout, f->tl->argmax_bits, f->t->arena + f->tl->argmax);
        et_train_touch(f->t, f->tl->argmax + (f->n_out * f->tl->argmax_bits + 7) / 8);
    }
}

/* MEAN over height and width. */
void et_forward_mean(const et_fwd_t *f) {
    const et_layer_t *l = f->l;
    const et_mean_params_t p = {
        l->input_offset, l->output_offset, l->multipliers[0], l->shifts[0], l->act_min, l->act_max,
    };
    et_mean_s8(&p, f->din, f->x, f->y);
}

/* ---------------------------------------------------------------------------------------- */
/* The walker (docs/training.md §2)                                                          */
/* ---------------------------------------------------------------------------------------- */

const int8_t *et_train_forward(et_train_t *t, const int8_t *input, int save) {
    const et_model_t *m = t->m;
    uint8_t *arena = t->arena;
    memcpy(arena + et_model_chain_offset(m, 0), input, et_model_input_size(m));
    et_train_touch(t, et_model_chain_offset(m, 0) + et_model_input_size(m));
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
        et_dims_of(&tin, &din);
        et_dims_of(&tout, &dout);
        const size_t n_in = et_tensor_elems(&tin), n_out = et_tensor_elems(&tout);
        const int8_t *x = (const int8_t *)(arena + et_model_chain_offset(m, i));
        int8_t *y = (int8_t *)(arena + et_model_chain_offset(m, i + 1));
        if (saving && tl->has_saved_in) {
            memcpy(arena + tl->saved_in, x, n_in);
        }
        const et_per_channel_quant_t q = (int)i == t->refit_layer /* the classifier's own (§6.3) */
            ? (et_per_channel_quant_t){ et_train_q_mult(t), et_train_q_shift(t) }
            : (et_per_channel_quant_t){ l.multipliers, l.shifts };
        const et_fwd_t f = { t, tl, &l, &din, &dout, &q, x, y, n_in, n_out, trained, saving };
        et_op(l.op)->forward(&f);
        et_train_touch(t, et_model_chain_offset(m, i + 1) + n_out);
        if (saving) {
            et_relu_mask_s8(y, (int32_t)n_out, l.act_min, l.act_max, arena + tl->mask);
            et_train_touch(t, tl->mask + (n_out + 7) / 8);
            if (tl->has_saved_in) {
                et_train_touch(t, tl->saved_in + n_in);
            }
        }
    }
    return (const int8_t *)(arena + et_model_chain_offset(m, m->n_layers));
}
