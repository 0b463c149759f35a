/*
 * Forward of single depthwise output channels whose weights live in a RAM copy
 * (docs/training.md §2). CONV_2D and FULLY_CONNECTED layers need nothing here:
 * et_conv_rows_s8 / et_fully_connected_rows_s8 read each trained channel's row
 * from the RAM copy in their own 4-channel passes. The depthwise kernel's
 * weights interleave the channels, so train.c runs et_depthwise_conv_s8 with
 * the flash weights and then recomputes the trained channels with this, which
 * repeats its arithmetic term for term for one channel.
 */
#include "et_train_kernels.h"
#include "et_requant.h"

/* Accumulators are uint32 (wrap modulo 2^32, defined C) exactly as in the inference kernels. */
static inline int32_t add_bias(uint32_t acc, const int32_t *bias, int32_t c) {
    return (int32_t)(bias ? acc + (uint32_t)bias[c] : acc);
}

/*
 * et_depthwise_conv_channel_s8 - output channel c of et_depthwise_conv_s8
 * (n == 1) with the channel's KH*KW weights `w` in (ky, kx) order.
 */
void et_depthwise_conv_channel_s8(const et_conv_params_t *params, const et_per_channel_quant_t *quant,
    const et_dims_t *input_dims, const int8_t *input, const et_dims_t *filter_dims,
    const int8_t *w, const int32_t *bias, const et_dims_t *output_dims, int8_t *output, int32_t c) {
    const int32_t in_h = input_dims->h, in_w = input_dims->w, in_c = input_dims->c;
    const int32_t k_h = filter_dims->h, k_w = filter_dims->w;
    const int32_t out_h = output_dims->h, out_w = output_dims->w, out_c = output_dims->c;
    const int32_t ic = c / params->depth_multiplier;
    for (int32_t oy = 0; oy < out_h; ++oy) {
        const int32_t in_y0 = oy * params->stride_h - params->pad_h;
        for (int32_t ox = 0; ox < out_w; ++ox) {
            const int32_t in_x0 = ox * params->stride_w - params->pad_w;
            uint32_t acc = 0;
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
                    const int32_t x = input[((size_t)iy * in_w + ix) * in_c + ic];
                    acc += (uint32_t)((int32_t)w[ky * k_w + kx] * (x + params->input_offset));
                }
            }
            output[((size_t)oy * out_w + ox) * out_c + c] = et_requantize_s8(add_bias(acc, bias, c),
                quant->multiplier[c], quant->shift[c], params->output_offset, params->act_min, params->act_max);
        }
    }
}
