/*
 * FULLY_CONNECTED, int8 activations and per-output-channel int8 weights.
 * Arithmetic of TFLM reference_integer_ops::FullyConnectedPerChannel (a per-tensor
 * weight scale is stored as the same multiplier repeated for every channel,
 * which gives exactly reference_integer_ops::FullyConnected with weights_offset 0).
 */
#include "et_kernels.h"
#include "et_requant.h"
#include "et_dot_s8.h"

/*
 * fc_group - output channels oc .. oc + n_oc - 1 (1 <= n_oc <= 4) of one input row; inlined
 * twice by fc_core, with n_oc == 4 for the full groups (no lane tests left) and for the last one.
 */
static ET_SPECIALIZE void fc_group(const int8_t *in_b, int32_t accum_depth, int32_t in_off, const int8_t *filter,
    const int16_t *map, const int8_t *ram, const int32_t *bias, const int32_t *mult, const int32_t *shift,
    int32_t out_off, int32_t lo, int32_t hi, int32_t oc, int32_t n_oc, int8_t *out_b) {
    /* wraps modulo 2^32 like TFLM's int32, defined in C; lanes past n_oc are dropped */
    uint32_t acc[4]; /* one by one: a zero initializer becomes a memset call on ARMv6-M */
    const int32_t *bb = bias ? bias + oc : NULL;
    acc[0] = bb ? (uint32_t)bb[0] : 0;
    acc[1] = bb && n_oc > 1 ? (uint32_t)bb[1] : 0;
    acc[2] = bb && n_oc > 2 ? (uint32_t)bb[2] : 0;
    acc[3] = bb && n_oc > 3 ? (uint32_t)bb[3] : 0;
    const int8_t *row[4];
    et_rows4_s8(filter, map, ram, accum_depth, oc, n_oc, 0, row);
    et_dot_rows_s8(in_b, row, n_oc, accum_depth, in_off, acc);
    for (int32_t j = 0; j < n_oc; ++j) {
        const et_requant_t q = et_requant_prep(mult[oc + j], shift[oc + j]);
        out_b[oc + j] = et_requant_apply_s8((int32_t)acc[j], &q, out_off, lo, hi);
    }
}

/*
 * fc_core - the body of both entry points, inlined into each; with map == NULL
 * (et_fully_connected_s8) the row lookup folds away to filter + oc * accum_depth.
 */
static ET_SPECIALIZE et_status_t fc_core(const et_fc_params_t *params, const et_per_channel_quant_t *quant,
    int32_t batches, int32_t accum_depth, const int8_t *input,
    int32_t output_depth, const int8_t *filter, const int16_t *map, const int8_t *ram,
    const int32_t *bias, int8_t *output) {
    if (batches < 1 || accum_depth < 1 || output_depth < 1) {
        return ET_ERR_ARG;
    }
    /* the parameters in locals: an int8 store may alias any of them, locals cannot be aliased */
    const int32_t in_off = params->input_offset, out_off = params->output_offset;
    const int32_t lo = params->act_min - out_off, hi = params->act_max - out_off;
    const int32_t *mult = quant->multiplier, *shift = quant->shift;
    for (int32_t b = 0; b < batches; ++b) {
        const int8_t *in_b = input + (size_t)b * accum_depth;
        int8_t *out_b = output + (size_t)b * output_depth;
        int32_t oc = 0;
        for (; oc + 4 <= output_depth; oc += 4) {
            fc_group(in_b, accum_depth, in_off, filter, map, ram, bias, mult, shift, out_off, lo, hi, oc, 4, out_b);
        }
        if (oc < output_depth) {
            fc_group(in_b, accum_depth, in_off, filter, map, ram, bias, mult, shift, out_off, lo, hi, oc,
                output_depth - oc, out_b);
        }
    }
    return ET_OK;
}

/*
 * et_fully_connected_s8 - matrix-vector product with per-channel requantization.
 *
 * out[b,oc] = clamp(MBQM(sum_d w[oc,d] * (in[b,d] + input_offset) + bias[oc],
 *                        mult[oc], shift[oc]) + output_offset, act_min, act_max)
 *
 * params        input/output offsets and the clamp
 * quant         output_depth multipliers and shifts
 * batches       number of rows of input (1 for the .etm chain)
 * accum_depth   K, elements per input row;  input: batches*K values
 * output_depth  C_out;  filter: (C_out, K) row-major weights
 * bias          C_out int32 values, or NULL for no bias
 * output        batches*C_out values, written
 *
 * Buffers: input and output must not overlap. No scratch buffer is needed.
 * Up to four output channels are accumulated per pass over the input row (et_dot_rows_s8).
 * Returns ET_OK, or ET_ERR_ARG for non-positive sizes.
 */
et_status_t et_fully_connected_s8(const et_fc_params_t *params, const et_per_channel_quant_t *quant,
    int32_t batches, int32_t accum_depth, const int8_t *input,
    int32_t output_depth, const int8_t *filter,
    const int32_t *bias, int8_t *output) {
    return fc_core(params, quant, batches, accum_depth, input, output_depth, filter, NULL, NULL, bias, output);
}

/*
 * et_fully_connected_rows_s8 - et_fully_connected_s8 where output channel oc takes its K
 * weights from row map[oc] of `ram` when map != NULL and map[oc] >= 0, else from the
 * filter (a weight-trained layer, docs/training.md §2). Every channel is computed once,
 * four per pass; map == NULL runs et_fully_connected_s8.
 */
et_status_t et_fully_connected_rows_s8(const et_fc_params_t *params, const et_per_channel_quant_t *quant,
    int32_t batches, int32_t accum_depth, const int8_t *input,
    int32_t output_depth, const int8_t *filter, const int16_t *map, const int8_t *ram,
    const int32_t *bias, int8_t *output) {
    if (map == NULL) { /* no trained channel: the plain kernel, without per-channel row lookups */
        return et_fully_connected_s8(params, quant, batches, accum_depth, input, output_depth, filter, bias,
            output);
    }
    return fc_core(params, quant, batches, accum_depth, input, output_depth, filter, map, ram, bias, output);
}
