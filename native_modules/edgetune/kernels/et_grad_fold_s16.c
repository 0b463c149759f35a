/*
 * Folding the per-channel weight scales into the output gradient before a
 * transposed conv/depthwise/FC (docs/training.md §4b).
 */
#include "et_train_kernels.h"
#include "et_mathf.h"

/*
 * et_grad_fold_s16 - out[p, c] = round_sat((float)grad[p, c] * ratio[c], 32767)
 * with ratio[c] = s_w[c] / max_c s_w[c] in (0, 1].
 *
 * grad, out  positions x channels int16 (NHWC), must not overlap
 */
void et_grad_fold_s16(const int16_t *grad, int32_t positions, int32_t channels, const float *ratio,
    int16_t *out) {
    for (int32_t p = 0; p < positions; ++p) {
        const int16_t *g = grad + (size_t)p * channels;
        int16_t *o = out + (size_t)p * channels;
        for (int32_t c = 0; c < channels; ++c) {
            o[c] = (int16_t)et_round_sat((float)g[c] * ratio[c], 32767);
        }
    }
}
