/*
 * MAX_POOL_2D and AVERAGE_POOL_2D backward: gradient w.r.t. the input
 * (docs/training.md §4b), requantized as it is produced (§4c), and the arg-max record the MAX_POOL_2D backward
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

/* Arg-max index of output element j in a record of `bits` bits per element. */
static uint32_t max_pool_arg(const uint8_t *argmax, uint8_t bits, size_t j) {
    const size_t pos = j * bits;
    uint32_t arg = 0;
    for (uint8_t k = 0; k < bits; ++k) {
        arg |= (uint32_t)((argmax[(pos + k) >> 3] >> ((pos + k) & 7u)) & 1u) << k;
    }
    return arg;
}

/* rdiv(1024, n), n = the valid input positions of output (oy, ox)'s window (n > 0 here). */
static int32_t avg_pool_r(const et_pool_params_t *params, int32_t in_h, int32_t in_w, int32_t oy, int32_t ox) {
    const int32_t in_y0 = oy * params->stride_h - params->pad_h;
    const int32_t fy0 = in_y0 < 0 ? -in_y0 : 0;
    const int32_t fy1 = params->filter_h < in_h - in_y0 ? params->filter_h : in_h - in_y0;
    const int32_t in_x0 = ox * params->stride_w - params->pad_w;
    const int32_t fx0 = in_x0 < 0 ? -in_x0 : 0;
    const int32_t fx1 = params->filter_w < in_w - in_x0 ? params->filter_w : in_w - in_x0;
    return (int32_t)et_rdiv(1024, (int64_t)(fy1 - fy0) * (fx1 - fx0));
}

/*
 * et_max_pool_grad_s8 - acc[a] = sum of grad[out] over the outputs whose
 * window holds input element a at the position recorded by
 * et_max_pool_argmax_s8 in the forward pass (the first position, scan order
 * ky then kx, holding the window's maximum), one input element at a time;
 * m == 0 returns max |acc|, m > 0 writes out[a] = rdiv(acc[a] * 32767, m).
 *
 * input_dims   NHWC input (n == 1);  out: its elements, int16
 * argmax, bits the forward's arg-max record
 * output_dims  NHWC output;  grad: its int16 gradients (masked)
 */
int64_t et_max_pool_grad_s8(const et_pool_params_t *params, const et_dims_t *input_dims,
    const uint8_t *argmax, uint8_t bits, const et_dims_t *output_dims, const int16_t *grad,
    int64_t m, int16_t *out) {
    const int32_t in_h = input_dims->h, in_w = input_dims->w, depth = input_dims->c;
    const int32_t out_h = output_dims->h, out_w = output_dims->w;
    int64_t big = 0;
    size_t j = 0;
    for (int32_t iy = 0; iy < in_h; ++iy) {
        for (int32_t ix = 0; ix < in_w; ++ix) {
            for (int32_t c = 0; c < depth; ++c, ++j) {
                int32_t acc = 0;
                for (int32_t fy = 0; fy < params->filter_h; ++fy) {
                    const int32_t ny = iy + params->pad_h - fy;
                    if (ny < 0 || ny % params->stride_h != 0 || ny / params->stride_h >= out_h) {
                        continue;
                    }
                    for (int32_t fx = 0; fx < params->filter_w; ++fx) {
                        const int32_t nx = ix + params->pad_w - fx;
                        if (nx < 0 || nx % params->stride_w != 0 || nx / params->stride_w >= out_w) {
                            continue;
                        }
                        const size_t o = ((size_t)(ny / params->stride_h) * out_w + nx / params->stride_w) * depth + c;
                        const int32_t g = grad[o];
                        if (g != 0 && max_pool_arg(argmax, bits, o) == (uint32_t)(fy * params->filter_w + fx)) {
                            acc += g;
                        }
                    }
                }
                big = et_grad_emit(acc, m, out, j, big);
            }
        }
    }
    return m ? m : big;
}

/*
 * et_avg_pool_grad_s8 - acc[in] = sum over the outputs whose window holds
 * input element `in` of grad[out] * rdiv(1024, n), n the output's count of
 * valid input positions (as in the forward), one input element at a time;
 * the accumulator scale is the gradient's scale / 1024. m and out as
 * et_max_pool_grad_s8.
 *
 * input_dims   NHWC input (n == 1);  out: its elements, int16
 * output_dims  NHWC output;  grad: its int16 gradients (masked)
 */
int64_t et_avg_pool_grad_s8(const et_pool_params_t *params, const et_dims_t *input_dims,
    const et_dims_t *output_dims, const int16_t *grad, int64_t m, int16_t *out) {
    const int32_t in_h = input_dims->h, in_w = input_dims->w, depth = input_dims->c;
    const int32_t out_h = output_dims->h, out_w = output_dims->w;
    int64_t big = 0;
    size_t j = 0;
    for (int32_t iy = 0; iy < in_h; ++iy) {
        for (int32_t ix = 0; ix < in_w; ++ix) {
            for (int32_t c = 0; c < depth; ++c, ++j) {
                int32_t acc = 0;
                for (int32_t fy = 0; fy < params->filter_h; ++fy) {
                    const int32_t ny = iy + params->pad_h - fy;
                    if (ny < 0 || ny % params->stride_h != 0 || ny / params->stride_h >= out_h) {
                        continue;
                    }
                    const int32_t oy = ny / params->stride_h;
                    for (int32_t fx = 0; fx < params->filter_w; ++fx) {
                        const int32_t nx = ix + params->pad_w - fx;
                        if (nx < 0 || nx % params->stride_w != 0 || nx / params->stride_w >= out_w) {
                            continue;
                        }
                        const int32_t ox = nx / params->stride_w;
                        const int32_t g = grad[((size_t)oy * out_w + ox) * depth + c];
                        if (g != 0) {
                            acc += g * avg_pool_r(params, in_h, in_w, oy, ox);
                        }
                    }
                }
                big = et_grad_emit(acc, m, out, j, big);
            }
        }
    }
    return m ? m : big;
}
