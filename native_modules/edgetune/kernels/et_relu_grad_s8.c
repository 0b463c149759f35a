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
    /* one byte at a time, assembled in a register (no read-modify-write per element) */
    for (int32_t i = 0; i < n; i += 8) {
        const int32_t m = n - i < 8 ? n - i : 8;
        uint32_t bits = 0;
        for (int32_t k = 0; k < m; ++k) {
            const int32_t v = y[i + k];
            bits |= (uint32_t)(v > act_min && v < act_max) << k;
        }
        mask[i >> 3] = (uint8_t)bits;
    }
}

/*
 * et_relu_grad_s16 - zero grad[j] wherever mask bit j is 0 (in place).
 */
void et_relu_grad_s16(int16_t *grad, int32_t n, const uint8_t *mask) {
    for (int32_t i = 0; i < n; i += 8) {
        const uint32_t bits = mask[i >> 3];
        if (bits == 0xFFu && n - i >= 8) { /* nothing clamped in these 8 */
            continue;
        }
        const int32_t m = n - i < 8 ? n - i : 8;
        for (int32_t k = 0; k < m; ++k) {
            if (!((bits >> k) & 1u)) {
                grad[i + k] = 0;
            }
        }
    }
}
