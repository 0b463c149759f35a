/*
 * Parameter gradient sums of CONV_2D / DEPTHWISE_CONV_2D weights and of biases
 * (docs/training.md §4d, §4e). Exact integer sums, one parameter at a time, so
 * no scratch buffer is needed and the update can be applied right away.
 * (FULLY_CONNECTED's sum has a single term: g[c] * (x[k] - zp), see train.c.)
 */
#include "et_train_kernels.h"

/*
 * et_bias_grad_s16 - G[c] = sum over the positions of grad[p, c].
 *
 * grad  positions x channels int16 (NHWC)
 */
int64_t et_bias_grad_s16(const int16_t *grad, int32_t positions, int32_t channels, int32_t c) {
    int64_t s = 0;
    for (int32_t p = 0; p < positions; ++p) {
        s += grad[(size_t)p * channels + c];
    }
    return s;
}

/*
 * Sum over output positions (oy, ox) of grad[oy, ox, c] * (input[iy, ix, ci] + input_offset)
 * for the filter tap (ky, kx): the one loop both weight gradients below share.
 */
static int64_t tap_sum(const et_conv_params_t *params, const et_dims_t *input_dims, const int8_t *input,
    const et_dims_t *output_dims, const int16_t *grad, int32_t c, int32_t ky, int32_t kx, int32_t ci) {
    const int32_t in_h = input_dims->h, in_w = input_dims->w, in_c = input_dims->c;
    const int32_t out_h = output_dims->h, out_w = output_dims->w, out_c = output_dims->c;
    int64_t s = 0;
    for (int32_t oy = 0; oy < out_h; ++oy) {
        const int32_t iy = oy * params->stride_h - params->pad_h + ky;
        if (iy < 0 || iy >= in_h) {
            continue;
        }
        for (int32_t ox = 0; ox < out_w; ++ox) {
            const int32_t ix = ox * params->stride_w - params->pad_w + kx;
            if (ix < 0 || ix >= in_w) {
                continue;
            }
            const int32_t g = grad[((size_t)oy * out_w + ox) * out_c + c];
            s += (int64_t)g * ((int32_t)input[((size_t)iy * in_w + ix) * in_c + ci] + params->input_offset);
        }
    }
    return s;
}

/*
 * et_conv_weight_grad_s8 - A[c, k] = sum over output positions (oy, ox) of
 * grad[oy, ox, c] * (input[iy, ix, ci] + input_offset) for weight k = (ky, kx, ci)
 * of channel c (OHWI storage order); taps in the padding contribute 0.
 *
 * params       strides, paddings and input_offset (= -zp_x) of the forward layer
 * input_dims   NHWC input (n == 1);  input: the saved forward input
 * filter_dims  OHWI weight shape
 * output_dims  NHWC output;  grad: its int16 gradients (masked, not folded)
 */
int64_t et_conv_weight_grad_s8(const et_conv_params_t *params, const et_dims_t *input_dims,
    const int8_t *input, const et_dims_t *filter_dims, const et_dims_t *output_dims,
    const int16_t *grad, int32_t c, int32_t k) {
    const int32_t in_c = input_dims->c, k_w = filter_dims->w;
    return tap_sum(params, input_dims, input, output_dims, grad, c, k / (in_c * k_w), (k / in_c) % k_w, k % in_c);
}

/*
 * et_depthwise_conv_weight_grad_s8 - as et_conv_weight_grad_s8 for weight
 * k = (ky, kx) of output channel c, reading input channel c / depth_multiplier.
 */
int64_t et_depthwise_conv_weight_grad_s8(const et_conv_params_t *params, const et_dims_t *input_dims,
    const int8_t *input, const et_dims_t *filter_dims, const et_dims_t *output_dims,
    const int16_t *grad, int32_t c, int32_t k) {
    const int32_t k_w = filter_dims->w;
    return tap_sum(params, input_dims, input, output_dims, grad, c, k / k_w, k % k_w, c / params->depth_multiplier);
}
