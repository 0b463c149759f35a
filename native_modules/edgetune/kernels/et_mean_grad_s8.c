/*
 * MEAN (global average over H and W) backward (docs/training.md §4b).
 */
#include "et_train_kernels.h"

/*
 * et_mean_grad_s8 - acc[y, x, c] = grad[c] for every input position; the
 * accumulator scale is the gradient's scale / (H*W).
 *
 * input_dims  NHWC input (n == 1);  acc: its elements, int32, written
 * grad        input_dims->c int16 gradients (masked)
 */
void et_mean_grad_s8(const et_dims_t *input_dims, const int16_t *grad, int32_t *acc) {
    const int32_t hw = input_dims->h * input_dims->w, depth = input_dims->c;
    for (int32_t p = 0; p < hw; ++p) {
        for (int32_t c = 0; c < depth; ++c) {
            acc[(size_t)p * depth + c] = grad[c];
        }
    }
}
