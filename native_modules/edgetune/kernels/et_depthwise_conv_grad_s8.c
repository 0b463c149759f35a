/*
 * DEPTHWISE_CONV_2D backward: gradient w.r.t. the input (docs/training.md §4b).
 */
#include "et_train_kernels.h"

/*
 * et_depthwise_conv_grad_s8 - acc[y_in, x_in, c / depth_multiplier] +=
 * w[0, ky, kx, c] * h[oy, ox, c] over (oy, ox, c, ky, kx) with the input
 * position inside the input (same geometry as et_conv_grad_s8).
 *
 * weights      (1, KH, KW, C_out) in flash; a RAM slot holds a channel's KH*KW
 *              weights in (ky, kx) order
 * input_dims   NHWC input (n == 1);  acc: its elements, int32, written
 * output_dims  NHWC output;  h: its elements, folded int16 gradients
 */
void et_depthwise_conv_grad_s8(const et_conv_params_t *params, const et_dims_t *input_dims,
    const et_dims_t *filter_dims, const et_weights_t *weights,
    const et_dims_t *output_dims, const int16_t *h, int32_t *acc) {
    const int32_t in_h = input_dims->h, in_w = input_dims->w, in_c = input_dims->c;
    const int32_t k_h = filter_dims->h, k_w = filter_dims->w;
    const int32_t out_h = output_dims->h, out_w = output_dims->w, out_c = output_dims->c;
    const int32_t dm = params->depth_multiplier;
    const size_t n_in = (size_t)in_h * in_w * in_c;
    for (size_t i = 0; i < n_in; ++i) {
        acc[i] = 0;
    }
    for (int32_t oy = 0; oy < out_h; ++oy) {
        const int32_t in_y0 = oy * params->stride_h - params->pad_h;
        for (int32_t ox = 0; ox < out_w; ++ox) {
            const int32_t in_x0 = ox * params->stride_w - params->pad_w;
            const int16_t *hp = h + ((size_t)oy * out_w + ox) * out_c;
            for (int32_t c = 0; c < out_c; ++c) {
                const int32_t hc = hp[c];
                if (hc == 0) {
                    continue;
                }
                const int32_t ci = c / dm;
                const int8_t *ram = 0;
                if (weights->map && weights->map[c] >= 0) {
                    ram = weights->ram + (size_t)weights->map[c] * weights->per_channel;
                }
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
                        const int32_t w = ram ? ram[ky * k_w + kx]
                            : weights->flash[((size_t)ky * k_w + kx) * out_c + c];
                        acc[((size_t)iy * in_w + ix) * in_c + ci] += w * hc;
                    }
                }
            }
        }
    }
}
