/*
 * Shared types of the edgetune int8 kernels (CMSIS-NN style parameter
 * structs). Plain C99, no MicroPython headers.
 *
 * All activations are NHWC int8 with N = 1 (the kernels still loop over N).
 * All integer parameters (multipliers, shifts, paddings, clamps) are prepared
 * on the host exactly as TFLite Micro's Prepare() computes them and stored in
 * the .etm file; the kernels only do integer arithmetic with them.
 */
#ifndef EDGETUNE_ET_TYPES_H
#define EDGETUNE_ET_TYPES_H

#include <stddef.h>
#include <stdint.h>

/* Return status of every kernel. */
typedef enum {
    ET_OK = 0,
    ET_ERR_ARG = -1, /* an argument the kernel cannot handle (see each kernel) */
} et_status_t;

/* A 4-D NHWC shape (for weights: OHWI, i.e. n = output channels). */
typedef struct {
    int32_t n;
    int32_t h;
    int32_t w;
    int32_t c;
} et_dims_t;

/* Per-output-channel requantization: TFLM QuantizeMultiplier convention
 * (Q0.31 multiplier >= 0, shift in [-31, 30], shift > 0 is a left shift). */
typedef struct {
    const int32_t *multiplier;
    const int32_t *shift;
} et_per_channel_quant_t;

/* CONV_2D and DEPTHWISE_CONV_2D parameters (dilation is always 1). */
typedef struct {
    int32_t input_offset;     /* -input zero point, in [-127, 128] */
    int32_t output_offset;    /* output zero point, in [-128, 127] */
    int32_t stride_h;         /* >= 1 */
    int32_t stride_w;         /* >= 1 */
    int32_t pad_h;            /* top padding, TFLM ComputePaddingHeightWidth */
    int32_t pad_w;            /* left padding */
    int32_t depth_multiplier; /* depthwise only; 1 for CONV_2D */
    int32_t act_min;          /* int8 clamp after requantization */
    int32_t act_max;
} et_conv_params_t;

/* FULLY_CONNECTED parameters (weights are symmetric: no weight offset). */
typedef struct {
    int32_t input_offset;
    int32_t output_offset;
    int32_t act_min;
    int32_t act_max;
} et_fc_params_t;

/* MAX_POOL_2D and AVERAGE_POOL_2D parameters (input and output share their
 * quantization, so no offsets are involved). */
typedef struct {
    int32_t stride_h;
    int32_t stride_w;
    int32_t pad_h;
    int32_t pad_w;
    int32_t filter_h;
    int32_t filter_w;
    int32_t act_min;
    int32_t act_max;
} et_pool_params_t;

/* MEAN over H and W (global average) parameters, as host/edgetune/convert/prepare.py
 * mean_params computes them (TFLM QuantizedMeanOrSum with 1/N folded in). */
typedef struct {
    int32_t input_offset;  /* -input zero point */
    int32_t output_offset; /* output zero point */
    int32_t multiplier;    /* requantization multiplier with 1/(H*W) folded in */
    int32_t shift;
    int32_t act_min;
    int32_t act_max;
} et_mean_params_t;

#endif /* EDGETUNE_ET_TYPES_H */
