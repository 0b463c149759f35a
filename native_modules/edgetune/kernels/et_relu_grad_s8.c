/*
 * The activation clamp in the backward pass (fused RELU/RELU6 and every other
 * saturation): a 1-bit mask of the forward output, applied to the gradient
 * (docs/training.md §2 and §4a).
 */
#include "et_train_kernels.h"

/*
 * et_relu_mask_s8 - mask bit j (bit j%8 of byte j/8, LSB first) is 1 iff
 * act_min < y[j] < act_max, i.e. the output was not clamped.
 *
 * y     n int8 outputs of a layer
 * mask  ceil(n / 8) bytes, written (unused high bits of the last byte are 0)
 */
void et_relu_mask_s8(const int8_t *y, int32_t n, int32_t act_min, int32_t act_max, uint8_t *mask) {
    for (int32_t i = 0; i < (n + 7) / 8; ++i) {
        mask[i] = 0;
    }
    for (int32_t j = 0; j < n; ++j) {
        if (y[j] > act_min && y[j] < act_max) {
            mask[j >> 3] |= (uint8_t)(1u << (j & 7));
        }
    }
}

/*
 * et_relu_grad_s16 - zero grad[j] wherever mask bit j is 0 (in place).
 */
void et_relu_grad_s16(int16_t *grad, int32_t n, const uint8_t *mask) {
    for (int32_t j = 0; j < n; ++j) {
        if (!((mask[j >> 3] >> (j & 7)) & 1u)) {
            grad[j] = 0;
        }
    }
}
