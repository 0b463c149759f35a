/*
 * Softmax cross-entropy loss of int8 logits and its int16 gradient
 * (docs/training.md §3).
 */
#include "et_train_kernels.h"
#include "et_mathf.h"

/*
 * et_softmax_xent_f32 - loss and quantized dL/dlogits for one sample.
 *
 *   z_k = scale * (float)(q_k - zero_point);  m = max_k z_k
 *   e_k = et_expf(z_k - m);  S = sum_k e_k (sequential, k = 0 upwards)
 *   loss = (et_logf(S) + m) - z_label;  g_k = e_k / S - (k == label)
 *   M = max_k |g_k|;  s_g = M / 32767;  grad[k] = round_sat(g_k / s_g, 32767)
 *
 * logits      n_classes int8 logits (may alias grad's bytes: they are read
 *             into `work` before grad is written)
 * work        n_classes float32 (the loss region of the arena), overwritten
 * label       0 <= label < n_classes (checked by the caller)
 * grad        n_classes int16, written only if M > 0
 * grad_scale  receives s_g, or 0.0f when M == 0 (the step changes nothing)
 *
 * Returns the loss.
 */
float et_softmax_xent_f32(const int8_t *logits, int32_t n_classes, float scale, int32_t zero_point,
    int32_t label, float *work, int16_t *grad, float *grad_scale) {
    for (int32_t k = 0; k < n_classes; ++k) {
        work[k] = scale * (float)((int32_t)logits[k] - zero_point);
    }
    float m = work[0];
    for (int32_t k = 1; k < n_classes; ++k) {
        if (work[k] > m) {
            m = work[k];
        }
    }
    const float z_label = work[label];
    float sum = 0.0f;
    for (int32_t k = 0; k < n_classes; ++k) {
        work[k] = et_expf(work[k] - m);
        sum = sum + work[k];
    }
    const float loss = (et_logf(sum) + m) - z_label;
    float big = 0.0f;
    for (int32_t k = 0; k < n_classes; ++k) {
        const float g = work[k] / sum - (k == label ? et_f32_opaque(1.0f) : 0.0f);
        work[k] = g;
        const float a = g < 0.0f ? -g : g;
        if (a > big) {
            big = a;
        }
    }
    if (big == 0.0f) {
        *grad_scale = 0.0f;
        return loss;
    }
    const float s_g = big / 32767.0f;
    for (int32_t k = 0; k < n_classes; ++k) {
        grad[k] = (int16_t)et_round_sat(work[k] / s_g, 32767);
    }
    *grad_scale = s_g;
    return loss;
}

/*
 * et_softmax_xent_loss_f32 - the loss of et_softmax_xent_f32 alone (same
 * operations in the same order, so the same bits), without a work buffer:
 * z_k is recomputed from the logits where needed. For evaluate() and for
 * models with nothing to train.
 */
float et_softmax_xent_loss_f32(const int8_t *logits, int32_t n_classes, float scale, int32_t zero_point,
    int32_t label) {
    float m = scale * (float)((int32_t)logits[0] - zero_point);
    for (int32_t k = 1; k < n_classes; ++k) {
        const float z = scale * (float)((int32_t)logits[k] - zero_point);
        if (z > m) {
            m = z;
        }
    }
    float sum = 0.0f;
    for (int32_t k = 0; k < n_classes; ++k) {
        sum = sum + et_expf(scale * (float)((int32_t)logits[k] - zero_point) - m);
    }
    return (et_logf(sum) + m) - scale * (float)((int32_t)logits[label] - zero_point);
}
