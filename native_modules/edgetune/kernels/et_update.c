/*
 * The parameter update: QAS or plain int8 SGD step, optional momentum, and the
 * fractional residual that keeps sub-LSB steps from vanishing
 * (docs/training.md §4d-§4g).
 */
#include "et_train_kernels.h"
#include "et_mathf.h"

/*
 * et_update_factor - the per-channel step factor f_c.
 * base: (-lr * s_g) for a bias, ((-lr * s_g) * s_x) for a weight;
 * scale: s_b[c] for a bias, s_w[c] for a weight.
 * QAS (qas != 0): base / scale; plain int8 SGD: base * scale.
 */
float et_update_factor(float base, float scale, int qas) {
    return qas ? base / scale : base * scale;
}

/*
 * et_update_step - the integer change of one parameter, in LSB.
 *
 *   d = round_sat((factor * (float)grad_sum) * 32768, 2^30)   (2^-15 LSB units)
 *   momentum (velocity != NULL): v = beta * v + (float)d;  d = round_sat(v, 2^30)
 *   a = d + residual;  n = floor((a + 16384) / 32768);  residual = a - n * 32768
 *
 * velocity  the parameter's float32 velocity, updated, or NULL (no momentum)
 * residual  the parameter's int16 residual in 2^-15 LSB, updated
 * Returns n, the change to add to the stored integer parameter.
 */
int32_t et_update_step(float factor, int64_t grad_sum, float beta, float *velocity, int16_t *residual) {
    return et_update_commit(et_round_sat(et_times_32768(factor * et_i64_to_f32(grad_sum)), ET_LIM30), beta, velocity,
        residual);
}

/*
 * et_update_commit - steps 4f-4g for one parameter from its step d (2^-15 LSB):
 * momentum (velocity != NULL), then the residual; returns n (as et_update_step).
 */
int32_t et_update_commit(int32_t d, float beta, float *velocity, int16_t *residual) {
    if (velocity) {
        const float v = beta * *velocity + (float)d;
        *velocity = v;
        d = et_round_sat(v, ET_LIM30);
    }
    const int32_t a = d + (int32_t)*residual;
    const int32_t n = (int32_t)et_floor_div((int64_t)a + 16384, 32768);
    *residual = (int16_t)(a - n * 32768);
    return n;
}

/* et_update_accumulate - mini-batch (docs/training.md §5): acc + factor * (float)grad_sum. */
float et_update_accumulate(float acc, float factor, int64_t grad_sum) {
    return acc + factor * et_i64_to_f32(grad_sum);
}

/* et_update_batch_step - the step d of a k-sample batch: round_sat((acc / k) * 32768, 2^30). */
int32_t et_update_batch_step(float acc, int32_t k) {
    return et_round_sat(et_times_32768(acc / (float)k), ET_LIM30);
}

/* et_update_apply_s8 - clamp(w + n, -127, 127). */
int8_t et_update_apply_s8(int8_t w, int32_t n) {
    const int64_t v = (int64_t)w + n;
    return (int8_t)(v < -127 ? -127 : (v > 127 ? 127 : v));
}

/* et_update_apply_s32 - clamp(b + n, INT32_MIN, INT32_MAX), added in int64. */
int32_t et_update_apply_s32(int32_t b, int32_t n) {
    const int64_t v = (int64_t)b + n;
    return (int32_t)(v < INT32_MIN ? INT32_MIN : (v > INT32_MAX ? INT32_MAX : v));
}
