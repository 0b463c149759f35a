/*
 * MAX_POOL_2D, int8. Arithmetic of TFLM reference_integer_ops::MaxPool.
 */
#include "et_kernels.h"
#include "et_requant.h"

/*
 * et_max_pool_s8 - window maximum, then the activation clamp.
 *
 * out[n,y,x,c] = clamp(max over the window clipped to the input of in[n,iy,ix,c],
 *                      act_min, act_max); an empty window gives clamp(-128).
 * The window of output (y, x) starts at (y*stride_h - pad_h, x*stride_w - pad_w)
 * and spans filter_h x filter_w.
 *
 * params       strides, paddings, filter size, clamp
 * input_dims   NHWC input shape;  input: input_dims elements
 * output_dims  NHWC output shape, same n and c as the input;  output: written
 *
 * Buffers: input and output must not overlap. No scratch buffer is needed.
 * Returns ET_OK, or ET_ERR_ARG if n or c differ between input and output.
 */
et_status_t et_max_pool_s8(const et_pool_params_t *params,
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
                for (int32_t c = 0; c < depth; ++c) {
                    int32_t mx = INT8_MIN;
                    for (int32_t fy = fy0; fy < fy1; ++fy) {
                        for (int32_t fx = fx0; fx < fx1; ++fx) {
                            const int32_t v = in_b[((size_t)(in_y0 + fy) * in_w + (in_x0 + fx)) * depth + c];
                            if (v > mx) {
                                mx = v;
                            }
                        }
                    }
                    mx = et_clamp_s32(mx, params->act_min, params->act_max);
                    output[(((size_t)b * out_h + oy) * out_w + ox) * depth + c] = (int8_t)mx;
                }
            }
        }
    }
    return ET_OK;
}
