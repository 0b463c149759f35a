/*
 * Public declarations of the edgetune training kernels (docs/training.md is
 * the normative arithmetic): the loss and its gradient at the logits, the
 * activation masks, the transposed (input-gradient) ops, the weight/bias
 * gradient sums and the QAS / int8-SGD update with fractional residuals.
 *
 * Gradients are int16 with one float32 scale per tensor; accumulators are
 * int32 (the bounds of docs/training.md §4b are checked by the caller, once,
 * when the model is built). None of the kernels allocates memory; every buffer
 * is passed in by the caller (train.c carves them out of the training arena).
 */
#ifndef EDGETUNE_ET_TRAIN_KERNELS_H
#define EDGETUNE_ET_TRAIN_KERNELS_H

#include "et_types.h"
#include "et_mathf.h"

/*
 * The weights of a layer as the training forward/backward sees them: int8
 * weights in the .etm (flash), of which some output channels may have a RAM
 * copy that training updates. map == NULL means no RAM copy at all.
 */
typedef struct {
    const int8_t *flash; /* the .etm weights, storage order */
    const int16_t *map;  /* C_out entries: slot of the channel in ram, or -1 */
    const int8_t *ram;   /* slot-major: slot s holds per_channel weights in storage order */
    int32_t per_channel; /* weights per output channel (KH*KW*C_in, KH*KW or K) */
} et_weights_t;

/* --- loss (et_softmax_xent_f32.c) --- */
float et_softmax_xent_f32(const int8_t *logits, int32_t n_classes, float scale, int32_t zero_point,
    int32_t label, float *work, int16_t *grad, float *grad_scale);
float et_softmax_xent_loss_f32(const int8_t *logits, int32_t n_classes, float scale, int32_t zero_point,
    int32_t label);

/* --- masks (et_relu_grad_s8.c) --- */
void et_relu_mask_s8(const int8_t *y, int32_t n, int32_t act_min, int32_t act_max, uint8_t *mask);
void et_relu_grad_s16(int16_t *grad, int32_t n, const uint8_t *mask);

/* --- per-channel scale folding and requantization (et_grad_requant.c, et_grad_fold_s16.c) --- */
void et_grad_fold_s16(const int16_t *grad, int32_t positions, int32_t channels, const float *scales,
    float scale_max, int16_t *out);
float et_grad_requant_scale(int64_t m, float acc_scale);

/*
 * et_grad_emit - one accumulator element acc (element j of the input
 * gradient) in a transposed op's two passes (docs/training.md §4c):
 * m == 0 (pass 1): returns max(big, |acc|), writes nothing;
 * m > 0 (pass 2): writes out[j] = rdiv(acc * 32767, m), returns big.
 */
/*
 * et_grad_q15 - et_rdiv((int64_t)acc * 32767, m) for |acc| <= m <= 2^31 (the M of §4c is the
 * max of the |acc| it scales), without a 64-bit division: the quotient
 * q = floor((|acc| * 32767 + m / 2) / m) is at most 32767, so one 32-bit division finds it
 * (m < 2^16: the whole numerator fits in 32 bits; else one step of Knuth's algorithm D with
 * 16-bit digits, Hacker's Delight divlu: the quotient digit from the normalized divisor's top
 * half, corrected at most twice). Same value as et_rdiv, sign applied last as there.
 */
static inline int32_t et_grad_q15(int32_t acc, int64_t m) {
    const uint32_t a = acc < 0 ? 0u - (uint32_t)acc : (uint32_t)acc;
    const uint32_t d = (uint32_t)m;
    uint32_t q;
    if (d < 0x10000u) {
        q = (a * 32767u + (d >> 1)) / d; /* a <= d: at most 65535 * 32767 + 32767 < 2^31 */
    } else {
        const uint64_t n = ((uint64_t)a << 15) - a + (d >> 1); /* < d * 2^16 */
#if defined(__GNUC__)
        const int s = __builtin_clz(d); /* <= 15 */
#else
        int s = 0;
        while (!((d << s) & 0x80000000u)) {
            ++s;
        }
#endif
        const uint32_t vn = d << s, vn1 = vn >> 16, vn0 = vn & 0xFFFFu;
        const uint64_t un = n << s;                 /* < vn * 2^16 <= 2^48 */
        const uint32_t un32 = (uint32_t)(un >> 16), un0 = (uint32_t)un & 0xFFFFu;
        q = un32 / vn1;
        uint32_t r = un32 - q * vn1;
        while (q >= 0x10000u || q * vn0 > ((r << 16) | un0)) {
            --q;
            r += vn1;
            if (r >= 0x10000u) {
                break;
            }
        }
    }
    return acc < 0 ? -(int32_t)q : (int32_t)q;
}

static inline int64_t et_grad_emit(int32_t acc, int64_t m, int16_t *out, size_t j, int64_t big) {
    if (m == 0) {
        const int64_t a = acc < 0 ? -(int64_t)acc : (int64_t)acc;
        return a > big ? a : big;
    }
#if defined(__arm__)
    /* Cortex-M: a 32-bit division (one instruction on the M3, a short library call on ARMv6-M)
     * instead of the 64-bit library division; rdiv(0, m) is 0 (masked gradients) */
    out[j] = acc == 0 ? 0 : (int16_t)et_grad_q15(acc, m);
#else
    out[j] = (int16_t)et_rdiv((int64_t)acc * 32767, m);
#endif
    return big;
}

/*
 * --- input gradients (transposed ops), one input element at a time ---
 * Each takes (m, out): m == 0 returns M = max |acc| over the input elements
 * and writes nothing; m = M > 0 writes the int16 gradient out[j] =
 * rdiv(acc[j] * 32767, M) (input-size int16) and returns m. The int32 acc
 * values are the same in both calls (exact integer sums).
 */
int64_t et_fully_connected_grad_s8(const int16_t *h, int32_t output_depth, int32_t accum_depth,
    const et_weights_t *weights, int64_t m, int16_t *out);
int64_t et_conv_grad_s8(const et_conv_params_t *params, const et_dims_t *input_dims,
    const et_dims_t *filter_dims, const et_weights_t *weights,
    const et_dims_t *output_dims, const int16_t *h, int64_t m, int16_t *out);
int64_t et_depthwise_conv_grad_s8(const et_conv_params_t *params, const et_dims_t *input_dims,
    const et_dims_t *filter_dims, const et_weights_t *weights,
    const et_dims_t *output_dims, const int16_t *h, int64_t m, int16_t *out);
uint8_t et_max_pool_argmax_bits(int32_t filter_h, int32_t filter_w);
void et_max_pool_argmax_s8(const et_pool_params_t *params, const et_dims_t *input_dims,
    const int8_t *input, const et_dims_t *output_dims, uint8_t bits, uint8_t *argmax);
int64_t et_max_pool_grad_s8(const et_pool_params_t *params, const et_dims_t *input_dims,
    const uint8_t *argmax, uint8_t bits, const et_dims_t *output_dims, const int16_t *grad,
    int64_t m, int16_t *out);
int64_t et_avg_pool_grad_s8(const et_pool_params_t *params, const et_dims_t *input_dims,
    const et_dims_t *output_dims, const int16_t *grad, int64_t m, int16_t *out);
int64_t et_mean_grad_s8(const et_dims_t *input_dims, const int16_t *grad, int64_t m, int16_t *out);

/* --- weight gradient sums (et_weight_grad_s8.c) --- */
int64_t et_bias_grad_s16(const int16_t *grad, int32_t positions, int32_t channels, int32_t c);
int64_t et_conv_weight_grad_s8(const et_conv_params_t *params, const et_dims_t *input_dims,
    const int8_t *input, const et_dims_t *filter_dims, const et_dims_t *output_dims,
    const int16_t *grad, int32_t c, int32_t k);
int64_t et_depthwise_conv_weight_grad_s8(const et_conv_params_t *params, const et_dims_t *input_dims,
    const int8_t *input, const et_dims_t *filter_dims, const et_dims_t *output_dims,
    const int16_t *grad, int32_t c, int32_t k);

/* --- forward of RAM-copied depthwise channels (et_train_forward_s8.c; conv/FC: et_*_rows_s8) --- */
void et_depthwise_conv_channel_s8(const et_conv_params_t *params, const et_per_channel_quant_t *quant,
    const et_dims_t *input_dims, const int8_t *input, const et_dims_t *filter_dims,
    const int8_t *w, const int32_t *bias, const et_dims_t *output_dims, int8_t *output, int32_t c);

/* --- updates (et_update.c) --- */
float et_update_factor(float base, float scale, int qas);
int32_t et_update_step(float factor, int64_t grad_sum, float beta, float *velocity, int16_t *residual);
int32_t et_update_commit(int32_t d, float beta, float *velocity, int16_t *residual);
float et_update_accumulate(float acc, float factor, int64_t grad_sum);
int32_t et_update_batch_step(float acc, int32_t k);
int8_t et_update_apply_s8(int8_t w, int32_t n);
int32_t et_update_apply_s32(int32_t b, int32_t n);

#endif /* EDGETUNE_ET_TRAIN_KERNELS_H */
