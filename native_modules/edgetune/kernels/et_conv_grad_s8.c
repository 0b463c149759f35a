/*
 * CONV_2D backward: gradient w.r.t. the input, the transposed convolution
 * (docs/training.md §4b), requantized as it is produced (§4c).
 */
#include "et_train_kernels.h"

/*
 * et_conv_grad_s8 - acc[y_in, x_in, ci] = sum over (oy, ox, c, ky, kx) with
 * y_in = oy*stride_h - pad_h + ky and x_in = ox*stride_w - pad_w + kx inside
 * the input of w[c, ky, kx, ci] * h[oy, ox, c], computed one input position and
 * up to 4 input channels at a time (gather form, int32), never stored: m == 0 returns max |acc| over the
 * input; m > 0 writes out[j] = rdiv(acc[j] * 32767, m) (et_grad_emit).
 *
 * params       strides and paddings of the forward layer (offsets unused)
 * input_dims   NHWC input shape (n == 1);  out: its elements, int16
 * filter_dims  OHWI weight shape;  weights: as the forward used them
 * output_dims  NHWC output shape;  h: its elements, folded int16 gradients
 */
int64_t et_conv_grad_s8(const et_conv_params_t *params, const et_dims_t *input_dims,
    const et_dims_t *filter_dims, const et_weights_t *weights,
    const et_dims_t *output_dims, const int16_t *h, int64_t m, int16_t *out) {
    const int32_t in_h = input_dims->h, in_w = input_dims->w, in_c = input_dims->c;
    const int32_t k_h = filter_dims->h, k_w = filter_dims->w;
    const int32_t out_h = output_dims->h, out_w = output_dims->w, out_c = output_dims->c;
    const int32_t per = weights->per_channel;
    int64_t big = 0;
    size_t j = 0;
    for (int32_t iy = 0; iy < in_h; ++iy) {
        for (int32_t ix = 0; ix < in_w; ++ix) {
            /* Up to 4 input channels at a time: their weights are adjacent in each tap. */
            for (int32_t ci = 0; ci < in_c; ci += 4) {
                const int32_t nb = in_c - ci < 4 ? in_c - ci : 4;
                int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
                for (int32_t ky = 0; ky < k_h; ++ky) {
                    const int32_t ny = iy + params->pad_h - ky;
                    if (ny < 0 || ny % params->stride_h != 0 || ny / params->stride_h >= out_h) {
                        continue;
                    }
                    const int32_t oy = ny / params->stride_h;
                    for (int32_t kx = 0; kx < k_w; ++kx) {
                        const int32_t nx = ix + params->pad_w - kx;
                        if (nx < 0 || nx % params->stride_w != 0 || nx / params->stride_w >= out_w) {
                            continue;
                        }
                        const int16_t *hp = h + ((size_t)oy * out_w + nx / params->stride_w) * out_c;
                        const size_t tap = ((size_t)ky * k_w + kx) * in_c + ci;
                        const int8_t *w = weights->flash + tap; /* channel c at w[c * per] */
                        if (!weights->map && nb == 4) {
                            for (int32_t c = 0; c < out_c; ++c, w += per) {
                                const int32_t hc = hp[c];
                                a0 += (int32_t)w[0] * hc;
                                a1 += (int32_t)w[1] * hc;
                                a2 += (int32_t)w[2] * hc;
                                a3 += (int32_t)w[3] * hc;
                            }
                            continue;
                        }
                        for (int32_t c = 0; c < out_c; ++c, w += per) {
                            const int32_t hc = hp[c];
                            const int8_t *wc = w;
                            if (weights->map && weights->map[c] >= 0) {
                                wc = weights->ram + (size_t)weights->map[c] * per + tap;
                            }
                            a0 += (int32_t)wc[0] * hc;
                            a1 += nb > 1 ? (int32_t)wc[1] * hc : 0;
                            a2 += nb > 2 ? (int32_t)wc[2] * hc : 0;
                            a3 += nb > 3 ? (int32_t)wc[3] * hc : 0;
                        }
                    }
                }
                big = et_grad_emit(a0, m, out, j++, big);
                if (nb > 1) {
                    big = et_grad_emit(a1, m, out, j++, big);
                }
                if (nb > 2) {
                    big = et_grad_emit(a2, m, out, j++, big);
                }
                if (nb > 3) {
                    big = et_grad_emit(a3, m, out, j++, big);
                }
            }
        }
    }
    return m ? m : big;
}
