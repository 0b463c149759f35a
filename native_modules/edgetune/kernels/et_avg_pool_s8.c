/*
 * AVERAGE_POOL_2D, int8. Arithmetic of TFLM reference_integer_ops::AveragePool.
 */
#include "et_kernels.h"
#include "et_requant.h"

/*
 * et_avg_pool_s8 - window average rounded half away from zero, then the clamp.
 *
 * With sum and count over the window clipped to the input (padding is not
 * counted): avg = sum > 0 ? (sum + count/2) / count : (sum - count/2) / count
 * (C division truncating toward zero); out = clamp(avg, act_min, act_max).
 * The window of output (y, x) starts at (y*stride_h - pad_h, x*stride_w - pad_w)
 * and spans filter_h x filter_w.
 *
 * params       strides, paddings, filter size, clamp
 * input_dims   NHWC input shape;  input: input_dims elements
 * output_dims  NHWC output shape, same n and c as the input;  output: written
 *
 * Buffers: input and output must not overlap. No scratch buffer is needed.
 * Returns ET_OK; ET_ERR_ARG if n or c differ, or if a window lies entirely in
 * the padding (TFLM fails the same way; model.c rejects such layers up front).
 */
et_status_t et_avg_pool_s8(const et_pool_params_t *params,
    const et_dims_t *input_dims, const int8_t *input,
    const et_dims_t *output_dims, int8_t *output) {
    const int32_t in_h = input_dims->h, in_w = input_dims->w, depth = input_dims->c;
    const int32_t out_h = output_dims->h, out_w = output_dims->w;
    if (output_dims->c != depth || output_dims->n != input_dims->n) {
        return ET_ERR_ARG;
    }
    for (int32_t b = 0; b < output_dims->n; ++b) {
        const int8_t *in_b = input + (size_t)b * in_h * in_w * depth;
        for (int32_t oy = 0; oy < out_h; ++oy) {
            const int32_t in_y0 = oy * params->stride_h - params->pad_h;
            const int32_t fy0 = in_y0 < 0 ? -in_y0 : 0;
            const int32_t fy1 = params->filter_h < in_h - in_y0 ? params->filter_h : in_h - in_y0;
            for (int32_t ox = 0; ox < out_w; ++ox) {
                const int32_t in_x0 = ox * params->stride_w - params->pad_w;
                const int32_t fx0 = in_x0 < 0 ? -in_x0 : 0;
                const int32_t fx1 = params->filter_w < in_w - in_x0 ? params->filter_w : in_w - in_x0;
                const int32_t count = (fy1 > fy0 && fx1 > fx0) ? (fy1 - fy0) * (fx1 - fx0) : 0;
                if (count == 0) {
                    return ET_ERR_ARG;
                }
                for (int32_t c = 0; c < depth; ++c) {
                    int32_t acc = 0;
                    for (int32_t fy = fy0; fy < fy1; ++fy) {
                        for (int32_t fx = fx0; fx < fx1; ++fx) {
                            acc += in_b[((size_t)(in_y0 + fy) * in_w + (in_x0 + fx)) * depth + c];
                        }
                    }
                    acc = acc > 0 ? (acc + count / 2) / count : (acc - count / 2) / count;
                    acc = et_clamp_s32(acc, params->act_min, params->act_max);
                    output[(((size_t)b * out_h + oy) * out_w + ox) * depth + c] = (int8_t)acc;
                }
            }
        }
    }
    return ET_OK;
}
