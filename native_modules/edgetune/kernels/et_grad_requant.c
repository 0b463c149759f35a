/*
 * Requantization of the int32 input-gradient accumulator to the int16 gradient
 * of the next layer down (docs/training.md §4c). The transposed ops produce
 * each accumulator element on the fly (never stored) and hand it to
 * et_grad_emit (et_train_kernels.h) twice: once to find M = max |acc|, once
 * to write rdiv(acc * 32767, M).
 */
#include "et_train_kernels.h"
#include "et_mathf.h"

/*
 * et_grad_requant_scale - the scale of the requantized gradient,
 * (acc_scale * (float)m) / 32767.0f, for M = m > 0.
 */
float et_grad_requant_scale(int64_t m, float acc_scale) {
    return (acc_scale * et_i64_to_f32(m)) / 32767.0f;
}
