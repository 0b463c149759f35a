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
 * With depth_multiplier 1 the channels are computed 8, 4 or 1 at a time (et_depthwise_conv_group_s8).
 * Returns ET_OK, or ET_ERR_ARG if the channel counts do not match.
 */
/*
 * The tap loops of the channel groups: for i < n: acc[j] += pw[j] * px[j], then px and pw
 * step by c (one input pixel, one kernel tap). With the accumulators in registers this is
 * LDRSB/LDRSB/MLA per MAC plus 4 instructions per tap on the Cortex-M3.
 */
static inline void et_dw_taps8(const int8_t *px, const int8_t *pw, int32_t c, int32_t n, uint32_t acc[8]) {
    uint32_t a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3], a4 = acc[4], a5 = acc[5], a6 = acc[6], a7 = acc[7];
    for (int32_t i = n; i > 0; --i) {
        a0 += (uint32_t)(pw[0] * px[0]);
        a1 += (uint32_t)(pw[1] * px[1]);
        a2 += (uint32_t)(pw[2] * px[2]);
        a3 += (uint32_t)(pw[3] * px[3]);
        a4 += (uint32_t)(pw[4] * px[4]);
        a5 += (uint32_t)(pw[5] * px[5]);
        a6 += (uint32_t)(pw[6] * px[6]);
        a7 += (uint32_t)(pw[7] * px[7]);
        px += c;
        pw += c;
    }
    acc[0] = a0;
    acc[1] = a1;
    acc[2] = a2;
    acc[3] = a3;
    acc[4] = a4;
    acc[5] = a5;
    acc[6] = a6;
    acc[7] = a7;
}

static inline void et_dw_taps4(const int8_t *px, const int8_t *pw, int32_t c, int32_t n, uint32_t acc[8]) {
    uint32_t a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3];
    for (int32_t i = n; i > 0; --i) {
        a0 += (uint32_t)(pw[0] * px[0]);
        a1 += (uint32_t)(pw[1] * px[1]);
        a2 += (uint32_t)(pw[2] * px[2]);
        a3 += (uint32_t)(pw[3] * px[3]);
        px += c;
        pw += c;
    }
    acc[0] = a0;
    acc[1] = a1;
    acc[2] = a2;
    acc[3] = a3;
}

static inline void et_dw_taps1(const int8_t *px, const int8_t *pw, int32_t c, int32_t n, uint32_t acc[8]) {
    uint32_t a0 = acc[0];
    for (int32_t i = n; i > 0; --i) {
        a0 += (uint32_t)(*pw * *px);
        px += c;
        pw += c;
    }
    acc[0] = a0;
}

/* acc[j] -= off * sum_{i < n} pw[i*c + j] for j < g: takes n taps out of the offset term */
static void et_dw_sub_taps(uint32_t *acc, const int8_t *pw, int32_t c, int32_t n, int32_t g, int32_t off) {
    for (; n > 0; --n, pw += c) {
        for (int32_t j = 0; j < g; ++j) {
            acc[j] -= (uint32_t)(off * pw[j]);
        }
    }
}

/*
 * Channels c0..c0+g-1 (g = 8, 4 or 1, depth_multiplier 1) at every output position. The input
 * offset is folded out of the tap loop: sum w * (x + off) = sum w * x + off * sum w (exact
 * modulo 2^32), where sum w runs over the taps inside the input. Each accumulator starts at
 * base = off * (sum of all taps) + bias, computed once per call; the taps that fall on the
 * padding at the edges are taken out again (et_dw_sub_taps).
 */
static void et_depthwise_conv_group_s8(const et_conv_params_t *params, const et_per_channel_quant_t *quant,
    const et_dims_t *input_dims, const int8_t *input, const et_dims_t *filter_dims, const int8_t *filter,
    const int32_t *bias, const et_dims_t *output_dims, int8_t *output, int32_t c0, int32_t g) {
    const int32_t in_h = input_dims->h, in_w = input_dims->w, c = input_dims->c;
    const int32_t k_h = filter_dims->h, k_w = filter_dims->w;
    const int32_t out_h = output_dims->h, out_w = output_dims->w;
    const int32_t off = params->input_offset;
    const int8_t *w_c = filter + c0;
    uint32_t base[8], acc[8]; /* wrap modulo 2^32 like TFLM's int32 on real targets, defined in C */
    for (int32_t j = 0; j < g; ++j) {
        base[j] = bias ? (uint32_t)bias[c0 + j] : 0;
    }
    et_dw_sub_taps(base, w_c, c, k_h * k_w, g, -off); /* + off * (sum of all taps) */
    for (int32_t j = 0; j < g; ++j) {
        acc[j] = base[j];
    }
    for (int32_t b = 0; b < output_dims->n; ++b) {
        const int8_t *in_b = input + (size_t)b * in_h * in_w * c + c0;
        for (int32_t oy = 0; oy < out_h; ++oy) {
            const int32_t in_y0 = oy * params->stride_h - params->pad_h;
            /* the taps inside the input: ky in [ky0, ky1), kx in [kx0, kx1) */
            const int32_t ky0 = in_y0 < 0 ? -in_y0 : 0;
            const int32_t ky1 = in_h - in_y0 < k_h ? in_h - in_y0 : k_h;
            for (int32_t ox = 0; ox < out_w; ++ox) {
                const int32_t in_x0 = ox * params->stride_w - params->pad_w;
                const int32_t kx0 = in_x0 < 0 ? -in_x0 : 0;
                const int32_t kx1 = in_w - in_x0 < k_w ? in_w - in_x0 : k_w;
                for (int32_t ky = 0; ky < k_h; ++ky) {
                    const int8_t *pw = w_c + (size_t)ky * k_w * c;
                    if (ky < ky0 || ky >= ky1 || kx1 <= kx0) {
                        et_dw_sub_taps(acc, pw, c, k_w, g, off);
                        continue;
                    }
                    const int8_t *px = in_b + ((size_t)(in_y0 + ky) * in_w + (in_x0 + kx0)) * c;
                    if (g == 8) {
                        et_dw_taps8(px, pw + (size_t)kx0 * c, c, kx1 - kx0, acc);
                    } else if (g == 4) {
                        et_dw_taps4(px, pw + (size_t)kx0 * c, c, kx1 - kx0, acc);
                    } else {
                        et_dw_taps1(px, pw + (size_t)kx0 * c, c, kx1 - kx0, acc);
                    }
                    if (kx0 > 0 || kx1 < k_w) {
                        et_dw_sub_taps(acc, pw, c, kx0, g, off);
                        et_dw_sub_taps(acc, pw + (size_t)kx1 * c, c, k_w - kx1, g, off);
                    }
                }
                int8_t *out_px = output + (((size_t)b * out_h + oy) * out_w + ox) * c + c0;
                for (int32_t j = 0; j < g; ++j) {
                    out_px[j] = et_requantize_s8((int32_t)acc[j], quant->multiplier[c0 + j], quant->shift[c0 + j],
                        params->output_offset, params->act_min, params->act_max);
                    acc[j] = base[j]; /* ready for the next position */
                }
            }
        }
    }
}

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
    int32_t ic_first = 0; /* channels below this one are done in groups */
    if (dm == 1) {
        static const int32_t group_sizes[3] = {8, 4, 1};
        for (int32_t k = 0; k < 3; ++k) {
            const int32_t g = group_sizes[k];
            for (; ic_first + g <= in_c; ic_first += g) {
                et_depthwise_conv_group_s8(params, quant, input_dims, input, filter_dims, filter, bias, output_dims,
                    output, ic_first, g);
            }
        }
    }
    /* depth_multiplier > 1: one tap of one channel at a time */
    for (int32_t b = 0; b < output_dims->n; ++b) {
        const int8_t *in_b = input + (size_t)b * in_h * in_w * in_c;
        for (int32_t oy = 0; oy < out_h; ++oy) {
            const int32_t in_y0 = oy * params->stride_h - params->pad_h;
            for (int32_t ox = 0; ox < out_w; ++ox) {
                const int32_t in_x0 = ox * params->stride_w - params->pad_w;
                for (int32_t ic = ic_first; ic < in_c; ++ic) {
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
