/*
 * CONV_2D, int8 activations and per-output-channel int8 weights.
 * Arithmetic of TFLM reference_integer_ops::ConvPerChannel (dilation 1, one group).
 */
#include "et_kernels.h"
#include "et_requant.h"
#include "et_dot_s8.h"

/*
 * conv_core - the body of both entry points, inlined into each; with map == NULL
 * (et_conv_s8) the row lookup folds away to filter + c * w_stride.
 */
static ET_SPECIALIZE et_status_t conv_core(const et_conv_params_t *params, const et_per_channel_quant_t *quant,
    const et_dims_t *input_dims, const int8_t *input,
    const et_dims_t *filter_dims, const int8_t *filter, const int16_t *map, const int8_t *ram,
    const int32_t *bias,
    const et_dims_t *output_dims, int8_t *output) {
    const int32_t in_h = input_dims->h, in_w = input_dims->w, in_c = input_dims->c;
    const int32_t k_h = filter_dims->h, k_w = filter_dims->w;
    const int32_t out_h = output_dims->h, out_w = output_dims->w, out_c = output_dims->c;
    if (filter_dims->c != in_c || filter_dims->n != out_c || input_dims->n != output_dims->n) {
        return ET_ERR_ARG;
    }
    const int32_t w_stride = k_h * k_w * in_c; /* weights of one output channel */
    /* the parameters in locals: an int8 store may alias any of them, locals cannot be aliased */
    const int32_t in_off = params->input_offset, out_off = params->output_offset;
    const int32_t lo = params->act_min - out_off, hi = params->act_max - out_off;
    const int32_t stride_w = params->stride_w, pad_w = params->pad_w;
    for (int32_t b = 0; b < output_dims->n; ++b) {
        const int8_t *in_b = input + (size_t)b * in_h * in_w * in_c;
        for (int32_t oy = 0; oy < out_h; ++oy) {
            const int32_t in_y0 = oy * params->stride_h - params->pad_h;
            /* the taps inside the input: ky in [ky0, ky1), kx in [kx0, kx1) */
            const int32_t ky0 = in_y0 < 0 ? -in_y0 : 0;
            const int32_t ky1 = in_h - in_y0 < k_h ? in_h - in_y0 : k_h;
            int8_t *out_row = output + ((size_t)b * out_h + oy) * out_w * out_c;
            /* four output channels along the whole output row: their requantization constants
             * and biases are prepared once per row */
            for (int32_t oc = 0; oc < out_c; oc += 4) {
                const int32_t n_oc = out_c - oc < 4 ? out_c - oc : 4;
                et_requant_t q[4];
                uint32_t b0[4];
                for (int32_t j = 0; j < 4; ++j) {
                    const int32_t c = oc + (j < n_oc ? j : 0);
                    q[j] = et_requant_prep(quant->multiplier[c], quant->shift[c]);
                    b0[j] = bias ? (uint32_t)bias[c] : 0;
                }
                for (int32_t ox = 0; ox < out_w; ++ox) {
                    const int32_t in_x0 = ox * stride_w - pad_w;
                    const int32_t kx0 = in_x0 < 0 ? -in_x0 : 0;
                    const int32_t kx1 = in_w - in_x0 < k_w ? in_w - in_x0 : k_w;
                    /* the valid taps of one kernel row are contiguous in both the input and the weights */
                    const int32_t run = (kx1 - kx0) * in_c;
                    uint32_t acc[4] = {b0[0], b0[1], b0[2], b0[3]}; /* wrap modulo 2^32 like TFLM's int32 */
                    for (int32_t ky = ky0; ky < ky1; ++ky) {
                        const int8_t *px = in_b + ((size_t)(in_y0 + ky) * in_w + (in_x0 + kx0)) * in_c;
                        const size_t wo = ((size_t)ky * k_w + kx0) * in_c; /* offset of the taps in a row */
                        const int8_t *row[4];
                        et_rows4_s8(filter, map, ram, w_stride, oc, n_oc, wo, row);
                        et_dot_rows_s8(px, row, n_oc, run, in_off, acc);
                    }
                    int8_t *out_px = out_row + (size_t)ox * out_c + oc;
                    for (int32_t j = 0; j < n_oc; ++j) {
                        out_px[j] = et_requant_apply_s8((int32_t)acc[j], &q[j], out_off, lo, hi);
                    }
                }
            }
        }
    }
    return ET_OK;
}

/*
 * et_conv_s8 - 2-D convolution with per-channel requantization.
 *
 * out[n,y,x,oc] = clamp(MBQM(sum_{ky,kx,ic} w[oc,ky,kx,ic] * (in[n,iy,ix,ic] + input_offset)
 *                            + bias[oc], mult[oc], shift[oc]) + output_offset, act_min, act_max)
 * with iy = y*stride_h - pad_h + ky, ix = x*stride_w - pad_w + kx; taps outside
 * the input are skipped (zero padding in real terms).
 *
 * params       offsets, strides, paddings, clamp (depth_multiplier is ignored)
 * quant        output_dims->c multipliers and shifts
 * input_dims   NHWC input shape;  input: input_dims elements
 * filter_dims  OHWI weight shape, filter_dims->n == output_dims->c,
 *              filter_dims->c == input_dims->c;  filter: weights
 * bias         output_dims->c int32 values, or NULL for no bias
 * output_dims  NHWC output shape (n equal to the input's); output: written
 *
 * Buffers: input and output must not overlap. No scratch buffer is needed.
 * Four output channels are accumulated per pass over the valid taps (et_dot4_rows_s8).
 * Returns ET_OK, or ET_ERR_ARG if the channel counts do not match.
 */
et_status_t et_conv_s8(const et_conv_params_t *params, const et_per_channel_quant_t *quant,
    const et_dims_t *input_dims, const int8_t *input,
    const et_dims_t *filter_dims, const int8_t *filter,
    const int32_t *bias,
    const et_dims_t *output_dims, int8_t *output) {
    return conv_core(params, quant, input_dims, input, filter_dims, filter, NULL, NULL, bias, output_dims, output);
}

/*
 * et_conv_rows_s8 - et_conv_s8 where output channel c takes its KH*KW*C_in weights
 * (storage order) from row map[c] of `ram` when map != NULL and map[c] >= 0, else from
 * the filter (a weight-trained layer, docs/training.md §2). Every channel is computed
 * once, four per pass; map == NULL runs et_conv_s8.
 */
et_status_t et_conv_rows_s8(const et_conv_params_t *params, const et_per_channel_quant_t *quant,
    const et_dims_t *input_dims, const int8_t *input,
    const et_dims_t *filter_dims, const int8_t *filter, const int16_t *map, const int8_t *ram,
    const int32_t *bias,
    const et_dims_t *output_dims, int8_t *output) {
    if (map == NULL) { /* no trained channel: the plain kernel, without per-channel row lookups */
        return et_conv_s8(params, quant, input_dims, input, filter_dims, filter, bias, output_dims, output);
    }
    return conv_core(params, quant, input_dims, input, filter_dims, filter, map, ram, bias, output_dims, output);
}
