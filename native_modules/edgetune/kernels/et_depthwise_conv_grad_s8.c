/*
 * DEPTHWISE_CONV_2D backward: gradient w.r.t. the input (docs/training.md §4b),
 * requantized as it is produced (§4c).
 */
#include "et_train_kernels.h"

/*
 * et_depthwise_conv_grad_s8 - acc[y_in, x_in, ci] = sum over (oy, ox, ky, kx)
 * with the input position inside the input (geometry of et_conv_grad_s8) and
 * the channels c = ci*dm .. ci*dm + dm-1 of w[0, ky, kx, c] * h[oy, ox, c],
 * one input element at a time; m and out as et_conv_grad_s8.
 *
 * weights      (1, KH, KW, C_out) in flash; a RAM slot holds a channel's KH*KW
 *              weights in (ky, kx) order
 * input_dims   NHWC input (n == 1);  out: its elements, int16
 * output_dims  NHWC output;  h: its elements, folded int16 gradients
 */
/*
 * tap_out - the output index o with o * s == n (a tap at input-minus-kernel offset n), or -1 if
 * there is none inside [0, out); stride 1 without a division (a library call on ARMv6-M).
 */
static inline int32_t tap_out(int32_t n, int32_t s, int32_t out) {
    if (n < 0) {
        return -1;
    }
    if (s != 1) {
        if (n % s != 0) {
            return -1;
        }
        n /= s;
    }
    return n < out ? n : -1;
}

/*
 * dw_grad_blocks - et_depthwise_conv_grad_s8 for depth_multiplier 1 and flash weights only (no
 * trained channel): per input position, the valid taps are found once for a block of 8
 * channels (then one channel at a time for the rest), whose weights and gradients are adjacent
 * in memory. Each acc element is the same exact int32 sum as in the general loop (the terms in
 * another order), so the values are equal.
 */
static int64_t dw_grad_blocks(const et_conv_params_t *params, const et_dims_t *input_dims,
    const et_dims_t *filter_dims, const int8_t *flash, const et_dims_t *output_dims, const int16_t *h, int64_t m,
    int16_t *out) {
    const int32_t in_h = input_dims->h, in_w = input_dims->w, c = input_dims->c;
    const int32_t k_h = filter_dims->h, k_w = filter_dims->w;
    const int32_t out_h = output_dims->h, out_w = output_dims->w;
    const int32_t s_h = params->stride_h, s_w = params->stride_w, pad_h = params->pad_h, pad_w = params->pad_w;
    int64_t big = 0;
    size_t j = 0;
    for (int32_t iy = 0; iy < in_h; ++iy) {
        for (int32_t ix = 0; ix < in_w; ++ix) {
            for (int32_t c0 = 0; c0 < c;) {
                const int32_t nb = c - c0 >= 8 ? 8 : 1;
                int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0, a7 = 0;
                for (int32_t ky = 0; ky < k_h; ++ky) {
                    const int32_t oy = tap_out(iy + pad_h - ky, s_h, out_h);
                    if (oy < 0) {
                        continue;
                    }
                    for (int32_t kx = 0; kx < k_w; ++kx) {
                        const int32_t ox = tap_out(ix + pad_w - kx, s_w, out_w);
                        if (ox < 0) {
                            continue;
                        }
                        const int16_t *hp = h + ((size_t)oy * out_w + ox) * c + c0;
                        const int8_t *wp = flash + ((size_t)ky * k_w + kx) * c + c0;
                        a0 += wp[0] * hp[0];
                        if (nb == 8) {
                            a1 += wp[1] * hp[1];
                            a2 += wp[2] * hp[2];
                            a3 += wp[3] * hp[3];
                            a4 += wp[4] * hp[4];
                            a5 += wp[5] * hp[5];
                            a6 += wp[6] * hp[6];
                            a7 += wp[7] * hp[7];
                        }
                    }
                }
                big = et_grad_emit(a0, m, out, j++, big);
                if (nb == 8) {
                    big = et_grad_emit(a1, m, out, j++, big);
                    big = et_grad_emit(a2, m, out, j++, big);
                    big = et_grad_emit(a3, m, out, j++, big);
                    big = et_grad_emit(a4, m, out, j++, big);
                    big = et_grad_emit(a5, m, out, j++, big);
                    big = et_grad_emit(a6, m, out, j++, big);
                    big = et_grad_emit(a7, m, out, j++, big);
                }
                c0 += nb;
            }
        }
    }
    return m ? m : big;
}

int64_t et_depthwise_conv_grad_s8(const et_conv_params_t *params, const et_dims_t *input_dims,
    const et_dims_t *filter_dims, const et_weights_t *weights,
    const et_dims_t *output_dims, const int16_t *h, int64_t m, int16_t *out) {
    const int32_t in_h = input_dims->h, in_w = input_dims->w, in_c = input_dims->c;
    const int32_t k_h = filter_dims->h, k_w = filter_dims->w;
    const int32_t out_h = output_dims->h, out_w = output_dims->w, out_c = output_dims->c;
    const int32_t dm = params->depth_multiplier;
    int64_t big = 0;
    size_t j = 0;
    if (dm == 1 && weights->map == NULL) {
        return dw_grad_blocks(params, input_dims, filter_dims, weights->flash, output_dims, h, m, out);
    }
    for (int32_t iy = 0; iy < in_h; ++iy) {
        for (int32_t ix = 0; ix < in_w; ++ix) {
            for (int32_t ci = 0; ci < in_c; ++ci, ++j) {
                int32_t acc = 0;
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
                        for (int32_t c = ci * dm; c < ci * dm + dm; ++c) {
                            const int32_t hc = hp[c];
                            if (hc == 0) {
                                continue;
                            }
                            const int32_t w = (weights->map && weights->map[c] >= 0)
                                ? weights->ram[(size_t)weights->map[c] * weights->per_channel + ky * k_w + kx]
                                : weights->flash[((size_t)ky * k_w + kx) * out_c + c];
                            acc += w * hc;
                        }
                    }
                }
                big = et_grad_emit(acc, m, out, j, big);
            }
        }
    }
    return m ? m : big;
}
