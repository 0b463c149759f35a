/*
 * CONV_2D backward: gradient w.r.t. the input, the transposed convolution
 * (docs/training.md §4b).
 */
#include "et_train_kernels.h"

/*
 * et_conv_grad_s8 - acc[y_in, x_in, ci] = sum over (oy, ox, c, ky, kx) with
 * y_in = oy*stride_h - pad_h + ky and x_in = ox*stride_w - pad_w + kx inside
 * the input of w[c, ky, kx, ci] * h[oy, ox, c].
 *
 * params       strides and paddings of the forward layer (offsets unused)
 * input_dims   NHWC input shape (n == 1);  acc: its elements, int32, written
 * filter_dims  OHWI weight shape;  weights: as the forward used them
 * output_dims  NHWC output shape;  h: its elements, folded int16 gradients
 */
void et_conv_grad_s8(const et_conv_params_t *params, const et_dims_t *input_dims,
    const et_dims_t *filter_dims, const et_weights_t *weights,
    const et_dims_t *output_dims, const int16_t *h, int32_t *acc) {
    const int32_t in_h = input_dims->h, in_w = input_dims->w, in_c = input_dims->c;
    const int32_t k_h = filter_dims->h, k_w = filter_dims->w;
    const int32_t out_h = output_dims->h, out_w = output_dims->w, out_c = output_dims->c;
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
                const int8_t *wc = weights->flash + (size_t)c * weights->per_channel;
                if (weights->map && weights->map[c] >= 0) {
                    wc = weights->ram + (size_t)weights->map[c] * weights->per_channel;
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
                        const int8_t *wk = wc + ((size_t)ky * k_w + kx) * in_c;
                        int32_t *ap = acc + ((size_t)iy * in_w + ix) * in_c;
                        for (int32_t ci = 0; ci < in_c; ++ci) {
                            ap[ci] += (int32_t)wk[ci] * hc;
                        }
                    }
                }
            }
        }
    }
}
