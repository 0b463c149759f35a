/*
 * FULLY_CONNECTED backward: gradient w.r.t. the input (docs/training.md §4b),
 * requantized as it is produced (§4c).
 */
#include "et_train_kernels.h"

/*
 * et_fully_connected_grad_s8 - acc[k] = sum_c w[c, k] * h[c], one k at a time
 * (int32, |acc| < 32767 * 127 * C_out, which the caller bounds below 2^31);
 * m == 0 returns max |acc|, m > 0 writes out[k] = rdiv(acc[k] * 32767, m).
 *
 * h             output_depth int16 folded output gradients
 * accum_depth   K, the input size;  out: K int16
 * weights       (C_out, K) weights as the forward used them (RAM copies of
 *               the trained channels take precedence over flash)
 */
int64_t et_fully_connected_grad_s8(const int16_t *h, int32_t output_depth, int32_t accum_depth,
    const et_weights_t *weights, int64_t m, int16_t *out) {
    int64_t big = 0;
    for (int32_t k = 0; k < accum_depth; ++k) {
        int32_t acc = 0;
        for (int32_t c = 0; c < output_depth; ++c) {
            const int32_t hc = h[c];
            if (hc == 0) {
                continue;
            }
            const int8_t *w = weights->flash + (size_t)c * accum_depth;
            if (weights->map && weights->map[c] >= 0) {
                w = weights->ram + (size_t)weights->map[c] * weights->per_channel;
            }
            acc += (int32_t)w[k] * hc;
        }
        big = et_grad_emit(acc, m, out, (size_t)k, big);
    }
    return m ? m : big;
}
