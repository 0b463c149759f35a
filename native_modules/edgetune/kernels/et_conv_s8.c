/*
 * CONV_2D, int8 activations and per-output-channel int8 weights.
 * Arithmetic of TFLM reference_integer_ops::ConvPerChannel (dilation 1, one group).
 */
#include "et_kernels.h"
#include "et_requant.h"

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
 * Returns ET_OK, or ET_ERR_ARG if the channel counts do not match.
 */
et_status_t et_conv_s8(const et_conv_params_t *params, const et_per_channel_quant_t *quant,
    const et_dims_t *input_dims, const int8_t *input,
    const et_dims_t *filter_dims, const int8_t *filter,
    const int32_t *bias,
    const et_dims_t *output_dims, int8_t *output) {
    const int32_t in_h = input_dims->h, in_w = input_dims->w, in_c = input_dims->c;
    const int32_t k_h = filter_dims->h, k_w = filter_dims->w;
    const int32_t out_h = output_dims->h, out_w = output_dims->w, out_c = output_dims->c;
    if (filter_dims->c != in_c || filter_dims->n != out_c || input_dims->n != output_dims->n) {
        return ET_ERR_ARG;
    }
    for (int32_t b = 0; b < output_dims->n; ++b) {
        const int8_t *in_b = input + (size_t)b * in_h * in_w * in_c;
        for (int32_t oy = 0; oy < out_h; ++oy) {
            const int32_t in_y0 = oy * params->stride_h - params->pad_h;
            for (int32_t ox = 0; ox < out_w; ++ox) {
                const int32_t in_x0 = ox * params->stride_w - params->pad_w;
                for (int32_t oc = 0; oc < out_c; ++oc) {
                    uint32_t acc = 0; /* wraps modulo 2^32 like TFLM's int32 on real targets, defined in C */
                    for (int32_t ky = 0; ky < k_h; ++ky) {
                        const int32_t iy = in_y0 + ky;
                        if (iy < 0 || iy >= in_h) {
                            continue;
                        }
                        for (int32_t kx = 0; kx < k_w; ++kx) {
                            const int32_t ix = in_x0 + kx;
                            if (ix < 0 || ix >= in_w) {
                                continue;
                            }
                            const int8_t *px = in_b + ((size_t)iy * in_w + ix) * in_c;
                            const int8_t *wk = filter + (((size_t)oc * k_h + ky) * k_w + kx) * in_c;
                            for (int32_t ic = 0; ic < in_c; ++ic) {
                                acc += (uint32_t)((int32_t)wk[ic] * ((int32_t)px[ic] + params->input_offset));
                            }
                        }
                    }
                    if (bias) {
                        acc += (uint32_t)bias[oc];
                    }
                    output[(((size_t)b * out_h + oy) * out_w + ox) * out_c + oc] =
                        et_requantize_s8((int32_t)acc, quant->multiplier[oc], quant->shift[oc],
                            params->output_offset, params->act_min, params->act_max);
                }
            }
        }
    }
    return ET_OK;
}
