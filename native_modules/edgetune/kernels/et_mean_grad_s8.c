/*
 * MEAN (global average over H and W) backward (docs/training.md §4b),
 * requantized as it is produced (§4c).
 */
#include "et_train_kernels.h"

/*
 * et_mean_grad_s8 - acc[y, x, c] = grad[c] for every input position; the
 * accumulator scale is the gradient's scale / (H*W). m == 0 returns
 * max |acc|, m > 0 writes out[j] = rdiv(acc[j] * 32767, m).
 *
 * input_dims  NHWC input (n == 1);  out: its elements, int16
 * grad        input_dims->c int16 gradients (masked)
 */
int64_t et_mean_grad_s8(const et_dims_t *input_dims, const int16_t *grad, int64_t m, int16_t *out) {
    const int32_t hw = input_dims->h * input_dims->w, depth = input_dims->c;
    int64_t big = 0;
    if (hw < 1) {
        return m ? m : big;
    }
    /* every position holds the same acc per channel: requantize the first, copy it to the rest
     * (max |acc| and each element's value are those of the element-by-element loop) */
    for (int32_t c = 0; c < depth; ++c) {
        big = et_grad_emit(grad[c], m, out, (size_t)c, big);
    }
    if (m) {
        for (int32_t p = 1; p < hw; ++p) {
            for (int32_t c = 0; c < depth; ++c) {
                out[(size_t)p * depth + c] = out[c];
            }
        }
    }
    return m ? m : big;
}
