/*
 * MAX_POOL_2D and AVERAGE_POOL_2D backward: gradient w.r.t. the input
 * (docs/training.md §4b). Window geometry exactly as the forward kernels.
 */
#include "et_train_kernels.h"
#include "et_mathf.h"

/*
 * et_max_pool_grad_s8 - acc[a] += grad[out] where a is the first input
 * position of out's window (scan order ky then kx, clipped to the input)
 * holding the window's maximum of the saved forward input.
 *
 * input_dims   NHWC input (n == 1);  input: the saved forward input
 * output_dims  NHWC output;  grad: its int16 gradients (masked)
 * acc          input-size int32, written
 */
void et_max_pool_grad_s8(const et_pool_params_t *params, const et_dims_t *input_dims,
    const int8_t *input, const et_dims_t *output_dims, const int16_t *grad, int32_t *acc) {
    const int32_t in_h = input_dims->h, in_w = input_dims->w, depth = input_dims->c;
    const int32_t out_h = output_dims->h, out_w = output_dims->w;
    const size_t n_in = (size_t)in_h * in_w * depth;
    for (size_t i = 0; i < n_in; ++i) {
        acc[i] = 0;
    }
    for (int32_t oy = 0; oy < out_h; ++oy) {
        const int32_t in_y0 = oy * params->stride_h - params->pad_h;
        const int32_t fy0 = in_y0 < 0 ? -in_y0 : 0;
        const int32_t fy1 = params->filter_h < in_h - in_y0 ? params->filter_h : in_h - in_y0;
        for (int32_t ox = 0; ox < out_w; ++ox) {
            const int32_t in_x0 = ox * params->stride_w - params->pad_w;
            const int32_t fx0 = in_x0 < 0 ? -in_x0 : 0;
            const int32_t fx1 = params->filter_w < in_w - in_x0 ? params->filter_w : in_w - in_x0;
            for (int32_t c = 0; c < depth; ++c) {
                const int32_t g = grad[((size_t)oy * out_w + ox) * depth + c];
                if (g == 0) {
                    continue;
                }
                int32_t best = -1000;
                size_t arg = 0;
                for (int32_t fy = fy0; fy < fy1; ++fy) {
                    for (int32_t fx = fx0; fx < fx1; ++fx) {
                        const size_t a = ((size_t)(in_y0 + fy) * in_w + (in_x0 + fx)) * depth + c;
                        if (input[a] > best) {
                            best = input[a];
                            arg = a;
                        }
                    }
                }
                if (best > -1000) {
                    acc[arg] += g;
                }
            }
        }
    }
}

/*
 * et_avg_pool_grad_s8 - for each output element with n valid input positions
 * in its window: acc[in] += grad[out] * rdiv(1024, n) for each of them.
 * The accumulator scale is the gradient's scale / 1024.
 *
 * input_dims   NHWC input (n == 1);  acc: its elements, int32, written
 * output_dims  NHWC output;  grad: its int16 gradients (masked)
 */
void et_avg_pool_grad_s8(const et_pool_params_t *params, const et_dims_t *input_dims,
    const et_dims_t *output_dims, const int16_t *grad, int32_t *acc) {
    const int32_t in_h = input_dims->h, in_w = input_dims->w, depth = input_dims->c;
    const int32_t out_h = output_dims->h, out_w = output_dims->w;
    const size_t n_in = (size_t)in_h * in_w * depth;
    for (size_t i = 0; i < n_in; ++i) {
        acc[i] = 0;
    }
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
                continue;
            }
            const int32_t r = (int32_t)et_rdiv(1024, count);
            for (int32_t c = 0; c < depth; ++c) {
                const int32_t g = grad[((size_t)oy * out_w + ox) * depth + c];
                if (g == 0) {
                    continue;
                }
                for (int32_t fy = fy0; fy < fy1; ++fy) {
                    for (int32_t fx = fx0; fx < fx1; ++fx) {
                        acc[((size_t)(in_y0 + fy) * in_w + (in_x0 + fx)) * depth + c] += g * r;
                    }
                }
            }
        }
    }
}
