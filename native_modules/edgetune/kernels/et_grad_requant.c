/*
 * Requantization of an int32 gradient accumulator to the int16 gradient of the
 * next layer down (docs/training.md §4c).
 */
#include "et_train_kernels.h"
#include "et_mathf.h"

/*
 * et_grad_requant_s32 - M = max |acc|; g[j] = rdiv(acc[j] * 32767, M);
 * returns the new scale (acc_scale * (float)M) / 32767.0f, or 0.0f when M == 0
 * (all gradients are zero: the caller stops the backward pass).
 *
 * acc  n int32 values, rewritten IN PLACE as n int16 values at the same
 *      address (element j moves from byte 4j to byte 2j, so the forward scan is
 *      safe). Nothing is written when M == 0.
 */
float et_grad_requant_s32(int32_t *acc, int32_t n, float acc_scale) {
    int64_t big = 0;
    for (int32_t j = 0; j < n; ++j) {
        const int64_t a = acc[j] < 0 ? -(int64_t)acc[j] : (int64_t)acc[j];
        if (a > big) {
            big = a;
        }
    }
    if (big == 0) {
        return 0.0f;
    }
    int16_t *out = (int16_t *)(void *)acc;
    for (int32_t j = 0; j < n; ++j) {
        const int64_t v = acc[j];
        out[j] = (int16_t)et_rdiv(v * 32767, big);
    }
    return (acc_scale * (float)big) / 32767.0f;
}
