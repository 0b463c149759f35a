/*
 * MEAN over H and W (global average pooling), int8.
 * Integer arithmetic of TFLM's int8 MEAN as prepared by host/edgetune/prepare.py
 * (reference_integer_ops::Mean form; the numpy twin is reference.mean).
 */
#include "et_kernels.h"
#include "et_requant.h"

/*
 * et_mean_s8 - per-channel average over all H*W positions.
 *
 * For each (n, c), channel-outer with an int32 accumulator:
 *   acc = sum_{y,x} (in[n,y,x,c] + input_offset)
 *   acc = MBQM(acc, multiplier, shift)
 *   cnt = p0 if p0 > 0 else H*W
 *   acc = acc > 0 ? (acc + cnt/2) / cnt : (acc - cnt/2) / cnt   (C division)
 *   out[n,c] = clamp(acc + output_offset, act_min, act_max)
 * With p0 == 1 the division is the identity, which expresses TFLM's
 * QuantizedMeanOrSum form (1/(H*W) folded into the multiplier by the host).
 *
 * params       offsets, multiplier/shift, p0 (>= 0), clamp
 * input_dims   NHWC input shape;  input: input_dims elements
 * output       input_dims->n * input_dims->c values (shape (N, 1, 1, C)), written
 *
 * Buffers: input and output must not overlap. No scratch buffer is needed.
 * Returns ET_OK, or ET_ERR_ARG if p0 is negative.
 */
et_status_t et_mean_s8(const et_mean_params_t *params,
    const et_dims_t *input_dims, const int8_t *input,
    int8_t *output) {
    const int32_t hw = input_dims->h * input_dims->w, depth = input_dims->c;
    if (params->p0 < 0) {
        return ET_ERR_ARG;
    }
    const int32_t count = params->p0 > 0 ? params->p0 : hw;
    for (int32_t b = 0; b < input_dims->n; ++b) {
        const int8_t *in_b = input + (size_t)b * hw * depth;
        for (int32_t c = 0; c < depth; ++c) {
            int32_t acc = 0;
            for (int32_t i = 0; i < hw; ++i) {
                acc += (int32_t)in_b[(size_t)i * depth + c] + params->input_offset;
            }
            acc = et_multiply_by_quantized_multiplier(acc, params->multiplier, params->shift);
            /* int64 so that acc +- count/2 cannot overflow (TFLM's int32 never does
             * for real models; the numpy twin also divides in int64). */
            const int64_t a = acc;
            int64_t q = a > 0 ? (a + count / 2) / count : (a - count / 2) / count;
            q += params->output_offset;
            q = q < params->act_min ? params->act_min : (q > params->act_max ? params->act_max : q);
            output[(size_t)b * depth + c] = (int8_t)q;
        }
    }
    return ET_OK;
}
