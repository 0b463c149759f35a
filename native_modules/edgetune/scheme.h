/*
 * The training scheme: which biases and which output channels of which
 * weights train (docs/training.md §1). Parsed from the .etm scheme section or
 * built from (n_bias, [(layer, ratio denominator)]) with the l1 criterion.
 *
 * Plain C99, no MicroPython headers, no allocation: the caller provides one
 * et_scheme_layer_t per model layer.
 */
#ifndef EDGETUNE_SCHEME_H
#define EDGETUNE_SCHEME_H

#include <stddef.h>
#include <stdint.h>

#include "model.h"

#define ET_SCHEME_VERSION 1
#define ET_SCHEME_BIAS 1u    /* flags bit0: the layer's bias trains */
#define ET_SCHEME_WEIGHTS 2u /* flags bit1: n_sel output channels of its weights train */

/* The scheme entry of one layer (flags == 0: nothing of it trains). */
typedef struct {
    uint8_t flags;
    uint8_t den;             /* built scheme: ratio 1/den (1, 2, 4, 8); 0 = channels listed */
    uint16_t n_sel;          /* selected output channels (0 iff the weights bit is clear) */
    const uint8_t *channels; /* listed: n_sel little-endian u16 in the .etm, else NULL */
} et_scheme_layer_t;

/* Weight-layer op (CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED)? */
int et_scheme_is_weight_op(uint8_t op);

/*
 * Parse and validate the .etm scheme section (m->scheme_off != 0) into
 * s[0 .. n_layers). Returns NULL or a message, never NULL on failure (et_err.h).
 */
const char *et_scheme_parse(const et_model_t *m, et_scheme_layer_t *s, char *err, size_t err_len);

/*
 * Build a scheme: biases of the last n_bias weight layers (those that have a
 * bias), weight layers with den[i] != 0 (1, 2, 4 or 8; den == NULL: none),
 * and the classifier (last layer, if FULLY_CONNECTED: bias + all channels).
 * Returns NULL or a message, never NULL on failure (et_err.h).
 */
const char *et_scheme_build(const et_model_t *m, uint32_t n_bias, const uint8_t *den,
    et_scheme_layer_t *s, char *err, size_t err_len);

/* The default scheme: biases of all weight layers + the classifier's weights. */
void et_scheme_default(const et_model_t *m, et_scheme_layer_t *s);

/*
 * l1 channel selection for a built entry: the n_sel channels of layer `layer`
 * with the largest sum |w_q| (ties: lower index), ascending, written as
 * map[c] = slot or -1. scratch: C_out int32 values.
 */
void et_scheme_select_l1(const et_model_t *m, unsigned layer, uint16_t n_sel, int16_t *map,
    int32_t *scratch);

#endif /* EDGETUNE_SCHEME_H */
