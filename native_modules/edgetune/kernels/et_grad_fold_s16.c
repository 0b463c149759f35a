/*
 * Folding the per-channel weight scales into the output gradient before a
 * transposed conv/depthwise/FC (docs/training.md §4b).
 */
#include "et_train_kernels.h"
#include "et_mathf.h"

/*
 * et_grad_fold_s16 - out[p, c] = round_sat((float)grad[p, c] * r_c, 32767)
 * with r_c = scales[c] / scale_max (float32; scale_max = max_c scales[c] > 0).
 * scales == NULL means a per-tensor weight scale: r_c = 1.
 *
 * grad, out  positions x channels int16 (NHWC): the same buffer (in place) or
 *            not overlapping (each element is read once, then written)
 */
void et_grad_fold_s16(const int16_t *grad, int32_t positions, int32_t channels, const float *scales,
    float scale_max, int16_t *out) {
    for (int32_t c = 0; c < channels; ++c) {
        const float r = scales ? scales[c] / scale_max : 1.0f;
        for (int32_t p = 0; p < positions; ++p) {
            const size_t j = (size_t)p * channels + c;
            /* 0 * r is +-0.0f, which round_sat maps to 0: masked (zero) gradients skip the float
             * arithmetic, a library call each on soft-float targets */
            out[j] = grad[j] == 0 ? 0 : (int16_t)et_round_sat((float)grad[j] * r, 32767);
        }
    }
}
