/*
 * MAX_POOL_2D and AVERAGE_POOL_2D backward: gradient w.r.t. the input
 * (docs/training.md §4b), and the arg-max record the MAX_POOL_2D backward
 * needs, taken in the forward pass (§2). Window geometry exactly as the
 * forward kernels.
 */
#include "et_train_kernels.h"
#include "et_mathf.h"

/*
 * et_max_pool_argmax_bits - bits per output element of the arg-max record:
 * ceil(log2(filter_h * filter_w)), 0 for a 1x1 window (a single candidate).
 */
uint8_t et_max_pool_argmax_bits(int32_t filter_h, int32_t filter_w) {
    const int64_t n = (int64_t)filter_h * filter_w;
    uint8_t b = 0;
    while (((int64_t)1 << b) < n) {
        ++b;
    }
    return b;
}

/*
 * et_max_pool_argmax_s8 - the forward half of the MAX_POOL_2D backward
 * (docs/training.md §2): per output element j (NHWC order) the index
 * fy * filter_w + fx of the first window position (scan order fy then fx,
 * clipped to the input) holding the window's maximum, stored in `bits` bits at
 * bit offset j * bits of `argmax` (bit k of byte B is bit 8B + k of the stream,
 * values LSB first). An empty window stores 0 (the backward routes nothing).
 *
 * input_dims   NHWC input (n == 1);  input: the forward input
 * output_dims  NHWC output
 * argmax       ceil(n_out * bits / 8) bytes, written (bits == 0: nothing)
 */
void et_max_pool_argmax_s8(const et_pool_params_t *params, const et_dims_t *input_dims,
    const int8_t *input, const et_dims_t *output_dims, uint8_t bits, uint8_t *argmax) {
    const int32_t in_h = input_dims->h, in_w = input_dims->w, depth = input_dims->c;
    const int32_t out_h = output_dims->h, out_w = output_dims->w;
    const size_t n_bytes = ((size_t)out_h * out_w * depth * bits + 7) / 8;
    for (size_t i = 0; i < n_bytes; ++i) {
        argmax[i] = 0;
    }
    if (bits == 0) {
        return;
    }
    size_t pos = 0; /* bit offset of the current output element */
    for (int32_t oy = 0; oy < out_h; ++oy) {
        const int32_t in_y0 = oy * params->stride_h - params->pad_h;
        const int32_t fy0 = in_y0 < 0 ? -in_y0 : 0;
        const int32_t fy1 = params->filter_h < in_h - in_y0 ? params->filter_h : in_h - in_y0;
        for (int32_t ox = 0; ox < out_w; ++ox) {
            const int32_t in_x0 = ox * params->stride_w - params->pad_w;
            const int32_t fx0 = in_x0 < 0 ? -in_x0 : 0;
            const int32_t fx1 = params->filter_w < in_w - in_x0 ? params->filter_w : in_w - in_x0;
            for (int32_t c = 0; c < depth; ++c, pos += bits) {
                int32_t best = -1000;
                uint32_t arg = 0;
                for (int32_t fy = fy0; fy < fy1; ++fy) {
                    for (int32_t fx = fx0; fx < fx1; ++fx) {
                        const int32_t v = input[((size_t)(in_y0 + fy) * in_w + (in_x0 + fx)) * depth + c];
                        if (v > best) {
                            best = v;
                            arg = (uint32_t)(fy * params->filter_w + fx);
                        }
                    }
                }
                for (uint8_t k = 0; k < bits; ++k) {
                    if ((arg >> k) & 1u) {
                        argmax[(pos + k) >> 3] |= (uint8_t)(1u << ((pos + k) & 7u));
                    }
                }
            }
        }
    }
}

/*
 * et_max_pool_grad_s8 - acc[a] += grad[out] where a is the input position of
 * out's window recorded by et_max_pool_argmax_s8 in the forward pass (the
 * first position, scan order ky then kx, holding the window's maximum).
 * Windows without a valid input position route nothing.
 *
 * input_dims   NHWC input (n == 1)
 * argmax, bits the forward's arg-max record
 * output_dims  NHWC output;  grad: its int16 gradients (masked)
 * acc          input-size int32, written
 */
void et_max_pool_grad_s8(const et_pool_params_t *params, const et_dims_t *input_dims,
    const uint8_t *argmax, uint8_t bits, const et_dims_t *output_dims, const int16_t *grad, int32_t *acc) {
    const int32_t in_h = input_dims->h, in_w = input_dims->w, depth = input_dims->c;
    const int32_t out_h = output_dims->h, out_w = output_dims->w;
    const size_t n_in = (size_t)in_h * in_w * depth;
    for (size_t i = 0; i < n_in; ++i) {
        acc[i] = 0;
    }
    size_t pos = 0;
    for (int32_t oy = 0; oy < out_h; ++oy) {
        const int32_t in_y0 = oy * params->stride_h - params->pad_h;
        const int32_t fy0 = in_y0 < 0 ? -in_y0 : 0;
        const int32_t fy1 = params->filter_h < in_h - in_y0 ? params->filter_h : in_h - in_y0;
        for (int32_t ox = 0; ox < out_w; ++ox) {
            const int32_t in_x0 = ox * params->stride_w - params->pad_w;
            const int32_t fx0 = in_x0 < 0 ? -in_x0 : 0;
            const int32_t fx1 = params->filter_w < in_w - in_x0 ? params->filter_w : in_w - in_x0;
            if (fy1 <= fy0 || fx1 <= fx0) {
                pos += (size_t)depth * bits;
                continue;
            }
            for (int32_t c = 0; c < depth; ++c, pos += bits) {
                const int32_t g = grad[((size_t)oy * out_w + ox) * depth + c];
                if (g == 0) {
                    continue;
                }
                uint32_t arg = 0;
                for (uint8_t k = 0; k < bits; ++k) {
                    arg |= (uint32_t)((argmax[(pos + k) >> 3] >> ((pos + k) & 7u)) & 1u) << k;
                }
                const int32_t fy = bits ? (int32_t)(arg / (uint32_t)params->filter_w) : fy0;
                const int32_t fx = bits ? (int32_t)(arg % (uint32_t)params->filter_w) : fx0;
                acc[((size_t)(in_y0 + fy) * in_w + (in_x0 + fx)) * depth + c] += g;
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
