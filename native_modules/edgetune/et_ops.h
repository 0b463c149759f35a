/*
 * The op table: what the engine knows about each .etm op code (docs/etm-format.md, "Layer
 * record") in one place -- its name (error messages, Model.info()), which checks of
 * model.c apply to it, and how the forward walker (forward.c) and the backward pass
 * (backward.c) run it. Indexed by op code; et_op() maps an unknown code to entry 0 ("?",
 * no kind, no functions), which et_model_init() never lets through.
 *
 * Plain C99, no MicroPython types.
 */
#ifndef EDGETUNE_ET_OPS_H
#define EDGETUNE_ET_OPS_H

#include <stdint.h>

#include "train.h"

#define ET_OP_COUNT 7 /* op codes 1..6, entry 0 for anything else */

/* What kind of layer an op is (its checks and its training rules). */
enum {
    ET_OPK_WEIGHTS = 1u, /* a weight tensor (OHWI, depthwise 1HWC), multipliers per output channel */
    ET_OPK_WINDOW = 2u,  /* a sliding window: stride, filter and SAME/VALID padding are checked */
    ET_OPK_POOL = 4u,    /* a pool: keeps channels and zero point, no multipliers */
};

/* One layer of the forward walk (forward.c): x -> y with the layer's own or trained parameters. */
typedef struct {
    et_train_t *t;
    const et_train_layer_t *tl;
    const et_layer_t *l;
    const et_dims_t *din, *dout;
    const et_per_channel_quant_t *q; /* the layer's multipliers/shifts (the refit classifier's own) */
    const int8_t *x;
    int8_t *y;
    size_t n_in, n_out;
    int trained;                     /* at or above the first trained layer: may read the arena */
    int saving;                      /* training: keep what the backward pass needs */
} et_fwd_t;

/* One layer of the backward pass, step 4b (backward.c): the input gradient `out` of the masked
 * output gradient g at scale s_g; big (the largest magnitude, 0 stops the pass), the scale of
 * the accumulator s_acc and whether the layer's update already ran are the results. */
typedef struct {
    et_train_t *t;
    int i;
    const et_train_layer_t *tl;
    const et_layer_t *l;
    const et_dims_t *din, *dout;
    int16_t *g, *fold, *out;
    size_t n_in, n_out;
    float s_g, lr;
    int qas;
    int64_t big;    /* result */
    float s_acc;    /* result (in: s_g) */
    int updated;    /* result */
} et_bwd_t;

typedef struct {
    const char *name;                  /* "CONV_2D", ... as TFLite names them */
    uint8_t kind;                      /* ET_OPK_* */
    void (*forward)(const et_fwd_t *); /* forward.c */
    void (*input_grad)(et_bwd_t *);    /* backward.c */
} et_op_t;

/* The per-op functions the table points to. */
void et_forward_weights(const et_fwd_t *f);
void et_forward_pool(const et_fwd_t *f);
void et_forward_mean(const et_fwd_t *f);
void et_input_grad_weights(et_bwd_t *b);
void et_input_grad_pool(et_bwd_t *b);
void et_input_grad_mean(et_bwd_t *b);

/* The table entry of op code `op` (entry 0 for an unknown code). A function rather than an
 * exported array: the native .mpy's linker reaches another object's data only through a GOT. */
const et_op_t *et_op(unsigned op);

/* A weight layer (CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED)? */
static inline int et_op_has_weights(unsigned op) {
    return (et_op(op)->kind & ET_OPK_WEIGHTS) != 0;
}

#endif /* EDGETUNE_ET_OPS_H */
