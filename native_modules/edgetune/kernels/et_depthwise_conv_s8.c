/*
 * DEPTHWISE_CONV_2D, int8 activations and per-output-channel int8 weights.
 * Arithmetic of TFLM reference_integer_ops::DepthwiseConvPerChannel (dilation 1).
 */
#include "et_kernels.h"
#include "et_requant.h"

/*
 * et_depthwise_conv_s8 - depthwise 2-D convolution with per-channel requantization.
 *
 * For input channel ic and m < depth_multiplier, output channel oc = ic*depth_multiplier + m:
 * out[n,y,x,oc] = clamp(MBQM(sum_{ky,kx} w[0,ky,kx,oc] * (in[n,iy,ix,ic] + input_offset)
 *                            + bias[oc], mult[oc], shift[oc]) + output_offset, act_min, act_max)
 * with iy = y*stride_h - pad_h + ky, ix = x*stride_w - pad_w + kx; taps outside
 * the input are skipped.
 *
 * params       offsets, strides, paddings, depth_multiplier (>= 1), clamp
 * quant        output_dims->c multipliers and shifts
 * input_dims   NHWC input shape;  input: input_dims elements
 * filter_dims  (1, KH, KW, C_out) weight shape, C_out == input C * depth_multiplier
 * bias         C_out int32 values, or NULL for no bias
 * output_dims  NHWC output shape with c == C_out;  output: written
 *
 * Buffers: input and output must not overlap. No scratch buffer is needed.
 * Returns ET_OK, or ET_ERR_ARG if the channel counts do not match.
 */
et_status_t et_depthwise_conv_s8(const et_conv_params_t *params, const et_per_channel_quant_t *quant,
    const et_dims_t *input_dims, const int8_t *input,
    const et_dims_t *filter_dims, const int8_t *filter,
    const int32_t *bias,
    const et_dims_t *output_dims, int8_t *output) {
    const int32_t in_h = input_dims->h, in_w = input_dims->w, in_c = input_dims->c;
    const int32_t k_h = filter_dims->h, k_w = filter_dims->w;
    const int32_t out_h = output_dims->h, out_w = output_dims->w, out_c = output_dims->c;
    const int32_t dm = params->depth_multiplier;
    if (dm < 1 || filter_dims->c != out_c || out_c != in_c * dm || input_dims->n != output_dims->n) {
        return ET_ERR_ARG;
    }
    for (int32_t b = 0; b < output_dims->n; ++b) {
        const int8_t *in_b = input + (size_t)b * in_h * in_w * in_c;
        for (int32_t oy = 0; oy < out_h; ++oy) {
            const int32_t in_y0 = oy * params->stride_h - params->pad_h;
            for (int32_t ox = 0; ox < out_w; ++ox) {
                const int32_t in_x0 = ox * params->stride_w - params->pad_w;
                for (int32_t ic = 0; ic < in_c; ++ic) {
                    for (int32_t m = 0; m < dm; ++m) {
                        const int32_t oc = ic * dm + m;
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
                                const int32_t x = in_b[((size_t)iy * in_w + ix) * in_c + ic];
                                const int32_t w = filter[((size_t)ky * k_w + kx) * out_c + oc];
                                acc += (uint32_t)(w * (x + params->input_offset));
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
    }
    return ET_OK;
}
