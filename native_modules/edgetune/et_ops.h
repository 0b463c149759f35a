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

#include "model.h"

#define ET_OP_COUNT 7 /* op codes 1..6, entry 0 for anything else */

/* What kind of layer an op is (its checks and its training rules). */
enum {
    ET_OPK_WEIGHTS = 1u, /* a weight tensor (OHWI, depthwise 1HWC), multipliers per output channel */
    ET_OPK_WINDOW = 2u,  /* a sliding window: stride, filter and SAME/VALID padding are checked */
    ET_OPK_POOL = 4u,    /* a pool: keeps channels and zero point, no multipliers */
};

typedef struct {
    const char *name;  /* "CONV_2D", ... as TFLite names them */
    uint8_t kind;      /* ET_OPK_* */
} et_op_t;

/* The table entry of op code `op` (entry 0 for an unknown code). A function rather than an
 * exported array: the native .mpy's linker reaches another object's data only through a GOT. */
const et_op_t *et_op(unsigned op);

/* A weight layer (CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED)? */
static inline int et_op_has_weights(unsigned op) {
    return (et_op(op)->kind & ET_OPK_WEIGHTS) != 0;
}

#endif /* EDGETUNE_ET_OPS_H */
