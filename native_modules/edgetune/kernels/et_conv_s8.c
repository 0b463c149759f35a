/*
 * CONV_2D, int8 activations and per-output-channel int8 weights.
 * Arithmetic of TFLM reference_integer_ops::ConvPerChannel (dilation 1, one group).
 */
#include "et_kernels.h"
#include "et_requant.h"
#include "et_dot_s8.h"

#if defined(__ARM_ARCH_7M__) || defined(__ARM_ARCH_7EM__)
/* et_conv_pair_armv7m.c: two pixels x three channels, input offset folded out */
#define ET_CONV_PAIR 1
void et_conv_pair3_s8_armv7m(const int8_t *x, int32_t xstride, const int8_t *w, int32_t wstride, int32_t n,
    uint32_t acc[6]);
#endif

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
            /* Channels [0, oc3) go in groups of 3 through the two-pixel loop where it applies
             * (ET_CONV_PAIR: Cortex-M3 assembly, flash weights only, every kernel row inside the
             * input), the rest in groups of up to 4 through the one-pixel loop. */
            int32_t oc3 = 0;
#if defined(ET_CONV_PAIR)
            if (map == NULL && ky0 == 0 && ky1 == k_h && out_w >= 2) {
                oc3 = out_c - out_c % 3;
            }
#endif
            /* a channel group along the whole output row: its requantization constants and
             * biases are prepared once per row */
            for (int32_t oc = 0, n_oc; oc < out_c; oc += n_oc) {
                n_oc = oc < oc3 ? 3 : (out_c - oc < 4 ? out_c - oc : 4);
                et_requant_t q[4];
                uint32_t b0[4];
                for (int32_t j = 0; j < 4; ++j) {
                    const int32_t c = oc + (j < n_oc ? j : 0);
                    q[j] = et_requant_prep(quant->multiplier[c], quant->shift[c]);
                    b0[j] = bias ? (uint32_t)bias[c] : 0;
                }
#if defined(ET_CONV_PAIR)
                /* start values of the two-pixel loop: bias + off * (sum of all the channel's taps) */
                uint32_t fold[3] = {0, 0, 0};
                if (oc < oc3) {
                    for (int32_t j = 0; j < 3; ++j) {
                        const int8_t *w = filter + (size_t)(oc + j) * w_stride;
                        int32_t sum = 0; /* |sum| <= 128 * w_stride */
                        for (int32_t k = 0; k < w_stride; ++k) {
                            sum += w[k];
                        }
                        fold[j] = b0[j] + (uint32_t)in_off * (uint32_t)sum;
                    }
                }
#endif
                for (int32_t ox = 0; ox < out_w;) {
                    const int32_t in_x0 = ox * stride_w - pad_w;
                    const int32_t kx0 = in_x0 < 0 ? -in_x0 : 0;
                    const int32_t kx1 = in_w - in_x0 < k_w ? in_w - in_x0 : k_w;
                    int8_t *out_px = out_row + (size_t)ox * out_c + oc;
#if defined(ET_CONV_PAIR)
                    /* this pixel and the next with every tap inside the input */
                    if (oc < oc3 && ox + 1 < out_w && in_x0 >= 0 && in_x0 + stride_w + k_w <= in_w) {
                        uint32_t acc6[6] = {fold[0], fold[0], fold[1], fold[1], fold[2], fold[2]};
                        for (int32_t ky = 0; ky < k_h; ++ky) {
                            const int8_t *px = in_b + ((size_t)(in_y0 + ky) * in_w + in_x0) * in_c;
                            et_conv_pair3_s8_armv7m(px, stride_w * in_c, filter + (size_t)oc * w_stride +
                                (size_t)ky * k_w * in_c, w_stride, k_w * in_c, acc6);
                        }
                        for (int32_t j = 0; j < 3; ++j) {
                            out_px[j] = et_requant_apply_s8((int32_t)acc6[2 * j], &q[j], out_off, lo, hi);
                            out_px[out_c + j] = et_requant_apply_s8((int32_t)acc6[2 * j + 1], &q[j], out_off, lo, hi);
                        }
                        ox += 2;
                        continue;
                    }
#endif
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
                    for (int32_t j = 0; j < n_oc; ++j) {
                        out_px[j] = et_requant_apply_s8((int32_t)acc[j], &q[j], out_off, lo, hi);
                    }
                    ++ox;
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
 * Up to four output channels are accumulated per pass over the valid taps (et_dot_rows_s8); on
 * the Cortex-M3 the interior pixels go two at a time, three channels per pass
 * (et_conv_pair_armv7m.c).
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
