/*
 * MEAN over H and W (global average pooling), int8.
 * Integer arithmetic of TFLM's int8 MEAN (micro/kernels/reduce_common.cc
 * EvalIntegerMean -> reference/reduce.h QuantizedMeanOrSum, compute_sum false)
 * with the Eval-time 1/N folding done on the host by host/edgetune/convert/prepare.py
 * mean_params (normative); the numpy twin is reference.mean.
 */
#include "et_kernels.h"
#include "et_requant.h"

/*
 * et_mean_s8 - per-channel average over the N = H*W positions.
 *
 * For each (n, c), channel-outer with an int32 accumulator (wrapping like TFLM's):
 *   sum = sum_{y,x} in[n,y,x,c]                         (raw int8 values)
 *   out = clamp(MBQM(sum + input_offset*N, multiplier, shift) + output_offset, act_min, act_max)
 * (1/N is already folded into multiplier/shift by the host.)
 *
 * params       offsets, multiplier/shift, clamp
 * input_dims   NHWC input shape;  input: input_dims elements
 * output       input_dims->n * input_dims->c values (shape (N, 1, 1, C)), written
 *
 * Buffers: input and output must not overlap. No scratch buffer is needed.
 * Returns ET_OK.
 */
et_status_t et_mean_s8(const et_mean_params_t *params,
    const et_dims_t *input_dims, const int8_t *input,
    int8_t *output) {
    const int32_t hw = input_dims->h * input_dims->w, depth = input_dims->c;
    /* the requantization constants and the clamp once, in locals (et_requant.h) */
    const et_requant_t q = et_requant_prep(params->multiplier, params->shift);
    const int32_t in_off = params->input_offset, out_off = params->output_offset;
    const int32_t lo = params->act_min - out_off, hi = params->act_max - out_off;
    for (int32_t b = 0; b < input_dims->n; ++b) {
        const int8_t *in_b = input + (size_t)b * hw * depth;
        for (int32_t c = 0; c < depth; ++c) {
            /* uint32_t: the wrap-around of TFLM's int32 sum, as defined behaviour */
            uint32_t usum = 0;
            for (int32_t i = 0; i < hw; ++i) {
                usum += (uint32_t)(int32_t)in_b[(size_t)i * depth + c];
            }
            const int32_t acc = (int32_t)(usum + (uint32_t)in_off * (uint32_t)hw);
            output[(size_t)b * depth + c] = et_requant_apply_s8(acc, &q, out_off, lo, hi);
        }
    }
    return ET_OK;
}
